//! The study end to end: train each variant with the shared loop, run the OOD sweep
//! (fully solved and per-node accuracy per N, accuracy per step), check the claims and
//! write `results.json`, `claims.json` and `<variant>/metrics.jsonl`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::analysis::{analyze, AnalysisConfig, MechanismReport};
use super::claims::{check_claims, Claim};
use super::checkpoint::RecursiveRun;
use super::config::{RecursiveStudy, Variant};
use super::task::{evaluate_set, graph_set, recovery_rate, BestWeights, RecursiveTask, SizeResult, ValScore};
use crate::config::to_toml;
use crate::data::compgraph::CompGraphConfig;
use crate::models::Recurrent;
use crate::train::{run as train_run, Metrics, MetricsSink, RunOptions, TrainConfig};
use crate::util::fsx::write_atomic;
use crate::experiments::pool::run_jobs;

pub use crate::experiments::error::StudyError;
use crate::experiments::error::io;

/// Everything measured for one variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantResult {
    pub variant: Variant,
    pub n_params: usize,
    pub train_seconds: f64,
    pub ms_per_step: f64,
    pub final_loss: f64,
    /// Logged training records `(step, metrics)`.
    pub records: Vec<(u64, Metrics)>,
    /// The evaluated weights' step and validation score when `eval.select_best` (else the
    /// last step's weights are evaluated).
    pub selected: Option<ValScore>,
    /// The OOD sweep, one entry per test size.
    pub sizes: Vec<SizeResult>,
    /// Steps trained (fewer than `train.steps` when the decay trigger fired).
    pub steps: u64,
    /// The step at which `train.decay_trigger` fired (None: it did not).
    pub decay_start: Option<u64>,
    /// Steps at which measured curriculum stages (`until_due_acc`) ended, in order.
    pub stage_ends: Vec<u64>,
}

impl VariantResult {
    /// The sweep entry of graphs with `n` nodes.
    pub fn size(&self, n: usize) -> Option<&SizeResult> {
        self.sizes.iter().find(|s| s.n_nodes == n)
    }
}

/// The whole study's results.
#[derive(Debug, Clone, Serialize)]
pub struct RecursiveOutcome {
    pub dir: PathBuf,
    pub quick: bool,
    pub seconds: f64,
    /// Train N and the position-encoding note printed with the results.
    pub train_n: usize,
    pub notes: Vec<String>,
    pub variants: Vec<VariantResult>,
    /// The mechanism analysis of the interpretability model (spec §8.2), when run.
    pub mechanism: Option<MechanismReport>,
    pub claims: Vec<Claim>,
}

impl RecursiveOutcome {
    pub fn variant(&self, name: &str) -> Option<&VariantResult> {
        self.variants.iter().find(|v| v.variant.name == name)
    }
}

/// The test sets: N ∈ `eval.sizes`, depth uncapped, fixed seeds.
pub fn test_sets(study: &RecursiveStudy) -> Vec<(usize, Vec<crate::data::compgraph::Encoded>)> {
    study
        .eval
        .sizes
        .iter()
        .map(|&n| {
            let cfg = CompGraphConfig { n_nodes: n, max_depth: 0, ..study.data.clone() };
            (n, graph_set(&cfg, study.eval.n_graphs, 1_000_000 + n as u64))
        })
        .collect()
}

/// The training task of `v`, model initialised from the study's model seed.
pub fn task_for(study: &RecursiveStudy, v: &Variant) -> Result<RecursiveTask, StudyError> {
    let model = Recurrent::new(&study.model_for(v), study.model_seed(), &Device::Cpu)?;
    Ok(RecursiveTask {
        model,
        variant: v.clone(),
        data: study.data.clone(),
        batch_size: study.train.batch_size,
        corruption: study.corruption.clone(),
        e2e_loops: study.e2e_loops,
        eval: study.eval.clone(),
        val: graph_set(&study.data, study.eval.n_val, 999_999),
        due: Default::default(),
        verbose: false,
        // Only discrete training measures due-node accuracy: the other methods keep the
        // stages' nominal lengths.
        stages: if v.method == super::config::Method::Discrete { study.schedule() } else { study.schedule().fixed() },
        all_transitions: study.all_transitions,
        eval_every: study.train.eval_every,
        shards: study.train.shards,
        best: None,
    })
}

/// How a variant reports progress: nothing, its own lines (prefixed with its name), or
/// those plus the training loop's progress bar (only when it runs alone).
#[derive(Clone, Copy)]
struct Log {
    quiet: bool,
    bar: bool,
}

fn run_variant(study: &RecursiveStudy, v: &Variant, dir: &Path, log: Log) -> Result<VariantResult, StudyError> {
    let run = job_run(study, v, false);
    Finished::or_run(&dir.join(&v.name), run, study.resume, log.quiet, || Ok(train_variant(study, v, dir, log, true)?.0))
}

/// The file a finished job (a variant with its sweep, or the analysed interp model) leaves
/// in its folder.
pub const FINISHED_FILE: &str = "finished.toml";

/// What a finished job measured and the run it belongs to. With `--resume` a job whose
/// folder holds one for the same run is not trained again: its numbers are read back (TOML,
/// which keeps NaN). The file is small and self-contained, so a long study can be finished
/// in pieces on different machines: copy the finished jobs' files into the run folder.
#[derive(Serialize, Deserialize)]
struct Finished<T> {
    run: RecursiveRun,
    result: T,
}

/// The run a job's numbers depend on: the study without what only names or schedules the
/// jobs (output folder, the other variants, parallelism; for a ladder variant, the interp
/// model's settings), and the job's variant.
fn job_run(study: &RecursiveStudy, v: &Variant, interp: bool) -> RecursiveRun {
    let mut study = RecursiveStudy { name: String::new(), out_dir: String::new(), variants: Vec::new(), parallel_variants: true, resume: false, ..study.clone() };
    if !interp {
        study.interp = Default::default();
    }
    RecursiveRun { study, variant: v.clone() }
}

impl<T: Serialize + serde::de::DeserializeOwned> Finished<T> {
    /// The stored result at `path` when it belongs to `run` (None when there is no file or
    /// it belongs to another run: the job then runs again, continuing from the folder's
    /// latest checkpoint like any resumed job — which re-evaluates a finished job under new
    /// `eval` settings, and is wrong after a change of the training recipe: use a fresh
    /// `out_dir` for that).
    fn load(path: &Path, run: &RecursiveRun, quiet: bool) -> Result<Option<T>, StudyError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path, e)),
        };
        let stored: Finished<T> = toml::from_str(&text).map_err(|e| StudyError::Invalid(format!("{}: not a finished-job file: {}", path.display(), e.message())))?;
        if to_toml(&stored.run) != to_toml(run) {
            if !quiet {
                eprintln!("[{}] {} belongs to another configuration: running the job again (from the folder's latest checkpoint, if any)", run.variant.name, path.display());
            }
            return Ok(None);
        }
        if !quiet {
            eprintln!("[{}] finished earlier: reading {}", run.variant.name, path.display());
        }
        Ok(Some(stored.result))
    }

    /// The job's result: read back from `job_dir`'s finished file when `resume` finds one
    /// for `run`, else computed by `job` and stored there.
    fn or_run(job_dir: &Path, run: RecursiveRun, resume: bool, quiet: bool, job: impl FnOnce() -> Result<T, StudyError>) -> Result<T, StudyError> {
        let path = job_dir.join(FINISHED_FILE);
        if resume {
            if let Some(r) = Self::load(&path, &run, quiet)? {
                return Ok(r);
            }
        }
        let finished = Finished { run, result: job()? };
        let text = toml::to_string(&finished).map_err(|e| io(&path, e))?;
        write_atomic(&path, text.as_bytes()).map_err(|e| io(&path, e))?;
        Ok(finished.result)
    }
}

/// Train `v`; with `sweep`, also run the OOD sweep. Returns the trained model too.
fn train_variant(study: &RecursiveStudy, v: &Variant, dir: &Path, log: Log, sweep: bool) -> Result<(VariantResult, Recurrent), StudyError> {
    let quiet = log.quiet;
    let mut task = task_for(study, v)?;
    task.verbose = !quiet;
    let vdir = dir.join(&v.name);
    std::fs::create_dir_all(&vdir).map_err(|e| io(&vdir, e))?;
    let latest = if study.resume { crate::train::Checkpoint::latest(&vdir.join("checkpoints"))?.map(|c| c.manifest.step) } else { None };
    let mut sink = MetricsSink::open(&vdir.join("metrics.jsonl"), latest)?;
    let opts = RunOptions {
        dir: Some(vdir.clone()),
        seed: study.seed,
        resume: study.resume,
        config_text: to_toml(&super::checkpoint::RecursiveRun { study: study.clone(), variant: v.clone() }),
        quiet: quiet || !log.bar,
        stop_after: None,
    };
    if !quiet {
        eprintln!("[{}] training {} steps ({:?}, {} layers, EC {})", v.name, v.steps.unwrap_or(study.train.steps), v.method, v.n_layers, v.error_correction);
    }
    if study.eval.select_best {
        let best = vdir.join("best");
        task.best = Some(BestWeights::open(&best, !study.resume).map_err(|e| io(&best, e))?);
    }
    let train_cfg = TrainConfig { steps: v.steps.unwrap_or(study.train.steps), ..study.train.clone() };
    let summary = train_run(&mut task, &train_cfg, &opts, &mut sink)?;
    let selected = match &task.best {
        Some(best) => best.load_into(task.model.params())?,
        None => None,
    };
    if let (Some(best), Some(s)) = (&task.best, selected) {
        // A manifest makes `best/` a weights-only checkpoint that `eval` and `analyze`
        // open like any other (no optimizer state: it is not for resuming).
        let manifest = crate::train::checkpoint::Manifest {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            step: s.step,
            optimizer: study.train.optimizer,
            optimizer_t: 0,
            rng: crate::train::checkpoint::RngState::of(&<rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(study.seed)),
            config: opts.config_text.clone(),
            decay_start: None,
            task_state: None,
        };
        let path = best.dir.join("manifest.json");
        let json = serde_json::to_string_pretty(&manifest).map_err(|e| io(&path, e))?;
        write_atomic(&path, json.as_bytes()).map_err(|e| io(&path, e))?;
    }
    if let (Some(s), false) = (selected, quiet) {
        eprintln!("[{}] evaluating the weights of step {} (validation: solved {:.3}, node acc {:.3})", v.name, s.step, s.val_solved, s.val_node_acc);
    }
    let vocab = study.data.vocab();
    let mut sizes = Vec::new();
    for (n, set) in if sweep { test_sets(study) } else { Vec::new() } {
        let mut r = evaluate_set(&task.model, v, study.e2e_loops, &set, &study.eval, &vocab)?;
        r.n_nodes = n;
        if v.method == crate::experiments::recursive::config::Method::Discrete {
            r.recovery = Some(recovery_rate(&task.model, &set, study.eval.batch, &vocab, study.data.modulus, 7_000_000 + n as u64)?);
        }
        if !quiet {
            eprintln!(
                "[{}] N = {n:>3}: solved {:.3} (T = max depth + {}), depth+{} {:.3}, until-fixed-point {:.3} ({:.1} steps, {:.3} converged), node acc {:.3}, recovery {}",
                v.name, r.solved, study.eval.extra_steps, study.eval.extra_steps, r.solved_depth_plus_k, r.solved_fixed_point, r.mean_fixed_point_steps, r.converged, r.node_acc,
                r.recovery.map_or("–".into(), |x| format!("{x:.3}"))
            );
        }
        sizes.push(r);
    }
    let result = VariantResult {
        variant: v.clone(),
        n_params: task.model.params().n_trainable(),
        train_seconds: summary.seconds,
        ms_per_step: 1000.0 * summary.seconds / summary.steps.max(1) as f64,
        final_loss: summary.final_loss,
        records: sink.records.clone(),
        selected,
        sizes,
        steps: summary.steps,
        decay_start: sink.records.iter().find(|(_, m)| m.contains_key("decay_start")).map(|(step, _)| *step),
        stage_ends: sink.records.iter().filter(|(_, m)| m.contains_key("stage_end")).map(|(step, _)| *step).collect(),
    };
    Ok((result, task.model))
}

/// The interpretability model's training study and variant: the study's recipe at the
/// interp model's width (`study.interp`), discrete, no error correction.
fn interp_study(study: &RecursiveStudy) -> (RecursiveStudy, Variant) {
    let ic = &study.interp;
    let mut s = study.clone();
    s.model.d_model = ic.d_model;
    s.model.n_heads = ic.n_heads;
    if ic.steps > 0 {
        s.train.steps = ic.steps;
    }
    (s, Variant { name: "interp".into(), method: super::config::Method::Discrete, n_layers: ic.n_layers, error_correction: false, steps: None })
}

/// Train the 2-layer interpretability model (`study.interp`) and analyse it (spec §8.2).
fn run_interp(study: &RecursiveStudy, dir: &Path, log: Log) -> Result<Option<MechanismReport>, StudyError> {
    let ic = &study.interp;
    if !ic.enabled {
        return Ok(None);
    }
    let quiet = log.quiet;
    let (s, v) = interp_study(study);
    let run = job_run(&s, &v, true);
    let report = Finished::or_run(&dir.join(&v.name), run, study.resume, quiet, || {
        let (_, model) = train_variant(&s, &v, dir, log, false)?;
        let acfg = AnalysisConfig { contexts: ic.contexts, family_size: ic.family_size, fourier: ic.fourier, seed: study.seed };
        Ok(analyze(&model, &study.data, &acfg)?)
    })?;
    if !quiet {
        eprintln!(
            "[interp] controlled accuracy {:.3}; MLP-1 relative {:.3}; slots with layer-1 heads {:?}",
            report.controlled_acc,
            report.mlp1_relative,
            report.slots_with_heads()
        );
        for l in &report.layers {
            eprintln!("[interp] layer {}: {}; routes (strongest head) {}", l.layer, super::analysis::format_slot_heads(l), super::analysis::format_routes(l));
        }
    }
    Ok(Some(report))
}

/// One job of the study: a ladder variant or the interpretability model.
enum JobResult {
    Variant(Box<VariantResult>),
    Interp(Option<Box<MechanismReport>>),
}

/// Every variant and the interpretability model. With `parallel_variants` and more than
/// one core, the jobs run most expensive first on one single-threaded worker per core
/// (every kernel is thread-count independent, so the numbers equal a sequential run's).
fn run_jobs_of(study: &RecursiveStudy, dir: &Path, quiet: bool) -> Result<(Vec<VariantResult>, Option<MechanismReport>), StudyError> {
    let n = study.variants.len();
    let jobs = n + usize::from(study.interp.enabled);
    let workers = if study.parallel_variants { rayon::current_num_threads().min(jobs) } else { 1 };
    let log = Log { quiet, bar: workers <= 1 };
    let order = if workers <= 1 {
        (0..jobs).collect()
    } else {
        let mut order: Vec<usize> = (0..jobs).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(job_cost(study, i)));
        order
    };
    let results = run_jobs(
        order,
        workers,
        |i| match study.variants.get(i) {
            Some(v) => Ok(JobResult::Variant(Box::new(run_variant(study, v, dir, log)?))),
            None => Ok(JobResult::Interp(run_interp(study, dir, log)?.map(Box::new))),
        },
        |i, _| {
            if !quiet && workers > 1 {
                eprintln!("[{}] done", study.variants.get(i).map_or("interp", |v| v.name.as_str()));
            }
        },
    )?;
    let mut variants = Vec::with_capacity(n);
    let mut mechanism = None;
    for r in results {
        match r {
            JobResult::Variant(v) => variants.push(*v),
            JobResult::Interp(m) => mechanism = m.map(|m| *m),
        }
    }
    Ok((variants, mechanism))
}

/// Relative cost of job `i` (variants by index, then the interp model): steps × layers ×
/// d² × block applications per step (backpropagated loops for the continuous methods).
fn job_cost(study: &RecursiveStudy, i: usize) -> u64 {
    use super::config::Method;
    let d = study.model.d_model as u64;
    let loops_cont = study.data.max_depth as u64 + 1;
    match study.variants.get(i) {
        Some(v) => {
            let loops = match v.method {
                Method::Discrete | Method::FeedForward => 1,
                Method::Continuous => loops_cont,
                Method::RecurrentE2e => study.e2e_loops as u64,
            };
            study.train.steps * v.n_layers as u64 * d * d * loops
        }
        None => {
            let ic = &study.interp;
            let steps = if ic.steps > 0 { ic.steps } else { study.train.steps };
            steps * ic.n_layers as u64 * (ic.d_model * ic.d_model) as u64
        }
    }
}

/// Train every variant, run the OOD sweep, check the claims, write the results.
pub fn reproduce(study: &RecursiveStudy, quick: bool, quiet: bool) -> Result<RecursiveOutcome, StudyError> {
    let t0 = Instant::now();
    let dir = Path::new(&study.out_dir).join(&study.name);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let cfg_path = dir.join("config.toml");
    write_atomic(&cfg_path, to_toml(study).as_bytes()).map_err(|e| io(&cfg_path, e))?;
    let (variants, mechanism) = run_jobs_of(study, &dir, quiet)?;
    let mut outcome = RecursiveOutcome {
        dir: dir.clone(),
        quick,
        seconds: 0.0,
        train_n: study.data.n_nodes,
        notes: vec![format!("positions: {} (spec §3); evaluation T = set max depth + {}", study.model.positions(), study.eval.extra_steps)],
        variants,
        mechanism,
        claims: Vec::new(),
    };
    outcome.claims = check_claims(&outcome);
    outcome.seconds = t0.elapsed().as_secs_f64();
    for (name, json) in [
        ("results.json", serde_json::to_string_pretty(&outcome)),
        ("claims.json", serde_json::to_string_pretty(&outcome.claims)),
    ] {
        let path = dir.join(name);
        let json = json.map_err(|e| io(&path, e))?;
        write_atomic(&path, json.as_bytes()).map_err(|e| io(&path, e))?;
    }
    super::report::write_report(&outcome)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The finished jobs committed under `docs/ladder/seed<N>/<job>/` (a ladder trained in
    /// pieces across machines, see docs/ladder/README.md) belong to the default study at
    /// that seed and read back with this build: a change of the default recipe or of the
    /// result types that would make them stale fails here.
    #[test]
    fn committed_ladder_results_match_the_default_study_and_read_back() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ladder");
        let mut checked = 0;
        for seed_dir in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
            let seed: u64 = seed_dir.file_name().unwrap().to_str().unwrap().strip_prefix("seed").unwrap().parse().unwrap();
            let study = RecursiveStudy { seed, ..RecursiveStudy::default() };
            for job in std::fs::read_dir(&seed_dir).unwrap().map(|e| e.unwrap().path()) {
                let path = job.join(FINISHED_FILE);
                let name = job.file_name().unwrap().to_str().unwrap().to_string();
                if name == "interp" {
                    let (s, v) = interp_study(&study);
                    let m = Finished::<MechanismReport>::load(&path, &job_run(&s, &v, true), true).unwrap();
                    let m = m.unwrap_or_else(|| panic!("{}: not the default interp job at seed {seed}", path.display()));
                    assert!((0.0..=1.0).contains(&m.controlled_acc), "{}", path.display());
                } else {
                    let v = study.variants.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("{}: no default variant {name}", path.display()));
                    let r = Finished::<VariantResult>::load(&path, &job_run(&study, v, false), true).unwrap();
                    let r = r.unwrap_or_else(|| panic!("{}: not the default {name} job at seed {seed}", path.display()));
                    assert_eq!(r.sizes.iter().map(|s| s.n_nodes).collect::<Vec<_>>(), study.eval.sizes, "{}", path.display());
                }
                checked += 1;
            }
        }
        assert!(checked > 0, "no finished jobs under {}", root.display());
    }
}
