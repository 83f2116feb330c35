//! Per-head analyses of attention layers (recursive-reasoning spec §8.2.2–8.2.5,
//! usable on any model with the TransformerLens layout):
//!
//! - `head_outputs`: each head's contribution o_h = Σ_k A[h,q,k]·v[k,h]·W_O[:, h]ᵀ
//!   to the residual stream at one query position;
//! - `rel_var`: E_b‖o_h − E_b o_h‖² / E_b‖o_h‖² over a batch of controlled inputs
//!   (which heads carry what varies in a family);
//! - `attention_entropy` and `pattern_cosine` (head × head similarity of the
//!   attention distributions: groups of heads that look at the same places);
//! - `ov_amplification`: ‖P_f·W_O^h W_V^h·P_f‖₂ for the projector P_f onto a
//!   subspace (e.g. one factor's embedding rows);
//! - `relative_norm`: ‖Δ‖ / ‖h‖ (how much a sublayer changes the stream);
//! - `route_mass`: each head's attention weight along given (query → key) routes,
//!   one route per batch row (where information moves, e.g. from an operand to the
//!   equation that defines it).

use candle_core::{Result, Tensor};

/// Per-head outputs at query `q`: `pattern: (batch, heads, q, k)`, `v: (batch, k,
/// kv_heads, d_head)` (grouped-query heads share kv heads in order), `w_o:
/// (d_model, heads·d_head)` → `(batch, heads, d_model)` as nested vectors.
pub fn head_outputs(pattern: &Tensor, v: &Tensor, w_o: &Tensor, q: usize) -> Result<Vec<Vec<Vec<f32>>>> {
    let (b, h, nq, nk) = pattern.dims4()?;
    let (_, _, hk, dh) = v.dims4()?;
    let (d, hd) = w_o.dims2()?;
    if q >= nq || hd != h * dh || !h.is_multiple_of(hk) {
        candle_core::bail!("head_outputs: query {q} of {nq}, w_o (d, {hd}) vs {h} heads × {dh}, {hk} kv heads");
    }
    let p: Vec<f32> = pattern.flatten_all()?.to_vec1()?;
    let vv: Vec<f32> = v.flatten_all()?.to_vec1()?;
    let wo: Vec<f32> = w_o.flatten_all()?.to_vec1()?;
    let group = h / hk;
    let mut out = vec![vec![vec![0f32; d]; h]; b];
    for bi in 0..b {
        for hi in 0..h {
            // z = Σ_k A[q,k] v[k, kv(h)]
            let mut z = vec![0f32; dh];
            for k in 0..nk {
                let a = p[((bi * h + hi) * nq + q) * nk + k];
                if a == 0.0 {
                    continue;
                }
                let row = ((bi * nk + k) * hk + hi / group) * dh;
                for (zj, vj) in z.iter_mut().zip(&vv[row..row + dh]) {
                    *zj += a * vj;
                }
            }
            for (i, o) in out[bi][hi].iter_mut().enumerate() {
                let w = &wo[i * hd + hi * dh..i * hd + (hi + 1) * dh];
                *o = w.iter().zip(&z).map(|(a, b)| a * b).sum();
            }
        }
    }
    Ok(out)
}

/// RelVar per head over the batch: `outputs[b][h]` vectors. A head whose output
/// is the same for every input scores 0; one whose mean is 0 scores 1.
pub fn rel_var(outputs: &[Vec<Vec<f32>>]) -> Vec<f64> {
    let b = outputs.len();
    let h = outputs.first().map_or(0, |o| o.len());
    (0..h)
        .map(|hi| {
            let d = outputs[0][hi].len();
            let mut mean = vec![0f64; d];
            for o in outputs {
                for (m, x) in mean.iter_mut().zip(&o[hi]) {
                    *m += *x as f64 / b as f64;
                }
            }
            let (mut var, mut pow) = (0.0, 0.0);
            for o in outputs {
                for (m, x) in mean.iter().zip(&o[hi]) {
                    var += (*x as f64 - m).powi(2);
                    pow += (*x as f64).powi(2);
                }
            }
            if pow > 0.0 {
                var / pow
            } else {
                0.0
            }
        })
        .collect()
}

fn rows_at(pattern: &Tensor, q: usize) -> Result<(usize, usize, usize, Vec<f32>)> {
    let (b, h, nq, nk) = pattern.dims4()?;
    if q >= nq {
        candle_core::bail!("query {q} out of range ({nq} positions)");
    }
    let p: Vec<f32> = pattern.flatten_all()?.to_vec1()?;
    let mut rows = Vec::with_capacity(b * h * nk);
    for bi in 0..b {
        for hi in 0..h {
            let r = ((bi * h + hi) * nq + q) * nk;
            rows.extend_from_slice(&p[r..r + nk]);
        }
    }
    Ok((b, h, nk, rows))
}

/// Each head's attention weight from query to key along each route, averaged over the
/// batch: `routes[r][b] = (query, key)` for batch row `b`; `pattern: (batch, heads, q,
/// k)` → `out[r][head]`. A route may point anywhere at or before its query (causal
/// patterns are 0 beyond it); positions outside the pattern are errors.
pub fn route_mass(pattern: &Tensor, routes: &[Vec<(usize, usize)>]) -> Result<Vec<Vec<f64>>> {
    let (b, h, nq, nk) = pattern.dims4()?;
    let p: Vec<f32> = pattern.flatten_all()?.to_vec1()?;
    routes
        .iter()
        .enumerate()
        .map(|(ri, route)| {
            if route.len() != b {
                candle_core::bail!("route_mass: route {ri} has {} (query, key) pairs for a batch of {b}", route.len());
            }
            let mut out = vec![0f64; h];
            for (bi, &(q, k)) in route.iter().enumerate() {
                if q >= nq || k >= nk {
                    candle_core::bail!("route_mass: route {ri}, row {bi}: ({q} → {k}) outside {nq} × {nk} positions");
                }
                for (hi, o) in out.iter_mut().enumerate() {
                    *o += p[((bi * h + hi) * nq + q) * nk + k] as f64 / b as f64;
                }
            }
            Ok(out)
        })
        .collect()
}

/// Mean entropy (nats) of each head's attention distribution at query `q`.
pub fn attention_entropy(pattern: &Tensor, q: usize) -> Result<Vec<f64>> {
    let (b, h, nk, rows) = rows_at(pattern, q)?;
    Ok((0..h)
        .map(|hi| {
            (0..b)
                .map(|bi| {
                    let r = &rows[(bi * h + hi) * nk..(bi * h + hi + 1) * nk];
                    -r.iter().filter(|&&a| a > 0.0).map(|&a| a as f64 * (a as f64).ln()).sum::<f64>()
                })
                .sum::<f64>()
                / b as f64
        })
        .collect())
}

/// Head × head cosine similarity of the attention distributions at query `q`,
/// averaged over the batch: `out[i][j]`.
pub fn pattern_cosine(pattern: &Tensor, q: usize) -> Result<Vec<Vec<f64>>> {
    let (b, h, nk, rows) = rows_at(pattern, q)?;
    let mut out = vec![vec![0f64; h]; h];
    for bi in 0..b {
        let row = |hi: usize| &rows[(bi * h + hi) * nk..(bi * h + hi + 1) * nk];
        for (i, line) in out.iter_mut().enumerate() {
            for (j, cell) in line.iter_mut().enumerate() {
                let (x, y) = (row(i), row(j));
                let dot: f64 = x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum();
                let nx: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
                let ny: f64 = y.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
                *cell += if nx > 0.0 && ny > 0.0 { dot / (nx * ny) } else { 0.0 } / b as f64;
            }
        }
    }
    Ok(out)
}

/// Orthonormal basis (d × r, column-major as r vectors of length d) of the row
/// span of `rows: (m, d)`, dropping directions with singular value below `tol`·s_max.
pub fn row_span_basis(rows: &Tensor, tol: f64) -> Result<Vec<Vec<f64>>> {
    let (m, d) = rows.dims2()?;
    let data: Vec<f32> = rows.flatten_all()?.to_vec1()?;
    let a = faer::Mat::<f64>::from_fn(m, d, |i, j| data[i * d + j] as f64);
    let svd = a.thin_svd().map_err(|_| candle_core::Error::Msg(format!("SVD of a ({m}, {d}) matrix did not converge")))?;
    let s = svd.S().column_vector();
    let smax = if m.min(d) > 0 { *s.get(0) } else { 0.0 };
    let v = svd.V();
    Ok((0..m.min(d)).filter(|&c| *s.get(c) > tol * smax && smax > 0.0).map(|c| (0..d).map(|j| *v.get(j, c)).collect()).collect())
}

/// Amplification of each head's OV circuit inside a subspace: ‖Qᵀ·W_O^h W_V^h·Q‖₂
/// with `basis` the columns of Q (orthonormal, from `row_span_basis`). `w_v:
/// (kv_heads·d_head, d)`, `w_o: (d, heads·d_head)`, heads in the TransformerLens
/// order; grouped-query heads share their kv head's W_V.
pub fn ov_amplification(w_v: &Tensor, w_o: &Tensor, n_heads: usize, basis: &[Vec<f64>]) -> Result<Vec<f64>> {
    let (kd, d) = w_v.dims2()?;
    let (d2, hd) = w_o.dims2()?;
    if d2 != d || !hd.is_multiple_of(n_heads) || !kd.is_multiple_of(hd / n_heads) {
        candle_core::bail!("ov_amplification: w_v ({kd}, {d}), w_o ({d2}, {hd}), {n_heads} heads");
    }
    let dh = hd / n_heads;
    let hk = kd / dh;
    let group = n_heads / hk;
    let wv: Vec<f32> = w_v.flatten_all()?.to_vec1()?;
    let wo: Vec<f32> = w_o.flatten_all()?.to_vec1()?;
    let r = basis.len();
    let mut out = Vec::with_capacity(n_heads);
    for h in 0..n_heads {
        let kv = h / group;
        // A = W_V^h Q: (dh, r); B = Qᵀ W_O^h: (r, dh); M = B·A: (r, r).
        let a: Vec<Vec<f64>> = (0..dh)
            .map(|i| basis.iter().map(|q| (0..d).map(|j| wv[(kv * dh + i) * d + j] as f64 * q[j]).sum()).collect())
            .collect();
        let bm: Vec<Vec<f64>> =
            basis.iter().map(|q| (0..dh).map(|i| (0..d).map(|j| q[j] * wo[j * hd + h * dh + i] as f64).sum()).collect()).collect();
        let m = faer::Mat::<f64>::from_fn(r, r, |x, y| (0..dh).map(|i| bm[x][i] * a[i][y]).sum());
        let s = if r == 0 {
            0.0
        } else {
            let svd = m.thin_svd().map_err(|_| candle_core::Error::Msg("SVD of an OV block did not converge".into()))?;
            *svd.S().column_vector().get(0)
        };
        out.push(s);
    }
    Ok(out)
}

/// Mean over rows of ‖delta_row‖ / ‖base_row‖ for two `(.., d)` tensors of the same shape.
pub fn relative_norm(delta: &Tensor, base: &Tensor) -> Result<f64> {
    let d = *delta.dims().last().unwrap_or(&1);
    let x: Vec<f32> = delta.flatten_all()?.to_vec1()?;
    let y: Vec<f32> = base.flatten_all()?.to_vec1()?;
    if x.len() != y.len() || d == 0 {
        candle_core::bail!("relative_norm: shapes differ");
    }
    let n = x.len() / d;
    let mut total = 0.0;
    for r in 0..n {
        let nx: f64 = x[r * d..(r + 1) * d].iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let ny: f64 = y[r * d..(r + 1) * d].iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        total += if ny > 0.0 { nx / ny } else { 0.0 };
    }
    Ok(total / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn head_outputs_and_rel_var_on_hand_made_inputs() -> Result<()> {
        let dev = Device::Cpu;
        // 2 inputs, 2 heads, 1 query, 2 keys, d_head 1, d_model 2.
        // Head 0 attends key 0 (constant value 1), head 1 attends key 1 (value ±1).
        let pattern = Tensor::new(&[[[[1f32, 0.]], [[0., 1.]]], [[[1., 0.]], [[0., 1.]]]], &dev)?;
        let v = Tensor::new(&[[[[1f32], [0.]], [[0.], [1.]]], [[[1.], [0.]], [[0.], [-1.]]]], &dev)?;
        let w_o = Tensor::new(&[[1f32, 0.], [0., 2.]], &dev)?;
        let o = head_outputs(&pattern, &v, &w_o, 0)?;
        assert_eq!(o[0][0], vec![1., 0.]);
        assert_eq!(o[0][1], vec![0., 2.]);
        assert_eq!(o[1][1], vec![0., -2.]);
        let rv = rel_var(&o);
        assert_eq!(rv, vec![0.0, 1.0]);

        let cos = pattern_cosine(&pattern, 0)?;
        assert_eq!(cos, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let uniform = Tensor::new(&[[[[0.5f32, 0.5]]]], &dev)?;
        assert!((attention_entropy(&uniform, 0)?[0] - 2f64.ln()).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn route_mass_reads_the_chosen_cells_per_row() -> Result<()> {
        let dev = Device::Cpu;
        // 2 rows, 2 heads, 2 queries × 2 keys (causal).
        let pattern = Tensor::new(
            &[[[[1f32, 0.], [0.25, 0.75]], [[1., 0.], [1., 0.]]], [[[1., 0.], [0.5, 0.5]], [[1., 0.], [0., 1.]]]],
            &dev,
        )?;
        // Route 0: query 1 → key 1 in both rows; route 1: row 0 looks at key 0, row 1 at key 1.
        let m = route_mass(&pattern, &[vec![(1, 1), (1, 1)], vec![(1, 0), (1, 1)]])?;
        assert_eq!(m[0], vec![(0.75 + 0.5) / 2.0, 0.5]);
        assert_eq!(m[1], vec![(0.25 + 0.5) / 2.0, 1.0]);
        assert!(route_mass(&pattern, &[vec![(1, 1)]]).is_err(), "one pair per row");
        assert!(route_mass(&pattern, &[vec![(2, 0), (1, 1)]]).is_err(), "query out of range");
        Ok(())
    }

    #[test]
    fn ov_amplification_reads_the_subspace_gain() -> Result<()> {
        let dev = Device::Cpu;
        // d = 3, 1 head with d_head 3: OV = diag(2, 1, 0.5).
        let w_v = Tensor::new(&[[2f32, 0., 0.], [0., 1., 0.], [0., 0., 0.5]], &dev)?;
        let w_o = Tensor::eye(3, candle_core::DType::F32, &dev)?;
        let e1 = row_span_basis(&Tensor::new(&[[3f32, 0., 0.], [-1., 0., 0.]], &dev)?, 1e-6)?;
        assert_eq!(e1.len(), 1);
        assert!((ov_amplification(&w_v, &w_o, 1, &e1)?[0] - 2.0).abs() < 1e-9);
        let e23 = row_span_basis(&Tensor::new(&[[0f32, 1., 1.], [0., 1., -1.]], &dev)?, 1e-6)?;
        assert!((ov_amplification(&w_v, &w_o, 1, &e23)?[0] - 1.0).abs() < 1e-9);
        // Two heads with d_head 1 reading coordinates 0 and 2 and writing them back.
        let w_v = Tensor::new(&[[1f32, 0., 0.], [0., 0., 4.]], &dev)?;
        let w_o = Tensor::new(&[[1f32, 0.], [0., 0.], [0., 1.]], &dev)?;
        let amp = ov_amplification(&w_v, &w_o, 2, &e1)?;
        assert!((amp[0] - 1.0).abs() < 1e-9 && amp[1].abs() < 1e-9, "{amp:?}");

        let delta = Tensor::new(&[[3f32, 4.], [0., 1.]], &dev)?;
        let base = Tensor::new(&[[0f32, 10.], [2., 0.]], &dev)?;
        assert!((relative_norm(&delta, &base)? - 0.5).abs() < 1e-12);
        Ok(())
    }
}
