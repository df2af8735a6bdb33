//! Files: opening by name without following a symlink or blocking on a FIFO, locks, naming
//! unnamed (`O_TMPFILE`) files, and removing a named temporary file when a signal ends us.

use super::check;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// How [`open_regular`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    Read,
    /// Read and write.
    ReadWrite,
    /// Read and write, created (mode 0600) if missing.
    Create,
}

/// Opens `path` as a regular file: the last component is never followed if it is a symlink
/// (`O_NOFOLLOW`: `ELOOP`), the open never waits for a FIFO's other end (`O_NONBLOCK`, cleared
/// once the file is known to be regular), and anything but a regular file is refused
/// ([`io::ErrorKind::InvalidInput`], naming what it is).
pub fn open_regular(path: &Path, access: Access) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    match access {
        Access::Read => {}
        Access::ReadWrite => {
            o.write(true);
        }
        Access::Create => {
            o.write(true).create(true).mode(0o600);
        }
    }
    let f = o.open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symbolic link (not followed: give the file it points to)",
        ),
        _ => e,
    })?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", file_kind(md.mode())),
        ));
    }
    set_blocking(&f)?;
    Ok(f)
}

/// A file type's name, for errors.
pub fn file_kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFIFO => "a FIFO",
        libc::S_IFDIR => "a directory",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "a regular file",
    }
}

/// Clears `O_NONBLOCK` on `f`.
fn set_blocking(f: &File) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor `f` keeps open, with integer arguments only.
    let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    check(fl.into())?;
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) };
    check(r.into()).map(drop)
}

/// Opens the directory `path` (a symlink at its last component is not followed) and checks it
/// is owned by the effective user and writable by no one else (`private`: not readable or
/// searchable either); returns it open, or why not.
pub fn open_owned_dir(path: &Path, private: bool) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory (a symbolic link or another file is in its place)",
            ),
            _ => e,
        })?;
    let md = f.metadata()?;
    let me = super::geteuid();
    if md.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("owned by uid {}, not by uid {me}", md.uid()),
        ));
    }
    let others = if private { 0o077 } else { 0o022 };
    if md.mode() & others != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "mode {:04o}: open to other users (want {})",
                md.mode() & 0o7777,
                if private {
                    "0700"
                } else {
                    "no group or other write"
                }
            ),
        ));
    }
    Ok(f)
}

/// `flock(fd, LOCK_EX)`, retried on `EINTR`; the lock is released when the file is closed.
pub fn flock_exclusive(f: &File) -> io::Result<()> {
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

/// `flock(fd, LOCK_EX | LOCK_NB)` polled until it succeeds or `limit` has passed
/// ([`io::ErrorKind::TimedOut`]): a lock held forever by someone else never hangs us.
pub fn flock_exclusive_timeout(f: &File, limit: Duration) -> io::Result<()> {
    let t0 = Instant::now();
    loop {
        // SAFETY: flock takes a file descriptor that `f` keeps open for the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock if t0.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(5))
            }
            io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "another process holds its lock for more than {} s",
                        limit.as_secs_f64()
                    ),
                ))
            }
            _ => return Err(e),
        }
    }
}

/// Reserves `len` bytes of blocks for `f` from offset 0 without changing its size:
/// `fallocate(FALLOC_FL_KEEP_SIZE)`. Writes into reserved blocks skip the file system's
/// per-page delayed-allocation bookkeeping; a later `ftruncate` gives back what is past the end.
pub fn preallocate(f: &File, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain system call on an open descriptor; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    check(r.into()).map(drop)
}

/// Bytes free for an unprivileged user on the file system of `f` (`fstatvfs`: `f_bavail` blocks
/// of `f_frsize`).
pub fn available_bytes(f: &File) -> io::Result<u64> {
    // SAFETY: statvfs is plain data; all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statvfs that outlives the call.
    let r = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) };
    check(r.into())?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Gives the unnamed file `f` (opened with `O_TMPFILE`) the name `dst`, failing with `EEXIST`
/// if `dst` exists: `linkat("/proc/self/fd/N", dst, AT_SYMLINK_FOLLOW)`.
pub fn link_tmpfile(f: &File, dst: &Path) -> io::Result<()> {
    let src = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dst = cpath(dst)?;
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

/// Renames `src` to `dst` unless `dst` exists (`EEXIST`): `renameat2(RENAME_NOREPLACE)`, or,
/// where the file system lacks it, a hard link and an unlink.
pub fn rename_noreplace(src: &Path, dst: &Path) -> io::Result<()> {
    let (s, d) = (cpath(src)?, cpath(dst)?);
    // SAFETY: both paths are NUL-terminated C strings that live across the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            s.as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    match check(r.into()) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            std::fs::hard_link(src, dst)?;
            std::fs::remove_file(src)
        }
        Err(e) => Err(e),
    }
}

/// The path a signal handler removes: a leaked C string, or null.
static SIGNAL_UNLINK: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn unlink_and_reraise(sig: libc::c_int) {
    let p = SIGNAL_UNLINK.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: `p` is a NUL-terminated string leaked by `RemoveOnSignal::new` and never
        // freed while it is published; unlink is async-signal-safe.
        unsafe { libc::unlink(p) };
    }
    // SAFETY: signal and raise are async-signal-safe and take integers; the default action
    // then ends the process as the signal would have.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

const CLEANUP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// While alive, a SIGINT, SIGTERM or SIGHUP first removes the named temporary file `path`,
/// then ends the process as the signal would have. For the verbs that write one output file;
/// one path at a time. Dropping it puts back the actions it replaced.
pub struct RemoveOnSignal {
    ptr: *mut libc::c_char,
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl RemoveOnSignal {
    /// Records `path` and installs the handlers.
    pub fn new(path: &Path) -> io::Result<RemoveOnSignal> {
        let ptr = cpath(path)?.into_raw();
        let prev = SIGNAL_UNLINK.swap(ptr, Ordering::SeqCst);
        let mut me = RemoveOnSignal {
            ptr,
            old: Vec::new(),
        };
        if !prev.is_null() {
            // A second guard replaces the first's path: the first no longer owns it.
            // SAFETY: `prev` came from `CString::into_raw` in `new` and is no longer published.
            drop(unsafe { CString::from_raw(prev) });
        }
        for sig in CLEANUP_SIGNALS {
            // SAFETY: an all-zero sigaction is a valid value (empty mask, no flags).
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction =
                unlink_and_reraise as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // SAFETY: as above.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both structs live across the call; the handler only calls
            // async-signal-safe functions.
            let r = unsafe { libc::sigaction(sig, &sa, &mut old) };
            check(r.into())?;
            me.old.push((sig, old));
        }
        Ok(me)
    }
}

impl Drop for RemoveOnSignal {
    fn drop(&mut self) {
        for (sig, old) in &self.old {
            // SAFETY: puts back the action saved by `new`; the struct lives across the call.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
        if SIGNAL_UNLINK
            .compare_exchange(
                self.ptr,
                std::ptr::null_mut(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            // SAFETY: unpublished above, so no handler can read it; it came from into_raw.
            drop(unsafe { CString::from_raw(self.ptr) });
        }
    }
}

/// `lseek(f, off, whence)`, `None` for `ENXIO` (no data, or no hole, at or after `off`).
fn seek_to(f: &File, off: u64, whence: i32) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek only reads its integer arguments; the descriptor is open for `f`'s life.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(u64::try_from(r).ok())
}

/// The first byte of data of `f` at or after `off` (`SEEK_DATA`), `None` if there is none.
pub fn seek_data(f: &File, off: u64) -> io::Result<Option<u64>> {
    seek_to(f, off, libc::SEEK_DATA)
}

/// The first hole of `f` at or after `off` (`SEEK_HOLE`; the end of the file is one), `None`
/// if `off` is past the end.
pub fn seek_hole(f: &File, off: u64) -> io::Result<Option<u64>> {
    seek_to(f, off, libc::SEEK_HOLE)
}

/// A new empty file `name` in the directory `dir` (`O_CREAT|O_EXCL|O_NOFOLLOW`: never an
/// existing file, never through a symlink; mode 0600), unlinked again at once: an open file
/// whose name, in `/proc/PID/maps` once mapped, is `DIR/NAME (deleted)`. Both steps go
/// through the same directory descriptor, so a directory swapped meanwhile cannot make the
/// unlink remove another file.
pub fn create_unlinked(dir: &Path, name: &std::ffi::OsStr) -> io::Result<File> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let n =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if name.as_bytes().contains(&b'/') || name.is_empty() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `d` is an open directory and `n` a NUL-terminated C string, both live across the
    // call; the mode argument is read as an integer.
    let fd = unsafe { libc::openat(d.as_raw_fd(), n.as_ptr(), flags, 0o600 as libc::c_uint) };
    let fd = check(fd.into())?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
    let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: as for openat above.
    let r = unsafe { libc::unlinkat(d.as_raw_fd(), n.as_ptr(), 0) };
    check(r.into())?;
    Ok(f)
}
