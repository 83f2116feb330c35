//! Per-head attention scores on repeated random tokens, for any causal LM: the usual
//! first look at a model's heads (the detection heuristics of TransformerLens and of the
//! induction-head papers, arXiv 2209.11895).
//!
//! Input: `batch` sequences `x_1 … x_n x_1 … x_n`, each half `n` distinct uniform token
//! ids (with replacement when the vocabulary has fewer than `n` ids). With `A` a head's
//! attention pattern, per layer and head, averaged over the batch:
//!
//! - **previous token**: mean of `A[t, t−1]` over t = 1 … 2n−1;
//! - **duplicate token**: mean of `A[t, t−n]` over the second half (the earlier copy);
//! - **induction**: mean of `A[t, t−n+1]` over the second half (the token that followed
//!   the earlier copy: what an induction head attends to);
//! - **first token**: mean of `A[t, 0]` over t = 1 … 2n−1 (an attention sink);
//!
//! plus the model's loss on the second half, which an induction circuit drives far below
//! the first half's (random tokens are unpredictable the first time).

use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::interp::{HookPoint, Hooks};
use crate::models::LanguageModel;

/// Score names in `HeadScores::tables` order.
pub const SCORES: [&str; 4] = ["previous token", "duplicate token", "induction", "first token"];

/// Scores per layer and head (`[layer][head]`), and the loss on each half.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadScores {
    /// Half length n (sequences have 2n tokens).
    pub n: usize,
    pub batch: usize,
    pub seed: u64,
    pub prev_token: Vec<Vec<f64>>,
    pub duplicate: Vec<Vec<f64>>,
    pub induction: Vec<Vec<f64>>,
    pub first_token: Vec<Vec<f64>>,
    /// Mean next-token cross-entropy (nats) predicting tokens 2 … n of the first half and
    /// all n + 1 … 2n of the second half (`None` when only patterns were scored).
    pub loss_first_half: Option<f64>,
    pub loss_second_half: Option<f64>,
}

impl HeadScores {
    /// The four tables in `SCORES` order.
    pub fn tables(&self) -> [&Vec<Vec<f64>>; 4] {
        [&self.prev_token, &self.duplicate, &self.induction, &self.first_token]
    }

    /// (layer, head, score) of the highest entry of a table.
    pub fn best(table: &[Vec<f64>]) -> Option<(usize, usize, f64)> {
        let mut best: Option<(usize, usize, f64)> = None;
        for (l, row) in table.iter().enumerate() {
            for (h, &s) in row.iter().enumerate() {
                if best.is_none_or(|(_, _, b)| s > b) {
                    best = Some((l, h, s));
                }
            }
        }
        best
    }
}

/// `batch` repeated random sequences of length 2n over ids `0..vocab`, seeded.
pub fn repeated_tokens(vocab: usize, n: usize, batch: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..batch)
        .map(|_| {
            let half: Vec<u32> = if vocab >= n {
                // n distinct ids: a partial Fisher–Yates shuffle of 0..vocab.
                let mut pool: Vec<u32> = (0..vocab as u32).collect();
                for i in 0..n {
                    pool.swap(i, rng.random_range(i..vocab));
                }
                pool.truncate(n);
                pool
            } else {
                (0..n).map(|_| rng.random_range(0..vocab) as u32).collect()
            };
            half.iter().chain(&half).copied().collect()
        })
        .collect()
}

/// Scores from captured patterns, one `(batch, heads, 2n, 2n)` tensor per layer.
pub fn scores_from_patterns(patterns: &[Tensor], n: usize) -> Result<HeadScores> {
    let mut tables: [Vec<Vec<f64>>; 4] = Default::default();
    for (l, pattern) in patterns.iter().enumerate() {
        let (b, h, nq, nk) = pattern.dims4()?;
        if nq != 2 * n || nk != 2 * n || n < 2 {
            candle_core::bail!("head scores: layer {l} pattern is {nq} × {nk}, expected {0} × {0} (n = {n} ≥ 2)", 2 * n);
        }
        let p: Vec<f32> = pattern.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let at = |bi: usize, hi: usize, q: usize, k: usize| p[((bi * h + hi) * nq + q) * nk + k] as f64;
        let mean = |hi: usize, qs: std::ops::Range<usize>, key: &dyn Fn(usize) -> usize| {
            let count = (b * qs.len()) as f64;
            (0..b).map(|bi| qs.clone().map(|q| at(bi, hi, q, key(q))).sum::<f64>()).sum::<f64>() / count
        };
        for hi in 0..h {
            let row = [
                mean(hi, 1..2 * n, &|q| q - 1),
                mean(hi, n..2 * n, &|q| q - n),
                mean(hi, n..2 * n, &|q| q - n + 1),
                mean(hi, 1..2 * n, &|_| 0),
            ];
            for (t, s) in tables.iter_mut().zip(row) {
                if t.len() <= l {
                    t.push(Vec::new());
                }
                t[l].push(s);
            }
        }
    }
    let [prev_token, duplicate, induction, first_token] = tables;
    Ok(HeadScores { n, batch: 0, seed: 0, prev_token, duplicate, induction, first_token, loss_first_half: None, loss_second_half: None })
}

/// Run `model` on repeated random tokens and score every head of every layer.
pub fn head_scores(model: &dyn LanguageModel, vocab: usize, n: usize, batch: usize, seed: u64, device: &Device) -> Result<HeadScores> {
    if vocab < 2 || batch == 0 {
        candle_core::bail!("head scores need a vocabulary of ≥ 2 ids and a batch ≥ 1 (got {vocab}, {batch})");
    }
    let seqs = repeated_tokens(vocab, n, batch, seed);
    let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
    let ids = Tensor::from_vec(flat, (batch, 2 * n), device)?;
    let layers = model.n_layers();
    let mut hooks = Hooks::capture((0..layers).map(HookPoint::AttnPattern));
    let logits = model.forward(&ids, &mut hooks)?;
    let patterns: Vec<Tensor> = (0..layers)
        .map(|l| hooks.cache.get(&HookPoint::AttnPattern(l)).cloned().ok_or_else(|| candle_core::Error::Msg(format!("the model recorded no attention pattern in layer {l}"))))
        .collect::<Result<_>>()?;
    let mut s = scores_from_patterns(&patterns, n)?;
    // Next-token loss per position: logits at t predict token t + 1.
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, 2)?;
    let lp: Vec<f32> = logp.flatten_all()?.to_vec1()?;
    let v = logp.dim(2)?;
    let nll = |bi: usize, t: usize| -(lp[(bi * 2 * n + t) * v + seqs[bi][t + 1] as usize] as f64);
    let half = |range: std::ops::Range<usize>| (0..batch).map(|bi| range.clone().map(|t| nll(bi, t)).sum::<f64>()).sum::<f64>() / (batch * range.len()) as f64;
    s.loss_first_half = Some(half(0..n - 1));
    s.loss_second_half = Some(half(n..2 * n - 1));
    s.batch = batch;
    s.seed = seed;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_tokens_repeat_and_are_distinct_within_a_half() {
        let seqs = repeated_tokens(50, 20, 8, 3);
        assert_eq!(seqs.len(), 8);
        for s in &seqs {
            assert_eq!(s.len(), 40);
            assert_eq!(s[..20], s[20..]);
            let mut half = s[..20].to_vec();
            half.sort();
            half.dedup();
            assert_eq!(half.len(), 20, "{s:?}");
            assert!(s.iter().all(|&t| t < 50));
        }
        assert_eq!(seqs, repeated_tokens(50, 20, 8, 3), "seeded");
        assert_ne!(seqs, repeated_tokens(50, 20, 8, 4));
        // Fewer ids than n: with replacement, still in range.
        assert!(repeated_tokens(3, 10, 2, 0).iter().all(|s| s.len() == 20 && s.iter().all(|&t| t < 3)));
    }

    /// A causal pattern putting all weight on `key(q)` (clamped to the causal range).
    fn pattern(n: usize, key: impl Fn(usize) -> usize) -> Tensor {
        let t = 2 * n;
        let mut p = vec![0f32; t * t];
        for q in 0..t {
            p[q * t + key(q).min(q)] = 1.0;
        }
        Tensor::from_vec(p, (1, 1, t, t), &Device::Cpu).unwrap()
    }

    #[test]
    fn hand_made_heads_get_their_scores() -> Result<()> {
        let n = 5;
        let prev = pattern(n, |q| q.saturating_sub(1));
        let induction = pattern(n, |q| if q >= n { q - n + 1 } else { 0 });
        let dup = pattern(n, |q| if q >= n { q - n } else { q });
        let sink = pattern(n, |_| 0);
        let heads = Tensor::cat(&[&prev, &induction, &dup, &sink], 1)?;
        let s = scores_from_patterns(&[heads], n)?;
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        // Queries 1 … 9: the induction and sink heads hit q − 1 only at q = 1.
        assert!(close(&s.prev_token[0], &[1.0, 1.0 / 9.0, 0.0, 1.0 / 9.0]), "{:?}", s.prev_token);
        // Induction head: every second-half query on q − n + 1; its first-half queries sit on token 0.
        assert_eq!(s.induction[0], vec![0.0, 1.0, 0.0, 0.0]);
        // The sink head's query n looks at token 0 = n − n.
        assert_eq!(s.duplicate[0], vec![0.0, 0.0, 1.0, 0.2]);
        assert_eq!(s.first_token[0][3], 1.0);
        assert!((s.first_token[0][1] - 4.0 / 9.0).abs() < 1e-12, "{:?}", s.first_token);
        assert_eq!(HeadScores::best(&s.induction), Some((0, 1, 1.0)));
        assert!(scores_from_patterns(&[prev], 4).is_err(), "wrong n");
        Ok(())
    }
}
