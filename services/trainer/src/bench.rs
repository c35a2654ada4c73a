//! Training throughput on synthetic windows, for `scripts/bench-trainer.sh`.
//!
//! One step is exactly what the training loop does per batch on the CPU: u8
//! windows to the device, the network's input preparation, forward, genre
//! cross-entropy (with the argmax count), backward, and the AdamW update.
//! `scripts/bench_torch_train.py` does the same in PyTorch with the same
//! shapes, so the two rates can be compared in one run.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::error::TrainError;
use crate::loss;
use crate::optim::{AdamW, AdamWConfig};
use deepcuts_model::network::{Architecture, ModelSpec, Network, Objective};

/// What to time.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub architecture: Architecture,
    pub bands: usize,
    pub frames: usize,
    pub batch_size: usize,
    pub classes: usize,
    pub warmup_steps: usize,
    pub steps: usize,
    pub seed: u64,
}

/// The measured rate.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub architecture: String,
    pub batch_size: usize,
    pub steps: usize,
    pub seconds: f64,
    pub windows_per_second: f64,
    pub threads: i32,
    pub device: String,
}

/// Times `steps` training steps after `warmup_steps` untimed ones.
pub fn train_throughput(spec: &BenchSpec, device: Device) -> Result<BenchResult, TrainError> {
    tch::manual_seed(spec.seed as i64);
    let model = ModelSpec {
        architecture: spec.architecture,
        objective: Objective::Genre,
        bands: spec.bands,
        frames: spec.frames,
        embedding_dim: 128,
        n_classes: spec.classes,
        width: 32,
        dropout: if spec.architecture == Architecture::Seed {
            0.5
        } else {
            0.3
        },
        projection_dim: 128,
    };
    let vs = VarStore::new(device);
    let network = Network::new(&vs.root(), &model)?;
    let mut optimizer = AdamW::new(&vs, AdamWConfig::default());
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let window_len = spec.bands * spec.frames;
    // A few distinct batches, reused, so data generation is not timed.
    let batches: Vec<(Vec<u8>, Vec<i64>)> = (0..4)
        .map(|_| {
            let pixels = (0..spec.batch_size * window_len)
                .map(|_| rng.random::<u8>())
                .collect();
            let labels = (0..spec.batch_size)
                .map(|_| rng.random_range(0..spec.classes as i64))
                .collect();
            (pixels, labels)
        })
        .collect();
    let step = |i: usize, optimizer: &mut AdamW| -> Result<(), TrainError> {
        let (pixels, labels) = &batches[i % batches.len()];
        optimizer.zero_grad();
        let windows = Tensor::from_slice(pixels)
            .view([
                spec.batch_size as i64,
                spec.bands as i64,
                spec.frames as i64,
            ])
            .to_device(device);
        let labels = Tensor::from_slice(labels).to_device(device);
        let input = network.prepare_input(&windows);
        let embedding = network.embed(&input, true);
        let logits = network
            .classify(&embedding, true)
            .ok_or_else(|| TrainError::Config("genre model without a classifier".into()))?;
        let (loss, _correct) = loss::genre_loss(&logits, &labels);
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::Config(format!(
                "benchmark diverged: loss {value}"
            )));
        }
        loss.backward();
        optimizer.step(1e-3);
        Ok(())
    };
    for i in 0..spec.warmup_steps {
        step(i, &mut optimizer)?;
    }
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    let started = Instant::now();
    for i in 0..spec.steps {
        step(i, &mut optimizer)?;
    }
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BenchResult {
        architecture: spec.architecture.as_str().to_owned(),
        batch_size: spec.batch_size,
        steps: spec.steps,
        seconds,
        windows_per_second: (spec.steps * spec.batch_size) as f64 / seconds.max(1e-9),
        threads: tch::get_num_threads(),
        device: format!("{device:?}"),
    })
}
