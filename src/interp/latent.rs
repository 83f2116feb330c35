//! Latent-space and VAE-health metrics (spec §7 of the reasoning-rules study,
//! arXiv 2506.19418), on plain `f64` rows so any model's codes can be scored:
//! per-dimension KL and active units, silhouette, seeded k-means with ARI and
//! NMI, k-NN and linear-probe accuracy, between/within ratio, PCA to 2-D, and
//! the same-vs-different-label cosine separation of vectors (gradients).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Distance used by `silhouette`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Euclidean,
    /// 1 − cos(a, b).
    Cosine,
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// cos(a, b); 0 when either vector is zero.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let d = norm(a) * norm(b);
    if d == 0.0 { 0.0 } else { a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / d }
}

fn dist(m: Metric, a: &[f64], b: &[f64]) -> f64 {
    match m {
        Metric::Euclidean => sq_dist(a, b).sqrt(),
        Metric::Cosine => 1.0 - cosine(a, b),
    }
}

/// KL(N(μ, σ²) ‖ N(0, 1)) per dimension, averaged over rows:
/// KL_i = ½(μ_i² + σ_i² − log σ_i² − 1).
pub fn kl_per_dim(mu: &[Vec<f64>], logvar: &[Vec<f64>]) -> Vec<f64> {
    let d = mu.first().map_or(0, Vec::len);
    let n = mu.len().max(1) as f64;
    (0..d)
        .map(|i| mu.iter().zip(logvar).map(|(m, lv)| 0.5 * (m[i] * m[i] + lv[i].exp() - lv[i] - 1.0)).sum::<f64>() / n)
        .collect()
}

/// Variance over rows of each column (population variance).
pub fn column_variance(x: &[Vec<f64>]) -> Vec<f64> {
    let d = x.first().map_or(0, Vec::len);
    let n = x.len().max(1) as f64;
    (0..d)
        .map(|i| {
            let mean = x.iter().map(|r| r[i]).sum::<f64>() / n;
            x.iter().map(|r| (r[i] - mean).powi(2)).sum::<f64>() / n
        })
        .collect()
}

/// Active units: dimensions whose μ varies across examples by more than `threshold` (0.01 in the spec).
pub fn active_units(mu: &[Vec<f64>], threshold: f64) -> usize {
    column_variance(mu).iter().filter(|v| **v > threshold).count()
}

/// Mean silhouette s = (b − a)/max(a, b) over points (0 for singleton clusters).
pub fn silhouette(x: &[Vec<f64>], labels: &[usize], metric: Metric) -> f64 {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    if k < 2 || x.len() < 2 {
        return f64::NAN;
    }
    let mut total = 0.0;
    for (i, xi) in x.iter().enumerate() {
        let mut sum = vec![0.0; k];
        let mut cnt = vec![0usize; k];
        for (j, xj) in x.iter().enumerate() {
            if i != j {
                sum[labels[j]] += dist(metric, xi, xj);
                cnt[labels[j]] += 1;
            }
        }
        let own = labels[i];
        if cnt[own] == 0 {
            continue;
        }
        let a = sum[own] / cnt[own] as f64;
        let b = (0..k).filter(|&c| c != own && cnt[c] > 0).map(|c| sum[c] / cnt[c] as f64).fold(f64::INFINITY, f64::min);
        if b.is_finite() && a.max(b) > 0.0 {
            total += (b - a) / a.max(b);
        }
    }
    total / x.len() as f64
}

/// Seeded k-means (k-means++ init, `restarts` runs of ≤ `iters` Lloyd steps);
/// the assignment with the lowest inertia.
pub fn kmeans(x: &[Vec<f64>], k: usize, restarts: usize, iters: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut best = (f64::INFINITY, vec![0; x.len()]);
    if x.is_empty() || k == 0 {
        return best.1;
    }
    for _ in 0..restarts.max(1) {
        let mut centres = vec![x[rng.random_range(0..x.len())].clone()];
        while centres.len() < k {
            let d2: Vec<f64> = x.iter().map(|p| centres.iter().map(|c| sq_dist(p, c)).fold(f64::INFINITY, f64::min)).collect();
            let total: f64 = d2.iter().sum();
            let pick = if total > 0.0 {
                let mut r = rng.random::<f64>() * total;
                d2.iter().position(|d| {
                    r -= d;
                    r <= 0.0
                })
                .unwrap_or(x.len() - 1)
            } else {
                rng.random_range(0..x.len())
            };
            centres.push(x[pick].clone());
        }
        let mut assign = vec![0; x.len()];
        for it in 0..iters.max(1) {
            let mut changed = false;
            for (i, p) in x.iter().enumerate() {
                let c = (0..k).min_by(|&a, &b| sq_dist(p, &centres[a]).total_cmp(&sq_dist(p, &centres[b]))).expect("k > 0");
                changed |= c != assign[i];
                assign[i] = c;
            }
            if !changed && it > 0 {
                break;
            }
            for (c, centre) in centres.iter_mut().enumerate() {
                let members: Vec<&Vec<f64>> = x.iter().zip(&assign).filter(|(_, a)| **a == c).map(|(p, _)| p).collect();
                if !members.is_empty() {
                    for (d, v) in centre.iter_mut().enumerate() {
                        *v = members.iter().map(|m| m[d]).sum::<f64>() / members.len() as f64;
                    }
                }
            }
        }
        let inertia: f64 = x.iter().zip(&assign).map(|(p, &c)| sq_dist(p, &centres[c])).sum();
        if inertia < best.0 {
            best = (inertia, assign);
        }
    }
    best.1
}

fn contingency(a: &[usize], b: &[usize]) -> Vec<Vec<f64>> {
    let ka = a.iter().max().map_or(0, |m| m + 1);
    let kb = b.iter().max().map_or(0, |m| m + 1);
    let mut t = vec![vec![0.0; kb]; ka];
    for (&i, &j) in a.iter().zip(b) {
        t[i][j] += 1.0;
    }
    t
}

/// Adjusted Rand index of two labelings (Hubert & Arabie).
pub fn ari(a: &[usize], b: &[usize]) -> f64 {
    let t = contingency(a, b);
    let c2 = |n: f64| n * (n - 1.0) / 2.0;
    let n = a.len() as f64;
    let sum_ij: f64 = t.iter().flatten().map(|&v| c2(v)).sum();
    let sum_a: f64 = t.iter().map(|r| c2(r.iter().sum())).sum();
    let sum_b: f64 = (0..t.first().map_or(0, Vec::len)).map(|j| c2(t.iter().map(|r| r[j]).sum())).sum();
    let expected = sum_a * sum_b / c2(n);
    let max = 0.5 * (sum_a + sum_b);
    if max == expected { 1.0 } else { (sum_ij - expected) / (max - expected) }
}

/// Normalised mutual information, arithmetic-mean normalisation (scikit-learn's default).
pub fn nmi(a: &[usize], b: &[usize]) -> f64 {
    let t = contingency(a, b);
    let n = a.len() as f64;
    let pa: Vec<f64> = t.iter().map(|r| r.iter().sum::<f64>() / n).collect();
    let pb: Vec<f64> = (0..t.first().map_or(0, Vec::len)).map(|j| t.iter().map(|r| r[j]).sum::<f64>() / n).collect();
    let h = |p: &[f64]| -p.iter().filter(|&&v| v > 0.0).map(|v| v * v.ln()).sum::<f64>();
    let mut mi = 0.0;
    for (i, row) in t.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            if c > 0.0 {
                let p = c / n;
                mi += p * (p / (pa[i] * pb[j])).ln();
            }
        }
    }
    let denom = 0.5 * (h(&pa) + h(&pb));
    if denom == 0.0 { 1.0 } else { mi / denom }
}

/// Leave-one-out k-NN accuracy (Euclidean; ties go to the lower label).
pub fn knn_accuracy(x: &[Vec<f64>], labels: &[usize], k: usize) -> f64 {
    let n_labels = labels.iter().max().map_or(0, |m| m + 1);
    let mut hits = 0;
    for (i, xi) in x.iter().enumerate() {
        let mut d: Vec<(f64, usize)> = x.iter().enumerate().filter(|(j, _)| *j != i).map(|(j, xj)| (sq_dist(xi, xj), labels[j])).collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut votes = vec![0usize; n_labels];
        for (_, l) in d.iter().take(k) {
            votes[*l] += 1;
        }
        let pred = (0..n_labels).max_by_key(|&l| (votes[l], std::cmp::Reverse(l))).unwrap_or(0);
        hits += usize::from(pred == labels[i]);
    }
    hits as f64 / x.len().max(1) as f64
}

/// Multinomial logistic regression on a seeded 80/20 split (features
/// standardised on the training part; L2 `l2`; `steps` full-batch gradient
/// steps of size `lr`); accuracy on the held-out 20 %.
pub fn linear_probe(x: &[Vec<f64>], labels: &[usize], l2: f64, steps: usize, lr: f64, seed: u64) -> f64 {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let d = x.first().map_or(0, Vec::len);
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rand::seq::SliceRandom::shuffle(idx.as_mut_slice(), &mut rng);
    let n_train = (x.len() * 4) / 5;
    let (tr, te) = idx.split_at(n_train);
    if tr.is_empty() || te.is_empty() || k < 2 {
        return f64::NAN;
    }
    let mean: Vec<f64> = (0..d).map(|j| tr.iter().map(|&i| x[i][j]).sum::<f64>() / tr.len() as f64).collect();
    let sd: Vec<f64> = (0..d)
        .map(|j| (tr.iter().map(|&i| (x[i][j] - mean[j]).powi(2)).sum::<f64>() / tr.len() as f64).sqrt().max(1e-8))
        .collect();
    let feat = |i: usize| -> Vec<f64> { (0..d).map(|j| (x[i][j] - mean[j]) / sd[j]).chain([1.0]).collect() };
    let ftr: Vec<Vec<f64>> = tr.iter().map(|&i| feat(i)).collect();
    let mut w = vec![vec![0.0; d + 1]; k];
    let logits = |w: &[Vec<f64>], f: &[f64]| -> Vec<f64> { w.iter().map(|wc| wc.iter().zip(f).map(|(a, b)| a * b).sum()).collect() };
    for _ in 0..steps {
        let mut g = vec![vec![0.0; d + 1]; k];
        for (f, &i) in ftr.iter().zip(tr) {
            let z = logits(&w, f);
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            for c in 0..k {
                let p = e[c] / s - f64::from(u8::from(c == labels[i]));
                for (gj, fj) in g[c].iter_mut().zip(f) {
                    *gj += p * fj;
                }
            }
        }
        for (wc, gc) in w.iter_mut().zip(&g) {
            for (wj, gj) in wc.iter_mut().zip(gc) {
                *wj -= lr * (gj / tr.len() as f64 + l2 * *wj);
            }
        }
    }
    let hits = te
        .iter()
        .filter(|&&i| {
            let z = logits(&w, &feat(i));
            (0..k).max_by(|&a, &b| z[a].total_cmp(&z[b])).expect("k ≥ 2") == labels[i]
        })
        .count();
    hits as f64 / te.len() as f64
}

/// Mean distance between label centroids over the mean distance of points to their own centroid.
pub fn between_within_ratio(x: &[Vec<f64>], labels: &[usize]) -> f64 {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let d = x.first().map_or(0, Vec::len);
    let mut cent = vec![vec![0.0; d]; k];
    let mut cnt = vec![0.0f64; k];
    for (p, &l) in x.iter().zip(labels) {
        cnt[l] += 1.0;
        for (c, v) in cent[l].iter_mut().zip(p) {
            *c += v;
        }
    }
    for (c, n) in cent.iter_mut().zip(&cnt) {
        c.iter_mut().for_each(|v| *v /= n.max(1.0));
    }
    let present: Vec<usize> = (0..k).filter(|&c| cnt[c] > 0.0).collect();
    let mut between = (0.0, 0.0);
    for (i, &a) in present.iter().enumerate() {
        for &b in &present[i + 1..] {
            between.0 += sq_dist(&cent[a], &cent[b]).sqrt();
            between.1 += 1.0;
        }
    }
    let within = x.iter().zip(labels).map(|(p, &l)| sq_dist(p, &cent[l]).sqrt()).sum::<f64>() / x.len().max(1) as f64;
    (between.0 / between.1) / within
}

/// Projection onto the top two principal components (power iteration with deflation).
pub fn pca_2d(x: &[Vec<f64>]) -> Vec<[f64; 2]> {
    let d = x.first().map_or(0, Vec::len);
    let n = x.len().max(1) as f64;
    let mean: Vec<f64> = (0..d).map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n).collect();
    let c: Vec<Vec<f64>> = x.iter().map(|r| r.iter().zip(&mean).map(|(a, m)| a - m).collect()).collect();
    let mut cov = vec![vec![0.0; d]; d];
    for r in &c {
        for i in 0..d {
            for j in 0..d {
                cov[i][j] += r[i] * r[j] / n;
            }
        }
    }
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for k in 0..2 {
        let deflate = |w: &mut Vec<f64>| {
            for p in &comps {
                let dot: f64 = w.iter().zip(p).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(p).for_each(|(a, b)| *a -= dot * b);
            }
            let n = norm(w);
            if n > 0.0 {
                w.iter_mut().for_each(|a| *a /= n);
            }
            n
        };
        let mut v: Vec<f64> = (0..d).map(|i| 1.0 + (i * (k + 1)) as f64 * 0.37).collect();
        deflate(&mut v);
        let scale: f64 = (0..d).map(|i| cov[i][i]).sum::<f64>().max(1e-300);
        for _ in 0..500 {
            let mut w: Vec<f64> = (0..d).map(|i| (0..d).map(|j| cov[i][j] * v[j]).sum()).collect();
            // No variance left outside the earlier components: keep v (orthogonal to them).
            if deflate(&mut w) < 1e-12 * scale {
                break;
            }
            v = w;
        }
        comps.push(v);
    }
    c.iter().map(|r| [0, 1].map(|k| r.iter().zip(&comps[k]).map(|(a, b)| a * b).sum())).collect()
}

/// Rule separation of per-example vectors (e.g. flattened gradients):
/// mean cosine over same-label pairs minus mean cosine over different-label pairs.
pub fn group_separation(v: &[Vec<f64>], labels: &[usize]) -> f64 {
    let (mut same, mut diff) = ((0.0, 0.0), (0.0, 0.0));
    for i in 0..v.len() {
        for j in i + 1..v.len() {
            let c = cosine(&v[i], &v[j]);
            let slot = if labels[i] == labels[j] { &mut same } else { &mut diff };
            slot.0 += c;
            slot.1 += 1.0;
        }
    }
    same.0 / same.1 - diff.0 / diff.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn kl_has_known_values() {
        let mu = vec![vec![0.0, 1.0, 0.0]];
        let lv = vec![vec![0.0, 0.0, 2f64.ln()]];
        let kl = kl_per_dim(&mu, &lv);
        assert!(close(kl[0], 0.0, 1e-12) && close(kl[1], 0.5, 1e-12));
        assert!(close(kl[2], 0.5 * (1.0 - 2f64.ln()), 1e-12));
        assert_eq!(active_units(&[vec![0.0, 1.0], vec![0.0, -1.0]], 0.01), 1);
    }

    #[test]
    fn silhouette_of_two_hand_made_clusters() {
        let x: Vec<Vec<f64>> = [0.0, 1.0, 10.0, 11.0].iter().map(|v| vec![*v]).collect();
        let s = silhouette(&x, &[0, 0, 1, 1], Metric::Euclidean);
        // Points 0 and 11: 1 − 1/10.5; points 1 and 10: 1 − 1/9.5.
        assert!(close(s, 1.0 - (1.0 / 10.5 + 1.0 / 9.5) / 2.0, 1e-12), "{s}");
        // Orthogonal directions are perfect clusters under cosine distance.
        let y = vec![vec![1.0, 0.0], vec![2.0, 0.0], vec![0.0, 1.0], vec![0.0, 3.0]];
        assert!(close(silhouette(&y, &[0, 0, 1, 1], Metric::Cosine), 1.0, 1e-12));
    }

    #[test]
    fn ari_and_nmi_match_reference_values() {
        // scikit-learn: adjusted_rand_score([0,0,1,1],[0,0,1,2]) = 0.5714…, NMI = 0.8.
        assert!(close(ari(&[0, 0, 1, 1], &[0, 0, 1, 2]), 4.0 / 7.0, 1e-12));
        assert!(close(nmi(&[0, 0, 1, 1], &[0, 0, 1, 2]), 0.8, 1e-12));
        assert!(close(ari(&[0, 0, 1, 1, 2], &[2, 2, 0, 0, 1]), 1.0, 1e-12));
        assert!(close(nmi(&[0, 0, 1, 1], &[1, 1, 0, 0]), 1.0, 1e-12));
        // Independent labelings: ARI of a balanced 2×2 cross is −0.5 (below chance).
        assert!(close(ari(&[0, 0, 1, 1], &[0, 1, 0, 1]), -0.5, 1e-12));
    }

    #[test]
    fn kmeans_probe_knn_and_pca_on_separated_blobs() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for c in 0..3 {
            for _ in 0..30 {
                x.push(vec![10.0 * c as f64 + rng.random::<f64>(), -5.0 * c as f64 + rng.random::<f64>(), rng.random::<f64>()]);
                labels.push(c);
            }
        }
        let found = kmeans(&x, 3, 5, 100, 0);
        assert!(close(ari(&labels, &found), 1.0, 1e-12));
        assert_eq!(found, kmeans(&x, 3, 5, 100, 0));
        assert!(close(knn_accuracy(&x, &labels, 5), 1.0, 1e-12));
        assert!(close(linear_probe(&x, &labels, 1e-3, 300, 0.5, 0), 1.0, 1e-12));
        assert!(between_within_ratio(&x, &labels) > 5.0);
        let line: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 2.0 * i as f64]).collect();
        let p = pca_2d(&line);
        assert!(p.iter().all(|q| q[1].abs() < 1e-9));
        assert!(close((p[9][0] - p[0][0]).abs(), 9.0 * 5f64.sqrt(), 1e-9));
        let g = vec![vec![1.0, 0.0], vec![1.0, 0.1], vec![0.0, 1.0], vec![0.1, 1.0]];
        assert!(group_separation(&g, &[0, 0, 1, 1]) > 0.8);
    }
}
