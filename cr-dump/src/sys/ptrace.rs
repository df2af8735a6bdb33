//! Raw ptrace requests and `waitpid`, and [`Tracee`]: one typed handle over them that stops,
//! waits, steps, continues and lets go of a task.
//!
//! The free functions (`ptrace_seize`, `waitpid`, ...) are the thin wrappers; [`Tracee`] is what
//! new code should use. Every `unsafe` block carries its `// SAFETY:` argument.

use super::check;
use std::io;

/// `NT_PRSTATUS`: general registers (`user_regs_struct`).
pub const NT_PRSTATUS: u32 = 1;
/// `NT_PRFPREG`: the FXSAVE area.
pub const NT_PRFPREG: u32 = 2;
/// `NT_X86_XSTATE`: the XSAVE area.
pub const NT_X86_XSTATE: u32 = 0x202;

/// `PTRACE_SEIZE` with no options: the tracee is not stopped, and is released (not killed) if
/// the tracer dies.
fn ptrace_seize(pid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE takes no pointers (addr and data are 0: no options).
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(r).map(drop)
}

/// `PTRACE_INTERRUPT`: ask a seized tracee to stop.
fn ptrace_interrupt(pid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_INTERRUPT takes no pointers.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_INTERRUPT,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(r).map(drop)
}

/// `PTRACE_CONT` with signal `sig` (0 for none).
fn ptrace_cont(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: PTRACE_CONT takes the signal number as an integer in `data`; no memory is accessed.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_CONT,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as libc::c_long as *mut libc::c_void,
        )
    };
    check(r).map(drop)
}

/// `PTRACE_DETACH`, delivering `sig` (0 for none).
fn ptrace_detach(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: PTRACE_DETACH takes the signal number as an integer in `data`; no memory is
    // accessed.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as libc::c_long as *mut libc::c_void,
        )
    };
    check(r).map(drop)
}

/// `PTRACE_GETREGSET` of note type `nt` into `buf`; returns the number of bytes the kernel filled.
fn ptrace_getregset(pid: i32, nt: u32, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which is valid for writes of `buf.len()` bytes for the whole
    // call; the kernel writes at most `iov_len` bytes and updates `iov_len` to the count written.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            pid,
            nt as usize as *mut libc::c_void,
            (&mut iov as *mut libc::iovec).cast::<libc::c_void>(),
        )
    };
    check(r)?;
    Ok(iov.iov_len.min(buf.len()))
}

/// `PTRACE_GETSIGINFO`: the siginfo of the signal a tracee is stopped for.
fn ptrace_getsiginfo(pid: i32) -> io::Result<[u8; 128]> {
    let mut b = [0u8; 128];
    // SAFETY: `data` points to 128 writable bytes, the size of `siginfo_t`, which is all the
    // kernel writes.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            b.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    check(r)?;
    Ok(b)
}

/// How a waited-for task changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Stopped (ptrace stop): the signal and the `PTRACE_EVENT_*` (0 for none).
    Stopped {
        /// `WSTOPSIG`.
        sig: i32,
        /// `status >> 16`: the ptrace event.
        event: i32,
    },
    /// Something else (continued).
    Other,
}

/// `waitpid(pid, __WALL)`, retried on `EINTR`.
pub fn waitpid(pid: i32) -> io::Result<WaitStatus> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid, writable c_int for the call.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        break;
    }
    Ok(if libc::WIFEXITED(status) {
        WaitStatus::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        WaitStatus::Signaled(libc::WTERMSIG(status))
    } else if libc::WIFSTOPPED(status) {
        WaitStatus::Stopped {
            sig: libc::WSTOPSIG(status),
            event: (status >> 16) & 0xff,
        }
    } else {
        WaitStatus::Other
    })
}

/// `PTRACE_GETREGS`: the general registers of a stopped tracee.
fn ptrace_getregs(pid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: `data` points to a writable user_regs_struct, the size PTRACE_GETREGS writes.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            (&mut r as *mut libc::user_regs_struct).cast::<libc::c_void>(),
        )
    };
    check(rc)?;
    Ok(r)
}

/// `PTRACE_SETREGS`: sets the general registers of a stopped tracee.
fn ptrace_setregs(pid: i32, r: &libc::user_regs_struct) -> io::Result<()> {
    // SAFETY: `data` points to a readable user_regs_struct, the size PTRACE_SETREGS reads; the
    // kernel does not keep the pointer.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            (r as *const libc::user_regs_struct)
                .cast_mut()
                .cast::<libc::c_void>(),
        )
    };
    check(rc).map(drop)
}

/// `PTRACE_SINGLESTEP` with no signal.
fn ptrace_singlestep(pid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SINGLESTEP with data 0 takes no pointers.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SINGLESTEP,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(rc).map(drop)
}

/// `PTRACE_SYSCALL` delivering `sig` (0 for none): run to the next system-call entry or exit.
fn ptrace_syscall(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SYSCALL takes the signal number as an integer in `data`; no memory is
    // accessed.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SYSCALL,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as libc::c_long as *mut libc::c_void,
        )
    };
    check(rc).map(drop)
}

/// `PTRACE_SETREGSET` of note type `nt` from `buf` (the whole register set).
fn ptrace_setregset(pid: i32, nt: u32, buf: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, valid for reads of `buf.len()` bytes for the whole call; for
    // PTRACE_SETREGSET the kernel only reads through `iov_base` (it may update `iov_len`, which
    // lives in our local `iov`), and keeps no pointer after the call.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            pid,
            nt as usize as *mut libc::c_void,
            (&mut iov as *mut libc::iovec).cast::<libc::c_void>(),
        )
    };
    check(r).map(drop)
}

/// `PTRACE_SETOPTIONS` with `opts` (`PTRACE_O_*`).
fn ptrace_setoptions(pid: i32, opts: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SETOPTIONS takes the options as an integer in `data`; no memory is accessed.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            opts as libc::c_long as *mut libc::c_void,
        )
    };
    check(r).map(drop)
}

/// The rseq area a task registered (`struct ptrace_rseq_configuration`).
pub use linux_raw_sys::ptrace::ptrace_rseq_configuration as RseqConfiguration;
const _: () = assert!(std::mem::size_of::<RseqConfiguration>() == 24);

/// `PTRACE_GET_RSEQ_CONFIGURATION`: the tracee's registered rseq area; `rseq_abi_pointer` is 0
/// if none is registered.
fn ptrace_get_rseq(pid: i32) -> io::Result<RseqConfiguration> {
    let mut c = RseqConfiguration {
        rseq_abi_pointer: 0,
        rseq_abi_size: 0,
        signature: 0,
        flags: 0,
        pad: 0,
    };
    // SAFETY: `addr` is the size of the struct `data` points to; the kernel writes at most that
    // many bytes into `c`, which is valid and writable for the call.
    let r = unsafe {
        libc::ptrace(
            linux_raw_sys::ptrace::PTRACE_GET_RSEQ_CONFIGURATION,
            pid,
            std::mem::size_of::<RseqConfiguration>() as *mut libc::c_void,
            (&mut c as *mut RseqConfiguration).cast::<libc::c_void>(),
        )
    };
    check(r)?;
    Ok(c)
}

/// The signal of a system-call stop under `PTRACE_O_TRACESYSGOOD`: `SIGTRAP | 0x80`. Not a
/// valid signal number, which matters if the tracer dies during such a stop: the kernel then
/// "sends" the stop's code to the task, and an invalid number is dropped where a plain
/// `SIGTRAP` would kill it.
pub const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;

/// `PTRACE_EVENT_STOP`: the event of a seized task's interrupt stop or group stop.
pub const PTRACE_EVENT_STOP: i32 = 128;

/// Why a traced task stopped (or ended), from one `waitpid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A signal-delivery stop: `signal` is about to be delivered (resume with it to deliver
    /// it, with 0 to drop it). A single step also ends in one, with `SIGTRAP`. A task traced
    /// with `PTRACE_TRACEME` (not seized) reports its group stops this way too.
    Signal {
        /// The signal.
        signal: i32,
    },
    /// A seized task's interrupt stop (`PTRACE_INTERRUPT`) or group stop
    /// (`PTRACE_EVENT_STOP`; `signal` is `SIGTRAP` for an interrupt, the stop signal for a
    /// group stop).
    Group {
        /// The signal in the status.
        signal: i32,
    },
    /// Another `PTRACE_EVENT_*` stop (clone, exec, exit, ...).
    Event {
        /// The event (`PTRACE_EVENT_*`).
        event: i32,
        /// The signal in the status (`SIGTRAP`).
        signal: i32,
    },
    /// The task exited with this code.
    Exited(i32),
    /// The task was killed by this signal.
    Killed(i32),
    /// Not a stop (a continued task): wait again.
    Continued,
}

impl From<WaitStatus> for Stop {
    fn from(w: WaitStatus) -> Stop {
        match w {
            WaitStatus::Exited(c) => Stop::Exited(c),
            WaitStatus::Signaled(s) => Stop::Killed(s),
            WaitStatus::Stopped { sig, event: 0 } => Stop::Signal { signal: sig },
            WaitStatus::Stopped {
                sig,
                event: PTRACE_EVENT_STOP,
            } => Stop::Group { signal: sig },
            WaitStatus::Stopped { sig, event } => Stop::Event { event, signal: sig },
            WaitStatus::Other => Stop::Continued,
        }
    }
}

impl Stop {
    /// Whether the task is gone (exited or killed).
    pub fn is_end(&self) -> bool {
        matches!(self, Stop::Exited(_) | Stop::Killed(_))
    }
}

/// A task traced (or about to be traced) by this thread: the one handle for stopping, waiting,
/// stepping, reading and writing registers, continuing and letting go.
///
/// It is only a pid: it owns nothing, so who detaches or kills the task on every path stays
/// with the owner (`capture::Frozen`, the restore's child, the twin). Every method is one
/// ptrace request or `waitpid`, and fails with the kernel's error (`ESRCH` once the task is
/// gone or not in a ptrace stop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tracee(i32);

impl Tracee {
    /// The task `pid` (no request is made).
    pub fn new(pid: i32) -> Tracee {
        Tracee(pid)
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.0
    }

    /// `PTRACE_SEIZE` with no options: the task keeps running until [`Tracee::interrupt`].
    pub fn seize(pid: i32) -> io::Result<Tracee> {
        ptrace_seize(pid)?;
        Ok(Tracee(pid))
    }

    /// `PTRACE_INTERRUPT`: asks a seized task to stop ([`Stop::Group`] with `SIGTRAP`).
    pub fn interrupt(&self) -> io::Result<()> {
        ptrace_interrupt(self.0)
    }

    /// `waitpid(__WALL)` for this task: its next stop, or its end.
    pub fn wait(&self) -> io::Result<Stop> {
        waitpid(self.0).map(Stop::from)
    }

    /// `PTRACE_CONT`, delivering `signal` (0 for none). Clears a single step.
    pub fn cont(&self, signal: i32) -> io::Result<()> {
        ptrace_cont(self.0, signal)
    }

    /// `PTRACE_SINGLESTEP` with no signal: runs one instruction (or enters a signal handler),
    /// then [`Stop::Signal`] with `SIGTRAP`. The trap flag this sets is hidden from
    /// [`Tracee::regs`] and cleared by the kernel at the next [`Tracee::cont`] or
    /// [`Tracee::detach`].
    pub fn step(&self) -> io::Result<()> {
        ptrace_singlestep(self.0)
    }

    /// `PTRACE_SYSCALL`, delivering `signal` (0 for none): runs to the next system-call entry
    /// or exit stop ([`Stop::Signal`] with [`SYSCALL_STOP`] once `PTRACE_O_TRACESYSGOOD` is
    /// set). Unlike [`Tracee::step`] it sets no trap flag.
    pub fn syscall(&self, signal: i32) -> io::Result<()> {
        ptrace_syscall(self.0, signal)
    }

    /// `PTRACE_DETACH`, delivering `signal` (0 for none). Clears a single step.
    pub fn detach(&self, signal: i32) -> io::Result<()> {
        ptrace_detach(self.0, signal)
    }

    /// `PTRACE_SETOPTIONS` with `PTRACE_O_*` flags.
    pub fn set_options(&self, opts: i32) -> io::Result<()> {
        ptrace_setoptions(self.0, opts)
    }

    /// `PTRACE_GETREGS`: the general registers.
    pub fn regs(&self) -> io::Result<libc::user_regs_struct> {
        ptrace_getregs(self.0)
    }

    /// `PTRACE_SETREGS`: sets the general registers.
    pub fn set_regs(&self, r: &libc::user_regs_struct) -> io::Result<()> {
        ptrace_setregs(self.0, r)
    }

    /// `PTRACE_GETREGSET` of note `nt` into `buf`; the bytes the kernel filled.
    pub fn regset(&self, nt: u32, buf: &mut [u8]) -> io::Result<usize> {
        ptrace_getregset(self.0, nt, buf)
    }

    /// `PTRACE_SETREGSET` of note `nt` from `buf`.
    pub fn set_regset(&self, nt: u32, buf: &[u8]) -> io::Result<()> {
        ptrace_setregset(self.0, nt, buf)
    }

    /// `PTRACE_GET_RSEQ_CONFIGURATION`.
    pub fn rseq(&self) -> io::Result<RseqConfiguration> {
        ptrace_get_rseq(self.0)
    }

    /// At a signal-delivery stop, the signal's `si_code` and `si_pid` (the sender, for a
    /// signal sent by `kill` or `tgkill`); `None` if the bytes are short.
    pub fn siginfo(&self) -> io::Result<Option<(i32, i32)>> {
        let b = ptrace_getsiginfo(self.0)?;
        // siginfo_t: si_signo, si_errno, si_code (ints), padding, then the union (si_pid).
        let int = |at: usize| b.get(at..at + 4)?.try_into().ok().map(i32::from_le_bytes);
        Ok(int(8).zip(int(16)))
    }

    /// `kill(pid, signal)`.
    pub fn kill(&self, signal: i32) -> io::Result<()> {
        super::process::kill(self.0, signal)
    }
}

/// General registers of all zeros (a base to fill in).
pub fn zeroed_regs() -> libc::user_regs_struct {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
