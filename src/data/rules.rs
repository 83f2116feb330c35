//! Rule datasets of the language-VAE study (arXiv 2506.19418, spec §2–3):
//! triples (rule π, premise x, conclusion c = π(x)) for three families, seeded
//! train/validation/test splits with premises disjoint across splits, JSONL
//! I/O, and readers for external data in CSV (`rule,premise,conclusion`) and
//! the lineage's derivation-line format, with line-numbered errors.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::DataError;
use super::{rules_explanatory as expl, rules_math as math, rules_syllogism as syl};

/// A task family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Mathematical derivation (DIFF, INT, ADD, SUB).
    Math,
    /// Syllogistic reasoning (MP, CHAIN, HS, CONV, CEL, MT).
    Syllogism,
    /// Explanatory reasoning (ARG-SUB, PRED-SUB, IF-THEN, CONJ, EXAMPLE).
    Explanatory,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Math, Family::Syllogism, Family::Explanatory];

    pub fn name(self) -> &'static str {
        match self {
            Family::Math => "math",
            Family::Syllogism => "syllogism",
            Family::Explanatory => "explanatory",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Rule names, in label order.
    pub fn rules(self) -> &'static [&'static str] {
        match self {
            Family::Math => &math::RULES,
            Family::Syllogism => &syl::RULES,
            Family::Explanatory => &expl::RULES,
        }
    }

    /// Family tokens, in vocabulary order.
    pub fn tokens(self) -> Vec<String> {
        match self {
            Family::Math => math::tokens(),
            Family::Syllogism => syl::tokens(),
            Family::Explanatory => expl::tokens(),
        }
    }

    /// A premise and the conclusion of every rule (None = rejected premise).
    fn draw(self, rng: &mut ChaCha8Rng, held_out: bool) -> Option<(String, Vec<String>)> {
        match self {
            Family::Math => math::premise_with_conclusions(rng),
            Family::Syllogism => Some(syl::premise_with_conclusions(rng, held_out)),
            Family::Explanatory => Some(expl::premise_with_conclusions(rng)),
        }
    }
}

/// One example; strings are whitespace-separated tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleExample {
    pub family: Family,
    pub rule: String,
    pub premise: String,
    pub conclusion: String,
}

impl RuleExample {
    /// Index of the rule in `family.rules()`.
    pub fn label(&self) -> usize {
        self.family.rules().iter().position(|r| *r == self.rule).expect("rule validated on construction")
    }
}

/// Generated splits of one family.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSplits {
    pub train: Vec<RuleExample>,
    pub valid: Vec<RuleExample>,
    pub test: Vec<RuleExample>,
    /// For each test example, the conclusion of every rule (label order).
    pub test_alts: Vec<Vec<String>>,
}

/// Draw `n_train + n_valid + n_test` examples of `family` with distinct
/// premises (so splits are premise-disjoint), each with a uniformly drawn
/// rule. Deterministic in `seed`.
pub fn generate(family: Family, n_train: usize, n_valid: usize, n_test: usize, seed: u64) -> RuleSplits {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x5eed_0000 + family as u64));
    let rules = family.rules();
    let mut seen = HashSet::new();
    let mut all = Vec::with_capacity(n_train + n_valid + n_test);
    let mut alts = Vec::with_capacity(n_train + n_valid + n_test);
    while all.len() < n_train + n_valid + n_test {
        let Some((premise, concl)) = family.draw(&mut rng, false) else { continue };
        if !seen.insert(premise.clone()) {
            continue;
        }
        let r = rng.random_range(0..rules.len());
        all.push(RuleExample { family, rule: rules[r].to_string(), premise, conclusion: concl[r].clone() });
        alts.push(concl);
    }
    let test = all.split_off(n_train + n_valid);
    let valid = all.split_off(n_train);
    let test_alts = alts.split_off(n_train + n_valid);
    RuleSplits { train: all, valid, test, test_alts }
}

/// Write examples as JSONL, one object per line.
pub fn write_jsonl(path: &Path, examples: &[RuleExample]) -> Result<(), DataError> {
    let mut text = String::new();
    for e in examples {
        text += &serde_json::to_string(e).expect("examples serialise");
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text).map_err(|source| DataError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })
}

fn validated(path: &Path, line: usize, e: RuleExample) -> Result<RuleExample, DataError> {
    let field = |f: &str, m: String| DataError::Field { path: path.to_path_buf(), line, field: f.into(), message: m };
    if !e.family.rules().contains(&e.rule.as_str()) {
        return Err(field("rule", format!("`{}` is not a {} rule; expected one of {:?}", e.rule, e.family.name(), e.family.rules())));
    }
    if e.premise.trim().is_empty() {
        return Err(field("premise", "empty".into()));
    }
    if e.conclusion.trim().is_empty() {
        return Err(field("conclusion", "empty".into()));
    }
    Ok(e)
}

fn lines(path: &Path) -> Result<Vec<String>, DataError> {
    let f = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    BufReader::new(f).lines().collect::<Result<_, _>>().map_err(|source| DataError::Io { path: path.to_path_buf(), source })
}

/// Read JSONL examples (blank lines skipped).
pub fn read_jsonl(path: &Path) -> Result<Vec<RuleExample>, DataError> {
    let mut out = Vec::new();
    for (i, line) in lines(path)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: RuleExample = serde_json::from_str(line)
            .map_err(|e| DataError::Json { path: path.to_path_buf(), line: i + 1, message: e.to_string() })?;
        out.push(validated(path, i + 1, e)?);
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}

/// Split one CSV row into fields (double quotes may wrap a field; `""` escapes a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if cur.is_empty() => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => {
                quoted = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err("text after a closing quote".into());
                }
            }
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

/// Read `rule,premise,conclusion` rows (an optional header row with exactly
/// those names is skipped) as examples of `family`.
pub fn read_csv(path: &Path, family: Family) -> Result<Vec<RuleExample>, DataError> {
    let mut out = Vec::new();
    for (i, line) in lines(path)?.iter().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let row = csv_fields(line).map_err(|m| DataError::Field { path: path.to_path_buf(), line: n, field: "row".into(), message: m })?;
        if n == 1 && row.iter().map(|s| s.trim()).eq(["rule", "premise", "conclusion"]) {
            continue;
        }
        if row.len() != 3 {
            return Err(DataError::Field {
                path: path.to_path_buf(),
                line: n,
                field: "row".into(),
                message: format!("expected 3 fields (rule,premise,conclusion), got {}", row.len()),
            });
        }
        let e = RuleExample { family, rule: row[0].trim().into(), premise: row[1].trim().into(), conclusion: row[2].trim().into() };
        out.push(validated(path, n, e)?);
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}

/// Read lineage derivation lines, `performing <operation> for <expr> where the
/// variable is <v> & the result is <expr>`, as family-M examples. Operations
/// map to rules: differentiation → DIFF, integration → INT, addition → ADD,
/// subtraction → SUB.
pub fn read_derivation_lines(path: &Path) -> Result<Vec<RuleExample>, DataError> {
    let mut out = Vec::new();
    for (i, line) in lines(path)?.iter().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |m: &str| DataError::Field { path: path.to_path_buf(), line: n, field: "line".into(), message: m.into() };
        let rest = line.strip_prefix("performing ").ok_or_else(|| err("expected `performing <operation> for ...`"))?;
        let (op, rest) = rest.split_once(" for ").ok_or_else(|| err("missing ` for `"))?;
        let (expr, rest) = rest.split_once(" where the variable is ").ok_or_else(|| err("missing ` where the variable is `"))?;
        let (var, result) = rest.split_once(" & the result is ").ok_or_else(|| err("missing ` & the result is `"))?;
        let rule = match op.trim() {
            "differentiation" => "DIFF",
            "integration" => "INT",
            "addition" => "ADD",
            "subtraction" => "SUB",
            other => return Err(err(&format!("unknown operation `{other}`; expected differentiation, integration, addition or subtraction"))),
        };
        if var.split_whitespace().count() != 1 {
            return Err(err("the variable must be one token"));
        }
        let e = RuleExample { family: Family::Math, rule: rule.into(), premise: expr.trim().into(), conclusion: result.trim().into() };
        out.push(validated(path, n, e)?);
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_deterministic_and_premise_disjoint() {
        for f in Family::ALL {
            let a = generate(f, 300, 50, 100, 7);
            assert_eq!(a, generate(f, 300, 50, 100, 7));
            let train: HashSet<&str> = a.train.iter().map(|e| e.premise.as_str()).collect();
            assert!(a.test.iter().chain(&a.valid).all(|e| !train.contains(e.premise.as_str())));
            assert!(a.train.iter().all(|e| e.label() < f.rules().len()));
        }
    }

    #[test]
    fn csv_fields_handle_quotes() {
        assert_eq!(csv_fields(r#"MP,"a, b",c"#).unwrap(), ["MP", "a, b", "c"]);
        assert_eq!(csv_fields(r#""say ""hi""",x,y"#).unwrap(), [r#"say "hi""#, "x", "y"]);
        assert!(csv_fields(r#""open,x,y"#).is_err());
    }
}
