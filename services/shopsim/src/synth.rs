//! Genre-like music synthesised from a seed, and its MP3 encoding.
//!
//! Each genre has its own tempo range, drum grid, bass line, harmony and timbre, but
//! every range is drawn per track and the ranges overlap, and a random tone tilt is
//! laid over the whole mix, so that no single static statistic (tempo, brightness,
//! loudness) names the genre: the rhythm and how it changes over time has to.

use mp3lame_encoder::{Bitrate, Builder, DualPcm, FlushNoGap, Mode, Quality};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalogue::Genre;

pub const SAMPLE_RATE: u32 = 44_100;
const SR: f32 = SAMPLE_RATE as f32;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unsupported bitrate {0} kbps")]
    Bitrate(u32),
    #[error("mp3 encoder setup failed: {0}")]
    EncoderSetup(String),
    #[error("mp3 encoding failed: {0}")]
    Encode(String),
}

/// Stereo PCM in [-1, 1].
#[derive(Debug, Clone)]
pub struct Stereo {
    pub left: Vec<f32>,
    pub right: Vec<f32>,
}

#[derive(Clone, Copy)]
enum BassKind {
    Offbeat,
    Rolling,
    Reese,
    Dembow,
    Boom,
    Picked,
    Acid,
    Blip,
    Slow,
}

#[derive(Clone, Copy)]
enum HarmonyKind {
    Pad { bright: bool },
    Stab,
    DubStab,
    Power,
    Keys,
    Skank,
    Arp,
}

struct Style {
    bpm: (f32, f32),
    swing: (f32, f32),
    kick: [f32; 16],
    snare: [f32; 16],
    hat: [f32; 16],
    open_hat: [f32; 16],
    perc: [f32; 16],
    bass: BassKind,
    harmonies: &'static [HarmonyKind],
    /// Probability per section that the kick drops out (breakdowns).
    breakdown: f32,
    /// Probability per section that the harmony layer is silent.
    sparse: f32,
}

// Timbre is drawn per track from the same ranges for every genre: genres
// differ in rhythm, bass and harmony patterns, density and structure over
// time, so a static spectral colour (per-band mean and spread) is a weak cue,
// as it is in real catalogues where a genre spans many productions.
const BASS_CUTOFF_HZ: (f32, f32) = (150.0, 2500.0);
const DISTORTION: (f32, f32) = (0.0, 0.8);
const KICK_DECAY_S: (f32, f32) = (0.1, 0.45);

const O: f32 = 0.0;
const H: f32 = 0.5;
const X: f32 = 1.0;

fn style(genre: Genre) -> Style {
    match genre {
        Genre::Breakbeat => Style {
            bpm: (122.0, 140.0),
            swing: (0.0, 0.08),
            kick: [X, O, O, O, O, O, O, H, O, O, X, O, O, O, O, O],
            snare: [O, O, O, O, X, O, O, O, O, O, O, O, X, O, O, H],
            hat: [X, O, X, O, X, O, X, O, X, O, X, O, X, O, X, O],
            open_hat: [O, O, O, O, O, O, O, O, O, O, O, O, O, O, H, O],
            perc: [O, O, O, H, O, O, O, O, O, H, O, O, O, O, O, O],
            bass: BassKind::Acid,
            harmonies: &[HarmonyKind::Stab, HarmonyKind::Arp],
            breakdown: 0.2,
            sparse: 0.3,
        },
        Genre::Dancehall => Style {
            bpm: (88.0, 108.0),
            swing: (0.0, 0.05),
            kick: [X, O, O, O, O, O, O, O, X, O, O, O, O, O, O, O],
            snare: [O, O, O, X, O, O, X, O, O, O, O, X, O, O, X, O],
            hat: [X, O, X, O, X, O, X, O, X, O, X, O, X, O, X, O],
            open_hat: [O; 16],
            perc: [O, O, H, O, O, O, H, O, O, O, H, O, O, O, H, O],
            bass: BassKind::Dembow,
            harmonies: &[HarmonyKind::Skank, HarmonyKind::Keys],
            breakdown: 0.1,
            sparse: 0.3,
        },
        Genre::Downtempo => Style {
            bpm: (78.0, 102.0),
            swing: (0.05, 0.2),
            kick: [X, O, O, O, O, O, O, O, O, H, X, O, O, O, O, O],
            snare: [O, O, O, O, O, O, O, O, X, O, O, O, O, O, O, O],
            hat: [H, O, H, O, H, O, H, O, H, O, H, O, H, O, H, H],
            open_hat: [O; 16],
            perc: [O, O, O, O, O, O, H, O, O, O, O, O, O, H, O, O],
            bass: BassKind::Slow,
            harmonies: &[HarmonyKind::Pad { bright: false }, HarmonyKind::Keys],
            breakdown: 0.35,
            sparse: 0.15,
        },
        Genre::DrumAndBass => Style {
            bpm: (160.0, 178.0),
            swing: (0.0, 0.04),
            kick: [X, O, O, O, O, O, O, O, O, O, X, O, O, O, O, O],
            snare: [O, O, O, O, X, O, O, O, O, O, O, O, X, O, O, O],
            hat: [X, H, X, H, X, H, X, H, X, H, X, H, X, H, X, H],
            open_hat: [O, O, O, O, O, O, O, H, O, O, O, O, O, O, O, O],
            perc: [O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, H],
            bass: BassKind::Reese,
            harmonies: &[HarmonyKind::Pad { bright: false }, HarmonyKind::Stab],
            breakdown: 0.2,
            sparse: 0.4,
        },
        Genre::FunkyHouse => Style {
            bpm: (118.0, 128.0),
            swing: (0.04, 0.14),
            kick: [X, O, O, O, X, O, O, O, X, O, O, O, X, O, O, O],
            snare: [O, O, O, O, X, O, O, O, O, O, O, O, X, O, O, O],
            hat: [O, O, X, O, O, O, X, O, O, O, X, O, O, O, X, O],
            open_hat: [O, O, H, O, O, O, H, O, O, O, H, O, O, O, H, O],
            perc: [O, H, O, H, O, O, O, H, O, H, O, O, O, H, O, O],
            bass: BassKind::Offbeat,
            harmonies: &[HarmonyKind::Stab, HarmonyKind::Keys],
            breakdown: 0.15,
            sparse: 0.1,
        },
        Genre::HipHop => Style {
            bpm: (84.0, 100.0),
            swing: (0.08, 0.22),
            kick: [X, O, O, O, O, O, O, X, O, O, X, O, O, O, O, O],
            snare: [O, O, O, O, X, O, O, O, O, O, O, O, X, O, O, O],
            hat: [X, O, X, O, X, O, X, O, X, O, X, O, X, O, X, O],
            open_hat: [O; 16],
            perc: [O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, H],
            bass: BassKind::Boom,
            harmonies: &[HarmonyKind::Keys, HarmonyKind::Pad { bright: false }],
            breakdown: 0.1,
            sparse: 0.25,
        },
        Genre::MinimalHouse => Style {
            bpm: (118.0, 128.0),
            swing: (0.0, 0.1),
            kick: [X, O, O, O, X, O, O, O, X, O, O, O, X, O, O, O],
            snare: [O, O, O, O, H, O, O, O, O, O, O, O, H, O, O, O],
            hat: [O, O, X, O, O, O, X, O, O, O, X, O, O, O, X, O],
            open_hat: [O; 16],
            perc: [O, O, O, H, O, O, H, O, O, H, O, O, O, O, H, O],
            bass: BassKind::Blip,
            harmonies: &[HarmonyKind::DubStab],
            breakdown: 0.15,
            sparse: 0.5,
        },
        Genre::RockIndie => Style {
            bpm: (96.0, 150.0),
            swing: (0.0, 0.04),
            kick: [X, O, O, O, O, O, H, O, X, O, O, O, O, O, O, O],
            snare: [O, O, O, O, X, O, O, O, O, O, O, O, X, O, O, O],
            hat: [X, O, X, O, X, O, X, O, X, O, X, O, X, O, X, O],
            open_hat: [O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O],
            perc: [O; 16],
            bass: BassKind::Picked,
            harmonies: &[HarmonyKind::Power],
            breakdown: 0.1,
            sparse: 0.15,
        },
        Genre::Trance => Style {
            bpm: (128.0, 142.0),
            swing: (0.0, 0.02),
            kick: [X, O, O, O, X, O, O, O, X, O, O, O, X, O, O, O],
            snare: [O, O, O, O, H, O, O, O, O, O, O, O, H, O, O, O],
            hat: [O, O, X, O, O, O, X, O, O, O, X, O, O, O, X, O],
            open_hat: [O, O, H, O, O, O, H, O, O, O, H, O, O, O, H, O],
            perc: [O; 16],
            bass: BassKind::Rolling,
            harmonies: &[HarmonyKind::Pad { bright: true }, HarmonyKind::Arp],
            breakdown: 0.3,
            sparse: 0.1,
        },
    }
}

/// A tiny fast noise source (xorshift); the track's rng seeds it.
struct Noise(u32);

impl Noise {
    fn next(&mut self) -> f32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        (x as f32 / u32::MAX as f32) * 2.0 - 1.0
    }
}

fn midi_hz(note: f32) -> f32 {
    440.0 * 2f32.powf((note - 69.0) / 12.0)
}

fn one_pole_coefficient(cutoff_hz: f32) -> f32 {
    1.0 - (-2.0 * std::f32::consts::PI * cutoff_hz.clamp(10.0, SR * 0.45) / SR).exp()
}

/// Adds `sound` into `out` starting at `at`, with gain and equal-power pan.
fn mix_in(out: &mut Stereo, sound: &[f32], at: usize, gain: f32, pan: f32) {
    let angle = (pan.clamp(-1.0, 1.0) + 1.0) * std::f32::consts::FRAC_PI_4;
    let (gl, gr) = (gain * angle.cos(), gain * angle.sin());
    let end = (at + sound.len()).min(out.left.len());
    if at >= end {
        return;
    }
    for (i, s) in sound[..end - at].iter().enumerate() {
        out.left[at + i] += s * gl;
        out.right[at + i] += s * gr;
    }
}

struct Kit {
    kick: Vec<f32>,
    snare: Vec<f32>,
    hat: Vec<f32>,
    open_hat: Vec<f32>,
    perc: Vec<f32>,
}

fn make_kit(rng: &mut ChaCha8Rng, noise: &mut Noise) -> Kit {
    let kick_decay = rng.random_range(KICK_DECAY_S.0..KICK_DECAY_S.1);
    let kick_start = rng.random_range(110.0..220.0f32);
    let kick_end = rng.random_range(42.0..62.0f32);
    let kick: Vec<f32> = {
        let n = (kick_decay * 2.5 * SR) as usize;
        let mut phase = 0.0f32;
        (0..n)
            .map(|i| {
                let t = i as f32 / SR;
                let f = kick_end + (kick_start - kick_end) * (-t / 0.03).exp();
                phase += f / SR;
                (phase * std::f32::consts::TAU).sin() * (-t / kick_decay).exp()
            })
            .collect()
    };
    let snare_tone = rng.random_range(160.0..260.0f32);
    let snare_decay = rng.random_range(0.06..0.2f32);
    let snare_noise_cutoff = one_pole_coefficient(rng.random_range(2500.0..9000.0));
    let clap = rng.random_bool(0.4);
    let snare: Vec<f32> = {
        let n = (snare_decay * 4.0 * SR) as usize;
        let mut low = 0.0f32;
        (0..n)
            .map(|i| {
                let t = i as f32 / SR;
                low += snare_noise_cutoff * (noise.next() - low);
                let env = if clap {
                    // Three quick bursts then a tail, like hands clapping.
                    let burst = (t * 100.0) as usize;
                    if burst < 3 {
                        (-(t - burst as f32 * 0.01) / 0.004).exp()
                    } else {
                        (-t / snare_decay).exp()
                    }
                } else {
                    (-t / snare_decay).exp()
                };
                (0.6 * low
                    + 0.4 * (t * snare_tone * std::f32::consts::TAU).sin() * (-t / 0.05).exp())
                    * env
            })
            .collect()
    };
    let hat_decay = rng.random_range(0.015..0.06f32);
    let hat = hi_noise(noise, hat_decay, 4.0);
    let open_hat = hi_noise(noise, rng.random_range(0.12..0.3), 3.0);
    let perc_freq = rng.random_range(500.0..1400.0f32);
    let perc: Vec<f32> = (0..(0.12 * SR) as usize)
        .map(|i| {
            let t = i as f32 / SR;
            (t * perc_freq * std::f32::consts::TAU).sin() * (-t / 0.025).exp()
        })
        .collect();
    Kit {
        kick,
        snare,
        hat,
        open_hat,
        perc,
    }
}

/// High-passed noise burst (noise minus its own low-passed copy).
fn hi_noise(noise: &mut Noise, decay: f32, length_in_decays: f32) -> Vec<f32> {
    let n = (decay * length_in_decays * SR) as usize;
    let coefficient = one_pole_coefficient(6000.0);
    let mut low = 0.0f32;
    (0..n)
        .map(|i| {
            let t = i as f32 / SR;
            let x = noise.next();
            low += coefficient * (x - low);
            (x - low) * (-t / decay).exp()
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Wave {
    Sine,
    Saw,
    Square,
    Triangle,
}

fn wave(kind: Wave, phase: f32) -> f32 {
    match kind {
        Wave::Sine => (phase * std::f32::consts::TAU).sin(),
        Wave::Saw => 2.0 * phase - 1.0,
        Wave::Square => {
            if phase < 0.5 {
                1.0
            } else {
                -1.0
            }
        }
        Wave::Triangle => 1.0 - 4.0 * (phase - 0.5).abs(),
    }
}

struct Voice {
    notes: Vec<f32>,
    wave: Wave,
    detune_cents: f32,
    cutoff: f32,
    attack: f32,
    release: f32,
    drive: f32,
}

/// Renders a note (or chord) of `length` seconds into a mono buffer.
fn render_voice(voice: &Voice, length: f32) -> Vec<f32> {
    let n = ((length + voice.release) * SR) as usize;
    let mut out = vec![0.0f32; n];
    let coefficient = one_pole_coefficient(voice.cutoff);
    let gain = 1.0 / (voice.notes.len() as f32).sqrt();
    let detunes: &[f32] = if voice.detune_cents > 0.0 {
        &[-1.0, 1.0]
    } else {
        &[0.0]
    };
    for &note in &voice.notes {
        for &d in detunes {
            let f = midi_hz(note + d * voice.detune_cents / 100.0);
            let step = f / SR;
            let mut phase = (note * 0.37 + d).fract().abs();
            let mut low = 0.0f32;
            for (i, sample) in out.iter_mut().enumerate() {
                let t = i as f32 / SR;
                let env = (t / voice.attack.max(0.001)).min(1.0)
                    * if t > length {
                        (-(t - length) / voice.release.max(0.005)).exp()
                    } else {
                        1.0
                    };
                phase += step;
                if phase >= 1.0 {
                    phase -= 1.0;
                }
                low += coefficient * (wave(voice.wave, phase) - low);
                *sample += low * env * gain / detunes.len() as f32;
            }
        }
    }
    if voice.drive > 0.0 {
        let k = 1.0 + voice.drive * 8.0;
        for s in &mut out {
            *s = (*s * k).tanh() / k.tanh();
        }
    }
    out
}

/// Chord progressions as scale-degree roots (semitones from the key).
const MINOR_PROGRESSIONS: &[[i32; 4]] = &[[0, 8, 3, 10], [0, 5, 8, 7], [0, 3, 5, 3], [0, 10, 8, 7]];
const MAJOR_PROGRESSIONS: &[[i32; 4]] = &[[0, 7, 9, 5], [0, 5, 7, 5], [0, 9, 5, 7], [0, 4, 5, 7]];

/// Synthesises `seconds` of a track in `genre` from `seed`.
pub fn synthesize(genre: Genre, seed: u64, seconds: f32) -> Stereo {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_d1ce_0000_0000 ^ genre as u64);
    let mut noise = Noise(rng.random::<u32>() | 1);
    let style = style(genre);
    let total = (seconds.max(0.1) * SR) as usize;
    let mut out = Stereo {
        left: vec![0.0; total],
        right: vec![0.0; total],
    };

    let bpm = rng.random_range(style.bpm.0..style.bpm.1);
    let step = 60.0 / bpm / 4.0;
    let swing = rng.random_range(style.swing.0..=style.swing.1);
    // Per-track mutation of the genre's grid: a few steps flip in or out.
    let mutate = |rng: &mut ChaCha8Rng, grid: &[f32; 16]| -> [f32; 16] {
        let mut g = *grid;
        for v in &mut g {
            if rng.random_bool(0.08) {
                *v = if *v > 0.0 { 0.0 } else { 0.5 };
            }
        }
        g
    };
    let kick_grid = {
        let mut g = mutate(&mut rng, &style.kick);
        g[0] = style.kick[0];
        g
    };
    let snare_grid = mutate(&mut rng, &style.snare);
    let hat_grid = mutate(&mut rng, &style.hat);
    let open_grid = mutate(&mut rng, &style.open_hat);
    let perc_grid = mutate(&mut rng, &style.perc);
    let kit = make_kit(&mut rng, &mut noise);

    let key = rng.random_range(28.0..40.0f32).round();
    let minor = rng.random_bool(0.7);
    let progression = if minor {
        MINOR_PROGRESSIONS[rng.random_range(0..MINOR_PROGRESSIONS.len())]
    } else {
        MAJOR_PROGRESSIONS[rng.random_range(0..MAJOR_PROGRESSIONS.len())]
    };
    let third = if minor { 3.0 } else { 4.0 };
    let bars_per_chord = [1usize, 2, 2, 4][rng.random_range(0..4)];
    let harmony = style.harmonies[rng.random_range(0..style.harmonies.len())];
    let bass_cutoff = rng.random_range(BASS_CUTOFF_HZ.0..BASS_CUTOFF_HZ.1);
    let drive = rng.random_range(DISTORTION.0..=DISTORTION.1);
    let levels = (
        rng.random_range(0.6..1.0f32),   // kick
        rng.random_range(0.3..0.7f32),   // snare
        rng.random_range(0.08..0.3f32),  // hats
        rng.random_range(0.3..0.7f32),   // bass
        rng.random_range(0.15..0.45f32), // harmony
    );
    let bass_wave = [Wave::Sine, Wave::Saw, Wave::Square, Wave::Triangle][rng.random_range(0..4)];
    let harmony_wave =
        [Wave::Sine, Wave::Saw, Wave::Square, Wave::Triangle][rng.random_range(0..4)];
    let harmony_cutoff = rng.random_range(600.0..6000.0f32);

    let bar = step * 16.0;
    let bars = (seconds / bar).ceil() as usize + 1;
    let section_bars = if seconds < 40.0 { 4 } else { 8 };
    // The preview starts somewhere inside the track, so the first section varies.
    let mut section_state = (true, true, true);
    for bar_index in 0..bars {
        if bar_index % section_bars == 0 {
            section_state = (
                !rng.random_bool(style.breakdown as f64),
                !rng.random_bool(0.1),
                !rng.random_bool(style.sparse as f64),
            );
        }
        let (kick_on, bass_on, harmony_on) = section_state;
        let chord_root = key + progression[(bar_index / bars_per_chord) % 4] as f32;
        let bar_start = bar_index as f32 * bar;
        for s in 0..16 {
            let swing_offset = if s % 2 == 1 { swing * step } else { 0.0 };
            let t = bar_start + s as f32 * step + swing_offset;
            let at = (t * SR) as usize;
            if at >= total {
                break;
            }
            let human = rng.random_range(0.85..1.0f32);
            let hit =
                |rng: &mut ChaCha8Rng, p: f32| p >= 1.0 || (p > 0.0 && rng.random::<f32>() < p);
            if kick_on && hit(&mut rng, kick_grid[s]) {
                mix_in(&mut out, &kit.kick, at, levels.0 * human, 0.0);
            }
            if hit(&mut rng, snare_grid[s]) {
                mix_in(&mut out, &kit.snare, at, levels.1 * human, 0.05);
            }
            if hit(&mut rng, hat_grid[s]) {
                mix_in(&mut out, &kit.hat, at, levels.2 * human, 0.3);
            }
            if hit(&mut rng, open_grid[s]) {
                mix_in(&mut out, &kit.open_hat, at, levels.2 * 0.8 * human, -0.3);
            }
            if hit(&mut rng, perc_grid[s]) {
                mix_in(&mut out, &kit.perc, at, 0.25 * human, -0.5);
            }
            if bass_on {
                if let Some((length, note)) = bass_note(style.bass, s, &mut rng, step) {
                    let voice = Voice {
                        notes: vec![chord_root + note],
                        wave: bass_wave,
                        detune_cents: if matches!(style.bass, BassKind::Reese) {
                            18.0
                        } else {
                            0.0
                        },
                        cutoff: bass_cutoff,
                        attack: 0.004,
                        release: 0.03,
                        drive: drive * 0.5,
                    };
                    mix_in(&mut out, &render_voice(&voice, length), at, levels.3, 0.0);
                }
            }
            if harmony_on {
                if let Some((length, notes, pan)) = harmony_notes(
                    harmony,
                    s,
                    bar_index,
                    &mut rng,
                    step,
                    chord_root + 12.0,
                    third,
                ) {
                    let voice = Voice {
                        notes,
                        wave: harmony_wave,
                        detune_cents: match harmony {
                            HarmonyKind::Pad { bright: true } => 14.0,
                            HarmonyKind::Pad { bright: false } => 6.0,
                            _ => 0.0,
                        },
                        cutoff: harmony_cutoff,
                        attack: match harmony {
                            HarmonyKind::Pad { .. } => 0.3,
                            _ => 0.003,
                        },
                        release: match harmony {
                            HarmonyKind::Pad { .. } => 0.4,
                            HarmonyKind::DubStab => 0.25,
                            _ => 0.05,
                        },
                        drive: if matches!(harmony, HarmonyKind::Power) {
                            drive
                        } else {
                            drive * 0.3
                        },
                    };
                    let sound = render_voice(&voice, length);
                    mix_in(&mut out, &sound, at, levels.4, pan);
                    if matches!(harmony, HarmonyKind::DubStab) {
                        // Dub delay: two quieter echoes three steps apart.
                        let echo = (3.0 * step * SR) as usize;
                        mix_in(&mut out, &sound, at + echo, levels.4 * 0.5, -pan);
                        mix_in(&mut out, &sound, at + 2 * echo, levels.4 * 0.25, pan);
                    }
                }
            }
        }
    }

    finish(&mut out, &mut rng);
    out
}

fn bass_note(kind: BassKind, s: usize, rng: &mut ChaCha8Rng, step: f32) -> Option<(f32, f32)> {
    let root_or_fifth = |rng: &mut ChaCha8Rng| if rng.random_bool(0.2) { 7.0 } else { 0.0 };
    match kind {
        BassKind::Offbeat => (s % 4 == 2).then(|| (step * 1.5, root_or_fifth(rng))),
        BassKind::Rolling => (!s.is_multiple_of(4)).then_some((step * 0.8, 0.0)),
        BassKind::Reese => (s.is_multiple_of(8)).then_some((step * 7.5, 0.0)),
        BassKind::Dembow => matches!(s, 0 | 3 | 8 | 11).then_some((step * 2.5, 0.0)),
        BassKind::Boom => matches!(s, 0 | 7 | 10).then(|| (step * 3.0, root_or_fifth(rng))),
        BassKind::Picked => (s.is_multiple_of(2)).then(|| (step * 1.8, root_or_fifth(rng))),
        BassKind::Acid => rng.random_bool(0.55).then(|| {
            (
                step * 0.9,
                [0.0, 0.0, 12.0, 7.0, 3.0][rng.random_range(0..5)],
            )
        }),
        BassKind::Blip => rng.random_bool(0.2).then_some((step * 0.5, 0.0)),
        BassKind::Slow => (s == 0).then_some((step * 15.0, 0.0)),
    }
}

fn harmony_notes(
    kind: HarmonyKind,
    s: usize,
    bar_index: usize,
    rng: &mut ChaCha8Rng,
    step: f32,
    root: f32,
    third: f32,
) -> Option<(f32, Vec<f32>, f32)> {
    let triad = vec![root, root + third, root + 7.0];
    match kind {
        HarmonyKind::Pad { .. } => (s == 0).then_some((step * 16.0, triad, 0.0)),
        HarmonyKind::Stab => (matches!(s, 2 | 6 | 10 | 14) && rng.random_bool(0.6)).then_some((
            step * 0.8,
            triad,
            0.2,
        )),
        HarmonyKind::DubStab => (s == 6 && bar_index.is_multiple_of(2)
            || s == 14 && rng.random_bool(0.3))
        .then_some((step * 0.6, triad, 0.4)),
        HarmonyKind::Power => {
            (s.is_multiple_of(2)).then_some((step * 1.9, vec![root - 12.0, root - 5.0, root], -0.2))
        }
        HarmonyKind::Keys => matches!(s, 0 | 8).then_some((step * 7.0, triad, -0.2)),
        HarmonyKind::Skank => matches!(s, 2 | 6 | 10 | 14).then_some((step * 0.6, triad, 0.3)),
        HarmonyKind::Arp => {
            let notes = [root, root + third, root + 7.0, root + 12.0];
            Some((step * 0.9, vec![notes[(s + bar_index) % 4] + 12.0], 0.3))
        }
    }
}

/// A random tone tilt over the whole mix, then normalisation with a soft limiter.
fn finish(out: &mut Stereo, rng: &mut ChaCha8Rng) {
    let tilt = rng.random_range(-0.6..0.8f32);
    let coefficient = one_pole_coefficient(rng.random_range(1500.0..5000.0));
    let gain_db = rng.random_range(-6.0..0.0f32);
    for channel in [&mut out.left, &mut out.right] {
        let mut low = 0.0f32;
        for s in channel.iter_mut() {
            low += coefficient * (*s - low);
            *s += tilt * (*s - low);
        }
    }
    let peak = out
        .left
        .iter()
        .chain(out.right.iter())
        .fold(0.0f32, |m, s| m.max(s.abs()))
        .max(1e-6);
    let gain = 10f32.powf(gain_db / 20.0) * 1.2 / peak;
    for s in out.left.iter_mut().chain(out.right.iter_mut()) {
        *s = (*s * gain).tanh() * 0.95;
    }
}

fn bitrate(kbps: u32) -> Result<Bitrate, SynthError> {
    Ok(match kbps {
        128 => Bitrate::Kbps128,
        160 => Bitrate::Kbps160,
        192 => Bitrate::Kbps192,
        224 => Bitrate::Kbps224,
        256 => Bitrate::Kbps256,
        320 => Bitrate::Kbps320,
        other => return Err(SynthError::Bitrate(other)),
    })
}

/// Encodes stereo PCM at 44.1 kHz to a constant-bitrate MP3 with LAME.
pub fn encode_mp3(audio: &Stereo, kbps: u32) -> Result<Vec<u8>, SynthError> {
    let mut builder =
        Builder::new().ok_or_else(|| SynthError::EncoderSetup("lame_init failed".into()))?;
    let setup = |e: mp3lame_encoder::BuildError| SynthError::EncoderSetup(e.to_string());
    builder.set_num_channels(2).map_err(setup)?;
    builder.set_sample_rate(SAMPLE_RATE).map_err(setup)?;
    builder.set_brate(bitrate(kbps)?).map_err(setup)?;
    builder.set_mode(Mode::JointStereo).map_err(setup)?;
    // LAME's quality 7 is its fast setting; the previews are test input, not hi-fi.
    builder.set_quality(Quality::Ok).map_err(setup)?;
    let mut encoder = builder.build().map_err(setup)?;
    let mut mp3 = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(audio.left.len()));
    encoder
        .encode_to_vec(
            DualPcm {
                left: &audio.left[..],
                right: &audio.right[..],
            },
            &mut mp3,
        )
        .map_err(|e| SynthError::Encode(e.to_string()))?;
    mp3.reserve(7200);
    encoder
        .flush_to_vec::<FlushNoGap>(&mut mp3)
        .map_err(|e| SynthError::Encode(e.to_string()))?;
    Ok(mp3)
}

/// A whole preview: synthesis then encoding.
pub fn preview_mp3(
    genre: Genre,
    seed: u64,
    seconds: f32,
    kbps: u32,
) -> Result<Vec<u8>, SynthError> {
    encode_mp3(&synthesize(genre, seed, seconds), kbps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesis_is_deterministic_and_bounded() {
        let a = synthesize(Genre::Trance, 7, 2.0);
        let b = synthesize(Genre::Trance, 7, 2.0);
        assert_eq!(a.left, b.left);
        assert_eq!(a.left.len(), 88_200);
        assert!(a
            .left
            .iter()
            .chain(a.right.iter())
            .all(|s| s.is_finite() && s.abs() <= 1.0));
        let energy: f32 = a.left.iter().map(|s| s * s).sum::<f32>() / a.left.len() as f32;
        assert!(energy > 1e-3, "near silence: {energy}");
        let c = synthesize(Genre::Trance, 8, 2.0);
        assert_ne!(a.left, c.left);
    }

    #[test]
    fn every_genre_encodes_to_mp3_frames() {
        for (i, genre) in Genre::ALL.into_iter().enumerate() {
            let kbps = [128, 160, 192, 224, 256, 320][i % 6];
            let mp3 = preview_mp3(genre, i as u64, 1.5, kbps).unwrap();
            // MPEG-1 layer III frame sync.
            let sync = mp3
                .windows(2)
                .position(|w| w[0] == 0xFF && (w[1] & 0xE0) == 0xE0);
            assert!(sync.is_some(), "{genre:?} has no mp3 frame");
            let expected = kbps as usize * 1000 / 8 * 3 / 2;
            assert!(
                mp3.len() > expected / 2 && mp3.len() < expected * 2,
                "{genre:?}: {} bytes",
                mp3.len()
            );
        }
    }

    #[test]
    fn unsupported_bitrate_is_an_error() {
        assert!(matches!(
            preview_mp3(Genre::Trance, 1, 0.2, 100),
            Err(SynthError::Bitrate(100))
        ));
    }
}
