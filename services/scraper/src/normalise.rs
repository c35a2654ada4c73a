//! Turning scraped text into clean catalogue fields.

use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use url::Url;

/// Collapses every run of whitespace (tabs, newlines, non-breaking spaces) to one space.
pub fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses `6:43` or `1:02:03` to seconds.
pub fn parse_duration(text: &str) -> Option<u32> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let numbers: Vec<u32> = parts
        .iter()
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if numbers[1..].iter().any(|n| *n >= 60) {
        return None;
    }
    Some(
        numbers
            .iter()
            .fold(0u32, |acc, n| acc.saturating_mul(60).saturating_add(*n)),
    )
}

/// Splits `Tell Me (Max Graham remix) - (8:49)` into the name and 529 seconds.
/// A name with no trailing duration comes back whole, with `None`.
pub fn split_track_name(raw: &str) -> (String, Option<u32>) {
    let text = collapse_whitespace(raw);
    if let Some(inner_start) = text.rfind('(') {
        if let Some(inner) = text[inner_start + 1..].strip_suffix(')') {
            if let Some(seconds) = parse_duration(inner) {
                let name = text[..inner_start]
                    .trim_end()
                    .trim_end_matches('-')
                    .trim_end();
                if !name.is_empty() {
                    return (name.to_string(), Some(seconds));
                }
            }
        }
    }
    (text, None)
}

/// Parses a release date with the first format that fits, e.g. `10 Sep 08` with `%d %b %y`.
pub fn parse_date(text: &str, formats: &[String]) -> Option<NaiveDate> {
    let text = collapse_whitespace(text);
    formats
        .iter()
        .find_map(|format| NaiveDate::parse_from_str(&text, format).ok())
}

/// A stable track id from the preview URL: the first 16 hex digits of the SHA-256 of
/// its path and query. The host and port are left out on purpose, so the same shop
/// served from another address gives the same ids.
pub fn track_id(preview: &Url) -> String {
    let mut hasher = Sha256::new();
    if preview.scheme() == "file" {
        hasher.update(b"file:");
    }
    hasher.update(preview.path().as_bytes());
    if let Some(query) = preview.query() {
        hasher.update(b"?");
        hasher.update(query.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Folds a genre name for comparison: `Drum & Bass`, `drum-and-bass` and
/// `DRUM AND BASS` all become `drumandbass`.
pub fn genre_key(genre: &str) -> String {
    genre
        .to_lowercase()
        .replace('&', "and")
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_tab_padded_names_and_durations() {
        assert_eq!(
            split_track_name("\n\t\t\tTell Me - (6:43)\t\t"),
            ("Tell Me".into(), Some(403))
        );
        assert_eq!(
            split_track_name("Tell Me (Max Graham remix) - (8:49)"),
            ("Tell Me (Max Graham remix)".into(), Some(529))
        );
        assert_eq!(
            split_track_name("Long One - (1:02:03)"),
            ("Long One".into(), Some(3723))
        );
        assert_eq!(
            split_track_name("Something (Dub)"),
            ("Something (Dub)".into(), None)
        );
        assert_eq!(split_track_name("Odd (6:61)"), ("Odd (6:61)".into(), None));
        assert_eq!(split_track_name(" - (3:00)"), ("- (3:00)".into(), None));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0:07"), Some(7));
        assert_eq!(parse_duration("6:43"), Some(403));
        assert_eq!(parse_duration("643"), None);
        assert_eq!(parse_duration("a:bc"), None);
        assert_eq!(parse_duration("-1:00"), None);
    }

    #[test]
    fn dates_in_the_shop_format_and_iso() {
        let formats = vec!["%d %b %y".to_string(), "%Y-%m-%d".to_string()];
        assert_eq!(
            parse_date("10 Sep 08", &formats),
            NaiveDate::from_ymd_opt(2008, 9, 10)
        );
        assert_eq!(
            parse_date(" 01  Jan 97 ", &formats),
            NaiveDate::from_ymd_opt(1997, 1, 1)
        );
        assert_eq!(
            parse_date("2017-06-30", &formats),
            NaiveDate::from_ymd_opt(2017, 6, 30)
        );
        assert_eq!(parse_date("31 Foo 1x", &formats), None);
        assert_eq!(parse_date("2017-13-45", &formats), None);
    }

    #[test]
    fn track_ids_ignore_host_and_differ_by_path() {
        let a = Url::parse("http://127.0.0.1:4000/MP3/SF1354749-02-01-01.mp3").unwrap();
        let b = Url::parse("http://127.0.0.1:5000/MP3/SF1354749-02-01-01.mp3").unwrap();
        let c = Url::parse("http://127.0.0.1:4000/MP3/SF1354749-02-01-02.mp3").unwrap();
        assert_eq!(track_id(&a), track_id(&b));
        assert_ne!(track_id(&a), track_id(&c));
        assert_eq!(track_id(&a).len(), 16);
        let q1 = Url::parse("http://x/preview?id=1").unwrap();
        let q2 = Url::parse("http://x/preview?id=2").unwrap();
        assert_ne!(track_id(&q1), track_id(&q2));
    }

    #[test]
    fn genre_keys() {
        assert_eq!(genre_key("Drum & Bass"), "drumandbass");
        assert_eq!(genre_key("drum-and-bass"), "drumandbass");
        assert_eq!(genre_key("Hip Hop/R&B"), "hiphoprandb");
    }
}
