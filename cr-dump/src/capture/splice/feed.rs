//! The twin's side of the splice write-back: the pipe and the batch area set up in the twin,
//! and the batches of `vmsplice` calls that fill the pipe (see [`super`]).

use crate::capture::memory::open_proc;
use crate::error::{Error, Result};
use crate::sys::inject::{batch_table, BatchCall, Injector, Signals, BATCH_CODE, BATCH_ENTRY};
use crate::sys::{self, Tracee};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Pipes the groups go through, in turn: group `k` (of those spliced) through pipe
/// `k % PIPES`. One pipe shared by the twin's `vmsplice` and our `splice` made the twin spin on
/// the pipe's mutex for as long as each `splice` wrote to the page cache (a fifth of all the
/// CPU of a checkpoint, `perf record -a`): a `vmsplice` takes the mutex even to find the pipe
/// full. So the twin fills one pipe while we empty another, and before it fills pipe `p` again
/// it waits, asleep in a `read` of the turn pipe, for the byte we write there once the group
/// before in `p` is out ([`Call::Turn`]).
pub(super) const PIPES: usize = 8;

/// One call of the twin's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Call {
    /// `vmsplice` of `len` bytes at `addr` into pipe `pipe`.
    Splice { addr: u64, len: u64, pipe: usize },
    /// Wait for the writer's turn byte: the group that last went through the pipe the next
    /// group goes through is out of it.
    Turn,
}

/// Capacity asked for each pipe: a record's data at most, so that the twin, filling a pipe
/// again, waits (asleep) until the group before in it is out whole. The default pipe
/// `/proc/sys/fs/pipe-max-size` allows it to anyone; if refused, the default capacity is kept
/// (correct, only slower).
pub(super) const PIPE_BYTES: usize = cr_format::limits::MAX_DATA_PER_RECORD as usize;

/// `vmsplice` calls per batch (the table: 256 KiB, their iovecs: 64 KiB).
const CAP: usize = 4096;

/// Bytes of one iovec in the twin.
const IOV: u64 = 16;

/// Unregisters the twin's rseq area, if it has one, before any other call is injected: the
/// kernel rewrites an rseq area's CPU fields whenever its task goes back to user mode (as it
/// does for each injected call), and the page holding it is one the image stores, by reference
/// in the pipe. Returns the area (address and bytes) as it was before.
fn quiet_rseq(inj: &Injector) -> Result<Option<(u64, Vec<u8>)>> {
    let t = inj.tracee();
    let pid = t.pid();
    let rs = t
        .rseq()
        .map_err(|e| Error::io(format!("rseq configuration of twin {pid}"), e))?;
    if rs.rseq_abi_pointer == 0 {
        return Ok(None);
    }
    let len = usize::try_from(rs.rseq_abi_size.clamp(32, 256)).unwrap_or(32);
    let mut bytes = vec![0u8; len];
    let mem = open_proc(pid, "mem")?;
    mem.read_exact_at(&mut bytes, rs.rseq_abi_pointer)
        .map_err(|e| Error::io(format!("reading the rseq area of twin {pid}"), e))?;
    let args = [
        rs.rseq_abi_pointer,
        rs.rseq_abi_size.into(),
        sys::abi::RSEQ_FLAG_UNREGISTER,
        rs.signature.into(),
        0,
        0,
    ];
    let r = inj.call(sys::abi::nr::RSEQ, args)?;
    if r != 0 {
        return Err(other(pid, format!("rseq unregister gave {r}")));
    }
    Ok(Some((rs.rseq_abi_pointer, bytes)))
}

/// The pipe set up in a twin, with the scratch area of the batches.
pub(crate) struct TwinPipe {
    inj: Injector,
    pub(super) pid: i32,
    /// The scratch area: a page of [`BATCH_CODE`], then the table, then the iovecs.
    area: u64,
    area_len: u64,
    /// The pipes' write ends in the twin.
    wfds: Vec<u64>,
    /// Their read ends, ours (the twin's are closed), in the same order.
    pub(super) rds: Option<Vec<File>>,
    /// The turn pipe's read end, in the twin.
    turn_rfd: u64,
    /// Its write end, ours (the twin's is closed): closing it ends a twin's wait for its turn.
    pub(super) turn: Option<File>,
    mem: File,
}

/// An error of the splice write-back from twin `pid`.
pub(super) fn other(pid: i32, what: impl std::fmt::Display) -> Error {
    Error::Other(format!("splice write-back from twin {pid}: {what}"))
}

impl TwinPipe {
    /// Sets up the pipe and the batch area in twin `pid`; must be called on the thread that
    /// traces it.
    pub(crate) fn open(pid: i32) -> Result<TwinPipe> {
        let ps = sys::page_size() as u64;
        let inj = Injector::new(Tracee::new(pid), Signals::Drop)?;
        let rseq = quiet_rseq(&inj)?;
        // The code page, the table, the iovecs, then the byte the turn is read into.
        let area_len = ps + CAP as u64 * (BATCH_ENTRY + IOV) + 8;
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let area = inj.call(
            crate::sys::abi::nr::MMAP,
            [0, area_len, prot, flags, u64::MAX, 0],
        )?;
        if area < 0 || area as u64 % ps != 0 {
            return Err(other(pid, format!("mmap of the batch area gave {area}")));
        }
        let area = area as u64;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(crate::procfs::path(pid, "mem"))
            .map_err(|e| crate::procfs::proc_err(pid, "mem", e))?;
        let mut tp = TwinPipe {
            inj,
            pid,
            area,
            area_len,
            wfds: Vec::new(),
            rds: None,
            turn_rfd: u64::MAX,
            turn: None,
            mem,
        };
        tp.setup()?;
        // The rseq area as it was before the calls above made the kernel write into it (now
        // for good: the twin has no rseq left), so its page is stored as the task's was.
        if let Some((addr, bytes)) = rseq {
            tp.mem
                .write_all_at(&bytes, addr)
                .map_err(|e| Error::io(format!("restoring the rseq area of twin {pid}"), e))?;
        }
        Ok(tp)
    }

    fn setup(&mut self) -> Result<()> {
        let (pid, area) = (self.pid, self.area);
        let ps = sys::page_size() as u64;
        let mem_err = |e| Error::io(format!("writing the batch area of twin {pid}"), e);
        self.mem.write_all_at(&BATCH_CODE, area).map_err(mem_err)?;
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        let r = self
            .inj
            .call(sys::abi::nr::MPROTECT, [area, ps, rx, 0, 0, 0])?;
        if r != 0 {
            return Err(other(pid, format!("mprotect of the batch code gave {r}")));
        }
        // The two descriptors of each pipe land in the table's place, rewritten later.
        let fds_at = area + ps;
        let pidfd = sys::pidfd_open(pid).map_err(|e| Error::io(format!("pidfd_open {pid}"), e))?;
        let mut rds = Vec::with_capacity(PIPES);
        for _ in 0..PIPES {
            let (r64, w64) = self.pipe2(fds_at)?;
            let rfd = r64 as i32;
            // Kept at once, so that a failure below still closes it (Drop).
            self.wfds.push(w64);
            let rd: OwnedFd = sys::pidfd_getfd(&pidfd, rfd)
                .map_err(|e| Error::io(format!("pidfd_getfd of fd {rfd} of twin {pid}"), e))?;
            // Ours is then the only read end: if we stop reading, the twin's vmsplice fails
            // (EPIPE) instead of waiting forever (so this one must succeed).
            let r = self.inj.call(sys::abi::nr::CLOSE, [r64, 0, 0, 0, 0, 0])?;
            if r != 0 {
                return Err(other(pid, format!("close of the pipe's read end gave {r}")));
            }
            let _ = sys::pipe::set_pipe_size(&rd, PIPE_BYTES);
            rds.push(File::from(rd));
        }
        self.rds = Some(rds);
        let (rfd, wfd) = self.pipe2(fds_at)?;
        self.turn_rfd = rfd;
        let w: OwnedFd = sys::pidfd_getfd(&pidfd, wfd as i32)
            .map_err(|e| Error::io(format!("pidfd_getfd of fd {wfd} of twin {pid}"), e))?;
        // Ours is then the only write end: if we stop, the twin's wait for its turn ends (EOF).
        let r = self.inj.call(sys::abi::nr::CLOSE, [wfd, 0, 0, 0, 0, 0])?;
        if r != 0 {
            return Err(other(
                pid,
                format!("close of the turn pipe's write end gave {r}"),
            ));
        }
        self.turn = Some(File::from(w));
        Ok(())
    }

    /// A pipe made in the twin (its descriptors written at `fds_at` first): (read, write).
    fn pipe2(&self, fds_at: u64) -> Result<(u64, u64)> {
        let pid = self.pid;
        let r = self
            .inj
            .call(sys::pipe::nr::PIPE2, [fds_at, 0, 0, 0, 0, 0])?;
        if r != 0 {
            return Err(other(pid, format!("pipe2 gave {r}")));
        }
        let mut fds = [0u8; 8];
        self.mem
            .read_exact_at(&mut fds, fds_at)
            .map_err(|e| Error::io(format!("reading the pipe of twin {pid}"), e))?;
        let rfd = i32::from_le_bytes([fds[0], fds[1], fds[2], fds[3]]);
        let wfd = i32::from_le_bytes([fds[4], fds[5], fds[6], fds[7]]);
        match (u32::try_from(rfd), u32::try_from(wfd)) {
            (Ok(r), Ok(w)) if r <= i32::MAX as u32 && w <= i32::MAX as u32 => {
                Ok((r.into(), w.into()))
            }
            _ => Err(other(pid, "pipe2 gave a negative fd")),
        }
    }

    /// Runs `calls` in order, in batches; a `vmsplice` that moves fewer bytes (its pipe
    /// filled) goes on from where it stopped.
    pub(super) fn feed(&self, calls: &[Call], stop: &AtomicBool) -> Result<()> {
        let pid = self.pid;
        let ps = sys::page_size() as u64;
        let table = self.area + ps;
        let iovs = table + CAP as u64 * BATCH_ENTRY;
        let byte = iovs + CAP as u64 * IOV;
        let mem_err = |e| Error::io(format!("writing the batch table of twin {pid}"), e);
        for chunk in calls.chunks(CAP) {
            // Updated as calls go on after moving part of their bytes.
            let mut chunk = chunk.to_vec();
            let mut iov = Vec::with_capacity(chunk.len() * IOV as usize);
            let mut tab = Vec::with_capacity(chunk.len());
            for (k, c) in chunk.iter().enumerate() {
                let (a, len, call) = match *c {
                    Call::Splice { addr, len, pipe } => {
                        let wfd = *self
                            .wfds
                            .get(pipe)
                            .ok_or_else(|| other(pid, format!("internal: no pipe {pipe}")))?;
                        let args = [wfd, iovs + k as u64 * IOV, 1, 0, 0, 0];
                        let nr = sys::pipe::nr::VMSPLICE;
                        (
                            addr,
                            len,
                            BatchCall {
                                nr,
                                args,
                                expect: len,
                            },
                        )
                    }
                    Call::Turn => {
                        let args = [self.turn_rfd, byte, 1, 0, 0, 0];
                        let nr = sys::pipe::nr::READ;
                        (
                            0,
                            0,
                            BatchCall {
                                nr,
                                args,
                                expect: 1,
                            },
                        )
                    }
                };
                // An iovec per call (unused by a read) keeps entry k's at k.
                iov.extend_from_slice(&a.to_le_bytes());
                iov.extend_from_slice(&len.to_le_bytes());
                tab.push(call);
            }
            self.mem.write_all_at(&iov, iovs).map_err(mem_err)?;
            self.mem
                .write_all_at(&batch_table(&tab), table)
                .map_err(mem_err)?;
            let mut from = 0usize;
            while from < chunk.len() {
                if stop.load(Ordering::Acquire) {
                    return Err(other(pid, "the image writer stopped"));
                }
                sys::check_interrupt().map_err(|e| Error::io("checkpoint", e))?;
                let at = table + from as u64 * BATCH_ENTRY;
                let end = self.inj.call_batch(self.area, at, chunk.len() - from)?;
                from += end.done;
                let Some(r) = end.failed else { break };
                let Some(&c) = chunk.get(from) else {
                    return Err(other(pid, "internal: batch ended past its table"));
                };
                if r == -i64::from(libc::EINTR) || r == -i64::from(libc::EAGAIN) {
                    continue;
                }
                let Call::Splice { addr: a, len, pipe } = c else {
                    // EOF: the writer closed its end, having failed (its error is the cause).
                    return Err(other(pid, format!("waiting for the writer gave {r}")));
                };
                let moved = u64::try_from(r)
                    .ok()
                    .filter(|&m| m > 0 && m < len)
                    .ok_or_else(|| {
                        let e = io::Error::from_raw_os_error(i32::try_from(-r).unwrap_or(0));
                        other(pid, format!("vmsplice of {len:#x} bytes at {a:#x}: {e}"))
                    })?;
                // The rest of this call: its iovec and expected result rewritten in place.
                let mut v = (a + moved).to_le_bytes().to_vec();
                v.extend_from_slice(&(len - moved).to_le_bytes());
                let iov_at = iovs + from as u64 * IOV;
                self.mem.write_all_at(&v, iov_at).map_err(mem_err)?;
                let exp_at = table + from as u64 * BATCH_ENTRY + BATCH_ENTRY - 8;
                self.mem
                    .write_all_at(&(len - moved).to_le_bytes(), exp_at)
                    .map_err(mem_err)?;
                if let Some(c) = chunk.get_mut(from) {
                    *c = Call::Splice {
                        addr: a + moved,
                        len: len - moved,
                        pipe,
                    };
                }
            }
        }
        Ok(())
    }
}

impl Drop for TwinPipe {
    fn drop(&mut self) {
        // Best effort: the twin may be gone; a later write-back by reading does not need it.
        self.rds = None;
        self.turn = None;
        let turn = (self.turn_rfd != u64::MAX).then_some(self.turn_rfd);
        for &w in self.wfds.iter().chain(&turn) {
            let _ = self.inj.call(sys::abi::nr::CLOSE, [w, 0, 0, 0, 0, 0]);
        }
        let _ = self
            .inj
            .call(sys::abi::nr::MUNMAP, [self.area, self.area_len, 0, 0, 0, 0]);
    }
}
