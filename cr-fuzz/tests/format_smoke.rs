//! The fuzz functions of `cr_fuzz::format` under plain `cargo test`: over every vector, its
//! truncations and bit flips, the vectors in chunks, and a few thousand inputs from a seeded
//! generator. Deterministic; the cargo-fuzz targets in `fuzz/` run the same functions for
//! longer (FUZZING.md).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use arbitrary::Unstructured;
use cr_fuzz::format as fuzz;
use std::path::Path;

/// xorshift64: tiny, deterministic, good enough to pick inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn vectors() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for kind in ["valid", "invalid"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../spec/vectors")
            .join(kind);
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        paths.sort();
        for p in paths {
            let name = format!("{kind}/{}", p.file_name().unwrap().to_string_lossy());
            out.push((name, std::fs::read(&p).unwrap()));
        }
    }
    assert!(out.len() > 10, "vectors missing");
    out
}

const CHUNKS: &[&[usize]] = &[
    &[1],
    &[7],
    &[64, 3],
    &[4096],
    &[1 << 20],
    &[13, 4096, 1, 65536],
];

#[test]
fn every_vector_parses_and_streams_like_the_slice_reader() {
    for (name, bytes) in vectors() {
        eprintln!("{name}");
        fuzz::parse(&bytes);
        for chunks in CHUNKS {
            fuzz::stream_vs_slice_with(chunks, &bytes);
        }
        // The byte layout of the fuzz target: chunk-size bytes, then the image.
        let mut input = vec![0x02, 0x06, 0x85, 0x00];
        input.extend_from_slice(&bytes);
        fuzz::stream_vs_slice(&input);
    }
}

#[test]
fn truncations_and_bit_flips_of_every_vector() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut cases = 0u64;
    for (_, bytes) in vectors() {
        let len = bytes.len();
        let mut cuts = vec![0, 1, 15, 16, 24, 100, len / 2, len.saturating_sub(24)];
        cuts.extend((0..4).map(|_| rng.below(len + 1)));
        for cut in cuts {
            let short = &bytes[..cut.min(len)];
            fuzz::parse(short);
            fuzz::stream_vs_slice_with(CHUNKS[rng.below(CHUNKS.len())], short);
            cases += 1;
        }
        if len == 0 {
            continue;
        }
        let mut b = bytes.clone();
        for _ in 0..300 {
            let (at, bit) = (rng.below(len), rng.below(8));
            b[at] ^= 1 << bit;
            fuzz::parse(&b);
            fuzz::stream_vs_slice_with(CHUNKS[rng.below(CHUNKS.len())], &b);
            b[at] ^= 1 << bit;
            cases += 1;
        }
    }
    println!("{cases} damaged vectors checked");
}

#[test]
fn seeded_inputs_through_every_fuzz_function() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vectors = vectors();
    for i in 0..2000 {
        let n = rng.below(4096);
        let seed = rng.bytes(n);
        fuzz::roundtrip(&mut Unstructured::new(&seed));
        if i % 4 == 0 {
            fuzz::chain(&mut Unstructured::new(&seed));
        }
        // Raw bytes, and a vector with a random stretch overwritten.
        fuzz::parse(&seed);
        fuzz::stream_vs_slice(&seed);
        let (_, v) = &vectors[rng.below(vectors.len())];
        if !v.is_empty() {
            let mut b = v.clone();
            let at = rng.below(b.len());
            let k = rng.below(32).min(b.len() - at);
            b[at..at + k].copy_from_slice(&rng.bytes(k));
            fuzz::parse(&b);
        }
    }
}

/// Crash inputs of the targets that do not take an image (`fuzz/regressions/<target>/*`,
/// FUZZING.md), replayed through their function; image-shaped crashes of `parse` and
/// `stream_vs_slice` become `spec/vectors/invalid/regress-*.bin` instead.
#[test]
fn fuzz_regressions_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut n = 0;
    for target in ["parse", "stream_vs_slice", "roundtrip", "chain"] {
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
                "parse" => fuzz::parse(&data),
                "stream_vs_slice" => fuzz::stream_vs_slice(&data),
                "roundtrip" => fuzz::roundtrip(&mut Unstructured::new(&data)),
                _ => fuzz::chain(&mut Unstructured::new(&data)),
            }
            n += 1;
        }
    }
    println!("{n} fuzz regressions replayed");
    assert!(n >= 4, "{n} regression inputs");
}
