//! The checks of the state records of 1.1 (FORMAT.md §15 to §20): File, FileData, Signals,
//! Timers, Process and VmaAttr (their order, §2.5, is in `state12`, with the kinds of 1.2).
//! Checks that take only the fixed part run before the variable part is sliced, so a count
//! beyond its limit is reported as such.

use super::{bad, first_nonzero, limit, pad8, to_u64, to_usize, Validator};
use crate::error::{ErrorKind, Result};
use crate::limits::*;
use crate::raw::{self, *};
use zerocopy::little_endian::U32;

/// `FD_CLOEXEC`, the only descriptor flag.
pub(super) const FD_CLOEXEC: u32 = 1;
/// `sigaltstack` flags: `SS_ONSTACK`, `SS_DISABLE`, `SS_AUTODISARM`.
const SS_ONSTACK: u32 = 1;
const SS_DISABLE: u32 = 2;
const SS_AUTODISARM: u32 = 1 << 31;
/// Bits of SIGKILL (9) and SIGSTOP (19) in a signal mask: the kernel never keeps them.
const KILL_STOP_BITS: u64 = (1 << 8) | (1 << 18);
/// `SIGEV_SIGNAL`, `SIGEV_NONE`, `SIGEV_THREAD`, `SIGEV_THREAD_ID`.
const SIGEV_NONE: u32 = 1;
const SIGEV_THREAD: u32 = 2;
const SIGEV_THREAD_ID: u32 = 4;

/// How many `params` each file type uses (§15); the rest must be zero.
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

/// A signal number (1..=64) from the first 4 bytes of a `siginfo_t`.
fn signo(siginfo: &[u8; 128]) -> u32 {
    let [a, b, c, d, ..] = *siginfo;
    u32::from_le_bytes([a, b, c, d])
}

impl Validator {
    pub(super) fn exact_len(&self, kind: u16, want: u64, found: u64) -> Result<()> {
        if want == found {
            Ok(())
        } else {
            Err(self.err(ErrorKind::BadLength {
                kind,
                expected: want,
                found,
            }))
        }
    }

    /// A File (§15): `rest` is the payload after the fixed part (path, pad, data, pad); the
    /// writer passes an empty `rest` (it checks the path itself and writes the padding).
    pub(crate) fn check_file(
        &mut self,
        f: &raw::File,
        payload_len: u64,
        rest: &[u8],
    ) -> Result<()> {
        let at = self.payload_off();
        let p = u32::from(f.path_len.get());
        if p > MAX_PATH {
            return Err(limit(at.saturating_add(76), "MAX_PATH", MAX_PATH, p.into()));
        }
        let ftype = f.ftype.get();
        if ftype > FILE_TYPE_LAST {
            return Err(bad(
                at.saturating_add(6),
                "ftype",
                "a FILE_* type",
                ftype.into(),
            ));
        }
        self.check_file_data_len(f)?;
        let d = f.data_len.get();
        let want = to_u64(size_of::<raw::File>())
            .saturating_add(pad8(p.into()))
            .saturating_add(pad8(d.into()));
        self.exact_len(KIND_FILE, want, payload_len)?;
        self.check_file_fields(f)?;
        self.check_file_params(f)?;
        let path = rest.get(..to_usize(p.into())).unwrap_or(&[]);
        if let Some(i) = path.iter().position(|&b| b == 0) {
            let off = at.saturating_add(152).saturating_add(to_u64(i));
            return Err(bad(off, "path", "no NUL byte", 0));
        }
        let pad1_at = to_usize(p.into());
        let pad1 = rest.get(pad1_at..to_usize(pad8(p.into()))).unwrap_or(&[]);
        let data_end = to_usize(pad8(p.into()).saturating_add(d.into()));
        let pad2 = rest.get(data_end..).unwrap_or(&[]);
        let nonzero = first_nonzero(pad1)
            .map(|(i, b)| (i.saturating_add(pad1_at), b))
            .or_else(|| first_nonzero(pad2).map(|(i, b)| (i.saturating_add(data_end), b)));
        if let Some((i, b)) = nonzero {
            let off = at.saturating_add(152).saturating_add(to_u64(i));
            return Err(bad(off, "file padding", "zero bytes", b.into()));
        }
        self.files = self.files.saturating_add(1);
        self.last_file = Some((f.role.get(), f.fd.get()));
        self.file_data_next = (f.flags.get() & FILE_HAS_DATA != 0).then_some(0);
        Ok(())
    }

    /// `data_len` against what the type may hold, before the record length is checked.
    fn check_file_data_len(&self, f: &raw::File) -> Result<()> {
        let at = self.payload_off().saturating_add(80);
        let d = f.data_len.get();
        match f.ftype.get() {
            FILE_EPOLL => {
                if d % 16 != 0 {
                    return Err(bad(at, "data_len", "a multiple of 16 for epoll", d.into()));
                }
                let n = d / 16;
                if n > MAX_EPOLL_ENTRIES {
                    return Err(limit(at, "MAX_EPOLL_ENTRIES", MAX_EPOLL_ENTRIES, n.into()));
                }
            }
            FILE_SOCKET if d > MAX_SOCKADDR => {
                return Err(limit(at, "MAX_SOCKADDR", MAX_SOCKADDR, d.into()));
            }
            FILE_SOCKET => {}
            _ if d != 0 => {
                return Err(bad(at, "data_len", "0 but for sockets and epoll", d.into()))
            }
            _ => {}
        }
        Ok(())
    }

    /// Role, order, flags, descriptor flags, `dup_of`, reserved fields.
    fn check_file_fields(&self, f: &raw::File) -> Result<()> {
        let at = self.payload_off();
        let (fd, role, ftype, flags) = (f.fd.get(), f.role.get(), f.ftype.get(), f.flags.get());
        if role > ROLE_ROOT {
            return Err(bad(at.saturating_add(4), "role", "0..=2", role.into()));
        }
        if flags & !FILE_FLAGS_KNOWN != 0 {
            return Err(bad(
                at.saturating_add(8),
                "file flags",
                "only FILE_* flags",
                flags.into(),
            ));
        }
        if f._reserved0.get() != 0 {
            let v = f._reserved0.get().into();
            return Err(bad(at.saturating_add(78), "_reserved0", "0", v));
        }
        if f._reserved1.get() != 0 {
            let v = f._reserved1.get().into();
            return Err(bad(at.saturating_add(84), "_reserved1", "0", v));
        }
        let dir = role != ROLE_FD;
        if dir && fd != 0 {
            return Err(bad(at, "fd", "0 for the cwd and root", fd.into()));
        }
        if let Some((r, last)) = self.last_file {
            if (role, fd) <= (r, last) {
                return Err(if role == r {
                    bad(
                        at,
                        "fd",
                        "above the previous File's (sorted, once each)",
                        fd.into(),
                    )
                } else {
                    bad(
                        at.saturating_add(4),
                        "role",
                        "fds, then cwd, then root (sorted, once each)",
                        role.into(),
                    )
                });
            }
        }
        if self.files >= MAX_FILES {
            let n = u64::from(self.files).saturating_add(1);
            return Err(limit(self.offset, "MAX_FILES", MAX_FILES, n));
        }
        if dir && !matches!(ftype, FILE_DIR | FILE_UNSUPPORTED) {
            return Err(bad(
                at.saturating_add(6),
                "ftype",
                "FILE_DIR or FILE_UNSUPPORTED for the cwd and root",
                ftype.into(),
            ));
        }
        let ok_flag = |bit: u32, ok: bool| flags & bit == 0 || ok;
        let data_type = matches!(ftype, FILE_REG | FILE_MEMFD | FILE_PIPE | FILE_FIFO);
        let (expected, ok) = if !ok_flag(FILE_DELETED, ftype == FILE_REG) {
            ("FILE_DELETED only for FILE_REG", false)
        } else if !ok_flag(FILE_TTY, ftype == FILE_CHR) {
            ("FILE_TTY only for FILE_CHR", false)
        } else if !ok_flag(FILE_HAS_DATA, data_type && !dir) {
            (
                "FILE_HAS_DATA only for FILE_REG, FILE_MEMFD, FILE_PIPE, FILE_FIFO",
                false,
            )
        } else {
            ("", true)
        };
        if !ok {
            return Err(bad(
                at.saturating_add(8),
                "file flags",
                expected,
                flags.into(),
            ));
        }
        let fd_flags = f.fd_flags.get();
        let allowed = if dir { 0 } else { FD_CLOEXEC };
        if fd_flags & !allowed != 0 {
            return Err(bad(
                at.saturating_add(12),
                "fd_flags",
                "FD_CLOEXEC or 0 (0 for the cwd and root)",
                fd_flags.into(),
            ));
        }
        let dup = f.dup_of.get();
        if dup != DUP_NONE && (dir || dup >= fd) {
            return Err(bad(
                at.saturating_add(72),
                "dup_of",
                "DUP_NONE or a smaller fd (DUP_NONE for the cwd and root)",
                dup.into(),
            ));
        }
        Ok(())
    }

    /// `params` a type does not use are zero; the values of those it uses.
    fn check_file_params(&self, f: &raw::File) -> Result<()> {
        let at = self.payload_off().saturating_add(88);
        let ftype = f.ftype.get();
        let used = params_used(ftype);
        // Not `enumerate().skip(used)`: with overflow checks on, `Enumerate::nth` keeps a panic
        // path the optimiser cannot remove (nostd-check's panic-free build).
        let unused = f.params.get(used..).unwrap_or_default();
        for (k, v) in unused.iter().enumerate() {
            if v.get() != 0 {
                let i = used.saturating_add(k);
                let off = at.saturating_add(8u64.saturating_mul(to_u64(i)));
                return Err(bad(off, "params", "0 where the type uses none", v.get()));
            }
        }
        let param = |i: usize| f.params.get(i).map_or(0, |v| v.get());
        let p_at = |i: u64| at.saturating_add(8u64.saturating_mul(i));
        match ftype {
            FILE_PIPE if param(1) > PIPE_OTHER_END_OUTSIDE => Err(bad(
                p_at(1),
                "params[1] (other end outside)",
                "0 or 1",
                param(1),
            )),
            FILE_EVENTFD if param(1) > 1 => Err(bad(
                p_at(1),
                "params[1] (eventfd semaphore)",
                "0 or 1",
                param(1),
            )),
            FILE_SOCKET if param(3) > SOCKET_CONNECTED => Err(bad(
                p_at(3),
                "params[3] (socket state)",
                "a SOCKET_* state",
                param(3),
            )),
            FILE_SOCKET if param(3) != SOCKET_LISTENING && param(4) != 0 => Err(bad(
                p_at(4),
                "params[4] (backlog)",
                "0 unless listening",
                param(4),
            )),
            FILE_SOCKET
                if param(5) != 0 && (param(3) != SOCKET_CONNECTED || param(0) != AF_UNIX) =>
            {
                Err(bad(
                    p_at(5),
                    "params[5] (peer inode)",
                    "0 unless a connected AF_UNIX socket",
                    param(5),
                ))
            }
            FILE_SOCKET if param(3) == SOCKET_UNBOUND && f.data_len.get() != 0 => Err(bad(
                self.payload_off().saturating_add(80),
                "data_len",
                "0 (no address) for an unbound socket",
                f.data_len.get().into(),
            )),
            _ => Ok(()),
        }
    }

    /// A FileData (§16): `rest` is the bytes and their padding.
    pub(crate) fn check_file_data(
        &mut self,
        f: &raw::FileData,
        payload_len: u64,
        rest: &[u8],
    ) -> Result<()> {
        let at = self.payload_off();
        let n = f.len.get();
        if n > MAX_FILE_DATA {
            return Err(limit(
                at.saturating_add(8),
                "MAX_FILE_DATA",
                MAX_FILE_DATA,
                n.into(),
            ));
        }
        if n == 0 {
            return Err(bad(at.saturating_add(8), "len", "at least 1", 0));
        }
        let want = 16u64.saturating_add(pad8(n.into()));
        self.exact_len(KIND_FILE_DATA, want, payload_len)?;
        if f._reserved0.get() != 0 {
            let v = f._reserved0.get().into();
            return Err(bad(at.saturating_add(12), "_reserved0", "0", v));
        }
        let next = self.file_data_next.unwrap_or(0);
        if f.offset.get() != next {
            return Err(bad(
                at,
                "offset",
                "0 for the first FileData, then where the previous one ended",
                f.offset.get(),
            ));
        }
        let pad = rest.get(to_usize(n.into())..).unwrap_or(&[]);
        if let Some((i, b)) = first_nonzero(pad) {
            let off = at
                .saturating_add(16)
                .saturating_add(u64::from(n))
                .saturating_add(to_u64(i));
            return Err(bad(off, "file data padding", "zero bytes", b.into()));
        }
        self.file_data_next = Some(next.saturating_add(n.into()));
        Ok(())
    }

    /// A Signals record (§17), fixed part: count, length, alternate stack, dispositions.
    pub(crate) fn check_signals(&mut self, s: &raw::Signals, payload_len: u64) -> Result<()> {
        let at = self.payload_off();
        let n = s.pending_count.get();
        if n > MAX_PENDING_SIGNALS {
            return Err(limit(
                at.saturating_add(20),
                "MAX_PENDING_SIGNALS",
                MAX_PENDING_SIGNALS,
                n.into(),
            ));
        }
        let want = to_u64(size_of::<raw::Signals>())
            .saturating_add(to_u64(size_of::<PendingSignal>()).saturating_mul(n.into()));
        self.exact_len(KIND_SIGNALS, want, payload_len)?;
        let fl = s.altstack_flags.get();
        if fl & !(SS_ONSTACK | SS_DISABLE | SS_AUTODISARM) != 0 {
            return Err(bad(
                at.saturating_add(16),
                "altstack_flags",
                "only SS_ONSTACK, SS_DISABLE, SS_AUTODISARM",
                fl.into(),
            ));
        }
        if fl & SS_DISABLE != 0 && (s.altstack_sp.get() != 0 || s.altstack_size.get() != 0) {
            let (off, v) = if s.altstack_sp.get() != 0 {
                (at, s.altstack_sp.get())
            } else {
                (at.saturating_add(8), s.altstack_size.get())
            };
            return Err(bad(off, "altstack", "0 when SS_DISABLE", v));
        }
        for (i, a) in s.actions.iter().enumerate() {
            let off = at
                .saturating_add(24)
                .saturating_add(32u64.saturating_mul(to_u64(i)));
            // SIGKILL and SIGSTOP (actions[8], actions[18]) cannot be caught or ignored.
            let fixed = i == 8 || i == 18;
            let fields = [
                a.handler.get(),
                a.flags.get(),
                a.restorer.get(),
                a.mask.get(),
            ];
            if let Some(j) = fields.iter().position(|&v| v != 0).filter(|_| fixed) {
                let v = fields.get(j).copied().unwrap_or(0);
                let off = off.saturating_add(8u64.saturating_mul(to_u64(j)));
                return Err(bad(off, "SIGKILL/SIGSTOP action", "all zero (SIG_DFL)", v));
            }
            if a.mask.get() & KILL_STOP_BITS != 0 {
                return Err(bad(
                    off.saturating_add(24),
                    "sigaction mask",
                    "without SIGKILL and SIGSTOP",
                    a.mask.get(),
                ));
            }
        }
        Ok(())
    }

    /// The pending signals of a Signals record (§17), after [`Validator::check_signals`].
    pub(crate) fn check_pending(&mut self, pending: &[PendingSignal]) -> Result<()> {
        let base = self
            .payload_off()
            .saturating_add(to_u64(size_of::<raw::Signals>()));
        let mut queue = QUEUE_THREAD;
        for (i, p) in pending.iter().enumerate() {
            let off = base.saturating_add(136u64.saturating_mul(to_u64(i)));
            let q = p.queue.get();
            if q > QUEUE_SHARED || q < queue {
                return Err(bad(
                    off,
                    "queue",
                    "0 or 1, the thread's queue first",
                    q.into(),
                ));
            }
            queue = q;
            if p._reserved0.get() != 0 {
                let v = p._reserved0.get().into();
                return Err(bad(off.saturating_add(4), "_reserved0", "0", v));
            }
            let sig = signo(&p.siginfo);
            if !(1..=64).contains(&sig) {
                return Err(bad(off.saturating_add(8), "si_signo", "1..=64", sig.into()));
            }
        }
        Ok(())
    }

    /// A Timers record (§18), fixed part.
    pub(crate) fn check_timers(&mut self, t: &raw::Timers, payload_len: u64) -> Result<()> {
        let at = self.payload_off();
        let n = t.posix_count.get();
        if n > MAX_POSIX_TIMERS {
            return Err(limit(
                at.saturating_add(48),
                "MAX_POSIX_TIMERS",
                MAX_POSIX_TIMERS,
                n.into(),
            ));
        }
        let want = to_u64(size_of::<raw::Timers>())
            .saturating_add(to_u64(size_of::<PosixTimer>()).saturating_mul(n.into()));
        self.exact_len(KIND_TIMERS, want, payload_len)?;
        if t._reserved0.get() != 0 {
            let v = t._reserved0.get().into();
            return Err(bad(at.saturating_add(52), "_reserved0", "0", v));
        }
        Ok(())
    }

    /// The POSIX timers of a Timers record (§18), after [`Validator::check_timers`].
    pub(crate) fn check_posix(&mut self, posix: &[PosixTimer]) -> Result<()> {
        let base = self
            .payload_off()
            .saturating_add(to_u64(size_of::<raw::Timers>()));
        let mut prev: Option<u32> = None;
        for (i, p) in posix.iter().enumerate() {
            let off = base.saturating_add(48u64.saturating_mul(to_u64(i)));
            let id = p.id.get();
            if id > 0x7fff_ffff || prev.is_some_and(|x| id <= x) {
                return Err(bad(
                    off,
                    "timer id",
                    "at most 2^31-1, above the previous timer's",
                    id.into(),
                ));
            }
            prev = Some(id);
            let notify = p.sigev_notify.get();
            if !matches!(notify, 0 | SIGEV_NONE | SIGEV_THREAD | SIGEV_THREAD_ID) {
                return Err(bad(
                    off.saturating_add(8),
                    "sigev_notify",
                    "SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD or SIGEV_THREAD_ID",
                    notify.into(),
                ));
            }
            let sig = p.sigev_signo.get();
            if notify != SIGEV_NONE && !(1..=64).contains(&sig) {
                return Err(bad(
                    off.saturating_add(12),
                    "sigev_signo",
                    "1..=64 unless SIGEV_NONE",
                    sig.into(),
                ));
            }
            let tid = p.notify_tid.get();
            if (notify == SIGEV_THREAD_ID) != (tid != 0) {
                return Err(bad(
                    off.saturating_add(24),
                    "notify_tid",
                    "nonzero exactly for SIGEV_THREAD_ID",
                    tid.into(),
                ));
            }
        }
        Ok(())
    }

    /// A Process record (§19), fixed part.
    pub(crate) fn check_process(&mut self, p: &raw::Process, payload_len: u64) -> Result<()> {
        let at = self.payload_off();
        let n = p.group_count.get();
        if n > MAX_GROUPS {
            return Err(limit(
                at.saturating_add(344),
                "MAX_GROUPS",
                MAX_GROUPS,
                n.into(),
            ));
        }
        let groups = 4u64.saturating_mul(n.into());
        let want = to_u64(size_of::<raw::Process>()).saturating_add(pad8(groups));
        self.exact_len(KIND_PROCESS, want, payload_len)?;
        let attrs = p.attr_flags.get();
        if attrs & !ATTR_FLAGS_KNOWN != 0 {
            return Err(bad(
                at.saturating_add(332),
                "attr_flags",
                "only ATTR_* flags",
                attrs.into(),
            ));
        }
        if p._reserved0.get() != 0 {
            let v = p._reserved0.get().into();
            return Err(bad(at.saturating_add(348), "_reserved0", "0", v));
        }
        for (i, l) in p.rlimits.iter().enumerate() {
            if l.cur.get() > l.max.get() {
                let off = at.saturating_add(16u64.saturating_mul(to_u64(i)));
                return Err(bad(off, "rlimit cur", "at most max", l.cur.get()));
            }
        }
        let u32_at = |off: u64, field, expected, v: u32, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(bad(at.saturating_add(off), field, expected, v.into()))
            }
        };
        let no_rseq = p.rseq_addr.get() == 0;
        let (len, sig) = (p.rseq_len.get(), p.rseq_sig.get());
        u32_at(272, "rseq_len", "0 without rseq", len, !no_rseq || len == 0)?;
        u32_at(276, "rseq_sig", "0 without rseq", sig, !no_rseq || sig == 0)?;
        let pd = p.pdeathsig.get();
        u32_at(324, "pdeathsig", "0..=64", pd, pd <= 64)?;
        let dumpable = p.dumpable.get();
        u32_at(328, "dumpable", "0, 1 or 2", dumpable, dumpable <= 2)?;
        let onfault_alone = attrs & ATTR_MLOCK_ONFAULT != 0 && attrs & ATTR_MLOCK_FUTURE == 0;
        u32_at(
            332,
            "attr_flags",
            "ATTR_MLOCK_ONFAULT only with ATTR_MLOCK_FUTURE",
            attrs,
            !onfault_alone,
        )?;
        let oom = p.oom_score_adj.get();
        let oom_ok = (-1000..=1000).contains(&i32::from_le_bytes(oom.to_le_bytes()));
        u32_at(336, "oom_score_adj", "-1000..=1000", oom, oom_ok)?;
        let sc = p.seccomp_mode.get();
        u32_at(340, "seccomp_mode", "0, 1 or 2", sc, sc <= 2)
    }

    /// The groups of a Process record (§19) and their padding (`pad`, empty from the writer).
    pub(crate) fn check_groups(&mut self, groups: &[U32], pad: &[u8]) -> Result<()> {
        let base = self
            .payload_off()
            .saturating_add(to_u64(size_of::<raw::Process>()));
        let mut prev = 0u32;
        for (i, g) in groups.iter().enumerate() {
            if g.get() < prev {
                let off = base.saturating_add(4u64.saturating_mul(to_u64(i)));
                return Err(bad(off, "groups", "in increasing order", g.get().into()));
            }
            prev = g.get();
        }
        if let Some((i, b)) = first_nonzero(pad) {
            let off = base
                .saturating_add(4u64.saturating_mul(to_u64(groups.len())))
                .saturating_add(to_u64(i));
            return Err(bad(off, "groups padding", "zero bytes", b.into()));
        }
        Ok(())
    }

    /// A VmaAttr record (§20).
    pub(crate) fn check_vma_attr(&mut self, a: &raw::VmaAttr) -> Result<()> {
        let at = self.payload_off();
        let v = a.attrs.get();
        let expected = if v & !VMA_ATTR_KNOWN != 0 {
            "only VMA_ATTR_* bits"
        } else if v == 0 {
            "at least one bit (no VmaAttr when none)"
        } else if v & VMA_ATTR_LOCKONFAULT != 0 && v & VMA_ATTR_LOCKED == 0 {
            "VMA_ATTR_LOCKONFAULT only with VMA_ATTR_LOCKED"
        } else if v & VMA_ATTR_HUGEPAGE != 0 && v & VMA_ATTR_NOHUGEPAGE != 0 {
            "not both VMA_ATTR_HUGEPAGE and VMA_ATTR_NOHUGEPAGE"
        } else {
            ""
        };
        if !expected.is_empty() {
            return Err(bad(at, "attrs", expected, v.into()));
        }
        if a._reserved0.get() != 0 {
            let v = a._reserved0.get().into();
            return Err(bad(at.saturating_add(4), "_reserved0", "0", v));
        }
        Ok(())
    }
}
