//! `Writer::pages_with_crc`: a CRC from `DataCrc::of` over the same data gives the image
//! `Writer::pages` gives; a length mismatch is refused; a CRC over other data is the one way to
//! emit a record the reader rejects (as documented), and the reader does reject it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_format::error::ErrorKind;
use cr_format::raw::*;
use cr_format::read::Image;
use cr_format::write::{DataCrc, Writer};
use zerocopy::FromZeros;

fn image(
    pages: impl FnOnce(&mut Writer<Vec<u8>>, &[PageRun], &[u8]) -> cr_format::error::Result<()>,
) -> cr_format::error::Result<Vec<u8>> {
    let mut w = Writer::new(Vec::new());
    let mut h = Header::new_zeroed();
    h.magic = MAGIC;
    h.version_major = VERSION_MAJOR.into();
    h.arch = ARCH_X86_64.into();
    h.page_size = 4096.into();
    h.crid = 1.into();
    w.header(&h)?;
    let mut t = Task::new_zeroed();
    t.pid = 1.into();
    t.state = b'S';
    w.task(&t)?;
    let mut r = RegsX86_64::new_zeroed();
    r.arch = ARCH_X86_64.into();
    w.regs(&r, &[])?;
    w.mm(&Mm::new_zeroed(), &[], b"")?;
    let mut v = Vma::new_zeroed();
    v.start = 0x10000.into();
    v.end = 0x12000.into();
    w.vma(&v, &[])?;
    let run = PageRun {
        addr: 0x10000.into(),
        pages: 2.into(),
        kind: RUN_DATA.into(),
        ..PageRun::new_zeroed()
    };
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 1) as u8).collect();
    pages(&mut w, &[run], &data)?;
    w.finish()?;
    Ok(w.into_inner())
}

#[test]
fn same_crc_same_image() {
    let a = image(|w, r, d| w.pages(r, d)).unwrap();
    let b = image(|w, r, d| w.pages_with_crc(r, d, DataCrc::of(d))).unwrap();
    assert_eq!(a, b);
    Image::parse(&a).unwrap();
}

#[test]
fn length_mismatch_is_refused() {
    let e = image(|w, r, d| w.pages_with_crc(r, d, DataCrc::of(&d[..4096]))).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadLength { .. }), "{e:?}");
}

#[test]
fn a_crc_of_other_data_is_caught_by_the_reader() {
    let img = image(|w, r, d| {
        let other = vec![0u8; d.len()];
        w.pages_with_crc(r, d, DataCrc::of(&other))
    })
    .unwrap();
    let e = Image::parse(&img).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadDataCrc { .. }), "{e:?}");
}
