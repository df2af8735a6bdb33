//! The write-back by splice: a twin's pages go to the image file with one copy (the page
//! cache's), instead of two reads through `/proc/PID/mem` and a write.
//!
//! Into the twin (never the task: it has its own memory and descriptor table, and never runs
//! the task's code) are injected a `pipe2`, a scratch area holding [`BATCH_CODE`](crate::sys::inject::BATCH_CODE), and batches
//! of `vmsplice(pipe, iov, 1, 0)` calls over the page spans to store, in image order
//! ([`crate::sys::inject::Injector::call_batch`], on the thread that traces the twin).
//! `vmsplice` puts references to the twin's pages in the pipe: no copy, and no unsharing of
//! the pages it still shares copy-on-write with the task (unlike `process_vm_readv`'s pin).
//! cr-dump holds the pipe's only read end (`pidfd_getfd`) and, on a second thread, `splice`s
//! each Pages record's data straight to its place in the image file, where the record's data
//! starts (an offset computed as the format does, and checked against the writer's).
//!
//! cr-dump never sees those bytes, but a record's header holds their CRC and comes first: the
//! data just written is mapped back from the page cache ([`sys::FileRange`]), its CRC taken,
//! and the record then written by the same [`Writer`], whose sink (`Placed`) skips the data
//! it already finds in place. A group with an all-zero page, which the read path stores as a
//! zero run, is planned again from the mapped bytes and written as the read path writes it:
//! the image is the read path's, record for record. The pages of a VMA without `PROT_READ`,
//! which `vmsplice` cannot take, are read through `/proc/PID/mem` by the writer thread.
//!
//! The CRCs are taken on a third thread while the next groups are spliced, up to `AHEAD`
//! groups ahead, each placed where its record will put it if the records before it have all
//! their pages as data; a group with a zero page (its record shorter) makes the groups spliced
//! after it be written again where they belong, from their mapped bytes.
//!
//! If the writer fails it closes the pipe's only read end: the twin's `vmsplice` then fails
//! (`EPIPE`) and the batch ends; if the batch fails, the writer stops at its next wait.
//!
//! Not used (the read path is, [`super::stream`]) for an incremental image (its pages are
//! compared with the parent's bytes), an output that is not a regular file, a copy snapshot, or
//! when `CR_DUMP_NO_SPLICE` is set; and when setting up the pipe in the twin fails (e.g. from
//! a thread that does not trace it), before anything is written.

use super::memory::{buf_len, open_proc, read_memory_mem_file};
use super::options::Stats;
use super::plan::{is_zero, plan_pages, PageCounts, RecordPlan, RunBuilder};
use super::stream::{coalesce, cut_jobs, sink_err, write_planned, Group, StreamJob};
use super::vma::VmaRec;
use crate::error::{Error, Result};
use crate::span::PageSpan;
use crate::sys;
use cr_format::limits::MAX_DATA_PER_RECORD;
use cr_format::raw;
use cr_format::write::{DataCrc, IoSink, Writer};
pub(crate) use feed::TwinPipe;
use feed::{other, Call, PIPES, PIPE_BYTES};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

mod feed;

/// Set (to anything) to write a twin's pages by reading them, as before the splice path: for
/// comparisons and as a way out.
pub const NO_SPLICE_ENV: &str = "CR_DUMP_NO_SPLICE";

/// How the write-back moved the pages (`page_path` in `checkpoint --json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PagePath {
    /// From a buffer filled while the task was stopped (a copy snapshot, or direct mode).
    Buffer,
    /// Read from the twin through `/proc/PID/mem`, then written.
    Read,
    /// Spliced from the twin to the image file.
    Splice,
}

/// How long the writer waits for the pipe before it looks at whether the feeder failed.
const POLL_MS: i32 = 100;

/// A writer told of the bytes the splice path put in place without writing them through it:
/// the checkpoint's progress counts them as written.
pub trait Placement {
    /// `bytes` more of the image were written in place.
    fn placed(&mut self, bytes: u64) {
        let _ = bytes;
    }
}

impl Placement for std::io::BufWriter<File> {}

impl<W: Placement + ?Sized> Placement for &mut W {
    fn placed(&mut self, bytes: u64) {
        (**self).placed(bytes);
    }
}

/// A writer that counts nothing ([`Placement`] for any writer).
pub struct Unplaced<W>(pub W);

impl<W: Write> Write for Unplaced<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W> Placement for Unplaced<W> {}

/// The write-back's sink: writes go to `inner`, except the one slice armed by
/// [`Placed::expect`], which is already in the file at the file's offset: that offset is
/// moved past it instead (the file shares its offset with `inner`'s file).
pub(crate) struct Placed<W> {
    inner: W,
    file: File,
    /// The same file opened for reading (the image is created write-only), to map it back.
    reader: File,
    armed: Option<(usize, usize, u64)>,
}

impl<W: Write + Placement> Placed<W> {
    /// `inner`, writing to the same open file as `file` (a duplicate of its descriptor);
    /// `reader`, the file opened for reading ([`reopen_for_reading`]).
    pub(crate) fn new(inner: W, file: File, reader: File) -> Self {
        Placed {
            inner,
            file,
            reader,
            armed: None,
        }
    }

    /// The next write of exactly `data` (same address and length) is the bytes already at
    /// file offset `at`.
    fn expect(&mut self, data: &[u8], at: u64) {
        self.armed = Some((data.as_ptr() as usize, data.len(), at));
    }

    /// Whether the armed write came (and disarms).
    fn took(&mut self) -> bool {
        self.armed.take().is_none()
    }

    /// The file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

impl<W: Write + Placement> Write for Placed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some((p, len, at)) = self.armed {
            if buf.as_ptr() as usize == p && buf.len() == len {
                self.armed = None;
                self.inner.flush()?;
                let pos = self.file.stream_position()?;
                if pos != at {
                    return Err(io::Error::other(format!(
                        "internal: spliced data at {at:#x}, but the image is at {pos:#x}"
                    )));
                }
                let n = i64::try_from(len).map_err(|_| io::Error::other("internal: length"))?;
                self.file.seek(SeekFrom::Current(n))?;
                self.inner.placed(len as u64);
                return Ok(len);
            }
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `file` opened again, for reading (through `/proc/self/fd`: it may have no name).
pub(crate) fn reopen_for_reading(file: &File) -> io::Result<File> {
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Writes the VMA and Pages records of `vmas`, held by the twin of `tp`, moving the pages by
/// splice (see the module docs). Returns the page counts.
pub(crate) fn stream_vmas<W: Write + Placement + Send>(
    tp: &mut TwinPipe,
    w: &mut Writer<IoSink<Placed<W>>>,
    vmas: &[VmaRec],
) -> Result<Stats> {
    let pid = tp.pid;
    let ps = sys::page_size();
    let ps64 = ps as u64;
    let pagemap = open_proc(pid, "pagemap")?;
    let max_pages = u64::from(MAX_DATA_PER_RECORD) / ps64;
    let mut jobs = Vec::new();
    cut_jobs(pid, &pagemap, vmas, ps64, max_pages, |j| {
        jobs.push(j);
        true
    })?;
    let (calls, n_spliced) = vmsplice_calls(&jobs, vmas, ps64);
    // Back in `tp` for the next run of VMAs if this one is written; dropped otherwise.
    let lost = || other(pid, "the pipes were lost by an earlier failure");
    let rds = tp.rds.take().ok_or_else(lost)?;
    let turn = tp.turn.take().ok_or_else(lost)?;
    let pipes = Pipes {
        rds,
        turn,
        n_spliced,
    };
    let stop = AtomicBool::new(false);
    // Which side failed first (its error is the cause; the other then fails for it).
    let writer_first = AtomicBool::new(false);
    let (fed, written) = std::thread::scope(|s| {
        let (stop, writer_first) = (&stop, &writer_first);
        let writer = s.spawn(move || {
            let r = write_jobs(pid, w, vmas, &jobs, &pipes, stop);
            if r.is_err() {
                // First said, then done: the feeder's EPIPE must not pass for the cause.
                if !stop.swap(true, Ordering::AcqRel) {
                    writer_first.store(true, Ordering::Release);
                }
                // Closing our read ends (the only ones) fails a vmsplice still waiting in the
                // twin (EPIPE), and our turn pipe's write end its wait for a turn (EOF). A
                // panic drops them too.
                drop(pipes);
                return (r, None);
            }
            (r, Some(pipes))
        });
        let fed = tp.feed(&calls, stop);
        if fed.is_err() {
            stop.store(true, Ordering::Release);
        }
        let (written, pipes) = writer
            .join()
            .unwrap_or_else(|_| (Err(other(pid, "the image writer thread panicked")), None));
        if let Some(p) = pipes {
            tp.rds = Some(p.rds);
            tp.turn = Some(p.turn);
        }
        (fed, written)
    });
    let counts = match (written, fed) {
        (Ok(c), Ok(())) => c,
        (Err(e), Ok(())) | (Ok(_), Err(e)) => return Err(e),
        (Err(we), Err(fe)) => {
            return Err(if writer_first.load(Ordering::Acquire) {
                we
            } else {
                fe
            })
        }
    };
    Ok(Stats {
        data_pages: counts.data,
        zero_pages: counts.zero,
        vmas: vmas.len() as u64,
        ..Stats::default()
    })
}

/// The twin's calls that put the jobs' pages in the pipes in order: the `k`-th group spliced
/// goes through pipe `k % PIPES`, its touching spans joined, up to a quarter of a pipe per
/// `vmsplice` (a call larger than the room in the pipe stops the batch); from the
/// `PIPES`-th group on, a [`Call::Turn`] first. Also the number of groups spliced.
fn vmsplice_calls(jobs: &[StreamJob], vmas: &[VmaRec], ps: u64) -> (Vec<Call>, usize) {
    let most = (PIPE_BYTES / 4) as u64;
    let mut out: Vec<Call> = Vec::new();
    let groups = jobs.iter().flat_map(|j| &j.groups);
    let mut n = 0;
    for (k, g) in groups.filter(|g| spliced(vmas, g, ps as usize)).enumerate() {
        n = k + 1;
        let pipe = k % PIPES;
        if k >= PIPES {
            out.push(Call::Turn);
        }
        let first = out.len();
        for s in &g.spans {
            let (mut a, mut len) = (s.addr, s.pages * ps);
            while len > 0 {
                let own = out.len() > first;
                match out.last_mut() {
                    Some(Call::Splice { addr, len: l, .. })
                        if own && *addr + *l == a && *l < most =>
                    {
                        let n = (most - *l).min(len);
                        *l += n;
                        a += n;
                        len -= n;
                    }
                    _ => {
                        let n = most.min(len);
                        out.push(Call::Splice {
                            addr: a,
                            len: n,
                            pipe,
                        });
                        a += n;
                        len -= n;
                    }
                }
            }
        }
    }
    (out, n)
}

/// Groups smaller than this are read through `/proc/PID/mem`, many at a time, rather than
/// spliced: splicing, mapping back and placing a record cost some tens of microseconds each,
/// which 65,000 one-page mappings made 2.7 times slower than reading them (BENCHMARKS.md).
const MIN_SPLICE: u64 = 128 << 10;

/// Bytes of groups read at once at most: one handover from the reader to the writer
/// ([`read_ahead`]); small, as [`READ_AHEAD`] of them wait at most.
const READ_RUN_BYTES: u64 = 1 << 20;

/// Runs read ahead of the writer at most (besides the one being read). The reader reads and
/// plans while the writer writes: 65,000 one-page mappings spent a third of the writer's time
/// in `/proc/PID/mem` reads and CRCs.
const READ_AHEAD: usize = 2;

/// Whether group `g` is spliced: it has pages, enough of them, and its VMA can be read by
/// `vmsplice` (which, unlike `/proc/PID/mem`, does not force its way into a mapping without
/// `PROT_READ`).
fn spliced(vmas: &[VmaRec], g: &Group, ps: usize) -> bool {
    let bytes: u64 = g.spans.iter().map(|s| s.pages * ps as u64).sum();
    bytes >= MIN_SPLICE
        && vmas
            .get(g.vma)
            .is_some_and(|v| v.vma.prot.get() & libc::PROT_READ as u32 != 0)
}

/// How many groups from the first of `groups` (not spliced) to read at once: those not
/// spliced, within [`READ_RUN_BYTES`] (at least one).
fn read_run(vmas: &[VmaRec], groups: &[&Group], ps: usize) -> usize {
    let mut bytes = 0u64;
    let n = groups
        .iter()
        .take_while(|g| {
            bytes += g.spans.iter().map(|s| s.pages * ps as u64).sum::<u64>();
            !spliced(vmas, g, ps) && bytes <= READ_RUN_BYTES
        })
        .count();
    n.max(1)
}

/// The runs of `groups` read rather than spliced, in order, as (first group, count): the ones
/// the writer meets ([`read_run`] from each group not spliced that no earlier run holds).
fn read_runs(vmas: &[VmaRec], groups: &[&Group], ps: usize) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while let Some(g) = groups.get(i) {
        if spliced(vmas, g, ps) {
            i += 1;
            continue;
        }
        let n = read_run(vmas, groups.get(i..).unwrap_or(&[]), ps);
        runs.push((i, n));
        i += n;
    }
    runs
}

/// A run of groups read through `/proc/PID/mem` ahead of the writer: their pages back to back
/// in `buf`, each group's records planned, with their data's CRC.
struct ReadRun {
    /// Its first group (an index into the write-back's groups) and how many.
    first: usize,
    n: usize,
    buf: Vec<u8>,
    plans: Vec<Vec<(RecordPlan, DataCrc)>>,
    counts: PageCounts,
}

/// The reader's side: each of `runs` (of `groups`) read from the twin `pid` through `mem`,
/// planned and sent to the writer in order, in a buffer it gave back (`spare`) when there is
/// one. Stops at its first error (sent) or when the writer is gone.
fn read_ahead(
    pid: i32,
    mem: &File,
    groups: &[&Group],
    runs: &[(usize, usize)],
    out: &std::sync::mpsc::SyncSender<Result<ReadRun>>,
    spare: &std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let ps = sys::page_size();
    for &(first, n) in runs {
        let buf = spare.try_recv().unwrap_or_default();
        let r = match groups.get(first..first.saturating_add(n)) {
            Some(gs) => read_and_plan(pid, mem, gs, ps, buf).map(|(buf, plans, counts)| ReadRun {
                first,
                n,
                buf,
                plans,
                counts,
            }),
            None => Err(other(pid, "internal: a read run past the groups")),
        };
        let failed = r.is_err();
        if out.send(r).is_err() || failed {
            return;
        }
    }
}

/// What [`read_and_plan`] gives: the buffer, each group's records, their counts.
type ReadPlanned = (Vec<u8>, Vec<Vec<(RecordPlan, DataCrc)>>, PageCounts);

/// `groups` read from the twin through `mem` at once into `buf` (grown if too small, never
/// cleared: every byte used is read), and each one's records planned as the read path plans
/// them ([`plan_group`]).
fn read_and_plan(
    pid: i32,
    mem: &File,
    groups: &[&Group],
    ps: usize,
    mut buf: Vec<u8>,
) -> Result<ReadPlanned> {
    let all: Vec<PageSpan> = groups
        .iter()
        .flat_map(|g| g.spans.iter().copied())
        .collect();
    let len = buf_len(all.iter().map(|s| s.pages).sum(), ps)?;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let got = buf
        .get_mut(..len)
        .ok_or_else(|| other(pid, "internal: the read buffer is short"))?;
    read_memory_mem_file(pid, mem, &coalesce(&all, ps as u64), ps as u64, got)?;
    let mut plans = Vec::with_capacity(groups.len());
    let mut counts = PageCounts::default();
    let mut base = 0usize;
    for g in groups {
        let (p, c) = plan_group(&g.spans, &mut buf, base, ps)?;
        counts.add(c);
        plans.push(p);
        base += buf_len(g.spans.iter().map(|s| s.pages).sum(), ps)?;
    }
    Ok((buf, plans, counts))
}

/// The records of a group whose pages are at `buf[base..]`, planned as the read path plans
/// them (zero pages become zero runs), each with its data's CRC.
fn plan_group(
    spans: &[PageSpan],
    buf: &mut [u8],
    base: usize,
    ps: usize,
) -> Result<(Vec<(RecordPlan, DataCrc)>, PageCounts)> {
    let planned = plan_pages(spans, buf, base, ps, None)?;
    let recs = planned
        .records
        .into_iter()
        .map(|r| {
            let d = buf.get(r.data.clone()).ok_or_else(|| {
                Error::Other(format!(
                    "internal: record data {:?} past the buffer",
                    r.data
                ))
            })?;
            let crc = DataCrc::of(d);
            Ok((r, crc))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((recs, planned.counts))
}

/// Groups spliced ahead of the one whose record is written: while one thread copies the next
/// groups into the page cache, another takes the CRC of the earlier ones.
const AHEAD: usize = 4;

/// Our ends of the twin's pipes (see [`PIPES`]).
struct Pipes {
    /// The pipes' read ends.
    rds: Vec<File>,
    /// The turn pipe's write end.
    turn: File,
    /// Groups spliced in all: the last `PIPES` need no turn given.
    n_spliced: usize,
}

/// A group whose data is spliced, its record not yet written.
struct Pending<'j> {
    g: &'j Group,
    rec: RecordPlan,
    /// Where its data was spliced, if the records before it are as foreseen.
    at: u64,
    /// Where its record ends then.
    end: u64,
}

/// What the checker found of a group's data, mapped back.
struct Checked {
    map: sys::FileRange,
    zero: bool,
    crc: DataCrc,
}

/// The writer's side: each group's VMA record (if first), then its Pages record, its data
/// spliced into place first from its pipe (as [`vmsplice_calls`] gave them out), up to `AHEAD` groups ahead of the records, whose CRCs
/// a checker thread takes meanwhile.
fn write_jobs<W: Write + Placement>(
    pid: i32,
    w: &mut Writer<IoSink<Placed<W>>>,
    vmas: &[VmaRec],
    jobs: &[StreamJob],
    pipes: &Pipes,
    stop: &AtomicBool,
) -> Result<PageCounts> {
    let placed = w.sink_mut().get_mut();
    let dup = |f: &File| {
        f.try_clone()
            .map_err(|e| Error::io("duplicating the image file's descriptor", e))
    };
    let (file, reader) = (dup(placed.file())?, dup(&placed.reader)?);
    let mem = open_proc(pid, "mem")?;
    let ps = sys::page_size();
    let (to_check, jobs_rx) = std::sync::mpsc::channel::<(u64, usize)>();
    let (checked_tx, checked) = std::sync::mpsc::channel::<Result<Checked>>();
    let groups: Vec<&Group> = jobs.iter().flat_map(|j| &j.groups).collect();
    let runs = read_runs(vmas, &groups, ps);
    let (read_tx, reads) = std::sync::mpsc::sync_channel::<Result<ReadRun>>(READ_AHEAD);
    let (spare, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        s.spawn(move || {
            for (at, len) in jobs_rx {
                if checked_tx.send(check(&reader, at, len, ps)).is_err() {
                    break;
                }
            }
        });
        let (groups_r, runs) = (&groups, &runs);
        s.spawn(move || read_ahead(pid, &mem, groups_r, runs, &read_tx, &spare_rx));
        let mut c = Committer {
            pid,
            counts: PageCounts::default(),
            buf: Vec::new(),
            checked,
            reads,
            spare,
            resync: false,
        };
        let r = (|| {
            let mut pending = std::collections::VecDeque::new();
            let mut i = 0;
            // Groups spliced so far: the next one comes through pipe `spliced_n % PIPES`.
            let mut spliced_n = 0usize;
            while let Some(&g) = groups.get(i) {
                if !spliced(vmas, g, ps) {
                    // A run of them read through /proc/PID/mem at once, written as the read
                    // path writes them.
                    let n = read_run(vmas, &groups[i..], ps);
                    while let Some(p) = pending.pop_front() {
                        c.commit(w, p)?;
                    }
                    c.read_groups(w, vmas, &groups, i, n)?;
                    i += n;
                    continue;
                }
                i += 1;
                if g.first {
                    while let Some(p) = pending.pop_front() {
                        c.commit(w, p)?;
                    }
                    let v = vmas.get(g.vma).ok_or_else(|| {
                        Error::Other(format!("internal: no VMA {} to write", g.vma))
                    })?;
                    v.write(w).map_err(|e| sink_err(w, e))?;
                }
                let rec = all_data(&g.spans, ps as u64)?;
                let len = rec.data.len();
                let base = pending.back().map_or(w.offset(), |p: &Pending<'_>| p.end);
                let at = data_offset(base, rec.runs.len(), ps as u64);
                let rd = pipes
                    .rds
                    .get(spliced_n % PIPES)
                    .ok_or_else(|| other(pid, "internal: a pipe is missing"))?;
                splice_exact(pid, rd, &file, at, len, stop)?;
                if spliced_n + PIPES < pipes.n_spliced {
                    // This group's pipe is empty: the twin may fill it again.
                    (&pipes.turn)
                        .write_all(&[1])
                        .map_err(|e| Error::io("giving the twin its turn", e))?;
                }
                spliced_n += 1;
                to_check
                    .send((at, len))
                    .map_err(|_| other(pid, "the checker thread stopped"))?;
                pending.push_back(Pending {
                    g,
                    rec,
                    at,
                    end: at + len as u64,
                });
                while pending.len() > AHEAD || (c.resync && !pending.is_empty()) {
                    if let Some(p) = pending.pop_front() {
                        c.commit(w, p)?;
                    }
                }
                c.resync = false;
            }
            while let Some(p) = pending.pop_front() {
                c.commit(w, p)?;
            }
            Ok(c.counts)
        })();
        drop(to_check);
        r
    })
}

/// Maps back the `len` bytes at `at` just spliced, and takes their CRC unless a page is zero.
fn check(reader: &File, at: u64, len: usize, ps: usize) -> Result<Checked> {
    let map = sys::FileRange::new(reader, at, len)
        .map_err(|e| Error::io(format!("mapping the image back at {at:#x}"), e))?;
    let data = map.bytes();
    let zero = data.chunks_exact(ps).any(is_zero);
    let crc = if zero {
        DataCrc::of(&[])
    } else {
        DataCrc::of(data)
    };
    Ok(Checked { map, zero, crc })
}

/// Writes the records of spliced groups, in order.
struct Committer {
    pid: i32,
    counts: PageCounts,
    buf: Vec<u8>,
    checked: std::sync::mpsc::Receiver<Result<Checked>>,
    /// The runs of groups not spliced, read and planned ahead ([`read_ahead`]), and where
    /// their buffers go back once written.
    reads: std::sync::mpsc::Receiver<Result<ReadRun>>,
    spare: std::sync::mpsc::Sender<Vec<u8>>,
    /// A record came out shorter than foreseen: the groups spliced after it are not where
    /// their records go. They are written (copied) where they go, and the next group is
    /// placed after them.
    resync: bool,
}

impl Committer {
    fn commit<W: Write + Placement>(
        &mut self,
        w: &mut Writer<IoSink<Placed<W>>>,
        p: Pending<'_>,
    ) -> Result<()> {
        let ps = sys::page_size();
        let c = self
            .checked
            .recv()
            .map_err(|_| other(self.pid, "the checker thread stopped"))??;
        let in_place = data_offset(w.offset(), p.rec.runs.len(), ps as u64) == p.at;
        if in_place && !c.zero {
            let data = c.map.bytes();
            w.sink_mut().get_mut().expect(data, p.at);
            let r = w.pages_with_crc(&p.rec.runs, data, c.crc);
            let took = w.sink_mut().get_mut().took();
            r.map_err(|e| sink_err(w, e))?;
            if !took {
                return Err(other(
                    self.pid,
                    format!("internal: the record's data at {:#x} was not placed", p.at),
                ));
            }
            self.counts.data += (data.len() / ps) as u64;
            return Ok(());
        }
        // Written as the read path writes it, from a copy: zero pages become zero runs.
        self.buf.clear();
        self.buf.extend_from_slice(c.map.bytes());
        drop(c.map);
        self.plan_and_write(w, p.g)?;
        if w.offset() != p.end {
            self.resync = true;
        }
        Ok(())
    }

    /// Writes the records of group `g`, whose pages are in `self.buf`, as the read path does
    /// ([`plan_group`], which the read runs share).
    fn plan_and_write<W: Write + Placement>(
        &mut self,
        w: &mut Writer<IoSink<Placed<W>>>,
        g: &Group,
    ) -> Result<()> {
        let (plans, counts) = plan_group(&g.spans, &mut self.buf, 0, sys::page_size())?;
        self.counts.add(counts);
        write_planned(w, &self.buf, &plans)
    }

    /// The `n` groups from group `first` (no pending group before them), read and planned by
    /// the reader ([`read_ahead`]), written: each one's VMA record if it is its first, then its
    /// records.
    fn read_groups<W: Write + Placement>(
        &mut self,
        w: &mut Writer<IoSink<Placed<W>>>,
        vmas: &[VmaRec],
        groups: &[&Group],
        first: usize,
        n: usize,
    ) -> Result<()> {
        let run = self
            .reads
            .recv()
            .map_err(|_| other(self.pid, "the reader thread stopped"))??;
        if (run.first, run.n) != (first, n) || run.plans.len() != n {
            return Err(other(
                self.pid,
                format!(
                    "internal: read groups {}+{} where {first}+{n} were due",
                    run.first, run.n
                ),
            ));
        }
        let gs = groups
            .get(first..first.saturating_add(n))
            .ok_or_else(|| other(self.pid, "internal: a read run past the groups"))?;
        for (g, plans) in gs.iter().zip(&run.plans) {
            if g.first {
                let v = vmas
                    .get(g.vma)
                    .ok_or_else(|| Error::Other(format!("internal: no VMA {} to write", g.vma)))?;
                v.write(w).map_err(|e| sink_err(w, e))?;
            }
            write_planned(w, &run.buf, plans)?;
        }
        self.counts.add(run.counts);
        // The reader may have finished: then the buffer is freed here.
        let _ = self.spare.send(run.buf);
        Ok(())
    }
}

/// The one Pages record of a group as if all its pages were data: a group has at most one
/// record's data and half a record's runs ([`cut_jobs`]), so the read path makes one too.
fn all_data(spans: &[PageSpan], ps: u64) -> Result<RecordPlan> {
    let mut b = RunBuilder::new(ps, 0);
    for s in spans {
        b.start_span();
        for k in 0..s.pages {
            b.push(s.addr + k * ps, raw::RUN_DATA);
        }
    }
    let mut recs = b.finish();
    match (recs.pop(), recs.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(Error::Other(
            "internal: a group of the splice path is not one record".into(),
        )),
    }
}

/// Where the data of a Pages record with `runs` runs written at `offset` starts (FORMAT.md
/// §8: the 16-byte record header, the 16-byte fixed part, the run table, then padding to the
/// page size).
fn data_offset(offset: u64, runs: usize, ps: u64) -> u64 {
    let table_end = offset + 16 + 16 + 16 * runs as u64;
    table_end + (table_end.wrapping_neg() & (ps - 1))
}

/// Moves exactly `len` bytes from the pipe `rd` to `file` at `at`.
fn splice_exact(
    pid: i32,
    rd: &File,
    file: &File,
    at: u64,
    len: usize,
    stop: &AtomicBool,
) -> Result<()> {
    let mut done = 0usize;
    while done < len {
        match sys::pipe::splice_to(rd, file, at + done as u64, len - done) {
            Ok(0) => return Err(other(pid, "the pipe ended before the pages did")),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Acquire) {
                    return Err(other(pid, "the twin stopped feeding the pipe"));
                }
                sys::check_interrupt().map_err(|e| Error::io("checkpoint", e))?;
                sys::pipe::wait_readable(rd, POLL_MS)
                    .map_err(|e| Error::io("waiting for the twin's pipe", e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::io(
                    format!("writing the image: splicing {len:#x} bytes at {at:#x}"),
                    e,
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_starts_on_a_page() {
        // FORMAT.md §8's example: a Pages record at 1256 with 2 runs has its data at 4096.
        assert_eq!(data_offset(1256, 2, 4096), 4096);
        assert_eq!(data_offset(4096 - 64, 0, 4096), 4096);
        assert_eq!(data_offset(4096 - 32, 0, 4096), 4096);
        assert_eq!(data_offset(4096 - 31, 0, 4096), 8192);
    }
}
