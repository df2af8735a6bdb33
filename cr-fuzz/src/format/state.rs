//! Properties of the state records of 1.1 and 1.2 (FORMAT.md §15..§24) in a validated image,
//! checked here independently of the validator: each view holds what its header promises and
//! follows its rules, the records come in the order of §2.5, and `Image::files`,
//! `Image::inotify`, `Image::locks`, `Image::vdso_data`, `Image::signals`, `Image::timers` and
//! `Image::process` give what the record walk gives.

use super::to_u64;
use cr_format::limits::{MAX_FILES, MAX_FILE_DATA, MAX_INOTIFY_WATCHES, MAX_LOCKS, MAX_PATH};
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
        Record::Inotify(n) => {
            assert!(n.fd.get() < 1 << 31);
            assert!(n.fd_flags.get() <= 1);
            let dup = n.dup_of.get();
            assert!(
                dup == NO_DUP || dup < n.fd.get(),
                "Inotify dup_of not below fd"
            );
        }
        Record::InotifyWatch(w) => {
            assert_eq!(to_u64(w.path.len()), u64::from(w.raw.path_len.get()));
            assert!(!w.path.is_empty() && w.path.len() <= MAX_PATH as usize);
            assert!(!w.path.contains(&0), "NUL in a watch path");
            assert!((1..1 << 31).contains(&w.wd()) && w.mask() != 0);
            assert_eq!(w.raw._reserved0, [0; 6]);
        }
        Record::Lock(l) => {
            let (ltype, start, len) = (l.ltype.get(), l.start.get(), l.len.get());
            assert!((LOCK_POSIX..=LOCK_OFD).contains(&ltype));
            assert!((LOCK_READ..=LOCK_WRITE).contains(&l.mode.get()));
            assert!(ltype != LOCK_FLOCK || (start, len) == (0, 0));
            // The last byte locked is an off_t.
            let last = u128::from(start) + u128::from(len.max(1)) - 1;
            assert!(last <= i64::MAX as u128, "lock beyond 2^63-1");
        }
        Record::VdsoData(d) => {
            assert_eq!(to_u64(d.bytes.len()), u64::from(d.raw.len.get()));
            assert_eq!(d.raw._reserved0.get(), 0);
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
    // The 1.2 records from the walk, to compare with the Image lookups.
    let (mut ino, mut locks, mut vdso) = (Vec::new(), Vec::new(), None);
    let (mut last_vma, mut watches, mut nlocks) = (None, 0u32, 0u32);
    for p in img.records() {
        let kind = p.header.kind.get();
        let state = matches!(
            kind,
            KIND_FILE
                | KIND_FILE_DATA
                | KIND_INOTIFY
                | KIND_INOTIFY_WATCH
                | KIND_LOCK
                | KIND_SIGNALS
                | KIND_TIMERS
                | KIND_PROCESS
        );
        if (KIND_FILE..=KIND_LAST).contains(&kind) {
            assert!(
                img.header().version_minor.get() >= 1,
                "a 1.1 kind in a 1.0 image"
            );
        }
        if (KIND_INOTIFY..=KIND_LAST).contains(&kind) {
            assert!(
                img.header().version_minor.get() >= 2,
                "a 1.2 kind in a 1.0 or 1.1 image"
            );
        }
        assert!(!(state && seen_vma), "state record after a Vma");
        match p.record {
            Record::File(f) => {
                assert_eq!(
                    part, 0,
                    "File after Inotify, Lock, Signals, Timers or Process"
                );
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
            Record::Inotify(n) => {
                assert!(part <= 1, "Inotify after Lock, Signals, Timers or Process");
                part = 1;
                if let Some((last, _)) = ino.last() {
                    assert!(n.fd.get() > *last, "Inotify fds not increasing");
                }
                ino.push((n.fd.get(), Vec::new()));
            }
            Record::InotifyWatch(w) => {
                assert!(matches!(prev, Some(KIND_INOTIFY | KIND_INOTIFY_WATCH)));
                watches += 1;
                if let Some((_, ws)) = ino.last_mut() {
                    assert!(ws.last().is_none_or(|&l| l < w.wd()), "wds not increasing");
                    ws.push(w.wd());
                }
            }
            Record::Lock(l) => {
                assert!(part <= 2, "Lock after Signals, Timers or Process");
                part = 2;
                nlocks += 1;
                locks.push(*l);
            }
            Record::Signals(s) => {
                assert!(part < 3);
                part = 3;
                signals = Some(s.raw as *const raw::Signals);
            }
            Record::Timers(t) => {
                assert!(part < 4);
                part = 4;
                timers = Some(t.raw as *const raw::Timers);
            }
            Record::Process(x) => {
                assert!(part < 5);
                part = 5;
                process = Some(x.raw as *const raw::Process);
            }
            Record::VmaAttr(_) => assert_eq!(prev, Some(KIND_VMA), "VmaAttr not after a Vma"),
            Record::Vma(v) => {
                seen_vma = true;
                last_vma = Some(v);
            }
            Record::VdsoData(d) => {
                assert!(matches!(prev, Some(KIND_VMA | KIND_VMA_ATTR)));
                assert!(vdso.is_none(), "two VdsoData");
                let v = last_vma.expect("VdsoData without a Vma");
                assert_eq!(v.kind(), VMA_VDSO, "VdsoData after a Vma not the vDSO's");
                assert_eq!(u64::from(d.raw.len.get()), v.end() - v.start());
                vdso = Some((v.start(), d.bytes.as_ptr()));
            }
            _ => {}
        }
        if !matches!(kind, KIND_FILE | KIND_FILE_DATA) {
            data_next = None;
        }
        prev = Some(kind);
    }
    assert!(files <= MAX_FILES);
    assert!(watches <= MAX_INOTIFY_WATCHES && nlocks <= MAX_LOCKS);
    let got: Vec<(u32, Vec<u32>)> = img
        .inotify()
        .map(|(n, ws)| (n.fd.get(), ws.map(|w| w.wd()).collect()))
        .collect();
    assert!(got == ino, "Image::inotify differs from the record walk");
    let got: Vec<raw::Lock> = img.locks().copied().collect();
    assert!(got == locks, "Image::locks differs from the record walk");
    let got = img.vdso_data().map(|(v, d)| (v.start(), d.bytes.as_ptr()));
    assert_eq!(got, vdso, "Image::vdso_data");
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
