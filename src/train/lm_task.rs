//! Next-token training of a `Gpt` on `TokenBatch`es: the `Task` the generic
//! `latentlab train` command uses.

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;

use super::metrics::Metrics;
use super::run::{backprop, Task};
use super::shards::{sharded_grads, slice_range};
use crate::data::TokenBatch;
use crate::interp::hooks::Hooks;
use crate::models::gpt::Gpt;
use crate::models::LanguageModel;
use crate::nn::{ops, Params};

/// Draws a training batch.
pub type Sampler = Box<dyn FnMut(usize, &mut ChaCha8Rng) -> TokenBatch + Send>;

pub struct LmTask {
    pub model: Gpt,
    pub sampler: Sampler,
    pub batch_size: usize,
    /// Fixed evaluation batches (loss and accuracy on scored positions).
    pub eval: Vec<TokenBatch>,
    /// Batch slices computed concurrently (`TrainConfig::shards`).
    pub shards: usize,
}

/// Tensors of a batch: ids (b, t), flat targets (b·t,), flat weights (b·t,).
pub fn batch_tensors(b: &TokenBatch, device: &Device) -> Result<(Tensor, Tensor, Tensor)> {
    let ids = Tensor::from_slice(&b.inputs, (b.batch, b.seq_len), device)?;
    let targets = Tensor::from_slice(&b.targets, b.batch * b.seq_len, device)?;
    let weights = Tensor::from_slice(&b.weights, b.batch * b.seq_len, device)?;
    Ok((ids, targets, weights))
}

/// Weighted next-token loss of `model` on `b`.
/// When fewer than a third of the positions are scored (noisy recall: ~1 in 8), the
/// logits are computed at those rows only (`Gpt::forward_rows`); the loss is the same.
pub fn lm_loss(model: &Gpt, b: &TokenBatch) -> Result<Tensor> {
    let rows: Vec<u32> = (0..b.weights.len() as u32).filter(|&i| b.weights[i as usize] != 0.0).collect();
    if !rows.is_empty() && rows.len() * 3 < b.weights.len() {
        let device = model.params().device();
        let ids = Tensor::from_slice(&b.inputs, (b.batch, b.seq_len), device)?;
        let t: Vec<u32> = rows.iter().map(|&r| b.targets[r as usize]).collect();
        let w: Vec<f32> = rows.iter().map(|&r| b.weights[r as usize]).collect();
        let (targets, weights) = (Tensor::from_vec(t, rows.len(), device)?, Tensor::from_vec(w, rows.len(), device)?);
        return ops::cross_entropy(&model.forward_rows(&ids, &rows)?, &targets, Some(&weights));
    }
    let (ids, targets, weights) = batch_tensors(b, model.params().device())?;
    let logits = model.forward(&ids, &mut Hooks::none())?;
    let v = logits.dim(2)?;
    ops::cross_entropy(&logits.reshape((b.batch * b.seq_len, v))?, &targets, Some(&weights))
}

/// Rows `[start, end)` of a batch.
fn batch_rows(b: &TokenBatch, start: usize, end: usize) -> TokenBatch {
    let (a, z) = (start * b.seq_len, end * b.seq_len);
    TokenBatch {
        batch: end - start,
        seq_len: b.seq_len,
        inputs: b.inputs[a..z].to_vec(),
        targets: b.targets[a..z].to_vec(),
        weights: b.weights[a..z].to_vec(),
    }
}

/// `lm_loss` of `b` and its gradients, with the batch split into `shards` contiguous
/// slices computed concurrently (`shards::sharded_grads`). Each slice's loss is its
/// weighted mean times its share of the batch's total weight, so the summed loss and
/// gradients are the whole batch's up to float rounding.
pub fn lm_loss_grads(model: &Gpt, b: &TokenBatch, shards: usize) -> Result<(f64, GradStore)> {
    let n = shards.clamp(1, b.batch.max(1));
    if n == 1 {
        return backprop(&lm_loss(model, b)?);
    }
    let total: f64 = b.weights.iter().map(|&w| w as f64).sum();
    let (value, grads, _) = sharded_grads(model.params(), n, |i| {
        let r = slice_range(b.batch, n, i);
        let part = batch_rows(b, r.start, r.end);
        let w: f64 = part.weights.iter().map(|&w| w as f64).sum();
        if w == 0.0 || total == 0.0 {
            return Ok((None, ()));
        }
        Ok((Some((lm_loss(model, &part)? * (w / total))?), ()))
    })?;
    Ok((value, grads))
}

/// Loss and top-1 accuracy on the scored positions of `b`.
pub fn lm_eval(model: &Gpt, b: &TokenBatch) -> Result<(f64, f64)> {
    let (ids, targets, weights) = batch_tensors(b, model.params().device())?;
    let logits = model.forward(&ids, &mut Hooks::none())?;
    let v = logits.dim(2)?;
    let flat = logits.reshape((b.batch * b.seq_len, v))?;
    let loss = ops::cross_entropy(&flat, &targets, Some(&weights))?.to_scalar::<f32>()? as f64;
    let pred: Vec<u32> = flat.argmax(1)?.to_vec1()?;
    let (mut hit, mut n) = (0.0, 0.0);
    for ((p, t), w) in pred.iter().zip(&b.targets).zip(&b.weights) {
        if *w > 0.0 {
            n += 1.0;
            if p == t {
                hit += 1.0;
            }
        }
    }
    Ok((loss, if n > 0.0 { hit / n } else { 0.0 }))
}

impl Task for LmTask {
    fn params(&self) -> &Params {
        self.model.params()
    }
    fn train_loss(&mut self, _step: u64, rng: &mut ChaCha8Rng) -> Result<(Tensor, Metrics)> {
        let b = (self.sampler)(self.batch_size, rng);
        Ok((lm_loss(&self.model, &b)?, Metrics::new()))
    }
    fn train_grads(&mut self, _step: u64, rng: &mut ChaCha8Rng) -> Result<(f64, GradStore, Metrics)> {
        let b = (self.sampler)(self.batch_size, rng);
        let (loss, grads) = lm_loss_grads(&self.model, &b, self.shards)?;
        Ok((loss, grads, Metrics::new()))
    }
    fn evaluate(&mut self, _step: u64) -> Result<Metrics> {
        let mut m = Metrics::new();
        let (mut loss, mut acc) = (0.0, 0.0);
        for b in &self.eval {
            let (l, a) = lm_eval(&self.model, b)?;
            loss += l;
            acc += a;
        }
        let n = self.eval.len().max(1) as f64;
        m.insert("eval_loss".into(), loss / n);
        m.insert("eval_acc".into(), acc / n);
        Ok(m)
    }
}
