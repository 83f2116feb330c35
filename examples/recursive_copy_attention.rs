//! Diagnostic for a recursive-study checkpoint: where the attention of a due node with P
//! parents goes (P = 1, "copy", by default). For each such node (teacher-forced state S_t,
//! t = its depth) it splits every head's attention from the node's RHS position over: each
//! parent's defining RHS position by operand slot (which holds the value to fetch), the
//! parents' other occurrences as operands elsewhere (which hold no value), the node's own
//! operand tokens, and everything else; and, per head, the attention from each own operand
//! token to its variable's defining RHS (the second route: operands fetch their values and
//! the RHS reads its operands). It separates a plateau (the fetch is unreliable) from a
//! model that fetches well. For sums (PARENTS ≥ 2) a wrong value is also checked against the
//! partial sums that leave one operand out (a model whose gather misses a slot says those).
//! LEAF_VALUES (e.g. 4) draws leaves from 0..LEAF_VALUES, like the small-sum curriculum stage.
//!
//!   cargo run --release --example recursive_copy_attention -- CHECKPOINT [N] [DEPTH_CAP] [PARENTS] [LEAF_VALUES]
use latentlab::data::compgraph::{CompGraphConfig, VALUE_FACTOR};
use latentlab::experiments::recursive::checkpoint::RecursiveRun;
use latentlab::experiments::recursive::task::{graph_set, transition_batch_at};
use latentlab::interp::{HookPoint, Hooks};
use rand::SeedableRng;

const VAR: usize = 1;

#[allow(clippy::needless_range_loop)] // k indexes several parallel arrays of the encoded graph
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: recursive_copy_attention CHECKPOINT [N] [DEPTH_CAP] [PARENTS]"))?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(12);
    let cap: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let n_par: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let leaf_values: Option<u32> = args.next().map(|s| s.parse()).transpose()?;
    let buckets = n_par + 3;
    let (run, model, _) = RecursiveRun::open(std::path::Path::new(&path))?.ok_or_else(|| anyhow::anyhow!("{path}: not a recursive checkpoint"))?;
    let cfg = CompGraphConfig { n_nodes: n, max_depth: cap, leaf_values: leaf_values.or(run.study.data.leaf_values), ..run.study.data.clone() };
    let vocab = cfg.vocab();
    let set = graph_set(&cfg, 128, 4242);
    let dev = model.params().device().clone();
    let n_layers = run.variant.n_layers;
    let max_d = set.iter().flat_map(|e| e.rhs_depth.iter().copied()).max().unwrap_or(0).max(1) as usize;
    // [layer][head][bucket]: parent RHS by slot, parents as operands elsewhere, own operands, rest.
    let mut mass: Vec<Vec<Vec<f64>>> = Vec::new();
    // [layer][head]: attention from each own operand token to its variable's defining RHS
    // (the other route: operands fetch their values, the RHS reads its operands).
    let mut operand_fetch: Vec<Vec<f64>> = Vec::new();
    let (mut nodes, mut right) = (0usize, 0usize);
    // What the due nodes' predicted values are: EMPTY, one parent's value (by slot), the
    // right value, anything else; then (sums) the sum without slot s.
    let mut said = vec![0usize; n_par + 3];
    let mut partial = vec![0usize; n_par];
    // Wrong values by their offset from the truth (mod p), and accuracy with and without a
    // wrap past p in the unreduced sum.
    let mut offsets = vec![0usize; run.study.data.modulus as usize];
    let mut wrap = [(0usize, 0usize); 2];
    let empty = vocab.value_empty();
    // Mean P(EMPTY) and P(right value) at the due nodes; mean P(EMPTY) and count at the
    // nodes that become computable one step later.
    let mut due_p = (0.0f64, 0.0f64);
    let mut waiting = (0.0f64, 0usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for t in 1..=max_d {
        let refs: Vec<_> = set.iter().collect();
        let b = transition_batch_at(&refs, &vec![t; set.len()], &vocab, &mut rng, None);
        let points: Vec<HookPoint> = (0..n_layers).map(HookPoint::AttnPattern).collect();
        let mut hooks = Hooks::capture(points);
        let logits = model.step(&b.input_tensor(&dev)?, &mut hooks)?;
        let pred: Vec<Vec<u32>> = logits[VALUE_FACTOR].argmax(2)?.to_vec2()?;
        let probs: Vec<Vec<Vec<f32>>> = candle_nn::ops::softmax_last_dim(&logits[VALUE_FACTOR])?.to_vec3()?;
        // Not yet computable nodes with P parents (depth t + 1): P(EMPTY) should be high.
        for (i, e) in set.iter().enumerate() {
            for k in 0..e.len() {
                if e.rhs_depth[k] == t as i32 + 1 && e.n_parents[k] as usize == n_par {
                    waiting.0 += f64::from(probs[i][k][empty as usize]);
                    waiting.1 += 1;
                }
            }
        }
        for (i, e) in set.iter().enumerate() {
            for k in 0..e.len() {
                if e.rhs_depth[k] != t as i32 || e.n_parents[k] as usize != n_par {
                    continue;
                }
                // "x_a OP x_b = x_c": operand slot s sits at k − 2·(P − s).
                let own: Vec<usize> = (0..n_par).map(|s| k - 2 * (n_par - s)).collect();
                let names: Vec<u32> = own.iter().map(|&j| e.tokens[j][VAR]).collect();
                let defs: Vec<Option<usize>> = names.iter().map(|&v| (0..k).find(|&j| e.rhs_depth[j] >= 0 && e.tokens[j][VAR] == v)).collect();
                if defs.iter().any(Option::is_none) {
                    continue;
                }
                nodes += 1;
                let (guess, truth) = (pred[i][k], e.labels[k][VALUE_FACTOR]);
                right += usize::from(guess == truth);
                let parent_vals: Vec<u32> = defs.iter().map(|d| e.labels[d.expect("checked")][VALUE_FACTOR]).collect();
                let kind = if guess == truth {
                    n_par + 1
                } else if guess == empty {
                    n_par
                } else if let Some(s) = parent_vals.iter().position(|&v| v == guess) {
                    s
                } else {
                    let p = run.study.data.modulus;
                    let total: u32 = parent_vals.iter().sum();
                    if let Some(s) = (0..n_par).find(|&s| n_par >= 2 && (total - parent_vals[s]) % p == guess) {
                        partial[s] += 1;
                    }
                    n_par + 2
                };
                said[kind] += 1;
                let p = run.study.data.modulus;
                if guess != truth && guess != empty && guess < p {
                    offsets[((guess + p - truth) % p) as usize] += 1;
                }
                let w = usize::from(parent_vals.iter().sum::<u32>() >= p);
                wrap[w].0 += usize::from(guess == truth);
                wrap[w].1 += 1;
                due_p.0 += f64::from(probs[i][k][empty as usize]);
                due_p.1 += f64::from(probs[i][k][truth as usize]);
                for l in 0..n_layers {
                    // (batch, head, query, key)
                    let p = hooks.cache[&HookPoint::AttnPattern(l)].get(i)?.narrow(1, k, 1)?.squeeze(1)?.to_vec2::<f32>()?;
                    if mass.len() <= l {
                        mass.push(vec![vec![0.0; buckets]; p.len()]);
                        operand_fetch.push(vec![0.0; p.len()]);
                    }
                    let all = hooks.cache[&HookPoint::AttnPattern(l)].get(i)?;
                    for (&o, d) in own.iter().zip(&defs) {
                        let d = d.expect("checked");
                        let row = all.narrow(1, o, 1)?.squeeze(1)?.narrow(1, d, 1)?.squeeze(1)?.to_vec1::<f32>()?;
                        for (h, a) in row.iter().enumerate() {
                            operand_fetch[l][h] += *a as f64 / n_par as f64;
                        }
                    }
                    for (h, row) in p.iter().enumerate() {
                        for (j, &a) in row.iter().enumerate().take(k + 1) {
                            let bucket = if let Some(s) = defs.iter().position(|d| *d == Some(j)) {
                                s
                            } else if own.contains(&j) {
                                n_par + 1
                            } else if e.rhs_depth[j] < 0 && names.contains(&e.tokens[j][VAR]) {
                                n_par
                            } else {
                                n_par + 2
                            };
                            mass[l][h][bucket] += a as f64;
                        }
                    }
                }
            }
        }
    }
    println!("{path}: {nodes} due nodes with {n_par} parent(s), one-step value accuracy {:.3}", right as f64 / nodes.max(1) as f64);
    let f = |c: usize| format!("{:.3}", c as f64 / nodes.max(1) as f64);
    let by_slot: Vec<String> = (0..n_par).map(|s| format!("parent {s}'s value {}", f(said[s]))).collect();
    println!("predicted: {}; EMPTY {}; right {}; other {}", by_slot.join(", "), f(said[n_par]), f(said[n_par + 1]), f(said[n_par + 2]));
    if n_par >= 2 {
        let miss: Vec<String> = (0..n_par).map(|s| format!("without parent {s} {}", f(partial[s]))).collect();
        println!("  of which the sum of the other parents: {}", miss.join(", "));
        let mut top: Vec<(usize, usize)> = offsets.iter().copied().enumerate().filter(|&(_, c)| c > 0).collect();
        top.sort_by_key(|&(_, c)| std::cmp::Reverse(c));
        let top: Vec<String> = top.iter().take(6).map(|(o, c)| format!("+{o}: {}", f(*c))).collect();
        println!("  wrong values by offset from the truth (mod p): {}", top.join(", "));
        let acc = |(r, n): (usize, usize)| if n > 0 { format!("{:.3} of {n}", r as f64 / n as f64) } else { "–".into() };
        println!("  accuracy when the operands sum below p: {}; when the sum wraps past p: {}", acc(wrap[0]), acc(wrap[1]));
    }
    println!(
        "mean P(EMPTY) {:.3} and P(right) {:.3} at due nodes; mean P(EMPTY) {:.3} at {} nodes due one step later",
        due_p.0 / nodes.max(1) as f64,
        due_p.1 / nodes.max(1) as f64,
        waiting.0 / waiting.1.max(1) as f64,
        waiting.1
    );
    let slots: Vec<String> = (0..n_par).map(|s| format!("parent {s} RHS")).collect();
    println!("mean attention from the node's RHS position: {} | parents as operands elsewhere | own operands | rest", slots.join(" | "));
    for (l, heads) in mass.iter().enumerate() {
        for (h, m) in heads.iter().enumerate() {
            let cells: Vec<String> = m.iter().map(|x| format!("{:.3}", x / nodes.max(1) as f64)).collect();
            println!("  layer {l} head {h}: {}", cells.join(" | "));
        }
    }
    println!("mean attention from each own operand token to its variable's defining RHS (the operand fetches the value itself):");
    for (l, heads) in operand_fetch.iter().enumerate() {
        let cells: Vec<String> = heads.iter().map(|x| format!("{:.3}", x / nodes.max(1) as f64)).collect();
        println!("  layer {l}: {}", cells.join(" | "));
    }
    Ok(())
}
