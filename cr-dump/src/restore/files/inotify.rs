//! Restore of inotify fds (FORMAT.md §21, §22).
//!
//! Each instance is made in cr-dump before the fork (`inotify_init1`, inherited by the child
//! and put at its number like any descriptor), and its watches are added there, under the
//! task's file credentials, so that each gets its recorded wd. The kernel hands out wds of an
//! instance in increasing order (`idr_alloc_cyclic`: the last one plus one), so, as CRIU's
//! `fsnotify.c` does, numbers below a recorded wd are used up by adding and removing watches;
//! here on `/dev/null` (some 6 µs each; a directory costs more, the kernel walks its cached
//! children: over 1 ms each for `/tmp` here), then the watch itself is added. Each removal
//! queues an `IN_IGNORED` event; the queue is emptied every few thousand and once every watch
//! is in place (an event of a watched file in those microseconds goes too: the task was not
//! running then anyway). Measured: a restore that skips 20000 wds takes some 0.15 s longer. Every watched path is checked first to still be the captured object (inode and
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

/// Most watches added and removed to reach one wd (a larger gap is refused). Each costs some
/// 6 µs on `/dev/null` (measured here; on a directory the kernel walks its cached children,
/// over 1 ms for a big one), so this is at most half a minute.
const MAX_SKIP: u32 = 1 << 22;

/// Events queued by removals between two reads of the queue: well under the kernel's default
/// `max_queued_events` (16384), so that the queue never overflows (`IN_Q_OVERFLOW`).
const DRAIN_EVERY: u32 = 4096;

/// An instance being filled: the last wd the kernel handed out, and the object used to use
/// up wd numbers (`/dev/null`: no children to walk), unless a watch of the image is on it.
struct Filling<'a> {
    fd: u32,
    ino: BorrowedFd<'a>,
    last: u32,
    filler: Option<&'static Path>,
}

impl Filling<'_> {
    fn io(&self, what: String, e: std::io::Error) -> Error {
        Error::io(format!("fd {} (inotify): {what}", self.fd), e)
    }

    /// Adds and removes a watch: the kernel hands out the next wd.
    fn skip(&mut self, path: &Path, mask: u32, n: &mut u32) -> Result<u32> {
        let got = sf::inotify_add_watch(self.ino, path, mask)
            .map_err(|e| self.io(format!("inotify_add_watch {}", path.display()), e))?;
        let got = u32::try_from(got).unwrap_or(0);
        sf::inotify_rm_watch(self.ino, got as i32)
            .map_err(|e| self.io(format!("inotify_rm_watch {got}"), e))?;
        *n += 1;
        if *n % DRAIN_EVERY == 0 {
            sf::drain(self.ino).map_err(|e| self.io("emptying the event queue".into(), e))?;
        }
        Ok(got)
    }

    /// Adds the watch of `path` so that it gets wd `w.wd`.
    fn place(&mut self, w: &Watch<'_>, path: &Path) -> Result<()> {
        let next = self.last.saturating_add(1);
        let gap = w.wd.checked_sub(next).ok_or_else(|| {
            Error::Other(format!(
                "fd {} (inotify): watch {} of {} comes after watch {} (the image's watches \
                 must be in increasing order)",
                self.fd,
                w.wd,
                path.display(),
                self.last
            ))
        })?;
        if gap > MAX_SKIP {
            return Err(Error::Other(format!(
                "fd {} (inotify): watch {} of {}: reaching that number takes more than \
                 {MAX_SKIP} watches added and removed",
                self.fd,
                w.wd,
                path.display()
            )));
        }
        let mut n = 0;
        while let Some(f) = self.filler.filter(|_| self.last.saturating_add(1) < w.wd) {
            self.last = self.skip(f, libc::IN_ATTRIB, &mut n)?;
        }
        let mask = w.mask | libc::IN_DONT_FOLLOW;
        loop {
            let got = sf::inotify_add_watch(self.ino, path, mask)
                .map_err(|e| self.io(format!("inotify_add_watch {}", path.display()), e))?;
            let got = u32::try_from(got).unwrap_or(0);
            if got == w.wd {
                self.last = got;
                return Ok(());
            }
            if got < next || got > w.wd || n > MAX_SKIP {
                return Err(Error::Other(format!(
                    "fd {} (inotify): adding the watch of {} gave wd {got}, not {} (another \
                     watch of this instance is on the same object)",
                    self.fd,
                    path.display(),
                    w.wd
                )));
            }
            sf::inotify_rm_watch(self.ino, got as i32)
                .map_err(|e| self.io(format!("inotify_rm_watch {got}"), e))?;
            self.last = got;
            n += 1;
        }
    }
}

/// `/dev/null`, unless one of `watches` is on it.
fn filler(watches: &[Watch<'_>]) -> Option<&'static Path> {
    let p = Path::new("/dev/null");
    let m = std::fs::metadata(p).ok()?;
    let dev = (libc::major(m.dev()), libc::minor(m.dev()));
    (!watches.iter().any(|w| w.inode == m.ino() && w.dev == dev)).then_some(p)
}

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
    let mut fill = Filling {
        fd,
        ino: ino.as_fd(),
        last: 0,
        filler: filler(watches),
    };
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
        fill.place(w, path)?;
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
