//! Kernel objects behind file descriptors that are not files: pipes (capacity, unread bytes
//! copied with `tee`), eventfd, timerfd (with `TFD_IOC_SET_TICKS`), signalfd, epoll and memfd
//! (seals). Capture reads them through descriptors cr-dump opens; restore creates them in
//! cr-dump before the fork (the restored task inherits them).

use super::check;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(r)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fcntl_int(fd: &impl AsRawFd, cmd: i32, arg: libc::c_long) -> io::Result<libc::c_long> {
    // SAFETY: these fcntl commands take an integer argument and touch no memory of ours.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) };
    check(r.into())
}

/// `pipe2(O_CLOEXEC | flags)`: (read end, write end).
pub fn pipe(flags: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two ints into the array, which has room for them.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | flags) };
    check(r.into())?;
    // SAFETY: the kernel just returned these two new descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pipe's capacity in bytes (`F_GETPIPE_SZ`).
pub fn pipe_size(fd: &impl AsRawFd) -> io::Result<u64> {
    let r = fcntl_int(fd, libc::F_GETPIPE_SZ, 0)?;
    u64::try_from(r).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Sets a pipe's capacity (`F_SETPIPE_SZ`; the kernel rounds it up to a power-of-two number
/// of pages); returns the capacity it got.
pub fn set_pipe_size(fd: &impl AsRawFd, size: u64) -> io::Result<u64> {
    let arg =
        libc::c_long::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let r = fcntl_int(fd, libc::F_SETPIPE_SZ, arg)?;
    u64::try_from(r).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// The number of unread bytes in a pipe, or the bytes a socket can read (`FIONREAD`).
pub fn unread_bytes(fd: &impl AsRawFd) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int at the pointer, which points at `n`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    check(r.into())?;
    u64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// `tee(from, to, len, SPLICE_F_NONBLOCK)`: copies up to `len` bytes of pipe `from` into pipe
/// `to` without consuming them. Returns the number of bytes copied (0: `from` is empty).
pub fn tee(from: &impl AsRawFd, to: &impl AsRawFd, len: usize) -> io::Result<usize> {
    // SAFETY: tee takes descriptors and integers; it touches no memory of ours.
    let r = unsafe {
        libc::tee(
            from.as_raw_fd(),
            to.as_raw_fd(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    match check(r as libc::c_long) {
        Ok(n) => usize::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidData)),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(0),
        Err(e) => Err(e),
    }
}

/// The poll events `fd` shows right now (`poll` with timeout 0), for the `events` asked (the
/// kernel adds `POLLERR` and `POLLHUP`).
pub fn poll_now(fd: &impl AsRawFd, events: i16) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd, which `p` is.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    check(r.into())?;
    Ok(p.revents)
}

/// The file status flags (`F_GETFL`).
pub fn status_flags(fd: &impl AsRawFd) -> io::Result<i32> {
    let r = fcntl_int(fd, libc::F_GETFL, 0)?;
    i32::try_from(r).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Sets `O_NONBLOCK` on or off (`F_SETFL`), keeping the other status flags.
pub fn set_nonblock(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    let fl = status_flags(fd)?;
    let fl = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    fcntl_int(fd, libc::F_SETFL, fl.into()).map(drop)
}

/// `eventfd(0, EFD_CLOEXEC | flags)`, then `count` added by a write (the counter is 64-bit;
/// the initial value of `eventfd` only 32).
pub fn eventfd(count: u64, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes two integers.
    let fd = owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | flags) }.into())?;
    if count != 0 {
        let b = count.to_ne_bytes();
        // SAFETY: write reads 8 bytes from `b`, which holds 8.
        let r = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), b.len()) };
        check(r as libc::c_long)?;
    }
    Ok(fd)
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// `timerfd_create(clock, TFD_CLOEXEC | flags)`.
pub fn timerfd(clock: i32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes two integers.
    owned(unsafe { libc::timerfd_create(clock, libc::TFD_CLOEXEC | flags) }.into())
}

/// Arms a timerfd, relative: first expiry in `value_ns` (0 disarms), then every
/// `interval_ns`.
pub fn timerfd_arm(fd: &impl AsRawFd, value_ns: u64, interval_ns: u64) -> io::Result<()> {
    let its = libc::itimerspec {
        it_interval: timespec(interval_ns),
        it_value: timespec(value_ns),
    };
    // SAFETY: timerfd_settime reads one itimerspec (`its`) and writes none (null old value).
    let r = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &its, std::ptr::null_mut()) };
    check(r.into()).map(drop)
}

/// Sets the number of expirations a timerfd reports as not yet read (`TFD_IOC_SET_TICKS`,
/// `CONFIG_CHECKPOINT_RESTORE`); `ticks` must not be 0.
pub fn timerfd_set_ticks(fd: &impl AsRawFd, ticks: u64) -> io::Result<()> {
    let req = linux_raw_sys::ioctl::TFD_IOC_SET_TICKS as libc::Ioctl;
    // SAFETY: TFD_IOC_SET_TICKS reads one u64 at the pointer, which points at `ticks`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &ticks as *const u64) };
    check(r.into()).map(drop)
}

/// `signalfd(-1, mask, SFD_CLOEXEC | flags)`: bit n-1 of `mask` is signal n.
pub fn signalfd(mask: u64, flags: i32) -> io::Result<OwnedFd> {
    // The kernel's sigset is the 8 bytes of `mask`; glibc's sigset_t is larger, and
    // signalfd4 is given the kernel's size.
    // SAFETY: signalfd4 reads 8 bytes (its size argument) from `mask`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_signalfd4,
            -1,
            &mask as *const u64,
            8usize,
            libc::SFD_CLOEXEC | flags,
        )
    };
    owned(r)
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes one integer.
    owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }.into())
}

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`.
pub fn memfd(name: &[u8]) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: memfd_create reads the NUL-terminated name, which `name` is.
    let r =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    owned(r.into())
}

/// A memfd's seals (`F_GET_SEALS`).
pub fn seals(fd: &impl AsRawFd) -> io::Result<u64> {
    let r = fcntl_int(fd, libc::F_GET_SEALS, 0)?;
    u64::try_from(r).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Adds seals to a memfd (`F_ADD_SEALS`).
pub fn add_seals(fd: &impl AsRawFd, seals: u64) -> io::Result<()> {
    let arg =
        libc::c_long::try_from(seals).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    fcntl_int(fd, libc::F_ADD_SEALS, arg).map(drop)
}

/// `epoll_ctl(2)`'s number, injected to register descriptors in a restored task's epoll.
pub const NR_EPOLL_CTL: u64 = linux_raw_sys::general::__NR_epoll_ctl as u64;
/// `EPOLL_CTL_ADD`.
pub const EPOLL_CTL_ADD: u64 = libc::EPOLL_CTL_ADD as u64;

/// `struct epoll_event` as x86-64 lays it out (packed: 12 bytes), written into a restored
/// task's memory for an injected `epoll_ctl`.
pub fn epoll_event_bytes(events: u32, data: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&events.to_ne_bytes());
    b[4..].copy_from_slice(&data.to_ne_bytes());
    b
}
const _: () = assert!(std::mem::size_of::<libc::epoll_event>() == 12);
