//! `latentlab truncate --model DIR`: (ℓ, τ, ρ) edits of a pretrained Hugging Face model,
//! scored on the built-in reasoning probes before and after each edit.

use std::path::PathBuf;

use latentlab::experiments::laser::{self, check_layout, parse_edits, LaserStudy, ProbeConfig};
use latentlab::models::{LanguageModel, Pretrained};
use latentlab::surgery::{sweep_grid, EditSet, Mode, SvdCache, Target, TemplateMap};
use latentlab::util::fsx::write_atomic;

use super::truncate::Args;
use super::UsageError;

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.model.clone().expect("called with --model");
    check_layout(&dir)?;
    let model = Pretrained::load(&dir, &latentlab::Device::Cpu)?;
    let mut sets = vec![EditSet::default()];
    for spec in &args.edits {
        sets.push(parse_edits(spec)?);
    }
    if args.sweep {
        let layers: Vec<usize> = if args.layers.is_empty() { (0..model.n_layers()).collect() } else { args.layers.clone() };
        let targets = args
            .matrices
            .iter()
            .map(|m| Target::from_name(m).ok_or_else(|| UsageError(format!("--matrices: unknown matrix `{m}`"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mode = match args.mode.as_str() {
            "top" => Mode::Top,
            "bottom" => Mode::Bottom,
            other => anyhow::bail!(UsageError(format!("--mode: expected `top` or `bottom`, got `{other}`"))),
        };
        sets.extend(sweep_grid(&layers, &targets, &args.rank_fracs, &[mode]));
    }
    anyhow::ensure!(sets.len() > 1, UsageError("give at least one --edit or --sweep".into()));
    let study = LaserStudy { probes: ProbeConfig { n_ioi: args.n_ioi, seed: args.probe_seed, ..ProbeConfig::default() }, ..LaserStudy::default() };
    let set = laser::run::builtin_set(&dir, &study, model.vocab_size())?;
    let mut cache = SvdCache::new();
    let results = laser::evaluate_edits(&model, &TemplateMap::for_arch(model.arch()), &set, &sets, &mut cache)?;
    let base = laser::aggregate(&results[0]);
    println!("{} probes ({} skipped: answer not one token), {} SVDs", set.probes.len(), set.skipped.len(), cache.computed());
    println!("{:<28} {:>8} {:>10} {:>10} {:>10} {:>10}", "edit", "acc", "P(correct)", "P(the)", "logit diff", "IO-S diff");
    let (mut table, mut examples) = (String::new(), String::new());
    for (edit, res) in sets.iter().zip(&results) {
        let m = laser::aggregate(res);
        let g = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        println!("{:<28} {:>8.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4}", edit.to_string(), g("acc"), g("p_correct"), g("p_generic"), g("logit_diff"), g("io_s_diff"));
        let mut row = serde_json::json!({ "edit": edit.to_string(), "n_skipped": set.skipped.len(), "svd_computed": cache.computed() });
        for (k, v) in &m {
            row[k] = (*v).into();
            if let Some(b) = base.get(k) {
                row[format!("delta_{k}")] = (v - b).into();
            }
        }
        table += &format!("{row}\n");
        for r in res {
            let mut v = serde_json::to_value(r)?;
            v["edit"] = edit.to_string().into();
            v["prompt"] = set.probes[r.index].prompt.clone().into();
            examples += &format!("{v}\n");
        }
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs/truncate").join(format!("{name}.jsonl")));
    write_atomic(&out, table.as_bytes())?;
    println!("wrote {}", out.display());
    if let Some(p) = &args.per_example {
        write_atomic(p, examples.as_bytes())?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
