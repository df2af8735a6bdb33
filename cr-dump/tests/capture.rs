//! Capture of real processes with the real `cr-dump` binary: every region a test program
//! reports is checked page by page against its memory; registers, mm and task fields against
//! /proc; CRIDs under concurrency; the show verb; the lazy library API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_format::raw;
use cr_format::read::Image;
use cr_tests::{assert_running, program, read_mem, state, Page, PageIndex, Run, Target, TempDir};
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const PS: u64 = 4096;

/// `cr-dump` with this test binary's CRID file in its environment.
fn cr() -> Command {
    cr_tests::cr_command(BIN)
}
fn dump(args: &[&str]) -> Output {
    cr().args(args).run()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "cr-dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stat_fields(pid: i32) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let close = s.rfind(')').unwrap();
    // Index 0 is field 3.
    s[close + 1..]
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn stat_u64(f: &[String], n: usize) -> u64 {
    f[n - 3].parse().unwrap()
}

fn status_hex(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = s.lines().find(|l| l.starts_with(key)).unwrap();
    u64::from_str_radix(l.split_once(':').unwrap().1.trim(), 16).unwrap()
}

/// Checkpoints the regions program with `extra` options, leaves it stopped and checks the image
/// against its memory.
fn check_regions(extra: &[&str]) {
    let dir = TempDir::new("regions");
    let file = dir.path().join("mapped");
    let bin = program("regions");
    let t = Target::spawn(&bin, &[file.to_str().unwrap(), "32"]);
    let pid = t.pid();
    let pid_s = pid.to_string();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut args = vec![
        "checkpoint",
        "--pid",
        &pid_s,
        "-o",
        out_dir.to_str().unwrap(),
        "--json",
        "--leave-stopped",
    ];
    args.extend_from_slice(extra);
    let j = json(&dump(&args));
    if extra.contains(&"--twin") {
        assert_eq!(j["snapshot"], "twin", "{j}");
    }
    let crid = j["crid"].as_u64().unwrap();
    let path = PathBuf::from(j["image"].as_str().unwrap());
    // NAME defaults to the comm (the program is built as regions-HASH).
    let fname = path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(fname.starts_with("regions-"), "{fname}");
    assert!(fname.ends_with(&format!(".img.{crid}")), "{fname}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Stopped by SIGSTOP, not traced.
    let (st, tracer) = state(pid).unwrap();
    assert_eq!(
        (st, tracer),
        ('T', 0),
        "target should be left stopped, untraced"
    );

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, j["size"].as_u64().unwrap());
    let img = Image::parse(&bytes).unwrap();
    assert_eq!(img.crid(), crid);
    let idx = PageIndex::new(&img);
    let file_bytes = std::fs::read(&file).unwrap();

    for r in &t.regions {
        // Only the heap block is not page-aligned: check the pages that cover it.
        if r.name != "heap" {
            assert_eq!(r.addr % PS, 0, "{r:?}");
            assert_eq!(r.len % PS, 0, "{r:?}");
        }
        let first = r.addr & !(PS - 1);
        let end = (r.addr + r.len + PS - 1) & !(PS - 1);
        let v = idx.vma(first).unwrap_or_else(|| panic!("no VMA for {r:?}"));
        assert!(v.1 >= end, "{r:?} not inside {v:?}");
        for i in 0..(end - first) / PS {
            let a = first + i * PS;
            let got = idx.pages.get(&a);
            match r.name.as_str() {
                "untouched" => assert!(got.is_none(), "untouched page {a:#x} has a run"),
                "zeros" => assert_eq!(got, Some(&Page::Zero), "zeros page {i}"),
                "file" => {
                    let mem = read_mem(pid, a, PS as usize);
                    let fpage = &file_bytes[(i * PS) as usize..((i + 1) * PS) as usize];
                    if i == 0 || i == 3 {
                        assert_eq!(got, Some(&Page::Data(mem)), "written file page {i}");
                    } else {
                        assert!(got.is_none(), "file page {i} not written but stored");
                        assert_eq!(mem, fpage, "file page {i} differs from the file");
                    }
                }
                "mix" if i % 3 == 2 => assert!(got.is_none(), "mix page {i} never touched"),
                name => {
                    let mem = read_mem(pid, a, PS as usize);
                    match got {
                        Some(Page::Data(d)) => assert_eq!(d, &mem, "{name} page {i} at {a:#x}"),
                        Some(Page::Zero) => {
                            assert!(mem.iter().all(|&b| b == 0), "{name} page {i}: zero run")
                        }
                        Some(Page::Parent) => panic!("parent run in a full image"),
                        None => panic!("{name} page {i} at {a:#x} has no run"),
                    }
                    if name == "mix" {
                        let want = match i % 3 {
                            0 => "data",
                            1 => "zero",
                            _ => "none",
                        };
                        let have = match got {
                            Some(Page::Data(_)) => "data",
                            Some(Page::Zero) => "zero",
                            _ => "none",
                        };
                        assert_eq!(have, want, "mix page {i}");
                    }
                    if name == "big" {
                        assert!(matches!(got, Some(Page::Data(_))), "big page {i}");
                    }
                }
            }
        }
    }
    assert_eq!(t.region("mix").len, 12 * PS);

    // VMA kinds and flags.
    let vmas: Vec<_> = img.vmas().collect();
    let stack = vmas.iter().find(|v| v.kind() == raw::VMA_STACK).unwrap();
    assert_ne!(stack.raw.flags.get() & raw::VMA_GROWSDOWN, 0);
    assert!(vmas.iter().any(|v| v.kind() == raw::VMA_HEAP));
    assert!(vmas.iter().any(|v| v.kind() == raw::VMA_VDSO));
    for v in &vmas {
        if matches!(v.kind(), raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL) {
            for p in (v.start()..v.end()).step_by(PS as usize) {
                assert!(!idx.pages.contains_key(&p), "vdso/vvar page copied");
            }
        }
    }
    let fv = vmas
        .iter()
        .find(|v| v.path == file.to_str().unwrap().as_bytes())
        .unwrap();
    assert_eq!(fv.kind(), raw::VMA_FILE);
    assert_eq!(fv.raw.file_size.get(), file_bytes.len() as u64);
    assert_ne!(fv.raw.inode.get(), 0);

    // Task, mm and registers against /proc of the stopped task.
    let task = img.task().unwrap();
    let sf = stat_fields(pid);
    assert_eq!(task.pid.get() as i32, pid);
    assert_eq!(task.tgid.get() as i32, pid);
    assert_eq!(u64::from(task.ppid.get()), stat_u64(&sf, 4));
    assert_eq!(u64::from(task.pgid.get()), stat_u64(&sf, 5));
    assert_eq!(u64::from(task.sid.get()), stat_u64(&sf, 6));
    assert_eq!(u64::from(task.exit_signal.get()), stat_u64(&sf, 38));
    assert_eq!(&task.comm[..7], b"regions");
    assert_eq!(task.sig_blocked.get(), status_hex(pid, "SigBlk"));
    assert_eq!(task.sig_caught.get(), status_hex(pid, "SigCgt"));
    assert_eq!(task.cap_effective.get(), status_hex(pid, "CapEff"));
    assert!(matches!(task.state, b'S' | b'R'));
    let mm = img.mm().unwrap();
    let m = mm.raw;
    for (got, field) in [
        (m.start_code.get(), 26),
        (m.end_code.get(), 27),
        (m.start_stack.get(), 28),
        (m.start_data.get(), 45),
        (m.end_data.get(), 46),
        (m.start_brk.get(), 47),
        (m.arg_start.get(), 48),
        (m.arg_end.get(), 49),
        (m.env_start.get(), 50),
        (m.env_end.get(), 51),
    ] {
        assert_eq!(got, stat_u64(&sf, field), "stat field {field}");
    }
    let heap = vmas.iter().find(|v| v.kind() == raw::VMA_HEAP).unwrap();
    assert_eq!(m.brk.get(), heap.end());
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap();
    assert_eq!(
        zerocopy::IntoBytes::as_bytes(mm.auxv),
        &auxv[..mm.auxv.len() * 16]
    );
    assert_eq!(
        mm.exe,
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .unwrap()
            .as_os_str()
            .as_encoded_bytes()
    );
    // /proc/PID/syscall of the stopped task: "NR args... SP PC".
    let sc = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap();
    let f: Vec<&str> = sc.split_whitespace().collect();
    let regs = img.regs().unwrap();
    let (rsp, rip) = (regs.gpr(19), regs.gpr(16));
    let hexp = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(hexp(f[f.len() - 2]), rsp, "rsp vs /proc/PID/syscall {sc:?}");
    assert_eq!(hexp(f[f.len() - 1]), rip, "rip vs /proc/PID/syscall {sc:?}");
    if f[0] != "-1" && f[0] != "running" {
        assert_eq!(f[0].parse::<u64>().unwrap(), regs.gpr(15), "orig_rax");
    }
    assert_eq!(regs.gpr(17), 0x33, "cs of a 64-bit task");
    assert_eq!(regs.raw.fxsave.len(), 512);
    assert!(!regs.xsave.is_empty());
    // The stack pointer lies in the [stack] VMA.
    assert!(stack.start() <= rsp && rsp < stack.end());

    // Registers through ptrace: seize the stopped task, read them, compare everything.
    use cr_dump::sys;
    let t = sys::Tracee::seize(pid).unwrap();
    t.interrupt().unwrap();
    let st = t.wait().unwrap();
    assert!(
        matches!(
            st,
            sys::Stop::Group { .. } | sys::Stop::Signal { .. } | sys::Stop::Event { .. }
        ),
        "{st:?}"
    );
    let mut gpr = [0u8; raw::X86_64_GPR_COUNT * 8];
    assert_eq!(t.regset(sys::NT_PRSTATUS, &mut gpr).unwrap(), gpr.len());
    let mut fx = [0u8; 512];
    t.regset(sys::NT_PRFPREG, &mut fx).unwrap();
    t.detach(0).unwrap();
    for (i, c) in gpr.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(c.try_into().unwrap());
        assert_eq!(
            regs.gpr(i),
            v,
            "register {} differs from ptrace",
            cr_dump::inspect::show::GPR_NAMES[i]
        );
    }
    assert_eq!(
        &regs.raw.fxsave[..],
        &fx[..],
        "FXSAVE area differs from ptrace"
    );
}

#[test]
fn regions_lazy() {
    check_regions(&[]);
}

#[test]
fn regions_direct() {
    check_regions(&["--direct"]);
}

#[test]
fn regions_twin() {
    // Every kind of region through a copy-on-write twin (the program is too small for one by
    // default).
    check_regions(&["--twin"]);
}

#[test]
fn lazy_and_direct_store_the_same_pages() {
    let dir = TempDir::new("same");
    let file = dir.path().join("mapped");
    let t = Target::spawn(&program("regions"), &[file.to_str().unwrap(), "8"]);
    let pid = t.pid().to_string();
    let o = dir.path().to_str().unwrap();
    // Stop it so both captures see the same memory (and wait for the stop: a capture racing
    // it could interrupt a sleep whose remaining time the kernel then writes to the stack).
    cr_tests_kill(t.pid(), "STOP");
    while !matches!(cr_tests::state(t.pid()), Some(('T', _)) | None) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let a = json(&dump(&[
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        o,
        "--json",
        "--leave-stopped",
    ]));
    let b = json(&dump(&[
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        o,
        "--json",
        "--leave-stopped",
        "--direct",
    ]));
    // Blocks are reserved for each image before its pages are written, and what it did not
    // use is given back when it is named (ext4 keeps reserved blocks past the end otherwise).
    for j in [&a, &b] {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(j["image"].as_str().unwrap()).unwrap();
        assert!(
            md.blocks() * 512 <= md.size() + (64 << 10),
            "{} bytes, {} allocated: {j}",
            md.size(),
            md.blocks() * 512
        );
    }
    let ia = std::fs::read(a["image"].as_str().unwrap()).unwrap();
    let ib = std::fs::read(b["image"].as_str().unwrap()).unwrap();
    let (ga, gb) = (Image::parse(&ia).unwrap(), Image::parse(&ib).unwrap());
    let (mut pa, mut pb) = (PageIndex::new(&ga), PageIndex::new(&gb));
    // The kernel writes the CPU number into the task's rseq area whenever the task returns to
    // user mode, and each capture resumes it for its injected questions (signal actions,
    // timers, attributes): the area may differ between two captures, and only it.
    for (idx, img) in [(&mut pa, &ga), (&mut pb, &gb)] {
        let p = img.process().expect("a Process record");
        let (at, len) = (p.raw.rseq_addr.get(), u64::from(p.raw.rseq_len.get()));
        for a in at..at + len {
            let page = a & !4095;
            if let Some(Page::Data(d)) = idx.pages.get_mut(&page) {
                d[(a - page) as usize] = 0;
            }
        }
    }
    assert_eq!(pa.vmas, pb.vmas);
    assert_eq!(pa.pages, pb.pages);
    assert_eq!(a["data_pages"], b["data_pages"]);
}

fn cr_tests_kill(pid: i32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .run_status();
    assert!(st.success());
}

#[test]
fn target_continues_by_default_and_show_renders() {
    let dir = TempDir::new("cont");
    let t = Target::spawn(&program("misc"), &["spin"]);
    let pid = t.pid().to_string();
    let out = dump(&[
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for k in [
        "crid",
        "image",
        "size",
        "downtime",
        "capture",
        "write-back",
        "total",
    ] {
        assert!(text.contains(k), "{k} missing from {text}");
    }
    assert_running(t.pid());
    let entries = dir.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].starts_with("misc-"));
    let img = dir.path().join(&entries[0]);
    let show = dump(&["show", img.to_str().unwrap()]);
    assert!(show.status.success());
    let s = String::from_utf8(show.stdout).unwrap();
    for k in [
        "crid", "x86-64", "misc", "rip", "rsp", "[heap]", "[stack]", "[vdso]", "brk",
    ] {
        assert!(s.contains(k), "{k} missing from show:\n{s}");
    }
    // A corrupt image: exit 1 with the offset.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[100] ^= 0xff;
    let bad = dir.path().join("bad.img");
    std::fs::write(&bad, &bytes).unwrap();
    let o = dump(&["show", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("offset"));
}

#[test]
fn command_form_starts_checkpoints_and_kills() {
    let dir = TempDir::new("cmd");
    let spin = program("misc");
    let out = dump(&[
        "checkpoint",
        "-o",
        dir.path().to_str().unwrap(),
        "--json",
        "--after",
        "0.2",
        "--name",
        "demo",
        "--",
        spin.to_str().unwrap(),
        "spin",
    ]);
    let j = json(&out);
    let pid = j["pid"].as_i64().unwrap() as i32;
    let img = std::fs::read(j["image"].as_str().unwrap()).unwrap();
    Image::parse(&img).unwrap();
    assert!(j["image"]
        .as_str()
        .unwrap()
        .ends_with(&format!("demo.img.{}", j["crid"].as_u64().unwrap())));
    // Killed and reaped by cr-dump.
    assert!(state(pid).is_none(), "the started command should be gone");
    // A command that exits before the checkpoint.
    let o = dump(&[
        "checkpoint",
        "-o",
        dir.path().to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exited before the checkpoint"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(dump(&["checkpoint"]).status.code(), Some(2));
    assert_eq!(
        dump(&["checkpoint", "--pid", "1", "--", "true"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(dump(&["nonsense"]).status.code(), Some(2));
    assert_eq!(
        dump(&["checkpoint", "--pid", "1", "--kill", "--leave-stopped"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn concurrent_checkpoints_get_unique_crids() {
    // Its in-process part draws CRIDs from the file named by the environment.
    if !cr_tests::in_child_with_env(
        "concurrent_checkpoints_get_unique_crids",
        "CR_CRID_FILE",
        cr_tests::crid_file(),
    ) {
        return;
    }
    let dir = TempDir::new("crids");
    let targets: Vec<Target> = (0..4)
        .map(|_| Target::spawn(&program("misc"), &["spin"]))
        .collect();
    let o = dir.path().to_str().unwrap().to_string();
    let handles: Vec<_> = targets
        .iter()
        .flat_map(|t| {
            let pid = t.pid().to_string();
            let o = o.clone();
            (0..2).map(move |k| {
                let pid = pid.clone();
                let o = o.clone();
                std::thread::spawn(move || {
                    // Two runs per target, one after the other (a task has one tracer at a time).
                    let _ = k;
                    (0..2)
                        .map(|_| {
                            let out = cr()
                                .args(["checkpoint", "--pid", &pid, "-o", &o, "--json"])
                                .run();
                            let crid = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                                .ok()
                                .and_then(|j| j["crid"].as_u64());
                            if crid.is_none() {
                                // The only acceptable failure: the other thread holds the task.
                                let err = String::from_utf8_lossy(&out.stderr);
                                assert!(err.contains("already traced"), "{err}");
                                assert_eq!(out.status.code(), Some(1));
                            }
                            crid
                        })
                        .collect::<Vec<_>>()
                })
            })
        })
        .collect();
    let crids: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .flatten()
        .collect();
    // Two threads per target race for the same task: some attempts are refused ("already
    // traced"); those that succeed must all have distinct CRIDs.
    assert!(crids.len() >= 4, "{crids:?}");
    let mut u = crids.clone();
    u.sort_unstable();
    u.dedup();
    assert_eq!(u.len(), crids.len(), "duplicate CRIDs: {crids:?}");
    for t in &targets {
        assert_running(t.pid());
    }
    // In-process: threads drawing CRIDs.
    let hs: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                (0..50)
                    .map(|_| cr_dump::crid::next().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cr_tests::crid_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn lazy_library_api() {
    // The library draws the CRIDs from the file named by the environment.
    if !cr_tests::in_child_with_env("lazy_library_api", "CR_CRID_FILE", cr_tests::crid_file()) {
        return;
    }
    let t = Target::spawn(&program("misc"), &["spin"]);
    let reg = cr_dump::Registry::new();
    let lazy = reg
        .checkpoint_lazy(t.pid(), &cr_dump::Options::default())
        .unwrap();
    // Resumed at once, before any write-back.
    assert_running(t.pid());
    assert!(lazy.stats.downtime <= lazy.stats.capture);
    let mut a = Vec::new();
    let sa = reg.writeback(lazy.crid, &mut a).unwrap();
    assert_eq!(sa.image_len as usize, a.len());
    // Write-back to a socket.
    let (mut rd, wr) = std::os::unix::net::UnixStream::pair().unwrap();
    let crid = lazy.crid;
    let reg = std::sync::Arc::new(reg);
    let r2 = reg.clone();
    let th = std::thread::spawn(move || r2.writeback(crid, wr).unwrap());
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut rd, &mut b).unwrap();
    th.join().unwrap();
    assert_eq!(a, b);
    let img = Image::parse(&a).unwrap();
    assert_eq!(img.crid(), lazy.crid);
    assert_eq!(reg.crids(), vec![lazy.crid]);
    reg.discard(lazy.crid).unwrap();
    assert!(matches!(
        reg.writeback(lazy.crid, std::io::sink()),
        Err(cr_dump::Error::UnknownCrid(_))
    ));
    // The buffer is reused by the next checkpoint.
    let l2 = reg
        .checkpoint_lazy(t.pid(), &cr_dump::Options::default())
        .unwrap();
    assert!(l2.crid > lazy.crid);
    reg.discard(l2.crid).unwrap();
}

#[test]
fn kill_after_checkpoint() {
    let dir = TempDir::new("kill");
    let mut t = Target::spawn(&program("misc"), &["spin"]);
    let pid = t.pid().to_string();
    let j = json(&dump(&[
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        dir.path().to_str().unwrap(),
        "--json",
        "--kill",
    ]));
    Image::parse(&std::fs::read(j["image"].as_str().unwrap()).unwrap()).unwrap();
    let st = cr_tests::wait_timeout(&mut t.child, cr_tests::process_timeout());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9), "{st:?}");
}

#[test]
fn direct_mode_memory_is_bounded() {
    let dir = TempDir::new("bounded");
    let t = Target::spawn(&program("fill"), &["256"]);
    let pid = t.pid().to_string();
    let o = dir.path().to_str().unwrap();
    let j = json(&dump(&[
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        o,
        "--json",
        "--direct",
    ]));
    assert!(j["data_pages"].as_u64().unwrap() >= 256 * 256);
    let rss = j["peak_rss_kib"].as_u64().unwrap();
    assert!(rss < 64 * 1024, "direct mode peak RSS {rss} KiB");
    // The image holds the pattern.
    let bytes = std::fs::read(j["image"].as_str().unwrap()).unwrap();
    let idx = PageIndex::new(&Image::parse(&bytes).unwrap());
    let r = t.region("big");
    for a in (r.addr..r.addr + r.len).step_by(PS as usize * 97) {
        assert_eq!(
            idx.pages.get(&a),
            Some(&Page::Data(read_mem(t.pid(), a, PS as usize)))
        );
    }
    assert_running(t.pid());
}
