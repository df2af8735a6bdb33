//! Everything that talks to the kernel: system calls, ptrace, `/proc`, and the kernel's ABI
//! structs. This is the only module with `unsafe` (the crate denies `unsafe_code` everywhere
//! else); every `unsafe` block carries a `// SAFETY:` argument, and every function here is a
//! safe wrapper.
//!
//! Where things are:
//!
//! | file | what |
//! |---|---|
//! | [`ptrace`] | [`Tracee`], the one ptrace handle (seize, interrupt, wait for a [`Stop`], step, continue, registers, detach): the raw requests are private to it; `waitpid` |
//! | [`inject`] | **how a system call is injected into a stopped task**: [`inject::Injector`], used by the twin, dirty tracking and restore |
//! | [`guard`] | the guard process that outlives cr-dump and repairs a task it left mid-injection: spawn, messages |
//! | [`abi`] | kernel structs built for injected calls (`sigaction`, `stack_t`, `prctl_mm_map`), system call numbers, `-ERESTART*` |
//! | [`uffd`] | userfaultfd ioctls (`uffdio_api`, `uffdio_register`, `uffdio_writeprotect`) |
//! | [`pagemap`] | the `PAGEMAP_SCAN` ioctl (`pm_scan_arg`, `page_region`) |
//! | [`mem`] | [`MapBuf`] (page buffers), [`FileMap`] (read-only file maps), [`FileRange`] (a range just written, read back), [`process_vm_readv`], [`process_vm_writev`] |
//! | [`pipe`] | the checkpoint's splice path: `pipe2`/`vmsplice` numbers (injected into a twin), `F_SETPIPE_SZ`, `splice` to a file at an offset |
//! | [`process`] | `kill`, the forks (the restore's traced child, the self-checkpoint helper), pidfds, `_exit` |
//! | [`fs`] | opening by name (no symlink, no FIFO), owned directories, `flock` with a time limit, naming an `O_TMPFILE` file, removing a temporary file on a signal |
//! | [`fdinfo`] | `/proc/PID/fdinfo/N` parser (offset, flags, locks) |
//! | [`fdobj`] | pipes (capacity, unread bytes by `tee`), eventfd, timerfd (`TFD_IOC_SET_TICKS`), signalfd, epoll, memfd (seals) |
//! | [`sock`] | what a socket is (`SO_DOMAIN`, names, peer), `sock_diag` netlink (backlog, Unix peer), socket/bind/listen/connect/accept, [`sock::as_fs_user`] |
//! | [`files`] | `kcmp` of open files, `F_DUPFD_CLOEXEC` above a number, terminals, raw `open` flags, `lseek` |
//! | [`procfs`] | `/proc/PID/*` parsers |
//! | [`taskstate`] | signals, timers, limits, credentials: `PTRACE_PEEKSIGINFO`, `PTRACE_[GS]ETSIGMASK`, `prlimit`, `get_robust_list`, and the structs of the injected calls |
//!
//! Kernel structs come from `linux-raw-sys` where it has them; the few built here are
//! `#[repr(C)]` with their size asserted against the kernel's.

pub mod abi;
pub mod fdinfo;
pub mod fdobj;
pub mod files;
pub mod fs;
pub mod guard;
pub mod inject;
pub mod mem;
pub mod pagemap;
pub mod pipe;
pub mod process;
pub mod procfs;
pub mod ptrace;
pub mod sock;
pub mod taskstate;
pub mod uffd;

pub use fs::{
    create_unlinked, flock_exclusive, flock_exclusive_timeout, link_tmpfile, open_owned_dir,
    open_regular, rename_noreplace, seek_data, seek_hole, Access, RemoveOnSignal,
};
pub use mem::{process_vm_readv, process_vm_writev, FileMap, FileRange, MapBuf, IOV_MAX};
pub use pagemap::{
    pagemap_scan, PageRegion, ScanQuery, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED,
    PAGE_IS_WPALLOWED, PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING,
};
pub use process::{
    catch_interrupts, check_interrupt, dup_to, exit_now, fork_single_threaded, fork_traced_child,
    gettid, interrupted, kill, nice, pidfd_getfd, pidfd_open, set_nice, signal_name,
    INTERRUPT_SIGNALS,
};
pub use ptrace::{waitpid, Stop, Tracee, WaitStatus, NT_PRFPREG, NT_PRSTATUS, NT_X86_XSTATE};
pub use uffd::{
    poll_readable, uffd_api, uffd_copy, uffd_read, uffd_register_missing, uffd_register_wp,
    uffd_wake, uffd_writeprotect, uffd_zeropage, UffdEvent, UFFD_FEATURE_EVENT_FORK,
    UFFD_FEATURE_EVENT_REMAP, UFFD_FEATURE_EVENT_REMOVE, UFFD_FEATURE_EVENT_UNMAP,
    UFFD_FEATURE_WP_ASYNC,
};

use std::io;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf takes only an integer.
    let r = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(r).unwrap_or(4096).max(4096)
}

/// Clock ticks per second, the unit of `/proc/PID/stat`'s CPU times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf takes only an integer.
    let r = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(r).unwrap_or(100).max(1)
}

/// Ignores `SIGXFSZ`, so that a write past `RLIMIT_FSIZE` fails with `EFBIG` instead of killing
/// the dumper (which must then clean up: detach the target, remove its temporary file).
pub fn ignore_sigxfsz() {
    // SAFETY: installing SIG_IGN for SIGXFSZ runs no code in a signal context.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// The size and offset (in the standard, non-compacted XSAVE format) of user state component
/// `i` (2..=63), from CPUID leaf 0xD sub-leaf `i`; `None` when the CPU reports none.
pub fn xstate_component(i: u32) -> Option<(u32, u32)> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID exists on every x86-64 CPU; leaf 0xD is defined when XSAVE is, and
        // an undefined sub-leaf reads as zeros. It touches no memory. (Safe to call in newer
        // Rust versions, unsafe in the minimum one.)
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid_count(0xd, i) };
        (xcr0().is_some() && r.eax != 0).then_some((r.eax, r.ebx))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = i;
        None
    }
}

/// XCR0, the state components the OS enabled for XSAVE (`xgetbv(0)`), or `None` if the CPU or
/// the OS has no XSAVE.
pub fn xcr0() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("xsave") {
            return None;
        }
        let (lo, hi): (u32, u32);
        // SAFETY: xgetbv with ecx = 0 reads XCR0; it is valid when CPUID reports OSXSAVE, which
        // the std feature detection for "xsave" checks (it requires the OS support bit). It
        // touches no memory and only writes eax and edx.
        unsafe {
            std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                options(nomem, nostack, preserves_flags));
        }
        Some(u64::from(lo) | (u64::from(hi) << 32))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}
