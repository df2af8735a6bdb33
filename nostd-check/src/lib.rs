//! A `#![no_std]` artifact with no allocator that validates images with `cr-format`.
#![no_std]

use cr_format::read::{Image, Record};
use cr_format::write::{SliceSink, Writer};

#[cfg(not(feature = "panic-free"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

// The proof that no panic path is left (`--features panic-free`, built for a bare target by
// `run.sh`): the panic handler calls a function that exists nowhere, so the final link fails
// if any call to it survives optimisation.
#[cfg(feature = "panic-free")]
extern "C" {
    fn cr_format_panicked() -> !;
}

#[cfg(feature = "panic-free")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: never runs: the symbol is undefined, so a program that could call it does not
    // link.
    unsafe { cr_format_panicked() }
}

/// The prebuilt `core` of a hosted target references an unwinding personality; with
/// panic=abort it is never called.
#[cfg(not(target_os = "none"))]
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// Validates the image in `buf[..len]`; returns its record count, or -1 after writing the error
/// offset to `*err_offset`.
///
/// # Safety
/// `buf` must point to `len` readable bytes and `err_offset` to a writable u64.
#[no_mangle]
pub unsafe extern "C" fn cr_nostd_validate(
    buf: *const u8,
    len: usize,
    err_offset: *mut u64,
) -> i64 {
    // SAFETY: the caller promises `buf` points to `len` readable bytes.
    let data = unsafe { core::slice::from_raw_parts(buf, len) };
    match Image::parse(data) {
        Ok(img) => {
            // Counted by hand: `Iterator::count` keeps an overflow panic path.
            let mut n = 0i64;
            for r in img.records() {
                if !matches!(r.record, Record::Tail(_)) {
                    n = n.wrapping_add(1);
                }
            }
            n
        }
        Err(e) => {
            // SAFETY: the caller promises `err_offset` is writable.
            unsafe { *err_offset = e.offset };
            -1
        }
    }
}

/// Re-emits the image in `buf[..len]` into `out[..cap]` through the no-alloc writer, record by
/// record; returns the bytes written or -1.
///
/// # Safety
/// `buf` must point to `len` readable bytes, `out` to `cap` writable bytes, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn cr_nostd_copy(
    buf: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
) -> i64 {
    // SAFETY: see the function's contract.
    let (data, out) = unsafe {
        (
            core::slice::from_raw_parts(buf, len),
            core::slice::from_raw_parts_mut(out, cap),
        )
    };
    let Ok(img) = Image::parse(data) else {
        return -1;
    };
    let mut w = Writer::new(SliceSink::new(out));
    for r in img.records() {
        let ok = match r.record {
            Record::Header(h) => w.header(h),
            Record::Task(t) => w.task(t),
            Record::Regs(x) => w.regs(x.raw, x.xsave),
            Record::Mm(m) => w.mm(m.raw, m.auxv, m.exe),
            Record::Vma(v) => w.vma(v.raw, v.path),
            Record::Pages(p) => w.pages(p.runs, p.data.unwrap_or(&[])),
            Record::File(f) => w.file(f.raw, f.path, f.data),
            Record::FileData(d) => w.file_data(d.raw.offset.get(), d.bytes),
            Record::Signals(s) => w.signals(s.raw, s.pending),
            Record::Timers(t) => w.timers(t.raw, t.posix),
            Record::Process(p) => w.process(p.raw, p.groups),
            Record::VmaAttr(a) => w.vma_attr(a),
            Record::Inotify(n) => w.inotify(n),
            Record::InotifyWatch(x) => w.inotify_watch(x.raw, x.path),
            Record::Lock(l) => w.lock(l),
            Record::VdsoData(d) => w.vdso_data(d.bytes),
            Record::Unknown(u) => w.unknown(u.kind, u.payload),
            Record::Tail(_) => w.finish().map(|_| ()),
        };
        if ok.is_err() {
            return -1;
        }
    }
    w.into_inner().written() as i64
}
