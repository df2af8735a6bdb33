//! The checked zero-copy views of records. A view is only ever built by the
//! [`Parser`](super::Parser) after the record passed every check, so no accessor here can fail
//! or panic.

use crate::raw::{self, *};
use crate::validate::{to_usize, REC_HDR};
use zerocopy::FromBytes;

/// What kind of page run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunKind {
    /// Data stored in the record.
    Data,
    /// Present pages, all zero.
    Zero,
    /// Unchanged since the parent image.
    Parent,
}

impl RunKind {
    /// Decodes a validated `RUN_*` value.
    pub(crate) fn from_raw(k: u16) -> Self {
        match k {
            RUN_ZERO => RunKind::Zero,
            RUN_PARENT => RunKind::Parent,
            _ => RunKind::Data,
        }
    }

    /// The on-disk value.
    pub fn to_raw(self) -> u16 {
        match self {
            RunKind::Data => RUN_DATA,
            RunKind::Zero => RUN_ZERO,
            RunKind::Parent => RUN_PARENT,
        }
    }
}

/// A record kind; unknown values survive as `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// §3.
    Header,
    /// §4.
    Task,
    /// §5.
    Regs,
    /// §6.
    Mm,
    /// §7.
    Vma,
    /// §8.
    Pages,
    /// §9.
    Tail,
    /// §15.
    File,
    /// §16.
    FileData,
    /// §17.
    Signals,
    /// §18.
    Timers,
    /// §19.
    Process,
    /// §20.
    VmaAttr,
    /// §21.
    Inotify,
    /// §22.
    InotifyWatch,
    /// §23.
    Lock,
    /// §24.
    VdsoData,
    /// A kind this version does not define.
    Unknown(u16),
}

impl From<u16> for RecordKind {
    fn from(k: u16) -> Self {
        match k {
            KIND_HEADER => RecordKind::Header,
            KIND_TASK => RecordKind::Task,
            KIND_REGS => RecordKind::Regs,
            KIND_MM => RecordKind::Mm,
            KIND_VMA => RecordKind::Vma,
            KIND_PAGES => RecordKind::Pages,
            KIND_TAIL => RecordKind::Tail,
            KIND_FILE => RecordKind::File,
            KIND_FILE_DATA => RecordKind::FileData,
            KIND_SIGNALS => RecordKind::Signals,
            KIND_TIMERS => RecordKind::Timers,
            KIND_PROCESS => RecordKind::Process,
            KIND_VMA_ATTR => RecordKind::VmaAttr,
            KIND_INOTIFY => RecordKind::Inotify,
            KIND_INOTIFY_WATCH => RecordKind::InotifyWatch,
            KIND_LOCK => RecordKind::Lock,
            KIND_VDSO_DATA => RecordKind::VdsoData,
            n => RecordKind::Unknown(n),
        }
    }
}

/// Registers view (§5).
#[derive(Clone, Copy, Debug)]
pub struct Regs<'a> {
    /// Fixed part.
    pub raw: &'a RegsX86_64,
    /// The XSAVE area, `xsave_len` bytes.
    pub xsave: &'a [u8],
}

impl Regs<'_> {
    /// General register `i` in `NT_PRSTATUS` order (0 past the end).
    pub fn gpr(&self, i: usize) -> u64 {
        self.raw.gpr.get(i).map_or(0, |r| r.get())
    }
}

/// Mm view (§6).
#[derive(Clone, Copy, Debug)]
pub struct Mm<'a> {
    /// Fixed part.
    pub raw: &'a raw::Mm,
    /// Auxiliary vector.
    pub auxv: &'a [AuxvEntry],
    /// Executable path (bytes, no NUL).
    pub exe: &'a [u8],
}

/// Vma view (§7).
#[derive(Clone, Copy, Debug)]
pub struct Vma<'a> {
    /// Fixed part.
    pub raw: &'a raw::Vma,
    /// File path (empty unless a file mapping).
    pub path: &'a [u8],
}

impl Vma<'_> {
    /// First address.
    pub fn start(&self) -> u64 {
        self.raw.start.get()
    }
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.raw.end.get()
    }
    /// `VMA_*` kind.
    pub fn kind(&self) -> u16 {
        self.raw.kind.get()
    }
}

/// One run of a Pages record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run<'a> {
    /// First address.
    pub addr: u64,
    /// Number of pages.
    pub pages: u32,
    /// What the pages are.
    pub kind: RunKind,
    /// The pages' data for a data run, when the record was read with its data.
    pub data: Option<&'a [u8]>,
}

impl Run<'_> {
    /// One past the last address (cannot overflow: checked when parsed).
    pub fn end(&self, page_size: u32) -> u64 {
        self.addr
            .saturating_add(u64::from(self.pages).saturating_mul(page_size.into()))
    }
}

/// Pages view (§8).
#[derive(Clone, Copy, Debug)]
pub struct Pages<'a> {
    /// Fixed part.
    pub raw: &'a raw::Pages,
    /// Run table.
    pub runs: &'a [PageRun],
    /// Data area, if read (None when parsed without data).
    pub data: Option<&'a [u8]>,
    /// Byte offset of the data area in the image (a multiple of the page size when nonempty).
    pub data_offset: u64,
    /// Page size of the image.
    pub page_size: u32,
}

impl<'a> Pages<'a> {
    /// The runs, each with its slice of the data area.
    pub fn iter(&self) -> RunIter<'a> {
        RunIter {
            runs: self.runs.iter(),
            data: self.data,
            page_size: self.page_size,
        }
    }
    /// Total bytes of page data in this record.
    pub fn data_len(&self) -> u64 {
        self.iter()
            .filter(|r| r.kind == RunKind::Data)
            .map(|r| u64::from(r.pages).saturating_mul(self.page_size.into()))
            .sum()
    }
}

/// Iterator over the runs of a Pages record.
#[derive(Clone, Debug)]
pub struct RunIter<'a> {
    runs: core::slice::Iter<'a, PageRun>,
    data: Option<&'a [u8]>,
    page_size: u32,
}

impl<'a> Iterator for RunIter<'a> {
    type Item = Run<'a>;
    fn next(&mut self) -> Option<Run<'a>> {
        let r = self.runs.next()?;
        let kind = RunKind::from_raw(r.kind.get());
        let pages = r.pages.get();
        let mut data = None;
        if kind == RunKind::Data {
            if let Some(d) = self.data {
                let n = to_usize(u64::from(pages).saturating_mul(self.page_size.into()));
                let (here, rest) = d.split_at_checked(n).unwrap_or((d, &[]));
                data = Some(here);
                self.data = Some(rest);
            }
        }
        Some(Run {
            addr: r.addr.get(),
            pages,
            kind,
            data,
        })
    }
}

/// File view (§15).
#[derive(Clone, Copy, Debug)]
pub struct File<'a> {
    /// Fixed part.
    pub raw: &'a raw::File,
    /// Path (bytes, no NUL).
    pub path: &'a [u8],
    /// Type-specific data, `data_len` bytes.
    pub data: &'a [u8],
}

impl<'a> File<'a> {
    /// `FILE_*` type.
    pub fn ftype(&self) -> u16 {
        self.raw.ftype.get()
    }
    /// `ROLE_*`.
    pub fn role(&self) -> u16 {
        self.raw.role.get()
    }
    /// Type-specific value `i` (0 past the end).
    pub fn param(&self, i: usize) -> u64 {
        self.raw.params.get(i).map_or(0, |p| p.get())
    }
    /// The interest list of an epoll File (empty for other types).
    pub fn epoll(&self) -> &'a [EpollEntry] {
        if self.ftype() != FILE_EPOLL {
            return &[];
        }
        <[EpollEntry]>::ref_from_bytes(self.data).unwrap_or(&[])
    }
}

/// FileData view (§16).
#[derive(Clone, Copy, Debug)]
pub struct FileData<'a> {
    /// Fixed part.
    pub raw: &'a raw::FileData,
    /// The bytes, `len` of them.
    pub bytes: &'a [u8],
}

/// Signals view (§17).
#[derive(Clone, Copy, Debug)]
pub struct Signals<'a> {
    /// Fixed part (dispositions and alternate stack).
    pub raw: &'a raw::Signals,
    /// Pending signals.
    pub pending: &'a [PendingSignal],
}

/// Timers view (§18).
#[derive(Clone, Copy, Debug)]
pub struct Timers<'a> {
    /// Fixed part (interval timers).
    pub raw: &'a raw::Timers,
    /// POSIX timers.
    pub posix: &'a [PosixTimer],
}

/// Process view (§19).
#[derive(Clone, Copy, Debug)]
pub struct Process<'a> {
    /// Fixed part.
    pub raw: &'a raw::Process,
    /// Supplementary group ids.
    pub groups: &'a [zerocopy::little_endian::U32],
}

/// InotifyWatch view (§22).
#[derive(Clone, Copy, Debug)]
pub struct InotifyWatch<'a> {
    /// Fixed part.
    pub raw: &'a raw::InotifyWatch,
    /// The watched path found at capture (bytes, no NUL, at least one).
    pub path: &'a [u8],
}

impl InotifyWatch<'_> {
    /// Watch descriptor.
    pub fn wd(&self) -> u32 {
        self.raw.wd.get()
    }
    /// `IN_*` event mask.
    pub fn mask(&self) -> u32 {
        self.raw.mask.get()
    }
}

/// VdsoData view (§24).
#[derive(Clone, Copy, Debug)]
pub struct VdsoData<'a> {
    /// Fixed part.
    pub raw: &'a raw::VdsoData,
    /// The vDSO's bytes, as long as its Vma.
    pub bytes: &'a [u8],
}

/// A record of a kind this version does not know, not critical (skipped by readers).
#[derive(Clone, Copy, Debug)]
pub struct Unknown<'a> {
    /// Record kind.
    pub kind: u16,
    /// Payload.
    pub payload: &'a [u8],
}

/// A validated record's view.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    /// §3.
    Header(&'a raw::Header),
    /// §4.
    Task(&'a raw::Task),
    /// §5.
    Regs(Regs<'a>),
    /// §6.
    Mm(Mm<'a>),
    /// §7.
    Vma(Vma<'a>),
    /// §8.
    Pages(Pages<'a>),
    /// §15.
    File(File<'a>),
    /// §16.
    FileData(FileData<'a>),
    /// §17.
    Signals(Signals<'a>),
    /// §18.
    Timers(Timers<'a>),
    /// §19.
    Process(Process<'a>),
    /// §20.
    VmaAttr(&'a raw::VmaAttr),
    /// §21.
    Inotify(&'a raw::Inotify),
    /// §22.
    InotifyWatch(InotifyWatch<'a>),
    /// §23.
    Lock(&'a raw::Lock),
    /// §24.
    VdsoData(VdsoData<'a>),
    /// A non-critical record of unknown kind.
    Unknown(Unknown<'a>),
    /// §9.
    Tail(&'a raw::Tail),
}

/// A validated record with its place in the image.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    /// Byte offset of the record header.
    pub offset: u64,
    /// The record header.
    pub header: RecordHeader,
    /// The view.
    pub record: Record<'a>,
}

impl Parsed<'_> {
    /// Total bytes of the record, header included.
    pub fn len(&self) -> u64 {
        REC_HDR.saturating_add(self.header.len.get().into())
    }
    /// Never true: a record has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// The record's kind.
    pub fn kind(&self) -> RecordKind {
        self.header.kind.get().into()
    }
}
