//! Qwen2 / Qwen2.5 (arXiv 2407.10671) from a Hugging Face folder: RMSNorm,
//! SwiGLU MLP, grouped KV heads, biases on q/k/v only, RoPE over the full head,
//! tied or untied embeddings. Field names are the HF key segments
//! (`model.layers.{l}.self_attn.q_proj.weight`). Hook points as TransformerLens
//! names them. May import `nn` and `interp::hooks`.

use std::path::Path;

use candle_core::{Device, Result, Tensor};

use super::gpt_neox::{check_plain_rope, HfRopeParameters};
use super::hf::{self, require, FieldError, HfAct, HfError, HfLoader, HfWeights, KvCache};
use super::LanguageModel;
use crate::interp::hooks::{HookPoint, Hooks};
use crate::nn::attention::attend;
use crate::nn::rope::{Rope, RopeCache};
use crate::nn::{Embedding, Linear, Norm, NormKind, Params};

/// `config.json` of `Qwen2ForCausalLM`: keys as HF spells them (extra keys ignored).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct HfQwen2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Default num_attention_heads.
    pub num_key_value_heads: Option<usize>,
    /// Default hidden_size / num_attention_heads.
    pub head_dim: Option<usize>,
    /// Default `silu`.
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    /// Default 32768.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Default 1e-6.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// Default false.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Default 10000 (or `rope_parameters.rope_theta`).
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    pub rope_parameters: Option<HfRopeParameters>,
    /// Default false; sliding-window attention is not supported.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Per-layer attention kinds (newer transformers); only `full_attention` is supported.
    pub layer_types: Option<Vec<String>>,
}

fn default_silu() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    32768
}
fn default_rms_eps() -> f64 {
    1e-6
}

/// The resolved Qwen2 config: the only type the model code sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub rope_base: f64,
    pub norm_eps: f64,
    pub act: HfAct,
    pub tied: bool,
    pub max_seq_len: usize,
}

impl HfQwen2Config {
    pub fn into_config(self) -> std::result::Result<Qwen2Config, FieldError> {
        check_plain_rope(&self.rope_scaling, &self.rope_parameters)?;
        require(!self.use_sliding_window, "use_sliding_window", "sliding-window attention is not supported")?;
        if let Some(kind) = self.layer_types.iter().flatten().find(|k| *k != "full_attention") {
            return Err(FieldError::new("layer_types", format!("`{kind}` is not supported (only `full_attention`)")));
        }
        for (v, f) in [
            (self.vocab_size, "vocab_size"),
            (self.hidden_size, "hidden_size"),
            (self.num_hidden_layers, "num_hidden_layers"),
            (self.num_attention_heads, "num_attention_heads"),
            (self.intermediate_size, "intermediate_size"),
        ] {
            require(v > 0, f, "must be > 0")?;
        }
        let n_kv = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        require(
            n_kv > 0 && self.num_attention_heads.is_multiple_of(n_kv),
            "num_key_value_heads",
            &format!("{n_kv} does not divide num_attention_heads = {}", self.num_attention_heads),
        )?;
        let d_head = match self.head_dim {
            Some(d) => d,
            None => {
                require(
                    self.hidden_size.is_multiple_of(self.num_attention_heads),
                    "hidden_size",
                    &format!("{} is not divisible by num_attention_heads = {}", self.hidden_size, self.num_attention_heads),
                )?;
                self.hidden_size / self.num_attention_heads
            }
        };
        require(d_head > 0 && d_head % 2 == 0, "head_dim", "must be even and > 0 (RoPE rotates pairs)")?;
        let base = self.rope_theta.or(self.rope_parameters.as_ref().and_then(|p| p.rope_theta)).unwrap_or(10000.0);
        require(base > 0.0, "rope_theta", "must be > 0")?;
        require(self.rms_norm_eps > 0.0, "rms_norm_eps", "must be > 0")?;
        Ok(Qwen2Config {
            vocab_size: self.vocab_size,
            d_model: self.hidden_size,
            n_layers: self.num_hidden_layers,
            n_heads: self.num_attention_heads,
            n_kv_heads: n_kv,
            d_head,
            d_mlp: self.intermediate_size,
            rope_base: base,
            norm_eps: self.rms_norm_eps,
            act: HfAct::from_hf(&self.hidden_act)?,
            tied: self.tie_word_embeddings,
            max_seq_len: self.max_position_embeddings,
        })
    }
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    d_head: usize,
    layer: usize,
}

impl Attention {
    fn new(cfg: &Qwen2Config, layer: usize, vb: &HfLoader) -> std::result::Result<Self, HfError> {
        let (d, h, hk, dh) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        Ok(Self {
            q_proj: vb.pp("q_proj").linear(d, h * dh, true)?,
            k_proj: vb.pp("k_proj").linear(d, hk * dh, true)?,
            v_proj: vb.pp("v_proj").linear(d, hk * dh, true)?,
            o_proj: vb.pp("o_proj").linear(h * dh, d, false)?,
            n_heads: h,
            n_kv_heads: hk,
            d_head: dh,
            layer,
        })
    }

    /// `x: (batch, pos, d_model) -> (batch, pos, d_model)`.
    fn forward(&self, x: &Tensor, rope: &Rope, offset: usize, cache: Option<&mut KvCache>, hooks: &mut Hooks) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, hk, dh, l) = (self.n_heads, self.n_kv_heads, self.d_head, self.layer);
        let q = rope.apply(&self.q_proj.forward(x)?.reshape((b, t, h, dh))?, offset)?;
        let k = rope.apply(&self.k_proj.forward(x)?.reshape((b, t, hk, dh))?, offset)?;
        let v = self.v_proj.forward(x)?.reshape((b, t, hk, dh))?;
        let q = hooks.apply(HookPoint::AttnQ(l), q)?;
        let k = hooks.apply(HookPoint::AttnK(l), k)?;
        let v = hooks.apply(HookPoint::AttnV(l), v)?;
        let (k, v) = match cache {
            Some(c) => c.append(l, k, v)?,
            None => (k, v),
        };
        let z = attend(&q, &k, &v, l, hooks)?;
        let z = hooks.apply(HookPoint::AttnZ(l), z)?;
        self.o_proj.forward(&z.reshape((b, t, h * dh))?)
    }
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: HfAct,
    layer: usize,
}

impl Mlp {
    /// `x: (batch, pos, d_model) -> (batch, pos, d_model)`; `down(act(gate x) ⊙ up x)`.
    /// `hook_pre` is the gate pre-activation (as TransformerLens), `hook_post` the product.
    fn forward(&self, x: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let pre = hooks.apply(HookPoint::MlpPre(self.layer), self.gate_proj.forward(x)?)?;
        let post = (self.act.forward(&pre)? * self.up_proj.forward(x)?)?;
        let post = hooks.apply(HookPoint::MlpPost(self.layer), post)?;
        self.down_proj.forward(&post)
    }
}

struct Layer {
    input_layernorm: Norm,
    self_attn: Attention,
    post_attention_layernorm: Norm,
    mlp: Mlp,
    layer: usize,
}

impl Layer {
    fn new(cfg: &Qwen2Config, layer: usize, vb: &HfLoader) -> std::result::Result<Self, HfError> {
        let (d, m) = (cfg.d_model, cfg.d_mlp);
        Ok(Self {
            input_layernorm: vb.pp("input_layernorm").norm(NormKind::Rms, d, cfg.norm_eps)?,
            self_attn: Attention::new(cfg, layer, &vb.pp("self_attn"))?,
            post_attention_layernorm: vb.pp("post_attention_layernorm").norm(NormKind::Rms, d, cfg.norm_eps)?,
            mlp: Mlp {
                gate_proj: vb.pp("mlp.gate_proj").linear(d, m, false)?,
                up_proj: vb.pp("mlp.up_proj").linear(d, m, false)?,
                down_proj: vb.pp("mlp.down_proj").linear(m, d, false)?,
                act: cfg.act,
                layer,
            },
            layer,
        })
    }

    /// `resid: (batch, pos, d_model) -> (batch, pos, d_model)`, pre-norm sequential.
    fn forward(&self, resid: Tensor, rope: &Rope, offset: usize, cache: Option<&mut KvCache>, hooks: &mut Hooks) -> Result<Tensor> {
        let l = self.layer;
        let resid = hooks.apply(HookPoint::ResidPre(l), resid)?;
        let attn_in = hooks.apply(HookPoint::Ln1Normalized(l), self.input_layernorm.forward(&resid)?)?;
        let attn_out = self.self_attn.forward(&attn_in, rope, offset, cache, hooks)?;
        let attn_out = hooks.apply(HookPoint::AttnOut(l), attn_out)?;
        let mid = hooks.apply(HookPoint::ResidMid(l), (resid + attn_out)?)?;
        let mlp_in = hooks.apply(HookPoint::Ln2Normalized(l), self.post_attention_layernorm.forward(&mid)?)?;
        let mlp_out = self.mlp.forward(&mlp_in, hooks)?;
        let mlp_out = hooks.apply(HookPoint::MlpOut(l), mlp_out)?;
        hooks.apply(HookPoint::ResidPost(l), (mid + mlp_out)?)
    }
}

/// `Qwen2ForCausalLM`. Parameters: `model.embed_tokens.weight`,
/// `model.layers.{l}.{input_layernorm, post_attention_layernorm}.weight`,
/// `model.layers.{l}.self_attn.{q,k,v}_proj.{weight,bias}`, `...self_attn.o_proj.weight`,
/// `model.layers.{l}.mlp.{gate,up,down}_proj.weight`, `model.norm.weight`,
/// `lm_head.weight` (absent when tied).
pub struct Qwen2 {
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: Norm,
    lm_head: Linear,
    rope: RopeCache,
    params: Params,
    pub cfg: Qwen2Config,
}

impl Qwen2 {
    /// Builds the model from checkpoint tensors; `vb` is rooted at the checkpoint root.
    pub fn new(cfg: &Qwen2Config, vb: &HfLoader) -> std::result::Result<Self, HfError> {
        let m = vb.pp("model");
        let embed_tokens = m.pp("embed_tokens").embedding(cfg.vocab_size, cfg.d_model)?;
        let layers = (0..cfg.n_layers)
            .map(|l| Layer::new(cfg, l, &m.pp("layers").pp(l)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let norm = m.pp("norm").norm(NormKind::Rms, cfg.d_model, cfg.norm_eps)?;
        let lm_head = if cfg.tied {
            Linear { weight: embed_tokens.weight.clone(), bias: None }
        } else {
            vb.pp("lm_head").linear(cfg.d_model, cfg.vocab_size, false)?
        };
        let rope = RopeCache::new(cfg.d_head, cfg.rope_base);
        Ok(Self { embed_tokens, layers, norm, lm_head, rope, params: vb.params().clone(), cfg: cfg.clone() })
    }

    /// Loads `dir` (config.json + safetensors) onto `device`.
    pub fn load(dir: &Path, device: &Device) -> std::result::Result<Self, HfError> {
        let (path, json) = hf::read_config_json(dir)?;
        let cfg = hf::parse_config::<HfQwen2Config>(&json, &path)?.into_config().map_err(|e| e.at(&path))?;
        let weights = HfWeights::open(dir)?;
        Self::new(&cfg, &HfLoader::new(&weights, &Params::new(0, device)))
    }

    /// `ids: (batch, pos) u32 -> logits (batch, pos, vocab)`; with a cache, `ids`
    /// continue the cached positions and their keys/values are appended.
    pub fn forward_cached(&self, ids: &Tensor, mut cache: Option<&mut KvCache>, hooks: &mut Hooks) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let rope = self.rope.get(offset + t, ids.device())?;
        let mut resid = hooks.apply(HookPoint::Embed, self.embed_tokens.forward(ids)?)?;
        for layer in &self.layers {
            resid = layer.forward(resid, &rope, offset, cache.as_deref_mut(), hooks)?;
        }
        let resid = hooks.apply(HookPoint::LnFinalNormalized, self.norm.forward(&resid)?)?;
        hooks.apply(HookPoint::Logits, self.lm_head.forward(&resid)?)
    }
}

impl LanguageModel for Qwen2 {
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
        self.layers.get(layer).map(|l| &l.self_attn.o_proj)
    }
    fn readout(&self) -> super::Readout<'_> {
        super::Readout { norm: &self.norm, unembed: &self.lm_head }
    }
}
