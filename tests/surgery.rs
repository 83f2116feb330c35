//! Truncation on matrices whose spectrum is known exactly.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use latentlab::surgery::{apply, EditSet, ModelWeights, Svd, SvdCache, TemplateMap};

/// A 6×4 matrix with singular values 5, 3, 2, 0.5: a scaled, permuted
/// partial identity, rotated by a fixed orthogonal 4×4 matrix on the right.
fn known() -> (Tensor, Vec<f32>) {
    let s = [5f32, 3., 2., 0.5];
    let rows = [2usize, 0, 5, 3]; // singular value i sits in row rows[i], column i
    let c = (0.6f32, 0.8f32); // a rotation in the (0, 1) and (2, 3) planes
    let rot = [[c.0, -c.1, 0., 0.], [c.1, c.0, 0., 0.], [0., 0., c.0, -c.1], [0., 0., c.1, c.0]];
    let mut w = vec![0f32; 24];
    for (i, &r) in rows.iter().enumerate() {
        for j in 0..4 {
            w[r * 4 + j] = s[i] * rot[i][j];
        }
    }
    (Tensor::from_vec(w, (6, 4), &Device::Cpu).unwrap(), s.to_vec())
}

fn weights(w: &Tensor) -> ModelWeights {
    ModelWeights::from_map(HashMap::from([("blocks.0.mlp.fc_in.weight".to_string(), w.clone())]))
}

fn edit(w: &Tensor, spec: &str, cache: &mut SvdCache) -> Tensor {
    let e: EditSet = spec.parse().unwrap();
    apply(&e, &weights(w), cache, &TemplateMap::laser()).unwrap().get("blocks.0.mlp.fc_in.weight").unwrap().clone()
}

fn singular_values(t: &Tensor) -> Vec<f32> {
    Svd::compute("t", t).unwrap().s
}

#[test]
fn known_spectrum_keeps_exactly_the_top_values() {
    let (w, s) = known();
    let got = singular_values(&w);
    for (a, b) in got.iter().zip(&s) {
        assert!((a - b).abs() < 1e-5, "{got:?} vs {s:?}");
    }
    let mut cache = SvdCache::new();
    // ρ = 0.5 of min(6, 4) = 4 keeps 2 values: 5 and 3.
    let half = singular_values(&edit(&w, "0:fc_in:0.5", &mut cache));
    assert!((half[0] - 5.0).abs() < 1e-5 && (half[1] - 3.0).abs() < 1e-5, "{half:?}");
    assert!(half[2..].iter().all(|v| v.abs() < 1e-5), "{half:?}");
    // Bottom mode removes the top 2: 2 and 0.5 remain.
    let bottom = singular_values(&edit(&w, "0:fc_in:bottom:0.5", &mut cache));
    assert!((bottom[0] - 2.0).abs() < 1e-5 && (bottom[1] - 0.5).abs() < 1e-5, "{bottom:?}");
    // ρ = 1 is the identity edit; ρ = 0 zeroes the matrix.
    let same = edit(&w, "0:fc_in:1", &mut cache);
    let diff = (same - &w).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "ρ = 1 changed the matrix by {diff}");
    let zero = edit(&w, "0:fc_in:0", &mut cache);
    assert_eq!(zero.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    // One SVD for all of the above.
    assert_eq!(cache.computed(), 1);
}

#[test]
fn bad_edit_specs_are_clear_errors() {
    let (w, _) = known();
    let mut cache = SvdCache::new();
    for (spec, needle) in [("0:fc_middle:0.1", "fc_middle"), ("0:fc_in:1.5", "1.5"), ("0:fc_in:-0.1", "-0.1"), ("x:fc_in:0.1", "x")] {
        let err = spec.parse::<EditSet>().unwrap_err().to_string();
        assert!(err.contains(needle), "{spec}: {err}");
    }
    let e: EditSet = "3:fc_in:0.1".parse().unwrap();
    let err = apply(&e, &weights(&w), &mut cache, &TemplateMap::laser()).unwrap_err().to_string();
    assert!(err.contains("3:fc_in:0.1") && err.contains("valid targets"), "{err}");
}
