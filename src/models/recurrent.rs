//! A recurrent Transformer over factored tokens (arXiv 2510.14095; spec
//! `recursive-latent-reasoning.md` §3–4): summed per-factor embeddings, one pre-LN causal
//! block stack applied repeatedly, a final LayerNorm and one readout head per factor.
//! Discrete latent: each step's per-factor argmax is re-embedded; continuous latent: the
//! normalised hidden state is fed back. Step t's hook points are `loop.{t}.…`.
//! Positions: a learned per-head bias per clamped distance (T5-style, fused kernel; the
//! spec's cheaper option) or partial RoPE stand in for the spec's clamped DeBERTa buckets. May import `nn` and `interp::hooks`.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::config::{check, ConfigError, Validate};
use crate::interp::hooks::{HookPoint, Hooks};
use crate::nn::attention::AttentionConfig;
use crate::nn::linear::InitScheme;
use crate::nn::{Act, Block, BlockConfig, FactorHeads, FactoredEmbedding, FfnKind, Init, MlpConfig, Norm, NormKind, Params, ResidualKind};

/// Model hyper-parameters (`[model]` of the recursive study; CPU profile of spec §11.2).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrentConfig {
    /// Vocabulary size of each token factor (default [7, 65, 2, 25]: p = 23, M = 64, ADD).
    pub factor_sizes: Vec<usize>,
    /// Residual width (default 64).
    pub d_model: usize,
    /// Layers per recurrent block (default 3).
    pub n_layers: usize,
    /// Attention heads (default 4).
    pub n_heads: usize,
    /// FFN hidden width (default 256 = 4d).
    pub d_mlp: usize,
    /// Fraction of each head's dims under RoPE; the rest is position-free (default 0.5).
    pub rope_frac: f64,
    /// RoPE base (default 10000).
    pub rope_base: f64,
    /// Longest input (RoPE table size; default 1024).
    pub max_seq_len: usize,
    /// Window W of the T5-style per-head scalar bias per clamped distance (spec §11.2's
    /// cheaper position option, fused kernel); when > 0 it replaces RoPE (default 32).
    /// 0 = partial RoPE with `rope_frac`.
    #[serde(default)]
    pub pos_bias_window: usize,
    /// Gain of the distance bias (`AttentionConfig::rel_bias_gain`; default 1).
    #[serde(default = "unit")]
    pub pos_bias_gain: f64,
    /// Standard deviation of the distance-bias table's initial entries, before the gain
    /// (`AttentionConfig::rel_bias_init_std`; default 0 = zeros).
    #[serde(default)]
    pub pos_bias_init_std: f64,
}

fn unit() -> f64 {
    1.0
}

impl Default for RecurrentConfig {
    fn default() -> Self {
        Self { factor_sizes: vec![7, 65, 2, 25], d_model: 64, n_layers: 3, n_heads: 4, d_mlp: 256, rope_frac: 0.5, rope_base: 10000.0, max_seq_len: 1024, pos_bias_window: 32, pos_bias_gain: 1.0, pos_bias_init_std: 0.0 }
    }
}

impl RecurrentConfig {
    /// The position encoding, in words (printed with results: the bias is an approximation
    /// of the spec's DeBERTa terms).
    pub fn positions(&self) -> String {
        if self.pos_bias_window > 0 {
            format!("T5-style per-head distance bias, window {} (spec §11.2 cheap option, not DeBERTa c2p/p2c)", self.pos_bias_window)
        } else {
            format!("partial RoPE (rope_frac {}) instead of clamped DeBERTa buckets", self.rope_frac)
        }
    }

    pub fn d_head(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// The config of every layer (pre-LN, ReLU MLP, biases, PyTorch init).
    pub fn block(&self) -> BlockConfig {
        BlockConfig {
            attn: AttentionConfig {
                d_model: self.d_model,
                n_heads: self.n_heads,
                n_kv_heads: self.n_heads,
                d_head: self.d_head(),
                identity_q: false,
                bias: true,
                rope_frac: if self.pos_bias_window > 0 { 0.0 } else { self.rope_frac },
                rope_base: self.rope_base,
                max_seq_len: self.max_seq_len,
                init: InitScheme::Pytorch,
                rel_pos: 0,
                rel_bias: self.pos_bias_window,
                rel_bias_gain: self.pos_bias_gain,
                rel_bias_init_std: self.pos_bias_init_std,
            },
            mlp: MlpConfig { d_model: self.d_model, d_mlp: self.d_mlp, kind: FfnKind::Mlp, act: Act::Relu, bias: true, init: InitScheme::Pytorch },
            norm: NormKind::Layer,
            norm_eps: 1e-5,
            residual: ResidualKind::Sequential,
        }
    }
}

impl Validate for RecurrentConfig {
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        let k = |f: &str| format!("model.{f}");
        check(!self.factor_sizes.is_empty() && self.factor_sizes.iter().all(|&n| n > 0), &k("factor_sizes"), "must be non-empty sizes > 0")?;
        check(self.d_model > 0 && self.n_heads > 0 && self.d_model.is_multiple_of(self.n_heads), &k("n_heads"), "must divide d_model")?;
        check(self.n_layers > 0, &k("n_layers"), "must be > 0")?;
        check(self.d_mlp > 0, &k("d_mlp"), "must be > 0")?;
        check((0.0..=1.0).contains(&self.rope_frac), &k("rope_frac"), "must be in [0, 1]")?;
        check(self.max_seq_len > 0, &k("max_seq_len"), "must be > 0")?;
        Ok(())
    }
}

/// When discrete iteration stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// Exactly this many steps.
    Fixed(usize),
    /// Until no position of any sequence changes, at most this many steps.
    UntilFixedPoint(usize),
}

/// The model. Parameter names: `embed.{f}.weight`, `blocks.{l}.…`, `ln_final.*`, `heads.{f}.*`.
pub struct Recurrent {
    embed: FactoredEmbedding,
    blocks: Vec<Block>,
    ln_final: Norm,
    heads: FactorHeads,
    params: Params,
    pub cfg: RecurrentConfig,
}

impl Recurrent {
    /// Build with parameters initialised from `seed` (embeddings N(0, 1) as in PyTorch).
    pub fn new(cfg: &RecurrentConfig, seed: u64, device: &Device) -> Result<Self> {
        let params = Params::new(seed, device);
        let vb = params.root();
        let d = cfg.d_model;
        let embed = FactoredEmbedding::new(&cfg.factor_sizes, d, Init::Normal { std: 1.0 }, &vb.pp("embed"))?;
        let blocks = (0..cfg.n_layers).map(|l| Block::new(&cfg.block(), l, &vb.pp("blocks").pp(l))).collect::<Result<Vec<_>>>()?;
        let ln_final = Norm::new(NormKind::Layer, d, 1e-5, &vb.pp("ln_final"))?;
        let heads = FactorHeads::new(d, &cfg.factor_sizes, true, InitScheme::Pytorch, &vb.pp("heads"))?;
        Ok(Self { embed, blocks, ln_final, heads, params, cfg: cfg.clone() })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn n_factors(&self) -> usize {
        self.heads.len()
    }

    /// `state: (batch, pos, n_factors) u32 -> (batch, pos, d_model)`, at `hook_embed`.
    pub fn embed(&self, state: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let t = state.dim(1)?;
        if t > self.cfg.max_seq_len {
            candle_core::bail!("sequence of length {t} exceeds model.max_seq_len = {}", self.cfg.max_seq_len);
        }
        hooks.apply(HookPoint::Embed, self.embed.forward(state)?)
    }

    /// The block stack and final LayerNorm: `resid: (batch, pos, d_model) -> (batch, pos, d_model)`.
    pub fn encode(&self, resid: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let mut resid = resid.clone();
        for block in &self.blocks {
            resid = block.forward(&resid, hooks)?;
        }
        hooks.apply(HookPoint::LnFinalNormalized, self.ln_final.forward(&resid)?)
    }

    /// Per-factor logits `(batch, pos, vocab_f)`; `hook_logits` sees them concatenated
    /// along the last axis.
    pub fn readout(&self, hidden: &Tensor, hooks: &mut Hooks) -> Result<Vec<Tensor>> {
        let logits = self.heads.forward(hidden)?;
        if !hooks.wants(&HookPoint::Logits) {
            return Ok(logits);
        }
        let all = hooks.apply(HookPoint::Logits, Tensor::cat(&logits, D::Minus1)?)?;
        let mut start = 0;
        let mut out = Vec::with_capacity(logits.len());
        for l in &logits {
            let n = l.dim(D::Minus1)?;
            out.push(all.narrow(D::Minus1, start, n)?);
            start += n;
        }
        Ok(out)
    }

    /// One transition from a discrete state: `state: (batch, pos, n_factors) u32 ->` per-factor logits.
    pub fn step(&self, state: &Tensor, hooks: &mut Hooks) -> Result<Vec<Tensor>> {
        let resid = self.embed(state, hooks)?;
        let hidden = self.encode(&resid, hooks)?;
        self.readout(&hidden, hooks)
    }

    /// The discrete bottleneck: per-factor argmax, `-> (batch, pos, n_factors) u32`.
    pub fn discretize(logits: &[Tensor]) -> Result<Tensor> {
        let ids = logits.iter().map(|l| l.argmax(D::Minus1)).collect::<Result<Vec<_>>>()?;
        Tensor::stack(&ids, 2)?.to_dtype(DType::U32)
    }

    /// Discrete recurrence from `state` (no gradient crosses the bottleneck); returns the
    /// state after each step. Step t's hooks are `loop.{t}.…`.
    pub fn iterate(&self, state: &Tensor, halt: Halt, hooks: &mut Hooks) -> Result<Vec<Tensor>> {
        let max = match halt {
            Halt::Fixed(n) | Halt::UntilFixedPoint(n) => n,
        };
        let mut states = Vec::with_capacity(max);
        let mut cur = state.clone();
        for t in 0..max {
            hooks.set_step(Some(t));
            let next = Self::discretize(&self.step(&cur, hooks)?)?.detach();
            let unchanged = matches!(halt, Halt::UntilFixedPoint(_)) && next.ne(&cur)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? == 0;
            states.push(next.clone());
            cur = next;
            if unchanged {
                break;
            }
        }
        hooks.set_step(None);
        Ok(states)
    }

    /// Discrete recurrence with a per-sequence early exit: a sequence leaves the batch at
    /// the first step whose output equals its input (a fixed point of the step), or after
    /// `cap` steps; later steps run on the sequences still changing only. Returns the final
    /// state `(batch, pos, n_factors)` and the steps each sequence ran (the fixed-point
    /// check counts: a sequence already at its fixed point runs 1 step).
    pub fn solve(&self, state: &Tensor, cap: usize, hooks: &mut Hooks) -> Result<(Tensor, Vec<usize>)> {
        let b = state.dim(0)?;
        if b == 0 {
            return Ok((state.clone(), Vec::new()));
        }
        let mut done: Vec<Option<Tensor>> = vec![None; b];
        let mut steps = vec![0usize; b];
        let mut active: Vec<usize> = (0..b).collect();
        let mut cur = state.clone();
        for t in 0..cap.max(1) {
            if active.is_empty() {
                break;
            }
            hooks.set_step(Some(t));
            let next = Self::discretize(&self.step(&cur, hooks)?)?.detach();
            let changed: Vec<u32> = next.ne(&cur)?.to_dtype(DType::U32)?.flatten_from(1)?.sum(1)?.to_vec1()?;
            let last = t + 1 >= cap;
            let mut keep = Vec::with_capacity(active.len());
            for (i, &row) in active.iter().enumerate() {
                if changed[i] == 0 || last {
                    done[row] = Some(next.get(i)?);
                    steps[row] = t + 1;
                } else {
                    keep.push(i);
                }
            }
            cur = if keep.len() == active.len() {
                next
            } else if keep.is_empty() {
                next.narrow(0, 0, 0)?
            } else {
                let idx = Tensor::new(keep.iter().map(|&i| i as u32).collect::<Vec<_>>(), next.device())?;
                next.index_select(&idx, 0)?
            };
            active = keep.iter().map(|&i| active[i]).collect();
        }
        hooks.set_step(None);
        let rows = done.into_iter().map(|r| r.ok_or_else(|| candle_core::Error::Msg("solve: a sequence was left unfinished".into()))).collect::<Result<Vec<_>>>()?;
        Ok((Tensor::stack(&rows, 0)?, steps))
    }

    /// Continuous recurrence: embed once, then `h_t = encode(h_{t−1})` for `steps` steps,
    /// reading every step out (differentiable through all steps). Returns per-step logits.
    pub fn iterate_continuous(&self, state: &Tensor, steps: usize, hooks: &mut Hooks) -> Result<Vec<Vec<Tensor>>> {
        self.continuous_steps(state, steps, hooks, false)
    }

    /// `iterate_continuous` for evaluation: the same values, but each step's hidden state
    /// is detached from autograd, so only one step's activations are alive at a time (with
    /// history, every step's attention patterns stay referenced: gigabytes at N = 48).
    pub fn iterate_continuous_eval(&self, state: &Tensor, steps: usize, hooks: &mut Hooks) -> Result<Vec<Vec<Tensor>>> {
        self.continuous_steps(state, steps, hooks, true)
    }

    fn continuous_steps(&self, state: &Tensor, steps: usize, hooks: &mut Hooks, detach: bool) -> Result<Vec<Vec<Tensor>>> {
        let mut out = Vec::with_capacity(steps);
        hooks.set_step(Some(0));
        let mut hidden = self.embed(state, hooks)?;
        for t in 0..steps {
            hooks.set_step(Some(t));
            hidden = self.encode(&hidden, hooks)?;
            if detach {
                hidden = hidden.detach();
            }
            let logits = self.readout(&hidden, hooks)?;
            out.push(if detach { logits.iter().map(Tensor::detach).collect() } else { logits });
        }
        hooks.set_step(None);
        Ok(out)
    }
}
