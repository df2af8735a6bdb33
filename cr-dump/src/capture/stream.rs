//! The image stream: the VMA and Pages records of a task written in bounded memory, read from
//! the frozen task (direct mode) or from its copy-on-write twin (a lazy write-back). The steps
//! here (cut the pages into chunks, read a chunk, plan its records, CRC their data, write them)
//! run on the ordered worker pipeline (`pipeline.rs`).

use super::incremental::equal_in_parent;
use super::memory::{
    buf_len, for_each_vma_span, open_proc, read_memory, read_memory_mem_file, Walk,
};
use super::options::Stats;
use super::pipeline;
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

/// VMAs whose records one job writes at most: many small VMAs share a job (65,000 one-page
/// mappings were 65,000 jobs, most of the write-back in handing them over), few enough that
/// a job stays small.
const GROUPS_PER_JOB: usize = 1024;

/// A chunk of a stream: for each of its groups in order, the VMA record (if the group is its
/// first) then the Pages records of its pages; all its pages fit one Pages record's data.
#[derive(Default)]
pub(crate) struct StreamJob {
    pub groups: Vec<Group>,
}

/// The pages of one VMA in a job.
pub(crate) struct Group {
    /// The VMA.
    pub vma: usize,
    /// Whether its VMA record is written here (its first group).
    pub first: bool,
    /// Its pages to store, in address order.
    pub spans: Vec<PageSpan>,
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
        |feed| cut_jobs(pid, &pagemap, vmas, ps64, max_pages, |j| feed.push(j)),
        || Worker {
            buf: vec![0u8; buf_bytes],
            counts: PageCounts::default(),
        },
        |wk, job| read_and_plan(src, &mem, wk, job, ps),
        w,
        |w, wk, groups| write_records(w, vmas, &wk.buf, &groups),
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

/// Bytes of the pages of `vmas` of `pid` a write-back would store, per the page map (a
/// progress bar's total): one walk of them all ([`for_each_vma_span`]), as the write-back
/// cuts them, not a page map read per VMA (65,000 reads for as many one-page mappings).
pub(crate) fn present_bytes(pid: i32, vmas: &[VmaRec]) -> Result<u64> {
    let pagemap = open_proc(pid, "pagemap")?;
    let ps64 = sys::page_size() as u64;
    let mut pages = 0u64;
    for_each_vma_span(pid, &pagemap, vmas, ps64, u64::MAX, |w| {
        if let Walk::Span(_, s) = w {
            pages = pages.saturating_add(s.pages);
        }
        Ok(true)
    })?;
    Ok(pages.saturating_mul(ps64))
}

/// The producer: walks the VMAs' pages ([`for_each_vma_span`]) and cuts them into jobs of at
/// most `max_pages` pages, half a record's runs per VMA and [`GROUPS_PER_JOB`] VMAs, handed to
/// `feed` in order (`false` from it: stop). Every path that streams from a twin cuts here, so
/// their records are the same.
pub(crate) fn cut_jobs(
    pid: i32,
    pagemap: &File,
    vmas: &[VmaRec],
    ps64: u64,
    max_pages: u64,
    mut feed: impl FnMut(StreamJob) -> bool,
) -> Result<()> {
    let mut job = StreamJob::default();
    let mut job_pages = 0u64;
    let runs = MAX_RUNS_PER_RECORD as usize / 2;
    for_each_vma_span(pid, pagemap, vmas, ps64, max_pages, |w| {
        let full = |job: &StreamJob, more: u64| {
            job.groups.len() >= GROUPS_PER_JOB
                || job_pages + more > max_pages
                || job.groups.last().is_some_and(|g| g.spans.len() >= runs)
        };
        match w {
            Walk::Vma(i) => {
                if job.groups.len() >= GROUPS_PER_JOB {
                    job_pages = 0;
                    if !feed(std::mem::take(&mut job)) {
                        return Ok(false);
                    }
                }
                job.groups.push(Group {
                    vma: i,
                    first: true,
                    spans: Vec::new(),
                });
            }
            Walk::Span(i, span) => {
                if full(&job, span.pages) {
                    job_pages = 0;
                    if !feed(std::mem::take(&mut job)) {
                        return Ok(false);
                    }
                }
                match job.groups.last_mut() {
                    Some(g) if g.vma == i => g.spans.push(span),
                    _ => job.groups.push(Group {
                        vma: i,
                        first: false,
                        spans: vec![span],
                    }),
                }
                job_pages += span.pages;
            }
        }
        Ok(true)
    })?;
    if !job.groups.is_empty() {
        feed(job);
    }
    Ok(())
}

/// A job's groups, each with its records and their data CRCs, computed while the bytes are
/// in this core's cache.
type Planned = Vec<(usize, bool, Vec<(RecordPlan, DataCrc)>)>;

/// A worker's step: reads the job's pages into its buffer (back to back, group after group)
/// and plans each group's records.
fn read_and_plan(
    src: &Source<'_>,
    mem: &File,
    wk: &mut Worker,
    j: StreamJob,
    ps: usize,
) -> Result<Planned> {
    let ps64 = ps as u64;
    let all: Vec<PageSpan> = j
        .groups
        .iter()
        .flat_map(|g| g.spans.iter().copied())
        .collect();
    if !all.is_empty() {
        if src.twin {
            // Pages of neighbouring VMAs are read by one read of /proc/PID/mem.
            read_memory_mem_file(src.pid, mem, &coalesce(&all, ps64), ps64, &mut wk.buf)?;
        } else {
            read_memory(src.pid, mem, &all, ps64, &mut wk.buf)?;
        }
    }
    let mut out = Vec::with_capacity(j.groups.len());
    let mut base = 0usize;
    for g in j.groups {
        let pages: u64 = g.spans.iter().map(|s| s.pages).sum();
        let mut records = Vec::new();
        if !g.spans.is_empty() {
            let planned = match src.parent {
                Some((idx, in_parent)) => {
                    let inp = *in_parent.get(g.vma).ok_or_else(|| {
                        Error::Other(format!(
                            "internal: no parent mapping entry for VMA {}",
                            g.vma
                        ))
                    })?;
                    let eq = |a: u64, now: Option<&[u8]>| inp && equal_in_parent(idx, a, now);
                    let eq: InParent<'_> = &eq;
                    plan_pages(&g.spans, &mut wk.buf, base, ps, Some(eq))?
                }
                None => plan_pages(&g.spans, &mut wk.buf, base, ps, None)?,
            };
            wk.counts.add(planned.counts);
            records = planned
                .records
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
        }
        base += buf_len(pages, ps)?;
        out.push((g.vma, g.first, records));
    }
    Ok(out)
}

/// `spans` (in address order) with touching ones joined, for fewer reads.
pub(crate) fn coalesce(spans: &[PageSpan], ps: u64) -> Vec<PageSpan> {
    let mut out: Vec<PageSpan> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(l) if l.addr + l.pages * ps == s.addr => l.pages += s.pages,
            _ => out.push(*s),
        }
    }
    out
}

/// A worker's step at its turn: writes each group's VMA record (if it is its first) and its
/// Pages records.
fn write_records<W: Write>(
    w: &mut Writer<IoSink<W>>,
    vmas: &[VmaRec],
    buf: &[u8],
    groups: &Planned,
) -> Result<()> {
    for (i, first, plans) in groups {
        if *first {
            let v = vmas
                .get(*i)
                .ok_or_else(|| Error::Other(format!("internal: no VMA {i} to write")))?;
            v.write(w).map_err(|e| sink_err(w, e))?;
        }
        write_planned(w, buf, plans)?;
    }
    Ok(())
}

/// Writes the Pages records `plans`, whose data is in `buf` (the read path's and the splice
/// path's read runs alike).
pub(crate) fn write_planned<W: Write>(
    w: &mut Writer<IoSink<W>>,
    buf: &[u8],
    plans: &[(RecordPlan, DataCrc)],
) -> Result<()> {
    for (r, crc) in plans {
        let d = buf.get(r.data.clone()).ok_or_else(|| {
            Error::Other(format!(
                "internal: record data {:?} past the buffer",
                r.data
            ))
        })?;
        w.pages_with_crc(&r.runs, d, *crc)
            .map_err(|e| sink_err(w, e))?;
    }
    Ok(())
}
