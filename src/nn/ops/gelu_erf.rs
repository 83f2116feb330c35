//! Exact GELU, x·Φ(x) with the erf form (Hendrycks & Gimpel, arXiv:1606.08415; HF `hidden_act = "gelu"`,
//! used by Pythia), as a fused CPU kernel with an analytic backward. candle's `gelu_erf` evaluates erf
//! in f64, one element at a time on one thread; this one is vectorisable and parallel.
//! Falls back to candle's `gelu_erf` off the CPU or for non-f32 input.

// y = x·Φ(x) = ½·x·(1 + erf(x/√2));  dy/dx = Φ(x) + x·φ(x),  φ(x) = e^(−x²/2)/√(2π)
// erf(z) for z ≥ 0: 1 − (a₁t + a₂t² + a₃t³ + a₄t⁴ + a₅t⁵)·e^(−z²), t = 1/(1 + p·z)
// (Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7), odd in z. e^(−z²) = e^(−x²/2) is `fast_exp`,
// shared by Φ and φ. Backward recomputes Φ and φ from the saved input.

use super::cpu::{self, fast_exp, CHUNK};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const P: f32 = 0.327_591_1;
const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// (Φ(x), φ(x)).
#[inline(always)]
fn cdf_pdf(x: f32) -> (f32, f32) {
    let z = x.abs() * INV_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let e = fast_exp(-z * z); // e^(−x²/2)
    let erf_abs = 1.0 - poly * e;
    let erf = erf_abs.copysign(x);
    (0.5 * (1.0 + erf), e * INV_SQRT_2PI)
}

#[inline(always)]
fn fwd_chunk(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for i in 0..x.len() {
        y[i] = x[i] * cdf_pdf(x[i]).0;
    }
}

#[inline(always)]
fn bwd_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(x.len() == dx.len() && dy.len() == dx.len());
    for i in 0..x.len() {
        let (cdf, pdf) = cdf_pdf(x[i]);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "latentlab-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| cpu::wide(#[inline(always)] || fwd_chunk(x, y)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = x.detach().apply_op2(&dy.contiguous()?.detach(), GeluErfBwd)?;
        Ok(Some(dx))
    }
}

/// Forward-only kernel `(x, dy) -> dx` used by [`GeluErf::bwd`].
struct GeluErfBwd;

impl CustomOp2 for GeluErfBwd {
    fn name(&self) -> &'static str {
        "latentlab-gelu-erf-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s1, l1, self.name())?;
        let dy = cpu::slice(s2, l2, self.name())?;
        let dx = cpu::zip_chunks(self.name(), x, dy, bwd_chunk)?;
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// GELU, exact (erf) form. `x: any shape -> same shape`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !cpu::fused_ok(x) {
        return gelu_erf_reference(x);
    }
    x.contiguous()?.apply_op1(GeluErf)
}

/// Composed candle GELU (erf): the test oracle and the non-CPU fallback.
pub fn gelu_erf_reference(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::cpu::testing::*;

    #[test]
    fn gelu_erf_matches_reference() {
        let x = randn(&[7, 300], 1, 6.0);
        let (y, dx) = grad_of(&|t| gelu_erf(t), &x, 2);
        let (y_ref, dx_ref) = grad_of(&|t| gelu_erf_reference(t), &x, 2);
        assert!(max_abs_diff(&y, &y_ref) <= 1e-5, "{}", max_abs_diff(&y, &y_ref));
        assert!(max_abs_diff(&dx, &dx_ref) <= 1e-5, "{}", max_abs_diff(&dx, &dx_ref));
        let big = (randn(&[1000], 3, 1.0) * 50.0).unwrap();
        let rel = flat(&gelu_erf(&big).unwrap())
            .iter()
            .zip(flat(&gelu_erf_reference(&big).unwrap()))
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0, f32::max);
        assert!(rel <= 1e-5, "relative error {rel}");
    }

    #[test]
    fn gelu_erf_finite_differences() {
        check_fd(&|t| gelu_erf(t), &randn(&[3, 11], 4, 3.0), 5);
    }

    #[test]
    fn gelu_erf_non_contiguous() {
        let x = randn(&[40, 9], 6, 3.0).t().unwrap();
        let (y, dx) = grad_of(&|t| gelu_erf(t), &x, 7);
        let (y_ref, dx_ref) = grad_of(&|t| gelu_erf_reference(t), &x, 7);
        assert!(max_abs_diff(&y, &y_ref) <= 1e-5);
        assert!(max_abs_diff(&dx, &dx_ref) <= 1e-5);
    }

    #[test]
    fn gelu_erf_deterministic_across_threads() {
        let x = randn(&[5, 20_000], 8, 4.0);
        let run = || {
            let (y, dx) = grad_of(&|t| gelu_erf(t), &x, 9);
            (flat(&y), flat(&dx))
        };
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }
}
