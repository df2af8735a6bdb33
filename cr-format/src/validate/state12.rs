//! The order of the state records (§2.5) and the checks of the kinds of 1.2 (FORMAT.md §21 to
//! §24): Inotify, InotifyWatch, Lock and VdsoData.

use super::state::FD_CLOEXEC;
use super::{bad, first_nonzero, limit, pad8, to_u64, to_usize, Validator};
use crate::error::Result;
use crate::limits::*;
use crate::raw::{self, *};

/// The largest `off_t`: a lock's last byte must not be beyond it.
const OFF_MAX: u64 = u64::MAX >> 1;

impl Validator {
    /// The order rules of the kinds of 1.1 and 1.2 (§2.5), from the record header alone:
    /// `Some(what is expected)` when `kind` may not come here. Other kinds: `None`.
    pub(crate) fn state_order(&self, kind: u16) -> Option<&'static str> {
        if !(KIND_FILE..=KIND_LAST).contains(&kind) {
            return None;
        }
        if self.minor == 0 {
            return Some("no record kind of 1.1 in an image of version 1.0");
        }
        if kind >= KIND_INOTIFY && self.minor < 2 {
            return Some("no record kind of 1.2 in an image of version 1.1");
        }
        let before_vmas = self.vmas == 0 && !self.orphan;
        const SEQ: &str = "Signals, Timers, Process in this order, each at most once";
        match kind {
            KIND_VMA_ATTR => (!self.after_vma).then_some("a VmaAttr only right after a Vma"),
            KIND_FILE_DATA => self
                .file_data_next
                .is_none()
                .then_some("a FileData only right after a File with FILE_HAS_DATA or a FileData"),
            KIND_INOTIFY_WATCH => self.watch_next.is_none().then_some(
                "an InotifyWatch only right after an Inotify with dup_of NO_DUP or an InotifyWatch",
            ),
            KIND_VDSO_DATA if self.vdso_seen => Some("at most one VdsoData"),
            KIND_VDSO_DATA => self
                .vdso_next
                .is_none()
                .then_some("a VdsoData only right after the vDSO's Vma or its VmaAttr"),
            _ if !before_vmas => {
                Some("File, Inotify, Lock, Signals, Timers and Process before the first Vma")
            }
            KIND_FILE => (self.state_part > 0)
                .then_some("File records before Inotify, Lock, Signals, Timers and Process"),
            KIND_INOTIFY => (self.state_part > 1)
                .then_some("Inotify records before Lock, Signals, Timers and Process"),
            KIND_LOCK => {
                (self.state_part > 2).then_some("Lock records before Signals, Timers and Process")
            }
            KIND_SIGNALS => (self.state_part >= 3).then_some(SEQ),
            KIND_TIMERS => (self.state_part >= 4).then_some(SEQ),
            _ => (self.state_part >= 5).then_some(SEQ),
        }
    }

    /// An Inotify (§21).
    pub(crate) fn check_inotify(&mut self, n: &raw::Inotify) -> Result<()> {
        let at = self.payload_off();
        self.watch_next = None;
        let fd = n.fd.get();
        if fd > 0x7fff_ffff || self.last_inotify.is_some_and(|l| fd <= l) {
            return Err(bad(
                at,
                "fd",
                "below 2^31, above the previous Inotify's",
                fd.into(),
            ));
        }
        let fd_flags = n.fd_flags.get();
        if fd_flags & !FD_CLOEXEC != 0 {
            return Err(bad(
                at.saturating_add(4),
                "fd_flags",
                "FD_CLOEXEC or 0",
                fd_flags.into(),
            ));
        }
        let dup = n.dup_of.get();
        if dup != NO_DUP && dup >= fd {
            return Err(bad(
                at.saturating_add(12),
                "dup_of",
                "NO_DUP or a smaller fd",
                dup.into(),
            ));
        }
        self.last_inotify = Some(fd);
        self.watch_next = (dup == NO_DUP).then_some(0);
        Ok(())
    }

    /// An InotifyWatch (§22): `rest` is the path and its padding (empty from the writer, which
    /// checks the path itself and writes the padding).
    pub(crate) fn check_inotify_watch(
        &mut self,
        w: &raw::InotifyWatch,
        payload_len: u64,
        rest: &[u8],
    ) -> Result<()> {
        let at = self.payload_off();
        if self.watches >= MAX_INOTIFY_WATCHES {
            let n = u64::from(self.watches).saturating_add(1);
            return Err(limit(
                self.offset,
                "MAX_INOTIFY_WATCHES",
                MAX_INOTIFY_WATCHES,
                n,
            ));
        }
        let p = u32::from(w.path_len.get());
        if p > MAX_PATH {
            return Err(limit(at.saturating_add(24), "MAX_PATH", MAX_PATH, p.into()));
        }
        if p == 0 {
            return Err(bad(at.saturating_add(24), "path_len", "at least 1", 0));
        }
        let want = 32u64.saturating_add(pad8(p.into()));
        self.exact_len(KIND_INOTIFY_WATCH, want, payload_len)?;
        let wd = w.wd.get();
        let prev = self.watch_next.unwrap_or(0);
        if wd > 0x7fff_ffff || wd <= prev {
            return Err(bad(
                at,
                "wd",
                "1..=2^31-1, above the previous watch's",
                wd.into(),
            ));
        }
        if w.mask.get() == 0 {
            return Err(bad(at.saturating_add(4), "mask", "nonzero", 0));
        }
        if let Some(&b) = w._reserved0.iter().find(|&&b| b != 0) {
            return Err(bad(at.saturating_add(26), "_reserved0", "0", b.into()));
        }
        let path = rest.get(..to_usize(p.into())).unwrap_or(&[]);
        if let Some(i) = path.iter().position(|&b| b == 0) {
            let off = at.saturating_add(32).saturating_add(to_u64(i));
            return Err(bad(off, "path", "no NUL byte", 0));
        }
        let pad = rest.get(to_usize(p.into())..).unwrap_or(&[]);
        if let Some((i, b)) = first_nonzero(pad) {
            let off = at
                .saturating_add(32)
                .saturating_add(p.into())
                .saturating_add(to_u64(i));
            return Err(bad(off, "watch path padding", "zero bytes", b.into()));
        }
        self.watches = self.watches.saturating_add(1);
        self.watch_next = Some(wd);
        Ok(())
    }

    /// A Lock (§23). Whether `fd` names a File is left to the restorer: checking it here would
    /// need memory in proportion to the image.
    pub(crate) fn check_lock(&mut self, l: &raw::Lock) -> Result<()> {
        let at = self.payload_off();
        if self.locks >= MAX_LOCKS {
            let n = u64::from(self.locks).saturating_add(1);
            return Err(limit(self.offset, "MAX_LOCKS", MAX_LOCKS, n));
        }
        let fd = l.fd.get();
        if fd > 0x7fff_ffff {
            return Err(bad(at, "fd", "below 2^31", fd.into()));
        }
        let ltype = l.ltype.get();
        if !(LOCK_POSIX..=LOCK_OFD).contains(&ltype) {
            return Err(bad(
                at.saturating_add(4),
                "ltype",
                "LOCK_POSIX, LOCK_FLOCK or LOCK_OFD",
                ltype.into(),
            ));
        }
        let mode = l.mode.get();
        if !(LOCK_READ..=LOCK_WRITE).contains(&mode) {
            return Err(bad(
                at.saturating_add(6),
                "mode",
                "LOCK_READ or LOCK_WRITE",
                mode.into(),
            ));
        }
        let (start, len) = (l.start.get(), l.len.get());
        if ltype == LOCK_FLOCK && start != 0 {
            return Err(bad(
                at.saturating_add(8),
                "start",
                "0 for LOCK_FLOCK",
                start,
            ));
        }
        if ltype == LOCK_FLOCK && len != 0 {
            return Err(bad(at.saturating_add(16), "len", "0 for LOCK_FLOCK", len));
        }
        if start > OFF_MAX {
            return Err(bad(at.saturating_add(8), "start", "at most 2^63-1", start));
        }
        // The last byte locked, start + len - 1, is an off_t.
        if len > OFF_MAX.saturating_sub(start).saturating_add(1) {
            return Err(bad(
                at.saturating_add(16),
                "len",
                "start + len - 1 at most 2^63-1",
                len,
            ));
        }
        self.locks = self.locks.saturating_add(1);
        Ok(())
    }

    /// A VdsoData (§24), fixed part; its bytes are not checked.
    pub(crate) fn check_vdso_data(&mut self, d: &raw::VdsoData, payload_len: u64) -> Result<()> {
        let at = self.payload_off();
        let n = d.len.get();
        if n > MAX_VDSO_LEN {
            return Err(limit(at, "MAX_VDSO_LEN", MAX_VDSO_LEN, n.into()));
        }
        let want = 8u64.saturating_add(pad8(n.into()));
        self.exact_len(KIND_VDSO_DATA, want, payload_len)?;
        let vma_len = self.vdso_next.unwrap_or(0);
        if u64::from(n) != vma_len {
            return Err(bad(at, "len", "the vDSO Vma's end - start", n.into()));
        }
        if d._reserved0.get() != 0 {
            let v = d._reserved0.get().into();
            return Err(bad(at.saturating_add(4), "_reserved0", "0", v));
        }
        Ok(())
    }
}
