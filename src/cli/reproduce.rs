//! `latentlab reproduce <study>`.

use std::path::{Path, PathBuf};

use latentlab::config;
use latentlab::experiments::claims::Claim;
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
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run the study once per seed (comma-separated, e.g. `0,1,2`; each into
    /// `<name>-seed<N>/`), then print which claims pass at every seed and write
    /// `<out_dir>/<name>-seeds/claims.json` (claims tables only: not `laser`).
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    seeds: Vec<u64>,
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

/// What one study run leaves for the multi-seed summary.
struct Ran {
    claims: Vec<Claim>,
    /// The run's folder (`<out_dir>/<name>`).
    dir: PathBuf,
}

/// How a study run is named: `seed` is folded into the config; `multi` appends
/// `-seed<N>` to whatever name the config resolves to (so seeds never share a folder).
#[derive(Clone, Copy)]
struct Seeding {
    seed: Option<u64>,
    multi: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    type Study = fn(&Args, Seeding) -> anyhow::Result<Ran>;
    let study: Study = match args.study.as_str() {
        "list" => {
            for (name, what) in STUDIES {
                println!("{name:<12} {what}");
            }
            return Ok(());
        }
        "truncation" => truncation_study,
        "vae-rules" => vae_rules_study,
        "recursive" => recursive_study,
        "laser" => {
            anyhow::ensure!(args.seeds.is_empty(), super::UsageError("--seeds: `laser` has no claims table (use --seed)".into()));
            return laser_study(&args);
        }
        other => {
            let names: Vec<&str> = STUDIES.iter().map(|s| s.0).collect();
            return Err(super::UsageError(format!(
                "study `{other}` is not available; studies: {} (see `latentlab reproduce list`)",
                names.join(", ")
            ))
            .into());
        }
    };
    if args.seeds.is_empty() {
        return study(&args, Seeding { seed: args.seed, multi: false }).map(drop);
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(s) = args.seeds.iter().find(|s| !seen.insert(**s)) {
        return Err(super::UsageError(format!("--seeds: seed {s} is given twice")).into());
    }
    let mut runs = Vec::new();
    for &seed in &args.seeds {
        if !args.quiet {
            println!("== seed {seed} ==");
        }
        runs.push((seed, study(&args, Seeding { seed: Some(seed), multi: true })?));
    }
    seeds_summary(&args.study, &runs)
}

/// The claims of every seed side by side: printed as a matrix and written to
/// `<out_dir>/<name>-seeds/claims.json` beside the per-seed folders.
fn seeds_summary(study: &str, runs: &[(u64, Ran)]) -> anyhow::Result<()> {
    let mut ids: Vec<&Claim> = Vec::new();
    for (_, r) in runs {
        for c in &r.claims {
            if !ids.iter().any(|k| k.id == c.id) {
                ids.push(c);
            }
        }
    }
    let find = |r: &Ran, id: &str| r.claims.iter().find(|c| c.id == id).cloned();
    print!("{:<6}", "claim");
    for (seed, _) in runs {
        print!(" {:<8}", format!("seed {seed}"));
    }
    println!(" every seed");
    let mut rows = Vec::new();
    let mut every = 0;
    for k in &ids {
        let cells: Vec<Option<Claim>> = runs.iter().map(|(_, r)| find(r, k.id)).collect();
        let all = cells.iter().all(|c| c.as_ref().is_some_and(|c| c.pass));
        every += usize::from(all);
        print!("{:<6}", k.id);
        for c in &cells {
            print!(" {:<8}", c.as_ref().map_or("-", |c| if c.pass { "PASS" } else { "FAIL" }));
        }
        println!(" {}", if all { "PASS" } else { "FAIL" });
        let per_seed: Vec<serde_json::Value> = runs
            .iter()
            .zip(&cells)
            .map(|((seed, _), c)| match c {
                Some(c) => serde_json::json!({ "seed": seed, "pass": c.pass, "measured": c.measured }),
                None => serde_json::json!({ "seed": seed, "pass": null, "measured": null }),
            })
            .collect();
        rows.push(serde_json::json!({ "id": k.id, "claim": k.claim, "band": k.band, "every_seed": all, "per_seed": per_seed }));
    }
    let per_seed_passed: Vec<String> =
        runs.iter().map(|(_, r)| format!("{}/{}", r.claims.iter().filter(|c| c.pass).count(), r.claims.len())).collect();
    let first = &runs[0].1.dir;
    let name = first.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let base = name.rsplit_once("-seed").map_or(name.as_str(), |(b, _)| b);
    let dir = first.parent().unwrap_or(Path::new(".")).join(format!("{base}-seeds"));
    let path = dir.join("claims.json");
    let json = serde_json::json!({
        "study": study,
        "seeds": runs.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        "runs": runs.iter().map(|(_, r)| r.dir.display().to_string()).collect::<Vec<_>>(),
        "claims": rows,
        "passed_every_seed": every,
        "n_claims": ids.len(),
    });
    latentlab::util::fsx::write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    println!(
        "{every}/{} claims pass at every seed (per seed: {}); summary: {}",
        ids.len(),
        per_seed_passed.join(", "),
        path.display()
    );
    Ok(())
}

/// `--set` list with the seed folded in (and, for one seed, a per-seed run name unless
/// one is set; several seeds name their runs after loading, see `Seeding`).
fn sets_with_seed(args: &Args, seeding: Seeding, study: &str) -> Vec<String> {
    let mut sets = args.sets.clone();
    if let Some(seed) = seeding.seed {
        sets.push(format!("seed={seed}"));
        if !seeding.multi && !args.sets.iter().any(|s| s.starts_with("name=")) {
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

/// `name-seed<N>` when several seeds run.
fn seeded_name(name: &mut String, seeding: Seeding) {
    if let (true, Some(seed)) = (seeding.multi, seeding.seed) {
        *name = format!("{name}-seed{seed}");
    }
}

fn recursive_study(args: &Args, seeding: Seeding) -> anyhow::Result<Ran> {
    let sets = sets_with_seed(args, seeding, "recursive");
    let mut study: RecursiveStudy = if args.quick {
        config::load_over(RecursiveStudy::quick(), args.config.as_deref(), &sets)?
    } else {
        config::load(args.config.as_deref(), &sets)?
    };
    seeded_name(&mut study.name, seeding);
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
    Ok(Ran { claims: o.claims, dir: o.dir })
}

fn truncation_study(args: &Args, seeding: Seeding) -> anyhow::Result<Ran> {
    anyhow::ensure!(!args.resume, super::UsageError("--resume is available for `reproduce recursive` only".into()));
    let sets = sets_with_seed(args, seeding, "truncation");
    let mut study: TruncationStudy = if args.quick {
        config::load_over(TruncationStudy::quick(), args.config.as_deref(), &sets)?
    } else {
        config::load(args.config.as_deref(), &sets)?
    };
    seeded_name(&mut study.name, seeding);
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
    Ok(Ran { claims: outcome.claims, dir: outcome.dir })
}

fn vae_rules_study(args: &Args, seeding: Seeding) -> anyhow::Result<Ran> {
    anyhow::ensure!(!args.resume, super::UsageError("--resume is available for `reproduce recursive` only".into()));
    let sets = sets_with_seed(args, seeding, "vae-rules");
    let mut study: VaeRulesStudy = if args.quick {
        config::load_over(VaeRulesStudy::quick(), args.config.as_deref(), &sets)?
    } else {
        config::load(args.config.as_deref(), &sets)?
    };
    seeded_name(&mut study.name, seeding);
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
    Ok(Ran { claims: o.claims, dir: o.dir })
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
