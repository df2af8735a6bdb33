//! File locks and inotify watches across checkpoint → kill → restore, with real programs
//! (`tests/programs/locks.c`, `tests/programs/inotify.c`) and the real `cr-dump` binary.
//!
//! - A program holding a POSIX write lock on a range, an flock and an OFD lock is restored;
//!   while it runs, another process (`locks probe`) sees each lock held, the POSIX one by the
//!   restored task's pid; its output (which checks the same from a child) equals an
//!   uninterrupted run's. `--strict` accepts it.
//! - While another process holds a conflicting POSIX lock or flock, the restore is refused,
//!   naming the file, the range and the holder, before the task runs.
//! - A program watching directories with inotify (its wds 2, 3, 4 after a watch removed) is
//!   restored; files created afterwards give it the events with the same wds as in an
//!   uninterrupted run, read through a dup of its inotify fd (one instance). `--strict`
//!   accepts it.
//! - Without `CAP_DAC_READ_SEARCH` the watched objects are looked for in the task's working
//!   directory; one outside it is named lost, with the reason, and so are events queued and
//!   unread at the checkpoint (their byte count).
//! - A lease is named lost in the report (and `--strict` refuses it).
//! - Root restoring a `nobody` task adds its watches with nobody's permissions: a watched
//!   directory nobody may no longer read refuses the restore.
//! - 20000 wds used up before the watches: their numbers come back all the same.
//! - A watched directory removed before the restore: refused with its path; restored with
//!   `--allow-changed-files` without that watch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{output_timeout, process_timeout, program, skipped, wait_timeout, Run, TempDir};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

/// `cr-dump` with this test binary's CRID file in its environment.
fn cr() -> Command {
    cr_tests::cr_command(BIN)
}

/// Runs the program with every descriptor above 2 closed (the harness leaks some).
const CLOSE_AND_EXEC: &str =
    "import os, sys; os.closerange(3, 65536); os.execvp(sys.argv[1], sys.argv[1:])";

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Starts `bin args` in `dir`, stdout to `out.txt`, stderr to `err.txt`.
fn start(dir: &Path, bin: &Path, args: &[&str]) -> Child {
    Command::new("python3")
        .args(["-c", CLOSE_AND_EXEC])
        .arg(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("out.txt")).unwrap())
        .stderr(File::create(dir.join("err.txt")).unwrap())
        .spawn()
        .unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(dir.join(name)).unwrap_or_default()).into_owned()
}

/// Waits until `out.txt` of `dir` holds a line `line` (`c`, if given, must not end first).
fn wait_line(dir: &Path, line: &str, c: Option<&mut Child>, tag: &str) {
    let t0 = Instant::now();
    let mut c = c;
    while !read(dir, "out.txt").lines().any(|l| l == line) {
        if let Some(c) = c.as_deref_mut() {
            if let Some(st) = c.try_wait().unwrap() {
                panic!(
                    "{tag}: ended ({st}) before {line:?}: {}",
                    read(dir, "err.txt")
                );
            }
        }
        assert!(
            t0.elapsed() < process_timeout(),
            "{tag}: no {line:?} in {}",
            read(dir, "out.txt")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checkpoints `c` (`--kill --json`, plus `extra`) into `dir/img` once it printed `tick 9`;
/// returns the image and the JSON.
fn checkpoint(
    dir: &Path,
    c: &mut Child,
    extra: &[&str],
    tag: &str,
) -> (PathBuf, serde_json::Value) {
    wait_line(dir, "tick 9", Some(c), tag);
    let out = cr()
        .args([
            "checkpoint",
            "--json",
            "--kill",
            "--pid",
            &c.id().to_string(),
            "-o",
        ])
        .arg(dir.join("img"))
        .args(extra)
        .run();
    assert!(
        out.status.success(),
        "{tag}: checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_timeout(c, process_timeout());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (PathBuf::from(j["image"].as_str().unwrap()), j)
}

/// `cr-dump restore IMAGE ARGS`, not waited for.
fn restore_bg(img: &Path, args: &[&str]) -> Child {
    cr().arg("restore")
        .arg(img)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn restore(img: &Path, args: &[&str]) -> Output {
    output_timeout(restore_bg(img, args), process_timeout())
}

/// The report line of `item` in a checkpoint's JSON.
fn line<'a>(j: &'a serde_json::Value, item: &str) -> &'a serde_json::Value {
    j["fidelity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["item"] == item)
        .unwrap_or_else(|| panic!("no report line {item}: {j}"))
}

fn locks_bin() -> PathBuf {
    program("locks")
}

/// `locks` run through to the end with `go` there from the start: its output.
fn locks_reference(tag: &str) -> String {
    let d = TempDir::new(&format!("{tag}-ref"));
    std::fs::write(d.path().join("go"), "").unwrap();
    let mut c = start(d.path(), &locks_bin(), &[]);
    let st = wait_timeout(&mut c, process_timeout());
    assert!(
        st.success(),
        "{tag}: reference: {st} {}",
        read(d.path(), "err.txt")
    );
    read(d.path(), "out.txt")
}

#[test]
fn locks_are_held_again_by_the_restored_task() {
    let tag = "lock-held";
    let want = locks_reference(tag);
    let d = TempDir::new(tag);
    let mut c = start(d.path(), &locks_bin(), &[]);
    // Every lock is re-taken: --strict has nothing to refuse.
    let (img, j) = checkpoint(d.path(), &mut c, &["--strict"], tag);
    for (fd, what) in [
        (3, "POSIX WRITE bytes 10-29"),
        (4, "FLOCK WRITE"),
        (5, "OFD READ bytes 100-EOF"),
    ] {
        let l = line(&j, &format!("fd {fd}"));
        assert_eq!(l["action"], "restore", "{tag}: {l}");
        let note = l["note"].as_str().unwrap_or_default();
        assert!(
            note.contains(&format!("lock re-taken at restore: {what}")),
            "{tag}: {l}"
        );
    }
    // The task is dead: nothing holds the locks.
    let probe = Command::new(locks_bin())
        .arg("probe")
        .current_dir(d.path())
        .run();
    let seen = String::from_utf8_lossy(&probe.stdout);
    assert!(
        seen.contains("posix.dat free") && seen.contains("flock.dat free"),
        "{tag}: {seen}"
    );
    let mut r = restore_bg(&img, &[]);
    wait_line(d.path(), "waiting", Some(&mut r), tag);
    let pid = read(d.path(), "pid.txt").trim().to_string();
    let probe = Command::new(locks_bin())
        .arg("probe")
        .current_dir(d.path())
        .run();
    let seen = String::from_utf8_lossy(&probe.stdout);
    assert_eq!(
        seen,
        format!("posix.dat write 10+20 pid {pid}\nflock.dat locked\nofd.dat read 100+0\n"),
        "{tag}: what another process sees while the restored task runs"
    );
    std::fs::write(d.path().join("go"), "").unwrap();
    let out = output_timeout(r, process_timeout());
    assert!(
        out.status.success(),
        "{tag}: restore: {} {}",
        String::from_utf8_lossy(&out.stderr),
        read(d.path(), "err.txt")
    );
    assert_eq!(
        read(d.path(), "out.txt"),
        want,
        "{tag}: output differs from the uninterrupted run's"
    );
}

/// Starts `locks hold KIND` in `dir` and waits until it holds its lock.
fn holder(dir: &Path, kind: &str, tag: &str) -> Child {
    let mut h = Command::new(locks_bin())
        .args(["hold", kind])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let rx = cr_tests::line_reader(h.stdout.take().unwrap());
    let l = cr_tests::next_line_timeout(&rx, tag);
    assert_eq!(l.as_deref(), Some("held"), "{tag}: locks hold {kind}");
    h
}

#[test]
fn restore_is_refused_while_another_process_holds_a_conflicting_lock() {
    let tag = "lock-conflict";
    let d = TempDir::new(tag);
    let mut c = start(d.path(), &locks_bin(), &[]);
    let (img, _) = checkpoint(d.path(), &mut c, &[], tag);
    let before = read(d.path(), "out.txt");
    for (kind, file, what) in [
        ("posix", "posix.dat", "the POSIX write lock on bytes 10-29"),
        ("flock", "flock.dat", "the flock write lock"),
    ] {
        let mut h = holder(d.path(), kind, tag);
        let r = restore(&img, &[]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{tag}: {kind}: {err}");
        let path = d.path().join(file);
        let want = format!(
            "({}): {what} cannot be taken again: pid {}",
            path.display(),
            h.id()
        );
        assert!(err.contains(&want), "{tag}: {err}\nwanted: {want}");
        let _ = h.kill();
        let _ = h.wait();
        // Refused before the task ran: it wrote nothing.
        assert_eq!(read(d.path(), "out.txt"), before, "{tag}: {kind}");
    }
    // With the holders gone it restores.
    let mut r = restore_bg(&img, &[]);
    wait_line(d.path(), "waiting", Some(&mut r), tag);
    std::fs::write(d.path().join("go"), "").unwrap();
    let out = output_timeout(r, process_timeout());
    assert!(
        out.status.success(),
        "{tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(read(d.path(), "out.txt").ends_with("done\n"), "{tag}");
}

fn inotify_setup(d: &Path) {
    for s in ["a", "watched", "other"] {
        std::fs::create_dir(d.join(s)).unwrap();
    }
}

/// Creates the files the inotify program waits for, once it printed `waiting`.
fn make_events(d: &Path, names: &[&str]) {
    for n in names {
        std::fs::write(d.join(n), "").unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

const EVENTS: &[&str] = &["watched/x", "other/y", "a/z", "watched/q"];

fn inotify_reference(tag: &str, args: &[&str]) -> String {
    let d = TempDir::new(&format!("{tag}-ref"));
    inotify_setup(d.path());
    let mut c = start(d.path(), &program("inotify"), args);
    wait_line(d.path(), "waiting", Some(&mut c), tag);
    make_events(d.path(), EVENTS);
    let st = wait_timeout(&mut c, process_timeout());
    assert!(
        st.success(),
        "{tag}: reference: {st} {}",
        read(d.path(), "err.txt")
    );
    read(d.path(), "out.txt")
}

/// The inotify program (with `args`) restored mid-run gives the uninterrupted run's output;
/// returns how long the restore took to bring the task up (to its `waiting`).
fn inotify_round_trip(tag: &str, args: &[&str], wds: (u32, u32, u32)) -> Duration {
    let want = inotify_reference(tag, args);
    let line_y = format!("event wd {} mask 0x100 name y", wds.1);
    assert!(want.contains(&line_y), "{tag}: {want}");
    let d = TempDir::new(tag);
    inotify_setup(d.path());
    let mut c = start(d.path(), &program("inotify"), args);
    let (img, j) = checkpoint(d.path(), &mut c, &["--strict"], tag);
    let l = line(&j, "fd 3");
    assert_eq!(l["action"], "restore", "{tag}: {l}");
    assert_eq!(l["kind"], "inotify (3 watches)", "{tag}: {l}");
    let l = line(&j, "fd 4");
    assert_eq!(l["kind"], "inotify (the open file of fd 3)", "{tag}: {l}");
    assert_eq!(l["action"], "restore", "{tag}: {l}");
    let t0 = Instant::now();
    let mut r = restore_bg(&img, &[]);
    wait_line(d.path(), "waiting", Some(&mut r), tag);
    let took = t0.elapsed();
    make_events(d.path(), EVENTS);
    let out = output_timeout(r, process_timeout());
    assert!(
        out.status.success(),
        "{tag}: restore: {} {}",
        String::from_utf8_lossy(&out.stderr),
        read(d.path(), "err.txt")
    );
    assert_eq!(
        read(d.path(), "out.txt"),
        want,
        "{tag}: output differs from the uninterrupted run's"
    );
    let wds_line = format!("wds: watched {} other {} a {}", wds.0, wds.1, wds.2);
    assert!(want.contains(&wds_line), "{tag}: {want}");
    took
}

#[test]
fn inotify_watches_come_back_with_their_numbers() {
    let tag = "inotify-wds";
    if !is_root() {
        skipped(
            tag,
            "finding a watch's path needs CAP_DAC_READ_SEARCH (root)",
        );
        return;
    }
    let took = inotify_round_trip(tag, &[], (2, 3, 4));
    eprintln!("{tag}: restore up to the task's waiting line in {took:?}");
}

#[test]
fn inotify_watch_numbers_far_apart() {
    let tag = "inotify-far";
    if !is_root() {
        skipped(
            tag,
            "finding a watch's path needs CAP_DAC_READ_SEARCH (root)",
        );
        return;
    }
    // 20000 wds used up before the watches: more IN_IGNORED events than an inotify queue
    // holds (16384) if restore did not empty it as it goes.
    let took = inotify_round_trip(tag, &["20000"], (20002, 20003, 20004));
    eprintln!("{tag}: restore up to the task's waiting line in {took:?} (20000 wds skipped)");
}

#[test]
fn a_watched_directory_removed_before_restore_is_refused() {
    let tag = "inotify-gone";
    if !is_root() {
        skipped(
            tag,
            "finding a watch's path needs CAP_DAC_READ_SEARCH (root)",
        );
        return;
    }
    let d = TempDir::new(tag);
    inotify_setup(d.path());
    let mut c = start(d.path(), &program("inotify"), &[]);
    let (img, _) = checkpoint(d.path(), &mut c, &[], tag);
    std::fs::remove_dir(d.path().join("other")).unwrap();
    let before = read(d.path(), "out.txt");
    let r = restore(&img, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{tag}: {err}");
    let want = format!(
        "fd 3 (inotify): watch 3 of {}: the watched path is gone",
        d.path().join("other").display()
    );
    assert!(err.contains(&want), "{tag}: {err}\nwanted: {want}");
    assert!(err.contains("--allow-changed-files"), "{tag}: {err}");
    assert_eq!(read(d.path(), "out.txt"), before, "{tag}: the task ran");
    // Anyway: the other watches keep their numbers.
    let mut r = restore_bg(&img, &["--allow-changed-files"]);
    wait_line(d.path(), "waiting", Some(&mut r), tag);
    make_events(d.path(), &["watched/x", "a/z", "watched/q", "a/w"]);
    let out = output_timeout(r, process_timeout());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tag}: {err}");
    assert!(err.contains("the watch is left out"), "{tag}: {err}");
    let got = read(d.path(), "out.txt");
    for l in [
        "event wd 2 mask 0x100 name x",
        "event wd 4 mask 0x100 name z",
        "event wd 4 mask 0x100 name w",
    ] {
        assert!(got.contains(l), "{tag}: no {l:?} in {got}");
    }
}

#[test]
fn without_cap_dac_read_search_watches_are_looked_for_in_the_working_directory() {
    let tag = "inotify-nocap";
    if !is_root() || Command::new("setpriv").arg("--version").run().status.code() != Some(0) {
        skipped(tag, "needs root and setpriv (to drop CAP_DAC_READ_SEARCH)");
        return;
    }
    let d = TempDir::new(tag);
    let elsewhere = TempDir::new(&format!("{tag}-elsewhere"));
    inotify_setup(d.path());
    let mut c = Command::new("python3")
        .args(["-c", CLOSE_AND_EXEC])
        .arg(program("inotify"))
        .env("EXTRA", elsewhere.path())
        .current_dir(d.path())
        .stdin(Stdio::null())
        .stdout(File::create(d.path().join("out.txt")).unwrap())
        .stderr(File::create(d.path().join("err.txt")).unwrap())
        .spawn()
        .unwrap();
    wait_line(d.path(), "tick 9", Some(&mut c), tag);
    // An event queued and not read at the checkpoint.
    std::fs::write(d.path().join("watched/early"), "").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let drop = "-dac_read_search";
    let out = Command::new("setpriv")
        .args(["--inh-caps", drop, "--bounding-set", drop, BIN])
        .env("CR_CRID_FILE", cr_tests::crid_file())
        .args(["checkpoint", "--json", "--pid", &c.id().to_string(), "-o"])
        .arg(d.path().join("img"))
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tag}: {err}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = line(&j, "fd 3");
    assert_eq!(l["action"], "partial", "{tag}: {l}");
    let note = l["note"].as_str().unwrap();
    // wds 2 to 4 are within the working directory: found; 5 is not.
    let want = "watch 5 (inode ";
    assert!(
        note.contains(want)
            && note.contains(
                "is lost: finding its path needs CAP_DAC_READ_SEARCH (it is not within the \
                 task's working directory, where it was looked for)"
            )
            && !note.contains("watches "),
        "{tag}: {note}"
    );
    // One IN_CREATE event with the name "early": 16 bytes and the name padded to 16.
    assert!(
        note.contains("32 bytes of events queued and unread at the checkpoint are lost"),
        "{tag}: {note}"
    );
    let img = PathBuf::from(j["image"].as_str().unwrap());
    let show = cr().arg("show").arg(&img).run();
    let text = String::from_utf8_lossy(&show.stdout);
    for (wd, dir) in [(2, "watched"), (3, "other"), (4, "a")] {
        let path = d.path().join(dir);
        assert!(
            text.lines().any(|l| l.contains(&format!("wd {wd} "))
                && l.contains(&format!("{} (inode", path.display()))),
            "{tag}: no watch {wd} of {} in\n{text}",
            path.display()
        );
    }
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn a_lease_is_named_lost_in_the_report() {
    let tag = "lock-lease";
    let d = TempDir::new(tag);
    std::fs::write(d.path().join("leased.dat"), "x").unwrap();
    // F_SETLEASE is 1024 (Python's fcntl module may not name it).
    let script = "import fcntl, os, time\nfd = os.open('leased.dat', os.O_RDONLY)\n\
                  fcntl.fcntl(fd, 1024, fcntl.F_RDLCK)\nprint('tick 9', flush=True)\n\
                  time.sleep(60)\n";
    let mut c = start(d.path(), Path::new("python3"), &["-c", script]);
    wait_line(d.path(), "tick 9", Some(&mut c), tag);
    let pid = c.id().to_string();
    let run = |extra: &[&str]| {
        cr().args(["checkpoint", "--json", "--pid", &pid, "-o"])
            .arg(d.path().join("img"))
            .args(extra)
            .run()
    };
    let out = run(&["--strict"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{tag}: {err}");
    assert!(err.contains("lease READ is not re-taken"), "{tag}: {err}");
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = line(&j, "fd 3");
    assert_eq!(l["action"], "partial", "{tag}: {l}");
    let note = l["note"].as_str().unwrap();
    assert!(
        note.contains("lease READ is not re-taken: leases (F_SETLEASE) are not restored"),
        "{tag}: {note}"
    );
    let _ = c.kill();
    let _ = c.wait();
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn watches_of_another_users_task_are_added_with_its_permissions() {
    let tag = "inotify-creds";
    if !is_root() {
        skipped(tag, "needs root (to checkpoint a task of user nobody)");
        return;
    }
    let d = TempDir::new(tag);
    inotify_setup(d.path());
    for n in ["out.txt", "err.txt"] {
        // The task (nobody) reopens its stdout at restore: it must be allowed to.
        File::create(d.path().join(n)).unwrap();
        set_mode(&d.path().join(n), 0o666);
    }
    let bin = program("inotify");
    let nobody = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        bin.to_str().unwrap(),
    ];
    let mut c = Command::new("python3")
        .args(["-c", CLOSE_AND_EXEC, "setpriv"])
        .args(nobody)
        .current_dir(d.path())
        .stdin(Stdio::null())
        .stdout(
            std::fs::OpenOptions::new()
                .append(true)
                .open(d.path().join("out.txt"))
                .unwrap(),
        )
        .stderr(
            std::fs::OpenOptions::new()
                .append(true)
                .open(d.path().join("err.txt"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let (img, _) = checkpoint(d.path(), &mut c, &[], tag);
    // Nobody may no longer read `other` (chmod keeps the inode): refused, as the task.
    let other = d.path().join("other");
    set_mode(&other, 0o700);
    let r = restore(&img, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{tag}: {err}");
    let want = format!("inotify_add_watch {}", other.display());
    assert!(
        err.contains(&want) && err.contains("Permission denied") && err.contains("uid 65534"),
        "{tag}: {err}\nwanted: {want}"
    );
    set_mode(&other, 0o755);
    let mut r = restore_bg(&img, &[]);
    wait_line(d.path(), "waiting", Some(&mut r), tag);
    make_events(d.path(), EVENTS);
    let out = output_timeout(r, process_timeout());
    assert!(
        out.status.success(),
        "{tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = read(d.path(), "out.txt");
    assert!(
        got.contains("event wd 3 mask 0x100 name y\n"),
        "{tag}: {got}"
    );
    assert!(got.ends_with("done\n"), "{tag}: {got}");
}
