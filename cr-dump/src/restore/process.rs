//! Step 9 besides the signals: limits, per-process attributes and credentials, planned before
//! the fork ([`plan`]) and applied in the order the kernel needs ([`apply`]).
//!
//! - rlimits: `prlimit` on the child from cr-dump, before its credentials change (while they
//!   are still the caller's). A hard limit above the caller's needs `CAP_SYS_RESOURCE`
//!   (and `RLIMIT_NOFILE` never goes above `fs.nr_open`): without it the limit is lowered to
//!   the caller's, with a warning, before the fork.
//! - oom_score_adj through `/proc/CHILD/oom_score_adj`; lowered below the caller's only with
//!   `CAP_SYS_RESOURCE`, else the caller's is kept, with a warning.
//! - rseq registered again (`rseq`), the robust futex list (`set_robust_list`), the
//!   clear-child-tid address (`set_tid_address`), timer slack, THP_DISABLE, child subreaper.
//! - credentials ([`super::creds`]), then what a change of credentials resets: the
//!   parent-death signal and dumpable; then no_new_privs (one-way).
//! - `/proc/PID/exe`: replacing it needs `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`; without
//!   them the link stays cr-dump's (a warning), and `PR_SET_MM_MAP` sets the rest, which needs
//!   no capability.

use super::child::Child;
use super::creds::{self, CredPlan, Creds};
use super::plan::Plan;
use crate::error::{Error, Result};
use crate::sys::abi::nr;
use crate::sys::taskstate::{self as ts, pr};
use cr_format::raw;
use cr_format::read::Image;

/// Names of the rlimits, Linux numbering.
const RLIMIT_NAMES: [&str; raw::RLIMIT_COUNT] = [
    "CPU",
    "FSIZE",
    "DATA",
    "STACK",
    "CORE",
    "RSS",
    "NPROC",
    "NOFILE",
    "MEMLOCK",
    "AS",
    "LOCKS",
    "SIGPENDING",
    "MSGQUEUE",
    "NICE",
    "RTPRIO",
    "RTTIME",
];

/// What step 9 restores of the image's signals, timers, limits, attributes and credentials.
#[derive(Clone, Debug, Default)]
pub(super) struct StatePlan {
    pub signals: Option<(raw::Signals, Vec<raw::PendingSignal>)>,
    pub timers: Option<(raw::Timers, Vec<raw::PosixTimer>)>,
    pub process: Option<raw::Process>,
    /// The limits to set (clamped to what the caller may set).
    pub rlimits: Vec<(u32, u64, u64)>,
    /// The oom_score_adj to write, if it changes.
    pub oom_score_adj: Option<i32>,
    pub creds: CredPlan,
}

fn read_i64(path: &str) -> Result<i64> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path.to_string(), e))?;
    s.trim()
        .parse()
        .map_err(|_| Error::Proc(format!("{path}: {:?}", s.trim())))
}

/// Takes the state records of `top`, checks what the caller may restore and plans it (before
/// the fork); the exe link is dropped from `plan` if the caller may not replace it.
pub(super) fn plan(top: &Image<'_>, plan: &mut Plan) -> Result<()> {
    let me = Creds::of(0)?;
    let mut st = StatePlan {
        signals: top.signals().map(|s| (*s.raw, s.pending.to_vec())),
        timers: top.timers().map(|t| (*t.raw, t.posix.to_vec())),
        process: top.process().map(|p| *p.raw),
        ..StatePlan::default()
    };
    let w = &mut plan.warnings;
    let t = &plan.task;
    if st.signals.is_none() && t.sig_caught.get() != 0 {
        w.push(format!(
            "the image (format 1.0) records no handlers: signals {:#x} are SIG_DFL now",
            t.sig_caught.get()
        ));
    }
    if st.signals.is_none() && (t.sig_pending.get() | t.sig_shared_pending.get()) != 0 {
        w.push("the image (format 1.0) records no pending signals: they are lost".into());
    }
    let groups = top
        .process()
        .map(|p| p.groups.iter().map(|g| g.get()).collect::<Vec<u32>>());
    let proc_groups = st.process.as_ref().zip(groups);
    st.creds = creds::plan(t, proc_groups, &me, w)?;
    if let Some(p) = &st.process {
        st.rlimits = rlimits(p, &me, w)?;
        let adj = p.oom_score_adj.get() as i32;
        let own = read_i64("/proc/self/oom_score_adj")? as i32;
        if adj < own && !me.has(creds::CAP_SYS_RESOURCE) {
            w.push(format!(
                "oom_score_adj {adj} is below cr-dump's {own}, which only CAP_SYS_RESOURCE may \
                 lower: the task keeps {own}"
            ));
        } else if adj != own {
            st.oom_score_adj = Some(adj);
        }
        if p.pdeathsig.get() != 0 {
            w.push(format!(
                "parent-death signal {} now comes when `cr-dump restore` (the task's parent) \
                 exits",
                p.pdeathsig.get()
            ));
        }
    }
    if st.timers.as_ref().is_some_and(|t| !t.1.is_empty()) && !ts::timer_restore_ids() {
        return Err(Error::Other(
            "restore refused: the image has POSIX timers, and this kernel cannot create a timer \
             with a given id (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.15)"
                .into(),
        ));
    }
    if plan.exe.is_some() && !me.has(creds::CAP_CHECKPOINT_RESTORE) && !me.has(creds::CAP_SYS_ADMIN)
    {
        w.push(
            "/proc/PID/exe stays cr-dump's: replacing it needs CAP_CHECKPOINT_RESTORE (grant \
             it with `setcap cap_checkpoint_restore+ep cr-dump`)"
                .into(),
        );
        plan.exe = None;
    }
    plan.state = st;
    Ok(())
}

/// The limits to set: the image's, a hard limit above what the caller may set lowered to it.
fn rlimits(p: &raw::Process, me: &Creds, w: &mut Vec<String>) -> Result<Vec<(u32, u64, u64)>> {
    let own_pid = i32::try_from(std::process::id()).unwrap_or(0);
    let nr_open = read_i64("/proc/sys/fs/nr_open").unwrap_or(i64::MAX) as u64;
    let mut out = Vec::new();
    for (i, (l, name)) in p.rlimits.iter().zip(RLIMIT_NAMES).enumerate() {
        let res = i as u32;
        let (mut cur, mut max) = (l.cur.get(), l.max.get());
        let (_, own_max) = ts::prlimit(own_pid, res, None)
            .map_err(|e| Error::io(format!("prlimit(RLIMIT_{name}) of cr-dump"), e))?;
        let mut cap = if me.has(creds::CAP_SYS_RESOURCE) {
            u64::MAX
        } else {
            own_max
        };
        if res == libc::RLIMIT_NOFILE {
            cap = cap.min(nr_open);
        }
        if max > cap {
            w.push(format!(
                "RLIMIT_{name} hard limit {max} lowered to {cap} (raising it needs \
                 CAP_SYS_RESOURCE{})",
                if res == libc::RLIMIT_NOFILE {
                    " and at most fs.nr_open"
                } else {
                    ""
                }
            ));
            max = cap;
            cur = cur.min(max);
        }
        out.push((res, cur, max));
    }
    Ok(out)
}

fn prctl(c: &Child, what: &str, opt: u64, arg: u64) -> Result<u64> {
    c.call_ok(what, nr::PRCTL, [opt, arg, 0, 0, 0, 0])
}

/// Limits, attributes and credentials (see the module docs for the order).
pub(super) fn apply(c: &Child, plan: &Plan) -> Result<()> {
    let st = &plan.state;
    let pid = c.pid();
    for &(res, cur, max) in &st.rlimits {
        ts::prlimit(pid, res, Some((cur, max))).map_err(|e| {
            let name = RLIMIT_NAMES.get(res as usize).unwrap_or(&"?");
            c.io(&format!("prlimit(RLIMIT_{name}, {cur}, {max})"), e)
        })?;
    }
    if let Some(adj) = st.oom_score_adj {
        let path = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&path, adj.to_string())
            .map_err(|e| c.io(&format!("writing {adj} to {path}"), e))?;
    }
    let Some(p) = &st.process else {
        creds::apply(c, plan.scratch, &st.creds)?;
        c.call_ok("set_tid_address", nr::SET_TID_ADDRESS, [0; 6])?;
        return creds::verify(pid, &st.creds);
    };
    if p.rseq_addr.get() != 0 {
        let args = [
            p.rseq_addr.get(),
            p.rseq_len.get().into(),
            pr::RSEQ_REGISTER,
            p.rseq_sig.get().into(),
            0,
            0,
        ];
        c.call_ok("rseq (register)", nr::RSEQ, args)?;
    }
    if p.robust_list.get() != 0 {
        let args = [p.robust_list.get(), p.robust_list_len.get(), 0, 0, 0, 0];
        c.call_ok("set_robust_list", ts::nr::SET_ROBUST_LIST, args)?;
    }
    let ctid = [p.clear_child_tid.get(), 0, 0, 0, 0, 0];
    c.call_ok("set_tid_address", nr::SET_TID_ADDRESS, ctid)?;
    if p.timer_slack_ns.get() != 0 {
        prctl(
            c,
            "PR_SET_TIMERSLACK",
            pr::SET_TIMERSLACK,
            p.timer_slack_ns.get(),
        )?;
    }
    let flags = p.attr_flags.get();
    let thp = u64::from(flags & raw::ATTR_THP_DISABLE != 0);
    prctl(c, "PR_SET_THP_DISABLE", pr::SET_THP_DISABLE, thp)?;
    let sub = u64::from(flags & raw::ATTR_CHILD_SUBREAPER != 0);
    prctl(c, "PR_SET_CHILD_SUBREAPER", pr::SET_CHILD_SUBREAPER, sub)?;
    creds::apply(c, plan.scratch, &st.creds)?;
    // A change of credentials resets these two.
    prctl(
        c,
        "PR_SET_PDEATHSIG",
        pr::SET_PDEATHSIG,
        p.pdeathsig.get().into(),
    )?;
    prctl(
        c,
        "PR_SET_DUMPABLE",
        pr::SET_DUMPABLE,
        p.dumpable.get().min(1).into(),
    )?;
    if flags & raw::ATTR_NO_NEW_PRIVS != 0 {
        prctl(c, "PR_SET_NO_NEW_PRIVS", pr::SET_NO_NEW_PRIVS, 1)?;
    }
    creds::verify(pid, &st.creds)
}
