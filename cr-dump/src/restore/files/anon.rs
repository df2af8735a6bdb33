//! Restore of eventfd, timerfd, signalfd, epoll and memfd descriptors: each is created in
//! cr-dump with its recorded state; an epoll instance's registrations are made in the child
//! after placement (epoll keys them by descriptor number, which only the task's own table
//! has).
//!
//! - eventfd: the counter (written after creation: `eventfd`'s initial value is 32-bit),
//!   `EFD_SEMAPHORE`;
//! - timerfd: the clock, armed with the time that was left and the interval (relative: an
//!   absolute `TFD_TIMER_ABSTIME` timer is as far away as it was); expirations not yet read
//!   are set with `TFD_IOC_SET_TICKS` so the task reads them (a periodic timer captured
//!   expired and unread is armed one interval ahead);
//! - signalfd: the mask;
//! - memfd: the name, the contents, the size, the offset, then the seals (last: a write seal
//!   would refuse the contents);
//! - `O_NONBLOCK` and the other status flags as recorded.

use super::{Prep, Prepared};
use crate::error::{Error, Result};
use crate::restore::child::Child;
use crate::sys::{fdobj, files as sf};
use cr_format::raw;
use cr_format::read::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

/// Work after placement.
pub(super) enum After {
    /// An epoll instance's interest list, registered by injected `epoll_ctl`.
    Epoll(Vec<raw::EpollEntry>),
}

use super::regular::name;

/// Creates the open file of `f` in cr-dump.
pub(super) fn prepare(_cx: &mut Prep, f: &File<'_>, data: &[u8]) -> Result<Prepared> {
    let rec = f.raw.open_flags.get() as i32;
    let nonblock = rec & libc::O_NONBLOCK;
    let io = |what: &str, e| Error::io(format!("{}: {what}", name(f)), e);
    let p = match f.ftype() {
        raw::FILE_EVENTFD => {
            let sem = if f.param(1) != 0 {
                libc::EFD_SEMAPHORE
            } else {
                0
            };
            let fd = fdobj::eventfd(f.param(0), sem | nonblock)
                .map_err(|e| io(&format!("eventfd with counter {}", f.param(0)), e))?;
            Prepared::plain(fd)
        }
        raw::FILE_TIMERFD => Prepared::plain(timerfd(f, nonblock)?),
        raw::FILE_SIGNALFD => {
            let fd = fdobj::signalfd(f.param(0), nonblock)
                .map_err(|e| io(&format!("signalfd with mask {:#x}", f.param(0)), e))?;
            Prepared::plain(fd)
        }
        raw::FILE_EPOLL => {
            let fd = fdobj::epoll().map_err(|e| io("epoll_create1", e))?;
            fdobj::set_nonblock(&fd, nonblock != 0).map_err(|e| io("F_SETFL", e))?;
            Prepared {
                fd,
                after: super::After::Anon(After::Epoll(f.epoll().to_vec())),
                warnings: Vec::new(),
            }
        }
        raw::FILE_MEMFD => Prepared::plain(memfd(f, data)?),
        t => {
            return Err(Error::Other(format!(
                "{}: type {t} is not an eventfd, timerfd, signalfd, epoll or memfd",
                name(f)
            )))
        }
    };
    Ok(p)
}

/// A timerfd with its clock, time left, interval and unread expirations.
fn timerfd(f: &File<'_>, nonblock: i32) -> Result<OwnedFd> {
    let io = |what: &str, e| Error::io(format!("{}: {what}", name(f)), e);
    let clock = i32::try_from(f.param(0))
        .map_err(|_| Error::Other(format!("{}: clock {}", name(f), f.param(0))))?;
    let (ticks, interval, mut value) = (f.param(1), f.param(2), f.param(3));
    let fd = fdobj::timerfd(clock, nonblock).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EPERM) => " (an alarm clock needs CAP_WAKE_ALARM)",
            _ => "",
        };
        io(&format!("timerfd_create on clock {clock}{why}"), e)
    })?;
    if value == 0 && ticks > 0 && interval > 0 {
        // Expired and not read yet: the kernel forwards such a timer only when it is read.
        value = interval;
    }
    if value != 0 {
        fdobj::timerfd_arm(&fd, value, interval).map_err(|e| {
            io(
                &format!("timerfd_settime in {value} ns, every {interval} ns"),
                e,
            )
        })?;
    }
    if ticks > 0 {
        fdobj::timerfd_set_ticks(&fd, ticks).map_err(|e| {
            io(
                &format!("TFD_IOC_SET_TICKS {ticks} (needs CONFIG_CHECKPOINT_RESTORE)"),
                e,
            )
        })?;
    }
    Ok(fd)
}

/// The name of a memfd from its path `/memfd:NAME (deleted)`.
fn memfd_name(path: &[u8]) -> &[u8] {
    let l = path.strip_prefix(b"/memfd:").unwrap_or(path);
    l.strip_suffix(b" (deleted)").unwrap_or(l)
}

/// A memfd with its name, contents, size, offset, seals and access mode.
fn memfd(f: &File<'_>, data: &[u8]) -> Result<OwnedFd> {
    let io = |what: &str, e| Error::io(format!("{}: {what}", name(f)), e);
    let fd = fdobj::memfd(memfd_name(f.path)).map_err(|e| io("memfd_create", e))?;
    let mut w = std::fs::File::from(fd.try_clone().map_err(|e| io("dup", e))?);
    w.write_all(data)
        .map_err(|e| io("writing the contents", e))?;
    let size = f.raw.size.get();
    if size != data.len() as u64 {
        w.set_len(size)
            .map_err(|e| io(&format!("ftruncate to {size}"), e))?;
    }
    // The access mode: memfd_create gives read-write; another mode is a new open of the same
    // file (as the task's was, through /proc).
    let rec = f.raw.open_flags.get() as i32;
    let fd = match rec & libc::O_ACCMODE {
        libc::O_RDWR => fd,
        mode => {
            let p = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            sf::open_flags(std::path::Path::new(&p), mode, 0)
                .map_err(|e| io("opening the memfd again with its access mode", e))?
        }
    };
    let pos = f.raw.pos.get();
    if pos != 0 {
        sf::seek_to(fd.as_fd(), pos).map_err(|e| io(&format!("seeking to {pos}"), e))?;
    }
    let status = libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_NOATIME;
    sf::set_status_flags(fd.as_fd(), rec & status).map_err(|e| io("F_SETFL", e))?;
    let seals = f.param(0);
    if seals != 0 {
        fdobj::add_seals(&fd, seals).map_err(|e| io(&format!("F_ADD_SEALS {seals:#x}"), e))?;
    }
    Ok(fd)
}

/// Runs `work` in the child once `fd` is in place: an epoll's registrations.
pub(super) fn after_placement(c: &Child, scratch: u64, fd: u32, work: &After) -> Result<()> {
    match work {
        After::Epoll(entries) => {
            for e in entries {
                let (tfd, events) = (e.fd.get(), e.events.get());
                c.write(scratch, &fdobj::epoll_event_bytes(events, e.data.get()))?;
                let args = [fd.into(), fdobj::EPOLL_CTL_ADD, tfd.into(), scratch, 0, 0];
                let what = format!("epoll fd {fd}: epoll_ctl(ADD) of fd {tfd}, events {events:#x}");
                c.call_ok(&what, fdobj::NR_EPOLL_CTL, args)?;
            }
            Ok(())
        }
    }
}
