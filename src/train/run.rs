//! `train::run`: the loop every experiment uses, in nanoGPT's order:
//! lr → eval/checkpoint → forward/backward → clip → step → log.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{Checkpoint, Manifest, RngState};
use super::config::{ScheduleKind, TrainConfig};
use super::error::TrainError;
use super::metrics::{Metrics, MetricsSink};
use super::optim::Optimizer;
use crate::nn::Params;
use crate::util::progress::Progress;

/// What an experiment supplies to the loop.
pub trait Task {
    /// The model's parameters (trainable ones are optimised).
    fn params(&self) -> &Params;
    /// Loss on a fresh training batch drawn from `rng`, plus extra metrics.
    fn train_loss(&mut self, step: u64, rng: &mut ChaCha8Rng) -> candle_core::Result<(Tensor, Metrics)>;
    /// Loss value and gradients on a fresh training batch. The default backpropagates
    /// `train_loss`; tasks override it to compute the batch in slices on several cores
    /// (`lm_task::lm_loss_grads`).
    fn train_grads(&mut self, step: u64, rng: &mut ChaCha8Rng) -> candle_core::Result<(f64, GradStore, Metrics)> {
        let (loss, metrics) = self.train_loss(step, rng)?;
        let (value, grads) = backprop(&loss)?;
        Ok((value, grads, metrics))
    }
    /// Evaluation and probes after `step` completed steps.
    fn evaluate(&mut self, step: u64) -> candle_core::Result<Metrics>;
    /// State the task changes while it trains (beyond the parameters and the data RNG),
    /// saved in every checkpoint so that a resumed run continues exactly (default: none).
    fn state(&self) -> Option<serde_json::Value> {
        None
    }
    /// Restore what `state` saved (Err: why the saved state does not fit this task).
    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    /// Whether to evaluate after `step` completed steps (default: every `eval_every`).
    fn eval_due(&self, step: u64, cfg: &TrainConfig) -> bool {
        cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every)
    }
}

/// The value of a scalar loss and its gradients (no backward pass for a non-finite loss:
/// the loop reports it).
pub fn backprop(loss: &Tensor) -> candle_core::Result<(f64, GradStore)> {
    let value = loss.to_scalar::<f32>()? as f64;
    Ok((value, if value.is_finite() { loss.backward()? } else { GradStore::default() }))
}

/// Where and how to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run directory (`metrics.jsonl`, `checkpoints/`); None = in memory only.
    pub dir: Option<PathBuf>,
    /// Seed of the data RNG.
    pub seed: u64,
    /// Continue from the latest checkpoint in `dir`.
    pub resume: bool,
    /// The resolved config text stored in checkpoints.
    pub config_text: String,
    /// No progress output.
    pub quiet: bool,
    /// Stop (with a checkpoint) after this many completed steps, as if
    /// interrupted; `--resume` continues the same schedule.
    pub stop_after: Option<u64>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub final_loss: f64,
    pub seconds: f64,
    pub last_eval: Metrics,
}

/// Train `task` for `cfg.steps` steps.
pub fn run(task: &mut dyn Task, cfg: &TrainConfig, opts: &RunOptions, sink: &mut MetricsSink) -> Result<TrainSummary, TrainError> {
    let vars = task.params().trainable();
    let ckpt_root = opts.dir.as_ref().map(|d| d.join("checkpoints"));
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut opt = Optimizer::new(cfg.optimizer);
    let mut start = 0;
    let mut decay_start = None;
    if opts.resume {
        if let Some(ck) = ckpt_root.as_ref().map(|r| Checkpoint::latest(r)).transpose()?.flatten() {
            ck.load_params(task.params())?;
            opt = ck.load_optimizer(task.params().device())?;
            rng = ck.manifest.rng.restore();
            start = ck.manifest.step;
            decay_start = ck.manifest.decay_start;
            if let Some(state) = &ck.manifest.task_state {
                task.restore_state(state).map_err(|msg| TrainError::Corrupt { path: ck.dir.join("manifest.json").display().to_string(), msg })?;
            }
        }
    }
    let save = |step: u64, opt: &Optimizer, rng: &ChaCha8Rng, params: &Params, decay_start: Option<u64>, task_state: Option<serde_json::Value>| -> Result<(), TrainError> {
        if let Some(root) = &ckpt_root {
            let manifest = Manifest {
                crate_version: env!("CARGO_PKG_VERSION").to_string(),
                step,
                optimizer: cfg.optimizer,
                optimizer_t: opt.t,
                rng: RngState::of(rng),
                config: opts.config_text.clone(),
                decay_start,
                task_state,
            };
            Checkpoint::save(root, params, opt, manifest)?;
        }
        Ok(())
    };

    let mut progress = Progress::new(cfg.steps, start, opts.quiet);
    let t0 = Instant::now();
    let mut last_eval = Metrics::new();
    let mut final_loss = f64::NAN;
    if start == 0 && task.eval_due(0, cfg) {
        last_eval = task.evaluate(0)?;
        sink.log(0, last_eval.clone())?;
    }
    // The run's last step (earlier once a decay trigger fires) and where this call stops.
    let mut last = cfg.end_with(decay_start);
    let stop = |last: u64| opts.stop_after.map_or(last, |s| s.min(last));
    let mut step = start;
    while step < stop(last) {
        let lr = cfg.lr_at_with(step, decay_start);
        let (loss_value, grads, mut metrics) = task.train_grads(step, &mut rng)?;
        if !loss_value.is_finite() {
            return Err(TrainError::NonFiniteLoss { step: step + 1, value: loss_value });
        }
        let norm = Optimizer::grad_norm(&vars, &grads, step + 1)?;
        let scale = if cfg.clip_norm > 0.0 && norm > cfg.clip_norm { cfg.clip_norm / (norm + 1e-6) } else { 1.0 };
        opt.step(&vars, &grads, lr, scale, cfg)?;
        final_loss = loss_value;

        let done = step + 1;
        progress.tick(done, loss_value);
        let mut logged = false;
        if done % cfg.log_every == 0 || done == last {
            metrics.insert("loss".into(), loss_value);
            metrics.insert("lr".into(), lr);
            metrics.insert("grad_norm".into(), norm);
            logged = true;
        }
        if task.eval_due(done, cfg) || done == last {
            last_eval = task.evaluate(done)?;
            metrics.extend(last_eval.iter().map(|(k, v)| (k.clone(), *v)));
            logged = true;
            if let Some(t) = cfg.decay_trigger.as_ref().filter(|_| decay_start.is_none() && cfg.schedule == ScheduleKind::ConstantThenCosine) {
                let Some(value) = last_eval.get(&t.metric) else {
                    let available = last_eval.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
                    return Err(TrainError::UnknownMetric { metric: t.metric.clone(), available });
                };
                if *value >= t.at_least && done + cfg.decay_steps < last {
                    decay_start = Some(done);
                    last = cfg.end_with(decay_start);
                    metrics.insert("decay_start".into(), done as f64);
                }
            }
        }
        if logged {
            sink.log(done, metrics)?;
        }
        if (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) || done == stop(last) {
            save(done, &opt, &rng, task.params(), decay_start, task.state())?;
        }
        step = done;
    }
    progress.finish();
    Ok(TrainSummary { steps: step, final_loss, seconds: t0.elapsed().as_secs_f64(), last_eval })
}
