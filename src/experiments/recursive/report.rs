//! `runs/<name>/report.html`: the claims table, fully-solved accuracy against graph size per
//! method, accuracy against the number of iterations, the training curves of the one-step
//! value accuracy by parent count, and the mechanism analysis of the 2-layer model
//! (RelVar and head-cosine heat maps, OV amplification, DFT energy classes and conjugate
//! pairs). Every number drawn was computed by this run.

use super::analysis::{format_routes, format_slot_heads, MechanismReport, FAMILIES, ROUTES};
use super::run::{RecursiveOutcome, StudyError};
use crate::report::{bar_chart, heatmap, line_chart, BarGroup, ChartSpec, Report, Series};

fn f3(x: f64) -> String {
    if x.is_finite() { format!("{x:.3}") } else { "—".into() }
}

/// The mechanism figures (also written by `latentlab analyze` for a single checkpoint).
pub fn mechanism_section(r: &mut Report, m: &MechanismReport) -> Result<(), StudyError> {
    r.paragraph(format!(
        "Controlled-input accuracy {} (per family {}); MLP-1 relative contribution at RHS positions {}.",
        f3(m.controlled_acc),
        FAMILIES.iter().zip(&m.family_acc).map(|(f, a)| format!("{f} {}", f3(*a))).collect::<Vec<_>>().join(", "),
        f3(m.mlp1_relative)
    ));
    let families: Vec<String> = FAMILIES.iter().map(|s| s.to_string()).collect();
    for l in &m.layers {
        let heads: Vec<String> = (0..l.rel_var.first().map_or(0, Vec::len)).map(|h| format!("h{h}")).collect();
        let spec = ChartSpec::new(&format!("layer {}: relative variance of head outputs per family", l.layer), "head", "family");
        r.figure(format!("Layer {} RelVar (family × head)", l.layer), heatmap(&spec, &l.rel_var, &families, &heads, Some((0.0, 1.0)))?);
        let spec = ChartSpec::new(&format!("layer {}: cosine of attention distributions at the RHS query", l.layer), "head", "head");
        r.figure(format!("Layer {} head-cosine matrix", l.layer), heatmap(&spec, &l.head_cosine, &heads, &heads, Some((0.0, 1.0)))?);
        let spec = ChartSpec::new(&format!("layer {}: OV amplification per factor subspace", l.layer), "head", "‖P OV P‖₂");
        let groups = vec![BarGroup { name: "VARIABLE".into(), values: l.amp_variable.clone() }, BarGroup { name: "VALUE".into(), values: l.amp_value.clone() }];
        r.figure(format!("Layer {} OV amplification", l.layer), bar_chart(&spec, &heads, &groups)?);
        r.paragraph(format!("Layer {}: slot heads (RelVar peak) {}; strongest head per route, mean over slots: {}.", l.layer, format_slot_heads(l), format_routes(l)));
        let routes: Vec<String> = ROUTES.iter().map(|s| s.to_string()).collect();
        let spec = ChartSpec::new(&format!("layer {}: attention weight along each route (mean over inputs)", l.layer), "head", "route");
        r.figure(format!("Layer {} routes (route × head)", l.layer), heatmap(&spec, &l.routes, &routes, &heads, Some((0.0, 1.0)))?);
        let spec = ChartSpec { y_range: Some((0.0, 1.0)), ..ChartSpec::new(&format!("layer {}: controlled-input accuracy with one head zeroed (all: {})", l.layer, f3(m.controlled_acc)), "head", "accuracy") };
        let groups = vec![BarGroup { name: "head output zeroed".into(), values: l.ablated_acc.clone() }];
        r.figure(format!("Layer {} head ablation", l.layer), bar_chart(&spec, &heads, &groups)?);
    }
    if !m.fourier.is_empty() {
        let sites: Vec<String> = m.fourier.iter().map(|(s, _)| s.clone()).collect();
        let groups = vec![
            BarGroup { name: "constant (0,0,0)".into(), values: m.fourier.iter().map(|(_, f)| f.constant).collect() },
            BarGroup { name: "diagonal (a,a,a)".into(), values: m.fourier.iter().map(|(_, f)| f.diagonal).collect() },
            BarGroup { name: "other".into(), values: m.fourier.iter().map(|(_, f)| f.other).collect() },
            BarGroup { name: "diagonal / non-constant".into(), values: m.fourier.iter().map(|(_, f)| f.diagonal_of_nonconstant).collect() },
        ];
        // Headroom above 1 keeps the legend clear of the bars.
        let spec = ChartSpec { y_range: Some((0.0, 1.45)), ..ChartSpec::new("3-D DFT over Z_p³ of MLP-2: energy share by frequency class", "site", "share of |F|²") };
        r.figure("DFT energy classes", bar_chart(&spec, &sites, &groups)?);
        if let Some((site, f)) = m.fourier.iter().find(|(s, _)| s.contains("out")).or(m.fourier.first()) {
            let labels: Vec<String> = (1..=f.pair_shares.len()).map(|a| format!("{a}/{}", f.p - a)).collect();
            let spec = ChartSpec::new(&format!("{site}: share of the diagonal energy per conjugate pair {{a, p − a}}"), "pair", "share");
            let groups = vec![BarGroup { name: site.clone(), values: f.pair_shares.clone() }];
            r.figure("DFT conjugate-pair histogram", bar_chart(&spec, &labels, &groups)?);
        }
    }
    Ok(())
}

/// Write the HTML report (and each figure as SVG) into the study folder.
pub fn write_report(o: &RecursiveOutcome) -> Result<(), StudyError> {
    let mut r = Report::new("Recursive latent-space reasoning (arXiv 2510.14095)");
    r.paragraph(format!(
        "Train N = {}; {} variants; {:.0} s in all{}. {}",
        o.train_n,
        o.variants.len(),
        o.seconds,
        if o.quick { " (--quick)" } else { "" },
        o.notes.join(" ")
    ));
    r.heading("Claims");
    crate::experiments::claims::claims_table(&mut r, &o.claims);
    let selected: Vec<String> = o
        .variants
        .iter()
        .filter_map(|v| {
            let mut decay = v.decay_start.map_or(String::new(), |d| format!("; decay triggered at step {d}"));
            if !v.stage_ends.is_empty() {
                let ends: Vec<String> = v.stage_ends.iter().map(u64::to_string).collect();
                decay.push_str(&format!("; measured curriculum stage(s) ended at step {}", ends.join(", ")));
            }
            v.selected.map(|s| format!("{} step {} of {} (validation solved {:.3}, node acc {:.3}{decay})", v.variant.name, s.step, v.steps, s.val_solved, s.val_node_acc))
        })
        .collect();
    if !selected.is_empty() {
        r.paragraph(format!(
            "Evaluated weights (the best validation score of each run, `eval.select_best`): {}.",
            selected.join("; ")
        ));
    }

    r.heading("Runs");
    let mut table = Vec::new();
    for v in &o.variants {
        for s in &v.sizes {
            table.push(vec![
                v.variant.name.clone(),
                s.n_nodes.to_string(),
                format!("{:.1}", s.mean_depth),
                s.steps.to_string(),
                f3(s.solved),
                f3(s.solved_depth_plus_k),
                f3(s.solved_fixed_point),
                format!("{:.1}", s.mean_fixed_point_steps),
                f3(s.node_acc),
                s.recovery.map_or("—".into(), f3),
            ]);
        }
    }
    r.table(&["variant", "N", "mean depth", "T", "solved", "depth+k", "fixed point", "steps (fixed point)", "node acc", "repair"], table);

    // A study of the interp model alone has no ladder to draw.
    if !o.variants.is_empty() {
        r.heading("Accuracy against graph size");
        let solved: Vec<Series> =
            o.variants.iter().map(|v| Series::new(&v.variant.name, v.sizes.iter().map(|s| (s.n_nodes as f64, s.solved)).collect())).collect();
        let spec = ChartSpec { y_range: Some((0.0, 1.0)), ..ChartSpec::new("fully solved (T = set max depth + k)", "nodes N", "fraction of graphs") };
        r.figure("Fully solved against N per method", line_chart(&spec, &solved)?);
        let nodes: Vec<Series> =
            o.variants.iter().map(|v| Series::new(&v.variant.name, v.sizes.iter().map(|s| (s.n_nodes as f64, s.node_acc)).collect())).collect();
        let spec = ChartSpec { y_range: Some((0.0, 1.0)), ..ChartSpec::new("per-node value accuracy", "nodes N", "accuracy") };
        r.figure("Per-node accuracy against N per method", line_chart(&spec, &nodes)?);
    }

    r.heading("Accuracy against node depth");
    for v in &o.variants {
        let series: Vec<Series> = v
            .sizes
            .iter()
            .map(|s| Series::new(&format!("N = {}", s.n_nodes), s.node_acc_by_depth.iter().enumerate().map(|(d, &a)| (d as f64, a)).collect()))
            .collect();
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        let spec = ChartSpec { y_range: Some((0.0, 1.0)), ..ChartSpec::new(&format!("{}: node value accuracy by depth", v.variant.name), "node depth", "accuracy") };
        r.figure(format!("{}: accuracy against node depth", v.variant.name), line_chart(&spec, &series)?);
    }

    r.heading("Accuracy against iterations");
    for v in o.variants.iter().filter(|v| v.sizes.iter().any(|s| s.solved_by_step.len() > 1)) {
        let series: Vec<Series> = v
            .sizes
            .iter()
            .map(|s| Series::new(&format!("N = {}", s.n_nodes), s.solved_by_step.iter().enumerate().map(|(t, &a)| ((t + 1) as f64, a)).collect()))
            .collect();
        let spec = ChartSpec { y_range: Some((0.0, 1.0)), ..ChartSpec::new(&format!("{}: fully solved after t steps", v.variant.name), "steps t", "fraction of graphs") };
        r.figure(format!("{}: accuracy against iterations", v.variant.name), line_chart(&spec, &series)?);
    }

    r.heading("Training: one-step value accuracy of the due nodes by parent count");
    for v in &o.variants {
        let series: Vec<Series> = ["leaf", "copy", "2 parents", "3 parents"]
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let key = format!("window_due_acc_parents{k}");
                Series::new(name, v.records.iter().filter_map(|(step, m)| m.get(&key).map(|a| (*step as f64, *a))).collect())
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let spec = ChartSpec { y_range: Some((0.0, 1.0)), ..ChartSpec::new(&format!("{}: due-node accuracy during training", v.variant.name), "step", "accuracy") };
        r.figure(format!("{}: training curves", v.variant.name), line_chart(&spec, &series)?);
    }

    if let Some(m) = &o.mechanism {
        r.heading("Mechanism analysis (2-layer model)");
        mechanism_section(&mut r, m)?;
    }
    r.write(&o.dir, "report")?;
    Ok(())
}
