//! Errors of the weight-surgery module: edit-spec parsing, unknown targets, SVD failure, tensor I/O.
//!
//! One `thiserror` enum. Every message names what the caller passed (the spec string, the weight
//! name) and what was expected, so a typo on the command line is fixable from the message alone.
//! Imports only candle, thiserror and std.

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, SurgeryError>;

#[derive(Debug, thiserror::Error)]
pub enum SurgeryError {
    // === Parsing ===
    /// An edit (or edit-set) spec string did not parse.
    #[error("edit spec `{spec}`: {msg}")]
    Parse { spec: String, msg: String },

    // === Targets ===
    /// The matrix map has no key for this (layer, matrix), or the weights lack that key.
    #[error("edit `{edit}`: {reason}; valid targets: {valid}")]
    UnknownTarget {
        edit: String,
        reason: String,
        valid: String,
    },
    /// The edit kind does not apply to this target (e.g. `drop` on a single matrix).
    #[error("edit `{edit}`: {msg}")]
    Unsupported { edit: String, msg: String },
    /// A weight is not a 2-D matrix, or two matrices of a product do not chain.
    #[error("weight `{name}`: expected {expected}, got shape {got:?}")]
    BadShape {
        name: String,
        expected: String,
        got: Vec<usize>,
    },

    // === Numerics ===
    /// faer's SVD did not converge.
    #[error("SVD of `{name}` ({m}x{n}) did not converge")]
    SvdNoConvergence { name: String, m: usize, n: usize },

    // === Weights / I/O ===
    /// Loading an edited map into a VarMap found a name mismatch.
    #[error("loading weights into VarMap: {msg}")]
    Load { msg: String },
    #[error("SVD cache directory `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl SurgeryError {
    pub(crate) fn parse(spec: &str, msg: impl Into<String>) -> Self {
        SurgeryError::Parse {
            spec: spec.to_string(),
            msg: msg.into(),
        }
    }
}
