//! The study end to end: train each variant with the shared loop, probe the
//! dynamics, sweep truncations, diagnose the spectrum, run the toys, check
//! the claims and write the report. Every number goes to JSON/JSONL files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use super::claims::{check_claims, Claim};
use super::config::{TruncationStudy, Variant};
use super::sweep::{example_pattern, run_sweep, spectral, Spectral, SweepRow};
use super::task::{forced_queries, noise_attribution, ForcedQueries, NoisyRecallTask};
use crate::interp::lens::MeanAttribution;
use crate::config::to_toml;
use crate::data::assoc_memory::{
    analyse_assoc_memory, linear_assoc_memory, one_step_gradient_check, AssocMemoryConfig, AssocMemoryReport, GradCheckConfig,
    GradCheckReport,
};
use crate::data::char_stats::VOCAB_SIZE;
use crate::data::noisy_recall::{clean_eval_set, noisy_eval_set, NoisyRecallConfig, NoisyRecallSampler};
use crate::models::{Gpt, GptConfig};
use crate::surgery::SvdCache;
use crate::train::{run as train_run, Metrics, MetricsSink, RunOptions};
use crate::util::fsx::write_atomic;

pub use crate::experiments::error::StudyError;
use crate::experiments::error::io;
use crate::experiments::pool::run_jobs;

/// Everything measured for one variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub variant: Variant,
    pub seconds: f64,
    /// Probe records `(step, metrics)` in step order.
    pub dynamics: Vec<(u64, Metrics)>,
    pub sweep: Vec<SweepRow>,
    pub spectral: Option<Spectral>,
    /// Mean layer-1 and layer-2 attention patterns of the first clean sequence.
    pub patterns: Vec<Vec<Vec<f64>>>,
    /// Noisy-data queries with only τ slots to copy from, and what their τ-slot
    /// attention is worth (after training).
    pub forced: ForcedQueries,
    /// Direct logit attribution of logit[τ] − logit[ȳ] at clean scored positions (first
    /// 64 clean sequences), after training.
    pub attribution: MeanAttribution,
}

impl VariantResult {
    /// The sweep row of `edit` (`none` = unedited).
    pub fn row(&self, edit: &str) -> Option<&SweepRow> {
        self.sweep.iter().find(|r| r.edit == edit)
    }
    /// The first probe value of `metric` at a step ≥ `step`.
    pub fn at(&self, metric: &str, step: u64) -> Option<f64> {
        self.dynamics.iter().find(|(s, m)| *s >= step && m.contains_key(metric)).and_then(|(_, m)| m.get(metric).copied())
    }
    /// The first step at which `metric` ≥ `value`.
    pub fn first_step_reaching(&self, metric: &str, value: f64) -> Option<u64> {
        self.dynamics.iter().find(|(_, m)| m.get(metric).is_some_and(|v| *v >= value)).map(|(s, _)| *s)
    }
}

/// The toys of spec §8.3.
#[derive(Debug, Clone, Serialize)]
pub struct Toys {
    pub grad_check: GradCheckSummary,
    pub assoc_memory: AssocSummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct GradCheckSummary {
    pub mean_ffn_margin: f64,
    pub mean_value_margin: f64,
    pub ratio: f64,
    pub cv_ffn: f64,
    pub cv_value: f64,
    pub ffn_grad_rel_err: f64,
}

impl From<&GradCheckReport> for GradCheckSummary {
    fn from(r: &GradCheckReport) -> Self {
        Self {
            mean_ffn_margin: r.mean_ffn_margin,
            mean_value_margin: r.mean_value_margin,
            ratio: r.ratio,
            cv_ffn: r.cv_ffn,
            cv_value: r.cv_value,
            ffn_grad_rel_err: r.ffn_grad_rel_err,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AssocSummary {
    pub singular_values: Vec<f64>,
    pub top_left_cos_u_tau: f64,
    pub max_other_left_cos_u_tau: f64,
    pub top_right_cos_sum_e: f64,
    pub full_p_noise: f64,
    pub full_acc_excl_noise: f64,
    pub top_removed_p_noise: f64,
    pub top_removed_acc: f64,
    pub keep_top1_p_noise: f64,
}

impl From<&AssocMemoryReport> for AssocSummary {
    fn from(r: &AssocMemoryReport) -> Self {
        let keep1 = r.top_k_kept.iter().find(|(k, _)| *k == 1).map(|(_, s)| s.p_noise).unwrap_or(f64::NAN);
        Self {
            singular_values: r.singular_values.clone(),
            top_left_cos_u_tau: r.top_left_cos_u_tau,
            max_other_left_cos_u_tau: r.max_other_left_cos_u_tau,
            top_right_cos_sum_e: r.top_right_cos_sum_e,
            full_p_noise: r.full.p_noise,
            full_acc_excl_noise: r.full.acc_excl_noise,
            top_removed_p_noise: r.top_removed.p_noise,
            top_removed_acc: r.top_removed.acc,
            keep_top1_p_noise: keep1,
        }
    }
}

/// The whole study's results.
#[derive(Debug, Clone, Serialize)]
pub struct StudyOutcome {
    pub dir: PathBuf,
    pub quick: bool,
    pub seconds: f64,
    pub variants: Vec<VariantResult>,
    pub toys: Toys,
    pub claims: Vec<Claim>,
}

impl StudyOutcome {
    pub fn variant(&self, name: &str) -> Option<&VariantResult> {
        self.variants.iter().find(|v| v.variant.name == name)
    }
}

/// The config stored in a variant's checkpoints: enough to rebuild its model
/// and evaluation sets.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct VariantRun {
    pub study: TruncationStudy,
    pub variant: Variant,
}

impl VariantRun {
    /// The untrained task of this variant (model initialised from the seed).
    pub fn task(&self) -> Result<NoisyRecallTask, StudyError> {
        let (study, v) = (&self.study, &self.variant);
        let data = NoisyRecallConfig { alpha: v.alpha, ..study.data.clone() };
        let model_cfg =
            GptConfig { ffn_layers: v.ffn_layers.clone(), ..GptConfig::truncation(study.d_model, data.seq_len, VOCAB_SIZE) };
        Ok(NoisyRecallTask {
            model: Gpt::new(&model_cfg, study.seed, &Device::Cpu)?,
            sampler: NoisyRecallSampler::new(&data)?,
            batch_size: study.train.batch_size,
            clean: clean_eval_set(&data, study.eval.n_clean),
            noisy: noisy_eval_set(&data, study.eval.n_noisy),
            early_steps: study.eval.early_steps,
            extra_steps: study.eval.extra_steps.clone(),
            shards: study.train.shards,
        })
    }
}

/// Train and analyse one variant under `dir/<variant>`.
fn run_variant(study: &TruncationStudy, v: &Variant, dir: &Path, quiet: bool) -> Result<VariantResult, StudyError> {
    let t0 = Instant::now();
    let mut task = VariantRun { study: study.clone(), variant: v.clone() }.task()?;
    let vdir = dir.join(&v.name);
    std::fs::create_dir_all(&vdir).map_err(|e| io(&vdir, e))?;
    // Only the main run's dynamics are analysed; the other variants are probed at the end.
    let eval_every = if v.name == "main" { study.train.eval_every } else { 0 };
    if v.name != "main" {
        task.early_steps = 0;
        task.extra_steps.clear();
    }
    let train = crate::train::TrainConfig { steps: v.steps, eval_every, ..study.train.clone() };
    let mut sink = MetricsSink::open(&vdir.join("metrics.jsonl"), None)?;
    let opts = RunOptions {
        dir: Some(vdir.clone()),
        seed: study.seed,
        resume: false,
        config_text: to_toml(&VariantRun { study: study.clone(), variant: v.clone() }),
        quiet,
        stop_after: None,
    };
    if !quiet {
        eprintln!("[{}] training {} steps (α = {}, FFN layers {:?})", v.name, v.steps, v.alpha, v.ffn_layers);
    }
    let mut cache = SvdCache::new();
    let snapshot = study.sweep.spectral_step;
    let early_spectral = if v.name == "main" && snapshot > 0 && snapshot < v.steps {
        // Diagnose the spectrum at the spec's step, then resume bit-identically.
        train_run(&mut task, &train, &RunOptions { stop_after: Some(snapshot), ..opts.clone() }, &mut sink)?;
        let s = spectral(&task, snapshot, &study.sweep.keep_ks, &mut cache)?;
        train_run(&mut task, &train, &RunOptions { resume: true, ..opts }, &mut sink)?;
        s
    } else {
        train_run(&mut task, &train, &opts, &mut sink)?;
        None
    };
    let dynamics: Vec<(u64, Metrics)> =
        sink.records.iter().filter(|(_, m)| m.contains_key("clean_p_noise")).cloned().collect();
    let sweep = run_sweep(&task, &study.sweep, &mut cache)?;
    let spectral = match early_spectral {
        Some(s) => Some(s),
        None => spectral(&task, v.steps, &study.sweep.keep_ks, &mut cache)?,
    };
    let patterns = vec![example_pattern(&task, 0)?, example_pattern(&task, 1)?];
    let forced = forced_queries(&task.model, &task.noisy)?;
    let attribution = noise_attribution(&task.model, &task.clean, 64)?;
    let mut lines = String::new();
    for row in &sweep {
        lines += &serde_json::to_string(row).expect("sweep rows serialise");
        lines.push('\n');
    }
    let path = vdir.join("sweep.jsonl");
    write_atomic(&path, lines.as_bytes()).map_err(|e| io(&path, e))?;
    Ok(VariantResult { variant: v.clone(), seconds: t0.elapsed().as_secs_f64(), dynamics, sweep, spectral, patterns, forced, attribution })
}

/// All variants, in config order. With `parallel_variants` and more than one
/// core, variants run longest-first on one single-threaded worker per core
/// (every kernel is thread-count independent, so the numbers are the same).
fn run_variants(study: &TruncationStudy, dir: &Path, quiet: bool) -> Result<Vec<VariantResult>, StudyError> {
    let variants = study.variants();
    let cores = rayon::current_num_threads();
    let workers = if study.parallel_variants { cores.min(variants.len()) } else { 1 };
    if workers <= 1 {
        return variants.iter().map(|v| run_variant(study, v, dir, quiet)).collect();
    }
    // Longest first by estimated cost: steps × (1 + FFN layers), the main run
    // counting double for its probes.
    let cost = |v: &Variant| {
        let ffns = v.ffn_layers.iter().filter(|k| **k != crate::nn::FfnKind::None).count() as u64;
        v.steps * (2 + ffns) * if v.name == "main" { 2 } else { 1 }
    };
    let mut order: Vec<usize> = (0..variants.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cost(&variants[i])));
    run_jobs(order, workers, |i| run_variant(study, &variants[i], dir, true), |i, r| {
        if !quiet {
            eprintln!("[{}] done: {} steps in {:.0} s", variants[i].name, variants[i].steps, r.seconds);
        }
    })
}

fn run_toys(seed: u64) -> Toys {
    let grad = one_step_gradient_check(&GradCheckConfig { seed, ..GradCheckConfig::default() });
    let mem = linear_assoc_memory(&AssocMemoryConfig { seed, ..AssocMemoryConfig::default() });
    let report = analyse_assoc_memory(&mem, &[1, 2, 4]);
    Toys { grad_check: (&grad).into(), assoc_memory: (&report).into() }
}

/// Run the study; outputs go to `{out_dir}/{name}/`.
pub fn reproduce(study: &TruncationStudy, quick: bool, quiet: bool) -> Result<StudyOutcome, StudyError> {
    let t0 = Instant::now();
    let dir = PathBuf::from(&study.out_dir).join(&study.name);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let cfg_path = dir.join("config.toml");
    write_atomic(&cfg_path, to_toml(study).as_bytes()).map_err(|e| io(&cfg_path, e))?;
    let variants = run_variants(study, &dir, quiet)?;
    let toys = run_toys(study.seed);
    let mut outcome = StudyOutcome { dir: dir.clone(), quick, seconds: 0.0, variants, toys, claims: Vec::new() };
    outcome.claims = check_claims(&outcome, study);
    outcome.seconds = t0.elapsed().as_secs_f64();
    let results = dir.join("results.json");
    let json = serde_json::to_string_pretty(&outcome).expect("outcome serialises");
    write_atomic(&results, json.as_bytes()).map_err(|e| io(&results, e))?;
    let claims = dir.join("claims.json");
    let json = serde_json::to_string_pretty(&outcome.claims).expect("claims serialise");
    write_atomic(&claims, json.as_bytes()).map_err(|e| io(&claims, e))?;
    super::report::write_report(&outcome, study)?;
    Ok(outcome)
}
