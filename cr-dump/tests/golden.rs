//! Golden outputs next to the vectors: every valid vector's `show`, `show -v` and `show --json`,
//! and every invalid vector's `verify` error, compared with checked-in files.
//! `CR_BLESS=1 cargo test -p cr-dump --test golden` rewrites them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::Run;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spec/vectors")
        .join(kind)
}

fn names(kind: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir(kind))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    v.sort();
    v
}

/// Runs cr-dump in the vectors directory with a relative path, so outputs name no machine path.
fn run(kind: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).current_dir(dir(kind)).run();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

fn golden(path: &Path, actual: &str, bad: &mut Vec<String>) {
    if std::env::var_os("CR_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
    } else if std::fs::read_to_string(path).ok().as_deref() != Some(actual) {
        bad.push(path.display().to_string());
    }
}

#[test]
fn show_outputs_of_valid_vectors() {
    let mut bad = vec![];
    for n in names("valid") {
        let stem = n.trim_end_matches(".bin");
        for (suffix, args) in [
            ("show.txt", vec!["show"]),
            ("show-v.txt", vec!["show", "-v"]),
            ("show.json", vec!["show", "--json"]),
        ] {
            let mut a = args.clone();
            a.push(&n);
            let (code, out, err) = run("valid", &a);
            assert_eq!(code, 0, "{n} {args:?}: {err}");
            golden(
                &dir("valid").join(format!("{stem}.{suffix}")),
                &out,
                &mut bad,
            );
        }
    }
    assert!(bad.is_empty(), "differ (CR_BLESS=1 regenerates): {bad:#?}");
}

#[test]
fn verify_errors_of_invalid_vectors() {
    let mut bad = vec![];
    for n in names("invalid") {
        let (code, out, err) = run("invalid", &["verify", &n]);
        assert_eq!(code, 1, "{n}: {out}");
        golden(
            &dir("invalid").join(format!("{}.verify.txt", n.trim_end_matches(".bin"))),
            &err,
            &mut bad,
        );
    }
    assert!(bad.is_empty(), "differ (CR_BLESS=1 regenerates): {bad:#?}");
}
