//! `latentlab analyze`: capture activations at hook points into safetensors; for a
//! recursive-study checkpoint without `--hook`, the mechanism analysis of spec §8.2
//! (controlled families, RelVar, head cosines, OV amplification, MLP-1 contribution,
//! the Z_p³ DFT of MLP-2) with its figures; with `--head-scores`, per-head attention
//! scores on repeated random tokens for a checkpoint or a Hugging Face model folder; with
//! `--patch`, activation patching of a clean prompt into a corrupted one; with `--lens`,
//! the logit lens and direct logit attribution at one position of a prompt.

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
    /// Score every head on repeated random tokens (previous-token, duplicate-token,
    /// induction, first-token) and the loss on each half. CHECKPOINT may also be a Hugging
    /// Face model folder (config.json + *.safetensors). Writes head-scores.json and
    /// head-scores.html to --out (default <checkpoint>/analysis/, for a model folder
    /// runs/head-scores/<folder name>/).
    #[arg(long)]
    head_scores: bool,
    /// --head-scores: half length n of the `x₁…xₙ x₁…xₙ` sequences (default: 32, at most half
    /// the model's positions).
    #[arg(long)]
    half_len: Option<usize>,
    /// --head-scores: sequences (default 16).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// --head-scores: seed of the random tokens; --lens --ioi: seed of the prompts (default 0).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Activation patching: rerun the corrupted prompt with one activation (each `--hook`
    /// point, default every layer's hook_resid_pre and the last hook_resid_post, at each
    /// position) from the clean prompt; the metric is logit[answer] − logit[wrong] at the
    /// last position. Writes patching.json and patching.html.
    #[arg(long)]
    patch: bool,
    /// --patch: the clean prompt (text, with the folder's tokenizer.json) …
    #[arg(long)]
    clean: Option<String>,
    /// … and the corrupted one (same number of tokens).
    #[arg(long)]
    corrupt: Option<String>,
    /// --patch: the prompts as token ids instead, comma-separated.
    #[arg(long, value_delimiter = ',')]
    clean_ids: Vec<u32>,
    #[arg(long, value_delimiter = ',')]
    corrupt_ids: Vec<u32>,
    /// --patch / --lens: the answer the prompt should give (text of one token, e.g. " Mary") …
    #[arg(long)]
    answer: Option<String>,
    /// … and the competing one (e.g. " John").
    #[arg(long)]
    wrong: Option<String>,
    /// --patch / --lens: the two as token ids instead.
    #[arg(long)]
    answer_id: Option<u32>,
    #[arg(long)]
    wrong_id: Option<u32>,
    /// --patch: also patch each attention head's output (hook_z, all positions) on its own.
    #[arg(long)]
    per_head: bool,
    /// Logit lens and direct logit attribution at one position of a prompt (checkpoint or
    /// Hugging Face folder): the stream after the embeddings and after every block read
    /// through the model's final norm and unembedding (top tokens; the answer's
    /// probability and rank), and, with an answer, logit[answer] (− logit[wrong]) split
    /// over the embeddings and each layer's attention and MLP outputs (final norm's scale
    /// held fixed). Writes lens.json and lens.html.
    #[arg(long)]
    lens: bool,
    /// --lens: the prompt (text, with the folder's tokenizer.json) …
    #[arg(long)]
    prompt: Option<String>,
    /// … or its token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    ids: Vec<u32>,
    /// --lens: the position read (default: the last).
    #[arg(long)]
    pos: Option<usize>,
    /// --lens: tokens listed per depth (default 5).
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// --lens over a batch: the attribution averaged over N built-in IOI prompts (Wang et
    /// al. templates, seeded by --seed) of logit[indirect object] − logit[subject] at the
    /// last position — which heads move the name. Writes lens-batch.json and lens-batch.html.
    #[arg(long, value_name = "N")]
    ioi: Option<usize>,
    /// --lens over a batch: prompts from a JSONL file, one `{"prompt": ..., "answer": ...,
    /// "wrong": ...}` per line (`wrong` optional; answers are one token each).
    #[arg(long, value_name = "FILE")]
    probes: Option<PathBuf>,
}

/// One line of `--probes`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LensProbe {
    prompt: String,
    answer: String,
    #[serde(default)]
    wrong: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.head_scores {
        return head_scores(&args);
    }
    if args.patch {
        return patch(&args);
    }
    if args.lens {
        if args.ioi.is_some() || args.probes.is_some() {
            return with_lm(&args.checkpoint, "lens", |lm| lens_batch(&args, lm));
        }
        return with_lm(&args.checkpoint, "lens", |lm| lens_model(&args, lm));
    }
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

/// `--head-scores`: per-head scores on repeated random tokens (`interp::scores`).
fn head_scores(args: &Args) -> anyhow::Result<()> {
    use latentlab::interp::scores::{head_scores, HeadScores, SCORES};
    use latentlab::report::{heatmap, ChartSpec, Report};
    anyhow::ensure!(args.hooks.is_empty(), super::UsageError("--head-scores and --hook are separate analyses: give one".into()));
    anyhow::ensure!(args.batch > 0, super::UsageError("--batch must be ≥ 1".into()));
    anyhow::ensure!(args.half_len.is_none_or(|n| n >= 2), super::UsageError("--half-len must be ≥ 2".into()));
    let (scores, label, default_out) = with_lm(&args.checkpoint, "head-scores", |lm| {
        let n = match lm.max_len {
            Some(max) => {
                let n = args.half_len.unwrap_or(32.min(max / 2));
                anyhow::ensure!(2 * n <= max, super::UsageError(format!("--half-len {n}: the model takes at most {max} positions (n ≤ {})", max / 2)));
                n
            }
            None => args.half_len.unwrap_or(32),
        };
        Ok((head_scores(lm.model, lm.vocab, n, args.batch, args.seed, &latentlab::Device::Cpu)?, lm.label, lm.default_out))
    })?;
    let dir = args.out.clone().unwrap_or(default_out);
    std::fs::create_dir_all(&dir)?;
    println!("{} sequences of {} random tokens repeated once (seed {})", scores.batch, scores.n, scores.seed);
    if let (Some(a), Some(b)) = (scores.loss_first_half, scores.loss_second_half) {
        println!("loss: first half {a:.3} nats, second half {b:.3} nats");
    }
    for (name, table) in SCORES.iter().zip(scores.tables()) {
        let per_layer: Vec<String> = table.iter().enumerate().map(|(l, row)| {
            let (h, s) = row.iter().enumerate().fold((0, f64::MIN), |b, (h, &s)| if s > b.1 { (h, s) } else { b });
            format!("L{l} h{h} {s:.2}")
        }).collect();
        let best = HeadScores::best(table).map_or(String::new(), |(l, h, s)| format!("best L{l}.h{h} {s:.3}"));
        println!("{name:>15}: {best}; per layer {}", per_layer.join(", "));
    }
    latentlab::util::fsx::write_atomic(&dir.join("head-scores.json"), serde_json::to_string_pretty(&scores)?.as_bytes())?;
    let mut report = Report::new(format!("Head scores: {label}"));
    report.paragraph(format!(
        "{} sequences x₁…xₙ x₁…xₙ, n = {}, seed {}. Loss on the first half {}, on the second {} (nats).",
        scores.batch,
        scores.n,
        scores.seed,
        scores.loss_first_half.map_or("—".into(), |v| format!("{v:.3}")),
        scores.loss_second_half.map_or("—".into(), |v| format!("{v:.3}"))
    ));
    for (name, table) in SCORES.iter().zip(scores.tables()) {
        let layers: Vec<String> = (0..table.len()).map(|l| format!("L{l}")).collect();
        let heads: Vec<String> = (0..table.first().map_or(0, Vec::len)).map(|h| format!("h{h}")).collect();
        let spec = ChartSpec::new(&format!("{name} score per head"), "head", "layer");
        report.figure(format!("{name} score"), heatmap(&spec, table, &layers, &heads, Some((0.0, 1.0)))?);
    }
    report.write(&dir, "head-scores")?;
    println!("wrote {}", dir.display());
    Ok(())
}

/// `--patch`: activation patching (`interp::patching`) for a checkpoint or a Hugging Face folder.
fn patch(args: &Args) -> anyhow::Result<()> {
    with_lm(&args.checkpoint, "patching", |lm| patch_model(args, lm))
}

/// A language model opened for `--head-scores` / `--patch`.
struct Lm<'a> {
    model: &'a dyn LanguageModel,
    vocab: usize,
    /// The longest input (checkpoints with a positional table); None for rotary models.
    max_len: Option<usize>,
    tokenizer: Option<&'a latentlab::models::HfTokenizer>,
    label: String,
    /// `<checkpoint>/analysis/`, or `runs/<kind>/<folder name>/` for a Hugging Face folder.
    default_out: PathBuf,
}

/// Open `path` — a Hugging Face folder (config.json, optional tokenizer.json) or a GPT
/// checkpoint — and hand it to `f`.
fn with_lm<T>(path: &std::path::Path, kind: &str, f: impl FnOnce(Lm) -> anyhow::Result<T>) -> anyhow::Result<T> {
    if path.join("config.json").is_file() {
        let model = latentlab::models::Pretrained::load(path, &latentlab::Device::Cpu)?;
        let tok = if path.join("tokenizer.json").is_file() { Some(latentlab::models::HfTokenizer::load(path)?) } else { None };
        let name = path.file_name().map_or("model".into(), |s| s.to_string_lossy().into_owned());
        let default_out = PathBuf::from("runs").join(kind).join(&name);
        f(Lm { model: &model, vocab: model.vocab_size(), max_len: None, tokenizer: tok.as_ref(), label: name, default_out })
    } else {
        let (task, ck) = CheckpointTask::open(path)?;
        let cfg = &task.model().cfg;
        f(Lm { model: task.model(), vocab: cfg.vocab_size, max_len: Some(cfg.max_seq_len), tokenizer: None, label: ck.dir.display().to_string(), default_out: ck.dir.join("analysis") })
    }
}

fn usage(m: &str) -> anyhow::Error {
    anyhow::Error::new(super::UsageError(m.to_string()))
}

/// A prompt given as text (flag `text_flag`, through the tokenizer) or as ids (`ids_flag`).
fn text_or_ids(tokenizer: Option<&latentlab::models::HfTokenizer>, text: &Option<String>, ids: &[u32], [text_flag, ids_flag]: [&str; 2], mode: &str) -> anyhow::Result<Vec<u32>> {
    match (text, ids.is_empty()) {
        (Some(t), true) => match tokenizer {
            Some(tok) => Ok(tok.encode(t)?),
            None => Err(usage(&format!("{text_flag}: this model has no tokenizer.json; give {ids_flag}"))),
        },
        (None, false) => Ok(ids.to_vec()),
        _ => Err(usage(&format!("{mode} needs exactly one of {text_flag} and {ids_flag}"))),
    }
}

/// One token given as text (`--{what}`, which must encode to one token) or as an id
/// (`--{what}-id`); None when neither is given.
fn one_token(tokenizer: Option<&latentlab::models::HfTokenizer>, text: &Option<String>, id: Option<u32>, what: &str, mode: &str) -> anyhow::Result<Option<u32>> {
    match (text, id) {
        (Some(t), None) => {
            let tok = tokenizer.ok_or_else(|| usage(&format!("--{what}: this model has no tokenizer.json; give --{what}-id")))?;
            match tok.encode_plain(t)?.as_slice() {
                [one] => Ok(Some(*one)),
                ids => Err(usage(&format!("--{what} `{t}` is {} tokens, expected one (give --{what}-id)", ids.len()))),
            }
        }
        (None, Some(i)) => Ok(Some(i)),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(usage(&format!("{mode} takes one of --{what} and --{what}-id, not both"))),
    }
}

/// Token labels for tables: the tokenizer's text, or the ids.
fn token_label(tokenizer: Option<&latentlab::models::HfTokenizer>, id: u32) -> String {
    match tokenizer {
        Some(tok) => format!("{:?}", tok.decode(&[id]).unwrap_or_default()),
        None => id.to_string(),
    }
}

/// `--lens`: logit lens and direct logit attribution (`interp::lens`).
fn lens_model(args: &Args, lm: Lm) -> anyhow::Result<()> {
    use latentlab::interp::lens::{logit_attribution, logit_lens};
    use latentlab::report::{bar_chart, heatmap, line_chart, BarGroup, ChartSpec, Report, Series};
    let Lm { model, tokenizer, label, default_out, max_len, vocab } = lm;
    let ids = text_or_ids(tokenizer, &args.prompt, &args.ids, ["--prompt", "--ids"], "--lens")?;
    anyhow::ensure!(!ids.is_empty(), usage("--lens: the prompt has no tokens"));
    if let Some(max) = max_len.filter(|&m| ids.len() > m) {
        anyhow::bail!(usage(&format!("--lens: the prompt has {} tokens; the model takes at most {max}", ids.len())));
    }
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        anyhow::bail!(usage(&format!("--ids: token {bad} is outside the vocabulary ({vocab} tokens)")));
    }
    let pos = args.pos.unwrap_or(ids.len() - 1);
    anyhow::ensure!(pos < ids.len(), usage(&format!("--pos {pos} is outside the prompt ({} tokens, positions 0..{})", ids.len(), ids.len() - 1)));
    anyhow::ensure!(args.top_k > 0, usage("--top-k must be > 0"));
    let answer = one_token(tokenizer, &args.answer, args.answer_id, "answer", "--lens")?;
    let wrong = one_token(tokenizer, &args.wrong, args.wrong_id, "wrong", "--lens")?;
    for t in answer.iter().chain(&wrong) {
        anyhow::ensure!((*t as usize) < vocab, usage(&format!("--lens: token {t} is outside the vocabulary ({vocab} tokens)")));
    }
    anyhow::ensure!(answer.is_some() || wrong.is_none(), usage("--lens: --wrong needs --answer"));
    anyhow::ensure!(answer.is_none() || answer != wrong, usage("--lens: the answer and the wrong answer are the same token"));
    let tl = |id: u32| token_label(tokenizer, id);
    let lens = logit_lens(model, &ids, pos, answer, args.top_k)?;
    println!("logit lens at position {pos} (token {}):", tl(ids[pos]));
    for row in &lens.rows {
        let top: Vec<String> = row.top.iter().map(|(t, p)| format!("{} {p:.3}", tl(*t))).collect();
        let ans = row.answer.as_ref().map_or(String::new(), |a| format!("  | answer p {:.4}, rank {}", a.prob, a.rank));
        println!("{:>26}: {}{ans}", row.point, top.join(", "));
    }
    let attribution = match answer {
        Some(a) => {
            let r = logit_attribution(model, &ids, pos, a, wrong)?;
            let what = match wrong {
                Some(w) => format!("logit[{}] − logit[{}]", tl(a), tl(w)),
                None => format!("logit[{}]", tl(a)),
            };
            println!("direct logit attribution of {what} = {:.4} at position {pos}:", r.target);
            for p in &r.parts {
                println!("{:>26}: {:+.4}", p.name, p.logit);
            }
            for (l, row) in r.heads.iter().enumerate() {
                let cells: Vec<String> = row.iter().map(|x| format!("{x:+.3}")).collect();
                println!("{:>26}: {} (output bias {:+.3})", format!("L{l} attn by head"), cells.join(" "), r.attn_bias[l]);
            }
            println!("{:>26}: {:+.4}", "bias (norm β, unembed)", r.bias);
            println!("{:>26}: {:+.2e}", "unexplained", r.unexplained);
            Some((r, what))
        }
        None => None,
    };
    let dir = args.out.clone().unwrap_or(default_out);
    let json = serde_json::json!({
        "tokens": ids.iter().map(|&t| tl(t)).collect::<Vec<_>>(),
        "ids": ids,
        "pos": pos,
        "lens": lens,
        "attribution": attribution.as_ref().map(|(r, _)| r),
    });
    latentlab::util::fsx::write_atomic(&dir.join("lens.json"), serde_json::to_string_pretty(&json)?.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.join("lens.json").display()))?;
    let mut report = Report::new(format!("Logit lens: {label}"));
    report.paragraph(format!("Position {pos} (token {}) of a {}-token prompt.", tl(ids[pos]), ids.len()));
    let rows: Vec<Vec<String>> = lens
        .rows
        .iter()
        .map(|r| {
            let top = r.top.iter().map(|(t, p)| format!("{} {p:.3}", tl(*t))).collect::<Vec<_>>().join(", ");
            let ans = r.answer.as_ref().map_or("—".into(), |a| format!("{:.4} (rank {})", a.prob, a.rank));
            vec![r.point.clone(), top, ans]
        })
        .collect();
    report.table(&["depth", "top tokens", "answer p"], rows);
    if answer.is_some() {
        let probs: Vec<f64> = lens.rows.iter().map(|r| r.answer.as_ref().map_or(f64::NAN, |a| a.prob)).collect();
        let spec = ChartSpec::new("answer probability by depth (0 = embeddings, l = after block l − 1)", "depth", "P(answer)");
        report.figure("Answer probability by depth", line_chart(&spec, &[Series::from_values("P(answer)", &probs)])?);
    }
    if let Some((r, what)) = &attribution {
        let labels: Vec<String> = r.parts.iter().map(|p| p.name.clone()).collect();
        let values: Vec<f64> = r.parts.iter().map(|p| p.logit).collect();
        let spec = ChartSpec::new(&format!("direct logit attribution of {what} (total {:.3})", r.target), "part of the stream", "logit");
        report.figure("Direct logit attribution", bar_chart(&spec, &labels, &[BarGroup { name: what.clone(), values }])?);
        if !r.heads.is_empty() {
            let layers: Vec<String> = (0..r.heads.len()).map(|l| format!("L{l}")).collect();
            let heads: Vec<String> = (0..r.heads[0].len()).map(|h| format!("h{h}")).collect();
            let spec = ChartSpec::new(&format!("direct logit attribution of {what} per attention head"), "head", "layer");
            report.figure("Direct logit attribution per head", heatmap(&spec, &r.heads, &layers, &heads, None)?);
        }
    }
    report.write(&dir, "lens")?;
    println!("wrote {}", dir.display());
    Ok(())
}

/// `--lens --ioi N` / `--lens --probes FILE`: direct logit attribution averaged over prompts.
fn lens_batch(args: &Args, lm: Lm) -> anyhow::Result<()> {
    use latentlab::interp::lens::{mean_attribution, LensExample};
    use latentlab::report::{bar_chart, heatmap, BarGroup, ChartSpec, Report};
    let Lm { model, tokenizer, label, default_out, max_len, vocab } = lm;
    anyhow::ensure!(args.ioi.is_none() || args.probes.is_none(), usage("--lens takes one of --ioi and --probes"));
    anyhow::ensure!(
        args.prompt.is_none() && args.ids.is_empty() && args.answer.is_none() && args.answer_id.is_none() && args.wrong.is_none() && args.wrong_id.is_none() && args.pos.is_none(),
        usage("--lens --ioi/--probes reads its prompts and answers from there (no --prompt, --ids, --answer, --wrong or --pos)")
    );
    let tok = tokenizer.ok_or_else(|| usage("--lens --ioi/--probes needs a Hugging Face folder with tokenizer.json"))?;
    let (source, probes): (String, Vec<LensProbe>) = match (args.ioi, &args.probes) {
        (Some(n), _) => {
            anyhow::ensure!(n > 0, usage("--ioi must be > 0"));
            let p = latentlab::experiments::laser::probes::ioi_probes(n, args.seed);
            (format!("built-in IOI, seed {}", args.seed), p.into_iter().map(|p| LensProbe { prompt: p.prompt, answer: p.answer, wrong: p.distractor }).collect())
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let p: LensProbe = serde_json::from_str(line).map_err(|e| {
                    usage(&format!("{}:{}: expected {{\"prompt\": ..., \"answer\": ..., \"wrong\": ...}}: {e}", path.display(), i + 1))
                })?;
                out.push(p);
            }
            anyhow::ensure!(!out.is_empty(), usage(&format!("{}: no prompts", path.display())));
            (path.display().to_string(), out)
        }
        (None, None) => unreachable!("checked by the caller"),
    };
    let one = |text: &str| -> anyhow::Result<Option<u32>> {
        Ok(match tok.encode_plain(text)?.as_slice() {
            [t] if (*t as usize) < vocab => Some(*t),
            _ => None,
        })
    };
    let (mut examples, mut used, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for p in &probes {
        // Prompts as `--prompt` reads them (special tokens included); answers as one plain token.
        let ids = tok.encode(&p.prompt)?;
        let why = if ids.is_empty() || ids.iter().any(|&t| t as usize >= vocab) {
            Some("the prompt is empty or out of vocabulary".to_string())
        } else if max_len.is_some_and(|m| ids.len() > m) {
            Some(format!("the prompt has {} tokens, more than the model takes", ids.len()))
        } else {
            None
        };
        let answer = one(&p.answer)?;
        let wrong = match &p.wrong {
            Some(w) => one(w)?.map(Some).ok_or(format!("wrong {w:?} is not one token")),
            None => Ok(None),
        };
        match (why, answer, wrong) {
            (Some(why), _, _) => skipped.push(serde_json::json!({ "prompt": p.prompt, "reason": why })),
            (None, None, _) => skipped.push(serde_json::json!({ "prompt": p.prompt, "reason": format!("answer {:?} is not one token", p.answer) })),
            (None, _, Err(why)) => skipped.push(serde_json::json!({ "prompt": p.prompt, "reason": why })),
            (None, Some(a), Ok(w)) if Some(a) == w => skipped.push(serde_json::json!({ "prompt": p.prompt, "reason": "answer and wrong are the same token" })),
            (None, Some(a), Ok(w)) => {
                used.push(&p.prompt);
                examples.push(LensExample { ids, answer: a, wrong: w });
            }
        }
    }
    if examples.is_empty() {
        let first = skipped.first().and_then(|s| s["reason"].as_str()).unwrap_or("").to_string();
        anyhow::bail!(usage(&format!("--lens: none of the {} prompts ({source}) is usable with this tokenizer (first skipped: {first})", probes.len())));
    }
    let total = examples.len();
    let r = mean_attribution(model, &examples, |i| if i % 50 == 0 || i == total { eprintln!("attributed {i}/{total} prompts") })?;
    println!("direct logit attribution over {} prompts ({source}; {} skipped): mean target {:.4}", r.n, skipped.len(), r.target);
    for p in &r.parts {
        println!("{:>26}: {:+.4}", p.name, p.logit);
    }
    for (l, row) in r.heads.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|x| format!("{x:+.3}")).collect();
        println!("{:>26}: {} (output bias {:+.3})", format!("L{l} attn by head"), cells.join(" "), r.attn_bias[l]);
    }
    let mut ranked: Vec<(usize, usize, f64)> = r.heads.iter().enumerate().flat_map(|(l, row)| row.iter().enumerate().map(move |(h, &x)| (l, h, x))).collect();
    ranked.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()).then((a.0, a.1).cmp(&(b.0, b.1))));
    let top: Vec<String> = ranked.iter().take(5).map(|(l, h, x)| format!("L{l}.h{h} {x:+.3}")).collect();
    if !top.is_empty() {
        println!("{:>26}: {}", "largest heads", top.join(", "));
    }
    let dir = args.out.clone().unwrap_or(default_out);
    let json = serde_json::json!({ "source": source, "prompts": used, "skipped": skipped, "attribution": r });
    latentlab::util::fsx::write_atomic(&dir.join("lens-batch.json"), serde_json::to_string_pretty(&json)?.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.join("lens-batch.json").display()))?;
    let mut report = Report::new(format!("Direct logit attribution over prompts: {label}"));
    report.paragraph(format!("{} prompts ({source}; {} skipped); mean logit[answer] (− logit[wrong]) at the last position: {:.4}.", r.n, skipped.len(), r.target));
    let labels: Vec<String> = r.parts.iter().map(|p| p.name.clone()).collect();
    let spec = ChartSpec::new("mean direct logit attribution by part", "part of the stream", "logit");
    report.figure("Mean attribution by part", bar_chart(&spec, &labels, &[BarGroup { name: "mean".into(), values: r.parts.iter().map(|p| p.logit).collect() }])?);
    if !r.heads.is_empty() {
        let layers: Vec<String> = (0..r.heads.len()).map(|l| format!("L{l}")).collect();
        let heads: Vec<String> = (0..r.heads[0].len()).map(|h| format!("h{h}")).collect();
        let spec = ChartSpec::new("mean direct logit attribution per attention head", "head", "layer");
        report.figure("Mean attribution per head", heatmap(&spec, &r.heads, &layers, &heads, None)?);
    }
    report.write(&dir, "lens-batch")?;
    println!("wrote {}", dir.display());
    Ok(())
}

fn patch_model(args: &Args, lm: Lm) -> anyhow::Result<()> {
    use latentlab::interp::patching::patch_positions;
    let Lm { model, tokenizer, label, default_out, max_len, .. } = lm;
    use latentlab::report::{heatmap, ChartSpec, Report};
    let clean = text_or_ids(tokenizer, &args.clean, &args.clean_ids, ["--clean", "--clean-ids"], "--patch")?;
    let corrupt = text_or_ids(tokenizer, &args.corrupt, &args.corrupt_ids, ["--corrupt", "--corrupt-ids"], "--patch")?;
    anyhow::ensure!(
        !clean.is_empty() && clean.len() == corrupt.len(),
        usage(&format!("--patch: the clean and corrupted prompts must have the same number of tokens (got {} and {})", clean.len(), corrupt.len()))
    );
    if let Some(max) = max_len.filter(|&m| clean.len() > m) {
        anyhow::bail!(usage(&format!("--patch: the prompts have {} tokens; the model takes at most {max}", clean.len())));
    }
    let need = |t: Option<u32>, what: &str| t.ok_or_else(|| usage(&format!("--patch needs exactly one of --{what} and --{what}-id")));
    let answer = need(one_token(tokenizer, &args.answer, args.answer_id, "answer", "--patch")?, "answer")?;
    let wrong = need(one_token(tokenizer, &args.wrong, args.wrong_id, "wrong", "--patch")?, "wrong")?;
    anyhow::ensure!(answer != wrong, usage(&format!("--patch: the answer and the wrong answer are the same token ({answer})")));
    let layers = model.n_layers();
    let points: Vec<HookPoint> = if args.hooks.is_empty() {
        (0..layers).map(HookPoint::ResidPre).chain(std::iter::once(HookPoint::ResidPost(layers - 1))).collect()
    } else {
        args.hooks.iter().map(|h| h.parse()).collect::<Result<_, _>>()?
    };
    let total = points.len();
    let r = patch_positions(model, &clean, &corrupt, &points, answer, wrong, |n| eprintln!("patched {n}/{total} points"))?;
    let labels: Vec<String> = match tokenizer {
        Some(tok) => clean.iter().zip(&corrupt).map(|(a, b)| {
            let (a, b) = (tok.decode(&[*a]).unwrap_or_default(), tok.decode(&[*b]).unwrap_or_default());
            if a == b { format!("{a:?}") } else { format!("{a:?}/{b:?}") }
        }).collect(),
        None => clean.iter().zip(&corrupt).map(|(a, b)| if a == b { a.to_string() } else { format!("{a}/{b}") }).collect(),
    };
    println!("metric logit[{answer}] − logit[{wrong}] at the last position: clean {:.3}, corrupted {:.3}", r.metric_clean, r.metric_corrupt);
    for (p, row) in r.points.iter().zip(&r.restored) {
        let cells: Vec<String> = row.iter().map(|x| format!("{x:.2}")).collect();
        println!("{p:>28}: {}", cells.join(" "));
    }
    let heads = if args.per_head {
        let h = latentlab::interp::patching::patch_heads(model, &clean, &corrupt, answer, wrong, |l| eprintln!("patched the heads of layer {l}/{layers}"))?;
        for (l, row) in h.restored.iter().enumerate() {
            println!("{:>28}: {}", format!("layer {l} heads"), row.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" "));
        }
        Some(h)
    } else {
        None
    };
    let dir = args.out.clone().unwrap_or(default_out);
    std::fs::create_dir_all(&dir)?;
    let mut json = serde_json::to_value(&r)?;
    json["tokens"] = serde_json::json!(labels);
    if let Some(h) = &heads {
        json["heads"] = serde_json::to_value(h)?;
    }
    latentlab::util::fsx::write_atomic(&dir.join("patching.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    let mut report = Report::new(format!("Activation patching: {label}"));
    report.paragraph(format!(
        "Metric logit[{answer}] − logit[{wrong}] at the last position: clean {:.3}, corrupted {:.3}. Each cell reruns the corrupted prompt with that activation taken from the clean one: 1 = fully restored, 0 = no effect.",
        r.metric_clean, r.metric_corrupt
    ));
    if r.restored.iter().flatten().all(|x| x.is_finite()) {
        let spec = ChartSpec::new("fraction of the clean logit difference restored", "position (clean/corrupted token)", "hook point");
        report.figure("Patching by point and position", heatmap(&spec, &r.restored, &r.points, &labels, None)?);
    } else {
        // Clean and corrupted give the same metric: nothing to normalise by.
        let spec = ChartSpec::new("logit difference with the activation patched (clean = corrupted here)", "position (clean/corrupted token)", "hook point");
        report.figure("Patching by point and position", heatmap(&spec, &r.metric, &r.points, &labels, None)?);
    }
    if let Some(h) = heads.as_ref().filter(|h| h.restored.iter().flatten().all(|x| x.is_finite())) {
        let layer_labels: Vec<String> = (0..h.restored.len()).map(|l| format!("L{l}")).collect();
        let head_labels: Vec<String> = (0..h.restored.first().map_or(0, Vec::len)).map(|i| format!("h{i}")).collect();
        let spec = ChartSpec::new("fraction restored by patching one head's output (all positions)", "head", "layer");
        report.figure("Patching by head", heatmap(&spec, &h.restored, &layer_labels, &head_labels, None)?);
    }
    report.write(&dir, "patching")?;
    println!("wrote {}", dir.display());
    Ok(())
}
