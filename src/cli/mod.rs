//! Subcommands: each file goes args → config → one library call → outputs.

mod analyze;
mod bench;
mod data;
mod eval;
mod generate;
mod reproduce;
mod train;
mod truncate;
mod truncate_model;
mod logits;

use clap::{Parser, Subcommand};

/// latentlab: train small Transformers on reasoning tasks, edit their
/// weights, and look inside them.
#[derive(Debug, Parser)]
#[command(name = "latentlab", version, about, propagate_version = true)]
pub struct Cli {
    /// Worker threads for kernels and matmuls (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Train a model from a TOML config.
    ///
    /// Example: latentlab train --config run.toml --set train.lr=3e-4 --set name=lr3e-4
    Train(train::Args),
    /// Evaluate a checkpoint on its task's evaluation set.
    ///
    /// Example: latentlab eval runs/default/checkpoints/step_00001000
    Eval(eval::Args),
    /// Generate a dataset as JSONL.
    ///
    /// Example: latentlab data induction --n 256 --seq-len 64 --out data/induction.jsonl
    Data(data::Args),
    /// Capture activations of a checkpoint at named hook points.
    ///
    /// Example: latentlab analyze runs/default/checkpoints/step_00001000 --hook blocks.1.attn.hook_pattern
    Analyze(analyze::Args),
    /// Reproduce a published study end to end (or list the studies).
    ///
    /// Example: latentlab reproduce list
    Reproduce(reproduce::Args),
    /// Apply low-rank / zero / drop edits (layer:matrix:ρ) to a checkpoint and evaluate
    /// (a recursive-study checkpoint on its OOD sweep of graph sizes).
    ///
    /// Example: latentlab truncate runs/truncation/main/checkpoints/step_00001000 --sweep --layers 1 --matrices fc_in,fc_out
    Truncate(truncate::Args),
    /// Continue a prompt with a pretrained Hugging Face model (greedy or sampled, KV cache).
    ///
    /// Example: latentlab generate --model models/pythia-160m --prompt-ids 1,2,3 --max-new 8
    Generate(generate::Args),
    /// Write the logits (and optional hook activations) of a prompt to a .safetensors file.
    ///
    /// Example: latentlab logits --model models/pythia-160m --prompt-ids 1,2,3 --out logits.safetensors --hook blocks.0.hook_resid_post
    Logits(logits::Args),
    /// Time training steps of standard configs.
    ///
    /// Example: latentlab bench --config small-gpt-d128 --steps 20
    Bench(bench::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    latentlab::util::tune_allocator();
    if let Some(n) = cli.threads {
        anyhow::ensure!(n > 0, "--threads: expected a positive number, got 0");
        // Read by rayon's global pool and by candle's gemm at every call.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // The command runs on a worker of rayon's global pool: every kernel's parallel loop
    // then starts on a pool thread instead of handing each operation over from the main
    // thread (a futex wake and two context switches per op; ≈ 15 % of a single-threaded
    // recursive training step).
    rayon::scope(|_| dispatch(cli.cmd))
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Train(a) => train::run(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Data(a) => data::run(a),
        Cmd::Analyze(a) => analyze::run(a),
        Cmd::Reproduce(a) => reproduce::run(a),
        Cmd::Truncate(a) => truncate::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Generate(a) => generate::run(a),
        Cmd::Logits(a) => logits::run(a),
    }
}

/// 2 for bad input (config, files, names), 1 for failures while running.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use latentlab::experiments::checkpoint::CheckpointError;
    use latentlab::train::TrainError;
    let train_code = |t: &TrainError| match t {
        TrainError::Io { .. } | TrainError::Corrupt { .. } | TrainError::Mismatch { .. } => 2,
        _ => 1,
    };
    for cause in e.chain() {
        match cause.downcast_ref::<CheckpointError>() {
            Some(CheckpointError::Train(t)) => return train_code(t),
            Some(CheckpointError::Surgery(_)) => return 2,
            Some(_) => return 1,
            None => {}
        }
        if cause.is::<latentlab::surgery::SurgeryError>() {
            return 2;
        }
        match cause.downcast_ref::<latentlab::experiments::error::StudyError>() {
            Some(latentlab::experiments::error::StudyError::Train(t)) => return train_code(t),
            Some(
                latentlab::experiments::error::StudyError::Invalid(_)
                | latentlab::experiments::error::StudyError::Data(_)
                | latentlab::experiments::error::StudyError::Surgery(_),
            ) => return 2,
            _ => {}
        }
        if cause.is::<latentlab::config::ConfigError>()
            || cause.is::<latentlab::nn::params::ParamError>()
            || cause.is::<latentlab::interp::hooks::HookNameError>()
            || cause.is::<std::io::Error>()
            || cause.is::<UsageError>()
            || cause.is::<latentlab::models::HfError>()
        {
            return 2;
        }
        if let Some(l) = cause.downcast_ref::<latentlab::experiments::laser::LaserError>() {
            return if l.is_usage() { 2 } else { 1 };
        }
        if let Some(t) = cause.downcast_ref::<TrainError>() {
            return train_code(t);
        }
    }
    1
}

pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Bad command-line input that clap cannot see (e.g. an unknown study).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
