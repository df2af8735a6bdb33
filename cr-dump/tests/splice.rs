//! The write-back by splice (`cr_dump::capture::splice`), on real processes: a checkpoint whose
//! pages were spliced from the twin restores and runs on exactly as an uninterrupted run (a C
//! program with known page contents, zero pages and many mappings; python3); the image equals,
//! byte for byte, the one the read path writes from the same twin; an output that is not a
//! regular file, and `CR_DUMP_NO_SPLICE`, take the read path; `--json` says which was used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_dump::capture::options::LazyMode;
use cr_dump::capture::splice::{PagePath, Unplaced};
use cr_format::read::Image;
use cr_tests::{line_reader, program, Run, TempDir};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const STEPS: &str = "60";

fn cr() -> Command {
    cr_tests::cr_command(BIN)
}

/// A program running with its stdout read line by line on a thread.
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = line_reader(child.stdout.take().unwrap());
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reads lines until `step N` with N at least `n`.
    fn wait_step(&mut self, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.last_step() < n {
            let l = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the program stopped printing");
            self.seen.push(l);
        }
    }

    /// Kills it, reads what it printed and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
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

/// The lines of an uninterrupted run of `cmd`.
fn reference(cmd: &mut Command) -> Vec<String> {
    let out = cmd.run();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// `cr-dump checkpoint --pid PID --twin --json` into `dir` (with `env` set): its JSON.
fn checkpoint(pid: i32, dir: &Path, env: &[(&str, &str)]) -> serde_json::Value {
    let pid = pid.to_string();
    let mut c = cr();
    c.args(["checkpoint", "--pid", &pid, "--twin", "--json", "-o"])
        .arg(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.run();
    assert!(
        out.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn verify(image: &Path) {
    let out = cr().arg("verify").arg(image).run();
    assert!(
        out.status.success(),
        "verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restore(image: &Path) -> Output {
    cr().arg("restore").arg(image).run()
}

/// The restored run's lines are the uninterrupted run's from some step on, that step no later
/// than one after the last the original printed before it was killed (and not before `from`,
/// the step seen when the checkpoint began), to the end.
fn assert_runs_on(out: &Output, from: u32, last: u32, reference: &[String]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore failed: {stderr}");
    let got: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    let first = got
        .first()
        .and_then(|l| step_of(l))
        .unwrap_or_else(|| panic!("restored output starts with {:?}", got.first()));
    assert!(
        first > from && first <= last + 1,
        "restored at step {first}, checkpointed between steps {from} and {last}"
    );
    let at = reference
        .iter()
        .position(|l| step_of(l) == Some(first))
        .unwrap();
    let want: Vec<&str> = reference[at..].iter().map(String::as_str).collect();
    assert_eq!(got, want, "stderr: {stderr}");
    assert!(got.last().unwrap().starts_with("result "));
}

/// Checkpoints the program of `cmd` at about step `at` by splice, kills it, checks the image
/// and that its restore runs on as the uninterrupted run does.
fn splice_then_restore(cmd: &mut Command, reference: &[String], at: u32) -> serde_json::Value {
    let dir = TempDir::new("splice");
    let mut r = Running::start(cmd);
    r.wait_step(at);
    let from = r.last_step();
    let j = checkpoint(r.pid(), dir.path(), &[]);
    r.kill();
    let last = r.last_step();
    assert_eq!(r.seen[..], reference[..r.seen.len()]);
    assert_eq!(j["page_path"], "splice", "{j}");
    let img = PathBuf::from(j["image"].as_str().unwrap());
    verify(&img);
    assert_runs_on(&restore(&img), from, last, reference);
    j
}

#[test]
fn spliced_c_program_restores_and_runs_on() {
    let prog = program("splice_pages");
    let reference = reference(Command::new(&prog).arg(STEPS));
    let j = splice_then_restore(Command::new(&prog).arg(STEPS), &reference, 5);
    // Its pages written then zeroed, and those only read, are stored as zero runs.
    assert!(j["zero_pages"].as_u64().unwrap() >= 40 * 256 / 13, "{j}");
}

#[test]
fn spliced_python3_restores_and_runs_on() {
    let Ok(py) = which("python3") else {
        cr_tests::skipped(
            "spliced_python3_restores_and_runs_on",
            "python3 is not installed",
        );
        return;
    };
    // Keeps ~48 MiB of lists and bytes that it folds into a checksum at every step.
    let src = "import sys, time, zlib\n\
               data = [bytes([i % 251]) * 4096 * (1 + i % 7) for i in range(3000)]\n\
               big = bytearray(range(256)) * (16 << 12)\n\
               print('ready', flush=True)\n\
               s = 1\n\
               for step in range(1, 61):\n\
               \x20   big[step * 4099 % len(big)] ^= step & 255\n\
               \x20   s = zlib.crc32(big, s)\n\
               \x20   for d in data[step % 10::10]: s = zlib.crc32(d, s)\n\
               \x20   print('step', step, s, flush=True)\n\
               \x20   time.sleep(0.02)\n\
               print('result', s, flush=True)\n";
    let mk = || {
        let mut c = Command::new(&py);
        c.args(["-c", src]);
        c
    };
    let reference = reference(&mut mk());
    splice_then_restore(&mut mk(), &reference, 5);
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .ok_or(())
}

/// The same twin written by splice to a file, by the read path to memory, and to a pipe: with
/// zero pages in most records (written again as the read path plans them), and with none
/// (every record's data left where it was spliced).
#[test]
fn same_image_as_the_read_path_and_pipes_fall_back() {
    if !cr_tests::in_child_with_env(
        "same_image_as_the_read_path_and_pipes_fall_back",
        "CR_CRID_FILE",
        cr_tests::crid_file(),
    ) {
        return;
    }
    same_image(&["1000"]);
    same_image(&["1000", "dense"]);
}

fn same_image(args: &[&str]) {
    let mut r = Running::start(Command::new(program("splice_pages")).args(args));
    r.wait_step(2);
    let reg = cr_dump::Registry::new();
    let opts = cr_dump::Options {
        lazy: LazyMode::Twin,
        ..cr_dump::Options::default()
    };
    let lazy = reg.checkpoint_lazy(r.pid(), &opts).unwrap();
    let snap = reg.get(lazy.crid).unwrap();
    assert!(snap.twin.is_some());
    // By splice, into a regular file (written as `cr-dump checkpoint` does: a buffered writer
    // and a duplicate of its descriptor).
    let dir = TempDir::new("splice-lib");
    let path = dir.path().join("spliced.img");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let dup = f.try_clone().unwrap();
    let (sum, how) = snap.write_to_file(std::io::BufWriter::new(f), dup).unwrap();
    assert_eq!(how, PagePath::Splice);
    let spliced = std::fs::read(&path).unwrap();
    assert_eq!(sum.image_len as usize, spliced.len());
    verify(&path);
    // By reading, from the same twin.
    let mut read = Vec::new();
    let sum2 = snap.write_to(&mut read).unwrap();
    assert_eq!(sum, sum2);
    assert!(
        spliced == read,
        "the spliced image differs from the read one"
    );
    let img = Image::parse(&spliced).unwrap();
    assert_eq!(img.crid(), lazy.crid);
    // A pipe is not a regular file: the read path, the same bytes.
    let (mut rd, wr) = std::os::unix::net::UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        rd.read_to_end(&mut b).unwrap();
        b
    });
    let wr2 = std::fs::File::from(std::os::fd::OwnedFd::from(wr.try_clone().unwrap()));
    let (_, how) = snap.write_to_file(Unplaced(wr), wr2).unwrap();
    assert_eq!(how, PagePath::Read);
    assert!(reader.join().unwrap() == read);
    // From a thread that does not trace the twin nothing can be injected into it: the read
    // path, the same bytes.
    let (snap2, other) = (snap.clone(), dir.path().join("other.img"));
    let o2 = other.clone();
    let how = std::thread::spawn(move || {
        let f = std::fs::File::create_new(&o2).unwrap();
        let dup = f.try_clone().unwrap();
        snap2
            .write_to_file(std::io::BufWriter::new(f), dup)
            .unwrap()
            .1
    })
    .join()
    .unwrap();
    assert_eq!(how, PagePath::Read);
    assert!(std::fs::read(&other).unwrap() == read);
    drop(snap);
    reg.discard(lazy.crid).unwrap();
    r.kill();
}

#[test]
fn no_splice_env_takes_the_read_path() {
    let prog = program("splice_pages");
    let dir = TempDir::new("nosplice");
    let mut r = Running::start(Command::new(&prog).arg("1000"));
    r.wait_step(2);
    let j = checkpoint(r.pid(), dir.path(), &[("CR_DUMP_NO_SPLICE", "1")]);
    r.kill();
    assert_eq!(j["page_path"], "read", "{j}");
    assert_eq!(j["snapshot"], "twin", "{j}");
    verify(Path::new(j["image"].as_str().unwrap()));
}
