//! Signals and timers of a frozen task (FORMAT.md §17, §18): pending signals with their
//! siginfo (`PTRACE_PEEKSIGINFO`), every disposition (`rt_sigaction`, injected), the
//! alternate stack (`sigaltstack`, injected), the interval timers (`getitimer`, injected) and
//! the POSIX timers (`/proc/PID/timers`, then `timer_gettime` and `timer_getoverrun`,
//! injected).

use super::ask::{Ask, Q};
use super::state::{Action, Fidelity};
use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::abi::{nr, SIG_IGN};
use crate::sys::taskstate::{self as ts, Itimerspec, Itimerval};
use cr_format::raw;
use zerocopy::FromZeros;

/// `SI_TIMER`: the si_code of a POSIX timer's signal.
const SI_TIMER: i32 = -2;

/// The signals no `rt_sigaction` may change.
fn fixed(sig: u64) -> bool {
    sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64
}

/// The pending signals of `pid` (its own queue, then the shared one), read before anything is
/// injected (an injected call may let an unblocked one be delivered).
pub(super) fn pending(pid: i32) -> Result<Vec<raw::PendingSignal>> {
    let mut out = Vec::new();
    for (shared, queue) in [(false, raw::QUEUE_THREAD), (true, raw::QUEUE_SHARED)] {
        let infos = ts::peek_siginfo(pid, shared)
            .map_err(|e| Error::io(format!("PTRACE_PEEKSIGINFO of pid {pid}"), e))?;
        out.extend(infos.into_iter().map(|siginfo| raw::PendingSignal {
            queue: queue.into(),
            _reserved0: 0.into(),
            siginfo,
        }));
    }
    Ok(out)
}

/// Every disposition and the alternate stack, queued. `handled` is the set of signals with a
/// handler or ignored (`SigCgt | SigIgn` of `/proc/PID/status`, bit n-1 for signal n): only
/// those, and SIGCHLD, are asked, one injected `rt_sigaction` each (about 20 µs apiece on an
/// idle machine when asked one by one, several times that on a loaded one; asking all 62
/// added 1.2 to 25 ms of downtime to a `sleep`). Every other signal has `SIG_DFL`, recorded
/// with no flags, mask or restorer: a default action runs no handler, so those change
/// nothing but what `sigaction(sig, NULL, &old)` would show; SIGCHLD is asked anyway because
/// its `SA_NOCLDSTOP` and `SA_NOCLDWAIT` act even with `SIG_DFL`. [`dispositions`] reads the
/// answers.
pub(super) fn ask_dispositions(ask: &mut Ask, handled: u64) -> Result<(Vec<(u64, Q)>, Q)> {
    let size = std::mem::size_of::<u64>() as u64;
    let asked = |sig: u64| handled & (1 << (sig - 1)) != 0 || sig == libc::SIGCHLD as u64;
    let mut qs = Vec::new();
    for sig in (1..=64u64).filter(|&s| !fixed(s) && asked(s)) {
        qs.push((
            sig,
            ask.queue(nr::RT_SIGACTION, |at| [sig, 0, at, size, 0, 0])?,
        ));
    }
    let alt = ask.queue(nr::SIGALTSTACK, |at| [0, at, 0, 0, 0, 0])?;
    Ok((qs, alt))
}

/// The answers to [`ask_dispositions`].
pub(super) fn dispositions(ask: &Ask, (qs, alt): (Vec<(u64, Q)>, Q)) -> Result<raw::Signals> {
    let mut s = raw::Signals::new_zeroed();
    for (sig, q) in qs {
        ask.result_ok("rt_sigaction", q)?;
        let a: raw::SigAction = ask.answer(q)?;
        if let Some(d) = usize::try_from(sig - 1)
            .ok()
            .and_then(|i| s.actions.get_mut(i))
        {
            *d = a;
        }
    }
    ask.result_ok("sigaltstack", alt)?;
    let ss: [u64; 3] = ask.answer(alt)?;
    // `stack_t`: ss_sp, ss_flags (and padding), ss_size.
    let [sp, flags, size] = ss;
    s.altstack_sp = sp.into();
    s.altstack_flags = (flags as u32).into();
    s.altstack_size = size.into();
    Ok(s)
}

/// What the fidelity report says of the signals.
pub(super) fn signals_fidelity(s: &raw::Signals, pending: &[raw::PendingSignal]) -> Vec<Fidelity> {
    let handlers = s
        .actions
        .iter()
        .filter(|a| a.handler.get() > SIG_IGN)
        .count();
    let mut f = vec![Fidelity {
        item: "signal handlers".into(),
        kind: format!("{handlers} handler(s), every disposition and the alternate stack"),
        action: Action::Restore,
        note: String::new(),
    }];
    if !pending.is_empty() {
        f.push(Fidelity {
            item: "pending signals".into(),
            kind: format!("{} queued, with their siginfo", pending.len()),
            action: Action::Restore,
            note: String::new(),
        });
    }
    // si_code is the third int of a siginfo.
    let timer = pending
        .iter()
        .filter(|p| p.siginfo.get(8..12) == Some(&SI_TIMER.to_le_bytes()[..]))
        .count();
    if timer > 0 {
        f.push(Fidelity {
            item: "pending POSIX-timer signals".into(),
            kind: format!("{timer} queued by a timer"),
            action: Action::Partial,
            note: "queued again as plain copies: if the timer expires again before one is \
                   handled, both are delivered instead of one with an overrun"
                .into(),
        });
    }
    f
}

fn ns_of(tv: [i64; 2], unit_ns: i64) -> u64 {
    let [s, sub] = tv;
    u64::try_from(
        s.saturating_mul(1_000_000_000)
            .saturating_add(sub.saturating_mul(unit_ns)),
    )
    .unwrap_or(0)
}

/// One POSIX timer as `/proc/PID/timers` shows it.
fn parse_timers(text: &str) -> Result<Vec<raw::PosixTimer>> {
    let bad = |l: &str| Error::Proc(format!("/proc/PID/timers: cannot parse {l:?}"));
    let mut out: Vec<raw::PosixTimer> = Vec::new();
    for line in text.lines() {
        let (k, v) = line.split_once(':').ok_or_else(|| bad(line))?;
        let v = v.trim();
        if k == "ID" {
            let mut t = raw::PosixTimer::new_zeroed();
            t.id = v.parse::<u32>().map_err(|_| bad(line))?.into();
            out.push(t);
            continue;
        }
        let t = out.last_mut().ok_or_else(|| bad(line))?;
        match k {
            "signal" => {
                let (sig, val) = v.split_once('/').ok_or_else(|| bad(line))?;
                t.sigev_signo = sig.parse::<u32>().map_err(|_| bad(line))?.into();
                t.sigev_value = u64::from_str_radix(val, 16).map_err(|_| bad(line))?.into();
            }
            "notify" => {
                // `signal/pid.N`, `none/pid.N`, `thread/tid.N`...
                let (how, who) = v.split_once('/').ok_or_else(|| bad(line))?;
                let base = match how {
                    "signal" => libc::SIGEV_SIGNAL,
                    "none" => libc::SIGEV_NONE,
                    "thread" => libc::SIGEV_THREAD,
                    _ => return Err(bad(line)),
                } as u32;
                let (kind, n) = who.split_once('.').ok_or_else(|| bad(line))?;
                let n: u32 = n.parse().map_err(|_| bad(line))?;
                let tid = kind == "tid";
                t.sigev_notify = (base | if tid { ts::SIGEV_THREAD_ID } else { 0 }).into();
                t.notify_tid = if tid { n } else { 0 }.into();
            }
            "ClockID" => t.clock = v.parse::<u32>().map_err(|_| bad(line))?.into(),
            _ => {}
        }
    }
    Ok(out)
}

/// The questions of [`timers`]: the interval timers, and the POSIX timers (from
/// `/proc/PID/timers`) each with its value and overrun.
pub(super) struct TimerQs {
    itimers: [Q; 3],
    posix: Vec<(raw::PosixTimer, Q, Q)>,
}

/// Queues the questions of [`timers`].
pub(super) fn ask_timers(pid: i32, ask: &mut Ask) -> Result<TimerQs> {
    let mut it = Vec::with_capacity(3);
    for which in 0..3u64 {
        it.push(ask.queue(ts::nr::GETITIMER, |at| [which, at, 0, 0, 0, 0])?);
    }
    let itimers: [Q; 3] = it
        .try_into()
        .map_err(|_| Error::Other("internal: three interval timers".into()))?;
    let text = String::from_utf8_lossy(&procfs::read(pid, "timers")?).into_owned();
    let mut list = parse_timers(&text)?;
    list.sort_by_key(|p| p.id.get());
    let mut posix = Vec::with_capacity(list.len());
    for p in list {
        let id = u64::from(p.id.get());
        let value = ask.queue(ts::nr::TIMER_GETTIME, |at| [id, at, 0, 0, 0, 0])?;
        let overrun = ask.queue(ts::nr::TIMER_GETOVERRUN, |_| [id, 0, 0, 0, 0, 0])?;
        posix.push((p, value, overrun));
    }
    Ok(TimerQs { itimers, posix })
}

/// The interval timers and the POSIX timers, with their report lines: the answers to
/// [`ask_timers`].
pub(super) fn timers(
    ask: &Ask,
    qs: TimerQs,
) -> Result<(raw::Timers, Vec<raw::PosixTimer>, Vec<Fidelity>)> {
    let mut t = raw::Timers::new_zeroed();
    for (it, q) in t.itimers.iter_mut().zip(qs.itimers) {
        ask.result_ok("getitimer", q)?;
        let v: Itimerval = ask.answer(q)?;
        it.interval_ns = ns_of(v.interval, 1000).into();
        it.value_ns = ns_of(v.value, 1000).into();
    }
    let mut fid = Vec::new();
    let armed = t.itimers.iter().filter(|i| i.value_ns.get() != 0).count();
    if armed > 0 {
        fid.push(Fidelity {
            item: "interval timers".into(),
            kind: format!("{armed} armed (setitimer/alarm)"),
            action: Action::Restore,
            note: "time to the next expiry resumes at restore (time not running does not count)"
                .into(),
        });
    }
    let mut posix = Vec::with_capacity(qs.posix.len());
    for (mut p, value, overrun) in qs.posix {
        let id = u64::from(p.id.get());
        ask.result_ok("timer_gettime", value)?;
        let v: Itimerspec = ask.answer(value)?;
        p.interval_ns = ns_of(v.interval, 1).into();
        p.value_ns = ns_of(v.value, 1).into();
        let o = ask.result_ok("timer_getoverrun", overrun)?;
        p.overrun = u32::try_from(o).unwrap_or(u32::MAX).into();
        let (action, note) = if o == 0 {
            (Action::Restore, String::new())
        } else {
            (
                Action::Partial,
                format!("{o} overrun(s) not yet read are lost (no call sets them)"),
            )
        };
        fid.push(Fidelity {
            item: format!("POSIX timer {id}"),
            kind: format!("clock {}, signal {}", p.clock.get(), p.sigev_signo.get()),
            action,
            note,
        });
        posix.push(p);
    }
    Ok((t, posix, fid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_text() {
        let t = "ID: 0\nsignal: 14/00000000deadbeef\nnotify: signal/pid.77\nClockID: 1\n\
                 ID: 3\nsignal: 10/0000000000000000\nnotify: signal/tid.78\nClockID: 0\n";
        let v = parse_timers(t).expect("parse");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].sigev_value.get(), 0xdead_beef);
        assert_eq!(v[0].sigev_signo.get(), 14);
        assert_eq!(v[0].clock.get(), 1);
        assert_eq!(v[1].id.get(), 3);
        assert_eq!(v[1].sigev_notify.get(), 4);
        assert_eq!(v[1].notify_tid.get(), 78);
        assert!(parse_timers("signal: 1/0\n").is_err());
    }
}
