//! Crawls of the in-process shop simulator over real HTTP on loopback.

use std::collections::HashMap;
use std::time::Duration;

use deepcuts_scraper::fetch::FetchError;
use deepcuts_scraper::{CatalogueRow, CrawlSpec, Crawler, SiteProfile};
use deepcuts_shopsim::{CatalogueConfig, Faults, GroundTruth, ShopConfig, ShopHandle, Template};

async fn shop(
    tracks: usize,
    releases_per_page: usize,
    tweak: impl FnOnce(&mut ShopConfig),
) -> ShopHandle {
    let mut config = ShopConfig {
        catalogue: CatalogueConfig {
            seed: 11,
            tracks,
            ..CatalogueConfig::default()
        },
        releases_per_page,
        preview_seconds: 1.0,
        ..ShopConfig::default()
    };
    tweak(&mut config);
    deepcuts_shopsim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn fast_retries(spec: &mut CrawlSpec) {
    spec.safety.timeout_ms = 400;
    spec.safety.backoff_base_ms = 10;
    spec.safety.backoff_max_ms = 100;
    spec.safety.max_attempts = 12;
}

/// Every expected track is in `rows` once, with every field equal to the truth.
fn assert_matches_truth(
    rows: &[CatalogueRow],
    truth: &GroundTruth,
    base: &str,
    include: impl Fn(&deepcuts_shopsim::TruthTrack) -> bool,
) {
    let by_preview: HashMap<&str, &CatalogueRow> =
        rows.iter().map(|r| (r.preview_url.as_str(), r)).collect();
    assert_eq!(by_preview.len(), rows.len(), "a preview URL appears twice");
    let expected: Vec<_> = truth.tracks.iter().filter(|t| include(t)).collect();
    assert_eq!(rows.len(), expected.len(), "row count");
    for track in expected {
        let url = format!("{base}{}", track.preview_path);
        let row = by_preview
            .get(url.as_str())
            .unwrap_or_else(|| panic!("track {} not found", track.shop_id));
        assert_eq!(row.artist, track.artist, "{}", track.shop_id);
        assert_eq!(row.release_title, track.release_title, "{}", track.shop_id);
        assert_eq!(row.track_name, track.track_name, "{}", track.shop_id);
        assert_eq!(row.duration_s, Some(track.duration_s), "{}", track.shop_id);
        assert_eq!(
            row.label.as_deref(),
            Some(track.label.as_str()),
            "{}",
            track.shop_id
        );
        assert_eq!(
            row.catalogue_number.as_deref(),
            Some(track.catalogue_number.as_str()),
            "{}",
            track.shop_id
        );
        assert_eq!(
            row.release_date.map(|d| d.to_string()),
            Some(track.release_date.clone()),
            "{}",
            track.shop_id
        );
        assert_eq!(
            row.genre.as_deref(),
            Some(track.genre.as_str()),
            "{}",
            track.shop_id
        );
        assert_eq!(
            row.page_url,
            format!("{base}{}", track.page_path),
            "{}",
            track.shop_id
        );
        assert_eq!(row.track_id.len(), 16);
    }
}

#[tokio::test]
async fn crawl_of_2000_tracks_matches_ground_truth() {
    let shop = shop(2000, 20, |_| {}).await;
    let spec = CrawlSpec::new(shop.start_url()).impolite();
    let report = Crawler::new(spec).unwrap().run(|_, _| {}).await;
    let truth = shop.truth();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.pages.len(), truth.pages);
    assert_matches_truth(&report.rows, &truth, &shop.base_url(), |_| true);
    let mut ids: Vec<_> = report.rows.iter().map(|r| r.track_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2000, "track ids collide");
    // A catalogue crawl: no preview downloads.
    assert!(shop.requests().iter().all(|r| !r.path.starts_with("/MP3/")));
}

#[tokio::test]
async fn faults_robots_and_rate_limit() {
    let shop = shop(240, 8, |c| {
        c.faults = Faults {
            error_rate: 0.10,
            error_statuses: vec![503],
            hang_rate: 0.05,
            retry_after_s: 0,
            malformed_pages: vec![3],
            ..Faults::default()
        };
    })
    .await;
    let mut spec = CrawlSpec::new(shop.start_url());
    spec.start_urls.push(shop.url("/members/back-cat/"));
    spec.politeness.requests_per_second = 25.0;
    spec.politeness.concurrency_per_host = 1;
    fast_retries(&mut spec);
    let report = Crawler::new(spec).unwrap().run(|_, _| {}).await;
    let truth = shop.truth();
    let log = shop.requests();

    // Faults were really injected, and every track off the malformed page was found.
    assert!(
        log.iter().any(|r| r.fault.as_deref() == Some("503")),
        "no 503 injected"
    );
    assert!(
        log.iter().any(|r| r.fault.as_deref() == Some("hang")),
        "no hang injected"
    );
    assert_matches_truth(&report.rows, &truth, &shop.base_url(), |t| {
        !t.on_malformed_page
    });

    // The malformed page's releases each have a failure record with a reason.
    let malformed: Vec<_> = report
        .failures
        .iter()
        .filter(|f| f.kind == "malformed_release")
        .collect();
    assert_eq!(malformed.len(), 8, "{:?}", report.failures);
    assert!(malformed
        .iter()
        .all(|f| f.unit_id.starts_with("page=00003/release=") && !f.reason.is_empty()));
    assert!(malformed
        .iter()
        .any(|f| f.reason.contains("missing release title")));
    assert!(malformed.iter().any(|f| f.reason.contains("31 Foo 1x")));
    assert!(malformed
        .iter()
        .any(|f| f.reason.contains("no preview link")));

    // robots.txt: the members' area was refused without a request.
    assert!(report
        .failures
        .iter()
        .any(|f| f.kind == "robots_disallowed" && f.url.contains("/members/")));
    assert!(log
        .iter()
        .all(|r| !r.path.starts_with("/members/") && !r.path.starts_with("/basket/")));
    assert_eq!(log.iter().filter(|r| r.path == "/robots.txt").count(), 1);

    // 25 rps: one request per 40 ms.
    assert_paced(&log, Duration::from_millis(40));
}

/// Requests arrived no faster than one per `interval`. The server stamps arrival, so
/// each stamp carries the loopback's scheduling jitter (several ms on a loaded CI
/// machine): a single gap may fall short by that much, but a run of consecutive
/// requests may not, since jitter moves only its two ends. A missing or broken gate
/// gives gaps of a millisecond or two and fails both checks.
fn assert_paced(log: &[deepcuts_shopsim::RequestRecord], interval: Duration) {
    assert!(log.len() >= 3, "too few requests to judge pacing");
    let run_len = (log.len() - 1).min(10);
    let jitter = Duration::from_millis(15);
    for pair in log.windows(2) {
        let gap = pair[1].at.saturating_sub(pair[0].at);
        assert!(
            gap >= interval / 2,
            "{} then {} only {gap:?} apart",
            pair[0].path,
            pair[1].path
        );
    }
    for run in log.windows(run_len + 1) {
        let span = run[run_len].at.saturating_sub(run[0].at);
        assert!(
            span + jitter >= interval * run_len as u32,
            "{run_len} gaps from {} took only {span:?}",
            run[0].path
        );
    }
}

#[tokio::test]
async fn crawl_delay_from_robots_is_kept() {
    let shop = shop(24, 4, |c| c.crawl_delay_s = Some(0.15)).await;
    let spec = CrawlSpec::new(shop.start_url()).impolite();
    let report = Crawler::new(spec).unwrap().run(|_, _| {}).await;
    assert_eq!(report.rows.len(), 24);
    // The first request (robots.txt itself) goes before the delay is known.
    let log = shop.requests();
    assert_paced(&log[1..], Duration::from_millis(150));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let shop = shop(4, 4, |c| {
        c.faults = Faults {
            error_rate: 0.6,
            error_statuses: vec![429],
            retry_after_rate: 1.0,
            retry_after_s: 1,
            ..Faults::default()
        };
    })
    .await;
    let mut spec = CrawlSpec::new(shop.start_url()).impolite();
    fast_retries(&mut spec);
    let report = Crawler::new(spec).unwrap().run(|_, _| {}).await;
    assert_eq!(report.rows.len(), 4, "{:?}", report.failures);
    let log = shop.requests();
    let throttled: Vec<_> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == 429)
        .collect();
    assert!(!throttled.is_empty(), "the seed gave no 429 to test");
    for (i, record) in throttled {
        let next = log[i + 1..]
            .iter()
            .find(|r| r.path == record.path)
            .expect("retried");
        assert!(
            next.at - record.at >= Duration::from_millis(950),
            "retried after {:?}",
            next.at - record.at
        );
    }
}

#[tokio::test]
async fn toml_profile_crawls_the_table_template() {
    let shop = shop(60, 6, |c| c.template = Template::Table).await;
    let profile_path = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/table.toml");
    let profile = SiteProfile::load(profile_path).unwrap();
    let spec = CrawlSpec::new(shop.start_url())
        .impolite()
        .with_profile(&profile);
    let report = Crawler::new(spec.clone()).unwrap().run(|_, _| {}).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_matches_truth(&report.rows, &shop.truth(), &shop.base_url(), |_| true);

    // The juno profile finds nothing in this markup, which says the profile mattered.
    let juno = CrawlSpec::new(shop.start_url()).impolite();
    assert!(Crawler::new(juno)
        .unwrap()
        .run(|_, _| {})
        .await
        .rows
        .is_empty());
}

#[tokio::test]
async fn limits_redirect_loops_and_missing_pages() {
    let shop = shop(90, 5, |_| {}).await;
    let mut spec = CrawlSpec::new(shop.start_url()).impolite();
    spec.limits.max_pages = Some(3);
    let report = Crawler::new(spec).unwrap().run(|_, _| {}).await;
    assert_eq!(report.pages.len(), 3);

    let mut spec = CrawlSpec::new(shop.start_url()).impolite();
    spec.limits.max_tracks = Some(7);
    assert_eq!(
        Crawler::new(spec).unwrap().run(|_, _| {}).await.rows.len(),
        7
    );

    let mut spec = CrawlSpec::new(shop.start_url()).impolite();
    spec.limits.genres = vec!["drum-and-bass".into(), "trance".into()];
    let report = Crawler::new(spec).unwrap().run(|_, _| {}).await;
    assert_eq!(report.rows.len(), 20);
    assert!(report
        .rows
        .iter()
        .all(|r| matches!(r.genre.as_deref(), Some("Drum & Bass" | "Trance"))));

    let mut spec = CrawlSpec::new(shop.url("/loop/a")).impolite();
    spec.start_urls
        .push(shop.url("/all/back-cat/releases/999/?music_product_type=single"));
    let report = Crawler::new(spec).unwrap().run(|_, _| {}).await;
    let kinds: Vec<_> = report.failures.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, vec!["too_many_redirects", "http_status"]);
    let log = shop.requests();
    // A 404 is a verdict, not retried.
    assert_eq!(log.iter().filter(|r| r.path.contains("/999/")).count(), 1);
}

#[tokio::test]
async fn off_site_links_are_not_fetched() {
    let shop = shop(10, 5, |_| {}).await;
    let spec = CrawlSpec::new(shop.start_url()).impolite();
    let fetcher = deepcuts_scraper::fetch::Fetcher::new(&spec).unwrap();
    let elsewhere = url::Url::parse(&shop.start_url().replace("127.0.0.1", "localhost")).unwrap();
    assert!(matches!(
        fetcher.get(&elsewhere).await,
        Err(FetchError::HostNotAllowed { .. })
    ));
    assert!(shop.requests().is_empty());
}
