//! Capture of the task's open files, working directory and root (FORMAT.md §15, §16).
//!
//! # The contract with the per-type modules
//!
//! [`capture`] walks `/proc/PID/fd` in increasing order. For each descriptor it reads the
//! link (`readlink /proc/PID/fd/N`), parses `/proc/PID/fdinfo/N` ([`FdInfo`]: `pos`, `flags`,
//! `mnt_id`, `ino`, the `lock:` lines and the whole text), and stats the open file through the
//! magic link (`std::fs::metadata("/proc/PID/fd/N")`). It then fills a [`FileEntry`] with what
//! every type shares: `fd`, `role` (`ROLE_FD`), `fd_flags` (`FD_CLOEXEC` from the `O_CLOEXEC`
//! bit of `flags`), `open_flags` (`flags` as fdinfo shows them), `pos`, `inode`, `dev_*`,
//! `mode`, `rdev_*`, `size`, `mtime_ns`, `dup_of` (`DUP_NONE`), `path` (the link, cut to
//! `MAX_PATH`), `ftype` `FILE_UNSUPPORTED`. A descriptor that shares its open file description
//! with an earlier one (`kcmp(KCMP_FILE)`) gets `dup_of` and the earlier one's type, flags,
//! params and path, and is NOT dispatched: a type module sees each open file description once.
//!
//! Dispatch, by what the link says:
//!
//! | link | call |
//! |---|---|
//! | `pipe:[N]` | `pipe::capture` |
//! | `socket:[N]` | `socket::capture` |
//! | `anon_inode:[eventfd]`, `anon_inode:[timerfd]`, `anon_inode:[signalfd]`, `anon_inode:[eventpoll]` | `anon::capture` |
//! | `/memfd:NAME (deleted)` | `anon::capture_memfd` |
//! | `anon_inode:inotify` | `inotify::Capture::fd` (an Inotify record, no File record) |
//! | anything else | this module's own (regular files, directories, devices, FIFOs) |
//!
//! Each has the signature `pub(super) fn capture(cx: &Cx, e: &mut FileEntry) ->
//! crate::error::Result<Fidelity>`: it sets `e.raw.ftype`, `e.raw.flags`, `e.raw.params`,
//! `e.data`, `e.contents` (with `FILE_HAS_DATA`) as FORMAT.md §15 says for its type, and returns
//! the report line ([`Fidelity`]: `item` is `fd N`, `kind` what it is, the [`Action`] restore
//! will take and, for anything but `Restore`, why). An error fails the checkpoint (the task
//! is left running): return one only when the task cannot be read at all, and describe
//! anything merely unsupported with `Action::Lost` instead. [`Cx`] gives the pid, the fd, the
//! link, the fdinfo, the stat, and every descriptor of the task with its link (a pipe needs to
//! know whether its other end is in the task).
//!
//! After the descriptors come the working directory (`ROLE_CWD`) and the root (`ROLE_ROOT`).
//! The `lock:` lines of each descriptor go to `lock::Capture::fd`, which records the locks
//! and says so on the descriptor's report line.

use super::options::StateOptions;
use super::state::{Action, Fidelity, FileEntry, TaskState};
use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::fdinfo::{parse_fdinfo, FdInfo};
use cr_format::limits::MAX_PATH;
use cr_format::raw;
use std::borrow::Cow;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

mod anon;
mod inotify;
mod lock;
mod pipe;
mod regular;
mod socket;

/// What a per-type capture function is given about one descriptor.
pub(crate) struct Cx<'a> {
    /// The task (frozen, under our ptrace).
    pub pid: i32,
    /// The descriptor number.
    pub fd: i32,
    /// What `/proc/PID/fd/N` links to (`pipe:[123]`, `/tmp/x (deleted)`, ...).
    pub link: &'a [u8],
    /// `/proc/PID/fdinfo/N`, parsed, with its whole text.
    pub info: &'a FdInfo,
    /// The open file's stat (through the magic link).
    pub md: &'a Metadata,
    /// Every descriptor of the task, in increasing order, with its link.
    pub all: &'a [(i32, Vec<u8>)],
    /// The capture's options (`ghost_limit`, ...).
    pub opts: &'a StateOptions,
}

impl Cx<'_> {
    /// The link as text (lossy for non-UTF-8 paths), for messages and prefixes.
    pub fn link_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.link)
    }
    /// `/proc/PID/fd/N`: opening it opens the task's file again (a new open file description).
    pub fn proc_path(&self) -> PathBuf {
        procfs::path(self.pid, &format!("fd/{}", self.fd))
    }
    /// The report line for this descriptor.
    pub fn line(
        &self,
        kind: impl Into<String>,
        action: Action,
        note: impl Into<String>,
    ) -> Fidelity {
        Fidelity {
            item: format!("fd {}", self.fd),
            kind: kind.into(),
            action,
            note: note.into(),
        }
    }
}

/// The descriptor of cr-dump's dirty-tracking userfaultfd in the task, if `--track` armed one
/// (its state file names it).
fn tracking_fd(pid: i32) -> Option<i32> {
    let start = crate::capture::tracking::start_time(pid)?;
    let path = crate::capture::tracking::state_path(pid, start).ok()?;
    crate::capture::tracking::State::load(&path)
        .filter(|s| s.pid == pid && s.start_time == start)
        .map(|s| s.fd)
}

/// The task's descriptors, in increasing order, with their links.
fn list_fds(pid: i32) -> Result<Vec<(i32, Vec<u8>)>> {
    let dir = procfs::path(pid, "fd");
    let rd = std::fs::read_dir(&dir).map_err(|e| procfs::proc_err(pid, "fd", e))?;
    let mut fds = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| procfs::proc_err(pid, "fd", e))?;
        let Some(fd) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        match std::fs::read_link(ent.path()) {
            Ok(l) => fds.push((fd, l.into_os_string().into_encoded_bytes())),
            // Closed since the listing: the task is frozen, so only by us; skip it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(procfs::proc_err(pid, &format!("fd/{fd}"), e)),
        }
    }
    fds.sort_by_key(|f| f.0);
    if fds.len() > cr_format::limits::MAX_FILES as usize {
        return Err(Error::NotCheckpointable {
            pid,
            reason: format!(
                "{} open descriptors, more than an image holds ({})",
                fds.len(),
                cr_format::limits::MAX_FILES
            ),
        });
    }
    Ok(fds)
}

/// The fields every File shares, from the stat.
fn common(fd: u32, role: u16, link: &[u8], md: &Metadata) -> FileEntry {
    let dev = md.dev();
    let rdev = md.rdev();
    let mtime = (md.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(md.mtime_nsec() as u64);
    let mut path = link.to_vec();
    path.truncate(MAX_PATH as usize);
    let raw = raw::File {
        fd: fd.into(),
        role: role.into(),
        ftype: raw::FILE_UNSUPPORTED.into(),
        mode: md.mode().into(),
        inode: md.ino().into(),
        size: md.size().into(),
        mtime_ns: mtime.into(),
        dev_major: libc::major(dev).into(),
        dev_minor: libc::minor(dev).into(),
        rdev_major: libc::major(rdev).into(),
        rdev_minor: libc::minor(rdev).into(),
        dup_of: raw::DUP_NONE.into(),
        ..zerocopy::FromZeros::new_zeroed()
    };
    FileEntry {
        raw,
        path,
        data: Vec::new(),
        contents: Vec::new(),
    }
}

/// The earlier descriptor whose open file description `fd` shares, if any. `Err` with the
/// reason when the kernel cannot compare them (`kcmp` needs `CONFIG_KCMP`).
fn find_dup(
    pid: i32,
    fd: i32,
    e: &FileEntry,
    earlier: &[FileEntry],
) -> std::result::Result<Option<usize>, String> {
    for (i, p) in earlier.iter().enumerate() {
        let same_inode = p.raw.inode == e.raw.inode
            && p.raw.dev_major == e.raw.dev_major
            && p.raw.dev_minor == e.raw.dev_minor;
        if !same_inode || p.raw.dup_of.get() != raw::DUP_NONE {
            continue;
        }
        let pfd = p.raw.fd.get() as i32;
        let same = crate::sys::files::same_open_file(pid, pfd, fd).map_err(|err| {
            format!("whether it shares its open file with fd {pfd} is unknown (kcmp: {err})")
        })?;
        if same {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// The fdinfo and the stat of descriptor `fd` of task `pid`.
fn read_fd(pid: i32, fd: i32) -> Result<(FdInfo, Metadata)> {
    let name = format!("fdinfo/{fd}");
    let text = procfs::read(pid, &name)?;
    let info = parse_fdinfo(
        &String::from_utf8_lossy(&text),
        &format!("/proc/{pid}/{name}"),
    )?;
    let md = std::fs::metadata(procfs::path(pid, &format!("fd/{fd}")))
        .map_err(|e| procfs::proc_err(pid, &format!("fd/{fd}"), e))?;
    Ok((info, md))
}

/// Reads one descriptor; also returns its `lock:` lines.
fn capture_fd(
    pid: i32,
    fd: i32,
    link: &[u8],
    all: &[(i32, Vec<u8>)],
    done: (&[FileEntry], &[Fidelity]),
    opts: &StateOptions,
) -> Result<(FileEntry, Fidelity, Vec<String>)> {
    let (mut info, md) = read_fd(pid, fd)?;
    let locks = std::mem::take(&mut info.locks);
    let mut e = common(fd as u32, raw::ROLE_FD, link, &md);
    e.raw.open_flags = info.flags.into();
    e.raw.fd_flags = u32::from(info.flags & libc::O_CLOEXEC as u32 != 0).into();
    e.raw.pos = info.pos.into();
    let dup = find_dup(pid, fd, &e, done.0);
    let orig = match &dup {
        Ok(Some(i)) => done.0.get(*i).zip(done.1.get(*i)),
        _ => None,
    };
    if let Some((p, orig)) = orig {
        e.raw.dup_of = p.raw.fd;
        e.raw.ftype = p.raw.ftype;
        e.raw.flags = (p.raw.flags.get() & !raw::FILE_HAS_DATA).into();
        e.raw.params = p.raw.params;
        e.path = p.path.clone();
        e.data = p.data.clone();
        // What restore does with the original, it does with this one.
        let line = Fidelity {
            item: format!("fd {fd}"),
            kind: format!("{} (the open file of fd {})", orig.kind, p.raw.fd.get()),
            action: orig.action,
            note: if orig.note.is_empty() {
                String::new()
            } else {
                format!("as for fd {}: {}", p.raw.fd.get(), orig.note)
            },
        };
        return Ok((e, line, Vec::new()));
    }
    if link.len() > MAX_PATH as usize {
        e.raw.ftype = raw::FILE_UNSUPPORTED.into();
        let line = Fidelity {
            item: format!("fd {fd}"),
            kind: format!("{}...", String::from_utf8_lossy(&e.path)),
            action: Action::Lost,
            note: format!("its path is longer than an image holds ({MAX_PATH} bytes)"),
        };
        return Ok((e, line, locks));
    }
    let cx = Cx {
        pid,
        fd,
        link,
        info: &info,
        md: &md,
        all,
        opts,
    };
    let line = if link.starts_with(b"pipe:[") {
        pipe::capture(&cx, &mut e)?
    } else if link.starts_with(b"socket:[") {
        socket::capture(&cx, &mut e)?
    } else if matches!(
        link,
        b"anon_inode:[eventfd]"
            | b"anon_inode:[timerfd]"
            | b"anon_inode:[signalfd]"
            | b"anon_inode:[eventpoll]"
    ) {
        anon::capture(&cx, &mut e)?
    } else if link.starts_with(b"/memfd:") && link.ends_with(b" (deleted)") {
        anon::capture_memfd(&cx, &mut e)?
    } else {
        regular::capture(&cx, &mut e)?
    };
    Ok((e, with_dup_note(line, dup), locks))
}

/// A descriptor whose sharing could not be checked is restored on an open file of its own.
fn with_dup_note(mut line: Fidelity, dup: std::result::Result<Option<usize>, String>) -> Fidelity {
    if let Err(why) = dup {
        if line.action == Action::Restore {
            line.action = Action::Partial;
        }
        if !line.note.is_empty() {
            line.note.push_str("; ");
        }
        line.note.push_str(&why);
    }
    line
}

/// Reads every descriptor, the working directory and the root of the frozen task `pid` into
/// `st.files`, with one report line each in `st.fidelity`.
pub(crate) fn capture(pid: i32, st: &mut TaskState, opts: &StateOptions) -> Result<()> {
    let all = list_fds(pid)?;
    let mut files: Vec<FileEntry> = Vec::with_capacity(all.len() + 2);
    let mut lines: Vec<Fidelity> = Vec::with_capacity(all.len() + 2);
    let (mut ino, mut locks) = (inotify::Capture::default(), lock::Capture::default());
    let mut ino_lines = Vec::new();
    let tracking = tracking_fd(pid);
    for (fd, link) in &all {
        if Some(*fd) == tracking && link.as_slice() == b"anon_inode:[userfaultfd]" {
            // Not the program's: an earlier `--track` checkpoint put it there, and it stays
            // for the next. The restored task is not given it (its own next `--track`
            // checkpoint makes one).
            ino_lines.push((
                *fd as u32,
                Fidelity {
                    item: format!("fd {fd}"),
                    kind: "cr-dump's dirty-tracking userfaultfd (made by a --track checkpoint)"
                        .into(),
                    action: Action::Restore,
                    note: "left out at restore: the program never opened it".into(),
                },
            ));
            continue;
        }
        if link.as_slice() == b"anon_inode:inotify" {
            let (info, md) = read_fd(pid, *fd)?;
            let cx = Cx {
                pid,
                fd: *fd,
                link,
                info: &info,
                md: &md,
                all: &all,
                opts,
            };
            ino_lines.push((*fd as u32, ino.fd(&cx)?));
            continue;
        }
        let (e, mut line, held) = capture_fd(pid, *fd, link, &all, (&files, &lines), opts)?;
        locks.fd(pid, &e, &held, &mut line);
        files.push(e);
        lines.push(line);
    }
    // The report in descriptor order, inotify fds among the others.
    let mut by_fd: Vec<(u32, Fidelity)> = files.iter().map(|f| f.raw.fd.get()).zip(lines).collect();
    by_fd.append(&mut ino_lines);
    by_fd.sort_by_key(|l| l.0);
    st.fidelity.extend(by_fd.into_iter().map(|l| l.1));
    for (role, name) in [(raw::ROLE_CWD, "cwd"), (raw::ROLE_ROOT, "root")] {
        let (e, line) = regular::capture_dir(pid, role, name)?;
        files.push(e);
        st.fidelity.push(line);
    }
    st.files = files;
    st.inotify = ino.entries;
    st.locks = locks.locks;
    Ok(())
}
