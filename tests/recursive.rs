//! The recursive study's model and task: every trainable tensor gets a gradient under each
//! training method, `loop.{t}.` hooks capture per step, the discrete bottleneck re-embeds
//! its own output, and a short run lowers the loss.

mod common;

use candle_core::{Device, Result};
use latentlab::data::compgraph::{encode, sample_problem, CompGraphConfig, Encoded};
use latentlab::experiments::recursive::config::{CurriculumStage, Method, RecursiveStudy, Variant};
use latentlab::experiments::recursive::run::task_for;
use latentlab::experiments::recursive::task::{all_transitions_batch, eval_steps, evaluate_set, final_batch, recovery_rate};
use latentlab::interp::{HookPoint, Hooks};
use latentlab::models::{Halt, Recurrent, RecurrentConfig};
use latentlab::train::{MetricsSink, RunOptions, Task};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn tiny_study() -> RecursiveStudy {
    let mut s = RecursiveStudy::quick();
    s.data.n_nodes = 8;
    s.data.max_depth = 2;
    s.data.name_pool = 16;
    s.model.d_model = 16;
    s.model.n_heads = 2;
    s.model.d_mlp = 32;
    s.model.max_seq_len = 256;
    s.train.batch_size = 8;
    s.eval.sizes = vec![8, 16];
    s.eval.n_graphs = 8;
    s.eval.n_val = 8;
    s.variants = vec![
        Variant { name: "discrete-ec".into(), method: Method::Discrete, n_layers: 2, error_correction: true, steps: None },
        Variant { name: "continuous".into(), method: Method::Continuous, n_layers: 2, error_correction: false, steps: None },
        Variant { name: "feedforward".into(), method: Method::FeedForward, n_layers: 2, error_correction: false, steps: None },
        Variant { name: "recurrent-e2e".into(), method: Method::RecurrentE2e, n_layers: 2, error_correction: false, steps: None },
    ];
    s
}

/// A tiny interpretability model; p = 7 keeps the Z_p³ sweep at 343 inputs.
fn tiny_interp(study: &mut RecursiveStudy) {
    study.data.modulus = 7;
    study.interp.d_model = 16;
    study.interp.n_heads = 2;
    study.interp.contexts = 1;
    study.interp.family_size = 4;
}

#[test]
fn every_trainable_tensor_gets_a_nonzero_gradient_under_each_method() -> Result<()> {
    let study = tiny_study();
    for v in &study.variants {
        let mut task = task_for(&study, v).expect("task");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (loss, _) = task.train_loss(0, &mut rng)?;
        let grads = loss.backward()?;
        let vars = task.params().trainable();
        assert!(vars.len() > 20, "{}: {} tensors", v.name, vars.len());
        for (name, var) in vars {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{}: `{name}` got no gradient", v.name));
            let n = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(n.is_finite() && n > 0.0, "{}: `{name}` gradient norm² = {n}", v.name);
        }
    }
    Ok(())
}

#[test]
fn sliced_transition_batches_give_the_whole_batch_loss_and_gradients() -> Result<()> {
    use latentlab::experiments::recursive::task::{sharded_transition_grads, transition_batch};
    let (model, enc) = small_model()?;
    let vocab = CompGraphConfig { n_nodes: 8, max_depth: 2, name_pool: 16, ..CompGraphConfig::default() }.vocab();
    let refs: Vec<&Encoded> = enc.iter().collect();
    let b = transition_batch(&refs, &vocab, &mut ChaCha8Rng::seed_from_u64(3), None);
    let (whole, gw, lw) = sharded_transition_grads(&model, &b, 1)?;
    let (part, gp, lp) = sharded_transition_grads(&model, &b, 2)?;
    assert!((whole - part).abs() <= 1e-5 * whole.abs().max(1.0), "loss {part} vs {whole}");
    assert_eq!(lw.dims(), lp.dims());
    common::assert_same_grads(model.params(), &gp, &gw, "2 slices");
    Ok(())
}

fn small_model() -> Result<(Recurrent, Vec<Encoded>)> {
    let data = CompGraphConfig { n_nodes: 8, max_depth: 2, name_pool: 16, ..CompGraphConfig::default() };
    let cfg = RecurrentConfig { factor_sizes: data.vocab().sizes().to_vec(), d_model: 16, n_heads: 2, d_mlp: 32, n_layers: 2, max_seq_len: 128, ..RecurrentConfig::default() };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let enc = (0..3).map(|_| encode(&sample_problem(&data, &mut rng), &data.vocab()).unwrap()).collect();
    Ok((Recurrent::new(&cfg, 0, &Device::Cpu)?, enc))
}

/// The solved-state input of `small_model`'s graphs (the final-step batch).
fn small_input(enc: &[Encoded]) -> Result<candle_core::Tensor> {
    let refs: Vec<&Encoded> = enc.iter().collect();
    final_batch(&refs, &CompGraphConfig { n_nodes: 8, max_depth: 2, name_pool: 16, ..CompGraphConfig::default() }.vocab()).input_tensor(&Device::Cpu)
}

#[test]
fn continuous_evaluation_keeps_no_autograd_history_and_the_same_values() -> Result<()> {
    let (model, enc) = small_model()?;
    let x = small_input(&enc)?;
    let train = model.iterate_continuous(&x, 4, &mut Hooks::none())?;
    let eval = model.iterate_continuous_eval(&x, 4, &mut Hooks::none())?;
    for (a, b) in train.iter().flatten().zip(eval.iter().flatten()) {
        assert!(a.track_op(), "training steps keep their history for backprop");
        assert!(!b.track_op(), "evaluation steps hold no graph (memory stays at one step)");
        assert_eq!(a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(())
}

#[test]
fn the_per_graph_early_exit_matches_the_full_trajectory() -> Result<()> {
    let (model, enc) = small_model()?;
    let x = small_input(&enc)?;
    let cap = 6;
    let states: Vec<Vec<u32>> = model
        .iterate(&x, Halt::Fixed(cap), &mut Hooks::none())?
        .iter()
        .map(|s| s.flatten_all()?.to_vec1::<u32>())
        .collect::<Result<_>>()?;
    let (solved, steps) = model.solve(&x, cap, &mut Hooks::none())?;
    let solved = solved.flatten_all()?.to_vec1::<u32>()?;
    let input = x.flatten_all()?.to_vec1::<u32>()?;
    let row = input.len() / enc.len();
    for i in 0..enc.len() {
        let at = |s: &[u32]| s[i * row..(i + 1) * row].to_vec();
        let prev = |t: usize| if t == 0 { at(&input) } else { at(&states[t - 1]) };
        let t_end = (0..cap).find(|&t| at(&states[t]) == prev(t)).unwrap_or(cap - 1);
        assert_eq!(steps[i], t_end + 1, "graph {i}: steps");
        assert_eq!(at(&solved), at(&states[t_end]), "graph {i}: final state");
    }
    Ok(())
}

#[test]
fn loop_hooks_capture_each_step_and_the_bottleneck_feeds_back() -> Result<()> {
    let (model, enc) = small_model()?;
    let x = small_input(&enc)?;
    let points: Vec<HookPoint> = ["loop.0.hook_embed", "loop.2.hook_embed", "loop.1.blocks.1.attn.hook_pattern", "loop.2.hook_logits"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut hooks = Hooks::capture(points.clone());
    let states = model.iterate(&x, Halt::Fixed(3), &mut hooks)?;
    assert_eq!(states.len(), 3);
    for p in &points {
        assert!(hooks.cache.contains_key(p), "{p} captured");
    }
    assert_eq!(hooks.cache[&points[2]].dims(), &[3, 2, x.dim(1)?, x.dim(1)?]);
    assert_eq!(hooks.cache[&points[3]].dims()[2], model.cfg.factor_sizes.iter().sum::<usize>());
    // Step 2's embedding is the embedding of step 1's discrete output.
    let again = model.embed(&states[1], &mut Hooks::none())?;
    let diff = (again - &hooks.cache[&points[1]])?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    // Plain iteration equals the hooked one, and fixed-point halting never runs longer.
    let plain = model.iterate(&x, Halt::Fixed(3), &mut Hooks::none())?;
    assert_eq!(plain[2].to_vec3::<u32>()?, states[2].to_vec3::<u32>()?);
    assert!(model.iterate(&x, Halt::UntilFixedPoint(3), &mut Hooks::none())?.len() <= 3);
    let cont = model.iterate_continuous(&x, 2, &mut Hooks::capture(["loop.1.ln_final.hook_normalized".parse().unwrap()]))?;
    assert_eq!(cont.len(), 2);
    Ok(())
}

#[test]
fn a_short_discrete_run_lowers_the_loss_and_evaluates() -> Result<()> {
    let mut study = tiny_study();
    study.train.steps = 60;
    study.train.warmup_steps = 5;
    study.train.lr = 3e-3;
    study.train.log_every = 1;
    study.train.eval_every = 0;
    let v = study.variants[0].clone();
    let mut task = task_for(&study, &v).expect("task");
    let mut sink = MetricsSink::memory();
    let opts = RunOptions { quiet: true, seed: 3, ..RunOptions::default() };
    latentlab::train::run(&mut task, &study.train, &opts, &mut sink).expect("training");
    let loss = sink.series("loss");
    let mean = |s: &[(u64, f64)]| s.iter().map(|x| x.1).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&loss[..10]), mean(&loss[loss.len() - 10..]));
    assert!(last < 0.5 * first, "loss {first:.3} → {last:.3}");
    assert!(sink.series("due_acc_parents0").last().is_some());
    let set = latentlab::experiments::recursive::task::graph_set(&CompGraphConfig { max_depth: 0, ..study.data.clone() }, 8, 7);
    let r = evaluate_set(&task.model, &v, 2, &set, &study.eval, &study.data.vocab())?;
    assert_eq!(r.steps, r.max_depth + 2);
    assert_eq!(r.solved_by_step.len(), eval_steps(r.max_depth, 2));
    assert_eq!(r.solved, r.solved_by_step[r.steps - 1]);
    for x in [r.node_acc, r.solved_depth_plus_k, r.solved_fixed_point, r.converged] {
        assert!((0.0..=1.0).contains(&x));
    }
    assert!((1.0..=r.solved_by_step.len() as f64).contains(&r.mean_fixed_point_steps));
    let rec = recovery_rate(&task.model, &set, 4, &study.data.vocab(), study.data.modulus, 1)?;
    assert!((0.0..=1.0).contains(&rec));
    Ok(())
}

#[test]
fn hooked_and_fused_distance_bias_attention_agree() -> Result<()> {
    let (model, enc) = small_model()?;
    assert!(model.cfg.pos_bias_window > 0, "the default positions are the fused distance bias");
    let x = small_input(&enc)?;
    let fused = model.step(&x, &mut Hooks::none())?;
    let mut hooks = Hooks::capture(vec!["blocks.0.attn.hook_pattern".parse().unwrap()]);
    let composed = model.step(&x, &mut hooks)?;
    for (a, c) in fused.iter().zip(&composed) {
        let d = (a - c)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-4, "fused vs composed logits differ by {d}");
    }
    Ok(())
}

#[test]
fn a_copy_only_curriculum_stage_draws_single_parent_graphs_first() -> Result<()> {
    use latentlab::config::Validate;
    let full = RecursiveStudy::default();
    full.validate().expect("the full profile validates");
    assert_eq!(full.schedule().stages[0].data.max_fan_in, 1, "the full profile starts copy-only");
    let mut bad = tiny_study();
    bad.curriculum = vec![CurriculumStage { steps: 5, n_nodes: Some(2), max_depth: None, max_fan_in: None, min_fan_in: None, leaf_values: None, until_due_acc: None, max_steps: None }];
    let err = bad.validate().expect_err("2 nodes < 6 leaves").to_string();
    assert!(err.contains("curriculum[0]"), "{err}");
    // A stage of three-operand sums only; a minimum above the maximum is an error.
    let three = CurriculumStage { steps: 5, n_nodes: None, max_depth: None, max_fan_in: Some(3), min_fan_in: Some(3), leaf_values: Some(4), until_due_acc: None, max_steps: None };
    let mut s3 = tiny_study();
    s3.curriculum = vec![three.clone()];
    s3.validate().expect("3..3 parents validates");
    assert_eq!((s3.schedule().stages[0].data.min_fan_in, s3.schedule().stages[0].data.max_fan_in), (3, 3));
    s3.curriculum = vec![CurriculumStage { max_fan_in: Some(2), ..three }];
    let err = s3.validate().expect_err("min 3 > max 2").to_string();
    assert!(err.contains("curriculum[0]"), "{err}");
    let mut study = tiny_study();
    study.curriculum = vec![CurriculumStage { steps: 2, n_nodes: None, max_depth: None, max_fan_in: Some(1), min_fan_in: None, leaf_values: None, until_due_acc: None, max_steps: None }];
    let schedule = study.schedule();
    assert_eq!(schedule.stages.len(), 1);
    let st = &schedule.stages[0];
    assert_eq!((schedule.stage_at(2), st.data.max_fan_in, st.data.min_fan_in), (None, 1, 1));
    let v = study.variants[0].clone();
    let mut task = task_for(&study, &v).expect("task");
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (_, m) = task.train_loss(0, &mut rng)?;
    assert!(!m.contains_key("due_acc_parents2") && !m.contains_key("due_acc_parents3"), "{m:?}");
    let mut seen_multi = false;
    for step in 2..6 {
        let (_, m) = task.train_loss(step, &mut rng)?;
        seen_multi |= m.contains_key("due_acc_parents2") || m.contains_key("due_acc_parents3");
    }
    assert!(seen_multi, "after the stage, multi-parent nodes appear");
    Ok(())
}

#[test]
fn a_measured_curriculum_stage_ends_when_its_due_node_accuracies_are_met() {
    use latentlab::config::Validate;
    let stage = |steps, fan_in, until, max| CurriculumStage { steps, n_nodes: None, max_depth: None, max_fan_in: fan_in, min_fan_in: None, leaf_values: Some(4), until_due_acc: until, max_steps: max };
    let mut study = tiny_study();
    study.curriculum = vec![stage(3, Some(1), None, None), stage(2, None, Some(0.9), Some(10))];
    study.validate().expect("valid curriculum");
    let mut s = study.schedule();
    assert_eq!(s.stage_at(0), Some((0, 0)));
    assert_eq!(s.stage_at(3), Some((1, 3)));
    assert_eq!(s.stage_at(12), Some((1, 3)), "a measured stage lasts until it is met ...");
    assert_eq!(s.stage_at(13), None, "... or until max_steps");
    let good = [Some(1.0), Some(0.95), Some(0.92), Some(0.91)];
    assert_eq!(s.observe(4, &good), None, "not before its `steps`");
    assert_eq!(s.observe(5, &[Some(1.0), Some(0.95), Some(0.95), None]), None, "3-parent sums not measured");
    assert_eq!(s.observe(5, &[Some(1.0), Some(0.95), Some(0.95), Some(0.89)]), None, "3-parent sums below the bar");
    assert_eq!(s.observe(6, &good), Some(1));
    assert_eq!((s.stage_at(5), s.stage_at(6)), (Some((1, 3)), None));
    assert_eq!(s.data_at(6, &study.data).leaf_values, study.data.leaf_values, "plain data after the curriculum");
    assert_eq!(s.data_at(5, &study.data).leaf_values, Some(4));
    assert_eq!(s.observe(8, &good), None, "ends once");
    // Resumable: the ends round-trip; a config with other stages is refused.
    let mut fresh = study.schedule();
    fresh.set_ends(&s.ends()).expect("same stages");
    assert_eq!(fresh, s);
    assert!(fresh.set_ends(&[None]).is_err());
    // A copy-only measured stage asks for copies only; fixed() drops the measurement.
    let mut copy = tiny_study();
    copy.curriculum = vec![stage(2, Some(1), Some(0.9), None)];
    let mut c = copy.schedule();
    assert_eq!(c.stage_at(1_000_000), Some((0, 0)), "no max_steps: until met");
    assert_eq!(c.clone().fixed().stage_at(2), None);
    assert_eq!(c.observe(2, &[None, Some(0.9), None, None]), Some(0));
    // Bad keys are named.
    copy.curriculum = vec![stage(2, None, None, Some(5))];
    assert!(copy.validate().unwrap_err().to_string().contains("curriculum[0].max_steps"));
    copy.curriculum = vec![stage(6, None, Some(0.9), Some(5))];
    assert!(copy.validate().unwrap_err().to_string().contains("curriculum[0].max_steps"));
    copy.curriculum = vec![stage(6, None, Some(1.5), None)];
    assert!(copy.validate().unwrap_err().to_string().contains("curriculum[0].until_due_acc"));
}

#[test]
fn a_variant_can_train_its_own_step_count() {
    use latentlab::config::Validate;
    let mut study = tiny_study();
    study.train.steps = 6;
    study.train.warmup_steps = 1;
    study.train.eval_every = 3;
    study.interp.enabled = false;
    study.variants.retain(|v| v.name == "discrete-ec" || v.name == "feedforward");
    study.variants[1].steps = Some(3);
    let dir = tempfile::tempdir().unwrap();
    study.out_dir = dir.path().display().to_string();
    let o = latentlab::experiments::recursive::reproduce(&study, true, true).expect("reproduction");
    assert_eq!((o.variant("discrete-ec").unwrap().steps, o.variant("feedforward").unwrap().steps), (6, 3));
    study.variants[1].steps = Some(0);
    assert!(study.validate().unwrap_err().to_string().contains("variants[1].steps"));
}

#[test]
fn a_tiny_reproduction_writes_results_and_an_honest_claims_table() {
    let mut study = tiny_study();
    study.train.steps = 20;
    study.train.eval_every = 10;
    study.variants.retain(|v| v.name == "discrete-ec" || v.name == "feedforward");
    tiny_interp(&mut study);
    let dir = std::env::temp_dir().join(format!("latentlab-rec-{}", std::process::id()));
    study.out_dir = dir.display().to_string();
    let o = latentlab::experiments::recursive::reproduce(&study, true, true).expect("reproduction");
    assert_eq!(o.variants.len(), 2);
    let ec = o.variant("discrete-ec").expect("discrete-ec ran");
    for s in &ec.sizes {
        let r = s.recovery.expect("recovery measured for a discrete model");
        assert!((0.0..=1.0).contains(&r) && (0.0..=1.0).contains(&s.solved_fixed_point));
        assert_eq!(s.solved_by_step.len(), eval_steps(s.max_depth, study.eval.extra_steps));
        assert_eq!(s.node_acc_by_depth.len(), s.max_depth + 1, "one entry per node depth 0..=max");
        assert!(s.node_acc_by_depth.iter().all(|a| a.is_nan() || (0.0..=1.0).contains(a)));
    }
    assert!(o.variant("feedforward").unwrap().sizes.iter().all(|s| s.recovery.is_none() && s.solved_by_step.len() == 1));
    // Twenty steps solve nothing: the claims that need solved graphs fail; the mechanism
    // claims are measured on the interpretability model (controlled accuracy stays low).
    // A quick run lists the quick-scale claims first; they are not reached in 20 steps
    // either (they are not true of an untrained model).
    let ids: Vec<&str> = o.claims.iter().map(|c| c.id).collect();
    assert_eq!(ids, ["Q1", "Q2", "Q3", "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10"]);
    for c in &o.claims[..3] {
        assert!(!c.pass && !c.measured.starts_with("not measured"), "{} after 20 steps: {}", c.id, c.measured);
    }
    let full = &o.claims[3..];
    assert!(!full[0].pass, "R1 cannot pass after 20 steps: {}", full[0].measured);
    for c in &full[6..] {
        assert!(!c.measured.starts_with("not measured"), "{}: {}", c.id, c.measured);
    }
    assert!(!full[6].pass, "R7 cannot pass after 20 steps: {}", full[6].measured);
    let m = o.mechanism.as_ref().expect("mechanism analysis ran");
    assert_eq!(m.layers.len(), 2);
    assert_eq!(m.fourier.len(), 4);
    assert_eq!(m.fourier[0].1.pair_shares.len(), 3);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(o.dir.join("claims.json")).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 13);
    assert!(o.dir.join("discrete-ec/metrics.jsonl").exists());
    let html = std::fs::read_to_string(o.dir.join("report.html")).expect("report.html written");
    for part in ["Claims", "Fully solved against N", "accuracy against node depth", "accuracy against iterations", "RelVar", "DFT energy classes"] {
        assert!(html.contains(part), "report.html lacks `{part}`");
    }

    // The variant's checkpoint reopens as a recursive run and evaluates a problems file.
    use latentlab::experiments::recursive::checkpoint::RecursiveRun;
    let root = o.dir.join("discrete-ec/checkpoints");
    let ck = root.join(std::fs::read_to_string(root.join("latest")).unwrap().trim());
    let (run, model, _) = RecursiveRun::open(&ck).expect("opens").expect("a recursive checkpoint");
    assert_eq!(run.variant.name, "discrete-ec");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let problems: Vec<_> = (0..5).map(|_| sample_problem(&study.data, &mut rng)).collect();
    let file = dir.join("problems.jsonl");
    latentlab::data::compgraph::write_jsonl(&file, &problems).unwrap();
    let read = latentlab::data::compgraph::read_jsonl(&file, &study.data.vocab()).unwrap();
    let (summary, rows) = run.evaluate_problems(&model, &read).expect("evaluates");
    assert_eq!(rows.len(), 5);
    assert_eq!(summary.n_graphs, 5);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["problem"], i + 1);
        assert_eq!(r["n_nodes"], study.data.n_nodes);
        let steps = r["fixed_point_steps"].as_u64().expect("early-exit steps") as usize;
        assert!((1..=eval_steps(summary.max_depth, study.eval.extra_steps)).contains(&steps));
        if r["solved"].as_bool().unwrap() {
            assert!(r["wrong"].as_array().unwrap().is_empty());
        }
        if r["solved_fixed_point"].as_bool().unwrap() {
            assert!(r["wrong_fixed_point"].as_array().unwrap().is_empty());
        }
    }
    // The same through the command line: eval --problems and the mechanism analysis.
    let bin = env!("CARGO_BIN_EXE_latentlab");
    let out = std::process::Command::new(bin).args(["eval", ck.to_str().unwrap(), "--problems", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = std::fs::read_to_string(ck.join("problems-eval.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 5);
    // The validation-selected weights the claims used open as a checkpoint too.
    let best = o.dir.join("discrete-ec/best");
    let out = std::process::Command::new(bin).args(["eval", best.to_str().unwrap(), "--problems", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, _, bck) = RecursiveRun::open(&best).expect("opens").expect("a recursive checkpoint");
    assert_eq!(Some(bck.manifest.step), ec.selected.map(|s| s.step));
    // The OOD sweep with other sizes and more graphs; the first graphs are the smaller set's.
    let sweep = |graphs: &str, out: &str| -> Vec<serde_json::Value> {
        let o = std::process::Command::new(bin).args(["eval", best.to_str().unwrap(), "--sizes", "8,12", "--graphs", graphs, "--out", dir.join(out).to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_str(&std::fs::read_to_string(dir.join(out)).unwrap()).unwrap()
    };
    let (small, large) = (sweep("1", "e1.json"), sweep("3", "e3.json"));
    assert_eq!(large.iter().map(|r| (r["n_nodes"].as_u64().unwrap(), r["n_graphs"].as_u64().unwrap())).collect::<Vec<_>>(), [(8, 3), (12, 3)]);
    assert_eq!(small.len(), 2);
    // Weight edits on the recursive model, scored on the same sweep: the unedited row is
    // eval's, ρ = 1 is the identity edit; a layer the model lacks is a usage error.
    let t = dir.join("t.jsonl");
    let args = ["truncate", best.to_str().unwrap(), "--edit", "0:fc_in:1", "--edit", "1:fc_out:0.05", "--sizes", "8,12", "--graphs", "3", "--out", t.to_str().unwrap()];
    let o = std::process::Command::new(bin).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&t).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.iter().map(|r| r["edit"].as_str().unwrap()).collect::<Vec<_>>(), ["none", "0:fc_in:1", "1:fc_out:0.05"]);
    for (r, n) in large.iter().zip([8, 12]) {
        for (key, field) in [("solved", "solved"), ("fixed_point", "solved_fixed_point"), ("node_acc", "node_acc")] {
            let k = format!("n{n}_{key}");
            assert_eq!(rows[0][&k], r[field], "{k}: truncate's unedited row against eval");
            assert_eq!(rows[1][&k], rows[0][&k], "{k}: ρ = 1 changes nothing");
            assert!((0.0..=1.0).contains(&rows[2][&k].as_f64().unwrap()), "{k}");
        }
    }
    let o = std::process::Command::new(bin).args(["truncate", best.to_str().unwrap(), "--edit", "7:fc_in:0.5", "--sizes", "8"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(2) && err.contains("7:fc_in") && err.lines().count() == 1, "{err}");
    let o = std::process::Command::new(bin).args(["eval", best.to_str().unwrap(), "--sizes", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(2) && err.contains("--sizes: N = 1") && err.contains("n_leaves"), "{err}");
    let out = std::process::Command::new(bin).args(["analyze", ck.to_str().unwrap(), "--contexts", "1", "--family-size", "4"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ck.join("analysis/analysis.json")).unwrap()).unwrap();
    assert_eq!(a["layers"].as_array().unwrap().len(), 2);
    assert!(ck.join("analysis/analysis.html").exists());
    let out = std::process::Command::new(bin).args(["analyze", ck.to_str().unwrap(), "--hook", "loop.1.blocks.0.attn.hook_pattern"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ck.join("activations.safetensors").exists());
    // A bad problems file is one clear error naming the file and line.
    std::fs::write(dir.join("bad.jsonl"), "{\"problem\": \"3 = x_1 <EQ_SEP> x_9 = x_2\"}\n").unwrap();
    let out = std::process::Command::new(bin).args(["eval", ck.to_str().unwrap(), "--problems", dir.join("bad.jsonl").to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.jsonl:1") && err.contains("undefined"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_all_transitions_loss_stacks_every_step_of_every_graph() -> Result<()> {
    let (_, enc) = small_model()?;
    let refs: Vec<&Encoded> = enc.iter().collect();
    let vocab = CompGraphConfig { name_pool: 16, ..CompGraphConfig::default() }.vocab();
    let d = enc.iter().flat_map(|e| e.rhs_depth.iter().copied()).max().unwrap() as usize;
    let b = all_transitions_batch(&refs, &vocab, &mut ChaCha8Rng::seed_from_u64(0), None);
    assert_eq!(b.batch, enc.len() * (d + 1));
    assert_eq!(b.step, (0..enc.len()).flat_map(|_| 0..=d).collect::<Vec<_>>());
    // Row (graph 1, t = 2) is the teacher transition S_2 → S_3 of graph 1.
    let row = d + 1 + 2;
    let at = |v: &[u32], k: usize| v[(row * b.len + k) * 4..(row * b.len + k) * 4 + 4].to_vec();
    for k in 0..enc[1].len() {
        assert_eq!(at(&b.inputs, k), enc[1].state(2)[k].to_vec());
        assert_eq!(at(&b.targets, k), enc[1].state(3)[k].to_vec());
    }
    let mut study = tiny_study();
    study.all_transitions = true;
    let mut task = task_for(&study, &study.variants[0]).expect("task");
    let (loss, _) = task.train_loss(0, &mut ChaCha8Rng::seed_from_u64(5))?;
    assert!(loss.to_scalar::<f32>()?.is_finite());
    Ok(())
}

#[test]
fn the_documented_transition_recipe_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/recursive-transition.toml");
    let s: RecursiveStudy = latentlab::config::load_over(RecursiveStudy::quick(), Some(&path), &[]).expect("docs/recursive-transition.toml loads");
    assert_eq!((s.train.steps, s.train.weight_decay, s.data.n_nodes, s.train.shards), (30000, 0.01, 12, 1));
    assert_eq!((s.train.schedule, s.train.decay_steps), (latentlab::train::ScheduleKind::ConstantThenCosine, 6000));
    assert_eq!(s.variants.len(), 1);
    assert_eq!(s.curriculum[0].max_fan_in, Some(1));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/recursive-ladder.toml");
    let s: RecursiveStudy = latentlab::config::load_over(RecursiveStudy::default(), Some(&path), &[]).expect("docs/recursive-ladder.toml loads");
    assert_eq!((s.train.steps, s.train.decay_steps, s.data.n_nodes, s.data.max_depth), (30000, 6000, 12, 3));
    assert_eq!((s.variants.len(), s.eval.sizes.clone(), s.eval.select_best), (5, vec![12, 24, 48], true));
    assert!(s.interp.enabled && s.curriculum[0].max_fan_in == Some(1) && s.curriculum[1].leaf_values == Some(4));
    assert_eq!(s.curriculum, RecursiveStudy::default().curriculum, "the documented curriculum is the default one");
    let trigger = s.train.decay_trigger.as_ref().expect("the ladder decays on a validation trigger");
    assert_eq!((s.train.batch_size, trigger.metric.as_str(), trigger.at_least), (64, "val_solved", 0.5));
    assert_eq!(s.train, RecursiveStudy::default().train, "the documented ladder is the default recipe");
    assert_eq!(s.variants, RecursiveStudy::default().variants, "the documented ladder trains the default variants");
    assert_eq!(s.eval.n_graphs, RecursiveStudy::default().eval.n_graphs, "the documented ladder tests as many graphs as the default");
}

#[test]
fn resume_continues_a_study_run_bit_identically() {
    let mut study = tiny_study();
    study.variants.retain(|v| v.name == "discrete-ec");
    study.interp.enabled = false;
    study.train.eval_every = 4;
    // A measured stage that ends at an evaluation (step 8) before the interruption at step
    // 10: the resumed run must know it ended.
    study.curriculum = vec![CurriculumStage { steps: 4, n_nodes: None, max_depth: None, max_fan_in: Some(1), min_fan_in: None, leaf_values: None, until_due_acc: Some(1e-9), max_steps: Some(100) }];
    let base = std::env::temp_dir().join(format!("latentlab-rec-resume-{}", std::process::id()));
    let run = |name: &str, steps: u64, resume: bool| {
        let mut s = study.clone();
        s.name = name.into();
        s.out_dir = base.display().to_string();
        s.train.steps = steps;
        s.resume = resume;
        latentlab::experiments::recursive::reproduce(&s, true, true).expect("runs")
    };
    run("straight", 12, false);
    run("resumed", 10, false);
    let o = run("resumed", 12, true);
    assert_eq!(o.variant("discrete-ec").unwrap().stage_ends, vec![8], "results name the measured stage end");
    let weights = |name: &str| std::fs::read(base.join(name).join("discrete-ec/checkpoints/step_00000012/model.safetensors")).expect("step-12 checkpoint");
    assert!(weights("straight") == weights("resumed"), "a resumed run differs from an uninterrupted one");
    // The validation-selected weights too (their record survives the interruption).
    let best = |name: &str, f: &str| std::fs::read(base.join(name).join("discrete-ec/best").join(f)).expect("best weights");
    assert!(best("straight", "best.json") == best("resumed", "best.json"));
    assert!(best("straight", "model.safetensors") == best("resumed", "model.safetensors"));
    // The metrics log keeps the first run's records up to the checkpoint and continues.
    let log = std::fs::read_to_string(base.join("resumed/discrete-ec/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "steps in order without repeats: {steps:?}");
    assert_eq!(steps.last(), Some(&12));
    let stage_end = |name: &str| {
        let log = std::fs::read_to_string(base.join(name).join("discrete-ec/metrics.jsonl")).unwrap();
        log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["stage_end"].as_f64()).collect::<Vec<_>>()
    };
    assert_eq!(stage_end("straight"), vec![8.0], "the measured stage ends at the second evaluation");
    assert_eq!(stage_end("resumed"), vec![8.0]);
    // The step-12 record's due-node window (steps 8..12) spans the interruption.
    let last = |name: &str| std::fs::read_to_string(base.join(name).join("discrete-ec/metrics.jsonl")).unwrap().lines().last().unwrap().to_string();
    assert_eq!(last("straight"), last("resumed"));
    assert!(last("straight").contains("window_due_acc_parents0"));
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn the_best_validation_weights_are_kept_and_reloaded() -> Result<()> {
    use latentlab::experiments::recursive::task::{BestWeights, ValScore};
    let (model, _) = small_model()?;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("best");
    let mut best = BestWeights::open(&path, true).unwrap();
    let score = |step, val_solved, val_node_acc| ValScore { step, val_solved, val_node_acc };
    let name = model.params().all_tensors().keys().next().unwrap().clone();
    let original = model.params().all_tensors()[&name].flatten_all()?.to_vec1::<f32>()?;
    best.offer(score(10, 0.5, 0.9), model.params())?;
    // Worse scores are not kept; an equal score at a later step is.
    let bump = |v: f32| -> Result<()> { model.params().set(&name, &(model.params().all_tensors()[&name].clone() + v as f64)?).map_err(|e| candle_core::Error::Msg(e.to_string())) };
    bump(1.0)?;
    best.offer(score(20, 0.5, 0.8), model.params())?;
    best.offer(score(30, 0.25, 1.0), model.params())?;
    assert_eq!(best.score.unwrap().step, 10);
    best.offer(score(40, 0.5, 0.9), model.params())?;
    assert_eq!(best.score.unwrap().step, 40);
    bump(1.0)?;
    // Reopening (a resumed run) reads the record; loading restores the step-40 weights.
    let reopened = BestWeights::open(&path, false).unwrap();
    assert_eq!(reopened.score, Some(score(40, 0.5, 0.9)));
    assert_eq!(reopened.load_into(model.params())?.map(|s| s.step), Some(40));
    let loaded = model.params().all_tensors()[&name].flatten_all()?.to_vec1::<f32>()?;
    assert!(loaded.iter().zip(&original).all(|(a, b)| (a - (b + 1.0)).abs() < 1e-6));
    // A fresh run forgets it.
    assert!(BestWeights::open(&path, true).unwrap().score.is_none() && !path.exists());
    Ok(())
}

#[test]
fn variants_side_by_side_give_the_sequential_numbers() {
    let mut study = tiny_study();
    study.train.steps = 8;
    study.train.eval_every = 4;
    study.variants.retain(|v| v.name == "discrete-ec" || v.name == "continuous");
    tiny_interp(&mut study);
    study.interp.fourier = false;
    let base = std::env::temp_dir().join(format!("latentlab-rec-par-{}", std::process::id()));
    let run = |name: &str, parallel: bool| {
        let mut s = study.clone();
        s.name = name.into();
        s.out_dir = base.display().to_string();
        s.parallel_variants = parallel;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| latentlab::experiments::recursive::reproduce(&s, true, true).expect("runs"))
    };
    let (seq, par) = (run("sequential", false), run("parallel", true));
    let names = |o: &latentlab::experiments::recursive::RecursiveOutcome| o.variants.iter().map(|v| v.variant.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&seq), names(&par), "results come back in config order");
    for (a, b) in seq.variants.iter().zip(&par.variants) {
        assert_eq!(serde_json::to_string(&a.sizes).unwrap(), serde_json::to_string(&b.sizes).unwrap(), "{}", a.variant.name);
        assert_eq!(serde_json::to_string(&a.records).unwrap(), serde_json::to_string(&b.records).unwrap(), "{}", a.variant.name);
    }
    let measured = |o: &latentlab::experiments::recursive::RecursiveOutcome| o.claims.iter().map(|c| c.measured.clone()).collect::<Vec<_>>();
    assert_eq!(measured(&seq), measured(&par));
    assert!(par.mechanism.is_some());
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn init_seed_separates_the_initialisation_from_the_data_seed() {
    let study = tiny_study();
    let v = &study.variants[0];
    let weights = |s: &RecursiveStudy| {
        let task = task_for(s, v).expect("task");
        let t = task.model.params().all_tensors();
        t["blocks.0.attn.k_proj.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let seeded = |seed: u64, init: Option<u64>| RecursiveStudy { seed, init_seed: init, ..study.clone() };
    assert_eq!(weights(&seeded(3, None)), weights(&seeded(0, Some(3))), "init_seed alone sets the weights");
    assert_ne!(weights(&seeded(3, None)), weights(&seeded(3, Some(4))));
    assert_eq!(seeded(1, None).model_seed(), 1);
}

#[test]
fn a_fired_decay_trigger_ends_the_variant_early_and_is_reported() {
    let mut study = tiny_study();
    study.variants.retain(|v| v.name == "discrete-ec");
    study.interp.enabled = false;
    study.train.steps = 40;
    study.train.eval_every = 4;
    study.train.schedule = latentlab::train::ScheduleKind::ConstantThenCosine;
    study.train.decay_steps = 8;
    // Any validation score reaches 0: the trigger fires at the first evaluation (step 4).
    study.train.decay_trigger = Some(latentlab::train::DecayTrigger { metric: "val_solved".into(), at_least: 0.0 });
    let dir = std::env::temp_dir().join(format!("latentlab-rec-trigger-{}", std::process::id()));
    study.out_dir = dir.display().to_string();
    let o = latentlab::experiments::recursive::reproduce(&study, true, true).expect("runs");
    let v = o.variant("discrete-ec").unwrap();
    assert_eq!((v.decay_start, v.steps), (Some(4), 12));
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(o.dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["variants"][0]["decay_start"], 4);
    assert!(std::fs::read_to_string(o.dir.join("report.html")).unwrap().contains("decay triggered at step 4"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The lever configs committed under docs/levers/ still load over the default study.
#[test]
fn committed_lever_configs_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/levers");
    let mut n = 0;
    for dir in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
        let path = dir.join("config.toml");
        let s: latentlab::experiments::recursive::RecursiveStudy =
            latentlab::config::load(Some(&path), &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(s.curriculum.iter().any(|c| c.leaf_values == Some(4)), "{}: a small-sum stage", path.display());
        assert!(dir.join("finished.toml").is_file(), "{}", dir.display());
        n += 1;
    }
    assert!(n >= 4, "{n} lever runs");
}
