//! The bad-input corpus: every input gets a clear, typed outcome and nothing
//! panics. Fixtures are generated here; HTTP cases go through the real
//! fetcher against a small axum server on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use deepcuts_transcoder::{
    process_track, DecodeLimits, FetchConfig, Fetcher, Frontend, FrontendConfig, TrackOutput,
    TranscodeError,
};
use rand::{Rng, SeedableRng};

fn run(data: Vec<u8>, ext: Option<&str>) -> Result<TrackOutput, TranscodeError> {
    let frontend = Frontend::new(FrontendConfig::default()).unwrap();
    process_track(Bytes::from(data), ext, &frontend, &DecodeLimits::default())
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random()).collect()
}

/// A minimal ID3v2.3 tag with one title frame, and nothing after it.
fn id3_tag_only() -> Vec<u8> {
    let title = b"\x00deepcuts test";
    let mut frame = Vec::new();
    frame.extend_from_slice(b"TIT2");
    frame.extend_from_slice(&(title.len() as u32).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(title);
    let size = frame.len() as u32;
    // Tag size is a 28-bit "synchsafe" integer.
    let synchsafe = [
        ((size >> 21) & 0x7f) as u8,
        ((size >> 14) & 0x7f) as u8,
        ((size >> 7) & 0x7f) as u8,
        (size & 0x7f) as u8,
    ];
    let mut tag = b"ID3\x03\x00\x00".to_vec();
    tag.extend_from_slice(&synchsafe);
    tag.extend_from_slice(&frame);
    tag
}

#[test]
fn zero_bytes_is_empty() {
    let err = run(Vec::new(), Some("mp3")).unwrap_err();
    assert!(matches!(err, TranscodeError::Empty), "{err:?}");
}

#[test]
fn random_bytes_fail_typed() {
    for seed in 0..8 {
        for len in [17, 4_096, 200_000] {
            let err = run(random_bytes(len, seed), Some("mp3")).unwrap_err();
            assert!(
                matches!(
                    err,
                    TranscodeError::UnsupportedFormat(_)
                        | TranscodeError::NoAudio { .. }
                        | TranscodeError::TooManyBadPackets { .. }
                        | TranscodeError::TooShort { .. }
                ),
                "seed {seed} len {len}: {err:?}"
            );
        }
    }
}

#[test]
fn id3_tag_only_has_no_audio() {
    let err = run(id3_tag_only(), Some("mp3")).unwrap_err();
    assert!(
        matches!(
            err,
            TranscodeError::UnsupportedFormat(_) | TranscodeError::NoAudio { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn truncated_mid_frame_keeps_what_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let mp3 = common::music_mp3(dir.path(), "trunc", 30.0, &["-b", "320"]);
    let full = run(mp3.clone(), Some("mp3")).unwrap();
    // Cut in the middle of a frame (320 kbps frames are ~1044 bytes).
    let cut = mp3.len() / 2 + 517;
    let half = run(mp3[..cut].to_vec(), Some("mp3")).unwrap();
    assert!(
        (half.stats.duration_s - full.stats.duration_s / 2.0).abs() < 0.5,
        "truncated to half the bytes should decode about half the audio: {} of {}",
        half.stats.duration_s,
        full.stats.duration_s
    );
    assert!(half.stats.bad_packets <= 1);
    assert_eq!(half.windows.len(), 2);
}

#[test]
fn garbage_spliced_into_the_middle_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mp3 = common::music_mp3(dir.path(), "splice", 30.0, &["-b", "320"]);
    let mut spliced = mp3[..mp3.len() / 2].to_vec();
    spliced.extend(random_bytes(16_384, 7));
    spliced.extend_from_slice(&mp3[mp3.len() / 2..]);
    let out = run(spliced, Some("mp3")).unwrap();
    let full = run(mp3, Some("mp3")).unwrap();
    // The garbage may decode as a few junk frames, but the music around it survives.
    assert!(
        (out.stats.duration_s - full.stats.duration_s).abs() < 1.0,
        "{} vs {}",
        out.stats.duration_s,
        full.stats.duration_s
    );
    assert_eq!(out.windows.len(), full.windows.len());
    // The windows away from the splice are unchanged.
    assert_eq!(out.windows[0].data, full.windows[0].data);
}

#[test]
fn wav_header_claiming_more_data_decodes_what_is_there() {
    let pcm = common::synth_music(22_050, 12.0, 1);
    let mut wav = common::wav_bytes(22_050, 1, &pcm);
    // data chunk size (bytes 40..44) and RIFF size claim ten times the real data.
    let claimed = (pcm.len() * 2 * 10) as u32;
    wav[40..44].copy_from_slice(&claimed.to_le_bytes());
    wav[4..8].copy_from_slice(&(claimed + 36).to_le_bytes());
    let out = run(wav, Some("wav")).unwrap();
    assert!(
        (out.stats.duration_s - 12.0).abs() < 0.05,
        "{}",
        out.stats.duration_s
    );
    assert_eq!(out.windows.len(), 2);
}

#[test]
fn wav_header_claiming_less_data_is_typed() {
    let pcm = common::synth_music(22_050, 12.0, 1);
    let mut wav = common::wav_bytes(22_050, 1, &pcm);
    // Claims one second: a reader may trust the header (1 s, too short for a
    // window) but must not fail in any other way.
    let claimed = 22_050u32 * 2;
    wav[40..44].copy_from_slice(&claimed.to_le_bytes());
    match run(wav, Some("wav")) {
        Err(TranscodeError::TooShort { duration_s, .. }) => assert!(duration_s <= 1.01),
        Ok(out) => assert!(out.stats.duration_s <= 12.01),
        Err(other) => panic!("unexpected outcome {other:?}"),
    }
}

#[test]
fn too_short_for_one_window_is_typed() {
    let pcm = common::synth_music(22_050, 3.0, 1);
    let err = run(common::wav_bytes(22_050, 1, &pcm), Some("wav")).unwrap_err();
    assert!(matches!(err, TranscodeError::TooShort { .. }), "{err:?}");
}

#[test]
fn duration_and_size_caps() {
    let pcm = common::synth_music(8_000, 30.0, 1);
    let wav = common::wav_bytes(8_000, 1, &pcm);
    let frontend = Frontend::new(FrontendConfig::default()).unwrap();
    let limits = DecodeLimits {
        max_duration_s: 10.0,
        ..DecodeLimits::default()
    };
    let err = process_track(Bytes::from(wav.clone()), Some("wav"), &frontend, &limits).unwrap_err();
    assert!(matches!(err, TranscodeError::DurationCap { .. }), "{err:?}");
    let limits = DecodeLimits {
        max_input_bytes: 1_000,
        ..DecodeLimits::default()
    };
    let err = process_track(Bytes::from(wav), Some("wav"), &frontend, &limits).unwrap_err();
    assert!(matches!(err, TranscodeError::TooLarge { .. }), "{err:?}");
}

#[test]
fn every_prefix_and_corruption_of_an_mp3_is_handled() {
    // A denser sweep than the named cases: cut points and byte flips all over
    // a short file. Each outcome is Ok or a typed error; a panic fails the test.
    let dir = tempfile::tempdir().unwrap();
    let mp3 = common::music_mp3(
        dir.path(),
        "sweep",
        6.0,
        &["-b", "128", "--add-id3v2", "--tt", "x"],
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for step in 0..60 {
        let cut = mp3.len() * step / 60;
        let _ = run(mp3[..cut].to_vec(), Some("mp3"));
        let mut flipped = mp3.clone();
        for _ in 0..(step * 4 + 1) {
            let at = rng.random_range(0..flipped.len());
            flipped[at] = rng.random();
        }
        match run(flipped, Some("mp3")) {
            Ok(out) => assert!(!out.windows.is_empty()),
            Err(err) => assert!(!err.kind().is_empty()),
        }
    }
}

// ---- HTTP --------------------------------------------------------------------

const MB: usize = 1024 * 1024;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// 100 MB of zeros, streamed (never held in memory), with or without a length.
fn hundred_mb(with_length: bool) -> Response {
    let chunk = Bytes::from(vec![0u8; MB]);
    let stream =
        futures::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let mut builder = Response::builder().header(header::CONTENT_TYPE, "audio/mpeg");
    if with_length {
        builder = builder.header(header::CONTENT_LENGTH, 100 * MB);
    }
    builder.body(Body::from_stream(stream)).unwrap()
}

fn test_fetcher() -> Fetcher {
    Fetcher::new(FetchConfig {
        max_bytes: 10 * MB as u64,
        attempts: 3,
        backoff_initial_ms: 10,
        backoff_max_ms: 50,
        request_timeout_ms: 2_000,
        ..FetchConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn http_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let good_mp3 = Bytes::from(common::music_mp3(
        dir.path(),
        "served",
        12.0,
        &["-b", "128"],
    ));
    let flaky_calls = Arc::new(AtomicU32::new(0));
    let html = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
                <body><h1>Bad Gateway</h1></body></html>";
    let app = Router::new()
        .route(
            "/error.mp3",
            get(move || async move { ([(header::CONTENT_TYPE, "audio/mpeg")], html) }),
        )
        .route(
            "/page",
            get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<html></html>") }),
        )
        .route("/huge.mp3", get(|| async { hundred_mb(true) }))
        .route("/huge-chunked.mp3", get(|| async { hundred_mb(false) }))
        .route("/missing.mp3", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/slow.mp3",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .route("/good.mp3", {
            let mp3 = good_mp3.clone();
            get(move || async move { ([(header::CONTENT_TYPE, "audio/mpeg")], mp3) })
        })
        .route("/flaky.mp3", {
            let mp3 = good_mp3.clone();
            let calls = flaky_calls.clone();
            get(move || async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(StatusCode::SERVICE_UNAVAILABLE)
                } else {
                    Ok(([(header::CONTENT_TYPE, "audio/mpeg")], mp3))
                }
            })
        });
    let addr = serve(app).await;
    let url = |path: &str| format!("http://{addr}{path}");
    let fetcher = test_fetcher();

    // An HTML error page served as audio/mpeg.
    let err = fetcher.fetch(&url("/error.mp3")).await.unwrap_err();
    assert!(matches!(err, TranscodeError::ContentType { .. }), "{err:?}");
    assert!(err.to_string().contains("markup"), "{err}");

    // Labelled HTML.
    let err = fetcher.fetch(&url("/page")).await.unwrap_err();
    assert!(matches!(err, TranscodeError::ContentType { .. }), "{err:?}");

    // 100 MB against a 10 MB cap: refused from Content-Length, and mid-stream without it.
    for path in ["/huge.mp3", "/huge-chunked.mp3"] {
        let err = fetcher.fetch(&url(path)).await.unwrap_err();
        assert!(
            matches!(err, TranscodeError::TooLarge { cap_bytes, .. } if cap_bytes == 10 * MB as u64),
            "{path}: {err:?}"
        );
    }

    // 404 is permanent; no retries.
    let err = fetcher.fetch(&url("/missing.mp3")).await.unwrap_err();
    assert!(
        matches!(err, TranscodeError::HttpStatus { status: 404, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());

    // A timeout is transient and typed.
    let err = fetcher.fetch(&url("/slow.mp3")).await.unwrap_err();
    assert!(matches!(err, TranscodeError::Timeout { .. }), "{err:?}");

    // Two 503s, then success on the third attempt.
    let fetched = fetcher.fetch(&url("/flaky.mp3")).await.unwrap();
    assert_eq!(fetched.attempts, 3);
    assert_eq!(fetched.data, good_mp3);

    // Connection refused: retried, then a typed network error.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = fetcher
        .fetch(&format!("http://{closed}/x.mp3"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TranscodeError::Network { attempts: 3, .. }),
        "{err:?}"
    );

    // And the good file decodes end to end.
    let fetched = fetcher.fetch(&url("/good.mp3")).await.unwrap();
    let out = run(fetched.data.to_vec(), Some("mp3")).unwrap();
    assert_eq!(out.windows.len(), 2);
}

#[tokio::test]
async fn file_urls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mp3");
    std::fs::write(&path, b"abc").unwrap();
    let fetcher = test_fetcher();
    let url = url::Url::from_file_path(&path).unwrap();
    let fetched = fetcher.fetch(url.as_str()).await.unwrap();
    assert_eq!(&fetched.data[..], b"abc");
    let missing = url::Url::from_file_path(dir.path().join("nope.mp3")).unwrap();
    let err = fetcher.fetch(missing.as_str()).await.unwrap_err();
    assert!(matches!(err, TranscodeError::Io { .. }), "{err:?}");
    let big = dir.path().join("big.mp3");
    std::fs::write(&big, vec![0u8; 11 * MB]).unwrap();
    let err = fetcher
        .fetch(url::Url::from_file_path(&big).unwrap().as_str())
        .await
        .unwrap_err();
    assert!(matches!(err, TranscodeError::TooLarge { .. }), "{err:?}");
}
