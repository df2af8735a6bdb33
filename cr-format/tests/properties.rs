//! Properties over arbitrary images, chain resolution over the chain vectors, and the bound on
//! what a reader allocates whatever an image claims.
#![cfg(feature = "arbitrary")]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

mod support;
use arbitrary::{Arbitrary, Unstructured};
use cr_format::chain::{Chain, Resolved};
use cr_format::read::{Image, Options, Records};
use cr_format::repr::{BodyRepr, ImageRepr, PagesRepr, RunRepr, VmaRepr};
use cr_format::ErrorKind;
use proptest::prelude::*;

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(support::spec_dir().join(format!("vectors/valid/{name}.bin"))).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any Repr → write → read → equal, and re-emitting gives identical bytes; the streaming
    /// parser fed in chunks yields the same records.
    #[test]
    fn repr_write_read_roundtrip(seed in proptest::collection::vec(any::<u8>(), 64..2048), chunk in 1usize..5000) {
        let mut u = Unstructured::new(&seed);
        let repr = ImageRepr::arbitrary(&mut u).unwrap();
        let bytes = repr.to_vec().map_err(|e| TestCaseError::fail(format!("writer refused a valid repr: {e}")))?;
        let img = Image::parse(&bytes).map_err(|e| TestCaseError::fail(format!("reader refused the writer's image: {e}")))?;
        let back = ImageRepr::parse(&img);
        prop_assert_eq!(&back, &repr);
        prop_assert!(back.to_vec().unwrap() == bytes);
        // Chunked sans-I/O parse: same records at the same offsets.
        let want: Vec<(u64, u32)> = Records::new(&bytes, Options::default()).map(|r| { let r = r.unwrap(); (r.offset, r.header.crc.get()) }).collect();
        let mut got = vec![];
        let mut p = cr_format::read::Parser::default();
        let (mut pos, mut have) = (0usize, 0usize);
        loop {
            let eof = have == bytes.len();
            match p.parse(&bytes[pos..have], eof).unwrap() {
                cr_format::read::Chunk::NeedMoreData(_) => have = (have + chunk).min(bytes.len()),
                cr_format::read::Chunk::Record(r) => { got.push((r.offset, r.header.crc.get())); pos += r.len() as usize; have = have.max(pos); }
                cr_format::read::Chunk::End => break,
            }
        }
        prop_assert_eq!(got, want);
    }

    /// Arbitrary bytes never panic either reader, and both agree.
    #[test]
    fn arbitrary_bytes_are_rejected_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let a = Image::parse(&bytes).err();
        let b = Image::parse_metadata(&bytes).err();
        prop_assert!(a.is_some() && b.is_some());
    }
}

#[test]
fn chain_of_three_resolves_through_parents() {
    let (b1, b2, b3) = (vector("chain-1"), vector("chain-2"), vector("chain-3"));
    let imgs = [
        Image::parse(&b3).unwrap(),
        Image::parse(&b2).unwrap(),
        Image::parse(&b1).unwrap(),
    ];
    let chain = Chain::new(&imgs).unwrap();
    // Heap pages 6..8 are "parent" in 3 and 2 and zero in 1.
    assert!(matches!(
        chain.resolve(0x606000).unwrap(),
        Resolved::Zero { crid: 1 }
    ));
    // Heap page 0 is data in 3, with 3's pattern.
    match chain.resolve(0x600000).unwrap() {
        Resolved::Data { crid: 3, bytes } => assert_eq!(bytes[1], 1 ^ 3),
        r => panic!("{r:?}"),
    }
    // Untouched text page: not present, comes from the file.
    assert!(matches!(
        chain.resolve(0x400000).unwrap(),
        Resolved::NotPresent { crid: 3, .. }
    ));
    assert_eq!(
        chain.resolve(0x10).unwrap_err().kind,
        ErrorKind::NotMapped { addr: 0x10 }
    );
}

#[test]
fn broken_chains_are_refused_with_the_crid_expected() {
    let (b1, b2, b3) = (vector("chain-1"), vector("chain-2"), vector("chain-3"));
    let (i1, i2, i3) = (
        Image::parse(&b1).unwrap(),
        Image::parse(&b2).unwrap(),
        Image::parse(&b3).unwrap(),
    );
    let kind = |v: &[Image<'_>]| Chain::new(v).unwrap_err().kind;
    assert_eq!(
        kind(&[i3, i1]),
        ErrorKind::WrongParent {
            expected_crid: 2,
            found_crid: 1
        }
    );
    assert_eq!(kind(&[i3, i2]), ErrorKind::MissingParent { crid: 1 });
    assert_eq!(kind(&[i3, i2, i1, i1]), ErrorKind::ExtraImage { crid: 1 });
    // A cycle cannot be built: every Header has parent_crid < crid, and each parent must have
    // exactly its child's parent_crid. Images in the wrong order are wrong parents.
    assert_eq!(
        kind(&[i2, i3]),
        ErrorKind::WrongParent {
            expected_crid: 1,
            found_crid: 3
        }
    );
    assert_eq!(
        kind(&[i3, i2, i2]),
        ErrorKind::WrongParent {
            expected_crid: 1,
            found_crid: 2
        }
    );
    assert!(matches!(
        kind(&[i1; 65]),
        ErrorKind::LimitExceeded {
            limit: "MAX_CHAIN_DEPTH",
            ..
        }
    ));
    assert_eq!(kind(&[]), ErrorKind::MissingParent { crid: 0 });
    // Same CRIDs, another parent image: the digest tells.
    let mut other = ImageRepr::parse(&i2);
    other.task.pid += 1;
    let ob = other.to_vec().unwrap();
    let o2 = Image::parse(&ob).unwrap();
    assert!(matches!(
        kind(&[i3, o2, i1]),
        ErrorKind::ParentDigestMismatch { .. }
    ));
}

#[test]
fn parent_run_over_an_address_the_parent_does_not_map_is_a_dangling_reference() {
    let b1 = vector("chain-1");
    let i1 = Image::parse(&b1).unwrap();
    let mut child = ImageRepr::parse(&Image::parse(&vector("chain-2")).unwrap());
    // Between the heap and the stack, to keep VMAs in address order.
    child.body.insert(
        4,
        BodyRepr::Vma(VmaRepr {
            start: 0x9000_0000,
            end: 0x9000_1000,
            offset: 0,
            inode: 0,
            file_size: 0,
            file_mtime_ns: 0,
            dev_major: 0,
            dev_minor: 0,
            prot: 3,
            flags: 0,
            kind: 0,
            path: vec![],
        }),
    );
    child.body.insert(
        5,
        BodyRepr::Pages(PagesRepr {
            runs: vec![RunRepr {
                addr: 0x9000_0000,
                pages: 1,
                kind: cr_format::read::RunKind::Parent,
            }],
            data: vec![],
        }),
    );
    let cb = child.to_vec().unwrap();
    let imgs = [Image::parse(&cb).unwrap(), i1];
    let chain = Chain::new(&imgs).unwrap();
    assert_eq!(
        chain.resolve(0x9000_0000).unwrap_err().kind,
        ErrorKind::NotMapped { addr: 0x9000_0000 }
    );
}

#[test]
fn chain_index_agrees_with_the_record_walk_on_every_page() {
    use cr_format::chain::ChainIndex;
    let (b1, b2, b3) = (vector("chain-1"), vector("chain-2"), vector("chain-3"));
    let imgs = [
        Image::parse(&b3).unwrap(),
        Image::parse(&b2).unwrap(),
        Image::parse(&b1).unwrap(),
    ];
    let chain = Chain::new(&imgs).unwrap();
    let idx = ChainIndex::new(&chain);
    let key = |r: cr_format::Result<Resolved<'_>>| match r {
        Ok(Resolved::Data { crid, bytes }) => format!("data {crid} {:08x}", crc32fast::hash(bytes)),
        Ok(Resolved::Zero { crid }) => format!("zero {crid}"),
        Ok(Resolved::NotPresent { crid, vma }) => format!("absent {crid} {:#x}", vma.start()),
        Err(e) => format!("{e}"),
    };
    let mut checked = 0;
    for addr in (0x3f0000u64..0x620000)
        .step_by(0x1000)
        .chain((0x7ffc_ffff_0000..0x7ffd_0001_0000).step_by(0x1000))
    {
        assert_eq!(
            key(idx.resolve(addr)),
            key(chain.resolve(addr)),
            "{addr:#x}"
        );
        checked += 1;
    }
    assert!(checked > 500);
    assert_eq!(idx.check_parent_refs().unwrap(), 4); // 2 parent pages in each of 3 and 2
}

#[test]
fn metadata_parsed_image_with_bad_data_still_walks_every_record() {
    let mut b = vector("full");
    let n = b.len();
    b[n - 40 - 100] ^= 1; // inside the last data page
    assert!(Image::parse(&b).is_err());
    let img = Image::parse_metadata(&b).unwrap();
    assert_eq!(img.records().count(), 12);
    assert!(matches!(
        img.lookup(0x602000),
        cr_format::read::Lookup::Zero
    ));
}

#[test]
fn unknown_records_may_sit_between_pages_of_one_vma() {
    let mut r = ImageRepr::parse(&Image::parse(&vector("full")).unwrap());
    // body: [Vma file, Pages, Vma heap, Pages, ...]: split the heap's Pages around an unknown record.
    let BodyRepr::Pages(p) = r.body[3].clone() else {
        panic!()
    };
    let (a, b) = p.runs.split_at(1);
    let first = PagesRepr {
        runs: a.to_vec(),
        data: p.data.clone(),
    };
    let second = PagesRepr {
        runs: b.to_vec(),
        data: vec![],
    };
    r.body.splice(
        3..4,
        [
            BodyRepr::Pages(first),
            BodyRepr::Unknown {
                kind: 0x4001,
                payload: vec![7; 16],
            },
            BodyRepr::Pages(second),
        ],
    );
    let bytes = r.to_vec().unwrap();
    assert_eq!(ImageRepr::parse(&Image::parse(&bytes).unwrap()), r);
}

/// Extents agree with page-by-page resolution on every page of the chain vectors (each page of
/// an extent resolves as the extent says), they tile every VMA, and `check_parent_refs` counts
/// exactly the "parent" pages a page-by-page walk finds.
#[test]
fn extents_agree_with_pages_on_the_chain_vectors() {
    use cr_format::chain::ChainIndex;
    use cr_format::read::{Record, RunKind};
    let (b1, b2, b3) = (vector("chain-1"), vector("chain-2"), vector("chain-3"));
    let imgs = [
        Image::parse(&b3).unwrap(),
        Image::parse(&b2).unwrap(),
        Image::parse(&b1).unwrap(),
    ];
    let chain = Chain::new(&imgs).unwrap();
    let idx = ChainIndex::new(&chain);
    let ps = u64::from(imgs[0].page_size());
    let mut extents = 0;
    for (level, img) in imgs.iter().enumerate() {
        for v in img.vmas() {
            let mut a = v.start();
            while a < v.end() {
                let e = idx.extent_from(level, a);
                assert_eq!(e.start, a);
                assert!(e.end > a, "empty extent at {a:#x}");
                if level == 0 {
                    extents += 1;
                }
                let stop = e.end.min(v.end());
                for (k, p) in (a..stop).step_by(ps as usize).enumerate() {
                    let page = idx.resolve_from(level, p);
                    match (e.resolved, page) {
                        (None, Err(_)) => {}
                        (Some(Resolved::Zero { crid }), Ok(Resolved::Zero { crid: c })) => {
                            assert_eq!(crid, c)
                        }
                        (
                            Some(Resolved::NotPresent { crid, vma }),
                            Ok(Resolved::NotPresent { crid: c, vma: w }),
                        ) => assert_eq!((crid, vma.start()), (c, w.start())),
                        (
                            Some(Resolved::Data { crid, bytes }),
                            Ok(Resolved::Data { crid: c, bytes: b }),
                        ) => {
                            assert_eq!(crid, c);
                            let off = k * ps as usize;
                            assert_eq!(&bytes[off..off + ps as usize], b, "page {p:#x}");
                        }
                        (e, p) => panic!("at {p:?}: extent {e:?}"),
                    }
                }
                a = stop;
            }
        }
    }
    // Fewer extents than pages: runs are walked whole.
    let pages: u64 = imgs[0].vmas().map(|v| (v.end() - v.start()) / ps).sum();
    assert!(
        extents < pages as usize,
        "{extents} extents for {pages} pages"
    );
    let mut parent_pages = 0u64;
    for img in &imgs {
        for r in img.records() {
            if let Record::Pages(p) = r.record {
                for run in p.iter().filter(|r| r.kind == RunKind::Parent) {
                    parent_pages += u64::from(run.pages);
                }
            }
        }
    }
    assert!(parent_pages > 0);
    assert_eq!(idx.check_parent_refs().unwrap(), parent_pages);
}

/// The arbitrary images the property tests and fuzzers start from carry every record kind of
/// 1.1 and 1.2 (FileData, InotifyWatch and VdsoData included), with seeds of the size the
/// property tests use.
#[test]
fn arbitrary_images_cover_every_kind_of_1_1_and_1_2() {
    use cr_format::raw::{KIND_FILE, KIND_LAST};
    let mut seen = [0u32; 32];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..400 {
        let seed: Vec<u8> = (0..4096)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        let repr = ImageRepr::arbitrary(&mut Unstructured::new(&seed)).unwrap();
        let bytes = repr.to_vec().unwrap();
        for r in Records::new(&bytes, Options::default()) {
            seen[usize::from(r.unwrap().header.kind.get()).min(31)] += 1;
        }
    }
    for k in KIND_FILE..=KIND_LAST {
        assert!(seen[usize::from(k)] > 0, "no record of kind {k}: {seen:?}");
    }
}
