//! Edits on a live model: apply an `EditSet` to a `Params` store for the
//! duration of a closure, then restore the original weights exactly.

use std::collections::HashMap;

use candle_core::Tensor;

use super::apply::apply;
use super::edit::EditSet;
use super::error::{Result, SurgeryError};
use super::svd::SvdCache;
use super::weights::{MatrixMap, ModelWeights};
use crate::nn::Params;

/// A shallow view of every parameter (tensors share storage with the model).
pub fn weights_of(params: &Params) -> ModelWeights {
    ModelWeights::from_map(params.all_tensors().into_iter().collect())
}

fn set_all(params: &Params, tensors: &HashMap<String, Tensor>) -> Result<()> {
    for (name, t) in tensors {
        params.set(name, t).map_err(|e| SurgeryError::Load { msg: e.to_string() })?;
    }
    Ok(())
}

/// Run `f` with `edits` applied to `params`; the weights are restored after
/// (bit-identical), also when `f` fails.
pub fn with_edits<R>(
    params: &Params,
    edits: &EditSet,
    cache: &mut SvdCache,
    map: &dyn MatrixMap,
    f: impl FnOnce() -> R,
) -> Result<R> {
    if edits.is_empty() {
        return Ok(f());
    }
    let original = weights_of(params);
    let edited = apply(edits, &original, cache, map)?;
    let mut changed = HashMap::new();
    let mut saved = HashMap::new();
    for (name, t) in edited.tensors() {
        let orig = original.get(name).expect("apply keeps every name");
        if t.id() != orig.id() {
            // Params::set writes in place, so keep a deep copy of the original.
            saved.insert(name.clone(), orig.copy()?);
            changed.insert(name.clone(), t.clone());
        }
    }
    set_all(params, &changed)?;
    let out = f();
    set_all(params, &saved)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Gpt, GptConfig};
    use crate::surgery::TemplateMap;
    use candle_core::Device;

    #[test]
    fn edits_apply_inside_and_restore_after() -> candle_core::Result<()> {
        let model = Gpt::new(&GptConfig::truncation(16, 8, 11), 0, &Device::Cpu)?;
        let params = crate::models::LanguageModel::params(&model);
        let before = params.get("blocks.1.mlp.fc_in.weight").unwrap().flatten_all()?.to_vec1::<f32>()?;
        let edits: EditSet = "1:fc_in:0".parse().unwrap();
        let inside = with_edits(params, &edits, &mut SvdCache::new(), &TemplateMap::laser(), || {
            params.get("blocks.1.mlp.fc_in.weight").unwrap().abs()?.sum_all()?.to_scalar::<f32>()
        })
        .unwrap()?;
        assert_eq!(inside, 0.0);
        let after = params.get("blocks.1.mlp.fc_in.weight").unwrap().flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(before, after);
        Ok(())
    }
}
