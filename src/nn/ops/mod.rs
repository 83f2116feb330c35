//! Fused CPU kernels with analytic backward (placeholder: composed candle ops).
//!
//! Every public function here is differentiable through candle's autograd.
//! The composed versions are the reference/oracle and the non-CPU fallback.

use candle_core::{DType, Result, Tensor, D};

/// GELU, tanh approximation. `x: any shape -> same shape`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

/// ReLU. `x: any shape -> same shape`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// Scaled, causally masked softmax of attention scores.
/// `scores: (batch, head_index, query_pos, key_pos)`; entry (q, k) is masked when
/// `k > q + (key_len - query_len)`. Returns softmax(scale * scores) with masked entries 0.
pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    let (q_len, k_len) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
    let offset = k_len - q_len;
    let mask: Vec<f32> = (0..q_len)
        .flat_map(|q| (0..k_len).map(move |k| if k > q + offset { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (q_len, k_len), scores.device())?;
    let s = (scores * scale)?.broadcast_add(&mask)?;
    candle_nn::ops::softmax(&s, D::Minus1)
}

/// LayerNorm over the last dimension: `y = (x - mean) * rstd * gamma + beta`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(gamma)?.broadcast_add(beta)
}

/// RMSNorm over the last dimension: `y = x / sqrt(mean(x^2) + eps) * gamma`.
pub fn rms_norm(x: &Tensor, gamma: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(gamma)
}

/// Weighted mean softmax cross-entropy.
/// `logits: (n, vocab)` f32, `targets: (n,)` u32, `weights: (n,)` f32 or None (all ones).
/// Returns a scalar: sum_i w_i * CE_i / sum_i w_i (0 when all weights are 0).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    match weights {
        None => nll.mean_all(),
        Some(w) => {
            let total = w.sum_all()?.to_scalar::<f32>()?;
            let denom = if total > 0.0 { total } else { 1.0 };
            (nll * w)?.sum_all()? / denom as f64
        }
    }
}

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

/// In-place AdamW update of `param` (any shape, f32, contiguous) from `grad`;
/// `m`, `v` hold the moment estimates flattened (len = param.elem_count()).
pub fn adamw_update(param: &candle_core::Var, grad: &Tensor, m: &mut [f32], v: &mut [f32], h: &AdamWHyper) -> Result<()> {
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

/// In-place SGD-with-momentum update; `buf` is the momentum buffer (len = elem_count).
pub fn sgd_update(param: &candle_core::Var, grad: &Tensor, buf: &mut [f32], h: &SgdHyper) -> Result<()> {
    let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
    let mut p: Vec<f32> = param.flatten_all()?.to_vec1()?;
    for i in 0..p.len() {
        let gi = g[i] + h.weight_decay as f32 * p[i];
        buf[i] = h.momentum as f32 * buf[i] + gi;
        p[i] -= h.lr as f32 * buf[i];
    }
    param.set(&Tensor::from_vec(p, param.shape(), param.device())?)
}

/// Sum of squares of all entries, accumulated in f64 in a fixed order.
pub fn sum_sq(t: &Tensor) -> Result<f64> {
    let v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    Ok(v.iter().map(|&x| (x as f64) * (x as f64)).sum())
}
