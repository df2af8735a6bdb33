//! Tasks with many mappings (issue 14, "Scale"): `tests/programs/many_maps.c` maps thousands of
//! one-page mappings that the kernel keeps apart, is checkpointed in each lazy mode (a twin,
//! a copy) and directly, killed and restored; the restored task must report the checksum of
//! those pages (with their protections) and the number of its mappings of the original. The
//! VMAs span several jobs of the image stream, which groups many small VMAs per job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{program, Run, TempDir};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
/// More than the stream's 1024 VMAs per job.
const MAPS: &str = "3000";

fn cr(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("CR_CRID_FILE", dir.join("crid"));
    c
}

fn start(dir: &Path) -> (Child, String) {
    let child = Command::new(program("many_maps"))
        .args([MAPS, dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let want = cr_tests::wait_sum(dir, child.id());
    (child, want)
}

/// Checkpoints a fresh target with `extra`, kills it, restores the image; the restored task's
/// checksum and mapping count must be the original's.
fn round_trip(extra: &[&str], snapshot: &str) {
    let dir = TempDir::new("many-maps");
    let d = dir.path();
    let (mut t, want) = start(d);
    let maps: u64 = want.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(maps > 3000, "the target has {maps} mappings");
    let pid = t.id().to_string();
    let mut args = vec![
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        d.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = cr(d).args(&args).run();
    assert!(
        o.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["snapshot"], snapshot, "{j}");
    assert_eq!(j["vmas"].as_u64(), Some(maps), "{j}");
    assert!(j["data_pages"].as_u64().unwrap() >= 3000, "{j}");
    // The task still runs, as it was.
    send(t.id(), "USR1");
    assert_eq!(
        cr_tests::wait_sum(d, t.id()),
        want,
        "the task after its checkpoint"
    );
    t.kill().unwrap();
    t.wait().unwrap();
    let img = j["image"].as_str().unwrap();
    let v = cr(d).args(["verify", img]).run();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let r = cr(d).args(["restore", "--detach", img]).run();
    assert!(
        r.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let rpid: u32 = String::from_utf8_lossy(&r.stdout)
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        cr_tests::state(rpid as i32).is_some(),
        "the restored task {rpid} does not run"
    );
    send(rpid, "USR1");
    let got = cr_tests::wait_sum(d, rpid);
    send(rpid, "KILL");
    assert_eq!(got, want, "restored: checksum and mappings");
}

fn send(pid: u32, sig: &str) {
    let o = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .run();
    assert!(o.status.success(), "kill -{sig} {pid}");
}

#[test]
fn many_mappings_through_a_twin() {
    round_trip(&["--twin"], "twin");
}

#[test]
fn many_mappings_copied_while_stopped() {
    round_trip(&["--copy"], "copy");
}

#[test]
fn many_mappings_direct() {
    round_trip(&["--direct"], "none");
}
