//! On-disk layouts: the equivalent of a C header, and nothing else.
//!
//! Every struct here is `#[repr(C)]`, built only from little-endian integers and byte arrays, so its
//! alignment is 1 and any byte offset can be viewed as one; sizes are asserted at compile time, and
//! every field is naturally aligned within an image (records start at multiples of 8), so C code can
//! cast too. Section numbers refer to `spec/FORMAT.md`. Validation lives in [`crate::read`].

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The image magic (FORMAT.md §3): `\x89` catches 7-bit truncation, `\r\n` and `\n` catch
/// line-ending conversion, `\x1a` stops a DOS `type`.
pub const MAGIC: [u8; 8] = [0x89, b'C', b'R', b'I', b'\r', b'\n', 0x1a, b'\n'];
/// The major format version this crate reads and writes.
pub const VERSION_MAJOR: u16 = 1;
/// The minor format version this crate writes (it reads any minor of [`VERSION_MAJOR`]).
pub const VERSION_MINOR: u16 = 0;

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

const _: () = {
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
