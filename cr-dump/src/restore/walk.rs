//! One walk over each image of the chain, before the fork: the top image's VMAs with their
//! attributes, vDSO bytes and Pages records, and every image's Pages records with data (for
//! [`super::pages::Source`]). Each walk over an image of 65,000 mappings costs ~15 ms (a page
//! of the image touched per record): plan, pages and the checks of the records take what
//! they need from here instead of walking the image again each.

use super::other;
use super::plan::TASK_SIZE;
use crate::error::Result;
use cr_format::raw;
use cr_format::read::{Image, Pages, Record, VdsoData, Vma};
use std::ops::Range;
use std::path::Path;

/// A VMA of the top image and the records that follow it.
#[derive(Clone, Copy, Debug)]
pub(super) struct VmaRecs<'a> {
    pub vma: Vma<'a>,
    /// `raw::VMA_ATTR_*` bits (its VmaAttr record).
    pub attrs: u32,
    /// The vDSO's bytes (its VdsoData record).
    pub vdso: Option<VdsoData<'a>>,
    /// Its Pages records: a range of [`Body::pages`].
    pub pages: (usize, usize),
}

impl VmaRecs<'_> {
    /// Its Pages records' indices in [`Body::pages`].
    pub fn pages(&self) -> Range<usize> {
        self.pages.0..self.pages.1
    }
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
pub(super) struct Body<'a> {
    /// The top image's VMAs, in image (address) order.
    pub vmas: Vec<VmaRecs<'a>>,
    /// The top image's Pages records, in image order.
    pub pages: Vec<Pages<'a>>,
    /// Every Pages record with data of every image, by image and data offset.
    pub data: Vec<DataRec>,
}

impl<'a> Body<'a> {
    /// Walks every image once; refuses (naming `path`, the record's offset and why) a VMA or a
    /// page run the child could not have (empty, inverted, or outside the user address space:
    /// only the vsyscall VMA, never created, lies above it, at its fixed address), then a record
    /// kind this version does not know (restore cannot bring back what it cannot read).
    pub fn walk(path: &Path, images: &[Image<'a>]) -> Result<Body<'a>> {
        let mut body = Body {
            vmas: Vec::new(),
            pages: Vec::new(),
            data: Vec::new(),
        };
        let mut space_err = None;
        let mut kind_err = None;
        for (i, img) in images.iter().enumerate() {
            let ps = img.page_size();
            for r in img.records() {
                if let Record::Unknown(u) = r.record {
                    kind_err.get_or_insert((u.kind, r.offset));
                }
                if let Record::Pages(p) = r.record {
                    let len = usize::try_from(p.data_len()).unwrap_or(usize::MAX);
                    let start = usize::try_from(p.data_offset).unwrap_or(usize::MAX);
                    if len > 0 {
                        body.data.push(DataRec {
                            image: i,
                            start,
                            end: start.saturating_add(len),
                            crc: p.raw.data_crc.get(),
                            offset: r.offset,
                        });
                    }
                }
                if i != 0 {
                    continue;
                }
                if space_err.is_none() {
                    space_err = outside(&r.record, ps).map(|e| (e, r.offset));
                }
                body.take(r.record);
            }
        }
        // Image order is data order within an image: sorted already, but a cheap check.
        body.data.sort_by_key(|r| (r.image, r.start));
        if let Some(((start, end, what), offset)) = space_err {
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
        if let Some((kind, offset)) = kind_err {
            return Err(other(format!(
                "{}: record kind {kind} at offset {offset:#x} is unknown to this cr-dump ({}): \
                 it may hold state of the task that restore would lose; use a newer cr-dump",
                path.display(),
                crate::PRODUCER
            )));
        }
        Ok(body)
    }

    /// Takes a record of the top image.
    fn take(&mut self, r: Record<'a>) {
        match r {
            Record::Vma(vma) => {
                let n = self.pages.len();
                self.vmas.push(VmaRecs {
                    vma,
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
                self.pages.push(p);
                if let Some(v) = self.vmas.last_mut() {
                    v.pages.1 = self.pages.len();
                }
            }
            _ => {}
        }
    }

    /// The vDSO's Vma and its bytes, if the image has them.
    pub fn vdso(&self) -> Option<(Vma<'a>, VdsoData<'a>)> {
        self.vmas.iter().find_map(|v| v.vdso.map(|d| (v.vma, d)))
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
