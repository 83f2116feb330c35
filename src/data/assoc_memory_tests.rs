//! Unit tests of [`super`] (toy associative-memory checks, spec §8.3).

use super::*;

#[test]
fn one_step_gradient_check_matches_theory() {
    for seed in 0..3 {
        let r = one_step_gradient_check(&GradCheckConfig {
            seed,
            ..Default::default()
        });
        eprintln!("seed {seed}: {r:#?}");
        assert!(r.ffn_grad_rel_err < 0.10, "rel err {}", r.ffn_grad_rel_err);
        assert!(
            r.mean_value_margin > 0.0,
            "value margin {}",
            r.mean_value_margin
        );
        assert!(r.ratio >= 5.0, "ratio {}", r.ratio);
        assert!(
            r.cv_value > r.cv_ffn,
            "cv value {} vs ffn {}",
            r.cv_value,
            r.cv_ffn
        );
        assert!((r.mean_ffn_margin / r.ffn_margin_theory - 1.0).abs() < 0.1);
    }
}

#[test]
fn linear_assoc_memory_spectral_picture() {
    for seed in 0..3 {
        let mem = linear_assoc_memory(&AssocMemoryConfig {
            seed,
            ..Default::default()
        });
        let r = analyse_assoc_memory(&mem, &[1, 2, 4]);
        eprintln!("seed {seed}: s[..4] = {:?}", &r.singular_values[..4]);
        eprintln!(
            "cos {:.3} {:.3} other {:.3}\nfull {:?}\nremoved {:?}\nkept {:?}",
            r.top_left_cos_u_tau,
            r.top_right_cos_sum_e,
            r.max_other_left_cos_u_tau,
            r.full,
            r.top_removed,
            r.top_k_kept
        );
        // trained to the Bayes split P(τ) ≈ α with recall among non-τ outputs
        assert!((r.full.p_noise - 0.5).abs() < 0.1, "{:?}", r.full);
        assert!(r.full.acc_excl_noise > 0.9, "{:?}", r.full);
        // dominant top direction u_τ (Σ e_i)ᵀ
        assert!(r.singular_values[0] > 2.0 * r.singular_values[1]);
        // right vector: SGD moves from Σe_i toward the dual direction E⁺1 (vᵀe_i equal for all keys),
        // so its cosine with Σe_i is ≈ 0.8 rather than 1 for N/d = 1/2.
        assert!(
            r.top_left_cos_u_tau > 0.9 && r.top_right_cos_sum_e > 0.7,
            "{r:?}"
        );
        assert!(r.max_other_left_cos_u_tau < 0.3);
        // removing it kills τ and keeps recall; keeping only the top keeps τ and loses recall
        assert!(
            r.top_removed.p_noise < 0.1 && r.top_removed.acc > 0.9,
            "{:?}",
            r.top_removed
        );
        let (_, k1) = r.top_k_kept[0];
        assert!(k1.p_noise > 0.5 && k1.acc < 0.2, "{k1:?}");
    }
}
