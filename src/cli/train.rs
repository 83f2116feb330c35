//! `latentlab train`.

use std::path::PathBuf;

use anyhow::Context;
use latentlab::config::{self, to_toml};
use latentlab::models::Gpt;
use latentlab::train::lm_task::LmTask;
use latentlab::train::{run as train_run, MetricsSink, RunConfig, RunOptions};
use latentlab::util::fsx::write_atomic;
use latentlab::Device;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML config (defaults are used for missing keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.lr=3e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue from the run's latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Stop after N steps with a checkpoint (as if interrupted); `--resume` continues.
    #[arg(long, value_name = "N")]
    stop_after: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg: RunConfig = config::load(args.config.as_deref(), &args.sets)?;
    let dir = PathBuf::from(&cfg.out_dir).join(&cfg.name);
    if args.resume {
        cfg = resumed_config(&dir, cfg, &args)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = to_toml(&cfg);
    write_atomic(&dir.join("config.toml"), text.as_bytes()).with_context(|| format!("writing {}", dir.display()))?;

    let device = Device::Cpu;
    let model = Gpt::new(&cfg.model, cfg.seed, &device)?;
    let mut task = LmTask {
        model,
        sampler: cfg.task.sampler(cfg.model.vocab_size),
        batch_size: cfg.train.batch_size,
        eval: cfg.task.eval_set(cfg.model.vocab_size, cfg.train.batch_size, cfg.seed),
        shards: cfg.train.shards,
    };
    let keep = if args.resume { Some(latest_step(&dir)?) } else { None };
    if keep == Some(0) {
        eprintln!("note: {} holds no checkpoint: --resume starts from step 0", dir.join("checkpoints").display());
    }
    let mut sink = MetricsSink::open(&dir.join("metrics.jsonl"), keep)?;
    let opts = RunOptions { dir: Some(dir.clone()), seed: cfg.seed, resume: args.resume, config_text: text, quiet: args.quiet, stop_after: args.stop_after };
    let summary = train_run(&mut task, &cfg.train, &opts, &mut sink)?;
    write_plots(&dir, &sink)?;
    let mut line = format!("trained {} steps in {:.1}s: loss {:.4}", summary.steps, summary.seconds, summary.final_loss);
    for (k, v) in &summary.last_eval {
        line += &format!(", {k} {v:.4}");
    }
    println!("{line}");
    let json = serde_json::json!({
        "steps": summary.steps, "seconds": summary.seconds, "final_loss": summary.final_loss,
        "eval": summary.last_eval,
    });
    write_atomic(&dir.join("summary.json"), json.to_string().as_bytes())?;
    println!("outputs in {}", dir.display());
    Ok(())
}

/// Keys a resumed run may change: how far it trains.
const RESUME_MAY_CHANGE: &[&str] = &["train.steps"];

/// The config a resumed run continues with: the run's saved `config.toml`, with the
/// `--config` file and `--set`s given now merged over it, so `train --set name=x --resume`
/// needs none of the original flags. A resumed run whose config differs from the saved one
/// in anything but `train.steps` would not continue the same run: that is an error naming
/// the keys. Without a saved config (no earlier run), the flags' config.
fn resumed_config(dir: &std::path::Path, flags: RunConfig, args: &Args) -> anyhow::Result<RunConfig> {
    let saved_path = dir.join("config.toml");
    if !saved_path.exists() {
        return Ok(flags);
    }
    let saved: RunConfig = config::load(Some(&saved_path), &[])?;
    let now: RunConfig = config::load_over(saved.clone(), args.config.as_deref(), &args.sets)?;
    let changed: Vec<String> =
        config::changed_keys(&saved, &now).into_iter().filter(|k| !RESUME_MAY_CHANGE.contains(&k.as_str())).collect();
    if !changed.is_empty() {
        return Err(config::ConfigError::Key {
            origin: saved_path.display().to_string(),
            key: changed.join("`, `"),
            msg: "--resume continues the saved run, and the flags change this (only train.steps may change); \
                  drop those flags or train under another name"
                .into(),
        }
        .into());
    }
    Ok(now)
}

fn latest_step(dir: &std::path::Path) -> anyhow::Result<u64> {
    Ok(latentlab::train::Checkpoint::latest(&dir.join("checkpoints"))?.map(|c| c.manifest.step).unwrap_or(0))
}

/// `loss.svg` (training loss) and `eval.svg` (every eval metric) in the run folder.
fn write_plots(dir: &std::path::Path, sink: &MetricsSink) -> anyhow::Result<()> {
    use latentlab::report::{line_chart, ChartSpec, Series};
    let series = |name: &str| Series::new(name, sink.series(name).into_iter().map(|(s, v)| (s as f64, v)).collect());
    let mut eval_names: Vec<String> =
        sink.records.iter().flat_map(|(_, m)| m.keys().filter(|k| k.starts_with("eval_")).cloned()).collect();
    eval_names.sort();
    eval_names.dedup();
    let charts = [
        ("loss.svg", ChartSpec::new("Training loss", "step", "loss"), vec![series("loss")]),
        ("eval.svg", ChartSpec::new("Evaluation", "step", "value"), eval_names.iter().map(|n| series(n)).collect()),
    ];
    for (file, spec, s) in charts {
        if s.iter().any(|s| !s.points.is_empty()) {
            let svg = line_chart(&spec, &s)?;
            write_atomic(&dir.join(file), svg.as_bytes()).with_context(|| format!("writing {}", dir.join(file).display()))?;
        }
    }
    Ok(())
}
