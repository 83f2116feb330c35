//! File-level helpers of the HTML report: caption slugs (figure file names
//! and anchors) and atomic writes (temp file in the same directory, then
//! rename). May import nothing from the rest of the crate.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::ReportError;

/// `"Loss vs step (d=64)"` → `"loss-vs-step-d-64"`; empty → `"figure"`.
pub fn slug(caption: &str) -> String {
    let mut out = String::new();
    for c in caption.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_end_matches('-').chars().take(60).collect();
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "figure".into()
    } else {
        out.into()
    }
}

/// Slugs of `captions` in order, made unique: repeats get `-2`, `-3`, ...
pub(crate) fn unique_slugs<'a>(captions: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for caption in captions {
        let base = slug(caption);
        let mut candidate = base.clone();
        let mut k = 2;
        while seen.contains(&candidate) {
            candidate = format!("{base}-{k}");
            k += 1;
        }
        seen.push(candidate);
    }
    seen
}

/// Writes `bytes` to a temp file next to `path`, syncs it and renames it
/// over `path`, so readers see the old file or the new one, never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let io_err = |p: &Path, source| ReportError::Io {
        path: p.to_path_buf(),
        source,
    };
    let result = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| io_err(&tmp, e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err(path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_clean_and_unique() {
        assert_eq!(slug("Loss vs step (d=64)"), "loss-vs-step-d-64");
        assert_eq!(slug("  ---  "), "figure");
        assert_eq!(slug(&"x".repeat(100)).len(), 60);
        assert_eq!(
            unique_slugs(["A b", "a-b", "a b"]),
            ["a-b", "a-b-2", "a-b-3"]
        );
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.svg");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/dir/f.svg");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }
}
