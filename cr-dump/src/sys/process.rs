//! Process-level calls: signals, forks, pidfds, `_exit`, and the handlers that turn an
//! interrupting signal into a clean unwind ([`catch_interrupts`]).

use super::check;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// `kill(pid, sig)`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes only integers.
    let r = unsafe { libc::kill(pid, sig) };
    check(r.into()).map(drop)
}

/// The nice value of thread `pid` (`getpriority(PRIO_PROCESS)`).
pub fn nice(pid: i32) -> io::Result<i32> {
    // getpriority returns the value itself, which may be -1: errno tells an error.
    // SAFETY: __errno_location returns this thread's errno, valid to write.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority takes only integers.
    let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t) };
    match io::Error::last_os_error() {
        e if r == -1 && e.raw_os_error() != Some(0) => Err(e),
        _ => Ok(r),
    }
}

/// The calling thread's id (`gettid`), for the calls that take a thread (`set_nice`).
pub fn gettid() -> i32 {
    // SAFETY: gettid takes nothing and cannot fail.
    unsafe { libc::gettid() }
}

/// Sets the nice value of thread `pid` (`setpriority(PRIO_PROCESS)`).
pub fn set_nice(pid: i32, nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes only integers.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) };
    check(r.into()).map(drop)
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes two integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = check(fd)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// `pidfd_getfd(pidfd, targetfd, 0)`: a duplicate of file descriptor `targetfd` of the task.
pub fn pidfd_getfd(
    pidfd: &std::os::fd::OwnedFd,
    targetfd: i32,
) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_getfd takes three integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), targetfd, 0) };
    let fd = check(fd)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// Forks a child that only stops itself under ptrace, as the empty shell of a restored task:
/// in the child, `dup2(stdio, 0/1/2)` if `stdio` is given, `ptrace(PTRACE_TRACEME)`, a
/// `SIGSTOP` to itself, then `pause()` forever (the tracer replaces its whole address space and
/// registers before it runs again). With `pid`, the child is made by `clone3` with `set_tid`
/// = `pid` in this pid namespace (which needs `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN` over
/// it: `EPERM` otherwise; `EEXIST` if the pid is taken); else by `fork`. Returns the child's
/// pid; the caller waits for its stop.
///
/// Between the fork and the stop the child makes only raw system calls (no libc state that
/// caches the thread id, which `clone3` leaves stale) and allocates nothing, so the caller may
/// have other threads.
pub fn fork_traced_child(stdio: Option<i32>, pid: Option<i32>) -> io::Result<i32> {
    let r = match pid {
        None => {
            // SAFETY: fork has no memory-safety preconditions by itself; the child (r == 0)
            // runs only `traced_child_body`, which never returns.
            unsafe { libc::fork() }
        }
        Some(p) => {
            let tids = [libc::pid_t::from(p)];
            // SAFETY: clone_args is plain data; all-zero is valid (no flags, no pointers).
            let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
            args.exit_signal = libc::SIGCHLD as u64;
            args.set_tid = tids.as_ptr() as u64;
            args.set_tid_size = 1;
            // SAFETY: `args` and `tids` live across the call; without CLONE_VM and with no
            // stack given, clone3 behaves as fork (the child runs on a copy of this stack and
            // returns 0 here); the child runs only `traced_child_body`, which never returns.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const libc::clone_args,
                    std::mem::size_of::<libc::clone_args>(),
                )
            };
            i32::try_from(r).unwrap_or(-1)
        }
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    if r == 0 {
        traced_child_body(stdio);
    }
    Ok(r)
}

/// The child of [`fork_traced_child`]: stdio, `PTRACE_TRACEME`, `SIGSTOP`, `pause` forever.
fn traced_child_body(stdio: Option<i32>) -> ! {
    // SAFETY: only raw system calls with integer arguments (dup2, ptrace, getpid, kill,
    // pause, exit_group): async-signal-safe, no allocation, no lock, no cached thread id.
    unsafe {
        if let Some(fd) = stdio {
            for t in 0..3 {
                if libc::syscall(libc::SYS_dup2, fd, t) == -1 {
                    libc::syscall(libc::SYS_exit_group, 126);
                }
            }
        }
        if libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
            libc::syscall(libc::SYS_exit_group, 127);
        }
        let me = libc::syscall(libc::SYS_getpid);
        libc::syscall(libc::SYS_kill, me, libc::SIGSTOP);
        loop {
            libc::syscall(libc::SYS_pause);
        }
    }
}

/// `fork()`, only in a single-threaded process (checked in `/proc/self/status`; refused with
/// `EWOULDBLOCK` otherwise), so that the child may run any code: no lock can be held by a
/// thread that does not exist in the child. Returns 0 in the child, its pid in the parent.
pub fn fork_single_threaded() -> io::Result<i32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    if threads != Some(1) {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "fork refused: the process is not single-threaded",
        ));
    }
    // SAFETY: the process has one thread (checked just above; only this thread could create
    // another meanwhile, and it is here), so the child starts with every lock free and every
    // data structure consistent, as after any fork of a single-threaded program.
    let r = unsafe { libc::fork() };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// `dup2(fd, target)`: `target` becomes a copy of `fd` (closing what it was).
pub fn dup_to(fd: std::os::fd::BorrowedFd<'_>, target: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 takes two integers; `fd` is open for the call (borrowed). Replacing
    // `target` is what the caller asks for.
    let r = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `_exit(code)`: ends the process at once, without running exit handlers or flushing stdio
/// buffers (for a forked child that must not flush copies of its parent's buffers).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns; no Rust invariant depends on
    // destructors running.
    unsafe { libc::_exit(code) }
}

/// The first of [`INTERRUPT_SIGNALS`] that arrived since [`catch_interrupts`] (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// The signals that ask cr-dump to stop: a terminal's Ctrl-C and Ctrl-\, `kill` and `timeout`'s
/// default, a hang-up.
pub const INTERRUPT_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The write end of the watchdog's pipe ([`catch_interrupts`]); -1 before it exists.
static WAKE: AtomicI32 = AtomicI32::new(-1);

/// How long (milliseconds) the unwinding after an interrupting signal may take before cr-dump
/// gives it up and exits at once ([`catch_interrupts`]); default [`DEFAULT_GRACE`].
pub const GRACE_ENV: &str = "CR_DUMP_INTERRUPT_GRACE_MS";

/// The default of [`GRACE_ENV`]: an unwind takes milliseconds, up to a second or two to kill
/// and reap the twin of a task of many GiB.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

extern "C" fn note_interrupt(sig: libc::c_int) {
    // An atomic store and a write(2): async-signal-safe. The first signal wins.
    let _ = INTERRUPTED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: errno is this thread's, read and put back around the write so that the
        // interrupted code sees its own; the write's buffer is a live one-byte array. The pipe
        // is non-blocking: a full pipe (the watchdog already woken) loses nothing.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, [1u8].as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Installs handlers for [`INTERRUPT_SIGNALS`] that only note the signal ([`interrupted`]):
/// the work in progress notices it at its next safe point and unwinds (a task let go as it
/// was, a twin killed and reaped, no temporary file). A second signal is noted the same way,
/// not acted on: `timeout` sends its signal twice (to the command, then to its process group),
/// and a default action taken mid-injection would do what this unwinding avoids; SIGKILL
/// remains for whoever must stop cr-dump at once. `SA_RESTART` keeps blocking calls from
/// failing with `EINTR` meanwhile.
///
/// A watchdog thread makes sure the signal is obeyed even if the work never reaches a safe
/// point (a wait that never ends, a deadlock): `grace` after the first signal it exits the
/// process at once with status 128 + the signal, as a SIGKILL would, and the checkpoint's
/// guard (`sys::guard`) puts the task back as it does after a SIGKILL.
pub fn catch_interrupts(grace: Duration) -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the live array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: both descriptors were just made and are owned by nothing else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor owned here, with integer arguments.
    check(unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) }.into())?;
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || watchdog(rd, grace))?;
    // The write end lives as long as the process: the handler may write at any time.
    let _ = WAKE.compare_exchange(-1, wr.into_raw_fd(), Ordering::SeqCst, Ordering::SeqCst);
    for sig in INTERRUPT_SIGNALS {
        // SAFETY: sigaction is plain data; all-zero is a valid value (empty mask, no flags).
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = note_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: `sa` is a valid sigaction whose handler only does an atomic store
        // (async-signal-safe); the old action is not asked for (null).
        let r = unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
        check(r.into())?;
    }
    Ok(())
}

/// Waits for the handler's byte, then `grace`, then ends the process if it still runs.
fn watchdog(rd: OwnedFd, grace: Duration) {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reads at most one byte into the live one-byte buffer.
        let r = unsafe { libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        // A byte with no signal noted here came from a forked child of ours (one that has
        // not exec'ed yet shares the pipe): not ours to act on.
        if r == 1 && interrupted().is_some() {
            break;
        }
        if r == 1 || (r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted) {
            continue;
        }
        return;
    }
    std::thread::sleep(grace);
    let sig = interrupted().unwrap_or(libc::SIGTERM);
    let msg = format!(
        "cr-dump: {} did not end the work within {} ms: exiting at once (the guard lets the \
         task go)\n",
        signal_name(sig),
        grace.as_millis()
    );
    // The message goes from another thread, and is waited for a moment only: the stuck work
    // may be a write to the same stderr (a full pipe), or hold the standard library's lock.
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new().spawn(move || {
        // SAFETY: writes the live message to descriptor 2; a short or failed write is let be.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_millis(200));
    exit_now(128 + sig);
}

/// The signal that asked cr-dump to stop, if one did (see [`catch_interrupts`]).
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `Err(Interrupted)` if a signal asked cr-dump to stop: for the checks at safe points.
pub fn check_interrupt() -> io::Result<()> {
    match interrupted() {
        None => Ok(()),
        // Not `ErrorKind::Interrupted`: `write_all` and friends retry that one forever.
        Some(s) => Err(io::Error::other(format!(
            "interrupted by {}",
            signal_name(s)
        ))),
    }
}

/// The name of an interrupting signal (`SIGINT`, ...).
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        s => format!("signal {s}"),
    }
}
