//! In-memory checkpoints keyed by CRID: the seed's `checkpoint(..., CR_CKPT_LAZY)` followed by
//! `ckpt_writeback(crid, fd)`.
//!
//! [`Registry::checkpoint_lazy`] copies the task's memory into a pre-faulted buffer, resumes the
//! task at once and keeps the checkpoint under its CRID; [`Registry::writeback`] writes its image
//! to any `io::Write` (file, pipe, socket) later, as often as wanted; [`Registry::discard`] frees
//! it and keeps its buffer for the next checkpoint, so a later copy does not pay page faults.

use crate::capture::{self, Inspection, Options, Snapshot, Stats};
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
#[derive(Clone, Copy, Debug)]
pub struct Lazy {
    /// The CRID it is kept under.
    pub crid: u64,
    /// Figures of the capture.
    pub stats: Stats,
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

    /// Checks `pid`, issues a CRID, captures the task into memory and resumes it (as
    /// `opts.after` says). Returns the CRID.
    pub fn checkpoint_lazy(&self, pid: i32, opts: &Options) -> Result<Lazy> {
        let ins = capture::inspect(pid)?;
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
        // What a pagemap scan says would be copied now (else anonymous resident + swapped
        // memory); a little slack covers growth until the freeze (a shortfall is still handled,
        // at page-fault speed).
        let est = capture::estimate_bytes(ins)
            .unwrap_or_else(|_| ins.status.rss_anon.saturating_add(ins.status.vm_swap));
        let est = est.saturating_add(est / 16).saturating_add(4 << 20);
        let buf = self.buffer(usize::try_from(est).unwrap_or(usize::MAX))?;
        let snap = capture::capture_lazy(ins, crid, opts, buf)?;
        let stats = snap.stats;
        self.map
            .lock()
            .map_err(|_| Error::Other("registry lock poisoned".into()))?
            .insert(crid, Arc::new(snap));
        Ok(Lazy { crid, stats })
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
    pub fn writeback<W: Write>(&self, crid: u64, out: W) -> Result<Summary> {
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
                if pool.len() < POOL_MAX {
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
pub fn writeback<W: Write>(crid: u64, out: W) -> Result<Summary> {
    global().writeback(crid, out)
}

/// Drops a checkpoint of the process-wide registry.
pub fn discard(crid: u64) -> Result<()> {
    global().discard(crid)
}
