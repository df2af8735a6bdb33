//! Writing images: a streaming [`Writer`] over a [`Sink`].
//!
//! The writer runs every record through the reader's own checks before a byte of it reaches the
//! sink, fills in every derived field (lengths, counts, padding, CRCs, the tail), and refuses
//! records out of order. So it cannot emit an image its reader rejects, and nothing is patched
//! afterwards: a sink can be a pipe.

use crate::error::{Error, ErrorKind, Result};
use crate::limits::*;
use crate::raw::{self, *};
use crate::validate::{pad8, record_crc_start, to_u64, to_usize, Stage, Validator, REC_HDR};
use zerocopy::little_endian::U32;
use zerocopy::IntoBytes;

mod state12;

/// Where the writer's bytes go.
pub trait Sink {
    /// Writes all of `bytes`, or fails with [`ErrorKind::SinkFull`] or [`ErrorKind::Io`].
    fn write_all(&mut self, bytes: &[u8]) -> core::result::Result<(), ErrorKind>;
}

/// A cursor over a caller's buffer: needs no allocator.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceSink<'a> {
    /// A sink that fills `buf` from the start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceSink { buf, pos: 0 }
    }
    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.pos
    }
}

impl Sink for SliceSink<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> core::result::Result<(), ErrorKind> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(ErrorKind::SinkFull)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(ErrorKind::SinkFull)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

#[cfg(feature = "alloc")]
impl Sink for alloc::vec::Vec<u8> {
    fn write_all(&mut self, bytes: &[u8]) -> core::result::Result<(), ErrorKind> {
        self.try_reserve(bytes.len())
            .map_err(|_| ErrorKind::SinkFull)?;
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn write_all(&mut self, bytes: &[u8]) -> core::result::Result<(), ErrorKind> {
        (**self).write_all(bytes)
    }
}

/// An `io::Write` as a sink; keeps the first I/O error for the caller.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct IoSink<W> {
    inner: W,
    error: Option<std::io::Error>,
}

#[cfg(feature = "std")]
impl<W: std::io::Write> IoSink<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        IoSink { inner, error: None }
    }
    /// The first I/O error, if any.
    pub fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }
    /// The writer back.
    pub fn into_inner(self) -> W {
        self.inner
    }
    /// The writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

#[cfg(feature = "std")]
impl<W: std::io::Write> Sink for IoSink<W> {
    fn write_all(&mut self, bytes: &[u8]) -> core::result::Result<(), ErrorKind> {
        if self.error.is_some() {
            return Err(ErrorKind::Io);
        }
        self.inner.write_all(bytes).map_err(|e| {
            self.error = Some(e);
            ErrorKind::Io
        })
    }
}

/// What [`Writer::finish`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Records before the tail.
    pub records: u64,
    /// Image length in bytes.
    pub image_len: u64,
    /// Tail digest: what a child image names as `parent_digest`.
    pub digest: u64,
}

static ZEROS: [u8; 4096] = [0; 4096];

/// The CRC-32 of a Pages record's data (§8 `data_crc`) and its length, for
/// [`Writer::pages_with_crc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataCrc {
    crc: u32,
    len: u64,
}

impl DataCrc {
    /// Computes it over `data`.
    pub fn of(data: &[u8]) -> DataCrc {
        DataCrc {
            crc: crc32fast::hash(data),
            len: to_u64(data.len()),
        }
    }

    /// The CRC-32.
    pub fn crc(&self) -> u32 {
        self.crc
    }
}

/// Writes an image record by record, in the order FORMAT.md §2.5 sets.
pub struct Writer<S> {
    sink: S,
    v: Validator,
    failed: Option<Error>,
}

impl<S: Sink> Writer<S> {
    /// A writer at the start of an image.
    pub fn new(sink: S) -> Self {
        Writer {
            sink,
            v: Validator::default(),
            failed: None,
        }
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.v.offset
    }

    /// The sink.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The sink back.
    pub fn into_inner(self) -> S {
        self.sink
    }

    /// Runs one record's check-and-emit; on failure the writer stays failed.
    fn step(&mut self, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let r = f(self);
        if let Err(e) = r {
            self.failed = Some(e);
        }
        r
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let at = self.v.offset;
        self.sink.write_all(bytes).map_err(|k| Error::new(at, k))
    }

    fn put_zeros(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let k = n.min(to_u64(ZEROS.len()));
            let z = ZEROS.get(..to_usize(k)).unwrap_or(&[]);
            self.put(z)?;
            n = n.saturating_sub(k);
        }
        Ok(())
    }

    fn record_header(&self, kind: u16, flags: u16, len: u64) -> Result<RecordHeader> {
        let len = u32::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD_LEN)
            .ok_or_else(|| {
                Error::new(
                    self.v.offset,
                    ErrorKind::LimitExceeded {
                        limit: "MAX_PAYLOAD_LEN",
                        max: MAX_PAYLOAD_LEN.into(),
                        found: len,
                    },
                )
            })?;
        let h = RecordHeader {
            kind: kind.into(),
            flags: flags.into(),
            len: len.into(),
            index: self.v.index.into(),
            crc: 0.into(),
        };
        self.v.check_record_header(&h).map_err(|e| match e.kind {
            ErrorKind::UnexpectedRecord { expected, .. } => {
                Error::new(e.offset, ErrorKind::OutOfOrder { expected })
            }
            _ => e,
        })?;
        Ok(h)
    }

    /// Emits a record whose checks passed: header, the `checked` parts and `zero_pad` zero
    /// bytes (all under the record CRC), then `data` (under its own CRC, for Pages).
    fn emit(
        &mut self,
        mut h: RecordHeader,
        checked: &[&[u8]],
        zero_pad: u64,
        data: &[u8],
    ) -> Result<()> {
        let mut c = record_crc_start(&h);
        for p in checked {
            c.update(p);
        }
        let mut z = zero_pad;
        while z > 0 {
            let k = z.min(to_u64(ZEROS.len()));
            c.update(ZEROS.get(..to_usize(k)).unwrap_or(&[]));
            z = z.saturating_sub(k);
        }
        h.crc = c.finalize().into();
        self.put(h.as_bytes())?;
        for p in checked {
            self.put(p)?;
        }
        self.put_zeros(zero_pad)?;
        self.put(data)?;
        self.v.advance(&h);
        Ok(())
    }

    /// Writes the Header (§3).
    pub fn header(&mut self, h: &raw::Header) -> Result<()> {
        self.step(|w| {
            let rh = w.record_header(
                KIND_HEADER,
                RECORD_CRITICAL,
                to_u64(size_of::<raw::Header>()),
            )?;
            w.v.check_header(h)?;
            w.emit(rh, &[h.as_bytes()], 0, &[])
        })
    }

    /// Writes the Task (§4).
    pub fn task(&mut self, t: &raw::Task) -> Result<()> {
        self.step(|w| {
            let rh = w.record_header(KIND_TASK, RECORD_CRITICAL, to_u64(size_of::<raw::Task>()))?;
            w.v.check_task(t)?;
            w.emit(rh, &[t.as_bytes()], 0, &[])
        })
    }

    /// Writes the Regs (§5); `xsave_len` is taken from `xsave`.
    pub fn regs(&mut self, r: &RegsX86_64, xsave: &[u8]) -> Result<()> {
        self.step(|w| {
            let mut r = *r;
            let x = u32::try_from(xsave.len()).unwrap_or(u32::MAX);
            if x > MAX_XSAVE_LEN {
                return Err(Error::new(
                    w.v.offset,
                    ErrorKind::LimitExceeded {
                        limit: "MAX_XSAVE_LEN",
                        max: MAX_XSAVE_LEN.into(),
                        found: x.into(),
                    },
                ));
            }
            r.xsave_len = x.into();
            let fixed = to_u64(size_of::<RegsX86_64>());
            let len = fixed.saturating_add(pad8(x.into()));
            let rh = w.record_header(KIND_REGS, RECORD_CRITICAL, len)?;
            w.v.check_regs(&r, len, &[])?;
            w.emit(
                rh,
                &[r.as_bytes(), xsave],
                pad8(x.into()).saturating_sub(x.into()),
                &[],
            )
        })
    }

    /// Writes the Mm (§6); `auxv_count` and `exe_len` are taken from the slices.
    pub fn mm(&mut self, m: &raw::Mm, auxv: &[AuxvEntry], exe: &[u8]) -> Result<()> {
        self.step(|w| {
            let mut m = *m;
            let n = u32::try_from(auxv.len()).unwrap_or(u32::MAX);
            if n > MAX_AUXV {
                return Err(Error::new(
                    w.v.offset,
                    ErrorKind::LimitExceeded {
                        limit: "MAX_AUXV",
                        max: MAX_AUXV.into(),
                        found: n.into(),
                    },
                ));
            }
            let e = path_len(w.v.offset, exe)?;
            m.auxv_count = n.into();
            m.exe_len = e.into();
            let len = 96u64
                .saturating_add(16u64.saturating_mul(n.into()))
                .saturating_add(pad8(e.into()));
            let rh = w.record_header(KIND_MM, RECORD_CRITICAL, len)?;
            w.v.check_mm_len(&m, len)?;
            w.v.check_mm(&m, exe)?;
            w.emit(
                rh,
                &[m.as_bytes(), auxv.as_bytes(), exe],
                pad8(e.into()).saturating_sub(e.into()),
                &[],
            )
        })
    }

    /// Writes a Vma (§7); `path_len` is taken from `path`.
    pub fn vma(&mut self, v: &raw::Vma, path: &[u8]) -> Result<()> {
        self.step(|w| {
            let mut v = *v;
            let p = path_len(w.v.offset, path)?;
            v.path_len = p.into();
            let len = 72u64.saturating_add(pad8(p.into()));
            let rh = w.record_header(KIND_VMA, RECORD_CRITICAL, len)?;
            w.v.check_vma(&v, len, path)?;
            w.emit(
                rh,
                &[v.as_bytes(), path],
                pad8(p.into()).saturating_sub(p.into()),
                &[],
            )
        })
    }

    /// Writes a Pages record (§8) for the most recent Vma: `runs` in address order, `data` the
    /// pages of every data run, concatenated. Padding and CRCs are computed here.
    pub fn pages(&mut self, runs: &[PageRun], data: &[u8]) -> Result<()> {
        self.pages_with_crc(runs, data, DataCrc::of(data))
    }

    /// [`Writer::pages`] with the data CRC computed beforehand by [`DataCrc::of`]: a pipeline
    /// computes it on the thread that just filled `data`, while the bytes are in that core's
    /// cache, and writes the record on another.
    ///
    /// The length is checked; the CRC is trusted. Data changed since `DataCrc::of` gives a
    /// record every reader rejects (`BadDataCrc`): this is the one way to make the writer
    /// emit a record its own checks would refuse.
    pub fn pages_with_crc(&mut self, runs: &[PageRun], data: &[u8], crc: DataCrc) -> Result<()> {
        self.step(|w| {
            if crc.len != to_u64(data.len()) {
                return Err(Error::new(
                    w.v.offset,
                    ErrorKind::BadLength {
                        kind: KIND_PAGES,
                        expected: crc.len,
                        found: to_u64(data.len()),
                    },
                ));
            }
            let n = u32::try_from(runs.len()).unwrap_or(u32::MAX);
            if n > MAX_RUNS_PER_RECORD {
                return Err(Error::new(
                    w.v.offset,
                    ErrorKind::LimitExceeded {
                        limit: "MAX_RUNS_PER_RECORD",
                        max: MAX_RUNS_PER_RECORD.into(),
                        found: n.into(),
                    },
                ));
            }
            let data_len = to_u64(data.len());
            let table_end =
                w.v.offset
                    .saturating_add(REC_HDR + 16)
                    .saturating_add(16 * u64::from(n));
            let pad = if data_len == 0 {
                0
            } else {
                table_end.wrapping_neg() & u64::from(w.v.page_size).saturating_sub(1)
            };
            let p = raw::Pages {
                run_count: n.into(),
                pad_len: u32::try_from(pad).unwrap_or(u32::MAX).into(),
                data_crc: crc.crc.into(),
                _reserved0: 0.into(),
            };
            let len = 16u64
                .saturating_add(16 * u64::from(n))
                .saturating_add(pad)
                .saturating_add(data_len);
            let rh = w.record_header(KIND_PAGES, RECORD_CRITICAL, len)?;
            w.v.pages_meta_len(&p)?;
            let want = w.v.check_pages(&p, runs, &[], len)?;
            if want != data_len {
                return Err(Error::new(
                    w.v.offset,
                    ErrorKind::BadLength {
                        kind: KIND_PAGES,
                        expected: want,
                        found: data_len,
                    },
                ));
            }
            w.emit(rh, &[p.as_bytes(), runs.as_bytes()], pad, data)
        })
    }

    /// Emits a fixed part and variable parts, each zero-padded to a multiple of 8.
    fn state_record(
        &mut self,
        kind: u16,
        parts: &[&[u8]],
        check: impl FnOnce(&mut Validator, u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.step(|w| {
            let len = parts
                .iter()
                .fold(0u64, |a, p| a.saturating_add(pad8(to_u64(p.len()))));
            let rh = w.record_header(kind, 0, len)?;
            // The variable parts are checked by the caller's closure from the slices it has;
            // padding is written here, so it is zero.
            check(&mut w.v, len, &[])?;
            let mut c = record_crc_start(&rh);
            for p in parts {
                c.update(p);
                let z = pad8(to_u64(p.len())).saturating_sub(to_u64(p.len()));
                c.update(ZEROS.get(..to_usize(z)).unwrap_or(&[]));
            }
            let mut rh = rh;
            rh.crc = c.finalize().into();
            w.put(rh.as_bytes())?;
            for p in parts {
                w.put(p)?;
                let z = pad8(to_u64(p.len())).saturating_sub(to_u64(p.len()));
                w.put_zeros(z)?;
            }
            w.v.advance(&rh);
            Ok(())
        })
    }

    /// Writes a File (§15); `path_len` and `data_len` are taken from the slices.
    pub fn file(&mut self, f: &raw::File, path: &[u8], data: &[u8]) -> Result<()> {
        let at = self.v.offset;
        let mut f = *f;
        f.path_len = path_len(at, path)?.into();
        f.data_len = u32::try_from(data.len()).unwrap_or(u32::MAX).into();
        let first = f.as_bytes();
        self.state_record(KIND_FILE, &[first, path, data], |v, len, _| {
            if let Some(i) = path.iter().position(|&b| b == 0) {
                return Err(Error::new(
                    v.payload_off()
                        .saturating_add(152)
                        .saturating_add(to_u64(i)),
                    ErrorKind::BadField {
                        field: "path",
                        expected: "no NUL byte",
                        found: 0,
                    },
                ));
            }
            v.check_file(&f, len, &[])
        })
    }

    /// Writes a FileData (§16) for the File before it; `len` is taken from `bytes`.
    pub fn file_data(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let f = raw::FileData {
            offset: offset.into(),
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX).into(),
            _reserved0: 0.into(),
        };
        self.state_record(KIND_FILE_DATA, &[f.as_bytes(), bytes], |v, len, _| {
            v.check_file_data(&f, len, &[])
        })
    }

    /// Writes the Signals (§17); `pending_count` is taken from `pending`.
    pub fn signals(&mut self, s: &raw::Signals, pending: &[PendingSignal]) -> Result<()> {
        let mut s = *s;
        s.pending_count = u32::try_from(pending.len()).unwrap_or(u32::MAX).into();
        self.state_record(
            KIND_SIGNALS,
            &[s.as_bytes(), pending.as_bytes()],
            |v, len, _| {
                v.check_signals(&s, len)?;
                v.check_pending(pending)
            },
        )
    }

    /// Writes the Timers (§18); `posix_count` is taken from `posix`.
    pub fn timers(&mut self, t: &raw::Timers, posix: &[PosixTimer]) -> Result<()> {
        let mut t = *t;
        t.posix_count = u32::try_from(posix.len()).unwrap_or(u32::MAX).into();
        self.state_record(
            KIND_TIMERS,
            &[t.as_bytes(), posix.as_bytes()],
            |v, len, _| {
                v.check_timers(&t, len)?;
                v.check_posix(posix)
            },
        )
    }

    /// Writes the Process (§19); `group_count` is taken from `groups`.
    pub fn process(&mut self, p: &raw::Process, groups: &[U32]) -> Result<()> {
        let mut p = *p;
        p.group_count = u32::try_from(groups.len()).unwrap_or(u32::MAX).into();
        self.state_record(
            KIND_PROCESS,
            &[p.as_bytes(), groups.as_bytes()],
            |v, len, _| {
                v.check_process(&p, len)?;
                v.check_groups(groups, &[])
            },
        )
    }

    /// Writes a VmaAttr (§20) for the Vma just written.
    pub fn vma_attr(&mut self, a: &raw::VmaAttr) -> Result<()> {
        self.state_record(KIND_VMA_ATTR, &[a.as_bytes()], |v, _, _| {
            v.check_vma_attr(a)
        })
    }

    /// Writes a non-critical record of a kind this version does not define, between Mm and the
    /// Tail (tools carry such records through; readers skip them). `payload` must be a multiple
    /// of 8 bytes. A critical unknown record would make the image unreadable, so it is refused.
    pub fn unknown(&mut self, kind: u16, payload: &[u8]) -> Result<()> {
        self.step(|w| {
            if (KIND_HEADER..=KIND_LAST).contains(&kind) {
                return Err(Error::new(
                    w.v.offset,
                    ErrorKind::BadField {
                        field: "record kind",
                        expected: "a kind this version does not define",
                        found: kind.into(),
                    },
                ));
            }
            let rh = w.record_header(kind, 0, to_u64(payload.len()))?;
            w.emit(rh, &[payload], 0, &[])
        })
    }

    /// Writes the Tail (§9) and returns what was written.
    pub fn finish(&mut self) -> Result<Summary> {
        let mut out = None;
        self.step(|w| {
            if w.v.stage != Stage::Body {
                return Err(Error::new(
                    w.v.offset,
                    ErrorKind::OutOfOrder {
                        expected: w.v.stage.expected(),
                    },
                ));
            }
            let records = u64::from(w.v.index);
            let image_len = w.v.offset.saturating_add(REC_HDR + 24);
            let digest = w.v.digest.clone().finalize();
            let t = raw::Tail {
                record_count: records.into(),
                image_len: image_len.into(),
                digest: digest.into(),
            };
            let rh = w.record_header(KIND_TAIL, RECORD_CRITICAL, 24)?;
            w.v.check_tail(&t)?;
            w.emit(rh, &[t.as_bytes()], 0, &[])?;
            out = Some(Summary {
                records,
                image_len,
                digest,
            });
            Ok(())
        })?;
        out.ok_or(Error::new(
            self.v.offset,
            ErrorKind::OutOfOrder { expected: "Tail" },
        ))
    }
}

fn path_len(at: u64, p: &[u8]) -> Result<u16> {
    u16::try_from(p.len())
        .ok()
        .filter(|&n| u32::from(n) <= MAX_PATH)
        .ok_or(Error::new(
            at,
            ErrorKind::LimitExceeded {
                limit: "MAX_PATH",
                max: MAX_PATH.into(),
                found: to_u64(p.len()),
            },
        ))
}
