//! Benchmark for BENCHMARKS.md (issue 5): `verify` of a 1 GiB image file against the same run's
//! baseline of reading the file and CRC-ing it with crc32fast; `show`'s time on a 1 GiB image
//! against a twin with the same records but one data page per record (1 MiB of data); the peak
//! RSS of both.
//!
//! ```sh
//! cargo bench -p cr-dump --bench inspect          # CR_BENCH_MIB=1024 by default
//! ```
//! Each measurement runs in a child process (this binary re-executed) so its peak RSS (VmHWM)
//! is its own. Medians of 5.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_format::raw::*;
use cr_format::write::{IoSink, Writer};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use zerocopy::FromZeros;

/// One VMA of `mib` MiB in Pages records of 256 pages (1 MiB), `data_pages` of them stored, the rest zero.
fn make_image(path: &Path, mib: u64, data_pages: u32) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = Writer::new(IoSink::new(std::io::BufWriter::with_capacity(8 << 20, f)));
    let mut h = Header::new_zeroed();
    h.magic = MAGIC;
    h.version_major = VERSION_MAJOR.into();
    h.arch = ARCH_X86_64.into();
    h.page_size = 4096.into();
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
    v.end = (0x1000_0000 + (mib << 20)).into();
    v.prot = (PROT_READ | PROT_WRITE).into();
    w.vma(&v, &[]).unwrap();
    let chunk: Vec<u8> = (0..1usize << 20).map(|i| (i as u8) | 1).collect();
    for i in 0..mib {
        let addr = 0x1000_0000 + (i << 20);
        let data = PageRun {
            addr: addr.into(),
            pages: data_pages.into(),
            kind: RUN_DATA.into(),
            _reserved0: 0.into(),
        };
        let zero = PageRun {
            addr: (addr + (u64::from(data_pages) << 12)).into(),
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
        w.pages(runs, &chunk[..(data_pages as usize) << 12])
            .unwrap();
    }
    w.finish().unwrap();
    w.into_inner().into_inner().flush().unwrap();
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Child side: does one job, prints "SECONDS RSS_KIB".
fn child(job: &str, path: &Path) {
    let t = Instant::now();
    match job {
        "baseline" => {
            let mut f = std::fs::File::open(path).unwrap();
            let mut buf = vec![
                0u8;
                std::env::var("CR_BENCH_CHUNK")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1 << 20)
            ];
            let mut h = crc32fast::Hasher::new();
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            assert_ne!(h.finalize(), 1);
        }
        "verify" => {
            let f = std::fs::File::open(path).unwrap();
            cr_dump::inspect::verify_stream(f, "bench").unwrap();
        }
        "show" => {
            let s = cr_dump::inspect::show::Shown::read(path).unwrap();
            assert!(!cr_dump::inspect::show::render(&s).is_empty());
        }
        _ => panic!("unknown job {job}"),
    }
    println!("{} {}", t.elapsed().as_secs_f64(), vm_hwm_kib());
}

fn measure(job: &str, path: &Path) -> (f64, u64) {
    let mut runs: Vec<(f64, u64)> = (0..5)
        .map(|_| {
            let o = Command::new(std::env::current_exe().unwrap())
                .args(["--child", job])
                .arg(path)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{job}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let s = String::from_utf8(o.stdout).unwrap();
            let mut it = s.split_whitespace();
            (
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    let mib: u64 = std::env::var("CR_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = PathBuf::from(
        std::env::var("CR_BENCH_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    );
    let big = dir.join(format!("cr-bench-inspect-{}.img.1", std::process::id()));
    let small = dir.join(format!(
        "cr-bench-inspect-small-{}.img.1",
        std::process::id()
    ));
    make_image(&big, mib, 256);
    make_image(&small, mib, 1);
    let size = std::fs::metadata(&big).unwrap().len();
    // Warm the page cache the same way for everyone.
    let _ = measure("baseline", &big);
    let (base, base_rss) = measure("baseline", &big);
    let (ver, ver_rss) = measure("verify", &big);
    let (show_big, show_rss) = measure("show", &big);
    let (show_small, _) = measure("show", &small);
    let gib = size as f64 / (1u64 << 30) as f64;
    println!("image {size} bytes ({mib} MiB of page data), page cache warm; medians of 5, each in a fresh process");
    println!(
        "baseline: read 1 MiB chunks + crc32fast  {:>8.1} ms  {:>6.2} GiB/s  peak RSS {:>6} KiB",
        base * 1e3,
        gib / base,
        base_rss
    );
    println!(
        "verify (streaming, every check)          {:>8.1} ms  {:>6.2} GiB/s  peak RSS {:>6} KiB",
        ver * 1e3,
        gib / ver,
        ver_rss
    );
    println!(
        "  verify throughput / baseline            {:>8.3}   (goal >= 0.80)",
        base / ver
    );
    println!(
        "show, {mib} MiB image                      {:>8.3} ms  peak RSS {:>6} KiB",
        show_big * 1e3,
        show_rss
    );
    println!(
        "show, same records, 1 data page each      {:>8.3} ms",
        show_small * 1e3
    );
    println!(
        "  show time ratio big/small               {:>8.3}   (1.0 = independent of page data)",
        show_big / show_small
    );
    let _ = std::fs::remove_file(&big);
    let _ = std::fs::remove_file(&small);
}
