//! Step 9, signals and timers: every disposition, the alternate stack, the interval and POSIX
//! timers, and the pending signals queued again with their siginfo.
//!
//! While step 9 runs every signal is blocked (the child is single-stepped, and a signal
//! delivered then would be lost); the pending signals are queued by the last injected calls,
//! and the image's blocked mask is set with `PTRACE_SETSIGMASK` after them, so a pending
//! signal the image does not block is delivered when the task runs, with its siginfo.
//!
//! Pending signals are queued by `rt_tgsigqueueinfo` (the thread's queue) or `rt_sigqueueinfo`
//! (the shared one) injected into the task itself: the kernel refuses a siginfo with
//! `si_code >= 0` (`SI_USER`, or what the kernel itself generates: `SIGCHLD`'s `CLD_*`,
//! `SIGSEGV`'s `SEGV_*`) or `SI_TKILL` only when it is sent to another process, so sent to
//! itself every recorded siginfo is queued as it was (sender pid and uid included).

use super::child::Child;
use super::plan::Plan;
use crate::error::Result;
use crate::sys::abi::{self, nr, KernelSigaction, StackT};
use crate::sys::taskstate::{self as ts, pr, Itimerspec, Itimerval, Sigevent};
use cr_format::raw;

/// Signals KILL and STOP, whose disposition cannot be changed.
fn fixed(sig: u64) -> bool {
    sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64
}

const SIGSET: u64 = std::mem::size_of::<u64>() as u64;

/// Every disposition (1.0 images: ignored signals `SIG_IGN`, the others `SIG_DFL`), then
/// every signal blocked until [`finish`].
pub(super) fn actions(c: &Child, plan: &Plan) -> Result<()> {
    let scratch = plan.scratch;
    let sigs = plan.state.signals.as_ref();
    let ignored = plan.task.sig_ignored.get();
    for sig in (1..=64u64).filter(|&s| !fixed(s)) {
        let i = usize::try_from(sig - 1).unwrap_or(0);
        let act = match sigs.and_then(|(s, _)| s.actions.get(i)) {
            Some(a) => KernelSigaction {
                handler: a.handler.get(),
                flags: a.flags.get(),
                restorer: a.restorer.get(),
                mask: a.mask.get(),
            },
            None if ignored & (1 << (sig - 1)) != 0 => KernelSigaction {
                handler: abi::SIG_IGN,
                ..KernelSigaction::default()
            },
            None => KernelSigaction::default(),
        };
        c.write_struct(scratch, &act)?;
        let args = [sig, scratch, 0, SIGSET, 0, 0];
        c.call_ok(&format!("rt_sigaction({sig})"), nr::RT_SIGACTION, args)?;
    }
    c.write_struct(scratch, &u64::MAX)?;
    let args = [libc::SIG_SETMASK as u64, scratch, 0, SIGSET, 0, 0];
    c.call_ok("rt_sigprocmask (block all)", nr::RT_SIGPROCMASK, args)?;
    let ss = match sigs {
        Some((s, _)) if s.altstack_flags.get() & abi::SS_DISABLE as u32 == 0 => StackT {
            sp: s.altstack_sp.get(),
            // SS_ONSTACK is a state, not a setting.
            flags: (s.altstack_flags.get() & !(libc::SS_ONSTACK as u32)) as i32,
            _pad: 0,
            size: s.altstack_size.get(),
        },
        _ => StackT {
            flags: abi::SS_DISABLE,
            ..StackT::default()
        },
    };
    c.write_struct(scratch, &ss)?;
    c.call_ok("sigaltstack", nr::SIGALTSTACK, [scratch, 0, 0, 0, 0, 0])?;
    Ok(())
}

fn timeval(ns: u64, unit: u64) -> [i64; 2] {
    let s = i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX);
    [s, ((ns % 1_000_000_000) / unit) as i64]
}

/// The interval timers and the POSIX timers, each with the time that was left to its next
/// expiry (time not running does not count). POSIX timers get their ids back through
/// `PR_TIMER_CREATE_RESTORE_IDS` (Linux 6.15).
pub(super) fn timers(c: &Child, plan: &Plan) -> Result<()> {
    let Some((t, posix)) = plan.state.timers.as_ref() else {
        return Ok(());
    };
    let scratch = plan.scratch;
    for (which, it) in t.itimers.iter().enumerate() {
        if it.value_ns.get() == 0 {
            continue;
        }
        let v = Itimerval {
            interval: timeval(it.interval_ns.get(), 1000),
            // A value that rounds to 0 µs would disarm it.
            value: timeval(it.value_ns.get().max(1000), 1000),
        };
        c.write_struct(scratch, &v)?;
        let args = [which as u64, scratch, 0, 0, 0, 0];
        c.call_ok("setitimer", ts::nr::SETITIMER, args)?;
    }
    if posix.is_empty() {
        return Ok(());
    }
    let what =
        "prctl(PR_TIMER_CREATE_RESTORE_IDS) (needs Linux 6.15 to give POSIX timers their ids back)";
    let on = [
        pr::TIMER_CREATE_RESTORE_IDS,
        pr::TIMER_CREATE_RESTORE_IDS_ON,
        0,
        0,
        0,
        0,
    ];
    c.call_ok(what, nr::PRCTL, on)?;
    for p in posix {
        posix_timer(c, scratch, p)?;
    }
    let off = [
        pr::TIMER_CREATE_RESTORE_IDS,
        pr::TIMER_CREATE_RESTORE_IDS_OFF,
        0,
        0,
        0,
        0,
    ];
    c.call_ok(what, nr::PRCTL, off)?;
    Ok(())
}

fn posix_timer(c: &Child, scratch: u64, p: &raw::PosixTimer) -> Result<()> {
    let id = p.id.get();
    let notify = p.sigev_notify.get();
    let mut sev = Sigevent {
        value: p.sigev_value.get(),
        signo: p.sigev_signo.get() as i32,
        notify: notify as i32,
        tid: [0; 12],
    };
    if notify & ts::SIGEV_THREAD_ID != 0 {
        // Single-threaded: the thread it named is the task, which has a new id.
        sev.tid[0] = c.pid();
    }
    let (sev_at, id_at) = (scratch, scratch + 128);
    c.write_struct(sev_at, &sev)?;
    c.write_struct(id_at, &id)?;
    // In PR_TIMER_CREATE_RESTORE_IDS mode the kernel creates the id `id_at` holds, or fails.
    let args = [p.clock.get().into(), sev_at, id_at, 0, 0, 0];
    c.call_ok(
        &format!("timer_create (id {id})"),
        ts::nr::TIMER_CREATE,
        args,
    )?;
    if p.value_ns.get() != 0 {
        let its = Itimerspec {
            interval: timeval(p.interval_ns.get(), 1),
            value: timeval(p.value_ns.get(), 1),
        };
        c.write_struct(sev_at, &its)?;
        let args = [id.into(), 0, sev_at, 0, 0, 0];
        c.call_ok(
            &format!("timer_settime (id {id})"),
            ts::nr::TIMER_SETTIME,
            args,
        )?;
    }
    Ok(())
}

/// Queues the pending signals again (the last injected calls of step 9 but the scratch's
/// `munmap`).
pub(super) fn queue_pending(c: &Child, plan: &Plan) -> Result<()> {
    let Some((_, pending)) = plan.state.signals.as_ref() else {
        return Ok(());
    };
    let pid = u64::try_from(c.pid()).unwrap_or(0);
    for p in pending {
        let mut signo = [0u8; 4];
        signo.copy_from_slice(&p.siginfo[..4]);
        let signo = u64::from(u32::from_le_bytes(signo));
        c.write(plan.scratch, &p.siginfo)?;
        let (what, args) = if p.queue.get() == raw::QUEUE_SHARED {
            let a = [pid, signo, plan.scratch, 0, 0, 0];
            ("rt_sigqueueinfo", (ts::nr::RT_SIGQUEUEINFO, a))
        } else {
            let a = [pid, pid, signo, plan.scratch, 0, 0];
            ("rt_tgsigqueueinfo", (ts::nr::RT_TGSIGQUEUEINFO, a))
        };
        c.call_ok(&format!("{what} (signal {signo})"), args.0, args.1)?;
    }
    Ok(())
}

/// The image's blocked mask, set from outside (`PTRACE_SETSIGMASK`) once nothing more is
/// injected: a pending signal it does not block is delivered when the task runs.
pub(super) fn finish(c: &Child, plan: &Plan) -> Result<()> {
    ts::set_sigmask(c.pid(), plan.task.sig_blocked.get()).map_err(|e| c.io("PTRACE_SETSIGMASK", e))
}
