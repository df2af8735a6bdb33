//! More memory kinds across a checkpoint and restore, with real processes (`memkinds2.c`) and
//! the real `cr-dump` binary: a memfd that is both open and mapped shared comes back as one
//! object (a write through the descriptor is read through the mapping and the other way
//! round), with its name, size and seals; a memfd only mapped keeps its contents (reported
//! `partial`: no name and seals); a memfd mapped privately keeps the bytes the task never
//! wrote, and its name; a memfd another process maps too, and System V shared
//! memory, are refused with the reason; `mlockall(MCL_FUTURE)` (and `MCL_ONFAULT`), which no
//! `/proc` file shows, is found and holds after restore.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{line_reader, next_line_timeout, program, Run, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

fn cr(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("CR_CRID_FILE", dir.join("crid"));
    c
}

fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(String::from)
        .collect()
}

fn memkinds2(args: &[&str]) -> Command {
    let mut c = Command::new(program("memkinds2"));
    c.args(args);
    c
}

/// What an uninterrupted run prints.
fn reference(args: &[&str]) -> Vec<String> {
    let out = memkinds2(args).run();
    assert!(out.status.success(), "uninterrupted run: {out:?}");
    lines(&out.stdout)
}

/// Starts `memkinds2 args`, waits for `ready`, checkpoints it with `--kill --json`: the
/// checkpoint's output, and the lines the task printed before `ready`.
fn checkpoint_at_ready(args: &[&str], dir: &Path) -> (Output, Vec<String>) {
    let mut child: Child = memkinds2(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = line_reader(child.stdout.take().unwrap());
    let mut before = Vec::new();
    while let Some(l) = next_line_timeout(&rx, "ready") {
        if l == "ready" {
            break;
        }
        before.push(l);
    }
    std::thread::sleep(Duration::from_millis(50));
    let pid = child.id().to_string();
    let out = cr(dir)
        .args(["checkpoint", "--pid", &pid, "-o"])
        .arg(dir)
        .args(["--kill", "--json"])
        .run();
    let _ = child.kill();
    let _ = child.wait();
    (out, before)
}

/// Checkpoints `args` at `ready`, restores it, and checks its output against an uninterrupted
/// run's: the checkpoint's JSON.
fn round_trip(args: &[&str], tag: &str) -> serde_json::Value {
    let want = reference(args);
    let dir = TempDir::new(tag);
    let (out, _) = checkpoint_at_ready(args, dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "checkpoint: {err}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let img = PathBuf::from(j["image"].as_str().unwrap());
    let out = cr(dir.path()).arg("restore").arg(&img).run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore: {err}");
    assert_eq!(want.first().map(String::as_str), Some("ready"));
    assert_eq!(lines(&out.stdout), want[1..], "restore's stderr: {err}");
    j
}

/// The fidelity lines whose kind contains `what`.
fn fidelity<'a>(j: &'a serde_json::Value, what: &str) -> Vec<&'a serde_json::Value> {
    j["fidelity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"].as_str().is_some_and(|k| k.contains(what)))
        .collect()
}

#[test]
fn a_memfd_open_and_mapped_shared_is_one_object_after_restore() {
    let j = round_trip(&["join"], "mk2-join");
    let maps = fidelity(&j, "shared mapping of memfd cr-test-shm");
    assert_eq!(maps.len(), 2, "{j}");
    for l in maps {
        assert_eq!(l["action"], "restore", "{l}");
        assert!(
            l["kind"].as_str().unwrap().contains("the memfd of fd 5"),
            "{l}"
        );
    }
    let fd = j["fidelity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["item"] == "fd 5")
        .unwrap();
    assert_eq!(fd["action"], "restore", "{fd}");
    assert!(
        fd["kind"].as_str().unwrap().contains("also mapped shared"),
        "{fd}"
    );
}

#[test]
fn a_memfd_only_mapped_keeps_its_contents_reported_partial() {
    let j = round_trip(&["maponly"], "mk2-maponly");
    let l = fidelity(&j, "shared mapping of memfd cr-test-maponly");
    assert_eq!(l.len(), 1, "{j}");
    assert_eq!(l[0]["action"], "partial", "{}", l[0]);
    assert!(
        l[0]["note"].as_str().unwrap().contains("name and seals"),
        "{}",
        l[0]
    );
}

#[test]
fn a_memfd_mapped_privately_keeps_its_bytes_and_its_name() {
    // The pages the task never wrote are the memfd's: stored whole (it is a deleted file),
    // restored from a new memfd of the same name.
    let j = round_trip(&["private"], "mk2-private");
    let l = fidelity(&j, "private mapping of /memfd:cr-test-private");
    assert_eq!(l.len(), 1, "{j}");
    assert_eq!(l[0]["action"], "partial", "{}", l[0]);
    assert!(
        l[0]["note"]
            .as_str()
            .unwrap()
            .contains("also has this memfd open"),
        "{}",
        l[0]
    );
}

#[test]
fn a_memfd_another_process_maps_is_refused_naming_it() {
    let dir = TempDir::new("mk2-other");
    let (out, before) = checkpoint_at_ready(&["other"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let child = before
        .iter()
        .find_map(|l| l.strip_prefix("child "))
        .unwrap();
    assert!(err.contains("/memfd:cr-test-other"), "{err}");
    assert!(
        err.contains(&format!("also mapped by process {child} (memkinds2")),
        "{err}"
    );
    assert!(
        dir.entries().iter().all(|e| !e.contains(".img")),
        "{:?}",
        dir.entries()
    );
}

#[test]
fn system_v_shared_memory_is_refused_with_the_reason() {
    let dir = TempDir::new("mk2-sysv");
    let (out, _) = checkpoint_at_ready(&["sysv"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("System V shared memory"), "{err}");
    assert!(err.contains("IPC namespace"), "{err}");
}

/// The "process attributes" line of the fidelity report.
fn attributes(j: &serde_json::Value) -> String {
    let l = j["fidelity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["item"] == "process attributes")
        .unwrap();
    l["kind"].as_str().unwrap().to_string()
}

#[test]
fn mlockall_future_is_found_and_holds_after_restore() {
    // Found by the probe, then a mapping the restored task makes is locked (the output says
    // so, as the uninterrupted run's does).
    let j = round_trip(&["lockall"], "mk2-lockall");
    let a = attributes(&j);
    assert!(a.ends_with("mlockall(MCL_FUTURE)"), "{a}");
    let j = round_trip(&["lockall", "onfault"], "mk2-lockall-onfault");
    let a = attributes(&j);
    assert!(a.ends_with("mlockall(MCL_FUTURE|MCL_ONFAULT)"), "{a}");
    // A task without it is not taken for one.
    let j = round_trip(&["maponly"], "mk2-nolock");
    assert!(!attributes(&j).contains("mlockall"), "{j}");
}

#[test]
fn mlockall_refused_at_restore_is_a_warning_naming_rlimit_memlock() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if root.ok() != Some(0) {
        return cr_tests::skipped(
            "mlockall_refused_at_restore_is_a_warning_naming_rlimit_memlock",
            "needs root to become nobody",
        );
    }
    // nobody's task with mlockall(MCL_FUTURE), restored by nobody under RLIMIT_MEMLOCK 0,
    // where mlockall is refused: the restore goes on, with a warning naming the limit.
    let dir = TempDir::new("mk2-memlock");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let nobody = |c: &mut Command| {
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .env("CR_CRID_FILE", dir.path().join("crid"));
    };
    let mut task = Command::new("setpriv");
    nobody(&mut task);
    let mut child = task
        .arg(program("memkinds2"))
        .arg("lockall")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = line_reader(child.stdout.take().unwrap());
    assert_eq!(next_line_timeout(&rx, "ready").as_deref(), Some("ready"));
    let mut ck = Command::new("setpriv");
    nobody(&mut ck);
    let pid = child.id().to_string();
    let out = ck
        .args([BIN, "checkpoint", "--pid", &pid, "-o"])
        .arg(dir.path())
        .args(["--kill", "--json"])
        .run();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(attributes(&j).contains("mlockall(MCL_FUTURE)"), "{j}");
    let img = j["image"].as_str().unwrap();
    let mut rs = Command::new("prlimit");
    rs.args(["--memlock=0:0", "setpriv"]);
    nobody(&mut rs);
    let out = rs.args([BIN, "restore", img]).run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mlockall(MCL_FUTURE) failed"), "{err}");
    assert!(err.contains("RLIMIT_MEMLOCK"), "{err}");
    assert_eq!(lines(&out.stdout), ["new mapping locked: 0"], "{err}");
}

#[test]
fn a_twin_holds_the_task_and_a_copy_holds_its_shared_page() {
    // 40 MiB of private memory and a shared page: a twin is made (the stop is a fork's, not
    // a copy of 40 MiB), only the shared page is copied while the task is stopped. The task
    // writes the shared page while the image is written from the twin: the image holds it as
    // it was at the freeze, and the private memory as the twin holds it.
    use std::io::Write;
    let dir = TempDir::new("mk2-twin");
    let mut child = Command::new(program("twinshared"))
        .arg("40")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let rx = line_reader(child.stdout.take().unwrap());
    assert_eq!(next_line_timeout(&rx, "ready").as_deref(), Some("ready"));
    let pid = child.id().to_string();
    let d = dir.path().to_path_buf();
    let ck = std::thread::spawn(move || {
        cr(&d)
            .env("CR_DUMP_TEST_WRITEBACK_PAUSE_MS", "1500")
            .args(["checkpoint", "--pid", &pid, "--twin", "--json", "-o"])
            .arg(&d)
            .run()
    });
    // Once the task runs again beside its twin (a child of it, stopped), poke the shared page.
    let kids = format!("/proc/{0}/task/{0}/children", child.id());
    let status = format!("/proc/{}/status", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ck.is_finished() && std::time::Instant::now() < deadline {
        let k = std::fs::read_to_string(&kids).unwrap_or_default();
        let st = std::fs::read_to_string(&status).unwrap_or_default();
        if !k.trim().is_empty() && st.contains("TracerPid:\t0\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    stdin.write_all(b"X\n").unwrap();
    assert_eq!(next_line_timeout(&rx, "poked").as_deref(), Some("poked"));
    let out = ck.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["snapshot"], "twin", "{j}");
    assert!(j["data_pages"].as_u64().unwrap() >= 40 * 256, "{j}");
    drop(stdin);
    let want = next_line_timeout(&rx, "sum").unwrap();
    // The poke wrote the first byte of the shared page.
    assert!(want.ends_with("shared Xhared-at-start"), "{want}");
    let _ = child.wait();
    let img = PathBuf::from(j["image"].as_str().unwrap());
    let out = cr(dir.path())
        .arg("restore")
        .arg(&img)
        .stdin(Stdio::null())
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Same private memory; the shared page as it was at the freeze.
    let sum = want.replace("shared Xhared-at-start", "shared shared-at-start");
    assert_eq!(lines(&out.stdout), [sum], "{err}");
}
