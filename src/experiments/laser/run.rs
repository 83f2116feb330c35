//! The LASER protocol on a pretrained model (spec §6.1, arXiv 2312.13558): evaluate the
//! probes under every single edit of a (layer, τ, ρ) grid with one SVD per matrix, choose
//! the edit on the first `val_frac` of the examples (accuracy, then P(correct)), and report
//! it on the rest against the unedited model. `reproduce` adds loading and output files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::config::LaserStudy;
use super::error::{check_layout, LaserError};
use super::probes::{aggregate, builtin_probes, evaluate, ProbeResult, ProbeSet};
use crate::config::to_toml;
use crate::interp::lens::{mean_attribution, LensExample, MeanAttribution};
use crate::models::{HfTokenizer, LanguageModel, Pretrained};
use crate::surgery::{sweep_grid, with_edits, EditKind, EditSet, Mode, SvdCache, TemplateMap};
use crate::util::fsx::write_atomic;

/// Metrics of one edit set on the validation and test splits.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub edit: String,
    pub layer: Option<usize>,
    pub matrix: Option<String>,
    pub rank_frac: Option<f64>,
    pub val: BTreeMap<String, f64>,
    pub test: BTreeMap<String, f64>,
}

/// A whole sweep: the baseline row first, then one row per grid edit.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub rows: Vec<SweepRow>,
    /// Per-example results, parallel to `rows`.
    pub results: Vec<Vec<ProbeResult>>,
    /// Index into `rows` of the chosen edit.
    pub best: usize,
    pub n_val: usize,
    pub svd_computed: usize,
    /// The edit set of each row.
    pub edits: Vec<EditSet>,
}

/// Per-example results of `set` under each edit set (weights restored after each).
pub fn evaluate_edits(
    model: &dyn LanguageModel,
    map: &TemplateMap,
    set: &ProbeSet,
    edits: &[EditSet],
    cache: &mut SvdCache,
) -> Result<Vec<Vec<ProbeResult>>, LaserError> {
    let params = model.params().clone();
    edits.iter().map(|e| Ok(with_edits(&params, e, cache, map, || evaluate(model, set))??)).collect()
}

/// Size of the validation prefix: ⌈n·val_frac⌉, at least 1 and leaving at least 1 test example.
pub fn n_val(n: usize, val_frac: f64) -> usize {
    ((n as f64 * val_frac).ceil() as usize).clamp(1, n.saturating_sub(1).max(1))
}

fn row(edits: &EditSet, results: &[ProbeResult], n_val: usize) -> SweepRow {
    let single = (edits.edits.len() == 1).then(|| &edits.edits[0]);
    SweepRow {
        edit: edits.to_string(),
        layer: single.map(|e| e.layer),
        matrix: single.map(|e| e.target.name().to_string()),
        rank_frac: single.and_then(|e| match e.kind {
            EditKind::LowRank { rank_frac, .. } => Some(rank_frac),
            _ => None,
        }),
        val: aggregate(&results[..n_val]),
        test: aggregate(&results[n_val..]),
    }
}

/// Runs the grid of `study` (plus the unedited model) on `set` and picks the best edit.
pub fn sweep(model: &dyn LanguageModel, map: &TemplateMap, set: &ProbeSet, study: &LaserStudy, cache: &mut SvdCache) -> Result<Sweep, LaserError> {
    if set.probes.len() < 2 {
        return Err(LaserError::Probe { msg: format!("{} usable example(s); the split needs at least 2", set.probes.len()) });
    }
    let n_val = n_val(set.probes.len(), study.val_frac);
    let mut edits = vec![EditSet::default()];
    edits.extend(sweep_grid(&study.grid_layers(model.n_layers()), &study.targets(), &study.rank_fracs, &[Mode::Top]));
    let results = evaluate_edits(model, map, set, &edits, cache)?;
    let rows: Vec<SweepRow> = edits.iter().zip(&results).map(|(e, r)| row(e, r, n_val)).collect();
    let key = |r: &SweepRow| (r.val["acc"], r.val["p_correct"]);
    let best = (1..rows.len())
        .max_by(|&a, &b| key(&rows[a]).partial_cmp(&key(&rows[b])).unwrap_or(std::cmp::Ordering::Equal).then(b.cmp(&a)))
        .unwrap_or(0);
    Ok(Sweep { rows, results, best, n_val, svd_computed: cache.computed(), edits })
}

/// Files and numbers of one `reproduce laser` run.
#[derive(Debug, Clone, Serialize)]
pub struct LaserOutcome {
    pub dir: PathBuf,
    pub summary: serde_json::Value,
    #[serde(skip)]
    pub sweep: Sweep,
}

fn io(path: &Path, source: std::io::Error) -> LaserError {
    LaserError::Io { path: path.display().to_string(), source }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), LaserError> {
    write_atomic(path, bytes).map_err(|e| io(path, e))
}

/// The built-in probes of `study`, tokenised for the model in `dir`.
pub fn builtin_set(dir: &Path, study: &LaserStudy, vocab: usize) -> Result<ProbeSet, LaserError> {
    let tok = HfTokenizer::load(dir)?;
    let probes = builtin_probes(study.probes.n_ioi, study.probes.facts, study.probes.seed);
    ProbeSet::tokenize(&probes, &|s| tok.encode_plain(s), &study.probes.generic, vocab)
}

/// `latentlab reproduce laser`: load `study.model`, sweep, write `sweep.jsonl`,
/// `per_example.jsonl`, `summary.json`, `config.toml` and `report.html` under `out_dir/name`.
pub fn reproduce(study: &LaserStudy, quiet: bool) -> Result<LaserOutcome, LaserError> {
    let t0 = Instant::now();
    if study.model.is_empty() {
        return Err(LaserError::NoModel);
    }
    let model_dir = PathBuf::from(&study.model);
    check_layout(&model_dir)?;
    let model = Pretrained::load(&model_dir, &candle_core::Device::Cpu)?;
    let set = builtin_set(&model_dir, study, model.vocab_size())?;
    if !quiet {
        eprintln!("laser: {} probes ({} skipped), {} layers", set.probes.len(), set.skipped.len(), model.n_layers());
    }
    let map = TemplateMap::for_arch(model.arch());
    let mut cache = SvdCache::new();
    let sw = sweep(&model, &map, &set, study, &mut cache)?;
    let dir = PathBuf::from(&study.out_dir).join(&study.name);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    write(&dir.join("config.toml"), to_toml(study).as_bytes())?;
    let mut table = String::new();
    for r in &sw.rows {
        table += &serde_json::to_string(r).expect("row serialises");
        table.push('\n');
    }
    write(&dir.join("sweep.jsonl"), table.as_bytes())?;
    if study.per_example {
        write(&dir.join("per_example.jsonl"), per_example_jsonl(&sw, &set).as_bytes())?;
    }
    let (base, best) = (&sw.rows[0], &sw.rows[sw.best]);
    let attribution = generic_attribution(&model, &map, &set, &sw, &mut cache)?;
    let mut summary = json!({
        "model": study.model, "arch": model.arch().model_type(), "n_layers": model.n_layers(),
        "n_examples": set.probes.len(), "n_skipped": set.skipped.len(), "skipped": set.skipped,
        "n_val": sw.n_val, "n_test": set.probes.len() - sw.n_val, "n_edits": sw.rows.len() - 1,
        "svd_computed": sw.svd_computed, "best_edit": best.edit, "best_val": best.val,
        "best_test": best.test, "baseline_val": base.val, "baseline_test": base.test,
        "delta_test": delta(&best.test, &base.test),
    });
    summary["attribution"] = attribution;
    summary["seconds"] = t0.elapsed().as_secs_f64().into();
    write(&dir.join("summary.json"), serde_json::to_string_pretty(&summary).expect("json").as_bytes())?;
    super::report::write_report(&dir, &sw, &summary)?;
    Ok(LaserOutcome { dir, summary, sweep: sw })
}

/// Direct logit attribution of logit[answer] − logit[generic] (" the") over the test
/// probes, for the unedited model and the chosen edit: which parts of the stream push the
/// generic token, and what the edit changed. Per-example rows are left out.
pub fn generic_attribution(model: &Pretrained, map: &TemplateMap, set: &ProbeSet, sw: &Sweep, cache: &mut SvdCache) -> Result<serde_json::Value, LaserError> {
    let examples: Vec<LensExample> = set.probes[sw.n_val..]
        .iter()
        .filter(|p| p.answer != set.generic)
        .map(|p| LensExample { ids: p.ids.clone(), answer: p.answer, wrong: Some(set.generic) })
        .collect();
    if examples.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    let strip = |mut a: MeanAttribution| {
        a.per_example.clear();
        serde_json::to_value(a).expect("attribution serialises")
    };
    let unedited = strip(mean_attribution(model, &examples, |_| {})?);
    let chosen = strip(with_edits(model.params(), &sw.edits[sw.best], cache, map, || mean_attribution(model, &examples, |_| {}))??);
    Ok(json!({ "target": "logit[answer] − logit[generic]", "split": "test", "unedited": unedited, "chosen": chosen, "chosen_edit": sw.rows[sw.best].edit }))
}

/// `a − b` for every key both hold.
pub fn delta(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    a.iter().filter_map(|(k, v)| b.get(k).map(|w| (k.clone(), v - w))).collect()
}

/// One JSON line per (edit, example).
pub fn per_example_jsonl(sw: &Sweep, set: &ProbeSet) -> String {
    let mut out = String::new();
    for (row, results) in sw.rows.iter().zip(&sw.results) {
        for r in results {
            let mut v = serde_json::to_value(r).expect("result serialises");
            v["edit"] = row.edit.clone().into();
            v["split"] = (if r.index < sw.n_val { "val" } else { "test" }).into();
            v["prompt"] = set.probes[r.index].prompt.clone().into();
            v["answer"] = set.probes[r.index].answer.into();
            out += &v.to_string();
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_both_sides_non_empty() {
        assert_eq!(n_val(100, 0.2), 20);
        assert_eq!(n_val(2, 0.2), 1);
        assert_eq!(n_val(7, 0.2), 2);
    }
}
