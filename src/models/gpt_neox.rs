//! GPT-NeoX / Pythia (arXiv 2304.01373) from a Hugging Face folder: parallel
//! residual, partial rotary, fused per-head interleaved QKV, erf GELU, untied
//! `embed_out`. Field names are the HF key segments, so every parameter keeps
//! its HF name (`gpt_neox.layers.{l}.attention.query_key_value.weight`).
//! Hook points as TransformerLens names them. May import `nn` and `interp::hooks`.

use std::path::Path;

use candle_core::{Device, Result, Tensor};

use super::hf::{self, require, FieldError, HfAct, HfError, HfLoader, HfWeights, KvCache};
use super::LanguageModel;
use crate::interp::hooks::{HookPoint, Hooks};
use crate::nn::attention::attend;
use crate::nn::{Embedding, Linear, Norm, NormKind, Params, ResidualKind};
use crate::nn::rope::{Rope, RopeCache};

/// `config.json` of `GPTNeoXForCausalLM`: keys as HF spells them (extra keys ignored).
/// Newer transformers write `partial_rotary_factor`/`rope_theta` (or a
/// `rope_parameters` table) instead of `rotary_pct`/`rotary_emb_base`; all are read.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct HfGptNeoxConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Default `gelu` (exact erf).
    #[serde(default = "default_gelu")]
    pub hidden_act: String,
    pub rotary_pct: Option<f64>,
    pub partial_rotary_factor: Option<f64>,
    pub rotary_emb_base: Option<f64>,
    pub rope_theta: Option<f64>,
    pub rope_parameters: Option<HfRopeParameters>,
    pub rope_scaling: Option<serde_json::Value>,
    /// Default 2048.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Default 1e-5.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// Default true.
    #[serde(default = "yes")]
    pub use_parallel_residual: bool,
    /// Default false.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on QKV and `dense` (default true).
    #[serde(default = "yes")]
    pub attention_bias: bool,
}

/// The `rope_parameters` table of newer transformers versions.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct HfRopeParameters {
    pub rope_theta: Option<f64>,
    pub partial_rotary_factor: Option<f64>,
    pub rope_type: Option<String>,
}

fn default_gelu() -> String {
    "gelu".into()
}
fn default_max_pos() -> usize {
    2048
}
fn default_ln_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// `rope_scaling` / `rope_parameters.rope_type` must be absent or "default".
pub(crate) fn check_plain_rope(scaling: &Option<serde_json::Value>, params: &Option<HfRopeParameters>) -> std::result::Result<(), FieldError> {
    if let Some(s) = scaling.as_ref().filter(|s| !s.is_null()) {
        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(|t| t.as_str()).unwrap_or("?");
        require(kind == "default", "rope_scaling", &format!("RoPE scaling `{kind}` is not supported (only plain RoPE)"))?;
    }
    if let Some(kind) = params.as_ref().and_then(|p| p.rope_type.as_deref()) {
        require(kind == "default", "rope_parameters.rope_type", &format!("`{kind}` is not supported (only `default`)"))?;
    }
    Ok(())
}

/// The resolved GPT-NeoX config: the only type the model code sees.
#[derive(Debug, Clone, PartialEq)]
pub struct GptNeoxConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_mlp: usize,
    /// Leading dims of each head under RoPE: ⌊d_head · rotary_pct⌋.
    pub rot_dims: usize,
    pub rope_base: f64,
    pub norm_eps: f64,
    pub residual: ResidualKind,
    pub act: HfAct,
    pub tied: bool,
    pub bias: bool,
    pub max_seq_len: usize,
}

impl GptNeoxConfig {
    pub fn d_head(&self) -> usize {
        self.d_model / self.n_heads
    }
}

impl HfGptNeoxConfig {
    pub fn into_config(self) -> std::result::Result<GptNeoxConfig, FieldError> {
        check_plain_rope(&self.rope_scaling, &self.rope_parameters)?;
        for (v, f) in [
            (self.vocab_size, "vocab_size"),
            (self.hidden_size, "hidden_size"),
            (self.num_hidden_layers, "num_hidden_layers"),
            (self.num_attention_heads, "num_attention_heads"),
            (self.intermediate_size, "intermediate_size"),
        ] {
            require(v > 0, f, "must be > 0")?;
        }
        require(
            self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size",
            &format!("{} is not divisible by num_attention_heads = {}", self.hidden_size, self.num_attention_heads),
        )?;
        let rp = self.rope_parameters.as_ref();
        let pct = self.rotary_pct.or(self.partial_rotary_factor).or(rp.and_then(|p| p.partial_rotary_factor)).unwrap_or(0.25);
        let base = self.rotary_emb_base.or(self.rope_theta).or(rp.and_then(|p| p.rope_theta)).unwrap_or(10000.0);
        require((0.0..=1.0).contains(&pct), "rotary_pct", "must be in [0, 1]")?;
        require(base > 0.0, "rotary_emb_base", "must be > 0")?;
        let d_head = self.hidden_size / self.num_attention_heads;
        let rot_dims = (d_head as f64 * pct) as usize;
        require(rot_dims.is_multiple_of(2), "rotary_pct", &format!("gives an odd number of rotary dims ({rot_dims})"))?;
        require(self.layer_norm_eps > 0.0, "layer_norm_eps", "must be > 0")?;
        Ok(GptNeoxConfig {
            vocab_size: self.vocab_size,
            d_model: self.hidden_size,
            n_layers: self.num_hidden_layers,
            n_heads: self.num_attention_heads,
            d_mlp: self.intermediate_size,
            rot_dims,
            rope_base: base,
            norm_eps: self.layer_norm_eps,
            residual: if self.use_parallel_residual { ResidualKind::Parallel } else { ResidualKind::Sequential },
            act: HfAct::from_hf(&self.hidden_act)?,
            tied: self.tie_word_embeddings,
            bias: self.attention_bias,
            max_seq_len: self.max_position_embeddings,
        })
    }
}

struct Attention {
    query_key_value: Linear,
    dense: Linear,
    n_heads: usize,
    d_head: usize,
    layer: usize,
}

impl Attention {
    fn new(cfg: &GptNeoxConfig, layer: usize, vb: &HfLoader) -> std::result::Result<Self, HfError> {
        let d = cfg.d_model;
        Ok(Self {
            query_key_value: vb.pp("query_key_value").linear(d, 3 * d, cfg.bias)?,
            dense: vb.pp("dense").linear(d, d, cfg.bias)?,
            n_heads: cfg.n_heads,
            d_head: cfg.d_head(),
            layer,
        })
    }

    /// `x: (batch, pos, d_model) -> (batch, pos, d_model)`.
    fn forward(&self, x: &Tensor, rope: Option<&Rope>, offset: usize, cache: Option<&mut KvCache>, hooks: &mut Hooks) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, dh, l) = (self.n_heads, self.d_head, self.layer);
        // The fused output is per-head interleaved: (head_index, [q, k, v], d_head).
        let qkv = self.query_key_value.forward(x)?.reshape((b, t, h, 3 * dh))?;
        let (q, k) = (qkv.narrow(3, 0, dh)?, qkv.narrow(3, dh, dh)?);
        let v = qkv.narrow(3, 2 * dh, dh)?.contiguous()?;
        let (q, k) = match rope {
            Some(rope) => (rope.apply(&q, offset)?, rope.apply(&k, offset)?),
            None => (q.contiguous()?, k.contiguous()?),
        };
        let q = hooks.apply(HookPoint::AttnQ(l), q)?;
        let k = hooks.apply(HookPoint::AttnK(l), k)?;
        let v = hooks.apply(HookPoint::AttnV(l), v)?;
        let (k, v) = match cache {
            Some(c) => c.append(l, k, v)?,
            None => (k, v),
        };
        let z = attend(&q, &k, &v, l, hooks)?;
        let z = hooks.apply(HookPoint::AttnZ(l), z)?;
        self.dense.forward(&z.reshape((b, t, h * dh))?)
    }
}

struct Mlp {
    dense_h_to_4h: Linear,
    dense_4h_to_h: Linear,
    act: HfAct,
    layer: usize,
}

impl Mlp {
    /// `x: (batch, pos, d_model) -> (batch, pos, d_model)`.
    fn forward(&self, x: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let pre = hooks.apply(HookPoint::MlpPre(self.layer), self.dense_h_to_4h.forward(x)?)?;
        let post = hooks.apply(HookPoint::MlpPost(self.layer), self.act.forward(&pre)?)?;
        self.dense_4h_to_h.forward(&post)
    }
}

struct Layer {
    input_layernorm: Norm,
    post_attention_layernorm: Norm,
    attention: Attention,
    mlp: Mlp,
    residual: ResidualKind,
    layer: usize,
}

impl Layer {
    fn new(cfg: &GptNeoxConfig, layer: usize, vb: &HfLoader) -> std::result::Result<Self, HfError> {
        let (d, m) = (cfg.d_model, cfg.d_mlp);
        Ok(Self {
            input_layernorm: vb.pp("input_layernorm").norm(NormKind::Layer, d, cfg.norm_eps)?,
            post_attention_layernorm: vb.pp("post_attention_layernorm").norm(NormKind::Layer, d, cfg.norm_eps)?,
            attention: Attention::new(cfg, layer, &vb.pp("attention"))?,
            mlp: Mlp {
                dense_h_to_4h: vb.pp("mlp.dense_h_to_4h").linear(d, m, true)?,
                dense_4h_to_h: vb.pp("mlp.dense_4h_to_h").linear(m, d, true)?,
                act: cfg.act,
                layer,
            },
            residual: cfg.residual,
            layer,
        })
    }

    /// `resid: (batch, pos, d_model) -> (batch, pos, d_model)`.
    /// Parallel: `x + attn(ln1 x) + mlp(ln2 x)`; sequential: `mid = x + attn(ln1 x)`, `mid + mlp(ln2 mid)`.
    fn forward(&self, resid: Tensor, rope: Option<&Rope>, offset: usize, cache: Option<&mut KvCache>, hooks: &mut Hooks) -> Result<Tensor> {
        let l = self.layer;
        let resid = hooks.apply(HookPoint::ResidPre(l), resid)?;
        let attn_in = hooks.apply(HookPoint::Ln1Normalized(l), self.input_layernorm.forward(&resid)?)?;
        let attn_out = self.attention.forward(&attn_in, rope, offset, cache, hooks)?;
        let attn_out = hooks.apply(HookPoint::AttnOut(l), attn_out)?;
        let (base, mlp_in) = match self.residual {
            ResidualKind::Parallel => ((&resid + attn_out)?, resid),
            ResidualKind::Sequential => {
                let mid = hooks.apply(HookPoint::ResidMid(l), (&resid + attn_out)?)?;
                (mid.clone(), mid)
            }
        };
        let mlp_in = hooks.apply(HookPoint::Ln2Normalized(l), self.post_attention_layernorm.forward(&mlp_in)?)?;
        let mlp_out = self.mlp.forward(&mlp_in, hooks)?;
        let mlp_out = hooks.apply(HookPoint::MlpOut(l), mlp_out)?;
        hooks.apply(HookPoint::ResidPost(l), (base + mlp_out)?)
    }
}

/// `GPTNeoXForCausalLM`. Parameters: `gpt_neox.embed_in.weight`,
/// `gpt_neox.layers.{l}.{input_layernorm, post_attention_layernorm, attention.query_key_value,
/// attention.dense, mlp.dense_h_to_4h, mlp.dense_4h_to_h}.*`, `gpt_neox.final_layer_norm.*`,
/// `embed_out.weight` (absent when tied).
pub struct GptNeox {
    embed_in: Embedding,
    layers: Vec<Layer>,
    final_layer_norm: Norm,
    embed_out: Linear,
    rope: Option<RopeCache>,
    params: Params,
    pub cfg: GptNeoxConfig,
}

impl GptNeox {
    /// Builds the model from checkpoint tensors; `vb` is rooted at the checkpoint root.
    pub fn new(cfg: &GptNeoxConfig, vb: &HfLoader) -> std::result::Result<Self, HfError> {
        let g = vb.pp("gpt_neox");
        let embed_in = g.pp("embed_in").embedding(cfg.vocab_size, cfg.d_model)?;
        let layers = (0..cfg.n_layers)
            .map(|l| Layer::new(cfg, l, &g.pp("layers").pp(l)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let final_layer_norm = g.pp("final_layer_norm").norm(NormKind::Layer, cfg.d_model, cfg.norm_eps)?;
        let embed_out = if cfg.tied {
            Linear { weight: embed_in.weight.clone(), bias: None }
        } else {
            vb.pp("embed_out").linear(cfg.d_model, cfg.vocab_size, false)?
        };
        let rope = (cfg.rot_dims > 0).then(|| RopeCache::new(cfg.rot_dims, cfg.rope_base));
        Ok(Self { embed_in, layers, final_layer_norm, embed_out, rope, params: vb.params().clone(), cfg: cfg.clone() })
    }

    /// Loads `dir` (config.json + safetensors) onto `device`.
    pub fn load(dir: &Path, device: &Device) -> std::result::Result<Self, HfError> {
        let (path, json) = hf::read_config_json(dir)?;
        let cfg = hf::parse_config::<HfGptNeoxConfig>(&json, &path)?.into_config().map_err(|e| e.at(&path))?;
        let weights = HfWeights::open(dir)?;
        Self::new(&cfg, &HfLoader::new(&weights, &Params::new(0, device)))
    }

    /// `ids: (batch, pos) u32 -> logits (batch, pos, vocab)`; with a cache, `ids`
    /// continue the cached positions and their keys/values are appended.
    pub fn forward_cached(&self, ids: &Tensor, mut cache: Option<&mut KvCache>, hooks: &mut Hooks) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let rope = self.rope.as_ref().map(|c| c.get(offset + t, ids.device())).transpose()?;
        let mut resid = hooks.apply(HookPoint::Embed, self.embed_in.forward(ids)?)?;
        for layer in &self.layers {
            resid = layer.forward(resid, rope.as_ref(), offset, cache.as_deref_mut(), hooks)?;
        }
        let resid = hooks.apply(HookPoint::LnFinalNormalized, self.final_layer_norm.forward(&resid)?)?;
        hooks.apply(HookPoint::Logits, self.embed_out.forward(&resid)?)
    }
}

impl LanguageModel for GptNeox {
    fn forward(&self, ids: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        self.forward_cached(ids, None, hooks)
    }
    fn params(&self) -> &Params {
        &self.params
    }
    fn n_layers(&self) -> usize {
        self.cfg.n_layers
    }
    fn attn_out_proj(&self, layer: usize) -> Option<&Linear> {
        self.layers.get(layer).map(|l| &l.attention.dense)
    }
    fn readout(&self) -> super::Readout<'_> {
        super::Readout { norm: &self.final_layer_norm, unembed: &self.embed_out }
    }
}
