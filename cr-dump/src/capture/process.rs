//! Limits, groups, capabilities and per-process attributes of a frozen task (FORMAT.md §19),
//! and the entry point that reads signals, timers and these ([`capture`]).
//!
//! From cr-dump itself: the rlimits (`prlimit`), the robust futex list (`get_robust_list`),
//! rseq (`PTRACE_GET_RSEQ_CONFIGURATION`), the bounding and ambient sets, groups, no_new_privs
//! and seccomp mode (`/proc/PID/status`), and oom_score_adj (`/proc`).
//! Injected (no `/proc` file shows them): securebits, dumpable, timer slack, the parent-death signal, child
//! subreaper, THP_DISABLE and the clear-child-tid address; and `mlockall(MCL_FUTURE)`, found by
//! an injected `mmap` of one anonymous page ([`mlock_future`]).

use super::ask::{Ask, Q};
use super::signals;
use super::state::{Action, Fidelity, TaskState};
use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::abi::nr;
use crate::sys::taskstate::{self as ts, pr};
use crate::sys::Tracee;
use cr_format::{limits, raw};
use zerocopy::little_endian::U32;
use zerocopy::FromZeros;

/// A `Key:\tvalue` line of `/proc/PID/status`.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

fn hex_field(pid: i32, status: &str, key: &str) -> Result<u64> {
    let v = status_field(status, key)
        .ok_or_else(|| Error::Proc(format!("/proc/{pid}/status has no {key}")))?;
    u64::from_str_radix(v, 16).map_err(|_| Error::Proc(format!("/proc/{pid}/status: {key} {v:?}")))
}

fn proc_number(pid: i32, name: &str) -> Result<i64> {
    let b = procfs::read(pid, name)?;
    let s = String::from_utf8_lossy(&b);
    s.trim()
        .parse()
        .map_err(|_| Error::Proc(format!("/proc/{pid}/{name}: {:?}", s.trim())))
}

fn line(item: &str, kind: String, action: Action, note: &str) -> Fidelity {
    Fidelity {
        item: item.into(),
        kind,
        action,
        note: note.into(),
    }
}

/// Reads signals, timers, limits and attributes of the frozen task `pid` into `st`. A task
/// under seccomp is refused: its filters are not recorded, and the injected questions could
/// kill it.
pub(crate) fn capture(pid: i32, st: &mut TaskState) -> Result<()> {
    let status = String::from_utf8_lossy(&procfs::read(pid, "status")?).into_owned();
    let seccomp = status_field(&status, "Seccomp").unwrap_or("0");
    if seccomp != "0" {
        return Err(Error::Other(format!(
            "pid {pid} runs under seccomp (mode {seccomp}): images cannot record seccomp \
             filters, and restore could not install them; refused"
        )));
    }
    // Before anything is injected: an injected call may let an unblocked one be delivered.
    let mut pending = signals::pending(pid)?;
    // Signals a batch of questions cannot end with (see `Ask::new`).
    let mut busy = 0;
    for key in ["SigBlk", "SigCgt", "SigPnd", "ShdPnd"] {
        busy |= hex_field(pid, &status, key)?;
    }
    let mut ask = Ask::new(pid, busy)?;
    let handled = hex_field(pid, &status, "SigCgt")? | hex_field(pid, &status, "SigIgn")?;
    // Every question queued, then asked in one go.
    let sig_q = signals::ask_dispositions(&mut ask, handled)?;
    let timer_q = signals::ask_timers(pid, &mut ask)?;
    let process_q = ask_process(&mut ask)?;
    ask.run()?;
    let sig = signals::dispositions(&ask, sig_q)?;
    let (timers, mut posix, tfid) = signals::timers(&ask, timer_q)?;
    let (p, groups, pfid) = process(pid, &status, &ask, process_q)?;
    ask.finish()?;
    let max = limits::MAX_PENDING_SIGNALS as usize;
    if pending.len() > max {
        st.fidelity.push(line(
            "pending signals",
            format!("{} queued", pending.len()),
            Action::Partial,
            &format!("only the first {max} (MAX_PENDING_SIGNALS) are recorded"),
        ));
        pending.truncate(max);
    }
    let max = limits::MAX_POSIX_TIMERS as usize;
    if posix.len() > max {
        st.fidelity.push(line(
            "POSIX timers",
            format!("{}", posix.len()),
            Action::Lost,
            &format!("only the first {max} (MAX_POSIX_TIMERS) are recorded"),
        ));
        posix.truncate(max);
    }
    st.fidelity
        .extend(signals::signals_fidelity(&sig, &pending));
    st.fidelity.extend(tfid);
    st.fidelity.extend(pfid);
    st.signals = Some((sig, pending));
    st.timers = Some((timers, posix));
    st.process = Some((p, groups));
    Ok(())
}

/// Limit `res` (soft, hard) from `/proc/PID/limits`: a header, then one line per resource in
/// Linux order, the name in the first 26 columns.
fn limits_file(pid: i32, res: usize) -> Result<(u64, u64)> {
    let text = String::from_utf8_lossy(&procfs::read(pid, "limits")?).into_owned();
    let bad = || Error::Proc(format!("/proc/{pid}/limits: resource {res}"));
    let line = text.lines().nth(res + 1).ok_or_else(bad)?;
    let mut v = line.get(26..).ok_or_else(bad)?.split_whitespace();
    let mut num = || match v.next() {
        Some("unlimited") => Ok(u64::MAX),
        Some(n) => n.parse().map_err(|_| bad()),
        None => Err(bad()),
    };
    Ok((num()?, num()?))
}

/// The questions of [`process`]: `prctl`s (an int written at the answer's address, or the
/// result itself) and the `mlockall(MCL_FUTURE)` probe.
pub(super) struct ProcessQs {
    securebits: Q,
    dumpable: Q,
    pdeathsig: Q,
    subreaper: Q,
    thp: Q,
    slack: Q,
    tid_address: Q,
    mlock: MlockQs,
}

/// Queues the questions of [`process`].
fn ask_process(ask: &mut Ask) -> Result<ProcessQs> {
    let mut q = |opt: u64, ptr: bool| {
        ask.queue(nr::PRCTL, |at| [opt, if ptr { at } else { 0 }, 0, 0, 0, 0])
    };
    Ok(ProcessQs {
        securebits: q(pr::GET_SECUREBITS, false)?,
        dumpable: q(pr::GET_DUMPABLE, false)?,
        pdeathsig: q(pr::GET_PDEATHSIG, true)?,
        subreaper: q(pr::GET_CHILD_SUBREAPER, true)?,
        thp: q(linux_raw_sys::prctl::PR_GET_THP_DISABLE as u64, false)?,
        // `/proc/PID/timerslack_ns` needs CAP_SYS_NICE; asking the task does not.
        slack: q(linux_raw_sys::prctl::PR_GET_TIMERSLACK as u64, false)?,
        tid_address: q(pr::GET_TID_ADDRESS, true)?,
        mlock: ask_mlock_future(ask)?,
    })
}

/// The Process record, the groups and the report lines.
fn process(
    pid: i32,
    status: &str,
    ask: &Ask,
    qs: ProcessQs,
) -> Result<(raw::Process, Vec<U32>, Vec<Fidelity>)> {
    let mut p = raw::Process::new_zeroed();
    let mut fid = Vec::new();
    for (res, l) in p.rlimits.iter_mut().enumerate() {
        let (cur, max) = match ts::prlimit(pid, res as u32, None) {
            Ok(v) => v,
            // Another user's task without CAP_SYS_RESOURCE: /proc shows them to anyone.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => limits_file(pid, res)?,
            Err(e) => {
                return Err(Error::io(
                    format!("prlimit of pid {pid} (resource {res})"),
                    e,
                ))
            }
        };
        l.cur = cur.into();
        l.max = max.into();
    }
    fid.push(line(
        "rlimits",
        "16 resource limits".into(),
        Action::Restore,
        "",
    ));
    p.oom_score_adj = (proc_number(pid, "oom_score_adj")? as i32 as u32).into();
    let rs = Tracee::new(pid)
        .rseq()
        .map_err(|e| Error::io(format!("PTRACE_GET_RSEQ_CONFIGURATION of pid {pid}"), e))?;
    p.rseq_addr = rs.rseq_abi_pointer.into();
    p.rseq_len = rs.rseq_abi_size.into();
    p.rseq_sig = rs.signature.into();
    let (head, len) = ts::get_robust_list(pid)
        .map_err(|e| Error::io(format!("get_robust_list of pid {pid}"), e))?;
    p.robust_list = head.into();
    p.robust_list_len = len.into();
    p.cap_bounding = hex_field(pid, status, "CapBnd")?.into();
    p.cap_ambient = hex_field(pid, status, "CapAmb")?.into();
    let mut flags = 0;
    if status_field(status, "NoNewPrivs") == Some("1") {
        flags |= raw::ATTR_NO_NEW_PRIVS;
    }
    // The injected questions' answers: an int (or a pointer for PR_GET_TID_ADDRESS) written
    // at the answer's address, or the result itself.
    let q = |what: &str, q: Q, ptr: bool| -> Result<u64> {
        let r = ask.result_ok(what, q)?;
        if ptr {
            ask.answer::<u64>(q)
        } else {
            Ok(r)
        }
    };
    p.securebits = (q("PR_GET_SECUREBITS", qs.securebits, false)? as u32).into();
    p.dumpable = (q("PR_GET_DUMPABLE", qs.dumpable, false)? as u32).into();
    p.pdeathsig = (q("PR_GET_PDEATHSIG", qs.pdeathsig, true)? as u32).into();
    if q("PR_GET_CHILD_SUBREAPER", qs.subreaper, true)? as u32 != 0 {
        flags |= raw::ATTR_CHILD_SUBREAPER;
    }
    if q("PR_GET_THP_DISABLE", qs.thp, false)? != 0 {
        flags |= raw::ATTR_THP_DISABLE;
    }
    p.timer_slack_ns = q("PR_GET_TIMERSLACK", qs.slack, false)?.into();
    p.clear_child_tid = q("PR_GET_TID_ADDRESS", qs.tid_address, true)?.into();
    flags |= mlock_future(ask, qs.mlock, &mut fid)?;
    p.attr_flags = flags.into();
    let groups: Vec<U32> = status_field(status, "Groups")
        .unwrap_or("")
        .split_whitespace()
        .map(|g| g.parse::<u32>().map(U32::new))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Proc(format!("/proc/{pid}/status: Groups")))?;
    fid.push(line(
        "credentials",
        format!(
            "uids, gids, {} supplementary group(s), capabilities",
            groups.len()
        ),
        Action::Restore,
        "applied at restore when the caller may take them (else restore refuses)",
    ));
    let mut attrs = "dumpable, timer slack, oom_score_adj, securebits".to_string();
    for (on, name) in [
        (p.rseq_addr.get() != 0, "rseq"),
        (head != 0, "robust futex list"),
        (p.clear_child_tid.get() != 0, "clear-child-tid"),
        (flags & raw::ATTR_CHILD_SUBREAPER != 0, "child subreaper"),
        (flags & raw::ATTR_NO_NEW_PRIVS != 0, "no_new_privs"),
        (flags & raw::ATTR_THP_DISABLE != 0, "THP disabled"),
        (
            flags & raw::ATTR_MLOCK_FUTURE != 0 && flags & raw::ATTR_MLOCK_ONFAULT == 0,
            "mlockall(MCL_FUTURE)",
        ),
        (
            flags & raw::ATTR_MLOCK_ONFAULT != 0,
            "mlockall(MCL_FUTURE|MCL_ONFAULT)",
        ),
    ] {
        if on {
            attrs.push_str(", ");
            attrs.push_str(name);
        }
    }
    fid.push(line("process attributes", attrs, Action::Restore, ""));
    if p.dumpable.get() == 2 {
        fid.push(line(
            "dumpable",
            "2 (suid_dumpable: core dumps readable by root only)".into(),
            Action::Partial,
            "prctl(PR_SET_DUMPABLE) sets only 0 or 1: the restored task gets 1",
        ));
    }
    if p.pdeathsig.get() != 0 {
        fid.push(line(
            "parent-death signal",
            format!("signal {}", p.pdeathsig.get()),
            Action::Partial,
            "the restored task's parent is `cr-dump restore`: the signal comes when it exits",
        ));
    }
    Ok((p, groups, fid))
}

/// The questions of the `mlockall(MCL_FUTURE)` probe ([`mlock_future`]).
struct MlockQs {
    mmap: Q,
    mincore: Q,
    dontneed: Q,
    munmap: Q,
}

/// Queues the probe of [`mlock_future`]: one anonymous page mapped, asked whether it is
/// present (`mincore`) and locked (`MADV_DONTNEED` fails with `EINVAL` on locked memory),
/// unmapped; each call after the `mmap` takes the address it gave.
fn ask_mlock_future(ask: &mut Ask) -> Result<MlockQs> {
    let ps = crate::sys::page_size() as u64;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let mmap = ask.queue(nr::MMAP, |_| [0, ps, prot, flags, u64::MAX, 0])?;
    let mincore = ask.queue_from(nr::MINCORE, mmap, |at| [0, ps, at, 0, 0, 0])?;
    let dontneed = libc::MADV_DONTNEED as u64;
    let dontneed = ask.queue_from(nr::MADVISE, mmap, |_| [0, ps, dontneed, 0, 0, 0])?;
    let munmap = ask.queue_from(nr::MUNMAP, mmap, |_| [0, ps, 0, 0, 0, 0])?;
    Ok(MlockQs {
        mmap,
        mincore,
        dontneed,
        munmap,
    })
}

/// `ATTR_MLOCK_FUTURE` (and `ATTR_MLOCK_ONFAULT`) if the task called `mlockall(MCL_FUTURE)`
/// (with `MCL_ONFAULT`): no `/proc` file shows it (it is the mm's default flags), so one
/// anonymous page is mapped in the task by an injected `mmap` and unmapped again
/// ([`ask_mlock_future`]). Under `MCL_FUTURE` the new mapping is locked (`MADV_DONTNEED`
/// refuses it with `EINVAL`) and, without `MCL_ONFAULT`, populated at once (present, by
/// `mincore`). An `mmap` that fails with `EAGAIN` means the same: only locked memory at
/// `RLIMIT_MEMLOCK` makes an anonymous page fail so. Any other failure leaves it unknown: a
/// `Lost` line in `fid`.
fn mlock_future(ask: &Ask, qs: MlockQs, fid: &mut Vec<Fidelity>) -> Result<u32> {
    let r = ask.result(qs.mmap)?;
    if u64::try_from(r).is_err() {
        if r == -i64::from(libc::EAGAIN) {
            return Ok(raw::ATTR_MLOCK_FUTURE);
        }
        fid.push(line(
            "mlockall(MCL_FUTURE)",
            "unknown".into(),
            Action::Lost,
            &format!(
                "the probe (an injected mmap of one page) failed with errno {}",
                -r
            ),
        ));
        return Ok(0);
    }
    ask.result_ok("munmap of the mlockall probe", qs.munmap)?;
    ask.result_ok("mincore of the mlockall probe", qs.mincore)?;
    let present = ask.answer::<u8>(qs.mincore)? & 1 != 0;
    match ask.result(qs.dontneed)? {
        0 => Ok(0),
        e if e == -i64::from(libc::EINVAL) => Ok(if present {
            raw::ATTR_MLOCK_FUTURE
        } else {
            raw::ATTR_MLOCK_FUTURE | raw::ATTR_MLOCK_ONFAULT
        }),
        e => {
            let e = std::io::Error::from_raw_os_error(i32::try_from(-e).unwrap_or(0));
            Err(Error::io("madvise of the mlockall probe", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let s = "Name:\tx\nCapBnd:\t000001ffffffffff\nGroups:\t4 24 \nNoNewPrivs:\t1\n";
        assert_eq!(status_field(s, "Groups"), Some("4 24"));
        assert_eq!(hex_field(1, s, "CapBnd").expect("hex"), 0x1ff_ffff_ffff);
        assert!(hex_field(1, s, "CapAmb").is_err());
        assert_eq!(status_field(s, "NoNewPrivs"), Some("1"));
    }
}
