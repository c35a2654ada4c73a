//! Training data: the catalogue's genre labels joined to the spectrogram
//! windows, the index of parts and tracks, and deterministic batch streams.
//!
//! Windows stay u8 all the way to the device. A stream reads parts in an order
//! fixed by (seed, epoch) on a prefetch thread, keeps the windows of the wanted
//! split, and draws them through a shuffle buffer, so memory stays bounded
//! however large the catalogue is and a resumed epoch replays exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{sync_channel, Receiver};

use arrow_array::RecordBatch;
use deepcuts_core::keys;
use deepcuts_model::store::BlockingStore;
use deepcuts_model::windows::{columns, part_info, string_column, PartInfo, PartRows, WindowShape};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::split::{split_of, Split, SplitFractions};

/// One track known to the training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackEntry {
    pub id: String,
    pub genre: Option<String>,
    /// Index into [`DataIndex::classes`], when the genre is one of them.
    pub label: Option<u32>,
    pub split: Split,
    pub windows: u32,
}

/// What one scan of the inputs found; stored with the model so that a resumed
/// run sees the same parts, classes and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataIndex {
    pub data_job_ids: Vec<String>,
    pub parts: Vec<String>,
    pub bands: usize,
    pub frames: usize,
    pub frontend: Option<serde_json::Value>,
    pub classes: Vec<String>,
    /// Sorted by id.
    pub tracks: Vec<TrackEntry>,
}

impl DataIndex {
    pub fn track_lookup(&self) -> HashMap<&str, u32> {
        self.tracks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i as u32))
            .collect()
    }

    /// Windows of a split that the objective can use.
    pub fn windows_in(&self, split: Split, labelled_only: bool) -> u64 {
        self.tracks
            .iter()
            .filter(|t| t.split == split && (!labelled_only || t.label.is_some()))
            .map(|t| u64::from(t.windows))
            .sum()
    }

    /// Tracks of a split that the objective can use.
    pub fn tracks_in(&self, split: Split, labelled_only: bool) -> usize {
        self.tracks
            .iter()
            .filter(|t| t.split == split && (!labelled_only || t.label.is_some()))
            .count()
    }
}

/// Options of [`build_index`].
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub fractions: SplitFractions,
    /// Geometry to assume when the parts carry no front-end metadata.
    pub bands: usize,
    pub frames: usize,
    /// Only these genres become classes (all when empty).
    pub genres: Vec<String>,
    /// Genres with fewer tracks are not classes.
    pub min_tracks_per_genre: usize,
}

/// Reads the catalogues and scans every spectrogram part of the jobs once.
pub fn build_index(
    store: &BlockingStore,
    data_job_ids: &[String],
    options: &IndexOptions,
) -> Result<DataIndex, TrainError> {
    let mut genres: HashMap<String, String> = HashMap::new();
    let mut parts = Vec::new();
    for job in data_job_ids {
        for key in store.list(&keys::catalogue_prefix(job))? {
            if key.ends_with(".parquet") {
                read_genres(&key, &store.read_parquet(&key)?.batches, &mut genres)?;
            }
        }
        parts.extend(
            store
                .list(&keys::spectrograms_prefix(job))?
                .into_iter()
                .filter(|k| k.ends_with(".parquet")),
        );
    }
    parts.sort();
    if parts.is_empty() {
        return Err(TrainError::NoData(format!(
            "no spectrogram parts in jobs {data_job_ids:?}"
        )));
    }

    let mut windows: BTreeMap<String, u32> = BTreeMap::new();
    let fallback = WindowShape {
        bands: options.bands,
        frames: options.frames,
    };
    let mut first: Option<PartInfo> = None;
    for key in &parts {
        let file = store.read_parquet(key)?;
        let info = part_info(key, &file, Some(fallback))?;
        match &first {
            None => first = Some(info.clone()),
            Some(seen) if seen.shape != info.shape => {
                return Err(TrainError::BadInput {
                    key: key.clone(),
                    reason: format!(
                        "windows are {}x{}, earlier parts had {}x{}",
                        info.shape.bands, info.shape.frames, seen.shape.bands, seen.shape.frames
                    ),
                })
            }
            Some(_) => {}
        }
        for batch in &file.batches {
            let rows = PartRows::new(key, batch, info.shape.len())?;
            for i in 0..batch.num_rows() {
                *windows.entry(rows.track_id(i).to_owned()).or_default() += 1;
            }
        }
    }
    let PartInfo { shape, frontend } = first.unwrap_or(PartInfo {
        shape: fallback,
        frontend: None,
    });
    let (bands, frames) = (shape.bands, shape.frames);

    let mut tracks_per_genre: BTreeMap<&str, usize> = BTreeMap::new();
    for id in windows.keys() {
        if let Some(g) = genres.get(id) {
            *tracks_per_genre.entry(g.as_str()).or_default() += 1;
        }
    }
    let classes: Vec<String> = tracks_per_genre
        .into_iter()
        .filter(|(g, n)| {
            *n >= options.min_tracks_per_genre
                && (options.genres.is_empty() || options.genres.iter().any(|w| w == g))
        })
        .map(|(g, _)| g.to_owned())
        .collect();
    let tracks = windows
        .into_iter()
        .map(|(id, count)| {
            let genre = genres.get(&id).cloned();
            let label = genre
                .as_ref()
                .and_then(|g| classes.iter().position(|c| c == g))
                .map(|p| p as u32);
            TrackEntry {
                split: split_of(&id, options.fractions),
                id,
                genre,
                label,
                windows: count,
            }
        })
        .collect();
    Ok(DataIndex {
        data_job_ids: data_job_ids.to_vec(),
        parts,
        bands,
        frames,
        frontend,
        classes,
        tracks,
    })
}

fn read_genres(
    key: &str,
    batches: &[RecordBatch],
    out: &mut HashMap<String, String>,
) -> Result<(), TrainError> {
    for batch in batches {
        let ids = string_column(key, batch, columns::TRACK_ID)?;
        let Ok(genres) = string_column(key, batch, columns::GENRE) else {
            continue; // a folder source has no genres: contrastive only
        };
        for i in 0..batch.num_rows() {
            if ids.is_valid(i) && genres.is_valid(i) && !genres.value(i).trim().is_empty() {
                out.insert(ids.value(i).to_owned(), genres.value(i).trim().to_owned());
            }
        }
    }
    Ok(())
}

/// Random spectrogram edits applied to training windows only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Widest frequency mask, in bands (0 = none).
    pub freq_mask: usize,
    /// Widest time mask, in frames (0 = none).
    pub time_mask: usize,
    /// Largest circular time shift either way, in frames (0 = none).
    pub max_shift: usize,
}

impl Augment {
    pub fn none() -> Self {
        Self {
            freq_mask: 0,
            time_mask: 0,
            max_shift: 0,
        }
    }

    pub fn is_active(&self) -> bool {
        self.freq_mask > 0 || self.time_mask > 0 || self.max_shift > 0
    }

    /// Edits one `[bands, frames]` window in place. Masks fill with 0, the floor
    /// of the dB range (silence).
    pub fn apply(&self, window: &mut [u8], bands: usize, frames: usize, rng: &mut impl Rng) {
        if self.max_shift > 0 {
            let shift = rng.random_range(0..=2 * self.max_shift) as isize - self.max_shift as isize;
            let by = shift.rem_euclid(frames as isize) as usize;
            for row in window.chunks_exact_mut(frames) {
                row.rotate_right(by);
            }
        }
        if self.freq_mask > 0 {
            let width = rng.random_range(0..=self.freq_mask.min(bands));
            let start = rng.random_range(0..=bands - width);
            window[start * frames..(start + width) * frames].fill(0);
        }
        if self.time_mask > 0 {
            let width = rng.random_range(0..=self.time_mask.min(frames));
            let start = rng.random_range(0..=frames - width);
            for row in window.chunks_exact_mut(frames) {
                row[start..start + width].fill(0);
            }
        }
    }
}

/// How samples are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleMode {
    /// One window per sample, labelled tracks only (genre objective).
    LabelledWindows,
    /// One window per sample, every track (embedding and retrieval).
    AllWindows,
    /// Two windows of one track per sample (contrastive objective).
    Pairs,
}

/// What one stream produces.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub split: Split,
    pub mode: SampleMode,
    pub batch_size: usize,
    /// Shuffle parts and samples with this seed through a buffer of this many
    /// samples; `None` keeps storage order (evaluation).
    pub shuffle: Option<(u64, usize)>,
    pub augment: Augment,
    /// Drop a final batch smaller than `batch_size` (training only).
    pub drop_last: bool,
}

/// A batch of windows. With pairs, the first half of the rows are the first
/// views and the second half the second views, so row `i` pairs with `i + n`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `rows × bands × frames` bytes.
    pub pixels: Vec<u8>,
    pub rows: usize,
    /// Index into [`DataIndex::tracks`] per row.
    pub tracks: Vec<u32>,
    pub window_index: Vec<u32>,
}

struct Sample {
    track: u32,
    window_index: u32,
    views: Vec<Vec<u8>>,
}

type PartResult = Result<(String, arrow_array::RecordBatch), TrainError>;

/// A deterministic iterator of batches over the parts of an index.
pub struct BatchStream {
    spec: StreamSpec,
    bands: usize,
    frames: usize,
    lookup: HashMap<String, (u32, Split, bool)>,
    feed: Receiver<PartResult>,
    rng: ChaCha8Rng,
    buffer: Vec<Sample>,
    ready: std::collections::VecDeque<Sample>,
    feed_done: bool,
}

impl BatchStream {
    /// Starts the prefetch thread and returns the stream.
    pub fn open(store: &BlockingStore, index: &DataIndex, spec: StreamSpec) -> Self {
        let mut parts = index.parts.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(spec.shuffle.map_or(0, |(seed, _)| seed));
        if spec.shuffle.is_some() {
            parts.shuffle(&mut rng);
        }
        let lookup = index
            .tracks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), (i as u32, t.split, t.label.is_some())))
            .collect();
        // Two parts in flight overlap storage reads and decoding with training.
        let (tx, feed) = sync_channel::<PartResult>(2);
        let store = store.clone();
        std::thread::spawn(move || {
            for key in parts {
                match store.read_parquet(&key) {
                    Ok(file) => {
                        for batch in file.batches {
                            if tx.send(Ok((key.clone(), batch))).is_err() {
                                return;
                            }
                        }
                    }
                    Err(err) => {
                        let _ = tx.send(Err(err.into()));
                        return;
                    }
                }
            }
        });
        Self {
            spec,
            bands: index.bands,
            frames: index.frames,
            lookup,
            feed,
            rng,
            buffer: Vec::new(),
            ready: Default::default(),
            feed_done: false,
        }
    }

    /// Turns one record batch into samples of the wanted split.
    fn ingest(&mut self, key: &str, batch: &RecordBatch) -> Result<Vec<Sample>, TrainError> {
        let rows = PartRows::new(key, batch, self.bands * self.frames)?;
        let mut by_track: BTreeMap<u32, Vec<(u32, &[u8])>> = BTreeMap::new();
        for i in 0..batch.num_rows() {
            let Some(&(track, split, labelled)) = self.lookup.get(rows.track_id(i)) else {
                continue; // a part written after the index was built
            };
            if split != self.spec.split
                || (self.spec.mode == SampleMode::LabelledWindows && !labelled)
            {
                continue;
            }
            by_track
                .entry(track)
                .or_default()
                .push((rows.window_index(i), rows.window(i)));
        }
        let mut samples = Vec::new();
        for (track, mut windows) in by_track {
            windows.sort_by_key(|w| w.0);
            match self.spec.mode {
                SampleMode::LabelledWindows | SampleMode::AllWindows => {
                    samples.extend(windows.into_iter().map(|(w, px)| Sample {
                        track,
                        window_index: w,
                        views: vec![px.to_vec()],
                    }));
                }
                SampleMode::Pairs => {
                    windows.shuffle(&mut self.rng);
                    if windows.len() == 1 {
                        // One window: its two augmented copies form the pair.
                        let (w, px) = windows[0];
                        samples.push(Sample {
                            track,
                            window_index: w,
                            views: vec![px.to_vec(), px.to_vec()],
                        });
                    }
                    for pair in windows.chunks_exact(2) {
                        samples.push(Sample {
                            track,
                            window_index: pair[0].0,
                            views: vec![pair[0].1.to_vec(), pair[1].1.to_vec()],
                        });
                    }
                }
            }
        }
        Ok(samples)
    }

    /// Moves samples towards `ready` until a batch is available or the input ends.
    fn fill(&mut self) -> Result<(), TrainError> {
        let capacity = self.spec.shuffle.map(|(_, c)| c.max(1));
        while self.ready.len() < self.spec.batch_size && !self.feed_done {
            match self.feed.recv() {
                Ok(Ok((key, batch))) => {
                    let samples = self.ingest(&key, &batch)?;
                    for sample in samples {
                        match capacity {
                            None => self.ready.push_back(sample),
                            Some(cap) => {
                                if self.buffer.len() < cap {
                                    self.buffer.push(sample);
                                } else {
                                    let j = self.rng.random_range(0..self.buffer.len());
                                    self.ready
                                        .push_back(std::mem::replace(&mut self.buffer[j], sample));
                                }
                            }
                        }
                    }
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    self.feed_done = true;
                    self.buffer.shuffle(&mut self.rng);
                    self.ready.extend(self.buffer.drain(..));
                }
            }
        }
        Ok(())
    }

    fn assemble(&mut self, samples: Vec<Sample>) -> Batch {
        let views = samples.first().map_or(1, |s| s.views.len());
        let window_len = self.bands * self.frames;
        let rows = samples.len() * views;
        let mut batch = Batch {
            pixels: Vec::with_capacity(rows * window_len),
            rows,
            tracks: Vec::with_capacity(rows),
            window_index: Vec::with_capacity(rows),
        };
        for view in 0..views {
            for s in &samples {
                let start = batch.pixels.len();
                batch.pixels.extend_from_slice(&s.views[view]);
                if self.spec.augment.is_active() {
                    self.spec.augment.apply(
                        &mut batch.pixels[start..],
                        self.bands,
                        self.frames,
                        &mut self.rng,
                    );
                }
                batch.tracks.push(s.track);
                batch.window_index.push(s.window_index);
            }
        }
        batch
    }
}

impl Iterator for BatchStream {
    type Item = Result<Batch, TrainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(err) = self.fill() {
            self.feed_done = true;
            self.ready.clear();
            return Some(Err(err));
        }
        let take = self.ready.len().min(self.spec.batch_size);
        if take == 0 || (self.spec.drop_last && take < self.spec.batch_size) {
            return None;
        }
        let samples: Vec<Sample> = self.ready.drain(..take).collect();
        Some(Ok(self.assemble(samples)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augment_masks_and_shifts_within_bounds() {
        let (bands, frames) = (8, 16);
        let mut window: Vec<u8> = (0..bands * frames).map(|i| (i % 200 + 1) as u8).collect();
        let original = window.clone();
        let augment = Augment {
            freq_mask: 3,
            time_mask: 4,
            max_shift: 5,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        augment.apply(&mut window, bands, frames, &mut rng);
        let zeros = window.iter().filter(|&&v| v == 0).count();
        assert!(zeros <= 3 * frames + 4 * bands, "{zeros}");
        // Each row is a rotation of the original row with some cells zeroed.
        let mut sorted_in: Vec<u8> = original[..frames].to_vec();
        sorted_in.sort();
        assert!(window[..frames]
            .iter()
            .all(|v| *v == 0 || sorted_in.binary_search(v).is_ok()));
        let mut again = original.clone();
        augment.apply(&mut again, bands, frames, &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(again, window, "same seed, same edits");
    }
}
