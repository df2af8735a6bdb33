//! Limits (FORMAT.md §10). Each is checked before anything is allocated or looped over; exceeding
//! one is an error, never a silent drop.

/// Largest page size an image may declare.
pub const MAX_PAGE_SIZE: u32 = 65536;
/// Smallest page size an image may declare.
pub const MIN_PAGE_SIZE: u32 = 4096;
/// Most VMA records in one image (Linux's default `vm.max_map_count` is 65530).
pub const MAX_VMAS: u32 = 65536;
/// Longest path (VMA file, executable), bytes.
pub const MAX_PATH: u32 = 4096;
/// Most auxv entries.
pub const MAX_AUXV: u32 = 128;
/// Longest XSAVE area, bytes.
pub const MAX_XSAVE_LEN: u32 = 16384;
/// Most runs in one Pages record.
pub const MAX_RUNS_PER_RECORD: u32 = 1024;
/// Most page data in one Pages record, bytes (1 MiB): a record fits in a core's L2 cache, so a
/// streaming reader checks each one's CRCs while its bytes are still cached.
pub const MAX_DATA_PER_RECORD: u32 = 1 << 20;
/// Longest payload of any record, bytes: a full Pages record (header, run table, alignment pad,
/// data) fits, and so does every other record. A streaming reader never buffers more than this
/// plus a record header.
pub const MAX_PAYLOAD_LEN: u32 =
    16 + 16 * MAX_RUNS_PER_RECORD + MAX_PAGE_SIZE + MAX_DATA_PER_RECORD;
/// Longest chain of images, the top one included.
pub const MAX_CHAIN_DEPTH: u32 = 64;
/// Most File records in one image (Linux's `fs.nr_open` default is 1048576; a task with more
/// open descriptors than this is refused at capture).
pub const MAX_FILES: u32 = 65536;
/// Most epoll entries in one File record's data.
pub const MAX_EPOLL_ENTRIES: u32 = 65536;
/// Most bytes of a socket File's address (`sizeof(struct sockaddr_storage)`).
pub const MAX_SOCKADDR: u32 = 128;
/// Most bytes of contents in one FileData record (1 MiB, as [`MAX_DATA_PER_RECORD`]).
pub const MAX_FILE_DATA: u32 = MAX_DATA_PER_RECORD;
/// Most pending signals in a Signals record.
pub const MAX_PENDING_SIGNALS: u32 = 4096;
/// Most POSIX timers in a Timers record.
pub const MAX_POSIX_TIMERS: u32 = 4096;
/// Most supplementary groups in a Process record (Linux's `NGROUPS_MAX`).
pub const MAX_GROUPS: u32 = 65536;
/// Most InotifyWatch records in one image (Linux's default `fs.inotify.max_user_watches` is
/// larger on big machines; a task with more is refused at capture).
pub const MAX_INOTIFY_WATCHES: u32 = 65536;
/// Most Lock records in one image.
pub const MAX_LOCKS: u32 = 65536;
/// Longest vDSO a VdsoData record holds, bytes (1 MiB; x86-64's is 8 KiB).
pub const MAX_VDSO_LEN: u32 = 1 << 20;
