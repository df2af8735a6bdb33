//! userfaultfd ioctls for write-protect dirty tracking, over the kernel's own structs.

use super::check;
use linux_raw_sys::general::{uffdio_api, uffdio_range, uffdio_register, uffdio_writeprotect};
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
