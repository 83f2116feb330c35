//! Token and positional embeddings (learned, fixed random, or none; RoPE
//! lives in attention).

use candle_core::{Result, Tensor};

use super::params::{Init, ParamBuilder};

/// A lookup table `weight: (n, d_model)`.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(n: usize, d_model: usize, init: Init, frozen: bool, vb: &ParamBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get((n, d_model), "weight", init, frozen)? })
    }

    /// `ids: (batch, pos) u32 -> (batch, pos, d_model)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let d = self.weight.dim(1)?;
        self.weight.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, d))
    }

    /// Rows `0..t`: `(pos, d_model)` (positional tables).
    pub fn first(&self, t: usize) -> Result<Tensor> {
        self.weight.narrow(0, 0, t)
    }
}

/// Where position information comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosKind {
    /// Trainable table, N(0, 0.02²).
    #[default]
    Learned,
    /// Frozen table with N(0, 1) entries (the truncation study).
    FixedRandom,
    /// Rotary embeddings inside attention (no table).
    Rope,
    /// No position information besides the causal mask.
    None,
}

/// One table per categorical factor, summed: `Σ_f E_f[ids[.., f]]` (factored tokens,
/// e.g. SYNTAX/VARIABLE/OPERATION/VALUE in arXiv 2510.14095). Tables are `{vb}.{f}.weight`.
#[derive(Debug, Clone)]
pub struct FactoredEmbedding {
    pub factors: Vec<Embedding>,
}

impl FactoredEmbedding {
    pub fn new(sizes: &[usize], d_model: usize, init: Init, vb: &ParamBuilder) -> Result<Self> {
        let factors = sizes.iter().enumerate().map(|(f, &n)| Embedding::new(n, d_model, init, false, &vb.pp(f))).collect::<Result<_>>()?;
        Ok(Self { factors })
    }

    /// `ids: (batch, pos, n_factors) u32 -> (batch, pos, d_model)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        for (f, table) in self.factors.iter().enumerate() {
            let e = table.forward(&ids.narrow(2, f, 1)?.squeeze(2)?.contiguous()?)?;
            sum = Some(match sum {
                Some(s) => (s + e)?,
                None => e,
            });
        }
        sum.ok_or_else(|| candle_core::Error::Msg("FactoredEmbedding with no factors".into()))
    }
}
