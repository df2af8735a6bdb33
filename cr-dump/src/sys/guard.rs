//! The guard: a small process that outlives cr-dump and repairs the task if cr-dump dies
//! (SIGKILL, the OOM killer) in the middle of what only it could undo: an injected system call
//! ([`crate::sys::inject`]) or a live twin ([`crate::capture::twin`]).
//!
//! [`start`] spawns `cr-dump __guard` (cr-dump's own binary, exec'ed by `posix_spawn`: a
//! `vfork`, so nothing of cr-dump's memory is copied) in its own session, with the read end of
//! a pipe as its standard input. cr-dump then tells it, in fixed-size messages written before
//! each step they describe ([`publish`]), what it would have to repair: the task's saved
//! registers and the `syscall` used before an injection ([`Msg::Start`]), its result
//! ([`Msg::Result`]: a `clone`'s is the twin), that the task's own registers are back
//! ([`Msg::Settled`]), and the stub written into the task's vDSO ([`Msg::Patch`],
//! [`Msg::Unpatch`]). A message is shorter than `PIPE_BUF`, so it is written whole or not at
//! all, and it is in the pipe before the ptrace request it announces is made: whatever moment
//! cr-dump dies at, the guard reads everything up to that moment, then end-of-file. It then
//! repairs what is pending (`crate::capture::guard`) and exits; after a clean end nothing is
//! pending and it exits at once.
//!
//! What it does not cover: a SIGKILL aimed at the guard itself (or a guard that could not be
//! started: the checkpoint then goes on without one, as before).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

/// The hidden subcommand that runs the guard.
pub const SUBCOMMAND: &str = "__guard";

/// Length of one message on the pipe (less than `PIPE_BUF`: written atomically).
pub const MSG_LEN: usize = 256;

/// The general registers, as the 27 words of `user_regs_struct`, in its order.
pub type Words = [u64; 27];

/// One message from cr-dump to its guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// An injection into `pid` begins: system call `nr` (first argument `arg0`) at the
    /// `syscall` instruction at `at`; `regs` are the task's own registers.
    Start {
        /// The task.
        pid: i32,
        /// The system call.
        nr: u64,
        /// Its first argument.
        arg0: u64,
        /// Where the injected `syscall` instruction is.
        at: u64,
        /// The task is at the injection while its `rip` is in `at..=at + span`.
        span: u64,
        /// The task's own registers.
        regs: Box<Words>,
    },
    /// The injected call in `pid` returned `value` (the task is still in its exit stop).
    Result {
        /// The task.
        pid: i32,
        /// The result (a negative errno on failure).
        value: i64,
    },
    /// The task's own registers are back: the injection can no longer harm it.
    Settled {
        /// The task.
        pid: i32,
    },
    /// `len` bytes at `addr` in `pid`'s vDSO are about to be overwritten; they were `orig`
    /// (its first `len` bytes; any past the 16th were zeros).
    Patch {
        /// The task.
        pid: i32,
        /// Where.
        addr: u64,
        /// How many bytes.
        len: u8,
        /// What they were.
        orig: [u8; 16],
    },
    /// The bytes of the last [`Msg::Patch`] of `pid` are back.
    Unpatch {
        /// The task.
        pid: i32,
    },
    /// `pid`'s nice value is about to be raised for its stop; it was `old`.
    Boost {
        /// The task.
        pid: i32,
        /// Its own nice value.
        old: i32,
    },
    /// `pid`'s own nice value is back.
    Unboost {
        /// The task.
        pid: i32,
    },
}

const START: u32 = 1;
const RESULT: u32 = 2;
const SETTLED: u32 = 3;
const PATCH: u32 = 4;
const UNPATCH: u32 = 5;
const BOOST: u32 = 6;
const UNBOOST: u32 = 7;

impl Msg {
    /// The message's bytes: kind, pid, then the fields as little-endian words.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        let mut words: Vec<u64> = Vec::with_capacity(31);
        let (kind, pid) = match self {
            Msg::Start {
                pid,
                nr,
                arg0,
                at,
                span,
                regs,
            } => {
                words.extend([*nr, *arg0, *at, *span]);
                words.extend(regs.iter());
                (START, *pid)
            }
            Msg::Result { pid, value } => {
                words.push(*value as u64);
                (RESULT, *pid)
            }
            Msg::Settled { pid } => (SETTLED, *pid),
            Msg::Patch {
                pid,
                addr,
                len,
                orig,
            } => {
                let (lo, hi) = orig.split_at(8);
                let word = |b: &[u8]| b.try_into().map(u64::from_le_bytes).unwrap_or(0);
                words.extend([*addr, u64::from(*len), word(lo), word(hi)]);
                (PATCH, *pid)
            }
            Msg::Unpatch { pid } => (UNPATCH, *pid),
            Msg::Boost { pid, old } => {
                words.push(*old as i64 as u64);
                (BOOST, *pid)
            }
            Msg::Unboost { pid } => (UNBOOST, *pid),
        };
        b[..4].copy_from_slice(&kind.to_le_bytes());
        b[4..8].copy_from_slice(&pid.to_le_bytes());
        for (w, chunk) in words.iter().zip(b[8..].chunks_exact_mut(8)) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// A message from its bytes (`None` if the kind is unknown).
    pub fn decode(b: &[u8; MSG_LEN]) -> Option<Msg> {
        let u32_at = |i: usize| b.get(i..i + 4)?.try_into().ok().map(u32::from_le_bytes);
        let word = |i: usize| {
            b.get(8 + 8 * i..16 + 8 * i)?
                .try_into()
                .ok()
                .map(u64::from_le_bytes)
        };
        let kind = u32_at(0)?;
        let pid = u32_at(4)? as i32;
        Some(match kind {
            START => {
                let mut regs = [0u64; 27];
                for (i, r) in regs.iter_mut().enumerate() {
                    *r = word(4 + i)?;
                }
                Msg::Start {
                    pid,
                    nr: word(0)?,
                    arg0: word(1)?,
                    at: word(2)?,
                    span: word(3)?,
                    regs: Box::new(regs),
                }
            }
            RESULT => Msg::Result {
                pid,
                value: word(0)? as i64,
            },
            SETTLED => Msg::Settled { pid },
            PATCH => {
                let mut orig = [0u8; 16];
                orig[..8].copy_from_slice(&word(2)?.to_le_bytes());
                orig[8..].copy_from_slice(&word(3)?.to_le_bytes());
                Msg::Patch {
                    pid,
                    addr: word(0)?,
                    len: u8::try_from(word(1)?).ok()?,
                    orig,
                }
            }
            UNPATCH => Msg::Unpatch { pid },
            BOOST => Msg::Boost {
                pid,
                old: i32::try_from(word(0)? as i64).ok()?,
            },
            UNBOOST => Msg::Unboost { pid },
            _ => return None,
        })
    }
}

/// The registers as words (the order of `user_regs_struct`).
pub fn regs_to_words(r: &libc::user_regs_struct) -> Words {
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

/// The registers from words (the order of `user_regs_struct`).
pub fn words_to_regs(w: &Words) -> libc::user_regs_struct {
    let [r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs] =
        *w;
    libc::user_regs_struct {
        r15,
        r14,
        r13,
        r12,
        rbp,
        rbx,
        r11,
        r10,
        r9,
        r8,
        rax,
        rcx,
        rdx,
        rsi,
        rdi,
        orig_rax,
        rip,
        cs,
        eflags,
        rsp,
        ss,
        fs_base,
        gs_base,
        ds,
        es,
        fs,
        gs,
    }
}

/// The write end of the pipe to the guard of this process, once [`start`]ed.
static SINK: Mutex<Option<File>> = Mutex::new(None);

/// Starts the guard: `exe __guard` (`exe` is cr-dump's own binary), in its own session. A
/// second call does nothing.
pub fn start(exe: &Path) -> io::Result<()> {
    let mut sink = SINK
        .lock()
        .map_err(|_| io::Error::other("guard lock poisoned"))?;
    if sink.is_some() {
        return Ok(());
    }
    let (r, w) = pipe()?;
    spawn(exe, &r)?;
    // Never block on a guard that stopped reading: a full pipe loses the guard instead.
    set_nonblocking(&w)?;
    *sink = Some(File::from(w));
    Ok(())
}

/// Whether a guard is watching.
pub fn active() -> bool {
    SINK.lock().map(|s| s.is_some()).unwrap_or(false)
}

/// Tells the guard `m`, if there is one. A guard that is gone or not reading (`EPIPE`, a full
/// pipe) is dropped: cr-dump goes on unguarded, as without one.
pub fn publish(m: &Msg) {
    let Ok(mut sink) = SINK.lock() else {
        return;
    };
    let lost = match sink.as_mut() {
        Some(f) => !matches!(f.write(&m.encode()), Ok(MSG_LEN)),
        None => false,
    };
    if lost {
        *sink = None;
    }
}

/// Ends the guard's watch: closes the pipe (the guard exits at end-of-file when nothing is
/// pending).
pub fn finish() {
    if let Ok(mut s) = SINK.lock() {
        *s = None;
    }
}

/// Reads the next message from cr-dump (`None` at end-of-file: cr-dump is done or dead).
pub fn next(input: &mut impl Read) -> Option<Msg> {
    let mut b = [0u8; MSG_LEN];
    loop {
        input.read_exact(&mut b).ok()?;
        if let Some(m) = Msg::decode(&b) {
            return Some(m);
        }
    }
}

/// Makes this process a guard: ignores the signals that interrupt a terminal job or end a
/// session (so that only an explicit SIGKILL stops it) and asks the OOM killer to spare it
/// (`oom_score_adj` -1000: needs `CAP_SYS_RESOURCE`, else left as it is).
pub fn become_guard() {
    for s in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ] {
        // SAFETY: installing SIG_IGN runs no code in a signal context.
        unsafe {
            libc::signal(s, libc::SIG_IGN);
        }
    }
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    let r = unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl < 0 {
            fl
        } else {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK)
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns `exe __guard` with `input` as its standard input, `/dev/null` as its standard
/// output, our standard error, an empty environment and an empty signal mask, in a new session
/// (`POSIX_SPAWN_SETSID`: no terminal or process-group signal reaches it). Not waited for: it
/// outlives us.
fn spawn(exe: &Path, input: &OwnedFd) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("the cr-dump path holds a NUL byte"))?;
    let arg = CString::new(SUBCOMMAND).map_err(io::Error::other)?;
    let null = File::options().write(true).open("/dev/null")?;
    let argv = [
        path.as_ptr().cast_mut(),
        arg.as_ptr().cast_mut(),
        std::ptr::null_mut(),
    ];
    let envp = [std::ptr::null_mut::<libc::c_char>()];
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // after; argv and envp are NULL-terminated arrays of C strings that outlive the call;
    // the descriptors named in the file actions are open for its duration.
    let rc = unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut at: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut fa);
        libc::posix_spawnattr_init(&mut at);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut rc = libc::posix_spawn_file_actions_adddup2(&mut fa, input.as_raw_fd(), 0);
        if rc == 0 {
            rc = libc::posix_spawn_file_actions_adddup2(&mut fa, null.as_raw_fd(), 1);
        }
        if rc == 0 {
            rc = libc::posix_spawnattr_setsigmask(&mut at, &empty);
        }
        if rc == 0 {
            let flags = i32::from(libc::POSIX_SPAWN_SETSID) | libc::POSIX_SPAWN_SETSIGMASK;
            rc = libc::posix_spawnattr_setflags(&mut at, flags as libc::c_short);
        }
        if rc == 0 {
            rc = libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &fa,
                &at,
                argv.as_ptr(),
                envp.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut at);
        rc
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut regs = [0u64; 27];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = (i as u64) << 40 | 7;
        }
        for m in [
            Msg::Start {
                pid: 42,
                nr: 56,
                arg0: u64::MAX,
                at: 0x7fff_0000_1000,
                span: 13,
                regs: Box::new(regs),
            },
            Msg::Result { pid: 1, value: -4 },
            Msg::Settled { pid: 9 },
            Msg::Patch {
                pid: 3,
                addr: 0x1000,
                len: 14,
                orig: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0, 0],
            },
            Msg::Unpatch { pid: 3 },
            Msg::Patch {
                pid: 3,
                addr: 0x1f80,
                len: 128,
                orig: [0; 16],
            },
            Msg::Boost { pid: 8, old: -3 },
            Msg::Unboost { pid: 8 },
        ] {
            assert_eq!(Msg::decode(&m.encode()), Some(m));
        }
        assert_eq!(Msg::decode(&[0u8; MSG_LEN]), None);
        assert_eq!(words_to_regs(&regs).rip, regs[16]);
        assert_eq!(regs_to_words(&words_to_regs(&regs)), regs);
    }
}
