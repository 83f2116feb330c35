//! `latentlab truncate`: apply (ℓ, τ, ρ) edits to a checkpoint and evaluate.

use std::path::PathBuf;

use latentlab::experiments::checkpoint::CheckpointTask;
use latentlab::experiments::recursive::checkpoint::RecursiveRun;
use latentlab::surgery::{sweep_grid, EditSet, Mode, Target};
use latentlab::train::{Checkpoint, Metrics};
use latentlab::util::fsx::write_atomic;
use serde_json::Value;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["checkpoint", "model"])))]
pub struct Args {
    /// Checkpoint directory (or give --model).
    pub(super) checkpoint: Option<PathBuf>,
    /// A Hugging Face model folder instead of a checkpoint: edits are scored on the built-in
    /// reasoning probes (IOI, factual recall). `--edit l=5,tau=fc_in,rho=0.01` is accepted too.
    #[arg(long)]
    pub(super) model: Option<PathBuf>,
    /// With --model: IOI prompts in the probe set.
    #[arg(long, default_value_t = 60)]
    pub(super) n_ioi: usize,
    /// With --model: seed of the probe sampling.
    #[arg(long, default_value_t = 0)]
    pub(super) probe_seed: u64,
    /// An edit set in LASER notation, e.g. `1:fc_in:0.05` or `1:fc_in:0.1,0:attn:drop` (repeatable).
    #[arg(long = "edit")]
    pub(super) edits: Vec<String>,
    /// Evaluate the grid layers × matrices × rank fractions (plus the unedited model).
    #[arg(long)]
    pub(super) sweep: bool,
    /// Sweep layers (default: all).
    #[arg(long, value_delimiter = ',')]
    pub(super) layers: Vec<usize>,
    /// Sweep matrices.
    #[arg(long, value_delimiter = ',', default_value = "fc_in,fc_out")]
    pub(super) matrices: Vec<String>,
    /// Sweep kept-rank fractions ρ.
    #[arg(long, value_delimiter = ',', default_value = "0,0.05,0.1,0.2,0.5")]
    pub(super) rank_fracs: Vec<f64>,
    /// `top` keeps the ⌊ρ·r⌋ largest singular values (LASER); `bottom` removes them.
    #[arg(long, default_value = "top")]
    pub(super) mode: String,
    /// Output table (JSONL, one row per edit set); default `<checkpoint>/truncate.jsonl`.
    #[arg(long)]
    pub(super) out: Option<PathBuf>,
    /// Also write per-example results (JSONL) here.
    #[arg(long)]
    pub(super) per_example: Option<PathBuf>,
    /// Recursive-study checkpoints: the graph sizes N each edit is evaluated on (default:
    /// the study's, e.g. 12,24,48).
    #[arg(long, value_delimiter = ',')]
    pub(super) sizes: Vec<usize>,
    /// Recursive-study checkpoints: test graphs per size (default: the study's `eval.n_graphs`).
    #[arg(long)]
    pub(super) graphs: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let recursive = match &args.checkpoint {
        Some(path) => RecursiveRun::open(path)?,
        None => None,
    };
    if let Some((mut run, model, ck)) = recursive {
        anyhow::ensure!(
            args.per_example.is_none(),
            super::UsageError("--per-example: not available for a recursive-study checkpoint (`latentlab eval CHECKPOINT --problems FILE` gives one line per problem)".into())
        );
        super::eval::set_sweep(&mut run, &args.sizes, args.graphs)?;
        let sets = edit_sets(&args, model.cfg.n_layers)?;
        let results = run.truncate(&model, &sets)?;
        return write_table(&args, &ck, results.into_iter().map(|(e, m)| (e, m, Vec::new())).collect());
    }
    anyhow::ensure!(
        args.sizes.is_empty() && args.graphs.is_none(),
        super::UsageError("--sizes and --graphs need a recursive-study checkpoint (runs/recursive/<variant>/...)".into())
    );
    let Some(checkpoint) = args.checkpoint.clone() else {
        return super::truncate_model::run(args);
    };
    let (mut task, ck) = CheckpointTask::open(&checkpoint)?;
    let sets = edit_sets(&args, task.model().cfg.n_layers)?;
    let results = task.truncate(&sets, args.per_example.is_some())?;
    write_table(&args, &ck, results)
}

/// The unedited model, each `--edit`, then the `--sweep` grid.
fn edit_sets(args: &Args, n_layers: usize) -> anyhow::Result<Vec<EditSet>> {
    let mut sets = vec![EditSet::new(vec![])];
    for spec in &args.edits {
        sets.push(latentlab::experiments::laser::parse_edits(spec)?);
    }
    if args.sweep {
        let layers: Vec<usize> = if args.layers.is_empty() { (0..n_layers).collect() } else { args.layers.clone() };
        let targets = args
            .matrices
            .iter()
            .map(|m| Target::from_name(m).ok_or_else(|| super::UsageError(format!("--matrices: unknown matrix `{m}`"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mode = match args.mode.as_str() {
            "top" => Mode::Top,
            "bottom" => Mode::Bottom,
            other => anyhow::bail!(super::UsageError(format!("--mode: expected `top` or `bottom`, got `{other}`"))),
        };
        for r in &args.rank_fracs {
            anyhow::ensure!((0.0..=1.0).contains(r), super::UsageError(format!("--rank-fracs: {r} is outside [0, 1]")));
        }
        sets.extend(sweep_grid(&layers, &targets, &args.rank_fracs, &[mode]));
    }
    if sets.len() == 1 {
        anyhow::bail!(super::UsageError("give at least one --edit or --sweep".into()));
    }
    Ok(sets)
}

/// Print the table and write it (JSONL, one row per edit set), with the per-example rows.
fn write_table(args: &Args, ck: &Checkpoint, results: Vec<(String, Metrics, Vec<Value>)>) -> anyhow::Result<()> {
    let mut table = String::new();
    let mut examples = String::new();
    let keys: Vec<String> = results[0].1.keys().cloned().collect();
    println!("{:<28} {}", "edit", keys.join("  "));
    for (edit, metrics, rows) in &results {
        let cells: Vec<String> = keys.iter().map(|k| format!("{:>w$.4}", metrics[k], w = k.len())).collect();
        println!("{edit:<28} {}", cells.join("  "));
        let mut obj = serde_json::Map::new();
        obj.insert("edit".into(), edit.clone().into());
        for (k, v) in metrics {
            obj.insert(k.clone(), (*v).into());
        }
        table += &Value::Object(obj).to_string();
        table.push('\n');
        for r in rows {
            let mut r = r.clone();
            r["edit"] = edit.clone().into();
            examples += &r.to_string();
            examples.push('\n');
        }
    }
    let out = args.out.clone().unwrap_or_else(|| ck.dir.join("truncate.jsonl"));
    write_atomic(&out, table.as_bytes())?;
    println!("wrote {}", out.display());
    if let Some(p) = &args.per_example {
        write_atomic(p, examples.as_bytes())?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
