//! The studies: each folder holds its config, runs, claims table and report,
//! built from the shared data, models, train, surgery, interp and report
//! modules (no private copies of the training loop or the models).

pub mod checkpoint;
pub mod claims;
pub mod error;
pub mod laser;
pub mod pool;
pub mod recursive;
pub mod truncation;
pub mod vae_rules;
