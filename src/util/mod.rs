//! Small shared utilities: progress display and atomic file writes.

pub mod fsx;
pub mod progress;
