//! LayerNorm / RMSNorm / identity over d_model, through the fused ops.

use candle_core::{Result, Tensor};

use super::ops;
use super::params::{Init, ParamBuilder};

/// Which normalisation a block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// `y = (x − μ)·rstd·γ + β`.
    #[default]
    Layer,
    /// `y = x / √(mean(x²) + ε) · γ`.
    Rms,
    /// Identity.
    None,
}

/// A normalisation layer with parameters `weight` (γ) and, for LayerNorm, `bias` (β).
#[derive(Debug, Clone)]
pub struct Norm {
    kind: NormKind,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    eps: f64,
}

impl Norm {
    pub fn new(kind: NormKind, d_model: usize, eps: f64, vb: &ParamBuilder) -> Result<Self> {
        let (weight, bias) = match kind {
            NormKind::Layer => (
                Some(vb.get(d_model, "weight", Init::Ones, false)?),
                Some(vb.get(d_model, "bias", Init::Zeros, false)?),
            ),
            NormKind::Rms => (Some(vb.get(d_model, "weight", Init::Ones, false)?), None),
            NormKind::None => (None, None),
        };
        Ok(Self { kind, weight, bias, eps })
    }

    /// `x: (batch, pos, d_model) -> (batch, pos, d_model)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match (self.kind, &self.weight, &self.bias) {
            (NormKind::Layer, Some(w), Some(b)) => ops::layer_norm(x, w, b, self.eps),
            (NormKind::Rms, Some(w), _) => ops::rms_norm(x, w, self.eps),
            _ => Ok(x.clone()),
        }
    }

    pub fn is_identity(&self) -> bool {
        self.kind == NormKind::None
    }
}
