//! The writer refuses what the reader refuses, with the same error at the same offset: every
//! invalid 1.1 vector of `spec/vectors/invalid/` (made by `handmade.py` from FORMAT.md) is
//! replayed record by record through the `Writer`, which must fail at the record at fault with
//! the error in `NAME.err`. Faults the writer's API cannot express (a count that disagrees with
//! the slice it is taken from, a record flag it sets itself) are listed and skipped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::as_conversions,
    clippy::arithmetic_side_effects
)]

mod support;
use cr_format::raw::{self, *};
use cr_format::write::Writer;
use zerocopy::little_endian::U32;
use zerocopy::FromBytes;

/// Faults in fields the writer computes from its arguments (counts, lengths, record flags).
const NOT_EXPRESSIBLE: [&str; 18] = [
    "watch-path-padding",
    "vdso-reserved",
    "file-record-critical",
    "inotify-record-critical",
    "inotify-long",
    "watch-path-len-huge",
    "watch-path-len-zero",
    "watch-length",
    "vdso-len-huge",
    "vdso-short",
    "vma-attr-long",
    "signals-pending-count-huge",
    "timers-posix-count-huge",
    "process-group-count-huge",
    // The writer writes every padding byte and `pad_len` itself.
    "regs-xsave-padding",
    "mm-exe-padding",
    "pages-pad-len-huge",
    "pages-pad-nonzero",
];

/// One record cut out of an image without validation: kind and payload.
fn records(img: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = vec![];
    let mut pos = 0;
    while pos + 16 <= img.len() {
        let kind = u16::from_le_bytes([img[pos], img[pos + 1]]);
        let len = u32::from_le_bytes(img[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if pos + 16 + len > img.len() {
            break;
        }
        out.push((kind, &img[pos + 16..pos + 16 + len]));
        pos += 16 + len;
    }
    out
}

fn slice<T: FromBytes + zerocopy::Immutable + zerocopy::KnownLayout + Clone>(
    b: &[u8],
    n: usize,
) -> Vec<T> {
    <[T]>::ref_from_prefix_with_elems(b, n).unwrap().0.to_vec()
}

/// Feeds one record to the writer from its payload; the variable parts are cut as the fixed
/// part says (these images differ from a valid one in a single field).
fn put(w: &mut Writer<&mut Vec<u8>>, kind: u16, p: &[u8]) -> cr_format::Result<()> {
    match kind {
        KIND_HEADER => w.header(&raw::Header::read_from_bytes(p).unwrap()),
        KIND_TASK => w.task(&raw::Task::read_from_bytes(p).unwrap()),
        KIND_REGS => {
            let (r, rest) = raw::RegsX86_64::read_from_prefix(p).unwrap();
            w.regs(&r, &rest[..r.xsave_len.get() as usize])
        }
        KIND_MM => {
            let (m, rest) = raw::Mm::read_from_prefix(p).unwrap();
            let n = m.auxv_count.get() as usize;
            let auxv: Vec<AuxvEntry> = slice(rest, n);
            w.mm(
                &m,
                &auxv,
                &rest[16 * n..16 * n + usize::from(m.exe_len.get())],
            )
        }
        KIND_VMA => {
            let (v, rest) = raw::Vma::read_from_prefix(p).unwrap();
            w.vma(&v, &rest[..usize::from(v.path_len.get())])
        }
        KIND_PAGES => {
            let (pg, rest) = raw::Pages::read_from_prefix(p).unwrap();
            let n = pg.run_count.get() as usize;
            let runs: Vec<PageRun> = slice(rest, n);
            w.pages(&runs, &rest[16 * n + pg.pad_len.get() as usize..])
        }
        KIND_FILE => {
            let (f, rest) = raw::File::read_from_prefix(p).unwrap();
            let pl = usize::from(f.path_len.get());
            let at = pl.next_multiple_of(8);
            w.file(&f, &rest[..pl], &rest[at..at + f.data_len.get() as usize])
        }
        KIND_FILE_DATA => {
            let (d, rest) = raw::FileData::read_from_prefix(p).unwrap();
            w.file_data(d.offset.get(), &rest[..d.len.get() as usize])
        }
        KIND_SIGNALS => {
            let (s, rest) = raw::Signals::read_from_prefix(p).unwrap();
            let pending: Vec<PendingSignal> = slice(rest, s.pending_count.get() as usize);
            w.signals(&s, &pending)
        }
        KIND_TIMERS => {
            let (t, rest) = raw::Timers::read_from_prefix(p).unwrap();
            let posix: Vec<PosixTimer> = slice(rest, t.posix_count.get() as usize);
            w.timers(&t, &posix)
        }
        KIND_PROCESS => {
            let (x, rest) = raw::Process::read_from_prefix(p).unwrap();
            let groups: Vec<U32> = slice(rest, x.group_count.get() as usize);
            w.process(&x, &groups)
        }
        KIND_VMA_ATTR => w.vma_attr(&raw::VmaAttr::read_from_bytes(p).unwrap()),
        KIND_INOTIFY => w.inotify(&raw::Inotify::read_from_bytes(p).unwrap()),
        KIND_INOTIFY_WATCH => {
            let (x, rest) = raw::InotifyWatch::read_from_prefix(p).unwrap();
            w.inotify_watch(&x, &rest[..usize::from(x.path_len.get())])
        }
        KIND_LOCK => w.lock(&raw::Lock::read_from_bytes(p).unwrap()),
        KIND_VDSO_DATA => {
            let (d, rest) = raw::VdsoData::read_from_prefix(p).unwrap();
            w.vdso_data(&rest[..d.len.get() as usize])
        }
        KIND_TAIL => w.finish().map(|_| ()),
        k => panic!("kind {k} in a 1.1 or 1.2 vector"),
    }
}

#[test]
fn writer_refuses_every_invalid_1_1_and_1_2_vector_like_the_reader() {
    let dir = support::spec_dir().join("vectors/invalid");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let img = std::fs::read(&path).unwrap();
        // The 1.1 and 1.2 vectors: those with a record of a kind of 1.1 or 1.2, all records
        // complete.
        let recs = records(&img);
        let is_1_1 = recs
            .iter()
            .any(|(k, _)| (KIND_FILE..=KIND_LAST).contains(k));
        if path.extension().is_none_or(|x| x != "bin") || !is_1_1 {
            continue;
        }
        if NOT_EXPRESSIBLE.contains(&name.as_str()) {
            continue;
        }
        let want = std::fs::read_to_string(path.with_extension("err")).unwrap();
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        let err = recs
            .iter()
            .find_map(|&(kind, p)| put(&mut w, kind, p).err())
            .unwrap_or_else(|| panic!("{name}: the writer accepts it"));
        // The writer names an order fault as `OutOfOrder` with the reader's `expected`.
        let got = match err.kind {
            cr_format::ErrorKind::OutOfOrder { expected } => {
                let found = want
                    .split("record of kind ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .unwrap_or("?");
                format!(
                    "offset {:#x}: record of kind {found} not allowed here: expected {expected}\n",
                    err.offset
                )
            }
            _ => format!("{err}\n"),
        };
        assert_eq!(got, want, "{name}");
        checked += 1;
    }
    assert!(checked >= 40, "{checked} vectors checked");
}
