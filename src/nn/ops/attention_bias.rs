//! Fused causal attention with a learned per-head scalar bias per clamped distance
//! (T5-style relative positions; spec `recursive-latent-reasoning.md` §11.2, the cheap
//! stand-in for DeBERTa's content↔position terms).
//!
//! Query i (absolute position i + s − t) and key j ≤ i + s − t are δ = i + s − t − j ≥ 0
//! apart; bucket(δ) = min(δ, W − 1), so every distance ≥ W − 1 shares the far bucket.
//! Per (batch, head): S = Q·Kᵀ·scale + B[h, bucket], P = causal softmax(S), Z = P·V.
//! Backward recomputes P and, with G = P ⊙ (dP − rowsum(dP ⊙ P)):
//!   dV += Pᵀ·dZ;  dQ = scale·G·K;  dK += scale·Gᵀ·Q;  dB[h, β] = Σ_{bucket(i,j) = β} G_ij.
//! q is `(batch, query_pos, n_heads·d_head)`; k and v travel as one tensor `kv` of
//! `(batch, key_pos, 2·n_kv_heads·d_head)` (k columns first) because a candle custom op takes
//! at most three inputs. Work is split over (batch, kv head); the bias gradient is summed
//! from per-task partials in task order, so results do not depend on the thread count.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::attention::{mm, mm_scaled, SyncPtr};
use super::cpu::{fast_exp, row_dot, row_max, row_sum, wide, with_f32};

#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    q_len: usize,
    k_len: usize,
    n_heads: usize,
    n_kv_heads: usize,
    d_head: usize,
    window: usize,
    scale: f32,
}

impl Geometry {
    fn q_row(&self) -> usize {
        self.n_heads * self.d_head
    }
    fn kv_row(&self) -> usize {
        2 * self.n_kv_heads * self.d_head
    }
    fn v_col(&self) -> usize {
        self.n_kv_heads * self.d_head
    }
}

/// Each head's bias row reversed (`rev[h·w + w − 1 − d]` = B_h[d]), so that the near keys
/// of a query read one contiguous slice. Built once per call of the op.
fn reversed(bias: &[f32], w: usize) -> Vec<f32> {
    bias.chunks_exact(w).flat_map(|bh| bh.iter().rev().copied()).collect()
}

/// P = causal softmax(scale·Q_bh·K_bgᵀ + B_h) into `p` (t×s, row-major); `rev` = `reversed(bias)`.
#[allow(clippy::too_many_arguments)]
fn pattern(g: &Geometry, q: &[f32], kv: &[f32], rev: &[f32], b: usize, h: usize, kvh: usize, p: &mut [f32]) {
    let (t, s, dh, w) = (g.q_len, g.k_len, g.d_head, g.window);
    let qp = q[b * t * g.q_row() + h * dh..].as_ptr();
    let kp = kv[b * s * g.kv_row() + kvh * dh..].as_ptr();
    // SAFETY: Q_bh is t×dh with row stride q_row; K_bgᵀ is dh×s with col stride kv_row.
    unsafe { mm_scaled(t, s, dh, p.as_mut_ptr(), s, 1, false, qp, g.q_row(), 1, kp, 1, g.kv_row(), g.scale) };
    // Bias by key order: key j of query qpos (qpos − j < w − 1) takes rev[w − 1 − (qpos − j)].
    let rev = &rev[h * w..(h + 1) * w];
    let offset = s - t;
    wide(#[inline(always)] || for (i, row) in p.chunks_exact_mut(s).enumerate() {
        let qpos = i + offset;
        let (live, masked) = row.split_at_mut((qpos + 1).min(s));
        // Keys 0..=qpos−(w−1) share the far bucket; the last w−1 keys have their own.
        let near = qpos.saturating_sub(w - 1);
        let far = rev[0];
        for x in &mut live[..near] {
            *x += far;
        }
        let n_near = live.len() - near;
        for (x, b) in live[near..].iter_mut().zip(&rev[w - n_near..]) {
            *x += b;
        }
        let max = row_max(live);
        for x in live.iter_mut() {
            *x = fast_exp(*x - max);
        }
        let inv = 1.0 / row_sum(live);
        for x in live.iter_mut() {
            *x *= inv;
        }
        masked.fill(0.0);
    })
}

fn forward(g: &Geometry, q: &[f32], kv: &[f32], bias: &[f32]) -> Vec<f32> {
    let (t, s, dh) = (g.q_len, g.k_len, g.d_head);
    let mut z = vec![0.0f32; g.batch * t * g.q_row()];
    let zp = SyncPtr(z.as_mut_ptr());
    let group = g.n_heads / g.n_kv_heads;
    let rev = reversed(bias, g.window);
    let rev = &rev[..];
    (0..g.batch * g.n_kv_heads).into_par_iter().for_each_init(
        || vec![0.0f32; t * s],
        |p, task| {
            #[allow(clippy::redundant_locals)]
            let zp = zp;
            let (b, kvh) = (task / g.n_kv_heads, task % g.n_kv_heads);
            for h in kvh * group..(kvh + 1) * group {
                pattern(g, q, kv, rev, b, h, kvh, p);
                let vp = kv[b * s * g.kv_row() + g.v_col() + kvh * dh..].as_ptr();
                // SAFETY: Z_bh is this task's own t×dh block (row stride q_row).
                unsafe {
                    let dst = zp.0.add(b * t * g.q_row() + h * dh);
                    mm(t, dh, s, dst, g.q_row(), 1, false, p.as_ptr(), s, 1, vp, g.kv_row(), 1);
                }
            }
        },
    );
    z
}

/// `(dq, dkv, dbias)`.
fn backward(g: &Geometry, q: &[f32], kv: &[f32], bias: &[f32], dz: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, s, dh, w) = (g.q_len, g.k_len, g.d_head, g.window);
    let mut dq = vec![0.0f32; q.len()];
    let mut dkv = vec![0.0f32; kv.len()];
    let (dqp, dkvp) = (SyncPtr(dq.as_mut_ptr()), SyncPtr(dkv.as_mut_ptr()));
    let group = g.n_heads / g.n_kv_heads;
    let offset = s - t;
    let rev = reversed(bias, w);
    let rev = &rev[..];
    let partials: Vec<(usize, Vec<f32>)> = (0..g.batch * g.n_kv_heads)
        .into_par_iter()
        .map_init(
            || (vec![0.0f32; t * s], vec![0.0f32; t * s]),
            |(p, dp), task| {
                let (dqp, dkvp) = (dqp, dkvp);
                let (b, kvh) = (task / g.n_kv_heads, task % g.n_kv_heads);
                let k_off = b * s * g.kv_row() + kvh * dh;
                let v_off = k_off + g.v_col();
                let mut db = vec![0.0f32; group * w];
                for (hi, h) in (kvh * group..(kvh + 1) * group).enumerate() {
                    let q_off = b * t * g.q_row() + h * dh;
                    pattern(g, q, kv, rev, b, h, kvh, p);
                    // SAFETY: all blocks are in bounds; dQ_bh and this kv head's dK, dV belong to this task.
                    unsafe {
                        let dzp = dz.as_ptr().add(q_off);
                        mm(t, s, dh, dp.as_mut_ptr(), s, 1, false, dzp, g.q_row(), 1, kv.as_ptr().add(v_off), 1, g.kv_row());
                        mm(s, dh, t, dkvp.0.add(v_off), g.kv_row(), 1, true, p.as_ptr(), 1, s, dzp, g.q_row(), 1);
                    }
                    let dbh = &mut db[hi * w..(hi + 1) * w];
                    wide(#[inline(always)] || for (i, (prow, dprow)) in p.chunks_exact(s).zip(dp.chunks_exact_mut(s)).enumerate() {
                        let qpos = i + offset;
                        let live = (qpos + 1).min(s);
                        let dot = row_dot(&prow[..live], &dprow[..live]);
                        let near = qpos.saturating_sub(w - 1);
                        let mut far = 0.0f32;
                        for (j, (d, &pv)) in dprow[..live].iter_mut().zip(prow).enumerate() {
                            let gij = pv * (*d - dot);
                            if j < near {
                                far += gij;
                            } else {
                                dbh[qpos - j] += gij;
                            }
                            *d = gij * g.scale;
                        }
                        dbh[w - 1] += far;
                        dprow[live..].fill(0.0);
                    });
                    // SAFETY: as above.
                    unsafe {
                        mm(t, dh, s, dqp.0.add(q_off), g.q_row(), 1, false, dp.as_ptr(), s, 1, kv.as_ptr().add(k_off), g.kv_row(), 1);
                        mm(s, dh, t, dkvp.0.add(k_off), g.kv_row(), 1, true, dp.as_ptr(), 1, s, q.as_ptr().add(q_off), g.q_row(), 1);
                    }
                }
                (kvh, db)
            },
        )
        .collect();
    let mut dbias = vec![0.0f32; bias.len()];
    for (kvh, db) in partials {
        let start = kvh * group * w;
        for (acc, x) in dbias[start..start + group * w].iter_mut().zip(&db) {
            *acc += x;
        }
    }
    (dq, dkv, dbias)
}

struct BiasAttentionOp {
    n_heads: usize,
    n_kv_heads: usize,
    scale: f32,
}

impl BiasAttentionOp {
    fn geometry(&self, q: &Layout, kv: &Layout, bias: &Layout) -> Result<Geometry> {
        let (batch, q_len, q_row) = q.shape().dims3()?;
        let (kb, k_len, kv_row) = kv.shape().dims3()?;
        let (bh, window) = bias.shape().dims2()?;
        let g = Geometry { batch, q_len, k_len, n_heads: self.n_heads, n_kv_heads: self.n_kv_heads, d_head: q_row / self.n_heads.max(1), window, scale: self.scale };
        if kb != batch || g.kv_row() != kv_row || k_len < q_len || bh != self.n_heads || window == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            candle_core::bail!("fused bias attention: bad shapes q {:?} kv {:?} bias {:?}", q.shape(), kv.shape(), bias.shape())
        }
        Ok(g)
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("fused bias attention: inputs must be contiguous"),
    }
}

impl CustomOp3 for BiasAttentionOp {
    fn name(&self) -> &'static str {
        "fused-causal-attention-bias"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry(l1, l2, l3)?;
        let z = forward(&g, slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        Ok((CpuStorage::F32(z), l1.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, kv: &Tensor, bias: &Tensor, _z: &Tensor, dz: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry(q.layout(), kv.layout(), bias.layout())?;
        let dz = dz.contiguous()?;
        let (dq, dkv, db) = with_f32(q, "attention_bias", |q| {
            with_f32(kv, "attention_bias", |kv| {
                with_f32(bias, "attention_bias", |bias| with_f32(&dz, "attention_bias", |dz| backward(&g, q, kv, bias, dz)))
            })
        })????;
        let dev = q.device();
        Ok((Some(Tensor::from_vec(dq, q.shape(), dev)?), Some(Tensor::from_vec(dkv, kv.shape(), dev)?), Some(Tensor::from_vec(db, bias.shape(), dev)?)))
    }
}

/// Causal multi-head attention with a per-head bias per clamped distance.
/// `q: (batch, query_pos, n_heads·d_head)`, `k, v: (batch, key_pos, n_kv_heads·d_head)`,
/// `bias: (n_heads, window)` `-> z: (batch, query_pos, n_heads·d_head)`.
pub fn causal_attention_bias(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, n_heads: usize, n_kv_heads: usize, scale: f64) -> Result<Tensor> {
    if !q.device().is_cpu() || q.dtype() != candle_core::DType::F32 {
        return causal_attention_bias_reference(q, k, v, bias, n_heads, n_kv_heads, scale);
    }
    let op = BiasAttentionOp { n_heads, n_kv_heads, scale: scale as f32 };
    let kv = Tensor::cat(&[k, v], D::Minus1)?;
    q.contiguous()?.apply_op3(&kv, &bias.contiguous()?, op)
}

/// The bias of every (query, key) pair, `(n_heads, query_pos, key_pos)`, gathered from
/// `bias: (n_heads, window)` (composed, differentiable; used by the reference and hooks).
pub fn distance_bias(bias: &Tensor, q_len: usize, k_len: usize) -> Result<Tensor> {
    let w = bias.dim(1)?;
    let offset = k_len - q_len;
    let idx: Vec<u32> = (0..q_len).flat_map(|i| (0..k_len).map(move |j| (i + offset).saturating_sub(j).min(w - 1) as u32)).collect();
    let idx = Tensor::from_vec(idx, q_len * k_len, bias.device())?;
    bias.index_select(&idx, 1)?.reshape((bias.dim(0)?, q_len, k_len))
}

/// The composed version (test oracle and non-CPU fallback).
pub fn causal_attention_bias_reference(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, n_heads: usize, n_kv_heads: usize, scale: f64) -> Result<Tensor> {
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
    let scores = (qh.matmul(&kh.t()?)? * scale)?.broadcast_add(&distance_bias(bias, t, s)?.unsqueeze(0)?)?;
    let offset = s - t;
    let mask: Vec<f32> = (0..t).flat_map(|i| (0..s).map(move |j| if j > i + offset { f32::NEG_INFINITY } else { 0.0 })).collect();
    let mask = Tensor::from_vec(mask, (t, s), q.device())?;
    let pattern = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
    pattern.matmul(&vh)?.transpose(1, 2)?.reshape((b, t, ()))
}

#[cfg(test)]
mod tests {
    use super::super::cpu::testing::{check_fd, max_abs_diff, on_threads, randn};
    use super::*;
    use candle_core::Var;

    fn grads(f: &dyn Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Tensor>, x: [&Var; 4], w: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let y = f(x[0], x[1], x[2], x[3])?;
        let g = (&y * w)?.sum_all()?.backward()?;
        Ok((y, x.iter().map(|v| g.get(v).expect("gradient").clone()).collect()))
    }

    #[test]
    fn matches_reference_forward_and_backward() -> Result<()> {
        // (batch, q_len, k_len, heads, kv heads, d_head, window): far bucket used, unused, KV cache, GQA.
        for &(b, t, s, h, hk, dh, w) in &[(2, 9, 9, 2, 2, 4, 3), (1, 5, 5, 1, 1, 8, 8), (3, 4, 7, 4, 2, 3, 4), (2, 6, 6, 2, 1, 5, 1)] {
            let q = Var::from_tensor(&randn(&[b, t, h * dh], 1, 1.0))?;
            let k = Var::from_tensor(&randn(&[b, s, hk * dh], 2, 1.0))?;
            let v = Var::from_tensor(&randn(&[b, s, hk * dh], 3, 1.0))?;
            let bias = Var::from_tensor(&randn(&[h, w], 4, 2.0))?;
            let wt = randn(&[b, t, h * dh], 5, 1.0);
            let (yf, gf) = grads(&|q, k, v, bi| causal_attention_bias(q, k, v, bi, h, hk, 0.4), [&q, &k, &v, &bias], &wt)?;
            let (yr, gr) = grads(&|q, k, v, bi| causal_attention_bias_reference(q, k, v, bi, h, hk, 0.4), [&q, &k, &v, &bias], &wt)?;
            assert!(max_abs_diff(&yf, &yr) < 1e-5);
            for (i, (a, r)) in gf.iter().zip(&gr).enumerate() {
                let d = max_abs_diff(a, r);
                assert!(d < 1e-4, "input {i} gradient differs by {d} at {:?}", (b, t, s, h, hk, dh, w));
            }
        }
        Ok(())
    }

    #[test]
    fn finite_differences_of_every_input() {
        let (b, t, h, hk, dh, w) = (2, 7, 2, 1, 3, 4);
        let q = randn(&[b, t, h * dh], 11, 1.0);
        let k = randn(&[b, t, hk * dh], 12, 1.0);
        let v = randn(&[b, t, hk * dh], 13, 1.0);
        let bias = randn(&[h, w], 14, 1.0);
        check_fd(&|x| causal_attention_bias(x, &k, &v, &bias, h, hk, 0.5), &q, 21);
        check_fd(&|x| causal_attention_bias(&q, x, &v, &bias, h, hk, 0.5), &k, 22);
        check_fd(&|x| causal_attention_bias(&q, &k, x, &bias, h, hk, 0.5), &v, 23);
        check_fd(&|x| causal_attention_bias(&q, &k, &v, x, h, hk, 0.5), &bias, 24);
    }

    #[test]
    fn bias_depends_only_on_the_clamped_distance() -> Result<()> {
        let bias = Tensor::from_vec(vec![0f32, 1., 2.], (1, 3), &candle_core::Device::Cpu)?;
        let full: Vec<Vec<f32>> = distance_bias(&bias, 4, 4)?.squeeze(0)?.to_vec2()?;
        assert_eq!(full[3], vec![2., 2., 1., 0.]);
        assert_eq!(full[1][..2], [1., 0.]);
        // Two queries against four keys (a KV cache): query 0 sits at position 2.
        let cached: Vec<Vec<f32>> = distance_bias(&bias, 2, 4)?.squeeze(0)?.to_vec2()?;
        assert_eq!(cached[0][..3], [2., 1., 0.]);
        Ok(())
    }

    #[test]
    fn same_bits_for_one_and_two_threads() {
        let q = randn(&[4, 8, 8], 31, 1.0);
        let k = randn(&[4, 8, 8], 32, 1.0);
        let v = randn(&[4, 8, 8], 33, 1.0);
        let bias = randn(&[2, 3], 34, 1.0);
        let run = || -> (Vec<f32>, Vec<f32>) {
            let bv = Var::from_tensor(&bias).unwrap();
            let z = causal_attention_bias(&q, &k, &v, bv.as_tensor(), 2, 2, 0.5).unwrap();
            let g = z.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            (z.flatten_all().unwrap().to_vec1().unwrap(), g.get(bv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap())
        };
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }
}
