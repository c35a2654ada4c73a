//! Real-world encodings decode correctly: MP3 with ID3v2 tags, VBR with a
//! Xing header, CBR at 22.05/44.1/48 kHz, mono and stereo; FLAC, Ogg Vorbis,
//! WAV and AAC in M4A. Each decode is checked sample by sample against
//! ffmpeg's decode of the same file (the `ffmpeg` CLI is required).

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use deepcuts_transcoder::{decode_mono, decode_mono_segmented, DecodeLimits};

/// ffmpeg's decode of `path`, folded to mono as the channel mean.
fn ffmpeg_mono(path: &Path) -> (Vec<f32>, u32) {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args(["stream=sample_rate,channels", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe is required (scripts/setup.sh installs ffmpeg)");
    let text = String::from_utf8_lossy(&probe.stdout);
    let mut fields = text.trim().split(',');
    let rate: u32 = fields.next().unwrap().parse().unwrap();
    let channels: usize = fields.next().unwrap().parse().unwrap();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "f32le", "-"])
        .output()
        .expect("ffmpeg is required");
    assert!(out.status.success());
    let interleaved: Vec<f32> = out
        .stdout
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mono = interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() / channels as f32)
        .collect();
    (mono, rate)
}

/// Signal-to-difference ratio in dB over the common length.
fn snr_db(ours: &[f32], reference: &[f32]) -> f64 {
    let n = ours.len().min(reference.len());
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for i in 0..n {
        signal += (reference[i] as f64).powi(2);
        noise += (ours[i] as f64 - reference[i] as f64).powi(2);
    }
    10.0 * (signal / noise.max(1e-20)).log10()
}

fn encode(dir: &Path, name: &str, wav: &[u8], args: &[&str]) -> std::path::PathBuf {
    let wav_path = dir.join(format!("{name}.src.wav"));
    std::fs::write(&wav_path, wav).unwrap();
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&wav_path)
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg is required");
    assert!(status.success(), "ffmpeg failed to make {name}");
    out
}

/// `max_lag`: AAC in MP4 starts with encoder priming that ffmpeg drops via
/// the edit list and symphonia keeps, so its decode may lead by that much.
fn check(path: &Path, channels: usize, rate: u32, seconds: f64, min_snr_db: f64, max_lag: usize) {
    let data = std::fs::read(path).unwrap();
    let ext = path.extension().and_then(|e| e.to_str());
    let decoded = decode_mono(Bytes::from(data), ext, &DecodeLimits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(decoded.sample_rate, rate, "{}", path.display());
    assert_eq!(decoded.source_channels, channels, "{}", path.display());
    assert_eq!(decoded.bad_packets, 0, "{}", path.display());
    assert!(
        (decoded.duration_s() - seconds).abs() < 0.1 + max_lag as f64 / rate as f64,
        "{}: {} s decoded, {seconds} s expected",
        path.display(),
        decoded.duration_s()
    );
    let (reference, ref_rate) = ffmpeg_mono(path);
    assert_eq!(ref_rate, rate);
    let (lag, snr) = (0..=max_lag)
        .map(|lag| {
            (
                lag,
                snr_db(
                    &decoded.samples[lag.min(decoded.samples.len())..],
                    &reference,
                ),
            )
        })
        .fold((0, f64::MIN), |best, x| if x.1 > best.1 { x } else { best });
    eprintln!(
        "{}: {} samples (ffmpeg {}), {snr:.1} dB against ffmpeg at lag {lag}",
        path.file_name().unwrap().to_string_lossy(),
        decoded.samples.len(),
        reference.len()
    );
    assert!(
        snr > min_snr_db,
        "{}: only {snr:.1} dB agreement with ffmpeg's decode",
        path.display()
    );
}

#[test]
fn mp3_variants_match_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secs = 40.0; // longer than one parallel decode segment
    for (name, rate, channels, lame_args) in [
        (
            "cbr320_44k_stereo_id3.mp3",
            44_100,
            2,
            vec![
                "-b",
                "320",
                "--add-id3v2",
                "--tt",
                "Tell Me",
                "--ta",
                "Clear View",
            ],
        ),
        ("vbr_xing_44k_stereo.mp3", 44_100, 2, vec!["-V", "2"]),
        ("cbr128_48k_stereo.mp3", 48_000, 2, vec!["-b", "128"]),
        ("cbr64_22k_mono.mp3", 22_050, 1, vec!["-b", "64", "-m", "m"]),
        ("vbr_low_22k_stereo.mp3", 22_050, 2, vec!["-V", "9"]),
    ] {
        let pcm = common::synth_music(rate, secs, channels);
        let wav = common::wav_bytes(rate, channels as u16, &pcm);
        let stem = name.trim_end_matches(".mp3");
        let mp3 = common::lame(d, stem, &wav, &lame_args);
        let path = d.join(name);
        std::fs::write(&path, mp3).unwrap();
        // Decoders differ in float rounding only, and the parallel segments of
        // the decode must join without a seam: expect near-identical output.
        check(&path, channels, rate, secs, 100.0, 0);
    }
}

/// The parallel decode may split a file anywhere (the split follows the core
/// count): every split must give exactly the samples of one sequential run.
#[test]
fn parallel_decode_is_identical_for_every_split() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secs = 20.0;
    let mut files = Vec::new();
    for (stem, rate, channels, lame_args) in [
        ("cbr320", 44_100, 2, vec!["-b", "320"]),
        ("vbr_low_22k", 22_050, 2, vec!["-V", "9"]),
        ("cbr32_mono", 22_050, 1, vec!["-b", "32", "-m", "m"]),
        ("cbr128_48k", 48_000, 2, vec!["-b", "128"]),
    ] {
        let wav = common::wav_bytes(
            rate,
            channels as u16,
            &common::synth_music(rate, secs, channels),
        );
        files.push((
            format!("{stem}.mp3"),
            common::lame(d, stem, &wav, &lame_args),
        ));
    }
    let wav = common::wav_bytes(44_100, 2, &common::synth_music(44_100, secs, 2));
    let flac = encode(d, "split.flac", &wav, &["-c:a", "flac"]);
    files.push(("split.flac".to_string(), std::fs::read(flac).unwrap()));

    let limits = DecodeLimits::default();
    for (name, data) in files {
        let ext = name.rsplit('.').next();
        let decode = |segment: Option<usize>| {
            decode_mono_segmented(Bytes::from(data.clone()), ext, &limits, segment)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let sequential = decode(Some(usize::MAX));
        assert!(
            sequential.packets > 150,
            "{name}: {} packets",
            sequential.packets
        );
        for segment in [None, Some(1), Some(7), Some(100), Some(333)] {
            let split = decode(segment);
            assert_eq!(
                split.bad_packets, sequential.bad_packets,
                "{name} {segment:?}"
            );
            assert_eq!(
                split.samples.len(),
                sequential.samples.len(),
                "{name} {segment:?}"
            );
            let first_difference = split
                .samples
                .iter()
                .zip(&sequential.samples)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(
                first_difference, None,
                "{name}: split {segment:?} changes the samples"
            );
        }
    }
}

#[test]
fn other_containers_match_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secs = 30.0;
    let pcm = common::synth_music(44_100, secs, 2);
    let wav = common::wav_bytes(44_100, 2, &pcm);
    let wav_path = d.join("plain.wav");
    std::fs::write(&wav_path, &wav).unwrap();
    check(&wav_path, 2, 44_100, secs, 100.0, 0);
    let flac = encode(d, "lossless.flac", &wav, &["-c:a", "flac"]);
    check(&flac, 2, 44_100, secs, 100.0, 0);
    let ogg = encode(d, "vorbis.ogg", &wav, &["-c:a", "libvorbis", "-q:a", "5"]);
    check(&ogg, 2, 44_100, secs, 100.0, 0);
    let m4a = encode(d, "aac.m4a", &wav, &["-c:a", "aac", "-b:a", "192k"]);
    check(&m4a, 2, 44_100, secs, 100.0, 2048);
}
