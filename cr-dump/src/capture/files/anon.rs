//! Capture of eventfd, timerfd, signalfd and epoll descriptors (from `/proc/PID/fdinfo/N`) and
//! of memfds (name, seals, contents), as FORMAT.md §15 lays out their `params` and data.
//!
//! fdinfo lines read here (Linux 6.x): eventfd `eventfd-count: <hex>`, `eventfd-semaphore:
//! <0|1>`; timerfd `clockid: <n>`, `ticks: <n>`, `settime flags: <octal>`, `it_value: (<s>,
//! <ns>)` (time left), `it_interval: (<s>, <ns>)`; signalfd `sigmask: <hex>`; epoll one `tfd:
//! <fd> events: <hex> data: <hex> pos:<n> ino:<hex> sdev:<hex>` line per registered
//! descriptor.

use super::Cx;
use crate::capture::state::{Action, Fidelity, FileEntry};
use crate::error::{Error, Result};
use crate::procfs;
use cr_format::raw;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use zerocopy::IntoBytes;

fn bad(cx: &Cx, what: &str) -> Error {
    Error::Proc(format!(
        "/proc/{}/fdinfo/{} ({}): no valid {what} line",
        cx.pid,
        cx.fd,
        cx.link_str()
    ))
}

/// The value of `key:` in radix `radix`.
fn num(cx: &Cx, key: &str, radix: u32) -> Result<u64> {
    cx.info
        .get(key)
        .and_then(|v| u64::from_str_radix(v, radix).ok())
        .ok_or_else(|| bad(cx, key))
}

/// A `(<s>, <ns>)` value, in ns.
fn duration(cx: &Cx, key: &str) -> Result<u64> {
    let v = cx.info.get(key).ok_or_else(|| bad(cx, key))?;
    let inner = v
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| bad(cx, key))?;
    let (s, ns) = inner.split_once(',').ok_or_else(|| bad(cx, key))?;
    let s: u64 = s.trim().parse().map_err(|_| bad(cx, key))?;
    let ns: u64 = ns.trim().parse().map_err(|_| bad(cx, key))?;
    Ok(s.saturating_mul(1_000_000_000).saturating_add(ns))
}

/// Describes the eventfd, timerfd, signalfd or epoll instance of `cx.fd` into `e`.
pub(super) fn capture(cx: &Cx, e: &mut FileEntry) -> Result<Fidelity> {
    match cx.link {
        b"anon_inode:[eventfd]" => {
            e.raw.ftype = raw::FILE_EVENTFD.into();
            let count = num(cx, "eventfd-count", 16)?;
            let sem = num(cx, "eventfd-semaphore", 10).unwrap_or(0);
            e.raw.params[0] = count.into();
            e.raw.params[1] = u64::from(sem != 0).into();
            let sem = if sem != 0 { ", semaphore" } else { "" };
            Ok(cx.line(
                format!("eventfd (counter {count}{sem})"),
                Action::Restore,
                "",
            ))
        }
        b"anon_inode:[timerfd]" => timerfd(cx, e),
        b"anon_inode:[signalfd]" => {
            e.raw.ftype = raw::FILE_SIGNALFD.into();
            let mask = num(cx, "sigmask", 16)?;
            e.raw.params[0] = mask.into();
            Ok(cx.line(format!("signalfd (mask {mask:#x})"), Action::Restore, ""))
        }
        b"anon_inode:[eventpoll]" => epoll(cx, e),
        _ => Ok(cx.line(cx.link_str(), Action::Lost, "not supported")),
    }
}

fn timerfd(cx: &Cx, e: &mut FileEntry) -> Result<Fidelity> {
    e.raw.ftype = raw::FILE_TIMERFD.into();
    let clock = num(cx, "clockid", 10)?;
    let ticks = num(cx, "ticks", 10)?;
    let flags = num(cx, "settime flags", 8).unwrap_or(0);
    let value = duration(cx, "it_value")?;
    let interval = duration(cx, "it_interval")?;
    e.raw.params[0] = clock.into();
    e.raw.params[1] = ticks.into();
    e.raw.params[2] = interval.into();
    e.raw.params[3] = value.into();
    let kind = format!(
        "timerfd (clock {clock}, next in {value} ns, every {interval} ns, {ticks} unread ticks)"
    );
    // TFD_TIMER_CANCEL_ON_SET (2): the image keeps the time left, not the absolute time.
    if flags & 2 != 0 {
        return Ok(cx.line(
            kind,
            Action::Partial,
            "armed with TFD_TIMER_CANCEL_ON_SET: restored as a relative timer that a change of \
             the clock does not cancel",
        ));
    }
    Ok(cx.line(kind, Action::Restore, ""))
}

/// One `tfd:` line: (fd, events, data, inode).
fn epoll_line(l: &str) -> Option<(u32, u32, u64, u64)> {
    let mut it = l.split_whitespace();
    let mut next_after = |key: &str| {
        loop {
            let t = it.next()?;
            if let Some(v) = t.strip_prefix(key) {
                // `pos:0` and `ino:c` are written without a space.
                return Some(if v.is_empty() {
                    it.next()?.to_string()
                } else {
                    v.to_string()
                });
            }
        }
    };
    let fd = next_after("tfd:")?.parse().ok()?;
    let events = u32::from_str_radix(&next_after("events:")?, 16).ok()?;
    let data = u64::from_str_radix(&next_after("data:")?, 16).ok()?;
    let ino = u64::from_str_radix(&next_after("ino:")?, 16).ok()?;
    Some((fd, events, data, ino))
}

/// Whether a descriptor with this link is of a kind restore brings back (an epoll entry on
/// one that is left closed could not be registered).
fn restorable_link(link: &[u8]) -> bool {
    match link.strip_prefix(b"anon_inode:") {
        Some(k) => matches!(
            k,
            b"[eventfd]" | b"[timerfd]" | b"[signalfd]" | b"[eventpoll]"
        ),
        None => true,
    }
}

fn epoll(cx: &Cx, e: &mut FileEntry) -> Result<Fidelity> {
    e.raw.ftype = raw::FILE_EPOLL.into();
    let mut entries = Vec::new();
    let mut missing = Vec::new();
    for l in cx.info.text.lines().filter(|l| l.starts_with("tfd:")) {
        let (fd, events, data, ino) = epoll_line(l).ok_or_else(|| bad(cx, "tfd:"))?;
        // The entry is keyed by (file, fd): it is only restorable if that fd still holds
        // that file, and is itself restored.
        let link = cx
            .all
            .iter()
            .find(|(f, _)| i64::from(*f) == i64::from(fd))
            .map(|(_, l)| l.as_slice());
        let same = link.is_some_and(|l| {
            restorable_link(l)
                && (!l.starts_with(b"socket:[")
                    || i32::try_from(fd).is_ok_and(|fd| super::socket::restorable(cx.pid, fd)))
        }) && i32::try_from(fd).is_ok_and(|fd| {
            std::fs::metadata(procfs::path(cx.pid, &format!("fd/{fd}")))
                .is_ok_and(|md| md.ino() == ino)
        });
        if same {
            entries.push(raw::EpollEntry {
                fd: fd.into(),
                events: events.into(),
                data: data.into(),
            });
        } else {
            missing.push(fd.to_string());
        }
    }
    if entries.len() > cr_format::limits::MAX_EPOLL_ENTRIES as usize {
        return Ok(cx.line(
            format!("epoll ({} registered)", entries.len()),
            Action::Lost,
            format!(
                "more registered descriptors than an image holds ({})",
                cr_format::limits::MAX_EPOLL_ENTRIES
            ),
        ));
    }
    e.data = entries.as_bytes().to_vec();
    let kind = format!("epoll ({} registered)", entries.len());
    if missing.is_empty() {
        return Ok(cx.line(kind, Action::Restore, ""));
    }
    Ok(cx.line(
        kind,
        Action::Partial,
        format!(
            "registrations of descriptors {} are not restored: each watches a file that \
             descriptor number no longer holds (closed or replaced), or one of a kind restore \
             leaves closed",
            missing.join(", ")
        ),
    ))
}

/// The name of a memfd from its link `/memfd:NAME (deleted)`.
fn memfd_name(link: &[u8]) -> &[u8] {
    let l = link.strip_prefix(b"/memfd:").unwrap_or(link);
    l.strip_suffix(b" (deleted)").unwrap_or(l)
}

/// Whether the task maps the memfd of `cx.fd` shared (`/proc/PID/maps`, by inode).
fn shared_mapping(cx: &Cx) -> bool {
    let Ok(text) = procfs::read(cx.pid, "maps") else {
        return false;
    };
    procfs::parse_maps(&String::from_utf8_lossy(&text)).is_ok_and(|maps| {
        maps.iter()
            .any(|m| m.shared && m.inode == cx.md.ino() && m.path.starts_with("/memfd:"))
    })
}

/// Describes the memfd of `cx.fd` (name, seals, contents) into `e`.
pub(super) fn capture_memfd(cx: &Cx, e: &mut FileEntry) -> Result<Fidelity> {
    e.raw.ftype = raw::FILE_MEMFD.into();
    let name = String::from_utf8_lossy(memfd_name(cx.link)).into_owned();
    let kind = format!("memfd {name}");
    let size = cx.md.size();
    // The limit of deleted files: a memfd is one.
    let limit = cx.opts.ghost_limit;
    if size > limit {
        return Ok(cx.line(
            kind,
            Action::Lost,
            format!(
                "its contents ({size} bytes) are over the limit ({limit} bytes; checkpoint \
                 --ghost-limit raises it)"
            ),
        ));
    }
    let io =
        |what: &str, err| Error::io(format!("{what} memfd fd {} of pid {}", cx.fd, cx.pid), err);
    // Opening /proc/PID/fd/N opens the memfd itself, readable whatever the task's access mode.
    let mut f = std::fs::File::open(cx.proc_path())
        .map_err(|err| procfs::proc_err(cx.pid, &format!("fd/{}", cx.fd), err))?;
    let seals = crate::sys::fdobj::seals(&f).map_err(|err| io("F_GET_SEALS of", err))?;
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    (&mut f)
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|err| io("reading", err))?;
    if buf.len() as u64 > limit {
        return Ok(cx.line(kind, Action::Lost, "it grew past the limit"));
    }
    e.raw.params[0] = seals.into();
    e.raw.size = (buf.len() as u64).into();
    if !buf.is_empty() {
        e.raw.flags = (e.raw.flags.get() | raw::FILE_HAS_DATA).into();
        e.contents = buf;
    }
    let kind = format!("{kind} ({} bytes, seals {seals:#x})", e.raw.size.get());
    if shared_mapping(cx) {
        // Restore makes the mapping from this memfd (joined by inode): one object again.
        let kind = format!("{kind}, also mapped shared");
        return Ok(cx.line(kind, Action::Restore, ""));
    }
    Ok(cx.line(kind, Action::Restore, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_epoll_lines() {
        // As Linux 6.x writes them (seq_printf "tfd: %8d events: %8x data: %16llx  pos:%lli
        // ino:%lx sdev:%x").
        let l = "tfd:        3 events: 80000019 data:                3  pos:0 ino:c sdev:10";
        assert_eq!(epoll_line(l), Some((3, 0x8000_0019, 3, 0xc)));
        let l = "tfd:       12 events:       19 data: ffffffffffffffff  pos:5 ino:1a2b sdev:f";
        assert_eq!(epoll_line(l), Some((12, 0x19, u64::MAX, 0x1a2b)));
        assert_eq!(epoll_line("tfd: x events: 1 data: 1 pos:0 ino:1"), None);
        assert_eq!(epoll_line("tfd: 3 events: 19"), None);
    }

    #[test]
    fn names_memfds_and_restorable_links() {
        assert_eq!(memfd_name(b"/memfd:cr-test (deleted)"), b"cr-test");
        assert_eq!(memfd_name(b"/memfd:a b"), b"a b");
        assert!(restorable_link(b"anon_inode:[eventfd]"));
        assert!(restorable_link(b"pipe:[12]"));
        assert!(!restorable_link(b"anon_inode:inotify"));
        assert!(!restorable_link(b"anon_inode:[pidfd]"));
    }
}
