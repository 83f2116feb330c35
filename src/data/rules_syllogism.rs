//! Family S of the reasoning-rules study (arXiv 2506.19418, spec §3.2): five
//! shared facts over nonce predicates, six syllogistic rules (MP, CHAIN, HS,
//! CONV, CEL, MT). `check` re-derives a conclusion from the premise text by
//! the named scheme, independently of the generator.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

pub const RULES: [&str; 6] = ["MP", "CHAIN", "HS", "CONV", "CEL", "MT"];
pub const PREDICATES: [&str; 24] = [
    "dax", "wug", "fep", "blick", "toma", "zib", "kiki", "lorp", "mib", "nar", "pim", "rusk", "sorn", "tiv", "vek",
    "yot", "zorb", "gax", "hule", "jeb", "kex", "lum", "murn", "quib",
];
pub const HELD_OUT_PREDICATES: [&str; 8] = ["plaf", "grom", "snid", "trel", "vorn", "bisk", "clem", "drup"];
pub const ENTITIES: [&str; 8] = ["rex", "ada", "bo", "cyd", "eno", "fay", "gus", "ivo"];
pub const HELD_OUT_ENTITIES: [&str; 4] = ["jax", "kai", "lev", "moe"];

/// A premise (five facts, shuffled) and the six conclusions in `RULES` order.
pub fn premise_with_conclusions(rng: &mut impl Rng, held_out: bool) -> (String, Vec<String>) {
    let (preds, ents): (&[&str], &[&str]) =
        if held_out { (&HELD_OUT_PREDICATES, &HELD_OUT_ENTITIES) } else { (&PREDICATES, &ENTITIES) };
    let p: Vec<&str> = preds.choose_multiple(rng, 4).copied().collect();
    let e: Vec<&str> = ents.choose_multiple(rng, 2).copied().collect();
    let (a, b, c, d, x, y) = (p[0], p[1], p[2], p[3], e[0], e[1]);
    let mut facts = [
        format!("all {a} are {b} ."),
        format!("all {b} are {c} ."),
        format!("no {c} are {d} ."),
        format!("{x} is {a} ."),
        format!("{y} is not {c} ."),
    ];
    facts.shuffle(rng);
    let concl = vec![
        format!("{x} is {b}"),
        format!("{x} is {c}"),
        format!("all {a} are {c}"),
        format!("no {d} are {c}"),
        format!("no {b} are {d}"),
        format!("{y} is not {b}"),
    ];
    (facts.join(" "), concl)
}

/// Family tokens in their fixed vocabulary order.
pub fn tokens() -> Vec<String> {
    let mut t: Vec<String> = ["all", "are", "no", "is", "not", "."].map(String::from).to_vec();
    for w in PREDICATES.iter().chain(&HELD_OUT_PREDICATES).chain(&ENTITIES).chain(&HELD_OUT_ENTITIES) {
        t.push(w.to_string());
    }
    t
}

#[derive(Debug, Default)]
struct Facts<'a> {
    all: Vec<(&'a str, &'a str)>,
    no: Vec<(&'a str, &'a str)>,
    is: Vec<(&'a str, &'a str)>,
    is_not: Vec<(&'a str, &'a str)>,
}

fn parse_facts(premise: &str) -> Result<Facts<'_>, String> {
    let mut f = Facts::default();
    for fact in premise.split(" .").map(str::trim).filter(|s| !s.is_empty()) {
        let w: Vec<&str> = fact.split_whitespace().collect();
        match w.as_slice() {
            ["all", a, "are", b] => f.all.push((a, b)),
            ["no", a, "are", b] => f.no.push((a, b)),
            [x, "is", "not", a] => f.is_not.push((x, a)),
            [x, "is", a] => f.is.push((x, a)),
            _ => return Err(format!("unrecognised fact `{fact}`")),
        }
    }
    Ok(f)
}

/// Whether `conclusion` follows from `premise` by the scheme of `rule`.
pub fn check(premise: &str, rule: &str, conclusion: &str) -> Result<bool, String> {
    let f = parse_facts(premise)?;
    let w: Vec<&str> = conclusion.split_whitespace().collect();
    let all = |a: &str, b: &str| f.all.contains(&(a, b));
    Ok(match (rule, w.as_slice()) {
        // all A are B, a is A ⊢ a is B
        ("MP", [x, "is", b]) => f.is.iter().any(|(y, a)| y == x && all(a, b)),
        // all A are B, all B are C, a is A ⊢ a is C
        ("CHAIN", [x, "is", c]) => f.is.iter().any(|(y, a)| y == x && f.all.iter().any(|(a2, b)| a2 == a && all(b, c))),
        // all A are B, all B are C ⊢ all A are C
        ("HS", ["all", a, "are", c]) => f.all.iter().any(|(a2, b)| a2 == a && all(b, c)),
        // no C are D ⊢ no D are C
        ("CONV", ["no", d, "are", c]) => f.no.contains(&(c, d)),
        // all B are C, no C are D ⊢ no B are D
        ("CEL", ["no", b, "are", d]) => f.all.iter().any(|(b2, c)| b2 == b && f.no.contains(&(c, d))),
        // all B are C, e is not C ⊢ e is not B
        ("MT", [e, "is", "not", b]) => f.is_not.iter().any(|(e2, c)| e2 == e && all(b, c)),
        (r, _) if !RULES.contains(&r) => return Err(format!("unknown syllogism rule `{r}`")),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_follows_each_scheme_and_only_its_own() {
        let p = "no lorp are mib . rex is dax . all wug are lorp . gus is not lorp . all dax are wug .";
        let c = ["rex is wug", "rex is lorp", "all dax are lorp", "no mib are lorp", "no wug are mib", "gus is not wug"];
        for (i, r) in RULES.iter().enumerate() {
            for (j, concl) in c.iter().enumerate() {
                assert_eq!(check(p, r, concl).unwrap(), i == j, "{r} vs {concl}");
            }
        }
        assert!(check("all a are", "MP", "x").is_err());
    }
}
