//! Training-step benchmarks of named standard configs: median step time after
//! warm-up, split into phases, against a matmul-only roofline of the same
//! GEMM shapes, plus per-op timings of the fused kernels at model shapes.

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::{OptimizerKind, TrainConfig};
use super::lm_task::{lm_loss, lm_loss_grads};
use super::optim::Optimizer;
use crate::data::noisy_recall::{NoisyRecallConfig, NoisyRecallSampler};
use crate::data::{induction, TokenBatch};
use crate::models::{Gpt, GptConfig, LanguageModel};
use crate::nn::{ops, Act, FfnKind};

/// A named benchmark configuration.
pub struct BenchConfig {
    pub name: &'static str,
    pub model: GptConfig,
    pub train: TrainConfig,
    pub seq_len: usize,
    /// The batches timed.
    pub data: BenchData,
}

/// Which batches a bench config trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchData {
    /// Induction sequences, loss on the second half of each.
    Induction,
    /// Noisy in-context recall at α = 0.5 (loss at trigger occurrences ≥ 2, ~1 in 8 positions).
    NoisyRecall,
}

/// The standard configs (`latentlab bench --config NAME`).
pub fn standard_configs() -> Vec<BenchConfig> {
    // Two batch slices computed concurrently, one per core (`TrainConfig::shards`).
    let adamw = TrainConfig { optimizer: OptimizerKind::Adamw, clip_norm: 1.0, batch_size: 64, shards: 2, ..Default::default() };
    let d128 = GptConfig::default();
    let d64 = GptConfig { d_model: 64, d_mlp: 256, ..GptConfig::default() };
    let trunc = GptConfig::truncation(64, 64, 65);
    let sgd = TrainConfig {
        optimizer: OptimizerKind::Sgd,
        lr: 0.03,
        momentum: 0.9,
        weight_decay: 1e-4,
        clip_norm: 0.0,
        batch_size: 64,
        // As the truncation study trains: two batch slices, one per core.
        shards: 2,
        ..Default::default()
    };
    vec![
        BenchConfig { name: "small-gpt-d128", model: d128, train: adamw.clone(), seq_len: 64, data: BenchData::Induction },
        BenchConfig { name: "small-gpt-d64", model: d64, train: adamw, seq_len: 64, data: BenchData::Induction },
        BenchConfig { name: "noisy-recall-s", model: trunc, train: sgd, seq_len: 64, data: BenchData::NoisyRecall },
    ]
}

/// Timings of one config (milliseconds are medians over the timed steps).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub name: String,
    pub threads: usize,
    pub steps: usize,
    pub ms_step: f64,
    /// Batch slices computed concurrently (forward and backward timed together).
    pub shards: usize,
    pub ms_forward: f64,
    pub ms_backward: f64,
    pub ms_clip: f64,
    pub ms_optimizer: f64,
    pub tokens_per_s: f64,
    pub gflop_per_step: f64,
    pub gflops: f64,
    pub ms_matmul_only: f64,
    pub matmul_gflops: f64,
    pub params: usize,
    pub ops: Vec<(String, f64)>,
}

/// Median of `v` (non-empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The GEMMs of one training step as (batch, m, k, n) with their repeat count:
/// forward `x·Wᵀ`, backward `g·W` and `gᵀ·x` for each weight; attention
/// `q·kᵀ`, `p·v` and their four backward products (`dS·K` only for queries that
/// need a gradient: not an identity W_Q over frozen embeddings).
/// With `scored = Some(n)` the last block's queries, attention pattern, `W_O`, MLP and
/// the unembedding see `n` rows (`Gpt::forward_rows`, used by the loss when few
/// positions are scored; `n / batch` queries per sequence against all keys).
fn gemm_shapes(m: &GptConfig, batch: usize, t: usize, scored: Option<usize>) -> Vec<(usize, usize, usize, usize)> {
    let all_rows = batch * t;
    let d = m.d_model;
    let (h, dh) = (m.n_heads, m.d_head());
    let mut out = Vec::new();
    let linear = |out: &mut Vec<_>, rows: usize, din: usize, dout: usize, input_grad: bool| {
        out.push((1, rows, din, dout));
        out.push((1, dout, rows, din));
        if input_grad {
            out.push((1, rows, dout, din));
        }
    };
    for l in 0..m.n_layers {
        let first = l == 0;
        let input_grad = !first || !m.freeze_embed;
        let last_rows = if l + 1 == m.n_layers { scored } else { None };
        let q_rows = last_rows.unwrap_or(all_rows);
        if !m.identity_q {
            linear(&mut out, q_rows, d, h * dh, input_grad);
        }
        linear(&mut out, all_rows, d, m.n_kv_heads() * dh, input_grad);
        linear(&mut out, all_rows, d, m.n_kv_heads() * dh, input_grad);
        linear(&mut out, q_rows, h * dh, d, true);
        match m.ffn_kind(l) {
            FfnKind::Mlp => {
                linear(&mut out, q_rows, d, m.d_mlp, true);
                linear(&mut out, q_rows, m.d_mlp, d, true);
                if m.act == Act::Swiglu {
                    linear(&mut out, q_rows, d, m.d_mlp, true);
                }
            }
            FfnKind::Linear => linear(&mut out, q_rows, d, d, true),
            FfnKind::None => {}
        }
        let bh = batch * h;
        let tq = last_rows.map_or(t, |n| n.div_ceil(batch.max(1)));
        out.extend([(bh, tq, dh, t), (bh, tq, t, dh), (bh, tq, dh, t), (bh, t, tq, dh), (bh, t, tq, dh)]);
        if input_grad || !m.identity_q {
            out.push((bh, tq, t, dh));
        }
    }
    let rows = scored.unwrap_or(all_rows);
    out.push((1, rows, d, m.vocab_size));
    out.push((1, rows, m.vocab_size, d));
    if m.unembed != crate::models::UnembedKind::FrozenUniform {
        out.push((1, m.vocab_size, rows, d));
    }
    out
}

/// Time the GEMMs alone with the kernels the model uses: single products
/// through the fused linear op (faer), batched attention products through
/// candle's batched matmul (the `gemm` crate, as in the fused attention).
pub fn time_matmuls(shapes: &[(usize, usize, usize, usize)], reps: usize, dev: &Device) -> Result<(f64, f64)> {
    let mut mats = Vec::new();
    let mut flop = 0.0;
    for &(b, m, k, n) in shapes {
        let a = if b == 1 { Tensor::randn(0f32, 1., (m, k), dev)? } else { Tensor::randn(0f32, 1., (b, m, k), dev)? };
        let w = if b == 1 { Tensor::randn(0f32, 1., (n, k), dev)? } else { Tensor::randn(0f32, 1., (b, k, n), dev)? };
        flop += 2.0 * (b * m * k * n) as f64;
        mats.push((b, a, w));
    }
    let mut times = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        for (b, a, w) in &mats {
            if *b == 1 {
                ops::linear(a, w, None)?;
            } else {
                a.matmul(w)?;
            }
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(times), flop))
}

/// Median milliseconds of `reps` calls of `f` after one untimed call.
pub fn time_op(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        f()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}

/// Forward + backward of each fused op at the model's shapes (ms).
fn op_breakdown(m: &GptConfig, batch: usize, t: usize, dev: &Device) -> Result<Vec<(String, f64)>> {
    let d = m.d_model;
    let var = |shape: &[usize]| -> Result<candle_core::Var> { candle_core::Var::randn(0f32, 1., shape, dev) };
    let x = var(&[batch, t, d])?;
    let gamma = var(&[d])?;
    let beta = var(&[d])?;
    let hid = var(&[batch, t, m.d_mlp])?;
    let scores = var(&[batch, m.n_heads, t, t])?;
    let logits = var(&[batch * t, m.vocab_size])?;
    let targets = Tensor::zeros(batch * t, candle_core::DType::U32, dev)?;
    let reps = 10;
    let mut out = Vec::new();
    out.push((format!("layer_norm ({batch},{t},{d})"), time_op(reps, || {
        ops::layer_norm(&x, &gamma, &beta, 1e-5)?.sum_all()?.backward().map(|_| ())
    })?));
    out.push((format!("gelu ({batch},{t},{})", m.d_mlp), time_op(reps, || ops::gelu(&hid)?.sum_all()?.backward().map(|_| ()))?));
    out.push((format!("relu ({batch},{t},{})", m.d_mlp), time_op(reps, || ops::relu(&hid)?.sum_all()?.backward().map(|_| ()))?));
    out.push((format!("causal_softmax ({batch},{},{t},{t})", m.n_heads), time_op(reps, || {
        ops::causal_softmax(&scores, 0.125)?.sum_all()?.backward().map(|_| ())
    })?));
    out.push((format!("cross_entropy ({},{})", batch * t, m.vocab_size), time_op(reps, || {
        ops::cross_entropy(&logits, &targets, None)?.backward().map(|_| ())
    })?));
    Ok(out)
}

/// Time `steps` training steps of `cfg` after `warmup` untimed ones.
pub fn bench(cfg: &BenchConfig, warmup: usize, steps: usize) -> Result<BenchResult> {
    let dev = Device::Cpu;
    let model = Gpt::new(&cfg.model, 0, &dev)?;
    let vars = model.params().trainable();
    let mut opt = Optimizer::new(cfg.train.optimizer);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let batch = cfg.train.batch_size;
    let batches: Vec<TokenBatch> = match cfg.data {
        BenchData::Induction => (0..4).map(|_| induction::sample(batch, cfg.seq_len, cfg.model.vocab_size, &mut rng)).collect(),
        BenchData::NoisyRecall => {
            let data = NoisyRecallConfig { seq_len: cfg.seq_len, ..Default::default() };
            let sampler = NoisyRecallSampler::new(&data).map_err(candle_core::Error::wrap)?;
            (0..4).map(|_| sampler.sample(batch, &mut rng).token_batch()).collect()
        }
    };
    // Rows the loss reads (the last block's MLP and the unembedding run on these only).
    let scored = batches[0].weights.iter().filter(|w| **w != 0.0).count();
    let (mut fw, mut bw, mut cl, mut op, mut total) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let b = &batches[i % batches.len()];
        // Sharded steps interleave forward and backward: the whole goes to `forward`.
        let (grads, t1) = if cfg.train.shards > 1 {
            (lm_loss_grads(&model, b, cfg.train.shards)?.1, None)
        } else {
            let loss = lm_loss(&model, b)?;
            loss.to_scalar::<f32>()?;
            let t1 = Instant::now();
            (loss.backward()?, Some(t1))
        };
        let t2 = Instant::now();
        let t1 = t1.unwrap_or(t2);
        let norm = Optimizer::grad_norm(&vars, &grads, i as u64).map_err(candle_core::Error::wrap)?;
        let c = cfg.train.clip_norm;
        let scale = if c > 0.0 && norm > c { c / (norm + 1e-6) } else { 1.0 };
        let t3 = Instant::now();
        opt.step(&vars, &grads, cfg.train.lr, scale, &cfg.train).map_err(candle_core::Error::wrap)?;
        let t4 = Instant::now();
        if i >= warmup {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            fw.push(ms(t0, t1));
            bw.push(ms(t1, t2));
            cl.push(ms(t2, t3));
            op.push(ms(t3, t4));
            total.push(ms(t0, t4));
        }
    }
    let sparse = scored * 3 < batch * cfg.seq_len;
    let shapes = gemm_shapes(&cfg.model, batch, cfg.seq_len, sparse.then_some(scored));
    let (ms_mm, flop) = time_matmuls(&shapes, 5.max(steps / 2), &dev)?;
    let ms_step = median(total);
    let tokens = (batch * cfg.seq_len) as f64;
    Ok(BenchResult {
        name: cfg.name.to_string(),
        threads: candle_core::utils::get_num_threads(),
        steps,
        ms_step,
        shards: cfg.train.shards,
        ms_forward: median(fw),
        ms_backward: median(bw),
        ms_clip: median(cl),
        ms_optimizer: median(op),
        tokens_per_s: tokens / (ms_step / 1e3),
        gflop_per_step: flop / 1e9,
        gflops: flop / 1e9 / (ms_step / 1e3),
        ms_matmul_only: ms_mm,
        matmul_gflops: flop / 1e9 / (ms_mm / 1e3),
        params: model.params().n_trainable(),
        ops: op_breakdown(&cfg.model, batch, cfg.seq_len, &dev)?,
    })
}
