//! The task's state besides memory across checkpoint → kill → restore, with the real `cr-dump`
//! binary and real programs (`tests/programs/proc_state.c`, python3): signal handlers with
//! their flags, mask and alternate stack, SA_SIGINFO siginfo, pending signals (queued and
//! kernel-generated), interval and POSIX timers, rlimits, groups, per-process attributes,
//! rseq, credentials (root restoring a user's image; a user refused root's image; a user
//! restoring their own image). Each restored run must print exactly what an uninterrupted run
//! prints after `ready`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{line_reader, next_line_timeout, program, skipped, Run, TempDir};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

/// The CRID file of the runs as root, or as nobody (a CRID file is its owner's only).
fn crid_file(nobody: bool) -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    let d = D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("cr-test-procstate-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        d
    });
    d.join(if nobody { "crid-nobody" } else { "crid" })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

/// `prog args`, as nobody (through `setpriv`, which execs it: same pid) if asked.
fn command(prog: &Path, args: &[&str], nobody: bool) -> Command {
    let mut c = if nobody {
        let mut c = Command::new("setpriv");
        c.args(NOBODY).arg(prog);
        c
    } else {
        Command::new(prog)
    };
    c.args(args).env("CR_CRID_FILE", crid_file(nobody));
    c
}

fn cr(args: &[&str], nobody: bool) -> Output {
    command(Path::new(BIN), args, nobody).run()
}

fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(String::from)
        .collect()
}

/// A directory anyone may write (images of a run as nobody).
fn open_dir(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Runs `cmd` to its end: its lines.
fn reference(mut cmd: Command) -> Vec<String> {
    let out = cmd.run();
    assert!(out.status.success(), "uninterrupted run: {out:?}");
    lines(&out.stdout)
}

/// Starts `cmd`, waits for `ready` and `settle`, checkpoints it with `--kill` (as nobody if
/// asked); the image.
fn checkpoint_at_ready(mut cmd: Command, dir: &Path, settle: Duration, nobody: bool) -> PathBuf {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = line_reader(child.stdout.take().unwrap());
    assert_eq!(next_line_timeout(&rx, "ready").as_deref(), Some("ready"));
    std::thread::sleep(settle);
    let pid = child.id().to_string();
    let args = [
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        dir.to_str().unwrap(),
        "--kill",
        "--json",
    ];
    let out = cr(&args, nobody);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "checkpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(j["image"].as_str().unwrap())
}

fn restore(img: &Path, nobody: bool) -> Output {
    if nobody {
        std::fs::set_permissions(img, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    cr(&["restore", img.to_str().unwrap()], nobody)
}

/// The restored run prints what the uninterrupted one printed after `ready`.
fn assert_same(want: &[String], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore: {:?} {stderr}", out.status);
    assert_eq!(want.first().map(String::as_str), Some("ready"));
    assert_eq!(lines(&out.stdout), want[1..], "stderr: {stderr}");
}

/// Checkpoint at `ready` + `settle`, restore, compare with an uninterrupted run.
fn case(mode: &str, settle: Duration, nobody: bool, restore_as_nobody: bool) -> Output {
    let prog = program("proc_state");
    let want = reference(command(&prog, &[mode], nobody));
    let dir = open_dir(&format!("procstate-{mode}"));
    let img = checkpoint_at_ready(command(&prog, &[mode], nobody), dir.path(), settle, nobody);
    let out = restore(&img, restore_as_nobody);
    assert_same(&want, &out);
    out
}

#[test]
fn handlers_siginfo_altstack_and_pending_signals() {
    // Handlers (SA_SIGINFO, on the alternate stack, with their flags and mask), an ignored
    // signal, SIGUSR2 queued with a value while blocked, and a kernel-generated SIGCHLD
    // (CLD_EXITED, the child's status) pending while blocked.
    case("signals", Duration::from_millis(100), false, false);
}

#[test]
fn interval_and_posix_timers_keep_running() {
    // The interval timer ticks on after restore (100 ticks of 20 ms); the POSIX timer, which
    // was not the first created, keeps its id and fires once with its value.
    case("timers", Duration::from_millis(200), false, false);
}

#[test]
fn limits_groups_attributes_and_rseq() {
    // rlimits, supplementary groups, subreaper, timer slack, THP disabled, dumpable,
    // oom_score_adj and glibc's rseq registration.
    if !is_root() {
        return skipped("limits_groups_attributes_and_rseq", "setgroups needs root");
    }
    case("limits", Duration::from_millis(100), false, false);
}

#[test]
fn root_restores_a_users_image_as_that_user() {
    if !is_root() {
        return skipped("root_restores_a_users_image_as_that_user", "needs root");
    }
    // The run as nobody prints uid/gid 65534, no groups, no capabilities: so must the task
    // root restores.
    let out = case("creds", Duration::from_millis(100), true, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("uid 65534 65534 65534 gid 65534 65534 65534"),
        "{text}"
    );
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
}

#[test]
fn a_user_cannot_restore_roots_image() {
    if !is_root() {
        return skipped("a_user_cannot_restore_roots_image", "needs root");
    }
    let prog = program("proc_state");
    let dir = open_dir("procstate-refused");
    let cmd = command(&prog, &["creds"], false);
    let img = checkpoint_at_ready(cmd, dir.path(), Duration::from_millis(50), false);
    let out = restore(&img, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("restore refused") && err.contains("uids [0, 0, 0, 0]"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "the task ran: {out:?}");
}

#[test]
fn a_user_restores_their_own_image() {
    if !is_root() {
        return skipped(
            "a_user_restores_their_own_image",
            "needs root to become nobody",
        );
    }
    // Checkpoint and restore as nobody, without any capability: all but /proc/PID/exe.
    let out = case("signals", Duration::from_millis(100), true, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_CHECKPOINT_RESTORE"), "{err}");
}

const PY: &str = r#"
import os, signal, sys, time
def on(sig, frame):
    print("handler", signal.Signals(sig).name, flush=True)
    if sig == signal.SIGTERM:
        sys.exit(3)
signal.signal(signal.SIGINT, on)
signal.signal(signal.SIGTERM, on)
print("ready", flush=True)
for _ in range(150):
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.05)
print("after SIGINT", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(1)
print("not reached", flush=True)
"#;

#[test]
fn python_runs_its_sigint_and_sigterm_handlers_after_restore() {
    let py = |_: ()| {
        let mut c = Command::new("python3");
        c.args(["-c", PY]);
        c
    };
    let out = py(()).run();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let want = lines(&out.stdout);
    let dir = open_dir("procstate-py");
    let img = checkpoint_at_ready(py(()), dir.path(), Duration::from_millis(100), false);
    let out = restore(&img, false);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        lines(&out.stdout),
        want[1..],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A python3 that maps a file read-only, then prints its executable and the mapping's first
/// bytes.
const PY_MAPS_FILE: &str = r#"
import mmap, os, sys, time
f = open(sys.argv[1], "rb")
m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
print("ready", flush=True)
time.sleep(0.3)
print(os.readlink("/proc/self/exe"), m[:4], flush=True)
"#;

#[test]
fn the_executable_is_the_tasks_also_when_the_image_maps_cr_dump() {
    if !is_root() {
        return skipped(
            "the_executable_is_the_tasks_also_when_the_image_maps_cr_dump",
            "replacing /proc/PID/exe needs CAP_CHECKPOINT_RESTORE",
        );
    }
    // The kernel replaces a task's executable only when no VMA maps the old one, which in the
    // child is cr-dump's binary: mapped by the image here, the restore must still set it.
    let py = |_: ()| {
        let mut c = Command::new("python3");
        c.args(["-c", PY_MAPS_FILE, BIN]);
        c
    };
    let want = reference(py(()));
    assert!(
        want.get(1).is_some_and(|l| !l.contains("cr-dump")),
        "{want:?}"
    );
    let dir = open_dir("procstate-exe");
    let img = checkpoint_at_ready(py(()), dir.path(), Duration::from_millis(100), false);
    let out = restore(&img, false);
    assert_same(&want, &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("/proc/PID/exe"), "{err}");
}

#[test]
fn a_hard_limit_above_the_callers_is_lowered_with_a_warning() {
    if !is_root() {
        return skipped(
            "a_hard_limit_above_the_callers_is_lowered_with_a_warning",
            "needs root to become nobody",
        );
    }
    // Captured with nobody's usual RLIMIT_NOFILE; restored by nobody under a hard limit of 512,
    // which it may not raise: lowered before the fork, with a warning naming it.
    let prog = program("proc_state");
    let dir = open_dir("procstate-rlimit");
    let img = checkpoint_at_ready(
        command(&prog, &["creds"], true),
        dir.path(),
        Duration::from_millis(50),
        true,
    );
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("prlimit")
        .args(["--nofile=256:512", "setpriv"])
        .args(NOBODY)
        .args([BIN, "restore", img.to_str().unwrap()])
        .env("CR_CRID_FILE", crid_file(true))
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("RLIMIT_NOFILE hard limit"), "{err}");
    assert!(err.contains("lowered to 512"), "{err}");
}

#[test]
fn root_restores_a_users_capabilities_and_no_more() {
    if !is_root() {
        return skipped(
            "root_restores_a_users_capabilities_and_no_more",
            "needs root",
        );
    }
    // nobody with CAP_NET_BIND_SERVICE inheritable, permitted, effective and ambient: root
    // restores exactly that set (kept across the change of uid), not root's.
    let prog = program("proc_state");
    let caps = |c: &mut Command| {
        c.args(NOBODY)
            .args([
                "--inh-caps=+net_bind_service",
                "--ambient-caps=+net_bind_service",
            ])
            .arg(&prog)
            .arg("creds");
    };
    let mut reference_cmd = Command::new("setpriv");
    caps(&mut reference_cmd);
    let want = reference(reference_cmd);
    assert!(
        want.iter().any(|l| l == "CapAmb:\t0000000000000400"),
        "{want:?}"
    );
    let dir = open_dir("procstate-caps");
    let mut cmd = Command::new("setpriv");
    caps(&mut cmd);
    cmd.env("CR_CRID_FILE", crid_file(false));
    let img = checkpoint_at_ready(cmd, dir.path(), Duration::from_millis(50), false);
    let out = restore(&img, false);
    assert_same(&want, &out);
}

#[test]
fn a_user_with_cap_checkpoint_restore_gets_the_executable_link_too() {
    if !is_root() {
        return skipped(
            "a_user_with_cap_checkpoint_restore_gets_the_executable_link_too",
            "needs root to become nobody and to setcap",
        );
    }
    // The fix the warning names: `setcap cap_checkpoint_restore+ep` on the binary.
    let dir = open_dir("procstate-setcap");
    let bin = dir.path().join("cr-dump");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let set = Command::new("setcap")
        .args(["cap_checkpoint_restore+ep", bin.to_str().unwrap()])
        .run();
    assert!(set.status.success(), "setcap: {set:?}");
    let prog = program("proc_state");
    let want = reference(command(&prog, &["signals"], true));
    let img = checkpoint_at_ready(
        command(&prog, &["signals"], true),
        dir.path(),
        Duration::from_millis(50),
        true,
    );
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = command(&bin, &["restore", img.to_str().unwrap()], true).run();
    assert_same(&want, &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("/proc/PID/exe"), "{err}");
}

/// A task's nice value and scheduling policy are not in the image (format 1.2 has no field):
/// the checkpoint says so, for a real program run under `nice` and `chrt --batch`, rather than
/// let the restored task run at restore's own priority unannounced.
#[test]
fn a_niced_tasks_scheduling_is_reported_as_not_kept() {
    let dir = open_dir("procstate-nice");
    let mut c = Command::new("nice")
        .args(["-n", "5", "chrt", "--batch", "0", "sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = c.id();
    // Until `sleep` runs in place of `nice` and `chrt` (same pid).
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sleep never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = cr(
        &[
            "checkpoint",
            "--pid",
            &pid.to_string(),
            "-o",
            dir.path().to_str().unwrap(),
            "--json",
        ],
        false,
    );
    let _ = c.kill();
    let _ = c.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = j["fidelity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["item"] == "scheduling")
        .unwrap_or_else(|| panic!("no scheduling line: {j}"));
    assert_eq!(f["kind"], "nice 5, SCHED_BATCH", "{f}");
    assert_eq!(f["action"], "partial", "{f}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scheduling"), "no warning: {err}");
}
