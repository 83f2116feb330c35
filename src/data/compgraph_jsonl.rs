//! The plain-text equation format of spec §2.3 (`17 = x_5 <EQ_SEP> x_5 ADD x_3 = x_9`) and
//! JSONL problem files: one object per line, `{"modulus", "problem", "values", "depths"}`
//! (`values`/`depths` per equation, optional on input and then checked). Writes are atomic;
//! read errors name file, line, field and reason (cycles, undefined variables, values ≥ p,
//! unknown tokens).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::{json, Value};

use super::super::error::DataError;
use super::{encode, eval_node, Equation, Op, Problem, Vocab};

/// The text of a problem: equations joined by ` <EQ_SEP> `, no padding.
pub fn problem_text(problem: &Problem) -> String {
    let eqs: Vec<String> = problem
        .equations
        .iter()
        .map(|e| {
            let lhs = if e.parents.is_empty() {
                e.value.to_string()
            } else {
                let mut s = format!("x_{}", e.parents[0]);
                for (op, par) in e.ops.iter().zip(&e.parents[1..]) {
                    s.push_str(&format!(" {} x_{par}", op.token()));
                }
                s
            };
            format!("{lhs} = x_{}", e.var)
        })
        .collect();
    eqs.join(" <EQ_SEP> ")
}

fn parse_var(tok: &str) -> Option<u32> {
    let digits = tok.strip_prefix("x_")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parse the text format, recomputing values and depths. Trailing `<PAD>` tokens are
/// ignored. Errors name the 1-based equation and the reason.
pub fn parse_problem(text: &str, modulus: u32) -> Result<Problem, String> {
    let toks: Vec<&str> = text.split_whitespace().collect();
    let end = toks.iter().rposition(|t| *t != "<PAD>").map_or(0, |i| i + 1);
    if end == 0 {
        return Err("no equations".into());
    }
    let mut equations = Vec::new();
    let mut defined: HashMap<u32, (u32, u32)> = HashMap::new(); // var -> (value, depth)
    for (k, eq_toks) in toks[..end].split(|t| *t == "<EQ_SEP>").enumerate() {
        let at = |msg: String| format!("equation {} (`{}`): {msg}", k + 1, eq_toks.join(" "));
        let n = eq_toks.len();
        if n < 3 || eq_toks[n - 2] != "=" {
            return Err(at("expected `<lhs> = <var>`".into()));
        }
        let var = parse_var(eq_toks[n - 1]).ok_or_else(|| at(format!("unknown token `{}` (expected a variable x_i)", eq_toks[n - 1])))?;
        let lhs = &eq_toks[..n - 2];
        let eq = if lhs.len() == 1 && lhs[0].bytes().all(|b| b.is_ascii_digit()) {
            let value: u32 = lhs[0].parse().map_err(|_| at(format!("value `{}` is not a number", lhs[0])))?;
            if value >= modulus {
                return Err(at(format!("value {value} is not below the modulus {modulus}")));
            }
            Equation { var, parents: vec![], ops: vec![], value, depth: 0 }
        } else {
            if lhs.len() % 2 == 0 {
                return Err(at("expected `x_a [OP x_b]…` on the left of `=`".into()));
            }
            let (mut parents, mut ops) = (Vec::new(), Vec::new());
            for (j, tok) in lhs.iter().enumerate() {
                if j % 2 == 1 {
                    ops.push(Op::from_token(tok).ok_or_else(|| at(format!("unknown token `{tok}` (expected ADD, SUB or MUL)")))?);
                    continue;
                }
                let par = parse_var(tok).ok_or_else(|| at(format!("unknown token `{tok}` (expected a variable x_i)")))?;
                if !defined.contains_key(&par) {
                    let later = toks[..end].split(|t| *t == "<EQ_SEP>").skip(k).any(|e| e.last().and_then(|t| parse_var(t)) == Some(par));
                    return Err(at(if later {
                        format!("variable `x_{par}` is used before its definition (a cycle or a child before its parent)")
                    } else {
                        format!("variable `x_{par}` is undefined")
                    }));
                }
                parents.push(par);
            }
            let vals: Vec<u32> = parents.iter().map(|p| defined[p].0).collect();
            let depth = 1 + parents.iter().map(|p| defined[p].1).max().unwrap_or(0);
            Equation { var, value: eval_node(&vals, &ops, modulus), depth, parents, ops }
        };
        if defined.insert(var, (eq.value, eq.depth)).is_some() {
            return Err(at(format!("variable `x_{var}` is defined twice")));
        }
        equations.push(eq);
    }
    Ok(Problem { modulus, equations })
}

/// Write one JSON object per problem atomically (temp file in the same directory, then rename).
pub fn write_jsonl(path: impl AsRef<Path>, problems: &[Problem]) -> Result<(), DataError> {
    let path = path.as_ref();
    let mut text = String::new();
    for p in problems {
        let obj = json!({
            "modulus": p.modulus,
            "problem": problem_text(p),
            "values": p.equations.iter().map(|e| e.value).collect::<Vec<_>>(),
            "depths": p.equations.iter().map(|e| e.depth).collect::<Vec<_>>(),
        });
        text.push_str(&obj.to_string());
        text.push('\n');
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DataError::Io { path: p, source }
    };
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// Read problems written by `write_jsonl` (or any tool using the same format), checking
/// each against `vocab` (modulus, name pool, operations).
pub fn read_jsonl(path: impl AsRef<Path>, vocab: &Vocab) -> Result<Vec<Problem>, DataError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let lineno = i + 1;
        let field_err = |field: &str, message: String| DataError::Field { path: path.to_path_buf(), line: lineno, field: field.into(), message };
        let obj: serde_json::Map<String, Value> = match serde_json::from_str(&line) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(DataError::Json { path: path.to_path_buf(), line: lineno, message: "expected a JSON object".into() }),
            Err(e) => return Err(DataError::Json { path: path.to_path_buf(), line: lineno, message: e.to_string() }),
        };
        for key in obj.keys() {
            if !["modulus", "problem", "values", "depths"].contains(&key.as_str()) {
                return Err(field_err(key, "unknown field (expected modulus, problem, values, depths)".into()));
            }
        }
        let modulus = match obj.get("modulus") {
            None => vocab.modulus,
            Some(v) => v.as_u64().filter(|&m| m == vocab.modulus as u64).ok_or_else(|| field_err("modulus", format!("expected {}, got {v}", vocab.modulus)))? as u32,
        };
        let text = obj.get("problem").and_then(Value::as_str).ok_or_else(|| field_err("problem", "missing or not a string".into()))?;
        let problem = parse_problem(text, modulus).map_err(|m| field_err("problem", m))?;
        encode(&problem, vocab).map_err(|m| field_err("problem", m))?;
        for (field, expected) in [
            ("values", problem.equations.iter().map(|e| e.value).collect::<Vec<_>>()),
            ("depths", problem.equations.iter().map(|e| e.depth).collect()),
        ] {
            let Some(v) = obj.get(field) else { continue };
            let got: Option<Vec<u32>> = v.as_array().and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as u32)).collect());
            match got {
                None => return Err(field_err(field, format!("expected an array of {} integers", expected.len()))),
                Some(g) if g.len() != expected.len() => {
                    return Err(field_err(field, format!("expected {} entries (one per equation), got {}", expected.len(), g.len())))
                }
                Some(g) => {
                    if let Some(k) = (0..g.len()).find(|&k| g[k] != expected[k]) {
                        return Err(field_err(field, format!("equation {}: recorded {}, but the equations give {}", k + 1, g[k], expected[k])));
                    }
                }
            }
        }
        out.push(problem);
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}
