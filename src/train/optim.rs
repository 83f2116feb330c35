//! AdamW and SGD over a `Params` store, through the fused update kernels;
//! global-norm gradient clipping. State is kept per parameter name so it can
//! be checkpointed and restored exactly.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use super::config::{OptimizerKind, TrainConfig};
use super::error::TrainError;
use crate::nn::ops::{self, AdamWHyper, SgdHyper};

/// Optimizer state: first (and second) moments per parameter, and the step count.
#[derive(Debug, Clone, Default)]
pub struct Optimizer {
    pub kind: Option<OptimizerKind>,
    /// AdamW m, or the SGD momentum buffer.
    pub m: BTreeMap<String, Vec<f32>>,
    /// AdamW v (empty for SGD).
    pub v: BTreeMap<String, Vec<f32>>,
    /// Updates applied so far.
    pub t: u64,
}

/// Result of clipping: the pre-clip norm and the factor applied.
pub struct ClipInfo {
    pub norm: f64,
    pub scale: f64,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind) -> Self {
        Self { kind: Some(kind), ..Self::default() }
    }

    /// Global L2 norm of all gradients (fixed order: sorted names); errors on
    /// the first non-finite parameter gradient.
    pub fn grad_norm(vars: &[(String, Var)], grads: &GradStore, step: u64) -> Result<f64, TrainError> {
        let mut total = 0.0f64;
        for (name, var) in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let s = ops::sum_sq(g)?;
                if !s.is_finite() {
                    return Err(TrainError::NonFiniteGrad { step, value: s.sqrt(), param: name.clone() });
                }
                total += s;
            }
        }
        Ok(total.sqrt())
    }

    /// One update with learning rate `lr`; gradients are scaled by `grad_scale` (clipping).
    pub fn step(
        &mut self,
        vars: &[(String, Var)],
        grads: &GradStore,
        lr: f64,
        grad_scale: f64,
        cfg: &TrainConfig,
    ) -> Result<(), TrainError> {
        self.t += 1;
        let kind = *self.kind.get_or_insert(cfg.optimizer);
        for (name, var) in vars {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let g = if grad_scale != 1.0 { (g * grad_scale)? } else { g.clone() };
            let n = var.elem_count();
            let m = self.m.entry(name.clone()).or_insert_with(|| vec![0.0; n]);
            match kind {
                OptimizerKind::Adamw => {
                    let v = self.v.entry(name.clone()).or_insert_with(|| vec![0.0; n]);
                    let h = AdamWHyper {
                        lr,
                        beta1: cfg.beta1,
                        beta2: cfg.beta2,
                        eps: cfg.eps,
                        weight_decay: cfg.weight_decay,
                        step: self.t,
                    };
                    ops::adamw_update(var, &g, m, v, &h)?;
                }
                OptimizerKind::Sgd => {
                    let h = SgdHyper { lr, momentum: cfg.momentum, weight_decay: cfg.weight_decay };
                    ops::sgd_update(var, &g, m, &h)?;
                }
            }
        }
        Ok(())
    }

    /// State as named tensors (`m.{name}`, `v.{name}`) for a checkpoint.
    pub fn state_tensors(&self, device: &Device) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (prefix, map) in [("m", &self.m), ("v", &self.v)] {
            for (name, data) in map {
                out.push((format!("{prefix}.{name}"), Tensor::from_slice(data, data.len(), device)?));
            }
        }
        Ok(out)
    }

    /// Rebuild from `state_tensors` output.
    pub fn from_state(kind: OptimizerKind, t: u64, tensors: &BTreeMap<String, Tensor>) -> candle_core::Result<Self> {
        let mut opt = Self::new(kind);
        opt.t = t;
        for (key, tensor) in tensors {
            let data: Vec<f32> = tensor.flatten_all()?.to_vec1()?;
            if let Some(name) = key.strip_prefix("m.") {
                opt.m.insert(name.to_string(), data);
            } else if let Some(name) = key.strip_prefix("v.") {
                opt.v.insert(name.to_string(), data);
            }
        }
        Ok(opt)
    }
}
