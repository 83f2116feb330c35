//! A small GPT: embeddings, `n_layers` residual blocks, final norm, unembedding.
//! Covers the bench models and the truncation study's model (identity W_Q, no
//! norms, no biases, frozen random embeddings and unembedding; arXiv 2406.03068 §3).

use candle_core::{DType, Device, Result, Tensor};

use super::LanguageModel;
use crate::config::{check, ConfigError, Validate};
use crate::interp::hooks::{HookPoint, Hooks};
use crate::nn::attention::AttentionConfig;
use crate::nn::linear::InitScheme;
use crate::nn::{Act, Block, BlockConfig, Embedding, FfnKind, Init, Linear, MlpConfig, Norm, NormKind, Params, PosKind, ResidualKind};

/// The unembedding matrix `W_U: (vocab, d_model)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnembedKind {
    /// Trainable, initialised like the other matrices.
    #[default]
    Learned,
    /// Shares the token embedding.
    Tied,
    /// Frozen U(±1/√d_model) (the truncation study).
    FrozenUniform,
}

/// Model hyper-parameters (`[model]` in a run config).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Vocabulary size (default 64).
    pub vocab_size: usize,
    /// Residual width (default 128).
    pub d_model: usize,
    /// Number of blocks (default 2).
    pub n_layers: usize,
    /// Attention heads (default 4).
    pub n_heads: usize,
    /// KV heads for grouped-query attention; 0 = n_heads (default 0).
    pub n_kv_heads: usize,
    /// Head width; 0 = d_model / n_heads (default 0).
    pub d_head: usize,
    /// FFN hidden width (default 512).
    pub d_mlp: usize,
    /// Longest sequence (positional table size; default 64).
    pub max_seq_len: usize,
    /// FFN nonlinearity (default gelu).
    pub act: Act,
    /// FFN shape in every layer (default mlp).
    pub ffn: FfnKind,
    /// Per-layer FFN override; empty = `ffn` everywhere (default []).
    pub ffn_layers: Vec<FfnKind>,
    /// Normalisation (default layer).
    pub norm: NormKind,
    /// Norm epsilon (default 1e-5).
    pub norm_eps: f64,
    /// Residual wiring (default sequential, pre-LN).
    pub residual: ResidualKind,
    /// Position information (default learned).
    pub pos: PosKind,
    /// Fraction of head dims under RoPE when pos = rope (default 1.0).
    pub rope_frac: f64,
    /// RoPE base (default 10000).
    pub rope_base: f64,
    /// Clamp distance of DeBERTa-style relative positions; 0 = off (default 0).
    #[serde(default)]
    pub rel_pos: usize,
    /// W_Q fixed to the identity (default false).
    pub identity_q: bool,
    /// Biases in linear layers (default true).
    pub bias: bool,
    /// Init of trainable matrices (default gpt2).
    pub init: InitScheme,
    /// Token-embedding init std (default 0.02).
    pub embed_std: f64,
    /// Freeze the token embedding (default false).
    pub freeze_embed: bool,
    /// Unembedding kind (default learned).
    pub unembed: UnembedKind,
}

impl Default for GptConfig {
    fn default() -> Self {
        Self {
            vocab_size: 64,
            d_model: 128,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 0,
            d_head: 0,
            d_mlp: 512,
            max_seq_len: 64,
            act: Act::Gelu,
            ffn: FfnKind::Mlp,
            ffn_layers: Vec::new(),
            norm: NormKind::Layer,
            norm_eps: 1e-5,
            residual: ResidualKind::Sequential,
            pos: PosKind::Learned,
            rope_frac: 1.0,
            rope_base: 10000.0,
            rel_pos: 0,
            identity_q: false,
            bias: true,
            init: InitScheme::Gpt2,
            embed_std: 0.02,
            freeze_embed: false,
            unembed: UnembedKind::Learned,
        }
    }
}

impl GptConfig {
    pub fn d_head(&self) -> usize {
        if self.d_head == 0 { self.d_model / self.n_heads.max(1) } else { self.d_head }
    }
    pub fn n_kv_heads(&self) -> usize {
        if self.n_kv_heads == 0 { self.n_heads } else { self.n_kv_heads }
    }
    pub fn ffn_kind(&self, layer: usize) -> FfnKind {
        self.ffn_layers.get(layer).copied().unwrap_or(self.ffn)
    }

    /// The block config of layer `layer`.
    pub fn block(&self, layer: usize) -> BlockConfig {
        BlockConfig {
            attn: AttentionConfig {
                d_model: self.d_model,
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads(),
                d_head: self.d_head(),
                identity_q: self.identity_q,
                bias: self.bias,
                rope_frac: if self.pos == PosKind::Rope { self.rope_frac } else { 0.0 },
                rope_base: self.rope_base,
                max_seq_len: self.max_seq_len,
                init: self.init,
                rel_pos: self.rel_pos,
                rel_bias: 0,
                rel_bias_gain: 1.0,
                rel_bias_init_std: 0.0,
            },
            mlp: MlpConfig {
                d_model: self.d_model,
                d_mlp: self.d_mlp,
                kind: self.ffn_kind(layer),
                act: self.act,
                bias: self.bias,
                init: self.init,
            },
            norm: self.norm,
            norm_eps: self.norm_eps,
            residual: self.residual,
        }
    }

    /// The truncation study's model (spec §3.1): one head of width d, identity
    /// W_Q, no norms or biases, frozen N(0,1) embeddings and positions, frozen
    /// uniform unembedding, ReLU FFN of width 4d, PyTorch default init.
    pub fn truncation(d_model: usize, seq_len: usize, vocab_size: usize) -> Self {
        Self {
            vocab_size,
            d_model,
            n_layers: 2,
            n_heads: 1,
            d_mlp: 4 * d_model,
            max_seq_len: seq_len,
            act: Act::Relu,
            norm: NormKind::None,
            pos: PosKind::FixedRandom,
            identity_q: true,
            bias: false,
            init: InitScheme::Pytorch,
            embed_std: 1.0,
            freeze_embed: true,
            unembed: UnembedKind::FrozenUniform,
            ..Self::default()
        }
    }
}

impl Validate for GptConfig {
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        let k = |f: &str| format!("model.{f}");
        check(self.vocab_size > 0, &k("vocab_size"), "must be > 0")?;
        check(self.d_model > 0, &k("d_model"), "must be > 0")?;
        check(self.n_layers > 0, &k("n_layers"), "must be > 0")?;
        check(self.n_heads > 0, &k("n_heads"), "must be > 0")?;
        check(self.d_mlp > 0, &k("d_mlp"), "must be > 0")?;
        check(self.max_seq_len > 0, &k("max_seq_len"), "must be > 0")?;
        check(self.n_heads.is_multiple_of(self.n_kv_heads()), &k("n_kv_heads"), "must divide n_heads")?;
        check(self.d_head() > 0, &k("d_head"), "d_model / n_heads must be ≥ 1")?;
        check(
            !self.identity_q || self.n_heads * self.d_head() == self.d_model,
            &k("identity_q"),
            "needs n_heads · d_head = d_model",
        )?;
        check(self.ffn_layers.len() <= self.n_layers, &k("ffn_layers"), "has more entries than n_layers")?;
        check(self.norm_eps > 0.0, &k("norm_eps"), "must be > 0")?;
        check((0.0..=1.0).contains(&self.rope_frac), &k("rope_frac"), "must be in [0, 1]")?;
        check(self.embed_std > 0.0, &k("embed_std"), "must be > 0")?;
        Ok(())
    }
}

/// The model. Parameter names: `embed.weight`, `pos_embed.weight`,
/// `blocks.{l}.{ln1,attn.{q,k,v,out}_proj,ln2,mlp.{fc_in,fc_out}}.*`,
/// `ln_final.*`, `unembed.weight`.
pub struct Gpt {
    embed: Embedding,
    pos_embed: Option<Embedding>,
    blocks: Vec<Block>,
    ln_final: Norm,
    unembed: Linear,
    params: Params,
    pub cfg: GptConfig,
}

impl Gpt {
    /// Build with parameters initialised from `seed`.
    pub fn new(cfg: &GptConfig, seed: u64, device: &Device) -> Result<Self> {
        let params = Params::new(seed, device);
        let vb = params.root();
        let d = cfg.d_model;
        let embed =
            Embedding::new(cfg.vocab_size, d, Init::Normal { std: cfg.embed_std }, cfg.freeze_embed, &vb.pp("embed"))?;
        let pos_embed = match cfg.pos {
            PosKind::Learned => {
                Some(Embedding::new(cfg.max_seq_len, d, Init::Normal { std: 0.02 }, false, &vb.pp("pos_embed"))?)
            }
            PosKind::FixedRandom => {
                Some(Embedding::new(cfg.max_seq_len, d, Init::Normal { std: 1.0 }, true, &vb.pp("pos_embed"))?)
            }
            PosKind::Rope | PosKind::None => None,
        };
        let blocks = (0..cfg.n_layers)
            .map(|l| Block::new(&cfg.block(l), l, &vb.pp("blocks").pp(l)))
            .collect::<Result<Vec<_>>>()?;
        let ln_final = Norm::new(cfg.norm, d, cfg.norm_eps, &vb.pp("ln_final"))?;
        let unembed = match cfg.unembed {
            UnembedKind::Learned => Linear::new(d, cfg.vocab_size, false, cfg.init, false, &vb.pp("unembed"))?,
            UnembedKind::Tied => Linear { weight: embed.weight.clone(), bias: None },
            UnembedKind::FrozenUniform => Linear {
                weight: vb.pp("unembed").get(
                    (cfg.vocab_size, d),
                    "weight",
                    Init::Uniform { bound: 1.0 / (d as f64).sqrt() },
                    true,
                )?,
                bias: None,
            },
        };
        Ok(Self { embed, pos_embed, blocks, ln_final, unembed, params, cfg: cfg.clone() })
    }

    /// Token plus position embeddings `(batch, pos, d_model)` (`hook_embed`, `hook_pos_embed`).
    fn embedded(&self, ids: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if t > self.cfg.max_seq_len {
            candle_core::bail!("sequence of length {t} exceeds model.max_seq_len = {}", self.cfg.max_seq_len);
        }
        let resid = hooks.apply(HookPoint::Embed, self.embed.forward(ids)?)?;
        match &self.pos_embed {
            Some(pos) => {
                let p = pos.first(t)?.unsqueeze(0)?;
                let p = if hooks.is_empty() { p } else { hooks.apply(HookPoint::PosEmbed, p)? };
                resid.broadcast_add(&p)
            }
            None => Ok(resid),
        }
    }

    /// Final residual stream `(batch, pos, d_model)` after `ln_final`.
    pub fn residual(&self, ids: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let mut resid = self.embedded(ids, hooks)?;
        for block in &self.blocks {
            resid = block.forward(&resid, hooks)?;
        }
        if self.ln_final.is_identity() {
            Ok(resid)
        } else {
            hooks.apply(HookPoint::LnFinalNormalized, self.ln_final.forward(&resid)?)
        }
    }

    /// Logits at `rows` of the flattened `(batch·pos)` stream only: `(n, vocab)`.
    /// Equal to `forward(ids)` reshaped to `(batch·pos, vocab)` and gathered, but the
    /// last block runs its MLP, and the model its unembedding, on the `n` rows alone:
    /// a loss scored at few positions (noisy recall scores ~1 in 8) skips the rest.
    pub fn forward_rows(&self, ids: &Tensor, rows: &[u32]) -> Result<Tensor> {
        let Some((last, body)) = self.blocks.split_last() else {
            candle_core::bail!("model has no blocks");
        };
        let mut hooks = Hooks::none();
        let mut resid = self.embedded(ids, &mut hooks)?;
        for block in body {
            resid = block.forward(&resid, &mut hooks)?;
        }
        let out = last.forward_rows(&resid, rows)?;
        let out = if self.ln_final.is_identity() { out } else { self.ln_final.forward(&out)? };
        self.unembed.forward(&out)
    }

    /// Unembedding `W_U: (vocab, d_model)`.
    pub fn unembed_weight(&self) -> &Tensor {
        &self.unembed.weight
    }

    /// Token embedding `W_E: (vocab, d_model)`.
    pub fn embed_weight(&self) -> &Tensor {
        &self.embed.weight
    }

    /// Block `layer`.
    pub fn block(&self, layer: usize) -> Option<&Block> {
        self.blocks.get(layer)
    }
}

impl LanguageModel for Gpt {
    fn forward(&self, ids: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let resid = self.residual(ids, hooks)?;
        hooks.apply(HookPoint::Logits, self.unembed.forward(&resid)?)
    }
    fn params(&self) -> &Params {
        &self.params
    }
    fn n_layers(&self) -> usize {
        self.cfg.n_layers
    }
    fn attn_out_proj(&self, layer: usize) -> Option<&crate::nn::Linear> {
        self.blocks.get(layer).map(|b| b.attn().out_proj())
    }
    fn readout(&self) -> super::Readout<'_> {
        super::Readout { norm: &self.ln_final, unembed: &self.unembed }
    }
}

/// `ids: (batch, pos)` u32 tensor from a flat row-major slice.
pub fn ids_tensor(ids: &[u32], batch: usize, device: &Device) -> Result<Tensor> {
    Tensor::from_slice(ids, (batch, ids.len() / batch.max(1)), device)?.to_dtype(DType::U32)
}
