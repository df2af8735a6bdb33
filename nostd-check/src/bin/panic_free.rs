//! A bare-metal program (`x86_64-unknown-none`, no OS, no allocator) that validates and
//! re-emits an image it cannot know at build time through cr-format, built with overflow checks
//! on and the `panic-free` feature, whose panic handler calls an undefined symbol: it links only
//! if no panic path of cr-format's reader and writer survives optimisation (`run.sh`).
#![no_std]
#![no_main]

use core::hint::black_box;

/// The image: bytes the optimiser knows nothing about.
static mut INPUT: [u8; 65536] = [0; 65536];
static mut OUTPUT: [u8; 65536] = [0; 65536];

/// The entry point.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    let len = black_box(INPUT_LEN.load(core::sync::atomic::Ordering::Relaxed));
    let input = black_box(core::ptr::addr_of!(INPUT).cast::<u8>());
    let output = black_box(core::ptr::addr_of_mut!(OUTPUT).cast::<u8>());
    let mut off = 0u64;
    // SAFETY: both buffers are 65536 bytes, static, and do not overlap; `len` is clamped.
    let n = unsafe {
        let len = len.min(65536);
        cr_nostd_check::cr_nostd_validate(input, len, &mut off)
            .wrapping_add(cr_nostd_check::cr_nostd_copy(input, len, output, 65536))
    };
    black_box((n, off));
    loop {
        core::hint::spin_loop();
    }
}

static INPUT_LEN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
