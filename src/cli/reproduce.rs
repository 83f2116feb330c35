//! `latentlab reproduce <study>`.

use std::path::PathBuf;

use latentlab::config;
use latentlab::experiments::laser::{self, LaserStudy};
use latentlab::experiments::recursive::{self, RecursiveStudy};
use latentlab::experiments::truncation::{self, TruncationStudy};
use latentlab::experiments::vae_rules::{self, VaeRulesStudy};

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
    /// `recursive`: continue each variant from the latest checkpoint in its run folder
    /// (e.g. with a larger `train.steps`); metrics logged after that step are replaced.
    #[arg(long)]
    resume: bool,
}

const STUDIES: &[(&str, &str)] = &[
    ("truncation", "noisy in-context recall; FFN vs attention; weight truncation (arXiv 2406.03068)"),
    ("laser", "LASER (layer, τ, ρ) grid on a local Pythia/Qwen2.5 folder: IOI and factual probes (arXiv 2312.13558)"),
    ("recursive", "recursive latent reasoning on computation graphs (arXiv 2510.14095): the method ladder, OOD sweep, mechanism analysis (several hours on 2 cores; resumable)"),
    ("vae-rules", "language-VAE reasoning rules (arXiv 2506.19418): supervision, latent injection, FFN vs attention, data size"),
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
        "vae-rules" => vae_rules_study(&args),
        "recursive" => recursive_study(&args),
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

/// `--set` list with `--seed` folded in (and a per-seed run name unless one is set).
fn sets_with_seed(args: &Args, study: &str) -> Vec<String> {
    let mut sets = args.sets.clone();
    if let Some(seed) = args.seed {
        sets.push(format!("seed={seed}"));
        if !args.sets.iter().any(|s| s.starts_with("name=")) {
            let base = if args.quick { format!("{study}-quick") } else { study.to_string() };
            sets.push(format!("name={base}-seed{seed}"));
        }
    }
    sets
}

fn print_claims<'a>(claims: impl Iterator<Item = (&'a str, bool, &'a str, &'a str)>) -> usize {
    println!("{:<5} {:<6} {:<60} measured", "claim", "result", "band");
    let mut passed = 0;
    for (id, pass, band, measured) in claims {
        passed += usize::from(pass);
        println!("{id:<5} {:<6} {band:<60} {measured}", if pass { "PASS" } else { "FAIL" });
    }
    passed
}

fn recursive_study(args: &Args) -> anyhow::Result<()> {
    let sets = sets_with_seed(args, "recursive");
    let mut study: RecursiveStudy = if args.quick {
        config::load_over(RecursiveStudy::quick(), args.config.as_deref(), &sets)?
    } else {
        config::load(args.config.as_deref(), &sets)?
    };
    study.resume = args.resume;
    let o = recursive::reproduce(&study, args.quick, args.quiet)?;
    let sizes: Vec<String> = study.eval.sizes.iter().map(|n| format!("N={n}")).collect();
    println!("{:<12} {:>8} {:>8}  fully solved (node acc) at {}", "variant", "params", "ms/step", sizes.join(", "));
    for v in &o.variants {
        let cells: Vec<String> = v.sizes.iter().map(|s| format!("{:.3} ({:.3})", s.solved, s.node_acc)).collect();
        println!("{:<12} {:>8} {:>8.1}  {}", v.variant.name, v.n_params, v.ms_per_step, cells.join("  "));
    }
    for n in &o.notes {
        println!("note: {n}");
    }
    let passed = print_claims(o.claims.iter().map(|c| (c.id, c.pass, c.band.as_str(), c.measured.as_str())));
    if o.quick {
        let quick: Vec<_> = o.claims.iter().filter(|c| c.id.starts_with('Q')).collect();
        let q = quick.iter().filter(|c| c.pass).count();
        println!(
            "quick-scale claims: {q}/{} pass; the full profile's R1–R10: {}/{} (they need the transitions, thousands of steps)",
            quick.len(),
            passed - q,
            o.claims.len() - quick.len()
        );
    }
    println!("{passed}/{} claims pass; {:.0} s; results: {}", o.claims.len(), o.seconds, o.dir.join("results.json").display());
    Ok(())
}

fn truncation_study(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(!args.resume, super::UsageError("--resume is available for `reproduce recursive` only".into()));
    let sets = sets_with_seed(args, "truncation");
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

fn vae_rules_study(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(!args.resume, super::UsageError("--resume is available for `reproduce recursive` only".into()));
    let sets = sets_with_seed(args, "vae-rules");
    let study: VaeRulesStudy = if args.quick {
        config::load_over(VaeRulesStudy::quick(), args.config.as_deref(), &sets)?
    } else {
        config::load(args.config.as_deref(), &sets)?
    };
    let o = vae_rules::reproduce(&study, args.quick, args.quiet)?;
    let f = |x: f64| if x.is_finite() { format!("{x:.3}") } else { "-".into() };
    println!("{:<34} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>5} {:>6}", "run", "EMpost", "EMcent", "swap", "sil", "NMI", "probe", "AU", "KL");
    for v in &o.variants {
        let e = &v.eval;
        println!(
            "{:<34} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>5} {:>6}",
            v.variant.name, f(e.em_post), f(e.em_centroid), f(e.swap_success), f(e.silhouette), f(e.kmeans_nmi), f(e.probe_acc), f(e.active_units), f(e.kl_total)
        );
    }
    let passed = print_claims(o.claims.iter().map(|c| (c.id, c.pass, c.band.as_str(), c.measured.as_str())));
    println!("{passed}/{} claims pass; {:.0} s; report: {}", o.claims.len(), o.seconds, o.dir.join("report.html").display());
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
