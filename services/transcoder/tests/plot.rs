//! The spectrogram PNG renders at the requested size for both presets.
//! Set `DEEPCUTS_KEEP_PLOTS=<dir>` to keep the images for a look.

mod common;

use bytes::Bytes;
use deepcuts_transcoder::plot::render_png;
use deepcuts_transcoder::{process_track, DecodeLimits, Frontend, FrontendConfig};

#[test]
fn renders_png_for_both_presets() {
    let dir = tempfile::tempdir().unwrap();
    let mp3 = common::music_mp3(dir.path(), "plot", 16.0, &["-b", "192"]);
    for preset in ["default", "seed"] {
        let frontend = Frontend::new(FrontendConfig::preset(preset).unwrap()).unwrap();
        let track = process_track(
            Bytes::from(mp3.clone()),
            Some("mp3"),
            &frontend,
            &DecodeLimits::default(),
        )
        .unwrap();
        let path = dir.path().join(format!("{preset}.png"));
        render_png(
            &track.spectrogram,
            frontend.config(),
            &format!("plot.mp3 · {preset}"),
            &path,
            (1000, 400),
        )
        .unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR width and height.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 1000);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 400);
        if let Some(keep) = std::env::var_os("DEEPCUTS_KEEP_PLOTS") {
            std::fs::copy(
                &path,
                std::path::Path::new(&keep).join(format!("{preset}.png")),
            )
            .unwrap();
        }
    }
}
