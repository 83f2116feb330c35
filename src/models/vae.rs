//! A Transformer language VAE (arXiv 2506.19418; spec §5): a bidirectional
//! encoder over `[BOS] ([R:π]) x [SEP] c [EOS]`, mean-pooled to (μ, log σ²),
//! and a causal decoder over `[BOS] x [SEP] c [EOS]` conditioned on z in every
//! layer through `nn::attention`'s latent slots (memory, kv, query), with
//! h_ℓ = rows ℓ·d..(ℓ+1)·d of W_z z. An optional rule classifier reads μ.

use candle_core::{DType, Device, Result, Tensor};

use crate::interp::hooks::Hooks;
use crate::nn::linear::InitScheme;
use crate::nn::{Act, AttnCond, Block, Embedding, Init, LatentSlot, Linear, Norm, NormKind, Params};

use super::gpt::GptConfig;

/// How z reaches the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Injection {
    /// No latent (the no-latent and oracle baselines).
    None,
    /// An extra key/value slot per layer (Optimus-style).
    Memory,
    /// Added to every key and value.
    Kv,
    /// Added to every query.
    Query,
}

impl Injection {
    fn slot(self) -> Option<LatentSlot> {
        match self {
            Injection::None => None,
            Injection::Memory => Some(LatentSlot::Memory),
            Injection::Kv => Some(LatentSlot::Kv),
            Injection::Query => Some(LatentSlot::Query),
        }
    }
}

/// Model hyper-parameters (spec §5; defaults d = 64, 2 + 2 layers, 4 heads, D = 16).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// Vocabulary size (set from the family vocabulary).
    pub vocab_size: usize,
    /// Residual width of encoder and decoder (default 64).
    pub d_model: usize,
    /// Attention heads (default 4).
    pub n_heads: usize,
    /// FFN hidden width (default 256 = 4d).
    pub d_mlp: usize,
    /// Encoder layers (default 2).
    pub enc_layers: usize,
    /// Decoder layers (default 2).
    pub dec_layers: usize,
    /// Latent size D (default 16).
    pub latent_dim: usize,
    /// Longest encoder/decoder sequence (default 48).
    pub max_seq_len: usize,
    /// FFN nonlinearity (default gelu).
    pub act: Act,
    /// Latent injection (default query).
    pub injection: Injection,
    /// Rules of the classifier on μ; 0 = no classifier (default 0).
    pub n_rules: usize,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            vocab_size: 64,
            d_model: 64,
            n_heads: 4,
            d_mlp: 256,
            enc_layers: 2,
            dec_layers: 2,
            latent_dim: 16,
            max_seq_len: 48,
            act: Act::Gelu,
            injection: Injection::Query,
            n_rules: 0,
        }
    }
}

impl VaeConfig {
    fn stack(&self, n_layers: usize) -> GptConfig {
        GptConfig {
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            n_layers,
            n_heads: self.n_heads,
            d_mlp: self.d_mlp,
            max_seq_len: self.max_seq_len,
            act: self.act,
            norm: NormKind::Layer,
            init: InitScheme::Gpt2,
            ..GptConfig::default()
        }
    }
}

/// Token + learned position embeddings, pre-LN blocks, final LayerNorm.
#[derive(Debug, Clone)]
struct Stack {
    embed: Embedding,
    pos_embed: Embedding,
    blocks: Vec<Block>,
    ln_final: Norm,
}

impl Stack {
    fn new(cfg: &GptConfig, vb: &crate::nn::ParamBuilder) -> Result<Self> {
        let init = Init::Normal { std: 0.02 };
        Ok(Self {
            embed: Embedding::new(cfg.vocab_size, cfg.d_model, init, false, &vb.pp("embed"))?,
            pos_embed: Embedding::new(cfg.max_seq_len, cfg.d_model, init, false, &vb.pp("pos_embed"))?,
            blocks: (0..cfg.n_layers).map(|l| Block::new(&cfg.block(l), l, &vb.pp(format!("blocks.{l}")))).collect::<Result<_>>()?,
            ln_final: Norm::new(NormKind::Layer, cfg.d_model, cfg.norm_eps, &vb.pp("ln_final"))?,
        })
    }

    /// `ids: (batch, pos) -> (batch, pos, d_model)`; `cond(l)` conditions layer l.
    fn forward<'a>(&self, ids: &Tensor, cond: impl Fn(usize) -> AttnCond<'a>, hooks: &mut Hooks) -> Result<Tensor> {
        let t = ids.dim(1)?;
        if t > self.pos_embed.weight.dim(0)? {
            candle_core::bail!("sequence of length {t} exceeds model.max_seq_len = {}", self.pos_embed.weight.dim(0)?);
        }
        let mut resid = self.embed.forward(ids)?.broadcast_add(&self.pos_embed.first(t)?.unsqueeze(0)?)?;
        for (l, block) in self.blocks.iter().enumerate() {
            resid = block.forward_cond(&resid, &cond(l), hooks)?;
        }
        self.ln_final.forward(&resid)
    }
}

/// The language VAE; parameter names `encoder.*`, `decoder.*`, `rule_head.*`.
#[derive(Clone)]
pub struct LanguageVae {
    encoder: Stack,
    to_latent: Linear,
    decoder: Stack,
    latent_proj: Option<Linear>,
    unembed: Linear,
    rule_head: Option<Linear>,
    params: Params,
    cfg: VaeConfig,
}

/// The posterior of a batch: `mu, logvar: (batch, latent_dim)`.
pub struct Posterior {
    pub mu: Tensor,
    pub logvar: Tensor,
}

impl LanguageVae {
    pub fn new(cfg: &VaeConfig, seed: u64, device: &Device) -> Result<Self> {
        if !cfg.d_model.is_multiple_of(cfg.n_heads) {
            candle_core::bail!("model.d_model = {} must be a multiple of model.n_heads = {}", cfg.d_model, cfg.n_heads);
        }
        let params = Params::new(seed, device);
        let root = params.root();
        let enc = root.pp("encoder");
        let dec = root.pp("decoder");
        let (d, big_d) = (cfg.d_model, cfg.latent_dim);
        let encoder = Stack::new(&cfg.stack(cfg.enc_layers), &enc)?;
        let to_latent = Linear::new(d, 2 * big_d, true, InitScheme::Gpt2, false, &enc.pp("to_latent"))?;
        let decoder = Stack::new(&cfg.stack(cfg.dec_layers), &dec)?;
        let latent_proj = match cfg.injection {
            Injection::None => None,
            _ => Some(Linear::new(big_d, cfg.dec_layers * d, false, InitScheme::Pytorch, false, &dec.pp("latent_proj"))?),
        };
        let unembed = Linear::new(d, cfg.vocab_size, true, InitScheme::Gpt2, false, &dec.pp("unembed"))?;
        let rule_head = if cfg.n_rules > 0 {
            Some(Linear::new(big_d, cfg.n_rules, true, InitScheme::Pytorch, false, &root.pp("rule_head"))?)
        } else {
            None
        };
        Ok(Self { encoder, to_latent, decoder, latent_proj, unembed, rule_head, params, cfg: cfg.clone() })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// `ids: (batch, pos)` right-padded, `lengths[b]` valid tokens -> posterior.
    /// Encoder hook points are the usual `blocks.{l}.*` (pass a separate
    /// `Hooks` from the decoder's).
    pub fn encode(&self, ids: &Tensor, lengths: &[usize], hooks: &mut Hooks) -> Result<Posterior> {
        let (b, t) = ids.dims2()?;
        let cond = |_| AttnCond { bidirectional: true, lengths: Some(lengths), latent: None };
        let resid = self.encoder.forward(ids, cond, hooks)?;
        let pooled = resid.broadcast_mul(&pool_weights(lengths, t, ids.device())?)?.sum(1)?; // (b, d)
        let stats = self.to_latent.forward(&pooled)?;
        let big_d = self.cfg.latent_dim;
        let _ = b;
        Ok(Posterior { mu: stats.narrow(1, 0, big_d)?, logvar: stats.narrow(1, big_d, big_d)? })
    }

    /// `ids: (batch, pos)`, `z: (batch, latent_dim)` (ignored without
    /// injection) -> logits `(batch, pos, vocab)`. Right padding needs no mask:
    /// the decoder is causal and padded targets carry no loss.
    pub fn decode(&self, ids: &Tensor, z: Option<&Tensor>, hooks: &mut Hooks) -> Result<Tensor> {
        let d = self.cfg.d_model;
        let h = match (&self.latent_proj, z) {
            (Some(p), Some(z)) => Some(p.forward(z)?), // (b, L·d)
            (Some(_), None) => candle_core::bail!("decoder with {:?} injection needs z", self.cfg.injection),
            (None, _) => None,
        };
        let per_layer: Vec<Tensor> = match &h {
            Some(h) => (0..self.cfg.dec_layers).map(|l| h.narrow(1, l * d, d)).collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let slot = self.cfg.injection.slot();
        let cond = |l: usize| AttnCond {
            bidirectional: false,
            lengths: None,
            latent: slot.zip(per_layer.get(l)),
        };
        let resid = self.decoder.forward(ids, cond, hooks)?;
        self.unembed.forward(&resid)
    }

    /// Rule logits `(batch, n_rules)` from μ, when the model has a classifier.
    pub fn classify(&self, mu: &Tensor) -> Result<Option<Tensor>> {
        self.rule_head.as_ref().map(|h| h.forward(mu)).transpose()
    }

    /// Names of the encoder's attention (`attn`) or FFN (`mlp`) parameters in layer `layer`.
    pub fn encoder_group(&self, layer: usize, part: &str) -> Vec<String> {
        let prefix = format!("encoder.blocks.{layer}.{part}.");
        self.params.trainable().into_iter().map(|(n, _)| n).filter(|n| n.starts_with(&prefix)).collect()
    }
}

/// Mean-pooling weights `(batch, pos, 1)`: 1/len on valid positions, 0 on padding.
fn pool_weights(lengths: &[usize], t: usize, device: &Device) -> Result<Tensor> {
    let w: Vec<f32> = lengths
        .iter()
        .flat_map(|&len| (0..t).map(move |i| if i < len { 1.0 / len as f32 } else { 0.0 }))
        .collect();
    Tensor::from_vec(w, (lengths.len(), t, 1), device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_padding_invariance() -> Result<()> {
        let cfg = VaeConfig { vocab_size: 12, d_model: 16, n_heads: 2, d_mlp: 32, latent_dim: 4, max_seq_len: 8, ..Default::default() };
        let m = LanguageVae::new(&cfg, 0, &Device::Cpu)?;
        let ids = Tensor::new(&[[1u32, 5, 6, 2, 0, 0], [1, 7, 8, 9, 10, 2]], &Device::Cpu)?;
        let post = m.encode(&ids, &[4, 6], &mut Hooks::none())?;
        assert_eq!(post.mu.dims(), &[2, 4]);
        // The first row's posterior ignores its padding.
        let short = Tensor::new(&[[1u32, 5, 6, 2]], &Device::Cpu)?;
        let alone = m.encode(&short, &[4], &mut Hooks::none())?;
        let a: Vec<f32> = alone.mu.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = post.mu.narrow(0, 0, 1)?.flatten_all()?.to_vec1()?;
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
        let logits = m.decode(&ids, Some(&post.mu), &mut Hooks::none())?;
        assert_eq!(logits.dims(), &[2, 6, 12]);
        Ok(())
    }
}
