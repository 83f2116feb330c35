//! `latentlab bench --config recursive-step`: one training step of the discrete recurrent
//! model as the study runs it (32 graphs of the training distribution, one teacher-forced
//! transition each, the factor loss, backward, clip and AdamW), timed with the harness of
//! `train::bench` (median of the timed steps, phases, GEMM roofline, per-op breakdown).

use std::time::Instant;

use candle_core::{Device, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::RecursiveStudy;
use super::task::{factor_loss, sharded_transition_grads, transition_batch, GraphBatch};
use crate::data::compgraph::{encode, sample_problem, Encoded};
use crate::interp::hooks::Hooks;
use crate::models::{Recurrent, RecurrentConfig};
use crate::nn::{Attention, Block, Params};
use crate::train::bench::{median, time_matmuls, time_op, BenchResult};
use crate::train::Optimizer;

/// Graphs per benchmarked step.
pub const BENCH_GRAPHS: usize = 32;

/// The GEMMs of one step (forward and both backward products of every weight, the
/// attention products); the embedding gathers and the position terms are not GEMMs.
fn gemm_shapes(m: &RecurrentConfig, batch: usize, t: usize) -> Vec<(usize, usize, usize, usize)> {
    let rows = batch * t;
    let d = m.d_model;
    let (h, dh) = (m.n_heads, m.d_head());
    let mut out = Vec::new();
    let mut linear = |din: usize, dout: usize| {
        out.push((1, rows, din, dout));
        out.push((1, dout, rows, din));
        out.push((1, rows, dout, din));
    };
    for _ in 0..m.n_layers {
        for _ in 0..4 {
            linear(d, d);
        }
        linear(d, m.d_mlp);
        linear(m.d_mlp, d);
    }
    for &v in &m.factor_sizes {
        linear(d, v);
    }
    let bh = batch * h;
    for _ in 0..m.n_layers {
        out.extend([(bh, t, dh, t), (bh, t, t, dh), (bh, t, t, dh), (bh, t, dh, t), (bh, dh, t, t), (bh, t, t, dh)]);
    }
    out
}

/// The benchmarked study: the default model on the spec's full-profile graphs (N = 16,
/// depth ≤ 4: ≈ 83 tokens, the reference's step), 32 graphs in two batch slices, no EC.
/// Pinned here so the figures in BENCHMARKS.md stay comparable when the study's defaults move.
pub fn bench_study() -> RecursiveStudy {
    let mut s = RecursiveStudy::default();
    s.data.n_nodes = 16;
    s.data.max_depth = 4;
    s.model.factor_sizes = s.data.vocab().sizes().to_vec();
    s.train.batch_size = BENCH_GRAPHS;
    s.train.shards = 2;
    s
}

/// Time `steps` steps after `warmup` untimed ones. The graphs are drawn beforehand (eight
/// fixed batches, cycled); the `data` phase times building one transition batch.
/// `rope`: partial RoPE instead of the default fused distance bias (`recursive-step-rope`).
pub fn bench_recursive_step(warmup: usize, steps: usize, rope: bool) -> Result<BenchResult> {
    let mut study = bench_study();
    if rope {
        study.model.pos_bias_window = 0;
    }
    let dev = Device::Cpu;
    let cfg = study.model_for(&super::config::Variant { name: "discrete".into(), method: super::config::Method::Discrete, n_layers: 3, error_correction: false, steps: None });
    let model = Recurrent::new(&cfg, 0, &dev)?;
    let vars = model.params().trainable();
    let mut opt = Optimizer::new(study.train.optimizer);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let vocab = study.data.vocab();
    let graphs: Vec<Vec<Encoded>> = (0..8)
        .map(|_| (0..BENCH_GRAPHS).map(|_| encode(&sample_problem(&study.data, &mut rng), &vocab).expect("generated graphs fit")).collect())
        .collect();
    let batch_of = |i: usize, rng: &mut ChaCha8Rng| -> GraphBatch {
        let refs: Vec<&Encoded> = graphs[i % graphs.len()].iter().collect();
        transition_batch(&refs, &vocab, rng, None)
    };
    let (mut dt, mut fw, mut bw, mut cl, mut op, mut total) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut lens = Vec::new();
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let b = batch_of(i, &mut rng);
        let x = b.input_tensor(&dev)?;
        let t1 = Instant::now();
        // Sliced steps (the study's default) interleave forward and backward: the whole
        // goes to `forward`.
        let (grads, t2) = if study.train.shards > 1 {
            (sharded_transition_grads(&model, &b, study.train.shards)?.1, None)
        } else {
            let logits = model.step(&x, &mut Hooks::none())?;
            let loss = factor_loss(&logits, &b.targets, &b.weights, &dev)?;
            loss.to_scalar::<f32>()?;
            let t2 = Instant::now();
            (loss.backward()?, Some(t2))
        };
        let t3 = Instant::now();
        let t2 = t2.unwrap_or(t3);
        let norm = Optimizer::grad_norm(&vars, &grads, i as u64).map_err(candle_core::Error::wrap)?;
        let c = study.train.clip_norm;
        let scale = if c > 0.0 && norm > c { c / (norm + 1e-6) } else { 1.0 };
        let t4 = Instant::now();
        opt.step(&vars, &grads, study.train.lr, scale, &study.train).map_err(candle_core::Error::wrap)?;
        let t5 = Instant::now();
        if i >= warmup {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            dt.push(ms(t0, t1));
            fw.push(ms(t1, t2));
            bw.push(ms(t2, t3));
            cl.push(ms(t3, t4));
            op.push(ms(t4, t5));
            total.push(ms(t0, t5));
            lens.push(b.len as f64);
        }
    }
    let t = median(lens.clone()).round() as usize;
    let mean_tokens: f64 = graphs.iter().flatten().map(|e| e.len() as f64).sum::<f64>() / (graphs.len() * BENCH_GRAPHS) as f64;
    let shapes = gemm_shapes(&cfg, BENCH_GRAPHS, t);
    let (ms_mm, flop) = time_matmuls(&shapes, 5.max(steps / 2), &dev)?;
    let ms_step = median(total);
    let mut ops = vec![(format!("data: transition batch ({BENCH_GRAPHS} graphs, padded len {t}, mean {mean_tokens:.0} tokens)"), median(dt))];
    ops.extend(op_breakdown(&cfg, &model, &graphs[0], &vocab, &dev)?);
    Ok(BenchResult {
        name: if rope { "recursive-step-rope" } else { "recursive-step" }.into(),
        threads: candle_core::utils::get_num_threads(),
        steps,
        ms_step,
        shards: study.train.shards,
        ms_forward: median(fw),
        ms_backward: median(bw),
        ms_clip: median(cl),
        ms_optimizer: median(op),
        tokens_per_s: (BENCH_GRAPHS * t) as f64 / (ms_step / 1e3),
        gflop_per_step: flop / 1e9,
        gflops: flop / 1e9 / (ms_step / 1e3),
        ms_matmul_only: ms_mm,
        matmul_gflops: flop / 1e9 / (ms_mm / 1e3),
        params: model.params().n_trainable(),
        ops,
    })
}

/// Forward + backward of the step's pieces at its shapes (ms): embedding, one attention
/// layer, one block, the whole encoder, readout + loss.
fn op_breakdown(cfg: &RecurrentConfig, model: &Recurrent, graphs: &[Encoded], vocab: &crate::data::compgraph::Vocab, dev: &Device) -> Result<Vec<(String, f64)>> {
    let refs: Vec<&Encoded> = graphs.iter().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let b = transition_batch(&refs, vocab, &mut rng, None);
    let x = b.input_tensor(dev)?;
    let (bs, t, d) = (b.batch, b.len, cfg.d_model);
    let reps = 10;
    let mut none = Hooks::none();
    let params = Params::new(0, dev);
    let attn = Attention::new(&cfg.block().attn, 0, &params.root().pp("attn"))?;
    let block = Block::new(&cfg.block(), 0, &params.root().pp("block"))?;
    let resid = candle_core::Var::randn(0f32, 1., (bs, t, d), dev)?;
    let hidden = candle_core::Var::randn(0f32, 1., (bs, t, d), dev)?;
    let mut out = Vec::new();
    out.push((format!("embed ({bs},{t},4 factors)"), time_op(reps, || model.embed(&x, &mut none)?.sum_all()?.backward().map(|_| ()))?));
    out.push((format!("attention layer ({bs},{t},{d}), {} heads", cfg.n_heads), time_op(reps, || attn.forward(&resid, &mut none)?.sum_all()?.backward().map(|_| ()))?));
    out.push((format!("block ({bs},{t},{d})"), time_op(reps, || block.forward(&resid, &mut none)?.sum_all()?.backward().map(|_| ()))?));
    out.push((format!("encoder, {} blocks + final LN", cfg.n_layers), time_op(reps, || model.encode(&resid, &mut none)?.sum_all()?.backward().map(|_| ()))?));
    out.push(("readout + factor loss".into(), time_op(reps, || {
        let logits = model.readout(&hidden, &mut none)?;
        factor_loss(&logits, &b.targets, &b.weights, dev)?.backward().map(|_| ())
    })?));
    Ok(out)
}
