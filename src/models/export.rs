//! Logits (and activations at named hook points) of one prompt as named tensors, saved
//! as a `.safetensors` file that any other tool can read: `input_ids` (1, pos) u32,
//! `logits` (1, pos, vocab) f32, and one tensor per hook under its TransformerLens name.
//! May import `nn` and `interp::hooks`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Result, Tensor};

use super::LanguageModel;
use crate::interp::hooks::{HookPoint, Hooks};

/// `input_ids`, `logits` and each requested hook activation of `ids` (one sequence).
pub fn logits_and_hooks(model: &dyn LanguageModel, ids: &[u32], hooks: &[HookPoint]) -> Result<BTreeMap<String, Tensor>> {
    if ids.is_empty() {
        candle_core::bail!("the prompt is empty (give at least one token id)");
    }
    let input = Tensor::from_slice(ids, (1, ids.len()), model.params().device())?;
    let mut h = Hooks::capture(hooks.iter().cloned());
    let logits = model.forward(&input, &mut h)?;
    let mut out = BTreeMap::new();
    out.insert("input_ids".to_string(), input);
    out.insert("logits".to_string(), logits);
    for (point, t) in h.cache {
        out.insert(point.to_string(), t.contiguous()?);
    }
    Ok(out)
}

/// Writes `tensors` to `path` atomically (temp file in the same folder, then rename).
pub fn save_atomic(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let map: std::collections::HashMap<&str, Tensor> = tensors.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    candle_core::safetensors::save(&map, &tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
