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
    decode_mono_segmented(data, extension, limits, None)
}

/// [`decode_mono`] with the packets per parallel segment forced (`None`
/// chooses by file length and core count). Exposed so tests can check that
/// the split never changes the output.
#[doc(hidden)]
pub fn decode_mono_segmented(
    data: Bytes,
    extension: Option<&str>,
    limits: &DecodeLimits,
    segment_packets: Option<usize>,
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
    match catch_unwind(AssertUnwindSafe(|| {
        decode_inner(data, extension, limits, segment_packets)
    })) {
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
    segment_packets: Option<usize>,
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
        segment_packets
            .unwrap_or_else(|| auto_segment_packets(packets.len(), rayon::current_num_threads()))
            .max(1)
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

    let mut sample_rate: Option<u32> = None;
    let mut source_channels = 0usize;
    let mut bad_packets = read_errors;
    let mut runs: Vec<Vec<f32>> = Vec::new();
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
            runs.push(chunk);
        }
    }
    if runs.iter().map(Vec::len).sum::<usize>() > max_frames {
        return Err(TranscodeError::DurationCap {
            cap_s: limits.max_duration_s,
        });
    }
    let samples = concat_parallel(runs);
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

/// Longest segment the automatic split makes (about 25 s of MP3).
const MAX_SEGMENT_PACKETS: usize = 1024;

/// Shortest: below this the preroll of every segment costs too much.
const MIN_SEGMENT_PACKETS: usize = 128;

/// Packets per parallel segment: a whole number of rounds over the cores,
/// so no core idles while another decodes a last odd segment. The split is
/// free to follow the core count because a segment's preroll rebuilds the
/// decoder state exactly: the output is the same for every split (checked
/// in `tests/formats.rs`).
fn auto_segment_packets(packets: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    let rounds = packets.div_ceil(threads * MAX_SEGMENT_PACKETS).max(1);
    let segments = (threads * rounds).min(packets / MIN_SEGMENT_PACKETS).max(1);
    packets.div_ceil(segments)
}

/// Packets decoded and thrown away before a segment, to rebuild the decoder
/// state a sequential decode would have: the MDCT overlap and the synthesis
/// filter reach a frame or two back...
const PREROLL_PACKETS: usize = 10;

/// ...and MP3's bit reservoir up to 511 bytes back, which at low bit rates
/// spans far more than ten frames: the preroll also covers this many bytes
/// of packet data.
const PREROLL_BYTES: usize = 2048;

/// First packet to decode (and throw away) for a segment starting at `start`.
fn preroll_start(packets: &[Packet], start: usize) -> usize {
    let mut begin = start.saturating_sub(PREROLL_PACKETS);
    let mut bytes: usize = packets[begin..start].iter().map(|p| p.data.len()).sum();
    while begin > 0 && bytes < PREROLL_BYTES {
        begin -= 1;
        bytes += packets[begin].data.len();
    }
    begin
}

/// Codecs whose decoder state is rebuilt exactly by the preroll ([`preroll_start`])
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
    let begin = preroll_start(packets, range.start);
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

/// Joins runs of samples into one buffer. The copies run in parallel: on a
/// fresh buffer they cost mostly page faults, which then land on every core.
fn concat_parallel(mut runs: Vec<Vec<f32>>) -> Vec<f32> {
    if runs.len() <= 1 {
        return runs.pop().unwrap_or_default();
    }
    let total = runs.iter().map(Vec::len).sum();
    // Zeroed allocation: fresh pages from the kernel, not written twice.
    let mut joined = vec![0.0f32; total];
    split_by_lengths(&mut joined, runs.iter().map(Vec::len))
        .into_par_iter()
        .zip(runs.par_iter())
        .for_each(|(dst, src)| dst.copy_from_slice(src));
    joined
}

/// Cuts `buffer` into consecutive disjoint slices of the given lengths (the
/// last ones shorter or empty if the lengths add up to more).
fn split_by_lengths(buffer: &mut [f32], lengths: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut slices = Vec::new();
    let mut rest = buffer;
    for len in lengths {
        let len = len.min(rest.len());
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        slices.push(head);
        rest = tail;
    }
    slices
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

/// Input frames per rubato chunk. With one sub-chunk this is also the FFT
/// block and the anti-aliasing filter length, so it sets the quality.
const RESAMPLE_CHUNK: usize = 1024;

/// Resamples mono audio from `from` Hz to `to` Hz with rubato's synchronous
/// FFT resampler (fixed ratio, band-limited, the startup delay trimmed).
///
/// Long signals are cut into parts resampled in parallel. Each part is fed
/// with [`RESAMPLE_CONTEXT_CHUNKS`] chunks of real signal on both sides (more
/// than the filter reaches) and starts on the same chunk grid a single run
/// would use, so the joined output equals one sequential run.
pub fn resample_mono(samples: Vec<f32>, from: u32, to: u32) -> Result<Vec<f32>, TranscodeError> {
    if from == to || samples.is_empty() {
        return Ok(samples);
    }
    let Some(parts) = resample_parts(samples.len(), from, to) else {
        return resample_run(&samples, from, to);
    };
    // Every part writes its share of the output in place.
    let mut joined = vec![0.0f32; expected_resampled_len(samples.len(), from, to)];
    let destinations = split_by_lengths(&mut joined, parts.iter().map(|p| p.keep.len()));
    parts
        .par_iter()
        .zip(destinations.into_par_iter())
        .try_for_each(|(part, dst)| {
            let out = resample_run(&samples[part.context.clone()], from, to)?;
            let kept = out.get(part.keep.clone()).ok_or_else(|| {
                TranscodeError::Resample(format!(
                    "part {:?} gave {} frames, {:?} expected",
                    part.context,
                    out.len(),
                    part.keep
                ))
            })?;
            dst.copy_from_slice(kept);
            Ok::<(), TranscodeError>(())
        })?;
    Ok(joined)
}

/// Chunks of real signal fed before and after each parallel part; the
/// filter is one chunk long, so two would do.
const RESAMPLE_CONTEXT_CHUNKS: usize = 4;

/// Input chunks per parallel part (~12 s at 44.1 kHz): few enough parts
/// that the context costs little, enough to share two or more cores.
const RESAMPLE_PART_CHUNKS: usize = 512;

/// One parallel part: the input range it is fed and the range of its own
/// output that belongs to the joined result.
#[derive(Debug, Clone, PartialEq)]
struct ResamplePart {
    context: Range<usize>,
    keep: Range<usize>,
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Output length of one sequential run over `len` input frames.
fn expected_resampled_len(len: usize, from: u32, to: u32) -> usize {
    (len as u64 * to as u64).div_ceil(from as u64) as usize
}

/// Splits `len` input frames into parallel parts, or `None` when the signal
/// is too short to be worth it or the rates share no grid a part could
/// start on exactly.
fn resample_parts(len: usize, from: u32, to: u32) -> Option<Vec<ResamplePart>> {
    let (from, to) = (from as usize, to as usize);
    let g = gcd(from, to);
    let (rate_in, rate_out) = (from / g, to / g);
    // Part starts must be on the chunk grid and map to a whole output frame.
    let align = RESAMPLE_CHUNK / gcd(RESAMPLE_CHUNK, rate_in) * rate_in;
    let part_len = align * RESAMPLE_PART_CHUNKS.div_ceil(align / RESAMPLE_CHUNK);
    let context = align * RESAMPLE_CONTEXT_CHUNKS.div_ceil(align / RESAMPLE_CHUNK);
    if len < 2 * part_len || part_len > 1 << 22 {
        return None;
    }
    let to_out = |frames: usize| frames / rate_in * rate_out;
    let total_out = expected_resampled_len(len, from as u32, to as u32);
    let parts = (0..len)
        .step_by(part_len)
        .map(|start| {
            let end = (start + part_len).min(len);
            let context_start = start.saturating_sub(context);
            let context_end = (end + context).min(len);
            let skip = to_out(start - context_start);
            let keep_len = if end == len {
                total_out - to_out(start)
            } else {
                to_out(end - start)
            };
            ResamplePart {
                context: context_start..context_end,
                keep: skip..skip + keep_len,
            }
        })
        .collect();
    Some(parts)
}

/// One sequential rubato run over `samples`, the startup delay trimmed.
fn resample_run(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, TranscodeError> {
    let resample_err = |e: &dyn std::fmt::Display| TranscodeError::Resample(e.to_string());
    let mut resampler = Fft::<f32>::new(
        from as usize,
        to as usize,
        RESAMPLE_CHUNK,
        1,
        FixedSync::Input,
    )
    .map_err(|e| resample_err(&e))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| resample_err(&e))?;
    let output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| resample_err(&e))?;
    Ok(output.take_data())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chirp plus noise: energy across the band, so a seam or a shifted
    /// part would show.
    fn test_signal(len: usize, rate: u32) -> Vec<f32> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let t = i as f64 / rate as f64;
                let chirp = (2.0 * std::f64::consts::PI * (50.0 + 400.0 * t) * t).sin();
                (0.5 * chirp + 0.1 * (state as f64 / u32::MAX as f64 - 0.5)) as f32
            })
            .collect()
    }

    #[test]
    fn parallel_resample_equals_one_sequential_run() {
        for (from, to, seconds) in [
            (44_100, 22_050, 40.0),
            (48_000, 22_050, 45.0),
            (32_000, 22_050, 50.0),
        ] {
            let len = (seconds * from as f64) as usize + 123;
            let signal = test_signal(len, from);
            let parts = resample_parts(len, from, to).expect("long enough to split");
            assert!(parts.len() >= 2, "{from}->{to}: {} parts", parts.len());
            let sequential = resample_run(&signal, from, to).unwrap();
            let parallel = resample_mono(signal, from, to).unwrap();
            assert_eq!(parallel.len(), sequential.len(), "{from}->{to}");
            assert_eq!(sequential.len(), expected_resampled_len(len, from, to));
            let worst = parallel
                .iter()
                .zip(&sequential)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "{from}->{to}: parts differ by {worst}");
        }
    }

    #[test]
    fn segments_fill_whole_rounds_over_the_cores() {
        // Two minutes of 44.1 kHz MP3 on two cores: six even segments.
        assert_eq!(auto_segment_packets(4594, 2), 766);
        assert_eq!(auto_segment_packets(4594, 1), 919);
        // Short files are not cut below the minimum.
        assert_eq!(auto_segment_packets(200, 16), 200);
        assert_eq!(auto_segment_packets(0, 4), 0);
        for packets in [1, 129, 1000, 4594, 40_000] {
            for threads in [1, 2, 3, 8, 64] {
                let len = auto_segment_packets(packets, threads);
                assert!(len <= MAX_SEGMENT_PACKETS.max(packets / threads + 1));
                assert!(
                    len >= MIN_SEGMENT_PACKETS.min(packets),
                    "{packets} {threads}"
                );
            }
        }
    }

    #[test]
    fn short_or_gridless_signals_resample_in_one_run() {
        assert!(resample_parts(22_050 * 5, 44_100, 22_050).is_none());
        // 44,101 Hz shares no small grid with 22,050 Hz.
        assert!(resample_parts(44_101 * 60, 44_101, 22_050).is_none());
    }
}
