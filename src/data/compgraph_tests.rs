use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

/// Spec §2.3's N = 12 example (ADD only, p = 23).
const EXAMPLE: &str = "17 = x_0 <EQ_SEP> 0 = x_126 <EQ_SEP> 2 = x_85 <EQ_SEP> 12 = x_62 <EQ_SEP> 22 = x_83 <EQ_SEP> 21 = x_16 <EQ_SEP> \
x_126 = x_36 <EQ_SEP> x_83 = x_56 <EQ_SEP> x_85 ADD x_126 ADD x_16 = x_48 <EQ_SEP> \
x_85 ADD x_56 = x_61 <EQ_SEP> x_16 ADD x_126 ADD x_56 = x_114 <EQ_SEP> x_16 ADD x_48 = x_23";

fn value_of(p: &Problem, var: u32) -> u32 {
    p.equations.iter().find(|e| e.var == var).expect("defined").value
}

#[test]
fn hand_computed_example_values_depths_and_text() {
    let p = parse_problem(EXAMPLE, 23).unwrap();
    let depths: Vec<u32> = p.equations.iter().map(|e| e.depth).collect();
    assert_eq!(depths, vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
    for (var, val) in [(36, 0), (56, 22), (48, 0), (61, 1), (114, 20), (23, 21)] {
        assert_eq!(value_of(&p, var), val, "x_{var}");
    }
    assert_eq!(problem_text(&p), EXAMPLE);
    // The paper's mixed-op example (9 nodes).
    let mixed = "20 = x_7 <EQ_SEP> 2 = x_42 <EQ_SEP> 6 = x_88 <EQ_SEP> 14 = x_115 <EQ_SEP> x_7 ADD x_42 = x_23 <EQ_SEP> \
x_42 ADD x_88 = x_91 <EQ_SEP> x_88 MUL x_115 = x_55 <EQ_SEP> x_23 MUL x_91 = x_101 <EQ_SEP> x_91 SUB x_88 ADD x_55 = x_30";
    let m = parse_problem(mixed, 23).unwrap();
    for (var, val) in [(23, 22), (91, 8), (55, 15), (101, 15), (30, 17)] {
        assert_eq!(value_of(&m, var), val, "x_{var}");
    }
}

#[test]
fn encoding_factors_labels_and_teacher_states() {
    let p = parse_problem("17 = x_5 <EQ_SEP> x_5 ADD x_5 = x_9 <EQ_SEP> x_9 = x_2", 23).unwrap();
    let v = Vocab { modulus: 23, name_pool: 64, ops: vec![Op::Add] };
    assert_eq!(v.sizes(), [7, 65, 2, 25]);
    let e = encode(&p, &v).unwrap();
    // 17 = x_5 | sep | x_5 ADD x_5 = x_9 | sep | x_9 = x_2
    assert_eq!(e.len(), 3 + 1 + 5 + 1 + 3);
    assert_eq!(e.tokens[0], [syntax::VALUE, 64, 1, 17]);
    assert_eq!(e.tokens[1], [syntax::EQ, 64, 1, 23]);
    assert_eq!(e.tokens[2], [syntax::VARIABLE, 5, 1, 24]);
    assert_eq!(e.labels[2], [syntax::VARIABLE, 5, 1, 17]);
    assert_eq!(e.tokens[3], [syntax::EQ_SEP, 64, 1, 23]);
    assert_eq!(e.tokens[5], [syntax::OPERATION, 64, 0, 23]);
    assert_eq!(e.labels[4], e.tokens[4], "left-hand references stay EMPTY");
    assert_eq!(e.labels[8][VALUE_FACTOR], 11);
    assert_eq!(e.labels[12][VALUE_FACTOR], 11);
    let rhs: Vec<(usize, i32, u8)> =
        (0..e.len()).filter(|&i| e.rhs_depth[i] >= 0).map(|i| (i, e.rhs_depth[i], e.n_parents[i])).collect();
    assert_eq!(rhs, vec![(2, 0, 0), (8, 1, 2), (12, 2, 1)]);
    assert_eq!(e.state(0), e.tokens);
    let s1 = e.state(1);
    assert_eq!(s1[2][VALUE_FACTOR], 17);
    assert_eq!(s1[8][VALUE_FACTOR], v.value_empty());
    assert_eq!(e.state(3), e.labels);
    assert_eq!(e.state(9), e.labels);
}

fn stats(cfg: &CompGraphConfig, n: usize, seed: u64) -> (f64, f64, u32, usize, usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = cfg.vocab();
    let (mut len, mut depth, mut max_d, mut min_len, mut max_len) = (0.0, 0.0, 0, usize::MAX, 0);
    for _ in 0..n {
        let p = sample_problem(cfg, &mut rng);
        let e = encode(&p, &v).unwrap();
        len += e.len() as f64;
        depth += p.depth() as f64;
        max_d = max_d.max(p.depth());
        min_len = min_len.min(e.len());
        max_len = max_len.max(e.len());
    }
    (len / n as f64, depth / n as f64, max_d, min_len, max_len)
}

/// Against the generator statistics of spec §2.5 (400 samples per size).
#[test]
fn generator_statistics_match_the_spec_table() {
    let uncapped = |n| CompGraphConfig { n_nodes: n, max_depth: 0, name_pool: 128, ..CompGraphConfig::default() };
    let (len, depth, _, lo, hi) = stats(&uncapped(16), 400, 1);
    assert!((81.0..85.0).contains(&len), "N=16 mean length {len}");
    assert!((3.3..3.9).contains(&depth), "N=16 mean depth {depth}");
    assert!(lo >= 60 && hi <= 105, "N=16 lengths {lo}..{hi}");
    let capped = CompGraphConfig { n_nodes: 32, max_depth: 6, name_pool: 128, ..CompGraphConfig::default() };
    let (len, depth, max_d, _, _) = stats(&capped, 400, 2);
    assert!((175.0..181.0).contains(&len), "N=32 mean length {len}");
    assert!((5.3..5.7).contains(&depth), "N=32 capped mean depth {depth}");
    assert_eq!(max_d, 6);
    let (_, depth, _, _, _) = stats(&uncapped(64), 200, 3);
    assert!((8.2..9.2).contains(&depth), "N=64 mean depth {depth}");
}

#[test]
fn generator_is_deterministic_and_well_formed() {
    let cfg = CompGraphConfig::default();
    let draw = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..20).map(|_| sample_problem(&cfg, &mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(draw(5), draw(5));
    assert_ne!(draw(5), draw(6));
    for p in draw(7) {
        assert_eq!(p.n_nodes(), 16);
        assert!(p.depth() <= 4);
        let leaves = p.equations.iter().filter(|e| e.parents.is_empty()).count();
        assert_eq!(leaves, 6);
        assert!(p.equations.windows(2).all(|w| w[0].depth <= w[1].depth), "depth-sorted");
        let mut names: Vec<u32> = p.equations.iter().map(|e| e.var).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 16);
        assert!(p.equations.iter().all(|e| (1..=3).contains(&e.parents.len()) || e.parents.is_empty()));
        // Re-parsing the text recomputes the same values and depths.
        assert_eq!(parse_problem(&problem_text(&p), 23).unwrap(), p);
    }
}

#[test]
fn jsonl_round_trips_exactly() {
    let cfg = CompGraphConfig { ops: vec![Op::Add, Op::Sub, Op::Mul], ..CompGraphConfig::default() };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let problems: Vec<Problem> = (0..25).map(|_| sample_problem(&cfg, &mut rng)).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graphs.jsonl");
    write_jsonl(&path, &problems).unwrap();
    assert_eq!(read_jsonl(&path, &cfg.vocab()).unwrap(), problems);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");
}

#[test]
fn invalid_problems_are_rejected_with_line_field_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = CompGraphConfig::default().vocab();
    let ok = r#"{"problem": "3 = x_1 <EQ_SEP> x_1 = x_2"}"#;
    let cases: &[(&str, &str)] = &[
        (r#"{"problem": "3 = x_1 <EQ_SEP> x_2 = x_3 <EQ_SEP> x_3 = x_2"}"#, "used before its definition"),
        (r#"{"problem": "3 = x_1 <EQ_SEP> x_7 = x_3"}"#, "`x_7` is undefined"),
        (r#"{"problem": "23 = x_1"}"#, "not below the modulus 23"),
        (r#"{"problem": "3 = x_1 <EQ_SEP> x_1 DIV x_1 = x_3"}"#, "unknown token `DIV`"),
        (r#"{"problem": "3 = x_1 <EQ_SEP> x_1 SUB x_1 = x_3"}"#, "operation SUB is not in this vocabulary"),
        (r#"{"problem": "3 = x_100"}"#, "outside the name pool"),
        (r#"{"problem": "3 = x_1 <EQ_SEP> 4 = x_1"}"#, "defined twice"),
        (r#"{"problem": "3 = x_1", "values": [4]}"#, "recorded 4, but the equations give 3"),
        (r#"{"problem": "3 = x_1", "modulus": 11}"#, "expected 23"),
        (r#"{"problem": "3 = x_1", "extra": 1}"#, "unknown field"),
    ];
    for (i, (line, reason)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&path, format!("{ok}\n{line}\n")).unwrap();
        let e = read_jsonl(&path, &vocab).unwrap_err().to_string();
        assert!(e.contains(&format!("bad{i}.jsonl:2:")), "{e}");
        assert!(e.contains(reason), "case {i}: {e}");
    }
    let path = dir.path().join("json.jsonl");
    std::fs::write(&path, "{nope\n").unwrap();
    assert!(read_jsonl(&path, &vocab).unwrap_err().to_string().contains("json.jsonl:1: invalid JSON"));
}

#[test]
fn leaf_values_narrow_the_leaves_and_leave_the_default_stream_alone() {
    let base = CompGraphConfig { n_nodes: 12, max_depth: 3, ..CompGraphConfig::default() };
    let small = CompGraphConfig { leaf_values: Some(3), ..base.clone() };
    small.validate().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..50 {
        let p = sample_problem(&small, &mut rng);
        assert!(p.equations.iter().filter(|e| e.parents.is_empty()).all(|e| e.value < 3));
    }
    // `leaf_values = p` draws exactly what the default draws.
    let full = CompGraphConfig { leaf_values: Some(23), ..base.clone() };
    let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(3), ChaCha8Rng::seed_from_u64(3));
    for _ in 0..20 {
        assert_eq!(sample_problem(&base, &mut a), sample_problem(&full, &mut b));
    }
    for bad in [0, 24] {
        let e = CompGraphConfig { leaf_values: Some(bad), ..base.clone() }.validate().unwrap_err().to_string();
        assert!(e.contains("leaf_values"), "{e}");
    }
}
