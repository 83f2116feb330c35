//! `latentlab eval`: one checkpoint, or a series of them (a run's `checkpoints/`
//! folder expands to every `step_*` inside, in step order).

use std::path::{Path, PathBuf};

use anyhow::Context;
use latentlab::experiments::checkpoint::CheckpointTask;
use latentlab::experiments::recursive::checkpoint::RecursiveRun;
use latentlab::models::Recurrent;
use latentlab::train::Checkpoint;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directories (each holds manifest.json and model.safetensors), or a
    /// run's `checkpoints/` folder for all of its checkpoints.
    #[arg(required = true)]
    checkpoints: Vec<PathBuf>,
    /// Also recompute the task's training-dynamics probes (truncation study: FFN noise
    /// margins, attention masses, accuracy with the last FFN dropped, ...).
    #[arg(long)]
    probes: bool,
    /// Output: JSON for one checkpoint (default `<checkpoint>/eval.json`), JSONL with one
    /// line per checkpoint for a series (default `eval.jsonl` beside the checkpoints).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Recursive-study checkpoints: evaluate these problems (JSONL, one
    /// `{"problem": "17 = x_5 <EQ_SEP> ..."}` per line) instead of the study's OOD sweep;
    /// writes one result line per problem (default `<checkpoint>/problems-eval.jsonl`).
    #[arg(long)]
    problems: Option<PathBuf>,
    /// Recursive-study checkpoints: the graph sizes N of the OOD sweep (default: the study's,
    /// e.g. 12,24,48).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Recursive-study checkpoints: test graphs per size (default: the study's `eval.n_graphs`;
    /// the first graphs of a larger set are the smaller set's).
    #[arg(long)]
    graphs: Option<usize>,
}

/// `path` itself when it is a checkpoint, else its `step_*` subfolders in order.
fn expand(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() || path.join("manifest.json").exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut steps: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step_")))
        .collect();
    steps.sort();
    anyhow::ensure!(
        !steps.is_empty(),
        super::UsageError(format!("{}: neither a checkpoint (no manifest.json) nor a folder of step_* checkpoints", path.display()))
    );
    Ok(steps)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut paths = Vec::new();
    let mut folder = false;
    for p in &args.checkpoints {
        let found = expand(p)?;
        folder |= found.first() != Some(p);
        paths.extend(found);
    }
    let series = folder || paths.len() > 1;
    let mut lines = String::new();
    let mut last_dir = PathBuf::new();
    for path in &paths {
        if let Some((run, model, ck)) = RecursiveRun::open(path)? {
            recursive(&args, &run, &model, &ck)?;
            continue;
        }
        anyhow::ensure!(
            args.problems.is_none(),
            super::UsageError(format!("{}: --problems needs a recursive-study checkpoint (runs/recursive/<variant>/checkpoints/...)", path.display()))
        );
        let (mut task, ck) = CheckpointTask::open(path)?;
        let (mut m, _) = task.evaluate(false)?;
        if args.probes {
            m.extend(task.probes()?);
        }
        if series {
            let summary: Vec<String> = m.iter().take(6).map(|(k, v)| format!("{k} {v:.4}")).collect();
            println!("step {:>7}  {}", ck.manifest.step, summary.join("  "));
            let mut obj = serde_json::Map::new();
            obj.insert("checkpoint".into(), ck.dir.display().to_string().into());
            obj.insert("step".into(), ck.manifest.step.into());
            for (k, v) in &m {
                obj.insert(k.clone(), (*v).into());
            }
            lines += &serde_json::Value::Object(obj).to_string();
            lines.push('\n');
        } else {
            for (k, v) in &m {
                println!("{k}\t{v:.6}");
            }
            let out = args.out.clone().unwrap_or_else(|| ck.dir.join("eval.json"));
            latentlab::util::fsx::write_atomic(&out, serde_json::to_string_pretty(&m)?.as_bytes())?;
        }
        last_dir = ck.dir.clone();
    }
    if series && !lines.is_empty() {
        let out = args.out.unwrap_or_else(|| last_dir.parent().unwrap_or(Path::new(".")).join("eval.jsonl"));
        latentlab::util::fsx::write_atomic(&out, lines.as_bytes())?;
        println!("wrote {} rows to {}", paths.len(), out.display());
    }
    Ok(())
}

/// A recursive-study checkpoint: the problems of `--problems`, or the study's OOD sweep.
fn recursive(args: &Args, run: &RecursiveRun, model: &Recurrent, ck: &Checkpoint) -> anyhow::Result<()> {
    let name = format!("{} (step {})", run.variant.name, ck.manifest.step);
    if let Some(file) = &args.problems {
        let problems = latentlab::data::compgraph::read_jsonl(file, &run.study.data.vocab())?;
        let (summary, rows) = run.evaluate_problems(model, &problems)?;
        let mut text = String::new();
        for r in &rows {
            text += &r.to_string();
            text.push('\n');
        }
        let out = args.out.clone().unwrap_or_else(|| ck.dir.join("problems-eval.jsonl"));
        latentlab::util::fsx::write_atomic(&out, text.as_bytes())?;
        let fixed = rows.iter().filter(|r| r["solved_fixed_point"].as_bool() == Some(true)).count();
        println!(
            "{name}: {} problems, fully solved {:.3} (T = max depth + {} = {}), node accuracy {:.3}{}",
            problems.len(),
            summary.solved,
            run.study.eval.extra_steps,
            summary.steps,
            summary.node_acc,
            if rows.first().is_some_and(|r| r.get("solved_fixed_point").is_some()) {
                format!(", until fixed point {:.3} ({:.1} steps on average)", fixed as f64 / rows.len().max(1) as f64, summary.mean_fixed_point_steps)
            } else {
                String::new()
            }
        );
        println!("wrote {}", out.display());
        return Ok(());
    }
    let mut run = run.clone();
    set_sweep(&mut run, &args.sizes, args.graphs)?;
    let sizes = run.sweep(model)?;
    for r in &sizes {
        println!(
            "{name}: N = {:>3} ({} graphs): solved {:.3}, until fixed point {:.3}, node accuracy {:.3}{}",
            r.n_nodes,
            r.n_graphs,
            r.solved,
            r.solved_fixed_point,
            r.node_acc,
            r.recovery.map_or(String::new(), |x| format!(", one-step repair {x:.3}"))
        );
    }
    let out = args.out.clone().unwrap_or_else(|| ck.dir.join("eval.json"));
    latentlab::util::fsx::write_atomic(&out, serde_json::to_string_pretty(&sizes)?.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Set a recursive run's OOD sweep from `--sizes` and `--graphs` (empty / None: the study's).
pub(super) fn set_sweep(run: &mut RecursiveRun, sizes: &[usize], graphs: Option<usize>) -> anyhow::Result<()> {
    let data = &run.study.data;
    if let Some(&n) = sizes.iter().find(|&&n| n < data.n_leaves || n > data.name_pool) {
        anyhow::bail!(super::UsageError(format!(
            "--sizes: N = {n} is outside this model's range: at least data.n_leaves = {} and at most data.name_pool = {} nodes",
            data.n_leaves, data.name_pool
        )));
    }
    anyhow::ensure!(graphs != Some(0), super::UsageError("--graphs must be ≥ 1".into()));
    if !sizes.is_empty() {
        run.study.eval.sizes = sizes.to_vec();
    }
    if let Some(g) = graphs {
        run.study.eval.n_graphs = g;
    }
    Ok(())
}
