//! Incremental checkpoints by content comparison (`DIFF_CONTENT_COMPARE`).
//!
//! The task is captured as for a full image; every captured page is compared with what the
//! parent chain holds at the same address, and the pages found equal become `RUN_PARENT` runs.
//! With a copy-on-write twin the comparison is made as the image is streamed from the twin
//! (`plan_over_parent`, chunk by chunk); with a copy, over the copy ([`make_incremental`]).
//! The same rules decide both. The parent chain is mapped, not read: only the metadata and the
//! parent pages compared are paged in.
//!
//! When a page may be "in the parent" (the rules that keep the CRIU "Missing in parent pagemap"
//! bug class out):
//! - the parent image has a VMA with exactly the same start, end, kind, file offset, inode,
//!   device and path as the VMA of the page now. A mapping that appeared, vanished, grew,
//!   shrank or moved is never "in the parent", even where its contents happen to match;
//! - the page is present now (captured) and its bytes equal the page the parent chain resolves
//!   to: the parent's stored data, or zero when the page is all zero and the parent says known
//!   zero or not present in an anonymous VMA. A parent page that is "not present" in a file
//!   mapping (the file's contents) is never matched.
//!
//! Pages not present now keep no run (they read as zero or as the file, whatever the parent
//! held). The VMA list is always complete. Since the comparison is made against exactly what
//! resolution through the parent gives, the image resolves to the memory captured, page for
//! page, whatever the parent is; the parent checks below are there so that a chain is built
//! from the image the operator meant.

use crate::capture::{RecordPlan, Snapshot, VmaRec};
use crate::error::{Error, Result};
use crate::inspect::{self, Mapped};
use cr_format::chain::{Chain, ChainIndex, Resolved};
use cr_format::limits::{MAX_DATA_PER_RECORD, MAX_RUNS_PER_RECORD};
use cr_format::raw::{self, PageRun};
use cr_format::read::{Image, Vma};
use std::path::{Path, PathBuf};

/// A parent image and its ancestors, mapped, checked as a chain.
pub struct Parent {
    maps: Vec<Mapped>,
    /// The parent's CRID.
    pub crid: u64,
    /// The parent's tail digest.
    pub digest: u64,
    /// The parent's path.
    pub path: PathBuf,
    /// Page size of the chain.
    pub page_size: u32,
    /// The pid recorded in the parent's Task record.
    pub pid: u32,
    /// Number of images of the chain (1 = the parent is a full image).
    pub depth: usize,
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent")
            .field("crid", &self.crid)
            .field("digest", &self.digest)
            .field("path", &self.path)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// The CRID a file name `NAME.img.CRID` gives.
pub fn crid_of_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let (_, c) = name.rsplit_once(".img.")?;
    if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()) || c.starts_with('0') {
        return None;
    }
    c.parse().ok()
}

/// The newest image `DIR/NAME.img.CRID` (highest CRID), if any.
pub fn latest(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let prefix = format!("{name}.img.");
    let mut best: Option<(u64, PathBuf)> = None;
    for e in rd {
        let e = e.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let fname = e.file_name();
        let Some(s) = fname.to_str() else { continue };
        let Some(rest) = s.strip_prefix(&prefix) else {
            continue;
        };
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.starts_with('0') {
            continue;
        }
        let Ok(c) = rest.parse::<u64>() else { continue };
        if best.as_ref().is_none_or(|(b, _)| c > *b) {
            best = Some((c, e.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

fn parent_err(path: &Path, expected: Option<u64>, why: impl std::fmt::Display) -> Error {
    match expected {
        Some(c) => Error::Other(format!(
            "parent image CRID {c} ({}) refused: {why}",
            path.display()
        )),
        None => Error::Other(format!("parent image {} refused: {why}", path.display())),
    }
}

impl Parent {
    /// Maps the parent image `path` (named `NAME.img.CRID`) and its ancestors found beside it,
    /// and checks them: the CRID in the name is the Header's, every image is valid, every link
    /// of the chain holds.
    pub fn open(path: &Path) -> Result<Parent> {
        let expected = crid_of_name(path);
        if !path.exists() {
            return Err(match expected {
                Some(c) => Error::Other(format!(
                    "parent image CRID {c} is missing: {} does not exist",
                    path.display()
                )),
                None => Error::Other(format!("parent image {} does not exist", path.display())),
            });
        }
        let maps = inspect::load_chain(path).map_err(|e| parent_err(path, expected, e))?;
        let (crid, digest, page_size, pid, depth) = {
            let images = parse_all(&maps).map_err(|e| parent_err(path, expected, e))?;
            let top = images
                .first()
                .ok_or_else(|| parent_err(path, expected, "no image"))?;
            if let Some(c) = expected {
                if top.crid() != c {
                    return Err(parent_err(
                        path,
                        expected,
                        format!(
                            "the file holds CRID {}, not the CRID {c} its name says",
                            top.crid()
                        ),
                    ));
                }
            }
            Chain::new(&images)
                .map_err(|e| parent_err(path, expected, format!("its chain is broken: {e}")))?;
            let pid = top.task().map_or(0, |t| t.pid.get());
            (top.crid(), top.digest(), top.page_size(), pid, images.len())
        };
        Ok(Parent {
            maps,
            crid,
            digest,
            path: path.to_path_buf(),
            page_size,
            pid,
            depth,
        })
    }

    /// Refuses this parent for a checkpoint with page size `page_size` under `crid`.
    pub(crate) fn check_for(&self, page_size: u32, crid: u64) -> Result<()> {
        if page_size != self.page_size {
            return Err(parent_err(
                &self.path,
                Some(self.crid),
                format!(
                    "its page size is {}, the task's {page_size}",
                    self.page_size
                ),
            ));
        }
        if self.crid >= crid {
            return Err(parent_err(
                &self.path,
                Some(self.crid),
                format!("its CRID is not below the new CRID {crid}"),
            ));
        }
        Ok(())
    }

    /// Names this parent in `h`, with `method`.
    pub(crate) fn name_in(&self, h: &mut raw::Header, method: u32) {
        h.parent_crid = self.crid.into();
        h.parent_digest = self.digest.into();
        h.diff_method = method.into();
    }

    /// The same parent opened again (its own mapping, for a snapshot that outlives the
    /// caller's), refused if the file is no longer the same image.
    pub(crate) fn reopen(&self) -> Result<Parent> {
        let p = Parent::open(&self.path)?;
        if (p.crid, p.digest) != (self.crid, self.digest) {
            return Err(parent_err(
                &self.path,
                Some(self.crid),
                "the file changed during the checkpoint",
            ));
        }
        Ok(p)
    }

    /// Runs `f` over the chain's index (newest = the parent).
    pub fn with_index<R>(&self, f: impl FnOnce(&ChainIndex<'_>, &[Image<'_>]) -> R) -> Result<R> {
        let images = parse_all(&self.maps)?;
        let chain = Chain::new(&images)
            .map_err(|e| Error::Other(format!("{}: chain broken: {e}", self.path.display())))?;
        let idx = ChainIndex::new(&chain);
        Ok(f(&idx, &images))
    }
}

fn parse_all(maps: &[Mapped]) -> Result<Vec<Image<'_>>> {
    maps.iter()
        .map(|m| {
            Image::parse_metadata(m.bytes()).map_err(|e| inspect::image_error(&m.path, e, None))
        })
        .collect()
}

/// Whether two VMAs describe the same mapping (same place, size, kind and backing).
pub fn same_mapping(now: &raw::Vma, path: &[u8], then: &Vma<'_>) -> bool {
    let t = then.raw;
    now.start == t.start
        && now.end == t.end
        && now.kind == t.kind
        && now.offset == t.offset
        && now.inode == t.inode
        && now.dev_major == t.dev_major
        && now.dev_minor == t.dev_minor
        && path == then.path
}

fn anon_kind(k: u16) -> bool {
    matches!(k, raw::VMA_ANON | raw::VMA_HEAP | raw::VMA_STACK)
}

pub(crate) fn is_zero(p: &[u8]) -> bool {
    p.iter().all(|&b| b == 0)
}

/// Whether a page now (`bytes`, or `None` when known zero) equals what the parent chain
/// resolves at `addr`.
fn equal_in_parent(idx: &ChainIndex<'_>, addr: u64, now: Option<&[u8]>) -> bool {
    match idx.resolve(addr) {
        Ok(Resolved::Data { bytes, .. }) => match now {
            Some(b) => b == bytes,
            None => is_zero(bytes),
        },
        Ok(Resolved::Zero { .. }) => now.is_none_or(is_zero),
        Ok(Resolved::NotPresent { vma, .. }) => anon_kind(vma.kind()) && now.is_none_or(is_zero),
        Err(_) => false,
    }
}

/// For each of `vmas`, whether `top` (the parent image) has the same mapping: only then may its
/// pages be "in the parent".
pub(crate) fn vmas_in_parent<'v>(
    top: &Image<'_>,
    vmas: impl Iterator<Item = &'v VmaRec>,
) -> Vec<bool> {
    let pvmas: Vec<Vma<'_>> = top.vmas().collect();
    vmas.map(|v| {
        let start = v.vma.start.get();
        let i = pvmas.partition_point(|p| p.end() <= start);
        pvmas
            .get(i)
            .is_some_and(|p| same_mapping(&v.vma, &v.path, p))
    })
    .collect()
}

/// [`crate::capture`]'s record planning for a chunk of pages compared with the parent chain as
/// it is read (a stream from a twin): the pages of `ranges` are at `buf[..]`, back to back.
/// A page equal to what the chain resolves becomes `RUN_PARENT` (only if `in_parent`, the
/// VMA being the parent's), an all-zero one `RUN_ZERO`, the others data, squeezed to the
/// front of `buf`. The same decisions as [`make_incremental`] over a copy.
pub(crate) fn plan_over_parent(
    idx: &ChainIndex<'_>,
    in_parent: bool,
    ranges: &[(u64, u64)],
    buf: &mut [u8],
    ps: usize,
    delta: &mut Delta,
) -> Vec<RecordPlan> {
    let ps64 = ps as u64;
    let mut b = RunBuilder::new(ps64, 0);
    let mut src = 0usize;
    for &(a0, n) in ranges {
        for k in 0..n {
            let a = a0 + k * ps64;
            let Some(page) = buf.get(src..src + ps) else {
                break;
            };
            let now = (!is_zero(page)).then_some(page);
            if in_parent && equal_in_parent(idx, a, now) {
                b.push(a, raw::RUN_PARENT);
                delta.parent += 1;
            } else if now.is_none() {
                b.push(a, raw::RUN_ZERO);
                delta.zero += 1;
            } else {
                let to = b.data_end();
                if src != to {
                    buf.copy_within(src..src + ps, to);
                }
                b.push(a, raw::RUN_DATA);
                delta.data += 1;
            }
            src += ps;
        }
    }
    b.finish()
}

/// Builds Pages records page by page within the format's limits.
pub(crate) struct RunBuilder {
    ps: u64,
    max_data_pages: usize,
    /// Records done.
    pub records: Vec<RecordPlan>,
    cur: RecordPlan,
    cur_data_pages: usize,
}

impl RunBuilder {
    /// A builder whose first record's data starts at `base`.
    pub(crate) fn new(ps: u64, base: usize) -> Self {
        RunBuilder {
            ps,
            max_data_pages: (MAX_DATA_PER_RECORD as usize) / (ps as usize),
            records: Vec::new(),
            cur: RecordPlan {
                runs: Vec::new(),
                data: base..base,
            },
            cur_data_pages: 0,
        }
    }

    /// Adds the page at `addr` of run kind `kind`; a data page's bytes must be at
    /// [`RunBuilder::data_end`] (records are contiguous in the buffer, so starting a new record
    /// does not move that position).
    pub(crate) fn push(&mut self, addr: u64, kind: u16) {
        let extend = self.cur.runs.last().is_some_and(|r| {
            r.kind.get() == kind
                && r.pages.get() < u32::MAX
                && r.addr.get() + u64::from(r.pages.get()) * self.ps == addr
        });
        let full_runs = !extend && self.cur.runs.len() >= MAX_RUNS_PER_RECORD as usize;
        let full_data = kind == raw::RUN_DATA && self.cur_data_pages >= self.max_data_pages;
        if full_runs || full_data {
            let end = self.cur.data.end;
            let done = std::mem::replace(
                &mut self.cur,
                RecordPlan {
                    runs: Vec::new(),
                    data: end..end,
                },
            );
            self.records.push(done);
            self.cur_data_pages = 0;
        }
        let extend = extend && !full_runs && !full_data;
        if extend {
            if let Some(r) = self.cur.runs.last_mut() {
                r.pages = (r.pages.get() + 1).into();
            }
        } else {
            self.cur.runs.push(PageRun {
                addr: addr.into(),
                pages: 1.into(),
                kind: kind.into(),
                _reserved0: 0.into(),
            });
        }
        if kind == raw::RUN_DATA {
            self.cur.data.end += self.ps as usize;
            self.cur_data_pages += 1;
        }
    }

    /// Takes the records closed so far.
    pub(crate) fn take_done(&mut self) -> Vec<RecordPlan> {
        std::mem::take(&mut self.records)
    }

    /// The start of the open record's data.
    pub(crate) fn open_data_start(&self) -> usize {
        self.cur.data.start
    }

    /// Moves the open record's data range `by` bytes down (its data was moved).
    pub(crate) fn shift_down(&mut self, by: usize) {
        self.cur.data.start -= by;
        self.cur.data.end -= by;
    }

    /// Where the next data page goes.
    pub(crate) fn data_end(&self) -> usize {
        self.cur.data.end
    }

    /// The records, the last one closed.
    pub(crate) fn finish(mut self) -> Vec<RecordPlan> {
        if !self.cur.runs.is_empty() {
            self.records.push(self.cur);
        }
        self.records
    }
}

/// Pages of an incremental capture by what became of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Stored with their data.
    pub data: u64,
    /// Stored as known zero.
    pub zero: u64,
    /// Unchanged since the parent.
    pub parent: u64,
    /// VMAs that are not in the parent (new, moved, resized): none of their pages can be.
    pub new_vmas: u64,
    /// VMAs whose unchanged pages came from write-protect tracking (not compared).
    pub tracked_vmas: u64,
}

/// Turns a full snapshot into an incremental one over `parent`: pages equal to the parent's
/// become `RUN_PARENT`, the data kept is squeezed to the front of the buffer, and the Header
/// names the parent (CRID, digest) with `DIFF_CONTENT_COMPARE`.
pub fn make_incremental(snap: &mut Snapshot, parent: &Parent) -> Result<Delta> {
    let ps32 = snap.meta.header.page_size.get();
    parent.check_for(ps32, snap.crid)?;
    let ps = u64::from(ps32);
    let psz = ps as usize;
    let mut delta = Delta::default();
    let mut untracked_gap = false;
    let buf = &mut snap.buf;
    let vmas = &mut snap.vmas;
    parent.with_index(|idx, images| {
        let Some(top) = images.first() else {
            return;
        };
        let in_parent = vmas_in_parent(top, vmas.iter().map(|sv| &sv.vma));
        let mut dst = 0usize;
        for (sv, &in_parent) in vmas.iter_mut().zip(&in_parent) {
            if !in_parent {
                delta.new_vmas += 1;
            }
            let mut b = RunBuilder::new(ps, dst);
            if sv.tracked.is_some() && !in_parent {
                // Only the written pages were copied: without the parent they are not enough.
                untracked_gap = true;
                return;
            }
            if let (true, Some(sc)) = (in_parent, sv.tracked.take()) {
                // Tracked: the copied (written) pages of the records, merged in address order
                // with the scan's unchanged ("in the parent") and zero-page ranges.
                delta.tracked_vmas += 1;
                // (first address, pages, class: 0 copied / 1 unchanged / 2 zero page)
                let mut items: Vec<(u64, u64, u8)> = Vec::new();
                for rec in &sv.records {
                    for run in &rec.runs {
                        items.push((run.addr.get(), u64::from(run.pages.get()), 0));
                    }
                }
                items.extend(sc.unchanged.iter().map(|&(a, n)| (a, n, 1)));
                items.extend(sc.zero.iter().map(|&(a, n)| (a, n, 2)));
                items.sort_unstable_by_key(|i| i.0);
                // Each copied page: its run kind and, for data, where its bytes are.
                let mut pages: Vec<(u16, Option<usize>)> = Vec::new();
                for r in &sv.records {
                    let mut src = r.data.start;
                    for run in &r.runs {
                        let k = run.kind.get();
                        for _ in 0..run.pages.get() {
                            if k == raw::RUN_DATA {
                                pages.push((k, Some(src)));
                                src += psz;
                            } else {
                                pages.push((k, None));
                            }
                        }
                    }
                }
                let mut copied = pages.into_iter();
                for (a0, n, class) in items {
                    for k in 0..n {
                        let a = a0 + k * ps;
                        match class {
                            1 => {
                                b.push(a, raw::RUN_PARENT);
                                delta.parent += 1;
                            }
                            2 => {
                                b.push(a, raw::RUN_ZERO);
                                delta.zero += 1;
                            }
                            _ => {
                                let Some((kind, src)) = copied.next() else {
                                    continue;
                                };
                                let page = src.and_then(|s| buf.get(s..s + psz));
                                if equal_in_parent(idx, a, page) {
                                    b.push(a, raw::RUN_PARENT);
                                    delta.parent += 1;
                                } else if let (raw::RUN_DATA, Some(from)) = (kind, src) {
                                    let to = b.data_end();
                                    if from != to {
                                        buf.copy_within(from..from + psz, to);
                                    }
                                    b.push(a, raw::RUN_DATA);
                                    delta.data += 1;
                                } else {
                                    b.push(a, raw::RUN_ZERO);
                                    delta.zero += 1;
                                }
                            }
                        }
                    }
                }
                dst = b.data_end();
                sv.records = b.finish();
                continue;
            }
            for rec in &sv.records {
                let mut src = rec.data.start;
                for run in &rec.runs {
                    let kind = run.kind.get();
                    for k in 0..u64::from(run.pages.get()) {
                        let a = run.addr.get() + k * ps;
                        let page = if kind == raw::RUN_DATA {
                            let p = buf.get(src..src + psz);
                            src += psz;
                            p
                        } else {
                            None
                        };
                        let same = in_parent && equal_in_parent(idx, a, page);
                        if same {
                            b.push(a, raw::RUN_PARENT);
                            delta.parent += 1;
                        } else if kind == raw::RUN_DATA {
                            let to = b.data_end();
                            let from = src - psz;
                            if from != to {
                                buf.copy_within(from..from + psz, to);
                            }
                            b.push(a, raw::RUN_DATA);
                            delta.data += 1;
                        } else {
                            b.push(a, raw::RUN_ZERO);
                            delta.zero += 1;
                        }
                    }
                }
            }
            dst = b.data_end();
            sv.records = b.finish();
        }
    })?;
    if untracked_gap {
        return Err(Error::Other(
            "internal error: a tracked VMA is not in the parent image".into(),
        ));
    }
    parent.name_in(
        &mut snap.meta.header,
        if delta.tracked_vmas > 0 {
            raw::DIFF_WRITE_TRACKING
        } else {
            raw::DIFF_CONTENT_COMPARE
        },
    );
    snap.stats.data_pages = delta.data;
    snap.stats.zero_pages = delta.zero;
    snap.stats.parent_pages = delta.parent;
    snap.stats.tracked_vmas = delta.tracked_vmas;
    Ok(delta)
}
