//! Restore of the file locks the task held (FORMAT.md §23).
//!
//! Never waiting: a lock another process holds fails the restore, naming the file, the range
//! and the holder (from `/proc/locks`) — a restored task that silently lost its lock would
//! corrupt what the lock protects.
//!
//! - flock and OFD locks belong to the open file description, which cr-dump prepared: they
//!   are taken in cr-dump before the fork (`flock(LOCK_NB)`, `F_OFD_SETLK`) on it, so a
//!   conflict refuses the restore before any process exists; the task inherits them with the
//!   open file.
//! - POSIX locks belong to the process: before the fork `F_GETLK` on the prepared file says
//!   whether another process holds a conflicting one (refused then); after the descriptors are
//!   in place, and after every other descriptor of the child is closed (closing any descriptor
//!   of a file drops the process's POSIX locks on it), `fcntl(fd, F_SETLK)` is injected into
//!   the task.
//!
//! POSIX conflicts are checked before any OFD lock is taken: the task may hold both kinds on
//! one file, which never conflicted in the task but would against cr-dump's F_GETLK.

use super::super::child::Child;
use crate::error::{Error, Result};
use crate::sys::fdinfo::{parse_lock, LockKind};
use crate::sys::files::{self as sf, nr};
use cr_format::raw;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;

/// One recorded lock.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lock {
    /// The descriptor it is held through.
    pub fd: u32,
    /// `LOCK_POSIX`, `LOCK_FLOCK` or `LOCK_OFD`.
    pub ltype: u16,
    /// Write (else read).
    pub write: bool,
    /// First byte.
    pub start: u64,
    /// Length (0: to the end).
    pub len: u64,
}

impl Lock {
    /// The lock of a Lock record.
    pub fn from_raw(r: &raw::Lock) -> Lock {
        Lock {
            fd: r.fd.get(),
            ltype: r.ltype.get(),
            write: r.mode.get() == raw::LOCK_WRITE,
            start: r.start.get(),
            len: r.len.get(),
        }
    }
}

/// A prepared descriptor a lock is on: its number, cr-dump's open file, its path (for
/// messages).
pub(super) type Target<'a> = (u32, BorrowedFd<'a>, String);

/// The POSIX locks to take in the task after placement.
#[derive(Default)]
pub(super) struct PosixLocks(Vec<(Lock, String)>);

fn describe(l: &Lock, path: &str) -> String {
    let kind = match l.ltype {
        raw::LOCK_POSIX => "POSIX",
        raw::LOCK_FLOCK => "flock",
        _ => "OFD",
    };
    let mode = if l.write { "write" } else { "read" };
    let range = match (l.ltype, l.len) {
        (raw::LOCK_FLOCK, _) => String::new(),
        (_, 0) => format!(" on bytes {}-EOF", l.start),
        (_, n) => format!(" on bytes {}-{}", l.start, l.start.saturating_add(n - 1)),
    };
    format!("fd {} ({path}): the {kind} {mode} lock{range}", l.fd)
}

/// Checks and takes, before the fork, every recorded lock; returns the POSIX ones, which are
/// taken in the task after placement.
pub(super) fn prepare(locks: &[Lock], targets: &[Target<'_>]) -> Result<PosixLocks> {
    let find = |l: &Lock| {
        targets.iter().find(|t| t.0 == l.fd).ok_or_else(|| {
            Error::Other(format!(
                "a Lock record names fd {}, which is not a restored descriptor of the image",
                l.fd
            ))
        })
    };
    let mut posix = PosixLocks::default();
    for l in locks.iter().filter(|l| l.ltype == raw::LOCK_POSIX) {
        let (_, fd, path) = find(l)?;
        let conflict = sf::lock_conflict(*fd, false, l.write, l.start, l.len)
            .map_err(|e| Error::io(format!("{}: F_GETLK", describe(l, path)), e))?;
        if let Some(pid) = conflict {
            return Err(refusal(l, path, *fd, Some(pid)));
        }
        posix.0.push((*l, path.clone()));
    }
    for l in locks.iter().filter(|l| l.ltype != raw::LOCK_POSIX) {
        let (_, fd, path) = find(l)?;
        let r = match l.ltype {
            raw::LOCK_FLOCK => sf::flock_nb(*fd, l.write),
            raw::LOCK_OFD => sf::ofd_lock(*fd, l.write, l.start, l.len),
            t => {
                return Err(Error::Other(format!(
                    "fd {} ({path}): a lock of unknown type {t}",
                    l.fd
                )))
            }
        };
        match r {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                let holder = (l.ltype == raw::LOCK_OFD)
                    .then(|| sf::lock_conflict(*fd, true, l.write, l.start, l.len).ok())
                    .flatten()
                    .flatten();
                return Err(refusal(l, path, *fd, holder));
            }
            Err(e) => return Err(Error::io(format!("{}: taking it", describe(l, path)), e)),
        }
    }
    Ok(posix)
}

/// After placement (every other descriptor of the child closed): the POSIX locks, taken by
/// the task itself (`fcntl(F_SETLK)` injected; never `F_SETLKW`).
pub(super) fn after_placement(c: &Child, scratch: u64, locks: &PosixLocks) -> Result<()> {
    for (l, path) in &locks.0 {
        c.write(scratch, &sf::flock_struct(l.write, l.start, l.len))?;
        let args = [l.fd.into(), libc::F_SETLK as u64, scratch, 0, 0, 0];
        let r = c.call(nr::FCNTL, args)?;
        if r == -i64::from(libc::EAGAIN) || r == -i64::from(libc::EACCES) {
            return Err(Error::Other(format!(
                "{} is held by another process since the check before the restore{}",
                describe(l, path),
                holders(l, None).map_or_else(String::new, |h| format!(": {h}"))
            )));
        }
        if r < 0 {
            return Err(c.errno(&format!("{}: fcntl(F_SETLK)", describe(l, path)), r));
        }
    }
    Ok(())
}

/// The refusal for a lock another process holds.
fn refusal(l: &Lock, path: &str, fd: BorrowedFd<'_>, pid: Option<i32>) -> Error {
    let dev_ino = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|m| ((libc::major(m.dev()), libc::minor(m.dev())), m.ino()));
    let who = holders(l, dev_ino)
        .or_else(|| {
            pid.filter(|&p| p > 0)
                .map(|p| format!("pid {p}{}", comm(p)))
        })
        .unwrap_or_else(|| "another process".into());
    Error::Other(format!(
        "{} cannot be taken again: {who} holds a conflicting lock (restore never waits for \
         a lock: the task would run without it); release it and restore again",
        describe(l, path)
    ))
}

/// The holders of locks on the same file that conflict with `l`, from `/proc/locks`.
fn holders(l: &Lock, dev_ino: Option<((u32, u32), u64)>) -> Option<String> {
    let (dev, ino) = dev_ino?;
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let end = (l.len != 0).then(|| l.start.saturating_add(l.len - 1));
    let flock = l.ltype == raw::LOCK_FLOCK;
    let found: Vec<String> = text
        .lines()
        .filter_map(parse_lock)
        .filter(|p| !p.blocked && p.dev == dev && p.ino == ino)
        .filter(|p| (p.kind == LockKind::Flock) == flock && (l.write || p.write == Some(true)))
        .filter(|p| {
            flock || (p.end.is_none_or(|e| e >= l.start) && end.is_none_or(|e| p.start <= e))
        })
        .map(|p| {
            let who = if p.pid > 0 {
                format!("pid {}{}", p.pid, comm(p.pid as i32))
            } else {
                "an open file description (OFD lock)".into()
            };
            format!("{who} [{}]", p.describe())
        })
        .collect();
    (!found.is_empty()).then(|| found.join(", "))
}

/// ` (COMM)` of a process, if it can be read.
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| format!(" ({})", c.trim()))
        .unwrap_or_default()
}
