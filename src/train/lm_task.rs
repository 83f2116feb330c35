//! Next-token training of a `Gpt` on `TokenBatch`es: the `Task` the generic
//! `latentlab train` command uses.

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;

use super::metrics::Metrics;
use super::run::Task;
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

/// `n` single-threaded pools, made once and reused.
fn shard_pools(n: usize) -> Result<Vec<std::sync::Arc<rayon::ThreadPool>>> {
    static POOLS: std::sync::Mutex<Vec<std::sync::Arc<rayon::ThreadPool>>> = std::sync::Mutex::new(Vec::new());
    let mut pools = POOLS.lock().map_err(|_| candle_core::Error::Msg("shard pools lock poisoned".into()))?;
    while pools.len() < n {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().map_err(candle_core::Error::wrap)?;
        pools.push(std::sync::Arc::new(pool));
    }
    Ok(pools[..n].to_vec())
}

/// `lm_loss` of `b` and its gradients, with the batch split into `shards` contiguous
/// slices whose forward and backward passes run concurrently (data parallelism: with
/// small matrices one slice per core beats splitting every product over cores). Each
/// slice's loss is its weighted mean times its share of the batch's total weight, so the
/// summed loss and gradients are the whole batch's up to float rounding. The gradients of
/// the parameters are summed in slice order: the result depends on `shards` but not on
/// the number of threads.
pub fn lm_loss_grads(model: &Gpt, b: &TokenBatch, shards: usize) -> Result<(f64, GradStore)> {
    let shards = shards.clamp(1, b.batch.max(1));
    if shards == 1 {
        let loss = lm_loss(model, b)?;
        let value = loss.to_scalar::<f32>()? as f64;
        return Ok((value, if value.is_finite() { loss.backward()? } else { GradStore::default() }));
    }
    let total: f64 = b.weights.iter().map(|&w| w as f64).sum();
    let parts: Vec<TokenBatch> =
        (0..shards).map(|i| batch_rows(b, i * b.batch / shards, (i + 1) * b.batch / shards)).collect();
    let one = |part: &TokenBatch| -> Result<(f64, GradStore)> {
            let w: f64 = part.weights.iter().map(|&w| w as f64).sum();
            if w == 0.0 || total == 0.0 {
                return Ok((0.0, GradStore::default()));
            }
            let loss = (lm_loss(model, part)? * (w / total))?;
            let value = loss.to_scalar::<f32>()? as f64;
            Ok((value, if value.is_finite() { loss.backward()? } else { GradStore::default() }))
    };
    // One slice per thread, each on its own single-threaded pool, so the kernels inside a
    // slice do not split their work again; with one thread the slices run in turn.
    let results: Vec<Result<(f64, GradStore)>> = if rayon::current_num_threads() > 1 {
        let pools = shard_pools(shards)?;
        // Plain scoped threads wait on the pools without spinning (a rayon worker would
        // busy-wait for work to steal and take a core from the slices).
        std::thread::scope(|scope| {
            let handles: Vec<_> =
                parts.iter().zip(&pools).map(|(part, pool)| scope.spawn(|| pool.install(|| candle_core::utils::with_inline_cpu_ops(|| one(part))))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(candle_core::Error::Msg("a batch slice panicked".into()))))
                .collect()
        })
    } else {
        parts.iter().map(one).collect()
    };
    let mut value = 0.0;
    let mut grads = GradStore::default();
    for r in results {
        let (v, g) = r?;
        value += v;
        for (_, var) in model.params().trainable() {
            let t = var.as_tensor();
            if let Some(new) = g.get(t) {
                let sum = match grads.get(t) {
                    Some(old) => (old + new)?,
                    None => new.clone(),
                };
                grads.insert(t, sum);
            }
        }
    }
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
