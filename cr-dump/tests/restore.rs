//! Restore of real processes with the real `cr-dump` binary: a program that keeps a running
//! checksum over its memory is checkpointed at a random moment and killed, restored, and must
//! continue from exactly the step where it stopped and end with the result of an uninterrupted
//! run; the same twice from one image, and from CRID 3 of an incremental chain; a changed
//! mapped file is refused before anything starts; --detach, --pid-file and --stopped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{program, Run, TempDir};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const STEPS: &str = "150";

/// `cr-dump` with this test binary's CRID file in its environment.
fn cr() -> Command {
    cr_tests::cr_command(BIN)
}
fn dump(args: &[&str]) -> Output {
    cr().args(args).run()
}

/// The lines of an uninterrupted run.
fn reference(args: &[&str]) -> Vec<String> {
    static R: OnceLock<Vec<String>> = OnceLock::new();
    let run = || {
        let out = Command::new(program("restore_count")).args(args).run();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    if args == [STEPS] {
        R.get_or_init(run).clone()
    } else {
        run()
    }
}

/// The program running with its stdout read line by line on a thread.
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(program("restore_count"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Reads lines until `step N` (N at least `n`).
    fn wait_step(&mut self, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.last_step() < n {
            let l = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the program stopped printing");
            self.seen.push(l);
        }
    }

    /// Reads the remaining lines (the program was killed) and reaps it.
    fn finish(&mut self) {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(l);
        }
        let _ = self.child.wait();
    }

    fn last_step(&self) -> u32 {
        self.seen.iter().rev().find_map(|l| step_of(l)).unwrap_or(0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn step_of(l: &str) -> Option<u32> {
    l.strip_prefix("step ")?.split(' ').next()?.parse().ok()
}

/// Checkpoints `pid` into `dir` with `extra` options; the image path.
fn checkpoint(pid: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "checkpoint",
        "--pid",
        pid,
        "-o",
        dir.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = dump(&args);
    assert!(
        out.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(j["image"].as_str().unwrap())
}

fn restore(image: &Path) -> Output {
    dump(&["restore", image.to_str().unwrap()])
}

/// The restored run's output continues the original's at step `last + 1` and matches the
/// uninterrupted run line for line to the end.
fn assert_continues(out: &Output, last: u32, reference: &[String]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore failed: {stderr}");
    let got: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    // `reference` is `ready`, then step 1.. at index 1..
    let want: Vec<&str> = reference[1 + last as usize..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        got.first().copied(),
        want.first().copied(),
        "the restored task does not continue at step {} (stderr: {stderr})",
        last + 1
    );
    assert_eq!(got, want, "stderr: {stderr}");
    assert!(got.last().unwrap().starts_with("result "));
}

/// A pseudo-random step to checkpoint at (varies from run to run).
fn random_step(lo: u32, span: u32) -> u32 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    lo + (n ^ std::process::id()) % span
}

#[test]
fn restore_continues_where_it_stopped() {
    let reference = reference(&[STEPS]);
    let dir = TempDir::new("restore");
    let mut r = Running::start(&[STEPS]);
    r.wait_step(random_step(10, 80));
    let img = checkpoint(&r.pid(), dir.path(), &["--kill"]);
    r.finish();
    let last = r.last_step();
    assert!(last > 0 && last < 150);
    assert_eq!(r.seen[..], reference[..r.seen.len()]);
    let out = restore(&img);
    assert_continues(&out, last, &reference);
}

#[test]
fn restore_twice_from_one_image() {
    let reference = reference(&[STEPS]);
    let dir = TempDir::new("restore2");
    let mut r = Running::start(&[STEPS]);
    r.wait_step(random_step(20, 60));
    let img = checkpoint(&r.pid(), dir.path(), &["--kill"]);
    r.finish();
    let last = r.last_step();
    // Two at once: independent processes from one image.
    let a = std::thread::spawn({
        let img = img.clone();
        move || restore(&img)
    });
    let b = restore(&img);
    let a = a.join().unwrap();
    assert_continues(&a, last, &reference);
    assert_continues(&b, last, &reference);
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn restore_from_crid_3_of_an_incremental_chain() {
    let reference = reference(&[STEPS]);
    let dir = TempDir::new("restore-incr");
    let mut r = Running::start(&[STEPS]);
    r.wait_step(random_step(5, 20));
    let i1 = checkpoint(&r.pid(), dir.path(), &[]);
    r.wait_step(r.last_step() + 10);
    let i2 = checkpoint(&r.pid(), dir.path(), &["--incremental"]);
    r.wait_step(r.last_step() + 10);
    let i3 = checkpoint(&r.pid(), dir.path(), &["--incremental", "--kill"]);
    r.finish();
    let last = r.last_step();
    let crid = |p: &Path| -> u64 {
        p.to_str()
            .unwrap()
            .rsplit_once(".img.")
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    assert!(crid(&i1) < crid(&i2) && crid(&i2) < crid(&i3));
    let chain = dump(&["chain", i3.to_str().unwrap(), "--json"]);
    assert!(chain.status.success());
    let j: serde_json::Value = serde_json::from_slice(&chain.stdout).unwrap();
    assert_eq!(j["images"].as_array().unwrap().len(), 3, "{j}");
    let out = restore(&i3);
    assert_continues(&out, last, &reference);
}

#[test]
fn changed_mapped_file_is_refused() {
    let dir = TempDir::new("restore-file");
    let file = dir.path().join("mapped");
    std::fs::write(&file, vec![7u8; 3 * 4096 + 100]).unwrap();
    let f = file.to_str().unwrap().to_string();
    let reference = reference(&[STEPS, &f]);
    let mut r = Running::start(&[STEPS, &f]);
    r.wait_step(random_step(5, 30));
    let img = checkpoint(&r.pid(), dir.path(), &["--kill"]);
    r.finish();
    let last = r.last_step();
    // Unchanged: restores (the private page written by the program comes from the image, the
    // others from the file).
    let out = restore(&img);
    assert_continues(&out, last, &reference);
    // Changed (same size, new mtime): refused before anything starts.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&file, vec![8u8; 3 * 4096 + 100]).unwrap();
    let out = restore(&img);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "the task ran: {:?}", out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("changed since the checkpoint") && err.contains("mapped"),
        "{err}"
    );
}

#[test]
fn detach_pid_file_and_stopped() {
    let dir = TempDir::new("restore-detach");
    let mut r = Running::start(&["100000"]);
    r.wait_step(3);
    let img = checkpoint(&r.pid(), dir.path(), &["--kill"]);
    r.finish();
    let pf = dir.path().join("pid");
    let out = dump(&[
        "restore",
        img.to_str().unwrap(),
        "--detach",
        "--stopped",
        "--pid-file",
        pf.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&pf).unwrap().trim(),
        pid.to_string()
    );
    let status = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let state = |pid: i32| {
        status(pid)
            .lines()
            .find_map(|l| {
                l.strip_prefix("State:")
                    .map(|s| s.trim().chars().next().unwrap())
            })
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(pid) != 'T' {
        assert!(Instant::now() < deadline, "not stopped: {}", status(pid));
        std::thread::sleep(Duration::from_millis(10));
    }
    let _kill = KillOnDrop(pid);
    assert!(status(pid).contains("restore_count"), "{}", status(pid));
    // Every VMA of the image is there, at its address, with its protection.
    let show = dump(&["show", "--json", img.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let maps_now = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let hex = |v: &serde_json::Value| {
        u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let mut n = 0;
    for rec in j["body"].as_array().unwrap() {
        let Some(v) = rec.get("vma") else { continue };
        if v["kind"] == "vsyscall" {
            continue; // the kernel's
        }
        // show --json names kinds and writes prot as maps does (spec/JSON.md).
        let (s, e) = (hex(&v["start"]), hex(&v["end"]));
        let perms = v["prot"].as_str().unwrap().to_string();
        let covered = maps_now.lines().any(|l| {
            let (range, rest) = l.split_once(' ').unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let a = u64::from_str_radix(a, 16).unwrap();
            let b = u64::from_str_radix(b, 16).unwrap();
            a <= s && e <= b && rest.starts_with(&perms)
        });
        assert!(covered, "VMA {s:#x}-{e:#x} {perms} missing:\n{maps_now}");
        n += 1;
    }
    assert!(n > 5);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("restore_count"), "{maps}");
    assert!(
        maps.contains("[heap]") && maps.contains("[stack]"),
        "{maps}"
    );
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.to_string_lossy().contains("restore_count"), "{exe:?}");
    // Continue it: it runs (its output goes to /dev/null), then kill it.
    Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .run_status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(pid) == 'T' {
        assert!(Instant::now() < deadline, "still stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(matches!(state(pid), 'R' | 'S'), "{}", status(pid));
}

/// Kills a restored task (not our child) at the end of a test.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(|mut c| cr_tests::wait_timeout(&mut c, cr_tests::process_timeout()));
    }
}

/// The self-checkpoint API: a forked child of this test (single-threaded, as checkpoints need)
/// calls `checkpoint_self`, which returns the CRID there; restored from that image, the task
/// returns from the same call with 0 and says "restarted".
#[test]
fn self_checkpoint_returns_crid_then_zero() {
    let dir = TempDir::new("selfckpt");
    let log = dir.path().join("log");
    let d = dir.path().to_path_buf();
    let crid = cr_tests::crid_file();
    // The child's stdout: a pipe whose read end this test holds (so the image records a pipe to
    // outside the task, which restore attaches to its own stdout), whatever the test's own
    // stdout is (a regular file would be reopened by path, and "restarted" would go there).
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `ends`.
    assert_eq!(
        unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) },
        0
    );
    // SAFETY: fork of this multi-threaded test process: the child uses only what the library's
    // self-checkpoint needs (glibc's malloc is fork-safe; no lock of the test harness is taken)
    // and ends with _exit, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: dup2 takes integers; fd 1 becomes the pipe's write end (not close-on-exec).
        unsafe { libc::dup2(ends[1], 1) };
        // The fork holds every descriptor of this test process (cargo's jobserver pipe, other
        // tests' pipes): an image records them, and restore refuses a pipe whose other end is
        // outside the task. The self-checkpoint needs none of them.
        // SAFETY: close_range takes integers.
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
        // The library finds the CRID file through the environment; set here, in the child,
        // alone in its process since the fork (libc's setenv: std's environment lock may have
        // been held by another thread at the fork).
        let key = std::ffi::CString::new("CR_CRID_FILE").unwrap();
        let val = std::ffi::CString::new(crid.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: both are NUL-terminated strings; no other thread exists in this child.
        assert_eq!(unsafe { libc::setenv(key.as_ptr(), val.as_ptr(), 1) }, 0);
        let line = match cr_dump::restore::checkpoint_self(&d, "selfckpt") {
            Ok(0) => "restarted".to_string(),
            Ok(n) => format!("checkpoint CRID={n}"),
            Err(e) => format!("error {e}"),
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .unwrap();
        std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()).unwrap();
        if line == "restarted" {
            let _ = std::io::Write::write_all(&mut std::io::stdout(), b"restarted\n");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        cr_dump::sys::exit_now(0);
    }
    // SAFETY: the write end is ours to close; the read end stays open to the end of the test.
    unsafe { libc::close(ends[1]) };
    assert_eq!(
        cr_dump::sys::waitpid(pid).unwrap(),
        cr_dump::sys::WaitStatus::Exited(0)
    );
    let first = std::fs::read_to_string(&log).unwrap();
    let crid: u64 = first
        .trim()
        .strip_prefix("checkpoint CRID=")
        .unwrap_or_else(|| panic!("{first}"))
        .parse()
        .unwrap();
    assert!(crid > 0);
    let img = dir.path().join(format!("selfckpt.img.{crid}"));
    assert!(
        img.exists(),
        "{:?}",
        std::fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );
    let out = restore(&img);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "restarted\n", "{err}");
    let both = std::fs::read_to_string(&log).unwrap();
    assert_eq!(both, format!("checkpoint CRID={crid}\nrestarted\n"));
    // SAFETY: the read end is ours to close.
    unsafe { libc::close(ends[0]) };
    eprintln!(
        "self-checkpoint: image {} {} bytes; restore stderr: {err}",
        img.display(),
        std::fs::metadata(&img).unwrap().len()
    );
}

/// What cannot be restored is refused with the reason, before any task runs: a broken chain
/// (missing parent), XSAVE features this CPU does not enable.
#[test]
fn refusals_before_anything_starts() {
    let dir = TempDir::new("restore-refuse");
    let mut r = Running::start(&[STEPS]);
    r.wait_step(3);
    let i1 = checkpoint(&r.pid(), dir.path(), &[]);
    r.wait_step(r.last_step() + 2);
    let i2 = checkpoint(&r.pid(), dir.path(), &["--incremental", "--kill"]);
    r.finish();
    // An image whose XCR0 has a component no CPU has (bit 62).
    let show = dump(&["show", "--json", "--with-pages", i1.to_str().unwrap()]);
    assert!(show.status.success());
    let mut j: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let xf = j["regs"]["xfeatures"].as_str().unwrap().to_string();
    let xf = u64::from_str_radix(xf.trim_start_matches("0x"), 16).unwrap() | (1 << 62);
    j["regs"]["xfeatures"] = serde_json::Value::String(format!("{xf:#x}"));
    let other = TempDir::new("restore-refuse-x");
    let js = other.path().join("x.json");
    std::fs::write(&js, serde_json::to_vec(&j).unwrap()).unwrap();
    let name = i1.file_name().unwrap().to_str().unwrap();
    let xi = other.path().join(name);
    let enc = dump(&["encode", js.to_str().unwrap(), "-o", xi.to_str().unwrap()]);
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    let out = restore(&xi);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("XSAVE features 0x4000000000000000"), "{err}");
    // A chain without its full image.
    std::fs::remove_file(&i1).unwrap();
    let out = restore(&i2);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing"), "{err}");
}
