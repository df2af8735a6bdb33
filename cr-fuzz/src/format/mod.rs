//! Fuzz logic as plain functions (under the `arbitrary` feature): the cargo-fuzz targets in
//! `fuzz/` are thin wrappers, and `cargo test` runs the same functions with a seeded generator
//! (`tests/fuzz_smoke.rs`).
//!
//! Each function returns normally on any input and panics only when a property of the format
//! crate is violated: a panic is the fuzzer's signal. The properties:
//!
//! - [`parse`]: both slice walks (with and without page data) agree with each other and with
//!   [`Image::parse`] / [`Image::parse_metadata`]; every view accessor of every record holds
//!   what its header promises; [`Image::lookup`] agrees with a lookup written here from the
//!   record walk; a valid image re-emits byte for byte through [`ImageRepr`].
//! - [`stream_vs_slice`]: the sans-I/O [`Parser`] fed in chunks, and the
//!   [`StreamReader`](crate::read::StreamReader) over a reader (and a seekable reader) that
//!   returns those chunks, yield the records and the error of the slice reader;
//!   `StreamReader::resync` always ends.
//! - [`roundtrip`]: an arbitrary [`ImageRepr`] writes, reads back equal and re-emits identical;
//!   a flipped bit or a truncation of it is rejected.
//! - [`chain`]: sets of images with right, wrong, missing and too many links, in arbitrary
//!   orders: [`Chain::new`] accepts exactly the chains whose links hold, and on those
//!   [`Chain::resolve`] and [`ChainIndex::resolve`] agree.
//!
//! Input layout of [`stream_vs_slice`]: byte 0 selects how many chunk-size bytes follow
//! (`(byte0 & 3) + 1`); each of those gives a chunk size (`b + 1` for `b < 0x80`, else
//! `((b & 0x7f) + 1) KiB`, raised to `image.len() / MAX_CHUNKS`), used in turn; the rest is
//! the image.

// The asserts are the point of this module: a failed property must panic.
#![allow(clippy::panic)]

use crate::chain::{Chain, ChainIndex, Resolved};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::{MAX_CHAIN_DEPTH, MAX_DATA_PER_RECORD, MAX_PAYLOAD_LEN};
use crate::raw::{self, RecordHeader, DIFF_CONTENT_COMPARE, DIFF_NONE, DIFF_WRITE_TRACKING};
use crate::read::{Chunk, Image, Lookup, Options, Parsed, Parser, Record, Records, RunKind};
use crate::repr::{BodyRepr, ImageRepr};
use alloc::vec::Vec;
use arbitrary::{Arbitrary, Unstructured};
use core::hint::black_box;

const REC_HDR: u64 = 16;
const BOTH: [Options; 2] = [
    Options { verify_data: true },
    Options { verify_data: false },
];
/// Most addresses looked up per image (each lookup walks the records).
const MAX_LOOKUPS: usize = 48;
/// Largest generated image [`roundtrip`] also runs [`parse`] and the streaming checks on.
const THOROUGH_MAX: usize = 256 * 1024;
/// The streaming checks split an image into at most about this many chunks.
pub const MAX_CHUNKS: usize = 2048;

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What a reader yielded: each record's offset and header, then the error that ended it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Walk {
    records: Vec<(u64, RecordHeader)>,
    error: Option<Error>,
}

// ---------------------------------------------------------------------------------------------
// parse

/// The slice reader on arbitrary bytes: see the module documentation.
pub fn parse(data: &[u8]) {
    let full = walk_slice(data, Options { verify_data: true }, true);
    let meta = walk_slice(data, Options { verify_data: false }, true);
    check_metadata_walk(&full, &meta);

    let img = Image::parse(data);
    assert_eq!(
        img.err(),
        full.error,
        "Image::parse and the record walk disagree"
    );
    let img_meta = Image::parse_metadata(data);
    assert_eq!(
        img_meta.err(),
        meta.error,
        "Image::parse_metadata and the record walk disagree"
    );
    if let Ok(img) = img {
        check_image(&img, data, &full);
        let repr = ImageRepr::parse(&img);
        let again = repr.to_vec();
        assert!(
            again.as_deref() == Ok(data),
            "ImageRepr::parse(image).to_vec() is not the image: {:?}",
            again.err()
        );
        check_single_chain(&img);
    }
    if let Ok(img) = img_meta {
        check_image(&img, data, &meta);
    }
}

/// Walks `data` with [`Records`], touching every view; checks that records are contiguous
/// and numbered and that the walk stops after an error.
fn walk_slice(data: &[u8], opts: Options, touch_views: bool) -> Walk {
    let mut out = Walk::default();
    let mut it = Records::new(data, opts);
    let mut next_offset: u64 = 0;
    let mut page_size: u32 = 0;
    // Each record has at least its 16-byte header; one more step for the error.
    let bound = (to_u64(data.len()) / REC_HDR).saturating_add(2);
    let mut steps: u64 = 0;
    for r in it.by_ref() {
        steps = steps.saturating_add(1);
        assert!(steps <= bound, "more records than 16-byte headers fit");
        match r {
            Ok(p) => {
                assert_eq!(p.offset, next_offset, "records are not contiguous");
                assert_eq!(
                    u64::from(p.header.index.get()),
                    to_u64(out.records.len()),
                    "record index is not its position"
                );
                if let Record::Header(h) = p.record {
                    page_size = h.page_size.get();
                }
                if touch_views {
                    touch(&p, opts.verify_data, page_size);
                }
                next_offset = next_offset.saturating_add(p.len());
                out.records.push((p.offset, p.header));
            }
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    assert!(it.next().is_none(), "Records goes on after its end");
    out
}

/// Every accessor of a validated record's view: each holds what the header promised.
fn touch(p: &Parsed<'_>, with_data: bool, page_size: u32) {
    assert!(p.len() >= REC_HDR && !p.is_empty());
    assert_eq!(p.len(), REC_HDR.saturating_add(p.header.len.get().into()));
    assert_eq!(
        p.header.len.get() % 8,
        0,
        "payload length not a multiple of 8"
    );
    black_box(p.kind());
    match p.record {
        Record::Header(h) => {
            assert_eq!(p.kind(), crate::read::RecordKind::Header);
            assert_eq!(h.magic, raw::MAGIC);
            assert!(h.crid.get() > h.parent_crid.get());
            black_box(h);
        }
        Record::Task(t) => {
            assert!(t.pid.get() != 0);
            black_box(t);
        }
        Record::Regs(r) => {
            for i in 0..=raw::X86_64_GPR_COUNT {
                black_box(r.gpr(i));
            }
            assert_eq!(r.gpr(raw::X86_64_GPR_COUNT), 0);
            assert_eq!(to_u64(r.xsave.len()), u64::from(r.raw.xsave_len.get()));
            black_box(r.raw.fxsave.first());
        }
        Record::Mm(m) => {
            assert_eq!(to_u64(m.auxv.len()), u64::from(m.raw.auxv_count.get()));
            assert_eq!(to_u64(m.exe.len()), u64::from(m.raw.exe_len.get()));
            assert!(!m.exe.contains(&0), "NUL in the exe path");
            for e in m.auxv {
                black_box((e.key.get(), e.value.get()));
            }
        }
        Record::Vma(v) => {
            assert!(v.start() < v.end(), "empty VMA");
            assert_eq!(to_u64(v.path.len()), u64::from(v.raw.path_len.get()));
            assert!(!v.path.contains(&0), "NUL in a VMA path");
            assert_eq!(v.kind() == raw::VMA_FILE, !v.path.is_empty());
            black_box(v.kind());
        }
        Record::Pages(pg) => {
            assert_eq!(pg.page_size, page_size);
            assert_eq!(to_u64(pg.runs.len()), u64::from(pg.raw.run_count.get()));
            let ps = u64::from(pg.page_size);
            let mut floor: u64 = 0;
            let mut data_len: u64 = 0;
            let mut n: usize = 0;
            for run in pg.iter() {
                n = n.saturating_add(1);
                let end = run.end(pg.page_size);
                assert!(run.addr >= floor, "runs overlap or go down");
                assert!(end > run.addr, "empty or wrapping run");
                assert_eq!(run.addr & ps.saturating_sub(1), 0, "run not page-aligned");
                floor = end;
                let bytes = u64::from(run.pages).saturating_mul(ps);
                if run.kind == RunKind::Data {
                    data_len = data_len.saturating_add(bytes);
                    match (with_data, run.data) {
                        (true, Some(d)) => {
                            assert_eq!(to_u64(d.len()), bytes, "data run's slice length");
                            black_box((d.first(), d.last()));
                        }
                        (false, None) => {}
                        (w, d) => panic!("data run: read with data {w}, data {:?}", d.is_some()),
                    }
                } else {
                    assert!(run.data.is_none(), "non-data run with data");
                }
            }
            assert_eq!(n, pg.runs.len());
            assert_eq!(pg.data_len(), data_len);
            match pg.data {
                Some(d) => {
                    assert!(with_data);
                    assert_eq!(to_u64(d.len()), data_len);
                }
                None => assert!(!with_data),
            }
            if data_len > 0 {
                assert_eq!(
                    pg.data_offset & ps.saturating_sub(1),
                    0,
                    "page data not page-aligned"
                );
            }
            assert_eq!(
                pg.data_offset.saturating_add(data_len),
                p.offset.saturating_add(p.len()),
                "data area does not end the record"
            );
        }
        Record::Unknown(u) => {
            assert!(!(raw::KIND_HEADER..=raw::KIND_TAIL).contains(&u.kind));
            assert_eq!(u.kind, p.header.kind.get());
            assert_eq!(to_u64(u.payload.len()), u64::from(p.header.len.get()));
        }
        Record::Tail(t) => {
            assert_eq!(
                t.image_len.get(),
                p.offset.saturating_add(p.len()),
                "tail image_len"
            );
            assert_eq!(
                t.record_count.get(),
                u64::from(p.header.index.get()),
                "tail record_count"
            );
        }
    }
}

/// Without page data the walk sees the same records and errors, except where only the data
/// is at fault.
fn check_metadata_walk(full: &Walk, meta: &Walk) {
    let Some(e) = full.error else {
        assert_eq!(meta, full, "metadata walk differs on a valid image");
        return;
    };
    let prefix = meta.records.get(..full.records.len());
    match e.kind {
        ErrorKind::BadDataCrc { .. } => {
            assert!(
                prefix == Some(full.records.as_slice()),
                "metadata walk does not start with the full walk's records"
            );
            let next = meta.records.get(full.records.len());
            assert!(
                next.is_some_and(|(_, h)| h.kind.get() == raw::KIND_PAGES),
                "the Pages record with bad data is not accepted without its data"
            );
        }
        ErrorKind::Truncated { .. } => {
            assert!(
                prefix == Some(full.records.as_slice()),
                "metadata walk does not start with the full walk's records"
            );
            let extra = meta.records.len().saturating_sub(full.records.len());
            assert!(extra <= 1, "metadata walk got past a truncation");
            if extra == 1 {
                // The truncated record was a Pages record whose data was cut short.
                let last = meta.records.last();
                assert!(last.is_some_and(|(_, h)| h.kind.get() == raw::KIND_PAGES));
                assert_eq!(meta.error, full.error, "truncation reported differently");
            } else {
                // Cut inside the data area: the metadata checks of that Pages record may fail
                // first; anything else must fail the same way.
                assert!(
                    meta.error.is_some(),
                    "truncated image accepted without data"
                );
            }
        }
        _ => assert_eq!(meta, full, "metadata walk differs on a non-data error"),
    }
}

/// Accessors of a parsed image, its re-walk, and lookups against a reference.
fn check_image(img: &Image<'_>, data: &[u8], walk: &Walk) {
    assert!(core::ptr::eq(img.bytes(), data));
    assert_eq!(img.crid(), img.header().crid.get());
    assert!(img.crid() >= 1);
    assert!(img.parent_crid() < img.crid());
    assert_eq!(img.digest(), img.tail().digest.get());
    assert_eq!(img.tail().image_len.get(), to_u64(data.len()));
    let ps = img.page_size();
    assert!(ps.is_power_of_two() && (4096..=65536).contains(&ps));

    // The trusted re-walk yields the same records, with all views intact (and page data:
    // present in the slice even when the image was parsed without checking it).
    let mut again = Vec::new();
    for p in img.records() {
        touch(&p, true, ps);
        again.push((p.offset, p.header));
    }
    assert!(
        again == walk.records,
        "Image::records differs from the walk"
    );
    assert!(img.task().is_some() && img.regs().is_some() && img.mm().is_some());

    // Reference tables for lookups.
    let mut vmas: Vec<(u64, u64)> = Vec::new();
    let mut runs: Vec<(u64, u64, RunKind, Option<&[u8]>)> = Vec::new();
    for v in img.vmas() {
        vmas.push((v.start(), v.end()));
    }
    for p in img.records() {
        if let Record::Pages(pg) = p.record {
            runs.extend(pg.iter().map(|r| (r.addr, r.end(ps), r.kind, r.data)));
        }
    }
    assert_eq!(
        vmas.len(),
        walk.records
            .iter()
            .filter(|(_, h)| h.kind.get() == raw::KIND_VMA)
            .count()
    );
    let ps64 = u64::from(ps);
    let mut addrs: Vec<u64> = Vec::from([0, u64::MAX, ps64, 0x40_0000]);
    for &(s, e) in &vmas {
        addrs.extend([s, s.wrapping_sub(1), e.wrapping_sub(1), e]);
    }
    for &(a, e, _, _) in &runs {
        addrs.extend([a, a.saturating_add(ps64 / 2), e.wrapping_sub(1), e]);
    }
    for &a in addrs.iter().take(MAX_LOOKUPS) {
        let page = a & !ps64.saturating_sub(1);
        let run = runs.iter().find(|r| r.0 <= page && page < r.1);
        let vma = vmas.iter().find(|v| v.0 <= page && page < v.1);
        match (img.lookup(a), run, vma) {
            (Lookup::Data(d), Some(&(start, _, RunKind::Data, Some(all))), Some(_)) => {
                let off = to_usize(page.saturating_sub(start));
                let want = all.get(off..off.saturating_add(to_usize(ps64)));
                assert!(Some(d) == want, "lookup({a:#x}) gives the wrong page");
            }
            (Lookup::Zero, Some(&(_, _, RunKind::Zero, _)), Some(_)) => {}
            (Lookup::Parent, Some(&(_, _, RunKind::Parent, _)), Some(_)) => {}
            (Lookup::NotPresent(v), None, Some(&(s, e))) => {
                assert_eq!((v.start(), v.end()), (s, e), "lookup({a:#x}): wrong VMA");
            }
            (Lookup::NotMapped, None, None) => {}
            (l, r, v) => panic!("lookup({a:#x}) = {l:?}; run {r:?}, vma {v:?}"),
        }
    }
}

/// A full image alone is a chain; an incremental one is missing its parent.
fn check_single_chain(img: &Image<'_>) {
    let imgs = [*img];
    match Chain::new(&imgs) {
        Ok(c) => {
            assert_eq!(img.parent_crid(), 0);
            let ps = u64::from(img.page_size());
            let mut addrs = Vec::from([0u64, u64::MAX]);
            for v in img.vmas().take(8) {
                addrs.extend([v.start(), v.end().wrapping_sub(1), v.end()]);
                addrs.push(v.start().saturating_add(ps));
            }
            check_resolve(&c, &addrs);
        }
        Err(e) => {
            assert!(img.parent_crid() != 0, "a full image alone is refused: {e}");
            assert_eq!(
                e.kind,
                ErrorKind::MissingParent {
                    crid: img.parent_crid()
                }
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// stream_vs_slice

fn chunk_size(b: u8) -> usize {
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
        #[cfg(feature = "std")]
        stream::check(image, &c, opts, &want);
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

#[cfg(feature = "std")]
mod stream {
    use super::*;
    use crate::read::StreamReader;
    use std::io::{self, Read, Seek, SeekFrom};

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

    pub(super) fn check(image: &[u8], chunks: &[usize], opts: Options, want: &Walk) {
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
}

// ---------------------------------------------------------------------------------------------
// roundtrip

/// Arbitrary image → writer → reader → equal → identical re-emit; then damage it.
pub fn roundtrip(u: &mut Unstructured<'_>) {
    let Ok(repr) = ImageRepr::arbitrary(u) else {
        return;
    };
    let mut bytes = Vec::new();
    let summary = repr.emit(&mut bytes);
    assert!(
        summary.is_ok(),
        "the writer refused a generated image: {:?}",
        summary.err()
    );
    let Ok(summary) = summary else { return };
    assert_eq!(summary.image_len, to_u64(bytes.len()));
    let img = Image::parse(&bytes);
    assert!(
        img.is_ok(),
        "the reader refused the writer's image: {:?}",
        img.err()
    );
    let Ok(img) = img else { return };
    assert_eq!(img.digest(), summary.digest);
    assert_eq!(img.tail().record_count.get(), summary.records);
    let back = ImageRepr::parse(&img);
    assert!(back == repr, "read back differs:\n{back:?}\n{repr:?}");
    let again = back.to_vec();
    assert!(
        again.as_deref() == Ok(bytes.as_slice()),
        "re-emitted image differs"
    );
    assert!(Image::parse_metadata(&bytes).is_ok_and(|m| m.digest() == summary.digest));

    // Everything `parse` checks, and the streaming readers in arbitrary chunks: a score of
    // passes over the image, so only for images up to THOROUGH_MAX (9 in 10 generated ones;
    // the rest would dominate the fuzzer's time).
    let thorough = bytes.len() <= THOROUGH_MAX;
    if thorough {
        parse(&bytes);
        let n = u.int_in_range(1..=4usize).unwrap_or(1);
        let chunks: Vec<usize> = (0..n)
            .map(|_| chunk_size(u.arbitrary().unwrap_or(0)))
            .collect();
        stream_vs_slice_with(&chunks, &bytes);
    }

    // One flipped bit, anywhere, is caught (CRC-32 catches every burst of up to 32 bits; a
    // flip in a length field changes what is checked and fails a length check or the CRC).
    let len = bytes.len();
    if len > 0 {
        let at = u.choose_index(len).unwrap_or(0);
        let bit = u.int_in_range(0..=7u8).unwrap_or(0);
        let mut damaged = bytes.clone();
        if let Some(b) = damaged.get_mut(at) {
            *b ^= 1u8.checked_shl(bit.into()).unwrap_or(1);
        }
        assert!(
            Image::parse(&damaged).is_err(),
            "flip of bit {bit} at {at:#x} accepted"
        );
        if thorough {
            parse(&damaged);
        }
        // A truncation is caught.
        let cut = u.choose_index(len).unwrap_or(0);
        let short = bytes.get(..cut).unwrap_or(&[]);
        let e = Image::parse(short);
        assert!(e.is_err(), "truncation to {cut} bytes accepted");
        assert!(Image::parse_metadata(short).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// chain

/// How image `i` names its parent (image `i - 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Right CRID and digest (image 0: a full image).
    Right,
    /// An arbitrary parent CRID (image 0: incremental, its parent missing).
    WrongCrid,
    /// The right CRID, an arbitrary digest.
    WrongDigest,
    /// A full image where a child was expected.
    Full,
    /// As generated.
    AsIs,
}

/// Sets of images resolved as a chain: see the module documentation.
pub fn chain(u: &mut Unstructured<'_>) {
    let n = u.int_in_range(1..=6usize).unwrap_or(1);
    let mut reprs = Vec::new();
    for _ in 0..n {
        match ImageRepr::arbitrary(u) {
            Ok(r) => reprs.push(r),
            Err(_) => break,
        }
    }
    if reprs.is_empty() {
        return;
    }
    // Usually one page size for all (a chain requires it), sometimes as generated. The page
    // size of one of the images, chosen by the input: scaling down is cheap, and scaling all
    // up to the largest made 16x the page data (most of this target's time) for nothing the
    // chain checks need.
    let same_page_size = u.ratio(7u8, 8).unwrap_or(true);
    if same_page_size {
        let sizes: Vec<u32> = reprs.iter().map(|r| r.header.page_size).collect();
        let ps = u.choose(&sizes).copied().unwrap_or(4096);
        for r in &mut reprs {
            if !scale_page_size(r, ps) {
                return;
            }
        }
    }

    // Emit oldest first, each child naming its parent's CRID and digest.
    let mut built: Vec<Vec<u8>> = Vec::new();
    let mut intended = same_page_size;
    let mut prev: Option<(u64, u64)> = None; // (crid, digest) of image i - 1
    let mut crid: u64 = u.int_in_range(1..=1000u64).unwrap_or(1);
    for r in &mut reprs {
        let link = match u.int_in_range(0..=11u8).unwrap_or(0) {
            0..=6 => Link::Right,
            7 => Link::WrongCrid,
            8 => Link::WrongDigest,
            9 => Link::Full,
            _ => Link::AsIs,
        };
        if link != Link::Right {
            intended = false;
        }
        match (link, prev) {
            (Link::Right, None) | (Link::Full, _) => {
                r.header.crid = crid;
                make_full(r);
            }
            (Link::Right | Link::WrongDigest, Some((pc, pd))) => {
                let Some(c) = pc.checked_add(u.int_in_range(1..=1000u64).unwrap_or(1)) else {
                    return;
                };
                crid = c;
                r.header.crid = crid;
                let digest = if link == Link::Right {
                    pd
                } else {
                    u.arbitrary().unwrap_or(!pd)
                };
                make_incremental(r, pc, digest);
            }
            (Link::WrongCrid | Link::WrongDigest, _) => {
                r.header.crid = crid.max(2);
                let pc = u
                    .int_in_range(1..=r.header.crid.saturating_sub(1))
                    .unwrap_or(1);
                make_incremental(r, pc, u.arbitrary().unwrap_or(0));
            }
            (Link::AsIs, _) => {}
        }
        fit_data_limit(r);
        let mut bytes = Vec::new();
        let summary = r.emit(&mut bytes);
        assert!(
            summary.is_ok(),
            "the writer refused a chain image: {:?}",
            summary.err()
        );
        let Ok(summary) = summary else { return };
        prev = Some((r.header.crid, summary.digest));
        crid = r.header.crid.saturating_add(1);
        built.push(bytes);
    }
    let mut imgs: Vec<Image<'_>> = Vec::new();
    for b in &built {
        let img = Image::parse(b);
        assert!(
            img.is_ok(),
            "the reader refused a chain image: {:?}",
            img.err()
        );
        if let Ok(i) = img {
            imgs.push(i);
        }
    }
    // Newest first.
    let newest_first: Vec<Image<'_>> = imgs.iter().rev().copied().collect();
    let count = newest_first.len();

    // Addresses to resolve: arbitrary ones, and the edges of the newest image's VMAs.
    let mut addrs: Vec<u64> = Vec::new();
    for _ in 0..u.int_in_range(0..=8u8).unwrap_or(0) {
        addrs.push(u.arbitrary().unwrap_or(0));
    }
    if let Some(top) = newest_first.first() {
        let ps = u64::from(top.page_size());
        for v in top.vmas().take(6) {
            addrs.extend([
                v.start(),
                v.start().saturating_add(ps),
                v.end().wrapping_sub(1),
            ]);
        }
    }

    // The chain as built, then other orders.
    check_chain(&newest_first, &addrs, intended);
    for _ in 0..u.int_in_range(0..=3u8).unwrap_or(0) {
        let order: Vec<Image<'_>> = match u.int_in_range(0..=4u8).unwrap_or(0) {
            // A permutation.
            0 => {
                let mut v = newest_first.clone();
                for i in (1..v.len()).rev() {
                    let j = u.int_in_range(0..=i).unwrap_or(i);
                    v.swap(i, j);
                }
                v
            }
            // Any sequence of the images, repeats allowed, up to 70 long.
            1 => {
                let len = u.int_in_range(0..=70usize).unwrap_or(0);
                let mut v = Vec::new();
                for _ in 0..len {
                    let i = u.choose_index(count).unwrap_or(0);
                    if let Some(img) = newest_first.get(i) {
                        v.push(*img);
                    }
                }
                v
            }
            // The chain repeated up to 70 images.
            2 => newest_first
                .iter()
                .cycle()
                .take(u.int_in_range(count..=70usize).unwrap_or(count))
                .copied()
                .collect(),
            // The chain without its newest images (still a chain), or without its oldest.
            3 => {
                let k = u.int_in_range(0..=count).unwrap_or(0);
                if u.arbitrary().unwrap_or(false) {
                    newest_first.get(k..).unwrap_or(&[]).to_vec()
                } else {
                    newest_first.get(..k).unwrap_or(&[]).to_vec()
                }
            }
            // One image twice in a row: a cycle of length one.
            _ => {
                let i = u.choose_index(count).unwrap_or(0);
                let mut v = newest_first.clone();
                if let Some(img) = newest_first.get(i) {
                    v.insert(i, *img);
                }
                v
            }
        };
        check_chain(&order, &addrs, false);
    }
}

/// The links of a candidate chain, checked here without the library.
fn links_hold(images: &[Image<'_>]) -> bool {
    let Some(last) = images.last() else {
        return false;
    };
    to_u64(images.len()) <= u64::from(MAX_CHAIN_DEPTH)
        && last.parent_crid() == 0
        && images.windows(2).all(|w| match w {
            [child, parent] => {
                parent.crid() == child.parent_crid()
                    && parent.digest() == child.header().parent_digest.get()
                    && parent.page_size() == child.page_size()
            }
            _ => false,
        })
}

/// `Chain::new` accepts exactly the chains whose links hold; on those, resolution agrees
/// with the index.
fn check_chain(images: &[Image<'_>], addrs: &[u64], must_hold: bool) {
    let model = links_hold(images);
    if must_hold {
        assert!(model, "the chain built right does not hold");
    }
    match Chain::new(images) {
        Ok(c) => {
            assert!(model, "Chain::new accepted a broken chain");
            assert_eq!(c.images().len(), images.len());
            // The invariants, spelled out.
            let mut it = c.images().iter().peekable();
            while let Some(child) = it.next() {
                match it.peek() {
                    Some(parent) => {
                        assert_eq!(parent.crid(), child.parent_crid());
                        assert_eq!(parent.digest(), child.header().parent_digest.get());
                    }
                    None => assert_eq!(child.parent_crid(), 0, "the last image is not full"),
                }
            }
            check_resolve(&c, addrs);
        }
        Err(e) => {
            assert!(!model, "Chain::new refused a good chain: {e}");
            assert!(
                matches!(
                    e.kind,
                    ErrorKind::LimitExceeded { .. }
                        | ErrorKind::MissingParent { .. }
                        | ErrorKind::ExtraImage { .. }
                        | ErrorKind::WrongParent { .. }
                        | ErrorKind::ParentDigestMismatch { .. }
                        | ErrorKind::BadField {
                            field: "page_size",
                            ..
                        }
                ),
                "unexpected chain error {e}"
            );
        }
    }
}

fn check_resolve(c: &Chain<'_, '_>, addrs: &[u64]) {
    let index = ChainIndex::new(c);
    assert_eq!(index.depth(), c.images().len());
    // A dangling parent reference is an error, not a panic.
    let _refs = black_box(index.check_parent_refs());
    let ps = c.images().first().map_or(0, |i| i.page_size());
    let crids: Vec<u64> = c.images().iter().map(|i| i.crid()).collect();
    for &a in addrs.iter().take(MAX_LOOKUPS) {
        let walk = c.resolve(a);
        let idx = index.resolve(a);
        assert!(
            same_resolution(&walk, &idx),
            "resolve({a:#x}): Chain {walk:?}, ChainIndex {idx:?}"
        );
        match walk {
            Ok(Resolved::Data { crid, bytes }) => {
                assert!(crids.contains(&crid));
                assert_eq!(to_u64(bytes.len()), u64::from(ps), "resolved page size");
            }
            Ok(Resolved::Zero { crid }) => assert!(crids.contains(&crid)),
            Ok(Resolved::NotPresent { crid, vma }) => {
                assert!(crids.contains(&crid));
                let page = a & !u64::from(ps).saturating_sub(1);
                assert!(vma.start() <= page && page < vma.end());
            }
            Err(e) => assert_eq!(e.kind, ErrorKind::NotMapped { addr: a }),
        }
    }
}

fn same_resolution(a: &Result<Resolved<'_>>, b: &Result<Resolved<'_>>) -> bool {
    match (a, b) {
        (
            Ok(Resolved::Data { crid, bytes }),
            Ok(Resolved::Data {
                crid: c2,
                bytes: b2,
            }),
        ) => crid == c2 && bytes == b2,
        (Ok(Resolved::Zero { crid }), Ok(Resolved::Zero { crid: c2 })) => crid == c2,
        (
            Ok(Resolved::NotPresent { crid, vma }),
            Ok(Resolved::NotPresent { crid: c2, vma: v2 }),
        ) => crid == c2 && vma.start() == v2.start() && vma.end() == v2.end(),
        (Err(e), Err(e2)) => e == e2,
        _ => false,
    }
}

fn make_full(r: &mut ImageRepr) {
    r.header.parent_crid = 0;
    r.header.parent_digest = 0;
    r.header.diff_method = DIFF_NONE;
    for b in &mut r.body {
        if let BodyRepr::Pages(p) = b {
            for run in &mut p.runs {
                if run.kind == RunKind::Parent {
                    run.kind = RunKind::Zero;
                }
            }
        }
    }
}

fn make_incremental(r: &mut ImageRepr, parent_crid: u64, parent_digest: u64) {
    r.header.parent_crid = parent_crid;
    r.header.parent_digest = parent_digest;
    if !matches!(
        r.header.diff_method,
        DIFF_WRITE_TRACKING | DIFF_CONTENT_COMPARE
    ) {
        r.header.diff_method = DIFF_WRITE_TRACKING;
    }
}

/// Rescales an image to page size `ps`. To a smaller one: addresses and data unchanged (they
/// stay aligned), each run's page count multiplied. To a larger one: addresses multiplied, each
/// data page repeated. False if it cannot (a count or an address would overflow).
fn scale_page_size(r: &mut ImageRepr, ps: u32) -> bool {
    let old = r.header.page_size;
    if old == ps {
        return true;
    }
    if old > ps {
        let Some(k) = old.checked_div(ps).filter(|&k| k > 1) else {
            return false;
        };
        for b in &mut r.body {
            if let BodyRepr::Pages(p) = b {
                for run in &mut p.runs {
                    let Some(n) = run.pages.checked_mul(k) else {
                        return false;
                    };
                    run.pages = n;
                }
            }
        }
        r.header.page_size = ps;
        return true;
    }
    let Some(k) = ps.checked_div(old).map(u64::from).filter(|&k| k > 1) else {
        return false;
    };
    let scale = |x: &mut u64| -> bool {
        match x.checked_mul(k) {
            Some(y) => {
                *x = y;
                true
            }
            None => false,
        }
    };
    let factor = to_usize(k);
    for b in &mut r.body {
        match b {
            BodyRepr::Vma(v) => {
                if !(scale(&mut v.start) && scale(&mut v.end) && scale(&mut v.offset)) {
                    return false;
                }
            }
            BodyRepr::Pages(p) => {
                for run in &mut p.runs {
                    if !scale(&mut run.addr) {
                        return false;
                    }
                }
                // Each old page becomes `k` copies of itself.
                let mut data = Vec::with_capacity(p.data.len().saturating_mul(factor));
                for page in p.data.chunks(to_usize(old.into())) {
                    for _ in 0..factor {
                        data.extend_from_slice(page);
                    }
                }
                p.data = data;
            }
            BodyRepr::Unknown { .. } => {}
        }
    }
    r.header.page_size = ps;
    true
}

/// Turns data runs into zero runs where a Pages record would hold more than
/// `MAX_DATA_PER_RECORD` (after [`scale_page_size`] has made each data page larger).
fn fit_data_limit(r: &mut ImageRepr) {
    let ps = u64::from(r.header.page_size);
    let max = u64::from(MAX_DATA_PER_RECORD);
    for b in &mut r.body {
        let BodyRepr::Pages(p) = b else { continue };
        let mut kept: u64 = 0;
        let mut data = Vec::new();
        let mut src = p.data.as_slice();
        for run in &mut p.runs {
            if run.kind != RunKind::Data {
                continue;
            }
            let bytes = u64::from(run.pages).saturating_mul(ps);
            let (here, rest) = src.split_at_checked(to_usize(bytes)).unwrap_or((src, &[]));
            src = rest;
            if kept.saturating_add(bytes) <= max {
                kept = kept.saturating_add(bytes);
                data.extend_from_slice(here);
            } else {
                run.kind = RunKind::Zero;
            }
        }
        p.data = data;
    }
}
