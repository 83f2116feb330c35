//! Sequences, batches and the training objective of the language VAE
//! (spec §4, §6), and the `train::Task` the shared loop drives.
//!
//! Encoder: `[BOS] ([R:π]) x [SEP] c [EOS]`; decoder: `[BOS] ([R:π] for the
//! oracle) x [SEP] c [EOS]`, scored on the positions that predict c and `[EOS]`.
//! Loss = Recon + β(step)·KL_thr + α·CE_rule.

use candle_core::{Device, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::config::{FreeBits, LossConfig, Supervision, Variant};
use crate::data::rules::RuleExample;
use crate::data::rules_vocab::{RuleVocab, BOS, EOS, PAD, SEP};
use crate::interp::hooks::Hooks;
use crate::models::{LanguageVae, Posterior};
use crate::nn::{ops, Params};
use crate::train::{Metrics, Task};

/// One example as token ids.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub enc: Vec<u32>,
    pub dec: Vec<u32>,
    /// Index in `dec` of the first conclusion token.
    pub first_c: usize,
    pub label: usize,
}

/// Decoder sequence for `premise` → `conclusion` (rule token first for the oracle).
pub fn dec_seq(vocab: &RuleVocab, premise: &str, conclusion: &str, rule_token: Option<u32>) -> (Vec<u32>, usize) {
    let mut s = vec![BOS];
    s.extend(rule_token);
    s.extend(vocab.encode(premise));
    s.push(SEP);
    let first_c = s.len();
    s.extend(vocab.encode(conclusion));
    s.push(EOS);
    (s, first_c)
}

/// Encode `ex` for variant `v`.
pub fn encode(vocab: &RuleVocab, v: &Variant, ex: &RuleExample) -> Encoded {
    let label = ex.label();
    let rule = vocab.rule_token(label);
    let (mut enc, _) = dec_seq(vocab, &ex.premise, &ex.conclusion, v.supervision.token().then_some(rule));
    if !v.is_vae() {
        enc.clear();
    }
    let (dec, first_c) = dec_seq(vocab, &ex.premise, &ex.conclusion, v.oracle.then_some(rule));
    Encoded { enc, dec, first_c, label }
}

/// A padded batch.
pub struct Batch {
    pub enc_ids: Option<Tensor>,
    pub enc_lengths: Vec<usize>,
    /// Decoder inputs `dec[..n-1]`, right-padded: `(batch, t)`.
    pub dec_in: Tensor,
    /// Targets `dec[1..]` flat `(batch·t)` and loss weights.
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
    pub labels: Vec<usize>,
    pub t: usize,
}

impl Batch {
    pub fn new(items: &[&Encoded], device: &Device) -> Result<Self> {
        let b = items.len();
        let te = items.iter().map(|e| e.enc.len()).max().unwrap_or(0);
        let enc_ids = if te > 0 {
            let mut ids = vec![PAD; b * te];
            for (r, e) in items.iter().enumerate() {
                ids[r * te..r * te + e.enc.len()].copy_from_slice(&e.enc);
            }
            Some(Tensor::from_vec(ids, (b, te), device)?)
        } else {
            None
        };
        let t = items.iter().map(|e| e.dec.len() - 1).max().unwrap_or(1);
        let mut inp = vec![PAD; b * t];
        let mut targets = vec![PAD; b * t];
        let mut weights = vec![0f32; b * t];
        for (r, e) in items.iter().enumerate() {
            let n = e.dec.len() - 1;
            inp[r * t..r * t + n].copy_from_slice(&e.dec[..n]);
            targets[r * t..r * t + n].copy_from_slice(&e.dec[1..]);
            for j in 0..n {
                if j + 1 >= e.first_c {
                    weights[r * t + j] = 1.0;
                }
            }
        }
        Ok(Self {
            enc_ids,
            enc_lengths: items.iter().map(|e| e.enc.len()).collect(),
            dec_in: Tensor::from_vec(inp, (b, t), device)?,
            targets,
            weights,
            labels: items.iter().map(|e| e.label).collect(),
            t,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Forward pieces of one batch.
pub struct Parts {
    /// Σ over scored positions of −log p, averaged over the batch.
    pub recon: Tensor,
    /// Batch-averaged KL per latent dimension `(latent_dim,)` (None without a latent).
    pub kl_dim: Option<Tensor>,
    pub post: Option<Posterior>,
    pub logits: Tensor,
}

/// Encode, sample z (`noise` = ε rows; None = z = μ), decode.
pub fn forward(model: &LanguageVae, b: &Batch, noise: Option<&Tensor>, enc_hooks: &mut Hooks) -> Result<Parts> {
    let device = model.params().device();
    let (post, z) = match &b.enc_ids {
        Some(ids) => {
            let post = model.encode(ids, &b.enc_lengths, enc_hooks)?;
            let z = match noise {
                Some(eps) => (&post.mu + (post.logvar.affine(0.5, 0.0)?.exp()? * eps)?)?,
                None => post.mu.clone(),
            };
            (Some(post), Some(z))
        }
        None => (None, None),
    };
    let logits = model.decode(&b.dec_in, z.as_ref(), &mut Hooks::none())?;
    let v = logits.dim(2)?;
    let targets = Tensor::from_slice(&b.targets, b.targets.len(), device)?;
    let weights = Tensor::from_slice(&b.weights, b.weights.len(), device)?;
    let mean_ce = ops::cross_entropy(&logits.reshape((b.len() * b.t, v))?, &targets, Some(&weights))?;
    let per_example = b.weights.iter().map(|w| *w as f64).sum::<f64>() / b.len() as f64;
    let recon = mean_ce.affine(per_example, 0.0)?;
    let kl_dim = match &post {
        Some(p) => {
            let kl = ((p.mu.sqr()? + p.logvar.exp()?)? - &p.logvar)?.affine(0.5, -0.5)?; // (b, D)
            Some(kl.mean(0)?)
        }
        None => None,
    };
    Ok(Parts { recon, kl_dim, post, logits })
}

/// The thresholded KL term and the plain total KL value.
pub fn kl_term(kl_dim: &Tensor, cfg: &LossConfig) -> Result<(Tensor, f64)> {
    let vals: Vec<f32> = kl_dim.to_vec1()?;
    let total: f64 = vals.iter().map(|v| *v as f64).sum();
    let term = match cfg.free_bits {
        FreeBits::None => kl_dim.sum_all()?,
        FreeBits::PerDim => {
            let mask: Vec<f32> = vals.iter().map(|v| f32::from(u8::from(*v as f64 > cfg.lambda))).collect();
            (kl_dim * Tensor::from_vec(mask, vals.len(), kl_dim.device())?)?.sum_all()?
        }
        FreeBits::Total => kl_dim.sum_all()?.affine(if total > cfg.lambda { 1.0 } else { 0.0 }, 0.0)?,
    };
    Ok((term, total))
}

/// Standard-normal noise `(rows, dim)` from the data RNG.
pub fn noise(rows: usize, dim: usize, rng: &mut ChaCha8Rng, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..rows * dim).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(v, (rows, dim), device)
}

/// The language-VAE training task.
pub struct VaeTask {
    pub model: LanguageVae,
    pub variant: Variant,
    pub train: Vec<Encoded>,
    pub monitor: Vec<Encoded>,
    pub batch_size: usize,
    pub loss: LossConfig,
    pub steps: u64,
}

impl VaeTask {
    fn supervision(&self) -> Supervision {
        self.variant.supervision
    }
}

impl Task for VaeTask {
    fn params(&self) -> &Params {
        self.model.params()
    }

    fn train_loss(&mut self, step: u64, rng: &mut ChaCha8Rng) -> Result<(Tensor, Metrics)> {
        let items: Vec<&Encoded> = (0..self.batch_size).map(|_| &self.train[rng.random_range(0..self.train.len())]).collect();
        let device = self.model.params().device().clone();
        let b = Batch::new(&items, &device)?;
        let eps = match b.enc_ids {
            Some(_) => Some(noise(b.len(), self.model.config().latent_dim, rng, &device)?),
            None => None,
        };
        let parts = forward(&self.model, &b, eps.as_ref(), &mut Hooks::none())?;
        let mut m = Metrics::new();
        let mut loss = parts.recon.clone();
        m.insert("recon".into(), parts.recon.to_scalar::<f32>()? as f64);
        if let (Some(kl_dim), Some(post)) = (&parts.kl_dim, &parts.post) {
            let beta = self.loss.beta(step, self.steps);
            let (term, total) = kl_term(kl_dim, &self.loss)?;
            loss = (loss + term.affine(beta, 0.0)?)?;
            m.insert("beta".into(), beta);
            m.insert("kl".into(), total);
            if self.supervision().classifier() {
                if let Some(logits) = self.model.classify(&post.mu)? {
                    let labels: Vec<u32> = b.labels.iter().map(|l| *l as u32).collect();
                    let t = Tensor::from_vec(labels, b.len(), &device)?;
                    let ce = ops::cross_entropy(&logits, &t, None)?;
                    m.insert("rule_ce".into(), ce.to_scalar::<f32>()? as f64);
                    loss = (loss + ce.affine(self.loss.alpha, 0.0)?)?;
                }
            }
        }
        Ok((loss, m))
    }

    fn evaluate(&mut self, _step: u64) -> Result<Metrics> {
        let device = self.model.params().device().clone();
        let items: Vec<&Encoded> = self.monitor.iter().collect();
        let b = Batch::new(&items, &device)?;
        let parts = forward(&self.model, &b, None, &mut Hooks::none())?;
        let mut m = Metrics::new();
        m.insert("val_recon".into(), parts.recon.to_scalar::<f32>()? as f64);
        if let Some(kl) = &parts.kl_dim {
            let v: Vec<f32> = kl.to_vec1()?;
            m.insert("val_kl".into(), v.iter().map(|x| *x as f64).sum());
            for (i, x) in v.iter().enumerate() {
                m.insert(format!("val_kl_{i:02}"), *x as f64);
            }
            if let Some(post) = &parts.post {
                let mu: Vec<Vec<f32>> = post.mu.to_vec2()?;
                let mu: Vec<Vec<f64>> = mu.into_iter().map(|r| r.into_iter().map(f64::from).collect()).collect();
                m.insert("val_active_units".into(), crate::interp::latent::active_units(&mu, 0.01) as f64);
            }
        }
        Ok(m)
    }
}
