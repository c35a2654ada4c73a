//! Container/codec decoding with symphonia, folded to mono, then resampled.
//!
//! Decoding is defensive: a packet that fails to decode is skipped and
//! counted, and the whole decode runs under `catch_unwind` so that a panic in
//! a codec on hostile input becomes [`TranscodeError::DecoderPanic`].

use std::io::Cursor;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rayon::prelude::*;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use serde::{Deserialize, Serialize};
use symphonia::core::audio::{Audio, GenericAudioBufferRef};
use symphonia::core::codecs::audio::well_known::{
    CODEC_ID_FLAC, CODEC_ID_MP1, CODEC_ID_MP2, CODEC_ID_MP3,
};
use symphonia::core::codecs::audio::{AudioCodecId, AudioCodecParameters, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;

use crate::error::TranscodeError;

/// Limits that keep one hostile or odd file from costing unbounded time or memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Decoding stops with [`TranscodeError::DurationCap`] past this many seconds.
    pub max_duration_s: f64,
    /// Inputs larger than this are refused before decoding.
    pub max_input_bytes: u64,
    /// A track fails when more than this fraction of its packets are bad...
    pub max_bad_packet_fraction: f64,
    /// ...and there are more than this many bad packets (a few glitches in a
    /// short file are tolerated).
    pub bad_packet_allowance: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_duration_s: 900.0,
            max_input_bytes: 64 * 1024 * 1024,
            max_bad_packet_fraction: 0.2,
            bad_packet_allowance: 8,
        }
    }
}

/// Mono audio at the source's own sample rate.
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub source_channels: usize,
    pub codec: String,
    pub packets: u64,
    pub bad_packets: u64,
}

impl DecodedAudio {
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// The container reader gives up after this many errors in a row: past that
/// the rest of the stream is garbage and reading on only burns time.
const MAX_CONSECUTIVE_READ_ERRORS: u32 = 64;

/// Decodes a whole in-memory file to mono f32 at its own sample rate.
///
/// `extension` (e.g. `"mp3"`) is only a hint; the content is probed.
pub fn decode_mono(
    data: Bytes,
    extension: Option<&str>,
    limits: &DecodeLimits,
) -> Result<DecodedAudio, TranscodeError> {
    if data.is_empty() {
        return Err(TranscodeError::Empty);
    }
    if data.len() as u64 > limits.max_input_bytes {
        return Err(TranscodeError::TooLarge {
            url: "<input>".to_string(),
            cap_bytes: limits.max_input_bytes,
        });
    }
    match catch_unwind(AssertUnwindSafe(|| decode_inner(data, extension, limits))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(TranscodeError::DecoderPanic(message))
        }
    }
}

fn probe_error(err: SymError) -> TranscodeError {
    match err {
        SymError::Unsupported(what) => TranscodeError::UnsupportedFormat(what.to_string()),
        other => TranscodeError::UnsupportedFormat(other.to_string()),
    }
}

fn decode_inner(
    data: Bytes,
    extension: Option<&str>,
    limits: &DecodeLimits,
) -> Result<DecodedAudio, TranscodeError> {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(data)), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(probe_error)?;

    let track = format
        .default_track(TrackType::Audio)
        .or_else(|| {
            format
                .tracks()
                .iter()
                .find(|t| t.codec_params.as_ref().and_then(|p| p.audio()).is_some())
        })
        .ok_or(TranscodeError::NoAudioTrack)?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(TranscodeError::NoAudioTrack)?
        .clone();
    let codec_name = symphonia::default::get_codecs()
        .get_audio_decoder(params.codec)
        .map(|d| d.codec.info.short_name.to_string())
        .unwrap_or_else(|| format!("{:?}", params.codec));
    // Fail fast on an unknown codec before demuxing the whole file.
    symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(probe_error)?;
    let time_base = track.time_base;

    // Demux first (cheap: headers only), so the packets can be decoded in
    // parallel segments.
    let mut packets: Vec<Packet> = Vec::new();
    let mut read_errors = 0u64;
    let mut consecutive_read_errors = 0u32;
    let mut estimated_s = 0.0f64;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymError::IoError(_)) => break,
            Err(SymError::DecodeError(_)) | Err(SymError::LimitError(_)) => {
                read_errors += 1;
                consecutive_read_errors += 1;
                if consecutive_read_errors > MAX_CONSECUTIVE_READ_ERRORS {
                    break;
                }
                continue;
            }
            // Reset (track list changed), seek or unsupported mid-stream: keep what we have.
            Err(_) => break,
        };
        consecutive_read_errors = 0;
        if packet.track_id != track_id {
            continue;
        }
        if let Some(tb) = time_base {
            estimated_s += packet.dur.get() as f64 * tb.numer.get() as f64 / tb.denom.get() as f64;
            // Packet durations are the container's claim; allow slack before refusing.
            if estimated_s > limits.max_duration_s * 1.05 + 1.0 {
                return Err(TranscodeError::DurationCap {
                    cap_s: limits.max_duration_s,
                });
            }
        }
        packets.push(packet);
    }

    let max_frames = params
        .sample_rate
        .map(|rate| (limits.max_duration_s * rate as f64).ceil() as usize)
        .unwrap_or(usize::MAX);
    let frames_so_far = AtomicUsize::new(0);
    let segment_len = if splits_cleanly(params.codec) {
        SEGMENT_PACKETS
    } else {
        packets.len().max(1)
    };
    let starts: Vec<usize> = (0..packets.len()).step_by(segment_len).collect();
    let segments: Vec<Result<Segment, TranscodeError>> = starts
        .par_iter()
        .map(|&start| {
            let end = (start + segment_len).min(packets.len());
            decode_segment(
                &params,
                &packets,
                start..end,
                &frames_so_far,
                max_frames,
                limits,
            )
        })
        .collect();

    let mut samples: Vec<f32> = Vec::new();
    let mut sample_rate: Option<u32> = None;
    let mut source_channels = 0usize;
    let mut bad_packets = read_errors;
    for segment in segments {
        let segment = segment?;
        bad_packets += segment.bad_packets;
        source_channels = source_channels.max(segment.channels);
        for (rate, chunk) in segment.chunks {
            let expected = *sample_rate.get_or_insert(rate);
            if rate != expected {
                // A stretch at another rate is corruption (or a splice); drop it.
                bad_packets += 1;
                continue;
            }
            if samples.is_empty() {
                samples = chunk;
            } else {
                samples.extend_from_slice(&chunk);
            }
        }
    }
    if samples.len() > max_frames {
        return Err(TranscodeError::DurationCap {
            cap_s: limits.max_duration_s,
        });
    }
    let packets = packets.len() as u64;

    let Some(sample_rate) = sample_rate.filter(|_| !samples.is_empty()) else {
        return Err(TranscodeError::NoAudio { bad_packets });
    };
    let total = packets.max(bad_packets);
    if bad_packets > limits.bad_packet_allowance
        && bad_packets as f64 > limits.max_bad_packet_fraction * total as f64
    {
        return Err(TranscodeError::TooManyBadPackets {
            bad: bad_packets,
            total,
        });
    }
    Ok(DecodedAudio {
        samples,
        sample_rate,
        source_channels,
        codec: codec_name,
        packets,
        bad_packets,
    })
}

/// Packets per independently decoded segment (about 25 s of MP3). Fixed, so
/// the output never depends on the number of cores.
const SEGMENT_PACKETS: usize = 1024;

/// Packets decoded and thrown away before a segment, to rebuild the decoder
/// state a sequential decode would have: MP3's bit reservoir reaches up to
/// 511 bytes back (several frames at low bit rates) and the MDCT overlap and
/// synthesis filter one frame more. After these the output is the same.
const PREROLL_PACKETS: usize = 10;

/// Codecs whose decoder state is rebuilt exactly by [`PREROLL_PACKETS`]
/// (checked against a sequential decode in `tests/formats.rs`). Others, AAC
/// among them (its decoder state does not converge that fast), decode in
/// one sequential run.
fn splits_cleanly(codec: AudioCodecId) -> bool {
    matches!(
        codec,
        CODEC_ID_MP1 | CODEC_ID_MP2 | CODEC_ID_MP3 | CODEC_ID_FLAC
    )
}

/// The decoded audio of one run of packets.
struct Segment {
    /// Runs of mono samples with their sample rate (a rate change starts a new run).
    chunks: Vec<(u32, Vec<f32>)>,
    channels: usize,
    bad_packets: u64,
}

fn decode_segment(
    params: &AudioCodecParameters,
    packets: &[Packet],
    range: Range<usize>,
    frames_so_far: &AtomicUsize,
    max_frames: usize,
    limits: &DecodeLimits,
) -> Result<Segment, TranscodeError> {
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(probe_error)?;
    let mut segment = Segment {
        chunks: Vec::new(),
        channels: 0,
        bad_packets: 0,
    };
    let mut scratch: Vec<Vec<f32>> = Vec::new();
    let begin = range.start.saturating_sub(PREROLL_PACKETS);
    for (index, packet) in packets.iter().enumerate().take(range.end).skip(begin) {
        let warming_up = index < range.start;
        match decoder.decode(packet) {
            Ok(buffer) => {
                if warming_up || buffer.frames() == 0 {
                    continue;
                }
                let rate = buffer.spec().rate();
                if rate == 0 {
                    segment.bad_packets += 1;
                    continue;
                }
                if segment.chunks.last().map(|(r, _)| *r) != Some(rate) {
                    segment
                        .chunks
                        .push((rate, Vec::with_capacity(1152 * (range.end - index))));
                }
                segment.channels = segment.channels.max(buffer.num_planes());
                if let Some((_, out)) = segment.chunks.last_mut() {
                    fold_to_mono(&buffer, out, &mut scratch);
                }
                let total =
                    frames_so_far.fetch_add(buffer.frames(), Ordering::Relaxed) + buffer.frames();
                if total > max_frames {
                    return Err(TranscodeError::DurationCap {
                        cap_s: limits.max_duration_s,
                    });
                }
            }
            Err(SymError::ResetRequired) => decoder.reset(),
            Err(_) if warming_up => {}
            Err(_) => segment.bad_packets += 1,
        }
    }
    Ok(segment)
}

/// Appends the channel mean of `buffer` to `out` (librosa's `to_mono`).
fn fold_to_mono(
    buffer: &GenericAudioBufferRef<'_>,
    out: &mut Vec<f32>,
    scratch: &mut Vec<Vec<f32>>,
) {
    let frames = buffer.frames();
    if frames == 0 {
        return;
    }
    let start = out.len();
    match buffer {
        GenericAudioBufferRef::F32(buf) => {
            let planes = buf.num_planes();
            if planes == 1 {
                if let Some(plane) = buf.plane(0) {
                    out.extend_from_slice(plane);
                }
                return;
            }
            out.resize(start + frames, 0.0);
            let dst = &mut out[start..];
            for idx in 0..planes {
                if let Some(plane) = buf.plane(idx) {
                    dst.iter_mut().zip(plane).for_each(|(d, s)| *d += *s);
                }
            }
            let scale = 1.0 / planes as f32;
            dst.iter_mut().for_each(|d| *d *= scale);
        }
        other => {
            other.copy_to_vecs_planar::<f32>(scratch);
            let planes = scratch.len().min(other.num_planes()).max(1);
            out.resize(start + frames, 0.0);
            let dst = &mut out[start..];
            for plane in scratch.iter().take(planes) {
                dst.iter_mut().zip(plane).for_each(|(d, s)| *d += *s);
            }
            let scale = 1.0 / planes as f32;
            dst.iter_mut().for_each(|d| *d *= scale);
        }
    }
}

/// Resamples mono audio from `from` Hz to `to` Hz with rubato's synchronous
/// FFT resampler (fixed ratio, band-limited, the startup delay trimmed).
pub fn resample_mono(samples: Vec<f32>, from: u32, to: u32) -> Result<Vec<f32>, TranscodeError> {
    if from == to || samples.is_empty() {
        return Ok(samples);
    }
    let resample_err = |e: &dyn std::fmt::Display| TranscodeError::Resample(e.to_string());
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| resample_err(&e))?;
    let input =
        InterleavedSlice::new(&samples[..], 1, samples.len()).map_err(|e| resample_err(&e))?;
    let output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| resample_err(&e))?;
    Ok(output.take_data())
}
