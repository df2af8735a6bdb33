#!/usr/bin/env python3
"""Builds the minimal image of FORMAT.md §14, the 1.1 image of §14.1 and the 1.2 image of §14.2
from the spec's tables alone, and invalid 1.1 and 1.2 images that each break one rule of §2.5 or
§15..§24.

Independent of the Rust writer: only struct.pack, zlib.crc32 and the bitwise CRC-64/XZ below.
Writes (next to this script) valid/minimal-handmade.bin, valid/state-handmade.bin,
valid/v12-handmade.bin, and for each fault of FAULTS and FAULTS_12 invalid/NAME.bin with invalid/NAME.err, the error a reader must report: the
byte offset (computed here from the spec's layouts) and cr-format's message. Prints the
annotated hex dump that FORMAT.md §14 shows. Run from anywhere: python3 spec/vectors/handmade.py
"""

import os
import struct
import sys
import zlib

PAGE = 4096

# §2.2 record kinds, §3..§9 constants.
KIND_HEADER, KIND_TASK, KIND_REGS, KIND_MM, KIND_VMA, KIND_PAGES, KIND_TAIL = range(1, 8)
# §2.2 kinds of 1.1 (non-critical), §15..§20 constants.
KIND_FILE, KIND_FILE_DATA, KIND_SIGNALS, KIND_TIMERS, KIND_PROCESS, KIND_VMA_ATTR = range(8, 14)
# §2.2 kinds of 1.2 (non-critical), §21..§24 constants.
KIND_INOTIFY, KIND_INOTIFY_WATCH, KIND_LOCK, KIND_VDSO_DATA = range(14, 18)
NO_DUP = 0xFFFFFFFF
LOCK_POSIX, LOCK_FLOCK, LOCK_OFD = 1, 2, 3
LOCK_READ, LOCK_WRITE = 1, 2
IN_MODIFY, IN_CLOSE_WRITE, IN_CREATE = 0x2, 0x8, 0x100
O_NONBLOCK = 0o4000
VMA_VDSO = 4
PROT_EXEC = 4
ROLE_FD, ROLE_CWD = 0, 1
FILE_REG, FILE_DIR, FILE_PIPE = 1, 2, 5
FILE_DELETED, FILE_HAS_DATA = 1, 4
DUP_NONE = 0xFFFFFFFF
QUEUE_THREAD = 0
SS_DISABLE = 2
SIGINT, SIGKILL, SIGUSR1, SIGALRM = 2, 9, 10, 14
SA_SIGINFO, SA_RESTORER = 4, 0x04000000
CLOCK_MONOTONIC = 1
SIGEV_SIGNAL, SIGEV_THREAD_ID = 0, 4
RLIM_INFINITY = 0xFFFFFFFFFFFFFFFF
RLIMIT_NOFILE = 7
VMA_ATTR_DONTFORK = 1
RECORD_CRITICAL = 1
MAGIC = b"\x89CRI\r\n\x1a\n"
ARCH_X86_64 = 62
PROT_READ, PROT_WRITE = 1, 2
VMA_ANON = 0
RUN_DATA, RUN_ZERO = 0, 1


def crc64_xz(data, crc=0):
    """CRC-64/XZ (ECMA-182 polynomial, reflected): init and xorout all ones.

    `crc` is a previous result, so the CRC can be computed piecewise."""
    crc ^= 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xC96C5795D7870F42 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF


assert crc64_xz(b"123456789") == 0x995DC9BBDF1939FA
assert zlib.crc32(b"123456789") == 0xCBF43926


class Image:
    def __init__(self):
        self.out = bytearray()
        self.index = 0
        self.headers = []  # the 16-byte record headers, for the tail digest (§2.4)
        self.dump = []  # (bytes, comment) lines; bytes None = a comment line
        self.offsets = []  # image offset of each record, by index

    def note(self, text):
        self.dump.append((None, text))

    def field(self, b, text):
        self.dump.append((bytes(b), text))

    def record(self, kind, flags, fields, checked_extra=b"", data=b"", name=""):
        """fields: list of (bytes, comment) that make up the checked part of the payload."""
        payload = b"".join(b for b, _ in fields) + checked_extra
        length = len(payload) + len(data)
        assert length % 8 == 0 and len(self.out) % 8 == 0
        head12 = struct.pack("<HHII", kind, flags, length, self.index)
        crc = zlib.crc32(head12 + payload)
        header = head12 + struct.pack("<I", crc)
        self.note(f"--- record {self.index}: {name} at offset {len(self.out)} "
                  f"(0x{len(self.out):x}), payload {length} bytes")
        crit = "critical" if flags == RECORD_CRITICAL else "not critical"
        self.field(struct.pack("<HH", kind, flags), f"kind={kind} ({name}), flags={flags} ({crit})")
        self.field(struct.pack("<I", length), f"len={length}")
        self.field(struct.pack("<I", self.index), f"index={self.index}")
        self.field(struct.pack("<I", crc), f"crc=0x{crc:08x}")
        for b, text in fields:
            self.field(b, text)
        if kind != KIND_TAIL:
            self.headers.append(header)
        self.offsets.append(len(self.out))
        self.out += header + payload + data
        self.index += 1
        return len(self.out)


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def zeros(n):
    return bytes(n)


GPR_NAMES = ["r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
             "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
             "gs_base", "ds", "es", "fs", "gs"]


def build(v11=False, fault=None, v12=False):
    """The image of §14, with `v11` the image of §14.1, with `v12` the image of §14.2; `fault` (a
    name of FAULTS or FAULTS_12) breaks one rule of the 1.1 or 1.2 image. Returns the bytes, the
    dump lines and the records' offsets."""
    img = Image()
    f = fault or ""
    v11 = v11 or v12

    # §3 Header.
    minor = 1 if v11 and f != "state-in-1.0-image" else 0
    if v12 and f != "v12-kind-in-1.1-image":
        minor = 2
    producer = (b"cr-handmade 1.2" if v12 else b"cr-handmade 1.1" if v11
                else b"cr-handmade 1.0").ljust(32, b"\0")
    img.record(KIND_HEADER, RECORD_CRITICAL, [
        (MAGIC, "magic = 89 'CRI' \\r \\n 1a \\n"),
        (u16(1), "version_major = 1"),
        (u16(minor), f"version_minor = {minor}"),
        (u16(ARCH_X86_64), "arch = 62 (x86-64)"),
        (u16(0), "_reserved0"),
        (u32(PAGE), "page_size = 4096"),
        (u32(0), "flags = 0"),
        (u64(1), "crid = 1"),
        (u64(0), "parent_crid = 0 (full image)"),
        (u64(0), "parent_digest = 0"),
        (u64(1764000000000000000), "created_ns = 1764000000000000000 (2025-11-24T16:00:00Z)"),
        (u32(0), "diff_method = 0 (DIFF_NONE)"),
        (u32(0), "_reserved1"),
        (producer[:16], f"producer = \"{producer.rstrip(bytes(1)).decode()}\", NUL-padded"),
        (producer[16:], "producer (cont.)"),
    ], name="Header")

    # §4 Task.
    img.record(KIND_TASK, RECORD_CRITICAL, [
        (u32(42), "pid = 42"),
        (u32(42), "tgid = 42"),
        (u32(1), "ppid = 1"),
        (u32(42), "pgid = 42"),
        (u32(42), "sid = 42"),
        (b"S", "state = 'S'"),
        (zeros(3), "_reserved0"),
        (u32(17), "exit_signal = 17 (SIGCHLD)"),
        (u32(0), "personality = 0"),
        (u32(1000) * 4, "uid = 1000 1000 1000 1000"),
        (u32(1000) * 4, "gid = 1000 1000 1000 1000"),
        (u64(0), "sig_blocked"),
        (u64(0x1000), "sig_ignored = SIGPIPE (bit 12)"),
        (u64(0), "sig_caught"),
        (u64(0), "sig_pending"),
        (u64(0), "sig_shared_pending"),
        (u64(0), "cap_inheritable"),
        (u64(0), "cap_permitted"),
        (u64(0), "cap_effective"),
        (b"true".ljust(16, b"\0"), "comm = \"true\""),
        (u32(0o022), "umask = 022"),
        (u32(0), "_reserved1"),
    ], name="Task")

    # §5 Regs, empty XSAVE area.
    gpr = dict.fromkeys(GPR_NAMES, 0)
    gpr.update(rip=0x401000, cs=0x33, eflags=0x246, rsp=0x7FFFFFFDE000, ss=0x2B,
               orig_rax=0xFFFFFFFFFFFFFFFF, rax=0)
    # "regs-xsave-padding": a 5-byte XSAVE area whose padding has a nonzero byte.
    xlen = 5 if f == "regs-xsave-padding" else 0
    fields = [
        (u16(ARCH_X86_64), "arch = 62"),
        (u16(0), "_reserved0"),
        (u32(xlen), f"xsave_len = {xlen}"),
        (u64(0), "xfeatures = 0"),
    ]
    for i, n in enumerate(GPR_NAMES):
        fields.append((u64(gpr[n]), f"gpr[{i}] {n} = 0x{gpr[n]:x}"))
    fx = bytearray(512)
    struct.pack_into("<H", fx, 0, 0x037F)  # fcw
    struct.pack_into("<I", fx, 24, 0x1F80)  # mxcsr
    struct.pack_into("<I", fx, 28, 0xFFFF)  # mxcsr_mask
    fields.append((fx[:16], "fxsave[0..16]: fcw = 0x037f"))
    fields.append((fx[16:32], "fxsave[16..32]: mxcsr = 0x1f80, mxcsr_mask = 0xffff"))
    fields.append((fx[32:], "fxsave[32..512]: zero"))
    if xlen:
        fields.append((zeros(xlen) + b"\0\x5a\0", "xsave area, padding with 0x5a"))
    img.record(KIND_REGS, RECORD_CRITICAL, fields, name="Regs")

    # §6 Mm, no auxv, exe "/bin/true" (9 bytes, padded to 16).
    exe = b"/bin\0true" if f == "mm-exe-nul" else b"/bin/true"
    exe_pad = b"\0\0\0\x01\0\0\0" if f == "mm-exe-padding" else zeros(7)
    img.record(KIND_MM, RECORD_CRITICAL, [
        (u64(0x400000), "start_code"),
        (u64(0x401000), "end_code"),
        (u64(0x402000), "start_data"),
        (u64(0x403000), "end_data"),
        (u64(0x404000), "start_brk"),
        (u64(0x404000), "brk"),
        (u64(0x7FFFFFFDE000), "start_stack"),
        (u64(0x7FFFFFFDF000), "arg_start"),
        (u64(0x7FFFFFFDF00A), "arg_end"),
        (u64(0x7FFFFFFDF00A), "env_start"),
        (u64(0x7FFFFFFDF020), "env_end"),
        (u32(0), "auxv_count = 0"),
        (u16(len(exe)), "exe_len = 9"),
        (u16(0), "_reserved0"),
        (exe + exe_pad, "exe path \"/bin/true\", zero-padded to 16"),
    ], name="Mm")

    if v11:
        state(img, f, v12)

    # §7 Vma: anonymous, rw, 0x10000..0x12000.
    img.record(KIND_VMA, RECORD_CRITICAL, [
        (u64(0x10000), "start = 0x10000"),
        (u64(0x12000), "end = 0x12000"),
        (u64(0), "offset"),
        (u64(0), "inode"),
        (u64(0), "file_size"),
        (u64(0), "file_mtime_ns"),
        (u32(0), "dev_major"),
        (u32(0), "dev_minor"),
        (u32(PROT_READ | PROT_WRITE), "prot = PROT_READ|PROT_WRITE"),
        (u32(0), "flags = 0 (private)"),
        (u16(VMA_ANON), "kind = 0 (VMA_ANON)"),
        (u16(0), "path_len = 0"),
        (u32(0), "_reserved0"),
    ], name="Vma")
    if v11 and f != "signals-after-vma":
        for _ in range(2 if f == "vma-attr-twice" else 1):
            attrs = 0 if f == "vma-attr-zero" else VMA_ATTR_DONTFORK
            extra = [(zeros(8), "8 bytes too many")] if f == "vma-attr-long" else []
            img.record(KIND_VMA_ATTR, 0, [
                (u32(attrs), f"attrs = {attrs}"),
                (u32(0), "_reserved0"),
            ] + extra, name="VmaAttr")
    elif v11:
        signals(img, f)
    if v12 and f == "vdso-after-anon-vma":
        vdso_data(img, f)

    # §8 Pages: DATA run of 1 page at 0x10000 (0xab), ZERO run of 1 page at 0x11000.
    data = b"\xab" * PAGE
    start = len(img.out)
    table_end = start + 16 + 16 + 16 * 2
    pad = (-table_end) % PAGE
    pad_len = 65536 if f == "pages-pad-len-huge" else pad
    pad_bytes = bytearray(pad)
    if f == "pages-pad-nonzero":
        pad_bytes[100] = 0x7F
    data_crc = zlib.crc32(data)
    img.record(KIND_PAGES, RECORD_CRITICAL, [
        (u32(2), "run_count = 2"),
        (u32(pad_len), f"pad_len = {pad_len}: the run table ends at {table_end}, data starts at "
                   f"{table_end + pad}"),
        (u32(data_crc), f"data_crc = 0x{data_crc:08x}"),
        (u32(0), "_reserved0"),
        (u64(0x10000) + u32(1) + u16(RUN_DATA) + u16(0), "run 0: addr 0x10000, pages 1, RUN_DATA"),
        (u64(0x11000) + u32(1) + u16(RUN_ZERO) + u16(0), "run 1: addr 0x11000, pages 1, RUN_ZERO"),
        (bytes(pad_bytes), f"pad: {pad} zero bytes"),
    ], data=data, name="Pages")
    img.field(data, f"data: {PAGE} bytes of 0xab (offset {table_end + pad}, not under the "
                    "record CRC)")

    if v12:
        vdso(img, f)

    # §9 Tail.
    digest = crc64_xz(b"".join(img.headers))
    count = img.index
    image_len = len(img.out) + 16 + 24
    img.record(KIND_TAIL, RECORD_CRITICAL, [
        (u64(count), f"record_count = {count}"),
        (u64(image_len), f"image_len = {image_len}"),
        (u64(digest), f"digest = 0x{digest:016x}"),
    ], name="Tail")
    assert len(img.out) == image_len
    return bytes(img.out), img.dump, img.offsets


def state(img, f, v12=False):
    """The state records of §14.1 (§15..§19), with `v12` those of §14.2, with fault `f`."""
    # §15 File: fd 0, the read end of a pipe with 5 unread bytes.
    path = b"pipe:[4242]"
    if f == "file-path-nul":
        path = b"pipe:\0[4242]"
    flags = FILE_HAS_DATA
    if f == "file-deleted-pipe":
        flags |= FILE_DELETED
    if f == "file-data-without-has-data":
        flags = 0
    params = [65536] + [0] * 7
    if f == "file-unused-param":
        params[2] = 7
    data = b"\0" * 8 if f == "file-data-for-pipe" else b""
    dup_of = 5 if f == "file-dup-of-later-fd" else DUP_NONE
    file_record(img, ROLE_FD, 0, FILE_PIPE, flags, 0o10600, 4242, dup_of, path, params, data,
                flags=1 if f == "file-record-critical" else 0)
    # §16 FileData: the unread bytes.
    offset = 1 if f == "file-data-offset-gap" else 0
    img.record(KIND_FILE_DATA, 0, [
        (u64(offset), f"offset = {offset}"),
        (u32(5), "len = 5"),
        (u32(0), "_reserved0"),
        (b"hello" + zeros(3), "\"hello\", zero-padded to 8"),
    ], name="FileData")
    if v12:
        # §15 File: fd 5, a regular file the task holds locks on.
        file_record(img, ROLE_FD, 5, FILE_REG, 0, 0o100644, 77, DUP_NONE, b"/tmp/cr.lock",
                    [0] * 8, b"")
    # §15 File: the cwd.
    role, fd = ROLE_CWD, 0
    if f == "file-fd-twice":
        role = ROLE_FD
    if f == "file-cwd-nonzero-fd":
        fd = 3
    file_record(img, role, fd, FILE_DIR, 0, 0o40755, 2, DUP_NONE, b"/tmp", [0] * 8, b"")
    if v12:
        if f == "lock-after-signals":
            inotify(img, f)
            signals(img, f)
            locks(img, f)
            timers(img, f)
            process(img, f)
            return
        if f == "lock-before-inotify":
            locks(img, f)
            inotify(img, f)
        else:
            inotify(img, f)
            locks(img, f)
    if f == "timers-before-signals":
        timers(img, f)
        signals(img, f)
    elif f != "signals-after-vma":
        signals(img, f)
        timers(img, f)
    else:
        timers(img, f)
    process(img, f)


def file_record(img, role, fd, ftype, fflags, mode, inode, dup_of, path, params, data, flags=0):
    fields = [
        (u32(fd), f"fd = {fd}"),
        (u16(role), f"role = {role}"),
        (u16(ftype), f"ftype = {ftype}"),
        (u32(fflags), f"flags = {fflags}"),
        (u32(0), "fd_flags = 0"),
        (u32(0), "open_flags = 0 (O_RDONLY)"),
        (u32(mode), f"mode = 0o{mode:o}"),
        (u64(0), "pos"),
        (u64(inode), f"inode = {inode}"),
        (u64(0), "size"),
        (u64(0), "mtime_ns"),
        (u32(0), "dev_major"),
        (u32(0), "dev_minor"),
        (u32(0), "rdev_major"),
        (u32(0), "rdev_minor"),
        (u32(dup_of), f"dup_of = 0x{dup_of:x}"),
        (u16(len(path)), f"path_len = {len(path)}"),
        (u16(0), "_reserved0"),
        (u32(len(data)), f"data_len = {len(data)}"),
        (u32(0), "_reserved1"),
        (b"".join(u64(p) for p in params), f"params = {params}"),
        (path + zeros((-len(path)) % 8), f"path {path!r}, zero-padded"),
    ]
    if data:
        fields.append((data + zeros((-len(data)) % 8), "data"))
    img.record(KIND_FILE, flags, fields, name="File")


def signals(img, f):
    """§17: SIGINT caught, an alternate stack disabled, one pending SIGUSR1."""
    actions = bytearray(64 * 32)
    struct.pack_into("<QQQQ", actions, 32 * (SIGINT - 1), 0x401100, SA_SIGINFO | SA_RESTORER,
                     0x401200, 0)
    if f == "signals-sigkill-handler":
        struct.pack_into("<Q", actions, 32 * (SIGKILL - 1), 0x401100)
    if f == "signals-mask-sigkill":
        struct.pack_into("<Q", actions, 32 * (SIGINT - 1) + 24, 1 << (SIGKILL - 1))
    count = 0xFFFFFFFF if f == "signals-pending-count-huge" else 1
    siginfo = struct.pack("<iii", SIGUSR1, 0, 0) + zeros(116)
    img.record(KIND_SIGNALS, 0, [
        (u64(0), "altstack_sp"),
        (u64(0), "altstack_size"),
        (u32(SS_DISABLE), "altstack_flags = SS_DISABLE"),
        (u32(count), f"pending_count = {count}"),
        (bytes(actions), "actions: SIGINT handler 0x401100, SA_SIGINFO|SA_RESTORER, "
                         "restorer 0x401200"),
        (u32(QUEUE_THREAD) + u32(0), "pending 0: queue = QUEUE_THREAD, _reserved0"),
        (siginfo, "pending 0: siginfo si_signo = SIGUSR1"),
    ], name="Signals")


def timers(img, f):
    """§18: ITIMER_REAL 1.5 s left every 1 s; a POSIX timer on CLOCK_MONOTONIC, 250 ms left."""
    count = 0xFFFFFFFF if f == "timers-posix-count-huge" else 1
    notify = SIGEV_THREAD_ID if f == "timers-thread-id-without-tid" else SIGEV_SIGNAL
    img.record(KIND_TIMERS, 0, [
        (u64(1_000_000_000) + u64(1_500_000_000), "itimers[ITIMER_REAL]: interval 1 s, 1.5 s left"),
        (zeros(32), "itimers[ITIMER_VIRTUAL], itimers[ITIMER_PROF]: disarmed"),
        (u32(count), f"posix_count = {count}"),
        (u32(0), "_reserved0"),
        (u32(0) + u32(CLOCK_MONOTONIC) + u32(notify) + u32(SIGALRM),
         "timer 0: id 0, CLOCK_MONOTONIC, sigev_notify, SIGALRM"),
        (u64(0) + u32(0) + u32(0), "timer 0: sigev_value 0, notify_tid 0, overrun 0"),
        (u64(0) + u64(250_000_000), "timer 0: one-shot, 250 ms left"),
    ], name="Timers")


def process(img, f):
    """§19: every limit infinite but RLIMIT_NOFILE 1024/4096; groups 4 and 27."""
    limits = []
    for r in range(16):
        cur, mx = (1024, 4096) if r == RLIMIT_NOFILE else (RLIM_INFINITY, RLIM_INFINITY)
        if r == RLIMIT_NOFILE and f == "process-rlimit-above-max":
            cur = 8192
        limits.append(u64(cur) + u64(mx))
    groups = [27, 4] if f == "process-groups-unsorted" else [4, 27]
    count = 0xFFFFFFFF if f == "process-group-count-huge" else len(groups)
    img.record(KIND_PROCESS, 0, [
        (b"".join(limits), "rlimits: RLIMIT_NOFILE 1024/4096, the others RLIM_INFINITY"),
        (u64(50_000), "timer_slack_ns = 50000"),
        (u64(0) + u32(0) + u32(0), "rseq: none"),
        (u64(0) + u64(24), "robust_list none, robust_list_len 24"),
        (u64(0), "clear_child_tid"),
        (u64((1 << 41) - 1), "cap_bounding: capabilities 0..40"),
        (u64(0), "cap_ambient"),
        (u32(0) + u32(0) + u32(1) + u32(0), "securebits, pdeathsig, dumpable = 1, attr_flags"),
        (u32(0) + u32(0), "oom_score_adj = 0, seccomp_mode = 0"),
        (u32(count) + u32(0), f"group_count = {count}, _reserved0"),
        (b"".join(u32(g) for g in groups), f"groups {groups}"),
    ], name="Process")


def inotify(img, f):
    """§21, §22: an inotify fd 3 with two watches, and fd 4, a dup of it."""
    fd = 0x80000000 if f == "inotify-fd-huge" else 3
    fd_flags = 2 if f == "inotify-fd-flags" else 1
    fields = [
        (u32(fd), f"fd = {fd}"),
        (u32(fd_flags), f"fd_flags = {fd_flags} (FD_CLOEXEC)"),
        (u32(O_NONBLOCK), "open_flags = O_NONBLOCK"),
        (u32(NO_DUP), "dup_of = NO_DUP"),
    ]
    if f == "inotify-long":
        fields.append((zeros(8), "8 bytes too many"))
    img.record(KIND_INOTIFY, 1 if f == "inotify-record-critical" else 0, fields, name="Inotify")
    wd2 = 1 if f == "watch-wd-not-increasing" else 2
    watch(img, f, 0 if f == "watch-wd-zero" else 1, IN_MODIFY | IN_CREATE, 2, b"/tmp", first=True)
    watch(img, "", wd2, IN_CLOSE_WRITE, 77, b"/tmp/cr.lock")
    fd2 = 3 if f == "inotify-fd-not-increasing" else 4
    dup_of = 5 if f == "inotify-dup-of-later" else 3
    img.record(KIND_INOTIFY, 0, [
        (u32(fd2), f"fd = {fd2}"),
        (u32(0), "fd_flags = 0"),
        (u32(O_NONBLOCK), "open_flags = O_NONBLOCK"),
        (u32(dup_of), f"dup_of = {dup_of}"),
    ], name="Inotify")
    if f == "watch-after-dup":
        watch(img, "", 1, IN_MODIFY, 2, b"/tmp")


def watch(img, f, wd, mask, inode, path, first=False):
    """§22: one InotifyWatch; faults apply to the first watch only."""
    if not first:
        f = ""
    if f == "watch-mask-zero":
        mask = 0
    if f == "watch-path-nul":
        path = b"/t\0p"
    path_len = {"watch-path-len-zero": 0, "watch-path-len-huge": 5000}.get(f, len(path))
    reserved = bytearray(6)
    if f == "watch-reserved":
        reserved[3] = 9
    pad = bytearray((-len(path)) % 8)
    if f == "watch-path-padding":
        pad[2] = 1
    extra = [(zeros(8), "8 bytes too many")] if f == "watch-length" else []
    img.record(KIND_INOTIFY_WATCH, 0, [
        (u32(wd), f"wd = {wd}"),
        (u32(mask), f"mask = 0x{mask:x}"),
        (u64(inode), f"inode = {inode}"),
        (u32(8) + u32(1), "dev = 8:1"),
        (u16(path_len), f"path_len = {path_len}"),
        (bytes(reserved), "_reserved0"),
        (path + bytes(pad), f"path {path!r}, zero-padded"),
    ] + extra, name="InotifyWatch")


def locks(img, f):
    """§23: a POSIX write lock on bytes 0..100 of fd 5, a shared flock of it."""
    fd = 0x80000000 if f == "lock-fd-huge" else 5
    ltype = 4 if f == "lock-ltype" else LOCK_POSIX
    mode = 0 if f == "lock-mode" else LOCK_WRITE
    start = 1 << 63 if f == "lock-start-huge" else 0
    length = (1 << 63) - 99 if f == "lock-len-overflow" else 100
    if f == "lock-len-overflow":
        start = 100
    img.record(KIND_LOCK, 0, [
        (u32(fd), f"fd = {fd}"),
        (u16(ltype) + u16(mode), f"ltype = {ltype} (LOCK_POSIX), mode = {mode} (LOCK_WRITE)"),
        (u64(start), f"start = {start}"),
        (u64(length), f"len = {length}"),
    ], name="Lock")
    start = 1 if f == "lock-flock-start" else 0
    length = 1 if f == "lock-flock-len" else 0
    img.record(KIND_LOCK, 0, [
        (u32(5), "fd = 5"),
        (u16(LOCK_FLOCK) + u16(LOCK_READ), "ltype = 2 (LOCK_FLOCK), mode = 1 (LOCK_READ)"),
        (u64(start), f"start = {start}"),
        (u64(length), f"len = {length}"),
    ], name="Lock")


VDSO_START = 0x7FFF0000


def vdso(img, f):
    """§7, §24: the vDSO's Vma, one page, and its bytes."""
    img.record(KIND_VMA, RECORD_CRITICAL, [
        (u64(VDSO_START), f"start = 0x{VDSO_START:x}"),
        (u64(VDSO_START + PAGE), f"end = 0x{VDSO_START + PAGE:x}"),
        (u64(0), "offset"),
        (u64(0), "inode"),
        (u64(0), "file_size"),
        (u64(0), "file_mtime_ns"),
        (u32(0), "dev_major"),
        (u32(0), "dev_minor"),
        (u32(PROT_READ | PROT_EXEC), "prot = PROT_READ|PROT_EXEC"),
        (u32(0), "flags = 0 (private)"),
        (u16(VMA_VDSO), "kind = 4 (VMA_VDSO)"),
        (u16(0), "path_len = 0"),
        (u32(0), "_reserved0"),
    ], name="Vma")
    if f != "vdso-after-anon-vma":
        vdso_data(img, f)
    if f == "vdso-twice":
        vdso_data(img, "")


def vdso_data(img, f):
    """§24: one page: the ELF magic, then bytes 0..255 over and over."""
    body = b"\x7fELF" + bytes(i % 256 for i in range(PAGE - 4))
    if f == "vdso-len-mismatch":
        body = body * 2
    length = {"vdso-len-huge": 0x200000, "vdso-short": 4000}.get(f, len(body))
    img.record(KIND_VDSO_DATA, 0, [
        (u32(length), f"len = {length}"),
        (u32(1 if f == "vdso-reserved" else 0), "_reserved0"),
        (body, f"the vDSO: {len(body)} bytes, 7f 'ELF' then 00 01 02 ... ff 00 01 ..."),
    ], name="VdsoData")


# Invalid 1.1 images: name -> (record index, payload offset of the field at fault or None for the
# record itself, cr-format's message). Record indexes of §14.1: 4 File fd 0, 5 FileData, 6 File
# cwd, 7 Signals, 8 Timers, 9 Process, 10 Vma, 11 VmaAttr, 12 Pages, 13 Tail.
SIG_ACTIONS = 24
FAULTS = {
    "state-in-1.0-image": (4, None, "record of kind File not allowed here: expected no record "
                           "kind of 1.1 in an image of version 1.0"),
    "file-record-critical": (4, None, "bad record flags 0x1: expected 0 (not critical) for a "
                             "kind of 1.1 or 1.2"),
    "file-deleted-pipe": (4, 8, "bad file flags 0x5: expected FILE_DELETED only for FILE_REG"),
    "file-unused-param": (4, 88 + 16, "bad params 0x7: expected 0 where the type uses none"),
    "file-data-for-pipe": (4, 80, "bad data_len 0x8: expected 0 but for sockets and epoll"),
    "file-dup-of-later-fd": (4, 72, "bad dup_of 0x5: expected DUP_NONE or a smaller fd "
                             "(DUP_NONE for the cwd and root)"),
    "file-path-nul": (4, 152 + 5, "bad path 0x0: expected no NUL byte"),
    "file-data-without-has-data": (5, None, "record of kind FileData not allowed here: "
                                   "expected a FileData only right after a File with "
                                   "FILE_HAS_DATA or a FileData"),
    "file-data-offset-gap": (5, 0, "bad offset 0x1: expected 0 for the first FileData, then "
                             "where the previous one ended"),
    "file-fd-twice": (6, 0, "bad fd 0x0: expected above the previous File's (sorted, once "
                      "each)"),
    "file-cwd-nonzero-fd": (6, 0, "bad fd 0x3: expected 0 for the cwd and root"),
    "signals-pending-count-huge": (7, 20, "4294967295 exceeds MAX_PENDING_SIGNALS (4096)"),
    "signals-sigkill-handler": (7, SIG_ACTIONS + 32 * (SIGKILL - 1),
                                "bad SIGKILL/SIGSTOP action 0x401100: expected all zero "
                                "(SIG_DFL)"),
    "signals-mask-sigkill": (7, SIG_ACTIONS + 32 * (SIGINT - 1) + 24,
                             "bad sigaction mask 0x100: expected without SIGKILL and SIGSTOP"),
    "timers-before-signals": (8, None, "record of kind Signals not allowed here: expected "
                              "Signals, Timers, Process in this order, each at most once"),
    "timers-posix-count-huge": (8, 48, "4294967295 exceeds MAX_POSIX_TIMERS (4096)"),
    "timers-thread-id-without-tid": (8, 56 + 24, "bad notify_tid 0x0: expected nonzero exactly "
                                     "for SIGEV_THREAD_ID"),
    "process-rlimit-above-max": (9, 16 * RLIMIT_NOFILE, "bad rlimit cur 0x2000: expected at "
                                 "most max"),
    "process-groups-unsorted": (9, 352 + 4, "bad groups 0x4: expected in increasing order"),
    "process-group-count-huge": (9, 344, "4294967295 exceeds MAX_GROUPS (65536)"),
    "signals-after-vma": (10, None, "record of kind Signals not allowed here: expected File, "
                          "Inotify, Lock, Signals, Timers and Process before the first Vma"),
    "vma-attr-twice": (12, None, "record of kind VmaAttr not allowed here: expected a VmaAttr "
                       "only right after a Vma"),
    "vma-attr-long": (11, None, "VmaAttr record: payload length 16, expected 8"),
    "regs-xsave-padding": (2, 744 + 5 + 1, "bad xsave padding 0x5a: expected zero bytes"),
    "mm-exe-nul": (3, 96 + 4, "bad exe path 0x0: expected no NUL byte"),
    "mm-exe-padding": (3, 96 + 9 + 3, "bad exe path 0x1: expected zero padding"),
    "pages-pad-len-huge": (12, 4, "bad pad_len 0x10000: expected less than MAX_PAGE_SIZE "
                           "(65536)"),
    "pages-pad-nonzero": (12, 16 + 32 + 100, "bad pad 0x7f: expected zero bytes"),
    "vma-attr-zero": (11, 0, "bad attrs 0x0: expected at least one bit (no VmaAttr when "
                      "none)"),
}


# Invalid 1.2 images, as FAULTS. Record indexes of §14.2: 4 File fd 0, 5 FileData, 6 File fd 5,
# 7 File cwd, 8 Inotify fd 3, 9 and 10 its InotifyWatch records, 11 Inotify fd 4, 12 and 13 Lock,
# 14 Signals, 15 Timers, 16 Process, 17 Vma, 18 VmaAttr, 19 Pages, 20 Vma vDSO, 21 VdsoData,
# 22 Tail.
NO_ORDER = "record of kind {} not allowed here: expected "
FAULTS_12 = {
    "v12-kind-in-1.1-image": (8, None, NO_ORDER.format("Inotify") + "no record kind of 1.2 in "
                              "an image of version 1.1"),
    "inotify-record-critical": (8, None, "bad record flags 0x1: expected 0 (not critical) for "
                                "a kind of 1.1 or 1.2"),
    "inotify-long": (8, None, "Inotify record: payload length 24, expected 16"),
    "inotify-fd-huge": (8, 0, "bad fd 0x80000000: expected below 2^31, above the previous "
                        "Inotify's"),
    "inotify-fd-flags": (8, 4, "bad fd_flags 0x2: expected FD_CLOEXEC or 0"),
    "inotify-fd-not-increasing": (11, 0, "bad fd 0x3: expected below 2^31, above the previous "
                                  "Inotify's"),
    "inotify-dup-of-later": (11, 12, "bad dup_of 0x5: expected NO_DUP or a smaller fd"),
    "watch-after-dup": (12, None, NO_ORDER.format("InotifyWatch") + "an InotifyWatch only right "
                        "after an Inotify with dup_of NO_DUP or an InotifyWatch"),
    "watch-path-len-huge": (9, 24, "5000 exceeds MAX_PATH (4096)"),
    "watch-path-len-zero": (9, 24, "bad path_len 0x0: expected at least 1"),
    "watch-length": (9, None, "InotifyWatch record: payload length 48, expected 40"),
    "watch-wd-zero": (9, 0, "bad wd 0x0: expected 1..=2^31-1, above the previous watch's"),
    "watch-wd-not-increasing": (10, 0, "bad wd 0x1: expected 1..=2^31-1, above the previous "
                                "watch's"),
    "watch-mask-zero": (9, 4, "bad mask 0x0: expected nonzero"),
    "watch-reserved": (9, 26, "bad _reserved0 0x9: expected 0"),
    "watch-path-nul": (9, 32 + 2, "bad path 0x0: expected no NUL byte"),
    "watch-path-padding": (9, 32 + 4 + 2, "bad watch path padding 0x1: expected zero bytes"),
    "lock-before-inotify": (10, None, NO_ORDER.format("Inotify") + "Inotify records before Lock, "
                            "Signals, Timers and Process"),
    "lock-after-signals": (13, None, NO_ORDER.format("Lock") + "Lock records before Signals, "
                           "Timers and Process"),
    "lock-fd-huge": (12, 0, "bad fd 0x80000000: expected below 2^31"),
    "lock-ltype": (12, 4, "bad ltype 0x4: expected LOCK_POSIX, LOCK_FLOCK or LOCK_OFD"),
    "lock-mode": (12, 6, "bad mode 0x0: expected LOCK_READ or LOCK_WRITE"),
    "lock-flock-start": (13, 8, "bad start 0x1: expected 0 for LOCK_FLOCK"),
    "lock-flock-len": (13, 16, "bad len 0x1: expected 0 for LOCK_FLOCK"),
    "lock-start-huge": (12, 8, "bad start 0x8000000000000000: expected at most 2^63-1"),
    "lock-len-overflow": (12, 16, f"bad len 0x{(1 << 63) - 99:x}: expected start + len - 1 at "
                          "most 2^63-1"),
    "vdso-after-anon-vma": (19, None, NO_ORDER.format("VdsoData") + "a VdsoData only right after "
                            "the vDSO's Vma or its VmaAttr"),
    "vdso-twice": (22, None, NO_ORDER.format("VdsoData") + "at most one VdsoData"),
    "vdso-len-huge": (21, 0, "2097152 exceeds MAX_VDSO_LEN (1048576)"),
    "vdso-short": (21, None, "VdsoData record: payload length 4104, expected 4008"),
    "vdso-len-mismatch": (21, 0, "bad len 0x2000: expected the vDSO Vma's end - start"),
    "vdso-reserved": (21, 4, "bad _reserved0 0x1: expected 0"),
}


def render(dump):
    """The §14 hex dump: lines of at most 16 hex byte pairs with a `#` comment. A run of 32 or
    more equal bytes is written as `# ... N bytes of XX`, which readers of the dump expand."""
    lines = []
    for b, text in dump:
        if b is None:
            lines.append(f"# {text}")
            continue
        if len(b) >= 32 and len(set(b)) == 1:
            lines.append(f"# ... {len(b)} bytes of {b[0]:02x}   ({text})")
            continue
        for i in range(0, len(b), 16):
            chunk = " ".join(f"{x:02x}" for x in b[i:i + 16])
            lines.append(f"{chunk:<48}  # {text if i == 0 else '(cont.)'}")
    return "\n".join(lines)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    print(f"wrote {path}: {len(data)} bytes", file=sys.stderr)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    image, dump, _ = build()
    write(os.path.join(here, "valid", "minimal-handmade.bin"), image)
    print(render(dump))
    state_image, _, _ = build(v11=True)
    write(os.path.join(here, "valid", "state-handmade.bin"), state_image)
    v12_image, v12_dump, _ = build(v12=True)
    write(os.path.join(here, "valid", "v12-handmade.bin"), v12_image)
    if "--v12-dump" in sys.argv:
        print(render(v12_dump))
    faults = [(n, x, False) for n, x in FAULTS.items()]
    faults += [(n, x, True) for n, x in FAULTS_12.items()]
    for name, (index, field, message), v12 in faults:
        bad, _, offsets = build(v11=True, fault=name, v12=v12)
        at = offsets[index] + (0 if field is None else 16 + field)
        write(os.path.join(here, "invalid", name + ".bin"), bad)
        with open(os.path.join(here, "invalid", name + ".err"), "w") as f:
            f.write(f"offset 0x{at:x}: {message}\n")
    # Inputs shorter than the magic's end (§2.5): the bytes past 16 decide.
    short = {
        "short-not-magic": (bytes(16) + b"\x7fEL", "offset 0x10: not a cr image: bad magic "
                            "(expected 89 43 52 49 0d 0a 1a 0a)"),
        "short-magic-prefix": (image[:20], "offset 0x14: image truncated: 4 more bytes expected"),
    }
    for name, (data, message) in short.items():
        write(os.path.join(here, "invalid", name + ".bin"), data)
        with open(os.path.join(here, "invalid", name + ".err"), "w") as f:
            f.write(message + "\n")


if __name__ == "__main__":
    main()
