//! The reasoning-rules study (arXiv 2506.19418): generators verified against
//! their rules, dataset I/O and its errors, and a `--quick` reproduction with
//! loose bands.

use std::path::Path;

use latentlab::data::rules::{generate, read_csv, read_derivation_lines, read_jsonl, write_jsonl, Family};
use latentlab::data::rules_math::eval_printed;
use latentlab::data::rules_syllogism;
use rand::{Rng, SeedableRng};

fn variable_of(premise: &str) -> &'static str {
    ["x", "y", "t", "w"].into_iter().find(|v| premise.split_whitespace().any(|w| w == *v)).expect("a variable")
}

/// Every math conclusion, for every rule, agrees numerically with its premise
/// at random points: DIFF via central differences of P, INT via central
/// differences of the conclusion, ADD/SUB pointwise.
#[test]
fn every_math_conclusion_checks_out_at_random_points() {
    let s = generate(Family::Math, 0, 0, 3000, 11);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for (ex, alts) in s.test.iter().zip(&s.test_alts) {
        let v = variable_of(&ex.premise);
        let (p, q) = ex.premise.split_once(" ; ").expect("P ; Q");
        let f = |text: &str, at: f64| eval_printed(text, v, at).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(alts[ex.label()], ex.conclusion);
        for _ in 0..3 {
            let at: f64 = rng.random_range(-2.0..2.0);
            let h = 1e-5;
            let checks = [
                ("DIFF", f(&alts[0], at), (f(p, at + h) - f(p, at - h)) / (2.0 * h)),
                ("INT", (f(&alts[1], at + h) - f(&alts[1], at - h)) / (2.0 * h), f(p, at)),
                ("ADD", f(&alts[2], at), f(p, at) + f(q, at)),
                ("SUB", f(&alts[3], at), f(p, at) - f(q, at)),
            ];
            for (rule, got, want) in checks {
                assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{rule} on `{}` at {v}={at}: {got} vs {want} ({alts:?})", ex.premise);
            }
        }
        let mut uniq = alts.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 4, "two rules gave the same conclusion for `{}`", ex.premise);
    }
}

/// Each syllogism conclusion follows from its premise by its own scheme and
/// by no other rule's scheme.
#[test]
fn syllogisms_follow_their_scheme_only() {
    let s = generate(Family::Syllogism, 0, 0, 1500, 3);
    for (ex, alts) in s.test.iter().zip(&s.test_alts) {
        assert_eq!(ex.premise.split_whitespace().count(), 24);
        for (r, rule) in rules_syllogism::RULES.iter().enumerate() {
            for (c, concl) in alts.iter().enumerate() {
                assert_eq!(rules_syllogism::check(&ex.premise, rule, concl).unwrap(), r == c, "{rule} ⊢ {concl}? premise `{}`", ex.premise);
            }
        }
    }
}

/// Explanatory conclusions match their inference templates over the premise facts.
#[test]
fn explanatory_conclusions_match_their_templates() {
    let s = generate(Family::Explanatory, 0, 0, 1000, 4);
    for (ex, alts) in s.test.iter().zip(&s.test_alts) {
        let facts: Vec<Vec<&str>> = ex.premise.split(" .").map(|f| f.split_whitespace().collect()).filter(|f: &Vec<&str>| !f.is_empty()).collect();
        let find = |pat: &dyn Fn(&[&str]) -> bool| facts.iter().find(|f| pat(f)).unwrap_or_else(|| panic!("fact missing in `{}`", ex.premise)).clone();
        let g1 = find(&|f| f.len() == 6 && f[1..5] == ["is", "a", "kind", "of"] && !["fur", "leaves", "roots", "wings", "scales", "water", "light", "heat", "energy", "shell"].contains(&f[0]));
        let (x, y) = (g1[0], g1[5]);
        let g2 = find(&|f| f.len() == 3 && f[0] == y && f[1] == "has");
        let p = g2[2];
        let g3 = find(&|f| f.len() == 6 && f[0] == p && f[1] == "is");
        let g4 = find(&|f| f.len() == 8 && f[0] == "if" && f[3] == p);
        let g5 = find(&|f| f.len() == 3 && f[0] == y && f[1] == "is");
        let want = [
            format!("{x} has {p}"),
            format!("{y} has {}", g3[5]),
            format!("{y} is {}", g4[7]),
            format!("{y} has {p} and is {}", g5[2]),
            format!("{x} is an example of {y}"),
        ];
        assert_eq!(alts, &want.to_vec(), "premise `{}`", ex.premise);
    }
}

#[test]
fn jsonl_round_trip_and_readers_name_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = generate(Family::Syllogism, 50, 0, 0, 9);
    let path = dir.path().join("s.jsonl");
    write_jsonl(&path, &s.train).unwrap();
    assert_eq!(read_jsonl(&path).unwrap(), s.train);

    let write = |name: &str, text: &str| -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let err = |p: &Path, f: &dyn Fn(&Path) -> Result<Vec<latentlab::data::rules::RuleExample>, latentlab::data::DataError>| f(p).unwrap_err().to_string();
    let good = write("ok.csv", "rule,premise,conclusion\nMP,\"all a are b . x is a .\",x is b\n");
    assert_eq!(read_csv(&good, Family::Syllogism).unwrap()[0].conclusion, "x is b");
    let bad = write("bad.csv", "rule,premise,conclusion\nMP,all a are b . x is a .,x is b\nMP,only two\n");
    let e = err(&bad, &|p| read_csv(p, Family::Syllogism));
    assert!(e.contains("bad.csv:3") && e.contains("expected 3 fields"), "{e}");
    let bad_rule = write("rule.csv", "FOO,a,b\n");
    let e = err(&bad_rule, &|p| read_csv(p, Family::Syllogism));
    assert!(e.contains("rule.csv:1") && e.contains("`FOO`"), "{e}");
    let lines = write("d.txt", "performing differentiation for 3 x ^ 2 where the variable is x & the result is 6 x\nperforming magic for x where the variable is x & the result is x\n");
    let e = err(&lines, &|p| read_derivation_lines(p));
    assert!(e.contains("d.txt:2") && e.contains("unknown operation `magic`"), "{e}");
    let bad_json = write("b.jsonl", "{\"family\":\"math\",\"rule\":\"DIFF\",\"premise\":\"x\",\"conclusion\":\"1\"}\n{not json\n");
    let e = err(&bad_json, &|p| read_jsonl(p));
    assert!(e.contains("b.jsonl:2"), "{e}");
}

#[test]
fn bad_study_config_is_an_error_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latentlab"))
        .args(["reproduce", "vae-rules", "--quick", "--set", "loss.free_bits=sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains("loss.free_bits") && err.contains("per_dim"), "{err}");
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// `reproduce vae-rules --quick`: every output is written, every number is in
/// range, and the loose bands a 150-step run must meet hold: training lowers
/// the reconstruction loss, the no-latent decoder is near chance over rules
/// (V0a), and the oracle beats it on token accuracy.
#[test]
fn quick_reproduction_writes_a_claims_table_within_loose_bands() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latentlab"))
        .args(["reproduce", "vae-rules", "--quick", "-q", "--set"])
        .arg(format!("out_dir={:?}", dir.path().display().to_string()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("claims pass") && stdout.contains("V0a"), "{stdout}");
    let run = dir.path().join("vae-rules-quick");
    let claims = json(&run.join("claims.json"));
    let ids: Vec<&str> = claims.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    for id in ["V0a", "V0b", "V0c", "V1a", "V1b", "V3a", "H"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let v0a = claims.as_array().unwrap().iter().find(|c| c["id"] == "V0a").unwrap();
    assert_eq!(v0a["pass"], true, "{v0a}");
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Claims") && html.contains("2-D PCA"));

    let results = json(&run.join("results.json"));
    let variants = results["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 4);
    let by = |name: &str| variants.iter().find(|v| v["variant"]["name"] == name).unwrap_or_else(|| panic!("{name}"));
    for v in variants {
        let e = &v["eval"];
        for k in ["em_post", "tok_acc", "em_centroid"] {
            let x = e[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{k} = {x}");
        }
    }
    for name in ["syllogism-s0-query", "syllogism-s1-query"] {
        let e = &by(name)["eval"];
        assert!(e["kl_total"].as_f64().unwrap() > 0.0, "{name}");
        assert_eq!(e["kl_dims"].as_array().unwrap().len(), 16);
        assert_eq!(e["pca"].as_array().unwrap().len(), 120);
        let sil = e["silhouette"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&sil));
        assert_eq!(e["grad_sep_ffn"].as_array().unwrap().len(), 2);
        // Training lowered the validation reconstruction loss a lot.
        let dyn_ = by(name)["dynamics"].as_array().unwrap();
        let first = dyn_.first().unwrap()[1]["val_recon"].as_f64().unwrap();
        let last = dyn_.last().unwrap()[1]["val_recon"].as_f64().unwrap();
        assert!(last < 0.7 * first, "{name}: val recon {first} -> {last}");
    }
    let tok = |n: &str| by(n)["eval"]["tok_acc"].as_f64().unwrap();
    assert!(tok("syllogism-oracle") > tok("syllogism-no-latent"), "oracle {} vs no-latent {}", tok("syllogism-oracle"), tok("syllogism-no-latent"));
    for f in ["train", "valid", "test"] {
        assert!(!read_jsonl(&run.join("data/syllogism").join(format!("{f}.jsonl"))).unwrap().is_empty());
    }
    assert!(run.join("metrics.jsonl").exists() && run.join("syllogism-s1-query/metrics.jsonl").exists());
}

/// Same seed → bit-identical results (data, init, sampling, evaluation).
#[test]
fn same_seed_gives_identical_results() {
    use latentlab::experiments::vae_rules::{reproduce, VaeRulesStudy};
    let run = |dir: &Path| {
        let mut s = VaeRulesStudy::quick();
        s.out_dir = dir.display().to_string();
        s.train.steps = 6;
        s.train.eval_every = 3;
        s.runs.supervision_modes = vec![latentlab::experiments::vae_rules::config::Supervision::Token];
        s.runs.baseline_families = vec![];
        s.eval.n_test = 40;
        s.eval.grad_per_rule = 2;
        serde_json::to_string(&reproduce(&s, true, true).unwrap().variants.iter().map(|v| v.eval.clone()).collect::<Vec<_>>()).unwrap()
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_eq!(run(a.path()), run(b.path()));
}
