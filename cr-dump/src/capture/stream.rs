//! The image stream: the VMA and Pages records of a task written in bounded memory, read from
//! the frozen task (direct mode) or from its copy-on-write twin (a lazy write-back). The steps
//! here (cut the pages into chunks, read a chunk, plan its records, CRC their data, write them)
//! run on the ordered worker pipeline (`pipeline.rs`).

use super::incremental::equal_in_parent;
use super::memory::{buf_len, for_each_span, open_proc, read_memory, read_memory_mem_file};
use super::options::Stats;
use super::pipeline::{self, Feed};
use super::plan::{plan_pages, InParent, PageCounts, RecordPlan};
use super::vma::VmaRec;
use crate::error::{Error, Result};
use crate::span::PageSpan;
use crate::sys;
use cr_format::chain::ChainIndex;
use cr_format::limits::{MAX_DATA_PER_RECORD, MAX_RUNS_PER_RECORD};
use cr_format::write::{DataCrc, IoSink, Summary, Writer};
use std::fs::File;
use std::io::Write;
use std::time::Duration;

/// The stream's pipeline. Two workers: writes are serial (in order, and the file's lock
/// serializes them anyway), but one thread reads while the other writes; 1 GiB took 0.35 s
/// with a separate writer thread, 0.19 s this way (BENCHMARKS.md).
const STREAM: pipeline::Config = pipeline::Config {
    workers: 2,
    batch: 32,
    spin: Duration::from_millis(2),
    incomplete: "a thread of the image stream failed: the image is incomplete",
};

/// A job of a stream compared with a parent covers this many records' worth of pages.
const PARENT_JOB: u64 = 16;

/// A chunk of a stream: the VMA records to write first, then the pages of `spans` (at most
/// one Pages record's data, all in VMA `vma`).
struct StreamJob {
    vmas: Vec<usize>,
    /// The VMA the pages are in.
    vma: usize,
    spans: Vec<PageSpan>,
}

/// A worker's page buffer and counts.
struct Worker {
    buf: Vec<u8>,
    counts: PageCounts,
}

/// The writer's I/O error if it has one (the real cause), else `e`.
pub(crate) fn sink_err<W: Write>(w: &mut Writer<IoSink<W>>, e: impl Into<Error>) -> Error {
    match w.sink_mut().take_error() {
        Some(io) => Error::io("writing the image", io),
        None => e.into(),
    }
}

/// Writes the tail and flushes.
pub(crate) fn finish_image<W: Write>(w: &mut Writer<IoSink<W>>) -> Result<Summary> {
    let summary = w.finish().map_err(|e| sink_err(w, e))?;
    w.sink_mut()
        .get_mut()
        .flush()
        .map_err(|e| Error::io("writing the image", e))?;
    Ok(summary)
}

/// Where a stream reads from and what it compares with.
pub(crate) struct Source<'a> {
    /// The task read: the frozen task, or its copy-on-write twin.
    pub pid: i32,
    /// Read through `/proc/PID/mem`, not `process_vm_readv`. The latter pins the pages it
    /// reads, and the kernel (since 5.19) unshares a copy-on-write page before pinning it:
    /// every page of a twin would be copied, doubling the memory and the time.
    pub twin: bool,
    /// The parent chain's index and, for each VMA, whether the parent has the same mapping:
    /// pages are compared with the chain as they are read ([`super::incremental`]).
    pub parent: Option<(&'a ChainIndex<'a>, &'a [bool])>,
}

/// Writes the VMA and Pages records of `vmas`, reading pages from `src` in bounded memory.
/// Returns the page counts.
pub(crate) fn stream_vmas<W: Write + Send>(
    src: &Source<'_>,
    w: &mut Writer<IoSink<W>>,
    vmas: &[VmaRec],
) -> Result<Stats> {
    let pid = src.pid;
    let ps = sys::page_size();
    let ps64 = ps as u64;
    let pagemap = open_proc(pid, "pagemap")?;
    let mem = open_proc(pid, "mem")?;
    // Pages per job: one Pages record's data. Compared with a parent, most pages become
    // parent runs and a record covers far more than its data: jobs of one record's worth each
    // gave an image 38% larger than over a copy (a padded record per MiB of memory).
    let per_job = if src.parent.is_some() { PARENT_JOB } else { 1 };
    let max_pages = u64::from(MAX_DATA_PER_RECORD) / ps64 * per_job;
    let buf_bytes = buf_len(max_pages, ps)?;
    let locals = pipeline::run(
        &STREAM,
        |feed| cut_jobs(pid, &pagemap, vmas, ps64, max_pages, feed),
        || Worker {
            buf: vec![0u8; buf_bytes],
            counts: PageCounts::default(),
        },
        |wk, job| read_and_plan(src, &mem, wk, job, ps),
        w,
        |w, wk, (vs, plans)| write_records(w, vmas, &wk.buf, &vs, &plans),
    )?;
    let mut counts = PageCounts::default();
    for l in &locals {
        counts.add(l.counts);
    }
    Ok(Stats {
        data_pages: counts.data,
        zero_pages: counts.zero,
        parent_pages: counts.parent,
        vmas: vmas.len() as u64,
        ..Stats::default()
    })
}

/// The producer: walks the pagemap and cuts the pages into jobs of at most `max_pages` pages
/// (and half a record's runs), each VMA record going with the first job after it.
fn cut_jobs(
    pid: i32,
    pagemap: &File,
    vmas: &[VmaRec],
    ps64: u64,
    max_pages: u64,
    feed: &mut Feed<StreamJob>,
) -> Result<()> {
    let mut pending: Vec<usize> = Vec::new();
    let mut chunk: Vec<PageSpan> = Vec::new();
    let mut send = |pending: &mut Vec<usize>, chunk: &mut Vec<PageSpan>, vma: usize| {
        feed.push(StreamJob {
            vmas: std::mem::take(pending),
            vma,
            spans: std::mem::take(chunk),
        })
    };
    for (i, v) in vmas.iter().enumerate() {
        pending.push(i);
        let mut chunk_pages = 0u64;
        let mut go_on = true;
        for_each_span(pid, pagemap, v, ps64, max_pages, |r| {
            if go_on
                && (chunk_pages + r.pages > max_pages
                    || chunk.len() >= MAX_RUNS_PER_RECORD as usize / 2)
            {
                go_on = send(&mut pending, &mut chunk, i);
                chunk_pages = 0;
            }
            if go_on {
                chunk.push(r);
                chunk_pages += r.pages;
            }
            Ok(())
        })?;
        if go_on && !chunk.is_empty() {
            go_on = send(&mut pending, &mut chunk, i);
        }
        if !go_on {
            return Ok(());
        }
    }
    if !pending.is_empty() {
        send(&mut pending, &mut chunk, vmas.len());
    }
    Ok(())
}

/// A job's records with their data CRCs, computed while the bytes are in this core's cache.
type Planned = (Vec<usize>, Vec<(RecordPlan, DataCrc)>);

/// A worker's step: reads the job's pages into its buffer and plans their records.
fn read_and_plan(
    src: &Source<'_>,
    mem: &File,
    wk: &mut Worker,
    j: StreamJob,
    ps: usize,
) -> Result<Planned> {
    let ps64 = ps as u64;
    let mut plans = Vec::new();
    if !j.spans.is_empty() {
        if src.twin {
            read_memory_mem_file(src.pid, mem, &j.spans, ps64, &mut wk.buf)?;
        } else {
            read_memory(src.pid, mem, &j.spans, ps64, &mut wk.buf)?;
        }
        let planned = match src.parent {
            Some((idx, in_parent)) => {
                let inp = *in_parent.get(j.vma).ok_or_else(|| {
                    Error::Other(format!(
                        "internal: no parent mapping entry for VMA {}",
                        j.vma
                    ))
                })?;
                let eq = |a: u64, now: Option<&[u8]>| inp && equal_in_parent(idx, a, now);
                let eq: InParent<'_> = &eq;
                plan_pages(&j.spans, &mut wk.buf, 0, ps, Some(eq))?
            }
            None => plan_pages(&j.spans, &mut wk.buf, 0, ps, None)?,
        };
        wk.counts.add(planned.counts);
        plans = planned.records;
    }
    let plans = plans
        .into_iter()
        .map(|r| {
            let data = wk.buf.get(r.data.clone()).ok_or_else(|| {
                Error::Other(format!(
                    "internal: record data {:?} past the buffer",
                    r.data
                ))
            })?;
            let crc = DataCrc::of(data);
            Ok((r, crc))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((j.vmas, plans))
}

/// A worker's step at its turn: writes the job's VMA records and Pages records.
fn write_records<W: Write>(
    w: &mut Writer<IoSink<W>>,
    vmas: &[VmaRec],
    buf: &[u8],
    vs: &[usize],
    plans: &[(RecordPlan, DataCrc)],
) -> Result<()> {
    for &i in vs {
        let v = vmas
            .get(i)
            .ok_or_else(|| Error::Other(format!("internal: no VMA {i} to write")))?;
        v.write(w).map_err(|e| sink_err(w, e))?;
    }
    for (r, crc) in plans {
        let data = buf.get(r.data.clone()).ok_or_else(|| {
            Error::Other(format!(
                "internal: record data {:?} past the buffer",
                r.data
            ))
        })?;
        w.pages_with_crc(&r.runs, data, *crc)
            .map_err(|e| sink_err(w, e))?;
    }
    Ok(())
}
