//! Family M of the reasoning-rules study (arXiv 2506.19418, spec §3.1): a tiny
//! exact CAS over one variable. Terms k·v^n (n = 1..4), k, k·sin v, k·cos v,
//! k·exp v with rational k; rules DIFF, INT (no constant), ADD, SUB; canonical
//! printing so every conclusion has exactly one spelling. A separate parser
//! and evaluator (`eval_printed`) lets tests check conclusions numerically.

use rand::Rng;

/// Reduced rational `num / den`, `den > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    pub num: i64,
    pub den: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs().max(1) } else { gcd(b, a % b) }
}

impl Rational {
    pub fn new(num: i64, den: i64) -> Self {
        assert!(den != 0, "zero denominator");
        let g = gcd(num, den);
        let s = if den < 0 { -1 } else { 1 };
        Self { num: s * num / g, den: s * den / g }
    }
    pub fn int(k: i64) -> Self {
        Self { num: k, den: 1 }
    }
    fn add(self, o: Self) -> Self {
        Self::new(self.num * o.den + o.num * self.den, self.den * o.den)
    }
    fn mul(self, o: Self) -> Self {
        Self::new(self.num * o.num, self.den * o.den)
    }
    fn neg(self) -> Self {
        Self { num: -self.num, den: self.den }
    }
    pub fn value(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

/// Term types in canonical printing order: v^4, v^3, v^2, v, constant, sin, cos, exp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TermKind {
    Pow(std::cmp::Reverse<u8>),
    Const,
    Sin,
    Cos,
    Exp,
}

impl TermKind {
    pub fn pow(n: u8) -> Self {
        TermKind::Pow(std::cmp::Reverse(n))
    }
}

/// A sum of terms; canonical when like terms are merged, zeros dropped and sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr(pub Vec<(TermKind, Rational)>);

impl Expr {
    pub fn canonical(terms: Vec<(TermKind, Rational)>) -> Self {
        let mut out: Vec<(TermKind, Rational)> = Vec::new();
        for (k, c) in terms {
            match out.iter_mut().find(|(k2, _)| *k2 == k) {
                Some(slot) => slot.1 = slot.1.add(c),
                None => out.push((k, c)),
            }
        }
        out.retain(|(_, c)| c.num != 0);
        out.sort_by_key(|(k, _)| *k);
        Expr(out)
    }

    /// Space-separated tokens (spec §3.1 printing rules); `0` when empty.
    pub fn print(&self, v: &str) -> String {
        if self.0.is_empty() {
            return "0".into();
        }
        let mut toks: Vec<String> = Vec::new();
        for (i, (k, c)) in self.0.iter().enumerate() {
            let neg = c.num < 0;
            if i == 0 {
                if neg {
                    toks.push("-".into());
                }
            } else {
                toks.push(if neg { "-" } else { "+" }.into());
            }
            let (n, d) = (c.num.abs(), c.den);
            if !(n == 1 && d == 1 && *k != TermKind::Const) {
                toks.push(n.to_string());
                if d != 1 {
                    toks.push("/".into());
                    toks.push(d.to_string());
                }
            }
            match k {
                TermKind::Pow(std::cmp::Reverse(1)) => toks.push(v.into()),
                TermKind::Pow(std::cmp::Reverse(p)) => toks.extend([v.to_string(), "^".into(), p.to_string()]),
                TermKind::Const => {}
                TermKind::Sin => toks.extend(["sin", "(", v, ")"].map(String::from)),
                TermKind::Cos => toks.extend(["cos", "(", v, ")"].map(String::from)),
                TermKind::Exp => toks.extend(["exp", "(", v, ")"].map(String::from)),
            }
        }
        toks.join(" ")
    }
}

pub const RULES: [&str; 4] = ["DIFF", "INT", "ADD", "SUB"];
pub const VARIABLES: [&str; 4] = ["x", "y", "t", "w"];

/// d/dv, term by term.
pub fn diff(e: &Expr) -> Expr {
    Expr::canonical(
        e.0.iter()
            .filter_map(|&(k, c)| match k {
                TermKind::Pow(std::cmp::Reverse(1)) => Some((TermKind::Const, c)),
                TermKind::Pow(std::cmp::Reverse(n)) => Some((TermKind::pow(n - 1), c.mul(Rational::int(n as i64)))),
                TermKind::Const => None,
                TermKind::Sin => Some((TermKind::Cos, c)),
                TermKind::Cos => Some((TermKind::Sin, c.neg())),
                TermKind::Exp => Some((TermKind::Exp, c)),
            })
            .collect(),
    )
}

/// ∫ dv without a constant, term by term.
pub fn integrate(e: &Expr) -> Expr {
    Expr::canonical(
        e.0.iter()
            .map(|&(k, c)| match k {
                TermKind::Pow(std::cmp::Reverse(n)) => (TermKind::pow(n + 1), c.mul(Rational::new(1, n as i64 + 1))),
                TermKind::Const => (TermKind::pow(1), c),
                TermKind::Sin => (TermKind::Cos, c.neg()),
                TermKind::Cos => (TermKind::Sin, c),
                TermKind::Exp => (TermKind::Exp, c),
            })
            .collect(),
    )
}

/// Apply rule `rule` (an entry of `RULES`) to the premise (P, Q).
pub fn apply(rule: &str, p: &Expr, q: &Expr) -> Expr {
    match rule {
        "DIFF" => diff(p),
        "INT" => integrate(p),
        "ADD" => Expr::canonical(p.0.iter().chain(&q.0).copied().collect()),
        "SUB" => Expr::canonical(p.0.iter().copied().chain(q.0.iter().map(|&(k, c)| (k, c.neg()))).collect()),
        other => panic!("unknown math rule `{other}`"),
    }
}

const PREMISE_KINDS: [u8; 6] = [3, 2, 1, 10, 11, 12]; // v^3, v^2, v, sin, cos, exp

fn kind_of(code: u8) -> TermKind {
    match code {
        10 => TermKind::Sin,
        11 => TermKind::Cos,
        12 => TermKind::Exp,
        n => TermKind::pow(n),
    }
}

/// A random premise: (variable, P with two terms of distinct types, Q with one term).
pub fn sample_premise(rng: &mut impl Rng) -> (String, Expr, Expr) {
    let v = VARIABLES[rng.random_range(0..VARIABLES.len())].to_string();
    let a = rng.random_range(0..PREMISE_KINDS.len());
    let mut b = rng.random_range(0..PREMISE_KINDS.len() - 1);
    if b >= a {
        b += 1;
    }
    let coef = |rng: &mut dyn rand::RngCore| Rational::int(rng.random_range(1..=9));
    let p = Expr::canonical(vec![(kind_of(PREMISE_KINDS[a]), coef(rng)), (kind_of(PREMISE_KINDS[b]), coef(rng))]);
    let q_kind = if rng.random_bool(0.5) {
        [a, b][rng.random_range(0..2)]
    } else {
        let others: Vec<usize> = (0..PREMISE_KINDS.len()).filter(|i| *i != a && *i != b).collect();
        others[rng.random_range(0..others.len())]
    };
    let q = Expr::canonical(vec![(kind_of(PREMISE_KINDS[q_kind]), coef(rng))]);
    (v, p, q)
}

/// The premise text `P ; Q` and every rule's conclusion, or None when two
/// rules give the same conclusion (the spec rejects such premises).
pub fn premise_with_conclusions(rng: &mut impl Rng) -> Option<(String, Vec<String>)> {
    let (v, p, q) = sample_premise(rng);
    let premise = format!("{} ; {}", p.print(&v), q.print(&v));
    let concl: Vec<String> = RULES.iter().map(|r| apply(r, &p, &q).print(&v)).collect();
    let mut sorted = concl.clone();
    sorted.sort();
    sorted.dedup();
    (sorted.len() == concl.len()).then_some((premise, concl))
}

/// Family tokens in their fixed vocabulary order.
pub fn tokens() -> Vec<String> {
    let mut t: Vec<String> = (0..=27).map(|i| i.to_string()).collect();
    t.extend(["/", "+", "-", "^", "(", ")", "sin", "cos", "exp", ";"].map(String::from));
    t.extend(VARIABLES.map(String::from));
    t
}

/// Evaluate a printed expression (this module's output format) at `v = at`;
/// an independent parser, so tests can check the engine numerically.
pub fn eval_printed(text: &str, var: &str, at: f64) -> Result<f64, String> {
    let toks: Vec<&str> = text.split_whitespace().collect();
    if toks == ["0"] {
        return Ok(0.0);
    }
    let mut i = 0;
    let mut total = 0.0;
    let mut first = true;
    while i < toks.len() {
        let mut sign = 1.0;
        if toks[i] == "-" || (!first && toks[i] == "+") {
            sign = if toks[i] == "-" { -1.0 } else { 1.0 };
            i += 1;
        } else if !first {
            return Err(format!("expected + or - at token {i} of `{text}`"));
        }
        first = false;
        let mut mag = 1.0;
        let mut has_mag = false;
        if let Some(Ok(n)) = toks.get(i).map(|t| t.parse::<f64>()) {
            mag = n;
            has_mag = true;
            i += 1;
            if toks.get(i) == Some(&"/") {
                let d: f64 = toks.get(i + 1).ok_or("dangling /")?.parse().map_err(|_| format!("bad denominator in `{text}`"))?;
                mag /= d;
                i += 2;
            }
        }
        let f = match toks.get(i) {
            Some(&t) if t == var => {
                i += 1;
                if toks.get(i) == Some(&"^") {
                    let p: i32 = toks.get(i + 1).ok_or("dangling ^")?.parse().map_err(|_| format!("bad power in `{text}`"))?;
                    i += 2;
                    at.powi(p)
                } else {
                    at
                }
            }
            Some(&f @ ("sin" | "cos" | "exp")) => {
                if toks.get(i + 1) != Some(&"(") || toks.get(i + 2) != Some(&var) || toks.get(i + 3) != Some(&")") {
                    return Err(format!("malformed {f}( ) in `{text}`"));
                }
                i += 4;
                match f {
                    "sin" => at.sin(),
                    "cos" => at.cos(),
                    _ => at.exp(),
                }
            }
            _ if has_mag => 1.0,
            other => return Err(format!("unexpected token {other:?} in `{text}`")),
        };
        total += sign * mag * f;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn parse_premise(s: &str) -> (Expr, Expr) {
        // Build the spec's first example by hand.
        let _ = s;
        let p = Expr::canonical(vec![(TermKind::pow(2), Rational::int(3)), (TermKind::Sin, Rational::int(5))]);
        let q = Expr::canonical(vec![(TermKind::pow(2), Rational::int(2))]);
        (p, q)
    }

    #[test]
    fn spec_examples_print_exactly() {
        let (p, q) = parse_premise("3 x ^ 2 + 5 sin ( x ) ; 2 x ^ 2");
        assert_eq!(p.print("x"), "3 x ^ 2 + 5 sin ( x )");
        let got: Vec<String> = RULES.iter().map(|r| apply(r, &p, &q).print("x")).collect();
        assert_eq!(got, ["6 x + 5 cos ( x )", "x ^ 3 - 5 cos ( x )", "5 x ^ 2 + 5 sin ( x )", "x ^ 2 + 5 sin ( x )"]);
        let p = Expr::canonical(vec![(TermKind::Sin, Rational::int(2)), (TermKind::pow(1), Rational::int(5))]);
        let q = Expr::canonical(vec![(TermKind::pow(1), Rational::int(3))]);
        let got: Vec<String> = RULES.iter().map(|r| apply(r, &p, &q).print("w")).collect();
        assert_eq!(got, ["5 + 2 cos ( w )", "5 / 2 w ^ 2 - 2 cos ( w )", "8 w + 2 sin ( w )", "2 w + 2 sin ( w )"]);
        let p = Expr::canonical(vec![(TermKind::pow(1), Rational::int(3))]);
        assert_eq!(apply("SUB", &p, &p).print("t"), "0");
    }

    #[test]
    fn every_token_is_in_the_family_vocabulary() {
        let vocab = tokens();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for _ in 0..2000 {
            if let Some((p, cs)) = premise_with_conclusions(&mut rng) {
                for w in p.split_whitespace().chain(cs.iter().flat_map(|c| c.split_whitespace())) {
                    assert!(vocab.iter().any(|t| t == w), "token {w} missing");
                }
                assert!(p.split_whitespace().count() <= 17);
                assert!(cs.iter().all(|c| c.split_whitespace().count() <= 18));
            }
        }
    }
}
