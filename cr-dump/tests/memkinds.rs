//! Memory kinds across a checkpoint and restore, with real processes and the real `cr-dump`
//! binary: shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS` and `/dev/zero` mapped shared,
//! one object split in three VMAs, a page only a child that exited wrote) keeps its contents
//! and stays shared (a fork in the restored task shares it); `MADV_DONTFORK` and
//! `MADV_WIPEONFORK` act on a fork child after restore; locked memory is locked again; the
//! restored task's `/proc/PID/maps` is the original's line for line. In every capture mode:
//! lazy (copy and twin), `--direct`, incremental, pre-copy; the twin mode with the task
//! writing the shared memory during the write-back. Python's `mmap.mmap(-1, n)` too; and a
//! shared mapping another process also maps is refused, naming it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{line_reader, next_line_timeout, program, Run, TempDir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

fn cr(dir: &TempDir) -> Command {
    let mut c = Command::new(BIN);
    c.env("CR_CRID_FILE", dir.path().join("crid"));
    c
}

/// A process talked to through its stdin and stdout; killed and reaped when dropped.
struct Talk {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
}

impl Talk {
    fn start(mut c: Command) -> Talk {
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = line_reader(child.stdout.take().unwrap());
        Talk { child, stdin, out }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn send(&mut self, line: &str) {
        let i = self.stdin.as_mut().unwrap();
        i.write_all(format!("{line}\n").as_bytes()).unwrap();
        i.flush().unwrap();
    }

    /// Lines up to and including the first that `last` accepts (or to the end).
    fn until(&mut self, last: impl Fn(&str) -> bool) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(l) = next_line_timeout(&self.out, "memkinds") {
            let stop = last(&l);
            v.push(l);
            if stop {
                break;
            }
        }
        v
    }

    /// Sends `maps` and returns the maps lines.
    fn maps(&mut self) -> Vec<String> {
        self.send("maps");
        let mut m = self.until(|l| l == "end");
        assert_eq!(m.pop().as_deref(), Some("end"), "{m:?}");
        m
    }

    /// Sends `go` and returns what it prints, to `done`.
    fn go(&mut self) -> Vec<String> {
        self.send("go");
        let v = self.until(|l| l == "done");
        assert_eq!(v.last().map(String::as_str), Some("done"), "{v:?}");
        v
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }
}

impl Drop for Talk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn memkinds(args: &[&str]) -> Talk {
    let mut c = Command::new(program("memkinds"));
    c.args(args);
    let mut t = Talk::start(c);
    assert_eq!(t.until(|_| true), ["ready"]);
    t
}

/// What an uninterrupted run with `args` prints for `go`.
fn reference(args: &[&str]) -> Vec<String> {
    memkinds(args).go()
}

/// Address range, permissions, offset and path of each maps line (the device and inode of a
/// shared anonymous object are new after restore).
fn layout(maps: &[String]) -> Vec<String> {
    maps.iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mut k: Vec<&str> = f.iter().take(3).copied().collect();
            k.extend(f.iter().skip(5));
            k.join(" ")
        })
        .collect()
}

fn checkpoint(dir: &TempDir, pid: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["checkpoint", "--pid", pid, "-o"];
    args.push(dir.path().to_str().unwrap());
    args.push("--json");
    args.extend_from_slice(extra);
    let mut c = cr(dir);
    c.args(&args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.run()
}

fn image_of(out: &Output) -> PathBuf {
    assert!(
        out.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(j["image"].as_str().unwrap())
}

/// Restores `img`, checks its maps against `maps` line for line and its `go` output against
/// an uninterrupted run's.
fn restore_and_check(dir: &TempDir, img: &Path, maps: &[String], args: &[&str], mode: &str) {
    let mut c = cr(dir);
    c.args(["restore", img.to_str().unwrap()]);
    let mut r = Talk::start(c);
    let got = r.maps();
    assert_eq!(
        layout(&got),
        layout(maps),
        "{mode}: maps differ after restore"
    );
    let out = r.go();
    let _ = r.child.wait();
    let err = r.stderr();
    assert_eq!(
        out,
        reference(args),
        "{mode}: restored run differs (stderr: {err})"
    );
    assert!(
        !err.contains("mappings where the image has"),
        "{mode}: {err}"
    );
}

/// One mode: checkpoint, kill the task, restore, compare.
fn round_trip(extra: &[&str], mode: &str) {
    let dir = TempDir::new("memkinds");
    let mut t = memkinds(&["64"]);
    let maps = t.maps();
    let img = image_of(&checkpoint(&dir, &t.pid(), extra, &[]));
    drop(t);
    restore_and_check(&dir, &img, &maps, &["64"], mode);
}

#[test]
fn shared_memory_and_attributes_lazy_copy() {
    round_trip(&["--kill"], "lazy copy");
}

#[test]
fn shared_memory_and_attributes_direct() {
    round_trip(&["--kill", "--direct"], "--direct");
}

#[test]
fn shared_memory_and_attributes_precopy() {
    round_trip(&["--precopy"], "--precopy");
}

#[test]
fn shared_memory_and_attributes_incremental() {
    let dir = TempDir::new("memkinds-incr");
    let mut t = memkinds(&["64"]);
    let maps = t.maps();
    image_of(&checkpoint(&dir, &t.pid(), &[], &[]));
    let img = image_of(&checkpoint(
        &dir,
        &t.pid(),
        &["--incremental", "--kill"],
        &[],
    ));
    let _ = t.child.wait();
    restore_and_check(&dir, &img, &maps, &["64"], "incremental");
}

/// Twin mode: the task writes its shared memory while the image is written from the twin. The
/// image must hold the memory as it was at the freeze (the twin shares that memory with the
/// task, so cr-dump must not read it from there).
#[test]
fn shared_memory_written_during_a_twin_write_back() {
    let dir = TempDir::new("memkinds-twin");
    let args = ["64", "twin"];
    let mut t = memkinds(&args);
    let maps = t.maps();
    let pid = t.pid();
    let dir_path = dir.path().to_path_buf();
    let ck = std::thread::spawn(move || {
        let mut c = Command::new(BIN);
        c.env("CR_CRID_FILE", dir_path.join("crid"))
            .env("CR_DUMP_TEST_WRITEBACK_PAUSE_MS", "1500")
            .args(["checkpoint", "--pid", &pid, "--twin", "--json", "-o"])
            .arg(&dir_path);
        c.run()
    });
    // Poke once the task runs again after its freeze: its twin (a child) exists and it is not
    // traced; or once the checkpoint is over (it made no twin).
    let deadline = Instant::now() + Duration::from_secs(20);
    let children = format!("/proc/{}/task/{}/children", t.pid(), t.pid());
    let status = format!("/proc/{}/status", t.pid());
    while !ck.is_finished() && Instant::now() < deadline {
        let kids = std::fs::read_to_string(&children).unwrap_or_default();
        let st = std::fs::read_to_string(&status).unwrap_or_default();
        if !kids.trim().is_empty() && st.contains("TracerPid:\t0\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    t.send("poke");
    assert_eq!(t.until(|_| true), ["poked"]);
    let img = image_of(&ck.join().unwrap());
    drop(t);
    restore_and_check(&dir, &img, &maps, &args, "twin");
}

#[test]
fn python_mmap_anonymous_stays_shared() {
    let script = r#"
import mmap, os, sys, hashlib
m = mmap.mmap(-1, 3 * 4096)
for i in range(0, len(m), 97):
    m[i] = (i * 31) % 251
print("ready", flush=True)
sys.stdin.readline()
print("sha", hashlib.sha256(m[:]).hexdigest(), flush=True)
pid = os.fork()
if pid == 0:
    m[1] = 0xab
    os._exit(0)
os.waitpid(pid, 0)
print("after child", hex(m[1]), flush=True)
"#;
    let run = |t: &mut Talk| {
        t.send("go");
        t.until(|l| l.starts_with("after child"))
    };
    let mut c = Command::new("python3");
    c.args(["-c", script]);
    let mut want_t = Talk::start(c);
    assert_eq!(want_t.until(|_| true), ["ready"]);
    let want = run(&mut want_t);
    assert_eq!(want.last().map(String::as_str), Some("after child 0xab"));

    let dir = TempDir::new("memkinds-py");
    let mut c = Command::new("python3");
    c.args(["-c", script]);
    let mut t = Talk::start(c);
    assert_eq!(t.until(|_| true), ["ready"]);
    let img = image_of(&checkpoint(&dir, &t.pid(), &["--kill"], &[]));
    let _ = t.child.wait();
    let mut c = cr(&dir);
    c.args(["restore", img.to_str().unwrap()]);
    let mut r = Talk::start(c);
    let got = run(&mut r);
    assert_eq!(got, want, "stderr: {}", r.stderr());
}

#[test]
fn shared_memory_another_process_maps_is_refused_naming_it() {
    let dir = TempDir::new("memkinds-other");
    let t = cr_tests::Target::spawn(&program("misc"), &["shared"]);
    let out = checkpoint(&dir, &t.pid().to_string(), &[], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", t.pid())).unwrap();
    let kid = kids.split_whitespace().next().unwrap();
    assert!(
        err.contains(&format!("also mapped by process {kid} (misc")),
        "{err}"
    );
}

/// A private mapping of a file deleted since it was mapped: its contents go into the image, and
/// restore maps a file recreated with them (unlinked again, so nothing is left at its path).
#[test]
fn deleted_file_mapping_keeps_its_contents() {
    let dir = TempDir::new("memkinds-deleted");
    let start = |name: &str| {
        let mut c = Command::new(program("deleted_map"));
        c.arg(dir.path().join(name));
        let mut t = Talk::start(c);
        assert_eq!(t.until(|_| true), ["ready"]);
        t
    };
    let mut want = start("reference");
    want.send("go");
    let want = want.until(|l| l == "done");
    let mut t = start("mapped");
    let img = image_of(&checkpoint(&dir, &t.pid(), &["--kill"], &[]));
    let _ = t.child.wait();
    let mut c = cr(&dir);
    c.args(["restore", img.to_str().unwrap()]);
    let mut r = Talk::start(c);
    r.send("go");
    let got = r.until(|l| l == "done");
    let err = r.stderr();
    assert_eq!(got, want, "stderr: {err}");
    // The test's pipes at 0-2 are attached to restore's own (said once each); nothing else.
    let other = err
        .lines()
        .filter(|l| l.contains("warning") && !l.contains("attached to restore's own fd"))
        .collect::<Vec<_>>();
    assert!(other.is_empty(), "{err}");
    assert!(!dir.path().join("mapped").exists());
}

/// Locked memory restored by a caller who may not lock it (no `CAP_IPC_LOCK`, `RLIMIT_MEMLOCK`
/// 0): the restore goes on, and a warning names each VMA left unlocked and why.
#[test]
fn a_lock_that_fails_at_restore_is_a_warning_naming_it() {
    for tool in ["setpriv", "prlimit"] {
        if Command::new(tool)
            .arg("--version")
            .run()
            .status
            .code()
            .is_none()
        {
            panic!("{tool} is missing (util-linux)");
        }
    }
    let dir = TempDir::new("memkinds-lock");
    let mut t = memkinds(&[]);
    let img = image_of(&checkpoint(&dir, &t.pid(), &["--kill"], &[]));
    let _ = t.child.wait();
    let mut c = Command::new("setpriv");
    c.args(["--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock"])
        .args(["prlimit", "--memlock=0:0", BIN, "restore"])
        .arg(&img)
        .env("CR_CRID_FILE", dir.path().join("crid"));
    let mut r = Talk::start(c);
    let out = r.go();
    let err = r.stderr();
    assert!(out.iter().any(|l| l.ends_with("VmLck 0 kB")), "{out:?}");
    assert!(
        err.contains("mlock2(MLOCK_ONFAULT) of ") && err.contains("mlock2 of "),
        "{err}"
    );
    assert!(err.contains("CAP_IPC_LOCK"), "{err}");
}

#[test]
fn shared_memory_and_attributes_tracked_incremental() {
    let dir = TempDir::new("memkinds-track");
    let mut t = memkinds(&["64"]);
    let maps = t.maps();
    image_of(&checkpoint(&dir, &t.pid(), &["--track"], &[]));
    let img = image_of(&checkpoint(&dir, &t.pid(), &["--incremental"], &[]));
    drop(t);
    restore_and_check(&dir, &img, &maps, &["64"], "tracked incremental");
}
