//! Whole models built from `nn` blocks. May import `nn` and `interp::hooks`.

pub mod export;
pub mod generate;
pub mod gpt;
pub mod gpt_neox;
pub mod hf;
pub mod pretrained;
pub mod qwen2;
pub mod recurrent;
pub mod tokenizer;
pub mod vae;

pub use gpt::{Gpt, GptConfig, UnembedKind};
pub use gpt_neox::{GptNeox, GptNeoxConfig, HfGptNeoxConfig};
pub use hf::{HfArch, HfError, KvCache};
pub use pretrained::Pretrained;
pub use qwen2::{HfQwen2Config, Qwen2, Qwen2Config};
pub use recurrent::{Halt, Recurrent, RecurrentConfig};
pub use tokenizer::HfTokenizer;
pub use vae::{Injection, LanguageVae, Posterior, VaeConfig};

use candle_core::{Result, Tensor};

use crate::interp::hooks::Hooks;
use crate::nn::{Linear, Norm, Params};

/// A causal LM over token ids, with hook points.
pub trait LanguageModel {
    /// `ids: (batch, pos) u32 -> logits (batch, pos, vocab)`.
    fn forward(&self, ids: &Tensor, hooks: &mut Hooks) -> Result<Tensor>;
    fn params(&self) -> &Params;
    fn n_layers(&self) -> usize;
    /// What turns the last residual stream into logits (logit lens, logit attribution).
    fn readout(&self) -> Readout<'_>;
    /// Layer `layer`'s attention output projection `W_O: (d_model, n_heads·d_head)`
    /// (per-head attribution through `blocks.{l}.attn.hook_z`).
    fn attn_out_proj(&self, layer: usize) -> Option<&Linear>;
}

/// The final norm and the unembedding: `logits = unembed(norm(resid))`.
#[derive(Clone, Copy)]
pub struct Readout<'a> {
    pub norm: &'a Norm,
    pub unembed: &'a Linear,
}
