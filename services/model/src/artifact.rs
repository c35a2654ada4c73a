//! The model artefact in storage, as safetensors plus JSON.
//!
//! A finished model is `models/<model_id>/model.safetensors` (the weights,
//! named as [`Network`] names its variables) and `models/<model_id>/model.json`
//! (the [`ModelCard`]). The trainer keeps its checkpoints and report beside
//! them; readers need only these two.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use deepcuts_core::keys;
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::ModelError;
use crate::network::{ModelSpec, Network};
use crate::store::BlockingStore;

pub fn weights_key(model_id: &str) -> String {
    format!("{}model.safetensors", keys::model_dir(model_id))
}
/// The card is written last: its presence means the model is complete.
pub fn card_key(model_id: &str) -> String {
    format!("{}model.json", keys::model_dir(model_id))
}

/// The model card: everything a reader of the weights needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub model_id: String,
    pub spec: ModelSpec,
    /// The transcoder's front-end config the windows came from.
    pub frontend: Option<serde_json::Value>,
    pub classes: Vec<String>,
    pub embedding_dim: usize,
    pub data_job_ids: Vec<String>,
    pub trained_epochs: u32,
    pub best_epoch: u32,
    pub seed: u64,
    pub device: String,
    /// Holdout metrics (the report's summary).
    pub metrics: serde_json::Value,
    pub weights_key: String,
    pub created_at_unix_ms: u64,
}

struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn raw(tensor: &Tensor) -> Result<RawTensor, ModelError> {
    let t = tensor.detach().to_device(Device::Cpu).contiguous();
    let dtype = match t.kind() {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        other => {
            return Err(ModelError::Config(format!(
                "cannot store a {other:?} tensor"
            )))
        }
    };
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(RawTensor {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Serialises named tensors (and string metadata) to safetensors bytes.
pub fn to_safetensors(
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<Bytes, ModelError> {
    let raws = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), raw(t)?)))
        .collect::<Result<Vec<_>, ModelError>>()?;
    let views = raws.iter().map(|(n, r)| (n.clone(), r));
    let data = safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| ModelError::Config(format!("safetensors encoding failed: {e:?}")))?;
    Ok(Bytes::from(data))
}

/// Tensors by name.
pub type NamedTensors = HashMap<String, Tensor>;

/// Parses safetensors bytes into CPU tensors and the metadata.
pub fn from_safetensors(
    key: &str,
    data: &[u8],
) -> Result<(NamedTensors, HashMap<String, String>), ModelError> {
    let bad = |reason: String| ModelError::BadArtefact {
        key: key.to_owned(),
        reason,
    };
    let (_, header) = SafeTensors::read_metadata(data).map_err(|e| bad(format!("{e:?}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let parsed = SafeTensors::deserialize(data).map_err(|e| bad(format!("{e:?}")))?;
    let mut out = HashMap::new();
    for (name, view) in parsed.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            other => {
                return Err(bad(format!(
                    "tensor {name} has unsupported dtype {other:?}"
                )))
            }
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        out.insert(name, Tensor::f_from_data_size(view.data(), &shape, kind)?);
    }
    Ok((out, metadata))
}

/// The variables of a store (weights and batch-norm statistics), by name.
pub fn variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Copies saved tensors named `prefix + var` into the store's variables.
pub fn load_variables(
    key: &str,
    vs: &VarStore,
    saved: &HashMap<String, Tensor>,
    prefix: &str,
) -> Result<(), ModelError> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let full = format!("{prefix}{name}");
            let value = saved.get(&full).ok_or_else(|| ModelError::BadArtefact {
                key: key.to_owned(),
                reason: format!("variable {full} is missing"),
            })?;
            if value.size() != var.size() {
                return Err(ModelError::BadArtefact {
                    key: key.to_owned(),
                    reason: format!(
                        "variable {full} has shape {:?}, the model expects {:?}",
                        value.size(),
                        var.size()
                    ),
                });
            }
            var.f_copy_(value)?;
        }
        Ok(())
    })
}

/// A trained model loaded for inference.
#[derive(Debug)]
pub struct LoadedModel {
    pub card: ModelCard,
    pub vs: VarStore,
    pub network: Network,
}

/// Loads `models/<id>/model.json` and its weights onto `device`.
pub fn load_model(
    store: &BlockingStore,
    model_id: &str,
    device: Device,
) -> Result<LoadedModel, ModelError> {
    let key = card_key(model_id);
    let card: ModelCard = store
        .get_json(&key)?
        .ok_or_else(|| ModelError::BadArtefact {
            key: key.clone(),
            reason: "no model card; has the model finished training?".into(),
        })?;
    let data = store.get(&card.weights_key)?;
    let mut vs = VarStore::new(device);
    let network = Network::new(&vs.root(), &card.spec)?;
    let (tensors, _) = from_safetensors(&card.weights_key, &data)?;
    load_variables(&card.weights_key, &vs, &tensors, "")?;
    vs.freeze();
    Ok(LoadedModel { card, vs, network })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_keeps_values_and_metadata() {
        let t = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 4.0]).view([2, 2]);
        let s = Tensor::from_slice(&[7i64]);
        let meta = HashMap::from([("state".to_owned(), "{\"epoch\":3}".to_owned())]);
        let bytes =
            to_safetensors(&[("a".into(), t.shallow_clone()), ("b".into(), s)], meta).unwrap();
        let (back, meta) = from_safetensors("k", &bytes).unwrap();
        assert!(back["a"].eq_tensor(&t).all().int64_value(&[]) != 0);
        assert_eq!(back["b"].int64_value(&[0]), 7);
        assert_eq!(meta["state"], "{\"epoch\":3}");
        assert!(from_safetensors("k", b"not a safetensors file").is_err());
    }
}
