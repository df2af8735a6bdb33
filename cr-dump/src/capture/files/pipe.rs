//! Capture of pipes and named FIFOs (FORMAT.md §15: `params[0]` the capacity, the unread bytes
//! in FileData records of the pipe's first File).
//!
//! The unread bytes are copied without being consumed: cr-dump opens the pipe again through
//! `/proc/PID/fd/N` (which opens the same pipe, read-only and non-blocking so that the open
//! never waits for a writer), and `tee`s its contents into a pipe of its own of the same
//! capacity, which it then reads. The task's pipe keeps every byte in order; nothing ever reads
//! from it (as CRIU does in `criu/pipes.c`).
//!
//! Whether the other end of a pipe is held outside the task: when the task holds only one end,
//! a duplicate of its own descriptor (`pidfd_getfd`, the task's open file itself) is polled:
//! a read end with no writer anywhere shows `POLLHUP`, a write end with no reader `POLLERR`.
//! Such a pipe is restored with the other end closed; one whose other end someone else holds
//! is `Action::Inherit`.

use super::Cx;
use crate::capture::state::{Action, Fidelity, FileEntry};
use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::{self, fdobj};
use cr_format::raw;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

/// Which ends of a pipe the task holds through its descriptors.
#[derive(Clone, Copy, Debug, Default)]
struct Ends {
    read: bool,
    write: bool,
}

impl Ends {
    fn add(&mut self, flags: u32) {
        match flags as i32 & libc::O_ACCMODE {
            libc::O_RDONLY => self.read = true,
            libc::O_WRONLY => self.write = true,
            _ => {
                self.read = true;
                self.write = true;
            }
        }
    }
}

/// The `flags:` of another descriptor of the task.
fn fd_flags(pid: i32, fd: i32) -> Result<u32> {
    let name = format!("fdinfo/{fd}");
    let text = procfs::read(pid, &name)?;
    let what = format!("/proc/{pid}/{name}");
    let info = crate::sys::fdinfo::parse_fdinfo(&String::from_utf8_lossy(&text), &what)?;
    Ok(info.flags)
}

/// The ends the task holds of the pipe `cx.link` names, and whether `cx.fd` is the pipe's
/// first descriptor (the File that carries the unread bytes).
fn ends_in_task(cx: &Cx) -> Result<(Ends, bool)> {
    let mut ends = Ends::default();
    let mut first = None;
    for (fd, _) in cx.all.iter().filter(|(_, l)| l.as_slice() == cx.link) {
        first.get_or_insert(*fd);
        if *fd == cx.fd {
            ends.add(cx.info.flags);
        } else {
            ends.add(fd_flags(cx.pid, *fd)?);
        }
    }
    Ok((ends, first == Some(cx.fd)))
}

/// Whether someone outside the task holds the end of the pipe the task lacks: polls the task's
/// own open file (see the module docs). If that cannot be read (`pidfd_getfd` refused), the
/// safe answer (outside) and why.
fn other_end_held(cx: &Cx, ends: Ends) -> (bool, Option<String>) {
    let ev = sys::pidfd_open(cx.pid)
        .and_then(|pidfd| sys::pidfd_getfd(&pidfd, cx.fd))
        .and_then(|dup| fdobj::poll_now(&dup, libc::POLLIN | libc::POLLOUT));
    match ev {
        Ok(ev) if ends.read => (ev & libc::POLLHUP == 0, None),
        Ok(ev) => (ev & libc::POLLERR == 0, None),
        Err(e) => (
            true,
            Some(format!(
                "whether its other end is held elsewhere could not be read (a duplicate of the \
                 descriptor: {e}): taken as outside"
            )),
        ),
    }
}

/// Opens the task's pipe (or FIFO) `cx.fd` again, read-only and non-blocking; if that open is
/// refused (a pipe made by another user, mode 0600, seen by a user checkpointing their own
/// task), a duplicate of the task's descriptor serves as well: `tee` is asked not to block,
/// and neither it nor `F_GETPIPE_SZ`/`FIONREAD` consumes or changes anything.
fn reopen(cx: &Cx) -> Result<File> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(cx.proc_path());
    match opened {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => sys::pidfd_open(cx.pid)
            .and_then(|pidfd| sys::pidfd_getfd(&pidfd, cx.fd))
            .map(File::from)
            .map_err(|_| procfs::proc_err(cx.pid, &format!("fd/{}", cx.fd), e)),
        Err(e) => Err(procfs::proc_err(cx.pid, &format!("fd/{}", cx.fd), e)),
    }
}

/// The capacity of the pipe open as `p`.
fn capacity(cx: &Cx, p: &File) -> Result<u64> {
    fdobj::pipe_size(p)
        .map_err(|e| Error::io(format!("F_GETPIPE_SZ of fd {} of pid {}", cx.fd, cx.pid), e))
}

/// The capacity and unread bytes of the pipe open as `p`, copied with `tee` (see the module
/// docs).
fn unread(cx: &Cx, p: &File) -> Result<(u64, Vec<u8>)> {
    let io = |what: &str, e| Error::io(format!("{what} (pipe fd {} of pid {})", cx.fd, cx.pid), e);
    let cap = capacity(cx, p)?;
    let n = fdobj::unread_bytes(p).map_err(|e| io("FIONREAD", e))?;
    if n == 0 {
        return Ok((cap, Vec::new()));
    }
    let (r, w): (OwnedFd, OwnedFd) = fdobj::pipe(libc::O_NONBLOCK).map_err(|e| io("pipe2", e))?;
    // As many pages as the task's pipe, so that `tee` can copy all of its buffers at once (a
    // second `tee` would copy the same bytes again).
    fdobj::set_pipe_size(&w, cap).map_err(|e| io("F_SETPIPE_SZ on cr-dump's pipe", e))?;
    let len = usize::try_from(n).map_err(|_| Error::Other(format!("{n} unread bytes")))?;
    let got = fdobj::tee(p, &w, len).map_err(|e| io("tee", e))?;
    if got != len {
        return Err(Error::Other(format!(
            "pipe fd {} of pid {}: tee copied {got} of its {len} unread bytes",
            cx.fd, cx.pid
        )));
    }
    drop(w);
    let mut buf = Vec::with_capacity(len);
    File::from(r)
        .read_to_end(&mut buf)
        .map_err(|e| io("reading the tee'd bytes", e))?;
    if buf.len() != len {
        return Err(Error::Other(format!(
            "pipe fd {} of pid {}: read {} of its {len} unread bytes",
            cx.fd,
            cx.pid,
            buf.len()
        )));
    }
    Ok((cap, buf))
}

fn end_name(flags: u32) -> &'static str {
    match flags as i32 & libc::O_ACCMODE {
        libc::O_RDONLY => "read end",
        libc::O_WRONLY => "write end",
        _ => "both ends",
    }
}

/// The report line of a pipe end whose other end is held outside the task. At 0 to 2 it is
/// like a terminal: restore gives the task its own standard stream (`Restore`, with a note;
/// `Partial` if unread bytes of a read end stay behind in the old pipe); elsewhere only
/// `--inherit-fd` attaches it (`Inherit`).
fn outside_line(cx: &Cx, p: &File, what: String, ends: Ends, unsure: Option<String>) -> Fidelity {
    let other = if ends.read { "write" } else { "read" };
    let why = unsure.unwrap_or_else(|| format!("its {other} end is held outside the task"));
    if cx.fd > 2 {
        let how = format!(
            "restore attaches fd {} only to what --inherit-fd names",
            cx.fd
        );
        return cx.line(what, Action::Inherit, format!("{why}: {how}"));
    }
    let how = format!(
        "restore gives fd {0} its own fd {0} (or what --inherit-fd names)",
        cx.fd
    );
    let left = if ends.read {
        fdobj::unread_bytes(p).unwrap_or(0)
    } else {
        0
    };
    if left > 0 {
        let note = format!("{why}: {how}; its {left} unread bytes stay in the old pipe");
        return cx.line(what, Action::Partial, note);
    }
    cx.line(what, Action::Restore, format!("{why}: {how}"))
}

/// Describes the anonymous pipe of `cx.fd` into `e`.
pub(super) fn capture(cx: &Cx, e: &mut FileEntry) -> Result<Fidelity> {
    e.raw.ftype = raw::FILE_PIPE.into();
    let (ends, first) = ends_in_task(cx)?;
    let both = ends.read && ends.write;
    // Before the pipe is opened again: that open would count as a reader.
    let (held, unsure) = if both {
        (false, None)
    } else {
        other_end_held(cx, ends)
    };
    let p = reopen(cx)?;
    let what = format!("{} ({})", cx.link_str(), end_name(cx.info.flags));
    if held {
        e.raw.params[0] = capacity(cx, &p)?.into();
        e.raw.params[1] = raw::PIPE_OTHER_END_OUTSIDE.into();
        return Ok(outside_line(cx, &p, what, ends, unsure));
    }
    let (cap, bytes) = if first {
        unread(cx, &p)?
    } else {
        (capacity(cx, &p)?, Vec::new())
    };
    e.raw.params[0] = cap.into();
    let mut kind = what;
    if !both {
        kind.push_str(", the other end closed");
    }
    if !bytes.is_empty() {
        kind.push_str(&format!(", {} unread bytes", bytes.len()));
        e.raw.flags = (e.raw.flags.get() | raw::FILE_HAS_DATA).into();
        e.contents = bytes;
    }
    Ok(cx.line(kind, Action::Restore, ""))
}

/// Describes the named FIFO of `cx.fd` into `e`: reopened by path at restore, its unread
/// bytes (in the File of its first descriptor) put back.
pub(super) fn capture_fifo(cx: &Cx, e: &mut FileEntry) -> Result<Fidelity> {
    e.raw.ftype = raw::FILE_FIFO.into();
    let kind = format!("FIFO {} ({})", cx.link_str(), end_name(cx.info.flags));
    if cx.link.ends_with(b" (deleted)") {
        // Restore leaves a File of this type closed, as the report says.
        e.raw.ftype = raw::FILE_UNSUPPORTED.into();
        return Ok(cx.line(
            kind,
            Action::Lost,
            "the FIFO was removed: restore has no path to open it by, and leaves the \
             descriptor closed",
        ));
    }
    let first = cx
        .all
        .iter()
        .find(|(_, l)| l.as_slice() == cx.link)
        .is_none_or(|(fd, _)| *fd == cx.fd);
    let p = reopen(cx)?;
    let (cap, bytes) = if first {
        unread(cx, &p)?
    } else {
        (capacity(cx, &p)?, Vec::new())
    };
    e.raw.params[0] = cap.into();
    let mut kind = kind;
    if !bytes.is_empty() {
        kind.push_str(&format!(", {} unread bytes", bytes.len()));
        e.raw.flags = (e.raw.flags.get() | raw::FILE_HAS_DATA).into();
        e.contents = bytes;
    }
    Ok(cx.line(kind, Action::Restore, ""))
}
