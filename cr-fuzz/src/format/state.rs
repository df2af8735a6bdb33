//! Properties of the 1.1 state records (FORMAT.md §15..§20) in a validated image, checked here
//! independently of the validator: each view holds what its header promises and follows its
//! rules, the records come in the order of §2.5, and `Image::files`, `Image::signals`,
//! `Image::timers` and `Image::process` give what the record walk gives.

use super::to_u64;
use cr_format::limits::{MAX_FILES, MAX_FILE_DATA};
use cr_format::raw::{self, *};
use cr_format::read::{Image, Record};

/// How many `params` a file type uses (§15.3).
fn params_used(ftype: u16) -> usize {
    match ftype {
        FILE_FIFO | FILE_SIGNALFD | FILE_MEMFD => 1,
        FILE_PIPE => 2,
        FILE_EVENTFD => 2,
        FILE_TIMERFD => 4,
        FILE_SOCKET => 6,
        _ => 0,
    }
}

/// The rules of one record of 1.1, from its view.
pub(super) fn touch_state(r: &Record<'_>) {
    match r {
        Record::File(f) => {
            let x = f.raw;
            assert_eq!(to_u64(f.path.len()), u64::from(x.path_len.get()));
            assert_eq!(to_u64(f.data.len()), u64::from(x.data_len.get()));
            assert!(!f.path.contains(&0), "NUL in a File path");
            assert!(f.role() <= ROLE_ROOT && f.ftype() <= FILE_TYPE_LAST);
            assert_eq!(x.flags.get() & !FILE_FLAGS_KNOWN, 0);
            for i in 0..9 {
                let want = x.params.get(i).map_or(0, |p| p.get());
                assert_eq!(f.param(i), want, "File::param({i})");
                if i >= params_used(f.ftype()) {
                    assert_eq!(want, 0, "params[{i}] of a type that does not use it");
                }
            }
            let entries = f.epoll();
            if f.ftype() == FILE_EPOLL {
                assert_eq!(
                    to_u64(entries.len()).saturating_mul(16),
                    to_u64(f.data.len())
                );
            } else {
                assert!(entries.is_empty(), "epoll entries of a non-epoll File");
            }
            if f.ftype() != FILE_EPOLL && f.ftype() != FILE_SOCKET {
                assert!(f.data.is_empty(), "data of a type without data");
            }
            let dup = x.dup_of.get();
            if f.role() != ROLE_FD {
                assert_eq!(x.fd.get(), 0);
                assert_eq!(dup, DUP_NONE);
                assert!(matches!(f.ftype(), FILE_DIR | FILE_UNSUPPORTED));
            } else {
                assert!(dup == DUP_NONE || dup < x.fd.get(), "dup_of not below fd");
            }
            if x.flags.get() & FILE_DELETED != 0 {
                assert_eq!(f.ftype(), FILE_REG);
            }
        }
        Record::FileData(d) => {
            assert_eq!(to_u64(d.bytes.len()), u64::from(d.raw.len.get()));
            assert!((1..=MAX_FILE_DATA).contains(&d.raw.len.get()));
        }
        Record::Signals(s) => {
            assert_eq!(
                to_u64(s.pending.len()),
                u64::from(s.raw.pending_count.get())
            );
            for (i, a) in s.raw.actions.iter().enumerate() {
                if i == 8 || i == 18 {
                    let v = [
                        a.handler.get(),
                        a.flags.get(),
                        a.restorer.get(),
                        a.mask.get(),
                    ];
                    assert_eq!(v, [0; 4], "SIGKILL/SIGSTOP action");
                }
                assert_eq!(a.mask.get() & ((1 << 8) | (1 << 18)), 0);
            }
            let mut queue = QUEUE_THREAD;
            for p in s.pending {
                assert!(p.queue.get() >= queue && p.queue.get() <= QUEUE_SHARED);
                queue = p.queue.get();
                let [a, b, c, d, ..] = p.siginfo;
                assert!((1..=64).contains(&u32::from_le_bytes([a, b, c, d])));
            }
        }
        Record::Timers(t) => {
            assert_eq!(to_u64(t.posix.len()), u64::from(t.raw.posix_count.get()));
            let ids: Vec<u32> = t.posix.iter().map(|p| p.id.get()).collect();
            assert!(ids.windows(2).all(|w| matches!(w, [a, b] if a < b)));
        }
        Record::Process(p) => {
            assert_eq!(to_u64(p.groups.len()), u64::from(p.raw.group_count.get()));
            let g: Vec<u32> = p.groups.iter().map(|g| g.get()).collect();
            assert!(g.windows(2).all(|w| matches!(w, [a, b] if a <= b)));
            assert!(p.raw.rlimits.iter().all(|l| l.cur.get() <= l.max.get()));
            let oom = i32::from_le_bytes(p.raw.oom_score_adj.get().to_le_bytes());
            assert!((-1000..=1000).contains(&oom));
        }
        Record::VmaAttr(a) => {
            let v = a.attrs.get();
            assert!(v != 0 && v & !VMA_ATTR_KNOWN == 0);
        }
        _ => {}
    }
}

/// The order of §2.5 over the whole image, and the state lookups of [`Image`].
pub(super) fn check_state_order(img: &Image<'_>) {
    let (mut seen_vma, mut prev, mut part) = (false, None::<u16>, 0u8);
    let mut last_file: Option<(u16, u32)> = None;
    let mut files = 0u32;
    // Contents of each File, from the walk, to compare with `Image::files`.
    let mut contents: Vec<Vec<u8>> = Vec::new();
    let mut data_next: Option<u64> = None;
    let (mut signals, mut timers, mut process) = (None, None, None);
    for p in img.records() {
        let kind = p.header.kind.get();
        let state = matches!(
            kind,
            KIND_FILE | KIND_FILE_DATA | KIND_SIGNALS | KIND_TIMERS | KIND_PROCESS
        );
        if (KIND_FILE..=KIND_LAST).contains(&kind) {
            assert!(
                img.header().version_minor.get() >= 1,
                "a 1.1 kind in a 1.0 image"
            );
        }
        assert!(!(state && seen_vma), "state record after a Vma");
        match p.record {
            Record::File(f) => {
                assert_eq!(part, 0, "File after Signals, Timers or Process");
                let key = (f.role(), f.raw.fd.get());
                assert!(last_file.is_none_or(|l| l < key), "Files not sorted");
                last_file = Some(key);
                files += 1;
                contents.push(Vec::new());
                data_next = (f.raw.flags.get() & FILE_HAS_DATA != 0).then_some(0);
            }
            Record::FileData(d) => {
                assert!(matches!(prev, Some(KIND_FILE | KIND_FILE_DATA)));
                assert_eq!(Some(d.raw.offset.get()), data_next, "FileData offset");
                data_next = data_next.map(|n| n + u64::from(d.raw.len.get()));
                if let Some(c) = contents.last_mut() {
                    c.extend_from_slice(d.bytes);
                }
            }
            Record::Signals(s) => {
                assert!(part < 1);
                part = 1;
                signals = Some(s.raw as *const raw::Signals);
            }
            Record::Timers(t) => {
                assert!(part < 2);
                part = 2;
                timers = Some(t.raw as *const raw::Timers);
            }
            Record::Process(x) => {
                assert!(part < 3);
                part = 3;
                process = Some(x.raw as *const raw::Process);
            }
            Record::VmaAttr(_) => assert_eq!(prev, Some(KIND_VMA), "VmaAttr not after a Vma"),
            Record::Vma(_) => seen_vma = true,
            _ => {}
        }
        if !matches!(kind, KIND_FILE | KIND_FILE_DATA) {
            data_next = None;
        }
        prev = Some(kind);
    }
    assert!(files <= MAX_FILES);
    let got: Vec<Vec<u8>> = img
        .files()
        .map(|(_, c)| c.flat_map(|d| d.bytes.iter().copied()).collect())
        .collect();
    assert!(got == contents, "Image::files differs from the record walk");
    let ptr = |r: Option<&raw::Signals>| r.map(|x| x as *const raw::Signals);
    assert_eq!(ptr(img.signals().map(|s| s.raw)), signals, "Image::signals");
    let ptr = |r: Option<&raw::Timers>| r.map(|x| x as *const raw::Timers);
    assert_eq!(ptr(img.timers().map(|s| s.raw)), timers, "Image::timers");
    let ptr = |r: Option<&raw::Process>| r.map(|x| x as *const raw::Process);
    assert_eq!(ptr(img.process().map(|s| s.raw)), process, "Image::process");
}
