//! Benchmark for BENCHMARKS.md: validating a 1 GiB image against crc32fast over the same bytes,
//! and listing records without touching page data (1 MiB of data per record vs 4 KiB, same
//! records).
//!
//! ```sh
//! cargo run --release -p cr-format --example bench_validate [-- SIZE_MIB]
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use cr_format::raw::*;
use cr_format::read::Image;
use cr_format::write::Writer;
use std::time::{Duration, Instant};
use zerocopy::FromZeros;

/// An image with one VMA of `mib` MiB, in Pages records covering 256 pages (1 MiB) each, of
/// which `data_pages` are stored (the rest are zero runs).
fn image(mib: u64, data_pages: u32) -> Vec<u8> {
    let ps = 4096u64;
    let pages = mib * 256;
    let mut out = Vec::with_capacity(((mib << 20) + (1 << 20)) as usize);
    let mut w = Writer::new(&mut out);
    let mut h = Header::new_zeroed();
    h.magic = MAGIC;
    h.version_major = VERSION_MAJOR.into();
    h.arch = ARCH_X86_64.into();
    h.page_size = (ps as u32).into();
    h.crid = 1.into();
    w.header(&h).unwrap();
    let mut t = Task::new_zeroed();
    t.pid = 1.into();
    t.state = b'S';
    w.task(&t).unwrap();
    let mut r = RegsX86_64::new_zeroed();
    r.arch = ARCH_X86_64.into();
    w.regs(&r, &[0; 2432]).unwrap();
    w.mm(&Mm::new_zeroed(), &[], b"/bench").unwrap();
    let mut v = Vma::new_zeroed();
    v.start = 0x1000_0000.into();
    v.end = (0x1000_0000 + pages * ps).into();
    v.prot = (PROT_READ | PROT_WRITE).into();
    w.vma(&v, &[]).unwrap();
    let mut chunk = vec![0u8; 256 * ps as usize];
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = (i as u8) | 1;
    }
    let mut addr = 0x1000_0000u64;
    while addr < 0x1000_0000 + pages * ps {
        let data = PageRun {
            addr: addr.into(),
            pages: data_pages.into(),
            kind: RUN_DATA.into(),
            _reserved0: 0.into(),
        };
        let rest = u64::from(data_pages) * ps;
        let zero = PageRun {
            addr: (addr + rest).into(),
            pages: (256 - data_pages).into(),
            kind: RUN_ZERO.into(),
            _reserved0: 0.into(),
        };
        let runs = [data, zero];
        let runs = if data_pages == 256 {
            &runs[..1]
        } else {
            &runs[..]
        };
        w.pages(runs, &chunk[..rest as usize]).unwrap();
        addr += 256 * ps;
    }
    w.finish().unwrap();
    out
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1024);
    let img = image(mib, 256);
    let empty = image(mib, 1);
    let gib = img.len() as f64 / (1u64 << 30) as f64;
    let crc = median(
        || assert_ne!(crc32fast::hash(std::hint::black_box(&img)), 1),
        5,
    );
    let full = median(
        || assert_eq!(Image::parse(std::hint::black_box(&img)).unwrap().crid(), 1),
        5,
    );
    let meta = median(
        || {
            assert_eq!(
                Image::parse_metadata(std::hint::black_box(&img))
                    .unwrap()
                    .crid(),
                1
            )
        },
        21,
    );
    let meta_empty = median(
        || {
            assert_eq!(
                Image::parse_metadata(std::hint::black_box(&empty))
                    .unwrap()
                    .crid(),
                1
            )
        },
        21,
    );
    println!(
        "image: {} bytes ({} Pages records), twin with 1 data page per record: {} bytes",
        img.len(),
        mib,
        empty.len()
    );
    println!(
        "crc32fast over the image      {:>9.1} ms  {:>6.2} GiB/s",
        crc.as_secs_f64() * 1e3,
        gib / crc.as_secs_f64()
    );
    println!(
        "Image::parse (all checks)     {:>9.1} ms  {:>6.2} GiB/s",
        full.as_secs_f64() * 1e3,
        gib / full.as_secs_f64()
    );
    println!(
        "  ratio parse/crc throughput  {:>9.3}   (goal >= 0.80)",
        crc.as_secs_f64() / full.as_secs_f64()
    );
    println!(
        "parse_metadata, 1 MiB/record  {:>9.3} ms",
        meta.as_secs_f64() * 1e3
    );
    println!(
        "parse_metadata, 4 KiB/record  {:>9.3} ms",
        meta_empty.as_secs_f64() * 1e3
    );
    println!(
        "  ratio with/without data     {:>9.3}   (1.0 = independent of page data)",
        meta.as_secs_f64() / meta_empty.as_secs_f64()
    );
}
