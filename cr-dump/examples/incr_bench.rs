//! Incremental checkpoint figures: a target with `CR_BENCH_MIB` MiB (default 1024) of written
//! anonymous memory; each round takes a full checkpoint, rewrites 1% of the pages, and takes an
//! incremental checkpoint over the full one. Two series: content compare (no tracking), then
//! write-protect tracking (`--track` on the full checkpoint). Also what tracking costs the
//! target: its loop writing a word of every page, unprotected vs just after a re-protection.
//! Prints medians of `CR_BENCH_ROUNDS` rounds (default 5) and the ratios incremental / full.
//!
//! `cargo build --release -p cr-dump && cargo run --release -p cr-dump --example incr_bench`
//! (the `cr-dump` binary is taken from beside the example's directory, or `$CR_DUMP`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_tests::{program, TempDir};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CR_DUMP") {
        return p.into();
    }
    // target/PROFILE/examples/incr_bench -> target/PROFILE/cr-dump
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("cr-dump")
}

struct Io {
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Io {
    /// Sends `c`, waits for `ready`; returns the `took` figure, if any, in seconds.
    fn cmd(&mut self, c: &str) -> Option<f64> {
        if !c.is_empty() {
            writeln!(self.stdin, "{c}").unwrap();
            self.stdin.flush().unwrap();
        }
        let mut took = None;
        loop {
            let mut l = String::new();
            assert!(self.out.read_line(&mut l).unwrap() > 0);
            let l = l.trim();
            if l == "ready" {
                return took;
            }
            if let Some(t) = l.strip_prefix("took ") {
                took = Some(t.parse::<f64>().unwrap() / 1e9);
            }
        }
    }
}

#[derive(Default)]
struct Series {
    full_t: Vec<f64>,
    full_down: Vec<f64>,
    full_size: Vec<f64>,
    inc_t: Vec<f64>,
    inc_down: Vec<f64>,
    inc_size: Vec<f64>,
    inc_data: u64,
    method: String,
}

impl Series {
    fn print(&mut self, what: &str) {
        let (ft, fd, fs) = (
            median(&mut self.full_t),
            median(&mut self.full_down),
            median(&mut self.full_size),
        );
        let (it, id, is) = (
            median(&mut self.inc_t),
            median(&mut self.inc_down),
            median(&mut self.inc_size),
        );
        println!("{what} (diff_method {}):", self.method);
        println!("  full:        {ft:.3} s, downtime {fd:.1} ms, image {fs:.0} bytes");
        println!(
            "  incremental: {it:.3} s, downtime {id:.1} ms, image {is:.0} bytes ({} data pages)",
            self.inc_data
        );
        println!(
            "  ratios incremental/full: size {:.4} ({:.2}%), time {:.3}, downtime {:.3}",
            is / fs,
            100.0 * is / fs,
            it / ft,
            id / fd
        );
    }
}

fn main() {
    let mib = env_num("CR_BENCH_MIB", 1024);
    let rounds = env_num("CR_BENCH_ROUNDS", 5).max(1);
    let pages = mib * 256;
    let rewrite = pages / 100;
    let bin = bin();
    assert!(
        bin.exists(),
        "{} missing: build cr-dump first",
        bin.display()
    );
    let dir = TempDir::new("incr-bench");
    std::env::set_var(
        "CR_CRID_FILE",
        dir.path().join(format!("crid-{}", std::process::id())),
    );
    let img = dir.path().join("img");
    std::fs::create_dir(&img).unwrap();
    eprintln!("starting a {mib} MiB target...");
    let mut child = Command::new(program("incr"))
        .arg(pages.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut io = Io {
        stdin: child.stdin.take().unwrap(),
        out: BufReader::new(child.stdout.take().unwrap()),
    };
    io.cmd("");
    let pid = child.id().to_string();
    let d = img.to_str().unwrap().to_string();
    // `cr-dump checkpoint` of the target into `d`, as `t`, with JSON output.
    let base = [
        "checkpoint",
        "--pid",
        &pid,
        "-o",
        &d,
        "--name",
        "t",
        "--json",
    ];
    let run = |extra: &[&str]| -> (serde_json::Value, f64) {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let t = Instant::now();
        let o = Command::new(&bin).args(&args).output().unwrap();
        let el = t.elapsed().as_secs_f64();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (serde_json::from_slice(&o.stdout).unwrap(), el)
    };
    // The target's own loop, before any tracking.
    let mut plain = vec![];
    for _ in 0..rounds {
        plain.push(io.cmd("bench 1").unwrap());
    }
    // What a copy-on-write twin costs the target: the same loop while the twin of a lazy
    // checkpoint lives (its write-back held back by a test hook): each page's first write copies
    // it. Before any tracking is armed (a tracked task is checkpointed without a twin).
    let mut cow = vec![];
    for _ in 0..rounds {
        for e in std::fs::read_dir(&img).unwrap() {
            let _ = std::fs::remove_file(e.unwrap().path());
        }
        let c = Command::new(&bin)
            .args(base)
            .env("CR_DUMP_TEST_WRITEBACK_PAUSE_MS", "4000")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        cow.push(io.cmd("bench 1").unwrap());
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success());
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["snapshot"], "twin", "{j}");
    }
    let mut gen = 0;
    let mut series = |io: &mut Io, track: bool, slow: &mut Vec<f64>| -> Series {
        let mut s = Series::default();
        for r in 0..rounds {
            for e in std::fs::read_dir(&img).unwrap() {
                let _ = std::fs::remove_file(e.unwrap().path());
            }
            let (jf, tf) = run(if track { &["--track"] } else { &[] });
            let full = jf["image"].as_str().unwrap().to_string();
            gen += 1;
            io.cmd(&format!("rewrite {rewrite} {gen}"));
            let (ji, ti) = run(&["--parent", &full]);
            eprintln!(
                "{} round {r}: full {tf:.3} s {} B, incremental {ti:.3} s {} B (stopped {:.1} ms, capture {:.1} ms, write-back {:.1} ms; {} data, {} parent pages, {})",
                if track { "tracked" } else { "compare" },
                jf["size"],
                ji["size"],
                ji["downtime_ms"].as_f64().unwrap_or(f64::NAN),
                ji["capture_ms"].as_f64().unwrap_or(f64::NAN),
                ji["writeback_ms"].as_f64().unwrap_or(f64::NAN),
                ji["data_pages"],
                ji["parent_pages"],
                ji["diff_method"]
            );
            if track {
                // Every page was re-protected by the scan of the incremental checkpoint, but
                // for the 1% written since: the loop pays a fault on each page.
                slow.push(io.cmd("bench 1").unwrap());
            }
            s.full_t.push(tf);
            s.inc_t.push(ti);
            s.full_down.push(jf["downtime_ms"].as_f64().unwrap());
            s.inc_down.push(ji["downtime_ms"].as_f64().unwrap());
            s.full_size.push(jf["size"].as_f64().unwrap());
            s.inc_size.push(ji["size"].as_f64().unwrap());
            s.inc_data = ji["data_pages"].as_u64().unwrap();
            s.method = ji["diff_method"].as_str().unwrap_or("").to_string();
        }
        s
    };
    let mut slow = vec![];
    let mut compare = series(&mut io, false, &mut slow);
    let mut tracked = series(&mut io, true, &mut slow);
    // Pre-copy of a target rewriting 1% of its memory every 100 ms, against a lazy full
    // checkpoint of the same target.
    let churn_ms = 6000 * rounds + 3000;
    writeln!(io.stdin, "churn {churn_ms} 100").unwrap();
    io.stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (mut lazy_down, mut pre_down, mut pre_total, mut arm_down) =
        (vec![], vec![], vec![], vec![]);
    let mut pre_rounds = String::new();
    for r in 0..rounds {
        for e in std::fs::read_dir(&img).unwrap() {
            let _ = std::fs::remove_file(e.unwrap().path());
        }
        let (jl, _) = run(&[]);
        let (jp, tp) = run(&["--precopy"]);
        eprintln!(
            "precopy round {r}: lazy downtime {} ms; pre-copy downtime {} ms (arming {} ms), rounds {}, final {} pages, {tp:.3} s",
            jl["downtime_ms"], jp["downtime_ms"], jp["precopy_arm_downtime_ms"], jp["precopy_rounds"], jp["precopy_final_pages"]
        );
        lazy_down.push(jl["downtime_ms"].as_f64().unwrap());
        pre_down.push(jp["downtime_ms"].as_f64().unwrap());
        arm_down.push(jp["precopy_arm_downtime_ms"].as_f64().unwrap());
        pre_total.push(tp);
        pre_rounds = format!(
            "{} + {} frozen",
            jp["precopy_rounds"], jp["precopy_final_pages"]
        );
    }
    io.cmd("");
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "incremental checkpoints, {mib} MiB target, {rewrite} of {pages} pages rewritten (1%), medians of {rounds}:"
    );
    compare.print("content compare");
    tracked.print("write-protect tracking");
    let (ld, pd, ad, pt) = (
        median(&mut lazy_down),
        median(&mut pre_down),
        median(&mut arm_down),
        median(&mut pre_total),
    );
    println!("pre-copy, target rewriting 1% of its pages every 100 ms:");
    println!(
        "  lazy full checkpoint downtime {ld:.1} ms; --precopy final downtime {pd:.1} ms ({:.3}x), plus {ad:.1} ms stopped to arm the tracking; whole command {pt:.2} s; pages per round (last run) {pre_rounds}",
        pd / ld
    );
    let (p, c) = (median(&mut plain), median(&mut cow));
    println!(
        "target loop writing a word of each of {pages} pages: {:.1} ms alone, {:.1} ms while a copy-on-write twin lives ({:.1}x, {:.2} us per page)",
        p * 1e3,
        c * 1e3,
        c / p,
        (c - p) * 1e6 / pages as f64
    );
    let (p, s) = (median(&mut plain), median(&mut slow));
    println!(
        "target loop writing a word of each of {pages} pages: {:.1} ms unprotected, {:.1} ms write-protected ({:.2}x, {:.2} us per page)",
        p * 1e3,
        s * 1e3,
        s / p,
        (s - p) * 1e6 / pages as f64
    );
}
