//! Files: locks and naming unnamed (`O_TMPFILE`) files.

use super::check;
use std::io;
use std::os::fd::AsRawFd;

/// `flock(fd, LOCK_EX)`, retried on `EINTR`; the lock is released when the file is closed.
pub fn flock_exclusive(f: &std::fs::File) -> io::Result<()> {
    loop {
        // SAFETY: flock takes a file descriptor that `f` keeps open for the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Gives the unnamed file `f` (opened with `O_TMPFILE`) the name `dst`, failing with `EEXIST`
/// if `dst` exists: `linkat("/proc/self/fd/N", dst, AT_SYMLINK_FOLLOW)`.
pub fn link_tmpfile(f: &std::fs::File, dst: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let src = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dst = std::ffi::CString::new(dst.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both paths are NUL-terminated C strings that live across the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    check(r.into()).map(drop)
}
