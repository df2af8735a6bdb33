//! In-memory checkpoints keyed by CRID: the seed's `checkpoint(..., CR_CKPT_LAZY)` followed by
//! `ckpt_writeback(crid, fd)`.
//!
//! [`Registry::checkpoint_lazy`] makes a copy-on-write twin of the task ([`super::twin`]), or
//! else copies the task's memory into a pre-faulted buffer, resumes the task at once and keeps
//! the checkpoint under its CRID; [`Registry::writeback`] writes its image to any `io::Write`
//! (file, pipe, socket) later, as often as wanted; [`Registry::discard`] frees it and keeps its
//! buffer for the next checkpoint, so a later copy does not pay page faults.
//!
//! A twin is traced by the thread that took the checkpoint and dies with it: write back before
//! that thread ends, or set [`Options::lazy`] to [`LazyMode::Copy`].

use super::check::{self, Inspection};
use super::delta::make_incremental;
use super::incremental::Parent;
use super::lazy;
use super::memory::{estimate_bytes, page_size};
use super::options::{After, LazyMode, Options, Stats, TWIN_MIN_BYTES};
use super::precopy::{self, PrecopyLimits, PrecopyReport};
use super::snapshot::Snapshot;
use super::tracking::Session;
use super::vma::{vma_recs, Tracker};
use crate::error::{Error, Result};
use crate::sys::MapBuf;
use cr_format::write::Summary;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Buffers kept for reuse after a discard.
const POOL_MAX: usize = 2;

/// The in-memory checkpoints of this process.
#[derive(Debug, Default)]
pub struct Registry {
    map: Mutex<HashMap<u64, Arc<Snapshot>>>,
    pool: Mutex<Vec<MapBuf>>,
}

/// What a lazy checkpoint reports.
#[derive(Clone, Debug)]
pub struct Lazy {
    /// The CRID it is kept under.
    pub crid: u64,
    /// Figures of the capture.
    pub stats: Stats,
    /// Why the memory was copied while the task was stopped rather than held by a
    /// copy-on-write twin, if a twin was tried and could not be used.
    pub note: Option<String>,
    /// Bytes of page data a page-map walk of the task found before the freeze, when one was
    /// made: the write-back's progress total and space reservation for a twin, whose own page
    /// map is then walked once (by the write-back) instead of twice.
    pub estimate: Option<u64>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A pooled buffer of at least `len` bytes, or a new pre-faulted one.
    fn buffer(&self, len: usize) -> Result<MapBuf> {
        if let Ok(mut pool) = self.pool.lock() {
            if let Some(i) = pool.iter().position(|b| b.len() >= len) {
                return Ok(pool.swap_remove(i));
            }
        }
        MapBuf::new(len).map_err(|e| Error::io("allocating the page buffer", e))
    }

    /// The largest pooled buffer, or an empty one.
    fn pooled(&self) -> MapBuf {
        let Ok(mut pool) = self.pool.lock() else {
            return MapBuf::empty();
        };
        let best = (0..pool.len()).max_by_key(|&i| pool.get(i).map_or(0, |b| b.len()));
        best.map_or_else(MapBuf::empty, |i| pool.swap_remove(i))
    }

    /// Checks `pid`, issues a CRID, captures the task into memory and resumes it (as
    /// `opts.after` says). Returns the CRID.
    pub fn checkpoint_lazy(&self, pid: i32, opts: &Options) -> Result<Lazy> {
        let ins = check::inspect(pid)?;
        let crid = crate::crid::next()?;
        self.checkpoint_inspected(&ins, crid, opts)
    }

    /// [`Registry::checkpoint_lazy`] for a task already inspected, under a CRID already issued.
    pub fn checkpoint_inspected(
        &self,
        ins: &Inspection,
        crid: u64,
        opts: &Options,
    ) -> Result<Lazy> {
        self.checkpoint_with(ins, crid, opts, None, None)
    }

    /// Keeps `snap` under its CRID.
    fn keep(&self, snap: Snapshot) -> Result<Lazy> {
        let (crid, stats) = (snap.crid, snap.stats);
        self.map
            .lock()
            .map_err(|_| Error::Other("registry lock poisoned".into()))?
            .insert(crid, Arc::new(snap));
        Ok(Lazy {
            crid,
            stats,
            note: None,
            estimate: None,
        })
    }

    /// [`Registry::checkpoint_inspected`] with a dirty tracker (called while the task is frozen)
    /// and, with a parent, made incremental over it: pages the tracker found unchanged, or whose
    /// content equals the parent's, are "in the parent". Without a tracker the snapshot is
    /// taken as for a full checkpoint ([`LazyMode`]); when it is a copy-on-write twin,
    /// its pages are compared with the parent as each write-back streams them. Otherwise the
    /// memory is copied while the task is stopped and compared after it is resumed
    /// ([`make_incremental`]).
    pub fn checkpoint_with(
        &self,
        ins: &Inspection,
        crid: u64,
        opts: &Options,
        parent: Option<&Parent>,
        tracker: Option<&mut dyn Tracker>,
    ) -> Result<Lazy> {
        // What a pagemap scan says would be copied now (else anonymous resident + swapped
        // memory); a little slack covers growth until the freeze (a shortfall is still handled,
        // at page-fault speed).
        let scanned = std::cell::OnceCell::new();
        let present = || {
            *scanned.get_or_init(|| {
                estimate_bytes(ins)
                    .unwrap_or_else(|_| ins.status.rss_anon.saturating_add(ins.status.vm_swap))
            })
        };
        let mut tracker = tracker;
        // Not for a task killed after the checkpoint: the twin, its child, would outlive it as
        // an orphan of init (and a copy costs the task nothing then). Not with a tracker that
        // gives scans: a tracked incremental copies only the written pages while stopped. A
        // tracker that gives none is armed while the twin is made.
        if tracker.as_ref().is_none_or(|t| !t.usable()) && opts.after != After::Kill {
            let twin = match opts.lazy {
                LazyMode::Auto => present() >= TWIN_MIN_BYTES,
                LazyMode::Twin => true,
                LazyMode::Copy => false,
            };
            if twin {
                // A copy-on-write twin, no copy while stopped; over a parent, the pages are
                // compared with it as they are written. Only when no twin can be made is the
                // memory copied, into a pooled buffer or one allocated then (at page-fault
                // speed: a rare case is not worth pre-faulting for).
                let own_parent = match parent {
                    Some(p) => {
                        p.check_for(page_size()?.1, crid)?;
                        Some(p.reopen()?)
                    }
                    None => None,
                };
                let (mut snap, note) = lazy::capture_cow(
                    ins,
                    crid,
                    opts,
                    tracker.as_mut().map(|t| &mut **t as &mut dyn Tracker),
                    || Ok(self.pooled()),
                )?;
                if let Some(p) = own_parent {
                    if snap.twin.is_some() {
                        p.name_in(&mut snap.meta.header, cr_format::raw::DIFF_CONTENT_COMPARE);
                        snap.parent = Some(p);
                    } else {
                        let t = std::time::Instant::now();
                        make_incremental(&mut snap, &p)?;
                        snap.stats.capture += t.elapsed();
                    }
                }
                let mut lazy = self.keep(snap)?;
                lazy.note = note;
                lazy.estimate = scanned.get().copied();
                return Ok(lazy);
            }
        }
        // With a usable tracker only the written pages of the tracked VMAs are copied: the
        // buffer is pre-faulted for those (pre-faulting for everything took longer than the
        // whole incremental checkpoint), and the whole pagemap is not read for a size.
        let est = match tracker.as_mut() {
            Some(t) if t.usable() && parent.is_some() => t
                .estimate(ins.pid, &vma_recs(ins))
                .unwrap_or_else(|| present() / 8),
            _ => present(),
        };
        let est = est.saturating_add(est / 16).saturating_add(4 << 20);
        let buf = self.buffer(usize::try_from(est).unwrap_or(usize::MAX))?;
        let mut snap = match tracker {
            Some(t) => lazy::capture_lazy_tracked(ins, crid, opts, buf, t)?,
            None => lazy::capture_lazy(ins, crid, opts, buf)?,
        };
        if let Some(p) = parent {
            let t = std::time::Instant::now();
            make_incremental(&mut snap, p)?;
            snap.stats.capture += t.elapsed();
        }
        self.keep(snap)
    }

    /// Pre-copy checkpoint ([`super::precopy`]), made incremental over `parent` if
    /// given (content compare).
    pub fn checkpoint_precopy(
        &self,
        ins: &Inspection,
        crid: u64,
        opts: &Options,
        parent: Option<&Parent>,
        session: &mut Session,
        limits: PrecopyLimits,
    ) -> Result<(Lazy, PrecopyReport)> {
        let (mut snap, rep) = precopy::capture_precopy(ins, crid, opts, session, limits)?;
        if let Some(p) = parent {
            let t = std::time::Instant::now();
            make_incremental(&mut snap, p)?;
            snap.stats.capture += t.elapsed();
        }
        Ok((self.keep(snap)?, rep))
    }

    /// The checkpoint kept under `crid`.
    pub fn get(&self, crid: u64) -> Result<Arc<Snapshot>> {
        self.map
            .lock()
            .map_err(|_| Error::Other("registry lock poisoned".into()))?
            .get(&crid)
            .cloned()
            .ok_or(Error::UnknownCrid(crid))
    }

    /// Writes the image of checkpoint `crid` to `out`. The checkpoint stays in the registry.
    pub fn writeback<W: Write + Send>(&self, crid: u64, out: W) -> Result<Summary> {
        self.get(crid)?.write_to(out)
    }

    /// Drops checkpoint `crid`, keeping its buffer for reuse.
    pub fn discard(&self, crid: u64) -> Result<()> {
        let snap = self
            .map
            .lock()
            .map_err(|_| Error::Other("registry lock poisoned".into()))?
            .remove(&crid)
            .ok_or(Error::UnknownCrid(crid))?;
        if let Ok(snap) = Arc::try_unwrap(snap) {
            if let Ok(mut pool) = self.pool.lock() {
                if pool.len() < POOL_MAX && !snap.buf.is_empty() {
                    pool.push(snap.buf);
                }
            }
        }
        Ok(())
    }

    /// The CRIDs held, in increasing order.
    pub fn crids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .map
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }
}

/// The process-wide registry.
pub fn global() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::new)
}

/// `checkpoint(pid, CR_CKPT_LAZY)`: lazy checkpoint into the process-wide registry.
pub fn checkpoint_lazy(pid: i32, opts: &Options) -> Result<u64> {
    global().checkpoint_lazy(pid, opts).map(|l| l.crid)
}

/// `ckpt_writeback(crid, fd)` on the process-wide registry.
pub fn writeback<W: Write + Send>(crid: u64, out: W) -> Result<Summary> {
    global().writeback(crid, out)
}

/// Drops a checkpoint of the process-wide registry.
pub fn discard(crid: u64) -> Result<()> {
    global().discard(crid)
}
