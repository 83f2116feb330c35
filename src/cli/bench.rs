//! `latentlab bench`.

use std::path::PathBuf;

use latentlab::experiments::recursive::bench::bench_recursive_step;
use latentlab::train::bench::{bench, standard_configs};

/// The recursive study's training step (`experiments::recursive::bench`).
const RECURSIVE: &str = "recursive-step";
/// The same step with partial RoPE instead of the fused distance bias.
const RECURSIVE_ROPE: &str = "recursive-step-rope";
use latentlab::train::bench_forward::{bench_forward, forward_configs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config name (repeatable); default: all standard configs.
    #[arg(long = "config")]
    configs: Vec<String>,
    /// Timed steps (median reported).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// JSON output file.
    #[arg(long, default_value = "runs/bench/bench.json")]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let all = standard_configs();
    let fwd = forward_configs();
    let names: Vec<&str> = all.iter().map(|c| c.name).chain(fwd.iter().map(|c| c.name)).chain([RECURSIVE, RECURSIVE_ROPE]).collect();
    for c in &args.configs {
        if !names.contains(&c.as_str()) {
            anyhow::bail!(super::UsageError(format!("--config: unknown bench config `{c}`; expected one of: {}", names.join(", "))));
        }
    }
    anyhow::ensure!(args.steps > 0, super::UsageError("--steps must be > 0".into()));
    let mut results = Vec::new();
    let mut timed = Vec::new();
    for cfg in all.iter().filter(|c| args.configs.is_empty() || args.configs.iter().any(|n| n == c.name)) {
        timed.push(bench(cfg, args.warmup, args.steps)?);
    }
    if args.configs.is_empty() || args.configs.iter().any(|n| n == RECURSIVE) {
        timed.push(bench_recursive_step(args.warmup, args.steps, false)?);
    }
    if args.configs.iter().any(|n| n == RECURSIVE_ROPE) {
        timed.push(bench_recursive_step(args.warmup, args.steps, true)?);
    }
    for r in timed {
        println!("{} ({} params, {} threads): {:.1} ms/step, {:.0} tokens/s, {:.1} GFLOP/s ({:.2} GFLOP/step)",
            r.name, r.params, r.threads, r.ms_step, r.tokens_per_s, r.gflops, r.gflop_per_step);
        if r.shards > 1 {
            println!("  phases: forward+backward {:.1} ms ({} batch slices in parallel), clip {:.2} ms, optimizer {:.2} ms",
                r.ms_forward, r.shards, r.ms_clip, r.ms_optimizer);
        } else {
            println!("  phases: forward {:.1} ms, backward {:.1} ms, clip {:.2} ms, optimizer {:.2} ms",
                r.ms_forward, r.ms_backward, r.ms_clip, r.ms_optimizer);
        }
        println!("  matmul-only roofline (same GEMMs): {:.1} ms, {:.1} GFLOP/s; non-GEMM time {:.1} ms",
            r.ms_matmul_only, r.matmul_gflops, r.ms_step - r.ms_matmul_only);
        for (op, ms) in &r.ops {
            println!("  op fwd+bwd {op}: {ms:.2} ms");
        }
        results.push(serde_json::to_value(r)?);
    }
    for cfg in fwd.iter().filter(|c| args.configs.iter().any(|n| n == c.name)) {
        let r = bench_forward(cfg, args.warmup, args.steps)?;
        println!("{} ({} params, {} threads, batch {} × {}): {:.1} ms/forward, {:.0} tokens/s, {:.1} GFLOP/s",
            r.name, r.params, r.threads, r.batch, r.seq_len, r.ms_forward, r.tokens_per_s, r.gflops);
        println!("  linear layers alone: {:.1} ms, {:.1} GFLOP/s; load average {:?}", r.ms_linear_only, r.linear_gflops, r.load_avg);
        results.push(serde_json::to_value(r)?);
    }
    let json = serde_json::to_string_pretty(&results)?;
    latentlab::util::fsx::write_atomic(&args.out, json.as_bytes())?;
    println!("wrote {}", args.out.display());
    Ok(())
}
