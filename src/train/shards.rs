//! Data parallelism on one machine: a batch split into slices whose forward and backward
//! passes run concurrently, one per core, each on its own single-threaded pool (with small
//! matrices this beats splitting every product over the cores). The parameter gradients
//! are summed in slice order, so a result depends on the number of slices but not on the
//! number of threads. Tasks use it from `Task::train_grads` (`TrainConfig::shards`).

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

use crate::nn::Params;

/// `n` single-threaded pools, made once and reused.
fn pools(n: usize) -> Result<Vec<Arc<rayon::ThreadPool>>> {
    static POOLS: Mutex<Vec<Arc<rayon::ThreadPool>>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().map_err(|_| candle_core::Error::Msg("slice pools lock poisoned".into()))?;
    while pools.len() < n {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().map_err(candle_core::Error::wrap)?;
        pools.push(Arc::new(pool));
    }
    Ok(pools[..n].to_vec())
}

/// Run `slice(i)` for i in 0..n — each returns its loss, already weighted so that the
/// slices' losses sum to the batch loss (or None for a slice with nothing to score), and
/// an extra output — backpropagate each, and sum the gradients of `params`' trainable
/// tensors in slice order. Returns the summed loss, the summed gradients and the extras
/// in slice order. With more than one thread the slices run concurrently on plain scoped
/// threads (a rayon worker would busy-wait and take a core from the slices), each inside
/// its own single-threaded pool with candle's elementwise ops inline.
pub fn sharded_grads<T: Send>(
    params: &Params,
    n: usize,
    slice: impl Fn(usize) -> Result<(Option<Tensor>, T)> + Sync,
) -> Result<(f64, GradStore, Vec<T>)> {
    let one = |i: usize| -> Result<(f64, GradStore, T)> {
        let (loss, extra) = slice(i)?;
        let Some(loss) = loss else { return Ok((0.0, GradStore::default(), extra)) };
        let value = loss.to_scalar::<f32>()? as f64;
        let grads = if value.is_finite() { loss.backward()? } else { GradStore::default() };
        Ok((value, grads, extra))
    };
    let results: Vec<Result<(f64, GradStore, T)>> = if n > 1 && rayon::current_num_threads() > 1 {
        let pools = pools(n)?;
        let one = &one;
        std::thread::scope(|scope| {
            let handles: Vec<_> = pools
                .iter()
                .enumerate()
                .map(|(i, pool)| scope.spawn(move || pool.install(|| candle_core::utils::with_inline_cpu_ops(|| one(i)))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(candle_core::Error::Msg("a batch slice panicked".into()))))
                .collect()
        })
    } else {
        (0..n).map(one).collect()
    };
    let vars = params.trainable();
    let mut value = 0.0;
    let mut grads = GradStore::default();
    let mut extras = Vec::with_capacity(n);
    for r in results {
        let (v, g, extra) = r?;
        value += v;
        extras.push(extra);
        for (_, var) in &vars {
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
    Ok((value, grads, extras))
}

/// The bounds of slice `i` of `n` over `len` rows (contiguous, sizes differ by ≤ 1).
pub fn slice_range(len: usize, n: usize, i: usize) -> std::ops::Range<usize> {
    i * len / n..(i + 1) * len / n
}
