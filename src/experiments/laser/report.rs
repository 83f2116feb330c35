//! The LASER study's HTML report: a summary table (baseline vs the chosen edit on the
//! test split), one line chart per validation metric against ρ with a series per
//! (layer, τ) and the unedited model dashed, and the full sweep table.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::LaserError;
use super::run::Sweep;
use crate::report::{bar_chart, line_chart, BarGroup, ChartSpec, Report, Series, SeriesStyle};

const METRICS: [(&str, &str); 4] = [
    ("acc", "top-1 accuracy"),
    ("p_correct", "P(correct)"),
    ("p_generic", "P(generic \" the\")"),
    ("logit_diff", "logit(correct) − logit(generic)"),
];

fn fmt(m: &BTreeMap<String, f64>, k: &str) -> String {
    m.get(k).map_or("–".into(), |v| format!("{v:.4}"))
}

/// Writes `dir/report.html` and one SVG per chart.
pub fn write_report(dir: &Path, sw: &Sweep, summary: &serde_json::Value) -> Result<(), LaserError> {
    let mut r = Report::new("LASER on a pretrained model (arXiv 2312.13558; spec §6.1, §11)");
    r.paragraph(format!(
        "Model {} ({}), {} probes ({} skipped), validation = first {}, test = the other {}; {} edits, {} SVDs.",
        summary["model"], summary["arch"], summary["n_examples"], summary["n_skipped"], summary["n_val"],
        summary["n_test"], summary["n_edits"], summary["svd_computed"]
    ));
    let (base, best) = (&sw.rows[0], &sw.rows[sw.best]);
    r.heading(format!("Chosen edit `{}` on the test split", best.edit));
    let keys = ["acc", "p_correct", "p_generic", "logit_diff", "io_s_diff", "ioi_acc", "fact_acc"];
    let rows: Vec<Vec<String>> = [("unedited", base), ("chosen", best)]
        .iter()
        .map(|(name, row)| std::iter::once(name.to_string()).chain(keys.iter().map(|k| fmt(&row.test, k))).collect())
        .collect();
    let mut headers = vec!["model"];
    headers.extend(keys);
    r.table(&headers, rows);
    for (key, label) in METRICS {
        let mut groups: BTreeMap<(usize, String), Vec<(f64, f64)>> = BTreeMap::new();
        for row in &sw.rows[1..] {
            if let (Some(l), Some(m), Some(rho), Some(v)) = (row.layer, &row.matrix, row.rank_frac, row.val.get(key)) {
                groups.entry((l, m.clone())).or_default().push((rho, *v));
            }
        }
        let xs: Vec<f64> = groups.values().flatten().map(|p| p.0).collect();
        let mut series: Vec<Series> = groups.into_iter().map(|((l, m), pts)| Series::new(&format!("{l}:{m}"), pts)).collect();
        if let (Some(lo), Some(hi), Some(v)) = (xs.iter().cloned().reduce(f64::min), xs.iter().cloned().reduce(f64::max), base.val.get(key)) {
            let style = SeriesStyle { colour: Some((0, 0, 0)), dashed: true, markers: Some(false) };
            series.push(Series::new("unedited", vec![(lo, *v), (hi, *v)]).with_style(style));
        }
        if series.len() < 2 {
            continue;
        }
        let spec = ChartSpec { log_x: true, ..ChartSpec::new(&format!("{label} (validation) vs ρ"), "kept rank fraction ρ", label) };
        r.figure(format!("validation {key} vs rank fraction"), line_chart(&spec, &series)?);
    }
    let a = &summary["attribution"];
    if let (Some(base), Some(chosen)) = (a["unedited"]["parts"].as_array(), a["chosen"]["parts"].as_array()) {
        r.heading("Direct logit attribution of logit[answer] − logit[\" the\"] (test split)");
        r.paragraph(format!(
            "Mean share of each part of the last residual stream (final norm's scale held fixed; interp::lens); negative parts push the generic token. Total: unedited {:.3}, chosen edit `{}` {:.3}.",
            a["unedited"]["target"].as_f64().unwrap_or(f64::NAN),
            a["chosen_edit"].as_str().unwrap_or(""),
            a["chosen"]["target"].as_f64().unwrap_or(f64::NAN)
        ));
        let labels: Vec<String> = base.iter().map(|p| p["name"].as_str().unwrap_or("").to_string()).collect();
        let values = |parts: &[serde_json::Value]| parts.iter().map(|p| p["logit"].as_f64().unwrap_or(f64::NAN)).collect::<Vec<f64>>();
        let groups = [BarGroup { name: "unedited".into(), values: values(base) }, BarGroup { name: "chosen edit".into(), values: values(chosen) }];
        let spec = ChartSpec::new("logit[answer] − logit[\" the\"] by part of the stream", "part", "logit");
        r.figure("Direct logit attribution, unedited vs chosen edit", bar_chart(&spec, &labels, &groups)?);
    }
    r.heading("Sweep (validation | test)");
    let rows: Vec<Vec<String>> = sw
        .rows
        .iter()
        .map(|row| {
            vec![
                row.edit.clone(),
                fmt(&row.val, "acc"),
                fmt(&row.val, "p_correct"),
                fmt(&row.val, "p_generic"),
                fmt(&row.test, "acc"),
                fmt(&row.test, "p_correct"),
                fmt(&row.test, "p_generic"),
            ]
        })
        .collect();
    r.table(&["edit", "val acc", "val P(correct)", "val P(the)", "test acc", "test P(correct)", "test P(the)"], rows);
    r.write(dir, "report")?;
    Ok(())
}
