//! Fuzzes the decode path: any bytes, with any extension hint, must give
//! audio or a typed error. A panic that escapes `decode_mono`'s
//! `catch_unwind` (or an abort, overflow or hang) is a finding.
#![no_main]

use bytes::Bytes;
use deepcuts_transcoder::{decode_mono, DecodeLimits, Frontend, FrontendConfig};
use libfuzzer_sys::fuzz_target;

const HINTS: [Option<&str>; 6] = [None, Some("mp3"), Some("wav"), Some("flac"), Some("ogg"), Some("m4a")];

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
    if let Ok(decoded) = decode_mono(Bytes::copy_from_slice(body), hint, &limits) {
        // Whatever decodes must also survive the front-end.
        let frontend = Frontend::new(FrontendConfig::default()).expect("default config is valid");
        let spectrogram = frontend.spectrogram(&decoded.samples);
        let _ = frontend.windows(&spectrogram);
    }
});
