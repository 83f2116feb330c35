//! Random modular-arithmetic computation graphs (Altabaa et al., arXiv 2510.14095; spec
//! `recursive-latent-reasoning.md` §2): the generator of §2.2, the factored tokens of §2.4
//! (SYNTAX, VARIABLE, OPERATION, VALUE), per-position node depths, and the teacher states
//! S_t of §4.2. Text/JSONL import and export live in `compgraph_jsonl.rs`.
//! Imports nothing from the rest of the crate.

use rand::seq::index::sample as sample_indices;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::error::DataError;

/// An operation of an internal node, applied left to right mod p.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    /// `a op b mod p` for `a, b < p`.
    pub fn apply(self, a: u32, b: u32, p: u32) -> u32 {
        let (a, b, p) = (a as u64, b as u64, p as u64);
        (match self {
            Op::Add => (a + b) % p,
            Op::Sub => (a + p - b) % p,
            Op::Mul => (a * b) % p,
        }) as u32
    }
    /// The text token (`ADD`, `SUB`, `MUL`).
    pub fn token(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Sub => "SUB",
            Op::Mul => "MUL",
        }
    }
    pub fn from_token(s: &str) -> Option<Op> {
        match s {
            "ADD" => Some(Op::Add),
            "SUB" => Some(Op::Sub),
            "MUL" => Some(Op::Mul),
            _ => None,
        }
    }
}

/// Generator parameters (spec §2.2; training defaults of the CPU profile §11.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompGraphConfig {
    /// Modulus p (default 23).
    pub modulus: u32,
    /// Nodes N per graph (default 16).
    pub n_nodes: usize,
    /// Leaves: the first nodes in generation order (default 6).
    pub n_leaves: usize,
    /// Fewest parents of an internal node (default 1).
    pub min_fan_in: usize,
    /// Most parents of an internal node (default 3).
    pub max_fan_in: usize,
    /// Depth cap; 0 = uncapped (default 4).
    pub max_depth: usize,
    /// Operations drawn uniformly for every parent after the first (default [add]).
    pub ops: Vec<Op>,
    /// Size M of the variable-name pool x_0..x_{M−1} (default 64).
    pub name_pool: usize,
    /// Leaves draw their values from 0..leaf_values (default: the whole of 0..p). A small
    /// range makes sums small, so the value of a sum depends on each operand alone — the
    /// signal the uniform task lacks (any function of one operand is independent of a
    /// uniform mod-p sum) — for a curriculum stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_values: Option<u32>,
}

impl Default for CompGraphConfig {
    fn default() -> Self {
        Self { modulus: 23, n_nodes: 16, n_leaves: 6, min_fan_in: 1, max_fan_in: 3, max_depth: 4, ops: vec![Op::Add], name_pool: 64, leaf_values: None }
    }
}

impl CompGraphConfig {
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |f: &'static str, m: &str| Err(DataError::config(f, m));
        if self.modulus < 2 {
            return bad("modulus", "must be ≥ 2");
        }
        if self.n_leaves == 0 || self.n_leaves > self.n_nodes {
            return bad("n_leaves", "must be in 1..=n_nodes");
        }
        if self.min_fan_in == 0 || self.min_fan_in > self.max_fan_in {
            return bad("min_fan_in", "must be in 1..=max_fan_in");
        }
        if self.ops.is_empty() {
            return bad("ops", "must name at least one of add, sub, mul");
        }
        if self.name_pool < self.n_nodes {
            return bad("name_pool", "must be ≥ n_nodes");
        }
        if self.leaf_values.is_some_and(|k| k == 0 || k > self.modulus) {
            return bad("leaf_values", "must be in 1..=modulus");
        }
        Ok(())
    }

    /// The token vocabulary of graphs drawn from this config.
    pub fn vocab(&self) -> Vocab {
        Vocab { modulus: self.modulus, name_pool: self.name_pool, ops: self.ops.clone() }
    }
}

/// One equation: `value = var` for a leaf, `parents[0] ops[0] parents[1] … = var` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Equation {
    /// Name index i of the defined variable x_i.
    pub var: u32,
    /// Parent name indices, in operand order (empty for a leaf).
    pub parents: Vec<u32>,
    /// `ops[j]` combines the running value with `parents[j + 1]`.
    pub ops: Vec<Op>,
    /// The variable's value in Z_p.
    pub value: u32,
    /// 0 for leaves, else 1 + max parent depth.
    pub depth: u32,
}

/// A graph as its serialised equation list (parents always precede children).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub modulus: u32,
    pub equations: Vec<Equation>,
}

impl Problem {
    /// Graph depth D (max node depth).
    pub fn depth(&self) -> u32 {
        self.equations.iter().map(|e| e.depth).max().unwrap_or(0)
    }
    pub fn n_nodes(&self) -> usize {
        self.equations.len()
    }
}

/// Draw one graph (spec §2.2, steps 1–6).
pub fn sample_problem(cfg: &CompGraphConfig, rng: &mut impl Rng) -> Problem {
    let n = cfg.n_nodes;
    let p = cfg.modulus;
    let mut depth = vec![0u32; n];
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for idx in cfg.n_leaves..n {
        let cands: Vec<usize> =
            (0..idx).filter(|&j| cfg.max_depth == 0 || (depth[j] as usize) < cfg.max_depth).collect();
        let lo = cfg.min_fan_in.min(cands.len());
        let hi = cfg.max_fan_in.min(cands.len());
        let k = rng.random_range(lo..=hi);
        let chosen: Vec<usize> = sample_indices(rng, cands.len(), k).into_iter().map(|i| cands[i]).collect();
        for &c in &chosen {
            children[c].push(idx);
        }
        depth[idx] = 1 + chosen.iter().map(|&c| depth[c]).max().unwrap_or(0);
        parents[idx] = chosen;
    }
    let mut ops: Vec<Vec<Op>> = vec![Vec::new(); n];
    let mut value = vec![0u32; n];
    for idx in 0..n {
        if idx < cfg.n_leaves {
            value[idx] = rng.random_range(0..cfg.leaf_values.unwrap_or(p));
            continue;
        }
        shuffle(&mut parents[idx], rng);
        ops[idx] = (1..parents[idx].len()).map(|_| cfg.ops[rng.random_range(0..cfg.ops.len())]).collect();
        value[idx] = eval_node(&parents[idx].iter().map(|&j| value[j]).collect::<Vec<_>>(), &ops[idx], p);
    }
    let names: Vec<u32> = sample_indices(rng, cfg.name_pool, n).into_iter().map(|i| i as u32).collect();
    let order = topological_generations(cfg.n_leaves, &parents, &children);
    let equations = order
        .into_iter()
        .map(|i| Equation {
            var: names[i],
            parents: parents[i].iter().map(|&j| names[j]).collect(),
            ops: ops[i].clone(),
            value: value[i],
            depth: depth[i],
        })
        .collect();
    Problem { modulus: p, equations }
}

/// `((v0 op1 v1) op2 v2) …`; a single parent is copied.
pub fn eval_node(vals: &[u32], ops: &[Op], p: u32) -> u32 {
    let mut acc = vals[0];
    for (op, &v) in ops.iter().zip(&vals[1..]) {
        acc = op.apply(acc, v, p);
    }
    acc
}

fn shuffle<T>(v: &mut [T], rng: &mut impl Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// Kahn-style generations: leaves in generation order, then each generation's
/// nodes release their children in edge-insertion order (spec §2.2 step 6).
fn topological_generations(n_leaves: usize, parents: &[Vec<usize>], children: &[Vec<usize>]) -> Vec<usize> {
    let mut indeg: Vec<usize> = parents.iter().map(Vec::len).collect();
    let mut current: Vec<usize> = (0..n_leaves).collect();
    let mut order = Vec::with_capacity(parents.len());
    while !current.is_empty() {
        let mut next = Vec::new();
        for &u in &current {
            for &c in &children[u] {
                indeg[c] -= 1;
                if indeg[c] == 0 {
                    next.push(c);
                }
            }
        }
        order.extend(current);
        current = next;
    }
    order
}

/// SYNTAX factor ids (spec §2.4, index order).
pub mod syntax {
    pub const VARIABLE: u32 = 0;
    pub const OPERATION: u32 = 1;
    pub const VALUE: u32 = 2;
    pub const PAD: u32 = 3;
    pub const UNK: u32 = 4;
    pub const EQ: u32 = 5;
    pub const EQ_SEP: u32 = 6;
    pub const SIZE: usize = 7;
}

/// Factor names, in factor order.
pub const FACTORS: [&str; 4] = ["syntax", "variable", "operation", "value"];
/// Index of the VALUE factor.
pub const VALUE_FACTOR: usize = 3;

/// One position: (SYNTAX, VARIABLE, OPERATION, VALUE) ids.
pub type Token = [u32; 4];

/// The factored vocabulary of one (p, M, ops) setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    pub modulus: u32,
    pub name_pool: usize,
    pub ops: Vec<Op>,
}

impl Vocab {
    /// Factor sizes `[7, M + 1, |ops| + 1, p + 2]`.
    pub fn sizes(&self) -> [usize; 4] {
        [syntax::SIZE, self.name_pool + 1, self.ops.len() + 1, self.modulus as usize + 2]
    }
    pub fn var_na(&self) -> u32 {
        self.name_pool as u32
    }
    pub fn op_na(&self) -> u32 {
        self.ops.len() as u32
    }
    pub fn value_na(&self) -> u32 {
        self.modulus
    }
    pub fn value_empty(&self) -> u32 {
        self.modulus + 1
    }
    pub fn op_id(&self, op: Op) -> Option<u32> {
        self.ops.iter().position(|&o| o == op).map(|i| i as u32)
    }
    fn bare(&self, syn: u32) -> Token {
        [syn, self.var_na(), self.op_na(), self.value_na()]
    }
    /// The `<PAD>` token.
    pub fn pad(&self) -> Token {
        self.bare(syntax::PAD)
    }
    fn var(&self, v: u32) -> Token {
        [syntax::VARIABLE, v, self.op_na(), self.value_empty()]
    }
}

/// A problem as factored tokens with its supervision labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Input X: every variable's VALUE is EMPTY.
    pub tokens: Vec<Token>,
    /// Final label Y: RHS positions carry their variable's value.
    pub labels: Vec<Token>,
    /// Node depth at RHS positions, −1 elsewhere.
    pub rhs_depth: Vec<i32>,
    /// Number of parents at RHS positions (0 = leaf), 0 elsewhere.
    pub n_parents: Vec<u8>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// Teacher state S_t (spec §4.2): X with VALUE filled at RHS positions of depth ≤ t − 1.
    pub fn state(&self, t: usize) -> Vec<Token> {
        let mut s = self.tokens.clone();
        for (i, &d) in self.rhs_depth.iter().enumerate() {
            if d >= 0 && (d as usize) < t {
                s[i][VALUE_FACTOR] = self.labels[i][VALUE_FACTOR];
            }
        }
        s
    }
}

/// Tokenise `problem` (spec §2.3–2.4). Fails if a name, value or op is outside `vocab`.
pub fn encode(problem: &Problem, vocab: &Vocab) -> Result<Encoded, String> {
    let (mut tokens, mut labels, mut rhs_depth, mut n_parents) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut push = |t: Token, label: Token, d: i32, k: u8| {
        tokens.push(t);
        labels.push(label);
        rhs_depth.push(d);
        n_parents.push(k);
    };
    for (i, eq) in problem.equations.iter().enumerate() {
        if i > 0 {
            let sep = vocab.bare(syntax::EQ_SEP);
            push(sep, sep, -1, 0);
        }
        let check_var = |v: u32| {
            if (v as usize) < vocab.name_pool { Ok(()) } else { Err(format!("variable `x_{v}` is outside the name pool x_0..x_{}", vocab.name_pool - 1)) }
        };
        if eq.value >= vocab.modulus {
            return Err(format!("value {} of `x_{}` is not below the modulus {}", eq.value, eq.var, vocab.modulus));
        }
        if eq.parents.is_empty() {
            let lit = [syntax::VALUE, vocab.var_na(), vocab.op_na(), eq.value];
            push(lit, lit, -1, 0);
        } else {
            for (j, &par) in eq.parents.iter().enumerate() {
                if j > 0 {
                    let op = eq.ops[j - 1];
                    let id = vocab.op_id(op).ok_or_else(|| format!("operation {} is not in this vocabulary", op.token()))?;
                    let t = [syntax::OPERATION, vocab.var_na(), id, vocab.value_na()];
                    push(t, t, -1, 0);
                }
                check_var(par)?;
                push(vocab.var(par), vocab.var(par), -1, 0);
            }
        }
        let eq_tok = vocab.bare(syntax::EQ);
        push(eq_tok, eq_tok, -1, 0);
        check_var(eq.var)?;
        let mut label = vocab.var(eq.var);
        label[VALUE_FACTOR] = eq.value;
        push(vocab.var(eq.var), label, eq.depth as i32, eq.parents.len().min(255) as u8);
    }
    Ok(Encoded { tokens, labels, rhs_depth, n_parents })
}

#[path = "compgraph_jsonl.rs"]
mod jsonl;
pub use jsonl::{parse_problem, problem_text, read_jsonl, write_jsonl};

#[cfg(test)]
#[path = "compgraph_tests.rs"]
mod tests;
