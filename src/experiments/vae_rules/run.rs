//! The study end to end: generate each family's splits, train every variant
//! with the shared loop, score it, check the claims and write the report.
//! Every number goes to JSON/JSONL files under `{out_dir}/{name}/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use super::claims::{check_claims, Claim};
use super::config::{Freeze, Variant, VaeRulesStudy};
use super::eval::{evaluate, VariantEval};
use super::task::{encode, Encoded, VaeTask};
use crate::config::to_toml;
use crate::data::rules::{generate, write_jsonl, Family, RuleSplits};
use crate::data::rules_vocab::RuleVocab;
use crate::models::{LanguageVae, VaeConfig};
use crate::train::{run as train_run, Metrics, MetricsSink, RunOptions, TrainConfig};
use crate::util::fsx::write_atomic;

pub use crate::experiments::error::StudyError;
use crate::experiments::error::io;
use crate::experiments::pool::run_jobs;

/// Everything measured for one variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub variant: Variant,
    pub n_params: usize,
    pub seconds: f64,
    pub ms_per_step: f64,
    pub final_loss: f64,
    /// Periodic validation records `(step, metrics)`.
    pub dynamics: Vec<(u64, Metrics)>,
    pub eval: VariantEval,
}

/// The whole study's results.
#[derive(Debug, Clone, Serialize)]
pub struct StudyOutcome {
    pub dir: PathBuf,
    pub quick: bool,
    pub seed: u64,
    pub seconds: f64,
    pub variants: Vec<VariantResult>,
    pub claims: Vec<Claim>,
}

impl StudyOutcome {
    pub fn variant(&self, name: &str) -> Option<&VariantResult> {
        self.variants.iter().find(|v| v.variant.name == name)
    }
}

/// One family's data, shared by its variants.
pub struct FamilyData {
    pub vocab: RuleVocab,
    pub splits: RuleSplits,
}

/// The model config of variant `v`.
pub fn model_config(study: &VaeRulesStudy, v: &Variant, vocab: &RuleVocab) -> VaeConfig {
    let m = &study.model;
    VaeConfig {
        vocab_size: vocab.len(),
        d_model: m.d_model,
        n_heads: m.n_heads,
        d_mlp: m.d_mlp,
        enc_layers: m.enc_layers,
        dec_layers: m.dec_layers,
        latent_dim: m.latent_dim,
        max_seq_len: 48,
        act: m.act,
        injection: v.injection,
        n_rules: if v.is_vae() && v.supervision.classifier() { v.family.rules().len() } else { 0 },
    }
}

/// Train and score one variant under `dir/<variant>`.
fn run_variant(study: &VaeRulesStudy, v: &Variant, data: &FamilyData, dir: &Path, quiet: bool) -> Result<VariantResult, StudyError> {
    let t0 = Instant::now();
    let vdir = dir.join(&v.name);
    std::fs::create_dir_all(&vdir).map_err(|e| io(&vdir, e))?;
    let model = LanguageVae::new(&model_config(study, v, &data.vocab), study.seed, &Device::Cpu)?;
    match v.freeze {
        Freeze::None => 0,
        Freeze::EncoderAttn => model.params().freeze(|n| n.starts_with("encoder.blocks.") && n.contains(".attn.")),
        Freeze::EncoderFfn => model.params().freeze(|n| n.starts_with("encoder.blocks.") && n.contains(".mlp.")),
    };
    let n_params = model.params().n_trainable();
    let enc = |xs: &[crate::data::rules::RuleExample]| -> Vec<Encoded> { xs.iter().map(|e| encode(&data.vocab, v, e)).collect() };
    let s = &data.splits;
    let mut task = VaeTask {
        model,
        variant: v.clone(),
        train: enc(&s.train[..v.n_train]),
        monitor: enc(&s.valid[..study.eval.n_monitor]),
        batch_size: study.train.batch_size,
        loss: study.loss.clone(),
        steps: study.train.steps,
    };
    let mut sink = MetricsSink::open(&vdir.join("metrics.jsonl"), None)?;
    let opts = RunOptions {
        dir: None,
        seed: study.seed,
        resume: false,
        config_text: to_toml(study),
        quiet,
        stop_after: None,
    };
    if !quiet {
        eprintln!("[{}] training {} steps on {} examples", v.name, study.train.steps, v.n_train);
    }
    let summary = train_run(&mut task, &study.train, &opts, &mut sink)?;
    let dynamics: Vec<(u64, Metrics)> = sink.records.iter().filter(|(_, m)| m.contains_key("val_recon")).cloned().collect();
    let n_test = study.eval.n_test;
    let test_enc = enc(&s.test[..n_test]);
    let n_cent = study.eval.n_centroid.min(v.n_train);
    let eval = evaluate(
        &task.model,
        &data.vocab,
        v,
        &s.test[..n_test],
        &s.test_alts[..n_test],
        &test_enc,
        &task.train[..n_cent],
        study.eval.grad_per_rule,
        study.loss.beta_max,
        study.seed,
    )?;
    let path = vdir.join("eval.json");
    write_atomic(&path, serde_json::to_string_pretty(&eval).expect("eval serialises").as_bytes()).map_err(|e| io(&path, e))?;
    let ms_per_step = 1000.0 * summary.seconds / summary.steps.max(1) as f64;
    Ok(VariantResult {
        variant: v.clone(),
        n_params,
        seconds: t0.elapsed().as_secs_f64(),
        ms_per_step,
        final_loss: summary.final_loss,
        dynamics,
        eval,
    })
}

/// All variants, in config order; with `parallel_variants`, one
/// single-threaded worker per core (kernels are thread-count independent, so
/// the numbers are the same either way).
fn run_variants(study: &VaeRulesStudy, data: &BTreeMap<Family, FamilyData>, dir: &Path, quiet: bool) -> Result<Vec<VariantResult>, StudyError> {
    let variants = study.variants();
    let cores = rayon::current_num_threads();
    let workers = if study.parallel_variants { cores.min(variants.len()) } else { 1 };
    let one = |v: &Variant, quiet: bool| run_variant(study, v, &data[&v.family], dir, quiet);
    if workers <= 1 {
        return variants.iter().map(|v| one(v, quiet)).collect();
    }
    run_jobs((0..variants.len()).collect(), workers, |i| one(&variants[i], true), |i, r| {
        if !quiet {
            eprintln!("[{}] done in {:.0} s ({:.1} ms/step)", variants[i].name, r.seconds, r.ms_per_step);
        }
    })
}

/// Generate (and write) the splits and vocabulary of every family the study uses.
pub fn family_data(study: &VaeRulesStudy, dir: &Path) -> Result<BTreeMap<Family, FamilyData>, StudyError> {
    let mut out = BTreeMap::new();
    for v in study.variants() {
        if out.contains_key(&v.family) {
            continue;
        }
        let d = &study.data;
        let splits = generate(v.family, d.n_train, d.n_valid, d.n_test, study.seed);
        let vocab = RuleVocab::new(v.family);
        let fdir = dir.join("data").join(v.family.name());
        std::fs::create_dir_all(&fdir).map_err(|e| io(&fdir, e))?;
        write_jsonl(&fdir.join("train.jsonl"), &splits.train)?;
        write_jsonl(&fdir.join("valid.jsonl"), &splits.valid)?;
        write_jsonl(&fdir.join("test.jsonl"), &splits.test)?;
        vocab.save(&fdir.join("vocab.json"))?;
        out.insert(v.family, FamilyData { vocab, splits });
    }
    Ok(out)
}

/// Run the study; outputs go to `{out_dir}/{name}/`.
pub fn reproduce(study: &VaeRulesStudy, quick: bool, quiet: bool) -> Result<StudyOutcome, StudyError> {
    let t0 = Instant::now();
    let dir = PathBuf::from(&study.out_dir).join(&study.name);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let cfg_path = dir.join("config.toml");
    write_atomic(&cfg_path, to_toml(study).as_bytes()).map_err(|e| io(&cfg_path, e))?;
    let data = family_data(study, &dir)?;
    let variants = run_variants(study, &data, &dir, quiet)?;
    let mut outcome = StudyOutcome { dir: dir.clone(), quick, seed: study.seed, seconds: 0.0, variants, claims: Vec::new() };
    outcome.claims = check_claims(&outcome, study);
    outcome.seconds = t0.elapsed().as_secs_f64();
    let mut lines = String::new();
    for v in &outcome.variants {
        let mut m = serde_json::Map::new();
        m.insert("variant".into(), v.variant.name.clone().into());
        for (k, x) in [
            ("em_post", v.eval.em_post),
            ("tok_acc", v.eval.tok_acc),
            ("em_centroid", v.eval.em_centroid),
            ("swap_success", v.eval.swap_success),
            ("swap_leak", v.eval.swap_leak),
            ("silhouette", v.eval.silhouette),
            ("silhouette_cos", v.eval.silhouette_cos),
            ("kmeans_nmi", v.eval.kmeans_nmi),
            ("kmeans_ari", v.eval.kmeans_ari),
            ("knn_acc", v.eval.knn_acc),
            ("probe_acc", v.eval.probe_acc),
            ("between_within", v.eval.between_within),
            ("active_units", v.eval.active_units),
            ("kl_total", v.eval.kl_total),
            ("seconds", v.seconds),
            ("ms_per_step", v.ms_per_step),
        ] {
            m.insert(k.into(), if x.is_finite() { serde_json::json!(x) } else { serde_json::Value::Null });
        }
        lines += &serde_json::Value::Object(m).to_string();
        lines.push('\n');
    }
    let path = dir.join("metrics.jsonl");
    write_atomic(&path, lines.as_bytes()).map_err(|e| io(&path, e))?;
    let results = dir.join("results.json");
    let json = serde_json::to_string_pretty(&outcome).expect("outcome serialises");
    write_atomic(&results, json.as_bytes()).map_err(|e| io(&results, e))?;
    let claims = dir.join("claims.json");
    let json = serde_json::to_string_pretty(&outcome.claims).expect("claims serialise");
    write_atomic(&claims, json.as_bytes()).map_err(|e| io(&claims, e))?;
    super::report::write_report(&outcome, study)?;
    Ok(outcome)
}

/// Steps the loop runs for the study (re-exported for the CLI).
pub fn train_config(study: &VaeRulesStudy) -> &TrainConfig {
    &study.train
}
