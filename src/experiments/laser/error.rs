//! Errors of the LASER study on pretrained models: folder layout, probes, edits,
//! I/O and reports. One `thiserror` enum; every message names the file or value.

use crate::config::ConfigError;
use crate::models::HfError;
use crate::report::ReportError;
use crate::surgery::SurgeryError;

/// The folder layout `reproduce laser` and `truncate --model` need.
pub const LAYOUT_HELP: &str = "a local Hugging Face model folder (GPT-NeoX/Pythia or Qwen2/Qwen2.5) holding \
`config.json`, the weights as `model.safetensors` or as shards `model-0000x-of-0000y.safetensors` listed in \
`model.safetensors.index.json`, and `tokenizer.json`; e.g. the folder written by \
`huggingface-cli download EleutherAI/pythia-160m --local-dir models/pythia-160m`";

#[derive(Debug, thiserror::Error)]
pub enum LaserError {
    /// No `--model` was given.
    #[error("no model folder given: pass --model DIR (or --set model=DIR), where DIR is {LAYOUT_HELP}")]
    NoModel,
    /// The folder lacks required files.
    #[error("{dir}: missing {missing}; expected {LAYOUT_HELP}")]
    Layout { dir: String, missing: String },
    /// The probe set cannot be built or is empty.
    #[error("probes: {msg}")]
    Probe { msg: String },
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    Surgery(#[from] SurgeryError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl LaserError {
    /// Bad input (exit code 2) rather than a failure while running.
    pub fn is_usage(&self) -> bool {
        match self {
            LaserError::NoModel | LaserError::Layout { .. } | LaserError::Probe { .. } => true,
            LaserError::Config(_) | LaserError::Hf(_) | LaserError::Surgery(_) | LaserError::Io { .. } => true,
            LaserError::Report(_) | LaserError::Candle(_) => false,
        }
    }
}

/// `Ok` when `dir` has config.json, safetensors weights and tokenizer.json.
pub fn check_layout(dir: &std::path::Path) -> Result<(), LaserError> {
    let d = dir.display().to_string();
    if !dir.is_dir() {
        return Err(LaserError::Layout { dir: d, missing: "the folder itself (it does not exist)".into() });
    }
    let mut missing = Vec::new();
    if !dir.join("config.json").is_file() {
        missing.push("`config.json`");
    }
    if !dir.join("model.safetensors").is_file() && !dir.join("model.safetensors.index.json").is_file() {
        missing.push("`model.safetensors` (or `model.safetensors.index.json` + shards)");
    }
    if !dir.join("tokenizer.json").is_file() {
        missing.push("`tokenizer.json`");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LaserError::Layout { dir: d, missing: missing.join(", ") })
    }
}
