//! Activation patching for any causal LM: run a clean and a corrupted prompt of the same
//! length, then rerun the corrupted one with one activation (one hook point, one position)
//! taken from the clean run, and see how much of the clean behaviour that restores. The
//! standard first localisation experiment (causal tracing, arXiv 2202.05262; the
//! TransformerLens patching tools): which layer and position carry the information
//! that separates the two prompts.
//!
//! The metric is a logit difference at the last position, `logit[answer] − logit[wrong]`;
//! each patched run reports it raw and normalised, `(m − m_corrupt) / (m_clean − m_corrupt)`
//! (1 = fully restored, 0 = no effect).

use candle_core::{DType, Result, Tensor};
use serde::Serialize;

use crate::interp::{HookPoint, Hooks, Intervention};
use crate::models::LanguageModel;

/// The result of a patching sweep.
#[derive(Debug, Clone, Serialize)]
pub struct PatchResult {
    /// Hook names, in sweep order.
    pub points: Vec<String>,
    /// Prompt length (positions 0 … len − 1).
    pub positions: usize,
    pub answer: u32,
    pub wrong: u32,
    /// The metric on the clean and on the corrupted prompt.
    pub metric_clean: f64,
    pub metric_corrupt: f64,
    /// `[point][position]`: the metric with that activation patched in.
    pub metric: Vec<Vec<f64>>,
    /// The same, normalised (NaN when clean and corrupted give the same metric).
    pub restored: Vec<Vec<f64>>,
}

/// Hook points whose activations have the sequence on axis 1 (the ones a position
/// patch can address): the residual stream, attention and MLP outputs, and the per-head
/// `hook_q|k|v|z`.
pub fn position_axis_ok(point: &HookPoint) -> bool {
    use HookPoint::*;
    match point {
        Looped { point, .. } => position_axis_ok(point),
        Embed | PosEmbed | ResidPre(_) | ResidMid(_) | ResidPost(_) | AttnOut(_) | MlpOut(_) | AttnQ(_) | AttnK(_) | AttnV(_) | AttnZ(_) | MlpPre(_) | MlpPost(_)
        | Ln1Normalized(_) | Ln2Normalized(_) | LnFinalNormalized => true,
        AttnScores(_) | AttnPattern(_) | Logits => false,
    }
}

/// The logit difference `logit[answer] − logit[wrong]` at the last position of row 0.
pub fn logit_diff(logits: &Tensor, answer: u32, wrong: u32) -> Result<f64> {
    let (_, t, v) = logits.dims3()?;
    if answer as usize >= v || wrong as usize >= v {
        candle_core::bail!("answer / wrong token ids ({answer}, {wrong}) outside the vocabulary of {v}");
    }
    let last: Vec<f32> = logits.get(0)?.get(t - 1)?.to_dtype(DType::F32)?.to_vec1()?;
    Ok(last[answer as usize] as f64 - last[wrong as usize] as f64)
}

fn same_length(clean: &[u32], corrupt: &[u32]) -> Result<()> {
    if clean.is_empty() || clean.len() != corrupt.len() {
        candle_core::bail!("patching needs clean and corrupted prompts of the same non-zero length (got {} and {} tokens)", clean.len(), corrupt.len());
    }
    Ok(())
}

/// `(m − m_corrupt) / (m_clean − m_corrupt)` for every cell (NaN when the two are equal).
fn normalise(metric: &[Vec<f64>], clean: f64, corrupt: f64) -> Vec<Vec<f64>> {
    let span = clean - corrupt;
    metric.iter().map(|r| r.iter().map(|m| if span != 0.0 { (m - corrupt) / span } else { f64::NAN }).collect()).collect()
}

/// `corrupt` with position `pos` (axis 1) taken from `clean`.
fn splice(corrupt: &Tensor, clean: &Tensor, pos: usize) -> Result<Tensor> {
    let t = corrupt.dim(1)?;
    let mut parts = Vec::with_capacity(3);
    if pos > 0 {
        parts.push(corrupt.narrow(1, 0, pos)?);
    }
    parts.push(clean.narrow(1, pos, 1)?);
    if pos + 1 < t {
        parts.push(corrupt.narrow(1, pos + 1, t - pos - 1)?);
    }
    Tensor::cat(&parts, 1)
}

/// Patch every (point, position) from the clean run into the corrupted one; `clean` and
/// `corrupt` are token ids of the same length. `progress` is called after each point.
pub fn patch_positions(
    model: &dyn LanguageModel,
    clean: &[u32],
    corrupt: &[u32],
    points: &[HookPoint],
    answer: u32,
    wrong: u32,
    mut progress: impl FnMut(usize),
) -> Result<PatchResult> {
    same_length(clean, corrupt)?;
    if let Some(p) = points.iter().find(|p| !position_axis_ok(p)) {
        candle_core::bail!("cannot patch `{p}` by position (its second axis is not the sequence)");
    }
    let device = model.params().device().clone();
    let ids = |x: &[u32]| Tensor::from_slice(x, (1, x.len()), &device);
    let run = |x: &[u32]| -> Result<(f64, Hooks)> {
        let mut h = Hooks::capture(points.iter().cloned());
        let logits = model.forward(&ids(x)?, &mut h)?;
        Ok((logit_diff(&logits, answer, wrong)?, h))
    };
    let (metric_clean, clean_cache) = run(clean)?;
    let (metric_corrupt, corrupt_cache) = run(corrupt)?;
    let corrupt_ids = ids(corrupt)?;
    let mut metric = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let get = |h: &Hooks| h.cache.get(p).cloned().ok_or_else(|| candle_core::Error::Msg(format!("the model has no hook point `{p}`")));
        let (c, k) = (get(&clean_cache)?, get(&corrupt_cache)?);
        let row = (0..clean.len())
            .map(|pos| {
                let mut h = Hooks::none().intervene(p.clone(), Intervention::Replace(splice(&k, &c, pos)?));
                logit_diff(&model.forward(&corrupt_ids, &mut h)?, answer, wrong)
            })
            .collect::<Result<Vec<f64>>>()?;
        metric.push(row);
        progress(i + 1);
    }
    let restored = normalise(&metric, metric_clean, metric_corrupt);
    Ok(PatchResult { points: points.iter().map(|p| p.to_string()).collect(), positions: clean.len(), answer, wrong, metric_clean, metric_corrupt, metric, restored })
}

/// Per-head patching: each head's output (`hook_z`, every position) from the clean run.
#[derive(Debug, Clone, Serialize)]
pub struct HeadPatchResult {
    pub metric_clean: f64,
    pub metric_corrupt: f64,
    /// `[layer][head]`: the metric with that head patched in, raw and normalised.
    pub metric: Vec<Vec<f64>>,
    pub restored: Vec<Vec<f64>>,
}

/// Patch every head of every layer on its own (its `hook_z` at all positions) from the
/// clean run into the corrupted one: which heads carry the difference.
pub fn patch_heads(model: &dyn LanguageModel, clean: &[u32], corrupt: &[u32], answer: u32, wrong: u32, mut progress: impl FnMut(usize)) -> Result<HeadPatchResult> {
    same_length(clean, corrupt)?;
    let device = model.params().device().clone();
    let layers = model.n_layers();
    let mut h = Hooks::capture((0..layers).map(HookPoint::AttnZ));
    let metric_clean = logit_diff(&model.forward(&Tensor::from_slice(clean, (1, clean.len()), &device)?, &mut h)?, answer, wrong)?;
    let corrupt_ids = Tensor::from_slice(corrupt, (1, corrupt.len()), &device)?;
    let metric_corrupt = logit_diff(&model.forward(&corrupt_ids, &mut Hooks::none())?, answer, wrong)?;
    let mut metric = Vec::with_capacity(layers);
    for l in 0..layers {
        let z = h.cache.get(&HookPoint::AttnZ(l)).cloned().ok_or_else(|| candle_core::Error::Msg(format!("the model has no hook point `blocks.{l}.attn.hook_z`")))?;
        let row = (0..z.dim(2)?)
            .map(|head| {
                let what = Intervention::on_heads([head], Intervention::Replace(z.narrow(2, head, 1)?));
                logit_diff(&model.forward(&corrupt_ids, &mut Hooks::none().intervene(HookPoint::AttnZ(l), what))?, answer, wrong)
            })
            .collect::<Result<Vec<f64>>>()?;
        metric.push(row);
        progress(l + 1);
    }
    let restored = normalise(&metric, metric_clean, metric_corrupt);
    Ok(HeadPatchResult { metric_clean, metric_corrupt, metric, restored })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Gpt, GptConfig};
    use candle_core::Device;

    #[test]
    fn patching_follows_the_residual_stream() -> Result<()> {
        let cfg = GptConfig { vocab_size: 11, d_model: 16, n_layers: 2, n_heads: 2, d_mlp: 32, max_seq_len: 8, ..Default::default() };
        let model = Gpt::new(&cfg, 3, &Device::Cpu)?;
        let clean = [1u32, 2, 3, 4, 5];
        let corrupt = [1u32, 7, 3, 4, 5]; // differs at position 1 only
        let points = vec![HookPoint::ResidPre(0), HookPoint::ResidPost(1), HookPoint::AttnZ(1)];
        let mut seen = 0;
        let r = patch_positions(&model, &clean, &corrupt, &points, 6, 9, |n| seen = n)?;
        assert_eq!((seen, r.positions, r.metric.len()), (3, 5, 3));
        assert_ne!(r.metric_clean, r.metric_corrupt);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-4;
        // The input of layer 0: only the position where the prompts differ matters, and
        // patching it there makes the whole run clean.
        for (pos, &x) in r.restored[0].iter().enumerate() {
            assert!(close(x, if pos == 1 { 1.0 } else { 0.0 }), "resid_pre(0) at {pos}: {x}");
        }
        // The last layer's output at the last position is all the logits there see.
        for (pos, &x) in r.restored[1].iter().enumerate() {
            assert!(close(x, if pos == 4 { 1.0 } else { 0.0 }), "resid_post(1) at {pos}: {x}");
        }
        // Before position 1 nothing differs, so patching there changes nothing.
        assert!(close(r.restored[2][0], 0.0));
        assert!(r.metric.iter().flatten().all(|m| m.is_finite()));

        // Bad input.
        let e = patch_positions(&model, &clean, &corrupt[..4], &points, 6, 9, |_| {}).unwrap_err().to_string();
        assert!(e.contains("same non-zero length"), "{e}");
        let e = patch_positions(&model, &clean, &corrupt, &[HookPoint::AttnPattern(0)], 6, 9, |_| {}).unwrap_err().to_string();
        assert!(e.contains("hook_pattern"), "{e}");
        assert!(patch_positions(&model, &clean, &corrupt, &points, 6, 11, |_| {}).is_err(), "id outside the vocabulary");
        Ok(())
    }

    #[test]
    fn head_patching_swaps_in_exactly_one_head() -> Result<()> {
        let cfg = GptConfig { vocab_size: 11, d_model: 16, n_layers: 2, n_heads: 4, d_mlp: 32, max_seq_len: 8, ..Default::default() };
        let model = Gpt::new(&cfg, 5, &Device::Cpu)?;
        let (clean, corrupt) = ([1u32, 2, 3, 4], [1u32, 8, 3, 4]);
        let r = patch_heads(&model, &clean, &corrupt, 6, 9, |_| {})?;
        assert_eq!((r.metric.len(), r.metric[0].len()), (2, 4));
        // The same patch built by hand: the corrupted run's hook_z with head 2 of layer 1
        // taken from the clean run.
        let ids = |x: &[u32]| Tensor::from_slice(x, (1, x.len()), &Device::Cpu);
        let z = |x: &[u32]| -> Result<Tensor> {
            let mut h = Hooks::capture([HookPoint::AttnZ(1)]);
            model.forward(&ids(x)?, &mut h)?;
            Ok(h.cache[&HookPoint::AttnZ(1)].clone())
        };
        let (zc, zk) = (z(&clean)?, z(&corrupt)?);
        let mixed = Tensor::cat(&[zk.narrow(2, 0, 2)?, zc.narrow(2, 2, 1)?, zk.narrow(2, 3, 1)?], 2)?;
        let mut h = Hooks::none().intervene(HookPoint::AttnZ(1), Intervention::Replace(mixed));
        let by_hand = logit_diff(&model.forward(&ids(&corrupt)?, &mut h)?, 6, 9)?;
        assert!((by_hand - r.metric[1][2]).abs() < 1e-5, "{by_hand} vs {}", r.metric[1][2]);
        assert!(r.restored.iter().flatten().all(|x| x.is_finite()));
        Ok(())
    }
}
