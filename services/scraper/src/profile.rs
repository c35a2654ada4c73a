//! Site profiles: CSS selectors that say where a shop keeps each field, and the
//! extraction of one listing page with them.

use std::collections::HashSet;

use scraper::{ElementRef, Html, Selector};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::catalogue::CatalogueRow;
use crate::normalise::{
    collapse_whitespace, parse_date, parse_duration, split_track_name, track_id,
};

/// The built-in profile for the shop's 2017 back-catalogue markup.
pub const JUNO_PROFILE: &str = include_str!("profiles/juno.toml");

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile is not valid TOML: {0}")]
    Toml(String),
    #[error("profile field {field}: bad CSS selector {selector:?}: {reason}")]
    Selector {
        field: &'static str,
        selector: String,
        reason: String,
    },
    #[error("unknown built-in profile {0:?}; the built-in one is \"juno\"")]
    UnknownBuiltIn(String),
    #[error("cannot read profile {path}: {reason}")]
    Read { path: String, reason: String },
}

/// Why one release on a page could not be turned into rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("release {index}: missing {field}")]
    Missing { index: usize, field: &'static str },
    #[error("release {index}: release date {text:?} matches none of {formats:?}")]
    BadDate {
        index: usize,
        text: String,
        formats: Vec<String>,
    },
    #[error("release {index}: track {track}: {reason}")]
    BadTrack {
        index: usize,
        track: usize,
        reason: String,
    },
    #[error("release {index}: no tracks")]
    NoTracks { index: usize },
}

/// How the text of a matched element is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TextMode {
    /// All descendant text, whitespace collapsed.
    #[default]
    All,
    /// The element's first non-blank text node of its own (not of its children).
    First,
}

/// Where one field lives, as written in a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub selector: String,
    /// Read this attribute instead of the text.
    #[serde(default)]
    pub attr: Option<String>,
    #[serde(default)]
    pub text: TextMode,
    /// Join every match with this string instead of taking the first.
    #[serde(default)]
    pub join: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFields {
    pub artist: FieldSpec,
    pub release_title: FieldSpec,
    #[serde(default)]
    pub label: Option<FieldSpec>,
    #[serde(default)]
    pub catalogue_number: Option<FieldSpec>,
    #[serde(default)]
    pub release_date: Option<FieldSpec>,
    #[serde(default)]
    pub genre: Option<FieldSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackFields {
    /// One match per track, inside a release.
    pub row: String,
    /// The track name; a trailing ` - (6:43)` is split off as the duration.
    pub name: FieldSpec,
    /// A separate duration field, when the shop has one.
    #[serde(default)]
    pub duration: Option<FieldSpec>,
    /// The preview link; relative URLs are resolved against the page.
    pub preview: FieldSpec,
}

/// A shop's markup, as CSS selectors (the TOML file format of `--profile FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub name: String,
    /// One match per release on a listing page.
    pub release: String,
    /// The link to the next listing page: the matched element's `href`, or that of
    /// its nearest enclosing `<a>` (so an icon inside the link can be selected).
    pub next_page: String,
    /// chrono formats tried in order for the release date.
    #[serde(default = "default_date_formats")]
    pub date_formats: Vec<String>,
    pub fields: ReleaseFields,
    pub tracks: TrackFields,
}

fn default_date_formats() -> Vec<String> {
    vec!["%d %b %y".into(), "%Y-%m-%d".into()]
}

#[derive(Debug, Clone)]
struct Field {
    selector: Selector,
    attr: Option<String>,
    text: TextMode,
    join: Option<String>,
}

/// A profile with its selectors compiled.
#[derive(Debug, Clone)]
pub struct SiteProfile {
    pub spec: ProfileSpec,
    release: Selector,
    next_page: Selector,
    artist: Field,
    release_title: Field,
    label: Option<Field>,
    catalogue_number: Option<Field>,
    release_date: Option<Field>,
    genre: Option<Field>,
    row: Selector,
    name: Field,
    duration: Option<Field>,
    preview: Field,
}

fn selector(field: &'static str, text: &str) -> Result<Selector, ProfileError> {
    Selector::parse(text).map_err(|e| ProfileError::Selector {
        field,
        selector: text.to_string(),
        reason: e.to_string(),
    })
}

fn compile(field: &'static str, spec: &FieldSpec) -> Result<Field, ProfileError> {
    Ok(Field {
        selector: selector(field, &spec.selector)?,
        attr: spec.attr.clone(),
        text: spec.text,
        join: spec.join.clone(),
    })
}

fn compile_opt(
    field: &'static str,
    spec: &Option<FieldSpec>,
) -> Result<Option<Field>, ProfileError> {
    spec.as_ref().map(|s| compile(field, s)).transpose()
}

/// What one listing page holds.
#[derive(Debug, Clone, Default)]
pub struct ParsedPage {
    pub rows: Vec<CatalogueRow>,
    /// Releases that could not be read, with the reason.
    pub failures: Vec<ExtractError>,
    pub next_page: Option<Url>,
    pub releases_seen: usize,
}

impl SiteProfile {
    pub fn from_spec(spec: ProfileSpec) -> Result<SiteProfile, ProfileError> {
        Ok(SiteProfile {
            release: selector("release", &spec.release)?,
            next_page: selector("next_page", &spec.next_page)?,
            artist: compile("fields.artist", &spec.fields.artist)?,
            release_title: compile("fields.release_title", &spec.fields.release_title)?,
            label: compile_opt("fields.label", &spec.fields.label)?,
            catalogue_number: compile_opt(
                "fields.catalogue_number",
                &spec.fields.catalogue_number,
            )?,
            release_date: compile_opt("fields.release_date", &spec.fields.release_date)?,
            genre: compile_opt("fields.genre", &spec.fields.genre)?,
            row: selector("tracks.row", &spec.tracks.row)?,
            name: compile("tracks.name", &spec.tracks.name)?,
            duration: compile_opt("tracks.duration", &spec.tracks.duration)?,
            preview: compile("tracks.preview", &spec.tracks.preview)?,
            spec,
        })
    }

    pub fn from_toml(text: &str) -> Result<SiteProfile, ProfileError> {
        let spec: ProfileSpec =
            toml::from_str(text).map_err(|e| ProfileError::Toml(e.to_string()))?;
        SiteProfile::from_spec(spec)
    }

    pub fn juno() -> SiteProfile {
        SiteProfile::from_toml(JUNO_PROFILE).expect("the built-in juno profile is valid")
    }

    /// `juno` names the built-in profile; anything else is a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<SiteProfile, ProfileError> {
        if name_or_path == "juno" {
            return Ok(SiteProfile::juno());
        }
        let path = std::path::Path::new(name_or_path);
        if !path.exists() && !name_or_path.contains(['/', '.']) {
            return Err(ProfileError::UnknownBuiltIn(name_or_path.to_string()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Read {
            path: name_or_path.to_string(),
            reason: e.to_string(),
        })?;
        SiteProfile::from_toml(&text)
    }

    /// Extracts every release on a listing page. A broken release is reported and
    /// skipped; the rest of the page is kept.
    pub fn parse_page(&self, html: &str, page_url: &Url) -> ParsedPage {
        let document = Html::parse_document(html);
        let mut page = ParsedPage::default();
        for (index, release) in document.select(&self.release).enumerate() {
            page.releases_seen += 1;
            match self.parse_release(index, release, page_url) {
                Ok(rows) => page.rows.extend(rows),
                Err(error) => page.failures.push(error),
            }
        }
        page.next_page = document.select(&self.next_page).find_map(|element| {
            let link = std::iter::once(element)
                .chain(element.ancestors().filter_map(ElementRef::wrap))
                .find(|e| e.value().name() == "a" && e.value().attr("href").is_some())?;
            page_url.join(link.value().attr("href")?.trim()).ok()
        });
        page
    }

    /// Matches of `selector` inside `release` that belong to it and not to a release
    /// nested inside it (broken markup can nest one release in another).
    fn owned<'a>(&self, release: ElementRef<'a>, selector: &Selector) -> Vec<ElementRef<'a>> {
        let nested: HashSet<_> = release.select(&self.release).map(|e| e.id()).collect();
        release
            .select(selector)
            .filter(|element| {
                !element
                    .ancestors()
                    .take_while(|a| a.id() != release.id())
                    .any(|a| nested.contains(&a.id()))
            })
            .collect()
    }

    fn read(&self, release: ElementRef<'_>, field: &Field) -> Option<String> {
        let values: Vec<String> = self
            .owned(release, &field.selector)
            .into_iter()
            .filter_map(|element| read_element(element, field))
            .filter(|v| !v.is_empty())
            .collect();
        match &field.join {
            Some(separator) if !values.is_empty() => Some(values.join(separator)),
            _ => values.into_iter().next(),
        }
    }

    fn parse_release(
        &self,
        index: usize,
        release: ElementRef<'_>,
        page_url: &Url,
    ) -> Result<Vec<CatalogueRow>, ExtractError> {
        let artist = self
            .read(release, &self.artist)
            .ok_or(ExtractError::Missing {
                index,
                field: "artist",
            })?;
        let release_title =
            self.read(release, &self.release_title)
                .ok_or(ExtractError::Missing {
                    index,
                    field: "release title",
                })?;
        let optional = |field: &Option<Field>| field.as_ref().and_then(|f| self.read(release, f));
        let label = optional(&self.label);
        let catalogue_number = optional(&self.catalogue_number);
        let genre = optional(&self.genre);
        let release_date = match optional(&self.release_date) {
            None => None,
            Some(text) => Some(parse_date(&text, &self.spec.date_formats).ok_or_else(|| {
                ExtractError::BadDate {
                    index,
                    text,
                    formats: self.spec.date_formats.clone(),
                }
            })?),
        };
        let mut rows = Vec::new();
        for (track, row) in self.owned(release, &self.row).into_iter().enumerate() {
            let bad = |reason: &str| ExtractError::BadTrack {
                index,
                track: track + 1,
                reason: reason.to_string(),
            };
            let raw_name = first_value(row, &self.name).ok_or_else(|| bad("no track name"))?;
            let (track_name, name_duration) = split_track_name(&raw_name);
            let duration_s = match &self.duration {
                Some(field) => first_value(row, field).and_then(|d| parse_duration(&d)),
                None => name_duration,
            };
            let href = first_value(row, &self.preview).ok_or_else(|| bad("no preview link"))?;
            let preview = page_url
                .join(&href)
                .map_err(|e| bad(&format!("preview link {href:?}: {e}")))?;
            rows.push(CatalogueRow {
                track_id: track_id(&preview),
                artist: artist.clone(),
                release_title: release_title.clone(),
                track_name,
                duration_s,
                label: label.clone(),
                catalogue_number: catalogue_number.clone(),
                release_date,
                genre: genre.clone(),
                preview_url: preview.to_string(),
                page_url: page_url.to_string(),
            });
        }
        if rows.is_empty() {
            return Err(ExtractError::NoTracks { index });
        }
        Ok(rows)
    }
}

fn first_value(scope: ElementRef<'_>, field: &Field) -> Option<String> {
    scope
        .select(&field.selector)
        .filter_map(|e| read_element(e, field))
        .find(|v| !v.is_empty())
}

fn read_element(element: ElementRef<'_>, field: &Field) -> Option<String> {
    if let Some(attr) = &field.attr {
        return element.value().attr(attr).map(|v| v.trim().to_string());
    }
    match field.text {
        TextMode::All => Some(collapse_whitespace(&element.text().collect::<String>())),
        TextMode::First => element
            .children()
            .filter_map(|node| node.value().as_text())
            .map(|text| collapse_whitespace(text))
            .find(|text| !text.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const PAGE: &str = r#"<html><body>
<div class="productlist_widget_container">
  <div class="productlist_widget_product_artists"><span class="jq_highlight pwrtext"><a href="/artists/cv/">CLEAR VIEW</a> feat <a href="/artists/j/">JESSICA</a></span></div>
  <div class="productlist_widget_product_title"><span class="jq_highlight pwrtext"><a href="/products/x/">Tell Me</a></span></div>
  <div class="productlist_widget_product_label"><span class="jq_highlight pwrtext"><a href="/labels/sb/">Songbird Holland</a></span></div>
  <div class="productlist_widget_tracklist_left">
    <div class="productlist_widget_tracklist_row"><div><a href="/MP3/SF1354749-02-01-01.mp3" data-ua_action="play"><span></span></a></div>
      <div class="productlist_widget_tracklist_row_text"><span class="jq_highlight">
				Tell Me - (6:43)				</span></div></div>
    <div class="productlist_widget_tracklist_row"><div><a href="/MP3/SF1354749-02-01-02.mp3" data-ua_action="play"><span></span></a></div>
      <div class="productlist_widget_tracklist_row_text"><span class="jq_highlight">	Tell Me (Max Graham remix) - (8:49)	</span></div></div>
  </div>
  <div class="productlist_widget_product_preview_buy">SB 215-0<br><span>10 Sep 08</span><br><span>Progressive House</span></div>
</div>
<div class="pagination"><a href="/all/back-cat/releases/2/?music_product_type=single">2</a> <a href="/all/back-cat/releases/2/?music_product_type=single"><span class="glyphicon glyphicon-arrow-right"></span></a></div>
</body></html>"#;

    #[test]
    fn juno_profile_reads_the_reference_record() {
        let url = Url::parse("http://shop.test/all/back-cat/releases/?music_product_type=single")
            .unwrap();
        let page = SiteProfile::juno().parse_page(PAGE, &url);
        assert!(page.failures.is_empty(), "{:?}", page.failures);
        assert_eq!(page.rows.len(), 2);
        let first = &page.rows[0];
        assert_eq!(first.artist, "CLEAR VIEW feat JESSICA");
        assert_eq!(first.release_title, "Tell Me");
        assert_eq!(first.label.as_deref(), Some("Songbird Holland"));
        assert_eq!(first.catalogue_number.as_deref(), Some("SB 215-0"));
        assert_eq!(first.release_date, NaiveDate::from_ymd_opt(2008, 9, 10));
        assert_eq!(first.genre.as_deref(), Some("Progressive House"));
        assert_eq!(first.track_name, "Tell Me");
        assert_eq!(first.duration_s, Some(403));
        assert_eq!(
            first.preview_url,
            "http://shop.test/MP3/SF1354749-02-01-01.mp3"
        );
        assert_eq!(page.rows[1].track_name, "Tell Me (Max Graham remix)");
        assert_eq!(page.rows[1].duration_s, Some(529));
        assert_eq!(
            page.next_page.unwrap().as_str(),
            "http://shop.test/all/back-cat/releases/2/?music_product_type=single"
        );
    }

    #[test]
    fn broken_release_is_reported_and_the_rest_kept() {
        let broken = PAGE.replace(
            "<span class=\"jq_highlight pwrtext\"><a href=\"/products/x/\">Tell Me</a></span>",
            "",
        );
        let doubled = format!(
            "{}{}",
            broken.replace("</body></html>", ""),
            PAGE.replace("<html><body>", "")
        );
        let url = Url::parse("http://shop.test/").unwrap();
        let page = SiteProfile::juno().parse_page(&doubled, &url);
        assert_eq!(
            page.failures,
            vec![ExtractError::Missing {
                index: 0,
                field: "release title"
            }]
        );
        assert_eq!(page.rows.len(), 2);
        let bad_date = PAGE.replace("10 Sep 08", "31 Foo 1x");
        let page = SiteProfile::juno().parse_page(&bad_date, &url);
        assert!(matches!(page.failures[0], ExtractError::BadDate { .. }));
        assert!(page.rows.is_empty());
    }

    #[test]
    fn joins_and_attributes_and_bad_profiles() {
        let toml = r#"
name = "mini"
release = "div.r"
next_page = "a[rel=next]"
[fields]
artist = { selector = "i", join = " / " }
release_title = { selector = "h2" }
release_date = { selector = "time", attr = "datetime" }
[tracks]
row = "li"
name = { selector = "b" }
duration = { selector = "em" }
preview = { selector = "button", attr = "data-src" }
"#;
        let profile = SiteProfile::from_toml(toml).unwrap();
        let html = r#"<div class="r"><h2>T</h2><i>A</i><i>B</i><time datetime="2001-02-03">x</time>
            <ul><li><b>One</b><em>3:00</em><button data-src="p/1.mp3"></button></li></ul></div>
            <a rel="next" href="?page=2">next</a>"#;
        let url = Url::parse("http://s.test/list/?page=1").unwrap();
        let page = profile.parse_page(html, &url);
        assert_eq!(page.rows.len(), 1, "{:?}", page.failures);
        assert_eq!(page.rows[0].artist, "A / B");
        assert_eq!(page.rows[0].duration_s, Some(180));
        assert_eq!(
            page.rows[0].release_date,
            NaiveDate::from_ymd_opt(2001, 2, 3)
        );
        assert_eq!(page.rows[0].preview_url, "http://s.test/list/p/1.mp3");
        assert_eq!(
            page.next_page.unwrap().as_str(),
            "http://s.test/list/?page=2"
        );

        let bad = toml.replace("div.r", "div..r");
        assert!(matches!(
            SiteProfile::from_toml(&bad),
            Err(ProfileError::Selector {
                field: "release",
                ..
            })
        ));
        let unknown = format!("{toml}\nsurprise = 1\n");
        assert!(matches!(
            SiteProfile::from_toml(&unknown),
            Err(ProfileError::Toml(_))
        ));
        assert!(matches!(
            SiteProfile::load("nosuch"),
            Err(ProfileError::UnknownBuiltIn(_))
        ));
    }
}
