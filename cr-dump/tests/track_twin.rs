//! Arming write-protect dirty tracking while a copy-on-write twin is made (issue 14): a full
//! `--track` checkpoint of a task large enough for a twin stops it for the arming and a fork,
//! not for a copy of its memory; the tracked incremental over it stores only the written pages,
//! and its chain resolves to the same memory as a full checkpoint taken at the same moment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_dump::inspect::{self, Page};
use cr_format::raw;
use cr_tests::{program, Run, TempDir};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const PS: u64 = 4096;
/// Pages of the program's big region (64 MiB: more than a twin's threshold, 32 MiB).
const PAGES: u64 = 16384;
/// Pages rewritten between the checkpoints.
const REWRITE: u64 = 300;

fn crid_file() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        // Given by the environment (a test run again in a child process): used as is.
        if let Some(p) = std::env::var_os("CR_CRID_FILE") {
            return PathBuf::from(p);
        }
        std::env::temp_dir().join(format!("cr-test-track-twin-crid-{}", std::process::id()))
    })
}

/// `cr-dump` with this binary's CRID file in its environment (never set in this process, whose
/// other test threads start processes).
fn cr() -> Command {
    let mut c = Command::new(BIN);
    c.env("CR_CRID_FILE", crid_file());
    c
}
fn dump(args: &[&str]) -> Output {
    cr().args(args).run()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cr-dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// The incr program, driven through its stdin.
struct Prog {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<String>,
    regions: BTreeMap<String, (u64, u64)>,
}

impl Prog {
    fn spawn_with(pages: u64) -> Prog {
        let bin = program("incr");
        let mut child = Command::new(bin)
            .arg(pages.to_string())
            // No rseq area: the kernel rewrites it (the CPU number) whenever the task returns
            // to user mode, as it does for every system call a checkpoint injects, so two
            // checkpoints of the stopped task would see different bytes there.
            .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = cr_tests::line_reader(child.stdout.take().unwrap());
        let mut p = Prog {
            child,
            stdin,
            out,
            regions: BTreeMap::new(),
        };
        p.wait_ready();
        p
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn wait_ready(&mut self) {
        loop {
            let l = cr_tests::next_line_timeout(&self.out, "incr").expect("incr ended");
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["ready"] => return,
                ["region", n, a, len] => {
                    self.regions.insert(
                        n.to_string(),
                        (
                            u64::from_str_radix(a, 16).unwrap(),
                            u64::from_str_radix(len, 16).unwrap(),
                        ),
                    );
                }
                _ => panic!("incr said {l:?}"),
            }
        }
    }

    /// Sends a command and waits for `ready` (the program must be running).
    fn cmd(&mut self, c: &str) {
        self.send(c);
        self.wait_ready();
    }

    /// Sends a command without waiting.
    fn send(&mut self, c: &str) {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn cont(&self) {
        let st = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .run_status();
        assert!(st.success());
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mapping of /proc/PID/maps: start, end, path.
fn maps(pid: i32) -> Vec<(u64, u64, String, bool)> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = f[0].split_once('-').unwrap();
            (
                u64::from_str_radix(s, 16).unwrap(),
                u64::from_str_radix(e, 16).unwrap(),
                f.get(5).map_or(String::new(), |s| s.to_string()),
                f[1].as_bytes()[3] == b's',
            )
        })
        .collect()
}

/// The task's memory now, page by page (private mappings but the kernel's special areas).
fn memory(pid: i32) -> BTreeMap<u64, Vec<u8>> {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = BTreeMap::new();
    for (s, e, path, shared) in maps(pid) {
        if shared || path.starts_with("[v") {
            continue;
        }
        let mut a = s;
        while a < e {
            let mut b = vec![0u8; PS as usize];
            mem.read_exact_at(&mut b, a)
                .unwrap_or_else(|err| panic!("read {a:#x} of {pid}: {err}"));
            out.insert(a, b);
            a += PS;
        }
    }
    out
}

/// Checkpoints `pid` (left stopped) with `extra` options; returns the JSON report and the
/// memory at that moment; lets the task go on.
fn checkpoint(p: &Prog, dir: &Path, extra: &[&str]) -> (serde_json::Value, BTreeMap<u64, Vec<u8>>) {
    let pid = p.pid().to_string();
    let mut args = vec![
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        dir.to_str().unwrap(),
        "--name",
        "incr",
        "--json",
        "--leave-stopped",
    ];
    args.extend_from_slice(extra);
    let j = json(&dump(&args));
    let m = memory(p.pid());
    p.cont();
    (j, m)
}

fn image_path(j: &serde_json::Value) -> PathBuf {
    PathBuf::from(j["image"].as_str().unwrap())
}

/// Resolves every page of every VMA of `image`'s chain (except the kernel's areas) and checks
/// it against `mem`; also that the image's VMAs are exactly the mappings `mem` came from.
fn check_chain_memory(image: &Path, mem: &BTreeMap<u64, Vec<u8>>) {
    let files = inspect::ChainFiles::open(image).unwrap();
    let chain = files.parse(inspect::Parse::Full).unwrap();
    let idx = chain.index();
    idx.check_parent_refs().unwrap();
    let mut seen = 0usize;
    for v in chain.top().vmas() {
        if matches!(v.kind(), raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL) {
            continue;
        }
        let mut a = v.start();
        while a < v.end() {
            let want = mem
                .get(&a)
                .unwrap_or_else(|| panic!("{}: page {a:#x} is not in the task", image.display()));
            match inspect::page_content(idx, a, PS) {
                Page::Bytes(b) => assert!(
                    b.as_ref() == want.as_slice(),
                    "{}: page {a:#x} differs from the task's memory: {:?} resolves to {:x?}, \
                     the task has {:x?}",
                    image.display(),
                    idx.resolve(a).map(|r| match r {
                        cr_format::chain::Resolved::Data { crid, .. } => ("data", crid),
                        cr_format::chain::Resolved::Zero { crid } => ("zero", crid),
                        cr_format::chain::Resolved::NotPresent { crid, .. } => ("none", crid),
                    }),
                    &b[..16],
                    &want[..16]
                ),
                Page::Zero => assert!(
                    want.iter().all(|&x| x == 0),
                    "{}: page {a:#x} resolves to zero, the task's is not",
                    image.display()
                ),
                Page::Unavailable(why) => panic!("{}: page {a:#x}: {why}", image.display()),
            }
            seen += 1;
            a += PS;
        }
    }
    assert_eq!(
        seen,
        mem.len(),
        "{}: VMAs cover the task's pages",
        image.display()
    );
}

#[test]
fn tracked_incremental_after_a_twin_armed_full_is_a_full_checkpoints_memory() {
    let dir = TempDir::new("track-twin");
    let full = TempDir::new("track-twin-full");
    let mut p = Prog::spawn_with(PAGES);
    p.cmd("map a 16");
    let (j1, m1) = checkpoint(&p, dir.path(), &["--track"]);
    assert_eq!(
        j1["snapshot"], "twin",
        "the full --track checkpoint made no twin: {j1}"
    );
    assert_eq!(
        j1["tracking_armed"], true,
        "--track did not arm write-protect tracking: {j1}"
    );
    check_chain_memory(&image_path(&j1), &m1);
    p.cmd(&format!("rewrite {REWRITE} 1"));
    p.cmd("drop a 4");
    p.cmd("map c 8");
    // The tracked incremental, then a full checkpoint of the task still stopped by it.
    let (j2, m2) = checkpoint_stopped(&p, dir.path(), &["--incremental"]);
    // Direct: a checkpoint that leaves tracking and its baseline alone.
    let (j3, m3) = checkpoint(&p, full.path(), &["--direct"]);
    assert_eq!(j2["diff_method"], "write-tracking", "{j2}");
    assert_eq!(j2["parent_crid"], j1["crid"], "{j2}");
    assert!(j2["tracked_vmas"].as_u64().unwrap() >= 1, "{j2}");
    let data = j2["data_pages"].as_u64().unwrap();
    assert!(
        (REWRITE..REWRITE + 60).contains(&data),
        "data pages {data}, rewritten {REWRITE}: {j2}"
    );
    assert_eq!(j3["parent_crid"], 0, "{j3}");
    assert_eq!(m2, m3, "the task changed between the two checkpoints");
    check_chain_memory(&image_path(&j2), &m2);
    check_chain_memory(&image_path(&j3), &m3);
    // Tracking stays armed: one more tracked incremental over the tracked one.
    p.cmd(&format!("rewrite {REWRITE} 2"));
    let (j4, m4) = checkpoint(&p, dir.path(), &["--incremental"]);
    assert_eq!(j4["diff_method"], "write-tracking", "{j4}");
    check_chain_memory(&image_path(&j4), &m4);
}

/// [`checkpoint`], the task left stopped.
fn checkpoint_stopped(
    p: &Prog,
    dir: &Path,
    extra: &[&str],
) -> (serde_json::Value, BTreeMap<u64, Vec<u8>>) {
    let pid = p.pid().to_string();
    let mut args = vec![
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        dir.to_str().unwrap(),
        "--name",
        "incr",
        "--json",
        "--leave-stopped",
    ];
    args.extend_from_slice(extra);
    let j = json(&dump(&args));
    (j, memory(p.pid()))
}
