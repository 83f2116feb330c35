//! Reasoning probes for pretrained LMs (truncation study arXiv 2406.03068 §11, LASER
//! arXiv 2312.13558): indirect-object identification from the Wang et al. templates
//! (arXiv 2211.00593) and factual recall with one-token answers, tokenised with the
//! model's tokenizer, scored at the last prompt position. Callers (tests) may build a
//! `ProbeSet` from their own text or token ids. May import models, nn and std.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, D};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::error::LaserError;
use crate::interp::Hooks;
use crate::models::{HfError, LanguageModel};

/// Which prompt family an example comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Ioi,
    Fact,
    /// Caller-supplied examples.
    Custom,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Ioi => "ioi",
            ProbeKind::Fact => "fact",
            ProbeKind::Custom => "custom",
        }
    }
}

/// A probe as text: the answer continues the prompt (leading space included).
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub prompt: String,
    pub answer: String,
    /// IOI: the subject name (the wrong in-context answer).
    pub distractor: Option<String>,
}

/// A tokenised probe.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenProbe {
    pub kind: ProbeKind,
    /// Text of the prompt (for per-example output; may be empty for id-only probes).
    pub prompt: String,
    pub ids: Vec<u32>,
    pub answer: u32,
    /// Token ids counted as a correct top-1 (the answer and its case/space variants).
    pub accept: Vec<u32>,
    pub distractor: Option<u32>,
}

/// A skipped example and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub prompt: String,
    pub reason: String,
}

/// Tokenised probes plus the generic token (" the") they are compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSet {
    pub probes: Vec<TokenProbe>,
    pub generic: u32,
    pub skipped: Vec<Skipped>,
}

// Wang et al. (2022) IOI templates: `{A} and {B}` is the name pair in either order, `{S}` the
// repeated subject; the answer is the other name (the indirect object).
const IOI_TEMPLATES: [&str; 12] = [
    "Then, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {A} and {B} had a lot of fun at the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {A} and {B} were working at the {PLACE}. {S} decided to give a {OBJECT} to",
    "Then, {A} and {B} were thinking about going to the {PLACE}. {S} wanted to give a {OBJECT} to",
    "Then, {A} and {B} had a long argument, and afterwards {S} said to",
    "After {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} decided to give the {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "While {A} and {B} were commuting to the {PLACE}, {S} gave a {OBJECT} to",
    "After the lunch, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {S} gave it to",
];

const NAMES: [&str; 40] = [
    "Mary", "John", "Alice", "Bob", "Tom", "James", "David", "Michael", "Sarah", "Anna", "Paul", "Mark",
    "Peter", "Kate", "Jack", "Emily", "Daniel", "Laura", "Kevin", "Rachel", "Steven", "Lisa", "Brian",
    "Jessica", "Eric", "Amy", "Ryan", "Jennifer", "Adam", "Rose", "Andrew", "Michelle", "Scott", "Jane",
    "Richard", "Victoria", "Thomas", "Maria", "George", "Sean",
];
const PLACES: [&str; 8] = ["store", "garden", "restaurant", "school", "hospital", "office", "station", "park"];
const OBJECTS: [&str; 8] = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"];

/// Factual prompts with one-token answers (answer with its leading space).
const FACTS: [(&str, &str); 42] = [
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("The Colosseum is located in the city of", " Rome"),
    ("The Louvre is located in the city of", " Paris"),
    ("Big Ben is located in the city of", " London"),
    ("The Kremlin is located in the city of", " Moscow"),
    ("The Brandenburg Gate is located in the city of", " Berlin"),
    ("The Golden Gate Bridge is located in the city of San", " Francisco"),
    ("The capital of Japan is the city of", " Tokyo"),
    ("The capital of Germany is the city of", " Berlin"),
    ("The capital of Russia is the city of", " Moscow"),
    ("The capital of England is the city of", " London"),
    ("The capital of Egypt is the city of", " Cairo"),
    ("The capital of Italy is the city of", " Rome"),
    ("The capital of France is the city of", " Paris"),
    ("Madrid is located in the country of", " Spain"),
    ("Barcelona is located in the country of", " Spain"),
    ("Munich is located in the country of", " Germany"),
    ("Toronto is located in the country of", " Canada"),
    ("Osaka is located in the country of", " Japan"),
    ("Lyon is located in the country of", " France"),
    ("Milan is located in the country of", " Italy"),
    ("Sydney is located in the country of", " Australia"),
    ("Mumbai is located in the country of", " India"),
    ("Shanghai is located in the country of", " China"),
    ("The Great Wall is located in the country of", " China"),
    ("The Taj Mahal is located in the country of", " India"),
    ("The official language of France is", " French"),
    ("The official language of Germany is", " German"),
    ("The official language of Italy is", " Italian"),
    ("The official language of Spain is", " Spanish"),
    ("The official language of Japan is", " Japanese"),
    ("The official language of Russia is", " Russian"),
    ("The official language of Brazil is", " Portuguese"),
    ("The Mona Lisa was painted by Leonardo da", " Vinci"),
    ("The theory of relativity was developed by Albert", " Einstein"),
    ("The first person to walk on the moon was Neil", " Armstrong"),
    ("Romeo and Juliet was written by William", " Shakespeare"),
    ("Microsoft was founded by Bill", " Gates"),
    ("The largest planet in the solar system is", " Jupiter"),
    ("Water is made of hydrogen and", " oxygen"),
    ("The currency of Japan is the", " yen"),
    ("Apple's most famous smartphone is called the", " iPhone"),
];

/// `n` IOI prompts: seeded template, two distinct names, place, object and name order (ABBA/BABA).
pub fn ioi_probes(n: usize, seed: u64) -> Vec<Probe> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let t = IOI_TEMPLATES[rng.random_range(0..IOI_TEMPLATES.len())];
            let io = NAMES[rng.random_range(0..NAMES.len())];
            let s = loop {
                let s = NAMES[rng.random_range(0..NAMES.len())];
                if s != io {
                    break s;
                }
            };
            let (a, b) = if rng.random::<bool>() { (io, s) } else { (s, io) };
            let prompt = t
                .replace("{A}", a)
                .replace("{B}", b)
                .replace("{S}", s)
                .replace("{PLACE}", PLACES[rng.random_range(0..PLACES.len())])
                .replace("{OBJECT}", OBJECTS[rng.random_range(0..OBJECTS.len())]);
            Probe { kind: ProbeKind::Ioi, prompt, answer: format!(" {io}"), distractor: Some(format!(" {s}")) }
        })
        .collect()
}

/// Every embedded factual prompt.
pub fn fact_probes() -> Vec<Probe> {
    FACTS
        .iter()
        .map(|(p, a)| Probe { kind: ProbeKind::Fact, prompt: p.to_string(), answer: a.to_string(), distractor: None })
        .collect()
}

/// `n_ioi` IOI prompts and (optionally) the factual ones, shuffled with `seed` so that any
/// prefix (the validation split) mixes both families.
pub fn builtin_probes(n_ioi: usize, facts: bool, seed: u64) -> Vec<Probe> {
    let mut all = ioi_probes(n_ioi, seed);
    if facts {
        all.extend(fact_probes());
    }
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed));
    all
}

/// The single token of `text`, or why not.
fn one_token(encode: &dyn Fn(&str) -> Result<Vec<u32>, HfError>, text: &str, vocab: usize) -> Result<Option<u32>, HfError> {
    let ids = encode(text)?;
    Ok(match ids.as_slice() {
        [t] if (*t as usize) < vocab => Some(*t),
        _ => None,
    })
}

impl ProbeSet {
    /// Tokenises `probes` with `encode` (no special tokens). Examples whose answer or
    /// distractor is not one in-vocabulary token, or whose prompt is empty or out of
    /// vocabulary, are skipped and listed; a `generic` that is not one token is an error.
    pub fn tokenize(
        probes: &[Probe],
        encode: &dyn Fn(&str) -> Result<Vec<u32>, HfError>,
        generic: &str,
        vocab: usize,
    ) -> Result<Self, LaserError> {
        let generic_id = one_token(encode, generic, vocab)?.ok_or_else(|| LaserError::Probe {
            msg: format!("the generic token {generic:?} is not a single in-vocabulary token of this tokenizer"),
        })?;
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for p in probes {
            let skip = |reason: String| Skipped { prompt: p.prompt.clone(), reason };
            let ids = encode(&p.prompt)?;
            if ids.is_empty() || ids.iter().any(|&t| t as usize >= vocab) {
                skipped.push(skip("prompt is empty or has out-of-vocabulary ids".into()));
                continue;
            }
            let Some(answer) = one_token(encode, &p.answer, vocab)? else {
                skipped.push(skip(format!("answer {:?} is not a single token", p.answer)));
                continue;
            };
            let distractor = match &p.distractor {
                Some(d) => match one_token(encode, d, vocab)? {
                    Some(t) => Some(t),
                    None => {
                        skipped.push(skip(format!("distractor {d:?} is not a single token")));
                        continue;
                    }
                },
                None => None,
            };
            // Case-insensitive, stripped match (spec §6.1): variants that are single tokens.
            let bare = p.answer.trim();
            let mut accept = vec![answer];
            for v in [bare.to_string(), bare.to_lowercase(), format!(" {}", bare.to_lowercase()), capitalised(bare)] {
                for text in [v.clone(), format!(" {}", v.trim())] {
                    if let Some(t) = one_token(encode, &text, vocab)? {
                        if !accept.contains(&t) {
                            accept.push(t);
                        }
                    }
                }
            }
            out.push(TokenProbe { kind: p.kind, prompt: p.prompt.clone(), ids, answer, accept, distractor });
        }
        Ok(Self { probes: out, generic: generic_id, skipped })
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Scores of one example at its last prompt position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub index: usize,
    pub kind: ProbeKind,
    pub p_correct: f64,
    /// ln P(correct).
    pub logp_correct: f64,
    pub p_generic: f64,
    pub top1: bool,
    /// Tokens with a higher logit than the answer (0 = the answer is the argmax).
    pub rank: usize,
    pub argmax: u32,
    /// logit(answer) − logit(generic).
    pub logit_diff: f64,
    /// IOI: logit(IO) − logit(S).
    pub io_s_diff: Option<f64>,
}

/// Every probe of `set`, batched by prompt length (no padding).
pub fn evaluate(model: &dyn LanguageModel, set: &ProbeSet) -> candle_core::Result<Vec<ProbeResult>> {
    let device = model.params().device().clone();
    let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in set.probes.iter().enumerate() {
        by_len.entry(p.ids.len()).or_default().push(i);
    }
    let mut out: Vec<Option<ProbeResult>> = vec![None; set.probes.len()];
    for (len, idx) in by_len {
        for chunk in idx.chunks(16) {
            let flat: Vec<u32> = chunk.iter().flat_map(|&i| set.probes[i].ids.iter().copied()).collect();
            let ids = Tensor::from_vec(flat, (chunk.len(), len), &device)?;
            let logits = model.forward(&ids, &mut Hooks::none())?.narrow(1, len - 1, 1)?.squeeze(1)?; // (b, vocab)
            let logits = logits.to_dtype(DType::F32)?;
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
            let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            let logits = logits.to_vec2::<f32>()?;
            for (r, &i) in chunk.iter().enumerate() {
                let p = &set.probes[i];
                let (a, g) = (p.answer as usize, set.generic as usize);
                out[i] = Some(ProbeResult {
                    index: i,
                    kind: p.kind,
                    p_correct: (logp[r][a] as f64).exp(),
                    logp_correct: logp[r][a] as f64,
                    p_generic: (logp[r][g] as f64).exp(),
                    top1: p.accept.contains(&argmax[r]),
                    rank: logits[r].iter().filter(|&&v| v > logits[r][a]).count(),
                    argmax: argmax[r],
                    logit_diff: (logits[r][a] - logits[r][g]) as f64,
                    io_s_diff: p.distractor.map(|s| (logits[r][a] - logits[r][s as usize]) as f64),
                });
            }
        }
    }
    Ok(out.into_iter().map(|r| r.expect("every probe is in one length group")).collect())
}

/// Means over `results` (`n`, `acc`, `top5_acc` (answer rank < 5), `p_correct`, `logp_correct`,
/// `p_generic`, `logit_diff`, `io_s_diff` over
/// IOI examples, and `{kind}_acc` / `{kind}_p_correct` per family present).
pub fn aggregate(results: &[ProbeResult]) -> BTreeMap<String, f64> {
    let mean = |v: Vec<f64>| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
    let mut m = BTreeMap::new();
    m.insert("n".into(), results.len() as f64);
    m.insert("acc".into(), mean(results.iter().map(|r| r.top1 as u8 as f64).collect()));
    m.insert("top5_acc".into(), mean(results.iter().map(|r| (r.rank < 5) as u8 as f64).collect()));
    m.insert("p_correct".into(), mean(results.iter().map(|r| r.p_correct).collect()));
    m.insert("logp_correct".into(), mean(results.iter().map(|r| r.logp_correct).collect()));
    m.insert("p_generic".into(), mean(results.iter().map(|r| r.p_generic).collect()));
    m.insert("logit_diff".into(), mean(results.iter().map(|r| r.logit_diff).collect()));
    let io_s: Vec<f64> = results.iter().filter_map(|r| r.io_s_diff).collect();
    if !io_s.is_empty() {
        m.insert("io_s_diff".into(), mean(io_s));
    }
    for kind in [ProbeKind::Ioi, ProbeKind::Fact, ProbeKind::Custom] {
        let sub: Vec<&ProbeResult> = results.iter().filter(|r| r.kind == kind).collect();
        if !sub.is_empty() {
            m.insert(format!("{}_acc", kind.name()), mean(sub.iter().map(|r| r.top1 as u8 as f64).collect()));
            m.insert(format!("{}_p_correct", kind.name()), mean(sub.iter().map(|r| r.p_correct).collect()));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioi_prompts_follow_the_templates() {
        let a = ioi_probes(20, 3);
        assert_eq!(a, ioi_probes(20, 3));
        for p in &a {
            let (io, s) = (p.answer.trim(), p.distractor.as_deref().unwrap().trim());
            assert_ne!(io, s);
            assert_eq!(p.prompt.matches(s).count(), 2, "{}", p.prompt);
            assert_eq!(p.prompt.matches(io).count(), 1, "{}", p.prompt);
            assert!(!p.prompt.contains('{'));
        }
        assert_eq!(builtin_probes(10, true, 0).len(), 10 + FACTS.len());
    }

    #[test]
    fn tokenize_skips_multi_token_answers() {
        // A toy whitespace tokenizer: "wN" -> N, anything else is two tokens.
        let enc = |s: &str| -> Result<Vec<u32>, HfError> {
            Ok(s.split_whitespace().flat_map(|w| match w.strip_prefix('w').and_then(|n| n.parse().ok()) {
                Some(n) => vec![n],
                None => vec![1, 2],
            }).collect())
        };
        let probes = vec![
            Probe { kind: ProbeKind::Custom, prompt: "w1 w2".into(), answer: " w3".into(), distractor: None },
            Probe { kind: ProbeKind::Custom, prompt: "w1 w2".into(), answer: " Paris".into(), distractor: None },
            Probe { kind: ProbeKind::Ioi, prompt: "w4".into(), answer: " w5".into(), distractor: Some(" w6".into()) },
        ];
        let set = ProbeSet::tokenize(&probes, &enc, " w9", 10).unwrap();
        assert_eq!(set.probes.len(), 2);
        assert_eq!(set.skipped.len(), 1);
        assert_eq!((set.generic, set.probes[1].answer, set.probes[1].distractor), (9, 5, Some(6)));
        assert!(ProbeSet::tokenize(&probes, &enc, " the", 10).is_err());
    }
}
