//! Shared plumbing for the fused CPU kernels: contiguous f32 views of candle storage, vectorisable
//! `exp`/`tanh`, lane-wise row reductions, and the fixed work split that keeps every result
//! independent of the rayon thread count (cross-row sums go block by block, in block order).
//! May import only candle-core and rayon.

use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor};

/// Rows per reduction block: a cross-row sum is a sequential sum of per-block partial sums.
pub(crate) const BLOCK_ROWS: usize = 64;
/// Elements per parallel task for elementwise kernels (also the block size of `sum_sq`).
pub(crate) const CHUNK: usize = 1 << 14;

/// True when the fused CPU kernels apply (CPU device, f32); otherwise callers use `*_reference`.
pub(crate) fn fused_ok(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The contiguous f32 elements that `layout` addresses inside `storage`.
pub(crate) fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Mutable twin of [`slice`] for the in-place optimizer kernels.
pub(crate) fn slice_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: parameter must be f32")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => bail!("{op}: parameter must be contiguous"),
    }
}

/// Whole rows per parallel task, so that each task handles about `CHUNK` elements.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (CHUNK / row_len.max(1)).max(1)
}

/// Length of the last dimension (1 for a scalar).
pub(crate) fn last_dim(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1)
}

/// e^x, Cephes-style: x = n·ln2 + r, |r| ≤ ln2/2, degree-6 polynomial for e^r, 2^n via the exponent
/// bits. Branch-free so loops over it vectorise; relative error ≈ 2 ulp; underflows to 0 below -87.3.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting rounds to nearest
    let under = x < -87.336_55;
    let x = x.clamp(-87.336_55, 88.376_26);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n as an integer without a float→int conversion (Rust's saturating `as` keeps the loop
    // scalar): t and ROUND share their exponent, so their bit patterns differ by exactly n.
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    // 2^n split as 2^(n/2)·2^(n-n/2) so that n = 128 does not overflow the exponent field.
    let h = ni >> 1;
    let s1 = f32::from_bits(((h + 127) << 23) as u32);
    let s2 = f32::from_bits(((ni - h + 127) << 23) as u32);
    let y = er * s1 * s2;
    if under {
        0.0
    } else {
        y
    }
}

/// tanh(x) as Eigen's clamped [13/6] rational approximation (`ptanh_float`); |error| < 1e-6 (float32).
#[inline(always)]
pub(crate) fn fast_tanh(x: f32) -> f32 {
    let tiny = x.abs() < 0.0004;
    let xc = x.clamp(-7.905_311, 7.905_311);
    let x2 = xc * xc;
    let p = -2.760_768_5e-16f32;
    let p = p * x2 + 2.000_188e-13;
    let p = p * x2 - 8.604_672e-11;
    let p = p * x2 + 5.122_297e-8;
    let p = p * x2 + 1.485_722_4e-5;
    let p = p * x2 + 6.372_619_3e-4;
    let p = p * x2 + 4.893_524_6e-3;
    let q = 1.198_258_4e-6f32;
    let q = q * x2 + 1.185_347e-4;
    let q = q * x2 + 2.268_434_6e-3;
    let q = q * x2 + 4.893_525e-3;
    let t = xc * p / q;
    if tiny {
        x
    } else {
        t
    }
}

/// Set to run every `wide` kernel with the build's baseline vectors (tests compare the two).
#[cfg(target_arch = "x86_64")]
static NARROW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Run `f` compiled for AVX-512 when the CPU has it (checked once), else as built.
/// `f` and everything it inlines (the row helpers here, `fast_exp`) get the wider
/// vectors; results are bit-identical because Rust never fuses or reorders float
/// operations, so only the vector width changes.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static V4: OnceLock<bool> = OnceLock::new();
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
        unsafe fn v4<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        let has = *V4.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
        });
        if has && !NARROW.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: the CPU supports every enabled feature (checked above).
            return unsafe { v4(f) };
        }
    }
    f()
}

/// max over a row with 8 independent lanes (a fixed order, so the result is reproducible).
#[inline(always)]
pub(crate) fn row_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
        }
    }
    let mut m = lanes
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for &v in tail {
        m = if v > m { v } else { m };
    }
    m
}

/// Σ a_i·b_i over a row with 8 lanes (vectorises without reassociation licences).
#[inline(always)]
pub(crate) fn row_dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    s
}

/// Σ a_i over a row with 8 lanes.
#[inline(always)]
pub(crate) fn row_sum(a: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let c = a.chunks_exact(8);
    let t = c.remainder();
    for x in c {
        for k in 0..8 {
            lanes[k] += x[k];
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for x in t {
        s += x;
    }
    s
}

/// Run `f` on the contiguous f32 elements of a CPU tensor without copying
/// them (a non-contiguous tensor is made contiguous first).
pub(crate) fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(slice(cpu, layout, op)?)),
        _ => bail!("{op}: CPU tensor expected"),
    }
}

/// A vector of `n` floats produced by `fill`, which must write every element
/// through the pointer (e.g. a GEMM in replace mode); skips zero-filling.
pub(crate) fn written_by(n: usize, fill: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    fill(v.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    // SAFETY: `fill` initialised all n elements (callers' contract).
    unsafe { v.set_len(n) };
    v
}

/// `out = f(a, b)` over two equal-length slices, in parallel chunks of
/// `CHUNK` (elementwise, so thread-count independent).
pub(crate) fn zip_chunks(op: &str, a: &[f32], b: &[f32], f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    if a.len() != b.len() {
        bail!("{op}: inputs have {} and {} elements", a.len(), b.len());
    }
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| wide(#[inline(always)] || f(a, b, o)));
    Ok(out)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Test helpers shared by the op files: random inputs, parity, finite differences, thread pools.
    use candle_core::{Device, Result, Tensor, Var};
    use rand::{Rng, SeedableRng};

    pub fn randn(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("shape matches")
    }

    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    pub fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Gradient of `Σ f(x)·w` w.r.t. `x` for a fixed random weighting `w`, plus the output.
    pub fn grad_of(
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
        x: &Tensor,
        seed: u64,
    ) -> (Tensor, Tensor) {
        let var = Var::from_tensor(x).unwrap();
        let y = f(var.as_tensor()).unwrap();
        let w = randn(y.dims(), seed, 1.0);
        let loss = (&y * &w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        (
            y,
            grads
                .get(var.as_tensor())
                .expect("input gets a gradient")
                .clone(),
        )
    }

    /// Central differences (f32, step 1e-3) of `Σ f(x)·w` at a spread of entries of `x`,
    /// compared with the analytic gradient: |a − n| ≤ 1e-2·max(|a|, |n|) + 2e-3.
    pub fn check_fd(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor, seed: u64) {
        let (y, analytic) = grad_of(f, x, seed);
        let w = randn(y.dims(), seed, 1.0);
        let analytic = flat(&analytic);
        let base = flat(x);
        let loss = |v: &[f32]| -> f64 {
            let t = Tensor::from_slice(v, x.dims(), &Device::Cpu).unwrap();
            let y = flat(&f(&t).unwrap());
            y.iter()
                .zip(flat(&w))
                .map(|(a, b)| *a as f64 * b as f64)
                .sum()
        };
        let h = 1e-3f32;
        let step = (base.len() / 17).max(1);
        for i in (0..base.len()).step_by(step) {
            let (mut p, mut m) = (base.clone(), base.clone());
            p[i] += h;
            m[i] -= h;
            let num = ((loss(&p) - loss(&m)) / (2.0 * h as f64)) as f32;
            let a = analytic[i];
            let tol = 1e-2 * a.abs().max(num.abs()) + 2e-3;
            assert!(
                (a - num).abs() <= tol,
                "entry {i}: analytic {a} vs numeric {num}"
            );
        }
    }

    /// Runs `f` inside a fresh rayon pool with `threads` threads.
    pub fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }
}


#[cfg(test)]
mod tests {
    use super::fast_exp;
    use super::testing::{flat, randn};
    use crate::nn::ops;
    use candle_core::{Result, Tensor, Var};

    /// Outputs and input gradients of a chain through every kernel that runs in `wide`.
    fn chain_bits() -> Result<Vec<u32>> {
        let (b, t, h, dh) = (3, 37, 4, 16);
        let vars: Vec<Var> = (0..4).map(|i| Var::from_tensor(&randn(&[b, t, h * dh], 10 + i, 1.0))).collect::<Result<_>>()?;
        let bias = Var::from_tensor(&randn(&[h, 8], 20, 1.0))?;
        let (gamma, beta) = (Var::from_tensor(&randn(&[h * dh], 21, 1.0))?, Var::from_tensor(&randn(&[h * dh], 22, 1.0))?);
        let z1 = ops::causal_attention_bias(&vars[0], &vars[1], &vars[2], &bias, h, h, 0.25)?;
        let z2 = ops::causal_attention(&z1, &vars[3], &vars[2], h, h, 0.25)?;
        let y = ops::layer_norm(&z2, &gamma, &beta, 1e-5)?;
        let y = (ops::gelu(&y)? + ops::relu(&y)?)?;
        let logits = y.reshape((b * t, h * dh))?;
        let targets = Tensor::from_vec((0..b * t).map(|i| (i * 7 % (h * dh)) as u32).collect::<Vec<_>>(), b * t, logits.device())?;
        let loss = ops::cross_entropy(&logits, &targets, None)?;
        let grads = loss.backward()?;
        let mut out: Vec<u32> = flat(&loss.reshape(1)?).iter().map(|x| x.to_bits()).collect();
        for v in vars.iter().chain([&bias, &gamma, &beta]) {
            out.extend(flat(grads.get(v.as_tensor()).expect("gradient")).iter().map(|x| x.to_bits()));
        }
        Ok(out)
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn wide_and_baseline_vectors_give_the_same_bits() -> Result<()> {
        use std::sync::atomic::Ordering;
        let wide = chain_bits()?;
        super::NARROW.store(true, Ordering::Relaxed);
        let narrow = chain_bits();
        super::NARROW.store(false, Ordering::Relaxed);
        assert!(wide == narrow?, "results depend on the vector width");
        Ok(())
    }

    #[test]
    fn fast_exp_is_accurate_over_the_whole_range() {
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(-100.0), 0.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((fast_exp(x) as f64 - want) / want).abs());
            x += 0.000_37;
        }
        assert!(worst < 4e-7, "max relative error {worst}");
        // n = 128 at the top of the range must not overflow the exponent field.
        assert!(fast_exp(88.3).is_finite() && fast_exp(88.3) > 1e38);
    }
}
