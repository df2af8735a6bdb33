//! Direct mode: the image is streamed out while the task is frozen, with peak memory that does
//! not grow with the task's size (a few record-sized buffers).

use super::check::Inspection;
use super::freeze::{freeze, frozen_err, Frozen};
use super::memory::page_size;
use super::options::{Options, Stats};
use super::stream::{finish_image, sink_err, stream_vmas, Source};
use super::task::read_frozen;
use crate::error::Result;
use cr_format::write::{IoSink, Summary, Writer};
use std::io::Write;
use std::time::Instant;

/// What [`checkpoint_direct`] did.
#[derive(Clone, Debug)]
pub struct DirectResult {
    /// CRID.
    pub crid: u64,
    /// What was written.
    pub summary: Summary,
    /// Figures.
    pub stats: Stats,
    /// The fidelity report of the task's state besides memory.
    pub fidelity: Vec<crate::capture::state::Fidelity>,
}

/// Direct mode: checkpoint `pid` (already inspected) under `crid`, streaming the image to `out`
/// while the task is frozen. Memory use is bounded (one Pages record's data at a time).
pub fn checkpoint_direct<W: Write + Send>(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    out: W,
) -> Result<DirectResult> {
    let started = Instant::now();
    let pid = ins.pid;
    ins.load_smaps()?;
    let frozen = freeze(pid)?;
    stream_frozen(ins, crid, opts, out, frozen, started).map_err(|e| frozen_err(pid, e))
}

fn stream_frozen<W: Write + Send>(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    out: W,
    frozen: Frozen,
    started: Instant,
) -> Result<DirectResult> {
    let pid = ins.pid;
    let (_, ps32) = page_size()?;
    let mut w = Writer::new(IoSink::new(out));
    let (meta, vmas) = read_frozen(ins, crid, ps32, &opts.state)?;
    meta.write(&mut w).map_err(|e| sink_err(&mut w, e))?;
    let src = Source {
        pid,
        twin: false,
        parent: None,
    };
    let mut stats = stream_vmas(&src, &mut w, &vmas)?;
    let summary = finish_image(&mut w)?;
    stats.downtime = frozen.release(opts.after)?;
    stats.capture = started.elapsed();
    Ok(DirectResult {
        crid,
        summary,
        stats,
        fidelity: meta.state.fidelity,
    })
}
