//! `/proc/PID/fdinfo/N`: the offset, open flags, mount and inode of one descriptor, the
//! locks held through it ([`parse_lock`], also for `/proc/locks` lines) and an inotify fd's
//! watches ([`parse_inotify`]).

use crate::error::{Error, Result};

/// One parsed `/proc/PID/fdinfo/N`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// `pos:` the file offset.
    pub pos: u64,
    /// `flags:` the open flags (`O_*`, octal in the file), `O_CLOEXEC` included when the
    /// descriptor has `FD_CLOEXEC`.
    pub flags: u32,
    /// `mnt_id:` the mount the file is on.
    pub mnt_id: u64,
    /// `ino:` the inode number (Linux 5.14 and later; 0 before).
    pub ino: u64,
    /// The `lock:` lines, as the kernel wrote them (`1: POSIX  ADVISORY  WRITE 1234 ...`).
    pub locks: Vec<String>,
    /// The whole text (type-specific lines: `eventfd-count:`, `tfd:`, `sigmask:`, ...).
    pub text: String,
}

impl FdInfo {
    /// The value of the first line `key:` (trimmed), if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .map(str::trim)
        })
    }
}

/// Parses the text of `/proc/PID/fdinfo/N` (`what` names it in errors).
pub fn parse_fdinfo(text: &str, what: &str) -> Result<FdInfo> {
    let mut i = FdInfo {
        text: text.to_string(),
        ..FdInfo::default()
    };
    let bad = |k: &str, v: &str| Error::Proc(format!("{what}: bad {k} value {v:?}"));
    let mut seen = (false, false);
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "pos" => {
                i.pos = v.parse().map_err(|_| bad(k, v))?;
                seen.0 = true;
            }
            "flags" => {
                i.flags = u32::from_str_radix(v, 8).map_err(|_| bad(k, v))?;
                seen.1 = true;
            }
            "mnt_id" => i.mnt_id = v.parse().map_err(|_| bad(k, v))?,
            "ino" => i.ino = v.parse().map_err(|_| bad(k, v))?,
            "lock" => i.locks.push(v.to_string()),
            _ => {}
        }
    }
    if !(seen.0 && seen.1) {
        return Err(Error::Proc(format!("{what}: no pos: or flags: line")));
    }
    Ok(i)
}

/// What kind of lock a `lock:` line (or a `/proc/locks` line) describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// `POSIX`: `fcntl(F_SETLK)`, owned by the process.
    Posix,
    /// `FLOCK`: `flock(2)`, owned by the open file description.
    Flock,
    /// `OFDLCK`: `fcntl(F_OFD_SETLK)`, owned by the open file description.
    Ofd,
    /// `LEASE` or `DELEG`: a lease (`F_SETLEASE`) or an NFS delegation.
    Lease,
    /// Anything else the kernel prints (`ACCESS`: a mandatory lock on old kernels, `UNKNOWN`).
    Other,
}

/// One lock line of the kernel's `lock_get_status`: `1: POSIX  ADVISORY  WRITE 1234
/// 08:01:77 0 EOF` (the `N:` counter and a `->` of a blocked waiter are optional).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockLine {
    /// The kind.
    pub kind: LockKind,
    /// The word after the kind (`ADVISORY`; `MANDATORY` on old kernels; `ACTIVE`, `BREAKING`
    /// or `BREAKER` for a lease).
    pub class: String,
    /// `WRITE` (true) or `READ` (false); `UNLCK` (a lease being broken) is `None`.
    pub write: Option<bool>,
    /// The owner's pid as the kernel shows it (-1 for OFD locks).
    pub pid: i64,
    /// The device of the locked file: major and minor (hexadecimal in the line).
    pub dev: (u32, u32),
    /// Its inode number.
    pub ino: u64,
    /// The first byte locked.
    pub start: u64,
    /// The last byte locked, `None` for `EOF` (to the end of the file and beyond).
    pub end: Option<u64>,
    /// Whether the line is a waiter blocked on a lock (`->` in `/proc/locks`).
    pub blocked: bool,
}

impl LockLine {
    /// The length as `struct flock` takes it (`l_len`): 0 for "to the end", else `end - start + 1`.
    pub fn flock_len(&self) -> u64 {
        self.end
            .map_or(0, |e| e.saturating_sub(self.start).saturating_add(1))
    }
}

impl LockLine {
    /// How the lock reads in messages: `POSIX WRITE bytes 0-99`, `FLOCK READ`.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            LockKind::Posix => "POSIX",
            LockKind::Flock => "FLOCK",
            LockKind::Ofd => "OFD",
            LockKind::Lease => "lease",
            LockKind::Other => "unknown-kind",
        };
        let mode = match self.write {
            Some(true) => "WRITE",
            Some(false) => "READ",
            None => "UNLCK",
        };
        match (self.kind, self.end) {
            (LockKind::Flock | LockKind::Lease, _) => format!("{kind} {mode}"),
            (_, Some(end)) => format!("{kind} {mode} bytes {}-{end}", self.start),
            (_, None) => format!("{kind} {mode} bytes {}-EOF", self.start),
        }
    }
}

/// Parses one lock line (the text after `lock:` in fdinfo, or a line of `/proc/locks`).
pub fn parse_lock(line: &str) -> Option<LockLine> {
    let mut w = line.split_whitespace().peekable();
    let mut blocked = false;
    if w.peek().is_some_and(|t| t.ends_with(':')) {
        w.next();
    }
    if w.peek() == Some(&"->") {
        blocked = true;
        w.next();
    }
    let kind = match w.next()? {
        "POSIX" => LockKind::Posix,
        "FLOCK" => LockKind::Flock,
        "OFDLCK" => LockKind::Ofd,
        "LEASE" | "DELEG" => LockKind::Lease,
        _ => LockKind::Other,
    };
    let class = w.next()?.to_string();
    let write = match w.next()? {
        "WRITE" => Some(true),
        "READ" => Some(false),
        _ => None,
    };
    let pid = w.next()?.parse().ok()?;
    let (dev, ino) = w.next()?.rsplit_once(':')?;
    let (maj, min) = dev.split_once(':')?;
    let dev = (
        u32::from_str_radix(maj, 16).ok()?,
        u32::from_str_radix(min, 16).ok()?,
    );
    let ino = ino.parse().ok()?;
    let start = w.next()?.parse().ok()?;
    let end = match w.next()? {
        "EOF" => None,
        e => Some(e.parse().ok()?),
    };
    Some(LockLine {
        kind,
        class,
        write,
        pid,
        dev,
        ino,
        start,
        end,
        blocked,
    })
}

/// One watch of an inotify fd: an `inotify wd:.. ino:.. sdev:.. mask:.. ignored_mask:..
/// fhandle-bytes:.. fhandle-type:.. f_handle:..` line (every number hexadecimal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InotifyLine {
    /// The watch descriptor.
    pub wd: u32,
    /// The watched inode.
    pub ino: u64,
    /// Its device, as the kernel's `s_dev` (`major << 20 | minor`).
    pub sdev: u32,
    /// The event mask (with `IN_ONESHOT`, `IN_EXCL_UNLINK` as set).
    pub mask: u32,
    /// The file handle's type and bytes (`None` when the file system gives none).
    pub handle: Option<(i32, Vec<u8>)>,
}

impl InotifyLine {
    /// The device as major and minor.
    pub fn dev(&self) -> (u32, u32) {
        (self.sdev >> 20, self.sdev & 0xf_ffff)
    }
}

/// The watches of an inotify fd, from the whole fdinfo text, in the order shown. A line that
/// does not parse is an error (`what` names the file).
pub fn parse_inotify(text: &str, what: &str) -> Result<Vec<InotifyLine>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("inotify ") else {
            continue;
        };
        out.push(
            parse_inotify_line(rest)
                .ok_or_else(|| Error::Proc(format!("{what}: bad inotify line {line:?}")))?,
        );
    }
    Ok(out)
}

fn parse_inotify_line(rest: &str) -> Option<InotifyLine> {
    let field = |k: &str| {
        rest.split_whitespace()
            .find_map(|t| t.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
    };
    let hex32 = |k: &str| field(k).and_then(|v| u32::from_str_radix(v, 16).ok());
    let handle = match (
        hex32("fhandle-bytes"),
        hex32("fhandle-type"),
        field("f_handle"),
    ) {
        (Some(n), Some(t), Some(h)) => {
            let bytes = decode_hex(h)?;
            (bytes.len() == n as usize).then_some(())?;
            Some((t as i32, bytes))
        }
        _ => None,
    };
    Some(InotifyLine {
        wd: hex32("wd")?,
        ino: field("ino").and_then(|v| u64::from_str_radix(v, 16).ok())?,
        sdev: hex32("sdev")?,
        mask: hex32("mask")?,
        handle,
    })
}

fn decode_hex(h: &str) -> Option<Vec<u8>> {
    let b = h.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo() {
        let t = "pos:\t12\nflags:\t02102002\nmnt_id:\t25\nino:\t77\n\
                 lock:\t1: POSIX  ADVISORY  WRITE 99 08:01:77 0 EOF\neventfd-count:  5\n";
        let i = parse_fdinfo(t, "fdinfo").unwrap();
        assert_eq!((i.pos, i.flags, i.mnt_id, i.ino), (12, 0o2102002, 25, 77));
        assert_eq!(i.locks, ["1: POSIX  ADVISORY  WRITE 99 08:01:77 0 EOF"]);
        assert_eq!(i.get("eventfd-count"), Some("5"));
        assert!(parse_fdinfo("pos: x\nflags: 0\n", "f").is_err());
        assert!(parse_fdinfo("mnt_id: 1\n", "f").is_err());
    }

    #[test]
    fn parses_locks() {
        let l = parse_lock("1: POSIX  ADVISORY  WRITE 99 08:01:77 10 19").unwrap();
        assert_eq!(
            (l.kind, l.write, l.pid, l.dev, l.ino),
            (LockKind::Posix, Some(true), 99, (8, 1), 77)
        );
        assert_eq!(
            (l.start, l.end, l.flock_len(), l.blocked),
            (10, Some(19), 10, false)
        );
        let l = parse_lock("2: FLOCK  ADVISORY  READ 5 fd:1a:123 0 EOF").unwrap();
        assert_eq!(
            (l.kind, l.write, l.dev, l.flock_len()),
            (LockKind::Flock, Some(false), (0xfd, 0x1a), 0)
        );
        let l = parse_lock("3: OFDLCK ADVISORY  WRITE -1 00:2a:9 0 EOF").unwrap();
        assert_eq!((l.kind, l.pid), (LockKind::Ofd, -1));
        let l = parse_lock("4: -> POSIX  ADVISORY  WRITE 7 08:01:77 0 EOF").unwrap();
        assert!(l.blocked);
        let l = parse_lock("1: LEASE  ACTIVE    READ 7 08:01:77 0 EOF").unwrap();
        assert_eq!((l.kind, l.class.as_str()), (LockKind::Lease, "ACTIVE"));
        assert!(parse_lock("1: POSIX ADVISORY WRITE x 08:01:77 0 EOF").is_none());
        assert!(parse_lock("").is_none());
    }

    #[test]
    fn parses_inotify() {
        let t = "pos:\t0\nflags:\t02000000\nmnt_id:\t16\nino:\t1057\n\
                 inotify wd:3 ino:1a sdev:800001 mask:fff ignored_mask:0 fhandle-bytes:8 \
                 fhandle-type:1 f_handle:1a000000bd9a4d02\n\
                 inotify wd:4 ino:2 sdev:2a mask:100 ignored_mask:0\n";
        let w = parse_inotify(t, "f").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].wd, w[0].ino, w[0].dev(), w[0].mask),
            (3, 0x1a, (8, 1), 0xfff)
        );
        assert_eq!(w[0].handle.as_ref().unwrap().0, 1);
        assert_eq!(w[0].handle.as_ref().unwrap().1.len(), 8);
        assert_eq!((w[1].dev(), w[1].handle.is_none()), ((0, 0x2a), true));
        assert!(parse_inotify("inotify wd:zz\n", "f").is_err());
        assert!(parse_inotify(
            "inotify wd:1 ino:1 sdev:1 mask:1 fhandle-bytes:4 fhandle-type:1 f_handle:ab\n",
            "f"
        )
        .is_err());
    }
}
