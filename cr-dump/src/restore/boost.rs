//! **The restore runs at nice -20 until the task runs**, when cr-dump may raise it (root or
//! `CAP_SYS_NICE`): until then the restored program's service is down, as it is during a
//! checkpoint's stop, which runs at -20 for the same reason (`capture/freeze.rs`). With two
//! busy loops on the two CPUs a 1 GiB restore took 0.62× the wall time of the same restore at
//! the caller's nice (`BENCHMARKS.md`, "Session 9, all merged"). As for the stop, nice weighs
//! only against tasks of the same session where autogroups are on
//! (`kernel.sched_autogroup_enabled`), and not across cgroups: against work in another
//! session or cgroup the restore keeps only its group's share.
//!
//! Raised: the restoring thread (and so the threads it starts: the eager fill's checker, the
//! lazy server) and the child being built. Set back: the child to the caller's value before it
//! is let go (never does the restored program run at -20: that would be a privilege its
//! image does not say it had; if the child cannot be set back the restore fails), the lazy
//! fill's helper thread (a second filler at -20 would take the program's CPU; the server,
//! which answers the program's faults, keeps -20 until the fill ends), and the restoring
//! thread when the restore returns.

use crate::error::{Error, Result};
use crate::sys;

/// The nice value of a restore until the task runs.
const RESTORE_NICE: i32 = -20;

/// The restoring thread raised to [`RESTORE_NICE`] (if it could be); set back when dropped.
#[derive(Debug)]
pub(super) struct Boost {
    /// The thread's nice value before, if it was raised.
    old: Option<i32>,
    tid: i32,
}

impl Boost {
    /// Raises the calling thread, best effort: not if it may not, or is there already.
    pub(super) fn raise() -> Boost {
        let tid = sys::gettid();
        let old = sys::nice(tid)
            .ok()
            .filter(|&n| n > RESTORE_NICE)
            .filter(|_| sys::set_nice(tid, RESTORE_NICE).is_ok());
        Boost { old, tid }
    }

    /// The nice value the restored task and the fill get: the caller's, if it was raised.
    pub(super) fn calm(&self) -> Option<i32> {
        self.old
    }

    /// Raises the child being built too (it may not have inherited the thread's value).
    pub(super) fn child(&self, pid: i32) {
        if self.old.is_some() {
            let _ = sys::set_nice(pid, RESTORE_NICE);
        }
    }

    /// Sets the child back to the caller's value, before it is let go.
    pub(super) fn release_child(&self, pid: i32) -> Result<()> {
        match self.old {
            Some(n) => sys::set_nice(pid, n)
                .map_err(|e| Error::io(format!("setting pid {pid}'s nice value back to {n}"), e)),
            None => Ok(()),
        }
    }
}

impl Drop for Boost {
    fn drop(&mut self) {
        if let Some(n) = self.old.take() {
            let _ = sys::set_nice(self.tid, n);
        }
    }
}
