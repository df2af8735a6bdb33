//! Corruption campaigns on images of real processes (not only the small vectors): bit flips,
//! byte overwrites, truncations, removed / duplicated / swapped records, two images spliced, a
//! tail from another image. `verify` must reject every one with status 1 and never panic; the
//! library check runs on all of them, the CLI on a sample. Prints the counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{program, Run, Target, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Checkpoints a fresh `regions` program; returns the image bytes.
fn capture(dir: &Path, tag: &str) -> Vec<u8> {
    let file = dir.join(format!("mapped-{tag}"));
    let t = Target::spawn(&program("regions"), &[file.to_str().unwrap(), "4"]);
    let out_dir = dir.join(tag);
    let crid = std::env::temp_dir().join(format!("cr-test-crid-corruption-{}", std::process::id()));
    let o = Command::new(BIN)
        .args([
            "checkpoint",
            "--pid",
            &t.pid().to_string(),
            "-o",
            out_dir.to_str().unwrap(),
            "--json",
        ])
        .env("CR_CRID_FILE", crid)
        .run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    std::fs::read(PathBuf::from(j["image"].as_str().unwrap())).unwrap()
}

/// Record boundaries, read from the record headers without any check.
fn records(img: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut pos = 0;
    while pos + 16 <= img.len() {
        let len = u32::from_le_bytes(img[pos + 4..pos + 8].try_into().unwrap()) as usize;
        out.push((pos, 16 + len));
        pos += 16 + len;
    }
    out
}

fn rejected(bytes: &[u8]) -> bool {
    cr_dump::inspect::verify_stream(bytes, "campaign").is_err()
}

#[test]
fn verify_rejects_every_corruption_of_real_images() {
    let dir = TempDir::new("corruption");
    let a = capture(dir.path(), "a");
    let b = capture(dir.path(), "b");
    assert!(!rejected(&a) && !rejected(&b));
    let recs = records(&a);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    // Each case is checked as it is made (images are megabytes: keeping them all would not fit).
    let mut n_cases = 0usize;
    let mut accepted: Vec<String> = vec![];
    let mut cli = 0usize;
    let mut check = |what: String, bytes: Vec<u8>| {
        n_cases += 1;
        if !rejected(&bytes) {
            accepted.push(what.clone());
        }
        // The CLI: status 1 with a message, on a sample.
        if n_cases % 97 == 0 {
            cli += 1;
            let p = dir.path().join("case.img.1");
            std::fs::write(&p, &bytes).unwrap();
            let o = Command::new(BIN)
                .args(["verify", p.to_str().unwrap()])
                .run();
            assert_eq!(o.status.code(), Some(1), "{what}");
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("cr-dump: error:"),
                "{what}"
            );
        }
    };
    for i in 0..3000 {
        let mut x = a.clone();
        let at = rng.below(x.len());
        x[at] ^= 1 << rng.below(8);
        check(format!("bit flip #{i} at {at:#x}"), x);
    }
    for i in 0..1000 {
        let mut x = a.clone();
        let at = rng.below(x.len());
        let n = 1 + rng.below(64).min(x.len() - at - 1);
        let mut changed = false;
        for k in 0..n {
            let v = rng.next() as u8;
            changed |= x[at + k] != v;
            x[at + k] = v;
        }
        if changed {
            check(format!("overwrite #{i} of {n} bytes at {at:#x}"), x);
        }
    }
    for i in 0..500 {
        let n = rng.below(a.len());
        check(format!("truncation #{i} to {n}"), a[..n].to_vec());
    }
    for (k, &(off, len)) in recs.iter().enumerate() {
        let mut x = a.clone();
        x.drain(off..off + len);
        check(format!("record {k} removed"), x);
        let mut x = a.clone();
        x.splice(off..off, a[off..off + len].to_vec());
        check(format!("record {k} duplicated"), x);
        if k + 1 < recs.len() {
            let (o2, l2) = recs[k + 1];
            let mut x = a[..off].to_vec();
            x.extend_from_slice(&a[o2..o2 + l2]);
            x.extend_from_slice(&a[off..off + len]);
            x.extend_from_slice(&a[o2 + l2..]);
            check(format!("records {k} and {} swapped", k + 1), x);
        }
    }
    // Two images spliced at every record boundary of the first; and a's body with b's tail.
    let recs_b = records(&b);
    for &(off, _) in recs.iter().skip(1) {
        for &(ob, _) in recs_b.iter().skip(1) {
            if rng.below(8) == 0 {
                let mut x = a[..off].to_vec();
                x.extend_from_slice(&b[ob..]);
                check(format!("a[..{off:#x}] + b[{ob:#x}..]"), x);
            }
        }
    }
    let (ta, _) = *recs.last().unwrap();
    let (tb, _) = *recs_b.last().unwrap();
    let mut x = a[..ta].to_vec();
    x.extend_from_slice(&b[tb..]);
    check("tail from another image".into(), x);

    assert!(
        accepted.is_empty(),
        "{} of {n_cases} corrupted images accepted: {accepted:?}",
        accepted.len()
    );
    println!(
        "{n_cases} corrupted images of {} and {} bytes ({} records): all rejected; {cli} checked through the CLI",
        a.len(),
        b.len(),
        recs.len()
    );
}
