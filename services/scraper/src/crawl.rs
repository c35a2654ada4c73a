//! Crawling listing pages: one page at a time (what a worker does per task) and a
//! whole crawl in one process (the CLI, tests and benchmarks).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::catalogue::CatalogueRow;
use crate::fetch::{FetchError, Fetcher};
use crate::normalise::genre_key;
use crate::profile::{ParsedPage, SiteProfile};
use crate::spec::{CrawlSpec, Limits, SpecError};

/// A unit that could not be crawled, and why. Becomes a failure record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrawlFailure {
    /// `page=00007` for a page, `page=00007/release=03` for one release on it.
    pub unit_id: String,
    pub url: String,
    pub kind: String,
    pub reason: String,
}

pub fn page_unit(page: u32) -> String {
    format!("page={page:05}")
}

/// Fetches and parses one listing page.
pub async fn fetch_page(
    fetcher: &Fetcher,
    profile: &SiteProfile,
    url: &Url,
) -> Result<(Url, ParsedPage), FetchError> {
    let fetched = fetcher.get(url).await?;
    let html = String::from_utf8_lossy(&fetched.body);
    let parsed = profile.parse_page(&html, &fetched.url);
    Ok((fetched.url, parsed))
}

/// The failure records for the broken releases of a parsed page.
pub fn release_failures(page: u32, url: &Url, parsed: &ParsedPage) -> Vec<CrawlFailure> {
    parsed
        .failures
        .iter()
        .map(|error| {
            let index = match error {
                crate::profile::ExtractError::Missing { index, .. }
                | crate::profile::ExtractError::BadDate { index, .. }
                | crate::profile::ExtractError::BadTrack { index, .. }
                | crate::profile::ExtractError::NoTracks { index } => *index,
            };
            CrawlFailure {
                unit_id: format!("{}/release={:02}", page_unit(page), index + 1),
                url: url.to_string(),
                kind: "malformed_release".to_string(),
                reason: error.to_string(),
            }
        })
        .collect()
}

/// Applies the genre filter and drops tracks already `seen` in this page or job.
/// Returns the rows to keep and how many duplicates were dropped.
pub fn keep_rows(
    rows: Vec<CatalogueRow>,
    limits: &Limits,
    seen: &mut HashSet<String>,
) -> (Vec<CatalogueRow>, u64) {
    let wanted: HashSet<String> = limits.genres.iter().map(|g| genre_key(g)).collect();
    let mut duplicates = 0;
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        if !wanted.is_empty()
            && !row
                .genre
                .as_deref()
                .is_some_and(|g| wanted.contains(&genre_key(g)))
        {
            continue;
        }
        if !seen.insert(row.track_id.clone()) {
            duplicates += 1;
            continue;
        }
        kept.push(row);
    }
    (kept, duplicates)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageSummary {
    pub page: u32,
    pub url: String,
    pub tracks: usize,
    pub failures: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CrawlReport {
    pub rows: Vec<CatalogueRow>,
    pub pages: Vec<PageSummary>,
    pub failures: Vec<CrawlFailure>,
    pub duplicates: u64,
    pub elapsed: Duration,
}

impl CrawlReport {
    /// Tracks per genre, sorted by genre.
    pub fn tracks_per_genre(&self) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::new();
        for row in &self.rows {
            *counts
                .entry(row.genre.clone().unwrap_or_else(|| "(none)".into()))
                .or_insert(0) += 1;
        }
        counts.into_iter().collect()
    }
}

/// A whole crawl in this process, following each start URL's pager in turn.
pub struct Crawler {
    spec: CrawlSpec,
    profile: SiteProfile,
    fetcher: Fetcher,
}

impl Crawler {
    pub fn new(spec: CrawlSpec) -> Result<Crawler, SpecError> {
        let profile = spec.validate()?;
        let fetcher = Fetcher::new(&spec).map_err(|e| SpecError::Invalid(e.to_string()))?;
        Ok(Crawler {
            spec,
            profile,
            fetcher,
        })
    }

    /// Crawls until every pager ends or a limit is reached; `on_page` sees each page.
    pub async fn run(&self, mut on_page: impl FnMut(&PageSummary, &[CatalogueRow])) -> CrawlReport {
        let started = Instant::now();
        let mut report = CrawlReport::default();
        let mut seen = HashSet::new();
        let mut page_number = 0u32;
        let limits = &self.spec.limits;
        'starts: for start in &self.spec.start_urls {
            let mut next = Url::parse(start).ok();
            let mut visited = HashSet::new();
            while let Some(url) = next.take() {
                if limits.max_pages.is_some_and(|max| page_number >= max) {
                    break 'starts;
                }
                // A pager that points back to a page already read would loop forever.
                if !visited.insert(url.clone()) {
                    break;
                }
                page_number += 1;
                let unit_id = page_unit(page_number);
                match fetch_page(&self.fetcher, &self.profile, &url).await {
                    Ok((final_url, parsed)) => {
                        let failures = release_failures(page_number, &final_url, &parsed);
                        for failure in &failures {
                            tracing::warn!(
                                unit_id = failure.unit_id,
                                reason = failure.reason,
                                "release skipped"
                            );
                        }
                        let (mut kept, duplicates) = keep_rows(parsed.rows, limits, &mut seen);
                        if let Some(max) = limits.max_tracks {
                            let room = max.saturating_sub(report.rows.len() as u64) as usize;
                            kept.truncate(room);
                        }
                        let summary = PageSummary {
                            page: page_number,
                            url: url.to_string(),
                            tracks: kept.len(),
                            failures: failures.len(),
                        };
                        on_page(&summary, &kept);
                        report.duplicates += duplicates;
                        report.failures.extend(failures);
                        report.rows.extend(kept);
                        report.pages.push(summary);
                        next = parsed.next_page;
                        if limits
                            .max_tracks
                            .is_some_and(|max| report.rows.len() as u64 >= max)
                        {
                            break 'starts;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(unit_id, %url, %error, "listing page failed");
                        let summary = PageSummary {
                            page: page_number,
                            url: url.to_string(),
                            tracks: 0,
                            failures: 1,
                        };
                        on_page(&summary, &[]);
                        report.pages.push(summary);
                        report.failures.push(CrawlFailure {
                            unit_id,
                            url: url.to_string(),
                            kind: error.kind().to_string(),
                            reason: error.to_string(),
                        });
                    }
                }
            }
        }
        report.elapsed = started.elapsed();
        report
    }
}
