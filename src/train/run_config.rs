//! The config of a generic `latentlab train` run: task, model, training.

use serde::{Deserialize, Serialize};

use crate::config::{check, ConfigError, Validate};
use crate::data::TokenBatch;
use crate::models::GptConfig;
use crate::train::lm_task::Sampler;
use crate::train::TrainConfig;

/// Which built-in task feeds the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Repeated random sequences (induction heads).
    Induction,
}

/// `[task]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Task kind (default induction).
    pub kind: TaskKind,
    /// Sequence length (default 64).
    pub seq_len: usize,
    /// Evaluation batches drawn once from `seed + 1` (default 4).
    pub eval_batches: usize,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self { kind: TaskKind::Induction, seq_len: 64, eval_batches: 4 }
    }
}

impl TaskConfig {
    /// The training sampler for a model with `vocab_size` tokens.
    pub fn sampler(&self, vocab_size: usize) -> Sampler {
        let (kind, t) = (self.kind, self.seq_len);
        Box::new(move |batch, rng| match kind {
            TaskKind::Induction => crate::data::induction::sample(batch, t, vocab_size, rng),
        })
    }

    pub fn eval_set(&self, vocab_size: usize, batch: usize, seed: u64) -> Vec<TokenBatch> {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(1));
        let mut sampler = self.sampler(vocab_size);
        (0..self.eval_batches).map(|_| sampler(batch, &mut rng)).collect()
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run name: outputs go to `{out_dir}/{name}` (default "default").
    pub name: String,
    /// Parent directory of runs (default "runs").
    pub out_dir: String,
    /// Seed of model init and data (default 0).
    pub seed: u64,
    pub task: TaskConfig,
    pub model: GptConfig,
    pub train: TrainConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            out_dir: "runs".into(),
            seed: 0,
            task: TaskConfig::default(),
            model: GptConfig::default(),
            train: TrainConfig::default(),
        }
    }
}

impl Validate for RunConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check(!self.name.is_empty() && !self.name.contains('/'), "name", "must be a non-empty name without `/`")?;
        check(self.task.seq_len > 0, "task.seq_len", "must be > 0")?;
        check(
            self.task.seq_len <= self.model.max_seq_len,
            "task.seq_len",
            format!("must be ≤ model.max_seq_len ({})", self.model.max_seq_len),
        )?;
        self.model.validate()?;
        self.train.validate()
    }
}
