//! Capture of inotify fds (FORMAT.md §21, §22): one Inotify record per fd, one InotifyWatch
//! per watch, with the path of the watched object.
//!
//! `/proc/PID/fdinfo/N` of an inotify fd shows each watch: its wd, inode, device (`sdev`),
//! mask and a file handle. The path is found by opening the handle (`open_by_handle_at`, which
//! needs `CAP_DAC_READ_SEARCH`) on a mount of that device and reading the link of what it
//! opened; without the capability, it is looked for in the task's working directory (a
//! bounded search, no symlink followed). The path is then checked to name that very inode. Paths are those of cr-dump's
//! mount namespace. A watch whose path cannot be found (no capability, the object removed, no
//! file handle on that file system) is left out and named in the report; the wd numbers of the
//! others are kept. Events queued and unread at the checkpoint are not kept (the report counts
//! their bytes: `FIONREAD` on a duplicate of the task's fd).

use super::Cx;
use crate::capture::state::{Action, Fidelity, InotifyEntry};
use crate::error::Result;
use crate::sys::fdinfo::{parse_inotify, InotifyLine};
use crate::sys::files as sf;
use cr_format::limits::{MAX_INOTIFY_WATCHES, MAX_PATH};
use cr_format::raw;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The inotify fds of one task, captured one by one.
#[derive(Default)]
pub(crate) struct Capture {
    /// The records so far.
    pub entries: Vec<InotifyEntry>,
    /// A descriptor of a mount of each device met (or why there is none).
    mounts: HashMap<(u32, u32), std::result::Result<OwnedFd, String>>,
    /// The task's working directory, where a watched object is looked for when its handle
    /// cannot be opened (no `CAP_DAC_READ_SEARCH`).
    cwd: Option<PathBuf>,
}

impl Capture {
    /// Captures the inotify fd `cx.fd` and returns its report line.
    pub fn fd(&mut self, cx: &Cx) -> Result<Fidelity> {
        let fd = cx.fd as u32;
        if self.cwd.is_none() {
            self.cwd = std::fs::read_link(crate::procfs::path(cx.pid, "cwd")).ok();
        }
        let mut rec = raw::Inotify {
            fd: fd.into(),
            fd_flags: u32::from(cx.info.flags & libc::O_CLOEXEC as u32 != 0).into(),
            open_flags: cx.info.flags.into(),
            dup_of: raw::NO_DUP.into(),
        };
        for (earlier, _) in &self.entries {
            let efd = earlier.fd.get();
            if earlier.dup_of.get() != raw::NO_DUP {
                continue;
            }
            match sf::same_open_file(cx.pid, efd as i32, cx.fd) {
                Ok(true) => {
                    rec.dup_of = efd.into();
                    self.entries.push((rec, Vec::new()));
                    return Ok(cx.line(
                        format!("inotify (the open file of fd {efd})"),
                        Action::Restore,
                        "",
                    ));
                }
                Ok(false) => {}
                Err(e) => {
                    let note = format!(
                        "whether it shares its inotify instance with fd {efd} is unknown \
                         (kcmp: {e}): restored as an instance of its own"
                    );
                    let line = self.watches(cx, rec)?;
                    return Ok(with_note(line, Action::Partial, note));
                }
            }
        }
        self.watches(cx, rec)
    }

    /// Reads the watches of a (not duplicated) inotify fd.
    fn watches(&mut self, cx: &Cx, rec: raw::Inotify) -> Result<Fidelity> {
        let what = format!("/proc/{}/fdinfo/{}", cx.pid, cx.fd);
        let mut lines = parse_inotify(&cx.info.text, &what)?;
        lines.sort_by_key(|l| l.wd);
        let mut watches = Vec::with_capacity(lines.len());
        // Lost watches by reason, so that one reason (no capability) is said once.
        let mut lost: Vec<(String, Vec<String>)> = Vec::new();
        let mut room = MAX_INOTIFY_WATCHES as usize
            - self
                .entries
                .iter()
                .map(|e| e.1.len())
                .sum::<usize>()
                .min(MAX_INOTIFY_WATCHES as usize);
        for l in &lines {
            let found = if room == 0 {
                Err(format!(
                    "an image holds at most {MAX_INOTIFY_WATCHES} watches"
                ))
            } else {
                self.path_of(l)
            };
            match found {
                Ok(path) => {
                    watches.push((watch(l), path));
                    room -= 1;
                }
                Err(why) => {
                    let w = format!("{} (inode {})", l.wd, l.ino);
                    match lost.iter_mut().find(|x| x.0 == why) {
                        Some(x) => x.1.push(w),
                        None => lost.push((why, vec![w])),
                    }
                }
            }
        }
        let mut notes: Vec<String> = lost
            .into_iter()
            .map(|(why, wds)| match wds.as_slice() {
                [one] => format!("watch {one} is lost: {why}"),
                _ => format!("watches {} are lost: {why}", wds.join(", ")),
            })
            .collect();
        match queued(cx) {
            Ok(0) => {}
            Ok(n) => notes.push(format!(
                "{n} bytes of events queued and unread at the checkpoint are lost"
            )),
            Err(e) => notes.push(format!(
                "events queued and unread at the checkpoint (if any) are lost; their count \
                 is unknown ({e})"
            )),
        }
        let kind = format!("inotify ({} watches)", lines.len());
        self.entries.push((rec, watches));
        let action = if notes.is_empty() {
            Action::Restore
        } else {
            Action::Partial
        };
        Ok(cx.line(kind, action, notes.join("; ")))
    }

    /// The path of a watched object, checked to name its inode.
    fn path_of(&mut self, l: &InotifyLine) -> std::result::Result<Vec<u8>, String> {
        let (htype, bytes) = l
            .handle
            .as_ref()
            .ok_or("its file system gives no file handle, so its path cannot be found")?;
        let dev = l.dev();
        let mount = self
            .mounts
            .entry(dev)
            .or_insert_with(|| mount_of(dev))
            .as_ref()
            .map_err(Clone::clone)?;
        let link = match sf::open_by_handle(mount.as_fd(), *htype, bytes) {
            Ok(obj) => std::fs::read_link(format!("/proc/self/fd/{}", obj.as_raw_fd()))
                .map_err(|e| format!("reading the path of its handle: {e}"))?,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => self
                .cwd
                .as_deref()
                .and_then(|cwd| search(cwd, l.ino, dev))
                .ok_or(
                    "finding its path needs CAP_DAC_READ_SEARCH (it is not within the \
                     task's working directory, where it was looked for)",
                )?,
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                return Err("the watched object no longer exists".into())
            }
            Err(e) => return Err(format!("open_by_handle_at: {e}")),
        };
        let path = link.as_os_str().as_bytes().to_vec();
        if !path.starts_with(b"/") {
            return Err(format!("it has no path ({})", link.display()));
        }
        if path.len() > MAX_PATH as usize {
            return Err(format!(
                "its path is longer than an image holds ({MAX_PATH} bytes)"
            ));
        }
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.ino() == l.ino && (libc::major(m.dev()), libc::minor(m.dev())) == dev => {
                Ok(path)
            }
            Ok(_) => Err(format!(
                "{} is now another file (it was removed)",
                link.display()
            )),
            Err(e) => Err(format!("it has no path any more ({}: {e})", link.display())),
        }
    }
}

/// Most directory entries looked at, and the depth, when a watched object is looked for in
/// the task's working directory (some milliseconds).
const SEARCH_ENTRIES: usize = 20_000;
const SEARCH_DEPTH: usize = 4;

/// A path within `root` (itself included, breadth first, no symlink followed) of the object
/// with inode `ino` on device `dev`.
fn search(root: &std::path::Path, ino: u64, dev: (u32, u32)) -> Option<PathBuf> {
    let is = |m: &std::fs::Metadata| {
        m.ino() == ino && (libc::major(m.dev()), libc::minor(m.dev())) == dev
    };
    if std::fs::symlink_metadata(root).is_ok_and(|m| is(&m)) {
        return Some(root.to_path_buf());
    }
    let mut level = vec![root.to_path_buf()];
    let mut seen = 0;
    for _ in 0..SEARCH_DEPTH {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for ent in rd.flatten() {
                seen += 1;
                if seen > SEARCH_ENTRIES {
                    return None;
                }
                let Ok(m) = std::fs::symlink_metadata(ent.path()) else {
                    continue;
                };
                if is(&m) {
                    return Some(ent.path());
                }
                if m.is_dir() {
                    next.push(ent.path());
                }
            }
        }
        level = next;
    }
    None
}

fn with_note(mut line: Fidelity, action: Action, note: String) -> Fidelity {
    if line.action == Action::Restore {
        line.action = action;
    }
    if !line.note.is_empty() {
        line.note.push_str("; ");
    }
    line.note.push_str(&note);
    line
}

/// The InotifyWatch of one fdinfo line (its path is written beside it).
fn watch(l: &InotifyLine) -> raw::InotifyWatch {
    let (maj, min) = l.dev();
    raw::InotifyWatch {
        wd: l.wd.into(),
        mask: l.mask.into(),
        inode: l.ino.into(),
        dev_major: maj.into(),
        dev_minor: min.into(),
        ..zerocopy::FromZeros::new_zeroed()
    }
}

/// Bytes of events queued on the task's inotify fd (`FIONREAD` on a duplicate of it).
fn queued(cx: &Cx) -> std::io::Result<u32> {
    let pidfd = crate::sys::pidfd_open(cx.pid)?;
    let dup = crate::sys::pidfd_getfd(&pidfd, cx.fd)?;
    sf::unread_bytes(dup.as_fd())
}

/// A descriptor of a mount of device `dev` in cr-dump's mount namespace, the one
/// showing the file system's root if there is one.
fn mount_of(dev: (u32, u32)) -> std::result::Result<OwnedFd, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let want = format!("{}:{}", dev.0, dev.1);
    let mut best: Option<(bool, PathBuf)> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(d), Some(root), Some(point)) = (f.get(2), f.get(3), f.get(4)) else {
            continue;
        };
        if *d != want {
            continue;
        }
        let whole = *root == "/";
        if best.as_ref().is_none_or(|b| !b.0 && whole) {
            best = Some((whole, PathBuf::from(unescape(point))));
        }
    }
    let (_, point) = best.ok_or_else(|| format!("no mount of device {want} is visible"))?;
    // Not O_PATH: open_by_handle_at does not take an O_PATH descriptor (EBADF).
    sf::open_flags(&point, libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(|e| format!("opening the mount {}: {e}", point.display()))
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(s: &str) -> std::ffi::OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|_| c == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match oct {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsStr::from_bytes(&out).to_os_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_mount_points() {
        assert_eq!(super::unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(super::unescape(r"/x\"), "/x\\");
    }
}
