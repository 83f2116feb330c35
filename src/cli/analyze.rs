//! `latentlab analyze`: capture activations at hook points into safetensors; for a
//! recursive-study checkpoint without `--hook`, the mechanism analysis of spec §8.2
//! (controlled families, RelVar, head cosines, OV amplification, MLP-1 contribution,
//! the Z_p³ DFT of MLP-2) with its figures.

use std::collections::HashMap;
use std::path::PathBuf;

use latentlab::interp::{HookPoint, Hooks};
use latentlab::experiments::checkpoint::CheckpointTask;
use latentlab::experiments::recursive::analysis::{analyze, format_routes, format_slot_heads, AnalysisConfig};
use latentlab::experiments::recursive::checkpoint::RecursiveRun;
use latentlab::experiments::recursive::report::mechanism_section;
use latentlab::experiments::recursive::task::{final_batch, graph_set};
use latentlab::models::{Halt, LanguageModel, Recurrent};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory.
    checkpoint: PathBuf,
    /// Hook points to capture (TransformerLens names, `loop.{t}.` prefixed for recurrent
    /// models; repeatable). Required except for recursive-study checkpoints.
    #[arg(long = "hook")]
    hooks: Vec<String>,
    /// Output: the safetensors file of `--hook` (default <checkpoint>/activations.safetensors),
    /// or the folder of the mechanism analysis (default <checkpoint>/analysis/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Mechanism analysis: context graphs per controlled family (default 4).
    #[arg(long, default_value_t = 4)]
    contexts: usize,
    /// Mechanism analysis: inputs per family and context (default 24).
    #[arg(long, default_value_t = 24)]
    family_size: usize,
    /// Mechanism analysis: skip the Z_p³ sweep of MLP-2.
    #[arg(long)]
    no_fourier: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let points: Vec<HookPoint> = args.hooks.iter().map(|h| h.parse()).collect::<Result<_, _>>()?;
    let mut hooks = Hooks::capture(points.clone());
    let dir = if let Some((run, model, ck)) = RecursiveRun::open(&args.checkpoint)? {
        if points.is_empty() {
            return mechanism(&args, &run, &model, &ck.dir);
        }
        // The study's validation graphs, iterated to their max depth + the eval's extra steps.
        let set = graph_set(&run.study.data, run.study.eval.n_val, 999_999);
        let refs: Vec<_> = set.iter().collect();
        let x = final_batch(&refs, &run.study.data.vocab()).input_tensor(model.params().device())?;
        let depth = set.iter().flat_map(|e| e.rhs_depth.iter().copied()).max().unwrap_or(0).max(0) as usize;
        model.iterate(&x, Halt::Fixed(depth + run.study.eval.extra_steps), &mut hooks)?;
        ck.dir
    } else {
        anyhow::ensure!(!points.is_empty(), super::UsageError("--hook is required (at least one hook point) for this checkpoint".into()));
        let (task, ck) = CheckpointTask::open(&args.checkpoint)?;
        let ids = task.example_ids()?;
        task.model().forward(&ids, &mut hooks)?;
        ck.dir
    };
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
    let path = args.out.unwrap_or_else(|| dir.join("activations.safetensors"));
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(&out, &tmp)?;
    std::fs::rename(&tmp, &path)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The mechanism analysis of a recursive-study checkpoint: `analysis.json`, `analysis.html`
/// and one SVG per figure.
fn mechanism(args: &Args, run: &RecursiveRun, model: &Recurrent, ck_dir: &std::path::Path) -> anyhow::Result<()> {
    let cfg = AnalysisConfig { contexts: args.contexts, family_size: args.family_size, fourier: !args.no_fourier, seed: run.study.seed };
    let m = analyze(model, &run.study.data, &cfg)?;
    let dir = args.out.clone().unwrap_or_else(|| ck_dir.join("analysis"));
    std::fs::create_dir_all(&dir)?;
    println!("controlled-input accuracy {:.3}; MLP-1 relative contribution {:.3}; slots with a layer-1 head {:?}", m.controlled_acc, m.mlp1_relative, m.slots_with_heads());
    for l in &m.layers {
        let (var, val) = l.median_amp();
        println!("layer {}: head families {:?}; median OV amplification VARIABLE {var:.3}, VALUE {val:.3}", l.layer, l.head_family);
        println!("layer {}: slot heads {}; routes (strongest head, mean over slots) {}", l.layer, format_slot_heads(l), format_routes(l));
        println!("layer {}: accuracy with one head zeroed {}", l.layer, l.ablated_acc.iter().map(|a| format!("{a:.2}")).collect::<Vec<_>>().join(" "));
    }
    for (site, f) in &m.fourier {
        println!("DFT {site}: constant {:.3}, diagonal {:.3}, other {:.3}, diagonal of non-constant {:.3}", f.constant, f.diagonal, f.other, f.diagonal_of_nonconstant);
    }
    latentlab::util::fsx::write_atomic(&dir.join("analysis.json"), serde_json::to_string_pretty(&m)?.as_bytes())?;
    let mut report = latentlab::report::Report::new(format!("Mechanism analysis: {} ({})", run.variant.name, ck_dir.display()));
    mechanism_section(&mut report, &m)?;
    report.write(&dir, "analysis")?;
    println!("wrote {}", dir.display());
    Ok(())
}
