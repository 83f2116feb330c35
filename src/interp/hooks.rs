//! Named hook points (TransformerLens spelling), activation capture and
//! interventions, passed per forward call and never stored on a model.
//!
//! Names: `hook_embed`, `hook_pos_embed`, `blocks.{l}.hook_resid_pre|mid|post`,
//! `blocks.{l}.hook_attn_out|mlp_out`, `blocks.{l}.attn.hook_q|k|v|z|attn_scores|pattern`,
//! `blocks.{l}.mlp.hook_pre|post`, `blocks.{l}.ln1|ln2.hook_normalized`,
//! `ln_final.hook_normalized`, `hook_logits`; recurrent models prefix `loop.{t}.`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{Result, Tensor};

/// One place in a forward pass where activations can be read or changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings (batch, pos, d_model).
    Embed,
    /// `hook_pos_embed`: positional embeddings (batch, pos, d_model).
    PosEmbed,
    /// `blocks.{l}.hook_resid_pre`: residual stream entering block l.
    ResidPre(usize),
    /// `blocks.{l}.hook_resid_mid`: residual after attention (sequential blocks).
    ResidMid(usize),
    /// `blocks.{l}.hook_resid_post`: residual leaving block l.
    ResidPost(usize),
    /// `blocks.{l}.hook_attn_out`: attention output (batch, pos, d_model).
    AttnOut(usize),
    /// `blocks.{l}.hook_mlp_out`: FFN output (batch, pos, d_model).
    MlpOut(usize),
    /// `blocks.{l}.attn.hook_q`: queries (batch, pos, head_index, d_head).
    AttnQ(usize),
    /// `blocks.{l}.attn.hook_k`: keys (batch, pos, head_index, d_head).
    AttnK(usize),
    /// `blocks.{l}.attn.hook_v`: values (batch, pos, head_index, d_head).
    AttnV(usize),
    /// `blocks.{l}.attn.hook_z`: pattern-weighted values (batch, pos, head_index, d_head).
    AttnZ(usize),
    /// `blocks.{l}.attn.hook_attn_scores`: scaled scores before the causal mask
    /// (batch, head_index, query_pos, key_pos).
    AttnScores(usize),
    /// `blocks.{l}.attn.hook_pattern`: attention probabilities (batch, head_index, query_pos, key_pos).
    AttnPattern(usize),
    /// `blocks.{l}.mlp.hook_pre`: FFN pre-activation (batch, pos, d_mlp).
    MlpPre(usize),
    /// `blocks.{l}.mlp.hook_post`: FFN post-activation (batch, pos, d_mlp).
    MlpPost(usize),
    /// `blocks.{l}.ln1.hook_normalized`: normalised input of attention.
    Ln1Normalized(usize),
    /// `blocks.{l}.ln2.hook_normalized`: normalised input of the FFN.
    Ln2Normalized(usize),
    /// `ln_final.hook_normalized`: normalised final residual.
    LnFinalNormalized,
    /// `hook_logits`: output logits (batch, pos, vocab).
    Logits,
    /// `loop.{step}.<point>`: a point inside loop iteration `step` of a recurrent model.
    Looped { step: usize, point: Box<HookPoint> },
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HookPoint::*;
        match self {
            Embed => write!(f, "hook_embed"),
            PosEmbed => write!(f, "hook_pos_embed"),
            ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            AttnQ(l) => write!(f, "blocks.{l}.attn.hook_q"),
            AttnK(l) => write!(f, "blocks.{l}.attn.hook_k"),
            AttnV(l) => write!(f, "blocks.{l}.attn.hook_v"),
            AttnZ(l) => write!(f, "blocks.{l}.attn.hook_z"),
            AttnScores(l) => write!(f, "blocks.{l}.attn.hook_attn_scores"),
            AttnPattern(l) => write!(f, "blocks.{l}.attn.hook_pattern"),
            MlpPre(l) => write!(f, "blocks.{l}.mlp.hook_pre"),
            MlpPost(l) => write!(f, "blocks.{l}.mlp.hook_post"),
            Ln1Normalized(l) => write!(f, "blocks.{l}.ln1.hook_normalized"),
            Ln2Normalized(l) => write!(f, "blocks.{l}.ln2.hook_normalized"),
            LnFinalNormalized => write!(f, "ln_final.hook_normalized"),
            Logits => write!(f, "hook_logits"),
            Looped { step, point } => write!(f, "loop.{step}.{point}"),
        }
    }
}

/// Every hook-name template, used for parsing and for "did you mean" errors.
const TEMPLATES: &[&str] = &[
    "hook_embed",
    "hook_pos_embed",
    "blocks.{l}.hook_resid_pre",
    "blocks.{l}.hook_resid_mid",
    "blocks.{l}.hook_resid_post",
    "blocks.{l}.hook_attn_out",
    "blocks.{l}.hook_mlp_out",
    "blocks.{l}.attn.hook_q",
    "blocks.{l}.attn.hook_k",
    "blocks.{l}.attn.hook_v",
    "blocks.{l}.attn.hook_z",
    "blocks.{l}.attn.hook_attn_scores",
    "blocks.{l}.attn.hook_pattern",
    "blocks.{l}.mlp.hook_pre",
    "blocks.{l}.mlp.hook_post",
    "blocks.{l}.ln1.hook_normalized",
    "blocks.{l}.ln2.hook_normalized",
    "ln_final.hook_normalized",
    "hook_logits",
];

/// An unknown hook name, with the nearest valid templates.
#[derive(Debug, thiserror::Error)]
#[error("unknown hook point `{name}`; nearest valid names: {suggestions}")]
pub struct HookNameError {
    pub name: String,
    pub suggestions: String,
}

impl FromStr for HookPoint {
    type Err = HookNameError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        use HookPoint::*;
        let err = || HookNameError { name: s.to_string(), suggestions: nearest(s) };
        if let Some(rest) = s.strip_prefix("loop.") {
            let (step, point) = rest.split_once('.').ok_or_else(err)?;
            let step = step.parse().map_err(|_| err())?;
            let point = Box::new(point.parse().map_err(|_| err())?);
            return Ok(Looped { step, point });
        }
        match s {
            "hook_embed" => return Ok(Embed),
            "hook_pos_embed" => return Ok(PosEmbed),
            "ln_final.hook_normalized" => return Ok(LnFinalNormalized),
            "hook_logits" => return Ok(Logits),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(err)?;
        let (layer, tail) = rest.split_once('.').ok_or_else(err)?;
        let l: usize = layer.parse().map_err(|_| err())?;
        Ok(match tail {
            "hook_resid_pre" => ResidPre(l),
            "hook_resid_mid" => ResidMid(l),
            "hook_resid_post" => ResidPost(l),
            "hook_attn_out" => AttnOut(l),
            "hook_mlp_out" => MlpOut(l),
            "attn.hook_q" => AttnQ(l),
            "attn.hook_k" => AttnK(l),
            "attn.hook_v" => AttnV(l),
            "attn.hook_z" => AttnZ(l),
            "attn.hook_attn_scores" => AttnScores(l),
            "attn.hook_pattern" => AttnPattern(l),
            "mlp.hook_pre" => MlpPre(l),
            "mlp.hook_post" => MlpPost(l),
            "ln1.hook_normalized" => Ln1Normalized(l),
            "ln2.hook_normalized" => Ln2Normalized(l),
            _ => return Err(err()),
        })
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The three templates closest to `name` (layer digits normalised to `{l}`).
fn nearest(name: &str) -> String {
    let normalised: String = {
        let mut out = String::new();
        let mut in_digits = false;
        for c in name.chars() {
            if c.is_ascii_digit() {
                if !in_digits {
                    out.push_str("{l}");
                }
                in_digits = true;
            } else {
                in_digits = false;
                out.push(c);
            }
        }
        out
    };
    let mut scored: Vec<(usize, &str)> =
        TEMPLATES.iter().map(|t| (edit_distance(&normalised, t), *t)).collect();
    scored.sort();
    scored.iter().take(3).map(|(_, t)| format!("`{t}`")).collect::<Vec<_>>().join(", ")
}

/// What to do to an activation at a hook point.
#[derive(Debug, Clone)]
pub enum Intervention {
    /// Replace by zeros.
    Zero,
    /// Replace every batch row by the mean over the batch (mean ablation).
    MeanOverBatch,
    /// Replace by this tensor (activation patching from another run's cache);
    /// must have the activation's shape or broadcast to it.
    Replace(Tensor),
    /// Add this tensor (broadcast), e.g. a steering vector.
    Add(Tensor),
    /// Multiply by a constant.
    Scale(f64),
    /// Apply `what` to these heads only (head ablation, head patching): along the
    /// head axis of `hook_q|k|v|z` (axis 2; for grouped-query keys and values the
    /// indices are kv heads) or of `hook_attn_scores|pattern` (axis 1). At a point
    /// without heads, or with a head out of range, the forward pass fails.
    Heads { heads: Vec<usize>, what: Box<Intervention> },
}

impl Intervention {
    /// `what` on the given heads only.
    pub fn on_heads(heads: impl IntoIterator<Item = usize>, what: Intervention) -> Self {
        Intervention::Heads { heads: heads.into_iter().collect(), what: Box::new(what) }
    }

    fn apply(&self, t: &Tensor, point: &HookPoint) -> Result<Tensor> {
        match self {
            Intervention::Zero => t.zeros_like(),
            Intervention::MeanOverBatch => t.mean_keepdim(0)?.broadcast_as(t.shape())?.contiguous(),
            Intervention::Replace(r) => r.broadcast_as(t.shape())?.contiguous(),
            Intervention::Add(a) => t.broadcast_add(a),
            Intervention::Scale(s) => t * *s,
            Intervention::Heads { heads, what } => {
                let axis = point.head_axis().ok_or_else(|| candle_core::Error::Msg(format!("per-head intervention at `{point}`, which has no head axis")))?;
                let n = t.dim(axis)?;
                if let Some(h) = heads.iter().find(|&&h| h >= n) {
                    candle_core::bail!("per-head intervention at `{point}`: head {h} out of range ({n} heads)");
                }
                let parts = (0..n)
                    .map(|h| {
                        let part = t.narrow(axis, h, 1)?;
                        if heads.contains(&h) {
                            what.apply(&part, point)
                        } else {
                            Ok(part)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, axis)
            }
        }
    }
}

impl HookPoint {
    /// The head axis of a per-head activation (`None` for points without heads).
    pub fn head_axis(&self) -> Option<usize> {
        match self {
            HookPoint::AttnQ(_) | HookPoint::AttnK(_) | HookPoint::AttnV(_) | HookPoint::AttnZ(_) => Some(2),
            HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => Some(1),
            HookPoint::Looped { point, .. } => point.head_axis(),
            _ => None,
        }
    }
}

/// Captured activations, by hook name.
pub type ActivationCache = BTreeMap<HookPoint, Tensor>;

/// Per-call hook state: which points to capture, which to intervene on.
#[derive(Debug, Default)]
pub struct Hooks {
    capture_all: bool,
    capture: Vec<HookPoint>,
    interventions: Vec<(HookPoint, Intervention)>,
    step: Option<usize>,
    /// Activations captured during the forward pass.
    pub cache: ActivationCache,
}

impl Hooks {
    /// No hooks: `apply` returns its input untouched (no copy).
    pub fn none() -> Self {
        Self::default()
    }

    /// Capture every hook point.
    pub fn capture_all() -> Self {
        Self { capture_all: true, ..Self::default() }
    }

    /// Capture the given points.
    pub fn capture(points: impl IntoIterator<Item = HookPoint>) -> Self {
        Self { capture: points.into_iter().collect(), ..Self::default() }
    }

    /// Add an intervention at `point` (applied before capture, so the cache
    /// holds the value the model actually used).
    pub fn intervene(mut self, point: HookPoint, what: Intervention) -> Self {
        self.interventions.push((point, what));
        self
    }

    /// Also capture `point`.
    pub fn and_capture(mut self, point: HookPoint) -> Self {
        self.capture.push(point);
        self
    }

    /// True when nothing is captured and nothing is changed.
    pub fn is_empty(&self) -> bool {
        !self.capture_all && self.capture.is_empty() && self.interventions.is_empty()
    }

    /// Set (or clear) the loop step that prefixes every point (`loop.{t}.`).
    pub fn set_step(&mut self, step: Option<usize>) {
        self.step = step;
    }

    fn resolve(&self, point: HookPoint) -> HookPoint {
        match self.step {
            Some(step) => HookPoint::Looped { step, point: Box::new(point) },
            None => point,
        }
    }

    /// Whether `point` is captured or intervened on (so a model can skip
    /// computing an activation nobody asked for).
    pub fn wants(&self, point: &HookPoint) -> bool {
        if self.is_empty() {
            return false;
        }
        let p = self.resolve(point.clone());
        self.capture_all || self.capture.contains(&p) || self.interventions.iter().any(|(q, _)| *q == p)
    }

    /// Pass an activation through the hook point: interventions first, then capture.
    pub fn apply(&mut self, point: HookPoint, t: Tensor) -> Result<Tensor> {
        if self.is_empty() {
            return Ok(t);
        }
        let p = self.resolve(point);
        let mut t = t;
        for (q, what) in &self.interventions {
            if *q == p {
                t = what.apply(&t, &p)?;
            }
        }
        if self.capture_all || self.capture.contains(&p) {
            self.cache.insert(p, t.clone());
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn all_points() -> Vec<HookPoint> {
        use HookPoint::*;
        let mut v = vec![Embed, PosEmbed, LnFinalNormalized, Logits];
        for l in [0usize, 3, 11] {
            v.extend([
                ResidPre(l), ResidMid(l), ResidPost(l), AttnOut(l), MlpOut(l), AttnQ(l), AttnK(l),
                AttnV(l), AttnZ(l), AttnScores(l), AttnPattern(l), MlpPre(l), MlpPost(l),
                Ln1Normalized(l), Ln2Normalized(l),
            ]);
        }
        let looped: Vec<_> =
            v.iter().map(|p| Looped { step: 2, point: Box::new(p.clone()) }).collect();
        v.extend(looped);
        v
    }

    #[test]
    fn every_hook_name_round_trips() {
        for p in all_points() {
            let s = p.to_string();
            assert_eq!(s.parse::<HookPoint>().unwrap(), p, "{s}");
        }
        assert_eq!(HookPoint::AttnPattern(1).to_string(), "blocks.1.attn.hook_pattern");
        assert_eq!(
            "loop.3.blocks.0.mlp.hook_post".parse::<HookPoint>().unwrap().to_string(),
            "loop.3.blocks.0.mlp.hook_post"
        );
    }

    #[test]
    fn unknown_hook_name_lists_nearest() {
        let e = "blocks.1.attn.hook_scores".parse::<HookPoint>().unwrap_err().to_string();
        assert!(e.contains("hook_attn_scores"), "{e}");
        assert!("blocks.x.hook_resid_pre".parse::<HookPoint>().is_err());
        assert!("hook_final_norm".parse::<HookPoint>().is_err());
    }

    #[test]
    fn interventions_and_capture() -> Result<()> {
        let dev = Device::Cpu;
        let t = Tensor::new(&[[1f32, 2.], [3., 4.]], &dev)?;
        let mut none = Hooks::none();
        let same = none.apply(HookPoint::Embed, t.clone())?;
        assert_eq!(same.id(), t.id(), "no hooks: the same tensor comes back");
        assert!(none.cache.is_empty());

        let mut h = Hooks::capture([HookPoint::ResidPre(0)])
            .intervene(HookPoint::ResidPre(0), Intervention::Scale(2.0));
        let out = h.apply(HookPoint::ResidPre(0), t.clone())?;
        assert_eq!(out.to_vec2::<f32>()?, vec![vec![2., 4.], vec![6., 8.]]);
        assert_eq!(h.cache[&HookPoint::ResidPre(0)].to_vec2::<f32>()?, vec![vec![2., 4.], vec![6., 8.]]);
        // Other points pass through and are not captured.
        let other = h.apply(HookPoint::ResidPre(1), t.clone())?;
        assert_eq!(other.to_vec2::<f32>()?, t.to_vec2::<f32>()?);
        assert_eq!(h.cache.len(), 1);

        let apply = |w: Intervention| -> Result<Vec<Vec<f32>>> {
            let mut h = Hooks::none().intervene(HookPoint::Embed, w);
            h.apply(HookPoint::Embed, t.clone())?.to_vec2::<f32>()
        };
        assert_eq!(apply(Intervention::Zero)?, vec![vec![0., 0.], vec![0., 0.]]);
        assert_eq!(apply(Intervention::MeanOverBatch)?, vec![vec![2., 3.], vec![2., 3.]]);
        let add = Tensor::new(&[10f32, 20.], &dev)?;
        assert_eq!(apply(Intervention::Add(add))?, vec![vec![11., 22.], vec![13., 24.]]);
        let rep = Tensor::new(&[[9f32, 9.], [9., 9.]], &dev)?;
        assert_eq!(apply(Intervention::Replace(rep))?, vec![vec![9., 9.], vec![9., 9.]]);
        assert!(apply(Intervention::on_heads([0], Intervention::Zero)).is_err(), "hook_embed has no heads");
        Ok(())
    }

    #[test]
    fn per_head_interventions_touch_only_their_heads() -> Result<()> {
        let dev = Device::Cpu;
        // hook_z: (batch 2, pos 1, heads 3, d_head 2).
        let z = Tensor::arange(0f32, 12., &dev)?.reshape((2, 1, 3, 2))?;
        let run = |point: HookPoint, t: &Tensor, w: Intervention| -> Result<Tensor> {
            let mut h = Hooks::none().intervene(point.clone(), w);
            h.apply(point, t.clone())
        };
        let out = run(HookPoint::AttnZ(0), &z, Intervention::on_heads([1], Intervention::Zero))?;
        assert_eq!(out.flatten_all()?.to_vec1::<f32>()?, vec![0., 1., 0., 0., 4., 5., 6., 7., 0., 0., 10., 11.]);
        let out = run(HookPoint::AttnZ(0), &z, Intervention::on_heads([0, 2], Intervention::MeanOverBatch))?;
        assert_eq!(out.flatten_all()?.to_vec1::<f32>()?, vec![3., 4., 2., 3., 7., 8., 3., 4., 8., 9., 7., 8.]);
        // hook_pattern: heads on axis 1; the loop prefix keeps the axis.
        let pattern = Tensor::ones((1, 2, 2, 2), candle_core::DType::F32, &dev)?;
        let looped = HookPoint::Looped { step: 1, point: Box::new(HookPoint::AttnPattern(0)) };
        let mut h = Hooks::none().intervene(looped, Intervention::on_heads([1], Intervention::Scale(0.5)));
        h.set_step(Some(1));
        let out = h.apply(HookPoint::AttnPattern(0), pattern)?;
        assert_eq!(out.flatten_all()?.to_vec1::<f32>()?, vec![1., 1., 1., 1., 0.5, 0.5, 0.5, 0.5]);
        let e = run(HookPoint::AttnZ(0), &z, Intervention::on_heads([3], Intervention::Zero)).unwrap_err().to_string();
        assert!(e.contains("head 3 out of range (3 heads)"), "{e}");
        Ok(())
    }

    #[test]
    fn loop_prefix_applies() -> Result<()> {
        let t = Tensor::new(&[1f32], &Device::Cpu)?;
        let target: HookPoint = "loop.1.blocks.0.hook_resid_post".parse().unwrap();
        let mut h = Hooks::capture([target.clone()]);
        h.set_step(Some(0));
        h.apply(HookPoint::ResidPost(0), t.clone())?;
        assert!(h.cache.is_empty());
        h.set_step(Some(1));
        assert!(h.wants(&HookPoint::ResidPost(0)));
        h.apply(HookPoint::ResidPost(0), t)?;
        assert!(h.cache.contains_key(&target));
        Ok(())
    }
}
