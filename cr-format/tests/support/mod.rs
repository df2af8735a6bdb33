//! Where the tests find the spec: the workspace's `spec/` (FORMAT.md, the C header, the
//! vectors), or, in the packaged crate, the copy of what the tests read shipped in `tests/data`
//! (made by `.ci/sync-format-data`, checked equal to `spec/` by the workspace test
//! `tests/tests/format_data.rs`).

use std::path::{Path, PathBuf};

/// The spec directory the tests read.
pub fn spec_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = here.join("../spec");
    if workspace.join("FORMAT.md").is_file() {
        workspace
    } else {
        here.join("tests/data")
    }
}
