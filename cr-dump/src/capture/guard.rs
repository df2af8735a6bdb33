//! The guard's side: `cr-dump __guard`, spawned by [`crate::sys::guard::start`] at the start of
//! a checkpoint that may inject. It reads what cr-dump tells it ([`crate::sys::guard::Msg`])
//! until end-of-file, then repairs what cr-dump left pending, which after a clean end is
//! nothing. Pending, when cr-dump died (SIGKILL, the OOM killer):
//!
//! - **An injected system call** (a [`Msg::Start`] without its [`Msg::Settled`]). The call is
//!   injected at a stub, `syscall` then `jmp .` ([`crate::sys::inject::STUB`]), so a task
//!   freed by its dying tracer runs at most the injected call and then spins on the `jmp`, in
//!   user mode, touching nothing. The guard seizes it as soon as cr-dump's ptrace link is gone, and if it finds it
//!   at the stub (before or after its `syscall`) writes the task's own registers back. The
//!   guard's stop is a `PTRACE_INTERRUPT` stop, inside the kernel's signal path: on the way out
//!   a system call the task was stopped in is restarted from those registers, as after any
//!   stop. Anywhere else the task already has its own registers, and they are left alone.
//! - **A twin**: a `clone` injected into the task whose result is a child (from
//!   [`Msg::Result`], or from the task's `rax` at the stub if cr-dump died before telling),
//!   with no `wait4` since that reaped it (a twin freed before `PTRACE_O_EXITKILL` dies on
//!   the stub's `hlt`). It is killed if it is alive (it is the task's child
//!   with exit signal 0, else it is not touched) and, once a zombie, reaped by a `wait4(twin,
//!   ..., __WALL | WNOHANG)` injected into the task: only that pid, never another child.
//! - **The stub** in the task's vDSO padding: the padding's bytes are written back.
//! - **A raised nice value** ([`Msg::Boost`], for the stop: `capture::freeze`): set back.
//!
//! Then the task is detached and the guard exits. Its own injections are not guarded: a
//! SIGKILL of the guard while it repairs (or of the guard at any time) is not covered.

use super::freeze::{self, Frozen};
use super::options::After;
use super::twin;
use crate::error::{Error, Result};
use crate::sys::abi::nr;
use crate::sys::guard::{self, Msg, Words};
use crate::sys::inject::{Injector, Signals};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// How long the guard waits for a dying cr-dump's ptrace link to go: the kernel drops it at
/// the very end of cr-dump's exit, after its files are closed, and the last close of a large
/// unlinked image can wait seconds for writeback on a busy disk.
const SEIZE_WAIT: Duration = Duration::from_secs(30);

/// An injection that began.
#[derive(Clone, Debug)]
struct Inflight {
    nr: u64,
    arg0: u64,
    at: u64,
    span: u64,
    regs: Words,
    /// Its result, once told.
    result: Option<i64>,
}

/// What is pending in one task.
#[derive(Clone, Debug, Default)]
struct Pending {
    inflight: Option<Inflight>,
    /// The stub's address, length and the bytes it replaced.
    patch: Option<(u64, u8, [u8; 16])>,
    /// The task's own nice value, raised for its stop.
    boost: Option<i32>,
}

/// Everything pending, from the messages read so far.
#[derive(Debug, Default)]
struct Watch {
    tasks: BTreeMap<i32, Pending>,
    /// (task, twin): twins made and not known to be reaped.
    twins: Vec<(i32, i32)>,
}

impl Watch {
    fn apply(&mut self, m: Msg) {
        match m {
            Msg::Start {
                pid,
                nr,
                arg0,
                at,
                span,
                regs,
            } => {
                self.tasks.entry(pid).or_default().inflight = Some(Inflight {
                    nr,
                    arg0,
                    at,
                    span,
                    regs: *regs,
                    result: None,
                });
            }
            Msg::Result { pid, value } => {
                let Some(p) = self.tasks.get_mut(&pid) else {
                    return;
                };
                let Some(inf) = p.inflight.as_mut() else {
                    return;
                };
                inf.result = Some(value);
                let inf = inf.clone();
                self.result(pid, &inf, value);
            }
            Msg::Settled { pid } => {
                if let Some(p) = self.tasks.get_mut(&pid) {
                    p.inflight = None;
                }
            }
            Msg::Patch {
                pid,
                addr,
                len,
                orig,
            } => self.tasks.entry(pid).or_default().patch = Some((addr, len, orig)),
            Msg::Unpatch { pid } => {
                if let Some(p) = self.tasks.get_mut(&pid) {
                    p.patch = None;
                }
            }
            Msg::Boost { pid, old } => self.tasks.entry(pid).or_default().boost = Some(old),
            Msg::Unboost { pid } => {
                if let Some(p) = self.tasks.get_mut(&pid) {
                    p.boost = None;
                }
            }
        }
    }

    /// Notes what the result of an injected call means: a twin made, or reaped.
    fn result(&mut self, pid: i32, inf: &Inflight, value: i64) {
        if inf.nr == nr::CLONE {
            if let Ok(twin) = i32::try_from(value) {
                if twin > 0 && !self.twins.contains(&(pid, twin)) {
                    self.twins.push((pid, twin));
                }
            }
        } else if inf.nr == nr::WAIT4 {
            let reaped = value == inf.arg0 as i64 || value == -i64::from(libc::ECHILD);
            if reaped {
                self.twins
                    .retain(|&(t, w)| !(t == pid && i64::from(w) == inf.arg0 as i64));
            }
        }
    }

    /// The tasks with something to repair (twins excluded: they are killed, not repaired).
    fn to_repair(&self) -> Vec<i32> {
        let is_twin = |p: i32| self.twins.iter().any(|&(_, w)| w == p);
        let mut v: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(pid, p)| {
                (p.inflight.is_some() || p.patch.is_some() || p.boost.is_some()) && !is_twin(**pid)
            })
            .map(|(pid, _)| *pid)
            .collect();
        v.extend(self.twins.iter().map(|&(t, _)| t));
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The guard's main: reads cr-dump's messages until end-of-file, repairs what is pending,
/// prints what it did on standard error; its exit status (1 if a repair failed).
pub fn run() -> u8 {
    guard::become_guard();
    let mut w = Watch::default();
    let mut input = std::io::stdin().lock();
    while let Some(m) = guard::next(&mut input) {
        w.apply(m);
    }
    let mut failed = false;
    for pid in w.to_repair() {
        match repair(&mut w, pid) {
            Ok(notes) => {
                for n in notes {
                    eprintln!("cr-dump guard: pid {pid}: {n}");
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("cr-dump guard: pid {pid} could not be repaired: {e}");
            }
        }
    }
    u8::from(failed)
}

/// Seizes `pid` once its dying tracer has let it go.
fn seize_when_free(pid: i32) -> Result<Option<Frozen>> {
    let t0 = Instant::now();
    loop {
        match freeze::freeze_quiet(pid) {
            Ok(f) => return Ok(Some(f)),
            Err(_) if freeze::is_gone(pid) => return Ok(None),
            Err(e) if t0.elapsed() > SEIZE_WAIT => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

/// Repairs task `pid`: its registers if it was left at the stub, the stub, its twins.
fn repair(w: &mut Watch, pid: i32) -> Result<Vec<String>> {
    let Some(fr) = seize_when_free(pid)? else {
        return Ok(vec![]); // gone: init reaps its children
    };
    let mut notes = Vec::new();
    let p = w.tasks.get(&pid).cloned().unwrap_or_default();
    let t = fr.tracee();
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} of pid {pid}"), e);
    let mut result = None;
    if let Some(inf) = &p.inflight {
        result = inf.result;
        let now = t.regs().map_err(|e| io("PTRACE_GETREGS", e))?;
        if (inf.at..=inf.at.saturating_add(inf.span)).contains(&now.rip) {
            if now.rip != inf.at {
                // The call ran: a clone's child is the twin to reap.
                result = Some(now.rax as i64);
                w.result(pid, inf, now.rax as i64);
            }
            t.set_regs(&guard::words_to_regs(&inf.regs))
                .map_err(|e| io("PTRACE_SETREGS", e))?;
            notes.push(format!(
                "cr-dump died during injected system call {}: the task's registers are back",
                inf.nr
            ));
        }
    }
    if let Some((addr, len, orig)) = p.patch {
        // Past its 16th byte a patch covered zeros (padding).
        let mut bytes = vec![0u8; usize::from(len)];
        for (d, s) in bytes.iter_mut().zip(orig) {
            *d = s;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(crate::procfs::path(pid, "mem"))
            .and_then(|m| m.write_all_at(&bytes, addr))
            .map_err(|e| io(&format!("restoring the vDSO bytes at {addr:#x}"), e))?;
    }
    if let Some(old) = p.boost {
        crate::sys::set_nice(pid, old).map_err(|e| io("setpriority", e))?;
        notes.push(format!("its nice value is back to {old}"));
    }
    if let (Some(inf), Some(fd)) = (&p.inflight, result) {
        if inf.nr == nr::USERFAULTFD && fd >= 0 {
            notes.push(close_uffd(&fr, fd)?);
        }
    }
    let twins: Vec<i32> = w
        .twins
        .iter()
        .filter(|&&(task, _)| task == pid)
        .map(|&(_, g)| g)
        .collect();
    for g in twins {
        match twin::reap_orphan(pid, g)? {
            true => notes.push(format!("reaped the twin {g} that cr-dump left")),
            false => notes.push(format!("{g} is no longer its twin: left alone")),
        }
    }
    fr.release(After::Continue)?;
    Ok(notes)
}

/// Closes descriptor `fd` of the frozen task if it is a userfaultfd: one that an injected
/// `userfaultfd()` made for a tracking that cr-dump never recorded.
fn close_uffd(fr: &Frozen, fd: i64) -> Result<String> {
    let pid = fr.pid();
    let link = std::fs::read_link(crate::procfs::path(pid, &format!("fd/{fd}")));
    if !link.is_ok_and(|l| l.as_os_str() == "anon_inode:[userfaultfd]") {
        return Ok(format!(
            "descriptor {fd} is no longer a userfaultfd: left alone"
        ));
    }
    let inj = Injector::new(fr.tracee(), Signals::Resend)?;
    let r = inj.call(nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0])?;
    if r != 0 {
        return Err(Error::Other(format!(
            "close({fd}) of the unrecorded userfaultfd in pid {pid} returned {r}"
        )));
    }
    Ok(format!(
        "closed the userfaultfd {fd} that cr-dump made and never recorded"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(pid: i32, nr: u64, arg0: u64) -> Msg {
        Msg::Start {
            pid,
            nr,
            arg0,
            at: 0x1000,
            span: 13,
            regs: Box::new([0; 27]),
        }
    }

    #[test]
    fn a_clean_run_leaves_nothing_to_repair() {
        let mut w = Watch::default();
        for m in [
            Msg::Patch {
                pid: 5,
                addr: 0x1ff0,
                len: 14,
                orig: [0; 16],
            },
            start(5, nr::CLONE, 0),
            Msg::Result { pid: 5, value: 77 },
            Msg::Settled { pid: 5 },
            Msg::Unpatch { pid: 5 },
            start(77, nr::CLOSE_RANGE, 0),
            Msg::Result { pid: 77, value: 0 },
            Msg::Settled { pid: 77 },
        ] {
            w.apply(m);
        }
        assert_eq!(w.to_repair(), vec![5], "the twin 77 is pending");
        for m in [
            start(5, nr::WAIT4, 77),
            Msg::Result { pid: 5, value: 77 },
            Msg::Settled { pid: 5 },
        ] {
            w.apply(m);
        }
        assert!(w.to_repair().is_empty());
    }

    #[test]
    fn an_unsettled_injection_is_pending_and_only_its_twin_is_reaped() {
        let mut w = Watch::default();
        w.apply(start(5, nr::CLONE, 0));
        w.apply(Msg::Result { pid: 5, value: 77 });
        w.apply(start(5, nr::WAIT4, 78));
        w.apply(Msg::Result {
            pid: 5,
            value: -i64::from(libc::ECHILD),
        });
        assert_eq!(
            w.twins,
            vec![(5, 77)],
            "a wait4 for another pid reaps nothing"
        );
        assert_eq!(w.to_repair(), vec![5]);
    }
}
