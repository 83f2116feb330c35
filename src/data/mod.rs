//! Task generators and dataset I/O, all seeded. Imports nothing from the
//! rest of the crate.

pub mod assoc_memory;
pub mod char_stats;
pub mod compgraph;
pub mod error;
pub mod induction;
pub mod noisy_recall;
pub mod rules;
pub mod rules_explanatory;
pub mod rules_math;
pub mod rules_syllogism;
pub mod rules_vocab;

pub use error::DataError;

/// A batch of token sequences for next-token training.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq_len: usize,
    /// (batch · seq_len) input ids, row-major.
    pub inputs: Vec<u32>,
    /// (batch · seq_len) target ids.
    pub targets: Vec<u32>,
    /// (batch · seq_len) loss weights (1 = scored).
    pub weights: Vec<f32>,
}
