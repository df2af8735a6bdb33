//! userfaultfd ioctls, over the kernel's own structs: write-protect dirty tracking (capture)
//! and missing-page filling (restore).

use super::check;
use linux_raw_sys::general::{
    uffdio_api, uffdio_copy, uffdio_range, uffdio_register, uffdio_writeprotect, uffdio_zeropage,
};
use linux_raw_sys::ioctl;
use std::io;
use std::os::fd::AsRawFd;

/// `UFFD_FEATURE_WP_ASYNC`.
pub const UFFD_FEATURE_WP_ASYNC: u64 = linux_raw_sys::general::UFFD_FEATURE_WP_ASYNC as u64;
const UFFD_API: u64 = linux_raw_sys::general::UFFD_API as u64;
const UFFDIO_REGISTER_MODE_WP: u64 = linux_raw_sys::general::UFFDIO_REGISTER_MODE_WP as u64;
/// `UFFDIO_WRITEPROTECT_MODE_WP` (not in linux-raw-sys).
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;

// The request codes encode the argument's size: these are the structs they were made for.
const _: () = assert!(std::mem::size_of::<uffdio_api>() == 24);
const _: () = assert!(std::mem::size_of::<uffdio_register>() == 32);
const _: () = assert!(std::mem::size_of::<uffdio_writeprotect>() == 24);

/// A userfaultfd ioctl whose argument is `T`, read and written by the kernel.
///
/// # Safety
///
/// `req` must be an ioctl that reads and writes exactly one `T` through its pointer argument.
unsafe fn ioctl_struct<T>(fd: &impl AsRawFd, req: u32, arg: &mut T) -> io::Result<()> {
    // SAFETY: per this function's contract, the kernel accesses one `T`, which `arg` provides,
    // valid and exclusively borrowed for the call; it keeps no pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(req), arg as *mut T) };
    check(libc::c_long::from(r)).map(drop)
}

/// `UFFDIO_API` with `features`; returns the features the kernel granted.
pub fn uffd_api(fd: &impl AsRawFd, features: u64) -> io::Result<u64> {
    let mut a = uffdio_api {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes one struct uffdio_api.
    unsafe { ioctl_struct(fd, ioctl::UFFDIO_API, &mut a)? };
    Ok(a.features)
}

/// `UFFDIO_REGISTER` of `[start, start+len)` in write-protect mode.
pub fn uffd_register_wp(fd: &impl AsRawFd, start: u64, len: u64) -> io::Result<()> {
    let mut a = uffdio_register {
        range: uffdio_range { start, len },
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes one struct uffdio_register.
    unsafe { ioctl_struct(fd, ioctl::UFFDIO_REGISTER, &mut a) }
}

/// `UFFDIO_WRITEPROTECT` of `[start, start+len)`.
pub fn uffd_writeprotect(fd: &impl AsRawFd, start: u64, len: u64) -> io::Result<()> {
    let mut a = uffdio_writeprotect {
        range: uffdio_range { start, len },
        mode: UFFDIO_WRITEPROTECT_MODE_WP,
    };
    // SAFETY: UFFDIO_WRITEPROTECT reads and writes one struct uffdio_writeprotect.
    unsafe { ioctl_struct(fd, ioctl::UFFDIO_WRITEPROTECT, &mut a) }
}

// Missing-page mode (restore: filling a task's memory, lazily or not).

/// `UFFD_FEATURE_EVENT_FORK`: a fork of the registered task hands over a userfaultfd of the
/// child's copy ([`UffdEvent::Fork`]); needs `CAP_SYS_PTRACE` in the caller of `UFFDIO_API`.
pub const UFFD_FEATURE_EVENT_FORK: u64 = linux_raw_sys::general::UFFD_FEATURE_EVENT_FORK as u64;
/// `UFFD_FEATURE_EVENT_REMAP`: `mremap` of a registered range is reported, and the moved range
/// stays registered.
pub const UFFD_FEATURE_EVENT_REMAP: u64 = linux_raw_sys::general::UFFD_FEATURE_EVENT_REMAP as u64;
/// `UFFD_FEATURE_EVENT_REMOVE`: `madvise(MADV_DONTNEED/REMOVE)` of a registered range is reported.
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = linux_raw_sys::general::UFFD_FEATURE_EVENT_REMOVE as u64;
/// `UFFD_FEATURE_EVENT_UNMAP`: `munmap` (and a mapping over) a registered range is reported.
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = linux_raw_sys::general::UFFD_FEATURE_EVENT_UNMAP as u64;
const UFFDIO_REGISTER_MODE_MISSING: u64 =
    linux_raw_sys::general::UFFDIO_REGISTER_MODE_MISSING as u64;

const _: () = assert!(std::mem::size_of::<uffdio_copy>() == 40);
const _: () = assert!(std::mem::size_of::<uffdio_zeropage>() == 32);
const _: () = assert!(std::mem::size_of::<uffdio_range>() == 16);
const _: () = assert!(std::mem::size_of::<linux_raw_sys::general::uffd_msg>() == MSG_LEN);

/// Bytes of one `struct uffd_msg`.
const MSG_LEN: usize = 32;

/// `UFFDIO_REGISTER` of `[start, start+len)` in missing-page mode: a fault on a page that is
/// not there waits for [`uffd_copy`] or [`uffd_zeropage`].
pub fn uffd_register_missing(fd: &impl AsRawFd, start: u64, len: u64) -> io::Result<()> {
    let mut a = uffdio_register {
        range: uffdio_range { start, len },
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes one struct uffdio_register.
    unsafe { ioctl_struct(fd, ioctl::UFFDIO_REGISTER, &mut a) }
}

/// `UFFDIO_COPY` of `src` to `dst` in the registered task (waking whoever waits on those
/// pages): the kernel allocates each missing page and copies into it, no fault in the task.
/// Returns the bytes copied; on an error, also the bytes copied before it (`EEXIST`: the page
/// at `dst + copied` is already there; `ESRCH`/`ENOENT`: the task or the mapping is gone).
pub fn uffd_copy(fd: &impl AsRawFd, dst: u64, src: &[u8]) -> Result<usize, (usize, io::Error)> {
    let mut a = uffdio_copy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: UFFDIO_COPY reads and writes one struct uffdio_copy; the kernel reads
    // `src.len()` bytes at `src` (a live borrowed slice for the whole call) and writes only the
    // registered task's memory and `copy`.
    let r = unsafe { ioctl_struct(fd, ioctl::UFFDIO_COPY, &mut a) };
    let done = usize::try_from(a.copy).unwrap_or(0);
    match r {
        Ok(()) => Ok(src.len()),
        Err(e) => Err((done, e)),
    }
}

/// `UFFDIO_ZEROPAGE` of `[start, start+len)` (waking whoever waits there). On an error, the
/// bytes done before it, as [`uffd_copy`].
pub fn uffd_zeropage(fd: &impl AsRawFd, start: u64, len: u64) -> Result<(), (usize, io::Error)> {
    let mut a = uffdio_zeropage {
        range: uffdio_range { start, len },
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: UFFDIO_ZEROPAGE reads and writes one struct uffdio_zeropage.
    let r = unsafe { ioctl_struct(fd, ioctl::UFFDIO_ZEROPAGE, &mut a) };
    r.map_err(|e| (usize::try_from(a.zeropage).unwrap_or(0), e))
}

/// `UFFDIO_WAKE` of `[start, start+len)`: whoever waits on a page that is there already.
pub fn uffd_wake(fd: &impl AsRawFd, start: u64, len: u64) -> io::Result<()> {
    let a = uffdio_range { start, len };
    // SAFETY: UFFDIO_WAKE reads one struct uffdio_range, which `a` provides for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(ioctl::UFFDIO_WAKE), &a) };
    check(libc::c_long::from(r)).map(drop)
}

/// What a userfaultfd reports (`struct uffd_msg`, decoded).
#[derive(Debug)]
pub enum UffdEvent {
    /// A thread waits for the page at `addr`.
    PageFault {
        /// The faulting address (not rounded to the page).
        addr: u64,
    },
    /// The task forked: `ufd` (ours now, close-on-exec) is a userfaultfd of the child's memory,
    /// registered where the parent's was.
    Fork {
        /// The child's userfaultfd.
        ufd: std::os::fd::OwnedFd,
    },
    /// `mremap` moved `[from, from+len)` to `to`.
    Remap {
        /// Old start.
        from: u64,
        /// New start.
        to: u64,
        /// Length.
        len: u64,
    },
    /// `madvise(DONTNEED/REMOVE)` dropped `[start, end)`: it reads as zero now.
    Remove {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// `[start, end)` was unmapped.
    Unmap {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// An event this code does not ask for.
    Other(u8),
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// Reads the pending messages of a non-blocking userfaultfd into `out` (appended); `Ok(0)`
/// when there is none.
pub fn uffd_read(fd: &impl AsRawFd, out: &mut Vec<UffdEvent>) -> io::Result<usize> {
    use linux_raw_sys::general as k;
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; MSG_LEN * 64];
    // SAFETY: reads at most `buf.len()` bytes into `buf`, a live local buffer.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(0),
            _ => Err(e),
        };
    }
    let n = usize::try_from(n).unwrap_or(0) / MSG_LEN;
    for m in buf.chunks_exact(MSG_LEN).take(n) {
        // struct uffd_msg: u8 event, 7 reserved bytes, then the union at offset 8.
        let ev = m.first().copied().unwrap_or(0);
        out.push(match u32::from(ev) {
            k::UFFD_EVENT_PAGEFAULT => UffdEvent::PageFault { addr: le64(m, 16) },
            k::UFFD_EVENT_FORK => {
                let raw = (le64(m, 8) & 0xffff_ffff) as i32;
                // SAFETY: the kernel installed descriptor `raw` in this process for this event;
                // nothing else owns it.
                let ufd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
                UffdEvent::Fork { ufd }
            }
            k::UFFD_EVENT_REMAP => UffdEvent::Remap {
                from: le64(m, 8),
                to: le64(m, 16),
                len: le64(m, 24),
            },
            k::UFFD_EVENT_REMOVE => UffdEvent::Remove {
                start: le64(m, 8),
                end: le64(m, 16),
            },
            k::UFFD_EVENT_UNMAP => UffdEvent::Unmap {
                start: le64(m, 8),
                end: le64(m, 16),
            },
            _ => UffdEvent::Other(ev),
        });
    }
    Ok(n)
}

/// Waits up to `timeout_ms` (-1: for ever) until one of `fds` is readable; returns whether
/// any is.
pub fn poll_readable(fds: &[&dyn AsRawFd], timeout_ms: i32) -> io::Result<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a live array of `p.len()` pollfd structs for the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(r > 0)
}
