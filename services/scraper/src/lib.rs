//! The scraper service: crawls a shop's back-catalogue listing politely into catalogue
//! rows (one Parquet file per listing page), or lists a folder of audio files into the
//! same rows.
//!
//! - [`spec`]: the crawl job (start URLs, site profile, limits, politeness, safety caps).
//! - [`profile`]: CSS-selector site profiles (built-in `juno`, or TOML) and extraction.
//! - [`normalise`]: track name vs duration, ISO dates, stable track ids.
//! - [`fetch`]: allow-list, robots.txt, rate limit, retries, caps.
//! - [`crawl`]: one page at a time, or a whole crawl in one process.
//! - [`folder`]: the folder-of-audio-files source.
//! - [`catalogue`]: the row type and its Arrow schema.

pub mod catalogue;
pub mod crawl;
pub mod fetch;
pub mod folder;
pub mod normalise;
pub mod profile;
pub mod spec;
pub mod worker;

pub use catalogue::CatalogueRow;
pub use crawl::{CrawlFailure, CrawlReport, Crawler};
pub use profile::SiteProfile;
pub use spec::CrawlSpec;
