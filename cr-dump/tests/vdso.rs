//! Cores of checkpointed tasks as the kernel writes them: the XSAVE layout note equals the
//! kernel's own core's for a task of this machine, and gdb reads the vector registers through
//! it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{program, skipped_part, Run, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

fn cr(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("CR_CRID_FILE", dir.join("crid"));
    c
}

/// Runs `cr-dump ARGS`, which must succeed; its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = cr(dir).args(args).run();
    assert!(
        o.status.success(),
        "cr-dump {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The descriptor of note `kind` in the core at `path`, from `readelf -n` (hex bytes).
fn note_desc(path: &Path, kind: &str) -> Option<String> {
    let o = Command::new("readelf").arg("-n").arg(path).run();
    assert!(o.status.success(), "readelf -n {}", path.display());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines = text.lines();
    lines.find(|l| l.contains(kind))?;
    lines
        .next()
        .and_then(|l| l.trim().strip_prefix("description data:"))
        .map(|d| d.trim().to_string())
}

/// Checkpoints the running `pid` into `dir`; the image's path.
fn checkpoint(dir: &Path, pid: u32) -> PathBuf {
    let out = ok(
        dir,
        &[
            "checkpoint",
            "--pid",
            &pid.to_string(),
            "-o",
            dir.to_str().unwrap(),
            "--name",
            "t",
            "--json",
        ],
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    PathBuf::from(j["image"].as_str().unwrap())
}

#[test]
fn core_has_the_kernels_xsave_layout_note() {
    let dir = TempDir::new("xsave-layout");
    let d = dir.path();
    let fill = program("fill");
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -c unlimited 2>/dev/null; exec \"$0\" 1"])
        .arg(&fill)
        .current_dir(d)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = cr_tests::line_reader(child.stdout.take().unwrap());
    loop {
        match cr_tests::next_line_timeout(&rx, "fill's ready").as_deref() {
            Some("ready") => break,
            Some(_) => {}
            None => panic!("fill exited before it was ready"),
        }
    }
    let img = checkpoint(d, child.id());
    let core = d.join("cr.core");
    ok(
        d,
        &["core", img.to_str().unwrap(), "-o", core.to_str().unwrap()],
    );
    let ours = note_desc(&core, "0x00000205");

    // The kernel's own core of the same task, if it writes one here (a core_pattern of a
    // plain file name, in the task's directory).
    // SIGSEGV's default action dumps core.
    let st = Command::new("kill")
        .args(["-SEGV", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let _ = cr_tests::wait_timeout(&mut child, cr_tests::process_timeout());
    let kernel_core = dir
        .entries()
        .into_iter()
        .find(|n| n == "core" || n.starts_with("core."))
        .map(|n| d.join(n));
    match kernel_core {
        Some(k) => {
            let theirs = note_desc(&k, "0x00000205");
            assert_eq!(
                ours, theirs,
                "NT_X86_XSAVE_LAYOUT differs from the kernel's core's"
            );
        }
        None => {
            skipped_part(
                "core_has_the_kernels_xsave_layout_note",
                "the kernel wrote no core file here (core_pattern): our note is checked alone",
            );
            // x86-64 with XSAVE and AVX: the layout names component 2 (AVX) at 0x240.
            let n = ours.expect("no NT_X86_XSAVE_LAYOUT note");
            assert!(n.starts_with("02 00 00 00 00 01 00 00 40 02 00 00"), "{n}");
        }
    }

    // gdb reads the core, the vector registers too.
    let o = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "p $ymm0.v8_int32", "-ex", "bt"])
        .arg(&fill)
        .arg(&core)
        .run();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("$1 = {"), "gdb did not print ymm0:\n{text}");
    assert!(text.contains("main"), "gdb shows no main:\n{text}");
}
