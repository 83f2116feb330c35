//! The training loop's failure path: a non-finite loss stops the run with an
//! error naming the step and leaves the last good checkpoint intact.

use candle_core::{Device, Result, Tensor};
use latentlab::data::induction;
use latentlab::models::{Gpt, GptConfig, LanguageModel};
use latentlab::nn::Params;
use latentlab::train::lm_task::lm_loss;
use latentlab::train::{run, Checkpoint, Metrics, MetricsSink, RunOptions, Task, TrainConfig};
use rand_chacha::ChaCha8Rng;

/// Trains normally, but the loss turns NaN at step `poison` (1-based).
struct Poisoned {
    model: Gpt,
    poison: u64,
}

impl Task for Poisoned {
    fn params(&self) -> &Params {
        self.model.params()
    }
    fn train_loss(&mut self, step: u64, rng: &mut ChaCha8Rng) -> Result<(Tensor, Metrics)> {
        let b = induction::sample(2, 8, 11, rng);
        let loss = lm_loss(&self.model, &b)?;
        let loss = if step + 1 == self.poison { (loss * f64::NAN)? } else { loss };
        Ok((loss, Metrics::new()))
    }
    fn evaluate(&mut self, _step: u64) -> Result<Metrics> {
        Ok(Metrics::new())
    }
}

#[test]
fn nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = GptConfig { vocab_size: 11, d_model: 16, n_heads: 2, d_mlp: 32, max_seq_len: 8, ..GptConfig::default() };
    let mut task = Poisoned { model: Gpt::new(&cfg, 0, &Device::Cpu).unwrap(), poison: 5 };
    let train = TrainConfig { steps: 10, checkpoint_every: 2, eval_every: 0, ..TrainConfig::default() };
    let opts = RunOptions { dir: Some(tmp.path().to_path_buf()), quiet: true, ..RunOptions::default() };
    let err = run(&mut task, &train, &opts, &mut MetricsSink::memory()).unwrap_err().to_string();
    assert!(err.contains("step 5") && err.contains("not finite"), "{err}");
    let last = Checkpoint::latest(&tmp.path().join("checkpoints")).unwrap().expect("a checkpoint");
    assert_eq!(last.manifest.step, 4);
    // The kept checkpoint loads into a fresh model and its weights are finite.
    let fresh = Gpt::new(&cfg, 1, &Device::Cpu).unwrap();
    last.load_params(fresh.params()).unwrap();
    for (name, t) in fresh.params().all_tensors() {
        let s = t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(s.is_finite(), "{name} is not finite");
    }
}
