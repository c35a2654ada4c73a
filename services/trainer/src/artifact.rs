//! The trainer's artefacts in storage, beside the model artefact itself
//! (weights and card, see [`deepcuts_model::artifact`], re-exported here).
//!
//! Layout under `models/<model_id>/`:
//! - `data_index.json`: the parts, classes and split the run uses;
//! - `checkpoints/pos=e<epoch>s<step>.safetensors`: weights, AdamW moments and
//!   the loop state (JSON in the safetensors metadata), one per epoch;
//! - `checkpoints/best.safetensors`: weights with the lowest validation loss;
//! - `model.safetensors` + `model.json` (the card), `report.json`, `confusion.png`.

use deepcuts_core::keys;

pub use deepcuts_model::artifact::{
    card_key, from_safetensors, load_model, load_variables, to_safetensors, variables, weights_key,
    LoadedModel, ModelCard, NamedTensors,
};

pub fn data_index_key(model_id: &str) -> String {
    format!("{}data_index.json", keys::model_dir(model_id))
}
pub fn checkpoints_prefix(model_id: &str) -> String {
    format!("{}checkpoints/", keys::model_dir(model_id))
}
/// Checkpoint holding the state before step `step` of epoch `epoch` (both 0-based).
pub fn checkpoint_key(model_id: &str, epoch: u32, step: u64) -> String {
    format!(
        "{}pos=e{epoch:04}s{step:010}.safetensors",
        checkpoints_prefix(model_id)
    )
}
pub fn best_weights_key(model_id: &str) -> String {
    format!("{}best.safetensors", checkpoints_prefix(model_id))
}
pub fn report_key(model_id: &str) -> String {
    format!("{}report.json", keys::model_dir(model_id))
}
pub fn confusion_png_key(model_id: &str) -> String {
    format!("{}confusion.png", keys::model_dir(model_id))
}
/// A durable marker that a worker has claimed the train task (see the worker docs).
pub fn claim_key(model_id: &str) -> String {
    format!("{}claim.json", keys::model_dir(model_id))
}

/// `(epoch, step)` of a checkpoint key, `None` for other keys.
pub fn parse_checkpoint_key(key: &str) -> Option<(u32, u64)> {
    let name = key
        .rsplit('/')
        .next()?
        .strip_prefix("pos=e")?
        .strip_suffix(".safetensors")?;
    let (epoch, step) = name.split_once('s')?;
    Some((epoch.parse().ok()?, step.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_keys_sort_in_training_order_and_parse_back() {
        let a = checkpoint_key("m", 2, 0);
        let b = checkpoint_key("m", 2, 15);
        let c = checkpoint_key("m", 10, 0);
        assert!(a < b && b < c);
        assert_eq!(parse_checkpoint_key(&b), Some((2, 15)));
        assert_eq!(parse_checkpoint_key(&best_weights_key("m")), None);
    }
}
