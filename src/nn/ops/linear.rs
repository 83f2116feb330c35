//! Fused affine map with a GEMM backward that writes every gradient in its
//! final layout (no transposed copies, no zero-filled accumulators).
//!
//! y = x·Wᵀ + b, x: (rows, d_in), W: (d_out, d_in), b: (d_out,)
//! dx = dy·W (term 1);  dW = dyᵀ·x (term 2);  db = Σ_rows dy (term 3)
//! Gradients are computed only for inputs that autograd tracks (frozen
//! weights cost nothing). GEMMs split the output, never the reduction, and
//! db sums fixed row blocks in order, so results are thread-count independent.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{fused_ok, slice, with_f32, written_by, BLOCK_ROWS};

/// `dst (m×n, row-major) = [dst +] lhs (m×k) · rhs (k×n)`, input strides given
/// as (row, col) in elements. faer's kernels (measured 1.2–2× the `gemm`
/// crate's on these shapes); the product is computed as its transpose
/// Cᵀ = Rᵀ·Lᵀ with a column-major destination, which faer prefers.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    m: usize, n: usize, k: usize,
    dst: *mut f32, accumulate: bool,
    lhs: &[f32], lhs_rs: usize, lhs_cs: usize,
    rhs: &[f32], rhs_rs: usize, rhs_cs: usize,
) {
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs, "gemm_into: lhs out of bounds");
    assert!(n == 0 || k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs, "gemm_into: rhs out of bounds");
    let threads = rayon::current_num_threads();
    let par = if threads > 1 { faer::Par::rayon(threads) } else { faer::Par::Seq };
    let accum = if accumulate { faer::Accum::Add } else { faer::Accum::Replace };
    // SAFETY: the asserts above bound every element the input views address;
    // callers pass a dst valid for m·n writes that aliases neither input.
    unsafe {
        let rhs_t = faer::MatRef::<f32>::from_raw_parts(rhs.as_ptr(), n, k, rhs_cs as isize, rhs_rs as isize);
        let lhs_t = faer::MatRef::<f32>::from_raw_parts(lhs.as_ptr(), k, m, lhs_cs as isize, lhs_rs as isize);
        let dst_t = faer::MatMut::<f32>::from_raw_parts_mut(dst, n, m, 1, n as isize);
        faer::linalg::matmul::matmul(dst_t, accum, rhs_t, lhs_t, 1.0, par);
    }
}

/// Column sums of a row-major (rows × cols) matrix, by fixed row blocks.
fn col_sums(g: &[f32], cols: usize) -> Vec<f32> {
    let partial: Vec<Vec<f32>> = g
        .par_chunks(BLOCK_ROWS * cols)
        .map(|block| {
            let mut acc = vec![0.0f32; cols];
            for row in block.chunks_exact(cols) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .collect();
    let mut out = vec![0.0f32; cols];
    for p in &partial {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    // x (rows×in) · Wᵀ (in×out): Wᵀ[i][o] = W[o·in + i].
    match b {
        Some(b) => {
            let mut y = vec![0.0f32; rows * d_out];
            y.par_chunks_mut(d_out * BLOCK_ROWS).for_each(|chunk| {
                for row in chunk.chunks_exact_mut(d_out) {
                    row.copy_from_slice(b);
                }
            });
            gemm_into(rows, d_out, d_in, y.as_mut_ptr(), true, x, d_in, 1, w, 1, d_in);
            y
        }
        None => written_by(rows * d_out, |y| gemm_into(rows, d_out, d_in, y, false, x, d_in, 1, w, 1, d_in)),
    }
}

/// Gradients for (x, W, b) from dy; `None` where the input is not tracked.
fn backward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (rows, d_in) = x.dims2()?;
    let d_out = w.dim(0)?;
    let dev = x.device();
    with_f32(dy, "linear", |g| -> Result<_> {
        let dx = if x.track_op() {
            let dx = with_f32(w, "linear", |wv| {
                written_by(rows * d_in, |dx| gemm_into(rows, d_in, d_out, dx, false, g, d_out, 1, wv, d_in, 1)) // term 1
            })?;
            Some(Tensor::from_vec(dx, (rows, d_in), dev)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            let dw = with_f32(x, "linear", |xv| {
                written_by(d_out * d_in, |dw| gemm_into(d_out, d_in, rows, dw, false, g, 1, d_out, xv, d_in, 1)) // term 2
            })?;
            Some(Tensor::from_vec(dw, (d_out, d_in), dev)?)
        } else {
            None
        };
        let db = match b {
            Some(b) if b.track_op() => Some(Tensor::from_vec(col_sums(g, d_out), d_out, dev)?), // term 3
            _ => None,
        };
        Ok((dx, dw, db))
    })?
}

struct LinearBias;
struct LinearNoBias;

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "fused-linear"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, d_in) = l1.shape().dims2()?;
        let d_out = l2.shape().dims2()?.0;
        let y = forward(slice(s1, l1, "linear")?, slice(s2, l2, "linear")?, Some(slice(s3, l3, "linear")?), rows, d_in, d_out);
        Ok((CpuStorage::F32(y), Shape::from((rows, d_out))))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        backward(x, w, Some(b), dy)
    }
}

impl CustomOp2 for LinearNoBias {
    fn name(&self) -> &'static str {
        "fused-linear-no-bias"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, d_in) = l1.shape().dims2()?;
        let d_out = l2.shape().dims2()?.0;
        let y = forward(slice(s1, l1, "linear")?, slice(s2, l2, "linear")?, None, rows, d_in, d_out);
        Ok((CpuStorage::F32(y), Shape::from((rows, d_out))))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(x, w, None, dy)?;
        Ok((dx, dw))
    }
}

/// `x: (rows, d_in)`, `w: (d_out, d_in)`, `b: (d_out,)` → `(rows, d_out)`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if !fused_ok(x) || !fused_ok(w) {
        return linear_reference(x, w, b);
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearBias),
        None => x.apply_op2(&w, LinearNoBias),
    }
}

/// The composed version (test oracle and non-CPU fallback).
pub fn linear_reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn matches_reference_with_and_without_bias() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (300, 24), &dev)?;
        let w = Var::randn(0f32, 1., (40, 24), &dev)?;
        let b = Var::randn(0f32, 1., 40, &dev)?;
        let mix = Tensor::randn(0f32, 1., (300, 40), &dev)?;
        for bias in [Some(b.as_tensor()), None] {
            let f = linear(&x, &w, bias)?;
            let r = linear_reference(&x, &w, bias)?;
            assert!(max_diff(&f, &r)? < 1e-4);
            let gf = (f * &mix)?.sum_all()?.backward()?;
            let gr = (r * &mix)?.sum_all()?.backward()?;
            for t in [x.as_tensor(), w.as_tensor()] {
                assert!(max_diff(gf.get(t).unwrap(), gr.get(t).unwrap())? < 1e-3);
            }
            if bias.is_some() {
                assert!(max_diff(gf.get(&b).unwrap(), gr.get(&b).unwrap())? < 1e-3);
            }
        }
        Ok(())
    }

    #[test]
    fn finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (5, 3), &dev)?;
        let w = Var::randn(0f32, 1., (4, 3), &dev)?;
        let b = Var::randn(0f32, 1., 4, &dev)?;
        let mix = Tensor::randn(0f32, 1., (5, 4), &dev)?;
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<f64> {
            Ok((linear(x, w, Some(b))? * &mix)?.sum_all()?.to_scalar::<f32>()? as f64)
        };
        let grads = (linear(&x, &w, Some(&b))? * &mix)?.sum_all()?.backward()?;
        for which in 0..3 {
            let t = [x.as_tensor(), w.as_tensor(), b.as_tensor()][which];
            let g: Vec<f32> = grads.get(t).unwrap().flatten_all()?.to_vec1()?;
            let base: Vec<f32> = t.flatten_all()?.to_vec1()?;
            for i in 0..base.len() {
                let at = |d: f32| -> Result<f64> {
                    let mut v = base.clone();
                    v[i] += d;
                    let p = Tensor::from_vec(v, t.shape(), &dev)?;
                    match which {
                        0 => loss(&p, &w, &b),
                        1 => loss(&x, &p, &b),
                        _ => loss(&x, &w, &p),
                    }
                };
                let fd = (at(1e-2)? - at(-1e-2)?) / 2e-2;
                assert!((fd - g[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()), "input {which}[{i}]: {fd} vs {}", g[i]);
            }
        }
        Ok(())
    }

    #[test]
    fn frozen_weight_gets_no_gradient_and_threads_do_not_matter() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (700, 32), &dev)?;
        let w = Tensor::randn(0f32, 1., (48, 32), &dev)?; // frozen
        let grads = linear(&x, &w, None)?.sqr()?.sum_all()?.backward()?;
        assert!(grads.get(&w).is_none());
        let wv = Var::from_tensor(&w)?;
        let b = Var::randn(0f32, 1., 48, &dev)?;
        let run = |n: usize| -> Result<Vec<f32>> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().map_err(candle_core::Error::wrap)?;
            pool.install(|| {
                let y = linear(&x, &wv, Some(&b))?;
                let g = y.sqr()?.sum_all()?.backward()?;
                let mut out: Vec<f32> = y.flatten_all()?.to_vec1()?;
                for t in [wv.as_tensor(), x.as_tensor(), b.as_tensor()] {
                    out.extend(g.get(t).unwrap().flatten_all()?.to_vec1::<f32>()?);
                }
                Ok(out)
            })
        };
        assert!(run(1)? == run(2)?, "results depend on the thread count");
        Ok(())
    }
}
