//! Recursive-study checkpoints: every variant's checkpoints store a [`RecursiveRun`] (the
//! study config and the variant), enough to rebuild the model and its test sets.
//! `latentlab eval` uses it to evaluate a trained model on the study's OOD sweep or on a
//! JSONL file of problems (one result line per problem, with the per-graph early exit),
//! and `latentlab analyze` to run the mechanism analysis.

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{Method, RecursiveStudy, Variant};
use super::task::{eval_steps, evaluate_set, final_batch, recovery_rate, run_states, SizeResult};
use crate::data::compgraph::{encode, Encoded, Problem, VALUE_FACTOR};
use crate::experiments::error::StudyError;
use crate::interp::Hooks;
use crate::models::Recurrent;
use crate::surgery::{with_edits, EditSet, SvdCache, TemplateMap};
use crate::train::{Checkpoint, Metrics};

/// The config stored in a recursive variant's checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecursiveRun {
    pub study: RecursiveStudy,
    pub variant: Variant,
}

impl RecursiveRun {
    /// The run stored in `ck`, or None when `ck` was written by something else.
    /// The run stored in `ck`'s manifest: None when the checkpoint is not a recursive
    /// study's; an error naming the checkpoint when it
    /// is one but its config does not parse (e.g. written by a newer latentlab).
    pub fn of(ck: &Checkpoint) -> Result<Option<Self>, StudyError> {
        let Ok(value) = ck.manifest.config.parse::<toml::Table>() else { return Ok(None) };
        // Other studies store `[study]` and `[variant]` too; a recursive run's study has
        // `e2e_loops` and its variant a `method`.
        let has = |table: &str, key: &str| value.get(table).and_then(|t| t.as_table()).is_some_and(|t| t.contains_key(key));
        if !(has("study", "e2e_loops") && has("variant", "method")) {
            return Ok(None);
        }
        toml::from_str(&ck.manifest.config)
            .map(Some)
            .map_err(|e| StudyError::Invalid(format!("{}: the recursive-study config in manifest.json does not parse: {}", ck.dir.display(), e.message())))
    }

    /// Open the checkpoint at `path` when it is a recursive-study checkpoint: the run and
    /// its model with the stored weights. `Ok(None)` for other checkpoints.
    pub fn open(path: &Path) -> Result<Option<(Self, Recurrent, Checkpoint)>, StudyError> {
        let ck = Checkpoint::open(path)?;
        let Some(run) = Self::of(&ck)? else { return Ok(None) };
        let model = Recurrent::new(&run.study.model_for(&run.variant), run.study.model_seed(), &Device::Cpu)?;
        ck.load_params(model.params())?;
        Ok(Some((run, model, ck)))
    }

    /// The study's OOD sweep (`eval.sizes`) on this model, with the one-step repair rate for
    /// discrete models.
    pub fn sweep(&self, model: &Recurrent) -> Result<Vec<SizeResult>, StudyError> {
        let vocab = self.study.data.vocab();
        let mut out = Vec::new();
        for (n, set) in super::run::test_sets(&self.study) {
            let mut r = evaluate_set(model, &self.variant, self.study.e2e_loops, &set, &self.study.eval, &vocab)?;
            r.n_nodes = n;
            if self.variant.method == Method::Discrete {
                r.recovery = Some(recovery_rate(model, &set, self.study.eval.batch, &vocab, self.study.data.modulus, 7_000_000 + n as u64)?);
            }
            out.push(r);
        }
        Ok(out)
    }

    /// Evaluate each edit set in turn on the study's OOD sweep (`eval.sizes` ×
    /// `eval.n_graphs`, no repair rate): one row of metrics per set, `n{N}_solved` (the
    /// official rule), `n{N}_fixed_point` (until the per-graph fixed point) and
    /// `n{N}_node_acc` for each size N. The weights are restored after each set; each
    /// matrix's SVD is computed once for the whole list.
    pub fn truncate(&self, model: &Recurrent, edits: &[EditSet]) -> Result<Vec<(String, Metrics)>, StudyError> {
        let sets = super::run::test_sets(&self.study);
        let vocab = self.study.data.vocab();
        let (mut cache, map) = (SvdCache::new(), TemplateMap::laser());
        let mut out = Vec::with_capacity(edits.len());
        for e in edits {
            let m = with_edits(model.params(), e, &mut cache, &map, || -> Result<Metrics, StudyError> {
                let mut m = Metrics::new();
                for (n, set) in &sets {
                    let r = evaluate_set(model, &self.variant, self.study.e2e_loops, set, &self.study.eval, &vocab)?;
                    m.insert(format!("n{n}_solved"), r.solved);
                    m.insert(format!("n{n}_fixed_point"), r.solved_fixed_point);
                    m.insert(format!("n{n}_node_acc"), r.node_acc);
                }
                Ok(m)
            })??;
            out.push((e.to_string(), m));
        }
        Ok(out)
    }

    /// Evaluate `problems` (e.g. read with `data::compgraph_jsonl::read_jsonl`): the summary
    /// over all of them, and one JSON object per problem — its size and depth, whether it is
    /// fully solved under the official rule (T = the file's max depth + `eval.extra_steps`)
    /// and at the per-graph fixed point (discrete models: early exit, capped at the
    /// evaluation's step budget), the steps that took, and the variables left wrong.
    pub fn evaluate_problems(&self, model: &Recurrent, problems: &[Problem]) -> Result<(SizeResult, Vec<Value>), StudyError> {
        let vocab = self.study.data.vocab();
        let encoded: Vec<Encoded> = problems
            .iter()
            .enumerate()
            .map(|(i, p)| encode(p, &vocab).map_err(|m| StudyError::Invalid(format!("problem {}: {m}", i + 1))))
            .collect::<Result<_, _>>()?;
        let mut summary = evaluate_set(model, &self.variant, self.study.e2e_loops, &encoded, &self.study.eval, &vocab)?;
        summary.n_nodes = 0;
        let discrete = self.variant.method == Method::Discrete;
        let cap = eval_steps(summary.max_depth, self.study.eval.extra_steps);
        let mut rows = Vec::with_capacity(problems.len());
        let batch = self.study.eval.batch.max(1);
        for (c, chunk) in encoded.chunks(batch).enumerate() {
            let refs: Vec<&Encoded> = chunk.iter().collect();
            let b = final_batch(&refs, &vocab);
            let x = b.input_tensor(model.params().device())?;
            let official = run_states(model, &self.variant, self.study.e2e_loops, &x, summary.steps)?;
            let official = official.last().ok_or_else(|| StudyError::Invalid("no evaluation step ran".into()))?;
            let (fixed, used) = if discrete {
                let (s, used) = model.solve(&x, cap, &mut Hooks::none())?;
                (Some(s.flatten_all()?.to_vec1::<u32>()?), used)
            } else {
                (None, vec![summary.steps; chunk.len()])
            };
            for (i, e) in chunk.iter().enumerate() {
                let k = c * batch + i;
                let row = |k: usize| i * b.len * 4 + k * 4;
                let wrong = |s: &[u32]| -> Vec<String> {
                    (0..e.len())
                        .filter(|&k| e.rhs_depth[k] >= 0 && s[row(k) + VALUE_FACTOR] != e.labels[k][VALUE_FACTOR])
                        .map(|k| format!("x_{}", e.tokens[k][1]))
                        .collect()
                };
                let solved = |s: &[u32]| (0..e.len()).all(|k| s[row(k)..row(k) + 4] == e.labels[k]);
                let p = &problems[k];
                let mut obj = json!({
                    "problem": k + 1,
                    "n_nodes": p.n_nodes(),
                    "depth": p.depth(),
                    "solved": solved(official),
                    "steps": summary.steps,
                    "wrong": wrong(official),
                });
                if let Some(f) = &fixed {
                    obj["solved_fixed_point"] = json!(solved(f));
                    obj["fixed_point_steps"] = json!(used[i]);
                    obj["wrong_fixed_point"] = json!(wrong(f));
                }
                rows.push(obj);
            }
        }
        Ok((summary, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::checkpoint::{Manifest, RngState};
    use rand::SeedableRng;

    fn checkpoint(config: &str) -> Checkpoint {
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let manifest = Manifest {
            crate_version: "0".into(),
            step: 1,
            optimizer: crate::train::OptimizerKind::Adamw,
            optimizer_t: 1,
            rng: RngState::of(&rng),
            config: config.into(),
            decay_start: None,
            task_state: None,
        };
        Checkpoint { dir: "runs/x/checkpoints/step_00000001".into(), manifest }
    }

    #[test]
    fn a_recursive_config_that_does_not_parse_is_an_error_not_a_foreign_checkpoint() {
        let good = crate::config::to_toml(&RecursiveRun { study: RecursiveStudy::quick(), variant: RecursiveStudy::quick().variants[0].clone() });
        assert!(RecursiveRun::of(&checkpoint(&good)).unwrap().is_some());
        assert!(RecursiveRun::of(&checkpoint("name = \"lm\"\n[train]\nsteps = 3\n")).unwrap().is_none(), "another kind of run");
        let truncation = "[study]\nd_model = 64\n[variant]\nname = \"main\"\n";
        assert!(RecursiveRun::of(&checkpoint(truncation)).unwrap().is_none(), "another study's run");
        let newer = good.replace("[study.model]\n", "[study.model]\nfuture_key = 1\n");
        let err = RecursiveRun::of(&checkpoint(&newer)).unwrap_err().to_string();
        assert!(err.contains("step_00000001") && err.contains("future_key"), "{err}");
    }
}
