//! Mechanism analysis of a recurrent model on computation graphs (spec §8.2), one
//! forward step on controlled inputs:
//!
//! 1. **Controlled equation families.** A sampled graph in its fully solved teacher
//!    state, followed by `<EQ_SEP> v0 ADD v1 ADD v2 = r` (v_k defined variables,
//!    repeats allowed; r an unused name with VALUE EMPTY). Truth: Σ val(v_k) mod p.
//!    Each family varies exactly one of slot 0, 1, 2 or r.
//! 2. **Per-head RelVar** at the RHS query (`interp::heads`), per layer and family;
//!    a layer-1 head is a "slot-k head" when family k gives it its largest RelVar.
//!    Also entropies and the head × head cosine of attention distributions.
//! 3. **OV amplification** of each head inside the VARIABLE and VALUE embedding spans.
//! 4. **Routes**: each head's attention from the RHS query to the operand tokens, from
//!    the RHS query to the equations defining the operands, and from each operand token
//!    to its own definition. They tell the spec's circuit (layer 1 gathers the operand
//!    names at the RHS, layer 2 fetches their values) from the reverse order (layer 1
//!    fetches each operand's value at the operand, layer 2 gathers them by position).
//!    **Head ablation**: controlled-input accuracy with one head's output zeroed
//!    (`blocks.{l}.attn.hook_z`), for every head: which heads the answer needs.
//! 5. **MLP-1 contribution** ‖MLP₁‖ / ‖resid_mid‖ at the RHS position.
//! 6. **3-D DFT of MLP-2** (`interp::fourier`) over all (x, y, z) ∈ Z_p³ written as the
//!    values of three defined variables: pre-activations, post-ReLU, output and the
//!    VALUE logits.
//!
//! Layers are numbered from 1 in the results (spec wording); hooks are `blocks.{l−1}`.

use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::compgraph::{encode, sample_problem, syntax, CompGraphConfig, Op, Problem, Token, Vocab, VALUE_FACTOR};
use crate::interp::fourier::{summarize, FourierSummary};
use crate::interp::heads::{attention_entropy, head_outputs, ov_amplification, pattern_cosine, rel_var, relative_norm, route_mass, row_span_basis};
use crate::interp::{HookPoint, Hooks, Intervention};
use crate::models::Recurrent;

/// What the analysis samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisConfig {
    /// Graphs used as contexts (families are built on each; default 4).
    pub contexts: usize,
    /// Inputs per family and context (default 24).
    pub family_size: usize,
    /// Run the Z_p³ sweep of MLP-2 (p³ forward sequences; default true).
    pub fourier: bool,
    pub seed: u64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self { contexts: 4, family_size: 24, fourier: true, seed: 0 }
    }
}

/// The four controlled families.
pub const FAMILIES: [&str; 4] = ["slot0", "slot1", "slot2", "rhs"];

/// The attention routes measured in every layer (`LayerAnalysis::routes` order): RHS
/// query → operand token k, RHS query → the RHS position defining operand k, operand
/// token k → its own definition.
pub const ROUTES: [&str; 9] = ["rhs→v0", "rhs→v1", "rhs→v2", "rhs→def(v0)", "rhs→def(v1)", "rhs→def(v2)", "v0→def(v0)", "v1→def(v1)", "v2→def(v2)"];

/// The three kinds of route, three slots each, in `ROUTES` order.
pub const ROUTE_KINDS: [&str; 3] = ["RHS→operand", "RHS→definition", "operand→definition"];

/// One analysed layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerAnalysis {
    /// 1-based layer number.
    pub layer: usize,
    /// RelVar per family (FAMILIES order), per head, averaged over contexts.
    pub rel_var: Vec<Vec<f64>>,
    /// For each head, the family (index into FAMILIES) with its largest RelVar.
    pub head_family: Vec<usize>,
    /// Mean attention entropy per head at the RHS query (nats).
    pub entropy: Vec<f64>,
    /// Head × head cosine of attention distributions at the RHS query.
    pub head_cosine: Vec<Vec<f64>>,
    /// ‖P_f OV_h P_f‖₂ per head for f = VARIABLE and VALUE.
    pub amp_variable: Vec<f64>,
    pub amp_value: Vec<f64>,
    /// Attention weight per route (ROUTES order), per head, averaged over every input.
    pub routes: Vec<Vec<f64>>,
    /// Controlled-input accuracy (all families) with each head's output zeroed.
    pub ablated_acc: Vec<f64>,
}

/// Everything the analysis measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MechanismReport {
    /// VALUE argmax = truth at the RHS position, over all controlled inputs.
    pub controlled_acc: f64,
    /// The same per family.
    pub family_acc: Vec<f64>,
    pub layers: Vec<LayerAnalysis>,
    /// Mean ‖MLP₁(x)‖ / ‖resid_mid₁‖ at the RHS position.
    pub mlp1_relative: f64,
    /// (site, summary) for MLP-2 pre, post, out and the VALUE logits.
    pub fourier: Vec<(String, FourierSummary)>,
}

impl MechanismReport {
    /// Slots 0–2 each with at least one layer-1 head whose RelVar peaks on that slot's family.
    pub fn slots_with_heads(&self) -> [bool; 3] {
        self.layers.first().map_or([false; 3], |l1| l1.slot_heads().map(|hs| !hs.is_empty()))
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}

impl LayerAnalysis {
    pub fn median_amp(&self) -> (f64, f64) {
        (median(&self.amp_variable), median(&self.amp_value))
    }

    /// For slots 0–2, the heads whose RelVar peaks on that slot's family.
    pub fn slot_heads(&self) -> [Vec<usize>; 3] {
        let mut out: [Vec<usize>; 3] = Default::default();
        for (h, &f) in self.head_family.iter().enumerate() {
            if f < 3 {
                out[f].push(h);
            }
        }
        out
    }

    /// Per route kind (`ROUTE_KINDS`): the strongest head's weight on each slot's route,
    /// averaged over the three slots (1 = for every slot some head puts all its weight there).
    pub fn route_summary(&self) -> [f64; 3] {
        let best = |r: usize| self.routes.get(r).map_or(0.0, |hs| hs.iter().copied().fold(0.0, f64::max));
        [0, 1, 2].map(|kind| (0..3).map(|k| best(kind * 3 + k)).sum::<f64>() / 3.0)
    }
}

/// `slot k: [heads]` for the three slots of one layer.
pub fn format_slot_heads(l: &LayerAnalysis) -> String {
    let groups = l.slot_heads();
    groups
        .iter()
        .enumerate()
        .map(|(k, hs)| format!("slot {k}: [{}]", hs.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `RHS→operand 0.12, RHS→definition 0.05, operand→definition 0.95` for one layer.
pub fn format_routes(l: &LayerAnalysis) -> String {
    ROUTE_KINDS.iter().zip(l.route_summary()).map(|(k, v)| format!("{k} {v:.2}")).collect::<Vec<_>>().join(", ")
}

/// A context graph in its solved state with the names it defines and their values.
struct Context {
    state: Vec<Token>,
    defined: Vec<(u32, u32)>,
    unused: Vec<u32>,
    /// RHS position of each defined variable.
    rhs_pos: Vec<(u32, usize)>,
}

fn context(problem: &Problem, vocab: &Vocab) -> Result<Context> {
    let enc = encode(problem, vocab).map_err(candle_core::Error::Msg)?;
    let state = enc.state(problem.depth() as usize + 1);
    let defined: Vec<(u32, u32)> = problem.equations.iter().map(|e| (e.var, e.value)).collect();
    let unused = (0..vocab.name_pool as u32).filter(|v| !defined.iter().any(|(d, _)| d == v)).collect();
    let rhs_pos = enc
        .rhs_depth
        .iter()
        .enumerate()
        .filter(|(_, d)| **d >= 0)
        .map(|(i, _)| (enc.tokens[i][1], i))
        .collect();
    Ok(Context { state, defined, unused, rhs_pos })
}

/// `<EQ_SEP> v0 ADD v1 ADD v2 = r` appended to `state`.
fn controlled(state: &[Token], vocab: &Vocab, vars: [u32; 3], r: u32) -> Result<Vec<Token>> {
    let add = vocab.op_id(Op::Add).ok_or_else(|| candle_core::Error::Msg("the analysis needs ADD in the vocabulary".into()))?;
    let (na_var, na_op, na_val) = (vocab.var_na(), vocab.op_na(), vocab.value_na());
    let var = |v: u32| [syntax::VARIABLE, v, na_op, vocab.value_empty()];
    let mut s = state.to_vec();
    s.push([syntax::EQ_SEP, na_var, na_op, na_val]);
    for (k, &v) in vars.iter().enumerate() {
        if k > 0 {
            s.push([syntax::OPERATION, na_var, add, na_val]);
        }
        s.push(var(v));
    }
    s.push([syntax::EQ, na_var, na_op, na_val]);
    s.push(var(r));
    Ok(s)
}

fn batch_tensor(seqs: &[Vec<Token>], model: &Recurrent) -> Result<Tensor> {
    let (b, t) = (seqs.len(), seqs[0].len());
    let flat: Vec<u32> = seqs.iter().flat_map(|s| s.iter().flat_map(|tok| tok.iter().copied())).collect();
    Tensor::from_vec(flat, (b, t, 4), model.params().device())
}

/// Hooks of one analysed forward step.
fn points(n_layers: usize) -> Vec<HookPoint> {
    let mut p = Vec::new();
    for l in 0..n_layers {
        p.extend([HookPoint::AttnPattern(l), HookPoint::AttnV(l)]);
    }
    p.extend([HookPoint::MlpOut(0), HookPoint::ResidMid(0)]);
    p
}

/// Run the analysis on `model` (trained on graphs of `data`).
pub fn analyze(model: &Recurrent, data: &CompGraphConfig, cfg: &AnalysisConfig) -> Result<MechanismReport> {
    let vocab = data.vocab();
    let p = vocab.modulus;
    let n_layers = model.cfg.n_layers;
    let params = model.params();
    let weight = |name: String| params.get(&name).ok_or_else(|| candle_core::Error::Msg(format!("model has no `{name}`")));
    let n_heads = model.cfg.n_heads;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);

    let mut rv_sum = vec![vec![vec![0f64; n_heads]; FAMILIES.len()]; n_layers];
    let mut ent_sum = vec![vec![0f64; n_heads]; n_layers];
    let mut cos_sum = vec![vec![vec![0f64; n_heads]; n_heads]; n_layers];
    let mut route_sum = vec![vec![vec![0f64; n_heads]; ROUTES.len()]; n_layers];
    let mut ablated_hits = vec![vec![0usize; n_heads]; n_layers];
    let (mut hits, mut total) = (vec![0usize; FAMILIES.len()], vec![0usize; FAMILIES.len()]);
    let mut mlp1 = Vec::new();
    let mut n_ctx = 0usize;
    let mut first_ctx = None;
    let mut attempts = 0;
    while n_ctx < cfg.contexts {
        attempts += 1;
        if attempts > 100 * cfg.contexts.max(1) {
            candle_core::bail!("could not sample graphs with ≥ 3 variables and an unused name");
        }
        let problem = sample_problem(data, &mut rng);
        let ctx = context(&problem, &vocab)?;
        if ctx.defined.len() < 3 || ctx.unused.is_empty() {
            continue;
        }
        let pick = |rng: &mut ChaCha8Rng| ctx.defined[rng.random_range(0..ctx.defined.len())];
        let base = [pick(&mut rng), pick(&mut rng), pick(&mut rng)];
        let base_r = ctx.unused[rng.random_range(0..ctx.unused.len())];
        for (fi, _) in FAMILIES.iter().enumerate() {
            let mut seqs = Vec::new();
            let mut truth = Vec::new();
            let mut row_vars = Vec::new();
            for _ in 0..cfg.family_size {
                let mut vars = base;
                let mut r = base_r;
                if fi < 3 {
                    vars[fi] = pick(&mut rng);
                } else {
                    r = ctx.unused[rng.random_range(0..ctx.unused.len())];
                }
                seqs.push(controlled(&ctx.state, &vocab, vars.map(|(v, _)| v), r)?);
                truth.push(vars.iter().map(|(_, x)| x).sum::<u32>() % p);
                row_vars.push(vars.map(|(v, _)| v));
            }
            let x = batch_tensor(&seqs, model)?;
            let q = seqs[0].len() - 1;
            let routes = routes_of(&ctx, &row_vars, q)?;
            let mut hooks = Hooks::capture(points(n_layers));
            let logits = model.step(&x, &mut hooks)?;
            let correct = |logits: &[Tensor]| -> Result<usize> {
                let pred: Vec<u32> = logits[VALUE_FACTOR].narrow(1, q, 1)?.squeeze(1)?.argmax(1)?.to_vec1()?;
                Ok(pred.iter().zip(&truth).filter(|(a, b)| a == b).count())
            };
            hits[fi] += correct(&logits)?;
            total[fi] += truth.len();
            for (l, row) in ablated_hits.iter_mut().enumerate() {
                for (h, n) in row.iter_mut().enumerate() {
                    let mut ablate = Hooks::none().intervene(HookPoint::AttnZ(l), Intervention::on_heads([h], Intervention::Zero));
                    *n += correct(&model.step(&x, &mut ablate)?)?;
                }
            }
            for l in 0..n_layers {
                let pattern = &hooks.cache[&HookPoint::AttnPattern(l)];
                let w_o = weight(format!("blocks.{l}.attn.out_proj.weight"))?;
                let outs = head_outputs(pattern, &hooks.cache[&HookPoint::AttnV(l)], &w_o, q)?;
                for (h, v) in rel_var(&outs).into_iter().enumerate() {
                    rv_sum[l][fi][h] += v;
                }
                for (acc, m) in route_sum[l].iter_mut().zip(route_mass(pattern, &routes)?) {
                    for (a, v) in acc.iter_mut().zip(m) {
                        *a += v / FAMILIES.len() as f64;
                    }
                }
                if fi == 0 {
                    for (h, e) in attention_entropy(pattern, q)?.into_iter().enumerate() {
                        ent_sum[l][h] += e;
                    }
                    for (i, row) in pattern_cosine(pattern, q)?.into_iter().enumerate() {
                        for (j, c) in row.into_iter().enumerate() {
                            cos_sum[l][i][j] += c;
                        }
                    }
                }
            }
            let at_q = |t: &Tensor| t.narrow(1, q, 1);
            mlp1.push(relative_norm(&at_q(&hooks.cache[&HookPoint::MlpOut(0)])?, &at_q(&hooks.cache[&HookPoint::ResidMid(0)])?)?);
        }
        if first_ctx.is_none() {
            first_ctx = Some(ctx);
        }
        n_ctx += 1;
    }

    let nc = n_ctx.max(1) as f64;
    let embed_basis = |f: usize| -> Result<Vec<Vec<f64>>> { row_span_basis(&weight(format!("embed.{f}.weight"))?, 1e-6) };
    let (var_basis, val_basis) = (embed_basis(1)?, embed_basis(VALUE_FACTOR)?);
    let mut layers = Vec::new();
    for l in 0..n_layers {
        let rel_var: Vec<Vec<f64>> = rv_sum[l].iter().map(|r| r.iter().map(|x| x / nc).collect()).collect();
        let head_family = (0..n_heads)
            .map(|h| (0..FAMILIES.len()).max_by(|&a, &b| rel_var[a][h].total_cmp(&rel_var[b][h])).unwrap_or(0))
            .collect();
        let w_v = weight(format!("blocks.{l}.attn.v_proj.weight"))?;
        let w_o = weight(format!("blocks.{l}.attn.out_proj.weight"))?;
        layers.push(LayerAnalysis {
            layer: l + 1,
            rel_var,
            head_family,
            entropy: ent_sum[l].iter().map(|x| x / nc).collect(),
            head_cosine: cos_sum[l].iter().map(|r| r.iter().map(|x| x / nc).collect()).collect(),
            amp_variable: ov_amplification(&w_v, &w_o, n_heads, &var_basis)?,
            amp_value: ov_amplification(&w_v, &w_o, n_heads, &val_basis)?,
            routes: route_sum[l].iter().map(|r| r.iter().map(|x| x / nc).collect()).collect(),
            ablated_acc: ablated_hits[l].iter().map(|&n| n as f64 / total.iter().sum::<usize>().max(1) as f64).collect(),
        });
    }
    let family_acc: Vec<f64> = hits.iter().zip(&total).map(|(h, t)| *h as f64 / (*t).max(1) as f64).collect();
    let controlled_acc = hits.iter().sum::<usize>() as f64 / total.iter().sum::<usize>().max(1) as f64;
    let fourier = match (&first_ctx, cfg.fourier && n_layers >= 2) {
        (Some(ctx), true) => mlp2_fourier(model, &vocab, ctx, &mut rng)?,
        _ => Vec::new(),
    };
    Ok(MechanismReport { controlled_acc, family_acc, layers, mlp1_relative: mlp1.iter().sum::<f64>() / mlp1.len().max(1) as f64, fourier })
}

/// The (query, key) pairs of every route (ROUTES order) for each row of a family batch:
/// the operands of `<EQ_SEP> v0 ADD v1 ADD v2 = r` sit at q − 6, q − 4 and q − 2.
fn routes_of(ctx: &Context, row_vars: &[[u32; 3]], q: usize) -> Result<Vec<Vec<(usize, usize)>>> {
    let def = |v: u32| {
        ctx.rhs_pos.iter().find(|(name, _)| *name == v).map(|(_, pos)| *pos).ok_or_else(|| candle_core::Error::Msg(format!("variable {v} has no definition in the context")))
    };
    let operand = |k: usize| q - 6 + 2 * k;
    let mut routes = vec![Vec::with_capacity(row_vars.len()); ROUTES.len()];
    for vars in row_vars {
        for k in 0..3 {
            let d = def(vars[k])?;
            routes[k].push((q, operand(k)));
            routes[3 + k].push((q, d));
            routes[6 + k].push((operand(k), d));
        }
    }
    Ok(routes)
}

/// Sweep (x, y, z) ∈ Z_p³ as the values of three distinct defined variables and
/// Fourier-summarise MLP-2 (layer index 1) at the RHS query of `v0 ADD v1 ADD v2 = r`.
fn mlp2_fourier(model: &Recurrent, vocab: &Vocab, ctx: &Context, rng: &mut ChaCha8Rng) -> Result<Vec<(String, FourierSummary)>> {
    let p = vocab.modulus as usize;
    let mut names: Vec<(u32, usize)> = ctx.rhs_pos.clone();
    // Three distinct variables, chosen at random.
    for i in 0..3.min(names.len()) {
        let j = rng.random_range(i..names.len());
        names.swap(i, j);
    }
    if names.len() < 3 {
        candle_core::bail!("the Fourier sweep needs three defined variables");
    }
    let vars = [names[0].0, names[1].0, names[2].0];
    let base = controlled(&ctx.state, vocab, vars, ctx.unused[0])?;
    let q = base.len() - 1;
    let sites = [HookPoint::MlpPre(1), HookPoint::MlpPost(1), HookPoint::MlpOut(1)];
    let mut tables: Vec<Vec<Vec<f32>>> = Vec::new(); // [site][unit][xyz]
    let n = p * p * p;
    let chunk = 256;
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let seqs: Vec<Vec<Token>> = (start..end)
            .map(|i| {
                let mut s = base.clone();
                for (k, v) in [i / (p * p), (i / p) % p, i % p].into_iter().enumerate() {
                    s[names[k].1][VALUE_FACTOR] = v as u32;
                }
                s
            })
            .collect();
        let x = batch_tensor(&seqs, model)?;
        let mut hooks = Hooks::capture(sites.clone());
        let logits = model.step(&x, &mut hooks)?;
        let mut site_rows: Vec<Vec<f32>> = sites.iter().map(|s| hooks.cache[s].narrow(1, q, 1)?.flatten_from(1)?.flatten_all()?.to_vec1()).collect::<Result<_>>()?;
        let lv = logits[VALUE_FACTOR].narrow(1, q, 1)?.flatten_from(1)?.narrow(1, 0, p)?.contiguous()?;
        site_rows.push(lv.flatten_all()?.to_vec1()?);
        if tables.is_empty() {
            tables = site_rows.iter().map(|r| vec![vec![0f32; n]; r.len() / (end - start)]).collect();
        }
        for (s, rows) in site_rows.iter().enumerate() {
            let units = tables[s].len();
            for (bi, i) in (start..end).enumerate() {
                for u in 0..units {
                    tables[s][u][i] = rows[bi * units + u];
                }
            }
        }
    }
    let names = ["mlp2_pre", "mlp2_post", "mlp2_out", "value_logits"];
    Ok(names.iter().zip(&tables).map(|(n, t)| (n.to_string(), summarize(t, p))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::RecurrentConfig;
    use candle_core::Device;

    #[test]
    fn controlled_inputs_are_well_formed_and_the_analysis_runs() -> Result<()> {
        let data = CompGraphConfig { modulus: 5, n_nodes: 6, n_leaves: 3, max_depth: 2, name_pool: 12, ..Default::default() };
        let vocab = data.vocab();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let problem = sample_problem(&data, &mut rng);
        let ctx = context(&problem, &vocab)?;
        // Solved state: every RHS position carries its value.
        for (v, pos) in &ctx.rhs_pos {
            let val = problem.equations.iter().find(|e| e.var == *v).unwrap().value;
            assert_eq!(ctx.state[*pos][VALUE_FACTOR], val);
        }
        let (a, b) = (ctx.defined[0].0, ctx.defined[1].0);
        let s = controlled(&ctx.state, &vocab, [a, b, a], ctx.unused[0])?;
        let tail: Vec<u32> = s[ctx.state.len()..].iter().map(|t| t[0]).collect();
        assert_eq!(
            tail,
            vec![syntax::EQ_SEP, syntax::VARIABLE, syntax::OPERATION, syntax::VARIABLE, syntax::OPERATION, syntax::VARIABLE, syntax::EQ, syntax::VARIABLE]
        );
        assert_eq!(s.last().unwrap()[1], ctx.unused[0]);
        // Routes land on the operand tokens and on the RHS positions that define them.
        let q = s.len() - 1;
        let routes = routes_of(&ctx, &[[a, b, a]], q)?;
        for (k, v) in [a, b, a].into_iter().enumerate() {
            let (rq, op) = routes[k][0];
            assert_eq!((rq, s[op][0], s[op][1]), (q, syntax::VARIABLE, v));
            let (_, def) = routes[3 + k][0];
            assert_eq!(s[def][1], v);
            assert!(def < ctx.state.len() && s[def + 1][0] != syntax::OPERATION && s[def - 1][0] == syntax::EQ, "definition at {def}");
            assert_eq!(routes[6 + k][0], (op, def));
        }
        assert_eq!(s.last().unwrap()[VALUE_FACTOR], vocab.value_empty());

        let mcfg = RecurrentConfig { factor_sizes: vocab.sizes().to_vec(), d_model: 16, n_layers: 2, n_heads: 2, d_mlp: 32, ..Default::default() };
        let model = Recurrent::new(&mcfg, 0, &Device::Cpu)?;
        let r = analyze(&model, &data, &AnalysisConfig { contexts: 2, family_size: 6, fourier: true, seed: 3 })?;
        assert_eq!(r.layers.len(), 2);
        assert_eq!(r.layers[0].rel_var.len(), FAMILIES.len());
        assert!(r.layers.iter().all(|l| l.amp_variable.len() == 2 && l.amp_value.iter().all(|a| a.is_finite() && *a > 0.0)));
        for l in &r.layers {
            assert_eq!((l.routes.len(), l.routes[0].len()), (ROUTES.len(), 2));
            assert!(l.routes.iter().flatten().all(|m| (0.0..=1.0 + 1e-6).contains(m)), "{:?}", l.routes);
            // At initialisation nothing routes sharply.
            assert!(l.route_summary().iter().all(|s| *s < 0.5), "{:?}", l.route_summary());
            assert!(l.ablated_acc.len() == 2 && l.ablated_acc.iter().all(|a| (0.0..=1.0).contains(a)));
        }
        assert!((0.0..=1.0).contains(&r.controlled_acc) && r.mlp1_relative.is_finite());
        assert_eq!(r.fourier.len(), 4);
        for (site, f) in &r.fourier {
            let shares = f.constant + f.diagonal + f.other;
            assert!((shares - 1.0).abs() < 1e-6 || f.units == 0, "{site}: {f:?}");
            assert_eq!(f.pair_shares.len(), 2);
        }
        // Deterministic.
        let again = analyze(&model, &data, &AnalysisConfig { contexts: 2, family_size: 6, fourier: true, seed: 3 })?;
        assert_eq!(serde_json::to_string(&r).unwrap(), serde_json::to_string(&again).unwrap());
        Ok(())
    }
}
