//! JSONL dataset I/O of the noisy in-context recall task (spec §2; arXiv 2406.03068): one JSON
//! object per sequence, atomic writes, and reads whose errors name file, line and field, e.g.
//! "data.jsonl:3: field `inputs`: expected 64 token ids < 65, got 63". Re-exported by
//! [`super`] as `write_jsonl` / `read_jsonl`.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

use super::super::char_stats::VOCAB_SIZE;
use super::super::error::DataError;
use super::NoisyRecallBatch;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write one JSON object per sequence (`inputs`, `targets`, `counter`, `answer` (an integer when
/// K = 1, else an array), `scored`, `target_is_noise`, `triggers`, `noise_token`) atomically:
/// a temporary file in the same directory is written, synced and renamed over `path`.
pub fn write_jsonl(path: impl AsRef<Path>, batch: &NoisyRecallBatch) -> Result<(), DataError> {
    let path = path.as_ref();
    let n = batch.batch * batch.seq_len;
    let lens = [
        batch.inputs.len(),
        batch.targets.len(),
        batch.counter.len(),
        batch.scored.len(),
        batch.target_is_noise.len(),
    ];
    if lens.iter().any(|&l| l != n) || batch.answer.len() != batch.batch * batch.triggers.len() {
        return Err(DataError::InvalidBatch(format!(
            "buffer lengths {lens:?} / answer {} do not match batch {} × seq_len {}",
            batch.answer.len(),
            batch.batch,
            batch.seq_len
        )));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> Result<(), std::io::Error> {
        let f = std::fs::File::create(&tmp)?;
        let mut w = BufWriter::new(f);
        let k = batch.triggers.len();
        for b in 0..batch.batch {
            let r = batch.row(b);
            let answers = &batch.answer[b * k..(b + 1) * k];
            let obj = json!({
                "inputs": &batch.inputs[r.clone()],
                "targets": &batch.targets[r.clone()],
                "counter": &batch.counter[r.clone()],
                "answer": if k == 1 { json!(answers[0]) } else { json!(answers) },
                "scored": &batch.scored[r.clone()],
                "target_is_noise": &batch.target_is_noise[r],
                "triggers": &batch.triggers,
                "noise_token": batch.noise_token,
            });
            serde_json::to_writer(&mut w, &obj)?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

/// Per-line field reader producing `file:line: field `x`: ...` errors.
struct LineCtx<'a> {
    path: &'a Path,
    line: usize,
}

impl LineCtx<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> DataError {
        DataError::Field {
            path: self.path.to_path_buf(),
            line: self.line,
            field: field.into(),
            message: message.into(),
        }
    }
    /// Array of `len` unsigned integers, each `< bound` if given.
    fn uints(
        &self,
        obj: &Map<String, Value>,
        field: &str,
        len: Option<usize>,
        bound: Option<u64>,
        what: &str,
    ) -> Result<Vec<u32>, DataError> {
        let expect = || {
            let n = len.map_or("an array of".to_string(), |l| l.to_string());
            let b = bound.map_or(String::new(), |b| format!(" < {b}"));
            format!("expected {n} {what}{b}")
        };
        let arr = match obj.get(field) {
            None => return Err(self.err(field, format!("missing ({})", expect()))),
            Some(Value::Array(a)) => a,
            Some(other) => {
                return Err(self.err(field, format!("{}, got {}", expect(), kind(other))))
            }
        };
        if len.is_some_and(|l| l != arr.len()) || arr.is_empty() {
            return Err(self.err(field, format!("{}, got {}", expect(), arr.len())));
        }
        arr.iter()
            .enumerate()
            .map(|(i, v)| match v.as_u64() {
                Some(x) if bound.is_none_or(|b| x < b) && x <= u32::MAX as u64 => Ok(x as u32),
                _ => Err(self.err(field, format!("{}, element {i} is {v}", expect()))),
            })
            .collect()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const KNOWN_FIELDS: [&str; 8] = [
    "inputs",
    "targets",
    "counter",
    "answer",
    "scored",
    "target_is_noise",
    "triggers",
    "noise_token",
];

/// Read a JSONL file written by [`write_jsonl`]. `inputs`, `targets`, `counter`, `answer` and
/// `scored` are required; `triggers` (default `[1]`), `noise_token` (default 2) and
/// `target_is_noise` (default: trigger position whose target is τ and ȳ ≠ τ) are optional. T is
/// taken from the first record; targets must be the inputs shifted by one and the counter must match
/// the trigger occurrences. Blank lines are skipped. Errors name file, line and field.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<NoisyRecallBatch, DataError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let v = VOCAB_SIZE as u64;
    let mut out: Option<NoisyRecallBatch> = None;
    for (idx, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let cx = LineCtx {
            path,
            line: idx + 1,
        };
        let obj = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(DataError::Json {
                    path: path.into(),
                    line: cx.line,
                    message: format!("expected a JSON object, got {}", kind(&other)),
                })
            }
            Err(e) => {
                return Err(DataError::Json {
                    path: path.into(),
                    line: cx.line,
                    message: e.to_string(),
                })
            }
        };
        if let Some(f) = obj.keys().find(|f| !KNOWN_FIELDS.contains(&f.as_str())) {
            return Err(cx.err(
                f,
                format!("unknown field (expected one of {KNOWN_FIELDS:?})"),
            ));
        }
        let t_len = out.as_ref().map(|b| b.seq_len);
        let inputs = cx.uints(&obj, "inputs", t_len, Some(v), "token ids")?;
        let t_len = inputs.len();
        let targets = cx.uints(&obj, "targets", Some(t_len), Some(v), "token ids")?;
        if let Some(t) = (0..t_len - 1).find(|&t| targets[t] != inputs[t + 1]) {
            return Err(cx.err(
                "targets",
                format!(
                    "expected targets[{t}] == inputs[{}] = {} (inputs shifted by one), got {}",
                    t + 1,
                    inputs[t + 1],
                    targets[t]
                ),
            ));
        }
        let triggers = match obj.get("triggers") {
            None => vec![1],
            Some(_) => cx.uints(&obj, "triggers", None, Some(v), "token ids")?,
        };
        let noise_token = match obj.get("noise_token") {
            None => 2,
            Some(x) => match x.as_u64() {
                Some(t) if t < v => t as u32,
                _ => {
                    return Err(cx.err("noise_token", format!("expected a token id < {v}, got {x}")))
                }
            },
        };
        let answer = match obj.get("answer") {
            Some(Value::Number(x)) if triggers.len() == 1 && x.as_u64().is_some_and(|a| a < v) => {
                vec![x.as_u64().unwrap() as u32]
            }
            Some(Value::Array(_)) => {
                cx.uints(&obj, "answer", Some(triggers.len()), Some(v), "token ids")?
            }
            Some(x) => {
                return Err(cx.err(
                    "answer",
                    format!(
                        "expected a token id < {v} (or {} token ids for {} triggers), got {x}",
                        triggers.len(),
                        triggers.len()
                    ),
                ))
            }
            None => return Err(cx.err("answer", "missing (expected a token id)")),
        };
        let counter = cx.uints(&obj, "counter", Some(t_len), None, "counts")?;
        let mut counts = vec![0u32; triggers.len()];
        for t in 0..t_len {
            let expected = triggers
                .iter()
                .position(|&q| q == inputs[t])
                .map_or(0, |k| {
                    counts[k] += 1;
                    counts[k]
                });
            if counter[t] != expected {
                return Err(cx.err("counter", format!("position {t}: expected {expected} (occurrence index of the trigger, 0 elsewhere), got {}", counter[t])));
            }
        }
        let scored = match obj.get("scored") {
            Some(Value::Array(a)) if a.len() == t_len => a
                .iter()
                .enumerate()
                .map(|(i, x)| match x.as_f64() {
                    Some(s) if s == 0.0 || s == 1.0 => Ok(s as f32),
                    _ => Err(cx.err(
                        "scored",
                        format!("expected {t_len} weights in {{0, 1}}, element {i} is {x}"),
                    )),
                })
                .collect::<Result<Vec<f32>, _>>()?,
            Some(x) => {
                return Err(cx.err(
                    "scored",
                    format!(
                        "expected {t_len} weights in {{0, 1}}, got {}",
                        x.as_array()
                            .map_or(kind(x).to_string(), |a| a.len().to_string())
                    ),
                ))
            }
            None => {
                return Err(cx.err(
                    "scored",
                    format!("missing (expected {t_len} weights in {{0, 1}})"),
                ))
            }
        };
        let target_is_noise: Vec<bool> = match obj.get("target_is_noise") {
            None => (0..t_len)
                .map(|t| {
                    counter[t] > 0 && targets[t] == noise_token && !answer.contains(&noise_token)
                })
                .collect(),
            Some(Value::Array(a)) if a.len() == t_len && a.iter().all(Value::is_boolean) => {
                a.iter().map(|x| x.as_bool().unwrap()).collect()
            }
            Some(x) => {
                return Err(cx.err(
                    "target_is_noise",
                    format!("expected {t_len} booleans, got {x}"),
                ))
            }
        };
        let b = out.get_or_insert_with(|| NoisyRecallBatch {
            batch: 0,
            seq_len: t_len,
            triggers: triggers.clone(),
            noise_token,
            inputs: vec![],
            targets: vec![],
            counter: vec![],
            answer: vec![],
            scored: vec![],
            target_is_noise: vec![],
        });
        if b.triggers != triggers || b.noise_token != noise_token {
            return Err(cx.err(
                if b.triggers != triggers {
                    "triggers"
                } else {
                    "noise_token"
                },
                "differs from the first record",
            ));
        }
        b.batch += 1;
        b.inputs.extend(inputs);
        b.targets.extend(targets);
        b.counter.extend(counter);
        b.answer.extend(answer);
        b.scored.extend(scored);
        b.target_is_noise.extend(target_is_noise);
    }
    out.ok_or_else(|| DataError::Empty { path: path.into() })
}
