//! Diagnostic for a recursive-study checkpoint: its one-step accuracy on fresh training
//! batches (`Task::train_loss`), its teacher-forced errors at every step t by kind (a value
//! written too early, left empty, wrong at a due node, or a finished value changed), and the
//! step at which free iteration first leaves the teacher trajectory. It showed that the c13
//! run's last weights sat in a loss spike (docs/recursive-calibration.md).
//!
//!   cargo run --release --example recursive_trajectory -- CHECKPOINT [N] [DEPTH_CAP]
use latentlab::data::compgraph::{CompGraphConfig, VALUE_FACTOR};
use latentlab::experiments::recursive::checkpoint::RecursiveRun;
use latentlab::experiments::recursive::task::{final_batch, graph_set, run_states, transition_batch_at};
use rand::SeedableRng;

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap();
    let n: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(12);
    let cap: usize = std::env::args().nth(3).map(|s| s.parse().unwrap()).unwrap_or(3);
    let (run, model, ck) = RecursiveRun::open(std::path::Path::new(&path))?.unwrap();
    {
        use latentlab::train::Task;
        let mut task = latentlab::experiments::recursive::run::task_for(&run.study, &run.variant)?;
        ck.load_params(task.model.params())?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..4 {
            let (loss, m) = task.train_loss(30_000, &mut rng)?;
            println!("train_loss path: loss {:.4} {:?}", loss.to_scalar::<f32>()?, m);
        }
    }
    let cfg = CompGraphConfig { n_nodes: n, max_depth: cap, ..run.study.data.clone() };
    let vocab = cfg.vocab();
    let set = graph_set(&cfg, 256, 4242);
    let refs: Vec<_> = set.iter().collect();
    let dev = model.params().device().clone();
    let max_d = set.iter().flat_map(|e| e.rhs_depth.iter().copied()).max().unwrap() as usize;
    // teacher-forced one step at every t: errors per factor, RHS value errors by kind
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    println!("teacher-forced one step (all positions):");
    for t in 0..=max_d {
        let steps = vec![t; set.len()];
        let b = transition_batch_at(&refs, &steps, &vocab, &mut rng, None);
        let st = run_states(&model, &run.variant, run.study.e2e_loops, &b.input_tensor(&dev)?, 1)?;
        let s = &st[0];
        let (mut fac_err, mut premature, mut late, mut wrong_due, mut changed_done, mut graphs_bad) = ([0usize; 4], 0, 0, 0, 0, 0);
        for (i, e) in set.iter().enumerate() {
            let mut bad = false;
            for k in 0..e.len() {
                let r = (i * b.len + k) * 4;
                let tgt = &b.targets[r..r + 4];
                for f in 0..4 {
                    if s[r + f] != tgt[f] { fac_err[f] += 1; bad = true; }
                }
                let d = e.rhs_depth[k];
                if d >= 0 && s[r + VALUE_FACTOR] != tgt[VALUE_FACTOR] {
                    let empty = vocab.value_empty();
                    if tgt[VALUE_FACTOR] == empty { premature += 1 } else if s[r + VALUE_FACTOR] == empty { late += 1 } else if d as usize == t { wrong_due += 1 } else { changed_done += 1 }
                }
            }
            graphs_bad += usize::from(bad);
        }
        println!("  t={t}: graphs with any error {graphs_bad}/{}; factor errors {:?}; RHS premature {premature} late {late} wrong-due {wrong_due} changed-done {changed_done}", set.len(), fac_err);
    }
    // free running: first deviation from the teacher trajectory
    let b = final_batch(&refs, &vocab);
    let steps = max_d + 3;
    let st = run_states(&model, &run.variant, run.study.e2e_loops, &b.input_tensor(&dev)?, steps)?;
    let mut first_dev = vec![0usize; steps + 1];
    let mut never = 0;
    for (i, e) in set.iter().enumerate() {
        let mut found = false;
        for t in 0..steps {
            let teacher = e.state(t + 1);
            let dev_here = (0..e.len()).any(|k| st[t][(i * b.len + k) * 4..(i * b.len + k) * 4 + 4] != teacher[k]);
            if dev_here { first_dev[t] += 1; found = true; break; }
        }
        if !found { never += 1 }
    }
    println!("free running: first deviation from teacher after step (1-based) {:?}; never {never}", first_dev);
    Ok(())
}
