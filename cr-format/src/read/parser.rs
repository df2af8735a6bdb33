//! The sans-I/O [`Parser`]: `parse(bytes, eof)` asks for more bytes, hands out one validated
//! record, or fails with the error and its byte offset. The slice and streaming readers both
//! run on it.

use super::view::{
    File, FileData, InotifyWatch, Mm, Pages, Parsed, Process, Record, RecordKind, Regs, Signals,
    Timers, Unknown, VdsoData, Vma,
};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::*;
use crate::raw::{self, *};
use crate::validate::{pad8, record_crc_start, to_u64, to_usize, Stage, Validator, REC_HDR};
use zerocopy::FromBytes;

/// How much of the image to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Read and CRC-check page data. When false, Pages records are checked up to their data, the
    /// parser never asks for the data bytes and [`Pages::data`] is `None`: time and memory do not
    /// grow with the page data.
    pub verify_data: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { verify_data: true }
    }
}

/// What [`Parser::parse`] found.
#[derive(Debug)]
pub enum Chunk<'a> {
    /// Call again with at least this many bytes from the current position.
    NeedMoreData(u64),
    /// A validated record. Advance the input by [`Parsed::len`] bytes: with
    /// `verify_data == false` this may reach past the bytes passed in (skip them).
    Record(Parsed<'a>),
    /// The Tail has been read and the input ended there.
    End,
}

/// The sans-I/O parser: feed it the bytes from its current position; it asks for more, hands
/// out one validated record, or fails. After a failure every call returns the same error.
#[derive(Clone)]
pub struct Parser {
    v: Validator,
    opts: Options,
    /// Re-walking an image already validated: hand out page data without recomputing its CRC.
    pub(super) trusted: bool,
    /// Kind of the record being read (for error reports).
    kind: Option<u16>,
    /// Header of the record being read, once read (for `resync`).
    current: Option<RecordHeader>,
    failed: Option<Error>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new(Options::default())
    }
}

impl Parser {
    /// A parser at the start of an image.
    pub fn new(opts: Options) -> Self {
        Parser {
            v: Validator::default(),
            opts,
            trusted: false,
            kind: None,
            current: None,
            failed: None,
        }
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.v.offset
    }

    /// After an error inside a record whose header could be read, moves past that record so
    /// that the records after it are checked too (`verify --all`); returns how many bytes the
    /// record spans from [`Parser::offset`] as it was, or `None` if parsing cannot go on (an
    /// error in the Header record or in a record header, truncation, data after the tail).
    ///
    /// The record stepped over counts as present for the order rules; Pages records after a
    /// failed Vma are checked for their CRCs but not against a VMA. Errors found after a resync
    /// may be consequences of the first one.
    pub fn resync(&mut self) -> Option<u64> {
        let e = self.failed?;
        if matches!(
            e.kind,
            ErrorKind::Truncated { .. } | ErrorKind::TrailingData | ErrorKind::Io
        ) {
            return None;
        }
        let h = self.current.take()?;
        let len = h.len.get();
        if len > MAX_PAYLOAD_LEN || len % 8 != 0 {
            return None;
        }
        match (self.v.stage, h.kind.get()) {
            (Stage::Header | Stage::Done, _) => return None,
            (Stage::Task, KIND_TASK) => self.v.stage = Stage::Regs,
            (Stage::Regs, KIND_REGS) => self.v.stage = Stage::Mm,
            (Stage::Mm, KIND_MM) => self.v.stage = Stage::Body,
            (Stage::Body, KIND_VMA) => {
                self.v.vma = None;
                self.v.vdso_next = None;
                self.v.orphan = true;
                self.v.vmas = self.v.vmas.saturating_add(1);
            }
            (Stage::Body, KIND_TAIL) => self.v.stage = Stage::Done,
            _ => {}
        }
        self.v.advance(&h);
        self.failed = None;
        Some(REC_HDR.saturating_add(len.into()))
    }

    /// Kind of the record read last, or being read when an error happened (`None` before the
    /// first record header).
    pub fn record_kind(&self) -> Option<RecordKind> {
        self.kind.map(RecordKind::from)
    }

    /// Whether the Tail has been read.
    pub fn is_done(&self) -> bool {
        self.v.stage == Stage::Done
    }

    /// Parses the next record from `data` (which starts at [`Parser::offset`]); `eof` says
    /// whether `data` holds everything that is left of the input.
    pub fn parse<'a>(&mut self, data: &'a [u8], eof: bool) -> Result<Chunk<'a>> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let r = self.parse_inner(data, eof);
        if let Err(e) = r {
            self.failed = Some(e);
        }
        r
    }

    fn need(&self, data: &[u8], n: u64, eof: bool) -> Result<bool> {
        let have = to_u64(data.len());
        if have >= n {
            Ok(false)
        } else if eof {
            Err(Error::new(
                self.v.offset.saturating_add(have),
                ErrorKind::Truncated {
                    needed: n.saturating_sub(have),
                },
            ))
        } else {
            Ok(true)
        }
    }

    fn parse_inner<'a>(&mut self, data: &'a [u8], eof: bool) -> Result<Chunk<'a>> {
        if self.v.stage == Stage::Done {
            return if !data.is_empty() {
                Err(Error::new(self.v.offset, ErrorKind::TrailingData))
            } else if eof {
                Ok(Chunk::End)
            } else {
                Ok(Chunk::NeedMoreData(1))
            };
        }
        // The first record: check the magic first, so that any other file says "not an image".
        let first = if self.v.stage == Stage::Header {
            REC_HDR + 8
        } else {
            REC_HDR
        };
        // An input too short for the magic (§2.5): `BadMagic` if the bytes it has past 16 are
        // not the magic's first bytes, so a short file that is no image says so; else
        // `Truncated` at its end.
        if self.v.stage == Stage::Header && eof {
            if let Some(got) = data.get(16..) {
                let n = got.len().min(MAGIC.len());
                if got.get(..n) != MAGIC.get(..n) {
                    return Err(Error::new(16, ErrorKind::BadMagic));
                }
            }
        }
        if self.need(data, first, eof)? {
            return Ok(Chunk::NeedMoreData(first));
        }
        if self.v.stage == Stage::Header && data.get(16..24) != Some(&MAGIC[..]) {
            return Err(Error::new(16, ErrorKind::BadMagic));
        }
        let (h, payload) = RecordHeader::read_from_prefix(data)
            .map_err(|_| Error::new(self.v.offset, ErrorKind::Truncated { needed: REC_HDR }))?;
        self.kind = Some(h.kind.get());
        self.current = Some(h);
        self.v.check_record_header(&h)?;
        let (kind, len) = (h.kind.get(), u64::from(h.len.get()));
        let full = REC_HDR.saturating_add(len);

        // How many bytes the CRC covers, and how many we need in hand.
        let (checked_len, in_hand) = if kind == KIND_PAGES {
            if self.need(data, REC_HDR + 16, eof)? {
                return Ok(Chunk::NeedMoreData(REC_HDR + 16));
            }
            let (p, _) = raw::Pages::read_from_prefix(payload)
                .map_err(|_| self.v.err(ErrorKind::Truncated { needed: 16 }))?;
            let meta = self.v.pages_meta_len(&p)?;
            if meta > len {
                return Err(self.v.err(ErrorKind::BadLength {
                    kind,
                    expected: meta,
                    found: len,
                }));
            }
            (
                meta,
                if self.opts.verify_data {
                    full
                } else {
                    REC_HDR.saturating_add(meta)
                },
            )
        } else {
            (len, full)
        };
        if self.need(data, in_hand, eof)? {
            return Ok(Chunk::NeedMoreData(in_hand));
        }
        let payload = payload.get(..to_usize(len)).unwrap_or(payload);
        let (checked, data_area) = payload
            .split_at_checked(to_usize(checked_len))
            .unwrap_or((payload, &[]));
        let computed = if self.trusted {
            h.crc.get()
        } else {
            let mut crc = record_crc_start(&h);
            crc.update(checked);
            crc.finalize()
        };
        if computed != h.crc.get() {
            return Err(self.v.err(ErrorKind::BadCrc {
                stored: h.crc.get(),
                computed,
            }));
        }
        let record = self.decode(&h, checked, data_area)?;
        let parsed = Parsed {
            offset: self.v.offset,
            header: h,
            record,
        };
        self.v.advance(&h);
        Ok(Chunk::Record(parsed))
    }

    /// Decodes and checks a payload whose CRC matched.
    fn decode<'a>(
        &mut self,
        h: &RecordHeader,
        p: &'a [u8],
        data_area: &'a [u8],
    ) -> Result<Record<'a>> {
        let len = to_u64(p.len());
        let offset = self.v.offset;
        let short = |_| {
            self::Error::new(
                offset,
                ErrorKind::BadLength {
                    kind: h.kind.get(),
                    expected: len,
                    found: len,
                },
            )
        };
        Ok(match h.kind.get() {
            KIND_HEADER => {
                let (x, _) = raw::Header::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_header(x)?;
                Record::Header(x)
            }
            KIND_TASK => {
                let (x, _) = raw::Task::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_task(x)?;
                Record::Task(x)
            }
            KIND_REGS => {
                let (x, rest) = RegsX86_64::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_regs(x, len, rest)?;
                let xsave = rest
                    .get(..to_usize(x.xsave_len.get().into()))
                    .unwrap_or(rest);
                Record::Regs(Regs { raw: x, xsave })
            }
            KIND_MM => {
                let (x, rest) = raw::Mm::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_mm_len(x, len)?;
                let n = to_usize(x.auxv_count.get().into());
                let (auxv, rest) =
                    <[AuxvEntry]>::ref_from_prefix_with_elems(rest, n).map_err(|_| short(()))?;
                self.v.check_mm(x, rest)?;
                let exe = rest.get(..usize::from(x.exe_len.get())).unwrap_or(rest);
                Record::Mm(Mm { raw: x, auxv, exe })
            }
            KIND_VMA => {
                let (x, rest) = raw::Vma::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_vma(x, len, rest)?;
                let path = rest.get(..usize::from(x.path_len.get())).unwrap_or(rest);
                Record::Vma(Vma { raw: x, path })
            }
            KIND_PAGES => {
                let (x, rest) = raw::Pages::ref_from_prefix(p).map_err(|_| short(()))?;
                let n = to_usize(x.run_count.get().into());
                let (runs, pad) =
                    <[PageRun]>::ref_from_prefix_with_elems(rest, n).map_err(|_| short(()))?;
                let payload_len = u64::from(h.len.get());
                // A trusted re-walk has checked the padding already: it need not touch it.
                let pad = if self.trusted { &[][..] } else { pad };
                self.v.check_pages(x, runs, pad, payload_len)?;
                let data_offset = self.v.payload_off().saturating_add(len);
                let data = if self.trusted {
                    Some(data_area)
                } else if self.opts.verify_data {
                    let computed = crc32fast::hash(data_area);
                    if computed != x.data_crc.get() {
                        return Err(Error::new(
                            data_offset,
                            ErrorKind::BadDataCrc {
                                stored: x.data_crc.get(),
                                computed,
                            },
                        ));
                    }
                    Some(data_area)
                } else {
                    None
                };
                Record::Pages(Pages {
                    raw: x,
                    runs,
                    data,
                    data_offset,
                    page_size: self.v.page_size,
                })
            }
            KIND_TAIL => {
                let (x, _) = raw::Tail::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_tail(x)?;
                Record::Tail(x)
            }
            KIND_FILE => {
                let (x, rest) = raw::File::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_file(x, len, rest)?;
                let pl = u64::from(x.path_len.get());
                let path = rest.get(..to_usize(pl)).unwrap_or(&[]);
                let data = rest
                    .get(to_usize(pad8(pl))..)
                    .and_then(|d| d.get(..to_usize(x.data_len.get().into())))
                    .unwrap_or(&[]);
                Record::File(File { raw: x, path, data })
            }
            KIND_FILE_DATA => {
                let (x, rest) = raw::FileData::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_file_data(x, len, rest)?;
                let bytes = rest.get(..to_usize(x.len.get().into())).unwrap_or(&[]);
                Record::FileData(FileData { raw: x, bytes })
            }
            KIND_SIGNALS => {
                let (x, rest) = raw::Signals::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_signals(x, len)?;
                let n = to_usize(x.pending_count.get().into());
                let (pending, _) = <[PendingSignal]>::ref_from_prefix_with_elems(rest, n)
                    .map_err(|_| short(()))?;
                self.v.check_pending(pending)?;
                Record::Signals(Signals { raw: x, pending })
            }
            KIND_TIMERS => {
                let (x, rest) = raw::Timers::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_timers(x, len)?;
                let n = to_usize(x.posix_count.get().into());
                let (posix, _) =
                    <[PosixTimer]>::ref_from_prefix_with_elems(rest, n).map_err(|_| short(()))?;
                self.v.check_posix(posix)?;
                Record::Timers(Timers { raw: x, posix })
            }
            KIND_PROCESS => {
                let (x, rest) = raw::Process::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_process(x, len)?;
                let n = to_usize(x.group_count.get().into());
                let (groups, pad) =
                    <[zerocopy::little_endian::U32]>::ref_from_prefix_with_elems(rest, n)
                        .map_err(|_| short(()))?;
                self.v.check_groups(groups, pad)?;
                Record::Process(Process { raw: x, groups })
            }
            KIND_VMA_ATTR => {
                let (x, _) = raw::VmaAttr::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_vma_attr(x)?;
                Record::VmaAttr(x)
            }
            KIND_INOTIFY => {
                let (x, _) = raw::Inotify::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_inotify(x)?;
                Record::Inotify(x)
            }
            KIND_INOTIFY_WATCH => {
                let (x, rest) = raw::InotifyWatch::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_inotify_watch(x, len, rest)?;
                let path = rest.get(..usize::from(x.path_len.get())).unwrap_or(&[]);
                Record::InotifyWatch(InotifyWatch { raw: x, path })
            }
            KIND_LOCK => {
                let (x, _) = raw::Lock::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_lock(x)?;
                Record::Lock(x)
            }
            KIND_VDSO_DATA => {
                let (x, rest) = raw::VdsoData::ref_from_prefix(p).map_err(|_| short(()))?;
                self.v.check_vdso_data(x, len)?;
                let bytes = rest.get(..to_usize(x.len.get().into())).unwrap_or(&[]);
                Record::VdsoData(VdsoData { raw: x, bytes })
            }
            kind => Record::Unknown(Unknown { kind, payload: p }),
        })
    }
}
