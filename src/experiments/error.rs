//! The error type every study run returns.

use std::path::Path;

/// Errors of a study run.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// A weight edit that does not apply to the model (bad target, layer or ρ).
    #[error(transparent)]
    Surgery(#[from] crate::surgery::SurgeryError),
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    /// Input that does not fit the run (the message names what and why).
    #[error("{0}")]
    Invalid(String),
}

/// An I/O (or serialisation) failure at `path`.
pub fn io(path: &Path, e: impl std::fmt::Display) -> StudyError {
    StudyError::Io { path: path.display().to_string(), msg: e.to_string() }
}
