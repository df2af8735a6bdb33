//! Restore of a task with many small mappings of every kind (issue 14): `tests/programs/
//! mixed_maps.c` maps 5,000 one-page anonymous mappings in a cycle of protections (read-write,
//! read-only, read+exec, PROT_NONE guard pages never written and PROT_NONE pages with data,
//! read-only pages never written), pages of a file between them (private read-only, private
//! written, shared), and pairs of touching anonymous mappings the kernel keeps apart. After a
//! checkpoint, a kill and a restore (eager, and `--lazy`), the restored task must have the
//! original's `/proc/PID/maps` line for line (addresses, permissions, offsets, files) and the
//! same memory: a checksum the program computes of every one of those pages, read through
//! `/proc/self/mem` (which reads PROT_NONE pages too). And so without a userfaultfd
//! (`tests/programs/no_uffd.c`: a seccomp filter fails it), when the pages go in another way.
//!
//! With `--lazy` the sum is taken once the fill has ended: a read of `/proc/self/mem` (or of
//! `/proc/PID/mem` by another process) of a page still to come fails (`EIO`) instead of waiting
//! for it, as the kernel's remote access (`access_remote_vm`) does not let a userfaultfd make
//! it wait. Accesses of the task's own (and system calls on its memory) wait as they should.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{line_reader, next_line_timeout, program, Run, TempDir};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");
/// More than one batch of injected calls (4,096) and one job of the image stream (1,024).
const MAPS: &str = "5000";

fn cr(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("CR_CRID_FILE", dir.join("crid"));
    c
}

fn maps(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until pid `pid` has no tracer (a lazy restore lets the task go once every page is in).
fn wait_untraced(pid: u32) {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        if st
            .lines()
            .any(|l| l.split_whitespace().eq(["TracerPid:", "0"]))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("pid {pid} still traced after 60 s: its lazy fill did not end");
}

fn send(pid: u32, sig: &str) {
    let o = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .run();
    assert!(o.status.success(), "kill -{sig} {pid}");
}

/// Starts the target; returns it, its checksum and its maps.
fn start(dir: &Path) -> (Child, String, Vec<String>) {
    cr_tests::no_inherited_fds();
    let mut child = Command::new(program("mixed_maps"))
        .args([MAPS, dir.to_str().unwrap()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = line_reader(child.stdout.take().unwrap());
    assert_eq!(
        next_line_timeout(&out, "mixed_maps").as_deref(),
        Some("ready")
    );
    let want = cr_tests::wait_sum(dir, child.id());
    let m = maps(child.id());
    (child, want, m)
}

/// The first line where two maps differ, and their lengths, for a message.
fn first_difference(a: &[String], b: &[String]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y);
    format!(
        "{} lines against {}; first difference: {:?}",
        a.len(),
        b.len(),
        at.map(|i| (&a[i], &b[i]))
    )
}

/// Checkpoints a fresh target, kills it and restores the image with `restore --detach
/// EXTRA` (through `no_uffd` when `no_uffd`); the restored task's maps and checksum must be
/// the original's.
fn round_trip(tag: &str, extra: &[&str], no_uffd: bool) {
    let dir = TempDir::new(tag);
    let d = dir.path();
    let (mut t, want, want_maps) = start(d);
    assert!(
        want_maps.len() > 5000,
        "the target has {} mappings",
        want_maps.len()
    );
    let pid = t.id().to_string();
    let o = cr(d)
        .args([
            "checkpoint",
            "--pid",
            &pid,
            "-o",
            d.to_str().unwrap(),
            "--json",
        ])
        .run();
    assert!(
        o.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The task runs on unchanged.
    send(t.id(), "USR1");
    assert_eq!(
        cr_tests::wait_sum(d, t.id()),
        want,
        "the task after its checkpoint"
    );
    assert_eq!(maps(t.id()), want_maps, "the task after its checkpoint");
    t.kill().unwrap();
    t.wait().unwrap();
    let img = j["image"].as_str().unwrap();
    let mut c = if no_uffd {
        let mut c = Command::new(program("no_uffd"));
        c.arg(BIN).env("CR_CRID_FILE", d.join("crid"));
        c
    } else {
        cr(d)
    };
    let r = c.args(["restore", "--detach"]).args(extra).arg(img).run();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "restore {extra:?} failed: {err}");
    assert!(
        !err.contains("mappings where the image has"),
        "restore {extra:?} warned of a different layout: {err}"
    );
    let rpid: u32 = String::from_utf8_lossy(&r.stdout)
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    let got_maps = maps(rpid);
    if extra.contains(&"--lazy") {
        // The program reads its memory through /proc/self/mem, where the kernel does not wait
        // for a page still to come (it reads as an error: see the module docs): the sum is
        // taken once every page is in, when the task is let go (no tracer then).
        wait_untraced(rpid);
    }
    send(rpid, "USR1");
    let got = cr_tests::wait_sum(d, rpid);
    send(rpid, "KILL");
    assert!(
        got_maps == want_maps,
        "restore {extra:?}: /proc/PID/maps differs: {}",
        first_difference(&got_maps, &want_maps)
    );
    assert_eq!(got, want, "restore {extra:?}: the memory's checksum");
}

/// A page of data three quarters into an image of many small mappings damaged: the restore
/// fails naming the record's CRC (checked on the CRC thread ahead of the copy), and ends.
#[test]
fn damaged_page_among_many_mappings_fails_the_restore() {
    let dir = TempDir::new("maps-damaged");
    let d = dir.path();
    let (mut t, _, _) = start(d);
    let pid = t.id().to_string();
    let o = cr(d)
        .args([
            "checkpoint",
            "--pid",
            &pid,
            "-o",
            d.to_str().unwrap(),
            "--json",
        ])
        .run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    t.kill().unwrap();
    t.wait().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let img = j["image"].as_str().unwrap();
    let mut bytes = std::fs::read(img).unwrap();
    let at = {
        let image = cr_format::read::Image::parse(&bytes).unwrap();
        let data: Vec<u64> = image
            .records()
            .filter_map(|r| match r.record {
                cr_format::read::Record::Pages(p) if p.data_len() > 0 => Some(p.data_offset),
                _ => None,
            })
            .collect();
        assert!(data.len() > 3000, "{} Pages records with data", data.len());
        data[data.len() * 3 / 4] as usize + 100
    };
    bytes[at] ^= 0x40;
    std::fs::write(img, &bytes).unwrap();
    let r = cr(d).args(["restore", "--detach", img]).run();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "restore of a damaged image succeeded");
    assert!(err.contains("does not match its CRC"), "{err}");
}

fn root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

#[test]
fn mixed_mappings_restored_line_for_line() {
    round_trip("maps-eager", &[], false);
}

/// Without a userfaultfd (a seccomp filter fails it), the pages of read-only and PROT_NONE
/// anonymous mappings, which are mapped with their protection at once, are written through
/// `/proc/PID/mem`.
#[test]
fn mixed_mappings_restored_without_userfaultfd() {
    round_trip("maps-no-uffd", &[], true);
}

#[test]
fn mixed_mappings_restored_lazily_line_for_line() {
    if !root() {
        cr_tests::skipped(
            "mixed_mappings_restored_lazily_line_for_line",
            "restore --lazy needs root (userfaultfd for kernel faults)",
        );
        return;
    }
    round_trip("maps-lazy", &["--lazy"], false);
}
