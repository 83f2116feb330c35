//! Multi-head causal self-attention: optional identity W_Q, biases, grouped KV
//! heads, partial RoPE. Attention is the only layer that mixes positions.
//!
//! `pattern = softmax(q·kᵀ/√d_head + causal mask)`, `z = pattern·v`, `out = z·W_Oᵀ`.

use candle_core::{Result, Tensor};

use super::linear::{InitScheme, Linear};
use super::ops;
use super::params::ParamBuilder;
use super::rope::Rope;
use crate::interp::hooks::{HookPoint, Hooks};

/// Attention configuration (`[model]` keys resolved per layer).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    pub d_model: usize,
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention); = n_heads for MHA.
    pub n_kv_heads: usize,
    pub d_head: usize,
    /// W_Q fixed to the identity (no parameter); needs n_heads·d_head = d_model.
    pub identity_q: bool,
    pub bias: bool,
    /// Fraction of each head's dims rotated by RoPE (0 = no RoPE).
    pub rope_frac: f64,
    pub rope_base: f64,
    pub max_seq_len: usize,
    pub init: InitScheme,
}

/// One attention layer; field names are the checkpoint key segments.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Option<Linear>,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    rope: Option<Rope>,
    cfg: AttentionConfig,
    layer: usize,
}

impl Attention {
    pub fn new(cfg: &AttentionConfig, layer: usize, vb: &ParamBuilder) -> Result<Self> {
        let (d, h, hk, dh) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let q_proj = if cfg.identity_q {
            None
        } else {
            Some(Linear::new(d, h * dh, cfg.bias, cfg.init, false, &vb.pp("q_proj"))?)
        };
        let k_proj = Linear::new(d, hk * dh, cfg.bias, cfg.init, false, &vb.pp("k_proj"))?;
        let v_proj = Linear::new(d, hk * dh, cfg.bias, cfg.init, false, &vb.pp("v_proj"))?;
        let out_proj = Linear::new(h * dh, d, cfg.bias, cfg.init, false, &vb.pp("out_proj"))?;
        let rot_dims = ((cfg.rope_frac * dh as f64) as usize) / 2 * 2;
        let rope = if rot_dims > 0 {
            Some(Rope::new(rot_dims, cfg.rope_base, cfg.max_seq_len, vb.device())?)
        } else {
            None
        };
        Ok(Self { q_proj, k_proj, v_proj, out_proj, rope, cfg: cfg.clone(), layer })
    }

    /// `x: (batch, pos, d_model) -> (batch, pos, d_model)`.
    ///
    /// q, k, v and z live in the TransformerLens layout (batch, pos, head_index,
    /// d_head); the fused kernel reads heads through strides, so no transpose
    /// is materialised. When a hook asks for the scores or the pattern, the
    /// composed path computes them explicitly.
    pub fn forward(&self, x: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, hk, dh, l) = (self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.d_head, self.layer);
        let q = match &self.q_proj {
            Some(p) => p.forward(x)?,
            None => x.clone(),
        }
        .reshape((b, t, h, dh))?;
        let k = self.k_proj.forward(x)?.reshape((b, t, hk, dh))?;
        let v = self.v_proj.forward(x)?.reshape((b, t, hk, dh))?;
        let (q, k) = match &self.rope {
            Some(rope) => (rope.apply(&q, 0)?, rope.apply(&k, 0)?),
            None => (q, k),
        };
        let q = hooks.apply(HookPoint::AttnQ(l), q)?;
        let k = hooks.apply(HookPoint::AttnK(l), k)?;
        let v = hooks.apply(HookPoint::AttnV(l), v)?;
        let z = attend(&q, &k, &v, l, hooks)?;
        let z = hooks.apply(HookPoint::AttnZ(l), z)?;
        self.out_proj.forward(&z.reshape((b, t, h * dh))?)
    }
}

/// Causal attention of layer `layer` in the TransformerLens layout, shared by
/// every model: `q: (batch, query_pos, head_index, d_head)`, `k, v: (batch,
/// key_pos, kv_head, d_head)` `-> z: (batch, query_pos, head_index, d_head)`,
/// scale 1/√d_head; query i sees keys ≤ i + (key_pos − query_pos) (a KV cache).
///
/// The fused kernel runs unless a hook asks for `hook_attn_scores` or
/// `hook_pattern`; then the composed path computes them explicitly.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, layer: usize, hooks: &mut Hooks) -> Result<Tensor> {
    let (b, t, h, dh) = q.dims4()?;
    let hk = k.dim(2)?;
    let scale = 1.0 / (dh as f64).sqrt();
    if hooks.wants(&HookPoint::AttnScores(layer)) || hooks.wants(&HookPoint::AttnPattern(layer)) {
        return explicit_pattern(q, k, v, layer, scale, hooks);
    }
    let flat = |x: &Tensor| x.reshape((b, x.dim(1)?, ()));
    ops::causal_attention(&flat(q)?, &flat(k)?, &flat(v)?, h, hk, scale)?.reshape((b, t, h, dh))
}

/// The composed path with `hook_attn_scores` and `hook_pattern`;
/// returns z `(batch, pos, head_index, d_head)`.
fn explicit_pattern(q: &Tensor, k: &Tensor, v: &Tensor, l: usize, scale: f64, hooks: &mut Hooks) -> Result<Tensor> {
    let rep = q.dim(2)? / k.dim(2)?;
    let heads = |x: &Tensor| x.transpose(1, 2)?.contiguous(); // (b, h, pos, d_head)
    let (q, k, v) = (heads(q)?, repeat_kv(heads(k)?, rep)?, repeat_kv(heads(v)?, rep)?);
    let scores = hooks.apply(HookPoint::AttnScores(l), (q.matmul(&k.t()?)? * scale)?)?; // (b, h, q, k)
    let pattern = hooks.apply(HookPoint::AttnPattern(l), ops::causal_softmax(&scores, 1.0)?)?;
    pattern.matmul(&v)?.transpose(1, 2)
}

/// Repeat each KV head `rep` times: `(b, hk, t, dh) -> (b, hk·rep, t, dh)`.
fn repeat_kv(x: Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (b, hk, t, dh) = x.dims4()?;
    x.unsqueeze(2)?.broadcast_as((b, hk, rep, t, dh))?.reshape((b, hk * rep, t, dh))
}
