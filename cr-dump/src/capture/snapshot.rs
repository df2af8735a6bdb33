//! A checkpoint held in memory ([`Snapshot`]) and how its image is written: from its page
//! buffer (a copy) or streamed from its copy-on-write twin, compared with the parent chain on
//! the way when it is incremental.

use super::incremental::{vmas_in_parent, Parent};
use super::options::{test_pause, Stats, TEST_WRITEBACK_PAUSE_ENV};
use super::plan::RecordPlan;
use super::splice::{
    self, reopen_for_reading, PagePath, Placed, Placement, TwinPipe, NO_SPLICE_ENV,
};
use super::stream::{finish_image, sink_err, stream_vmas, Source};
use super::task::Meta;
use super::twin::Twin;
use super::vma::{Scan, VmaRec};
use crate::error::{Error, Result};
use crate::sys;
use cr_format::chain::ChainIndex;
use cr_format::write::{IoSink, Sink, Summary, Writer};
use std::fs::File;
use std::io::Write;

/// How a run of VMAs held by the twin is streamed: read ([`stream_vmas`]) or spliced.
type StreamFn<'a, W> =
    dyn FnMut(&Source<'_>, &mut Writer<IoSink<W>>, &[VmaRec]) -> Result<Stats> + 'a;

/// One VMA of a snapshot with its planned Pages records.
#[derive(Clone, Debug)]
pub struct SnapVma {
    /// The VMA.
    pub vma: VmaRec,
    /// Its Pages records.
    pub records: Vec<RecordPlan>,
    /// For a VMA under dirty tracking: what the scan found (only its written pages were
    /// copied into `records`).
    pub tracked: Option<Scan>,
}

/// A checkpoint held in memory: everything needed to write its image.
#[derive(Debug)]
pub struct Snapshot {
    /// CRID.
    pub crid: u64,
    /// The task's pid.
    pub pid: i32,
    /// Header, task, registers, mm.
    pub meta: Meta,
    /// VMAs and their records.
    pub vmas: Vec<SnapVma>,
    /// The page data (empty for a snapshot held by a twin).
    pub buf: sys::MapBuf,
    /// Figures of the capture.
    pub stats: Stats,
    /// The copy-on-write twin holding the pages, when the snapshot was taken that way: then
    /// `vmas` have no records, and each write-back reads the pages from the twin.
    pub twin: Option<Twin>,
    /// For an incremental snapshot held by a twin: the parent chain its pages are compared
    /// with as they are written (the Header already names it).
    pub parent: Option<Parent>,
}

impl Snapshot {
    /// Writes the image to `out`; returns what was written.
    pub fn write_to<W: Write + Send>(&self, out: W) -> Result<Summary> {
        let mut w = Writer::new(IoSink::new(out));
        if let Some(t) = &self.twin {
            return self.write_from_twin(t, &mut w, &mut |src, w, vmas| stream_vmas(src, w, vmas));
        }
        let r = self.write_records(&mut w);
        if let Some(e) = w.sink_mut().take_error() {
            return Err(Error::io("writing the image", e));
        }
        let s = r?;
        w.sink_mut()
            .get_mut()
            .flush()
            .map_err(|e| Error::io("writing the image", e))?;
        Ok(s)
    }

    /// [`Snapshot::write_to`] for an image file: `out` writes to the same open file as `file`
    /// (a duplicate of its descriptor), whose offset is where `out`'s next byte goes. A
    /// snapshot held by a twin, not incremental, then moves its pages by splice
    /// ([`super::splice`]) if the twin lets it; returns how the pages were moved.
    pub fn write_to_file<W: Write + Placement + Send>(
        &self,
        out: W,
        file: File,
    ) -> Result<(Summary, PagePath)> {
        let Some(t) = &self.twin else {
            return Ok((self.write_to(out)?, PagePath::Buffer));
        };
        let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
        let off = std::env::var_os(NO_SPLICE_ENV).is_some();
        // Before anything is written: if the twin cannot take the pipe, the read path does all.
        let ready = match (&self.parent, regular && !off) {
            (None, true) => reopen_for_reading(&file)
                .ok()
                .and_then(|r| Some((r, TwinPipe::open(t.pid()).ok()?))),
            _ => None,
        };
        let Some((reader, mut tp)) = ready else {
            return Ok((self.write_to(out)?, PagePath::Read));
        };
        let mut w = Writer::new(IoSink::new(Placed::new(out, file, reader)));
        let summary = self.write_from_twin(t, &mut w, &mut |_, w, vmas| {
            splice::stream_vmas(&mut tp, w, vmas)
        })?;
        drop(tp);
        // A group planned again (it had zero pages) is shorter than what was spliced for it:
        // nothing may follow the Tail.
        w.sink_mut()
            .get_mut()
            .file()
            .set_len(summary.image_len)
            .map_err(|e| Error::io("truncating the image to its length", e))?;
        Ok((summary, PagePath::Splice))
    }

    /// Streams the image from the twin, compared with the parent if there is one; the twin's
    /// runs of VMAs are written by `stream`.
    fn write_from_twin<W: Write + Send>(
        &self,
        t: &Twin,
        w: &mut Writer<IoSink<W>>,
        stream: &mut StreamFn<'_, W>,
    ) -> Result<Summary> {
        if let Some(pause) = test_pause(TEST_WRITEBACK_PAUSE_ENV) {
            std::thread::sleep(pause);
        }
        self.meta.write(w).map_err(|e| sink_err(w, e))?;
        let st = match &self.parent {
            None => self.write_segments(t.pid(), None, w, stream)?,
            Some(p) => p.with_index(|idx, images| {
                let top = images.first().ok_or_else(|| {
                    Error::Other("internal: the parent chain has no image".into())
                })?;
                let in_parent = vmas_in_parent(top, self.vmas.iter().map(|v| &v.vma));
                self.write_segments(t.pid(), Some((idx, &in_parent)), w, stream)
            })??,
        };
        let summary = finish_image(w)?;
        // The copied (shared) pages were counted at the capture.
        let (data, zero) = (self.stats.data_pages, self.stats.zero_pages);
        t.set_counts(st.data_pages + data, st.zero_pages + zero, st.parent_pages);
        Ok(summary)
    }

    /// The VMAs of a snapshot held by twin `pid`, in order: each run of VMAs the twin holds
    /// streamed from it by `stream` (compared with `parent`, one entry per VMA, if given),
    /// each run of VMAs copied at the capture ([`VmaRec::held_by_copy`]) written from the
    /// buffer. Returns the counts of the streamed pages.
    fn write_segments<W: Write + Send>(
        &self,
        pid: i32,
        parent: Option<(&ChainIndex<'_>, &[bool])>,
        w: &mut Writer<IoSink<W>>,
        stream: &mut StreamFn<'_, W>,
    ) -> Result<Stats> {
        let mut st = Stats::default();
        let mut i = 0;
        while let Some(first) = self.vmas.get(i) {
            let held = first.vma.held_by_copy();
            let n = self.vmas[i..]
                .iter()
                .take_while(|v| v.vma.held_by_copy() == held)
                .count();
            let run = &self.vmas[i..i + n];
            if held {
                for v in run {
                    v.vma.write(w).map_err(|e| sink_err(w, e))?;
                    self.write_pages(v, w)?;
                }
            } else {
                let vmas: Vec<VmaRec> = run.iter().map(|v| v.vma.clone()).collect();
                let parent = match parent {
                    Some((idx, inp)) => Some((
                        idx,
                        inp.get(i..i + n).ok_or_else(|| {
                            Error::Other("internal: parent mapping entries missing".into())
                        })?,
                    )),
                    None => None,
                };
                let src = Source {
                    pid,
                    twin: true,
                    parent,
                };
                let s = stream(&src, w, &vmas)?;
                st.data_pages += s.data_pages;
                st.zero_pages += s.zero_pages;
                st.parent_pages += s.parent_pages;
            }
            i += n;
        }
        st.vmas = self.vmas.len() as u64;
        Ok(st)
    }

    /// The Pages records of `v` from the page buffer.
    fn write_pages<S: Sink>(&self, v: &SnapVma, w: &mut Writer<S>) -> Result<()> {
        for r in &v.records {
            let data = self.buf.get(r.data.clone()).ok_or_else(|| {
                Error::Other(format!(
                    "internal: record data {:?} is past the page buffer",
                    r.data
                ))
            })?;
            w.pages(&r.runs, data)?;
        }
        Ok(())
    }

    fn write_records<S: Sink>(&self, w: &mut Writer<S>) -> Result<Summary> {
        self.meta.write(w)?;
        for v in &self.vmas {
            v.vma.write(w)?;
            self.write_pages(v, w)?;
        }
        Ok(w.finish()?)
    }

    /// Bytes of page data held (0 for a snapshot held by a twin: known once written).
    pub fn data_bytes(&self) -> u64 {
        self.stats.data_pages * u64::from(self.meta.header.page_size.get())
    }

    /// About the bytes its write-back writes, for a progress bar: the page data held, or for a
    /// twin the pages present in it (an upper bound: zero pages and pages found in the parent
    /// are not written as data). `None` if the twin's page map cannot be read.
    pub fn bytes_to_write(&self) -> Option<u64> {
        let Some(t) = &self.twin else {
            return Some(self.data_bytes());
        };
        let vmas: Vec<VmaRec> = self.vmas.iter().map(|v| v.vma.clone()).collect();
        super::stream::present_bytes(t.pid(), &vmas).ok()
    }
}
