//! Pre-copy: arm write-protect tracking (a short freeze), copy every present page of the
//! task's private writable anonymous memory while it runs, then copy again, round after round,
//! the pages written meanwhile, until the number stops shrinking or a bound is hit; then
//! freeze, copy the last delta (and, in full, what tracking does not cover), resume. The
//! snapshot is the task's state at that last freeze. Tracking stays armed with the snapshot as
//! its baseline.
//!
//! Pages copied while the task runs wait in a `PageStore`; each pre-copied VMA has a table of
//! slots, one per page (`PreVma`). At the end the pages are laid out in address order in one
//! buffer and planned as a copy is. Pages are found by address, not by the VMA they were
//! copied under: the final arming may merge a VMA it registers with a registered neighbour
//! (a mapping the task made meanwhile), and the image then has the merged VMA, read again.

use super::check::{check_maps, read_text, Inspection};
use super::freeze::{freeze, frozen_err, is_gone};
use super::memory::{buf_len, open_proc, page_size, pages_in, read_memory, spans_of};
use super::options::{After, Options, Stats};
use super::plan::plan_pages;
use super::snapshot::{SnapVma, Snapshot};
use super::task::{read_frozen, Meta};
use super::tracking::{self, Session};
use super::vma::{Scan, Tracker, VmaRec};
use crate::error::{Error, Result};
use crate::procfs;
use crate::span::{AddrRange, PageSpan};
use crate::sys;
use std::fs::File;
use std::time::{Duration, Instant};

/// Bounds of a pre-copy.
#[derive(Clone, Copy, Debug)]
pub struct PrecopyLimits {
    /// Rounds of copying while the task runs (the first copies everything), at least 1.
    pub max_rounds: u32,
    /// Time for the rounds while the task runs.
    pub max_time: Duration,
}

/// What a pre-copy did.
#[derive(Clone, Debug, Default)]
pub struct PrecopyReport {
    /// Pages copied in each round while the task ran (round 0: everything present).
    pub rounds: Vec<u64>,
    /// Pages copied while frozen at the end.
    pub final_pages: u64,
    /// How long the task was stopped to arm the tracking at the start.
    pub arm_downtime: Duration,
}

/// Pages copied while the task runs, each in a slot of a chunk.
struct PageStore {
    chunks: Vec<Vec<u8>>,
    /// Slots used in the last chunk.
    used: usize,
    per_chunk: usize,
    ps: usize,
}

/// A page with no copy.
const NO_SLOT: u32 = u32::MAX;

impl PageStore {
    fn new(ps: usize) -> Self {
        PageStore {
            chunks: Vec::new(),
            used: 0,
            per_chunk: (64 << 20) / ps,
            ps,
        }
    }

    /// A new slot.
    fn alloc(&mut self) -> Result<u32> {
        if self.chunks.is_empty() || self.used == self.per_chunk {
            self.chunks.push(vec![0u8; self.per_chunk * self.ps]);
            self.used = 0;
        }
        let s = (self.chunks.len() - 1) * self.per_chunk + self.used;
        self.used += 1;
        u32::try_from(s)
            .ok()
            .filter(|&s| s != NO_SLOT)
            .ok_or_else(|| Error::Other("pre-copy: more pages than the store can number".into()))
    }

    /// The bytes of `slot`.
    fn slot_mut(&mut self, slot: u32, n: usize) -> Result<&mut [u8]> {
        let s = slot as usize;
        let (c, off) = (s / self.per_chunk, s % self.per_chunk);
        let ps = self.ps;
        self.chunks
            .get_mut(c)
            .and_then(|ch| ch.get_mut(off * ps..(off + n) * ps))
            .ok_or_else(|| Error::Other(format!("internal: pre-copy slot {slot} out of range")))
    }

    fn page(&mut self, slot: u32) -> Result<&[u8]> {
        self.slot_mut(slot, 1).map(|p| &*p)
    }

    /// A new slot holding `page`.
    fn put(&mut self, page: &[u8]) -> Result<u32> {
        let s = self.alloc()?;
        self.slot_mut(s, 1)?.copy_from_slice(page);
        Ok(s)
    }

    /// Copies the pages at `addr..addr + n pages` of the task into `slots` (allocated where
    /// missing), batching pages whose slots follow each other.
    fn copy(&mut self, pid: i32, mem: &File, addr: u64, slots: &mut [u32]) -> Result<()> {
        for s in slots.iter_mut() {
            if *s == NO_SLOT {
                *s = self.alloc()?;
            }
        }
        let ps = self.ps;
        let mut i = 0;
        while let Some(&first_slot) = slots.get(i) {
            let first = first_slot as usize;
            let off = first % self.per_chunk;
            let mut j = i + 1;
            while slots.get(j).is_some_and(|&s| s as usize == first + (j - i))
                && off + (j - i) < self.per_chunk
            {
                j += 1;
            }
            let n = j - i;
            let span = PageSpan::new(addr + (i * ps) as u64, n as u64);
            let dst = self.slot_mut(first_slot, n)?;
            read_memory(pid, mem, &[span], ps as u64, dst)?;
            i = j;
        }
        Ok(())
    }
}

/// A VMA being pre-copied: its bounds and a slot per page.
struct PreVma {
    range: AddrRange,
    slots: Vec<u32>,
}

impl PreVma {
    fn new(range: AddrRange, ps: u64) -> Result<PreVma> {
        let n = usize::try_from(range.len() / ps)
            .map_err(|_| Error::Other(format!("internal: VMA {range:?} too large")))?;
        Ok(PreVma {
            range,
            slots: vec![NO_SLOT; n],
        })
    }

    /// The slots of the `n` pages from `addr`.
    fn slots(&mut self, addr: u64, n: u64, ps: u64) -> Result<&mut [u32]> {
        let i = addr
            .checked_sub(self.range.start)
            .and_then(|o| usize::try_from(o / ps).ok());
        let n = usize::try_from(n).ok();
        let r = self.range;
        i.zip(n)
            .and_then(|(i, n)| self.slots.get_mut(i..i.checked_add(n)?))
            .ok_or_else(|| Error::Other(format!("internal: pages at {addr:#x} not in {r:?}")))
    }
}

/// What the rounds work on.
struct Ctx<'a> {
    pid: i32,
    pagemap: &'a File,
    mem: &'a File,
    ps: usize,
    state: &'a super::options::StateOptions,
}

impl Ctx<'_> {
    /// Which of `ranges` are registered for write protection.
    fn registered(&self, ranges: &[AddrRange]) -> Result<Vec<AddrRange>> {
        tracking::registered(self.pid, self.pagemap, ranges)
    }

    /// Copies the pages of `pre` written since the last scan (for registered VMAs); returns how
    /// many and the scans (with `present`, the full scans of a frozen task).
    fn copy_written(
        &self,
        store: &mut PageStore,
        pre: &mut [PreVma],
        reg: &[AddrRange],
        present: bool,
    ) -> Result<(u64, Vec<Option<Scan>>)> {
        let ps64 = self.ps as u64;
        let mut n = 0u64;
        let mut scans = Vec::with_capacity(pre.len());
        for pv in pre.iter_mut() {
            if !reg.contains(&pv.range) {
                scans.push(None);
                continue;
            }
            let (a, b) = (pv.range.start, pv.range.end);
            let sc = tracking::scan(self.pid, self.pagemap, a, b, ps64, present)?;
            for w in &sc.written {
                store.copy(self.pid, self.mem, w.addr, pv.slots(w.addr, w.pages, ps64)?)?;
                n += w.pages;
            }
            scans.push(Some(sc));
        }
        Ok((n, scans))
    }
}

/// Pre-copy (see the module docs): returns the snapshot and what the rounds did.
pub(crate) fn capture_precopy(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    session: &mut Session,
    limits: PrecopyLimits,
) -> Result<(Snapshot, PrecopyReport)> {
    let started = Instant::now();
    let pid = ins.pid;
    let (ps, _) = page_size()?;
    let mut rep = PrecopyReport::default();
    let armed = arm(pid, session, &mut rep)?;
    let pagemap = open_proc(pid, "pagemap")?;
    let mem = open_proc(pid, "mem")?;
    let ctx = Ctx {
        pid,
        pagemap: &pagemap,
        mem: &mem,
        ps,
        state: &opts.state,
    };
    let mut store = PageStore::new(ps);
    let mut pre = round0(&ctx, &mut store, &armed, &mut rep)?;
    // smaps is read while the task runs in every mode; here before the rounds, so that the
    // last round is followed by the freeze at once, not by a read the task keeps writing in.
    ins.load_smaps()?;
    rounds(&ctx, &mut store, &mut pre, limits, &mut rep)?;
    // Freeze, copy the last delta, resume.
    let frozen = freeze(pid)?;
    let fin =
        final_copy(&ctx, ins, crid, session, &mut store, pre).map_err(|e| frozen_err(pid, e))?;
    let downtime = frozen.release(opts.after)?;
    rep.final_pages = fin.pages;
    let mut snap = lay_out(&ctx, crid, fin, &mut store)?;
    snap.stats.downtime = downtime;
    snap.stats.capture = started.elapsed();
    Ok((snap, rep))
}

/// Step 1, frozen briefly: arms tracking; returns the VMAs then.
fn arm(pid: i32, session: &mut Session, rep: &mut PrecopyReport) -> Result<Vec<VmaRec>> {
    session.want_arm();
    let frozen = freeze(pid)?;
    let armed = (|| -> Result<Vec<VmaRec>> {
        let maps = procfs::parse_maps(&read_text(pid, "maps")?)?;
        check_maps(pid, &maps)?;
        let vmas: Vec<VmaRec> = maps.iter().map(|m| VmaRec::of(pid, m)).collect();
        session.set_scanned(Vec::new());
        session.arm(pid, &vmas)?;
        Ok(vmas)
    })()
    .map_err(|e| frozen_err(pid, e))?;
    rep.arm_downtime = frozen.release(After::Continue)?;
    if !session.armed {
        return Err(Error::Other(format!(
            "pre-copy: write-protect tracking of pid {pid} could not be armed: {}",
            session.notes.join("; ")
        )));
    }
    Ok(armed)
}

/// Step 2, round 0: everything present in the tracked VMAs, while the task runs.
fn round0(
    ctx: &Ctx<'_>,
    store: &mut PageStore,
    armed: &[VmaRec],
    rep: &mut PrecopyReport,
) -> Result<Vec<PreVma>> {
    let ps64 = ctx.ps as u64;
    let mut pre: Vec<PreVma> = Vec::new();
    let mut n0 = 0u64;
    for v in armed.iter().filter(|v| v.trackable()) {
        let mut pv = PreVma::new(v.range(), ps64)?;
        for s in spans_of(ctx.pid, ctx.pagemap, v, ps64)? {
            let sl = pv.slots(s.addr, s.pages, ps64)?;
            // Pages that went away meanwhile: no copy (copied at the end if still there).
            if store.copy(ctx.pid, ctx.mem, s.addr, sl).is_err() {
                sl.fill(NO_SLOT);
            }
            n0 += s.pages;
        }
        pre.push(pv);
    }
    rep.rounds.push(n0);
    Ok(pre)
}

/// Step 3: rounds while the task runs, each copying the pages written since the last one.
fn rounds(
    ctx: &Ctx<'_>,
    store: &mut PageStore,
    pre: &mut [PreVma],
    limits: PrecopyLimits,
    rep: &mut PrecopyReport,
) -> Result<()> {
    let t_rounds = Instant::now();
    let mut last = rep.rounds.last().copied().unwrap_or_default();
    while rep.rounds.len() < limits.max_rounds.max(1) as usize
        && t_rounds.elapsed() < limits.max_time
    {
        let ranges: Vec<AddrRange> = pre.iter().map(|p| p.range).collect();
        let reg = ctx.registered(&ranges)?;
        let (n, _) = ctx.copy_written(store, pre, &reg, false).map_err(|e| {
            if is_gone(ctx.pid) {
                Error::TargetExited {
                    pid: ctx.pid,
                    how: "gone during the pre-copy".into(),
                }
            } else {
                e
            }
        })?;
        rep.rounds.push(n);
        if n == 0 || (n >= last && rep.rounds.len() > 2) {
            break; // not shrinking any more
        }
        last = n;
    }
    Ok(())
}

/// Spans of each VMA.
type PerVma = Vec<Vec<PageSpan>>;

/// What the final frozen step gives.
struct Final {
    meta: Meta,
    vmas: Vec<VmaRec>,
    /// Each VMA's present pages, in address order, merged.
    present: PerVma,
    /// Each VMA's pages that map the zero page (none in the store), in address order.
    zero: PerVma,
    /// A slot table for each VMA read at the freeze with pages in the store (bounds before
    /// any merge by the arming).
    tables: Vec<PreVma>,
    /// Pages copied while frozen.
    pages: u64,
}

/// Step 4, frozen: the last delta of the pre-copied VMAs, everything of the others, and the
/// tracking armed again with this state as its baseline.
fn final_copy(
    ctx: &Ctx<'_>,
    ins: &Inspection,
    crid: u64,
    session: &mut Session,
    store: &mut PageStore,
    mut pre: Vec<PreVma>,
) -> Result<Final> {
    let (pid, ps64) = (ctx.pid, ctx.ps as u64);
    let (_, ps32) = page_size()?;
    let (meta, vmas) = read_frozen(ins, crid, ps32, ctx.state)?;
    let trackable: Vec<AddrRange> = vmas
        .iter()
        .filter(|v| v.trackable())
        .map(|v| v.range())
        .collect();
    let reg = ctx.registered(&trackable)?;
    // The pre-copied VMAs that are still there with the same bounds and registration.
    let mut keep: Vec<PreVma> = Vec::new();
    let mut which: Vec<Option<usize>> = vec![None; vmas.len()];
    for (w, v) in which.iter_mut().zip(&vmas) {
        if !v.trackable() || !reg.contains(&v.range()) {
            continue;
        }
        if let Some(k) = pre.iter().position(|p| p.range == v.range()) {
            *w = Some(keep.len());
            keep.push(pre.swap_remove(k));
        }
    }
    let (nf, mut scans_kept) = ctx.copy_written(store, &mut keep, &reg, true)?;
    let nlate = copy_late(ctx, store, &mut keep, &scans_kept)?;
    let mut scans: Vec<Option<Scan>> = vec![None; vmas.len()];
    let mut scanned = vec![false; vmas.len()];
    for ((w, sc), done) in which.iter().zip(scans.iter_mut()).zip(scanned.iter_mut()) {
        if let Some(taken) = w.and_then(|k| scans_kept.get_mut(k)).and_then(Option::take) {
            *sc = Some(taken);
            *done = true;
        }
    }
    // Everything else in full, now.
    let mut full: Vec<Vec<PageSpan>> = Vec::with_capacity(vmas.len());
    for (v, sc) in vmas.iter().zip(&scans) {
        full.push(match sc {
            None => spans_of(pid, ctx.pagemap, v, ps64)?,
            Some(_) => Vec::new(),
        });
    }
    let all: Vec<PageSpan> = full.iter().flatten().copied().collect();
    let nfull = pages_in(&all);
    let mut direct = vec![0u8; buf_len(nfull, ctx.ps)?];
    read_memory(pid, ctx.mem, &all, ps64, &mut direct)?;
    session.set_scanned(scanned);
    session.arm(pid, &vmas)?;
    // The directly copied bytes go into the store too, in order, with a table per VMA.
    let mut slots = Vec::with_capacity(direct.len() / ctx.ps.max(1));
    for p in direct.chunks_exact(ctx.ps) {
        slots.push(store.put(p)?);
    }
    let mut it = slots.into_iter();
    for (v, rs) in vmas.iter().zip(&full) {
        if rs.is_empty() {
            continue;
        }
        let mut pv = PreVma::new(v.range(), ps64)?;
        for s in rs {
            for sl in pv.slots(s.addr, s.pages, ps64)? {
                *sl = it.next().ok_or_else(|| {
                    Error::Other("internal: fewer pages copied than spans".into())
                })?;
            }
        }
        keep.push(pv);
    }
    let present = scans
        .iter()
        .zip(&full)
        .map(|(sc, f)| present_spans(sc.as_ref(), f, ps64))
        .collect();
    let zero = scans
        .into_iter()
        .map(|sc| sc.map_or_else(Vec::new, |s| s.zero))
        .collect();
    // Registering a VMA merges it with a registered neighbour (a mapping the task made next
    // to one while the rounds ran): the image must have the VMAs the task has now.
    let (meta, vmas, present, zero) = if session.remapped() {
        let (meta, now) = read_frozen(ins, crid, ps32, ctx.state)?;
        let (present, zero) = regroup(&vmas, present, zero, &now, ps64)?;
        (meta, now, present, zero)
    } else {
        (meta, vmas, present, zero)
    };
    Ok(Final {
        meta,
        vmas,
        present,
        zero,
        tables: keep,
        pages: nf + nfull + nlate,
    })
}

/// The present and zero spans of the VMAs `old`, given to the VMAs `now` that hold them (each
/// of `now` the union of consecutive ones of `old`, as an arming's merges leave them).
fn regroup(
    old: &[VmaRec],
    present: PerVma,
    zero: PerVma,
    now: &[VmaRec],
    ps64: u64,
) -> Result<(PerVma, PerVma)> {
    let mut it = old.iter().zip(present.into_iter().zip(zero)).peekable();
    let (mut p_now, mut z_now) = (Vec::with_capacity(now.len()), Vec::with_capacity(now.len()));
    for n in now {
        let r = n.range();
        let (mut p, mut z): (Vec<PageSpan>, Vec<PageSpan>) = (Vec::new(), Vec::new());
        while let Some((o, _)) = it.peek() {
            let or = o.range();
            if or.start >= r.end {
                break;
            }
            if or.start < r.start || or.end > r.end {
                return Err(Error::Other(format!(
                    "internal: VMA {or:?} is not within {r:?} after the arming"
                )));
            }
            if let Some((_, (op, oz))) = it.next() {
                p.extend(op);
                z.extend(oz);
            }
        }
        p_now.push(merged(p, ps64));
        z_now.push(z);
    }
    if let Some((o, _)) = it.next() {
        return Err(Error::Other(format!(
            "internal: VMA {:?} is gone after the arming",
            o.range()
        )));
    }
    Ok((p_now, z_now))
}

/// `spans`, sorted, with touching ones joined.
fn merged(mut spans: Vec<PageSpan>, ps64: u64) -> Vec<PageSpan> {
    spans.sort_unstable();
    let mut rs: Vec<PageSpan> = Vec::with_capacity(spans.len());
    for s in spans {
        match rs.last_mut() {
            Some(l) if l.addr + l.pages * ps64 == s.addr => l.pages += s.pages,
            _ => rs.push(s),
        }
    }
    rs
}

/// A page unchanged since a copy that failed (it went away meanwhile, and came back
/// unwritten): copied now. Returns how many.
fn copy_late(
    ctx: &Ctx<'_>,
    store: &mut PageStore,
    keep: &mut [PreVma],
    scans: &[Option<Scan>],
) -> Result<u64> {
    let ps64 = ctx.ps as u64;
    let mut nlate = 0u64;
    for (pv, sc) in keep.iter_mut().zip(scans) {
        let Some(sc) = sc else { continue };
        for u in sc.unchanged.iter() {
            for k in 0..u.pages {
                let a = u.addr + k * ps64;
                let sl = pv.slots(a, 1, ps64)?;
                if sl.first() == Some(&NO_SLOT) {
                    store.copy(ctx.pid, ctx.mem, a, sl)?;
                    nlate += 1;
                }
            }
        }
    }
    Ok(nlate)
}

/// The spans of a VMA's pages in address order, merged: a scanned VMA's written, unchanged and
/// zero pages, or the spans copied in full.
fn present_spans(scan: Option<&Scan>, full: &[PageSpan], ps64: u64) -> Vec<PageSpan> {
    let spans = match scan {
        Some(sc) => sc
            .written
            .iter()
            .chain(&sc.unchanged)
            .chain(&sc.zero)
            .copied()
            .collect(),
        None => full.to_vec(),
    };
    merged(spans, ps64)
}

/// Step 5: lays the pages out in address order in one buffer and plans the records.
fn lay_out(ctx: &Ctx<'_>, crid: u64, fin: Final, store: &mut PageStore) -> Result<Snapshot> {
    let (pid, ps, ps64) = (ctx.pid, ctx.ps, ctx.ps as u64);
    let total: u64 = fin.present.iter().map(|rs| pages_in(rs)).sum();
    let mut buf = sys::MapBuf::new(buf_len(total, ps)?.max(ps))
        .map_err(|e| Error::io("allocating the page buffer", e))?;
    let mut stats = Stats {
        vmas: fin.vmas.len() as u64,
        ..Stats::default()
    };
    let mut snap_vmas = Vec::with_capacity(fin.vmas.len());
    let mut dst = 0usize;
    let mut all_tables = fin.tables;
    all_tables.sort_unstable_by_key(|t| t.range.start);
    for ((v, rs), zero) in fin.vmas.into_iter().zip(fin.present).zip(&fin.zero) {
        // The tables of the VMAs read at the freeze that lie in this one (one, unless the
        // arming merged some), and the zero spans, each walked once, in address order.
        let r = v.range();
        let from = all_tables.partition_point(|t| t.range.start < r.start);
        let tables: Vec<&PreVma> = all_tables
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|t| t.range.end <= r.end)
            .collect();
        let (mut ti, mut zi) = (0usize, 0usize);
        let base = dst;
        for s in &rs {
            for k in 0..s.pages {
                let addr = s.addr + k * ps64;
                let blen = buf.len();
                let d = buf.get_mut(dst..dst + ps).ok_or_else(|| {
                    Error::Other(format!("internal: page buffer too small ({blen:#x} bytes)"))
                })?;
                while zero
                    .get(zi)
                    .is_some_and(|z| z.addr + z.pages * ps64 <= addr)
                {
                    zi += 1;
                }
                let is_zero_page = zero.get(zi).is_some_and(|z| z.addr <= addr);
                while tables.get(ti).is_some_and(|t| t.range.end <= addr) {
                    ti += 1;
                }
                let slot = match tables.get(ti) {
                    Some(t) if !is_zero_page && t.range.start <= addr => slot_of(t, addr, ps64)?,
                    _ => NO_SLOT,
                };
                if is_zero_page {
                    d.fill(0);
                } else if slot == NO_SLOT {
                    return Err(Error::Other(format!(
                        "pre-copy: page {addr:#x} of pid {pid} was never copied"
                    )));
                } else {
                    d.copy_from_slice(store.page(slot)?);
                }
                dst += ps;
            }
        }
        let planned = plan_pages(&rs, &mut buf, base, ps, None)?;
        stats.data_pages += planned.counts.data;
        stats.zero_pages += planned.counts.zero;
        dst = planned.data_end;
        snap_vmas.push(SnapVma {
            vma: v,
            records: planned.records,
            tracked: None,
        });
    }
    Ok(Snapshot {
        crid,
        pid,
        meta: fin.meta,
        vmas: snap_vmas,
        buf,
        stats,
        twin: None,
        parent: None,
    })
}

/// The slot of the page at `addr` in `t`.
fn slot_of(t: &PreVma, addr: u64, ps64: u64) -> Result<u32> {
    addr.checked_sub(t.range.start)
        .and_then(|o| usize::try_from(o / ps64).ok())
        .and_then(|i| t.slots.get(i).copied())
        .ok_or_else(|| {
            Error::Other(format!(
                "internal: page {addr:#x} not in pre-copied VMA {:?}",
                t.range
            ))
        })
}
