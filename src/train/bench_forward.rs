//! Forward-only benchmarks of pretrained-architecture shapes with random weights
//! (`latentlab bench --config pythia-160m-forward`): the model is written once as a
//! Hugging Face folder in a temp dir and loaded through the normal loader, then the
//! median forward time of one (batch, pos) batch gives tokens/s (issue 5 target:
//! ≥ 700 tokens/s on 2 threads for Pythia-160m, batch 4 × 128, f32).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::interp::hooks::Hooks;
use crate::models::{LanguageModel, Pretrained};

/// A named forward benchmark: a GPT-NeoX shape and the batch it runs.
pub struct ForwardBenchConfig {
    pub name: &'static str,
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_mlp: usize,
    pub rotary_pct: f64,
    pub batch: usize,
    pub seq_len: usize,
}

/// The forward configs.
pub fn forward_configs() -> Vec<ForwardBenchConfig> {
    vec![ForwardBenchConfig {
        name: "pythia-160m-forward",
        vocab_size: 50304,
        d_model: 768,
        n_layers: 12,
        n_heads: 12,
        d_mlp: 3072,
        rotary_pct: 0.25,
        batch: 4,
        seq_len: 128,
    }]
}

/// Median timings of one forward config.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForwardBenchResult {
    pub name: String,
    pub threads: usize,
    pub steps: usize,
    pub batch: usize,
    pub seq_len: usize,
    pub params: usize,
    pub ms_forward: f64,
    pub tokens_per_s: f64,
    /// 2·params·tokens (+ attention) / time.
    pub gflops: f64,
    /// The same forward's linear layers alone (fused `ops::linear`, random inputs): a roofline.
    pub ms_linear_only: f64,
    pub linear_gflops: f64,
    /// 1-minute load average when the bench ran (other processes share the cores).
    pub load_avg: Option<f64>,
}

/// Median time of every linear layer of one forward, run back to back (ms), and its FLOPs.
fn time_linears(c: &ForwardBenchConfig, reps: usize) -> Result<(f64, f64)> {
    let rows = c.batch * c.seq_len;
    let (d, m) = (c.d_model, c.d_mlp);
    let per_layer = [(d, 3 * d), (d, d), (d, m), (m, d)];
    let mut mats = Vec::new();
    let mut flop = 0.0;
    for (k, n, count) in per_layer.iter().map(|&(k, n)| (k, n, c.n_layers)).chain([(d, c.vocab_size, 1)]) {
        let x = Tensor::randn(0f32, 1., (rows, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)?;
        let b = Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu)?;
        flop += 2.0 * (rows * k * n * count) as f64;
        mats.push((x, w, b, count));
    }
    let mut times = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        for (x, w, b, count) in &mats {
            for _ in 0..*count {
                crate::nn::ops::linear(x, w, Some(b))?;
            }
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[times.len() / 2], flop))
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn config_json(c: &ForwardBenchConfig) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
        "vocab_size": c.vocab_size, "hidden_size": c.d_model, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "intermediate_size": c.d_mlp, "hidden_act": "gelu",
        "rotary_pct": c.rotary_pct, "rotary_emb_base": 10000, "max_position_embeddings": 2048,
        "layer_norm_eps": 1e-5, "use_parallel_residual": true, "tie_word_embeddings": false,
    })
}

fn weight_shapes(c: &ForwardBenchConfig) -> Vec<(String, Vec<usize>)> {
    let (d, m, v) = (c.d_model, c.d_mlp, c.vocab_size);
    let mut out = vec![("gpt_neox.embed_in.weight".to_string(), vec![v, d])];
    for l in 0..c.n_layers {
        let p = format!("gpt_neox.layers.{l}");
        for (n, s) in [
            ("input_layernorm.weight", vec![d]),
            ("input_layernorm.bias", vec![d]),
            ("post_attention_layernorm.weight", vec![d]),
            ("post_attention_layernorm.bias", vec![d]),
            ("attention.query_key_value.weight", vec![3 * d, d]),
            ("attention.query_key_value.bias", vec![3 * d]),
            ("attention.dense.weight", vec![d, d]),
            ("attention.dense.bias", vec![d]),
            ("mlp.dense_h_to_4h.weight", vec![m, d]),
            ("mlp.dense_h_to_4h.bias", vec![m]),
            ("mlp.dense_4h_to_h.weight", vec![d, m]),
            ("mlp.dense_4h_to_h.bias", vec![d]),
        ] {
            out.push((format!("{p}.{n}"), s));
        }
    }
    out.push(("gpt_neox.final_layer_norm.weight".into(), vec![d]));
    out.push(("gpt_neox.final_layer_norm.bias".into(), vec![d]));
    out.push(("embed_out.weight".into(), vec![v, d]));
    out
}

/// Writes a random-weight Hugging Face folder for `c` into `dir` (seeded).
pub fn write_random_folder(c: &ForwardBenchConfig, dir: &std::path::Path) -> Result<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut tensors = HashMap::new();
    let mut n = 0;
    for (name, shape) in weight_shapes(c) {
        let len: usize = shape.iter().product();
        let is_norm_scale = name.ends_with("layernorm.weight");
        let v: Vec<f32> = (0..len).map(|_| if is_norm_scale { 1.0 } else { (rng.random::<f32>() - 0.5) * 0.04 }).collect();
        n += len;
        tensors.insert(name, Tensor::from_vec(v, shape, &Device::Cpu)?);
    }
    std::fs::write(dir.join("config.json"), config_json(c).to_string())?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(n)
}

/// Time `steps` forwards of `c` after `warmup` untimed ones.
pub fn bench_forward(c: &ForwardBenchConfig, warmup: usize, steps: usize) -> Result<ForwardBenchResult> {
    let tmp = std::env::temp_dir().join(format!("latentlab-bench-{}-{}", c.name, std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let loaded = write_random_folder(c, &tmp).and_then(|n| Ok((n, Pretrained::load(&tmp, &Device::Cpu).map_err(candle_core::Error::wrap)?)));
    // The loaded weights are copies (f32 conversion), so the folder can go now.
    std::fs::remove_dir_all(&tmp)?;
    let (params, model) = loaded?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let ids: Vec<u32> = (0..c.batch * c.seq_len).map(|_| rng.random_range(0..c.vocab_size as u32)).collect();
    let ids = Tensor::from_vec(ids, (c.batch, c.seq_len), &Device::Cpu)?;
    let mut times = Vec::new();
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let logits = model.forward(&ids, &mut Hooks::none())?;
        logits.dims3()?;
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let ms = times[times.len() / 2];
    let tokens = (c.batch * c.seq_len) as f64;
    let attn = 2.0 * 2.0 * (c.n_layers * c.batch * c.seq_len * c.seq_len * c.d_model) as f64;
    let flop = 2.0 * (params - c.vocab_size * c.d_model) as f64 * tokens + attn;
    let (ms_lin, lin_flop) = time_linears(c, steps.clamp(1, 3))?;
    Ok(ForwardBenchResult {
        name: c.name.to_string(),
        threads: candle_core::utils::get_num_threads(),
        steps,
        batch: c.batch,
        seq_len: c.seq_len,
        params,
        ms_forward: ms,
        tokens_per_s: tokens / (ms / 1e3),
        gflops: flop / 1e9 / (ms / 1e3),
        ms_linear_only: ms_lin,
        linear_gflops: lin_flop / 1e9 / (ms_lin / 1e3),
        load_avg: load_avg(),
    })
}
