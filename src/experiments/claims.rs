//! The row of every study's claims table.

use serde::Serialize;

use crate::report::{Cell, Report};

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

/// Append the claims table of a study report: id, claim, band, measured, PASS/FAIL.
pub fn claims_table(r: &mut Report, claims: &[Claim]) {
    let rows: Vec<Vec<Cell>> = claims
        .iter()
        .map(|c| vec![Cell::from(c.id), Cell::from(c.claim), Cell::from(c.band.as_str()), Cell::from(c.measured.as_str()), Cell::verdict(c.pass)])
        .collect();
    r.table(&["id", "claim", "band", "measured", "result"], rows);
}
