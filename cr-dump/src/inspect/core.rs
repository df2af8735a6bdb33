//! `cr-dump core`: an ELF core file (ET_CORE) of the checkpointed task, which gdb opens with the
//! original executable: `gdb PROGRAM CORE`.
//!
//! Layout, as the kernel's own core dumps: the ELF header; program headers, a PT_NOTE first, then
//! one PT_LOAD per VMA; the notes (NT_PRSTATUS, NT_PRPSINFO, NT_AUXV, NT_FILE,
//! NT_FPREGSET, NT_X86_XSTATE, NT_X86_XSAVE_LAYOUT); then each VMA's contents, page-aligned, resolved through the image
//! chain (stored pages, zeros, and for untouched pages of file mappings the file's bytes).
//!
//! gdb needs the vDSO's bytes (its symbols and unwind tables) to show the stack of a task
//! stopped inside it (`clock_gettime`): it reads them from the core's memory at
//! `AT_SYSINFO_EHDR`, as in the kernel's own cores. Images of format 1.2 hold them (a VdsoData
//! record after the vDSO's Vma): the core has the task's own. For an older image, when its vDSO
//! has the size of this machine's, the core holds this machine's vDSO (read from
//! `/proc/self/mem`), and says so ([`Core::notes`]): the task's own if it was checkpointed
//! under this kernel. The vvar and vsyscall PT_LOADs have no file contents.

use super::chain::{ChainFiles, LoadedChain, Parse};
use super::extract::{file_range, RangeError};
use crate::error::{Error, Result};
use cr_format::chain::Resolved;
use cr_format::raw;
use cr_format::read::{Image, Vma};
use std::io::{Seek, SeekFrom, Write};
use std::mem::size_of;
use std::path::Path;
use zerocopy::little_endian::{I16, I32, U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The ELF structures a core file is made of, as `<elf.h>` and the kernel's
/// `include/uapi/linux/elfcore.h` declare them for x86-64 (little-endian, 64-bit). Fields keep
/// the C names; holes the C compiler leaves are explicit `_pad` fields.
mod elf {
    use super::*;

    /// `e_type` of a core file.
    pub const ET_CORE: u16 = 4;
    /// Program header: loadable segment.
    pub const PT_LOAD: u32 = 1;
    /// Program header: notes.
    pub const PT_NOTE: u32 = 4;
    /// Segment flags.
    pub const PF_X: u32 = 1;
    /// Segment flags.
    pub const PF_W: u32 = 2;
    /// Segment flags.
    pub const PF_R: u32 = 4;
    /// `e_ident`: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE, padding.
    pub const IDENT: [u8; 16] = [0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    /// Note types.
    pub const NT_PRSTATUS: u32 = 1;
    /// Note types.
    pub const NT_FPREGSET: u32 = 2;
    /// Note types.
    pub const NT_PRPSINFO: u32 = 3;
    /// Note types.
    pub const NT_AUXV: u32 = 6;
    /// Note types.
    pub const NT_FILE: u32 = 0x4649_4c45;
    /// Note types.
    pub const NT_X86_XSTATE: u32 = 0x202;
    /// Note type: the XSAVE area's layout (`include/uapi/linux/elf.h`, Linux 6.12).
    pub const NT_X86_XSAVE_LAYOUT: u32 = 0x205;

    /// `Elf64_Ehdr`.
    #[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Ehdr {
        pub e_ident: [u8; 16],
        pub e_type: U16,
        pub e_machine: U16,
        pub e_version: U32,
        pub e_entry: U64,
        pub e_phoff: U64,
        pub e_shoff: U64,
        pub e_flags: U32,
        pub e_ehsize: U16,
        pub e_phentsize: U16,
        pub e_phnum: U16,
        pub e_shentsize: U16,
        pub e_shnum: U16,
        pub e_shstrndx: U16,
    }
    const _: () = assert!(size_of::<Ehdr>() == 64);

    /// `Elf64_Phdr`.
    #[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Phdr {
        pub p_type: U32,
        pub p_flags: U32,
        pub p_offset: U64,
        pub p_vaddr: U64,
        pub p_paddr: U64,
        pub p_filesz: U64,
        pub p_memsz: U64,
        pub p_align: U64,
    }
    const _: () = assert!(size_of::<Phdr>() == 56);

    /// `Elf64_Nhdr`: a note's header, followed by its name and its descriptor, each padded
    /// to 4 bytes.
    #[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Nhdr {
        pub n_namesz: U32,
        pub n_descsz: U32,
        pub n_type: U32,
    }
    const _: () = assert!(size_of::<Nhdr>() == 12);

    /// `struct elf_prstatus` (`NT_PRSTATUS`), x86-64.
    #[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Prstatus {
        /// `pr_info`: `struct elf_siginfo { si_signo, si_code, si_errno }`.
        pub si_signo: I32,
        pub si_code: I32,
        pub si_errno: I32,
        pub pr_cursig: I16,
        pub _pad0: [u8; 2],
        pub pr_sigpend: U64,
        pub pr_sighold: U64,
        pub pr_pid: U32,
        pub pr_ppid: U32,
        pub pr_pgrp: U32,
        pub pr_sid: U32,
        /// `pr_utime`, `pr_stime`, `pr_cutime`, `pr_cstime`: `struct timeval` each.
        pub pr_times: [U64; 8],
        /// `elf_gregset_t`: `struct user_regs_struct`, the image's register order.
        pub pr_reg: [U64; raw::X86_64_GPR_COUNT],
        pub pr_fpvalid: I32,
        pub _pad1: [u8; 4],
    }
    const _: () = assert!(size_of::<Prstatus>() == 336);

    /// `struct elf_prpsinfo` (`NT_PRPSINFO`), x86-64.
    #[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Prpsinfo {
        pub pr_state: u8,
        pub pr_sname: u8,
        pub pr_zomb: u8,
        pub pr_nice: u8,
        pub _pad0: [u8; 4],
        pub pr_flag: U64,
        pub pr_uid: U32,
        pub pr_gid: U32,
        pub pr_pid: U32,
        pub pr_ppid: U32,
        pub pr_pgrp: U32,
        pub pr_sid: U32,
        pub pr_fname: [u8; 16],
        pub pr_psargs: [u8; 80],
    }
    const _: () = assert!(size_of::<Prpsinfo>() == 136);

    /// `NT_FILE`'s descriptor starts with this, then one [`FileEntry`] per file mapping, then
    /// their paths, each NUL-terminated.
    #[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct FileHeader {
        pub count: U64,
        pub page_size: U64,
    }
    const _: () = assert!(size_of::<FileHeader>() == 16);

    /// One mapping of `NT_FILE`: where it is and its file offset in pages.
    #[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct FileEntry {
        pub start: U64,
        pub end: U64,
        pub file_ofs: U64,
    }
    const _: () = assert!(size_of::<FileEntry>() == 24);

    /// `Elf64_auxv_t` (`NT_AUXV`): the image's auxv entries are this layout already.
    const _: () = assert!(size_of::<raw::AuxvEntry>() == 16);
}

use elf::*;

/// A length in a 64-bit field: `usize` is at most 64 bits on every target Linux runs.
fn len64(n: usize) -> u64 {
    n as u64
}

/// Appends one note: header, name (NUL-terminated), descriptor, each part padded to 4 bytes.
fn note(out: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) -> Result<()> {
    let size = |n: usize| {
        u32::try_from(n).map_err(|_| Error::Other(format!("ELF note of {n} bytes: too large")))
    };
    let h = Nhdr {
        n_namesz: size(name.len() + 1)?.into(),
        n_descsz: size(desc.len())?.into(),
        n_type: kind.into(),
    };
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
    Ok(())
}

/// Whether the core holds `v`'s contents: not the areas images do not copy, except the vDSO
/// when this machine's of its size is at hand.
fn dumped(v: &Vma<'_>, vdso: Option<&[u8]>) -> bool {
    match v.kind() {
        raw::VMA_VDSO => vdso.is_some_and(|b| len64(b.len()) == v.end() - v.start()),
        raw::VMA_VVAR | raw::VMA_VSYSCALL => false,
        _ => true,
    }
}

/// `NT_PRSTATUS` of the task: ids, signal masks, registers.
fn prstatus(img: &Image<'_>, task: Option<&raw::Task>) -> Prstatus {
    let mut st = Prstatus::new_zeroed();
    // No signal stopped the task: it was frozen by ptrace (PTRACE_INTERRUPT) for the
    // checkpoint, so `pr_cursig` is 0 and there is no NT_SIGINFO (gdb then names no signal,
    // rather than a SIGSTOP that never came).
    if let Some(t) = task {
        st.pr_sigpend = t.sig_pending;
        st.pr_sighold = t.sig_blocked;
        st.pr_pid = t.pid;
        st.pr_ppid = t.ppid;
        st.pr_pgrp = t.pgid;
        st.pr_sid = t.sid;
    }
    if let Some(r) = img.regs() {
        st.pr_reg = r.raw.gpr;
        st.pr_fpvalid = 1.into();
    }
    st
}

/// `NT_PRPSINFO` of the task: state, ids, command name, and its arguments as the kernel writes
/// them (`pr_psargs`: the argument area, NULs made spaces, at most 79 bytes), read through the
/// chain; the command name when the area cannot be read.
fn prpsinfo(task: Option<&raw::Task>, args: Option<Vec<u8>>) -> Prpsinfo {
    let mut ps = Prpsinfo::new_zeroed();
    if let Some(t) = task {
        ps.pr_sname = t.state;
        ps.pr_uid = t.uid[0];
        ps.pr_gid = t.gid[0];
        ps.pr_pid = t.pid;
        ps.pr_ppid = t.ppid;
        ps.pr_pgrp = t.pgid;
        ps.pr_sid = t.sid;
        ps.pr_fname = t.comm;
        let args = args.unwrap_or_else(|| t.comm.to_vec());
        let args = args.strip_suffix(&[0]).unwrap_or(&args);
        // The last byte stays NUL, as the kernel leaves it (ELF_PRARGSZ - 1 bytes of text).
        for (d, s) in ps.pr_psargs.iter_mut().take(79).zip(args) {
            *d = if *s == 0 { b' ' } else { *s };
        }
    }
    ps
}

/// The bytes of the task's argument area (`arg_start..arg_end`, at most 80), through the chain.
fn psargs(chain: &LoadedChain<'_>) -> Option<Vec<u8>> {
    let m = chain.top().mm()?;
    let (start, end) = (m.raw.arg_start.get(), m.raw.arg_end.get());
    let len = end.checked_sub(start)?.min(80);
    let b = super::extract::read_range(chain.index(), chain.page_size(), start, len).ok()?;
    (!b.is_empty()).then_some(b)
}

/// `NT_FILE`: which file each file mapping maps, so gdb finds shared libraries.
fn file_note(vmas: &[Vma<'_>], page: u64) -> Vec<u8> {
    let files: Vec<&Vma<'_>> = vmas.iter().filter(|v| v.kind() == raw::VMA_FILE).collect();
    let mut f = Vec::new();
    let h = FileHeader {
        count: len64(files.len()).into(),
        page_size: page.into(),
    };
    f.extend_from_slice(h.as_bytes());
    for v in &files {
        let e = FileEntry {
            start: v.start().into(),
            end: v.end().into(),
            file_ofs: (v.raw.offset.get() / page).into(),
        };
        f.extend_from_slice(e.as_bytes());
    }
    for v in &files {
        f.extend_from_slice(v.path);
        f.push(0);
    }
    f
}

/// `NT_X86_XSAVE_LAYOUT`'s descriptor, as the kernel (6.12 and later) writes it after
/// NT_X86_XSTATE: one `struct x86_xfeat_component { u32 type, size, offset, flags; }` per
/// extended user state component (2 and up) the machine enables, with the offset CPUID leaf 0xD
/// gives (gdb reads the XSAVE area through it; AMD and Intel CPUs place some components
/// differently). Images do not record the capturing CPU's layout, so this is THIS machine's:
/// written only when the image's components (XCR0, which the kernel stores at bytes 464..472
/// of the area) are all enabled here and every component listed fits in the saved area, which
/// holds for an image taken on this machine or one like it. `None` otherwise: gdb then uses its
/// own idea of the layout, as with a core from an older kernel.
fn xsave_layout(xsave: &[u8]) -> Option<Vec<u8>> {
    let image_xcr0 = u64::from_le_bytes(xsave.get(464..472)?.try_into().ok()?);
    let here = crate::sys::xcr0()?;
    if image_xcr0 & !here != 0 {
        return None;
    }
    let mut out = Vec::new();
    for i in (2..64).filter(|i| here & (1u64 << i) != 0) {
        let (size, offset) = crate::sys::xstate_component(i)?;
        let end = usize::try_from(u64::from(offset) + u64::from(size)).ok()?;
        if end > xsave.len() {
            return None;
        }
        for v in [i, size, offset, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Builds the notes of the top image.
fn notes(img: &Image<'_>, vmas: &[Vma<'_>], args: Option<Vec<u8>>) -> Result<Vec<u8>> {
    let mut n = Vec::new();
    let task = img.task();
    note(&mut n, b"CORE", NT_PRSTATUS, prstatus(img, task).as_bytes())?;
    note(
        &mut n,
        b"CORE",
        NT_PRPSINFO,
        prpsinfo(task, args).as_bytes(),
    )?;
    if let Some(m) = img.mm() {
        note(&mut n, b"CORE", NT_AUXV, m.auxv.as_bytes())?;
    }
    let page = u64::from(img.page_size());
    note(&mut n, b"CORE", NT_FILE, &file_note(vmas, page))?;
    if let Some(r) = img.regs() {
        note(&mut n, b"CORE", NT_FPREGSET, &r.raw.fxsave)?;
        if !r.xsave.is_empty() {
            note(&mut n, b"LINUX", NT_X86_XSTATE, r.xsave)?;
            if let Some(layout) = xsave_layout(r.xsave) {
                note(&mut n, b"LINUX", NT_X86_XSAVE_LAYOUT, &layout)?;
            }
        }
    }
    Ok(n)
}

/// What [`write_core`] wrote.
#[derive(Clone, Debug, Default)]
pub struct Core {
    /// The file's length.
    pub len: u64,
    /// What the user should know about the core (the vDSO it holds).
    pub notes: Vec<String>,
}

/// How far [`write_core`] is: bytes of memory done, of a total.
pub type Progress<'p> = &'p mut dyn FnMut(u64, u64);

/// Writes the core file of the image at `path` (and its ancestors beside it) to `out`; returns
/// its length and notes for the user. Zeros (known-zero and untouched anonymous pages, file
/// pages past the file's end) are left as holes: the bytes written are bounded by the chain's
/// data, its mapped files and the headers, whatever the VMAs' sizes. `progress` is told the
/// bytes of memory done and their total as the contents are written.
pub fn write_core(
    path: &Path,
    out: &mut (impl Write + Seek),
    progress: Progress<'_>,
) -> Result<Core> {
    let files = ChainFiles::open(path)?;
    let chain = files.parse(Parse::Full)?;
    let mut notes = Vec::new();
    let vdso = this_vdso(chain.top(), &mut notes);
    let len = write_chain_core(
        &chain,
        true,
        vdso.as_deref(),
        &mut Sparse {
            w: out,
            hole: 0,
            pos: 0,
        },
        progress,
    )?;
    Ok(Core { len, notes })
}

/// The vDSO's bytes for the core: the task's own, from the image's VdsoData record (format
/// 1.2); for an image without them, this machine's if it has the size of the image's (see the
/// module's doc), with a note saying so, or why none.
fn this_vdso(img: &Image<'_>, notes: &mut Vec<String>) -> Option<Vec<u8>> {
    if let Some((v, d)) = img.vdso_data() {
        if len64(d.bytes.len()) == v.end() - v.start() {
            return Some(d.bytes.to_vec());
        }
    }
    let v = img.vmas().find(|v| v.kind() == raw::VMA_VDSO)?;
    let want = v.end() - v.start();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string());
    match machine_vdso() {
        Ok(b) if len64(b.len()) == want => {
            notes.push(format!(
                "the image does not hold the vDSO's bytes: the core has this machine's vDSO \
                 (Linux {release}, {want} bytes, the size of the task's), which is the task's \
                 if it was checkpointed under this kernel; gdb unwinds through it"
            ));
            Some(b)
        }
        Ok(b) => {
            notes.push(format!(
                "the core has no vDSO contents: the image does not hold them, and this \
                 machine's vDSO (Linux {release}, {} bytes) is not the size of the task's \
                 ({want} bytes); gdb cannot unwind a task stopped inside it",
                b.len()
            ));
            None
        }
        Err(e) => {
            notes.push(format!("the core has no vDSO contents: {e}"));
            None
        }
    }
}

/// This machine's vDSO (every process of a boot has the same): this process's range in
/// `/proc/self/maps`, its bytes through `/proc/self/mem`; or why it cannot be read.
pub fn machine_vdso() -> std::result::Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let range = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .ok_or("this process has no vDSO in /proc/self/maps")?;
    let len = usize::try_from(range.1.saturating_sub(range.0)).map_err(|_| "vDSO too large")?;
    let mem = std::fs::File::open("/proc/self/mem")
        .map_err(|e| format!("opening /proc/self/mem: {e}"))?;
    let mut b = vec![0u8; len];
    mem.read_exact_at(&mut b, range.0)
        .map_err(|e| format!("reading the vDSO through /proc/self/mem: {e}"))?;
    Ok(b)
}

/// [`write_core`] once the images are in memory: a chain of `(name, bytes)`, newest first (the
/// names are the ones errors give). With `files`, untouched pages of file mappings are read
/// from the files (as `write_core` does); without, they are written as zeros like any page not
/// available (no file system access: the fuzz targets). `out` cannot seek, so zeros are written
/// out: give it a sink that bounds what it takes.
pub fn write_core_from(images: &[(&Path, &[u8])], files: bool, out: &mut dyn Write) -> Result<u64> {
    write_chain_core(
        &LoadedChain::parse(images, Parse::Full)?,
        files,
        None,
        &mut Dense(out),
        &mut |_, _| {},
    )
}

/// Where a core goes: bytes, and runs of zeros that a file can leave as holes.
trait CoreOut {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()>;
    fn zeros(&mut self, n: u64) -> std::io::Result<()>;
    fn finish(&mut self) -> std::io::Result<()>;
}

/// Zeros written out.
struct Dense<'w>(&'w mut dyn Write);

impl CoreOut for Dense<'_> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.0.write_all(b)
    }
    fn zeros(&mut self, n: u64) -> std::io::Result<()> {
        let zero = [0u8; 65536];
        let mut left = n;
        while left > 0 {
            let k = left.min(len64(zero.len()));
            // k <= 65536.
            self.0.write_all(&zero[..k as usize])?;
            left -= k;
        }
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Zeros skipped over (holes); a hole at the end is closed by its last byte, written.
struct Sparse<'w, W: Write + Seek> {
    w: &'w mut W,
    /// Zeros not yet skipped.
    hole: u64,
    /// Bytes written or skipped so far.
    pos: u64,
}

impl<W: Write + Seek> Sparse<'_, W> {
    /// Skips `n` bytes, or says why the file cannot be that long.
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let to = self.pos.saturating_add(n);
        let too_long = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "the core reaches byte {to}, past what this file system allows in a file \
                     ({e}): write it where files may be that long (tmpfs, XFS)"
                ),
            )
        };
        let n = i64::try_from(n).map_err(|_| too_long(std::io::Error::other("hole past 2^63")))?;
        self.w.seek(SeekFrom::Current(n)).map_err(too_long)?;
        self.pos = to;
        Ok(())
    }
}

impl<W: Write + Seek> CoreOut for Sparse<'_, W> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let h = std::mem::take(&mut self.hole);
        self.skip(h)?;
        self.w.write_all(b)?;
        self.pos = self.pos.saturating_add(len64(b.len()));
        Ok(())
    }
    fn zeros(&mut self, n: u64) -> std::io::Result<()> {
        self.hole = self
            .hole
            .checked_add(n)
            .ok_or_else(|| std::io::Error::other("hole past 2^64 bytes"))?;
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        if self.hole > 0 {
            let h = std::mem::take(&mut self.hole);
            self.skip(h - 1)?;
            self.w.write_all(&[0])?;
        }
        self.w.flush()
    }
}

/// The ELF header and program headers of a core whose notes are `notes_len` bytes, and the
/// file's length. One PT_LOAD per VMA; their contents follow the notes, page-aligned.
fn headers(
    vmas: &[Vma<'_>],
    page: u64,
    notes_len: u64,
    vdso: Option<&[u8]>,
) -> Result<(Vec<u8>, u64)> {
    let phnum = u16::try_from(1 + vmas.len())
        .ok()
        .filter(|&n| n < 0xffff)
        .ok_or_else(|| Error::Other("too many VMAs for an ELF core (65535)".into()))?;
    let notes_off = len64(size_of::<Ehdr>() + size_of::<Phdr>() * usize::from(phnum));
    let mut h = Vec::with_capacity(size_of::<Ehdr>() + size_of::<Phdr>() * usize::from(phnum));
    let mut eh = Ehdr::new_zeroed();
    eh.e_ident = IDENT;
    eh.e_type = ET_CORE.into();
    eh.e_machine = raw::ARCH_X86_64.into();
    eh.e_version = 1.into();
    eh.e_phoff = len64(size_of::<Ehdr>()).into();
    eh.e_ehsize = (size_of::<Ehdr>() as u16).into();
    eh.e_phentsize = (size_of::<Phdr>() as u16).into();
    eh.e_phnum = phnum.into();
    h.extend_from_slice(eh.as_bytes());
    let phdr = |kind: u32, flags: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64, align| Phdr {
        p_type: kind.into(),
        p_flags: flags.into(),
        p_offset: off.into(),
        p_vaddr: vaddr.into(),
        p_paddr: 0.into(),
        p_filesz: filesz.into(),
        p_memsz: memsz.into(),
        p_align: U64::new(align),
    };
    let notes = phdr(PT_NOTE, 0, notes_off, 0, notes_len, 0, 4);
    h.extend_from_slice(notes.as_bytes());
    let too_large =
        || Error::Other("the VMAs are too large for an ELF core (past 2^64 bytes)".into());
    let mut data_off = notes_off
        .checked_add(notes_len)
        .ok_or_else(too_large)?
        .next_multiple_of(page);
    for v in vmas {
        let prot = v.raw.prot.get();
        let flags = [
            (raw::PROT_READ, PF_R),
            (raw::PROT_WRITE, PF_W),
            (raw::PROT_EXEC, PF_X),
        ]
        .iter()
        .filter(|(p, _)| prot & p != 0)
        .fold(0, |f, (_, pf)| f | pf);
        let size = v.end() - v.start();
        let filesz = if dumped(v, vdso) { size } else { 0 };
        let load = phdr(PT_LOAD, flags, data_off, v.start(), filesz, size, page);
        h.extend_from_slice(load.as_bytes());
        // VMAs may cover nearly all of the 64-bit space: their contents then do not fit in
        // one file.
        data_off = data_off.checked_add(filesz).ok_or_else(too_large)?;
    }
    Ok((h, data_off))
}

/// Writes the core of a parsed chain; returns its length. The contents are walked extent by
/// extent ([`cr_format::chain::ChainIndex::extent`]): the cost is per run, not per page.
fn write_chain_core(
    chain: &LoadedChain<'_>,
    files: bool,
    vdso: Option<&[u8]>,
    out: &mut dyn CoreOut,
    progress: Progress<'_>,
) -> Result<u64> {
    let top = chain.top();
    let vmas: Vec<Vma<'_>> = top.vmas().collect();
    let page = chain.page_size();
    let notes = notes(top, &vmas, psargs(chain))?;
    let (h, len) = headers(&vmas, page, len64(notes.len()), vdso)?;
    let total = vmas
        .iter()
        .filter(|v| dumped(v, vdso))
        .fold(0u64, |t, v| t.saturating_add(v.end() - v.start()));
    let mut done = 0u64;
    let io = |e| Error::io("write core file", e);
    out.bytes(&h).map_err(io)?;
    out.bytes(&notes).map_err(io)?;
    let end = len64(h.len() + notes.len());
    out.zeros(end.next_multiple_of(page) - end).map_err(io)?;
    for v in vmas.iter().filter(|v| dumped(v, vdso)) {
        if let (raw::VMA_VDSO, Some(b)) = (v.kind(), vdso) {
            out.bytes(b).map_err(io)?;
            done = done.saturating_add(len64(b.len()));
            progress(done, total);
            continue;
        }
        let mut a = v.start();
        while a < v.end() {
            let e = chain.index().extent(a);
            // An extent ends past its start; `max` keeps the walk going even if one did not.
            let stop = e.end.min(v.end()).max(a.saturating_add(page));
            let n = stop - a;
            // Pages not available (a mapped file gone or changed) are zeros: gdb then reads an
            // executable's own sections from the executable.
            match e.resolved {
                Some(Resolved::Data { bytes, .. }) => {
                    let b = bytes
                        .get(..usize::try_from(n).unwrap_or(usize::MAX))
                        .unwrap_or(bytes);
                    out.bytes(b).map_err(io)?;
                    out.zeros(n - len64(b.len())).map_err(io)?;
                }
                Some(Resolved::NotPresent { vma, .. }) if files && vma.kind() == raw::VMA_FILE => {
                    let (got, stopped) = file_range(&vma, a, n, &mut |b| out.bytes(b));
                    if let Some(RangeError::Sink(m)) = stopped {
                        return Err(Error::Other(format!("write core file: {m}")));
                    }
                    out.zeros(n - got).map_err(io)?;
                }
                _ => out.zeros(n).map_err(io)?,
            }
            done = done.saturating_add(n);
            progress(done, total);
            a = stop;
        }
    }
    out.finish().map_err(io)?;
    Ok(len)
}
