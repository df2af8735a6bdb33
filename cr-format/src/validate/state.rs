//! The checks of the state records of 1.1 (FORMAT.md §15 to §20): File, FileData, Signals,
//! Timers, Process and VmaAttr.

use super::{all_zero, bad, limit, pad8, to_u64, to_usize, Validator};
use crate::error::{ErrorKind, Result};
use crate::limits::*;
use crate::raw::{self, *};

impl Validator {
    fn exact_len(&self, kind: u16, want: u64, found: u64) -> Result<()> {
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

    /// A File (§15): `rest` is the payload after the fixed part (path, pad, data, pad).
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
        let d = f.data_len.get();
        if d > MAX_PAYLOAD_LEN {
            return Err(limit(
                at.saturating_add(80),
                "MAX_PAYLOAD_LEN",
                MAX_PAYLOAD_LEN,
                d.into(),
            ));
        }
        let want = to_u64(size_of::<raw::File>())
            .saturating_add(pad8(p.into()))
            .saturating_add(pad8(d.into()));
        self.exact_len(KIND_FILE, want, payload_len)?;
        if f.role.get() > ROLE_ROOT {
            return Err(bad(
                at.saturating_add(4),
                "role",
                "0..=2",
                f.role.get().into(),
            ));
        }
        if f.ftype.get() > FILE_TYPE_LAST {
            return Err(bad(
                at.saturating_add(6),
                "ftype",
                "a FILE_* type",
                f.ftype.get().into(),
            ));
        }
        if f.flags.get() & !FILE_FLAGS_KNOWN != 0 {
            return Err(bad(
                at.saturating_add(8),
                "file flags",
                "only FILE_* flags",
                f.flags.get().into(),
            ));
        }
        if f._reserved0.get() != 0 {
            return Err(bad(
                at.saturating_add(78),
                "_reserved0",
                "0",
                f._reserved0.get().into(),
            ));
        }
        if f._reserved1.get() != 0 {
            return Err(bad(
                at.saturating_add(84),
                "_reserved1",
                "0",
                f._reserved1.get().into(),
            ));
        }
        if f.ftype.get() == FILE_EPOLL && d % 16 != 0 {
            return Err(bad(
                at.saturating_add(80),
                "data_len",
                "a multiple of 16 for epoll",
                d.into(),
            ));
        }
        let path = rest.get(..to_usize(p.into())).unwrap_or(&[]);
        if path.contains(&0) {
            return Err(bad(at.saturating_add(152), "path", "no NUL byte", 0));
        }
        let pad1 = rest
            .get(to_usize(p.into())..to_usize(pad8(p.into())))
            .unwrap_or(&[]);
        let data_end = pad8(p.into()).saturating_add(d.into());
        let pad2 = rest.get(to_usize(data_end)..).unwrap_or(&[]);
        if !all_zero(pad1) || !all_zero(pad2) {
            return Err(bad(at, "file padding", "zero bytes", 0));
        }
        Ok(())
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
        let want = 16u64.saturating_add(pad8(n.into()));
        self.exact_len(KIND_FILE_DATA, want, payload_len)?;
        if f._reserved0.get() != 0 {
            return Err(bad(
                at.saturating_add(12),
                "_reserved0",
                "0",
                f._reserved0.get().into(),
            ));
        }
        if !all_zero(rest.get(to_usize(n.into())..).unwrap_or(&[])) {
            return Err(bad(at, "file data padding", "zero bytes", 0));
        }
        Ok(())
    }

    /// A Signals record (§17).
    pub(crate) fn check_signals(
        &mut self,
        s: &raw::Signals,
        payload_len: u64,
        pending: &[PendingSignal],
    ) -> Result<()> {
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
        let base = at.saturating_add(to_u64(size_of::<raw::Signals>()));
        for (i, p) in pending.iter().enumerate() {
            let off = base.saturating_add(136u64.saturating_mul(to_u64(i)));
            if p.queue.get() > QUEUE_SHARED {
                return Err(bad(off, "queue", "0 or 1", p.queue.get().into()));
            }
            if p._reserved0.get() != 0 {
                return Err(bad(
                    off.saturating_add(4),
                    "_reserved0",
                    "0",
                    p._reserved0.get().into(),
                ));
            }
        }
        Ok(())
    }

    /// A Timers record (§18).
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
            return Err(bad(
                at.saturating_add(52),
                "_reserved0",
                "0",
                t._reserved0.get().into(),
            ));
        }
        Ok(())
    }

    /// A Process record (§19): `rest` is the group ids and their padding.
    pub(crate) fn check_process(
        &mut self,
        p: &raw::Process,
        payload_len: u64,
        rest: &[u8],
    ) -> Result<()> {
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
        if p.attr_flags.get() & !ATTR_FLAGS_KNOWN != 0 {
            return Err(bad(
                at.saturating_add(332),
                "attr_flags",
                "only ATTR_* flags",
                p.attr_flags.get().into(),
            ));
        }
        if p._reserved0.get() != 0 {
            return Err(bad(
                at.saturating_add(348),
                "_reserved0",
                "0",
                p._reserved0.get().into(),
            ));
        }
        if !all_zero(rest.get(to_usize(groups)..).unwrap_or(&[])) {
            return Err(bad(at, "groups padding", "zero bytes", 0));
        }
        Ok(())
    }

    /// A VmaAttr record (§20).
    pub(crate) fn check_vma_attr(&mut self, a: &raw::VmaAttr) -> Result<()> {
        let at = self.payload_off();
        if a.attrs.get() & !VMA_ATTR_KNOWN != 0 {
            return Err(bad(
                at,
                "attrs",
                "only VMA_ATTR_* bits",
                a.attrs.get().into(),
            ));
        }
        if a._reserved0.get() != 0 {
            return Err(bad(
                at.saturating_add(4),
                "_reserved0",
                "0",
                a._reserved0.get().into(),
            ));
        }
        Ok(())
    }
}
