//! The shop's catalogue: releases and tracks generated from one seed.

use chrono::NaiveDate;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The nine genres of the 2017 project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Genre {
    Breakbeat,
    Dancehall,
    Downtempo,
    DrumAndBass,
    FunkyHouse,
    HipHop,
    MinimalHouse,
    RockIndie,
    Trance,
}

impl Genre {
    pub const ALL: [Genre; 9] = [
        Genre::Breakbeat,
        Genre::Dancehall,
        Genre::Downtempo,
        Genre::DrumAndBass,
        Genre::FunkyHouse,
        Genre::HipHop,
        Genre::MinimalHouse,
        Genre::RockIndie,
        Genre::Trance,
    ];

    /// The label the shop prints on its pages.
    pub fn display_name(self) -> &'static str {
        match self {
            Genre::Breakbeat => "Breakbeat",
            Genre::Dancehall => "Dancehall/Ragga",
            Genre::Downtempo => "Downtempo",
            Genre::DrumAndBass => "Drum & Bass",
            Genre::FunkyHouse => "Funky House",
            Genre::HipHop => "Hip Hop/R&B",
            Genre::MinimalHouse => "Minimal House",
            Genre::RockIndie => "Rock/Indie",
            Genre::Trance => "Trance",
        }
    }

    /// Short stable name, used on the command line (`--genres trance,breakbeat`).
    pub fn slug(self) -> &'static str {
        match self {
            Genre::Breakbeat => "breakbeat",
            Genre::Dancehall => "dancehall",
            Genre::Downtempo => "downtempo",
            Genre::DrumAndBass => "drum-and-bass",
            Genre::FunkyHouse => "funky-house",
            Genre::HipHop => "hip-hop",
            Genre::MinimalHouse => "minimal-house",
            Genre::RockIndie => "rock-indie",
            Genre::Trance => "trance",
        }
    }

    pub fn from_slug(text: &str) -> Option<Genre> {
        let wanted = text.trim().to_ascii_lowercase();
        Genre::ALL
            .into_iter()
            .find(|g| g.slug() == wanted || g.display_name().to_ascii_lowercase() == wanted)
    }

    /// Typical track length range in seconds.
    fn length_range(self) -> (u32, u32) {
        match self {
            Genre::Trance | Genre::MinimalHouse | Genre::FunkyHouse => (300, 560),
            Genre::DrumAndBass | Genre::Breakbeat => (240, 420),
            Genre::Downtempo => (200, 380),
            Genre::HipHop | Genre::Dancehall | Genre::RockIndie => (150, 280),
        }
    }
}

/// What the shop deliberately gets wrong about one preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviewFault {
    /// The file stops about half way.
    Truncated,
    /// A run of bytes in the middle is garbage.
    Corrupt,
    /// The preview answers 404.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// The shop's own id, e.g. `SF1354749-01-01-02`; names the preview file.
    pub shop_id: String,
    /// 1-based position on the release.
    pub position: u32,
    pub name: String,
    pub duration_s: u32,
    /// Seed for the synthesised preview.
    pub audio_seed: u64,
    pub bitrate_kbps: u32,
    pub preview_fault: Option<PreviewFault>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub product_id: u32,
    /// Artists in credit order; the page prints them joined.
    pub artists: Vec<String>,
    /// How the artists are joined on the page and in the crawl's `artist` field.
    pub artist_credit: String,
    pub title: String,
    pub label: String,
    pub catalogue_number: String,
    pub release_date: NaiveDate,
    pub genre: Genre,
    pub tracks: Vec<Track>,
}

/// How big a catalogue to make and from which seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogueConfig {
    pub seed: u64,
    /// Total number of tracks, spread as evenly as possible over `genres`.
    pub tracks: usize,
    pub genres: Vec<Genre>,
    /// Fraction of previews that are truncated, corrupt and missing.
    pub truncated_preview_rate: f64,
    pub corrupt_preview_rate: f64,
    pub missing_preview_rate: f64,
}

impl Default for CatalogueConfig {
    fn default() -> Self {
        CatalogueConfig {
            seed: 2017,
            tracks: 540,
            genres: Genre::ALL.to_vec(),
            truncated_preview_rate: 0.0,
            corrupt_preview_rate: 0.0,
            missing_preview_rate: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    pub config: CatalogueConfig,
    /// Releases in the order the back-catalogue listing shows them.
    pub releases: Vec<Release>,
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "zen", "tor", "vex", "nu", "sol", "da", "rin", "mo", "bel", "ix",
    "shi", "gra", "vo", "len", "qua", "ter", "syl", "phe", "dro", "om", "ly", "cas", "xen", "ju",
    "ba", "fel",
];
const WORDS: &[&str] = &[
    "Midnight",
    "Signal",
    "Echo",
    "Velvet",
    "Concrete",
    "Orbit",
    "Summer",
    "Static",
    "Northern",
    "Deep",
    "Golden",
    "Hollow",
    "Electric",
    "Paper",
    "Silent",
    "Fever",
    "Motion",
    "Crystal",
    "Distant",
    "Neon",
    "River",
    "Shadow",
    "Phantom",
    "Solar",
    "Broken",
    "Rainbow",
    "Tokyo",
    "Basement",
    "Heat",
    "Pressure",
    "Ghost",
    "Skyline",
    "Liquid",
    "Rush",
    "Wonder",
    "Voodoo",
    "Sunday",
    "Analog",
    "Desert",
    "Harbour",
    "Riddim",
    "Groove",
    "Cipher",
    "Lullaby",
    "Engine",
    "Satellite",
    "Mirror",
    "Honey",
    "Storm",
    "Paradise",
];
const FIRST_NAMES: &[&str] = &[
    "Max", "Jessica", "Leon", "Ana", "Kofi", "Mara", "Dmitri", "Yuki", "Sven", "Chloé", "Ravi",
    "Nadia", "Tomás", "Ines", "Marcus", "Zoë", "Olu", "Björn", "Keisha", "Luca",
];
const LABEL_SUFFIXES: &[&str] = &[
    "Records",
    "Recordings",
    "Music",
    "Audio",
    "Sound System",
    "Holland",
    "Digital",
    "& Co",
];
const MIX_KINDS: &[&str] = &[
    "Original Mix",
    "Dub",
    "Instrumental",
    "Club Mix",
    "Radio Edit",
    "Extended Mix",
    "VIP",
];

fn made_up_word(rng: &mut ChaCha8Rng) -> String {
    let n = rng.random_range(2..=3);
    let mut word = String::new();
    for _ in 0..n {
        word.push_str(SYLLABLES.choose(rng).copied().unwrap_or("ka"));
    }
    capitalise(&word)
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, list: &[&'a str]) -> &'a str {
    list.choose(rng).copied().unwrap_or("")
}

fn artist_name(rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..6) {
        0 => format!("DJ {}", made_up_word(rng)),
        1 => format!("{} {}", pick(rng, FIRST_NAMES), made_up_word(rng)),
        2 => format!("The {}s", pick(rng, WORDS)),
        3 => made_up_word(rng).to_uppercase(),
        4 => format!("{} & {}", made_up_word(rng), made_up_word(rng)),
        _ => format!("{} {}", pick(rng, WORDS), made_up_word(rng)),
    }
}

fn title(rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..4) {
        0 => pick(rng, WORDS).to_string(),
        1 => format!("{} {}", pick(rng, WORDS), pick(rng, WORDS)),
        2 => format!("The {} EP", pick(rng, WORDS)),
        _ => format!("{} {}", pick(rng, WORDS), made_up_word(rng)),
    }
}

fn label_name(rng: &mut ChaCha8Rng) -> String {
    format!("{} {}", made_up_word(rng), pick(rng, LABEL_SUFFIXES))
}

fn catalogue_number(rng: &mut ChaCha8Rng, label: &str) -> String {
    let prefix: String = label
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let prefix = if prefix.len() < 2 {
        format!("{prefix}R")
    } else {
        prefix
    };
    let number = rng.random_range(1..999);
    match rng.random_range(0..4) {
        0 => format!("{prefix} {number}-0"),
        1 => format!("{prefix}{number:03}"),
        2 => format!("{prefix} {number:03}"),
        _ => format!("{prefix}DIGI{number}"),
    }
}

impl Catalogue {
    /// Builds the catalogue for `config`; the same config always gives the same catalogue.
    pub fn generate(config: &CatalogueConfig) -> Catalogue {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let genres = if config.genres.is_empty() {
            Genre::ALL.to_vec()
        } else {
            config.genres.clone()
        };
        let mut releases = Vec::new();
        let mut used_product_ids = std::collections::HashSet::new();
        let base = config.tracks / genres.len();
        let extra = config.tracks % genres.len();
        let labels: Vec<String> = (0..(config.tracks / 12).max(8))
            .map(|_| label_name(&mut rng))
            .collect();
        let start = NaiveDate::from_ymd_opt(1995, 1, 1).expect("valid constant date");
        for (index, genre) in genres.iter().copied().enumerate() {
            let mut remaining = base + usize::from(index < extra);
            while remaining > 0 {
                let count = rng.random_range(1..=4usize).min(remaining);
                remaining -= count;
                let mut product_id = rng.random_range(1_000_000..9_999_999u32);
                while !used_product_ids.insert(product_id) {
                    product_id = rng.random_range(1_000_000..9_999_999u32);
                }
                let mut artists = vec![artist_name(&mut rng)];
                let mut artist_credit = artists[0].clone();
                match rng.random_range(0..8) {
                    0 => {
                        let featured =
                            format!("{} {}", pick(&mut rng, FIRST_NAMES), made_up_word(&mut rng));
                        artist_credit = format!("{artist_credit} feat {featured}");
                        artists.push(featured);
                    }
                    1 => {
                        let second = artist_name(&mut rng);
                        artist_credit = format!("{artist_credit} / {second}");
                        artists.push(second);
                    }
                    _ => {}
                }
                let release_title = title(&mut rng);
                let label = labels.choose(&mut rng).cloned().unwrap_or_default();
                let catalogue_number = catalogue_number(&mut rng, &label);
                let release_date = start + chrono::Days::new(rng.random_range(0..8_200));
                let (short, long) = genre.length_range();
                let disc = if rng.random_bool(0.7) { 1 } else { 2 };
                let tracks = (1..=count as u32)
                    .map(|position| {
                        let name = if position == 1 {
                            release_title.clone()
                        } else if rng.random_bool(0.5) {
                            format!("{} ({} remix)", release_title, artist_name(&mut rng))
                        } else if rng.random_bool(0.5) {
                            format!("{} ({})", release_title, pick(&mut rng, MIX_KINDS))
                        } else {
                            title(&mut rng)
                        };
                        let bitrate_kbps = *[128, 160, 192, 224, 256, 320]
                            .choose(&mut rng)
                            .unwrap_or(&192);
                        let fault_roll: f64 = rng.random();
                        let preview_fault = if fault_roll < config.missing_preview_rate {
                            Some(PreviewFault::Missing)
                        } else if fault_roll
                            < config.missing_preview_rate + config.truncated_preview_rate
                        {
                            Some(PreviewFault::Truncated)
                        } else if fault_roll
                            < config.missing_preview_rate
                                + config.truncated_preview_rate
                                + config.corrupt_preview_rate
                        {
                            Some(PreviewFault::Corrupt)
                        } else {
                            None
                        };
                        Track {
                            shop_id: format!("SF{product_id}-0{disc}-01-{position:02}"),
                            position,
                            name,
                            duration_s: rng.random_range(short..=long),
                            audio_seed: rng.random(),
                            bitrate_kbps,
                            preview_fault,
                        }
                    })
                    .collect();
                releases.push(Release {
                    product_id,
                    artists,
                    artist_credit,
                    title: release_title,
                    label,
                    catalogue_number,
                    release_date,
                    genre,
                    tracks,
                });
            }
        }
        // The back-catalogue listing mixes genres; a seeded shuffle keeps it stable.
        use rand::seq::SliceRandom;
        releases.shuffle(&mut rng);
        Catalogue {
            config: config.clone(),
            releases,
        }
    }

    pub fn track_count(&self) -> usize {
        self.releases.iter().map(|r| r.tracks.len()).sum()
    }

    /// Finds a track and its release by the shop's track id.
    pub fn find_track(&self, shop_id: &str) -> Option<(&Release, &Track)> {
        self.releases.iter().find_map(|release| {
            release
                .tracks
                .iter()
                .find(|t| t.shop_id == shop_id)
                .map(|t| (release, t))
        })
    }
}

/// Formats a date the way the shop's listing does: `10 Sep 08`.
pub fn shop_date(date: NaiveDate) -> String {
    date.format("%d %b %y").to_string()
}

/// Formats seconds as the shop's `6:43`.
pub fn shop_duration(seconds: u32) -> String {
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_catalogue_and_exact_track_count() {
        let config = CatalogueConfig {
            tracks: 101,
            ..CatalogueConfig::default()
        };
        let a = Catalogue::generate(&config);
        let b = Catalogue::generate(&config);
        assert_eq!(a, b);
        assert_eq!(a.track_count(), 101);
        let other = Catalogue::generate(&CatalogueConfig { seed: 1, ..config });
        assert_ne!(a.releases[0].title, other.releases[0].title);
    }

    #[test]
    fn genres_are_balanced_and_tracks_unique() {
        let catalogue = Catalogue::generate(&CatalogueConfig {
            tracks: 90,
            ..CatalogueConfig::default()
        });
        for genre in Genre::ALL {
            let n: usize = catalogue
                .releases
                .iter()
                .filter(|r| r.genre == genre)
                .map(|r| r.tracks.len())
                .sum();
            assert_eq!(n, 10, "{genre:?}");
        }
        let mut ids: Vec<_> = catalogue
            .releases
            .iter()
            .flat_map(|r| r.tracks.iter().map(|t| t.shop_id.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 90);
        assert!(catalogue
            .releases
            .iter()
            .all(|r| (1..=4).contains(&r.tracks.len())));
    }

    #[test]
    fn shop_formats() {
        let date = NaiveDate::from_ymd_opt(2008, 9, 10).unwrap();
        assert_eq!(shop_date(date), "10 Sep 08");
        assert_eq!(shop_duration(403), "6:43");
        assert_eq!(Genre::from_slug("Drum & Bass"), Some(Genre::DrumAndBass));
        assert_eq!(Genre::from_slug("trance"), Some(Genre::Trance));
    }
}
