//! Parity with Hugging Face transformers: tiny random Pythia (GPT-NeoX) and
//! Qwen2 checkpoints and their reference logits, produced by
//! `tests/fixtures/make_fixtures.py` (transformers 5.24.0, torch 2.15.0, eager
//! float32 attention) and committed, so this test never needs Python.

use std::path::Path;

use candle_core::{DType, Device};
use latentlab::interp::hooks::Hooks;
use latentlab::models::{HfArch, LanguageModel, Pretrained};

fn check(name: &str, arch: HfArch) -> f32 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let reference = candle_core::safetensors::load(dir.join("reference_logits.safetensors"), &Device::Cpu).unwrap();
    let ids = reference["ids"].to_dtype(DType::U32).unwrap();
    let model = Pretrained::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(model.arch(), arch);
    let logits = model.forward(&ids, &mut Hooks::none()).unwrap();
    assert_eq!(logits.dims(), reference["logits"].dims());
    let diff = (logits - &reference["logits"]).unwrap().abs().unwrap();
    let max = diff.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(max <= 1e-4, "{name}: max |Δlogits| = {max:e} vs transformers");
    max
}

#[test]
fn tiny_pythia_matches_transformers() {
    let d = check("tiny-pythia", HfArch::GptNeox);
    eprintln!("tiny-pythia: max |Δlogits| = {d:e}");
}

#[test]
fn tiny_qwen2_sharded_matches_transformers() {
    let d = check("tiny-qwen2", HfArch::Qwen2);
    eprintln!("tiny-qwen2: max |Δlogits| = {d:e}");
}
