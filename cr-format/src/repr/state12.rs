//! Owned values of the 1.2 state records (§21 to §23): Inotify with its watches, and Lock.
//! (VdsoData is a byte vector in [`super::BodyRepr::VdsoData`].)

use crate::error::Result;
use crate::raw;
use crate::read;
use crate::write::{Sink, Writer};
use alloc::vec::Vec;

/// One watch of an inotify instance (§22).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct WatchRepr {
    pub wd: u32,
    pub mask: u32,
    pub inode: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Path (no NUL, at least one byte).
    pub path: Vec<u8>,
}

impl WatchRepr {
    /// From an InotifyWatch view.
    pub fn parse(w: &read::InotifyWatch<'_>) -> Self {
        WatchRepr {
            wd: w.raw.wd.get(),
            mask: w.raw.mask.get(),
            inode: w.raw.inode.get(),
            dev_major: w.raw.dev_major.get(),
            dev_minor: w.raw.dev_minor.get(),
            path: w.path.to_vec(),
        }
    }

    /// To the on-disk fixed part (`path_len` from `path`).
    pub fn to_raw(&self) -> raw::InotifyWatch {
        raw::InotifyWatch {
            wd: self.wd.into(),
            mask: self.mask.into(),
            inode: self.inode.into(),
            dev_major: self.dev_major.into(),
            dev_minor: self.dev_minor.into(),
            path_len: u16::try_from(self.path.len()).unwrap_or(u16::MAX).into(),
            _reserved0: [0; 6],
        }
    }
}

/// An Inotify (§21) and its InotifyWatch records (§22).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct InotifyRepr {
    pub fd: u32,
    pub fd_flags: u32,
    pub open_flags: u32,
    pub dup_of: u32,
    /// The watches, in `wd` order (none for a dup).
    pub watches: Vec<WatchRepr>,
}

impl InotifyRepr {
    /// From the on-disk struct, without watches (appended by the caller).
    pub fn parse(n: &raw::Inotify) -> Self {
        InotifyRepr {
            fd: n.fd.get(),
            fd_flags: n.fd_flags.get(),
            open_flags: n.open_flags.get(),
            dup_of: n.dup_of.get(),
            watches: Vec::new(),
        }
    }

    /// To the on-disk struct.
    pub fn to_raw(&self) -> raw::Inotify {
        raw::Inotify {
            fd: self.fd.into(),
            fd_flags: self.fd_flags.into(),
            open_flags: self.open_flags.into(),
            dup_of: self.dup_of.into(),
        }
    }

    /// Writes the Inotify and one InotifyWatch record per watch.
    pub fn emit<S: Sink>(&self, w: &mut Writer<S>) -> Result<()> {
        w.inotify(&self.to_raw())?;
        for x in &self.watches {
            w.inotify_watch(&x.to_raw(), &x.path)?;
        }
        Ok(())
    }
}

/// A Lock (§23).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct LockRepr {
    pub fd: u32,
    pub ltype: u16,
    pub mode: u16,
    pub start: u64,
    pub len: u64,
}

impl LockRepr {
    /// From the on-disk struct.
    pub fn parse(l: &raw::Lock) -> Self {
        LockRepr {
            fd: l.fd.get(),
            ltype: l.ltype.get(),
            mode: l.mode.get(),
            start: l.start.get(),
            len: l.len.get(),
        }
    }

    /// To the on-disk struct.
    pub fn to_raw(&self) -> raw::Lock {
        raw::Lock {
            fd: self.fd.into(),
            ltype: self.ltype.into(),
            mode: self.mode.into(),
            start: self.start.into(),
            len: self.len.into(),
        }
    }
}
