//! Toy associative-memory checks of the noisy-recall theory (arXiv 2406.03068, "why the FFN, not
//! attention, stores the noise"; spec §8.1–8.3, claim C8). Owns two self-contained experiments in
//! plain f64 linear algebra (SVD via `faer`):
//! - [`one_step_gradient_check`]: one SGD step from zero in the simplified model
//!   ξ = W_U(W_F e_q + W_V x̄) on sampler contexts; FFN-route vs value-route τ margins.
//! - [`linear_assoc_memory`] + [`analyse_assoc_memory`]: a d×d memory W trained on key e_i →
//!   σ(i) (prob 1−α) or τ (prob α); the generic association shows up as the top singular triplet.

use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::noisy_recall::{NoisyRecallConfig, NoisyRecallSampler};

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    dot(a, b) / (norm(a) * norm(b))
}

/// `y = W x` for row-major `W` (`y.len()` × `x.len()`).
fn matvec(w: &[f64], x: &[f64], y: &mut [f64]) {
    let d = x.len();
    for (r, yr) in y.iter_mut().enumerate() {
        *yr = dot(&w[r * d..(r + 1) * d], x);
    }
}

/// Rows of i.i.d. N(0,1) entries (token embeddings e, spec §3.1).
fn normal_rows(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f64> {
    let nd = Normal::new(0.0, 1.0).expect("valid normal");
    (0..n * d).map(|_| nd.sample(rng)).collect()
}

/// Rows of i.i.d. U(−1/√d, 1/√d) entries (unembedding u, spec §3.1).
fn uniform_rows(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f64> {
    let b = 1.0 / (d as f64).sqrt();
    (0..n * d).map(|_| rng.random_range(-b..b)).collect()
}

fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, v.sqrt())
}

/// Settings of [`one_step_gradient_check`] (spec §8.3).
#[derive(Debug, Clone)]
pub struct GradCheckConfig {
    /// Model width d. Default 64.
    pub d: usize,
    /// Sequences per batch n (one scored trigger position each). Default 64.
    pub batch: usize,
    /// Number of independent batches. Default 100.
    pub n_batches: usize,
    /// Data config (vocabulary 65, trigger, τ, α, T). Default: spec defaults (T = 64, α = 0.5).
    pub data: NoisyRecallConfig,
    /// SGD step size η (margins are linear in η). Default 1.0.
    pub lr: f64,
    /// Seed of embeddings and data. Default 0.
    pub seed: u64,
}

impl Default for GradCheckConfig {
    fn default() -> Self {
        GradCheckConfig {
            d: 64,
            batch: 64,
            n_batches: 100,
            data: NoisyRecallConfig::default(),
            lr: 1.0,
            seed: 0,
        }
    }
}

/// Result of [`one_step_gradient_check`].
#[derive(Debug, Clone)]
pub struct GradCheckReport {
    /// Mean τ margin ξ_τ − mean_{k≠τ} ξ_k of the FFN route (W_F only) over batches.
    pub mean_ffn_margin: f64,
    /// Mean τ margin of the value route (W_V only) over batches.
    pub mean_value_margin: f64,
    /// `mean_ffn_margin / mean_value_margin` (spec: ≥ 5, derivation ≈ 10–18).
    pub ratio: f64,
    /// Coefficient of variation (std/|mean|) of the FFN margin over batches.
    pub cv_ffn: f64,
    /// Coefficient of variation of the value margin over batches.
    pub cv_value: f64,
    /// ‖mean_batches ∇W_F − (−α(u_τ − ū)e_qᵀ)‖_F / ‖α(u_τ − ū)e_qᵀ‖_F (spec: < 0.1).
    pub ffn_grad_rel_err: f64,
    /// Predicted FFN margin η α ‖e_q‖² m·(u_τ − ū), m = u_τ − mean_{k≠τ} u_k.
    pub ffn_margin_theory: f64,
    /// Σ_k π_u(k)² + 1/t̄ (t̄: mean 1-based scored position); the derivation predicts `ratio` ≈ 1 / this.
    pub value_overlap_theory: f64,
}

/// Draw one context with a scored (counter ≥ 2) trigger position: returns (x̄ = mean embedding of
/// x_1..x_t, target y_t, t (1-based)).
fn scored_context(
    s: &NoisyRecallSampler,
    e: &[f64],
    d: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<f64>, u32, usize) {
    loop {
        let b = s.sample(1, rng);
        let pos: Vec<usize> = (0..b.seq_len)
            .filter(|&t| b.scored[t] > 0.0 && b.counter[t] >= 2)
            .collect();
        if pos.is_empty() {
            continue;
        }
        let t = pos[rng.random_range(0..pos.len())];
        let mut xbar = vec![0.0; d];
        for &tok in &b.inputs[..=t] {
            let row = &e[tok as usize * d..(tok as usize + 1) * d];
            xbar.iter_mut().zip(row).for_each(|(a, r)| *a += r);
        }
        xbar.iter_mut().for_each(|a| *a /= (t + 1) as f64);
        return (xbar, b.targets[t], t + 1);
    }
}

/// One-step gradient check of spec §8.2/§8.3 in the simplified model ξ = U(W_F e_q + W_V x̄),
/// U rows u_k ~ U(±1/√d), e rows ~ N(0,1), frozen; W_F = W_V = 0 (uniform p). For each batch of n
/// contexts (one scored trigger position each), take one SGD step on the mean cross-entropy and
/// measure the τ margin at a fresh trigger position with a fresh context, per route.
///
/// Panics if `cfg.data` is invalid or uses more than one trigger.
pub fn one_step_gradient_check(cfg: &GradCheckConfig) -> GradCheckReport {
    let sampler = NoisyRecallSampler::new(&cfg.data).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        cfg.data.n_triggers, 1,
        "one_step_gradient_check uses a single trigger"
    );
    let (d, nv) = (cfg.d, super::char_stats::VOCAB_SIZE);
    let (q, tau, alpha) = (
        cfg.data.trigger as usize,
        cfg.data.noise_token as usize,
        cfg.data.alpha,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let e = normal_rows(&mut rng, nv, d);
    let u = uniform_rows(&mut rng, nv, d);
    let mut data_rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(0x5EED));
    let ubar: Vec<f64> = (0..d)
        .map(|j| (0..nv).map(|k| u[k * d + j]).sum::<f64>() / nv as f64)
        .collect();
    let u_tau = &u[tau * d..(tau + 1) * d];
    let e_q = &e[q * d..(q + 1) * d];
    // m = u_τ − mean_{k≠τ} u_k, so margin(ξ = U h) = m·h.
    let m: Vec<f64> = (0..d)
        .map(|j| u_tau[j] - (ubar[j] * nv as f64 - u_tau[j]) / (nv - 1) as f64)
        .collect();
    let (mut ffn_margins, mut value_margins) = (Vec::new(), Vec::new());
    let mut grad_f_sum = vec![0.0; d * d];
    let mut t_sum = 0.0;
    for _ in 0..cfg.n_batches {
        // −∇W = (1/n) Σ_i (u_{y_i} − ū) x_iᵀ with x_i = e_q (FFN) or x̄_i (value).
        let (mut gvec_f, mut w_v) = (vec![0.0; d], vec![0.0; d * d]);
        for _ in 0..cfg.batch {
            let (xbar, y, t) = scored_context(&sampler, &e, d, &mut data_rng);
            t_sum += t as f64;
            let r: Vec<f64> = (0..d)
                .map(|j| (u[y as usize * d + j] - ubar[j]) / cfg.batch as f64)
                .collect();
            gvec_f.iter_mut().zip(&r).for_each(|(g, v)| *g += v);
            for a in 0..d {
                let ra = cfg.lr * r[a];
                w_v[a * d..(a + 1) * d]
                    .iter_mut()
                    .zip(&xbar)
                    .for_each(|(w, x)| *w += ra * x);
            }
        }
        for a in 0..d {
            for b in 0..d {
                grad_f_sum[a * d + b] -= gvec_f[a] * e_q[b];
            }
        }
        // W_F = η gvec_f e_qᵀ ⇒ W_F e_q = η ‖e_q‖² gvec_f.
        ffn_margins.push(cfg.lr * dot(e_q, e_q) * dot(&m, &gvec_f));
        let (xfresh, _, _) = scored_context(&sampler, &e, d, &mut data_rng);
        let mut h = vec![0.0; d];
        matvec(&w_v, &xfresh, &mut h);
        value_margins.push(dot(&m, &h));
    }
    let nb = cfg.n_batches as f64;
    let (mut num, mut den) = (0.0, 0.0);
    for a in 0..d {
        for b in 0..d {
            let expected = -alpha * (u_tau[a] - ubar[a]) * e_q[b];
            num += (grad_f_sum[a * d + b] / nb - expected).powi(2);
            den += expected.powi(2);
        }
    }
    let (mf, sf) = mean_std(&ffn_margins);
    let (mv, sv) = mean_std(&value_margins);
    let stats = super::char_stats::CharStats::tiny_shakespeare();
    let diff: Vec<f64> = u_tau.iter().zip(&ubar).map(|(a, b)| a - b).collect();
    GradCheckReport {
        mean_ffn_margin: mf,
        mean_value_margin: mv,
        ratio: mf / mv,
        cv_ffn: sf / mf.abs(),
        cv_value: sv / mv.abs(),
        ffn_grad_rel_err: (num / den).sqrt(),
        ffn_margin_theory: cfg.lr * alpha * dot(e_q, e_q) * dot(&m, &diff),
        value_overlap_theory: stats.unigram_collision() + nb * cfg.batch as f64 / t_sum,
    }
}

/// Settings of [`linear_assoc_memory`] (spec §8.3, second toy).
#[derive(Debug, Clone)]
pub struct AssocMemoryConfig {
    /// Width d (W is d×d). Default 64.
    pub d: usize,
    /// Number of keys N; outputs are N+1 tokens, τ = N. Default 32.
    pub n_keys: usize,
    /// Probability α that the target is τ instead of σ(i). Default 0.5.
    pub alpha: f64,
    /// SGD step size. Default 0.5.
    pub lr: f64,
    /// Samples (key, target) per SGD step. Default 32.
    pub batch: usize,
    /// SGD steps from W = 0. Default 2000.
    pub steps: usize,
    /// Seed of embeddings, permutation and samples. Default 0.
    pub seed: u64,
}

impl Default for AssocMemoryConfig {
    fn default() -> Self {
        AssocMemoryConfig {
            d: 64,
            n_keys: 32,
            alpha: 0.5,
            lr: 0.5,
            batch: 32,
            steps: 2000,
            seed: 0,
        }
    }
}

/// A trained linear associative memory and its frozen embeddings.
#[derive(Debug, Clone)]
pub struct AssocMemory {
    /// Width d.
    pub d: usize,
    /// Number of keys N (τ = N).
    pub n_keys: usize,
    /// Learned d×d matrix, row-major.
    pub w: Vec<f64>,
    /// Keys e_i, N×d row-major, N(0,1) entries.
    pub e: Vec<f64>,
    /// Output embeddings u_k, (N+1)×d row-major, U(±1/√d) entries; row N is u_τ.
    pub u: Vec<f64>,
    /// Target permutation σ of 0..N.
    pub sigma: Vec<usize>,
}

/// Recall statistics of a memory matrix, averaged over the N keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecallStats {
    /// Mean softmax probability of τ.
    pub p_noise: f64,
    /// Mean softmax probability of σ(i).
    pub p_correct: f64,
    /// Fraction of keys with argmax over all outputs = σ(i).
    pub acc: f64,
    /// Fraction of keys with argmax over the non-τ outputs = σ(i) (recall ignoring τ).
    pub acc_excl_noise: f64,
}

impl AssocMemory {
    /// Recall statistics of an arbitrary d×d matrix `w` with this memory's embeddings.
    pub fn recall_stats(&self, w: &[f64]) -> RecallStats {
        let (d, n) = (self.d, self.n_keys);
        let (mut h, mut z) = (vec![0.0; d], vec![0.0; n + 1]);
        let mut s = RecallStats {
            p_noise: 0.0,
            p_correct: 0.0,
            acc: 0.0,
            acc_excl_noise: 0.0,
        };
        for i in 0..n {
            matvec(w, &self.e[i * d..(i + 1) * d], &mut h);
            matvec(&self.u, &h, &mut z);
            let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let zs: f64 = z.iter().map(|v| (v - mx).exp()).sum();
            let p = |k: usize| (z[k] - mx).exp() / zs;
            s.p_noise += p(n);
            s.p_correct += p(self.sigma[i]);
            let argmax = |upto: usize| (0..upto).fold(0, |b, k| if z[k] > z[b] { k } else { b });
            s.acc += (argmax(n + 1) == self.sigma[i]) as u8 as f64;
            s.acc_excl_noise += (argmax(n) == self.sigma[i]) as u8 as f64;
        }
        let nf = n as f64;
        RecallStats {
            p_noise: s.p_noise / nf,
            p_correct: s.p_correct / nf,
            acc: s.acc / nf,
            acc_excl_noise: s.acc_excl_noise / nf,
        }
    }
}

/// Train W (d×d, from 0) by minibatch SGD on cross-entropy of ξ = U W e_i, target σ(i) w.p. 1−α
/// and τ w.p. α (spec §8.3). Keys are drawn uniformly.
pub fn linear_assoc_memory(cfg: &AssocMemoryConfig) -> AssocMemory {
    let (d, n) = (cfg.d, cfg.n_keys);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let e = normal_rows(&mut rng, n, d);
    let u = uniform_rows(&mut rng, n + 1, d);
    let mut sigma: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        sigma.swap(i, rng.random_range(0..=i));
    }
    let mut w = vec![0.0; d * d];
    let (mut grad, mut h, mut z, mut g) = (
        vec![0.0; d * d],
        vec![0.0; d],
        vec![0.0; n + 1],
        vec![0.0; d],
    );
    for _ in 0..cfg.steps {
        grad.iter_mut().for_each(|x| *x = 0.0);
        for _ in 0..cfg.batch {
            let i = rng.random_range(0..n);
            let y = if rng.random::<f64>() < cfg.alpha {
                n
            } else {
                sigma[i]
            };
            let ei = &e[i * d..(i + 1) * d];
            matvec(&w, ei, &mut h);
            matvec(&u, &h, &mut z);
            let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            z.iter_mut().for_each(|v| *v = (*v - mx).exp());
            let zs: f64 = z.iter().sum();
            // g = Σ_k (p_k − 1{k=y}) u_k; ∇W += g e_iᵀ
            g.iter_mut().for_each(|x| *x = 0.0);
            for k in 0..=n {
                let c = z[k] / zs - (k == y) as u8 as f64;
                g.iter_mut()
                    .zip(&u[k * d..(k + 1) * d])
                    .for_each(|(a, b)| *a += c * b);
            }
            for a in 0..d {
                grad[a * d..(a + 1) * d]
                    .iter_mut()
                    .zip(ei)
                    .for_each(|(x, b)| *x += g[a] * b);
            }
        }
        let step = cfg.lr / cfg.batch as f64;
        w.iter_mut().zip(&grad).for_each(|(x, gr)| *x -= step * gr);
    }
    AssocMemory {
        d,
        n_keys: n,
        w,
        e,
        u,
        sigma,
    }
}

/// Spectral analysis of a trained memory (spec §8.3).
#[derive(Debug, Clone)]
pub struct AssocMemoryReport {
    /// Singular values of W, descending.
    pub singular_values: Vec<f64>,
    /// cos(top left singular vector, u_τ), sign fixed so that this is ≥ 0.
    pub top_left_cos_u_tau: f64,
    /// cos(top right singular vector, Σ_i e_i) with the same sign convention (≈ 0.8 at the defaults:
    /// training moves it from Σe_i toward the dual direction of the non-orthogonal keys).
    pub top_right_cos_sum_e: f64,
    /// max_{r ≥ 2} |cos(left singular vector r, u_τ)|.
    pub max_other_left_cos_u_tau: f64,
    /// Recall statistics of W itself.
    pub full: RecallStats,
    /// W with the top singular triplet removed.
    pub top_removed: RecallStats,
    /// (k, stats) for W truncated to its top-k triplets (LASER-style), for each requested k.
    pub top_k_kept: Vec<(usize, RecallStats)>,
}

/// Rebuild Σ_{r ∈ keep} s_r a_r b_rᵀ (row-major d×d) from a thin SVD.
fn rebuild(
    svd: &faer::linalg::solvers::Svd<f64>,
    keep: impl Iterator<Item = usize>,
    d: usize,
) -> Vec<f64> {
    let (uu, vv, s) = (svd.U(), svd.V(), svd.S().column_vector());
    let mut w = vec![0.0; d * d];
    for r in keep {
        for a in 0..d {
            let c = s[r] * uu[(a, r)];
            for b in 0..d {
                w[a * d + b] += c * vv[(b, r)];
            }
        }
    }
    w
}

/// SVD of `mem.w` (faer, exact), cosines of the top triplet with u_τ and Σe_i, and recall after
/// removing the top component or keeping only the top-k (`ks`) components.
pub fn analyse_assoc_memory(mem: &AssocMemory, ks: &[usize]) -> AssocMemoryReport {
    let d = mem.d;
    let m = Mat::<f64>::from_fn(d, d, |i, j| mem.w[i * d + j]);
    let svd = m.thin_svd().expect("SVD converges");
    let s = svd.S().column_vector();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let col =
        |mat: faer::MatRef<'_, f64>, r: usize| (0..d).map(|i| mat[(i, r)]).collect::<Vec<f64>>();
    let u_tau = &mem.u[mem.n_keys * d..(mem.n_keys + 1) * d];
    let sum_e: Vec<f64> = (0..d)
        .map(|j| (0..mem.n_keys).map(|i| mem.e[i * d + j]).sum())
        .collect();
    let top = order[0];
    let c_left = cosine(&col(svd.U(), top), u_tau);
    let sign = if c_left < 0.0 { -1.0 } else { 1.0 };
    let max_other = order[1..]
        .iter()
        .map(|&r| cosine(&col(svd.U(), r), u_tau).abs())
        .fold(0.0, f64::max);
    AssocMemoryReport {
        singular_values: order.iter().map(|&r| s[r]).collect(),
        top_left_cos_u_tau: sign * c_left,
        top_right_cos_sum_e: sign * cosine(&col(svd.V(), top), &sum_e),
        max_other_left_cos_u_tau: max_other,
        full: mem.recall_stats(&mem.w),
        top_removed: mem.recall_stats(&rebuild(&svd, order[1..].iter().copied(), d)),
        top_k_kept: ks
            .iter()
            .map(|&k| {
                (
                    k,
                    mem.recall_stats(&rebuild(&svd, order[..k.min(d)].iter().copied(), d)),
                )
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "assoc_memory_tests.rs"]
mod tests;
