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

    /// β of a LayerNorm (None for RMS and identity norms).
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The norm applied to a *part* `x` of the stream `whole` (same shape), with the
    /// scale of `whole` held fixed and without β: `(x − mean x)·rstd(whole)·γ` for
    /// LayerNorm, `x·rrms(whole)·γ` for RMSNorm, `x` for identity. Linear in `x`, so the
    /// parts of a residual stream map to parts that add up to `forward(whole) − β`
    /// (direct logit attribution, TransformerLens' "cached scale").
    pub fn forward_frozen(&self, x: &Tensor, whole: &Tensor) -> Result<Tensor> {
        use candle_core::D;
        let (x32, w32) = (x.to_dtype(candle_core::DType::F32)?, whole.to_dtype(candle_core::DType::F32)?);
        let out = match (self.kind, &self.weight) {
            (NormKind::Layer, Some(g)) => {
                let centred = w32.broadcast_sub(&w32.mean_keepdim(D::Minus1)?)?;
                let rstd = (centred.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
                let xc = x32.broadcast_sub(&x32.mean_keepdim(D::Minus1)?)?;
                xc.broadcast_mul(&rstd)?.broadcast_mul(&g.to_dtype(candle_core::DType::F32)?)?
            }
            (NormKind::Rms, Some(g)) => {
                let rrms = (w32.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
                x32.broadcast_mul(&rrms)?.broadcast_mul(&g.to_dtype(candle_core::DType::F32)?)?
            }
            _ => x32,
        };
        out.to_dtype(x.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(seed: u64, shape: (usize, usize, usize), scale: f64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..shape.0 * shape.1 * shape.2).map(|_| (rng.random::<f64>() * 2.0 - 1.0) as f32 * scale as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn frozen_parts_add_up_to_the_norm_of_the_whole_minus_beta() {
        let d = 16;
        let (a, b, c) = (t(1, (2, 3, d), 1.0), t(2, (2, 3, d), 3.0), t(3, (2, 3, d), 0.5));
        let whole = ((&a + &b).unwrap() + &c).unwrap();
        let gamma = t(4, (1, 1, d), 1.0).flatten_all().unwrap().affine(1.0, 1.5).unwrap();
        let beta = t(5, (1, 1, d), 1.0).flatten_all().unwrap();
        for kind in [NormKind::Layer, NormKind::Rms, NormKind::None] {
            let norm = Norm {
                kind,
                weight: (kind != NormKind::None).then(|| gamma.clone()),
                bias: (kind == NormKind::Layer).then(|| beta.clone()),
                eps: 1e-5,
            };
            let parts = [&a, &b, &c].iter().map(|p| norm.forward_frozen(p, &whole).unwrap()).reduce(|x, y| (x + y).unwrap()).unwrap();
            let parts = match norm.bias() {
                Some(beta) => parts.broadcast_add(beta).unwrap(),
                None => parts,
            };
            let full = norm.forward(&whole).unwrap();
            let err = (parts - &full).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(err < 1e-4, "{kind:?}: max error {err}");
            // Linear in the part: twice the part gives twice the output.
            let once = norm.forward_frozen(&b, &whole).unwrap();
            let twice = norm.forward_frozen(&(&b * 2.0).unwrap(), &whole).unwrap();
            let lin = ((once * 2.0).unwrap() - twice).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(lin < 1e-5, "{kind:?}: not linear ({lin})");
        }
    }
}
