//! Chain resolution (no allocation): given an image and its ancestors, where does a page's
//! content live.

use crate::error::{Error, ErrorKind, Result};
use crate::limits::MAX_CHAIN_DEPTH;
use crate::read::{Image, Lookup, Vma};

/// Offset of the Header's `parent_crid` field: where chain errors point in the child.
const PARENT_CRID_OFFSET: u64 = 16 + 32;

/// A checked chain: `images[0]` is the newest, each next one the parent of the one before, the
/// last one a full image.
#[derive(Clone, Copy, Debug)]
pub struct Chain<'c, 'a> {
    images: &'c [Image<'a>],
}

/// Where a page's content lives.
#[derive(Clone, Copy, Debug)]
pub enum Resolved<'a> {
    /// In this image's data (one page; in an [`Extent`], every page of the extent).
    Data {
        /// CRID of the image that holds it.
        crid: u64,
        /// The page (the pages).
        bytes: &'a [u8],
    },
    /// Known zero.
    Zero {
        /// CRID of the image that says so.
        crid: u64,
    },
    /// Never touched: zero for anonymous memory, the file's bytes for a file mapping.
    NotPresent {
        /// CRID of the image that says so.
        crid: u64,
        /// The VMA that holds it.
        vma: Vma<'a>,
    },
}

impl<'c, 'a> Chain<'c, 'a> {
    /// Checks every link: each parent has the CRID and tail digest its child names, the last
    /// image is full, no image is left over, the depth is within
    /// [`MAX_CHAIN_DEPTH`].
    pub fn new(images: &'c [Image<'a>]) -> Result<Self> {
        let depth = u64::try_from(images.len()).unwrap_or(u64::MAX);
        if depth > u64::from(MAX_CHAIN_DEPTH) {
            return Err(Error::new(
                0,
                ErrorKind::LimitExceeded {
                    limit: "MAX_CHAIN_DEPTH",
                    max: MAX_CHAIN_DEPTH.into(),
                    found: depth,
                },
            ));
        }
        let Some(top) = images.first() else {
            return Err(Error::new(0, ErrorKind::MissingParent { crid: 0 }));
        };
        let mut child = top;
        for parent in images.iter().skip(1) {
            let want = child.parent_crid();
            if want == 0 {
                return Err(Error::new(
                    0,
                    ErrorKind::ExtraImage {
                        crid: parent.crid(),
                    },
                ));
            }
            if parent.crid() != want {
                return Err(Error::new(
                    PARENT_CRID_OFFSET,
                    ErrorKind::WrongParent {
                        expected_crid: want,
                        found_crid: parent.crid(),
                    },
                ));
            }
            let digest = child.header().parent_digest.get();
            if parent.digest() != digest {
                return Err(Error::new(
                    PARENT_CRID_OFFSET + 8,
                    ErrorKind::ParentDigestMismatch {
                        expected: digest,
                        found: parent.digest(),
                    },
                ));
            }
            if parent.page_size() != child.page_size() {
                return Err(Error::new(
                    16 + 16,
                    ErrorKind::BadField {
                        field: "page_size",
                        expected: "the same in every image of a chain",
                        found: parent.page_size().into(),
                    },
                ));
            }
            child = parent;
        }
        if child.parent_crid() != 0 {
            return Err(Error::new(
                PARENT_CRID_OFFSET,
                ErrorKind::MissingParent {
                    crid: child.parent_crid(),
                },
            ));
        }
        Ok(Chain { images })
    }

    /// The images, newest first.
    pub fn images(&self) -> &'c [Image<'a>] {
        self.images
    }

    /// Where the page holding `addr` lives. `NotMapped` if the newest image has no VMA there;
    /// the same error (with the address) if a "parent" run points at an address its parent
    /// does not map: a dangling reference.
    pub fn resolve(&self, addr: u64) -> Result<Resolved<'a>> {
        for img in self.images {
            match img.lookup(addr) {
                Lookup::Data(bytes) => {
                    return Ok(Resolved::Data {
                        crid: img.crid(),
                        bytes,
                    })
                }
                Lookup::Zero => return Ok(Resolved::Zero { crid: img.crid() }),
                Lookup::NotPresent(vma) => {
                    return Ok(Resolved::NotPresent {
                        crid: img.crid(),
                        vma,
                    })
                }
                Lookup::Parent => continue,
                Lookup::NotMapped => break,
            }
        }
        Err(Error::new(0, ErrorKind::NotMapped { addr }))
    }
}

#[cfg(feature = "alloc")]
pub use index::{ChainIndex, Extent};

#[cfg(feature = "alloc")]
mod index {
    use super::*;
    use crate::read::{Record, RunKind};
    use alloc::vec::Vec;

    #[derive(Clone, Copy, Debug)]
    struct RunAt<'a> {
        addr: u64,
        end: u64,
        kind: RunKind,
        data: Option<&'a [u8]>,
    }

    #[derive(Clone, Debug)]
    struct Level<'a> {
        crid: u64,
        vmas: Vec<Vma<'a>>,
        runs: Vec<RunAt<'a>>,
    }

    /// A [`Chain`] with each image's VMAs and runs in sorted tables: resolving a page costs a
    /// binary search per image instead of a walk over its records. Memory is one small entry per
    /// VMA and per run; page data stays where it is.
    #[derive(Clone, Debug)]
    pub struct ChainIndex<'a> {
        levels: Vec<Level<'a>>,
        page_size: u32,
    }

    impl<'a> ChainIndex<'a> {
        /// Indexes every image of a checked chain.
        pub fn new(chain: &Chain<'_, 'a>) -> Self {
            let mut levels = Vec::new();
            let mut page_size = 0;
            for img in chain.images() {
                page_size = img.page_size();
                let mut l = Level {
                    crid: img.crid(),
                    vmas: Vec::new(),
                    runs: Vec::new(),
                };
                for r in img.records() {
                    match r.record {
                        Record::Vma(v) => l.vmas.push(v),
                        Record::Pages(p) => l.runs.extend(p.iter().map(|r| RunAt {
                            addr: r.addr,
                            end: r.end(page_size),
                            kind: r.kind,
                            data: r.data,
                        })),
                        _ => {}
                    }
                }
                levels.push(l);
            }
            ChainIndex { levels, page_size }
        }

        /// Number of images.
        pub fn depth(&self) -> usize {
            self.levels.len()
        }

        /// Where the page holding `addr` lives, starting at the newest image.
        pub fn resolve(&self, addr: u64) -> Result<Resolved<'a>> {
            self.resolve_from(0, addr)
        }

        /// Where the page holding `addr` lives, starting at image `level` (0 = newest): checks a
        /// "parent" reference of image `level - 1`.
        pub fn resolve_from(&self, level: usize, addr: u64) -> Result<Resolved<'a>> {
            let ps = u64::from(self.page_size);
            let page = addr & !ps.saturating_sub(1);
            for l in self.levels.iter().skip(level) {
                let i = l.vmas.partition_point(|v| v.end() <= page);
                let Some(vma) = l.vmas.get(i).filter(|v| v.start() <= page) else {
                    break;
                };
                let j = l.runs.partition_point(|r| r.end <= page);
                match l.runs.get(j).filter(|r| r.addr <= page) {
                    None => {
                        return Ok(Resolved::NotPresent {
                            crid: l.crid,
                            vma: *vma,
                        })
                    }
                    Some(r) => match r.kind {
                        RunKind::Parent => continue,
                        RunKind::Zero => return Ok(Resolved::Zero { crid: l.crid }),
                        RunKind::Data => {
                            let off = crate::validate::to_usize(page.saturating_sub(r.addr));
                            let n = crate::validate::to_usize(ps);
                            let bytes = r
                                .data
                                .and_then(|d| d.get(off..off.saturating_add(n)))
                                .unwrap_or(&[]);
                            return Ok(Resolved::Data {
                                crid: l.crid,
                                bytes,
                            });
                        }
                    },
                }
            }
            Err(Error::new(0, ErrorKind::NotMapped { addr }))
        }

        /// The longest stretch from the page holding `addr` on whose pages the chain, starting
        /// at image `level` (0 = newest), answers the same way: same image, same kind, and for
        /// data, consecutive bytes of one run. Its cost is a binary search per image, whatever
        /// the stretch's length, so callers walk a range run by run instead of page by page
        /// (a hostile image may hold a run of 2^32-1 pages).
        pub fn extent_from(&self, level: usize, addr: u64) -> Extent<'a> {
            let ps = u64::from(self.page_size);
            let start = addr & !ps.saturating_sub(1);
            // Every image passed through narrows the stretch to where it still says "parent".
            let mut end = u64::MAX;
            for l in self.levels.iter().skip(level) {
                let i = l.vmas.partition_point(|v| v.end() <= start);
                let Some(vma) = l.vmas.get(i).filter(|v| v.start() <= start) else {
                    // Unmapped up to this image's next VMA.
                    let gap_end = l.vmas.get(i).map_or(u64::MAX, |v| v.start());
                    return Extent {
                        start,
                        end: end.min(gap_end),
                        resolved: None,
                    };
                };
                end = end.min(vma.end());
                let j = l.runs.partition_point(|r| r.end <= start);
                let run = l.runs.get(j);
                let Some(r) = run.filter(|r| r.addr <= start) else {
                    // Not present up to the next run (or the VMA's end).
                    let next = run.map_or(u64::MAX, |r| r.addr);
                    return Extent {
                        start,
                        end: end.min(next),
                        resolved: Some(Resolved::NotPresent {
                            crid: l.crid,
                            vma: *vma,
                        }),
                    };
                };
                end = end.min(r.end);
                let resolved = match r.kind {
                    RunKind::Parent => continue,
                    RunKind::Zero => Resolved::Zero { crid: l.crid },
                    RunKind::Data => {
                        let off = crate::validate::to_usize(start.saturating_sub(r.addr));
                        let n = crate::validate::to_usize(end.saturating_sub(start));
                        let bytes = r
                            .data
                            .and_then(|d| d.get(off..off.saturating_add(n)))
                            .unwrap_or(&[]);
                        Resolved::Data {
                            crid: l.crid,
                            bytes,
                        }
                    }
                };
                return Extent {
                    start,
                    end,
                    resolved: Some(resolved),
                };
            }
            // Every image said "parent" (or there is none below `level`): nothing holds it.
            Extent {
                start,
                end,
                resolved: None,
            }
        }

        /// [`ChainIndex::extent_from`] from the newest image.
        pub fn extent(&self, addr: u64) -> Extent<'a> {
            self.extent_from(0, addr)
        }

        /// Checks that every "parent" page of every image resolves in its ancestors; returns the
        /// number of such pages, or the first dangling one. Walks extents, not pages: the cost
        /// is per run and VMA of the chain, not per page they cover.
        pub fn check_parent_refs(&self) -> Result<u64> {
            let ps = u64::from(self.page_size).max(1);
            let mut n: u64 = 0;
            for (i, l) in self.levels.iter().enumerate() {
                for r in l.runs.iter().filter(|r| r.kind == RunKind::Parent) {
                    let mut a = r.addr;
                    while a < r.end {
                        let e = self.extent_from(i.saturating_add(1), a);
                        if e.resolved.is_none() {
                            return Err(Error::new(0, ErrorKind::NotMapped { addr: a }));
                        }
                        // An extent ends past its start: progress is certain; `max` keeps it
                        // so even if it did not.
                        let next = e.end.min(r.end).max(a.saturating_add(ps));
                        n = n.saturating_add(next.saturating_sub(a).checked_div(ps).unwrap_or(0));
                        if next == a {
                            break;
                        }
                        a = next;
                    }
                }
            }
            Ok(n)
        }
    }

    /// A stretch of pages that the chain resolves the same way: see
    /// [`ChainIndex::extent_from`].
    #[derive(Clone, Copy, Debug)]
    pub struct Extent<'a> {
        /// First address (page-aligned).
        pub start: u64,
        /// End address (exclusive; `u64::MAX` when the stretch reaches the end of the address
        /// space).
        pub end: u64,
        /// How its pages resolve; `None` where no image of the chain maps them (the newest
        /// image has no VMA there, or a "parent" reference dangles). For data, `bytes` are the
        /// whole stretch's (`end - start` bytes, or fewer if the run's data is short).
        pub resolved: Option<Resolved<'a>>,
    }
}
