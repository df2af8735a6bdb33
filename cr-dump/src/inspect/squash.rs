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

use crate::error::{Error, Result};
use crate::incremental::{same_mapping, RunBuilder};
use crate::inspect::{self, image_error, Page};
use cr_format::chain::{Chain, ChainIndex, Resolved};
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
    let maps = inspect::load_chain(image)?;
    let images = maps
        .iter()
        .map(|m| Image::parse(m.bytes()).map_err(|e| image_error(&m.path, e, None)))
        .collect::<Result<Vec<_>>>()?;
    let chain = Chain::new(&images).map_err(|e| image_error(image, e, None))?;
    let idx = ChainIndex::new(&chain);
    let top = images
        .first()
        .ok_or_else(|| Error::Other("empty chain".into()))?;
    let mut w = Writer::new(IoSink::new(out));
    let r = write_squashed(&mut w, top, &idx, crid);
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
        depth: images.len(),
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
            self.w
                .pages(&r.runs, self.data.get(r.data.clone()).unwrap_or(&[]))?;
        }
        let keep = self.b.open_data_start();
        self.data.drain(..keep);
        self.b.shift_down(keep);
        Ok(())
    }

    fn end_vma(&mut self) -> Result<()> {
        let b = std::mem::replace(&mut self.b, RunBuilder::new(self.ps, 0));
        for r in b.finish() {
            self.w
                .pages(&r.runs, self.data.get(r.data.clone()).unwrap_or(&[]))?;
        }
        self.data.clear();
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
    for (d, s) in h
        .producer
        .iter_mut()
        .zip(crate::capture::PRODUCER.as_bytes())
    {
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
                for run in p.iter() {
                    for k in 0..u64::from(run.pages) {
                        let a = run.addr + k * ps;
                        match run.kind {
                            RunKind::Data => {
                                let off = usize::try_from(k * ps).unwrap_or(usize::MAX);
                                let bytes = run
                                    .data
                                    .and_then(|d| d.get(off..off + ps as usize))
                                    .ok_or_else(|| {
                                        Error::Other(format!("page {a:#x}: data missing"))
                                    })?;
                                o.page(a, raw::RUN_DATA, Some(bytes))?;
                            }
                            RunKind::Zero => o.page(a, raw::RUN_ZERO, None)?,
                            RunKind::Parent => resolve_parent(&mut o, idx, &vma, a)?,
                        }
                    }
                }
            }
            Record::Unknown(_) | Record::Tail(_) => {}
        }
    }
    o.end_vma()?;
    let (dp, zp) = (o.data_pages, o.zero_pages);
    let s = o.w.finish()?;
    Ok((s, dp, zp))
}

/// A page the newest image says is the parent's: what the chain resolves it to.
fn resolve_parent<S: Sink>(
    o: &mut Out<'_, S>,
    idx: &ChainIndex<'_>,
    vma: &Vma<'_>,
    a: u64,
) -> Result<()> {
    let crid_err = |e: cr_format::Error| Error::Other(format!("page {a:#x}: {e}"));
    match idx.resolve(a).map_err(crid_err)? {
        Resolved::Data { bytes, .. } => o.page(a, raw::RUN_DATA, Some(bytes)),
        Resolved::Zero { .. } => o.page(a, raw::RUN_ZERO, None),
        Resolved::NotPresent { vma: pv, .. } => match pv.kind() {
            raw::VMA_ANON | raw::VMA_HEAP | raw::VMA_STACK => o.page(a, raw::RUN_ZERO, None),
            // The same file page at the same place: "not present" means the same here.
            raw::VMA_FILE if same_mapping(vma.raw, vma.path, &pv) => Ok(()),
            _ => match inspect::page_content(idx, a, o.ps) {
                Page::Bytes(b) => o.page(a, raw::RUN_DATA, Some(&b)),
                Page::Zero => o.page(a, raw::RUN_ZERO, None),
                Page::Unavailable(why) => Err(Error::Other(format!(
                    "page {a:#x} cannot be squashed: {why}"
                ))),
            },
        },
    }
}

/// What `chain` found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ChainReport {
    /// The images found, newest first (each verified on its own).
    pub images: Vec<inspect::ImageReport>,
    /// "In the parent" pages resolved through the chain.
    pub parent_pages_checked: u64,
    /// Whether every image and every link holds.
    pub ok: bool,
    /// The first problem, if any.
    pub error: Option<String>,
}

/// Lists the chain ending at `image` (parents found beside it by name), verifying each image
/// and every link. Never fails: a problem is reported in `error`, with the images found up to
/// it.
pub fn chain_report(image: &Path) -> ChainReport {
    let mut rep = ChainReport::default();
    if let Err(e) = walk_chain(image, &mut rep) {
        rep.error = Some(e.to_string());
    } else {
        rep.ok = true;
    }
    rep
}

fn walk_chain(image: &Path, rep: &mut ChainReport) -> Result<()> {
    let open = |p: &Path| {
        std::fs::File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e))
    };
    let mut path = image.to_path_buf();
    loop {
        let r = inspect::verify_stream(
            std::io::BufReader::with_capacity(1 << 20, open(&path)?),
            &path.display().to_string(),
        )?;
        let parent = r.parent_crid;
        rep.images.push(r);
        if parent == 0 {
            break;
        }
        if rep.images.len() > cr_format::limits::MAX_CHAIN_DEPTH as usize {
            return Err(Error::Other(format!(
                "the chain is longer than {} images",
                cr_format::limits::MAX_CHAIN_DEPTH
            )));
        }
        let Some(pp) = inspect::sibling(&path, parent) else {
            return Err(Error::Other(format!(
                "{}: parent image CRID {parent} cannot be found: the file name is not \
                 NAME.img.CRID",
                path.display()
            )));
        };
        if !pp.exists() {
            return Err(Error::Other(format!(
                "{}: parent image CRID {parent} is missing (expected {})",
                path.display(),
                pp.display()
            )));
        }
        path = pp;
    }
    let maps = inspect::load_chain(image)?;
    let images = maps
        .iter()
        .map(|m| Image::parse_metadata(m.bytes()).map_err(|e| image_error(&m.path, e, None)))
        .collect::<Result<Vec<_>>>()?;
    let chain = Chain::new(&images).map_err(|e| {
        // Name the child whose header the error is about.
        let at = wrong_link(&images).unwrap_or(0);
        let p = maps.get(at).map_or(image, |m| m.path.as_path());
        image_error(p, e, None)
    })?;
    let idx = ChainIndex::new(&chain);
    rep.parent_pages_checked = idx
        .check_parent_refs()
        .map_err(|e| image_error(image, e, None))?;
    Ok(())
}

/// The index of the first image whose link to the next fails.
fn wrong_link(images: &[Image<'_>]) -> Option<usize> {
    images.windows(2).position(|w| match w {
        [c, p] => c.parent_crid() != p.crid() || c.header().parent_digest.get() != p.digest(),
        _ => false,
    })
}
