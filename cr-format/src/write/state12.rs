//! The writer methods of the kinds of 1.2 (§21 to §24).

use super::{path_len, Sink, Writer};
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{self, *};
use crate::validate::to_u64;
use zerocopy::IntoBytes;

impl<S: Sink> Writer<S> {
    /// Writes an Inotify (§21); its watches follow with [`Writer::inotify_watch`] (none when
    /// `dup_of` is not `NO_DUP`).
    pub fn inotify(&mut self, n: &raw::Inotify) -> Result<()> {
        self.state_record(KIND_INOTIFY, &[n.as_bytes()], |v, _, _| v.check_inotify(n))
    }

    /// Writes an InotifyWatch (§22) of the Inotify before it; `path_len` is taken from `path`.
    pub fn inotify_watch(&mut self, w: &raw::InotifyWatch, path: &[u8]) -> Result<()> {
        let at = self.v.offset;
        let mut w = *w;
        w.path_len = path_len(at, path)?.into();
        self.state_record(KIND_INOTIFY_WATCH, &[w.as_bytes(), path], |v, len, _| {
            if let Some(i) = path.iter().position(|&b| b == 0) {
                return Err(Error::new(
                    v.payload_off().saturating_add(32).saturating_add(to_u64(i)),
                    ErrorKind::BadField {
                        field: "path",
                        expected: "no NUL byte",
                        found: 0,
                    },
                ));
            }
            v.check_inotify_watch(&w, len, &[])
        })
    }

    /// Writes a Lock (§23).
    pub fn lock(&mut self, l: &raw::Lock) -> Result<()> {
        self.state_record(KIND_LOCK, &[l.as_bytes()], |v, _, _| v.check_lock(l))
    }

    /// Writes the VdsoData (§24) of the vDSO's Vma just written (after its VmaAttr, if any);
    /// `len` is taken from `bytes`.
    pub fn vdso_data(&mut self, bytes: &[u8]) -> Result<()> {
        let d = raw::VdsoData {
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX).into(),
            _reserved0: 0.into(),
        };
        self.state_record(KIND_VDSO_DATA, &[d.as_bytes(), bytes], |v, len, _| {
            v.check_vdso_data(&d, len)
        })
    }
}
