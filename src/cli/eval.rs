//! `latentlab eval`.

use std::path::PathBuf;

use latentlab::experiments::checkpoint::CheckpointTask;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory (holds manifest.json and model.safetensors).
    checkpoint: PathBuf,
    /// Write the metrics as JSON here (default `<checkpoint>/eval.json`).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (mut task, ck) = CheckpointTask::open(&args.checkpoint)?;
    let (m, _) = task.evaluate(false)?;
    for (k, v) in &m {
        println!("{k}\t{v:.6}");
    }
    let out = args.out.unwrap_or_else(|| ck.dir.join("eval.json"));
    latentlab::util::fsx::write_atomic(&out, serde_json::to_string_pretty(&m)?.as_bytes())?;
    Ok(())
}
