//! Unit tests of [`super`] (noisy in-context recall sampler and JSONL I/O; spec §2.3, §5).

use super::*;
use serde_json::{json, Map, Value};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn cfg() -> NoisyRecallConfig {
    NoisyRecallConfig::default()
}

#[test]
fn default_config_matches_spec() {
    let c = cfg();
    assert_eq!(
        (c.seq_len, c.alpha, c.trigger, c.noise_token, c.n_triggers),
        (64, 0.5, 1, 2, 1)
    );
    assert_eq!(c.answer_dist, AnswerDist::Uniform);
    assert!(!c.exclude_special_answers && !c.loss_on_all_positions);
    c.validate().unwrap();
    assert_eq!(c.triggers(), vec![1]);
}

#[test]
fn config_toml_and_json_serde() {
    let c: NoisyRecallConfig =
        toml::from_str("alpha = 0.2\nanswer_dist = \"bigram_of_trigger\"").unwrap();
    assert_eq!(c.alpha, 0.2);
    assert_eq!(c.answer_dist, AnswerDist::BigramOfTrigger);
    assert_eq!(c.seq_len, 64);
    let e = toml::from_str::<NoisyRecallConfig>("alpah = 0.2").unwrap_err();
    assert!(e.to_string().contains("alpah"), "{e}");
    let back: NoisyRecallConfig =
        serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn config_validation_names_field() {
    let bad = [
        (
            NoisyRecallConfig {
                alpha: 1.5,
                ..cfg()
            },
            "alpha",
        ),
        (
            NoisyRecallConfig {
                alpha: f64::NAN,
                ..cfg()
            },
            "alpha",
        ),
        (
            NoisyRecallConfig {
                seq_len: 0,
                ..cfg()
            },
            "seq_len",
        ),
        (
            NoisyRecallConfig {
                trigger: 65,
                ..cfg()
            },
            "trigger",
        ),
        (
            NoisyRecallConfig {
                noise_token: 70,
                ..cfg()
            },
            "noise_token",
        ),
        (
            NoisyRecallConfig {
                noise_token: 1,
                ..cfg()
            },
            "noise_token",
        ),
        (
            NoisyRecallConfig {
                n_triggers: 0,
                ..cfg()
            },
            "n_triggers",
        ),
        (
            NoisyRecallConfig {
                n_triggers: 3,
                trigger: 5,
                ..cfg()
            },
            "trigger",
        ),
    ];
    for (c, field) in bad {
        match c.validate() {
            Err(DataError::InvalidConfig { field: f, .. }) => assert_eq!(f, field, "{c:?}"),
            other => panic!("expected InvalidConfig for `{field}`, got {other:?}"),
        }
    }
    let msg = NoisyRecallConfig {
        alpha: -0.1,
        ..cfg()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(msg.contains("`alpha`") && msg.contains("-0.1"), "{msg}");
    assert!(NoisyRecallSampler::new(&NoisyRecallConfig {
        seq_len: 0,
        ..cfg()
    })
    .is_err());
}

#[test]
fn targets_are_inputs_shifted_by_one() {
    let b = sample_batch(&cfg(), 32, &mut rng(3));
    assert_eq!(b.inputs.len(), 32 * 64);
    for s in 0..b.batch {
        let r = b.row(s);
        assert_eq!(
            &b.targets[r.start..r.end - 1],
            &b.inputs[r.start + 1..r.end]
        );
    }
    assert!(b.inputs.iter().chain(&b.targets).all(|&x| x < 65));
}

#[test]
fn counter_scored_and_trigger_followers() {
    let b = sample_batch(&cfg(), 64, &mut rng(4));
    for s in 0..b.batch {
        let mut n = 0;
        for i in b.row(s) {
            if b.inputs[i] == 1 {
                n += 1;
                assert_eq!(b.counter[i], n);
                // trigger → τ iff noise branch, else ȳ
                let expect = if b.target_is_noise[i] { 2 } else { b.answer[s] };
                assert_eq!(b.targets[i], expect);
                assert_eq!(b.answer_at(i), Some(b.answer[s]));
            } else {
                assert_eq!(b.counter[i], 0);
                assert!(!b.target_is_noise[i]);
                assert_eq!(b.answer_at(i), None);
            }
            assert_eq!(b.scored[i], if b.counter[i] >= 2 { 1.0 } else { 0.0 });
        }
    }
}

#[test]
fn statistics_match_spec() {
    // spec §2.3 [reference re-impl]: triggers ≈ 14.4 % of positions, ≈ 8.2 scored positions per
    // sequence at T = 64, noise fraction at scored positions ≈ α.
    for alpha in [0.5, 0.2] {
        let b = sample_batch(&NoisyRecallConfig { alpha, ..cfg() }, 4000, &mut rng(7));
        let n = b.inputs.len() as f64;
        let trig = b.counter.iter().filter(|&&c| c > 0).count() as f64 / n;
        assert!((trig - 0.144).abs() < 0.015, "trigger fraction {trig}");
        let scored_per_seq = b.n_scored() as f64 / b.batch as f64;
        assert!(
            (7.0..=9.5).contains(&scored_per_seq),
            "scored/seq {scored_per_seq}"
        );
        let noise = (0..b.inputs.len())
            .filter(|&i| b.scored[i] > 0.0 && b.target_is_noise[i])
            .count() as f64
            / b.n_scored() as f64;
        assert!(
            (noise - alpha).abs() < 0.02,
            "noise fraction {noise} vs α {alpha}"
        );
        eprintln!("α={alpha}: trigger frac {trig:.4}, scored/seq {scored_per_seq:.2}, noise frac {noise:.4}");
    }
}

#[test]
fn alpha_extremes() {
    let clean = sample_batch(
        &NoisyRecallConfig {
            alpha: 0.0,
            ..cfg()
        },
        64,
        &mut rng(1),
    );
    assert!(clean.target_is_noise.iter().all(|&x| !x));
    let all = sample_batch(
        &NoisyRecallConfig {
            alpha: 1.0,
            ..cfg()
        },
        64,
        &mut rng(1),
    );
    for i in 0..all.inputs.len() {
        assert_eq!(all.target_is_noise[i], all.counter[i] > 0);
    }
}

#[test]
fn deterministic_for_seed() {
    let a = sample_batch(&cfg(), 16, &mut rng(11));
    let b = sample_batch(&cfg(), 16, &mut rng(11));
    let c = sample_batch(&cfg(), 16, &mut rng(12));
    assert_eq!(a, b);
    assert_ne!(a.inputs, c.inputs);
    // consecutive batches from one stream differ
    let mut r = rng(11);
    let (x, y) = (
        sample_batch(&cfg(), 16, &mut r),
        sample_batch(&cfg(), 16, &mut r),
    );
    assert_eq!(x, a);
    assert_ne!(x.inputs, y.inputs);
}

#[test]
fn eval_sets_are_fixed() {
    let c = cfg();
    let clean = clean_eval_set(&c, EVAL_SET_SIZE);
    assert_eq!(clean, clean_eval_set(&c, EVAL_SET_SIZE));
    assert_eq!(clean.batch, 256);
    assert!(clean.target_is_noise.iter().all(|&x| !x));
    let noisy = noisy_eval_set(&c, EVAL_SET_SIZE);
    assert_eq!(noisy, eval_set(&c, 256, NOISY_EVAL_SEED));
    assert!(noisy.target_is_noise.iter().any(|&x| x));
    assert_ne!(clean.inputs, noisy.inputs);
}

#[test]
fn options_multi_trigger_bigram_exclude_all_positions() {
    let c = NoisyRecallConfig {
        n_triggers: 3,
        exclude_special_answers: true,
        ..cfg()
    };
    let b = sample_batch(&c, 200, &mut rng(5));
    assert_eq!(b.triggers, vec![1, 43, 58]);
    assert_eq!(b.answer.len(), 600);
    assert!(b.answer.iter().all(|a| ![1, 43, 58, 2].contains(a)));
    for s in 0..b.batch {
        let mut counts = [0u32; 3];
        for i in b.row(s) {
            if let Some(k) = b.triggers.iter().position(|&q| q == b.inputs[i]) {
                counts[k] += 1;
                assert_eq!(b.counter[i], counts[k]);
                let expect = if b.target_is_noise[i] {
                    2
                } else {
                    b.answer[s * 3 + k]
                };
                assert_eq!(b.targets[i], expect);
            }
        }
    }
    // ȳ ~ π_b(·|space): never `!` (P(!|space) = 0), mostly lowercase letters
    let b = sample_batch(
        &NoisyRecallConfig {
            answer_dist: AnswerDist::BigramOfTrigger,
            ..cfg()
        },
        500,
        &mut rng(6),
    );
    assert!(b.answer.iter().all(|&a| a != 2));
    assert!(b.answer.iter().filter(|&&a| a >= 39).count() > 350);
    let b = sample_batch(
        &NoisyRecallConfig {
            loss_on_all_positions: true,
            ..cfg()
        },
        4,
        &mut rng(6),
    );
    assert!(b.scored.iter().all(|&s| s == 1.0));
}

#[test]
fn jsonl_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    for c in [
        cfg(),
        NoisyRecallConfig {
            n_triggers: 2,
            loss_on_all_positions: true,
            ..cfg()
        },
    ] {
        let b = sample_batch(&c, 20, &mut rng(9));
        let p = dir.path().join("data.jsonl");
        write_jsonl(&p, &b).unwrap();
        assert_eq!(read_jsonl(&p).unwrap(), b);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temp file left behind: {names:?}");
    }
    // minimal records (only the required fields) are accepted and target_is_noise is derived
    let b = sample_batch(&cfg(), 8, &mut rng(10));
    let p = dir.path().join("min.jsonl");
    let mut text = String::new();
    for s in 0..b.batch {
        let r = b.row(s);
        let o = json!({"inputs": &b.inputs[r.clone()], "targets": &b.targets[r.clone()],
            "counter": &b.counter[r.clone()], "answer": b.answer[s], "scored": &b.scored[r]});
        text += &format!("{o}\n\n");
    }
    std::fs::write(&p, text).unwrap();
    let back = read_jsonl(&p).unwrap();
    assert_eq!(back.inputs, b.inputs);
    for i in 0..b.inputs.len() {
        if b.answer[i / 64] != 2 {
            assert_eq!(back.target_is_noise[i], b.target_is_noise[i]);
        }
    }
}

#[test]
fn jsonl_error_messages() {
    let dir = tempfile::tempdir().unwrap();
    let b = sample_batch(&cfg(), 3, &mut rng(2));
    let good = dir.path().join("data.jsonl");
    write_jsonl(&good, &b).unwrap();
    let lines: Vec<Value> = std::fs::read_to_string(&good)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let check = |edit: &dyn Fn(&mut Map<String, Value>), line: usize, needles: &[&str]| {
        let mut ls = lines.clone();
        edit(ls[line - 1].as_object_mut().unwrap());
        let p = dir.path().join("data.jsonl");
        std::fs::write(&p, ls.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let msg = read_jsonl(&p).unwrap_err().to_string();
        for n in needles {
            assert!(msg.contains(n), "`{msg}` lacks `{n}`");
        }
    };
    check(
        &|o| {
            o["inputs"].as_array_mut().unwrap().pop();
        },
        3,
        &["data.jsonl:3: field `inputs`: expected 64 token ids < 65, got 63"],
    );
    check(
        &|o| {
            o["inputs"][5] = json!(65);
        },
        2,
        &["data.jsonl:2: field `inputs`", "element 5 is 65"],
    );
    check(
        &|o| {
            o["targets"] = json!("abc");
        },
        1,
        &["data.jsonl:1: field `targets`", "got a string"],
    );
    check(
        &|o| {
            o.remove("scored");
        },
        2,
        &["data.jsonl:2: field `scored`: missing"],
    );
    check(
        &|o| {
            o["answer"] = json!(-1);
        },
        1,
        &["data.jsonl:1: field `answer`", "expected a token id < 65"],
    );
    check(
        &|o| {
            o.insert("bogus".into(), json!(1));
        },
        2,
        &["data.jsonl:2: field `bogus`: unknown field"],
    );
    check(
        &|o| {
            o["counter"][0] = json!(7);
        },
        1,
        &["data.jsonl:1: field `counter`: position 0"],
    );
    check(
        &|o| {
            let x = o["targets"][0].as_u64().unwrap();
            o["targets"][0] = json!((x + 1) % 65);
        },
        3,
        &["data.jsonl:3: field `targets`", "shifted"],
    );
    std::fs::write(&good, "{\"inputs\": [1, 2\n").unwrap();
    let msg = read_jsonl(&good).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}:1: invalid JSON", good.display())),
        "{msg}"
    );
    std::fs::write(&good, "\n").unwrap();
    assert!(matches!(read_jsonl(&good), Err(DataError::Empty { .. })));
    let missing = dir.path().join("nope.jsonl");
    assert!(read_jsonl(&missing)
        .unwrap_err()
        .to_string()
        .contains("nope.jsonl"));
}
