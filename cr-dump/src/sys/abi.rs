//! Kernel ABI values and structs that cr-dump builds and passes into a task by pointer (through
//! an injected system call): the kernel's `sigaction`, `stack_t`, `prctl_mm_map`, and the x86-64
//! system call numbers. Each struct is `#[repr(C)]` with no padding, serialised with
//! zerocopy, and its size is asserted against the kernel's (linux-raw-sys).

use linux_raw_sys::general as k;
use zerocopy::{Immutable, IntoBytes};

/// x86-64 system call numbers used by injection.
pub mod nr {
    use linux_raw_sys::general as k;

    /// `close`.
    pub const CLOSE: u64 = k::__NR_close as u64;
    /// `mmap`.
    pub const MMAP: u64 = k::__NR_mmap as u64;
    /// `mprotect`.
    pub const MPROTECT: u64 = k::__NR_mprotect as u64;
    /// `munmap`.
    pub const MUNMAP: u64 = k::__NR_munmap as u64;
    /// `rt_sigaction`.
    pub const RT_SIGACTION: u64 = k::__NR_rt_sigaction as u64;
    /// `rt_sigprocmask`.
    pub const RT_SIGPROCMASK: u64 = k::__NR_rt_sigprocmask as u64;
    /// `getpid`.
    pub const GETPID: u64 = k::__NR_getpid as u64;
    /// `mremap`.
    pub const MREMAP: u64 = k::__NR_mremap as u64;
    /// `clone`.
    pub const CLONE: u64 = k::__NR_clone as u64;
    /// `wait4`.
    pub const WAIT4: u64 = k::__NR_wait4 as u64;
    /// `umask`.
    pub const UMASK: u64 = k::__NR_umask as u64;
    /// `sigaltstack`.
    pub const SIGALTSTACK: u64 = k::__NR_sigaltstack as u64;
    /// `personality`.
    pub const PERSONALITY: u64 = k::__NR_personality as u64;
    /// `prctl`.
    pub const PRCTL: u64 = k::__NR_prctl as u64;
    /// `set_tid_address`.
    pub const SET_TID_ADDRESS: u64 = k::__NR_set_tid_address as u64;
    /// `userfaultfd`.
    pub const USERFAULTFD: u64 = k::__NR_userfaultfd as u64;
    /// `rseq`.
    pub const RSEQ: u64 = k::__NR_rseq as u64;
    /// `close_range`.
    pub const CLOSE_RANGE: u64 = k::__NR_close_range as u64;
    /// `madvise`.
    pub const MADVISE: u64 = k::__NR_madvise as u64;
    /// `mlock2`.
    pub const MLOCK2: u64 = k::__NR_mlock2 as u64;
    /// `mincore`.
    pub const MINCORE: u64 = k::__NR_mincore as u64;
}

/// `MAP_FIXED_NOREPLACE`.
pub const MAP_FIXED_NOREPLACE: u64 = k::MAP_FIXED_NOREPLACE as u64;
/// `SS_DISABLE`: no alternate signal stack.
pub const SS_DISABLE: i32 = k::SS_DISABLE as i32;
/// `PR_SET_NAME`.
pub const PR_SET_NAME: u64 = linux_raw_sys::prctl::PR_SET_NAME as u64;
/// `PR_SET_MM`.
pub const PR_SET_MM: u64 = linux_raw_sys::prctl::PR_SET_MM as u64;
/// `PR_SET_MM_MAP`.
pub const PR_SET_MM_MAP: u64 = linux_raw_sys::prctl::PR_SET_MM_MAP as u64;
/// `rseq`'s `RSEQ_FLAG_UNREGISTER`.
pub const RSEQ_FLAG_UNREGISTER: u64 = 1;

/// The kernel-internal "restart this system call" results (`-ERESTART*` in `rax` of a task
/// stopped inside an interrupted call, with the call in `orig_rax`); never seen by user code.
pub const ERESTART: [i64; 4] = [
    512, // ERESTARTSYS
    513, // ERESTARTNOINTR
    514, // ERESTARTNOHAND
    516, // ERESTART_RESTARTBLOCK
];

/// Whether registers with `rax` and `orig_rax` are those of a task stopped inside a system
/// call that the kernel will restart when it resumes.
pub fn interrupted_syscall(rax: u64, orig_rax: u64) -> bool {
    (orig_rax as i64) >= 0 && ERESTART.contains(&(rax as i64).wrapping_neg())
}

/// The kernel's `struct sigaction` for `rt_sigaction` on x86-64 (not libc's): handler, flags,
/// restorer, then the mask (8 bytes: the `sigsetsize` argument is 8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, Immutable)]
#[repr(C)]
pub struct KernelSigaction {
    /// `sa_handler`: an address, or `SIG_DFL` (0) / `SIG_IGN` (1).
    pub handler: u64,
    /// `sa_flags` (`SA_*`).
    pub flags: u64,
    /// `sa_restorer`.
    pub restorer: u64,
    /// `sa_mask`.
    pub mask: u64,
}
const _: () =
    assert!(std::mem::size_of::<KernelSigaction>() == std::mem::size_of::<k::kernel_sigaction>());

/// `SIG_IGN` as a handler.
pub const SIG_IGN: u64 = 1;
/// `SIG_DFL` as a handler.
pub const SIG_DFL: u64 = 0;

/// `stack_t`, the argument of `sigaltstack`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, Immutable)]
#[repr(C)]
pub struct StackT {
    /// `ss_sp`.
    pub sp: u64,
    /// `ss_flags` (`SS_DISABLE`, ...).
    pub flags: i32,
    /// The padding the kernel's layout has before `ss_size`.
    pub _pad: u32,
    /// `ss_size`.
    pub size: u64,
}
const _: () = assert!(std::mem::size_of::<StackT>() == std::mem::size_of::<k::sigaltstack>());

/// `struct prctl_mm_map` for `prctl(PR_SET_MM, PR_SET_MM_MAP)`, with the `auxv` pointer as an
/// address in the target task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, Immutable)]
#[repr(C)]
pub struct PrctlMmMap {
    /// `start_code`.
    pub start_code: u64,
    /// `end_code`.
    pub end_code: u64,
    /// `start_data`.
    pub start_data: u64,
    /// `end_data`.
    pub end_data: u64,
    /// `start_brk`.
    pub start_brk: u64,
    /// `brk`.
    pub brk: u64,
    /// `start_stack`.
    pub start_stack: u64,
    /// `arg_start`.
    pub arg_start: u64,
    /// `arg_end`.
    pub arg_end: u64,
    /// `env_start`.
    pub env_start: u64,
    /// `env_end`.
    pub env_end: u64,
    /// `auxv`: address of the auxiliary vector in the task.
    pub auxv: u64,
    /// `auxv_size` in bytes.
    pub auxv_size: u32,
    /// `exe_fd`: descriptor of the executable in the task, or `u32::MAX` to keep it.
    pub exe_fd: u32,
}
const _: () = assert!(
    std::mem::size_of::<PrctlMmMap>() == std::mem::size_of::<linux_raw_sys::prctl::prctl_mm_map>()
);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn restart_results() {
        for e in ERESTART {
            assert!(interrupted_syscall(e.wrapping_neg() as u64, 0));
        }
        // Not in a system call, or a plain error.
        assert!(!interrupted_syscall(512u64.wrapping_neg(), u64::MAX));
        assert!(!interrupted_syscall(4u64.wrapping_neg(), 0));
        assert!(!interrupted_syscall(i64::MIN as u64, 0));
    }

    #[test]
    fn struct_bytes() {
        let a = KernelSigaction {
            handler: SIG_IGN,
            ..KernelSigaction::default()
        };
        let mut want = vec![0u8; 32];
        want[0] = 1;
        assert_eq!(a.as_bytes(), want);
        let ss = StackT {
            flags: SS_DISABLE,
            ..StackT::default()
        };
        assert_eq!(ss.as_bytes()[8..12], 2i32.to_le_bytes());
        assert_eq!(std::mem::offset_of!(PrctlMmMap, auxv_size), 96);
    }
}
