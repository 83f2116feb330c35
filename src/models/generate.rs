//! Autoregressive decoding with a KV cache: greedy (temperature 0) or sampled
//! from softmax(logits / T) with a seeded ChaCha stream, so a seed fixes the
//! output. May import `nn` and `interp::hooks`.

use candle_core::{DType, Result, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::pretrained::Pretrained;
use super::LanguageModel;
use crate::interp::hooks::Hooks;

/// Decoding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// New tokens to produce (default 16).
    pub max_new: usize,
    /// 0 = greedy (argmax); otherwise sample from softmax(logits / T) (default 0).
    pub temperature: f64,
    /// Seed of the sampling stream (default 0).
    pub seed: u64,
    /// Stop after emitting this token, if set (default none).
    pub stop_token: Option<u32>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self { max_new: 16, temperature: 0.0, seed: 0, stop_token: None }
    }
}

/// The `max_new` (or fewer, at `stop_token`) tokens that follow `prompt`.
/// The prompt runs once; each new token is one cached forward step.
pub fn generate(model: &Pretrained, prompt: &[u32], cfg: &GenerateConfig) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        candle_core::bail!("generate: the prompt is empty (give at least one token id)");
    }
    let vocab = model.vocab_size() as u32;
    if let Some(bad) = prompt.iter().find(|&&t| t >= vocab) {
        candle_core::bail!("generate: token id {bad} is outside the vocabulary (size {vocab})");
    }
    let device = model.params().device().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut cache = model.new_cache();
    let mut input = Tensor::from_slice(prompt, (1, prompt.len()), &device)?;
    let mut out = Vec::with_capacity(cfg.max_new);
    for _ in 0..cfg.max_new {
        let logits = model.forward_cached(&input, Some(&mut cache), &mut Hooks::none())?;
        let last = logits.get(0)?.get(logits.dim(1)? - 1)?; // (vocab,)
        let next = pick(&last, cfg.temperature, &mut rng)?;
        out.push(next);
        if cfg.stop_token == Some(next) {
            break;
        }
        input = Tensor::from_slice(&[next], (1, 1), &device)?;
    }
    Ok(out)
}

/// Argmax at T = 0, else an inverse-CDF draw from softmax(logits / T).
fn pick(logits: &Tensor, temperature: f64, rng: &mut ChaCha8Rng) -> Result<u32> {
    if temperature <= 0.0 {
        return logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_scalar::<u32>();
    }
    let probs = crate::nn::ops::softmax_last_dim(&(logits / temperature)?)?.to_vec1::<f32>()?;
    let u: f32 = rng.random::<f32>() * probs.iter().sum::<f32>();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return Ok(i as u32);
        }
    }
    Ok(probs.len() as u32 - 1)
}
