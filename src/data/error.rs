//! Typed errors of the data layer: configuration validation, character statistics, and JSONL
//! dataset I/O for the noisy in-context recall task (arXiv 2406.03068, §2 of the spec).
//!
//! Messages are meant to be shown to a user as-is: they name the file, the 1-based line, the
//! field and what was expected, e.g. "data.jsonl:3: field `inputs`: expected 64 token ids < 65, got 63".

use std::path::PathBuf;

/// Errors produced by `crate::data` (config validation, statistics loading, JSONL I/O).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A configuration field is out of range or inconsistent with another field.
    #[error("invalid config: field `{field}`: {message}")]
    InvalidConfig {
        /// Name of the offending field, as spelled in the config file.
        field: &'static str,
        /// What was expected and what was found.
        message: String,
    },

    /// The embedded or supplied character statistics are malformed.
    #[error("character statistics: {0}")]
    CharStats(String),

    /// Reading or writing a file failed at the OS level.
    #[error("{}: {source}", path.display())]
    Io {
        /// File that could not be read or written.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A JSONL line is not valid JSON (or not a JSON object).
    #[error("{}:{line}: invalid JSON: {message}", path.display())]
    Json {
        /// File being read.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Parser message.
        message: String,
    },

    /// A JSONL record has a missing, unknown or malformed field.
    #[error("{}:{line}: field `{field}`: {message}", path.display())]
    Field {
        /// File being read.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Name of the field.
        field: String,
        /// What was expected and what was found.
        message: String,
    },

    /// The file contains no records.
    #[error("{}: no sequences (file is empty)", path.display())]
    Empty {
        /// File being read.
        path: PathBuf,
    },

    /// An in-memory batch is inconsistent (e.g. buffer lengths do not match `batch * seq_len`).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
}

impl DataError {
    /// Shorthand for [`DataError::InvalidConfig`].
    pub fn config(field: &'static str, message: impl Into<String>) -> Self {
        DataError::InvalidConfig {
            field,
            message: message.into(),
        }
    }
}
