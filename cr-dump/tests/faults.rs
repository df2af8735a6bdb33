//! Faults and refusals, each against a real process: in every case cr-dump exits 1 with a clear
//! `cr-dump: error: ...` message, the target is left running (not stopped, not traced), and no
//! file appears in the output directory (neither at the final name nor as a temporary).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{assert_running, program, state, Run, Target, TempDir};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

/// `cr-dump` with this test binary's CRID file in its environment.
fn cr() -> Command {
    cr_tests::cr_command(BIN)
}
fn dump_in(dir: &TempDir, pid: i32) -> Output {
    cr().args(["checkpoint", "--pid", &pid.to_string(), "-o"])
        .arg(dir.path())
        .run()
}

/// Exit 1, `cr-dump: error:` with `needle`, empty output directory.
fn assert_failed(out: &Output, needle: &str, dir: &TempDir) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("cr-dump: error: "), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(dir.entries(), Vec::<String>::new(), "files left behind");
}

#[test]
fn refuses_a_multithreaded_task() {
    let d = TempDir::new("thr");
    let t = Target::spawn(&program("misc"), &["threads"]);
    assert_failed(&dump_in(&d, t.pid()), "2 threads", &d);
    assert_running(t.pid());
}

#[test]
fn refuses_a_shared_writable_mapping() {
    let d = TempDir::new("shm");
    let t = Target::spawn(&program("misc"), &["shared"]);
    assert_failed(&dump_in(&d, t.pid()), "is also mapped by process", &d);
    assert_running(t.pid());
}

#[test]
fn refuses_a_zombie() {
    let d = TempDir::new("zombie");
    let t = Target::spawn(&program("misc"), &["zombie"]);
    let child: i32 = t.lines[0].strip_prefix("child ").unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while state(child).map(|s| s.0) != Some('Z') {
        assert!(Instant::now() < deadline, "child never became a zombie");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_failed(&dump_in(&d, child), "zombie", &d);
    assert_running(t.pid());
}

/// A 93-byte static i386 ELF (no libc) that calls pause() in a loop, built here byte by byte
/// (no multilib compiler needed; the kernel runs it through its IA-32 emulation).
fn i386_pause_elf() -> Vec<u8> {
    const BASE: u32 = 0x0804_8000;
    // mov eax, 29 (pause); int 0x80; jmp back to the mov
    let code = [0xb8, 29, 0, 0, 0, 0xcd, 0x80, 0xeb, 0xf7];
    let len = 52 + 32 + code.len() as u32;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&3u16.to_le_bytes()); // EM_386
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(BASE + 84).to_le_bytes()); // entry: the code
    e.extend_from_slice(&52u32.to_le_bytes()); // phoff
    e.extend_from_slice(&0u32.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [52u16, 32, 1, 0, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, sh*
    }
    for v in [1u32, 0, BASE, BASE, len, len, 5, 0x1000] {
        e.extend_from_slice(&v.to_le_bytes()); // PT_LOAD of the whole file, R+X
    }
    e.extend_from_slice(&code);
    e
}

#[test]
fn refuses_an_i386_task() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("i386");
    let bin_dir = TempDir::new("i386-bin");
    let bin = bin_dir.path().join("pause32");
    std::fs::write(&bin, i386_pause_elf()).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = match Command::new(&bin).spawn() {
        Ok(c) => c,
        // A kernel without IA-32 emulation cannot run it: nothing to test, and said so.
        Err(e) => {
            cr_tests::skipped("refuses_an_i386_task", &format!("no IA-32 emulation ({e})"));
            return;
        }
    };
    let pid = i32::try_from(child.id()).unwrap();
    // Wait until it runs its own code (exe is the new image once execve is done).
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .as_deref()
        != Some(bin.as_path())
    {
        assert!(Instant::now() < deadline, "the i386 program did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = dump_in(&d, pid);
    let alive = child.try_wait().unwrap().is_none();
    let st = state(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert_failed(&out, "unsupported architecture: i386", &d);
    assert!(alive, "the i386 program died");
    assert!(
        matches!(st, Some((c, 0)) if c != 'T' && c != 't'),
        "left stopped or traced: {st:?}"
    );
}

#[test]
fn refuses_a_kernel_thread() {
    // kthreadd (pid 2) or any task flagged as a kernel thread; none is visible in some pid
    // namespaces, then there is nothing to test.
    let kt = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| s.contains("Kthread:\t1"))
                .unwrap_or(false)
        });
    let Some(kt) = kt else {
        cr_tests::skipped(
            "refuses_a_kernel_thread",
            "no kernel thread in this pid namespace",
        );
        return;
    };
    let d = TempDir::new("kthread");
    assert_failed(&dump_in(&d, kt), "kernel thread", &d);
}

#[test]
fn pid_that_does_not_exist() {
    let d = TempDir::new("nopid");
    // A pid past pid_max cannot exist.
    assert_failed(&dump_in(&d, 99_999_999), "no such process", &d);
    assert_failed(&dump_in(&d, 0), "no such process", &d);
}

/// Starts cr-dump with the test hook that pauses right after the freeze; returns it once it is
/// frozen.
fn start_paused(
    dir: &TempDir,
    pid: i32,
    extra: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut c = cr()
        .args(["checkpoint", "--pid", &pid.to_string(), "-o"])
        .arg(dir.path())
        .args(extra)
        .env("CR_DUMP_TEST_PAUSE_MS", "1000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = cr_tests::line_reader(c.stderr.take().unwrap());
    let l = cr_tests::next_line_timeout(&err, "cr-dump's test hook").unwrap_or_default();
    assert!(l.contains("test-hook: frozen"), "{l}");
    (c, err)
}

#[test]
fn refuses_a_task_already_traced() {
    let d = TempDir::new("traced");
    let d2 = TempDir::new("traced2");
    let t = Target::spawn(&program("misc"), &["spin"]);
    let (mut first, _err) = start_paused(&d, t.pid(), &[]);
    let (st, tracer) = state(t.pid()).unwrap();
    assert_eq!(st, 't');
    assert_eq!(tracer, first.id() as i32);
    assert_failed(&dump_in(&d2, t.pid()), "already traced by pid", &d2);
    // The first one finishes fine.
    assert!(cr_tests::wait_timeout(&mut first, cr_tests::process_timeout()).success());
    assert_running(t.pid());
}

#[test]
fn target_killed_mid_capture() {
    for extra in [&[][..], &["--direct"][..]] {
        let d = TempDir::new("tkill");
        let mut t = Target::spawn(&program("misc"), &["spin"]);
        let (c, err) = start_paused(&d, t.pid(), extra);
        t.child.kill().unwrap();
        t.child.wait().unwrap();
        let out = cr_tests::output_timeout(c, cr_tests::process_timeout());
        let mut msg = String::new();
        while let Some(l) = cr_tests::next_line_timeout(&err, "cr-dump's stderr") {
            msg += &l;
            msg.push('\n');
        }
        assert_eq!(out.status.code(), Some(1), "{msg}");
        assert!(msg.starts_with("cr-dump: error: "), "{msg}");
        assert!(msg.contains("exited during the checkpoint"), "{msg}");
        assert!(out.stdout.is_empty());
        assert_eq!(d.entries(), Vec::<String>::new());
    }
}

#[test]
fn dumper_killed_mid_capture_releases_the_target() {
    for extra in [&[][..], &["--direct"][..]] {
        let d = TempDir::new("dkill");
        let t = Target::spawn(&program("misc"), &["spin"]);
        let (mut c, _err) = start_paused(&d, t.pid(), extra);
        assert_eq!(state(t.pid()).unwrap().0, 't');
        c.kill().unwrap();
        c.wait().unwrap();
        // The kernel releases a PTRACE_SEIZE tracee when its tracer dies.
        assert_running(t.pid());
        // The image was unnamed (O_TMPFILE): nothing is left.
        assert_eq!(d.entries(), Vec::<String>::new());
    }
}

#[test]
fn dumper_killed_mid_write_back_from_a_twin() {
    let d = TempDir::new("dkill-twin");
    let t = Target::spawn(&program("misc"), &["spin"]);
    let mut c = cr()
        .args(["checkpoint", "--twin", "--pid", &t.pid().to_string(), "-o"])
        .arg(d.path())
        .env("CR_DUMP_TEST_WRITEBACK_PAUSE_MS", "10000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The twin is the task's child while the write-back waits.
    let children = format!("/proc/{0}/task/{0}/children", t.pid());
    let deadline = Instant::now() + Duration::from_secs(5);
    let twin: i32 = loop {
        let s = std::fs::read_to_string(&children).unwrap();
        if let Some(p) = s.split_whitespace().next() {
            break p.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no twin appeared");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_running(t.pid());
    c.kill().unwrap();
    c.wait().unwrap();
    // PTRACE_O_EXITKILL: the twin dies with its tracer. Nobody reaps it (it has no exit
    // signal and the task does not know it): it stays a zombie until the task exits.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(state(twin), None | Some(('Z', _))) {
        assert!(
            Instant::now() < deadline,
            "twin still alive: {:?}",
            state(twin)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_running(t.pid());
    assert_eq!(d.entries(), Vec::<String>::new());
}

#[test]
fn output_directory_not_writable() {
    let t = Target::spawn(&program("misc"), &["spin"]);
    // Its parent does not exist (a missing last component would be created).
    let d = TempDir::new("nodir");
    let missing = d.path().join("missing").join("out");
    let out = cr()
        .args(["checkpoint", "--pid", &t.pid().to_string(), "-o"])
        .arg(&missing)
        .env("CR_CRID_FILE", cr_tests::crid_file())
        .run();
    assert_failed(&out, "output directory", &d);
    assert_running(t.pid());
    // Immutable (root ignores mode bits, not the immutable attribute).
    let d = TempDir::new("immutable");
    if Command::new("chattr")
        .arg("+i")
        .arg(d.path())
        .stdin(Stdio::null())
        .run()
        .status
        .success()
    {
        let out = dump_in(&d, t.pid());
        Command::new("chattr").arg("-i").arg(d.path()).run();
        assert_failed(&out, "creating an image file", &d);
        assert_running(t.pid());
    } else {
        cr_tests::skipped_part(
            "output_directory_not_writable (immutable directory)",
            "chattr +i refused here (filesystem or CAP_LINUX_IMMUTABLE)",
        );
    }
    // Not a directory.
    let d = TempDir::new("notdir");
    let f = d.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    let out = cr()
        .args(["checkpoint", "--pid", &t.pid().to_string(), "-o"])
        .arg(&f)
        .env("CR_CRID_FILE", cr_tests::crid_file())
        .run();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    assert_eq!(d.entries(), vec!["file".to_string()]);
    assert_running(t.pid());
}

#[test]
fn disk_full() {
    // RLIMIT_FSIZE of 64 KiB: the image cannot be written (EFBIG). In each way of writing:
    // from a copy, streamed from the frozen task, streamed from a twin.
    for extra in [&[][..], &["--direct"][..], &["--twin"][..]] {
        let d = TempDir::new("full");
        let file = d.path().join("mapped");
        let t = Target::spawn(&program("regions"), &[file.to_str().unwrap(), "1"]);
        let out_dir = TempDir::new("full-out");
        let out = Command::new("prlimit")
            .arg("--fsize=65536")
            .arg(BIN)
            .args(["checkpoint", "--pid", &t.pid().to_string(), "-o"])
            .arg(out_dir.path())
            .args(extra)
            .env("CR_CRID_FILE", cr_tests::crid_file())
            .run();
        assert_failed(&out, "writing the image", &out_dir);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("File too large"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_running(t.pid());
    }
}

#[test]
fn permission_denied() {
    // The dumper runs as nobody against a root-owned target: the kernel refuses ptrace access.
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok()
        != Some(0)
    {
        cr_tests::skipped(
            "permission_denied",
            "needs root to run the dumper as nobody",
        );
        return;
    }
    let t = Target::spawn(&program("misc"), &["spin"]);
    let d = TempDir::new("perm");
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let crid = std::env::temp_dir().join(format!("cr-test-crid-nobody-{}", std::process::id()));
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["checkpoint", "--pid", &t.pid().to_string(), "-o"])
        .arg(d.path())
        .env("CR_CRID_FILE", &crid)
        .run();
    assert_failed(&out, "permission denied", &d);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ptrace permission"));
    assert_running(t.pid());
}
