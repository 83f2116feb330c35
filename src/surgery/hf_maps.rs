//! LASER matrix names τ (arXiv 2312.13558) → Hugging Face keys of the pretrained
//! architectures, one table each. GPT-NeoX fuses W_Q, W_K and W_V into one
//! per-head interleaved `attention.query_key_value` matrix, which no single τ
//! names: `q_proj`/`k_proj`/`v_proj`/`ov` are errors there ("the matrix map has
//! no `q_proj`"), and the `attn` group edits `attention.dense` alone.
//! Qwen2's SwiGLU follows our own models: `fc_in` = `up_proj` (the multiplied
//! branch), `gate_proj` = `gate_proj`; LASER's `fc_up` is left unmapped.

use super::weights::{Matrix, TemplateMap};
use crate::models::HfArch;

impl TemplateMap {
    /// GPT-NeoX / Pythia: `gpt_neox.layers.{l}.mlp.dense_h_to_4h.weight`, ...
    pub fn gpt_neox() -> Self {
        Self::new([
            (Matrix::FcIn, "gpt_neox.layers.{l}.mlp.dense_h_to_4h.weight"),
            (Matrix::FcOut, "gpt_neox.layers.{l}.mlp.dense_4h_to_h.weight"),
            (Matrix::OutProj, "gpt_neox.layers.{l}.attention.dense.weight"),
        ])
    }

    /// Qwen2 / Qwen2.5: `model.layers.{l}.mlp.up_proj.weight`, ...
    pub fn qwen2() -> Self {
        Self::new([
            (Matrix::FcIn, "model.layers.{l}.mlp.up_proj.weight"),
            (Matrix::GateProj, "model.layers.{l}.mlp.gate_proj.weight"),
            (Matrix::FcOut, "model.layers.{l}.mlp.down_proj.weight"),
            (Matrix::QProj, "model.layers.{l}.self_attn.q_proj.weight"),
            (Matrix::KProj, "model.layers.{l}.self_attn.k_proj.weight"),
            (Matrix::VProj, "model.layers.{l}.self_attn.v_proj.weight"),
            (Matrix::OutProj, "model.layers.{l}.self_attn.o_proj.weight"),
        ])
    }

    /// The table of a pretrained architecture.
    pub fn for_arch(arch: HfArch) -> Self {
        match arch {
            HfArch::GptNeox => Self::gpt_neox(),
            HfArch::Qwen2 => Self::qwen2(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surgery::MatrixMap;

    #[test]
    fn tables_name_hf_keys() {
        let neox = TemplateMap::for_arch(HfArch::GptNeox);
        assert_eq!(neox.key(3, Matrix::FcIn).unwrap(), "gpt_neox.layers.3.mlp.dense_h_to_4h.weight");
        assert_eq!(neox.bias_key(0, Matrix::OutProj).unwrap(), "gpt_neox.layers.0.attention.dense.bias");
        assert!(neox.key(0, Matrix::QProj).is_none());
        let qwen = TemplateMap::for_arch(HfArch::Qwen2);
        assert_eq!(qwen.key(1, Matrix::FcOut).unwrap(), "model.layers.1.mlp.down_proj.weight");
        assert_eq!(qwen.key(0, Matrix::OutProj).unwrap(), "model.layers.0.self_attn.o_proj.weight");
        assert!(qwen.key(0, Matrix::FcUp).is_none());
    }
}
