//! Lazy capture: freeze, hold the memory (a copy into a buffer, or a copy-on-write twin),
//! resume the task, plan the records; the image is written later from the [`Snapshot`].

use super::check::Inspection;
use super::freeze::{freeze, frozen_err, Frozen};
use super::memory::{
    buf_len, open_proc, page_size, pages_in, read_memory_parallel, spans_of, spans_of_all,
};
use super::options::{Options, Stats};
use super::plan::plan_pages;
use super::snapshot::{SnapVma, Snapshot};
use super::task::read_frozen;
use super::twin;
use super::vma::{Scan, Tracker};
use crate::error::{Error, Result};
use crate::span::PageSpan;
use crate::sys;
use std::time::Instant;

/// Lazy capture: freeze, copy memory into `buf` (grown if too small), release the task, plan
/// the records.
pub(crate) fn capture_lazy(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    buf: sys::MapBuf,
) -> Result<Snapshot> {
    let started = Instant::now();
    let pid = ins.pid;
    let frozen = freeze(pid)?;
    capture_frozen(ins, crid, opts, buf, frozen, started, None).map_err(|e| frozen_err(pid, e))
}

/// [`capture_lazy`] with a dirty tracker.
pub(crate) fn capture_lazy_tracked(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    buf: sys::MapBuf,
    tracker: &mut dyn Tracker,
) -> Result<Snapshot> {
    let started = Instant::now();
    let pid = ins.pid;
    let frozen = freeze(pid)?;
    capture_frozen(ins, crid, opts, buf, frozen, started, Some(tracker))
        .map_err(|e| frozen_err(pid, e))
}

/// Lazy capture by a copy-on-write twin ([`super::twin`]): freeze, (re)arm dirty tracking if
/// `tracker` is given (one that gives no scans: a full capture), make the twin, copy the shared
/// memory the twin would share rather than hold ([`copy_held`]), release the task. The twin is
/// made after the arming, so its memory is the tracker's baseline: the task is stopped for the
/// arming, a fork and the copy of shared memory, not for a copy of all its memory. When no twin
/// can stand for the task, the memory is copied while it is stopped, into `fallback` (grown if
/// too small) as [`capture_lazy`] does, and the reason is in [`Snapshot::twin`]'s absence and
/// the returned note.
pub(crate) fn capture_cow(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    mut tracker: Option<&mut dyn Tracker>,
    fallback: impl FnOnce() -> Result<sys::MapBuf>,
) -> Result<(Snapshot, Option<String>)> {
    let started = Instant::now();
    let pid = ins.pid;
    let (_, ps32) = page_size()?;
    let frozen = freeze(pid)?;
    let made = read_frozen(ins, crid, ps32, &opts.state).and_then(|(meta, vmas)| {
        if let Some(t) = tracker.as_mut() {
            t.arm(pid, &vmas)?;
        }
        Ok((twin::make(pid, &vmas)?, meta, vmas))
    });
    match made {
        Ok((Ok(twin), meta, vmas)) => {
            // The twin shares shared memory with the task: those VMAs are copied now.
            let (vmas, buf, mut stats) = match copy_held(pid, vmas, fallback) {
                Ok(v) => v,
                Err(e) => {
                    let _ = twin.discard_frozen();
                    return Err(frozen_err(pid, e));
                }
            };
            stats.downtime = frozen.release(opts.after)?;
            stats.capture = started.elapsed();
            Ok((
                Snapshot {
                    crid,
                    pid,
                    meta,
                    vmas,
                    buf,
                    stats,
                    twin: Some(twin),
                    parent: None,
                },
                None,
            ))
        }
        Ok((Err(why), _, _)) => {
            let buf = fallback()?;
            // Armed above: armed again (the same ranges, protected afterwards) before the copy.
            let snap = capture_frozen(ins, crid, opts, buf, frozen, started, tracker)
                .map_err(|e| frozen_err(pid, e))?;
            Ok((snap, Some(why)))
        }
        Err(e) => Err(frozen_err(pid, e)),
    }
}

/// For a capture by a twin: the pages of the VMAs the twin cannot hold
/// ([`super::vma::VmaRec::held_by_copy`]: shared memory) copied from the frozen task into
/// `buf` (from `buf()`, grown if too small), with their records; the other VMAs without
/// records (the write-back streams them from the twin). No buffer when there is nothing to
/// copy. Measured on a 256 MiB task with one shared page (7 alternating runs, release build,
/// a loaded machine): median downtime 33 ms, against 628 ms when the shared page made the
/// capture copy the whole task while it was stopped.
fn copy_held(
    pid: i32,
    vmas: Vec<super::vma::VmaRec>,
    buf: impl FnOnce() -> Result<sys::MapBuf>,
) -> Result<(Vec<SnapVma>, sys::MapBuf, Stats)> {
    let mut stats = Stats {
        vmas: vmas.len() as u64,
        ..Stats::default()
    };
    if !vmas.iter().any(|v| v.held_by_copy()) {
        let vmas = vmas
            .into_iter()
            .map(|vma| SnapVma {
                vma,
                records: Vec::new(),
                tracked: None,
            })
            .collect();
        return Ok((vmas, sys::MapBuf::empty(), stats));
    }
    let (ps, _) = page_size()?;
    let ps64 = ps as u64;
    let pagemap = open_proc(pid, "pagemap")?;
    let mem = open_proc(pid, "mem")?;
    let mut per_vma = Vec::with_capacity(vmas.len());
    for v in &vmas {
        per_vma.push(if v.held_by_copy() {
            spans_of(pid, &pagemap, v, ps64)?
        } else {
            Vec::new()
        });
    }
    let all: Vec<PageSpan> = per_vma.iter().flatten().copied().collect();
    let need = buf_len(pages_in(&all), ps)?;
    let mut buf = buf()?;
    if buf.len() < need {
        buf = sys::MapBuf::new(need).map_err(|e| Error::io("allocating the page buffer", e))?;
    }
    read_memory_parallel(pid, &mem, &all, ps64, &mut buf)?;
    let scans = vec![None; vmas.len()];
    let snap_vmas = plan_copied(vmas, per_vma, scans, &mut buf, ps, &mut stats)?;
    Ok((snap_vmas, buf, stats))
}

fn capture_frozen(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    mut buf: sys::MapBuf,
    frozen: Frozen,
    started: Instant,
    mut tracker: Option<&mut dyn Tracker>,
) -> Result<Snapshot> {
    let pid = ins.pid;
    let (ps, ps32) = page_size()?;
    let ps64 = ps as u64;
    let pagemap = open_proc(pid, "pagemap")?;
    let mem = open_proc(pid, "mem")?;
    let (meta, vmas) = read_frozen(ins, crid, ps32, &opts.state)?;
    let mut scans = match tracker.as_mut() {
        Some(t) => t.scan(pid, &vmas)?,
        None => Vec::new(),
    };
    // Arm before the copy: creating the userfaultfd runs one instruction of the task, and the
    // kernel may write to its memory on that way back to user mode (rseq's cpu id): the copy
    // must come after. Writes from then on are tracked.
    if let Some(t) = tracker.as_mut() {
        t.arm(pid, &vmas)?;
    }
    scans.resize(vmas.len(), None);
    // One walk of the whole address space for the VMAs without a scan.
    let mut per_vma = if scans.iter().all(Option::is_some) {
        vec![Vec::new(); vmas.len()]
    } else {
        spans_of_all(pid, &pagemap, &vmas, ps64)?
    };
    for (spans, sc) in per_vma.iter_mut().zip(&scans) {
        if let Some(sc) = sc {
            spans.clone_from(&sc.written);
        }
    }
    let all: Vec<PageSpan> = per_vma.iter().flatten().copied().collect();
    let need = buf_len(pages_in(&all), ps)?;
    if buf.len() < need {
        buf = sys::MapBuf::new(need).map_err(|e| Error::io("allocating the page buffer", e))?;
    }
    read_memory_parallel(pid, &mem, &all, ps64, &mut buf)?;
    let downtime = frozen.release(opts.after)?;
    let mut stats = Stats {
        downtime,
        vmas: vmas.len() as u64,
        ..Stats::default()
    };
    let snap_vmas = plan_copied(vmas, per_vma, scans, &mut buf, ps, &mut stats)?;
    stats.capture = started.elapsed();
    Ok(Snapshot {
        crid,
        pid,
        meta,
        vmas: snap_vmas,
        buf,
        stats,
        twin: None,
        parent: None,
    })
}

/// Plans the records of the pages copied back to back into `buf`, VMA by VMA, each VMA's data
/// moved down to the end of the data kept so far.
fn plan_copied(
    vmas: Vec<super::vma::VmaRec>,
    per_vma: Vec<Vec<PageSpan>>,
    scans: Vec<Option<Scan>>,
    buf: &mut [u8],
    ps: usize,
    stats: &mut Stats,
) -> Result<Vec<SnapVma>> {
    let mut snap_vmas = Vec::with_capacity(vmas.len());
    let mut src = 0usize;
    let mut dst = 0usize;
    for ((v, rs), tracked) in vmas.into_iter().zip(per_vma).zip(scans) {
        let bytes = buf_len(pages_in(&rs), ps)?;
        if src != dst && bytes > 0 {
            let end = src
                .checked_add(bytes)
                .filter(|&e| e <= buf.len())
                .ok_or_else(|| Error::Other("internal: copied pages past the buffer".into()))?;
            buf.copy_within(src..end, dst);
        }
        let planned = plan_pages(&rs, buf, dst, ps, None)?;
        stats.data_pages += planned.counts.data;
        stats.zero_pages += planned.counts.zero;
        src += bytes;
        dst = planned.data_end;
        snap_vmas.push(SnapVma {
            vma: v,
            records: planned.records,
            tracked,
        });
    }
    Ok(snap_vmas)
}
