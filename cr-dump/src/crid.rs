//! Checkpoint ids: a node-wide 64-bit counter in a state file, bumped under `flock` for every
//! checkpoint attempt, so concurrent checkpoints (threads or processes) never share a CRID.
//!
//! Location, first that works:
//! 1. `$CR_CRID_FILE`, if set (used as given; its directory must exist);
//! 2. `/var/lib/cr/crid` (the directory is created, mode 0700; used only if it is owned by
//!    the user and writable by no one else: root's file);
//! 3. `$XDG_RUNTIME_DIR/cr-crid` (the same check of the directory);
//! 4. `/tmp/cr-$EUID/crid`: a private directory (created mode 0700; refused unless it is a
//!    directory, not a symlink, owned by the user, mode 0700), never a file directly in the
//!    shared `/tmp`.
//!
//! The file holds the last CRID issued, as decimal text; it is created with mode 0600. It must
//! be a regular file owned by the user: a symlink is not followed, a FIFO not waited on, and
//! a file of another user is refused (it would hand that user the CRIDs, or let it hang us on
//! its lock). The lock is waited for at most [`LOCK_TIMEOUT`]. Only CRIDs from the same file
//! are unique with respect to each other.

use crate::error::{Error, Result};
use crate::sys;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that overrides the state file's location.
pub const ENV_VAR: &str = "CR_CRID_FILE";
/// The default state file.
pub const DEFAULT_PATH: &str = "/var/lib/cr/crid";
/// How long [`next`] waits for the state file's lock before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens (creating) the state file: a regular file owned by us, mode 0600.
fn open(path: &Path) -> io::Result<File> {
    let f = sys::open_regular(path, sys::Access::Create)?;
    let md = f.metadata()?;
    let me = sys::geteuid();
    if md.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "owned by uid {}, not by uid {me}: refused (remove it, or set ${ENV_VAR})",
                md.uid()
            ),
        ));
    }
    // Whatever the umask or an earlier creator did: never group- or world-readable. Through
    // the descriptor (fchmod), never through the path.
    if md.mode() & 0o777 != 0o600 {
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// A candidate location: the file, and whether its directory must be private (`/tmp`).
struct Candidate {
    file: PathBuf,
    private_dir: bool,
}

/// Whether `dir` may hold our state file; `Err` says why not.
fn dir_ok(dir: &Path, private: bool) -> io::Result<()> {
    sys::open_owned_dir(dir, private).map(drop)
}

fn io_error(p: &Path, what: &str, e: io::Error) -> Error {
    Error::io(format!("CRID file {}{what}", p.display()), e)
}

/// Errors that mean "not usable here, try the next place": a missing or forbidden directory.
fn try_next(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::EPERM)
    )
}

/// The state file in use and an open handle to it.
fn state_file() -> Result<(PathBuf, File)> {
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return open(&p)
            .map(|f| (p.clone(), f))
            .map_err(|e| io_error(&p, &format!(" (${ENV_VAR})"), e));
    }
    let mut candidates = vec![Candidate {
        file: PathBuf::from(DEFAULT_PATH),
        private_dir: false,
    }];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        candidates.push(Candidate {
            file: PathBuf::from(x).join("cr-crid"),
            private_dir: false,
        });
    }
    let tmp = PathBuf::from(format!("/tmp/cr-{}", sys::geteuid()));
    candidates.push(Candidate {
        file: tmp.join("crid"),
        private_dir: true,
    });
    let mut skipped = Vec::new();
    for c in candidates {
        let dir = c.file.parent().unwrap_or(Path::new("/"));
        if c.file == Path::new(DEFAULT_PATH) || c.private_dir {
            // Fails harmlessly if it exists or cannot be made; checked just below.
            let _ = fs::DirBuilder::new().mode(0o700).create(dir);
        }
        if let Err(e) = dir_ok(dir, c.private_dir) {
            if c.private_dir {
                // The last place, in a directory anyone can write: refuse, never fall back
                // to the shared directory itself.
                return Err(Error::io(
                    format!(
                        "CRID directory {} (set ${ENV_VAR} or XDG_RUNTIME_DIR to use another)",
                        dir.display()
                    ),
                    e,
                ));
            }
            skipped.push(format!("{}: {e}", dir.display()));
            continue;
        }
        match open(&c.file) {
            Ok(f) => return Ok((c.file, f)),
            Err(e) if try_next(&e) => skipped.push(format!("{}: {e}", c.file.display())),
            // The file is there but is not ours, not regular, or a symlink: an attack or a
            // mistake to report, not a reason to count from another file.
            Err(e) => return Err(io_error(&c.file, "", e)),
        }
    }
    Err(Error::Other(format!(
        "no usable CRID file ({}); set ${ENV_VAR}",
        skipped.join("; ")
    )))
}

/// Where CRIDs come from now (the file [`next`] would use).
pub fn location() -> Result<PathBuf> {
    state_file().map(|(p, _)| p)
}

/// Issues the next CRID (≥ 1).
pub fn next() -> Result<u64> {
    let (path, mut f) = state_file()?;
    let ctx = |what: &str| format!("{what} CRID file {}", path.display());
    sys::flock_exclusive_timeout(&f, LOCK_TIMEOUT).map_err(|e| Error::io(ctx("locking"), e))?;
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
