//! Family E of the reasoning-rules study (arXiv 2506.19418, spec §3.3): a
//! random five-fact "world" and five templated inference types (argument and
//! predicate substitution, if-then, conjunction, example).

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

pub const RULES: [&str; 5] = ["ARG-SUB", "PRED-SUB", "IF-THEN", "CONJ", "EXAMPLE"];
pub const NOUNS: [&str; 20] = [
    "oak", "tree", "plant", "dog", "mammal", "animal", "cat", "bird", "eagle", "fish", "salmon", "rock", "granite",
    "metal", "iron", "copper", "river", "lake", "sun", "star",
];
pub const PROPERTIES: [&str; 10] = ["fur", "leaves", "roots", "wings", "scales", "water", "light", "heat", "energy", "shell"];
pub const ADJECTIVES: [&str; 10] = ["warm", "green", "hard", "heavy", "bright", "wet", "alive", "tall", "smooth", "cold"];

/// A premise (five facts, shuffled) and the five conclusions in `RULES` order.
pub fn premise_with_conclusions(rng: &mut impl Rng) -> (String, Vec<String>) {
    let n: Vec<&str> = NOUNS.choose_multiple(rng, 2).copied().collect();
    let p: Vec<&str> = PROPERTIES.choose_multiple(rng, 2).copied().collect();
    let a: Vec<&str> = ADJECTIVES.choose_multiple(rng, 2).copied().collect();
    let (x, y, pp, r, s, t) = (n[0], n[1], p[0], p[1], a[0], a[1]);
    let mut facts = [
        format!("{x} is a kind of {y} ."),
        format!("{y} has {pp} ."),
        format!("{pp} is a kind of {r} ."),
        format!("if something has {pp} then it is {s} ."),
        format!("{y} is {t} ."),
    ];
    facts.shuffle(rng);
    let concl = vec![
        format!("{x} has {pp}"),
        format!("{y} has {r}"),
        format!("{y} is {s}"),
        format!("{y} has {pp} and is {t}"),
        format!("{x} is an example of {y}"),
    ];
    (facts.join(" "), concl)
}

/// Family tokens in their fixed vocabulary order.
pub fn tokens() -> Vec<String> {
    let mut t: Vec<String> =
        ["is", "a", "kind", "of", "has", "if", "something", "then", "it", "and", "an", "example", "."].map(String::from).to_vec();
    for w in NOUNS.iter().chain(&PROPERTIES).chain(&ADJECTIVES) {
        t.push(w.to_string());
    }
    t
}
