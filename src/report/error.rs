//! The one error type of `report`: I/O failures carry the path, plotting
//! failures carry the chart title. May import nothing from the rest of the
//! crate.

use std::path::PathBuf;

/// Errors produced by `crate::report` (chart rendering and report writing).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading or writing a file failed at the OS level.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or directory that could not be written.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `plotters` failed while drawing a chart.
    #[error("chart `{title}`: drawing failed: {message}")]
    Plot {
        /// Title of the chart being drawn.
        title: String,
        /// The backend's error, rendered as text.
        message: String,
    },

    /// There is nothing to draw: no series, or no finite point in any series
    /// (non-positive values also count as missing on a log axis).
    #[error("chart `{title}`: nothing to plot (no series or no finite points)")]
    NoData {
        /// Title of the chart.
        title: String,
    },

    /// The inputs are inconsistent, e.g. a bar group with the wrong number
    /// of values or a ragged heatmap matrix.
    #[error("{what}: {message}")]
    InvalidInput {
        /// What was being built: "chart `title`" or "report `name`".
        what: String,
        /// What was expected and what was found.
        message: String,
    },
}

impl ReportError {
    /// Wraps any displayable plotting error with the chart title.
    pub(crate) fn plot(title: &str, err: impl std::fmt::Display) -> Self {
        ReportError::Plot {
            title: title.to_string(),
            message: err.to_string(),
        }
    }

    /// An `InvalidInput` error about the chart titled `title`.
    pub(crate) fn chart_input(title: &str, message: impl Into<String>) -> Self {
        ReportError::InvalidInput {
            what: format!("chart `{title}`"),
            message: message.into(),
        }
    }
}
