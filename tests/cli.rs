//! The binary end to end: bad input gives one clear line and exit 2 (never a
//! panic or a half-written file), resume is bit-identical, and results do
//! not depend on the thread count.

use std::path::Path;
use std::process::{Command, Output};

fn latentlab(args: &[&str], threads: Option<usize>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_latentlab"));
    cmd.args(args);
    if let Some(n) = threads {
        cmd.env("RAYON_NUM_THREADS", n.to_string());
    }
    cmd.output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2, no panic, and an error line containing every `needle`.
fn assert_bad_input(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
}

const TINY: &[&str] = &[
    "--set", "model.vocab_size=12", "--set", "model.d_model=16", "--set", "model.n_heads=2",
    "--set", "model.d_mlp=32", "--set", "model.max_seq_len=8", "--set", "task.seq_len=8",
    "--set", "train.batch_size=4", "--set", "train.eval_every=3", "--set", "task.eval_batches=1",
];

fn train(dir: &Path, name: &str, steps: u64, extra: &[&str], threads: Option<usize>) -> Output {
    let mut args = vec!["train".to_string(), "--quiet".into()];
    args.extend(TINY.iter().map(|s| s.to_string()));
    for s in [format!("out_dir={}", dir.display()), format!("name={name}"), format!("train.steps={steps}")] {
        args.push("--set".into());
        args.push(s);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    latentlab(&refs, threads)
}

fn weights(dir: &Path, name: &str, step: u64) -> Vec<u8> {
    std::fs::read(dir.join(name).join(format!("checkpoints/step_{step:08}/model.safetensors"))).expect("checkpoint exists")
}

#[test]
fn train_writes_outputs_and_resume_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let full = train(d, "full", 8, &[], None);
    assert!(full.status.success(), "{}", stderr(&full));
    for f in ["config.toml", "metrics.jsonl", "summary.json", "checkpoints/latest", "loss.svg", "eval.svg"] {
        assert!(d.join("full").join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(d.join("full/metrics.jsonl")).unwrap();
    assert!(metrics.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    assert!(metrics.contains("\"loss\"") && metrics.contains("\"eval_loss\""));

    // 4 steps, then resume to 8, reading the same config.
    let half = train(d, "resumed", 8, &["--stop-after", "4"], None);
    assert!(half.status.success(), "{}", stderr(&half));
    let rest = train(d, "resumed", 8, &["--resume"], None);
    assert!(rest.status.success(), "{}", stderr(&rest));
    assert!(weights(d, "full", 8) == weights(d, "resumed", 8), "resumed weights differ");
    let m_full = std::fs::read_to_string(d.join("full/metrics.jsonl")).unwrap();
    let m_res = std::fs::read_to_string(d.join("resumed/metrics.jsonl")).unwrap();
    assert_eq!(m_full, m_res, "resumed metrics differ");

    // The saved config is the base of a resumed run: the original flags are not needed ...
    let half = train(d, "bare", 8, &["--stop-after", "4", "--set", "train.lr=0.002"], None);
    assert!(half.status.success(), "{}", stderr(&half));
    let bare = latentlab(&["train", "--quiet", "--set", &format!("out_dir={}", d.display()), "--set", "name=bare", "--resume"], None);
    assert!(bare.status.success(), "{}", stderr(&bare));
    let saved = std::fs::read_to_string(d.join("bare/config.toml")).unwrap();
    assert!(saved.contains("lr = 0.002") && saved.contains("d_model = 16"), "resume kept the saved config: {saved}");
    // ... and flags that change it (other than train.steps) are an error naming the keys.
    let other = train(d, "bare", 8, &["--resume", "--set", "train.lr=0.5", "--set", "model.d_mlp=64"], None);
    assert_bad_input(&other, &["bare/config.toml", "train.lr", "model.d_mlp", "--resume"]);
    let longer = train(d, "bare", 10, &["--resume", "--set", "train.lr=0.002"], None);
    assert!(longer.status.success(), "{}", stderr(&longer));
    assert!(d.join("bare/checkpoints/step_00000010").exists(), "train.steps may grow on resume");
    // --resume of a run that never started says so and trains from step 0.
    let fresh = train(d, "fresh", 2, &["--resume"], None);
    assert!(fresh.status.success() && stderr(&fresh).contains("no checkpoint"), "{}", stderr(&fresh));
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let one = train(d, "t1", 5, &[], Some(1));
    let two = train(d, "t2", 5, &[], Some(2));
    assert!(one.status.success() && two.status.success(), "{} {}", stderr(&one), stderr(&two));
    assert!(weights(d, "t1", 5) == weights(d, "t2", 5), "weights differ between 1 and 2 threads");
    // Data-parallel batch slices: the slice count, not the thread count, fixes the result.
    let one = train(d, "s1", 5, &["--set", "train.shards=2"], Some(1));
    let two = train(d, "s2", 5, &["--set", "train.shards=2"], Some(2));
    assert!(one.status.success() && two.status.success(), "{} {}", stderr(&one), stderr(&two));
    assert!(weights(d, "s1", 5) == weights(d, "s2", 5), "sharded weights differ between 1 and 2 threads");
}

#[test]
fn bad_configs_give_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let file = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let malformed = file("bad.toml", "[train\nlr = 1\n");
    assert_bad_input(&latentlab(&["train", "--config", &malformed], None), &["bad.toml", "malformed TOML"]);
    let unknown = file("unknown.toml", "[train]\nlearning_rate = 1\n");
    assert_bad_input(&latentlab(&["train", "--config", &unknown], None), &["learning_rate"]);
    let wrong = file("wrong.toml", "[train]\nsteps = \"many\"\n");
    assert_bad_input(&latentlab(&["train", "--config", &wrong], None), &["train.steps"]);
    assert_bad_input(&latentlab(&["train", "--set", "model.d_model=-4"], None), &["model.d_model"]);
    assert_bad_input(&latentlab(&["train", "--set", "model.n_layers=0"], None), &["model.n_layers", "> 0"]);
    assert_bad_input(&latentlab(&["train", "--set", "train.lr=0"], None), &["train.lr"]);
    assert_bad_input(&latentlab(&["train", "--config", "/no/such/config.toml"], None), &["/no/such/config.toml"]);
    // A rejected config writes nothing.
    let out = format!("out_dir={}", d.join("never").display());
    assert_bad_input(&latentlab(&["train", "--set", &out, "--set", "train.beta2=1.5"], None), &["train.beta2"]);
    assert!(!d.join("never").exists(), "a rejected run created its directory");
}

#[test]
fn bad_checkpoints_and_commands_give_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ok = train(d, "base", 3, &[], None);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let ck = d.join("base/checkpoints/step_00000003");

    // A checkpoint of another shape: same files, different config in the manifest.
    let other = d.join("other");
    copy_dir(&ck, &other);
    let manifest = std::fs::read_to_string(other.join("manifest.json")).unwrap();
    std::fs::write(other.join("manifest.json"), manifest.replace("d_model = 16", "d_model = 24").replace("d_mlp = 32", "d_mlp = 48")).unwrap();
    assert_bad_input(&latentlab(&["eval", other.to_str().unwrap()], None), &["model.safetensors", "shape"]);

    // Truncated safetensors.
    let trunc = d.join("trunc");
    copy_dir(&ck, &trunc);
    let bytes = std::fs::read(trunc.join("model.safetensors")).unwrap();
    std::fs::write(trunc.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert_bad_input(&latentlab(&["eval", trunc.to_str().unwrap()], None), &["model.safetensors"]);

    // Garbage header.
    let corrupt = d.join("corrupt");
    copy_dir(&ck, &corrupt);
    std::fs::write(corrupt.join("model.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a safetensors file").unwrap();
    assert_bad_input(&latentlab(&["eval", corrupt.to_str().unwrap()], None), &["model.safetensors"]);

    // Missing checkpoint.
    assert_bad_input(&latentlab(&["eval", d.join("nope").to_str().unwrap()], None), &["nope"]);
    // The recursive study's sweep options on another kind of checkpoint.
    assert_bad_input(&latentlab(&["truncate", ck.to_str().unwrap(), "--edit", "0:fc_in:0.5", "--sizes", "12"], None), &["--sizes", "recursive-study checkpoint"]);

    // Unknown hook name and unknown subcommand.
    assert_bad_input(&latentlab(&["analyze", ck.to_str().unwrap(), "--hook", "blocks.0.attn.hook_scores"], None), &["hook_attn_scores"]);
    let o = latentlab(&["frobnicate"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("frobnicate"));
    assert_bad_input(&latentlab(&["reproduce", "nonsense"], None), &["nonsense"]);

    // analyze works on a good checkpoint.
    let out = d.join("acts.safetensors");
    let o = latentlab(&["analyze", ck.to_str().unwrap(), "--hook", "blocks.1.attn.hook_pattern", "--out", out.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let acts = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(acts["blocks.1.attn.hook_pattern"].dims(), &[4, 2, 8, 8]);

    // Head scores on repeated random tokens: every layer and head, in [0, 1].
    let hs = d.join("hs");
    let o = latentlab(&["analyze", ck.to_str().unwrap(), "--head-scores", "--batch", "3", "--out", hs.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hs.join("head-scores.json")).unwrap()).unwrap();
    assert_eq!(j["n"], 4, "half of max_seq_len 8");
    for k in ["prev_token", "duplicate", "induction", "first_token"] {
        let t = j[k].as_array().unwrap();
        assert_eq!(t.len(), 2, "{k}: two layers");
        assert!(t.iter().all(|r| r.as_array().unwrap().len() == 2 && r.as_array().unwrap().iter().all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap()))), "{k}: {t:?}");
    }
    assert!(j["loss_second_half"].as_f64().unwrap().is_finite());
    assert!(hs.join("head-scores.html").exists() && hs.join("induction-score.svg").exists());
    assert_bad_input(&latentlab(&["analyze", ck.to_str().unwrap(), "--head-scores", "--half-len", "5"], None), &["--half-len 5", "n ≤ 4"]);
    assert_bad_input(&latentlab(&["analyze", ck.to_str().unwrap(), "--head-scores", "--half-len", "1"], None), &["--half-len must be ≥ 2"]);
    // Patching on the checkpoint: ids only (no tokenizer), at most max_seq_len = 8 tokens.
    let pt = d.join("patch-ck");
    let o = latentlab(&["analyze", ck.to_str().unwrap(), "--patch", "--clean-ids", "1,2,3", "--corrupt-ids", "1,5,3", "--answer-id", "2", "--wrong-id", "5", "--out", pt.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(pt.join("patching.json").exists());
    let nine = "1,2,3,4,5,6,7,8,9";
    assert_bad_input(&latentlab(&["analyze", ck.to_str().unwrap(), "--patch", "--clean-ids", nine, "--corrupt-ids", nine, "--answer-id", "2", "--wrong-id", "5"], None), &["9 tokens", "at most 8"]);
    assert_bad_input(&latentlab(&["analyze", ck.to_str().unwrap(), "--patch", "--clean", "a b", "--corrupt", "a c", "--answer-id", "2", "--wrong-id", "5"], None), &["no tokenizer.json"]);
    // … and on a Hugging Face model folder (the committed tiny Pythia).
    let pythia = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-pythia");
    let hs = d.join("hs-pythia");
    let o = latentlab(&["analyze", pythia.to_str().unwrap(), "--head-scores", "--half-len", "8", "--batch", "2", "--out", hs.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hs.join("head-scores.json")).unwrap()).unwrap();
    assert_eq!((j["n"].as_u64(), j["batch"].as_u64()), (Some(8), Some(2)));

    // Activation patching on the same model, with its tokenizer: patching the first layer's
    // input where the prompts differ, or the last layer's output at the last position,
    // restores the clean logit difference exactly; elsewhere nothing changes.
    let pt = d.join("patch");
    let args = ["analyze", pythia.to_str().unwrap(), "--patch", "--per-head", "--clean", "w1 w2 w3 w4 w5", "--corrupt", "w1 w9 w3 w4 w5", "--answer", "w2", "--wrong", "w9", "--out", pt.to_str().unwrap()];
    let o = latentlab(&args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(pt.join("patching.json")).unwrap()).unwrap();
    let rows: Vec<Vec<f64>> = j["restored"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect();
    let names: Vec<&str> = j["points"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(names, ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]);
    let near = |row: &[f64], one: usize| row.iter().enumerate().all(|(i, x)| (x - if i == one { 1.0 } else { 0.0 }).abs() < 1e-3);
    assert!(near(&rows[0], 1) && near(&rows[2], 4), "{rows:?}");
    assert_eq!(j["tokens"][1], "\"w2\"/\"w9\"");
    assert!(pt.join("patching.html").exists() && pt.join("patching-by-head.svg").exists());
    let heads = j["heads"]["restored"].as_array().unwrap();
    assert_eq!(heads.len(), 2, "one row per layer");
    assert!(heads.iter().all(|r| r.as_array().unwrap().iter().all(|x| x.as_f64().unwrap().is_finite())));
    assert_bad_input(&latentlab(&["analyze", pythia.to_str().unwrap(), "--patch", "--clean", "w1 w2", "--corrupt", "w1 w9 w3", "--answer", "w2", "--wrong", "w9"], None), &["same number of tokens"]);
    assert_bad_input(&latentlab(&["analyze", pythia.to_str().unwrap(), "--patch", "--clean-ids", "1,2", "--corrupt-ids", "1,9", "--answer-id", "2", "--wrong-id", "2"], None), &["same token"]);
}

#[test]
fn a_closed_stdout_ends_the_run_without_a_panic() {
    // `latentlab … | head`: the reader is gone before the first line is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_latentlab")).args(["reproduce", "list"]).stdout(writer).output().expect("binary runs");
    let err = stderr(&o);
    assert!(!err.contains("panicked") && o.status.code() != Some(101), "status {:?}, stderr: {err}", o.status);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn data_compgraph_writes_problems_that_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p.jsonl");
    let o = latentlab(&["data", "compgraph", "--n", "7", "--nodes", "10", "--seed", "3", "--out", out.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = latentlab::experiments::recursive::RecursiveStudy::default().data;
    let problems = latentlab::data::compgraph::read_jsonl(&out, &cfg.vocab()).expect("reads back");
    assert_eq!(problems.len(), 7);
    assert!(problems.iter().all(|p| p.n_nodes() == 10));
    let bad = latentlab(&["data", "compgraph", "--nodes", "100000", "--out", tmp.path().join("x.jsonl").to_str().unwrap()], None);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--nodes") && !tmp.path().join("x.jsonl").exists());
}

#[test]
fn reproduce_with_several_seeds_runs_each_and_tabulates_the_claims_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = format!("out_dir={}", tmp.path().display());
    // 60 steps: the FFN association is learned (XS1 passes), induction is not (XS2 fails).
    let o = latentlab(
        &["reproduce", "truncation", "--quick", "-q", "--seeds", "5,6", "--set", &out_dir, "--set", "train.steps=60"],
        None,
    );
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{stdout}\n{}", stderr(&o));
    let read = |p: std::path::PathBuf| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap() };
    let per_seed: Vec<serde_json::Value> =
        [5, 6].iter().map(|s| read(tmp.path().join(format!("truncation-quick-seed{s}/claims.json")))).collect();
    for (s, name) in [(5, "truncation-quick-seed5"), (6, "truncation-quick-seed6")] {
        let cfg = std::fs::read_to_string(tmp.path().join(name).join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("seed = {s}")), "{name}: {cfg}");
    }
    let summary = read(tmp.path().join("truncation-quick-seeds/claims.json"));
    assert_eq!(summary["seeds"], serde_json::json!([5, 6]));
    let rows = summary["claims"].as_array().unwrap();
    assert_eq!(rows.len(), per_seed[0].as_array().unwrap().len());
    let mut every = 0;
    for row in rows {
        let id = row["id"].as_str().unwrap();
        let mut all = true;
        for (i, seed_claims) in per_seed.iter().enumerate() {
            let c = seed_claims.as_array().unwrap().iter().find(|c| c["id"] == id).unwrap();
            assert_eq!(row["per_seed"][i]["pass"], c["pass"], "{id}");
            assert_eq!(row["per_seed"][i]["measured"], c["measured"], "{id}");
            all &= c["pass"].as_bool().unwrap();
        }
        assert_eq!(row["every_seed"], all, "{id}");
        every += usize::from(all);
    }
    assert_eq!(summary["passed_every_seed"], every);
    assert!(every > 0 && every < rows.len(), "a mixed table is expected at 60 steps: {stdout}");
    let find = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap()["every_seed"].as_bool().unwrap();
    assert!(find("XS1") && !find("XS2"), "{stdout}");
    assert!(stdout.contains(&format!("{every}/{} claims pass at every seed", rows.len())), "{stdout}");
}

#[test]
fn several_seeds_reject_a_repeated_seed_a_single_seed_and_studies_without_claims() {
    assert_bad_input(&latentlab(&["reproduce", "truncation", "--seeds", "1,1"], None), &["--seeds", "seed 1 is given twice"]);
    assert_bad_input(&latentlab(&["reproduce", "truncation", "--seeds", "1,2", "--seed", "3"], None), &["--seed"]);
    assert_bad_input(&latentlab(&["reproduce", "laser", "--seeds", "1,2"], None), &["--seeds", "laser"]);
    assert_bad_input(&latentlab(&["reproduce", "truncation", "--seeds", "1,x"], None), &["--seeds"]);
}
