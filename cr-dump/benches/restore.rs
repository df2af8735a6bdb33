//! Restore benchmark (issue 7): a target with `CR_BENCH_MIB` MiB (default 1024) of non-zero
//! anonymous memory is checkpointed (`--direct`, then killed) and restored (`restore --detach
//! --stopped`, which includes verifying the image); baselines measured in the same run: the
//! checkpoint's own time, and writing the same number of bytes into freshly mapped memory (the
//! page-write limit of FACTS.md). Medians of `CR_BENCH_ROUNDS` (default 5).
//!
//! `cargo bench -p cr-dump --bench restore` (`CR_BENCH_BIN`: another cr-dump binary to measure)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{program, Target, TempDir};
use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

/// The cr-dump to measure: this build's, or `CR_BENCH_BIN` (to compare two builds in one
/// session, e.g. before and after a change).
fn bin() -> String {
    std::env::var("CR_BENCH_BIN").unwrap_or_else(|_| BIN.to_string())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Writing `len` bytes into fresh anonymous memory, page faults included.
fn fresh_write(len: usize) -> f64 {
    let t = Instant::now();
    let mut v: Vec<u8> = Vec::with_capacity(len);
    v.resize(len, 0x5a);
    std::hint::black_box(&v);
    t.elapsed().as_secs_f64()
}

fn main() {
    let mib: usize = std::env::var("CR_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let rounds: usize = std::env::var("CR_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = TempDir::new("bench-restore");
    let crid = dir.path().join("crid");
    let fill = program("fill");
    let (mut ck, mut rs, mut fw) = (vec![], vec![], vec![]);
    let mut image_len = 0;
    for round in 0..rounds {
        let t = Target::spawn(&fill, &[&mib.to_string()]);
        let out = dir.path().join(format!("r{round}"));
        let t0 = Instant::now();
        let o = Command::new(bin())
            .args([
                "checkpoint",
                "--pid",
                &t.pid().to_string(),
                "-o",
                out.to_str().unwrap(),
                "--direct",
                "--kill",
                "--json",
            ])
            .env("CR_CRID_FILE", &crid)
            .output()
            .unwrap();
        ck.push(t0.elapsed().as_secs_f64());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let img = j["image"].as_str().unwrap().to_string();
        image_len = j["size"].as_u64().unwrap();
        drop(t);
        let pidf = dir.path().join("pid");
        let t0 = Instant::now();
        let o = Command::new(bin())
            .args([
                "restore",
                &img,
                "--detach",
                "--stopped",
                "--pid-file",
                pidf.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        rs.push(t0.elapsed().as_secs_f64());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let pid = std::fs::read_to_string(&pidf).unwrap();
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        fw.push(fresh_write(mib << 20));
        let _ = std::fs::remove_dir_all(&out);
        println!(
            "round {round}: checkpoint {:.3} s, restore {:.3} s, fresh write {:.3} s",
            ck[round], rs[round], fw[round]
        );
    }
    let (c, r, f) = (median(&mut ck), median(&mut rs), median(&mut fw));
    println!("target {mib} MiB, image {image_len} bytes; medians of {rounds}");
    println!("checkpoint --direct (whole command)   {c:.3} s");
    println!(
        "restore --detach --stopped (incl. verify) {r:.3} s  {:.2} GiB/s",
        mib as f64 / 1024.0 / r
    );
    println!(
        "write {mib} MiB into fresh memory       {f:.3} s  {:.2} GiB/s",
        mib as f64 / 1024.0 / f
    );
    println!("ratio restore / checkpoint            {:.2}", r / c);
    println!("ratio restore / fresh-memory write    {:.2}", r / f);
}
