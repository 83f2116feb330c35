//! Affine map `y = x·Wᵀ + b`, W stored (out, in) as in PyTorch and HF checkpoints.

use candle_core::{Result, Tensor};

use super::params::{Init, ParamBuilder};

/// A linear layer; `weight: (out, in)`, optional `bias: (out,)`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// How trainable matrices are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// PyTorch `nn.Linear` default: U(±1/√fan_in) for weight and bias.
    #[default]
    Pytorch,
    /// GPT-2 style: N(0, 0.02²) weights, zero biases.
    Gpt2,
}

impl Linear {
    /// Creates `{vb}.weight` (and `{vb}.bias`) with shape (d_out, d_in).
    pub fn new(d_in: usize, d_out: usize, bias: bool, scheme: InitScheme, frozen: bool, vb: &ParamBuilder) -> Result<Self> {
        let (w_init, b_init) = match scheme {
            InitScheme::Pytorch => {
                let bound = 1.0 / (d_in as f64).sqrt();
                (Init::Uniform { bound }, Init::Uniform { bound })
            }
            InitScheme::Gpt2 => (Init::Normal { std: 0.02 }, Init::Zeros),
        };
        let weight = vb.get((d_out, d_in), "weight", w_init, frozen)?;
        let bias = if bias { Some(vb.get(d_out, "bias", b_init, frozen)?) } else { None };
        Ok(Self { weight, bias })
    }

    /// `x: (..., d_in) -> (..., d_out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let d_in = dims[dims.len() - 1];
        let rows = x.elem_count() / d_in;
        // One fused GEMM over all rows (bias folded in, gradients in place).
        let y = super::ops::linear(&x.reshape((rows, d_in))?, &self.weight, self.bias.as_ref())?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("non-empty dims") = self.weight.dim(0)?;
        y.reshape(out_dims)
    }
}

/// One linear head per categorical factor over a shared hidden state
/// (`{vb}.{f}.weight`, `{vb}.{f}.bias`): factored outputs, e.g. the SYNTAX /
/// VARIABLE / OPERATION / VALUE heads of arXiv 2510.14095.
#[derive(Debug, Clone)]
pub struct FactorHeads {
    pub heads: Vec<Linear>,
}

impl FactorHeads {
    pub fn new(d_model: usize, sizes: &[usize], bias: bool, scheme: InitScheme, vb: &ParamBuilder) -> Result<Self> {
        let heads = sizes.iter().enumerate().map(|(f, &n)| Linear::new(d_model, n, bias, scheme, false, &vb.pp(f))).collect::<Result<_>>()?;
        Ok(Self { heads })
    }

    pub fn len(&self) -> usize {
        self.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// `hidden: (..., d_model) -> [(..., size_f)]`, one tensor per factor.
    pub fn forward(&self, hidden: &Tensor) -> Result<Vec<Tensor>> {
        self.heads.iter().map(|h| h.forward(hidden)).collect()
    }
}
