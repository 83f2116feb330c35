//! Noisy in-context recall data (arXiv 2406.03068 §3 / v2 §2; spec §2, §5, §9): config, batch
//! sampler over the Tiny Shakespeare bigram chain with trigger → (ȳ w.p. 1−α, τ w.p. α), the fixed
//! clean/noisy evaluation sets, and JSONL dataset I/O with file:line:field error messages.
//!
//! Sampling follows spec §2.3 exactly: T+1 tokens, z_1 ~ π_u, after a trigger the next token is τ
//! with probability α else the sequence's answer ȳ (at every occurrence, including the first),
//! otherwise z_{t+1} ~ π_b(·|z_t); inputs = z_1..z_T, targets = z_2..z_{T+1}.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::char_stats::{CharStats, VOCAB_SIZE};
use super::error::DataError;

/// Seed of the clean evaluation set (α = 0), spec §5.
pub const CLEAN_EVAL_SEED: u64 = 0;
/// Seed of the noisy evaluation set (training α), spec §5.
pub const NOISY_EVAL_SEED: u64 = 1;
/// Size of each CPU-scale evaluation set, spec §5/§9.
pub const EVAL_SET_SIZE: usize = 256;

/// Distribution of the per-sequence answer token ȳ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerDist {
    /// Uniform over the vocabulary (official default).
    #[default]
    Uniform,
    /// ȳ ~ π_b(·|q) for trigger q (official `bigram_outs`).
    BigramOfTrigger,
}

/// Configuration of the noisy in-context recall task (spec §2). Token ids refer to the 65-token
/// Tiny Shakespeare vocabulary (`\n`=0, space=1, `!`=2, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoisyRecallConfig {
    /// Sequence length T (inputs per sequence; T+1 tokens are sampled). Default 64 (CPU configs XS/S).
    pub seq_len: usize,
    /// Noise probability α in [0, 1]: after a trigger the next token is τ w.p. α. Default 0.5.
    pub alpha: f64,
    /// Trigger token q when `n_triggers` = 1. Default 1 (space, the most frequent token).
    pub trigger: u32,
    /// Noise token τ, an ordinary vocabulary token. Default 2 (`!`).
    pub noise_token: u32,
    /// Number of triggers K. Default 1; K > 1 uses the K most frequent tokens (then `trigger`
    /// must be the most frequent token, 1), each with its own per-sequence answer.
    pub n_triggers: usize,
    /// Distribution of the answer ȳ. Default `uniform` (over all 65 tokens); `bigram_of_trigger` draws ȳ ~ π_b(·|q).
    pub answer_dist: AnswerDist,
    /// Exclude all triggers and τ from the answer pool (so ȳ ∉ {q, τ}). Default false (official behaviour).
    pub exclude_special_answers: bool,
    /// Score every position (full next-token loss) instead of only positions with counter ≥ 2. Default false.
    pub loss_on_all_positions: bool,
}

impl Default for NoisyRecallConfig {
    fn default() -> Self {
        NoisyRecallConfig {
            seq_len: 64,
            alpha: 0.5,
            trigger: 1,
            noise_token: 2,
            n_triggers: 1,
            answer_dist: AnswerDist::Uniform,
            exclude_special_answers: false,
            loss_on_all_positions: false,
        }
    }
}

impl NoisyRecallConfig {
    /// Check ranges and consistency; the error names the offending field.
    pub fn validate(&self) -> Result<(), DataError> {
        let v = VOCAB_SIZE as u32;
        if self.seq_len == 0 {
            return Err(DataError::config("seq_len", "must be at least 1, got 0"));
        }
        if !(self.alpha.is_finite() && (0.0..=1.0).contains(&self.alpha)) {
            return Err(DataError::config(
                "alpha",
                format!("must lie in [0, 1], got {}", self.alpha),
            ));
        }
        if self.trigger >= v {
            return Err(DataError::config(
                "trigger",
                format!("token id must be < {v}, got {}", self.trigger),
            ));
        }
        if self.noise_token >= v {
            return Err(DataError::config(
                "noise_token",
                format!("token id must be < {v}, got {}", self.noise_token),
            ));
        }
        if self.n_triggers == 0 || self.n_triggers > VOCAB_SIZE - 2 {
            return Err(DataError::config(
                "n_triggers",
                format!(
                    "must lie in 1..={}, got {}",
                    VOCAB_SIZE - 2,
                    self.n_triggers
                ),
            ));
        }
        let stats = CharStats::tiny_shakespeare();
        if self.n_triggers > 1 && self.trigger != stats.top_k_unigram(1)[0] {
            return Err(DataError::config(
                "trigger",
                format!("with n_triggers > 1 the triggers are the K most frequent tokens; leave `trigger` at 1, got {}", self.trigger),
            ));
        }
        let trig = self.triggers();
        if trig.contains(&self.noise_token) {
            return Err(DataError::config(
                "noise_token",
                format!("{} is also a trigger {trig:?}", self.noise_token),
            ));
        }
        for (k, &q) in trig.iter().enumerate() {
            if self.answer_weights(q).iter().sum::<f64>() <= 0.0 {
                return Err(DataError::config(
                    "answer_dist",
                    format!("empty answer pool for trigger #{k} (id {q})"),
                ));
            }
        }
        Ok(())
    }

    /// Trigger tokens: `[trigger]` for K = 1, else the K most frequent tokens (most frequent first).
    pub fn triggers(&self) -> Vec<u32> {
        if self.n_triggers <= 1 {
            vec![self.trigger]
        } else {
            CharStats::tiny_shakespeare().top_k_unigram(self.n_triggers)
        }
    }

    /// Unnormalised answer weights over the vocabulary for trigger `q`.
    fn answer_weights(&self, q: u32) -> Vec<f64> {
        let stats = CharStats::tiny_shakespeare();
        let trig = self.triggers();
        (0..VOCAB_SIZE as u32)
            .map(|j| {
                if self.exclude_special_answers && (j == self.noise_token || trig.contains(&j)) {
                    return 0.0;
                }
                match self.answer_dist {
                    AnswerDist::Uniform => 1.0,
                    AnswerDist::BigramOfTrigger => stats.bigram[q as usize][j as usize],
                }
            })
            .collect()
    }
}

/// A batch of sequences, all buffers row-major `[batch][seq_len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisyRecallBatch {
    /// Number of sequences.
    pub batch: usize,
    /// Sequence length T.
    pub seq_len: usize,
    /// Trigger tokens (length K; `[1]` by default).
    pub triggers: Vec<u32>,
    /// Noise token τ.
    pub noise_token: u32,
    /// x_1..x_T per sequence.
    pub inputs: Vec<u32>,
    /// y_t = x_{t+1} (z_2..z_{T+1}).
    pub targets: Vec<u32>,
    /// Occurrence index of the trigger x_t among x_1..x_t (1 for the first), 0 if x_t is not a trigger.
    pub counter: Vec<u32>,
    /// Per-sequence answers ȳ, `answer[b * K + k]` for trigger `triggers[k]` (length `batch` when K = 1).
    pub answer: Vec<u32>,
    /// Loss mask: 1.0 where counter ≥ 2 (or everywhere with `loss_on_all_positions`), else 0.0.
    pub scored: Vec<f32>,
    /// True where x_t is a trigger and the noise branch produced y_t = τ.
    pub target_is_noise: Vec<bool>,
}

impl NoisyRecallBatch {
    /// The generic LM view: inputs, targets, and weight 1 at the scored positions.
    pub fn token_batch(&self) -> super::TokenBatch {
        super::TokenBatch {
            batch: self.batch,
            seq_len: self.seq_len,
            inputs: self.inputs.clone(),
            targets: self.targets.clone(),
            weights: self.scored.clone(),
        }
    }

    /// Number of answers per sequence (K).
    pub fn n_triggers(&self) -> usize {
        self.triggers.len()
    }
    /// Range of sequence `b` in the flat buffers.
    pub fn row(&self, b: usize) -> std::ops::Range<usize> {
        b * self.seq_len..(b + 1) * self.seq_len
    }
    /// In-context answer ȳ for flat position `i` if x_i is a trigger.
    pub fn answer_at(&self, i: usize) -> Option<u32> {
        let k = self.triggers.iter().position(|&q| q == self.inputs[i])?;
        Some(self.answer[(i / self.seq_len) * self.triggers.len() + k])
    }
    /// Number of positions with a non-zero loss weight.
    pub fn n_scored(&self) -> usize {
        self.scored.iter().filter(|&&s| s > 0.0).count()
    }
}

/// Batch sampler with precomputed per-trigger answer CDFs (build once, sample many batches).
#[derive(Debug, Clone)]
pub struct NoisyRecallSampler {
    cfg: NoisyRecallConfig,
    triggers: Vec<u32>,
    /// `slot[token]` = trigger index, or `u8::MAX` if not a trigger.
    slot: [u8; VOCAB_SIZE],
    answer_cdfs: Vec<Vec<f64>>,
}

impl NoisyRecallSampler {
    /// Validate `cfg` and precompute the sampling tables.
    pub fn new(cfg: &NoisyRecallConfig) -> Result<Self, DataError> {
        cfg.validate()?;
        let triggers = cfg.triggers();
        let mut slot = [u8::MAX; VOCAB_SIZE];
        for (k, &q) in triggers.iter().enumerate() {
            slot[q as usize] = k as u8;
        }
        let answer_cdfs = triggers
            .iter()
            .map(|&q| {
                let w = cfg.answer_weights(q);
                let s: f64 = w.iter().sum();
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = w
                    .iter()
                    .map(|x| {
                        acc += x / s;
                        acc
                    })
                    .collect();
                let last = w.iter().rposition(|&x| x > 0.0).unwrap_or(VOCAB_SIZE - 1);
                cdf[last..].iter_mut().for_each(|c| *c = 1.0);
                cdf
            })
            .collect();
        Ok(NoisyRecallSampler {
            cfg: cfg.clone(),
            triggers,
            slot,
            answer_cdfs,
        })
    }

    /// The configuration this sampler was built from.
    pub fn config(&self) -> &NoisyRecallConfig {
        &self.cfg
    }

    /// Sample `batch` fresh sequences (spec §2.3). Deterministic given the RNG state.
    pub fn sample(&self, batch: usize, rng: &mut ChaCha8Rng) -> NoisyRecallBatch {
        let (t_len, k) = (self.cfg.seq_len, self.triggers.len());
        let n = batch * t_len;
        let mut out = NoisyRecallBatch {
            batch,
            seq_len: t_len,
            triggers: self.triggers.clone(),
            noise_token: self.cfg.noise_token,
            inputs: vec![0; n],
            targets: vec![0; n],
            counter: vec![0; n],
            answer: vec![0; batch * k],
            scored: vec![
                if self.cfg.loss_on_all_positions {
                    1.0
                } else {
                    0.0
                };
                n
            ],
            target_is_noise: vec![false; n],
        };
        let stats = CharStats::tiny_shakespeare();
        let (alpha, tau) = (self.cfg.alpha, self.cfg.noise_token);
        let mut counts = vec![0u32; k];
        for b in 0..batch {
            let answers = &mut out.answer[b * k..(b + 1) * k];
            for (a, cdf) in answers.iter_mut().zip(&self.answer_cdfs) {
                let u: f64 = rng.random();
                *a = cdf.partition_point(|&c| c <= u).min(VOCAB_SIZE - 1) as u32;
            }
            counts.iter_mut().for_each(|c| *c = 0);
            let base = b * t_len;
            let mut cur = stats.sample_unigram(rng.random());
            for t in 0..t_len {
                let i = base + t;
                out.inputs[i] = cur;
                let s = self.slot[cur as usize];
                let next = if s != u8::MAX {
                    counts[s as usize] += 1;
                    let c = counts[s as usize];
                    out.counter[i] = c;
                    if c >= 2 {
                        out.scored[i] = 1.0;
                    }
                    let noisy = rng.random::<f64>() < alpha;
                    out.target_is_noise[i] = noisy;
                    if noisy {
                        tau
                    } else {
                        answers[s as usize]
                    }
                } else {
                    stats.sample_bigram(cur, rng.random())
                };
                out.targets[i] = next;
                cur = next;
            }
        }
        out
    }
}

/// Sample a batch (spec §2.3). Panics if `cfg` is invalid; use [`NoisyRecallSampler::new`] to
/// validate once and sample many batches without rebuilding the tables.
pub fn sample_batch(
    cfg: &NoisyRecallConfig,
    batch: usize,
    rng: &mut ChaCha8Rng,
) -> NoisyRecallBatch {
    NoisyRecallSampler::new(cfg)
        .unwrap_or_else(|e| panic!("{e}"))
        .sample(batch, rng)
}

/// A fixed evaluation set: `n` sequences from `ChaCha8Rng::seed_from_u64(seed)`. Panics on invalid `cfg`.
pub fn eval_set(cfg: &NoisyRecallConfig, n: usize, seed: u64) -> NoisyRecallBatch {
    sample_batch(cfg, n, &mut ChaCha8Rng::seed_from_u64(seed))
}

/// Clean evaluation set (spec §5): α = 0, seed [`CLEAN_EVAL_SEED`], otherwise as `cfg`.
pub fn clean_eval_set(cfg: &NoisyRecallConfig, n: usize) -> NoisyRecallBatch {
    eval_set(
        &NoisyRecallConfig {
            alpha: 0.0,
            ..cfg.clone()
        },
        n,
        CLEAN_EVAL_SEED,
    )
}

/// Noisy evaluation set (spec §5): training α, seed [`NOISY_EVAL_SEED`].
pub fn noisy_eval_set(cfg: &NoisyRecallConfig, n: usize) -> NoisyRecallBatch {
    eval_set(cfg, n, NOISY_EVAL_SEED)
}

#[path = "noisy_recall_jsonl.rs"]
mod jsonl;
pub use jsonl::{read_jsonl, write_jsonl};

#[cfg(test)]
#[path = "noisy_recall_tests.rs"]
mod tests;
