//! A copied snapshot made incremental over a parent image, after the task is resumed: every
//! page is compared with what the parent chain resolves to ([`super::incremental`]'s rules)
//! and the records are planned again ([`super::plan::Planner`]), in place in the buffer.

use super::incremental::{equal_in_parent, vmas_in_parent, Parent};
use super::plan::{PageClass, PageCounts, Planner, RecordPlan};
use super::snapshot::Snapshot;
use super::vma::Scan;
use crate::error::{Error, Result};
use crate::span::PageSpan;
use cr_format::chain::ChainIndex;
use cr_format::raw;

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

impl Delta {
    fn add(&mut self, c: PageCounts) {
        self.data += c.data;
        self.zero += c.zero;
        self.parent += c.parent;
    }
}

/// Turns a full snapshot into an incremental one over `parent`: pages equal to the parent's
/// become `RUN_PARENT`, the data kept is squeezed to the front of the buffer, and the Header
/// names the parent (CRID, digest) with `DIFF_CONTENT_COMPARE` (or `DIFF_WRITE_TRACKING` when a
/// tracker said which pages were written).
pub fn make_incremental(snap: &mut Snapshot, parent: &Parent) -> Result<Delta> {
    let ps32 = snap.meta.header.page_size.get();
    parent.check_for(ps32, snap.crid)?;
    let ps = usize::try_from(ps32)
        .map_err(|_| Error::Other(format!("internal: page size {ps32} does not fit")))?;
    let buf = &mut snap.buf;
    let vmas = &mut snap.vmas;
    let delta = parent.with_index(|idx, images| -> Result<Delta> {
        let top = images
            .first()
            .ok_or_else(|| Error::Other("internal: the parent chain has no image".into()))?;
        let in_parent = vmas_in_parent(top, vmas.iter().map(|sv| &sv.vma));
        let mut delta = Delta::default();
        let mut dst = 0usize;
        for (sv, &inp) in vmas.iter_mut().zip(&in_parent) {
            if !inp {
                delta.new_vmas += 1;
            }
            let mut p = Planner::new(&mut buf[..], dst, ps);
            match sv.tracked.take() {
                // Only the written pages were copied: without the parent they are not enough.
                Some(_) if !inp => {
                    return Err(Error::Other(
                        "internal error: a tracked VMA is not in the parent image".into(),
                    ))
                }
                Some(sc) => {
                    delta.tracked_vmas += 1;
                    replan_tracked(&mut p, idx, &sv.records, &sc, ps)?;
                }
                None => replan(&mut p, idx, inp, &sv.records, ps)?,
            }
            let planned = p.finish();
            dst = planned.data_end;
            sv.records = planned.records;
            delta.add(planned.counts);
        }
        Ok(delta)
    })??;
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

/// The page of `buf` at `at`, or the error saying that the records point past it.
fn page_at(buf: &[u8], at: usize, ps: usize, addr: u64) -> Result<&[u8]> {
    buf.get(at..at.saturating_add(ps)).ok_or_else(|| {
        Error::Other(format!(
            "internal: the data of page {addr:#x} at {at:#x} is past the page buffer"
        ))
    })
}

/// Plans a VMA's copied records again: a page equal to the parent's (only if the VMA is
/// `in_parent`) becomes a parent run.
fn replan(
    p: &mut Planner<'_>,
    idx: &ChainIndex<'_>,
    in_parent: bool,
    records: &[RecordPlan],
    ps: usize,
) -> Result<()> {
    for rec in records {
        let mut src = rec.data.start;
        for run in &rec.runs {
            let kind = run.kind.get();
            for k in 0..u64::from(run.pages.get()) {
                let a = run.addr.get() + k * ps as u64;
                let class = if kind == raw::RUN_DATA {
                    let page = page_at(p.buf(), src, ps, a)?;
                    let c = if in_parent && equal_in_parent(idx, a, Some(page)) {
                        PageClass::Parent
                    } else {
                        PageClass::Data(src)
                    };
                    src += ps;
                    c
                } else if in_parent && equal_in_parent(idx, a, None) {
                    PageClass::Parent
                } else {
                    PageClass::Zero
                };
                p.page(a, class)?;
            }
        }
    }
    Ok(())
}

/// Where a page of a tracked VMA comes from.
#[derive(Clone, Copy)]
enum Source {
    /// Written since the parent: copied (in the records).
    Copied,
    /// Not written: in the parent.
    Unchanged,
    /// The shared zero page.
    ZeroPage,
}

/// Plans a tracked VMA: the copied (written) pages of its records, merged in address order
/// with the scan's unchanged ("in the parent") and zero-page spans.
fn replan_tracked(
    p: &mut Planner<'_>,
    idx: &ChainIndex<'_>,
    records: &[RecordPlan],
    sc: &Scan,
    ps: usize,
) -> Result<()> {
    let mut items: Vec<(PageSpan, Source)> = Vec::new();
    for rec in records {
        for run in &rec.runs {
            let s = PageSpan::new(run.addr.get(), u64::from(run.pages.get()));
            items.push((s, Source::Copied));
        }
    }
    items.extend(sc.unchanged.iter().map(|&r| (r, Source::Unchanged)));
    items.extend(sc.zero.iter().map(|&r| (r, Source::ZeroPage)));
    items.sort_unstable_by_key(|i| i.0.addr);
    // Each copied page: for data, where its bytes are.
    let mut copied: Vec<Option<usize>> = Vec::new();
    for r in records {
        let mut src = r.data.start;
        for run in &r.runs {
            let data = run.kind.get() == raw::RUN_DATA;
            for _ in 0..run.pages.get() {
                copied.push(data.then_some(src));
                if data {
                    src += ps;
                }
            }
        }
    }
    let mut copied = copied.into_iter();
    for (s, source) in items {
        for k in 0..s.pages {
            let a = s.addr + k * ps as u64;
            let class = match source {
                Source::Unchanged => PageClass::Parent,
                Source::ZeroPage => PageClass::Zero,
                Source::Copied => {
                    let src = copied.next().ok_or_else(|| {
                        Error::Other(format!(
                            "internal: copied page {a:#x} is not in the records"
                        ))
                    })?;
                    let page = src.map(|at| page_at(p.buf(), at, ps, a)).transpose()?;
                    match src {
                        _ if equal_in_parent(idx, a, page) => PageClass::Parent,
                        Some(at) => PageClass::Data(at),
                        None => PageClass::Zero,
                    }
                }
            };
            p.page(a, class)?;
        }
    }
    Ok(())
}
