//! The fuzz functions of `cr_fuzz::dump` under plain `cargo test`: `inspect` over every vector,
//! its truncations and bit flips; `encode` over the JSON of every valid vector (made here with
//! the library, with and without page data) and seeded byte mutations of it; and the crash
//! inputs kept in `fuzz/regressions/{inspect,encode}/`. Deterministic; the cargo-fuzz targets
//! in `fuzz/` run the same functions for longer (FUZZING.md).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

// cr-dump's inspection modules, in one place: their paths change with cr-dump's `inspect/`.
use cr_dump::inspect::{core, json};
use cr_fuzz::dump::{self as fuzz, Rng};
use std::path::Path;

fn vectors(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spec/vectors")
        .join(kind);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    paths.sort();
    let out: Vec<_> = paths
        .iter()
        .map(|p| {
            let name = format!("{kind}/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read(p).unwrap())
        })
        .collect();
    assert!(out.len() > 5, "vectors missing in {}", dir.display());
    out
}

fn all_vectors() -> Vec<(String, Vec<u8>)> {
    let mut v = vectors("valid");
    v.extend(vectors("invalid"));
    v
}

#[test]
fn inspect_every_vector() {
    for (name, bytes) in vectors("valid") {
        assert!(fuzz::inspect_image(&bytes), "{name}: not valid for inspect");
        // A valid image is its own reseal.
        assert!(fuzz::reseal(&bytes) == bytes, "{name}: reseal changed it");
        fuzz::inspect(&bytes);
    }
    for (name, bytes) in vectors("invalid") {
        assert!(!fuzz::inspect_image(&bytes), "{name}: valid for inspect");
        fuzz::inspect(&bytes);
    }
}

#[test]
fn inspect_truncations_and_bit_flips_of_every_vector() {
    let mut rng = Rng::with_seed(0x2545_f491_4f6c_dd1d);
    let mut cases = 0u64;
    for (_, bytes) in all_vectors() {
        let len = bytes.len();
        let mut cuts = vec![0, 1, 15, 16, 24, 100, len / 2, len.saturating_sub(24)];
        cuts.extend((0..4).map(|_| rng.below(len + 1)));
        for cut in cuts {
            fuzz::inspect(&bytes[..cut.min(len)]);
            cases += 1;
        }
        if len == 0 {
            continue;
        }
        let mut b = bytes.clone();
        for _ in 0..60 {
            let (at, bit) = (rng.below(len), rng.below(8));
            b[at] ^= 1 << bit;
            fuzz::inspect(&b);
            b[at] ^= 1 << bit;
            cases += 1;
        }
    }
    println!("{cases} damaged vectors inspected");
}

/// The JSON seeds: every valid vector's `show --json --with-pages` (printed and compact) and
/// `show --json`, made with the library.
fn json_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for (name, bytes) in vectors("valid") {
        let p = Path::new(&name);
        let doc = json::with_pages(&bytes, p).unwrap();
        out.push((
            format!("{name} pages"),
            json::pretty(&doc).unwrap().into_bytes(),
        ));
        out.push((format!("{name} compact"), doc.to_string().into_bytes()));
        let meta = json::read_metadata(std::io::Cursor::new(&bytes), p).unwrap();
        out.push((
            format!("{name} metadata"),
            json::pretty(&meta).unwrap().into_bytes(),
        ));
    }
    out
}

#[test]
fn encode_the_json_of_every_valid_vector() {
    for (name, text) in json_seeds() {
        eprintln!("{name}");
        fuzz::encode(&text);
    }
    for t in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"{\"schema\":\"cr-image/1\"}",
        b"\xff\xfe",
    ] {
        fuzz::encode(t);
    }
}

#[test]
fn encode_byte_mutations_of_the_json_seeds() {
    let mut rng = Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let seeds = json_seeds();
    // Bytes that matter in this JSON: digits, hex digits, quotes, structure.
    const BYTES: &[u8] = b"0123456789abcdefx\"{}[],:-. ";
    let mut cases = 0u64;
    for (_, text) in &seeds {
        // Only the smaller documents: a mutation of a large one mostly re-checks its page data.
        if text.len() > 80_000 {
            continue;
        }
        for _ in 0..40 {
            let mut b = text.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(b.len());
                let c = BYTES[rng.below(BYTES.len())];
                match rng.below(4) {
                    0 => b[at] = c,
                    1 => b.insert(at, c),
                    2 => {
                        b.remove(at);
                    }
                    _ => {
                        // Copy a stretch of the document over another place.
                        let from = rng.below(b.len());
                        let n = rng.below(64).min(b.len() - from).min(b.len() - at);
                        let s = b[from..from + n].to_vec();
                        b[at..at + n].copy_from_slice(&s);
                    }
                }
                if b.is_empty() {
                    break;
                }
            }
            fuzz::encode(&b);
            cases += 1;
        }
    }
    println!("{cases} mutated JSON documents encoded");
}

/// A valid vector with one more VMA at the end of its body, encoded.
fn with_vma(vector: &str, start: u64, end: u64, kind: u16, offset: u64) -> Vec<u8> {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../spec/vectors/valid")
            .join(vector),
    )
    .unwrap();
    let mut doc = json::with_pages(&bytes, Path::new(vector)).unwrap();
    let path = if kind == 1 { "/nonexistent/file" } else { "" };
    doc["body"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "vma": {
            "start": format!("{start:#x}"), "end": format!("{end:#x}"), "prot": 3, "flags": 0,
            "kind": kind, "offset": format!("{offset:#x}"), "dev": [0, 0], "inode": 0,
            "file_size": 0, "file_mtime_ns": 0, "path": path,
        }}));
    let repr = json::decode(doc.to_string().as_bytes()).unwrap();
    let mut out = Vec::new();
    json::encode(&repr, &mut out).unwrap();
    out
}

/// A writer that fails after 1 MiB (a core of a broken bound would never end).
struct Limited(Vec<u8>);

impl std::io::Write for Limited {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + b.len() > 1 << 20 {
            return Err(std::io::Error::other("full"));
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Valid images whose VMAs reach the end of the address space: `core` answers with a core or
/// an error, and overflows nothing (it did: a file offset past 2^64, a core longer than 2^64).
#[test]
fn core_at_the_edges_of_the_address_space() {
    // A file mapping whose untouched pages lie past file offset 2^64.
    let img = with_vma(
        "full.bin",
        0x8000_0000_0000,
        0x8000_0000_2000,
        1,
        0xffff_ffff_ffff_f000,
    );
    assert!(fuzz::inspect_image(&img));
    let mut out = Limited(Vec::new());
    let n = core::write_core_from(&[(Path::new("x"), &img)], true, &mut out);
    assert_eq!(n.unwrap(), out.0.len() as u64);
    // One VMA over all of the address space but its last page: with the headers, the core
    // would be longer than 2^64 bytes.
    let img = with_vma("no-vmas.bin", 0, 0xffff_ffff_ffff_f000, 0, 0);
    assert!(fuzz::inspect_image(&img));
    let mut out = Limited(Vec::new());
    let e = core::write_core_from(&[(Path::new("x"), &img)], false, &mut out);
    let e = e.unwrap_err().to_string();
    assert!(e.contains("too large for an ELF core"), "{e}");
}

/// Crash inputs of the two targets (`fuzz/regressions/<target>/*`, FUZZING.md), replayed.
#[test]
fn fuzz_regressions_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut n = 0;
    for target in ["inspect", "encode"] {
        // Every target has inputs in the repository: a missing or empty directory is a lost
        // regression set, not a reason to replay nothing.
        let dir = std::fs::read_dir(root.join(target))
            .unwrap_or_else(|e| panic!("{}: {e}", root.join(target).display()));
        let mut paths: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
        paths.retain(|p| p.is_file());
        paths.sort();
        assert!(!paths.is_empty(), "no regression input for {target}");
        for p in &paths {
            eprintln!("{}", p.display());
            let data = std::fs::read(p).unwrap();
            match target {
                "inspect" => fuzz::inspect(&data),
                _ => fuzz::encode(&data),
            }
            n += 1;
        }
    }
    println!("{n} fuzz regressions replayed");
    assert!(n >= 2, "{n} regression inputs");
}
