//! Edits: the (layer, target, kind) intervention type, its spec strings, edit sets and sweeps.
//!
//! Spec `LAYER:TARGET:KIND`, sets joined by `,` and applied left to right. KIND: `RHO` or
//! `top:RHO` keeps the top ⌊ρ·min(m,n)⌋ singular triplets (LASER, arXiv 2312.13558);
//! `bottom:RHO` removes them; `zero` sets W = 0; `drop` (mlp/attn/all) zeroes the block's output
//! matrix and bias. TARGET: a `Matrix` name, `mlp`, `attn`, `all`, or `ov` = W_O·W_V truncated as
//! a product (arXiv 2406.03068 §6). Applying lives in `apply`. Imports only std and siblings.

use std::fmt;
use std::str::FromStr;

pub use super::apply::{apply, apply_varmap};
use super::error::{Result, SurgeryError};
use super::weights::Matrix;

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

const GROUPS: [(&str, Target); 4] = [
    ("mlp", Target::Mlp),
    ("attn", Target::Attn),
    ("all", Target::All),
    ("ov", Target::Ov),
];
const MLP: [Matrix; 4] = [Matrix::FcIn, Matrix::FcUp, Matrix::GateProj, Matrix::FcOut];
const ATTN: [Matrix; 4] = [Matrix::QProj, Matrix::KProj, Matrix::VProj, Matrix::OutProj];

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::One(m) => m.name(),
            Target::Mlp => "mlp",
            Target::Attn => "attn",
            Target::All => "all",
            Target::Ov => "ov",
        }
    }

    pub fn from_name(s: &str) -> Option<Target> {
        Matrix::from_name(s)
            .map(Target::One)
            .or_else(|| GROUPS.iter().find(|(n, _)| *n == s).map(|(_, t)| *t))
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
        let v: Vec<&str> = Matrix::ALL
            .iter()
            .map(|m| m.name())
            .chain(GROUPS.iter().map(|(n, _)| *n))
            .collect();
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
        let e = Edit {
            layer,
            target,
            kind,
        };
        match kind {
            EditKind::LowRank { rank_frac, .. } if !(0.0..=1.0).contains(&rank_frac) => {
                Err(SurgeryError::parse(
                    &e.to_string(),
                    format!("rank fraction {rank_frac} is outside [0, 1]"),
                ))
            }
            EditKind::DropBlock if !matches!(target, Target::Mlp | Target::Attn | Target::All) => {
                Err(SurgeryError::parse(
                    &e.to_string(),
                    "`drop` applies to a block: expected target mlp, attn or all",
                ))
            }
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
        let layer = parts[0].parse::<usize>().map_err(|_| {
            err(format!(
                "layer `{}` is not a non-negative integer",
                parts[0]
            ))
        })?;
        let target = Target::from_name(parts[1]).ok_or_else(|| {
            err(format!(
                "unknown matrix `{}`, expected one of {}",
                parts[1],
                Target::valid_names()
            ))
        })?;
        let rho = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| err(format!("rank fraction `{s}` is not a number in [0, 1]")))
        };
        let kind = match (parts[2], parts.get(3)) {
            ("zero", None) => EditKind::Zero,
            ("drop", None) => EditKind::DropBlock,
            ("top", Some(r)) => EditKind::LowRank {
                rank_frac: rho(r)?,
                mode: Mode::Top,
            },
            ("bottom", Some(r)) => EditKind::LowRank {
                rank_frac: rho(r)?,
                mode: Mode::Bottom,
            },
            (r, None) if r.parse::<f64>().is_ok() => EditKind::LowRank {
                rank_frac: rho(r)?,
                mode: Mode::Top,
            },
            (k, _) => {
                return Err(err(format!(
                    "unknown kind `{k}`, expected RHO, top:RHO, bottom:RHO, zero or drop"
                )))
            }
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
            EditKind::LowRank {
                rank_frac,
                mode: Mode::Top,
            } => write!(f, "{rank_frac}"),
            EditKind::LowRank {
                rank_frac,
                mode: Mode::Bottom,
            } => write!(f, "bottom:{rank_frac}"),
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
        s.split(',')
            .map(str::parse)
            .collect::<Result<Vec<_>>>()
            .map(EditSet::new)
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

/// One single-edit `EditSet` per (layer, target, mode, ρ), in exactly that nesting order (ρ
/// innermost, so consecutive sets reuse one cached SVD). Invalid ρ values are skipped.
pub fn sweep_grid(
    layers: &[usize],
    targets: &[Target],
    rank_fracs: &[f64],
    modes: &[Mode],
) -> Vec<EditSet> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_display() {
        for (spec, canonical) in [
            ("1:fc_in:0.05", "1:fc_in:0.05"),
            ("1:fc_out:top:0.1", "1:fc_out:0.1"),
            ("1:fc_in:bottom:0.1", "1:fc_in:bottom:0.1"),
            ("0:attn:drop", "0:attn:drop"),
            ("1:mlp:drop", "1:mlp:drop"),
            ("0:ov:0.2", "0:ov:0.2"),
            (" 3 : v_proj : zero ", "3:v_proj:zero"),
            ("2:all:1", "2:all:1"),
        ] {
            let e: Edit = spec.parse().unwrap();
            assert_eq!(e.to_string(), canonical);
            assert_eq!(canonical.parse::<Edit>().unwrap(), e);
        }
        let e: Edit = "1:fc_in:bottom:0.1".parse().unwrap();
        let want = EditKind::LowRank {
            rank_frac: 0.1,
            mode: Mode::Bottom,
        };
        assert_eq!(
            (e.layer, e.target, e.kind),
            (1, Target::One(Matrix::FcIn), want)
        );
    }

    #[test]
    fn parse_errors_name_the_spec_and_what_was_expected() {
        for (spec, needle) in [
            (
                "1:fc_inn:0.1",
                "unknown matrix `fc_inn`, expected one of fc_in, fc_up",
            ),
            ("x:fc_in:0.1", "layer `x` is not a non-negative integer"),
            (
                "1:fc_in:1.5",
                "rank fraction `1.5` is not a number in [0, 1]",
            ),
            ("1:fc_in:top:abc", "rank fraction `abc`"),
            (
                "1:fc_in:middle:0.1",
                "unknown kind `middle`, expected RHO, top:RHO",
            ),
            ("1:fc_in", "expected LAYER:TARGET:KIND"),
            ("1:fc_in:drop", "expected target mlp, attn or all"),
        ] {
            let msg = spec.parse::<Edit>().unwrap_err().to_string();
            assert!(msg.starts_with(&format!("edit spec `{spec}`")), "{msg}");
            assert!(msg.contains(needle), "{spec}: {msg}");
        }
        let kind = EditKind::LowRank {
            rank_frac: -0.1,
            mode: Mode::Top,
        };
        assert!(Edit::new(0, Target::Mlp, kind).is_err());
    }

    #[test]
    fn rank_is_laser_floor_of_rho_min_dim() {
        assert_eq!(rank_for(0.05, 256, 64), 3);
        assert_eq!(rank_for(0.1, 40, 24), 2);
        assert_eq!(rank_for(0.29, 100, 300), 29); // 0.29·100 = 28.999… in f64
        assert_eq!((rank_for(0.0, 8, 8), rank_for(1.0, 8, 8)), (0, 8));
    }

    #[test]
    fn edit_sets_compose_in_order_and_round_trip() {
        let set: EditSet = "1:fc_in:0.05, 0:attn:drop,1:fc_out:bottom:0.5"
            .parse()
            .unwrap();
        assert_eq!(set.edits.len(), 3);
        assert_eq!(set.edits[1].target, Target::Attn);
        assert_eq!(
            set.to_string(),
            "1:fc_in:0.05,0:attn:drop,1:fc_out:bottom:0.5"
        );
        assert_eq!(set.to_string().parse::<EditSet>().unwrap(), set);
        assert!("none".parse::<EditSet>().unwrap().is_empty());
        assert_eq!(EditSet::default().to_string(), "none");
        let msg = "1:fc_in:0.05,1:bogus:0.1"
            .parse::<EditSet>()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`1:bogus:0.1`"), "{msg}");
    }

    #[test]
    fn sweep_grid_is_deterministic_with_rho_innermost() {
        let targets = [Target::One(Matrix::FcIn), Target::Ov];
        let grid = sweep_grid(
            &[0, 1],
            &targets,
            &[0.05, 0.1, 2.0],
            &[Mode::Top, Mode::Bottom],
        );
        assert_eq!(grid.len(), 2 * 2 * 2 * 2); // ρ = 2.0 is skipped
        let names: Vec<String> = grid.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            &names[..5],
            [
                "0:fc_in:0.05",
                "0:fc_in:0.1",
                "0:fc_in:bottom:0.05",
                "0:fc_in:bottom:0.1",
                "0:ov:0.05"
            ]
        );
        assert_eq!(names.last().unwrap(), "1:ov:bottom:0.1");
        assert_eq!(
            grid,
            sweep_grid(
                &[0, 1],
                &targets,
                &[0.05, 0.1, 2.0],
                &[Mode::Top, Mode::Bottom]
            )
        );
    }
}
