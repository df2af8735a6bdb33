//! System calls and kernel structs for the task's signals, timers, limits, credentials and
//! per-process attributes (issue 16): the requests cr-dump makes itself on a task
//! (`PTRACE_PEEKSIGINFO`, `PTRACE_[GS]ETSIGMASK`, `prlimit`, `get_robust_list`), and the structs
//! and system call numbers of the calls it injects (`getitimer`, `timer_gettime`,
//! `timer_create`, `capset`, ...).

use super::check;
use linux_raw_sys::general as k;
use std::io;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// x86-64 system call numbers of the injected calls of this module's users.
pub mod nr {
    use linux_raw_sys::general as k;

    /// `getitimer`.
    pub const GETITIMER: u64 = k::__NR_getitimer as u64;
    /// `setitimer`.
    pub const SETITIMER: u64 = k::__NR_setitimer as u64;
    /// `timer_create`.
    pub const TIMER_CREATE: u64 = k::__NR_timer_create as u64;
    /// `timer_gettime`.
    pub const TIMER_GETTIME: u64 = k::__NR_timer_gettime as u64;
    /// `timer_settime`.
    pub const TIMER_SETTIME: u64 = k::__NR_timer_settime as u64;
    /// `timer_getoverrun`.
    pub const TIMER_GETOVERRUN: u64 = k::__NR_timer_getoverrun as u64;
    /// `rt_sigqueueinfo`.
    pub const RT_SIGQUEUEINFO: u64 = k::__NR_rt_sigqueueinfo as u64;
    /// `rt_tgsigqueueinfo`.
    pub const RT_TGSIGQUEUEINFO: u64 = k::__NR_rt_tgsigqueueinfo as u64;
    /// `set_robust_list`.
    pub const SET_ROBUST_LIST: u64 = k::__NR_set_robust_list as u64;
    /// `setgroups`.
    pub const SETGROUPS: u64 = k::__NR_setgroups as u64;
    /// `setresuid`.
    pub const SETRESUID: u64 = k::__NR_setresuid as u64;
    /// `setresgid`.
    pub const SETRESGID: u64 = k::__NR_setresgid as u64;
    /// `setfsuid`.
    pub const SETFSUID: u64 = k::__NR_setfsuid as u64;
    /// `setfsgid`.
    pub const SETFSGID: u64 = k::__NR_setfsgid as u64;
    /// `capset`.
    pub const CAPSET: u64 = k::__NR_capset as u64;
}

/// `prctl` options used on the task's attributes.
pub mod pr {
    use linux_raw_sys::prctl as p;

    /// `PR_SET_PDEATHSIG`.
    pub const SET_PDEATHSIG: u64 = p::PR_SET_PDEATHSIG as u64;
    /// `PR_GET_PDEATHSIG`.
    pub const GET_PDEATHSIG: u64 = p::PR_GET_PDEATHSIG as u64;
    /// `PR_GET_DUMPABLE`.
    pub const GET_DUMPABLE: u64 = p::PR_GET_DUMPABLE as u64;
    /// `PR_SET_DUMPABLE`.
    pub const SET_DUMPABLE: u64 = p::PR_SET_DUMPABLE as u64;
    /// `PR_GET_CHILD_SUBREAPER`.
    pub const GET_CHILD_SUBREAPER: u64 = p::PR_GET_CHILD_SUBREAPER as u64;
    /// `PR_SET_CHILD_SUBREAPER`.
    pub const SET_CHILD_SUBREAPER: u64 = p::PR_SET_CHILD_SUBREAPER as u64;
    /// `PR_SET_NO_NEW_PRIVS`.
    pub const SET_NO_NEW_PRIVS: u64 = p::PR_SET_NO_NEW_PRIVS as u64;
    /// `PR_SET_THP_DISABLE`.
    pub const SET_THP_DISABLE: u64 = p::PR_SET_THP_DISABLE as u64;
    /// `PR_SET_TIMERSLACK`.
    pub const SET_TIMERSLACK: u64 = p::PR_SET_TIMERSLACK as u64;
    /// `PR_GET_SECUREBITS`.
    pub const GET_SECUREBITS: u64 = p::PR_GET_SECUREBITS as u64;
    /// `PR_SET_SECUREBITS`.
    pub const SET_SECUREBITS: u64 = p::PR_SET_SECUREBITS as u64;
    /// `PR_SET_KEEPCAPS`.
    pub const SET_KEEPCAPS: u64 = p::PR_SET_KEEPCAPS as u64;
    /// `PR_GET_TID_ADDRESS`.
    pub const GET_TID_ADDRESS: u64 = p::PR_GET_TID_ADDRESS as u64;
    /// `PR_CAPBSET_DROP`.
    pub const CAPBSET_DROP: u64 = p::PR_CAPBSET_DROP as u64;
    /// `PR_CAP_AMBIENT`.
    pub const CAP_AMBIENT: u64 = p::PR_CAP_AMBIENT as u64;
    /// `PR_CAP_AMBIENT_RAISE`.
    pub const CAP_AMBIENT_RAISE: u64 = p::PR_CAP_AMBIENT_RAISE as u64;
    /// `PR_TIMER_CREATE_RESTORE_IDS` (Linux 6.15): `timer_create` takes the id to create from
    /// its `timer_t` argument.
    pub const TIMER_CREATE_RESTORE_IDS: u64 = p::PR_TIMER_CREATE_RESTORE_IDS as u64;
    /// `PR_TIMER_CREATE_RESTORE_IDS_ON`.
    pub const TIMER_CREATE_RESTORE_IDS_ON: u64 = p::PR_TIMER_CREATE_RESTORE_IDS_ON as u64;
    /// `PR_TIMER_CREATE_RESTORE_IDS_OFF`.
    pub const TIMER_CREATE_RESTORE_IDS_OFF: u64 = p::PR_TIMER_CREATE_RESTORE_IDS_OFF as u64;
    /// `rseq`'s signature register flags: 0 registers.
    pub const RSEQ_REGISTER: u64 = 0;
}

/// `SECBIT_KEEP_CAPS`.
pub const SECBIT_KEEP_CAPS: u32 = 1 << 4;
/// `SECBIT_KEEP_CAPS_LOCKED`.
pub const SECBIT_KEEP_CAPS_LOCKED: u32 = 1 << 5;
/// `SECBIT_NO_CAP_AMBIENT_RAISE`.
pub const SECBIT_NO_CAP_AMBIENT_RAISE: u32 = 1 << 6;
/// `_LINUX_CAPABILITY_VERSION_3`.
pub const CAP_VERSION_3: u32 = 0x2008_0522;
/// `SIGEV_THREAD_ID`.
pub const SIGEV_THREAD_ID: u32 = 4;
/// `PTRACE_PEEKSIGINFO_SHARED`: peek the thread group's queue.
const PEEKSIGINFO_SHARED: u32 = 1;

/// `struct itimerval` (`getitimer`, `setitimer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct Itimerval {
    /// `it_interval`: seconds, microseconds.
    pub interval: [i64; 2],
    /// `it_value`: seconds, microseconds.
    pub value: [i64; 2],
}
const _: () = assert!(std::mem::size_of::<Itimerval>() == std::mem::size_of::<k::itimerval>());

/// `struct itimerspec` (`timer_gettime`, `timer_settime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct Itimerspec {
    /// `it_interval`: seconds, nanoseconds.
    pub interval: [i64; 2],
    /// `it_value`: seconds, nanoseconds.
    pub value: [i64; 2],
}
const _: () =
    assert!(std::mem::size_of::<Itimerspec>() == std::mem::size_of::<k::__kernel_itimerspec>());

/// The kernel's `struct sigevent` as `timer_create` reads it (64 bytes): value, signal,
/// notify, then the thread id of `SIGEV_THREAD_ID` (the rest of the union is zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct Sigevent {
    /// `sigev_value`.
    pub value: u64,
    /// `sigev_signo`.
    pub signo: i32,
    /// `sigev_notify`.
    pub notify: i32,
    /// `sigev_notify_thread_id`, then padding.
    pub tid: [i32; 12],
}
const _: () = assert!(std::mem::size_of::<Sigevent>() == std::mem::size_of::<k::sigevent>());

/// `struct __user_cap_header_struct`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct CapHeader {
    /// `version`.
    pub version: u32,
    /// `pid` (0: the calling thread).
    pub pid: i32,
}

/// `struct __user_cap_data_struct` twice (version 3: the low and high 32 bits of each set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct CapData {
    /// `effective`, `permitted`, `inheritable` for capabilities 0..32, then 32..64.
    pub sets: [[u32; 3]; 2],
}

impl CapData {
    /// The three 64-bit sets.
    pub fn new(effective: u64, permitted: u64, inheritable: u64) -> CapData {
        let half = |v: u64, hi: bool| if hi { (v >> 32) as u32 } else { v as u32 };
        let mut d = CapData::default();
        for (i, s) in d.sets.iter_mut().enumerate() {
            *s = [
                half(effective, i == 1),
                half(permitted, i == 1),
                half(inheritable, i == 1),
            ];
        }
        d
    }
}

/// The siginfos queued for the ptrace-stopped task `pid`: its own queue, or the thread
/// group's (`shared`), in queue order (`PTRACE_PEEKSIGINFO`).
pub fn peek_siginfo(pid: i32, shared: bool) -> io::Result<Vec<[u8; 128]>> {
    #[repr(C)]
    struct Args {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let mut buf = [[0u8; 128]; BATCH];
        let args = Args {
            off: out.len() as u64,
            flags: if shared { PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        // SAFETY: `addr` points to a valid ptrace_peeksiginfo_args; the kernel writes at most
        // `nr` siginfos of 128 bytes into `buf`, which holds exactly that many.
        let r = unsafe {
            libc::ptrace(
                linux_raw_sys::ptrace::PTRACE_PEEKSIGINFO as libc::c_uint,
                pid,
                (&args as *const Args).cast::<libc::c_void>(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
            )
        };
        let n = usize::try_from(check(r)?).unwrap_or(0).min(BATCH);
        out.extend_from_slice(&buf[..n]);
        if n < BATCH || out.len() > 1 << 16 {
            return Ok(out);
        }
    }
}

/// `PTRACE_SETSIGMASK`: sets the blocked mask of the ptrace-stopped task `pid`.
pub fn set_sigmask(pid: i32, mask: u64) -> io::Result<()> {
    // SAFETY: `addr` is the size of the mask `data` points to (8 bytes, valid for the call);
    // the kernel only reads it.
    let r = unsafe {
        libc::ptrace(
            linux_raw_sys::ptrace::PTRACE_SETSIGMASK as libc::c_uint,
            pid,
            std::mem::size_of::<u64>() as *mut libc::c_void,
            (&mask as *const u64).cast::<libc::c_void>(),
        )
    };
    check(r).map(drop)
}

/// `PTRACE_GETSIGMASK`: the blocked mask of the ptrace-stopped task `pid`. Inside
/// `sigsuspend`, `ppoll` or `pselect` the task runs under the call's temporary mask and the
/// kernel keeps the real one aside until the call returns; this gives the real one (Linux
/// 5.1+), where `SigBlk` in `/proc/PID/status` shows the temporary one.
pub fn get_sigmask(pid: i32) -> io::Result<u64> {
    let mut m: u64 = 0;
    // SAFETY: `addr` is the size of the mask `data` points to (8 bytes of `m`, writable for
    // the call); the kernel writes exactly that many and keeps no pointer.
    let r = unsafe {
        libc::ptrace(
            linux_raw_sys::ptrace::PTRACE_GETSIGMASK as libc::c_uint,
            pid,
            std::mem::size_of::<u64>() as *mut libc::c_void,
            (&mut m as *mut u64).cast::<libc::c_void>(),
        )
    };
    check(r)?;
    Ok(m)
}

/// `prlimit(pid, resource, new, &old)`: sets limit `resource` of `pid` to `new` (soft, hard) if
/// given; the limit before.
pub fn prlimit(pid: i32, resource: u32, new: Option<(u64, u64)>) -> io::Result<(u64, u64)> {
    let n = new.map(|(cur, max)| libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    });
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let np = n
        .as_ref()
        .map_or(std::ptr::null(), |r| r as *const libc::rlimit64);
    // SAFETY: `np` is null or points to a valid rlimit64 read by the kernel; `old` is valid
    // and writable for the call.
    let r = unsafe { libc::prlimit64(pid, resource as libc::__rlimit_resource_t, np, &mut old) };
    check(r.into())?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// This process's securebits (`PR_GET_SECUREBITS`).
pub fn own_securebits() -> io::Result<u32> {
    // SAFETY: PR_GET_SECUREBITS takes no pointers; the other arguments are ignored.
    let r = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    check(r.into()).map(|v| v as u32)
}

/// Whether this kernel has `PR_TIMER_CREATE_RESTORE_IDS` (asked with its `GET` form, which
/// changes nothing).
pub fn timer_restore_ids() -> bool {
    let (opt, get) = (
        linux_raw_sys::prctl::PR_TIMER_CREATE_RESTORE_IDS,
        linux_raw_sys::prctl::PR_TIMER_CREATE_RESTORE_IDS_GET,
    );
    // SAFETY: this prctl takes integers only; the GET form reads a flag of this thread.
    let r = unsafe { libc::prctl(opt as libc::c_int, get as libc::c_ulong, 0, 0, 0) };
    r >= 0
}

/// `get_robust_list(pid)`: the robust futex list head and its length.
pub fn get_robust_list(pid: i32) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: both pointers are valid and writable for the call; the kernel writes one pointer
    // and one size_t.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            pid,
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    };
    check(r)?;
    Ok((head, len as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_data_halves() {
        let d = CapData::new(1 << 33 | 1, 2, 0);
        assert_eq!(d.sets, [[1, 2, 0], [2, 0, 0]]);
    }

    #[test]
    fn own_limits_and_list() {
        let me = std::process::id() as i32;
        let (cur, max) = prlimit(me, libc::RLIMIT_NOFILE, None).expect("prlimit");
        assert!(cur <= max);
        get_robust_list(me).expect("get_robust_list");
    }
}
