//! Pipes between a task and the image file: the numbers of the calls injected into a twin
//! (`pipe2`, `vmsplice`), and cr-dump's own end of the pipe (`F_SETPIPE_SZ`, `splice` to a
//! file at an offset, `poll`).

use super::check;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// x86-64 system call numbers injected into a twin.
pub mod nr {
    use linux_raw_sys::general as k;
    /// `pipe2`.
    pub const PIPE2: u64 = k::__NR_pipe2 as u64;
    /// `vmsplice`.
    pub const VMSPLICE: u64 = k::__NR_vmsplice as u64;
    /// `read`.
    pub const READ: u64 = k::__NR_read as u64;
}

/// `fcntl(fd, F_SETPIPE_SZ, bytes)`: the pipe's new capacity in bytes.
pub fn set_pipe_size(fd: impl AsFd, bytes: usize) -> io::Result<usize> {
    let n = libc::c_int::try_from(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: fcntl with F_SETPIPE_SZ takes an fd and an integer.
    let r = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_SETPIPE_SZ, n) };
    let r = check(r.into())?;
    usize::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `splice(pipe, NULL, out, &off, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)`: moves up to `len`
/// bytes from `pipe` to `out` at offset `off` (the file's own offset is not used or moved).
/// Bytes moved: 0 at end of file (no writer left), `WouldBlock` when the pipe is empty.
pub fn splice_to(pipe: impl AsFd, out: impl AsFd, off: u64, len: usize) -> io::Result<usize> {
    let mut o =
        libc::loff_t::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: two fds, a valid pointer to a loff_t that lives across the call, integers.
    let r = unsafe {
        libc::splice(
            pipe.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
            out.as_fd().as_raw_fd(),
            &mut o,
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    let r = check(r as i64)?;
    usize::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Waits up to `ms` milliseconds for `fd` to be readable (or to hang up); whether it is.
pub fn wait_readable(fd: impl AsFd, ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that lives across the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    match check(r.into()) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}
