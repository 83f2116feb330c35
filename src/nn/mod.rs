//! Building blocks: parameters, linear maps, embeddings, norms, attention,
//! FFN and residual blocks, each a struct with a serde config and `forward`.
//!
//! Dimension words (TransformerLens): batch, pos, head_index, d_model, d_head,
//! d_mlp, query_pos, key_pos. May import `interp::hooks` only.

pub mod attention;
pub mod block;
pub mod embedding;
pub mod linear;
pub mod mlp;
pub mod norm;
pub mod ops;
pub mod params;
pub mod rope;

pub use attention::{Attention, AttentionConfig, AttnCond, LatentSlot};
pub use block::{Block, BlockConfig, ResidualKind};
pub use embedding::{Embedding, FactoredEmbedding, PosKind};
pub use linear::{FactorHeads, Linear};
pub use mlp::{Act, FfnKind, Mlp, MlpConfig};
pub use norm::{Norm, NormKind};
pub use params::{Init, ParamBuilder, Params};
