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
//! where the image has no data; between faults it copies the rest in address order,
//! [`BACKGROUND_BATCH`] at a time. Every Pages record's data CRC is checked before the first
//! byte of it is copied ([`super::pages::Source::crc_ok`], on a second thread ahead of the copies): a bad one kills the task (and
//! whatever it forked meanwhile is left without that memory: it is killed too when it is
//! traced, see below) and the error names the image and the record; no unchecked byte is ever
//! given to the task. The thread runs during the rest of the restore already (so a page the
//! kernel touches while the state is set, the rseq area, is served too).
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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

mod detach;
pub use detach::serve_detached;

/// A record whose CRC matched ([`Server::crc`]).
const GOOD: u8 = 1;

/// Pages copied for a fault: the page and the ones after it.
const FAULT_BATCH: u64 = 16;
/// Pages copied between two looks at the userfaultfd.
const BACKGROUND_BATCH: u64 = 256;

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
    ) -> Result<Running> {
        let pid = child.pid();
        let done = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let mut state = Server::new(self.uffd, Arc::new(files), Arc::new(src), pieces, progress);
        let go = Arc::new(AtomicBool::new(false));
        state.go = Some(go.clone());
        state.check_ahead();
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
            go,
        })
    }
}

/// The server thread, started, the task not yet running.
pub(super) struct Running {
    done: Arc<AtomicBool>,
    released: mpsc::Sender<()>,
    server: Option<JoinHandle<Result<Stats>>>,
    ended: Arc<AtomicBool>,
    /// Set when the task runs: the background fill waits for it, so as not to slow the rest of
    /// the restore (only faults are served before).
    go: Arc<AtomicBool>,
}

impl Running {
    /// Lets the task run, traced (`PTRACE_O_EXITKILL`: killed if this process dies before the
    /// fill ends); `stop` leaves it stopped at the end of the fill.
    pub(super) fn release(mut self, child: Child, stop: bool) -> Result<LazyFill> {
        let opts = libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACEEXEC;
        let tracee = child.keep_traced(opts)?;
        self.go.store(true, Ordering::SeqCst);
        Ok(LazyFill {
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
        self.go.store(true, Ordering::SeqCst);
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

/// One address space being filled: the task's, or a child's it forked during the fill.
struct Mm {
    id: u64,
    uffd: OwnedFd,
    /// One bit per page of the pieces: still to come.
    todo: Vec<u64>,
    left: u64,
    /// The next piece the background fill looks at.
    cursor: usize,
    /// The task's `mremap`s, in order: (from, to, len). A page still to come goes where they
    /// moved its first address.
    moves: Vec<(u64, u64, u64)>,
}

impl Mm {
    /// Where the page first at `a` is now.
    fn cur(&self, a: u64) -> u64 {
        self.moves.iter().fold(
            a,
            |a, &(f, t, l)| {
                if a >= f && a - f < l {
                    a - f + t
                } else {
                    a
                }
            },
        )
    }

    /// Which first address the page now at `x` had, if a page of the image is there.
    fn orig(&self, x: u64) -> Option<u64> {
        let a = self.moves.iter().rev().fold(
            x,
            |a, &(f, t, l)| {
                if a >= t && a - t < l {
                    a - t + f
                } else {
                    a
                }
            },
        );
        (self.cur(a) == x).then_some(a)
    }
}

/// The server thread's state.
struct Server {
    mms: Vec<Mm>,
    files: Arc<ChainFiles>,
    src: Arc<Source>,
    /// Each record's CRC: unchecked, good or bad (a second thread checks them in address order
    /// ahead of the background fill; a fault that needs one not yet checked checks it itself).
    crc: Arc<Vec<AtomicU8>>,
    /// Tells the checker to stop.
    stop: Arc<AtomicBool>,
    /// The lazy pieces, by address.
    pieces: Vec<Piece>,
    /// The page index of each piece's first page.
    first: Vec<u64>,
    ps: u64,
    total: u64,
    progress: Option<Progress>,
    stats: Stats,
    events: Vec<UffdEvent>,
    /// Faults and moves that met a changing layout (`EAGAIN`: an event the task has not yet
    /// finished), tried again after the next read: (address space id, event).
    retry: Vec<(u64, UffdEvent)>,
    next_id: u64,
    /// Background filling may start (the task runs).
    go: Option<Arc<AtomicBool>>,
    /// Lets go of the image behind the copies.
    behind: pages::Behind,
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
        let mut todo = vec![u64::MAX; n.div_ceil(64) as usize];
        if n % 64 != 0 {
            if let Some(last) = todo.last_mut() {
                *last = (1u64 << (n % 64)) - 1;
            }
        }
        Server {
            mms: vec![Mm {
                id: 0,
                uffd,
                todo,
                left: n,
                cursor: 0,
                moves: Vec::new(),
            }],
            crc: Arc::new((0..src.len()).map(|_| AtomicU8::new(0)).collect()),
            stop: Arc::new(AtomicBool::new(false)),
            behind: pages::Behind::new(&files),
            files,
            src,
            pieces,
            first,
            ps,
            total: n * ps,
            progress,
            stats: Stats::default(),
            events: Vec::new(),
            retry: Vec::new(),
            next_id: 1,
            go: None,
        }
    }

    /// Starts the thread that checks the records' CRCs ahead of the fill (none if it cannot
    /// be started: each record is then checked before its first copy).
    fn check_ahead(&self) {
        let mut order: Vec<usize> = Vec::new();
        for p in &self.pieces {
            if let Src::Data { rec, .. } = p.src {
                if order.last() != Some(&rec) {
                    order.push(rec);
                }
            }
        }
        let (files, src, crc, stop, go) = (
            self.files.clone(),
            self.src.clone(),
            self.crc.clone(),
            self.stop.clone(),
            self.go.clone(),
        );
        let _ = std::thread::Builder::new()
            .name("cr-lazy-crc".into())
            .spawn(move || {
                // Not before the task runs: the rest of the restore comes first.
                while go.as_ref().is_some_and(|g| !g.load(Ordering::SeqCst))
                    && !stop.load(Ordering::Relaxed)
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let mut behind = pages::Behind::new(&files);
                for k in order {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // A bad one stays unchecked: the copy that needs it checks it and fails.
                    let ok = src.crc_ok(&files, k).is_ok();
                    if let Some((image, end)) = src.end_of(k) {
                        behind.passed(&files, image, end);
                    }
                    if ok {
                        if let Some(c) = crc.get(k) {
                            c.store(GOOD, Ordering::Release);
                        }
                    }
                }
            });
    }

    /// Serves until no page is left in any address space.
    fn run(&mut self) -> Result<Stats> {
        let r = self.run_inner();
        self.stop.store(true, Ordering::Relaxed);
        r
    }

    fn run_inner(&mut self) -> Result<Stats> {
        let mut told = 0u64;
        loop {
            self.events()?;
            if self.mms.is_empty() {
                break;
            }
            if self.go.as_ref().is_some_and(|g| !g.load(Ordering::SeqCst)) {
                let fds: Vec<&dyn std::os::fd::AsRawFd> = self
                    .mms
                    .iter()
                    .map(|m| &m.uffd as &dyn std::os::fd::AsRawFd)
                    .collect();
                sys::poll_readable(&fds, 1).map_err(|e| Error::io("poll on the userfaultfd", e))?;
                continue;
            }
            // The newest address space first: a child forked during the fill is not traced.
            let Some(mi) = self.mms.iter().rposition(|m| m.left > 0) else {
                break;
            };
            self.background(mi)?;
            let left: u64 = self.mms.first().map_or(0, |m| m.left);
            let done = self.total - left * self.ps;
            if let Some(p) = &self.progress {
                if done - told >= 4 << 20 || left == 0 {
                    p.report(done, self.total);
                    told = done;
                }
            }
        }
        Ok(self.stats)
    }

    /// Reads and handles what every userfaultfd reports, then what must be tried again.
    fn events(&mut self) -> Result<()> {
        let mut mi = 0;
        while mi < self.mms.len() {
            let mut ev = std::mem::take(&mut self.events);
            let got = self.mms.get(mi).map(|m| sys::uffd_read(&m.uffd, &mut ev));
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
            UffdEvent::PageFault { addr } => self.fault(mi, addr & !(self.ps - 1)),
            UffdEvent::Remove { start, end } | UffdEvent::Unmap { start, end } => {
                self.drop_range(mi, start, end);
                Ok(Copied::Ok)
            }
            UffdEvent::Remap { from, to, len } => self.remap(mi, from, to, len),
            UffdEvent::Fork { ufd } => {
                let Some(m) = self.mms.get(mi) else {
                    return Ok(Copied::Ok);
                };
                let (todo, left, moves) = (m.todo.clone(), m.left, m.moves.clone());
                self.mms.push(Mm {
                    id: self.next_id,
                    uffd: ufd,
                    todo,
                    left,
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
        let i = self.pieces.partition_point(|p| p.addr <= addr);
        let k = i.checked_sub(1)?;
        let p = self.pieces.get(k)?;
        (addr < p.addr + p.len).then(|| (k, (addr - p.addr) / self.ps))
    }

    fn bit(&self, mi: usize, page: u64) -> bool {
        self.mms
            .get(mi)
            .and_then(|m| m.todo.get((page / 64) as usize))
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    fn clear(&mut self, mi: usize, page: u64) {
        if let Some(m) = self.mms.get_mut(mi) {
            if let Some(w) = m.todo.get_mut((page / 64) as usize) {
                if *w & (1 << (page % 64)) != 0 {
                    *w &= !(1 << (page % 64));
                    m.left -= 1;
                }
            }
        }
    }

    /// A fault at page `addr`: its data and the pages after it, or a zero page.
    fn fault(&mut self, mi: usize, addr: u64) -> Result<Copied> {
        let first = self.mms.get(mi).and_then(|m| m.orig(addr));
        if let Some((k, pg)) = first.and_then(|a| self.find(a)) {
            let g = self.first.get(k).copied().unwrap_or(0) + pg;
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
        match sys::uffd_zeropage(&m.uffd, addr, self.ps) {
            Ok(()) => Ok(Copied::Ok),
            Err((_, e)) => match e.raw_os_error() {
                Some(libc::EEXIST) => {
                    let _ = sys::uffd_wake(&m.uffd, addr, self.ps);
                    Ok(Copied::Ok)
                }
                Some(libc::ESRCH) => Ok(Copied::Gone),
                Some(libc::EAGAIN) => Ok(Copied::Again),
                // Unmapped meanwhile (its event follows).
                Some(libc::ENOENT) => Ok(Copied::Ok),
                _ => Err(Error::io(format!("UFFDIO_ZEROPAGE at {addr:#x}"), e)),
            },
        }
    }

    /// Copies up to `max` pages still to come of piece `k` from its page `pg` on (a stretch
    /// of pages still to come, together where the task has them now).
    fn copy(&mut self, mi: usize, k: usize, pg: u64, max: u64) -> Result<Copied> {
        let Some(&p) = self.pieces.get(k) else {
            return Ok(Copied::Ok);
        };
        let Src::Data { image, off, rec } = p.src else {
            return Ok(Copied::Ok);
        };
        let g0 = self.first.get(k).copied().unwrap_or(0);
        let npages = p.len / self.ps;
        let Some(m) = self.mms.get(mi) else {
            return Ok(Copied::Gone);
        };
        let a0 = p.addr + pg * self.ps;
        let dst = m.cur(a0);
        let together = |n: u64| m.moves.is_empty() || m.cur(a0 + n * self.ps) == dst + n * self.ps;
        let mut n = 0;
        while pg + n < npages && n < max && self.bit(mi, g0 + pg + n) && together(n) {
            n += 1;
        }
        if n == 0 {
            return Ok(Copied::Ok);
        }
        // Never an unchecked byte: the record's CRC first (a failure ends the fill and kills
        // the task).
        if self.crc.get(rec).map(|c| c.load(Ordering::Acquire)) != Some(GOOD) {
            self.src.crc_ok(&self.files, rec)?;
            if let Some(c) = self.crc.get(rec) {
                c.store(GOOD, Ordering::Release);
            }
        }
        let bytes = pages::piece_bytes(&self.files, image, off, p.len)?;
        let s = usize::try_from(pg * self.ps).unwrap_or(usize::MAX);
        let l = usize::try_from(n * self.ps).unwrap_or(0);
        let chunk = bytes.get(s..s.saturating_add(l)).unwrap_or_default();
        let Some(m) = self.mms.get(mi) else {
            return Ok(Copied::Gone);
        };
        let (done, r) = match sys::uffd_copy(&m.uffd, dst, chunk) {
            Ok(d) => (d, Copied::Ok),
            Err((d, e)) => match e.raw_os_error() {
                Some(libc::EAGAIN) => (d, Copied::Again),
                Some(libc::ESRCH) => return Ok(Copied::Gone),
                // A page there already, or no longer registered (its event follows): skip it.
                Some(libc::EEXIST | libc::ENOENT) => (d + self.ps as usize, Copied::Ok),
                _ => {
                    return Err(Error::io(
                        format!("UFFDIO_COPY of {} bytes at {dst:#x}", chunk.len()),
                        e,
                    ))
                }
            },
        };
        // What was copied leaves cr-dump's resident set, as the eager copy's does.
        self.behind.passed(
            &self.files,
            image,
            off.saturating_add(s).saturating_add(done.min(chunk.len())),
        );
        let pages = (done as u64 / self.ps).min(n);
        if max == FAULT_BATCH {
            self.stats.fault_pages += pages;
        }
        for i in 0..pages {
            self.clear(mi, g0 + pg + i);
        }
        Ok(r)
    }

    /// The next stretch of the background fill of address space `mi`.
    fn background(&mut self, mi: usize) -> Result<()> {
        let Some(start) = self.mms.get(mi).map(|m| m.cursor) else {
            return Ok(());
        };
        for k in (start..self.pieces.len()).chain(0..start) {
            let g0 = self.first.get(k).copied().unwrap_or(0);
            let npages = self.pieces.get(k).map_or(0, |p| p.len / self.ps);
            if let Some(pg) = (0..npages).find(|&i| self.bit(mi, g0 + i)) {
                if let Some(m) = self.mms.get_mut(mi) {
                    m.cursor = k;
                }
                let before = self.mms.get(mi).map_or(0, |m| m.left);
                match self.copy(mi, k, pg, BACKGROUND_BATCH)? {
                    Copied::Gone => {
                        self.mms.remove(mi);
                    }
                    Copied::Again => {}
                    Copied::Ok => {
                        let after = self.mms.get(mi).map_or(0, |m| m.left);
                        self.stats.background_pages += before - after;
                    }
                }
                return Ok(());
            }
        }
        // Nothing found: the count is off; end this address space's fill.
        if let Some(m) = self.mms.get_mut(mi) {
            m.left = 0;
        }
        Ok(())
    }

    /// `[start, end)` was discarded or unmapped by the task: nothing more goes there.
    fn drop_range(&mut self, mi: usize, start: u64, end: u64) {
        let moved = self.mms.get(mi).is_some_and(|m| !m.moves.is_empty());
        let mut x = start & !(self.ps - 1);
        while x < end {
            let a = match self.mms.get(mi) {
                Some(m) if moved => m.orig(x),
                _ => Some(x),
            };
            match a.and_then(|a| self.find(a)) {
                Some((k, pg)) => {
                    let g = self.first.get(k).copied().unwrap_or(0) + pg;
                    if self.bit(mi, g) {
                        self.stats.dropped_pages += 1;
                    }
                    self.clear(mi, g);
                    x += self.ps;
                }
                None if moved => x += self.ps,
                None => {
                    // To the next piece.
                    let i = self.pieces.partition_point(|p| p.addr <= x);
                    match self.pieces.get(i) {
                        Some(p) => x = p.addr.max(x + self.ps),
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
