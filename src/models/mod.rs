//! Whole models built from `nn` blocks. May import `nn` and `interp::hooks`.

pub mod gpt;

pub use gpt::{Gpt, GptConfig, UnembedKind};

use candle_core::{Result, Tensor};

use crate::interp::hooks::Hooks;
use crate::nn::Params;

/// A causal LM over token ids, with hook points.
pub trait LanguageModel {
    /// `ids: (batch, pos) u32 -> logits (batch, pos, vocab)`.
    fn forward(&self, ids: &Tensor, hooks: &mut Hooks) -> Result<Tensor>;
    fn params(&self) -> &Params;
    fn n_layers(&self) -> usize;
}
