//! Batches of injected system calls: [`BATCH_CODE`] in a stopped twin
//! ([`Injector::call_batch`]) and [`LIVE_BATCH_CODE`] in a live task ([`Injector::call_live`]).
//! See [`super`].

use super::*;

/// The code [`Injector::call_batch`] runs in the task: the system calls of a table, one
/// after the other, until one gives another result than its entry expects or the table
/// ends, then a trap. `r12` points at the first entry, `r13` just past the last; each entry
/// is [`BATCH_ENTRY`] bytes: the call's number, its six arguments, the result expected
/// (eight little-endian words). `syscall` clobbers only `rax`, `rcx` and `r11`, so `r12` and
/// `r13` survive every call.
///
/// ```text
/// 0:  4d 39 ec           cmp r12, r13
/// 3:  73 31              jae 54              ; the table is done
/// 5:  49 8b 04 24        mov rax, [r12]      ; number
/// 9:  49 8b 7c 24 08     mov rdi, [r12+8]    ; the six arguments
/// 14: 49 8b 74 24 10     mov rsi, [r12+16]
/// 19: 49 8b 54 24 18     mov rdx, [r12+24]
/// 24: 4d 8b 54 24 20     mov r10, [r12+32]
/// 29: 4d 8b 44 24 28     mov r8, [r12+40]
/// 34: 4d 8b 4c 24 30     mov r9, [r12+48]
/// 39: 0f 05              syscall
/// 41: 49 3b 44 24 38     cmp rax, [r12+56]   ; the result expected?
/// 46: 75 06              jne 54              ; no: stop, r12 at the entry, rax its result
/// 48: 49 83 c4 40        add r12, 64
/// 52: eb ca              jmp 0
/// 54: cc                 int3                ; SIGTRAP: cr-dump reads r12 and rax
/// ```
pub const BATCH_CODE: [u8; 55] = [
    0x4d, 0x39, 0xec, 0x73, 0x31, 0x49, 0x8b, 0x04, 0x24, 0x49, 0x8b, 0x7c, 0x24, 0x08, 0x49, 0x8b,
    0x74, 0x24, 0x10, 0x49, 0x8b, 0x54, 0x24, 0x18, 0x4d, 0x8b, 0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44,
    0x24, 0x28, 0x4d, 0x8b, 0x4c, 0x24, 0x30, 0x0f, 0x05, 0x49, 0x3b, 0x44, 0x24, 0x38, 0x75, 0x06,
    0x49, 0x83, 0xc4, 0x40, 0xeb, 0xca, 0xcc,
];

/// Bytes per entry of a batch table (see [`BATCH_CODE`]).
pub const BATCH_ENTRY: u64 = 64;

/// One system call of a batch and the result it must give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchCall {
    /// The call's number.
    pub nr: u64,
    /// Its arguments.
    pub args: [u64; 6],
    /// The result that lets the batch go on (an address for `mmap`, 0 for `mprotect`).
    pub expect: u64,
}

/// The table [`BATCH_CODE`] reads for `calls`.
pub fn batch_table(calls: &[BatchCall]) -> Vec<u8> {
    let mut t = Vec::with_capacity(calls.len() * BATCH_ENTRY as usize);
    for c in calls {
        for w in [c.nr].iter().chain(&c.args).chain([&c.expect]) {
            t.extend_from_slice(&w.to_le_bytes());
        }
    }
    t
}

/// How a batch ended: the calls run with their expected result, and the result of the one
/// that stopped it, if one did (at index `done`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchEnd {
    /// Calls that gave their expected result.
    pub done: usize,
    /// The unexpected result (a negative errno, or another value) of call `done`.
    pub failed: Option<i64>,
}

impl Injector {
    /// Runs `n` system calls in one go, a fresh child's only ([`Signals::Drop`]): the task
    /// runs [`BATCH_CODE`], which the caller wrote at `code` (an executable mapping of the
    /// task), over the table of `n` entries ([`batch_table`]) written at `table`, until the
    /// table ends or a call gives another result than expected; then its registers are put
    /// back. One `PTRACE_CONT` and one stop for the whole table, where [`Injector::call`]
    /// costs a single step and four register transfers per call.
    pub fn call_batch(&self, code: u64, table: u64, n: usize) -> Result<BatchEnd> {
        let pid = self.tracee.pid();
        let err = |what: &str, e: std::io::Error| {
            Error::io(
                format!("{what} (a batch of {n} system calls in pid {pid})"),
                e,
            )
        };
        if self.signals != Signals::Drop {
            return Err(Error::Other(format!(
                "a batch of system calls runs only in a fresh child, not in pid {pid}"
            )));
        }
        let end = table_end(table, n)?;
        let t = self.tracee;
        let saved = t.regs().map_err(|e| err("PTRACE_GETREGS", e))?;
        let mut r = saved;
        r.rip = code;
        r.orig_rax = u64::MAX; // not in a system call: no restart logic for these registers
        (r.r12, r.r13) = (table, end);
        let res = t
            .set_regs(&r)
            .map_err(|e| err("PTRACE_SETREGS", e))
            .and_then(|()| self.run_batch(code, table, n));
        let back = t
            .set_regs(&saved)
            .map_err(|e| err("PTRACE_SETREGS (the task's own)", e));
        let v = res?;
        back?;
        Ok(v)
    }

    /// Lets the batch code run to its trap; how the batch ended.
    fn run_batch(&self, code: u64, table: u64, n: usize) -> Result<BatchEnd> {
        let t = self.tracee;
        let pid = t.pid();
        let err = |what: &str, e: std::io::Error| {
            Error::io(
                format!("{what} (a batch of {n} system calls in pid {pid})"),
                e,
            )
        };
        let trap = code + BATCH_CODE.len() as u64;
        loop {
            t.cont(0).map_err(|e| err("PTRACE_CONT", e))?;
            let signal = match t.wait().map_err(|e| err("waitpid", e))? {
                Stop::Signal { signal } => signal,
                Stop::Group { .. } | Stop::Event { .. } | Stop::Continued => continue,
                Stop::Exited(c) => return Err(self.died(0, format!("exited ({c}) in a batch"))),
                Stop::Killed(s) => {
                    return Err(self.died(0, format!("killed by signal {s} in a batch")))
                }
            };
            let now = t.regs().map_err(|e| err("PTRACE_GETREGS", e))?;
            if signal == libc::SIGTRAP && now.rip == trap {
                let done = now.r12.wrapping_sub(table) / BATCH_ENTRY;
                let done = usize::try_from(done).unwrap_or(usize::MAX).min(n);
                let failed = (done < n).then_some(now.rax as i64);
                return Ok(BatchEnd { done, failed });
            }
            // A fault of the code itself would only repeat: give up. Any other signal is
            // dropped (nothing else knows this child).
            if matches!(
                signal,
                libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
            ) {
                return Err(Error::Other(format!(
                    "a batch of {n} system calls in pid {pid} faulted (signal {signal}) at \
                     {:#x}",
                    now.rip
                )));
            }
        }
    }
}

/// The code [`Injector::call_live`] runs in a live task: the system calls of a table, one
/// after the other, each result stored in its entry, then a `tgkill` of the task itself with a
/// signal whose default action is to ignore it, which stops it under our ptrace (a
/// signal-delivery stop), then `jmp .`. `r12` points at the first entry, `r13` just past the
/// last, `r14`, `r15` and `rbp` hold the `tgkill`'s arguments; each entry is [`BATCH_ENTRY`]
/// bytes: the call's number, its six arguments, then a word that is, before the call, 0 or
/// the address of an earlier entry's result word (the call's first argument is then that
/// result: an address an `mmap` gave), and after the call its result. `syscall` clobbers only
/// `rax`, `rcx` and `r11`.
///
/// Unlike [`BATCH_CODE`]'s trap, nothing here harms the task if cr-dump vanishes midway: the
/// rest of the table runs (questions, and the `munmap` of what the table mapped), the signal
/// is ignored (no tracer: the kernel drops it), and the task spins on the `jmp` in user mode
/// until the guard puts its registers back, as at the stub.
///
/// ```text
/// 0:  4d 39 ec           cmp r12, r13
/// 3:  73 3c              jae 65              ; the table is done
/// 5:  49 8b 7c 24 08     mov rdi, [r12+8]
/// 10: 49 8b 44 24 38     mov rax, [r12+56]   ; first argument from an earlier result?
/// 15: 48 85 c0           test rax, rax
/// 18: 74 03              je 23
/// 20: 48 8b 38           mov rdi, [rax]
/// 23: 49 8b 74 24 10     mov rsi, [r12+16]
/// 28: 49 8b 54 24 18     mov rdx, [r12+24]
/// 33: 4d 8b 54 24 20     mov r10, [r12+32]
/// 38: 4d 8b 44 24 28     mov r8, [r12+40]
/// 43: 4d 8b 4c 24 30     mov r9, [r12+48]
/// 48: 49 8b 04 24        mov rax, [r12]      ; number
/// 52: 0f 05              syscall
/// 54: 49 89 44 24 38     mov [r12+56], rax   ; its result
/// 59: 49 83 c4 40        add r12, 64
/// 63: eb bf              jmp 0
/// 65: b8 ea 00 00 00     mov eax, 234        ; tgkill(r14, r15, rbp)
/// 70: 4c 89 f7           mov rdi, r14
/// 73: 4c 89 fe           mov rsi, r15
/// 76: 48 89 ea           mov rdx, rbp
/// 79: 0f 05              syscall
/// 81: eb fe              jmp 81              ; stopped here by the signal, or spins
/// ```
pub const LIVE_BATCH_CODE: [u8; 83] = [
    0x4d, 0x39, 0xec, 0x73, 0x3c, 0x49, 0x8b, 0x7c, 0x24, 0x08, 0x49, 0x8b, 0x44, 0x24, 0x38, 0x48,
    0x85, 0xc0, 0x74, 0x03, 0x48, 0x8b, 0x38, 0x49, 0x8b, 0x74, 0x24, 0x10, 0x49, 0x8b, 0x54, 0x24,
    0x18, 0x4d, 0x8b, 0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44, 0x24, 0x28, 0x4d, 0x8b, 0x4c, 0x24, 0x30,
    0x49, 0x8b, 0x04, 0x24, 0x0f, 0x05, 0x49, 0x89, 0x44, 0x24, 0x38, 0x49, 0x83, 0xc4, 0x40, 0xeb,
    0xbf, 0xb8, 0xea, 0x00, 0x00, 0x00, 0x4c, 0x89, 0xf7, 0x4c, 0x89, 0xfe, 0x48, 0x89, 0xea, 0x0f,
    0x05, 0xeb, 0xfe,
];

/// Offset of the final `jmp .` in [`LIVE_BATCH_CODE`]: where the task is when its stop
/// signal stops it.
const LIVE_SPIN: u64 = 81;

/// The signals [`Injector::call_live`] may stop a task with: their default action is to
/// ignore them (SIGCONT, which also resumes stopped tasks, is left out).
pub const LIVE_STOP_SIGNALS: [i32; 3] = [libc::SIGURG, libc::SIGWINCH, libc::SIGCHLD];

/// The number [`Msg::Start`] names for a batch (no system call has it).
pub const BATCH_NR: u64 = u64::MAX;

/// One entry of a [`LIVE_BATCH_CODE`] table: `nr(args)`, its first argument replaced by the
/// result of the entry `first_from` names (an index into the same table) if given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveCall {
    /// The call's number.
    pub nr: u64,
    /// Its arguments.
    pub args: [u64; 6],
    /// An earlier entry whose result is the first argument.
    pub first_from: Option<usize>,
}

/// The table [`LIVE_BATCH_CODE`] reads for `calls`, to be written at `table`; `None` if an
/// entry takes its first argument from one that is not earlier.
pub fn live_table(calls: &[LiveCall], table: u64) -> Option<Vec<u8>> {
    let mut t = Vec::with_capacity(calls.len() * BATCH_ENTRY as usize);
    for (i, c) in calls.iter().enumerate() {
        let from = match c.first_from {
            Some(k) if k < i => table.checked_add((k as u64) * BATCH_ENTRY + 56)?,
            Some(_) => return None,
            None => 0,
        };
        for w in [c.nr].iter().chain(&c.args).chain([&from]) {
            t.extend_from_slice(&w.to_le_bytes());
        }
    }
    Some(t)
}

impl Injector {
    /// Whether [`Injector::call_live`] can run here: a live task whose vDSO padding took
    /// [`LIVE_BATCH_CODE`].
    pub fn can_batch(&self) -> bool {
        self.signals == Signals::Resend && self.stub.as_ref().is_some_and(|s| s.batch.is_some())
    }

    /// Runs the `n` system calls of the table ([`live_table`]) the caller wrote at `table` in
    /// a live task, in one go: the task runs [`LIVE_BATCH_CODE`], each result lands in its
    /// entry, and the task stops itself with `stop` (one of [`LIVE_STOP_SIGNALS`] that it
    /// neither blocks, handles nor has pending: the caller checks), which is dropped. Its
    /// registers are then put back and it stays in that signal-delivery stop: freed there by
    /// a vanished cr-dump, it goes on through the kernel's signal path (the signal ignored,
    /// a call it was stopped in restarted from its registers) as from an interrupt stop.
    /// One `PTRACE_CONT` and one stop for the whole table, where [`Injector::call`] costs
    /// three stops per call, each a wait for a CPU on a busy machine. The calls must not
    /// create tasks (`clone`) nor block. Signals that arrive meanwhile are sent again after.
    pub fn call_live(&self, table: u64, n: usize, stop: i32) -> Result<()> {
        let pid = self.tracee.pid();
        let code = match &self.stub {
            Some(Stub {
                batch: Some(at), ..
            }) if self.signals == Signals::Resend => *at,
            _ => {
                return Err(Error::Other(format!(
                    "no room for the batch code in the vDSO of pid {pid}"
                )))
            }
        };
        if !LIVE_STOP_SIGNALS.contains(&stop) {
            return Err(Error::Other(format!(
                "internal: signal {stop} cannot end a batch"
            )));
        }
        let err = |what: &str, e: std::io::Error| {
            Error::io(
                format!("{what} (a batch of {n} system calls in pid {pid})"),
                e,
            )
        };
        let end = table_end(table, n)?;
        let t = self.tracee;
        let saved = t.regs().map_err(|e| err("PTRACE_GETREGS", e))?;
        guard::publish(&Msg::Start {
            pid,
            nr: BATCH_NR,
            arg0: n as u64,
            at: code,
            span: LIVE_BATCH_CODE.len() as u64 - 1,
            regs: Box::new(guard::regs_to_words(&saved)),
        });
        let mut r = saved;
        r.rip = code;
        r.orig_rax = u64::MAX; // not in a system call: no restart logic for these registers
        (r.r12, r.r13) = (table, end);
        (r.r14, r.r15, r.rbp) = (pid as u64, pid as u64, stop as u64);
        let mut pending = Vec::new();
        let res = t
            .set_regs(&r)
            .map_err(|e| err("PTRACE_SETREGS", e))
            .and_then(|()| self.run_live(code + LIVE_SPIN, stop, &mut pending));
        // At our signal's stop the task's own registers are all it needs; anywhere else (a
        // fault, an error) it is brought back to an interrupt stop as after any call.
        let back = match res {
            Ok(()) => t
                .set_regs(&saved)
                .map_err(|e| err("PTRACE_SETREGS (the task's own)", e)),
            Err(_) => self.settle(BATCH_NR, &saved, &mut pending),
        };
        match back {
            Ok(()) => guard::publish(&Msg::Settled { pid }),
            Err(_) => self.unsettled.set(true),
        }
        for s in pending {
            let _ = t.kill(s);
        }
        res?;
        back
    }

    /// Lets the live batch run to its stop signal at `spin`.
    fn run_live(&self, spin: u64, stop: i32, pending: &mut Vec<i32>) -> Result<()> {
        let t = self.tracee;
        let pid = t.pid();
        let err = |what: &str, e: std::io::Error| {
            Error::io(format!("{what} (a batch of system calls in pid {pid})"), e)
        };
        loop {
            t.cont(0).map_err(|e| err("PTRACE_CONT", e))?;
            let signal = match t.wait().map_err(|e| err("waitpid", e))? {
                Stop::Signal { signal } => signal,
                Stop::Group { .. } | Stop::Event { .. } | Stop::Continued => continue,
                Stop::Exited(c) => return Err(self.died(BATCH_NR, format!("exited ({c})"))),
                Stop::Killed(s) => return Err(self.died(BATCH_NR, format!("killed by signal {s}"))),
            };
            let now = t.regs().map_err(|e| err("PTRACE_GETREGS", e))?;
            if signal == stop && now.rip == spin {
                // The table is done. The same signal from elsewhere, pending when the task
                // sent its own, took its place (a standard signal is queued once): kept.
                let from_itself = t
                    .siginfo()
                    .map_err(|e| err("PTRACE_GETSIGINFO", e))?
                    .is_some_and(|(code, from)| code == SI_TKILL && from == pid);
                if !from_itself {
                    self.keep(pending, signal);
                }
                return Ok(());
            }
            // A fault of the code itself would only repeat (and is not the task's): give up.
            if matches!(
                signal,
                libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
            ) && now.rip.wrapping_sub(spin - LIVE_SPIN) <= LIVE_SPIN
            {
                return Err(Error::Other(format!(
                    "a batch of system calls in pid {pid} faulted (signal {signal}) at {:#x}",
                    now.rip
                )));
            }
            self.keep(pending, signal);
        }
    }
}

/// `SI_TKILL`: the `si_code` of a signal sent by `tgkill`.
const SI_TKILL: i32 = -6;

/// The end of a table of `n` [`BATCH_ENTRY`]-byte entries at `table`.
fn table_end(table: u64, n: usize) -> Result<u64> {
    (n as u64)
        .checked_mul(BATCH_ENTRY)
        .and_then(|l| table.checked_add(l))
        .ok_or_else(|| Error::Other(format!("a batch of {n} calls at {table:#x}")))
}
