//! Looking inside models: hook points, activation caches and interventions.
//!
//! `hooks` is the foundation every model calls into (TransformerLens names).
//! Analyses live beside it and may import `models`, never `train` or `report`.

pub mod fourier;
pub mod heads;
pub mod hooks;
pub mod latent;
pub mod lens;
pub mod patching;
pub mod probes;
pub mod scores;

pub use hooks::{ActivationCache, HookPoint, Hooks, Intervention};
