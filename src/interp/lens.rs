//! Reading the residual stream as logits.
//!
//! The logit lens puts the stream entering the first block and the stream leaving each
//! block through the model's own final norm and unembedding, so one sees which tokens
//! each depth already favours. Direct logit attribution splits one logit (or a logit
//! difference) at one position over the parts whose sum is the last residual stream —
//! the embeddings and every layer's attention and MLP outputs — with the final norm's
//! scale held at its value on the whole stream (`Norm::forward_frozen`); the parts plus
//! the constant terms (the norm's β, the unembedding bias) add up to the model's logit.

use candle_core::{Device, Result, Tensor};
use serde::Serialize;

use super::hooks::{HookPoint, Hooks};
use crate::models::{LanguageModel, Readout};

/// One token's standing in a row of logits.
#[derive(Debug, Clone, Serialize)]
pub struct TokenStat {
    pub id: u32,
    pub prob: f64,
    pub logit: f64,
    /// 0 = the most likely token.
    pub rank: usize,
}

/// The lens at one hook point.
#[derive(Debug, Clone, Serialize)]
pub struct LensRow {
    /// `blocks.0.hook_resid_pre` (the embeddings) or `blocks.{l}.hook_resid_post`.
    pub point: String,
    /// The `k` most likely tokens and their probabilities, most likely first.
    pub top: Vec<(u32, f64)>,
    /// The answer token, when one is given.
    pub answer: Option<TokenStat>,
}

/// `logit_lens`'s result: one row per depth, embeddings first, the model's output last.
#[derive(Debug, Clone, Serialize)]
pub struct LogitLens {
    pub pos: usize,
    pub rows: Vec<LensRow>,
}

/// One part of the last residual stream and its share of the attributed logit.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    /// `embed` (`blocks.0.hook_resid_pre`), `L{l} attn` or `L{l} mlp`.
    pub name: String,
    /// The hook point it was read at.
    pub point: String,
    pub logit: f64,
}

/// `logit_attribution`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct Attribution {
    pub pos: usize,
    pub answer: u32,
    pub wrong: Option<u32>,
    /// The model's own logit[answer] (− logit[wrong]) at `pos`.
    pub target: f64,
    pub parts: Vec<Part>,
    /// The constant terms: the final norm's β and the unembedding bias along the direction.
    pub bias: f64,
    /// `target − (Σ parts + bias)`: float rounding only when the parts are the whole stream.
    pub unexplained: f64,
    /// `[layer][head]`: each head's share of its layer's attention part (its `hook_z`
    /// through its columns of `W_O`); empty when the model does not expose `W_O`.
    pub heads: Vec<Vec<f64>>,
    /// `[layer]`: the attention output bias's share (the rest of the attention part).
    pub attn_bias: Vec<f64>,
}

fn ids_tensor(ids: &[u32], device: &Device) -> Result<Tensor> {
    Tensor::from_slice(ids, (1, ids.len()), device)
}

fn check_pos(ids: &[u32], pos: usize) -> Result<()> {
    if ids.is_empty() || pos >= ids.len() {
        candle_core::bail!("position {pos} is outside the prompt ({} tokens)", ids.len());
    }
    Ok(())
}

/// Row `pos` of a `(1, pos, d)` activation as `(1, 1, d)`.
fn at(cache: &Hooks, point: &HookPoint, pos: usize) -> Result<Tensor> {
    let t = cache.cache.get(point).ok_or_else(|| candle_core::Error::Msg(format!("the model has no hook point `{point}`")))?;
    t.narrow(1, pos, 1)
}

fn logits_of(readout: Readout, resid: &Tensor) -> Result<Vec<f64>> {
    let logits = readout.unembed.forward(&readout.norm.forward(resid)?)?;
    logits.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The logit lens of `ids` (one sequence) at position `pos`: the `k` most likely tokens
/// (and the answer's probability, logit and rank) after the embeddings and after
/// every block. The last row is the model's output.
pub fn logit_lens(model: &dyn LanguageModel, ids: &[u32], pos: usize, answer: Option<u32>, k: usize) -> Result<LogitLens> {
    check_pos(ids, pos)?;
    let points: Vec<HookPoint> = std::iter::once(HookPoint::ResidPre(0)).chain((0..model.n_layers()).map(HookPoint::ResidPost)).collect();
    let mut h = Hooks::capture(points.clone());
    model.forward(&ids_tensor(ids, model.params().device())?, &mut h)?;
    let mut rows = Vec::with_capacity(points.len());
    for p in &points {
        let logits = logits_of(model.readout(), &at(&h, p, pos)?)?;
        if let Some(a) = answer.filter(|&a| a as usize >= logits.len()) {
            candle_core::bail!("answer token {a} is outside the vocabulary ({} tokens)", logits.len());
        }
        let probs = softmax(&logits);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        // Ties broken by token id, so the ranking is deterministic.
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let top = order.iter().take(k).map(|&i| (i as u32, probs[i])).collect();
        let answer = answer.map(|a| {
            let a_i = a as usize;
            let rank = order.iter().position(|&i| i == a_i).unwrap_or(order.len());
            TokenStat { id: a, prob: probs[a_i], logit: logits[a_i], rank }
        });
        rows.push(LensRow { point: p.to_string(), top, answer });
    }
    Ok(LogitLens { pos, rows })
}

/// Direct logit attribution of logit[answer] (− logit[wrong]) at `pos` over the
/// embeddings and each layer's attention and MLP outputs (blocks without an MLP have no
/// MLP part).
pub fn logit_attribution(model: &dyn LanguageModel, ids: &[u32], pos: usize, answer: u32, wrong: Option<u32>) -> Result<Attribution> {
    check_pos(ids, pos)?;
    let n = model.n_layers();
    let mut parts_at: Vec<(String, HookPoint)> = vec![("embed".into(), HookPoint::ResidPre(0))];
    for l in 0..n {
        parts_at.push((format!("L{l} attn"), HookPoint::AttnOut(l)));
        parts_at.push((format!("L{l} mlp"), HookPoint::MlpOut(l)));
    }
    let whole = HookPoint::ResidPost(n.saturating_sub(1));
    let per_head = (0..n).all(|l| model.attn_out_proj(l).is_some());
    let z_points: Vec<HookPoint> = if per_head { (0..n).map(HookPoint::AttnZ).collect() } else { Vec::new() };
    let mut h = Hooks::capture(parts_at.iter().map(|(_, p)| p.clone()).chain(z_points.iter().cloned()).chain([whole.clone(), HookPoint::Logits]));
    model.forward(&ids_tensor(ids, model.params().device())?, &mut h)?;
    let readout = model.readout();
    let w_u = &readout.unembed.weight;
    let vocab = w_u.dim(0)?;
    for t in std::iter::once(answer).chain(wrong) {
        if t as usize >= vocab {
            candle_core::bail!("token {t} is outside the vocabulary ({vocab} tokens)");
        }
    }
    // The direction in the normalised stream: W_U[answer] (− W_U[wrong]).
    let row = |t: u32| w_u.get(t as usize)?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>();
    let mut dir = row(answer)?;
    if let Some(w) = wrong {
        for (d, x) in dir.iter_mut().zip(row(w)?) {
            *d -= x;
        }
    }
    let dot = |v: &Tensor| -> Result<f64> {
        let v = v.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        Ok(v.iter().zip(&dir).map(|(a, b)| a * b).sum())
    };
    let whole_at = at(&h, &whole, pos)?;
    let mut parts = Vec::new();
    for (name, p) in &parts_at {
        if !h.cache.contains_key(p) {
            continue; // e.g. a block without an MLP
        }
        let part = readout.norm.forward_frozen(&at(&h, p, pos)?, &whole_at)?;
        parts.push(Part { name: name.clone(), point: p.to_string(), logit: dot(&part)? });
    }
    let (mut heads, mut attn_bias) = (Vec::new(), Vec::new());
    for (l, zp) in z_points.iter().enumerate() {
        let w_o = model.attn_out_proj(l).expect("checked above");
        let z = at(&h, zp, pos)?; // (1, 1, n_heads, d_head)
        let (n_heads, d_head) = (z.dim(2)?, z.dim(3)?);
        let mut row = Vec::with_capacity(n_heads);
        for head in 0..n_heads {
            let z_h = z.narrow(2, head, 1)?.reshape((1, d_head))?;
            let w_h = w_o.weight.narrow(1, head * d_head, d_head)?; // (d_model, d_head)
            let out = z_h.matmul(&w_h.t()?)?.reshape((1, 1, w_o.weight.dim(0)?))?;
            row.push(dot(&readout.norm.forward_frozen(&out, &whole_at)?)?);
        }
        heads.push(row);
        attn_bias.push(match &w_o.bias {
            Some(b) => dot(&readout.norm.forward_frozen(&b.reshape((1, 1, b.dim(0)?))?, &whole_at)?)?,
            None => 0.0,
        });
    }
    let mut bias = match readout.norm.bias() {
        Some(b) => dot(b)?,
        None => 0.0,
    };
    if let Some(b) = &readout.unembed.bias {
        let b = b.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        bias += b[answer as usize] - wrong.map_or(0.0, |w| b[w as usize]);
    }
    let logits = at(&h, &HookPoint::Logits, pos)?.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    let target = logits[answer as usize] - wrong.map_or(0.0, |w| logits[w as usize]);
    let explained: f64 = parts.iter().map(|p| p.logit).sum::<f64>() + bias;
    Ok(Attribution { pos, answer, wrong, target, parts, bias, unexplained: target - explained, heads, attn_bias })
}

/// One prompt of a batch attribution: token ids, answer and (optionally) wrong token, read
/// at the last position.
#[derive(Debug, Clone, PartialEq)]
pub struct LensExample {
    pub ids: Vec<u32>,
    pub answer: u32,
    pub wrong: Option<u32>,
}

/// Direct logit attribution averaged over prompts (each read at its last position).
#[derive(Debug, Clone, Serialize)]
pub struct MeanAttribution {
    pub n: usize,
    /// Mean of the model's logit[answer] (− logit[wrong]).
    pub target: f64,
    /// Mean share of each part (same names and order as `Attribution::parts`).
    pub parts: Vec<Part>,
    /// `[layer][head]` mean share of each head; `[layer]` of the attention output bias.
    pub heads: Vec<Vec<f64>>,
    pub attn_bias: Vec<f64>,
    pub bias: f64,
    /// Per prompt: the target and each part's share.
    pub per_example: Vec<(f64, Vec<f64>)>,
}

/// `logit_attribution` of every example at its last position, averaged.
pub fn mean_attribution(model: &dyn LanguageModel, examples: &[LensExample], mut progress: impl FnMut(usize)) -> Result<MeanAttribution> {
    if examples.is_empty() {
        candle_core::bail!("no prompts to attribute");
    }
    let mut mean: Option<Attribution> = None;
    let mut per_example = Vec::with_capacity(examples.len());
    for (i, e) in examples.iter().enumerate() {
        let pos = e.ids.len().saturating_sub(1);
        let r = logit_attribution(model, &e.ids, pos, e.answer, e.wrong)?;
        per_example.push((r.target, r.parts.iter().map(|p| p.logit).collect()));
        match &mut mean {
            None => mean = Some(r),
            Some(m) => {
                m.target += r.target;
                m.bias += r.bias;
                for (a, b) in m.parts.iter_mut().zip(&r.parts) {
                    a.logit += b.logit;
                }
                for (a, b) in m.heads.iter_mut().flatten().zip(r.heads.iter().flatten()) {
                    *a += b;
                }
                for (a, b) in m.attn_bias.iter_mut().zip(&r.attn_bias) {
                    *a += b;
                }
            }
        }
        progress(i + 1);
    }
    let mut m = mean.expect("examples is not empty");
    let n = examples.len() as f64;
    m.parts.iter_mut().for_each(|p| p.logit /= n);
    m.heads.iter_mut().flatten().for_each(|x| *x /= n);
    m.attn_bias.iter_mut().for_each(|x| *x /= n);
    Ok(MeanAttribution { n: examples.len(), target: m.target / n, parts: m.parts, heads: m.heads, attn_bias: m.attn_bias, bias: m.bias / n, per_example })
}
