//! The published `cr-format` crate runs its tests from the copy of the spec it ships
//! (`cr-format/tests/data`): this checks that the copy equals `spec/` (the files those tests
//! read, no more, no fewer). `.ci/sync-format-data` (this test with `CR_FORMAT_DATA_SYNC=1`)
//! makes the copy again after the spec or its vectors change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `cr-format`'s tests read `rel` (a path under `spec/`): the format's text, the C
/// header and its C walker, the vectors with their expected decodings and errors. Not what only
/// cr-dump's tests read (`*.show.txt`, `*.verify.txt`, `*.json`), nor generators.
fn shipped(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let (stem, ext) = name.split_once('.').unwrap_or((name, ""));
    match rel.split('/').next() {
        Some("vectors") => matches!(ext, "bin" | "err" | "txt") && !stem.is_empty(),
        Some("c") => ext == "c" || ext == "h",
        _ => rel == "FORMAT.md" || rel == "cr_image.h",
    }
}

/// Every file under `dir`, by its path relative to `dir`, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn cr_format_ships_the_spec_its_tests_read() {
    let spec: BTreeMap<_, _> = files(&root().join("spec"))
        .into_iter()
        .filter(|(rel, _)| shipped(rel))
        .collect();
    assert!(
        spec.contains_key("vectors/valid/full.bin"),
        "no spec/vectors"
    );
    let data = root().join("cr-format/tests/data");
    if std::env::var_os("CR_FORMAT_DATA_SYNC").is_some() {
        let _ = std::fs::remove_dir_all(&data);
        for (rel, bytes) in &spec {
            let p = data.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let copy = files(&data);
    let missing: Vec<_> = spec.keys().filter(|k| !copy.contains_key(*k)).collect();
    let extra: Vec<_> = copy.keys().filter(|k| !spec.contains_key(*k)).collect();
    let differ: Vec<_> = spec
        .iter()
        .filter(|(k, v)| copy.get(*k).is_some_and(|c| c != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "cr-format/tests/data is not spec/ (run .ci/sync-format-data): missing {missing:?}, \
         extra {extra:?}, different {differ:?}"
    );
}
