//! Golden tests over spec/vectors: every valid vector decodes to its checked-in description
//! (`NAME.txt`) and re-emits byte-identical; every invalid vector fails with its checked-in error
//! (`NAME.err`, offset included); the streaming reader agrees with the slice reader on all.
//! `CR_BLESS=1 cargo test -p cr-format --test vectors` rewrites the expected files.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

mod support;
use cr_format::read::{Image, Options, Parsed, Record, Records, StreamReader};
use cr_format::repr::ImageRepr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn vectors(kind: &str) -> Vec<PathBuf> {
    let dir = support::spec_dir().join("vectors").join(kind);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no vectors in {}", dir.display());
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
}

/// One line per record, with every field: the expected decoded output of a vector.
fn describe_record(p: &Parsed<'_>) -> String {
    let mut s = format!(
        "@{:#06x} #{} kind={} len={} crc={:#010x}: ",
        p.offset, p.header.index, p.header.kind, p.header.len, p.header.crc
    );
    match p.record {
        Record::Header(h) => write!(
            s,
            "Header v{}.{} arch={} page_size={} crid={} parent={} parent_digest={:#018x} created_ns={} diff_method={} producer={:?}",
            h.version_major, h.version_minor, h.arch, h.page_size, h.crid, h.parent_crid, h.parent_digest.get(), h.created_ns, h.diff_method, text(&h.producer)
        ),
        Record::Task(t) => write!(
            s,
            "Task pid={} tgid={} ppid={} pgid={} sid={} state={} exit_signal={} personality={:#x} uid={:?} gid={:?} blocked={:#x} ignored={:#x} caught={:#x} pending={:#x} shared_pending={:#x} cap=({:#x},{:#x},{:#x}) comm={:?} umask={:#o}",
            t.pid, t.tgid, t.ppid, t.pgid, t.sid, t.state as char, t.exit_signal, t.personality.get(),
            t.uid.map(|x| x.get()), t.gid.map(|x| x.get()), t.sig_blocked.get(), t.sig_ignored.get(), t.sig_caught.get(),
            t.sig_pending.get(), t.sig_shared_pending.get(), t.cap_inheritable.get(), t.cap_permitted.get(), t.cap_effective.get(), text(&t.comm), t.umask.get()
        ),
        Record::Regs(r) => write!(
            s,
            "Regs arch={} xfeatures={:#x} gpr={:x?} fxsave_crc={:#010x} xsave_len={} xsave_crc={:#010x}",
            r.raw.arch, r.raw.xfeatures.get(), r.raw.gpr.map(|g| g.get()), crc32fast::hash(&r.raw.fxsave), r.xsave.len(), crc32fast::hash(r.xsave)
        ),
        Record::Mm(m) => {
            let f = m.raw;
            write!(
                s,
                "Mm code={:#x}..{:#x} data={:#x}..{:#x} brk={:#x}..{:#x} stack={:#x} arg={:#x}..{:#x} env={:#x}..{:#x} auxv={:x?} exe={:?}",
                f.start_code.get(), f.end_code.get(), f.start_data.get(), f.end_data.get(), f.start_brk.get(), f.brk.get(), f.start_stack.get(),
                f.arg_start.get(), f.arg_end.get(), f.env_start.get(), f.env_end.get(),
                m.auxv.iter().map(|e| (e.key.get(), e.value.get())).collect::<Vec<_>>(), String::from_utf8_lossy(m.exe)
            )
        }
        Record::Vma(v) => {
            let r = v.raw;
            write!(
                s,
                "Vma {:#x}..{:#x} prot={} flags={} kind={} offset={:#x} dev={}:{} inode={} size={} mtime_ns={} path={:?}",
                r.start.get(), r.end.get(), r.prot, r.flags, r.kind, r.offset.get(), r.dev_major, r.dev_minor, r.inode, r.file_size, r.file_mtime_ns, String::from_utf8_lossy(v.path)
            )
        }
        Record::Pages(pg) => {
            write!(s, "Pages data_offset={:#x} data_crc={:#010x} runs=[", pg.data_offset, pg.raw.data_crc.get()).unwrap();
            for (i, r) in pg.iter().enumerate() {
                let sep = if i > 0 { ", " } else { "" };
                write!(s, "{sep}{:#x}+{} {:?}", r.addr, r.pages, r.kind).unwrap();
                if let Some(d) = r.data {
                    write!(s, " crc={:#010x}", crc32fast::hash(d)).unwrap();
                }
            }
            s.push(']');
            Ok(())
        }
        Record::Unknown(u) => write!(s, "Unknown kind={:#x} payload={:02x?}", u.kind, u.payload),
        Record::File(f) => {
            let r = f.raw;
            write!(
                s,
                "File fd={} role={} ftype={} flags={:#x} fd_flags={:#x} open_flags={:#o} mode={:#o} pos={} inode={} size={} mtime_ns={} dev={}:{} rdev={}:{} dup_of={:#x} params={:x?} path={:?} data={:02x?}",
                r.fd, r.role, r.ftype, r.flags.get(), r.fd_flags.get(), r.open_flags.get(), r.mode.get(), r.pos, r.inode, r.size, r.mtime_ns,
                r.dev_major, r.dev_minor, r.rdev_major, r.rdev_minor, r.dup_of.get(), r.params.map(|p| p.get()), String::from_utf8_lossy(f.path), f.data
            )
        }
        Record::FileData(d) => write!(s, "FileData offset={} len={} bytes={:02x?}", d.raw.offset, d.raw.len, d.bytes),
        Record::Signals(x) => {
            let r = x.raw;
            write!(s, "Signals altstack sp={:#x} size={} flags={:#x} actions=[", r.altstack_sp.get(), r.altstack_size, r.altstack_flags.get()).unwrap();
            // Every action that is not all zero (SIG_DFL, no flags, no mask), by signal number.
            let mut first = true;
            for (i, a) in r.actions.iter().enumerate() {
                let v = [a.handler.get(), a.flags.get(), a.restorer.get(), a.mask.get()];
                if v != [0; 4] {
                    let sep = if first { "" } else { ", " };
                    write!(s, "{sep}{}: handler={:#x} flags={:#x} restorer={:#x} mask={:#x}", i + 1, v[0], v[1], v[2], v[3]).unwrap();
                    first = false;
                }
            }
            write!(s, "] pending=[").unwrap();
            for (i, p) in x.pending.iter().enumerate() {
                let sep = if i > 0 { ", " } else { "" };
                write!(s, "{sep}queue={} siginfo_crc={:#010x} signo={}", p.queue, crc32fast::hash(&p.siginfo), p.siginfo[0]).unwrap();
            }
            s.push(']');
            Ok(())
        }
        Record::Timers(x) => {
            let it = x.raw.itimers.map(|i| (i.interval_ns.get(), i.value_ns.get()));
            write!(s, "Timers itimers(interval_ns,value_ns)={it:?} posix=[").unwrap();
            for (i, p) in x.posix.iter().enumerate() {
                let sep = if i > 0 { ", " } else { "" };
                write!(
                    s,
                    "{sep}id={} clock={} notify={} signo={} value={:#x} tid={} overrun={} interval_ns={} value_ns={}",
                    p.id, p.clock, p.sigev_notify, p.sigev_signo, p.sigev_value.get(), p.notify_tid, p.overrun, p.interval_ns, p.value_ns
                )
                .unwrap();
            }
            s.push(']');
            Ok(())
        }
        Record::Process(x) => {
            let r = x.raw;
            write!(
                s,
                "Process rlimits(cur,max)={:x?} timer_slack_ns={} rseq={:#x}/{}/{:#x} robust_list={:#x}/{} clear_child_tid={:#x} cap_bounding={:#x} cap_ambient={:#x} securebits={:#x} pdeathsig={} dumpable={} attr_flags={:#x} oom_score_adj={} seccomp_mode={} groups={:?}",
                r.rlimits.map(|l| (l.cur.get(), l.max.get())), r.timer_slack_ns, r.rseq_addr.get(), r.rseq_len, r.rseq_sig.get(),
                r.robust_list.get(), r.robust_list_len, r.clear_child_tid.get(), r.cap_bounding.get(), r.cap_ambient.get(), r.securebits.get(),
                r.pdeathsig, r.dumpable, r.attr_flags.get(), r.oom_score_adj.get() as i32, r.seccomp_mode, x.groups.iter().map(|g| g.get()).collect::<Vec<_>>()
            )
        }
        Record::VmaAttr(a) => write!(s, "VmaAttr attrs={:#x}", a.attrs.get()),
        Record::Inotify(n) => write!(s, "Inotify fd={} fd_flags={:#x} open_flags={:#o} dup_of={:#x}", n.fd, n.fd_flags.get(), n.open_flags.get(), n.dup_of.get()),
        Record::InotifyWatch(w) => write!(
            s,
            "InotifyWatch wd={} mask={:#x} inode={} dev={}:{} path={:?}",
            w.raw.wd, w.raw.mask.get(), w.raw.inode, w.raw.dev_major, w.raw.dev_minor, String::from_utf8_lossy(w.path)
        ),
        Record::Lock(l) => write!(s, "Lock fd={} ltype={} mode={} start={} len={}", l.fd, l.ltype, l.mode, l.start, l.len),
        Record::VdsoData(d) => write!(s, "VdsoData len={} crc={:#010x}", d.raw.len, crc32fast::hash(d.bytes)),
        Record::Tail(t) => write!(s, "Tail records={} image_len={} digest={:#018x}", t.record_count, t.image_len, t.digest.get()),
    }
    .unwrap();
    s
}

fn describe(img: &Image<'_>) -> String {
    img.records().map(|p| describe_record(&p) + "\n").collect()
}

fn check_golden(path: &Path, actual: &str) {
    if std::env::var_os("CR_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("{} missing: run with CR_BLESS=1", path.display()));
    assert_eq!(
        want,
        actual,
        "{} differs (CR_BLESS=1 regenerates)",
        path.display()
    );
}

/// The streaming reader, fed through a reader that returns `chunk` bytes at a time.
fn stream(bytes: &[u8], chunk: usize, opts: Options) -> (Vec<String>, Option<cr_format::Error>) {
    struct Chunky<'a>(&'a [u8], usize);
    impl std::io::Read for Chunky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut lines = vec![];
    let mut r = StreamReader::new(Chunky(bytes, chunk), opts);
    let res = r.for_each(|p| lines.push(describe_record(p)));
    (lines, res.err())
}

fn slice(bytes: &[u8], opts: Options) -> (Vec<String>, Option<cr_format::Error>) {
    let mut lines = vec![];
    for r in Records::new(bytes, opts) {
        match r {
            Ok(p) => lines.push(describe_record(&p)),
            Err(e) => return (lines, Some(e)),
        }
    }
    (lines, None)
}

#[test]
fn valid_vectors_decode_to_their_description_and_reemit_identically() {
    for v in vectors("valid") {
        let bytes = std::fs::read(&v).unwrap();
        let img = Image::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", v.display()));
        check_golden(&v.with_extension("txt"), &describe(&img));
        let again = ImageRepr::parse(&img).to_vec().unwrap();
        assert!(again == bytes, "{}: re-emitted image differs", v.display());
        // Metadata-only parsing accepts it too and gives the same tail.
        assert_eq!(
            Image::parse_metadata(&bytes).unwrap().digest(),
            img.digest()
        );
    }
}

#[test]
fn invalid_vectors_fail_with_their_error() {
    for v in vectors("invalid") {
        let bytes = std::fs::read(&v).unwrap();
        let err = Image::parse(&bytes).expect_err(&v.display().to_string());
        check_golden(&v.with_extension("err"), &format!("{err}\n"));
    }
}

#[test]
fn stream_reader_agrees_with_slice_reader_on_every_vector() {
    for v in vectors("valid").into_iter().chain(vectors("invalid")) {
        let bytes = std::fs::read(&v).unwrap();
        for opts in [
            Options { verify_data: true },
            Options { verify_data: false },
        ] {
            let want = slice(&bytes, opts);
            // Seekable input: page data skipped by seeking when not verified.
            let mut lines = vec![];
            let mut s = StreamReader::new_seekable(std::io::Cursor::new(&bytes), opts).unwrap();
            let res = s.for_each(|p| lines.push(describe_record(p)));
            assert_eq!(
                (lines, res.err()),
                want,
                "{} seekable {opts:?}",
                v.display()
            );
            for chunk in [1, 7, 64, 4096, 1 << 20] {
                assert_eq!(
                    stream(&bytes, chunk, opts),
                    want,
                    "{} chunk {chunk} {opts:?}",
                    v.display()
                );
            }
        }
    }
}

#[test]
fn every_truncation_and_bit_flip_of_every_valid_vector_is_rejected() {
    let mut cases = 0u64;
    for v in vectors("valid") {
        let bytes = std::fs::read(&v).unwrap();
        for n in 0..bytes.len() {
            assert!(
                Image::parse(&bytes[..n]).is_err(),
                "{} truncated to {n} accepted",
                v.display()
            );
            cases += 1;
        }
        let mut b = bytes.clone();
        for i in 0..b.len() {
            for bit in 0..8 {
                b[i] ^= 1 << bit;
                assert!(
                    Image::parse(&b).is_err(),
                    "{}: flip of bit {bit} at {i:#x} accepted",
                    v.display()
                );
                b[i] ^= 1 << bit;
                cases += 1;
            }
        }
    }
    println!("{cases} damaged images rejected");
}

#[test]
fn resync_steps_over_damage_and_always_ends() {
    for v in vectors("valid") {
        let bytes = std::fs::read(&v).unwrap();
        let mut b = bytes.clone();
        for i in 0..b.len() {
            b[i] ^= 0x40;
            let mut s = StreamReader::new(&b[..], Options::default());
            let mut errors = 0;
            // Each resync moves past a record, so this ends; the bound only guards the test.
            for _ in 0..1000 {
                match s.for_each(|_| {}) {
                    Ok(()) => break,
                    Err(_) => {
                        errors += 1;
                        if !s.resync() {
                            break;
                        }
                    }
                }
            }
            assert!(
                errors >= 1,
                "{}: damage at {i:#x} went unnoticed",
                v.display()
            );
            b[i] ^= 0x40;
        }
    }
}
