//! Training task and evaluation of the recursive study (spec §4.2–4.4, §7): teacher-forced
//! one-step transitions with one random step per graph (spec §11.3), optional corruption for
//! error correction, continuous BPTT and end-to-end losses; evaluation by iterating the model
//! and scoring fully-solved graphs and per-node values after every step.

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::config::{CorruptStrategy, CorruptionConfig, EvalConfig, Method, Schedule, Variant};
use crate::data::compgraph::{encode, sample_problem, CompGraphConfig, Encoded, Token, Vocab, VALUE_FACTOR};
use crate::interp::hooks::Hooks;
use crate::models::{Halt, Recurrent};
use crate::nn::{ops, Params};
use crate::train::run::backprop;
use crate::train::shards::{sharded_grads, slice_range};
use crate::train::{Metrics, Task};

/// Padded sequences with per-position targets; factor-major rows `(batch, len, 4)`.
#[derive(Debug, Clone)]
pub struct GraphBatch {
    pub batch: usize,
    pub len: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    /// 1 at non-padding positions (the loss averages over them; a documented deviation).
    pub weights: Vec<f32>,
    pub rhs_depth: Vec<i32>,
    pub n_parents: Vec<u8>,
    /// The transition index t of each row (input S_t, target S_{t+1}).
    pub step: Vec<usize>,
}

impl GraphBatch {
    fn new(enc: &[&Encoded], vocab: &Vocab, rows: impl Fn(usize) -> (Vec<Token>, Vec<Token>, usize)) -> Self {
        let len = enc.iter().map(|e| e.len()).max().unwrap_or(0);
        let pad = vocab.pad();
        let n = enc.len() * len;
        let mut b = GraphBatch {
            batch: enc.len(),
            len,
            inputs: Vec::with_capacity(n * 4),
            targets: Vec::with_capacity(n * 4),
            weights: Vec::with_capacity(n),
            rhs_depth: Vec::with_capacity(n),
            n_parents: Vec::with_capacity(n),
            step: Vec::new(),
        };
        for (i, e) in enc.iter().enumerate() {
            let (input, target, t) = rows(i);
            for k in 0..len {
                let real = k < e.len();
                b.inputs.extend_from_slice(if real { &input[k] } else { &pad });
                b.targets.extend_from_slice(if real { &target[k] } else { &pad });
                b.weights.push(if real { 1.0 } else { 0.0 });
                b.rhs_depth.push(if real { e.rhs_depth[k] } else { -1 });
                b.n_parents.push(if real { e.n_parents[k] } else { 0 });
            }
            b.step.push(t);
        }
        b
    }

    /// Rows `r` of the batch (same padded length).
    pub fn rows(&self, r: std::ops::Range<usize>) -> GraphBatch {
        let (a, z) = (r.start * self.len, r.end * self.len);
        GraphBatch {
            batch: r.len(),
            len: self.len,
            inputs: self.inputs[a * 4..z * 4].to_vec(),
            targets: self.targets[a * 4..z * 4].to_vec(),
            weights: self.weights[a..z].to_vec(),
            rhs_depth: self.rhs_depth[a..z].to_vec(),
            n_parents: self.n_parents[a..z].to_vec(),
            step: self.step[r].to_vec(),
        }
    }

    /// `(batch, len, 4)` u32 input state.
    pub fn input_tensor(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_slice(&self.inputs, (self.batch, self.len, 4), device)
    }
}

/// One transition per graph: t uniform in 0..=D_batch, input S_t, target S_{t+1}; on a
/// corrupted batch, candidate RHS values of S_t are redrawn uniformly over the VALUE vocabulary.
pub fn transition_batch(enc: &[&Encoded], vocab: &Vocab, rng: &mut ChaCha8Rng, corrupt: Option<&CorruptionConfig>) -> GraphBatch {
    let d_batch = enc.iter().flat_map(|e| e.rhs_depth.iter().copied()).max().unwrap_or(0).max(0) as usize;
    let steps: Vec<usize> = enc.iter().map(|_| rng.random_range(0..=d_batch)).collect();
    transition_batch_at(enc, &steps, vocab, rng, corrupt)
}

/// Every transition t = 0..=D_batch of every graph (the official stacked loss, spec §4.2):
/// B·(D_batch + 1) rows, graph-major.
pub fn all_transitions_batch(enc: &[&Encoded], vocab: &Vocab, rng: &mut ChaCha8Rng, corrupt: Option<&CorruptionConfig>) -> GraphBatch {
    let d_batch = enc.iter().flat_map(|e| e.rhs_depth.iter().copied()).max().unwrap_or(0).max(0) as usize;
    let rows: Vec<&Encoded> = enc.iter().flat_map(|&e| std::iter::repeat_n(e, d_batch + 1)).collect();
    let steps: Vec<usize> = (0..rows.len()).map(|i| i % (d_batch + 1)).collect();
    transition_batch_at(&rows, &steps, vocab, rng, corrupt)
}

/// Row i: input S_{steps[i]} of `enc[i]` (optionally corrupted), target S_{steps[i]+1}.
pub fn transition_batch_at(enc: &[&Encoded], steps: &[usize], vocab: &Vocab, rng: &mut ChaCha8Rng, corrupt: Option<&CorruptionConfig>) -> GraphBatch {
    let n_values = vocab.sizes()[VALUE_FACTOR] as u32;
    let mut inputs: Vec<Vec<Token>> = enc.iter().zip(steps).map(|(e, &t)| e.state(t)).collect();
    if let Some(c) = corrupt {
        for ((e, &t), input) in enc.iter().zip(steps).zip(inputs.iter_mut()) {
            for (k, &d) in e.rhs_depth.iter().enumerate() {
                let due = match c.strategy {
                    CorruptStrategy::Last => d >= 0 && d as usize == t,
                    CorruptStrategy::Random => d >= 0 && d as usize <= t,
                    CorruptStrategy::Previous => d >= 0 && (d as usize) < t,
                };
                if due && rng.random::<f64>() < c.token_prob {
                    input[k][VALUE_FACTOR] = rng.random_range(0..n_values);
                }
            }
        }
    }
    GraphBatch::new(enc, vocab, |i| (inputs[i].clone(), enc[i].state(steps[i] + 1), steps[i]))
}

/// Input X, target the final label Y (end-to-end baselines).
pub fn final_batch(enc: &[&Encoded], vocab: &Vocab) -> GraphBatch {
    GraphBatch::new(enc, vocab, |i| (enc[i].tokens.clone(), enc[i].labels.clone(), 0))
}

/// Σ_f mean CE over non-padding positions of `logits[f]: (batch, len, vocab_f)` against
/// `targets` (`(batch, len, 4)` rows).
pub fn factor_loss(logits: &[Tensor], targets: &[u32], weights: &[f32], device: &Device) -> Result<Tensor> {
    let n = weights.len();
    let w = Tensor::from_slice(weights, n, device)?;
    let mut total: Option<Tensor> = None;
    for (f, l) in logits.iter().enumerate() {
        let tf: Vec<u32> = (0..n).map(|i| targets[i * 4 + f]).collect();
        let v = l.dim(2)?;
        let ce = ops::cross_entropy(&l.reshape((n, v))?, &Tensor::from_vec(tf, n, device)?, Some(&w))?;
        total = Some(match total {
            Some(t) => (t + ce)?,
            None => ce,
        });
    }
    total.ok_or_else(|| candle_core::Error::Msg("no factors".into()))
}

/// Loss and gradients of one discrete transition batch with its rows split into `shards`
/// slices trained concurrently (`train::shards`); each slice's loss is weighted by its share
/// of the real positions, so the sum is the whole batch's loss. Also returns the VALUE
/// logits of all rows (detached), for the due-node statistics.
pub fn sharded_transition_grads(model: &Recurrent, b: &GraphBatch, shards: usize) -> Result<(f64, GradStore, Tensor)> {
    let dev = model.params().device().clone();
    let n = shards.clamp(1, b.batch.max(1));
    let total: f64 = b.weights.iter().map(|&w| f64::from(w)).sum();
    let (value, grads, parts) = sharded_grads(model.params(), n, |i| {
        let part = b.rows(slice_range(b.batch, n, i));
        let w: f64 = part.weights.iter().map(|&w| f64::from(w)).sum();
        let logits = model.step(&part.input_tensor(&dev)?, &mut Hooks::none())?;
        let loss = if w > 0.0 { Some((factor_loss(&logits, &part.targets, &part.weights, &dev)? * (w / total))?) } else { None };
        Ok((loss, logits[VALUE_FACTOR].detach()))
    })?;
    Ok((value, grads, Tensor::cat(&parts, 0)?))
}

/// Host-side states after each step of `variant` from input `x: (batch, len, 4)`.
pub fn run_states(model: &Recurrent, variant: &Variant, e2e_loops: usize, x: &Tensor, steps: usize) -> Result<Vec<Vec<u32>>> {
    let mut hooks = Hooks::none();
    let states: Vec<Tensor> = match variant.method {
        Method::Discrete => model.iterate(x, Halt::Fixed(steps), &mut hooks)?,
        Method::Continuous => model
            .iterate_continuous_eval(x, steps, &mut hooks)?
            .iter()
            .map(|l| Recurrent::discretize(l))
            .collect::<Result<_>>()?,
        Method::FeedForward | Method::RecurrentE2e => {
            let loops = if variant.method == Method::FeedForward { 1 } else { e2e_loops };
            let logits = model.iterate_continuous_eval(x, loops, &mut hooks)?;
            vec![Recurrent::discretize(logits.last().expect("≥ 1 loop"))?]
        }
    };
    states.iter().map(|s| s.flatten_all()?.to_vec1::<u32>()).collect()
}

/// Fully-solved and per-node accuracy of one size N.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct SizeResult {
    pub n_nodes: usize,
    pub n_graphs: usize,
    pub mean_depth: f64,
    pub max_depth: usize,
    /// Steps of the official rule T = set max depth + `eval.extra_steps` (1 or the e2e loops
    /// for end-to-end models).
    pub steps: usize,
    /// Fully solved after `steps` steps (the official rule).
    pub solved: f64,
    /// RHS values correct after `steps` steps.
    pub node_acc: f64,
    /// The same split by node depth: entry d is the accuracy of the nodes of depth d
    /// (NaN where the set has none).
    pub node_acc_by_depth: Vec<f64>,
    /// Fully solved after step 1..=`steps_run` (accuracy vs iterations; recurrent methods run
    /// max(set max depth + extra + 5, 2 × set max depth) steps).
    pub solved_by_step: Vec<f64>,
    /// Fraction solved after exactly own depth + 1 steps (recurrent methods).
    pub solved_at_depth_plus_one: f64,
    /// `depth+k` mode: fully solved after own depth + `eval.extra_steps` steps.
    pub solved_depth_plus_k: f64,
    /// `until-fixed-point` mode, per graph: the state at the first step that leaves it
    /// unchanged (cap: the last step run); fully solved there.
    pub solved_fixed_point: f64,
    /// Fraction of graphs that reached a fixed point before the cap, and mean steps used.
    pub converged: f64,
    pub mean_fixed_point_steps: f64,
    /// One-step error correction (spec §7): one correct RHS value of the solved state set to
    /// a different value in 0..p−1, one step, repaired fraction (one injection per graph).
    pub recovery: Option<f64>,
}

/// Steps the recurrent evaluation runs for a set of max depth `d`.
pub fn eval_steps(d: usize, extra: usize) -> usize {
    (d + extra + 5).max(2 * d)
}

/// Evaluate `variant` on `set` (graphs of one size), `eval.batch` graphs per pass.
pub fn evaluate_set(model: &Recurrent, variant: &Variant, e2e_loops: usize, set: &[Encoded], eval: &EvalConfig, vocab: &Vocab) -> Result<SizeResult> {
    let depth = |e: &Encoded| e.rhs_depth.iter().copied().max().unwrap_or(0).max(0) as usize;
    let max_depth = set.iter().map(depth).max().unwrap_or(0);
    let recurrent = matches!(variant.method, Method::Discrete | Method::Continuous);
    let steps = if recurrent { (max_depth + eval.extra_steps).max(1) } else { 1 };
    let run = if recurrent { eval_steps(max_depth, eval.extra_steps) } else { 1 };
    let mut r = SizeResult { n_graphs: set.len(), max_depth, steps, solved_by_step: vec![0.0; run], ..Default::default() };
    let (mut nodes, mut nodes_ok) = (0usize, 0usize);
    let mut by_depth: Vec<(usize, usize)> = Vec::new();
    for chunk in set.chunks(eval.batch) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let b = final_batch(&refs, vocab);
        let states = run_states(model, variant, e2e_loops, &b.input_tensor(model.params().device())?, run)?;
        for (i, e) in chunk.iter().enumerate() {
            let row = |k: usize| i * b.len * 4 + k * 4;
            let solved = |s: &[u32]| (0..e.len()).all(|k| s[row(k)..row(k) + 4] == e.labels[k]);
            let ok: Vec<bool> = states.iter().map(|s| solved(s)).collect();
            for (t, &good) in ok.iter().enumerate() {
                if good {
                    r.solved_by_step[t] += 1.0;
                }
            }
            if recurrent {
                r.solved_at_depth_plus_one += f64::from(u8::from(ok[depth(e).min(run - 1)]));
                r.solved_depth_plus_k += f64::from(u8::from(ok[(depth(e) + eval.extra_steps).saturating_sub(1).min(run - 1)]));
                let same = |t: usize| (0..e.len()).all(|k| states[t][row(k)..row(k) + 4] == states[t - 1][row(k)..row(k) + 4]);
                let fixed = (1..run).find(|&t| same(t));
                let t_end = fixed.unwrap_or(run - 1);
                r.converged += f64::from(u8::from(fixed.is_some()));
                r.mean_fixed_point_steps += (t_end + 1) as f64;
                r.solved_fixed_point += f64::from(u8::from(ok[t_end]));
            } else {
                r.solved_depth_plus_k += f64::from(u8::from(ok[0]));
                r.solved_fixed_point += f64::from(u8::from(ok[0]));
                r.mean_fixed_point_steps += 1.0;
            }
            let last = &states[steps.min(states.len()) - 1];
            for k in (0..e.len()).filter(|&k| e.rhs_depth[k] >= 0) {
                let right = last[row(k) + VALUE_FACTOR] == e.labels[k][VALUE_FACTOR];
                nodes += 1;
                nodes_ok += usize::from(right);
                let d = e.rhs_depth[k] as usize;
                if by_depth.len() <= d {
                    by_depth.resize(d + 1, (0, 0));
                }
                by_depth[d].0 += usize::from(right);
                by_depth[d].1 += 1;
            }
            r.mean_depth += depth(e) as f64;
            r.n_nodes = e.rhs_depth.iter().filter(|&&d| d >= 0).count();
        }
    }
    let n = set.len().max(1) as f64;
    r.solved_by_step.iter_mut().for_each(|v| *v /= n);
    r.solved = r.solved_by_step[steps.min(run) - 1];
    for v in [&mut r.solved_at_depth_plus_one, &mut r.solved_depth_plus_k, &mut r.solved_fixed_point, &mut r.converged, &mut r.mean_fixed_point_steps, &mut r.mean_depth] {
        *v /= n;
    }
    r.node_acc = nodes_ok as f64 / nodes.max(1) as f64;
    r.node_acc_by_depth = by_depth.iter().map(|&(ok, n)| if n > 0 { ok as f64 / n as f64 } else { f64::NAN }).collect();
    Ok(r)
}

/// One-step error correction of a discrete model (spec §7): per graph, start from the
/// solved state Y, set one RHS value (uniform over the graph's nodes, seeded) to a different
/// value in 0..p−1, run one step and count the position repaired. Returns the repaired fraction.
pub fn recovery_rate(model: &Recurrent, set: &[Encoded], batch: usize, vocab: &Vocab, modulus: u32, seed: u64) -> Result<f64> {
    use rand::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut hit, mut total) = (0usize, 0usize);
    for chunk in set.chunks(batch) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let mut where_ = Vec::with_capacity(chunk.len());
        let inputs: Vec<Vec<Token>> = chunk
            .iter()
            .map(|e| {
                let mut s = e.labels.clone();
                let rhs: Vec<usize> = (0..e.len()).filter(|&k| e.rhs_depth[k] >= 0).collect();
                let k = rhs[rng.random_range(0..rhs.len())];
                let right = e.labels[k][VALUE_FACTOR];
                let wrong = (right + rng.random_range(1..modulus)) % modulus;
                s[k][VALUE_FACTOR] = wrong;
                where_.push((k, right));
                s
            })
            .collect();
        let b = GraphBatch::new(&refs, vocab, |i| (inputs[i].clone(), chunk[i].labels.clone(), 0));
        let next = Recurrent::discretize(&model.step(&b.input_tensor(model.params().device())?, &mut Hooks::none())?)?;
        let next: Vec<u32> = next.flatten_all()?.to_vec1()?;
        for (i, &(k, right)) in where_.iter().enumerate() {
            total += 1;
            hit += usize::from(next[i * b.len * 4 + k * 4 + VALUE_FACTOR] == right);
        }
    }
    Ok(hit as f64 / total.max(1) as f64)
}

/// `n` encoded graphs of `cfg`, drawn from `seed`.
pub fn graph_set(cfg: &CompGraphConfig, n: usize, seed: u64) -> Vec<Encoded> {
    use rand::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vocab = cfg.vocab();
    (0..n).map(|_| encode(&sample_problem(cfg, &mut rng), &vocab).expect("generated graphs fit their vocabulary")).collect()
}

/// A validation score: fully solved, node accuracy, at a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct ValScore {
    pub step: u64,
    pub val_solved: f64,
    pub val_node_acc: f64,
}

impl ValScore {
    /// At least as good as `other` (fully solved, then node accuracy; equal counts, so the
    /// later of two equal scores wins).
    fn at_least(&self, other: &ValScore) -> bool {
        (self.val_solved, self.val_node_acc) >= (other.val_solved, other.val_node_acc)
    }
}

/// The weights with the best validation score so far, on disk (`dir/model.safetensors`,
/// `dir/best.json`) so that a resumed run continues the same selection.
pub struct BestWeights {
    pub dir: std::path::PathBuf,
    pub score: Option<ValScore>,
}

impl BestWeights {
    /// Open `dir`; `fresh` forgets what an earlier run left there.
    pub fn open(dir: &std::path::Path, fresh: bool) -> std::io::Result<Self> {
        if fresh && dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        let score = std::fs::read_to_string(dir.join("best.json")).ok().and_then(|s| serde_json::from_str(&s).ok());
        Ok(Self { dir: dir.to_path_buf(), score })
    }

    /// Keep `params` if `score` is at least as good as the best so far.
    pub fn offer(&mut self, score: ValScore, params: &crate::nn::Params) -> Result<()> {
        if self.score.is_some_and(|best| !score.at_least(&best)) {
            return Ok(());
        }
        let fail = |e: std::io::Error| candle_core::Error::Msg(format!("{}: {e}", self.dir.display()));
        std::fs::create_dir_all(&self.dir).map_err(fail)?;
        let tensors: std::collections::HashMap<String, Tensor> = params.all_tensors().into_iter().collect();
        let tmp = self.dir.join(".model.safetensors.tmp");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("model.safetensors")).map_err(fail)?;
        let json = serde_json::to_string_pretty(&score).expect("score serialises");
        crate::util::fsx::write_atomic(&self.dir.join("best.json"), json.as_bytes()).map_err(fail)?;
        self.score = Some(score);
        Ok(())
    }

    /// Load the kept weights into `params`; their score, or None if nothing was kept.
    pub fn load_into(&self, params: &crate::nn::Params) -> Result<Option<ValScore>> {
        let Some(score) = self.score else { return Ok(None) };
        params
            .load_safetensors(&self.dir.join("model.safetensors"))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(Some(score))
    }
}

/// The training task of one variant.
pub struct RecursiveTask {
    pub model: Recurrent,
    pub variant: Variant,
    pub data: CompGraphConfig,
    pub batch_size: usize,
    pub corruption: CorruptionConfig,
    pub e2e_loops: usize,
    pub eval: EvalConfig,
    /// In-distribution graphs scored at every evaluation.
    pub val: Vec<Encoded>,
    /// Due-node accuracy since the last evaluation (discrete method).
    pub due: DueStats,
    /// Print a diagnostics line at every evaluation.
    pub verbose: bool,
    /// Batch slices computed concurrently in discrete training (`TrainConfig::shards`).
    pub shards: usize,
    /// Train on every transition of every graph instead of one sampled transition.
    pub all_transitions: bool,
    /// The curriculum (stage graphs; measured stage ends).
    pub stages: Schedule,
    /// The regular evaluation period (`train.eval_every`): only those evaluations close the
    /// due-node window and may end a measured stage; the extra one at a run's last step
    /// reports without either, so a run cut short and resumed trains as an uninterrupted one.
    pub eval_every: u64,
    /// Where every evaluation offers its weights (`eval.select_best`).
    pub best: Option<BestWeights>,
}

/// One-step VALUE accuracy at the nodes due in each row (depth == t), by parent count
/// (0 leaf, 1 copy, 2, 3), accumulated between evaluations, and the plateau loss.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct DueStats {
    pub hit: [f64; 4],
    pub count: [f64; 4],
    /// Σ over steps of the batch's plateau loss and of its training loss.
    pub plateau_sum: f64,
    pub loss_sum: f64,
    pub steps: f64,
    /// Copies split by where the parent is defined: [previous equation, farther back].
    pub copy_hit: [f64; 2],
    pub copy_count: [f64; 2],
}

impl DueStats {
    /// Score one batch's VALUE logits; returns (per-parent-count accuracy, plateau loss).
    /// The plateau loss is that of a model exact everywhere except the due internal nodes,
    /// where it is uniform over the p values: n_due_internal · ln p / n_real positions.
    pub fn add(&mut self, value_logits: &Tensor, b: &GraphBatch, modulus: usize) -> Result<([Option<f64>; 4], f64)> {
        let pred: Vec<u32> = value_logits.argmax(candle_core::D::Minus1)?.flatten_all()?.to_vec1()?;
        let (mut hit, mut cnt) = ([0.0f64; 4], [0.0f64; 4]);
        for (i, &p) in pred.iter().enumerate() {
            let t = b.step[i / b.len];
            if b.rhs_depth[i] >= 0 && b.rhs_depth[i] as usize == t {
                let k = (b.n_parents[i] as usize).min(3);
                cnt[k] += 1.0;
                hit[k] += f64::from(p == b.targets[i * 4 + VALUE_FACTOR]);
            }
        }
        // Copies: is the parent's defining RHS token the previous equation's (4 positions back:
        // `… = x_a <EQ_SEP> x_a = x_v`)? A purely positional shortcut solves only those.
        for (i, &p) in pred.iter().enumerate() {
            let (row, k) = (i / b.len, i % b.len);
            if b.rhs_depth[i] < 0 || b.rhs_depth[i] as usize != b.step[row] || b.n_parents[i] != 1 || k < 2 {
                continue;
            }
            let base = row * b.len;
            let parent = b.inputs[(base + k - 2) * 4 + 1];
            let def = (0..k).rev().find(|&j| b.rhs_depth[base + j] >= 0 && b.inputs[(base + j) * 4 + 1] == parent);
            if let Some(j) = def {
                let far = usize::from(k - j != 4);
                self.copy_count[far] += 1.0;
                self.copy_hit[far] += f64::from(p == b.targets[i * 4 + VALUE_FACTOR]);
            }
        }
        let real: f64 = b.weights.iter().map(|&w| f64::from(w)).sum();
        let plateau = (cnt[1] + cnt[2] + cnt[3]) * (modulus as f64).ln() / real.max(1.0);
        for k in 0..4 {
            self.hit[k] += hit[k];
            self.count[k] += cnt[k];
        }
        self.plateau_sum += plateau;
        self.steps += 1.0;
        let acc = std::array::from_fn(|k| (cnt[k] > 0.0).then(|| hit[k] / cnt[k]));
        Ok((acc, plateau))
    }

    /// Window means into `m` (`due_acc_parents{k}`, `plateau_loss`, `window_loss`), then reset.
    pub fn drain(&mut self, m: &mut Metrics) {
        self.peek(m);
        *self = Self::default();
    }

    /// Window means into `m`, the window kept open.
    pub fn peek(&self, m: &mut Metrics) {
        for k in 0..4 {
            if self.count[k] > 0.0 {
                m.insert(format!("window_due_acc_parents{k}"), self.hit[k] / self.count[k]);
            }
        }
        for (j, name) in ["window_copy_acc_prev_eq", "window_copy_acc_farther"].iter().enumerate() {
            if self.copy_count[j] > 0.0 {
                m.insert((*name).into(), self.copy_hit[j] / self.copy_count[j]);
            }
        }
        if self.steps > 0.0 {
            m.insert("window_plateau_loss".into(), self.plateau_sum / self.steps);
            m.insert("window_loss".into(), self.loss_sum / self.steps);
        }
    }
}

impl RecursiveTask {
    /// A training batch of graphs from the curriculum stage of `step`.
    fn draw_graphs(&self, step: u64, rng: &mut ChaCha8Rng) -> Vec<Encoded> {
        let vocab = self.data.vocab();
        let data = self.stages.data_at(step, &self.data);
        (0..self.batch_size).map(|_| encode(&sample_problem(data, rng), &vocab).expect("generated graphs fit their vocabulary")).collect()
    }

    /// The discrete transition batch of `graphs` (one sampled t per graph, or every t), with
    /// this step's error-correction coin; returns the batch and whether it was corrupted.
    fn transition_batch(&self, graphs: &[&Encoded], rng: &mut ChaCha8Rng) -> (GraphBatch, bool) {
        let corrupt = self.variant.error_correction && rng.random::<f64>() < self.corruption.batch_prob;
        let build = if self.all_transitions { all_transitions_batch } else { transition_batch };
        (build(graphs, &self.data.vocab(), rng, corrupt.then_some(&self.corruption)), corrupt)
    }

    /// Record the due-node statistics of a discrete transition batch `b` (VALUE logits of
    /// all its rows) and return the step's metrics.
    fn due_metrics(&mut self, value_logits: &Tensor, b: &GraphBatch, corrupt: bool, loss: f64) -> Result<Metrics> {
        let mut m = Metrics::new();
        let (acc, plateau) = self.due.add(value_logits, b, self.data.modulus as usize)?;
        for (k, a) in acc.iter().enumerate() {
            if let Some(a) = a {
                m.insert(format!("due_acc_parents{k}"), *a);
            }
        }
        m.insert("plateau_loss".into(), plateau);
        m.insert("corrupted".into(), f64::from(u8::from(corrupt)));
        self.due.loss_sum += loss;
        Ok(m)
    }
}

impl Task for RecursiveTask {
    fn params(&self) -> &Params {
        self.model.params()
    }

    fn state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "stage_ends": self.stages.ends(), "due": self.due }))
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> std::result::Result<(), String> {
        let ends: Vec<Option<u64>> = serde_json::from_value(state["stage_ends"].clone()).map_err(|e| format!("task_state.stage_ends: {e}"))?;
        self.stages.set_ends(&ends)?;
        self.due = serde_json::from_value(state["due"].clone()).map_err(|e| format!("task_state.due: {e}"))?;
        Ok(())
    }

    fn train_grads(&mut self, step: u64, rng: &mut ChaCha8Rng) -> Result<(f64, GradStore, Metrics)> {
        if self.shards <= 1 || self.variant.method != Method::Discrete {
            let (loss, m) = self.train_loss(step, rng)?;
            let (value, grads) = backprop(&loss)?;
            return Ok((value, grads, m));
        }
        // The discrete transition batch, drawn exactly as `train_loss` draws it, in slices
        // computed concurrently; each slice's loss is weighted by its share of the positions.
        let enc = self.draw_graphs(step, rng);
        let refs: Vec<&Encoded> = enc.iter().collect();
        let (b, corrupt) = self.transition_batch(&refs, rng);
        let (value, grads, value_logits) = sharded_transition_grads(&self.model, &b, self.shards)?;
        let m = self.due_metrics(&value_logits, &b, corrupt, value)?;
        Ok((value, grads, m))
    }

    fn train_loss(&mut self, step: u64, rng: &mut ChaCha8Rng) -> Result<(Tensor, Metrics)> {
        let vocab = self.data.vocab();
        let enc = self.draw_graphs(step, rng);
        let refs: Vec<&Encoded> = enc.iter().collect();
        let dev = self.model.params().device().clone();
        let mut m = Metrics::new();
        let loss = match self.variant.method {
            Method::Discrete => {
                let (b, corrupt) = self.transition_batch(&refs, rng);
                let logits = self.model.step(&b.input_tensor(&dev)?, &mut Hooks::none())?;
                let loss = factor_loss(&logits, &b.targets, &b.weights, &dev)?;
                m = self.due_metrics(&logits[VALUE_FACTOR], &b, corrupt, f64::from(loss.to_scalar::<f32>()?))?;
                loss
            }
            Method::Continuous => {
                let b = final_batch(&refs, &vocab);
                let d = enc.iter().flat_map(|e| e.rhs_depth.iter().copied()).max().unwrap_or(0).max(0) as usize;
                let logits = self.model.iterate_continuous(&b.input_tensor(&dev)?, d + 1, &mut Hooks::none())?;
                let mut total: Option<Tensor> = None;
                for (t, l) in logits.iter().enumerate() {
                    let tb = GraphBatch::new(&refs, &vocab, |i| (enc[i].tokens.clone(), enc[i].state(t + 1), t));
                    let lt = factor_loss(l, &tb.targets, &tb.weights, &dev)?;
                    total = Some(match total {
                        Some(s) => (s + lt)?,
                        None => lt,
                    });
                }
                (total.expect("≥ 1 step") / (d + 1) as f64)?
            }
            Method::FeedForward | Method::RecurrentE2e => {
                let loops = if self.variant.method == Method::FeedForward { 1 } else { self.e2e_loops };
                let b = final_batch(&refs, &vocab);
                let logits = self.model.iterate_continuous(&b.input_tensor(&dev)?, loops, &mut Hooks::none())?;
                factor_loss(logits.last().expect("≥ 1 loop"), &b.targets, &b.weights, &dev)?
            }
        };
        Ok((loss, m))
    }

    fn evaluate(&mut self, step: u64) -> Result<Metrics> {
        let r = evaluate_set(&self.model, &self.variant, self.e2e_loops, &self.val, &self.eval, &self.data.vocab())?;
        let mut m = Metrics::new();
        m.insert("val_solved".into(), r.solved);
        m.insert("val_node_acc".into(), r.node_acc);
        if let Some(best) = &mut self.best {
            best.offer(ValScore { step, val_solved: r.solved, val_node_acc: r.node_acc }, self.model.params())?;
        }
        let window = self.due.steps;
        let regular = self.eval_every > 0 && step.is_multiple_of(self.eval_every);
        if !regular {
            self.due.peek(&mut m);
        } else {
            self.due.drain(&mut m);
        }
        let acc = std::array::from_fn(|k| m.get(&format!("window_due_acc_parents{k}")).copied());
        if let Some(i) = if regular { self.stages.observe(step, &acc) } else { None } {
            m.insert("stage_end".into(), step as f64);
            if self.verbose {
                eprintln!("[{}] step {step}: curriculum stage {i} ends (due-node accuracy met)", self.variant.name);
            }
        }
        if self.verbose && window == 0.0 {
            eprintln!("[{}] step {step}: val solved {:.3}, node acc {:.3}", self.variant.name, r.solved, r.node_acc);
        } else if self.verbose {
            let g = |k: &str| m.get(k).map_or("  –  ".to_string(), |v| format!("{v:.3}"));
            eprintln!(
                "[{}] step {step}: val solved {:.3}, node acc {:.3}; due-node value acc (last {window} steps) leaf {} copy {} (parent in previous equation {}, farther {}) 2-parent {} 3-parent {}; loss {} vs plateau {}",
                self.variant.name, r.solved, r.node_acc,
                g("window_due_acc_parents0"), g("window_due_acc_parents1"), g("window_copy_acc_prev_eq"), g("window_copy_acc_farther"),
                g("window_due_acc_parents2"), g("window_due_acc_parents3"),
                g("window_loss"), g("window_plateau_loss"),
            );
        }
        Ok(m)
    }
}
