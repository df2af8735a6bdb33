//! The inspection verbs on vectors and on images of real processes: show --json and encode
//! round trips, verify (files, stdin, chains, damage), extract, diff, and ELF cores opened by a
//! real gdb.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{program, Run, Target, TempDir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

fn vectors(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spec/vectors")
        .join(kind);
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    v.sort();
    v
}

fn run(args: &[&str]) -> Output {
    let crid = std::env::temp_dir().join(format!("cr-test-crid-inspect-{}", std::process::id()));
    Command::new(BIN).args(args).env("CR_CRID_FILE", crid).run()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cr-dump failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn encode_roundtrip(img: &Path, dir: &Path) {
    let json = ok(&run(&[
        "show",
        "--json",
        "--with-pages",
        img.to_str().unwrap(),
    ]));
    let jpath = dir.join("img.json");
    std::fs::write(&jpath, json).unwrap();
    let back = dir.join("back.img");
    ok(&run(&[
        "encode",
        jpath.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
    ]));
    assert!(
        std::fs::read(img).unwrap() == std::fs::read(&back).unwrap(),
        "{}: encode(show --json) differs",
        img.display()
    );
}

#[test]
fn show_json_then_encode_gives_back_every_valid_vector() {
    let dir = TempDir::new("encode");
    for v in vectors("valid") {
        encode_roundtrip(&v, dir.path());
    }
}

#[test]
fn encode_without_page_data_is_refused_with_the_reason() {
    let dir = TempDir::new("encode-nodata");
    let v = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/valid/full.bin");
    let json = ok(&run(&["show", "--json", v.to_str().unwrap()]));
    let j = dir.path().join("x.json");
    std::fs::write(&j, json).unwrap();
    let out = run(&[
        "encode",
        j.to_str().unwrap(),
        "-o",
        dir.path().join("x.img").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--with-pages"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("x.img").exists());
}

#[test]
fn verify_accepts_valid_and_rejects_invalid_vectors_with_offset() {
    for v in vectors("valid") {
        ok(&run(&["verify", v.to_str().unwrap()]));
    }
    for v in vectors("invalid") {
        let out = run(&["verify", v.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", v.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("offset 0x"), "{}: {err}", v.display());
        // The same error the library reports, through the streaming reader.
        let want = std::fs::read_to_string(v.with_extension("err")).unwrap();
        assert!(
            err.contains(want.trim()),
            "{}: {err} vs {want}",
            v.display()
        );
    }
    // From stdin.
    let v = &vectors("valid")[0];
    let mut c = Command::new(BIN)
        .args(["verify", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(v).unwrap())
        .unwrap();
    assert!(cr_tests::output_timeout(c, cr_tests::process_timeout())
        .status
        .success());
}

fn chain_dir() -> TempDir {
    let dir = TempDir::new("chain");
    for i in 1..=3 {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../spec/vectors/valid/chain-{i}.bin"));
        std::fs::copy(src, dir.path().join(format!("sample.img.{i}"))).unwrap();
    }
    dir
}

#[test]
fn verify_chain_checks_links_and_finds_missing_parents() {
    let dir = chain_dir();
    let top = dir.path().join("sample.img.3");
    let out = ok(&run(&[
        "verify",
        "--chain",
        "--json",
        top.to_str().unwrap(),
    ]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["images"].as_array().unwrap().len(), 3);
    assert_eq!(j["parent_pages_checked"], 4);
    std::fs::remove_file(dir.path().join("sample.img.1")).unwrap();
    let out = run(&["verify", "--chain", top.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CRID 1 is missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another image under the parent's name.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/valid/no-vmas.bin"),
        dir.path().join("sample.img.1"),
    )
    .unwrap();
    let out = run(&["verify", "--chain", top.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("wrong parent: expected CRID 1, found CRID 9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn extract_resolves_through_the_chain() {
    let dir = chain_dir();
    let top = dir.path().join("sample.img.3");
    // Heap page 0 is data in image 3: byte j is j ^ 0 ^ 3.
    let out = run(&[
        "extract",
        top.to_str().unwrap(),
        "--addr",
        "0x600000",
        "--len",
        "16",
    ]);
    let b = out.stdout;
    assert!(out.status.success());
    assert_eq!(b, (0..16u8).map(|j| j ^ 3).collect::<Vec<_>>());
    // Pages 6..8 are "parent" twice, then zero in image 1.
    let out = run(&[
        "extract",
        top.to_str().unwrap(),
        "--addr",
        "6299648",
        "--len",
        "8192",
    ]);
    assert!(out.status.success() && out.stdout == vec![0; 8192]);
    // Hex view and an unmapped address.
    let hex = ok(&run(&[
        "extract",
        top.to_str().unwrap(),
        "--addr",
        "0x600000",
        "--len",
        "0x20",
        "--hex",
    ]));
    assert!(hex.starts_with("0000000000600000  03 02 01 00"), "{hex}");
    let out = run(&[
        "extract",
        top.to_str().unwrap(),
        "--addr",
        "0x10",
        "--len",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0x10"));
}

#[test]
fn diff_reports_pages_and_fields() {
    let dir = chain_dir();
    let (a, b) = (
        dir.path().join("sample.img.1"),
        dir.path().join("sample.img.3"),
    );
    let o = run(&["diff", "--json", a.to_str().unwrap(), b.to_str().unwrap()]);
    // diff(1)'s exit status: 1, the images differ.
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["differ"], true);
    // Data pages carry the CRID in their pattern: heap pages 0-1 and the text and stack pages.
    let pages: Vec<String> = j["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start"].as_str().unwrap().to_string())
        .collect();
    assert!(pages.contains(&"0x600000".to_string()), "{pages:?}");
    // Each range is named by its VMA; registers by name.
    let heap = j["pages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["start"] == "0x600000");
    assert_eq!(heap.unwrap()["vma"], "[heap]");
    let text =
        String::from_utf8(run(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]).stdout).unwrap();
    assert!(text.contains("image header.crid: 1 -> 3"), "{text}");
    assert!(text.contains("in [heap]"), "{text}");
    assert!(j["added"].as_array().unwrap().is_empty());
    let same = ok(&run(&["diff", a.to_str().unwrap(), a.to_str().unwrap()]));
    assert!(same.contains("0 page range(s) differ"), "{same}");
    // Trouble is 2, as diff(1) has it.
    let missing = run(&["diff", a.to_str().unwrap(), "/nonexistent/x.img"]);
    assert_eq!(missing.status.code(), Some(2));
}

fn gdb_available() -> bool {
    Command::new("gdb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn core_and_gdb(bin: &Path) {
    let dir = TempDir::new("core");
    let t = Target::spawn(bin, &[]);
    let pid = t.pid().to_string();
    let j: serde_json::Value = serde_json::from_str(&ok(&run(&[
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        dir.path().to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let img = j["image"].as_str().unwrap().to_string();
    let core = dir.path().join("core");
    ok(&run(&["core", &img, "-o", core.to_str().unwrap()]));
    encode_roundtrip(Path::new(&img), dir.path());
    let out = Command::new("gdb")
        .args([
            "-batch",
            "-nx",
            "-ex",
            "bt",
            "-ex",
            "print global_answer",
            "-ex",
            "frame 0",
            "-ex",
            "print local_value",
            "-ex",
            "print marker",
        ])
        .arg(bin)
        .arg(&core)
        .run();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for want in ["inner_loop", "outer", "main", "= 42", "= 778", "= 1"] {
        assert!(text.contains(want), "gdb output lacks {want:?}:\n{text}");
    }
    // No signal stopped the task (ptrace froze it): the core names none.
    assert!(!text.contains("terminated with signal"), "{text}");
}

#[test]
fn gdb_opens_the_core_of_a_pie_program() {
    if !gdb_available() {
        panic!("gdb is needed (.ci/run installs it)");
    }
    core_and_gdb(&program("gdb_target"));
}

#[test]
fn gdb_opens_the_core_of_a_non_pie_program() {
    if !gdb_available() {
        panic!("gdb is needed (.ci/run installs it)");
    }
    let dir = TempDir::new("nopie");
    let bin = dir.path().join("gdb_target_nopie");
    let src = cr_tests::programs_dir().join("gdb_target.c");
    let st = Command::new("gcc")
        .args(["-O0", "-g", "-no-pie", "-o"])
        .arg(&bin)
        .arg(&src)
        .run_status();
    assert!(st.success());
    core_and_gdb(&bin);
}

#[test]
fn verify_all_lists_every_damaged_record() {
    let dir = TempDir::new("verify-all");
    let mut b =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/valid/full.bin"))
            .unwrap();
    b[0x80] ^= 1; // Task payload
    b[0x2010] ^= 1; // heap Vma payload: its Pages are then checked without the VMA
    b[0x6010] ^= 1; // stack data page
    let p = dir.path().join("damaged.img.1");
    std::fs::write(&p, &b).unwrap();
    let out = run(&["verify", "--all", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("cr-dump: problem:"))
        .collect();
    assert_eq!(problems.len(), 3, "{err}");
    assert!(
        problems[0].contains("offset 0x70: record CRC mismatch") && problems[0].contains("Task"),
        "{err}"
    );
    assert!(
        problems[1].contains("offset 0x2000: record CRC mismatch") && problems[1].contains("Vma"),
        "{err}"
    );
    assert!(
        problems[2].contains("offset 0x6000: page data CRC mismatch"),
        "{err}"
    );
    assert!(err.contains("3 problem(s) found"), "{err}");
    // Without --all: the first one only.
    let out = run(&["verify", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// cr-dump with `stdin` as its standard input.
fn run_stdin(args: &[&str], stdin: &Path) -> Output {
    let f = std::fs::File::open(stdin).unwrap();
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::from(f))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cr_tests::output_timeout(child, cr_tests::process_timeout())
}

#[test]
fn every_verb_that_reads_one_image_reads_stdin() {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/valid/full.bin");
    let f = full.to_str().unwrap();
    for (args, from_file) in [
        (vec!["show", "-"], vec!["show", f]),
        (vec!["show", "/dev/stdin"], vec!["show", f]),
        (vec!["show", "-v", "-"], vec!["show", "-v", f]),
        (vec!["show", "--json", "-"], vec!["show", "--json", f]),
        (
            vec!["show", "--json", "--with-pages", "/dev/stdin"],
            vec!["show", "--json", "--with-pages", f],
        ),
        (
            vec!["extract", "-", "--addr", "0x600000", "--len", "64", "--hex"],
            vec!["extract", f, "--addr", "0x600000", "--len", "64", "--hex"],
        ),
        (vec!["diff", "-", f], vec!["diff", f, f]),
    ] {
        let a = run_stdin(&args, &full);
        let b = run(&from_file);
        assert_eq!(
            a.status.code(),
            b.status.code(),
            "{args:?}: {}",
            String::from_utf8_lossy(&a.stderr)
        );
        assert_eq!(
            a.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&a.stderr)
        );
        let (sa, sb) = (
            String::from_utf8_lossy(&a.stdout),
            String::from_utf8_lossy(&b.stdout),
        );
        // Only the name of the image may differ.
        assert_eq!(
            sa.replace("\"-\"", "").replace(" - ", ""),
            sb.replace(f, "").replace(&format!("\"{f}\""), ""),
            "{args:?}"
        );
    }
    let dir = TempDir::new("stdin");
    let core = dir.path().join("core");
    ok(&run_stdin(
        &["core", "-", "-o", core.to_str().unwrap()],
        &full,
    ));
    assert!(std::fs::read(&core).unwrap().starts_with(b"\x7fELF"));
    ok(&run_stdin(&["verify", "/dev/stdin"], &full));
    // An incremental image on stdin: its parents cannot be found, and the message says why.
    let child = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/valid/chain-3.bin");
    let o = run_stdin(&["core", "-", "-o", core.to_str().unwrap()], &child);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("standard input is incremental (parent CRID 2)"),
        "{err}"
    );
}

#[test]
fn verify_json_prints_one_object_whatever_happens() {
    let dir = TempDir::new("verify-json");
    let bad = vectors("invalid")
        .into_iter()
        .find(|p| p.ends_with("arch-aarch64.bin"))
        .unwrap();
    for args in [
        vec!["verify", "--json", bad.to_str().unwrap()],
        vec!["verify", "--json", "--all", bad.to_str().unwrap()],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["ok"], false, "{j}");
        let e = if args.contains(&"--all") {
            &j["errors"][0]
        } else {
            &j
        };
        assert_eq!(e["offset"], 0x1c, "{j}");
        assert_eq!(e["record"], "Header", "{j}");
        assert!(
            e["path"].as_str().unwrap().ends_with("arch-aarch64.bin"),
            "{j}"
        );
    }
    let missing = dir.path().join("nothing.img");
    let o = run(&["verify", "--json", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert!(j["error"].as_str().unwrap().contains("No such file"), "{j}");
    let good = vectors("valid").into_iter().next().unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&ok(&run(&["verify", "--json", good.to_str().unwrap()]))).unwrap();
    assert_eq!(j["ok"], true);
}

#[test]
fn a_digest_prints_the_same_everywhere() {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/valid/full.bin");
    let f = full.to_str().unwrap();
    let img = std::fs::read(&full).unwrap();
    let d = cr_format::read::Image::parse(&img)
        .unwrap()
        .tail()
        .digest
        .get();
    let want = format!("{d:#018x}");
    assert_eq!(want.len(), 18);
    assert!(ok(&run(&["show", f])).contains(&format!("digest        {want}\n")));
    assert!(ok(&run(&["verify", f])).contains(&format!("digest {want} ")));
    assert!(ok(&run(&["show", "--json", f])).contains(&format!("\"digest\": \"{want}\"")));
    let j: serde_json::Value = serde_json::from_str(&ok(&run(&["verify", "--json", f]))).unwrap();
    assert_eq!(j["images"][0]["digest"], want.as_str());
}

#[test]
fn bash_completion_completes_options_after_the_verb() {
    let dir = TempDir::new("completion");
    let script = dir.path().join("cr-dump.bash");
    std::fs::write(&script, ok(&run(&["completions", "bash"]))).unwrap();
    // bash's own machinery: the function `complete -p` names, called as readline calls it.
    let test = format!(
        r#"source {}
spec=$(complete -p cr-dump) || exit 3
fn=$(echo "$spec" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
comp() {{
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
    COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=()
    "$fn" cr-dump "${{COMP_WORDS[-1]}}" "${{COMP_WORDS[-2]}}"
    echo "$*=${{COMPREPLY[*]}}"
}}
comp cr-dump sh
comp cr-dump show --j
comp cr-dump verify --a
comp cr-dump diff --j
comp cr-dump core --o
"#,
        script.display()
    );
    let o = Command::new("bash").arg("-c").arg(&test).run();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "cr-dump sh=show",
        "cr-dump show --j=--json",
        "cr-dump verify --a=--all",
        "cr-dump diff --j=--json",
        "cr-dump core --o=--output",
    ] {
        assert!(out.lines().any(|l| l == want), "{want:?} not in:\n{out}");
    }
    // zsh and fish scripts are generated (their shells are not installed here to run them).
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let s = ok(&run(&["completions", shell]));
        assert!(
            s.contains("cr-dump") && s.contains("--with-pages"),
            "{shell}"
        );
    }
}

#[test]
fn man_pages_per_verb_have_exit_status_and_examples() {
    let verbs = [
        "checkpoint",
        "show",
        "encode",
        "verify",
        "extract",
        "diff",
        "core",
        "chain",
        "squash",
        "restore",
        "completions",
        "man",
    ];
    let groff = Command::new("groff").arg("--version").output().is_ok();
    for verb in verbs.iter().map(Some).chain([None]) {
        let mut args = vec!["man"];
        args.extend(verb);
        let page = ok(&run(&args));
        let title = verb.map_or("cr-dump".to_string(), |v| format!("cr-dump-{v}"));
        assert!(page.contains(&format!(".TH {title} 1")), "{title}:\n{page}");
        assert!(page.contains(".SH \"EXIT STATUS\""), "{title}");
        assert!(page.contains(".SH \"SEE ALSO\""), "{title}");
        if verb.is_some() {
            assert!(page.contains(".SH EXAMPLES"), "{title}");
        }
        if groff {
            // Rendered with every warning on: none may appear.
            let dir = TempDir::new("man");
            let f = dir.path().join("page.1");
            std::fs::write(&f, &page).unwrap();
            let o = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z", f.to_str().unwrap()])
                .run();
            assert!(
                o.status.success() && o.stderr.is_empty(),
                "{title}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let diff = ok(&run(&["man", "diff"]));
    assert!(diff.contains("1: they differ"), "{diff}");
    assert_eq!(run(&["man", "nosuchverb"]).status.code(), Some(2));
}

/// A checkpoint of `t` into `dir`: the image's path.
fn checkpoint(t: &Target, dir: &Path) -> String {
    let pid = t.pid().to_string();
    let j: serde_json::Value = serde_json::from_str(&ok(&run(&[
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        dir.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    j["image"].as_str().unwrap().to_string()
}

/// Whether the image's task was stopped inside its vDSO.
fn stopped_in_vdso(img: &str) -> bool {
    let j: serde_json::Value = serde_json::from_str(&ok(&run(&["show", "--json", img]))).unwrap();
    let int = |v: &serde_json::Value| {
        u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let rip = int(&j["regs"]["gpr"]["rip"]);
    j["body"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b.get("vma"))
        .any(|v| v["kind"] == "vdso" && (int(&v["start"])..int(&v["end"])).contains(&rip))
}

#[test]
fn gdb_unwinds_the_core_of_a_task_stopped_in_the_vdso() {
    if !gdb_available() {
        panic!("gdb is needed (.ci/run installs it)");
    }
    let dir = TempDir::new("vdso-core");
    let bin = program("vdso_poll");
    let t = Target::spawn(&bin, &["alpha", "beta"]);
    // The task spends most of its time in clock_gettime: a few checkpoints find it there.
    let img = (0..40)
        .map(|i| {
            let d = dir.path().join(format!("c{i}"));
            std::fs::create_dir(&d).unwrap();
            checkpoint(&t, &d)
        })
        .find(|img| stopped_in_vdso(img));
    let Some(img) = img else {
        cr_tests::skipped(
            "gdb_unwinds_the_core_of_a_task_stopped_in_the_vdso",
            "40 checkpoints never stopped the task inside its vDSO",
        );
        return;
    };
    let core = dir.path().join("core");
    let o = run(&["core", &img, "-o", core.to_str().unwrap()]);
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{note}");
    // The image holds the vDSO's bytes (format 1.2): no fallback to this machine's.
    assert!(!note.contains("this machine's vDSO"), "{note}");
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "bt"])
        .arg(&bin)
        .arg(&core)
        .run();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // The frames below the vDSO's are the program's: gdb unwound through the vDSO.
    for want in ["poll_clock", "main", "alpha beta"] {
        assert!(text.contains(want), "gdb output lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("corrupt stack"), "{text}");
}

#[test]
fn core_shows_progress_only_on_a_terminal() {
    let dir = TempDir::new("core-progress");
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/valid/full.bin");
    let core = dir.path().join("core");
    let cmd = format!("{BIN} core {} -o {}", full.display(), core.display());
    // script(1) runs it on a pseudo-terminal: stderr is a terminal there.
    let Ok(o) = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .output()
    else {
        cr_tests::skipped(
            "core_shows_progress_only_on_a_terminal",
            "script(1) is not installed",
        );
        return;
    };
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    for want in ["100%", "KiB/", "/s", "ETA"] {
        assert!(
            tty.contains(want),
            "no {want:?} in the terminal's output:\n{tty}"
        );
    }
    // Not a terminal: no bar, only the result.
    let o = run(&["core", full.to_str().unwrap(), "-o", core.to_str().unwrap()]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains('%'), "{err}");
}
