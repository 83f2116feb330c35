//! Logit lens and direct logit attribution (`interp::lens`) on in-test GPTs (pre-LN with
//! biases; the truncation study's norm-free model with one block lacking an MLP) and on
//! the tiny Pythia and Qwen2 fixtures; then `analyze --lens` end to end.

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use latentlab::interp::hooks::{HookPoint, Hooks};
use latentlab::interp::lens::{logit_attribution, logit_lens};
use latentlab::models::{Gpt, GptConfig, LanguageModel, Pretrained};
use latentlab::nn::FfnKind;

fn softmax(v: &[f64]) -> Vec<f64> {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

fn logits_at(model: &dyn LanguageModel, ids: &[u32], pos: usize) -> Vec<f64> {
    let x = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
    let l = model.forward(&x, &mut Hooks::none()).unwrap();
    l.narrow(1, pos, 1).unwrap().flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1().unwrap()
}

/// The lens's last row is the model's own output, and the attribution's parts add up
/// to the model's logit difference.
fn check_model(model: &dyn LanguageModel, ids: &[u32], n_parts: usize) {
    let n = model.n_layers();
    for pos in [0, ids.len() / 2, ids.len() - 1] {
        let logits = logits_at(model, ids, pos);
        let probs = softmax(&logits);
        let (a, w) = (3u32, 7u32);
        let lens = logit_lens(model, ids, pos, Some(a), 4).unwrap();
        assert_eq!(lens.rows.len(), n + 1);
        assert_eq!(lens.rows[0].point, "blocks.0.hook_resid_pre");
        let last = lens.rows.last().unwrap();
        assert_eq!(last.point, format!("blocks.{}.hook_resid_post", n - 1));
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&x, &y| probs[y].total_cmp(&probs[x]).then(x.cmp(&y)));
        for (k, (t, p)) in last.top.iter().enumerate() {
            assert!((p - probs[*t as usize]).abs() < 1e-5, "pos {pos}: top {k}: {p} vs {}", probs[*t as usize]);
            assert!(k == 0 || *p <= last.top[k - 1].1);
        }
        assert!((last.top[0].1 - probs[order[0]]).abs() < 1e-6);
        let ans = last.answer.as_ref().unwrap();
        assert!((ans.logit - logits[a as usize]).abs() < 1e-4 * (1.0 + logits[a as usize].abs()));
        assert_eq!(order[ans.rank], a as usize);

        let r = logit_attribution(model, ids, pos, a, Some(w)).unwrap();
        assert_eq!(r.parts.len(), n_parts, "{:?}", r.parts.iter().map(|p| &p.name).collect::<Vec<_>>());
        let target = logits[a as usize] - logits[w as usize];
        assert!((r.target - target).abs() < 1e-5 * (1.0 + target.abs()), "{} vs {target}", r.target);
        assert!(r.unexplained.abs() < 1e-4 * (1.0 + target.abs()), "parts miss the logit difference by {}", r.unexplained);
        assert!(r.parts.iter().all(|p| p.logit.is_finite()) && r.parts.iter().any(|p| p.logit.abs() > 1e-6));
        // Per head: the heads and the output bias make up each layer's attention part.
        assert_eq!(r.heads.len(), n);
        for (l, row) in r.heads.iter().enumerate() {
            let attn = r.parts.iter().find(|p| p.name == format!("L{l} attn")).unwrap().logit;
            let sum: f64 = row.iter().sum::<f64>() + r.attn_bias[l];
            assert!((sum - attn).abs() < 1e-4 * (1.0 + attn.abs()), "layer {l}: heads {sum} vs attention {attn}");
        }
        // Single logit: the same parts along W_U[a] alone.
        let single = logit_attribution(model, ids, pos, a, None).unwrap();
        assert!((single.target - logits[a as usize]).abs() < 1e-4 * (1.0 + logits[a as usize].abs()));
        assert!(single.unexplained.abs() < 1e-4 * (1.0 + single.target.abs()));
    }
    assert!(logit_lens(model, ids, ids.len(), None, 3).is_err());
    assert!(logit_attribution(model, ids, 0, 1_000_000, None).is_err());
}

#[test]
fn pre_ln_gpt_with_biases() {
    let cfg = GptConfig { vocab_size: 24, d_model: 32, n_heads: 4, d_mlp: 64, max_seq_len: 16, n_layers: 3, embed_std: 1.0, ..GptConfig::default() };
    let model = Gpt::new(&cfg, 7, &Device::Cpu).unwrap();
    check_model(&model, &[1, 5, 2, 9, 11, 4, 20, 3, 8], 1 + 2 * 3);
}

#[test]
fn norm_free_truncation_model_without_a_second_mlp() {
    let cfg = GptConfig { ffn_layers: vec![FfnKind::Mlp, FfnKind::None], ..GptConfig::truncation(16, 12, 13) };
    let model = Gpt::new(&cfg, 3, &Device::Cpu).unwrap();
    let ids = [1u32, 4, 1, 7, 2, 1, 7, 0, 1];
    check_model(&model, &ids, 1 + 2 + 1);
    // With no norm, the embedding row is W_U (E[x] + P[pos]) itself.
    let pos = 5;
    let x = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
    let mut h = Hooks::capture([HookPoint::Embed, HookPoint::PosEmbed]);
    model.forward(&x, &mut h).unwrap();
    let resid = h.cache[&HookPoint::Embed].broadcast_add(&h.cache[&HookPoint::PosEmbed]).unwrap().narrow(1, pos, 1).unwrap();
    let manual = resid.flatten_all().unwrap().unsqueeze(0).unwrap().matmul(&model.unembed_weight().t().unwrap()).unwrap();
    let manual = softmax(&manual.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap());
    let row = &logit_lens(&model, &ids, pos, None, 13).unwrap().rows[0];
    for (t, p) in &row.top {
        assert!((p - manual[*t as usize]).abs() < 1e-5);
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn tiny_pythia_and_qwen2() {
    for name in ["tiny-pythia", "tiny-qwen2"] {
        let model = Pretrained::load(&fixture(name), &Device::Cpu).unwrap();
        let n = model.n_layers();
        check_model(&model, &[5, 17, 42, 8, 59, 3, 61, 12], 1 + 2 * n);
    }
}

/// `latentlab analyze MODEL --lens EXTRA…`.
fn run_lens(model: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_latentlab")).args(["analyze", model.to_str().unwrap(), "--lens"]).args(extra).output().unwrap()
}

/// Exit 2 with one stderr line containing `needle`, no panic.
fn assert_one_line_usage_error(o: &std::process::Output, extra: &[&str], needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
    assert!(err.contains(needle) && !err.contains("panicked") && err.trim().lines().count() == 1, "{extra:?}: {err}");
}

#[test]
fn analyze_lens_writes_the_table_and_explains_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny-pythia");
    let run = |extra: &[&str]| run_lens(&model, extra);
    let out = tmp.path().display().to_string();
    let o = run(&["--ids", "5,17,42,8", "--answer-id", "3", "--wrong-id", "7", "--out", &out]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("logit lens at position 3") && stdout.contains("direct logit attribution"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("lens.json")).unwrap()).unwrap();
    let layers = Pretrained::load(&model, &Device::Cpu).unwrap().n_layers();
    assert_eq!(json["lens"]["rows"].as_array().unwrap().len(), layers + 1);
    assert_eq!(json["pos"], 3);
    let attr = &json["attribution"];
    assert_eq!(attr["parts"].as_array().unwrap().len(), 1 + 2 * layers);
    assert!(attr["unexplained"].as_f64().unwrap().abs() < 1e-3, "{attr}");
    assert!(tmp.path().join("lens.html").exists());

    let bad = |extra: &[&str], needle: &str| assert_one_line_usage_error(&run(extra), extra, needle);
    bad(&["--ids", "5,17", "--pos", "2"], "--pos 2");
    bad(&[], "--prompt");
    bad(&["--ids", "5,17", "--wrong-id", "3"], "--wrong needs --answer");
    bad(&["--ids", "5,999999"], "outside the vocabulary");
    bad(&["--ids", "5,17", "--answer-id", "4", "--wrong-id", "4"], "same token");
}

#[test]
fn mean_attribution_is_the_mean_of_the_single_attributions() {
    use latentlab::interp::lens::{mean_attribution, LensExample};
    let model = Pretrained::load(&fixture("tiny-pythia"), &Device::Cpu).unwrap();
    let examples = vec![
        LensExample { ids: vec![5, 17, 42], answer: 3, wrong: Some(9) },
        LensExample { ids: vec![8, 1, 2, 60, 33], answer: 7, wrong: None },
    ];
    let m = mean_attribution(&model, &examples, |_| {}).unwrap();
    let singles: Vec<_> = examples.iter().map(|e| logit_attribution(&model, &e.ids, e.ids.len() - 1, e.answer, e.wrong).unwrap()).collect();
    assert_eq!(m.n, 2);
    assert!((m.target - (singles[0].target + singles[1].target) / 2.0).abs() < 1e-9);
    for (i, p) in m.parts.iter().enumerate() {
        assert!((p.logit - (singles[0].parts[i].logit + singles[1].parts[i].logit) / 2.0).abs() < 1e-9, "{}", p.name);
    }
    assert!((m.heads[1][2] - (singles[0].heads[1][2] + singles[1].heads[1][2]) / 2.0).abs() < 1e-9);
    assert_eq!(m.per_example[1].0, singles[1].target);
    assert!(mean_attribution(&model, &[], |_| {}).is_err());
}

#[test]
fn analyze_lens_over_a_probe_file_and_ioi_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny-pythia");
    let run = |extra: &[&str]| run_lens(&model, extra);
    // The fixture's vocabulary is "w1".."w63".
    let file = tmp.path().join("probes.jsonl");
    std::fs::write(
        &file,
        "{\"prompt\": \"w5 w9 w12 w5\", \"answer\": \" w9\", \"wrong\": \" w12\"}\n\n{\"prompt\": \"w7 w8\", \"answer\": \" w7\"}\n{\"prompt\": \"w7 w8\", \"answer\": \" w7 w8\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("batch").display().to_string();
    let o = run(&["--probes", file.to_str().unwrap(), "--out", &out]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("over 2 prompts") && stdout.contains("1 skipped") && stdout.contains("largest heads"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("batch/lens-batch.json")).unwrap()).unwrap();
    assert_eq!(json["attribution"]["n"], 2);
    assert_eq!(json["skipped"].as_array().unwrap().len(), 1);
    assert!(json["skipped"][0]["reason"].as_str().unwrap().contains("not one token"));
    assert!(tmp.path().join("batch/lens-batch.html").exists());

    let bad = |extra: &[&str], needle: &str| assert_one_line_usage_error(&run(extra), extra, needle);
    // Names are not single tokens of the fixture's tokenizer: every IOI prompt is skipped.
    bad(&["--ioi", "4"], "none of the 4 prompts");
    std::fs::write(&file, "{\"prompt\": \"w5\", \"answr\": \" w9\"}\n").unwrap();
    bad(&["--probes", file.to_str().unwrap()], "probes.jsonl:1");
    bad(&["--ioi", "4", "--prompt", "w5"], "no --prompt");
}
