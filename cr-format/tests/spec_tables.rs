//! The layout tables of `spec/FORMAT.md` against `cr_format::raw`, and the hand-made vector of
//! FORMAT.md §14 (built by `spec/vectors/handmade.py` from the spec alone) against the reader,
//! the writer and the hex dump printed in the spec.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::as_conversions,
    clippy::arithmetic_side_effects
)]

mod support;
use cr_format::raw;
use cr_format::read::{Image, Record};
use cr_format::repr::ImageRepr;
use zerocopy::FromZeros;

use support::spec_dir;

fn format_md() -> String {
    std::fs::read_to_string(spec_dir().join("FORMAT.md")).expect("spec/FORMAT.md")
}

/// One row of a layout table.
#[derive(Debug)]
struct Row {
    offset: usize,
    size: usize,
    ty: String,
    field: String,
}

/// The columns every layout table has, in order.
const COLUMNS: [&str; 5] = ["offset", "size", "type", "field", "meaning, valid values"];

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// The table under the (only) heading that names `` `name` ``.
fn table(md: &str, name: &str) -> Vec<Row> {
    let tag = format!("`{name}`");
    let lines: Vec<&str> = md.lines().collect();
    let headings: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with('#') && lines[i].contains(&tag))
        .collect();
    assert_eq!(
        headings.len(),
        1,
        "exactly one heading of FORMAT.md must name {tag}, found {headings:?}"
    );
    let mut i = headings[0] + 1;
    while i < lines.len() && !lines[i].trim_start().starts_with('|') {
        assert!(
            !lines[i].starts_with('#'),
            "no table under the heading that names {tag}"
        );
        i += 1;
    }
    assert!(
        i < lines.len(),
        "no table under the heading that names {tag}"
    );
    let head = cells(lines[i]);
    assert_eq!(head, COLUMNS, "columns of the table of {tag}");
    i += 1;
    assert!(
        cells(lines[i])
            .iter()
            .all(|c| c.chars().all(|ch| "-: ".contains(ch))),
        "separator row of the table of {tag}"
    );
    i += 1;
    let mut rows = Vec::new();
    while i < lines.len() && lines[i].trim_start().starts_with('|') {
        let c = cells(lines[i]);
        assert_eq!(c.len(), 5, "table of {tag}: row {:?}", lines[i]);
        let num = |s: &str| -> usize {
            s.parse()
                .unwrap_or_else(|_| panic!("table of {tag}: {s:?} is not a decimal number"))
        };
        rows.push(Row {
            offset: num(&c[0]),
            size: num(&c[1]),
            ty: c[2].trim_matches('`').to_string(),
            field: c[3].trim_matches('`').to_string(),
        });
        i += 1;
    }
    rows
}

/// Size in bytes of a type as the tables write it: `u16`, `u8[8]`, `u64[27]`.
fn type_size(ty: &str) -> usize {
    let (base, count) = match ty.split_once('[') {
        Some((b, rest)) => (b, rest.trim_end_matches(']').parse::<usize>().unwrap()),
        None => (ty, 1),
    };
    let one = match base {
        "u8" => 1,
        "u16" => 2,
        "u32" => 4,
        "u64" => 8,
        // Arrays of the format's own structs, each checked by its own table.
        "SigAction" => size_of::<raw::SigAction>(),
        "ITimer" => size_of::<raw::ITimer>(),
        "Rlimit" => size_of::<raw::Rlimit>(),
        _ => panic!("unknown type {ty:?} in a layout table"),
    };
    one * count
}

/// Checks the table of `$t` against the struct: every listed field at its offset with its size,
/// in order, the rows contiguous from 0, the total the struct's size (so no field is left out).
macro_rules! check_struct {
    ($md:expr, $t:ident, [$($f:ident),+ $(,)?]) => {{
        let z = <raw::$t as FromZeros>::new_zeroed();
        let fields: Vec<(&str, usize, usize)> = vec![
            $((stringify!($f), core::mem::offset_of!(raw::$t, $f), core::mem::size_of_val(&z.$f))),+
        ];
        let rows = table($md, stringify!($t));
        let name = stringify!($t);
        assert_eq!(
            rows.iter().map(|r| r.field.as_str()).collect::<Vec<_>>(),
            fields.iter().map(|f| f.0).collect::<Vec<_>>(),
            "{name}: field names and order in FORMAT.md"
        );
        let mut at = 0;
        for (row, (field, off, size)) in rows.iter().zip(&fields) {
            assert_eq!(row.offset, *off, "{name}.{field}: offset");
            assert_eq!(row.size, *size, "{name}.{field}: size");
            assert_eq!(type_size(&row.ty), row.size, "{name}.{field}: type {} vs size", row.ty);
            assert_eq!(row.offset, at, "{name}.{field}: gap or overlap before it");
            at += row.size;
        }
        assert_eq!(at, core::mem::size_of::<raw::$t>(), "{name}: rows must cover the struct");
    }};
}

#[test]
fn layout_tables_match_raw() {
    let md = format_md();
    let md = md.as_str();
    check_struct!(md, RecordHeader, [kind, flags, len, index, crc]);
    check_struct!(
        md,
        Header,
        [
            magic,
            version_major,
            version_minor,
            arch,
            _reserved0,
            page_size,
            flags,
            crid,
            parent_crid,
            parent_digest,
            created_ns,
            diff_method,
            _reserved1,
            producer,
        ]
    );
    check_struct!(
        md,
        Task,
        [
            pid,
            tgid,
            ppid,
            pgid,
            sid,
            state,
            _reserved0,
            exit_signal,
            personality,
            uid,
            gid,
            sig_blocked,
            sig_ignored,
            sig_caught,
            sig_pending,
            sig_shared_pending,
            cap_inheritable,
            cap_permitted,
            cap_effective,
            comm,
            umask,
            _reserved1,
        ]
    );
    check_struct!(
        md,
        RegsX86_64,
        [arch, _reserved0, xsave_len, xfeatures, gpr, fxsave]
    );
    check_struct!(
        md,
        Mm,
        [
            start_code,
            end_code,
            start_data,
            end_data,
            start_brk,
            brk,
            start_stack,
            arg_start,
            arg_end,
            env_start,
            env_end,
            auxv_count,
            exe_len,
            _reserved0,
        ]
    );
    check_struct!(md, AuxvEntry, [key, value]);
    check_struct!(
        md,
        Vma,
        [
            start,
            end,
            offset,
            inode,
            file_size,
            file_mtime_ns,
            dev_major,
            dev_minor,
            prot,
            flags,
            kind,
            path_len,
            _reserved0,
        ]
    );
    check_struct!(md, Pages, [run_count, pad_len, data_crc, _reserved0]);
    check_struct!(md, PageRun, [addr, pages, kind, _reserved0]);
    check_struct!(md, Tail, [record_count, image_len, digest]);
    check_struct!(
        md,
        File,
        [
            fd, role, ftype, flags, fd_flags, open_flags, mode, pos, inode, size, mtime_ns,
            dev_major, dev_minor, rdev_major, rdev_minor, dup_of, path_len, _reserved0, data_len,
            _reserved1, params,
        ]
    );
    check_struct!(md, EpollEntry, [fd, events, data]);
    check_struct!(md, FileData, [offset, len, _reserved0]);
    check_struct!(
        md,
        Signals,
        [
            altstack_sp,
            altstack_size,
            altstack_flags,
            pending_count,
            actions
        ]
    );
    check_struct!(md, SigAction, [handler, flags, restorer, mask]);
    check_struct!(md, PendingSignal, [queue, _reserved0, siginfo]);
    check_struct!(md, Timers, [itimers, posix_count, _reserved0]);
    check_struct!(md, ITimer, [interval_ns, value_ns]);
    check_struct!(
        md,
        PosixTimer,
        [
            id,
            clock,
            sigev_notify,
            sigev_signo,
            sigev_value,
            notify_tid,
            overrun,
            interval_ns,
            value_ns,
        ]
    );
    check_struct!(
        md,
        Process,
        [
            rlimits,
            timer_slack_ns,
            rseq_addr,
            rseq_len,
            rseq_sig,
            robust_list,
            robust_list_len,
            clear_child_tid,
            cap_bounding,
            cap_ambient,
            securebits,
            pdeathsig,
            dumpable,
            attr_flags,
            oom_score_adj,
            seccomp_mode,
            group_count,
            _reserved0,
        ]
    );
    check_struct!(md, Rlimit, [cur, max]);
    check_struct!(md, VmaAttr, [attrs, _reserved0]);
    check_struct!(md, Inotify, [fd, fd_flags, open_flags, dup_of]);
    check_struct!(
        md,
        InotifyWatch,
        [wd, mask, inode, dev_major, dev_minor, path_len, _reserved0]
    );
    check_struct!(md, Lock, [fd, ltype, mode, start, len]);
    check_struct!(md, VdsoData, [len, _reserved0]);
}

/// The rows of the kinds table of §2.2 for 1.2, the constants named in §21..§24 and the limits
/// of §10 against `raw` and `limits`.
#[test]
fn kinds_and_constants_of_1_2_match_raw() {
    let md = format_md();
    for (kind, name) in [
        (raw::KIND_INOTIFY, "KIND_INOTIFY"),
        (raw::KIND_INOTIFY_WATCH, "KIND_INOTIFY_WATCH"),
        (raw::KIND_LOCK, "KIND_LOCK"),
        (raw::KIND_VDSO_DATA, "KIND_VDSO_DATA"),
    ] {
        let row = format!("| {kind} | `{name}` |");
        assert!(md.contains(&row), "§2.2 has no row {row:?}");
    }
    let pairs: [(u64, &str); 8] = [
        (raw::LOCK_POSIX.into(), "`LOCK_POSIX` (1)"),
        (raw::LOCK_FLOCK.into(), "`LOCK_FLOCK` (2)"),
        (raw::LOCK_OFD.into(), "`LOCK_OFD` (3)"),
        (raw::LOCK_READ.into(), "`LOCK_READ` (1)"),
        (raw::LOCK_WRITE.into(), "`LOCK_WRITE` (2)"),
        (
            cr_format::limits::MAX_INOTIFY_WATCHES.into(),
            "| `MAX_INOTIFY_WATCHES` | 65536 |",
        ),
        (
            cr_format::limits::MAX_LOCKS.into(),
            "| `MAX_LOCKS` | 65536 |",
        ),
        (
            cr_format::limits::MAX_VDSO_LEN.into(),
            "| `MAX_VDSO_LEN` | 1048576 |",
        ),
    ];
    for (value, text) in pairs {
        assert!(
            md.contains(text),
            "FORMAT.md does not say {text:?} (value {value})"
        );
        let shown: String = text.chars().filter(|c| c.is_ascii_digit()).collect();
        assert_eq!(shown, value.to_string(), "{text}");
    }
    assert!(md.contains(&format!("`NO_DUP` ({:#x})", raw::NO_DUP)));
    assert_eq!(raw::VERSION_MINOR, 2);
    assert!(md.starts_with("# The cr image format, version 1.2\n"));
}

/// The rows of the kinds table of §2.2 against the constants, and the constants named in the
/// tables of §15..§20 against `raw`.
#[test]
fn kinds_and_constants_of_1_1_match_raw() {
    let md = format_md();
    for (kind, name) in [
        (raw::KIND_FILE, "KIND_FILE"),
        (raw::KIND_FILE_DATA, "KIND_FILE_DATA"),
        (raw::KIND_SIGNALS, "KIND_SIGNALS"),
        (raw::KIND_TIMERS, "KIND_TIMERS"),
        (raw::KIND_PROCESS, "KIND_PROCESS"),
        (raw::KIND_VMA_ATTR, "KIND_VMA_ATTR"),
    ] {
        let row = format!("| {kind} | `{name}` |");
        assert!(md.contains(&row), "§2.2 has no row {row:?}");
    }
    let pairs: [(u64, &str); 37] = [
        (raw::ROLE_FD.into(), "`ROLE_FD` (0)"),
        (raw::ROLE_CWD.into(), "`ROLE_CWD` (1)"),
        (raw::ROLE_ROOT.into(), "`ROLE_ROOT` (2)"),
        (raw::FILE_UNSUPPORTED.into(), "| 0 | `FILE_UNSUPPORTED` |"),
        (raw::FILE_REG.into(), "| 1 | `FILE_REG` |"),
        (raw::FILE_DIR.into(), "| 2 | `FILE_DIR` |"),
        (raw::FILE_CHR.into(), "| 3 | `FILE_CHR` |"),
        (raw::FILE_FIFO.into(), "| 4 | `FILE_FIFO` |"),
        (raw::FILE_PIPE.into(), "| 5 | `FILE_PIPE` |"),
        (raw::FILE_SOCKET.into(), "| 6 | `FILE_SOCKET` |"),
        (raw::FILE_EVENTFD.into(), "| 7 | `FILE_EVENTFD` |"),
        (raw::FILE_TIMERFD.into(), "| 8 | `FILE_TIMERFD` |"),
        (raw::FILE_SIGNALFD.into(), "| 9 | `FILE_SIGNALFD` |"),
        (raw::FILE_EPOLL.into(), "| 10 | `FILE_EPOLL` |"),
        (raw::FILE_MEMFD.into(), "| 11 | `FILE_MEMFD` |"),
        (raw::FILE_DELETED.into(), "| 1 | `FILE_DELETED` |"),
        (raw::FILE_TTY.into(), "| 2 | `FILE_TTY` |"),
        (raw::FILE_HAS_DATA.into(), "| 4 | `FILE_HAS_DATA` |"),
        (raw::SOCKET_UNBOUND, "`SOCKET_UNBOUND` (0)"),
        (raw::SOCKET_BOUND, "`SOCKET_BOUND` (1)"),
        (raw::SOCKET_LISTENING, "`SOCKET_LISTENING` (2)"),
        (raw::SOCKET_CONNECTED, "`SOCKET_CONNECTED` (3"),
        (raw::QUEUE_THREAD.into(), "`QUEUE_THREAD` (0)"),
        (raw::QUEUE_SHARED.into(), "`QUEUE_SHARED` (1)"),
        (
            raw::ATTR_CHILD_SUBREAPER.into(),
            "`ATTR_CHILD_SUBREAPER` (1)",
        ),
        (raw::ATTR_NO_NEW_PRIVS.into(), "`ATTR_NO_NEW_PRIVS` (2)"),
        (raw::ATTR_THP_DISABLE.into(), "`ATTR_THP_DISABLE` (4)"),
        (raw::ATTR_MLOCK_FUTURE.into(), "`ATTR_MLOCK_FUTURE` (8)"),
        (raw::ATTR_MLOCK_ONFAULT.into(), "`ATTR_MLOCK_ONFAULT` (16"),
        (raw::VMA_ATTR_DONTFORK.into(), "| 1 | `VMA_ATTR_DONTFORK` |"),
        (raw::VMA_ATTR_DONTDUMP.into(), "| 2 | `VMA_ATTR_DONTDUMP` |"),
        (
            raw::VMA_ATTR_WIPEONFORK.into(),
            "| 4 | `VMA_ATTR_WIPEONFORK` |",
        ),
        (raw::VMA_ATTR_HUGEPAGE.into(), "| 8 | `VMA_ATTR_HUGEPAGE` |"),
        (
            raw::VMA_ATTR_NOHUGEPAGE.into(),
            "| 16 | `VMA_ATTR_NOHUGEPAGE` |",
        ),
        (
            raw::VMA_ATTR_MERGEABLE.into(),
            "| 32 | `VMA_ATTR_MERGEABLE` |",
        ),
        (raw::VMA_ATTR_LOCKED.into(), "| 64 | `VMA_ATTR_LOCKED` |"),
        (
            raw::VMA_ATTR_LOCKONFAULT.into(),
            "| 128 | `VMA_ATTR_LOCKONFAULT` |",
        ),
    ];
    for (value, text) in pairs {
        assert!(
            md.contains(text),
            "FORMAT.md does not say {text:?} (value {value})"
        );
        let shown: String = text.chars().filter(|c| c.is_ascii_digit()).collect();
        assert_eq!(shown, value.to_string(), "{text}");
    }
    assert!(md.contains(&format!("`DUP_NONE` ({:#x})", raw::DUP_NONE)));
    assert_eq!(raw::VMA_ATTR_KNOWN, 255);
    assert_eq!(raw::ATTR_FLAGS_KNOWN, 31);
    assert_eq!(raw::RLIMIT_COUNT, 16);
}

/// The bytes of the ```hex block of §14. `#` starts a comment; a line `# ... N bytes of XX`
/// stands for N bytes of value XX.
fn section14_hex(md: &str) -> Vec<u8> {
    let start = md
        .lines()
        .position(|l| l.starts_with("## 14."))
        .expect("FORMAT.md has a section 14");
    let mut lines = md.lines().skip(start + 1);
    lines
        .by_ref()
        .find(|l| l.trim() == "```hex")
        .expect("section 14 has a ```hex block");
    let mut out = Vec::new();
    for line in lines {
        let line = line.trim();
        if line == "```" {
            return out;
        }
        if let Some(rest) = line.strip_prefix("# ... ") {
            let mut w = rest.split_whitespace();
            let n: usize = w
                .next()
                .unwrap()
                .parse()
                .expect("count in `# ... N bytes of XX`");
            assert_eq!(w.next(), Some("bytes"), "{line}");
            assert_eq!(w.next(), Some("of"), "{line}");
            let b =
                u8::from_str_radix(w.next().unwrap(), 16).expect("byte in `# ... N bytes of XX`");
            out.extend(std::iter::repeat_n(b, n));
            continue;
        }
        let code = line.split('#').next().unwrap();
        for pair in code.split_whitespace() {
            assert_eq!(pair.len(), 2, "not a hex byte pair: {pair:?} in {line:?}");
            out.push(u8::from_str_radix(pair, 16).expect("hex byte"));
        }
    }
    panic!("the ```hex block of section 14 is not closed");
}

fn handmade() -> Vec<u8> {
    std::fs::read(spec_dir().join("vectors/valid/minimal-handmade.bin"))
        .expect("spec/vectors/valid/minimal-handmade.bin (run spec/vectors/handmade.py)")
}

#[test]
fn handmade_vector_parses() {
    let bytes = handmade();
    let img = Image::parse(&bytes).expect("the reader accepts the hand-made image");
    assert_eq!(img.crid(), 1);
    assert_eq!(img.parent_crid(), 0);
    assert_eq!(img.page_size(), 4096);
    let task = img.task().unwrap();
    assert_eq!(task.pid.get(), 42);
    assert_eq!(task.state, b'S');
    assert_eq!(&task.comm[..5], b"true\0");
    let mm = img.mm().unwrap();
    assert_eq!(mm.exe, b"/bin/true");
    assert!(mm.auxv.is_empty());
    assert!(img.regs().unwrap().xsave.is_empty());
    let vmas: Vec<_> = img.vmas().map(|v| (v.start(), v.end(), v.kind())).collect();
    assert_eq!(vmas, [(0x10000, 0x12000, raw::VMA_ANON)]);
    let mut pages = 0;
    for r in img.records() {
        if let Record::Pages(p) = r.record {
            pages += 1;
            assert_eq!(
                p.data_offset % 4096,
                0,
                "page data is page-aligned in the file"
            );
            let runs: Vec<_> = p.iter().collect();
            assert_eq!(runs.len(), 2);
            assert_eq!((runs[0].addr, runs[0].pages), (0x10000, 1));
            assert!(runs[0].data.unwrap().iter().all(|&b| b == 0xab));
            assert_eq!(runs[0].data.unwrap().len(), 4096);
            assert_eq!((runs[1].addr, runs[1].pages), (0x11000, 1));
            assert!(runs[1].data.is_none());
        }
    }
    assert_eq!(pages, 1);
    assert_eq!(img.tail().record_count.get(), 6);
    assert_eq!(img.tail().image_len.get(), bytes.len() as u64);
}

#[test]
fn handmade_vector_is_what_the_writer_writes() {
    let bytes = handmade();
    let img = Image::parse(&bytes).unwrap();
    let again = ImageRepr::parse(&img).to_vec().unwrap();
    assert_eq!(again.len(), bytes.len(), "image length");
    if let Some(i) = (0..bytes.len()).find(|&i| again[i] != bytes[i]) {
        panic!(
            "the writer and handmade.py differ first at byte {i:#x}: {:#04x} vs {:#04x}",
            again[i], bytes[i]
        );
    }
}

#[test]
fn section14_hex_is_the_handmade_vector() {
    let hex = section14_hex(&format_md());
    let bytes = handmade();
    assert_eq!(hex.len(), bytes.len(), "length of the §14 dump");
    if let Some(i) = (0..bytes.len()).find(|&i| hex[i] != bytes[i]) {
        panic!(
            "§14 and minimal-handmade.bin differ first at byte {i:#x}: {:#04x} vs {:#04x}",
            hex[i], bytes[i]
        );
    }
}
