//! The study's config tree. The defaults are the recipe measured in
//! docs/recursive-calibration.md, which departs from the spec's CPU-scale full profile
//! (§11: train N = 16, depth ≤ 4, 64 graphs per step, 8,000 steps, constant lr — it never
//! reached the mod-p-sum transition): ADD, p = 23, train N = 12 (depth ≤ 3), pool 64; test
//! N ∈ {12, 24, 48}; d = 64, 4 heads, 3 layers; T5-style distance-bias positions (window 32,
//! gain 10) instead of DeBERTa's terms; AdamW 3e-3 after 200 warm-up steps, weight decay
//! 0.01; copy-only graphs for the first 1,500 steps; 64 graphs per step; the rate held until
//! validation solves half its graphs, then decayed over 6,000 steps (≤ 30,000 steps).

use serde::{Deserialize, Serialize};

use crate::config::{check, ConfigError, Validate};
use crate::data::compgraph::CompGraphConfig;
use crate::models::RecurrentConfig;
use crate::train::{DecayTrigger, OptimizerKind, ScheduleKind, TrainConfig};

/// How a variant is trained and run (the ablation ladder, spec §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Teacher-forced one-step transitions; argmax + re-embed between steps.
    Discrete,
    /// Hidden state fed back, per-step supervision, backprop through all steps.
    Continuous,
    /// One pass of the block stack, trained on the final label only.
    FeedForward,
    /// The block stack applied `e2e_loops` times (continuous), final label only.
    RecurrentE2e,
}

/// Which RHS positions of S_t a corrupted batch may change (spec §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptStrategy {
    /// Nodes due at this step (depth == t), the official default.
    Last,
    /// Nodes of depth ≤ t.
    Random,
    /// Nodes computed at earlier steps (depth ≤ t − 1), the paper's wording.
    Previous,
}

/// Error-correction training (spec §4.4, CPU values §11.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptionConfig {
    /// Probability that a training batch is corrupted (default 0.1).
    pub batch_prob: f64,
    /// Per-candidate corruption probability (default 0.5).
    pub token_prob: f64,
    /// Candidate positions (default last).
    pub strategy: CorruptStrategy,
}

/// One trained model of the ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    pub method: Method,
    /// Layers in the block (3 for recurrent variants, 6 for feed-forward).
    pub n_layers: usize,
    /// Error-correction training (discrete only).
    pub error_correction: bool,
    /// Training steps of this variant (default `train.steps`). The default ladder gives the
    /// baselines — which never reach the decay trigger and would otherwise run to the cap —
    /// about the budget the discrete variants end at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
}

/// The OOD sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Test graph sizes N, depth uncapped (default [12, 24, 48]: 1×, 2× and 4× the training N).
    pub sizes: Vec<usize>,
    /// Graphs per size, fixed seeds; the first graphs of a larger set are a smaller set's
    /// (default 512: a fully-solved fraction near 0.9 then has a 95 % interval of ±0.03).
    pub n_graphs: usize,
    /// Steps beyond each evaluation chunk's max depth (default 2: T = D + 2).
    pub extra_steps: usize,
    /// Graphs per forward pass (default 64).
    pub batch: usize,
    /// In-distribution graphs evaluated during training (default 64).
    pub n_val: usize,
    /// Evaluate (sweep, analysis) the weights with the best validation score — fully solved,
    /// then node accuracy, the later step on ties — instead of the last step's (default true).
    /// AdamW at a constant learning rate has loss spikes after the transition; the last step
    /// can land in one.
    #[serde(default = "default_true")]
    pub select_best: bool,
}

fn default_true() -> bool {
    true
}

/// One curriculum stage: for `steps` training steps after the previous stage (or longer,
/// with `until_due_acc`), training graphs use these overrides of `data` (spec §11.5 lever:
/// copy-only or small graphs first). Unset fields keep the `data` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurriculumStage {
    pub steps: u64,
    #[serde(default)]
    pub n_nodes: Option<usize>,
    #[serde(default)]
    pub max_depth: Option<usize>,
    #[serde(default)]
    pub max_fan_in: Option<usize>,
    /// Fewest parents of an internal node in this stage (e.g. 3 with `max_fan_in` 3:
    /// three-operand sums only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_fan_in: Option<usize>,
    /// Leaf values drawn from 0..leaf_values in this stage (small sums first).
    #[serde(default)]
    pub leaf_values: Option<u32>,
    /// End the stage on a measurement instead of a step count: after its `steps`, the stage
    /// goes on until an evaluation finds the one-step VALUE accuracy at due nodes with 1, 2,
    /// …, `max_fan_in` parents (training batches since the previous evaluation) all ≥ this.
    /// Measured by discrete training only; other methods use `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_due_acc: Option<f64>,
    /// With `until_due_acc`: the stage's longest length (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
}

/// The interpretability model of spec §8 / §11.2 (a 2-layer discrete model trained like
/// the others, then analysed by `analysis::analyze`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterpConfig {
    /// Train and analyse it (default true).
    pub enabled: bool,
    /// Width (default 128; spec §11.2).
    pub d_model: usize,
    /// Heads (default 8, d_head 16).
    pub n_heads: usize,
    /// Layers (default 2).
    pub n_layers: usize,
    /// Training steps (default `train.steps`; 0 = the same as the other variants).
    pub steps: u64,
    /// Context graphs of the controlled families (default 4).
    pub contexts: usize,
    /// Inputs per family and context (default 24).
    pub family_size: usize,
    /// Run the Z_p³ sweep of MLP-2 (default true).
    pub fourier: bool,
}

impl Default for InterpConfig {
    fn default() -> Self {
        Self { enabled: true, d_model: 128, n_heads: 8, n_layers: 2, steps: 0, contexts: 4, family_size: 24, fourier: true }
    }
}

/// `latentlab reproduce recursive` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecursiveStudy {
    /// Output folder name under `out_dir` (default "recursive").
    pub name: String,
    /// Parent of run folders (default "runs").
    pub out_dir: String,
    /// Seed of model init and data (default 0).
    pub seed: u64,
    /// Seed of the model initialisation alone, to separate init from data order (default:
    /// `seed`).
    #[serde(default)]
    pub init_seed: Option<u64>,
    /// Training graphs (N = 12, depth ≤ 3, 6 leaves, fan-in 1..3, ADD, p = 23, pool 64).
    pub data: CompGraphConfig,
    /// The recurrent block (`factor_sizes` is derived from `data`; `n_layers` per variant).
    pub model: RecurrentConfig,
    pub train: TrainConfig,
    /// Loops of the recurrent end-to-end baseline (default 2).
    pub e2e_loops: usize,
    pub corruption: CorruptionConfig,
    pub eval: EvalConfig,
    pub variants: Vec<Variant>,
    /// Stages run before plain `data` training (default none); their steps count toward
    /// `train.steps`.
    #[serde(default)]
    pub curriculum: Vec<CurriculumStage>,
    /// Discrete training on every transition t = 0..=D_batch of each graph (the official
    /// stacked loss; B·(D + 1) sequences per step) instead of one sampled t (default false).
    #[serde(default)]
    pub all_transitions: bool,
    /// The mechanism-analysis model (claims R7–R10).
    #[serde(default)]
    pub interp: InterpConfig,
    /// Run the variants and the interp model side by side, one single-threaded worker per
    /// core (default true; the numbers equal a sequential run's).
    #[serde(default = "yes")]
    pub parallel_variants: bool,
    /// Continue each variant from the latest checkpoint in its folder (`--resume`; not a
    /// config key).
    #[serde(skip)]
    pub resume: bool,
}

fn yes() -> bool {
    true
}

/// Training steps of the default ladder's baselines.
pub const BASELINE_STEPS: u64 = 15_000;

fn variant(name: &str, method: Method, n_layers: usize, error_correction: bool) -> Variant {
    Variant { name: name.into(), method, n_layers, error_correction, steps: None }
}

impl Default for RecursiveStudy {
    /// The measured recipe (docs/recursive-calibration.md): train N = 12, depth ≤ 3 (spec
    /// §11.1's smoke data; N = 48 is 4× it), distance-bias positions with gain 10, AdamW 3e-3
    /// after a 200-step warm-up, 64 graphs per step; copy-only graphs for the first 1,500
    /// steps, then small sums — leaves valued 0..3 — up to step 8,000 or later, until copies
    /// and small sums are learned (at most to step 16,000), then the task itself;
    /// the rate held until the validation fraction of solved graphs reaches 0.5 and then
    /// cosine-decayed over 6,000 steps (at most 30,000 steps), best-validation weights. The
    /// small-sum stage is what crosses the sum plateau: a uniform mod-p sum is independent of
    /// each operand alone, so the gradient has no one-operand signal to start from; with
    /// small leaves it has, the sums are learned within a few thousand steps and carry over
    /// to uniform values (v2/v3/v4 runs of the calibration log).
    fn default() -> Self {
        let data = CompGraphConfig { n_nodes: 12, max_depth: 3, ..CompGraphConfig::default() };
        let model = RecurrentConfig { factor_sizes: data.vocab().sizes().to_vec(), pos_bias_gain: 10.0, ..RecurrentConfig::default() };
        Self {
            name: "recursive".into(),
            out_dir: "runs".into(),
            seed: 0,
            init_seed: None,
            data,
            model,
            train: TrainConfig {
                steps: 30_000,
                batch_size: 64,
                lr: 3e-3,
                optimizer: OptimizerKind::Adamw,
                // The official 0.01: c13 crossed the mod-p-sum transition at the same step
                // as c11/c12 with 0.1.
                weight_decay: 0.01,
                schedule: ScheduleKind::ConstantThenCosine,
                decay_steps: 6000,
                decay_trigger: Some(DecayTrigger { metric: "val_solved".into(), at_least: 0.5 }),
                warmup_steps: 200,
                clip_norm: 1.0,
                log_every: 20,
                eval_every: 500,
                checkpoint_every: 2000,
                // Two slices per batch: concurrent on two cores when a variant runs alone;
                // on one core each (`parallel_variants`) they only fix the rounding.
                shards: 2,
                ..TrainConfig::default()
            },
            e2e_loops: 2,
            corruption: CorruptionConfig { batch_prob: 0.1, token_prob: 0.5, strategy: CorruptStrategy::Last },
            eval: EvalConfig { sizes: vec![12, 24, 48], n_graphs: 512, extra_steps: 2, batch: 64, n_val: 64, select_best: true },
            variants: vec![
                variant("discrete-ec", Method::Discrete, 3, true),
                variant("discrete", Method::Discrete, 3, false),
                // The baselines never reach the decay trigger: 15,000 steps each (the
                // budget the discrete variants end at on seed 0), the rate decayed over the
                // last 6,000.
                Variant { steps: Some(BASELINE_STEPS), ..variant("continuous", Method::Continuous, 3, false) },
                Variant { steps: Some(BASELINE_STEPS), ..variant("feedforward", Method::FeedForward, 6, false) },
                // The fixed-loop end-to-end baseline of the ladder (claim R4): the 3-layer
                // block applied `e2e_loops` times, trained on the final label only.
                Variant { steps: Some(BASELINE_STEPS), ..variant("recurrent-e2e", Method::RecurrentE2e, 3, false) },
            ],
            // c7 of docs/recursive-calibration.md: copy-only graphs for the first 1,500 steps;
            // then small sums (leaves 0..3; the sixth session's lever).
            curriculum: vec![
                CurriculumStage { steps: 1500, n_nodes: None, max_depth: None, max_fan_in: Some(1), min_fan_in: None, leaf_values: None, until_due_acc: None, max_steps: None },
                // Ends on a measurement: at step 8,000 at the earliest, once copies and small
                // 2- and 3-parent sums are ≥ 0.9 right (a seed whose copy transition comes
                // late stays here instead of meeting the uniform-sum plateau; v4s2), and by
                // step 16,000 at the latest.
                CurriculumStage { steps: 6500, n_nodes: None, max_depth: None, max_fan_in: None, min_fan_in: None, leaf_values: Some(4), until_due_acc: Some(0.9), max_steps: Some(14_500) },
            ],
            all_transitions: false,
            interp: InterpConfig::default(),
            parallel_variants: true,
            resume: false,
        }
    }
}

impl RecursiveStudy {
    /// The `--quick` version: the smoke profile of spec §11.1 (train N = 12, depth ≤ 3;
    /// test N ∈ {12, 24, 48}, 64 graphs each), a few hundred steps, no curriculum, discrete +
    /// EC, feed-forward and a 64-wide interp model. That is far short of the copy transition
    /// (≈ 3,500–5,000 steps, docs/recursive-calibration.md), so R1–R10 fail honestly; the
    /// quick-scale claims Q1–Q3 check what this stage does show.
    pub fn quick() -> Self {
        let mut s = Self { name: "recursive-quick".into(), ..Self::default() };
        s.train.steps = 300;
        s.train.warmup_steps = 30;
        s.train.eval_every = 100;
        s.train.schedule = ScheduleKind::Constant;
        s.train.decay_steps = 0;
        s.train.decay_trigger = None;
        s.train.checkpoint_every = 0;
        s.eval.sizes = vec![12, 24, 48];
        s.eval.n_graphs = 64;
        s.eval.n_val = 32;
        s.curriculum.clear();
        s.variants.retain(|v| v.name == "discrete-ec" || v.name == "feedforward");
        for v in &mut s.variants {
            v.steps = None;
        }
        s.interp = InterpConfig { d_model: 64, n_heads: 4, contexts: 2, family_size: 16, ..InterpConfig::default() };
        s
    }

    /// The training-graph config of a curriculum stage.
    pub fn stage_data(&self, c: &CurriculumStage) -> CompGraphConfig {
        let mut d = self.data.clone();
        d.n_nodes = c.n_nodes.unwrap_or(d.n_nodes);
        d.max_depth = c.max_depth.unwrap_or(d.max_depth);
        d.max_fan_in = c.max_fan_in.unwrap_or(d.max_fan_in);
        d.leaf_values = c.leaf_values.or(d.leaf_values);
        // A stage's own minimum is checked (validate), the study's is narrowed to fit.
        d.min_fan_in = c.min_fan_in.unwrap_or(d.min_fan_in.min(d.max_fan_in));
        d
    }

    /// The curriculum as the training loop runs it (stage ends not yet measured).
    pub fn schedule(&self) -> Schedule {
        Schedule {
            stages: self
                .curriculum
                .iter()
                .map(|c| Stage { data: self.stage_data(c), steps: c.steps, until_due_acc: c.until_due_acc, max_steps: c.max_steps, ended_at: None })
                .collect(),
        }
    }

    /// The seed the models are initialised from.
    pub fn model_seed(&self) -> u64 {
        self.init_seed.unwrap_or(self.seed)
    }

    /// The block config of `v` (factor sizes from the data vocabulary).
    pub fn model_for(&self, v: &Variant) -> RecurrentConfig {
        RecurrentConfig { factor_sizes: self.data.vocab().sizes().to_vec(), n_layers: v.n_layers, ..self.model.clone() }
    }
}

impl Validate for RecursiveStudy {
    fn validate(&self) -> Result<(), ConfigError> {
        check(!self.name.is_empty() && !self.name.contains('/'), "name", "must be a non-empty name without `/`")?;
        self.data.validate().map_err(|e| ConfigError::Invalid { key: "data".into(), msg: e.to_string() })?;
        let largest = self.eval.sizes.iter().copied().max().unwrap_or(0);
        check(self.data.name_pool >= largest, "data.name_pool", format!("must be ≥ the largest eval size ({largest})"))?;
        self.model.validate()?;
        self.train.validate()?;
        check(self.e2e_loops > 0, "e2e_loops", "must be > 0")?;
        check((0.0..=1.0).contains(&self.corruption.batch_prob), "corruption.batch_prob", "must be in [0, 1]")?;
        check((0.0..=1.0).contains(&self.corruption.token_prob), "corruption.token_prob", "must be in [0, 1]")?;
        check(!self.eval.sizes.is_empty(), "eval.sizes", "must list at least one size")?;
        for (i, &n) in self.eval.sizes.iter().enumerate() {
            check(n >= self.data.n_leaves, &format!("eval.sizes[{i}]"), "must be ≥ data.n_leaves")?;
        }
        check(self.eval.n_graphs > 0 && self.eval.batch > 0 && self.eval.n_val > 0, "eval.n_graphs", "eval counts must be > 0")?;
        check(!self.variants.is_empty() || self.interp.enabled, "variants", "must list at least one variant (or leave interp.enabled on)")?;
        for (i, c) in self.curriculum.iter().enumerate() {
            let d = self.stage_data(c);
            d.validate().map_err(|e| ConfigError::Invalid { key: format!("curriculum[{i}]"), msg: e.to_string() })?;
            check(d.vocab().sizes() == self.data.vocab().sizes(), &format!("curriculum[{i}]"), "must keep the data vocabulary")?;
            if let Some(a) = c.until_due_acc {
                check(a > 0.0 && a <= 1.0, &format!("curriculum[{i}].until_due_acc"), "must be in (0, 1]")?;
            }
            if let Some(m) = c.max_steps {
                check(c.until_due_acc.is_some(), &format!("curriculum[{i}].max_steps"), "needs until_due_acc (a fixed stage lasts `steps`)")?;
                check(m >= c.steps, &format!("curriculum[{i}].max_steps"), format!("must be ≥ steps ({})", c.steps))?;
            }
        }
        for (i, v) in self.variants.iter().enumerate() {
            check(v.n_layers > 0, &format!("variants[{i}].n_layers"), "must be > 0")?;
            if let Some(n) = v.steps {
                check(n >= self.train.warmup_steps && n >= self.train.decay_steps, &format!("variants[{i}].steps"), "must be ≥ train.warmup_steps and train.decay_steps")?;
            }
            check(
                !v.error_correction || v.method == Method::Discrete,
                &format!("variants[{i}].error_correction"),
                "only the discrete method trains with corruption",
            )?;
        }
        Ok(())
    }
}

/// A curriculum stage at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub data: CompGraphConfig,
    /// Length, or the shortest length when `until_due_acc` is set.
    pub steps: u64,
    pub until_due_acc: Option<f64>,
    pub max_steps: Option<u64>,
    /// The first step after the stage, once an evaluation found `until_due_acc` met.
    pub ended_at: Option<u64>,
}

/// The curriculum of one training run: which graphs each step draws, and where the
/// measured stages ended (resumable state: `ends`/`set_ends`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    pub stages: Vec<Stage>,
}

impl Schedule {
    /// Stage index holding 0-based `step` and the stage's first step (None: past the
    /// curriculum, plain `data`).
    pub fn stage_at(&self, step: u64) -> Option<(usize, u64)> {
        let mut start = 0u64;
        for (i, st) in self.stages.iter().enumerate() {
            let end = match (st.ended_at, st.until_due_acc) {
                (Some(e), _) => e,
                (None, None) => start + st.steps,
                (None, Some(_)) => st.max_steps.map_or(u64::MAX, |m| start.saturating_add(m)),
            };
            if step < end {
                return Some((i, start));
            }
            start = end;
        }
        None
    }

    /// The graphs 0-based `step` trains on (`base` after the curriculum).
    pub fn data_at<'a>(&'a self, step: u64, base: &'a CompGraphConfig) -> &'a CompGraphConfig {
        self.stage_at(step).map_or(base, |(i, _)| &self.stages[i].data)
    }

    /// After an evaluation at `done` completed steps with one-step due-node accuracies
    /// `acc[k]` (k parents; None: no such node since the previous evaluation): end the
    /// current measured stage here if it has run its `steps` and every parent count from 1
    /// to its `max_fan_in` (at most 3) is at least `until_due_acc`. Returns the stage ended.
    pub fn observe(&mut self, done: u64, acc: &[Option<f64>; 4]) -> Option<usize> {
        let (i, start) = self.stage_at(done)?;
        let st = &mut self.stages[i];
        let want = st.until_due_acc.filter(|_| st.ended_at.is_none() && done >= start + st.steps && done > start)?;
        let met = (1..=st.data.max_fan_in.min(3)).all(|k| acc[k].is_some_and(|a| a >= want));
        met.then(|| {
            st.ended_at = Some(done);
            i
        })
    }

    /// The measured stage ends (resumable state).
    pub fn ends(&self) -> Vec<Option<u64>> {
        self.stages.iter().map(|s| s.ended_at).collect()
    }

    /// Restore `ends` (Err: a different number of stages).
    pub fn set_ends(&mut self, ends: &[Option<u64>]) -> Result<(), String> {
        if ends.len() != self.stages.len() {
            return Err(format!("saved curriculum has {} stages, the config {}", ends.len(), self.stages.len()));
        }
        for (s, e) in self.stages.iter_mut().zip(ends) {
            s.ended_at = *e;
        }
        Ok(())
    }

    /// Fixed-length stages only (methods without due-node measurements).
    pub fn fixed(mut self) -> Self {
        for s in &mut self.stages {
            s.until_due_acc = None;
            s.max_steps = None;
        }
        self
    }
}
