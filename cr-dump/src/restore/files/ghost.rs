//! Files deleted while open: recreated as unlinked files (`O_TMPFILE`) with the contents the
//! image holds, in the file's own directory if it still exists, else the image's.

use super::regular::name;
use super::{Prep, Prepared};
use crate::error::{Error, Result};
use crate::sys::files as sf;
use cr_format::raw;
use cr_format::read::File;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Prepares a deleted file from its contents `data`.
pub(super) fn prepare(cx: &Prep<'_>, f: &File<'_>, data: &[u8]) -> Result<Prepared> {
    if f.raw.flags.get() & raw::FILE_HAS_DATA == 0 {
        return cx.outside(
            f,
            "it was deleted and the image does not hold its contents (over --ghost-limit at \
             the checkpoint)",
        );
    }
    let path = Path::new(OsStr::from_bytes(f.path));
    let dir = match path.parent() {
        Some(d) if d.is_dir() => d,
        _ => cx.image_dir.as_path(),
    };
    // Never set-user-id or set-group-id: the task gets a file to read and write, not a
    // program that runs as its owner.
    let mode = f.raw.mode.get() & 0o777;
    let tmp = sf::open_flags(dir, libc::O_TMPFILE | libc::O_RDWR, mode).map_err(|e| {
        Error::io(
            format!(
                "{}: creating an unlinked file (O_TMPFILE) in {}",
                name(f),
                dir.display()
            ),
            e,
        )
    })?;
    let mut w = std::fs::File::from(tmp);
    w.write_all(data)
        .map_err(|e| Error::io(format!("{}: writing its {} bytes", name(f), data.len()), e))?;
    let tmp = OwnedFd::from(w);
    let rec = f.raw.open_flags.get() as i32;
    let acc = rec & libc::O_ACCMODE;
    // The task's access mode: through the magic link, which reopens the unlinked inode.
    let fd = if acc == libc::O_RDWR {
        tmp
    } else {
        let magic = format!("/proc/self/fd/{}", tmp.as_raw_fd());
        sf::open_flags(Path::new(&magic), acc | (rec & libc::O_APPEND), 0)
            .map_err(|e| Error::io(format!("{}: reopening the unlinked file", name(f)), e))?
    };
    let rec_status = rec & (libc::O_APPEND | libc::O_NONBLOCK);
    sf::set_status_flags(fd.as_fd(), rec_status)
        .map_err(|e| Error::io(format!("F_SETFL on {}", name(f)), e))?;
    sf::seek_to(fd.as_fd(), f.raw.pos.get())
        .map_err(|e| Error::io(format!("seeking {} to {}", name(f), f.raw.pos.get()), e))?;
    let mut p = Prepared::plain(fd);
    if dir != path.parent().unwrap_or(dir) {
        p.warnings.push(format!(
            "{}: deleted file recreated in {} (its directory is gone)",
            name(f),
            dir.display()
        ));
    }
    Ok(p)
}
