//! Fourier analysis of functions on Z_p³: how a unit of a modular-arithmetic
//! MLP responds to the three summands (x, y, z) (recursive-reasoning spec §8.2.6).
//!
//! For each unit u, F_u(a, b, c) = Σ_{x,y,z} f_u(x, y, z)·e^{−2πi(ax+by+cz)/p}.
//! Its energy |F_u|² is normalised per unit and split into three classes:
//! the constant term (0, 0, 0); the diagonal (a, a, a), a = 1..p−1 — the
//! frequencies of functions of x + y + z, which make the mod-p wrap-around free —
//! and everything else. Diagonal frequencies come in conjugate pairs a ↔ p − a
//! (equal energy for real f), so the per-frequency profile is reported per pair.

/// Energy shares of a set of units, each averaged over the units with non-zero energy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FourierSummary {
    pub p: usize,
    /// Units analysed (with non-zero energy).
    pub units: usize,
    /// Mean share of |F|² at (0, 0, 0).
    pub constant: f64,
    /// Mean share on the diagonal (a, a, a), a ≠ 0.
    pub diagonal: f64,
    /// Mean share everywhere else.
    pub other: f64,
    /// Mean share of the *non-constant* energy on the diagonal.
    pub diagonal_of_nonconstant: f64,
    /// For each conjugate pair {a, p − a}, a = 1..=(p−1)/2: its share of the
    /// diagonal energy (summed over units, then normalised; sums to 1).
    pub pair_shares: Vec<f64>,
}

impl FourierSummary {
    /// Number of conjugate pairs carrying at least `min_share` of the diagonal energy.
    pub fn pairs_above(&self, min_share: f64) -> usize {
        self.pair_shares.iter().filter(|&&s| s >= min_share).count()
    }
}

/// |F(a, b, c)|² of one real function on Z_p³, `f[(x·p + y)·p + z]`; the result
/// uses the same index order over (a, b, c). Separable: three 1-D DFTs, O(p⁴).
pub fn dft3_energy(f: &[f32], p: usize) -> Vec<f64> {
    assert_eq!(f.len(), p * p * p, "dft3_energy: expected p³ = {} values, got {}", p * p * p, f.len());
    let (cos, sin): (Vec<f64>, Vec<f64>) = (0..p)
        .map(|k| {
            let t = -2.0 * std::f64::consts::PI * k as f64 / p as f64;
            (t.cos(), t.sin())
        })
        .unzip();
    let mut re: Vec<f64> = f.iter().map(|&v| v as f64).collect();
    let mut im = vec![0.0; re.len()];
    // Transform along each axis in turn; `stride` is the index step of that axis.
    for stride in [p * p, p, 1] {
        let (mut nre, mut nim) = (vec![0.0; re.len()], vec![0.0; re.len()]);
        for base in 0..p * p * p {
            if (base / stride) % p != 0 {
                continue; // `base` must be the axis-0 element of its line
            }
            for a in 0..p {
                let (mut sr, mut si) = (0.0, 0.0);
                for x in 0..p {
                    let (c, s) = (cos[(a * x) % p], sin[(a * x) % p]);
                    let (vr, vi) = (re[base + x * stride], im[base + x * stride]);
                    sr += vr * c - vi * s;
                    si += vr * s + vi * c;
                }
                nre[base + a * stride] = sr;
                nim[base + a * stride] = si;
            }
        }
        re = nre;
        im = nim;
    }
    re.iter().zip(&im).map(|(r, i)| r * r + i * i).collect()
}

/// Summarise `units` functions on Z_p³; `values[u]` holds unit u's p³ responses
/// in `(x·p + y)·p + z` order.
pub fn summarize(values: &[Vec<f32>], p: usize) -> FourierSummary {
    let idx = |a: usize, b: usize, c: usize| (a * p + b) * p + c;
    let (mut constant, mut diagonal, mut other, mut diag_nc) = (0.0, 0.0, 0.0, 0.0);
    let mut diag_energy = vec![0.0; p];
    let (mut units, mut nc_units) = (0usize, 0usize);
    for f in values {
        let e = dft3_energy(f, p);
        let total: f64 = e.iter().sum();
        if total <= 1e-12 * f.len() as f64 {
            continue;
        }
        units += 1;
        let c0 = e[0];
        let diag: f64 = (1..p).map(|a| e[idx(a, a, a)]).sum();
        constant += c0 / total;
        diagonal += diag / total;
        other += (total - c0 - diag) / total;
        if total - c0 > 1e-12 * total {
            diag_nc += diag / (total - c0);
            nc_units += 1;
        }
        for (a, d) in diag_energy.iter_mut().enumerate().skip(1) {
            *d += e[idx(a, a, a)];
        }
    }
    let n = units.max(1) as f64;
    let diag_total: f64 = diag_energy.iter().sum();
    let pair_shares = (1..=(p - 1) / 2)
        .map(|a| {
            let pair = diag_energy[a] + if p - a != a { diag_energy[p - a] } else { 0.0 };
            if diag_total > 0.0 {
                pair / diag_total
            } else {
                0.0
            }
        })
        .collect();
    FourierSummary {
        p,
        units,
        constant: constant / n,
        diagonal: diagonal / n,
        other: other / n,
        diagonal_of_nonconstant: diag_nc / nc_units.max(1) as f64,
        pair_shares,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(p: usize, f: impl Fn(usize, usize, usize) -> f64) -> Vec<f32> {
        let mut v = Vec::with_capacity(p * p * p);
        for x in 0..p {
            for y in 0..p {
                for z in 0..p {
                    v.push(f(x, y, z) as f32);
                }
            }
        }
        v
    }

    fn wave(p: usize, a: usize, s: usize) -> f64 {
        (2.0 * std::f64::consts::PI * (a * s) as f64 / p as f64).cos()
    }

    #[test]
    fn energy_lands_where_the_function_lives() {
        let p = 7;
        // Parseval: Σ|F|² = p³ Σ f².
        let f = table(p, |x, y, z| ((x * 3 + y * y + 5 * z) % p) as f64 - 2.0);
        let e = dft3_energy(&f, p);
        let lhs: f64 = e.iter().sum();
        let rhs: f64 = f.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() * (p * p * p) as f64;
        assert!((lhs - rhs).abs() < 1e-6 * rhs, "Parseval: {lhs} vs {rhs}");

        // cos(2π·2(x+y+z)/p): all energy on the diagonal, in the pair {2, p−2}.
        let s = summarize(&[table(p, |x, y, z| wave(p, 2, x + y + z))], p);
        assert!((s.diagonal - 1.0).abs() < 1e-9 && s.constant.abs() < 1e-9 && s.other.abs() < 1e-9, "{s:?}");
        assert!((s.pair_shares[1] - 1.0).abs() < 1e-9, "{:?}", s.pair_shares);
        assert_eq!(s.pairs_above(0.02), 1);

        // A constant is all (0, 0, 0); a wave in x alone is all "other".
        let s = summarize(&[table(p, |_, _, _| 3.0)], p);
        assert!((s.constant - 1.0).abs() < 1e-9, "{s:?}");
        let s = summarize(&[table(p, |x, _, _| wave(p, 1, x))], p);
        assert!((s.other - 1.0).abs() < 1e-9 && s.diagonal.abs() < 1e-9, "{s:?}");

        // Two units: 1 + cos(x+y+z) (constant energy p⁶ against p⁶/2 on the diagonal: 2/3 constant)
        // and a pure diagonal wave.
        let s = summarize(&[table(p, |x, y, z| 1.0 + wave(p, 1, x + y + z)), table(p, |x, y, z| wave(p, 3, x + y + z))], p);
        assert_eq!(s.units, 2);
        assert!((s.constant - (2.0 / 3.0) / 2.0).abs() < 1e-6, "{s:?}");
        assert!((s.diagonal_of_nonconstant - 1.0).abs() < 1e-6);
        assert!((s.pair_shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
}
