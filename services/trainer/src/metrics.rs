//! Per-epoch metrics, the holdout report, its tables and the confusion image.

use std::collections::{BTreeMap, HashMap};

use comfy_table::Table;
use serde::{Deserialize, Serialize};

use crate::data::DataIndex;
use crate::split::Split;
use deepcuts_model::network::{ModelSpec, Objective};

/// One epoch's figures. For the contrastive objective the accuracies are the
/// share of rows whose partner window is their nearest in the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_window_accuracy: f64,
    /// Summing window probabilities per track, as the original did (genre only).
    pub val_track_accuracy: Option<f64>,
    pub learning_rate: f64,
    pub seconds: f64,
    pub windows_per_second: f64,
    pub improved: bool,
}

/// Accumulates an evaluation pass.
#[derive(Debug, Clone)]
pub struct EvalResult {
    n_classes: usize,
    loss_sum: f64,
    correct: i64,
    rows: i64,
    track_probs: BTreeMap<u32, Vec<f64>>,
    track_windows: BTreeMap<u32, Vec<(u32, Vec<f32>)>>,
    pub loss: f64,
    pub window_accuracy: f64,
    pub track_accuracy: Option<f64>,
}

impl EvalResult {
    pub fn new(n_classes: usize) -> Self {
        Self {
            n_classes,
            loss_sum: 0.0,
            correct: 0,
            rows: 0,
            track_probs: BTreeMap::new(),
            track_windows: BTreeMap::new(),
            loss: f64::NAN,
            window_accuracy: 0.0,
            track_accuracy: None,
        }
    }

    fn refresh(&mut self) {
        self.loss = if self.rows > 0 {
            self.loss_sum / self.rows as f64
        } else {
            f64::NAN
        };
        self.window_accuracy = if self.rows > 0 {
            self.correct as f64 / self.rows as f64
        } else {
            0.0
        };
    }

    pub fn add_genre_batch(
        &mut self,
        index: &DataIndex,
        tracks: &[u32],
        probs: &[f32],
        mean_loss: f64,
        correct: i64,
    ) {
        let rows = tracks.len();
        self.loss_sum += mean_loss * rows as f64;
        self.correct += correct;
        self.rows += rows as i64;
        for (row, &track) in tracks.iter().enumerate() {
            let sums = self
                .track_probs
                .entry(track)
                .or_insert_with(|| vec![0.0; self.n_classes]);
            for (c, s) in sums.iter_mut().enumerate() {
                *s += f64::from(probs[row * self.n_classes + c]);
            }
        }
        let (hits, total) = self.track_hits(index);
        self.track_accuracy = (total > 0).then(|| hits as f64 / total as f64);
        self.refresh();
    }

    pub fn add_pair_batch(&mut self, rows: usize, mean_loss: f64, correct: i64) {
        self.loss_sum += mean_loss * rows as f64;
        self.correct += correct;
        self.rows += rows as i64;
        self.refresh();
    }

    pub fn add_window_embedding(&mut self, track: u32, window_index: u32, embedding: &[f32]) {
        self.track_windows
            .entry(track)
            .or_default()
            .push((window_index, embedding.to_vec()));
    }

    fn track_hits(&self, index: &DataIndex) -> (usize, usize) {
        let mut hits = 0;
        for (&track, sums) in &self.track_probs {
            if index.tracks[track as usize].label == Some(argmax(sums) as u32) {
                hits += 1;
            }
        }
        (hits, self.track_probs.len())
    }

    /// Confusion counts per track, `[true class][predicted class]`.
    pub fn confusion(&self, index: &DataIndex) -> Vec<Vec<u32>> {
        let mut m = vec![vec![0u32; self.n_classes]; self.n_classes];
        for (&track, sums) in &self.track_probs {
            if let Some(label) = index.tracks[track as usize].label {
                m[label as usize][argmax(sums)] += 1;
            }
        }
        m
    }

    /// Same-track retrieval: the mean of each track's first half of windows is
    /// a query, the mean of its second half a key; recall@k is the share of
    /// queries whose own key is among their k most cosine-similar keys.
    pub fn retrieval_recall(&self, ks: &[usize]) -> (usize, Vec<f64>) {
        let mut queries = Vec::new();
        let mut keys = Vec::new();
        for windows in self.track_windows.values() {
            if windows.len() < 2 {
                continue;
            }
            let mut sorted: Vec<&(u32, Vec<f32>)> = windows.iter().collect();
            sorted.sort_by_key(|w| w.0);
            let half = sorted.len() / 2;
            queries.push(unit_mean(sorted[..half].iter().map(|w| w.1.as_slice())));
            keys.push(unit_mean(sorted[half..].iter().map(|w| w.1.as_slice())));
        }
        let n = queries.len();
        let mut hits = vec![0usize; ks.len()];
        for (i, q) in queries.iter().enumerate() {
            let own = dot(q, &keys[i]);
            let better = keys
                .iter()
                .enumerate()
                .filter(|(j, k)| *j != i && dot(q, k) > own)
                .count();
            for (h, &k) in hits.iter_mut().zip(ks) {
                if better < k {
                    *h += 1;
                }
            }
        }
        (
            n,
            hits.iter()
                .map(|&h| if n > 0 { h as f64 / n as f64 } else { 0.0 })
                .collect(),
        )
    }
}

fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The L2-normalised mean of vectors.
pub fn unit_mean<'a>(vectors: impl Iterator<Item = &'a [f32]>) -> Vec<f32> {
    let mut sum: Vec<f32> = Vec::new();
    for v in vectors {
        if sum.is_empty() {
            sum = vec![0.0; v.len()];
        }
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    sum.iter().map(|x| x / norm).collect()
}

/// Track accuracy of one genre on the holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenreAccuracy {
    pub genre: String,
    pub tracks: u32,
    pub correct: u32,
    pub accuracy: f64,
}

/// Final figures on the holdout split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutReport {
    pub objective: Objective,
    pub loss: f64,
    pub window_accuracy: f64,
    pub track_accuracy: Option<f64>,
    pub tracks: usize,
    pub per_genre: Vec<GenreAccuracy>,
    /// `[true][predicted]` track counts, in class order.
    pub confusion: Option<Vec<Vec<u32>>>,
    pub retrieval_queries: Option<usize>,
    pub recall_at_1: Option<f64>,
    pub recall_at_10: Option<f64>,
}

impl HoldoutReport {
    pub fn from_eval(index: &DataIndex, objective: Objective, eval: &EvalResult) -> Self {
        let mut report = Self {
            objective,
            loss: eval.loss,
            window_accuracy: eval.window_accuracy,
            track_accuracy: eval.track_accuracy,
            tracks: 0,
            per_genre: Vec::new(),
            confusion: None,
            retrieval_queries: None,
            recall_at_1: None,
            recall_at_10: None,
        };
        match objective {
            Objective::Genre => {
                let confusion = eval.confusion(index);
                report.tracks = confusion.iter().flatten().map(|&v| v as usize).sum();
                report.per_genre = index
                    .classes
                    .iter()
                    .enumerate()
                    .map(|(c, genre)| {
                        let tracks: u32 = confusion[c].iter().sum();
                        let correct = confusion[c][c];
                        GenreAccuracy {
                            genre: genre.clone(),
                            tracks,
                            correct,
                            accuracy: if tracks > 0 {
                                f64::from(correct) / f64::from(tracks)
                            } else {
                                0.0
                            },
                        }
                    })
                    .collect();
                report.confusion = Some(confusion);
            }
            Objective::Contrastive => {
                let (queries, recall) = eval.retrieval_recall(&[1, 10]);
                report.tracks = queries;
                report.retrieval_queries = Some(queries);
                report.recall_at_1 = Some(recall[0]);
                report.recall_at_10 = Some(recall[1]);
            }
        }
        report
    }

    /// The headline figures that go into the model card.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "holdout_tracks": self.tracks,
            "holdout_loss": self.loss,
            "holdout_window_accuracy": self.window_accuracy,
            "holdout_track_accuracy": self.track_accuracy,
            "recall_at_1": self.recall_at_1,
            "recall_at_10": self.recall_at_10,
        })
    }
}

/// Tracks and windows per split (and genre, for the genre objective).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitCount {
    pub genre: String,
    pub split: Split,
    pub tracks: u32,
    pub windows: u64,
}

pub fn split_counts(index: &DataIndex, labelled_only: bool) -> Vec<SplitCount> {
    let mut counts: BTreeMap<(String, Split), (u32, u64)> = BTreeMap::new();
    for t in &index.tracks {
        if labelled_only && t.label.is_none() {
            continue;
        }
        let genre = if labelled_only {
            t.genre.clone().unwrap_or_default()
        } else {
            "all".to_owned()
        };
        let e = counts.entry((genre, t.split)).or_default();
        e.0 += 1;
        e.1 += u64::from(t.windows);
    }
    counts
        .into_iter()
        .map(|((genre, split), (tracks, windows))| SplitCount {
            genre,
            split,
            tracks,
            windows,
        })
        .collect()
}

/// Everything `report.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub model_id: String,
    pub job_id: String,
    pub spec: ModelSpec,
    pub classes: Vec<String>,
    pub split: Vec<SplitCount>,
    pub epochs: Vec<EpochMetrics>,
    pub best_epoch: u32,
    pub stopped_early: bool,
    pub resumed_from_epoch: Option<u32>,
    pub device: String,
    pub holdout: HoldoutReport,
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

impl TrainReport {
    /// The report as printable tables: epochs, then the holdout.
    pub fn tables(&self) -> Vec<Table> {
        let mut epochs = Table::new();
        epochs.set_header([
            "epoch",
            "train loss",
            "train acc",
            "val loss",
            "val window acc",
            "val track acc",
            "lr",
            "windows/s",
        ]);
        for e in &self.epochs {
            epochs.add_row([
                format!("{}{}", e.epoch, if e.improved { " *" } else { "" }),
                format!("{:.4}", e.train_loss),
                pct(e.train_accuracy),
                format!("{:.4}", e.val_loss),
                pct(e.val_window_accuracy),
                e.val_track_accuracy.map_or("-".into(), pct),
                format!("{:.2e}", e.learning_rate),
                format!("{:.1}", e.windows_per_second),
            ]);
        }
        let mut tables = vec![epochs];
        let h = &self.holdout;
        let mut summary = Table::new();
        summary.set_header(["holdout", "value"]);
        summary.add_row(["tracks".to_owned(), h.tracks.to_string()]);
        summary.add_row(["loss".to_owned(), format!("{:.4}", h.loss)]);
        summary.add_row(["window accuracy".to_owned(), pct(h.window_accuracy)]);
        if let Some(t) = h.track_accuracy {
            summary.add_row(["track accuracy".to_owned(), pct(t)]);
        }
        if let (Some(r1), Some(r10)) = (h.recall_at_1, h.recall_at_10) {
            summary.add_row(["same-track recall@1".to_owned(), pct(r1)]);
            summary.add_row(["same-track recall@10".to_owned(), pct(r10)]);
        }
        tables.push(summary);
        if !h.per_genre.is_empty() {
            let mut genres = Table::new();
            genres.set_header(["genre", "tracks", "correct", "accuracy"]);
            for g in &h.per_genre {
                genres.add_row([
                    g.genre.clone(),
                    g.tracks.to_string(),
                    g.correct.to_string(),
                    pct(g.accuracy),
                ]);
            }
            tables.push(genres);
        }
        if let Some(m) = &h.confusion {
            let mut confusion = Table::new();
            let mut header = vec!["true \\ predicted".to_owned()];
            header.extend(self.classes.iter().cloned());
            confusion.set_header(header);
            for (c, row) in m.iter().enumerate() {
                let mut cells = vec![self.classes[c].clone()];
                cells.extend(row.iter().map(u32::to_string));
                confusion.add_row(cells);
            }
            tables.push(confusion);
        }
        tables
    }
}

/// Draws a confusion matrix (row-normalised shading, counts written in) as PNG.
pub fn confusion_png(classes: &[String], matrix: &[Vec<u32>]) -> Result<Vec<u8>, String> {
    use plotters::prelude::*;
    let n = classes.len().max(1) as u32;
    let cell = 56u32;
    let margin = 170u32;
    let (width, height) = (margin + n * cell + 20, margin + n * cell + 20);
    let mut rgb = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let font = ("sans-serif", 14).into_font();
        for (r, row) in matrix.iter().enumerate() {
            let total: u32 = row.iter().sum::<u32>().max(1);
            for (c, &count) in row.iter().enumerate() {
                let share = f64::from(count) / f64::from(total);
                let shade = (255.0 * (1.0 - share)) as u8;
                let x = (margin + c as u32 * cell) as i32;
                let y = (margin + r as u32 * cell) as i32;
                let color = RGBColor(shade, shade, 255);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    color.filled(),
                ))
                .map_err(|e| e.to_string())?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    count.to_string(),
                    (x + 8, y + cell as i32 / 2 - 7),
                    font.clone().color(&ink),
                ))
                .map_err(|e| e.to_string())?;
            }
        }
        for (i, name) in classes.iter().enumerate() {
            let label: String = name.chars().take(20).collect();
            let offset = (margin + i as u32 * cell) as i32;
            root.draw(&Text::new(
                label.clone(),
                (6, offset + cell as i32 / 2 - 7),
                font.clone(),
            ))
            .map_err(|e| e.to_string())?;
            let vertical = font.clone().transform(FontTransform::Rotate270);
            root.draw(&Text::new(
                label,
                (offset + cell as i32 / 2 - 7, margin as i32 - 6),
                vertical,
            ))
            .map_err(|e| e.to_string())?;
        }
        root.draw(&Text::new("true ↓  predicted →", (6, 6), font))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    let image = image_png(&rgb, width, height)?;
    Ok(image)
}

fn image_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Track count per genre in a map (for callers that print split tables).
pub fn tracks_per_genre(index: &DataIndex) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for t in &index.tracks {
        if let Some(g) = &t.genre {
            *out.entry(g.clone()).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_finds_the_own_second_half() {
        let mut e = EvalResult::new(0);
        // Three tracks whose halves point the same way; one track of a single window is skipped.
        for (t, dir) in [(0u32, [1.0f32, 0.0]), (1, [0.0, 1.0]), (2, [-1.0, 0.1])] {
            for w in 0..4 {
                e.add_window_embedding(t, w, &dir);
            }
        }
        e.add_window_embedding(3, 0, &[1.0, 1.0]);
        let (n, r) = e.retrieval_recall(&[1, 10]);
        assert_eq!(n, 3);
        assert_eq!(r, vec![1.0, 1.0]);
    }

    #[test]
    fn unit_mean_is_unit_length() {
        let v = unit_mean([[3.0f32, 0.0].as_slice(), [0.0, 4.0].as_slice()].into_iter());
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
    }

    #[test]
    fn confusion_png_is_a_png() {
        let png = confusion_png(&["a".into(), "b".into()], &[vec![3, 1], vec![0, 4]]);
        // Text needs a system font; without one the drawing fails with a message, not a panic.
        match png {
            Ok(bytes) => assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n"),
            Err(msg) => assert!(!msg.is_empty()),
        }
    }
}
