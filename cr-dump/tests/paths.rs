//! Planted paths, against the real binary and real processes: symlinks, FIFOs and files of
//! another user at the CRID file, the `/tmp` fallback directory, a parent image's name, a
//! mapped file, `--pid-file` and the outputs of `core`, `squash` and `extract -o`. Each is
//! refused with a clear error or avoided, within a second (no open waits on a FIFO), no
//! symlink is followed (its target is unchanged) and no temporary file is left. Also: a file
//! planted at the next image name costs a CRID, not the checkpoint; a `--track` checkpoint
//! killed with SIGKILL leaves no temporary state file; state files of dead tasks are removed.
//!
//! Runs as root (files are given to uid 65534, and the `/tmp` fallback is exercised as that
//! user); without root the test fails, it does not skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{assert_running, TempDir};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const NOBODY: u32 = 65534;

/// Runs `cmd`, killing it after `limit` (a hang fails the test, it does not stall it). Its
/// output is drained as it comes (`show --json --with-pages` writes more than a pipe holds).
fn run_within(cmd: &mut Command, limit: Duration) -> (Output, Duration) {
    let t0 = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = cr_tests::output_timeout(child, limit);
    (out, t0.elapsed())
}

fn cr(crid: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("CR_CRID_FILE", crid);
    c
}

/// Runs and expects exit 1 with `needle` in the error, within a second.
fn fails(cmd: &mut Command, needle: &str) -> String {
    let (out, took) = run_within(cmd, Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
    assert!(err.starts_with("cr-dump: error: "), "{cmd:?}: {err}");
    assert!(
        err.contains(needle),
        "{cmd:?}: expected {needle:?} in {err}"
    );
    assert!(took < Duration::from_secs(1), "{cmd:?} took {took:?}");
    err
}

fn succeeds(cmd: &mut Command) -> String {
    let (out, _) = run_within(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A task to checkpoint, killed when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

/// Gives `p` to `uid`: root only, and a missing prerequisite fails the test (never a skip).
fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap_or_else(|e| {
        panic!(
            "chown {} to uid {uid}: {e} (this test runs as root: it plants files of another user)",
            p.display()
        )
    });
}

/// A file that must stay as it is: its bytes and mode, checked by [`Victim::intact`].
struct Victim(PathBuf);

impl Victim {
    fn new(dir: &Path) -> Victim {
        let p = dir.join("victim");
        std::fs::write(&p, b"precious\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        Victim(p)
    }
    fn intact(&self) {
        assert_eq!(std::fs::read(&self.0).unwrap(), b"precious\n");
        let mode = std::fs::metadata(&self.0).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o644, "the symlink's target was chmodded");
    }
}

/// Hidden files in `dir` (temporary names all start with a dot).
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// A full image and an incremental child of a sleeping task, in `dir`: (parent, child).
fn chain(dir: &Path, crid: &Path) -> (PathBuf, PathBuf) {
    let t = Sleeper::new();
    let pid = t.pid().to_string();
    let d = dir.to_str().unwrap();
    let img = |out: &str| {
        PathBuf::from(
            out.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap(),
        )
    };
    let a = img(&succeeds(&mut cr(
        crid,
        &["checkpoint", "--pid", &pid, "-o", d, "--name", "s"],
    )));
    let b = img(&succeeds(&mut cr(
        crid,
        &[
            "checkpoint",
            "--pid",
            &pid,
            "-o",
            d,
            "--name",
            "s",
            "--parent",
            a.to_str().unwrap(),
        ],
    )));
    (a, b)
}

#[test]
fn crid_file_symlink_fifo_and_foreign_file_are_refused() {
    let d = TempDir::new("paths-crid");
    let out = d.path().join("out");
    let t = Sleeper::new();
    let pid = t.pid().to_string();
    let victim = Victim::new(d.path());
    let crid = d.path().join("crid");
    let ckpt = |crid: &Path| {
        cr(
            crid,
            &["checkpoint", "--pid", &pid, "-o", out.to_str().unwrap()],
        )
    };

    std::os::unix::fs::symlink(&victim.0, &crid).unwrap();
    fails(&mut ckpt(&crid), "symbolic link");
    victim.intact();
    std::fs::remove_file(&crid).unwrap();

    mkfifo(&crid);
    fails(&mut ckpt(&crid), "FIFO");
    std::fs::remove_file(&crid).unwrap();

    std::fs::write(&crid, "00000000000000000041\n").unwrap();
    chown(&crid, NOBODY);
    fails(&mut ckpt(&crid), "owned by uid 65534");
    assert_eq!(
        std::fs::read_to_string(&crid).unwrap(),
        "00000000000000000041\n"
    );

    assert_running(t.pid());
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "a refused checkpoint left files"
    );
}

#[test]
fn crid_lock_wait_is_bounded() {
    let d = TempDir::new("paths-lock");
    let crid = d.path().join("crid");
    std::fs::write(&crid, "").unwrap();
    std::fs::set_permissions(&crid, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Another process of ours holds the lock for longer than cr-dump waits.
    let mut holder = Command::new("flock")
        .arg(&crid)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Sleeper::new();
    let out = d.path().join("out");
    let (o, took) = run_within(
        &mut cr(
            &crid,
            &[
                "checkpoint",
                "--pid",
                &t.pid().to_string(),
                "-o",
                out.to_str().unwrap(),
            ],
        ),
        Duration::from_secs(20),
    );
    let _ = holder.kill();
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("locking CRID file") && err.contains("holds its lock"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "waited {took:?}"
    );
    assert_running(t.pid());
}

/// The `/tmp` fallback, as uid 65534 (no `/var/lib/cr` of its own, no `XDG_RUNTIME_DIR`):
/// CRIDs are kept in `/tmp/cr-65534/crid`, a private directory; a symlink, a directory of
/// another user or one open to others there is refused.
#[test]
fn tmp_fallback_is_a_private_directory() {
    let dir = PathBuf::from(format!("/tmp/cr-{NOBODY}"));
    let clean = || {
        let _ = std::fs::remove_file(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    };
    clean();
    let d = TempDir::new("paths-tmp");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    chown(&out, NOBODY);
    // A verb that draws a CRID before reading the image: squash into a directory.
    let img = out.join("x.img.7");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/valid/full.bin"),
        &img,
    )
    .unwrap();
    chown(&img, NOBODY);
    let squash = || {
        let mut c = Command::new(BIN);
        c.args(["squash", img.to_str().unwrap(), "-o", out.to_str().unwrap()])
            .env_remove("CR_CRID_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .uid(NOBODY)
            .gid(NOBODY);
        c
    };
    let victim = Victim::new(d.path());

    // A symlink to a directory the attacker chose.
    std::os::unix::fs::symlink(d.path(), &dir).unwrap();
    fails(&mut squash(), "not a directory");
    victim.intact();
    clean();
    // A directory of another user (root here).
    std::fs::create_dir(&dir).unwrap();
    fails(&mut squash(), "owned by uid 0");
    clean();
    // Its own directory, but open to others.
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    chown(&dir, NOBODY);
    fails(&mut squash(), "open to other users");
    clean();
    // Nothing there: made private, and used.
    succeeds(&mut squash());
    let md = std::fs::symlink_metadata(&dir).unwrap();
    assert!(md.is_dir());
    assert_eq!((md.uid(), md.mode() & 0o777), (NOBODY, 0o700));
    let f = std::fs::symlink_metadata(dir.join("crid")).unwrap();
    assert_eq!((f.uid(), f.mode() & 0o777), (NOBODY, 0o600));
    assert!(temps(&out).is_empty(), "{:?}", temps(&out));
    clean();
}

#[test]
fn parent_at_its_name_must_be_a_regular_file() {
    let d = TempDir::new("paths-parent");
    let crid = d.path().join("crid");
    let (a, b) = chain(d.path(), &crid);
    let bs = b.to_str().unwrap();
    let moved = d.path().join("parent.moved");
    std::fs::rename(&a, &moved).unwrap();
    for planted in ["fifo", "symlink"] {
        let needle = if planted == "fifo" {
            mkfifo(&a);
            "FIFO"
        } else {
            std::os::unix::fs::symlink(&moved, &a).unwrap();
            "symbolic link"
        };
        for args in [
            vec!["verify", "--chain", bs],
            vec!["chain", bs],
            vec!["extract", bs, "--addr", "0x1000", "--len", "1"],
            vec!["restore", bs],
        ] {
            let err = fails(&mut cr(&crid, &args), needle);
            assert!(err.contains(a.to_str().unwrap()), "{err}");
        }
        // The image given itself: the same rule.
        fails(&mut cr(&crid, &["show", a.to_str().unwrap()]), needle);
        let enc = d.path().join("enc.out");
        fails(
            &mut cr(
                &crid,
                &["encode", a.to_str().unwrap(), "-o", enc.to_str().unwrap()],
            ),
            needle,
        );
        assert!(!enc.exists());
        std::fs::remove_file(&a).unwrap();
    }
    // Put back, the chain is whole again: the refusals were about the planted files.
    std::fs::rename(&moved, &a).unwrap();
    succeeds(&mut cr(&crid, &["verify", "--chain", bs]));
}

#[test]
fn mapped_file_replaced_by_a_fifo_or_symlink_is_refused_before_restore() {
    let d = TempDir::new("paths-mapped");
    let crid = d.path().join("crid");
    // A private copy of sleep: its mapping names a file this test may replace.
    let exe = d.path().join("sleeper");
    std::fs::copy(
        String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v sleep"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
        &exe,
    )
    .unwrap();
    let mut t = Command::new(&exe).arg("1000").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let o = succeeds(&mut cr(
        &crid,
        &[
            "checkpoint",
            "--pid",
            &t.id().to_string(),
            "-o",
            d.path().to_str().unwrap(),
            "--name",
            "m",
        ],
    ));
    let _ = t.kill();
    let _ = t.wait();
    let img = o
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let kept = d.path().join("sleeper.kept");
    std::fs::rename(&exe, &kept).unwrap();
    mkfifo(&exe);
    fails(&mut cr(&crid, &["restore", &img]), "FIFO");
    std::fs::remove_file(&exe).unwrap();
    std::os::unix::fs::symlink(&kept, &exe).unwrap();
    fails(&mut cr(&crid, &["restore", &img]), "symbolic link");
}

#[test]
fn outputs_of_encode_core_squash_extract_replace_a_planted_symlink_or_fifo() {
    let d = TempDir::new("paths-out");
    let crid = d.path().join("crid");
    let imgs = d.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    let (_a, b) = chain(&imgs, &crid);
    let bs = b.to_str().unwrap();
    let victim = Victim::new(d.path());
    let o = d.path().join("o");
    std::fs::create_dir(&o).unwrap();
    let dst = o.join("out");
    let addr = {
        let bytes = std::fs::read(&b).unwrap();
        let img = cr_format::read::Image::parse(&bytes).unwrap();
        let start = img.vmas().next().unwrap().start();
        format!("{start:x}")
    };
    let json = d.path().join("img.json");
    std::fs::write(
        &json,
        succeeds(&mut cr(&crid, &["show", "--json", "--with-pages", bs])),
    )
    .unwrap();
    let verbs: Vec<Vec<String>> = vec![
        vec!["encode".into(), json.to_str().unwrap().into(), "-o".into()],
        vec!["core".into(), bs.into(), "-o".into()],
        vec!["squash".into(), bs.into(), "-o".into()],
        vec![
            "extract".into(),
            bs.into(),
            "--addr".into(),
            format!("0x{addr}"),
            "--len".into(),
            "4096".into(),
            "-o".into(),
        ],
    ];
    for v in &verbs {
        for planted in ["symlink", "fifo"] {
            if planted == "symlink" {
                std::os::unix::fs::symlink(&victim.0, &dst).unwrap();
            } else {
                mkfifo(&dst);
            }
            let mut args: Vec<&str> = v.iter().map(String::as_str).collect();
            args.push(dst.to_str().unwrap());
            let (out, took) = run_within(&mut cr(&crid, &args), Duration::from_secs(20));
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
            victim.intact();
            let md = std::fs::symlink_metadata(&dst).unwrap();
            assert!(md.is_file(), "{args:?}: {dst:?} is not the output file");
            assert_eq!(md.mode() & 0o777, 0o600);
            assert!(md.len() > 0);
            assert_eq!(temps(&o), Vec::<String>::new());
            std::fs::remove_file(&dst).unwrap();
        }
    }
}

#[test]
fn pid_file_replaces_a_planted_symlink() {
    let d = TempDir::new("paths-pidfile");
    let crid = d.path().join("crid");
    let (_a, b) = chain(d.path(), &crid);
    let victim = Victim::new(d.path());
    let pf = d.path().join("pid");
    std::os::unix::fs::symlink(&victim.0, &pf).unwrap();
    let out = succeeds(&mut cr(
        &crid,
        &[
            "restore",
            "--detach",
            "--pid-file",
            pf.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    ));
    let pid: i32 = out.trim().parse().unwrap();
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    victim.intact();
    let md = std::fs::symlink_metadata(&pf).unwrap();
    assert!(md.is_file());
    assert_eq!(md.mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&pf).unwrap(), format!("{pid}\n"));
    assert_eq!(temps(d.path()), Vec::<String>::new());
}

#[test]
fn a_file_planted_at_the_next_image_name_costs_a_crid_not_the_checkpoint() {
    let d = TempDir::new("paths-planted");
    let crid = d.path().join("crid");
    std::fs::write(&crid, "00000000000000000010\n").unwrap();
    std::fs::set_permissions(&crid, std::fs::Permissions::from_mode(0o600)).unwrap();
    for n in [11, 12] {
        std::fs::write(d.path().join(format!("s.img.{n}")), format!("planted {n}")).unwrap();
    }
    let t = Sleeper::new();
    let out = succeeds(&mut cr(
        &crid,
        &[
            "checkpoint",
            "--pid",
            &t.pid().to_string(),
            "-o",
            d.path().to_str().unwrap(),
            "--name",
            "s",
        ],
    ));
    assert!(out.starts_with("crid       13\n"), "{out}");
    for n in [11, 12] {
        assert_eq!(
            std::fs::read_to_string(d.path().join(format!("s.img.{n}"))).unwrap(),
            format!("planted {n}")
        );
    }
    assert!(d.path().join("s.img.13").is_file());
    assert_running(t.pid());
}

/// State files live beside the CRID file: here, a directory of the test's own.
#[test]
fn tracking_state_no_temp_after_sigkill_and_dead_tasks_swept() {
    let d = TempDir::new("paths-track");
    let crid = d.path().join("state").join("crid");
    std::fs::create_dir(crid.parent().unwrap()).unwrap();
    let sd = crid.parent().unwrap().to_path_buf();
    let out = d.path().join("out");
    let t = Sleeper::new();
    let pid = t.pid().to_string();
    let ckpt = || {
        cr(
            &crid,
            &[
                "checkpoint",
                "--pid",
                &pid,
                "-o",
                out.to_str().unwrap(),
                "--name",
                "t",
                "--track",
                "--incremental",
            ],
        )
    };
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(&sd)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".cr-track.") || n.contains(".tmp"))
            .collect()
    };
    succeeds(&mut ckpt());
    // SIGKILL at spread moments of --track checkpoints. The state file is linked under
    // `.cr-track.….tmp.WRITER.N` and then renamed over the old one: a SIGKILL between the two
    // (nothing can block it) leaves that name, which the next checkpoint sweeps because its
    // writer is dead. Nothing else may be left.
    let mut windows = Vec::new();
    for i in 0..30u64 {
        let mut c = ckpt()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let writer = format!(".tmp.{}.", c.id());
        std::thread::sleep(Duration::from_micros(500 + i * 700));
        let _ = c.kill();
        let _ = c.wait();
        let (window, other): (Vec<String>, Vec<String>) = leftovers()
            .into_iter()
            .partition(|n| n.starts_with(".cr-track.") && n.contains(&writer));
        assert_eq!(other, Vec::<String>::new(), "after a kill at trial {i}");
        windows.extend(window);
    }
    if !windows.is_empty() {
        succeeds(&mut ckpt());
        assert_eq!(
            leftovers(),
            Vec::<String>::new(),
            "the temporary state files of killed writers ({windows:?}) were not swept"
        );
    }
    // Planted state of tasks that are gone: a reaped pid, a live pid with another start
    // time, and a temporary file of a dead writer.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let dead = [
        format!("cr-track.{gone_pid}.12345"),
        format!("cr-track.{}.1", std::process::id()),
        format!(".cr-track.{gone_pid}.1.tmp.{gone_pid}.0"),
    ];
    for n in &dead {
        std::fs::write(sd.join(n), "1 2 3 4 5\n").unwrap();
    }
    let t2 = Sleeper::new();
    let live = std::fs::read_to_string(format!("/proc/{}/stat", t2.pid())).unwrap();
    let st = live[live.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let live_state = format!("cr-track.{}.{st}", t2.pid());
    std::fs::write(sd.join(&live_state), "1 2 3 4 5\n").unwrap();
    succeeds(&mut ckpt());
    for n in &dead {
        assert!(!sd.join(n).exists(), "{n} was not removed");
    }
    assert!(
        sd.join(&live_state).exists(),
        "a live task's state was removed"
    );
    let st = std::fs::read_to_string(format!("/proc/{}/stat", t.pid())).unwrap();
    let st = st[st.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    assert!(
        sd.join(format!("cr-track.{}.{st}", t.pid())).is_file(),
        "tracking was not armed: its state file is missing"
    );
}

/// `core`, `squash` and `extract -o` interrupted by SIGINT, SIGTERM, SIGHUP or SIGKILL at
/// spread moments, with the output name free or taken: no temporary file is ever left, and
/// what is at the output name is either what was there before or the complete output.
#[test]
fn interrupted_outputs_leave_no_temp_file() {
    let d = TempDir::new("paths-intr");
    let crid = d.path().join("crid");
    let t = cr_tests::Target::spawn(&cr_tests::program("fill"), &["48"]);
    let o = succeeds(&mut cr(
        &crid,
        &[
            "checkpoint",
            "--pid",
            &t.pid().to_string(),
            "-o",
            d.path().to_str().unwrap(),
            "--name",
            "f",
        ],
    ));
    let img = o
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let big = t.region("big");
    let (addr, len) = (format!("{:#x}", big.addr), format!("{}", big.len));
    let out = d.path().join("o");
    std::fs::create_dir(&out).unwrap();
    let dst = out.join("out");
    let ds = dst.to_str().unwrap();
    let verbs: [Vec<&str>; 3] = [
        vec!["core", &img, "-o", ds],
        vec!["squash", &img, "-o", ds],
        vec!["extract", &img, "--addr", &addr, "--len", &len, "-o", ds],
    ];
    let mut interrupted = 0;
    for v in &verbs {
        // The complete output's size, for what may be found at the name after a signal.
        succeeds(&mut cr(&crid, v));
        let full = std::fs::metadata(&dst).unwrap().len();
        for taken in [false, true] {
            for sig in ["INT", "TERM", "HUP", "KILL"] {
                for delay_ms in [2u64, 10, 30] {
                    if taken {
                        std::fs::write(&dst, b"before").unwrap();
                    } else {
                        let _ = std::fs::remove_file(&dst);
                    }
                    let mut c = cr(&crid, v)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(delay_ms));
                    let _ = Command::new("kill")
                        .args(["-s", sig, &c.id().to_string()])
                        .status();
                    let st = c.wait().unwrap();
                    interrupted += usize::from(!st.success());
                    match std::fs::read(&dst) {
                        Ok(b) if b == b"before" => assert!(taken),
                        Ok(b) => assert_eq!(b.len() as u64, full, "{v:?}: a partial output"),
                        Err(_) => assert!(!taken, "{v:?}: the old output was removed"),
                    }
                    if sig == "KILL" && !temps(&out).is_empty() {
                        // Killed between naming the new file beside a taken name and the
                        // rename over it (microseconds; no handler runs for SIGKILL): the next
                        // write of that name removes what a dead writer left.
                        assert!(taken, "{v:?}: a temporary name with a free output name");
                        succeeds(&mut cr(&crid, v));
                    }
                    assert_eq!(
                        temps(&out),
                        Vec::<String>::new(),
                        "{v:?} SIG{sig} at {delay_ms} ms"
                    );
                }
            }
        }
    }
    // The check above means something only if signals landed while work was in progress.
    assert!(interrupted > 20, "only {interrupted} runs were interrupted");
}
