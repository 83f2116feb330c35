//! Open any checkpoint written by `latentlab train` or a study, rebuild its
//! model and evaluation data from the stored config, and evaluate it — with
//! or without weight edits (`latentlab eval`, `truncate`, `analyze`).

use std::path::Path;

use serde_json::{json, Value};

use super::truncation::run::VariantRun;
use super::truncation::task::{evaluate, NoisyRecallTask};
use crate::config::Validate;
use crate::interp::Hooks;
use crate::models::{Gpt, LanguageModel};
use crate::surgery::{with_edits, EditSet, SurgeryError, SvdCache, TemplateMap};
use crate::train::lm_task::{batch_tensors, LmTask};
use crate::train::{Checkpoint, Metrics, RunConfig, Task, TrainError};

/// A checkpoint's model with the data it is evaluated on.
pub enum CheckpointTask {
    /// `latentlab train` runs.
    Lm(Box<LmTask>),
    /// Truncation-study variants.
    Recall(Box<NoisyRecallTask>),
}

/// Errors opening or evaluating a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Surgery(#[from] SurgeryError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Other(String),
}

impl CheckpointTask {
    /// Open the checkpoint at `path` (its directory, or a file inside it).
    pub fn open(path: &Path) -> Result<(Self, Checkpoint), CheckpointError> {
        let ck = Checkpoint::open(path)?;
        let manifest = ck.dir.join("manifest.json").display().to_string();
        let corrupt = |msg: String| TrainError::Corrupt { path: manifest.clone(), msg };
        let task = if let Ok(cfg) = toml::from_str::<RunConfig>(&ck.manifest.config) {
            cfg.validate().map_err(|e| corrupt(format!("config: {e}")))?;
            let model = Gpt::new(&cfg.model, cfg.seed, &candle_core::Device::Cpu)?;
            CheckpointTask::Lm(Box::new(LmTask {
                model,
                sampler: cfg.task.sampler(cfg.model.vocab_size),
                batch_size: cfg.train.batch_size,
                eval: cfg.task.eval_set(cfg.model.vocab_size, cfg.train.batch_size, cfg.seed),
                shards: cfg.train.shards,
            }))
        } else {
            let run: VariantRun = toml::from_str(&ck.manifest.config)
                .map_err(|e| corrupt(format!("config is neither a train run nor a study variant: {}", e.message().trim())))?;
            run.study.validate().map_err(|e| corrupt(format!("config: {e}")))?;
            CheckpointTask::Recall(Box::new(run.task().map_err(|e| CheckpointError::Other(e.to_string()))?))
        };
        ck.load_params(task.model().params())?;
        Ok((task, ck))
    }

    pub fn model(&self) -> &Gpt {
        match self {
            CheckpointTask::Lm(t) => &t.model,
            CheckpointTask::Recall(t) => &t.model,
        }
    }

    /// Token ids of the first evaluation batch `(batch, pos)`.
    pub fn example_ids(&self) -> candle_core::Result<candle_core::Tensor> {
        match self {
            CheckpointTask::Lm(t) => Ok(batch_tensors(&t.eval[0], t.model.params().device())?.0),
            CheckpointTask::Recall(t) => candle_core::Tensor::from_slice(&t.clean.inputs, (t.clean.batch, t.clean.seq_len), t.model.params().device()),
        }
    }

    /// Metrics, and one JSON object per scored example when `per_example`.
    pub fn evaluate(&mut self, per_example: bool) -> candle_core::Result<(Metrics, Vec<Value>)> {
        match self {
            CheckpointTask::Lm(t) => Ok((t.evaluate(0)?, Vec::new())),
            CheckpointTask::Recall(t) => {
                let mut m = Metrics::new();
                let mut rows = Vec::new();
                for (name, batch) in [("clean", &t.clean), ("noisy", &t.noisy)] {
                    let (r, ex) = evaluate(&t.model, batch, &mut Hooks::none())?;
                    m.insert(format!("{name}_acc"), r.acc);
                    m.insert(format!("{name}_p_noise"), r.p_noise);
                    m.insert(format!("{name}_p_answer"), r.p_answer);
                    m.insert(format!("{name}_loss"), r.loss);
                    if per_example {
                        for (i, argmax, pn, pa) in ex {
                            rows.push(json!({
                                "set": name, "sequence": i / batch.seq_len, "position": i % batch.seq_len,
                                "answer": batch.answer_at(i), "argmax": argmax, "p_noise": pn, "p_answer": pa,
                            }));
                        }
                    }
                }
                Ok((m, rows))
            }
        }
    }

    /// The task's training-dynamics probes at these weights (for `latentlab train`
    /// runs: the task's own evaluation).
    pub fn probes(&mut self) -> candle_core::Result<Metrics> {
        match self {
            CheckpointTask::Lm(t) => t.evaluate(0),
            CheckpointTask::Recall(t) => t.probes(),
        }
    }

    /// Evaluate each edit set in turn (weights restored after each); one SVD
    /// per matrix for the whole sweep.
    pub fn truncate(&mut self, edits: &[EditSet], per_example: bool) -> Result<Vec<(String, Metrics, Vec<Value>)>, CheckpointError> {
        let mut cache = SvdCache::new();
        let map = TemplateMap::laser();
        let params = self.model().params().clone();
        let mut out = Vec::new();
        for e in edits {
            let (m, rows) = with_edits(&params, e, &mut cache, &map, || self.evaluate(per_example))??;
            let name = if e.is_empty() { "none".to_string() } else { e.to_string() };
            out.push((name, m, rows));
        }
        Ok(out)
    }
}
