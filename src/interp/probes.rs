//! Small probes used to follow training and to diagnose circuits: logits of a
//! token pushed through FFNs alone (logit lens on a memory), logit margins,
//! and attention mass on selected key positions.

use candle_core::{Result, Tensor};

use crate::interp::hooks::Hooks;
use crate::models::Gpt;

/// `W_U · FFN_{layers[-1]}(… FFN_{layers[0]}(E[token]))`: the token's raw
/// embedding through the listed FFNs only (no attention, no residual), as
/// logits `(vocab,)`. Layers without an FFN are skipped.
pub fn ffn_token_logits(model: &Gpt, layers: &[usize], token: u32) -> Result<Vec<f32>> {
    let d = model.cfg.d_model;
    let mut h = model.embed_weight().narrow(0, token as usize, 1)?.reshape((1, 1, d))?;
    for &l in layers {
        if let Some(mlp) = model.block(l).and_then(|b| b.mlp()) {
            h = mlp.forward(&h, &mut Hooks::none())?;
        }
    }
    h.reshape((1, d))?.matmul(&model.unembed_weight().t()?)?.flatten_all()?.to_vec1()
}

/// `logits[target] − max_{k ≠ target} logits[k]`.
pub fn logit_margin(logits: &[f32], target: usize) -> f64 {
    let other = logits.iter().enumerate().filter(|(k, _)| *k != target).map(|(_, v)| *v).fold(f32::NEG_INFINITY, f32::max);
    (logits[target] - other) as f64
}

/// `logits[target] − mean_{k ≠ target} logits[k]`.
pub fn logit_excess(logits: &[f32], target: usize) -> f64 {
    let n = logits.len().saturating_sub(1).max(1) as f64;
    let rest: f64 = logits.iter().enumerate().filter(|(k, _)| *k != target).map(|(_, v)| *v as f64).sum();
    logits[target] as f64 - rest / n
}

/// Mean attention on the previous position, over batch, heads and queries ≥ 1.
/// `pattern: (batch, head_index, query_pos, key_pos)`.
pub fn prev_token_mass(pattern: &Tensor) -> Result<f64> {
    let (b, h, q, k) = pattern.dims4()?;
    let p: Vec<f32> = pattern.flatten_all()?.to_vec1()?;
    let mut total = 0.0;
    let mut n = 0usize;
    for bh in 0..b * h {
        for i in 1..q.min(k) {
            total += p[bh * q * k + i * k + i - 1] as f64;
            n += 1;
        }
    }
    Ok(if n > 0 { total / n as f64 } else { 0.0 })
}

/// For each selected query (sequence, position) with its key set, the summed
/// attention (averaged over heads) on those keys; returns the mean over queries.
/// `pattern: (batch, head_index, query_pos, key_pos)`; `select(b, q)` yields the keys.
pub fn mass_on_keys(pattern: &Tensor, mut select: impl FnMut(usize, usize) -> Option<Vec<usize>>) -> Result<f64> {
    let (b, h, q, k) = pattern.dims4()?;
    let p: Vec<f32> = pattern.flatten_all()?.to_vec1()?;
    let (mut total, mut n) = (0.0, 0usize);
    for bi in 0..b {
        for qi in 0..q {
            let Some(keys) = select(bi, qi) else { continue };
            let mut m = 0.0;
            for hi in 0..h {
                let row = ((bi * h + hi) * q + qi) * k;
                m += keys.iter().map(|&s| p[row + s] as f64).sum::<f64>();
            }
            total += m / h as f64;
            n += 1;
        }
    }
    Ok(if n > 0 { total / n as f64 } else { f64::NAN })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn margins_and_masses() -> Result<()> {
        assert_eq!(logit_margin(&[1.0, 3.0, 2.0], 1), 1.0);
        assert_eq!(logit_excess(&[1.0, 3.0, 2.0], 1), 1.5);
        // One head, 3 positions: row i puts all mass on i-1 (row 0 on itself).
        let p = Tensor::new(&[[[[1f32, 0., 0.], [1., 0., 0.], [0., 1., 0.]]]], &Device::Cpu)?;
        assert_eq!(prev_token_mass(&p)?, 1.0);
        let m = mass_on_keys(&p, |_, q| (q == 2).then(|| vec![0, 1]))?;
        assert_eq!(m, 1.0);
        Ok(())
    }
}
