//! `/proc/PID/fdinfo/N`: the offset, open flags, mount and inode of one descriptor, and the
//! locks held through it.

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
}
