//! Word-level vocabulary of one rule family (spec §4): `[PAD]`=0, `[BOS]`=1,
//! `[EOS]`=2, `[SEP]`=3, `[UNK]`=4, one `[R:<rule>]` token per rule, then the
//! family tokens in their fixed order. Saved and loaded as JSON.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::DataError;
use super::rules::Family;

pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
pub const SEP: u32 = 3;
pub const UNK: u32 = 4;

/// Tokens by id, with the reverse index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleVocab {
    pub family: Family,
    pub tokens: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl RuleVocab {
    pub fn new(family: Family) -> Self {
        let mut tokens: Vec<String> = ["[PAD]", "[BOS]", "[EOS]", "[SEP]", "[UNK]"].map(String::from).to_vec();
        tokens.extend(family.rules().iter().map(|r| format!("[R:{r}]")));
        tokens.extend(family.tokens());
        Self::from_tokens(family, tokens)
    }

    fn from_tokens(family: Family, tokens: Vec<String>) -> Self {
        let index = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        Self { family, tokens, index }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Id of the rule token of label `r`.
    pub fn rule_token(&self, r: usize) -> u32 {
        5 + r as u32
    }

    /// Ids of the whitespace-separated words of `text` (unknown → `[UNK]`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.split_whitespace().map(|w| self.index.get(w).copied().unwrap_or(UNK)).collect()
    }

    /// Words of `ids`, space-separated.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.tokens.get(i as usize).map_or("[?]", String::as_str)).collect::<Vec<_>>().join(" ")
    }

    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let text = serde_json::to_string_pretty(self).expect("vocab serialises");
        std::fs::write(path, text).map_err(|source| DataError::Io { path: path.to_path_buf(), source })
    }

    pub fn load(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        let v: RuleVocab =
            serde_json::from_str(&text).map_err(|e| DataError::Json { path: path.to_path_buf(), line: e.line(), message: e.to_string() })?;
        Ok(Self::from_tokens(v.family, v.tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_round_trip() {
        let v = RuleVocab::new(Family::Syllogism);
        assert_eq!(v.tokens[v.rule_token(0) as usize], "[R:MP]");
        let ids = v.encode("rex is dax . zzz");
        assert_eq!(*ids.last().unwrap(), UNK);
        assert_eq!(v.decode(&ids[..4]), "rex is dax .");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.json");
        v.save(&p).unwrap();
        assert_eq!(RuleVocab::load(&p).unwrap().encode("all dax are wug"), v.encode("all dax are wug"));
    }
}
