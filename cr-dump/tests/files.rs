//! Open files across checkpoint → kill → restore, with real programs and the real `cr-dump`
//! binary: each case runs once uninterrupted, then again in a fresh directory where it is
//! checkpointed mid-run (`--kill`) and restored; the files it wrote must be the same. Python
//! appending to a log, `sqlite3 file.db < script.sql`, `sha256sum < bigfile`, C programs
//! reading a file, writing relative paths after a chdir, using a file deleted while open, and
//! reading through two dup'ed descriptors (one offset); a file changed after the checkpoint is
//! refused with its message (and restored with `--allow-changed-files`); `--strict` refuses
//! a task with a descriptor images cannot describe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{process_timeout, program, skipped, wait_timeout, Run, TempDir};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

/// `cr-dump` with this test binary's CRID file in its environment.
fn cr() -> Command {
    cr_tests::cr_command(BIN)
}

/// Runs the program with every descriptor above 2 closed (the test harness leaks some, e.g.
/// cargo's jobserver pipe, which would be part of the task).
const CLOSE_AND_EXEC: &str =
    "import os, sys; os.closerange(3, 65536); os.execvp(sys.argv[1], sys.argv[1:])";

/// One case: what to start in a work directory, and when it is far enough to checkpoint.
struct Case<'a> {
    /// Program and arguments (run in the work directory).
    argv: Vec<String>,
    /// stdin: a file (relative paths in the work directory), else /dev/null.
    stdin: Option<PathBuf>,
    /// Prepares a fresh work directory.
    setup: &'a dyn Fn(&Path),
    /// True once the run in `dir` (pid) is mid-way.
    ready: &'a dyn Fn(&Path, i32) -> bool,
    /// The files compared between the runs (relative to the work directory).
    compare: &'a [&'a str],
}

impl Case<'_> {
    fn start(&self, dir: &Path) -> Child {
        let stdin = match &self.stdin {
            Some(p) => Stdio::from(File::open(dir.join(p)).unwrap()),
            None => Stdio::null(),
        };
        Command::new("python3")
            .args(["-c", CLOSE_AND_EXEC])
            .args(&self.argv)
            .current_dir(dir)
            .stdin(stdin)
            .stdout(File::create(dir.join("out.txt")).unwrap())
            .stderr(File::create(dir.join("err.txt")).unwrap())
            .spawn()
            .unwrap()
    }

    /// The compared files after an uninterrupted run.
    fn reference(&self, tag: &str) -> Vec<(String, Vec<u8>)> {
        let d = TempDir::new(&format!("{tag}-ref"));
        (self.setup)(d.path());
        let mut c = self.start(d.path());
        let st = wait_timeout(&mut c, process_timeout());
        assert!(
            st.success(),
            "{tag}: reference run: {st} {}",
            err_of(d.path())
        );
        snapshot(d.path(), self.compare)
    }

    /// Starts the case in `d`, waits until it is ready, checkpoints it with `--kill` (plus
    /// `extra`); the image (or the failed checkpoint's output).
    fn checkpoint(&self, d: &Path, tag: &str, extra: &[&str]) -> (Child, Output) {
        (self.setup)(d);
        let mut c = self.start(d);
        let pid = c.id() as i32;
        let t0 = Instant::now();
        while !(self.ready)(d, pid) {
            if let Some(st) = c.try_wait().unwrap() {
                panic!(
                    "{tag}: ended ({st}) before it was checkpointed: {}",
                    err_of(d)
                );
            }
            assert!(t0.elapsed() < process_timeout(), "{tag}: never ready");
            std::thread::sleep(Duration::from_millis(2));
        }
        let out = cr()
            .args([
                "checkpoint",
                "--json",
                "--kill",
                "--pid",
                &pid.to_string(),
                "-o",
            ])
            .arg(d.join("img"))
            .args(extra)
            .run();
        (c, out)
    }
}

fn err_of(d: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(d.join("err.txt")).unwrap_or_default()).into_owned()
}

fn snapshot(d: &Path, names: &[&str]) -> Vec<(String, Vec<u8>)> {
    names
        .iter()
        .map(|n| {
            let p = d.join(n);
            let v = if p.is_dir() {
                let mut all: Vec<String> = std::fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                all.sort();
                let mut v = Vec::new();
                for a in all {
                    v.extend(a.as_bytes());
                    v.push(b':');
                    v.extend(std::fs::read(p.join(&a)).unwrap());
                }
                v
            } else {
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            };
            (n.to_string(), v)
        })
        .collect()
}

/// The image path from `checkpoint --json`.
fn image_of(out: &Output, tag: &str) -> PathBuf {
    assert!(
        out.status.success(),
        "{tag}: checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(j["image"].as_str().unwrap())
}

/// `cr-dump restore IMAGE ARGS` in the foreground (it waits for the restored task).
fn restore(img: &Path, args: &[&str]) -> Output {
    let child = cr()
        .arg("restore")
        .arg(img)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cr_tests::output_timeout(child, process_timeout())
}

/// Reference run, then checkpoint → kill → restore in a fresh directory; the compared files
/// must be equal.
fn round_trip(tag: &str, case: &Case<'_>) {
    let want = case.reference(tag);
    let d = TempDir::new(tag);
    let (mut c, out) = case.checkpoint(d.path(), tag, &[]);
    let img = image_of(&out, tag);
    wait_timeout(&mut c, process_timeout());
    let r = restore(&img, &[]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        r.status.success(),
        "{tag}: restore: {} {stderr} {}",
        r.status,
        err_of(d.path())
    );
    let got = snapshot(d.path(), case.compare);
    for ((name, w), (_, g)) in want.iter().zip(&got) {
        assert!(
            w == g,
            "{tag}: {name} differs from the uninterrupted run's\n--- want\n{}\n--- got\n{}\n--- restore stderr\n{stderr}",
            String::from_utf8_lossy(w),
            String::from_utf8_lossy(g)
        );
    }
}

fn lines_at_least(name: &'static str, n: usize) -> impl Fn(&Path, i32) -> bool {
    move |d, _| {
        std::fs::read(d.join(name))
            .map(|b| b.iter().filter(|&&c| c == b'\n').count() >= n)
            .unwrap_or(false)
    }
}

fn no_setup(_: &Path) {}

/// Deterministic text: `n` numbered lines.
fn write_lines(p: &Path, n: usize) {
    let text: String = (0..n)
        .map(|i| format!("line {i} of the input {}\n", i * 7919 % 1000))
        .collect();
    std::fs::write(p, text).unwrap();
}

fn files_bin() -> String {
    program("files").to_string_lossy().into_owned()
}

#[test]
fn python_appending_to_a_log() {
    let script = "import time\nlog = open('log.txt', 'a')\nfor i in range(80):\n    \
                  log.write('entry %d\\n' % i)\n    log.flush()\n    time.sleep(0.02)\n\
                  print('done', i)\n";
    let setup = |d: &Path| {
        std::fs::write(d.join("app.py"), script).unwrap();
        std::fs::write(d.join("log.txt"), "old line\n").unwrap();
    };
    let ready = lines_at_least("log.txt", 15);
    round_trip(
        "files-python-log",
        &Case {
            argv: vec!["python3".into(), "app.py".into()],
            stdin: None,
            setup: &setup,
            ready: &ready,
            compare: &["log.txt", "out.txt"],
        },
    );
}

#[test]
fn sqlite3_with_a_script_on_stdin() {
    if Command::new("sqlite3").arg("-version").output().is_err() {
        skipped(
            "sqlite3_with_a_script_on_stdin",
            "sqlite3 is not installed (.ci/run should install it)",
        );
        return;
    }
    let mut sql = String::from("CREATE TABLE t(k INTEGER, v TEXT);\n");
    for i in 0..40 {
        sql.push_str(&format!(
            "INSERT INTO t VALUES({i}, 'value {i}');\nWITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
             SELECT x+1 FROM c WHERE x < 150000) SELECT {i}, count(*), (SELECT sum(k) FROM t) \
             FROM c;\n"
        ));
    }
    let setup = move |d: &Path| std::fs::write(d.join("script.sql"), &sql).unwrap();
    let ready = lines_at_least("out.txt", 8);
    round_trip(
        "files-sqlite3",
        &Case {
            argv: vec!["sqlite3".into(), "file.db".into()],
            stdin: Some("script.sql".into()),
            setup: &setup,
            ready: &ready,
            compare: &["out.txt", "file.db"],
        },
    );
}

#[test]
fn sha256sum_of_a_big_file_on_stdin() {
    // Big enough that sha256sum (with SHA-NI, some 1 GiB/s) is still at it when the
    // checkpoint comes: it is taken in the first eighth.
    let big = {
        let d = TempDir::new("files-big");
        let mut block = vec![0u8; 1 << 20];
        let mut x = 0x2545_f491u32;
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let mut all = Vec::with_capacity(256 << 20);
        for i in 0..=255u8 {
            block[0] = i;
            all.extend_from_slice(&block);
        }
        std::fs::write(d.path().join("big"), all).unwrap();
        d
    };
    let bigpath = big.path().join("big");
    let size = std::fs::metadata(&bigpath).unwrap().len();
    let ready = move |_: &Path, pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/fdinfo/0"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("pos:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .is_some_and(|p| p > 0 && p < size / 8)
    };
    round_trip(
        "files-sha256sum",
        &Case {
            argv: vec!["sha256sum".into()],
            stdin: Some(bigpath),
            setup: &no_setup,
            ready: &ready,
            compare: &["out.txt"],
        },
    );
}

#[test]
fn c_program_reading_a_file() {
    let setup = |d: &Path| write_lines(&d.join("input.txt"), 150);
    let ready = lines_at_least("out.txt", 20);
    round_trip(
        "files-c-read",
        &Case {
            argv: vec![files_bin(), "read".into(), "input.txt".into()],
            stdin: None,
            setup: &setup,
            ready: &ready,
            compare: &["out.txt"],
        },
    );
}

#[test]
fn c_program_in_another_working_directory() {
    let setup = |d: &Path| std::fs::create_dir(d.join("sub")).unwrap();
    let ready = lines_at_least("out.txt", 15);
    round_trip(
        "files-c-chdir",
        &Case {
            argv: vec![files_bin(), "chdir".into(), "sub".into(), "60".into()],
            stdin: None,
            setup: &setup,
            ready: &ready,
            compare: &["out.txt", "sub"],
        },
    );
}

#[test]
fn file_deleted_while_open() {
    let ready = lines_at_least("out.txt", 15);
    round_trip(
        "files-c-deleted",
        &Case {
            argv: vec![files_bin(), "deleted".into(), "60".into()],
            stdin: None,
            setup: &no_setup,
            ready: &ready,
            compare: &["out.txt"],
        },
    );
}

#[test]
fn dup_fds_share_the_offset() {
    let setup = |d: &Path| write_lines(&d.join("input.txt"), 60);
    let ready = lines_at_least("out.txt", 20);
    round_trip(
        "files-c-dup",
        &Case {
            argv: vec![files_bin(), "dup".into(), "input.txt".into()],
            stdin: None,
            setup: &setup,
            ready: &ready,
            compare: &["out.txt"],
        },
    );
}

#[test]
fn changed_file_is_refused_with_its_message() {
    let tag = "files-changed";
    let setup = |d: &Path| write_lines(&d.join("input.txt"), 150);
    let ready = lines_at_least("out.txt", 10);
    let case = Case {
        argv: vec![files_bin(), "read".into(), "input.txt".into()],
        stdin: None,
        setup: &setup,
        ready: &ready,
        compare: &["out.txt"],
    };
    let d = TempDir::new(tag);
    let (mut c, out) = case.checkpoint(d.path(), tag, &[]);
    let img = image_of(&out, tag);
    wait_timeout(&mut c, process_timeout());
    let input = d.path().join("input.txt");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"one more line\n"))
        .unwrap();
    let before = std::fs::read(d.path().join("out.txt")).unwrap();
    let r = restore(&img, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{tag}: {err}");
    let want = format!(
        "fd 3 ({}) changed since the checkpoint: size",
        input.display()
    );
    assert!(err.contains(&want), "{tag}: {err}\nwanted: {want}");
    assert!(err.contains("--allow-changed-files"), "{tag}: {err}");
    // Refused before anything started: the task wrote nothing.
    assert_eq!(std::fs::read(d.path().join("out.txt")).unwrap(), before);
    let r = restore(&img, &["--allow-changed-files"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{tag}: {err}");
    assert!(err.contains("restored anyway"), "{tag}: {err}");
    let out = std::fs::read_to_string(d.path().join("out.txt")).unwrap();
    assert!(out.contains("\nend "), "{tag}: {out}");
}

#[test]
fn strict_refuses_what_would_be_lost() {
    let tag = "files-strict";
    let ready = lines_at_least("out.txt", 5);
    let case = Case {
        // A pidfd: a descriptor images cannot describe (an inotify fd was, before 1.2).
        argv: vec![
            "python3".into(),
            "-c".into(),
            "import os, time\nfd = os.pidfd_open(os.getpid())\nfor i in range(400):\n    \
             print(i, flush=True)\n    time.sleep(0.02)\n"
                .into(),
        ],
        stdin: None,
        setup: &no_setup,
        ready: &ready,
        compare: &[],
    };
    let d = TempDir::new(tag);
    let (mut c, out) = case.checkpoint(d.path(), tag, &["--strict"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{tag}: {err}");
    assert!(
        err.contains("--strict") && err.contains("fd 3"),
        "{tag}: {err}"
    );
    assert!(
        std::fs::read_dir(d.path().join("img")).map_or(true, |r| r.count() == 0),
        "{tag}: an image was left"
    );
    // Left running, not killed.
    assert!(c.try_wait().unwrap().is_none(), "{tag}: the task is gone");
    let n0 = std::fs::read(d.path().join("out.txt")).unwrap().len();
    std::thread::sleep(Duration::from_millis(100));
    let n1 = std::fs::read(d.path().join("out.txt")).unwrap().len();
    assert!(n1 > n0, "{tag}: the task does not run on");
    // Without --strict: a checkpoint, with the loss as a warning and in the JSON.
    let out = cr()
        .args(["checkpoint", "--json", "--pid", &c.id().to_string(), "-o"])
        .arg(d.path().join("img"))
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tag}: {err}");
    assert!(
        err.contains("warning: fd 3 (anon_inode:[pidfd]) will not be restored"),
        "{tag}: {err}"
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = j["fidelity"].as_array().unwrap();
    let fd3 = lines.iter().find(|l| l["item"] == "fd 3").unwrap();
    assert_eq!(fd3["action"], "lost", "{tag}: {j}");
    assert!(lines
        .iter()
        .any(|l| l["item"] == "cwd" && l["action"] == "restore"));
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn root_restoring_another_users_task_opens_files_as_that_user() {
    let tag = "files-creds";
    if !is_root() {
        skipped(tag, "needs root (to checkpoint a task of user nobody)");
        return;
    }
    let setup = |d: &Path| {
        write_lines(&d.join("input.txt"), 150);
        for n in ["out.txt", "err.txt"] {
            // The task (nobody) reopens its stdout at restore: it must be allowed to.
            File::create(d.join(n)).unwrap();
            set_mode(&d.join(n), 0o666);
        }
    };
    let ready = lines_at_least("out.txt", 10);
    let case = Case {
        argv: vec![
            "setpriv".into(),
            "--reuid=65534".into(),
            "--regid=65534".into(),
            "--clear-groups".into(),
            files_bin(),
            "read".into(),
            "input.txt".into(),
        ],
        stdin: None,
        setup: &setup,
        ready: &ready,
        compare: &["out.txt"],
    };
    let d = TempDir::new(tag);
    let (mut c, out) = case.checkpoint(d.path(), tag, &[]);
    let img = image_of(&out, tag);
    wait_timeout(&mut c, process_timeout());
    // Nobody can no longer read the input (chmod leaves size and mtime as they were).
    let input = d.path().join("input.txt");
    set_mode(&input, 0o600);
    let r = restore(&img, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{tag}: {err}");
    assert!(
        err.contains("Permission denied") && err.contains("uid 65534"),
        "{tag}: {err}"
    );
    set_mode(&input, 0o644);
    let r = restore(&img, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{tag}: {err}");
    let out = std::fs::read_to_string(d.path().join("out.txt")).unwrap();
    assert!(out.contains("\nend "), "{tag}: {out}");
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn a_held_lock_is_re_taken_and_said_so_in_the_report() {
    let tag = "files-lock";
    let ready = lines_at_least("out.txt", 3);
    let case = Case {
        argv: vec![files_bin(), "lock".into(), "locked".into(), "400".into()],
        stdin: None,
        setup: &no_setup,
        ready: &ready,
        compare: &[],
    };
    let d = TempDir::new(tag);
    // Re-taken at restore (tests/files_lock.rs): nothing for --strict to refuse.
    let (mut c, out) = case.checkpoint(d.path(), tag, &["--strict"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{tag}: {err}");
    let fd3 = j["fidelity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["item"] == "fd 3")
        .unwrap();
    assert_eq!(fd3["action"], "restore", "{tag}: {fd3}");
    assert_eq!(
        fd3["note"], "lock re-taken at restore: POSIX WRITE bytes 0-EOF",
        "{tag}: {fd3}"
    );
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn inherit_fd_attaches_a_path_or_an_own_descriptor() {
    let tag = "files-inherit";
    // fd 3 is a pipe whose reader is this test: not part of the task.
    let with_pipe = "import os, sys\nos.closerange(3, 65536)\nr, w = os.pipe()\n\
                     if os.fork() == 0:\n    os.close(w)\n    os.set_inheritable(r, True)\n    \
                     os.dup2(r, 0)\n    \
                     os.dup2(os.open('piped.txt', os.O_WRONLY | os.O_CREAT), 1)\n    \
                     os.execvp('cat', ['cat'])\nos.close(r)\n\
                     os.dup2(w, 3)\nos.close(w) if w != 3 else None\n\
                     os.execvp(sys.argv[1], sys.argv[1:])";
    let d = TempDir::new(tag);
    let mut c = Command::new("python3")
        .args(["-c", with_pipe, &files_bin(), "fd3", "60"])
        .current_dir(d.path())
        .stdin(Stdio::null())
        .stdout(File::create(d.path().join("out.txt")).unwrap())
        .stderr(File::create(d.path().join("err.txt")).unwrap())
        .spawn()
        .unwrap();
    let ready = lines_at_least("out.txt", 10);
    let t0 = Instant::now();
    while !ready(d.path(), 0) {
        assert!(t0.elapsed() < process_timeout(), "{tag}: never ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = cr()
        .args([
            "checkpoint",
            "--json",
            "--kill",
            "--pid",
            &c.id().to_string(),
            "-o",
        ])
        .arg(d.path().join("img"))
        .run();
    let img = image_of(&out, tag);
    wait_timeout(&mut c, process_timeout());
    let done_at = std::fs::read_to_string(d.path().join("out.txt"))
        .unwrap()
        .lines()
        .count();
    // FD=PATH: the rest of the lines go to that file.
    let target = d.path().join("fd3.txt");
    std::fs::write(&target, "").unwrap();
    let arg = format!("3={}", target.display());
    let r = restore(&img, &["--inherit-fd", &arg]);
    assert!(
        r.status.success(),
        "{tag}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let want: String = (done_at..60).map(|k| format!("line {k}\n")).collect();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), want, "{tag}");
    // FD:N: to restore's own stdout (out.txt grew meanwhile: allowed).
    let r = restore(&img, &["--inherit-fd", "3:1", "--allow-changed-files"]);
    assert!(
        r.status.success(),
        "{tag}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&r.stdout), want, "{tag}");
    // A bad argument is a usage error; an fd the image lacks is refused.
    let r = restore(&img, &["--inherit-fd", "3"]);
    assert_eq!(r.status.code(), Some(2), "{tag}");
    let r = restore(&img, &["--inherit-fd", "9:1"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("the image has no fd 9"), "{tag}: {err}");
}

#[test]
fn deleted_file_over_the_ghost_limit() {
    let tag = "files-ghost-limit";
    let ready = lines_at_least("out.txt", 10);
    let case = Case {
        argv: vec![files_bin(), "deleted".into(), "60".into()],
        stdin: None,
        setup: &no_setup,
        ready: &ready,
        compare: &[],
    };
    let d = TempDir::new(tag);
    // 26 bytes of head and 7 per line: over 64 bytes after 10 lines.
    let (mut c, out) = case.checkpoint(d.path(), tag, &["--ghost-limit", "64"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: fd 3 (deleted file ")
            && err.contains("over the limit for deleted files (64 bytes; checkpoint --ghost-limit"),
        "{tag}: {err}"
    );
    let img = image_of(&out, tag);
    wait_timeout(&mut c, process_timeout());
    let r = restore(&img, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("fd 3 (") && err.contains("--ghost-limit: left closed"),
        "{tag}: {err}"
    );
    // The program finds its file gone.
    let e = std::fs::read_to_string(d.path().join("err.txt")).unwrap();
    assert!(e.contains("Bad file descriptor"), "{tag}: {e}");
}

#[test]
fn new_session_on_request() {
    let tag = "files-session";
    let setup = |d: &Path| write_lines(&d.join("input.txt"), 150);
    let ready = lines_at_least("out.txt", 10);
    let case = Case {
        argv: vec![files_bin(), "read".into(), "input.txt".into()],
        stdin: None,
        setup: &setup,
        ready: &ready,
        compare: &[],
    };
    let d = TempDir::new(tag);
    let (mut c, out) = case.checkpoint(d.path(), tag, &[]);
    let img = image_of(&out, tag);
    wait_timeout(&mut c, process_timeout());
    let session = |args: &[&str]| {
        let mut all = vec!["--detach", "--stopped"];
        all.extend_from_slice(args);
        let r = restore(&img, &all);
        assert!(
            r.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let pid: i32 = String::from_utf8_lossy(&r.stdout).trim().parse().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit_once(") ").unwrap().1;
        let sid: i32 = after.split(' ').nth(3).unwrap().parse().unwrap();
        Command::new("kill").args(["-9", &pid.to_string()]).run();
        (pid, sid)
    };
    let (pid, sid) = session(&["--new-session"]);
    assert_eq!(pid, sid, "{tag}: --new-session");
    let (pid, sid) = session(&[]);
    assert_ne!(pid, sid, "{tag}: without --new-session");
}

/// `script` runs `cmd` on a new pseudo-terminal (its stdin, stdout and stderr), copying what
/// it prints to our stdout.
fn in_pty(cmd: &str, dir: &Path, out: &Path) -> Child {
    Command::new("script")
        .args(["-qfec", cmd, "/dev/null"])
        .current_dir(dir)
        .env("CR_CRID_FILE", cr_tests::crid_file())
        .stdin(Stdio::null())
        .stdout(File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn terminal_attaches_to_restores_terminal() {
    let tag = "files-tty";
    if Command::new("script").arg("--version").output().is_err() {
        skipped(
            tag,
            "script (util-linux) is not installed: no pseudo-terminal to test with",
        );
        return;
    }
    let d = TempDir::new(tag);
    write_lines(&d.path().join("input.txt"), 150);
    let reference = Command::new(files_bin())
        .args(["read", "input.txt"])
        .current_dir(d.path())
        .run();
    let want_end = String::from_utf8_lossy(&reference.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    // The program writes its pid, then runs with the terminal as stdin, stdout and stderr.
    let start = format!(
        "python3 -c \"import os, sys; os.closerange(3, 65536); open('pid', 'w').write(str(os.getpid())); \
         os.execvp(sys.argv[1], sys.argv[1:])\" {} read input.txt",
        files_bin()
    );
    let mut s1 = in_pty(&start, d.path(), &d.path().join("s1.txt"));
    let ready = lines_at_least("s1.txt", 10);
    let t0 = Instant::now();
    while !ready(d.path(), 0) {
        assert!(t0.elapsed() < process_timeout(), "{tag}: never ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = std::fs::read_to_string(d.path().join("pid")).unwrap();
    let out = cr()
        .args(["checkpoint", "--json", "--kill", "--pid", pid.trim(), "-o"])
        .arg(d.path().join("img"))
        .run();
    let img = image_of(&out, tag);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fd0 = &j["fidelity"][0];
    assert!(
        fd0["kind"]
            .as_str()
            .unwrap()
            .starts_with("terminal /dev/pts/"),
        "{tag}: {j}"
    );
    wait_timeout(&mut s1, process_timeout());
    let before = std::fs::read_to_string(d.path().join("s1.txt")).unwrap();
    let last_before = before.lines().filter(|l| l.starts_with("chunk ")).count();
    // Restored on another terminal: its output shows there, from where it stopped.
    let cmd = format!("{BIN} restore {}", img.display());
    let mut s2 = in_pty(&cmd, d.path(), &d.path().join("s2.txt"));
    let st = wait_timeout(&mut s2, process_timeout());
    assert!(st.success(), "{tag}: {st}");
    let after = std::fs::read_to_string(d.path().join("s2.txt")).unwrap();
    let lines: Vec<&str> = after.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(
        lines.last().copied(),
        Some(want_end.as_str()),
        "{tag}: {after}"
    );
    let first = lines.iter().find(|l| l.starts_with("chunk ")).unwrap();
    let k: usize = first.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        k + 1 >= last_before && k <= last_before + 1,
        "{tag}: continues at chunk {k}, {last_before} were printed before"
    );
}
