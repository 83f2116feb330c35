//! Scoring a trained model on the test split (spec §7): exact match with its
//! own z, with the rule-centroid z, and with a swapped z; token accuracy;
//! latent-cluster metrics of μ; and the encoder analyses of §8.1 (per-example
//! gradient separation of FFN vs attention, sublayer-write silhouettes).
//!
//! Exact match is computed teacher-forced: greedy decoding reproduces a target
//! exactly iff the argmax at every scored position (conclusion tokens and
//! `[EOS]`) equals the target token given the target prefix, so one forward
//! pass per example replaces up to 24 decoding steps with identical results.

use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::config::Variant;
use super::task::{dec_seq, forward, Batch, Encoded};
use crate::data::rules::RuleExample;
use crate::data::rules_vocab::RuleVocab;
use crate::interp::hooks::{HookPoint, Hooks};
use crate::interp::latent::{self, Metric};
use crate::models::LanguageVae;

const CHUNK: usize = 128;

/// One `f64` row per example.
type Rows = Vec<Vec<f64>>;

/// Everything measured for one trained model (NaN = not applicable).
#[derive(Debug, Clone, Serialize)]
pub struct VariantEval {
    pub em_post: f64,
    pub tok_acc: f64,
    /// Mean over (test premise, rule π) of exact match with π(x) under z = m_π.
    pub em_centroid: f64,
    pub swap_success: f64,
    pub swap_leak: f64,
    pub silhouette: f64,
    pub silhouette_cos: f64,
    pub kmeans_nmi: f64,
    pub kmeans_ari: f64,
    pub knn_acc: f64,
    pub probe_acc: f64,
    pub between_within: f64,
    pub active_units: f64,
    pub kl_total: f64,
    pub kl_dims: Vec<f64>,
    /// 2-D PCA of the test μ and its rule labels.
    pub pca: Vec<[f64; 2]>,
    pub labels: Vec<usize>,
    /// §8.1.1: sep(ATTN(ℓ)) and sep(FFN(ℓ)) per encoder layer.
    pub grad_sep_attn: Vec<f64>,
    pub grad_sep_ffn: Vec<f64>,
    /// §8.1.2: silhouette of the mean-pooled attention / FFN writes per encoder layer.
    pub write_sil_attn: Vec<f64>,
    pub write_sil_ffn: Vec<f64>,
}

fn to_f64(rows: Vec<Vec<f32>>) -> Vec<Vec<f64>> {
    rows.into_iter().map(|r| r.into_iter().map(f64::from).collect()).collect()
}

/// μ and log σ² of `items` (chunked), as rows.
pub fn posterior_rows(model: &LanguageVae, items: &[&Encoded]) -> Result<(Rows, Rows)> {
    let (mut mu, mut lv) = (Vec::new(), Vec::new());
    for chunk in items.chunks(CHUNK) {
        let b = Batch::new(chunk, model.params().device())?;
        let ids = b.enc_ids.as_ref().expect("VAE batches have encoder input");
        let post = model.encode(ids, &b.enc_lengths, &mut Hooks::none())?;
        mu.extend(to_f64(post.mu.to_vec2()?));
        lv.extend(to_f64(post.logvar.to_vec2()?));
    }
    Ok((mu, lv))
}

/// Teacher-forced check of decoder rows `(dec, first_c)` under latent rows
/// `z` (one per row; None without a latent): (exact match, correct tokens, scored tokens).
fn tf_check(model: &LanguageVae, rows: &[(Vec<u32>, usize)], z: Option<&[Vec<f64>]>) -> Result<Vec<(bool, usize, usize)>> {
    let device = model.params().device().clone();
    let mut out = Vec::with_capacity(rows.len());
    for (c, chunk) in rows.chunks(CHUNK).enumerate() {
        let enc: Vec<Encoded> = chunk.iter().map(|(d, f)| Encoded { enc: vec![], dec: d.clone(), first_c: *f, label: 0 }).collect();
        let refs: Vec<&Encoded> = enc.iter().collect();
        let b = Batch::new(&refs, &device)?;
        let zt = match z {
            Some(z) => {
                let part = &z[c * CHUNK..c * CHUNK + chunk.len()];
                let flat: Vec<f32> = part.iter().flatten().map(|v| *v as f32).collect();
                Some(Tensor::from_vec(flat, (chunk.len(), part[0].len()), &device)?)
            }
            None => None,
        };
        let logits = model.decode(&b.dec_in, zt.as_ref(), &mut Hooks::none())?;
        let pred: Vec<Vec<u32>> = logits.argmax(2)?.to_vec2()?;
        for (r, p) in pred.iter().enumerate() {
            let (mut ok, mut n) = (0, 0);
            for (j, pj) in p.iter().enumerate() {
                if b.weights[r * b.t + j] > 0.0 {
                    n += 1;
                    ok += usize::from(*pj == b.targets[r * b.t + j]);
                }
            }
            out.push((ok == n, ok, n));
        }
    }
    Ok(out)
}

fn mean_bool(v: &[(bool, usize, usize)]) -> f64 {
    v.iter().filter(|r| r.0).count() as f64 / v.len().max(1) as f64
}

/// Score `model` (variant `v`) on `test` (with every rule's conclusion in
/// `alts`); centroids from `centroid_items`; gradient analysis on
/// `grad_per_rule` examples per rule with weight `beta` on the KL.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &LanguageVae,
    vocab: &RuleVocab,
    v: &Variant,
    test: &[RuleExample],
    alts: &[Vec<String>],
    test_enc: &[Encoded],
    centroid_items: &[Encoded],
    grad_per_rule: usize,
    beta: f64,
    seed: u64,
) -> Result<VariantEval> {
    let n_rules = v.family.rules().len();
    let labels: Vec<usize> = test_enc.iter().map(|e| e.label).collect();
    let own_rows: Vec<(Vec<u32>, usize)> = test_enc.iter().map(|e| (e.dec.clone(), e.first_c)).collect();
    let rule_tok = |r: usize| v.oracle.then(|| vocab.rule_token(r));
    let mut rows_all = Vec::new();
    for (ex, alt) in test.iter().zip(alts) {
        for (r, c) in alt.iter().enumerate() {
            rows_all.push(dec_seq(vocab, &ex.premise, c, rule_tok(r)));
        }
    }
    let nan = f64::NAN;
    let mut e = VariantEval {
        em_post: nan, tok_acc: nan, em_centroid: nan, swap_success: nan, swap_leak: nan, silhouette: nan, silhouette_cos: nan,
        kmeans_nmi: nan, kmeans_ari: nan, knn_acc: nan, probe_acc: nan, between_within: nan, active_units: nan, kl_total: nan,
        kl_dims: vec![], pca: vec![], labels: labels.clone(), grad_sep_attn: vec![], grad_sep_ffn: vec![], write_sil_attn: vec![],
        write_sil_ffn: vec![],
    };
    if !v.is_vae() {
        let own = tf_check(model, &own_rows, None)?;
        e.em_post = mean_bool(&own);
        e.tok_acc = own.iter().map(|r| r.1).sum::<usize>() as f64 / own.iter().map(|r| r.2).sum::<usize>().max(1) as f64;
        e.em_centroid = mean_bool(&tf_check(model, &rows_all, None)?);
        return Ok(e);
    }
    let refs: Vec<&Encoded> = test_enc.iter().collect();
    let (mu, lv) = posterior_rows(model, &refs)?;
    let own = tf_check(model, &own_rows, Some(&mu))?;
    e.em_post = mean_bool(&own);
    e.tok_acc = own.iter().map(|r| r.1).sum::<usize>() as f64 / own.iter().map(|r| r.2).sum::<usize>().max(1) as f64;
    // Rule centroids m_π from training examples.
    let crefs: Vec<&Encoded> = centroid_items.iter().collect();
    let (cmu, _) = posterior_rows(model, &crefs)?;
    let d = mu[0].len();
    let mut cent = vec![vec![0.0; d]; n_rules];
    let mut cnt = vec![0.0f64; n_rules];
    for (m, it) in cmu.iter().zip(centroid_items) {
        cnt[it.label] += 1.0;
        cent[it.label].iter_mut().zip(m).for_each(|(a, b)| *a += b);
    }
    for (c, n) in cent.iter_mut().zip(&cnt) {
        c.iter_mut().for_each(|x| *x /= n.max(1.0));
    }
    let zc: Vec<Vec<f64>> = (0..test.len()).flat_map(|_| cent.iter().cloned()).collect();
    e.em_centroid = mean_bool(&tf_check(model, &rows_all, Some(&zc))?);
    // Rule swap: z of a random other test example with a different rule r'.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a9);
    let (mut swap_rows, mut leak_rows, mut zs) = (Vec::new(), Vec::new(), Vec::new());
    for (i, ex) in test.iter().enumerate() {
        let mut r2 = rng.random_range(0..n_rules - 1);
        if r2 >= labels[i] {
            r2 += 1;
        }
        let donors: Vec<usize> = (0..test.len()).filter(|&j| labels[j] == r2 && test[j].premise != ex.premise).collect();
        if donors.is_empty() {
            continue;
        }
        let j = donors[rng.random_range(0..donors.len())];
        swap_rows.push(dec_seq(vocab, &ex.premise, &alts[i][r2], None));
        leak_rows.push(dec_seq(vocab, &ex.premise, &test[j].conclusion, None));
        zs.push(mu[j].clone());
    }
    e.swap_success = mean_bool(&tf_check(model, &swap_rows, Some(&zs))?);
    e.swap_leak = mean_bool(&tf_check(model, &leak_rows, Some(&zs))?);
    // Latent structure.
    e.kl_dims = latent::kl_per_dim(&mu, &lv);
    e.kl_total = e.kl_dims.iter().sum();
    e.active_units = latent::active_units(&mu, 0.01) as f64;
    e.silhouette = latent::silhouette(&mu, &labels, Metric::Euclidean);
    e.silhouette_cos = latent::silhouette(&mu, &labels, Metric::Cosine);
    let km = latent::kmeans(&mu, n_rules, 10, 100, seed);
    e.kmeans_nmi = latent::nmi(&labels, &km);
    e.kmeans_ari = latent::ari(&labels, &km);
    e.knn_acc = latent::knn_accuracy(&mu, &labels, 5);
    e.probe_acc = latent::linear_probe(&mu, &labels, 1e-3, 500, 0.5, seed);
    e.between_within = latent::between_within_ratio(&mu, &labels);
    e.pca = latent::pca_2d(&mu);
    let (ga, gf) = grad_separation(model, test_enc, n_rules, grad_per_rule, beta)?;
    e.grad_sep_attn = ga;
    e.grad_sep_ffn = gf;
    let (wa, wf) = write_silhouettes(model, test_enc)?;
    e.write_sil_attn = wa;
    e.write_sil_ffn = wf;
    Ok(e)
}

/// §8.1.1: per-example gradients of Recon + β·KL (z = μ) w.r.t. each encoder
/// layer's attention and FFN parameters; sep = mean same-rule cosine − mean
/// different-rule cosine. Returns (attention, FFN) per layer.
pub fn grad_separation(model: &LanguageVae, items: &[Encoded], n_rules: usize, per_rule: usize, beta: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    let layers = model.config().enc_layers;
    let vars = model.params().trainable();
    let group = |l: usize, part: &str| -> Vec<candle_core::Var> {
        let names = model.encoder_group(l, part);
        vars.iter().filter(|(n, _)| names.contains(n)).map(|(_, v)| v.clone()).collect()
    };
    let groups: Vec<(Vec<candle_core::Var>, Vec<candle_core::Var>)> = (0..layers).map(|l| (group(l, "attn"), group(l, "mlp"))).collect();
    let mut picked: Vec<&Encoded> = Vec::new();
    for r in 0..n_rules {
        picked.extend(items.iter().filter(|e| e.label == r).take(per_rule));
    }
    let labels: Vec<usize> = picked.iter().map(|e| e.label).collect();
    let mut grads: Vec<Vec<(Vec<f64>, Vec<f64>)>> = vec![Vec::new(); layers];
    for item in &picked {
        let b = Batch::new(&[*item], model.params().device())?;
        let parts = forward(model, &b, None, &mut Hooks::none())?;
        let kl = parts.kl_dim.as_ref().expect("VAE").sum_all()?;
        let g = (parts.recon + kl.affine(beta, 0.0)?)?.backward()?;
        let flat = |vs: &[candle_core::Var]| -> Result<Vec<f64>> {
            let mut out = Vec::new();
            for v in vs {
                match g.get(v.as_tensor()) {
                    Some(t) => out.extend(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from)),
                    None => out.extend(std::iter::repeat_n(0.0, v.elem_count())),
                }
            }
            Ok(out)
        };
        for (l, (a, f)) in groups.iter().enumerate() {
            grads[l].push((flat(a)?, flat(f)?));
        }
    }
    let mut attn = Vec::new();
    let mut ffn = Vec::new();
    for g in &grads {
        let a: Vec<Vec<f64>> = g.iter().map(|x| x.0.clone()).collect();
        let f: Vec<Vec<f64>> = g.iter().map(|x| x.1.clone()).collect();
        attn.push(if a.first().is_some_and(|v| !v.is_empty()) { latent::group_separation(&a, &labels) } else { f64::NAN });
        ffn.push(if f.first().is_some_and(|v| !v.is_empty()) { latent::group_separation(&f, &labels) } else { f64::NAN });
    }
    Ok((attn, ffn))
}

/// §8.1.2: silhouette (rule labels) of the mean-pooled attention and FFN
/// outputs (before the residual add) of each encoder layer.
pub fn write_silhouettes(model: &LanguageVae, items: &[Encoded]) -> Result<(Vec<f64>, Vec<f64>)> {
    let layers = model.config().enc_layers;
    let mut pooled: Vec<(Rows, Rows)> = vec![(Vec::new(), Vec::new()); layers];
    let device: Device = model.params().device().clone();
    for chunk in items.chunks(CHUNK) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let b = Batch::new(&refs, &device)?;
        let points = (0..layers).flat_map(|l| [HookPoint::AttnOut(l), HookPoint::MlpOut(l)]);
        let mut hooks = Hooks::capture(points);
        model.encode(b.enc_ids.as_ref().expect("VAE"), &b.enc_lengths, &mut hooks)?;
        let pool = |t: &Tensor| -> Result<Vec<Vec<f64>>> {
            let rows: Vec<Vec<Vec<f32>>> = t.to_vec3()?;
            Ok(rows
                .iter()
                .zip(&b.enc_lengths)
                .map(|(r, &len)| {
                    let d = r[0].len();
                    (0..d).map(|k| r[..len].iter().map(|p| p[k] as f64).sum::<f64>() / len as f64).collect()
                })
                .collect())
        };
        for (l, slot) in pooled.iter_mut().enumerate() {
            slot.0.extend(pool(&hooks.cache[&HookPoint::AttnOut(l)])?);
            slot.1.extend(pool(&hooks.cache[&HookPoint::MlpOut(l)])?);
        }
    }
    let labels: Vec<usize> = items.iter().map(|e| e.label).collect();
    Ok(pooled.iter().map(|(a, f)| (latent::silhouette(a, &labels, Metric::Euclidean), latent::silhouette(f, &labels, Metric::Euclidean))).unzip())
}
