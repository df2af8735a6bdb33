//! Lazy checkpoints through a copy-on-write twin (`cr_dump::capture::twin`), on real processes with the
//! real `cr-dump` binary: the image is the memory at the freeze although the task rewrites it
//! throughout the write-back; the task never sees the twin (no SIGCHLD, nothing to wait for,
//! no child left, not traced); memory the kernel does not copy to a child (MADV_DONTFORK,
//! MADV_WIPEONFORK) makes cr-dump copy while the task is stopped instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_format::read::Image;
use cr_tests::{assert_running, program, state, Page, PageIndex, Run, Target, TempDir};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
const PS: u64 = 4096;
/// 64 MiB: a sweep (one word per page) takes well under a millisecond once the task's pages
/// are its own again after their copy-on-write fault, far less than reading them.
const PAGES: u64 = 16384;

fn dump(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("CR_CRID_FILE", dir.path().join("crid"))
        // The task sweeps its memory many times before the write-back reads it.
        .env("CR_DUMP_TEST_WRITEBACK_PAUSE_MS", "300")
        .run()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "cr-dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `cr-dump checkpoint --pid PID -o DIR --json EXTRA...`: its JSON, its stderr, the image.
fn checkpoint_with(
    dir: &TempDir,
    t: &Target,
    extra: &[&str],
) -> (serde_json::Value, String, Vec<u8>) {
    let pid = t.pid().to_string();
    let mut args = vec![
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        dir.path().to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = dump(dir, &args);
    let j = json(&o);
    let img = std::fs::read(j["image"].as_str().unwrap()).unwrap();
    (j, String::from_utf8_lossy(&o.stderr).into_owned(), img)
}

fn checkpoint(dir: &TempDir, t: &Target) -> (serde_json::Value, String, Vec<u8>) {
    checkpoint_with(dir, t, &[])
}

/// The generation word of every page of `big` in the image.
fn generations(img: &[u8], t: &Target) -> Vec<u64> {
    let idx = PageIndex::new(&Image::parse(img).unwrap());
    let big = t.region("big");
    (0..big.len / PS)
        .map(|i| match idx.pages.get(&(big.addr + i * PS)) {
            Some(Page::Data(d)) => {
                let w = |k: usize| u64::from_le_bytes(d[k * 8..k * 8 + 8].try_into().unwrap());
                assert_eq!(w(1), i, "page {i} holds another page's index");
                w(0)
            }
            other => panic!("page {i} of big: {other:?}"),
        })
        .collect()
}

/// The generation word of page `i` of `big` in the live task.
fn live_generation(t: &Target, i: u64) -> u64 {
    let b = cr_tests::read_mem(t.pid(), t.region("big").addr + i * PS, 8);
    u64::from_le_bytes(b.try_into().unwrap())
}

#[test]
fn image_is_the_memory_at_the_freeze_while_the_task_rewrites_it() {
    let dir = TempDir::new("twin-sweep");
    let mut t = Target::spawn(&program("sweep"), &[&PAGES.to_string()]);
    let (j, _, img) = checkpoint(&dir, &t);
    assert_eq!(j["snapshot"], "twin", "{j}");
    let g = generations(&img, &t);
    // One instant of a sweep: a prefix at G+1, the rest at G.
    let (first, last) = (g[0], g[g.len() - 1]);
    assert!(
        first == last || first == last + 1,
        "generations {first}..{last}"
    );
    let k = g.iter().position(|&x| x != first).unwrap_or(g.len());
    assert!(
        g[k..].iter().all(|&x| x == last),
        "more than one sweep boundary in the image: it mixes instants"
    );
    // The task ran on during the write-back, sweep after sweep (else this proves nothing).
    let now = live_generation(&t, PAGES - 1);
    assert!(
        now > last + 2,
        "the task did not run on: generation {now} vs {last}"
    );
    assert_running(t.pid());
    assert!(j["downtime_ms"].as_f64().unwrap() < j["total_ms"].as_f64().unwrap());
    // The registers are the freeze's: the image's rip is in the task's code, not ours.
    let image = Image::parse(&img).unwrap();
    assert_ne!(image.regs().unwrap().gpr(16), 0);

    // It leaves no trace: no child, no SIGCHLD, nothing to wait for, not traced.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", t.pid())).unwrap();
    assert_eq!(children.trim(), "", "the twin is still a child of the task");
    assert_eq!(state(t.pid()).unwrap().1, 0, "still traced");
    let st = Command::new("kill")
        .args(["-USR1", &t.pid().to_string()])
        .run_status();
    assert!(st.success());
    let line = t.next_line();
    assert_eq!(
        line,
        format!("sigchld 0 wait -1 {}", libc_echild()),
        "the task saw a child"
    );
}

fn libc_echild() -> i32 {
    10 // ECHILD on Linux
}

#[test]
fn dontfork_and_wipeonfork_memory_is_copied_while_stopped() {
    for adv in ["dontfork", "wipeonfork"] {
        let dir = TempDir::new("twin-adv");
        // Big enough for a twin to be tried (32 MiB and more).
        let t = Target::spawn(&program("sweep"), &["16384", adv]);
        let (j, err, img) = checkpoint(&dir, &t);
        assert_eq!(j["snapshot"], "copy", "{adv}: {j}");
        let want = if adv == "dontfork" {
            "MADV_DONTFORK"
        } else {
            "MADV_WIPEONFORK"
        };
        assert!(err.contains(want), "{adv}: no note naming {want}: {err}");
        // The region is in the image, whole, as one instant of a sweep.
        let g = generations(&img, &t);
        let (first, last) = (g[0], g[g.len() - 1]);
        assert!(first == last || first == last + 1, "{adv}: {first}..{last}");
        assert_running(t.pid());
    }
}

#[test]
fn small_tasks_are_copied_unless_twin_is_asked() {
    let dir = TempDir::new("twin-small");
    let t = Target::spawn(&program("sweep"), &["256"]);
    let (j, err, _) = checkpoint(&dir, &t);
    assert_eq!(j["snapshot"], "copy", "{j}");
    assert!(err.is_empty(), "a note for a small task: {err}");
    assert_eq!(checkpoint_with(&dir, &t, &["--twin"]).0["snapshot"], "twin");
    assert_running(t.pid());
}

#[test]
fn copy_flag_copies_while_stopped() {
    let dir = TempDir::new("twin-copy");
    let t = Target::spawn(&program("sweep"), &["16384"]);
    let (j, err, _) = checkpoint_with(&dir, &t, &["--copy"]);
    assert_eq!(j["snapshot"], "copy");
    assert!(err.is_empty(), "{err}");
    assert_running(t.pid());
}

#[test]
fn leave_stopped_survives_the_reap_of_the_twin() {
    // The twin is reaped through a second short stop of the task, after the write-back: the
    // task must still be stopped (SIGSTOP) afterwards, with no child and no tracer.
    let dir = TempDir::new("twin-stopped");
    let t = Target::spawn(&program("sweep"), &[&PAGES.to_string()]);
    let pid = t.pid().to_string();
    let (j, _, _) = checkpoint_with(&dir, &t, &["--leave-stopped"]);
    assert_eq!(j["snapshot"], "twin");
    assert_eq!(state(t.pid()), Some(('T', 0)));
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", t.pid())).unwrap();
    assert_eq!(children.trim(), "");
    let st = Command::new("kill").args(["-CONT", &pid]).run_status();
    assert!(st.success());
    assert_running(t.pid());
}
