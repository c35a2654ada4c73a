//! Train / validation / holdout split by track.
//!
//! Each track's side is fixed by a hash of its id alone, so adding tracks to a
//! catalogue never moves an old track to another side, and every window of a
//! track lands on the same side. The hash does not depend on the genre, so each
//! genre splits in the configured proportions (stratified in expectation); the
//! report records the actual counts per genre.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Holdout,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Validation => "validation",
            Self::Holdout => "holdout",
        }
    }
}

/// Fractions of tracks for validation and holdout; the rest trains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    pub validation: f64,
    pub holdout: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        Self {
            validation: 0.15,
            holdout: 0.15,
        }
    }
}

/// A uniform number in [0, 1) derived from the track id.
pub fn track_unit_hash(track_id: &str) -> f64 {
    let digest = Sha256::digest(track_id.as_bytes());
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(top) >> 11) as f64 / (1u64 << 53) as f64
}

/// The side of the split a track belongs to.
pub fn split_of(track_id: &str, fractions: SplitFractions) -> Split {
    let u = track_unit_hash(track_id);
    if u < fractions.holdout {
        Split::Holdout
    } else if u < fractions.holdout + fractions.validation {
        Split::Validation
    } else {
        Split::Train
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stable_and_close_to_the_fractions() {
        let f = SplitFractions::default();
        let mut counts = [0usize; 3];
        for i in 0..10_000 {
            let id = format!("track-{i}");
            let s = split_of(&id, f);
            assert_eq!(s, split_of(&id, f), "same id, same side");
            counts[s as usize] += 1;
        }
        assert!((6700..7300).contains(&counts[0]), "{counts:?}");
        assert!((1300..1700).contains(&counts[1]), "{counts:?}");
        assert!((1300..1700).contains(&counts[2]), "{counts:?}");
    }
}
