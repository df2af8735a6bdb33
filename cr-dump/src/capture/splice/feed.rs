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

/// Pipe capacity asked for (root may go past `/proc/sys/fs/pipe-max-size`); the largest that
/// is granted of these is used.
pub(super) const PIPE_SIZES: [usize; 3] = [16 << 20, 4 << 20, 1 << 20];

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
    /// The pipe's write end in the twin.
    wfd: u64,
    /// Its read end, ours (the twin's is closed).
    pub(super) rd: Option<File>,
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
        let area_len = ps + CAP as u64 * (BATCH_ENTRY + IOV);
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
            wfd: u64::MAX,
            rd: None,
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
        // The two descriptors land in the table's place, rewritten later.
        let fds_at = area + ps;
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
        self.wfd = u64::try_from(wfd).map_err(|_| other(pid, "pipe2 gave a negative fd"))?;
        let pidfd = sys::pidfd_open(pid).map_err(|e| Error::io(format!("pidfd_open {pid}"), e))?;
        let rd: OwnedFd = sys::pidfd_getfd(&pidfd, rfd)
            .map_err(|e| Error::io(format!("pidfd_getfd of fd {rfd} of twin {pid}"), e))?;
        // Ours is then the only read end: if we stop reading, the twin's vmsplice fails (EPIPE)
        // instead of waiting forever (so this one must succeed).
        let r = self
            .inj
            .call(sys::abi::nr::CLOSE, [rfd as u64, 0, 0, 0, 0, 0])?;
        if r != 0 {
            return Err(other(pid, format!("close of the pipe's read end gave {r}")));
        }
        for s in PIPE_SIZES {
            if sys::pipe::set_pipe_size(&rd, s).is_ok() {
                break;
            }
        }
        self.rd = Some(File::from(rd));
        Ok(())
    }

    /// Runs `vmsplice` over `calls` (address, length) in order, in batches; a call that moves
    /// fewer bytes (the pipe filled) goes on from where it stopped.
    pub(super) fn feed(&self, calls: &[(u64, u64)], stop: &AtomicBool) -> Result<()> {
        let pid = self.pid;
        let ps = sys::page_size() as u64;
        let table = self.area + ps;
        let iovs = table + CAP as u64 * BATCH_ENTRY;
        let mem_err = |e| Error::io(format!("writing the batch table of twin {pid}"), e);
        for chunk in calls.chunks(CAP) {
            // Updated as calls go on after moving part of their bytes.
            let mut chunk = chunk.to_vec();
            let mut iov = Vec::with_capacity(chunk.len() * IOV as usize);
            let mut tab = Vec::with_capacity(chunk.len());
            for (k, &(a, len)) in chunk.iter().enumerate() {
                iov.extend_from_slice(&a.to_le_bytes());
                iov.extend_from_slice(&len.to_le_bytes());
                let args = [self.wfd, iovs + k as u64 * IOV, 1, 0, 0, 0];
                let (nr, expect) = (sys::pipe::nr::VMSPLICE, len);
                tab.push(BatchCall { nr, args, expect });
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
                let Some(&(a, len)) = chunk.get(from) else {
                    return Err(other(pid, "internal: batch ended past its table"));
                };
                if r == -i64::from(libc::EINTR) || r == -i64::from(libc::EAGAIN) {
                    continue;
                }
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
                    *c = (a + moved, len - moved);
                }
            }
        }
        Ok(())
    }
}

impl Drop for TwinPipe {
    fn drop(&mut self) {
        // Best effort: the twin may be gone; a later write-back by reading does not need it.
        self.rd = None;
        if self.wfd != u64::MAX {
            let _ = self
                .inj
                .call(sys::abi::nr::CLOSE, [self.wfd, 0, 0, 0, 0, 0]);
        }
        let _ = self
            .inj
            .call(sys::abi::nr::MUNMAP, [self.area, self.area_len, 0, 0, 0, 0]);
    }
}
