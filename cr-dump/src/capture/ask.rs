//! Asking a frozen task what `/proc` does not show: system calls injected into it
//! ([`crate::sys::inject`]) with a small scratch area for the structures they return.
//!
//! The scratch area is the task's own stack, below the red zone (`rsp - 128`): its bytes are
//! read first through `/proc/PID/mem` and written back when the questions are done
//! ([`Ask::finish`], or on drop). Chosen over an injected `mmap`/`munmap` pair because it
//! adds no injected call (each is a window in which a vanished cr-dump harms the task, issue
//! 13) and leaves the task's mappings untouched. Only if that part of the stack is not mapped
//! (a stack pointer at the very bottom of its VMA) is a page mapped for it and unmapped after.
//!
//! **Batches.** Questions are queued ([`Ask::queue`]) and asked together ([`Ask::run`]): the
//! task runs them all in one go ([`Injector::call_live`]), one stop for the lot instead of
//! three per question, each of which waits for a CPU when the machine is busy (1 GiB, two
//! `yes` loops: the ~15 questions of a checkpoint took 10-30 ms one by one). That needs the
//! batch code in the vDSO's padding, [`SCRATCH_BATCH`] bytes of stack below the red zone and a
//! signal to end the batch that the task neither blocks, handles nor has pending; without them
//! each question is asked on its own when queued, with the same results.
//!
//! If cr-dump dies in the middle, the bytes below the red zone stay overwritten: the x86-64
//! ABI gives the task no claim on them (a signal frame may overwrite them at any time), so
//! nothing the task relies on changes. A page mapped for the purpose would stay mapped.

use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::abi::nr;
use crate::sys::inject::{live_table, Injector, LiveCall, Signals, LIVE_STOP_SIGNALS};
use crate::sys::Tracee;
use std::fs::File;
use std::os::unix::fs::FileExt;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Bytes of scratch (every answer is at most 64 bytes; two slots).
pub(super) const SCRATCH: u64 = 128;
/// The x86-64 red zone below the stack pointer, which the task's code may use.
const RED_ZONE: u64 = 128;
/// Questions per batch (more are asked in several).
const BATCH_CAP: u64 = 48;
/// Bytes of answer per question.
const ANSWER: u64 = 64;
/// Scratch for batches: the two slots, the answers, the table.
pub(super) const SCRATCH_BATCH: u64 = SCRATCH + BATCH_CAP * (ANSWER + 64);

/// A queued question: its index among all asked by one [`Ask`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Q(usize);

/// Questions to one frozen task.
pub(super) struct Ask {
    inj: Injector,
    mem: File,
    pid: i32,
    /// Scratch address.
    at: u64,
    /// What was there (stack), or `None` for a page mapped for the purpose.
    saved: Option<Vec<u8>>,
    done: bool,
    /// The signal that ends a batch, if the task can run batches.
    stop: Option<i32>,
    /// Queued and not yet asked (the first has index `answers.len()`).
    queue: Vec<LiveCall>,
    /// Result and answer bytes of every question asked.
    answers: Vec<(i64, [u8; ANSWER as usize])>,
}

impl Ask {
    /// Starts asking `pid` (frozen under our ptrace; no seccomp filter). `busy` are the
    /// signals (bit n-1 for signal n) the task blocks, handles or has pending, from its
    /// `/proc/PID/status` read while frozen: a batch cannot end with one of them.
    pub fn new(pid: i32, busy: u64) -> Result<Ask> {
        let t = Tracee::new(pid);
        let inj = Injector::new(t, Signals::Resend)?;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(procfs::path(pid, "mem"))
            .map_err(|e| procfs::proc_err(pid, "mem", e))?;
        let rsp = t
            .regs()
            .map_err(|e| Error::io(format!("PTRACE_GETREGS of pid {pid}"), e))?
            .rsp;
        let stop = LIVE_STOP_SIGNALS
            .into_iter()
            .find(|&s| busy & (1u64 << (s - 1)) == 0)
            .filter(|_| inj.can_batch());
        let mut ask = Ask {
            inj,
            mem,
            pid,
            at: 0,
            saved: None,
            done: false,
            stop: None,
            queue: Vec::new(),
            answers: Vec::new(),
        };
        // The larger scratch if batches can run and the stack has it, else the two slots.
        let sizes = if stop.is_some() {
            &[SCRATCH_BATCH, SCRATCH][..]
        } else {
            &[SCRATCH][..]
        };
        // Only bytes of the stack's VMA: on this kernel a read of `/proc/PID/mem` below it
        // grows the stack (a deep stack: its pointer near the VMA's start).
        let maps = File::open(procfs::path(pid, "maps")).ok();
        let inside = |at: u64| {
            let q = maps
                .as_ref()
                .map(|m| crate::sys::pagemap::procmap_query(m, at));
            match q {
                Some(Ok(Some((r, _)))) => r.start <= at && r.end >= rsp - RED_ZONE,
                Some(Ok(None)) => false,
                // No PROCMAP_QUERY (before Linux 6.11): the two slots only, as always.
                Some(Err(_)) | None => at + SCRATCH + RED_ZONE + 16 > rsp,
            }
        };
        for &size in sizes {
            let at = rsp.wrapping_sub(RED_ZONE + size) & !15;
            let mut b = vec![0u8; size as usize];
            if rsp > RED_ZONE + size + 16 && inside(at) && ask.mem.read_exact_at(&mut b, at).is_ok()
            {
                (ask.at, ask.saved) = (at, Some(b));
                ask.stop = stop.filter(|_| size == SCRATCH_BATCH);
                return Ok(ask);
            }
        }
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        ask.at = ask.call_ok(
            "mmap scratch",
            nr::MMAP,
            [0, 4096, prot, flags, u64::MAX, 0],
        )?;
        Ok(ask)
    }

    /// Queues `nr` with the arguments `args` gives for the address of the question's answer
    /// area (64 bytes, zeroed); asked at the next [`Ask::run`] (or at once when the task
    /// cannot run batches).
    pub fn queue(&mut self, nr: u64, args: impl FnOnce(u64) -> [u64; 6]) -> Result<Q> {
        self.enqueue(nr, None, args)
    }

    /// [`Ask::queue`] with the first argument the result of the earlier question `from` (an
    /// address an `mmap` gave).
    pub fn queue_from(
        &mut self,
        nr: u64,
        from: Q,
        args: impl FnOnce(u64) -> [u64; 6],
    ) -> Result<Q> {
        self.enqueue(nr, Some(from.0), args)
    }

    fn enqueue(
        &mut self,
        nr: u64,
        from: Option<usize>,
        args: impl FnOnce(u64) -> [u64; 6],
    ) -> Result<Q> {
        if self.stop.is_none() {
            // One by one: in the first slot.
            let out = self.slot(0);
            self.put(out, &[0u8; ANSWER as usize])?;
            let mut a = args(out);
            if let Some(k) = from {
                a[0] = self.result_of(k)? as u64;
            }
            let r = self.call(nr, a)?;
            let mut b = [0u8; ANSWER as usize];
            self.mem.read_exact_at(&mut b, out).map_err(|e| {
                Error::io(
                    format!("reading scratch of pid {} at {out:#x}", self.pid),
                    e,
                )
            })?;
            self.answers.push((r, b));
            return Ok(Q(self.answers.len() - 1));
        }
        if self.queue.len() as u64 >= BATCH_CAP {
            self.run()?;
        }
        let i = self.queue.len() as u64;
        let mut a = args(self.at + SCRATCH + i * ANSWER);
        let first = self.answers.len();
        // From an earlier batch: its result is known.
        let first_from = match from {
            Some(k) if k >= first => Some(k - first),
            Some(k) => {
                a[0] = self.result_of(k)? as u64;
                None
            }
            None => None,
        };
        let call = LiveCall {
            nr,
            args: a,
            first_from,
        };
        self.queue.push(call);
        Ok(Q(first + i as usize))
    }

    /// Asks every queued question, in one batch.
    pub fn run(&mut self) -> Result<()> {
        let (Some(stop), false) = (self.stop, self.queue.is_empty()) else {
            return Ok(());
        };
        let n = self.queue.len() as u64;
        let answers = self.at + SCRATCH;
        let table = answers + BATCH_CAP * ANSWER;
        let t = live_table(&self.queue, table)
            .ok_or_else(|| Error::Other("internal: a question from a later one".into()))?;
        // Zeroed answers, then the table, in one write.
        let mut b = vec![0u8; (BATCH_CAP * ANSWER) as usize];
        b.extend_from_slice(&t);
        self.mem
            .write_all_at(&b, answers)
            .map_err(|e| Error::io(format!("writing the questions into pid {}", self.pid), e))?;
        self.inj.call_live(table, n as usize, stop)?;
        self.mem
            .read_exact_at(&mut b, answers)
            .map_err(|e| Error::io(format!("reading the answers of pid {}", self.pid), e))?;
        let (outs, entries) = b.split_at((BATCH_CAP * ANSWER) as usize);
        for (out, entry) in outs
            .chunks_exact(ANSWER as usize)
            .zip(entries.chunks_exact(64))
        {
            let word = |b: &[u8]| b.try_into().map(u64::from_le_bytes).unwrap_or(0);
            let r = word(entry.get(56..64).unwrap_or(&[])) as i64;
            let mut a = [0u8; ANSWER as usize];
            a.copy_from_slice(out);
            self.answers.push((r, a));
        }
        self.queue.clear();
        Ok(())
    }

    fn result_of(&self, k: usize) -> Result<i64> {
        self.answers
            .get(k)
            .map(|a| a.0)
            .ok_or_else(|| Error::Other("internal: a question not yet asked".into()))
    }

    /// The result of question `q` (a negative errno on failure), once asked.
    pub fn result(&self, q: Q) -> Result<i64> {
        self.result_of(q.0)
    }

    /// As [`Ask::result`], failing on a negative result with `what`.
    pub fn result_ok(&self, what: &str, q: Q) -> Result<u64> {
        let r = self.result(q)?;
        u64::try_from(r).map_err(|_| {
            let e = std::io::Error::from_raw_os_error(i32::try_from(-r).unwrap_or(0));
            Error::io(format!("{what} (injected into pid {})", self.pid), e)
        })
    }

    /// The answer of question `q` read as a `T`, once asked.
    pub fn answer<T: FromBytes>(&self, q: Q) -> Result<T> {
        let a = self
            .answers
            .get(q.0)
            .ok_or_else(|| Error::Other("internal: a question not yet asked".into()))?;
        T::read_from_prefix(&a.1)
            .map(|(v, _)| v)
            .map_err(|_| Error::Other(format!("scratch of pid {}: short answer", self.pid)))
    }

    /// Runs `nr` in the task; its result (a negative errno on failure).
    pub fn call(&mut self, nr: u64, args: [u64; 6]) -> Result<i64> {
        self.inj.call(nr, args)
    }

    /// As [`Ask::call`], failing on a negative result with `what`.
    pub fn call_ok(&mut self, what: &str, nr: u64, args: [u64; 6]) -> Result<u64> {
        let r = self.call(nr, args)?;
        u64::try_from(r).map_err(|_| {
            let e = std::io::Error::from_raw_os_error(i32::try_from(-r).unwrap_or(0));
            Error::io(format!("{what} (injected into pid {})", self.pid), e)
        })
    }

    /// Address of scratch slot `i` (0 or 1, 64 bytes each).
    pub fn slot(&self, i: u64) -> u64 {
        self.at + 64 * i.min(1)
    }

    /// Writes `v` at `addr` of the task (a scratch slot).
    pub fn put<T: IntoBytes + Immutable>(&self, addr: u64, v: &T) -> Result<()> {
        self.mem.write_all_at(v.as_bytes(), addr).map_err(|e| {
            Error::io(
                format!("writing scratch of pid {} at {addr:#x}", self.pid),
                e,
            )
        })
    }

    /// Asks what is still queued, then puts the scratch bytes back (or unmaps the page): the
    /// task's memory is as before.
    pub fn finish(mut self) -> Result<()> {
        let r = self.run();
        self.done = true;
        let u = self.undo();
        r.and(u)
    }

    fn undo(&mut self) -> Result<()> {
        match self.saved.take() {
            Some(b) => self.mem.write_all_at(&b, self.at).map_err(|e| {
                Error::io(
                    format!("restoring the stack of pid {} at {:#x}", self.pid, self.at),
                    e,
                )
            }),
            None => {
                let at = self.at;
                self.call_ok("munmap scratch", nr::MUNMAP, [at, 4096, 0, 0, 0, 0])
                    .map(drop)
            }
        }
    }
}

impl Drop for Ask {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.undo();
        }
    }
}
