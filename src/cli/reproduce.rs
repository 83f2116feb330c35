//! `latentlab reproduce <study>`.

use std::path::PathBuf;

use latentlab::config;
use latentlab::experiments::laser::{self, LaserStudy};
use latentlab::experiments::truncation::{self, TruncationStudy};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Study name, or `list`.
    study: String,
    /// A smaller, faster version (smoke runs and tests).
    #[arg(long)]
    quick: bool,
    /// TOML file overriding the study's defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.steps=2000` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Seed of model init and data (same as `--set seed=N`).
    #[arg(long)]
    seed: Option<u64>,
    /// `laser`: the Hugging Face model folder (same as `--set model=DIR`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

const STUDIES: &[(&str, &str)] = &[
    ("truncation", "noisy in-context recall; FFN vs attention; weight truncation (arXiv 2406.03068)"),
    ("laser", "LASER (layer, τ, ρ) grid on a local Pythia/Qwen2.5 folder: IOI and factual probes (arXiv 2312.13558)"),
    ("recursive", "recursive latent reasoning on computation graphs (arXiv 2510.14095) — not yet implemented"),
    ("vae-rules", "language-VAE reasoning rules (arXiv 2506.19418) — not yet implemented"),
];

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.study.as_str() {
        "list" => {
            for (name, what) in STUDIES {
                println!("{name:<12} {what}");
            }
            Ok(())
        }
        "truncation" => truncation_study(&args),
        "laser" => laser_study(&args),
        other => {
            let names: Vec<&str> = STUDIES.iter().map(|s| s.0).collect();
            Err(super::UsageError(format!(
                "study `{other}` is not available; studies: {} (see `latentlab reproduce list`)",
                names.join(", ")
            ))
            .into())
        }
    }
}

fn truncation_study(args: &Args) -> anyhow::Result<()> {
    let mut sets = args.sets.clone();
    if let Some(seed) = args.seed {
        sets.push(format!("seed={seed}"));
        if !args.sets.iter().any(|s| s.starts_with("name=")) {
            let base = if args.quick { "truncation-quick" } else { "truncation" };
            sets.push(format!("name={base}-seed{seed}"));
        }
    }
    let study: TruncationStudy = if args.quick {
        config::load_over(TruncationStudy::quick(), args.config.as_deref(), &sets)?
    } else {
        config::load(args.config.as_deref(), &sets)?
    };
    let outcome = truncation::reproduce(&study, args.quick, args.quiet)?;
    println!("{:<5} {:<6} {:<60} measured", "claim", "result", "band");
    for c in &outcome.claims {
        println!("{:<5} {:<6} {:<60} {}", c.id, if c.pass { "PASS" } else { "FAIL" }, c.band, c.measured);
    }
    let passed = outcome.claims.iter().filter(|c| c.pass).count();
    println!(
        "{passed}/{} claims pass; {:.0} s; report: {}",
        outcome.claims.len(),
        outcome.seconds,
        outcome.dir.join("report.html").display()
    );
    Ok(())
}

fn laser_study(args: &Args) -> anyhow::Result<()> {
    let mut sets = args.sets.clone();
    if let Some(dir) = &args.model {
        sets.push(format!("model={:?}", dir.display().to_string()));
    }
    if let Some(seed) = args.seed {
        sets.push(format!("probes.seed={seed}"));
    }
    let base = if args.quick { LaserStudy::quick() } else { LaserStudy::default() };
    let study: LaserStudy = config::load_over(base, args.config.as_deref(), &sets)?;
    let o = laser::reproduce(&study, args.quiet)?;
    let s = &o.summary;
    println!("{} probes ({} skipped), {} edits, {} SVDs", s["n_examples"], s["n_skipped"], s["n_edits"], s["svd_computed"]);
    println!("{:<10} {:<24} {:>8} {:>10} {:>10} {:>10}", "test", "edit", "acc", "P(correct)", "P(the)", "logit diff");
    for (name, row) in [("unedited", &o.sweep.rows[0]), ("chosen", &o.sweep.rows[o.sweep.best])] {
        let t = &row.test;
        println!("{name:<10} {:<24} {:>8.4} {:>10.4} {:>10.4} {:>10.4}", row.edit, t["acc"], t["p_correct"], t["p_generic"], t["logit_diff"]);
    }
    println!("wrote {} (sweep.jsonl, summary.json, report.html)", o.dir.display());
    Ok(())
}
