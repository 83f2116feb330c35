//! The row of every study's claims table.

use serde::Serialize;

/// One checked claim: the claim, its pass band and what the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    pub id: &'static str,
    pub claim: &'static str,
    /// The pass band, in words.
    pub band: String,
    /// What this run measured.
    pub measured: String,
    pub pass: bool,
}

/// A claim row.
pub fn claim(id: &'static str, text: &'static str, band: impl Into<String>, measured: String, pass: bool) -> Claim {
    Claim { id, claim: text, band: band.into(), measured, pass }
}
