//! The oracles of `cr-dump`'s inspection verbs: the cargo-fuzz targets `inspect` and `encode`
//! in `fuzz/` are one-line wrappers, and `cargo test` runs the same functions over the vectors
//! and seeded mutations of them (`tests/dump_smoke.rs`). FUZZING.md has both.
//!
//! Each function returns normally on any input and panics only when a property is violated: a
//! panic is the fuzzer's signal. They go through the functions the CLI calls, on bytes in
//! memory; nothing is written to disk and no other file is read.
//!
//! - [`inspect()`] (input: an image): `show` and `show -v` ([`Shown::from_reader`]), `show --json`
//!   ([`json::read_metadata`]), `show --json --with-pages` ([`json::with_pages`]), `verify` and
//!   `verify --all` ([`inspect::verify_reader`]) and `core` ([`core::write_core_from`], into
//!   a counting sink) never panic, and each succeeds exactly when the image is valid
//!   ([`Image::parse`]; [`Image::parse_metadata`] for the verbs that skip page data). On a valid
//!   image: `show` renders as from the parsed image; the metadata JSON is the with-pages JSON
//!   without page data; the printed JSON parses back to the same document; `encode` of the
//!   with-pages JSON gives back the identical bytes, and of the metadata JSON too when the
//!   image has no data run (else it is refused); `verify` reports the image's CRID, length,
//!   digest and page counts; `core` of a full image writes what it says it wrote, an ELF core
//!   with one segment per VMA (an incremental image alone is refused: its parent is missing).
//!   Every input is checked twice: as it is, and resealed ([`reseal`]: record indexes, CRCs,
//!   data CRCs and the Tail recomputed), so that a mutation gets past the CRCs to the checks
//!   of the fields and to valid images.
//! - [`encode()`] (input: JSON text): [`json::decode`] then [`json::encode`] give an image or an
//!   error; an image they give passes [`Image::parse`], reads back as the document said, and
//!   goes through everything [`inspect()`] checks on a valid image. When the input is a JSON
//!   document, up to [`MUTANTS`] structural mutations of it (a node removed, duplicated,
//!   swapped, retyped, a number or address moved to an edge value) are checked the same way.
//!
//! `core` writes the image's whole address space, so for it the sink stops with an error after
//! [`CORE_LIMIT`] bytes, and an image is only required to succeed when it fits.

use cr_dump::inspect::{
    self, core, json,
    show::{self, Shown},
};
use cr_format::raw;
use cr_format::read::{Image, Record, RunKind};
use cr_format::repr::ImageRepr;
use serde_json::Value;
use std::io::{Cursor, Write};
use std::path::Path;

/// Bytes the `core` sink takes before it fails (an image's VMAs may span terabytes).
pub const CORE_LIMIT: u64 = 8 << 20;
/// Structural mutations [`encode()`] checks per JSON document.
pub const MUTANTS: usize = 4;
/// Largest image [`encode()`] also runs every [`inspect()`] check on.
const INSPECT_MAX: usize = 1 << 20;
/// `core` must succeed on a full image with at most this many VMAs…
const CORE_MAX_VMAS: usize = 256;
/// …and at most this many bytes of VMA contents (headers and notes fit in the rest).
const CORE_MAX_DATA: u64 = 2 << 20;

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// inspect

/// Every inspection verb on arbitrary bytes, as they are and resealed: see the module
/// documentation.
pub fn inspect(data: &[u8]) {
    inspect_image(data);
    let sealed = reseal(data);
    if sealed != data {
        inspect_image(&sealed);
    }
}

/// Every inspection verb on one image; returns whether it is valid.
pub fn inspect_image(data: &[u8]) -> bool {
    let name = Path::new("-");
    let full = Image::parse(data);
    let meta_ok = Image::parse_metadata(data).is_ok();

    // show, show -v: records streamed from a seekable reader, page data skipped.
    let shown = Shown::from_reader(Cursor::new(data), name);
    assert_eq!(
        shown.is_ok(),
        meta_ok,
        "show and Image::parse_metadata disagree: {:?}",
        shown.as_ref().err()
    );
    // show --json, the same way.
    let meta_doc = json::read_metadata(Cursor::new(data), name);
    assert_eq!(
        meta_doc.is_ok(),
        meta_ok,
        "show --json and Image::parse_metadata disagree: {:?}",
        meta_doc.as_ref().err()
    );
    // show --json --with-pages: every check, data CRCs included.
    let doc = json::with_pages(data, name);
    assert_eq!(
        doc.is_ok(),
        full.is_ok(),
        "show --json --with-pages and Image::parse disagree: {:?}",
        doc.as_ref().err()
    );

    // verify, verify --all.
    let plain = inspect::verify_reader(data, "-", false);
    let all = inspect::verify_reader(data, "-", true);
    let Ok(all) = all else {
        panic!("verify --all failed instead of listing problems: {all:?}");
    };
    assert_eq!(all.images.len(), 1);
    assert!(serde_json::to_string(&all).is_ok());
    match (&full, &plain) {
        (Ok(_), Ok(r)) => {
            assert!(all.problems.is_empty(), "verify --all: {:?}", all.problems);
            assert!(r.problems.is_empty() && r.images.len() == 1);
        }
        (Err(_), Err(e)) => {
            // --all goes on after the first problem: that one is plain verify's error.
            assert_eq!(
                all.problems.first(),
                Some(&e.to_string()),
                "verify --all does not start with verify's error"
            );
        }
        (f, p) => panic!(
            "verify and Image::parse disagree: {p:?}, {:?}",
            f.as_ref().err()
        ),
    }

    // core, into a sink that counts (and fails past CORE_LIMIT).
    let mut sink = CoreSink::default();
    let core = core::write_core_from(&[(name, data)], false, &mut sink);

    let Ok(img) = full else {
        assert!(core.is_err(), "core of an invalid image succeeded");
        return false;
    };
    let (Ok(shown), Ok(meta_doc), Ok(doc), Ok(report)) = (shown, meta_doc, doc, plain) else {
        return false; // asserted above
    };

    check_core(&img, core, &sink);
    check_show(&img, &shown);
    check_report(&img, data, &report);
    check_json(&img, data, &doc, &meta_doc);
    true
}

/// `show` streamed equals `show` of the parsed image.
fn check_show(img: &Image<'_>, shown: &Shown) {
    let again = Shown::from_image(img);
    assert!(
        show::render(shown) == show::render(&again),
        "show streamed differs from show of the parsed image"
    );
    assert!(
        show::render_records(shown) == show::render_records(&again),
        "show -v streamed differs from show -v of the parsed image"
    );
}

/// What `verify` reports is what the image holds.
fn check_report(img: &Image<'_>, data: &[u8], report: &inspect::Report) {
    let Some(r) = report.images.first() else {
        panic!("verify reports no image");
    };
    assert_eq!(r.crid, img.crid());
    assert_eq!(r.parent_crid, img.parent_crid());
    assert_eq!(r.records, img.tail().record_count.get());
    assert_eq!(r.bytes, to_u64(data.len()));
    assert_eq!(r.digest, format!("{:#018x}", img.digest()));
    let mut pages = [0u64; 3];
    for p in img.records() {
        if let Record::Pages(pg) = p.record {
            for run in pg.iter() {
                let i = match run.kind {
                    RunKind::Data => 0,
                    RunKind::Zero => 1,
                    RunKind::Parent => 2,
                };
                if let Some(n) = pages.get_mut(i) {
                    *n = n.saturating_add(run.pages.into());
                }
            }
        }
    }
    assert_eq!(r.pages, pages, "verify's page counts");
}

/// The JSON documents: metadata = with pages minus page data and file contents; printed and parsed back unchanged;
/// encoded back to the same bytes.
fn check_json(img: &Image<'_>, data: &[u8], doc: &Value, meta_doc: &Value) {
    assert!(
        *meta_doc == without_data(doc),
        "show --json differs from show --json --with-pages without page data"
    );
    let text = json::pretty(doc);
    let Ok(text) = text else {
        panic!("show --json --with-pages does not print: {text:?}");
    };
    let parsed: Result<Value, _> = serde_json::from_str(&text);
    assert!(
        parsed.as_ref().is_ok_and(|p| p == doc),
        "the printed JSON does not parse back to the document: {:?}",
        parsed.err()
    );
    let repr = json::decode(text.as_bytes());
    let Ok(repr) = repr else {
        panic!("encode refuses show --json --with-pages: {repr:?}");
    };
    assert!(
        repr == ImageRepr::parse(img),
        "encode reads show --json --with-pages as another image"
    );
    let mut out = Vec::new();
    let summary = json::encode(&repr, &mut out);
    assert!(
        summary.is_ok() && out == data,
        "encode(show --json --with-pages) is not the image: {:?}",
        summary.err()
    );

    // Without page data, encode works exactly when there is no data to miss.
    let meta_text = json::pretty(meta_doc);
    let Ok(meta_text) = meta_text else {
        panic!("show --json does not print: {meta_text:?}");
    };
    let has_data = img.records().any(|p| match p.record {
        Record::Pages(pg) => pg.iter().any(|r| r.kind == RunKind::Data),
        Record::VdsoData(_) => true,
        _ => false,
    });
    match json::decode(meta_text.as_bytes()) {
        Ok(r) => {
            assert!(!has_data, "encode took show --json without the page data");
            let mut out = Vec::new();
            assert!(
                json::encode(&r, &mut out).is_ok() && out == data,
                "encode(show --json) of an image without data is not the image"
            );
        }
        Err(e) => assert!(
            has_data,
            "encode refuses show --json of an image without data: {e}"
        ),
    }
}

/// A document with every `data` field of every Pages and VdsoData object removed, and every
/// File's `contents`.
fn without_data(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(body) = d.get_mut("body").and_then(Value::as_array_mut) {
        for b in body {
            if let Some(p) = b.get_mut("pages").and_then(Value::as_object_mut) {
                p.remove("data");
            }
            // A File's contents and the vDSO's bytes are data too: only with `--with-pages`.
            if let Some(f) = b.get_mut("file").and_then(Value::as_object_mut) {
                f.remove("contents");
            }
            if let Some(v) = b.get_mut("vdso_data").and_then(Value::as_object_mut) {
                v.remove("data");
            }
        }
    }
    d
}

/// A sink for `core`: counts bytes, keeps the ELF header, fails past [`CORE_LIMIT`].
#[derive(Default)]
struct CoreSink {
    written: u64,
    head: Vec<u8>,
}

impl Write for CoreSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written.saturating_add(to_u64(buf.len())) > CORE_LIMIT {
            return Err(std::io::Error::other("core sink full"));
        }
        let keep = 64usize.saturating_sub(self.head.len()).min(buf.len());
        self.head.extend_from_slice(buf.get(..keep).unwrap_or(&[]));
        self.written = self.written.saturating_add(to_u64(buf.len()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `core` of a valid image: a full one small enough must succeed, an incremental one alone
/// must fail; what succeeds wrote what it says, an ELF core with a segment per VMA.
fn check_core(img: &Image<'_>, core: cr_dump::Result<u64>, sink: &CoreSink) {
    let vmas: Vec<_> = img.vmas().collect();
    let dumped = vmas
        .iter()
        .filter(|v| !matches!(v.kind(), raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL))
        .fold(0u64, |a, v| a.saturating_add(v.end() - v.start()));
    if img.parent_crid() != 0 {
        assert!(
            core.is_err(),
            "core of an incremental image without its parent"
        );
        return;
    }
    if vmas.len() <= CORE_MAX_VMAS && dumped <= CORE_MAX_DATA {
        assert!(core.is_ok(), "core of a small full image failed: {core:?}");
    }
    let Ok(n) = core else { return };
    assert_eq!(n, sink.written, "core's length is not what it wrote");
    let phnum = to_u64(vmas.len()).saturating_add(1);
    assert!(n >= 64u64.saturating_add(56u64.saturating_mul(phnum)));
    let field = |at: usize| -> u16 {
        let b = sink.head.get(at..at.saturating_add(2)).unwrap_or(&[0, 0]);
        u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ])
    };
    assert_eq!(sink.head.get(..4), Some(&b"\x7fELF"[..]), "not an ELF file");
    assert_eq!(field(16), 4, "not ET_CORE");
    assert_eq!(
        u64::from(field(56)),
        phnum,
        "program headers: one note, one per VMA"
    );
}

// ---------------------------------------------------------------------------------------------
// reseal

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(s) = at.checked_add(v.len()).and_then(|end| b.get_mut(at..end)) {
        s.copy_from_slice(v);
    }
}

/// CRC-64/XZ (FORMAT.md §2.4), bit by bit: it only covers the 16-byte record headers.
fn crc64_xz(c: u64, bytes: &[u8]) -> u64 {
    let mut c = !c;
    for &b in bytes {
        c ^= u64::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xC96C_5795_D787_0F42
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// The bytes with every record's index, CRC and (Pages) data CRC recomputed, and the Tail's
/// count, length and digest; cut after the Tail. The record lengths, kinds and every other
/// field are left as they are. A valid image is its own reseal.
pub fn reseal(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut off: usize = 0;
    let mut index: u32 = 0;
    let mut digest: u64 = 0;
    while let (Some(kind), Some(len)) = (
        out.get(off..off.saturating_add(2))
            .and_then(|b| Some(u16::from_le_bytes(b.try_into().ok()?))),
        le_u32(&out, off.saturating_add(4)),
    ) {
        let Some(start) = off.checked_add(16) else {
            break;
        };
        let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
            break;
        };
        if start > out.len() {
            break; // a header cut short: nothing to seal
        }
        let end = end.min(out.len());
        put(&mut out, off.saturating_add(8), &index.to_le_bytes());
        let mut checked = end;
        if kind == raw::KIND_PAGES {
            // Checked part: fixed part, run table, pad; the data area after it has its own CRC.
            let runs = le_u32(&out, start).unwrap_or(0);
            let pad = le_u32(&out, start.saturating_add(4)).unwrap_or(0);
            let part = u64::from(runs)
                .saturating_mul(16)
                .saturating_add(16)
                .saturating_add(pad.into());
            if let Some(c) = usize::try_from(part)
                .ok()
                .and_then(|p| start.checked_add(p))
                .filter(|&c| c <= end)
            {
                let data_crc = crc32fast::hash(out.get(c..end).unwrap_or(&[]));
                put(&mut out, start.saturating_add(8), &data_crc.to_le_bytes());
                checked = c;
            }
        }
        if kind == raw::KIND_TAIL && end.saturating_sub(start) >= 24 {
            put(&mut out, start, &u64::from(index).to_le_bytes());
            put(
                &mut out,
                start.saturating_add(8),
                &to_u64(end).to_le_bytes(),
            );
            put(&mut out, start.saturating_add(16), &digest.to_le_bytes());
        }
        let mut h = crc32fast::Hasher::new();
        h.update(out.get(off..off.saturating_add(12)).unwrap_or(&[]));
        h.update(out.get(start..checked).unwrap_or(&[]));
        put(
            &mut out,
            off.saturating_add(12),
            &h.finalize().to_le_bytes(),
        );
        if kind == raw::KIND_TAIL {
            out.truncate(end);
            break;
        }
        digest = crc64_xz(digest, out.get(off..start).unwrap_or(&[]));
        off = end;
        index = index.saturating_add(1);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// encode

/// JSON text into `encode`, and structural mutations of it: see the module documentation.
pub fn encode(data: &[u8]) {
    if let Ok(repr) = json::decode(data) {
        check_encoded(&repr, true);
    }
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut rng = Rng::new(data);
    for _ in 0..MUTANTS {
        let mut d = doc.clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut d, &mut rng);
        }
        // `decode` is `serde_json` then `from_json`: the document is already parsed.
        if let Ok(repr) = json::from_json(&d) {
            check_encoded(&repr, false);
        }
    }
}

/// An image `encode` writes is valid and holds what the document said; with `thorough`, it
/// also goes through every check of [`inspect()`].
fn check_encoded(repr: &ImageRepr, thorough: bool) {
    let mut out = Vec::new();
    let Ok(summary) = json::encode(repr, &mut out) else {
        return;
    };
    assert_eq!(summary.image_len, to_u64(out.len()));
    let img = Image::parse(&out);
    let Ok(img) = img else {
        panic!("encode wrote an image the reader refuses: {:?}", img.err());
    };
    assert_eq!(img.digest(), summary.digest);
    assert!(
        ImageRepr::parse(&img) == *repr,
        "the image encode wrote reads back as another document"
    );
    if thorough && out.len() <= INSPECT_MAX {
        assert!(inspect_image(&out), "encode wrote an image inspect refuses");
    } else {
        // At least: its JSON encodes back to it.
        let back = json::pretty(&json::to_json(&img, true))
            .ok()
            .and_then(|t| json::decode(t.as_bytes()).ok());
        assert!(back.as_ref() == Some(repr), "JSON of an encoded image");
    }
}

/// xorshift64: tiny and deterministic, to pick mutations (here, seeded from the input, so the
/// same input mutates the same way; the smoke tests seed it with constants).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `data` (FNV-1a).
    pub fn new(data: &[u8]) -> Rng {
        let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Rng(h | 1)
    }
    /// Seeded with `seed` (zero, which xorshift never leaves, becomes one).
    pub fn with_seed(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % to_u64(n.max(1))).unwrap_or(0)
    }
}

fn count_nodes(v: &Value) -> usize {
    1usize.saturating_add(match v {
        Value::Array(a) => a.iter().map(count_nodes).fold(0, usize::saturating_add),
        Value::Object(o) => o.values().map(count_nodes).fold(0, usize::saturating_add),
        _ => 0,
    })
}

/// The `k`-th node in pre-order.
fn nth_node(v: &mut Value, k: usize) -> Option<&mut Value> {
    if k == 0 {
        return Some(v);
    }
    let mut k = k - 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => return None,
    };
    for c in children {
        let n = count_nodes(c);
        if k < n {
            return nth_node(c, k);
        }
        k -= n;
    }
    None
}

/// Values at the edges of what the format and the JSON reader take.
const EDGES: [u64; 16] = [
    0,
    1,
    2,
    7,
    8,
    0xfff,
    0x1000,
    0x4000,
    0x1_0000,
    0x10_0000,
    0xffff_ffff,
    0x1_0000_0000,
    (1 << 53) + 1,
    0x8000_0000_0000_0000,
    0xffff_ffff_ffff_f000,
    u64::MAX,
];

/// One structural change at a random node of the document.
fn mutate(doc: &mut Value, rng: &mut Rng) {
    let n = count_nodes(doc);
    let k = rng.below(n);
    let pick = rng.below(8);
    let edge = EDGES.get(rng.below(EDGES.len())).copied().unwrap_or(0);
    let r = rng.next_u64();
    let Some(v) = nth_node(doc, k) else { return };
    match (pick, &mut *v) {
        // A number or an integer string moved: by one, by a page, one bit, to an edge value.
        (0..=2, Value::Number(_) | Value::String(_)) => {
            let was_hex = v.as_str().is_some_and(|s| s.starts_with("0x"));
            let cur = match &*v {
                Value::Number(x) => x.as_u64(),
                Value::String(s) => match s.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16).ok(),
                    None => s.parse().ok(),
                },
                _ => None,
            };
            let new = match (pick, cur) {
                (0, Some(c)) => match r % 4 {
                    0 => c.wrapping_add(1),
                    1 => c.wrapping_sub(1),
                    2 => c.wrapping_add(0x1000),
                    _ => c ^ (1 << (r % 64)),
                },
                _ => edge,
            };
            *v = if was_hex {
                Value::String(format!("{new:#x}"))
            } else if r & 32 != 0 {
                Value::from(new)
            } else {
                // Other forms the reader takes or refuses.
                match r % 3 {
                    0 => Value::String(new.to_string()),
                    1 => Value::from(-1i64),
                    _ => Value::from(1.5f64),
                }
            };
        }
        // Strings (hex areas, paths): cut, grown, emptied.
        (3, Value::String(s)) => match r % 4 {
            0 => {
                let keep = usize::try_from(r >> 8).unwrap_or(0) % s.len().max(1);
                *s = s.chars().take(keep).collect();
            }
            1 => *s = s.repeat(2),
            2 => s.push_str("00"),
            _ => s.clear(),
        },
        // Arrays (body, runs, auxv): an element removed, duplicated, two swapped.
        (3..=5, Value::Array(a)) if !a.is_empty() => {
            let i = rng.below(a.len());
            let j = rng.below(a.len());
            match pick {
                3 => {
                    a.remove(i);
                }
                4 => {
                    if let Some(e) = a.get(i).cloned() {
                        a.insert(j, e);
                    }
                }
                _ => a.swap(i, j),
            }
        }
        // Objects: a key removed.
        (4..=6, Value::Object(o)) if !o.is_empty() => {
            let i = rng.below(o.len());
            if let Some(key) = o.keys().nth(i).cloned() {
                o.remove(&key);
            }
        }
        // Anything: another type.
        _ => {
            *v = match r % 5 {
                0 => Value::Null,
                1 => Value::Bool(true),
                2 => Value::Array(Vec::new()),
                3 => serde_json::json!({ "hex": "00" }),
                _ => Value::String(String::new()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc64_xz_check_value() {
        assert_eq!(super::crc64_xz(0, b"123456789"), 0x995D_C9BB_DF19_39FA);
        // Incremental, as the digest is computed record by record.
        let a = super::crc64_xz(0, b"1234");
        assert_eq!(super::crc64_xz(a, b"56789"), 0x995D_C9BB_DF19_39FA);
    }
}
