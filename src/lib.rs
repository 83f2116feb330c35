//! latentlab: train small Transformers on synthetic reasoning tasks, edit their
//! weights, look inside them, and apply the same edits to pretrained LMs.
//!
//! Data flows `data → models → train → surgery/interp → report`; modules only
//! import down that chain (`nn` and `interp::hooks` are shared foundations).

pub mod config;
pub mod data;
pub mod experiments;
pub mod interp;
pub mod models;
pub mod nn;
pub mod report;
pub mod surgery;
pub mod train;
pub mod util;

pub use candle_core::{DType, Device, Tensor};
