//! [`stream_vs_slice`]: the sans-I/O parser fed in chunks and the streaming reader over a
//! reader that returns those chunks agree with the slice reader.

use super::slice::walk_slice;
use super::{to_u64, to_usize, Walk, BOTH, MAX_CHUNKS, REC_HDR};
use core::hint::black_box;
use cr_format::error::{Error, ErrorKind};
use cr_format::limits::MAX_PAYLOAD_LEN;
use cr_format::read::{Chunk, Options, Parser, StreamReader};
use std::io::{self, Read, Seek, SeekFrom};

/// The chunk size one input byte selects (module documentation of [`super`]).
pub(super) fn chunk_size(b: u8) -> usize {
    if b < 0x80 {
        usize::from(b).saturating_add(1)
    } else {
        usize::from(b & 0x7f).saturating_add(1).saturating_mul(1024)
    }
}

/// Splits a [`stream_vs_slice`] input into chunk sizes and the image.
fn split_chunks(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (Vec::from([1]), &[]);
    };
    let n = usize::from(first & 3).saturating_add(1);
    let (spec, image) = rest.split_at_checked(n).unwrap_or((rest, &[]));
    let mut chunks: Vec<usize> = spec.iter().map(|&b| chunk_size(b)).collect();
    if chunks.is_empty() {
        chunks.push(1);
    }
    (chunks, image)
}

/// The streaming readers against the slice reader; input layout in the module documentation.
pub fn stream_vs_slice(data: &[u8]) {
    let (chunks, image) = split_chunks(data);
    stream_vs_slice_with(&chunks, image);
}

/// [`stream_vs_slice`] with the chunk sizes given. Chunks are at least 1 byte and at least
/// 1/[`MAX_CHUNKS`] of the image, so that an execution costs at most a few thousand reads
/// whatever the image size (small images still get 1-byte chunks).
pub fn stream_vs_slice_with(chunks: &[usize], image: &[u8]) {
    let floor = (image.len() / MAX_CHUNKS).max(1);
    let mut c: Vec<usize> = chunks.iter().map(|&n| n.max(floor)).collect();
    if c.is_empty() {
        c.push(floor);
    }
    for opts in BOTH {
        let want = walk_slice(image, opts, false);
        let got = walk_parser(image, &c, opts);
        assert!(
            got == want,
            "Parser fed in chunks {c:?} ({opts:?}) differs from Records:\n{got:?}\n{want:?}"
        );
        check_readers(image, &c, opts, &want);
    }
}

/// Drives the sans-I/O parser as a streaming consumer would: bytes arrive in chunks, skipped
/// data areas are consumed without being shown to it.
fn walk_parser(image: &[u8], chunks: &[usize], opts: Options) -> Walk {
    let mut out = Walk::default();
    let mut p = Parser::new(opts);
    let len = to_u64(image.len());
    let (mut pos, mut have): (u64, u64) = (0, 0);
    let mut sizes = chunks.iter().cycle();
    // Each call either gets at least one more byte, or consumes a record, or ends.
    let bound = len.saturating_mul(2).saturating_add(8);
    let mut calls: u64 = 0;
    loop {
        calls = calls.saturating_add(1);
        assert!(calls <= bound, "parser makes no progress");
        assert_eq!(p.offset(), pos, "Parser::offset is not the consumed length");
        if pos > len {
            // A skipped data area ran past the end of the input.
            out.error = Some(Error::new(
                len,
                ErrorKind::Truncated {
                    needed: pos.saturating_sub(len),
                },
            ));
            break;
        }
        let eof = have >= len;
        let window = image.get(to_usize(pos)..to_usize(have)).unwrap_or(&[]);
        match p.parse(window, eof) {
            Ok(Chunk::NeedMoreData(n)) => {
                assert!(!eof, "NeedMoreData at the end of the input");
                assert!(
                    n > to_u64(window.len()),
                    "NeedMoreData({n}) with {} bytes in hand",
                    window.len()
                );
                assert!(
                    n <= REC_HDR.saturating_add(MAX_PAYLOAD_LEN.into()),
                    "parser asks for {n} bytes: more than one record"
                );
                let step = to_u64(sizes.next().copied().unwrap_or(1));
                have = have.saturating_add(step).min(len);
            }
            Ok(Chunk::Record(r)) => {
                assert_eq!(r.offset, pos);
                black_box(p.record_kind());
                out.records.push((r.offset, r.header));
                pos = pos.saturating_add(r.len());
                have = have.max(pos);
            }
            Ok(Chunk::End) => {
                assert!(eof && window.is_empty() && p.is_done());
                break;
            }
            Err(e) => {
                out.error = Some(e);
                // After a failure every call returns the same error.
                assert_eq!(
                    p.parse(window, eof).err(),
                    Some(e),
                    "parser recovered by itself"
                );
                break;
            }
        }
    }
    out
}

/// A reader that returns the chunk sizes in turn (and can seek).
struct Chunky<'a> {
    data: &'a [u8],
    pos: u64,
    chunks: &'a [usize],
    next: usize,
}

impl Read for Chunky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.chunks.get(self.next).copied().unwrap_or(1);
        self.next = self.next.saturating_add(1);
        if self.next >= self.chunks.len() {
            self.next = 0;
        }
        let rest = self.data.get(to_usize(self.pos)..).unwrap_or(&[]);
        let n = want.min(buf.len()).min(rest.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos = self.pos.saturating_add(to_u64(n));
        Ok(n)
    }
}

impl Seek for Chunky<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => to_u64(self.data.len()).checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = base.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

fn check_readers(image: &[u8], chunks: &[usize], opts: Options, want: &Walk) {
    let reader = || Chunky {
        data: image,
        pos: 0,
        chunks,
        next: 0,
    };
    let mut plain = StreamReader::new(reader(), opts);
    let got = run(&mut plain);
    assert!(
        &got == want,
        "StreamReader in chunks {chunks:?} ({opts:?}) differs from Records:\n{got:?}\n{want:?}"
    );
    assert!(plain.io_error().is_none());

    let seekable = StreamReader::new_seekable(reader(), opts);
    assert!(
        seekable.is_ok(),
        "new_seekable failed on an in-memory reader"
    );
    if let Ok(mut s) = seekable {
        let got = run(&mut s);
        assert!(
            &got == want,
            "seekable StreamReader in chunks {chunks:?} ({opts:?}) differs from Records:\n{got:?}\n{want:?}"
        );
        assert!(s.io_error().is_none());
    }

    // verify --all: resync after each error; each resync steps over a record of at least
    // 16 bytes, so this ends.
    let mut s = StreamReader::new(reader(), opts);
    let bound = (to_u64(image.len()) / REC_HDR).saturating_add(3);
    let mut errors: u64 = 0;
    loop {
        match s.for_each(|p| {
            black_box(p.offset);
        }) {
            Ok(()) => break,
            Err(e) => {
                if errors == 0 {
                    assert_eq!(Some(e), want.error, "first error differs under resync");
                }
                errors = errors.saturating_add(1);
                assert!(errors <= bound, "resync does not end");
                black_box(s.record_kind());
                if !s.resync() {
                    break;
                }
            }
        }
    }
    assert_eq!(errors == 0, want.error.is_none());
}

fn run<R: Read>(s: &mut StreamReader<R>) -> Walk {
    let mut out = Walk::default();
    let res = s.for_each(|p| out.records.push((p.offset, p.header)));
    out.error = res.err();
    out
}
