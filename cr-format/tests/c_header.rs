//! `spec/cr_image.h` and `spec/c/walk.c` against the Rust crate: the header compiles pedantically
//! (its static asserts hold), its asserted layouts are FORMAT.md's tables, its constants are
//! `raw`'s and `limits`' values, and the C record walker agrees line by line with the Rust reader
//! on every vector in `spec/vectors/valid/`.
//!
//! gcc is always present in CI; without it these tests print a notice and pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::as_conversions,
    clippy::arithmetic_side_effects
)]

mod support;
use cr_format::limits::*;
use cr_format::raw::*;
use cr_format::read::{Options, Record, Records};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::spec_dir;

fn header_text() -> String {
    std::fs::read_to_string(spec_dir().join("cr_image.h")).expect("spec/cr_image.h")
}

/// A scratch directory of this test process.
fn scratch() -> PathBuf {
    let d =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("c_header-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// gcc is a prerequisite (CI has it, and the test programs need it anyway): its absence fails
/// these tests instead of passing them unrun.
fn require_gcc() {
    static HAVE: OnceLock<()> = OnceLock::new();
    HAVE.get_or_init(|| {
        // `output_within` panics if gcc is missing, naming it.
        let o = output_within(
            Command::new("gcc").arg("--version"),
            Duration::from_secs(30),
        );
        assert!(
            o.status.success(),
            "gcc is needed for the C header and walk.c tests"
        );
    });
}

/// `Command::output` with a time limit: a hung gcc or walk fails in seconds (the child is
/// killed) instead of holding CI; the pipes are drained by threads meanwhile.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let drain = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut b);
            }
            b
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn gcc(args: &[&str], what: &str) {
    let out = output_within(Command::new("gcc").args(args), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "gcc failed on {what}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// walk.c and walk_state.c, compiled once with the flags CI uses; None without gcc.
fn walk_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        require_gcc();
        let bin = scratch().join("walk");
        let spec = spec_dir();
        let src = spec.join("c/walk.c");
        let state = spec.join("c/walk_state.c");
        gcc(
            &[
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-O2",
                "-I",
                spec.to_str().unwrap(),
                "-o",
                bin.to_str().unwrap(),
                src.to_str().unwrap(),
                state.to_str().unwrap(),
            ],
            "spec/c/walk.c and walk_state.c",
        );
        bin
    })
}

fn run_walk(bin: &Path, image: &Path) -> Output {
    output_within(Command::new(bin).arg(image), Duration::from_secs(20))
}

fn valid_vectors() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(spec_dir().join("vectors/valid"))
        .expect("spec/vectors/valid")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no vectors in spec/vectors/valid");
    v
}

/// The lines walk.c prints, from the Rust reader.
fn expected_lines(bytes: &[u8], path: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for r in Records::new(bytes, Options::default()) {
        let p = r.unwrap_or_else(|e| panic!("{}: the Rust reader rejects it: {e}", path.display()));
        let h = p.header;
        lines.push(format!(
            "{:#x} {} {} {:#010x} ok",
            p.offset,
            h.kind.get(),
            h.len.get(),
            h.crc.get()
        ));
        if let Record::Tail(t) = p.record {
            lines.push(format!(
                "tail records={} image_len={} digest={:#018x} digest_ok=yes",
                t.record_count.get(),
                t.image_len.get(),
                t.digest.get()
            ));
        }
    }
    lines
}

#[test]
fn walk_agrees_with_the_reader_on_valid_vectors() {
    let bin = walk_binary();
    for path in valid_vectors() {
        let bytes = std::fs::read(&path).unwrap();
        let want = expected_lines(&bytes, &path);
        let out = run_walk(bin, &path);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let got: Vec<&str> = stdout.lines().collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{}: line {}", path.display(), i + 1);
        }
        assert_eq!(got.len(), want.len(), "{}: number of lines", path.display());
        assert!(
            got.iter()
                .all(|l| l.ends_with(" ok") || l.ends_with("digest_ok=yes")),
            "{}: {stdout}",
            path.display()
        );
        assert!(
            out.status.success(),
            "{}: walk exits with {:?}: {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The kind walk.c names for an error of the Rust reader (its `Display` text, as in
/// `spec/vectors/invalid/*.err`).
fn walk_kind(rust: &str) -> &'static str {
    const KINDS: [(&str, &str); 17] = [
        ("payload length", "malformed"),
        ("image truncated", "truncated"),
        ("bad magic", "magic"),
        ("unsupported format version", "version"),
        ("unsupported architecture", "arch"),
        ("bad page_size", "page_size"),
        ("bad crid", "crid"),
        ("bad parent_crid", "parent_crid"),
        ("not allowed here", "order"),
        ("unknown critical record kind", "unknown_critical"),
        ("record CRC mismatch", "record_crc"),
        ("page data CRC mismatch", "page_data_crc"),
        ("tail digest", "tail_digest"),
        ("data after the tail", "trailing_data"),
        ("exceeds MAX_", "limit"),
        ("bad _reserved", "reserved"),
        ("bad ", "field"),
    ];
    KINDS
        .iter()
        .find(|(needle, _)| rust.contains(needle))
        .map(|&(_, k)| k)
        .unwrap_or_else(|| panic!("no walk.c kind for the error {rust:?}"))
}

/// Every invalid vector: walk.c fails (exit 1) with the same kind of error at the same byte
/// offset as the Rust reader (its first error, as `spec/vectors/invalid/NAME.err` records it).
#[test]
fn walk_agrees_with_the_reader_on_invalid_vectors() {
    let bin = walk_binary();
    let mut v: Vec<PathBuf> = std::fs::read_dir(spec_dir().join("vectors/invalid"))
        .expect("spec/vectors/invalid")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    v.sort();
    assert!(v.len() >= 30, "{} invalid vectors", v.len());
    for path in v {
        let err = std::fs::read_to_string(path.with_extension("err")).unwrap();
        let (off, msg) = err
            .trim()
            .strip_prefix("offset ")
            .and_then(|r| r.split_once(": "))
            .unwrap_or_else(|| panic!("{}: {err:?}", path.display()));
        let want = format!("error {off} {}", walk_kind(msg));
        let out = run_walk(bin, &path);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout.lines().last(),
            Some(want.as_str()),
            "{}: the Rust reader says {err:?}; walk: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
    }
}

/// Every record's CRC and the Tail recomputed after an edit of payload bytes (lengths kept).
fn reseal(img: &mut [u8]) {
    let crc64 = crc::Crc::<u64>::new(&crc::CRC_64_XZ);
    let mut digest = crc64.digest();
    let mut off = 0usize;
    while off + 16 <= img.len() {
        let kind = u16::from_le_bytes([img[off], img[off + 1]]);
        let len = u32::from_le_bytes(img[off + 4..off + 8].try_into().unwrap()) as usize;
        if kind == KIND_TAIL {
            let count = u32::from_le_bytes(img[off + 8..off + 12].try_into().unwrap());
            img[off + 16..off + 24].copy_from_slice(&u64::from(count).to_le_bytes());
            img[off + 32..off + 40].copy_from_slice(&digest.clone().finalize().to_le_bytes());
        }
        // Pages: only the checked part is under the record CRC (the data is not edited here).
        let checked = if kind == KIND_PAGES {
            let n = u32::from_le_bytes(img[off + 16..off + 20].try_into().unwrap()) as usize;
            let pad = u32::from_le_bytes(img[off + 20..off + 24].try_into().unwrap()) as usize;
            16 + 16 * n + pad
        } else {
            len
        };
        let mut c = crc32fast::Hasher::new();
        c.update(&img[off..off + 12]);
        c.update(&img[off + 16..off + 16 + checked]);
        let crc = c.finalize();
        img[off + 12..off + 16].copy_from_slice(&crc.to_le_bytes());
        if kind != KIND_TAIL {
            digest.update(&img[off..off + 16]);
        }
        off += 16 + len;
    }
}

/// Every byte of the payloads of the 1.1 records of `state-handmade.bin` and of the 1.2 records
/// of `v12-handmade.bin` changed (two ways) and the image resealed, so that the field checks run:
/// walk.c, written from FORMAT.md, accepts exactly what the Rust reader accepts and otherwise
/// names the same error at the same offset.
#[test]
fn walk_agrees_with_the_reader_on_resealed_edits_of_the_1_1_records() {
    resealed_edits("state-handmade.bin", KIND_FILE..=KIND_LAST_1_1);
}

/// As above, for the records of 1.2 of `v12-handmade.bin` (of the VdsoData, the fixed part and
/// the first bytes only: the vDSO's bytes are not checked).
#[test]
fn walk_agrees_with_the_reader_on_resealed_edits_of_the_1_2_records() {
    resealed_edits("v12-handmade.bin", KIND_INOTIFY..=KIND_LAST);
}

fn resealed_edits(name: &str, kinds: std::ops::RangeInclusive<u16>) {
    let bin = walk_binary();
    let img = std::fs::read(spec_dir().join("vectors/valid").join(name)).unwrap();
    let case = scratch().join(format!("edit-{name}"));
    let spans: Vec<(usize, usize)> = Records::new(&img, Options::default())
        .map(|r| r.unwrap())
        .filter(|p| kinds.contains(&p.header.kind.get()))
        .map(|p| {
            let len = p.header.len.get() as usize;
            let len = if p.header.kind.get() == KIND_VDSO_DATA {
                len.min(24)
            } else {
                len
            };
            (p.offset as usize + 16, len)
        })
        .collect();
    let (mut accepted, mut rejected) = (0, 0);
    for (start, len) in spans {
        for at in start..start + len {
            for flip in [0x01u8, 0x80] {
                let mut b = img.clone();
                b[at] ^= flip;
                reseal(&mut b);
                std::fs::write(&case, &b).unwrap();
                let out = run_walk(bin, &case);
                let stdout = String::from_utf8(out.stdout).unwrap();
                match cr_format::read::Image::parse(&b) {
                    Ok(_) => {
                        accepted += 1;
                        assert_eq!(out.status.code(), Some(0), "{at:#x}^{flip:#x}: {stdout}");
                    }
                    Err(e) => {
                        rejected += 1;
                        let msg = e.to_string();
                        let (_, text) = msg.split_once(": ").unwrap();
                        let want = format!("error {:#x} {}", e.offset, walk_kind(text));
                        assert_eq!(
                            stdout.lines().last(),
                            Some(want.as_str()),
                            "{at:#x}^{flip:#x}: the Rust reader says {msg:?}"
                        );
                    }
                }
            }
        }
    }
    assert!(
        accepted > 50 && rejected > 50,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn walk_flags_corruption_and_survives_bad_input() {
    let bin = walk_binary();
    let path = spec_dir().join("vectors/valid/minimal-handmade.bin");
    let img = std::fs::read(&path).unwrap();
    let dir = scratch();
    let case = dir.join(format!("case-{:?}.bin", std::thread::current().id()));
    let records: Vec<(u64, u16, u32)> = Records::new(&img, Options::default())
        .map(|r| {
            let p = r.unwrap();
            (p.offset, p.header.kind.get(), p.header.len.get())
        })
        .collect();

    // A flipped byte in the last 8 bytes of each payload (for Pages, in the page data): that
    // record's line says BAD (or, for the Tail, the digest or counts disagree) and walk fails.
    for (i, &(off, kind, len)) in records.iter().enumerate() {
        let mut b = img.clone();
        let at = (off + 16 + u64::from(len) - 8) as usize;
        b[at] ^= 0x01;
        std::fs::write(&case, &b).unwrap();
        let out = run_walk(bin, &case);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.lines().nth(i).unwrap_or("");
        assert!(
            line.ends_with(" BAD"),
            "kind {kind}: flipped byte {at:#x}: {stdout}"
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "kind {kind}: flipped byte {at:#x}"
        );
    }

    // Truncated images and garbage: a message and exit status 1, never a crash.
    let mut inputs: Vec<Vec<u8>> = (0..img.len())
        .step_by(61)
        .map(|n| img[..n].to_vec())
        .collect();
    inputs.push(vec![0xff; 64]);
    inputs.push(vec![0; 40]);
    let mut huge = img.clone();
    huge[0x4e8 + 16..0x4e8 + 20].copy_from_slice(&u32::MAX.to_le_bytes()); // run_count
    inputs.push(huge);
    let mut long = img.clone();
    long.extend_from_slice(&[0; 8]);
    inputs.push(long);
    for b in inputs {
        std::fs::write(&case, &b).unwrap();
        let out = run_walk(bin, &case);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} bytes: {:?}: {}",
            b.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{} bytes: no message", b.len());
    }
}

#[test]
fn header_compiles_pedantic() {
    require_gcc();
    let dir = scratch();
    let src = dir.join("include_cr_image.c");
    std::fs::write(
        &src,
        "#include \"cr_image.h\"\n\
         int cr_probe(const unsigned char *p);\n\
         int cr_probe(const unsigned char *p)\n\
         {\n\
         \tconst struct cr_record_header *h = (const struct cr_record_header *)(const void *)p;\n\
         \treturn (int)cr_get_le16(&h->kind) + (int)sizeof(struct cr_regs_x86_64);\n\
         }\n",
    )
    .unwrap();
    let spec = spec_dir();
    for std in ["-std=c11", "-std=gnu11", "-std=c17"] {
        gcc(
            &[
                std,
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-I",
                spec.to_str().unwrap(),
                "-c",
                "-o",
                dir.join("include_cr_image.o").to_str().unwrap(),
                src.to_str().unwrap(),
            ],
            &format!("a file that includes cr_image.h ({std})"),
        );
    }
}

/// The header as a UAPI header (FORMAT.md's C header is meant for kernel and UAPI use too):
/// valid C90 with gcc's strictest flags, with its integer types from `<linux/types.h>`
/// (`-DCR_UAPI`, the `__u8`/`__le32` of the kernel's uapi headers) and from `<stdint.h>`; and
/// its layout checks still bite in C90, where `_Static_assert` does not exist.
#[test]
fn header_is_a_c90_uapi_header() {
    require_gcc();
    // gcc -std=c90 -pedantic rejects // comments, long long constants and `inline`.
    let dir = scratch();
    let src = dir.join("uapi_cr_image.c");
    std::fs::write(
        &src,
        "#include \"cr_image.h\"\n\
         int cr_probe(const unsigned char *p);\n\
         int cr_probe(const unsigned char *p)\n\
         {\n\
         \tconst struct cr_header *h = (const struct cr_header *)(const void *)p;\n\
         \treturn (int)cr_get_le16(&h->arch) + (int)cr_pad8(cr_get_le64(p)) + h->magic[0];\n\
         }\n",
    )
    .unwrap();
    let spec = spec_dir();
    let obj = dir.join("uapi_cr_image.o");
    let base = [
        "-pedantic",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-I",
        spec.to_str().unwrap(),
        "-c",
        "-o",
        obj.to_str().unwrap(),
    ];
    for std in ["-std=c90", "-std=c99", "-std=c11"] {
        for uapi in [Some("-DCR_UAPI"), None] {
            let mut args = vec![std];
            args.extend(uapi);
            args.extend(base);
            args.push(src.to_str().unwrap());
            gcc(&args, &format!("cr_image.h ({std} {uapi:?})"));
        }
    }
    // A failing check fails the C90 build: the fallback is a real check, not a no-op.
    let bad = dir.join("uapi_bad_assert.c");
    std::fs::write(
        &bad,
        "#include \"cr_image.h\"\nCR_CHECK_SIZE(cr_header, 95);\n",
    )
    .unwrap();
    let mut args = vec!["-std=c90", "-DCR_UAPI"];
    args.extend(base);
    args.push(bad.to_str().unwrap());
    let out = output_within(Command::new("gcc").args(&args), Duration::from_secs(120));
    assert!(
        !out.status.success(),
        "a false CR_CHECK_SIZE compiled in C90"
    );
}

/// Layout rows by struct name: (field, offset, size).
type Layouts = BTreeMap<String, Vec<(String, u64, u64)>>;

/// Every table of FORMAT.md: struct name to (field, offset, size) rows.
fn spec_tables() -> Layouts {
    let md = std::fs::read_to_string(spec_dir().join("FORMAT.md")).unwrap();
    let mut out = Layouts::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        if line.starts_with('#') {
            // A heading that names a struct: `### 3. Header (`Header`, 96 bytes)`.
            current = line
                .split('`')
                .nth(1)
                .filter(|_| line.contains(" bytes)"))
                .map(str::to_string);
            continue;
        }
        let Some(name) = &current else { continue };
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() == 5 {
            if let (Ok(off), Ok(size)) = (cells[0].parse(), cells[1].parse()) {
                out.entry(name.clone())
                    .or_default()
                    .push((cells[3].to_string(), off, size));
            }
        }
    }
    out
}

/// C struct name of each struct of `raw`.
const C_NAMES: [(&str, &str); 26] = [
    ("RecordHeader", "cr_record_header"),
    ("Header", "cr_header"),
    ("Task", "cr_task"),
    ("RegsX86_64", "cr_regs_x86_64"),
    ("Mm", "cr_mm"),
    ("AuxvEntry", "cr_auxv_entry"),
    ("Vma", "cr_vma"),
    ("Pages", "cr_pages"),
    ("PageRun", "cr_page_run"),
    ("Tail", "cr_tail"),
    ("File", "cr_file"),
    ("EpollEntry", "cr_epoll_entry"),
    ("FileData", "cr_file_data"),
    ("SigAction", "cr_sigaction"),
    ("Signals", "cr_signals"),
    ("PendingSignal", "cr_pending_signal"),
    ("ITimer", "cr_itimer"),
    ("Timers", "cr_timers"),
    ("PosixTimer", "cr_posix_timer"),
    ("Rlimit", "cr_rlimit"),
    ("Process", "cr_process"),
    ("VmaAttr", "cr_vma_attr"),
    ("Inotify", "cr_inotify"),
    ("InotifyWatch", "cr_inotify_watch"),
    ("Lock", "cr_lock"),
    ("VdsoData", "cr_vdso_data"),
];

/// `CR_CHECK_FIELD(s, f, off, n);` and `CR_CHECK_SIZE(s, n);` lines of the header.
fn header_asserts(h: &str) -> (Layouts, BTreeMap<String, u64>) {
    let mut fields = Layouts::new();
    let mut sizes = BTreeMap::new();
    for line in h.lines() {
        let args = |p: &str| -> Option<Vec<String>> {
            let rest = line.strip_prefix(p)?.strip_suffix(");")?;
            Some(rest.split(',').map(|s| s.trim().to_string()).collect())
        };
        if let Some(a) = args("CR_CHECK_FIELD(") {
            fields.entry(a[0].clone()).or_default().push((
                a[1].clone(),
                a[2].parse().unwrap(),
                a[3].parse().unwrap(),
            ));
        } else if let Some(a) = args("CR_CHECK_SIZE(") {
            sizes.insert(a[0].clone(), a[1].parse().unwrap());
        }
    }
    (fields, sizes)
}

#[test]
fn header_asserts_are_the_spec_tables() {
    let tables = spec_tables();
    let (fields, sizes) = header_asserts(&header_text());
    for (rust, c) in C_NAMES {
        let table = tables
            .get(rust)
            .unwrap_or_else(|| panic!("no table for {rust} in FORMAT.md"));
        let asserted = fields
            .get(c)
            .unwrap_or_else(|| panic!("no CR_CHECK_FIELD lines for struct {c}"));
        assert_eq!(asserted, table, "struct {c} vs FORMAT.md's table of {rust}");
        let total: u64 = table.iter().map(|r| r.2).sum();
        assert_eq!(sizes.get(c), Some(&total), "CR_CHECK_SIZE({c})");
    }
    assert_eq!(
        fields.len(),
        C_NAMES.len(),
        "structs asserted in cr_image.h"
    );
}

#[test]
fn header_constants_are_rusts() {
    let h = header_text();
    let mut defined = BTreeMap::new();
    for line in h.lines() {
        let mut w = line.split_whitespace();
        if w.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (w.next(), w.next()) else {
            continue;
        };
        let v = value.trim_end_matches(['u', 'U', 'l', 'L']);
        let parsed = match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse::<u64>().ok(),
        };
        if let Some(n) = parsed {
            defined.insert(name.to_string(), n);
        }
    }
    let gprs = [
        "R15", "R14", "R13", "R12", "RBP", "RBX", "R11", "R10", "R9", "R8", "RAX", "RCX", "RDX",
        "RSI", "RDI", "ORIG_RAX", "RIP", "CS", "EFLAGS", "RSP", "SS", "FS_BASE", "GS_BASE", "DS",
        "ES", "FS", "GS",
    ];
    let mut want: Vec<(String, u64)> = [
        ("CR_MAGIC_LEN", MAGIC.len() as u64),
        ("CR_VERSION_MAJOR", VERSION_MAJOR.into()),
        ("CR_VERSION_MINOR", VERSION_MINOR.into()),
        ("CR_RECORD_HEADER_LEN", size_of::<RecordHeader>() as u64),
        ("CR_KIND_HEADER", KIND_HEADER.into()),
        ("CR_KIND_TASK", KIND_TASK.into()),
        ("CR_KIND_REGS", KIND_REGS.into()),
        ("CR_KIND_MM", KIND_MM.into()),
        ("CR_KIND_VMA", KIND_VMA.into()),
        ("CR_KIND_PAGES", KIND_PAGES.into()),
        ("CR_KIND_TAIL", KIND_TAIL.into()),
        ("CR_RECORD_CRITICAL", RECORD_CRITICAL.into()),
        ("CR_ARCH_X86_64", ARCH_X86_64.into()),
        ("CR_DIFF_NONE", DIFF_NONE.into()),
        ("CR_DIFF_WRITE_TRACKING", DIFF_WRITE_TRACKING.into()),
        ("CR_DIFF_CONTENT_COMPARE", DIFF_CONTENT_COMPARE.into()),
        ("CR_PROT_READ", PROT_READ.into()),
        ("CR_PROT_WRITE", PROT_WRITE.into()),
        ("CR_PROT_EXEC", PROT_EXEC.into()),
        ("CR_VMA_SHARED", VMA_SHARED.into()),
        ("CR_VMA_GROWSDOWN", VMA_GROWSDOWN.into()),
        ("CR_VMA_FLAGS_KNOWN", VMA_FLAGS_KNOWN.into()),
        ("CR_VMA_ANON", VMA_ANON.into()),
        ("CR_VMA_FILE", VMA_FILE.into()),
        ("CR_VMA_HEAP", VMA_HEAP.into()),
        ("CR_VMA_STACK", VMA_STACK.into()),
        ("CR_VMA_VDSO", VMA_VDSO.into()),
        ("CR_VMA_VVAR", VMA_VVAR.into()),
        ("CR_VMA_VSYSCALL", VMA_VSYSCALL.into()),
        ("CR_RUN_DATA", RUN_DATA.into()),
        ("CR_RUN_ZERO", RUN_ZERO.into()),
        ("CR_RUN_PARENT", RUN_PARENT.into()),
        ("CR_X86_64_GPR_COUNT", X86_64_GPR_COUNT as u64),
        ("CR_FXSAVE_LEN", FXSAVE_LEN as u64),
        ("CR_MAX_PAGE_SIZE", MAX_PAGE_SIZE.into()),
        ("CR_MIN_PAGE_SIZE", MIN_PAGE_SIZE.into()),
        ("CR_MAX_VMAS", MAX_VMAS.into()),
        ("CR_MAX_PATH", MAX_PATH.into()),
        ("CR_MAX_AUXV", MAX_AUXV.into()),
        ("CR_MAX_XSAVE_LEN", MAX_XSAVE_LEN.into()),
        ("CR_MAX_RUNS_PER_RECORD", MAX_RUNS_PER_RECORD.into()),
        ("CR_MAX_DATA_PER_RECORD", MAX_DATA_PER_RECORD.into()),
        ("CR_MAX_PAYLOAD_LEN", MAX_PAYLOAD_LEN.into()),
        ("CR_MAX_CHAIN_DEPTH", MAX_CHAIN_DEPTH.into()),
        ("CR_KIND_FILE", KIND_FILE.into()),
        ("CR_KIND_FILE_DATA", KIND_FILE_DATA.into()),
        ("CR_KIND_SIGNALS", KIND_SIGNALS.into()),
        ("CR_KIND_TIMERS", KIND_TIMERS.into()),
        ("CR_KIND_PROCESS", KIND_PROCESS.into()),
        ("CR_KIND_VMA_ATTR", KIND_VMA_ATTR.into()),
        ("CR_KIND_CORE_LAST", KIND_CORE_LAST.into()),
        ("CR_KIND_LAST", KIND_LAST.into()),
        ("CR_ROLE_FD", ROLE_FD.into()),
        ("CR_ROLE_CWD", ROLE_CWD.into()),
        ("CR_ROLE_ROOT", ROLE_ROOT.into()),
        ("CR_FILE_UNSUPPORTED", FILE_UNSUPPORTED.into()),
        ("CR_FILE_REG", FILE_REG.into()),
        ("CR_FILE_DIR", FILE_DIR.into()),
        ("CR_FILE_CHR", FILE_CHR.into()),
        ("CR_FILE_FIFO", FILE_FIFO.into()),
        ("CR_FILE_PIPE", FILE_PIPE.into()),
        ("CR_FILE_SOCKET", FILE_SOCKET.into()),
        ("CR_FILE_EVENTFD", FILE_EVENTFD.into()),
        ("CR_FILE_TIMERFD", FILE_TIMERFD.into()),
        ("CR_FILE_SIGNALFD", FILE_SIGNALFD.into()),
        ("CR_FILE_EPOLL", FILE_EPOLL.into()),
        ("CR_FILE_MEMFD", FILE_MEMFD.into()),
        ("CR_FILE_TYPE_LAST", FILE_TYPE_LAST.into()),
        ("CR_FILE_DELETED", FILE_DELETED.into()),
        ("CR_FILE_TTY", FILE_TTY.into()),
        ("CR_FILE_HAS_DATA", FILE_HAS_DATA.into()),
        ("CR_FILE_FLAGS_KNOWN", FILE_FLAGS_KNOWN.into()),
        ("CR_DUP_NONE", DUP_NONE.into()),
        ("CR_SOCKET_UNBOUND", SOCKET_UNBOUND),
        ("CR_SOCKET_BOUND", SOCKET_BOUND),
        ("CR_SOCKET_LISTENING", SOCKET_LISTENING),
        ("CR_SOCKET_CONNECTED", SOCKET_CONNECTED),
        ("CR_AF_UNIX", AF_UNIX),
        ("CR_PIPE_OTHER_END_OUTSIDE", PIPE_OTHER_END_OUTSIDE),
        ("CR_QUEUE_THREAD", QUEUE_THREAD.into()),
        ("CR_QUEUE_SHARED", QUEUE_SHARED.into()),
        ("CR_ATTR_CHILD_SUBREAPER", ATTR_CHILD_SUBREAPER.into()),
        ("CR_ATTR_NO_NEW_PRIVS", ATTR_NO_NEW_PRIVS.into()),
        ("CR_ATTR_THP_DISABLE", ATTR_THP_DISABLE.into()),
        ("CR_ATTR_MLOCK_FUTURE", ATTR_MLOCK_FUTURE.into()),
        ("CR_ATTR_MLOCK_ONFAULT", ATTR_MLOCK_ONFAULT.into()),
        ("CR_ATTR_FLAGS_KNOWN", ATTR_FLAGS_KNOWN.into()),
        ("CR_RLIMIT_COUNT", RLIMIT_COUNT as u64),
        ("CR_VMA_ATTR_DONTFORK", VMA_ATTR_DONTFORK.into()),
        ("CR_VMA_ATTR_DONTDUMP", VMA_ATTR_DONTDUMP.into()),
        ("CR_VMA_ATTR_WIPEONFORK", VMA_ATTR_WIPEONFORK.into()),
        ("CR_VMA_ATTR_HUGEPAGE", VMA_ATTR_HUGEPAGE.into()),
        ("CR_VMA_ATTR_NOHUGEPAGE", VMA_ATTR_NOHUGEPAGE.into()),
        ("CR_VMA_ATTR_MERGEABLE", VMA_ATTR_MERGEABLE.into()),
        ("CR_VMA_ATTR_LOCKED", VMA_ATTR_LOCKED.into()),
        ("CR_VMA_ATTR_LOCKONFAULT", VMA_ATTR_LOCKONFAULT.into()),
        ("CR_VMA_ATTR_KNOWN", VMA_ATTR_KNOWN.into()),
        ("CR_MAX_FILES", MAX_FILES.into()),
        ("CR_MAX_EPOLL_ENTRIES", MAX_EPOLL_ENTRIES.into()),
        ("CR_MAX_SOCKADDR", MAX_SOCKADDR.into()),
        ("CR_MAX_FILE_DATA", MAX_FILE_DATA.into()),
        ("CR_MAX_PENDING_SIGNALS", MAX_PENDING_SIGNALS.into()),
        ("CR_MAX_POSIX_TIMERS", MAX_POSIX_TIMERS.into()),
        ("CR_MAX_GROUPS", MAX_GROUPS.into()),
        ("CR_KIND_INOTIFY", KIND_INOTIFY.into()),
        ("CR_KIND_INOTIFY_WATCH", KIND_INOTIFY_WATCH.into()),
        ("CR_KIND_LOCK", KIND_LOCK.into()),
        ("CR_KIND_VDSO_DATA", KIND_VDSO_DATA.into()),
        ("CR_KIND_LAST_1_1", KIND_LAST_1_1.into()),
        ("CR_NO_DUP", NO_DUP.into()),
        ("CR_LOCK_POSIX", LOCK_POSIX.into()),
        ("CR_LOCK_FLOCK", LOCK_FLOCK.into()),
        ("CR_LOCK_OFD", LOCK_OFD.into()),
        ("CR_LOCK_READ", LOCK_READ.into()),
        ("CR_LOCK_WRITE", LOCK_WRITE.into()),
        ("CR_MAX_INOTIFY_WATCHES", MAX_INOTIFY_WATCHES.into()),
        ("CR_MAX_LOCKS", MAX_LOCKS.into()),
        ("CR_MAX_VDSO_LEN", MAX_VDSO_LEN.into()),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    assert_eq!(gprs.len(), X86_64_GPR_COUNT);
    want.extend(
        gprs.iter()
            .enumerate()
            .map(|(i, g)| (format!("CR_GPR_{g}"), i as u64)),
    );
    for (name, value) in &want {
        assert_eq!(
            defined.get(name),
            Some(value),
            "#define {name} in cr_image.h"
        );
    }
    assert_eq!(
        defined.len(),
        want.len(),
        "cr_image.h defines numeric constants this test does not know: {:?}",
        defined
            .keys()
            .filter(|k| !want.iter().any(|(n, _)| n == *k))
            .collect::<Vec<_>>()
    );
    // The magic, as a C string literal split after the \x89 escape.
    assert!(
        h.contains(r#"#define CR_MAGIC "\x89" "CRI\r\n\x1a\n""#),
        "CR_MAGIC in cr_image.h"
    );
    assert_eq!(MAGIC, *b"\x89CRI\r\n\x1a\n");
}
