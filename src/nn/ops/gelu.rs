//! GELU (tanh approximation, arXiv:1606.08415) as a fused CPU kernel with an analytic backward.
//! Falls back to candle's `gelu` off the CPU or for non-f32 input.

// y  = ½·x·(1 + t),  t = tanh(u),  u = k·(x + c·x³),  k = √(2/π),  c = 0.044715
// dy/dx = ½·(1 + t) + ½·x·(1 − t²)·k·(1 + 3c·x²)
// tanh is `fast_tanh` (rational, vectorisable), not libm. Backward recomputes t from the saved input.

use super::cpu::{self, fast_tanh, CHUNK};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const K: f32 = 0.797_884_6;
const C: f32 = 0.044_715;

#[inline(always)]
fn fwd_chunk(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for i in 0..x.len() {
        let xi = x[i];
        let t = fast_tanh(K * xi * (1.0 + C * xi * xi));
        y[i] = 0.5 * xi * (1.0 + t);
    }
}

#[inline(always)]
fn bwd_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(x.len() == dx.len() && dy.len() == dx.len());
    for i in 0..x.len() {
        let xi = x[i];
        let x2 = xi * xi;
        let t = fast_tanh(K * xi * (1.0 + C * x2));
        let du_dx = K * (1.0 + 3.0 * C * x2);
        dx[i] = dy[i] * (0.5 * (1.0 + t) + 0.5 * xi * (1.0 - t * t) * du_dx);
    }
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "latentlab-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| cpu::wide(#[inline(always)] || fwd_chunk(x, y)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = x.detach().apply_op2(&dy.contiguous()?.detach(), GeluBwd)?;
        Ok(Some(dx))
    }
}

/// Forward-only kernel `(x, dy) -> dx` used by [`Gelu::bwd`].
struct GeluBwd;

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "latentlab-gelu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s1, l1, self.name())?;
        let dy = cpu::slice(s2, l2, self.name())?;
        let dx = cpu::zip_chunks(self.name(), x, dy, bwd_chunk)?;
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// GELU, tanh approximation. `x: any shape -> same shape`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !cpu::fused_ok(x) {
        return gelu_reference(x);
    }
    x.contiguous()?.apply_op1(Gelu)
}

/// Composed candle GELU: the test oracle and the non-CPU fallback.
pub fn gelu_reference(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::cpu::testing::*;

    #[test]
    fn fast_tanh_matches_libm() {
        let worst = (-200_000..=200_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| (fast_tanh(x) - x.tanh()).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-6, "worst tanh error {worst}");
    }

    #[test]
    fn gelu_matches_reference() {
        let x = randn(&[7, 300], 1, 6.0);
        let (y, dx) = grad_of(&|t| gelu(t), &x, 2);
        let (y_ref, dx_ref) = grad_of(&|t| gelu_reference(t), &x, 2);
        assert!(max_abs_diff(&y, &y_ref) <= 1e-5);
        assert!(max_abs_diff(&dx, &dx_ref) <= 1e-5);
        let big = (randn(&[1000], 3, 1.0) * 50.0).unwrap();
        let rel = flat(&gelu(&big).unwrap())
            .iter()
            .zip(flat(&gelu_reference(&big).unwrap()))
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0, f32::max);
        assert!(rel <= 1e-5, "relative error {rel}");
    }

    #[test]
    fn gelu_finite_differences() {
        check_fd(&|t| gelu(t), &randn(&[3, 11], 4, 3.0), 5);
    }

    #[test]
    fn gelu_non_contiguous() {
        let x = randn(&[40, 9], 6, 3.0).t().unwrap();
        let (y, dx) = grad_of(&|t| gelu(t), &x, 7);
        let (y_ref, dx_ref) = grad_of(&|t| gelu_reference(t), &x, 7);
        assert!(max_abs_diff(&y, &y_ref) <= 1e-5);
        assert!(max_abs_diff(&dx, &dx_ref) <= 1e-5);
    }

    #[test]
    fn gelu_deterministic_across_threads() {
        let x = randn(&[5, 20_000], 8, 4.0);
        let run = || {
            let (y, dx) = grad_of(&|t| gelu(t), &x, 9);
            (flat(&y), flat(&dx))
        };
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }
}
