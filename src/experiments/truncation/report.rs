//! `runs/<name>/report.html`: claims table, truncation curves, training
//! dynamics, FFN spectra and attention patterns, all computed by this run.

use super::config::TruncationStudy;
use super::run::{StudyError, StudyOutcome, VariantResult};
use crate::report::{bar_chart, heatmap, line_chart, spectrum_chart, BarGroup, ChartSpec, Report, Series};

fn rho_curves(v: &VariantResult, metric: fn(&super::task::RecallMetrics) -> f64) -> Vec<Series> {
    let full = v.row("none").map(|r| metric(&r.clean));
    let mut keys: Vec<(usize, String)> =
        v.sweep.iter().filter_map(|r| Some((r.layer?, r.matrix.clone()?))).collect();
    keys.dedup();
    keys.into_iter()
        .map(|(l, m)| {
            let mut pts: Vec<(f64, f64)> = v
                .sweep
                .iter()
                .filter(|r| r.layer == Some(l) && r.matrix.as_deref() == Some(m.as_str()))
                .filter_map(|r| Some((r.rank_frac?, metric(&r.clean))))
                .collect();
            if let Some(f) = full {
                pts.push((1.0, f));
            }
            Series::new(&format!("layer {l} {m}"), pts)
        })
        .collect()
}

fn dynamics(v: &VariantResult, metric: &str, label: &str) -> Series {
    Series::new(label, v.dynamics.iter().filter_map(|(s, m)| Some((*s as f64, *m.get(metric)?))).collect())
}

/// Write the HTML report (and each figure as SVG) into the study folder.
pub fn write_report(o: &StudyOutcome, study: &TruncationStudy) -> Result<(), StudyError> {
    let mut r = Report::new("Truncation study: noisy in-context recall (arXiv 2406.03068)");
    r.paragraph(format!(
        "Config: d = {}, T = {}, batch {}, SGD lr {} (momentum {}, wd {}), α = {}, seed {}. {} variant(s), {:.0} s in all{}.",
        study.d_model,
        study.data.seq_len,
        study.train.batch_size,
        study.train.lr,
        study.train.momentum,
        study.train.weight_decay,
        study.data.alpha,
        study.seed,
        o.variants.len(),
        o.seconds,
        if o.quick { " (--quick)" } else { "" }
    ));
    r.heading("Claims");
    crate::experiments::claims::claims_table(&mut r, &o.claims);

    for v in &o.variants {
        r.heading(format!("Variant `{}`: α = {}, {} steps, FFN layers {:?} ({:.0} s)", v.variant.name, v.variant.alpha, v.variant.steps, v.variant.ffn_layers, v.seconds));
        let table: Vec<Vec<String>> = v
            .sweep
            .iter()
            .map(|s| {
                vec![
                    s.edit.clone(),
                    format!("{:.3}", s.clean.acc),
                    format!("{:.3}", s.clean.p_noise),
                    format!("{:.3}", s.clean.p_answer),
                    format!("{:.3}", s.noisy.p_noise),
                    format!("{:.3}", s.noisy.p_answer),
                ]
            })
            .collect();
        r.table(&["edit (layer:matrix:ρ)", "clean acc", "clean P(τ)", "clean P(ȳ)", "noisy P(τ)", "noisy P(ȳ)"], table);
        let tag = &v.variant.name;
        r.figure(
            format!("{tag}: clean P(noise) vs kept rank fraction"),
            line_chart(&ChartSpec::new("P(τ) on clean data", "kept rank fraction ρ", "P(τ)"), &rho_curves(v, |m| m.p_noise))?,
        );
        r.figure(
            format!("{tag}: clean P(answer) vs kept rank fraction"),
            line_chart(&ChartSpec::new("P(ȳ) on clean data", "kept rank fraction ρ", "P(ȳ)"), &rho_curves(v, |m| m.p_answer))?,
        );
        let series = [
            dynamics(v, "noisy_p_noise", "P(τ), noisy data"),
            dynamics(v, "l1_prev_token_attn", "L1 previous-token attention"),
            dynamics(v, "l2_attn_answer_clean", "L2 attention on ȳ slots (clean)"),
            dynamics(v, "clean_acc_ffn2_dropped", "clean acc, FFN2 dropped"),
            dynamics(v, "clean_acc", "clean acc, full model"),
        ];
        let series: Vec<Series> = series.into_iter().filter(|s| !s.points.is_empty()).collect();
        if !series.is_empty() {
            r.figure(format!("{tag}: training dynamics"), line_chart(&ChartSpec::new("Training dynamics", "step", "value"), &series)?);
        }
        let margins: Vec<Series> = [dynamics(v, "ffn2_noise_margin", "FFN2 noise margin"), dynamics(v, "ffn1_noise_margin", "FFN1 noise margin")]
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect();
        if !margins.is_empty() {
            r.figure(format!("{tag}: FFN noise margins"), line_chart(&ChartSpec::new("logit(τ) − max other, trigger embedding through the FFN", "step", "margin"), &margins)?);
        }
        if let Some(s) = &v.spectral {
            let spectra: Vec<Series> = s.spectra.iter().map(|(n, sv)| Series::from_values(n, &sv.iter().map(|x| *x as f64).collect::<Vec<_>>())).collect();
            r.figure(format!("{tag}: FFN singular values"), spectrum_chart(&ChartSpec::new("Singular values of the FFN matrices", "index", "singular value"), &spectra)?);
            let mut keep = s.excess_keep.clone();
            keep.sort_by_key(|(k, _)| *k);
            r.paragraph(format!(
                "Step {}: W_2 of the last FFN: top left singular vector has |cos| {:.2} with u_τ (others ≤ {:.2}). τ-logit excess of FFN2 at scored clean positions: {:.2} with full W_1; keeping k directions of W_1: {}.",
                s.step,
                s.top_left_cos_u_tau,
                s.max_other_cos_u_tau,
                s.excess_full,
                keep.iter().map(|(k, e)| format!("k={k}: {e:.2}")).collect::<Vec<_>>().join(", ")
            ));
        }
        for (l, p) in v.patterns.iter().enumerate() {
            r.figure(format!("{tag}: layer {} attention, first clean sequence", l + 1), heatmap(&ChartSpec::new(&format!("Layer {} attention pattern", l + 1), "key position", "query position"), p, &[], &[], Some((0.0, 1.0)))?);
        }
    }
    r.heading("Direct logit attribution");
    r.paragraph(
        "Mean share of each part of the last residual stream in logit[τ] − logit[ȳ] at the clean scored positions of the first 64 clean sequences \
         (interp::lens; no final norm in this model, so the parts add up exactly): positive parts push the generic token, negative ones the in-context answer.",
    );
    let mut labels: Vec<String> = Vec::new();
    for v in &o.variants {
        for p in &v.attribution.parts {
            if !labels.contains(&p.name) {
                labels.push(p.name.clone());
            }
        }
    }
    let groups: Vec<BarGroup> = o
        .variants
        .iter()
        .map(|v| BarGroup {
            name: format!("{} (total {:.2})", v.variant.name, v.attribution.target),
            values: labels.iter().map(|l| v.attribution.parts.iter().find(|p| &p.name == l).map_or(f64::NAN, |p| p.logit)).collect(),
        })
        .collect();
    r.figure("Direct logit attribution of logit[τ] − logit[ȳ]", bar_chart(&ChartSpec::new("logit[τ] − logit[ȳ] by part, clean scored positions", "part of the stream", "logit"), &labels, &groups)?);
    r.heading("Toys (spec §8.3)");
    let g = &o.toys.grad_check;
    let a = &o.toys.assoc_memory;
    r.paragraph(format!(
        "One SGD step from zero: FFN-route τ margin {:.2} vs value-route {:.3} (ratio {:.1}); CV {:.2} vs {:.2}; averaged FFN gradient vs −α(u_τ − ū)e_qᵀ: {:.1} % error.",
        g.mean_ffn_margin, g.mean_value_margin, g.ratio, g.cv_ffn, g.cv_value, 100.0 * g.ffn_grad_rel_err
    ));
    r.paragraph(format!(
        "Linear associative memory: top singular values {}; top left vector |cos| {:.2} with u_τ; P(τ) {:.3} → {:.4} with the top component removed (acc {:.2}); keeping only the top component: P(τ) {:.2}.",
        a.singular_values.iter().take(4).map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", "),
        a.top_left_cos_u_tau,
        a.full_p_noise,
        a.top_removed_p_noise,
        a.top_removed_acc,
        a.keep_top1_p_noise
    ));
    r.write(&o.dir, "report")?;
    Ok(())
}
