/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * cr_image.h - the cr checkpoint/restart image format, version 1.1, for C.
 *
 * The normative description is spec/FORMAT.md; section numbers below refer to it. The Rust crate
 * cr-format (cr-format/src/raw.rs, limits.rs) defines the same layouts and constants, and
 * cr-format/tests/c_header.rs checks this file against FORMAT.md and the Rust constants.
 *
 * Byte order: every integer field is LITTLE-ENDIAN on disk, whatever the host. The structs below
 * give the layout; on a big-endian host read fields through cr_get_le16/32/64 (or le16_to_cpu()
 * and friends in the kernel), never directly.
 *
 * Layout: every field is naturally aligned at the offset FORMAT.md gives, and every struct's size
 * is a multiple of its alignment, so no packing attribute is needed and the compiler adds no
 * padding; the _Static_asserts below prove it for every field. Records start at multiples of 8
 * in an image, so a record in a buffer that is itself 8-byte aligned can be viewed in place.
 *
 * Usable from userspace (C90 or later, <stdint.h>), as a UAPI header (define CR_UAPI: the
 * integer types come from <linux/types.h>, as in the kernel's own uapi headers) and from the
 * kernel (__KERNEL__). With CR_UAPI or __KERNEL__, the field types are __u8 and
 * __le16/__le32/__le64, which sparse checks for endianness. The layout checks are C11
 * _Static_asserts (C++11 static_asserts), and in C90/C99 an array declaration whose size is
 * negative when a check fails, so every dialect checks them. Valid C90: no // comments, no
 * long long constants, `inline` only where the dialect has it.
 */
#ifndef CR_IMAGE_H
#define CR_IMAGE_H

#if defined(__KERNEL__) || defined(CR_UAPI)
#ifdef __KERNEL__
#include <linux/stddef.h>
#else
#include <stddef.h>
#endif
#include <linux/types.h>
typedef __u8 cr_u8;
typedef __u16 cr_u16;
typedef __u32 cr_u32;
typedef __u64 cr_u64;
typedef __le16 cr_le16;
typedef __le32 cr_le32;
typedef __le64 cr_le64;
#else
#include <stddef.h>
#include <stdint.h>
typedef uint8_t cr_u8;
typedef uint16_t cr_u16;
typedef uint32_t cr_u32;
typedef uint64_t cr_u64;
/* Little-endian on disk: read with cr_get_le16() etc. on big-endian hosts. */
typedef uint16_t cr_le16;
typedef uint32_t cr_le32;
typedef uint64_t cr_le64;
#endif

/* A compile-time check: C11 _Static_assert, C++11 static_assert; before those, a redeclared
 * extern array whose size is -1 (an error) when the check fails and 1 (a compatible
 * redeclaration) when it holds. */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define CR_STATIC_ASSERT(c, msg) static_assert(c, msg)
#elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define CR_STATIC_ASSERT(c, msg) _Static_assert(c, msg)
#else
#define CR_STATIC_ASSERT(c, msg) extern char cr_static_assert_failed[(c) ? 1 : -1]
#endif

/* `static inline` where the dialect has it (C99, C++, GNU C90's __inline__). */
#if defined(__cplusplus) || (defined(__STDC_VERSION__) && __STDC_VERSION__ >= 199901L)
#define CR_INLINE static inline
#elif defined(__GNUC__)
#define CR_INLINE static __inline__
#else
#define CR_INLINE static
#endif

/* ---- Constants (raw.rs) ------------------------------------------------------------------ */

/* §3: the image magic, 8 bytes (not NUL-terminated: compare CR_MAGIC_LEN bytes). */
#define CR_MAGIC "\x89" "CRI\r\n\x1a\n"
#define CR_MAGIC_LEN 8
/* §11: the major version this header describes, and the minor version it writes. */
#define CR_VERSION_MAJOR 1
#define CR_VERSION_MINOR 2

/* §2.1: size of the record header that precedes every payload. */
#define CR_RECORD_HEADER_LEN 16

/* §2.2: record kinds. 1..7 are 1.0's (critical), 8..13 1.1's and 14..17 1.2's (non-critical);
 * 0 and 18..65535 are unknown in 1.2. */
#define CR_KIND_HEADER 1
#define CR_KIND_TASK 2
#define CR_KIND_REGS 3
#define CR_KIND_MM 4
#define CR_KIND_VMA 5
#define CR_KIND_PAGES 6
#define CR_KIND_TAIL 7
#define CR_KIND_FILE 8
#define CR_KIND_FILE_DATA 9
#define CR_KIND_SIGNALS 10
#define CR_KIND_TIMERS 11
#define CR_KIND_PROCESS 12
#define CR_KIND_VMA_ATTR 13
#define CR_KIND_INOTIFY 14
#define CR_KIND_INOTIFY_WATCH 15
#define CR_KIND_LOCK 16
#define CR_KIND_VDSO_DATA 17
#define CR_KIND_CORE_LAST 7 /* the last kind of 1.0 */
#define CR_KIND_LAST_1_1 13 /* the last kind of 1.1 */
#define CR_KIND_LAST 17     /* the last kind of 1.2 */

/* §2.2: record flag: a reader that does not know the kind must reject the image. */
#define CR_RECORD_CRITICAL 1

/* §3: architecture, as ELF e_machine (EM_X86_64). */
#define CR_ARCH_X86_64 62

/* §3: diff methods. */
#define CR_DIFF_NONE 0
#define CR_DIFF_WRITE_TRACKING 1
#define CR_DIFF_CONTENT_COMPARE 2

/* §7: VMA protection bits (as PROT_*), flags and kinds. */
#define CR_PROT_READ 1
#define CR_PROT_WRITE 2
#define CR_PROT_EXEC 4
#define CR_VMA_SHARED 1
#define CR_VMA_GROWSDOWN 2
#define CR_VMA_FLAGS_KNOWN 3
#define CR_VMA_ANON 0
#define CR_VMA_FILE 1
#define CR_VMA_HEAP 2
#define CR_VMA_STACK 3
#define CR_VMA_VDSO 4
#define CR_VMA_VVAR 5
#define CR_VMA_VSYSCALL 6

/* §8: page-run kinds. */
#define CR_RUN_DATA 0
#define CR_RUN_ZERO 1
#define CR_RUN_PARENT 2

/* §15.1: File roles and types. */
#define CR_ROLE_FD 0
#define CR_ROLE_CWD 1
#define CR_ROLE_ROOT 2
#define CR_FILE_UNSUPPORTED 0
#define CR_FILE_REG 1
#define CR_FILE_DIR 2
#define CR_FILE_CHR 3
#define CR_FILE_FIFO 4
#define CR_FILE_PIPE 5
#define CR_FILE_SOCKET 6
#define CR_FILE_EVENTFD 7
#define CR_FILE_TIMERFD 8
#define CR_FILE_SIGNALFD 9
#define CR_FILE_EPOLL 10
#define CR_FILE_MEMFD 11
#define CR_FILE_TYPE_LAST 11

/* §15.2: File flags; §15: dup_of of a File that is no dup. */
#define CR_FILE_DELETED 1
#define CR_FILE_TTY 2
#define CR_FILE_HAS_DATA 4
#define CR_FILE_FLAGS_KNOWN 7
#define CR_DUP_NONE 0xffffffffu

/* §21: dup_of of an Inotify that is no dup. §23: lock types and modes. */
#define CR_NO_DUP 0xffffffffu
#define CR_LOCK_POSIX 1
#define CR_LOCK_FLOCK 2
#define CR_LOCK_OFD 3
#define CR_LOCK_READ 1
#define CR_LOCK_WRITE 2

/* §15.3: socket states (params[3] of a socket File). */
#define CR_SOCKET_UNBOUND 0
#define CR_SOCKET_BOUND 1
#define CR_SOCKET_LISTENING 2
#define CR_SOCKET_CONNECTED 3
/* Pipe `params[1]`: the end the task lacks is held outside it. */
#define CR_PIPE_OTHER_END_OUTSIDE 1
/* Socket family of `params[0]` whose connected sockets may name their peer in `params[5]`. */
#define CR_AF_UNIX 1

/* §17.2: pending-signal queues. */
#define CR_QUEUE_THREAD 0
#define CR_QUEUE_SHARED 1

/* §19: process attribute flags, and the number of resource limits. */
#define CR_ATTR_CHILD_SUBREAPER 1
#define CR_ATTR_NO_NEW_PRIVS 2
#define CR_ATTR_THP_DISABLE 4
#define CR_ATTR_MLOCK_FUTURE 8
#define CR_ATTR_MLOCK_ONFAULT 16
#define CR_ATTR_FLAGS_KNOWN 31
#define CR_RLIMIT_COUNT 16

/* §20: VMA attributes. */
#define CR_VMA_ATTR_DONTFORK 1
#define CR_VMA_ATTR_DONTDUMP 2
#define CR_VMA_ATTR_WIPEONFORK 4
#define CR_VMA_ATTR_HUGEPAGE 8
#define CR_VMA_ATTR_NOHUGEPAGE 16
#define CR_VMA_ATTR_MERGEABLE 32
#define CR_VMA_ATTR_LOCKED 64
#define CR_VMA_ATTR_LOCKONFAULT 128
#define CR_VMA_ATTR_KNOWN 255

/* §5: x86-64 register file. */
#define CR_X86_64_GPR_COUNT 27
#define CR_FXSAVE_LEN 512

/* §5: index of each register in cr_regs_x86_64.gpr (user_regs_struct, NT_PRSTATUS order). */
#define CR_GPR_R15 0
#define CR_GPR_R14 1
#define CR_GPR_R13 2
#define CR_GPR_R12 3
#define CR_GPR_RBP 4
#define CR_GPR_RBX 5
#define CR_GPR_R11 6
#define CR_GPR_R10 7
#define CR_GPR_R9 8
#define CR_GPR_R8 9
#define CR_GPR_RAX 10
#define CR_GPR_RCX 11
#define CR_GPR_RDX 12
#define CR_GPR_RSI 13
#define CR_GPR_RDI 14
#define CR_GPR_ORIG_RAX 15
#define CR_GPR_RIP 16
#define CR_GPR_CS 17
#define CR_GPR_EFLAGS 18
#define CR_GPR_RSP 19
#define CR_GPR_SS 20
#define CR_GPR_FS_BASE 21
#define CR_GPR_GS_BASE 22
#define CR_GPR_DS 23
#define CR_GPR_ES 24
#define CR_GPR_FS 25
#define CR_GPR_GS 26

/* ---- Limits (limits.rs, FORMAT.md §10) ---------------------------------------------------- */

#define CR_MAX_PAGE_SIZE 65536u
#define CR_MIN_PAGE_SIZE 4096u
#define CR_MAX_VMAS 65536u
#define CR_MAX_PATH 4096u
#define CR_MAX_AUXV 128u
#define CR_MAX_XSAVE_LEN 16384u
#define CR_MAX_RUNS_PER_RECORD 1024u
#define CR_MAX_DATA_PER_RECORD 1048576u /* 1 MiB */
/* 16 + 16 * CR_MAX_RUNS_PER_RECORD + CR_MAX_PAGE_SIZE + CR_MAX_DATA_PER_RECORD */
#define CR_MAX_PAYLOAD_LEN 1130512u
#define CR_MAX_CHAIN_DEPTH 64u
#define CR_MAX_FILES 65536u
#define CR_MAX_EPOLL_ENTRIES 65536u
#define CR_MAX_SOCKADDR 128u
#define CR_MAX_FILE_DATA 1048576u
#define CR_MAX_PENDING_SIGNALS 4096u
#define CR_MAX_POSIX_TIMERS 4096u
#define CR_MAX_GROUPS 65536u
#define CR_MAX_INOTIFY_WATCHES 65536u
#define CR_MAX_LOCKS 65536u
#define CR_MAX_VDSO_LEN 1048576u /* 1 MiB */

CR_STATIC_ASSERT(CR_MAX_PAYLOAD_LEN ==
			 16u + 16u * CR_MAX_RUNS_PER_RECORD + CR_MAX_PAGE_SIZE + CR_MAX_DATA_PER_RECORD,
		 "CR_MAX_PAYLOAD_LEN");
CR_STATIC_ASSERT(CR_VMA_FLAGS_KNOWN == (CR_VMA_SHARED | CR_VMA_GROWSDOWN), "CR_VMA_FLAGS_KNOWN");
CR_STATIC_ASSERT(CR_FILE_FLAGS_KNOWN == (CR_FILE_DELETED | CR_FILE_TTY | CR_FILE_HAS_DATA),
		 "CR_FILE_FLAGS_KNOWN");
CR_STATIC_ASSERT(CR_ATTR_FLAGS_KNOWN == (CR_ATTR_CHILD_SUBREAPER | CR_ATTR_NO_NEW_PRIVS |
					 CR_ATTR_THP_DISABLE | CR_ATTR_MLOCK_FUTURE |
					 CR_ATTR_MLOCK_ONFAULT),
		 "CR_ATTR_FLAGS_KNOWN");
CR_STATIC_ASSERT(CR_VMA_ATTR_KNOWN == 2u * CR_VMA_ATTR_LOCKONFAULT - 1u, "CR_VMA_ATTR_KNOWN");
CR_STATIC_ASSERT(CR_MAX_FILE_DATA == CR_MAX_DATA_PER_RECORD, "CR_MAX_FILE_DATA");

/* ---- Layouts ------------------------------------------------------------------------------ */

/* Every field's offset and size, and every struct's size, as FORMAT.md's tables give them. */
#define CR_CHECK_SIZE(s, n) CR_STATIC_ASSERT(sizeof(struct s) == (n), "size of struct " #s)
#define CR_CHECK_FIELD(s, f, off, n)                                                           \
	CR_STATIC_ASSERT(offsetof(struct s, f) == (off), "offset of " #s "." #f);                \
	CR_STATIC_ASSERT(sizeof(((struct s *)0)->f) == (n), "size of " #s "." #f)

/* FORMAT.md §2.1: 16 bytes (RecordHeader in cr-format). */
struct cr_record_header {
	cr_le16 kind;                  /*   0: record kind (§2.2) */
	cr_le16 flags;                 /*   2: CR_RECORD_CRITICAL for kinds 1..7, 0 for 8..13 (§2.2) */
	cr_le32 len;                   /*   4: payload bytes after this header, a multiple of 8 */
	cr_le32 index;                 /*   8: position of the record in the image, counting from 0 */
	cr_le32 crc;                   /*  12: CRC-32 of bytes 0..12, then the checked part (§2.3) */
};
CR_CHECK_SIZE(cr_record_header, 16);
CR_CHECK_FIELD(cr_record_header, kind, 0, 2);
CR_CHECK_FIELD(cr_record_header, flags, 2, 2);
CR_CHECK_FIELD(cr_record_header, len, 4, 4);
CR_CHECK_FIELD(cr_record_header, index, 8, 4);
CR_CHECK_FIELD(cr_record_header, crc, 12, 4);

/* FORMAT.md §3: 96 bytes (Header in cr-format). */
struct cr_header {
	cr_u8 magic[8];              /*   0: CR_MAGIC */
	cr_le16 version_major;         /*   8: CR_VERSION_MAJOR */
	cr_le16 version_minor;         /*  10: any; this version writes 1 */
	cr_le16 arch;                  /*  12: CR_ARCH_X86_64 */
	cr_le16 _reserved0;            /*  14: must be 0 */
	cr_le32 page_size;             /*  16: power of two, 4096..65536 */
	cr_le32 flags;                 /*  20: none defined in 1.x: 0 */
	cr_le64 crid;                  /*  24: checkpoint id of this image (§13), at least 1 */
	cr_le64 parent_crid;           /*  32: 0 (full image) or < crid */
	cr_le64 parent_digest;         /*  40: 0 (full image) or the parent's tail digest */
	cr_le64 created_ns;            /*  48: creation time, ns since the Unix epoch */
	cr_le32 diff_method;           /*  56: CR_DIFF_*: 0 exactly in a full image */
	cr_le32 _reserved1;            /*  60: must be 0 */
	cr_u8 producer[32];          /*  64: writer name and version, NUL-padded */
};
CR_CHECK_SIZE(cr_header, 96);
CR_CHECK_FIELD(cr_header, magic, 0, 8);
CR_CHECK_FIELD(cr_header, version_major, 8, 2);
CR_CHECK_FIELD(cr_header, version_minor, 10, 2);
CR_CHECK_FIELD(cr_header, arch, 12, 2);
CR_CHECK_FIELD(cr_header, _reserved0, 14, 2);
CR_CHECK_FIELD(cr_header, page_size, 16, 4);
CR_CHECK_FIELD(cr_header, flags, 20, 4);
CR_CHECK_FIELD(cr_header, crid, 24, 8);
CR_CHECK_FIELD(cr_header, parent_crid, 32, 8);
CR_CHECK_FIELD(cr_header, parent_digest, 40, 8);
CR_CHECK_FIELD(cr_header, created_ns, 48, 8);
CR_CHECK_FIELD(cr_header, diff_method, 56, 4);
CR_CHECK_FIELD(cr_header, _reserved1, 60, 4);
CR_CHECK_FIELD(cr_header, producer, 64, 32);

/* FORMAT.md §4: 152 bytes (Task in cr-format). */
struct cr_task {
	cr_le32 pid;                   /*   0: thread id, at least 1 */
	cr_le32 tgid;                  /*   4: thread-group id */
	cr_le32 ppid;                  /*   8: parent's pid */
	cr_le32 pgid;                  /*  12: process group id */
	cr_le32 sid;                   /*  16: session id */
	cr_u8 state;                 /*  20: state letter of /proc/PID/stat: R, S, D, T, ... */
	cr_u8 _reserved0[3];         /*  21: must be 0 */
	cr_le32 exit_signal;           /*  24: signal sent to the parent on exit (usually 17, SIGCHLD) */
	cr_le32 personality;           /*  28: personality(2) flags */
	cr_le32 uid[4];                /*  32: real, effective, saved and filesystem uid */
	cr_le32 gid[4];                /*  48: real, effective, saved and filesystem gid */
	cr_le64 sig_blocked;           /*  64: blocked signal mask: bit n-1 is signal n */
	cr_le64 sig_ignored;           /*  72: ignored signals (same bit numbering) */
	cr_le64 sig_caught;            /*  80: signals with a handler */
	cr_le64 sig_pending;           /*  88: signals pending for the thread */
	cr_le64 sig_shared_pending;    /*  96: signals pending for the thread group */
	cr_le64 cap_inheritable;       /* 104: inheritable capability set */
	cr_le64 cap_permitted;         /* 112: permitted capability set */
	cr_le64 cap_effective;         /* 120: effective capability set */
	cr_u8 comm[16];              /* 128: command name, NUL-padded */
	cr_le32 umask;                 /* 144: file-creation mask */
	cr_le32 _reserved1;            /* 148: must be 0 */
};
CR_CHECK_SIZE(cr_task, 152);
CR_CHECK_FIELD(cr_task, pid, 0, 4);
CR_CHECK_FIELD(cr_task, tgid, 4, 4);
CR_CHECK_FIELD(cr_task, ppid, 8, 4);
CR_CHECK_FIELD(cr_task, pgid, 12, 4);
CR_CHECK_FIELD(cr_task, sid, 16, 4);
CR_CHECK_FIELD(cr_task, state, 20, 1);
CR_CHECK_FIELD(cr_task, _reserved0, 21, 3);
CR_CHECK_FIELD(cr_task, exit_signal, 24, 4);
CR_CHECK_FIELD(cr_task, personality, 28, 4);
CR_CHECK_FIELD(cr_task, uid, 32, 16);
CR_CHECK_FIELD(cr_task, gid, 48, 16);
CR_CHECK_FIELD(cr_task, sig_blocked, 64, 8);
CR_CHECK_FIELD(cr_task, sig_ignored, 72, 8);
CR_CHECK_FIELD(cr_task, sig_caught, 80, 8);
CR_CHECK_FIELD(cr_task, sig_pending, 88, 8);
CR_CHECK_FIELD(cr_task, sig_shared_pending, 96, 8);
CR_CHECK_FIELD(cr_task, cap_inheritable, 104, 8);
CR_CHECK_FIELD(cr_task, cap_permitted, 112, 8);
CR_CHECK_FIELD(cr_task, cap_effective, 120, 8);
CR_CHECK_FIELD(cr_task, comm, 128, 16);
CR_CHECK_FIELD(cr_task, umask, 144, 4);
CR_CHECK_FIELD(cr_task, _reserved1, 148, 4);

/* FORMAT.md §5: 744 bytes (RegsX86_64 in cr-format). */
struct cr_regs_x86_64 {
	cr_le16 arch;                  /*   0: the Header's arch */
	cr_le16 _reserved0;            /*   2: must be 0 */
	cr_le32 xsave_len;             /*   4: bytes of XSAVE area after this struct */
	cr_le64 xfeatures;             /*   8: XCR0 of the XSAVE area */
	cr_le64 gpr[27];               /*  16: user_regs_struct order: CR_GPR_* */
	cr_u8 fxsave[512];           /* 232: the legacy FXSAVE area (NT_PRFPREG, user_fpregs_struct) */
};
CR_CHECK_SIZE(cr_regs_x86_64, 744);
CR_CHECK_FIELD(cr_regs_x86_64, arch, 0, 2);
CR_CHECK_FIELD(cr_regs_x86_64, _reserved0, 2, 2);
CR_CHECK_FIELD(cr_regs_x86_64, xsave_len, 4, 4);
CR_CHECK_FIELD(cr_regs_x86_64, xfeatures, 8, 8);
CR_CHECK_FIELD(cr_regs_x86_64, gpr, 16, 216);
CR_CHECK_FIELD(cr_regs_x86_64, fxsave, 232, 512);

/* FORMAT.md §6: 96 bytes (Mm in cr-format). */
struct cr_mm {
	cr_le64 start_code;            /*   0: start of the code segment */
	cr_le64 end_code;              /*   8: end of the code segment */
	cr_le64 start_data;            /*  16: start of the data segment */
	cr_le64 end_data;              /*  24: end of the data segment */
	cr_le64 start_brk;             /*  32: start of the heap */
	cr_le64 brk;                   /*  40: current program break */
	cr_le64 start_stack;           /*  48: start (top) of the main stack */
	cr_le64 arg_start;             /*  56: start of the argument strings */
	cr_le64 arg_end;               /*  64: end of the argument strings */
	cr_le64 env_start;             /*  72: start of the environment strings */
	cr_le64 env_end;               /*  80: end of the environment strings */
	cr_le32 auxv_count;            /*  88: struct cr_auxv_entry that follow */
	cr_le16 exe_len;               /*  92: bytes of executable path after the auxv */
	cr_le16 _reserved0;            /*  94: must be 0 */
};
CR_CHECK_SIZE(cr_mm, 96);
CR_CHECK_FIELD(cr_mm, start_code, 0, 8);
CR_CHECK_FIELD(cr_mm, end_code, 8, 8);
CR_CHECK_FIELD(cr_mm, start_data, 16, 8);
CR_CHECK_FIELD(cr_mm, end_data, 24, 8);
CR_CHECK_FIELD(cr_mm, start_brk, 32, 8);
CR_CHECK_FIELD(cr_mm, brk, 40, 8);
CR_CHECK_FIELD(cr_mm, start_stack, 48, 8);
CR_CHECK_FIELD(cr_mm, arg_start, 56, 8);
CR_CHECK_FIELD(cr_mm, arg_end, 64, 8);
CR_CHECK_FIELD(cr_mm, env_start, 72, 8);
CR_CHECK_FIELD(cr_mm, env_end, 80, 8);
CR_CHECK_FIELD(cr_mm, auxv_count, 88, 4);
CR_CHECK_FIELD(cr_mm, exe_len, 92, 2);
CR_CHECK_FIELD(cr_mm, _reserved0, 94, 2);

/* FORMAT.md §6.1: 16 bytes (AuxvEntry in cr-format). */
struct cr_auxv_entry {
	cr_le64 key;                   /*   0: AT_* type */
	cr_le64 value;                 /*   8: value */
};
CR_CHECK_SIZE(cr_auxv_entry, 16);
CR_CHECK_FIELD(cr_auxv_entry, key, 0, 8);
CR_CHECK_FIELD(cr_auxv_entry, value, 8, 8);

/* FORMAT.md §7: 72 bytes (Vma in cr-format). */
struct cr_vma {
	cr_le64 start;                 /*   0: first address, page-aligned */
	cr_le64 end;                   /*   8: one past the last address: page-aligned, above start */
	cr_le64 offset;                /*  16: file offset of start, page-aligned */
	cr_le64 inode;                 /*  24: inode of the mapped file, 0 if none */
	cr_le64 file_size;             /*  32: size of the mapped file at capture, bytes */
	cr_le64 file_mtime_ns;         /*  40: mtime of the mapped file, ns */
	cr_le32 dev_major;             /*  48: device major of the mapped file */
	cr_le32 dev_minor;             /*  52: device minor of the mapped file */
	cr_le32 prot;                  /*  56: CR_PROT_* bits */
	cr_le32 flags;                 /*  60: CR_VMA_SHARED, CR_VMA_GROWSDOWN */
	cr_le16 kind;                  /*  64: CR_VMA_ANON .. CR_VMA_VSYSCALL */
	cr_le16 path_len;              /*  66: bytes of path after this; nonzero iff CR_VMA_FILE */
	cr_le32 _reserved0;            /*  68: must be 0 */
};
CR_CHECK_SIZE(cr_vma, 72);
CR_CHECK_FIELD(cr_vma, start, 0, 8);
CR_CHECK_FIELD(cr_vma, end, 8, 8);
CR_CHECK_FIELD(cr_vma, offset, 16, 8);
CR_CHECK_FIELD(cr_vma, inode, 24, 8);
CR_CHECK_FIELD(cr_vma, file_size, 32, 8);
CR_CHECK_FIELD(cr_vma, file_mtime_ns, 40, 8);
CR_CHECK_FIELD(cr_vma, dev_major, 48, 4);
CR_CHECK_FIELD(cr_vma, dev_minor, 52, 4);
CR_CHECK_FIELD(cr_vma, prot, 56, 4);
CR_CHECK_FIELD(cr_vma, flags, 60, 4);
CR_CHECK_FIELD(cr_vma, kind, 64, 2);
CR_CHECK_FIELD(cr_vma, path_len, 66, 2);
CR_CHECK_FIELD(cr_vma, _reserved0, 68, 4);

/* FORMAT.md §8: 16 bytes (Pages in cr-format). */
struct cr_pages {
	cr_le32 run_count;             /*   0: 1 .. CR_MAX_RUNS_PER_RECORD */
	cr_le32 pad_len;               /*   4: zero bytes after the run table (§8.2) */
	cr_le32 data_crc;              /*   8: CRC-32 (§2.3) of the data area */
	cr_le32 _reserved0;            /*  12: must be 0 */
};
CR_CHECK_SIZE(cr_pages, 16);
CR_CHECK_FIELD(cr_pages, run_count, 0, 4);
CR_CHECK_FIELD(cr_pages, pad_len, 4, 4);
CR_CHECK_FIELD(cr_pages, data_crc, 8, 4);
CR_CHECK_FIELD(cr_pages, _reserved0, 12, 4);

/* FORMAT.md §8.1: 16 bytes (PageRun in cr-format). */
struct cr_page_run {
	cr_le64 addr;                  /*   0: first address, page-aligned */
	cr_le32 pages;                 /*   8: number of pages, at least 1 */
	cr_le16 kind;                  /*  12: CR_RUN_DATA, CR_RUN_ZERO, CR_RUN_PARENT */
	cr_le16 _reserved0;            /*  14: must be 0 */
};
CR_CHECK_SIZE(cr_page_run, 16);
CR_CHECK_FIELD(cr_page_run, addr, 0, 8);
CR_CHECK_FIELD(cr_page_run, pages, 8, 4);
CR_CHECK_FIELD(cr_page_run, kind, 12, 2);
CR_CHECK_FIELD(cr_page_run, _reserved0, 14, 2);

/* FORMAT.md §9: 24 bytes (Tail in cr-format). */
struct cr_tail {
	cr_le64 record_count;          /*   0: records before the Tail */
	cr_le64 image_len;             /*   8: image bytes, the Tail included */
	cr_le64 digest;                /*  16: CRC-64/XZ of the record headers (§2.4) */
};
CR_CHECK_SIZE(cr_tail, 24);
CR_CHECK_FIELD(cr_tail, record_count, 0, 8);
CR_CHECK_FIELD(cr_tail, image_len, 8, 8);
CR_CHECK_FIELD(cr_tail, digest, 16, 8);

/* FORMAT.md §15: 152 bytes (File in cr-format). */
struct cr_file {
	cr_le32 fd;                    /*   0: descriptor number (CR_ROLE_FD), else 0 */
	cr_le16 role;                  /*   4: CR_ROLE_* */
	cr_le16 ftype;                 /*   6: CR_FILE_* type */
	cr_le32 flags;                 /*   8: CR_FILE_DELETED, CR_FILE_TTY, CR_FILE_HAS_DATA */
	cr_le32 fd_flags;              /*  12: FD_CLOEXEC (1) or 0; 0 for the cwd and root */
	cr_le32 open_flags;            /*  16: O_* as /proc/PID/fdinfo shows them */
	cr_le32 mode;                  /*  20: st_mode */
	cr_le64 pos;                   /*  24: file offset */
	cr_le64 inode;                 /*  32: st_ino */
	cr_le64 size;                  /*  40: st_size at capture */
	cr_le64 mtime_ns;              /*  48: mtime at capture, ns */
	cr_le32 dev_major;             /*  56: st_dev major */
	cr_le32 dev_minor;             /*  60: st_dev minor */
	cr_le32 rdev_major;            /*  64: st_rdev major */
	cr_le32 rdev_minor;            /*  68: st_rdev minor */
	cr_le32 dup_of;                /*  72: CR_DUP_NONE or a smaller fd of an earlier File */
	cr_le16 path_len;              /*  76: bytes of path after this */
	cr_le16 _reserved0;            /*  78: must be 0 */
	cr_le32 data_len;              /*  80: bytes of type-specific data after the path */
	cr_le32 _reserved1;            /*  84: must be 0 */
	cr_le64 params[8];             /*  88: type-specific values (§15.3) */
};
CR_CHECK_SIZE(cr_file, 152);
CR_CHECK_FIELD(cr_file, fd, 0, 4);
CR_CHECK_FIELD(cr_file, role, 4, 2);
CR_CHECK_FIELD(cr_file, ftype, 6, 2);
CR_CHECK_FIELD(cr_file, flags, 8, 4);
CR_CHECK_FIELD(cr_file, fd_flags, 12, 4);
CR_CHECK_FIELD(cr_file, open_flags, 16, 4);
CR_CHECK_FIELD(cr_file, mode, 20, 4);
CR_CHECK_FIELD(cr_file, pos, 24, 8);
CR_CHECK_FIELD(cr_file, inode, 32, 8);
CR_CHECK_FIELD(cr_file, size, 40, 8);
CR_CHECK_FIELD(cr_file, mtime_ns, 48, 8);
CR_CHECK_FIELD(cr_file, dev_major, 56, 4);
CR_CHECK_FIELD(cr_file, dev_minor, 60, 4);
CR_CHECK_FIELD(cr_file, rdev_major, 64, 4);
CR_CHECK_FIELD(cr_file, rdev_minor, 68, 4);
CR_CHECK_FIELD(cr_file, dup_of, 72, 4);
CR_CHECK_FIELD(cr_file, path_len, 76, 2);
CR_CHECK_FIELD(cr_file, _reserved0, 78, 2);
CR_CHECK_FIELD(cr_file, data_len, 80, 4);
CR_CHECK_FIELD(cr_file, _reserved1, 84, 4);
CR_CHECK_FIELD(cr_file, params, 88, 64);

/* FORMAT.md §15.5: 16 bytes (EpollEntry in cr-format). */
struct cr_epoll_entry {
	cr_le32 fd;                    /*   0: the watched descriptor */
	cr_le32 events;                /*   4: EPOLL* mask */
	cr_le64 data;                  /*   8: user data */
};
CR_CHECK_SIZE(cr_epoll_entry, 16);
CR_CHECK_FIELD(cr_epoll_entry, fd, 0, 4);
CR_CHECK_FIELD(cr_epoll_entry, events, 4, 4);
CR_CHECK_FIELD(cr_epoll_entry, data, 8, 8);

/* FORMAT.md §16: 16 bytes (FileData in cr-format). */
struct cr_file_data {
	cr_le64 offset;                /*   0: where these bytes are in the contents */
	cr_le32 len;                   /*   8: bytes that follow, 1..CR_MAX_FILE_DATA */
	cr_le32 _reserved0;            /*  12: must be 0 */
};
CR_CHECK_SIZE(cr_file_data, 16);
CR_CHECK_FIELD(cr_file_data, offset, 0, 8);
CR_CHECK_FIELD(cr_file_data, len, 8, 4);
CR_CHECK_FIELD(cr_file_data, _reserved0, 12, 4);

/* FORMAT.md §17.1: 32 bytes (SigAction in cr-format). */
struct cr_sigaction {
	cr_le64 handler;               /*   0: handler, SIG_DFL (0) or SIG_IGN (1) */
	cr_le64 flags;                 /*   8: SA_* */
	cr_le64 restorer;              /*  16: sa_restorer */
	cr_le64 mask;                  /*  24: blocked in the handler; never bits 8, 18 */
};
CR_CHECK_SIZE(cr_sigaction, 32);
CR_CHECK_FIELD(cr_sigaction, handler, 0, 8);
CR_CHECK_FIELD(cr_sigaction, flags, 8, 8);
CR_CHECK_FIELD(cr_sigaction, restorer, 16, 8);
CR_CHECK_FIELD(cr_sigaction, mask, 24, 8);

/* FORMAT.md §17: 2072 bytes (Signals in cr-format). */
struct cr_signals {
	cr_le64 altstack_sp;           /*   0: ss_sp; 0 with SS_DISABLE */
	cr_le64 altstack_size;         /*   8: ss_size; 0 with SS_DISABLE */
	cr_le32 altstack_flags;        /*  16: SS_ONSTACK, SS_DISABLE, SS_AUTODISARM */
	cr_le32 pending_count;         /*  20: struct cr_pending_signal that follow */
	struct cr_sigaction actions[64];/*  24: actions[n - 1] is signal n's */
};
CR_CHECK_SIZE(cr_signals, 2072);
CR_CHECK_FIELD(cr_signals, altstack_sp, 0, 8);
CR_CHECK_FIELD(cr_signals, altstack_size, 8, 8);
CR_CHECK_FIELD(cr_signals, altstack_flags, 16, 4);
CR_CHECK_FIELD(cr_signals, pending_count, 20, 4);
CR_CHECK_FIELD(cr_signals, actions, 24, 2048);

/* FORMAT.md §17.2: 136 bytes (PendingSignal in cr-format). */
struct cr_pending_signal {
	cr_le32 queue;                 /*   0: CR_QUEUE_THREAD, CR_QUEUE_SHARED */
	cr_le32 _reserved0;            /*   4: must be 0 */
	cr_u8 siginfo[128];          /*   8: siginfo_t (PTRACE_PEEKSIGINFO) */
};
CR_CHECK_SIZE(cr_pending_signal, 136);
CR_CHECK_FIELD(cr_pending_signal, queue, 0, 4);
CR_CHECK_FIELD(cr_pending_signal, _reserved0, 4, 4);
CR_CHECK_FIELD(cr_pending_signal, siginfo, 8, 128);

/* FORMAT.md §18.1: 16 bytes (ITimer in cr-format). */
struct cr_itimer {
	cr_le64 interval_ns;           /*   0: interval, ns */
	cr_le64 value_ns;              /*   8: time left, ns (0: disarmed) */
};
CR_CHECK_SIZE(cr_itimer, 16);
CR_CHECK_FIELD(cr_itimer, interval_ns, 0, 8);
CR_CHECK_FIELD(cr_itimer, value_ns, 8, 8);

/* FORMAT.md §18: 56 bytes (Timers in cr-format). */
struct cr_timers {
	struct cr_itimer itimers[3];   /*   0: ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF */
	cr_le32 posix_count;           /*  48: struct cr_posix_timer that follow */
	cr_le32 _reserved0;            /*  52: must be 0 */
};
CR_CHECK_SIZE(cr_timers, 56);
CR_CHECK_FIELD(cr_timers, itimers, 0, 48);
CR_CHECK_FIELD(cr_timers, posix_count, 48, 4);
CR_CHECK_FIELD(cr_timers, _reserved0, 52, 4);

/* FORMAT.md §18.2: 48 bytes (PosixTimer in cr-format). */
struct cr_posix_timer {
	cr_le32 id;                    /*   0: timer_t, increasing */
	cr_le32 clock;                 /*   4: clock id */
	cr_le32 sigev_notify;          /*   8: SIGEV_SIGNAL, _NONE, _THREAD, _THREAD_ID */
	cr_le32 sigev_signo;           /*  12: signal, 1..64 unless SIGEV_NONE */
	cr_le64 sigev_value;           /*  16: sigev_value */
	cr_le32 notify_tid;            /*  24: nonzero iff SIGEV_THREAD_ID */
	cr_le32 overrun;               /*  28: overruns not read */
	cr_le64 interval_ns;           /*  32: interval, ns */
	cr_le64 value_ns;              /*  40: time left, ns (0: disarmed) */
};
CR_CHECK_SIZE(cr_posix_timer, 48);
CR_CHECK_FIELD(cr_posix_timer, id, 0, 4);
CR_CHECK_FIELD(cr_posix_timer, clock, 4, 4);
CR_CHECK_FIELD(cr_posix_timer, sigev_notify, 8, 4);
CR_CHECK_FIELD(cr_posix_timer, sigev_signo, 12, 4);
CR_CHECK_FIELD(cr_posix_timer, sigev_value, 16, 8);
CR_CHECK_FIELD(cr_posix_timer, notify_tid, 24, 4);
CR_CHECK_FIELD(cr_posix_timer, overrun, 28, 4);
CR_CHECK_FIELD(cr_posix_timer, interval_ns, 32, 8);
CR_CHECK_FIELD(cr_posix_timer, value_ns, 40, 8);

/* FORMAT.md §19.1: 16 bytes (Rlimit in cr-format). */
struct cr_rlimit {
	cr_le64 cur;                   /*   0: soft limit, at most max */
	cr_le64 max;                   /*   8: hard limit; ~0 is RLIM_INFINITY */
};
CR_CHECK_SIZE(cr_rlimit, 16);
CR_CHECK_FIELD(cr_rlimit, cur, 0, 8);
CR_CHECK_FIELD(cr_rlimit, max, 8, 8);

/* FORMAT.md §19: 352 bytes (Process in cr-format). */
struct cr_process {
	struct cr_rlimit rlimits[16];  /*   0: RLIMIT_CPU..RLIMIT_RTTIME */
	cr_le64 timer_slack_ns;        /* 256: PR_GET_TIMERSLACK */
	cr_le64 rseq_addr;             /* 264: rseq area, 0 if none */
	cr_le32 rseq_len;              /* 272: 0 without rseq */
	cr_le32 rseq_sig;              /* 276: 0 without rseq */
	cr_le64 robust_list;           /* 280: robust futex list head */
	cr_le64 robust_list_len;       /* 288: its length */
	cr_le64 clear_child_tid;       /* 296: set_tid_address */
	cr_le64 cap_bounding;          /* 304: bounding set */
	cr_le64 cap_ambient;           /* 312: ambient set */
	cr_le32 securebits;            /* 320: PR_GET_SECUREBITS */
	cr_le32 pdeathsig;             /* 324: 0..64 */
	cr_le32 dumpable;              /* 328: 0, 1, 2 */
	cr_le32 attr_flags;            /* 332: CR_ATTR_* */
	cr_le32 oom_score_adj;         /* 336: -1000..1000, two's complement */
	cr_le32 seccomp_mode;          /* 340: 0, 1, 2 */
	cr_le32 group_count;           /* 344: u32 group ids that follow */
	cr_le32 _reserved0;            /* 348: must be 0 */
};
CR_CHECK_SIZE(cr_process, 352);
CR_CHECK_FIELD(cr_process, rlimits, 0, 256);
CR_CHECK_FIELD(cr_process, timer_slack_ns, 256, 8);
CR_CHECK_FIELD(cr_process, rseq_addr, 264, 8);
CR_CHECK_FIELD(cr_process, rseq_len, 272, 4);
CR_CHECK_FIELD(cr_process, rseq_sig, 276, 4);
CR_CHECK_FIELD(cr_process, robust_list, 280, 8);
CR_CHECK_FIELD(cr_process, robust_list_len, 288, 8);
CR_CHECK_FIELD(cr_process, clear_child_tid, 296, 8);
CR_CHECK_FIELD(cr_process, cap_bounding, 304, 8);
CR_CHECK_FIELD(cr_process, cap_ambient, 312, 8);
CR_CHECK_FIELD(cr_process, securebits, 320, 4);
CR_CHECK_FIELD(cr_process, pdeathsig, 324, 4);
CR_CHECK_FIELD(cr_process, dumpable, 328, 4);
CR_CHECK_FIELD(cr_process, attr_flags, 332, 4);
CR_CHECK_FIELD(cr_process, oom_score_adj, 336, 4);
CR_CHECK_FIELD(cr_process, seccomp_mode, 340, 4);
CR_CHECK_FIELD(cr_process, group_count, 344, 4);
CR_CHECK_FIELD(cr_process, _reserved0, 348, 4);

/* FORMAT.md §20: 8 bytes (VmaAttr in cr-format). */
struct cr_vma_attr {
	cr_le32 attrs;                 /*   0: CR_VMA_ATTR_* bits, at least one */
	cr_le32 _reserved0;            /*   4: must be 0 */
};
CR_CHECK_SIZE(cr_vma_attr, 8);
CR_CHECK_FIELD(cr_vma_attr, attrs, 0, 4);
CR_CHECK_FIELD(cr_vma_attr, _reserved0, 4, 4);

/* FORMAT.md §21: 16 bytes (Inotify in cr-format). */
struct cr_inotify {
	cr_le32 fd;                    /*   0: below 2^31, above the previous Inotify's */
	cr_le32 fd_flags;              /*   4: FD_CLOEXEC (1) or 0 */
	cr_le32 open_flags;            /*   8: O_* as /proc/PID/fdinfo shows them */
	cr_le32 dup_of;                /*  12: CR_NO_DUP or a smaller fd of an earlier Inotify */
};
CR_CHECK_SIZE(cr_inotify, 16);
CR_CHECK_FIELD(cr_inotify, fd, 0, 4);
CR_CHECK_FIELD(cr_inotify, fd_flags, 4, 4);
CR_CHECK_FIELD(cr_inotify, open_flags, 8, 4);
CR_CHECK_FIELD(cr_inotify, dup_of, 12, 4);

/* FORMAT.md §22: 32 bytes (InotifyWatch in cr-format); path_len bytes of path follow. */
struct cr_inotify_watch {
	cr_le32 wd;                    /*   0: 1..2^31-1, above the previous watch's */
	cr_le32 mask;                  /*   4: IN_* event mask, nonzero */
	cr_le64 inode;                 /*   8: inode of the watched file */
	cr_le32 dev_major;             /*  16: its device */
	cr_le32 dev_minor;             /*  20 */
	cr_le16 path_len;              /*  24: 1..CR_MAX_PATH */
	cr_u8 _reserved0[6];           /*  26: must be 0 */
};
CR_CHECK_SIZE(cr_inotify_watch, 32);
CR_CHECK_FIELD(cr_inotify_watch, wd, 0, 4);
CR_CHECK_FIELD(cr_inotify_watch, mask, 4, 4);
CR_CHECK_FIELD(cr_inotify_watch, inode, 8, 8);
CR_CHECK_FIELD(cr_inotify_watch, dev_major, 16, 4);
CR_CHECK_FIELD(cr_inotify_watch, dev_minor, 20, 4);
CR_CHECK_FIELD(cr_inotify_watch, path_len, 24, 2);
CR_CHECK_FIELD(cr_inotify_watch, _reserved0, 26, 6);

/* FORMAT.md §23: 24 bytes (Lock in cr-format). */
struct cr_lock {
	cr_le32 fd;                    /*   0: fd of a File (role FD) on the locked file */
	cr_le16 ltype;                 /*   4: CR_LOCK_POSIX, CR_LOCK_FLOCK, CR_LOCK_OFD */
	cr_le16 mode;                  /*   6: CR_LOCK_READ, CR_LOCK_WRITE */
	cr_le64 start;                 /*   8: first byte locked, 0 for flock */
	cr_le64 len;                   /*  16: bytes locked, 0 = to the end; 0 for flock */
};
CR_CHECK_SIZE(cr_lock, 24);
CR_CHECK_FIELD(cr_lock, fd, 0, 4);
CR_CHECK_FIELD(cr_lock, ltype, 4, 2);
CR_CHECK_FIELD(cr_lock, mode, 6, 2);
CR_CHECK_FIELD(cr_lock, start, 8, 8);
CR_CHECK_FIELD(cr_lock, len, 16, 8);

/* FORMAT.md §24: 8 bytes (VdsoData in cr-format); len bytes of the vDSO follow. */
struct cr_vdso_data {
	cr_le32 len;                   /*   0: the vDSO Vma's end - start, <= CR_MAX_VDSO_LEN */
	cr_le32 _reserved0;            /*   4: must be 0 */
};
CR_CHECK_SIZE(cr_vdso_data, 8);
CR_CHECK_FIELD(cr_vdso_data, len, 0, 4);
CR_CHECK_FIELD(cr_vdso_data, _reserved0, 4, 4);
/*
 * Variable parts, after the fixed structs (all zero-padded to a multiple of 8):
 *   Regs:  xsave_len bytes of XSAVE area.
 *   Mm:    auxv_count struct cr_auxv_entry, then exe_len bytes of path.
 *   Vma:   path_len bytes of path.
 *   Pages: run_count struct cr_page_run, pad_len zero bytes, then the data of the data runs,
 *          starting at a file offset that is a multiple of the page size (§8.2).
 *   File:  path_len bytes of path, then data_len bytes of type-specific data (an epoll File's
 *          are struct cr_epoll_entry), each zero-padded.
 *   FileData: len bytes of contents.
 *   Signals: pending_count struct cr_pending_signal.
 *   Timers: posix_count struct cr_posix_timer.
 *   Process: group_count cr_le32 group ids.
 *   InotifyWatch: path_len bytes of path.
 *   VdsoData: len bytes of the vDSO (a multiple of the page size: no padding).
 */

/* ---- Little-endian readers over a byte buffer (any alignment, any host byte order) -------- */

CR_INLINE cr_u16 cr_get_le16(const void *buf)
{
	const unsigned char *p = (const unsigned char *)buf;
	return (cr_u16)(p[0] | (p[1] << 8));
}

CR_INLINE cr_u32 cr_get_le32(const void *buf)
{
	const unsigned char *p = (const unsigned char *)buf;
	return (cr_u32)p[0] | ((cr_u32)p[1] << 8) | ((cr_u32)p[2] << 16) | ((cr_u32)p[3] << 24);
}

CR_INLINE cr_u64 cr_get_le64(const void *buf)
{
	const unsigned char *p = (const unsigned char *)buf;
	return (cr_u64)cr_get_le32(p) | ((cr_u64)cr_get_le32(p + 4) << 32);
}

/* Payload length rounded up to a multiple of 8 (§1). */
CR_INLINE cr_u64 cr_pad8(cr_u64 n)
{
	return (n + 7u) & ~(cr_u64)7u;
}

#endif /* CR_IMAGE_H */
