//! Asking a frozen task what `/proc` does not show: system calls injected into it
//! ([`crate::sys::inject`]) with a small scratch area for the structures they return.
//!
//! The scratch area is the task's own stack, [`SCRATCH`] bytes below the red zone (`rsp - 128`):
//! its bytes are read first through `/proc/PID/mem` and written back when the questions are
//! done ([`Ask::finish`], or on drop). Chosen over an injected `mmap`/`munmap` pair because it
//! adds no injected call (each is a window in which a vanished cr-dump harms the task, issue
//! 13) and leaves the task's mappings untouched. Only if that part of the stack is not mapped
//! (a stack pointer at the very bottom of its VMA) is a page mapped for it and unmapped after.
//!
//! If cr-dump dies in the middle, the bytes below the red zone stay overwritten: the x86-64
//! ABI gives the task no claim on them (a signal frame may overwrite them at any time), so
//! nothing the task relies on changes. A page mapped for the purpose would stay mapped.

use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::abi::nr;
use crate::sys::inject::{Injector, Signals};
use crate::sys::Tracee;
use std::fs::File;
use std::os::unix::fs::FileExt;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Bytes of scratch (every answer is at most 64 bytes; two slots).
pub(super) const SCRATCH: u64 = 128;
/// The x86-64 red zone below the stack pointer, which the task's code may use.
const RED_ZONE: u64 = 128;

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
}

impl Ask {
    /// Starts asking `pid` (frozen under our ptrace; no seccomp filter).
    pub fn new(pid: i32) -> Result<Ask> {
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
        let at = rsp.wrapping_sub(RED_ZONE + SCRATCH) & !15;
        let mut ask = Ask {
            inj,
            mem,
            pid,
            at,
            saved: None,
            done: false,
        };
        let mut b = vec![0u8; SCRATCH as usize];
        if rsp > RED_ZONE + SCRATCH + 16 && ask.mem.read_exact_at(&mut b, at).is_ok() {
            ask.saved = Some(b);
        } else {
            let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
            let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
            ask.at = ask.call_ok(
                "mmap scratch",
                nr::MMAP,
                [0, 4096, prot, flags, u64::MAX, 0],
            )?;
        }
        Ok(ask)
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

    /// Reads a `T` at `addr` of the task (a scratch slot).
    pub fn get<T: FromBytes>(&self, addr: u64) -> Result<T> {
        let mut b = vec![0u8; std::mem::size_of::<T>()];
        self.mem.read_exact_at(&mut b, addr).map_err(|e| {
            Error::io(
                format!("reading scratch of pid {} at {addr:#x}", self.pid),
                e,
            )
        })?;
        T::read_from_bytes(&b)
            .map_err(|_| Error::Other(format!("scratch of pid {}: short read", self.pid)))
    }

    /// Puts the scratch bytes back (or unmaps the page): the task's memory is as before.
    pub fn finish(mut self) -> Result<()> {
        self.done = true;
        self.undo()
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
