//! Steps 1 to 10 of the module docs (but 6, the pages: [`super::pages`]): the injected system
//! calls that turn the child's address space and task state into the image's, then its
//! registers.

use super::child::Child;
use super::plan::{hole, special_areas, Plan, VmaPlan};
use super::{other, SCRATCH_LEN};
use crate::error::Result;
use crate::span::AddrRange;
use crate::sys::abi::{self, nr, PrctlMmMap};
use crate::sys::inject::{batch_table, BatchCall, BATCH_CODE, BATCH_ENTRY};
use crate::sys::{self, ptrace::zeroed_regs};
use cr_format::raw;
use std::os::fd::AsRawFd;

const RW: u64 = (libc::PROT_READ | libc::PROT_WRITE) as u64;
const PRIVATE_ANON: u64 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;

/// Steps 1 to 4: the child keeps only its vDSO and vvar (moved to the image's addresses) and a
/// scratch area for the structures passed by pointer.
pub(super) fn clear_space(c: &mut Child, plan: &Plan) -> Result<()> {
    let cm = super::plan::task_maps(c.pid())?;
    // 1. rseq.
    let rs = c
        .tracee()
        .rseq()
        .map_err(|e| c.io("rseq configuration", e))?;
    if rs.rseq_abi_pointer != 0 {
        c.call_ok(
            "rseq unregister",
            nr::RSEQ,
            [
                rs.rseq_abi_pointer,
                rs.rseq_abi_size.into(),
                abi::RSEQ_FLAG_UNREGISTER,
                rs.signature.into(),
                0,
                0,
            ],
        )?;
    }
    // 2. Scratch.
    let scratch = plan.scratch;
    let flags = PRIVATE_ANON | abi::MAP_FIXED_NOREPLACE;
    let args = [scratch, SCRATCH_LEN, RW, flags, u64::MAX, 0];
    let got = c.call_ok("mmap scratch", nr::MMAP, args)?;
    if got != scratch {
        return Err(other(format!(
            "scratch mapped at {got:#x}, not {scratch:#x}"
        )));
    }
    // 3. Everything of the child but the special areas and the scratch.
    let special = |p: &str| p == "[vdso]" || p.starts_with("[vvar") || p == "[vsyscall]";
    for (r, _) in cm.iter().filter(|m| !special(&m.1)) {
        c.call_ok("munmap", nr::MUNMAP, [r.start, r.len(), 0, 0, 0, 0])?;
    }
    // 4. The special areas to the image's addresses.
    if plan.delta != 0 {
        move_special(c, plan, &cm)?;
    }
    Ok(())
}

/// Step 4: moves the child's vDSO and vvar by `plan.delta`, through a temporary place so that
/// the old and new ranges never collide.
fn move_special(c: &mut Child, plan: &Plan, cm: &[(AddrRange, String)]) -> Result<()> {
    let sp = special_areas(cm);
    let (Some(lo), Some(hi)) = (
        sp.iter().map(|m| m.start).min(),
        sp.iter().map(|m| m.end).max(),
    ) else {
        return Err(other("the new child has no vDSO or vvar"));
    };
    let vdso_old = cm
        .iter()
        .find(|m| m.1 == "[vdso]")
        .map(|m| m.0.start)
        .ok_or_else(|| other("the new child has no vDSO"))?;
    let delta = plan.delta;
    let mut busy = sp.clone();
    busy.push(AddrRange {
        start: plan.scratch,
        end: plan.scratch + SCRATCH_LEN,
    });
    busy.push(AddrRange {
        start: lo.wrapping_add(delta),
        end: hi.wrapping_add(delta),
    });
    busy.extend(plan.vmas.iter().map(|v| v.range));
    let tmp = hole(&busy, hi - lo).ok_or_else(|| other("no room to move the vDSO"))?;
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    for (from, to) in [(lo, tmp), (tmp, lo.wrapping_add(delta))] {
        for r in &sp {
            let src = r.start - lo + from;
            let dst = r.start - lo + to;
            let len = r.len();
            let got = c.call_ok(
                "mremap vDSO/vvar",
                nr::MREMAP,
                [src, len, len, flags, dst, 0],
            )?;
            if got != dst {
                return Err(other(format!("mremap to {dst:#x} gave {got:#x}")));
            }
            if r.start == vdso_old {
                let inj = c.injector_mut();
                let at = inj.at() - from + to;
                inj.set_at(at);
            }
        }
    }
    Ok(())
}

/// Before the fork: each shared anonymous VMA whose object is a memfd the task has open (a
/// `FILE_MEMFD` File record, not a duplicate, with its whole contents, of the same inode)
/// becomes a shared mapping of the memfd restore prepared for that descriptor, opened again
/// (readable, and writable if a VMA of it is): one object for the descriptor and the mapping,
/// as in the task. Its contents are then the memfd's (step 6 writes no page of it). A
/// writable mapping of a memfd sealed against writing (`F_SEAL_FUTURE_WRITE` set after it
/// was mapped) cannot be made again: refused here.
pub(super) fn join_memfds(
    top: &cr_format::read::Image<'_>,
    plan: &mut Plan,
    fplan: &super::files::FilePlan,
) -> Result<()> {
    const WRITE_SEALS: u64 = (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) as u64;
    for (f, _) in top.files() {
        let r = &f.raw;
        let complete = r.flags.get() & raw::FILE_HAS_DATA != 0 || r.size.get() == 0;
        if f.ftype() != raw::FILE_MEMFD
            || f.role() != raw::ROLE_FD
            || r.dup_of.get() != raw::DUP_NONE
            || r.dev_major.get() != 0
            || !complete
        {
            continue;
        }
        let (ino, fd) = (r.inode.get(), r.fd.get());
        let joined = |v: &VmaPlan| v.shared_anon() && v.inode == ino && v.inode != 0;
        if !plan.vmas.iter().any(joined) {
            continue;
        }
        let Some(src) = fplan.prepared(fd) else {
            continue;
        };
        let writable = plan
            .vmas
            .iter()
            .any(|v| joined(v) && v.prot & raw::PROT_WRITE != 0);
        let name = String::from_utf8_lossy(f.path);
        if writable && f.param(0) & WRITE_SEALS != 0 {
            return Err(other(format!(
                "fd {fd} ({name}) is sealed against writing (seals {:#x}) but mapped writable: \
                 restore cannot map it so again",
                f.param(0)
            )));
        }
        let mode = if writable {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
        let again = format!("/proc/self/fd/{}", src.as_raw_fd());
        let m = sys::files::open_flags(std::path::Path::new(&again), mode, 0).map_err(|e| {
            crate::error::Error::io(format!("fd {fd} ({name}): opening the memfd to map it"), e)
        })?;
        let idx = plan.files.len();
        plan.files.push(std::fs::File::from(m));
        for v in plan.vmas.iter_mut().filter(|v| joined(v)) {
            // A shared mapping of a file from here on: mapped from it, its pages not written.
            v.file = Some(idx);
            v.kind = raw::VMA_FILE;
        }
    }
    Ok(())
}

/// Step 5: the image's VMAs, readable and writable until their pages are in (private file
/// mappings with pages, shared anonymous memory, anonymous VMAs kept apart), or with their
/// recorded protection at once ([`VmaPlan::final_prot_at_map`]). The `mmap` and `mremap` calls go in batches ([`Batch`]).
pub(super) fn map_vmas(c: &Child, plan: &Plan) -> Result<()> {
    let mut shared_done: Vec<u64> = Vec::new();
    let mut pool = ApartPool::new(c, plan)?;
    let pool_range: Vec<AddrRange> = pool.iter().map(|p| p.range()).collect();
    let mut batch = Batch::new(c, plan, &pool_range)?;
    for v in plan.vmas.iter().filter(|v| !v.special()) {
        let (start, len) = (v.range.start, v.range.len());
        let fixed = libc::MAP_FIXED as u64;
        if let Some(fi) = v.file {
            let f = plan
                .files
                .get(fi)
                .ok_or_else(|| other(format!("VMA {start:#x}: no file {fi}")))?;
            let fd = u64::try_from(f.as_raw_fd()).map_err(|_| other("a negative descriptor"))?;
            let prot = if v.final_prot_at_map() {
                u64::from(v.prot)
            } else {
                RW
            };
            let flags = if v.shared() {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            } as u64;
            let args = [start, len, prot, flags | fixed, fd, v.offset];
            batch.push(c, "mmap file", v, nr::MMAP, args, start)?;
        } else if v.shared_anon() {
            if v.inode != 0 && shared_done.contains(&v.inode) {
                continue;
            }
            // Its own calls, each depending on the one before: after the batch's.
            batch.flush(c)?;
            let mut avoid = pool_range.clone();
            avoid.extend(batch.range());
            map_shared_anon(c, plan, v, &avoid)?;
            shared_done.push(v.inode);
        } else {
            let mut flags = PRIVATE_ANON | fixed;
            if v.flags & raw::VMA_GROWSDOWN != 0 {
                flags |= libc::MAP_GROWSDOWN as u64;
            }
            match pool.as_mut().filter(|_| v.apart) {
                Some(pool) => {
                    let (nr, args) = pool.move_to(v)?;
                    batch.push(c, "mremap", v, nr, args, start)?;
                }
                None => {
                    let prot = if v.final_prot_at_map() {
                        u64::from(v.prot)
                    } else {
                        RW
                    };
                    let args = [start, len, prot, flags, u64::MAX, 0];
                    batch.push(c, "mmap", v, nr::MMAP, args, start)?;
                }
            }
        }
    }
    batch.finish(c)?;
    if let Some(p) = pool {
        c.call_ok("munmap", nr::MUNMAP, [p.base, p.len, 0, 0, 0, 0])?;
    }
    Ok(())
}

/// Injected calls run many at a time ([`crate::sys::inject::Injector::call_batch`]): one
/// stop of the child per [`Batch::CAP`] calls instead of one per call, which is most of
/// restore's time with tens of thousands of VMAs. Its area in the child, in a free place: a
/// page of [`BATCH_CODE`] (made read-only and executable) and the table; unmapped by
/// [`Batch::finish`]. Without an area (the child refused to make it executable) each call is
/// injected alone.
struct Batch {
    area: Option<u64>,
    calls: Vec<BatchCall>,
    /// What each call is and the VMA it is for (for the error).
    what: Vec<(&'static str, AddrRange)>,
}

impl Batch {
    /// Calls per batch (the table's size is `CAP * BATCH_ENTRY`: 256 KiB).
    const CAP: usize = 4096;

    /// The area's length: a page of code, then the table.
    fn len() -> u64 {
        sys::page_size() as u64 + Batch::CAP as u64 * BATCH_ENTRY
    }

    /// Makes the area in a place none of the image's VMAs, the scratch area or `avoid` use.
    fn new(c: &Child, plan: &Plan, avoid: &[AddrRange]) -> Result<Batch> {
        let mut busy = busy(plan);
        busy.extend_from_slice(avoid);
        let len = Batch::len();
        let at = hole(&busy, len).ok_or_else(|| other("no room for the batch area"))?;
        let flags = PRIVATE_ANON | abi::MAP_FIXED_NOREPLACE;
        let got = c.call_ok(
            "mmap batch area",
            nr::MMAP,
            [at, len, RW, flags, u64::MAX, 0],
        )?;
        if got != at {
            return Err(other(format!("batch area mapped at {got:#x}, not {at:#x}")));
        }
        c.write(at, &BATCH_CODE)?;
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        let ps = sys::page_size() as u64;
        let area = match c.call(nr::MPROTECT, [at, ps, rx, 0, 0, 0])? {
            0 => Some(at),
            _ => {
                c.call_ok("munmap batch area", nr::MUNMAP, [at, len, 0, 0, 0, 0])?;
                None
            }
        };
        Ok(Batch {
            area,
            calls: Vec::with_capacity(Batch::CAP),
            what: Vec::with_capacity(Batch::CAP),
        })
    }

    /// Its area's range, if it has one.
    fn range(&self) -> Option<AddrRange> {
        self.area.and_then(|a| AddrRange::at(a, Batch::len()))
    }

    /// Adds call `nr(args)` for VMA `v`, which must give `expect`; runs the batch when full.
    fn push(
        &mut self,
        c: &Child,
        what: &'static str,
        v: &VmaPlan,
        nr: u64,
        args: [u64; 6],
        expect: u64,
    ) -> Result<()> {
        self.calls.push(BatchCall { nr, args, expect });
        self.what.push((what, v.range));
        if self.calls.len() >= Batch::CAP || self.area.is_none() {
            self.flush(c)?;
        }
        Ok(())
    }

    /// Runs the calls pushed; the first that gives another result than expected fails the
    /// restore, naming its VMA.
    fn flush(&mut self, c: &Child) -> Result<()> {
        if self.calls.is_empty() {
            return Ok(());
        }
        let (done, failed) = match self.area {
            Some(at) => {
                let table = at + sys::page_size() as u64;
                c.write(table, &batch_table(&self.calls))?;
                let end = c.injector().call_batch(at, table, self.calls.len())?;
                (end.done, end.failed)
            }
            None => self.one_by_one(c)?,
        };
        if let Some(r) = failed {
            let ((what, range), call) =
                self.what
                    .get(done)
                    .zip(self.calls.get(done))
                    .ok_or_else(|| {
                        other(format!(
                            "internal: batch call {done} of {}",
                            self.calls.len()
                        ))
                    })?;
            let vma = format!("{what} of VMA {:#x}-{:#x}", range.start, range.end);
            if r < 0 && r > -4096 {
                return Err(c.errno(&vma, r));
            }
            return Err(other(format!("{vma} gave {r:#x}, not {:#x}", call.expect)));
        }
        self.calls.clear();
        self.what.clear();
        Ok(())
    }

    /// The calls injected one at a time (no area); as [`crate::sys::inject::BatchEnd`].
    fn one_by_one(&self, c: &Child) -> Result<(usize, Option<i64>)> {
        for (k, call) in self.calls.iter().enumerate() {
            let r = c.call(call.nr, call.args)?;
            if r as u64 != call.expect {
                return Ok((k, Some(r)));
            }
        }
        Ok((self.calls.len(), None))
    }

    /// Runs what is left and unmaps the area.
    fn finish(mut self, c: &Child) -> Result<()> {
        self.flush(c)?;
        if let Some(at) = self.area {
            let args = [at, Batch::len(), 0, 0, 0, 0];
            c.call_ok("munmap batch area", nr::MUNMAP, args)?;
        }
        Ok(())
    }
}

/// Where the VMAs kept apart ([`VmaPlan::apart`]) are made before they are moved into place:
/// one anonymous mapping in a free place, cut into pieces, one per VMA, every other one in
/// its second half (a page between the halves), so that no two pieces that become neighbours
/// were neighbours in the pool. Each piece keeps the page offset it had in the pool, which
/// does not follow its neighbour's, so they stay apart. The page between the halves is written
/// first: it gives the pool an `anon_vma`, which every piece keeps (the kernel moves an
/// anonymous VMA without one to the page offset of its new place, where it would merge).
struct ApartPool {
    base: u64,
    len: u64,
    /// Where each piece is, in the order of the VMAs.
    at: std::vec::IntoIter<u64>,
}

impl ApartPool {
    /// The pool (mapped), if any VMA is to be kept apart.
    fn new(c: &Child, plan: &Plan) -> Result<Option<ApartPool>> {
        let ps = sys::page_size() as u64;
        let lens: Vec<u64> = plan
            .vmas
            .iter()
            .filter(|v| v.apart)
            .map(|v| v.range.len())
            .collect();
        if lens.is_empty() {
            return Ok(None);
        }
        let half: u64 = lens.iter().step_by(2).sum();
        let len = lens.iter().sum::<u64>() + ps;
        let base = hole(&busy(plan), len).ok_or_else(|| other("no room to place VMAs"))?;
        let (mut first, mut second) = (base, base + half + ps);
        let at: Vec<u64> = lens
            .iter()
            .enumerate()
            .map(|(k, l)| {
                let next = if k % 2 == 0 { &mut first } else { &mut second };
                let a = *next;
                *next += l;
                a
            })
            .collect();
        let flags = PRIVATE_ANON | abi::MAP_FIXED_NOREPLACE;
        let got = c.call_ok("mmap", nr::MMAP, [base, len, RW, flags, u64::MAX, 0])?;
        if got != base {
            return Err(other(format!("mmap at {base:#x} gave {got:#x}")));
        }
        c.write(base + half, &[0])?;
        Ok(Some(ApartPool {
            base,
            len,
            at: at.into_iter(),
        }))
    }

    /// Its address range.
    fn range(&self) -> AddrRange {
        AddrRange {
            start: self.base,
            end: self.base + self.len,
        }
    }

    /// The call that moves the next piece to `v`'s place (`mremap`; it returns `v`'s start).
    fn move_to(&mut self, v: &VmaPlan) -> Result<(u64, [u64; 6])> {
        let (start, len) = (v.range.start, v.range.len());
        let at = self
            .at
            .next()
            .ok_or_else(|| other(format!("internal: no piece of the pool for {start:#x}")))?;
        let mflags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        Ok((nr::MREMAP, [at, len, len, mflags, start, 0]))
    }
}

/// The image's VMAs and the scratch area: what a temporary place must avoid.
fn busy(plan: &Plan) -> Vec<AddrRange> {
    let mut busy: Vec<AddrRange> = plan.vmas.iter().map(|w| w.range).collect();
    busy.push(AddrRange {
        start: plan.scratch,
        end: plan.scratch + SCRATCH_LEN,
    });
    busy
}

/// One shared anonymous object and every VMA of it (same inode): a single VMA at offset 0 is
/// mapped in place; otherwise the object is mapped whole in a free place and each VMA moved
/// (`mremap`) from its offset in it to its address, so they share one object at the recorded
/// offsets, as in the task; what no VMA took is unmapped.
fn map_shared_anon(c: &Child, plan: &Plan, v: &VmaPlan, avoid: &[AddrRange]) -> Result<()> {
    let group: Vec<&VmaPlan> = if v.inode == 0 {
        vec![v]
    } else {
        let g = plan
            .vmas
            .iter()
            .filter(|w| w.shared_anon() && w.inode == v.inode);
        g.collect()
    };
    let shared_anon = (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64;
    if let [only] = group.as_slice() {
        if only.offset == 0 {
            let (start, len) = (only.range.start, only.range.len());
            let flags = shared_anon | libc::MAP_FIXED as u64;
            let got = c.call_ok(
                "mmap shared",
                nr::MMAP,
                [start, len, RW, flags, u64::MAX, 0],
            )?;
            if got != start {
                return Err(other(format!("mmap shared at {start:#x} gave {got:#x}")));
            }
            return Ok(());
        }
    }
    let size = group
        .iter()
        .map(|w| w.offset.saturating_add(w.range.len()))
        .max()
        .unwrap_or(0);
    let mut busy = busy(plan);
    busy.extend_from_slice(avoid);
    let tmp = hole(&busy, size)
        .ok_or_else(|| other(format!("no room for shared memory of {size:#x} bytes")))?;
    let flags = shared_anon | abi::MAP_FIXED_NOREPLACE;
    let got = c.call_ok("mmap shared", nr::MMAP, [tmp, size, RW, flags, u64::MAX, 0])?;
    if got != tmp {
        return Err(other(format!("mmap shared at {tmp:#x} gave {got:#x}")));
    }
    let mflags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    for w in &group {
        let (dst, len) = (w.range.start, w.range.len());
        let args = [tmp + w.offset, len, len, mflags, dst, 0];
        let got = c.call_ok("mremap shared", nr::MREMAP, args)?;
        if got != dst {
            return Err(other(format!("mremap shared to {dst:#x} gave {got:#x}")));
        }
    }
    c.call_ok("munmap", nr::MUNMAP, [tmp, size, 0, 0, 0, 0])?;
    Ok(())
}

/// Step 7: each VMA created writable gets its recorded protection (in batches), then its madvise flags and
/// locks (a failure is a warning naming the VMA and why).
pub(super) fn protect(c: &Child, plan: &Plan, warnings: &mut Vec<String>) -> Result<()> {
    let to_protect =
        |v: &&VmaPlan| !v.special() && !v.final_prot_at_map() && u64::from(v.prot) != RW;
    if plan.vmas.iter().any(|v| to_protect(&v)) {
        let mut batch = Batch::new(c, plan, &[])?;
        for v in plan.vmas.iter().filter(to_protect) {
            let args = [v.range.start, v.range.len(), v.prot.into(), 0, 0, 0];
            batch.push(c, "mprotect", v, nr::MPROTECT, args, 0)?;
        }
        batch.finish(c)?;
    }
    for v in plan.vmas.iter().filter(|v| !v.special() && v.attrs != 0) {
        set_attrs(c, v, warnings)?;
    }
    mlock_future(c, plan, warnings)?;
    check_layout(c, plan, warnings)
}

/// `mlockall(MCL_FUTURE[|MCL_ONFAULT])` if the task had it (after every VMA is made: the
/// image's own locks are per VMA). A refusal is a warning: without `CAP_IPC_LOCK` it needs an
/// `RLIMIT_MEMLOCK` above 0.
fn mlock_future(c: &Child, plan: &Plan, warnings: &mut Vec<String>) -> Result<()> {
    let flags = plan
        .state
        .process
        .as_ref()
        .map_or(0, |p| p.attr_flags.get());
    if flags & raw::ATTR_MLOCK_FUTURE == 0 {
        return Ok(());
    }
    let (mut how, mut name) = (libc::MCL_FUTURE as u64, "MCL_FUTURE");
    if flags & raw::ATTR_MLOCK_ONFAULT != 0 {
        how |= libc::MCL_ONFAULT as u64;
        name = "MCL_FUTURE|MCL_ONFAULT";
    }
    let r = c.call(libc::SYS_mlockall as u64, [how, 0, 0, 0, 0, 0])?;
    if r < 0 {
        let e = std::io::Error::from_raw_os_error(i32::try_from(-r).unwrap_or(0));
        warnings.push(format!(
            "mlockall({name}) failed ({e}; without CAP_IPC_LOCK it needs RLIMIT_MEMLOCK above \
             0): memory the task maps from now on is not locked"
        ));
    }
    Ok(())
}

/// A warning if the child's mappings are not the image's, one for one (the kernel merged
/// or split some): the restored task would differ where `/proc/PID/maps` shows.
fn check_layout(c: &Child, plan: &Plan, warnings: &mut Vec<String>) -> Result<()> {
    let scratch = plan.scratch;
    let now: Vec<AddrRange> = maps_ranges(c.pid())?
        .into_iter()
        .filter(|r| r.start != scratch)
        .collect();
    let want: Vec<AddrRange> = plan.vmas.iter().map(|v| v.range).collect();
    if now != want {
        let first = now.iter().zip(&want).find(|(a, b)| a != b);
        warnings.push(format!(
            "the restored task has {} mappings where the image has {}{}",
            now.len(),
            want.len(),
            match first {
                Some((a, b)) => format!(
                    " (first difference: {:#x}-{:#x} for the image's {:#x}-{:#x})",
                    a.start, a.end, b.start, b.end
                ),
                None => String::new(),
            }
        ));
    }
    Ok(())
}

/// The address ranges of a task's mappings, from `/proc/PID/maps`: only each line's first
/// field is parsed (65,000 lines are 3 MB of text, and the rest of each line is not needed).
fn maps_ranges(pid: i32) -> Result<Vec<AddrRange>> {
    let text = crate::procfs::read(pid, "maps")?;
    let bad = |l: &[u8]| {
        other(format!(
            "pid {pid}: a line of /proc/{pid}/maps without a range: {:?}",
            String::from_utf8_lossy(l)
        ))
    };
    let hex = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
    };
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let range = line.split(|&b| b == b' ').next().unwrap_or_default();
        let mut ends = range.splitn(2, |&b| b == b'-');
        let r = ends
            .next()
            .and_then(hex)
            .zip(ends.next().and_then(hex))
            .and_then(|(a, b)| AddrRange::new(a, b))
            .ok_or_else(|| bad(line))?;
        out.push(r);
    }
    Ok(out)
}

/// The madvise advice for each `VMA_ATTR_*` bit.
const ADVICE: [(u32, i32, &str); 6] = [
    (raw::VMA_ATTR_DONTFORK, libc::MADV_DONTFORK, "MADV_DONTFORK"),
    (raw::VMA_ATTR_DONTDUMP, libc::MADV_DONTDUMP, "MADV_DONTDUMP"),
    (
        raw::VMA_ATTR_WIPEONFORK,
        libc::MADV_WIPEONFORK,
        "MADV_WIPEONFORK",
    ),
    (raw::VMA_ATTR_HUGEPAGE, libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"),
    (
        raw::VMA_ATTR_NOHUGEPAGE,
        libc::MADV_NOHUGEPAGE,
        "MADV_NOHUGEPAGE",
    ),
    (
        raw::VMA_ATTR_MERGEABLE,
        libc::MADV_MERGEABLE,
        "MADV_MERGEABLE",
    ),
];

/// The VMA's madvise flags (`madvise`) and lock (`mlock2`, after its pages are in).
fn set_attrs(c: &Child, v: &VmaPlan, warnings: &mut Vec<String>) -> Result<()> {
    let (start, len) = (v.range.start, v.range.len());
    for (bit, advice, name) in ADVICE {
        if v.attrs & bit == 0 {
            continue;
        }
        let advice = u64::try_from(advice).map_err(|_| other("a negative madvise advice"))?;
        let r = c.call(nr::MADVISE, [start, len, advice, 0, 0, 0])?;
        if r < 0 {
            warnings.push(format!(
                "{name} on {start:#x}-{:#x} failed: {} (not set after restore)",
                v.range.end,
                std::io::Error::from_raw_os_error(i32::try_from(-r).unwrap_or(0))
            ));
        }
    }
    if v.attrs & (raw::VMA_ATTR_LOCKED | raw::VMA_ATTR_LOCKONFAULT) != 0 {
        let onfault = v.attrs & raw::VMA_ATTR_LOCKONFAULT != 0;
        let flags = if onfault {
            libc::MLOCK_ONFAULT as u64
        } else {
            0
        };
        let r = c.call(nr::MLOCK2, [start, len, flags, 0, 0, 0])?;
        if r < 0 {
            warnings.push(format!(
                "mlock2{} of {start:#x}-{:#x} failed: {} (locking needs CAP_IPC_LOCK or room \
                 under RLIMIT_MEMLOCK): the memory is not locked after restore",
                if onfault { "(MLOCK_ONFAULT)" } else { "" },
                v.range.end,
                std::io::Error::from_raw_os_error(i32::try_from(-r).unwrap_or(0))
            ));
        }
    }
    Ok(())
}

/// Step 8, made right after step 4 (see the module docs): the mm fields (`prctl(PR_SET_MM,
/// PR_SET_MM_MAP)`); a warning if the executable link cannot be replaced.
pub(super) fn set_mm(c: &Child, plan: &Plan, warnings: &mut Vec<String>) -> Result<()> {
    let m = &plan.mm;
    let scratch = plan.scratch;
    let auxv_at = scratch + 1024;
    c.write(auxv_at, &plan.auxv)?;
    let exe_fd = match &plan.exe {
        Some(f) => u32::try_from(f.as_raw_fd()).map_err(|_| other("a negative descriptor"))?,
        None => u32::MAX, // keep the link
    };
    let mut map = PrctlMmMap {
        start_code: m.start_code.get(),
        end_code: m.end_code.get(),
        start_data: m.start_data.get(),
        end_data: m.end_data.get(),
        start_brk: m.start_brk.get(),
        brk: m.brk.get(),
        start_stack: m.start_stack.get(),
        arg_start: m.arg_start.get(),
        arg_end: m.arg_end.get(),
        env_start: m.env_start.get(),
        env_end: m.env_end.get(),
        auxv: auxv_at,
        auxv_size: u32::try_from(plan.auxv.len()).map_err(|_| other("auxv too long"))?,
        exe_fd,
    };
    c.write_struct(scratch, &map)?;
    let what = "prctl(PR_SET_MM, PR_SET_MM_MAP) (needs CAP_SYS_RESOURCE or CAP_CHECKPOINT_RESTORE)";
    let size = std::mem::size_of::<PrctlMmMap>() as u64;
    let args = [abi::PR_SET_MM, abi::PR_SET_MM_MAP, scratch, size, 0, 0];
    let r = c.call(nr::PRCTL, args)?;
    if r == -i64::from(libc::EBUSY) && exe_fd != u32::MAX {
        // The kernel refuses to replace the executable while the old one (cr-dump's) is still
        // mapped; after step 3 nothing should map it. Keep the link, set the rest.
        warnings.push("/proc/PID/exe stays cr-dump's (cr-dump's binary is still mapped)".into());
        map.exe_fd = u32::MAX;
        c.write_struct(scratch, &map)?;
        c.call_ok(what, nr::PRCTL, args)?;
    } else if r < 0 {
        return Err(c.errno(what, r));
    }
    Ok(())
}

/// Step 9: signal dispositions (every signal blocked from here), alternate stack,
/// personality, umask, comm; the open files put at their numbers, the working directory and
/// root ([`super::files::place`], before the credentials change: `chroot` needs the caller's
/// `CAP_SYS_CHROOT`); limits, attributes and credentials ([`super::process::apply`]); the
/// timers; the pending signals queued again; the scratch area unmapped; then the image's
/// blocked mask (`PTRACE_SETSIGMASK`: no system call may be injected after this function, or a
/// pending signal would be lost).
pub(super) fn set_task_state(c: &Child, plan: &Plan, fp: &super::files::FilePlan) -> Result<()> {
    let t = &plan.task;
    let scratch = plan.scratch;
    super::signals::actions(c, plan)?;
    let persona = t.personality.get().into();
    c.call_ok("personality", nr::PERSONALITY, [persona, 0, 0, 0, 0, 0])?;
    c.call_ok("umask", nr::UMASK, [t.umask.get().into(), 0, 0, 0, 0, 0])?;
    let mut comm = t.comm.to_vec();
    comm.push(0);
    c.write(scratch, &comm)?;
    let args = [abi::PR_SET_NAME, scratch, 0, 0, 0, 0];
    c.call_ok("prctl(PR_SET_NAME)", nr::PRCTL, args)?;
    super::files::place(c, scratch, fp)?;
    super::process::apply(c, plan)?;
    super::signals::timers(c, plan)?;
    super::signals::queue_pending(c, plan)?;
    let args = [scratch, SCRATCH_LEN, 0, 0, 0, 0];
    c.call_ok("munmap scratch", nr::MUNMAP, args)?;
    super::signals::finish(c, plan)
}

/// Step 10: the FPU/XSAVE state, then the general registers (a task captured inside a system
/// call the kernel would restart gets it issued again).
pub(super) fn set_registers(c: &Child, plan: &Plan) -> Result<()> {
    let t = c.tracee();
    let mut r = zeroed_regs();
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ] = plan.gpr;
    if abi::interrupted_syscall(r.rax, r.orig_rax) {
        r.rax = r.orig_rax;
        r.rip = r.rip.wrapping_sub(2);
        r.orig_rax = u64::MAX;
    }
    if plan.xsave.is_empty() {
        t.set_regset(sys::NT_PRFPREG, &plan.fxsave)
            .map_err(|e| c.io("PTRACE_SETREGSET NT_PRFPREG", e))?;
    } else {
        let mut cur = vec![0u8; 16384];
        let n = t
            .regset(sys::NT_X86_XSTATE, &mut cur)
            .map_err(|e| c.io("PTRACE_GETREGSET NT_X86_XSTATE", e))?;
        if n != plan.xsave.len() {
            return Err(other(format!(
                "the image's XSAVE area is {} bytes, this CPU's {n}",
                plan.xsave.len()
            )));
        }
        t.set_regset(sys::NT_X86_XSTATE, &plan.xsave)
            .map_err(|e| c.io("PTRACE_SETREGSET NT_X86_XSTATE", e))?;
    }
    t.set_regs(&r)
        .map_err(|e| c.io("PTRACE_SETREGS (the image's)", e))
}
