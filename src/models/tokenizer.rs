//! The `tokenizer.json` of a Hugging Face folder (the `tokenizers` crate): text
//! to token ids and back. May import `nn` only.

use std::path::Path;

use super::hf::HfError;

/// A loaded tokenizer.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
}

impl HfTokenizer {
    /// Reads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self, HfError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(HfError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer.json (needed for text prompts)"),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| HfError::Tokenizer { path: path.display().to_string(), msg: e.to_string() })?;
        Ok(Self { inner })
    }

    /// Token ids of `text` (with the tokenizer's special tokens, if it adds any).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, HfError> {
        let enc = self.inner.encode(text, true).map_err(|e| HfError::Tokenizer { path: "tokenizer".into(), msg: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` without special tokens (for answers and continuations).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, HfError> {
        let enc = self.inner.encode(text, false).map_err(|e| HfError::Tokenizer { path: "tokenizer".into(), msg: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String, HfError> {
        self.inner.decode(ids, true).map_err(|e| HfError::Tokenizer { path: "tokenizer".into(), msg: e.to_string() })
    }
}
