//! Restore of inotify fds (FORMAT.md §21, §22).
//!
//! Each instance is made in cr-dump before the fork (`inotify_init1`, inherited by the child
//! and put at its number like any descriptor), and its watches are added there, under the
//! task's file credentials, so that each gets its recorded wd. The kernel hands out wds of an
//! instance in increasing order (`idr_alloc_cyclic`), so, as CRIU's `fsnotify.c` does, a watch
//! is added, and removed and added again until the wd it gets is the recorded one. Each
//! removal queues an `IN_IGNORED` event; the queue is emptied once every watch is in place (an
//! event of a watched file in those microseconds goes too: the task was not running then
//! anyway). Every watched path is checked first to still be the captured object (inode and
//! device): a path that is gone or is another object refuses the restore, before the fork,
//! naming it (with `--allow-changed-files`: the watch is left out, or put on the new object,
//! with a warning). Paths are never followed through a symlink in their last component
//! (`IN_DONT_FOLLOW`).

use super::{After, FilePlan, Placed, Prep, Prepared};
use crate::error::{Error, Result};
use crate::sys::files as sf;
use cr_format::raw;
use cr_format::read::Image;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One recorded watch.
pub(super) struct Watch<'a> {
    /// Its wd.
    pub wd: u32,
    /// Its event mask.
    pub mask: u32,
    /// The inode and device (major, minor) of the watched object.
    pub inode: u64,
    /// Its device.
    pub dev: (u32, u32),
    /// Its path.
    pub path: &'a [u8],
}

/// Most watches added and removed to reach one wd (a larger gap is refused: the instance had
/// that many watches added and removed before the checkpoint).
const MAX_SKIP: u32 = 1 << 20;

/// Makes the inotify instance of fd `fd` (status flags `open_flags`) with its watches.
pub(super) fn prepare(
    prep: &Prep<'_>,
    fd: u32,
    open_flags: u32,
    watches: &[Watch<'_>],
) -> Result<Prepared> {
    let io = |what: String, e| Error::io(format!("fd {fd} (inotify): {what}"), e);
    let ino = sf::inotify_init(libc::IN_NONBLOCK).map_err(|e| io("inotify_init1".into(), e))?;
    let mut warnings = Vec::new();
    let mut next = 1u32;
    for w in watches {
        let path = Path::new(OsStr::from_bytes(w.path));
        if let Some(why) = changed(w, path) {
            let msg = format!(
                "fd {fd} (inotify): watch {} of {}: {why}",
                w.wd,
                path.display()
            );
            if !prep.allow_changed() {
                return Err(Error::Other(format!(
                    "{msg}; restore it anyway (without that watch, or on what is there now) \
                     with --allow-changed-files"
                )));
            }
            if std::fs::symlink_metadata(path).is_err() {
                warnings.push(format!("{msg}: the watch is left out"));
                continue;
            }
            warnings.push(format!("{msg}: the watch is put on what is there now"));
        }
        if w.wd < next {
            return Err(Error::Other(format!(
                "fd {fd} (inotify): watch {} of {} comes after watch {} (the image's watches \
                 must be in increasing order)",
                w.wd,
                path.display(),
                next - 1
            )));
        }
        if w.wd - next > MAX_SKIP {
            return Err(Error::Other(format!(
                "fd {fd} (inotify): watch {} of {}: reaching that number takes more than \
                 {MAX_SKIP} watches added and removed",
                w.wd,
                path.display()
            )));
        }
        let mask = w.mask | libc::IN_DONT_FOLLOW;
        loop {
            let got = sf::inotify_add_watch(ino.as_fd(), path, mask)
                .map_err(|e| io(format!("inotify_add_watch {}", path.display()), e))?;
            let got = u32::try_from(got).unwrap_or(0);
            if got == w.wd {
                break;
            }
            if got < next || got > w.wd {
                return Err(Error::Other(format!(
                    "fd {fd} (inotify): adding the watch of {} gave wd {got}, not {} (another \
                     watch of this instance is on the same object)",
                    path.display(),
                    w.wd
                )));
            }
            sf::inotify_rm_watch(ino.as_fd(), got as i32)
                .map_err(|e| io(format!("inotify_rm_watch {got}"), e))?;
        }
        next = w.wd.saturating_add(1);
    }
    // The IN_IGNORED events of the watches removed above.
    sf::drain(ino.as_fd()).map_err(|e| io("emptying the event queue".into(), e))?;
    let status = open_flags as i32 & (libc::O_NONBLOCK | libc::O_ASYNC);
    sf::set_status_flags(ino.as_fd(), status).map_err(|e| io("F_SETFL".into(), e))?;
    let mut p = Prepared::plain(ino);
    p.warnings = warnings;
    Ok(p)
}

/// Why the object at `path` is not the watched one, if it is not.
fn changed(w: &Watch<'_>, path: &Path) -> Option<String> {
    match std::fs::symlink_metadata(path) {
        Err(e) => Some(format!("the watched path is gone ({e})")),
        Ok(m) if m.ino() != w.inode || (libc::major(m.dev()), libc::minor(m.dev())) != w.dev => {
            Some(format!(
                "the path is now another object (inode {} on {}:{}, was inode {} on {}:{})",
                m.ino(),
                libc::major(m.dev()),
                libc::minor(m.dev()),
                w.inode,
                w.dev.0,
                w.dev.1
            ))
        }
        Ok(_) => None,
    }
}

/// Prepares every inotify fd of the image `top` in `fp` above `base` (a duplicate gets its
/// original's instance).
pub(super) fn add_all(
    fp: &mut FilePlan,
    prep: &Prep<'_>,
    top: &Image<'_>,
    base: i32,
) -> Result<()> {
    let first = fp.placed.len();
    for (i, watches) in top.inotify() {
        let target = i.fd.get();
        if fp.placed.iter().any(|p| p.target == target) {
            return Err(Error::Other(format!(
                "fd {target} is both a File and an Inotify record of the image"
            )));
        }
        let dup_of = i.dup_of.get();
        let src = if dup_of != raw::NO_DUP {
            let orig = fp
                .placed
                .get(first..)
                .unwrap_or_default()
                .iter()
                .find(|p| p.target == dup_of)
                .ok_or_else(|| {
                    Error::Other(format!(
                        "fd {target} (inotify): dup_of names fd {dup_of}, not an inotify fd \
                         before it"
                    ))
                })?;
            above(orig.src.as_fd(), base, target)?
        } else {
            let ws: Vec<Watch<'_>> = watches
                .map(|w| Watch {
                    wd: w.raw.wd.get(),
                    mask: w.raw.mask.get(),
                    inode: w.raw.inode.get(),
                    dev: (w.raw.dev_major.get(), w.raw.dev_minor.get()),
                    path: w.path,
                })
                .collect();
            let p = prepare(prep, target, i.open_flags.get(), &ws)?;
            fp.warnings.extend(p.warnings);
            above(p.fd.as_fd(), base, target)?
        };
        fp.placed.push(Placed {
            target,
            src,
            cloexec: i.fd_flags.get() & 1 != 0,
            after: After::None,
        });
    }
    Ok(())
}

fn above(fd: BorrowedFd<'_>, base: i32, target: u32) -> Result<std::os::fd::OwnedFd> {
    sf::dup_above(fd, base).map_err(|e| {
        Error::io(
            format!("fd {target} (inotify): moving it above fd {base}"),
            e,
        )
    })
}
