//! `squash`: fold an image chain into one full image whose resolved memory is the chain's, page
//! for page.
//!
//! The squashed image is a new image: it gets a fresh CRID (from the node's counter), no parent
//! and `DIFF_NONE`. Its Task, registers, Mm and VMA list are the newest image's (an incremental
//! image always has the complete VMA list); its `created_ns` is the newest image's too, the time
//! of the checkpoint whose memory it holds. For every run of the newest image the page is
//! resolved through the chain: stored data becomes data, known zero and untouched anonymous
//! pages become zero runs, pages not present in the newest image stay without a run. Every image
//! of the chain is checked in full (data CRCs included) first, so a damaged image is never
//! laundered into a fresh checksum. Memory: the images are mapped; one Pages record of data is
//! held at a time.

use super::chain::{ChainFiles, Parse};
use super::extract::file_range;
use super::show::vma_kind_name;
use crate::error::{Error, Result};
use crate::records::{same_mapping, RunBuilder};
use cr_format::chain::{ChainIndex, Resolved};
use cr_format::raw;
use cr_format::read::{Image, Record, RunKind, Vma};
use cr_format::write::{IoSink, Sink, Summary, Writer};
use std::io::Write;
use std::path::Path;

/// What [`squash`] wrote.
#[derive(Clone, Copy, Debug)]
pub struct Squashed {
    /// The new image's CRID.
    pub crid: u64,
    /// The CRID of the newest image of the chain.
    pub from_crid: u64,
    /// Images folded.
    pub depth: usize,
    /// What was written.
    pub summary: Summary,
    /// Pages stored with data.
    pub data_pages: u64,
    /// Pages stored as zero.
    pub zero_pages: u64,
}

/// Folds the chain ending at `image` (parents found beside it) into one full image with CRID
/// `crid`, written to `out`.
pub fn squash<W: Write>(image: &Path, crid: u64, out: W) -> Result<Squashed> {
    let files = ChainFiles::open(image)?;
    let chain = files.parse(Parse::Full)?;
    let top = chain.top();
    let mut w = Writer::new(IoSink::new(out));
    let r = write_squashed(&mut w, top, chain.index(), crid);
    if let Some(e) = w.sink_mut().take_error() {
        return Err(Error::io("writing the squashed image", e));
    }
    let (summary, data_pages, zero_pages) = r?;
    w.sink_mut()
        .get_mut()
        .flush()
        .map_err(|e| Error::io("writing the squashed image", e))?;
    Ok(Squashed {
        crid,
        from_crid: top.crid(),
        depth: chain.images().len(),
        summary,
        data_pages,
        zero_pages,
    })
}

struct Out<'w, S> {
    w: &'w mut Writer<S>,
    b: RunBuilder,
    data: Vec<u8>,
    data_pages: u64,
    zero_pages: u64,
    ps: u64,
}

impl<S: Sink> Out<'_, S> {
    fn flush_done(&mut self) -> Result<()> {
        let done = self.b.take_done();
        if done.is_empty() {
            return Ok(());
        }
        for r in &done {
            self.w.pages(&r.runs, buffered(&self.data, &r.data)?)?;
        }
        let keep = self.b.open_data_start();
        self.data.drain(..keep);
        self.b.shift_down(keep);
        Ok(())
    }

    fn end_vma(&mut self) -> Result<()> {
        let b = std::mem::replace(&mut self.b, RunBuilder::new(self.ps, 0));
        for r in b.finish() {
            self.w.pages(&r.runs, buffered(&self.data, &r.data)?)?;
        }
        self.data.clear();
        Ok(())
    }

    /// `pages` known-zero pages from `addr` on.
    fn zero_run(&mut self, addr: u64, pages: u64) -> Result<()> {
        self.zero_pages = self.zero_pages.saturating_add(pages);
        self.b.push_run(addr, pages, raw::RUN_ZERO);
        self.flush_done()
    }

    /// The `pages` data pages of `data` from `addr` on.
    fn data_pages_of(&mut self, addr: u64, pages: u64, data: Option<&[u8]>) -> Result<()> {
        for k in 0..pages {
            let a = addr.saturating_add(k.saturating_mul(self.ps));
            let bytes = run_page(data, k, self.ps)
                .ok_or_else(|| Error::Other(format!("page {a:#x}: data missing")))?;
            self.page(a, raw::RUN_DATA, Some(bytes))?;
        }
        Ok(())
    }

    fn page(&mut self, addr: u64, kind: u16, bytes: Option<&[u8]>) -> Result<()> {
        if let Some(b) = bytes {
            self.data.extend_from_slice(b);
            self.data_pages += 1;
        } else if kind == raw::RUN_ZERO {
            self.zero_pages += 1;
        }
        self.b.push(addr, kind);
        self.flush_done()
    }
}

/// The data of one finished Pages record: a range the run builder handed out over the bytes
/// buffered since; outside them is a bug in the builder, not a silently empty record.
fn buffered<'d>(data: &'d [u8], range: &std::ops::Range<usize>) -> Result<&'d [u8]> {
    data.get(range.clone()).ok_or_else(|| {
        Error::Other(format!(
            "squash: page data {range:?} is not in the {} bytes buffered",
            data.len()
        ))
    })
}

fn write_squashed<S: Sink>(
    w: &mut Writer<S>,
    top: &Image<'_>,
    idx: &ChainIndex<'_>,
    crid: u64,
) -> Result<(Summary, u64, u64)> {
    let ps = u64::from(top.page_size());
    let mut h = *top.header();
    h.crid = crid.into();
    h.parent_crid = 0.into();
    h.parent_digest = 0.into();
    h.diff_method = raw::DIFF_NONE.into();
    h.producer = [0; 32];
    for (d, s) in h.producer.iter_mut().zip(crate::PRODUCER.as_bytes()) {
        *d = *s;
    }
    let mut o = Out {
        w,
        b: RunBuilder::new(ps, 0),
        data: Vec::new(),
        data_pages: 0,
        zero_pages: 0,
        ps,
    };
    let mut cur_vma: Option<Vma<'_>> = None;
    for r in top.records() {
        match r.record {
            Record::Header(_) => o.w.header(&h)?,
            Record::Task(t) => o.w.task(t)?,
            Record::Regs(x) => o.w.regs(x.raw, x.xsave)?,
            Record::Mm(m) => o.w.mm(m.raw, m.auxv, m.exe)?,
            Record::Vma(v) => {
                o.end_vma()?;
                o.w.vma(v.raw, v.path)?;
                cur_vma = Some(v);
            }
            Record::Pages(p) => {
                let Some(vma) = cur_vma else { continue };
                // Data pages one by one (each is in the image); zero and parent runs as a
                // whole, whatever their length.
                for run in p.iter() {
                    let n = u64::from(run.pages);
                    match run.kind {
                        RunKind::Data => o.data_pages_of(run.addr, n, run.data)?,
                        RunKind::Zero => o.zero_run(run.addr, n)?,
                        RunKind::Parent => {
                            resolve_parent(&mut o, idx, &vma, run.addr, run.end(top.page_size()))?
                        }
                    }
                }
            }
            // The newest image's state is the task's state: copied as it is.
            Record::File(f) => o.w.file(f.raw, f.path, f.data)?,
            Record::FileData(d) => o.w.file_data(d.raw.offset.get(), d.bytes)?,
            Record::Signals(x) => o.w.signals(x.raw, x.pending)?,
            Record::Timers(x) => o.w.timers(x.raw, x.posix)?,
            Record::Process(x) => o.w.process(x.raw, x.groups)?,
            Record::VmaAttr(a) => o.w.vma_attr(a)?,
            Record::Inotify(n) => o.w.inotify(n)?,
            Record::InotifyWatch(x) => o.w.inotify_watch(x.raw, x.path)?,
            Record::Lock(l) => o.w.lock(l)?,
            // Right after its Vma (and VmaAttr): no Pages of that Vma are written yet.
            Record::VdsoData(d) => o.w.vdso_data(d.bytes)?,
            Record::Unknown(_) | Record::Tail(_) => {}
        }
    }
    o.end_vma()?;
    let (dp, zp) = (o.data_pages, o.zero_pages);
    let s = o.w.finish()?;
    Ok((s, dp, zp))
}

/// Page `k` of a data run's bytes, if it is there.
fn run_page(data: Option<&[u8]>, k: u64, ps: u64) -> Option<&[u8]> {
    let off = usize::try_from(k.checked_mul(ps)?).ok()?;
    let end = off.checked_add(usize::try_from(ps).ok()?)?;
    data?.get(off..end)
}

/// Pages `start..end` the newest image says are the parent's: what the chain resolves them to,
/// extent by extent ([`ChainIndex::extent`]), so the cost is per run, not per page.
fn resolve_parent<S: Sink>(
    o: &mut Out<'_, S>,
    idx: &ChainIndex<'_>,
    vma: &Vma<'_>,
    start: u64,
    end: u64,
) -> Result<()> {
    let ps = o.ps;
    let mut a = start;
    while a < end {
        let e = idx.extent(a);
        // An extent ends past its start; `max` keeps the walk going even if one did not.
        let stop = e.end.min(end).max(a.saturating_add(ps));
        let pages = (stop - a) / ps;
        match e.resolved {
            Some(Resolved::Data { bytes, .. }) => o.data_pages_of(a, pages, Some(bytes))?,
            Some(Resolved::Zero { .. }) => o.zero_run(a, pages)?,
            Some(Resolved::NotPresent { vma: pv, .. }) => match pv.kind() {
                raw::VMA_ANON | raw::VMA_HEAP | raw::VMA_STACK => o.zero_run(a, pages)?,
                // The same file pages at the same place: "not present" means the same here.
                raw::VMA_FILE if same_mapping(vma.raw, vma.path, &pv) => {}
                raw::VMA_FILE => file_pages(o, &pv, a, pages)?,
                k @ (raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL) => {
                    return Err(Error::Other(format!(
                        "page {a:#x} cannot be squashed: in the {} area, which images record \
                         but do not copy",
                        vma_kind_name(k)
                    )))
                }
                _ => o.zero_run(a, pages)?,
            },
            None => {
                return Err(Error::Other(format!(
                    "page {a:#x} cannot be squashed: it does not resolve through the chain"
                )))
            }
        }
        a = stop;
    }
    Ok(())
}

/// `pages` untouched pages of a file mapping at `a` that the newest image maps otherwise: the
/// file's bytes as data, zero runs past the file's end (so what is stored is bounded by the
/// file's size).
fn file_pages<S: Sink>(o: &mut Out<'_, S>, pv: &Vma<'_>, a: u64, pages: u64) -> Result<()> {
    let ps = o.ps;
    let page_len = usize::try_from(ps).map_err(|_| Error::Other("page size".into()))?;
    let mut pend: Vec<u8> = Vec::new();
    let mut at = a;
    let len = pages.saturating_mul(ps);
    let (got, stopped) = file_range(pv, a, len, &mut |b| {
        pend.extend_from_slice(b);
        while pend.len() >= page_len {
            o.page(at, raw::RUN_DATA, pend.get(..page_len))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            pend.drain(..page_len);
            at = at.saturating_add(ps);
        }
        Ok(())
    });
    if let Some(why) = stopped {
        return Err(Error::Other(format!(
            "page {at:#x} cannot be squashed: {}",
            why.text()
        )));
    }
    // The file ends within this page: the rest of it reads zeros.
    if !pend.is_empty() {
        pend.resize(page_len, 0);
        o.page(at, raw::RUN_DATA, Some(&pend))?;
    }
    let full = got.div_ceil(ps);
    o.zero_run(
        a.saturating_add(full.saturating_mul(ps)),
        pages.saturating_sub(full),
    )
}
