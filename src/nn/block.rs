//! A residual block: attention then FFN, pre-LN sequential or parallel
//! (GPT-NeoX: `x + attn(ln1 x) + mlp(ln2 x)`).

use candle_core::{Result, Tensor};

use super::attention::{Attention, AttentionConfig, AttnCond};
use super::mlp::{Mlp, MlpConfig};
use super::norm::{Norm, NormKind};
use super::params::ParamBuilder;
use crate::interp::hooks::{HookPoint, Hooks};

/// How attention and FFN are combined with the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidualKind {
    /// `mid = x + attn(ln1 x)`, `out = mid + mlp(ln2 mid)`.
    #[default]
    Sequential,
    /// `out = x + attn(ln1 x) + mlp(ln2 x)`.
    Parallel,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    pub attn: AttentionConfig,
    pub mlp: MlpConfig,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub residual: ResidualKind,
}

#[derive(Debug, Clone)]
pub struct Block {
    ln1: Norm,
    attn: Attention,
    ln2: Norm,
    mlp: Option<Mlp>,
    residual: ResidualKind,
    layer: usize,
}

impl Block {
    pub fn new(cfg: &BlockConfig, layer: usize, vb: &ParamBuilder) -> Result<Self> {
        let d = cfg.attn.d_model;
        Ok(Self {
            ln1: Norm::new(cfg.norm, d, cfg.norm_eps, &vb.pp("ln1"))?,
            attn: Attention::new(&cfg.attn, layer, &vb.pp("attn"))?,
            ln2: Norm::new(cfg.norm, d, cfg.norm_eps, &vb.pp("ln2"))?,
            mlp: Mlp::new(&cfg.mlp, layer, &vb.pp("mlp"))?,
            residual: cfg.residual,
            layer,
        })
    }

    /// The FFN, if this layer has one.
    pub fn attn(&self) -> &Attention {
        &self.attn
    }

    pub fn mlp(&self) -> Option<&Mlp> {
        self.mlp.as_ref()
    }

    fn normed(norm: &Norm, point: HookPoint, x: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        if norm.is_identity() {
            return Ok(x.clone());
        }
        hooks.apply(point, norm.forward(x)?)
    }

    /// `resid: (batch, pos, d_model) -> (batch, pos, d_model)`.
    pub fn forward(&self, resid: &Tensor, hooks: &mut Hooks) -> Result<Tensor> {
        self.forward_cond(resid, &AttnCond::default(), hooks)
    }

    /// `forward` with the attention conditioned on `cond` (padding mask,
    /// bidirectional pattern, latent injection).
    pub fn forward_cond(&self, resid: &Tensor, cond: &AttnCond, hooks: &mut Hooks) -> Result<Tensor> {
        let l = self.layer;
        let resid = hooks.apply(HookPoint::ResidPre(l), resid.clone())?;
        let attn_in = Self::normed(&self.ln1, HookPoint::Ln1Normalized(l), &resid, hooks)?;
        let attn_out = self.attn.forward_cond(&attn_in, cond, hooks)?;
        let attn_out = hooks.apply(HookPoint::AttnOut(l), attn_out)?;
        let out = match self.residual {
            ResidualKind::Sequential => {
                let mid = hooks.apply(HookPoint::ResidMid(l), (&resid + attn_out)?)?;
                match &self.mlp {
                    Some(mlp) => {
                        let mlp_in = Self::normed(&self.ln2, HookPoint::Ln2Normalized(l), &mid, hooks)?;
                        let mlp_out = mlp.forward(&mlp_in, hooks)?;
                        let mlp_out = hooks.apply(HookPoint::MlpOut(l), mlp_out)?;
                        (mid + mlp_out)?
                    }
                    None => mid,
                }
            }
            ResidualKind::Parallel => match &self.mlp {
                Some(mlp) => {
                    let mlp_in = Self::normed(&self.ln2, HookPoint::Ln2Normalized(l), &resid, hooks)?;
                    let mlp_out = mlp.forward(&mlp_in, hooks)?;
                        let mlp_out = hooks.apply(HookPoint::MlpOut(l), mlp_out)?;
                    ((&resid + attn_out)? + mlp_out)?
                }
                None => (&resid + attn_out)?,
            },
        };
        hooks.apply(HookPoint::ResidPost(l), out)
    }

    /// The block's output at `rows` of the flattened `(batch·pos)` stream only
    /// (strictly increasing): `(batch, pos, d_model) -> (n, d_model)`. The keys and
    /// values of attention use every position; the queries, the pattern, the residual
    /// adds, the norm and the MLP run on the kept rows (`Attention::forward_rows`).
    /// Equals `forward` flattened and gathered (no hooks); a loss that reads few
    /// positions needs nothing more from the last block.
    pub fn forward_rows(&self, resid: &Tensor, rows: &[u32]) -> Result<Tensor> {
        let (b, t, d) = resid.dims3()?;
        let mut hooks = Hooks::none();
        let attn_in = Self::normed(&self.ln1, HookPoint::Ln1Normalized(self.layer), resid, &mut hooks)?;
        let attn_out = self.attn.forward_rows(&attn_in, rows)?;
        let idx = Tensor::from_slice(rows, rows.len(), resid.device())?;
        let resid = resid.reshape((b * t, d))?.index_select(&idx, 0)?.unsqueeze(0)?;
        let attn_out = attn_out.unsqueeze(0)?;
        let mid = (&resid + attn_out)?;
        let out = match (&self.mlp, self.residual) {
            (None, _) => mid,
            (Some(mlp), ResidualKind::Sequential) => {
                let mlp_in = Self::normed(&self.ln2, HookPoint::Ln2Normalized(self.layer), &mid, &mut hooks)?;
                (&mid + mlp.forward(&mlp_in, &mut hooks)?)?
            }
            (Some(mlp), ResidualKind::Parallel) => {
                let mlp_in = Self::normed(&self.ln2, HookPoint::Ln2Normalized(self.layer), &resid, &mut hooks)?;
                (&mid + mlp.forward(&mlp_in, &mut hooks)?)?
            }
        };
        out.squeeze(0)
    }
}
