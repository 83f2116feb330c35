//! Truncation study (Chen, Bruna, Bietti, arXiv 2406.03068): noisy in-context
//! recall, FFN vs attention, low-rank truncation, training dynamics and the
//! associative-memory toys. `latentlab reproduce truncation`.

pub mod claims;
pub mod config;
pub mod report;
pub mod run;
pub mod sweep;
pub mod task;

pub use config::TruncationStudy;
pub use run::{reproduce, StudyOutcome};
