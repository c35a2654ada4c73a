//! The shop over real HTTP on loopback.

use std::time::Duration;

use deepcuts_shopsim::{CatalogueConfig, Faults, PreviewFault, ShopConfig, Template};

fn small(tracks: usize) -> ShopConfig {
    ShopConfig {
        catalogue: CatalogueConfig {
            tracks,
            ..CatalogueConfig::default()
        },
        releases_per_page: 5,
        preview_seconds: 1.0,
        ..ShopConfig::default()
    }
}

async fn start(config: ShopConfig) -> deepcuts_shopsim::ShopHandle {
    deepcuts_shopsim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn serves_listing_robots_and_previews_and_logs_them() {
    let shop = start(small(30)).await;
    let client = reqwest::Client::builder()
        .user_agent("shopsim-test/1")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let robots = client
        .get(shop.url("/robots.txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(robots.contains("Disallow: /members/"));

    let page = client
        .get(shop.start_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        page.matches("class=\"productlist_widget_container\"")
            .count(),
        5
    );
    assert!(page.contains("glyphicon glyphicon-arrow-right"));
    let truth = shop.truth();
    assert_eq!(truth.tracks.len(), 30);
    let first = &truth.tracks[0];
    assert!(page.contains(&first.preview_path));
    assert!(page.contains("data-ua_action=\"play\""));

    let mp3 = client
        .get(shop.url(&first.preview_path))
        .send()
        .await
        .unwrap();
    assert_eq!(mp3.status(), 200);
    assert_eq!(mp3.headers()["content-type"], "audio/mpeg");
    let bytes = mp3.bytes().await.unwrap();
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());

    let last_page = client
        .get(shop.url(&Template::Juno.page_path(truth.pages)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!last_page.contains("glyphicon-arrow-right"));
    let beyond = client
        .get(shop.url(&Template::Juno.page_path(truth.pages + 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 404);

    let looped = client.get(shop.url("/loop/a")).send().await.unwrap();
    assert_eq!(looped.status(), 302);
    assert_eq!(looped.headers()["location"], "/loop/b");

    let log = shop.requests();
    assert_eq!(log.len(), 6);
    assert_eq!(log[0].path, "/robots.txt");
    assert_eq!(
        log[1].path,
        "/all/back-cat/releases/?music_product_type=single"
    );
    assert_eq!(log[1].user_agent.as_deref(), Some("shopsim-test/1"));
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn error_faults_are_reproducible_and_retries_get_through() {
    let mut config = small(20);
    config.faults = Faults {
        error_rate: 0.5,
        error_statuses: vec![503, 429],
        retry_after_rate: 0.5,
        ..Faults::default()
    };
    let shop = start(config).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut retry_after = 0;
    for _ in 0..40 {
        let response = client.get(shop.start_url()).send().await.unwrap();
        if response.headers().contains_key("retry-after") {
            retry_after += 1;
        }
        statuses.push(response.status().as_u16());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((8..=32).contains(&ok), "{ok} of 40 succeeded");
    assert!(statuses.contains(&503) && statuses.contains(&429));
    assert!(retry_after > 0 && retry_after < 40 - ok, "{retry_after}");
}

#[tokio::test]
async fn hung_responses_hang_and_previews_break_as_configured() {
    let mut config = small(40);
    config.catalogue.truncated_preview_rate = 0.2;
    config.catalogue.corrupt_preview_rate = 0.2;
    config.catalogue.missing_preview_rate = 0.2;
    let shop = start(config.clone()).await;
    let client = reqwest::Client::new();
    let truth = shop.truth();
    let of = |fault| {
        truth
            .tracks
            .iter()
            .find(|t| t.preview_fault == fault)
            .unwrap()
    };
    let whole = client
        .get(shop.url(&of(None).preview_path))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let cut = client
        .get(shop.url(&of(Some(PreviewFault::Truncated)).preview_path))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        cut.len() < whole.len() * 3 / 4,
        "{} vs {}",
        cut.len(),
        whole.len()
    );
    let missing = client
        .get(shop.url(&of(Some(PreviewFault::Missing)).preview_path))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let corrupt = client
        .get(shop.url(&of(Some(PreviewFault::Corrupt)).preview_path))
        .send()
        .await
        .unwrap();
    assert_eq!(corrupt.status(), 200);

    config.faults.hang_rate = 1.0;
    let hanging = start(config).await;
    let timed_out = client
        .get(hanging.start_url())
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(timed_out.unwrap_err().is_timeout());
    assert_eq!(hanging.requests()[0].fault.as_deref(), Some("hang"));
}

#[tokio::test]
async fn table_template_and_malformed_page() {
    let mut config = small(30);
    config.template = Template::Table;
    config.faults.malformed_pages = vec![2];
    let shop = start(config).await;
    let client = reqwest::Client::new();
    let page = client
        .get(shop.start_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<section class=\"release\""));
    assert!(page.contains("rel=\"next\""));
    assert!(!page.contains("productlist_widget"));
    let broken = client
        .get(shop.url(&Template::Table.page_path(2)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(broken.contains("2017-13-45"));
    let truth = shop.truth();
    assert!(truth
        .tracks
        .iter()
        .any(|t| t.on_malformed_page && t.page == 2));
    assert!(truth
        .tracks
        .iter()
        .all(|t| t.on_malformed_page == (t.page == 2)));
}
