//! In-place optimizer updates (AdamW, arXiv:1711.05101; SGD with momentum) and the squared norm
//! used for gradient clipping, as parallel CPU kernels on the parameter storage (no new tensor per
//! step). PyTorch semantics. Off the CPU (or for non-f32 parameters) the `*_reference` versions run.

// AdamW: m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  p ← p·(1 − lr·wd) − (lr/bc1)·m / (√(v/bc2) + eps)
//        bc1 = 1 − β1^step, bc2 = 1 − β2^step
// SGD:   g' = g + wd·p;  b ← μ·b + g';  p ← p − lr·b
// sum_sq: Σ x² in f64, partial sums per CHUNK elements, chunks added in order (thread-count free).

use super::cpu::{self, CHUNK};
use candle_core::{bail, CpuStorage, DType, InplaceOp2, Layout, Result, Storage, Tensor, Var};
use rayon::prelude::*;
use std::cell::RefCell;

/// AdamW hyper-parameters for one update (PyTorch semantics, decoupled decay).
#[derive(Debug, Clone, Copy)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1-based step count used for bias correction.
    pub step: u64,
}

/// SGD hyper-parameters (PyTorch semantics: coupled weight decay, no dampening).
#[derive(Debug, Clone, Copy)]
pub struct SgdHyper {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

#[inline(always)]
fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamWHyper) {
    let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
    let bc2 = (1.0 - h.beta2.powi(h.step as i32)) as f32;
    let step_size = (h.lr / (1.0 - h.beta1.powi(h.step as i32))) as f32;
    let decay = (1.0 - h.lr * h.weight_decay) as f32;
    let eps = h.eps as f32;
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        let denom = (v[i] / bc2).sqrt() + eps;
        p[i] = p[i] * decay - step_size * m[i] / denom;
    }
}

#[inline(always)]
fn sgd_chunk(p: &mut [f32], g: &[f32], buf: &mut [f32], h: &SgdHyper) {
    let (lr, mu, wd) = (h.lr as f32, h.momentum as f32, h.weight_decay as f32);
    let n = p.len();
    let (g, buf) = (&g[..n], &mut buf[..n]);
    for i in 0..n {
        let gi = g[i] + wd * p[i];
        buf[i] = mu * buf[i] + gi;
        p[i] -= lr * buf[i];
    }
}

/// In-place kernel on the parameter; the optimizer state is borrowed for the duration of one call.
enum Update<'a> {
    AdamW {
        m: RefCell<&'a mut [f32]>,
        v: RefCell<&'a mut [f32]>,
        h: AdamWHyper,
    },
    Sgd {
        buf: RefCell<&'a mut [f32]>,
        h: SgdHyper,
    },
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        match self {
            Update::AdamW { .. } => "latentlab-adamw",
            Update::Sgd { .. } => "latentlab-sgd",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let name = self.name();
        let p = cpu::slice_mut(s1, l1, name)?;
        let g = cpu::slice(s2, l2, name)?;
        if g.len() != p.len() {
            bail!(
                "{name}: parameter has {} elements, gradient {}",
                p.len(),
                g.len()
            );
        }
        match self {
            Update::AdamW { m, v, h } => {
                let (mut m, mut v) = (m.borrow_mut(), v.borrow_mut());
                if m.len() != p.len() || v.len() != p.len() {
                    bail!(
                        "{name}: parameter has {} elements, state {}/{}",
                        p.len(),
                        m.len(),
                        v.len()
                    );
                }
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                    .for_each(|((p, g), (m, v))| cpu::wide(#[inline(always)] || adamw_chunk(p, g, m, v, h)));
            }
            Update::Sgd { buf, h } => {
                let mut buf = buf.borrow_mut();
                if buf.len() != p.len() {
                    bail!(
                        "{name}: parameter has {} elements, momentum buffer {}",
                        p.len(),
                        buf.len()
                    );
                }
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(buf.par_chunks_mut(CHUNK))
                    .for_each(|((p, g), b)| cpu::wide(#[inline(always)] || sgd_chunk(p, g, b, h)));
            }
        }
        Ok(())
    }
}

fn fused_update_ok(param: &Var, grad: &Tensor) -> bool {
    cpu::fused_ok(param.as_tensor()) && cpu::fused_ok(grad) && param.as_tensor().is_contiguous()
}

/// In-place AdamW update of `param` (any shape, f32, contiguous) from `grad`;
/// `m`, `v` hold the moment estimates flattened (len = param.elem_count()).
pub fn adamw_update(
    param: &Var,
    grad: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    h: &AdamWHyper,
) -> Result<()> {
    if !fused_update_ok(param, grad) {
        return adamw_update_reference(param, grad, m, v, h);
    }
    let op = Update::AdamW {
        m: RefCell::new(m),
        v: RefCell::new(v),
        h: *h,
    };
    param.as_tensor().inplace_op2(&grad.contiguous()?, &op)
}

/// In-place SGD-with-momentum update; `buf` is the momentum buffer (len = elem_count).
pub fn sgd_update(param: &Var, grad: &Tensor, buf: &mut [f32], h: &SgdHyper) -> Result<()> {
    if !fused_update_ok(param, grad) {
        return sgd_update_reference(param, grad, buf, h);
    }
    let op = Update::Sgd {
        buf: RefCell::new(buf),
        h: *h,
    };
    param.as_tensor().inplace_op2(&grad.contiguous()?, &op)
}

/// Sum of squares of all entries, accumulated in f64 in a fixed order.
pub fn sum_sq(t: &Tensor) -> Result<f64> {
    if !t.device().is_cpu() {
        return sum_sq_reference(t);
    }
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(storage) = &*storage else {
        bail!("sum_sq: expected CPU storage")
    };
    let x = cpu::slice(storage, layout, "sum_sq")?;
    let partial: Vec<f64> = x
        .par_chunks(CHUNK)
        .map(|c| {
            let mut lanes = [0f64; 4];
            for q in c.chunks(4) {
                for (k, &v) in q.iter().enumerate() {
                    lanes[k] += v as f64 * v as f64;
                }
            }
            (lanes[0] + lanes[2]) + (lanes[1] + lanes[3])
        })
        .collect();
    Ok(partial.iter().sum())
}

/// Composed AdamW (copies through host vectors): the test oracle and the non-CPU fallback.
pub fn adamw_update_reference(
    param: &Var,
    grad: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    h: &AdamWHyper,
) -> Result<()> {
    let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
    let mut p: Vec<f32> = param.flatten_all()?.to_vec1()?;
    let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    let step_size = (h.lr / bc1) as f32;
    let decay = (1.0 - h.lr * h.weight_decay) as f32;
    for i in 0..p.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        let denom = (v[i] / bc2 as f32).sqrt() + h.eps as f32;
        p[i] = p[i] * decay - step_size * m[i] / denom;
    }
    param.set(&Tensor::from_vec(p, param.shape(), param.device())?)
}

/// Composed SGD (copies through host vectors): the test oracle and the non-CPU fallback.
pub fn sgd_update_reference(
    param: &Var,
    grad: &Tensor,
    buf: &mut [f32],
    h: &SgdHyper,
) -> Result<()> {
    let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
    let mut p: Vec<f32> = param.flatten_all()?.to_vec1()?;
    for i in 0..p.len() {
        let gi = g[i] + h.weight_decay as f32 * p[i];
        buf[i] = h.momentum as f32 * buf[i] + gi;
        p[i] -= h.lr as f32 * buf[i];
    }
    param.set(&Tensor::from_vec(p, param.shape(), param.device())?)
}

/// Sequential f64 sum of squares: the test oracle and the non-CPU fallback.
pub fn sum_sq_reference(t: &Tensor) -> Result<f64> {
    let v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    Ok(v.iter().map(|&x| (x as f64) * (x as f64)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::cpu::testing::*;

    const ADAM: AdamWHyper = AdamWHyper {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 1,
    };
    const SGD: SgdHyper = SgdHyper {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-3,
    };

    /// Parameters, m, v after `steps` AdamW updates (fused or reference), with a fresh gradient per step.
    fn run_adamw(
        fused: bool,
        x: &Tensor,
        steps: u64,
        grad_t: bool,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let p = Var::from_tensor(x).unwrap();
        let (mut m, mut v) = (vec![0f32; x.elem_count()], vec![0f32; x.elem_count()]);
        for step in 1..=steps {
            let g = randn(&[x.dim(1).unwrap(), x.dim(0).unwrap()], 100 + step, 1.0);
            let g = if grad_t {
                g.t().unwrap()
            } else {
                g.reshape(x.shape()).unwrap()
            };
            let h = AdamWHyper { step, ..ADAM };
            let f = if fused {
                adamw_update
            } else {
                adamw_update_reference
            };
            f(&p, &g, &mut m, &mut v, &h).unwrap();
        }
        (flat(p.as_tensor()), m, v)
    }

    fn run_sgd(fused: bool, x: &Tensor, steps: u64) -> (Vec<f32>, Vec<f32>) {
        let p = Var::from_tensor(x).unwrap();
        let mut buf = vec![0f32; x.elem_count()];
        for step in 1..=steps {
            let g = randn(x.dims(), 200 + step, 1.0);
            let f = if fused {
                sgd_update
            } else {
                sgd_update_reference
            };
            f(&p, &g, &mut buf, &SGD).unwrap();
        }
        (flat(p.as_tensor()), buf)
    }

    #[test]
    fn optim_matches_reference_bitwise() {
        let x = randn(&[300, 129], 1, 1.0);
        assert_eq!(
            run_adamw(true, &x, 3, false),
            run_adamw(false, &x, 3, false)
        );
        assert_eq!(run_sgd(true, &x, 3), run_sgd(false, &x, 3));
    }

    #[test]
    fn optim_updates_in_place() {
        let p = Var::from_tensor(&randn(&[8, 8], 2, 1.0)).unwrap();
        let alias = p.as_tensor().clone();
        let (mut m, mut v) = (vec![0f32; 64], vec![0f32; 64]);
        adamw_update(&p, &randn(&[8, 8], 3, 1.0), &mut m, &mut v, &ADAM).unwrap();
        assert_eq!(
            flat(&alias),
            flat(p.as_tensor()),
            "storage updated in place"
        );
        assert!(adamw_update(&p, &randn(&[8, 8], 3, 1.0), &mut m[..10], &mut v, &ADAM).is_err());
    }

    #[test]
    fn optim_non_contiguous_gradient() {
        let x = randn(&[40, 70], 4, 1.0);
        assert_eq!(run_adamw(true, &x, 2, true), run_adamw(false, &x, 2, true));
        let t = randn(&[70, 40], 5, 3.0).t().unwrap();
        let (a, b) = (sum_sq(&t).unwrap(), sum_sq_reference(&t).unwrap());
        assert!((a - b).abs() <= 1e-12 * b, "{a} vs {b}");
    }

    #[test]
    fn optim_deterministic_across_threads() {
        let x = randn(&[500, 300], 6, 1.0);
        let run = || {
            (
                run_adamw(true, &x, 2, false),
                run_sgd(true, &x, 2),
                sum_sq(&x).unwrap().to_bits(),
            )
        };
        assert_eq!(on_threads(1, run), on_threads(2, run));
    }
}
