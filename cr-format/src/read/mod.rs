//! Reading images: one sans-I/O [`Parser`] that validates each record before it hands out a
//! view, the slice reader [`Image`] built on it, and (under `std`) the [`StreamReader`] adapter.
//!
//! Contract: once a record has been returned as a [`Parsed`] value, every accessor of its view is
//! infallible and cannot panic; the checks of FORMAT.md (length, order, CRC, field values, limits)
//! have all been made. The slice reader and the streaming reader run the same code, so they
//! accept the same images and report the same error at the same offset.

use crate::error::{Error, ErrorKind, Result};
use crate::limits::*;
use crate::raw::{self, *};
use zerocopy::{FromBytes, IntoBytes};

/// The CRC-64 used for the tail digest (§2.4).
pub(crate) static DIGEST_CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

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

/// Bytes after the first NUL must be NUL too, so every value has one encoding.
fn nul_padded(b: &[u8]) -> bool {
    match b.iter().position(|&x| x == 0) {
        Some(i) => b.get(i..).is_some_and(all_zero),
        None => true,
    }
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
    pub(crate) digest: crc::Digest<'static, u64>,
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
    fn err(&self, kind: ErrorKind) -> Error {
        Error::new(self.offset, kind)
    }

    fn payload_off(&self) -> u64 {
        self.offset.saturating_add(REC_HDR)
    }

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
        let known = (KIND_HEADER..=KIND_TAIL).contains(&kind);
        if known {
            if flags != RECORD_CRITICAL {
                return Err(bad(
                    self.offset,
                    "record flags",
                    "1 (critical) for a known kind",
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
                    || !known
                    || (kind == KIND_PAGES && (self.vma.is_some() || self.orphan))
            }
            Stage::Done => false,
        };
        if !allowed {
            let expected = if kind == KIND_PAGES && self.stage == Stage::Body {
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
            let ok = if matches!(kind, KIND_HEADER | KIND_TASK | KIND_TAIL) {
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
                self.payload_off(),
                "pad_len",
                "less than the page size",
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
        if h.kind.get() != KIND_TAIL {
            self.digest.update(h.as_bytes());
        }
        self.offset = self
            .offset
            .saturating_add(REC_HDR)
            .saturating_add(h.len.get().into());
        self.index = self.index.saturating_add(1);
    }

    pub(crate) fn check_header(&mut self, h: &raw::Header) -> Result<()> {
        let at = self.payload_off();
        if h.magic != MAGIC {
            return Err(Error::new(at, ErrorKind::BadMagic));
        }
        let (major, minor) = (h.version_major.get(), h.version_minor.get());
        if major != VERSION_MAJOR {
            return Err(Error::new(
                at.saturating_add(8),
                ErrorKind::UnsupportedVersion { major, minor },
            ));
        }
        if h.arch.get() != ARCH_X86_64 {
            return Err(Error::new(
                at.saturating_add(12),
                ErrorKind::UnsupportedArch { arch: h.arch.get() },
            ));
        }
        let ps = h.page_size.get();
        if !ps.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&ps) {
            return Err(bad(
                at.saturating_add(16),
                "page_size",
                "a power of two in 4096..=65536",
                ps.into(),
            ));
        }
        if h.flags.get() != 0 {
            return Err(bad(
                at.saturating_add(20),
                "flags",
                "0 (no flags defined in 1.x)",
                h.flags.get().into(),
            ));
        }
        if h._reserved0.get() != 0 {
            return Err(bad(
                at.saturating_add(14),
                "_reserved0",
                "0",
                h._reserved0.get().into(),
            ));
        }
        if h._reserved1.get() != 0 {
            return Err(bad(
                at.saturating_add(60),
                "_reserved1",
                "0",
                h._reserved1.get().into(),
            ));
        }
        let (crid, parent, digest, method) = (
            h.crid.get(),
            h.parent_crid.get(),
            h.parent_digest.get(),
            h.diff_method.get(),
        );
        if crid == 0 {
            return Err(bad(at.saturating_add(24), "crid", "at least 1", 0));
        }
        if parent >= crid {
            return Err(bad(
                at.saturating_add(32),
                "parent_crid",
                "0 or less than crid",
                parent,
            ));
        }
        if parent == 0 {
            if digest != 0 {
                return Err(bad(
                    at.saturating_add(40),
                    "parent_digest",
                    "0 in a full image",
                    digest,
                ));
            }
            if method != DIFF_NONE {
                return Err(bad(
                    at.saturating_add(56),
                    "diff_method",
                    "0 in a full image",
                    method.into(),
                ));
            }
        } else if !matches!(method, DIFF_WRITE_TRACKING | DIFF_CONTENT_COMPARE) {
            return Err(bad(
                at.saturating_add(56),
                "diff_method",
                "1 or 2 in an incremental image",
                method.into(),
            ));
        }
        if !nul_padded(&h.producer) {
            return Err(bad(at.saturating_add(64), "producer", "NUL-padded text", 0));
        }
        self.page_size = ps;
        self.arch = h.arch.get();
        self.incremental = parent != 0;
        self.stage = Stage::Task;
        Ok(())
    }

    pub(crate) fn check_task(&mut self, t: &raw::Task) -> Result<()> {
        let at = self.payload_off();
        if t.pid.get() == 0 {
            return Err(bad(at, "pid", "at least 1", 0));
        }
        if !t.state.is_ascii_alphabetic() {
            return Err(bad(
                at.saturating_add(20),
                "state",
                "a state letter",
                t.state.into(),
            ));
        }
        if let Some(&b) = t._reserved0.iter().find(|&&b| b != 0) {
            return Err(bad(at.saturating_add(21), "_reserved0", "0", b.into()));
        }
        if t._reserved1.get() != 0 {
            return Err(bad(
                at.saturating_add(148),
                "_reserved1",
                "0",
                t._reserved1.get().into(),
            ));
        }
        if !nul_padded(&t.comm) {
            return Err(bad(at.saturating_add(128), "comm", "NUL-padded text", 0));
        }
        self.stage = Stage::Regs;
        Ok(())
    }

    pub(crate) fn check_regs(
        &mut self,
        r: &RegsX86_64,
        payload_len: u64,
        tail: &[u8],
    ) -> Result<()> {
        let at = self.payload_off();
        if r.arch.get() != self.arch {
            return Err(bad(
                at,
                "regs arch",
                "the Header's arch",
                r.arch.get().into(),
            ));
        }
        if r._reserved0.get() != 0 {
            return Err(bad(
                at.saturating_add(2),
                "_reserved0",
                "0",
                r._reserved0.get().into(),
            ));
        }
        let x = r.xsave_len.get();
        if x > MAX_XSAVE_LEN {
            return Err(limit(
                at.saturating_add(4),
                "MAX_XSAVE_LEN",
                MAX_XSAVE_LEN,
                x.into(),
            ));
        }
        let want = to_u64(size_of::<RegsX86_64>()).saturating_add(pad8(x.into()));
        if payload_len != want {
            return Err(self.err(ErrorKind::BadLength {
                kind: KIND_REGS,
                expected: want,
                found: payload_len,
            }));
        }
        // The writer passes the area without its padding (it writes zeros itself).
        if !all_zero(tail.get(to_usize(x.into())..).unwrap_or(&[])) {
            return Err(bad(at, "xsave padding", "zero bytes", 0));
        }
        self.stage = Stage::Mm;
        Ok(())
    }

    /// Checks the Mm's counts against the limits and the payload length, before the auxv and
    /// path are sliced out.
    pub(crate) fn check_mm_len(&self, m: &raw::Mm, payload_len: u64) -> Result<()> {
        let at = self.payload_off();
        let n = m.auxv_count.get();
        if n > MAX_AUXV {
            return Err(limit(at.saturating_add(88), "MAX_AUXV", MAX_AUXV, n.into()));
        }
        let e = u32::from(m.exe_len.get());
        if e > MAX_PATH {
            return Err(limit(at.saturating_add(92), "MAX_PATH", MAX_PATH, e.into()));
        }
        let want = 96u64
            .saturating_add(16u64.saturating_mul(n.into()))
            .saturating_add(pad8(e.into()));
        if payload_len != want {
            return Err(self.err(ErrorKind::BadLength {
                kind: KIND_MM,
                expected: want,
                found: payload_len,
            }));
        }
        Ok(())
    }

    pub(crate) fn check_mm(&mut self, m: &raw::Mm, exe_and_pad: &[u8]) -> Result<()> {
        let at = self.payload_off();
        let e = u32::from(m.exe_len.get());
        if m._reserved0.get() != 0 {
            return Err(bad(
                at.saturating_add(94),
                "_reserved0",
                "0",
                m._reserved0.get().into(),
            ));
        }
        let pairs = [
            ("start_code..end_code", m.start_code, m.end_code, 0),
            ("start_data..end_data", m.start_data, m.end_data, 16),
            ("start_brk..brk", m.start_brk, m.brk, 32),
            ("arg_start..arg_end", m.arg_start, m.arg_end, 56),
            ("env_start..env_end", m.env_start, m.env_end, 72),
        ];
        for (field, lo, hi, off) in pairs {
            if lo.get() > hi.get() {
                return Err(bad(at.saturating_add(off), field, "start <= end", lo.get()));
            }
        }
        check_path(exe_and_pad, e, at, "exe path")?;
        self.stage = Stage::Body;
        Ok(())
    }

    pub(crate) fn check_vma(
        &mut self,
        v: &raw::Vma,
        payload_len: u64,
        path_and_pad: &[u8],
    ) -> Result<()> {
        let at = self.payload_off();
        if self.vmas >= MAX_VMAS {
            return Err(limit(
                self.offset,
                "MAX_VMAS",
                MAX_VMAS,
                u64::from(self.vmas).saturating_add(1),
            ));
        }
        let p = u32::from(v.path_len.get());
        if p > MAX_PATH {
            return Err(limit(at.saturating_add(66), "MAX_PATH", MAX_PATH, p.into()));
        }
        let want = 72u64.saturating_add(pad8(p.into()));
        if payload_len != want {
            return Err(self.err(ErrorKind::BadLength {
                kind: KIND_VMA,
                expected: want,
                found: payload_len,
            }));
        }
        let (start, end, mask) = (v.start.get(), v.end.get(), self.page_mask());
        if start & mask != 0 {
            return Err(bad(at, "vma start", "page-aligned", start));
        }
        if end & mask != 0 || end <= start {
            return Err(bad(
                at.saturating_add(8),
                "vma end",
                "page-aligned and above start",
                end,
            ));
        }
        if start < self.last_vma_end {
            return Err(bad(
                at,
                "vma start",
                "at or above the previous VMA's end",
                start,
            ));
        }
        if v.offset.get() & mask != 0 {
            return Err(bad(
                at.saturating_add(16),
                "vma offset",
                "page-aligned",
                v.offset.get(),
            ));
        }
        if v.prot.get() & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
            return Err(bad(
                at.saturating_add(56),
                "vma prot",
                "PROT_READ|PROT_WRITE|PROT_EXEC bits",
                v.prot.get().into(),
            ));
        }
        if v.flags.get() & !VMA_FLAGS_KNOWN != 0 {
            return Err(bad(
                at.saturating_add(60),
                "vma flags",
                "VMA_SHARED|VMA_GROWSDOWN bits",
                v.flags.get().into(),
            ));
        }
        let kind = v.kind.get();
        if kind > VMA_VSYSCALL {
            return Err(bad(at.saturating_add(64), "vma kind", "0..=6", kind.into()));
        }
        if (kind == VMA_FILE) != (p > 0) {
            return Err(bad(
                at.saturating_add(66),
                "vma path_len",
                "nonzero exactly for file mappings",
                p.into(),
            ));
        }
        if v._reserved0.get() != 0 {
            return Err(bad(
                at.saturating_add(68),
                "_reserved0",
                "0",
                v._reserved0.get().into(),
            ));
        }
        check_path(path_and_pad, p, at.saturating_add(72), "vma path")?;
        self.vmas = self.vmas.saturating_add(1);
        self.orphan = false;
        self.vma = Some((start, end));
        self.last_vma_end = end;
        self.run_floor = start;
        Ok(())
    }

    /// Checks a Pages record's run table and padding; returns the data length it calls for.
    pub(crate) fn check_pages(
        &mut self,
        p: &raw::Pages,
        runs: &[PageRun],
        pad: &[u8],
        payload_len: u64,
    ) -> Result<u64> {
        let at = self.payload_off();
        let (vstart, vend) = self
            .vma
            .unwrap_or(if self.orphan { (0, u64::MAX) } else { (0, 0) });
        if p._reserved0.get() != 0 {
            return Err(bad(
                at.saturating_add(12),
                "_reserved0",
                "0",
                p._reserved0.get().into(),
            ));
        }
        let ps = u64::from(self.page_size);
        let mut data_pages: u64 = 0;
        let mut floor = self.run_floor;
        let mut run_at = at.saturating_add(16);
        for r in runs {
            let (addr, pages, kind) = (r.addr.get(), r.pages.get(), r.kind.get());
            if kind > RUN_PARENT {
                return Err(bad(
                    run_at.saturating_add(12),
                    "run kind",
                    "0 (data), 1 (zero) or 2 (parent)",
                    kind.into(),
                ));
            }
            if kind == RUN_PARENT && !self.incremental {
                return Err(bad(
                    run_at.saturating_add(12),
                    "run kind",
                    "no parent runs in a full image",
                    kind.into(),
                ));
            }
            if r._reserved0.get() != 0 {
                return Err(bad(
                    run_at.saturating_add(14),
                    "_reserved0",
                    "0",
                    r._reserved0.get().into(),
                ));
            }
            if addr & self.page_mask() != 0 {
                return Err(bad(run_at, "run addr", "page-aligned", addr));
            }
            if pages == 0 {
                return Err(bad(run_at.saturating_add(8), "run pages", "at least 1", 0));
            }
            if addr < floor || addr < vstart {
                return Err(bad(
                    run_at,
                    "run addr",
                    "inside the VMA, above the previous run",
                    addr,
                ));
            }
            let end = u64::from(pages)
                .checked_mul(ps)
                .and_then(|len| addr.checked_add(len))
                .filter(|&e| e <= vend)
                .ok_or_else(|| {
                    bad(
                        run_at.saturating_add(8),
                        "run pages",
                        "a run that ends inside the VMA",
                        pages.into(),
                    )
                })?;
            if kind == RUN_DATA {
                data_pages = data_pages.saturating_add(pages.into());
                if data_pages.saturating_mul(ps) > u64::from(MAX_DATA_PER_RECORD) {
                    return Err(limit(
                        run_at.saturating_add(8),
                        "MAX_DATA_PER_RECORD",
                        MAX_DATA_PER_RECORD,
                        data_pages.saturating_mul(ps),
                    ));
                }
            }
            floor = end;
            run_at = run_at.saturating_add(16);
        }
        let data_len = data_pages.saturating_mul(ps);
        // The data starts page-aligned in the file; without data there is no pad.
        let table_end = at
            .saturating_add(16)
            .saturating_add(16u64.saturating_mul(to_u64(runs.len())));
        let want_pad = if data_len == 0 {
            0
        } else {
            table_end.wrapping_neg() & self.page_mask()
        };
        let pad_len = u64::from(p.pad_len.get());
        if pad_len != want_pad {
            return Err(bad(
                at.saturating_add(4),
                "pad_len",
                "the bytes to the next page boundary (0 without data)",
                pad_len,
            ));
        }
        if !all_zero(pad) {
            return Err(bad(table_end, "pad", "zero bytes", 0));
        }
        let want = 16u64
            .saturating_add(16u64.saturating_mul(to_u64(runs.len())))
            .saturating_add(pad_len)
            .saturating_add(data_len);
        if payload_len != want {
            return Err(self.err(ErrorKind::BadLength {
                kind: KIND_PAGES,
                expected: want,
                found: payload_len,
            }));
        }
        self.run_floor = floor;
        Ok(data_len)
    }

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

fn check_path(bytes_and_pad: &[u8], len: u32, at: u64, field: &'static str) -> Result<()> {
    let (path, pad) = bytes_and_pad
        .split_at_checked(to_usize(len.into()))
        .unwrap_or((bytes_and_pad, &[]));
    if path.contains(&0) {
        return Err(bad(at, field, "no NUL bytes", 0));
    }
    if !all_zero(pad) {
        return Err(bad(at.saturating_add(len.into()), field, "zero padding", 0));
    }
    Ok(())
}

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
    trusted: bool,
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
        let short = |_| {
            self::Error::new(
                self.v.offset,
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
            kind => Record::Unknown(Unknown { kind, payload: p }),
        })
    }
}

/// An iterator over the records of an image in a slice, validating as it goes; it stops after
/// the first error (which it yields).
#[derive(Clone)]
pub struct Records<'a> {
    data: &'a [u8],
    pos: u64,
    parser: Parser,
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
        let mut header = None;
        let mut tail = None;
        for r in Records::new(data, opts) {
            match r?.record {
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

    /// The Task record.
    pub fn task(&self) -> Option<&'a raw::Task> {
        self.records().find_map(|r| match r.record {
            Record::Task(t) => Some(t),
            _ => None,
        })
    }

    /// The Regs record.
    pub fn regs(&self) -> Option<Regs<'a>> {
        self.records().find_map(|r| match r.record {
            Record::Regs(x) => Some(x),
            _ => None,
        })
    }

    /// The Mm record.
    pub fn mm(&self) -> Option<Mm<'a>> {
        self.records().find_map(|r| match r.record {
            Record::Mm(x) => Some(x),
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

#[cfg(feature = "std")]
pub use stream::StreamReader;

#[cfg(feature = "std")]
mod stream {
    use super::*;
    use std::io::{self, Read};
    use std::vec::Vec;

    /// Reads an image from any `io::Read` (pipe, socket, file) with a buffer that never holds
    /// more than one record (at most [`MAX_PAYLOAD_LEN`] + 16 bytes).
    pub struct StreamReader<R> {
        inner: R,
        parser: Parser,
        /// Grows to the largest record seen, zero-filled once; `start..end` is unconsumed input.
        buf: Vec<u8>,
        start: usize,
        end: usize,
        eof: bool,
        /// The I/O error that stopped the reader, if any.
        io_error: Option<io::Error>,
        /// For seekable inputs: how to skip bytes, and how many are left in the input.
        skip: Option<SkipBySeek<R>>,
    }

    struct SkipBySeek<R> {
        seek: fn(&mut R, u64) -> io::Result<()>,
        /// Bytes of the input not yet read (buffered bytes excluded).
        left: u64,
    }

    impl<R: Read + io::Seek> StreamReader<R> {
        /// A reader over a seekable input (a file): with `verify_data == false` it seeks over
        /// page data instead of reading it, so metadata is read with time and memory that do
        /// not grow with the data. Reports the same errors as [`StreamReader::new`].
        pub fn new_seekable(mut inner: R, opts: Options) -> io::Result<Self> {
            let pos = inner.stream_position()?;
            let end = inner.seek(io::SeekFrom::End(0))?;
            inner.seek(io::SeekFrom::Start(pos))?;
            let mut s = Self::new(inner, opts);
            s.skip = Some(SkipBySeek {
                seek: |r, n| {
                    let n = i64::try_from(n)
                        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                    r.seek(io::SeekFrom::Current(n)).map(|_| ())
                },
                left: end.saturating_sub(pos),
            });
            Ok(s)
        }
    }

    impl<R: Read> StreamReader<R> {
        /// A reader over `inner`.
        pub fn new(inner: R, opts: Options) -> Self {
            StreamReader {
                inner,
                parser: Parser::new(opts),
                buf: Vec::new(),
                start: 0,
                end: 0,
                eof: false,
                io_error: None,
                skip: None,
            }
        }

        /// Kind of the record read last, or being read when an error happened.
        pub fn record_kind(&self) -> Option<RecordKind> {
            self.parser.record_kind()
        }

        /// After [`StreamReader::for_each`] failed inside a record, steps over that record (see
        /// [`Parser::resync`]) so that `for_each` can go on with the next; false if it cannot.
        pub fn resync(&mut self) -> bool {
            let Some(len) = self.parser.resync() else {
                return false;
            };
            let avail = to_u64(self.end.saturating_sub(self.start));
            let take = len.min(avail);
            self.start = self.start.saturating_add(to_usize(take));
            if len > take {
                self.start = 0;
                self.end = 0;
                if self.discard(len.saturating_sub(take)).is_err() {
                    return false;
                }
            }
            true
        }

        /// The I/O error that ended reading, if that is what happened ([`ErrorKind::Io`]).
        pub fn io_error(&self) -> Option<&io::Error> {
            self.io_error.as_ref()
        }

        /// Calls `f` with each validated record until the Tail; returns the first error.
        pub fn for_each(&mut self, mut f: impl FnMut(&Parsed<'_>)) -> Result<()> {
            let mut skip: u64 = 0;
            loop {
                // Drop consumed bytes and skip data areas not kept.
                let avail = self.end.saturating_sub(self.start);
                if skip > 0 {
                    let s = to_usize(skip).min(avail);
                    self.start = self.start.saturating_add(s);
                    skip = skip.saturating_sub(to_u64(s));
                    if skip > 0 {
                        self.start = 0;
                        self.end = 0;
                        self.discard(skip)?;
                        skip = 0;
                    }
                }
                let rest = self.buf.get(self.start..self.end).unwrap_or(&[]);
                match self.parser.parse(rest, self.eof)? {
                    Chunk::End => return Ok(()),
                    Chunk::NeedMoreData(n) => self.fill(to_usize(n))?,
                    Chunk::Record(p) => {
                        f(&p);
                        let len = to_usize(p.len());
                        let take = len.min(rest.len());
                        skip = to_u64(len.saturating_sub(take));
                        self.start = self.start.saturating_add(take);
                    }
                }
            }
        }

        fn io_err(&mut self, e: io::Error) -> Error {
            self.io_error = Some(e);
            Error::new(self.parser.offset(), ErrorKind::Io)
        }

        /// Reads until `n` unconsumed bytes are buffered or the input ends. Bytes are read
        /// straight into the buffer, which is zeroed only when it grows: one copy per byte.
        fn fill(&mut self, n: usize) -> Result<()> {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end = self.end.saturating_sub(self.start);
                self.start = 0;
            }
            while self.end < n && !self.eof {
                if self.end == self.buf.len() {
                    // Grow with what arrives (doubling from 64 KiB), never past what the parser
                    // asked for: a header claiming a huge record costs nothing until its bytes
                    // come.
                    let want = self.buf.len().saturating_mul(2).max(64 * 1024).min(n);
                    self.buf.resize(want, 0);
                }
                // Read what was asked for plus at most 64 KiB: small records come in batches, and
                // what is left over after a record (moved to the front) stays small.
                let limit = n
                    .max(self.end.saturating_add(64 * 1024))
                    .min(self.buf.len());
                let got = loop {
                    match self
                        .inner
                        .read(self.buf.get_mut(self.end..limit).unwrap_or(&mut []))
                    {
                        Ok(k) => break k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.io_err(e)),
                    }
                };
                self.end = self.end.saturating_add(got).min(self.buf.len());
                if let Some(s) = &mut self.skip {
                    s.left = s.left.saturating_sub(to_u64(got));
                }
                if got == 0 {
                    self.eof = true;
                }
            }
            Ok(())
        }

        /// Reads and drops `n` bytes (a data area not checked).
        fn discard(&mut self, n: u64) -> Result<()> {
            if let Some(s) = &mut self.skip {
                // Seek if the bytes are there; else fail exactly as reading would have.
                let k = n.min(s.left);
                let seek = s.seek;
                s.left = s.left.saturating_sub(k);
                if let Err(e) = seek(&mut self.inner, k) {
                    return Err(self.io_err(e));
                }
                if k == n {
                    return Ok(());
                }
                self.eof = true;
                let short = n.saturating_sub(k);
                return Err(Error::new(
                    self.parser.offset().saturating_sub(short),
                    ErrorKind::Truncated { needed: short },
                ));
            }
            match io::copy(&mut (&mut self.inner).take(n), &mut io::sink()) {
                Ok(k) if k == n => Ok(()),
                Ok(k) => {
                    self.eof = true;
                    Err(Error::new(
                        self.parser.offset().saturating_sub(n.saturating_sub(k)),
                        ErrorKind::Truncated {
                            needed: n.saturating_sub(k),
                        },
                    ))
                }
                Err(e) => Err(self.io_err(e)),
            }
        }
    }
}
