//! The streaming reader (under `std`): [`StreamReader`] runs the [`Parser`] over any
//! `io::Read`, holding at most one record in memory.

use super::parser::{Chunk, Options, Parser};
use super::view::{Parsed, RecordKind};
use crate::error::{Error, ErrorKind, Result};
use crate::validate::{to_u64, to_usize};
use std::io::{self, Read};
use std::vec::Vec;

/// Reads an image from any `io::Read` (pipe, socket, file) with a buffer that never holds
/// more than one record (at most
/// [`MAX_PAYLOAD_LEN`](crate::limits::MAX_PAYLOAD_LEN) + 16 bytes).
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
                let n =
                    i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
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
