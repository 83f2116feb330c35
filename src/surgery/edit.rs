//! Edits: parse, display, compose and apply LASER-style interventions to a copy of the weights.
//!
//! Spec grammar `LAYER:TARGET:KIND`, edit sets joined by `,` (applied left to right):
//! - `1:fc_in:0.05` / `1:fc_in:top:0.05`: keep the top ⌊ρ·min(m,n)⌋ singular triplets (LASER);
//! - `1:fc_in:bottom:0.1`: remove those top triplets and keep the rest;
//! - `1:fc_out:zero`: W = 0 (same as ρ = 0 in top mode);
//! - `0:attn:drop`, `1:mlp:drop`, `1:all:drop`: drop the block (zero its output matrix and bias).
//! Targets: the `Matrix` names, groups `mlp` (fc_in, fc_up, fc_out), `attn` (q, k, v, out),
//! `all`, and `ov` = the product W_O·W_V truncated as a product (arXiv 2406.03068 §6; LASER
//! arXiv 2312.13558). Imports only candle, faer, thiserror and std.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use super::error::{Result, SurgeryError};
use super::svd::SvdCache;
use super::{Matrix, MatrixMap, ModelWeights};

/// What an edit targets within one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    One(Matrix),
    Mlp,
    Attn,
    All,
    /// The attention value-output product W_O·W_V.
    Ov,
}

const GROUPS: [(&str, Target); 4] = [("mlp", Target::Mlp), ("attn", Target::Attn), ("all", Target::All), ("ov", Target::Ov)];
const MLP: [Matrix; 3] = [Matrix::FcIn, Matrix::FcUp, Matrix::FcOut];
const ATTN: [Matrix; 4] = [Matrix::QProj, Matrix::KProj, Matrix::VProj, Matrix::OutProj];

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::One(m) => m.name(),
            _ => GROUPS.iter().find(|(_, t)| *t == self).map(|(n, _)| *n).unwrap_or("?"),
        }
    }

    pub fn from_name(s: &str) -> Option<Target> {
        Matrix::from_name(s).map(Target::One).or_else(|| GROUPS.iter().find(|(n, _)| *n == s).map(|(_, t)| *t))
    }

    /// The matrices a low-rank or zero edit touches (for `ov`: W_V and W_O).
    pub fn members(self) -> Vec<Matrix> {
        match self {
            Target::One(m) => vec![m],
            Target::Mlp => MLP.to_vec(),
            Target::Attn => ATTN.to_vec(),
            Target::All => MLP.iter().chain(ATTN.iter()).copied().collect(),
            Target::Ov => vec![Matrix::VProj, Matrix::OutProj],
        }
    }

    fn valid_names() -> String {
        let v: Vec<&str> = Matrix::ALL.iter().map(|m| m.name()).chain(GROUPS.iter().map(|(n, _)| *n)).collect();
        v.join(", ")
    }
}

/// Low-rank mode: keep the top k triplets (LASER) or remove them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Top,
    Bottom,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EditKind {
    /// k = ⌊ρ·min(m,n)⌋; `Top` keeps triplets 0..k, `Bottom` keeps k..min(m,n).
    LowRank { rank_frac: f64, mode: Mode },
    /// W = 0 on every member matrix (biases untouched).
    Zero,
    /// Drop the FFN / attention block: zero its output matrix (fc_out / out_proj) and its bias.
    DropBlock,
}

/// One intervention (layer ℓ, target τ, kind). Construct with `new` or `str::parse`.
#[derive(Clone, Debug, PartialEq)]
pub struct Edit {
    pub layer: usize,
    pub target: Target,
    pub kind: EditKind,
}

/// LASER rank ⌊ρ·min(m,n)⌋ (with a 1e-9 guard so that e.g. 0.29·100 gives 29, not 28).
pub fn rank_for(rank_frac: f64, m: usize, n: usize) -> usize {
    let r = m.min(n);
    ((rank_frac * r as f64 + 1e-9).floor() as usize).min(r)
}

impl Edit {
    pub fn new(layer: usize, target: Target, kind: EditKind) -> Result<Edit> {
        let e = Edit { layer, target, kind };
        match kind {
            EditKind::LowRank { rank_frac, .. } if !(0.0..=1.0).contains(&rank_frac) => {
                Err(SurgeryError::parse(&e.to_string(), format!("rank fraction {rank_frac} is outside [0, 1]")))
            }
            EditKind::DropBlock if !matches!(target, Target::Mlp | Target::Attn | Target::All) => Err(
                SurgeryError::parse(&e.to_string(), "`drop` applies to a block: expected target mlp, attn or all"),
            ),
            _ => Ok(e),
        }
    }
}

impl FromStr for Edit {
    type Err = SurgeryError;
    fn from_str(spec: &str) -> Result<Edit> {
        let err = |msg: String| SurgeryError::parse(spec, msg);
        let parts: Vec<&str> = spec.trim().split(':').map(str::trim).collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(err(format!(
                "expected LAYER:TARGET:KIND with KIND one of RHO, top:RHO, bottom:RHO, zero, drop; got {} field(s)",
                parts.len()
            )));
        }
        let layer = parts[0].parse::<usize>().map_err(|_| err(format!("layer `{}` is not a non-negative integer", parts[0])))?;
        let target = Target::from_name(parts[1])
            .ok_or_else(|| err(format!("unknown matrix `{}`, expected one of {}", parts[1], Target::valid_names())))?;
        let rho = |s: &str| {
            s.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| err(format!("rank fraction `{s}` is not a number in [0, 1]")))
        };
        let kind = match (parts[2], parts.get(3)) {
            ("zero", None) => EditKind::Zero,
            ("drop", None) => EditKind::DropBlock,
            ("top", Some(r)) => EditKind::LowRank { rank_frac: rho(r)?, mode: Mode::Top },
            ("bottom", Some(r)) => EditKind::LowRank { rank_frac: rho(r)?, mode: Mode::Bottom },
            (r, None) if r.parse::<f64>().is_ok() => EditKind::LowRank { rank_frac: rho(r)?, mode: Mode::Top },
            (k, _) => return Err(err(format!("unknown kind `{k}`, expected RHO, top:RHO, bottom:RHO, zero or drop"))),
        };
        Edit::new(layer, target, kind).map_err(|e| match e {
            SurgeryError::Parse { msg, .. } => err(msg),
            other => other,
        })
    }
}

impl fmt::Display for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.layer, self.target.name())?;
        match self.kind {
            EditKind::LowRank { rank_frac, mode: Mode::Top } => write!(f, "{rank_frac}"),
            EditKind::LowRank { rank_frac, mode: Mode::Bottom } => write!(f, "bottom:{rank_frac}"),
            EditKind::Zero => write!(f, "zero"),
            EditKind::DropBlock => write!(f, "drop"),
        }
    }
}

/// Edits composed left to right; each sees the weights the previous ones produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EditSet {
    pub edits: Vec<Edit>,
}

impl EditSet {
    pub fn new(edits: Vec<Edit>) -> Self {
        EditSet { edits }
    }
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }
}

impl FromStr for EditSet {
    type Err = SurgeryError;
    /// Comma-separated edits; `none` or an empty string is the identity.
    fn from_str(spec: &str) -> Result<EditSet> {
        let s = spec.trim();
        if s.is_empty() || s == "none" {
            return Ok(EditSet::default());
        }
        s.split(',').map(str::parse).collect::<Result<Vec<_>>>().map(EditSet::new)
    }
}

impl fmt::Display for EditSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.edits.is_empty() {
            return write!(f, "none");
        }
        let parts: Vec<String> = self.edits.iter().map(|e| e.to_string()).collect();
        write!(f, "{}", parts.join(","))
    }
}

/// Apply `edits` in order to a copy of `weights`; `weights` itself is never modified.
pub fn apply(edits: &EditSet, weights: &ModelWeights, cache: &mut SvdCache, map: &dyn MatrixMap) -> Result<ModelWeights> {
    let mut out = weights.clone(); // shallow: untouched tensors share storage
    for e in &edits.edits {
        apply_one(e, &mut out, cache, map)?;
    }
    Ok(out)
}

/// `apply` on a deep-copied snapshot of a VarMap (the VarMap is not touched).
pub fn apply_varmap(edits: &EditSet, varmap: &VarMap, cache: &mut SvdCache, map: &dyn MatrixMap) -> Result<ModelWeights> {
    apply(edits, &ModelWeights::from_varmap(varmap)?, cache, map)
}

/// The weight name of (e.layer, m), or `None` if the map has no such matrix and it is optional
/// (e.g. fc_up of a non-gated MLP inside the `mlp` group).
fn resolve(e: &Edit, w: &ModelWeights, map: &dyn MatrixMap, m: Matrix, required: bool) -> Result<Option<String>> {
    match map.key(e.layer, m) {
        Some(k) if w.contains(&k) => Ok(Some(k)),
        None if !required => Ok(None),
        key => Err(SurgeryError::UnknownTarget {
            edit: e.to_string(),
            reason: match key {
                Some(k) => format!("no weight `{k}` (layer {}, {})", e.layer, m.name()),
                None => format!("the matrix map has no `{}`", m.name()),
            },
            valid: valid_targets(w, map),
        }),
    }
}

fn apply_one(e: &Edit, w: &mut ModelWeights, cache: &mut SvdCache, map: &dyn MatrixMap) -> Result<()> {
    let need = |w: &ModelWeights, m: Matrix| -> Result<(String, Tensor)> {
        let k = resolve(e, w, map, m, true)?.expect("required matrix resolves or errors");
        let t = w.get(&k).expect("resolved").clone();
        Ok((k, t))
    };
    match (e.kind, e.target) {
        (EditKind::DropBlock, t) => {
            let outs: &[Matrix] = match t {
                Target::Mlp => &[Matrix::FcOut],
                Target::Attn => &[Matrix::OutProj],
                _ => &[Matrix::FcOut, Matrix::OutProj],
            };
            for &m in outs {
                let (key, wt) = need(w, m)?;
                w.insert(key, wt.zeros_like()?);
                if let Some(b) = map.bias_key(e.layer, m) {
                    if let Some(bt) = w.get(&b).cloned() {
                        w.insert(b, bt.zeros_like()?);
                    }
                }
            }
        }
        (EditKind::LowRank { rank_frac, mode }, Target::Ov) => {
            let ((kv, wv), (ko, wo)) = (need(w, Matrix::VProj)?, need(w, Matrix::OutProj)?);
            let new_o = truncate_ov(&ko, &wo, &kv, &wv, rank_frac, mode, cache)?;
            w.insert(ko, new_o);
        }
        (EditKind::Zero, Target::Ov) => {
            let (ko, wo) = need(w, Matrix::OutProj)?;
            w.insert(ko, wo.zeros_like()?);
        }
        (kind, t) => {
            let required = matches!(t, Target::One(_));
            let mut touched = 0;
            for m in t.members() {
                let Some(key) = resolve(e, w, map, m, required)? else { continue };
                let old = w.get(&key).expect("resolved").clone();
                let new = match kind {
                    EditKind::LowRank { rank_frac, mode } => low_rank(&key, &old, rank_frac, mode, cache)?,
                    _ => old.zeros_like()?,
                };
                w.insert(key, new);
                touched += 1;
            }
            if touched == 0 {
                need(w, t.members()[0])?; // no member exists: report it
            }
        }
    }
    Ok(())
}

/// Rank-k (Top) or top-k-removed (Bottom) version of one matrix, in its own dtype and device.
fn low_rank(name: &str, w: &Tensor, rank_frac: f64, mode: Mode, cache: &mut SvdCache) -> Result<Tensor> {
    let (m, n) = dims2(name, w)?;
    let (k, r) = (rank_for(rank_frac, m, n), m.min(n));
    let new = match mode {
        Mode::Top if k == 0 => return Ok(w.zeros_like()?),
        Mode::Bottom if k >= r => return Ok(w.zeros_like()?),
        Mode::Top if k >= r => return Ok(w.clone()),
        Mode::Bottom if k == 0 => return Ok(w.clone()),
        Mode::Top => cache.get(name, w)?.rebuild_top(k)?,
        Mode::Bottom => cache.get(name, w)?.rebuild_without_top(k)?,
    };
    Ok(new.to_dtype(w.dtype())?.to_device(w.device())?)
}

/// New W_O such that W_O'·W_V = Top: P_k, Bottom: P − P_k, where P = W_O·W_V = U S Vᵀ.
/// W_O' = U_k U_kᵀ W_O (resp. W_O − U_k U_kᵀ W_O): U_k U_kᵀ P = P_k exactly, W_V stays as is, and
/// each head's W_O slice is projected on the same output subspace, so the head structure of a
/// multi-head layer survives (no refactorisation or pseudo-inverse needed).
fn truncate_ov(ko: &str, wo: &Tensor, kv: &str, wv: &Tensor, rank_frac: f64, mode: Mode, cache: &mut SvdCache) -> Result<Tensor> {
    let ((d_out, a), (a2, d_in)) = (dims2(ko, wo)?, dims2(kv, wv)?);
    if a != a2 {
        let expected = format!("{a} rows to chain with `{ko}` ({d_out}x{a})");
        return Err(SurgeryError::BadShape { name: kv.to_string(), expected, got: vec![a2, d_in] });
    }
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
    let wo32 = cpu(wo)?;
    let k = rank_for(rank_frac, d_out, d_in);
    match mode {
        Mode::Top if k == 0 => return Ok(wo.zeros_like()?),
        Mode::Top if k >= d_out.min(d_in) => return Ok(wo.clone()),
        Mode::Bottom if k == 0 => return Ok(wo.clone()),
        _ => {}
    }
    let p = wo32.matmul(&cpu(wv)?)?;
    let svd = cache.get(&format!("{ko}*{kv}"), &p)?;
    let uk = svd.u_block(0..k)?;
    let proj = uk.matmul(&uk.t()?.matmul(&wo32)?)?;
    let new = if mode == Mode::Top { proj } else { (wo32 - proj)? };
    Ok(new.to_dtype(wo.dtype())?.to_device(wo.device())?)
}

fn dims2(name: &str, w: &Tensor) -> Result<(usize, usize)> {
    w.dims2().map_err(|_| SurgeryError::BadShape { name: name.into(), expected: "a 2-D matrix".into(), got: w.dims().to_vec() })
}

/// "layers 0..=1: fc_in, fc_out, …; groups: mlp, attn, all, ov" for the weights at hand
/// (layers are scanned from 0 while any mapped matrix is present).
fn valid_targets(w: &ModelWeights, map: &dyn MatrixMap) -> String {
    let present = |l: usize| -> Vec<&'static str> {
        Matrix::ALL.iter().filter(|&&m| map.key(l, m).is_some_and(|k| w.contains(&k))).map(|m| m.name()).collect()
    };
    let first = present(0);
    if first.is_empty() {
        let example = Matrix::ALL.iter().find_map(|&m| map.key(0, m)).unwrap_or_default();
        return format!("none (no weight matches the matrix map, e.g. `{example}`)");
    }
    let n_layers = (1..).find(|&l| present(l).is_empty()).unwrap_or(1);
    format!("layers 0..={}: {}; groups: mlp, attn, all, ov", n_layers - 1, first.join(", "))
}

/// One single-edit `EditSet` per (layer, target, mode, ρ), in exactly that nesting order (ρ
/// innermost, so consecutive sets reuse one cached SVD). Invalid ρ values are skipped.
pub fn sweep_grid(layers: &[usize], targets: &[Target], rank_fracs: &[f64], modes: &[Mode]) -> Vec<EditSet> {
    let mut out = Vec::new();
    for &layer in layers {
        for &target in targets {
            for &mode in modes {
                for &rank_frac in rank_fracs {
                    if let Ok(e) = Edit::new(layer, target, EditKind::LowRank { rank_frac, mode }) {
                        out.push(EditSet::new(vec![e]));
                    }
                }
            }
        }
    }
    out
}
