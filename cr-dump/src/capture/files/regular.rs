//! Capture of what is opened by path: regular files (deleted ones with their contents),
//! directories, character devices, named FIFOs; and the working directory and root.

use super::{common, Cx};
use crate::capture::state::{Action, Fidelity, FileEntry};
use crate::error::{Error, Result};
use crate::procfs;
use cr_format::raw;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Major numbers of terminals: the virtual consoles and serial lines (4), `/dev/tty`,
/// `/dev/console`, `/dev/ptmx` (5), the pseudo-terminal slaves (136 to 143).
fn is_tty_major(major: u32) -> bool {
    matches!(major, 4 | 5 | 136..=143)
}

/// The link without the kernel's ` (deleted)` suffix.
fn strip_deleted(link: &[u8]) -> &[u8] {
    link.strip_suffix(b" (deleted)").unwrap_or(link)
}

/// Dispatch of everything not a pipe, socket, anonymous inode or memfd.
pub(super) fn capture(cx: &Cx, e: &mut FileEntry) -> Result<Fidelity> {
    let link = cx.link_str().into_owned();
    let ft = cx.md.file_type();
    if !cx.link.starts_with(b"/") {
        return Ok(cx.line(
            link,
            Action::Lost,
            "this kind of descriptor is not supported",
        ));
    }
    // Locks held are recorded by `lock::Capture::fd`, which adds to this line.
    let mut notes = Vec::new();
    let (kind, action) = if ft.is_file() {
        regular(cx, e, &mut notes)?
    } else if ft.is_dir() {
        e.raw.ftype = raw::FILE_DIR.into();
        (format!("directory {link}"), Action::Restore)
    } else if ft.is_char_device() {
        let rdev = (e.raw.rdev_major.get(), e.raw.rdev_minor.get());
        if rdev == PTMX || (136..=143).contains(&rdev.0) && owns_master(cx) {
            return Ok(cx.line(
                format!("pseudo-terminal {link}"),
                Action::Lost,
                "pseudo-terminal pairs are not supported",
            ));
        }
        e.raw.ftype = raw::FILE_CHR.into();
        if is_tty_major(rdev.0) {
            e.raw.flags = raw::FILE_TTY.into();
            notes.push("attached to restore's terminal".into());
            (format!("terminal {link}"), Action::Restore)
        } else {
            (format!("character device {link}"), Action::Restore)
        }
    } else if ft.is_fifo() {
        return super::pipe::capture_fifo(cx, e);
    } else {
        let k = crate::sys::fs::file_kind(cx.md.mode());
        return Ok(cx.line(format!("{k} {link}"), Action::Lost, "not supported"));
    };
    Ok(cx.line(kind, action, notes.join("; ")))
}

/// `/dev/ptmx`: the master side of a pseudo-terminal.
const PTMX: (u32, u32) = (5, 2);

/// Whether the task holds a pseudo-terminal master (then its slaves are its own, not a
/// terminal restore could stand for).
fn owns_master(cx: &Cx) -> bool {
    cx.all.iter().any(|(_, l)| l.as_slice() == b"/dev/ptmx")
}

/// Whether the file of the descriptor was deleted: the kernel says ` (deleted)` after the
/// path, and the path (without it) no longer names this inode (another hard link may).
fn is_deleted(cx: &Cx) -> bool {
    if !cx.link.ends_with(b" (deleted)") {
        return false;
    }
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(cx.link));
    // A file really named "x (deleted)" is still there.
    !std::fs::symlink_metadata(p).is_ok_and(|m| m.ino() == cx.md.ino() && m.dev() == cx.md.dev())
}

/// A regular file: by path, or with its contents if it was deleted.
fn regular(cx: &Cx, e: &mut FileEntry, notes: &mut Vec<String>) -> Result<(String, Action)> {
    e.raw.ftype = raw::FILE_REG.into();
    let deleted = is_deleted(cx);
    if !deleted {
        return Ok((format!("regular file {}", cx.link_str()), Action::Restore));
    }
    e.path = strip_deleted(cx.link).to_vec();
    let kind = format!("deleted file {}", String::from_utf8_lossy(&e.path));
    let limit = cx.opts.ghost_limit;
    let size = cx.md.size();
    if size > limit {
        e.raw.flags = raw::FILE_DELETED.into();
        notes.push(format!(
            "its contents ({size} bytes) are over the limit for deleted files ({limit} bytes; \
             checkpoint --ghost-limit BYTES raises it)"
        ));
        return Ok((kind, Action::Lost));
    }
    // Opening /proc/PID/fd/N opens the deleted inode itself, readable whatever the task's
    // access mode was.
    let mut f = std::fs::File::open(cx.proc_path())
        .map_err(|err| procfs::proc_err(cx.pid, &format!("fd/{}", cx.fd), err))?;
    let mut buf = Vec::with_capacity(size as usize);
    (&mut f)
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|err| {
            Error::io(
                format!("reading deleted file fd {} of pid {}", cx.fd, cx.pid),
                err,
            )
        })?;
    if buf.len() as u64 > limit {
        e.raw.flags = raw::FILE_DELETED.into();
        notes.push(format!(
            "it grew past the limit for deleted files ({limit} bytes)"
        ));
        return Ok((kind, Action::Lost));
    }
    e.raw.size = (buf.len() as u64).into();
    e.contents = buf;
    e.raw.flags = (raw::FILE_DELETED | raw::FILE_HAS_DATA).into();
    notes.push("recreated as an unlinked file with its contents".into());
    Ok((kind, Action::Restore))
}

/// The working directory (`cwd`) or root (`root`) of `pid`.
pub(super) fn capture_dir(pid: i32, role: u16, name: &str) -> Result<(FileEntry, Fidelity)> {
    let p = procfs::path(pid, name);
    let link = std::fs::read_link(&p).map_err(|e| procfs::proc_err(pid, name, e))?;
    let link = link.into_os_string().into_encoded_bytes();
    let md = std::fs::metadata(&p).map_err(|e| procfs::proc_err(pid, name, e))?;
    let mut e = common(0, role, &link, &md);
    e.raw.ftype = raw::FILE_DIR.into();
    let shown = String::from_utf8_lossy(&link).into_owned();
    let gone = link.ends_with(b" (deleted)")
        && !std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(&link))
            .is_ok_and(|m| m.ino() == md.ino() && m.dev() == md.dev());
    let (action, note) = if gone {
        e.raw.flags = raw::FILE_DELETED.into();
        e.path = strip_deleted(&link).to_vec();
        (
            Action::Lost,
            "the directory was removed: the task gets restore's",
        )
    } else {
        (Action::Restore, "")
    };
    let line = Fidelity {
        item: name.to_string(),
        kind: format!("directory {shown}"),
        action,
        note: note.into(),
    };
    Ok((e, line))
}
