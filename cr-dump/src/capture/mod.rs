//! Capture of one task: the checkpointability check, the freeze, registers, `/proc` state and
//! memory, and the image records built from them.
//!
//! Two ways to run it:
//! - [`crate::registry::Registry::checkpoint_lazy`]: take a snapshot, resume the task at once,
//!   build and write the image later. The snapshot is a copy-on-write twin of the task
//!   ([`crate::twin`]; downtime = a fork) or, for small tasks and where no twin can stand for
//!   the task, a copy into memory (downtime = the copy);
//! - [`checkpoint_direct`]: stream the image out while the task is frozen, with peak memory that
//!   does not grow with the task's size.
//!
//! A twin's write-back and the direct mode stream the same way: two workers each read a chunk
//! of pages, compute its records and data CRC, and write it at its turn (`stream_vmas`).
//!
//! What is stored: for anonymous memory (and `[heap]`, `[stack]`), every page that is present or
//! swapped; for private file mappings, only the pages that are anonymous per `/proc/PID/pagemap`
//! (written, so copied-on-write); nothing of shared (read-only) mappings, whose contents are the
//! file's, nor of the vDSO, vvar and vsyscall areas, which are recorded as VMAs only. Present
//! pages that are all zero become `RUN_ZERO` runs. Never-touched pages have no run.
//!
//! `Mm::brk`: `/proc` does not show the current program break; this crate records the end of the
//! `[heap]` VMA (the page-aligned upper bound of the break), or `start_brk` without a heap.

use crate::error::{Error, Result};
use crate::procfs::{self, MapsEntry, Stat, Status};
use crate::sys::{self, WaitStatus};
use cr_format::chain::ChainIndex;
use cr_format::limits::{MAX_DATA_PER_RECORD, MAX_RUNS_PER_RECORD};
use cr_format::raw::{self, AuxvEntry, PageRun};
use cr_format::write::{DataCrc, IoSink, Sink, Summary, Writer};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant, SystemTime};
use zerocopy::FromZeros;

/// What happens to the task once it has been captured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum After {
    /// It runs on (the default).
    #[default]
    Continue,
    /// It is left stopped (`SIGSTOP`), not traced.
    Stop,
    /// It is killed (`SIGKILL`), e.g. after a checkpoint for migration.
    Kill,
}

/// Capture options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// What to do with the task afterwards.
    pub after: After,
    /// Lazy mode: how the memory is held (see [`LazyMode`]).
    pub lazy: LazyMode,
}

/// How a lazy checkpoint holds the task's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LazyMode {
    /// A copy-on-write twin when there is at least [`TWIN_MIN_BYTES`] to copy, else a copy
    /// (the default).
    #[default]
    Auto,
    /// A copy-on-write twin ([`crate::twin`]) whatever the size.
    Twin,
    /// A copy into a pre-faulted buffer while the task is stopped.
    Copy,
}

/// Below this much memory to copy, copying while the task is stopped is shorter than making a
/// twin (about 1 ms on an idle machine, a few under load, against 8 GiB/s of copy).
pub const TWIN_MIN_BYTES: u64 = 32 << 20;

/// Test hook: when this environment variable holds a number of milliseconds, the dumper prints
/// `cr-dump: test-hook: frozen` to stderr right after the freeze and sleeps that long, so tests
/// can kill the target (or the dumper) mid-capture.
pub const TEST_PAUSE_ENV: &str = "CR_DUMP_TEST_PAUSE_MS";

/// Test hook: milliseconds to sleep before the write-back from a copy-on-write twin starts, so
/// tests can let the task rewrite its memory first.
pub const TEST_WRITEBACK_PAUSE_ENV: &str = "CR_DUMP_TEST_WRITEBACK_PAUSE_MS";

/// Figures of one capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// How long the task was stopped.
    pub downtime: Duration,
    /// From the start of the capture to the image records being ready (lazy mode) or written
    /// (direct mode).
    pub capture: Duration,
    /// Pages stored with their data.
    pub data_pages: u64,
    /// Present pages found all zero.
    pub zero_pages: u64,
    /// Pages found unchanged since the parent image (incremental checkpoints; 0 otherwise).
    pub parent_pages: u64,
    /// VMAs whose pages came from write-protect dirty tracking (incremental checkpoints).
    pub tracked_vmas: u64,
    /// VMAs recorded.
    pub vmas: u64,
}

/// The state of the task read before the freeze, which passed the checkpointability check.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The pid.
    pub pid: i32,
    /// `/proc/PID/stat`.
    pub stat: Stat,
    /// `/proc/PID/status`.
    pub status: Status,
    /// `/proc/PID/maps`.
    pub maps: Vec<MapsEntry>,
}

fn refuse(pid: i32, reason: impl Into<String>) -> Error {
    Error::NotCheckpointable {
        pid,
        reason: reason.into(),
    }
}

fn read_text(pid: i32, name: &str) -> Result<String> {
    let b = procfs::read(pid, name)?;
    String::from_utf8(b).map_err(|_| Error::Proc(format!("/proc/{pid}/{name} is not UTF-8")))
}

/// Checks that `pid` can be checkpointed, refusing with the precise reason; returns what it read.
pub fn inspect(pid: i32) -> Result<Inspection> {
    if pid <= 0 {
        return Err(Error::NoSuchProcess(pid));
    }
    if !cfg!(target_arch = "x86_64") {
        return Err(refuse(
            pid,
            "unsupported architecture: cr-dump captures x86-64 tasks on x86-64 hosts only",
        ));
    }
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        return Err(refuse(pid, "it is cr-dump itself"));
    }
    let status = procfs::parse_status(&read_text(pid, "status")?)?;
    let stat = procfs::parse_stat(&read_text(pid, "stat")?)?;
    if status.kthread || stat.flags & procfs::PF_KTHREAD != 0 {
        return Err(refuse(pid, "it is a kernel thread"));
    }
    if matches!(stat.state, b'Z' | b'X') {
        return Err(refuse(
            pid,
            "it is a zombie (it has exited and not been reaped)",
        ));
    }
    if status.tgid != status.pid {
        return Err(refuse(
            pid,
            format!("it is a thread of process {}, not a process", status.tgid),
        ));
    }
    if status.tracer_pid != 0 {
        return Err(refuse(
            pid,
            format!("it is already traced by pid {}", status.tracer_pid),
        ));
    }
    check_threads(pid, &status)?;
    let maps = procfs::parse_maps(&read_text(pid, "maps")?)?;
    check_maps(pid, &maps)?;
    check_arch(pid)?;
    Ok(Inspection {
        pid,
        stat,
        status,
        maps,
    })
}

fn check_threads(pid: i32, status: &Status) -> Result<()> {
    if status.threads > 1 {
        return Err(refuse(
            pid,
            format!(
                "it has {} threads; only single-threaded tasks can be checkpointed",
                status.threads
            ),
        ));
    }
    Ok(())
}

fn check_maps(pid: i32, maps: &[MapsEntry]) -> Result<()> {
    if maps.is_empty() {
        return Err(refuse(pid, "it has no memory map (a kernel thread?)"));
    }
    if let Some(m) = maps.iter().find(|m| m.shared && m.write) {
        let what = if m.path.is_empty() {
            "anonymous shared memory"
        } else {
            m.path.as_str()
        };
        return Err(refuse(
            pid,
            format!(
                "it has a shared writable mapping {:x}-{:x} ({what}): shared memory cannot be \
                 captured consistently",
                m.start, m.end
            ),
        ));
    }
    Ok(())
}

fn check_arch(pid: i32) -> Result<()> {
    let f = File::open(procfs::path(pid, "exe")).map_err(|e| procfs::proc_err(pid, "exe", e))?;
    let mut h = [0u8; 20];
    let n = f
        .read_at(&mut h, 0)
        .map_err(|e| procfs::proc_err(pid, "exe", e))?;
    if n < 20 || h.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(refuse(
            pid,
            "unsupported architecture: its executable is not ELF",
        ));
    }
    let class = h.get(4).copied().unwrap_or(0);
    let machine = u16::from_le_bytes([
        h.get(18).copied().unwrap_or(0),
        h.get(19).copied().unwrap_or(0),
    ]);
    match (class, machine) {
        (2, 62) => Ok(()),
        (1, 62) => Err(refuse(pid, "unsupported architecture: x32")),
        (1, 3) => Err(refuse(pid, "unsupported architecture: i386 (32-bit)")),
        (c, m) => Err(refuse(
            pid,
            format!("unsupported architecture: ELF class {c}, e_machine {m} (only x86-64)"),
        )),
    }
}

/// A task stopped under `PTRACE_SEIZE`. Dropping it detaches, so every failure path leaves the
/// task running and untraced.
#[derive(Debug)]
pub struct Frozen {
    pid: i32,
    active: bool,
    since: Instant,
    /// The task was in a job-control stop when seized: after a detach the kernel wakes it to
    /// enter that stop again, so for a moment it runs.
    was_stopped: bool,
}

fn gone_or(pid: i32, e: io::Error, what: &str) -> Error {
    match e.raw_os_error() {
        Some(libc::ESRCH) => Error::TargetExited {
            pid,
            how: format!("gone during {what}"),
        },
        Some(libc::EPERM) | Some(libc::EACCES) => Error::PermissionDenied {
            pid,
            what: what.to_string(),
        },
        _ => Error::io(format!("{what} of pid {pid}"), e),
    }
}

const PTRACE_EVENT_STOP: i32 = 128;

/// Seizes and stops `pid`.
pub fn freeze(pid: i32) -> Result<Frozen> {
    let fr = freeze_quiet(pid)?;
    if let Some(ms) = std::env::var(TEST_PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        eprintln!("cr-dump: test-hook: frozen");
        std::thread::sleep(Duration::from_millis(ms));
    }
    Ok(fr)
}

/// [`freeze`] without its test hook.
pub(crate) fn freeze_quiet(pid: i32) -> Result<Frozen> {
    let since = Instant::now();
    let was_stopped = task_state(pid) == Some(b'T');
    sys::ptrace_seize(pid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => Error::NoSuchProcess(pid),
        // EPERM also when another tracer got there since the check.
        Some(libc::EPERM) => match procfs::read(pid, "status")
            .ok()
            .and_then(|b| procfs::parse_status(&String::from_utf8_lossy(&b)).ok())
        {
            Some(st) if st.tracer_pid != 0 => refuse(
                pid,
                format!("it is already traced by pid {}", st.tracer_pid),
            ),
            _ => gone_or(pid, e, "PTRACE_SEIZE"),
        },
        _ => gone_or(pid, e, "PTRACE_SEIZE"),
    })?;
    let mut fr = Frozen {
        pid,
        active: true,
        since,
        was_stopped,
    };
    sys::ptrace_interrupt(pid).map_err(|e| gone_or(pid, e, "PTRACE_INTERRUPT"))?;
    loop {
        match sys::waitpid(pid).map_err(|e| gone_or(pid, e, "waitpid"))? {
            WaitStatus::Stopped { event, .. } if event == PTRACE_EVENT_STOP => break,
            WaitStatus::Stopped { sig, event: 0 } => {
                // A signal arrived first: deliver it and stop again.
                sys::ptrace_cont(pid, sig).map_err(|e| gone_or(pid, e, "PTRACE_CONT"))?;
                sys::ptrace_interrupt(pid).map_err(|e| gone_or(pid, e, "PTRACE_INTERRUPT"))?;
            }
            WaitStatus::Stopped { .. } | WaitStatus::Other => {
                sys::ptrace_cont(pid, 0).map_err(|e| gone_or(pid, e, "PTRACE_CONT"))?;
                sys::ptrace_interrupt(pid).map_err(|e| gone_or(pid, e, "PTRACE_INTERRUPT"))?;
            }
            WaitStatus::Exited(c) => {
                fr.active = false;
                return Err(Error::TargetExited {
                    pid,
                    how: format!("exit status {c}"),
                });
            }
            WaitStatus::Signaled(s) => {
                fr.active = false;
                return Err(Error::TargetExited {
                    pid,
                    how: format!("killed by signal {s}"),
                });
            }
        }
    }
    Ok(fr)
}

impl Frozen {
    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Releases the task as `after` says; returns how long it was stopped.
    pub fn release(mut self, after: After) -> Result<Duration> {
        let pid = self.pid;
        self.active = false;
        match after {
            After::Continue => {
                sys::ptrace_detach(pid, 0).map_err(|e| gone_or(pid, e, "PTRACE_DETACH"))?;
                // Continue means "as it was": a stopped task is stopped again on return.
                if self.was_stopped {
                    wait_stopped(pid, Duration::from_secs(2));
                }
            }
            After::Stop => {
                // The SIGSTOP stays pending while the task is in its ptrace stop and stops it
                // for good after the detach.
                sys::kill(pid, libc::SIGSTOP).map_err(|e| gone_or(pid, e, "kill(SIGSTOP)"))?;
                sys::ptrace_detach(pid, 0).map_err(|e| gone_or(pid, e, "PTRACE_DETACH"))?;
                // The stop happens when the task next runs: wait for it (briefly), so that the
                // task is stopped by the time the caller is told so.
                wait_stopped(pid, Duration::from_secs(2));
            }
            After::Kill => {
                sys::kill(pid, libc::SIGKILL).map_err(|e| gone_or(pid, e, "kill(SIGKILL)"))?;
                let _ = sys::ptrace_detach(pid, 0);
            }
        }
        Ok(self.since.elapsed())
    }
}

/// The task's state letter from `/proc/PID/stat` (`None` if it is gone).
fn task_state(pid: i32) -> Option<u8> {
    procfs::read(pid, "stat")
        .ok()
        .and_then(|b| procfs::parse_stat(&String::from_utf8_lossy(&b)).ok())
        .map(|s| s.state)
}

/// Polls `/proc/PID/stat` until the task is in a stop (`T`), it is gone, or `limit` passes.
fn wait_stopped(pid: i32, limit: Duration) {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        let stopped = task_state(pid).is_none_or(|s| s == b'T');
        if stopped {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.active {
            let _ = sys::ptrace_detach(self.pid, 0);
        }
    }
}

/// Which pages of a VMA are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// None: vDSO/vvar/vsyscall, shared mappings.
    Skip,
    /// Present or swapped pages (anonymous memory).
    Present,
    /// Anonymous (copied-on-write) pages of a private file mapping.
    AnonOnly,
}

/// One VMA as it goes into the image.
#[derive(Clone, Debug)]
pub struct VmaRec {
    /// The record's fixed part.
    pub vma: raw::Vma,
    /// File path (file mappings only).
    pub path: Vec<u8>,
    policy_store: bool,
    anon_only: bool,
}

impl VmaRec {
    /// Private writable anonymous memory (anonymous, heap, stack) that is stored page by page:
    /// what dirty tracking covers.
    pub fn trackable(&self) -> bool {
        self.policy() == Policy::Present
            && self.vma.prot.get() & raw::PROT_WRITE != 0
            && matches!(
                self.vma.kind.get(),
                raw::VMA_ANON | raw::VMA_HEAP | raw::VMA_STACK
            )
    }

    /// Whether any of its pages are stored (not the vDSO and the like, not a shared mapping).
    pub fn stored(&self) -> bool {
        self.policy() != Policy::Skip
    }

    fn policy(&self) -> Policy {
        match (self.policy_store, self.anon_only) {
            (false, _) => Policy::Skip,
            (true, false) => Policy::Present,
            (true, true) => Policy::AnonOnly,
        }
    }
}

fn vma_rec(pid: i32, m: &MapsEntry) -> VmaRec {
    let mut v = raw::Vma::new_zeroed();
    v.start = m.start.into();
    v.end = m.end.into();
    v.offset = m.offset.into();
    v.inode = m.inode.into();
    v.dev_major = m.dev_major.into();
    v.dev_minor = m.dev_minor.into();
    let mut prot = 0;
    if m.read {
        prot |= raw::PROT_READ;
    }
    if m.write {
        prot |= raw::PROT_WRITE;
    }
    if m.exec {
        prot |= raw::PROT_EXEC;
    }
    v.prot = prot.into();
    let mut flags = 0;
    if m.shared {
        flags |= raw::VMA_SHARED;
    }
    let kind = match m.path.as_str() {
        "[heap]" => raw::VMA_HEAP,
        "[stack]" => {
            flags |= raw::VMA_GROWSDOWN;
            raw::VMA_STACK
        }
        "[vdso]" => raw::VMA_VDSO,
        p if p.starts_with("[vvar") => raw::VMA_VVAR,
        "[vsyscall]" => raw::VMA_VSYSCALL,
        p if p.starts_with('/') && m.inode != 0 => raw::VMA_FILE,
        _ => raw::VMA_ANON,
    };
    v.flags = flags.into();
    v.kind = kind.into();
    let mut path = Vec::new();
    if kind == raw::VMA_FILE {
        path = m.path.as_bytes().to_vec();
        path.truncate(cr_format::limits::MAX_PATH as usize);
        let mf = procfs::path(pid, &format!("map_files/{:x}-{:x}", m.start, m.end));
        let md = std::fs::metadata(&mf).or_else(|_| std::fs::metadata(&m.path));
        if let Ok(md) = md {
            v.file_size = md.size().into();
            let ns = u64::try_from(md.mtime())
                .unwrap_or(0)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(md.mtime_nsec()).unwrap_or(0));
            v.file_mtime_ns = ns.into();
        }
    }
    let special = matches!(kind, raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL);
    VmaRec {
        vma: v,
        path,
        policy_store: !special && !m.shared,
        anon_only: kind == raw::VMA_FILE,
    }
}

/// Everything of an image but the VMAs and pages.
#[derive(Clone, Debug)]
pub struct Meta {
    /// Header.
    pub header: raw::Header,
    /// Task.
    pub task: raw::Task,
    /// Registers.
    pub regs: raw::RegsX86_64,
    /// XSAVE area.
    pub xsave: Vec<u8>,
    /// Mm fields.
    pub mm: raw::Mm,
    /// Auxiliary vector.
    pub auxv: Vec<AuxvEntry>,
    /// Executable path.
    pub exe: Vec<u8>,
}

impl Meta {
    /// Writes Header, Task, Regs and Mm.
    pub fn write<S: Sink>(&self, w: &mut Writer<S>) -> Result<()> {
        w.header(&self.header)?;
        w.task(&self.task)?;
        w.regs(&self.regs, &self.xsave)?;
        w.mm(&self.mm, &self.auxv, &self.exe)?;
        Ok(())
    }
}

/// The producer string in the header.
pub const PRODUCER: &str = concat!("cr-dump ", env!("CARGO_PKG_VERSION"));

fn header(crid: u64, page_size: u32) -> raw::Header {
    let mut h = raw::Header::new_zeroed();
    h.magic = raw::MAGIC;
    h.version_major = raw::VERSION_MAJOR.into();
    h.version_minor = raw::VERSION_MINOR.into();
    h.arch = raw::ARCH_X86_64.into();
    h.page_size = page_size.into();
    h.crid = crid.into();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    h.created_ns = now.into();
    let p = PRODUCER.as_bytes();
    for (d, s) in h.producer.iter_mut().zip(p) {
        *d = *s;
    }
    h
}

fn read_regs(pid: i32) -> Result<(raw::RegsX86_64, Vec<u8>)> {
    let mut r = raw::RegsX86_64::new_zeroed();
    r.arch = raw::ARCH_X86_64.into();
    let mut gpr = [0u8; raw::X86_64_GPR_COUNT * 8];
    let n = sys::ptrace_getregset(pid, sys::NT_PRSTATUS, &mut gpr)
        .map_err(|e| gone_or(pid, e, "PTRACE_GETREGSET(NT_PRSTATUS)"))?;
    if n != gpr.len() {
        return Err(Error::Other(format!(
            "PTRACE_GETREGSET(NT_PRSTATUS) gave {n} bytes, expected {}",
            gpr.len()
        )));
    }
    for (d, s) in r.gpr.iter_mut().zip(gpr.chunks_exact(8)) {
        *d = u64::from_le_bytes(s.try_into().unwrap_or([0; 8])).into();
    }
    let n = sys::ptrace_getregset(pid, sys::NT_PRFPREG, &mut r.fxsave)
        .map_err(|e| gone_or(pid, e, "PTRACE_GETREGSET(NT_PRFPREG)"))?;
    if n != raw::FXSAVE_LEN {
        return Err(Error::Other(format!(
            "PTRACE_GETREGSET(NT_PRFPREG) gave {n} bytes, expected {}",
            raw::FXSAVE_LEN
        )));
    }
    let mut xsave = vec![0u8; cr_format::limits::MAX_XSAVE_LEN as usize];
    match sys::ptrace_getregset(pid, sys::NT_X86_XSTATE, &mut xsave) {
        Ok(n) => xsave.truncate(n),
        Err(e)
            if e.raw_os_error() == Some(libc::ENODEV) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            xsave.clear()
        }
        Err(e) => return Err(gone_or(pid, e, "PTRACE_GETREGSET(NT_X86_XSTATE)")),
    }
    // The kernel stores XCR0 in the software-reserved bytes 464..472 of the area.
    let xcr0 = xsave
        .get(464..472)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    r.xfeatures = xcr0.into();
    Ok((r, xsave))
}

/// Whether `pid` is gone or a zombie.
fn is_gone(pid: i32) -> bool {
    match procfs::read(pid, "stat") {
        Ok(b) => String::from_utf8(b)
            .ok()
            .and_then(|t| procfs::parse_stat(&t).ok())
            .is_none_or(|s| matches!(s.state, b'Z' | b'X')),
        Err(_) => true,
    }
}

/// An error met while the task is frozen: if the task died meanwhile, that is the error.
fn frozen_err(pid: i32, e: Error) -> Error {
    if matches!(e, Error::TargetExited { .. }) || !is_gone(pid) {
        e
    } else {
        Error::TargetExited {
            pid,
            how: "killed or exited while frozen".into(),
        }
    }
}

/// Reads the task's state while it is frozen; re-checks what could have changed since
/// [`inspect`]. Returns the metadata and the VMAs.
fn read_frozen(ins: &Inspection, crid: u64, page_size: u32) -> Result<(Meta, Vec<VmaRec>)> {
    let pid = ins.pid;
    let status = procfs::parse_status(&read_text(pid, "status")?)?;
    let stat = procfs::parse_stat(&read_text(pid, "stat")?)?;
    check_threads(pid, &status)?;
    let maps = procfs::parse_maps(&read_text(pid, "maps")?)?;
    check_maps(pid, &maps)?;
    let (regs, xsave) = read_regs(pid)?;
    let personality = procfs::parse_personality(&read_text(pid, "personality")?)?;
    let auxv: Vec<AuxvEntry> = procfs::parse_auxv(&procfs::read(pid, "auxv")?)
        .into_iter()
        .take(cr_format::limits::MAX_AUXV as usize)
        .map(|(k, v)| AuxvEntry {
            key: k.into(),
            value: v.into(),
        })
        .collect();
    let exe = std::fs::read_link(procfs::path(pid, "exe"))
        .map_err(|e| procfs::proc_err(pid, "exe", e))?;
    let mut exe = exe.into_os_string().into_encoded_bytes();
    exe.truncate(cr_format::limits::MAX_PATH as usize);

    let mut t = raw::Task::new_zeroed();
    let u32of = |v: i32| u32::try_from(v).unwrap_or(0);
    t.pid = u32of(status.pid).into();
    t.tgid = u32of(status.tgid).into();
    t.ppid = u32of(stat.ppid).into();
    t.pgid = u32of(stat.pgrp).into();
    t.sid = u32of(stat.session).into();
    // The state before the freeze (now it is a tracing stop).
    t.state = if ins.stat.state.is_ascii_alphabetic() {
        ins.stat.state
    } else {
        b'S'
    };
    t.exit_signal = stat.exit_signal.into();
    t.personality = personality.into();
    for (d, s) in t.uid.iter_mut().zip(status.uid) {
        *d = s.into();
    }
    for (d, s) in t.gid.iter_mut().zip(status.gid) {
        *d = s.into();
    }
    t.sig_blocked = status.sig_blk.into();
    t.sig_ignored = status.sig_ign.into();
    t.sig_caught = status.sig_cgt.into();
    t.sig_pending = status.sig_pnd.into();
    t.sig_shared_pending = status.shd_pnd.into();
    t.cap_inheritable = status.cap_inh.into();
    t.cap_permitted = status.cap_prm.into();
    t.cap_effective = status.cap_eff.into();
    for (d, s) in t
        .comm
        .iter_mut()
        .zip(stat.comm.bytes().take_while(|&b| b != 0))
    {
        *d = s;
    }
    t.umask = status.umask.into();

    let heap_end = maps
        .iter()
        .find(|m| m.path == "[heap]")
        .map(|m| m.end)
        .unwrap_or(stat.start_brk);
    let mut mm = raw::Mm::new_zeroed();
    mm.start_code = stat.start_code.into();
    mm.end_code = stat.end_code.max(stat.start_code).into();
    mm.start_data = stat.start_data.into();
    mm.end_data = stat.end_data.max(stat.start_data).into();
    mm.start_brk = stat.start_brk.into();
    mm.brk = heap_end.max(stat.start_brk).into();
    mm.start_stack = stat.start_stack.into();
    mm.arg_start = stat.arg_start.into();
    mm.arg_end = stat.arg_end.max(stat.arg_start).into();
    mm.env_start = stat.env_start.into();
    mm.env_end = stat.env_end.max(stat.env_start).into();

    let vmas = maps.iter().map(|m| vma_rec(pid, m)).collect();
    Ok((
        Meta {
            header: header(crid, page_size),
            task: t,
            regs,
            xsave,
            mm,
            auxv,
            exe,
        },
        vmas,
    ))
}

/// A run of pages to copy: first address and number of pages.
pub type Range = (u64, u64);

/// Pagemap entries read per call (512 KiB of entries, 256 MiB of address space).
const PAGEMAP_CHUNK: u64 = 65536;

/// Calls `f` with the ranges of pages of `v` to store, in address order, at most `max_pages`
/// pages per range, in batches so memory stays bounded.
fn for_each_range(
    pid: i32,
    pagemap: &File,
    v: &VmaRec,
    page_size: u64,
    max_pages: u64,
    mut f: impl FnMut(Range) -> Result<()>,
) -> Result<()> {
    let policy = v.policy();
    if policy == Policy::Skip {
        return Ok(());
    }
    let first = v.vma.start.get() / page_size;
    let last = v.vma.end.get() / page_size;
    let mut entries = Vec::new();
    let mut cur: Option<Range> = None;
    let mut p = first;
    while p < last {
        let n = (last - p).min(PAGEMAP_CHUNK);
        procfs::read_pagemap(
            pagemap,
            pid,
            p,
            usize::try_from(n).unwrap_or(0),
            &mut entries,
        )?;
        for (i, &e) in entries.iter().enumerate() {
            let keep = match policy {
                Policy::Skip => false,
                Policy::Present => e & (procfs::PM_PRESENT | procfs::PM_SWAPPED) != 0,
                Policy::AnonOnly => {
                    e & procfs::PM_SWAPPED != 0
                        || (e & procfs::PM_PRESENT != 0 && e & procfs::PM_FILE == 0)
                }
            };
            let addr = (p + i as u64) * page_size;
            match (&mut cur, keep) {
                (Some((a, n)), true) if *a + *n * page_size == addr && *n < max_pages => *n += 1,
                (_, true) => {
                    if let Some(r) = cur.take() {
                        f(r)?;
                    }
                    cur = Some((addr, 1));
                }
                (_, false) => {
                    if let Some(r) = cur.take() {
                        f(r)?;
                    }
                }
            }
        }
        p += n;
    }
    if let Some(r) = cur {
        f(r)?;
    }
    Ok(())
}

/// Bytes of page data a capture of `ins` would copy now, from a pagemap scan (not frozen: a
/// sizing estimate for the buffer, taken before the freeze so the freeze does not pay for it).
pub fn estimate_bytes(ins: &Inspection) -> Result<u64> {
    let pagemap = open_proc(ins.pid, "pagemap")?;
    let mut bytes = 0u64;
    for v in &vma_recs(ins) {
        bytes = bytes.saturating_add(vma_bytes(ins.pid, &pagemap, v)?);
    }
    Ok(bytes)
}

/// The VMAs of `ins` as a capture would record them.
pub fn vma_recs(ins: &Inspection) -> Vec<VmaRec> {
    ins.maps.iter().map(|m| vma_rec(ins.pid, m)).collect()
}

/// Bytes of page data of `v` a capture would copy now (per the pagemap).
pub(crate) fn vma_bytes(pid: i32, pagemap: &File, v: &VmaRec) -> Result<u64> {
    let ps = sys::page_size() as u64;
    let mut pages = 0u64;
    for_each_range(pid, pagemap, v, ps, u64::MAX, |r| {
        pages += r.1;
        Ok(())
    })?;
    Ok(pages.saturating_mul(ps))
}

/// Bytes per `process_vm_readv` piece: large enough for full speed, small enough to split a
/// failing range finely.
const READ_PIECE: u64 = 16 << 20;

/// Copies the pages of `ranges` (in order, back to back) into `buf`. Pages `process_vm_readv`
/// cannot read (e.g. `PROT_NONE` areas that hold data) are read through `/proc/PID/mem`.
fn read_memory(
    pid: i32,
    mem: &File,
    ranges: &[Range],
    page_size: u64,
    buf: &mut [u8],
) -> Result<()> {
    // Split into pieces of at most READ_PIECE bytes.
    let mut pieces: Vec<(u64, usize)> = Vec::with_capacity(ranges.len());
    for &(a, n) in ranges {
        let mut a = a;
        let mut len = n * page_size;
        while len > 0 {
            let k = len.min(READ_PIECE);
            pieces.push((a, usize::try_from(k).unwrap_or(0)));
            a += k;
            len -= k;
        }
    }
    let mut off = 0usize;
    let mut i = 0usize;
    while i < pieces.len() {
        // One call: up to IOV_MAX pieces and 64 MiB.
        let mut j = i;
        let mut total = 0usize;
        while j < pieces.len() && j - i < sys::IOV_MAX && total < (64 << 20) {
            total += pieces.get(j).map_or(0, |p| p.1);
            j += 1;
        }
        let batch = pieces.get(i..j).unwrap_or(&[]);
        let dst = buf
            .get_mut(off..off + total)
            .ok_or_else(|| Error::Other("page buffer too small".into()))?;
        let got = match sys::process_vm_readv(pid, dst, batch) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(Error::TargetExited {
                    pid,
                    how: "gone while its memory was read".into(),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => 0,
            Err(e) => return Err(gone_or(pid, e, "process_vm_readv")),
        };
        // Consume whole pieces covered by `got`; a partial piece is shortened.
        let mut left = got;
        while i < j {
            let Some(p) = pieces.get_mut(i) else { break };
            if left >= p.1 {
                left -= p.1;
                off += p.1;
                i += 1;
            } else {
                p.0 += left as u64;
                p.1 -= left;
                off += left;
                break;
            }
        }
        if got == 0 {
            // The first piece of the batch cannot be read by process_vm_readv.
            let Some(&(a, len)) = pieces.get(i) else {
                break;
            };
            let dst = buf
                .get_mut(off..off + len)
                .ok_or_else(|| Error::Other("page buffer too small".into()))?;
            read_mem_file(pid, mem, a, dst)?;
            off += len;
            i += 1;
        }
    }
    Ok(())
}

/// [`read_memory`] split over two threads (about twice the bandwidth of one, see FACTS.md) when
/// there is enough to copy and more than one CPU.
fn read_memory_parallel(
    pid: i32,
    mem: &File,
    ranges: &[Range],
    page_size: u64,
    buf: &mut [u8],
) -> Result<()> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if total * page_size < (64 << 20) || cpus < 2 {
        return read_memory(pid, mem, ranges, page_size, buf);
    }
    // First half of the pages, splitting a range if needed.
    let half = total / 2;
    let mut first: Vec<Range> = Vec::new();
    let mut second: Vec<Range> = Vec::new();
    let mut seen = 0u64;
    for &(a, n) in ranges {
        if seen >= half {
            second.push((a, n));
        } else if seen + n <= half {
            first.push((a, n));
        } else {
            let k = half - seen;
            first.push((a, k));
            second.push((a + k * page_size, n - k));
        }
        seen += n;
    }
    let split = usize::try_from(half * page_size).unwrap_or(usize::MAX);
    if split > buf.len() {
        return Err(Error::Other("page buffer too small".into()));
    }
    let (lo, hi) = buf.split_at_mut(split);
    std::thread::scope(|s| {
        let h = s.spawn(|| read_memory(pid, mem, &second, page_size, hi));
        let a = read_memory(pid, mem, &first, page_size, lo);
        let b = h
            .join()
            .unwrap_or_else(|_| Err(Error::Other("memory reader thread panicked".into())));
        a.and(b)
    })
}

/// [`read_memory`] through `/proc/PID/mem` only (one read per range).
fn read_memory_mem_file(
    pid: i32,
    mem: &File,
    ranges: &[Range],
    page_size: u64,
    buf: &mut [u8],
) -> Result<()> {
    let mut off = 0usize;
    for &(a, n) in ranges {
        let len = usize::try_from(n * page_size).unwrap_or(usize::MAX);
        let dst = buf
            .get_mut(off..off.saturating_add(len))
            .ok_or_else(|| Error::Other("page buffer too small".into()))?;
        read_mem_file(pid, mem, a, dst)?;
        off += len;
    }
    Ok(())
}

fn read_mem_file(pid: i32, mem: &File, addr: u64, dst: &mut [u8]) -> Result<()> {
    let mut done = 0usize;
    while done < dst.len() {
        match mem.read_at(dst.get_mut(done..).unwrap_or(&mut []), addr + done as u64) {
            Ok(0) => {
                return Err(Error::TargetExited {
                    pid,
                    how: "its memory went away while it was read".into(),
                })
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::io(
                    format!("reading memory of pid {pid} at {:#x}", addr + done as u64),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// A Pages record planned over a page buffer: its runs and the byte range of its data.
#[derive(Clone, Debug, Default)]
pub struct RecordPlan {
    /// Runs, in address order.
    pub runs: Vec<PageRun>,
    /// Data of its data runs, in the buffer.
    pub data: std::ops::Range<usize>,
}

fn is_zero(page: &[u8]) -> bool {
    let (head, rest) = page.split_at(page.len().min(8));
    if head.iter().any(|&b| b != 0) {
        return false;
    }
    rest.chunks_exact(64)
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        && rest.chunks_exact(64).remainder().iter().all(|&b| b == 0)
}

/// Turns the copied pages of `ranges` (at `buf[base..]`, back to back) into Pages records within
/// the format's limits: all-zero pages become zero runs and their bytes are squeezed out of the
/// buffer (in place). Returns the end of the data kept.
fn plan_records(
    ranges: &[Range],
    buf: &mut [u8],
    base: usize,
    page_size: usize,
    out: &mut Vec<RecordPlan>,
    stats: &mut Stats,
) -> usize {
    let ps64 = page_size as u64;
    let max_data_pages = (MAX_DATA_PER_RECORD as usize) / page_size;
    let mut src = base;
    let mut dst = base;
    let mut rec = RecordPlan {
        runs: Vec::new(),
        data: base..base,
    };
    let mut rec_data_pages = 0usize;
    for &(addr, n) in ranges {
        let mut fresh_range = true;
        for k in 0..n {
            let a = addr + k * ps64;
            let zero = buf.get(src..src + page_size).is_none_or(is_zero);
            let kind = if zero { raw::RUN_ZERO } else { raw::RUN_DATA };
            // Can this page extend the last run of the record?
            let extend = !fresh_range
                && rec
                    .runs
                    .last()
                    .is_some_and(|r| r.kind.get() == kind && r.pages.get() < u32::MAX);
            let full_runs = rec.runs.len() >= MAX_RUNS_PER_RECORD as usize && !extend;
            let full_data = !zero && rec_data_pages >= max_data_pages;
            if full_runs || full_data {
                rec.data.end = dst;
                out.push(std::mem::take(&mut rec));
                rec.data = dst..dst;
                rec_data_pages = 0;
            }
            let extend = extend && !full_runs && !full_data;
            if extend {
                if let Some(r) = rec.runs.last_mut() {
                    r.pages = (r.pages.get() + 1).into();
                }
            } else {
                rec.runs.push(PageRun {
                    addr: a.into(),
                    pages: 1.into(),
                    kind: kind.into(),
                    _reserved0: 0.into(),
                });
            }
            if zero {
                stats.zero_pages += 1;
            } else {
                if src != dst {
                    buf.copy_within(src..src + page_size, dst);
                }
                dst += page_size;
                rec_data_pages += 1;
                stats.data_pages += 1;
            }
            src += page_size;
            fresh_range = false;
        }
    }
    if !rec.runs.is_empty() {
        rec.data.end = dst;
        out.push(rec);
    }
    dst
}

/// One VMA of a snapshot with its planned Pages records.
#[derive(Clone, Debug)]
pub struct SnapVma {
    /// The VMA.
    pub vma: VmaRec,
    /// Its Pages records.
    pub records: Vec<RecordPlan>,
    /// For a VMA under dirty tracking: what the scan found (only its written pages were
    /// copied into `records`).
    pub tracked: Option<crate::tracking::Scan>,
}

/// A dirty tracker, called while the task is frozen.
pub trait Tracker {
    /// Before the copy: for each VMA, the scan of a tracked one (then only its written pages
    /// are copied), or `None` (captured in full).
    fn scan(&mut self, pid: i32, vmas: &[VmaRec]) -> Result<Vec<Option<crate::tracking::Scan>>>;
    /// After the scan, before the copy, still frozen: (re)arm tracking for what comes next.
    fn arm(&mut self, pid: i32, vmas: &[VmaRec]) -> Result<()>;
    /// Whether [`Tracker::scan`] will give scans (then far less than everything is copied).
    fn usable(&self) -> bool {
        false
    }
    /// Before the freeze, to size the copy's buffer: the bytes it would copy now (the written
    /// pages of tracked VMAs, the present pages of the others), or `None` if unknown.
    fn estimate(&mut self, _pid: i32, _vmas: &[VmaRec]) -> Option<u64> {
        None
    }
}

/// A checkpoint held in memory: everything needed to write its image.
#[derive(Debug)]
pub struct Snapshot {
    /// CRID.
    pub crid: u64,
    /// The task's pid.
    pub pid: i32,
    /// Header, task, registers, mm.
    pub meta: Meta,
    /// VMAs and their records.
    pub vmas: Vec<SnapVma>,
    /// The page data (empty for a snapshot held by a twin).
    pub buf: sys::MapBuf,
    /// Figures of the capture.
    pub stats: Stats,
    /// The copy-on-write twin holding the pages, when the snapshot was taken that way: then
    /// `vmas` have no records, and each write-back reads the pages from the twin.
    pub twin: Option<crate::twin::Twin>,
    /// For an incremental snapshot held by a twin: the parent chain its pages are compared
    /// with as they are written (the Header already names it).
    pub parent: Option<crate::incremental::Parent>,
}

impl Snapshot {
    /// Writes the image to `out`; returns what was written.
    pub fn write_to<W: Write + Send>(&self, out: W) -> Result<Summary> {
        let mut w = Writer::new(IoSink::new(out));
        if let Some(t) = &self.twin {
            if let Some(ms) = std::env::var(TEST_WRITEBACK_PAUSE_ENV)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                std::thread::sleep(Duration::from_millis(ms));
            }
            self.meta.write(&mut w).map_err(|e| sink_err(&mut w, e))?;
            let vmas: Vec<VmaRec> = self.vmas.iter().map(|v| v.vma.clone()).collect();
            let st = match &self.parent {
                None => stream_vmas(t.pid(), &mut w, &vmas, true, None)?,
                Some(p) => p.with_index(|idx, images| {
                    let in_parent = images
                        .first()
                        .map(|top| crate::incremental::vmas_in_parent(top, vmas.iter()))
                        .unwrap_or_default();
                    stream_vmas(t.pid(), &mut w, &vmas, true, Some((idx, &in_parent)))
                })??,
            };
            let summary = finish_image(&mut w)?;
            t.set_counts(st.data_pages, st.zero_pages, st.parent_pages);
            return Ok(summary);
        }
        let r = self.write_records(&mut w);
        if let Some(e) = w.sink_mut().take_error() {
            return Err(Error::io("writing the image", e));
        }
        let s = r?;
        w.sink_mut()
            .get_mut()
            .flush()
            .map_err(|e| Error::io("writing the image", e))?;
        Ok(s)
    }

    fn write_records<S: Sink>(&self, w: &mut Writer<S>) -> Result<Summary> {
        self.meta.write(w)?;
        for v in &self.vmas {
            w.vma(&v.vma.vma, &v.vma.path)?;
            for r in &v.records {
                let data = self.buf.get(r.data.clone()).unwrap_or(&[]);
                w.pages(&r.runs, data)?;
            }
        }
        Ok(w.finish()?)
    }

    /// Bytes of page data held (0 for a snapshot held by a twin: known once written).
    pub fn data_bytes(&self) -> u64 {
        self.stats.data_pages * u64::from(self.meta.header.page_size.get())
    }
}

fn open_proc(pid: i32, name: &str) -> Result<File> {
    File::open(procfs::path(pid, name)).map_err(|e| procfs::proc_err(pid, name, e))
}

/// Lazy capture: freeze, copy memory into `buf` (grown if too small), release the task, plan the
/// records. `get_buf` is asked for a buffer of at least the given size.
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

/// Lazy capture by a copy-on-write twin ([`crate::twin`]): freeze, make the twin, release the
/// task. When no twin can stand for the task, the memory is copied while it is stopped, into
/// `fallback` (grown if too small) as [`capture_lazy`] does, and the reason is in
/// [`Snapshot::twin`]'s absence and the returned note.
pub(crate) fn capture_cow(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    fallback: impl FnOnce() -> Result<sys::MapBuf>,
) -> Result<(Snapshot, Option<String>)> {
    let started = Instant::now();
    let pid = ins.pid;
    let page_size = u32::try_from(sys::page_size()).unwrap_or(4096);
    let frozen = freeze(pid)?;
    let made = read_frozen(ins, crid, page_size)
        .and_then(|(meta, vmas)| Ok((crate::twin::make(pid, &vmas)?, meta, vmas)));
    match made {
        Ok((Ok(twin), meta, vmas)) => {
            let downtime = frozen.release(opts.after)?;
            let stats = Stats {
                downtime,
                capture: started.elapsed(),
                vmas: vmas.len() as u64,
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
            Ok((
                Snapshot {
                    crid,
                    pid,
                    meta,
                    vmas,
                    buf: sys::MapBuf::empty(),
                    stats,
                    twin: Some(twin),
                    parent: None,
                },
                None,
            ))
        }
        Ok((Err(why), _, _)) => {
            let buf = fallback()?;
            let snap = capture_frozen(ins, crid, opts, buf, frozen, started, None)
                .map_err(|e| frozen_err(pid, e))?;
            Ok((snap, Some(why)))
        }
        Err(e) => Err(frozen_err(pid, e)),
    }
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
    let ps = sys::page_size();
    let ps64 = ps as u64;
    let page_size = u32::try_from(ps).unwrap_or(4096);
    let pagemap = open_proc(pid, "pagemap")?;
    let mem = open_proc(pid, "mem")?;
    let (meta, vmas) = read_frozen(ins, crid, page_size)?;
    let mut per_vma: Vec<Vec<Range>> = Vec::with_capacity(vmas.len());
    let mut total_pages = 0u64;
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
    for (v, sc) in vmas.iter().zip(&scans) {
        let mut rs = Vec::new();
        match sc {
            Some(sc) => {
                total_pages += sc.written.iter().map(|r| r.1).sum::<u64>();
                rs.extend_from_slice(&sc.written);
            }
            None => for_each_range(pid, &pagemap, v, ps64, u64::MAX, |r| {
                total_pages += r.1;
                rs.push(r);
                Ok(())
            })?,
        }
        per_vma.push(rs);
    }
    let need = usize::try_from(total_pages * ps64).unwrap_or(usize::MAX);
    if buf.len() < need {
        buf = sys::MapBuf::new(need).map_err(|e| Error::io("allocating the page buffer", e))?;
    }
    let all: Vec<Range> = per_vma.iter().flatten().copied().collect();
    read_memory_parallel(pid, &mem, &all, ps64, &mut buf)?;
    let downtime = frozen.release(opts.after)?;
    let mut stats = Stats {
        downtime,
        vmas: vmas.len() as u64,
        ..Stats::default()
    };
    let mut snap_vmas = Vec::with_capacity(vmas.len());
    let mut src = 0usize;
    let mut dst = 0usize;
    for ((v, rs), tracked) in vmas.into_iter().zip(per_vma).zip(scans) {
        let bytes: usize = rs.iter().map(|r| (r.1 * ps64) as usize).sum();
        // Move this VMA's pages down to the end of the data kept so far, then plan in place.
        if src != dst && bytes > 0 {
            buf.copy_within(src..src + bytes, dst);
        }
        let mut records = Vec::new();
        let end = plan_records(&rs, &mut buf, dst, ps, &mut records, &mut stats);
        src += bytes;
        dst = end;
        snap_vmas.push(SnapVma {
            vma: v,
            records,
            tracked,
        });
    }
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

/// What [`checkpoint_direct`] did.
#[derive(Clone, Copy, Debug)]
pub struct DirectResult {
    /// CRID.
    pub crid: u64,
    /// What was written.
    pub summary: Summary,
    /// Figures.
    pub stats: Stats,
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
    let frozen = freeze(pid)?;
    stream_frozen(ins, crid, opts, out, frozen, started).map_err(|e| frozen_err(pid, e))
}

/// Threads of a stream. Each takes a chunk of pages, reads it, plans its records and computes
/// their data CRCs while the bytes are in its cache, then waits for its turn and writes the
/// records itself. Writes are serial (in order, and the file's lock serializes them anyway), but
/// one thread reads while the other writes. Handing the bytes to a writer thread instead moves
/// them to another core's cache, and on two CPUs a third busy thread costs more than it gives:
/// 1 GiB took 0.35 s that way, 0.19 s this way (BENCHMARKS.md).
const STREAM_WORKERS: usize = 2;

/// A chunk of a stream: the VMA records to write first, then the pages of `ranges` (at most
/// one Pages record's data, all in VMA `vma`).
struct StreamJob {
    vmas: Vec<usize>,
    /// The VMA the pages are in.
    vma: usize,
    ranges: Vec<Range>,
}

/// The writer of a stream and its first error, under the stream's lock.
struct Turn<'a, W> {
    w: &'a mut Writer<IoSink<W>>,
    failed: Option<Error>,
}

/// A job of a stream compared with a parent covers this many records' worth of pages.
const PARENT_JOB: u64 = 16;

/// Jobs the planner of a stream hands over at a time.
const JOB_BATCH: usize = 32;

/// How long a stream worker spins for its turn before it sleeps.
const TURN_SPIN: Duration = Duration::from_millis(2);

fn stream_frozen<W: Write + Send>(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    out: W,
    frozen: Frozen,
    started: Instant,
) -> Result<DirectResult> {
    let pid = ins.pid;
    let page_size = u32::try_from(sys::page_size()).unwrap_or(4096);
    let mut w = Writer::new(IoSink::new(out));
    let (meta, vmas) = read_frozen(ins, crid, page_size)?;
    meta.write(&mut w).map_err(|e| sink_err(&mut w, e))?;
    let mut stats = stream_vmas(pid, &mut w, &vmas, false, None)?;
    let summary = finish_image(&mut w)?;
    stats.downtime = frozen.release(opts.after)?;
    stats.capture = started.elapsed();
    Ok(DirectResult {
        crid,
        summary,
        stats,
    })
}

/// The writer's I/O error if it has one (the real cause), else `e`.
fn sink_err<W: Write>(w: &mut Writer<IoSink<W>>, e: impl Into<Error>) -> Error {
    match w.sink_mut().take_error() {
        Some(io) => Error::io("writing the image", io),
        None => e.into(),
    }
}

/// Writes the tail and flushes.
fn finish_image<W: Write>(w: &mut Writer<IoSink<W>>) -> Result<Summary> {
    let summary = w.finish().map_err(|e| sink_err(w, e))?;
    w.sink_mut()
        .get_mut()
        .flush()
        .map_err(|e| Error::io("writing the image", e))?;
    Ok(summary)
}

/// Writes the VMA and Pages records of `vmas`, reading pages from task `src` (the frozen task,
/// or its copy-on-write twin) in bounded memory. Returns the page counts.
///
/// `parent`: the parent chain's index and, for each of `vmas`, whether the parent has the same
/// mapping: pages are compared with the chain as they are read ([`crate::incremental`]).
///
/// `twin`: read through `/proc/PID/mem`, not `process_vm_readv`. The latter pins the pages it
/// reads, and the kernel (since 5.19) unshares a copy-on-write page before pinning it: every
/// page of a twin would be copied, doubling the memory and the time.
fn stream_vmas<W: Write + Send>(
    src: i32,
    w: &mut Writer<IoSink<W>>,
    vmas: &[VmaRec],
    twin: bool,
    parent: Option<(&ChainIndex<'_>, &[bool])>,
) -> Result<Stats> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
    let pid = src;
    let ps = sys::page_size();
    let ps64 = ps as u64;
    let pagemap = open_proc(pid, "pagemap")?;
    let mem = open_proc(pid, "mem")?;
    // Pages per job: one Pages record's data. Compared with a parent, most pages become
    // parent runs and a record covers far more than its data: jobs of one record's worth each
    // gave an image 38% larger than over a copy (a padded record per MiB of memory).
    let max_pages =
        u64::from(MAX_DATA_PER_RECORD) / ps64 * if parent.is_some() { PARENT_JOB } else { 1 };

    // A planner walks the pagemap and cuts the pages into jobs of one Pages record's data; the
    // workers take jobs in sequence and write their results in sequence. Memory stays bounded:
    // one buffer per worker.
    // Jobs go in batches: a planner woken for every job competes with the workers for the CPUs.
    type Batch = Vec<(u64, Result<StreamJob>)>;
    let (job_tx, job_rx) = mpsc::sync_channel::<Batch>(1);
    // Dropped with the last worker, which stops a planner blocked on a full channel.
    let jobs = Arc::new(Mutex::new((job_rx, std::collections::VecDeque::new())));
    let pagemap_ref = &pagemap;
    let planner = move || {
        let seq = std::cell::Cell::new(0u64);
        let batch = std::cell::RefCell::new(Batch::with_capacity(JOB_BATCH));
        let flush = || {
            let b = std::mem::take(&mut *batch.borrow_mut());
            b.is_empty() || job_tx.send(b).is_ok()
        };
        let mut pending: Vec<usize> = Vec::new();
        let mut chunk: Vec<Range> = Vec::new();
        let send = |pending: &mut Vec<usize>, chunk: &mut Vec<Range>, vma: usize| -> bool {
            let job = StreamJob {
                vmas: std::mem::take(pending),
                vma,
                ranges: std::mem::take(chunk),
            };
            let n = seq.replace(seq.get() + 1);
            batch.borrow_mut().push((n, Ok(job)));
            batch.borrow().len() < JOB_BATCH || flush()
        };
        let mut run = || -> Result<()> {
            for (i, v) in vmas.iter().enumerate() {
                pending.push(i);
                let mut chunk_pages = 0u64;
                let mut go_on = true;
                for_each_range(pid, pagemap_ref, v, ps64, max_pages, |r| {
                    if go_on
                        && (chunk_pages + r.1 > max_pages
                            || chunk.len() >= MAX_RUNS_PER_RECORD as usize / 2)
                    {
                        go_on = send(&mut pending, &mut chunk, i);
                        chunk_pages = 0;
                    }
                    if go_on {
                        chunk.push(r);
                        chunk_pages += r.1;
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
        };
        if let Err(e) = run() {
            // Reported in sequence, after the jobs sent before it.
            batch.borrow_mut().push((seq.get(), Err(e)));
        }
        flush();
        seq.get()
    };

    let turn = Mutex::new(Turn { w, failed: None });
    let turn_cv = Condvar::new();
    // The next job to write, and whether the stream failed: mirrors of the state under the
    // lock, so that a worker can spin on them instead of sleeping. A write takes about 0.2 ms,
    // and sleeping and waking on every turn cost a fifth of the stream's time (BENCHMARKS.md).
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let spin = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let (turn_ref, cv_ref, mem_ref, next_ref, stop_ref) = (&turn, &turn_cv, &mem, &next, &stop);
    let my_turn =
        |seq: u64| next_ref.load(Ordering::Acquire) == seq || stop_ref.load(Ordering::Acquire);
    type Jobs = (
        mpsc::Receiver<Batch>,
        std::collections::VecDeque<(u64, Result<StreamJob>)>,
    );
    let worker = move |jobs: Arc<Mutex<Jobs>>| -> Stats {
        // A worker that panics stops the others (they would wait for its turn forever); the
        // stream then ends short, which is reported below.
        let _stop_on_panic = StopOnPanic(stop_ref, cv_ref, turn_ref);
        let mut stats = Stats::default();
        let mut buf = vec![0u8; usize::try_from(max_pages * ps64).unwrap_or(0)];
        loop {
            let job = {
                let mut g = jobs.lock().unwrap_or_else(PoisonError::into_inner);
                let (rx, queue) = &mut *g;
                if queue.is_empty() {
                    if let Ok(b) = rx.recv() {
                        queue.extend(b);
                    }
                }
                queue.pop_front()
            };
            let Some((seq, job)) = job else {
                return stats;
            };
            let work = job.and_then(|j| {
                let mut plans = Vec::with_capacity(1);
                if !j.ranges.is_empty() {
                    if twin {
                        read_memory_mem_file(pid, mem_ref, &j.ranges, ps64, &mut buf)?;
                    } else {
                        read_memory(pid, mem_ref, &j.ranges, ps64, &mut buf)?;
                    }
                    if let Some((idx, in_parent)) = parent {
                        let inp = in_parent.get(j.vma).copied().unwrap_or(false);
                        let mut d = crate::incremental::Delta::default();
                        plans = crate::incremental::plan_over_parent(
                            idx, inp, &j.ranges, &mut buf, ps, &mut d,
                        );
                        stats.data_pages += d.data;
                        stats.zero_pages += d.zero;
                        stats.parent_pages += d.parent;
                    } else {
                        plan_records(&j.ranges, &mut buf, 0, ps, &mut plans, &mut stats);
                    }
                }
                let plans: Vec<_> = plans
                    .into_iter()
                    .map(|r| {
                        let crc = DataCrc::of(buf.get(r.data.clone()).unwrap_or(&[]));
                        (r, crc)
                    })
                    .collect();
                Ok((j.vmas, plans))
            });
            if spin {
                let until = Instant::now() + TURN_SPIN;
                while !my_turn(seq) && Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            let mut t = turn_ref.lock().unwrap_or_else(PoisonError::into_inner);
            while !my_turn(seq) {
                t = cv_ref.wait(t).unwrap_or_else(PoisonError::into_inner);
            }
            // Failed, or a worker panicked.
            if stop_ref.load(Ordering::Acquire) {
                return stats;
            }
            let written = work.and_then(|(vs, plans)| {
                for i in vs {
                    if let Some(v) = vmas.get(i) {
                        t.w.vma(&v.vma, &v.path).map_err(|e| sink_err(t.w, e))?;
                    }
                }
                for (r, crc) in &plans {
                    let data = buf.get(r.data.clone()).unwrap_or(&[]);
                    t.w.pages_with_crc(&r.runs, data, *crc)
                        .map_err(|e| sink_err(t.w, e))?;
                }
                Ok(())
            });
            // Under the lock: a worker about to sleep checks these under it too.
            match written {
                Ok(()) => next_ref.store(seq + 1, Ordering::Release),
                Err(e) => {
                    t.failed = Some(e);
                    stop_ref.store(true, Ordering::Release);
                }
            }
            cv_ref.notify_all();
        }
    };
    let (stats, planned, panicked) = std::thread::scope(|s| {
        let p = s.spawn(planner);
        let workers: Vec<_> = (0..STREAM_WORKERS)
            .map(|_| {
                let jobs = Arc::clone(&jobs);
                s.spawn(move || worker(jobs))
            })
            .collect();
        drop(jobs);
        let mut panicked = false;
        let mut stats = Stats::default();
        for h in workers {
            match h.join() {
                Ok(b) => {
                    stats.data_pages += b.data_pages;
                    stats.zero_pages += b.zero_pages;
                    stats.parent_pages += b.parent_pages;
                }
                Err(_) => panicked = true,
            }
        }
        let planned = p.join().ok();
        (stats, planned, panicked)
    });
    let t = turn.into_inner().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = t.failed {
        return Err(e);
    }
    // Every job planned must have been written: a thread that panicked leaves a hole.
    if panicked || planned != Some(next.load(Ordering::Acquire)) {
        return Err(Error::Other(
            "a thread of the image stream failed: the image is incomplete".into(),
        ));
    }
    let mut stats = stats;
    stats.vmas = vmas.len() as u64;
    Ok(stats)
}

/// Stops a stream's workers when dropped during a panic.
struct StopOnPanic<'a, T>(
    &'a std::sync::atomic::AtomicBool,
    &'a std::sync::Condvar,
    &'a std::sync::Mutex<T>,
);

impl<T> Drop for StopOnPanic<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, std::sync::atomic::Ordering::Release);
            // Under the lock, so that no worker is between its check and its wait.
            let _g = self
                .2
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.1.notify_all();
        }
    }
}

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
    fn alloc(&mut self) -> u32 {
        if self.chunks.is_empty() || self.used == self.per_chunk {
            self.chunks.push(vec![0u8; self.per_chunk * self.ps]);
            self.used = 0;
        }
        let s = (self.chunks.len() - 1) * self.per_chunk + self.used;
        self.used += 1;
        u32::try_from(s).unwrap_or(NO_SLOT)
    }

    fn page(&self, slot: u32) -> &[u8] {
        let s = slot as usize;
        let (c, i) = (s / self.per_chunk, s % self.per_chunk);
        self.chunks
            .get(c)
            .and_then(|c| c.get(i * self.ps..(i + 1) * self.ps))
            .unwrap_or(&[])
    }

    /// Copies the pages at `addr..addr + n pages` of the task into `slots` (allocated where
    /// missing), batching pages whose slots follow each other.
    fn copy(&mut self, pid: i32, mem: &File, addr: u64, slots: &mut [u32]) -> Result<()> {
        for s in slots.iter_mut() {
            if *s == NO_SLOT {
                *s = self.alloc();
            }
        }
        let ps = self.ps;
        let mut i = 0;
        while i < slots.len() {
            let first = slots.get(i).copied().unwrap_or(NO_SLOT) as usize;
            let (c, off) = (first / self.per_chunk, first % self.per_chunk);
            let mut j = i + 1;
            while j < slots.len()
                && slots.get(j).copied().unwrap_or(NO_SLOT) as usize == first + (j - i)
                && off + (j - i) < self.per_chunk
            {
                j += 1;
            }
            let n = j - i;
            let dst = self
                .chunks
                .get_mut(c)
                .and_then(|ch| ch.get_mut(off * ps..(off + n) * ps))
                .ok_or_else(|| Error::Other("pre-copy store out of range".into()))?;
            read_memory(
                pid,
                mem,
                &[(addr + (i * ps) as u64, n as u64)],
                ps as u64,
                dst,
            )?;
            i = j;
        }
        Ok(())
    }
}

/// What the final frozen step of a pre-copy gives: metadata, VMAs, the scan of each tracked
/// VMA, the ranges copied in full of the others, the pages copied while frozen.
type FinalCopy = (
    Meta,
    Vec<VmaRec>,
    Vec<Option<crate::tracking::Scan>>,
    Vec<Vec<Range>>,
    u64,
);

/// A VMA being pre-copied: its bounds and a slot per page.
struct PreVma {
    start: u64,
    end: u64,
    slots: Vec<u32>,
}

/// Pre-copy: arm write-protect tracking (a short freeze), copy every present page of the
/// task's private writable anonymous memory while it runs, then copy again, round after round,
/// the pages written meanwhile, until the number stops shrinking or a bound is hit; then freeze,
/// copy the last delta (and, in full, what tracking does not cover), resume. The snapshot is the
/// task's state at that last freeze. Tracking stays armed with the snapshot as its baseline.
pub(crate) fn capture_precopy(
    ins: &Inspection,
    crid: u64,
    opts: &Options,
    session: &mut crate::tracking::Session,
    limits: PrecopyLimits,
) -> Result<(Snapshot, PrecopyReport)> {
    let started = Instant::now();
    let pid = ins.pid;
    let ps = sys::page_size();
    let ps64 = ps as u64;
    let page_size = u32::try_from(ps).unwrap_or(4096);
    let mut rep = PrecopyReport::default();
    session.want_arm();
    // 1. Arm (frozen briefly).
    let frozen = freeze(pid)?;
    let armed = (|| -> Result<Vec<VmaRec>> {
        let maps = procfs::parse_maps(&read_text(pid, "maps")?)?;
        check_maps(pid, &maps)?;
        let vmas: Vec<VmaRec> = maps.iter().map(|m| vma_rec(pid, m)).collect();
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
    // 2. Round 0: everything present in the tracked VMAs, while the task runs.
    let pagemap = open_proc(pid, "pagemap")?;
    let mem = open_proc(pid, "mem")?;
    let mut store = PageStore::new(ps);
    let mut pre: Vec<PreVma> = Vec::new();
    let mut n0 = 0u64;
    for v in armed.iter().filter(|v| v.trackable()) {
        let (a, b) = (v.vma.start.get(), v.vma.end.get());
        let mut pv = PreVma {
            start: a,
            end: b,
            slots: vec![NO_SLOT; usize::try_from((b - a) / ps64).unwrap_or(0)],
        };
        let mut ranges = Vec::new();
        for_each_range(pid, &pagemap, v, ps64, u64::MAX, |r| {
            ranges.push(r);
            Ok(())
        })?;
        for (ra, rn) in ranges {
            let i = usize::try_from((ra - a) / ps64).unwrap_or(0);
            let n = usize::try_from(rn).unwrap_or(0);
            if let Some(sl) = pv.slots.get_mut(i..i + n) {
                // Pages that went away meanwhile: no copy (copied at the end if still there).
                if store.copy(pid, &mem, ra, sl).is_err() {
                    sl.fill(NO_SLOT);
                }
            }
            n0 += rn;
        }
        pre.push(pv);
    }
    rep.rounds.push(n0);
    // 3. Rounds while the task runs: the pages written since the last one.
    let registered = |pre: &[PreVma]| {
        let r: Vec<(u64, u64)> = pre.iter().map(|p| (p.start, p.end)).collect();
        crate::tracking::registered(pid, &pagemap, &r)
    };
    let copy_written = |store: &mut PageStore,
                        pre: &mut [PreVma],
                        reg: &[(u64, u64)],
                        present: bool|
     -> Result<(u64, Vec<Option<crate::tracking::Scan>>)> {
        let mut n = 0u64;
        let mut scans = Vec::with_capacity(pre.len());
        for pv in pre.iter_mut() {
            if !reg.contains(&(pv.start, pv.end)) {
                scans.push(None);
                continue;
            }
            let sc = crate::tracking::scan(pid, &pagemap, pv.start, pv.end, ps64, present)?;
            for &(ra, rn) in &sc.written {
                let i = usize::try_from((ra - pv.start) / ps64).unwrap_or(0);
                let k = usize::try_from(rn).unwrap_or(0);
                if let Some(sl) = pv.slots.get_mut(i..i + k) {
                    store.copy(pid, &mem, ra, sl)?;
                }
                n += rn;
            }
            scans.push(Some(sc));
        }
        Ok((n, scans))
    };
    let t_rounds = Instant::now();
    let mut last = n0;
    while rep.rounds.len() < limits.max_rounds.max(1) as usize
        && t_rounds.elapsed() < limits.max_time
    {
        let reg = registered(&pre)?;
        let (n, _) = copy_written(&mut store, &mut pre, &reg, false).map_err(|e| {
            if is_gone(pid) {
                Error::TargetExited {
                    pid,
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
    // 4. Freeze, copy the last delta, resume.
    let frozen = freeze(pid)?;
    let fin = (|| -> Result<FinalCopy> {
        let (meta, vmas) = read_frozen(ins, crid, page_size)?;
        let reg = crate::tracking::registered(
            pid,
            &pagemap,
            &vmas
                .iter()
                .filter(|v| v.trackable())
                .map(|v| (v.vma.start.get(), v.vma.end.get()))
                .collect::<Vec<_>>(),
        )?;
        // The pre-copied VMAs that are still there with the same bounds and registration.
        let mut keep: Vec<PreVma> = Vec::new();
        let mut which: Vec<Option<usize>> = vec![None; vmas.len()];
        for (i, v) in vmas.iter().enumerate() {
            let (a, b) = (v.vma.start.get(), v.vma.end.get());
            if !v.trackable() || !reg.contains(&(a, b)) {
                continue;
            }
            if let Some(k) = pre.iter().position(|p| p.start == a && p.end == b) {
                which[i] = Some(keep.len());
                keep.push(pre.swap_remove(k));
            }
        }
        let (nf, scans_kept) = copy_written(&mut store, &mut keep, &reg, true)?;
        // A page unchanged since a copy that failed (it went away meanwhile, and came back
        // unwritten): copy it now.
        let mut nlate = 0u64;
        for (pv, sc) in keep.iter_mut().zip(&scans_kept) {
            let Some(sc) = sc else { continue };
            for &(ra, rn) in sc.unchanged.iter() {
                for k in 0..rn {
                    let a = ra + k * ps64;
                    let i = usize::try_from((a - pv.start) / ps64).unwrap_or(0);
                    if let Some(sl) = pv.slots.get_mut(i..i + 1) {
                        if sl.first() == Some(&NO_SLOT) {
                            store.copy(pid, &mem, a, sl)?;
                            nlate += 1;
                        }
                    }
                }
            }
        }
        let mut scans: Vec<Option<crate::tracking::Scan>> = vec![None; vmas.len()];
        let mut scans_kept: Vec<Option<crate::tracking::Scan>> = scans_kept;
        let mut scanned = vec![false; vmas.len()];
        for (i, w) in which.iter().enumerate() {
            if let Some(k) = *w {
                if let Some(sc) = scans_kept.get_mut(k).and_then(Option::take) {
                    scans[i] = Some(sc);
                    scanned[i] = true;
                }
            }
        }
        // Everything else in full, now.
        let mut full: Vec<Vec<Range>> = Vec::with_capacity(vmas.len());
        let mut nfull = 0u64;
        for (i, v) in vmas.iter().enumerate() {
            let mut rs = Vec::new();
            if scans[i].is_none() {
                for_each_range(pid, &pagemap, v, ps64, u64::MAX, |r| {
                    nfull += r.1;
                    rs.push(r);
                    Ok(())
                })?;
            }
            full.push(rs);
        }
        let total: u64 = full.iter().flatten().map(|r| r.1).sum();
        let mut direct = vec![0u8; usize::try_from(total * ps64).unwrap_or(0)];
        let all: Vec<Range> = full.iter().flatten().copied().collect();
        read_memory(pid, &mem, &all, ps64, &mut direct)?;
        session.set_scanned(scanned);
        session.arm(pid, &vmas)?;
        pre = keep;
        // Stash the directly copied bytes in the store, in order.
        let mut slots_direct: Vec<u32> = Vec::new();
        for p in direct.chunks_exact(ps) {
            let s = store.alloc();
            let sidx = s as usize;
            let (c, o) = (sidx / store.per_chunk, sidx % store.per_chunk);
            if let Some(d) = store
                .chunks
                .get_mut(c)
                .and_then(|ch| ch.get_mut(o * ps..(o + 1) * ps))
            {
                d.copy_from_slice(p);
            }
            slots_direct.push(s);
        }
        // Give each full range its slots through a PreVma-like table later.
        let mut it = slots_direct.into_iter();
        for (i, rs) in full.iter().enumerate() {
            if rs.is_empty() {
                continue;
            }
            let v = &vmas[i];
            let (a, b) = (v.vma.start.get(), v.vma.end.get());
            let mut pv = PreVma {
                start: a,
                end: b,
                slots: vec![NO_SLOT; usize::try_from((b - a) / ps64).unwrap_or(0)],
            };
            for &(ra, rn) in rs {
                let i0 = usize::try_from((ra - a) / ps64).unwrap_or(0);
                for k in 0..usize::try_from(rn).unwrap_or(0) {
                    if let Some(sl) = pv.slots.get_mut(i0 + k) {
                        *sl = it.next().unwrap_or(NO_SLOT);
                    }
                }
            }
            pre.push(pv);
        }
        Ok((meta, vmas, scans, full, nf + nfull + nlate))
    })()
    .map_err(|e| frozen_err(pid, e))?;
    let downtime = frozen.release(opts.after)?;
    let (meta, vmas, scans, full, nfinal) = fin;
    rep.final_pages = nfinal;
    // 5. Lay the pages out in address order and plan the records.
    let mut order: Vec<Vec<Range>> = Vec::with_capacity(vmas.len());
    let mut total = 0u64;
    for i in 0..vmas.len() {
        let mut rs: Vec<Range> = Vec::new();
        let mut push = |a: u64, n: u64| match rs.last_mut() {
            Some(l) if l.0 + l.1 * ps64 == a => l.1 += n,
            _ => rs.push((a, n)),
        };
        match &scans[i] {
            Some(sc) => {
                let mut present: Vec<Range> = sc
                    .written
                    .iter()
                    .chain(&sc.unchanged)
                    .chain(&sc.zero)
                    .copied()
                    .collect();
                present.sort_unstable();
                for (a, n) in present {
                    push(a, n);
                }
            }
            None => {
                for &(a, n) in &full[i] {
                    push(a, n);
                }
            }
        }
        total += rs.iter().map(|r| r.1).sum::<u64>();
        order.push(rs);
    }
    let mut buf = sys::MapBuf::new(usize::try_from(total * ps64).unwrap_or(0).max(ps))
        .map_err(|e| Error::io("allocating the page buffer", e))?;
    let mut stats = Stats {
        downtime,
        vmas: vmas.len() as u64,
        ..Stats::default()
    };
    let mut snap_vmas = Vec::with_capacity(vmas.len());
    let mut dst = 0usize;
    for (i, (v, rs)) in vmas.into_iter().zip(order).enumerate() {
        let (a, b) = (v.vma.start.get(), v.vma.end.get());
        let table = pre.iter().find(|p| p.start == a && p.end == b);
        let zero_pages: Vec<Range> = scans[i]
            .as_ref()
            .map(|s| s.zero.clone())
            .unwrap_or_default();
        let base = dst;
        for &(ra, rn) in &rs {
            for k in 0..rn {
                let addr = ra + k * ps64;
                let d = buf
                    .get_mut(dst..dst + ps)
                    .ok_or_else(|| Error::Other("page buffer too small".into()))?;
                let is_zero_page = zero_pages
                    .iter()
                    .any(|&(za, zn)| za <= addr && addr < za + zn * ps64);
                let slot = table
                    .and_then(|t| t.slots.get(usize::try_from((addr - a) / ps64).unwrap_or(0)))
                    .copied()
                    .unwrap_or(NO_SLOT);
                if is_zero_page || slot == NO_SLOT {
                    // The zero page; or (never expected) a page with no copy: zero-filled
                    // buffers make both zero.
                    if !is_zero_page {
                        return Err(Error::Other(format!(
                            "pre-copy: page {addr:#x} of pid {pid} was never copied"
                        )));
                    }
                    d.fill(0);
                } else {
                    d.copy_from_slice(store.page(slot));
                }
                dst += ps;
            }
        }
        let mut records = Vec::new();
        let end = plan_records(&rs, &mut buf, base, ps, &mut records, &mut stats);
        dst = end;
        snap_vmas.push(SnapVma {
            vma: v,
            records,
            tracked: None,
        });
    }
    stats.capture = started.elapsed();
    Ok((
        Snapshot {
            crid,
            pid,
            meta,
            vmas: snap_vmas,
            buf,
            stats,
            twin: None,
            parent: None,
        },
        rep,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_squeezes_zero_pages_and_respects_limits() {
        let ps = 4096usize;
        // 3 ranges: [data, zero, data], [zero], [data x 2000].
        let ranges = [(0x10000u64, 3u64), (0x20000, 1), (0x40000, 2000)];
        let total = 2004 * ps;
        let mut buf = vec![0u8; total];
        buf[..ps].fill(1);
        buf[2 * ps..3 * ps].fill(3);
        for i in 4..2004 {
            buf[i * ps] = (i % 251) as u8 + 1;
        }
        let mut out = Vec::new();
        let mut st = Stats::default();
        let end = plan_records(&ranges, &mut buf, 0, ps, &mut out, &mut st);
        assert_eq!(st.zero_pages, 2);
        assert_eq!(st.data_pages, 2002);
        assert_eq!(end, 2002 * ps);
        assert_eq!(buf[ps], 3);
        assert_eq!(buf[2 * ps], 5); // page 4 -> (4 % 251) + 1
                                    // 2002 data pages at 1024 per record -> 2 records at least.
        assert!(out.len() >= 2);
        for r in &out {
            assert!(r.runs.len() <= MAX_RUNS_PER_RECORD as usize);
            let dp: u64 = r
                .runs
                .iter()
                .filter(|x| x.kind.get() == raw::RUN_DATA)
                .map(|x| u64::from(x.pages.get()))
                .sum();
            assert_eq!(dp as usize * ps, r.data.len());
            assert!(r.data.len() <= MAX_DATA_PER_RECORD as usize);
        }
        let runs: Vec<_> = out.iter().flat_map(|r| r.runs.iter()).collect();
        assert_eq!(runs[0].kind.get(), raw::RUN_DATA);
        assert_eq!(runs[1].kind.get(), raw::RUN_ZERO);
        assert_eq!(runs[1].addr.get(), 0x11000);
        assert_eq!(runs[3].addr.get(), 0x20000);
        assert_eq!(runs[3].kind.get(), raw::RUN_ZERO);
    }

    #[test]
    fn zero_check() {
        let mut p = vec![0u8; 4096];
        assert!(is_zero(&p));
        p[4095] = 1;
        assert!(!is_zero(&p));
        p[4095] = 0;
        p[3] = 1;
        assert!(!is_zero(&p));
    }
}
