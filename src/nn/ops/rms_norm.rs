//! RMSNorm over the last dimension (arXiv:1910.07467) as a fused CPU kernel with an analytic
//! backward. Falls back to the composed candle version off the CPU.

// y = x̂·γ,  x̂ = x·rstd,  rstd = 1/√(mean(x²) + eps)
// dx̂ = dy·γ;  dx = rstd·(dx̂ − x̂·mean(dx̂·x̂));  dγ = Σ_rows dy·x̂
// The backward recomputes rstd. dγ: per-block partial sums over BLOCK_ROWS rows, added in block order.

use super::cpu::{self, row_dot, BLOCK_ROWS};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

fn rstd(x: &[f32], eps: f32) -> f32 {
    1.0 / (row_dot(x, x) / x.len() as f32 + eps).sqrt()
}

fn fwd_row(x: &[f32], gamma: &[f32], eps: f32, y: &mut [f32]) {
    let r = rstd(x, eps);
    let d = x.len();
    let (gamma, y) = (&gamma[..d], &mut y[..d]);
    for i in 0..d {
        y[i] = x[i] * r * gamma[i];
    }
}

/// Writes dx for one row and accumulates its dγ contribution.
fn bwd_row(dy: &[f32], x: &[f32], gamma: &[f32], eps: f32, dx: &mut [f32], dgamma: &mut [f32]) {
    let r = rstd(x, eps);
    let d = x.len();
    let (dy, gamma, dx, dgamma) = (&dy[..d], &gamma[..d], &mut dx[..d], &mut dgamma[..d]);
    // dx temporarily holds dx̂ = dy·γ.
    for i in 0..d {
        dx[i] = dy[i] * gamma[i];
        dgamma[i] += dy[i] * x[i] * r;
    }
    let mean_dxhat_xhat = row_dot(dx, x) * r / d as f32;
    for i in 0..d {
        dx[i] = r * (dx[i] - x[i] * r * mean_dxhat_xhat);
    }
}

struct RmsNorm {
    eps: f32,
}

fn check_gamma(name: &str, d: usize, gamma: &[f32]) -> Result<()> {
    if gamma.len() != d {
        bail!(
            "{name}: gamma has {} elements, last dim is {d}",
            gamma.len()
        );
    }
    Ok(())
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "latentlab-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s1, l1, self.name())?;
        let gamma = cpu::slice(s2, l2, self.name())?;
        let d = cpu::last_dim(l1);
        check_gamma(self.name(), d, gamma)?;
        let mut y = vec![0f32; x.len()];
        let per_task = cpu::rows_per_task(d) * d;
        y.par_chunks_mut(per_task)
            .zip(x.par_chunks(per_task))
            .for_each(|(y, x)| {
                for (y, x) in y.chunks_mut(d).zip(x.chunks(d)) {
                    fwd_row(x, gamma, self.eps, y);
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, d) = (x.elem_count(), x.dim(D::Minus1)?);
        let bwd = RmsNormBwd { eps: self.eps };
        let packed = dy
            .contiguous()?
            .detach()
            .apply_op3(&x.detach(), &gamma.detach(), bwd)?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, d)?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dgamma)))
    }
}

/// Forward-only kernel `(dy, x, γ) -> [dx | dγ]` (flat) used by [`RmsNorm::bwd`].
struct RmsNormBwd {
    eps: f32,
}

impl candle_core::CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "latentlab-rms-norm-bwd"
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
        let dy = cpu::slice(s1, l1, self.name())?;
        let x = cpu::slice(s2, l2, self.name())?;
        let gamma = cpu::slice(s3, l3, self.name())?;
        let d = cpu::last_dim(l2);
        check_gamma(self.name(), d, gamma)?;
        if dy.len() != x.len() {
            bail!(
                "{}: dy has {} elements, x {}",
                self.name(),
                dy.len(),
                x.len()
            );
        }
        let n = x.len();
        let mut out = vec![0f32; n + d];
        let (dx, dgamma) = out.split_at_mut(n);
        let span = BLOCK_ROWS * d;
        let mut partial = vec![0f32; n.div_ceil(span) * d];
        dx.par_chunks_mut(span)
            .zip(partial.par_chunks_mut(d))
            .zip(dy.par_chunks(span).zip(x.par_chunks(span)))
            .for_each(|((dx, part), (dy, x))| {
                for ((dx, dy), x) in dx.chunks_mut(d).zip(dy.chunks(d)).zip(x.chunks(d)) {
                    bwd_row(dy, x, gamma, self.eps, dx, part);
                }
            });
        for part in partial.chunks(d) {
            for (acc, p) in dgamma.iter_mut().zip(part) {
                *acc += p;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + d)))
    }
}

/// RMSNorm over the last dimension: `y = x / sqrt(mean(x^2) + eps) * gamma`.
/// `x: (..., d)`, `gamma: (d,)`.
pub fn rms_norm(x: &Tensor, gamma: &Tensor, eps: f64) -> Result<Tensor> {
    if !(cpu::fused_ok(x) && cpu::fused_ok(gamma)) {
        return rms_norm_reference(x, gamma, eps);
    }
    x.contiguous()?
        .apply_op2(&gamma.contiguous()?, RmsNorm { eps: eps as f32 })
}

/// Composed candle RMSNorm: the test oracle and the non-CPU fallback.
pub fn rms_norm_reference(x: &Tensor, gamma: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(gamma)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::cpu::testing::*;

    const EPS: f64 = 1e-6;

    /// Output and gradients w.r.t. x, γ of `Σ f(x, γ)·w`.
    fn all_grads(
        f: fn(&Tensor, &Tensor, f64) -> Result<Tensor>,
        x: &Tensor,
        seed: u64,
    ) -> Vec<Vec<f32>> {
        let d = x.dim(D::Minus1).unwrap();
        let xv = candle_core::Var::from_tensor(x).unwrap();
        let gv = candle_core::Var::from_tensor(&randn(&[d], seed, 1.0)).unwrap();
        let y = f(xv.as_tensor(), gv.as_tensor(), EPS).unwrap();
        let w = randn(y.dims(), seed + 1, 1.0);
        let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        vec![
            flat(&y),
            flat(grads.get(xv.as_tensor()).unwrap()),
            flat(grads.get(gv.as_tensor()).unwrap()),
        ]
    }

    fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32) {
        for (k, (a, b)) in a.iter().zip(b).enumerate() {
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
                .fold(0.0, f32::max);
            assert!(diff <= tol, "output {k}: difference {diff}");
        }
    }

    #[test]
    fn rms_norm_matches_reference() {
        let x = randn(&[3, 70, 24], 1, 2.0);
        assert_close(
            &all_grads(rms_norm, &x, 2),
            &all_grads(rms_norm_reference, &x, 2),
            1e-5,
        );
    }

    #[test]
    fn rms_norm_finite_differences() {
        let g = randn(&[6], 3, 1.0);
        check_fd(&|t| rms_norm(t, &g, EPS), &randn(&[4, 6], 5, 2.0), 6);
        let x = randn(&[4, 6], 7, 2.0);
        check_fd(&|t| rms_norm(&x, t, EPS), &g, 8);
    }

    #[test]
    fn rms_norm_non_contiguous() {
        let x = randn(&[16, 130], 10, 2.0).t().unwrap();
        assert_close(
            &all_grads(rms_norm, &x, 11),
            &all_grads(rms_norm_reference, &x, 11),
            1e-5,
        );
    }

    #[test]
    fn rms_norm_deterministic_across_threads() {
        let x = randn(&[1000, 128], 12, 2.0);
        let run = || all_grads(rms_norm, &x, 13);
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }
}
