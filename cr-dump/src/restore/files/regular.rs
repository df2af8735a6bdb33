//! Restore of what is opened by path: regular files (checked to be the captured ones),
//! deleted files (recreated unlinked, with their contents), directories, character devices,
//! terminals, named FIFOs; the working directory and root; `--inherit-fd`.

use super::{own_fd, Prep, Prepared};
use crate::error::{Error, Result};
use crate::sys::files as sf;
use cr_format::raw;
use cr_format::read::File;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Open flags kept from the recorded ones when a file is opened again: the access mode and
/// the status flags (`O_CREAT`, `O_TRUNC`, `O_EXCL` are never given: the file exists and its
/// contents are what they are).
const KEEP: i32 = libc::O_ACCMODE
    | libc::O_PATH
    | libc::O_APPEND
    | libc::O_DIRECT
    | libc::O_NOATIME
    | libc::O_SYNC
    | libc::O_DSYNC
    | libc::O_LARGEFILE;

/// The flags `F_SETFL` sets once the file is open (`O_NONBLOCK` is always given to `open`,
/// so that a FIFO never blocks it, and set to the recorded value here).
const STATUS: i32 =
    libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;

fn path_of<'a>(f: &File<'a>) -> &'a Path {
    Path::new(OsStr::from_bytes(f.path))
}

/// `fd 3 (/x/y)` or `cwd (/x)`, for messages.
pub(super) fn name(f: &File<'_>) -> String {
    let what = match f.role() {
        raw::ROLE_CWD => "cwd".to_string(),
        raw::ROLE_ROOT => "root".to_string(),
        _ => format!("fd {}", f.raw.fd.get()),
    };
    format!("{what} ({})", path_of(f).display())
}

fn mtime_ns(md: &Metadata) -> u64 {
    (md.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(md.mtime_nsec() as u64)
}

/// What differs between the file now (`md`) and the record; `content` also compares size
/// and mtime (regular files), else only the identity (device and inode).
fn changes(f: &File<'_>, md: &Metadata, content: bool) -> Vec<String> {
    let r = f.raw;
    let mut d = Vec::new();
    let dev = (libc::major(md.dev()), libc::minor(md.dev()));
    if dev != (r.dev_major.get(), r.dev_minor.get()) {
        d.push(format!(
            "device {}:{} (was {}:{})",
            dev.0,
            dev.1,
            r.dev_major.get(),
            r.dev_minor.get()
        ));
    }
    if md.ino() != r.inode.get() {
        d.push(format!("inode {} (was {})", md.ino(), r.inode.get()));
    }
    if content && md.size() != r.size.get() {
        d.push(format!("size {} (was {})", md.size(), r.size.get()));
    }
    if content && mtime_ns(md) != r.mtime_ns.get() {
        d.push(format!(
            "mtime {} ns (was {})",
            mtime_ns(md),
            r.mtime_ns.get()
        ));
    }
    d
}

/// Refuses (or, with `--allow-changed-files`, warns about) a file that is not the captured
/// one.
fn check_same(
    cx: &Prep<'_>,
    f: &File<'_>,
    md: &Metadata,
    content: bool,
    p: &mut Prepared,
) -> Result<()> {
    let d = changes(f, md, content);
    if d.is_empty() {
        return Ok(());
    }
    let msg = format!("{} changed since the checkpoint: {}", name(f), d.join(", "));
    if cx.allow_changed() {
        p.warnings
            .push(format!("{msg} (restored anyway: --allow-changed-files)"));
        Ok(())
    } else {
        Err(Error::Other(format!(
            "{msg}; refused before anything starts (restore --allow-changed-files restores it \
             anyway)"
        )))
    }
}

/// Opens `path` again with the recorded flags (minus create/truncate), never following a
/// symlink in the last component, never blocking on a FIFO, then sets the recorded status
/// flags and offset.
fn reopen(f: &File<'_>, path: &Path, extra: i32) -> Result<(OwnedFd, Metadata)> {
    let rec = f.raw.open_flags.get() as i32;
    let flags = (rec & KEEP) | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK | extra;
    let fd = match sf::open_flags(path, flags, 0) {
        // O_NOATIME needs the file's owner: the restored file is as good without it.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && rec & libc::O_NOATIME != 0 => {
            sf::open_flags(path, flags & !libc::O_NOATIME, 0)
        }
        r => r,
    };
    let fd = fd.map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => Error::Other(format!(
            "{}: the path is now a symbolic link (not followed)",
            name(f)
        )),
        _ => Error::io(format!("opening {}", name(f)), e),
    })?;
    let md = std::fs::File::from(fd.try_clone().map_err(|e| Error::io("dup", e))?)
        .metadata()
        .map_err(|e| Error::io(format!("fstat of {}", name(f)), e))?;
    Ok((fd, md))
}

/// Sets the recorded status flags (`O_NONBLOCK` included) and offset of `fd`.
fn finish(f: &File<'_>, fd: &OwnedFd, seek: bool) -> Result<()> {
    let rec = f.raw.open_flags.get() as i32;
    if rec & libc::O_PATH != 0 {
        // A path-only descriptor has neither status flags nor an offset.
        return Ok(());
    }
    sf::set_status_flags(fd.as_fd(), rec & STATUS)
        .map_err(|e| Error::io(format!("F_SETFL on {}", name(f)), e))?;
    if seek && f.raw.pos.get() != 0 {
        sf::seek_to(fd.as_fd(), f.raw.pos.get())
            .map_err(|e| Error::io(format!("seeking {} to {}", name(f), f.raw.pos.get()), e))?;
    }
    Ok(())
}

/// Prepares a File opened by path (or recreated, if deleted).
pub(super) fn prepare(cx: &mut Prep<'_>, f: &File<'_>, data: &[u8]) -> Result<Prepared> {
    let fl = f.raw.flags.get();
    if fl & raw::FILE_TTY != 0 {
        return tty(cx, f);
    }
    match f.ftype() {
        raw::FILE_REG if fl & raw::FILE_DELETED != 0 => super::ghost::prepare(cx, f, data),
        raw::FILE_REG => {
            let (fd, md) = reopen(f, path_of(f), 0)?;
            let mut p = Prepared::plain(fd);
            if !md.file_type().is_file() {
                return Err(Error::Other(format!(
                    "{} is now a {}, not a regular file",
                    name(f),
                    crate::sys::fs::file_kind(md.mode())
                )));
            }
            check_same(cx, f, &md, true, &mut p)?;
            finish(f, &p.fd, true)?;
            Ok(p)
        }
        raw::FILE_DIR => {
            let (fd, md) = reopen(f, path_of(f), libc::O_DIRECTORY)?;
            let mut p = Prepared::plain(fd);
            check_same(cx, f, &md, false, &mut p)?;
            finish(f, &p.fd, false)?;
            // The position of a listing in progress: a cookie of the file system's
            // (tmpfs, ext4 and most keep them valid while the directory is unchanged).
            let pos = f.raw.pos.get();
            if pos != 0 && f.raw.open_flags.get() as i32 & libc::O_PATH == 0 {
                if let Err(e) = sf::seek_to(p.fd.as_fd(), pos) {
                    p.warnings.push(format!(
                        "{}: the listing position {pos} could not be restored ({e}): a                          listing in progress starts again",
                        name(f)
                    ));
                }
            }
            Ok(p)
        }
        raw::FILE_CHR => {
            let (fd, md) = reopen(f, path_of(f), 0)?;
            let want = (f.raw.rdev_major.get(), f.raw.rdev_minor.get());
            let got = (libc::major(md.rdev()), libc::minor(md.rdev()));
            if !md.file_type().is_char_device() || got != want {
                return Err(Error::Other(format!(
                    "{} is no longer character device {}:{} (now {} {}:{})",
                    name(f),
                    want.0,
                    want.1,
                    crate::sys::fs::file_kind(md.mode()),
                    got.0,
                    got.1
                )));
            }
            let p = Prepared::plain(fd);
            finish(f, &p.fd, false)?;
            Ok(p)
        }
        raw::FILE_FIFO => {
            let (fd, md) = reopen(f, path_of(f), 0).map_err(|e| match e {
                Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENXIO) => {
                    Error::Other(format!(
                        "{}: the FIFO has no reader now, so it cannot be opened for writing",
                        name(f)
                    ))
                }
                e => e,
            })?;
            let mut p = Prepared::plain(fd);
            if !md.file_type().is_fifo() {
                return Err(Error::Other(format!("{} is no longer a FIFO", name(f))));
            }
            check_same(cx, f, &md, false, &mut p)?;
            finish(f, &p.fd, false)?;
            Ok(p)
        }
        raw::FILE_UNSUPPORTED => cx.outside(f, "of a kind images cannot describe"),
        t => cx.outside(
            f,
            &format!("a descriptor of a kind this cr-dump cannot restore (type {t})"),
        ),
    }
}

/// For fds 0 to 2: restore's own descriptor of that number if it is the very file of the
/// image (the same device and inode, e.g. the same log or terminal), shared as a shell shares
/// its stdio with its jobs.
/// Only for types whose inode names one object (every eventfd, timerfd, ... shares one
/// anonymous inode).
pub(super) fn same_as_own(f: &File<'_>) -> Result<Option<Prepared>> {
    let fd = f.raw.fd.get();
    let by_inode = matches!(
        f.ftype(),
        raw::FILE_REG
            | raw::FILE_DIR
            | raw::FILE_CHR
            | raw::FILE_FIFO
            | raw::FILE_PIPE
            | raw::FILE_SOCKET
    );
    if !by_inode || f.role() != raw::ROLE_FD || fd > 2 || f.raw.flags.get() & raw::FILE_DELETED != 0
    {
        return Ok(None);
    }
    let Ok(own) = own_fd(fd as i32) else {
        return Ok(None);
    };
    let md = std::fs::File::from(own.try_clone().map_err(|e| Error::io("dup", e))?)
        .metadata()
        .map_err(|e| Error::io(format!("fstat of restore's fd {fd}"), e))?;
    if changes(f, &md, false).is_empty() {
        return Ok(Some(Prepared::plain(own)));
    }
    Ok(None)
}

/// A terminal: attached to restore's terminal (its descriptor of the same number if that is
/// a terminal, else the first of its 0 to 2 that is), as a shell job; `/dev/null` with
/// `--detach` when restore has none.
fn tty(cx: &Prep<'_>, f: &File<'_>) -> Result<Prepared> {
    let fd = f.raw.fd.get();
    let mut order: Vec<i32> = vec![0, 1, 2];
    if fd <= 2 {
        order.retain(|&n| n != fd as i32);
        order.insert(0, fd as i32);
    }
    for n in order {
        if let Ok(own) = own_fd(n) {
            if sf::is_tty(own.as_fd()) {
                let mut p = Prepared::plain(own);
                if n != fd as i32 {
                    p.warnings.push(format!(
                        "{}: a terminal, attached to restore's terminal (its fd {n})",
                        name(f)
                    ));
                }
                return Ok(p);
            }
        }
    }
    cx.outside(f, "it was a terminal and restore has none")
}

/// `--inherit-fd`: the image's descriptor `f` becomes what the caller names.
pub(super) fn inherit(f: &File<'_>, src: &super::InheritSource) -> Result<Prepared> {
    match src {
        super::InheritSource::Fd(n) => own_fd(*n).map(Prepared::plain),
        super::InheritSource::Path(p) => {
            // The caller named this path: it is followed as given, but never waits on a FIFO.
            let rec = f.raw.open_flags.get() as i32;
            let flags = (rec & KEEP) | libc::O_NOCTTY | libc::O_NONBLOCK;
            let fd = sf::open_flags(p, flags, 0).map_err(|e| {
                Error::io(
                    format!("--inherit-fd {}={}", f.raw.fd.get(), p.display()),
                    e,
                )
            })?;
            finish(f, &fd, false)?;
            Ok(Prepared::plain(fd))
        }
    }
}

/// The working directory, opened and checked.
pub(super) fn prepare_cwd(cx: &Prep<'_>, f: &File<'_>) -> Result<(OwnedFd, Vec<String>)> {
    let (fd, md) = reopen(f, path_of(f), libc::O_DIRECTORY)?;
    let mut p = Prepared::plain(fd);
    check_same(cx, f, &md, false, &mut p)?;
    Ok((p.fd, p.warnings))
}

/// The root: nothing to do if it is ours; else opened for a `chroot`, which needs
/// `CAP_SYS_CHROOT` (refused without it: the task would see more of the file system than it
/// did).
pub(super) fn prepare_root(cx: &Prep<'_>, f: &File<'_>) -> Result<Option<OwnedFd>> {
    let ours = std::fs::metadata("/").map_err(|e| Error::io("stat /", e))?;
    if changes(f, &ours, false).is_empty() {
        return Ok(None);
    }
    if !sf::can_chroot() {
        return Err(Error::Other(format!(
            "the task's root directory was {} (not this process's root): restoring it needs \
             chroot, which needs CAP_SYS_CHROOT, and cr-dump does not have it (run restore as \
             root, or inside the same root)",
            path_of(f).display()
        )));
    }
    let (fd, md) = reopen(f, path_of(f), libc::O_DIRECTORY)?;
    let mut p = Prepared::plain(fd);
    check_same(cx, f, &md, false, &mut p)?;
    Ok(Some(p.fd))
}
