//! Step 6 of the module docs: the pages, written through `/proc/PID/mem`.

use super::child::Child;
use super::other;
use super::plan::{Plan, VmaPlan};
use crate::error::Result;
use crate::sys;
use cr_format::chain::{ChainIndex, Resolved};
use cr_format::raw;
use cr_format::read::{Image, Record, Run, RunKind};

/// A write not yet made: pages that are contiguous both in the task and in one image file are
/// written together.
#[derive(Clone, Copy)]
struct Pending {
    /// Target address.
    addr: u64,
    /// Which image.
    image: usize,
    /// Offset in its bytes.
    off: usize,
    len: usize,
}

/// Writes pages into the child, coalescing the pages of a chain that lie one after the other
/// in the same image file.
struct Writer<'a, 'i> {
    c: &'a Child,
    images: &'a [Image<'i>],
    pending: Option<Pending>,
    zero: Vec<u8>,
}

impl Writer<'_, '_> {
    fn flush(&mut self) -> Result<()> {
        if let Some(p) = self.pending.take() {
            let bytes = self.images[p.image]
                .bytes()
                .get(p.off..p.off + p.len)
                .ok_or_else(|| other(format!("page data at {:#x} outside its image", p.addr)))?;
            put(self.c, p.addr, bytes)?;
        }
        Ok(())
    }

    /// `len` zero bytes at `addr`.
    fn zeros(&mut self, addr: u64, len: u64) -> Result<()> {
        self.flush()?;
        let mut a = addr;
        while a < addr + len {
            let n = (addr + len - a).min(self.zero.len() as u64);
            put(self.c, a, &self.zero[..n as usize])?;
            a += n;
        }
        Ok(())
    }

    /// `bytes` at `addr`, now.
    fn now(&mut self, addr: u64, bytes: &[u8]) -> Result<()> {
        self.flush()?;
        put(self.c, addr, bytes)
    }

    /// `bytes` (a page of one of the images) at `addr`, joined to the pending write if it
    /// continues it.
    fn page(&mut self, addr: u64, bytes: &[u8]) -> Result<()> {
        let Some((image, off)) = self.locate(bytes) else {
            return self.now(addr, bytes);
        };
        if let Some(p) = &mut self.pending {
            if p.addr + p.len as u64 == addr && p.image == image && p.off + p.len == off {
                p.len += bytes.len();
                return Ok(());
            }
        }
        self.flush()?;
        self.pending = Some(Pending {
            addr,
            image,
            off,
            len: bytes.len(),
        });
        Ok(())
    }

    /// Where `b` lies: (image index, offset in its bytes).
    fn locate(&self, b: &[u8]) -> Option<(usize, usize)> {
        let p = b.as_ptr() as usize;
        self.images.iter().enumerate().find_map(|(i, img)| {
            let base = img.bytes().as_ptr() as usize;
            (p >= base && p + b.len() <= base + img.bytes().len()).then(|| (i, p - base))
        })
    }
}

/// Writes `bytes` at `addr` of the child with `process_vm_writev`: one copy, straight into the
/// child's pages, where a write to `/proc/PID/mem` copies each page twice (through a kernel
/// bounce page) and looks each target page up on its own. What it cannot write (a range not
/// mapped writable: the kernel stops there) goes through `/proc/PID/mem`, which may write
/// anywhere the tracer may, and which reports the error if that fails too.
fn put(c: &Child, addr: u64, bytes: &[u8]) -> Result<()> {
    let mut done = 0usize;
    while done < bytes.len() {
        let rest = &bytes[done..];
        match sys::process_vm_writev(c.pid(), &[rest], &[addr + done as u64]) {
            Ok(n) if n > 0 => done += n,
            _ => return c.write(addr + done as u64, rest),
        }
    }
    Ok(())
}

/// Writes every page the chain holds with data (and zero pages of file mappings).
pub(super) fn fill_pages(
    c: &Child,
    plan: &Plan,
    idx: &ChainIndex<'_>,
    images: &[Image<'_>],
) -> Result<()> {
    let top = images.first().ok_or_else(|| other("an empty chain"))?;
    let ps = u64::from(top.page_size());
    let mut w = Writer {
        c,
        images,
        pending: None,
        zero: vec![0u8; 1 << 20],
    };
    let mut cur: Option<&VmaPlan> = None;
    let mut vi = 0usize;
    for r in top.records() {
        match r.record {
            Record::Vma(v) => {
                cur = plan.vmas.get(vi).filter(|p| p.range.start == v.start());
                vi += 1;
            }
            Record::Pages(p) => {
                let Some(v) = cur else { continue };
                // A shared file mapping's contents are the file's.
                if v.special() || (v.shared() && !v.shared_anon()) {
                    continue;
                }
                let file = v.kind == raw::VMA_FILE;
                for run in p.iter() {
                    write_run(&mut w, idx, &run, ps, file)?;
                }
            }
            _ => {}
        }
    }
    w.flush()
}

/// One page run of the top image: data written, zero pages written for file mappings only
/// (fresh anonymous pages are zero), pages "in the parent" resolved through the chain.
fn write_run(
    w: &mut Writer<'_, '_>,
    idx: &ChainIndex<'_>,
    run: &Run<'_>,
    ps: u64,
    file: bool,
) -> Result<()> {
    match run.kind {
        RunKind::Data => match run.data {
            Some(d) => w.now(run.addr, d),
            None => w.flush(),
        },
        RunKind::Zero if file => w.zeros(run.addr, u64::from(run.pages) * ps),
        RunKind::Zero => Ok(()),
        // Extent by extent ([`ChainIndex::extent`]): the cost is per run, not per page.
        RunKind::Parent => {
            let end = run.end(ps.try_into().unwrap_or(u32::MAX));
            let mut a = run.addr;
            while a < end {
                let e = idx.extent(a);
                // An extent ends past its start; `max` keeps the walk going even if one did not.
                let stop = e.end.min(end).max(a.saturating_add(ps));
                match e.resolved {
                    Some(Resolved::Data { bytes, .. }) => w.page(a, bytes)?,
                    Some(Resolved::Zero { .. }) if file => w.zeros(a, stop - a)?,
                    Some(Resolved::Zero { .. } | Resolved::NotPresent { .. }) => {}
                    None => {
                        return Err(other(format!(
                            "page {a:#x} does not resolve through the chain"
                        )))
                    }
                }
                a = stop;
            }
            Ok(())
        }
    }
}
