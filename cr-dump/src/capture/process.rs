//! Limits, groups, capabilities and per-process attributes of a frozen task (FORMAT.md §19),
//! and the entry point that reads signals, timers and these ([`capture`]).
//!
//! From cr-dump itself: the rlimits (`prlimit`), the robust futex list (`get_robust_list`),
//! rseq (`PTRACE_GET_RSEQ_CONFIGURATION`), the bounding and ambient sets, groups, no_new_privs
//! and seccomp mode (`/proc/PID/status`), and oom_score_adj (`/proc`).
//! Injected (no `/proc` file shows them): securebits, dumpable, timer slack, the parent-death signal, child
//! subreaper, THP_DISABLE and the clear-child-tid address; and `mlockall(MCL_FUTURE)`, found by
//! an injected `mmap` of one anonymous page ([`mlock_future`]).

use super::ask::Ask;
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
    let mut ask = Ask::new(pid)?;
    let handled = hex_field(pid, &status, "SigCgt")? | hex_field(pid, &status, "SigIgn")?;
    let sig = signals::dispositions(&mut ask, handled)?;
    let (timers, mut posix, tfid) = signals::timers(pid, &mut ask)?;
    let (p, groups, pfid) = process(pid, &status, &mut ask)?;
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

/// The Process record, the groups and the report lines.
fn process(
    pid: i32,
    status: &str,
    ask: &mut Ask,
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
    // Injected questions.
    let at = ask.slot(0);
    // An int (or a pointer for PR_GET_TID_ADDRESS) written at `at`, or the result itself.
    let q = |ask: &mut Ask, what: &str, opt: u64, ptr: bool| -> Result<u64> {
        if !ptr {
            return ask.call_ok(what, nr::PRCTL, [opt, 0, 0, 0, 0, 0]);
        }
        ask.put(at, &0u64)?;
        ask.call_ok(what, nr::PRCTL, [opt, at, 0, 0, 0, 0])?;
        ask.get::<u64>(at)
    };
    p.securebits = (q(ask, "PR_GET_SECUREBITS", pr::GET_SECUREBITS, false)? as u32).into();
    p.dumpable = (q(ask, "PR_GET_DUMPABLE", pr::GET_DUMPABLE, false)? as u32).into();
    p.pdeathsig = (q(ask, "PR_GET_PDEATHSIG", pr::GET_PDEATHSIG, true)? as u32).into();
    if q(ask, "PR_GET_CHILD_SUBREAPER", pr::GET_CHILD_SUBREAPER, true)? as u32 != 0 {
        flags |= raw::ATTR_CHILD_SUBREAPER;
    }
    let thp = linux_raw_sys::prctl::PR_GET_THP_DISABLE as u64;
    if q(ask, "PR_GET_THP_DISABLE", thp, false)? != 0 {
        flags |= raw::ATTR_THP_DISABLE;
    }
    // `/proc/PID/timerslack_ns` needs CAP_SYS_NICE; asking the task does not.
    let slack = linux_raw_sys::prctl::PR_GET_TIMERSLACK as u64;
    p.timer_slack_ns = q(ask, "PR_GET_TIMERSLACK", slack, false)?.into();
    p.clear_child_tid = q(ask, "PR_GET_TID_ADDRESS", pr::GET_TID_ADDRESS, true)?.into();
    flags |= mlock_future(pid, ask, &mut fid)?;
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

/// `VmLck` of `/proc/PID/status`, kB (the task's locked memory: exact, not a cached counter).
fn vm_locked_kb(pid: i32) -> Result<u64> {
    let status = String::from_utf8_lossy(&procfs::read(pid, "status")?).into_owned();
    status_field(&status, "VmLck")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| Error::Proc(format!("/proc/{pid}/status: no VmLck")))
}

/// Whether page `addr` of `pid` is present (`/proc/PID/pagemap`).
fn page_present(pid: i32, addr: u64) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(procfs::path(pid, "pagemap"))
        .map_err(|e| procfs::proc_err(pid, "pagemap", e))?;
    let mut b = [0u8; 8];
    let at = addr / crate::sys::page_size() as u64 * 8;
    f.read_exact_at(&mut b, at)
        .map_err(|e| procfs::proc_err(pid, "pagemap", e))?;
    Ok(u64::from_le_bytes(b) & procfs::PM_PRESENT != 0)
}

/// `ATTR_MLOCK_FUTURE` (and `ATTR_MLOCK_ONFAULT`) if the task called `mlockall(MCL_FUTURE)`
/// (with `MCL_ONFAULT`): no `/proc` file shows it (it is the mm's default flags), so one
/// anonymous page is mapped in the task by an injected `mmap` and unmapped again. Under
/// `MCL_FUTURE` the new mapping is locked (`VmLck` grows by a page) and, without
/// `MCL_ONFAULT`, populated at once (present in pagemap). An `mmap` that fails with `EAGAIN`
/// means the same: only locked memory at `RLIMIT_MEMLOCK` makes an anonymous page fail so.
/// Any other failure leaves it unknown: a `Lost` line in `fid`.
fn mlock_future(pid: i32, ask: &mut Ask, fid: &mut Vec<Fidelity>) -> Result<u32> {
    let ps = crate::sys::page_size() as u64;
    let before = vm_locked_kb(pid)?;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let r = ask.call(nr::MMAP, [0, ps, prot, flags, u64::MAX, 0])?;
    let Ok(addr) = u64::try_from(r) else {
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
    };
    // Read both before the unmap, which comes whatever they gave.
    let seen = vm_locked_kb(pid).and_then(|after| Ok((after, page_present(pid, addr)?)));
    ask.call_ok(
        "munmap of the mlockall probe",
        nr::MUNMAP,
        [addr, ps, 0, 0, 0, 0],
    )?;
    let (after, present) = seen?;
    if after < before + ps / 1024 {
        return Ok(0);
    }
    Ok(if present {
        raw::ATTR_MLOCK_FUTURE
    } else {
        raw::ATTR_MLOCK_FUTURE | raw::ATTR_MLOCK_ONFAULT
    })
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
