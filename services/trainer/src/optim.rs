//! AdamW with state that can be checkpointed, the learning-rate schedule and a
//! loss scaler for fp16 autocast on CUDA.
//!
//! tch's built-in optimisers keep their moments inside libtorch with no way to
//! read them back, so a resumed run would restart Adam from zero. This AdamW
//! keeps its moments as named tensors that go into every checkpoint.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::Tensor;

use crate::error::TrainError;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct ParamState {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// Decoupled-weight-decay Adam over the trainable variables of a store.
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<ParamState>,
    step: i64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("config", &self.config)
            .field("params", &self.params.len())
            .field("step", &self.step)
            .finish()
    }
}

impl AdamW {
    /// Tracks every trainable variable, in name order. Weight decay applies to
    /// matrices and kernels only, not to biases and batch-norm scales.
    pub fn new(vs: &VarStore, config: AdamWConfig) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let params = named
            .into_iter()
            .map(|(name, param)| {
                let decay = param.dim() >= 2;
                ParamState {
                    exp_avg: param.zeros_like().detach(),
                    exp_avg_sq: param.zeros_like().detach(),
                    name,
                    param,
                    decay,
                }
            })
            .collect();
        Self {
            config,
            params,
            step: 0,
        }
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> i64 {
        self.step
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut grad = p.param.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// Gradients of every parameter (undefined ones skipped).
    pub fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|p| p.param.grad())
            .filter(Tensor::defined)
            .collect()
    }

    /// One AdamW update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        self.step += 1;
        let bias1 = 1.0 - beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias1;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.param.grad();
                if !grad.defined() {
                    continue;
                }
                if p.decay && weight_decay > 0.0 {
                    let _ = p.param.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let _ = p.exp_avg.lerp_(&grad, 1.0 - beta1);
                let _ = p.exp_avg_sq.g_mul_scalar_(beta2);
                let _ = p.exp_avg_sq.addcmul_(&(&grad * (1.0 - beta2)), &grad);
                let denom = p.exp_avg_sq.sqrt() / bias2_sqrt + eps;
                let _ = p.param.addcdiv_(&(&p.exp_avg * -step_size), &denom);
            }
        });
    }

    /// The optimiser state as named tensors, for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for p in &self.params {
            out.push((
                format!("adamw.exp_avg.{}", p.name),
                p.exp_avg.shallow_clone(),
            ));
            out.push((
                format!("adamw.exp_avg_sq.{}", p.name),
                p.exp_avg_sq.shallow_clone(),
            ));
        }
        out.push(("adamw.step".to_owned(), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores state saved by [`AdamW::state`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        let missing = |name: &str| TrainError::BadArtefact {
            key: "checkpoint".into(),
            reason: format!("optimiser state {name} is missing"),
        };
        tch::no_grad(|| -> Result<(), TrainError> {
            for p in &mut self.params {
                for (prefix, target) in [
                    ("adamw.exp_avg", &mut p.exp_avg),
                    ("adamw.exp_avg_sq", &mut p.exp_avg_sq),
                ] {
                    let name = format!("{prefix}.{}", p.name);
                    let saved = tensors.get(&name).ok_or_else(|| missing(&name))?;
                    target.f_copy_(saved)?;
                }
            }
            Ok(())
        })?;
        let step = tensors
            .get("adamw.step")
            .ok_or_else(|| missing("adamw.step"))?;
        self.step = step.int64_value(&[0]);
        Ok(())
    }
}

/// Linear warm-up to the peak rate, then cosine decay to `floor × peak`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub floor: f64,
}

impl LrSchedule {
    pub fn at(&self, step: u64) -> f64 {
        if self.warmup_steps > 0 && step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps.min(step)) as f64 / span as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak * (self.floor + (1.0 - self.floor) * cosine)
    }
}

/// Dynamic loss scaling for fp16 autocast: scale the loss up so small
/// gradients survive fp16, skip steps whose gradients overflowed, and adapt
/// the scale. Disabled (scale 1, never skips) on the CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    pub enabled: bool,
    pub scale: f64,
    growth_interval: u32,
    good_steps: u32,
}

impl LossScaler {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            scale: if enabled { 65536.0 } else { 1.0 },
            growth_interval: 2000,
            good_steps: 0,
        }
    }

    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        if self.enabled {
            loss * self.scale
        } else {
            loss.shallow_clone()
        }
    }

    /// Divides the gradients by the scale; returns whether all are finite
    /// (the step may be taken) and updates the scale.
    pub fn unscale_and_update(&mut self, grads: &[Tensor]) -> bool {
        if !self.enabled {
            return true;
        }
        let mut finite = true;
        tch::no_grad(|| {
            for g in grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(1.0 / self.scale);
                if finite && g.isfinite().all().int64_value(&[]) == 0 {
                    finite = false;
                }
            }
        });
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = LrSchedule {
            peak: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            floor: 0.1,
        };
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert!((s.at(9) - 1.0).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        assert!((s.at(60) - 0.55).abs() < 1e-9);
        assert!((s.at(110) - 0.1).abs() < 1e-12);
        assert!((s.at(500) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn adamw_matches_a_hand_computed_first_step() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]));
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
        );
        let loss = (&w * Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2])).sum(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step(0.01);
        // First step: decay by (1 - lr·wd), then move by lr·sign(grad) (bias-corrected Adam).
        let got: Vec<f32> = Vec::try_from(w.flatten(0, -1)).unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) - 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn state_round_trips() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        (&w * &w).sum(Kind::Float).backward();
        opt.step(0.1);
        let saved: HashMap<String, Tensor> = opt
            .state()
            .into_iter()
            .map(|(k, t)| (k, t.copy()))
            .collect();
        let mut fresh = AdamW::new(&vs, AdamWConfig::default());
        fresh.load_state(&saved).unwrap();
        assert_eq!(fresh.steps(), 1);
        let a = &fresh.params[0].exp_avg_sq;
        assert!(
            a.eq_tensor(&opt.params[0].exp_avg_sq)
                .all()
                .int64_value(&[])
                != 0
        );
        assert!(fresh.load_state(&HashMap::new()).is_err());
    }

    #[test]
    fn scaler_skips_overflowed_steps_and_halves() {
        let mut s = LossScaler::new(true);
        let grads = [Tensor::from_slice(&[1.0f32, f32::INFINITY])];
        assert!(!s.unscale_and_update(&grads));
        assert_eq!(s.scale, 32768.0);
        let grads = [Tensor::from_slice(&[65536.0f32])];
        assert!(s.unscale_and_update(&grads));
        let cpu = LossScaler::new(false);
        assert_eq!(cpu.scale, 1.0);
    }
}
