//! LASER on pretrained LMs (arXiv 2312.13558; truncation study arXiv 2406.03068 §6.1, §11):
//! built-in reasoning probes (IOI, factual recall), the (layer, τ, ρ) grid with selection on a
//! validation split, and its report. `latentlab reproduce laser --model DIR` and
//! `latentlab truncate --model DIR` call into here. May import everything in the crate.

pub mod config;
pub mod error;
pub mod probes;
pub mod report;
pub mod run;

pub use config::{parse_edits, LaserStudy, ProbeConfig};
pub use error::{check_layout, LaserError, LAYOUT_HELP};
pub use probes::{aggregate, builtin_probes, evaluate, Probe, ProbeKind, ProbeResult, ProbeSet, TokenProbe};
pub use run::{evaluate_edits, generic_attribution, reproduce, sweep, LaserOutcome, Sweep, SweepRow};
