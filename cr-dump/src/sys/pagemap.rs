//! The `PAGEMAP_SCAN` ioctl on `/proc/PID/pagemap`, over the kernel's `pm_scan_arg` and
//! `page_region`.

use super::check;
use crate::span::AddrRange;
use linux_raw_sys::general::{self as k, pm_scan_arg};
use std::io;
use std::os::fd::AsRawFd;

/// One region a scan reports: `[start, end)` and its `PAGE_IS_*` categories.
pub use linux_raw_sys::general::page_region as PageRegion;

/// `PAGEMAP_SCAN`'s request code: `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
const _: () = assert!(std::mem::size_of::<pm_scan_arg>() == 96);
const _: () = assert!((PAGEMAP_SCAN >> 16) & 0x3fff == 96);
const _: () = assert!(std::mem::size_of::<PageRegion>() == 24);

/// `PM_SCAN_WP_MATCHING`: write-protect the pages that match.
pub const PM_SCAN_WP_MATCHING: u64 = k::PM_SCAN_WP_MATCHING as u64;
/// `PM_SCAN_CHECK_WPASYNC`: fail on a page without asynchronous write protection.
pub const PM_SCAN_CHECK_WPASYNC: u64 = k::PM_SCAN_CHECK_WPASYNC as u64;
/// `PAGE_IS_WPALLOWED`: in a range registered for asynchronous write protection.
pub const PAGE_IS_WPALLOWED: u64 = k::PAGE_IS_WPALLOWED as u64;
/// `PAGE_IS_WRITTEN`.
pub const PAGE_IS_WRITTEN: u64 = k::PAGE_IS_WRITTEN as u64;
/// `PAGE_IS_PRESENT`.
pub const PAGE_IS_PRESENT: u64 = k::PAGE_IS_PRESENT as u64;
/// `PAGE_IS_SWAPPED`.
pub const PAGE_IS_SWAPPED: u64 = k::PAGE_IS_SWAPPED as u64;
/// `PAGE_IS_FILE`: a page of a file (or shmem), not anonymous.
pub const PAGE_IS_FILE: u64 = k::PAGE_IS_FILE as u64;
/// `PAGE_IS_PFNZERO`.
pub const PAGE_IS_PFNZERO: u64 = k::PAGE_IS_PFNZERO as u64;

/// What one scan asks for (the fields of `pm_scan_arg` besides the range and the buffer). A
/// page matches when its categories, with those of `inverted` flipped, include all of
/// `category_mask` and (if not 0) one of `anyof_mask`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanQuery {
    /// `PM_SCAN_*` flags.
    pub flags: u64,
    /// Most pages to report (0: no limit).
    pub max_pages: u64,
    /// `category_inverted`.
    pub inverted: u64,
    /// `category_mask`.
    pub category_mask: u64,
    /// `category_anyof_mask`.
    pub anyof_mask: u64,
    /// `return_mask`: the categories reported.
    pub return_mask: u64,
}

/// One `PAGEMAP_SCAN` call over `range` of the task whose `/proc/PID/pagemap` is `pagemap`:
/// matching regions go to `out` (at most its capacity, at least 1); returns where the walk
/// ended.
pub fn pagemap_scan(
    pagemap: &std::fs::File,
    range: AddrRange,
    q: &ScanQuery,
    out: &mut Vec<PageRegion>,
) -> io::Result<u64> {
    out.clear();
    let cap = out.capacity().max(1);
    out.reserve(cap);
    let mut arg = pm_scan_arg {
        size: std::mem::size_of::<pm_scan_arg>() as u64,
        flags: q.flags,
        start: range.start,
        end: range.end,
        walk_end: 0,
        vec: out.as_mut_ptr() as u64,
        vec_len: cap as u64,
        max_pages: q.max_pages,
        category_inverted: q.inverted,
        category_mask: q.category_mask,
        category_anyof_mask: q.anyof_mask,
        return_mask: q.return_mask,
    };
    // SAFETY: `arg` is a struct pm_scan_arg whose `vec` points to `out`'s buffer, valid for
    // writes of `cap` page_region structs for the call; the kernel writes at most `vec_len` of
    // them and returns their count.
    let r = unsafe {
        libc::ioctl(
            pagemap.as_raw_fd(),
            PAGEMAP_SCAN,
            &mut arg as *mut pm_scan_arg,
        )
    };
    let n = check(libc::c_long::from(r))?;
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= cap)
        .ok_or_else(|| io::Error::other(format!("PAGEMAP_SCAN returned {n} regions for {cap}")))?;
    // SAFETY: the kernel initialised the first `n` regions (n <= cap <= capacity).
    unsafe { out.set_len(n) };
    Ok(arg.walk_end)
}

/// Regions a scan reports per call in [`pagemap_scan_all`].
const SCAN_BATCH: usize = 4096;

/// Every region of `range` matching `q` (its `max_pages` is ignored), in address order, by as
/// many `PAGEMAP_SCAN` calls as the regions need (one for most address spaces). Adjacent
/// matching regions are merged.
pub fn pagemap_scan_all(
    pagemap: &std::fs::File,
    range: AddrRange,
    q: &ScanQuery,
) -> io::Result<Vec<AddrRange>> {
    let q = ScanQuery { max_pages: 0, ..*q };
    let mut out: Vec<AddrRange> = Vec::new();
    let mut buf: Vec<PageRegion> = Vec::with_capacity(SCAN_BATCH);
    let mut at = range.start;
    while at < range.end {
        let r = AddrRange {
            start: at,
            end: range.end,
        };
        let end = pagemap_scan(pagemap, r, &q, &mut buf)?;
        // The kernel may resume a full buffer's walk below the end of the last region it
        // gave (seen on 6.18): regions are clipped to what is not taken yet.
        for g in &buf {
            let covered = out.last().map_or(0, |l| l.end);
            let start = g.start.max(covered);
            if g.end <= start {
                continue;
            }
            match out.last_mut() {
                Some(l) if l.end == start => l.end = g.end,
                _ => out.push(AddrRange { start, end: g.end }),
            }
        }
        let next = end.max(out.last().map_or(0, |l| l.end));
        if next <= at {
            return Err(io::Error::other(format!(
                "PAGEMAP_SCAN made no progress at {at:#x}"
            )));
        }
        at = next;
    }
    Ok(out)
}

/// `PROCMAP_QUERY`'s request code: `_IOWR('f', 17, struct procmap_query)` (Linux 6.11).
const PROCMAP_QUERY: libc::c_ulong = 0xC068_6611;
const _: () = assert!(std::mem::size_of::<linux_raw_sys::general::procmap_query>() == 104);
const _: () = assert!((PROCMAP_QUERY >> 16) & 0x3fff == 104);

/// The VMA of a task that covers `addr`, by one `PROCMAP_QUERY` ioctl on its
/// `/proc/PID/maps` (`maps`), instead of reading all of maps: its range and its name (up to
/// 63 bytes: `[vdso]`, a path, ...). `Ok(None)` if no VMA covers `addr`; `Err` also where the
/// kernel has no `PROCMAP_QUERY` (ENOTTY), for the caller to read maps instead.
pub fn procmap_query(maps: &std::fs::File, addr: u64) -> io::Result<Option<(AddrRange, Vec<u8>)>> {
    let mut name = [0u8; 64];
    let mut q = linux_raw_sys::general::procmap_query {
        size: std::mem::size_of::<linux_raw_sys::general::procmap_query>() as u64,
        query_flags: 0,
        query_addr: addr,
        vma_start: 0,
        vma_end: 0,
        vma_flags: 0,
        vma_page_size: 0,
        vma_offset: 0,
        inode: 0,
        dev_major: 0,
        dev_minor: 0,
        vma_name_size: name.len() as u32,
        build_id_size: 0,
        vma_name_addr: name.as_mut_ptr() as u64,
        build_id_addr: 0,
    };
    // SAFETY: `q` is a struct procmap_query whose `vma_name_addr` points to `name`, valid for
    // writes of `vma_name_size` bytes for the call; no build id is asked for.
    let r = unsafe {
        libc::ioctl(
            maps.as_raw_fd(),
            PROCMAP_QUERY,
            &mut q as *mut linux_raw_sys::general::procmap_query,
        )
    };
    match check(libc::c_long::from(r)) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    }
    // The kernel wrote a NUL-terminated name (vma_name_size 0 when the VMA has none).
    let len = if q.vma_name_size == 0 {
        0
    } else {
        name.iter().position(|&b| b == 0).unwrap_or(name.len())
    };
    let range = AddrRange::new(q.vma_start, q.vma_end)
        .ok_or_else(|| io::Error::other("PROCMAP_QUERY gave an inverted range"))?;
    Ok(Some((range, name.get(..len).unwrap_or_default().to_vec())))
}
