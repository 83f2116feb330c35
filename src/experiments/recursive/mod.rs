//! Recursive latent-space reasoning (Altabaa et al., arXiv 2510.14095): modular-arithmetic
//! computation graphs, a recurrent Transformer with per-step supervision, a discrete
//! bottleneck and error-correction training, and the OOD sweep over graph size.
//! `latentlab reproduce recursive`.

pub mod analysis;
pub mod bench;
pub mod checkpoint;
pub mod claims;
pub mod config;
pub mod report;
pub mod run;
pub mod task;

pub use config::RecursiveStudy;
pub use run::{reproduce, RecursiveOutcome};
