//! `latentlab analyze`: capture activations at hook points into safetensors.

use std::collections::HashMap;
use std::path::PathBuf;

use latentlab::interp::{HookPoint, Hooks};
use latentlab::experiments::checkpoint::CheckpointTask;
use latentlab::models::LanguageModel;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory.
    checkpoint: PathBuf,
    /// Hook points to capture (TransformerLens names; repeatable).
    #[arg(long = "hook", required = true)]
    hooks: Vec<String>,
    /// Output safetensors file (default: <checkpoint>/activations.safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let points: Vec<HookPoint> = args.hooks.iter().map(|h| h.parse()).collect::<Result<_, _>>()?;
    let (task, ck) = CheckpointTask::open(&args.checkpoint)?;
    let ids = task.example_ids()?;
    let mut hooks = Hooks::capture(points.clone());
    task.model().forward(&ids, &mut hooks)?;
    let mut out: HashMap<String, latentlab::Tensor> = HashMap::new();
    for p in &points {
        match hooks.cache.get(p) {
            Some(t) => {
                println!("{p}\t{:?}", t.dims());
                out.insert(p.to_string(), t.contiguous()?);
            }
            None => anyhow::bail!(super::UsageError(format!("hook point `{p}` does not exist in this model"))),
        }
    }
    let path = args.out.unwrap_or_else(|| ck.dir.join("activations.safetensors"));
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(&out, &tmp)?;
    std::fs::rename(&tmp, &path)?;
    println!("wrote {}", path.display());
    Ok(())
}
