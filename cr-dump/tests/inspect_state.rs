//! The inspection verbs on images that hold every 1.1 state record (files with contents,
//! signals, timers, process attributes, VMA attributes) and every 1.2 one (inotify watches,
//! locks, the vDSO's bytes): `show` names them, `show --json` and
//! `encode` give the same bytes back (also through a tool that reads JSON numbers as doubles),
//! `diff` names what differs, `verify` prints a damaged state record's error with its offset,
//! `squash` copies the newest image's state. The images are written with cr-format's Writer from
//! the spec's vectors, since capture of every kind lands later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_format::raw::{self, *};
use cr_format::read::{Image, Record};
use cr_format::write::Writer;
use cr_tests::{Run, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use zerocopy::little_endian::U32;
use zerocopy::FromZeros;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

fn vector(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spec/vectors/valid")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).run()
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

/// A nanosecond timestamp above 2^53, so a JSON reader that rounds would change it.
const MTIME: u64 = 1_795_541_570_886_164_921;

fn file(fd: u32, role: u16, ftype: u16, open_flags: u32) -> raw::File {
    let mut f = raw::File::new_zeroed();
    f.fd = fd.into();
    f.role = role.into();
    f.ftype = ftype.into();
    f.open_flags = open_flags.into();
    f.dup_of = DUP_NONE.into();
    f.mtime_ns = MTIME.into();
    f.inode = 4242.into();
    f
}

fn params(f: &mut raw::File, p: &[u64]) {
    for (d, s) in f.params.iter_mut().zip(p) {
        *d = (*s).into();
    }
}

/// The File and FileData records of the test images: one of each type, contents in pieces.
fn write_files(w: &mut Writer<&mut Vec<u8>>, variant: u64) {
    let mut tty = file(0, ROLE_FD, FILE_CHR, 2);
    tty.flags = FILE_TTY.into();
    tty.rdev_major = 136.into();
    w.file(&tty, b"/dev/pts/0", &[]).unwrap();
    let mut out = file(1, ROLE_FD, FILE_REG, 0o102_001);
    out.pos = (123 + variant).into();
    out.size = 4096.into();
    w.file(&out, b"/tmp/out.txt", &[]).unwrap();
    let mut pipe_r = file(3, ROLE_FD, FILE_PIPE, 0);
    pipe_r.flags = FILE_HAS_DATA.into();
    params(&mut pipe_r, &[65536]);
    w.file(&pipe_r, b"pipe:[77]", &[]).unwrap();
    w.file_data(0, b"hel").unwrap();
    w.file_data(3, b"lo\n").unwrap();
    let mut pipe_w = file(4, ROLE_FD, FILE_PIPE, 1);
    params(&mut pipe_w, &[65536]);
    w.file(&pipe_w, b"pipe:[77]", &[]).unwrap();
    let mut sock = file(5, ROLE_FD, FILE_SOCKET, 2);
    params(&mut sock, &[1, 1, 0, SOCKET_LISTENING, 16]);
    w.file(&sock, b"socket:[99]", b"\x01\x00/tmp/sock\x00")
        .unwrap();
    let mut efd = file(6, ROLE_FD, FILE_EVENTFD, 2);
    params(&mut efd, &[7, 1]);
    w.file(&efd, b"anon_inode:[eventfd]", &[]).unwrap();
    let mut tfd = file(7, ROLE_FD, FILE_TIMERFD, 2);
    params(&mut tfd, &[1, 2, 1_000_000, 500_000]);
    w.file(&tfd, b"anon_inode:[timerfd]", &[]).unwrap();
    let mut sfd = file(8, ROLE_FD, FILE_SIGNALFD, 2);
    params(&mut sfd, &[1 << 9]);
    w.file(&sfd, b"anon_inode:[signalfd]", &[]).unwrap();
    let ep = [
        EpollEntry {
            fd: 3.into(),
            events: 1.into(),
            data: u64::MAX.into(),
        },
        EpollEntry {
            fd: 6.into(),
            events: 5.into(),
            data: 6.into(),
        },
    ];
    let epoll = file(9, ROLE_FD, FILE_EPOLL, 2);
    w.file(
        &epoll,
        b"anon_inode:[eventpoll]",
        zerocopy::IntoBytes::as_bytes(&ep[..]),
    )
    .unwrap();
    let mut memfd = file(10, ROLE_FD, FILE_MEMFD, 2);
    memfd.flags = FILE_HAS_DATA.into();
    params(&mut memfd, &[0xf]);
    w.file(&memfd, b"/memfd:blob (deleted)", &[]).unwrap();
    w.file_data(0, &[0xab; 1000]).unwrap();
    let mut del = file(11, ROLE_FD, FILE_REG, 2);
    del.flags = (FILE_DELETED | FILE_HAS_DATA).into();
    w.file(&del, b"/tmp/gone", &[]).unwrap();
    w.file_data(0, b"\x00\x01\xff").unwrap();
    let mut dup = file(12, ROLE_FD, FILE_REG, 0o102_001);
    dup.fd_flags = 1.into();
    dup.dup_of = 1.into();
    w.file(&dup, b"/tmp/out.txt", &[]).unwrap();
    let mut odd = file(13, ROLE_FD, FILE_UNSUPPORTED, 0);
    odd.mtime_ns = u64::MAX.into();
    w.file(&odd, b"anon_inode:[io_uring]", &[]).unwrap();
    w.file(&file(0, ROLE_CWD, FILE_DIR, 0o200_000), b"/home/user", &[])
        .unwrap();
    w.file(&file(0, ROLE_ROOT, FILE_DIR, 0o200_000), b"/", &[])
        .unwrap();
}

fn write_state(w: &mut Writer<&mut Vec<u8>>, variant: u64) {
    write_files(w, variant);
    let mut s = raw::Signals::new_zeroed();
    s.altstack_sp = 0x7000_0000.into();
    s.altstack_size = 8192.into();
    s.altstack_flags = 0x8000_0000.into();
    let int = &mut s.actions[1];
    int.handler = (0x401_000 + variant).into();
    int.flags = 0x1400_0004.into();
    int.restorer = 0x7f00_0000_1234.into();
    int.mask = (1 << 14).into();
    s.actions[12].handler = 1.into();
    s.actions[33].handler = 0x401_100.into();
    let mut p = PendingSignal::new_zeroed();
    p.queue = QUEUE_SHARED.into();
    p.siginfo[0] = 10;
    p.siginfo[8] = 0xfa;
    p.siginfo[127] = 0x5a;
    w.signals(&s, &[p]).unwrap();
    let mut t = raw::Timers::new_zeroed();
    t.itimers[0].value_ns = 3_000_000_000.into();
    t.itimers[0].interval_ns = 1_000_000_000.into();
    let mut pt = PosixTimer::new_zeroed();
    pt.id = 1.into();
    pt.clock = 1.into();
    pt.sigev_signo = 34.into();
    pt.sigev_value = 0xdead_beef_0000_0001.into();
    pt.value_ns = u64::MAX.into();
    w.timers(&t, &[pt]).unwrap();
    let mut pr = raw::Process::new_zeroed();
    for (i, l) in pr.rlimits.iter_mut().enumerate() {
        l.cur = (i as u64 * 1000).into();
        l.max = u64::MAX.into();
    }
    pr.rlimits[7].cur = (1024 + variant).into();
    pr.rseq_addr = 0x7fff_0000_0020.into();
    pr.rseq_len = 32.into();
    pr.rseq_sig = 0x5305_3053.into();
    pr.cap_bounding = 0x1ff_ffff_ffff.into();
    pr.dumpable = 1.into();
    pr.attr_flags = (ATTR_NO_NEW_PRIVS | ATTR_CHILD_SUBREAPER).into();
    pr.oom_score_adj = (-500i32 as u32).into();
    pr.seccomp_mode = 2.into();
    pr.pdeathsig = 9.into();
    w.process(&pr, &[U32::new(4), U32::new(24), U32::new(27)])
        .unwrap();
}

/// `base` rewritten with every state record after Mm and a VmaAttr after each Vma; `variant`
/// changes a few values (fd 1's offset, SIGINT's handler, RLIMIT_NOFILE, the first VMA's
/// attributes) so two images differ in known places.
fn stateful(base: &[u8], variant: u64) -> Vec<u8> {
    let img = Image::parse(base).unwrap();
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    let mut nvma = 0u32;
    for r in img.records() {
        match r.record {
            Record::Header(h) => {
                let mut h = *h;
                h.version_minor = 1.into();
                w.header(&h).unwrap();
            }
            Record::Task(t) => w.task(t).unwrap(),
            Record::Regs(x) => w.regs(x.raw, x.xsave).unwrap(),
            Record::Mm(m) => {
                w.mm(m.raw, m.auxv, m.exe).unwrap();
                write_state(&mut w, variant);
            }
            Record::Vma(v) => {
                w.vma(v.raw, v.path).unwrap();
                let bits = if nvma == 0 {
                    0x41 + variant as u32
                } else {
                    0x8
                };
                let a = raw::VmaAttr {
                    attrs: bits.into(),
                    _reserved0: 0.into(),
                };
                w.vma_attr(&a).unwrap();
                nvma += 1;
            }
            Record::Pages(p) => {
                let runs: Vec<PageRun> = p.runs.to_vec();
                w.pages(&runs, p.data.unwrap_or(&[])).unwrap();
            }
            Record::Unknown(u) => w.unknown(u.kind, u.payload).unwrap(),
            _ => {}
        }
    }
    w.finish().unwrap();
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn show_names_every_state_record() {
    let dir = TempDir::new("state-show");
    let img = write(
        dir.path(),
        "s.img",
        &stateful(&std::fs::read(vector("full.bin")).unwrap(), 0),
    );
    let out = ok(&run(&["show", s(&img)]));
    for want in [
        "files",
        "fd 0   chr",
        "a terminal (device 136:0)",
        "fd 1   reg      O_WRONLY|O_APPEND|O_LARGEFILE",
        "pos 123",
        "/tmp/out.txt",
        "a new pipe (inode 4242), capacity 65536, 6 unread bytes refilled",
        "a new AF_UNIX SOCK_STREAM socket listening on /tmp/sock (backlog 16)",
        "a new eventfd, count 7, semaphore",
        "a new timerfd on CLOCK_MONOTONIC, next in 500000 ns, every 1000000 ns, 2 ticks unread",
        "a new signalfd for SIGUSR1",
        "a new epoll watching [fd 3 events 0x1, fd 6 events 0x5]",
        "a new memfd with the 1000 bytes the image holds, seals 0xf",
        "a new file with the 3 bytes the image holds (deleted)",
        "the open file of fd 1 (shared)",
        "O_WRONLY|O_APPEND|O_LARGEFILE FD_CLOEXEC",
        "not restorable (unsupported type)",
        "cwd",
        "/home/user",
        "root",
        "SIGINT     handler 0x401000 flags SA_SIGINFO|SA_RESTORER|SA_RESTART mask SIGTERM",
        "SIGPIPE    ignored",
        "SIG34      handler 0x401100",
        "altstack   sp 0x70000000 size 8192 flags SS_AUTODISARM",
        "pending    SIGUSR1 (shared queue)",
        "ITIMER_REAL      next in 3000000000 ns, every 1000000000 ns",
        "posix timer 1    CLOCK_MONOTONIC",
        "RLIMIT_NOFILE",
        "unlimited",
        "groups        4 24 27",
        "attributes    child_subreaper|no_new_privs",
        "oom_score_adj -500",
        "seccomp       filter",
        "pdeathsig     SIGKILL",
        "rseq          0x7fff00000020 len 32 sig 0x53053053",
        "(dontfork|locked)",
        "(hugepage)",
    ] {
        assert!(out.contains(want), "show lacks {want:?}:\n{out}");
    }
    // Without -v, default dispositions are not listed; with -v they are, with every field.
    assert!(!out.contains("SIGHUP"), "{out}");
    let v = ok(&run(&["show", "-v", s(&img)]));
    for want in [
        "SIGHUP     default",
        "inode 4242",
        "timer slack",
        "File",
        "VmaAttr",
    ] {
        assert!(v.contains(want), "show -v lacks {want:?}:\n{v}");
    }
}

/// `show --json --with-pages`, then `encode`: the bytes back, and the JSON text.
fn round_trip(img: &Path, dir: &Path) -> String {
    let json = ok(&run(&["show", "--json", "--with-pages", s(img)]));
    let j = write(dir, "rt.json", json.as_bytes());
    let back = dir.join("back.img");
    ok(&run(&["encode", s(&j), "-o", s(&back)]));
    assert!(
        std::fs::read(img).unwrap() == std::fs::read(&back).unwrap(),
        "{}: encode(show --json) differs",
        img.display()
    );
    json
}

#[test]
fn json_of_every_state_record_encodes_back_to_the_same_bytes() {
    let dir = TempDir::new("state-json");
    for (i, v) in ["full.bin", "minimal-handmade.bin", "chain-3.bin"]
        .iter()
        .enumerate()
    {
        let bytes = stateful(&std::fs::read(vector(v)).unwrap(), i as u64);
        let img = write(dir.path(), &format!("{i}.img"), &bytes);
        let json = round_trip(&img, dir.path());
        for want in [
            r#""type": "pipe""#,
            r#""open_flags": "O_WRONLY|O_APPEND|O_LARGEFILE""#,
            r#""flags": "SA_SIGINFO|SA_RESTORER|SA_RESTART""#,
            r#""handler": "SIG_IGN""#,
            r#""mask": "SIGTERM""#,
            r#""clock": "CLOCK_MONOTONIC""#,
            r#""hard": "unlimited""#,
            r#""oom_score_adj": -500"#,
            r#"|locked""#,
            r#""role": "cwd""#,
            r#""dup_of": 1"#,
            r#""contents": ["#,
            // Above 2^53: a string, so no JSON tool can round it.
            r#""mtime_ns": "1795541570886164921""#,
        ] {
            assert!(json.contains(want), "{v}: JSON lacks {want}");
        }
    }
}

#[test]
fn json_through_jq_and_python_encodes_back_exactly() {
    let dir = TempDir::new("state-jq");
    let bytes = stateful(&std::fs::read(vector("full.bin")).unwrap(), 0);
    let img = write(dir.path(), "s.img", &bytes);
    let json = ok(&run(&["show", "--json", "--with-pages", s(&img)]));
    let j = write(dir.path(), "in.json", json.as_bytes());
    let tools: [(&str, &[&str]); 2] = [
        ("jq", &["-c", "."]),
        // JavaScript numbers are doubles: what jq 1.6 and browsers do to large numbers.
        (
            "node",
            &[
                "-e",
                "process.stdout.write(JSON.stringify(JSON.parse(require('fs').readFileSync(0))))",
            ],
        ),
    ];
    let mut ran = 0;
    for (tool, args) in tools {
        let Ok(f) = std::fs::File::open(&j) else {
            panic!()
        };
        let Ok(o) = Command::new(tool).args(args).stdin(f).output() else {
            cr_tests::skipped_part("json_through_jq", &format!("{tool} is not installed"));
            continue;
        };
        assert!(
            o.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let through = write(dir.path(), "through.json", &o.stdout);
        let back = dir.path().join("back.img");
        ok(&run(&["encode", s(&through), "-o", s(&back)]));
        assert!(
            bytes == std::fs::read(&back).unwrap(),
            "through {tool}: the image differs"
        );
        ran += 1;
    }
    if ran == 0 {
        cr_tests::skipped(
            "json_through_jq_and_python_encodes_back_exactly",
            "no JSON tool",
        );
    }
}

#[test]
fn encode_refuses_a_number_it_cannot_take_exactly() {
    let dir = TempDir::new("state-bignum");
    let bytes = stateful(&std::fs::read(vector("full.bin")).unwrap(), 0);
    let img = write(dir.path(), "s.img", &bytes);
    let json = ok(&run(&["show", "--json", "--with-pages", s(&img)]));
    // What a tool that rounds to doubles writes: a bare number above 2^53.
    let rounded = json.replace(r#""1795541570886164921""#, "1795541570886164992");
    assert_ne!(rounded, json);
    let j = write(dir.path(), "r.json", rounded.as_bytes());
    let out = run(&["encode", s(&j), "-o", s(&dir.path().join("x.img"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mtime_ns") && err.contains("2^53"), "{err}");
    // Names and numbers are both taken: the same image from numbers for every name.
    let numeric = json
        .replace(r#""type": "pipe""#, r#""type": 5"#)
        .replace(r#""prot": "r-x""#, r#""prot": 5"#)
        .replace(r#""arch": "x86_64""#, r#""arch": 62"#)
        .replace(r#""vma_attr": "dontfork|locked""#, r#""vma_attr": "0x41""#)
        .replace(r#""open_flags": "O_RDWR""#, r#""open_flags": "2""#);
    let j = write(dir.path(), "n.json", numeric.as_bytes());
    let back = dir.path().join("n.img");
    ok(&run(&["encode", s(&j), "-o", s(&back)]));
    assert!(bytes == std::fs::read(&back).unwrap());
    // An unknown name is refused with its path.
    let bad = json.replacen(r#""type": "pipe""#, r#""type": "pype""#, 1);
    let j = write(dir.path(), "b.json", bad.as_bytes());
    let out = run(&["encode", s(&j), "-o", s(&dir.path().join("y.img"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".file.type: unknown name \"pype\""), "{err}");
}

/// The record at `index` of `img`: its offset and payload length.
fn record_at(img: &[u8], kind: u16) -> (usize, usize) {
    let parsed = Image::parse(img).unwrap();
    let r = parsed
        .records()
        .find(|r| r.header.kind.get() == kind)
        .unwrap();
    (r.offset as usize, r.header.len.get() as usize)
}

/// Sets the payload byte at `at` of the first record of `kind` and fixes the record's CRC, so
/// that the field checks, not the CRC, find the damage.
fn damage(img: &mut [u8], kind: u16, at: usize, value: u8) -> usize {
    let (off, len) = record_at(img, kind);
    img[off + 16 + at] = value;
    let mut c = crc32fast::Hasher::new();
    c.update(&img[off..off + 12]);
    c.update(&img[off + 16..off + 16 + len]);
    img[off + 12..off + 16].copy_from_slice(&c.finalize().to_le_bytes());
    off + 16 + at
}

#[test]
fn verify_names_the_state_record_the_field_and_its_offset() {
    let dir = TempDir::new("state-verify");
    let good = stateful(&std::fs::read(vector("full.bin")).unwrap(), 0);
    let img = write(dir.path(), "ok.img", &good);
    let out = ok(&run(&["verify", s(&img)]));
    assert!(out.starts_with("ok "), "{out}");
    for (kind, at, value, what) in [
        (KIND_FILE, 6, 99, "ftype"),
        (KIND_FILE, 4, 7, "role"),
        (KIND_PROCESS, 340, 9, "seccomp"),
        (KIND_VMA_ATTR, 0, 0, ""),
    ] {
        let mut bad = good.clone();
        let field_at = damage(&mut bad, kind, at, value);
        if what.is_empty() {
            // A change the checks allow: still found, by the digest in the Tail.
            let p = write(dir.path(), "d.img", &bad);
            assert_eq!(run(&["verify", s(&p)]).status.code(), Some(1));
            continue;
        }
        let p = write(dir.path(), "bad.img", &bad);
        let o = run(&["verify", s(&p)]);
        assert_eq!(o.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(what), "{what}: {err}");
        assert!(
            err.contains(&format!("{field_at:#x}")),
            "{what} at {field_at:#x}: {err}"
        );
        // The same from show, which reads every record too.
        let o = run(&["show", s(&p)]);
        assert_eq!(o.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(what) && err.contains("record"),
            "show, {what}: {err}"
        );
    }
}

fn chain_with_stateful_top(dir: &Path) -> PathBuf {
    for (i, v) in ["chain-1.bin", "chain-2.bin"].iter().enumerate() {
        std::fs::copy(vector(v), dir.join(format!("sample.img.{}", i + 1))).unwrap();
    }
    let top = stateful(&std::fs::read(vector("chain-3.bin")).unwrap(), 0);
    write(dir, "sample.img.3", &top)
}

/// The state entries (everything but VMAs and pages) of `show --json` of an image.
fn state_json(img: &Path) -> Vec<serde_json::Value> {
    let out = ok(&run(&["show", "--json", "--with-pages", s(img)]));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    doc["body"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b.get("vma").is_none() && b.get("pages").is_none())
        .cloned()
        .collect()
}

#[test]
fn squash_keeps_the_newest_images_state_records() {
    let dir = TempDir::new("state-squash");
    let top = chain_with_stateful_top(dir.path());
    let sq = dir.path().join("sq.img.9");
    ok(&run(&["squash", s(&top), "-o", s(&sq)]));
    ok(&run(&["verify", s(&sq)]));
    let (a, b) = (state_json(&top), state_json(&sq));
    // 15 files, signals, timers, process, 4 VMA attributes.
    assert_eq!(a.len(), 22, "{a:#?}");
    assert_eq!(a, b);
    // And diff sees the same task state (memory resolved through the chain).
    let d = run(&["diff", s(&top), s(&sq)]);
    let text = String::from_utf8_lossy(&d.stdout);
    assert_eq!(d.status.code(), Some(0), "{text}");
}

#[test]
fn diff_names_the_state_that_differs() {
    let dir = TempDir::new("state-diff");
    let base = std::fs::read(vector("full.bin")).unwrap();
    let a = write(dir.path(), "a.img", &stateful(&base, 0));
    let b = write(dir.path(), "b.img", &stateful(&base, 1));
    let o = run(&["diff", s(&a), s(&b)]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8(o.stdout).unwrap();
    for want in [
        "field fd 1.pos: 123 -> 124",
        "field SIGINT: handler 0x401000",
        "-> handler 0x401001",
        "field RLIMIT_NOFILE.soft: 1024 -> 1025",
        "field vma 0x400000.attrs: dontfork|locked -> dontdump|locked",
        "image tail.digest",
    ] {
        assert!(text.contains(want), "diff lacks {want:?}:\n{text}");
    }
    assert_eq!(text.matches("field ").count(), 4, "{text}");
    // A 1.0 image against the same with state: every state record is named.
    let plain = write(dir.path(), "plain.img", &base);
    let o = run(&["diff", "--json", s(&plain), s(&a)]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let fields: Vec<&str> = j["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for want in [
        "cwd.path",
        "fd 13.type",
        "SIGINT",
        "ITIMER_REAL",
        "process.groups",
    ] {
        assert!(fields.contains(&want), "{want}: {fields:?}");
    }
    let sigint = j["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "SIGINT");
    assert_eq!(sigint.unwrap()["a"], "default");
}

// ---- The records of format 1.2: inotify watches, locks, the vDSO's bytes ----

/// This machine's vDSO, as any process here has it (`None` if it cannot be read).
fn machine_vdso() -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let range = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))?
        .split(' ')
        .next()?;
    let (a, b) = range.split_once('-')?;
    let a = u64::from_str_radix(a, 16).ok()?;
    let b = u64::from_str_radix(b, 16).ok()?;
    let mut buf = vec![0; (b - a) as usize];
    let mem = std::fs::File::open("/proc/self/mem").ok()?;
    mem.read_exact_at(&mut buf, a).ok()?;
    Some(buf)
}

/// `stateful(base, variant)` as a 1.2 image: two inotify fds (one a dup) with watches and three
/// locks before the Signals, and after the vDSO's Vma (and VmaAttr) its bytes: `vdso`, or bytes
/// made up from `variant`. `variant` changes a watch's mask and a lock's mode.
fn stateful12(base: &[u8], variant: u64, vdso: Option<&[u8]>) -> Vec<u8> {
    let v11 = stateful(base, variant);
    let img = Image::parse(&v11).unwrap();
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    let mut vdso_len = None;
    for r in img.records() {
        match r.record {
            Record::Header(h) => {
                let mut h = *h;
                h.version_minor = 2.into();
                w.header(&h).unwrap();
            }
            Record::Task(t) => w.task(t).unwrap(),
            Record::Regs(x) => w.regs(x.raw, x.xsave).unwrap(),
            Record::Mm(m) => w.mm(m.raw, m.auxv, m.exe).unwrap(),
            Record::File(f) => w.file(f.raw, f.path, f.data).unwrap(),
            Record::FileData(d) => w.file_data(d.raw.offset.get(), d.bytes).unwrap(),
            Record::Signals(x) => {
                write_inotify_and_locks(&mut w, variant);
                w.signals(x.raw, x.pending).unwrap();
            }
            Record::Timers(x) => w.timers(x.raw, x.posix).unwrap(),
            Record::Process(x) => w.process(x.raw, x.groups).unwrap(),
            Record::Vma(v) => {
                w.vma(v.raw, v.path).unwrap();
                vdso_len = (v.kind() == VMA_VDSO).then(|| (v.end() - v.start()) as usize);
            }
            Record::VmaAttr(a) => {
                w.vma_attr(a).unwrap();
                if let Some(n) = vdso_len.take() {
                    let made_up: Vec<u8> =
                        (0..n).map(|i| (i as u64 * 31 + variant) as u8).collect();
                    w.vdso_data(vdso.unwrap_or(&made_up)).unwrap();
                }
            }
            Record::Pages(p) => {
                let runs: Vec<PageRun> = p.runs.to_vec();
                w.pages(&runs, p.data.unwrap_or(&[])).unwrap();
            }
            Record::Unknown(u) => w.unknown(u.kind, u.payload).unwrap(),
            _ => {}
        }
    }
    w.finish().unwrap();
    out
}

fn write_inotify_and_locks(w: &mut Writer<&mut Vec<u8>>, variant: u64) {
    let n = |fd: u32, dup_of: u32| raw::Inotify {
        fd: fd.into(),
        fd_flags: 1.into(),
        open_flags: 0o4000.into(),
        dup_of: dup_of.into(),
    };
    w.inotify(&n(20, NO_DUP)).unwrap();
    let mut watch = raw::InotifyWatch::new_zeroed();
    watch.wd = 1.into();
    watch.mask = (0x102 | (variant as u32 * 0x200)).into();
    watch.inode = MTIME.into();
    (watch.dev_major, watch.dev_minor) = (8.into(), 2.into());
    w.inotify_watch(&watch, b"/tmp/watched").unwrap();
    watch.wd = 7.into();
    watch.mask = 0x8.into();
    w.inotify_watch(&watch, b"/tmp/watched/file").unwrap();
    w.inotify(&n(21, 20)).unwrap();
    let lock = |ltype: u16, mode: u16, start: u64, len: u64| raw::Lock {
        fd: 1.into(),
        ltype: ltype.into(),
        mode: mode.into(),
        start: start.into(),
        len: len.into(),
    };
    w.lock(&lock(LOCK_POSIX, LOCK_WRITE - variant as u16, 0, 100))
        .unwrap();
    w.lock(&lock(LOCK_FLOCK, LOCK_READ, 0, 0)).unwrap();
    w.lock(&lock(LOCK_OFD, LOCK_WRITE, MTIME, 0)).unwrap();
}

#[test]
fn show_names_the_records_of_1_2() {
    let dir = TempDir::new("state12-show");
    let base = std::fs::read(vector("full.bin")).unwrap();
    let img = write(dir.path(), "s.img", &stateful12(&base, 0, None));
    let out = ok(&run(&["show", s(&img)]));
    for want in [
        "version       1.2",
        "inotify\n  fd 20   O_RDONLY|O_NONBLOCK FD_CLOEXEC   2 watch(es)",
        "wd 1    IN_MODIFY|IN_CREATE              /tmp/watched (inode 1795541570886164921, dev 8:2)",
        "wd 7    IN_CLOSE_WRITE",
        "fd 21   O_RDONLY|O_NONBLOCK FD_CLOEXEC   the inotify instance of fd 20 (shared)",
        "locks\n  fd 1    posix  write  bytes 0..100",
        "fd 1    flock  read   the whole file",
        "fd 1    ofd    write  bytes 1795541570886164921.. (to the end)",
        "vdso\n  vdso bytes: 8 KiB, crc32 ",
        "differs from this machine's",
    ] {
        assert!(out.contains(want), "show lacks {want:?}:\n{out}");
    }
    // The vDSO's bytes as this machine has them: show says so.
    match machine_vdso() {
        Some(m) if m.len() == 8192 => {
            let img = write(dir.path(), "m.img", &stateful12(&base, 0, Some(&m)));
            let out = ok(&run(&["show", s(&img)]));
            assert!(out.contains("same as this machine's"), "{out}");
        }
        m => cr_tests::skipped_part(
            "show_names_the_records_of_1_2",
            &format!(
                "this machine's vDSO is {:?} bytes, the image's Vma 8192",
                m.map(|m| m.len())
            ),
        ),
    }
}

#[test]
fn json_of_the_records_of_1_2_encodes_back_to_the_same_bytes() {
    let dir = TempDir::new("state12-json");
    let base = std::fs::read(vector("full.bin")).unwrap();
    let bytes = stateful12(&base, 0, None);
    let img = write(dir.path(), "s.img", &bytes);
    let json = round_trip(&img, dir.path());
    for want in [
        r#""inotify": {"#,
        r#""events": "IN_MODIFY|IN_CREATE""#,
        r#""mask": 258"#,
        r#""dup_of": 20"#,
        r#""type": "flock""#,
        r#""mode": "write""#,
        // Above 2^53: strings, as elsewhere.
        r#""start": "1795541570886164921""#,
        r#""inode": "1795541570886164921""#,
        r#""vdso_data": {"#,
    ] {
        assert!(json.contains(want), "JSON lacks {want}");
    }
    // Through jq, when it is there.
    if let Ok(o) = Command::new("jq")
        .arg(".")
        .stdin(std::fs::File::open(dir.path().join("rt.json")).unwrap())
        .output()
    {
        assert!(o.status.success());
        let j = write(dir.path(), "jq.json", &o.stdout);
        let back = dir.path().join("jq.img");
        ok(&run(&["encode", s(&j), "-o", s(&back)]));
        assert!(bytes == std::fs::read(&back).unwrap(), "through jq");
    } else {
        cr_tests::skipped_part("json_of_the_records_of_1_2", "jq is not installed");
    }
    // Without --with-pages the vDSO's bytes are left out, and encode says what is missing.
    let bare = ok(&run(&["show", "--json", s(&img)]));
    let doc: serde_json::Value = serde_json::from_str(&bare).unwrap();
    let vd = doc["body"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|b| b.get("vdso_data"))
        .unwrap();
    assert_eq!(vd["len"], 8192);
    assert!(vd.get("data").is_none(), "{vd}");
}

#[test]
fn diff_squash_and_verify_know_the_records_of_1_2() {
    let dir = TempDir::new("state12-diff");
    let base = std::fs::read(vector("full.bin")).unwrap();
    let a = write(dir.path(), "a.img", &stateful12(&base, 0, None));
    let b = write(dir.path(), "b.img", &stateful12(&base, 1, None));
    let o = run(&["diff", s(&a), s(&b)]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8(o.stdout).unwrap();
    for want in [
        "field inotify fd 20.wd 1.mask: IN_MODIFY|IN_CREATE -> IN_MODIFY|IN_CREATE|IN_DELETE",
        "field lock fd 1 posix 0+100: write -> read",
        "field vdso.bytes: 8192 bytes, crc32",
    ] {
        assert!(text.contains(want), "diff lacks {want:?}:\n{text}");
    }
    // squash carries them: the same state entries, the VdsoData right after its Vma.
    let sq = dir.path().join("sq.img");
    ok(&run(&["squash", s(&a), "-o", s(&sq)]));
    ok(&run(&["verify", s(&sq)]));
    let (ja, jb) = (state_json(&a), state_json(&sq));
    assert_eq!(ja, jb);
    assert_eq!(
        ja.iter()
            .filter(|e| e.get("inotify").is_some() || e.get("lock").is_some())
            .count(),
        5
    );
    assert_eq!(
        ja.iter().filter(|e| e.get("vdso_data").is_some()).count(),
        1
    );
    // verify names a damaged field of each kind, at its offset.
    let good = std::fs::read(&a).unwrap();
    for (kind, at, value, what) in [
        (KIND_INOTIFY, 4, 2, "fd_flags"),
        (KIND_INOTIFY_WATCH, 0, 0, "wd"),
        (KIND_INOTIFY_WATCH, 32, 0, "path"),
        (KIND_LOCK, 4, 9, "ltype"),
        (KIND_VDSO_DATA, 4, 1, "_reserved0"),
    ] {
        let mut bad = good.clone();
        let field_at = damage(&mut bad, kind, at, value);
        let p = write(dir.path(), "bad.img", &bad);
        let o = run(&["verify", s(&p)]);
        assert_eq!(o.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(what) && err.contains(&format!("{field_at:#x}")),
            "{what} at {field_at:#x}: {err}"
        );
    }
}
