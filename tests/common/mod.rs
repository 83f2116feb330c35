//! Tiny random GPT-NeoX and Qwen2 checkpoints in the Hugging Face layout, written
//! to a temp dir, and independent reference forwards in plain candle ops that
//! follow transformers' `modeling_gpt_neox.py` / `modeling_qwen2.py` line by line.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use rand::{Rng, SeedableRng};

pub type Weights = HashMap<String, Tensor>;

/// N(0, std²)-ish uniform random tensor (deterministic).
fn rand_t(rng: &mut rand_chacha::ChaCha8Rng, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub struct NeoxSpec {
    pub vocab: usize,
    pub d: usize,
    pub layers: usize,
    pub heads: usize,
    pub d_mlp: usize,
    pub rotary_pct: f64,
    pub base: f64,
    pub parallel: bool,
    pub eps: f64,
}

impl Default for NeoxSpec {
    fn default() -> Self {
        Self { vocab: 50, d: 32, layers: 2, heads: 4, d_mlp: 64, rotary_pct: 0.5, base: 10000.0, parallel: true, eps: 1e-5 }
    }
}

pub fn neox_config(s: &NeoxSpec) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": s.vocab,
        "hidden_size": s.d,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "intermediate_size": s.d_mlp,
        "hidden_act": "gelu",
        "rotary_pct": s.rotary_pct,
        "rotary_emb_base": s.base,
        "max_position_embeddings": 64,
        "layer_norm_eps": s.eps,
        "use_parallel_residual": s.parallel,
        "tie_word_embeddings": false,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
        "transformers_version": "4.0.0-test"
    })
}

pub fn neox_weights(s: &NeoxSpec, seed: u64) -> Weights {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut w = Weights::new();
    let (d, m) = (s.d, s.d_mlp);
    let mut put = |w: &mut Weights, name: String, shape: &[usize], scale: f32, offset: f32| {
        let t = (rand_t(&mut rng, shape, scale) + offset as f64).unwrap();
        w.insert(name, t);
    };
    put(&mut w, "gpt_neox.embed_in.weight".into(), &[s.vocab, d], 1.0, 0.0);
    for l in 0..s.layers {
        let p = format!("gpt_neox.layers.{l}");
        for ln in ["input_layernorm", "post_attention_layernorm"] {
            put(&mut w, format!("{p}.{ln}.weight"), &[d], 0.2, 1.0);
            put(&mut w, format!("{p}.{ln}.bias"), &[d], 0.1, 0.0);
        }
        put(&mut w, format!("{p}.attention.query_key_value.weight"), &[3 * d, d], 0.3, 0.0);
        put(&mut w, format!("{p}.attention.query_key_value.bias"), &[3 * d], 0.1, 0.0);
        put(&mut w, format!("{p}.attention.dense.weight"), &[d, d], 0.2, 0.0);
        put(&mut w, format!("{p}.attention.dense.bias"), &[d], 0.1, 0.0);
        put(&mut w, format!("{p}.mlp.dense_h_to_4h.weight"), &[m, d], 0.2, 0.0);
        put(&mut w, format!("{p}.mlp.dense_h_to_4h.bias"), &[m], 0.1, 0.0);
        put(&mut w, format!("{p}.mlp.dense_4h_to_h.weight"), &[d, m], 0.15, 0.0);
        put(&mut w, format!("{p}.mlp.dense_4h_to_h.bias"), &[d], 0.1, 0.0);
    }
    put(&mut w, "gpt_neox.final_layer_norm.weight".into(), &[d], 0.2, 1.0);
    put(&mut w, "gpt_neox.final_layer_norm.bias".into(), &[d], 0.1, 0.0);
    put(&mut w, "embed_out.weight".into(), &[s.vocab, d], 0.3, 0.0);
    w
}

pub struct QwenSpec {
    pub vocab: usize,
    pub d: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub d_mlp: usize,
    pub theta: f64,
    pub eps: f64,
    pub tied: bool,
}

impl Default for QwenSpec {
    fn default() -> Self {
        Self { vocab: 60, d: 32, layers: 2, heads: 4, kv_heads: 2, d_mlp: 48, theta: 1e6, eps: 1e-6, tied: false }
    }
}

pub fn qwen_config(s: &QwenSpec) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": s.vocab,
        "hidden_size": s.d,
        "intermediate_size": s.d_mlp,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 128,
        "rms_norm_eps": s.eps,
        "rope_theta": s.theta,
        "rope_scaling": null,
        "tie_word_embeddings": s.tied,
        "use_sliding_window": false,
        "sliding_window": 4096,
        "max_window_layers": 21,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "torch_dtype": "bfloat16"
    })
}

pub fn qwen_weights(s: &QwenSpec, seed: u64) -> Weights {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut w = Weights::new();
    let (d, m, dh) = (s.d, s.d_mlp, s.d / s.heads);
    let mut put = |w: &mut Weights, name: String, shape: &[usize], scale: f32, offset: f32| {
        let t = (rand_t(&mut rng, shape, scale) + offset as f64).unwrap();
        w.insert(name, t);
    };
    put(&mut w, "model.embed_tokens.weight".into(), &[s.vocab, d], 1.0, 0.0);
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        put(&mut w, format!("{p}.input_layernorm.weight"), &[d], 0.2, 1.0);
        put(&mut w, format!("{p}.post_attention_layernorm.weight"), &[d], 0.2, 1.0);
        put(&mut w, format!("{p}.self_attn.q_proj.weight"), &[s.heads * dh, d], 0.3, 0.0);
        put(&mut w, format!("{p}.self_attn.q_proj.bias"), &[s.heads * dh], 0.1, 0.0);
        for kv in ["k_proj", "v_proj"] {
            put(&mut w, format!("{p}.self_attn.{kv}.weight"), &[s.kv_heads * dh, d], 0.3, 0.0);
            put(&mut w, format!("{p}.self_attn.{kv}.bias"), &[s.kv_heads * dh], 0.1, 0.0);
        }
        put(&mut w, format!("{p}.self_attn.o_proj.weight"), &[d, s.heads * dh], 0.2, 0.0);
        put(&mut w, format!("{p}.mlp.gate_proj.weight"), &[m, d], 0.3, 0.0);
        put(&mut w, format!("{p}.mlp.up_proj.weight"), &[m, d], 0.3, 0.0);
        put(&mut w, format!("{p}.mlp.down_proj.weight"), &[d, m], 0.2, 0.0);
    }
    put(&mut w, "model.norm.weight".into(), &[d], 0.2, 1.0);
    if !s.tied {
        put(&mut w, "lm_head.weight".into(), &[s.vocab, d], 0.3, 0.0);
    }
    w
}

/// Round every tensor through `dtype` (what a bf16/f16 checkpoint holds).
pub fn round_through(w: &Weights, dtype: DType) -> Weights {
    w.iter().map(|(k, t)| (k.clone(), t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap())).collect()
}

/// Write `config.json` and the weights (in `dtype`), in one file or `shards` shards + index.
pub fn write_folder(dir: &Path, config: &serde_json::Value, w: &Weights, dtype: DType, shards: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(config).unwrap()).unwrap();
    let mut names: Vec<&String> = w.keys().collect();
    names.sort();
    let cast = |n: &str| w[n].to_dtype(dtype).unwrap();
    if shards <= 1 {
        let m: HashMap<String, Tensor> = names.iter().map(|n| ((*n).clone(), cast(n))).collect();
        candle_core::safetensors::save(&m, dir.join("model.safetensors")).unwrap();
        return;
    }
    let mut weight_map = serde_json::Map::new();
    let per = names.len().div_ceil(shards);
    for (i, chunk) in names.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards);
        let m: HashMap<String, Tensor> = chunk.iter().map(|n| ((*n).clone(), cast(n))).collect();
        candle_core::safetensors::save(&m, dir.join(&file)).unwrap();
        for n in chunk {
            weight_map.insert((*n).clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

// ---- Reference forwards: plain candle ops, one sequence `ids` -> logits (pos, vocab). ----

fn lin(x: &Tensor, w: &Weights, name: &str, bias: bool) -> Tensor {
    let y = x.matmul(&w[&format!("{name}.weight")].t().unwrap()).unwrap();
    if bias { y.broadcast_add(&w[&format!("{name}.bias")]).unwrap() } else { y }
}

/// torch.nn.LayerNorm: (x − mean) / sqrt(var_biased + eps) · w + b.
fn layer_norm(x: &Tensor, w: &Weights, name: &str, eps: f64) -> Tensor {
    let mean = x.mean_keepdim(D::Minus1).unwrap();
    let xc = x.broadcast_sub(&mean).unwrap();
    let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let xn = xc.broadcast_div(&(var + eps).unwrap().sqrt().unwrap()).unwrap();
    xn.broadcast_mul(&w[&format!("{name}.weight")]).unwrap().broadcast_add(&w[&format!("{name}.bias")]).unwrap()
}

/// Qwen2RMSNorm: w · x · rsqrt(mean(x²) + eps).
fn rms_norm(x: &Tensor, w: &Weights, name: &str, eps: f64) -> Tensor {
    let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let xn = x.broadcast_div(&(ms + eps).unwrap().sqrt().unwrap()).unwrap();
    xn.broadcast_mul(&w[&format!("{name}.weight")]).unwrap()
}

/// cos, sin `(pos, rot)`: inv_freq = 1/base^(arange(0, rot, 2)/rot), emb = cat(freqs, freqs).
fn rope_tables(t: usize, rot: usize, base: f64) -> (Tensor, Tensor) {
    let inv: Vec<f32> = (0..rot / 2).map(|i| 1.0 / (base.powf(2.0 * i as f64 / rot as f64)) as f32).collect();
    let inv = Tensor::from_vec(inv, (1, rot / 2), &Device::Cpu).unwrap();
    let pos = Tensor::arange(0u32, t as u32, &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().reshape((t, 1)).unwrap();
    let freqs = pos.matmul(&inv).unwrap();
    let emb = Tensor::cat(&[&freqs, &freqs], 1).unwrap();
    (emb.cos().unwrap(), emb.sin().unwrap())
}

/// x: (heads, pos, d_head); rotates the first `rot` dims (rotate_half convention).
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, rot: usize) -> Tensor {
    let dh = x.dim(2).unwrap();
    let xr = x.narrow(2, 0, rot).unwrap();
    let x1 = xr.narrow(2, 0, rot / 2).unwrap();
    let x2 = xr.narrow(2, rot / 2, rot / 2).unwrap();
    let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], 2).unwrap();
    let out = (xr.broadcast_mul(cos).unwrap() + rotated.broadcast_mul(sin).unwrap()).unwrap();
    if rot == dh { out } else { Tensor::cat(&[&out, &x.narrow(2, rot, dh - rot).unwrap()], 2).unwrap() }
}

/// softmax(q kᵀ / √d_head + causal mask) v; q (h, t, dh), k, v (h, t, dh) -> (t, h·dh).
fn causal_attn(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let (h, t, dh) = q.dims3().unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap();
    let mask: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    let p = candle_nn::ops::softmax(&scores.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
    p.matmul(v).unwrap().transpose(0, 1).unwrap().reshape((t, h * dh)).unwrap()
}

pub fn neox_reference(s: &NeoxSpec, w: &Weights, ids: &[u32]) -> Tensor {
    let t = ids.len();
    let (h, dh) = (s.heads, s.d / s.heads);
    let rot = (dh as f64 * s.rotary_pct) as usize;
    let (cos, sin) = rope_tables(t, rot, s.base);
    let ids_t = Tensor::new(ids, &Device::Cpu).unwrap();
    let mut x = w["gpt_neox.embed_in.weight"].index_select(&ids_t, 0).unwrap();
    for l in 0..s.layers {
        let p = format!("gpt_neox.layers.{l}");
        let a = layer_norm(&x, w, &format!("{p}.input_layernorm"), s.eps);
        // qkv.view(t, heads, 3·head_size).transpose -> chunk(3, dim=-1)
        let qkv = lin(&a, w, &format!("{p}.attention.query_key_value"), true).reshape((t, h, 3 * dh)).unwrap().transpose(0, 1).unwrap();
        let q = qkv.narrow(2, 0, dh).unwrap().contiguous().unwrap();
        let k = qkv.narrow(2, dh, dh).unwrap().contiguous().unwrap();
        let v = qkv.narrow(2, 2 * dh, dh).unwrap().contiguous().unwrap();
        let (q, k) = (apply_rope(&q, &cos, &sin, rot), apply_rope(&k, &cos, &sin, rot));
        let attn = lin(&causal_attn(&q, &k, &v), w, &format!("{p}.attention.dense"), true);
        let mlp = |y: &Tensor| {
            let hdn = lin(y, w, &format!("{p}.mlp.dense_h_to_4h"), true);
            let g = ((&hdn * 0.5).unwrap() * ((&hdn / 2f64.sqrt()).unwrap().erf().unwrap() + 1.0).unwrap()).unwrap();
            lin(&g, w, &format!("{p}.mlp.dense_4h_to_h"), true)
        };
        x = if s.parallel {
            let m = mlp(&layer_norm(&x, w, &format!("{p}.post_attention_layernorm"), s.eps));
            ((m + attn).unwrap() + &x).unwrap()
        } else {
            let a = (attn + &x).unwrap();
            (mlp(&layer_norm(&a, w, &format!("{p}.post_attention_layernorm"), s.eps)) + a).unwrap()
        };
    }
    let x = layer_norm(&x, w, "gpt_neox.final_layer_norm", s.eps);
    lin(&x, w, "embed_out", false)
}

pub fn qwen_reference(s: &QwenSpec, w: &Weights, ids: &[u32]) -> Tensor {
    let t = ids.len();
    let (h, hk, dh) = (s.heads, s.kv_heads, s.d / s.heads);
    let (cos, sin) = rope_tables(t, dh, s.theta);
    let ids_t = Tensor::new(ids, &Device::Cpu).unwrap();
    let mut x = w["model.embed_tokens.weight"].index_select(&ids_t, 0).unwrap();
    let heads = |y: Tensor, n: usize| y.reshape((t, n, dh)).unwrap().transpose(0, 1).unwrap().contiguous().unwrap();
    // repeat_kv: (hk, t, dh) -> (hk·rep, t, dh), each kv head repeated rep times in a row.
    let repeat = |y: Tensor| {
        let rep = h / hk;
        y.unsqueeze(1).unwrap().broadcast_as((hk, rep, t, dh)).unwrap().reshape((h, t, dh)).unwrap()
    };
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        let a = rms_norm(&x, w, &format!("{p}.input_layernorm"), s.eps);
        let q = heads(lin(&a, w, &format!("{p}.self_attn.q_proj"), true), h);
        let k = heads(lin(&a, w, &format!("{p}.self_attn.k_proj"), true), hk);
        let v = heads(lin(&a, w, &format!("{p}.self_attn.v_proj"), true), hk);
        let (q, k) = (apply_rope(&q, &cos, &sin, dh), apply_rope(&k, &cos, &sin, dh));
        let attn = lin(&causal_attn(&q, &repeat(k), &repeat(v)), w, &format!("{p}.self_attn.o_proj"), false);
        x = (x + attn).unwrap();
        let b = rms_norm(&x, w, &format!("{p}.post_attention_layernorm"), s.eps);
        let gate = lin(&b, w, &format!("{p}.mlp.gate_proj"), false);
        let silu = (&gate * candle_nn::ops::sigmoid(&gate).unwrap()).unwrap();
        let up = lin(&b, w, &format!("{p}.mlp.up_proj"), false);
        x = (x + lin(&(silu * up).unwrap(), w, &format!("{p}.mlp.down_proj"), false)).unwrap();
    }
    let x = rms_norm(&x, w, "model.norm", s.eps);
    let head = if s.tied { "model.embed_tokens" } else { "lm_head" };
    lin(&x, w, head, false)
}

/// Assert that `a` and `b` hold the same gradient for every trainable tensor of `params`,
/// each within `1e-4 ×` the largest |entry| of `b`'s gradient.
pub fn assert_same_grads(params: &latentlab::nn::Params, a: &candle_core::backprop::GradStore, b: &candle_core::backprop::GradStore, what: &str) {
    for (name, var) in params.trainable() {
        let x = a.get(var.as_tensor()).expect("gradient").flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = b.get(var.as_tensor()).expect("gradient").flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = x.iter().zip(&y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(err <= 1e-4 * scale, "{what}: `{name}` gradient differs by {err} (scale {scale})");
    }
}

/// For every trainable tensor of `params`: the entry with the largest |gradient| in `grads`
/// (where f32 differences are informative) matches a central finite difference of `loss`
/// within 5 % (relative to max(|analytic|, 1e-3)). Weights are restored afterwards.
pub fn assert_gradients_match_fd(
    params: &latentlab::nn::Params,
    grads: &candle_core::backprop::GradStore,
    loss: impl Fn() -> candle_core::Result<f64>,
    what: &str,
) {
    for (pname, var) in params.trainable() {
        let g: Vec<f32> = grads.get(var.as_tensor()).expect("gradient").flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f32> = var.flatten_all().unwrap().to_vec1().unwrap();
        let i = (0..g.len()).max_by(|&a, &c| g[a].abs().total_cmp(&g[c].abs())).expect("non-empty");
        let eps = 1e-2f32;
        let at = |delta: f32| -> f64 {
            let mut v = base.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
            loss().unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
        var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
        let an = g[i] as f64;
        let err = (fd - an).abs() / an.abs().max(1e-3);
        assert!(err < 5e-2, "{what}: `{pname}`[{i}] analytic {an:.6} vs finite-difference {fd:.6}");
    }
}
