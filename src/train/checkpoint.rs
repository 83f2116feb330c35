//! Checkpoints: `model.safetensors` (every parameter, frozen included),
//! `optim.safetensors` (moments) and `manifest.json` (resolved config, step,
//! optimizer step, data-RNG state, crate version), in
//! `checkpoints/step_{n:08}/`. Written into a temporary directory and
//! renamed, so a crash never leaves a half-written checkpoint; `latest` is
//! replaced atomically last.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::OptimizerKind;
use super::error::{io_err, TrainError};
use super::optim::Optimizer;
use crate::nn::params::ParamError;
use crate::nn::Params;

/// The data RNG's exact position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: [u8; 32],
    pub stream: u64,
    pub word_pos: u128,
}

impl RngState {
    pub fn of(rng: &ChaCha8Rng) -> Self {
        Self { seed: rng.get_seed(), stream: rng.get_stream(), word_pos: rng.get_word_pos() }
    }
    pub fn restore(&self) -> ChaCha8Rng {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub crate_version: String,
    /// Steps completed.
    pub step: u64,
    pub optimizer: OptimizerKind,
    pub optimizer_t: u64,
    pub rng: RngState,
    /// The run's resolved config (TOML text).
    pub config: String,
    /// Completed steps when `train.decay_trigger` fired (None: not fired).
    #[serde(default)]
    pub decay_start: Option<u64>,
    /// The task's own resumable state (`Task::state`, e.g. a curriculum's measured stage
    /// ends), None for stateless tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_state: Option<serde_json::Value>,
}

/// A checkpoint directory.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

impl Checkpoint {
    /// Write a checkpoint of `params` and `opt` under `root/step_{step}`.
    pub fn save(
        root: &Path,
        params: &Params,
        opt: &Optimizer,
        manifest: Manifest,
    ) -> Result<Checkpoint, TrainError> {
        std::fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
        let name = format!("step_{:08}", manifest.step);
        let dir = root.join(&name);
        let tmp = root.join(format!(".{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        let model: HashMap<String, Tensor> = params.all_tensors().into_iter().collect();
        let model_path = tmp.join("model.safetensors");
        candle_core::safetensors::save(&model, &model_path).map_err(|e| io_err(&model_path, e))?;
        let optim: HashMap<String, Tensor> = opt.state_tensors(params.device())?.into_iter().collect();
        let optim_path = tmp.join("optim.safetensors");
        candle_core::safetensors::save(&optim, &optim_path).map_err(|e| io_err(&optim_path, e))?;
        let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        std::fs::write(tmp.join("manifest.json"), json).map_err(|e| io_err(&tmp, e))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        }
        std::fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
        write_atomic(&root.join("latest"), name.as_bytes())?;
        Ok(Checkpoint { dir, manifest })
    }

    /// The checkpoint `latest` points at, if any.
    pub fn latest(root: &Path) -> Result<Option<Checkpoint>, TrainError> {
        let latest = root.join("latest");
        if !latest.exists() {
            return Ok(None);
        }
        let name = std::fs::read_to_string(&latest).map_err(|e| io_err(&latest, e))?;
        Self::open(&root.join(name.trim())).map(Some)
    }

    /// Open a checkpoint directory (or a `model.safetensors` inside one).
    pub fn open(path: &Path) -> Result<Checkpoint, TrainError> {
        let dir = if path.is_file() { path.parent().unwrap_or(Path::new(".")).to_path_buf() } else { path.to_path_buf() };
        let mpath = dir.join("manifest.json");
        let text = std::fs::read_to_string(&mpath).map_err(|e| io_err(&mpath, e))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| TrainError::Corrupt { path: mpath.display().to_string(), msg: e.to_string() })?;
        Ok(Checkpoint { dir, manifest })
    }

    /// Load the weights into `params` (names and shapes must match).
    pub fn load_params(&self, params: &Params) -> Result<(), TrainError> {
        let path = self.dir.join("model.safetensors");
        params.load_safetensors(&path).map_err(|e| match e {
            ParamError::File { path, msg } => TrainError::Corrupt { path, msg },
            other => TrainError::Mismatch { path: path.display().to_string(), msg: other.to_string() },
        })
    }

    /// The optimizer state.
    pub fn load_optimizer(&self, device: &Device) -> Result<Optimizer, TrainError> {
        let path = self.dir.join("optim.safetensors");
        let tensors = candle_core::safetensors::load(&path, device)
            .map_err(|e| TrainError::Corrupt { path: path.display().to_string(), msg: e.to_string() })?;
        let tensors: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        Ok(Optimizer::from_state(self.manifest.optimizer, self.manifest.optimizer_t, &tensors)?)
    }
}
