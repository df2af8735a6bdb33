//! What restore needs of every record, gathered as the chain is parsed (one walk over each
//! image, [`crate::inspect::chain::ChainFiles::parse_each`]): the top image's VMAs with their
//! attributes, vDSO bytes and Pages records, and every image's Pages records with data (for
//! [`super::pages::Source`]). Each walk over an image of 65,000 mappings costs ~15 ms (a page
//! of the image touched per record): plan, pages and the checks of the records take what
//! they need from here instead of walking the image again each.

use super::other;
use super::plan::TASK_SIZE;
use crate::error::Result;
use cr_format::raw;
use cr_format::read::{Parsed, Record, RunKind, VdsoData, Vma};
use std::ops::Range;
use std::path::Path;

/// A VMA of the top image and the records that follow it.
#[derive(Clone, Copy, Debug)]
pub(super) struct VmaRecs<'a> {
    /// Its fixed part, copied while the record is at hand: plan and pages look at every VMA
    /// again, and a second look at 65,000 records spread over the image cost a page fault, a
    /// cache and a TLB miss each (~15 ms, a tenth of a 65,000-mapping restore's planning).
    pub raw: raw::Vma,
    /// Its file path, in the image (empty unless a file mapping).
    pub path: &'a [u8],
    /// `raw::VMA_ATTR_*` bits (its VmaAttr record).
    pub attrs: u32,
    /// The vDSO's bytes (its VdsoData record).
    pub vdso: Option<VdsoData<'a>>,
    /// Its Pages records: a range of [`Body::pages`].
    pub pages: (usize, usize),
}

impl PagesRec {
    /// Its runs' indices in [`Body::runs`].
    pub fn runs(&self) -> Range<usize> {
        self.runs.0..self.runs.1
    }
}

impl VmaRecs<'_> {
    /// The Vma record, as the reader shows it.
    pub fn vma(&self) -> Vma<'_> {
        Vma {
            raw: &self.raw,
            path: self.path,
        }
    }

    /// Its Pages records' indices in [`Body::pages`].
    pub fn pages(&self) -> Range<usize> {
        self.pages.0..self.pages.1
    }
}

/// A Pages record of the top image, its runs copied out while the record is at hand (a second
/// look at 65,000 records spread over the image costs a cache and TLB miss each).
#[derive(Clone, Copy, Debug)]
pub(super) struct PagesRec {
    /// Where its data starts in the image.
    pub data_offset: u64,
    /// Its runs: a range of [`Body::runs`].
    pub runs: (usize, usize),
}

/// A page run: `[addr, end)` and its kind.
#[derive(Clone, Copy, Debug)]
pub(super) struct RunRec {
    pub addr: u64,
    pub end: u64,
    pub kind: RunKind,
}

/// A Pages record with data: where its data lies in its image, and its CRC.
#[derive(Clone, Copy, Debug)]
pub(super) struct DataRec {
    pub image: usize,
    pub start: usize,
    pub end: usize,
    pub crc: u32,
    /// The record's offset in its image (for messages).
    pub offset: u64,
}

/// What the walks found.
#[derive(Default)]
pub(super) struct Body<'a> {
    /// The top image's VMAs, in image (address) order.
    pub vmas: Vec<VmaRecs<'a>>,
    /// The top image's Pages records, in image order.
    pub pages: Vec<PagesRec>,
    /// Their runs, in image order.
    pub runs: Vec<RunRec>,
    /// Every Pages record with data of every image, by image and data offset.
    pub data: Vec<DataRec>,
    /// The first VMA or page run outside the user address space: ((start, end, what), the
    /// record's offset).
    space_err: Option<((u64, u64, String), u64)>,
    /// The first record of a kind this version does not know: (kind, offset).
    kind_err: Option<(u16, u64)>,
}

impl<'a> Body<'a> {
    /// Takes record `r` of image `image` (0 the newest), in image order.
    pub fn take(&mut self, image: usize, r: &Parsed<'a>) {
        if let Record::Unknown(u) = r.record {
            self.kind_err.get_or_insert((u.kind, r.offset));
        }
        if let Record::Pages(p) = r.record {
            let len = usize::try_from(p.data_len()).unwrap_or(usize::MAX);
            let start = usize::try_from(p.data_offset).unwrap_or(usize::MAX);
            if len > 0 {
                self.data.push(DataRec {
                    image,
                    start,
                    end: start.saturating_add(len),
                    crc: p.raw.data_crc.get(),
                    offset: r.offset,
                });
            }
        }
        if image != 0 {
            return;
        }
        if self.space_err.is_none() {
            let ps = match r.record {
                Record::Pages(p) => p.page_size,
                _ => 0,
            };
            self.space_err = outside(&r.record, ps).map(|e| (e, r.offset));
        }
        self.take_top(r.record);
    }

    /// Refuses (naming `path`, the record's offset and why) a VMA or a page run the child
    /// could not have (empty, inverted, or outside the user address space: only the vsyscall
    /// VMA, never created, lies above it, at its fixed address), then a record kind this
    /// version does not know (restore cannot bring back what it cannot read).
    pub fn check(mut self, path: &Path) -> Result<Body<'a>> {
        // Image order is data order within an image: sorted already, but cheap to be sure.
        self.data.sort_by_key(|r| (r.image, r.start));
        if let Some(((start, end, what), offset)) = self.space_err.take() {
            return Err(other(format!(
                "{}: {what} {start:#x}-{end:#x} (record at offset {offset}) is {}: refused \
                 before anything starts",
                path.display(),
                if start >= end {
                    "empty or inverted".to_string()
                } else {
                    format!("outside the user address space (which ends at {TASK_SIZE:#x})")
                }
            )));
        }
        if let Some((kind, offset)) = self.kind_err {
            return Err(other(format!(
                "{}: record kind {kind} at offset {offset:#x} is unknown to this cr-dump ({}): \
                 it may hold state of the task that restore would lose; use a newer cr-dump",
                path.display(),
                crate::PRODUCER
            )));
        }
        Ok(self)
    }

    /// Takes a record of the top image.
    fn take_top(&mut self, r: Record<'a>) {
        match r {
            Record::Vma(vma) => {
                let n = self.pages.len();
                self.vmas.push(VmaRecs {
                    raw: *vma.raw,
                    path: vma.path,
                    attrs: 0,
                    vdso: None,
                    pages: (n, n),
                });
            }
            Record::VmaAttr(a) => {
                if let Some(v) = self.vmas.last_mut() {
                    v.attrs = a.attrs.get();
                }
            }
            Record::VdsoData(d) => {
                if let Some(v) = self.vmas.last_mut() {
                    v.vdso = Some(d);
                }
            }
            Record::Pages(p) => {
                let first = self.runs.len();
                self.runs.extend(p.iter().map(|r| RunRec {
                    addr: r.addr,
                    end: r.end(p.page_size),
                    kind: r.kind,
                }));
                self.pages.push(PagesRec {
                    data_offset: p.data_offset,
                    runs: (first, self.runs.len()),
                });
                if let Some(v) = self.vmas.last_mut() {
                    v.pages.1 = self.pages.len();
                }
            }
            _ => {}
        }
    }

    /// The vDSO's Vma and its bytes, if the image has them.
    pub fn vdso(&self) -> Option<(Vma<'_>, VdsoData<'a>)> {
        self.vmas.iter().find_map(|v| v.vdso.map(|d| (v.vma(), d)))
    }
}

/// The vsyscall page: the one mapping above [`TASK_SIZE`], the kernel's, at a fixed address.
const VSYSCALL: (u64, u64) = (0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000);

/// A VMA or page run of `r` that the child could not have: (start, end, what).
fn outside(r: &Record<'_>, ps: u32) -> Option<(u64, u64, String)> {
    let (start, end, what) = match r {
        Record::Vma(v) if v.kind() == raw::VMA_VSYSCALL => {
            if (v.start(), v.end()) == VSYSCALL {
                return None;
            }
            (v.start(), v.end(), "vsyscall VMA".to_string())
        }
        Record::Vma(v) => (
            v.start(),
            v.end(),
            format!("{} VMA", crate::inspect::show::vma_kind_name(v.kind())),
        ),
        Record::Pages(p) => {
            let run = p
                .iter()
                .find(|run| run.addr >= TASK_SIZE || run.end(ps) > TASK_SIZE)?;
            (run.addr, run.end(ps), "page run".to_string())
        }
        _ => return None,
    };
    (start >= end || end > TASK_SIZE).then_some((start, end, what))
}
