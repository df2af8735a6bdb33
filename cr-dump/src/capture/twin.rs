//! Copy-on-write snapshots: a stopped copy of the frozen task (its "twin"), made by injecting
//! `clone` into it, keeps the task's memory as it was at the freeze while the task runs on. The
//! image is then streamed from the twin; the task is stopped for the clone, not for a copy of
//! its memory. Lazy checkpoints of tasks with at least [`crate::capture::TWIN_MIN_BYTES`] to
//! copy are taken this way by default ([`super::registry::Registry::checkpoint_lazy`]).
//!
//! While the task is frozen: `clone(0)` is injected into it (nothing shared, no exit signal):
//! the twin, attached to us at birth (`PTRACE_O_TRACECLONE`) and stopped before it runs. Then
//! (`Twin::ready`; for a capture whose mappings are read from the twin, once the task runs
//! again: none of it needs the task) it is given `PTRACE_O_EXITKILL` (if cr-dump dies, the twin
//! dies) and `close_range(0, ~0)` is injected into the twin, so it holds none of the task's
//! descriptors (a pipe the task closes still reaches end-of-file). When the twin is dropped it is killed and waited for, then the task is
//! stopped once more, for about 0.1 ms, to reap it by an injected `wait4`: the twin has no exit
//! signal, so the task gets no `SIGCHLD` and its own `wait` calls never see it (only a
//! `wait(__WALL)` could, while the twin lives).
//!
//! Every system call here is injected by [`crate::sys::inject`] (the task's registers restored
//! afterwards, signals that arrive meanwhile sent again).
//!
//! Neither the twin nor its copies of the task's registers ever run the task's code: the clone
//! is injected ([`crate::sys::inject::Injector::call_clone`]) at the stub
//! ([`crate::sys::inject::STUB`]: a child with its stack pointer near zero takes its `hlt`), or
//! at a `syscall` followed by `ret` or `leave`, with stack and frame pointers near zero, so a
//! twin resumed by accident (its tracer killed in the microseconds before `PTRACE_O_EXITKILL`
//! is set) faults at once.
//!
//! The twin is checked before it is used: every VMA to store must be in it with the same bounds
//! (`MADV_DONTFORK` memory is not copied to a child), and every anonymous VMA with pages in the
//! task must have pages in the twin (`MADV_WIPEONFORK` memory is emptied). Shared memory (and
//! private mappings of deleted files), which a child shares instead of copying, is not read
//! from the twin: the capture copies those VMAs alone while the task is stopped, and the
//! write-back takes them from that copy (`lazy::capture_cow`). Otherwise, or when the
//! task has a seccomp filter (which could kill it for the injected calls), or the clone fails,
//! [`make`] says why and the caller copies the memory while the task is stopped instead.
//!
//! What it costs: the stop copies the task's page tables (a fork); while the twin lives, the
//! task's first write to each page copies that page (charged to the task's memory cgroup), and
//! the twin is a process in `ps`, stopped, with the task's name, as a child of the task. The
//! twin lives as long as the thread that made it (ptrace ties a tracee to its tracer thread).
//! If the task exits before the twin is dropped, the twin is reaped by init instead. If cr-dump
//! is killed (SIGKILL) before it drops the twin, the twin dies with it (`PTRACE_O_EXITKILL`)
//! and cr-dump's guard ([`super::guard`]), told the twin's pid by the `clone`'s result, reaps
//! it by the same injected `wait4` (`reap_orphan`); without a guard (a SIGKILL of the guard
//! too), or if another tracer holds the task by then, the twin stays a zombie child of the task
//! until the task exits: only the task can reap it. SIGINT, SIGTERM, SIGHUP and SIGQUIT are
//! noted and unwound ([`crate::sys::catch_interrupts`]): the twin is dropped, so killed and
//! reaped, as on any error.

use super::vma::VmaRec;
use crate::error::{Error, Result};
use crate::procfs;
use crate::span::AddrRange;
use crate::sys::abi::nr;
use crate::sys::inject::{Injector, Signals};
use crate::sys::{self, ScanQuery, Stop, Tracee};
use cr_format::raw;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
/// The stack pointer a clone child starts with: unmapped (below `mmap_min_addr`), so a `ret`
/// faults.
const CHILD_SP: u64 = 8;

/// A stopped copy of a task's memory, traced by us. Dropping it kills it and reaps it.
#[derive(Debug)]
pub struct Twin {
    pid: i32,
    /// The task it is a copy of (its parent).
    task: i32,
    /// Data and zero pages found by the last write-back.
    counts: Mutex<Option<(u64, u64, u64)>>,
    /// Made by [`make_unchecked`] and not yet [`Twin::ready`]: the task's rseq area at the
    /// freeze, to write into the twin.
    unready: Option<Option<(u64, Vec<u8>)>>,
}

impl Twin {
    /// The twin's pid (its memory is the task's at the freeze).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Records what a write-back found.
    pub(crate) fn set_counts(&self, data: u64, zero: u64, parent: u64) {
        if let Ok(mut c) = self.counts.lock() {
            *c = Some((data, zero, parent));
        }
    }

    /// Kills and reaps the twin while its task is still frozen by the caller: for a capture
    /// that fails after making it (a drop would have to freeze the task again to reap it).
    pub(crate) fn discard_frozen(mut self) -> Result<()> {
        let g = std::mem::take(&mut self.pid);
        kill_and_reap(g);
        let rseq = save_rseq(self.task);
        let r = reap_in(self.task, g);
        restore_rseq(self.task, &rseq)?;
        r
    }

    /// The CPU time the twin has spent (the injected calls of the write-back run in it), to
    /// the clock tick; `None` if it cannot be read.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        let b = procfs::read(self.pid, "stat").ok()?;
        let st = procfs::parse_stat(&String::from_utf8_lossy(&b)).ok()?;
        let ms = st.cpu_ticks.saturating_mul(1000) / crate::sys::clock_ticks();
        Some(std::time::Duration::from_millis(ms))
    }

    /// Readies a twin from [`make_unchecked`] once the task runs again (nothing here needs
    /// the task stopped): waits for the twin's first stop, sets `PTRACE_O_EXITKILL` (if
    /// cr-dump dies, the twin dies), closes its descriptors (`close_range`: a pipe the task
    /// closes reaches end-of-file) and writes the task's rseq area at the freeze into it (it
    /// went back to user mode for an instant). On an error the caller drops the twin.
    pub(crate) fn ready(&mut self) -> Result<()> {
        let Some(rseq) = self.unready.take() else {
            return Ok(());
        };
        let g = self.pid;
        // Born at the nice value of the task's stop (`freeze`): the task's own, for its end.
        if let Ok(n) = sys::nice(self.task) {
            let _ = sys::set_nice(g, n);
        }
        wait_born(g)?;
        let twin_inj = injector(g)?;
        twin_inj.set_options(libc::PTRACE_O_EXITKILL)?;
        // Best effort: before Linux 5.9 the twin keeps its descriptors until it is killed.
        let _ = twin_inj.call(nr::CLOSE_RANGE, [0, u64::from(u32::MAX), 0, 0, 0, 0]);
        drop(twin_inj);
        restore_rseq(g, &rseq)
    }

    /// Data, zero and parent pages found by the last write-back, if there was one.
    pub fn counts(&self) -> Option<(u64, u64, u64)> {
        self.counts.lock().ok().and_then(|c| *c)
    }
}

impl Drop for Twin {
    fn drop(&mut self) {
        if self.pid == 0 {
            return;
        }
        // The twin's memory is torn down while the task runs; only the reap stops it.
        kill_and_reap(self.pid);
        let (pid, twin) = (self.task, self.pid);
        // Still the task's child (a zombie)? If the task has exited, init has the twin, and the
        // pid may name another process by now: leave it alone.
        let parent = procfs::read(twin, "stat")
            .ok()
            .and_then(|b| procfs::parse_stat(&String::from_utf8_lossy(&b)).ok())
            .map(|st| st.ppid);
        if parent != Some(pid) {
            return;
        }
        let Ok(frozen) = super::freeze::freeze_quiet(pid) else {
            return; // gone (then init reaps the twin), or traced by someone else
        };
        let rseq = save_rseq(pid);
        let _ = reap_in(pid, twin);
        let _ = restore_rseq(pid, &rseq);
        let _ = frozen.release(super::options::After::Continue);
    }
}

/// How long [`reap_orphan`] waits for a dying cr-dump to let go of the twin.
pub(crate) const ORPHAN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reaps the twin `twin` that a dead cr-dump left under task `pid` (frozen by the caller, the
/// guard: [`super::guard`]): `Ok(false)` if `twin` is not, or no longer, a child of `pid` with
/// no exit signal (then it is not ours: left alone). A live twin is killed first; the reap waits
/// until it is a zombie that no one traces, at most [`ORPHAN_WAIT`]: a dying cr-dump lets its
/// tracees go only at the end of its exit, after its files are closed, and the last close of
/// a large unlinked image can wait seconds for writeback on a busy disk.
pub(crate) fn reap_orphan(pid: i32, twin: i32) -> Result<bool> {
    let stat = || {
        procfs::read(twin, "stat")
            .ok()
            .and_then(|b| procfs::parse_stat(&String::from_utf8_lossy(&b)).ok())
    };
    match stat() {
        Some(st) if st.ppid == pid && st.exit_signal == 0 => {
            if st.state != b'Z' {
                let _ = sys::kill(twin, libc::SIGKILL);
            }
        }
        _ => return Ok(false),
    }
    // A zombie still traced (by a dying cr-dump thread that has not let it go yet) cannot be
    // reaped by its parent: wait for both.
    let tracer = || {
        procfs::read(twin, "status")
            .ok()
            .and_then(|b| procfs::parse_status(&String::from_utf8_lossy(&b)).ok())
            .map_or(0, |s| s.tracer_pid)
    };
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    let t0 = std::time::Instant::now();
    loop {
        let state = stat().map(|st| st.state);
        let by = tracer();
        if by == me {
            // Attached to us at birth: the clone was under way (its PTRACE_O_TRACECLONE from
            // cr-dump already decided) when we seized the task. As its tracer we see its end;
            // then it is its parent's zombie.
            kill_and_reap(twin);
            continue;
        }
        if state.is_none_or(|s| matches!(s, b'Z' | b'X')) && by == 0 {
            break;
        }
        if t0.elapsed() > ORPHAN_WAIT {
            return Err(Error::Other(format!(
                "the twin {twin} of pid {pid} is not an untraced zombie {} s after SIGKILL \
                 (state {}, traced by {by})",
                ORPHAN_WAIT.as_secs(),
                state.map_or('?', char::from)
            )));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let rseq = save_rseq(pid);
    reap_in(pid, twin)?;
    restore_rseq(pid, &rseq)?;
    Ok(true)
}

/// Kills a task traced by us and waits for its end as its tracer (its parent still has to
/// reap it).
fn kill_and_reap(pid: i32) {
    let t = Tracee::new(pid);
    let _ = t.kill(libc::SIGKILL);
    loop {
        match t.wait() {
            Ok(s) if !s.is_end() => {}
            _ => return,
        }
    }
}

/// An injector for a task or twin stopped under our ptrace (signals that arrive meanwhile are
/// sent again).
fn injector(pid: i32) -> Result<Injector> {
    Injector::new(Tracee::new(pid), Signals::Resend)
}

/// Reaps the dead twin `twin` by a `wait4` injected into its parent `pid` (frozen by us).
fn reap_in(pid: i32, twin: i32) -> Result<()> {
    let r = injector(pid)?.call(
        nr::WAIT4,
        [
            twin as u64,
            0,
            (libc::__WALL | libc::WNOHANG) as u64,
            0,
            0,
            0,
        ],
    )?;
    // ECHILD: the task reaped it itself (a wait with __WALL).
    if r == i64::from(twin) || r == -i64::from(libc::ECHILD) {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "wait4 for the twin {twin} in pid {pid} returned {r}"
        )))
    }
}

/// The task's rseq area (address and bytes) while it is stopped, if it registered one. The
/// kernel rewrites its CPU fields whenever the task returns to user mode, as it does for each
/// injected system call: writing the saved bytes back afterwards leaves the task's memory (and
/// the twin's) exactly as it was at the freeze.
fn save_rseq(pid: i32) -> Option<(u64, Vec<u8>)> {
    let c = Tracee::new(pid).rseq().ok()?;
    let addr = c.rseq_abi_pointer;
    if addr == 0 {
        return None;
    }
    // At least the 32 bytes of struct rseq, at most what any kernel registers.
    let mut b = vec![0u8; usize::try_from(c.rseq_abi_size.clamp(32, 256)).ok()?];
    let mem = File::open(procfs::path(pid, "mem")).ok()?;
    mem.read_exact_at(&mut b, addr).ok()?;
    Some((addr, b))
}

/// Writes a saved rseq area into task `pid` (stopped under our ptrace).
fn restore_rseq(pid: i32, saved: &Option<(u64, Vec<u8>)>) -> Result<()> {
    let Some((addr, b)) = saved else {
        return Ok(());
    };
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(procfs::path(pid, "mem"))
        .map_err(|e| procfs::proc_err(pid, "mem", e))?;
    mem.write_all_at(b, *addr)
        .map_err(|e| Error::io(format!("restoring the rseq area of pid {pid}"), e))
}

/// Waits for the first stop of a clone child attached to us at birth.
fn wait_born(pid: i32) -> Result<()> {
    let t = Tracee::new(pid);
    loop {
        match t
            .wait()
            .map_err(|e| Error::io(format!("waitpid (twin {pid})"), e))?
        {
            Stop::Group { .. } => return Ok(()),
            Stop::Exited(_) | Stop::Killed(_) => {
                return Err(Error::Other(format!("the twin {pid} died at birth")))
            }
            Stop::Signal { .. } | Stop::Event { .. } | Stop::Continued => {}
        }
    }
}

/// Makes the twin of `pid` (frozen by this thread, with the VMAs `vmas` read while frozen).
/// `Ok(Err(reason))` when no twin can stand for the task (then none is left behind); `Err`
/// when the task failed (it died).
pub fn make(pid: i32, vmas: &[VmaRec]) -> Result<std::result::Result<Twin, String>> {
    let status = procfs::parse_status(&String::from_utf8_lossy(&procfs::read(pid, "status")?))?;
    let mut twin = match make_unchecked(pid, &status)? {
        Ok(t) => t,
        Err(why) => return Ok(Err(why)),
    };
    if let Err(e) = twin.ready() {
        twin.discard_frozen()?;
        return Ok(Err(e.to_string()));
    }
    let why = match check(pid, &twin, vmas) {
        Ok(None) => return Ok(Ok(twin)),
        Ok(Some(why)) => why,
        Err(e) => e.to_string(),
    };
    // Reaped here, the task still frozen.
    twin.discard_frozen()?;
    Ok(Err(why))
}

/// [`make`] without the check that the twin holds the task's memory, and with the twin not
/// yet [`Twin::ready`]: the caller readies it and checks it, from the twin's own mappings,
/// after the task is let go (`lazy::cow_fast`). `status` is the task's, read while frozen.
pub(crate) fn make_unchecked(
    pid: i32,
    status: &procfs::Status,
) -> Result<std::result::Result<Twin, String>> {
    if status.seccomp != 0 {
        return Ok(Err(format!(
            "pid {pid} runs under seccomp (mode {}): no system call is injected",
            status.seccomp
        )));
    }
    let inj = injector(pid)?;
    // The twin is attached at birth with the task's options, stopped before it runs.
    inj.set_options(libc::PTRACE_O_TRACECLONE)?;
    let rseq = save_rseq(pid);
    let r = inj.call_clone(nr::CLONE, [0, CHILD_SP, 0, 0, 0, 0]);
    // Back to no options: the task must not stop for clones of its own.
    let _ = inj.set_options(0);
    restore_rseq(pid, &rseq)?;
    let r = match r {
        Ok(r) => r,
        Err(e) if procfs::read(pid, "stat").is_err() => return Err(e),
        Err(e) => return Ok(Err(e.to_string())),
    };
    match i32::try_from(r) {
        Ok(child) if child > 0 => Ok(Ok(Twin {
            pid: child,
            task: pid,
            counts: Mutex::new(None),
            unready: Some(rseq),
        })),
        Ok(e) if e < 0 => Ok(Err(format!(
            "clone in pid {pid} failed: {}",
            std::io::Error::from_raw_os_error(-e)
        ))),
        _ => Ok(Err(format!("clone in pid {pid} returned {r}"))),
    }
}

/// Whether the twin holds every stored VMA of the task, with its pages: `Some(reason)` if not.
/// Its cost does not grow with the number of VMAs beyond one pass over them: the task is
/// stopped meanwhile.
fn check(pid: i32, twin: &Twin, vmas: &[VmaRec]) -> Result<Option<String>> {
    let g = twin.pid;
    // VMAs the twin would share rather than hold (`VmaRec::held_by_copy`) are copied while the
    // task is stopped (`lazy::capture_cow`): not checked here.
    if let Some(why) = missing_in_twin(pid, g, vmas)? {
        return Ok(Some(why));
    }
    wiped_in_twin(pid, g, vmas)
}

/// `VmSize` of `pid`, in kB.
pub(crate) fn vm_size_kb(pid: i32) -> Result<u64> {
    let status = String::from_utf8_lossy(&procfs::read(pid, "status")?).into_owned();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or_else(|| Error::Proc(format!("/proc/{pid}/status has no VmSize")))
}

/// A stored VMA the twin does not have with the same bounds (`MADV_DONTFORK` memory is not
/// copied to a child): `Some(reason)`.
fn missing_in_twin(pid: i32, g: i32, vmas: &[VmaRec]) -> Result<Option<String>> {
    // A fork copies every VMA as it is except MADV_DONTFORK ones, and the child's VmSize is
    // the parent's less those: equal sizes mean every VMA is there, with no maps to read.
    if vm_size_kb(pid)? == vm_size_kb(g)? {
        return Ok(None);
    }
    let maps = procfs::parse_maps(&String::from_utf8_lossy(&procfs::read(g, "maps")?))?;
    // Both in address order: one pass.
    let mut it = maps.iter().peekable();
    for v in vmas.iter().filter(|v| v.stored() && !v.held_by_copy()) {
        let (a, b) = (v.vma.start.get(), v.vma.end.get());
        while it.next_if(|m| m.end <= a).is_some() {}
        if !it.peek().is_some_and(|m| m.start == a && m.end == b) {
            return Ok(Some(format!(
                "VMA {a:#x}-{b:#x} is not copied to a child (MADV_DONTFORK)"
            )));
        }
    }
    Ok(None)
}

/// An anonymous VMA with pages in the task and none in the twin (`MADV_WIPEONFORK` memory is
/// emptied in a child): `Some(reason)`.
fn wiped_in_twin(pid: i32, g: i32, vmas: &[VmaRec]) -> Result<Option<String>> {
    let anon: Vec<AddrRange> = vmas
        .iter()
        .filter(|v| v.stored() && !v.held_by_copy())
        .filter(|v| {
            matches!(
                v.vma.kind.get(),
                raw::VMA_ANON | raw::VMA_HEAP | raw::VMA_STACK
            )
        })
        .filter_map(|v| AddrRange::new(v.vma.start.get(), v.vma.end.get()))
        .collect();
    let (in_task, in_twin) = (with_pages(pid, &anon)?, with_pages(g, &anon)?);
    for ((r, t), w) in anon.iter().zip(in_task).zip(in_twin) {
        if t && !w {
            return Ok(Some(format!(
                "VMA {:#x}-{:#x} is emptied in a child (MADV_WIPEONFORK)",
                r.start, r.end
            )));
        }
    }
    Ok(None)
}

/// A VMA at least this large is asked on its own whether it has a page (a scan that stops at
/// the first); smaller neighbours are scanned together, whole.
const SCAN_ALONE: u64 = 1 << 20;

/// For each of `ranges` (VMAs in address order), whether task `pid` has a page there that is
/// present or swapped and not the shared zero page (a child gets no page tables for a VMA
/// that only ever read zeros). The task is stopped meanwhile, so the cost is kept to the
/// number of large VMAs plus the pages of the small ones: a large VMA is one scan that stops
/// at its first page, and runs of small neighbours are one scan each (65,000 one-page
/// mappings: one call, not 65,000).
fn with_pages(pid: i32, ranges: &[AddrRange]) -> Result<Vec<bool>> {
    let pm = File::open(procfs::path(pid, "pagemap"))
        .map_err(|e| procfs::proc_err(pid, "pagemap", e))?;
    let err = |at: u64, e| Error::io(format!("PAGEMAP_SCAN of pid {pid} at {at:#x}"), e);
    let q = ScanQuery {
        inverted: sys::PAGE_IS_PFNZERO,
        category_mask: sys::PAGE_IS_PFNZERO,
        anyof_mask: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED,
        return_mask: sys::PAGE_IS_PRESENT,
        ..ScanQuery::default()
    };
    let mut out = vec![false; ranges.len()];
    let mut one: Vec<sys::PageRegion> = Vec::with_capacity(1);
    let mut i = 0;
    while let Some(r) = ranges.get(i) {
        if r.len() >= SCAN_ALONE {
            let first = ScanQuery { max_pages: 1, ..q };
            sys::pagemap_scan(&pm, *r, &first, &mut one).map_err(|e| err(r.start, e))?;
            if let Some(o) = out.get_mut(i) {
                *o = !one.is_empty();
            }
            i += 1;
            continue;
        }
        // A run of small VMAs with small gaps between them: one scan of all its pages.
        let mut j = i + 1;
        let mut end = r.end;
        while let Some(n) = ranges.get(j) {
            if n.len() >= SCAN_ALONE || n.start.saturating_sub(end) >= SCAN_ALONE {
                break;
            }
            end = n.end;
            j += 1;
        }
        let run = AddrRange {
            start: r.start,
            end,
        };
        let regions =
            sys::pagemap::pagemap_scan_all(&pm, run, &q).map_err(|e| err(run.start, e))?;
        for (k, v) in ranges.iter().enumerate().take(j).skip(i) {
            let at = regions.partition_point(|x| x.end <= v.start);
            if let Some(o) = out.get_mut(k) {
                *o = regions.get(at).is_some_and(|x| x.start < v.end);
            }
        }
        i = j;
    }
    Ok(out)
}
