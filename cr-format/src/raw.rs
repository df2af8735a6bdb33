//! On-disk layouts: the equivalent of a C header, and nothing else.
//!
//! Every struct here is `#[repr(C)]`, built only from little-endian integers and byte arrays, so its
//! alignment is 1 and any byte offset can be viewed as one; sizes are asserted at compile time, and
//! every field is naturally aligned within an image (records start at multiples of 8), so C code can
//! cast too. Section numbers refer to `spec/FORMAT.md`. Validation lives in [`crate::read`].

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

mod state12;
pub use state12::*;

/// The image magic (FORMAT.md §3): `\x89` catches 7-bit truncation, `\r\n` and `\n` catch
/// line-ending conversion, `\x1a` stops a DOS `type`.
pub const MAGIC: [u8; 8] = [0x89, b'C', b'R', b'I', b'\r', b'\n', 0x1a, b'\n'];
/// The major format version this crate reads and writes.
pub const VERSION_MAJOR: u16 = 1;
/// The minor format version this crate writes (it reads any minor of [`VERSION_MAJOR`]).
pub const VERSION_MINOR: u16 = 2;

/// Record kind: image header (§3).
pub const KIND_HEADER: u16 = 1;
/// Record kind: task (§4).
pub const KIND_TASK: u16 = 2;
/// Record kind: registers (§5).
pub const KIND_REGS: u16 = 3;
/// Record kind: memory-management fields and auxv (§6).
pub const KIND_MM: u16 = 4;
/// Record kind: one virtual memory area (§7).
pub const KIND_VMA: u16 = 5;
/// Record kind: page runs of the preceding VMA, with their data (§8).
pub const KIND_PAGES: u16 = 6;
/// Record kind: tail (§9).
pub const KIND_TAIL: u16 = 7;
/// Record kind (1.1, non-critical): one open file descriptor, or the working directory or root
/// (§15).
pub const KIND_FILE: u16 = 8;
/// Record kind (1.1, non-critical): a piece of the contents of the File record before it (§16).
pub const KIND_FILE_DATA: u16 = 9;
/// Record kind (1.1, non-critical): signal dispositions, alternate stack, pending signals (§17).
pub const KIND_SIGNALS: u16 = 10;
/// Record kind (1.1, non-critical): interval and POSIX timers (§18).
pub const KIND_TIMERS: u16 = 11;
/// Record kind (1.1, non-critical): limits, groups and per-process attributes (§19).
pub const KIND_PROCESS: u16 = 12;
/// Record kind (1.1, non-critical): madvise and mlock attributes of the Vma before it (§20).
pub const KIND_VMA_ATTR: u16 = 13;
/// Record kind (1.2, non-critical): one inotify descriptor (§21).
pub const KIND_INOTIFY: u16 = 14;
/// Record kind (1.2, non-critical): one watch of the Inotify record before it (§22).
pub const KIND_INOTIFY_WATCH: u16 = 15;
/// Record kind (1.2, non-critical): a file lock the task holds (§23).
pub const KIND_LOCK: u16 = 16;
/// Record kind (1.2, non-critical): the bytes of the vDSO, right after its Vma (§24).
pub const KIND_VDSO_DATA: u16 = 17;
/// The kinds 1.0 defines, all critical: `KIND_HEADER..=KIND_CORE_LAST`.
pub const KIND_CORE_LAST: u16 = KIND_TAIL;
/// The highest kind 1.1 defines (`KIND_FILE..=KIND_LAST_1_1` need `version_minor` ≥ 1).
pub const KIND_LAST_1_1: u16 = KIND_VMA_ATTR;
/// The highest kind this version defines; the kinds of 1.1 and 1.2 (`KIND_FILE..=KIND_LAST`)
/// are non-critical (an older reader skips them); those of 1.2 (`KIND_INOTIFY..=KIND_LAST`)
/// need `version_minor` ≥ 2.
pub const KIND_LAST: u16 = KIND_VDSO_DATA;

/// Record flag: a reader that does not know this record's kind must reject the image (§2.2).
pub const RECORD_CRITICAL: u16 = 1;

/// Architecture: x86-64, numbered as ELF's `e_machine` (`EM_X86_64`).
pub const ARCH_X86_64: u16 = 62;

/// Diff method of a full image (§3).
pub const DIFF_NONE: u32 = 0;
/// Diff method: pages written since the parent, from write-protect dirty tracking.
pub const DIFF_WRITE_TRACKING: u32 = 1;
/// Diff method: page contents compared with the parent's.
pub const DIFF_CONTENT_COMPARE: u32 = 2;

/// VMA protection bit: readable (`PROT_READ`).
pub const PROT_READ: u32 = 1;
/// VMA protection bit: writable (`PROT_WRITE`).
pub const PROT_WRITE: u32 = 2;
/// VMA protection bit: executable (`PROT_EXEC`).
pub const PROT_EXEC: u32 = 4;
/// VMA flag: shared mapping (else private).
pub const VMA_SHARED: u32 = 1;
/// VMA flag: grows down (stack).
pub const VMA_GROWSDOWN: u32 = 2;
/// Every VMA flag this version defines.
pub const VMA_FLAGS_KNOWN: u32 = VMA_SHARED | VMA_GROWSDOWN;

/// VMA kind: anonymous memory.
pub const VMA_ANON: u16 = 0;
/// VMA kind: a file mapping (has a path).
pub const VMA_FILE: u16 = 1;
/// VMA kind: the heap (`[heap]`).
pub const VMA_HEAP: u16 = 2;
/// VMA kind: the main stack (`[stack]`).
pub const VMA_STACK: u16 = 3;
/// VMA kind: the vDSO (recorded, never copied).
pub const VMA_VDSO: u16 = 4;
/// VMA kind: the vvar page(s) (recorded, never copied).
pub const VMA_VVAR: u16 = 5;
/// VMA kind: the legacy vsyscall page (recorded, never copied).
pub const VMA_VSYSCALL: u16 = 6;

/// File role: an open file descriptor (`fd` is its number).
pub const ROLE_FD: u16 = 0;
/// File role: the working directory (`fd` is 0).
pub const ROLE_CWD: u16 = 1;
/// File role: the root directory (`fd` is 0).
pub const ROLE_ROOT: u16 = 2;

/// File type: something this version cannot describe (recorded so that it is named; not
/// restorable). `path` holds what `/proc/PID/fd/N` shows.
pub const FILE_UNSUPPORTED: u16 = 0;
/// File type: a regular file.
pub const FILE_REG: u16 = 1;
/// File type: a directory.
pub const FILE_DIR: u16 = 2;
/// File type: a character device.
pub const FILE_CHR: u16 = 3;
/// File type: a named FIFO (opened by path).
pub const FILE_FIFO: u16 = 4;
/// File type: one end of an anonymous pipe.
pub const FILE_PIPE: u16 = 5;
/// File type: a socket.
pub const FILE_SOCKET: u16 = 6;
/// File type: an eventfd.
pub const FILE_EVENTFD: u16 = 7;
/// File type: a timerfd.
pub const FILE_TIMERFD: u16 = 8;
/// File type: a signalfd.
pub const FILE_SIGNALFD: u16 = 9;
/// File type: an epoll instance.
pub const FILE_EPOLL: u16 = 10;
/// File type: a memfd.
pub const FILE_MEMFD: u16 = 11;
/// The highest file type this version defines.
pub const FILE_TYPE_LAST: u16 = FILE_MEMFD;

/// File flag: the file was deleted (its path no longer names it); its contents follow in
/// FileData records.
pub const FILE_DELETED: u32 = 1;
/// File flag: the file is a terminal.
pub const FILE_TTY: u32 = 2;
/// File flag: the contents follow in FileData records (deleted files, memfds, unread pipe
/// bytes).
pub const FILE_HAS_DATA: u32 = 4;
/// Every File flag this version defines.
pub const FILE_FLAGS_KNOWN: u32 = FILE_DELETED | FILE_TTY | FILE_HAS_DATA;
/// `dup_of` of a File that shares its open file description with no earlier descriptor.
pub const DUP_NONE: u32 = u32::MAX;

/// Pipe `params[1]`: the other end of this pipe is held outside the task (restore attaches
/// the descriptor only to what the caller names).
pub const PIPE_OTHER_END_OUTSIDE: u64 = 1;

/// Socket state (`params[3]` of a socket File): neither bound nor connected.
pub const SOCKET_UNBOUND: u64 = 0;
/// Socket state: bound to the address in the data, not listening nor connected.
pub const SOCKET_BOUND: u64 = 1;
/// Socket state: listening on the address in the data (`params[4]` is the backlog).
pub const SOCKET_LISTENING: u64 = 2;
/// Socket state: connected. Restorable only when the peer is in the image too (`params[5]`).
pub const SOCKET_CONNECTED: u64 = 3;
/// Socket family `AF_UNIX` (`params[0]`): a connected one may name its peer in `params[5]`.
pub const AF_UNIX: u64 = 1;

/// Pending-signal queue: the thread's own.
pub const QUEUE_THREAD: u32 = 0;
/// Pending-signal queue: the thread group's (shared).
pub const QUEUE_SHARED: u32 = 1;

/// Process attribute flag: the process is a child subreaper.
pub const ATTR_CHILD_SUBREAPER: u32 = 1;
/// Process attribute flag: `no_new_privs` is set.
pub const ATTR_NO_NEW_PRIVS: u32 = 2;
/// Process attribute flag: transparent huge pages are disabled (`PR_SET_THP_DISABLE`).
pub const ATTR_THP_DISABLE: u32 = 4;
/// Process attribute flag: `mlockall(MCL_FUTURE)` is in effect.
pub const ATTR_MLOCK_FUTURE: u32 = 8;
/// Process attribute flag: `mlockall(MCL_ONFAULT)` is in effect.
pub const ATTR_MLOCK_ONFAULT: u32 = 16;
/// Every process attribute flag this version defines.
pub const ATTR_FLAGS_KNOWN: u32 = 31;
/// Number of resource limits recorded (`RLIMIT_CPU`..=`RLIMIT_RTTIME`, Linux numbering).
pub const RLIMIT_COUNT: usize = 16;

/// VMA attribute: `MADV_DONTFORK`.
pub const VMA_ATTR_DONTFORK: u32 = 1;
/// VMA attribute: `MADV_DONTDUMP`.
pub const VMA_ATTR_DONTDUMP: u32 = 2;
/// VMA attribute: `MADV_WIPEONFORK`.
pub const VMA_ATTR_WIPEONFORK: u32 = 4;
/// VMA attribute: `MADV_HUGEPAGE`.
pub const VMA_ATTR_HUGEPAGE: u32 = 8;
/// VMA attribute: `MADV_NOHUGEPAGE`.
pub const VMA_ATTR_NOHUGEPAGE: u32 = 16;
/// VMA attribute: `MADV_MERGEABLE` (KSM).
pub const VMA_ATTR_MERGEABLE: u32 = 32;
/// VMA attribute: locked (`mlock`).
pub const VMA_ATTR_LOCKED: u32 = 64;
/// VMA attribute: locked on fault (`mlock2(MLOCK_ONFAULT)`).
pub const VMA_ATTR_LOCKONFAULT: u32 = 128;
/// Every VMA attribute this version defines.
pub const VMA_ATTR_KNOWN: u32 = 255;

/// Page-run kind: the pages' data follows in this record.
pub const RUN_DATA: u16 = 0;
/// Page-run kind: the pages are present and all zero.
pub const RUN_ZERO: u16 = 1;
/// Page-run kind: the pages are unchanged since the parent image.
pub const RUN_PARENT: u16 = 2;

/// Number of general registers in x86-64 `user_regs_struct` (`NT_PRSTATUS` order).
pub const X86_64_GPR_COUNT: usize = 27;
/// Size of the x86 FXSAVE area (`NT_PRFPREG`).
pub const FXSAVE_LEN: usize = 512;

/// The common record header (§2.1). 16 bytes; the payload of `len` bytes follows.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct RecordHeader {
    /// Record kind (`KIND_*`).
    pub kind: U16,
    /// Record flags (`RECORD_CRITICAL`).
    pub flags: U16,
    /// Payload length in bytes, a multiple of 8.
    pub len: U32,
    /// Position of the record in the image, counting from 0.
    pub index: U32,
    /// CRC-32 (ISO-HDLC) of header bytes 0..12 followed by the payload's checked part (§2.3).
    pub crc: U32,
}

/// Header payload (§3). 96 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// Major version: a reader rejects any other major.
    pub version_major: U16,
    /// Minor version: a reader accepts any minor of its major.
    pub version_minor: U16,
    /// Architecture of the task (`ARCH_*`, ELF `e_machine`).
    pub arch: U16,
    /// Must be zero.
    pub _reserved0: U16,
    /// Page size in bytes: a power of two, 4096..=65536.
    pub page_size: U32,
    /// Feature flags; none are defined in 1.x, so must be zero.
    pub flags: U32,
    /// Checkpoint id, ≥ 1, unique per node.
    pub crid: U64,
    /// CRID of the parent image, 0 for a full image, else < `crid`.
    pub parent_crid: U64,
    /// Tail digest of the parent image (0 for a full image).
    pub parent_digest: U64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: U64,
    /// How unchanged pages were found (`DIFF_*`); `DIFF_NONE` exactly when the image is full.
    pub diff_method: U32,
    /// Must be zero.
    pub _reserved1: U32,
    /// Producer name and version, UTF-8, NUL-padded.
    pub producer: [u8; 32],
}

/// Task payload (§4). 152 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Task {
    /// Thread id.
    pub pid: U32,
    /// Thread-group id.
    pub tgid: U32,
    /// Parent's pid.
    pub ppid: U32,
    /// Process group id.
    pub pgid: U32,
    /// Session id.
    pub sid: U32,
    /// State letter from `/proc/PID/stat` before the freeze (`R`, `S`, `D`, `T`, ...).
    pub state: u8,
    /// Must be zero.
    pub _reserved0: [u8; 3],
    /// Signal sent to the parent on exit.
    pub exit_signal: U32,
    /// `personality(2)` flags.
    pub personality: U32,
    /// Real, effective, saved and filesystem uid.
    pub uid: [U32; 4],
    /// Real, effective, saved and filesystem gid.
    pub gid: [U32; 4],
    /// Blocked signal mask (bit n-1 is signal n).
    pub sig_blocked: U64,
    /// Ignored signals.
    pub sig_ignored: U64,
    /// Signals with a handler.
    pub sig_caught: U64,
    /// Signals pending for the thread.
    pub sig_pending: U64,
    /// Signals pending for the thread group.
    pub sig_shared_pending: U64,
    /// Inheritable capabilities.
    pub cap_inheritable: U64,
    /// Permitted capabilities.
    pub cap_permitted: U64,
    /// Effective capabilities.
    pub cap_effective: U64,
    /// Command name, NUL-padded (no NUL needed at 16 bytes).
    pub comm: [u8; 16],
    /// File-creation mask.
    pub umask: U32,
    /// Must be zero.
    pub _reserved1: U32,
}

/// Registers payload, fixed part for x86-64 (§5). 744 bytes; `xsave_len` bytes of XSAVE area
/// follow, zero-padded to a multiple of 8.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct RegsX86_64 {
    /// Architecture tag; equals the Header's `arch`.
    pub arch: U16,
    /// Must be zero.
    pub _reserved0: U16,
    /// Length of the XSAVE area that follows (0 if none).
    pub xsave_len: U32,
    /// XCR0: the state components the XSAVE area can hold.
    pub xfeatures: U64,
    /// `user_regs_struct` in `NT_PRSTATUS` order: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx
    /// rdx rsi rdi orig_rax rip cs eflags rsp ss fs_base gs_base ds es fs gs.
    pub gpr: [U64; X86_64_GPR_COUNT],
    /// The FXSAVE area (`NT_PRFPREG`).
    pub fxsave: [u8; FXSAVE_LEN],
}

/// Mm payload, fixed part (§6). 96 bytes; `auxv_count` [`AuxvEntry`]s follow, then `exe_len`
/// bytes of executable path, zero-padded to a multiple of 8.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Mm {
    /// Start of the code segment.
    pub start_code: U64,
    /// End of the code segment.
    pub end_code: U64,
    /// Start of the data segment.
    pub start_data: U64,
    /// End of the data segment.
    pub end_data: U64,
    /// Start of the heap.
    pub start_brk: U64,
    /// Current program break.
    pub brk: U64,
    /// Start (top) of the main stack.
    pub start_stack: U64,
    /// Start of the argument strings.
    pub arg_start: U64,
    /// End of the argument strings.
    pub arg_end: U64,
    /// Start of the environment strings.
    pub env_start: U64,
    /// End of the environment strings.
    pub env_end: U64,
    /// Number of auxv entries that follow (the terminating `AT_NULL` included if recorded).
    pub auxv_count: U32,
    /// Length of the executable path that follows the auxv.
    pub exe_len: U16,
    /// Must be zero.
    pub _reserved0: U16,
}

/// One auxiliary-vector entry (§6). 16 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct AuxvEntry {
    /// `AT_*` type.
    pub key: U64,
    /// Value.
    pub value: U64,
}

/// Vma payload, fixed part (§7). 72 bytes; `path_len` bytes of path follow, zero-padded to a
/// multiple of 8.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Vma {
    /// First address, page-aligned.
    pub start: U64,
    /// One past the last address, page-aligned, > `start`.
    pub end: U64,
    /// Offset in the file of `start`, page-aligned (file mappings; else as the kernel shows it).
    pub offset: U64,
    /// Inode of the mapped file (0 if none).
    pub inode: U64,
    /// Size of the mapped file at capture, bytes.
    pub file_size: U64,
    /// Modification time of the mapped file at capture, ns since the epoch.
    pub file_mtime_ns: U64,
    /// Device major of the mapped file.
    pub dev_major: U32,
    /// Device minor of the mapped file.
    pub dev_minor: U32,
    /// `PROT_*` bits.
    pub prot: U32,
    /// `VMA_*` flags.
    pub flags: U32,
    /// `VMA_ANON` ..= `VMA_VSYSCALL`.
    pub kind: U16,
    /// Length of the path that follows; nonzero exactly for `VMA_FILE`.
    pub path_len: U16,
    /// Must be zero.
    pub _reserved0: U32,
}

/// Pages payload, fixed part (§8). 16 bytes; `run_count` [`PageRun`]s follow, then `pad_len` zero
/// bytes so that the data starts at a file offset that is a multiple of the page size, then the
/// data of every `RUN_DATA` run in order.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Pages {
    /// Number of runs, 1..=`MAX_RUNS_PER_RECORD`.
    pub run_count: U32,
    /// Zero bytes between the run table and the data (0 when there is no data).
    pub pad_len: U32,
    /// CRC-32 of the data area.
    pub data_crc: U32,
    /// Must be zero.
    pub _reserved0: U32,
}

/// One page run (§8). 16 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct PageRun {
    /// First address, page-aligned.
    pub addr: U64,
    /// Number of pages, ≥ 1.
    pub pages: U32,
    /// `RUN_*`.
    pub kind: U16,
    /// Must be zero.
    pub _reserved0: U16,
}

/// Tail payload (§9). 24 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Tail {
    /// Number of records before the tail.
    pub record_count: U64,
    /// Length of the whole image in bytes, tail included.
    pub image_len: U64,
    /// CRC-64/XZ of every record header before the tail, in order (§2.4).
    pub digest: U64,
}

/// File payload, fixed part (§15). 152 bytes; `path_len` bytes of path follow, zero-padded to a
/// multiple of 8, then `data_len` bytes of type-specific data, zero-padded to a multiple of 8.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct File {
    /// Descriptor number (`ROLE_FD`), else 0.
    pub fd: U32,
    /// `ROLE_*`.
    pub role: U16,
    /// `FILE_*` type.
    pub ftype: U16,
    /// `FILE_DELETED`, `FILE_TTY`, `FILE_HAS_DATA`.
    pub flags: U32,
    /// Descriptor flags (`FD_CLOEXEC` = 1).
    pub fd_flags: U32,
    /// Open flags as `/proc/PID/fdinfo` shows them (`O_*`, Linux x86-64 values).
    pub open_flags: U32,
    /// `st_mode` of the file.
    pub mode: U32,
    /// File offset.
    pub pos: U64,
    /// Inode number.
    pub inode: U64,
    /// Size at capture, bytes.
    pub size: U64,
    /// Modification time at capture, ns since the epoch.
    pub mtime_ns: U64,
    /// Major of the device that holds the file (`st_dev`).
    pub dev_major: U32,
    /// Minor of the device that holds the file.
    pub dev_minor: U32,
    /// Major of the device the file is (`st_rdev`, character devices).
    pub rdev_major: U32,
    /// Minor of the device the file is.
    pub rdev_minor: U32,
    /// The earlier descriptor that shares this open file description, or `DUP_NONE`.
    pub dup_of: U32,
    /// Length of the path that follows.
    pub path_len: U16,
    /// Must be zero.
    pub _reserved0: U16,
    /// Length of the type-specific data that follows the path.
    pub data_len: U32,
    /// Must be zero.
    pub _reserved1: U32,
    /// Type-specific values (§15); unused ones are zero:
    /// - `FILE_PIPE`, `FILE_FIFO`: `[0]` the pipe's capacity (`F_GETPIPE_SZ`); the unread
    ///   bytes follow in FileData records (`FILE_HAS_DATA`) of the first File of the pipe;
    ///   both ends of one pipe have the same `inode`; `FILE_PIPE` `[1]`
    ///   [`PIPE_OTHER_END_OUTSIDE`] when the end the task lacks is held outside it (else 0:
    ///   both ends in the task, or the other one closed everywhere);
    /// - `FILE_EVENTFD`: `[0]` the counter, `[1]` `EFD_SEMAPHORE` (1) or 0;
    /// - `FILE_TIMERFD`: `[0]` clock id, `[1]` ticks not yet read, `[2]` interval ns, `[3]`
    ///   time to the next expiry ns (0: disarmed);
    /// - `FILE_SIGNALFD`: `[0]` the signal mask;
    /// - `FILE_SOCKET`: `[0]` family (`AF_*`), `[1]` type (`SOCK_*`), `[2]` protocol, `[3]`
    ///   state (`SOCKET_*`), `[4]` listen backlog, `[5]` the peer's inode for a connected Unix
    ///   socket whose peer is in the image too (else 0); the data is the bound address (the
    ///   `sockaddr` bytes `getsockname` gives), empty when unbound;
    /// - `FILE_MEMFD`: `[0]` seals (`F_GET_SEALS`); the contents follow in FileData;
    /// - `FILE_EPOLL`: none; the data is the interest list, [`EpollEntry`]s.
    pub params: [U64; 8],
}

/// FileData payload, fixed part (§16). 16 bytes; `len` bytes follow, zero-padded to a multiple
/// of 8.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct FileData {
    /// Offset of these bytes in the contents: 0 for the first FileData of a File, then where the
    /// previous one ended.
    pub offset: U64,
    /// Number of bytes that follow.
    pub len: U32,
    /// Must be zero.
    pub _reserved0: U32,
}

/// One epoll interest-list entry in an epoll File's data (§15). 16 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct EpollEntry {
    /// The watched descriptor.
    pub fd: U32,
    /// `EPOLL*` event mask.
    pub events: U32,
    /// The user data returned with events.
    pub data: U64,
}

/// One signal's disposition (§17), the kernel's `struct sigaction` on x86-64. 32 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct SigAction {
    /// Handler address, or `SIG_DFL` (0) / `SIG_IGN` (1).
    pub handler: U64,
    /// `SA_*` flags.
    pub flags: U64,
    /// `sa_restorer`.
    pub restorer: U64,
    /// Signals blocked while the handler runs (bit n-1 is signal n).
    pub mask: U64,
}

/// Signals payload, fixed part (§17). 2072 bytes; `pending_count` [`PendingSignal`]s follow.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Signals {
    /// Alternate signal stack: `ss_sp`.
    pub altstack_sp: U64,
    /// `ss_size`.
    pub altstack_size: U64,
    /// `ss_flags` (`SS_DISABLE` = 2, `SS_AUTODISARM`, ...).
    pub altstack_flags: U32,
    /// Number of pending signals that follow.
    pub pending_count: U32,
    /// Dispositions of signals 1..=64: `actions[n - 1]` is signal n's.
    pub actions: [SigAction; 64],
}

/// One pending signal (§17). 136 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct PendingSignal {
    /// `QUEUE_THREAD` or `QUEUE_SHARED`.
    pub queue: U32,
    /// Must be zero.
    pub _reserved0: U32,
    /// The `siginfo_t` as `PTRACE_PEEKSIGINFO` returns it.
    pub siginfo: [u8; 128],
}

/// One interval timer (§18). 16 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct ITimer {
    /// Interval, ns (0: one-shot).
    pub interval_ns: U64,
    /// Time to the next expiry, ns (0: disarmed).
    pub value_ns: U64,
}

/// Timers payload, fixed part (§18). 56 bytes; `posix_count` [`PosixTimer`]s follow.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Timers {
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`, in that order.
    pub itimers: [ITimer; 3],
    /// Number of POSIX timers that follow.
    pub posix_count: U32,
    /// Must be zero.
    pub _reserved0: U32,
}

/// One POSIX timer (§18). 48 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct PosixTimer {
    /// Timer id (`timer_t`).
    pub id: U32,
    /// Clock id.
    pub clock: U32,
    /// `sigev_notify`.
    pub sigev_notify: U32,
    /// `sigev_signo`.
    pub sigev_signo: U32,
    /// `sigev_value`.
    pub sigev_value: U64,
    /// Thread to notify (`SIGEV_THREAD_ID`), else 0.
    pub notify_tid: U32,
    /// Overruns not yet read (`timer_getoverrun`).
    pub overrun: U32,
    /// Interval, ns.
    pub interval_ns: U64,
    /// Time to the next expiry, ns (0: disarmed).
    pub value_ns: U64,
}

/// One resource limit (§19). 16 bytes; `u64::MAX` is `RLIM_INFINITY`.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Rlimit {
    /// Soft limit.
    pub cur: U64,
    /// Hard limit.
    pub max: U64,
}

/// Process payload, fixed part (§19). 352 bytes; `group_count` supplementary group ids (`u32`)
/// follow, zero-padded to a multiple of 8.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Process {
    /// `RLIMIT_CPU`..=`RLIMIT_RTTIME`, Linux numbering.
    pub rlimits: [Rlimit; RLIMIT_COUNT],
    /// Timer slack, ns (`PR_GET_TIMERSLACK`).
    pub timer_slack_ns: U64,
    /// rseq area address, 0 if none registered.
    pub rseq_addr: U64,
    /// rseq area length.
    pub rseq_len: U32,
    /// rseq signature.
    pub rseq_sig: U32,
    /// Robust futex list head, 0 if none.
    pub robust_list: U64,
    /// Robust futex list head length.
    pub robust_list_len: U64,
    /// `set_tid_address` (clear-child-tid) address, 0 if none.
    pub clear_child_tid: U64,
    /// Capability bounding set.
    pub cap_bounding: U64,
    /// Ambient capabilities.
    pub cap_ambient: U64,
    /// `PR_GET_SECUREBITS`.
    pub securebits: U32,
    /// Parent-death signal (0: none).
    pub pdeathsig: U32,
    /// `PR_GET_DUMPABLE` (0, 1 or 2).
    pub dumpable: U32,
    /// `ATTR_*` flags.
    pub attr_flags: U32,
    /// `oom_score_adj`, -1000..=1000, stored as its 32-bit two's complement.
    pub oom_score_adj: U32,
    /// Seccomp mode: 0 none, 1 strict, 2 filter.
    pub seccomp_mode: U32,
    /// Number of supplementary groups that follow.
    pub group_count: U32,
    /// Must be zero.
    pub _reserved0: U32,
}

/// VmaAttr payload (§20). 8 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct VmaAttr {
    /// `VMA_ATTR_*` bits.
    pub attrs: U32,
    /// Must be zero.
    pub _reserved0: U32,
}

const _: () = {
    assert!(size_of::<File>() == 152);
    assert!(size_of::<FileData>() == 16);
    assert!(size_of::<EpollEntry>() == 16);
    assert!(size_of::<SigAction>() == 32);
    assert!(size_of::<Signals>() == 2072);
    assert!(size_of::<PendingSignal>() == 136);
    assert!(size_of::<ITimer>() == 16);
    assert!(size_of::<Timers>() == 56);
    assert!(size_of::<PosixTimer>() == 48);
    assert!(size_of::<Rlimit>() == 16);
    assert!(size_of::<Process>() == 352);
    assert!(size_of::<VmaAttr>() == 8);
    assert!(size_of::<RecordHeader>() == 16);
    assert!(size_of::<Header>() == 96);
    assert!(size_of::<Task>() == 152);
    assert!(size_of::<RegsX86_64>() == 744);
    assert!(size_of::<Mm>() == 96);
    assert!(size_of::<AuxvEntry>() == 16);
    assert!(size_of::<Vma>() == 72);
    assert!(size_of::<Pages>() == 16);
    assert!(size_of::<PageRun>() == 16);
    assert!(size_of::<Tail>() == 24);
};
