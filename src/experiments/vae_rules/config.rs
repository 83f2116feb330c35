//! The study's config tree (spec §5–§10 of the reasoning-rules spec,
//! arXiv 2506.19418). Defaults are the CPU configuration; every open choice
//! of the spec (supervision form, injection, β schedule, free bits, freezing)
//! is a key here.

use serde::{Deserialize, Serialize};

use crate::config::{check, ConfigError, Validate};
use crate::data::rules::Family;
use crate::models::Injection;
use crate::nn::Act;
use crate::train::{OptimizerKind, ScheduleKind, TrainConfig};

/// How the rule label reaches training (spec §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Supervision {
    /// S0: no rule information.
    None,
    /// S1: `[R:π]` in the encoder input.
    Token,
    /// S2: a rule classifier on μ (weight `loss.alpha`).
    Classifier,
    /// S3: S1 + S2.
    Both,
}

impl Supervision {
    pub fn tag(self) -> &'static str {
        match self {
            Supervision::None => "s0",
            Supervision::Token => "s1",
            Supervision::Classifier => "s2",
            Supervision::Both => "s3",
        }
    }
    pub fn token(self) -> bool {
        matches!(self, Supervision::Token | Supervision::Both)
    }
    pub fn classifier(self) -> bool {
        matches!(self, Supervision::Classifier | Supervision::Both)
    }
}

/// Free-bits form of the KL term (spec §6 and its calibration lessons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreeBits {
    /// Plain KL.
    None,
    /// Σ_i KL_i·1[KL_i > λ] (Optimus; per dimension, batch-averaged).
    PerDim,
    /// KL_total·1[KL_total > λ] (one budget for the whole code).
    Total,
}

/// Which encoder parameters stay at their initial values (spec §8.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freeze {
    None,
    /// Encoder attention frozen (FFN trainable).
    EncoderAttn,
    /// Encoder FFN frozen (attention trainable).
    EncoderFfn,
}

/// Model sizes (spec §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Width d (default 64).
    pub d_model: usize,
    /// Heads (default 4).
    pub n_heads: usize,
    /// FFN width (default 256).
    pub d_mlp: usize,
    /// Encoder layers (default 2).
    pub enc_layers: usize,
    /// Decoder layers (default 2).
    pub dec_layers: usize,
    /// Latent size D (default 16).
    pub latent_dim: usize,
    /// FFN nonlinearity (default gelu).
    pub act: Act,
}

/// The training objective (spec §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Largest KL weight β (default 0.5; the spec's alternative to 1.0: at
    /// the CPU step budget β = 1 kept KL at the free-bits floor, below ln #rules).
    pub beta_max: f64,
    /// Fraction of each cycle with β = 0 (default 0.25).
    pub zero_frac: f64,
    /// Fraction of each cycle with β ramping linearly to β_max (default 0.25).
    pub ramp_frac: f64,
    /// Number of β cycles over the run (default 1).
    pub cycles: u64,
    /// Free-bits form (default per_dim).
    pub free_bits: FreeBits,
    /// Free-bits threshold λ in nats (default 0.05, so λ·D = 0.8 < ln 4).
    pub lambda: f64,
    /// Weight α of the rule classifier loss (S2/S3; default 1.0).
    pub alpha: f64,
}

impl LossConfig {
    /// β after `step` of `steps`: zero, linear ramp, constant, per cycle.
    pub fn beta(&self, step: u64, steps: u64) -> f64 {
        let cycle = (steps / self.cycles.max(1)).max(1);
        let p = (step % cycle) as f64 / cycle as f64;
        if p < self.zero_frac {
            0.0
        } else if p < self.zero_frac + self.ramp_frac {
            self.beta_max * (p - self.zero_frac) / self.ramp_frac
        } else {
            self.beta_max
        }
    }
}

/// Dataset sizes per family (spec §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training examples (default 8000).
    pub n_train: usize,
    /// Validation examples (default 500).
    pub n_valid: usize,
    /// Test examples (default 1000).
    pub n_test: usize,
}

/// Evaluation sizes (spec §7–8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Test examples scored after training (default 600).
    pub n_test: usize,
    /// Training examples whose μ define the rule centroids (default 1000).
    pub n_centroid: usize,
    /// Test examples per rule in the gradient-separation analysis (default 24).
    pub grad_per_rule: usize,
    /// Validation examples for the periodic KL/recon log (default 128).
    pub n_monitor: usize,
}

/// Which runs make up the study (spec §10.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    /// E1: families of the supervision comparison (default syllogism, explanatory).
    pub supervision_families: Vec<Family>,
    /// E1: supervision modes compared, with query injection (default none, token, classifier).
    pub supervision_modes: Vec<Supervision>,
    /// E2: families of the injection comparison (default syllogism, explanatory:
    /// the families where the rule decides which facts to read, spec §10.4).
    pub injection_families: Vec<Family>,
    /// E2: injections compared under S1 (default memory, kv, query).
    pub injections: Vec<Injection>,
    /// No-latent and oracle decoders on these families (default syllogism, explanatory, math).
    pub baseline_families: Vec<Family>,
    /// E3: freeze ablations (S1 + query) on these families (default syllogism).
    pub freeze_families: Vec<Family>,
    /// E4: the data-scaling family (default math).
    pub size_family: Family,
    /// E4: training-set sizes, S1 + query (default 250, 1000, 4000, 8000).
    pub sizes: Vec<usize>,
}

/// `latentlab reproduce vae-rules` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeRulesStudy {
    /// Output folder name under `out_dir` (default "vae-rules").
    pub name: String,
    /// Parent of run folders (default "runs").
    pub out_dir: String,
    /// Seed of data, model init and sampling (default 0).
    pub seed: u64,
    /// Train runs side by side, one single-threaded worker per core (default true).
    pub parallel_variants: bool,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub loss: LossConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub runs: RunsConfig,
}

impl Default for VaeRulesStudy {
    fn default() -> Self {
        Self {
            name: "vae-rules".into(),
            out_dir: "runs".into(),
            seed: 0,
            parallel_variants: true,
            model: ModelConfig { d_model: 64, n_heads: 4, d_mlp: 256, enc_layers: 2, dec_layers: 2, latent_dim: 16, act: Act::Gelu },
            data: DataConfig { n_train: 8000, n_valid: 500, n_test: 1000 },
            loss: LossConfig {
                beta_max: 0.5,
                zero_frac: 0.25,
                ramp_frac: 0.25,
                cycles: 1,
                free_bits: FreeBits::PerDim,
                lambda: 0.05,
                alpha: 1.0,
            },
            train: TrainConfig {
                steps: 800,
                batch_size: 32,
                lr: 3e-3,
                optimizer: OptimizerKind::Adamw,
                weight_decay: 0.01,
                schedule: ScheduleKind::Constant,
                warmup_steps: 50,
                clip_norm: 1.0,
                log_every: 10,
                eval_every: 200,
                checkpoint_every: 0,
                ..TrainConfig::default()
            },
            eval: EvalConfig { n_test: 600, n_centroid: 1000, grad_per_rule: 24, n_monitor: 128 },
            runs: RunsConfig {
                supervision_families: vec![Family::Syllogism, Family::Explanatory],
                supervision_modes: vec![Supervision::None, Supervision::Token, Supervision::Classifier],
                injection_families: vec![Family::Syllogism, Family::Explanatory],
                injections: vec![Injection::Memory, Injection::Kv, Injection::Query],
                baseline_families: Family::ALL.to_vec(),
                freeze_families: vec![Family::Syllogism],
                size_family: Family::Math,
                sizes: vec![250, 1000, 4000, 8000],
            },
        }
    }
}

impl VaeRulesStudy {
    /// The `--quick` version (smoke runs and tests): family S only, S0 and
    /// S1 with query injection plus the no-latent decoder, short runs.
    pub fn quick() -> Self {
        let d = Self::default();
        Self {
            name: "vae-rules-quick".into(),
            data: DataConfig { n_train: 2000, n_valid: 100, n_test: 200 },
            train: TrainConfig { steps: 150, warmup_steps: 15, eval_every: 75, ..d.train.clone() },
            eval: EvalConfig { n_test: 120, n_centroid: 240, grad_per_rule: 6, n_monitor: 64 },
            runs: RunsConfig {
                supervision_families: vec![Family::Syllogism],
                supervision_modes: vec![Supervision::None, Supervision::Token],
                injection_families: vec![Family::Syllogism],
                injections: vec![Injection::Query],
                baseline_families: vec![Family::Syllogism],
                freeze_families: vec![],
                size_family: Family::Syllogism,
                sizes: vec![],
            },
            ..d
        }
    }
}

impl Validate for VaeRulesStudy {
    fn validate(&self) -> Result<(), ConfigError> {
        check(!self.name.is_empty() && !self.name.contains('/'), "name", "must be a non-empty name without `/`")?;
        let m = &self.model;
        check(m.d_model > 0 && m.n_heads > 0 && m.d_model.is_multiple_of(m.n_heads), "model.d_model", "must be a positive multiple of model.n_heads")?;
        check(m.d_mlp > 0, "model.d_mlp", "must be > 0")?;
        check(m.enc_layers > 0, "model.enc_layers", "must be > 0")?;
        check(m.dec_layers > 0, "model.dec_layers", "must be > 0")?;
        check(m.latent_dim > 0, "model.latent_dim", "must be > 0")?;
        check(self.data.n_train > 0, "data.n_train", "must be > 0")?;
        check(self.data.n_test >= 20, "data.n_test", "must be ≥ 20")?;
        check(self.eval.n_test >= 20 && self.eval.n_test <= self.data.n_test, "eval.n_test", "must be in [20, data.n_test]")?;
        check(self.eval.n_centroid > 0, "eval.n_centroid", "must be > 0")?;
        check(self.eval.grad_per_rule >= 2, "eval.grad_per_rule", "must be ≥ 2")?;
        check(self.eval.n_monitor > 0 && self.eval.n_monitor <= self.data.n_valid, "eval.n_monitor", "must be in [1, data.n_valid]")?;
        let l = &self.loss;
        check(l.beta_max >= 0.0 && l.beta_max.is_finite(), "loss.beta_max", "must be a finite number ≥ 0")?;
        check(l.zero_frac >= 0.0 && l.ramp_frac > 0.0 && l.zero_frac + l.ramp_frac <= 1.0, "loss.ramp_frac", "need zero_frac ≥ 0, ramp_frac > 0, zero_frac + ramp_frac ≤ 1")?;
        check(l.cycles > 0, "loss.cycles", "must be > 0")?;
        check(l.lambda >= 0.0, "loss.lambda", "must be ≥ 0")?;
        check(l.alpha >= 0.0, "loss.alpha", "must be ≥ 0")?;
        for (i, n) in self.runs.sizes.iter().enumerate() {
            check(*n > 0 && *n <= self.data.n_train, &format!("runs.sizes[{i}]"), "must be in [1, data.n_train]")?;
        }
        self.train.validate()
    }
}

/// One trained model of the study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub family: Family,
    pub supervision: Supervision,
    pub injection: Injection,
    /// Decoder sees `[R:π]` (the oracle baseline; no latent).
    pub oracle: bool,
    pub freeze: Freeze,
    pub n_train: usize,
}

impl Variant {
    /// A VAE (has a latent).
    pub fn is_vae(&self) -> bool {
        self.injection != Injection::None
    }
}

impl VaeRulesStudy {
    fn variant(&self, family: Family, sup: Supervision, inj: Injection, oracle: bool, freeze: Freeze, n_train: usize) -> Variant {
        let mut name = format!("{}-", family.name());
        name += &match (inj, oracle) {
            (Injection::None, true) => "oracle".to_string(),
            (Injection::None, false) => "no-latent".to_string(),
            (i, _) => format!("{}-{}", sup.tag(), serde_json::to_value(i).expect("enum").as_str().expect("string")),
        };
        match freeze {
            Freeze::None => {}
            Freeze::EncoderAttn => name += "-frozen-attn",
            Freeze::EncoderFfn => name += "-frozen-ffn",
        }
        if n_train != self.data.n_train {
            name += &format!("-n{n_train}");
        }
        Variant { name, family, supervision: sup, injection: inj, oracle, freeze, n_train }
    }

    /// Every run, deduplicated by name, in a fixed order.
    pub fn variants(&self) -> Vec<Variant> {
        let r = &self.runs;
        let n = self.data.n_train;
        let mut out: Vec<Variant> = Vec::new();
        let mut push = |v: Variant| {
            if !out.iter().any(|o| o.name == v.name) {
                out.push(v);
            }
        };
        for &f in &r.supervision_families {
            for &s in &r.supervision_modes {
                push(self.variant(f, s, Injection::Query, false, Freeze::None, n));
            }
        }
        for &f in &r.injection_families {
            for &i in &r.injections {
                push(self.variant(f, Supervision::Token, i, false, Freeze::None, n));
            }
        }
        for &f in &r.baseline_families {
            push(self.variant(f, Supervision::None, Injection::None, false, Freeze::None, n));
            push(self.variant(f, Supervision::None, Injection::None, true, Freeze::None, n));
        }
        for &f in &r.freeze_families {
            push(self.variant(f, Supervision::Token, Injection::Query, false, Freeze::EncoderAttn, n));
            push(self.variant(f, Supervision::Token, Injection::Query, false, Freeze::EncoderFfn, n));
        }
        for &size in &r.sizes {
            push(self.variant(r.size_family, Supervision::Token, Injection::Query, false, Freeze::None, size));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_schedule_has_zero_ramp_and_constant_phases() {
        let l = LossConfig { beta_max: 1.0, ..VaeRulesStudy::default().loss };
        assert_eq!(l.beta(0, 100), 0.0);
        assert_eq!(l.beta(24, 100), 0.0);
        assert!((l.beta(35, 100) - 0.4).abs() < 1e-12);
        assert_eq!(l.beta(60, 100), 1.0);
        let two = LossConfig { cycles: 2, ..l };
        assert_eq!(two.beta(50, 100), 0.0);
        assert_eq!(two.beta(99, 100), 1.0);
    }

    #[test]
    fn variants_are_unique_and_named_by_their_settings() {
        let s = VaeRulesStudy::default();
        let v = s.variants();
        let names: std::collections::HashSet<&str> = v.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names.len(), v.len());
        assert!(names.contains("syllogism-s1-query") && names.contains("math-s1-query-n250") && names.contains("explanatory-oracle"));
        crate::config::Validate::validate(&s).unwrap();
        crate::config::Validate::validate(&VaeRulesStudy::quick()).unwrap();
    }
}
