//! The folder source, and the `deepcuts crawl` command (compiled from the CLI's file).

#[path = "../../cli/src/commands/crawl.rs"]
mod crawl;

use std::sync::Arc;

use deepcuts_core::storage::{LocalStore, ObjectStore};
use deepcuts_core::{keys, parquet_io};
use deepcuts_scraper::catalogue::from_batch;
use deepcuts_scraper::folder::{scan_folder, GenreSource};
use deepcuts_shopsim::synth::preview_mp3;
use deepcuts_shopsim::{CatalogueConfig, Genre, ShopConfig};
use lofty::config::WriteOptions;
use lofty::file::{AudioFile, TaggedFileExt};
use lofty::tag::{Accessor, Tag, TagType};

fn library() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (folder, genre, name) in [
        ("Trance", Genre::Trance, "a.mp3"),
        ("Trance", Genre::Trance, "b.MP3"),
        ("Dub Techno", Genre::MinimalHouse, "c.mp3"),
    ] {
        std::fs::create_dir_all(dir.path().join(folder)).unwrap();
        std::fs::write(
            dir.path().join(folder).join(name),
            preview_mp3(genre, 1, 1.0, 128).unwrap(),
        )
        .unwrap();
    }
    let tagged_path = dir.path().join("loose.mp3");
    std::fs::write(
        &tagged_path,
        preview_mp3(Genre::Downtempo, 2, 1.0, 192).unwrap(),
    )
    .unwrap();
    let mut file = lofty::read_from_path(&tagged_path).unwrap();
    let mut tag = Tag::new(TagType::Id3v2);
    tag.set_genre("Downtempo".into());
    tag.set_artist("Tagged Artist".into());
    tag.set_title("Tagged Title".into());
    file.insert_tag(tag);
    file.save_to_path(&tagged_path, WriteOptions::default())
        .unwrap();
    std::fs::write(dir.path().join("broken.mp3"), b"this is not audio at all").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    dir
}

#[test]
fn folder_source_takes_genre_from_folder_or_tags() {
    let dir = library();
    let catalogue = scan_folder(dir.path(), GenreSource::FolderThenTags).unwrap();
    assert_eq!(catalogue.rows.len(), 4, "{:?}", catalogue.failures);
    assert_eq!(catalogue.failures.len(), 1);
    assert!(catalogue.failures[0].unit_id.contains("broken.mp3"));
    let by_name = |n: &str| {
        catalogue
            .rows
            .iter()
            .find(|r| r.preview_url.ends_with(n))
            .unwrap()
    };
    assert_eq!(by_name("a.mp3").genre.as_deref(), Some("Trance"));
    assert_eq!(by_name("c.mp3").genre.as_deref(), Some("Dub Techno"));
    assert_eq!(by_name("a.mp3").track_name, "a");
    let loose = by_name("loose.mp3");
    assert_eq!(loose.genre.as_deref(), Some("Downtempo"));
    assert_eq!(loose.artist, "Tagged Artist");
    assert_eq!(loose.track_name, "Tagged Title");
    assert!(loose.preview_url.starts_with("file:///"));
    assert_eq!(by_name("a.mp3").duration_s, Some(1));
    // Ids depend on the path inside the library, not where the library lives.
    let moved = tempfile::tempdir().unwrap();
    let target = moved.path().join("lib");
    std::fs::rename(dir.path(), &target).unwrap();
    let again = scan_folder(&target, GenreSource::FolderThenTags).unwrap();
    let ids = |c: &deepcuts_scraper::folder::FolderCatalogue| {
        c.rows
            .iter()
            .map(|r| r.track_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&catalogue));
    std::fs::rename(&target, dir.path()).unwrap();
}

#[tokio::test]
async fn crawl_command_writes_pages_and_failures() {
    let shop = deepcuts_shopsim::start(
        ShopConfig {
            catalogue: CatalogueConfig {
                tracks: 50,
                ..CatalogueConfig::default()
            },
            releases_per_page: 6,
            faults: deepcuts_shopsim::Faults {
                malformed_pages: vec![2],
                ..Default::default()
            },
            ..ShopConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("file://{}", dir.path().display());
    let args = crawl::CrawlArgs {
        url: shop.start_url(),
        profile: "juno".into(),
        max_pages: Some(3),
        max_tracks: None,
        genres: vec![],
        rps: 0.0,
        concurrency: 2,
        user_agent: None,
        job: Some("cli".into()),
        store: store_url.clone(),
        folder_page_size: 100,
        json: true,
    };
    crawl::run(args).await.unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let pages = store.list(&keys::catalogue_prefix("cli")).await.unwrap();
    assert_eq!(
        pages,
        (1..=3)
            .map(|n| keys::catalogue_page("cli", n))
            .collect::<Vec<_>>()
    );
    let truth = shop.truth();
    let expected = truth
        .tracks
        .iter()
        .filter(|t| t.page != 2 && t.page <= 3)
        .count();
    let mut found = 0;
    for key in &pages {
        for batch in parquet_io::read_batches(store.as_ref(), key).await.unwrap() {
            found += from_batch(&batch).unwrap().len();
        }
    }
    assert_eq!(found, expected);
    let failures = store.list("jobs/cli/failures/crawl/").await.unwrap();
    assert_eq!(failures.len(), 6, "{failures:?}");
    assert!(store.exists(&keys::crawl_spec("cli")).await.unwrap());

    // The same command on a folder.
    let library = library();
    let args = crawl::CrawlArgs {
        url: library.path().display().to_string(),
        profile: "juno".into(),
        max_pages: None,
        max_tracks: None,
        genres: vec![],
        rps: 0.0,
        concurrency: 1,
        user_agent: None,
        job: Some("folder".into()),
        store: store_url,
        folder_page_size: 3,
        json: false,
    };
    crawl::run(args).await.unwrap();
    assert_eq!(
        store
            .list(&keys::catalogue_prefix("folder"))
            .await
            .unwrap()
            .len(),
        2
    );
}
