//! Arming write-protect dirty tracking while a copy-on-write twin is made (issue 14): a full
//! `--track` checkpoint of a task large enough for a twin stops it for the arming and a fork,
//! not for a copy of its memory; the tracked incremental over it stores only the written pages,
//! and its chain resolves to the same memory as a full checkpoint taken at the same moment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::TempDir;
use std::collections::BTreeMap;
use std::path::Path;

/// Pages of the program's big region (64 MiB: more than a twin's threshold, 32 MiB).
const PAGES: u64 = 16384;
/// Pages rewritten between the checkpoints.
const REWRITE: u64 = 300;

#[path = "support/incr.rs"]
mod incr;
use incr::*;

#[test]
fn tracked_incremental_after_a_twin_armed_full_is_a_full_checkpoints_memory() {
    let dir = TempDir::new("track-twin");
    let full = TempDir::new("track-twin-full");
    let mut p = Prog::spawn_env(PAGES, &[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")]);
    p.cmd("map a 16");
    let (j1, m1) = checkpoint(&p, dir.path(), &["--track"]);
    assert_eq!(
        j1["snapshot"], "twin",
        "the full --track checkpoint made no twin: {j1}"
    );
    assert_eq!(
        j1["tracking_armed"], true,
        "--track did not arm write-protect tracking: {j1}"
    );
    check_chain_memory(&image_path(&j1), &m1);
    p.cmd(&format!("rewrite {REWRITE} 1"));
    p.cmd("drop a 4");
    p.cmd("map c 8");
    // The tracked incremental, then a full checkpoint of the task still stopped by it.
    let (j2, m2) = checkpoint_stopped(&p, dir.path(), &["--incremental"]);
    // Direct: a checkpoint that leaves tracking and its baseline alone.
    let (j3, m3) = checkpoint(&p, full.path(), &["--direct"]);
    assert_eq!(j2["diff_method"], "write-tracking", "{j2}");
    assert_eq!(j2["parent_crid"], j1["crid"], "{j2}");
    assert!(j2["tracked_vmas"].as_u64().unwrap() >= 1, "{j2}");
    let data = j2["data_pages"].as_u64().unwrap();
    assert!(
        (REWRITE..REWRITE + 60).contains(&data),
        "data pages {data}, rewritten {REWRITE}: {j2}"
    );
    assert_eq!(j3["parent_crid"], 0, "{j3}");
    assert_eq!(m2, m3, "the task changed between the two checkpoints");
    check_chain_memory(&image_path(&j2), &m2);
    check_chain_memory(&image_path(&j3), &m3);
    // Tracking stays armed: one more tracked incremental over the tracked one.
    p.cmd(&format!("rewrite {REWRITE} 2"));
    let (j4, m4) = checkpoint(&p, dir.path(), &["--incremental"]);
    assert_eq!(j4["diff_method"], "write-tracking", "{j4}");
    check_chain_memory(&image_path(&j4), &m4);
    // The userfaultfd the first checkpoint left in the task is named as cr-dump's, not as a
    // descriptor of the program that restore would lose.
    for j in [&j2, &j3, &j4] {
        let lines = j["fidelity"].as_array().unwrap();
        assert!(
            lines.iter().all(|l| l["action"] != "lost"),
            "a line is lost: {}",
            j["fidelity"]
        );
        assert!(
            lines.iter().any(|l| l["kind"]
                .as_str()
                .unwrap()
                .starts_with("cr-dump's dirty-tracking userfaultfd")),
            "no line names the tracking userfaultfd: {}",
            j["fidelity"]
        );
    }
}

/// [`checkpoint`], the task left stopped.
fn checkpoint_stopped(
    p: &Prog,
    dir: &Path,
    extra: &[&str],
) -> (serde_json::Value, BTreeMap<u64, Vec<u8>>) {
    (checkpoint_stopped_json(p, dir, extra), memory(p.pid()))
}
