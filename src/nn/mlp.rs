//! Position-wise feed-forward layer: `fc_out(act(fc_in(x)))`, SwiGLU
//! (`fc_out(silu(gate_proj x) ⊙ fc_in x)`), a single linear map, or absent.

use candle_core::{Result, Tensor};

use super::linear::{InitScheme, Linear};
use super::ops;
use super::params::ParamBuilder;
use crate::interp::hooks::{HookPoint, Hooks};

/// Nonlinearity of a two-matrix FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    Relu,
    /// GELU, tanh approximation.
    #[default]
    Gelu,
    /// SwiGLU: adds a `gate_proj` matrix.
    Swiglu,
}

/// Shape of a layer's FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FfnKind {
    /// `fc_out(act(fc_in x))`.
    #[default]
    Mlp,
    /// One d_model×d_model matrix `fc_in`, no nonlinearity.
    Linear,
    /// No FFN in this layer.
    None,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    pub d_model: usize,
    pub d_mlp: usize,
    pub kind: FfnKind,
    pub act: Act,
    pub bias: bool,
    pub init: InitScheme,
}

#[derive(Debug, Clone)]
pub struct Mlp {
    fc_in: Linear,
    fc_out: Option<Linear>,
    gate_proj: Option<Linear>,
    act: Act,
    layer: usize,
}

impl Mlp {
    /// `None` when the config has no FFN.
    pub fn new(cfg: &MlpConfig, layer: usize, vb: &ParamBuilder) -> Result<Option<Self>> {
        let (d, m) = (cfg.d_model, cfg.d_mlp);
        Ok(match cfg.kind {
            FfnKind::None => None,
            FfnKind::Linear => Some(Self {
                fc_in: Linear::new(d, d, cfg.bias, cfg.init, false, &vb.pp("fc_in"))?,
                fc_out: None,
                gate_proj: None,
                act: cfg.act,
                layer,
            }),
            FfnKind::Mlp => Some(Self {
                fc_in: Linear::new(d, m, cfg.bias, cfg.init, false, &vb.pp("fc_in"))?,
                fc_out: Some(Linear::new(m, d, cfg.bias, cfg.init, false, &vb.pp("fc_out"))?),
                gate_proj: if cfg.act == Act::Swiglu {
                    Some(Linear::new(d, m, cfg.bias, cfg.init, false, &vb.pp("gate_proj"))?)
                } else {
                    None
                },
                act: cfg.act,
                layer,
            }),
        })
    }

    /// `x: (batch, pos, d_model) -> (batch, pos, d_model)`.
    pub fn forward(&self, x: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        let l = self.layer;
        let pre = hooks.apply(HookPoint::MlpPre(l), self.fc_in.forward(x)?)?;
        let Some(fc_out) = &self.fc_out else {
            return Ok(pre);
        };
        let post = match (self.act, &self.gate_proj) {
            (Act::Relu, _) => ops::relu(&pre)?,
            (Act::Gelu, _) => ops::gelu(&pre)?,
            (Act::Swiglu, Some(gate)) => (candle_nn::ops::silu(&gate.forward(x)?)? * pre)?,
            (Act::Swiglu, None) => unreachable!("SwiGLU always builds gate_proj"),
        };
        let post = hooks.apply(HookPoint::MlpPost(l), post)?;
        fc_out.forward(&post)
    }
}
