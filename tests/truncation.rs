//! `reproduce truncation --quick` end to end (the XS smoke configuration of
//! the spec), then `truncate`, `eval` and `analyze` on its checkpoint.

use std::process::{Command, Output};

fn latentlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentlab")).args(args).output().expect("binary runs")
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "failed: {}\n{}", out, String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn quick_reproduction_passes_the_smoke_bands_and_checkpoints_can_be_edited() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = format!("out_dir={}", tmp.path().display());
    let stdout = ok(&latentlab(&["reproduce", "truncation", "--quick", "--quiet", "--set", &out_dir]));
    let dir = tmp.path().join("truncation-quick");
    for f in ["report.html", "results.json", "claims.json", "config.toml", "main/metrics.jsonl", "main/sweep.jsonl"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let claims: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(dir.join("claims.json")).unwrap()).unwrap();
    let ids: Vec<&str> = claims.iter().map(|c| c["id"].as_str().unwrap()).collect();
    for id in ["XS1", "XS2", "XS3", "C8", "C9"] {
        assert!(ids.contains(&id), "claim {id} missing: {ids:?}");
    }
    for c in &claims {
        assert_eq!(c["pass"], true, "claim failed: {c}\n{stdout}");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("XS2"));

    // The forced-query diagnostic (behind C5): queries whose earlier followers are all τ
    // exist at α = 0.5, their τ-slot mass is a fraction, and moving it changes the loss.
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let f = &results["variants"][0]["forced"];
    assert!(f["n"].as_u64().unwrap() > 20, "{f}");
    let mass = f["tau_mass"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&mass), "{f}");
    let (loss, moved) = (f["loss"].as_f64().unwrap(), f["loss_moved"].as_f64().unwrap());
    assert!(loss.is_finite() && moved.is_finite() && loss > 0.0 && (loss - moved).abs() > 1e-4, "{f}");

    // Direct logit attribution of logit[τ] − logit[ȳ] at clean scored positions: the parts
    // add up to the model's own difference; FFN₂ pushes τ, layer-2 attention (induction) ȳ.
    let a = &results["variants"][0]["attribution"];
    let part = |name: &str| a["parts"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["logit"].as_f64().unwrap();
    let sum: f64 = a["parts"].as_array().unwrap().iter().map(|p| p["logit"].as_f64().unwrap()).sum();
    assert!(a["n"].as_u64().unwrap() > 100 && (sum + a["bias"].as_f64().unwrap() - a["target"].as_f64().unwrap()).abs() < 1e-3, "{a}");
    assert!(part("L1 mlp") > 0.5 && part("L1 attn") < -0.5, "FFN₂ should push τ and induction ȳ: {a}");

    // The sweep table has the unedited model and FFN2 removal; removal lowers P(τ).
    let sweep = std::fs::read_to_string(dir.join("main/sweep.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = sweep.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let p = |edit: &str| rows.iter().find(|r| r["edit"] == edit).unwrap()["clean"]["p_noise"].as_f64().unwrap();
    assert!(p("1:fc_in:0") < p("none") - 0.2, "dropping FFN2 should remove the noise association");

    // `truncate` on the saved checkpoint reproduces the sweep's numbers.
    let ck = dir.join("main/checkpoints/step_00000450");
    let table = tmp.path().join("t.jsonl");
    let examples = tmp.path().join("ex.jsonl");
    ok(&latentlab(&[
        "truncate", ck.to_str().unwrap(), "--edit", "1:fc_in:0", "--out", table.to_str().unwrap(),
        "--per-example", examples.to_str().unwrap(),
    ]));
    let t: Vec<serde_json::Value> =
        std::fs::read_to_string(&table).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(t[0]["edit"], "none");
    assert!((t[0]["clean_p_noise"].as_f64().unwrap() - p("none")).abs() < 1e-6);
    assert!((t[1]["clean_p_noise"].as_f64().unwrap() - p("1:fc_in:0")).abs() < 1e-6);
    assert!(std::fs::read_to_string(&examples).unwrap().lines().count() > 100);

    let sweep_out = tmp.path().join("s.jsonl");
    ok(&latentlab(&[
        "truncate", ck.to_str().unwrap(), "--sweep", "--layers", "1", "--matrices", "fc_in,fc_out",
        "--rank-fracs", "0.05,0.5", "--out", sweep_out.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(&sweep_out).unwrap().lines().count(), 1 + 4);

    let e = latentlab(&["truncate", ck.to_str().unwrap(), "--edit", "7:fc_in:0.1"]);
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("valid targets"));
    let e = latentlab(&["truncate", ck.to_str().unwrap(), "--edit", "1:fc_in:1.5"]);
    assert_eq!(e.status.code(), Some(2));

    ok(&latentlab(&["eval", ck.to_str().unwrap()]));
    // Probes recomputed over the run's checkpoint series match those logged in training.
    let series = tmp.path().join("series.jsonl");
    ok(&latentlab(&["eval", dir.join("main/checkpoints").to_str().unwrap(), "--probes", "--out", series.to_str().unwrap()]));
    let logged: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.join("main/metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let recomputed: Vec<serde_json::Value> =
        std::fs::read_to_string(&series).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!recomputed.is_empty());
    for r in &recomputed {
        let step = r["step"].as_u64().unwrap();
        let l = logged.iter().rev().find(|l| l["step"].as_u64() == Some(step) && l.get("ffn2_noise_margin").is_some()).expect("logged probes");
        for k in ["ffn2_noise_margin", "l2_attn_answer_noisy", "clean_acc_ffn2_dropped", "l1_prev_token_attn"] {
            let (a, b) = (r[k].as_f64().unwrap(), l[k].as_f64().unwrap());
            assert!((a - b).abs() < 1e-6, "step {step} {k}: recomputed {a} vs logged {b}");
        }
    }
    ok(&latentlab(&["analyze", ck.to_str().unwrap(), "--hook", "blocks.1.attn.hook_pattern", "--out", tmp.path().join("a.safetensors").to_str().unwrap()]));
}
