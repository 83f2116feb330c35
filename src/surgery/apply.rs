//! Applying an `EditSet` to a copy of the weights: low-rank, zero, drop-block and W_O·W_V edits.
//!
//! Low-rank edits rebuild from the cached exact SVD (one per matrix content, so a ρ-sweep costs one
//! SVD); `ov` truncates the product P = W_O·W_V by projecting W_O on P's top-k left singular
//! subspace (truncation study arXiv 2406.03068 §6, LASER arXiv 2312.13558).
//! Imports only candle and std (plus this module's siblings).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use super::edit::{rank_for, Edit, EditKind, EditSet, Mode, Target};
use super::error::{Result, SurgeryError};
use super::svd::SvdCache;
use super::weights::{Matrix, MatrixMap, ModelWeights};

/// Apply `edits` in order to a copy of `weights`; `weights` itself is never modified.
pub fn apply(
    edits: &EditSet,
    weights: &ModelWeights,
    cache: &mut SvdCache,
    map: &dyn MatrixMap,
) -> Result<ModelWeights> {
    let mut out = weights.clone(); // shallow: untouched tensors share storage
    for e in &edits.edits {
        apply_one(e, &mut out, cache, map)?;
    }
    Ok(out)
}

/// `apply` on a deep-copied snapshot of a VarMap (the VarMap is not touched).
pub fn apply_varmap(
    edits: &EditSet,
    varmap: &VarMap,
    cache: &mut SvdCache,
    map: &dyn MatrixMap,
) -> Result<ModelWeights> {
    apply(edits, &ModelWeights::from_varmap(varmap)?, cache, map)
}

/// The weight name of (e.layer, m), or an error naming it and listing the valid targets.
fn resolve(e: &Edit, w: &ModelWeights, map: &dyn MatrixMap, m: Matrix) -> Result<String> {
    match map.key(e.layer, m) {
        Some(k) if w.contains(&k) => Ok(k),
        key => Err(SurgeryError::UnknownTarget {
            edit: e.to_string(),
            reason: match key {
                Some(k) => format!("no weight `{k}` (layer {}, {})", e.layer, m.name()),
                None => format!("the matrix map has no `{}`", m.name()),
            },
            valid: valid_targets(w, map),
        }),
    }
}

/// Group members this model has (e.g. no q_proj with identity W_Q); none present is an error.
fn present_members(e: &Edit, w: &ModelWeights, map: &dyn MatrixMap) -> Result<Vec<String>> {
    let members = e.target.members();
    let keys: Vec<String> = members
        .iter()
        .filter_map(|&m| map.key(e.layer, m).filter(|k| w.contains(k)))
        .collect();
    if keys.is_empty() {
        resolve(e, w, map, members[0])?; // reports the first missing member
    }
    Ok(keys)
}

fn apply_one(
    e: &Edit,
    w: &mut ModelWeights,
    cache: &mut SvdCache,
    map: &dyn MatrixMap,
) -> Result<()> {
    let need = |w: &ModelWeights, m: Matrix| -> Result<(String, Tensor)> {
        let k = resolve(e, w, map, m)?;
        let t = w.get(&k).expect("resolved").clone();
        Ok((k, t))
    };
    match (e.kind, e.target) {
        (EditKind::DropBlock, t) => {
            // The block's output matrix: fc_out, or fc_in of a single-matrix ("linear") MLP.
            let has = |m| map.key(e.layer, m).is_some_and(|k| w.contains(&k));
            let mlp_out = if has(Matrix::FcOut) {
                Matrix::FcOut
            } else {
                Matrix::FcIn
            };
            let outs = match t {
                Target::Mlp => vec![mlp_out],
                Target::Attn => vec![Matrix::OutProj],
                _ => vec![mlp_out, Matrix::OutProj],
            };
            for m in outs {
                let (key, wt) = need(w, m)?;
                w.insert(key, wt.zeros_like()?);
                if let Some(b) = map.bias_key(e.layer, m) {
                    if let Some(bt) = w.get(&b).cloned() {
                        w.insert(b, bt.zeros_like()?);
                    }
                }
            }
        }
        (EditKind::LowRank { rank_frac, mode }, Target::Ov) => {
            let ((kv, wv), (ko, wo)) = (need(w, Matrix::VProj)?, need(w, Matrix::OutProj)?);
            let new_o = truncate_ov(&ko, &wo, &kv, &wv, rank_frac, mode, cache)?;
            w.insert(ko, new_o);
        }
        (EditKind::Zero, Target::Ov) => {
            let (ko, wo) = need(w, Matrix::OutProj)?;
            w.insert(ko, wo.zeros_like()?);
        }
        (kind, t) => {
            let keys = match t {
                Target::One(m) => vec![resolve(e, w, map, m)?],
                _ => present_members(e, w, map)?,
            };
            for key in keys {
                let old = w.get(&key).expect("resolved").clone();
                let new = match kind {
                    EditKind::LowRank { rank_frac, mode } => {
                        low_rank(&key, &old, rank_frac, mode, cache)?
                    }
                    _ => old.zeros_like()?,
                };
                w.insert(key, new);
            }
        }
    }
    Ok(())
}

/// Rank-k (Top) or top-k-removed (Bottom) version of one matrix, in its own dtype and device.
fn low_rank(
    name: &str,
    w: &Tensor,
    rank_frac: f64,
    mode: Mode,
    cache: &mut SvdCache,
) -> Result<Tensor> {
    let (m, n) = dims2(name, w)?;
    let (k, r) = (rank_for(rank_frac, m, n), m.min(n));
    let new = match mode {
        Mode::Top if k == 0 => return Ok(w.zeros_like()?),
        Mode::Bottom if k >= r => return Ok(w.zeros_like()?),
        Mode::Top if k >= r => return Ok(w.clone()),
        Mode::Bottom if k == 0 => return Ok(w.clone()),
        Mode::Top => cache.get(name, w)?.rebuild_top(k)?,
        Mode::Bottom => cache.get(name, w)?.rebuild_without_top(k)?,
    };
    Ok(new.to_dtype(w.dtype())?.to_device(w.device())?)
}

/// New W_O such that W_O'·W_V = Top: P_k, Bottom: P − P_k, where P = W_O·W_V = U S Vᵀ.
/// W_O' = U_k U_kᵀ W_O (resp. W_O − U_k U_kᵀ W_O): U_k U_kᵀ P = P_k exactly, W_V stays as is, and
/// each head's W_O slice is projected on the same output subspace, so the head structure of a
/// multi-head layer survives (no refactorisation or pseudo-inverse needed).
fn truncate_ov(
    ko: &str,
    wo: &Tensor,
    kv: &str,
    wv: &Tensor,
    rank_frac: f64,
    mode: Mode,
    cache: &mut SvdCache,
) -> Result<Tensor> {
    let ((d_out, a), (a2, d_in)) = (dims2(ko, wo)?, dims2(kv, wv)?);
    if a != a2 {
        let expected =
            format!("{a} rows to chain with `{ko}` ({d_out}x{a}); grouped KV is unsupported");
        return Err(SurgeryError::BadShape {
            name: kv.to_string(),
            expected,
            got: vec![a2, d_in],
        });
    }
    let k = rank_for(rank_frac, d_out, d_in);
    match mode {
        Mode::Top if k == 0 => return Ok(wo.zeros_like()?),
        Mode::Top if k >= d_out.min(d_in) => return Ok(wo.clone()),
        Mode::Bottom if k == 0 => return Ok(wo.clone()),
        _ => {}
    }
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
    let wo32 = cpu(wo)?;
    let p = wo32.matmul(&cpu(wv)?)?;
    let svd = cache.get(&format!("{ko}*{kv}"), &p)?;
    let uk = svd.u_block(0..k)?;
    let proj = uk.matmul(&uk.t()?.matmul(&wo32)?)?;
    let new = if mode == Mode::Top {
        proj
    } else {
        (wo32 - proj)?
    };
    Ok(new.to_dtype(wo.dtype())?.to_device(wo.device())?)
}

fn dims2(name: &str, w: &Tensor) -> Result<(usize, usize)> {
    w.dims2().map_err(|_| SurgeryError::BadShape {
        name: name.into(),
        expected: "a 2-D matrix".into(),
        got: w.dims().to_vec(),
    })
}

/// "layers 0..=1: fc_in, fc_out, …; groups: mlp, attn, all, ov" for the weights at hand
/// (layers are scanned from 0 while any mapped matrix is present).
fn valid_targets(w: &ModelWeights, map: &dyn MatrixMap) -> String {
    let present = |l: usize| -> Vec<&'static str> {
        Matrix::ALL
            .iter()
            .filter(|&&m| map.key(l, m).is_some_and(|k| w.contains(&k)))
            .map(|m| m.name())
            .collect()
    };
    let first = present(0);
    if first.is_empty() {
        let example = Matrix::ALL
            .iter()
            .find_map(|&m| map.key(0, m))
            .unwrap_or_default();
        return format!("none (no weight matches the matrix map, e.g. `{example}`)");
    }
    let n_layers = (1..).find(|&l| present(l).is_empty()).unwrap_or(1);
    format!(
        "layers 0..={}: {}; groups: mlp, attn, all, ov",
        n_layers - 1,
        first.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::super::edit::sweep_grid;
    use super::super::svd::tests::{fro2, rand_mat};
    use super::super::svd::Svd;
    use super::super::weights::TemplateMap;
    use super::*;

    const D: usize = 16;
    const FC_IN: &str = "blocks.1.mlp.fc_in.weight";
    const W_O: &str = "blocks.0.attn.out_proj.weight";
    const W_V: &str = "blocks.0.attn.v_proj.weight";

    /// Two layers, d_model 16, d_mlp 64, with output biases (LASER names).
    fn tiny_model() -> ModelWeights {
        let mut w = ModelWeights::default();
        for l in 0..2u64 {
            for (seed, (name, m, n)) in [
                ("mlp.fc_in.weight", 4 * D, D),
                ("mlp.fc_out.weight", D, 4 * D),
                ("attn.q_proj.weight", D, D),
                ("attn.k_proj.weight", D, D),
                ("attn.v_proj.weight", D, D),
                ("attn.out_proj.weight", D, D),
                ("mlp.fc_out.bias", 1, D),
                ("attn.out_proj.bias", 1, D),
            ]
            .into_iter()
            .enumerate()
            {
                let t = rand_mat(m, n, 10 * l + seed as u64);
                let t = if m == 1 { t.squeeze(0).unwrap() } else { t };
                w.insert(format!("blocks.{l}.{name}"), t);
            }
        }
        w
    }

    fn run(spec: &str, w: &ModelWeights, cache: &mut SvdCache) -> Result<ModelWeights> {
        apply(&spec.parse().unwrap(), w, cache, &TemplateMap::laser())
    }

    fn g<'a>(w: &'a ModelWeights, name: &str) -> &'a Tensor {
        w.get(name).unwrap()
    }

    fn diff2(a: &Tensor, b: &Tensor) -> f64 {
        fro2(&(a - b).unwrap())
    }

    #[test]
    fn top_mode_is_the_rank_k_rebuild_and_leaves_the_rest() {
        let w = tiny_model();
        let out = run("1:fc_in:0.25", &w, &mut SvdCache::new()).unwrap();
        let want = Svd::compute("w", g(&w, FC_IN))
            .unwrap()
            .rebuild_top(4)
            .unwrap();
        assert!(diff2(g(&out, FC_IN), &want) < 1e-10 * fro2(&want));
        for name in w.names().into_iter().filter(|n| *n != FC_IN) {
            assert_eq!(diff2(g(&out, name), g(&w, name)), 0.0, "{name} changed");
        }
        let zero = run("1:fc_in:0", &w, &mut SvdCache::new()).unwrap();
        assert_eq!(fro2(g(&zero, FC_IN)), 0.0);
    }

    #[test]
    fn bottom_mode_removes_the_top_k() {
        let w = tiny_model();
        let mut cache = SvdCache::new();
        let top = run("1:fc_in:0.25", &w, &mut cache).unwrap();
        let bottom = run("1:fc_in:bottom:0.25", &w, &mut cache).unwrap();
        let sum = (g(&top, FC_IN) + g(&bottom, FC_IN)).unwrap();
        assert!(diff2(&sum, g(&w, FC_IN)) < 1e-9 * fro2(g(&w, FC_IN)));
        let tail = Svd::compute("w", g(&w, FC_IN)).unwrap().energy(4..D);
        assert!((fro2(g(&bottom, FC_IN)) - tail).abs() < 1e-5 * fro2(g(&w, FC_IN)));
        assert_eq!(cache.computed(), 1);
    }

    #[test]
    fn rho_sweep_costs_one_svd_per_matrix() {
        let (w, mut cache) = (tiny_model(), SvdCache::new());
        let rhos = [0.05, 0.1, 0.2, 0.5, 0.75];
        for set in sweep_grid(&[1], &[Target::One(Matrix::FcIn)], &rhos, &[Mode::Top]) {
            apply(&set, &w, &mut cache, &TemplateMap::laser()).unwrap();
        }
        assert_eq!(cache.computed(), 1);
    }

    #[test]
    fn ov_truncates_the_product_and_keeps_w_v() {
        let w = tiny_model();
        let p = g(&w, W_O).matmul(g(&w, W_V)).unwrap();
        let svd = Svd::compute("p", &p).unwrap();
        let (top, bottom) = (
            svd.rebuild_top(4).unwrap(),
            svd.rebuild_without_top(4).unwrap(),
        );
        for (spec, want) in [("0:ov:0.25", top), ("0:ov:bottom:0.25", bottom)] {
            let out = run(spec, &w, &mut SvdCache::new()).unwrap();
            let got = g(&out, W_O).matmul(g(&out, W_V)).unwrap();
            assert!(diff2(&got, &want) < 1e-9 * fro2(&p), "{spec}");
            assert_eq!(diff2(g(&out, W_V), g(&w, W_V)), 0.0);
        }
    }

    #[test]
    fn composed_edits_apply_in_order() {
        let (w, mut cache) = (tiny_model(), SvdCache::new());
        let twice = run("1:fc_in:0.5,1:fc_in:0.25,0:v_proj:zero", &w, &mut cache).unwrap();
        let once = run("1:fc_in:0.25", &w, &mut cache).unwrap();
        assert!(diff2(g(&twice, FC_IN), g(&once, FC_IN)) < 1e-9 * fro2(g(&w, FC_IN)));
        assert_eq!(fro2(g(&twice, W_V)), 0.0);
        assert_eq!(cache.computed(), 2); // the second edit factorises the truncated matrix
    }

    #[test]
    fn drop_block_zeroes_output_matrix_and_bias() {
        let w = tiny_model();
        let out = run("1:mlp:drop,0:attn:drop", &w, &mut SvdCache::new()).unwrap();
        let (fc_out, b_o) = ("blocks.1.mlp.fc_out.weight", "blocks.0.attn.out_proj.bias");
        for name in [fc_out, "blocks.1.mlp.fc_out.bias", W_O, b_o] {
            assert_eq!(fro2(g(&out, name)), 0.0, "{name}");
        }
        assert_eq!(diff2(g(&out, FC_IN), g(&w, FC_IN)), 0.0);
    }

    #[test]
    fn groups_skip_matrices_the_model_lacks() {
        // Layer 1: single-matrix MLP (no fc_out); layer 0: identity W_Q. No fc_up / gate_proj.
        let mut w = tiny_model();
        w.remove("blocks.1.mlp.fc_out.weight");
        w.remove("blocks.0.attn.q_proj.weight");
        let out = run("1:mlp:drop,0:attn:0.5,0:mlp:0.5", &w, &mut SvdCache::new()).unwrap();
        assert_eq!(fro2(g(&out, FC_IN)), 0.0); // fc_in is that MLP's output matrix
        for name in [W_V, "blocks.0.mlp.fc_out.weight"] {
            assert!(diff2(g(&out, name), g(&w, name)) > 0.0, "{name}");
        }
        assert!(run("0:q_proj:0.5", &w, &mut SvdCache::new()).is_err());
    }

    #[test]
    fn unknown_targets_list_valid_names() {
        let w = tiny_model();
        let err = |spec| run(spec, &w, &mut SvdCache::new()).unwrap_err().to_string();
        let msg = err("5:fc_in:0.1");
        assert!(msg.starts_with("edit `5:fc_in:0.1`: no weight `blocks.5.mlp.fc_in.weight`"));
        let valid = "valid targets: layers 0..=1: fc_in, fc_out, q_proj, k_proj, v_proj, out_proj";
        assert!(msg.contains(valid), "{msg}");
        assert!(err("0:fc_up:0.1").contains("the matrix map has no `fc_up`"));
    }

    #[test]
    fn original_varmap_is_untouched() {
        let varmap = tiny_model().to_varmap().unwrap();
        let before = ModelWeights::from_varmap(&varmap).unwrap();
        let set: EditSet = "1:fc_in:0.1,0:ov:0.5,1:mlp:drop".parse().unwrap();
        let map = TemplateMap::laser();
        let edited = apply_varmap(&set, &varmap, &mut SvdCache::new(), &map).unwrap();
        let after = ModelWeights::from_varmap(&varmap).unwrap();
        for name in before.names() {
            assert_eq!(diff2(g(&before, name), g(&after, name)), 0.0, "{name}");
        }
        edited.load_into(&varmap).unwrap();
        let loaded = ModelWeights::from_varmap(&varmap).unwrap();
        assert_eq!(diff2(g(&loaded, FC_IN), g(&edited, FC_IN)), 0.0);
        assert!(diff2(g(&loaded, FC_IN), g(&before, FC_IN)) > 0.0);
    }
}
