//! Shared helpers of the end-to-end tests: C test programs compiled with gcc, target processes
//! killed when dropped, `/proc` probes, and an index of an image's pages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_format::read::{Image, Record, RunKind};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Marks every descriptor of this test process above 2 close-on-exec, once: the programs the
/// tests start then hold only what they open. A test process can inherit others (a pipe of the
/// environment, cargo's jobserver), and an image records them: a pipe whose other end is
/// outside the task makes restore refuse it (as it should), which is not what those tests
/// test. Called by [`TempDir::new`], [`program`] and [`Run`].
pub fn no_inherited_fds() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: close_range takes integers; CLOSE_RANGE_CLOEXEC only sets a flag.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
    });
}

/// How long a test waits for a process (or a line from it) before it calls it a hang: long
/// enough for the slowest checkpoint or restore on a loaded 2-core machine, short enough that a
/// hang fails in a minute instead of using CI's whole budget. `CR_TEST_TIMEOUT` (seconds)
/// overrides it.
pub fn process_timeout() -> Duration {
    let secs = std::env::var("CR_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    Duration::from_secs(secs)
}

/// Waits for `child` at most `limit`; a child still running then is killed, reaped, and the
/// test fails naming it.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pid {} still running after {limit:?}: killed", child.id());
        }
        std::thread::sleep(nap);
        // Short processes are seen at once, long ones are not polled a thousand times a second.
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// `Child::wait_with_output` with a time limit ([`wait_timeout`]); the pipes are drained by
/// threads so a child that writes much never blocks on a full pipe.
pub fn output_timeout(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let (tx, rx) = channel();
    for (i, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut b);
            }
            let _ = tx.send((i, b));
        });
    }
    drop(tx);
    let status = wait_timeout(&mut child, limit);
    let mut bufs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        // A process it left behind may still hold the pipes: that is a hang too.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        let (i, b) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("pid {}: output still open after it exited", child.id()));
        bufs[i] = b;
    }
    let [stdout, stderr] = bufs;
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `Command::output` and `Command::status` with the time limit of [`process_timeout`].
pub trait Run {
    /// Runs to completion with stdout and stderr captured and stdin from /dev/null.
    fn run(&mut self) -> Output;
    /// Runs to completion with the test's stdio.
    fn run_status(&mut self) -> ExitStatus;
}

impl Run for Command {
    fn run(&mut self) -> Output {
        no_inherited_fds();
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{self:?}: {e}"));
        output_timeout(child, process_timeout())
    }
    fn run_status(&mut self) -> ExitStatus {
        no_inherited_fds();
        let mut child = self.spawn().unwrap_or_else(|e| panic!("{self:?}: {e}"));
        wait_timeout(&mut child, process_timeout())
    }
}

/// Reads `r` line by line on a thread, so the lines can be waited for with a time limit
/// ([`next_line_timeout`]); the channel closes at end of file.
pub fn line_reader<R: Read + Send + 'static>(r: R) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        loop {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(n) if n > 0 => {
                    if tx.send(l.trim_end().to_string()).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    rx
}

/// The next line from a [`line_reader`], `None` at end of file; a line that does not come within
/// [`process_timeout`] fails the test.
pub fn next_line_timeout(rx: &Receiver<String>, what: &str) -> Option<String> {
    match rx.recv_timeout(process_timeout()) {
        Ok(l) => Some(l),
        Err(RecvTimeoutError::Disconnected) => None,
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: no line within {:?}", process_timeout())
        }
    }
}

/// The line a target program writes to `dir/sum.PID` (whole: it writes a temporary file and
/// renames it), read and removed once there; panics after 60 s without it.
pub fn wait_sum(dir: &Path, pid: u32) -> String {
    let path = dir.join(format!("sum.{pid}"));
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if let Ok(s) = std::fs::read_to_string(&path) {
            if !s.trim().is_empty() {
                let _ = std::fs::remove_file(&path);
                return s.trim().to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no line in {} from pid {pid} within 60 s", path.display());
}

/// This test process's CRID file (cr-dump's checkpoint ids): `CR_CRID_FILE` when set (a test
/// run again in a child process: the same file as its parent's), else one per test process in
/// the temporary directory, named after the test binary, so that test binaries running at the
/// same time never share one.
pub fn crid_file() -> &'static Path {
    static F: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        if let Some(p) = std::env::var_os("CR_CRID_FILE") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().ok();
        let name = exe
            .as_deref()
            .and_then(Path::file_stem)
            .and_then(|s| s.to_str())
            .unwrap_or("test");
        std::env::temp_dir().join(format!("cr-test-crid-{name}-{}", std::process::id()))
    })
}

/// Program `bin` (cr-dump) with [`crid_file`] in its environment. The variable is never set in
/// the test process itself, whose other threads start processes of their own.
pub fn cr_command(bin: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("CR_CRID_FILE", crid_file());
    c
}

/// Reports a legitimately skipped test (or part of one) where CI's closing line counts it:
/// `SKIPPED: <test>: <why>` on stderr, written past the test harness's output capture. Only for
/// what the machine cannot provide (no IA-32 emulation, not root); a missing tool CI installs is
/// a failure instead.
pub fn skipped(test: &str, why: &str) {
    // One write of the whole line, so that lines of parallel tests do not interleave.
    let _ = std::io::stderr().write_all(format!("SKIPPED: {test}: {why}\n").as_bytes());
}

/// Like [`skipped`] for one case of a test whose other cases ran (the test still counts as
/// passed): `SKIPPED (part): <test>: <why>`.
pub fn skipped_part(test: &str, why: &str) {
    let _ = std::io::stderr().write_all(format!("SKIPPED (part): {test}: {why}\n").as_bytes());
}

/// The directory of the C test programs.
pub fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs")
}

static COMPILE: Mutex<()> = Mutex::new(());

/// Compiles `tests/programs/NAME.c` with gcc (once per source version) and returns the binary.
pub fn program(name: &str) -> PathBuf {
    no_inherited_fds();
    let _g = COMPILE.lock().unwrap_or_else(|e| e.into_inner());
    let src = programs_dir().join(format!("{name}.c"));
    let text = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let hash = crc32(&text);
    let dir = std::env::temp_dir().join(format!("cr-tests-programs-{}", unsafe_free_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join(format!("{name}-{hash:08x}"));
    if bin.exists() {
        return bin;
    }
    let tmp = dir.join(format!("{name}-{hash:08x}.tmp{}", std::process::id()));
    let out = Command::new("gcc")
        .args(["-O0", "-g", "-pthread", "-o"])
        .arg(&tmp)
        .arg(&src)
        .run();
    assert!(
        out.status.success(),
        "gcc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}

fn unsafe_free_uid() -> u32 {
    // The owner of /proc/self is our uid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

fn crc32(b: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A region a test program reported: `region NAME ADDR LEN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Name.
    pub name: String,
    /// Address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A running test program; killed and reaped when dropped.
pub struct Target {
    /// The process.
    pub child: Child,
    /// Regions it reported.
    pub regions: Vec<Region>,
    /// Other lines it printed before `ready`.
    pub lines: Vec<String>,
    stdout: Receiver<String>,
}

impl Target {
    /// Starts `bin ARGS`, reads its stdout up to `ready`.
    pub fn spawn(bin: &Path, args: &[&str]) -> Target {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = line_reader(child.stdout.take().unwrap());
        let mut regions = Vec::new();
        let mut lines = Vec::new();
        loop {
            let Ok(l) = out.recv_timeout(process_timeout()) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} ended or hung before `ready`: {lines:?}", bin.display());
            };
            if l == "ready" {
                break;
            }
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() == 4 && f[0] == "region" {
                regions.push(Region {
                    name: f[1].to_string(),
                    addr: u64::from_str_radix(f[2], 16).unwrap(),
                    len: u64::from_str_radix(f[3], 16).unwrap(),
                });
            } else {
                lines.push(l);
            }
        }
        Target {
            child,
            regions,
            lines,
            stdout: out,
        }
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// The next line it prints after `ready` (without the newline; empty at end of file); one
    /// that does not come within [`process_timeout`] fails the test.
    pub fn next_line(&mut self) -> String {
        next_line_timeout(&self.stdout, "target output").unwrap_or_default()
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> &Region {
        self.regions
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no region {name}"))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `State` letter and `TracerPid` of `/proc/PID/status`.
pub fn state(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut st = None;
    let mut tr = None;
    for l in s.lines() {
        if let Some(v) = l.strip_prefix("State:") {
            st = v.trim().chars().next();
        }
        if let Some(v) = l.strip_prefix("TracerPid:") {
            tr = v.trim().parse().ok();
        }
    }
    Some((st?, tr?))
}

/// Asserts the task runs on: not stopped, not traced (waits a little for the state to settle).
pub fn assert_running(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = state(pid);
        match s {
            Some((c, 0)) if c != 'T' && c != 't' && c != 'Z' && c != 'X' => return,
            _ if Instant::now() > deadline => panic!("pid {pid} is not running untraced: {s:?}"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Reads `len` bytes of `pid`'s memory at `addr` through `/proc/PID/mem`.
pub fn read_mem(pid: i32, addr: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, addr).unwrap();
    b
}

/// Where a page is in an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    /// Stored data.
    Data(Vec<u8>),
    /// A zero run.
    Zero,
    /// A parent run.
    Parent,
}

/// Every page with a run in `img`, by address, and the VMA ranges.
pub struct PageIndex {
    /// Pages with runs.
    pub pages: HashMap<u64, Page>,
    /// VMAs: start, end, kind, path.
    pub vmas: Vec<(u64, u64, u16, String)>,
}

impl PageIndex {
    /// Indexes `img`.
    pub fn new(img: &Image<'_>) -> PageIndex {
        let ps = u64::from(img.page_size());
        let mut pages = HashMap::new();
        let mut vmas = Vec::new();
        for r in img.records() {
            match r.record {
                Record::Vma(v) => vmas.push((
                    v.start(),
                    v.end(),
                    v.kind(),
                    String::from_utf8_lossy(v.path).into_owned(),
                )),
                Record::Pages(p) => {
                    for run in p.iter() {
                        for i in 0..u64::from(run.pages) {
                            let a = run.addr + i * ps;
                            let page = match run.kind {
                                RunKind::Data => {
                                    let d = run.data.unwrap();
                                    let o = (i * ps) as usize;
                                    Page::Data(d[o..o + ps as usize].to_vec())
                                }
                                RunKind::Zero => Page::Zero,
                                RunKind::Parent => Page::Parent,
                            };
                            assert!(pages.insert(a, page).is_none(), "page {a:#x} twice");
                        }
                    }
                }
                _ => {}
            }
        }
        PageIndex { pages, vmas }
    }

    /// The VMA holding `addr`.
    pub fn vma(&self, addr: u64) -> Option<&(u64, u64, u16, String)> {
        self.vmas.iter().find(|v| v.0 <= addr && addr < v.1)
    }
}

/// A temporary directory, removed (with its contents) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        no_inherited_fds();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cr-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Names in the directory, hidden ones included.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// For an in-process test of the library that needs an environment variable (the library reads
/// `CR_CRID_FILE` from the environment): returns `true` in a child process of this test binary
/// that runs test `name` alone with `key=value` set, where the caller runs its body; elsewhere
/// runs that child, asserts that the test passed there, and returns `false`. Setting the variable
/// in this process instead would race with other test threads starting processes.
pub fn in_child_with_env(name: &str, key: &str, value: &Path) -> bool {
    if std::env::var_os(key).as_deref() == Some(value.as_os_str()) {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(key, value)
        .run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in a child with {key}={}: {}\n{stdout}\n{}",
        value.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
