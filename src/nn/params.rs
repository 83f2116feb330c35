//! The parameter store: trainable `Var`s and frozen tensors, by dotted name.
//!
//! Frozen tensors are plain `Tensor`s, so autograd never tracks them and the
//! optimizer never sees them. Initialisation draws from one seeded ChaCha
//! stream in creation order, so the same config and seed give the same model.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Init {
    Zeros,
    Ones,
    /// N(0, std²).
    Normal { std: f64 },
    /// U(-bound, bound).
    Uniform { bound: f64 },
}

#[derive(Default)]
struct Store {
    vars: BTreeMap<String, Var>,
    frozen: BTreeMap<String, Tensor>,
}

/// All parameters of a model. Cheap to clone (shared).
#[derive(Clone)]
pub struct Params {
    store: Arc<Mutex<Store>>,
    rng: Arc<Mutex<ChaCha8Rng>>,
    device: Device,
}

impl Params {
    /// An empty store whose initialisers draw from `ChaCha8Rng::seed_from_u64(seed)`.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            store: Arc::default(),
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A builder rooted at the empty prefix.
    pub fn root(&self) -> ParamBuilder {
        ParamBuilder { params: self.clone(), prefix: String::new() }
    }

    fn init_tensor(&self, shape: &Shape, init: Init) -> Result<Tensor> {
        let n = shape.elem_count();
        let data: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal { std } => {
                let dist = Normal::new(0.0, std).map_err(candle_core::Error::wrap)?;
                let mut rng = self.rng.lock().expect("rng lock poisoned");
                (0..n).map(|_| dist.sample(&mut *rng) as f32).collect()
            }
            Init::Uniform { bound } => {
                let mut rng = self.rng.lock().expect("rng lock poisoned");
                (0..n).map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32).collect()
            }
        };
        Tensor::from_vec(data, shape, &self.device)
    }

    /// Trainable variables, sorted by name (the optimizer's fixed order).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let s = self.store.lock().expect("store lock poisoned");
        s.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Every tensor (trainable and frozen), sorted by name.
    pub fn all_tensors(&self) -> BTreeMap<String, Tensor> {
        let s = self.store.lock().expect("store lock poisoned");
        let mut out: BTreeMap<String, Tensor> =
            s.frozen.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        for (k, v) in &s.vars {
            out.insert(k.clone(), v.as_tensor().clone());
        }
        out
    }

    /// Look up any parameter by name.
    pub fn get(&self, name: &str) -> Option<Tensor> {
        let s = self.store.lock().expect("store lock poisoned");
        s.vars.get(name).map(|v| v.as_tensor().clone()).or_else(|| s.frozen.get(name).cloned())
    }

    pub fn is_trainable(&self, name: &str) -> bool {
        self.store.lock().expect("store lock poisoned").vars.contains_key(name)
    }

    /// Number of trainable scalars.
    pub fn n_trainable(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Overwrite parameter `name` with `value` (same shape). Frozen tensors are
    /// replaced, so models must fetch them through the store (they share it).
    pub fn set(&self, name: &str, value: &Tensor) -> std::result::Result<(), ParamError> {
        let s = self.store.lock().expect("store lock poisoned");
        let expected = if let Some(v) = s.vars.get(name) {
            v.dims().to_vec()
        } else if let Some(t) = s.frozen.get(name) {
            t.dims().to_vec()
        } else {
            return Err(ParamError::Unknown { name: name.to_string() });
        };
        if value.dims() != expected.as_slice() {
            return Err(ParamError::Shape { name: name.to_string(), expected, got: value.dims().to_vec() });
        }
        let value = value.to_dtype(DType::F32)?.to_device(&self.device)?;
        if let Some(v) = s.vars.get(name) {
            v.set(&value)?;
        } else {
            // Frozen: write in place so modules holding the tensor see the change.
            let t = s.frozen.get(name).expect("checked above");
            overwrite_in_place(t, &value)?;
        }
        Ok(())
    }

    /// Move every trainable parameter whose name satisfies `pick` to the frozen
    /// set (same storage, so modules holding it see the same values); the
    /// optimizer no longer updates it. Modules built earlier still hold the
    /// tracked tensor, so autograd computes a gradient nobody applies.
    /// Returns how many parameters were frozen.
    pub fn freeze(&self, pick: impl Fn(&str) -> bool) -> usize {
        let mut s = self.store.lock().expect("store lock poisoned");
        let names: Vec<String> = s.vars.keys().filter(|n| pick(n)).cloned().collect();
        for n in &names {
            let v = s.vars.remove(n).expect("listed above");
            s.frozen.insert(n.clone(), v.as_tensor().detach());
        }
        names.len()
    }

    /// Store `value` (f32, contiguous) as parameter `name`, trainable or frozen;
    /// an existing parameter of that name is replaced (pretrained weights).
    pub fn insert(&self, name: &str, value: Tensor, frozen: bool) -> Result<Tensor> {
        let value = value.to_dtype(DType::F32)?.to_device(&self.device)?.contiguous()?;
        let mut s = self.store.lock().expect("store lock poisoned");
        s.vars.remove(name);
        s.frozen.remove(name);
        if frozen {
            s.frozen.insert(name.to_string(), value.clone());
            Ok(value)
        } else {
            let v = Var::from_tensor(&value)?;
            let out = v.as_tensor().clone();
            s.vars.insert(name.to_string(), v);
            Ok(out)
        }
    }

    /// Load every parameter from a safetensors file: names and shapes must
    /// match exactly (extra or missing tensors are errors).
    pub fn load_safetensors(&self, path: &Path) -> std::result::Result<(), ParamError> {
        let loaded = candle_core::safetensors::load(path, &self.device).map_err(|e| ParamError::File {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let ours = self.all_tensors();
        for name in ours.keys() {
            if !loaded.contains_key(name) {
                return Err(ParamError::Missing { path: path.display().to_string(), name: name.clone() });
            }
        }
        for (name, t) in &loaded {
            if !ours.contains_key(name) {
                return Err(ParamError::Unexpected { path: path.display().to_string(), name: name.clone() });
            }
            self.set(name, t).map_err(|e| match e {
                ParamError::Shape { name, expected, got } => ParamError::FileShape {
                    path: path.display().to_string(),
                    name,
                    expected,
                    got,
                },
                other => other,
            })?;
        }
        Ok(())
    }
}

/// Overwrite a tensor's storage with `value` (same shape, f32, CPU or not).
pub(crate) fn overwrite_in_place(t: &Tensor, value: &Tensor) -> Result<()> {
    // The flattened view shares storage with `t` (it is contiguous).
    let flat = t.flatten_all()?;
    flat.slice_set(&value.flatten_all()?.contiguous()?, 0, 0)
}

/// Errors on named parameters.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameter `{name}`")]
    Unknown { name: String },
    #[error("parameter `{name}` has shape {expected:?}, got {got:?}")]
    Shape { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{path}: tensor `{name}` is missing")]
    Missing { path: String, name: String },
    #[error("{path}: unexpected tensor `{name}` (this model has no such parameter)")]
    Unexpected { path: String, name: String },
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    FileShape { path: String, name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Creates parameters under a dotted prefix (`pp` = "cd into").
#[derive(Clone)]
pub struct ParamBuilder {
    params: Params,
    prefix: String,
}

impl ParamBuilder {
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix =
            if self.prefix.is_empty() { name.to_string() } else { format!("{}.{}", self.prefix, name) };
        Self { params: self.params.clone(), prefix }
    }

    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{}", self.prefix, name) }
    }

    pub fn device(&self) -> &Device {
        &self.params.device
    }

    /// A trainable parameter (or frozen when `frozen`), created on first use.
    pub fn get(&self, shape: impl Into<Shape>, name: &str, init: Init, frozen: bool) -> Result<Tensor> {
        let shape = shape.into();
        let path = self.path(name);
        let mut s = self.params.store.lock().expect("store lock poisoned");
        if let Some(v) = s.vars.get(&path) {
            return Ok(v.as_tensor().clone());
        }
        if let Some(t) = s.frozen.get(&path) {
            return Ok(t.clone());
        }
        drop(s);
        let t = self.params.init_tensor(&shape, init)?;
        s = self.params.store.lock().expect("store lock poisoned");
        if frozen {
            s.frozen.insert(path, t.clone());
            Ok(t)
        } else {
            let v = Var::from_tensor(&t)?;
            let out = v.as_tensor().clone();
            s.vars.insert(path, v);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_init_and_frozen_is_not_trainable() -> Result<()> {
        let make = || -> Result<Params> {
            let p = Params::new(7, &Device::Cpu);
            let r = p.root();
            r.pp("a").get((3, 4), "weight", Init::Normal { std: 1.0 }, false)?;
            r.pp("b").get(5, "weight", Init::Uniform { bound: 0.1 }, true)?;
            Ok(p)
        };
        let (p1, p2) = (make()?, make()?);
        let t1 = p1.get("a.weight").unwrap().to_vec2::<f32>()?;
        assert_eq!(t1, p2.get("a.weight").unwrap().to_vec2::<f32>()?);
        assert_eq!(p1.trainable().len(), 1);
        assert!(!p1.is_trainable("b.weight"));
        assert_eq!(p1.n_trainable(), 12);
        Ok(())
    }

    #[test]
    fn set_checks_shape_and_updates_frozen_in_place() -> Result<()> {
        let p = Params::new(0, &Device::Cpu);
        let frozen = p.root().get(3, "f", Init::Zeros, true)?;
        p.set("f", &Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?).unwrap();
        assert_eq!(frozen.to_vec1::<f32>()?, vec![1., 2., 3.]);
        let e = p.set("f", &Tensor::new(&[1f32], &Device::Cpu)?).unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");
        assert!(p.set("nope", &frozen).is_err());
        Ok(())
    }
}
