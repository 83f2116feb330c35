//! Host types of weight surgery: matrix names τ, the τ → key `MatrixMap`, and `ModelWeights`.
//!
//! `Matrix` is one LASER matrix type (arXiv 2312.13558); a `MatrixMap` turns (layer, τ) into a
//! checkpoint key, so our own models (`TemplateMap::laser()`) and pretrained ones (their own key
//! table) share the edit code. `ModelWeights` is an immutable name → tensor map: a deep-copied
//! snapshot of a `VarMap`, edited copies of it, and loading back with `Var::set`.
//! Imports only candle and std (plus this module's error type).

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::VarMap;

use super::error::{Result, SurgeryError};

/// One weight matrix type τ of a layer (LASER names). Shapes are (out, in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Matrix {
    FcIn,
    /// LASER's `fc_up` (a pretrained gated MLP's up projection); our own models have none.
    FcUp,
    /// Gate of our SwiGLU MLP: `fc_out(silu(gate_proj x) ⊙ fc_in x)`.
    GateProj,
    FcOut,
    QProj,
    KProj,
    VProj,
    OutProj,
}

impl Matrix {
    pub const ALL: [Matrix; 8] = [
        Matrix::FcIn,
        Matrix::FcUp,
        Matrix::GateProj,
        Matrix::FcOut,
        Matrix::QProj,
        Matrix::KProj,
        Matrix::VProj,
        Matrix::OutProj,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Matrix::FcIn => "fc_in",
            Matrix::FcUp => "fc_up",
            Matrix::GateProj => "gate_proj",
            Matrix::FcOut => "fc_out",
            Matrix::QProj => "q_proj",
            Matrix::KProj => "k_proj",
            Matrix::VProj => "v_proj",
            Matrix::OutProj => "out_proj",
        }
    }

    pub fn from_name(s: &str) -> Option<Matrix> {
        Matrix::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// Resolves (layer, τ) to a weight name. `None` = this model has no such matrix.
pub trait MatrixMap {
    fn key(&self, layer: usize, matrix: Matrix) -> Option<String>;

    /// The matching bias (zeroed by `drop` together with the output matrix). Default: the weight
    /// key with `.weight` replaced by `.bias`; it is only touched if present in the weights.
    fn bias_key(&self, layer: usize, matrix: Matrix) -> Option<String> {
        self.key(layer, matrix)?
            .strip_suffix(".weight")
            .map(|p| format!("{p}.bias"))
    }
}

/// A `MatrixMap` from name templates in which `{l}` stands for the layer index.
#[derive(Clone, Debug)]
pub struct TemplateMap {
    templates: Vec<(Matrix, String)>,
}

impl TemplateMap {
    /// Our own models: `blocks.{l}.attn.{q,k,v,out}_proj.weight`,
    /// `blocks.{l}.mlp.{fc_in,gate_proj,fc_out}.weight`.
    pub fn laser() -> Self {
        Self::new([
            (Matrix::FcIn, "blocks.{l}.mlp.fc_in.weight"),
            (Matrix::GateProj, "blocks.{l}.mlp.gate_proj.weight"),
            (Matrix::FcOut, "blocks.{l}.mlp.fc_out.weight"),
            (Matrix::QProj, "blocks.{l}.attn.q_proj.weight"),
            (Matrix::KProj, "blocks.{l}.attn.k_proj.weight"),
            (Matrix::VProj, "blocks.{l}.attn.v_proj.weight"),
            (Matrix::OutProj, "blocks.{l}.attn.out_proj.weight"),
        ])
    }

    pub fn new<S: Into<String>>(templates: impl IntoIterator<Item = (Matrix, S)>) -> Self {
        TemplateMap {
            templates: templates.into_iter().map(|(m, t)| (m, t.into())).collect(),
        }
    }

    /// Add or replace the template of one matrix.
    pub fn with(mut self, matrix: Matrix, template: impl Into<String>) -> Self {
        self.templates.retain(|(m, _)| *m != matrix);
        self.templates.push((matrix, template.into()));
        self
    }
}

impl Default for TemplateMap {
    fn default() -> Self {
        Self::laser()
    }
}

impl MatrixMap for TemplateMap {
    fn key(&self, layer: usize, matrix: Matrix) -> Option<String> {
        let (_, t) = self.templates.iter().find(|(m, _)| *m == matrix)?;
        Some(t.replace("{l}", &layer.to_string()))
    }
}

/// A model's weights as an immutable name → tensor map. Edits return new maps whose untouched
/// entries share storage with the input (tensors are immutable, so sharing is safe).
#[derive(Clone, Debug, Default)]
pub struct ModelWeights {
    tensors: HashMap<String, Tensor>,
}

impl ModelWeights {
    pub fn from_map(tensors: HashMap<String, Tensor>) -> Self {
        ModelWeights { tensors }
    }

    /// Deep copy of every variable, detached: later `Var::set` on the VarMap cannot alter it.
    pub fn from_varmap(varmap: &VarMap) -> Result<Self> {
        let data = varmap.data().lock().expect("VarMap mutex poisoned");
        let mut tensors = HashMap::with_capacity(data.len());
        for (name, var) in data.iter() {
            tensors.insert(name.clone(), var.as_tensor().detach().copy()?);
        }
        Ok(ModelWeights { tensors })
    }

    /// Overwrite every variable of `varmap` with the tensor of the same name (converted to the
    /// variable's dtype/device). Names must match exactly both ways; nothing is written on error.
    pub fn load_into(&self, varmap: &VarMap) -> Result<()> {
        let data = varmap.data().lock().expect("VarMap mutex poisoned");
        let mut missing: Vec<&str> = data
            .keys()
            .filter(|k| !self.tensors.contains_key(*k))
            .map(|k| k.as_str())
            .collect();
        let mut extra: Vec<&str> = self
            .tensors
            .keys()
            .filter(|k| !data.contains_key(*k))
            .map(|k| k.as_str())
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            missing.sort();
            extra.sort();
            let msg = format!(
                "variables without a tensor: {missing:?}; tensors without a variable: {extra:?}"
            );
            return Err(SurgeryError::Load { msg });
        }
        for (name, var) in data.iter() {
            let t = &self.tensors[name];
            if t.dims() != var.dims() {
                let msg = format!(
                    "`{name}`: variable shape {:?}, tensor shape {:?}",
                    var.dims(),
                    t.dims()
                );
                return Err(SurgeryError::Load { msg });
            }
        }
        for (name, var) in data.iter() {
            var.set(
                &self.tensors[name]
                    .to_dtype(var.dtype())?
                    .to_device(var.device())?,
            )?;
        }
        Ok(())
    }

    /// A fresh VarMap holding copies of these tensors (e.g. to build an edited model beside the original).
    pub fn to_varmap(&self) -> Result<VarMap> {
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().expect("VarMap mutex poisoned");
            for (name, t) in &self.tensors {
                data.insert(
                    name.clone(),
                    candle_core::Var::from_tensor(&t.detach().copy()?)?,
                );
            }
        }
        Ok(varmap)
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) -> Option<Tensor> {
        self.tensors.insert(name.into(), t)
    }

    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names in sorted order.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.tensors.keys().map(|k| k.as_str()).collect();
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    pub fn into_map(self) -> HashMap<String, Tensor> {
        self.tensors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn laser_map_names_and_bias() {
        let map = TemplateMap::laser();
        assert_eq!(
            map.key(1, Matrix::FcIn).as_deref(),
            Some("blocks.1.mlp.fc_in.weight")
        );
        assert_eq!(
            map.bias_key(0, Matrix::OutProj).as_deref(),
            Some("blocks.0.attn.out_proj.bias")
        );
        assert_eq!(map.key(0, Matrix::FcUp), None);
        let neox =
            TemplateMap::laser().with(Matrix::FcIn, "gpt_neox.layers.{l}.mlp.dense_h_to_4h.weight");
        assert_eq!(
            neox.key(3, Matrix::FcIn).as_deref(),
            Some("gpt_neox.layers.3.mlp.dense_h_to_4h.weight")
        );
        assert!(Matrix::ALL
            .iter()
            .all(|m| Matrix::from_name(m.name()) == Some(*m)));
    }

    #[test]
    fn varmap_snapshot_load_round_trip() {
        let vm = VarMap::new();
        let w = vm
            .get(
                (3, 2),
                "a.weight",
                candle_nn::Init::Const(1.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let snap = ModelWeights::from_varmap(&vm).unwrap();
        let mut edited = snap.clone();
        edited.insert(
            "a.weight",
            Tensor::full(5f32, (3, 2), &Device::Cpu).unwrap(),
        );
        edited.load_into(&vm).unwrap();
        assert_eq!(w.sum_all().unwrap().to_scalar::<f32>().unwrap(), 30.0);
        // The snapshot is a deep copy: loading into the VarMap did not change it.
        assert_eq!(
            snap.get("a.weight")
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            6.0
        );
        snap.load_into(&vm).unwrap();
        assert_eq!(w.sum_all().unwrap().to_scalar::<f32>().unwrap(), 6.0);
        let fresh = edited.to_varmap().unwrap();
        assert_eq!(fresh.all_vars().len(), 1);
        edited.insert(
            "b.weight",
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = edited.load_into(&vm).unwrap_err().to_string();
        assert!(e.contains("b.weight"), "{e}");
    }
}
