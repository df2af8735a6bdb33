//! The forked child that becomes the restored task: driven only by injected system calls
//! ([`crate::sys::inject`]) and writes to its `/proc/PID/mem`; killed if the restore fails.

use super::other;
use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::inject::{Injector, Signals};
use crate::sys::{self, Stop, Tracee};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
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

/// The child being turned into the restored task.
pub(super) struct Child {
    guard: KillOnDrop,
    tracee: Tracee,
    inj: Injector,
    mem: File,
}

impl Child {
    /// Forks the empty shell (0/1/2 pointed at `stdio` if given), waits for its stop, and finds
    /// a `syscall` instruction in its vDSO.
    pub fn spawn(stdio: Option<&File>) -> Result<Child> {
        let pid = sys::fork_traced_child(stdio.map(|f| f.as_raw_fd()))
            .map_err(|e| Error::io("fork", e))?;
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
