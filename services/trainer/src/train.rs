//! The training loop: resume from the last checkpoint, train epochs with early
//! stopping, evaluate the holdout, and write the model artefact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use tracing::{info, warn};

use crate::artifact::{self, ModelCard};
use crate::config::TrainConfig;
use crate::data::{
    self, Augment, Batch, BatchStream, DataIndex, IndexOptions, SampleMode, StreamSpec,
};
use crate::error::TrainError;
use crate::loss;
use crate::metrics::{self, EpochMetrics, EvalResult, HoldoutReport, TrainReport};
use crate::optim::{AdamW, AdamWConfig, LossScaler, LrSchedule};
use crate::split::Split;
use deepcuts_model::network::{Architecture, ModelSpec, Network, Objective};
use deepcuts_model::store::BlockingStore;

/// One training run, as a train task describes it.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// The job the run reports to (logs and events).
    pub job_id: String,
    pub model_id: String,
    pub architecture: Architecture,
    pub objective: Objective,
    /// Jobs whose windows and catalogues are the data.
    pub data_job_ids: Vec<String>,
    pub config: TrainConfig,
}

/// Hooks for progress reporting and fault injection.
pub trait Observer {
    /// Training is about to start at `epoch` (0-based) of `epochs`, with about
    /// `steps_per_epoch` steps each.
    fn on_start(&mut self, _epoch: u32, _epochs: u32, _steps_per_epoch: u64) {}
    fn on_step(&mut self, _epoch: u32, _step: u64, _loss: f64) {}
    fn on_epoch(&mut self, _metrics: &EpochMetrics) {}
    /// A checkpoint was written.
    fn on_checkpoint(&mut self, _key: &str) {}
    /// Whether a cancelled run may write a checkpoint at its position before
    /// it stops. False when another worker has taken the run over.
    fn checkpoint_on_cancel(&self) -> bool {
        true
    }
}

/// An observer that does nothing.
pub struct Silent;
impl Observer for Silent {}

/// The loop state stored in every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Position: the next step to run is `step` of `epoch`.
    pub epoch: u32,
    pub step: u64,
    pub global_step: u64,
    pub best_val_loss: Option<f64>,
    pub best_epoch: u32,
    pub epochs_without_improvement: u32,
    pub stopped_early: bool,
    pub history: Vec<EpochMetrics>,
    /// Partial sums of the epoch in progress (for a mid-epoch checkpoint).
    pub epoch_loss_sum: f64,
    pub epoch_correct: i64,
    pub epoch_rows: i64,
    pub loss_scale: f64,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub card: ModelCard,
    pub report: TrainReport,
    /// The checkpoint position the run resumed from, if any.
    pub resumed_from: Option<(u32, u64)>,
    /// The artefacts already existed; nothing was trained.
    pub already_done: bool,
}

fn mix_seed(seed: u64, epoch: u32, step: u64, salt: u64) -> u64 {
    // SplitMix64 finaliser over the packed position: distinct, well-spread seeds.
    let mut z =
        seed ^ (u64::from(epoch) << 40) ^ step.wrapping_mul(0x9E37_79B9) ^ salt.rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The device training runs on: the first CUDA device when there is one.
pub fn pick_device() -> Device {
    Device::cuda_if_available()
}

struct Run<'a> {
    store: &'a BlockingStore,
    request: &'a TrainRequest,
    index: DataIndex,
    device: Device,
    vs: VarStore,
    network: Network,
    mixed: bool,
}

/// Trains (or resumes training of) one model and writes its artefacts.
/// `cancel` stops the run between steps with [`TrainError::Cancelled`], after
/// writing a checkpoint at that step (unless the observer forbids it), so a
/// drained worker loses no work.
pub fn train(
    store: &BlockingStore,
    request: &TrainRequest,
    observer: &mut dyn Observer,
    cancel: &AtomicBool,
) -> Result<TrainOutcome, TrainError> {
    let config = &request.config;
    let model_id = request.model_id.as_str();
    if config.batch_size < 2 {
        return Err(TrainError::Config("batch_size must be at least 2".into()));
    }
    if config.threads > 0 {
        tch::set_num_threads(config.threads as i32);
    }

    // A redelivered task whose model is complete has nothing left to do.
    if let (Some(card), Some(report)) = (
        store.get_json::<ModelCard>(&artifact::card_key(model_id))?,
        store.get_json::<TrainReport>(&artifact::report_key(model_id))?,
    ) {
        info!(job_id = %request.job_id, model_id, "model already trained");
        return Ok(TrainOutcome {
            card,
            report,
            resumed_from: None,
            already_done: true,
        });
    }

    let index = match store.get_json::<DataIndex>(&artifact::data_index_key(model_id))? {
        Some(index) => index,
        None => {
            let options = IndexOptions {
                fractions: config.fractions,
                bands: config.bands,
                frames: config.frames,
                genres: config.genres.clone(),
                min_tracks_per_genre: config.min_tracks_per_genre,
            };
            let index = data::build_index(store, &request.data_job_ids, &options)?;
            store.put_json(&artifact::data_index_key(model_id), &index)?;
            index
        }
    };
    let labelled = request.objective == Objective::Genre;
    let train_windows = index.windows_in(Split::Train, labelled);
    if train_windows == 0 {
        return Err(TrainError::NoData(format!(
            "no training windows for the {} objective",
            request.objective.as_str()
        )));
    }
    if index.tracks_in(Split::Validation, labelled) == 0 {
        return Err(TrainError::NoData(
            "no validation tracks (the catalogue is too small to split)".into(),
        ));
    }

    let spec = ModelSpec {
        architecture: request.architecture,
        objective: request.objective,
        bands: index.bands,
        frames: index.frames,
        embedding_dim: config.embedding_dim,
        n_classes: if labelled { index.classes.len() } else { 0 },
        width: config.width,
        dropout: if request.architecture == Architecture::Seed {
            0.5
        } else {
            config.dropout
        },
        projection_dim: config.projection_dim,
    };
    let device = pick_device();
    tch::manual_seed(config.seed as i64);
    let vs = VarStore::new(device);
    let network = Network::new(&vs.root(), &spec)?;
    let mixed = config.mixed_precision && device.is_cuda();
    let run = Run {
        store,
        request,
        index,
        device,
        vs,
        network,
        mixed,
    };

    let mut optimizer = AdamW::new(
        &run.vs,
        AdamWConfig {
            weight_decay: config.weight_decay,
            ..Default::default()
        },
    );
    let mut state = LoopState {
        loss_scale: 1.0,
        ..Default::default()
    };
    let mut resumed_from = None;
    let checkpoints = latest_checkpoint(store, model_id)?;
    if let Some((key, position)) = checkpoints {
        let data = store.get(&key)?;
        let (tensors, metadata) = artifact::from_safetensors(&key, &data)?;
        artifact::load_variables(&key, &run.vs, &tensors, "model.")?;
        optimizer.load_state(&tensors)?;
        state = serde_json::from_str(metadata.get("state").ok_or_else(|| {
            TrainError::BadArtefact {
                key: key.clone(),
                reason: "no loop state in the checkpoint".into(),
            }
        })?)?;
        resumed_from = Some(position);
        info!(job_id = %request.job_id, model_id, checkpoint = %key, epoch = state.epoch, step = state.step, "resuming from checkpoint");
    }
    let mut scaler = LossScaler::new(mixed);
    if mixed && state.loss_scale > 1.0 {
        scaler.scale = state.loss_scale;
    }

    let samples_per_epoch = if request.objective == Objective::Contrastive {
        // About one pair per two windows of a track.
        run.index
            .tracks
            .iter()
            .filter(|t| t.split == Split::Train)
            .map(|t| u64::from(t.windows.div_ceil(2)))
            .sum()
    } else {
        train_windows
    };
    let mut steps_per_epoch = (samples_per_epoch / config.batch_size as u64).max(1);
    if config.max_steps_per_epoch > 0 {
        steps_per_epoch = steps_per_epoch.min(config.max_steps_per_epoch);
    }
    let total_steps = steps_per_epoch * u64::from(config.epochs);
    let schedule = LrSchedule {
        peak: config.learning_rate,
        warmup_steps: (total_steps as f64 * config.warmup_fraction).round() as u64,
        total_steps,
        floor: config.lr_floor,
    };
    observer.on_start(state.epoch, config.epochs, steps_per_epoch);

    while state.epoch < config.epochs && !state.stopped_early {
        let epoch = state.epoch;
        let started = Instant::now();
        let spec = StreamSpec {
            split: Split::Train,
            mode: if request.objective == Objective::Contrastive {
                SampleMode::Pairs
            } else {
                SampleMode::LabelledWindows
            },
            batch_size: config.batch_size,
            shuffle: Some((mix_seed(config.seed, epoch, 0, 1), config.shuffle_buffer)),
            augment: config.augment,
            drop_last: true,
        };
        let mut stream = BatchStream::open(store, &run.index, spec);
        // A mid-epoch resume replays the epoch's deterministic order up to its position.
        for _ in 0..state.step {
            if let Some(batch) = stream.next() {
                batch?;
            }
        }
        let mut rows_done = 0u64;
        let mut last_checkpoint = Instant::now();
        for batch in stream {
            if config.max_steps_per_epoch > 0 && state.step >= config.max_steps_per_epoch {
                break;
            }
            if cancel.load(Ordering::Relaxed) {
                if observer.checkpoint_on_cancel() {
                    state.loss_scale = scaler.scale;
                    let key = run.save_checkpoint(&optimizer, &state)?;
                    observer.on_checkpoint(&key);
                    info!(job_id = %request.job_id, model_id, epoch = state.epoch, step = state.step, checkpoint = %key, "training cancelled; checkpoint written");
                }
                return Err(TrainError::Cancelled);
            }
            let batch = batch?;
            tch::manual_seed(mix_seed(config.seed, epoch, state.step, 2) as i64);
            let lr = schedule.at(state.global_step);
            let (loss, correct) = run.train_step(&batch, &mut optimizer, &mut scaler, lr)?;
            state.epoch_loss_sum += loss * batch.rows as f64;
            state.epoch_correct += correct;
            state.epoch_rows += batch.rows as i64;
            rows_done += batch.rows as u64;
            state.step += 1;
            state.global_step += 1;
            observer.on_step(epoch, state.step, loss);
            let by_steps = config.checkpoint_every_steps > 0
                && state.step.is_multiple_of(config.checkpoint_every_steps);
            let by_time = config.checkpoint_every_seconds > 0
                && last_checkpoint.elapsed().as_secs() >= config.checkpoint_every_seconds;
            if by_steps || by_time {
                last_checkpoint = Instant::now();
                state.loss_scale = scaler.scale;
                let key = run.save_checkpoint(&optimizer, &state)?;
                observer.on_checkpoint(&key);
            }
        }
        if state.epoch_rows == 0 {
            return Err(TrainError::NoData(format!(
                "epoch {epoch} produced no full batch of {} samples; lower batch_size",
                config.batch_size
            )));
        }
        let seconds = started.elapsed().as_secs_f64();
        let val = run.evaluate(Split::Validation, false)?;
        let mut metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss: state.epoch_loss_sum / state.epoch_rows as f64,
            train_accuracy: state.epoch_correct as f64 / state.epoch_rows as f64,
            val_loss: val.loss,
            val_window_accuracy: val.window_accuracy,
            val_track_accuracy: val.track_accuracy,
            learning_rate: schedule.at(state.global_step.saturating_sub(1)),
            seconds,
            windows_per_second: rows_done as f64 / seconds.max(1e-9),
            improved: false,
        };
        let improved = state
            .best_val_loss
            .is_none_or(|best| val.loss < best - config.min_delta);
        if improved {
            state.best_val_loss = Some(val.loss);
            state.best_epoch = epoch + 1;
            state.epochs_without_improvement = 0;
            let weights = artifact::to_safetensors(&artifact::variables(&run.vs), HashMap::new())?;
            store.put(&artifact::best_weights_key(model_id), weights)?;
        } else {
            state.epochs_without_improvement += 1;
        }
        metrics.improved = improved;
        info!(
            job_id = %request.job_id, model_id, epoch = epoch + 1,
            train_loss = metrics.train_loss, val_loss = metrics.val_loss,
            val_window_accuracy = metrics.val_window_accuracy, val_track_accuracy = ?metrics.val_track_accuracy,
            windows_per_second = metrics.windows_per_second, "epoch finished"
        );
        state.history.push(metrics.clone());
        state.epoch += 1;
        state.step = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_correct = 0;
        state.epoch_rows = 0;
        state.loss_scale = scaler.scale;
        state.stopped_early = state.epochs_without_improvement >= config.patience.max(1);
        let key = run.save_checkpoint(&optimizer, &state)?;
        observer.on_checkpoint(&key);
        observer.on_epoch(&metrics);
    }

    // The final model is the one with the best validation loss.
    let best_key = artifact::best_weights_key(model_id);
    let best = store.get(&best_key)?;
    let (tensors, _) = artifact::from_safetensors(&best_key, &best)?;
    artifact::load_variables(&best_key, &run.vs, &tensors, "")?;
    let holdout = run.evaluate(Split::Holdout, true)?;
    let holdout_report = HoldoutReport::from_eval(&run.index, request.objective, &holdout);
    let report = TrainReport {
        model_id: model_id.to_owned(),
        job_id: request.job_id.clone(),
        spec: run.network.spec().clone(),
        classes: run.index.classes.clone(),
        split: metrics::split_counts(&run.index, labelled),
        epochs: state.history.clone(),
        best_epoch: state.best_epoch,
        stopped_early: state.stopped_early,
        resumed_from_epoch: resumed_from.map(|(e, _)| e),
        device: format!("{:?}", run.device),
        holdout: holdout_report,
    };
    store.put_json(&artifact::report_key(model_id), &report)?;
    if let Some(confusion) = &report.holdout.confusion {
        match metrics::confusion_png(&run.index.classes, confusion) {
            Ok(png) => store.put(&artifact::confusion_png_key(model_id), png.into())?,
            Err(err) => {
                warn!(job_id = %request.job_id, model_id, error = %err, "confusion matrix image not drawn")
            }
        }
    }
    let weights = artifact::to_safetensors(&artifact::variables(&run.vs), HashMap::new())?;
    store.put(&artifact::weights_key(model_id), weights)?;
    let card = ModelCard {
        model_id: model_id.to_owned(),
        spec: run.network.spec().clone(),
        frontend: run.index.frontend.clone(),
        classes: run.index.classes.clone(),
        embedding_dim: config.embedding_dim,
        data_job_ids: request.data_job_ids.clone(),
        trained_epochs: state.epoch,
        best_epoch: state.best_epoch,
        seed: config.seed,
        device: format!("{:?}", run.device),
        metrics: serde_json::to_value(report.holdout.summary())?,
        weights_key: artifact::weights_key(model_id),
        created_at_unix_ms: deepcuts_core::now_unix_ms(),
    };
    // The card goes last: its presence means the model is complete.
    store.put_json(&artifact::card_key(model_id), &card)?;
    info!(job_id = %request.job_id, model_id, "model written");
    Ok(TrainOutcome {
        card,
        report,
        resumed_from,
        already_done: false,
    })
}

/// A checkpoint's key and `(epoch, step)` position.
type CheckpointRef = (String, (u32, u64));

fn latest_checkpoint(
    store: &BlockingStore,
    model_id: &str,
) -> Result<Option<CheckpointRef>, TrainError> {
    let mut found: Vec<CheckpointRef> = store
        .list(&artifact::checkpoints_prefix(model_id))?
        .into_iter()
        .filter_map(|k| artifact::parse_checkpoint_key(&k).map(|p| (k, p)))
        .collect();
    found.sort_by_key(|(_, p)| *p);
    Ok(found.pop())
}

impl Run<'_> {
    fn upload(&self, batch: &Batch) -> Tensor {
        Tensor::from_slice(&batch.pixels)
            .view([
                batch.rows as i64,
                self.index.bands as i64,
                self.index.frames as i64,
            ])
            .to_device(self.device)
    }

    fn labels(&self, batch: &Batch) -> Tensor {
        let labels: Vec<i64> = batch
            .tracks
            .iter()
            .map(|&t| i64::from(self.index.tracks[t as usize].label.unwrap_or(0)))
            .collect();
        Tensor::from_slice(&labels).to_device(self.device)
    }

    fn track_tensor(&self, batch: &Batch) -> Tensor {
        let tracks: Vec<i64> = batch.tracks.iter().map(|&t| i64::from(t)).collect();
        Tensor::from_slice(&tracks).to_device(self.device)
    }

    /// Loss and correct count of a batch, with the network in `train` mode.
    fn forward(&self, batch: &Batch, train: bool) -> (Tensor, i64) {
        let input = self.network.prepare_input(&self.upload(batch));
        tch::autocast(self.mixed, || {
            let embedding = self.network.embed(&input, train);
            match self.request.objective {
                Objective::Genre => {
                    let logits = self
                        .network
                        .classify(&embedding, train)
                        .expect("genre model has a classifier");
                    loss::genre_loss(&logits, &self.labels(batch))
                }
                Objective::Contrastive => {
                    let z = self
                        .network
                        .project(&embedding)
                        .expect("contrastive model has a projection head");
                    loss::nt_xent(
                        &z,
                        &self.track_tensor(batch),
                        self.request.config.temperature,
                    )
                }
            }
        })
    }

    fn train_step(
        &self,
        batch: &Batch,
        optimizer: &mut AdamW,
        scaler: &mut LossScaler,
        lr: f64,
    ) -> Result<(f64, i64), TrainError> {
        optimizer.zero_grad();
        let (loss, correct) = self.forward(batch, true);
        let value = loss.double_value(&[]);
        if !value.is_finite() && !scaler.enabled {
            return Err(TrainError::Config(format!(
                "training diverged (loss {value}); lower the learning rate"
            )));
        }
        scaler.scale_loss(&loss).backward();
        if scaler.unscale_and_update(&optimizer.grads()) {
            optimizer.step(lr);
        }
        Ok((value, correct))
    }

    fn save_checkpoint(&self, optimizer: &AdamW, state: &LoopState) -> Result<String, TrainError> {
        let model_id = &self.request.model_id;
        let mut tensors: Vec<(String, Tensor)> = artifact::variables(&self.vs)
            .into_iter()
            .map(|(n, t)| (format!("model.{n}"), t))
            .collect();
        tensors.extend(optimizer.state());
        let metadata = HashMap::from([("state".to_owned(), serde_json::to_string(state)?)]);
        let key = artifact::checkpoint_key(model_id, state.epoch, state.step);
        self.store
            .put(&key, artifact::to_safetensors(&tensors, metadata)?)?;
        // Keep the newest few; older checkpoints only cost storage.
        let mut all: Vec<String> = self
            .store
            .list(&artifact::checkpoints_prefix(model_id))?
            .into_iter()
            .filter(|k| artifact::parse_checkpoint_key(k).is_some())
            .collect();
        all.sort();
        let keep = self.request.config.keep_checkpoints.max(1);
        if all.len() > keep {
            for old in &all[..all.len() - keep] {
                self.store.delete(old)?;
            }
        }
        Ok(key)
    }

    /// Evaluates a split in inference mode. With `full`, also collects what
    /// the holdout report needs (confusion matrix, retrieval embeddings).
    fn evaluate(&self, split: Split, full: bool) -> Result<EvalResult, TrainError> {
        let _guard = tch::no_grad_guard();
        let config = &self.request.config;
        let mut result = EvalResult::new(self.index.classes.len());
        match self.request.objective {
            Objective::Genre => {
                let spec = StreamSpec {
                    split,
                    mode: SampleMode::LabelledWindows,
                    batch_size: config.batch_size,
                    shuffle: None,
                    augment: Augment::none(),
                    drop_last: false,
                };
                for batch in BatchStream::open(self.store, &self.index, spec) {
                    let batch = batch?;
                    let input = self.network.prepare_input(&self.upload(&batch));
                    let logits = tch::autocast(self.mixed, || {
                        let e = self.network.embed(&input, false);
                        self.network
                            .classify(&e, false)
                            .expect("genre model has a classifier")
                    })
                    .to_kind(Kind::Float);
                    let labels = self.labels(&batch);
                    let (loss, correct) = loss::genre_loss(&logits, &labels);
                    let probs: Vec<f32> = Vec::try_from(
                        logits
                            .softmax(1, Kind::Float)
                            .to_device(Device::Cpu)
                            .flatten(0, -1),
                    )?;
                    result.add_genre_batch(
                        &self.index,
                        &batch.tracks,
                        &probs,
                        loss.double_value(&[]),
                        correct,
                    );
                }
            }
            Objective::Contrastive => {
                let spec = StreamSpec {
                    split,
                    mode: SampleMode::Pairs,
                    batch_size: config.batch_size,
                    shuffle: None,
                    augment: Augment::none(),
                    drop_last: false,
                };
                for batch in BatchStream::open(self.store, &self.index, spec) {
                    let batch = batch?;
                    if batch.rows < 4 {
                        continue; // one pair has no negatives
                    }
                    let (loss, correct) = self.forward(&batch, false);
                    result.add_pair_batch(batch.rows, loss.double_value(&[]), correct);
                }
                if full {
                    let spec = StreamSpec {
                        split,
                        mode: SampleMode::AllWindows,
                        batch_size: config.batch_size,
                        shuffle: None,
                        augment: Augment::none(),
                        drop_last: false,
                    };
                    for batch in BatchStream::open(self.store, &self.index, spec) {
                        let batch = batch?;
                        let input = self.network.prepare_input(&self.upload(&batch));
                        let e = tch::autocast(self.mixed, || self.network.embed(&input, false))
                            .to_kind(Kind::Float);
                        let d = e.size()[1] as usize;
                        let flat: Vec<f32> =
                            Vec::try_from(e.to_device(Device::Cpu).flatten(0, -1))?;
                        for (row, chunk) in flat.chunks_exact(d).enumerate() {
                            result.add_window_embedding(
                                batch.tracks[row],
                                batch.window_index[row],
                                chunk,
                            );
                        }
                    }
                }
            }
        }
        Ok(result)
    }
}
