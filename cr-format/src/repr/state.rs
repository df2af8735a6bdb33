//! Owned values of the 1.1 state records (§15 to §20): File with its FileData chunks, Signals,
//! Timers, Process and VmaAttr.

use crate::error::Result;
use crate::raw::{self, RLIMIT_COUNT};
use crate::read;
use crate::write::{Sink, Writer};
use alloc::vec::Vec;
use zerocopy::little_endian::U32;

/// A File (§15) and the contents its FileData records (§16) hold.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct FileRepr {
    pub fd: u32,
    pub role: u16,
    pub ftype: u16,
    pub flags: u32,
    pub fd_flags: u32,
    pub open_flags: u32,
    pub mode: u32,
    pub pos: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub dup_of: u32,
    /// Type-specific values (see [`raw::File::params`]).
    pub params: [u64; 8],
    /// Path (no NUL).
    pub path: Vec<u8>,
    /// Type-specific data (a socket's address, an epoll interest list).
    pub data: Vec<u8>,
    /// The contents, one entry per FileData record, in order (their offsets follow from the
    /// lengths: the first is at 0, each next one where the one before ended).
    pub contents: Vec<Vec<u8>>,
}

impl FileRepr {
    /// From a File view, without contents (FileData records are appended by the caller).
    pub fn parse(f: &read::File<'_>) -> Self {
        let r = f.raw;
        FileRepr {
            fd: r.fd.get(),
            role: r.role.get(),
            ftype: r.ftype.get(),
            flags: r.flags.get(),
            fd_flags: r.fd_flags.get(),
            open_flags: r.open_flags.get(),
            mode: r.mode.get(),
            pos: r.pos.get(),
            inode: r.inode.get(),
            size: r.size.get(),
            mtime_ns: r.mtime_ns.get(),
            dev_major: r.dev_major.get(),
            dev_minor: r.dev_minor.get(),
            rdev_major: r.rdev_major.get(),
            rdev_minor: r.rdev_minor.get(),
            dup_of: r.dup_of.get(),
            params: r.params.map(|p| p.get()),
            path: f.path.to_vec(),
            data: f.data.to_vec(),
            contents: Vec::new(),
        }
    }

    /// To the on-disk fixed part (`path_len` and `data_len` from `path` and `data`).
    pub fn to_raw(&self) -> raw::File {
        raw::File {
            fd: self.fd.into(),
            role: self.role.into(),
            ftype: self.ftype.into(),
            flags: self.flags.into(),
            fd_flags: self.fd_flags.into(),
            open_flags: self.open_flags.into(),
            mode: self.mode.into(),
            pos: self.pos.into(),
            inode: self.inode.into(),
            size: self.size.into(),
            mtime_ns: self.mtime_ns.into(),
            dev_major: self.dev_major.into(),
            dev_minor: self.dev_minor.into(),
            rdev_major: self.rdev_major.into(),
            rdev_minor: self.rdev_minor.into(),
            dup_of: self.dup_of.into(),
            path_len: u16::try_from(self.path.len()).unwrap_or(u16::MAX).into(),
            _reserved0: 0.into(),
            data_len: u32::try_from(self.data.len()).unwrap_or(u32::MAX).into(),
            _reserved1: 0.into(),
            params: self.params.map(Into::into),
        }
    }

    /// Writes the File and one FileData record per entry of `contents`.
    pub fn emit<S: Sink>(&self, w: &mut Writer<S>) -> Result<()> {
        w.file(&self.to_raw(), &self.path, &self.data)?;
        let mut offset = 0u64;
        for c in &self.contents {
            w.file_data(offset, c)?;
            offset = offset.saturating_add(u64::try_from(c.len()).unwrap_or(u64::MAX));
        }
        Ok(())
    }
}

/// One signal's disposition (§17).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct SigActionRepr {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// One pending signal (§17).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PendingSignalRepr {
    /// `QUEUE_THREAD` or `QUEUE_SHARED`.
    pub queue: u32,
    /// The `siginfo_t`.
    pub siginfo: [u8; 128],
}

/// A Signals record (§17).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct SignalsRepr {
    pub altstack_sp: u64,
    pub altstack_size: u64,
    pub altstack_flags: u32,
    /// Dispositions of signals 1..=64: `actions[n - 1]` is signal n's.
    pub actions: [SigActionRepr; 64],
    /// Pending signals, the thread's queue first, each queue in delivery order.
    pub pending: Vec<PendingSignalRepr>,
}

impl SignalsRepr {
    /// From a Signals view.
    pub fn parse(s: &read::Signals<'_>) -> Self {
        SignalsRepr {
            altstack_sp: s.raw.altstack_sp.get(),
            altstack_size: s.raw.altstack_size.get(),
            altstack_flags: s.raw.altstack_flags.get(),
            actions: s.raw.actions.map(|a| SigActionRepr {
                handler: a.handler.get(),
                flags: a.flags.get(),
                restorer: a.restorer.get(),
                mask: a.mask.get(),
            }),
            pending: s
                .pending
                .iter()
                .map(|p| PendingSignalRepr {
                    queue: p.queue.get(),
                    siginfo: p.siginfo,
                })
                .collect(),
        }
    }

    /// Writes the record.
    pub fn emit<S: Sink>(&self, w: &mut Writer<S>) -> Result<()> {
        let s = raw::Signals {
            altstack_sp: self.altstack_sp.into(),
            altstack_size: self.altstack_size.into(),
            altstack_flags: self.altstack_flags.into(),
            pending_count: 0.into(),
            actions: self.actions.map(|a| raw::SigAction {
                handler: a.handler.into(),
                flags: a.flags.into(),
                restorer: a.restorer.into(),
                mask: a.mask.into(),
            }),
        };
        let pending: Vec<raw::PendingSignal> = self
            .pending
            .iter()
            .map(|p| raw::PendingSignal {
                queue: p.queue.into(),
                _reserved0: 0.into(),
                siginfo: p.siginfo,
            })
            .collect();
        w.signals(&s, &pending)
    }
}

/// One interval timer (§18).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct ITimerRepr {
    pub interval_ns: u64,
    pub value_ns: u64,
}

/// One POSIX timer (§18).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct PosixTimerRepr {
    pub id: u32,
    pub clock: u32,
    pub sigev_notify: u32,
    pub sigev_signo: u32,
    pub sigev_value: u64,
    pub notify_tid: u32,
    pub overrun: u32,
    pub interval_ns: u64,
    pub value_ns: u64,
}

/// A Timers record (§18).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TimersRepr {
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`.
    pub itimers: [ITimerRepr; 3],
    /// POSIX timers, by increasing id.
    pub posix: Vec<PosixTimerRepr>,
}

impl TimersRepr {
    /// From a Timers view.
    pub fn parse(t: &read::Timers<'_>) -> Self {
        TimersRepr {
            itimers: t.raw.itimers.map(|i| ITimerRepr {
                interval_ns: i.interval_ns.get(),
                value_ns: i.value_ns.get(),
            }),
            posix: t
                .posix
                .iter()
                .map(|p| PosixTimerRepr {
                    id: p.id.get(),
                    clock: p.clock.get(),
                    sigev_notify: p.sigev_notify.get(),
                    sigev_signo: p.sigev_signo.get(),
                    sigev_value: p.sigev_value.get(),
                    notify_tid: p.notify_tid.get(),
                    overrun: p.overrun.get(),
                    interval_ns: p.interval_ns.get(),
                    value_ns: p.value_ns.get(),
                })
                .collect(),
        }
    }

    /// Writes the record.
    pub fn emit<S: Sink>(&self, w: &mut Writer<S>) -> Result<()> {
        let t = raw::Timers {
            itimers: self.itimers.map(|i| raw::ITimer {
                interval_ns: i.interval_ns.into(),
                value_ns: i.value_ns.into(),
            }),
            posix_count: 0.into(),
            _reserved0: 0.into(),
        };
        let posix: Vec<raw::PosixTimer> = self
            .posix
            .iter()
            .map(|p| raw::PosixTimer {
                id: p.id.into(),
                clock: p.clock.into(),
                sigev_notify: p.sigev_notify.into(),
                sigev_signo: p.sigev_signo.into(),
                sigev_value: p.sigev_value.into(),
                notify_tid: p.notify_tid.into(),
                overrun: p.overrun.into(),
                interval_ns: p.interval_ns.into(),
                value_ns: p.value_ns.into(),
            })
            .collect();
        w.timers(&t, &posix)
    }
}

/// One resource limit (§19); `u64::MAX` is `RLIM_INFINITY`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct RlimitRepr {
    pub cur: u64,
    pub max: u64,
}

/// A Process record (§19).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct ProcessRepr {
    /// `RLIMIT_CPU`..=`RLIMIT_RTTIME`, Linux numbering.
    pub rlimits: [RlimitRepr; RLIMIT_COUNT],
    pub timer_slack_ns: u64,
    pub rseq_addr: u64,
    pub rseq_len: u32,
    pub rseq_sig: u32,
    pub robust_list: u64,
    pub robust_list_len: u64,
    pub clear_child_tid: u64,
    pub cap_bounding: u64,
    pub cap_ambient: u64,
    pub securebits: u32,
    pub pdeathsig: u32,
    pub dumpable: u32,
    pub attr_flags: u32,
    pub oom_score_adj: i32,
    pub seccomp_mode: u32,
    /// Supplementary group ids, in increasing order.
    pub groups: Vec<u32>,
}

impl ProcessRepr {
    /// From a Process view.
    pub fn parse(p: &read::Process<'_>) -> Self {
        let r = p.raw;
        ProcessRepr {
            rlimits: r.rlimits.map(|l| RlimitRepr {
                cur: l.cur.get(),
                max: l.max.get(),
            }),
            timer_slack_ns: r.timer_slack_ns.get(),
            rseq_addr: r.rseq_addr.get(),
            rseq_len: r.rseq_len.get(),
            rseq_sig: r.rseq_sig.get(),
            robust_list: r.robust_list.get(),
            robust_list_len: r.robust_list_len.get(),
            clear_child_tid: r.clear_child_tid.get(),
            cap_bounding: r.cap_bounding.get(),
            cap_ambient: r.cap_ambient.get(),
            securebits: r.securebits.get(),
            pdeathsig: r.pdeathsig.get(),
            dumpable: r.dumpable.get(),
            attr_flags: r.attr_flags.get(),
            oom_score_adj: i32::from_le_bytes(r.oom_score_adj.get().to_le_bytes()),
            seccomp_mode: r.seccomp_mode.get(),
            groups: p.groups.iter().map(|g| g.get()).collect(),
        }
    }

    /// Writes the record.
    pub fn emit<S: Sink>(&self, w: &mut Writer<S>) -> Result<()> {
        let p = raw::Process {
            rlimits: self.rlimits.map(|l| raw::Rlimit {
                cur: l.cur.into(),
                max: l.max.into(),
            }),
            timer_slack_ns: self.timer_slack_ns.into(),
            rseq_addr: self.rseq_addr.into(),
            rseq_len: self.rseq_len.into(),
            rseq_sig: self.rseq_sig.into(),
            robust_list: self.robust_list.into(),
            robust_list_len: self.robust_list_len.into(),
            clear_child_tid: self.clear_child_tid.into(),
            cap_bounding: self.cap_bounding.into(),
            cap_ambient: self.cap_ambient.into(),
            securebits: self.securebits.into(),
            pdeathsig: self.pdeathsig.into(),
            dumpable: self.dumpable.into(),
            attr_flags: self.attr_flags.into(),
            oom_score_adj: u32::from_le_bytes(self.oom_score_adj.to_le_bytes()).into(),
            seccomp_mode: self.seccomp_mode.into(),
            group_count: 0.into(),
            _reserved0: 0.into(),
        };
        let groups: Vec<U32> = self.groups.iter().map(|&g| g.into()).collect();
        w.process(&p, &groups)
    }
}
