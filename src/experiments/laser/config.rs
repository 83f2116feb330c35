//! The LASER study's config tree (spec §6.1 and §11): the model folder, the (layer, τ, ρ)
//! grid, the validation split and the probe set, each with its default; plus the
//! `l=5,tau=fc_in,rho=0.01` edit spelling of issue 5.

use serde::{Deserialize, Serialize};

use crate::config::{check, ConfigError, Validate};
use crate::surgery::{EditSet, SurgeryError, Target};

/// The built-in probe set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// IOI prompts sampled from the Wang et al. templates (default 60).
    pub n_ioi: usize,
    /// Include the embedded factual-recall prompts (default true).
    pub facts: bool,
    /// Seed of IOI sampling and of the example order (default 0).
    pub seed: u64,
    /// The generic competitor token (default " the").
    pub generic: String,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self { n_ioi: 60, facts: true, seed: 0, generic: " the".into() }
    }
}

/// `latentlab reproduce laser` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaserStudy {
    /// Output folder name under `out_dir` (default "laser").
    pub name: String,
    /// Parent of run folders (default "runs").
    pub out_dir: String,
    /// The Hugging Face model folder (default "": must be given).
    pub model: String,
    /// Layers ℓ of the grid; empty = the later half, ⌊L/2⌋..L (default []).
    pub layers: Vec<usize>,
    /// Matrices τ (default ["fc_in", "fc_out"]).
    pub matrices: Vec<String>,
    /// Kept-rank fractions ρ (default [0.01, 0.05, 0.1, 0.2, 0.5]).
    pub rank_fracs: Vec<f64>,
    /// Fraction of examples (the first ones) used to choose the edit (default 0.2).
    pub val_frac: f64,
    /// Write one JSONL row per (edit, example) (default true).
    pub per_example: bool,
    pub probes: ProbeConfig,
}

impl Default for LaserStudy {
    fn default() -> Self {
        Self {
            name: "laser".into(),
            out_dir: "runs".into(),
            model: String::new(),
            layers: Vec::new(),
            matrices: vec!["fc_in".into(), "fc_out".into()],
            rank_fracs: vec![0.01, 0.05, 0.1, 0.2, 0.5],
            val_frac: 0.2,
            per_example: true,
            probes: ProbeConfig::default(),
        }
    }
}

impl LaserStudy {
    /// `--quick`: 24 IOI prompts and ρ ∈ {0.01, 0.1, 0.5}.
    pub fn quick() -> Self {
        Self {
            name: "laser-quick".into(),
            rank_fracs: vec![0.01, 0.1, 0.5],
            probes: ProbeConfig { n_ioi: 24, ..ProbeConfig::default() },
            ..Self::default()
        }
    }

    /// The grid layers for a model of `n_layers` (empty config = the later half).
    pub fn grid_layers(&self, n_layers: usize) -> Vec<usize> {
        if self.layers.is_empty() { (n_layers / 2..n_layers).collect() } else { self.layers.clone() }
    }

    pub fn targets(&self) -> Vec<Target> {
        self.matrices.iter().filter_map(|m| Target::from_name(m)).collect()
    }
}

impl Validate for LaserStudy {
    fn validate(&self) -> Result<(), ConfigError> {
        check(!self.name.is_empty() && !self.name.contains('/'), "name", "must be a non-empty folder name")?;
        check(!self.matrices.is_empty(), "matrices", "must name at least one matrix")?;
        for m in &self.matrices {
            check(Target::from_name(m).is_some(), "matrices", format!("unknown matrix `{m}`"))?;
        }
        check(!self.rank_fracs.is_empty(), "rank_fracs", "must hold at least one ρ")?;
        for r in &self.rank_fracs {
            check((0.0..=1.0).contains(r), "rank_fracs", format!("{r} is outside [0, 1]"))?;
        }
        check(self.val_frac > 0.0 && self.val_frac < 1.0, "val_frac", "must be in (0, 1)")?;
        check(self.probes.n_ioi > 0 || self.probes.facts, "probes.n_ioi", "no probes: n_ioi = 0 and facts = false")?;
        Ok(())
    }
}

/// An edit set in LASER notation (`5:fc_in:0.01,...`) or the key=value spelling
/// `l=5,tau=fc_in,rho=0.01` (keys `l`/`layer`, `tau`/`matrix`, `rho`/`rank_frac`).
pub fn parse_edits(spec: &str) -> Result<EditSet, SurgeryError> {
    if !spec.contains('=') {
        return spec.parse();
    }
    let (mut layer, mut matrix, mut rho) = (None, None, None);
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| SurgeryError::Parse { spec: spec.into(), msg: format!("`{part}` is not key=value") })?;
        let slot = match k.trim() {
            "l" | "layer" => &mut layer,
            "tau" | "matrix" => &mut matrix,
            "rho" | "rank_frac" => &mut rho,
            other => {
                return Err(SurgeryError::Parse {
                    spec: spec.into(),
                    msg: format!("unknown key `{other}`, expected l, tau, rho"),
                })
            }
        };
        *slot = Some(v.trim().to_string());
    }
    match (layer, matrix, rho) {
        (Some(l), Some(t), Some(r)) => format!("{l}:{t}:{r}").parse().map_err(|e| match e {
            SurgeryError::Parse { msg, .. } => SurgeryError::Parse { spec: spec.into(), msg },
            other => other,
        }),
        _ => Err(SurgeryError::Parse { spec: spec.into(), msg: "expected all of l=, tau=, rho=".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_spelling_parses_to_the_same_edit() {
        assert_eq!(parse_edits("l=5,tau=fc_in,rho=0.01").unwrap(), "5:fc_in:0.01".parse().unwrap());
        assert_eq!(parse_edits("1:fc_out:0.1,0:fc_in:0.5").unwrap().edits.len(), 2);
        assert!(parse_edits("l=5,tau=fc_in").is_err());
        assert!(parse_edits("l=5,tau=nope,rho=0.1").unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn defaults_validate_and_pick_the_later_half() {
        let s = LaserStudy::default();
        s.validate().unwrap();
        assert_eq!(s.grid_layers(12), (6..12).collect::<Vec<_>>());
    }
}
