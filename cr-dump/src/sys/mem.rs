//! Memory outside our own heap: page buffers ([`MapBuf`]), read-only file maps ([`FileMap`]),
//! and reads and writes of another task's memory ([`process_vm_readv`], [`process_vm_writev`]).

use std::io;
use std::os::fd::AsRawFd;

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
    // r >= 0 here, and at most `total`.
    usize::try_from(r).map_err(|_| io::Error::other("process_vm_readv: bad count"))
}

/// `process_vm_writev` of the local slices `local` to the remote addresses `remote` (the same
/// count, each remote range as long as its slice; at most [`IOV_MAX`]). Returns the bytes
/// written (the kernel stops at the first range it cannot write: one not mapped writable).
pub fn process_vm_writev(pid: i32, local: &[&[u8]], remote: &[u64]) -> io::Result<usize> {
    if local.len() != remote.len() || local.len() > IOV_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "process_vm_writev: local and remote ranges differ in count, or too many",
        ));
    }
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut liov = [empty; IOV_MAX];
    let mut riov = [empty; IOV_MAX];
    for ((l, r), (b, &a)) in liov
        .iter_mut()
        .zip(riov.iter_mut())
        .zip(local.iter().zip(remote))
    {
        *l = libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
        *r = libc::iovec {
            iov_base: a as usize as *mut libc::c_void,
            iov_len: b.len(),
        };
    }
    let n = local.len() as libc::c_ulong;
    // SAFETY: the first `n` local iovecs each cover one of the borrowed slices, which the kernel
    // only reads (process_vm_writev never writes local memory, hence the cast from a shared
    // pointer); the remote iovecs name addresses in the other process and are only dereferenced
    // by the kernel in that process's address space.
    let r = unsafe { libc::process_vm_writev(pid, liov.as_ptr(), n, riov.as_ptr(), n, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(r).map_err(|_| io::Error::other("process_vm_writev: bad count"))
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
            let ps = super::page_size();
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

    /// Drops this process's page table entries for the whole pages inside `off..off + len`
    /// (`MADV_DONTNEED`), so that what has been read does not stay in the resident set: the
    /// page cache keeps the pages, and a later read maps them again, with the same bytes.
    /// Errors are ignored: the pages then stay mapped, which is only memory.
    pub fn release(&self, off: usize, len: usize) {
        let ps = crate::sys::page_size();
        let start = off.div_ceil(ps).saturating_mul(ps);
        let end = off.saturating_add(len).min(self.len) / ps * ps;
        if end > start {
            // SAFETY: start..end lies inside this live private read-only mapping of a file
            // that is not modified while mapped, and is never written: after MADV_DONTNEED its
            // pages read back the same bytes from the page cache, so no `&[u8]` handed out
            // (on this or another thread) sees a change.
            unsafe {
                libc::madvise(
                    self.ptr.add(start) as *mut libc::c_void,
                    end - start,
                    libc::MADV_DONTNEED,
                );
            }
        }
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

/// A range of a file mapped read-only and shared, its pages faulted in at once: the bytes just
/// written there through the page cache (by `splice`), read back without a copy.
pub struct FileRange {
    ptr: *const u8,
    len: usize,
}

// SAFETY: FileRange owns its read-only mapping exclusively; it only hands out &[u8].
unsafe impl Send for FileRange {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for FileRange {}

impl FileRange {
    /// Maps `len` bytes of `f` from `off` (a multiple of the page size); `len` must be > 0 and
    /// the range within the file. The caller must not shrink or rewrite the range while mapped.
    pub fn new(f: &std::fs::File, off: u64, len: usize) -> io::Result<FileRange> {
        let o =
            libc::off_t::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a new read-only shared mapping of an open file descriptor at an address the
        // kernel chooses; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                f.as_raw_fd(),
                o,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(FileRange { ptr: p.cast(), len })
    }

    /// The range's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live read-only mapping owned by self; the range is not
        // modified or truncated while mapped (see `new`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for FileRange {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this FileRange created; no borrow outlives self.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

impl std::fmt::Debug for FileRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileRange({} bytes)", self.len)
    }
}
