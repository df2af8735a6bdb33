//! Bounded work on hostile images: crafted images whose runs cover 2^32-1 pages (a zero run in a
//! full image, a "parent" run in its child) keep every verb to a fraction of a second and a few
//! MiB written, and `restore` refuses a VMA outside the user address space before it forks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_format::raw::{self, PageRun};
use cr_format::write::Writer;
use cr_tests::TempDir;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use zerocopy::FromZeros;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const PS: u64 = 4096;
/// The longest run the format allows.
const HUGE: u32 = u32::MAX;
/// The crafted VMA: one data page, then 2^32-1 pages in one run (16 TiB, within user space).
const BASE: u64 = 0x1000_0000_0000;
const VMA_END: u64 = BASE + (1 + HUGE as u64) * PS;
/// What a verb may take; each takes milliseconds once bounded (the unbounded ones took minutes).
const TIME_LIMIT: Duration = Duration::from_secs(5);
/// What a verb may write (allocated blocks of its output).
const WRITE_LIMIT: u64 = 4 << 20;
/// When a verb that has not answered is killed.
const KILL_AFTER: Duration = Duration::from_secs(30);

/// Runs `cmd`, killed after [`KILL_AFTER`] (a hang fails in seconds, not CI's 90 minutes).
fn output(cmd: &mut Command) -> (Output, Duration) {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > KILL_AFTER {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {KILL_AFTER:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t.elapsed();
    (child.wait_with_output().unwrap(), took)
}

fn run(args: &[&str], dir: &Path) -> (Output, Duration) {
    let (out, took) = output(
        Command::new(BIN)
            .args(args)
            .env("CR_CRID_FILE", dir.join("crid")),
    );
    eprintln!(
        "cr-dump {}: {:?} in {took:?}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (out, took)
}

/// Runs a verb that must succeed within [`TIME_LIMIT`]; returns its stdout.
fn quick_ok(args: &[&str], dir: &Path) -> String {
    let (out, took) = run(args, dir);
    assert!(
        out.status.success(),
        "cr-dump {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < TIME_LIMIT, "cr-dump {args:?} took {took:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Bytes allocated to a file (what was really written), and its length.
fn allocated(p: &Path) -> (u64, u64) {
    let md = std::fs::metadata(p).unwrap();
    (md.blocks() * 512, md.len())
}

/// An image of one anonymous VMA `[BASE, VMA_END)` holding a data
/// page of `fill` at `BASE` and one run of `kind` over the 2^32-1 pages after it; a child of
/// `parent` (CRID, digest) if given. Returns the bytes and the tail digest.
fn image(crid: u64, parent: Option<(u64, u64)>, fill: u8, kind: u16) -> (Vec<u8>, u64) {
    let mut w = Writer::new(Vec::new());
    let mut h = raw::Header::new_zeroed();
    h.magic = raw::MAGIC;
    h.version_major = raw::VERSION_MAJOR.into();
    h.arch = raw::ARCH_X86_64.into();
    h.page_size = (PS as u32).into();
    h.crid = crid.into();
    if let Some((pc, pd)) = parent {
        h.parent_crid = pc.into();
        h.parent_digest = pd.into();
        h.diff_method = raw::DIFF_WRITE_TRACKING.into();
    }
    w.header(&h).unwrap();
    let mut t = raw::Task::new_zeroed();
    t.pid = 4242.into();
    t.state = b'S';
    t.comm[..7].copy_from_slice(b"crafted");
    w.task(&t).unwrap();
    let mut r = raw::RegsX86_64::new_zeroed();
    r.arch = raw::ARCH_X86_64.into();
    w.regs(&r, &[]).unwrap();
    w.mm(&raw::Mm::new_zeroed(), &[], b"").unwrap();
    let vma = |w: &mut Writer<Vec<u8>>, start: u64, end: u64, kind: u16| {
        let mut v = raw::Vma::new_zeroed();
        (v.start, v.end, v.kind) = (start.into(), end.into(), kind.into());
        v.prot = (raw::PROT_READ | raw::PROT_WRITE).into();
        w.vma(&v, &[]).unwrap();
    };
    vma(&mut w, BASE, VMA_END, raw::VMA_ANON);
    let run = |addr: u64, pages: u32, kind: u16| PageRun {
        addr: addr.into(),
        pages: pages.into(),
        kind: kind.into(),
        _reserved0: 0.into(),
    };
    let runs = [run(BASE, 1, raw::RUN_DATA), run(BASE + PS, HUGE, kind)];
    w.pages(&runs, &[fill; PS as usize]).unwrap();
    let s = w.finish().unwrap();
    (w.into_inner(), s.digest)
}

/// `DIR/big.img.100` (full: a zero run of 2^32-1 pages) and `DIR/big.img.101` (its child: a
/// parent run of 2^32-1 pages); returns their paths.
fn crafted(dir: &Path) -> (PathBuf, PathBuf) {
    let (full, digest) = image(100, None, 0xab, raw::RUN_ZERO);
    let (child, _) = image(101, Some((100, digest)), 0xcd, raw::RUN_PARENT);
    let (p, c) = (dir.join("big.img.100"), dir.join("big.img.101"));
    std::fs::write(&p, full).unwrap();
    std::fs::write(&c, child).unwrap();
    (p, c)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory on tmpfs: a core of a 16 TiB VMA is longer than ext4's largest file (16 TiB - 4
/// KiB), and tmpfs takes any sparse length.
fn shm_dir(tag: &str) -> PathBuf {
    let d = Path::new("/dev/shm").join(format!("cr-test-bounded-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("/dev/shm (tmpfs) is needed for a 16 TiB sparse core");
    d
}

/// `core` of both images: the 2^32-1-page run is a hole, the file reads back as the image says
/// (the data page at the VMA's file offset, zeros in the run), and little is allocated.
#[test]
fn core_of_a_huge_run_is_sparse() {
    let dir = TempDir::new("bounded-core");
    let (full, child) = crafted(dir.path());
    let shm = shm_dir("core");
    let result = std::panic::catch_unwind(|| {
        for (img, fill) in [(&full, 0xab), (&child, 0xcd)] {
            let core = shm.join("core");
            quick_ok(&["core", s(img), "-o", s(&core)], dir.path());
            let (blocks, len) = allocated(&core);
            eprintln!(
                "core of {}: {len} bytes long, {blocks} allocated",
                img.display()
            );
            assert!(blocks <= WRITE_LIMIT, "core allocated {blocks} bytes");
            assert!(len > (1 + HUGE as u64) * PS, "core of {len} bytes");
            // The first PT_LOAD (after the ELF header and the PT_NOTE) is the crafted VMA.
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(&core).unwrap();
            let mut ph = [0u8; 56];
            f.read_exact_at(&mut ph, 64 + 56).unwrap();
            let off = u64::from_le_bytes(ph[8..16].try_into().unwrap());
            let vaddr = u64::from_le_bytes(ph[16..24].try_into().unwrap());
            let filesz = u64::from_le_bytes(ph[32..40].try_into().unwrap());
            assert_eq!((vaddr, filesz), (BASE, VMA_END - BASE));
            assert_eq!(
                off + filesz,
                len,
                "the run's hole reaches the end of the core"
            );
            let mut page = vec![0u8; PS as usize];
            f.read_exact_at(&mut page, off).unwrap();
            assert!(page.iter().all(|&b| b == fill), "data page");
            for at in [off + PS, off + filesz / 2, len - PS] {
                f.read_exact_at(&mut page, at).unwrap();
                assert!(page.iter().all(|&b| b == 0), "zeros at {at:#x}");
            }
            std::fs::remove_file(&core).unwrap();
        }
    });
    let _ = std::fs::remove_dir_all(&shm);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// On a file system whose files cannot be that long (ext4: 16 TiB - 4 KiB), `core` of the
/// huge VMA fails at once with the reason and leaves no file; where they can, it is sparse.
#[test]
fn core_of_a_huge_run_fails_cleanly_where_files_are_shorter() {
    let dir = TempDir::new("bounded-core-fs");
    let (_, child) = crafted(dir.path());
    let before = dir.entries();
    let core = dir.path().join("core");
    let (out, took) = run(&["core", s(&child), "-o", s(&core)], dir.path());
    assert!(took < TIME_LIMIT, "core took {took:?}");
    if out.status.success() {
        let (blocks, _) = allocated(&core);
        assert!(blocks <= WRITE_LIMIT, "core allocated {blocks} bytes");
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("past what this file system allows in a file"),
            "core failed otherwise: {err}"
        );
        assert_eq!(dir.entries(), before, "core left a file behind");
    }
}

/// `verify --chain` and `chain` resolve the 2^32-1 parent pages by runs, not one by one.
#[test]
fn verify_and_chain_of_a_huge_parent_run_are_quick() {
    let dir = TempDir::new("bounded-verify");
    let (_, child) = crafted(dir.path());
    let out = quick_ok(&["verify", "--chain", "--json", s(&child)], dir.path());
    assert!(
        out.contains(&format!("\"parent_pages_checked\":{HUGE}")),
        "verify --chain: {out}"
    );
    let out = quick_ok(&["chain", s(&child)], dir.path());
    assert!(
        out.contains(&format!(
            "chain ok: 2 image(s), {HUGE} parent page(s) resolved"
        )),
        "chain: {out}"
    );
}

/// `extract` through the huge runs: the data page, and pages deep in and at the end of the run.
#[test]
fn extract_through_a_huge_parent_run_is_quick() {
    let dir = TempDir::new("bounded-extract");
    let (full, child) = crafted(dir.path());
    for (img, fill) in [(&full, 0xabu8), (&child, 0xcd)] {
        let out = dir.path().join("mem");
        let last = VMA_END - PS;
        for (addr, len) in [(BASE, 2 * PS), (BASE + (PS << 31), PS), (last, PS)] {
            quick_ok(
                &[
                    "extract",
                    s(img),
                    "--addr",
                    &format!("{addr:#x}"),
                    "--len",
                    &len.to_string(),
                    "-o",
                    s(&out),
                ],
                dir.path(),
            );
            let got = std::fs::read(&out).unwrap();
            assert_eq!(got.len() as u64, len);
            let want_fill = |i: usize| {
                if addr == BASE && i < PS as usize {
                    fill
                } else {
                    0
                }
            };
            assert!(
                got.iter().enumerate().all(|(i, &b)| b == want_fill(i)),
                "extract {addr:#x}"
            );
        }
    }
}

/// `diff` of the full image and its child compares the 2^32-1 pages by runs: one page differs.
#[test]
fn diff_of_huge_runs_is_quick() {
    let dir = TempDir::new("bounded-diff");
    let (full, child) = crafted(dir.path());
    // diff(1)'s exit status: 1, the images differ.
    let (o, took) = run(&["diff", s(&full), s(&child)], dir.path());
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(took < TIME_LIMIT, "diff took {took:?}");
    let out = String::from_utf8(o.stdout).unwrap();
    let one = format!("pages {BASE:#x}-{:#x} differ (1 pages)", BASE + PS);
    assert!(out.contains(&one), "diff: {out}");
    assert_eq!(out.matches("differ (").count(), 1, "diff: {out}");
}

/// `squash` folds the 2^32-1 parent pages into a zero run: a small image whose memory is the
/// chain's.
#[test]
fn squash_of_a_huge_parent_run_is_small() {
    let dir = TempDir::new("bounded-squash");
    let (_, child) = crafted(dir.path());
    let sq = dir.path().join("sq.img.7");
    quick_ok(&["squash", s(&child), "-o", s(&sq)], dir.path());
    let (blocks, len) = allocated(&sq);
    eprintln!("squashed: {len} bytes, {blocks} allocated");
    assert!(
        len <= WRITE_LIMIT && blocks <= WRITE_LIMIT,
        "squash wrote {len} bytes"
    );
    let out = quick_ok(&["verify", "--json", s(&sq)], dir.path());
    // One data page, the rest known zero.
    assert!(
        out.contains(&format!("\"pages\":[1,{HUGE},0]")),
        "squashed image: {out}"
    );
    let mem = dir.path().join("mem");
    let last = VMA_END - PS;
    quick_ok(
        &[
            "extract",
            s(&sq),
            "--addr",
            &format!("{last:#x}"),
            "--len",
            "4096",
            "-o",
            s(&mem),
        ],
        dir.path(),
    );
    assert_eq!(std::fs::read(&mem).unwrap(), vec![0u8; PS as usize]);
}

/// `restore` of the chain checks every parent page (by runs) before it starts anything: it
/// answers within the time limit, whatever it answers (the crafted image has no vDSO, so it is
/// refused; a 16 TiB VMA would not be mapped anyway).
#[test]
fn restore_of_a_huge_parent_run_answers_quickly() {
    let dir = TempDir::new("bounded-restore");
    let (full, child) = crafted(dir.path());
    for img in [&full, &child] {
        let (out, took) = run(&["restore", "--detach", s(img)], dir.path());
        assert!(took < TIME_LIMIT, "restore took {took:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        // No process to wait for: a restore that started one would have printed its pid.
        assert!(!out.status.success(), "restore of a crafted image: {err}");
        assert!(err.contains("vDSO"), "refused for another reason: {err}");
    }
}

/// A VMA at a kernel address is refused before the fork, naming the VMA: strace sees no
/// process created.
#[test]
fn restore_refuses_a_kernel_address_vma_before_forking() {
    let dir = TempDir::new("bounded-kernel");
    let kernel = (
        0xffff_8880_0000_0000u64,
        0xffff_8880_0000_2000u64,
        raw::VMA_ANON,
    );
    let beyond = (0x7fff_ffff_e000u64, 0x8000_0000_1000u64, raw::VMA_ANON);
    for (tag, vma) in [("kernel", kernel), ("straddling", beyond)] {
        let img = kernel_image(vma);
        let p = dir.path().join(format!("{tag}.img.5"));
        std::fs::write(&p, img).unwrap();
        let trace = dir.path().join("trace");
        let (out, took) = output(
            Command::new("strace")
                .args([
                    "-f",
                    "-qq",
                    "-o",
                    s(&trace),
                    "-e",
                    "trace=fork,vfork,clone,clone3",
                ])
                .args([BIN, "restore", "--detach", s(&p)])
                .env("CR_CRID_FILE", dir.path().join("crid")),
        );
        eprintln!("restore {tag}: {:?} in {took:?}", out.status);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "restore accepted {tag}: {err}");
        let named = format!("anon VMA {:#x}-{:#x}", vma.0, vma.1);
        assert!(err.contains(&named), "error does not name {named}: {err}");
        assert!(err.contains("outside the user address space"), "{err}");
        let forks = std::fs::read_to_string(&trace).unwrap();
        assert!(
            !forks.contains("clone") && !forks.contains("fork"),
            "restore created a process before refusing:\n{forks}"
        );
    }
}

/// This kernel's vDSO and vvar areas (those of every process, at other addresses), as VMAs:
/// with them an image passes restore's layout check, so only the address check stands
/// between it and the fork.
fn special_vmas() -> Vec<(u64, u64, u16)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let v: Vec<(u64, u64, u16)> = maps
        .lines()
        .filter_map(|l| {
            let kind = match l.split_whitespace().nth(5)? {
                "[vdso]" => raw::VMA_VDSO,
                n if n.starts_with("[vvar") => raw::VMA_VVAR,
                _ => return None,
            };
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            let hex = |x| u64::from_str_radix(x, 16).unwrap();
            Some((hex(a), hex(b), kind))
        })
        .collect();
    assert!(!v.is_empty(), "no vDSO in /proc/self/maps");
    v
}

/// A full image of one small VMA at `BASE`, this kernel's vDSO and vvar, and the VMA `bad`.
fn kernel_image(bad: (u64, u64, u16)) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    let mut h = raw::Header::new_zeroed();
    h.magic = raw::MAGIC;
    h.version_major = raw::VERSION_MAJOR.into();
    h.arch = raw::ARCH_X86_64.into();
    h.page_size = (PS as u32).into();
    h.crid = 5.into();
    w.header(&h).unwrap();
    let mut t = raw::Task::new_zeroed();
    t.pid = 4242.into();
    t.state = b'S';
    w.task(&t).unwrap();
    let mut r = raw::RegsX86_64::new_zeroed();
    r.arch = raw::ARCH_X86_64.into();
    w.regs(&r, &[]).unwrap();
    w.mm(&raw::Mm::new_zeroed(), &[], b"").unwrap();
    let mut vmas = vec![(BASE, BASE + PS, raw::VMA_ANON), bad];
    vmas.extend(special_vmas());
    vmas.sort();
    for (start, end, kind) in vmas {
        let mut v = raw::Vma::new_zeroed();
        (v.start, v.end, v.kind) = (start.into(), end.into(), kind.into());
        v.prot = (raw::PROT_READ | raw::PROT_WRITE).into();
        w.vma(&v, &[]).unwrap();
    }
    w.finish().unwrap();
    w.into_inner()
}
