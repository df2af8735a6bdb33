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

/// The image's vDSO (range and bytes) and saved instruction pointer.
fn vdso_of(img: &Path) -> (u64, u64, Vec<u8>, u64) {
    let bytes = std::fs::read(img).unwrap();
    let i = cr_format::read::Image::parse(&bytes).unwrap();
    let (v, d) = i.vdso_data().expect("the image holds no vDSO bytes");
    let rip = i.regs().unwrap().gpr(16);
    (v.start(), v.end(), d.bytes.to_vec(), rip)
}

/// A copy of `img` at `out` whose vDSO bytes have byte `at` flipped, through `show --json
/// --with-pages` and `encode`.
fn with_vdso_byte_flipped(dir: &Path, img: &Path, at: usize, out: &Path) {
    let text = ok(
        dir,
        &["show", "--json", "--with-pages", img.to_str().unwrap()],
    );
    let mut j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let d = j["body"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find_map(|b| b.get_mut("vdso_data"))
        .expect("no vdso_data in the JSON");
    let hex = d["data"].as_str().unwrap().to_string();
    let b = u8::from_str_radix(&hex[2 * at..2 * at + 2], 16).unwrap() ^ 0xff;
    let hex = format!("{}{b:02x}{}", &hex[..2 * at], &hex[2 * at + 2..]);
    d["data"] = hex.into();
    let json = dir.join("flipped.json");
    std::fs::write(&json, j.to_string()).unwrap();
    ok(
        dir,
        &[
            "encode",
            json.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
}

/// gdb's `bt` of `core` with `bin`.
fn backtrace(bin: &Path, core: &Path) -> String {
    let o = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "bt"])
        .arg(bin)
        .arg(core)
        .run();
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn a_task_stopped_in_clock_gettime_unwinds_from_its_image_and_restores_only_onto_its_vdso() {
    let dir = TempDir::new("vdso-bytes");
    let d = dir.path();
    let bin = program("vdso_poll");
    let t = cr_tests::Target::spawn(&bin, &[]);
    // It spends most of its time in clock_gettime: a few checkpoints find it there.
    let found = (0..40).find_map(|i| {
        let sub = d.join(format!("c{i}"));
        std::fs::create_dir(&sub).unwrap();
        let img = checkpoint(&sub, t.child.id());
        let (start, end, _, rip) = vdso_of(&img);
        (start..end).contains(&rip).then_some(img)
    });
    let Some(img) = found else {
        cr_tests::skipped(
            "a_task_stopped_in_clock_gettime_unwinds_from_its_image_and_restores_only_onto_its_vdso",
            "40 checkpoints never stopped the task inside its vDSO",
        );
        return;
    };
    let (start, end, bytes, _) = vdso_of(&img);
    assert_eq!(bytes.len() as u64, end - start);
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "the vDSO bytes are not an ELF image"
    );

    // show: the bytes are this machine's.
    let shown = ok(d, &["show", img.to_str().unwrap()]);
    assert!(
        shown.contains("vdso bytes:") && shown.contains("same as this machine's"),
        "{shown}"
    );

    // core: from the image's bytes, with no note about this machine's; gdb unwinds through
    // clock_gettime to main.
    let core = d.join("core");
    let o = cr(d)
        .args(["core", img.to_str().unwrap(), "-o", core.to_str().unwrap()])
        .run();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("this machine's vDSO"), "{err}");
    let bt = backtrace(&bin, &core);
    let frame0 = bt.lines().find(|l| l.starts_with("#0")).unwrap_or("");
    assert!(
        frame0.contains("clock_gettime"),
        "frame #0 is not in clock_gettime:\n{bt}"
    );
    for want in ["poll_clock", "main"] {
        assert!(bt.contains(want), "gdb's bt lacks {want:?}:\n{bt}");
    }
    assert!(
        !bt.contains("corrupt stack") && !bt.contains("?? ()"),
        "{bt}"
    );

    // The core holds the image's bytes, not this machine's: one byte changed in the image (in
    // the ELF header's padding, which no code reads) is in the core.
    let edited = d.join("edited.img");
    with_vdso_byte_flipped(d, &img, 12, &edited);
    let core2 = d.join("core2");
    ok(
        d,
        &[
            "core",
            edited.to_str().unwrap(),
            "-o",
            core2.to_str().unwrap(),
        ],
    );
    let dump = d.join("vdso.bin");
    let o = Command::new("gdb")
        .args(["-batch", "-nx", "-ex"])
        .arg(format!(
            "dump binary memory {} {start:#x} {end:#x}",
            dump.display()
        ))
        .arg(&bin)
        .arg(&core2)
        .run();
    assert!(o.status.success(), "{o:?}");
    let mut want = bytes.clone();
    want[12] ^= 0xff;
    assert_eq!(
        std::fs::read(&dump).unwrap(),
        want,
        "the core's vDSO is not the image's"
    );
    let shown = ok(d, &["show", edited.to_str().unwrap()]);
    assert!(shown.contains("differs from this machine's"), "{shown}");

    // restore: stopped inside a vDSO that is not this machine's: refused before anything
    // starts, naming why.
    let o = cr(d)
        .args(["restore", "--detach", edited.to_str().unwrap()])
        .run();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stopped inside its vDSO") && err.contains("differs from this machine's"),
        "{err}"
    );
}

#[test]
fn restore_warns_when_the_vdso_differs_elsewhere() {
    let dir = TempDir::new("vdso-warn");
    let d = dir.path();
    let mut child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let img = checkpoint(d, child.id());
    let _ = child.kill();
    let _ = child.wait();
    let (start, end, _, rip) = vdso_of(&img);
    assert!(!(start..end).contains(&rip), "sleep stopped in its vDSO");

    // Its own vDSO: no warning about it.
    let o = cr(d)
        .args(["restore", "--detach", img.to_str().unwrap()])
        .run();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    kill(&o.stdout);
    assert!(!err.contains("vDSO"), "{err}");

    // Another vDSO: restored, with the warning.
    let edited = d.join("edited.img");
    with_vdso_byte_flipped(d, &img, 12, &edited);
    let o = cr(d)
        .args(["restore", "--detach", edited.to_str().unwrap()])
        .run();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    kill(&o.stdout);
    assert!(
        err.contains("warning: the task's vDSO differs from this machine's")
            && err.contains("clock_gettime"),
        "{err}"
    );
}

/// Kills the restored task whose pid `restore --detach` printed.
fn kill(stdout: &[u8]) {
    let pid = String::from_utf8_lossy(stdout).trim().to_string();
    assert!(pid.parse::<u32>().is_ok(), "restore printed {pid:?}");
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
}
