//! Names for the numbers an image holds (flags, kinds, signals, limits), one table each, used
//! both ways: `show` and `show --json` print names, `encode` reads them back (names, numbers, or
//! both mixed). A value with bits or a kind no table names is printed as a number, so every
//! value survives a round trip.

use cr_format::raw;
use linux_raw_sys::general as k;

/// One named value of a flags word: the bits under `mask` equal `value`. A single flag has
/// `mask == value`; a field inside the word (the `O_ACCMODE` access mode) has a wider mask.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    /// The bits this name covers.
    pub mask: u64,
    /// Their value when the name applies.
    pub value: u64,
    /// The name.
    pub name: &'static str,
}

const fn f(bit: u32, name: &'static str) -> Flag {
    Flag {
        mask: bit as u64,
        value: bit as u64,
        name,
    }
}

/// `open_flags` of a File: the kernel's x86-64 values as `/proc/PID/fdinfo` shows them (glibc's
/// `O_LARGEFILE` is 0, the kernel's is not, hence linux-raw-sys rather than libc).
pub const OPEN_FLAGS: &[Flag] = &[
    Flag {
        mask: 3,
        value: k::O_RDONLY as u64,
        name: "O_RDONLY",
    },
    Flag {
        mask: 3,
        value: k::O_WRONLY as u64,
        name: "O_WRONLY",
    },
    Flag {
        mask: 3,
        value: k::O_RDWR as u64,
        name: "O_RDWR",
    },
    f(k::O_CREAT, "O_CREAT"),
    f(k::O_EXCL, "O_EXCL"),
    f(k::O_NOCTTY, "O_NOCTTY"),
    f(k::O_TRUNC, "O_TRUNC"),
    f(k::O_APPEND, "O_APPEND"),
    f(k::O_NONBLOCK, "O_NONBLOCK"),
    f(k::O_DSYNC, "O_DSYNC"),
    f(k::FASYNC, "O_ASYNC"),
    f(k::O_DIRECT, "O_DIRECT"),
    f(k::O_LARGEFILE, "O_LARGEFILE"),
    f(k::O_DIRECTORY, "O_DIRECTORY"),
    f(k::O_NOFOLLOW, "O_NOFOLLOW"),
    f(k::O_NOATIME, "O_NOATIME"),
    f(k::O_CLOEXEC, "O_CLOEXEC"),
    // O_SYNC is __O_SYNC | O_DSYNC: the bit alone is named so that O_SYNC shows as both.
    f(k::__O_SYNC, "__O_SYNC"),
    f(k::O_PATH, "O_PATH"),
    f(k::__O_TMPFILE, "__O_TMPFILE"),
];

/// `fd_flags` of a File.
pub const FD_FLAGS: &[Flag] = &[f(k::FD_CLOEXEC, "FD_CLOEXEC")];

/// `sa_flags` of a signal disposition.
pub const SA_FLAGS: &[Flag] = &[
    f(k::SA_NOCLDSTOP, "SA_NOCLDSTOP"),
    f(k::SA_NOCLDWAIT, "SA_NOCLDWAIT"),
    f(k::SA_SIGINFO, "SA_SIGINFO"),
    f(k::SA_UNSUPPORTED, "SA_UNSUPPORTED"),
    f(k::SA_EXPOSE_TAGBITS, "SA_EXPOSE_TAGBITS"),
    f(k::SA_RESTORER, "SA_RESTORER"),
    f(k::SA_ONSTACK, "SA_ONSTACK"),
    f(k::SA_RESTART, "SA_RESTART"),
    f(k::SA_NODEFER, "SA_NODEFER"),
    f(k::SA_RESETHAND, "SA_RESETHAND"),
];

/// `ss_flags` of the alternate signal stack.
pub const SS_FLAGS: &[Flag] = &[
    f(k::SS_ONSTACK, "SS_ONSTACK"),
    f(k::SS_DISABLE, "SS_DISABLE"),
    f(k::SS_AUTODISARM, "SS_AUTODISARM"),
];

/// `flags` of a File.
pub const FILE_FLAGS: &[Flag] = &[
    f(raw::FILE_DELETED, "deleted"),
    f(raw::FILE_TTY, "tty"),
    f(raw::FILE_HAS_DATA, "has_data"),
];

/// `attr_flags` of the Process record.
pub const ATTR_FLAGS: &[Flag] = &[
    f(raw::ATTR_CHILD_SUBREAPER, "child_subreaper"),
    f(raw::ATTR_NO_NEW_PRIVS, "no_new_privs"),
    f(raw::ATTR_THP_DISABLE, "thp_disable"),
    f(raw::ATTR_MLOCK_FUTURE, "mlock_future"),
    f(raw::ATTR_MLOCK_ONFAULT, "mlock_onfault"),
];

/// `attrs` of a VmaAttr record.
pub const VMA_ATTRS: &[Flag] = &[
    f(raw::VMA_ATTR_DONTFORK, "dontfork"),
    f(raw::VMA_ATTR_DONTDUMP, "dontdump"),
    f(raw::VMA_ATTR_WIPEONFORK, "wipeonfork"),
    f(raw::VMA_ATTR_HUGEPAGE, "hugepage"),
    f(raw::VMA_ATTR_NOHUGEPAGE, "nohugepage"),
    f(raw::VMA_ATTR_MERGEABLE, "mergeable"),
    f(raw::VMA_ATTR_LOCKED, "locked"),
    f(raw::VMA_ATTR_LOCKONFAULT, "lockonfault"),
];

/// The event mask of an inotify watch (`IN_*`, as `/proc/PID/fdinfo` shows it).
pub const IN_FLAGS: &[Flag] = &[
    f(k::IN_ACCESS, "IN_ACCESS"),
    f(k::IN_MODIFY, "IN_MODIFY"),
    f(k::IN_ATTRIB, "IN_ATTRIB"),
    f(k::IN_CLOSE_WRITE, "IN_CLOSE_WRITE"),
    f(k::IN_CLOSE_NOWRITE, "IN_CLOSE_NOWRITE"),
    f(k::IN_OPEN, "IN_OPEN"),
    f(k::IN_MOVED_FROM, "IN_MOVED_FROM"),
    f(k::IN_MOVED_TO, "IN_MOVED_TO"),
    f(k::IN_CREATE, "IN_CREATE"),
    f(k::IN_DELETE, "IN_DELETE"),
    f(k::IN_DELETE_SELF, "IN_DELETE_SELF"),
    f(k::IN_MOVE_SELF, "IN_MOVE_SELF"),
    f(k::IN_UNMOUNT, "IN_UNMOUNT"),
    f(k::IN_Q_OVERFLOW, "IN_Q_OVERFLOW"),
    f(k::IN_IGNORED, "IN_IGNORED"),
    f(k::IN_ONLYDIR, "IN_ONLYDIR"),
    f(k::IN_DONT_FOLLOW, "IN_DONT_FOLLOW"),
    f(k::IN_EXCL_UNLINK, "IN_EXCL_UNLINK"),
    f(k::IN_MASK_CREATE, "IN_MASK_CREATE"),
    f(k::IN_MASK_ADD, "IN_MASK_ADD"),
    f(k::IN_ISDIR, "IN_ISDIR"),
    f(k::IN_ONESHOT, "IN_ONESHOT"),
];

/// `flags` of a Vma.
pub const VMA_FLAGS: &[Flag] = &[
    f(raw::VMA_SHARED, "shared"),
    f(raw::VMA_GROWSDOWN, "growsdown"),
];

/// `bits` as names joined by `|`, bits no name covers as one `0x…` term; `0` when empty.
pub fn flags(bits: u64, table: &[Flag]) -> String {
    let mut names = Vec::new();
    let mut covered = 0u64;
    for fl in table {
        if bits & fl.mask == fl.value && covered & fl.mask == 0 {
            names.push(fl.name.to_string());
            covered |= fl.mask;
        }
    }
    let rest = bits & !covered;
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    if names.is_empty() {
        return "0".into();
    }
    names.join("|")
}

/// The inverse of [`flags`]: terms joined by `|`, each a name of `table` or an integer (decimal or
/// `0x…`).
pub fn parse_flags(s: &str, table: &[Flag]) -> Result<u64, String> {
    let mut bits = 0u64;
    for term in s.split('|').map(str::trim) {
        bits |= match table.iter().find(|fl| fl.name == term) {
            Some(fl) => fl.value,
            None => parse_int(term).ok_or_else(|| format!("unknown flag {term:?}"))?,
        };
    }
    Ok(bits)
}

/// An unsigned integer written in decimal, as `0x…` or as `0o…`.
pub fn parse_int(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok();
    }
    if let Some(o) = s.strip_prefix("0o") {
        return u64::from_str_radix(o, 8).ok();
    }
    // Digits only: `str::parse` would also take a leading `+`.
    s.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| s.parse().ok())
        .flatten()
}

/// A table of kind names.
pub type Kinds = &'static [(u64, &'static str)];

/// The name of `n` in `table`, if it has one.
pub fn kind(n: u64, table: Kinds) -> Option<&'static str> {
    table.iter().find(|(v, _)| *v == n).map(|(_, s)| *s)
}

/// The name of `n`, or `n` itself in decimal.
pub fn kind_or_number(n: u64, table: Kinds) -> String {
    kind(n, table).map_or_else(|| n.to_string(), str::to_string)
}

/// The value a kind's name (or number) stands for.
pub fn parse_kind(s: &str, table: Kinds) -> Option<u64> {
    table
        .iter()
        .find(|(_, name)| *name == s)
        .map(|(v, _)| *v)
        .or_else(|| parse_int(s))
}

/// File types (`FILE_*`).
pub const FILE_TYPES: Kinds = &[
    (raw::FILE_UNSUPPORTED as u64, "unsupported"),
    (raw::FILE_REG as u64, "reg"),
    (raw::FILE_DIR as u64, "dir"),
    (raw::FILE_CHR as u64, "chr"),
    (raw::FILE_FIFO as u64, "fifo"),
    (raw::FILE_PIPE as u64, "pipe"),
    (raw::FILE_SOCKET as u64, "socket"),
    (raw::FILE_EVENTFD as u64, "eventfd"),
    (raw::FILE_TIMERFD as u64, "timerfd"),
    (raw::FILE_SIGNALFD as u64, "signalfd"),
    (raw::FILE_EPOLL as u64, "epoll"),
    (raw::FILE_MEMFD as u64, "memfd"),
];

/// File roles (`ROLE_*`).
pub const ROLES: Kinds = &[
    (raw::ROLE_FD as u64, "fd"),
    (raw::ROLE_CWD as u64, "cwd"),
    (raw::ROLE_ROOT as u64, "root"),
];

/// VMA kinds (`VMA_*`).
pub const VMA_KINDS: Kinds = &[
    (raw::VMA_ANON as u64, "anon"),
    (raw::VMA_FILE as u64, "file"),
    (raw::VMA_HEAP as u64, "heap"),
    (raw::VMA_STACK as u64, "stack"),
    (raw::VMA_VDSO as u64, "vdso"),
    (raw::VMA_VVAR as u64, "vvar"),
    (raw::VMA_VSYSCALL as u64, "vsyscall"),
];

/// Architectures (ELF `e_machine`).
pub const ARCHES: Kinds = &[(raw::ARCH_X86_64 as u64, "x86_64")];

/// Diff methods of an incremental image (`DIFF_*`).
pub const DIFF_METHODS: Kinds = &[
    (raw::DIFF_NONE as u64, "none"),
    (raw::DIFF_WRITE_TRACKING as u64, "write-tracking"),
    (raw::DIFF_CONTENT_COMPARE as u64, "content-compare"),
];

/// Pending-signal queues (`QUEUE_*`).
pub const QUEUES: Kinds = &[
    (raw::QUEUE_THREAD as u64, "thread"),
    (raw::QUEUE_SHARED as u64, "shared"),
];

/// Clock ids.
pub const CLOCKS: Kinds = &[
    (k::CLOCK_REALTIME as u64, "CLOCK_REALTIME"),
    (k::CLOCK_MONOTONIC as u64, "CLOCK_MONOTONIC"),
    (
        k::CLOCK_PROCESS_CPUTIME_ID as u64,
        "CLOCK_PROCESS_CPUTIME_ID",
    ),
    (k::CLOCK_THREAD_CPUTIME_ID as u64, "CLOCK_THREAD_CPUTIME_ID"),
    (k::CLOCK_MONOTONIC_RAW as u64, "CLOCK_MONOTONIC_RAW"),
    (k::CLOCK_REALTIME_COARSE as u64, "CLOCK_REALTIME_COARSE"),
    (k::CLOCK_MONOTONIC_COARSE as u64, "CLOCK_MONOTONIC_COARSE"),
    (k::CLOCK_BOOTTIME as u64, "CLOCK_BOOTTIME"),
    (k::CLOCK_REALTIME_ALARM as u64, "CLOCK_REALTIME_ALARM"),
    (k::CLOCK_BOOTTIME_ALARM as u64, "CLOCK_BOOTTIME_ALARM"),
    (k::CLOCK_TAI as u64, "CLOCK_TAI"),
];

/// `sigev_notify` values.
pub const SIGEV: Kinds = &[
    (k::SIGEV_SIGNAL as u64, "SIGEV_SIGNAL"),
    (k::SIGEV_NONE as u64, "SIGEV_NONE"),
    (k::SIGEV_THREAD as u64, "SIGEV_THREAD"),
    (k::SIGEV_THREAD_ID as u64, "SIGEV_THREAD_ID"),
];

/// Lock types (`LOCK_*` of a Lock record).
pub const LOCK_TYPES: Kinds = &[
    (raw::LOCK_POSIX as u64, "posix"),
    (raw::LOCK_FLOCK as u64, "flock"),
    (raw::LOCK_OFD as u64, "ofd"),
];

/// Lock modes.
pub const LOCK_MODES: Kinds = &[
    (raw::LOCK_READ as u64, "read"),
    (raw::LOCK_WRITE as u64, "write"),
];

/// Seccomp modes.
pub const SECCOMP: Kinds = &[(0, "none"), (1, "strict"), (2, "filter")];

/// Socket states (`SOCKET_*`).
pub const SOCKET_STATES: Kinds = &[
    (raw::SOCKET_UNBOUND, "unbound"),
    (raw::SOCKET_BOUND, "bound"),
    (raw::SOCKET_LISTENING, "listening"),
    (raw::SOCKET_CONNECTED, "connected"),
];

/// Socket families.
pub const FAMILIES: Kinds = &[
    (libc::AF_UNIX as u64, "AF_UNIX"),
    (libc::AF_INET as u64, "AF_INET"),
    (libc::AF_INET6 as u64, "AF_INET6"),
    (libc::AF_NETLINK as u64, "AF_NETLINK"),
    (libc::AF_PACKET as u64, "AF_PACKET"),
];

/// Socket types.
pub const SOCK_TYPES: Kinds = &[
    (libc::SOCK_STREAM as u64, "SOCK_STREAM"),
    (libc::SOCK_DGRAM as u64, "SOCK_DGRAM"),
    (libc::SOCK_RAW as u64, "SOCK_RAW"),
    (libc::SOCK_SEQPACKET as u64, "SOCK_SEQPACKET"),
];

/// Resource limits in Linux numbering (the order of the Process record's `rlimits`).
pub const RLIMITS: [&str; raw::RLIMIT_COUNT] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// Interval timers in the Timers record's order.
pub const ITIMERS: [&str; 3] = ["ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF"];

/// Signals 1..=31 by number on x86-64.
const SIGNALS: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// The name of signal `n`: `SIGINT`, ...; real-time signals by number (`SIG34`), since the C
/// library's `SIGRTMIN` is not the kernel's.
pub fn signal(n: u64) -> String {
    usize::try_from(n)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| SIGNALS.get(i))
        .map_or_else(|| format!("SIG{n}"), |s| s.to_string())
}

/// The number of a signal named by [`signal`] (or given as a number).
pub fn parse_signal(s: &str) -> Option<u64> {
    if let Some(i) = SIGNALS.iter().position(|&x| x == s) {
        return u64::try_from(i + 1).ok();
    }
    s.strip_prefix("SIG")
        .and_then(|n| n.parse().ok())
        .or_else(|| parse_int(s))
        .filter(|n| (1..=64).contains(n))
}

/// A signal mask (bit n-1 is signal n) as signal names joined by `|`; `0` when empty.
pub fn sigmask(mask: u64) -> String {
    let names: Vec<String> = (1..=64u64)
        .filter(|n| mask >> (n - 1) & 1 != 0)
        .map(signal)
        .collect();
    if names.is_empty() {
        return "0".into();
    }
    names.join("|")
}

/// A limit value: `unlimited` for `RLIM_INFINITY`.
pub fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Memory protection as `rwx` letters (`-` where a bit is clear), with `+0x…` for bits beyond.
pub fn prot(p: u64) -> String {
    let mut s = String::with_capacity(3);
    s.push(if p & u64::from(raw::PROT_READ) != 0 {
        'r'
    } else {
        '-'
    });
    s.push(if p & u64::from(raw::PROT_WRITE) != 0 {
        'w'
    } else {
        '-'
    });
    s.push(if p & u64::from(raw::PROT_EXEC) != 0 {
        'x'
    } else {
        '-'
    });
    let rest = p & !7;
    if rest != 0 {
        s.push_str(&format!("+{rest:#x}"));
    }
    s
}

/// The inverse of [`prot`].
pub fn parse_prot(s: &str) -> Option<u64> {
    let (letters, rest) = match s.split_once('+') {
        Some((l, r)) => (l, parse_int(r)?),
        None => (s, 0),
    };
    let b = letters.as_bytes();
    if b.len() != 3 {
        return None;
    }
    let mut p = rest;
    for (c, (letter, bit)) in b.iter().zip([(b'r', 1), (b'w', 2), (b'x', 4)]) {
        match *c {
            x if x == letter => p |= bit,
            b'-' => {}
            _ => return None,
        }
    }
    Some(p)
}

/// A 64-bit digest, printed one way everywhere: `0x` and 16 hex digits.
pub fn digest(d: u64) -> String {
    format!("{d:#018x}")
}

/// `ns` since the epoch as `YYYY-MM-DD hh:mm:ss.nnnnnnnnn UTC`.
pub fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:09} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ns % 1_000_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip() {
        for bits in [0u64, 1, 2, 3, 0o2_100_002, 0x8000_0000, 0xffff_ffff] {
            let s = flags(bits, OPEN_FLAGS);
            assert_eq!(parse_flags(&s, OPEN_FLAGS), Ok(bits), "{s}");
        }
        assert_eq!(flags(0o2_000_002, OPEN_FLAGS), "O_RDWR|O_CLOEXEC");
        assert_eq!(flags(0, FILE_FLAGS), "0");
        assert_eq!(flags(0x41, VMA_ATTRS), "dontfork|locked");
        assert_eq!(flags(0x300, VMA_ATTRS), "0x300");
    }

    #[test]
    fn names_round_trip() {
        for n in 1..=64 {
            assert_eq!(parse_signal(&signal(n)), Some(n));
        }
        assert_eq!(signal(2), "SIGINT");
        assert_eq!(sigmask(0b110), "SIGINT|SIGQUIT");
        for p in 0..16 {
            assert_eq!(parse_prot(&prot(p)), Some(p));
        }
        assert_eq!(prot(3), "rw-");
        assert_eq!(digest(0x9a5), "0x00000000000009a5");
    }
}
