//! Step 6 of the module docs: the pages.
//!
//! The chain is parsed without its page data CRCs ([`crate::inspect::chain::Parse::Metadata`]:
//! every record CRC, the Tail digest, which covers every `data_crc`, and every link); the data
//! CRC of a Pages record is checked ([`Source::crc_ok`], on a second thread) before the first byte of
//! that record is copied, so each byte is read from the image once into the cache and once
//! from there into the task. A bad CRC fails the restore before the task ever runs: the child
//! is killed, and the error names the image and the record.
//!
//! Private anonymous memory (heap and stack too) is filled with `UFFDIO_COPY` through a
//! userfaultfd made by the child itself (an injected `userfaultfd`, fetched with
//! `pidfd_getfd`): the kernel allocates each page and copies into it in one step, where a
//! `process_vm_writev` into fresh memory faults every page in (allocate, clear, then copy;
//! half of a 1 GiB restore). The rest (file mappings, shared memory, or everything if the
//! kernel refuses a userfaultfd) is written with `process_vm_writev` (`/proc/PID/mem` for what
//! it cannot write).

use super::child::Child;
use super::other;
use super::plan::{Plan, VmaPlan};
use super::walk::{Body, DataRec};
use super::Progress;
use crate::error::{Error, Result};
use crate::inspect::chain::ChainFiles;
use crate::span::AddrRange;
use crate::sys::{self, abi::nr};
use cr_format::chain::{ChainIndex, Resolved};
use cr_format::raw;
use cr_format::read::{Image, RunKind};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Where page data comes from: every Pages record of the chain, each data CRC checked once,
/// before its first byte is used ([`Source::crc_ok`]). Owns no borrow: the bytes are the chain's files'.
pub(super) struct Source {
    recs: Vec<DataRec>,
    paths: Vec<String>,
}

impl Source {
    /// Every Pages record with data of every image (found by [`Body::walk`]).
    pub fn new(body: &Body<'_>, files: &ChainFiles) -> Source {
        let paths = files
            .files()
            .iter()
            .map(|m| m.path.display().to_string())
            .collect();
        Source {
            recs: body.data.clone(),
            paths,
        }
    }

    /// The record whose data holds `[off, off+len)` of image `image`.
    fn rec_of(&self, image: usize, off: usize, len: usize) -> Option<usize> {
        let i = self
            .recs
            .partition_point(|r| (r.image, r.start) <= (image, off));
        let k = i.checked_sub(1)?;
        let r = self.recs.get(k)?;
        (r.image == image && off.saturating_add(len) <= r.end).then_some(k)
    }

    /// Where record `k`'s data ends: its image and offset.
    pub fn end_of(&self, k: usize) -> Option<(usize, usize)> {
        self.recs.get(k).map(|r| (r.image, r.end))
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// Whether record `k`'s data matches its CRC (an error naming the image and the record if
    /// not).
    pub fn crc_ok(&self, files: &ChainFiles, k: usize) -> Result<()> {
        let Some(r) = self.recs.get(k) else {
            return Err(other(format!("internal: no page record {k}")));
        };
        let path = self.paths.get(r.image).map_or("?", String::as_str);
        let file = files.files().get(r.image);
        let data = file
            .and_then(|m| m.bytes().get(r.start..r.end))
            .ok_or_else(|| other(format!("{path}: page data at {:#x} outside it", r.start)))?;
        // Hashed a chunk at a time, each let go of once read (the copy maps it again from the
        // page cache): cr-dump's resident set stays bounded whatever the image's size.
        let mut h = crc32fast::Hasher::new();
        let mut at = r.start;
        for chunk in data.chunks(RELEASE_CHUNK) {
            h.update(chunk);
            // Small records are let go of by the caller's [`Behind`], many at a time (one
            // madvise per record made 65,000 one-page records twice as slow).
            if let Some(m) = file.filter(|_| data.len() > RELEASE_CHUNK) {
                m.release(at, chunk.len());
            }
            at += chunk.len();
        }
        let got = h.finalize();
        if got != r.crc {
            return Err(Error::Other(format!(
                "{path}: offset {:#x}: the page data of the Pages record at offset {:#x} does not \
                 match its CRC (data_crc {:#x}, computed {got:#x}): the image is damaged; no byte \
                 of it was given to the task",
                r.start, r.offset, r.crc
            )));
        }
        Ok(())
    }
}

/// The data CRCs checked on a second thread, in the order the copy needs them, while this one
/// copies what is checked: the CRC was a fifth of an eager restore, and reading each record
/// there also brings it into the cache for the copy.
struct Ahead<'a> {
    state: &'a [AtomicU8],
    src: &'a Source,
    files: &'a ChainFiles,
}

const UNCHECKED: u8 = 0;
const GOOD: u8 = 1;
const BAD: u8 = 2;

impl Ahead<'_> {
    /// Waits until record `k` is checked; its error if it is bad.
    fn wait(&self, k: usize) -> Result<()> {
        loop {
            match self.state.get(k).map(|s| s.load(Ordering::Acquire)) {
                Some(GOOD) => return Ok(()),
                Some(UNCHECKED) => std::thread::park_timeout(std::time::Duration::from_millis(1)),
                // Bad, or not in the list the checker walks: checked here, said why.
                _ => return self.src.crc_ok(self.files, k),
            }
        }
    }
}

/// What goes into one stretch of the task's memory.
#[derive(Clone, Copy, Debug)]
pub(super) enum Src {
    /// Bytes of image `image` at `off`, inside Pages record `rec` of the [`Source`].
    Data {
        image: usize,
        off: usize,
        rec: usize,
    },
    /// Zeros (a file mapping's zero pages).
    Zero,
}

/// A stretch of the task's memory to fill.
#[derive(Clone, Copy, Debug)]
pub(super) struct Piece {
    pub addr: u64,
    pub len: u64,
    pub src: Src,
    /// Private anonymous memory: filled through the userfaultfd.
    pub anon: bool,
    /// Its VMA is locked (`mlock`): never left to fault in lazily.
    pub locked: bool,
}

/// Whether `v` is private anonymous memory a userfaultfd may fill (`/dev/zero` mappings are
/// written as files are).
pub(super) fn uffd_vma(v: &VmaPlan) -> bool {
    !v.special()
        && !v.shared()
        && v.file.is_none()
        && matches!(v.kind, raw::VMA_ANON | raw::VMA_HEAP | raw::VMA_STACK)
}

/// Every stretch to fill, in the image's order (by address within each VMA): data pages
/// resolved through the chain, joined where contiguous in the task and in one record; zero
/// pages of file mappings. Shared file mappings are left out (the file is their contents).
/// `body` holds the top image's VMAs in the order of `plan.vmas`.
pub(super) fn pieces(
    plan: &Plan,
    body: &Body<'_>,
    idx: Option<&ChainIndex<'_>>,
    images: &[Image<'_>],
    src: &Source,
) -> Result<Vec<Piece>> {
    let top = images.first().ok_or_else(|| other("an empty chain"))?;
    let ps = u64::from(top.page_size());
    let mut out: Vec<Piece> = Vec::new();
    // The record of the last top-image data, across VMAs: records come in image order.
    let mut last_rec = None;
    for (rec, v) in body.vmas.iter().zip(&plan.vmas) {
        let skip = v.special() || (v.shared() && !v.shared_anon());
        if skip || rec.raw.start.get() != v.range.start {
            continue;
        }
        let mut add = Adder {
            out: &mut out,
            images,
            src,
            anon: uffd_vma(v),
            locked: v.attrs & (raw::VMA_ATTR_LOCKED | raw::VMA_ATTR_LOCKONFAULT) != 0,
            file: v.kind == raw::VMA_FILE,
            last_rec,
        };
        for p in rec.pages().filter_map(|i| body.pages.get(i)) {
            // The record was parsed without its data: each data run's bytes follow the
            // previous one's from `data_offset`.
            let mut off = usize::try_from(p.data_offset).map_err(|_| other("data offset"))?;
            for run in p.runs().filter_map(|i| body.runs.get(i)) {
                let (start, end) = (run.addr, run.end);
                match run.kind {
                    RunKind::Data => {
                        let n = usize::try_from(end - start).map_err(|_| other("run"))?;
                        add.top_data(start, off, n)?;
                        off = off.saturating_add(n);
                    }
                    RunKind::Zero => add.zero(start, end - start),
                    RunKind::Parent => add.parent(idx, start, end, ps)?,
                }
            }
        }
        last_rec = add.last_rec;
    }
    Ok(out)
}

/// Builds [`Piece`]s for one VMA.
struct Adder<'o, 'i, 's> {
    out: &'o mut Vec<Piece>,
    images: &'i [Image<'i>],
    src: &'s Source,
    anon: bool,
    locked: bool,
    file: bool,
    /// The record of the last top-image data.
    last_rec: Option<usize>,
}

impl Adder<'_, '_, '_> {
    /// `len` bytes of the top image's data at `off`, for `addr`: the record holding them is
    /// most often the one before's, or the next (65,000 one-page mappings: a binary search
    /// each was most of this planning).
    fn top_data(&mut self, addr: u64, off: usize, len: usize) -> Result<()> {
        let holds = |k: usize| {
            self.src
                .recs
                .get(k)
                .is_some_and(|r| r.image == 0 && r.start <= off && off.saturating_add(len) <= r.end)
        };
        let known = self
            .last_rec
            .and_then(|k| [k, k.saturating_add(1)].into_iter().find(|&k| holds(k)));
        let rec = match known.or_else(|| self.src.rec_of(0, off, len)) {
            Some(k) => k,
            None => {
                return Err(other(format!(
                    "page data for {addr:#x} is in no Pages record"
                )))
            }
        };
        self.last_rec = Some(rec);
        self.push_data(addr, 0, off, len as u64, rec);
        Ok(())
    }

    fn data(&mut self, addr: u64, bytes: &[u8]) -> Result<()> {
        let p = bytes.as_ptr() as usize;
        let (image, off) = self
            .images
            .iter()
            .enumerate()
            .find_map(|(i, img)| {
                let base = img.bytes().as_ptr() as usize;
                (p >= base && p + bytes.len() <= base + img.bytes().len()).then(|| (i, p - base))
            })
            .ok_or_else(|| other(format!("page data for {addr:#x} is in no image")))?;
        let rec = self
            .src
            .rec_of(image, off, bytes.len())
            .ok_or_else(|| other(format!("page data for {addr:#x} is in no Pages record")))?;
        self.push_data(addr, image, off, bytes.len() as u64, rec);
        Ok(())
    }

    /// A piece of `len` bytes of image `image` at `off` (in record `rec`) for `addr`, joined
    /// to the one before when they follow each other in the task and in the record.
    fn push_data(&mut self, addr: u64, image: usize, off: usize, len: u64, rec: usize) {
        if let Some(last) = self.out.last_mut() {
            if let Src::Data {
                image: li,
                off: lo,
                rec: lr,
            } = last.src
            {
                let joins = li == image && lr == rec && lo + last.len as usize == off;
                if joins && last.addr + last.len == addr && last.anon == self.anon {
                    last.len += len;
                    return;
                }
            }
        }
        self.out.push(Piece {
            addr,
            len,
            src: Src::Data { image, off, rec },
            anon: self.anon,
            locked: self.locked,
        });
    }

    /// Zero pages matter only in file mappings (fresh anonymous pages are zero).
    fn zero(&mut self, addr: u64, len: u64) {
        if self.file {
            self.out.push(Piece {
                addr,
                len,
                src: Src::Zero,
                anon: false,
                locked: self.locked,
            });
        }
    }

    /// Pages "in the parent", extent by extent ([`ChainIndex::extent`]: the cost is per run,
    /// not per page).
    /// `idx` is the chain's index (`None` for a full image, which has no "parent" pages).
    fn parent(
        &mut self,
        idx: Option<&ChainIndex<'_>>,
        start: u64,
        end: u64,
        ps: u64,
    ) -> Result<()> {
        let idx = idx.ok_or_else(|| {
            other(format!(
                "page {start:#x} is \"in the parent\" of an image without one"
            ))
        })?;
        let mut a = start;
        while a < end {
            let e = idx.extent(a);
            // An extent ends past its start; `max` keeps the walk going even if one did not.
            let stop = e.end.min(end).max(a.saturating_add(ps));
            match e.resolved {
                Some(Resolved::Data { bytes, .. }) => {
                    let n = usize::try_from(stop - a).unwrap_or(usize::MAX);
                    let b = bytes.get(..n).unwrap_or(bytes);
                    self.data(a, b)?;
                }
                Some(Resolved::Zero { .. }) => self.zero(a, stop - a),
                Some(Resolved::NotPresent { .. }) => {}
                None => {
                    return Err(other(format!(
                        "page {a:#x} does not resolve through the chain"
                    )))
                }
            }
            a = stop;
        }
        Ok(())
    }
}

/// `UFFD_USER_MODE_ONLY`: a userfaultfd that only user-mode faults reach, which needs no
/// privilege (`vm.unprivileged_userfaultfd` is 0 here).
pub(super) const UFFD_USER_MODE_ONLY: u64 = 1;

/// A userfaultfd of the child's memory: created inside it (injected `userfaultfd(flags)`),
/// fetched with `pidfd_getfd`, the child's own descriptor closed.
pub(super) fn child_uffd(c: &Child, flags: u64) -> Result<OwnedFd> {
    let flags = flags | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let fd = c.call_ok("userfaultfd", nr::USERFAULTFD, [flags, 0, 0, 0, 0, 0])?;
    let fd_i = i32::try_from(fd).map_err(|_| other("userfaultfd returned a huge descriptor"))?;
    let got = sys::pidfd_open(c.pid())
        .and_then(|p| sys::pidfd_getfd(&p, fd_i))
        .map_err(|e| c.io("pidfd_getfd of its userfaultfd", e));
    c.call_ok("close (its userfaultfd)", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
    got
}

/// Copies `bytes` to `dst` through `uffd` (every page of it missing there; a page found
/// there already is left as it is).
fn uffd_put(c: &Child, uffd: &OwnedFd, dst: u64, bytes: &[u8]) -> Result<()> {
    let ps = sys::page_size();
    let mut done = 0usize;
    while done < bytes.len() {
        let rest = bytes.get(done..).unwrap_or_default();
        let at = dst + done as u64;
        match sys::uffd_copy(uffd, at, rest) {
            Ok(n) => done += n,
            Err((n, e)) if e.raw_os_error() == Some(libc::EAGAIN) => done += n,
            Err((n, e)) if e.raw_os_error() == Some(libc::EEXIST) => done += n + ps,
            Err((_, e)) => {
                return Err(c.io(
                    &format!("UFFDIO_COPY of {} bytes at {at:#x}", rest.len()),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// Reports progress every this many bytes.
const PROGRESS_STEP: u64 = 4 << 20;

/// The image's page data is read (CRC, copy) this many bytes at a time, each let go of from
/// cr-dump's resident set once read ([`crate::inspect::chain::Mapped::release`]): measured at
/// 8 GiB, restore's peak resident set was the whole image (all of it file pages of the image's
/// mapping) without this.
const RELEASE_CHUNK: usize = 4 << 20;

/// How far before a read the kernel's fault-around may have mapped pages of a file (16 pages).
const FAULT_AROUND: usize = 64 << 10;

/// Lets go of the image's pages behind a reader that goes forward through it, every
/// [`RELEASE_CHUNK`] bytes: one `madvise` for many small records.
pub(super) struct Behind {
    /// Per image: the offset up to which it was let go of.
    from: Vec<usize>,
}

impl Behind {
    pub(super) fn new(files: &ChainFiles) -> Behind {
        Behind {
            from: vec![0; files.files().len()],
        }
    }

    /// The reader has read image `image` up to `upto`.
    pub(super) fn passed(&mut self, files: &ChainFiles, image: usize, upto: usize) {
        let Some(from) = self.from.get_mut(image) else {
            return;
        };
        if upto < *from {
            // Gone back (pieces of a chain come from several images): from here on.
            *from = upto;
        } else if upto - *from >= RELEASE_CHUNK {
            if let Some(m) = files.files().get(image) {
                // With what the fault-around of the first read may have mapped before it.
                let back = (*from).min(FAULT_AROUND);
                m.release(*from - back, upto - *from + back);
            }
            *from = upto;
        }
    }
}

/// Writes every piece (the eager restore). Private anonymous memory goes through a userfaultfd
/// of the child's when the kernel gives one, else everything through `process_vm_writev`.
pub(super) fn fill(
    c: &Child,
    plan: &Plan,
    files: &ChainFiles,
    src: &Source,
    pieces: &[Piece],
    progress: Option<&Progress>,
) -> Result<()> {
    fill_with(c, plan, files, src, pieces, progress, uffd_vma)
}

/// As [`fill`], the userfaultfd registered on the VMAs `which` selects (which must hold every
/// anonymous piece of `pieces`).
pub(super) fn fill_with(
    c: &Child,
    plan: &Plan,
    files: &ChainFiles,
    src: &Source,
    pieces: &[Piece],
    progress: Option<&Progress>,
    which: impl Fn(&VmaPlan) -> bool,
) -> Result<()> {
    let uffd = if pieces.iter().any(|p| p.anon) {
        register(c, plan, UFFD_USER_MODE_ONLY, 0, which).ok()
    } else {
        None
    };
    let mut order: Vec<usize> = Vec::new();
    for p in pieces {
        if let Src::Data { rec, .. } = p.src {
            if order.last() != Some(&rec) {
                order.push(rec);
            }
        }
    }
    let state: Vec<AtomicU8> = (0..src.recs.len())
        .map(|_| AtomicU8::new(UNCHECKED))
        .collect();
    let stop = AtomicBool::new(false);
    let ahead = Ahead {
        state: &state,
        src,
        files,
    };
    let me = std::thread::current();
    std::thread::scope(|s| {
        let checker = std::thread::Builder::new().spawn_scoped(s, || {
            let mut behind = Behind::new(files);
            for &k in &order {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ok = src.crc_ok(files, k).is_ok();
                if let Some((image, end)) = src.end_of(k) {
                    behind.passed(files, image, end);
                }
                if let Some(st) = state.get(k) {
                    st.store(if ok { GOOD } else { BAD }, Ordering::Release);
                }
                me.unpark();
            }
        });
        if checker.is_err() {
            // No second thread: `wait` checks each record itself (as it does a bad one).
            for st in &state {
                st.store(BAD, Ordering::Release);
            }
        }
        let r = copy_all(c, files, pieces, uffd.as_ref(), &ahead, progress);
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// The copy loop of [`fill_with`].
fn copy_all(
    c: &Child,
    files: &ChainFiles,
    pieces: &[Piece],
    uffd: Option<&OwnedFd>,
    ahead: &Ahead<'_>,
    progress: Option<&Progress>,
) -> Result<()> {
    let total: u64 = pieces.iter().map(|p| p.len).sum();
    let (mut done, mut told) = (0u64, 0u64);
    let zero = vec![0u8; 1 << 20];
    let mut behind = Behind::new(files);
    for p in pieces {
        match p.src {
            Src::Data { image, off, rec } => {
                ahead.wait(rec)?;
                let bytes = piece_bytes(files, image, off, p.len)?;
                let (mut at, mut from) = (p.addr, off);
                for chunk in bytes.chunks(RELEASE_CHUNK) {
                    match uffd {
                        Some(u) if p.anon => uffd_put(c, u, at, chunk)?,
                        _ => put(c, at, chunk)?,
                    }
                    at += chunk.len() as u64;
                    from += chunk.len();
                    behind.passed(files, image, from);
                }
            }
            Src::Zero => {
                let mut a = p.addr;
                while a < p.addr + p.len {
                    let n = (p.addr + p.len - a).min(zero.len() as u64);
                    put(c, a, zero.get(..n as usize).unwrap_or_default())?;
                    a += n;
                }
            }
        }
        done += p.len;
        if let Some(f) = progress.filter(|_| done - told >= PROGRESS_STEP || done == total) {
            f.report(done, total);
            told = done;
        }
    }
    Ok(())
}

/// The bytes of a piece.
pub(super) fn piece_bytes(files: &ChainFiles, image: usize, off: usize, len: u64) -> Result<&[u8]> {
    let len = usize::try_from(len).map_err(|_| other("page data length"))?;
    files
        .files()
        .get(image)
        .and_then(|m| m.bytes().get(off..off.saturating_add(len)))
        .ok_or_else(|| other(format!("page data at {off:#x} outside image {image}")))
}

/// A userfaultfd of the child (made with `flags`, `UFFDIO_API` with `features`) with every
/// private anonymous VMA that `which` selects registered in missing-page mode.
pub(super) fn register(
    c: &Child,
    plan: &Plan,
    flags: u64,
    features: u64,
    which: impl Fn(&VmaPlan) -> bool,
) -> Result<OwnedFd> {
    let u = child_uffd(c, flags)?;
    let got = sys::uffd_api(&u, features).map_err(|e| c.io("UFFDIO_API", e))?;
    if got & features != features {
        return Err(other(format!(
            "the kernel's userfaultfd lacks features {:#x}",
            features & !got
        )));
    }
    // One UFFDIO_REGISTER for each run of selected VMAs that touch one another (nothing else
    // can lie between them), instead of one per VMA.
    let mut run: Option<AddrRange> = None;
    for v in plan.vmas.iter().filter(|v| uffd_vma(v) && which(v)) {
        match run.as_mut() {
            Some(r) if r.end == v.range.start => r.end = v.range.end,
            _ => {
                if let Some(r) = run.replace(v.range) {
                    register_range(c, &u, r)?;
                }
            }
        }
    }
    if let Some(r) = run {
        register_range(c, &u, r)?;
    }
    Ok(u)
}

/// `UFFDIO_REGISTER` of `r` in missing-page mode.
fn register_range(c: &Child, u: &OwnedFd, r: AddrRange) -> Result<()> {
    sys::uffd_register_missing(u, r.start, r.len()).map_err(|e| {
        c.io(
            &format!(
                "UFFDIO_REGISTER {:#x}-{:#x} (fd {})",
                r.start,
                r.end,
                u.as_raw_fd()
            ),
            e,
        )
    })
}

/// Writes `bytes` at `addr` of the child with `process_vm_writev`: one copy, straight into the
/// child's pages, where a write to `/proc/PID/mem` copies each page twice (through a kernel
/// bounce page) and looks each target page up on its own. What it cannot write (a range not
/// mapped writable: the kernel stops there) goes through `/proc/PID/mem`, which may write
/// anywhere the tracer may, and which reports the error if that fails too.
pub(super) fn put(c: &Child, addr: u64, bytes: &[u8]) -> Result<()> {
    let mut done = 0usize;
    while done < bytes.len() {
        let rest = bytes.get(done..).unwrap_or_default();
        match sys::process_vm_writev(c.pid(), &[rest], &[addr + done as u64]) {
            Ok(n) if n > 0 => done += n,
            _ => return c.write(addr + done as u64, rest),
        }
    }
    Ok(())
}
