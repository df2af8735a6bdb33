//! How a task is frozen and let go: `PTRACE_SEIZE` + `PTRACE_INTERRUPT` through the one ptrace
//! layer ([`Tracee`]), and the release as [`After`] says. A [`Frozen`] task is let go when
//! dropped, so every failure path leaves it running, untraced. What is read or injected while
//! it is frozen goes through [`Frozen::tracee`].
//!
//! **The stop runs at nice -20.** What the task does while frozen (the injected calls, the
//! `clone` of a twin: a fork's page-table copy, ~30 ms of CPU per GiB) runs in the task, at
//! its weight: with two busy loops on the two CPUs it got a third of one, and a 1 GiB lazy
//! checkpoint's stop took twice as long as on an idle machine (59 against 30 ms at nice -20,
//! one run, the same build, `ab.py` in BENCHMARKS.md "The stop (issue 14, session 8)"). So
//! the task's nice value is raised to -20 once it is stopped (when cr-dump may: root or
//! `CAP_SYS_NICE`) and set back before it is let go, on every path ([`Frozen::release`],
//! drop); the guard is told first ([`Msg::Boost`]) and sets it back if cr-dump dies meanwhile.
//! With autogroups (`kernel.sched_autogroup_enabled`), nice weighs only against the tasks of
//! the same session.

use super::check::refuse;
use super::options::{test_pause, After, TEST_PAUSE_ENV};
use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::guard::{self as guard_msg, Msg};
use crate::sys::{self, Stop, Tracee};
use std::io;
use std::time::{Duration, Instant};

/// A task stopped under `PTRACE_SEIZE`. Dropping it detaches, so every failure path leaves the
/// task running and untraced.
#[derive(Debug)]
pub struct Frozen {
    tracee: Tracee,
    active: bool,
    since: Instant,
    /// The task was in a job-control stop when seized: after a detach the kernel wakes it to
    /// enter that stop again, so for a moment it runs.
    was_stopped: bool,
    /// The task's own nice value, while it is raised for the stop.
    boost: Option<i32>,
}

/// The nice value of a task's stop (see the module docs).
const STOP_NICE: i32 = -20;

/// The error of a ptrace or process call on `pid`: gone, refused, or else.
pub(crate) fn gone_or(pid: i32, e: io::Error, what: &str) -> Error {
    match e.raw_os_error() {
        Some(libc::ESRCH) => Error::TargetExited {
            pid,
            how: format!("gone during {what}"),
        },
        Some(libc::EPERM) | Some(libc::EACCES) => Error::PermissionDenied {
            pid,
            what: what.to_string(),
        },
        _ => Error::io(format!("{what} of pid {pid}"), e),
    }
}

/// Seizes and stops `pid`.
pub fn freeze(pid: i32) -> Result<Frozen> {
    let mut fr = freeze_quiet(pid)?;
    fr.boost();
    if let Some(pause) = test_pause(TEST_PAUSE_ENV) {
        eprintln!("cr-dump: test-hook: frozen");
        std::thread::sleep(pause);
    }
    Ok(fr)
}

/// [`freeze`] without its test hook.
pub(crate) fn freeze_quiet(pid: i32) -> Result<Frozen> {
    let since = Instant::now();
    let was_stopped = task_state(pid) == Some(b'T');
    let tracee = Tracee::seize(pid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => Error::NoSuchProcess(pid),
        // EPERM also when another tracer got there since the check.
        Some(libc::EPERM) => match procfs::read(pid, "status")
            .ok()
            .and_then(|b| procfs::parse_status(&String::from_utf8_lossy(&b)).ok())
        {
            Some(st) if st.tracer_pid != 0 => refuse(
                pid,
                format!("it is already traced by pid {}", st.tracer_pid),
            ),
            _ => gone_or(pid, e, "PTRACE_SEIZE"),
        },
        _ => gone_or(pid, e, "PTRACE_SEIZE"),
    })?;
    let mut fr = Frozen {
        tracee,
        active: true,
        since,
        was_stopped,
        boost: None,
    };
    let t = tracee;
    let interrupt = || {
        t.interrupt()
            .map_err(|e| gone_or(pid, e, "PTRACE_INTERRUPT"))
    };
    interrupt()?;
    loop {
        match t.wait().map_err(|e| gone_or(pid, e, "waitpid"))? {
            Stop::Group { .. } => break,
            Stop::Signal { signal } => {
                // A signal arrived first: deliver it and stop again.
                t.cont(signal).map_err(|e| gone_or(pid, e, "PTRACE_CONT"))?;
                interrupt()?;
            }
            Stop::Event { .. } | Stop::Continued => {
                t.cont(0).map_err(|e| gone_or(pid, e, "PTRACE_CONT"))?;
                interrupt()?;
            }
            Stop::Exited(c) => {
                fr.active = false;
                return Err(Error::TargetExited {
                    pid,
                    how: format!("exit status {c}"),
                });
            }
            Stop::Killed(s) => {
                fr.active = false;
                return Err(Error::TargetExited {
                    pid,
                    how: format!("killed by signal {s}"),
                });
            }
        }
    }
    Ok(fr)
}

impl Frozen {
    /// The pid.
    pub fn pid(&self) -> i32 {
        self.tracee.pid()
    }

    /// The task, to read its registers or inject a system call while it is frozen.
    pub fn tracee(&self) -> Tracee {
        self.tracee
    }

    /// Raises the stopped task's nice value to [`STOP_NICE`] (best effort: not if cr-dump
    /// may not, or it is there already).
    fn boost(&mut self) {
        let pid = self.pid();
        let Ok(old) = sys::nice(pid) else {
            return;
        };
        if old <= STOP_NICE {
            return;
        }
        guard_msg::publish(&Msg::Boost { pid, old });
        match sys::set_nice(pid, STOP_NICE) {
            Ok(()) => self.boost = Some(old),
            Err(_) => guard_msg::publish(&Msg::Unboost { pid }),
        }
    }

    /// Sets the task's own nice value back, if it was raised.
    fn unboost(&mut self) {
        let pid = self.pid();
        if let Some(old) = self.boost.take() {
            if sys::set_nice(pid, old).is_ok() {
                guard_msg::publish(&Msg::Unboost { pid });
            }
        }
    }

    /// Releases the task as `after` says; returns how long it was stopped.
    pub fn release(mut self, after: After) -> Result<Duration> {
        let (t, pid) = (self.tracee, self.tracee.pid());
        self.unboost();
        self.active = false;
        match after {
            After::Continue => {
                t.detach(0).map_err(|e| gone_or(pid, e, "PTRACE_DETACH"))?;
                // Continue means "as it was": a stopped task is stopped again on return.
                if self.was_stopped {
                    wait_stopped(pid, Duration::from_secs(2));
                }
            }
            After::Stop => {
                // The SIGSTOP stays pending while the task is in its ptrace stop and stops it
                // for good after the detach.
                t.kill(libc::SIGSTOP)
                    .map_err(|e| gone_or(pid, e, "kill(SIGSTOP)"))?;
                t.detach(0).map_err(|e| gone_or(pid, e, "PTRACE_DETACH"))?;
                // The stop happens when the task next runs: wait for it (briefly), so that the
                // task is stopped by the time the caller is told so.
                wait_stopped(pid, Duration::from_secs(2));
            }
            After::Kill => {
                t.kill(libc::SIGKILL)
                    .map_err(|e| gone_or(pid, e, "kill(SIGKILL)"))?;
                let _ = t.detach(0);
            }
        }
        Ok(self.since.elapsed())
    }
}

/// The task's state letter from `/proc/PID/stat` (`None` if it is gone).
fn task_state(pid: i32) -> Option<u8> {
    procfs::read(pid, "stat")
        .ok()
        .and_then(|b| procfs::parse_stat(&String::from_utf8_lossy(&b)).ok())
        .map(|s| s.state)
}

/// Polls `/proc/PID/stat` until the task is in a stop (`T`), it is gone, or `limit` passes.
fn wait_stopped(pid: i32, limit: Duration) {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        let stopped = task_state(pid).is_none_or(|s| s == b'T');
        if stopped {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.unboost();
        if self.active {
            let _ = self.tracee.detach(0);
        }
    }
}

/// Whether `pid` is gone or a zombie.
pub(crate) fn is_gone(pid: i32) -> bool {
    match procfs::read(pid, "stat") {
        Ok(b) => String::from_utf8(b)
            .ok()
            .and_then(|t| procfs::parse_stat(&t).ok())
            .is_none_or(|s| matches!(s.state, b'Z' | b'X')),
        Err(_) => true,
    }
}

/// An error met while the task is frozen: if the task died meanwhile, that is the error.
pub(crate) fn frozen_err(pid: i32, e: Error) -> Error {
    if matches!(e, Error::TargetExited { .. }) || !is_gone(pid) {
        e
    } else {
        Error::TargetExited {
            pid,
            how: "killed or exited while frozen".into(),
        }
    }
}
