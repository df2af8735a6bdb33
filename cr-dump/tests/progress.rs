//! Progress bars: a 256 MiB checkpoint, its `verify`, `squash` and `core` draw a determinate bar
//! (a percent of a known total, human sizes) on stderr when stderr is a terminal (a pty from
//! util-linux `script`), and print nothing of it into a pipe or a file, even when stdout is a
//! terminal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{program, skipped, Run, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

fn crid_file(dir: &Path) -> PathBuf {
    dir.join("crid")
}

/// `s` quoted for `sh -c`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs the shell command `cmd` with a pty as its terminal (`script`), returns its exit status
/// and everything written to the terminal.
fn on_pty(dir: &Path, cmd: &str) -> (bool, String) {
    let ts = dir.join("typescript");
    let out = Command::new("script")
        .args(["-q", "-f", "-e", "-c", cmd])
        .arg(&ts)
        .env("CR_CRID_FILE", crid_file(dir))
        .run();
    let text = String::from_utf8_lossy(&std::fs::read(&ts).unwrap_or_default()).into_owned();
    (out.status.success(), text)
}

/// A drawn bar of `step`: its name, then `[`, the bar, `]` and a percent.
fn has_bar(text: &str, step: &str) -> bool {
    text.split(['\r', '\n']).any(|l| {
        l.find(step).is_some_and(|i| {
            let rest = &l[i + step.len()..];
            rest.contains('[')
                && rest.contains(']')
                && rest
                    .split_whitespace()
                    .any(|w| w.ends_with('%') && w[..w.len() - 1].parse::<u32>().is_ok())
                && rest.contains("MiB")
        })
    })
}

fn script_available() -> bool {
    Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn bars_on_a_terminal_never_in_a_pipe() {
    if !script_available() {
        skipped(
            "bars_on_a_terminal_never_in_a_pipe",
            "no `script` (util-linux) to give a pty",
        );
        return;
    }
    let dir = TempDir::new("progress");
    let d = dir.path();
    let fill = program("fill");
    let bin = quote(BIN);
    let ds = quote(d.to_str().unwrap());

    // Checkpoint: the write-back bar (a twin by default: over 32 MiB) on the pty's stderr,
    // stdout elsewhere.
    let cmd = format!(
        "{bin} checkpoint -o {ds} --name big --after 1 -- {} 256 >/dev/null",
        quote(fill.to_str().unwrap())
    );
    let (ok, text) = on_pty(d, &cmd);
    assert!(ok, "checkpoint under script failed:\n{text}");
    assert!(
        has_bar(&text, "write-back"),
        "no write-back bar with a percent on the terminal:\n{text}"
    );
    let img = dir
        .entries()
        .into_iter()
        .find(|n| n.starts_with("big.img."))
        .map(|n| d.join(n))
        .expect("no image written");
    let is = quote(img.to_str().unwrap());

    // The same with --copy (the page buffer's known size) and --direct (the pages present).
    for (mode, step) in [("--copy", "write-back"), ("--direct", "capture")] {
        let sub = d.join(mode.trim_start_matches('-'));
        std::fs::create_dir(&sub).unwrap();
        let cmd = format!(
            "{bin} checkpoint {mode} -o {} --name big --after 1 -- {} 256 >/dev/null",
            quote(sub.to_str().unwrap()),
            quote(fill.to_str().unwrap())
        );
        let (ok, text) = on_pty(d, &cmd);
        assert!(ok, "checkpoint {mode} under script failed:\n{text}");
        assert!(has_bar(&text, step), "no {step} bar for {mode}:\n{text}");
    }

    // verify, squash and core of the 256 MiB image.
    let sq = quote(d.join("squashed.img").to_str().unwrap());
    let core = quote(d.join("core").to_str().unwrap());
    for (verb, args) in [
        ("verify", is.clone()),
        ("squash", format!("{is} -o {sq}")),
        ("core", format!("{is} -o {core}")),
    ] {
        let (ok, text) = on_pty(d, &format!("{bin} {verb} {args} >/dev/null"));
        assert!(ok, "{verb} under script failed:\n{text}");
        assert!(
            has_bar(&text, verb),
            "no {verb} bar on the terminal:\n{text}"
        );
    }

    // stdout a terminal, stderr a file: no bar anywhere.
    let err = d.join("stderr");
    let (ok, text) = on_pty(
        d,
        &format!("{bin} verify {is} 2>{}", quote(err.to_str().unwrap())),
    );
    assert!(ok, "verify with stderr to a file failed:\n{text}");
    let err = std::fs::read_to_string(&err).unwrap();
    assert!(!has_bar(&text, "verify"), "a bar on stdout:\n{text}");
    assert!(
        !err.contains('%') && !err.contains('\x1b'),
        "a bar written into a file: {err:?}"
    );
    assert!(text.contains("ok  "), "verify printed no result:\n{text}");

    // Everything into pipes: no bar, no escape sequence.
    let out = Command::new(BIN)
        .args(["checkpoint", "-o"])
        .arg(d)
        .args(["--name", "piped", "--after", "1", "--"])
        .arg(&fill)
        .arg("256")
        .env("CR_CRID_FILE", crid_file(d))
        .run();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\x1b') && !stderr.contains("write-back"),
        "progress written into a pipe: {stderr}"
    );
    let out = Command::new(BIN).arg("verify").arg(&img).run();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "verify wrote to a pipe: {stderr}");
}
