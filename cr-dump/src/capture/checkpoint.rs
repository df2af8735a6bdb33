//! A whole checkpoint as `cr-dump checkpoint` takes it: inspect the task, find the parent, pick
//! the mode (direct, lazy twin or copy, tracked, pre-copy), write the image under a temporary
//! name and name it when complete, keep dirty tracking's state, and report ([`Report`]).
//!
//! The caller parses its arguments into [`CheckpointOptions`], may show progress through
//! [`Progress`], and prints the [`Report`] (it serializes to the `--json` form, less the
//! caller's own `total_ms` and `peak_rss_kib`).

use super::check::{inspect, Inspection};
use super::direct::checkpoint_direct;
use super::incremental::{latest, Parent};
use super::options::{After, LazyMode, Options, StateOptions, Stats};
use super::precopy::{PrecopyLimits, PrecopyReport};
use super::registry::{self, Lazy};
use super::splice::{PagePath, Placement};
use super::state::Fidelity;
use super::tracking::Session;
use super::vma::Tracker;
use crate::error::{Error, Result};
use crate::output::TempImage;
use cr_format::write::Summary;
use serde::{Serialize, Serializer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to checkpoint, how, and where.
#[derive(Clone, Debug, Default)]
pub struct CheckpointOptions {
    /// The task.
    pub pid: i32,
    /// The directory of the image (created, mode 0700, if only its last component is missing).
    pub dir: PathBuf,
    /// Image name; default: the task's comm.
    pub name: Option<String>,
    /// What happens to the task afterwards.
    pub after: After,
    /// How a lazy checkpoint holds the memory.
    pub lazy: LazyMode,
    /// Stream the image while the task is stopped instead of taking a lazy snapshot first.
    pub direct: bool,
    /// fsync the image before naming it.
    pub sync: bool,
    /// Incremental over this parent image.
    pub parent: Option<PathBuf>,
    /// Incremental over the newest `NAME.img.CRID` in `dir` (full if there is none).
    pub incremental: bool,
    /// Arm write-protect dirty tracking after this checkpoint.
    pub track: bool,
    /// Pre-copy within these bounds.
    pub precopy: Option<PrecopyLimits>,
    /// Open files and the rest of the task's state: `--strict`, `--ghost-limit`.
    pub state: StateOptions,
}

/// Progress of the long steps and notes for the user, as they happen.
pub trait Progress: Send {
    /// A step that writes about `len` bytes (`None`: unknown) starts: `"capture"` (direct
    /// mode) or `"write-back"`.
    fn start(&mut self, _step: &'static str, _len: Option<u64>) {}
    /// `bytes` more were written.
    fn advance(&mut self, _bytes: u64) {}
    /// The step ended.
    fn finish(&mut self) {}
    /// Something the user should know (also kept in [`Report::notes`]).
    fn note(&mut self, _note: &str) {}
}

/// No progress shown.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// How unchanged pages were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffMethod {
    /// A full image.
    None,
    /// By comparing contents with the parent chain.
    ContentCompare,
    /// By write-protect dirty tracking.
    WriteTracking,
}

/// How the checkpoint was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Streamed while frozen.
    Direct,
    /// Held in memory, written afterwards.
    Lazy,
}

/// How a lazy checkpoint held the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Not lazy (direct mode).
    None,
    /// A copy-on-write twin.
    Twin,
    /// A copy while the task was stopped.
    Copy,
}

/// What a checkpoint did. Serialized, it is the `--json` output of `cr-dump checkpoint`
/// (durations as `*_ms` in milliseconds), less `total_ms` and `peak_rss_kib`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// CRID.
    pub crid: u64,
    /// The task.
    pub pid: i32,
    /// The image written.
    #[serde(serialize_with = "display_path")]
    pub image: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Records before the tail.
    pub records: u64,
    /// Tail digest.
    #[serde(serialize_with = "hex16")]
    pub digest: u64,
    /// Pages stored with their data.
    pub data_pages: u64,
    /// Pages stored as known zero.
    pub zero_pages: u64,
    /// Pages unchanged since the parent.
    pub parent_pages: u64,
    /// The parent's CRID (0 for a full image).
    pub parent_crid: u64,
    /// The parent image.
    #[serde(serialize_with = "display_opt_path")]
    pub parent_image: Option<PathBuf>,
    /// How unchanged pages were found.
    pub diff_method: DiffMethod,
    /// VMAs whose pages came from dirty tracking.
    pub tracked_vmas: u64,
    /// Whether tracking is armed after this checkpoint.
    pub tracking_armed: bool,
    /// Pre-copy: pages copied per round while the task ran.
    pub precopy_rounds: Option<Vec<u64>>,
    /// Pre-copy: pages copied while frozen at the end.
    pub precopy_final_pages: Option<u64>,
    /// Pre-copy: how long arming stopped the task.
    #[serde(rename = "precopy_arm_downtime_ms", serialize_with = "opt_ms")]
    pub precopy_arm_downtime: Option<Duration>,
    /// VMAs recorded.
    pub vmas: u64,
    /// Direct or lazy.
    pub mode: Mode,
    /// How lazy mode held the memory.
    pub snapshot: SnapshotKind,
    /// How the pages went to the image (splice: from a twin, by `vmsplice`/`splice`).
    pub page_path: PagePath,
    /// How long the task was stopped.
    #[serde(rename = "downtime_ms", serialize_with = "ms")]
    pub downtime: Duration,
    /// Start of the capture to the image ready in memory (direct: written).
    #[serde(rename = "capture_ms", serialize_with = "ms")]
    pub capture: Duration,
    /// The write-back (zero in direct mode).
    #[serde(rename = "writeback_ms", serialize_with = "ms")]
    pub writeback: Duration,
    /// CPU time the twin spent (to the clock tick), when there was one: the calls injected into
    /// it (`vmsplice`) are work of the checkpoint that no `getrusage` of cr-dump counts.
    #[serde(rename = "twin_cpu_ms", serialize_with = "opt_ms")]
    pub twin_cpu: Option<Duration>,
    /// The notes given to [`Progress::note`], in order.
    #[serde(skip)]
    pub notes: Vec<String>,
    /// What restore will do with each item of the task's state besides memory (open files,
    /// working directory, ...): the fidelity report.
    pub fidelity: Vec<Fidelity>,
}

/// Milliseconds, as a float.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms<S: Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(millis(*d))
}

fn opt_ms<S: Serializer>(d: &Option<Duration>, s: S) -> std::result::Result<S::Ok, S::Error> {
    d.map(millis).serialize(s)
}

fn hex16<S: Serializer>(v: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#018x}"))
}

fn display_path<S: Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.display().to_string())
}

fn display_opt_path<S: Serializer>(
    p: &Option<PathBuf>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    p.as_ref().map(|p| p.display().to_string()).serialize(s)
}

/// Counts bytes through a writer for a [`Progress`].
struct Counting<'p, W> {
    inner: W,
    progress: &'p mut dyn Progress,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The write-back is the long step: a signal stops it between two writes.
        crate::sys::check_interrupt()?;
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Placement for Counting<'_, W> {
    fn placed(&mut self, bytes: u64) {
        self.progress.advance(bytes);
    }
}

/// A safe point: `Err` if a signal asked cr-dump to stop ([`crate::sys::catch_interrupts`]).
/// Returning it unwinds through the owners' drops: the task let go as it was, a twin killed
/// and reaped, the unnamed image file discarded.
fn safe_point() -> Result<()> {
    crate::sys::check_interrupt().map_err(|e| Error::io("checkpoint", e))
}

/// What the capture and write gave.
struct Written {
    stats: Stats,
    summary: Summary,
    writeback: Duration,
    twin_cpu: Option<Duration>,
    snapshot: SnapshotKind,
    page_path: PagePath,
    precopy: Option<PrecopyReport>,
    fidelity: Vec<Fidelity>,
}

/// Takes a checkpoint as `o` says; see the module docs.
pub fn checkpoint(o: &CheckpointOptions, progress: &mut dyn Progress) -> Result<Report> {
    let pid = o.pid;
    if o.precopy.is_some() && (o.direct || o.after == After::Kill) {
        return Err(Error::Other(
            "pre-copy needs a lazy checkpoint of a task that runs on (not direct, not kill)".into(),
        ));
    }
    let opts = Options {
        after: o.after,
        lazy: o.lazy,
        state: o.state,
    };
    safe_point()?;
    let ins = inspect(pid)?;
    let name = match &o.name {
        Some(n) => n.clone(),
        None => ins.stat.comm.replace('/', "_"),
    };
    let parent = open_parent(o, &name, pid)?;
    safe_point()?;
    // Dirty tracking: used when armed with the parent as baseline, armed again after.
    let mut session = if o.direct || o.after == After::Kill {
        None
    } else {
        let want = o.track || o.precopy.is_some();
        let s = Session::new(pid, parent.as_ref(), want)?;
        (want || s.usable() || s.armed_before()).then_some(s)
    };
    safe_point()?;
    let mut tmp = TempImage::create(&o.dir, &name)?;
    let crid = tmp.next_crid()?;
    let mut notes = Vec::new();
    let w = if o.direct {
        // The pages present now: about what the capture writes.
        let bytes = super::memory::estimate_bytes(&ins).ok();
        if let Some(b) = bytes.filter(|_| parent.is_none()) {
            tmp.preallocate(reserve_for(b));
        }
        progress.start("capture", bytes);
        let mut out = Counting {
            inner: tmp.writer(),
            progress: &mut *progress,
        };
        let r = checkpoint_direct(&ins, crid, &opts, &mut out);
        progress.finish();
        let r = r?;
        Written {
            stats: r.stats,
            summary: r.summary,
            writeback: Duration::ZERO,
            twin_cpu: None,
            snapshot: SnapshotKind::None,
            page_path: PagePath::Read,
            precopy: None,
            fidelity: r.fidelity,
        }
    } else {
        if let Some(s) = session.as_mut().filter(|_| o.precopy.is_none()) {
            // A full capture that arms tracking: most of the protection is set while the task
            // runs, not in the freeze.
            s.prearm(pid)?;
        }
        let lazy = take_lazy(o, &ins, crid, &opts, parent.as_ref(), session.as_mut())?;
        if let Err(e) = safe_point() {
            // Held in the registry: dropping it kills and reaps a twin.
            let _ = registry::global().discard(lazy.0.crid);
            return Err(e);
        }
        write_back(lazy, &mut tmp, progress, &mut notes)?
    };
    // Not named if a signal came meanwhile: the interrupted checkpoint leaves nothing.
    safe_point()?;
    let image = tmp.commit(crid, o.sync)?;
    if let Some(s) = &session {
        s.commit(crid, w.summary.digest)?;
        for n in &s.notes {
            progress.note(n);
            notes.push(n.clone());
        }
    }
    let diff_method = match (&parent, w.stats.tracked_vmas) {
        (None, _) => DiffMethod::None,
        (Some(_), 0) => DiffMethod::ContentCompare,
        (Some(_), _) => DiffMethod::WriteTracking,
    };
    Ok(Report {
        crid,
        pid,
        image,
        size: w.summary.image_len,
        records: w.summary.records,
        digest: w.summary.digest,
        data_pages: w.stats.data_pages,
        zero_pages: w.stats.zero_pages,
        parent_pages: w.stats.parent_pages,
        parent_crid: parent.as_ref().map_or(0, |p| p.crid),
        parent_image: parent.as_ref().map(|p| p.path.clone()),
        diff_method,
        tracked_vmas: w.stats.tracked_vmas,
        tracking_armed: session.as_ref().is_some_and(|s| s.armed),
        precopy_rounds: w.precopy.as_ref().map(|r| r.rounds.clone()),
        precopy_final_pages: w.precopy.as_ref().map(|r| r.final_pages),
        precopy_arm_downtime: w.precopy.as_ref().map(|r| r.arm_downtime),
        vmas: w.stats.vmas,
        mode: if o.direct { Mode::Direct } else { Mode::Lazy },
        snapshot: w.snapshot,
        page_path: w.page_path,
        // Both stops when tracking was armed before the freeze.
        downtime: w.stats.downtime
            + session
                .as_ref()
                .map_or(Duration::ZERO, |s| s.prearm_downtime),
        capture: w.stats.capture,
        writeback: w.writeback,
        twin_cpu: w.twin_cpu,
        notes,
        fidelity: w.fidelity,
    })
}

/// The parent image `o` names (by path, or the newest in the directory), checked to be a
/// checkpoint of the same pid.
fn open_parent(o: &CheckpointOptions, name: &str, pid: i32) -> Result<Option<Parent>> {
    let path = match (&o.parent, o.incremental) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => latest(&o.dir, name)?,
        (None, false) => None,
    };
    let parent = path.map(|p| Parent::open(&p)).transpose()?;
    if let Some(p) = &parent {
        if i64::from(p.pid) != i64::from(pid) {
            return Err(Error::Other(format!(
                "parent image CRID {} ({}) refused: it is a checkpoint of pid {}, not of pid {pid}",
                p.crid,
                p.path.display(),
                p.pid
            )));
        }
    }
    Ok(parent)
}

/// A lazy checkpoint into the process-wide registry: pre-copy, tracked, or plain.
fn take_lazy(
    o: &CheckpointOptions,
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    parent: Option<&Parent>,
    session: Option<&mut Session>,
) -> Result<(Lazy, Option<PrecopyReport>)> {
    let reg = registry::global();
    Ok(match (session, o.precopy) {
        (Some(s), Some(limits)) => {
            let (l, r) = reg.checkpoint_precopy(ins, crid, opts, parent, s, limits)?;
            (l, Some(r))
        }
        (Some(s), None) => {
            let l = reg.checkpoint_with(ins, crid, opts, parent, Some(s as &mut dyn Tracker))?;
            (l, None)
        }
        (None, _) => (reg.checkpoint_with(ins, crid, opts, parent, None)?, None),
    })
}

/// The blocks to reserve for a full image of about `bytes` of pages (an incremental's pages
/// are mostly in its parent: none reserved): a page of records per MiB, and the state before
/// them.
fn reserve_for(bytes: u64) -> u64 {
    bytes.saturating_add(bytes / 256).saturating_add(1 << 20)
}

/// Writes a lazy checkpoint's image to `tmp`, then drops the checkpoint.
fn write_back(
    (lazy, precopy): (Lazy, Option<PrecopyReport>),
    tmp: &mut TempImage,
    progress: &mut dyn Progress,
    notes: &mut Vec<String>,
) -> Result<Written> {
    let reg = registry::global();
    let crid = lazy.crid;
    let snap = reg.get(crid)?;
    let t_wb = Instant::now();
    // A twin's pages as the walk before the freeze counted them, if it was made (a walk of
    // the twin's page map costs ~9 ms per GiB, and the write-back makes its own).
    let bytes = match (&snap.twin, lazy.estimate) {
        (Some(_), Some(b)) => Some(b),
        _ => snap.bytes_to_write(),
    };
    if let Some(b) = bytes.filter(|_| snap.parent.is_none()) {
        tmp.preallocate(reserve_for(b));
    }
    progress.start("write-back", bytes);
    let file = tmp.file_clone();
    let out = Counting {
        inner: tmp.writer(),
        progress: &mut *progress,
    };
    let r = match file {
        Some(f) => snap.write_to_file(out, f),
        None => snap.write_to(out).map(|s| (s, PagePath::Read)),
    };
    progress.finish();
    let mut stats = lazy.stats;
    // A twin's page counts are known once the image is written.
    if let Some((data, zero, parent)) = snap.twin.as_ref().and_then(|t| t.counts()) {
        stats.data_pages = data;
        stats.zero_pages = zero;
        stats.parent_pages = parent;
    }
    let snapshot = if snap.twin.is_some() {
        SnapshotKind::Twin
    } else {
        SnapshotKind::Copy
    };
    if let Some(n) = &lazy.note {
        let n = format!("memory copied while the task was stopped: {n}");
        progress.note(&n);
        notes.push(n);
    }
    let fidelity = snap.meta.state.fidelity.clone();
    let twin_cpu = snap.twin.as_ref().and_then(|t| t.cpu_time());
    drop(snap);
    let _ = reg.discard(crid);
    let (summary, page_path) = r?;
    Ok(Written {
        page_path,
        stats,
        summary,
        writeback: t_wb.elapsed(),
        twin_cpu,
        snapshot,
        fidelity,
        precopy,
    })
}
