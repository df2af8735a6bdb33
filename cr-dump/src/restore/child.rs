//! The forked child that becomes the restored task: driven only by injected system calls
//! ([`crate::sys::inject`]) and writes to its `/proc/PID/mem`; killed if the restore fails.
//!
//! Its pid ([`PidMode`], `--pid`): the image's when that pid is free in this pid namespace
//! and the caller may choose pids (`CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`): the child is
//! made by `clone3` with `set_tid`, so its tid, `getpid()` and `/proc/PID` are the original's
//! (programs that remember their pid, as asyncio's event loop does, keep working; the rseq
//! area, robust list and clear-child-tid address name the same thread). The parent differs:
//! `getppid()` is `cr-dump restore`'s pid.

use super::other;
use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::inject::{Injector, Signals};
use crate::sys::{self, Stop, Tracee};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::str::FromStr;
use zerocopy::{Immutable, IntoBytes};

/// Kills and reaps the child when dropped, unless disarmed: a failed restore leaves no process.
struct KillOnDrop(Option<Tracee>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.kill(libc::SIGKILL);
            let _ = t.wait();
        }
    }
}

/// Which pid the restored task gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PidMode {
    /// The image's pid when it is free and the caller may choose pids, else a new one (a
    /// warning says why).
    #[default]
    Auto,
    /// The image's pid, or refuse the restore (saying why) before anything starts.
    Same,
    /// A new pid, whatever the kernel hands out.
    New,
}

impl FromStr for PidMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<PidMode, String> {
        match s {
            "auto" => Ok(PidMode::Auto),
            "same" => Ok(PidMode::Same),
            "new" => Ok(PidMode::New),
            _ => Err(format!("{s:?}: expected same, new or auto")),
        }
    }
}

/// Why pid `pid` cannot be given to the restored task, if it cannot (checked before the fork;
/// the kernel has the last word at the `clone3`).
fn pid_obstacle(pid: u32) -> Option<String> {
    let Ok(p) = i32::try_from(pid) else {
        return Some(format!("pid {pid} is not a valid pid"));
    };
    if p <= 1 {
        return Some(format!(
            "the image records pid {pid}, which no restored task may have"
        ));
    }
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(max) = max.filter(|&m| pid >= m) {
        return Some(format!(
            "pid {pid} is above this system's pid_max ({max}, /proc/sys/kernel/pid_max)"
        ));
    }
    if let Some(holder) = pid_holder(p) {
        return Some(format!("pid {pid} is taken by {holder}"));
    }
    let me = super::creds::Creds::of(0).ok()?;
    if !me.has(super::creds::CAP_CHECKPOINT_RESTORE) && !me.has(super::creds::CAP_SYS_ADMIN) {
        return Some(
            "choosing a pid needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN (grant it with \
             `setcap cap_checkpoint_restore+ep cr-dump`)"
                .into(),
        );
    }
    None
}

/// What holds pid `pid` in this pid namespace, as a phrase (`process 12 (python3)`), if
/// anything does (a thread's id is taken too, and so is a zombie's until it is reaped).
fn pid_holder(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(procfs::path(pid, "status")).ok();
    let Some(text) = text else {
        // No status, but the pid may still be in use by something /proc hides from us.
        return std::fs::symlink_metadata(format!("/proc/{pid}"))
            .is_ok()
            .then(|| format!("process {pid}"));
    };
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (name, tgid, state, ppid) = (field("Name"), field("Tgid"), field("State"), field("PPid"));
    let mut s = if tgid == pid.to_string() || tgid.is_empty() {
        format!("process {pid} ({name})")
    } else {
        format!("thread {pid} of process {tgid} ({name})")
    };
    if state.starts_with('Z') {
        s.push_str(&format!(", a zombie its parent {ppid} has not reaped yet"));
    }
    Some(s)
}

/// The pid to ask `clone3` for: the image's `pid` per `mode`; `None` for a new pid (in
/// `Auto`, with a warning in `w` saying why). `Same` refuses when the pid cannot be had.
pub(super) fn choose_pid(mode: PidMode, pid: u32, w: &mut Vec<String>) -> Result<Option<i32>> {
    if mode == PidMode::New {
        return Ok(None);
    }
    match pid_obstacle(pid) {
        None => Ok(i32::try_from(pid).ok()),
        Some(why) if mode == PidMode::Same => {
            Err(other(format!("restore --pid same refused: {why}")))
        }
        Some(why) => {
            w.push(format!("the task gets a new pid, not its own {pid}: {why}"));
            Ok(None)
        }
    }
}

/// The child being turned into the restored task.
pub(super) struct Child {
    guard: KillOnDrop,
    tracee: Tracee,
    inj: Injector,
    mem: File,
}

impl Child {
    /// Forks the empty shell (0/1/2 pointed at `stdio` if given) with pid `want` if given
    /// ([`choose_pid`]), waits for its stop, and finds a `syscall` instruction in its vDSO.
    /// If the kernel refuses `want` (taken meanwhile, or not permitted) the shell gets a new pid
    /// with a warning in `w` in `PidMode::Auto`; in `PidMode::Same` the restore fails.
    pub fn spawn(
        stdio: Option<&File>,
        want: Option<i32>,
        mode: PidMode,
        w: &mut Vec<String>,
    ) -> Result<Child> {
        let fd = stdio.map(|f| f.as_raw_fd());
        let pid = match want.map(|p| (p, sys::fork_traced_child(fd, Some(p)))) {
            None => sys::fork_traced_child(fd, None).map_err(|e| Error::io("fork", e))?,
            Some((_, Ok(pid))) => pid,
            Some((p, Err(e))) => {
                let why = match e.raw_os_error() {
                    Some(libc::EEXIST) => match pid_holder(p) {
                        Some(h) => format!("pid {p} was taken meanwhile by {h}"),
                        None => format!("pid {p} was taken meanwhile"),
                    },
                    Some(libc::EPERM) => format!(
                        "the kernel refused pid {p} (EPERM: choosing a pid needs \
                         CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over this pid namespace)"
                    ),
                    _ => format!("clone3 with pid {p} failed: {e}"),
                };
                if mode == PidMode::Same {
                    return Err(other(format!("restore --pid same failed: {why}")));
                }
                w.push(format!("the task gets a new pid, not its own {p}: {why}"));
                sys::fork_traced_child(fd, None).map_err(|e| Error::io("fork", e))?
            }
        };
        let tracee = Tracee::new(pid);
        let guard = KillOnDrop(Some(tracee));
        let io = |what: &str, e| Error::io(format!("{what} (restoring into pid {pid})"), e);
        match tracee.wait().map_err(|e| io("waitpid", e))? {
            Stop::Signal { signal } if signal == libc::SIGSTOP => {}
            s => return Err(other(format!("the new child {pid} did not stop: {s:?}"))),
        }
        tracee
            .set_options(libc::PTRACE_O_EXITKILL)
            .map_err(|e| io("PTRACE_SETOPTIONS", e))?;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(procfs::path(pid, "mem"))
            .map_err(|e| io("open /proc/PID/mem", e))?;
        // Nothing else knows this child: a signal on the way is dropped.
        let inj = Injector::new(tracee, Signals::Drop)?;
        Ok(Child {
            guard,
            tracee,
            inj,
            mem,
        })
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.tracee.pid()
    }

    /// The ptrace handle.
    pub fn tracee(&self) -> Tracee {
        self.tracee
    }

    /// The injector (for [`Injector::call_batch`]).
    pub fn injector(&self) -> &Injector {
        &self.inj
    }

    /// The injector (to move its `syscall` instruction with the vDSO).
    pub fn injector_mut(&mut self) -> &mut Injector {
        &mut self.inj
    }

    /// An I/O error while restoring into this child.
    pub fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} (restoring into pid {})", self.pid()), e)
    }

    /// Runs system call `nr` in the child; its result (negative errno on failure).
    pub fn call(&self, nr: u64, args: [u64; 6]) -> Result<i64> {
        self.inj.call(nr, args)
    }

    /// As [`Child::call`], failing on a negative result with `what`.
    pub fn call_ok(&self, what: &str, nr: u64, args: [u64; 6]) -> Result<u64> {
        let r = self.call(nr, args)?;
        u64::try_from(r).map_err(|_| self.errno(what, r))
    }

    /// The error for a negative result `r` of `what`.
    pub fn errno(&self, what: &str, r: i64) -> Error {
        match r.checked_neg().and_then(|e| i32::try_from(e).ok()) {
            Some(e) => self.io(what, std::io::Error::from_raw_os_error(e)),
            None => other(format!("{what} in pid {} returned {r}", self.pid())),
        }
    }

    /// Writes `bytes` at `addr` of the child.
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        self.mem
            .write_all_at(bytes, addr)
            .map_err(|e| self.io(&format!("writing {} bytes at {addr:#x}", bytes.len()), e))
    }

    /// Writes a kernel struct at `addr` of the child.
    pub fn write_struct<T: IntoBytes + Immutable>(&self, addr: u64, v: &T) -> Result<()> {
        self.write(addr, v.as_bytes())
    }

    /// Lets the task run still traced by this thread (ptrace options `opts`, then
    /// `PTRACE_CONT`): from here it is no longer killed on drop (the caller owns it).
    pub fn keep_traced(mut self, opts: i32) -> Result<Tracee> {
        self.tracee
            .set_options(opts)
            .map_err(|e| self.io("PTRACE_SETOPTIONS", e))?;
        self.tracee.cont(0).map_err(|e| self.io("PTRACE_CONT", e))?;
        self.guard.0 = None;
        Ok(self.tracee)
    }

    /// Lets the task run (`PTRACE_DETACH`, with `signal`; 0 for none): from here it is no
    /// longer killed on drop. Returns its pid.
    pub fn release(mut self, signal: i32) -> Result<i32> {
        self.tracee
            .detach(signal)
            .map_err(|e| self.io("PTRACE_DETACH", e))?;
        self.guard.0 = None;
        Ok(self.pid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pid_modes() {
        assert_eq!("same".parse::<PidMode>(), Ok(PidMode::Same));
        assert_eq!("new".parse::<PidMode>(), Ok(PidMode::New));
        assert_eq!("auto".parse::<PidMode>(), Ok(PidMode::Auto));
        assert!("old".parse::<PidMode>().is_err());
    }

    #[test]
    fn names_the_holder_of_a_pid_and_what_no_task_may_have() {
        let me = std::process::id();
        let h = pid_holder(me as i32).unwrap_or_default();
        assert!(h.starts_with(&format!("process {me} (")), "{h}");
        let why = pid_obstacle(me).unwrap_or_default();
        assert!(
            why.starts_with(&format!("pid {me} is taken by process {me}")),
            "{why}"
        );
        assert!(pid_obstacle(1).is_some_and(|w| w.contains("no restored task")));
        assert!(pid_obstacle(u32::MAX).is_some());
        let mut w = Vec::new();
        assert!(choose_pid(PidMode::Same, me, &mut w).is_err());
        assert_eq!(choose_pid(PidMode::Auto, me, &mut w).ok(), Some(None));
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(choose_pid(PidMode::New, me, &mut w).ok(), Some(None));
    }
}
