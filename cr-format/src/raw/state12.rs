//! The layouts and constants of the record kinds of 1.2 (FORMAT.md §21 to §24): Inotify,
//! InotifyWatch, Lock, VdsoData. Their kind numbers are with the others in [`super`].

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `dup_of` of an Inotify that is the first descriptor of its inotify instance (§21).
pub const NO_DUP: u32 = u32::MAX;

/// Lock type: a POSIX record lock (`fcntl(F_SETLK)`), owned by the process (§23).
pub const LOCK_POSIX: u16 = 1;
/// Lock type: a BSD lock (`flock`), owned by the open file description.
pub const LOCK_FLOCK: u16 = 2;
/// Lock type: an open-file-description lock (`fcntl(F_OFD_SETLK)`).
pub const LOCK_OFD: u16 = 3;
/// Lock mode: shared (`F_RDLCK`, `LOCK_SH`).
pub const LOCK_READ: u16 = 1;
/// Lock mode: exclusive (`F_WRLCK`, `LOCK_EX`).
pub const LOCK_WRITE: u16 = 2;

/// Inotify payload (§21). 16 bytes: one inotify descriptor of the task.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Inotify {
    /// Descriptor number, below 2^31, above the previous Inotify's.
    pub fd: U32,
    /// Descriptor flags (`FD_CLOEXEC` = 1, or 0).
    pub fd_flags: U32,
    /// File status flags as `/proc/PID/fdinfo` shows them (`O_*`, Linux x86-64 values).
    pub open_flags: U32,
    /// [`NO_DUP`], or the fd of an earlier Inotify of the same inotify instance (then no
    /// InotifyWatch follows).
    pub dup_of: U32,
}

/// InotifyWatch payload, fixed part (§22). 32 bytes; `path_len` bytes of path follow,
/// zero-padded to a multiple of 8.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct InotifyWatch {
    /// Watch descriptor, 1..=2^31-1, above the previous watch's of the same Inotify.
    pub wd: U32,
    /// The event mask as `/proc/PID/fdinfo` shows it (`IN_*` bits), nonzero.
    pub mask: U32,
    /// Inode of the watched file or directory.
    pub inode: U64,
    /// Major of the device that holds it.
    pub dev_major: U32,
    /// Minor of the device that holds it.
    pub dev_minor: U32,
    /// Length of the path that follows, 1..=`MAX_PATH`.
    pub path_len: U16,
    /// Must be zero.
    pub _reserved0: [u8; 6],
}

/// Lock payload (§23). 24 bytes: a file lock the task holds.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Lock {
    /// The fd of a File record (role FD) open on the locked file; for `LOCK_FLOCK` and
    /// `LOCK_OFD`, a descriptor of the open file description that owns the lock.
    pub fd: U32,
    /// `LOCK_POSIX`, `LOCK_FLOCK` or `LOCK_OFD`.
    pub ltype: U16,
    /// `LOCK_READ` or `LOCK_WRITE`.
    pub mode: U16,
    /// First byte locked (0 for `LOCK_FLOCK`).
    pub start: U64,
    /// Bytes locked, 0 = to the end of the file and beyond (0 for `LOCK_FLOCK`).
    pub len: U64,
}

/// VdsoData payload, fixed part (§24). 8 bytes; `len` bytes of the vDSO follow.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct VdsoData {
    /// Number of bytes that follow: the vDSO Vma's `end - start`.
    pub len: U32,
    /// Must be zero.
    pub _reserved0: U32,
}

const _: () = {
    assert!(size_of::<Inotify>() == 16);
    assert!(size_of::<InotifyWatch>() == 32);
    assert!(size_of::<Lock>() == 24);
    assert!(size_of::<VdsoData>() == 8);
};
