//! The metrics log: one JSON object per logged step in `metrics.jsonl`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::error::{io_err, TrainError};

/// Scalar metrics by name.
pub type Metrics = BTreeMap<String, f64>;

/// Appends `{"step": n, ...}` lines; flushed after each line.
pub struct MetricsSink {
    path: Option<PathBuf>,
    file: Option<File>,
    /// Every record written, in order (for reports and tests).
    pub records: Vec<(u64, Metrics)>,
}

impl MetricsSink {
    /// A sink that only keeps records in memory.
    pub fn memory() -> Self {
        Self { path: None, file: None, records: Vec::new() }
    }

    /// Append to `path`, keeping only records with `step <= keep_upto` from an
    /// earlier run (resume) — or none when `keep_upto` is None.
    pub fn open(path: &Path, keep_upto: Option<u64>) -> Result<Self, TrainError> {
        let mut records = Vec::new();
        if let (Some(limit), true) = (keep_upto, path.exists()) {
            let f = File::open(path).map_err(|e| io_err(path, e))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| io_err(path, e))?;
                let Ok(obj) = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(&line) else { continue };
                let step = obj.get("step").and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
                if step > limit {
                    continue;
                }
                let m: Metrics = obj.iter().filter(|(k, _)| *k != "step").filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect();
                records.push((step, m));
            }
        }
        let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(path).map_err(|e| io_err(path, e))?;
        for (step, m) in &records {
            writeln!(file, "{}", Self::line(*step, m)).map_err(|e| io_err(path, e))?;
        }
        Ok(Self { path: Some(path.to_path_buf()), file: Some(file), records })
    }

    fn line(step: u64, m: &Metrics) -> String {
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), step.into());
        for (k, v) in m {
            let v = if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null };
            obj.insert(k.clone(), v);
        }
        serde_json::Value::Object(obj).to_string()
    }

    pub fn log(&mut self, step: u64, m: Metrics) -> Result<(), TrainError> {
        if let (Some(f), Some(p)) = (self.file.as_mut(), self.path.as_ref()) {
            writeln!(f, "{}", Self::line(step, &m)).map_err(|e| io_err(p, e))?;
            f.flush().map_err(|e| io_err(p, e))?;
        }
        self.records.push((step, m));
        Ok(())
    }

    /// The series of one metric as (step, value).
    pub fn series(&self, name: &str) -> Vec<(u64, f64)> {
        self.records.iter().filter_map(|(s, m)| m.get(name).map(|v| (*s, *v))).collect()
    }
}
