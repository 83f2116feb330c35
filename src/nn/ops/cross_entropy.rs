//! Weighted mean softmax cross-entropy as a fused CPU kernel with an analytic backward to the logits.
//! Targets and weights get no gradient. Falls back to the composed candle version off the CPU.

// CE_i = logsumexp(z_i) − z_{i,t_i};   L = Σ_i w_i·CE_i / W,   W = Σ_i w_i  (W ≤ 0 ⇒ W := 1, so L = 0)
// dL/dz_ij = g · (w_i / W) · (softmax(z_i)_j − [j = t_i]),   g = incoming scalar gradient
// Σ_i w_i·CE_i: f64 partial sums per BLOCK_ROWS rows, blocks added in order; W: sequential f64 sum.

use super::cpu::{self, fast_exp, row_max, BLOCK_ROWS};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// (max z, Σ_j e^{z_j − max z}) of a row.
#[inline(always)]
fn max_and_exp_sum(z: &[f32]) -> (f32, f32) {
    let max = row_max(z);
    let mut lanes = [0f32; 8];
    let c = z.chunks_exact(8);
    let mut tail = 0f32;
    for &v in c.remainder() {
        tail += fast_exp(v - max);
    }
    for v in c {
        for k in 0..8 {
            lanes[k] += fast_exp(v[k] - max);
        }
    }
    (max, cpu::row_sum(&lanes) + tail)
}

#[inline(always)]
fn fwd_row(z: &[f32], target: usize) -> f32 {
    let (max, sum) = max_and_exp_sum(z);
    max + sum.ln() - z[target]
}

/// dz = coef·(softmax(z) − onehot(target)),  coef = g·w_i/W.
#[inline(always)]
fn bwd_row(z: &[f32], target: usize, coef: f32, dz: &mut [f32]) {
    let (max, sum) = max_and_exp_sum(z);
    let p_scale = coef / sum;
    let dz = &mut dz[..z.len()];
    for j in 0..z.len() {
        dz[j] = p_scale * fast_exp(z[j] - max);
    }
    dz[target] -= coef;
}

/// Logits `(n, vocab)` flat, targets `(n,)`, weights `(n,)`, and `vocab`.
type Batch<'a> = (&'a [f32], &'a [u32], &'a [f32], usize);

/// Logits, targets and weights as slices, after checking shapes and target range.
fn unpack<'a>(
    name: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> Result<Batch<'a>> {
    let z = cpu::slice(s1, l1, name)?;
    let w = cpu::slice(s3, l3, name)?;
    let Some((start, end)) = l2.contiguous_offsets() else {
        bail!("{name}: targets must be contiguous")
    };
    let t = &s2.as_slice::<u32>()?[start..end];
    let (n, vocab) = match l1.dims() {
        [n, v] => (*n, *v),
        dims => bail!("{name}: logits must be (n, vocab), got {dims:?}"),
    };
    if t.len() != n || w.len() != n {
        bail!(
            "{name}: {n} rows of logits but {} targets and {} weights",
            t.len(),
            w.len()
        );
    }
    if let Some(bad) = t.iter().find(|&&t| t as usize >= vocab) {
        bail!("{name}: target {bad} out of range for vocab {vocab}");
    }
    Ok((z, t, w, vocab))
}

/// W = Σ w_i in f64 (sequential), replaced by 1 when not positive.
fn weight_total(w: &[f32]) -> f64 {
    let total: f64 = w.iter().map(|&w| w as f64).sum();
    if total > 0.0 {
        total
    } else {
        1.0
    }
}

struct CrossEntropy;

impl CustomOp3 for CrossEntropy {
    fn name(&self) -> &'static str {
        "latentlab-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (z, t, w, vocab) = unpack(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let block_sums: Vec<f64> = z
            .par_chunks(BLOCK_ROWS * vocab)
            .zip(t.par_chunks(BLOCK_ROWS).zip(w.par_chunks(BLOCK_ROWS)))
            .map(|(z, (t, w))| {
                cpu::wide(#[inline(always)] || {
                    let rows = z.chunks(vocab).zip(t.iter().zip(w));
                    rows.map(|(z, (&t, &w))| if w == 0.0 { 0.0 } else { w as f64 * fwd_row(z, t as usize) as f64 })
                        .sum()
                })
            })
            .collect();
        let loss = block_sums.iter().sum::<f64>() / weight_total(w);
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
        _loss: &Tensor,
        dloss: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = dloss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let bwd = CrossEntropyBwd { g };
        let dz = logits
            .detach()
            .apply_op3(&targets.detach(), &weights.detach(), bwd)?;
        Ok((Some(dz), None, None))
    }
}

/// Forward-only kernel `(logits, targets, weights) -> dlogits` for incoming gradient `g`.
struct CrossEntropyBwd {
    g: f32,
}

impl CustomOp3 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "latentlab-cross-entropy-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (z, t, w, vocab) = unpack(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let g_over_w = self.g as f64 / weight_total(w);
        let mut dz = vec![0f32; z.len()];
        let per_task = cpu::rows_per_task(vocab);
        dz.par_chunks_mut(per_task * vocab)
            .zip(z.par_chunks(per_task * vocab))
            .zip(t.par_chunks(per_task).zip(w.par_chunks(per_task)))
            .for_each(|((dz, z), (t, w))| {
                cpu::wide(#[inline(always)] || {
                    for ((dz, z), (&t, &w)) in dz.chunks_mut(vocab).zip(z.chunks(vocab)).zip(t.iter().zip(w)) {
                        if w != 0.0 {
                            bwd_row(z, t as usize, (w as f64 * g_over_w) as f32, dz);
                        }
                    }
                })
            });
        Ok((CpuStorage::F32(dz), l1.shape().clone()))
    }
}

/// Weighted mean softmax cross-entropy.
/// `logits: (n, vocab)` f32, `targets: (n,)` u32, `weights: (n,)` f32 or None (all ones).
/// Returns a scalar: sum_i w_i * CE_i / sum_i w_i (0 when all weights are 0).
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    if !cpu::fused_ok(logits) || weights.is_some_and(|w| !cpu::fused_ok(w)) {
        return cross_entropy_reference(logits, targets, weights);
    }
    let targets = targets.to_dtype(DType::U32)?.contiguous()?;
    let weights = match weights {
        Some(w) => w.contiguous()?,
        None => Tensor::ones(logits.dim(0)?, DType::F32, logits.device())?,
    };
    logits
        .contiguous()?
        .apply_op3(&targets, &weights, CrossEntropy)
}

/// Composed candle cross-entropy: the test oracle and the non-CPU fallback.
pub fn cross_entropy_reference(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    match weights {
        None => nll.mean_all(),
        Some(w) => {
            let total = w.sum_all()?.to_scalar::<f32>()?;
            let denom = if total > 0.0 { total } else { 1.0 };
            (nll * w)?.sum_all()? / denom as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::cpu::testing::*;
    use candle_core::Device;

    fn targets(n: usize, vocab: u32, seed: u64) -> Tensor {
        let t: Vec<u32> = (0..n as u64)
            .map(|i| ((i * 7919 + seed * 31) % vocab as u64) as u32)
            .collect();
        Tensor::from_vec(t, n, &Device::Cpu).unwrap()
    }

    fn weights(n: usize, seed: u64) -> Tensor {
        let w = (randn(&[n], seed, 1.0) + 1.0).unwrap().relu().unwrap(); // some exact zeros likely
        w.ge(0.3)
            .unwrap()
            .where_cond(&w, &w.zeros_like().unwrap())
            .unwrap()
    }

    fn check_parity(z: &Tensor, t: &Tensor, w: Option<&Tensor>) {
        let (loss, dz) = grad_of(&|z| cross_entropy(z, t, w), z, 1);
        let (loss_ref, dz_ref) = grad_of(&|z| cross_entropy_reference(z, t, w), z, 1);
        assert!(
            max_abs_diff(&loss, &loss_ref) <= 1e-5,
            "loss {loss} vs {loss_ref}"
        );
        assert!(
            max_abs_diff(&dz, &dz_ref) <= 1e-5,
            "grad {}",
            max_abs_diff(&dz, &dz_ref)
        );
    }

    #[test]
    fn cross_entropy_matches_reference() {
        let z = randn(&[150, 37], 2, 6.0);
        let t = targets(150, 37, 3);
        check_parity(&z, &t, None);
        check_parity(&z, &t, Some(&weights(150, 4)));
        let zero = Tensor::zeros(150, DType::F32, &Device::Cpu).unwrap();
        let loss = cross_entropy(&z, &t, Some(&zero))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(loss, 0.0);
    }

    #[test]
    fn cross_entropy_finite_differences() {
        let (t, w) = (targets(5, 7, 5), weights(5, 6));
        check_fd(
            &|z| cross_entropy(z, &t, Some(&w)),
            &randn(&[5, 7], 7, 3.0),
            8,
        );
        check_fd(&|z| cross_entropy(z, &t, None), &randn(&[5, 7], 9, 3.0), 10);
    }

    #[test]
    fn cross_entropy_non_contiguous() {
        let z = randn(&[37, 90], 11, 4.0).t().unwrap();
        let w = randn(&[3, 90], 12, 1.0)
            .abs()
            .unwrap()
            .narrow(0, 1, 1)
            .unwrap()
            .squeeze(0)
            .unwrap();
        check_parity(&z, &targets(90, 37, 13), Some(&w));
        assert!(
            cross_entropy(&z, &targets(90, 40, 13), None).is_err(),
            "target out of range"
        );
    }

    #[test]
    fn cross_entropy_deterministic_across_threads() {
        let z = randn(&[2000, 64], 14, 5.0);
        let (t, w) = (targets(2000, 64, 15), weights(2000, 16));
        let run = || {
            let (loss, dz) = grad_of(&|z| cross_entropy(z, &t, Some(&w)), &z, 17);
            (flat(&loss), flat(&dz))
        };
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }
}
