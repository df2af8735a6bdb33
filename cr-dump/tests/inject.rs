//! The one syscall injector (`cr_dump::sys::inject`) against a real process: results and
//! errnos come back, the task's registers are exactly as before, and the task runs on as if
//! nothing had happened (its interrupted `read` restarts).

use cr_dump::sys::abi::nr;
use cr_dump::sys::inject::{Injector, Signals};
use cr_dump::sys::{Stop, Tracee, NT_PRFPREG, NT_PRSTATUS};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Seizes and stops `pid` (signals that come first are delivered).
fn freeze(pid: i32) -> Tracee {
    let t = Tracee::seize(pid).unwrap();
    t.interrupt().unwrap();
    loop {
        match t.wait().unwrap() {
            Stop::Group { .. } => return t,
            Stop::Signal { signal } => {
                t.cont(signal).unwrap();
                t.interrupt().unwrap();
            }
            s => panic!("unexpected {s:?}"),
        }
    }
}

/// The general and FPU registers, as the kernel reports them.
fn regs(t: Tracee) -> (Vec<u8>, Vec<u8>) {
    let mut gpr = vec![0u8; 27 * 8];
    let n = t.regset(NT_PRSTATUS, &mut gpr).unwrap();
    gpr.truncate(n);
    let mut fx = vec![0u8; 512];
    let n = t.regset(NT_PRFPREG, &mut fx).unwrap();
    fx.truncate(n);
    (gpr, fx)
}

/// Waits until `pid` is blocked in system call `nr` (per `/proc/PID/syscall`).
fn wait_in_syscall(pid: i32, nr: u64) {
    let t0 = Instant::now();
    let want = format!("{nr} ");
    while t0.elapsed() < Duration::from_secs(10) {
        let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if s.starts_with(&want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("pid {pid} never blocked in system call {nr}");
}

#[test]
fn injected_calls_leave_the_task_as_it_was() {
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = i32::try_from(cat.id()).unwrap();
    wait_in_syscall(pid, 0); // read
    let t = freeze(pid);
    let before = regs(t);
    let r = t.regs().unwrap();
    // Stopped inside `read`: the kernel will restart it.
    assert_eq!(r.orig_rax, 0);
    assert_eq!(r.rax as i64, -512, "rax is -ERESTARTSYS");

    let inj = Injector::new(t, Signals::Resend).unwrap();
    assert_eq!(inj.call(nr::GETPID, [0; 6]).unwrap(), i64::from(pid));
    assert_eq!(regs(t), before, "registers changed by getpid");
    // close(-1): fails with EBADF.
    let bad = u64::from(u32::MAX);
    assert_eq!(
        inj.call(nr::CLOSE, [bad, 0, 0, 0, 0, 0]).unwrap(),
        -i64::from(libc::EBADF)
    );
    assert_eq!(regs(t), before, "registers changed by a failing close");
    t.detach(0).unwrap();

    // It runs on: the interrupted read restarts and gets what we write.
    let mut stdin = cat.stdin.take().unwrap();
    let mut out = BufReader::new(cat.stdout.take().unwrap());
    stdin.write_all(b"after the injection\n").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "after the injection\n");
    drop(stdin);
    assert!(cr_tests::wait_timeout(&mut cat, cr_tests::process_timeout()).success());
}

#[test]
fn injecting_into_a_dead_task_fails_cleanly() {
    let sleeper = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = i32::try_from(sleeper.id()).unwrap();
    let t = freeze(pid);
    let inj = Injector::new(t, Signals::Resend).unwrap();
    // A call that never returns to user mode: exit_group. The injector reports the end instead
    // of a result (and has no registers left to restore).
    let exit_group = 231;
    let e = inj.call(exit_group, [7, 0, 0, 0, 0, 0]).unwrap_err();
    assert!(e.to_string().contains("exited (7)"), "{e}");
    // We are its parent and its tracer: the injector's wait reaped it.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(sleeper);
}
