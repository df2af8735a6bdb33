//! Reading the task's memory: which pages to store (`PAGEMAP_SCAN` over many VMAs at once,
//! `for_each_vma_span`; or a walk of `/proc/PID/pagemap` over one VMA, `for_each_span`),
//! and copying them out, by `process_vm_readv` (one or two threads) or through
//! `/proc/PID/mem`.

use super::check::Inspection;
use super::freeze::gone_or;
use super::vma::{vma_recs, Policy, VmaRec};
use crate::error::{Error, Result};
use crate::procfs;
use crate::span::PageSpan;
use crate::sys;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Pagemap entries read per call (512 KiB of entries, 256 MiB of address space).
const PAGEMAP_CHUNK: u64 = 65536;

/// `/proc/PID/NAME`, opened.
pub(crate) fn open_proc(pid: i32, name: &str) -> Result<File> {
    File::open(procfs::path(pid, name)).map_err(|e| procfs::proc_err(pid, name, e))
}

/// The page size, and as the header's `u32`.
pub(crate) fn page_size() -> Result<(usize, u32)> {
    let ps = sys::page_size();
    let ps32 = u32::try_from(ps)
        .map_err(|_| Error::Other(format!("page size {ps} does not fit the image header")))?;
    Ok((ps, ps32))
}

/// `pages` pages of `ps` bytes as a buffer length.
pub(crate) fn buf_len(pages: u64, ps: usize) -> Result<usize> {
    pages
        .checked_mul(ps as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| Error::Other(format!("{pages} pages do not fit in memory")))
}

/// Calls `f` with the spans of pages of `v` to store, in address order, at most `max_pages`
/// pages per span, in batches so memory stays bounded.
pub(crate) fn for_each_span(
    pid: i32,
    pagemap: &File,
    v: &VmaRec,
    page_size: u64,
    max_pages: u64,
    mut f: impl FnMut(PageSpan) -> Result<()>,
) -> Result<()> {
    let policy = v.policy();
    if policy == Policy::Skip {
        return Ok(());
    }
    if matches!(policy, Policy::Shared | Policy::Whole) {
        return super::vma::for_each_object_span(pid, v, page_size, max_pages, f);
    }
    let first = v.vma.start.get() / page_size;
    let last = v.vma.end.get() / page_size;
    let mut entries = Vec::new();
    let mut cur: Option<PageSpan> = None;
    let mut p = first;
    while p < last {
        let n = (last - p).min(PAGEMAP_CHUNK);
        // At most PAGEMAP_CHUNK: fits.
        let count =
            usize::try_from(n).map_err(|_| Error::Other("internal: pagemap chunk".into()))?;
        procfs::read_pagemap(pagemap, pid, p, count, &mut entries)?;
        for (i, &e) in entries.iter().enumerate() {
            let keep = policy.keeps(e);
            let addr = (p + i as u64) * page_size;
            match (&mut cur, keep) {
                (Some(s), true) if s.addr + s.pages * page_size == addr && s.pages < max_pages => {
                    s.pages += 1
                }
                (_, true) => {
                    if let Some(r) = cur.take() {
                        f(r)?;
                    }
                    cur = Some(PageSpan::new(addr, 1));
                }
                (_, false) => {
                    if let Some(r) = cur.take() {
                        f(r)?;
                    }
                }
            }
        }
        p += n;
    }
    if let Some(r) = cur {
        f(r)?;
    }
    Ok(())
}

/// The spans of `v` to store, whole.
pub(crate) fn spans_of(pid: i32, pagemap: &File, v: &VmaRec, ps: u64) -> Result<Vec<PageSpan>> {
    let mut rs = Vec::new();
    for_each_span(pid, pagemap, v, ps, u64::MAX, |r| {
        rs.push(r);
        Ok(())
    })?;
    Ok(rs)
}

/// What [`for_each_vma_span`] reports, in address order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// VMA `i` of the list starts (before any of its spans).
    Vma(usize),
    /// A span of pages of VMA `i` to store.
    Span(usize, PageSpan),
}

/// Whether a page of a VMA of policy `p` (`Present` or `AnonOnly`) whose `PAGEMAP_SCAN`
/// categories are `cat` (present or swapped) is stored: [`Policy::keeps`] for the scan's bits.
fn keeps_categories(p: Policy, cat: u64) -> bool {
    match p {
        Policy::AnonOnly => {
            cat & sys::PAGE_IS_SWAPPED != 0
                || (cat & sys::PAGE_IS_PRESENT != 0 && cat & sys::pagemap::PAGE_IS_FILE == 0)
        }
        Policy::Skip => false,
        Policy::Present | Policy::Shared | Policy::Whole => true,
    }
}

/// Regions of one address space that are present or swapped, in address order, read by
/// `PAGEMAP_SCAN` a batch at a time as a walk over the VMAs asks for them.
struct Regions<'f> {
    pid: i32,
    pagemap: &'f File,
    buf: Vec<sys::PageRegion>,
    idx: usize,
    /// Where the next scan starts.
    at: u64,
    end: u64,
    /// The end of the last region taken: the kernel may resume a full buffer's walk below
    /// it (seen on 6.18), and no page is taken twice.
    covered: u64,
}

/// Regions per `PAGEMAP_SCAN` call of a walk.
const REGIONS_PER_SCAN: usize = 4096;

impl Regions<'_> {
    /// The first region that ends after `from`, scanning on as needed; `None` past the end.
    fn first_after(&mut self, from: u64) -> Result<Option<sys::PageRegion>> {
        loop {
            while self.buf.get(self.idx).is_some_and(|r| r.end <= from) {
                self.idx += 1;
            }
            if let Some(r) = self.buf.get(self.idx) {
                return Ok(Some(*r));
            }
            let at = self.at.max(from).max(self.covered);
            if at >= self.end {
                return Ok(None);
            }
            let q = sys::ScanQuery {
                anyof_mask: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED,
                return_mask: sys::PAGE_IS_PRESENT
                    | sys::PAGE_IS_SWAPPED
                    | sys::pagemap::PAGE_IS_FILE,
                ..sys::ScanQuery::default()
            };
            let range = crate::span::AddrRange {
                start: at,
                end: self.end,
            };
            let walked = sys::pagemap_scan(self.pagemap, range, &q, &mut self.buf)
                .map_err(|e| gone_or(self.pid, e, "PAGEMAP_SCAN"))?;
            if walked <= at {
                return Err(Error::Other(format!(
                    "PAGEMAP_SCAN of pid {} made no progress at {at:#x}",
                    self.pid
                )));
            }
            let covered = &mut self.covered;
            self.buf.retain_mut(|r| {
                r.start = r.start.max(*covered);
                *covered = (*covered).max(r.end);
                r.start < r.end
            });
            self.at = walked.max(self.covered);
            self.idx = 0;
        }
    }
}

/// Calls `f` for every VMA of `vmas` (in address order, as maps lists them) and the spans of
/// its pages to store (at most `max_pages` pages each), until `f` returns `false`. Unlike a
/// pagemap read per VMA, one `PAGEMAP_SCAN` covers many VMAs: the cost follows the pages and
/// the regions they form, not the number of mappings.
pub(crate) fn for_each_vma_span(
    pid: i32,
    pagemap: &File,
    vmas: &[VmaRec],
    page_size: u64,
    max_pages: u64,
    mut f: impl FnMut(Walk) -> Result<bool>,
) -> Result<()> {
    let scanned = |v: &VmaRec| matches!(v.policy(), Policy::Present | Policy::AnonOnly);
    let start = vmas
        .iter()
        .find(|v| scanned(v))
        .map_or(0, |v| v.vma.start.get());
    let end = vmas
        .iter()
        .rev()
        .find(|v| scanned(v))
        .map_or(0, |v| v.vma.end.get());
    let mut regions = Regions {
        pid,
        pagemap,
        buf: Vec::with_capacity(REGIONS_PER_SCAN),
        idx: 0,
        at: start,
        end,
        covered: 0,
    };
    for (i, v) in vmas.iter().enumerate() {
        if !f(Walk::Vma(i))? {
            return Ok(());
        }
        let policy = v.policy();
        if matches!(policy, Policy::Shared | Policy::Whole) {
            let mut go_on = true;
            super::vma::for_each_object_span(pid, v, page_size, max_pages, |s| {
                if go_on {
                    go_on = f(Walk::Span(i, s))?;
                }
                Ok(())
            })?;
            if !go_on {
                return Ok(());
            }
            continue;
        }
        if !scanned(v) {
            continue;
        }
        let (a, b) = (v.vma.start.get(), v.vma.end.get());
        let mut cur: Option<PageSpan> = None;
        while let Some(r) = regions.first_after(a)? {
            if r.start >= b {
                break;
            }
            if keeps_categories(policy, r.categories) {
                let mut p = r.start.max(a);
                let q = r.end.min(b);
                while p < q {
                    match &mut cur {
                        Some(s) if s.addr + s.pages * page_size == p && s.pages < max_pages => {
                            let n = ((q - p) / page_size).min(max_pages - s.pages);
                            s.pages += n;
                            p += n * page_size;
                        }
                        _ => {
                            if let Some(s) = cur.take() {
                                if !f(Walk::Span(i, s))? {
                                    return Ok(());
                                }
                            }
                            let n = ((q - p) / page_size).min(max_pages);
                            cur = Some(PageSpan::new(p, n));
                            p += n * page_size;
                        }
                    }
                }
            }
            if r.end > b {
                break; // the rest of the region is the next VMA's
            }
            regions.idx += 1;
        }
        if let Some(s) = cur {
            if !f(Walk::Span(i, s))? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The spans of every VMA of `vmas` to store, whole, one list per VMA.
pub(crate) fn spans_of_all(
    pid: i32,
    pagemap: &File,
    vmas: &[VmaRec],
    ps: u64,
) -> Result<Vec<Vec<PageSpan>>> {
    let mut out: Vec<Vec<PageSpan>> = Vec::with_capacity(vmas.len());
    for_each_vma_span(pid, pagemap, vmas, ps, u64::MAX, |w| {
        match w {
            Walk::Vma(_) => out.push(Vec::new()),
            Walk::Span(_, s) => {
                if let Some(l) = out.last_mut() {
                    l.push(s);
                }
            }
        }
        Ok(true)
    })?;
    Ok(out)
}

/// Pages in `spans`.
pub(crate) fn pages_in(spans: &[PageSpan]) -> u64 {
    spans.iter().map(|s| s.pages).sum()
}

/// Bytes of page data a capture of `ins` would copy now, from a pagemap scan (not frozen: a
/// sizing estimate for the buffer, taken before the freeze so the freeze does not pay for it).
pub fn estimate_bytes(ins: &Inspection) -> Result<u64> {
    let pagemap = open_proc(ins.pid, "pagemap")?;
    let ps = sys::page_size() as u64;
    let mut pages = 0u64;
    for_each_vma_span(ins.pid, &pagemap, &vma_recs(ins), ps, u64::MAX, |w| {
        if let Walk::Span(_, s) = w {
            pages = pages.saturating_add(s.pages);
        }
        Ok(true)
    })?;
    Ok(pages.saturating_mul(ps))
}

/// Bytes of page data of `v` a capture would copy now (per the pagemap).
pub(crate) fn vma_bytes(pid: i32, pagemap: &File, v: &VmaRec) -> Result<u64> {
    let ps = sys::page_size() as u64;
    let mut pages = 0u64;
    for_each_span(pid, pagemap, v, ps, u64::MAX, |r| {
        pages += r.pages;
        Ok(())
    })?;
    Ok(pages.saturating_mul(ps))
}

/// Bytes per `process_vm_readv` piece: large enough for full speed, small enough to split a
/// failing range finely.
const READ_PIECE: u64 = 16 << 20;

/// Bytes per `process_vm_readv` call.
const READ_CALL: usize = 64 << 20;

/// `spans` cut into pieces of at most [`READ_PIECE`] bytes, as (address, length).
fn pieces(spans: &[PageSpan], page_size: u64) -> Result<Vec<(u64, usize)>> {
    let mut pieces: Vec<(u64, usize)> = Vec::with_capacity(spans.len());
    for s in spans {
        let mut a = s.addr;
        let mut len = s
            .bytes(page_size)
            .ok_or_else(|| Error::Other(format!("internal: span {s:?} overflows")))?;
        while len > 0 {
            let k = len.min(READ_PIECE);
            // At most READ_PIECE: fits.
            let k_us = usize::try_from(k).map_err(|_| Error::Other("internal: piece".into()))?;
            pieces.push((a, k_us));
            a += k;
            len -= k;
        }
    }
    Ok(pieces)
}

fn too_small(need: usize, have: usize) -> Error {
    Error::Other(format!(
        "internal: page buffer too small ({have:#x} bytes, {need:#x} needed)"
    ))
}

/// Copies the pages of `spans` (in order, back to back) into `buf`. Pages `process_vm_readv`
/// cannot read (e.g. `PROT_NONE` areas that hold data) are read through `/proc/PID/mem`.
pub(crate) fn read_memory(
    pid: i32,
    mem: &File,
    spans: &[PageSpan],
    page_size: u64,
    buf: &mut [u8],
) -> Result<()> {
    let mut pieces = pieces(spans, page_size)?;
    let mut off = 0usize;
    let mut i = 0usize;
    while i < pieces.len() {
        // One call: up to IOV_MAX pieces and READ_CALL bytes.
        let mut j = i;
        let mut total = 0usize;
        while let Some(p) = pieces
            .get(j)
            .filter(|_| j - i < sys::IOV_MAX && total < READ_CALL)
        {
            total += p.1;
            j += 1;
        }
        let batch = pieces
            .get(i..j)
            .ok_or_else(|| Error::Other("internal: read batch out of range".into()))?;
        let blen = buf.len();
        let dst = buf
            .get_mut(off..off + total)
            .ok_or_else(|| too_small(off + total, blen))?;
        let got = match sys::process_vm_readv(pid, dst, batch) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(Error::TargetExited {
                    pid,
                    how: "gone while its memory was read".into(),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => 0,
            Err(e) => return Err(gone_or(pid, e, "process_vm_readv")),
        };
        // Consume whole pieces covered by `got`; a partial piece is shortened.
        let mut left = got;
        while i < j {
            let Some(p) = pieces.get_mut(i) else { break };
            if left >= p.1 {
                left -= p.1;
                off += p.1;
                i += 1;
            } else {
                p.0 += left as u64;
                p.1 -= left;
                off += left;
                break;
            }
        }
        if got == 0 {
            // The first piece of the batch cannot be read by process_vm_readv.
            let Some(&(a, len)) = pieces.get(i) else {
                break;
            };
            let dst = buf
                .get_mut(off..off + len)
                .ok_or_else(|| too_small(off + len, blen))?;
            read_mem_file(pid, mem, a, dst)?;
            off += len;
            i += 1;
        }
    }
    Ok(())
}

/// [`read_memory`] split over two threads (about twice the bandwidth of one, see FACTS.md) when
/// there is enough to copy and more than one CPU.
pub(crate) fn read_memory_parallel(
    pid: i32,
    mem: &File,
    spans: &[PageSpan],
    page_size: u64,
    buf: &mut [u8],
) -> Result<()> {
    let total = pages_in(spans);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if total.saturating_mul(page_size) < READ_CALL as u64 || cpus < 2 {
        return read_memory(pid, mem, spans, page_size, buf);
    }
    // First half of the pages, splitting a span if needed.
    let half = total / 2;
    let mut first: Vec<PageSpan> = Vec::new();
    let mut second: Vec<PageSpan> = Vec::new();
    let mut seen = 0u64;
    for &s in spans {
        if seen >= half {
            second.push(s);
        } else if seen + s.pages <= half {
            first.push(s);
        } else {
            let k = half - seen;
            first.push(PageSpan::new(s.addr, k));
            second.push(PageSpan::new(s.addr + k * page_size, s.pages - k));
        }
        seen += s.pages;
    }
    let split = buf_len(half, page_size as usize)?;
    if split > buf.len() {
        return Err(too_small(split, buf.len()));
    }
    let (lo, hi) = buf.split_at_mut(split);
    std::thread::scope(|s| {
        let h = s.spawn(|| read_memory(pid, mem, &second, page_size, hi));
        let a = read_memory(pid, mem, &first, page_size, lo);
        let b = h
            .join()
            .unwrap_or_else(|_| Err(Error::Other("memory reader thread panicked".into())));
        a.and(b)
    })
}

/// [`read_memory`] through `/proc/PID/mem` only (one read per span).
pub(crate) fn read_memory_mem_file(
    pid: i32,
    mem: &File,
    spans: &[PageSpan],
    page_size: u64,
    buf: &mut [u8],
) -> Result<()> {
    let mut off = 0usize;
    for s in spans {
        let len = buf_len(s.pages, page_size as usize)?;
        let blen = buf.len();
        let dst = buf
            .get_mut(off..off.saturating_add(len))
            .ok_or_else(|| too_small(off.saturating_add(len), blen))?;
        read_mem_file(pid, mem, s.addr, dst)?;
        off += len;
    }
    Ok(())
}

/// Fills `dst` from `/proc/PID/mem` at `addr`.
pub(crate) fn read_mem_file(pid: i32, mem: &File, addr: u64, dst: &mut [u8]) -> Result<()> {
    let mut done = 0usize;
    while let Some(rest) = dst.get_mut(done..).filter(|r| !r.is_empty()) {
        match mem.read_at(rest, addr + done as u64) {
            Ok(0) => {
                return Err(Error::TargetExited {
                    pid,
                    how: "its memory went away while it was read".into(),
                })
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::io(
                    format!("reading memory of pid {pid} at {:#x}", addr + done as u64),
                    e,
                ))
            }
        }
    }
    Ok(())
}
