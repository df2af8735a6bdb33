//! Descriptors for checkpoint and restore of open files: comparing open file descriptions
//! across descriptors (`kcmp`), moving a descriptor above a number (`F_DUPFD_CLOEXEC`),
//! terminals, and unnamed files (`O_TMPFILE`); inotify instances and watches, files opened
//! by handle (`open_by_handle_at`), and file locks (`F_GETLK`, `F_OFD_SETLK`, `flock`, and the
//! `struct flock` an injected `fcntl` reads).

use super::check;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `KCMP_FILE` of the kernel's `enum kcmp_type` (not in `libc`): compare two open file
/// descriptions.
const KCMP_FILE: libc::c_long = 0;

/// Whether descriptors `fd1` and `fd2` of task `pid` share one open file description (one was
/// `dup`ed from the other, or inherited): `kcmp(pid, pid, KCMP_FILE, fd1, fd2) == 0`. Needs the
/// ptrace access to `pid` that capture has.
pub fn same_open_file(pid: i32, fd1: i32, fd2: i32) -> io::Result<bool> {
    // SAFETY: kcmp takes five integers and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, fd1, fd2) };
    Ok(check(r)? == 0)
}

/// A duplicate of `fd` at the lowest free number at or above `base`, close-on-exec (which
/// does not matter to the restored task's shell: it never execs).
pub fn dup_above(fd: BorrowedFd<'_>, base: i32) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes integers; `fd` is open for the borrow.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, base) };
    let r = check(r.into())?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: isatty takes an integer.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// Opens `path` with `open(2)` flags `flags` (`O_CLOEXEC` added) and `mode` for a created
/// file: the raw flags a restored descriptor needs, which `OpenOptions` cannot all express.
pub fn open_flags(path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string that lives across the call.
    let r = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    let r = check(r.into())?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Sets the open flags `F_SETFL` can change (`O_APPEND`, `O_NONBLOCK`, `O_ASYNC`, `O_DIRECT`,
/// `O_NOATIME`) to `flags`.
pub fn set_status_flags(fd: BorrowedFd<'_>, flags: i32) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFL) takes integers.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) };
    check(r.into()).map(drop)
}

/// `lseek(fd, pos, SEEK_SET)`.
pub fn seek_to(fd: BorrowedFd<'_>, pos: u64) -> io::Result<()> {
    let pos = i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek takes integers.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), pos, libc::SEEK_SET) };
    check(r).map(drop)
}

/// System call numbers injected to put descriptors in place in a restored task (kept here,
/// beside the rest of the file code, rather than in [`super::abi::nr`]).
pub mod nr {
    use linux_raw_sys::general as k;
    /// `dup3(2)`.
    pub const DUP3: u64 = k::__NR_dup3 as u64;
    /// `fchdir(2)`.
    pub const FCHDIR: u64 = k::__NR_fchdir as u64;
    /// `chroot(2)`.
    pub const CHROOT: u64 = k::__NR_chroot as u64;
    /// `setsid(2)`.
    pub const SETSID: u64 = k::__NR_setsid as u64;
    /// `fcntl(2)` (`F_SETLK` of a POSIX lock the task must own).
    pub const FCNTL: u64 = k::__NR_fcntl as u64;
}

/// Whether this process has `CAP_SYS_CHROOT` in its effective set (`CapEff` of
/// `/proc/self/status`).
pub fn can_chroot() -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << linux_raw_sys::general::CAP_SYS_CHROOT) != 0)
}

/// A duplicate of this process's descriptor number `n` (`EBADF` if it is not open).
pub fn dup_number(n: i32) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes integers; a number that is not open gives EBADF.
    let r = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 0) };
    let r = check(r.into())?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Raises this process's soft `RLIMIT_NOFILE` to at least `need` descriptors (up to the hard
/// limit) when it is lower: restore opens files above the image's highest number. The child
/// inherits the raised limit (the task's own limits are restored with its other state).
pub fn raise_nofile(need: i32) -> io::Result<()> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `r`, which lives across the call.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }.into())?;
    let need = need.max(0) as libc::rlim_t;
    if r.rlim_cur >= need {
        return Ok(());
    }
    if r.rlim_max < need {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{need} descriptors needed, the hard limit is {}",
                r.rlim_max
            ),
        ));
    }
    r.rlim_cur = need;
    // SAFETY: setrlimit reads one rlimit from `r`.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }.into()).map(drop)
}

/// This thread's file-system credentials switched to another user's (`setfsuid`,
/// `setfsgid`, and the supplementary groups, all per thread at the system-call level) until
/// dropped: files opened meanwhile are opened with that user's permissions. Needs
/// `CAP_SETUID`/`CAP_SETGID` (root).
pub struct FsCreds {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

impl FsCreds {
    /// Switches this thread to `uid`, `gid`, `groups` for file access.
    pub fn assume(uid: u32, gid: u32, groups: &[u32]) -> io::Result<FsCreds> {
        // SAFETY: getgroups(0, NULL) only returns the count.
        let n = check(unsafe { libc::getgroups(0, std::ptr::null_mut()) }.into())?;
        let mut old = vec![0 as libc::gid_t; n as usize];
        // SAFETY: `old` has room for `n` entries.
        let n = check(unsafe { libc::getgroups(n as i32, old.as_mut_ptr()) }.into())?;
        old.truncate(n as usize);
        set_groups(groups)?;
        // SAFETY: setfsgid/setfsuid take an integer and return the previous id (they cannot
        // fail visibly: the result is checked below by reading the id back).
        let (old_gid, old_uid) = unsafe {
            (
                libc::syscall(libc::SYS_setfsgid, gid) as u32,
                libc::syscall(libc::SYS_setfsuid, uid) as u32,
            )
        };
        let guard = FsCreds {
            uid: old_uid,
            gid: old_gid,
            groups: old,
        };
        // SAFETY: as above; -1 changes nothing and returns the current id.
        let (now_uid, now_gid) = unsafe {
            (
                libc::syscall(libc::SYS_setfsuid, -1) as u32,
                libc::syscall(libc::SYS_setfsgid, -1) as u32,
            )
        };
        if (now_uid, now_gid) != (uid, gid) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("setfsuid({uid})/setfsgid({gid}) refused"),
            ));
        }
        Ok(guard)
    }
}

/// `setgroups` for this thread only (the raw system call; glibc's wrapper changes every
/// thread).
fn set_groups(groups: &[u32]) -> io::Result<()> {
    let g: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: `g` holds `g.len()` gids and lives across the call.
    check(unsafe { libc::syscall(libc::SYS_setgroups, g.len(), g.as_ptr()) }).map(drop)
}

impl Drop for FsCreds {
    fn drop(&mut self) {
        // SAFETY: integers only; back to the ids saved by `assume`.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, self.uid);
            libc::syscall(libc::SYS_setfsgid, self.gid);
        }
        let _ = set_groups(&self.groups);
    }
}

/// Bytes waiting to be read in the pipe or FIFO `fd` (`FIONREAD`).
pub fn unread_bytes(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`, which lives across the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) }.into())?;
    Ok(n.max(0) as u32)
}

/// A new inotify instance (`inotify_init1`, `flags` of `IN_NONBLOCK`; `IN_CLOEXEC` added).
pub fn inotify_init(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes an integer.
    let r = unsafe { libc::inotify_init1(flags | libc::IN_CLOEXEC) };
    let r = check(r.into())?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// `inotify_add_watch(fd, path, mask)`: the watch descriptor.
pub fn inotify_add_watch(fd: BorrowedFd<'_>, path: &Path, mask: u32) -> io::Result<i32> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string that lives across the call.
    let r = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
    Ok(check(r.into())? as i32)
}

/// `inotify_rm_watch(fd, wd)`.
pub fn inotify_rm_watch(fd: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
    // SAFETY: inotify_rm_watch takes integers.
    let r = unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
    check(r.into()).map(drop)
}

/// Reads and throws away whatever the non-blocking inotify fd `fd` has queued; returns the
/// number of bytes discarded.
pub fn drain(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        // SAFETY: `buf` is writable for its length across the call.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match check(r as libc::c_long) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as usize,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

/// Opens, `O_PATH`, the object of a file handle (`type`, `bytes`, as fdinfo shows them) on the
/// file system of `mount` (`open_by_handle_at`; needs `CAP_DAC_READ_SEARCH`).
pub fn open_by_handle(mount: BorrowedFd<'_>, htype: i32, bytes: &[u8]) -> io::Result<OwnedFd> {
    let n = u32::try_from(bytes.len())
        .ok()
        .filter(|&n| n <= 128)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // `struct file_handle { u32 handle_bytes; int handle_type; unsigned char f_handle[]; }`,
    // built in u32 words so that it is aligned as the kernel reads it.
    let mut words = vec![0u32; 2 + bytes.len().div_ceil(4)];
    if let [a, b, rest @ ..] = words.as_mut_slice() {
        *a = n;
        *b = htype as u32;
        for (i, chunk) in bytes.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            if let Some(slot) = rest.get_mut(i) {
                *slot = u32::from_ne_bytes(w);
            }
        }
    }
    let flags = libc::O_PATH | libc::O_CLOEXEC;
    // SAFETY: `words` holds a complete file_handle of `n` bytes and lives across the call;
    // the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            words.as_ptr(),
            flags,
        )
    };
    let r = check(r)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// The size of the kernel's `struct flock` on this architecture (what [`flock_struct`]
/// builds).
pub const FLOCK_SIZE: usize = std::mem::size_of::<libc::flock>();
const _: () = assert!(FLOCK_SIZE == 32);

/// The bytes of a `struct flock { short l_type; short l_whence; off_t l_start; off_t l_len;
/// pid_t l_pid; }` (x86-64 layout, `SEEK_SET`) for an injected `fcntl`.
pub fn flock_struct(write: bool, start: u64, len: u64) -> [u8; FLOCK_SIZE] {
    let ltype = if write { libc::F_WRLCK } else { libc::F_RDLCK } as i16;
    let mut b = [0u8; FLOCK_SIZE];
    b[0..2].copy_from_slice(&ltype.to_ne_bytes());
    b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_ne_bytes());
    b[8..16].copy_from_slice(&start.to_ne_bytes());
    b[16..24].copy_from_slice(&len.to_ne_bytes());
    b
}

fn flock_of(write: bool, start: u64, len: u64) -> io::Result<libc::flock> {
    let bad = || io::Error::from(io::ErrorKind::InvalidInput);
    Ok(libc::flock {
        l_type: (if write { libc::F_WRLCK } else { libc::F_RDLCK }) as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: i64::try_from(start).map_err(|_| bad())?,
        l_len: i64::try_from(len).map_err(|_| bad())?,
        l_pid: 0,
    })
}

/// Who holds a lock that conflicts with a `write` (else read) byte-range lock of `start`,
/// `len` on `fd`'s file: `F_GETLK` (POSIX locks; `ofd`: `F_OFD_GETLK`, OFD locks too). `None`
/// when the lock could be taken; `Some(pid)` otherwise (-1 for an OFD lock's holder).
pub fn lock_conflict(
    fd: BorrowedFd<'_>,
    ofd: bool,
    write: bool,
    start: u64,
    len: u64,
) -> io::Result<Option<i32>> {
    let mut fl = flock_of(write, start, len)?;
    let cmd = if ofd {
        libc::F_OFD_GETLK
    } else {
        libc::F_GETLK
    };
    // SAFETY: fcntl(F_GETLK) reads and writes one `struct flock`, which lives across the call.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl) }.into())?;
    Ok((fl.l_type != libc::F_UNLCK as i16).then_some(fl.l_pid))
}

/// Takes an OFD byte-range lock on `fd`'s open file description without waiting
/// (`F_OFD_SETLK`): `EAGAIN` when another holds a conflicting one.
pub fn ofd_lock(fd: BorrowedFd<'_>, write: bool, start: u64, len: u64) -> io::Result<()> {
    let fl = flock_of(write, start, len)?;
    // SAFETY: fcntl(F_OFD_SETLK) reads one `struct flock`, which lives across the call.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) }.into()).map(drop)
}

/// `flock(fd, LOCK_EX or LOCK_SH | LOCK_NB)`: `EWOULDBLOCK` when another holds a conflicting
/// one.
pub fn flock_nb(fd: BorrowedFd<'_>, write: bool) -> io::Result<()> {
    let op = if write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
    // SAFETY: flock takes integers.
    check(unsafe { libc::flock(fd.as_raw_fd(), op) }.into()).map(drop)
}
