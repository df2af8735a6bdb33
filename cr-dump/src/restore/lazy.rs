//! `restore --lazy`: the task runs before its memory is in.
//!
//! # How
//!
//! Before the VMAs get their protection (step 7), the child makes a userfaultfd (an injected
//! `userfaultfd`, fetched with `pidfd_getfd`; not user-mode-only, so that the kernel's own
//! accesses to the task's memory, a `write(fd, buf)` from a page not yet there, wait too: this
//! needs root or `CAP_SYS_PTRACE` while `vm.unprivileged_userfaultfd` is 0) and every private
//! anonymous VMA (heap and stack too) with pages in the image is registered in missing-page
//! mode instead of filled. Everything else (file mappings, shared memory, locked VMAs, whose
//! `mlock` would fault every page in) is filled at once, as [`super::pages::fill`] does.
//!
//! From then on a server thread owns the userfaultfd: a fault is answered with `UFFDIO_COPY` of
//! the page and the pages after it (up to [`FAULT_BATCH`]) from the image, or `UFFDIO_ZEROPAGE`
//! where the image has no data. The thread runs during the rest of the restore already (so a
//! page the kernel touches while the state is set, the rseq area, is served too); the rest of
//! the memory is filled in the background once the task runs and the restore has reported it
//! ([`LazyFill::serve`]), so that the fill does not compete with the report for the CPUs.
//!
//! The background fill is done by two threads, the server between faults and a helper
//! ([`Helper`]), each taking the next piece (at most a Pages record's data, 1 MiB) in address
//! order: the CRC of a record is taken by the thread that copies it, right before its first
//! copy ([`super::pages::Source::crc_ok`]), so the copy reads bytes the CRC just brought into
//! the cache instead of reading the image twice from memory (a checker thread ahead of one
//! copier, before: lazy filled / eager restore 0.86, now 0.71, BENCHMARKS.md "Lazy restore
//! (issue 14, session 8)"). A bad CRC kills the task (and whatever it forked meanwhile is left
//! without that memory: it is killed too when it is traced, see below) and the error names the
//! image and the record; no unchecked byte is ever given to the task. The helper copies to the
//! image's addresses and never reads the userfaultfd: the server pauses it (between two of its
//! copies) before reading the task's userfaultfd, and ends it for good once the task moved its
//! memory (`mremap`); a page is marked in only after its copy, so a fault on a page not marked
//! still to come is never answered with zeros where data is due.
//!
//! What a copy found decides what is marked in ([`fill::put`]): a page copied, or there
//! already (`EEXIST`: the other filler's, or one the task's `mremap` carried along with its
//! range), is in; `ENOENT` never marks a page in. The kernel looks the VMA up before it looks
//! at `mmap_changing`: a copy to a range the task has just moved gets `ENOENT` (not `EAGAIN`)
//! until the `UFFD_EVENT_REMAP` is read, and the page belongs at the new address; a copy across
//! the end of a VMA (split by `mprotect`, or cut by an `munmap` not yet read) gets `ENOENT` for
//! the whole stretch. So a stretch is halved down to one page, and a page whose own VMA is gone
//! is left to come until its event (`UNMAP` or `REMAP`) is read and says where it goes. (Marking
//! it in instead gave zeros in a moved range in about 1 restore in 25 with two fillers, and a
//! fault across a split never answered.)
//!
//! The task's own changes of its memory during the fill are followed (the userfaultfd asks for
//! these events): `madvise(MADV_DONTNEED)` and `munmap` (`UFFD_EVENT_REMOVE`/`UNMAP`) drop
//! the range from what is still to come (it reads as zeros, or is gone); `mremap`
//! (`UFFD_EVENT_REMAP`) sends what is still to come of the range to its new place;
//! `fork` (`UFFD_EVENT_FORK`, which needs `CAP_SYS_PTRACE`) hands over a userfaultfd of the
//! child's memory, which is then filled the same way (first, before the parent's rest).
//! Without `UFFD_EVENT_FORK` the kernel drops the registration in the child: every page not
//! yet filled would read as zeros there, silently; so the event is required.
//!
//! A read of the task's memory through `/proc/PID/mem` (its own `/proc/self/mem` too) of a
//! page still to come fails (`EIO`) instead of waiting for it: the kernel's remote access
//! (`access_remote_vm`) cannot wait on a userfaultfd (`handle_userfault` answers
//! `VM_FAULT_SIGBUS` without `FAULT_FLAG_ALLOW_RETRY`; seen with `tests/restore_maps.rs`'s
//! program, the build before this one alike). The task's own accesses and its system calls on
//! its memory wait as they should.
//!
//! # The task while it is filled
//!
//! The task stays traced by cr-dump (`PTRACE_O_EXITKILL`): if cr-dump (or the `--detach`
//! server) dies before the fill ends, the kernel kills the task, where a closed userfaultfd
//! would otherwise let its missing pages fill with zeros. Its signals are passed on as they
//! come (a stop signal ends the fill first, then the task is let go with it, and stops). When
//! every page is in, the task is stopped for a moment with `SIGSTOP`, which is then dropped,
//! and let go (`PTRACE_DETACH`): a system call the kernel does not restart after a signal
//! (`epoll_wait`, `select`, ...) may then return `EINTR` once. A process the task forks during
//! the fill is not traced: it is not killed if cr-dump dies before its fill ends (it is filled
//! first, so that window is short).

use super::child::Child;
use super::other;
use super::pages::{self, Piece, Source, Src};
use super::plan::{Plan, VmaPlan};
use super::Progress;
use crate::error::{Error, Result};
use crate::inspect::chain::ChainFiles;
use crate::sys::{self, Tracee, UffdEvent, WaitStatus};
use cr_format::raw;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

mod detach;
mod fill;
pub use detach::serve_detached;
use fill::{help, Helper, Mm, Put, Shared, Todo};

/// A record whose CRC matched ([`Server::crc`]).
const GOOD: u8 = 1;

/// Pages copied for a fault: the page and the ones after it.
const FAULT_BATCH: u64 = 16;
/// Pages copied between two looks at the userfaultfd.
const BACKGROUND_BATCH: u64 = 256;
/// Pages the helper copies between two looks at whether it must pause (which the server
/// waits for before it reads a fault: this bounds what a fault waits for).
const HELPER_BATCH: u64 = 128;
/// Fewer lazy pages than this are filled by the server alone.
const HELPER_MIN_PAGES: u64 = 1024;
/// Whether the helper is started at all (off: the server fills alone, each record's CRC still
/// taken right before its copy).
const HELPER_ON: bool = true;

/// The userfaultfd features a lazy restore needs.
const FEATURES: u64 = sys::UFFD_FEATURE_EVENT_FORK
    | sys::UFFD_FEATURE_EVENT_REMAP
    | sys::UFFD_FEATURE_EVENT_REMOVE
    | sys::UFFD_FEATURE_EVENT_UNMAP;

/// Whether `v` is left to be filled lazily.
fn lazy_vma(v: &VmaPlan) -> bool {
    pages::uffd_vma(v)
        && v.pages
        && v.attrs & (raw::VMA_ATTR_LOCKED | raw::VMA_ATTR_LOCKONFAULT) == 0
}

/// Whether `p` is left to be filled lazily.
fn lazy_piece(p: &Piece) -> bool {
    p.anon && !p.locked && matches!(p.src, Src::Data { .. })
}

/// The registered userfaultfd, before the server starts.
pub(super) struct Prepared {
    uffd: OwnedFd,
}

/// Registers the lazy VMAs and fills everything else now.
pub(super) fn prepare(
    c: &Child,
    plan: &Plan,
    files: &ChainFiles,
    src: &Source,
    pieces: &[Piece],
    progress: Option<&Progress>,
) -> Result<Prepared> {
    let uffd = pages::register(c, plan, 0, FEATURES, lazy_vma).map_err(|e| {
        other(format!(
            "restore --lazy: a userfaultfd for the task's memory cannot be made ({e}): it needs \
             root or CAP_SYS_PTRACE (vm.unprivileged_userfaultfd is {}), and a kernel with \
             UFFD_FEATURE_EVENT_FORK/REMAP/REMOVE/UNMAP; restore without --lazy instead",
            std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd")
                .map_or("unknown".into(), |s| s.trim().to_string())
        ))
    })?;
    let now: Vec<Piece> = pieces.iter().copied().filter(|p| !lazy_piece(p)).collect();
    // The VMAs filled now are not registered: [`pages::fill`] writes them (an anonymous
    // locked one through a userfaultfd of its own).
    pages::fill_with(c, plan, files, src, &now, progress, |v| {
        pages::uffd_vma(v) && !lazy_vma(v)
    })?;
    Ok(Prepared { uffd })
}

/// A lazy fill under way: the server thread, and the task, traced by this thread.
#[derive(Debug)]
pub struct LazyFill {
    tracee: Tracee,
    /// Set by the server when every page is in.
    done: Arc<AtomicBool>,
    /// Tells the server the task runs (and may be stopped with the doorbell).
    released: Option<mpsc::Sender<()>>,
    server: Option<JoinHandle<Result<Stats>>>,
    /// Let go stopped (unused: `--lazy` and `--stopped` are refused together).
    stopped: bool,
    /// Set when the task ended (reaped): no doorbell then (its pid may be reused).
    ended: Arc<AtomicBool>,
    /// Starts the background fill ([`Running::go`]).
    go: Option<Arc<AtomicBool>>,
}

/// What the fill did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Pages copied to answer a fault.
    pub fault_pages: u64,
    /// Faults answered.
    pub faults: u64,
    /// Pages copied in the background.
    pub background_pages: u64,
    /// Pages dropped (the task unmapped or discarded them first).
    pub dropped_pages: u64,
    /// Processes forked during the fill whose memory was filled too.
    pub forks: u64,
}

/// How a lazy fill ended.
#[derive(Debug)]
pub struct LazyEnd {
    /// The task ended during the fill (its status); `None`: it runs, let go.
    pub status: Option<WaitStatus>,
    /// What the fill did.
    pub stats: Stats,
}

impl Prepared {
    /// Starts the server thread (before the rest of the restore, whose system calls may touch
    /// the task's memory).
    pub(super) fn start(
        self,
        child: &Child,
        files: ChainFiles,
        src: Source,
        pieces: Vec<Piece>,
        progress: Option<Progress>,
        calm: Option<i32>,
    ) -> Result<Running> {
        let pid = child.pid();
        let done = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let mut state = Server::new(self.uffd, Arc::new(files), Arc::new(src), pieces, progress);
        let go = Arc::new(AtomicBool::new(false));
        state.go = Some(go.clone());
        state.calm = calm;
        let d = done.clone();
        let ended = Arc::new(AtomicBool::new(false));
        let e = ended.clone();
        let server = std::thread::Builder::new()
            .name("cr-lazy".into())
            .spawn(move || {
                let r = state.run();
                // The userfaultfd closed now, not after the doorbell: an event the task raises
                // meanwhile (a fork, an munmap) would wait for a reader that is gone.
                drop(state);
                if r.is_ok() {
                    d.store(true, Ordering::SeqCst);
                    // The doorbell only once the task runs under the tracer's loop.
                    if rx.recv().is_ok() && !e.load(Ordering::SeqCst) {
                        let _ = sys::kill(pid, libc::SIGSTOP);
                    }
                } else {
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
                r
            })
            .map_err(|e| Error::io("starting the lazy-restore server thread", e))?;
        Ok(Running {
            done,
            released: tx,
            server: Some(server),
            ended,
            go: Some(go),
        })
    }
}

/// The server thread, started, the task not yet running.
pub(super) struct Running {
    done: Arc<AtomicBool>,
    released: mpsc::Sender<()>,
    server: Option<JoinHandle<Result<Stats>>>,
    ended: Arc<AtomicBool>,
    /// Set once the task runs and the restore has said so ([`LazyFill::serve`]): the
    /// background fill waits for it, so as not to slow the rest of the restore and its report
    /// (only faults are served before).
    go: Option<Arc<AtomicBool>>,
}

impl Running {
    /// Lets the task run, traced (`PTRACE_O_EXITKILL`: killed if this process dies before the
    /// fill ends); `stop` leaves it stopped at the end of the fill.
    pub(super) fn release(mut self, child: Child, stop: bool) -> Result<LazyFill> {
        let opts = libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACEEXEC;
        let tracee = child.keep_traced(opts)?;
        Ok(LazyFill {
            go: self.go.take(),
            tracee,
            done: self.done.clone(),
            released: Some(self.released.clone()),
            server: self.server.take(),
            stopped: stop,
            ended: self.ended.clone(),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A restore that failed before the task ran (the child is killed): the server finds
        // the memory gone and ends.
        if let Some(g) = &self.go {
            g.store(true, Ordering::SeqCst);
        }
    }
}

impl LazyFill {
    /// The task's pid.
    pub fn pid(&self) -> i32 {
        self.tracee.pid()
    }

    /// Serves the task until every page is in (then lets it go) or it ends. Must run on the
    /// thread that restored it (its tracer). On a bad page (CRC) or a failure the task is
    /// killed and the error says why.
    pub fn serve(mut self) -> Result<LazyEnd> {
        self.start_fill();
        if let Some(tx) = self.released.take() {
            let _ = tx.send(());
        }
        let t = self.tracee;
        let pid = t.pid();
        let status = loop {
            let w = sys::waitpid(pid).map_err(|e| Error::io(format!("waitpid {pid}"), e))?;
            match w {
                WaitStatus::Exited(_) | WaitStatus::Signaled(_) => break Some(w),
                WaitStatus::Stopped { sig, event: 0 } => {
                    let doorbell = sig == libc::SIGSTOP && self.done.load(Ordering::SeqCst);
                    if doorbell || is_stop_signal(sig) {
                        // The fill ends first (a stopped task would not fault), then the task
                        // is let go: stopped if asked, or with the stop signal it got.
                        self.join()?;
                        let s = if doorbell { 0 } else { sig };
                        let s = if self.stopped { libc::SIGSTOP } else { s };
                        t.detach(s)
                            .map_err(|e| Error::io(format!("PTRACE_DETACH {pid}"), e))?;
                        break None;
                    }
                    t.cont(sig)
                        .map_err(|e| Error::io(format!("PTRACE_CONT {pid}"), e))?;
                }
                WaitStatus::Stopped { .. } | WaitStatus::Other => {
                    t.cont(0)
                        .map_err(|e| Error::io(format!("PTRACE_CONT {pid}"), e))?;
                }
            }
        };
        if status.is_some() {
            self.ended.store(true, Ordering::SeqCst);
        }
        // A damaged page ends the fill with an error (the task was killed for it).
        let stats = self.join()?;
        Ok(LazyEnd { status, stats })
    }

    /// Lets the background fill start (it waits for this, after the restore's report).
    fn start_fill(&self) {
        if let Some(g) = &self.go {
            g.store(true, Ordering::SeqCst);
        }
    }

    fn join(&mut self) -> Result<Stats> {
        match self.server.take() {
            Some(h) => h
                .join()
                .map_err(|_| other("the lazy-restore server thread panicked"))?,
            None => Ok(Stats::default()),
        }
    }
}

impl Drop for LazyFill {
    fn drop(&mut self) {
        // Not served to its end: the task must not run on with pages missing.
        if self.server.is_some() {
            let _ = self.tracee.kill(libc::SIGKILL);
            let _ = sys::kill(self.tracee.pid(), libc::SIGKILL);
            self.start_fill();
            self.released.take();
            let _ = self.join();
        }
    }
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// The server thread's state.
struct Server {
    mms: Vec<Mm>,
    sh: Arc<Shared>,
    total: u64,
    progress: Option<Progress>,
    stats: Stats,
    events: Vec<UffdEvent>,
    /// Faults and moves that met a changing layout (`EAGAIN`: an event the task has not yet
    /// finished), tried again after the next read: (address space id, event).
    retry: Vec<(u64, UffdEvent)>,
    next_id: u64,
    /// Background filling may start (the task runs, and the restore said so).
    go: Option<Arc<AtomicBool>>,
    /// The caller's nice value, if the restore raised it (`boost.rs`): the helper's. The
    /// server keeps the restore's, as it answers the task's faults.
    calm: Option<i32>,
    /// Lets go of the image behind the copies.
    behind: pages::Behind,
    /// The second filler, while the task's layout has not moved.
    helper: Option<Helper>,
    /// Whether a helper may still be started.
    may_help: bool,
}

/// What a copy into one address space found.
enum Copied {
    Ok,
    /// The address space is gone (the task exited or exec'd).
    Gone,
    /// Its layout is changing (an event to read first).
    Again,
}

impl Server {
    fn new(
        uffd: OwnedFd,
        files: Arc<ChainFiles>,
        src: Arc<Source>,
        pieces: Vec<Piece>,
        progress: Option<Progress>,
    ) -> Server {
        let ps = sys::page_size() as u64;
        let mut pieces: Vec<Piece> = pieces.into_iter().filter(lazy_piece).collect();
        pieces.sort_by_key(|p| p.addr);
        let mut first = Vec::with_capacity(pieces.len());
        let mut n = 0u64;
        for p in &pieces {
            first.push(n);
            n += p.len / ps;
        }
        let sh = Shared {
            crc: (0..src.len()).map(|_| AtomicU8::new(0)).collect(),
            files,
            src,
            pieces,
            first,
            next: AtomicUsize::new(0),
            ps,
        };
        Server {
            mms: vec![Mm {
                id: 0,
                uffd: Arc::new(uffd),
                todo: Arc::new(Todo::new(n)),
                cursor: 0,
                moves: Vec::new(),
            }],
            behind: pages::Behind::new(&sh.files),
            sh: Arc::new(sh),
            total: n * ps,
            progress,
            stats: Stats::default(),
            events: Vec::new(),
            retry: Vec::new(),
            next_id: 1,
            go: None,
            calm: None,
            helper: None,
            may_help: HELPER_ON && n >= HELPER_MIN_PAGES,
        }
    }

    /// Starts the helper on the task's memory (none if it cannot be started: the server then
    /// fills alone).
    fn start_helper(&mut self) {
        self.may_help = false;
        let Some(m) = self.mms.first().filter(|m| m.id == 0 && m.moves.is_empty()) else {
            return;
        };
        let (uffd, todo, sh) = (m.uffd.clone(), m.todo.clone(), self.sh.clone());
        let pause = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(false));
        let quit = Arc::new(AtomicBool::new(false));
        let (p, i, q) = (pause.clone(), idle.clone(), quit.clone());
        let calm = self.calm;
        let h = std::thread::Builder::new()
            .name("cr-lazy-fill".into())
            .spawn(move || {
                if let Some(n) = calm {
                    // Best effort: a second filler at -20 would take the task's CPU.
                    let _ = sys::set_nice(sys::gettid(), n);
                }
                let r = help(&sh, &uffd, &todo, &p, &i, &q);
                i.store(true, Ordering::SeqCst);
                r
            });
        if let Ok(handle) = h {
            self.helper = Some(Helper {
                pause,
                idle,
                quit,
                handle,
            });
        }
    }

    /// Ends the helper (its error, a bad CRC, is the fill's).
    fn end_helper(&mut self) -> Result<()> {
        if let Some(h) = self.helper.take() {
            self.stats.background_pages += h.end()?;
        }
        Ok(())
    }

    /// Serves until no page is left in any address space.
    fn run(&mut self) -> Result<Stats> {
        let r = self.run_inner();
        // The helper ends with the fill: it holds the userfaultfd too.
        let h = self.end_helper();
        r.and(h).map(|()| self.stats)
    }

    fn run_inner(&mut self) -> Result<()> {
        let mut told = 0u64;
        loop {
            self.events()?;
            if self.helper.as_ref().is_some_and(|h| h.handle.is_finished()) {
                self.end_helper()?;
            }
            if self.mms.is_empty() {
                break;
            }
            if self.go.as_ref().is_some_and(|g| !g.load(Ordering::SeqCst)) {
                self.poll(1)?;
                continue;
            }
            if self.may_help {
                self.start_helper();
            }
            // The newest address space first: a child forked during the fill is not traced.
            let Some(mi) = self.mms.iter().rposition(|m| m.todo.left() > 0) else {
                break;
            };
            self.background(mi)?;
            let left: u64 = self.mms.first().map_or(0, |m| m.todo.left());
            let done = self.total - left * self.sh.ps;
            if let Some(p) = &self.progress {
                if done - told >= 4 << 20 || left == 0 {
                    p.report(done, self.total);
                    told = done;
                }
            }
        }
        Ok(())
    }

    /// Waits up to `ms` for an event on any userfaultfd.
    fn poll(&self, ms: i32) -> Result<()> {
        let fds: Vec<&dyn std::os::fd::AsRawFd> = self
            .mms
            .iter()
            .map(|m| &*m.uffd as &dyn std::os::fd::AsRawFd)
            .collect();
        sys::poll_readable(&fds, ms).map_err(|e| Error::io("poll on the userfaultfd", e))?;
        Ok(())
    }

    /// Reads and handles what every userfaultfd reports, then what must be tried again. The
    /// task's own userfaultfd is read only with the helper paused, and only when it has
    /// something (the helper's copies must not cross an event read: see [`Helper`]).
    fn events(&mut self) -> Result<()> {
        let mut paused = false;
        if let (Some(h), Some(m)) = (&self.helper, self.mms.first()) {
            let fd: [&dyn std::os::fd::AsRawFd; 1] = [&*m.uffd];
            if sys::poll_readable(&fd, 0).map_err(|e| Error::io("poll on the userfaultfd", e))? {
                h.pause();
                paused = true;
            }
        }
        let skip0 = self.helper.is_some() && !paused;
        let mut mi = usize::from(skip0);
        while mi < self.mms.len() {
            let mut ev = std::mem::take(&mut self.events);
            let got = self.mms.get(mi).map(|m| sys::uffd_read(&*m.uffd, &mut ev));
            let mut gone = matches!(got, Some(Err(_)));
            for e in ev.drain(..) {
                gone |= self.handle(mi, e)?;
            }
            self.events = ev;
            if gone {
                self.mms.remove(mi);
            } else {
                mi += 1;
            }
        }
        if paused {
            // The task moved its memory: the helper, which copies to the image's addresses,
            // is done; the server goes on alone.
            let moved = self
                .mms
                .first()
                .is_none_or(|m| m.id != 0 || !m.moves.is_empty());
            if moved {
                self.end_helper()?;
            } else if let Some(h) = &self.helper {
                h.resume();
            }
        }
        let again = std::mem::take(&mut self.retry);
        if !again.is_empty() {
            // The task finishes its change of layout when it runs: let it.
            std::thread::yield_now();
        }
        for (id, e) in again {
            if let Some(mi) = self.mms.iter().position(|m| m.id == id) {
                if self.handle(mi, e)? {
                    self.mms.remove(mi);
                }
            }
        }
        Ok(())
    }

    /// Handles one event; whether its address space is gone.
    fn handle(&mut self, mi: usize, e: UffdEvent) -> Result<bool> {
        let retry = match &e {
            UffdEvent::PageFault { addr } => Some(UffdEvent::PageFault { addr: *addr }),
            UffdEvent::Remap { from, to, len } => Some(UffdEvent::Remap {
                from: *from,
                to: *to,
                len: *len,
            }),
            _ => None,
        };
        Ok(match self.event(mi, e)? {
            Copied::Gone => true,
            Copied::Ok => false,
            Copied::Again => {
                if let (Some(r), Some(m)) = (retry, self.mms.get(mi)) {
                    self.retry.push((m.id, r));
                }
                false
            }
        })
    }

    fn event(&mut self, mi: usize, e: UffdEvent) -> Result<Copied> {
        match e {
            UffdEvent::PageFault { addr } => self.fault(mi, addr & !(self.sh.ps - 1)),
            UffdEvent::Remove { start, end } | UffdEvent::Unmap { start, end } => {
                self.drop_range(mi, start, end);
                Ok(Copied::Ok)
            }
            UffdEvent::Remap { from, to, len } => self.remap(mi, from, to, len),
            UffdEvent::Fork { ufd } => {
                let Some(m) = self.mms.get(mi) else {
                    return Ok(Copied::Ok);
                };
                let (todo, moves) = (Arc::new(m.todo.snapshot()), m.moves.clone());
                self.mms.push(Mm {
                    id: self.next_id,
                    uffd: Arc::new(ufd),
                    todo,
                    cursor: 0,
                    moves,
                });
                self.stats.forks += 1;
                self.next_id += 1;
                Ok(Copied::Ok)
            }
            UffdEvent::Other(_) => Ok(Copied::Ok),
        }
    }

    /// The piece holding page `addr` and the page's index in it.
    fn find(&self, addr: u64) -> Option<(usize, u64)> {
        let pieces = &self.sh.pieces;
        let i = pieces.partition_point(|p| p.addr <= addr);
        let k = i.checked_sub(1)?;
        let p = pieces.get(k)?;
        (addr < p.addr + p.len).then(|| (k, (addr - p.addr) / self.sh.ps))
    }

    fn bit(&self, mi: usize, page: u64) -> bool {
        self.mms.get(mi).is_some_and(|m| m.todo.get(page))
    }

    /// A fault at page `addr`: its data and the pages after it, or a zero page.
    fn fault(&mut self, mi: usize, addr: u64) -> Result<Copied> {
        let first = self.mms.get(mi).and_then(|m| m.orig(addr));
        if let Some((k, pg)) = first.and_then(|a| self.find(a)) {
            let g = self.sh.first.get(k).copied().unwrap_or(0) + pg;
            if self.bit(mi, g) {
                let r = self.copy(mi, k, pg, FAULT_BATCH)?;
                if !matches!(r, Copied::Again) {
                    self.stats.faults += 1;
                }
                return Ok(r);
            }
        }
        // No data (a zero page, or dropped by the task), or already there: zero it, or wake
        // the waiter.
        let Some(m) = self.mms.get(mi) else {
            return Ok(Copied::Gone);
        };
        match sys::uffd_zeropage(&*m.uffd, addr, self.sh.ps) {
            Ok(()) => Ok(Copied::Ok),
            Err((_, e)) => match e.raw_os_error() {
                Some(libc::EEXIST) => {
                    let _ = sys::uffd_wake(&*m.uffd, addr, self.sh.ps);
                    Ok(Copied::Ok)
                }
                Some(libc::ESRCH) => Ok(Copied::Gone),
                Some(libc::EAGAIN) => Ok(Copied::Again),
                // Unmapped or moved meanwhile (its event follows or was read): nothing goes
                // there, but a thread that faulted before it went may still sleep in the
                // fault; woken (harmless if none is), it retries and finds the range as the
                // task left it.
                Some(libc::ENOENT) => {
                    let _ = sys::uffd_wake(&*m.uffd, addr, self.sh.ps);
                    Ok(Copied::Ok)
                }
                _ => Err(Error::io(format!("UFFDIO_ZEROPAGE at {addr:#x}"), e)),
            },
        }
    }

    /// Copies up to `max` pages still to come of piece `k` from its page `pg` on (a stretch
    /// of pages still to come, together where the task has them now).
    fn copy(&mut self, mi: usize, k: usize, pg: u64, max: u64) -> Result<Copied> {
        let sh = self.sh.clone();
        let ps = sh.ps;
        let Some(&p) = sh.pieces.get(k) else {
            return Ok(Copied::Ok);
        };
        let Src::Data { image, off, rec } = p.src else {
            return Ok(Copied::Ok);
        };
        let g0 = sh.first.get(k).copied().unwrap_or(0);
        let npages = p.len / ps;
        let Some(m) = self.mms.get(mi) else {
            return Ok(Copied::Gone);
        };
        let a0 = p.addr + pg * ps;
        let dst = m.cur(a0);
        let together = |n: u64| m.moves.is_empty() || m.cur(a0 + n * ps) == dst + n * ps;
        let mut n = 0;
        while pg + n < npages && n < max && m.todo.get(g0 + pg + n) && together(n) {
            n += 1;
        }
        if n == 0 {
            return Ok(Copied::Ok);
        }
        // Never an unchecked byte: the record's CRC first (a failure ends the fill and kills
        // the task).
        sh.checked(rec)?;
        let bytes = pages::piece_bytes(&sh.files, image, off, p.len)?;
        let s = usize::try_from(pg * ps).unwrap_or(usize::MAX);
        let l = usize::try_from(n * ps).unwrap_or(0);
        let chunk = bytes.get(s..s.saturating_add(l)).unwrap_or_default();
        let (pages, put) = fill::put(&m.uffd, dst, chunk, ps)?;
        let r = match put {
            Put::Gone => return Ok(Copied::Gone),
            Put::Again => Copied::Again,
            Put::Done => Copied::Ok,
        };
        // What was copied leaves cr-dump's resident set, as the eager copy's does.
        self.behind.passed(
            &sh.files,
            image,
            off.saturating_add(s)
                .saturating_add(usize::try_from(pages * ps).unwrap_or(0).min(chunk.len())),
        );
        let pages = pages.min(n);
        let mut copied = 0u64;
        for i in 0..pages {
            copied += u64::from(m.todo.clear(g0 + pg + i));
        }
        if max == FAULT_BATCH {
            self.stats.fault_pages += copied;
        } else {
            self.stats.background_pages += copied;
        }
        Ok(r)
    }

    /// The next stretch of the background fill of address space `mi`: while the task's own
    /// memory is shared with the helper, the next whole piece nobody took; then (and for a
    /// child's memory) the first piece from the cursor with pages still to come.
    fn background(&mut self, mi: usize) -> Result<()> {
        if mi == 0
            && self
                .mms
                .first()
                .is_some_and(|m| m.id == 0 && m.moves.is_empty())
        {
            let k = self.sh.next.fetch_add(1, Ordering::AcqRel);
            if k < self.sh.pieces.len() {
                return self.piece(mi, k);
            }
            if self.helper.is_some() {
                // The helper has the last pieces: faults only, until it ends.
                return self.poll(1);
            }
        }
        let Some(start) = self.mms.get(mi).map(|m| m.cursor) else {
            return Ok(());
        };
        let n = self.sh.pieces.len();
        for k in (start..n).chain(0..start) {
            let g0 = self.sh.first.get(k).copied().unwrap_or(0);
            let npages = self.sh.pieces.get(k).map_or(0, |p| p.len / self.sh.ps);
            if (0..npages).any(|i| self.bit(mi, g0 + i)) {
                if let Some(m) = self.mms.get_mut(mi) {
                    m.cursor = k;
                }
                return self.piece(mi, k);
            }
        }
        // Nothing found: the count is off; end this address space's fill (no helper fills it
        // now: it ended, or this is another address space).
        if let Some(m) = self.mms.get(mi) {
            m.todo.left.store(0, Ordering::Release);
        }
        Ok(())
    }

    /// Copies what is still to come of piece `k` into address space `mi` (in stretches).
    fn piece(&mut self, mi: usize, k: usize) -> Result<()> {
        let g0 = self.sh.first.get(k).copied().unwrap_or(0);
        let npages = self.sh.pieces.get(k).map_or(0, |p| p.len / self.sh.ps);
        let mut pg = 0;
        while pg < npages {
            if !self.bit(mi, g0 + pg) {
                pg += 1;
                continue;
            }
            match self.copy(mi, k, pg, BACKGROUND_BATCH)? {
                Copied::Gone => {
                    self.mms.remove(mi);
                    return Ok(());
                }
                // Left for the scan after the event is read (which the task, to run, needs
                // a CPU for).
                Copied::Again => {
                    std::thread::yield_now();
                    return Ok(());
                }
                Copied::Ok => {}
            }
            if self.bit(mi, g0 + pg) {
                // Not copied (a move split the stretch): the scan comes back to it.
                pg += 1;
            }
        }
        Ok(())
    }

    /// `[start, end)` was discarded or unmapped by the task: nothing more goes there.
    fn drop_range(&mut self, mi: usize, start: u64, end: u64) {
        let ps = self.sh.ps;
        let moved = self.mms.get(mi).is_some_and(|m| !m.moves.is_empty());
        let mut x = start & !(ps - 1);
        while x < end {
            let a = match self.mms.get(mi) {
                Some(m) if moved => m.orig(x),
                _ => Some(x),
            };
            match a.and_then(|a| self.find(a)) {
                Some((k, pg)) => {
                    let g = self.sh.first.get(k).copied().unwrap_or(0) + pg;
                    if self.mms.get(mi).is_some_and(|m| m.todo.clear(g)) {
                        self.stats.dropped_pages += 1;
                    }
                    x += ps;
                }
                None if moved => x += ps,
                None => {
                    // To the next piece.
                    let i = self.sh.pieces.partition_point(|p| p.addr <= x);
                    match self.sh.pieces.get(i) {
                        Some(p) => x = p.addr.max(x + ps),
                        None => break,
                    }
                }
            }
        }
    }

    /// `[from, from+len)` moved to `to`: what is still to come of it goes to its new place (a
    /// copy now would meet the layout still changing: the task finishes its `mremap`, and the
    /// unmapping of the old range, after this event is read).
    fn remap(&mut self, mi: usize, from: u64, to: u64, len: u64) -> Result<Copied> {
        if let Some(m) = self.mms.get_mut(mi) {
            m.moves.push((from, to, len));
        }
        Ok(Copied::Ok)
    }
}
