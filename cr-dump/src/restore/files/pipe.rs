//! Restore of pipes and named FIFOs.
//!
//! A pipe is created once per inode (`pipe2`), with the recorded capacity (`F_SETPIPE_SZ`) and
//! its unread bytes written back, in [`Prep::pipes`]; each File takes the end its access mode
//! names. An end no File takes is closed when the plan is done, before the fork: a pipe whose
//! other end was closed everywhere at the checkpoint is restored so, its reader sees the bytes
//! then end of file. A pipe whose other end was held outside the task
//! ([`raw::PIPE_OTHER_END_OUTSIDE`]) is attached only to what `--inherit-fd` names.
//!
//! A FIFO is opened again by path (by [`super::regular`], which checks it is still the same
//! FIFO). Before that a keeper opens it read-write and non-blocking: the FIFO then has a
//! reader, so a write end opens, and the unread bytes are written back through it, unless
//! the FIFO still holds bytes (someone else kept it open since the checkpoint: they are still
//! there).

use super::{Prep, Prepared};
use crate::error::{Error, Result};
use crate::restore::child::Child;
use crate::sys::fdobj;
use cr_format::raw;
use cr_format::read::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// Work after placement: none (the pipe is complete before the fork).
pub(super) enum After {}

use super::regular::name;

/// Writes `data` into the non-blocking write end `w`: everything must fit (the pipe has the
/// recorded capacity).
fn put_back(f: &File<'_>, w: &OwnedFd, data: &[u8], cap: u64) -> Result<()> {
    let mut out = std::fs::File::from(w.try_clone().map_err(|e| Error::io("dup", e))?);
    out.write_all(data).map_err(|e| {
        Error::io(
            format!(
                "{}: writing its {} unread bytes back into a pipe of {cap} bytes",
                name(f),
                data.len()
            ),
            e,
        )
    })
}

/// Creates the pipe of `f` (capacity, unread bytes) and leaves both ends in `cx.pipes`.
fn create(cx: &mut Prep<'_>, f: &File<'_>, data: &[u8], warnings: &mut Vec<String>) -> Result<()> {
    let direct = f.raw.open_flags.get() as i32 & libc::O_DIRECT;
    let (r, w) = fdobj::pipe(libc::O_NONBLOCK | direct)
        .map_err(|e| Error::io(format!("{}: pipe2", name(f)), e))?;
    let want = f.param(0);
    let mut cap = fdobj::pipe_size(&w).map_err(|e| Error::io("F_GETPIPE_SZ", e))?;
    if want != 0 && want != cap {
        match fdobj::set_pipe_size(&w, want) {
            Ok(got) => cap = got,
            Err(e) => warnings.push(format!(
                "{}: capacity {want} bytes refused ({e}): the pipe holds {cap}",
                name(f)
            )),
        }
    }
    if !data.is_empty() {
        put_back(f, &w, data, cap)?;
    }
    cx.pipes.insert(f.raw.inode.get(), [Some(r), Some(w)]);
    Ok(())
}

/// Creates the open file of `f` in cr-dump: its end of the pipe.
pub(super) fn prepare(cx: &mut Prep, f: &File<'_>, data: &[u8]) -> Result<Prepared> {
    if f.param(1) == raw::PIPE_OTHER_END_OUTSIDE {
        return cx.outside(f, "the other end of this pipe was held outside the task");
    }
    let mut warnings = Vec::new();
    let ino = f.raw.inode.get();
    if !cx.pipes.contains_key(&ino) {
        create(cx, f, data, &mut warnings)?;
    }
    let flags = f.raw.open_flags.get() as i32;
    let end = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => 0,
        libc::O_WRONLY => 1,
        _ => return read_write(cx, f, ino, warnings),
    };
    let fd = cx
        .pipes
        .get_mut(&ino)
        .and_then(|ends| ends.get_mut(end))
        .and_then(Option::take)
        .ok_or_else(|| {
            Error::Other(format!(
                "{}: a second open file of the pipe's {} end (opened again through /proc) is \
                 not restored",
                name(f),
                if end == 0 { "read" } else { "write" }
            ))
        })?;
    fdobj::set_nonblock(&fd, flags & libc::O_NONBLOCK != 0)
        .map_err(|e| Error::io(format!("{}: F_SETFL", name(f)), e))?;
    let mut p = Prepared::plain(fd);
    p.warnings = warnings;
    Ok(p)
}

/// A pipe opened for reading and writing (through `/proc/PID/fd/N`, as only that can): opened
/// the same way, through an end still in `cx.pipes`.
fn read_write(cx: &mut Prep, f: &File<'_>, ino: u64, warnings: Vec<String>) -> Result<Prepared> {
    let any = cx
        .pipes
        .get(&ino)
        .and_then(|ends| ends.iter().flatten().next())
        .ok_or_else(|| {
            Error::Other(format!(
                "{}: a pipe opened for reading and writing after both its ends were taken is \
                 not restored",
                name(f)
            ))
        })?;
    let p = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(any));
    let fd =
        crate::sys::files::open_flags(std::path::Path::new(&p), libc::O_RDWR, 0).map_err(|e| {
            Error::io(
                format!("{}: opening the pipe for reading and writing", name(f)),
                e,
            )
        })?;
    let nonblock = f.raw.open_flags.get() as i32 & libc::O_NONBLOCK != 0;
    fdobj::set_nonblock(&fd, nonblock)
        .map_err(|e| Error::io(format!("{}: F_SETFL", name(f)), e))?;
    let mut p = Prepared::plain(fd);
    p.warnings = warnings;
    Ok(p)
}

/// Prepares a named FIFO: puts its unread bytes back through a keeper, then opens it by path
/// (see the module docs).
pub(super) fn prepare_fifo(cx: &mut Prep, f: &File<'_>, data: &[u8]) -> Result<Prepared> {
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(f.path));
    let keeper = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("opening FIFO {}", name(f)), e))?;
    let md = keeper
        .metadata()
        .map_err(|e| Error::io(format!("fstat of {}", name(f)), e))?;
    if !std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()) {
        return Err(Error::Other(format!("{} is no longer a FIFO", name(f))));
    }
    let mut warnings = Vec::new();
    let same = md.ino() == f.raw.inode.get()
        && (libc::major(md.dev()), libc::minor(md.dev()))
            == (f.raw.dev_major.get(), f.raw.dev_minor.get());
    if !data.is_empty() && !same {
        // Not the captured FIFO: the open below refuses it, or restores it with a warning
        // (--allow-changed-files); the bytes are not handed to whoever holds this one.
        warnings.push(format!(
            "{}: its {} unread bytes are not written into a FIFO that is not the captured one",
            name(f),
            data.len()
        ));
    } else if !data.is_empty() {
        let held = fdobj::unread_bytes(&keeper)
            .map_err(|e| Error::io(format!("FIONREAD of {}", name(f)), e))?;
        if held == 0 {
            let w = OwnedFd::from(keeper.try_clone().map_err(|e| Error::io("dup", e))?);
            let cap = fdobj::pipe_size(&w).unwrap_or(0);
            if f.param(0) > cap {
                let _ = fdobj::set_pipe_size(&w, f.param(0));
            }
            put_back(f, &w, data, f.param(0))?;
        } else {
            warnings.push(format!(
                "{}: the FIFO still holds {held} bytes (kept open by another process): its {} \
                 bytes from the checkpoint are not written again",
                name(f),
                data.len()
            ));
        }
    }
    let mut p = super::regular::prepare(cx, f, data)?;
    p.warnings.extend(warnings);
    drop(keeper);
    Ok(p)
}

/// Runs `work` in the child once `fd` is in place.
pub(super) fn after_placement(_c: &Child, _scratch: u64, _fd: u32, work: &After) -> Result<()> {
    match *work {}
}
