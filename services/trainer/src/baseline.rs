//! The static-timbre baseline that keeps the simulator honest.
//!
//! Each track becomes one vector: the mean and the standard deviation of
//! every band over all its frames. That is a track's average colour and how
//! much each band moves, with no order in time. Two classifiers are fitted on
//! the training split (features standardised on it): nearest centroid and
//! multinomial logistic regression (full-batch gradient descent with L2).
//! Both are scored on the same holdout tracks the CNN is scored on. If either
//! comes close to the CNN, genres differ by a static colour and the
//! simulator (or the catalogue) is too easy; the trainer issue asks that the
//! better of the two stays at or below 75% on the simulator's defaults.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::data::{build_index, DataIndex, IndexOptions};
use crate::error::TrainError;
use crate::split::Split;
use deepcuts_model::store::BlockingStore;
use deepcuts_model::windows::PartRows;

/// One classifier's holdout figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierScore {
    pub classifier: String,
    pub track_accuracy: f64,
    pub tracks: usize,
    /// Per class, in class order: (tracks, correct).
    pub per_genre: Vec<(String, u32, u32)>,
    /// `[true][predicted]`.
    pub confusion: Vec<Vec<u32>>,
}

/// Both classifiers on one job's holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineReport {
    pub data_job_ids: Vec<String>,
    pub classes: Vec<String>,
    pub features: usize,
    pub train_tracks: usize,
    pub holdout_tracks: usize,
    pub nearest_centroid: ClassifierScore,
    pub logistic_regression: ClassifierScore,
}

impl BaselineReport {
    /// The better of the two classifiers' holdout track accuracy.
    pub fn best_accuracy(&self) -> f64 {
        self.nearest_centroid
            .track_accuracy
            .max(self.logistic_regression.track_accuracy)
    }
}

/// Per-band running sums of one track.
struct BandStats {
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    count: u64,
}

/// Per-track mean and standard deviation of each band.
pub fn track_features(
    store: &BlockingStore,
    index: &DataIndex,
) -> Result<HashMap<String, Vec<f32>>, TrainError> {
    let (bands, frames) = (index.bands, index.frames);
    let mut stats: HashMap<String, BandStats> = HashMap::new();
    for key in &index.parts {
        let file = store.read_parquet(key)?;
        for batch in &file.batches {
            let rows = PartRows::new(key, batch, bands * frames)?;
            for row in 0..batch.num_rows() {
                let window = rows.window(row);
                let entry = stats
                    .entry(rows.track_id(row).to_owned())
                    .or_insert_with(|| BandStats {
                        sum: vec![0.0; bands],
                        sum_sq: vec![0.0; bands],
                        count: 0,
                    });
                for band in 0..bands {
                    let line = &window[band * frames..(band + 1) * frames];
                    let (s, sq) = line.iter().fold((0u64, 0u64), |(s, sq), &v| {
                        let v = u64::from(v);
                        (s + v, sq + v * v)
                    });
                    entry.sum[band] += s as f64;
                    entry.sum_sq[band] += sq as f64;
                }
                entry.count += frames as u64;
            }
        }
    }
    Ok(stats
        .into_iter()
        .map(|(id, s)| {
            let n = s.count.max(1) as f64;
            let mut features = Vec::with_capacity(2 * bands);
            for band in 0..bands {
                features.push((s.sum[band] / n / 255.0) as f32);
            }
            for band in 0..bands {
                let mean = s.sum[band] / n;
                let var = (s.sum_sq[band] / n - mean * mean).max(0.0);
                features.push((var.sqrt() / 255.0) as f32);
            }
            (id, features)
        })
        .collect())
}

fn standardise(train: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    let dim = train.first().map_or(0, Vec::len);
    let n = train.len().max(1) as f32;
    let mut mean = vec![0.0f32; dim];
    for x in train {
        for (m, v) in mean.iter_mut().zip(x) {
            *m += v / n;
        }
    }
    let mut std = vec![0.0f32; dim];
    for x in train {
        for ((s, v), m) in std.iter_mut().zip(x).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    for s in &mut std {
        *s = s.sqrt().max(1e-6);
    }
    (mean, std)
}

fn apply(x: &[f32], mean: &[f32], std: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(mean)
        .zip(std)
        .map(|((v, m), s)| (v - m) / s)
        .collect()
}

fn score(name: &str, classes: &[String], truth: &[u32], predicted: &[u32]) -> ClassifierScore {
    let c = classes.len();
    let mut confusion = vec![vec![0u32; c]; c];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t as usize][p as usize] += 1;
    }
    let correct: u32 = (0..c).map(|i| confusion[i][i]).sum();
    ClassifierScore {
        classifier: name.to_owned(),
        track_accuracy: f64::from(correct) / truth.len().max(1) as f64,
        tracks: truth.len(),
        per_genre: (0..c)
            .map(|i| {
                (
                    classes[i].clone(),
                    confusion[i].iter().sum(),
                    confusion[i][i],
                )
            })
            .collect(),
        confusion,
    }
}

/// Nearest class mean in the standardised space.
fn nearest_centroid(train: &[(Vec<f32>, u32)], test: &[Vec<f32>], classes: usize) -> Vec<u32> {
    let dim = train.first().map_or(0, |t| t.0.len());
    let mut centroids = vec![vec![0.0f32; dim]; classes];
    let mut counts = vec![0usize; classes];
    for (x, y) in train {
        counts[*y as usize] += 1;
        for (c, v) in centroids[*y as usize].iter_mut().zip(x) {
            *c += v;
        }
    }
    for (c, n) in centroids.iter_mut().zip(&counts) {
        for v in c.iter_mut() {
            *v /= (*n).max(1) as f32;
        }
    }
    test.iter()
        .map(|x| {
            let distance =
                |c: &Vec<f32>| -> f32 { c.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum() };
            (0..classes)
                .filter(|&k| counts[k] > 0)
                .min_by(|&a, &b| distance(&centroids[a]).total_cmp(&distance(&centroids[b])))
                .unwrap_or(0) as u32
        })
        .collect()
}

/// Multinomial logistic regression, full-batch gradient descent with L2.
fn logistic_regression(train: &[(Vec<f32>, u32)], test: &[Vec<f32>], classes: usize) -> Vec<u32> {
    const STEPS: usize = 500;
    const LEARNING_RATE: f32 = 0.5;
    const L2: f32 = 1e-3;
    let dim = train.first().map_or(0, |t| t.0.len());
    // Weights per class: dim features plus a bias.
    let mut w = vec![vec![0.0f32; dim + 1]; classes];
    let n = train.len().max(1) as f32;
    let logits = |w: &[Vec<f32>], x: &[f32]| -> Vec<f32> {
        w.iter()
            .map(|wk| wk[dim] + wk[..dim].iter().zip(x).map(|(a, b)| a * b).sum::<f32>())
            .collect()
    };
    let softmax = |z: Vec<f32>| -> Vec<f32> {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
        let total: f32 = e.iter().sum();
        e.into_iter().map(|v| v / total).collect()
    };
    for _ in 0..STEPS {
        let mut grad = vec![vec![0.0f32; dim + 1]; classes];
        for (x, y) in train {
            let p = softmax(logits(&w, x));
            for k in 0..classes {
                let err = p[k] - if k == *y as usize { 1.0 } else { 0.0 };
                for (g, v) in grad[k][..dim].iter_mut().zip(x) {
                    *g += err * v;
                }
                grad[k][dim] += err;
            }
        }
        for k in 0..classes {
            for j in 0..=dim {
                let decay = if j < dim { L2 * w[k][j] } else { 0.0 };
                w[k][j] -= LEARNING_RATE * (grad[k][j] / n + decay);
            }
        }
    }
    test.iter()
        .map(|x| {
            let z = logits(&w, x);
            (0..classes)
                .max_by(|&a, &b| z[a].total_cmp(&z[b]))
                .unwrap_or(0) as u32
        })
        .collect()
}

/// Fits both classifiers on the jobs' training tracks and scores the holdout.
pub fn run_baseline(
    store: &BlockingStore,
    data_job_ids: &[String],
    options: &IndexOptions,
) -> Result<BaselineReport, TrainError> {
    let index = build_index(store, data_job_ids, options)?;
    if index.classes.len() < 2 {
        return Err(TrainError::NoData(format!(
            "the baseline needs two genres or more; found {:?}",
            index.classes
        )));
    }
    let features = track_features(store, &index)?;
    let mut train = Vec::new();
    let mut holdout = Vec::new();
    for track in &index.tracks {
        let (Some(label), Some(x)) = (track.label, features.get(&track.id)) else {
            continue;
        };
        match track.split {
            Split::Train => train.push((x.clone(), label)),
            Split::Holdout => holdout.push((x.clone(), label)),
            Split::Validation => {}
        }
    }
    if train.is_empty() || holdout.is_empty() {
        return Err(TrainError::NoData(
            "the baseline needs labelled tracks in both the train and holdout splits".into(),
        ));
    }
    let raw: Vec<Vec<f32>> = train.iter().map(|(x, _)| x.clone()).collect();
    let (mean, std) = standardise(&raw);
    let train: Vec<(Vec<f32>, u32)> = train
        .into_iter()
        .map(|(x, y)| (apply(&x, &mean, &std), y))
        .collect();
    let test: Vec<Vec<f32>> = holdout.iter().map(|(x, _)| apply(x, &mean, &std)).collect();
    let truth: Vec<u32> = holdout.iter().map(|(_, y)| *y).collect();
    let classes = index.classes.len();
    Ok(BaselineReport {
        data_job_ids: data_job_ids.to_vec(),
        classes: index.classes.clone(),
        features: mean.len(),
        train_tracks: train.len(),
        holdout_tracks: test.len(),
        nearest_centroid: score(
            "nearest centroid",
            &index.classes,
            &truth,
            &nearest_centroid(&train, &test, classes),
        ),
        logistic_regression: score(
            "logistic regression",
            &index.classes,
            &truth,
            &logistic_regression(&train, &test, classes),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_features_are_classified_and_scored() {
        // Two well-separated clusters: both classifiers must get every test point.
        let train: Vec<(Vec<f32>, u32)> = (0..20)
            .map(|i| {
                let y = (i % 2) as u32;
                let centre = if y == 0 { -2.0 } else { 2.0 };
                (vec![centre + 0.01 * i as f32, -centre], y)
            })
            .collect();
        let test = vec![vec![-2.1, 2.0], vec![1.9, -2.2]];
        assert_eq!(nearest_centroid(&train, &test, 2), vec![0, 1]);
        assert_eq!(logistic_regression(&train, &test, 2), vec![0, 1]);
        let classes = vec!["a".to_owned(), "b".to_owned()];
        let s = score("x", &classes, &[0, 1, 1], &[0, 0, 1]);
        assert!((s.track_accuracy - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.confusion, vec![vec![1, 0], vec![1, 1]]);
        assert_eq!(s.per_genre[1], ("b".to_owned(), 2, 1));
    }

    #[test]
    fn standardising_centres_the_training_features() {
        let (mean, std) = standardise(&[vec![1.0, 10.0], vec![3.0, 10.0]]);
        assert_eq!(mean, vec![2.0, 10.0]);
        assert!((std[0] - 1.0).abs() < 1e-6);
        assert!(std[1] > 0.0, "a constant feature must not divide by zero");
    }
}
