//! The one place with raw system calls: ptrace, waitpid, process_vm_readv, kill, flock, mmap.
//!
//! Every function here is a thin, safe wrapper that returns `io::Result`; every `unsafe` block
//! carries a `// SAFETY:` argument. Nothing else in the crate uses `unsafe`.

pub mod procfs;

use std::io;
use std::os::fd::AsRawFd;

/// `NT_PRSTATUS`: general registers (`user_regs_struct`).
pub const NT_PRSTATUS: u32 = 1;
/// `NT_PRFPREG`: the FXSAVE area.
pub const NT_PRFPREG: u32 = 2;
/// `NT_X86_XSTATE`: the XSAVE area.
pub const NT_X86_XSTATE: u32 = 0x202;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `PTRACE_SEIZE` with no options: the tracee is not stopped, and is released (not killed) if
/// the tracer dies.
pub fn ptrace_seize(pid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE takes no pointers (addr and data are 0: no options).
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(r).map(drop)
}

/// `PTRACE_INTERRUPT`: ask a seized tracee to stop.
pub fn ptrace_interrupt(pid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_INTERRUPT takes no pointers.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_INTERRUPT,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(r).map(drop)
}

/// `PTRACE_CONT` with signal `sig` (0 for none).
pub fn ptrace_cont(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: PTRACE_CONT takes the signal number as an integer in `data`; no memory is accessed.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_CONT,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as libc::c_long as *mut libc::c_void,
        )
    };
    check(r).map(drop)
}

/// `PTRACE_DETACH`, delivering `sig` (0 for none).
pub fn ptrace_detach(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: PTRACE_DETACH takes the signal number as an integer in `data`; no memory is
    // accessed.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as libc::c_long as *mut libc::c_void,
        )
    };
    check(r).map(drop)
}

/// `PTRACE_GETREGSET` of note type `nt` into `buf`; returns the number of bytes the kernel filled.
pub fn ptrace_getregset(pid: i32, nt: u32, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which is valid for writes of `buf.len()` bytes for the whole
    // call; the kernel writes at most `iov_len` bytes and updates `iov_len` to the count written.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            pid,
            nt as usize as *mut libc::c_void,
            (&mut iov as *mut libc::iovec).cast::<libc::c_void>(),
        )
    };
    check(r)?;
    Ok(iov.iov_len.min(buf.len()))
}

/// How a waited-for task changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Stopped (ptrace stop): the signal and the `PTRACE_EVENT_*` (0 for none).
    Stopped {
        /// `WSTOPSIG`.
        sig: i32,
        /// `status >> 16`: the ptrace event.
        event: i32,
    },
    /// Something else (continued).
    Other,
}

/// `waitpid(pid, __WALL)`, retried on `EINTR`.
pub fn waitpid(pid: i32) -> io::Result<WaitStatus> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid, writable c_int for the call.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        break;
    }
    Ok(if libc::WIFEXITED(status) {
        WaitStatus::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        WaitStatus::Signaled(libc::WTERMSIG(status))
    } else if libc::WIFSTOPPED(status) {
        WaitStatus::Stopped {
            sig: libc::WSTOPSIG(status),
            event: (status >> 16) & 0xff,
        }
    } else {
        WaitStatus::Other
    })
}

/// `kill(pid, sig)`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes only integers.
    let r = unsafe { libc::kill(pid, sig) };
    check(r.into()).map(drop)
}

/// Most iovecs in one `process_vm_readv` call (`IOV_MAX`).
pub const IOV_MAX: usize = 1024;

/// `process_vm_readv` of the remote ranges `remote` (address, length) into `local`, which must
/// be at least as long as their sum. At most [`IOV_MAX`] ranges are used. Returns the bytes read
/// (the kernel stops at the first range it cannot read).
pub fn process_vm_readv(pid: i32, local: &mut [u8], remote: &[(u64, usize)]) -> io::Result<usize> {
    let mut riov: [libc::iovec; IOV_MAX] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; IOV_MAX];
    let mut total = 0usize;
    let mut n = 0usize;
    for (slot, &(addr, len)) in riov.iter_mut().zip(remote) {
        *slot = libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: len,
        };
        total = total.saturating_add(len);
        n += 1;
    }
    if total > local.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "process_vm_readv: local buffer shorter than the remote ranges",
        ));
    }
    let liov = libc::iovec {
        iov_base: local.as_mut_ptr().cast(),
        iov_len: total,
    };
    // SAFETY: the local iovec covers `total` bytes of `local`, which is valid for writes and
    // borrowed mutably for the call; the remote iovecs name addresses in the other process and
    // are only dereferenced by the kernel in that process's address space; `n` ≤ IOV_MAX entries
    // of `riov` are initialised.
    let r = unsafe { libc::process_vm_readv(pid, &liov, 1, riov.as_ptr(), n as libc::c_ulong, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(r).unwrap_or(0))
}

/// `flock(fd, LOCK_EX)`, retried on `EINTR`; the lock is released when the file is closed.
pub fn flock_exclusive(f: &std::fs::File) -> io::Result<()> {
    loop {
        // SAFETY: flock takes a file descriptor that `f` keeps open for the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf takes only an integer.
    let r = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(r).unwrap_or(4096).max(4096)
}

/// Ignores `SIGXFSZ`, so that a write past `RLIMIT_FSIZE` fails with `EFBIG` instead of killing
/// the dumper (which must then clean up: detach the target, remove its temporary file).
pub fn ignore_sigxfsz() {
    // SAFETY: installing SIG_IGN for SIGXFSZ runs no code in a signal context.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// An anonymous private memory mapping used as a page buffer: populated (faulted in) once, so
/// the copy into it is not dominated by page faults, and reusable for later checkpoints.
pub struct MapBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: MapBuf owns its mapping exclusively (like a Box<[u8]>); no aliasing pointer escapes
// except through &/&mut borrows of self.
unsafe impl Send for MapBuf {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for MapBuf {}

impl MapBuf {
    /// Maps `len` bytes (rounded up to 2 MiB) and pre-faults the whole range. No transparent
    /// huge pages are asked for: measured here, the first huge-page populate of 1 GiB in a fresh
    /// process stalls ~1.5 s in compaction, against ~0.3 s for small pages, and the copy into
    /// the buffer is no faster.
    pub fn new(len: usize) -> io::Result<MapBuf> {
        const HUGE: usize = 2 << 20;
        let len = len.max(1).div_ceil(HUGE).saturating_mul(HUGE);
        // SAFETY: an anonymous private mapping at an address the kernel chooses; no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let buf = MapBuf { ptr: p.cast(), len };
        // Fault the pages in, on two threads for large buffers (page zeroing dominates and
        // scales with CPUs).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts: usize = if len >= (64 << 20) && cpus >= 2 { 2 } else { 1 };
        let part = (len / parts).div_ceil(HUGE) * HUGE;
        let base = p as usize;
        let populate = |off: usize| -> bool {
            let n = part.min(len.saturating_sub(off));
            if n == 0 {
                return true;
            }
            // SAFETY: advice on [base+off, base+off+n), inside the mapping just created, which
            // this MapBuf owns; MADV_POPULATE_WRITE only faults its pages in.
            unsafe {
                libc::madvise(
                    (base + off) as *mut libc::c_void,
                    n,
                    libc::MADV_POPULATE_WRITE,
                ) == 0
            }
        };
        let ok = std::thread::scope(|s| {
            let hs: Vec<_> = (1..parts)
                .map(|i| s.spawn(move || populate(i * part)))
                .collect();
            let first = populate(0);
            hs.into_iter()
                .fold(first, |a, h| a && h.join().unwrap_or(false))
        });
        if !ok {
            // Older kernels: touch one byte per page instead.
            let ps = page_size();
            let mut off = 0;
            while off < len {
                // SAFETY: off < len, so the byte is inside the mapping this MapBuf owns.
                unsafe { buf.ptr.add(off).write_volatile(0) };
                off += ps;
            }
        }
        Ok(buf)
    }

    /// A buffer of no bytes (no mapping).
    pub fn empty() -> MapBuf {
        MapBuf {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
        }
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty ([`MapBuf::empty`]; a mapping has at least 2 MiB).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for MapBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live mapping owned by self, readable, initialised (anonymous
        // memory reads as zero), and not mutably borrowed while &self is.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for MapBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for MapBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return; // MapBuf::empty: nothing mapped
        }
        // SAFETY: unmaps exactly the mapping this MapBuf created and owns; no borrow outlives
        // self.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

impl std::fmt::Debug for MapBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MapBuf({} bytes)", self.len)
    }
}

/// Gives the unnamed file `f` (opened with `O_TMPFILE`) the name `dst`, failing with `EEXIST`
/// if `dst` exists: `linkat("/proc/self/fd/N", dst, AT_SYMLINK_FOLLOW)`.
pub fn link_tmpfile(f: &std::fs::File, dst: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let src = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dst = std::ffi::CString::new(dst.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both paths are NUL-terminated C strings that live across the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    check(r.into()).map(drop)
}

/// A whole file mapped read-only and private (for reading images without copying them).
///
/// The file must not be truncated or written while mapped: the bytes seen could change, and a
/// truncation makes access fault (SIGBUS). Images are written once under a fresh name and never
/// modified in place, which is what makes mapping them reasonable.
pub struct FileMap {
    ptr: *const u8,
    len: usize,
}

// SAFETY: FileMap owns its read-only mapping exclusively; it only hands out &[u8].
unsafe impl Send for FileMap {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for FileMap {}

impl FileMap {
    /// Maps all of `f` (an empty file gives an empty map, no mapping).
    pub fn new(f: &std::fs::File) -> io::Result<FileMap> {
        let len = usize::try_from(f.metadata()?.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if len == 0 {
            return Ok(FileMap {
                ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
                len: 0,
            });
        }
        // SAFETY: a new read-only private mapping of an open file descriptor at an address the
        // kernel chooses; no existing memory is affected. The fd may be closed afterwards.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(FileMap { ptr: p.cast(), len })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live read-only mapping owned by self (or len is 0 with a
        // dangling, aligned pointer); the file is not modified while mapped (see the type's
        // docs).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping this FileMap created; no borrow outlives self.
            unsafe {
                libc::munmap(self.ptr as *mut libc::c_void, self.len);
            }
        }
    }
}

impl std::fmt::Debug for FileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileMap({} bytes)", self.len)
    }
}

/// `PTRACE_GETREGS`: the general registers of a stopped tracee.
pub fn ptrace_getregs(pid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: `data` points to a writable user_regs_struct, the size PTRACE_GETREGS writes.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            (&mut r as *mut libc::user_regs_struct).cast::<libc::c_void>(),
        )
    };
    check(rc)?;
    Ok(r)
}

/// `PTRACE_SETREGS`: sets the general registers of a stopped tracee.
pub fn ptrace_setregs(pid: i32, r: &libc::user_regs_struct) -> io::Result<()> {
    // SAFETY: `data` points to a readable user_regs_struct, the size PTRACE_SETREGS reads; the
    // kernel does not keep the pointer.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            (r as *const libc::user_regs_struct)
                .cast_mut()
                .cast::<libc::c_void>(),
        )
    };
    check(rc).map(drop)
}

/// `PTRACE_SINGLESTEP` with no signal.
pub fn ptrace_singlestep(pid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SINGLESTEP with data 0 takes no pointers.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SINGLESTEP,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(rc).map(drop)
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes two integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = check(fd)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// `pidfd_getfd(pidfd, targetfd, 0)`: a duplicate of file descriptor `targetfd` of the task.
pub fn pidfd_getfd(
    pidfd: &std::os::fd::OwnedFd,
    targetfd: i32,
) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_getfd takes three integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), targetfd, 0) };
    let fd = check(fd)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// `UFFD_FEATURE_WP_ASYNC`.
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xC018_AA06;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;

fn ioctl_u64s(fd: &impl AsRawFd, req: libc::c_ulong, arg: &mut [u64]) -> io::Result<()> {
    // SAFETY: every ioctl this is used with reads and writes a struct of u64 fields of exactly
    // `arg.len()` elements (the size encoded in `req`), which `arg` provides for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg.as_mut_ptr()) };
    check(r as libc::c_long).map(drop)
}

/// `UFFDIO_API` with `features`; returns the features the kernel granted.
pub fn uffd_api(fd: &impl AsRawFd, features: u64) -> io::Result<u64> {
    let mut a = [UFFD_API, features, 0];
    ioctl_u64s(fd, UFFDIO_API, &mut a)?;
    Ok(a[1])
}

/// `UFFDIO_REGISTER` of `[start, start+len)` in write-protect mode.
pub fn uffd_register_wp(fd: &impl AsRawFd, start: u64, len: u64) -> io::Result<()> {
    let mut a = [start, len, UFFDIO_REGISTER_MODE_WP, 0];
    ioctl_u64s(fd, UFFDIO_REGISTER, &mut a)
}

/// `UFFDIO_WRITEPROTECT` of `[start, start+len)`.
pub fn uffd_writeprotect(fd: &impl AsRawFd, start: u64, len: u64) -> io::Result<()> {
    let mut a = [start, len, UFFDIO_WRITEPROTECT_MODE_WP];
    ioctl_u64s(fd, UFFDIO_WRITEPROTECT, &mut a)
}

/// `PAGEMAP_SCAN`'s request code.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
/// `PM_SCAN_WP_MATCHING`: write-protect the pages that match.
pub const PM_SCAN_WP_MATCHING: u64 = 1;
/// `PM_SCAN_CHECK_WPASYNC`: fail on a page without asynchronous write protection.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 2;
/// `PAGE_IS_WPALLOWED`: in a range registered for asynchronous write protection.
pub const PAGE_IS_WPALLOWED: u64 = 1;
/// `PAGE_IS_WRITTEN`.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// `PAGE_IS_PRESENT`.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// `PAGE_IS_SWAPPED`.
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// `PAGE_IS_PFNZERO`.
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

/// One `PAGEMAP_SCAN` call over `[start, end)` of the task whose `/proc/PID/pagemap` is
/// `pagemap`: regions (start, end, categories) go to `out` (at most its capacity, at least 1),
/// covering at most `max_pages` pages (0: no limit); returns where the walk ended. A page
/// matches when its categories, with those of `inverted` flipped, include all of
/// `category_mask` and (if not 0) one of `anyof_mask`.
#[allow(clippy::too_many_arguments)]
pub fn pagemap_scan(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    flags: u64,
    inverted: u64,
    category_mask: u64,
    anyof_mask: u64,
    return_mask: u64,
    max_pages: u64,
    out: &mut Vec<[u64; 3]>,
) -> io::Result<u64> {
    out.clear();
    let cap = out.capacity().max(1);
    out.reserve(cap);
    let mut arg: [u64; 12] = [
        96,
        flags,
        start,
        end,
        0,
        out.as_mut_ptr() as u64,
        cap as u64,
        max_pages,
        inverted,
        category_mask,
        anyof_mask,
        return_mask,
    ];
    // SAFETY: `arg` is a struct pm_scan_arg (12 u64 fields, size 96 in its first field); its
    // `vec` points to `out`'s buffer, valid for writes of `cap` page_region structs (3 u64
    // each) for the call; the kernel writes at most `vec_len` of them and returns their count.
    let r = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, arg.as_mut_ptr()) };
    let n = check(r as libc::c_long)?;
    let n = usize::try_from(n).unwrap_or(0).min(cap);
    // SAFETY: the kernel initialised the first `n` regions (n <= cap <= capacity).
    unsafe { out.set_len(n) };
    Ok(arg[4])
}

/// `PTRACE_SETREGSET` of note type `nt` from `buf` (the whole register set).
pub fn ptrace_setregset(pid: i32, nt: u32, buf: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, valid for reads of `buf.len()` bytes for the whole call; for
    // PTRACE_SETREGSET the kernel only reads through `iov_base` (it may update `iov_len`, which
    // lives in our local `iov`), and keeps no pointer after the call.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            pid,
            nt as usize as *mut libc::c_void,
            (&mut iov as *mut libc::iovec).cast::<libc::c_void>(),
        )
    };
    check(r).map(drop)
}

/// `PTRACE_SETOPTIONS` with `opts` (`PTRACE_O_*`).
pub fn ptrace_setoptions(pid: i32, opts: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SETOPTIONS takes the options as an integer in `data`; no memory is accessed.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            opts as libc::c_long as *mut libc::c_void,
        )
    };
    check(r).map(drop)
}

/// `PTRACE_GET_RSEQ_CONFIGURATION`: the tracee's registered rseq area (address, length,
/// signature); address 0 if none is registered.
pub fn ptrace_get_rseq(pid: i32) -> io::Result<(u64, u32, u32)> {
    const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
    // struct ptrace_rseq_configuration: u64 rseq_abi_pointer; u32 rseq_abi_size; u32 signature;
    // u32 flags; u32 pad: 24 bytes.
    let mut c = [0u64; 3];
    // SAFETY: `addr` is the size of the buffer `data` points to (24 bytes, the size of struct
    // ptrace_rseq_configuration); the kernel writes at most that many bytes into `c`, which is
    // valid and writable for the call.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            pid,
            std::mem::size_of_val(&c) as *mut libc::c_void,
            c.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    check(r)?;
    Ok((c[0], c[1] as u32, (c[1] >> 32) as u32))
}

/// Forks a child that only stops itself under ptrace, as the empty shell of a restored task:
/// in the child, `dup2(stdio, 0/1/2)` if `stdio` is given, `ptrace(PTRACE_TRACEME)`,
/// `raise(SIGSTOP)`, then `pause()` forever (the tracer replaces its whole address space and
/// registers before it runs again). Returns the child's pid; the caller waits for its stop.
///
/// Between fork and the stop the child calls only async-signal-safe libc functions and
/// allocates nothing, so the caller may have other threads.
pub fn fork_traced_child(stdio: Option<i32>) -> io::Result<i32> {
    // SAFETY: fork has no memory-safety preconditions by itself; in the child (r == 0) only
    // async-signal-safe functions (dup2, ptrace, raise, pause, _exit) run, with integer
    // arguments, no allocation and no lock, until the tracer takes the process over; the child
    // never returns from this function.
    let r = unsafe { libc::fork() };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    if r == 0 {
        // SAFETY: see above: async-signal-safe calls with integer arguments only.
        unsafe {
            if let Some(fd) = stdio {
                for t in 0..3 {
                    if libc::dup2(fd, t) == -1 {
                        libc::_exit(126);
                    }
                }
            }
            if libc::ptrace(
                libc::PTRACE_TRACEME,
                0,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            ) == -1
            {
                libc::_exit(127);
            }
            libc::raise(libc::SIGSTOP);
            loop {
                libc::pause();
            }
        }
    }
    Ok(r)
}

/// XCR0, the state components the OS enabled for XSAVE (`xgetbv(0)`), or `None` if the CPU or
/// the OS has no XSAVE.
pub fn xcr0() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("xsave") {
            return None;
        }
        let (lo, hi): (u32, u32);
        // SAFETY: xgetbv with ecx = 0 reads XCR0; it is valid when CPUID reports OSXSAVE, which
        // the std feature detection for "xsave" checks (it requires the OS support bit). It
        // touches no memory and only writes eax and edx.
        unsafe {
            std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                options(nomem, nostack, preserves_flags));
        }
        Some(u64::from(lo) | (u64::from(hi) << 32))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// `fork()`, only in a single-threaded process (checked in `/proc/self/status`; refused with
/// `EWOULDBLOCK` otherwise), so that the child may run any code: no lock can be held by a
/// thread that does not exist in the child. Returns 0 in the child, its pid in the parent.
pub fn fork_single_threaded() -> io::Result<i32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    if threads != Some(1) {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "fork refused: the process is not single-threaded",
        ));
    }
    // SAFETY: the process has one thread (checked just above; only this thread could create
    // another meanwhile, and it is here), so the child starts with every lock free and every
    // data structure consistent, as after any fork of a single-threaded program.
    let r = unsafe { libc::fork() };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// `_exit(code)`: ends the process at once, without running exit handlers or flushing stdio
/// buffers (for a forked child that must not flush copies of its parent's buffers).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns; no Rust invariant depends on
    // destructors running.
    unsafe { libc::_exit(code) }
}
