//! [`parse`]: the slice reader on arbitrary bytes.

use super::chain::check_resolve;
use super::state::{check_state_order, touch_state};
use super::{to_u64, to_usize, Walk, MAX_LOOKUPS, REC_HDR};
use core::hint::black_box;
use cr_format::chain::Chain;
use cr_format::error::ErrorKind;
use cr_format::raw;
use cr_format::read::{Image, Lookup, Options, Parsed, Record, RecordKind, Records, RunKind};
use cr_format::repr::ImageRepr;

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
pub(super) fn walk_slice(data: &[u8], opts: Options, touch_views: bool) -> Walk {
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
            assert_eq!(p.kind(), RecordKind::Header);
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
            assert!(!(raw::KIND_HEADER..=raw::KIND_LAST).contains(&u.kind));
            assert_eq!(u.kind, p.header.kind.get());
            assert_eq!(to_u64(u.payload.len()), u64::from(p.header.len.get()));
        }
        Record::File(_)
        | Record::FileData(_)
        | Record::Signals(_)
        | Record::Timers(_)
        | Record::Process(_)
        | Record::VmaAttr(_)
        | Record::Inotify(_)
        | Record::InotifyWatch(_)
        | Record::Lock(_)
        | Record::VdsoData(_) => touch_state(&p.record),
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
    check_state_order(img);

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
