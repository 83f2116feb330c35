//! Fused causal attention evaluated at a chosen set of query rows only.
//!
//! A loss that reads few positions (noisy recall scores ~1 in 8) needs the last layer's
//! attention output at those rows alone: keys and values still come from every
//! position, but the scores, the pattern, `P·V` and everything after them shrink to the
//! scored rows. Same per-row math as [`super::causal_attention`]:
//!
//! query row r = (b, i) (flattened index b·s + i, rows sorted ascending), per head:
//! S_r = scale · q_r·K_bᵀ over keys 0..=i, P_r = softmax(S_r), z_r = P_r·V_b.
//! Backward recomputes P; per (batch, kv head), with the rows of batch b stacked:
//!   dP = dZ·Vᵀ;  dV += Pᵀ·dZ;  dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale;
//!   dQ = dS·K;  dK += dSᵀ·Q.
//! Each (batch, kv head) group is one task computed in a fixed order, so results do
//! not depend on the thread count. Only the keys up to the group's last query are read.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::attention::{mm, mm_scaled, SyncPtr};
use super::cpu::{fast_exp, row_dot, row_max, row_sum, wide, with_f32};

/// Geometry of one call: `rows` sorted, `starts[b]..starts[b + 1]` the rows of batch b.
#[derive(Debug, Clone)]
struct Geometry {
    batch: usize,
    k_len: usize,
    n_heads: usize,
    n_kv_heads: usize,
    d_head: usize,
    scale: f32,
    /// Query position of each row within its sequence.
    pos: Vec<usize>,
    starts: Vec<usize>,
}

impl Geometry {
    fn new(rows: &[u32], batch: usize, k_len: usize, n_heads: usize, n_kv_heads: usize, d_head: usize, scale: f32) -> Result<Self> {
        if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            candle_core::bail!("attention rows: {n_heads} heads not a multiple of {n_kv_heads} kv heads");
        }
        let mut starts = vec![0usize; batch + 1];
        let mut pos = Vec::with_capacity(rows.len());
        for (i, &r) in rows.iter().enumerate() {
            let r = r as usize;
            if r >= batch * k_len {
                candle_core::bail!("attention rows: row {r} outside the {batch}×{k_len} positions");
            }
            if i > 0 && r <= rows[i - 1] as usize {
                candle_core::bail!("attention rows: rows must be strictly increasing (row {r} after {})", rows[i - 1]);
            }
            starts[r / k_len + 1] += 1;
            pos.push(r % k_len);
        }
        for b in 0..batch {
            starts[b + 1] += starts[b];
        }
        Ok(Self { batch, k_len, n_heads, n_kv_heads, d_head, scale, pos, starts })
    }

    fn q_row(&self) -> usize {
        self.n_heads * self.d_head
    }
    fn kv_row(&self) -> usize {
        self.n_kv_heads * self.d_head
    }
    /// First row, row count and key width (last query position + 1) of batch b.
    fn group(&self, b: usize) -> (usize, usize, usize) {
        let (a, z) = (self.starts[b], self.starts[b + 1]);
        let width = if z > a { self.pos[z - 1] + 1 } else { 0 };
        (a, z - a, width)
    }
}

/// P (m×w, row-major) = causal softmax of scale · Q_rows·K_bgᵀ for batch b, head h.
fn pattern(g: &Geometry, q: &[f32], k: &[f32], b: usize, h: usize, kvh: usize, p: &mut [f32]) -> (usize, usize, usize) {
    let (a, m, w) = g.group(b);
    let dh = g.d_head;
    let p = &mut p[..m * w];
    let qp = q[a * g.q_row() + h * dh..].as_ptr();
    let kp = k[b * g.k_len * g.kv_row() + kvh * dh..].as_ptr();
    // SAFETY: rows a..a+m of Q (row stride q_row) and keys 0..w of batch b are in bounds.
    unsafe { mm_scaled(m, w, dh, p.as_mut_ptr(), w, 1, false, qp, g.q_row(), 1, kp, 1, g.kv_row(), g.scale) };
    let pos = &g.pos[a..a + m];
    wide(#[inline(always)] || for (row, &i) in p.chunks_exact_mut(w).zip(pos) {
        let (live, masked) = row.split_at_mut(i + 1);
        let max = row_max(live);
        for x in live.iter_mut() {
            *x = fast_exp(*x - max);
        }
        let inv = 1.0 / row_sum(live);
        for x in live.iter_mut() {
            *x *= inv;
        }
        masked.fill(0.0);
    });
    (a, m, w)
}

fn forward(g: &Geometry, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
    let dh = g.d_head;
    let mut z = vec![0.0f32; g.pos.len() * g.q_row()];
    let zp = SyncPtr(z.as_mut_ptr());
    let group = g.n_heads / g.n_kv_heads;
    (0..g.batch * g.n_kv_heads).into_par_iter().for_each_init(
        || vec![0.0f32; g.k_len * g.k_len],
        |p, task| {
            #[allow(clippy::redundant_locals)]
            let zp = zp;
            let (b, kvh) = (task / g.n_kv_heads, task % g.n_kv_heads);
            if g.group(b).1 == 0 {
                return;
            }
            for h in kvh * group..(kvh + 1) * group {
                let (a, m, w) = pattern(g, q, k, b, h, kvh, p);
                let vp = v[b * g.k_len * g.kv_row() + kvh * dh..].as_ptr();
                // SAFETY: rows a..a+m, head h of Z belong to this task only.
                unsafe {
                    let dst = zp.0.add(a * g.q_row() + h * dh);
                    mm(m, dh, w, dst, g.q_row(), 1, false, p.as_ptr(), w, 1, vp, g.kv_row(), 1);
                }
            }
        },
    );
    z
}

/// Gradients of q (when `want_dq`), k and v.
fn backward(g: &Geometry, q: &[f32], k: &[f32], v: &[f32], dz: &[f32], want_dq: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dh = g.d_head;
    let mut dq = vec![0.0f32; if want_dq { q.len() } else { 0 }];
    let mut dk = vec![0.0f32; k.len()];
    let mut dv = vec![0.0f32; v.len()];
    let (dqp, dkp, dvp) = (SyncPtr(dq.as_mut_ptr()), SyncPtr(dk.as_mut_ptr()), SyncPtr(dv.as_mut_ptr()));
    let group = g.n_heads / g.n_kv_heads;
    (0..g.batch * g.n_kv_heads).into_par_iter().for_each_init(
        || (vec![0.0f32; g.k_len * g.k_len], vec![0.0f32; g.k_len * g.k_len]),
        |(p, dp), task| {
            let (dqp, dkp, dvp) = (dqp, dkp, dvp);
            let (b, kvh) = (task / g.n_kv_heads, task % g.n_kv_heads);
            if g.group(b).1 == 0 {
                return;
            }
            let kv_off = b * g.k_len * g.kv_row() + kvh * dh;
            for h in kvh * group..(kvh + 1) * group {
                let (a, m, w) = pattern(g, q, k, b, h, kvh, p);
                let q_off = a * g.q_row() + h * dh;
                let dp = &mut dp[..m * w];
                // SAFETY: all blocks are in bounds; dQ rows a..a+m (head h) and the
                // batch-b blocks of dK, dV belong to this task only.
                unsafe {
                    let dzp = dz.as_ptr().add(q_off);
                    mm(m, w, dh, dp.as_mut_ptr(), w, 1, false, dzp, g.q_row(), 1, v.as_ptr().add(kv_off), 1, g.kv_row());
                    mm(w, dh, m, dvp.0.add(kv_off), g.kv_row(), 1, true, p.as_ptr(), 1, w, dzp, g.q_row(), 1);
                }
                wide(#[inline(always)] || for (prow, dprow) in p.chunks_exact(w).zip(dp.chunks_exact_mut(w)) {
                    let dot = row_dot(prow, dprow);
                    for (d, &pv) in dprow.iter_mut().zip(prow) {
                        *d = pv * (*d - dot) * g.scale;
                    }
                });
                // SAFETY: as above.
                unsafe {
                    if want_dq {
                        mm(m, dh, w, dqp.0.add(q_off), g.q_row(), 1, false, dp.as_ptr(), w, 1, k.as_ptr().add(kv_off), g.kv_row(), 1);
                    }
                    mm(w, dh, m, dkp.0.add(kv_off), g.kv_row(), 1, true, dp.as_ptr(), 1, w, q.as_ptr().add(q_off), g.q_row(), 1);
                }
            }
        },
    );
    (dq, dk, dv)
}

struct RowsOp {
    g: Geometry,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("attention rows: inputs must be contiguous"),
    }
}

impl CustomOp3 for RowsOp {
    fn name(&self) -> &'static str {
        "fused-causal-attention-rows"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let z = forward(&self.g, slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        Ok((CpuStorage::F32(z), l1.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _z: &Tensor, dz: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let want_dq = q.track_op();
        let (dq, dk, dv) = with_f32(q, "attention rows", |q| {
            with_f32(k, "attention rows", |k| {
                with_f32(v, "attention rows", |v| with_f32(dz, "attention rows", |dz| backward(&self.g, q, k, v, dz, want_dq)))
            })
        })????;
        let dev = q.device();
        Ok((
            if want_dq { Some(Tensor::from_vec(dq, q.shape(), dev)?) } else { None },
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// Causal multi-head attention at the query rows `rows` only.
/// `q: (n, n_heads·d_head)` — the queries of the flattened positions `rows` (strictly
/// increasing indices b·pos + i into `k`'s (batch, pos) grid); `k, v: (batch, pos,
/// n_kv_heads·d_head)` `-> z: (n, n_heads·d_head)`; row (b, i) sees keys 0..=i of batch b.
pub fn causal_attention_rows(q: &Tensor, k: &Tensor, v: &Tensor, rows: &[u32], n_heads: usize, n_kv_heads: usize, scale: f64) -> Result<Tensor> {
    let (n, q_row) = q.dims2()?;
    let (batch, k_len, kv_row) = k.dims3()?;
    if n != rows.len() || q_row % n_heads != 0 || kv_row != n_kv_heads * (q_row / n_heads) || v.dims() != k.dims() {
        candle_core::bail!("attention rows: bad shapes q {:?} k {:?} v {:?} for {} rows", q.dims(), k.dims(), v.dims(), rows.len());
    }
    if !q.device().is_cpu() || q.dtype() != candle_core::DType::F32 {
        return causal_attention_rows_reference(q, k, v, rows, n_heads, n_kv_heads, scale);
    }
    let g = Geometry::new(rows, batch, k_len, n_heads, n_kv_heads, q_row / n_heads, scale as f32)?;
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, RowsOp { g })
}

/// The composed version: full causal attention with each query row placed at its
/// position, then gathered (test oracle and non-CPU fallback).
pub fn causal_attention_rows_reference(q: &Tensor, k: &Tensor, v: &Tensor, rows: &[u32], n_heads: usize, n_kv_heads: usize, scale: f64) -> Result<Tensor> {
    let (batch, k_len, _) = k.dims3()?;
    let q_row = q.dim(1)?;
    let dh = q_row / n_heads;
    let heads = |x: &Tensor, nh: usize| -> Result<Tensor> { x.reshape((batch, k_len, nh, dh))?.transpose(1, 2)?.contiguous() };
    let r = n_heads / n_kv_heads;
    let rep = |x: Tensor| -> Result<Tensor> {
        if r == 1 {
            return Ok(x);
        }
        let (b, hk, s, dh) = x.dims4()?;
        x.unsqueeze(2)?.broadcast_as((b, hk, r, s, dh))?.reshape((b, hk * r, s, dh))
    };
    // One query per row: (n, heads, 1, dh) against its own batch's keys (n, heads, s, dh).
    let b_idx = Tensor::from_vec(rows.iter().map(|&x| x / k_len as u32).collect::<Vec<u32>>(), rows.len(), q.device())?;
    let kh = rep(heads(k, n_kv_heads)?)?.index_select(&b_idx, 0)?;
    let vh = rep(heads(v, n_kv_heads)?)?.index_select(&b_idx, 0)?;
    let qh = q.reshape((rows.len(), n_heads, 1, dh))?;
    let scores = (qh.matmul(&kh.t()?)? * scale)?; // (n, heads, 1, s)
    let mask: Vec<f32> = rows.iter().flat_map(|&x| (0..k_len).map(move |j| if j > x as usize % k_len { f32::NEG_INFINITY } else { 0.0 })).collect();
    let mask = Tensor::from_vec(mask, (rows.len(), 1, 1, k_len), q.device())?;
    let pattern = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
    pattern.matmul(&vh)?.reshape((rows.len(), q_row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// Rows of a (b, t) grid and random q (for those rows), k, v.
    fn inputs(b: usize, t: usize, h: usize, hk: usize, dh: usize, rows: &[u32]) -> Result<(Var, Var, Var)> {
        let dev = Device::Cpu;
        Ok((
            Var::randn(0f32, 1., (rows.len(), h * dh), &dev)?,
            Var::randn(0f32, 1., (b, t, hk * dh), &dev)?,
            Var::randn(0f32, 1., (b, t, hk * dh), &dev)?,
        ))
    }

    #[test]
    fn equals_full_attention_gathered() -> Result<()> {
        // Full causal attention evaluated at every row, then gathered, gives the same z
        // and the same gradients as the row op fed the gathered queries.
        let (b, t, h, hk, dh) = (3, 6, 2, 1, 4);
        let rows: Vec<u32> = vec![0, 4, 5, 13, 14, 17];
        let dev = Device::Cpu;
        let qf = Var::randn(0f32, 1., (b, t, h * dh), &dev)?;
        let k = Var::randn(0f32, 1., (b, t, hk * dh), &dev)?;
        let v = Var::randn(0f32, 1., (b, t, hk * dh), &dev)?;
        let idx = Tensor::from_slice(&rows, rows.len(), &dev)?;
        let w = Tensor::randn(0f32, 1., (rows.len(), h * dh), &dev)?;
        let full = super::super::causal_attention(&qf, &k, &v, h, hk, 0.4)?.reshape((b * t, h * dh))?.index_select(&idx, 0)?;
        let q_rows = qf.as_tensor().reshape((b * t, h * dh))?.index_select(&idx, 0)?;
        let fused = causal_attention_rows(&q_rows, &k, &v, &rows, h, hk, 0.4)?;
        assert!(max_diff(&full, &fused)? < 1e-5);
        let gf = (full * &w)?.sum_all()?.backward()?;
        let gr = (fused * &w)?.sum_all()?.backward()?;
        for x in [&qf, &k, &v] {
            let d = max_diff(gf.get(x).unwrap(), gr.get(x).unwrap())?;
            assert!(d < 1e-5, "gradient differs by {d} for shape {:?}", x.dims());
        }
        Ok(())
    }

    #[test]
    fn matches_reference_forward_and_backward() -> Result<()> {
        for &(b, t, h, hk, dh, ref rows) in &[(2, 5, 2, 2, 4, vec![1u32, 3, 4, 7, 9]), (3, 6, 4, 2, 3, vec![5u32, 6, 17]), (2, 7, 1, 1, 8, vec![0u32, 13])] {
            let (q, k, v) = inputs(b, t, h, hk, dh, rows)?;
            let w = Tensor::randn(0f32, 1., (rows.len(), h * dh), &Device::Cpu)?;
            let fused = causal_attention_rows(&q, &k, &v, rows, h, hk, 0.37)?;
            let reference = causal_attention_rows_reference(&q, &k, &v, rows, h, hk, 0.37)?;
            assert!(max_diff(&fused, &reference)? < 1e-5);
            let gf = (fused * &w)?.sum_all()?.backward()?;
            let gr = (reference * &w)?.sum_all()?.backward()?;
            for x in [&q, &k, &v] {
                let d = max_diff(gf.get(x).unwrap(), gr.get(x).unwrap())?;
                assert!(d < 1e-4, "gradient differs by {d} for shape {:?}", x.dims());
            }
        }
        Ok(())
    }

    #[test]
    fn finite_differences() -> Result<()> {
        let rows = [2u32, 3, 6];
        let (q, k, v) = inputs(2, 4, 2, 1, 3, &rows)?;
        let w = Tensor::randn(0f32, 1., (3, 6), &Device::Cpu)?;
        let loss = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<f64> {
            Ok((causal_attention_rows(q, k, v, &rows, 2, 1, 0.5)? * &w)?.sum_all()?.to_scalar::<f32>()? as f64)
        };
        let grads = (causal_attention_rows(&q, &k, &v, &rows, 2, 1, 0.5)? * &w)?.sum_all()?.backward()?;
        for which in 0..3 {
            let x = [&q, &k, &v][which];
            let g: Vec<f32> = grads.get(x).unwrap().flatten_all()?.to_vec1()?;
            let base: Vec<f32> = x.flatten_all()?.to_vec1()?;
            for i in (0..base.len()).step_by(3) {
                let eps = 1e-2f32;
                let mut plus = base.clone();
                plus[i] += eps;
                let mut minus = base.clone();
                minus[i] -= eps;
                let at = |vals: Vec<f32>| -> Result<f64> {
                    let t = Tensor::from_vec(vals, x.shape(), &Device::Cpu)?;
                    match which {
                        0 => loss(&t, &k, &v),
                        1 => loss(&q, &t, &v),
                        _ => loss(&q, &k, &t),
                    }
                };
                let fd = (at(plus)? - at(minus)?) / (2.0 * eps as f64);
                assert!((fd - g[i] as f64).abs() < 2e-2 * (1.0 + fd.abs()), "input {which}[{i}]: fd {fd} vs {}", g[i]);
            }
        }
        Ok(())
    }

    #[test]
    fn untracked_queries_get_no_gradient_and_keys_the_same() -> Result<()> {
        let rows = [1u32, 2, 5];
        let (q, k, v) = inputs(2, 3, 1, 1, 4, &rows)?;
        let plain = q.as_tensor().detach();
        let a = causal_attention_rows(&plain, &k, &v, &rows, 1, 1, 0.5)?.sqr()?.sum_all()?.backward()?;
        let b = causal_attention_rows(&q, &k, &v, &rows, 1, 1, 0.5)?.sqr()?.sum_all()?.backward()?;
        assert!(a.get(&plain).is_none());
        assert_eq!(a.get(&k).unwrap().flatten_all()?.to_vec1::<f32>()?, b.get(&k).unwrap().flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }

    #[test]
    fn bad_rows_are_errors() -> Result<()> {
        let (q, k, v) = inputs(2, 3, 1, 1, 4, &[1, 2])?;
        assert!(causal_attention_rows(&q, &k, &v, &[2, 1], 1, 1, 0.5).is_err());
        assert!(causal_attention_rows(&q, &k, &v, &[1, 6], 1, 1, 0.5).is_err());
        assert!(causal_attention_rows(&q, &k, &v, &[1], 1, 1, 0.5).is_err());
        Ok(())
    }

    #[test]
    fn same_bits_for_one_and_two_threads() -> Result<()> {
        let rows: Vec<u32> = vec![3, 7, 8, 15, 20, 30, 31];
        let (q, k, v) = inputs(4, 8, 2, 2, 4, &rows)?;
        let run = |n: usize| -> Result<(Vec<f32>, Vec<f32>)> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().map_err(candle_core::Error::wrap)?;
            pool.install(|| {
                let z = causal_attention_rows(&q, &k, &v, &rows, 2, 2, 0.5)?;
                let g = z.sqr()?.sum_all()?.backward()?;
                Ok((z.flatten_all()?.to_vec1()?, g.get(&k).unwrap().flatten_all()?.to_vec1()?))
            })
        };
        assert_eq!(run(1)?, run(2)?);
        Ok(())
    }
}
