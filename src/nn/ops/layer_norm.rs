//! LayerNorm over the last dimension (arXiv:1607.06450) as a fused CPU kernel with an analytic
//! backward. Falls back to the composed candle version off the CPU.

// y = x̂·γ + β,  x̂ = (x − μ)·rstd,  μ = mean(x),  rstd = 1/√(mean((x − μ)²) + eps)
// dx̂ = dy·γ;  dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂));  dγ = Σ_rows dy·x̂;  dβ = Σ_rows dy
// The backward recomputes μ and rstd (one pass over a row in L1) instead of saving them.
// dγ, dβ: per-block partial sums over BLOCK_ROWS rows, added in block order (thread-count free).

use super::cpu::{self, row_sum, BLOCK_ROWS};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// (μ, rstd) of a row.
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = row_sum(x) / n;
    let mut lanes = [0f32; 8];
    let c = x.chunks_exact(8);
    let mut tail = 0f32;
    for &v in c.remainder() {
        tail += (v - mean) * (v - mean);
    }
    for v in c {
        for k in 0..8 {
            lanes[k] += (v[k] - mean) * (v[k] - mean);
        }
    }
    let var = (row_sum(&lanes) + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn fwd_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
    let (mean, rstd) = moments(x, eps);
    let d = x.len();
    let (gamma, beta, y) = (&gamma[..d], &beta[..d], &mut y[..d]);
    for i in 0..d {
        y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
    }
}

/// Writes dx for one row and accumulates its dγ, dβ contributions; `scratch` holds dx̂ then x̂.
#[inline(always)]
fn bwd_row(
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let (mean, rstd) = moments(x, eps);
    let d = x.len();
    let (dy, gamma, dx, dgamma, dbeta) = (
        &dy[..d],
        &gamma[..d],
        &mut dx[..d],
        &mut dgamma[..d],
        &mut dbeta[..d],
    );
    // dx temporarily holds x̂ (saves a scratch buffer).
    for i in 0..d {
        dx[i] = (x[i] - mean) * rstd;
        dgamma[i] += dy[i] * dx[i];
        dbeta[i] += dy[i];
    }
    let mut lanes_g = [0f32; 8];
    let mut lanes_gx = [0f32; 8];
    for (c, (g, dyc)) in dx.chunks(8).zip(gamma.chunks(8).zip(dy.chunks(8))) {
        for k in 0..c.len() {
            let dxhat = dyc[k] * g[k];
            lanes_g[k] += dxhat;
            lanes_gx[k] += dxhat * c[k];
        }
    }
    let mean_dxhat = row_sum(&lanes_g) / d as f32;
    let mean_dxhat_xhat = row_sum(&lanes_gx) / d as f32;
    for i in 0..d {
        let xhat = dx[i];
        dx[i] = rstd * (dy[i] * gamma[i] - mean_dxhat - xhat * mean_dxhat_xhat);
    }
}

struct LayerNorm {
    eps: f32,
}

fn check_params(name: &str, d: usize, gamma: &[f32], beta: &[f32]) -> Result<()> {
    if gamma.len() != d || beta.len() != d {
        bail!(
            "{name}: gamma/beta have {}/{} elements, last dim is {d}",
            gamma.len(),
            beta.len()
        );
    }
    Ok(())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "latentlab-layer-norm"
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
        let x = cpu::slice(s1, l1, self.name())?;
        let (gamma, beta) = (
            cpu::slice(s2, l2, self.name())?,
            cpu::slice(s3, l3, self.name())?,
        );
        let d = cpu::last_dim(l1);
        check_params(self.name(), d, gamma, beta)?;
        let mut y = vec![0f32; x.len()];
        let per_task = cpu::rows_per_task(d) * d;
        y.par_chunks_mut(per_task)
            .zip(x.par_chunks(per_task))
            .for_each(|(y, x)| {
                cpu::wide(#[inline(always)] || {
                    for (y, x) in y.chunks_mut(d).zip(x.chunks(d)) {
                        fwd_row(x, gamma, beta, self.eps, y);
                    }
                })
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, d) = (x.elem_count(), x.dim(D::Minus1)?);
        let bwd = LayerNormBwd { eps: self.eps };
        let packed = dy
            .contiguous()?
            .detach()
            .apply_op3(&x.detach(), &gamma.detach(), bwd)?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, d)?.reshape(gamma.shape())?;
        let dbeta = packed.narrow(0, n + d, d)?.reshape(beta.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Forward-only kernel `(dy, x, γ) -> [dx | dγ | dβ]` (flat) used by [`LayerNorm::bwd`].
struct LayerNormBwd {
    eps: f32,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "latentlab-layer-norm-bwd"
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
        check_params(self.name(), d, gamma, gamma)?;
        if dy.len() != x.len() {
            bail!(
                "{}: dy has {} elements, x {}",
                self.name(),
                dy.len(),
                x.len()
            );
        }
        let n = x.len();
        let mut out = vec![0f32; n + 2 * d];
        let (dx, dparams) = out.split_at_mut(n);
        let blocks = n.div_ceil(BLOCK_ROWS * d);
        let mut partial = vec![0f32; blocks * 2 * d];
        let span = BLOCK_ROWS * d;
        dx.par_chunks_mut(span)
            .zip(partial.par_chunks_mut(2 * d))
            .zip(dy.par_chunks(span).zip(x.par_chunks(span)))
            .for_each(|((dx, part), (dy, x))| {
                let (dgamma, dbeta) = part.split_at_mut(d);
                cpu::wide(#[inline(always)] || {
                    for ((dx, dy), x) in dx.chunks_mut(d).zip(dy.chunks(d)).zip(x.chunks(d)) {
                        bwd_row(dy, x, gamma, self.eps, dx, dgamma, dbeta);
                    }
                })
            });
        for part in partial.chunks(2 * d) {
            for (acc, p) in dparams.iter_mut().zip(part) {
                *acc += p;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * d)))
    }
}

/// LayerNorm over the last dimension: `y = (x - mean) * rstd * gamma + beta`.
/// `x: (..., d)`, `gamma, beta: (d,)`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if !(cpu::fused_ok(x) && cpu::fused_ok(gamma) && cpu::fused_ok(beta)) {
        return layer_norm_reference(x, gamma, beta, eps);
    }
    x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        LayerNorm { eps: eps as f32 },
    )
}

/// Composed candle LayerNorm: the test oracle and the non-CPU fallback.
pub fn layer_norm_reference(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(gamma)?.broadcast_add(beta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::cpu::testing::*;

    const EPS: f64 = 1e-5;

    /// Outputs and gradients w.r.t. x, γ, β of `Σ f(x, γ, β)·w`.
    fn all_grads(
        f: fn(&Tensor, &Tensor, &Tensor, f64) -> Result<Tensor>,
        x: &Tensor,
        seed: u64,
    ) -> Vec<Vec<f32>> {
        let d = x.dim(D::Minus1).unwrap();
        let vars: Vec<_> = [
            x.clone(),
            randn(&[d], seed, 1.0),
            randn(&[d], seed + 1, 1.0),
        ]
        .iter()
        .map(|t| candle_core::Var::from_tensor(t).unwrap())
        .collect();
        let y = f(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
            EPS,
        )
        .unwrap();
        let w = randn(y.dims(), seed + 2, 1.0);
        let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let mut out = vec![flat(&y)];
        out.extend(vars.iter().map(|v| flat(grads.get(v.as_tensor()).unwrap())));
        out
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
    fn layer_norm_matches_reference() {
        let x = (randn(&[3, 70, 24], 1, 2.0) + 0.7).unwrap();
        assert_close(
            &all_grads(layer_norm, &x, 2),
            &all_grads(layer_norm_reference, &x, 2),
            1e-5,
        );
    }

    #[test]
    fn layer_norm_finite_differences() {
        let (g, b) = (randn(&[6], 3, 1.0), randn(&[6], 4, 1.0));
        check_fd(&|t| layer_norm(t, &g, &b, EPS), &randn(&[4, 6], 5, 2.0), 6);
        let x = randn(&[4, 6], 7, 2.0);
        check_fd(&|t| layer_norm(&x, t, &b, EPS), &g, 8);
        check_fd(&|t| layer_norm(&x, &g, t, EPS), &b, 9);
    }

    #[test]
    fn layer_norm_non_contiguous() {
        let x = randn(&[16, 130], 10, 2.0).t().unwrap();
        assert_close(
            &all_grads(layer_norm, &x, 11),
            &all_grads(layer_norm_reference, &x, 11),
            1e-5,
        );
    }

    #[test]
    fn layer_norm_deterministic_across_threads() {
        let x = randn(&[1000, 128], 12, 2.0);
        let run = || all_grads(layer_norm, &x, 13);
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }
}
