//! Character-level Tiny Shakespeare statistics: the base distribution of the noisy in-context
//! recall task (arXiv 2406.03068; spec §2.1). Owns loading of the embedded
//! `data/tinyshakespeare-char-stats.json` (65 tokens, unigram and bigram counts), normalisation
//! into π_u and π_b(·|i), and CDF-based sampling used by [`super::noisy_recall`].

use std::sync::OnceLock;

use serde::Deserialize;

use super::error::DataError;

/// The statistics file shipped with the crate (`data/tinyshakespeare-char-stats.json`).
pub const TINY_SHAKESPEARE_JSON: &str = include_str!("../../data/tinyshakespeare-char-stats.json");

/// Vocabulary size of the Tiny Shakespeare character model.
pub const VOCAB_SIZE: usize = 65;

#[derive(Deserialize)]
struct RawStats {
    vocab: Vec<String>,
    unigram_counts: Vec<f64>,
    bigram_counts: Vec<Vec<f64>>,
}

/// Normalised unigram/bigram statistics plus precomputed CDFs for sampling.
#[derive(Debug, Clone)]
pub struct CharStats {
    /// Characters in id order (`vocab[id]`).
    pub vocab: Vec<String>,
    /// π_u: unigram probabilities, sums to 1.
    pub unigram: Vec<f64>,
    /// π_b(·|i): `bigram[i][j]` = P(next = j | current = i); every row sums to 1.
    pub bigram: Vec<Vec<f64>>,
    unigram_cdf: Vec<f64>,
    /// Row-major `n × n` CDFs, one row per previous token; last entry of each row is exactly 1.
    bigram_cdf: Vec<f64>,
}

fn cdf_of(p: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    let mut out: Vec<f64> = p
        .iter()
        .map(|&x| {
            acc += x;
            acc
        })
        .collect();
    // Guard against rounding: the last non-zero entry and everything after it is exactly 1.
    if let Some(last) = p.iter().rposition(|&x| x > 0.0) {
        for c in &mut out[last..] {
            *c = 1.0;
        }
    }
    out
}

/// Index `i` with `cdf[i-1] <= u < cdf[i]` (for `u` in `[0, 1)`); never a zero-probability entry.
#[inline]
fn sample_cdf(cdf: &[f64], u: f64) -> u32 {
    let i = cdf.partition_point(|&c| c <= u);
    i.min(cdf.len() - 1) as u32
}

impl CharStats {
    /// Parse and normalise a statistics JSON document (fields `vocab`, `unigram_counts`,
    /// `bigram_counts`; other fields are ignored).
    pub fn from_json(json: &str) -> Result<Self, DataError> {
        let raw: RawStats = serde_json::from_str(json)
            .map_err(|e| DataError::CharStats(format!("invalid JSON: {e}")))?;
        let n = raw.vocab.len();
        if n == 0 {
            return Err(DataError::CharStats("`vocab` is empty".into()));
        }
        if raw.unigram_counts.len() != n {
            return Err(DataError::CharStats(format!(
                "`unigram_counts` has {} entries, expected {n}",
                raw.unigram_counts.len()
            )));
        }
        if raw.bigram_counts.len() != n || raw.bigram_counts.iter().any(|r| r.len() != n) {
            return Err(DataError::CharStats(format!(
                "`bigram_counts` must be {n}×{n}"
            )));
        }
        let bad = |x: &f64| !x.is_finite() || *x < 0.0;
        if raw.unigram_counts.iter().any(bad) || raw.bigram_counts.iter().flatten().any(bad) {
            return Err(DataError::CharStats(
                "counts must be finite and non-negative".into(),
            ));
        }
        let total: f64 = raw.unigram_counts.iter().sum();
        if total <= 0.0 {
            return Err(DataError::CharStats("`unigram_counts` sum to zero".into()));
        }
        let unigram: Vec<f64> = raw.unigram_counts.iter().map(|c| c / total).collect();
        let mut bigram = Vec::with_capacity(n);
        for (i, row) in raw.bigram_counts.iter().enumerate() {
            let s: f64 = row.iter().sum();
            if s <= 0.0 {
                return Err(DataError::CharStats(format!(
                    "`bigram_counts` row {i} ({:?}) has no mass",
                    raw.vocab[i]
                )));
            }
            bigram.push(row.iter().map(|c| c / s).collect::<Vec<f64>>());
        }
        let unigram_cdf = cdf_of(&unigram);
        let bigram_cdf = bigram.iter().flat_map(|r| cdf_of(r)).collect();
        Ok(CharStats {
            vocab: raw.vocab,
            unigram,
            bigram,
            unigram_cdf,
            bigram_cdf,
        })
    }

    /// The embedded Tiny Shakespeare statistics, parsed once (validated by the unit tests).
    pub fn tiny_shakespeare() -> &'static CharStats {
        static STATS: OnceLock<CharStats> = OnceLock::new();
        STATS.get_or_init(|| {
            CharStats::from_json(TINY_SHAKESPEARE_JSON)
                .expect("embedded Tiny Shakespeare statistics are valid")
        })
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Token id of a character, if present.
    pub fn id_of(&self, ch: &str) -> Option<u32> {
        self.vocab.iter().position(|v| v == ch).map(|i| i as u32)
    }

    /// Sample from π_u given a uniform `u` in `[0, 1)`.
    #[inline]
    pub fn sample_unigram(&self, u: f64) -> u32 {
        sample_cdf(&self.unigram_cdf, u)
    }

    /// Sample from π_b(·|prev) given a uniform `u` in `[0, 1)`.
    #[inline]
    pub fn sample_bigram(&self, prev: u32, u: f64) -> u32 {
        let n = self.vocab.len();
        let p = prev as usize;
        sample_cdf(&self.bigram_cdf[p * n..(p + 1) * n], u)
    }

    /// CDF of π_u (length `vocab_size`, last entry 1).
    pub fn unigram_cdf(&self) -> &[f64] {
        &self.unigram_cdf
    }

    /// CDF of π_b(·|prev) (length `vocab_size`, last entry 1).
    pub fn bigram_cdf(&self, prev: u32) -> &[f64] {
        let n = self.vocab.len();
        &self.bigram_cdf[prev as usize * n..(prev as usize + 1) * n]
    }

    /// The `k` most frequent tokens under π_u, most frequent first (ties: lower id first).
    pub fn top_k_unigram(&self, k: usize) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..self.vocab.len() as u32).collect();
        ids.sort_by(|&a, &b| {
            self.unigram[b as usize]
                .total_cmp(&self.unigram[a as usize])
                .then(a.cmp(&b))
        });
        ids.truncate(k);
        ids
    }

    /// Σ_k π_u(k)², the collision probability of the unigram distribution.
    pub fn unigram_collision(&self) -> f64 {
        self.unigram.iter().map(|p| p * p).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn spec_check_values() {
        let s = CharStats::tiny_shakespeare();
        assert_eq!(s.vocab_size(), VOCAB_SIZE);
        assert_eq!(s.vocab[0], "\n");
        assert_eq!(s.id_of(" "), Some(1));
        assert_eq!(s.id_of("!"), Some(2));
        assert_eq!(s.id_of("A"), Some(13));
        assert_eq!(s.id_of("z"), Some(64));
        let p = |c: &str| s.unigram[s.id_of(c).unwrap() as usize];
        assert!(close(p(" "), 0.15232, 5e-6), "π_u(space) = {}", p(" "));
        assert!(close(p("e"), 0.0848, 5e-5));
        assert!(close(p("t"), 0.0601, 5e-5));
        assert!(close(p("o"), 0.0590, 5e-5));
        assert!(close(p("a"), 0.0498, 5e-5));
        assert!(close(p("!"), 0.00195, 5e-6));
        assert!(
            close(s.unigram_collision(), 0.05579, 5e-6),
            "Σπ² = {}",
            s.unigram_collision()
        );
        let bang = 2usize;
        assert_eq!(s.bigram[1][bang], 0.0, "P(!|space) must be 0");
        let (argmax, max) = (0..VOCAB_SIZE)
            .map(|i| (i, s.bigram[i][bang]))
            .fold((0, -1.0), |acc, x| if x.1 > acc.1 { x } else { acc });
        assert_eq!(s.vocab[argmax], "y");
        assert!(close(max, 0.00738, 5e-6), "max P(!|i) = {max}");
        assert_eq!(s.top_k_unigram(5), vec![1, 43, 58, 53, 39]); // space e t o a
    }

    #[test]
    fn normalised_and_cdfs_consistent() {
        let s = CharStats::tiny_shakespeare();
        assert!(close(s.unigram.iter().sum::<f64>(), 1.0, 1e-12));
        for i in 0..VOCAB_SIZE as u32 {
            assert!(close(s.bigram[i as usize].iter().sum::<f64>(), 1.0, 1e-12));
            let cdf = s.bigram_cdf(i);
            assert_eq!(*cdf.last().unwrap(), 1.0);
            assert!(cdf.windows(2).all(|w| w[0] <= w[1]));
            // u = 0 and u → 1 never return zero-probability tokens
            for u in [0.0, 0.5, 1.0 - 1e-16] {
                let j = s.sample_bigram(i, u);
                assert!(s.bigram[i as usize][j as usize] > 0.0);
            }
        }
        assert_eq!(s.sample_unigram(0.0), 0); // `\n` has the first non-zero mass
    }

    #[test]
    fn malformed_stats_are_rejected() {
        let e = CharStats::from_json(
            r#"{"vocab":["a","b"],"unigram_counts":[1],"bigram_counts":[[1,1],[1,1]]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unigram_counts"), "{e}");
        let e = CharStats::from_json(
            r#"{"vocab":["a","b"],"unigram_counts":[1,1],"bigram_counts":[[1,1],[0,0]]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
    }
}
