//! What the incremental tests share (`incremental.rs`, `track_twin.rs`): the `incr` program
//! driven through its stdin, `cr-dump` with a CRID file of the test binary's own, and the check
//! that an image's chain resolves to the program's memory page for page.
// Each test binary uses a part of it.
#![allow(dead_code)]

use cr_dump::inspect::{self, Page};
use cr_format::raw;
use cr_tests::{program, Run};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
pub const PS: u64 = 4096;

pub fn crid_file() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        // Given by the environment (a test run again in a child process): used as is.
        if let Some(p) = std::env::var_os("CR_CRID_FILE") {
            return PathBuf::from(p);
        }
        std::env::temp_dir().join(format!("cr-test-incr-crid-{}", std::process::id()))
    })
}

/// `cr-dump` with this binary's CRID file in its environment (never set in this process, whose
/// other test threads start processes).
pub fn cr() -> Command {
    let mut c = Command::new(BIN);
    c.env("CR_CRID_FILE", crid_file());
    c
}
pub fn dump(args: &[&str]) -> Output {
    cr().args(args).run()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cr-dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// The incr program, driven through its stdin.
pub struct Prog {
    pub child: Child,
    pub stdin: ChildStdin,
    pub out: Receiver<String>,
    pub regions: BTreeMap<String, (u64, u64)>,
}

impl Prog {
    /// The program with a region of `pages` pages.
    pub fn spawn_with(pages: u64) -> Prog {
        Prog::spawn_env(pages, &[])
    }

    /// The same with `env` set: e.g. no rseq area, which the kernel rewrites (the CPU number)
    /// whenever the task returns to user mode, as it does for every call a checkpoint injects,
    /// so two checkpoints of the stopped task would see different bytes there.
    pub fn spawn_env(pages: u64, env: &[(&str, &str)]) -> Prog {
        let bin = program("incr");
        let mut child = Command::new(bin)
            .arg(pages.to_string())
            .envs(env.iter().copied())
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

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn wait_ready(&mut self) {
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
    pub fn cmd(&mut self, c: &str) {
        self.send(c);
        self.wait_ready();
    }

    /// Sends a command without waiting.
    pub fn send(&mut self, c: &str) {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn region(&self, n: &str) -> (u64, u64) {
        self.regions[n]
    }

    pub fn cont(&self) {
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
pub fn maps(pid: i32) -> Vec<(u64, u64, String, bool)> {
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
pub fn memory(pid: i32) -> BTreeMap<u64, Vec<u8>> {
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

/// Checkpoints `p` into `dir` (image name `incr`) with `extra` options, the task left
/// stopped: the JSON report.
pub fn checkpoint_stopped_json(p: &Prog, dir: &Path, extra: &[&str]) -> serde_json::Value {
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
    json(&dump(&args))
}

/// Checkpoints `pid` (left stopped) with `extra` options; returns the JSON report and the
/// memory at that moment; lets the task go on.
pub fn checkpoint(
    p: &Prog,
    dir: &Path,
    extra: &[&str],
) -> (serde_json::Value, BTreeMap<u64, Vec<u8>>) {
    let j = checkpoint_stopped_json(p, dir, extra);
    let m = memory(p.pid());
    p.cont();
    (j, m)
}

pub fn image_path(j: &serde_json::Value) -> PathBuf {
    PathBuf::from(j["image"].as_str().unwrap())
}

/// Resolves every page of every VMA of `image`'s chain (except the kernel's areas) and checks
/// it against `mem`; also that the image's VMAs are exactly the mappings `mem` came from.
pub fn check_chain_memory(image: &Path, mem: &BTreeMap<u64, Vec<u8>>) {
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
