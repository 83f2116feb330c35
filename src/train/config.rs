//! `[train]`: optimizer, schedule, clipping, logging and checkpoint cadence.

use crate::config::{check, ConfigError, Validate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// AdamW, decoupled weight decay (PyTorch semantics).
    Adamw,
    /// SGD with momentum and coupled weight decay (PyTorch semantics).
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    /// Linear warmup then cosine decay to `min_lr_frac · lr`.
    Cosine,
    /// Linear warmup, constant, then a cosine decay to `min_lr_frac · lr` over the last
    /// `decay_steps` steps (warmup–stable–decay: the plateau phase keeps the full rate, the
    /// end settles the weights).
    ConstantThenCosine,
}

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps (default 1000).
    pub steps: u64,
    /// Sequences per batch (default 64).
    pub batch_size: usize,
    /// Peak learning rate (default 1e-3).
    pub lr: f64,
    /// adamw | sgd (default adamw).
    pub optimizer: OptimizerKind,
    /// AdamW β1 (default 0.9).
    pub beta1: f64,
    /// AdamW β2 (default 0.999).
    pub beta2: f64,
    /// AdamW ε (default 1e-8).
    pub eps: f64,
    /// SGD momentum (default 0.9).
    pub momentum: f64,
    /// Weight decay (default 0.01).
    pub weight_decay: f64,
    /// constant | cosine | constant_then_cosine (default cosine).
    pub schedule: ScheduleKind,
    /// `constant_then_cosine`: length of the final decay (default 0).
    #[serde(default)]
    pub decay_steps: u64,
    /// `constant_then_cosine`: start the decay early, at the first evaluation whose
    /// metric reaches a threshold; the run then ends `decay_steps` later (default none:
    /// the decay fills the last `decay_steps` of `steps`).
    #[serde(default)]
    pub decay_trigger: Option<DecayTrigger>,
    /// Linear warmup steps (default 0).
    pub warmup_steps: u64,
    /// Cosine floor as a fraction of lr (default 0.1).
    pub min_lr_frac: f64,
    /// Clip the global gradient norm to this value; 0 = off (default 1.0).
    pub clip_norm: f64,
    /// Log train metrics every n steps (default 10).
    pub log_every: u64,
    /// Run the task's evaluation every n steps; 0 = only at the end (default 100).
    pub eval_every: u64,
    /// Write a checkpoint every n steps; 0 = only at the end (default 0).
    pub checkpoint_every: u64,
    /// Split each batch into this many slices whose forward and backward passes run
    /// concurrently (data parallelism over cores); their gradients are summed in slice
    /// order, so results depend on `shards` but not on the thread count. Used by tasks
    /// that support it (`lm_loss_grads`); others ignore it (default 1).
    #[serde(default = "one")]
    pub shards: usize,
}

/// When a validation metric reaches `at_least`, the final decay starts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecayTrigger {
    /// A metric the task's evaluation reports (e.g. `val_solved`).
    pub metric: String,
    pub at_least: f64,
}

fn one() -> usize {
    1
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 64,
            lr: 1e-3,
            optimizer: OptimizerKind::Adamw,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            momentum: 0.9,
            weight_decay: 0.01,
            schedule: ScheduleKind::Cosine,
            decay_steps: 0,
            decay_trigger: None,
            warmup_steps: 0,
            min_lr_frac: 0.1,
            clip_norm: 1.0,
            log_every: 10,
            eval_every: 100,
            checkpoint_every: 0,
            shards: 1,
        }
    }
}

impl TrainConfig {
    /// Learning rate at 0-based `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        self.lr_at_with(step, None)
    }

    /// The last step of a run whose decay `decay_trigger` started after `decay_start`
    /// completed steps (`steps` when it has not fired).
    pub fn end_with(&self, decay_start: Option<u64>) -> u64 {
        decay_start.map_or(self.steps, |s| (s + self.decay_steps).min(self.steps))
    }

    /// Learning rate at 0-based `step` when the decay trigger fired after `decay_start`
    /// completed steps (None: the decay fills the last `decay_steps`).
    pub fn lr_at_with(&self, step: u64, decay_start: Option<u64>) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Cosine => {
                let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let floor = self.min_lr_frac * self.lr;
                floor + 0.5 * (self.lr - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            ScheduleKind::ConstantThenCosine => {
                let end = self.end_with(decay_start);
                let start = end.saturating_sub(self.decay_steps).max(self.warmup_steps);
                if step < start {
                    return self.lr;
                }
                let progress = ((step - start) as f64 / end.saturating_sub(start).max(1) as f64).min(1.0);
                let floor = self.min_lr_frac * self.lr;
                floor + 0.5 * (self.lr - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

impl Validate for TrainConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check(self.steps > 0, "train.steps", "must be > 0")?;
        check(self.batch_size > 0, "train.batch_size", "must be > 0")?;
        check(self.shards > 0 && self.shards <= self.batch_size, "train.shards", "must be in 1..=batch_size")?;
        check(self.lr > 0.0 && self.lr.is_finite(), "train.lr", "must be a finite number > 0")?;
        check((0.0..1.0).contains(&self.beta1), "train.beta1", "must be in [0, 1)")?;
        check((0.0..1.0).contains(&self.beta2), "train.beta2", "must be in [0, 1)")?;
        check(self.eps > 0.0, "train.eps", "must be > 0")?;
        check((0.0..1.0).contains(&self.momentum), "train.momentum", "must be in [0, 1)")?;
        check(self.weight_decay >= 0.0, "train.weight_decay", "must be ≥ 0")?;
        check((0.0..=1.0).contains(&self.min_lr_frac), "train.min_lr_frac", "must be in [0, 1]")?;
        check(self.clip_norm >= 0.0, "train.clip_norm", "must be ≥ 0 (0 = off)")?;
        check(self.log_every > 0, "train.log_every", "must be > 0")?;
        check(self.warmup_steps <= self.steps, "train.warmup_steps", "must be ≤ train.steps")?;
        check(self.decay_steps <= self.steps, "train.decay_steps", "must be ≤ train.steps")?;
        if let Some(t) = &self.decay_trigger {
            check(
                self.schedule == ScheduleKind::ConstantThenCosine && self.decay_steps > 0,
                "train.decay_trigger",
                "needs train.schedule = \"constant_then_cosine\" and train.decay_steps > 0",
            )?;
            check(!t.metric.is_empty(), "train.decay_trigger.metric", "must name an evaluation metric")?;
            check(t.at_least.is_finite(), "train.decay_trigger.at_least", "must be a finite number")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_then_cosine_decays_only_at_the_end() {
        let c = TrainConfig { steps: 100, warmup_steps: 10, decay_steps: 20, lr: 1.0, min_lr_frac: 0.1, schedule: ScheduleKind::ConstantThenCosine, ..Default::default() };
        assert!((c.lr_at(5) - 0.6).abs() < 1e-12);
        assert_eq!(c.lr_at(10), 1.0);
        assert_eq!(c.lr_at(79), 1.0);
        assert_eq!(c.lr_at(80), 1.0);
        assert!((c.lr_at(90) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(100) - 0.1).abs() < 1e-12);
        assert!(c.lr_at(95) < c.lr_at(85));
    }

    #[test]
    fn a_decay_trigger_needs_the_constant_then_cosine_schedule() {
        let trigger = Some(DecayTrigger { metric: "val_solved".into(), at_least: 0.5 });
        let bad = TrainConfig { decay_trigger: trigger.clone(), ..Default::default() };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("train.decay_trigger") && err.contains("constant_then_cosine"), "{err}");
        let good = TrainConfig { decay_trigger: trigger, schedule: ScheduleKind::ConstantThenCosine, decay_steps: 10, ..Default::default() };
        assert!(good.validate().is_ok());
    }

    #[test]
    fn warmup_then_cosine() {
        let c = TrainConfig { steps: 110, warmup_steps: 10, lr: 1.0, min_lr_frac: 0.0, ..Default::default() };
        assert!((c.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(60) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(110).abs() < 1e-12);
    }
}
