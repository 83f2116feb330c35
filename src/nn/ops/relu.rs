//! ReLU as a fused CPU kernel with an analytic backward.
//! Falls back to candle's `relu` off the CPU or for non-f32 input.

// y = max(x, 0);  dx = dy·[y > 0]   (backward reads the saved output, y > 0 ⇔ x > 0)

use super::cpu::{self, CHUNK};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[inline(always)]
fn fwd_chunk(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for i in 0..x.len() {
        y[i] = if x[i] > 0.0 { x[i] } else { 0.0 };
    }
}

#[inline(always)]
fn bwd_chunk(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(y.len() == dx.len() && dy.len() == dx.len());
    for i in 0..y.len() {
        dx[i] = if y[i] > 0.0 { dy[i] } else { 0.0 };
    }
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "latentlab-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| cpu::wide(#[inline(always)] || fwd_chunk(x, y)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            y.detach().apply_op2(&dy.contiguous()?.detach(), ReluBwd)?,
        ))
    }
}

/// Forward-only kernel `(y, dy) -> dx` used by [`Relu::bwd`].
struct ReluBwd;

impl CustomOp2 for ReluBwd {
    fn name(&self) -> &'static str {
        "latentlab-relu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = cpu::slice(s1, l1, self.name())?;
        let dy = cpu::slice(s2, l2, self.name())?;
        let dx = cpu::zip_chunks(self.name(), y, dy, bwd_chunk)?;
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// ReLU. `x: any shape -> same shape`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !cpu::fused_ok(x) {
        return relu_reference(x);
    }
    x.contiguous()?.apply_op1(Relu)
}

/// Composed candle ReLU: the test oracle and the non-CPU fallback.
pub fn relu_reference(x: &Tensor) -> Result<Tensor> {
    x.relu()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::cpu::testing::*;

    #[test]
    fn relu_matches_reference() {
        let x = randn(&[9, 257], 1, 2.0);
        let (y, dx) = grad_of(&|t| relu(t), &x, 2);
        let (y_ref, dx_ref) = grad_of(&|t| relu_reference(t), &x, 2);
        assert_eq!(max_abs_diff(&y, &y_ref), 0.0);
        assert_eq!(max_abs_diff(&dx, &dx_ref), 0.0);
    }

    #[test]
    fn relu_finite_differences() {
        check_fd(&|t| relu(t), &randn(&[3, 11], 4, 3.0), 5);
    }

    #[test]
    fn relu_non_contiguous() {
        let x = randn(&[33, 8], 6, 2.0).t().unwrap();
        let (y, dx) = grad_of(&|t| relu(t), &x, 7);
        let (y_ref, dx_ref) = grad_of(&|t| relu_reference(t), &x, 7);
        assert_eq!(max_abs_diff(&y, &y_ref), 0.0);
        assert_eq!(max_abs_diff(&dx, &dx_ref), 0.0);
    }

    #[test]
    fn relu_deterministic_across_threads() {
        let x = randn(&[4, 20_000], 8, 2.0);
        let run = || {
            let (y, dx) = grad_of(&|t| relu(t), &x, 9);
            (flat(&y), flat(&dx))
        };
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }
}
