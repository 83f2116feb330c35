//! `latentlab eval`.

use std::path::PathBuf;

use latentlab::config::Validate;
use latentlab::models::Gpt;
use latentlab::train::lm_task::LmTask;
use latentlab::train::{Checkpoint, RunConfig, Task};
use latentlab::Device;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory (holds manifest.json and model.safetensors).
    checkpoint: PathBuf,
    /// Write the metrics as JSON here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Rebuild the run config and model stored with a checkpoint.
pub fn load_checkpoint(path: &std::path::Path) -> anyhow::Result<(RunConfig, Gpt, Checkpoint)> {
    let ck = Checkpoint::open(path)?;
    let cfg: RunConfig = toml::from_str(&ck.manifest.config).map_err(|e| {
        latentlab::train::TrainError::Corrupt { path: ck.dir.join("manifest.json").display().to_string(), msg: format!("config: {e}") }
    })?;
    cfg.validate()?;
    let model = Gpt::new(&cfg.model, cfg.seed, &Device::Cpu)?;
    ck.load_params(latentlab::models::LanguageModel::params(&model))?;
    Ok((cfg, model, ck))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (cfg, model, ck) = load_checkpoint(&args.checkpoint)?;
    let mut task = LmTask {
        model,
        sampler: cfg.task.sampler(cfg.model.vocab_size),
        batch_size: cfg.train.batch_size,
        eval: cfg.task.eval_set(cfg.model.vocab_size, cfg.train.batch_size, cfg.seed),
    };
    let m = task.evaluate(ck.manifest.step)?;
    for (k, v) in &m {
        println!("{k}\t{v:.6}");
    }
    if let Some(out) = args.out {
        latentlab::util::fsx::write_atomic(&out, serde_json::to_string_pretty(&m)?.as_bytes())?;
    }
    Ok(())
}
