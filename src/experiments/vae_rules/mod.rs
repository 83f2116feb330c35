//! Reasoning rules in a Transformer language VAE (Zhang, Valentino, Carvalho,
//! Freitas, arXiv 2506.19418): rule datasets, supervision on/off, memory / KV /
//! query latent injection, FFN vs attention rule separation in the encoder,
//! and the data-size curve. `latentlab reproduce vae-rules`.

pub mod claims;
pub mod config;
pub mod eval;
pub mod report;
pub mod run;
pub mod task;

pub use config::VaeRulesStudy;
pub use run::{reproduce, StudyOutcome};
