//! The record kinds of format 1.2 (FORMAT.md §21 to §24): written by the `Writer`, read back by
//! the `Image` lookups and the owned `repr`, byte-identical; and the reader's rules for each,
//! with the error and offset FORMAT.md names.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::as_conversions,
    clippy::arithmetic_side_effects
)]

use cr_format::raw::{self, *};
use cr_format::read::Image;
use cr_format::repr::ImageRepr;
use cr_format::write::Writer;
use cr_format::ErrorKind;
use zerocopy::FromZeros;

/// A watch and its path.
type Watch = (raw::InotifyWatch, Vec<u8>);

/// What goes into the test image between the Mm and the Tail.
struct Parts {
    minor: u16,
    inotify: Vec<(raw::Inotify, Vec<Watch>)>,
    locks: Vec<raw::Lock>,
    vdso: Option<Vec<u8>>,
}

fn inotify(fd: u32, dup_of: u32) -> raw::Inotify {
    raw::Inotify {
        fd: fd.into(),
        fd_flags: 1.into(),
        open_flags: 0o4000.into(),
        dup_of: dup_of.into(),
    }
}

fn watch(wd: u32, mask: u32) -> raw::InotifyWatch {
    let mut w = raw::InotifyWatch::new_zeroed();
    w.wd = wd.into();
    w.mask = mask.into();
    w.inode = 1234.into();
    (w.dev_major, w.dev_minor) = (8.into(), 1.into());
    w
}

fn lock(fd: u32, ltype: u16, mode: u16, start: u64, len: u64) -> raw::Lock {
    raw::Lock {
        fd: fd.into(),
        ltype: ltype.into(),
        mode: mode.into(),
        start: start.into(),
        len: len.into(),
    }
}

fn default_parts() -> Parts {
    Parts {
        minor: 2,
        inotify: vec![
            (
                inotify(3, NO_DUP),
                vec![
                    (watch(1, 0x100), b"/tmp".to_vec()),
                    (watch(2, 0x2), b"/etc/hosts".to_vec()),
                ],
            ),
            (inotify(4, 3), vec![]),
        ],
        locks: vec![
            lock(5, LOCK_POSIX, LOCK_WRITE, 0, 10),
            lock(5, LOCK_FLOCK, LOCK_READ, 0, 0),
            lock(6, LOCK_OFD, LOCK_READ, 100, 0),
        ],
        vdso: Some((0..8192u32).map(|i| (i * 7) as u8).collect()),
    }
}

/// Writes an image: a File for fds 5 and 6, the parts, an anon Vma, the vDSO Vma.
fn write(p: &Parts) -> cr_format::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    let mut h = raw::Header::new_zeroed();
    h.magic = MAGIC;
    h.version_major = VERSION_MAJOR.into();
    h.version_minor = p.minor.into();
    h.arch = ARCH_X86_64.into();
    h.page_size = 4096.into();
    h.crid = 1.into();
    w.header(&h)?;
    let mut t = raw::Task::new_zeroed();
    t.pid = 42.into();
    t.state = b'S';
    w.task(&t)?;
    let mut r = raw::RegsX86_64::new_zeroed();
    r.arch = ARCH_X86_64.into();
    w.regs(&r, &[])?;
    w.mm(&raw::Mm::new_zeroed(), &[], b"/bin/true")?;
    for fd in [5, 6] {
        let mut f = raw::File::new_zeroed();
        f.fd = fd.into();
        f.ftype = FILE_REG.into();
        f.dup_of = DUP_NONE.into();
        w.file(&f, b"/tmp/locked", &[])?;
    }
    for (n, watches) in &p.inotify {
        w.inotify(n)?;
        for (x, path) in watches {
            w.inotify_watch(x, path)?;
        }
    }
    for l in &p.locks {
        w.lock(l)?;
    }
    let mut v = raw::Vma::new_zeroed();
    (v.start, v.end, v.kind) = (0x10000.into(), 0x11000.into(), VMA_ANON.into());
    w.vma(&v, &[])?;
    let mut v = raw::Vma::new_zeroed();
    (v.start, v.end, v.kind) = (0x7fff0000.into(), 0x7fff2000.into(), VMA_VDSO.into());
    v.prot = (PROT_READ | PROT_EXEC).into();
    w.vma(&v, &[])?;
    if let Some(b) = &p.vdso {
        w.vdso_data(b)?;
    }
    w.finish()?;
    Ok(out)
}

#[test]
fn written_records_read_back() {
    let p = default_parts();
    let bytes = write(&p).unwrap();
    let img = Image::parse(&bytes).unwrap();
    assert_eq!(img.header().version_minor.get(), 2);
    let ino: Vec<_> = img.inotify().collect();
    assert_eq!(ino.len(), 2);
    assert_eq!(*ino[0].0, p.inotify[0].0);
    let w: Vec<_> = ino[0].1.clone().collect();
    assert_eq!(w.len(), 2);
    assert_eq!(
        (w[0].wd(), w[0].mask(), w[0].path),
        (1, 0x100, &b"/tmp"[..])
    );
    assert_eq!((w[1].wd(), w[1].path), (2, &b"/etc/hosts"[..]));
    assert_eq!(ino[1].1.clone().count(), 0);
    let locks: Vec<raw::Lock> = img.locks().copied().collect();
    assert_eq!(locks, p.locks);
    let (vma, d) = img.vdso_data().unwrap();
    assert_eq!(vma.kind(), VMA_VDSO);
    assert_eq!(d.bytes, &p.vdso.as_ref().unwrap()[..]);
    // The owned form emits the same bytes.
    let r = ImageRepr::parse(&img);
    assert_eq!(r.to_vec().unwrap(), bytes);
}

#[test]
fn an_image_without_them_has_none() {
    let p = Parts {
        inotify: vec![],
        locks: vec![],
        vdso: None,
        ..default_parts()
    };
    let bytes = write(&p).unwrap();
    let img = Image::parse(&bytes).unwrap();
    assert_eq!(img.inotify().count(), 0);
    assert_eq!(img.locks().count(), 0);
    assert!(img.vdso_data().is_none());
}

/// The writer's error for the parts (it runs the reader's checks).
fn write_err(p: &Parts) -> ErrorKind {
    write(p).unwrap_err().kind
}

fn bad_field(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::BadField { field, .. } => field,
        k => panic!("not BadField: {k:?}"),
    }
}

#[test]
fn kinds_of_1_2_need_minor_2() {
    let p = Parts {
        minor: 1,
        ..default_parts()
    };
    assert!(matches!(write_err(&p), ErrorKind::OutOfOrder { .. }));
}

#[test]
fn inotify_rules() {
    let mut p = default_parts();
    p.inotify[1].0.fd = 3.into();
    assert_eq!(bad_field(write_err(&p)), "fd");
    let mut p = default_parts();
    p.inotify[0].0.fd_flags = 2.into();
    assert_eq!(bad_field(write_err(&p)), "fd_flags");
    let mut p = default_parts();
    p.inotify[1].0.dup_of = 4.into();
    assert_eq!(bad_field(write_err(&p)), "dup_of");
    // A dup has no watches.
    let mut p = default_parts();
    p.inotify[1].1 = vec![(watch(1, 1), b"/".to_vec())];
    assert!(matches!(write_err(&p), ErrorKind::OutOfOrder { .. }));
}

#[test]
fn watch_rules() {
    let mut p = default_parts();
    p.inotify[0].1[1].0.wd = 1.into();
    assert_eq!(bad_field(write_err(&p)), "wd");
    let mut p = default_parts();
    p.inotify[0].1[0].0.wd = 0.into();
    assert_eq!(bad_field(write_err(&p)), "wd");
    let mut p = default_parts();
    p.inotify[0].1[0].0.mask = 0.into();
    assert_eq!(bad_field(write_err(&p)), "mask");
    let mut p = default_parts();
    p.inotify[0].1[0].0._reserved0[5] = 1;
    assert_eq!(bad_field(write_err(&p)), "_reserved0");
    let mut p = default_parts();
    p.inotify[0].1[0].1 = vec![];
    assert_eq!(bad_field(write_err(&p)), "path_len");
    let mut p = default_parts();
    p.inotify[0].1[0].1 = b"/a\0b".to_vec();
    assert_eq!(bad_field(write_err(&p)), "path");
}

#[test]
fn lock_rules() {
    let cases: [(raw::Lock, &str); 7] = [
        (lock(1 << 31, LOCK_POSIX, LOCK_READ, 0, 0), "fd"),
        (lock(5, 0, LOCK_READ, 0, 0), "ltype"),
        (lock(5, 4, LOCK_READ, 0, 0), "ltype"),
        (lock(5, LOCK_OFD, 3, 0, 0), "mode"),
        (lock(5, LOCK_FLOCK, LOCK_READ, 1, 0), "start"),
        (lock(5, LOCK_FLOCK, LOCK_READ, 0, 1), "len"),
        (lock(5, LOCK_POSIX, LOCK_READ, 1 << 63, 0), "start"),
    ];
    for (l, field) in cases {
        let mut p = default_parts();
        p.locks.push(l);
        assert_eq!(bad_field(write_err(&p)), field, "{l:?}");
    }
    // The last byte locked may be 2^63-1, not beyond.
    let mut p = default_parts();
    p.locks
        .push(lock(5, LOCK_POSIX, LOCK_READ, 10, (1 << 63) - 10));
    write(&p).unwrap();
    p.locks
        .push(lock(5, LOCK_POSIX, LOCK_READ, 10, (1 << 63) - 9));
    assert_eq!(bad_field(write_err(&p)), "len");
}

#[test]
fn vdso_data_rules() {
    let mut p = default_parts();
    p.vdso = Some(vec![0; 4096]);
    assert_eq!(bad_field(write_err(&p)), "len");
    let mut p = default_parts();
    p.vdso = Some(vec![0; (1 << 20) + 4096]);
    assert!(matches!(write_err(&p), ErrorKind::LimitExceeded { .. }));
}
