//! Softmax over the last dimension, and the fused scale + causal mask + softmax of attention scores,
//! as CPU kernels with an analytic backward. Fall back to the composed candle ops off the CPU.

// z = scale·x,  z_j = −∞ where masked (causal: key k > query q + (key_len − query_len))
// y_j = e^{z_j − max z} / Σ_k e^{z_k − max z}                      (masked y_j = 0 exactly)
// dx_j = scale · y_j · (dy_j − Σ_k y_k·dy_k)                       (backward reads the saved y)
// Only the unmasked prefix of a causal row is touched; the rest stays 0 in y and dx.

use super::cpu::{self, fast_exp, row_dot, row_max, row_sum};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

fn fwd_row(x: &[f32], scale: f32, y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for i in 0..x.len() {
        y[i] = x[i] * scale;
    }
    let max = row_max(y);
    for v in y.iter_mut() {
        *v = fast_exp(*v - max);
    }
    let inv = 1.0 / row_sum(y);
    for v in y.iter_mut() {
        *v *= inv;
    }
}

fn bwd_row(y: &[f32], dy: &[f32], scale: f32, dx: &mut [f32]) {
    assert!(y.len() == dx.len() && dy.len() == dx.len());
    let ydy = row_dot(y, dy);
    for i in 0..y.len() {
        dx[i] = scale * y[i] * (dy[i] - ydy);
    }
}

/// Row geometry: `len` entries per row; for a causal row `r`, query `r % q_len` sees `q + offset + 1` keys.
#[derive(Clone, Copy)]
struct Rows {
    len: usize,
    causal: Option<(usize, usize)>, // (q_len, offset)
}

impl Rows {
    fn new(l: &Layout, causal: bool, name: &str) -> Result<Self> {
        let len = cpu::last_dim(l);
        if !causal {
            return Ok(Self { len, causal: None });
        }
        let dims = l.dims();
        if dims.len() < 2 || dims[dims.len() - 2] > len {
            bail!("{name}: scores {dims:?} need query_len <= key_len");
        }
        let q_len = dims[dims.len() - 2];
        Ok(Self {
            len,
            causal: Some((q_len, len - q_len)),
        })
    }

    fn valid(&self, row: usize) -> usize {
        match self.causal {
            None => self.len,
            Some((q_len, offset)) => (row % q_len + offset + 1).min(self.len),
        }
    }

    /// Applies `f(row_index, valid, out_row)` to every row in parallel (results do not depend on the split).
    fn for_each(&self, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
        let per_task = cpu::rows_per_task(self.len);
        out.par_chunks_mut(per_task * self.len)
            .enumerate()
            .for_each(|(task, rows)| {
                for (j, row) in rows.chunks_mut(self.len).enumerate() {
                    let r = task * per_task + j;
                    f(r, self.valid(r), row);
                }
            });
    }
}

struct Softmax {
    scale: f32,
    causal: bool,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        if self.causal {
            "latentlab-causal-softmax"
        } else {
            "latentlab-softmax"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::slice(s, l, self.name())?;
        let rows = Rows::new(l, self.causal, self.name())?;
        let mut y = vec![0f32; x.len()];
        rows.for_each(&mut y, |r, n, y| {
            fwd_row(&x[r * rows.len..r * rows.len + n], self.scale, &mut y[..n])
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let bwd = SoftmaxBwd {
            scale: self.scale,
            causal: self.causal,
        };
        Ok(Some(y.detach().apply_op2(&dy.contiguous()?.detach(), bwd)?))
    }
}

/// Forward-only kernel `(y, dy) -> dx` used by [`Softmax::bwd`].
struct SoftmaxBwd {
    scale: f32,
    causal: bool,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "latentlab-softmax-bwd"
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
        if y.len() != dy.len() {
            bail!(
                "{}: y has {} elements, dy {}",
                self.name(),
                y.len(),
                dy.len()
            );
        }
        let rows = Rows::new(l1, self.causal, self.name())?;
        let mut dx = vec![0f32; y.len()];
        rows.for_each(&mut dx, |r, n, dx| {
            let span = r * rows.len..r * rows.len + n;
            bwd_row(&y[span.clone()], &dy[span], self.scale, &mut dx[..n])
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !cpu::fused_ok(x) {
        return softmax_last_dim_reference(x);
    }
    x.contiguous()?.apply_op1(Softmax {
        scale: 1.0,
        causal: false,
    })
}

/// Composed candle softmax: the test oracle and the non-CPU fallback.
pub fn softmax_last_dim_reference(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// Scaled, causally masked softmax of attention scores.
/// `scores: (batch, head_index, query_pos, key_pos)`; entry (q, k) is masked when
/// `k > q + (key_len - query_len)`. Returns softmax(scale * scores) with masked entries 0.
pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    if !cpu::fused_ok(scores) {
        return causal_softmax_reference(scores, scale);
    }
    scores.contiguous()?.apply_op1(Softmax {
        scale: scale as f32,
        causal: true,
    })
}

/// Composed candle causal softmax: the test oracle and the non-CPU fallback.
pub fn causal_softmax_reference(scores: &Tensor, scale: f64) -> Result<Tensor> {
    let (q_len, k_len) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
    let offset = k_len - q_len;
    let mask: Vec<f32> = (0..q_len)
        .flat_map(|q| {
            (0..k_len).map(move |k| {
                if k > q + offset {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (q_len, k_len), scores.device())?;
    let s = (scores * scale)?.broadcast_add(&mask)?;
    candle_nn::ops::softmax(&s, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::cpu::testing::*;

    fn parity(
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
        r: &dyn Fn(&Tensor) -> Result<Tensor>,
        x: &Tensor,
    ) {
        let (y, dx) = grad_of(f, x, 11);
        let (y_ref, dx_ref) = grad_of(r, x, 11);
        assert!(
            max_abs_diff(&y, &y_ref) <= 1e-5,
            "forward {}",
            max_abs_diff(&y, &y_ref)
        );
        assert!(
            max_abs_diff(&dx, &dx_ref) <= 1e-5,
            "backward {}",
            max_abs_diff(&dx, &dx_ref)
        );
    }

    #[test]
    fn softmax_matches_reference() {
        parity(
            &|t| softmax_last_dim(t),
            &|t| softmax_last_dim_reference(t),
            &randn(&[6, 5, 37], 1, 5.0),
        );
    }

    #[test]
    fn causal_softmax_matches_reference() {
        let s = 0.125;
        let x = randn(&[2, 3, 9, 9], 2, 8.0);
        parity(
            &|t| causal_softmax(t, s),
            &|t| causal_softmax_reference(t, s),
            &x,
        );
        let rect = randn(&[2, 2, 5, 12], 3, 8.0); // key_len > query_len (cached prefix)
        parity(
            &|t| causal_softmax(t, s),
            &|t| causal_softmax_reference(t, s),
            &rect,
        );
        let y = flat(&causal_softmax(&x, s).unwrap());
        let masked = (0..y.len()).filter(|i| (i % 9) > (i / 9) % 9);
        assert!(masked.into_iter().all(|i| y[i] == 0.0));
    }

    #[test]
    fn softmax_finite_differences() {
        check_fd(&|t| softmax_last_dim(t), &randn(&[3, 7], 4, 2.0), 5);
        check_fd(
            &|t| causal_softmax(t, 0.5),
            &randn(&[1, 2, 4, 4], 6, 2.0),
            7,
        );
    }

    #[test]
    fn softmax_non_contiguous() {
        let x = randn(&[2, 3, 10, 10], 8, 4.0).transpose(2, 3).unwrap();
        parity(
            &|t| softmax_last_dim(t),
            &|t| softmax_last_dim_reference(t),
            &x,
        );
        parity(
            &|t| causal_softmax(t, 0.3),
            &|t| causal_softmax_reference(t, 0.3),
            &x,
        );
    }

    #[test]
    fn softmax_deterministic_across_threads() {
        let x = randn(&[8, 4, 64, 64], 9, 4.0);
        let run = || {
            let (y, dx) = grad_of(&|t| causal_softmax(t, 0.2), &x, 10);
            let (z, dz) = grad_of(&|t| softmax_last_dim(t), &x, 10);
            (flat(&y), flat(&dx), flat(&z), flat(&dz))
        };
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }
}
