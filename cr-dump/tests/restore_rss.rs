//! cr-dump's own memory during a restore stays bounded whatever the image's size (issue 14):
//! the image is mapped, and every byte of page data is read through that mapping (the CRC
//! check, then the copy); without letting go of what has been read, cr-dump's resident set grew
//! to the whole image (8 GiB at 8 GiB, BENCHMARKS.md "Scale (issue 14, session 7)"). A 256 MiB
//! task (`tests/programs/bench_sum.c`, every page written) is checkpointed, killed and
//! restored; cr-dump's peak resident set (`wait4`'s `ru_maxrss`, of that process alone) must be
//! well under the image's size, and the restored task's checksum of its memory the original's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{program, TempDir};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const MIB: u64 = 256;

/// Runs `cmd` to its end; its exit code, stderr and peak resident set in KiB (its own, not its
/// children's: `wait4` on its pid).
#[allow(clippy::zombie_processes)] // waited for by wait4 below, which gives its own rusage
fn run_rss(mut cmd: Command) -> (i32, String, i64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, filling the two locals above; `child` is not waited for
    // again (its Drop does not wait).
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(r, child.id() as i32, "wait4");
    (libc::WEXITSTATUS(status), err, ru.ru_maxrss)
}

#[test]
fn restore_resident_set_is_bounded() {
    let dir = TempDir::new("restore-rss");
    let d = dir.path();
    let target = Command::new(program("bench_sum"))
        .arg(MIB.to_string())
        .arg(d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = target.id();
    let sum = cr_tests::wait_sum(d, pid);
    let out = Command::new(BIN)
        .env("CR_CRID_FILE", d.join("crid"))
        .args([
            "checkpoint",
            "--pid",
            &pid.to_string(),
            "--name",
            "rss",
            "-o",
        ])
        .arg(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut target = target;
    target.kill().unwrap();
    target.wait().unwrap();
    let img = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("rss.img")
        })
        .unwrap();
    let img_mib = std::fs::metadata(&img).unwrap().len() >> 20;
    assert!(img_mib >= MIB, "an image of {img_mib} MiB");

    let pidfile = d.join("pid");
    let mut cmd = Command::new(BIN);
    cmd.env("CR_CRID_FILE", d.join("crid"))
        .args(["restore", "--detach", "--pid", "new", "--pid-file"])
        .arg(&pidfile)
        .arg(&img);
    let (code, err, rss_kib) = run_rss(cmd);
    assert_eq!(code, 0, "restore failed: {err}");
    let restored: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: a signal to the restored task, which asks it for its checksum.
    unsafe { libc::kill(restored as i32, libc::SIGUSR1) };
    let again = cr_tests::wait_sum(d, restored);
    // SAFETY: the restored task is ours to end.
    unsafe { libc::kill(restored as i32, libc::SIGKILL) };
    assert_eq!(again, sum, "the restored task's memory differs");
    // Half the image: what stays is the binary, the plan and a few chunks of 4 MiB (about
    // 70 MiB measured at 1 GiB, release build); before, the whole image was resident too.
    let limit_kib = (img_mib as i64) << 9;
    assert!(
        rss_kib < limit_kib,
        "cr-dump restore's peak resident set was {rss_kib} KiB for a {img_mib} MiB image"
    );
}
