//! `latentlab data`.

use std::path::PathBuf;

use anyhow::Context;
use rand::SeedableRng;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task: `induction`, `noisy-recall` (the truncation study's data, 65-char vocabulary),
    /// `compgraph` (the recursive study's computation graphs, the JSONL that `latentlab eval
    /// --problems` reads), or a rule family of the VAE study: `rules-math`,
    /// `rules-syllogism`, `rules-explanatory` (JSONL of rule, premise, conclusion).
    task: String,
    /// Number of sequences.
    #[arg(long, default_value_t = 256)]
    n: usize,
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    #[arg(long, default_value_t = 64)]
    vocab_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `noisy-recall`: probability α that a trigger is followed by the noise token.
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// `compgraph`: nodes per graph (default: the study's training N).
    #[arg(long)]
    nodes: Option<usize>,
    /// `compgraph`: depth cap, 0 = none (default: the study's).
    #[arg(long)]
    max_depth: Option<usize>,
    /// Output JSONL file (one sequence per line).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.n > 0 && args.seq_len > 0 && args.vocab_size > 0, super::UsageError("--n, --seq-len and --vocab-size must be > 0".into()));
    if let Some(name) = args.task.strip_prefix("rules-") {
        use latentlab::data::rules::{generate, write_jsonl, Family};
        let family = Family::from_name(name)
            .ok_or_else(|| super::UsageError(format!("unknown rule family `{name}`; expected rules-math, rules-syllogism or rules-explanatory")))?;
        let splits = generate(family, args.n, 0, 0, args.seed);
        write_jsonl(&args.out, &splits.train).with_context(|| format!("writing {}", args.out.display()))?;
        println!("wrote {} {} examples to {}", splits.train.len(), family.name(), args.out.display());
        return Ok(());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    if args.task == "compgraph" {
        use latentlab::data::compgraph::{sample_problem, write_jsonl};
        let mut cfg = latentlab::experiments::recursive::RecursiveStudy::default().data;
        cfg.n_nodes = args.nodes.unwrap_or(cfg.n_nodes);
        cfg.max_depth = args.max_depth.unwrap_or(cfg.max_depth);
        cfg.validate().map_err(|e| super::UsageError(format!("--nodes/--max-depth: {e}")))?;
        let problems: Vec<_> = (0..args.n).map(|_| sample_problem(&cfg, &mut rng)).collect();
        write_jsonl(&args.out, &problems).with_context(|| format!("writing {}", args.out.display()))?;
        println!("wrote {} graphs of {} nodes to {}", problems.len(), cfg.n_nodes, args.out.display());
        return Ok(());
    }
    let batch = match args.task.as_str() {
        "induction" => latentlab::data::induction::sample(args.n, args.seq_len, args.vocab_size, &mut rng),
        "noisy-recall" => {
            use latentlab::data::noisy_recall::{NoisyRecallConfig, NoisyRecallSampler};
            let cfg = NoisyRecallConfig { seq_len: args.seq_len, alpha: args.alpha, ..Default::default() };
            let sampler = NoisyRecallSampler::new(&cfg).map_err(|e| super::UsageError(e.to_string()))?;
            let b = sampler.sample(args.n, &mut rng);
            latentlab::data::noisy_recall::write_jsonl(&args.out, &b).with_context(|| format!("writing {}", args.out.display()))?;
            println!("wrote {} sequences to {}", b.batch, args.out.display());
            return Ok(());
        }
        other => {
            return Err(super::UsageError(format!(
                "unknown task `{other}`; expected one of: induction, noisy-recall, compgraph, rules-math, rules-syllogism, rules-explanatory"
            ))
            .into())
        }
    };
    let mut text = String::new();
    for r in 0..batch.batch {
        let s = r * batch.seq_len..(r + 1) * batch.seq_len;
        let obj = serde_json::json!({
            "inputs": &batch.inputs[s.clone()], "targets": &batch.targets[s.clone()], "weights": &batch.weights[s],
        });
        text += &obj.to_string();
        text.push('\n');
    }
    latentlab::util::fsx::write_atomic(&args.out, text.as_bytes()).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} sequences to {}", batch.batch, args.out.display());
    Ok(())
}
