//! [`chain`]: sets of images with right and wrong links resolved as a chain.

use super::{to_u64, to_usize, MAX_LOOKUPS};
use arbitrary::{Arbitrary, Unstructured};
use core::hint::black_box;
use cr_format::chain::{Chain, ChainIndex, Resolved};
use cr_format::error::{ErrorKind, Result};
use cr_format::limits::{MAX_CHAIN_DEPTH, MAX_DATA_PER_RECORD};
use cr_format::raw::{DIFF_CONTENT_COMPARE, DIFF_NONE, DIFF_WRITE_TRACKING};
use cr_format::read::{Image, RunKind};
use cr_format::repr::{BodyRepr, ImageRepr};

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
    let Some((built, intended)) = build(u) else {
        return;
    };
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
        let order = reorder(u, &newest_first);
        check_chain(&order, &addrs, false);
    }
}

/// Generates one to six images and emits them oldest first, each naming the one before as
/// its parent rightly or wrongly as the input chooses; returns them and whether every link
/// was made right (`None` if the input ran out first).
fn build(u: &mut Unstructured<'_>) -> Option<(Vec<Vec<u8>>, bool)> {
    let n = u.int_in_range(1..=6usize).unwrap_or(1);
    let mut reprs = Vec::new();
    for _ in 0..n {
        match ImageRepr::arbitrary(u) {
            Ok(r) => reprs.push(r),
            Err(_) => break,
        }
    }
    if reprs.is_empty() {
        return None;
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
                return None;
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
                let c = pc.checked_add(u.int_in_range(1..=1000u64).unwrap_or(1))?;
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
        let Ok(summary) = summary else { return None };
        prev = Some((r.header.crid, summary.digest));
        crid = r.header.crid.saturating_add(1);
        built.push(bytes);
    }
    Some((built, intended))
}

/// Another order of the chain `images` (newest first), chosen by the input.
fn reorder<'a>(u: &mut Unstructured<'_>, images: &[Image<'a>]) -> Vec<Image<'a>> {
    let count = images.len();
    match u.int_in_range(0..=4u8).unwrap_or(0) {
        // A permutation.
        0 => {
            let mut v = images.to_vec();
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
                if let Some(img) = images.get(i) {
                    v.push(*img);
                }
            }
            v
        }
        // The chain repeated up to 70 images.
        2 => images
            .iter()
            .cycle()
            .take(u.int_in_range(count..=70usize).unwrap_or(count))
            .copied()
            .collect(),
        // The chain without its newest images (still a chain), or without its oldest.
        3 => {
            let k = u.int_in_range(0..=count).unwrap_or(0);
            if u.arbitrary().unwrap_or(false) {
                images.get(k..).unwrap_or(&[]).to_vec()
            } else {
                images.get(..k).unwrap_or(&[]).to_vec()
            }
        }
        // One image twice in a row: a cycle of length one.
        _ => {
            let i = u.choose_index(count).unwrap_or(0);
            let mut v = images.to_vec();
            if let Some(img) = images.get(i) {
                v.insert(i, *img);
            }
            v
        }
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

/// Resolution of every address through the chain agrees with the index, and is well formed.
pub(super) fn check_resolve(c: &Chain<'_, '_>, addrs: &[u64]) {
    let index = ChainIndex::new(c);
    assert_eq!(index.depth(), c.images().len());
    // A dangling parent reference is an error, not a panic.
    let _refs = black_box(index.check_parent_refs());
    let ps = c.images().first().map_or(0, |i| i.page_size());
    let crids: Vec<u64> = c.images().iter().map(|i| i.crid()).collect();
    for &a in addrs.iter().take(MAX_LOOKUPS) {
        let walk = c.resolve(a);
        let idx = index.resolve(a);
        check_extent(&index, a, &idx, ps);
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

/// The extent holding `a` starts at its page, is not empty, resolves as the page does (its
/// first page), and its last page resolves the same way too.
fn check_extent(index: &ChainIndex<'_>, a: u64, at: &Result<Resolved<'_>>, ps: u32) {
    let ps = u64::from(ps);
    let e = index.extent(a);
    assert_eq!(
        e.start,
        a & !ps.saturating_sub(1),
        "extent start for {a:#x}"
    );
    assert!(e.end > e.start, "empty extent at {a:#x}");
    let from_extent = e
        .resolved
        .map(|r| match r {
            Resolved::Data { crid, bytes } => Resolved::Data {
                crid,
                bytes: bytes.get(..to_usize(ps)).unwrap_or(bytes),
            },
            r => r,
        })
        .ok_or(());
    let page = at.as_ref().map(|r| *r).map_err(|_| ());
    assert!(
        same_resolution(
            &from_extent.map_err(|()| err(a)),
            &page.map_err(|()| err(a))
        ),
        "extent at {a:#x}: {e:?}, page: {at:?}"
    );
    // The last page of the extent, unless it reaches the end of the address space.
    if e.end != u64::MAX && e.end.saturating_sub(e.start) >= ps {
        let last = e.end - ps;
        let lr = index.resolve(last);
        let want = e.resolved.map(|r| match r {
            Resolved::Data { crid, bytes } => {
                let off = to_usize(last - e.start);
                Resolved::Data {
                    crid,
                    bytes: bytes
                        .get(off..off.saturating_add(to_usize(ps)))
                        .unwrap_or(&[]),
                }
            }
            r => r,
        });
        assert!(
            same_resolution(&want.ok_or_else(|| err(last)), &lr.map_err(|_| err(last))),
            "last page {last:#x} of the extent at {a:#x}: {e:?}"
        );
    }
}

fn err(addr: u64) -> cr_format::Error {
    cr_format::Error::new(0, ErrorKind::NotMapped { addr })
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
            // No addresses in pages: nothing to scale.
            BodyRepr::File(_)
            | BodyRepr::Signals(_)
            | BodyRepr::Timers(_)
            | BodyRepr::Process(_)
            | BodyRepr::VmaAttr(_)
            | BodyRepr::Inotify(_)
            | BodyRepr::Lock(_)
            | BodyRepr::Unknown { .. } => {}
            // Its length is the vDSO Vma's: grow it as the Vma grows, each page `k` times.
            BodyRepr::VdsoData(d) => {
                let grown = d.len().saturating_mul(factor);
                if grown > to_usize(cr_format::limits::MAX_VDSO_LEN.into()) {
                    return false;
                }
                let mut data = Vec::with_capacity(d.len().saturating_mul(factor));
                for page in d.chunks(to_usize(old.into())) {
                    for _ in 0..factor {
                        data.extend_from_slice(page);
                    }
                }
                *d = data;
            }
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
