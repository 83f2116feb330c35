//! Fused causal attention on (batch, pos, head_index, d_head) tensors, the
//! TransformerLens layout, so no head transposes are materialised — for every query
//! position, or for a chosen set of query rows only (a loss that reads ~1 position in 8
//! needs the last layer's attention there alone; its keys and values still come from
//! every position).
//!
//! Per (batch, head): S = Q·Kᵀ·scale (query i sees keys ≤ i + (s − t); a chosen row
//! (b, i) sees keys ≤ i), P = softmax(S), Z = P·V. Backward recomputes P (nothing is
//! saved) and, per (batch, kv head):
//!   dP = dZ·Vᵀ;  dV += Pᵀ·dZ  (term 1)
//!   dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale  (softmax backward)
//!   dQ = dS·K  (term 2, only for queries autograd tracks);  dK += dSᵀ·Q  (term 3)
//! Work is split over (batch, kv head) groups; each group is computed by one
//! thread in a fixed order, so results do not depend on the thread count.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};

use super::cpu::{fast_exp, row_dot, row_max, row_sum, wide, with_f32};
use rayon::prelude::*;

/// The query rows of one call; the rows of one batch are contiguous in q.
#[derive(Debug, Clone)]
enum QueryRows {
    /// Every position: q_len rows per batch, row i sees keys ≤ i + (k_len − q_len).
    All { q_len: usize },
    /// Chosen rows: batch b owns rows starts[b]..starts[b + 1]; row r sees keys ≤ pos[r].
    Chosen { starts: Vec<usize>, pos: Vec<usize> },
}

/// Geometry of one call.
#[derive(Debug, Clone)]
struct Geometry {
    batch: usize,
    k_len: usize,
    n_heads: usize,
    n_kv_heads: usize,
    d_head: usize,
    scale: f32,
    rows: QueryRows,
}

impl Geometry {
    fn q_row(&self) -> usize {
        self.n_heads * self.d_head
    }
    fn kv_row(&self) -> usize {
        self.n_kv_heads * self.d_head
    }
    fn n_rows(&self) -> usize {
        match &self.rows {
            QueryRows::All { q_len } => self.batch * q_len,
            QueryRows::Chosen { pos, .. } => pos.len(),
        }
    }
    /// First row, row count and key width (keys read by its last row) of batch b.
    fn group(&self, b: usize) -> (usize, usize, usize) {
        match &self.rows {
            QueryRows::All { q_len } => (b * q_len, *q_len, self.k_len),
            QueryRows::Chosen { starts, pos } => {
                let (a, z) = (starts[b], starts[b + 1]);
                (a, z - a, if z > a { pos[z - 1] + 1 } else { 0 })
            }
        }
    }
    /// Scratch floats for the largest group's m×w pattern.
    fn scratch(&self) -> usize {
        (0..self.batch).map(|b| self.group(b)).map(|(_, m, w)| m * w).max().unwrap_or(0)
    }
    /// Keys seen by row i of the group starting at row `first`.
    fn live(&self, first: usize, i: usize) -> usize {
        match &self.rows {
            QueryRows::All { q_len } => (i + self.k_len - q_len + 1).min(self.k_len),
            QueryRows::Chosen { pos, .. } => pos[first + i] + 1,
        }
    }
}

/// A raw pointer that tasks writing disjoint regions may share.
#[derive(Clone, Copy)]
pub(super) struct SyncPtr(pub(super) *mut f32);
// SAFETY: every task writes a disjoint set of (batch, head) columns.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)` with element strides (row, col), single-threaded.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn mm(
    m: usize, n: usize, k: usize,
    dst: *mut f32, dst_rs: usize, dst_cs: usize, accumulate: bool,
    lhs: *const f32, lhs_rs: usize, lhs_cs: usize,
    rhs: *const f32, rhs_rs: usize, rhs_cs: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { mm_scaled(m, n, k, dst, dst_rs, dst_cs, accumulate, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, 1.0) }
}

/// `mm` with the product scaled by `scale`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn mm_scaled(
    m: usize, n: usize, k: usize,
    dst: *mut f32, dst_rs: usize, dst_cs: usize, accumulate: bool,
    lhs: *const f32, lhs_rs: usize, lhs_cs: usize,
    rhs: *const f32, rhs_rs: usize, rhs_cs: usize,
    scale: f32,
) {
    // SAFETY: callers pass in-bounds pointers and strides for the given shapes.
    unsafe {
        gemm::gemm(
            m, n, k,
            dst, dst_cs as isize, dst_rs as isize, accumulate,
            lhs, lhs_cs as isize, lhs_rs as isize,
            rhs, rhs_cs as isize, rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 }, scale,
            false, false, false,
            gemm::Parallelism::None,
        )
    }
}

/// P = causal softmax(scale · Q_bh·K_bgᵀ) of batch b's query rows into `p` (m×w,
/// row-major, zero past each row's last key); returns (first row, m, w).
fn pattern(g: &Geometry, q: &[f32], k: &[f32], b: usize, h: usize, kvh: usize, p: &mut [f32]) -> (usize, usize, usize) {
    let (first, m, w) = g.group(b);
    let dh = g.d_head;
    let p = &mut p[..m * w];
    let qp = q[first * g.q_row() + h * dh..].as_ptr();
    let kp = k[b * g.k_len * g.kv_row() + kvh * dh..].as_ptr();
    // SAFETY: Q rows first..first+m (head h) are m×dh with row stride q_row; K_bgᵀ is
    // dh×w with col stride kv_row; p holds m·w.
    unsafe { mm_scaled(m, w, dh, p.as_mut_ptr(), w, 1, false, qp, g.q_row(), 1, kp, 1, g.kv_row(), g.scale) };
    wide(#[inline(always)] || for (i, row) in p.chunks_exact_mut(w).enumerate() {
        let (live, masked) = row.split_at_mut(g.live(first, i));
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
    (first, m, w)
}

fn forward(g: &Geometry, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
    let dh = g.d_head;
    let mut z = vec![0.0f32; g.n_rows() * g.q_row()];
    let zp = SyncPtr(z.as_mut_ptr());
    let group = g.n_heads / g.n_kv_heads;
    (0..g.batch * g.n_kv_heads).into_par_iter().for_each_init(
        || vec![0.0f32; g.scratch()],
        |p, task| {
            // Capture the whole SyncPtr (Send), not its raw-pointer field.
            #[allow(clippy::redundant_locals)]
            let zp = zp;
            let (b, kvh) = (task / g.n_kv_heads, task % g.n_kv_heads);
            if g.group(b).1 == 0 {
                return;
            }
            for h in kvh * group..(kvh + 1) * group {
                let (first, m, w) = pattern(g, q, k, b, h, kvh, p);
                let vp = v[b * g.k_len * g.kv_row() + kvh * dh..].as_ptr();
                // SAFETY: Z rows first..first+m, head h, belong to this task only (row stride q_row).
                unsafe {
                    let dst = zp.0.add(first * g.q_row() + h * dh);
                    mm(m, dh, w, dst, g.q_row(), 1, false, p.as_ptr(), w, 1, vp, g.kv_row(), 1);
                }
            }
        },
    );
    z
}

/// Gradients of q (when `want_dq`; empty otherwise), k and v.
fn backward(g: &Geometry, q: &[f32], k: &[f32], v: &[f32], dz: &[f32], want_dq: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dh = g.d_head;
    let mut dq = vec![0.0f32; if want_dq { q.len() } else { 0 }];
    let mut dk = vec![0.0f32; k.len()];
    let mut dv = vec![0.0f32; v.len()];
    let (dqp, dkp, dvp) = (SyncPtr(dq.as_mut_ptr()), SyncPtr(dk.as_mut_ptr()), SyncPtr(dv.as_mut_ptr()));
    let group = g.n_heads / g.n_kv_heads;
    let buf = g.scratch();
    (0..g.batch * g.n_kv_heads).into_par_iter().for_each_init(
        || (vec![0.0f32; buf], vec![0.0f32; buf]),
        |(p, dp), task| {
            let (dqp, dkp, dvp) = (dqp, dkp, dvp);
            let (b, kvh) = (task / g.n_kv_heads, task % g.n_kv_heads);
            if g.group(b).1 == 0 {
                return;
            }
            let kv_off = b * g.k_len * g.kv_row() + kvh * dh;
            for h in kvh * group..(kvh + 1) * group {
                let (first, m, w) = pattern(g, q, k, b, h, kvh, p);
                let q_off = first * g.q_row() + h * dh;
                let (p, dp) = (&p[..m * w], &mut dp[..m * w]);
                // SAFETY: all blocks are in bounds; dQ rows first..first+m (head h) and the
                // batch-b blocks of dK_bg, dV_bg belong to this task only.
                unsafe {
                    let dzp = dz.as_ptr().add(q_off);
                    // dP = dZ·Vᵀ
                    mm(m, w, dh, dp.as_mut_ptr(), w, 1, false, dzp, g.q_row(), 1, v.as_ptr().add(kv_off), 1, g.kv_row());
                    // term 1: dV += Pᵀ·dZ
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
                    // term 2: dQ = dS·K (skipped for queries autograd does not track,
                    // e.g. an identity W_Q over frozen embeddings)
                    if want_dq {
                        mm(m, dh, w, dqp.0.add(q_off), g.q_row(), 1, false, dp.as_ptr(), w, 1, k.as_ptr().add(kv_off), g.kv_row(), 1);
                    }
                    // term 3: dK += dSᵀ·Q
                    mm(w, dh, m, dkp.0.add(kv_off), g.kv_row(), 1, true, dp.as_ptr(), 1, w, q.as_ptr().add(q_off), g.q_row(), 1);
                }
            }
        },
    );
    (dq, dk, dv)
}

struct AttentionOp {
    n_heads: usize,
    n_kv_heads: usize,
    scale: f32,
    /// Chosen query rows (`causal_attention_rows`); None = every position.
    chosen: Option<QueryRows>,
}

impl AttentionOp {
    fn geometry(&self, q: &Layout, k: &Layout) -> Result<Geometry> {
        let (batch, k_len, kv_row) = k.shape().dims3()?;
        let (rows, q_row) = match &self.chosen {
            None => {
                let (qb, q_len, q_row) = q.shape().dims3()?;
                if qb != batch || k_len < q_len {
                    candle_core::bail!("fused attention: bad shapes q {:?} k {:?}", q.shape(), k.shape())
                }
                (QueryRows::All { q_len }, q_row)
            }
            Some(rows) => (rows.clone(), q.shape().dims2()?.1),
        };
        let g = Geometry { batch, k_len, n_heads: self.n_heads, n_kv_heads: self.n_kv_heads, d_head: q_row / self.n_heads, scale: self.scale, rows };
        if g.kv_row() != kv_row || g.q_row() != q_row {
            candle_core::bail!("fused attention: bad shapes q {:?} k {:?}", q.shape(), k.shape())
        }
        Ok(g)
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("fused attention: inputs must be contiguous"),
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry(l1, l2)?;
        let z = forward(&g, slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        Ok((CpuStorage::F32(z), l1.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _z: &Tensor, dz: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry(q.layout(), k.layout())?;
        let want_dq = q.track_op();
        let (dq, dk, dv) = with_f32(q, "attention", |q| {
            with_f32(k, "attention", |k| {
                with_f32(v, "attention", |v| with_f32(dz, "attention", |dz| backward(&g, q, k, v, dz, want_dq)))
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

/// Causal multi-head attention with grouped KV heads.
/// `q: (batch, query_pos, n_heads·d_head)`, `k, v: (batch, key_pos, n_kv_heads·d_head)`
/// `-> z: (batch, query_pos, n_heads·d_head)`; query i sees keys ≤ i + (key_pos − query_pos).
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, n_heads: usize, n_kv_heads: usize, scale: f64) -> Result<Tensor> {
    if !q.device().is_cpu() || q.dtype() != candle_core::DType::F32 {
        return causal_attention_reference(q, k, v, n_heads, n_kv_heads, scale);
    }
    let op = AttentionOp { n_heads, n_kv_heads, scale: scale as f32, chosen: None };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// Causal multi-head attention at the query rows `rows` only.
/// `q: (n, n_heads·d_head)` — the queries of the flattened positions `rows` (strictly
/// increasing indices b·pos + i into `k`'s (batch, pos) grid); `k, v: (batch, pos,
/// n_kv_heads·d_head)` `-> z: (n, n_heads·d_head)`; row (b, i) sees keys 0..=i of batch b.
/// Equals [`causal_attention`] over every position, flattened and gathered at `rows`.
pub fn causal_attention_rows(q: &Tensor, k: &Tensor, v: &Tensor, rows: &[u32], n_heads: usize, n_kv_heads: usize, scale: f64) -> Result<Tensor> {
    let (n, q_row) = q.dims2()?;
    let (batch, k_len, kv_row) = k.dims3()?;
    if n != rows.len() || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) || !q_row.is_multiple_of(n_heads) || kv_row != n_kv_heads * (q_row / n_heads) || v.dims() != k.dims() {
        candle_core::bail!("attention rows: bad shapes q {:?} k {:?} v {:?} for {} rows", q.dims(), k.dims(), v.dims(), rows.len());
    }
    let mut starts = vec![0usize; batch + 1];
    let mut pos = Vec::with_capacity(n);
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
    if !q.device().is_cpu() || q.dtype() != candle_core::DType::F32 {
        return causal_attention_rows_reference(q, k, v, rows, n_heads, n_kv_heads, scale);
    }
    let op = AttentionOp { n_heads, n_kv_heads, scale: scale as f32, chosen: Some(QueryRows::Chosen { starts, pos }) };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// The composed version (test oracle and non-CPU fallback).
pub fn causal_attention_reference(q: &Tensor, k: &Tensor, v: &Tensor, n_heads: usize, n_kv_heads: usize, scale: f64) -> Result<Tensor> {
    let (b, t, _) = q.dims3()?;
    let s = k.dim(1)?;
    let heads = |x: &Tensor, n: usize, len: usize| -> Result<Tensor> { x.reshape((b, len, n, ()))?.transpose(1, 2)?.contiguous() };
    let rep = |x: Tensor| -> Result<Tensor> {
        let r = n_heads / n_kv_heads;
        if r == 1 {
            return Ok(x);
        }
        let (b, hk, s, dh) = x.dims4()?;
        x.unsqueeze(2)?.broadcast_as((b, hk, r, s, dh))?.reshape((b, hk * r, s, dh))
    };
    let qh = heads(q, n_heads, t)?;
    let kh = rep(heads(k, n_kv_heads, s)?)?;
    let vh = rep(heads(v, n_kv_heads, s)?)?;
    let scores = (qh.matmul(&kh.t()?)? * scale)?;
    let offset = s - t;
    let mask: Vec<f32> = (0..t).flat_map(|i| (0..s).map(move |j| if j > i + offset { f32::NEG_INFINITY } else { 0.0 })).collect();
    let mask = Tensor::from_vec(mask, (t, s), q.device())?;
    let pattern = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
    pattern.matmul(&vh)?.transpose(1, 2)?.reshape((b, t, ()))
}

/// The composed version of [`causal_attention_rows`]: each query row against its own
/// batch's keys under its causal mask (test oracle and non-CPU fallback).
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
    let b_idx = Tensor::from_vec(rows.iter().map(|&x| x / k_len as u32).collect::<Vec<u32>>(), rows.len(), q.device())?;
    let kh = rep(heads(k, n_kv_heads)?)?.index_select(&b_idx, 0)?; // (n, heads, s, dh)
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

    fn inputs(b: usize, t: usize, s: usize, h: usize, hk: usize, dh: usize) -> Result<(Var, Var, Var)> {
        let dev = Device::Cpu;
        Ok((
            Var::randn(0f32, 1., (b, t, h * dh), &dev)?,
            Var::randn(0f32, 1., (b, s, hk * dh), &dev)?,
            Var::randn(0f32, 1., (b, s, hk * dh), &dev)?,
        ))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// `a` and `b` agree within 1e-5, and the gradients of `Σ w ⊙ a` and `Σ w ⊙ b` with
    /// respect to each of `vars` within `grad_tol`.
    fn assert_same_output_and_grads(a: Tensor, b: Tensor, w: &Tensor, vars: [&Var; 3], grad_tol: f32) -> Result<()> {
        assert!(max_diff(&a, &b)? < 1e-5);
        let ga = (a * w)?.sum_all()?.backward()?;
        let gb = (b * w)?.sum_all()?.backward()?;
        for x in vars {
            let d = max_diff(ga.get(x).unwrap(), gb.get(x).unwrap())?;
            assert!(d < grad_tol, "gradient differs by {d} for shape {:?}", x.dims());
        }
        Ok(())
    }

    #[test]
    fn matches_reference_forward_and_backward() -> Result<()> {
        for &(b, t, s, h, hk, dh) in &[(2, 5, 5, 2, 2, 4), (3, 4, 6, 4, 2, 3), (1, 7, 7, 1, 1, 8), (2, 6, 6, 2, 1, 72), (1, 70, 75, 2, 1, 4)] {
            let (q, k, v) = inputs(b, t, s, h, hk, dh)?;
            let w = Tensor::randn(0f32, 1., (b, t, h * dh), &Device::Cpu)?;
            let fused = causal_attention(&q, &k, &v, h, hk, 0.37)?;
            let reference = causal_attention_reference(&q, &k, &v, h, hk, 0.37)?;
            assert_same_output_and_grads(fused, reference, &w, [&q, &k, &v], 1e-4)?;
        }
        Ok(())
    }

    /// Central differences of `Σ w ⊙ f(q, k, v)` against autograd, every `stride`-th input.
    fn assert_fd(f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>, q: &Var, k: &Var, v: &Var, w: &Tensor, stride: usize) -> Result<()> {
        let loss = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<f64> { Ok((f(q, k, v)? * w)?.sum_all()?.to_scalar::<f32>()? as f64) };
        let grads = (f(q, k, v)? * w)?.sum_all()?.backward()?;
        for which in 0..3 {
            let x = [q, k, v][which];
            let g: Vec<f32> = grads.get(x).unwrap().flatten_all()?.to_vec1()?;
            let base: Vec<f32> = x.flatten_all()?.to_vec1()?;
            for i in (0..base.len()).step_by(stride) {
                let eps = 1e-2f32;
                let mut plus = base.clone();
                plus[i] += eps;
                let mut minus = base.clone();
                minus[i] -= eps;
                let at = |vals: Vec<f32>| -> Result<f64> {
                    let t = Tensor::from_vec(vals, x.shape(), &Device::Cpu)?;
                    match which {
                        0 => loss(&t, k, v),
                        1 => loss(q, &t, v),
                        _ => loss(q, k, &t),
                    }
                };
                let fd = (at(plus)? - at(minus)?) / (2.0 * eps as f64);
                assert!((fd - g[i] as f64).abs() < 2e-2 * (1.0 + fd.abs()), "input {which}[{i}]: fd {fd} vs {}", g[i]);
            }
        }
        Ok(())
    }

    #[test]
    fn finite_differences() -> Result<()> {
        let (q, k, v) = inputs(2, 4, 4, 2, 1, 3)?;
        let w = Tensor::randn(0f32, 1., (2, 4, 6), &Device::Cpu)?;
        assert_fd(|q, k, v| causal_attention(q, k, v, 2, 1, 0.5), &q, &k, &v, &w, 5)
    }

    /// Rows of a (b, t) grid and random q (for those rows), k, v.
    fn row_inputs(b: usize, t: usize, h: usize, hk: usize, dh: usize, rows: &[u32]) -> Result<(Var, Var, Var)> {
        let dev = Device::Cpu;
        Ok((
            Var::randn(0f32, 1., (rows.len(), h * dh), &dev)?,
            Var::randn(0f32, 1., (b, t, hk * dh), &dev)?,
            Var::randn(0f32, 1., (b, t, hk * dh), &dev)?,
        ))
    }

    #[test]
    fn rows_equal_full_attention_gathered() -> Result<()> {
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
        let full = causal_attention(&qf, &k, &v, h, hk, 0.4)?.reshape((b * t, h * dh))?.index_select(&idx, 0)?;
        let q_rows = qf.as_tensor().reshape((b * t, h * dh))?.index_select(&idx, 0)?;
        let fused = causal_attention_rows(&q_rows, &k, &v, &rows, h, hk, 0.4)?;
        assert_same_output_and_grads(full, fused, &w, [&qf, &k, &v], 1e-5)
    }

    #[test]
    fn rows_matches_reference_forward_and_backward() -> Result<()> {
        for &(b, t, h, hk, dh, ref rows) in &[(2, 5, 2, 2, 4, vec![1u32, 3, 4, 7, 9]), (3, 6, 4, 2, 3, vec![5u32, 6, 17]), (2, 7, 1, 1, 8, vec![0u32, 13])] {
            let (q, k, v) = row_inputs(b, t, h, hk, dh, rows)?;
            let w = Tensor::randn(0f32, 1., (rows.len(), h * dh), &Device::Cpu)?;
            let fused = causal_attention_rows(&q, &k, &v, rows, h, hk, 0.37)?;
            let reference = causal_attention_rows_reference(&q, &k, &v, rows, h, hk, 0.37)?;
            assert_same_output_and_grads(fused, reference, &w, [&q, &k, &v], 1e-4)?;
        }
        Ok(())
    }

    #[test]
    fn rows_finite_differences() -> Result<()> {
        let rows = [2u32, 3, 6];
        let (q, k, v) = row_inputs(2, 4, 2, 1, 3, &rows)?;
        let w = Tensor::randn(0f32, 1., (3, 6), &Device::Cpu)?;
        assert_fd(|q, k, v| causal_attention_rows(q, k, v, &rows, 2, 1, 0.5), &q, &k, &v, &w, 3)
    }

    #[test]
    fn rows_bad_rows_are_errors() -> Result<()> {
        let (q, k, v) = row_inputs(2, 3, 1, 1, 4, &[1, 2])?;
        assert!(causal_attention_rows(&q, &k, &v, &[2, 1], 1, 1, 0.5).is_err());
        assert!(causal_attention_rows(&q, &k, &v, &[1, 6], 1, 1, 0.5).is_err());
        assert!(causal_attention_rows(&q, &k, &v, &[1], 1, 1, 0.5).is_err());
        Ok(())
    }

    /// With q detached, autograd gets no q gradient and the same k, v gradients bit for bit.
    fn assert_untracked_q(f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>, q: &Var, k: &Var, v: &Var) -> Result<()> {
        let plain = q.as_tensor().detach();
        let a = f(&plain, k, v)?.sqr()?.sum_all()?.backward()?;
        let b = f(q, k, v)?.sqr()?.sum_all()?.backward()?;
        assert!(a.get(&plain).is_none());
        for x in [k, v] {
            assert_eq!(a.get(x).unwrap().flatten_all()?.to_vec1::<f32>()?, b.get(x).unwrap().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    }

    #[test]
    fn untracked_queries_get_no_gradient_and_keys_the_same() -> Result<()> {
        let (q, k, v) = inputs(2, 5, 5, 2, 1, 3)?;
        assert_untracked_q(|q, k, v| causal_attention(q, k, v, 2, 1, 0.5), &q, &k, &v)?;
        let rows = [1u32, 2, 5];
        let (q, k, v) = row_inputs(2, 3, 1, 1, 4, &rows)?;
        assert_untracked_q(|q, k, v| causal_attention_rows(q, k, v, &rows, 1, 1, 0.5), &q, &k, &v)
    }

    /// Output and k gradient of `f` on a 1-thread and a 2-thread pool are the same bits.
    fn assert_same_bits(f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Sync, q: &Var, k: &Var, v: &Var) -> Result<()> {
        let run = |n: usize| -> Result<(Vec<f32>, Vec<f32>)> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().map_err(candle_core::Error::wrap)?;
            pool.install(|| {
                let z = f(q, k, v)?;
                let g = z.sqr()?.sum_all()?.backward()?;
                Ok((z.flatten_all()?.to_vec1()?, g.get(k).unwrap().flatten_all()?.to_vec1()?))
            })
        };
        assert_eq!(run(1)?, run(2)?);
        Ok(())
    }

    #[test]
    fn same_bits_for_one_and_two_threads() -> Result<()> {
        let (q, k, v) = inputs(4, 8, 8, 2, 2, 4)?;
        assert_same_bits(|q, k, v| causal_attention(q, k, v, 2, 2, 0.5), &q, &k, &v)?;
        let rows: Vec<u32> = vec![3, 7, 8, 15, 20, 30, 31];
        let (q, k, v) = row_inputs(4, 8, 2, 2, 4, &rows)?;
        assert_same_bits(|q, k, v| causal_attention_rows(q, k, v, &rows, 2, 2, 0.5), &q, &k, &v)
    }
}
