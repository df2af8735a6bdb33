//! Restore with the original pid (`restore --pid same|new|auto`): a python3 asyncio program,
//! whose event loop remembers the pid it started in, checkpointed, killed and restored, runs
//! on as an uninterrupted run does; the choice of pid refused or lowered with the reason
//! (the pid taken, naming the holder; no capability, naming how to grant it).

use cr_tests::{line_reader, next_line_timeout, skipped, Run, TempDir};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

/// Ticks of an asyncio loop; after each, `get_running_loop()` (which fails with "no running
/// event loop" once `os.getpid()` differs from the pid the loop started in), the pid and tid
/// compared with the first ones, and the pid as `/proc/self/status` shows it (NSpid).
const PY: &str = r#"
import asyncio, os, threading
PID0 = os.getpid()
def nspid():
    with open("/proc/self/status") as f:
        for l in f:
            if l.startswith("NSpid:"):
                return int(l.split()[-1])
async def main():
    print("ready", flush=True)
    for i in range(8):
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        same = os.getpid() == PID0 and threading.get_native_id() == PID0 and nspid() == PID0
        print("tick", i, loop.is_running(), same, flush=True)
    print("done", flush=True)
asyncio.run(main())
"#;

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

/// The CRID file of the runs as root, or as nobody (a CRID file is its owner's only).
fn crid_file(nobody: bool) -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    let d = D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("cr-test-samepid-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        d
    });
    d.join(if nobody { "crid-nobody" } else { "crid" })
}

/// `prog args`, as nobody (through `setpriv`, which execs it: same pid) if asked.
fn command(prog: &str, args: &[&str], nobody: bool) -> Command {
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

/// The system's python3 (one nobody may run: pyenv's shims live under /root).
fn python_bin() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn python(nobody: bool) -> Command {
    command(python_bin(), &["-c", PY], nobody)
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

/// The task started from `cmd`, checkpointed at `ready` (and killed with `--kill` if asked;
/// else left running): the image, the pid, and the task if it still runs.
fn checkpoint_at_ready(
    mut cmd: Command,
    dir: &Path,
    kill: bool,
    nobody: bool,
) -> (PathBuf, i32, Child) {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = line_reader(child.stdout.take().unwrap());
    assert_eq!(next_line_timeout(&rx, "ready").as_deref(), Some("ready"));
    std::thread::sleep(Duration::from_millis(100));
    let pid = child.id().to_string();
    let mut args = vec!["checkpoint", "--pid", &pid, "-o", dir.to_str().unwrap()];
    if kill {
        args.push("--kill");
    }
    args.push("--json");
    let out = command(BIN, &args, nobody).run();
    if kill {
        // Reaped here, so that its pid is free for the restore.
        let _ = child.wait();
    }
    assert!(
        out.status.success(),
        "checkpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let img = PathBuf::from(j["image"].as_str().unwrap());
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).unwrap();
    (img, child.id() as i32, child)
}

/// `cr-dump restore IMG --pid MODE --pid-file F` (as nobody if asked): its output and the
/// restored task's pid (if it started).
fn restore(img: &Path, mode: &str, dir: &Path, nobody: bool) -> (Output, Option<i32>) {
    let pf = dir.join(format!("pid-{mode}"));
    let _ = std::fs::remove_file(&pf);
    let args = [
        "restore",
        img.to_str().unwrap(),
        "--pid",
        mode,
        "--pid-file",
        pf.to_str().unwrap(),
    ];
    let out = command(BIN, &args, nobody).run();
    let pid = std::fs::read_to_string(&pf)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    (out, pid)
}

/// The lines an uninterrupted run prints.
fn reference() -> Vec<String> {
    let out = python(false).run();
    assert!(out.status.success(), "uninterrupted run: {out:?}");
    let want = lines(&out.stdout);
    assert_eq!(want.len(), 10, "{want:?}");
    assert_eq!(want[1], "tick 0 True True");
    want
}

fn python_ok(test: &str) -> bool {
    let ok = Command::new(python_bin())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skipped(test, "no python3");
    }
    ok
}

#[test]
fn asyncio_keeps_its_pid_and_runs_on_after_restore() {
    if !python_ok("asyncio_keeps_its_pid_and_runs_on_after_restore") {
        return;
    }
    if !is_root() {
        return skipped(
            "asyncio_keeps_its_pid_and_runs_on_after_restore",
            "choosing a pid needs CAP_CHECKPOINT_RESTORE",
        );
    }
    let want = reference();
    let dir = open_dir("samepid-asyncio");
    for mode in ["auto", "same"] {
        let (img, pid, _) = checkpoint_at_ready(python(false), dir.path(), true, false);
        let (out, got) = restore(&img, mode, dir.path(), false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "restore --pid {mode}: {err}");
        assert_eq!(got, Some(pid), "--pid {mode}: {err}");
        assert!(!err.contains("new pid"), "{err}");
        assert_eq!(lines(&out.stdout), want[1..], "--pid {mode}: {err}");
    }
}

#[test]
fn a_new_pid_breaks_asyncio_which_is_why_the_same_one_matters() {
    if !python_ok("a_new_pid_breaks_asyncio_which_is_why_the_same_one_matters") {
        return;
    }
    // `--pid new` gets another pid; asyncio then finds no running loop: the failure the same
    // pid avoids (and a check that the test above can fail).
    let dir = open_dir("samepid-new");
    let (img, pid, _) = checkpoint_at_ready(python(false), dir.path(), true, false);
    let (out, got) = restore(&img, "new", dir.path(), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(got.is_some_and(|p| p != pid), "{got:?} {pid} {err}");
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no running event loop"), "{err}");
}

#[test]
fn same_is_refused_while_the_pid_is_taken_and_auto_takes_a_new_one() {
    if !python_ok("same_is_refused_while_the_pid_is_taken_and_auto_takes_a_new_one") {
        return;
    }
    let dir = open_dir("samepid-taken");
    // Not killed: the original holds its pid.
    let (img, pid, mut orig) = checkpoint_at_ready(python(false), dir.path(), false, false);
    let (out, got) = restore(&img, "same", dir.path(), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(got, None, "{err}");
    assert!(
        err.contains(&format!("pid {pid} is taken by process {pid} (python3)")),
        "{err}"
    );
    let (out, got) = restore(&img, "auto", dir.path(), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(got.is_some_and(|p| p != pid), "{got:?} {pid} {err}");
    assert!(
        err.contains(&format!(
            "the task gets a new pid, not its own {pid}: pid {pid} is taken"
        )),
        "{err}"
    );
    let _ = orig.kill();
    let _ = orig.wait();
}

#[test]
fn nobody_gets_a_new_pid_with_the_reason_or_a_refusal() {
    if !python_ok("nobody_gets_a_new_pid_with_the_reason_or_a_refusal") {
        return;
    }
    if !is_root() {
        return skipped(
            "nobody_gets_a_new_pid_with_the_reason_or_a_refusal",
            "needs root to become nobody",
        );
    }
    let dir = open_dir("samepid-nobody");
    let (img, pid, _) = checkpoint_at_ready(python(true), dir.path(), true, true);
    let (out, got) = restore(&img, "same", dir.path(), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(got, None, "{err}");
    assert!(err.contains("restore --pid same refused"), "{err}");
    assert!(err.contains("setcap cap_checkpoint_restore+ep"), "{err}");
    let (out, got) = restore(&img, "auto", dir.path(), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(got.is_some_and(|p| p != pid), "{got:?} {pid} {err}");
    assert!(
        err.contains(&format!("the task gets a new pid, not its own {pid}")),
        "{err}"
    );
    assert!(err.contains("CAP_CHECKPOINT_RESTORE"), "{err}");
}
