//! Every trainable tensor of every model family receives a finite, non-zero
//! gradient, and whole-model gradients agree with finite differences.

mod common;

use candle_core::{Device, Result};
use latentlab::data::induction;
use latentlab::models::{Gpt, GptConfig, LanguageModel};
use latentlab::nn::linear::InitScheme;
use latentlab::nn::{Act, FfnKind, NormKind, PosKind, ResidualKind};
use latentlab::train::lm_task::lm_loss;
use rand::SeedableRng;

fn tiny() -> GptConfig {
    GptConfig { vocab_size: 11, d_model: 16, n_heads: 2, d_mlp: 32, max_seq_len: 8, ..GptConfig::default() }
}

fn families() -> Vec<(&'static str, GptConfig)> {
    vec![
        ("gpt-gelu-layernorm", tiny()),
        ("truncation", GptConfig::truncation(16, 8, 11)),
        ("truncation-ffn-layer1-only", GptConfig { ffn_layers: vec![FfnKind::Mlp, FfnKind::None], ..GptConfig::truncation(16, 8, 11) }),
        ("attention-only-linear", GptConfig { ffn: FfnKind::Linear, ..GptConfig::truncation(16, 8, 11) }),
        (
            "rope-gqa-rms-swiglu-parallel",
            GptConfig {
                n_heads: 4,
                n_kv_heads: 2,
                norm: NormKind::Rms,
                act: Act::Swiglu,
                residual: ResidualKind::Parallel,
                pos: PosKind::Rope,
                rope_frac: 0.5,
                init: InitScheme::Pytorch,
                unembed: latentlab::models::UnembedKind::Tied,
                ..tiny()
            },
        ),
        ("relu-no-bias", GptConfig { act: Act::Relu, bias: false, ..tiny() }),
        ("relative-positions-gqa", GptConfig { pos: PosKind::None, rel_pos: 3, n_heads: 4, n_kv_heads: 2, ..tiny() }),
    ]
}

#[test]
fn every_trainable_tensor_gets_a_nonzero_gradient() -> Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for (name, cfg) in families() {
        let model = Gpt::new(&cfg, 1, &Device::Cpu)?;
        let b = induction::sample(3, 8, cfg.vocab_size, &mut rng);
        let grads = lm_loss(&model, &b)?.backward()?;
        let vars = model.params().trainable();
        assert!(!vars.is_empty(), "{name}: no trainable parameters");
        for (pname, var) in vars {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: `{pname}` got no gradient"));
            let n = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(n.is_finite() && n > 0.0, "{name}: `{pname}` gradient norm² = {n}");
        }
    }
    Ok(())
}

#[test]
fn frozen_parameters_get_no_gradient_and_are_not_trainable() -> Result<()> {
    let model = Gpt::new(&GptConfig::truncation(16, 8, 11), 0, &Device::Cpu)?;
    for frozen in ["embed.weight", "pos_embed.weight", "unembed.weight"] {
        assert!(model.params().get(frozen).is_some(), "{frozen} exists");
        assert!(!model.params().is_trainable(frozen), "{frozen} is frozen");
    }
    // Spec §3.1: 2·(3d² + 8d²) trainable scalars.
    assert_eq!(model.params().n_trainable(), 2 * 11 * 16 * 16);
    Ok(())
}

/// Central differences on a few entries of every trainable tensor.
#[test]
fn model_gradients_match_finite_differences() -> Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for (name, cfg) in families() {
        let model = Gpt::new(&cfg, 2, &Device::Cpu)?;
        let b = induction::sample(2, 8, cfg.vocab_size, &mut rng);
        let grads = lm_loss(&model, &b)?.backward()?;
        common::assert_gradients_match_fd(model.params(), &grads, || Ok(lm_loss(&model, &b)?.to_scalar::<f32>()? as f64), name);
    }
    Ok(())
}

/// A sparsely scored batch takes the gathered path (`Gpt::forward_rows`): same loss
/// and same gradients as scoring the full logits, for every model family.
#[test]
fn sparse_loss_rows_path_matches_full_logits() -> Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for (name, cfg) in families() {
        let model = Gpt::new(&cfg, 2, &Device::Cpu)?;
        let mut b = induction::sample(3, 8, cfg.vocab_size, &mut rng);
        for (i, w) in b.weights.iter_mut().enumerate() {
            *w = if [3, 10, 11, 23].contains(&i) { 1.0 } else { 0.0 };
        }
        let fast = lm_loss(&model, &b)?;
        let (ids, targets, weights) = latentlab::train::lm_task::batch_tensors(&b, &Device::Cpu)?;
        let logits = model.forward(&ids, &mut latentlab::interp::hooks::Hooks::none())?;
        let v = logits.dim(2)?;
        let full = latentlab::nn::ops::cross_entropy(&logits.reshape((24, v))?, &targets, Some(&weights))?;
        let (a, c) = (fast.to_scalar::<f32>()?, full.to_scalar::<f32>()?);
        assert!((a - c).abs() <= 1e-5 * c.abs().max(1.0), "{name}: loss {a} vs {c}");
        let (ga, gc) = (fast.backward()?, full.backward()?);
        common::assert_same_grads(model.params(), &ga, &gc, name);
    }
    Ok(())
}

#[test]
fn batch_slices_give_the_whole_batch_loss_and_gradients() -> Result<()> {
    use latentlab::train::lm_task::lm_loss_grads;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for (name, cfg) in families() {
        let model = Gpt::new(&cfg, 4, &Device::Cpu)?;
        let mut b = induction::sample(5, 8, cfg.vocab_size, &mut rng);
        // Uneven weights, and one slice-sized block with no scored position.
        for (i, w) in b.weights.iter_mut().enumerate() {
            *w = if i < 16 { 0.0 } else { 0.5 + (i % 3) as f32 };
        }
        let (whole, gw) = lm_loss_grads(&model, &b, 1)?;
        for shards in [2, 3, 5] {
            let (part, gp) = lm_loss_grads(&model, &b, shards)?;
            assert!((whole - part).abs() <= 1e-5 * whole.abs().max(1.0), "{name}/{shards}: loss {part} vs {whole}");
            common::assert_same_grads(model.params(), &gp, &gw, &format!("{name}/{shards}"));
        }
    }
    Ok(())
}

mod vae {
    use candle_core::{Device, Result, Tensor};
    use latentlab::experiments::vae_rules::task::{forward, Batch, Encoded};
    use latentlab::interp::hooks::Hooks;
    use latentlab::models::{Injection, LanguageVae, VaeConfig};
    use latentlab::nn::ops;

    fn tiny(injection: Injection) -> VaeConfig {
        VaeConfig { vocab_size: 12, d_model: 16, n_heads: 2, d_mlp: 32, latent_dim: 4, max_seq_len: 10, injection, n_rules: 3, ..VaeConfig::default() }
    }

    fn batch() -> Result<Batch> {
        let items = [
            Encoded { enc: vec![1, 5, 7, 8, 3, 9, 2], dec: vec![1, 7, 8, 3, 9, 2], first_c: 4, label: 0 },
            Encoded { enc: vec![1, 6, 8, 7, 3, 10, 11, 2], dec: vec![1, 8, 7, 3, 10, 11, 2], first_c: 4, label: 1 },
            Encoded { enc: vec![1, 7, 9, 3, 8, 2], dec: vec![1, 9, 3, 8, 2], first_c: 3, label: 2 },
        ];
        let refs: Vec<&Encoded> = items.iter().collect();
        Batch::new(&refs, &Device::Cpu)
    }

    /// Recon + KL (sampled z) + rule cross-entropy: touches every parameter.
    fn loss(model: &LanguageVae, b: &Batch) -> Result<Tensor> {
        let eps = Tensor::new(&[[0.3f32, -1.0, 0.5, 0.1], [1.2, 0.2, -0.4, 0.0], [-0.7, 0.9, 0.3, -0.2]], &Device::Cpu)?;
        let p = forward(model, b, Some(&eps), &mut Hooks::none())?;
        let post = p.post.as_ref().expect("VAE");
        let labels = Tensor::new(&[0u32, 1, 2], &Device::Cpu)?;
        let ce = ops::cross_entropy(&model.classify(&post.mu)?.expect("classifier"), &labels, None)?;
        (p.recon + p.kl_dim.expect("VAE").sum_all()?)? + ce
    }

    #[test]
    fn every_vae_tensor_gets_a_nonzero_gradient_under_each_injection() -> Result<()> {
        for inj in [Injection::Memory, Injection::Kv, Injection::Query] {
            let model = LanguageVae::new(&tiny(inj), 1, &Device::Cpu)?;
            let grads = loss(&model, &batch()?)?.backward()?;
            for (name, var) in model.params().trainable() {
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{inj:?}: `{name}` got no gradient"));
                let n = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
                assert!(n.is_finite() && n > 0.0, "{inj:?}: `{name}` gradient norm² = {n}");
            }
        }
        Ok(())
    }

    #[test]
    fn vae_gradients_match_finite_differences() -> Result<()> {
        let b = batch()?;
        for inj in [Injection::Memory, Injection::Kv, Injection::Query] {
            let model = LanguageVae::new(&tiny(inj), 2, &Device::Cpu)?;
            let grads = loss(&model, &b)?.backward()?;
            super::common::assert_gradients_match_fd(model.params(), &grads, || Ok(loss(&model, &b)?.to_scalar::<f32>()? as f64), &format!("{inj:?}"));
        }
        Ok(())
    }
}
