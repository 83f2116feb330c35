//! The study's config tree; every default is the spec's CPU-scale config S
//! (spec §9): d = 64, T = 64, batch 64, SGD lr 0.03, momentum 0.9, wd 1e-4; the main run
//! trains 2,000 steps (the length of the spec's reference truncation table, §7.2).

use serde::{Deserialize, Serialize};

use crate::config::{check, ConfigError, Validate};
use crate::data::noisy_recall::NoisyRecallConfig;
use crate::nn::FfnKind;
use crate::train::{OptimizerKind, ScheduleKind, TrainConfig};

/// Evaluation sets and probe cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Clean (α = 0, seed 0) evaluation sequences (default 256).
    pub n_clean: usize,
    /// Noisy (training α, seed 1) evaluation sequences (default 256).
    pub n_noisy: usize,
    /// Probe after every one of the first n steps (default 10).
    pub early_steps: u64,
    /// Further probe steps besides every `train.eval_every` (default [20, 50]).
    #[serde(default)]
    pub extra_steps: Vec<u64>,
}

/// The truncation grid applied after training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Kept-rank fractions ρ (0 = remove the matrix) (default [0, 0.05, 0.1, 0.2, 0.5, 1]).
    pub rank_fracs: Vec<f64>,
    /// Matrices τ (default fc_in, fc_out, v_proj, out_proj).
    pub matrices: Vec<String>,
    /// Directions of W_1² kept in the spectral diagnosis (default [32, 13, 6, 3, 1]).
    pub keep_ks: Vec<usize>,
    /// Step of the main run at which the spectrum is diagnosed (spec §7.3 uses
    /// 800); 0 or ≥ train.steps = after training (default 800).
    pub spectral_step: u64,
}

/// The extra runs behind claims C1b, C6a and C6b.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantsConfig {
    /// Run the low-noise variant (default true).
    pub low_alpha: bool,
    /// Its α (default 0.2).
    pub low_alpha_value: f64,
    /// Its steps (default 1000).
    pub low_alpha_steps: u64,
    /// Run the FFN-in-layer-1-only variant (default true).
    pub ffn1_only: bool,
    /// Its steps (default 1500).
    pub ffn1_only_steps: u64,
    /// Run the attention-only variant (default true).
    pub attn_only: bool,
    /// Its steps (default 1500).
    pub attn_only_steps: u64,
}

/// `latentlab reproduce truncation` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruncationStudy {
    /// Output folder name under `out_dir` (default "truncation").
    pub name: String,
    /// Parent of run folders (default "runs").
    pub out_dir: String,
    /// Seed of model init and data (default 0).
    pub seed: u64,
    /// Model width d (default 64; FFN width 4d, one head).
    pub d_model: usize,
    /// Train variants side by side, one single-threaded worker per core
    /// (results are identical either way; default true).
    pub parallel_variants: bool,
    pub data: NoisyRecallConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub sweep: SweepConfig,
    pub variants: VariantsConfig,
}

impl Default for TruncationStudy {
    fn default() -> Self {
        Self {
            name: "truncation".into(),
            out_dir: "runs".into(),
            seed: 0,
            d_model: 64,
            parallel_variants: true,
            data: NoisyRecallConfig::default(),
            train: TrainConfig {
                steps: 2000,
                batch_size: 64,
                lr: 0.03,
                optimizer: OptimizerKind::Sgd,
                momentum: 0.9,
                weight_decay: 1e-4,
                schedule: ScheduleKind::Constant,
                warmup_steps: 0,
                clip_norm: 0.0,
                log_every: 10,
                eval_every: 100,
                checkpoint_every: 0,
                // Two batch slices computed concurrently, one per core (same math).
                shards: 2,
                ..TrainConfig::default()
            },
            eval: EvalConfig { n_clean: 256, n_noisy: 256, early_steps: 10, extra_steps: vec![20, 50] },
            sweep: SweepConfig {
                rank_fracs: vec![0.0, 0.05, 0.1, 0.2, 0.5, 1.0],
                matrices: ["fc_in", "fc_out", "v_proj", "out_proj"].map(String::from).to_vec(),
                keep_ks: vec![32, 13, 6, 3, 1],
                spectral_step: 800,
            },
            variants: VariantsConfig {
                low_alpha: true,
                low_alpha_value: 0.2,
                low_alpha_steps: 1000,
                ffn1_only: true,
                ffn1_only_steps: 1500,
                attn_only: true,
                attn_only_steps: 1500,
            },
        }
    }
}

impl TruncationStudy {
    /// The `--quick` version: the XS smoke configuration (spec §9), main run only.
    pub fn quick() -> Self {
        let d = Self::default();
        Self {
            name: "truncation-quick".into(),
            train: TrainConfig { steps: 450, ..d.train.clone() },
            eval: EvalConfig { n_clean: 128, n_noisy: 128, ..d.eval.clone() },
            variants: VariantsConfig { low_alpha: false, ffn1_only: false, attn_only: false, ..d.variants.clone() },
            ..d
        }
    }
}

/// One trained model of the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub alpha: f64,
    pub steps: u64,
    /// FFN shape per layer.
    pub ffn_layers: Vec<FfnKind>,
}

impl TruncationStudy {
    /// The runs to do, main run first.
    pub fn variants(&self) -> Vec<Variant> {
        let v = &self.variants;
        let mut out = vec![Variant {
            name: "main".into(),
            alpha: self.data.alpha,
            steps: self.train.steps,
            ffn_layers: vec![FfnKind::Mlp, FfnKind::Mlp],
        }];
        if v.low_alpha {
            out.push(Variant {
                name: "low-alpha".into(),
                alpha: v.low_alpha_value,
                steps: v.low_alpha_steps,
                ffn_layers: vec![FfnKind::Mlp, FfnKind::Mlp],
            });
        }
        if v.ffn1_only {
            out.push(Variant {
                name: "ffn1-only".into(),
                alpha: self.data.alpha,
                steps: v.ffn1_only_steps,
                ffn_layers: vec![FfnKind::Mlp, FfnKind::None],
            });
        }
        if v.attn_only {
            out.push(Variant {
                name: "attn-only".into(),
                alpha: self.data.alpha,
                steps: v.attn_only_steps,
                ffn_layers: vec![FfnKind::None, FfnKind::None],
            });
        }
        out
    }
}

impl Validate for TruncationStudy {
    fn validate(&self) -> Result<(), ConfigError> {
        check(!self.name.is_empty() && !self.name.contains('/'), "name", "must be a non-empty name without `/`")?;
        check(self.d_model > 0, "d_model", "must be > 0")?;
        self.data.validate().map_err(|e| ConfigError::Invalid { key: "data".into(), msg: e.to_string() })?;
        self.train.validate()?;
        check(self.eval.n_clean > 0, "eval.n_clean", "must be > 0")?;
        check(self.eval.n_noisy > 0, "eval.n_noisy", "must be > 0")?;
        for (i, r) in self.sweep.rank_fracs.iter().enumerate() {
            check((0.0..=1.0).contains(r), &format!("sweep.rank_fracs[{i}]"), "must be in [0, 1]")?;
        }
        for (i, m) in self.sweep.matrices.iter().enumerate() {
            check(
                crate::surgery::Matrix::from_name(m).is_some(),
                &format!("sweep.matrices[{i}]"),
                format!("unknown matrix `{m}`; expected fc_in, fc_out, q_proj, k_proj, v_proj or out_proj"),
            )?;
        }
        check((0.0..=1.0).contains(&self.variants.low_alpha_value), "variants.low_alpha_value", "must be in [0, 1]")?;
        Ok(())
    }
}
