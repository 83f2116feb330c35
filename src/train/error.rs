//! Errors of training and checkpoints.

/// Why training or a checkpoint operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("step {step}: loss is {value} (not finite); last good checkpoint left intact")]
    NonFiniteLoss { step: u64, value: f64 },
    #[error("step {step}: gradient norm is {value} (not finite; first bad parameter `{param}`); last good checkpoint left intact")]
    NonFiniteGrad { step: u64, value: f64, param: String },
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{path}: corrupt or unreadable checkpoint: {msg}")]
    Corrupt { path: String, msg: String },
    #[error("{path}: checkpoint does not fit this model: {msg}")]
    Mismatch { path: String, msg: String },
    /// `train.decay_trigger.metric` is not among the evaluation's metrics.
    #[error("config key `train.decay_trigger.metric`: the evaluation reports no metric `{metric}` (it reports: {available})")]
    UnknownMetric { metric: String, available: String },
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
}

pub(crate) fn io_err(path: &std::path::Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io { path: path.display().to_string(), msg: e.to_string() }
}
