//! Training hyper-parameters. A train task may point at a JSON object with any
//! subset of these fields; the rest keep their defaults.

use serde::{Deserialize, Serialize};

use crate::data::Augment;
use crate::split::SplitFractions;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: u32,
    pub batch_size: usize,
    /// Peak learning rate of the warm-up + cosine schedule.
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Fraction of all steps spent warming up.
    pub warmup_fraction: f64,
    /// Final learning rate as a fraction of the peak.
    pub lr_floor: f64,
    /// Epochs without a better validation loss before stopping.
    pub patience: u32,
    /// An improvement smaller than this does not count.
    pub min_delta: f64,
    pub seed: u64,
    /// libtorch intra-op threads on the CPU (0 = libtorch's default).
    pub threads: usize,
    /// Samples held by the shuffle buffer.
    pub shuffle_buffer: usize,
    pub augment: Augment,
    pub fractions: SplitFractions,
    pub embedding_dim: usize,
    /// First-block channels of the `default` network.
    pub width: usize,
    /// Dropout before the classifier (the seed network uses 0.5).
    pub dropout: f64,
    pub projection_dim: usize,
    /// NT-Xent temperature.
    pub temperature: f64,
    /// Window geometry to assume when parts carry no front-end metadata.
    pub bands: usize,
    pub frames: usize,
    /// Only these genres become classes (all when empty).
    pub genres: Vec<String>,
    pub min_tracks_per_genre: usize,
    /// Stop an epoch after this many steps (0 = the whole epoch); for smoke runs.
    pub max_steps_per_epoch: u64,
    /// Also checkpoint every this many steps inside an epoch (0 = per epoch only).
    pub checkpoint_every_steps: u64,
    /// Also checkpoint when this long has passed since the last one inside an
    /// epoch (0 = off), so a kill loses at most this much of a long epoch.
    pub checkpoint_every_seconds: u64,
    /// Use fp16 autocast and loss scaling when training on CUDA.
    pub mixed_precision: bool,
    /// Checkpoints to keep besides `best` (older ones are deleted).
    pub keep_checkpoints: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 64,
            learning_rate: 1e-3,
            weight_decay: 0.01,
            warmup_fraction: 0.05,
            lr_floor: 0.02,
            patience: 5,
            min_delta: 1e-4,
            seed: 17,
            threads: 0,
            shuffle_buffer: 2048,
            augment: Augment {
                freq_mask: 12,
                time_mask: 24,
                max_shift: 32,
            },
            fractions: SplitFractions::default(),
            embedding_dim: 128,
            width: 32,
            dropout: 0.3,
            projection_dim: 128,
            temperature: 0.1,
            bands: 128,
            frames: 256,
            genres: Vec::new(),
            min_tracks_per_genre: 3,
            max_steps_per_epoch: 0,
            checkpoint_every_steps: 0,
            checkpoint_every_seconds: 600,
            mixed_precision: true,
            keep_checkpoints: 2,
        }
    }
}

impl TrainConfig {
    /// Parses a partial JSON object over the defaults.
    pub fn from_json(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(data)
    }

    /// Applies a partial JSON object over `self` (not over the built-in
    /// defaults): the worker's configured defaults, then the task's overrides.
    pub fn overlay_json(&self, data: &[u8]) -> Result<Self, serde_json::Error> {
        let mut base = serde_json::to_value(self)?;
        let overrides: serde_json::Value = serde_json::from_slice(data)?;
        merge(&mut base, overrides);
        serde_json::from_value(base)
    }
}

fn merge(base: &mut serde_json::Value, overrides: serde_json::Value) {
    match (base, overrides) {
        (serde_json::Value::Object(base), serde_json::Value::Object(overrides)) => {
            for (key, value) in overrides {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_json_keeps_defaults_and_rejects_typos() {
        let c = TrainConfig::from_json(
            br#"{"epochs": 3, "augment": {"freq_mask": 0, "time_mask": 0, "max_shift": 0}}"#,
        )
        .unwrap();
        assert_eq!(c.epochs, 3);
        assert_eq!(c.batch_size, TrainConfig::default().batch_size);
        assert!(TrainConfig::from_json(br#"{"epoch": 3}"#).is_err());
    }

    #[test]
    fn overlay_keeps_the_base_and_merges_nested_objects() {
        let base = TrainConfig {
            epochs: 7,
            batch_size: 16,
            ..TrainConfig::default()
        };
        let c = base
            .overlay_json(br#"{"batch_size": 8, "augment": {"time_mask": 0}}"#)
            .unwrap();
        assert_eq!((c.epochs, c.batch_size), (7, 8));
        assert_eq!(c.augment.time_mask, 0);
        assert_eq!(c.augment.freq_mask, base.augment.freq_mask);
        assert!(base.overlay_json(br#"{"epoch": 3}"#).is_err());
    }
}
