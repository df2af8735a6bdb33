//! Restore of the task's open files, working directory and root (FORMAT.md §15, §16).
//!
//! # How descriptors get into the restored task
//!
//! Before the fork, [`plan`] opens or creates, in cr-dump itself, the open file of every File
//! record and moves it to a descriptor number above every number the image uses
//! (`F_DUPFD_CLOEXEC`; the child never execs). Everything that can be checked is checked then
//! (a regular file must still be the captured one, a device the same device, ...), so a
//! refusal never leaves a process behind. The child inherits those descriptors; after its
//! memory is built, [`place`] injects `dup3(src, target, O_CLOEXEC if FD_CLOEXEC)` for each
//! one, `fchdir` to the working directory (and `chroot` for a root other than ours), closes
//! every other descriptor, then runs each type's after-placement work (what must happen
//! inside the task's own descriptor table: epoll registrations are keyed by number).
//!
//! A File whose `dup_of` names an earlier descriptor gets a duplicate of that one's prepared
//! descriptor: one open file description, one offset, as in the task.
//!
//! # The contract with the per-type modules
//!
//! For each File record of type `FILE_PIPE`, `FILE_SOCKET`, `FILE_EVENTFD`, `FILE_TIMERFD`,
//! `FILE_SIGNALFD`, `FILE_EPOLL` or `FILE_MEMFD` that is not a duplicate and not named by
//! `--inherit-fd`, [`plan`] calls `pipe::prepare`, `socket::prepare` or `anon::prepare`:
//!
//! ```text
//! pub(super) fn prepare(cx: &mut Prep, f: &cr_format::read::File<'_>, data: &[u8])
//!     -> Result<Prepared>
//! ```
//!
//! `data` is the File's contents (its FileData records, concatenated). The function creates
//! the object in cr-dump at any descriptor number (plan moves it above the image's numbers)
//! and returns it in a [`Prepared`], with the work to do after placement (its module's
//! `After` type, wrapped in [`After`]) and warnings (a difference the user should know
//! about). [`Prep::pipes`] holds pipes by inode, so that the two ends of one pipe (two File
//! records) are one pipe: the first `prepare` of an inode creates it and leaves the other end
//! there for the second. For something the image says is outside the task (a pipe's other
//! end, a connected peer) the function returns [`Prep::outside`]: for descriptors 0 to 2
//! that attaches restore's own descriptor of that number (or `/dev/null` with `--detach`)
//! with a warning; for others it is a refusal that names the fd, why, and `--inherit-fd`.
//!
//! Before any of that, descriptors 0 to 2 whose file is restore's own descriptor of the same
//! number (the same device and inode: the same log file, terminal, or pipe) are given
//! restore's (shared, as a shell shares its stdio with its jobs), whatever their type.
//!
//! After placement, each [`After`] is given to its module's
//! `pub(super) fn after_placement(c: &Child, scratch: u64, fd: u32, work: &After) -> Result<()>`
//! (the module's own `After`; `scratch` is 64 KiB of the child's memory for structures passed
//! by pointer; `fd` is the placed number).
//!
//! Inotify fds (Inotify records, no File record) are made with their watches by
//! `inotify::prepare` and placed like the others. The locks (Lock records) are checked, and
//! the flock and OFD ones taken, by `lock::prepare` once every descriptor is prepared; the
//! POSIX ones are taken in the task by `lock::after_placement`, last.

use super::child::Child;
use crate::error::{Error, Result};
use crate::sys::files::{self as sf, nr};
use cr_format::raw;
use cr_format::read::{File, Image};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

mod anon;
mod ghost;
mod inotify;
mod lock;
mod pipe;
mod regular;
mod socket;

/// Where `--inherit-fd` attaches an image descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InheritSource {
    /// `FD=PATH`: a file restore opens (with the recorded access mode).
    Path(PathBuf),
    /// `FD:N`: restore's own descriptor `N`.
    Fd(i32),
}

/// One `--inherit-fd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inherit {
    /// The image's descriptor number.
    pub fd: u32,
    /// What it becomes.
    pub source: InheritSource,
}

/// How restore treats the task's files.
#[derive(Clone, Debug, Default)]
pub struct FileOptions {
    /// Restore a file that changed since the checkpoint (size, mtime) with a warning instead
    /// of refusing.
    pub allow_changed_files: bool,
    /// Image descriptors attached to what the caller names.
    pub inherit: Vec<Inherit>,
    /// Start a new session (`setsid`) instead of staying in restore's process group.
    pub new_session: bool,
    /// Restore connected sockets as sockets whose peer is gone (`--tcp-close`) instead of
    /// refusing.
    pub tcp_close: bool,
}

/// Work a type does in the child after the descriptors are in place.
// The variants are built by the type modules (stubs until the "anon" helper's land).
#[allow(dead_code)]
enum After {
    /// Nothing.
    None,
    /// A pipe's.
    Pipe(pipe::After),
    /// An eventfd's, timerfd's, signalfd's, epoll's or memfd's.
    Anon(anon::After),
    /// A socket's.
    Socket(socket::After),
}

/// One prepared open file.
struct Prepared {
    /// The open file, in cr-dump.
    pub fd: OwnedFd,
    /// What to do once it is in place.
    pub after: After,
    /// Differences the user should know about.
    pub warnings: Vec<String>,
}

impl Prepared {
    /// `fd`, nothing after placement, no warning.
    pub fn plain(fd: OwnedFd) -> Prepared {
        Prepared {
            fd,
            after: After::None,
            warnings: Vec::new(),
        }
    }
}

/// What the per-type `prepare` functions share.
struct Prep<'o> {
    /// Pipes by inode: `[read end, write end]`, each taken by the File that uses it.
    #[allow(dead_code)] // used by pipe.rs (a stub until the "anon" helper's lands)
    pub pipes: HashMap<u64, [Option<OwnedFd>; 2]>,
    opts: &'o FileOptions,
    /// `--detach`: what is not reachable goes to `/dev/null`.
    detach: bool,
    /// The directory of the image (where deleted files go when theirs is gone).
    image_dir: PathBuf,
}

impl Prep<'_> {
    /// The image's descriptor `f` refers to something outside the task (`why`): restore's own
    /// descriptor of the same number for 0 to 2 (`/dev/null` with `--detach`), with a
    /// warning; for any other descriptor a refusal that says so.
    pub fn outside(&self, f: &File<'_>, why: &str) -> Result<Prepared> {
        let fd = f.raw.fd.get();
        if f.role() != raw::ROLE_FD || fd > 2 {
            return Err(Error::Other(format!(
                "fd {fd} ({}): {why}; attach it with --inherit-fd {fd}=PATH or {fd}:N",
                String::from_utf8_lossy(f.path)
            )));
        }
        let (src, what) = match (self.detach, own_fd(fd as i32)) {
            (false, Ok(own)) => (own, format!("restore's own fd {fd}")),
            (false, Err(_)) => (
                devnull()?,
                format!("/dev/null (restore's fd {fd} is closed)"),
            ),
            (true, _) => (devnull()?, "/dev/null (--detach)".to_string()),
        };
        let mut p = Prepared::plain(src);
        p.warnings.push(format!(
            "fd {fd} ({}): {why}: attached to {what}",
            String::from_utf8_lossy(f.path)
        ));
        Ok(p)
    }
    /// Whether a changed file is restored anyway (`--allow-changed-files`).
    pub fn allow_changed(&self) -> bool {
        self.opts.allow_changed_files
    }
}

/// `/dev/null`, read and write.
fn devnull() -> Result<OwnedFd> {
    sf::open_flags(Path::new("/dev/null"), libc::O_RDWR | libc::O_NOCTTY, 0)
        .map_err(|e| Error::io("open /dev/null", e))
}

/// A duplicate of cr-dump's own descriptor `n`.
fn own_fd(n: i32) -> Result<OwnedFd> {
    sf::dup_number(n).map_err(|e| Error::io(format!("restore's own fd {n}"), e))
}

/// One descriptor to put in place.
struct Placed {
    /// The image's number.
    target: u32,
    /// The prepared open file (above every target).
    src: OwnedFd,
    cloexec: bool,
    after: After,
}

/// Everything prepared before the fork.
pub(super) struct FilePlan {
    /// False for an image with no File record (format 1.0): the child keeps 0/1/2 as before.
    pub has_files: bool,
    placed: Vec<Placed>,
    cwd: Option<OwnedFd>,
    root: Option<OwnedFd>,
    new_session: bool,
    /// The POSIX locks the task takes after placement.
    posix_locks: lock::PosixLocks,
    /// What will differ, one line each.
    pub warnings: Vec<String>,
}

/// Opens every file of the image `top` (read from `image`) in cr-dump, above its descriptor
/// numbers, and checks each against what was captured.
pub(super) fn plan(
    image: &Path,
    top: &Image<'_>,
    opts: &FileOptions,
    detach: bool,
) -> Result<FilePlan> {
    let files: Vec<_> = top.files().collect();
    let max_fd = files
        .iter()
        .filter(|(f, _)| f.role() == raw::ROLE_FD)
        .map(|(f, _)| f.raw.fd.get())
        .chain(top.inotify().map(|(i, _)| i.fd.get()))
        .max();
    for i in &opts.inherit {
        if !files
            .iter()
            .any(|(f, _)| f.role() == raw::ROLE_FD && f.raw.fd.get() == i.fd)
        {
            return Err(Error::Other(format!(
                "--inherit-fd {}: the image has no fd {}",
                i.fd, i.fd
            )));
        }
    }
    let base = i32::try_from(max_fd.map_or(3, |m| m.saturating_add(1)).max(3))
        .map_err(|_| Error::Other("descriptor numbers out of range".into()))?;
    sf::raise_nofile(base.saturating_add(2 * files.len() as i32 + 16))
        .map_err(|e| Error::io(format!("raising RLIMIT_NOFILE above fd {base}"), e))?;
    let mut prep = Prep {
        pipes: HashMap::new(),
        opts,
        detach,
        image_dir: image
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let mut fp = FilePlan {
        has_files: !files.is_empty() || top.inotify().next().is_some(),
        placed: Vec::new(),
        cwd: None,
        root: None,
        new_session: opts.new_session,
        posix_locks: lock::PosixLocks::default(),
        warnings: Vec::new(),
    };
    let creds = task_creds(top);
    let _as_task = match &creds {
        Some((uid, gid, groups)) => Some(sf::FsCreds::assume(*uid, *gid, groups).map_err(|e| {
            Error::io(
                format!("taking the task's file credentials (uid {uid} gid {gid})"),
                e,
            )
        })?),
        None => None,
    };
    let why = |e: Error| match &creds {
        Some((uid, gid, _)) => Error::Other(format!(
            "{e} (opened with the checkpointed task's permissions, uid {uid} gid {gid})"
        )),
        None => e,
    };
    let paths: HashMap<u32, String> = files
        .iter()
        .filter(|(f, _)| f.role() == raw::ROLE_FD)
        .map(|(f, _)| (f.raw.fd.get(), String::from_utf8_lossy(f.path).into_owned()))
        .collect();
    for (f, contents) in files {
        let data: Vec<u8> = contents.flat_map(|d| d.bytes.iter().copied()).collect();
        fp.add(&mut prep, &f, &data, base).map_err(why)?;
    }
    inotify::add_all(&mut fp, &prep, top, base).map_err(why)?;
    let locks: Vec<lock::Lock> = top.locks().map(lock::Lock::from_raw).collect();
    let targets: Vec<lock::Target<'_>> = fp
        .placed
        .iter()
        .filter_map(|p| Some((p.target, p.src.as_fd(), paths.get(&p.target)?.clone())))
        .collect();
    fp.posix_locks = lock::prepare(&locks, &targets)?;
    Ok(fp)
}

impl FilePlan {
    /// The prepared open file that goes to the image's descriptor `target`, if any (a
    /// memfd's, for its mappings: `build::join_memfds`).
    pub fn prepared(&self, target: u32) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.placed
            .iter()
            .find(|p| p.target == target)
            .map(|p| p.src.as_fd())
    }

    /// Prepares one File record (a descriptor, the working directory or the root) and moves
    /// what it opened above `base`.
    fn add(&mut self, prep: &mut Prep<'_>, f: &File<'_>, data: &[u8], base: i32) -> Result<()> {
        let above = |fd: OwnedFd, what: &str| {
            sf::dup_above(fd.as_fd(), base)
                .map_err(|e| Error::io(format!("moving {what} above fd {base}"), e))
        };
        match f.role() {
            raw::ROLE_CWD if f.raw.flags.get() & raw::FILE_DELETED != 0 => {
                self.warnings.push(format!(
                    "the working directory {} was removed before the checkpoint: the task \
                     gets restore's",
                    String::from_utf8_lossy(f.path)
                ));
            }
            raw::ROLE_CWD => {
                let (fd, w) = regular::prepare_cwd(prep, f)?;
                self.cwd = Some(above(fd, "the working directory")?);
                self.warnings.extend(w);
            }
            raw::ROLE_ROOT => {
                if let Some(fd) = regular::prepare_root(prep, f)? {
                    self.root = Some(above(fd, "the root")?);
                }
            }
            _ => {
                let target = f.raw.fd.get();
                let inherited = prep.opts.inherit.iter().any(|i| i.fd == target);
                if let Some(why) = lost_at_checkpoint(f).filter(|_| target > 2 && !inherited) {
                    // The checkpoint reported it lost; the task gets it closed.
                    self.warnings.push(format!(
                        "fd {target} ({}): {why}: left closed",
                        String::from_utf8_lossy(f.path)
                    ));
                    return Ok(());
                }
                let p = prepare_fd(prep, self, f, data)?;
                self.warnings.extend(p.warnings);
                self.placed.push(Placed {
                    target,
                    src: above(p.fd, &format!("fd {target}"))?,
                    cloexec: f.raw.fd_flags.get() & 1 != 0,
                    after: p.after,
                });
            }
        }
        Ok(())
    }
}

/// Why the checkpoint already reported `f` lost, if it did: of a kind images cannot describe,
/// or deleted with its contents left out (over `--ghost-limit`).
fn lost_at_checkpoint(f: &File<'_>) -> Option<&'static str> {
    let fl = f.raw.flags.get();
    match f.ftype() {
        raw::FILE_UNSUPPORTED => Some("of a kind images cannot describe"),
        raw::FILE_REG if fl & raw::FILE_DELETED != 0 && fl & raw::FILE_HAS_DATA == 0 => {
            Some("deleted, and its contents were over the checkpoint's --ghost-limit")
        }
        _ => None,
    }
}

/// The file-system credentials files are opened with when root restores another user's task
/// (restore never gives the image's code a file its task could not open): the image's fsuid,
/// fsgid and groups (the Process record's, else the fsgid alone). `None` when we are not
/// root (our own permissions apply) or the task was root.
fn task_creds(top: &Image<'_>) -> Option<(u32, u32, Vec<u32>)> {
    let t = top.task()?;
    let (uid, gid) = (t.uid[3].get(), t.gid[3].get());
    if crate::sys::geteuid() != 0 || uid == 0 {
        return None;
    }
    let groups = match top.process() {
        Some(p) => p.groups.iter().map(|g| g.get()).collect(),
        None => vec![gid],
    };
    Some((uid, gid, groups))
}

/// Prepares one descriptor: a duplicate, an inherited one, or by type.
fn prepare_fd(prep: &mut Prep<'_>, fp: &FilePlan, f: &File<'_>, data: &[u8]) -> Result<Prepared> {
    let fd = f.raw.fd.get();
    if let Some(i) = prep.opts.inherit.iter().find(|i| i.fd == fd) {
        return regular::inherit(f, &i.source);
    }
    let dup_of = f.raw.dup_of.get();
    if dup_of != raw::DUP_NONE {
        let orig = fp
            .placed
            .iter()
            .find(|p| p.target == dup_of)
            .ok_or_else(|| {
                Error::Other(format!("fd {fd}: dup_of names fd {dup_of}, not before it"))
            })?;
        let d = sf::dup_above(orig.src.as_fd(), 0)
            .map_err(|e| Error::io(format!("fd {fd}: duplicating fd {dup_of}"), e))?;
        return Ok(Prepared::plain(d));
    }
    if let Some(own) = regular::same_as_own(f)? {
        return Ok(own);
    }
    let r = match f.ftype() {
        raw::FILE_PIPE => pipe::prepare(prep, f, data),
        raw::FILE_FIFO => pipe::prepare_fifo(prep, f, data),
        raw::FILE_SOCKET => socket::prepare(prep, f, data),
        raw::FILE_EVENTFD
        | raw::FILE_TIMERFD
        | raw::FILE_SIGNALFD
        | raw::FILE_EPOLL
        | raw::FILE_MEMFD => anon::prepare(prep, f, data),
        _ => regular::prepare(prep, f, data),
    };
    // Standard streams whose file is gone or may not be opened by the task's user (a log of
    // whoever started it) get restore's own, as the module docs say; a file that is there but
    // changed is still refused.
    match r {
        Err(Error::Io { context, source })
            if fd <= 2
                && matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
        {
            prep.outside(f, &format!("not reachable ({context}: {source})"))
        }
        r => r,
    }
}

/// Step 9 (files): puts every prepared descriptor at its number in the child, changes to the
/// working directory (and root), closes every other descriptor, then runs the types'
/// after-placement work.
pub(super) fn place(c: &Child, scratch: u64, fp: &FilePlan) -> Result<()> {
    if !fp.has_files {
        return close_from(c, 3, u32::MAX);
    }
    for p in &fp.placed {
        let flags = if p.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        let args = [p.src.as_raw_fd() as u64, p.target.into(), flags, 0, 0, 0];
        c.call_ok(&format!("dup3 to fd {}", p.target), nr::DUP3, args)?;
    }
    if let Some(root) = &fp.root {
        c.call_ok(
            "fchdir to the root",
            nr::FCHDIR,
            [root.as_raw_fd() as u64, 0, 0, 0, 0, 0],
        )?;
        c.write(scratch, b".\0")?;
        c.call_ok("chroot", nr::CHROOT, [scratch, 0, 0, 0, 0, 0])?;
    }
    if let Some(cwd) = &fp.cwd {
        let args = [cwd.as_raw_fd() as u64, 0, 0, 0, 0, 0];
        c.call_ok("fchdir to the working directory", nr::FCHDIR, args)?;
    }
    let mut targets: Vec<u32> = fp.placed.iter().map(|p| p.target).collect();
    targets.sort_unstable();
    let mut next = 0u32;
    for t in targets {
        if t > next {
            close_from(c, next, t - 1)?;
        }
        next = t.saturating_add(1);
    }
    close_from(c, next, u32::MAX)?;
    for p in &fp.placed {
        match &p.after {
            After::None => {}
            After::Pipe(w) => pipe::after_placement(c, scratch, p.target, w)?,
            After::Anon(w) => anon::after_placement(c, scratch, p.target, w)?,
            After::Socket(w) => socket::after_placement(c, scratch, p.target, w)?,
        }
    }
    // Last: closing any descriptor of a file would drop the task's POSIX locks on it.
    lock::after_placement(c, scratch, &fp.posix_locks)?;
    if fp.new_session {
        c.call_ok("setsid", nr::SETSID, [0; 6])?;
    }
    Ok(())
}

/// Closes descriptors `from..=to` of the child (`close_range`, or one by one up to 1024
/// before Linux 5.9).
fn close_from(c: &Child, from: u32, to: u32) -> Result<()> {
    let args = [from.into(), to.into(), 0, 0, 0, 0];
    if c.call(crate::sys::abi::nr::CLOSE_RANGE, args)? < 0 {
        for fd in from..=to.min(1023) {
            c.call(crate::sys::abi::nr::CLOSE, [fd.into(), 0, 0, 0, 0, 0])?;
        }
    }
    Ok(())
}
