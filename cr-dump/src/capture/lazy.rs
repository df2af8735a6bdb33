//! Lazy capture: freeze, hold the memory (a copy into a buffer, or a copy-on-write twin),
//! resume the task, plan the records; the image is written later from the [`Snapshot`].

use super::check::Inspection;
use super::check::{check_maps, read_smaps};
use super::freeze::{freeze, frozen_err, Frozen};
use super::memory::{
    buf_len, open_proc, page_size, pages_in, read_memory_parallel, spans_of, spans_of_all,
};
use super::options::{Options, Stats};
use super::plan::plan_pages;
use super::snapshot::{SnapVma, Snapshot};
use super::task::{complete, read_frame, read_frozen, read_status_frozen, Meta};
use super::twin;
use super::vma::{Scan, Tracker, VmaRec};
use crate::error::{Error, Result};
use crate::span::PageSpan;
use crate::sys;
use cr_format::raw;
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
    ins.load_smaps()?;
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
    ins.load_smaps()?;
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
///
/// Without a tracker (or with one armed while the task ran: [`Tracker::armed_while_running`]),
/// and when the inspection saw no memory a twin cannot hold and no locked memory, the stop is
/// shorter ([`cow_fast`]): the mappings are read from the twin once the task runs again, not
/// from the task while it is stopped.
pub(crate) fn capture_cow(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    tracker: Option<&mut dyn Tracker>,
    fallback: impl FnOnce() -> Result<sys::MapBuf>,
) -> Result<(Snapshot, Option<String>)> {
    let started = Instant::now();
    let pid = ins.pid;
    let mut tracker = tracker;
    // A tracker armed while the task ran needs nothing of the freeze.
    if fast_eligible(ins) && tracker.as_mut().is_none_or(|t| t.armed_while_running()) {
        let frozen = freeze(pid)?;
        match cow_fast(ins, crid, opts, frozen, started).map_err(|e| frozen_err(pid, e))? {
            Fast::Done(snap) => return Ok((*snap, None)),
            Fast::Frozen(frozen, None) => {
                return cow_frozen(ins, crid, opts, tracker, fallback, frozen, started)
            }
            Fast::Frozen(frozen, Some(why)) => {
                let buf = fallback()?;
                let snap = capture_frozen(ins, crid, opts, buf, frozen, started, tracker)
                    .map_err(|e| frozen_err(pid, e))?;
                return Ok((snap, Some(why)));
            }
            Fast::Retry(why, first) => {
                // Taken again, the old way: its twin is checked while the task is stopped.
                ins.load_smaps()?;
                let frozen = freeze(pid)?;
                let (mut snap, note) =
                    cow_frozen(ins, crid, opts, tracker, fallback, frozen, Instant::now())?;
                snap.stats.downtime += first;
                snap.stats.capture = started.elapsed();
                let note = note.map(|n| {
                    format!("{n} (taken in a second stop: the twin of the first one {why})")
                });
                return Ok((snap, note));
            }
        }
    }
    ins.load_smaps()?;
    let frozen = freeze(pid)?;
    cow_frozen(ins, crid, opts, tracker, fallback, frozen, started)
}

/// Whether [`cow_fast`] may be tried: the inspection saw no memory a twin cannot hold
/// ([`super::vma::held_by_copy_map`]: it is copied while the task is stopped, so its VMAs must
/// be known then) and no locked memory (a child does not inherit `VM_LOCKED`, so the twin
/// cannot show which mappings are locked).
fn fast_eligible(ins: &Inspection) -> bool {
    ins.status.vm_lck == 0 && !ins.maps.iter().any(super::vma::held_by_copy_map)
}

/// What [`cow_fast`] gave.
enum Fast {
    /// The snapshot, by a twin.
    Done(Box<Snapshot>),
    /// The task is still frozen: locked memory appeared since the inspection (`None`: the
    /// mappings must be read from the task), or no twin could be made (why: the memory is to
    /// be copied).
    Frozen(Frozen, Option<String>),
    /// The task was let go after a stop this long, and the twin turned out unable to stand
    /// for it (why): the capture is to be taken again.
    Retry(String, std::time::Duration),
}

/// A capture by a twin whose mappings are read after the task is let go. While the task is
/// frozen: its registers and state besides memory ([`read_frame`]), the twin (an injected
/// `clone`), and the task's `VmSize`. Then, the task running again, the twin, which does not
/// run and whose mappings are the task's at the fork, gives them with their attributes (its
/// smaps): every VMA is copied to a child with its flags except `MADV_DONTFORK` ones (seen
/// as a smaller `VmSize`), `VM_LOCKED` (there was none: `VmLck` 0 at the freeze) and the
/// userfaultfd flags (not recorded). A twin that turns out unable to stand for the task (a
/// `MADV_DONTFORK` or `MADV_WIPEONFORK` mapping, or memory it would share, appeared since the
/// inspection) is discarded and the capture is to be taken again ([`Fast::Retry`]): the image
/// is never made from it. 65,000 one-page mappings: the stop loses the read of maps (30-40
/// ms), the VMA records (10 ms) and the twin check's two page walks (40-120 ms).
fn cow_fast(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    frozen: Frozen,
    started: Instant,
) -> Result<Fast> {
    let pid = ins.pid;
    let (_, ps32) = page_size()?;
    let st = read_status_frozen(pid)?;
    if st.0.vm_lck != 0 {
        return Ok(Fast::Frozen(frozen, None));
    }
    // The task's mappings at the clone are those at the freeze: the injected calls that map
    // (the mlockall probe, a scratch page) unmap again.
    let task_kb = st.0.vm_size / 1024;
    let frame = read_frame(ins, crid, ps32, &opts.state, (st.0.clone(), st.1))?;
    let mut twin = match twin::make_unchecked(pid, &st.0)? {
        Ok(t) => t,
        Err(why) => return Ok(Fast::Frozen(frozen, Some(why))),
    };
    let downtime = frozen.release(opts.after)?;
    // From here the task runs; an error drops the twin (killed, reaped in a brief stop).
    twin.ready()?;
    let g = twin.pid();
    let sm = read_smaps(g)?;
    let twin_kb = twin::vm_size_kb(g)?;
    if twin_kb != task_kb {
        return Ok(Fast::Retry(
            format!(
                "lacks {} kB of mappings (MADV_DONTFORK)",
                task_kb.saturating_sub(twin_kb)
            ),
            downtime,
        ));
    }
    check_maps(pid, &sm.maps)?;
    let (meta, vmas) = complete(pid, frame, g, (&sm.maps, &sm.attrs), &opts.state)?;
    if let Some(why) = vmas.iter().find_map(cannot_stand) {
        return Ok(Fast::Retry(why, downtime));
    }
    let stats = Stats {
        downtime,
        vmas: vmas.len() as u64,
        capture: started.elapsed(),
        ..Stats::default()
    };
    let vmas = vmas
        .into_iter()
        .map(|vma| SnapVma {
            vma,
            records: Vec::new(),
            tracked: None,
        })
        .collect();
    Ok(Fast::Done(Box::new(Snapshot {
        crid,
        pid,
        meta,
        vmas,
        buf: sys::MapBuf::empty(),
        stats,
        twin: Some(twin),
        parent: None,
    })))
}

/// Why the twin cannot stand for the task as to `v` (one of its VMAs): memory a twin shares
/// rather than holds, or anonymous memory emptied in a child (`MADV_WIPEONFORK`).
fn cannot_stand(v: &VmaRec) -> Option<String> {
    let (a, b) = (v.vma.start.get(), v.vma.end.get());
    if let Some(why) = v.not_copied_by_fork() {
        return Some(format!("has VMA {a:#x}-{b:#x}, which {why}"));
    }
    (v.stored() && v.kind().anon() && v.attrs & raw::VMA_ATTR_WIPEONFORK != 0)
        .then(|| format!("has VMA {a:#x}-{b:#x} emptied (MADV_WIPEONFORK)"))
}

/// The capture by a twin of the task `frozen`, its mappings read while it is frozen: see
/// [`capture_cow`].
fn cow_frozen(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    mut tracker: Option<&mut dyn Tracker>,
    fallback: impl FnOnce() -> Result<sys::MapBuf>,
    frozen: Frozen,
    started: Instant,
) -> Result<(Snapshot, Option<String>)> {
    let pid = ins.pid;
    let (_, ps32) = page_size()?;
    let made = read_frozen(ins, crid, ps32, &opts.state).and_then(|(meta, vmas)| {
        let Some(t) = tracker.as_mut() else {
            return Ok((twin::make(pid, &vmas)?, meta, vmas));
        };
        t.arm(pid, &vmas)?;
        let (meta, vmas, _) = reread_if_remapped(ins, crid, opts, &**t, (meta, vmas), Vec::new())?;
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
    let (meta, vmas) = match tracker.as_mut() {
        Some(t) => {
            t.arm(pid, &vmas)?;
            let (meta, vmas, sc) = reread_if_remapped(ins, crid, opts, &**t, (meta, vmas), scans)?;
            scans = sc;
            (meta, vmas)
        }
        None => (meta, vmas),
    };
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

/// After an arming in the freeze that registered ranges ([`Tracker::remapped`]: the kernel
/// merges a VMA it registers with a registered neighbour, which also undoes a split left by a
/// registration while the task ran), the task's state and VMAs read again, so that the image
/// has the VMAs the task has; each scan stays with the VMA of the same bounds (a VMA merged
/// since has none: it is captured in full). Otherwise, what was read.
fn reread_if_remapped(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    tracker: &dyn Tracker,
    (meta, vmas): (Meta, Vec<VmaRec>),
    scans: Vec<Option<Scan>>,
) -> Result<(Meta, Vec<VmaRec>, Vec<Option<Scan>>)> {
    if !tracker.remapped() {
        return Ok((meta, vmas, scans));
    }
    let (_, ps32) = page_size()?;
    let mut by_range: std::collections::HashMap<(u64, u64), Scan> = vmas
        .iter()
        .zip(scans)
        .filter_map(|(v, s)| Some(((v.vma.start.get(), v.vma.end.get()), s?)))
        .collect();
    let (meta, vmas) = read_frozen(ins, crid, ps32, &opts.state)?;
    let scans = vmas
        .iter()
        .map(|v| by_range.remove(&(v.vma.start.get(), v.vma.end.get())))
        .collect();
    Ok((meta, vmas, scans))
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
