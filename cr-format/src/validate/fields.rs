//! The checks of each record kind's fields (FORMAT.md §3 to §8), as methods of the
//! [`Validator`]: each returns the error at the byte offset of the first field that breaks a
//! rule, and moves the validator on when the record is good.

use super::{bad, first_nonzero, limit, nul_pad_error, pad8, to_u64, to_usize, Stage, Validator};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::*;
use crate::raw::{self, *};

impl Validator {
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
        if let Some((i, b)) = nul_pad_error(&h.producer) {
            let off = at.saturating_add(64).saturating_add(to_u64(i));
            return Err(bad(off, "producer", "NUL-padded text", b.into()));
        }
        self.page_size = ps;
        self.minor = h.version_minor.get();
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
        if let Some((i, b)) = nul_pad_error(&t.comm) {
            let off = at.saturating_add(128).saturating_add(to_u64(i));
            return Err(bad(off, "comm", "NUL-padded text", b.into()));
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
        if let Some((i, b)) = first_nonzero(tail.get(to_usize(x.into())..).unwrap_or(&[])) {
            let off = at
                .saturating_add(to_u64(size_of::<RegsX86_64>()))
                .saturating_add(x.into())
                .saturating_add(to_u64(i));
            return Err(bad(off, "xsave padding", "zero bytes", b.into()));
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
        let exe_at = at
            .saturating_add(96)
            .saturating_add(16u64.saturating_mul(m.auxv_count.get().into()));
        check_path(exe_and_pad, e, exe_at, "exe path")?;
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
        self.vdso_next = None;
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
        if kind == VMA_VDSO {
            self.vdso_next = Some(end.saturating_sub(start));
        }
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
        // check_record_header admits Pages only after a Vma, or after one `Parser::resync`
        // stepped over (an orphan: its runs are bounded by nothing but the address space).
        let (vstart, vend) = match (self.vma, self.orphan) {
            (Some(v), _) => v,
            (None, true) => (0, u64::MAX),
            (None, false) => {
                return Err(self.err(ErrorKind::UnexpectedRecord {
                    found: KIND_PAGES,
                    expected: "a Vma before Pages",
                }))
            }
        };
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
            let (pages, kind) = (r.pages.get(), r.kind.get());
            let end = self.check_run(r, run_at, floor, (vstart, vend))?;
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
        if let Some((i, b)) = first_nonzero(pad) {
            let off = table_end.saturating_add(to_u64(i));
            return Err(bad(off, "pad", "zero bytes", b.into()));
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

    /// Checks one run of a Pages record (its table entry at `run_at`) against the runs before
    /// it (they end at `floor`) and the VMA; returns where the run ends.
    fn check_run(&self, r: &PageRun, run_at: u64, floor: u64, vma: (u64, u64)) -> Result<u64> {
        let (addr, pages, kind) = (r.addr.get(), r.pages.get(), r.kind.get());
        let (vstart, vend) = vma;
        let ps = u64::from(self.page_size);
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
        u64::from(pages)
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
            })
    }
}

/// Checks a path of `len` bytes at image offset `at` and its padding: an error names the NUL
/// or the first nonzero pad byte (§2.6).
fn check_path(bytes_and_pad: &[u8], len: u32, at: u64, field: &'static str) -> Result<()> {
    let (path, pad) = bytes_and_pad
        .split_at_checked(to_usize(len.into()))
        .unwrap_or((bytes_and_pad, &[]));
    if let Some(i) = path.iter().position(|&b| b == 0) {
        let off = at.saturating_add(to_u64(i));
        return Err(bad(off, field, "no NUL byte", 0));
    }
    if let Some((i, b)) = first_nonzero(pad) {
        let off = at.saturating_add(len.into()).saturating_add(to_u64(i));
        return Err(bad(off, field, "zero padding", b.into()));
    }
    Ok(())
}
