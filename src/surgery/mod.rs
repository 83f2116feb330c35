//! Weight surgery: low-rank truncation, zeroing and block dropping of named weight matrices.
//!
//! Owns the LASER-style interventions (arXiv 2312.13558; truncation study arXiv 2406.03068 §6):
//! an `Edit` (layer, matrix τ, kind) is applied to a *copy* of a model's weights (`ModelWeights`),
//! never in place; names resolve through a `MatrixMap`. SVDs are exact (faer) and cached.
//! `svd`: thin SVD + `SvdCache`; `weights`: τ names, maps, weights; `edit`: specs and sweeps;
//! `apply`: applying an `EditSet`; `params`: edits on a live model for the span of a closure;
//! `hf_maps`: τ → key tables of pretrained architectures. Imports `nn` and `models` (for
//! `Params` and architecture names), never `train`, `interp` analyses or `report`.

pub mod apply;
pub mod edit;
pub mod error;
pub mod hf_maps;
pub mod params;
pub mod svd;
pub mod weights;

pub use apply::{apply, apply_varmap};
pub use edit::{rank_for, sweep_grid, Edit, EditKind, EditSet, Mode, Target};
pub use error::{Result, SurgeryError};
pub use params::{weights_of, with_edits};
pub use svd::{Svd, SvdCache};
pub use weights::{Matrix, MatrixMap, ModelWeights, TemplateMap};
