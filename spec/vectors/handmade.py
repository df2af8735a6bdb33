#!/usr/bin/env python3
"""Builds the minimal image of FORMAT.md §14 from the spec's tables alone.

Independent of the Rust writer: only struct.pack, zlib.crc32 and the bitwise CRC-64/XZ below.
Writes spec/vectors/valid/minimal-handmade.bin (next to this script) and prints the annotated
hex dump that FORMAT.md §14 shows. Run from anywhere: python3 spec/vectors/handmade.py
"""

import os
import struct
import sys
import zlib

PAGE = 4096

# §2.2 record kinds, §3..§9 constants.
KIND_HEADER, KIND_TASK, KIND_REGS, KIND_MM, KIND_VMA, KIND_PAGES, KIND_TAIL = range(1, 8)
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
        self.field(struct.pack("<HH", kind, flags), f"kind={kind} ({name}), flags={flags} (critical)")
        self.field(struct.pack("<I", length), f"len={length}")
        self.field(struct.pack("<I", self.index), f"index={self.index}")
        self.field(struct.pack("<I", crc), f"crc=0x{crc:08x}")
        for b, text in fields:
            self.field(b, text)
        if kind != KIND_TAIL:
            self.headers.append(header)
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


def build():
    img = Image()

    # §3 Header.
    producer = b"cr-handmade 1.0".ljust(32, b"\0")
    img.record(KIND_HEADER, RECORD_CRITICAL, [
        (MAGIC, "magic = 89 'CRI' \\r \\n 1a \\n"),
        (u16(1), "version_major = 1"),
        (u16(0), "version_minor = 0"),
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
        (producer[:16], "producer = \"cr-handmade 1.0\", NUL-padded"),
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
    fields = [
        (u16(ARCH_X86_64), "arch = 62"),
        (u16(0), "_reserved0"),
        (u32(0), "xsave_len = 0 (no XSAVE area)"),
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
    img.record(KIND_REGS, RECORD_CRITICAL, fields, name="Regs")

    # §6 Mm, no auxv, exe "/bin/true" (9 bytes, padded to 16).
    exe = b"/bin/true"
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
        (exe + zeros(7), "exe path \"/bin/true\", zero-padded to 16"),
    ], name="Mm")

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

    # §8 Pages: DATA run of 1 page at 0x10000 (0xab), ZERO run of 1 page at 0x11000.
    data = b"\xab" * PAGE
    start = len(img.out)
    table_end = start + 16 + 16 + 16 * 2
    pad = (-table_end) % PAGE
    data_crc = zlib.crc32(data)
    img.record(KIND_PAGES, RECORD_CRITICAL, [
        (u32(2), "run_count = 2"),
        (u32(pad), f"pad_len = {pad}: the run table ends at {table_end}, data starts at "
                   f"{table_end + pad}"),
        (u32(data_crc), f"data_crc = 0x{data_crc:08x}"),
        (u32(0), "_reserved0"),
        (u64(0x10000) + u32(1) + u16(RUN_DATA) + u16(0), "run 0: addr 0x10000, pages 1, RUN_DATA"),
        (u64(0x11000) + u32(1) + u16(RUN_ZERO) + u16(0), "run 1: addr 0x11000, pages 1, RUN_ZERO"),
        (zeros(pad), f"pad: {pad} zero bytes"),
    ], data=data, name="Pages")
    img.field(data, f"data: {PAGE} bytes of 0xab (offset {table_end + pad}, not under the "
                    "record CRC)")

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
    return bytes(img.out), img.dump


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


def main():
    image, dump = build()
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "valid", "minimal-handmade.bin")
    with open(path, "wb") as f:
        f.write(image)
    print(render(dump))
    print(f"wrote {path}: {len(image)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
