//! Fixture generation shared by the integration tests. Fixtures are made at
//! test time (WAV written here, MP3 through the `lame` CLI) rather than
//! committed as binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// A music-like test signal: a melody of harmonic tones with a vibrato, a
/// kick-like thump every half second, some noise, and a stretch of silence.
/// Deterministic (a tiny LCG for the noise). Interleaved i16.
pub fn synth_music(sample_rate: u32, seconds: f64, channels: usize) -> Vec<i16> {
    let n = (sample_rate as f64 * seconds) as usize;
    let mut state: u32 = 0x1234_5678;
    let mut out = Vec::with_capacity(n * channels);
    let notes = [220.0, 277.18, 329.63, 440.0, 392.0, 246.94, 311.13, 523.25];
    for i in 0..n {
        let t = i as f64 / sample_rate as f64;
        let note = notes[((t * 2.0) as usize) % notes.len()];
        let f = note * (1.0 + 0.004 * (2.0 * std::f64::consts::PI * 5.0 * t).sin());
        let mut x = 0.0;
        for h in 1..=6 {
            x += (2.0 * std::f64::consts::PI * f * h as f64 * t).sin() / h as f64;
        }
        x *= 0.25;
        let beat = t % 0.5;
        x += 0.6 * (-beat * 30.0).exp() * (2.0 * std::f64::consts::PI * 55.0 * beat).sin();
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (state >> 8) as f64 / (1u32 << 24) as f64 - 0.5;
        x += 0.05 * noise;
        // Two seconds of near-silence in the middle exercise the dB floor.
        if (6.0..8.0).contains(&t) {
            x *= 0.0005;
        }
        for c in 0..channels {
            let pan = if c == 0 { 1.0 } else { 0.8 };
            out.push((x * pan * 12_000.0).clamp(-32_767.0, 32_767.0) as i16);
        }
    }
    out
}

/// A canonical 16-bit PCM WAV file.
pub fn wav_bytes(sample_rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&sample_rate.to_le_bytes());
    b.extend_from_slice(&(sample_rate * channels as u32 * 2).to_le_bytes());
    b.extend_from_slice(&(channels * 2).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

/// Encodes `wav` to MP3 with the `lame` CLI and returns the MP3's bytes.
/// Panics (fails the test) when lame is missing: the setup installs it.
pub fn lame(dir: &Path, name: &str, wav: &[u8], args: &[&str]) -> Vec<u8> {
    let wav_path = dir.join(format!("{name}.wav"));
    let mp3_path = dir.join(format!("{name}.mp3"));
    std::fs::write(&wav_path, wav).expect("write wav");
    let status = Command::new("lame")
        .arg("--quiet")
        .args(args)
        .arg(&wav_path)
        .arg(&mp3_path)
        .status()
        .expect("the `lame` CLI is required for MP3 fixtures (scripts/setup.sh installs it)");
    assert!(status.success(), "lame failed on {name}");
    std::fs::read(&mp3_path).expect("read mp3")
}

/// A stereo 44.1 kHz MP3 of `seconds` of [`synth_music`], with lame's
/// default ID3-free output plus whatever `args` add (bit rate, VBR, tags).
pub fn music_mp3(dir: &Path, name: &str, seconds: f64, args: &[&str]) -> Vec<u8> {
    let pcm = synth_music(44_100, seconds, 2);
    lame(dir, name, &wav_bytes(44_100, 2, &pcm), args)
}
