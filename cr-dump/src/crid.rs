//! Checkpoint ids: a node-wide 64-bit counter in a state file, bumped under `flock` for every
//! checkpoint attempt, so concurrent checkpoints (threads or processes) never share a CRID.
//!
//! Location, first that works:
//! 1. `$CR_CRID_FILE`, if set (used as given; its directory must exist);
//! 2. `/var/lib/cr/crid` (the directory is created, mode 0700);
//! 3. `$XDG_RUNTIME_DIR/cr-crid`;
//! 4. `/tmp/cr-crid-$EUID`.
//!
//! The file holds the last CRID issued, as decimal text; it is created with mode 0600. Only
//! CRIDs from the same file are unique with respect to each other.

use crate::error::{Error, Result};
use crate::sys;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The environment variable that overrides the state file's location.
pub const ENV_VAR: &str = "CR_CRID_FILE";
/// The default state file.
pub const DEFAULT_PATH: &str = "/var/lib/cr/crid";

fn open(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // Whatever the umask or an earlier creator did: never group- or world-readable.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// The state file in use and an open handle to it.
fn state_file() -> Result<(PathBuf, File)> {
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return open(&p)
            .map(|f| (p.clone(), f))
            .map_err(|e| Error::io(format!("opening CRID file {} (${ENV_VAR})", p.display()), e));
    }
    let mut candidates = vec![PathBuf::from(DEFAULT_PATH)];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(x).join("cr-crid"));
    }
    candidates.push(PathBuf::from(format!("/tmp/cr-crid-{}", sys::geteuid())));
    let mut last = None;
    for p in candidates {
        if let Some(dir) = p.parent() {
            if p == Path::new(DEFAULT_PATH) && !dir.exists() {
                let _ = fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir);
            }
        }
        match open(&p) {
            Ok(f) => return Ok((p, f)),
            Err(e) => last = Some((p, e)),
        }
    }
    let (p, e) = last.unwrap_or_else(|| {
        (
            PathBuf::from(DEFAULT_PATH),
            std::io::Error::other("no candidate"),
        )
    });
    Err(Error::io(format!("opening CRID file {}", p.display()), e))
}

/// Where CRIDs come from now (the file [`next`] would use).
pub fn location() -> Result<PathBuf> {
    state_file().map(|(p, _)| p)
}

/// Issues the next CRID (≥ 1).
pub fn next() -> Result<u64> {
    let (path, mut f) = state_file()?;
    let ctx = |what: &str| format!("{what} CRID file {}", path.display());
    sys::flock_exclusive(&f).map_err(|e| Error::io(ctx("locking"), e))?;
    let mut s = String::new();
    f.read_to_string(&mut s)
        .map_err(|e| Error::io(ctx("reading"), e))?;
    let t = s.trim();
    let last: u64 = if t.is_empty() {
        0
    } else {
        t.parse().map_err(|_| {
            Error::Other(format!(
                "CRID file {} is corrupt (holds {t:?}, expected a number)",
                path.display()
            ))
        })?
    };
    let crid = last
        .checked_add(1)
        .ok_or_else(|| Error::Other(format!("CRID file {} is exhausted", path.display())))?;
    // Fixed width, written in place: the file never passes through an empty state.
    let text = format!("{crid:020}\n");
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.write_all(text.as_bytes()))
        .and_then(|_| f.set_len(text.len() as u64))
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::io(ctx("writing"), e))?;
    // The lock goes with the file handle.
    Ok(crid)
}
