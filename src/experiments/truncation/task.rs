//! Training task and evaluation of the noisy in-context recall model: metrics
//! at scored positions (counter ≥ 2) and the training-dynamics probes of
//! spec §5 (FFN noise margin, previous-token and induction attention,
//! P(τ) on noisy data, accuracy with FFN₂ dropped).

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::data::noisy_recall::{NoisyRecallBatch, NoisyRecallSampler};
use crate::data::TokenBatch;
use crate::interp::lens::{mean_attribution, LensExample, MeanAttribution};
use crate::interp::probes::{ffn_token_logits, logit_margin, mass_on_keys, prev_token_mass};
use crate::interp::{HookPoint, Hooks, Intervention};
use crate::models::{Gpt, LanguageModel};
use crate::nn::Params;
use crate::train::lm_task::{lm_loss, lm_loss_grads};
use crate::train::{Metrics, Task, TrainConfig};

/// Metrics at the scored positions of a batch, against the in-context answer ȳ.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RecallMetrics {
    /// argmax = ȳ.
    pub acc: f64,
    /// Mean P(τ).
    pub p_noise: f64,
    /// Mean P(ȳ).
    pub p_answer: f64,
    /// Mean −log P(ȳ).
    pub loss: f64,
    /// Number of scored positions.
    pub n: usize,
}

/// Per scored position: (flat index, argmax, P(τ), P(ȳ)).
pub type PerExample = Vec<(usize, u32, f32, f32)>;

/// The batch as next-token training data (loss on scored positions).
pub fn token_batch(b: &NoisyRecallBatch) -> TokenBatch {
    b.token_batch()
}

fn ids(b: &NoisyRecallBatch, device: &Device) -> Result<Tensor> {
    Tensor::from_slice(&b.inputs, (b.batch, b.seq_len), device)
}

/// Recall metrics (and per-example rows) of `logits: (batch, pos, vocab)`.
pub fn recall_metrics(logits: &Tensor, b: &NoisyRecallBatch) -> Result<(RecallMetrics, PerExample)> {
    let v = logits.dim(2)?;
    let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    let tau = b.noise_token as usize;
    let mut m = RecallMetrics::default();
    let mut rows = Vec::new();
    for i in 0..b.batch * b.seq_len {
        if b.counter[i] < 2 {
            continue;
        }
        let Some(ans) = b.answer_at(i) else { continue };
        let row = &flat[i * v..(i + 1) * v];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = row.iter().map(|x| (x - max).exp()).sum();
        let p = |k: usize| (row[k] - max).exp() / z;
        let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(k, _)| k as u32).unwrap_or(0);
        let (pn, pa) = (p(tau), p(ans as usize));
        m.acc += f64::from(argmax == ans);
        m.p_noise += pn as f64;
        m.p_answer += pa as f64;
        m.loss -= (pa.max(1e-30) as f64).ln();
        m.n += 1;
        rows.push((i, argmax, pn, pa));
    }
    if m.n > 0 {
        let n = m.n as f64;
        m.acc /= n;
        m.p_noise /= n;
        m.p_answer /= n;
        m.loss /= n;
    }
    Ok((m, rows))
}

/// Evaluate `model` on `b`, optionally through `hooks` (e.g. an ablation).
pub fn evaluate(model: &Gpt, b: &NoisyRecallBatch, hooks: &mut Hooks) -> Result<(RecallMetrics, PerExample)> {
    let logits = model.forward(&ids(b, model.params().device())?, hooks)?;
    recall_metrics(&logits, b)
}

/// Hooks that zero the FFN output of `layer` (drop FFN ℓ).
pub fn drop_ffn(layer: usize) -> Hooks {
    Hooks::none().intervene(HookPoint::MlpOut(layer), Intervention::Zero)
}

/// Layer-`layer` attention mass from scored trigger queries onto the positions
/// right after earlier triggers.
#[derive(Debug, Clone, Copy)]
pub struct FollowerMass {
    /// On ȳ slots (followers holding the answer), all scored queries.
    pub answer: f64,
    /// On τ slots (followers holding the noise token), all scored queries.
    pub noise: f64,
    /// On τ slots, queries with at least one earlier ȳ slot (attention has a choice).
    pub noise_with_choice: f64,
    /// On τ slots, queries whose earlier followers are all τ (no ȳ to copy).
    pub noise_forced: f64,
    /// Fraction of scored queries of the forced kind.
    pub forced_frac: f64,
}

pub fn trigger_follower_mass(pattern: &Tensor, b: &NoisyRecallBatch) -> Result<FollowerMass> {
    let t = b.seq_len;
    let slots = |bi: usize, qi: usize, noise: bool| -> Option<Vec<usize>> {
        follower_slots(b, bi, qi).map(|(answer, tau)| if noise { tau } else { answer })
    };
    let has_answer = |bi: usize, qi: usize| slots(bi, qi, false).map(|v| !v.is_empty());
    let (mut forced, mut scored) = (0usize, 0usize);
    for bi in 0..b.batch {
        for qi in 0..t {
            if let Some(h) = has_answer(bi, qi) {
                scored += 1;
                forced += usize::from(!h);
            }
        }
    }
    let when = |want: bool| move |bi: usize, qi: usize| (has_answer(bi, qi)? == want).then(|| slots(bi, qi, true)).flatten();
    Ok(FollowerMass {
        answer: mass_on_keys(pattern, |bi, qi| slots(bi, qi, false))?,
        noise: mass_on_keys(pattern, |bi, qi| slots(bi, qi, true))?,
        noise_with_choice: mass_on_keys(pattern, when(true))?,
        noise_forced: mass_on_keys(pattern, when(false))?,
        forced_frac: if scored > 0 { forced as f64 / scored as f64 } else { f64::NAN },
    })
}

/// What the layer-2 attention of "forced" queries (scored triggers whose earlier
/// followers all hold τ) is worth to the model: their loss and P(τ) as trained, and with
/// the mass they put on τ slots spread evenly over their other causal keys.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ForcedQueries {
    /// Forced queries in the batch.
    pub n: usize,
    /// Their mean layer-2 attention mass on τ slots.
    pub tau_mass: f64,
    /// Mean cross-entropy against their actual (noisy) targets, as trained.
    pub loss: f64,
    /// The same with the τ-slot mass moved to the other keys.
    pub loss_moved: f64,
    /// Mean P(τ) as trained and with the mass moved.
    pub p_noise: f64,
    pub p_noise_moved: f64,
}

/// Scored query (b, q) of `b`: the positions of its earlier followers holding ȳ and τ.
fn follower_slots(b: &NoisyRecallBatch, bi: usize, qi: usize) -> Option<(Vec<usize>, Vec<usize>)> {
    let t = b.seq_len;
    if b.counter[bi * t + qi] < 2 {
        return None;
    }
    let (noise, answer): (Vec<usize>, Vec<usize>) =
        (1..=qi).filter(|&s| b.counter[bi * t + s - 1] > 0).partition(|&s| b.target_is_noise[bi * t + s - 1]);
    Some((answer, noise))
}

/// [`ForcedQueries`] of `model` on `b` (the last layer's pattern is patched).
/// Direct logit attribution of logit[τ] − logit[ȳ] at the scored positions (counter ≥ 2)
/// of the first `n_seq` sequences of the clean set: which parts of the stream push the
/// generic token and which the in-context answer (positions whose answer is τ itself are
/// left out).
pub fn noise_attribution(model: &Gpt, clean: &NoisyRecallBatch, n_seq: usize) -> Result<MeanAttribution> {
    let t = clean.seq_len;
    let mut examples = Vec::new();
    for bi in 0..clean.batch.min(n_seq) {
        for pos in 0..t {
            let i = bi * t + pos;
            if clean.counter[i] >= 2 && clean.targets[i] != clean.noise_token {
                examples.push(LensExample { ids: clean.inputs[bi * t..=i].to_vec(), answer: clean.noise_token, wrong: Some(clean.targets[i]) });
            }
        }
    }
    mean_attribution(model, &examples, |_| {})
}

pub fn forced_queries(model: &Gpt, b: &NoisyRecallBatch) -> Result<ForcedQueries> {
    let last = model.n_layers() - 1;
    let point = HookPoint::AttnPattern(last);
    let ids = ids(b, model.params().device())?;
    let mut hooks = Hooks::capture([point.clone()]);
    let logits = model.forward(&ids, &mut hooks)?;
    let pattern = hooks.cache[&point].clone();
    let (batch, heads, t, s) = pattern.dims4()?;
    let mut p: Vec<f32> = pattern.flatten_all()?.to_vec1()?;
    let mut forced = Vec::new();
    let mut tau_mass = 0.0;
    for bi in 0..batch {
        for qi in 0..t {
            let Some((answer, noise)) = follower_slots(b, bi, qi) else { continue };
            if !answer.is_empty() {
                continue;
            }
            forced.push(bi * t + qi);
            for h in 0..heads {
                let row = &mut p[((bi * heads + h) * t + qi) * s..][..s];
                let mass: f32 = noise.iter().map(|&k| row[k]).sum();
                tau_mass += mass as f64 / heads as f64;
                let others = qi + 1 - noise.len();
                for (k, x) in row[..=qi].iter_mut().enumerate() {
                    *x = if noise.contains(&k) { 0.0 } else { *x + mass / others as f32 };
                }
            }
        }
    }
    let moved = Tensor::from_vec(p, (batch, heads, t, s), model.params().device())?;
    let mut hooks = Hooks::none().intervene(point, Intervention::Replace(moved));
    let logits_moved = model.forward(&ids, &mut hooks)?;
    let tau = b.noise_token as usize;
    let stats = |logits: &Tensor| -> Result<(f64, f64)> {
        let v = logits.dim(2)?;
        let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let (mut loss, mut pn) = (0.0, 0.0);
        for &i in &forced {
            let row = &flat[i * v..(i + 1) * v];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
            let lp = |k: usize| (row[k] - max) as f64 - z.ln();
            loss -= lp(b.targets[i] as usize);
            pn += lp(tau).exp();
        }
        let n = forced.len().max(1) as f64;
        Ok((loss / n, pn / n))
    };
    let ((loss, p_noise), (loss_moved, p_noise_moved)) = (stats(&logits)?, stats(&logits_moved)?);
    let n = forced.len();
    Ok(ForcedQueries { n, tau_mass: tau_mass / n.max(1) as f64, loss, loss_moved, p_noise, p_noise_moved })
}

/// The training task of one variant.
pub struct NoisyRecallTask {
    pub model: Gpt,
    pub sampler: NoisyRecallSampler,
    pub batch_size: usize,
    pub clean: NoisyRecallBatch,
    pub noisy: NoisyRecallBatch,
    pub early_steps: u64,
    /// Further probe steps.
    pub extra_steps: Vec<u64>,
    /// Batch slices computed concurrently (`TrainConfig::shards`).
    pub shards: usize,
}

impl NoisyRecallTask {
    /// All probes of spec §5 at the current weights.
    pub fn probes(&self) -> Result<Metrics> {
        let mut m = Metrics::new();
        let last = self.model.n_layers() - 1;
        let tau = self.sampler.config().noise_token as usize;
        let q = self.sampler.config().trigger;
        let patterns = [HookPoint::AttnPattern(0), HookPoint::AttnPattern(last)];

        let mut hooks = Hooks::capture(patterns.clone());
        let (clean, _) = evaluate(&self.model, &self.clean, &mut hooks)?;
        m.insert("clean_acc".into(), clean.acc);
        m.insert("clean_p_noise".into(), clean.p_noise);
        m.insert("clean_p_answer".into(), clean.p_answer);
        m.insert("clean_loss".into(), clean.loss);
        m.insert("l1_prev_token_attn".into(), prev_token_mass(&hooks.cache[&patterns[0]])?);
        let clean_mass = trigger_follower_mass(&hooks.cache[&patterns[1]], &self.clean)?;
        m.insert("l2_attn_answer_clean".into(), clean_mass.answer);

        let mut hooks = Hooks::capture([patterns[1].clone()]);
        let (noisy, _) = evaluate(&self.model, &self.noisy, &mut hooks)?;
        m.insert("noisy_p_noise".into(), noisy.p_noise);
        m.insert("noisy_p_answer".into(), noisy.p_answer);
        m.insert("noisy_acc".into(), noisy.acc);
        let fm = trigger_follower_mass(&hooks.cache[&patterns[1]], &self.noisy)?;
        m.insert("l2_attn_answer_noisy".into(), fm.answer);
        m.insert("l2_attn_noise_noisy".into(), fm.noise);
        m.insert("l2_attn_noise_noisy_with_choice".into(), fm.noise_with_choice);
        m.insert("l2_attn_noise_noisy_forced".into(), fm.noise_forced);
        m.insert("l2_noisy_forced_frac".into(), fm.forced_frac);

        for (l, key) in [(0usize, "ffn1"), (last, "ffn2")] {
            if self.model.block(l).and_then(|b| b.mlp()).is_some() {
                let logits = ffn_token_logits(&self.model, &[l], q)?;
                m.insert(format!("{key}_noise_margin"), logit_margin(&logits, tau));
            }
        }
        // Accuracy with the last FFN dropped: when in-context recall works without it.
        if self.model.block(last).and_then(|b| b.mlp()).is_some() {
            let (dropped, _) = evaluate(&self.model, &self.clean, &mut drop_ffn(last))?;
            m.insert("clean_acc_ffn2_dropped".into(), dropped.acc);
            m.insert("clean_p_noise_ffn2_dropped".into(), dropped.p_noise);
        }
        Ok(m)
    }
}

impl Task for NoisyRecallTask {
    fn params(&self) -> &Params {
        self.model.params()
    }
    fn train_loss(&mut self, _step: u64, rng: &mut ChaCha8Rng) -> Result<(Tensor, Metrics)> {
        let b = self.sampler.sample(self.batch_size, rng);
        Ok((lm_loss(&self.model, &token_batch(&b))?, Metrics::new()))
    }
    fn train_grads(&mut self, _step: u64, rng: &mut ChaCha8Rng) -> Result<(f64, GradStore, Metrics)> {
        let b = self.sampler.sample(self.batch_size, rng);
        let (loss, grads) = lm_loss_grads(&self.model, &token_batch(&b), self.shards)?;
        Ok((loss, grads, Metrics::new()))
    }
    fn evaluate(&mut self, _step: u64) -> Result<Metrics> {
        self.probes()
    }
    fn eval_due(&self, step: u64, cfg: &TrainConfig) -> bool {
        step <= self.early_steps || self.extra_steps.contains(&step) || (cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every))
    }
}
