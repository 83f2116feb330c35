//! After training: the truncation grid (spec §6) on clean and noisy data, and
//! the spectral diagnosis of the last FFN (spec §7.3).

use candle_core::{Result, Tensor};
use serde::Serialize;

use super::config::SweepConfig;
use super::task::{evaluate, NoisyRecallTask, RecallMetrics};
use crate::interp::probes::logit_excess;
use crate::interp::{HookPoint, Hooks};
use crate::models::LanguageModel;
use crate::surgery::{with_edits, EditSet, Svd, SvdCache, TemplateMap};

/// One evaluated edit.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    /// The edit in LASER notation (`layer:matrix:rank_frac`), or `none`.
    pub edit: String,
    pub layer: Option<usize>,
    pub matrix: Option<String>,
    pub rank_frac: Option<f64>,
    pub clean: RecallMetrics,
    pub noisy: RecallMetrics,
}

fn wrap(e: crate::surgery::SurgeryError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// An edit spec with its (layer, matrix, ρ), or `none` with no coordinates.
pub type GridEdit = (String, Option<(usize, String, f64)>);

/// The edits of the grid that exist in this model, plus `none`.
pub fn grid(task: &NoisyRecallTask, cfg: &SweepConfig) -> Vec<GridEdit> {
    let params = task.model.params();
    let mut out = vec![("none".to_string(), None)];
    for layer in 0..task.model.n_layers() {
        for m in &cfg.matrices {
            let key = if m.starts_with("fc") { format!("blocks.{layer}.mlp.{m}.weight") } else { format!("blocks.{layer}.attn.{m}.weight") };
            if params.get(&key).is_none() {
                continue;
            }
            for &r in &cfg.rank_fracs {
                if r < 1.0 {
                    out.push((format!("{layer}:{m}:{r}"), Some((layer, m.clone(), r))));
                }
            }
        }
    }
    out
}

/// Evaluate every edit of the grid on the clean and noisy sets.
pub fn run_sweep(task: &NoisyRecallTask, cfg: &SweepConfig, cache: &mut SvdCache) -> Result<Vec<SweepRow>> {
    let map = TemplateMap::laser();
    let mut rows = Vec::new();
    for (spec, parsed) in grid(task, cfg) {
        let edits: EditSet = if spec == "none" { EditSet::new(vec![]) } else { spec.parse().map_err(wrap)? };
        let (clean, noisy) = with_edits(task.model.params(), &edits, cache, &map, || -> Result<_> {
            let (c, _) = evaluate(&task.model, &task.clean, &mut Hooks::none())?;
            let (n, _) = evaluate(&task.model, &task.noisy, &mut Hooks::none())?;
            Ok((c, n))
        })
        .map_err(wrap)??;
        let (layer, matrix, rank_frac) = match parsed {
            Some((l, m, r)) => (Some(l), Some(m), Some(r)),
            None => (None, None, None),
        };
        rows.push(SweepRow { edit: spec, layer, matrix, rank_frac, clean, noisy });
    }
    Ok(rows)
}

/// Spectral picture of the last FFN (spec §7.3).
#[derive(Debug, Clone, Serialize)]
pub struct Spectral {
    /// Training step of the diagnosed weights.
    pub step: u64,
    /// Singular values by matrix name (`blocks.l.mlp.fc_*.weight`).
    pub spectra: Vec<(String, Vec<f32>)>,
    /// |cos| of W_2's top left singular vector with u_τ (row τ of W_U).
    pub top_left_cos_u_tau: f64,
    /// max |cos| of the other left singular vectors with u_τ.
    pub max_other_cos_u_tau: f64,
    /// Mean τ-logit excess W_U·FFN₂ at scored clean positions, full W_1.
    pub excess_full: f64,
    /// (k, excess) with W_1 truncated to its top-k directions.
    pub excess_keep: Vec<(usize, f64)>,
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// Mean τ-logit excess of the last FFN's output at scored clean positions.
fn ffn_excess(task: &NoisyRecallTask) -> Result<f64> {
    let last = task.model.n_layers() - 1;
    let point = HookPoint::MlpOut(last);
    let mut hooks = Hooks::capture([point.clone()]);
    evaluate(&task.model, &task.clean, &mut hooks)?;
    let out = &hooks.cache[&point]; // (b, t, d)
    let (b, t, d) = out.dims3()?;
    let logits = out.reshape((b * t, d))?.matmul(&task.model.unembed_weight().t()?)?;
    let v = logits.dim(1)?;
    let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    let tau = task.clean.noise_token as usize;
    let (mut total, mut n) = (0.0, 0usize);
    for i in 0..b * t {
        if task.clean.counter[i] >= 2 {
            total += logit_excess(&flat[i * v..(i + 1) * v], tau);
            n += 1;
        }
    }
    Ok(if n > 0 { total / n as f64 } else { f64::NAN })
}

/// Spectra of all FFN matrices and the diagnosis of the last FFN; `None`
/// when the last layer has no two-matrix FFN.
pub fn spectral(task: &NoisyRecallTask, step: u64, keep_ks: &[usize], cache: &mut SvdCache) -> Result<Option<Spectral>> {
    let params = task.model.params();
    let last = task.model.n_layers() - 1;
    let w2_name = format!("blocks.{last}.mlp.fc_out.weight");
    let Some(w2) = params.get(&w2_name) else { return Ok(None) };
    let mut spectra = Vec::new();
    for l in 0..task.model.n_layers() {
        for m in ["fc_in", "fc_out"] {
            let name = format!("blocks.{l}.mlp.{m}.weight");
            if let Some(w) = params.get(&name) {
                spectra.push((name.clone(), cache.get(&name, &w).map_err(wrap)?.s.clone()));
            }
        }
    }
    let svd: std::sync::Arc<Svd> = cache.get(&w2_name, &w2).map_err(wrap)?;
    let tau = task.clean.noise_token as usize;
    let d = task.model.cfg.d_model;
    let u_tau: Vec<f32> = task.model.unembed_weight().narrow(0, tau, 1)?.flatten_all()?.to_vec1()?;
    let r = svd.s.len();
    let left = |j: usize| -> Vec<f32> { (0..svd.m).map(|i| svd.u[i * r + j]).collect() };
    let top = cos(&left(0), &u_tau).abs();
    let other = (1..r).map(|j| cos(&left(j), &u_tau).abs()).fold(0.0, f64::max);

    let excess_full = ffn_excess(task)?;
    let map = TemplateMap::laser();
    let mut excess_keep = Vec::new();
    for &k in keep_ks {
        let edits: EditSet = format!("{last}:fc_in:{}", k as f64 / d as f64).parse().map_err(wrap)?;
        let e = with_edits(params, &edits, cache, &map, || ffn_excess(task)).map_err(wrap)??;
        excess_keep.push((k, e));
    }
    Ok(Some(Spectral { step, spectra, top_left_cos_u_tau: top, max_other_cos_u_tau: other, excess_full, excess_keep }))
}

/// Layer-`layer` attention pattern of the first clean sequence `(query, key)`.
pub fn example_pattern(task: &NoisyRecallTask, layer: usize) -> Result<Vec<Vec<f64>>> {
    let point = HookPoint::AttnPattern(layer);
    let mut hooks = Hooks::capture([point.clone()]);
    evaluate(&task.model, &task.clean, &mut hooks)?;
    let p: Tensor = hooks.cache[&point].narrow(0, 0, 1)?.squeeze(0)?.mean(0)?; // (q, k)
    let rows: Vec<Vec<f32>> = p.to_vec2()?;
    Ok(rows.into_iter().map(|r| r.into_iter().map(f64::from).collect()).collect())
}
