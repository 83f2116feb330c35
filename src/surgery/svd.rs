//! Exact thin SVD of a weight matrix, rank-range rebuilds, and a content-addressed SVD cache.
//!
//! W (m×n) = U diag(s) Vᵀ with r = min(m, n) triplets, s descending (faer 0.24 `thin_svd`, f32).
//! LASER (arXiv 2312.13558) keeps the top ⌊ρ·min(m,n)⌋ triplets; the truncation study
//! (arXiv 2406.03068 §6) also removes them ("bottom" mode). Both are `rebuild_range` over a
//! cached factorisation, so a ρ-sweep costs one SVD per matrix: `SvdCache` keys factors by
//! (weight name, fingerprint of the f32 bits and shape) and can mirror them to safetensors files.
//! LASER itself uses a randomised SVD; we use an exact one (spec §6.1).
//! Imports only candle, faer and std.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::error::{Result, SurgeryError};

/// Thin SVD factors, row-major f32 on the host.
#[derive(Clone, Debug)]
pub struct Svd {
    pub u: Vec<f32>,  // (m, r)
    pub s: Vec<f32>,  // (r,) descending, non-negative
    pub vt: Vec<f32>, // (r, n)
    pub m: usize,
    pub n: usize,
}

/// A 2-D weight as host f32 row-major data; any dtype/device/layout is accepted.
pub(crate) fn host_matrix(name: &str, w: &Tensor) -> Result<(Vec<f32>, usize, usize)> {
    let (m, n) = w.dims2().map_err(|_| SurgeryError::BadShape {
        name: name.to_string(),
        expected: "a 2-D matrix".into(),
        got: w.dims().to_vec(),
    })?;
    let data = w
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((data, m, n))
}

/// 64-bit fingerprint of a matrix's shape and exact f32 bit patterns (FNV-style word mix).
pub fn fingerprint(data: &[f32], m: usize, n: usize) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (m as u64).rotate_left(32) ^ n as u64;
    for x in data {
        h = (h ^ x.to_bits() as u64).wrapping_mul(PRIME);
    }
    h ^ (h >> 29)
}

impl Svd {
    /// Exact thin SVD of a 2-D tensor (converted to host f32).
    pub fn compute(name: &str, w: &Tensor) -> Result<Svd> {
        let (data, m, n) = host_matrix(name, w)?;
        Svd::from_row_major(name, &data, m, n)
    }

    /// Exact thin SVD of row-major data `(m, n)`.
    pub fn from_row_major(name: &str, data: &[f32], m: usize, n: usize) -> Result<Svd> {
        assert_eq!(data.len(), m * n, "from_row_major: data length != m*n");
        let a = faer::Mat::<f32>::from_fn(m, n, |i, j| data[i * n + j]);
        let f = a.thin_svd().map_err(|_| SurgeryError::SvdNoConvergence {
            name: name.to_string(),
            m,
            n,
        })?;
        let (fu, fv, fs) = (f.U(), f.V(), f.S().column_vector());
        let r = m.min(n);
        let mut u = vec![0f32; m * r];
        for i in 0..m {
            for c in 0..r {
                u[i * r + c] = *fu.get(i, c);
            }
        }
        let mut vt = vec![0f32; r * n];
        for c in 0..r {
            for j in 0..n {
                vt[c * n + j] = *fv.get(j, c);
            }
        }
        let s = (0..r).map(|c| *fs.get(c)).collect();
        Ok(Svd { u, s, vt, m, n })
    }

    /// Number of triplets, min(m, n).
    pub fn rank(&self) -> usize {
        self.s.len()
    }

    /// Σ_{i ∈ range} s_i², i.e. ‖rebuild_range(range)‖_F².
    pub fn energy(&self, range: Range<usize>) -> f64 {
        let range = self.clamp(range);
        self.s[range].iter().map(|&x| (x as f64) * (x as f64)).sum()
    }

    fn clamp(&self, range: Range<usize>) -> Range<usize> {
        let end = range.end.min(self.rank());
        range.start.min(end)..end
    }

    /// Columns `range` of U as an (m, len) CPU f32 tensor.
    pub fn u_block(&self, range: Range<usize>) -> Result<Tensor> {
        let (range, r) = (self.clamp(range), self.rank());
        let len = range.len();
        let mut out = Vec::with_capacity(self.m * len);
        for i in 0..self.m {
            out.extend_from_slice(&self.u[i * r + range.start..i * r + range.end]);
        }
        Ok(Tensor::from_vec(out, (self.m, len), &Device::Cpu)?)
    }

    /// Rows `range` of Vᵀ as a (len, n) CPU f32 tensor.
    pub fn vt_block(&self, range: Range<usize>) -> Result<Tensor> {
        let range = self.clamp(range);
        let rows = self.vt[range.start * self.n..range.end * self.n].to_vec();
        Ok(Tensor::from_vec(rows, (range.len(), self.n), &Device::Cpu)?)
    }

    /// Σ_{i ∈ range} s_i u_i v_iᵀ as an (m, n) CPU f32 tensor; an empty range gives zeros.
    pub fn rebuild_range(&self, range: Range<usize>) -> Result<Tensor> {
        let range = self.clamp(range);
        if range.is_empty() {
            return Ok(Tensor::zeros((self.m, self.n), DType::F32, &Device::Cpu)?);
        }
        let s = Tensor::from_slice(&self.s[range.clone()], (1, range.len()), &Device::Cpu)?;
        let us = self.u_block(range.clone())?.broadcast_mul(&s)?;
        Ok(us.matmul(&self.vt_block(range)?)?)
    }

    /// Best rank-k approximation W_k (LASER "keep top-k").
    pub fn rebuild_top(&self, k: usize) -> Result<Tensor> {
        self.rebuild_range(0..k)
    }

    /// W − W_k: the matrix with its top-k triplets removed ("bottom" mode).
    pub fn rebuild_without_top(&self, k: usize) -> Result<Tensor> {
        self.rebuild_range(k..self.rank())
    }
}

/// One SVD per (weight name, content). Optionally mirrored to `<dir>/<name>.<fp>.svd.safetensors`.
#[derive(Debug, Default)]
pub struct SvdCache {
    entries: HashMap<(String, u64), Arc<Svd>>,
    dir: Option<PathBuf>,
    computed: usize,
    hits: usize,
    loaded: usize,
}

impl SvdCache {
    /// In-memory cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cache that also reads and writes factor files in `dir` (created if missing).
    pub fn with_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| SurgeryError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(SvdCache {
            dir: Some(dir),
            ..Self::default()
        })
    }

    /// The SVD of `w`, computed at most once per (name, content).
    pub fn get(&mut self, name: &str, w: &Tensor) -> Result<Arc<Svd>> {
        let (data, m, n) = host_matrix(name, w)?;
        let key = (name.to_string(), fingerprint(&data, m, n));
        if let Some(svd) = self.entries.get(&key) {
            self.hits += 1;
            return Ok(svd.clone());
        }
        let path = self.dir.as_ref().map(|d| d.join(file_name(name, key.1)));
        let svd = match path.as_ref().filter(|p| p.exists()).map(|p| load(p, m, n)) {
            Some(Ok(svd)) => {
                self.loaded += 1;
                svd
            }
            // Missing or unreadable file: recompute and (re)write it.
            _ => {
                let svd = Svd::from_row_major(name, &data, m, n)?;
                self.computed += 1;
                if let Some(p) = &path {
                    save(p, &svd)?;
                }
                svd
            }
        };
        let svd = Arc::new(svd);
        self.entries.insert(key, svd.clone());
        Ok(svd)
    }

    /// SVDs actually computed (not served from memory or disk).
    pub fn computed(&self) -> usize {
        self.computed
    }
    /// Requests served from memory.
    pub fn hits(&self) -> usize {
        self.hits
    }
    /// Factorisations read from the cache directory.
    pub fn loaded_from_disk(&self) -> usize {
        self.loaded
    }
    /// Number of factorisations held in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Drop the in-memory entries (files on disk stay).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

fn file_name(name: &str, fp: u64) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.{fp:016x}.svd.safetensors")
}

fn save(path: &Path, svd: &Svd) -> Result<()> {
    let r = svd.rank();
    let mut t = HashMap::new();
    t.insert("u", Tensor::from_slice(&svd.u, (svd.m, r), &Device::Cpu)?);
    t.insert("s", Tensor::from_slice(&svd.s, r, &Device::Cpu)?);
    t.insert("vt", Tensor::from_slice(&svd.vt, (r, svd.n), &Device::Cpu)?);
    Ok(candle_core::safetensors::save(&t, path)?)
}

fn load(path: &Path, m: usize, n: usize) -> Result<Svd> {
    let t = candle_core::safetensors::load(path, &Device::Cpu)?;
    let get = |k: &str, dims: &[usize]| -> Result<Vec<f32>> {
        let x = t.get(k).ok_or_else(|| SurgeryError::Load {
            msg: format!("{}: no `{k}`", path.display()),
        })?;
        if x.dims() != dims {
            let name = format!("{}:{k}", path.display());
            return Err(SurgeryError::BadShape {
                name,
                expected: format!("{dims:?}"),
                got: x.dims().to_vec(),
            });
        }
        Ok(x.flatten_all()?.to_vec1::<f32>()?)
    };
    let r = m.min(n);
    Ok(Svd {
        u: get("u", &[m, r])?,
        s: get("s", &[r])?,
        vt: get("vt", &[r, n])?,
        m,
        n,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic N(0,1)-ish matrix (LCG + Box–Muller) so tests do not depend on candle's RNG.
    pub(crate) fn rand_mat(m: usize, n: usize, seed: u64) -> Tensor {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut unif = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let v: Vec<f32> = (0..m * n)
            .map(|_| ((-2.0 * unif().ln()).sqrt() * (std::f64::consts::TAU * unif()).cos()) as f32)
            .collect();
        Tensor::from_vec(v, (m, n), &Device::Cpu).unwrap()
    }

    pub(crate) fn fro2(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn full_rank_rebuild_matches_original() {
        for (m, n) in [(40, 24), (24, 40)] {
            let w = rand_mat(m, n, 1);
            let svd = Svd::compute("w", &w).unwrap();
            assert_eq!(
                (svd.u.len(), svd.s.len(), svd.vt.len()),
                (m * 24, 24, 24 * n)
            );
            let rel = (fro2(&(svd.rebuild_top(24).unwrap() - &w).unwrap()) / fro2(&w)).sqrt();
            assert!(rel < 1e-4, "{m}x{n}: relative reconstruction error {rel}");
        }
    }

    #[test]
    fn singular_values_descend_and_match_frobenius() {
        let w = rand_mat(40, 24, 2);
        let svd = Svd::compute("w", &w).unwrap();
        assert!(
            svd.s.windows(2).all(|p| p[0] >= p[1]) && svd.s[23] >= 0.0,
            "{:?}",
            svd.s
        );
        let (f, e) = (fro2(&w), svd.energy(0..24));
        assert!((f - e).abs() / f < 1e-5, "‖W‖_F² = {f}, Σ s² = {e}");
    }

    #[test]
    fn top_k_error_is_eckart_young() {
        let w = rand_mat(40, 24, 3);
        let svd = Svd::compute("w", &w).unwrap();
        let total = fro2(&w);
        for k in [0, 1, 3, 8, 12, 23, 24, 30] {
            let err = fro2(&(&w - svd.rebuild_top(k).unwrap()).unwrap());
            let tail = svd.energy(k..24);
            assert!(
                (err - tail).abs() < 1e-5 * total,
                "k={k}: ‖W−W_k‖² {err} vs Σ_(i>k) s² {tail}"
            );
        }
    }

    #[test]
    fn top_plus_without_top_is_identity() {
        let w = rand_mat(24, 40, 4);
        let svd = Svd::compute("w", &w).unwrap();
        let sum = (svd.rebuild_top(5).unwrap() + svd.rebuild_without_top(5).unwrap()).unwrap();
        assert!(fro2(&(sum - &w).unwrap()) < 1e-8 * fro2(&w));
        let tail = svd.rebuild_without_top(5).unwrap();
        assert!((fro2(&tail) - svd.energy(5..24)).abs() < 1e-5 * fro2(&w));
    }

    #[test]
    fn non_matrix_is_rejected_with_name() {
        let t = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu).unwrap();
        let e = Svd::compute("blocks.0.x", &t).unwrap_err().to_string();
        assert!(e.contains("blocks.0.x") && e.contains("2-D"), "{e}");
    }

    #[test]
    fn cache_computes_one_svd_per_matrix_content() {
        let w = rand_mat(40, 24, 5);
        let mut cache = SvdCache::new();
        for rho in [0.05, 0.1, 0.2, 0.5, 1.0] {
            let svd = cache.get("blocks.1.mlp.fc_in.weight", &w).unwrap();
            svd.rebuild_top((rho * 24.0) as usize).unwrap();
        }
        assert_eq!((cache.computed(), cache.hits()), (1, 4));
        let w2 = (&w * 2.0).unwrap();
        cache.get("blocks.1.mlp.fc_in.weight", &w2).unwrap();
        cache.get("blocks.0.mlp.fc_in.weight", &w).unwrap();
        assert_eq!((cache.computed(), cache.len()), (3, 3));
    }

    #[test]
    fn cache_persists_to_directory() {
        let dir = tempfile::tempdir().unwrap();
        let w = rand_mat(24, 40, 6);
        let a = SvdCache::with_dir(dir.path())
            .unwrap()
            .get("blocks.0.attn.v_proj.weight", &w)
            .unwrap();
        let mut second = SvdCache::with_dir(dir.path()).unwrap();
        let b = second.get("blocks.0.attn.v_proj.weight", &w).unwrap();
        assert_eq!((second.computed(), second.loaded_from_disk()), (0, 1));
        assert_eq!(
            (a.u.clone(), a.s.clone(), a.vt.clone()),
            (b.u.clone(), b.s.clone(), b.vt.clone())
        );
    }
}
