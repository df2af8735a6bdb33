//! The slice reader: [`Records`] walks an image in memory record by record, [`Image`] is a
//! whole image validated up front, with lookups over its records.

use super::parser::{Chunk, Options, Parser};
use super::view::{
    File, FileData, InotifyWatch, Mm, Parsed, Process, Record, Regs, RunKind, Signals, Timers,
    VdsoData, Vma,
};
use crate::error::{Error, ErrorKind, Result};
use crate::raw;
use crate::validate::{to_u64, to_usize};

/// An iterator over the records of an image in a slice, validating as it goes; it stops after
/// the first error (which it yields).
#[derive(Clone)]
pub struct Records<'a> {
    data: &'a [u8],
    pos: u64,
    pub(super) parser: Parser,
    done: bool,
}

impl<'a> Records<'a> {
    /// Walks `data`, which must hold a whole image.
    pub fn new(data: &'a [u8], opts: Options) -> Self {
        Records {
            data,
            pos: 0,
            parser: Parser::new(opts),
            done: false,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Parsed<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.data.get(to_usize(self.pos)..).unwrap_or(&[]);
        // A skipped data area may reach past the end: the parser then sees an offset beyond the
        // input and reports truncation from there.
        let eof_gap = self.pos.saturating_sub(to_u64(self.data.len()));
        let r = if eof_gap > 0 {
            Err(Error::new(
                to_u64(self.data.len()),
                ErrorKind::Truncated { needed: eof_gap },
            ))
        } else {
            self.parser.parse(rest, true)
        };
        match r {
            Ok(Chunk::Record(p)) => {
                self.pos = self.pos.saturating_add(p.len());
                Some(Ok(p))
            }
            Ok(Chunk::End) | Ok(Chunk::NeedMoreData(_)) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A whole image in memory, validated.
///
/// `Image::parse` checks everything (page data CRCs included); `Image::parse_metadata` checks
/// everything but the page data, touching only record headers and metadata.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    data: &'a [u8],
    header: &'a raw::Header,
    tail: &'a raw::Tail,
}

impl<'a> Image<'a> {
    /// Validates a whole image, page data included.
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        Self::parse_with(data, Options::default())
    }

    /// Validates a whole image except the page data's CRCs.
    pub fn parse_metadata(data: &'a [u8]) -> Result<Self> {
        Self::parse_with(data, Options { verify_data: false })
    }

    /// Validates with the given options.
    pub fn parse_with(data: &'a [u8], opts: Options) -> Result<Self> {
        Self::parse_each(data, opts, |_| {})
    }

    /// Validates with the given options, handing each record to `each` once it is validated,
    /// in order: a reader that needs every record gets them from this one walk, without a
    /// second ([`Image::records`]; each walk of an image of 65,000 mappings costs ~15 ms, a
    /// page of the image touched per record). On an error `each` has seen the records before
    /// it only: what it gathered must be dropped with the error.
    pub fn parse_each(
        data: &'a [u8],
        opts: Options,
        mut each: impl FnMut(&Parsed<'a>),
    ) -> Result<Self> {
        let mut header = None;
        let mut tail = None;
        for r in Records::new(data, opts) {
            let r = r?;
            each(&r);
            match r.record {
                Record::Header(h) => header = Some(h),
                Record::Tail(t) => tail = Some(t),
                _ => {}
            }
        }
        match (header, tail) {
            (Some(header), Some(tail)) => Ok(Image { data, header, tail }),
            // Unreachable for a slice: the parser reports truncation before ending early.
            _ => Err(Error::new(
                to_u64(data.len()),
                ErrorKind::Truncated { needed: 16 },
            )),
        }
    }

    /// The image bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }
    /// The Header.
    pub fn header(&self) -> &'a raw::Header {
        self.header
    }
    /// The Tail.
    pub fn tail(&self) -> &'a raw::Tail {
        self.tail
    }
    /// This image's CRID.
    pub fn crid(&self) -> u64 {
        self.header.crid.get()
    }
    /// The parent's CRID (0 for a full image).
    pub fn parent_crid(&self) -> u64 {
        self.header.parent_crid.get()
    }
    /// The tail digest, which a child names as `parent_digest`.
    pub fn digest(&self) -> u64 {
        self.tail.digest.get()
    }
    /// Page size.
    pub fn page_size(&self) -> u32 {
        self.header.page_size.get()
    }

    /// Every record, in order. Infallible: the image was validated. Page data is present in
    /// Pages views without being checked again: `parse` checked its CRCs, `parse_metadata` did
    /// not (so a walk costs per record, not per byte of data).
    pub fn records(&self) -> impl Iterator<Item = Parsed<'a>> + 'a {
        let mut walk = Records::new(self.data, Options { verify_data: true });
        walk.parser.trusted = true;
        walk.map_while(|r| r.ok())
    }

    /// The records before the first Vma: the Header, Task, Regs, Mm and the state records
    /// (§2.5), which precede the body. A lookup of one of them need not walk the body: an image
    /// of 65,000 mappings has 130,000 records after them.
    fn head(&self) -> impl Iterator<Item = Parsed<'a>> + 'a {
        self.records()
            .take_while(|r| !matches!(r.record, Record::Vma(_) | Record::Tail(_)))
    }

    /// The Task record.
    pub fn task(&self) -> Option<&'a raw::Task> {
        self.head().find_map(|r| match r.record {
            Record::Task(t) => Some(t),
            _ => None,
        })
    }

    /// The Regs record.
    pub fn regs(&self) -> Option<Regs<'a>> {
        self.head().find_map(|r| match r.record {
            Record::Regs(x) => Some(x),
            _ => None,
        })
    }

    /// The Mm record.
    pub fn mm(&self) -> Option<Mm<'a>> {
        self.head().find_map(|r| match r.record {
            Record::Mm(x) => Some(x),
            _ => None,
        })
    }

    /// The File records (§15), each with the contents its FileData records (§16) hold, in
    /// image order. One walk over the records: the contents iterator of each File is a copy of
    /// the walk, positioned after it.
    pub fn files(&self) -> Files<'a> {
        let mut walk = Records::new(self.data, Options { verify_data: true });
        walk.parser.trusted = true;
        Files { walk }
    }

    /// The Inotify records (§21), each with its watches (§22), in image order. One walk, as
    /// [`Image::files`].
    pub fn inotify(&self) -> Inotifies<'a> {
        let mut walk = Records::new(self.data, Options { verify_data: true });
        walk.parser.trusted = true;
        Inotifies { walk }
    }

    /// The Lock records (§23), in image order.
    pub fn locks(&self) -> impl Iterator<Item = &'a raw::Lock> + 'a {
        self.head().filter_map(|r| match r.record {
            Record::Lock(l) => Some(l),
            _ => None,
        })
    }

    /// The vDSO's Vma and the VdsoData (§24) after it, if the image has one.
    pub fn vdso_data(&self) -> Option<(Vma<'a>, VdsoData<'a>)> {
        let mut vma = None;
        for r in self.records() {
            match r.record {
                Record::Vma(v) => vma = Some(v),
                Record::VdsoData(d) => return vma.map(|v| (v, d)),
                _ => {}
            }
        }
        None
    }

    /// The Signals record (§17), if the image has one.
    pub fn signals(&self) -> Option<Signals<'a>> {
        self.head().find_map(|r| match r.record {
            Record::Signals(x) => Some(x),
            _ => None,
        })
    }

    /// The Timers record (§18), if the image has one.
    pub fn timers(&self) -> Option<Timers<'a>> {
        self.head().find_map(|r| match r.record {
            Record::Timers(x) => Some(x),
            _ => None,
        })
    }

    /// The Process record (§19), if the image has one.
    pub fn process(&self) -> Option<Process<'a>> {
        self.head().find_map(|r| match r.record {
            Record::Process(x) => Some(x),
            _ => None,
        })
    }

    /// The VMAs, in address order.
    pub fn vmas(&self) -> impl Iterator<Item = Vma<'a>> + 'a {
        self.records().filter_map(|r| match r.record {
            Record::Vma(v) => Some(v),
            _ => None,
        })
    }

    /// Where the page at `addr` lives in this image alone.
    pub fn lookup(&self, addr: u64) -> Lookup<'a> {
        let ps = self.page_size();
        let page = addr & !u64::from(ps).saturating_sub(1);
        let mut in_vma = None;
        for r in self.records() {
            match r.record {
                Record::Vma(v) => {
                    if in_vma.is_some() {
                        break;
                    }
                    if v.start() <= page && page < v.end() {
                        in_vma = Some(v);
                    }
                }
                Record::Pages(p) if in_vma.is_some() => {
                    for run in p.iter() {
                        if run.addr <= page && page < run.end(ps) {
                            return match (run.kind, run.data) {
                                (RunKind::Data, Some(d)) => {
                                    let off = to_usize(page.saturating_sub(run.addr));
                                    let d = d
                                        .get(off..off.saturating_add(to_usize(ps.into())))
                                        .unwrap_or(&[]);
                                    Lookup::Data(d)
                                }
                                (RunKind::Data, None) => Lookup::Data(&[]),
                                (RunKind::Zero, _) => Lookup::Zero,
                                (RunKind::Parent, _) => Lookup::Parent,
                            };
                        }
                    }
                }
                _ => {}
            }
        }
        match in_vma {
            Some(v) => Lookup::NotPresent(v),
            None => Lookup::NotMapped,
        }
    }
}

/// The File records of an image ([`Image::files`]).
#[derive(Clone)]
pub struct Files<'a> {
    walk: Records<'a>,
}

impl<'a> Iterator for Files<'a> {
    type Item = (File<'a>, FileContents<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let r = self.walk.next()?.ok()?;
            match r.record {
                Record::File(f) => {
                    let contents = FileContents {
                        walk: self.walk.clone(),
                    };
                    return Some((f, contents));
                }
                // State records precede the body (§2.5).
                Record::Vma(_) | Record::Tail(_) => return None,
                _ => {}
            }
        }
    }
}

/// The Inotify records of an image ([`Image::inotify`]).
#[derive(Clone)]
pub struct Inotifies<'a> {
    walk: Records<'a>,
}

impl<'a> Iterator for Inotifies<'a> {
    type Item = (&'a raw::Inotify, Watches<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let r = self.walk.next()?.ok()?;
            match r.record {
                Record::Inotify(n) => {
                    let watches = Watches {
                        walk: self.walk.clone(),
                    };
                    return Some((n, watches));
                }
                // State records precede the body (§2.5).
                Record::Vma(_) | Record::Tail(_) => return None,
                _ => {}
            }
        }
    }
}

/// The watches of one Inotify: the InotifyWatch records right after it, in order.
#[derive(Clone)]
pub struct Watches<'a> {
    walk: Records<'a>,
}

impl<'a> Iterator for Watches<'a> {
    type Item = InotifyWatch<'a>;
    fn next(&mut self) -> Option<InotifyWatch<'a>> {
        match self.walk.next()?.ok()?.record {
            Record::InotifyWatch(w) => Some(w),
            _ => None,
        }
    }
}

/// The contents of one File: the bytes of the FileData records right after it, in order.
#[derive(Clone)]
pub struct FileContents<'a> {
    walk: Records<'a>,
}

impl<'a> Iterator for FileContents<'a> {
    type Item = FileData<'a>;
    fn next(&mut self) -> Option<FileData<'a>> {
        match self.walk.next()?.ok()?.record {
            Record::FileData(d) => Some(d),
            _ => None,
        }
    }
}

/// Where a page lives within one image.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// Its data, one page.
    Data(&'a [u8]),
    /// Known zero.
    Zero,
    /// Unchanged since the parent.
    Parent,
    /// Inside this VMA, but in no run: never touched (zero for anonymous memory, the file's
    /// contents for a file mapping).
    NotPresent(Vma<'a>),
    /// In no VMA.
    NotMapped,
}
