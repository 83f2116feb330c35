//! `runs/<name>/report.html`: claims table, per-variant results, latent PCA
//! projections coloured by rule, the injection comparison, the FFN-vs-attention
//! chart and the data-size curve, all computed by this run.

use super::config::VaeRulesStudy;
use super::run::{StudyError, StudyOutcome, VariantResult};
use crate::models::Injection;
use crate::report::{bar_chart, line_chart, scatter_chart, BarGroup, ChartSpec, Report, Series};

fn f3(x: f64) -> String {
    if x.is_finite() { format!("{x:.3}") } else { "—".into() }
}

fn pca_series(v: &VariantResult) -> Vec<Series> {
    let rules = v.variant.family.rules();
    rules
        .iter()
        .enumerate()
        .map(|(r, name)| {
            let pts = v.eval.pca.iter().zip(&v.eval.labels).filter(|(_, l)| **l == r).map(|(p, _)| (p[0], p[1])).collect();
            Series::new(name, pts)
        })
        .collect()
}

/// Write the HTML report (and each figure as SVG) into the study folder.
pub fn write_report(o: &StudyOutcome, study: &VaeRulesStudy) -> Result<(), StudyError> {
    let mut r = Report::new("Reasoning rules in a language VAE (arXiv 2506.19418)");
    let m = &study.model;
    let l = &study.loss;
    r.paragraph(format!(
        "Config: d = {}, {} + {} layers, {} heads, D = {}; {} steps of batch {} (AdamW lr {}); β: {} cycle(s), zero {} / ramp {} → β_max {}; free bits {:?} λ = {}; seed {}. {} runs, {:.0} s in all{}.",
        m.d_model, m.enc_layers, m.dec_layers, m.n_heads, m.latent_dim, study.train.steps, study.train.batch_size, study.train.lr,
        l.cycles, l.zero_frac, l.ramp_frac, l.beta_max, l.free_bits, l.lambda, study.seed, o.variants.len(), o.seconds,
        if o.quick { " (--quick)" } else { "" }
    ));
    r.paragraph("Exact match is teacher-forced (identical to greedy decoding's exact match). EM_centroid decodes every test premise under every rule's centroid z; rule swap decodes with the μ of a test example of another rule.");
    r.heading("Claims");
    crate::experiments::claims::claims_table(&mut r, &o.claims);

    r.heading("Runs");
    let table: Vec<Vec<String>> = o
        .variants
        .iter()
        .map(|v| {
            let e = &v.eval;
            vec![
                v.variant.name.clone(),
                v.n_params.to_string(),
                format!("{:.1}", v.ms_per_step),
                f3(e.em_post),
                f3(e.tok_acc),
                f3(e.em_centroid),
                f3(e.swap_success),
                f3(e.swap_leak),
                f3(e.silhouette),
                f3(e.silhouette_cos),
                f3(e.kmeans_nmi),
                f3(e.kmeans_ari),
                f3(e.knn_acc),
                f3(e.probe_acc),
                f3(e.active_units),
                f3(e.kl_total),
            ]
        })
        .collect();
    r.table(
        &["run", "params", "ms/step", "EM post", "tok acc", "EM centroid", "swap", "leak", "sil", "sil cos", "NMI", "ARI", "5-NN", "probe", "AU", "KL"],
        table,
    );

    r.heading("Latent projections (PCA of test μ, coloured by rule)");
    for v in o.variants.iter().filter(|v| v.variant.is_vae() && !v.eval.pca.is_empty()) {
        let spec = ChartSpec::new(&format!("{}: silhouette {}", v.variant.name, f3(v.eval.silhouette)), "PC 1", "PC 2");
        r.figure(format!("{}: 2-D PCA of μ", v.variant.name), scatter_chart(&spec, &pca_series(v))?);
    }

    r.heading("Injection comparison (S1)");
    for &f in &study.runs.injection_families {
        let runs: Vec<&VariantResult> = [Injection::Memory, Injection::Kv, Injection::Query]
            .iter()
            .filter_map(|i| o.variant(&format!("{}-s1-{}", f.name(), serde_json::to_value(i).expect("enum").as_str().unwrap_or("?"))))
            .collect();
        if runs.is_empty() {
            continue;
        }
        let labels: Vec<String> = ["EM post", "EM centroid", "rule swap", "silhouette"].map(String::from).to_vec();
        let groups: Vec<BarGroup> = runs
            .iter()
            .map(|v| BarGroup {
                name: v.variant.name.clone(),
                values: vec![v.eval.em_post, v.eval.em_centroid, v.eval.swap_success, v.eval.silhouette],
            })
            .collect();
        r.figure(format!("{}: injections", f.name()), bar_chart(&ChartSpec::new(&format!("{}: memory vs KV vs query", f.name()), "", "value"), &labels, &groups)?);
    }

    r.heading("FFN vs attention in the encoder (S1 + query)");
    for &f in &study.runs.supervision_families {
        let Some(v) = o.variant(&format!("{}-s1-query", f.name())) else { continue };
        if v.eval.grad_sep_ffn.is_empty() {
            continue;
        }
        let labels: Vec<String> = (0..v.eval.grad_sep_ffn.len()).flat_map(|l| [format!("grad sep L{l}"), format!("write sil L{l}")]).collect();
        let inter = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).flat_map(|(x, y)| [*x, *y]).collect() };
        let groups = vec![
            BarGroup { name: "FFN".into(), values: inter(&v.eval.grad_sep_ffn, &v.eval.write_sil_ffn) },
            BarGroup { name: "attention".into(), values: inter(&v.eval.grad_sep_attn, &v.eval.write_sil_attn) },
        ];
        r.figure(
            format!("{}: rule separation of encoder FFN vs attention", f.name()),
            bar_chart(&ChartSpec::new(&format!("{}: gradient separation and write silhouette per layer", f.name()), "", "separation"), &labels, &groups)?,
        );
    }

    let mut sizes = study.runs.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let curve: Vec<(f64, &VariantResult)> = sizes
        .iter()
        .filter_map(|&n| {
            let tail = if n == study.data.n_train { String::new() } else { format!("-n{n}") };
            o.variant(&format!("{}-s1-query{tail}", study.runs.size_family.name())).map(|v| (n as f64, v))
        })
        .collect();
    if !curve.is_empty() {
        r.heading(format!("Data scaling ({}, S1 + query)", study.runs.size_family.name()));
        let series = vec![
            Series::new("EM centroid", curve.iter().map(|(n, v)| (*n, v.eval.em_centroid)).collect()),
            Series::new("EM post", curve.iter().map(|(n, v)| (*n, v.eval.em_post)).collect()),
            Series::new("rule swap", curve.iter().map(|(n, v)| (*n, v.eval.swap_success)).collect()),
        ];
        let mut spec = ChartSpec::new("Accuracy vs training examples (same step budget)", "training examples", "exact match");
        spec.log_x = true;
        r.figure("data-size curve", line_chart(&spec, &series)?);
    }

    let kl: Vec<Series> = o
        .variants
        .iter()
        .filter(|v| v.variant.is_vae())
        .map(|v| Series::new(&v.variant.name, v.dynamics.iter().filter_map(|(s, m)| Some((*s as f64, *m.get("val_kl")?))).collect()))
        .filter(|s| !s.points.is_empty())
        .collect();
    if !kl.is_empty() {
        r.heading("Training dynamics");
        r.figure("validation KL", line_chart(&ChartSpec::new("Validation KL (nats) during training", "step", "KL"), &kl)?);
    }
    r.write(&o.dir, "report")?;
    Ok(())
}
