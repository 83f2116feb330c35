//! Any supported pretrained model from a local Hugging Face folder, picked by
//! `config.json` (`architectures`, else `model_type`). May import `nn` and `interp::hooks`.

use std::path::Path;

use candle_core::{Device, Result, Tensor};

use super::gpt_neox::GptNeox;
use super::hf::{self, HfArch, HfError, KvCache};
use super::qwen2::Qwen2;
use super::LanguageModel;
use crate::interp::hooks::Hooks;
use crate::nn::Params;

/// A loaded pretrained model.
pub enum Pretrained {
    GptNeox(GptNeox),
    Qwen2(Qwen2),
}

impl Pretrained {
    /// Reads `dir/config.json`, then the weights of the architecture it names.
    pub fn load(dir: &Path, device: &Device) -> std::result::Result<Self, HfError> {
        let (path, json) = hf::read_config_json(dir)?;
        Ok(match HfArch::detect(&json, &path)? {
            HfArch::GptNeox => Pretrained::GptNeox(GptNeox::load(dir, device)?),
            HfArch::Qwen2 => Pretrained::Qwen2(Qwen2::load(dir, device)?),
        })
    }

    pub fn arch(&self) -> HfArch {
        match self {
            Pretrained::GptNeox(_) => HfArch::GptNeox,
            Pretrained::Qwen2(_) => HfArch::Qwen2,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Pretrained::GptNeox(m) => m.cfg.vocab_size,
            Pretrained::Qwen2(m) => m.cfg.vocab_size,
        }
    }

    /// A fresh KV cache for `forward_cached`.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.n_layers())
    }

    /// `ids: (batch, pos) u32 -> logits (batch, pos, vocab)`, continuing `cache`.
    pub fn forward_cached(&self, ids: &Tensor, cache: Option<&mut KvCache>, hooks: &mut Hooks) -> Result<Tensor> {
        match self {
            Pretrained::GptNeox(m) => m.forward_cached(ids, cache, hooks),
            Pretrained::Qwen2(m) => m.forward_cached(ids, cache, hooks),
        }
    }
}

impl LanguageModel for Pretrained {
    fn forward(&self, ids: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        self.forward_cached(ids, None, hooks)
    }
    fn params(&self) -> &Params {
        match self {
            Pretrained::GptNeox(m) => m.params(),
            Pretrained::Qwen2(m) => m.params(),
        }
    }
    fn n_layers(&self) -> usize {
        match self {
            Pretrained::GptNeox(m) => m.n_layers(),
            Pretrained::Qwen2(m) => m.n_layers(),
        }
    }
    fn attn_out_proj(&self, layer: usize) -> Option<&crate::nn::Linear> {
        match self {
            Pretrained::GptNeox(m) => m.attn_out_proj(layer),
            Pretrained::Qwen2(m) => m.attn_out_proj(layer),
        }
    }
    fn readout(&self) -> super::Readout<'_> {
        match self {
            Pretrained::GptNeox(m) => m.readout(),
            Pretrained::Qwen2(m) => m.readout(),
        }
    }
}
