//! Fuzzes the decode path: any bytes, with any extension hint, must give
//! audio or a typed error, also with the parallel decode forced into small
//! segments. A panic that escapes `decode_mono`'s `catch_unwind` (or an abort,
//! overflow or hang) is a finding.
#![no_main]

use bytes::Bytes;
use deepcuts_transcoder::{decode_mono_segmented, DecodeLimits, Frontend, FrontendConfig};
use libfuzzer_sys::fuzz_target;

const HINTS: [Option<&str>; 6] = [
    None,
    Some("mp3"),
    Some("wav"),
    Some("flac"),
    Some("ogg"),
    Some("m4a"),
];
/// Packets per parallel decode segment. Inputs under `max_len` rarely reach the
/// automatic split, so small forced splits put the preroll and join on the path too.
const SPLITS: [Option<usize>; 4] = [None, Some(4), Some(16), Some(64)];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let limits = DecodeLimits {
        // Keep each run short: hostile headers can claim hours of audio.
        max_duration_s: 30.0,
        ..DecodeLimits::default()
    };
    let hint = HINTS[selector as usize % HINTS.len()];
    let split = SPLITS[(selector as usize / HINTS.len()) % SPLITS.len()];
    if let Ok(decoded) = decode_mono_segmented(Bytes::copy_from_slice(body), hint, &limits, split) {
        // Whatever decodes must also survive the front-end.
        let frontend = Frontend::new(FrontendConfig::default()).expect("default config is valid");
        let spectrogram = frontend.spectrogram(&decoded.samples);
        let _ = frontend.windows(&spectrogram);
    }
});
