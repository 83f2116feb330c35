//! Diagnostic for a recursive-study checkpoint: where the attention of a due single-parent
//! ("copy") node goes. For each due copy node (teacher-forced state S_t, t = its depth) it
//! splits every head's attention from the node's RHS position over: the parent's defining
//! RHS position (which holds the value to copy), the parent's other occurrences as an
//! operand (which hold no value), the node's own operand token, and everything else. It
//! separates the copy plateau (the fetch is unreliable) from a model that fetches well.
//!
//!   cargo run --release --example recursive_copy_attention -- CHECKPOINT [N] [DEPTH_CAP]
use latentlab::data::compgraph::{CompGraphConfig, VALUE_FACTOR};
use latentlab::experiments::recursive::checkpoint::RecursiveRun;
use latentlab::experiments::recursive::task::{graph_set, transition_batch_at};
use latentlab::interp::{HookPoint, Hooks};
use rand::SeedableRng;

const VAR: usize = 1;

#[allow(clippy::needless_range_loop)] // k indexes several parallel arrays of the encoded graph
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: recursive_copy_attention CHECKPOINT [N] [DEPTH_CAP]"))?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(12);
    let cap: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let (run, model, _) = RecursiveRun::open(std::path::Path::new(&path))?.ok_or_else(|| anyhow::anyhow!("{path}: not a recursive checkpoint"))?;
    let cfg = CompGraphConfig { n_nodes: n, max_depth: cap, ..run.study.data.clone() };
    let vocab = cfg.vocab();
    let set = graph_set(&cfg, 128, 4242);
    let dev = model.params().device().clone();
    let n_layers = run.variant.n_layers;
    let max_d = set.iter().flat_map(|e| e.rhs_depth.iter().copied()).max().unwrap_or(0).max(1) as usize;
    // [layer][head][bucket]: parent RHS, parent as operand elsewhere, own operand, rest.
    let mut mass: Vec<Vec<[f64; 4]>> = Vec::new();
    let (mut nodes, mut right) = (0usize, 0usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for t in 1..=max_d {
        let refs: Vec<_> = set.iter().collect();
        let b = transition_batch_at(&refs, &vec![t; set.len()], &vocab, &mut rng, None);
        let points: Vec<HookPoint> = (0..n_layers).map(HookPoint::AttnPattern).collect();
        let mut hooks = Hooks::capture(points);
        let logits = model.step(&b.input_tensor(&dev)?, &mut hooks)?;
        let pred: Vec<Vec<u32>> = logits[VALUE_FACTOR].argmax(2)?.to_vec2()?;
        for (i, e) in set.iter().enumerate() {
            for k in 0..e.len() {
                if e.rhs_depth[k] != t as i32 || e.n_parents[k] != 1 {
                    continue;
                }
                let name = e.tokens[k - 2][VAR];
                let def = (0..k).find(|&j| e.rhs_depth[j] >= 0 && e.tokens[j][VAR] == name);
                let Some(def) = def else { continue };
                nodes += 1;
                right += usize::from(pred[i][k] == e.labels[k][VALUE_FACTOR]);
                for l in 0..n_layers {
                    // (batch, head, query, key)
                    let p = hooks.cache[&HookPoint::AttnPattern(l)].get(i)?.narrow(1, k, 1)?.squeeze(1)?.to_vec2::<f32>()?;
                    if mass.len() <= l {
                        mass.push(vec![[0.0; 4]; p.len()]);
                    }
                    for (h, row) in p.iter().enumerate() {
                        for (j, &a) in row.iter().enumerate().take(k + 1) {
                            let bucket = if j == def {
                                0
                            } else if j == k - 2 {
                                2
                            } else if e.rhs_depth[j] < 0 && e.tokens[j][VAR] == name {
                                1
                            } else {
                                3
                            };
                            mass[l][h][bucket] += a as f64;
                        }
                    }
                }
            }
        }
    }
    println!("{path}: {nodes} due copy nodes, one-step value accuracy {:.3}", right as f64 / nodes.max(1) as f64);
    println!("mean attention from the node's RHS position: parent's RHS | parent as operand elsewhere | own operand | rest");
    for (l, heads) in mass.iter().enumerate() {
        for (h, m) in heads.iter().enumerate() {
            let f = |x: f64| x / nodes.max(1) as f64;
            println!("  layer {l} head {h}: {:.3} | {:.3} | {:.3} | {:.3}", f(m[0]), f(m[1]), f(m[2]), f(m[3]));
        }
    }
    Ok(())
}
