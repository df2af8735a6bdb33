//! The one way cr-dump runs a system call inside another task: capture's twin (`clone`,
//! `wait4`, `close_range`), dirty tracking (`userfaultfd`) and restore (every call that builds
//! the restored task) all go through [`Injector::call`].
//!
//! # How a system call is injected
//!
//! The task is stopped under our ptrace. [`Injector::call`]:
//!
//! 1. saves the task's general registers (`PTRACE_GETREGS`);
//! 2. sets `rip` to a `syscall` instruction of the task's vDSO (found once, by
//!    [`Injector::new`]), `rax` to the call's number, `rdi, rsi, rdx, r10, r8, r9` to its
//!    arguments, and `orig_rax` to -1: "not in a system call", so that the kernel applies no
//!    restart logic to these registers on the way back to user mode;
//! 3. runs it: for a live task (seized, [`Signals::Resend`]) with `PTRACE_SYSCALL` to the
//!    system-call entry stop, then to the exit stop, with `rip` just past the instruction;
//!    for a fresh `PTRACE_TRACEME` child of the restore ([`Signals::Drop`]), which
//!    `PTRACE_INTERRUPT` cannot stop, by single-stepping (`PTRACE_SINGLESTEP`). Other stops on
//!    the way are signals that arrived meanwhile (kept and sent again afterwards for a live
//!    task; dropped for a fresh child that nothing else knows) or ptrace events (a `clone`
//!    with `PTRACE_O_TRACECLONE`): stepped over;
//! 4. reads the result from `rax` (a negative errno on failure);
//! 5. writes the saved registers back, on every path: success, error, unexpected stop (if the
//!    task died, there is nothing left to restore); a live task is then brought back to an
//!    interrupt stop (see below).
//!
//! **A task stopped inside a system call** (a `read`, a `nanosleep`) shows `rax` =
//! -ERESTARTSYS (or another -ERESTART*) and `orig_rax` = the call. The injected call runs with
//! `orig_rax` = -1, so it is not mistaken for a restart; the saved registers written back in
//! step 5 hold the task's own `rax` and `orig_rax` again, so when the task is resumed the
//! kernel restarts its call exactly as if nothing had been injected.
//!
//! **If cr-dump dies (SIGKILL) in the middle.** A dying tracer lets its tracees go
//! (`exit_ptrace` -> `__ptrace_detach` -> `__ptrace_unlink`) without what `PTRACE_DETACH` does
//! besides: it neither clears a single step's trap flag (`ptrace_disable` ->
//! `user_disable_single_step` is only on the `PTRACE_DETACH` path) nor resets the stop's code
//! (`exit_code`, which the woken task then acts on). After a single step that code is
//! `SIGTRAP`: the task dies of it (exit 133), which is why a live task is never stepped. A
//! system-call stop's code under `PTRACE_O_TRACESYSGOOD` (set by [`Injector::new`]) is
//! `SIGTRAP | 0x80`, not a valid signal, so the kernel drops it; an interrupt stop's code is
//! never delivered. So the task is harmed by a vanished tracer only between writing the
//! injection registers and writing its own back (4 to 6 ptrace requests, some tens of
//! microseconds per injection). Two things close that window:
//!
//! - **The stub.** A live task's calls are not injected at a `syscall` of the vDSO's own code
//!   (followed by its `ret`, which would return into the task's stack with the injection's
//!   registers) but at a stub, `syscall` then `jmp .` ([`STUB`]), written by
//!   [`Injector::new`] into the padding at the end of the task's vDSO (zeros after its code,
//!   which nothing calls) and taken out when the injector is dropped. A task freed at any
//!   point of the window runs at most the injected call and then spins on the `jmp`, in user
//!   mode: no instruction of its own runs with the injection's registers. A clone child
//!   (stack pointer near zero) takes a `hlt` instead and dies at once. (A vDSO with no such
//!   padding: the old way.) Without the guard (it was killed too) the task spins for good:
//!   stuck, not corrupted.
//! - **The guard** ([`crate::sys::guard`]): a process that outlives cr-dump. Before the
//!   injection registers are written it is told the task's own registers and the stub's
//!   address ([`guard::Msg::Start`]), then the result, then that they are back
//!   ([`guard::Msg::Settled`]). When cr-dump dies with an injection pending, the guard seizes
//!   the task, finds it at the stub, writes its registers back (and reaps a twin, closes an
//!   unrecorded userfaultfd: `crate::capture::guard`).
//!
//! Outside the window: before the injection
//! registers are written the task sits in an interrupt stop with its own registers; after its
//! own are written back, `PTRACE_INTERRUPT` has already marked a signal check pending
//! (`TIF_SIGPENDING`), so even freed from the exit stop the task goes through the kernel's
//! signal path, where a call it was stopped in is restarted from its registers as after any
//! stop; `PTRACE_CONT` then brings it to that interrupt stop. SIGINT, SIGTERM, SIGHUP and
//! SIGQUIT never hit the window: cr-dump only notes them and unwinds at a safe point
//! ([`crate::sys::catch_interrupts`]).

//! **Clone.** A twin made by an injected `clone` starts right after the `syscall` instruction
//! with the registers of step 2. [`Injector::call_clone`] needs the stub, or a `syscall`
//! followed by `ret` or `leave`, and zeroes the frame pointer (the caller passes a stack near
//! zero), so such a child, should it ever run, faults at once (the stub's `hlt`, or a `ret`
//! to nowhere) instead of running the task's code; the guard reaps it.

use super::guard::{self, Msg};
use super::procfs;
use super::ptrace::{Stop, Tracee, SYSCALL_STOP};
use crate::error::{Error, Result};
use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;

mod batch;
pub use batch::*;

/// What to do with a signal that reaches the task during an injected call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signals {
    /// Keep it and send it again after the call (a live task must not lose signals).
    Resend,
    /// Drop it (a fresh child that nothing else knows: none is expected).
    Drop,
}

/// Runs system calls inside one task stopped under our ptrace.
#[derive(Debug)]
pub struct Injector {
    tracee: Tracee,
    /// A `syscall` instruction (0f 05) in the task's vDSO.
    at: u64,
    /// Whether what follows it faults in a clone child: the stub, `ret` or `leave` (see
    /// [`Injector::call_clone`]).
    then_faults: bool,
    signals: Signals,
    /// An injection failed to put the task's own registers back.
    unsettled: Cell<bool>,
    /// The spin stub written into the task's vDSO, if one is (a live task only).
    stub: Option<Stub>,
}

/// The stub a live task's calls are injected at (see the module docs):
///
/// ```text
/// 0:  0f 05                 syscall
/// 2:  48 81 fc 00 10 00 00  cmp rsp, 0x1000
/// 9:  72 02                 jb 13         ; a clone child (its stack pointer near zero):
/// 11: eb fe                 jmp 11        ;   the task spins here,
/// 13: f4                    hlt           ;   the child faults here (SIGSEGV) and dies
/// ```
pub const STUB: [u8; 14] = [
    0x0f, 0x05, 0x48, 0x81, 0xfc, 0x00, 0x10, 0x00, 0x00, 0x72, 0x02, 0xeb, 0xfe, 0xf4,
];

/// The stub in the vDSO padding of one task: where, and the task's memory to write it back.
#[derive(Debug)]
struct Stub {
    addr: u64,
    mem: File,
    /// The patched bytes: from here to the end of the vDSO (the stub, and [`LIVE_BATCH_CODE`]
    /// before it if the padding had room).
    from: u64,
    len: usize,
    /// Where [`LIVE_BATCH_CODE`] is, if it was written.
    batch: Option<u64>,
}

/// Length of the `syscall` instruction.
const SYSCALL_LEN: u64 = 2;

impl Injector {
    /// An injector for `tracee` (stopped under our ptrace), at a `syscall` instruction of its
    /// vDSO (preferably one followed by `ret` or `leave`). For a live task
    /// ([`Signals::Resend`]) it sets the options to `PTRACE_O_TRACESYSGOOD` and injects at the
    /// stub, written into the vDSO's padding here (see the module docs); other options go
    /// through [`Injector::set_options`].
    pub fn new(tracee: Tracee, signals: Signals) -> Result<Injector> {
        let pid = tracee.pid();
        let vdso = read_vdso(pid)?;
        let (at, then_faults) = vdso_syscall(pid, &vdso)?;
        let mut inj = Injector {
            tracee,
            at,
            then_faults,
            signals,
            unsettled: Cell::new(false),
            stub: None,
        };
        if signals == Signals::Resend {
            inj.set_options(0)?;
            inj.stub = write_stub(pid, &vdso)?;
            if let Some(s) = &inj.stub {
                (inj.at, inj.then_faults) = (s.addr, true);
            }
        }
        Ok(inj)
    }

    /// Sets the task's ptrace options to `opts` plus `PTRACE_O_TRACESYSGOOD`, which a live
    /// task's injections need (see the module docs); options set directly on the tracee would
    /// drop it.
    pub fn set_options(&self, opts: i32) -> Result<()> {
        let pid = self.tracee.pid();
        self.tracee
            .set_options(opts | libc::PTRACE_O_TRACESYSGOOD)
            .map_err(|e| Error::io(format!("PTRACE_SETOPTIONS of pid {pid}"), e))
    }

    /// The task.
    pub fn tracee(&self) -> Tracee {
        self.tracee
    }

    /// The address of the `syscall` instruction used.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// How far past [`Injector::at`] the task can be while an injected call is pending: to
    /// the stub's end, or just past a plain `syscall`.
    fn span(&self) -> u64 {
        match self.stub {
            Some(_) => STUB.len() as u64 - 1,
            None => SYSCALL_LEN,
        }
    }

    /// Moves the instruction used to `at` (the caller moved the vDSO in the task).
    pub fn set_at(&mut self, at: u64) {
        self.at = at;
    }

    /// Runs system call `nr` with `args`; its result (a negative errno on failure). The task's
    /// registers are as before afterwards, whatever happens (see the module docs).
    pub fn call(&self, nr: u64, args: [u64; 6]) -> Result<i64> {
        self.run(nr, args, false)
    }

    /// [`Injector::call`] for a `clone` whose child must never run the task's code: refused
    /// unless what follows the `syscall` is the stub, `ret` or `leave`; the
    /// frame pointer is zeroed (the caller passes a stack near zero).
    pub fn call_clone(&self, nr: u64, args: [u64; 6]) -> Result<i64> {
        if !self.then_faults {
            return Err(Error::Other(format!(
                "no `syscall; ret` or `syscall; leave` in the vDSO of pid {}",
                self.tracee.pid()
            )));
        }
        self.run(nr, args, true)
    }

    fn err(&self, what: &str, nr: u64, e: std::io::Error) -> Error {
        let pid = self.tracee.pid();
        Error::io(
            format!("{what} (injecting system call {nr} into pid {pid})"),
            e,
        )
    }

    fn run(&self, nr: u64, args: [u64; 6], clone: bool) -> Result<i64> {
        let t = self.tracee;
        let saved = t.regs().map_err(|e| self.err("PTRACE_GETREGS", nr, e))?;
        // A live task: the guard learns what to put back before anything changes.
        let guarded = self.signals == Signals::Resend;
        let pid = t.pid();
        if guarded {
            guard::publish(&Msg::Start {
                pid,
                nr,
                arg0: args[0],
                at: self.at,
                span: self.span(),
                regs: Box::new(guard::regs_to_words(&saved)),
            });
        }
        let mut r = saved;
        r.rip = self.at;
        r.rax = nr;
        r.orig_rax = u64::MAX; // not in a system call: no restart logic for these registers
        [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9] = args;
        if clone {
            r.rbp = 0;
        }
        let mut pending = Vec::new();
        let res = t
            .set_regs(&r)
            .map_err(|e| self.err("PTRACE_SETREGS", nr, e))
            .and_then(|()| match self.signals {
                Signals::Resend => self.syscall_through(nr, &mut pending),
                Signals::Drop => self.step_through(nr, &mut pending),
            });
        if let (true, Ok(value)) = (guarded, &res) {
            guard::publish(&Msg::Result { pid, value: *value });
        }
        // Every path: the task's own registers back (it fails only if the task is gone).
        let back = match self.signals {
            Signals::Resend => self.settle(nr, &saved, &mut pending),
            Signals::Drop => t
                .set_regs(&saved)
                .map_err(|e| self.err("PTRACE_SETREGS (the task's own)", nr, e)),
        };
        match (&back, guarded) {
            (Ok(()), true) => guard::publish(&Msg::Settled { pid }),
            // Left at the stub: the stub stays for the guard to find the task there.
            (Err(_), _) => self.unsettled.set(true),
            (Ok(()), false) => {}
        }
        for s in pending {
            let _ = t.kill(s);
        }
        let v = res?;
        back?;
        Ok(v)
    }

    /// Runs the call with `PTRACE_SYSCALL` (entry stop, exit stop); its result. No trap flag.
    fn syscall_through(&self, nr: u64, pending: &mut Vec<i32>) -> Result<i64> {
        let t = self.tracee;
        let after = self.at + SYSCALL_LEN;
        let mut entered = false;
        loop {
            t.syscall(0)
                .map_err(|e| self.err("PTRACE_SYSCALL", nr, e))?;
            match t.wait().map_err(|e| self.err("waitpid", nr, e))? {
                Stop::Signal { signal } if signal == SYSCALL_STOP && !entered => entered = true,
                Stop::Signal { signal } if signal == SYSCALL_STOP => {
                    let now = t.regs().map_err(|e| self.err("PTRACE_GETREGS", nr, e))?;
                    if now.rip != after {
                        return Err(Error::Other(format!(
                            "injected system call {nr} in pid {} stopped at {:#x}, not {after:#x}",
                            t.pid(),
                            now.rip
                        )));
                    }
                    return Ok(now.rax as i64);
                }
                Stop::Signal { signal } => self.keep(pending, signal),
                Stop::Group { .. } | Stop::Event { .. } | Stop::Continued => {}
                Stop::Exited(c) => return Err(self.died(nr, format!("exited ({c})"))),
                Stop::Killed(s) => return Err(self.died(nr, format!("killed by signal {s}"))),
            }
        }
    }

    /// Puts the task's own registers back and brings it to an interrupt stop again, in the
    /// order that keeps a vanished tracer harmless from the moment they are back: first
    /// `PTRACE_INTERRUPT`, which marks a signal check pending (`TIF_SIGPENDING`), then the
    /// registers, then `PTRACE_CONT` to the interrupt stop. Freed at any point after the
    /// registers, the task goes through the kernel's signal path on its way out, where a call
    /// it was stopped in is restarted from those registers as after any stop.
    fn settle(
        &self,
        nr: u64,
        saved: &libc::user_regs_struct,
        pending: &mut Vec<i32>,
    ) -> Result<()> {
        let t = self.tracee;
        t.interrupt()
            .map_err(|e| self.err("PTRACE_INTERRUPT", nr, e))?;
        t.set_regs(saved)
            .map_err(|e| self.err("PTRACE_SETREGS (the task's own)", nr, e))?;
        loop {
            t.cont(0).map_err(|e| self.err("PTRACE_CONT", nr, e))?;
            match t.wait().map_err(|e| self.err("waitpid", nr, e))? {
                Stop::Group { .. } => return Ok(()),
                Stop::Signal { signal } if signal != SYSCALL_STOP => self.keep(pending, signal),
                Stop::Signal { .. } | Stop::Event { .. } | Stop::Continued => {}
                Stop::Exited(c) => return Err(self.died(nr, format!("exited ({c})"))),
                Stop::Killed(s) => return Err(self.died(nr, format!("killed by signal {s}"))),
            }
            // Stopped elsewhere on the way (a signal): ask for the interrupt stop again.
            t.interrupt()
                .map_err(|e| self.err("PTRACE_INTERRUPT", nr, e))?;
        }
    }

    /// Steps until the `syscall` instruction has run; its result (a `PTRACE_TRACEME` child,
    /// which `PTRACE_INTERRUPT` cannot stop; nothing else knows it, so a trap flag left by a
    /// vanished tracer harms no one).
    fn step_through(&self, nr: u64, pending: &mut Vec<i32>) -> Result<i64> {
        let t = self.tracee;
        let after = self.at + SYSCALL_LEN;
        loop {
            t.step().map_err(|e| self.err("PTRACE_SINGLESTEP", nr, e))?;
            match t.wait().map_err(|e| self.err("waitpid", nr, e))? {
                Stop::Signal { signal } if signal == libc::SIGTRAP => {
                    let now = t.regs().map_err(|e| self.err("PTRACE_GETREGS", nr, e))?;
                    if now.rip == after {
                        return Ok(now.rax as i64);
                    }
                    if now.rip != self.at {
                        return Err(Error::Other(format!(
                            "injected system call {nr} in pid {} stopped at {:#x}, not {after:#x}",
                            t.pid(),
                            now.rip
                        )));
                    }
                    // Not moved: a SIGTRAP sent to the task came before the step.
                    self.keep(pending, signal);
                }
                Stop::Signal { signal } => self.keep(pending, signal),
                Stop::Group { .. } | Stop::Event { .. } | Stop::Continued => {}
                Stop::Exited(c) => return Err(self.died(nr, format!("exited ({c})"))),
                Stop::Killed(s) => return Err(self.died(nr, format!("killed by signal {s}"))),
            }
        }
    }

    fn keep(&self, pending: &mut Vec<i32>, signal: i32) {
        if self.signals == Signals::Resend {
            pending.push(signal);
        }
    }

    fn died(&self, nr: u64, how: String) -> Error {
        Error::TargetExited {
            pid: self.tracee.pid(),
            how: format!("{how} during injected system call {nr}"),
        }
    }
}

impl Drop for Injector {
    /// Takes the stub out of the task's vDSO again (unless an injection left the task at it).
    fn drop(&mut self) {
        let Some(s) = self.stub.take() else {
            return;
        };
        if !self.unsettled.get() && s.mem.write_all_at(&vec![0u8; s.len], s.from).is_ok() {
            guard::publish(&Msg::Unpatch {
                pid: self.tracee.pid(),
            });
        }
    }
}

/// The task's vDSO: its start address and bytes.
struct Vdso {
    start: u64,
    bytes: Vec<u8>,
}

fn read_vdso(pid: i32) -> Result<Vdso> {
    let (start, end) = match vdso_by_query(pid) {
        Some(r) => r,
        None => {
            let maps = procfs::parse_maps(&String::from_utf8_lossy(&procfs::read(pid, "maps")?))?;
            let v = maps.iter().find(|m| m.path == "[vdso]").ok_or_else(|| {
                Error::Other(format!("pid {pid} has no vDSO to inject a system call"))
            })?;
            (v.start, v.end)
        }
    };
    let len = end
        .checked_sub(start)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::Other(format!("vDSO of pid {pid}: bad bounds")))?;
    let mem = File::open(procfs::path(pid, "mem")).map_err(|e| procfs::proc_err(pid, "mem", e))?;
    let mut bytes = vec![0u8; len];
    mem.read_exact_at(&mut bytes, start)
        .map_err(|e| Error::io(format!("reading the vDSO of pid {pid}"), e))?;
    Ok(Vdso { start, bytes })
}

/// The vDSO's range without reading all of `/proc/PID/maps` (whose cost grows with the number
/// of mappings, paid while the task is stopped): the VMA at the auxiliary vector's
/// `AT_SYSINFO_EHDR`, by one `PROCMAP_QUERY`, if the kernel names it `[vdso]` and it starts
/// there. `None` (then maps is read) otherwise: an older kernel, or a vDSO moved since exec.
fn vdso_by_query(pid: i32) -> Option<(u64, u64)> {
    const AT_SYSINFO_EHDR: u64 = 33;
    let auxv = procfs::parse_auxv(&procfs::read(pid, "auxv").ok()?);
    let ehdr = auxv.iter().find(|(k, _)| *k == AT_SYSINFO_EHDR)?.1;
    let maps = File::open(procfs::path(pid, "maps")).ok()?;
    let (r, name) = super::pagemap::procmap_query(&maps, ehdr).ok()??;
    (name == b"[vdso]" && r.start == ehdr).then_some((r.start, r.end))
}

/// Length of the vDSO's tail that must be padding (zeros) for the stub to go there.
const STUB_SLOT: usize = 32;

/// Room for [`LIVE_BATCH_CODE`] before the stub's slot.
const BATCH_SLOT: usize = 96;

/// Writes [`STUB`] into the padding at the end of the task's vDSO (its last 32 bytes, zeros:
/// code that nothing calls), and [`LIVE_BATCH_CODE`] into the 96 bytes before them if they are
/// padding too, telling the guard first; `None` (injections then use a `syscall` of the
/// vDSO's own code) if there is no such padding or the write is refused. Bytes that already
/// hold what would be written (a twin's copy, or what a killed cr-dump left) count as padding.
fn write_stub(pid: i32, vdso: &Vdso) -> Result<Option<Stub>> {
    let b = &vdso.bytes;
    let slot = |n: usize, code: &[u8]| {
        let tail = b.len().checked_sub(n).and_then(|i| b.get(i..))?;
        let mut want = vec![0u8; n];
        want.get_mut(..code.len())?.copy_from_slice(code);
        let free = tail.iter().zip(&want).all(|(&o, &w)| o == 0 || o == w);
        free.then_some(want)
    };
    let mut both = LIVE_BATCH_CODE.to_vec();
    both.resize(BATCH_SLOT, 0);
    both.extend_from_slice(&STUB);
    let (bytes, batch) = match slot(BATCH_SLOT + STUB_SLOT, &both) {
        Some(w) => (w, true),
        None => match slot(STUB_SLOT, &STUB) {
            Some(w) => (w, false),
            None => return Ok(None),
        },
    };
    let from = vdso.start + (b.len() - bytes.len()) as u64;
    let addr = vdso.start + (b.len() - STUB_SLOT) as u64;
    let Ok(mem) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(procfs::path(pid, "mem"))
    else {
        return Ok(None);
    };
    // The bytes were padding (zeros): the guard writes zeros back.
    guard::publish(&Msg::Patch {
        pid,
        addr: from,
        len: u8::try_from(bytes.len()).unwrap_or(u8::MAX),
        orig: [0; 16],
    });
    if mem.write_all_at(&bytes, from).is_err() {
        guard::publish(&Msg::Unpatch { pid });
        return Ok(None);
    }
    Ok(Some(Stub {
        addr,
        mem,
        from,
        len: bytes.len(),
        batch: batch.then_some(from),
    }))
}

/// Address of a `syscall` instruction (0f 05) in the task's vDSO, preferably one followed by
/// `ret` (c3) or `leave` (c9); whether it is.
fn vdso_syscall(pid: i32, vdso: &Vdso) -> Result<(u64, bool)> {
    let b = &vdso.bytes;
    let faulting = b
        .windows(3)
        .position(|w| w[..2] == [0x0f, 0x05] && matches!(w[2], 0xc3 | 0xc9));
    let (i, then_faults) = match faulting {
        Some(i) => (i, true),
        None => b
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
            .map(|i| (i, false))
            .ok_or_else(|| {
                Error::Other(format!("no syscall instruction in the vDSO of pid {pid}"))
            })?,
    };
    Ok((vdso.start + i as u64, then_faults))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::abi::nr;

    /// Kills and reaps the child at the end of the test, whatever happens.
    struct Reap(Tracee);

    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill(libc::SIGKILL);
            let _ = self.0.wait();
        }
    }

    /// A live batch runs in a seized task (a `sleep`): every call, each result in its entry
    /// (one taking an earlier one's as its first argument), one stop at the end; the task's
    /// registers are as before and it sleeps on once let go.
    #[test]
    fn runs_a_live_batch_in_a_seized_task() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let t = Tracee::seize(pid).expect("seize");
        t.interrupt().expect("interrupt");
        assert!(matches!(t.wait(), Ok(Stop::Group { .. })));
        let inj = Injector::new(t, Signals::Resend).expect("injector");
        assert!(inj.can_batch(), "no room for the batch code in the vDSO");
        let ps = crate::sys::page_size() as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let area = inj.call(nr::MMAP, [0, ps, rw, anon, u64::MAX, 0]);
        let area = area.expect("mmap") as u64;
        let call = |nr, args, first_from| LiveCall {
            nr,
            args,
            first_from,
        };
        let calls = [
            call(libc::SYS_getpid as u64, [0; 6], None),
            call(nr::MMAP, [0, ps, rw, anon, u64::MAX, 0], None),
            call(nr::MUNMAP, [0, ps, 0, 0, 0, 0], Some(1)),
            call(nr::MUNMAP, [1, ps, 0, 0, 0, 0], None),
        ];
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(procfs::path(pid, "mem"))
            .expect("mem");
        let table = live_table(&calls, area).expect("table");
        mem.write_all_at(&table, area).expect("write table");
        let before = t.regs().expect("regs");
        inj.call_live(area, calls.len(), libc::SIGURG)
            .expect("batch");
        let after = t.regs().expect("regs");
        assert_eq!((before.rip, before.rsp), (after.rip, after.rsp));
        let mut back = vec![0u8; table.len()];
        mem.read_exact_at(&mut back, area).expect("read table");
        let result = |i: usize| {
            let w = back.get(i * 64 + 56..i * 64 + 64).expect("entry");
            i64::from_le_bytes(w.try_into().expect("word"))
        };
        assert_eq!(result(0), i64::from(pid));
        assert!(result(1) > 0, "mmap gave {}", result(1));
        assert_eq!(result(2), 0, "munmap of what the mmap gave");
        assert_eq!(result(3), -i64::from(libc::EINVAL));
        let maps = String::from_utf8_lossy(&procfs::read(pid, "maps").expect("maps")).into_owned();
        assert!(!maps.contains(&format!("{:x}-", result(1))), "{maps}");
        drop(inj);
        t.detach(0).expect("detach");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let st = procfs::read(pid, "stat").expect("stat");
        let st = String::from_utf8_lossy(&st).into_owned();
        let state = st
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().as_bytes()[0]);
        assert_eq!(state, Some(b'S'), "{st}");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A batch runs in a real child: every call until the first that gives another result
    /// than expected, which it names; the task's registers are as before.
    #[test]
    fn runs_a_batch_in_a_child() {
        let pid = crate::sys::fork_traced_child(None, None).expect("fork");
        let t = Tracee::new(pid);
        let _reap = Reap(t);
        assert!(matches!(
            t.wait(),
            Ok(Stop::Signal {
                signal: libc::SIGSTOP
            })
        ));
        let inj = Injector::new(t, Signals::Drop).expect("injector");
        let ps = crate::sys::page_size() as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let area = inj.call(nr::MMAP, [0, 3 * ps, rw, anon, u64::MAX, 0]);
        let area = area.expect("mmap") as u64;
        let mem = std::fs::OpenOptions::new()
            .write(true)
            .open(procfs::path(pid, "mem"))
            .expect("mem");
        mem.write_all_at(&BATCH_CODE, area).expect("code");
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        let r = inj.call(nr::MPROTECT, [area, ps, rx, 0, 0, 0]);
        assert_eq!(r.ok(), Some(0));
        let call = |nr, args, expect| BatchCall { nr, args, expect };
        let fixed = anon | libc::MAP_FIXED as u64;
        let third = area + 2 * ps;
        let calls = [
            call(libc::SYS_getpid as u64, [0; 6], pid as u64),
            call(nr::MMAP, [third, ps, rw, fixed, u64::MAX, 0], third),
            call(
                nr::MPROTECT,
                [third, ps, libc::PROT_READ as u64, 0, 0, 0],
                0,
            ),
            // Unaligned: EINVAL stops the batch; the next call does not run.
            call(nr::MPROTECT, [area + 1, ps, 0, 0, 0, 0], 0),
            call(nr::MUNMAP, [third, ps, 0, 0, 0, 0], 0),
        ];
        let before = t.regs().expect("regs");
        mem.write_all_at(&batch_table(&calls), area + ps)
            .expect("table");
        let end = inj.call_batch(area, area + ps, calls.len());
        let after = t.regs().expect("regs");
        let want = BatchEnd {
            done: 3,
            failed: Some(-i64::from(libc::EINVAL)),
        };
        assert_eq!(end.ok(), Some(want));
        assert_eq!((before.rip, before.rsp), (after.rip, after.rsp));
        // The third page was mapped and made read-only, not unmapped.
        let maps = procfs::read(pid, "maps").expect("maps");
        let third = format!("{:x}-{:x} r--p", third, third + ps);
        assert!(String::from_utf8_lossy(&maps).contains(&third));
        // The whole table runs when nothing fails.
        let all = inj.call_batch(area, area + ps, 1);
        let all_done = BatchEnd {
            done: 1,
            failed: None,
        };
        assert_eq!(all.ok(), Some(all_done));
    }
}
