//! The rules of FORMAT.md, checked once for the reader and the writer alike: record order,
//! record framing, every field of every record kind, the limits and the tail digest. The
//! [`Validator`] carries what a check needs from the records before it; the reader
//! ([`crate::read`]) runs it on what it parses and the writer ([`crate::write`]) on what it is
//! asked to emit, so the two accept exactly the same images.
//!
//! This file holds the shared state, the record framing (index, flags, order, length) and the
//! tail; `fields` checks the fields of each record kind.

mod fields;
mod state;
mod state12;

use crate::error::{Error, ErrorKind, Result};
use crate::limits::*;
use crate::raw::{self, *};
use zerocopy::IntoBytes;

/// The CRC-64 used for the tail digest (§2.4). Slice-by-16 tables: the digest takes 16 bytes of
/// every record, which one step of them covers.
pub(crate) static DIGEST_CRC: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_XZ);

pub(crate) const REC_HDR: u64 = 16;

pub(crate) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub(crate) fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `n` rounded up to a multiple of 8 (n ≤ u32::MAX, so no overflow in u64).
pub(crate) fn pad8(n: u64) -> u64 {
    n.saturating_add(7) & !7
}

/// A CRC-32 of a record started over header bytes 0..12; the payload's checked part follows
/// (§2.3).
pub(crate) fn record_crc_start(h: &RecordHeader) -> crc32fast::Hasher {
    let mut c = crc32fast::Hasher::new();
    c.update(h.kind.as_bytes());
    c.update(h.flags.as_bytes());
    c.update(h.len.as_bytes());
    c.update(h.index.as_bytes());
    c
}

fn all_zero(b: &[u8]) -> bool {
    // No early exit: the OR of every byte vectorizes (pads reach 64 KiB per Pages record).
    b.iter().fold(0u8, |a, &x| a | x) == 0
}

/// The first nonzero byte of `b` (its index and value), if any (FORMAT.md §2.6: a padding
/// error names the first nonzero byte).
fn first_nonzero(b: &[u8]) -> Option<(usize, u8)> {
    if all_zero(b) {
        return None;
    }
    b.iter()
        .position(|&x| x != 0)
        .map(|i| (i, b.get(i).copied().unwrap_or(0)))
}

/// Bytes after the first NUL must be NUL too, so every value has one encoding: the first
/// nonzero byte after a NUL (its index and value), if any.
fn nul_pad_error(b: &[u8]) -> Option<(usize, u8)> {
    let i = b.iter().position(|&x| x == 0)?;
    let (j, v) = first_nonzero(b.get(i..)?)?;
    Some((i.saturating_add(j), v))
}

/// Where in the record order the validator is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Header,
    Task,
    Regs,
    Mm,
    Body,
    Done,
}

impl Stage {
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Stage::Header => "Header",
            Stage::Task => "Task",
            Stage::Regs => "Regs",
            Stage::Mm => "Mm",
            Stage::Body => "Vma, Pages or Tail",
            Stage::Done => "end of image",
        }
    }
}

/// The state both the reader and the writer carry through an image: record order, position,
/// the current VMA, the running tail digest. Every rule of FORMAT.md is checked here, once.
#[derive(Clone)]
pub(crate) struct Validator {
    pub(crate) offset: u64,
    pub(crate) index: u32,
    pub(crate) stage: Stage,
    pub(crate) page_size: u32,
    pub(crate) arch: u16,
    pub(crate) incremental: bool,
    pub(crate) vmas: u32,
    /// Range of the VMA that Pages records now describe.
    pub(crate) vma: Option<(u64, u64)>,
    /// After a failed Vma that `Parser::resync` stepped over: its Pages are checked for their
    /// CRCs but not against a VMA.
    pub(crate) orphan: bool,
    pub(crate) last_vma_end: u64,
    /// The next run must start at or above this address.
    pub(crate) run_floor: u64,
    pub(crate) digest: crc::Digest<'static, u64, crc::Table<16>>,
    /// The Header's `version_minor` (the kinds of 1.1 need 1 or more).
    pub(crate) minor: u16,
    /// The state records (§2.5) passed: 0 none or Files only, 1 Inotify, 2 Lock, 3 Signals,
    /// 4 Timers, 5 Process.
    pub(crate) state_part: u8,
    /// File records so far.
    pub(crate) files: u32,
    /// `(role, fd)` of the last File.
    pub(crate) last_file: Option<(u16, u32)>,
    /// While a FileData may come (right after a File with `FILE_HAS_DATA` or a FileData): the
    /// `offset` it must have.
    pub(crate) file_data_next: Option<u64>,
    /// The record before was a Vma (a VmaAttr may come).
    pub(crate) after_vma: bool,
    /// While an InotifyWatch may come (right after an Inotify that is no dup, or a watch): the
    /// `wd` it must exceed.
    pub(crate) watch_next: Option<u32>,
    /// `fd` of the last Inotify.
    pub(crate) last_inotify: Option<u32>,
    /// InotifyWatch records so far.
    pub(crate) watches: u32,
    /// Lock records so far.
    pub(crate) locks: u32,
    /// While a VdsoData may come (right after the vDSO's Vma or its VmaAttr): the `len` it
    /// must have.
    pub(crate) vdso_next: Option<u64>,
    /// A VdsoData was read.
    pub(crate) vdso_seen: bool,
}

impl Default for Validator {
    fn default() -> Self {
        Validator {
            offset: 0,
            index: 0,
            stage: Stage::Header,
            page_size: 0,
            arch: 0,
            incremental: false,
            vmas: 0,
            vma: None,
            orphan: false,
            last_vma_end: 0,
            run_floor: 0,
            digest: DIGEST_CRC.digest(),
            minor: 0,
            state_part: 0,
            files: 0,
            last_file: None,
            file_data_next: None,
            after_vma: false,
            watch_next: None,
            last_inotify: None,
            watches: 0,
            locks: 0,
            vdso_next: None,
            vdso_seen: false,
        }
    }
}

fn bad(offset: u64, field: &'static str, expected: &'static str, found: u64) -> Error {
    Error::new(
        offset,
        ErrorKind::BadField {
            field,
            expected,
            found,
        },
    )
}

fn limit(offset: u64, limit: &'static str, max: u32, found: u64) -> Error {
    Error::new(
        offset,
        ErrorKind::LimitExceeded {
            limit,
            max: u64::from(max),
            found,
        },
    )
}

impl Validator {
    /// An error at the current record's offset.
    pub(crate) fn err(&self, kind: ErrorKind) -> Error {
        Error::new(self.offset, kind)
    }

    /// Byte offset of the current record's payload.
    pub(crate) fn payload_off(&self) -> u64 {
        self.offset.saturating_add(REC_HDR)
    }

    /// The image's page size minus one (0 before the Header).
    fn page_mask(&self) -> u64 {
        u64::from(self.page_size).saturating_sub(1)
    }

    /// Checks a record header against the order, its kind's flags and the length limits.
    pub(crate) fn check_record_header(&self, h: &RecordHeader) -> Result<()> {
        let (kind, flags, len) = (h.kind.get(), h.flags.get(), h.len.get());
        if h.index.get() != self.index {
            return Err(self.err(ErrorKind::BadIndex {
                expected: self.index,
                found: h.index.get(),
            }));
        }
        let core = (KIND_HEADER..=KIND_CORE_LAST).contains(&kind);
        let known = core || (KIND_FILE..=KIND_LAST).contains(&kind);
        if core {
            if flags != RECORD_CRITICAL {
                return Err(bad(
                    self.offset,
                    "record flags",
                    "1 (critical) for a known kind",
                    flags.into(),
                ));
            }
        } else if known {
            if flags != 0 {
                return Err(bad(
                    self.offset,
                    "record flags",
                    "0 (not critical) for a kind of 1.1 or 1.2",
                    flags.into(),
                ));
            }
        } else if flags & RECORD_CRITICAL != 0 {
            return Err(self.err(ErrorKind::UnknownCritical { kind }));
        } else if flags != 0 {
            return Err(bad(
                self.offset,
                "record flags",
                "only bit 0 (critical) defined",
                flags.into(),
            ));
        }
        let allowed = match self.stage {
            Stage::Header => kind == KIND_HEADER,
            Stage::Task => kind == KIND_TASK,
            Stage::Regs => kind == KIND_REGS,
            Stage::Mm => kind == KIND_MM,
            Stage::Body => {
                matches!(kind, KIND_VMA | KIND_TAIL)
                    || !core
                    || (kind == KIND_PAGES && (self.vma.is_some() || self.orphan))
            }
            Stage::Done => false,
        };
        // The kinds of 1.1 have rules of their own (§2.5).
        let state_err = if allowed {
            self.state_order(kind)
        } else {
            None
        };
        let allowed = allowed && state_err.is_none();
        if !allowed {
            let expected = if let Some(e) = state_err {
                e
            } else if kind == KIND_PAGES && self.stage == Stage::Body {
                "a Vma before Pages"
            } else {
                self.stage.expected()
            };
            return Err(self.err(ErrorKind::UnexpectedRecord {
                found: kind,
                expected,
            }));
        }
        if len % 8 != 0 {
            return Err(bad(
                self.offset,
                "record length",
                "a multiple of 8",
                len.into(),
            ));
        }
        if len > MAX_PAYLOAD_LEN {
            return Err(limit(
                self.offset,
                "MAX_PAYLOAD_LEN",
                MAX_PAYLOAD_LEN,
                len.into(),
            ));
        }
        let fixed = |n: usize| -> Result<()> {
            let n = to_u64(n);
            let exact = matches!(
                kind,
                KIND_HEADER | KIND_TASK | KIND_TAIL | KIND_VMA_ATTR | KIND_INOTIFY | KIND_LOCK
            );
            let ok = if exact {
                u64::from(len) == n
            } else {
                u64::from(len) >= n
            };
            if ok {
                Ok(())
            } else {
                Err(self.err(ErrorKind::BadLength {
                    kind,
                    expected: n,
                    found: len.into(),
                }))
            }
        };
        match kind {
            KIND_HEADER => fixed(size_of::<raw::Header>()),
            KIND_TASK => fixed(size_of::<raw::Task>()),
            KIND_REGS => fixed(size_of::<RegsX86_64>()),
            KIND_MM => fixed(size_of::<raw::Mm>()),
            KIND_VMA => fixed(size_of::<raw::Vma>()),
            KIND_PAGES => fixed(size_of::<raw::Pages>().saturating_add(size_of::<PageRun>())),
            KIND_TAIL => fixed(size_of::<raw::Tail>()),
            KIND_FILE => fixed(size_of::<raw::File>()),
            KIND_FILE_DATA => fixed(size_of::<raw::FileData>()),
            KIND_SIGNALS => fixed(size_of::<raw::Signals>()),
            KIND_TIMERS => fixed(size_of::<raw::Timers>()),
            KIND_PROCESS => fixed(size_of::<raw::Process>()),
            KIND_VMA_ATTR => fixed(size_of::<raw::VmaAttr>()),
            KIND_INOTIFY => fixed(size_of::<raw::Inotify>()),
            KIND_INOTIFY_WATCH => fixed(size_of::<raw::InotifyWatch>()),
            KIND_LOCK => fixed(size_of::<raw::Lock>()),
            KIND_VDSO_DATA => fixed(size_of::<raw::VdsoData>()),
            _ => Ok(()),
        }
    }

    /// Length of a record's checked part, from its header and (for Pages) its fixed part.
    pub(crate) fn pages_meta_len(&self, p: &raw::Pages) -> Result<u64> {
        let n = p.run_count.get();
        if n == 0 {
            return Err(bad(self.payload_off(), "run_count", "at least 1", 0));
        }
        if n > MAX_RUNS_PER_RECORD {
            return Err(limit(
                self.payload_off(),
                "MAX_RUNS_PER_RECORD",
                MAX_RUNS_PER_RECORD,
                n.into(),
            ));
        }
        if p.pad_len.get() >= MAX_PAGE_SIZE {
            return Err(bad(
                self.payload_off().saturating_add(4),
                "pad_len",
                "less than MAX_PAGE_SIZE (65536)",
                p.pad_len.get().into(),
            ));
        }
        // ≤ 16 + 16 KiB + 64 KiB: no overflow.
        Ok(16u64
            .saturating_add(16u64.saturating_mul(n.into()))
            .saturating_add(p.pad_len.get().into()))
    }

    /// Appends a validated record header to the digest and moves past the record.
    pub(crate) fn advance(&mut self, h: &RecordHeader) {
        let kind = h.kind.get();
        if kind != KIND_TAIL {
            self.digest.update(h.as_bytes());
        }
        self.after_vma = kind == KIND_VMA;
        if !matches!(kind, KIND_FILE | KIND_FILE_DATA) {
            self.file_data_next = None;
        }
        if !matches!(kind, KIND_INOTIFY | KIND_INOTIFY_WATCH) {
            self.watch_next = None;
        }
        if !matches!(kind, KIND_VMA | KIND_VMA_ATTR) {
            self.vdso_next = None;
        }
        self.vdso_seen |= kind == KIND_VDSO_DATA;
        let part = match kind {
            KIND_INOTIFY => 1,
            KIND_LOCK => 2,
            KIND_SIGNALS => 3,
            KIND_TIMERS => 4,
            KIND_PROCESS => 5,
            _ => 0,
        };
        self.state_part = self.state_part.max(part);
        self.offset = self
            .offset
            .saturating_add(REC_HDR)
            .saturating_add(h.len.get().into());
        self.index = self.index.saturating_add(1);
    }

    /// Checks the Tail's totals against the records before it.
    pub(crate) fn check_tail(&mut self, t: &raw::Tail) -> Result<()> {
        let at = self.payload_off();
        let count = u64::from(self.index);
        let len = self.offset.saturating_add(REC_HDR + 24);
        let digest = self.digest.clone().finalize();
        for (field, expected, found, off) in [
            ("record_count", count, t.record_count.get(), 0u64),
            ("image_len", len, t.image_len.get(), 8),
            ("digest", digest, t.digest.get(), 16),
        ] {
            if expected != found {
                return Err(Error::new(
                    at.saturating_add(off),
                    ErrorKind::BadTail {
                        field,
                        expected,
                        found,
                    },
                ));
            }
        }
        self.stage = Stage::Done;
        Ok(())
    }
}
