//! Pretrained weights from a local Hugging Face folder: `config.json` (which
//! architecture), `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, memory-mapped. F32/BF16/F16 tensors become f32
//! frozen parameters of a `Params` store under their HF names, so surgery and
//! hooks address them like any other weight. May import `nn` only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{Device, Shape, Tensor};
use serde::de::DeserializeOwned;

use crate::nn::{Embedding, Linear, Norm, NormKind, Params};

/// Errors while reading a pretrained folder; each names the file and the field or tensor.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: field `{field}`: {msg}")]
    Field { path: String, field: String, msg: String },
    #[error("{path}: unsupported {field} {value}; supported: {supported}")]
    Unsupported { path: String, field: String, value: String, supported: String },
    #[error(
        "{dir}: no weights: expected `model.safetensors`, or shards listed in \
         `model.safetensors.index.json` (the Hugging Face layout)"
    )]
    NoWeights { dir: String },
    #[error("{path}: {msg}")]
    Safetensors { path: String, msg: String },
    #[error("{dir}: tensor `{name}` is missing")]
    MissingTensor { dir: String, name: String },
    #[error("{dir}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape { dir: String, name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("{dir}: tensor `{name}` has dtype {dtype}; supported: F32, BF16, F16")]
    Dtype { dir: String, name: String, dtype: String },
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: String, msg: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A bad value in a config, before the file path is known.
#[derive(Debug)]
pub struct FieldError {
    pub field: String,
    pub msg: String,
}

impl FieldError {
    pub fn new(field: &str, msg: impl Into<String>) -> Self {
        Self { field: field.to_string(), msg: msg.into() }
    }
    pub fn at(self, path: &Path) -> HfError {
        HfError::Field { path: path.display().to_string(), field: self.field, msg: self.msg }
    }
}

/// `Err(FieldError)` naming `field` unless `ok`.
pub fn require(ok: bool, field: &str, msg: &str) -> Result<(), FieldError> {
    if ok { Ok(()) } else { Err(FieldError::new(field, msg)) }
}

/// The architectures this crate can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfArch {
    /// `GPTNeoXForCausalLM` (Pythia).
    GptNeox,
    /// `Qwen2ForCausalLM` (Qwen2, Qwen2.5).
    Qwen2,
}

const ARCHS: [(&str, &str, HfArch); 2] = [
    ("GPTNeoXForCausalLM", "gpt_neox", HfArch::GptNeox),
    ("Qwen2ForCausalLM", "qwen2", HfArch::Qwen2),
];

impl HfArch {
    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        ARCHS.iter().find(|a| a.2 == self).map(|a| a.1).expect("every arch is listed")
    }

    /// From `architectures[0]`, or `model_type` when `architectures` is absent.
    pub fn detect(config: &serde_json::Value, path: &Path) -> Result<Self, HfError> {
        let unsupported = |field: &str, value: String, names: Vec<&str>| HfError::Unsupported {
            path: path.display().to_string(),
            field: format!("`{field}`"),
            value,
            supported: names.join(", "),
        };
        if let Some(archs) = config.get("architectures").filter(|v| !v.is_null()) {
            let first = archs.as_array().and_then(|a| a.first()).and_then(|a| a.as_str());
            let Some(name) = first else {
                return Err(FieldError::new("architectures", "expected a non-empty list of names").at(path));
            };
            return ARCHS
                .iter()
                .find(|a| a.0 == name)
                .map(|a| a.2)
                .ok_or_else(|| unsupported("architectures", format!("`{name}`"), ARCHS.iter().map(|a| a.0).collect()));
        }
        match config.get("model_type").and_then(|v| v.as_str()) {
            Some(t) => ARCHS
                .iter()
                .find(|a| a.1 == t)
                .map(|a| a.2)
                .ok_or_else(|| unsupported("model_type", format!("`{t}`"), ARCHS.iter().map(|a| a.1).collect())),
            None => Err(FieldError::new("architectures", "missing (and no `model_type`)").at(path)),
        }
    }
}

/// Reads `dir/config.json` as JSON.
pub fn read_config_json(dir: &Path) -> Result<(PathBuf, serde_json::Value), HfError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|source| HfError::Io { path: path.display().to_string(), source })?;
    let value = serde_json::from_str(&text)
        .map_err(|e| FieldError::new("<json>", e.to_string()).at(&path))?;
    Ok((path, value))
}

/// Deserialise a config mirror; a wrong type names the key (extra keys are ignored).
pub fn parse_config<T: DeserializeOwned>(value: &serde_json::Value, path: &Path) -> Result<T, HfError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let msg = e.into_inner().to_string();
        FieldError::new(&field, msg).at(path)
    })
}

/// Nonlinearities named by `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfAct {
    /// `gelu`: exact x·Φ(x) (erf).
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    Relu,
    Silu,
}

impl HfAct {
    pub fn from_hf(name: &str) -> Result<Self, FieldError> {
        Ok(match name {
            "gelu" => HfAct::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => HfAct::GeluTanh,
            "relu" => HfAct::Relu,
            "silu" | "swish" => HfAct::Silu,
            other => {
                return Err(FieldError::new(
                    "hidden_act",
                    format!("unsupported `{other}`; supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu"),
                ))
            }
        })
    }

    pub fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            HfAct::GeluErf => crate::nn::ops::gelu_erf(x),
            HfAct::GeluTanh => crate::nn::ops::gelu(x),
            HfAct::Relu => crate::nn::ops::relu(x),
            HfAct::Silu => candle_nn::ops::silu(x),
        }
    }
}

/// The memory-mapped safetensors files of a folder.
pub struct HfWeights {
    st: MmapedSafetensors,
    dir: PathBuf,
}

impl HfWeights {
    /// `dir/model.safetensors`, else the shards named in `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self, HfError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shard_files(&index, dir)?
        } else {
            return Err(HfError::NoWeights { dir: dir.display().to_string() });
        };
        // SAFETY: the files are mapped read-only; like every mmap-based loader we
        // rely on them not being truncated or rewritten while the model loads.
        let st = unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| HfError::Safetensors {
            path: dir.display().to_string(),
            msg: e.to_string(),
        })?;
        Ok(Self { st, dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }

    /// Every tensor name in the files, sorted.
    pub fn names(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.st.tensors().into_iter().map(|(n, _)| n).collect();
        set.into_iter().collect()
    }

    /// Tensor `name` as f32 on `device`, after checking its shape against `expected`.
    pub fn load(&self, name: &str, expected: &Shape, device: &Device) -> Result<Tensor, HfError> {
        let dir = self.dir.display().to_string();
        let view = self.st.get(name).map_err(|_| HfError::MissingTensor { dir: dir.clone(), name: name.to_string() })?;
        if view.shape() != expected.dims() {
            return Err(HfError::Shape {
                dir,
                name: name.to_string(),
                expected: expected.dims().to_vec(),
                got: view.shape().to_vec(),
            });
        }
        use safetensors::Dtype;
        if !matches!(view.dtype(), Dtype::F32 | Dtype::BF16 | Dtype::F16) {
            return Err(HfError::Dtype { dir, name: name.to_string(), dtype: format!("{:?}", view.dtype()) });
        }
        Ok(view.load(device)?.to_dtype(candle_core::DType::F32)?)
    }
}

/// The distinct shard files of an index, each checked to exist.
fn shard_files(index: &Path, dir: &Path) -> Result<Vec<PathBuf>, HfError> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index)
        .map_err(|source| HfError::Io { path: index.display().to_string(), source })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| FieldError::new("<json>", e.to_string()).at(index))?;
    let idx: Index = parse_config(&json, index)?;
    let names: BTreeSet<&String> = idx.weight_map.values().collect();
    let mut files = Vec::new();
    for n in names {
        let f = dir.join(n);
        if !f.is_file() {
            return Err(FieldError::new("weight_map", format!("shard `{n}` does not exist in {}", dir.display())).at(index));
        }
        files.push(f);
    }
    if files.is_empty() {
        return Err(FieldError::new("weight_map", "is empty").at(index));
    }
    Ok(files)
}

/// Builds modules from checkpoint tensors under a dotted prefix (`pp` = "cd into"),
/// registering each as a frozen parameter under its full HF name.
#[derive(Clone)]
pub struct HfLoader<'a> {
    weights: &'a HfWeights,
    params: Params,
    prefix: String,
}

impl<'a> HfLoader<'a> {
    pub fn new(weights: &'a HfWeights, params: &Params) -> Self {
        Self { weights, params: params.clone(), prefix: String::new() }
    }

    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self { weights: self.weights, params: self.params.clone(), prefix: self.path(&name.to_string()) }
    }

    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.path(name))
    }

    /// Loads `{prefix}.{name}` (shape-checked) into the store and returns the stored tensor.
    pub fn tensor(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor, HfError> {
        let path = self.path(name);
        let t = self.weights.load(&path, &shape.into(), self.params.device())?;
        Ok(self.params.insert(&path, t, true)?)
    }

    /// `{prefix}.weight: (d_out, d_in)` and, with `bias`, `{prefix}.bias: (d_out,)`.
    pub fn linear(&self, d_in: usize, d_out: usize, bias: bool) -> Result<Linear, HfError> {
        let weight = self.tensor((d_out, d_in), "weight")?;
        let bias = if bias { Some(self.tensor(d_out, "bias")?) } else { None };
        Ok(Linear { weight, bias })
    }

    /// `{prefix}.weight: (n, d_model)`.
    pub fn embedding(&self, n: usize, d_model: usize) -> Result<Embedding, HfError> {
        Ok(Embedding { weight: self.tensor((n, d_model), "weight")? })
    }

    /// LayerNorm (`weight`, `bias`) or RMSNorm (`weight`) over d_model.
    pub fn norm(&self, kind: NormKind, d_model: usize, eps: f64) -> Result<Norm, HfError> {
        self.tensor(d_model, "weight")?;
        if kind == NormKind::Layer {
            self.tensor(d_model, "bias")?;
        }
        // Both tensors are in the store now, so `Norm::new` picks them up instead of initialising.
        let vb = if self.prefix.is_empty() { self.params.root() } else { self.params.root().pp(&self.prefix) };
        Ok(Norm::new(kind, d_model, eps, &vb)?)
    }
}

/// A per-layer cache of keys and values `(batch, key_pos, kv_head, d_head)` for decoding.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![None; n_layers] }
    }

    /// Positions already cached (the RoPE offset of the next call).
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dim(1).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append this call's `k, v` to layer `layer` and return all keys and values so far.
    pub fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        if layer >= self.layers.len() {
            self.layers.resize(layer + 1, None);
        }
        let kv = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
            None => (k, v),
        };
        self.layers[layer] = Some(kv.clone());
        Ok(kv)
    }
}
