//! Mel parity with librosa: on the same decoded samples, deepcuts' mel power
//! must match `librosa.feature.melspectrogram` within 0.1 dB on at least
//! 99.9% of the bins above the 80 dB floor.
//!
//! The reference runs in the repository's Python venv (`.venv` at the repo
//! root, or the venv named by `DEEPCUTS_VENV`). A missing venv or librosa is a
//! test failure, never a skip.

mod common;

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use deepcuts_transcoder::{
    decode_for_frontend, DecodeLimits, FrequencyScale, Frontend, FrontendConfig, PadMode,
};

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("DEEPCUTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join(".venv"));
    let python = venv.join("bin").join("python");
    assert!(
        python.exists(),
        "mel parity needs the project venv with librosa: {} does not exist \
         (run scripts/setup.sh, or point DEEPCUTS_VENV at a venv)",
        python.display()
    );
    python
}

struct Comparison {
    compared: usize,
    within: usize,
    worst_db: f64,
}

/// Runs the reference script on `samples` and compares it bin by bin with
/// deepcuts' power for `config`.
fn compare_with_librosa(samples: &[f32], config: &FrontendConfig) -> Comparison {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("samples.f32");
    let output = dir.path().join("mel.f32");
    let raw: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&input, raw).unwrap();
    let FrequencyScale::Mel {
        n_mels, fmin, fmax, ..
    } = config.scale
    else {
        panic!("parity is defined for the mel scale");
    };
    let script = common::repo_root().join("tests/reference/librosa_mel.py");
    let mut cmd = Command::new(venv_python());
    cmd.arg(&script)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--sr", &config.sample_rate.to_string()])
        .args(["--n-fft", &config.n_fft.to_string()])
        .args(["--hop-length", &config.hop_length.to_string()])
        .args(["--n-mels", &n_mels.to_string()])
        .args(["--fmin", &fmin.to_string()]);
    if let Some(fmax) = fmax {
        cmd.args(["--fmax", &fmax.to_string()]);
    }
    if config.pad_mode == PadMode::Reflect {
        cmd.args(["--pad-mode", "reflect"]);
    }
    let run = cmd.output().expect("running the librosa reference script");
    assert!(
        run.status.success(),
        "librosa reference failed (is librosa installed in the venv?): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let info: serde_json::Value =
        serde_json::from_slice(&run.stdout).expect("reference prints one JSON line");
    if config.pad_mode == PadMode::Constant {
        // Our default mirrors librosa's default; catch a librosa that changes it.
        assert_eq!(
            info["default_pad_mode"], "constant",
            "librosa's default pad_mode changed: {info}"
        );
    }

    let reference: Vec<f32> = std::fs::read(&output)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let frontend = Frontend::new(config.clone()).unwrap();
    let ours = frontend.power(samples);
    assert_eq!(
        ours.len(),
        reference.len(),
        "frame count differs from librosa: ours {} values, librosa {info}",
        ours.len()
    );

    let to_db = |p: f32| 10.0 * (p.max(1e-10) as f64).log10();
    let max_db = reference.iter().map(|&p| to_db(p)).fold(f64::MIN, f64::max);
    let floor = max_db - 80.0;
    let mut cmp = Comparison {
        compared: 0,
        within: 0,
        worst_db: 0.0,
    };
    for (&a, &b) in ours.iter().zip(&reference) {
        let rb = to_db(b);
        if rb < floor {
            continue;
        }
        let diff = (to_db(a) - rb).abs();
        cmp.compared += 1;
        if diff <= 0.1 {
            cmp.within += 1;
        }
        cmp.worst_db = cmp.worst_db.max(diff);
    }
    cmp
}

fn assert_parity(name: &str, cmp: &Comparison) {
    let fraction = cmp.within as f64 / cmp.compared as f64;
    eprintln!(
        "{name}: {} of {} bins within 0.1 dB ({:.5}), worst {:.4} dB",
        cmp.within, cmp.compared, fraction, cmp.worst_db
    );
    assert!(cmp.compared > 10_000, "{name}: too few bins compared");
    assert!(
        fraction >= 0.999,
        "{name}: only {fraction:.5} of bins within 0.1 dB of librosa (worst {:.3} dB)",
        cmp.worst_db
    );
}

/// Decodes a real MP3 (44.1 kHz stereo, resampled to 22.05 kHz mono) and
/// compares the default front-end with librosa on those samples.
#[test]
fn default_frontend_matches_librosa_on_decoded_mp3() {
    let dir = tempfile::tempdir().unwrap();
    let mp3 = common::music_mp3(dir.path(), "parity", 20.0, &["-b", "192"]);
    let config = FrontendConfig::default();
    let frontend = Frontend::new(config.clone()).unwrap();
    let (samples, stats) = decode_for_frontend(
        Bytes::from(mp3),
        Some("mp3"),
        &frontend,
        &DecodeLimits::default(),
    )
    .unwrap();
    assert_eq!(stats.source_sample_rate, 44_100);
    assert!(samples.len() > 19 * 22_050);
    let cmp = compare_with_librosa(&samples, &config);
    assert_parity("default", &cmp);
}

/// Other parameters exercise the filterbank edges and the reflect padding.
#[test]
fn non_default_parameters_match_librosa() {
    let pcm = common::synth_music(16_000, 8.0, 1);
    let samples: Vec<f32> = pcm.iter().map(|&s| s as f32 / 32_768.0).collect();
    let config = FrontendConfig {
        sample_rate: 16_000,
        n_fft: 1024,
        hop_length: 160,
        pad_mode: PadMode::Reflect,
        scale: FrequencyScale::Mel {
            n_mels: 64,
            fmin: 50.0,
            fmax: Some(7_600.0),
            htk: false,
            norm: deepcuts_transcoder::MelNorm::Slaney,
        },
        ..FrontendConfig::default()
    };
    let cmp = compare_with_librosa(&samples, &config);
    assert_parity("16k/reflect/64 mels", &cmp);
}
