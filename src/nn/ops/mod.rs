//! Fused CPU kernels with analytic backward (candle custom ops), one file per op.
//!
//! Every public function is differentiable through candle's autograd. Each `*_reference` twin is the
//! composed candle version: the test oracle and the fallback off the CPU or for non-f32 input.
//! Results are bit-identical for any rayon thread count (fixed blocks for cross-row sums).
//! May import only candle-core, candle-nn and rayon.

pub(crate) mod cpu;
mod cross_entropy;
mod gelu;
mod gelu_erf;
mod layer_norm;
mod optim;
mod relu;
mod rms_norm;
mod softmax;

pub use cross_entropy::{cross_entropy, cross_entropy_reference};
pub use gelu::{gelu, gelu_reference};
pub use gelu_erf::{gelu_erf, gelu_erf_reference};
pub use layer_norm::{layer_norm, layer_norm_reference};
pub use optim::{
    adamw_update, adamw_update_reference, sgd_update, sgd_update_reference, sum_sq,
    sum_sq_reference, AdamWHyper, SgdHyper,
};
pub use relu::{relu, relu_reference};
pub use rms_norm::{rms_norm, rms_norm_reference};
pub use softmax::{
    causal_softmax, causal_softmax_reference, softmax_last_dim, softmax_last_dim_reference,
};
pub mod attention;
pub use attention::{causal_attention, causal_attention_reference, causal_attention_rows, causal_attention_rows_reference};
pub mod attention_bias;
pub use attention_bias::{causal_attention_bias, causal_attention_bias_reference, distance_bias};
pub mod linear;
pub use linear::{linear, linear_reference};
