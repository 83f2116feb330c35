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

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn cached_greedy_generation_matches_recomputing_and_the_cli() {
    use latentlab::models::generate::{generate, GenerateConfig};
    for name in ["tiny-pythia", "tiny-qwen2"] {
        let model = Pretrained::load(&fixture(name), &Device::Cpu).unwrap();
        let prompt = [5u32, 9, 2];
        let cfg = GenerateConfig { max_new: 6, ..GenerateConfig::default() };
        let cached = generate(&model, &prompt, &cfg).unwrap();
        // Recompute the whole sequence at every step, no cache.
        let mut seq = prompt.to_vec();
        for _ in 0..6 {
            let ids = candle_core::Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap();
            let logits = model.forward(&ids, &mut Hooks::none()).unwrap();
            let last = logits.get(0).unwrap().get(seq.len() - 1).unwrap();
            seq.push(last.argmax(0).unwrap().to_scalar::<u32>().unwrap());
        }
        assert_eq!(cached, seq[3..], "{name}");

        let sampled = |seed| generate(&model, &prompt, &GenerateConfig { max_new: 8, temperature: 1.0, seed, stop_token: None }).unwrap();
        assert_eq!(sampled(1), sampled(1), "a seed fixes the sample");

        let out = std::process::Command::new(env!("CARGO_BIN_EXE_latentlab"))
            .args(["generate", "--model"])
            .arg(fixture(name))
            .args(["--prompt-ids", "5,9,2", "--max-new", "6"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let expected: Vec<String> = cached.iter().map(|t| t.to_string()).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected.join(","));
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_latentlab"))
        .args(["generate", "--model", "/nonexistent/model", "--prompt-ids", "1"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("config.json"));
}

#[test]
fn tokenizer_json_round_trips_and_drives_text_prompts() {
    use latentlab::models::HfTokenizer;
    let tok = HfTokenizer::load(&fixture("tiny-pythia")).unwrap();
    assert_eq!(tok.encode("w5 w9 w2 zz").unwrap(), vec![5, 9, 2, 0]);
    assert_eq!(tok.decode(&[5, 9, 2]).unwrap(), "w5 w9 w2");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latentlab"))
        .args(["generate", "--model"])
        .arg(fixture("tiny-qwen2"))
        .args(["--prompt", "w5 w9 w2", "--max-new", "6"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let ids: Vec<u32> = lines[0].split(',').map(|t| t.parse().unwrap()).collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(lines[1], tok.decode(&ids).unwrap());
    assert!(HfTokenizer::load(Path::new("/nonexistent")).err().unwrap().to_string().contains("tokenizer.json"));
}
