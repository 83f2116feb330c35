//! The claims of spec §10 (V0–V4, H), each checked against its pass band
//! from the numbers this run measured; a claim the data contradicts is a FAIL.


use super::config::VaeRulesStudy;
use super::run::{StudyOutcome, VariantResult};
use crate::data::rules::Family;

pub use crate::experiments::claims::Claim;
use crate::experiments::claims::claim;

fn get<'a>(o: &'a StudyOutcome, f: Family, rest: &str) -> Option<&'a VariantResult> {
    o.variant(&format!("{}-{rest}", f.name()))
}

/// At least ⌈2n/3⌉ of n (2 of 3 families; 1 of 1).
fn most(hits: usize, n: usize) -> bool {
    n > 0 && hits * 3 >= 2 * n
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Check every claim the run has data for.
pub fn check_claims(o: &StudyOutcome, study: &VaeRulesStudy) -> Vec<Claim> {
    let r = &study.runs;
    let mut out = Vec::new();
    // V0: baselines and the S1 + query VAE.
    let (mut a_ok, mut b_ok, mut c_ok, mut a_txt, mut b_txt, mut c_txt, mut n0) = (true, true, true, vec![], vec![], vec![], 0);
    for &f in &r.baseline_families {
        let k = f.rules().len() as f64;
        let (Some(none), Some(oracle)) = (get(o, f, "no-latent"), get(o, f, "oracle")) else { continue };
        n0 += 1;
        a_ok &= none.eval.em_post <= 1.0 / k + 0.1;
        a_txt.push(format!("{} {:.3} (chance {:.3})", f.name(), none.eval.em_post, 1.0 / k));
        let floor = if f == Family::Math { 0.8 } else { 0.95 };
        b_ok &= oracle.eval.em_post >= floor;
        b_txt.push(format!("{} {:.3}", f.name(), oracle.eval.em_post));
        if let Some(q) = get(o, f, "s1-query") {
            let frac = if f == Family::Math { 0.8 } else { 0.9 };
            c_ok &= q.eval.em_centroid >= frac * oracle.eval.em_post && q.eval.em_post >= q.eval.em_centroid - 0.05;
            c_txt.push(format!("{} centroid {:.3} / post {:.3} vs oracle {:.3}", f.name(), q.eval.em_centroid, q.eval.em_post, oracle.eval.em_post));
        }
    }
    if n0 > 0 {
        out.push(claim("V0a", "the no-latent decoder is at chance over rules", "EM ≤ 1/#rules + 0.1 on every family", a_txt.join("; "), a_ok));
        out.push(claim("V0b", "the oracle decoder (rule token) is near the ceiling", "EM ≥ 0.95 (S, E), ≥ 0.8 (M)", b_txt.join("; "), b_ok));
        if !c_txt.is_empty() {
            out.push(claim(
                "V0c",
                "the S1 + query VAE retrieves the rule from its latent, close to the oracle",
                "EM_centroid ≥ 0.9×oracle (S, E), ≥ 0.8×oracle (M); EM_post ≥ EM_centroid − 0.05",
                c_txt.join("; "),
                c_ok,
            ));
        }
    }
    // V1: supervision.
    let (mut v1a, mut v1a_txt, mut v1b_hits, mut v1b_n, mut v1b_txt, mut s2_hits, mut s2_n, mut s2_txt) =
        (true, vec![], 0, 0, vec![], 0, 0, vec![]);
    for &f in &r.supervision_families {
        let Some(s1) = get(o, f, "s1-query") else { continue };
        let e = &s1.eval;
        v1a &= e.silhouette >= 0.5 && e.probe_acc >= 0.95 && e.kmeans_nmi >= 0.8;
        v1a_txt.push(format!("{} sil {:.2}, probe {:.2}, NMI {:.2}", f.name(), e.silhouette, e.probe_acc, e.kmeans_nmi));
        if let Some(s0) = get(o, f, "s0-query") {
            v1b_n += 1;
            let (ds, dn) = (e.silhouette - s0.eval.silhouette, e.kmeans_nmi - s0.eval.kmeans_nmi);
            v1b_hits += usize::from(ds >= 0.1 || dn >= 0.1);
            v1b_txt.push(format!("{} Δsil {ds:+.2} (S0 {:.2}), ΔNMI {dn:+.2}", f.name(), s0.eval.silhouette));
            if let Some(s2) = get(o, f, "s2-query") {
                s2_n += 1;
                s2_hits += usize::from(s2.eval.silhouette >= s0.eval.silhouette);
                s2_txt.push(format!("{} S2 sil {:.2} vs S0 {:.2}, S1 {:.2}", f.name(), s2.eval.silhouette, s0.eval.silhouette, e.silhouette));
            }
        }
    }
    if !v1a_txt.is_empty() {
        out.push(claim("V1a", "with the rule token (S1) the latent forms rule clusters", "silhouette ≥ 0.5, probe ≥ 0.95, k-means NMI ≥ 0.8", v1a_txt.join("; "), v1a));
    }
    if v1b_n > 0 {
        out.push(claim(
            "V1b",
            "rule supervision separates rules better than none (S1 vs S0)",
            "Δsilhouette ≥ 0.1 or ΔNMI ≥ 0.1 on ≥ 2/3 of families",
            v1b_txt.join("; "),
            most(v1b_hits, v1b_n),
        ));
    }
    if s2_n > 0 {
        out.push(claim("V1c", "a rule classifier on z (S2) separates at least as well as none", "silhouette(S2) ≥ silhouette(S0) on ≥ 2/3 of families", s2_txt.join("; "), most(s2_hits, s2_n)));
    }
    // V2: injections.
    let (mut v2_every, mut v2_strict, mut v2_txt, mut v2_n) = (true, false, vec![], 0);
    for &f in &r.injection_families {
        let Some(q) = get(o, f, "s1-query") else { continue };
        let others: Vec<&VariantResult> = ["s1-memory", "s1-kv"].iter().filter_map(|n| get(o, f, n)).collect();
        if others.is_empty() {
            continue;
        }
        v2_n += 1;
        let mut parts = vec![format!("{} query EMc {:.3} swap {:.3} sil {:.2}", f.name(), q.eval.em_centroid, q.eval.swap_success, q.eval.silhouette)];
        for x in &others {
            let (de, ds) = (q.eval.em_centroid - x.eval.em_centroid, q.eval.swap_success - x.eval.swap_success);
            v2_every &= de >= -0.02 && ds >= -0.02;
            v2_strict |= de >= 0.05 || ds >= 0.05;
            let tag = x.variant.name.rsplit('-').next().unwrap_or("?");
            parts.push(format!("vs {tag}: ΔEMc {de:+.3} Δswap {ds:+.3} Δsil {:+.2}", q.eval.silhouette - x.eval.silhouette));
        }
        v2_txt.push(parts.join(", "));
    }
    if v2_n > 0 {
        out.push(claim(
            "V2",
            "query injection retrieves rules at least as well as memory and KV",
            "query ≥ others − 0.02 (EM_centroid, swap) on every family and ≥ +0.05 on one",
            v2_txt.join("; "),
            v2_every && v2_strict,
        ));
    }
    // V3: FFN vs attention in the encoder.
    let (mut g_hits, mut g_n, mut g_txt, mut w_hits, mut w_txt) = (0, 0, vec![], 0, vec![]);
    for &f in &r.supervision_families {
        let Some(s1) = get(o, f, "s1-query") else { continue };
        let e = &s1.eval;
        if e.grad_sep_ffn.is_empty() {
            continue;
        }
        g_n += 1;
        let diffs: Vec<f64> = e.grad_sep_ffn.iter().zip(&e.grad_sep_attn).map(|(a, b)| a - b).collect();
        g_hits += usize::from(mean(&diffs) > 0.0);
        g_txt.push(format!(
            "{} sep FFN {} vs ATTN {}",
            f.name(),
            e.grad_sep_ffn.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join("/"),
            e.grad_sep_attn.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join("/")
        ));
        let dw = mean(&e.write_sil_ffn) - mean(&e.write_sil_attn);
        w_hits += usize::from(dw >= 0.0);
        w_txt.push(format!("{} write sil FFN {:.2} vs ATTN {:.2}", f.name(), mean(&e.write_sil_ffn), mean(&e.write_sil_attn)));
    }
    if g_n > 0 {
        out.push(claim("V3a", "encoder FFN gradients separate rules better than attention gradients", "mean over layers sep(FFN) − sep(ATTN) > 0 on ≥ 2/3 of families", g_txt.join("; "), most(g_hits, g_n)));
        out.push(claim("V3c", "encoder FFN writes separate rules at least as well as attention writes", "mean silhouette FFN ≥ ATTN on ≥ 2/3 of families", w_txt.join("; "), most(w_hits, g_n)));
    }
    let (mut f_hits, mut f_n, mut f_txt) = (0, 0, vec![]);
    for &f in &r.freeze_families {
        let (Some(ffn_only), Some(attn_only)) = (get(o, f, "s1-query-frozen-attn"), get(o, f, "s1-query-frozen-ffn")) else { continue };
        f_n += 1;
        f_hits += usize::from(ffn_only.eval.silhouette >= attn_only.eval.silhouette - 0.02);
        f_txt.push(format!(
            "{} FFN-only sil {:.2} EMc {:.3}; attention-only sil {:.2} EMc {:.3}",
            f.name(),
            ffn_only.eval.silhouette,
            ffn_only.eval.em_centroid,
            attn_only.eval.silhouette,
            attn_only.eval.em_centroid
        ));
    }
    if f_n > 0 {
        out.push(claim("V3b", "training only the encoder FFNs keeps rules as separate as training only attention", "FFN-only silhouette ≥ attention-only − 0.02 on ≥ 2/3 of families", f_txt.join("; "), most(f_hits, f_n)));
    }
    // V4: data scaling.
    let mut sizes = r.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let curve: Vec<(usize, f64)> = sizes
        .iter()
        .filter_map(|&n| {
            let name = if n == study.data.n_train { "s1-query".to_string() } else { format!("s1-query-n{n}") };
            get(o, r.size_family, &name).map(|v| (n, v.eval.em_centroid))
        })
        .collect();
    if curve.len() >= 3 {
        let monotone = curve.windows(2).all(|w| w[1].1 >= w[0].1 - 0.03);
        let first = curve[1].1 - curve[0].1;
        let last = curve[curve.len() - 1].1 - curve[curve.len() - 2].1;
        out.push(claim(
            "V4",
            "accuracy saturates as the training set grows",
            "EM_centroid non-decreasing within 0.03; last gain ≤ ⅓ of first gain",
            format!("{} (first gain {first:+.3}, last gain {last:+.3})", curve.iter().map(|(n, e)| format!("N={n}: {e:.3}")).collect::<Vec<_>>().join(", ")),
            monotone && last <= first / 3.0,
        ));
    } else if !curve.is_empty() {
        out.push(claim(
            "V4",
            "accuracy saturates as the training set grows",
            "needs ≥ 3 training-set sizes",
            format!("not measured: {} size(s): {}", curve.len(), curve.iter().map(|(n, e)| format!("N={n}: {e:.3}")).collect::<Vec<_>>().join(", ")),
            false,
        ));
    }
    // H: VAE health.
    let vaes: Vec<&VariantResult> = o.variants.iter().filter(|v| v.variant.is_vae()).collect();
    if !vaes.is_empty() {
        let bad: Vec<String> = vaes
            .iter()
            .filter(|v| !(v.eval.active_units >= 1.0 && (1.0..=20.0).contains(&v.eval.kl_total)))
            .map(|v| format!("{} (AU {}, KL {:.2})", v.variant.name, v.eval.active_units, v.eval.kl_total))
            .collect();
        let kls: Vec<f64> = vaes.iter().map(|v| v.eval.kl_total).collect();
        out.push(claim(
            "H",
            "no posterior collapse: every VAE keeps active units and a moderate KL",
            "AU ≥ 1 and KL ∈ [1, 20] nats in every VAE run",
            format!(
                "{} runs, KL {:.2}–{:.2}{}",
                vaes.len(),
                kls.iter().cloned().fold(f64::INFINITY, f64::min),
                kls.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                if bad.is_empty() { String::new() } else { format!("; outside: {}", bad.join(", ")) }
            ),
            bad.is_empty(),
        ));
    }
    out
}
