//! Pretrained-model loading on tiny random GPT-NeoX and Qwen2 folders written
//! in-test: parity with an independent composed reference, hooks, KV cache,
//! loading errors, and LASER edits through `surgery::with_edits`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use latentlab::interp::hooks::{HookPoint, Hooks, Intervention};
use latentlab::models::{GptNeox, HfArch, LanguageModel, Pretrained, Qwen2};
use latentlab::surgery::{with_edits, EditSet, SvdCache, TemplateMap};

const IDS: [[u32; 7]; 2] = [[3, 17, 42, 0, 9, 9, 31], [1, 2, 3, 4, 5, 6, 7]];

fn ids() -> Tensor {
    Tensor::new(&IDS, &Device::Cpu).unwrap()
}

fn row(logits: &Tensor, b: usize) -> Tensor {
    logits.get(b).unwrap()
}

fn load_err(dir: &std::path::Path) -> String {
    match Pretrained::load(dir, &Device::Cpu) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn gpt_neox_matches_reference_parallel_and_sequential_bf16() {
    for (parallel, dtype) in [(true, DType::F32), (false, DType::BF16)] {
        let spec = NeoxSpec { parallel, ..NeoxSpec::default() };
        let w = round_through(&neox_weights(&spec, 1), dtype);
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), &neox_config(&spec), &w, dtype, 1);
        let model = Pretrained::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(model.arch(), HfArch::GptNeox);
        let logits = model.forward(&ids(), &mut Hooks::none()).unwrap();
        assert_eq!(logits.dims(), &[2, 7, spec.vocab]);
        for (b, seq) in IDS.iter().enumerate() {
            let d = max_abs_diff(&row(&logits, b), &neox_reference(&spec, &w, seq));
            assert!(d <= 1e-4, "parallel={parallel} {dtype:?} row {b}: max |Δ| = {d}");
        }
    }
}

#[test]
fn qwen2_matches_reference_sharded_untied_and_tied() {
    for (tied, shards) in [(false, 3), (true, 1)] {
        let spec = QwenSpec { tied, ..QwenSpec::default() };
        let w = qwen_weights(&spec, 2);
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), &qwen_config(&spec), &w, DType::F32, shards);
        let model = Qwen2::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(model.cfg.n_kv_heads, 2);
        let logits = model.forward(&ids(), &mut Hooks::none()).unwrap();
        assert_eq!(logits.dims(), &[2, 7, spec.vocab]);
        for (b, seq) in IDS.iter().enumerate() {
            let d = max_abs_diff(&row(&logits, b), &qwen_reference(&spec, &w, seq));
            assert!(d <= 1e-4, "tied={tied} row {b}: max |Δ| = {d}");
        }
        // Parameters carry their HF names.
        assert!(model.params().get("model.layers.1.mlp.up_proj.weight").is_some());
        assert_eq!(model.params().get("lm_head.weight").is_some(), !tied);
    }
}

#[test]
fn hooks_capture_and_explicit_pattern_path_agree() {
    let spec = NeoxSpec::default();
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &neox_config(&spec), &neox_weights(&spec, 3), DType::F32, 1);
    let model = GptNeox::load(dir.path(), &Device::Cpu).unwrap();
    let plain = model.forward(&ids(), &mut Hooks::none()).unwrap();
    let mut hooks = Hooks::capture_all();
    let hooked = model.forward(&ids(), &mut hooks).unwrap();
    assert!(max_abs_diff(&plain, &hooked) < 1e-5, "fused vs explicit attention");
    let shape = |name: &str| hooks.cache[&name.parse::<HookPoint>().unwrap()].dims().to_vec();
    assert_eq!(shape("hook_embed"), vec![2, 7, 32]);
    assert_eq!(shape("blocks.1.hook_resid_pre"), vec![2, 7, 32]);
    assert_eq!(shape("blocks.0.attn.hook_q"), vec![2, 7, 4, 8]);
    assert_eq!(shape("blocks.0.attn.hook_pattern"), vec![2, 4, 7, 7]);
    assert_eq!(shape("blocks.1.mlp.hook_post"), vec![2, 7, 64]);
    assert_eq!(shape("ln_final.hook_normalized"), vec![2, 7, 32]);
    assert_eq!(shape("hook_logits"), vec![2, 7, spec.vocab]);
    assert!(!hooks.cache.contains_key(&HookPoint::ResidMid(0)), "parallel blocks have no resid_mid");
    let pattern = &hooks.cache[&HookPoint::AttnPattern(0)];
    let sums: Vec<f32> = pattern.sum(3).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
    let upper: f32 = pattern.narrow(2, 0, 1).unwrap().narrow(3, 1, 6).unwrap().sum_all().unwrap().to_scalar().unwrap();
    assert_eq!(upper, 0.0, "causal");

    let mut ablate = Hooks::none().intervene(HookPoint::MlpOut(0), Intervention::Zero);
    let ablated = model.forward(&ids(), &mut ablate).unwrap();
    assert!(max_abs_diff(&plain, &ablated) > 1e-3, "zeroing blocks.0.hook_mlp_out changes logits");
}

#[test]
fn kv_cache_decoding_matches_full_forward() {
    let spec = QwenSpec::default();
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &qwen_config(&spec), &qwen_weights(&spec, 4), DType::F32, 1);
    let model = Pretrained::load(dir.path(), &Device::Cpu).unwrap();
    let full = model.forward(&ids(), &mut Hooks::none()).unwrap();
    let mut cache = model.new_cache();
    let head = model.forward_cached(&ids().narrow(1, 0, 4).unwrap(), Some(&mut cache), &mut Hooks::none()).unwrap();
    assert!(max_abs_diff(&head, &full.narrow(1, 0, 4).unwrap()) < 1e-5);
    for p in 4..7 {
        let step = model.forward_cached(&ids().narrow(1, p, 1).unwrap(), Some(&mut cache), &mut Hooks::none()).unwrap();
        let d = max_abs_diff(&step, &full.narrow(1, p, 1).unwrap());
        assert!(d < 1e-4, "position {p}: max |Δ| = {d}");
    }
    assert_eq!(cache.len(), 7);
}

#[test]
fn laser_edits_change_logits_and_restore_them() {
    let spec = NeoxSpec::default();
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &neox_config(&spec), &neox_weights(&spec, 5), DType::F32, 1);
    let model = Pretrained::load(dir.path(), &Device::Cpu).unwrap();
    let map = TemplateMap::for_arch(model.arch());
    let before = model.forward(&ids(), &mut Hooks::none()).unwrap();
    let mut cache = SvdCache::new();
    for spec_str in ["1:fc_in:0.25", "0:fc_out:0.1", "1:out_proj:0.5", "0:attn:zero"] {
        let edits: EditSet = spec_str.parse().unwrap();
        let edited = with_edits(model.params(), &edits, &mut cache, &map, || model.forward(&ids(), &mut Hooks::none()))
            .unwrap()
            .unwrap();
        assert!(max_abs_diff(&before, &edited) > 1e-3, "{spec_str} changes the logits");
        let after = model.forward(&ids(), &mut Hooks::none()).unwrap();
        assert_eq!(max_abs_diff(&before, &after), 0.0, "{spec_str}: weights restored exactly");
    }
    // The fused QKV has no τ name: a clear error naming the matrix.
    let e = with_edits(model.params(), &"0:q_proj:0.5".parse().unwrap(), &mut cache, &map, || ()).unwrap_err().to_string();
    assert!(e.contains("q_proj"), "{e}");

    // Qwen2: every τ resolves to a HF key.
    let q = QwenSpec::default();
    let qdir = tempfile::tempdir().unwrap();
    write_folder(qdir.path(), &qwen_config(&q), &qwen_weights(&q, 6), DType::F32, 1);
    let qwen = Pretrained::load(qdir.path(), &Device::Cpu).unwrap();
    let qmap = TemplateMap::for_arch(qwen.arch());
    let before = qwen.forward(&ids(), &mut Hooks::none()).unwrap();
    let edits: EditSet = "1:fc_in:0.1,1:gate_proj:0.1,0:k_proj:0.25".parse().unwrap();
    let edited = with_edits(qwen.params(), &edits, &mut cache, &qmap, || qwen.forward(&ids(), &mut Hooks::none())).unwrap().unwrap();
    assert!(max_abs_diff(&before, &edited) > 1e-3);
    assert_eq!(max_abs_diff(&before, &qwen.forward(&ids(), &mut Hooks::none()).unwrap()), 0.0);
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let spec = NeoxSpec::default();
    let mut w = neox_weights(&spec, 7);
    w.remove("gpt_neox.layers.1.mlp.dense_4h_to_h.weight");
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &neox_config(&spec), &w, DType::F32, 1);
    let e = load_err(dir.path());
    assert!(e.contains("`gpt_neox.layers.1.mlp.dense_4h_to_h.weight` is missing"), "{e}");

    let q = QwenSpec::default();
    let mut w = qwen_weights(&q, 8);
    w.insert("model.layers.0.self_attn.k_proj.weight".into(), Tensor::zeros((32, 32), DType::F32, &Device::Cpu).unwrap());
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &qwen_config(&q), &w, DType::F32, 2);
    let e = load_err(dir.path());
    assert!(e.contains("`model.layers.0.self_attn.k_proj.weight` has shape [32, 32], expected [16, 32]"), "{e}");

    // Untied config without lm_head.weight.
    let mut w = qwen_weights(&q, 9);
    w.remove("lm_head.weight");
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &qwen_config(&q), &w, DType::F32, 1);
    assert!(load_err(dir.path()).contains("`lm_head.weight` is missing"));

    // Integer weights are rejected by name.
    let mut w = qwen_weights(&q, 9);
    w.insert("model.norm.weight".into(), Tensor::zeros(32, DType::U32, &Device::Cpu).unwrap());
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &qwen_config(&q), &w, DType::F32, 1);
    let mut st = std::collections::HashMap::new();
    for (k, t) in &w {
        st.insert(k.clone(), t.clone());
    }
    candle_core::safetensors::save(&st, dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("`model.norm.weight` has dtype U32"), "{e}");
}

#[test]
fn bad_configs_and_layouts_name_the_field() {
    let spec = QwenSpec::default();
    let w = qwen_weights(&spec, 10);
    let case = |edit: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut cfg = qwen_config(&spec);
        edit(&mut cfg);
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), &cfg, &w, DType::F32, 1);
        load_err(dir.path())
    };
    let e = case(&|c| c["architectures"] = serde_json::json!(["LlamaForCausalLM"]));
    assert!(e.contains("unsupported `architectures` `LlamaForCausalLM`") && e.contains("Qwen2ForCausalLM"), "{e}");
    let e = case(&|c| {
        c.as_object_mut().unwrap().remove("architectures");
        c["model_type"] = "mistral".into();
    });
    assert!(e.contains("`model_type` `mistral`") && e.contains("gpt_neox, qwen2"), "{e}");
    let e = case(&|c| c["hidden_size"] = "wide".into());
    assert!(e.contains("field `hidden_size`") && e.contains("invalid type"), "{e}");
    let e = case(&|c| {
        c.as_object_mut().unwrap().remove("num_hidden_layers");
    });
    assert!(e.contains("num_hidden_layers"), "{e}");
    let e = case(&|c| c["num_key_value_heads"] = 3.into());
    assert!(e.contains("field `num_key_value_heads`"), "{e}");
    let e = case(&|c| c["hidden_act"] = "mish".into());
    assert!(e.contains("field `hidden_act`") && e.contains("mish"), "{e}");
    let e = case(&|c| c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0}));
    assert!(e.contains("field `rope_scaling`") && e.contains("yarn"), "{e}");
    let e = case(&|c| c["use_sliding_window"] = true.into());
    assert!(e.contains("use_sliding_window"), "{e}");

    // No weights; a shard listed in the index but absent.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), qwen_config(&spec).to_string()).unwrap();
    assert!(load_err(dir.path()).contains("no weights"));
    write_folder(dir.path(), &qwen_config(&spec), &w, DType::F32, 2);
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model-00002-of-00002.safetensors") && e.contains("weight_map"), "{e}");
    assert!(load_err(&dir.path().join("nope")).contains("config.json"));
}
