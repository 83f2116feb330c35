//! The training loop's failure path (a non-finite loss stops the run with an error
//! naming the step and leaves the last good checkpoint intact) and its validation-
//! triggered learning-rate decay.

use candle_core::{Device, Result, Tensor};
use latentlab::data::induction;
use latentlab::models::{Gpt, GptConfig, LanguageModel};
use latentlab::nn::Params;
use latentlab::train::lm_task::lm_loss;
use latentlab::train::{run, Checkpoint, DecayTrigger, Metrics, MetricsSink, RunOptions, ScheduleKind, Task, TrainConfig};
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

/// Trains a tiny GPT; its evaluation reports `score` = the number of completed steps.
struct Counting {
    model: Gpt,
}

impl Task for Counting {
    fn params(&self) -> &Params {
        self.model.params()
    }
    fn train_loss(&mut self, _step: u64, rng: &mut ChaCha8Rng) -> Result<(Tensor, Metrics)> {
        let b = induction::sample(2, 8, 11, rng);
        Ok((lm_loss(&self.model, &b)?, Metrics::new()))
    }
    fn evaluate(&mut self, step: u64) -> Result<Metrics> {
        Ok(Metrics::from([("score".to_string(), step as f64)]))
    }
}

#[test]
fn a_decay_trigger_starts_the_final_decay_early_and_survives_a_resume() {
    let cfg = GptConfig { vocab_size: 11, d_model: 16, n_heads: 2, d_mlp: 32, max_seq_len: 8, ..GptConfig::default() };
    let train = TrainConfig {
        steps: 100,
        eval_every: 5,
        log_every: 1,
        checkpoint_every: 4,
        schedule: ScheduleKind::ConstantThenCosine,
        decay_steps: 10,
        decay_trigger: Some(DecayTrigger { metric: "score".into(), at_least: 23.0 }),
        ..TrainConfig::default()
    };
    // The first evaluation with score ≥ 23 is at step 25: decay over steps 25..35, end at 35.
    assert_eq!(train.lr_at_with(24, Some(25)), train.lr);
    assert!(train.lr_at_with(30, Some(25)) < train.lr);
    assert_eq!(train.end_with(Some(25)), 35);
    let go = |dir: &std::path::Path, stop_after: Option<u64>, resume: bool| {
        let mut task = Counting { model: Gpt::new(&cfg, 0, &Device::Cpu).unwrap() };
        let opts = RunOptions { dir: Some(dir.to_path_buf()), quiet: true, resume, stop_after, ..RunOptions::default() };
        let mut sink = MetricsSink::memory();
        let summary = run(&mut task, &train, &opts, &mut sink).unwrap();
        (summary, sink.records)
    };
    let straight = tempfile::tempdir().unwrap();
    let (summary, records) = go(straight.path(), None, false);
    assert_eq!(summary.steps, 35, "the run ends decay_steps after the trigger");
    let lr = |records: &[(u64, Metrics)], s: u64| records.iter().find(|(k, _)| *k == s).map(|(_, m)| m["lr"]).unwrap();
    assert_eq!(lr(&records, 25), train.lr, "step 25 (0-based 24) ran before the trigger");
    assert!(lr(&records, 30) < train.lr && lr(&records, 35) < lr(&records, 30));
    assert_eq!(records.iter().filter_map(|(_, m)| m.get("decay_start")).collect::<Vec<_>>(), [&25.0]);
    // Interrupted after the trigger and resumed: the same weights at the end.
    let split = tempfile::tempdir().unwrap();
    go(split.path(), Some(28), false);
    let (resumed, _) = go(split.path(), None, true);
    assert_eq!(resumed.steps, 35);
    let weights = |d: &std::path::Path| std::fs::read(d.join("checkpoints/step_00000035/model.safetensors")).expect("final checkpoint");
    assert!(weights(straight.path()) == weights(split.path()), "a resumed triggered run differs");
    let last = Checkpoint::latest(&split.path().join("checkpoints")).unwrap().unwrap();
    assert_eq!(last.manifest.decay_start, Some(25));
    // A trigger on a metric the evaluation never reports is an error, not a silent no-op.
    let typo = TrainConfig { decay_trigger: Some(DecayTrigger { metric: "scor".into(), at_least: 1.0 }), ..train.clone() };
    let mut task = Counting { model: Gpt::new(&cfg, 0, &Device::Cpu).unwrap() };
    let opts = RunOptions { quiet: true, ..RunOptions::default() };
    let err = run(&mut task, &typo, &opts, &mut MetricsSink::memory()).unwrap_err().to_string();
    assert!(err.contains("train.decay_trigger.metric") && err.contains("`scor`") && err.contains("score"), "{err}");
}
