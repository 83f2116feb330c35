//! TOML configs with `--set a.b=value` overrides.
//!
//! Defaults come from the config type's `Default`; a file and then the
//! overrides are merged over them, and the result is deserialised with
//! `deny_unknown_fields`, so an unknown key or a wrong type is an error that
//! names the dotted key. `Validate` checks ranges, again naming the key.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A config that could not be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {msg}")]
    Read { path: String, msg: String },
    #[error("{path}: malformed TOML: {msg}")]
    Parse { path: String, msg: String },
    #[error("--set {spec}: expected `dotted.key=value`")]
    Override { spec: String },
    #[error("{origin}: key `{key}`: {msg}")]
    Key { origin: String, key: String, msg: String },
    #[error("config key `{key}`: {msg}")]
    Invalid { key: String, msg: String },
}

/// Range checks after deserialisation.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// `Err(Invalid)` naming `key` unless `ok`.
pub fn check(ok: bool, key: &str, msg: impl Into<String>) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::Invalid { key: key.to_string(), msg: msg.into() }) }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    // Tagged enums (tables with `kind`) are replaced whole when the kind changes.
                    Some(slot @ toml::Value::Table(_)) if v.is_table() && !kind_changes(slot, &v) => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn kind_changes(base: &toml::Value, over: &toml::Value) -> bool {
    match (base.get("kind"), over.get("kind")) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// Parse the value of a `--set` as TOML, or else as a bare string.
fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("just parsed"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(root: &mut toml::Value, key: &str, value: toml::Value) {
    let mut cur = root;
    let parts: Vec<&str> = key.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let table = cur.as_table_mut().expect("config root and sections are tables");
        cur = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        if !cur.is_table() {
            *cur = toml::Value::Table(Default::default());
        }
    }
    cur.as_table_mut().expect("section is a table").insert(parts[parts.len() - 1].to_string(), value);
}

/// Resolve a config: defaults, then `file` (if any), then each `key=value`.
pub fn load<T>(file: Option<&Path>, sets: &[String]) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    load_over(T::default(), file, sets)
}

/// Like `load`, starting from `base` instead of `T::default()`.
pub fn load_over<T>(base: T, file: Option<&Path>, sets: &[String]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Validate,
{
    let mut value = toml::Value::try_from(base).expect("config serialises");
    let mut origin = "defaults".to_string();
    if let Some(path) = file {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: p.clone(), msg: e.to_string() })?;
        let parsed: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: p.clone(),
            msg: e.message().to_string() + &line_of(&text, e.span()),
        })?;
        merge(&mut value, toml::Value::Table(parsed));
        origin = p;
    }
    for spec in sets {
        let (key, raw) = spec.split_once('=').ok_or_else(|| ConfigError::Override { spec: spec.clone() })?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(ConfigError::Override { spec: spec.clone() });
        }
        let v = parse_value(raw.trim());
        let mut over = toml::Value::Table(Default::default());
        set_path(&mut over, key, v);
        merge(&mut value, over);
        origin = if file.is_some() { format!("{origin} + --set") } else { "--set".to_string() };
    }
    let cfg: T = serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Key {
        origin: origin.clone(),
        key: e.path().to_string(),
        // The message alone: the error's Display appends "in `key`" on further lines.
        msg: e.inner().message().trim().to_string(),
    })?;
    cfg.validate()?;
    Ok(cfg)
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => format!(" (line {})", text[..r.start.min(text.len())].matches('\n').count() + 1),
        None => String::new(),
    }
}

/// The resolved config as TOML text (saved with every run).
pub fn to_toml<T: Serialize>(cfg: &T) -> String {
    toml::to_string_pretty(cfg).expect("config serialises to TOML")
}

/// The dotted keys whose values differ between two configs of one type (arrays compare
/// whole), in key order.
pub fn changed_keys<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    fn walk(prefix: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, x.get(k), y.get(k), out);
                }
            }
            (x, y) if x != y => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let (a, b) = (toml::Value::try_from(a).expect("config serialises"), toml::Value::try_from(b).expect("config serialises"));
    let mut out = Vec::new();
    walk("", Some(&a), Some(&b), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        lr: f64,
        steps: u64,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        name: String,
        train: Inner,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Self { name: "x".into(), train: Inner { lr: 0.1, steps: 10 } }
        }
    }
    impl Validate for Cfg {
        fn validate(&self) -> Result<(), ConfigError> {
            check(self.train.lr > 0.0, "train.lr", "must be > 0")
        }
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn changed_keys_name_every_differing_leaf() {
        let a = Cfg::default();
        assert!(changed_keys(&a, &a).is_empty());
        let b = Cfg { name: "y".into(), train: Inner { lr: 0.2, steps: 10 } };
        assert_eq!(changed_keys(&a, &b), vec!["name".to_string(), "train.lr".to_string()]);
    }

    #[test]
    fn file_then_overrides() {
        let f = write("[train]\nsteps = 20\n");
        let c: Cfg = load(Some(f.path()), &["train.lr=0.5".into(), "name=run1".into()]).unwrap();
        assert_eq!(c, Cfg { name: "run1".into(), train: Inner { lr: 0.5, steps: 20 } });
    }

    #[test]
    fn errors_name_the_key() {
        let e = load::<Cfg>(None, &["train.lrr=1".into()]).unwrap_err().to_string();
        assert!(e.contains("lrr"), "{e}");
        let e = load::<Cfg>(None, &["train.steps=\"many\"".into()]).unwrap_err().to_string();
        assert!(e.contains("train.steps") && e.contains("invalid type") && !e.contains('\n'), "one line: {e}");
        let e = load::<Cfg>(None, &["train.steps=-3".into()]).unwrap_err().to_string();
        assert!(e.contains("train.steps") && !e.contains('\n'), "one line: {e}");
        let e = load::<Cfg>(None, &["train.lr=-1".into()]).unwrap_err().to_string();
        assert!(e.contains("train.lr") && e.contains("> 0"), "{e}");
        let f = write("[train\nlr = 1");
        let e = load::<Cfg>(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("malformed TOML"), "{e}");
        let e = load::<Cfg>(None, &["nonsense".into()]).unwrap_err().to_string();
        assert!(e.contains("dotted.key=value"), "{e}");
        let e = load::<Cfg>(Some(Path::new("/no/such/file.toml")), &[]).unwrap_err().to_string();
        assert!(e.contains("/no/such/file.toml"), "{e}");
    }
}
