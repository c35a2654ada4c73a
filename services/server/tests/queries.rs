//! Search, similarity and the HTTP API over a small in-memory library.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use deepcuts_server::{router, AppState, Library, NoSpectrograms, Track};
use tower::ServiceExt;

fn track(
    id: &str,
    artist: &str,
    release: &str,
    name: &str,
    catalogue_number: &str,
    preview: &str,
) -> Track {
    Track {
        track_id: id.into(),
        artist: artist.into(),
        release_title: release.into(),
        track_name: name.into(),
        catalogue_number: catalogue_number.into(),
        genre: "Techno".into(),
        preview_url: preview.into(),
        ..Track::default()
    }
}

fn library(preview_file: &str) -> Library {
    let tracks = vec![
        track("a1", "Alpha", "First", "Opening", "AL 1", preview_file),
        track(
            "a2",
            "Alpha",
            "First",
            "Opening (dub)",
            "AL 1",
            "https://shop.invalid/a2.mp3",
        ),
        track("a3", "Alpha", "Second", "Later", "AL 2", ""),
        track(
            "b1",
            "Beta",
            "Bright",
            "Opening Night",
            "BE 1",
            "https://shop.invalid/b1.mp3",
        ),
        track(
            "b2",
            "Beta",
            "Bright",
            "Closing",
            "BE 1",
            "https://shop.invalid/b2.mp3",
        ),
        track(
            "c1",
            "Gamma",
            "Cold",
            "Frost",
            "GA 1",
            "https://shop.invalid/c1.mp3",
        ),
    ];
    let n = |id: &str, s: f32| (id.to_owned(), s);
    let table = vec![
        (
            "a1".to_owned(),
            vec![
                n("a2", 0.99),
                n("a3", 0.9),
                n("b1", 0.8),
                n("b2", 0.7),
                n("c1", 0.6),
            ],
        ),
        (
            "b1".to_owned(),
            vec![n("b2", 0.95), n("a1", 0.8), n("unknown", 0.7)],
        ),
    ];
    Library::from_parts("job", "model", tracks, table)
}

#[test]
fn search_ranks_ids_then_prefixes_then_substrings() {
    let lib = library("");
    let ids = |q: &str| {
        lib.search(q, 10)
            .iter()
            .map(|t| t.track_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("b2"), vec!["b2"]);
    assert_eq!(ids("alpha - opening"), vec!["a1", "a2"]);
    assert_eq!(ids("BETA - opening"), vec!["b1"]);
    assert_eq!(ids("opening"), vec!["a1", "a2", "b1"]);
    assert_eq!(ids("bright").len(), 2, "release titles are searched too");
    assert!(ids("nothing like this").is_empty());
    assert!(ids("  ").is_empty());
}

#[test]
fn similar_returns_the_stored_order_and_skips_unknown_ids() {
    let lib = library("");
    let ids: Vec<_> = lib
        .similar("a1", 3, false)
        .unwrap()
        .iter()
        .map(|n| n.track.track_id.clone())
        .collect();
    assert_eq!(ids, vec!["a2", "a3", "b1"]);
    let b1 = lib.similar("b1", 10, false).unwrap();
    assert_eq!(b1.len(), 2);
    assert_eq!(lib.unknown_neighbours, 1);
    assert_eq!(b1[1].rank, 2);
    assert!(lib.similar("nope", 3, false).is_none());
    assert!(lib.similar("c1", 3, false).unwrap().is_empty());
}

#[test]
fn diverse_keeps_one_track_per_release_and_artist() {
    let lib = library("");
    let ids: Vec<_> = lib
        .similar("a1", 10, true)
        .unwrap()
        .iter()
        .map(|n| n.track.track_id.clone())
        .collect();
    // a2 and a3 share a1's artist; b2 shares b1's release.
    assert_eq!(ids, vec!["b1", "c1"]);
}

async fn get(
    state: &AppState,
    uri: &str,
    range: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::get(uri);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn http_routes_answer_with_json_audio_and_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a1.wav");
    std::fs::write(&wav, b"RIFF0123WAVEfmt data").unwrap();
    let url = url::Url::from_file_path(&wav).unwrap().to_string();
    let state = AppState {
        library: Arc::new(library(&url)),
        spectrograms: Arc::new(NoSpectrograms),
    };

    let (status, headers, body) = get(&state, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(String::from_utf8(body).unwrap().contains("id=\"search\""));

    let (status, _, body) = get(&state, "/api/tracks?q=alpha%20-%20opening", None).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["tracks"][0]["track_id"], "a1");
    assert_eq!(json["tracks"][0]["preview"], "/api/tracks/a1/preview");

    let (status, _, body) = get(&state, "/api/tracks/a1/similar?k=2&diverse=false", None).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["neighbours"].as_array().unwrap().len(), 2);
    assert_eq!(json["neighbours"][0]["track_id"], "a2");
    assert_eq!(json["neighbours"][0]["rank"], 1);

    let (status, _, body) = get(&state, "/api/tracks/a1/similar?diverse=true", None).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["neighbours"][0]["track_id"], "b1");

    assert_eq!(
        get(&state, "/api/tracks/a1/similar?k=0", None).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&state, "/api/tracks/zzz/similar", None).await.0,
        StatusCode::NOT_FOUND
    );

    let (status, _, body) = get(&state, "/api/tracks/a1/spectrogram.png", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("no spectrogram renderer"));

    // file:// previews are served, whole or by range; web previews redirect.
    let (status, headers, body) = get(&state, "/api/tracks/a1/preview", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "audio/wav");
    assert_eq!(body, b"RIFF0123WAVEfmt data");
    let (status, headers, body) = get(&state, "/api/tracks/a1/preview", Some("bytes=4-7")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers["content-range"], "bytes 4-7/20");
    assert_eq!(body, b"0123");
    let (status, headers, _) = get(&state, "/api/tracks/b1/preview", None).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(headers["location"], "https://shop.invalid/b1.mp3");
    assert_eq!(
        get(&state, "/api/tracks/a3/preview", None).await.0,
        StatusCode::NOT_FOUND
    );
}
