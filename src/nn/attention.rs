//! Multi-head causal self-attention: optional identity W_Q, biases, grouped KV
//! heads, partial RoPE, clamped relative positions with DeBERTa-style
//! content↔position terms. Attention is the only layer that mixes positions.
//!
//! `pattern = softmax(q·kᵀ/√d_head + causal mask)`, `z = pattern·v`, `out = z·W_Oᵀ`.
//! With relative positions (He et al., arXiv 2006.03654), δ(i, j) = clamp(j − i, −P, P):
//! `score_ij = (q_i·k_j + q_i·Kr[δ(i,j)] + k_j·Qr[δ(j,i)]) / √(3·d_head)`.
//!
//! `forward_cond` adds what a language-VAE needs (arXiv 2506.19418, spec §5.3): a
//! bidirectional pattern with a key padding mask, and a latent vector h per
//! layer injected as an extra key/value slot (`memory`: score q·h/√d_head), added
//! to every key and value (`kv`), or added to every query (`query`).

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
    /// Clamp distance P of relative positions (0 = none).
    #[serde(default)]
    pub rel_pos: usize,
    /// Window W of a learned per-head scalar bias per clamped distance (T5-style; fused
    /// kernel `ops::causal_attention_bias`); 0 = none.
    #[serde(default)]
    pub rel_bias: usize,
    /// The distance bias is `rel_bias_gain · table`: a single scalar per (head, distance)
    /// moves by about lr per Adam step, so a gain > 1 lets it reach a sharp positional
    /// pattern in as many steps as the multiplicative q·k terms (default 1).
    #[serde(default = "unit_gain")]
    pub rel_bias_gain: f64,
    /// Standard deviation of the distance-bias table's initial entries (before the
    /// gain); 0 = zeros, every head starting position-blind (default 0).
    #[serde(default)]
    pub rel_bias_init_std: f64,
}

fn unit_gain() -> f64 {
    1.0
}

/// One attention layer; field names are the checkpoint key segments.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Option<Linear>,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    rope: Option<Rope>,
    rel: Option<RelPos>,
    /// `(head_index, W)` distance bias when `rel_bias > 0`.
    rel_bias: Option<Tensor>,
    cfg: AttentionConfig,
    layer: usize,
}

/// Relative-position tables `(head_index, d_head, 2P + 1)`: content→position
/// keys `rel_k` and position→content queries `rel_q`.
#[derive(Debug, Clone)]
struct RelPos {
    rel_k: Tensor,
    rel_q: Tensor,
    max_dist: usize,
}

impl RelPos {
    /// Index tensor `(q, k)` with entries clamp(sign·(j − i), −P, P) + P.
    fn index(&self, t: usize, s: usize, sign: i64, device: &candle_core::Device) -> Result<Tensor> {
        let p = self.max_dist as i64;
        let off = s as i64 - t as i64;
        let idx: Vec<u32> = (0..t as i64)
            .flat_map(|i| (0..s as i64).map(move |j| ((sign * (j - i - off)).clamp(-p, p) + p) as u32))
            .collect();
        Tensor::from_vec(idx, (t, s), device)
    }

    /// Content↔position score terms `(b, h, q, k)` for heads-first q, k.
    fn scores(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        let (b, h, t, _) = q.dims4()?;
        let s = k.dim(2)?;
        let gather = |x: &Tensor, table: &Tensor, rows: usize, cols: usize, sign: i64| -> Result<Tensor> {
            let all = x.broadcast_matmul(&table.unsqueeze(0)?)?; // (b, h, rows, 2P+1)
            let idx = self.index(rows, cols, sign, x.device())?.broadcast_as((b, h, rows, cols))?.contiguous()?;
            all.contiguous()?.gather(&idx, 3)
        };
        let c2p = gather(q, &self.rel_k, t, s, 1)?; // q_i · Kr[δ(i, j)]
        let p2c = gather(k, &self.rel_q, s, t, 1)?.transpose(2, 3)?; // k_j · Qr[δ(j, i)]
        c2p + p2c
    }
}

/// Where a latent vector `h: (batch, n_heads·d_head)` enters attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatentSlot {
    /// One extra key/value slot per head, k = v = h (outside the causal mask).
    Memory,
    /// K' = K + 1·hᵀ, V' = V + 1·hᵀ.
    Kv,
    /// Q' = Q + 1·hᵀ (after the projection, before RoPE and the head split).
    Query,
}

/// Per-call conditioning of `Attention::forward_cond`; the default is plain
/// causal attention (the fused kernel).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttnCond<'a> {
    /// Every query sees every (unpadded) key.
    pub bidirectional: bool,
    /// Valid length of each batch row; keys at positions ≥ len are masked.
    pub lengths: Option<&'a [usize]>,
    /// A latent vector `(batch, n_heads·d_head)` and where it enters.
    pub latent: Option<(LatentSlot, &'a Tensor)>,
}

impl AttnCond<'_> {
    /// Needs the composed path: the fused kernel knows only the causal mask.
    fn needs_mask(&self) -> bool {
        self.bidirectional || self.lengths.is_some() || matches!(self.latent, Some((LatentSlot::Memory, _)))
    }
}

/// Additive mask `(batch, 1, q, k + extra)`: 0 where allowed, −1e9 where not.
/// The `extra` trailing columns (memory slots) are always allowed.
fn additive_mask(b: usize, t: usize, extra: usize, cond: &AttnCond, device: &candle_core::Device) -> Result<Tensor> {
    let s = t + extra;
    let mut m = vec![0f32; b * t * s];
    for row in 0..b {
        let len = cond.lengths.map_or(t, |l| l[row].min(t));
        for i in 0..t {
            for j in 0..t {
                if j >= len || (!cond.bidirectional && j > i) {
                    m[(row * t + i) * s + j] = -1e9;
                }
            }
        }
    }
    Tensor::from_vec(m, (b, 1, t, s), device)
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
        let rel = if cfg.rel_pos > 0 {
            let n = 2 * cfg.rel_pos + 1;
            let init = super::params::Init::Normal { std: 0.02 };
            Some(RelPos {
                rel_k: vb.get((h, dh, n), "rel_k", init, false)?,
                rel_q: vb.get((h, dh, n), "rel_q", init, false)?,
                max_dist: cfg.rel_pos,
            })
        } else {
            None
        };
        let bias_init = if cfg.rel_bias_init_std > 0.0 { super::params::Init::Normal { std: cfg.rel_bias_init_std } } else { super::params::Init::Zeros };
        let rel_bias = if cfg.rel_bias > 0 { Some(vb.get((h, cfg.rel_bias), "rel_bias", bias_init, false)?) } else { None };
        Ok(Self { q_proj, k_proj, v_proj, out_proj, rope, rel, rel_bias, cfg: cfg.clone(), layer })
    }

    /// `x: (batch, pos, d_model) -> (batch, pos, d_model)`.
    ///
    /// q, k, v and z live in the TransformerLens layout (batch, pos, head_index,
    /// d_head); the fused kernel reads heads through strides, so no transpose
    /// is materialised. When a hook asks for the scores or the pattern, the
    /// composed path computes them explicitly.
    pub fn forward(&self, x: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        self.forward_cond(x, &AttnCond::default(), hooks)
    }

    /// `x: (batch, pos, d_model) -> (batch, pos, d_model)` under `cond`
    /// (padding mask, bidirectional pattern, latent injection).
    pub fn forward_cond(&self, x: &Tensor, cond: &AttnCond, hooks: &mut Hooks) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, hk, dh, l) = (self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.d_head, self.layer);
        let latent = |slot: LatentSlot| cond.latent.filter(|(s, _)| *s == slot).map(|(_, z)| z.unsqueeze(1)).transpose();
        if cond.latent.is_some() && hk != h {
            candle_core::bail!("latent injection needs n_kv_heads = n_heads (got {hk} and {h})");
        }
        let mut q = match &self.q_proj {
            Some(p) => p.forward(x)?,
            None => x.clone(),
        };
        let mut k = self.k_proj.forward(x)?;
        let mut v = self.v_proj.forward(x)?;
        if let Some(hq) = latent(LatentSlot::Query)? {
            q = q.broadcast_add(&hq)?;
        }
        if let Some(hkv) = latent(LatentSlot::Kv)? {
            k = k.broadcast_add(&hkv)?;
            v = v.broadcast_add(&hkv)?;
        }
        let q = q.reshape((b, t, h, dh))?;
        let k = k.reshape((b, t, hk, dh))?;
        let v = v.reshape((b, t, hk, dh))?;
        let (q, k) = match &self.rope {
            Some(rope) => (rope.apply(&q, 0)?, rope.apply(&k, 0)?),
            None => (q, k),
        };
        let q = hooks.apply(HookPoint::AttnQ(l), q)?;
        let k = hooks.apply(HookPoint::AttnK(l), k)?;
        let v = hooks.apply(HookPoint::AttnV(l), v)?;
        let memory = match cond.latent {
            Some((LatentSlot::Memory, m)) => Some(m.reshape((b, h, 1, dh))?),
            _ => None,
        };
        let z = match &self.rel {
            None if cond.needs_mask() => {
                if self.rope.is_some() || self.rel_bias.is_some() {
                    candle_core::bail!("masked/bidirectional attention does not support RoPE or a distance bias");
                }
                masked_pattern(&q, &k, &v, memory.as_ref(), cond, l, hooks)?
            }
            None if self.rel_bias.is_some() => {
                let table = self.rel_bias.as_ref().expect("checked");
                let bias = if self.cfg.rel_bias_gain == 1.0 { table.clone() } else { (table * self.cfg.rel_bias_gain)? };
                attend_bias(&q, &k, &v, &bias, l, hooks)?
            }
            None => attend(&q, &k, &v, l, hooks)?,
            Some(rel) => {
                let scale = 1.0 / (3.0 * dh as f64).sqrt();
                explicit_pattern(&q, &k, &v, l, scale, Some(rel), hooks)?
            }
        };
        let z = hooks.apply(HookPoint::AttnZ(l), z)?;
        self.out_proj.forward(&z.reshape((b, t, h * dh))?)
    }

    /// `W_O` (and its bias): `(d_model, n_heads·d_head)`, head `h` in columns
    /// `h·d_head..(h+1)·d_head`.
    pub fn out_proj(&self) -> &Linear {
        &self.out_proj
    }

    /// The attention output at the flattened query rows `rows` only (strictly increasing
    /// indices b·pos + i): `x: (batch, pos, d_model) -> (rows, d_model)`. Keys and values
    /// still use every position; the queries, the pattern, `P·V` and `W_O` run on the
    /// kept rows (fused, `ops::causal_attention_rows`). With RoPE, relative positions or
    /// a distance bias the full output is computed and gathered. No hooks.
    pub fn forward_rows(&self, x: &Tensor, rows: &[u32]) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let idx = Tensor::from_slice(rows, rows.len(), x.device())?;
        if self.rope.is_some() || self.rel.is_some() || self.rel_bias.is_some() {
            return self.forward(x, &mut Hooks::none())?.reshape((b * t, d))?.index_select(&idx, 0);
        }
        let (h, hk, dh) = (self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.d_head);
        let x_rows = x.reshape((b * t, d))?.index_select(&idx, 0)?;
        let q = match &self.q_proj {
            Some(p) => p.forward(&x_rows)?,
            None => x_rows,
        };
        let k = self.k_proj.forward(x)?;
        let v = self.v_proj.forward(x)?;
        let z = ops::causal_attention_rows(&q, &k, &v, rows, h, hk, 1.0 / (dh as f64).sqrt())?;
        self.out_proj.forward(&z)
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
        return explicit_pattern(q, k, v, layer, scale, None, hooks);
    }
    let flat = |x: &Tensor| x.reshape((b, x.dim(1)?, ()));
    ops::causal_attention(&flat(q)?, &flat(k)?, &flat(v)?, h, hk, scale)?.reshape((b, t, h, dh))
}

/// `attend` plus a per-head bias per clamped distance (`bias: (head_index, W)`), fused
/// unless a hook asks for the scores or the pattern.
pub fn attend_bias(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, layer: usize, hooks: &mut Hooks) -> Result<Tensor> {
    let (b, t, h, dh) = q.dims4()?;
    let hk = k.dim(2)?;
    let scale = 1.0 / (dh as f64).sqrt();
    if hooks.wants(&HookPoint::AttnScores(layer)) || hooks.wants(&HookPoint::AttnPattern(layer)) {
        let rep = h / hk;
        let heads = |x: &Tensor| x.transpose(1, 2)?.contiguous();
        let (qh, kh, vh) = (heads(q)?, repeat_kv(heads(k)?, rep)?, repeat_kv(heads(v)?, rep)?);
        let raw = (qh.matmul(&kh.t()?)? * scale)?.broadcast_add(&ops::distance_bias(bias, t, kh.dim(2)?)?.unsqueeze(0)?)?;
        let scores = hooks.apply(HookPoint::AttnScores(layer), raw)?;
        let pattern = hooks.apply(HookPoint::AttnPattern(layer), ops::causal_softmax(&scores, 1.0)?)?;
        return pattern.matmul(&vh)?.transpose(1, 2);
    }
    let flat = |x: &Tensor| x.reshape((b, x.dim(1)?, ()));
    ops::causal_attention_bias(&flat(q)?, &flat(k)?, &flat(v)?, bias, h, hk, scale)?.reshape((b, t, h, dh))
}

/// The composed path with `hook_attn_scores` and `hook_pattern`;
/// returns z `(batch, pos, head_index, d_head)`.
fn explicit_pattern(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    l: usize,
    scale: f64,
    rel: Option<&RelPos>,
    hooks: &mut Hooks,
) -> Result<Tensor> {
    let rep = q.dim(2)? / k.dim(2)?;
    let heads = |x: &Tensor| x.transpose(1, 2)?.contiguous(); // (b, h, pos, d_head)
    let (q, k, v) = (heads(q)?, repeat_kv(heads(k)?, rep)?, repeat_kv(heads(v)?, rep)?);
    let mut raw = q.matmul(&k.t()?)?; // (b, h, q, k)
    if let Some(rel) = rel {
        raw = (raw + rel.scores(&q, &k)?)?;
    }
    let scores = hooks.apply(HookPoint::AttnScores(l), (raw * scale)?)?;
    let pattern = hooks.apply(HookPoint::AttnPattern(l), ops::causal_softmax(&scores, 1.0)?)?;
    pattern.matmul(&v)?.transpose(1, 2)
}

/// The composed path under a padding mask / bidirectional pattern, with an
/// optional memory slot `mem: (batch, head_index, 1, d_head)` used as both key
/// and value; returns z `(batch, pos, head_index, d_head)`.
fn masked_pattern(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mem: Option<&Tensor>,
    cond: &AttnCond,
    l: usize,
    hooks: &mut Hooks,
) -> Result<Tensor> {
    let (b, t, _, dh) = q.dims4()?;
    let rep = q.dim(2)? / k.dim(2)?;
    let scale = 1.0 / (dh as f64).sqrt();
    let heads = |x: &Tensor| x.transpose(1, 2)?.contiguous(); // (b, h, pos, d_head)
    let (q, k, v) = (heads(q)?, repeat_kv(heads(k)?, rep)?, repeat_kv(heads(v)?, rep)?);
    let mut raw = q.matmul(&k.t()?)?; // (b, h, q, k)
    if let Some(m) = mem {
        raw = Tensor::cat(&[raw, q.matmul(&m.t()?)?], 3)?; // (b, h, q, k + 1)
    }
    let scores = hooks.apply(HookPoint::AttnScores(l), (raw * scale)?)?;
    let mask = additive_mask(b, t, usize::from(mem.is_some()), cond, q.device())?;
    let pattern = ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?;
    let pattern = hooks.apply(HookPoint::AttnPattern(l), pattern)?;
    let mut z = pattern.narrow(3, 0, t)?.contiguous()?.matmul(&v)?; // (b, h, q, d_head)
    if let Some(m) = mem {
        z = (z + pattern.narrow(3, t, 1)?.contiguous()?.broadcast_mul(m)?)?;
    }
    z.transpose(1, 2)
}

/// Repeat each KV head `rep` times: `(b, hk, t, dh) -> (b, hk·rep, t, dh)`.
fn repeat_kv(x: Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (b, hk, t, dh) = x.dims4()?;
    x.unsqueeze(2)?.broadcast_as((b, hk, rep, t, dh))?.reshape((b, hk * rep, t, dh))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn relative_index_is_clamped_offset() -> Result<()> {
        let dev = Device::Cpu;
        let rel = RelPos { rel_k: Tensor::zeros((1, 1, 5), candle_core::DType::F32, &dev)?, rel_q: Tensor::zeros((1, 1, 5), candle_core::DType::F32, &dev)?, max_dist: 2 };
        let idx: Vec<Vec<u32>> = rel.index(4, 4, 1, &dev)?.to_vec2()?;
        // j − i clamped to [−2, 2], shifted by 2.
        assert_eq!(idx[0], vec![2, 3, 4, 4]);
        assert_eq!(idx[3], vec![0, 0, 1, 2]);
        // With a KV cache (2 queries, 4 keys) query 0 is position 2.
        let idx: Vec<Vec<u32>> = rel.index(2, 4, 1, &dev)?.to_vec2()?;
        assert_eq!(idx[0], vec![0, 1, 2, 3]);
        Ok(())
    }

    #[test]
    fn position_terms_depend_only_on_the_offset() -> Result<()> {
        let dev = Device::Cpu;
        let rel = RelPos {
            rel_k: Tensor::randn(0f32, 1., (1, 3, 5), &dev)?,
            rel_q: Tensor::zeros((1, 3, 5), candle_core::DType::F32, &dev)?,
            max_dist: 2,
        };
        // The same query content at every position: c2p(i, j) is a function of j − i.
        let q = Tensor::ones((1, 1, 6, 3), candle_core::DType::F32, &dev)?;
        let k = Tensor::zeros((1, 1, 6, 3), candle_core::DType::F32, &dev)?;
        let s: Vec<Vec<f32>> = rel.scores(&q, &k)?.squeeze(0)?.squeeze(0)?.to_vec2()?;
        assert_eq!(s[1][2], s[3][4]);
        assert_eq!(s[0][5], s[1][4]); // offsets 5 and 3 both clamp to +2
        assert_ne!(s[2][2], s[2][3]);
        Ok(())
    }
}

#[cfg(test)]
mod cond_tests {
    use super::*;
    use crate::nn::ops::cpu::testing::{check_fd, max_abs_diff, randn};
    use crate::nn::Params;
    use candle_core::Device;

    fn layer(seed: u64) -> Result<Attention> {
        let cfg = AttentionConfig {
            d_model: 8,
            n_heads: 2,
            n_kv_heads: 2,
            d_head: 4,
            identity_q: false,
            bias: true,
            rope_frac: 0.0,
            rope_base: 10_000.0,
            max_seq_len: 8,
            init: InitScheme::Pytorch,
            rel_pos: 0,
            rel_bias: 0,
            rel_bias_gain: 1.0,
            rel_bias_init_std: 0.0,
        };
        Attention::new(&cfg, 0, &Params::new(seed, &Device::Cpu).root())
    }

    #[test]
    fn the_distance_bias_starts_at_zero_or_at_the_requested_spread() -> Result<()> {
        let table = |std: f64| -> Result<Vec<f32>> {
            let cfg = AttentionConfig { rel_bias: 16, rel_bias_gain: 10.0, rel_bias_init_std: std, ..layer(0)?.cfg };
            let params = Params::new(7, &Device::Cpu);
            Attention::new(&cfg, 0, &params.root())?;
            params.get("rel_bias").expect("the table is a parameter").flatten_all()?.to_vec1::<f32>()
        };
        assert!(table(0.0)?.iter().all(|&x| x == 0.0));
        let t = table(0.5)?;
        let mean = t.iter().map(|&x| x as f64).sum::<f64>() / t.len() as f64;
        let sd = (t.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / t.len() as f64).sqrt();
        assert_eq!(t.len(), 2 * 16);
        assert!((0.3..0.7).contains(&sd), "sample sd {sd} for std 0.5");
        Ok(())
    }

    #[test]
    fn masked_path_matches_the_fused_kernel_without_padding() -> Result<()> {
        let attn = layer(1)?;
        let x = randn(&[2, 5, 8], 3, 1.0);
        let fused = attn.forward(&x, &mut Hooks::none())?;
        let lengths = [5usize, 5];
        let cond = AttnCond { lengths: Some(&lengths), ..Default::default() };
        let composed = attn.forward_cond(&x, &cond, &mut Hooks::none())?;
        assert!(max_abs_diff(&fused, &composed) < 1e-5);
        Ok(())
    }

    #[test]
    fn padded_keys_are_invisible() -> Result<()> {
        let attn = layer(2)?;
        let x = randn(&[1, 6, 8], 4, 1.0);
        let lengths = [4usize];
        let z = randn(&[1, 8], 9, 1.0);
        for slot in [None, Some(LatentSlot::Memory), Some(LatentSlot::Kv), Some(LatentSlot::Query)] {
            let cond = AttnCond { bidirectional: true, lengths: Some(&lengths), latent: slot.map(|s| (s, &z)) };
            let a = attn.forward_cond(&x, &cond, &mut Hooks::none())?.narrow(1, 0, 4)?;
            // Change only the padded positions.
            let changed = Tensor::cat(&[x.narrow(1, 0, 4)?, randn(&[1, 2, 8], 5, 3.0)], 1)?;
            let b = attn.forward_cond(&changed, &cond, &mut Hooks::none())?.narrow(1, 0, 4)?;
            assert!(max_abs_diff(&a, &b) < 1e-6, "{slot:?}");
        }
        Ok(())
    }

    #[test]
    fn kv_key_shift_cancels_in_softmax_but_query_shift_does_not() -> Result<()> {
        // Spec §5.3: adding h to every key shifts each query's scores equally.
        let attn = layer(3)?;
        let x = randn(&[1, 5, 8], 6, 1.0);
        let z = randn(&[1, 8], 7, 1.0);
        let mut hooks = Hooks::capture([HookPoint::AttnPattern(0)]);
        let none = AttnCond { bidirectional: true, ..Default::default() };
        attn.forward_cond(&x, &none, &mut hooks)?;
        let base = hooks.cache[&HookPoint::AttnPattern(0)].clone();
        let pattern_of = |slot| -> Result<Tensor> {
            let mut hooks = Hooks::capture([HookPoint::AttnPattern(0)]);
            let cond = AttnCond { bidirectional: true, lengths: None, latent: Some((slot, &z)) };
            attn.forward_cond(&x, &cond, &mut hooks)?;
            Ok(hooks.cache[&HookPoint::AttnPattern(0)].clone())
        };
        let q = pattern_of(LatentSlot::Query)?;
        assert!(max_abs_diff(&base, &q) > 1e-3);
        // Kv shifts every score of query t by the same q_t·h: the pattern is unchanged.
        let kv = pattern_of(LatentSlot::Kv)?;
        assert!(max_abs_diff(&base, &kv) < 1e-5);
        Ok(())
    }

    #[test]
    fn latent_and_input_gradients_match_finite_differences() -> Result<()> {
        let attn = layer(4)?;
        let x = randn(&[2, 4, 8], 8, 1.0);
        let lengths = [4usize, 3];
        for slot in [LatentSlot::Memory, LatentSlot::Kv, LatentSlot::Query] {
            let f = |z: &Tensor| {
                let cond = AttnCond { bidirectional: false, lengths: Some(&lengths), latent: Some((slot, z)) };
                attn.forward_cond(&x, &cond, &mut Hooks::none())
            };
            check_fd(&f, &randn(&[2, 8], 10, 1.0), 11);
            let z = randn(&[2, 8], 12, 1.0);
            let g = |x: &Tensor| {
                let cond = AttnCond { bidirectional: true, lengths: Some(&lengths), latent: Some((slot, &z)) };
                attn.forward_cond(x, &cond, &mut Hooks::none())
            };
            check_fd(&g, &x, 13);
        }
        Ok(())
    }
}
