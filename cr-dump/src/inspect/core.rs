//! `cr-dump core`: an ELF core file (ET_CORE) of the checkpointed task, which gdb opens with the
//! original executable: `gdb PROGRAM CORE`.
//!
//! Layout, as the kernel's own core dumps: the ELF header; program headers, a PT_NOTE first, then
//! one PT_LOAD per VMA; the notes (NT_PRSTATUS, NT_PRPSINFO, NT_SIGINFO, NT_AUXV, NT_FILE,
//! NT_FPREGSET, NT_X86_XSTATE); then each VMA's contents, page-aligned, resolved through the image
//! chain (stored pages, zeros, and for untouched pages of file mappings the file's bytes). The
//! vDSO, vvar and vsyscall areas are not in images, so their PT_LOADs have no file contents.

use crate::error::{Error, Result};
use crate::inspect::{image_error, load_chain};
use cr_format::chain::{Chain, ChainIndex};
use cr_format::raw;
use cr_format::read::{Image, Vma};
use std::io::Write;
use std::path::Path;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const NT_PRSTATUS: u32 = 1;
const NT_FPREGSET: u32 = 2;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_SIGINFO: u32 = 0x5349_4749;
const NT_FILE: u32 = 0x4649_4c45;
const NT_X86_XSTATE: u32 = 0x202;

fn note(out: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) {
    let namesz = name.len() + 1;
    out.extend((namesz as u32).to_le_bytes());
    out.extend((desc.len() as u32).to_le_bytes());
    out.extend(kind.to_le_bytes());
    out.extend(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn dumped(v: &Vma<'_>) -> bool {
    !matches!(v.kind(), raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL)
}

/// Builds the notes of the top image.
fn notes(img: &Image<'_>, vmas: &[Vma<'_>]) -> Vec<u8> {
    let mut n = Vec::new();
    let task = img.task();
    let (pid, ppid, pgid, sid) = task.map_or((0, 0, 0, 0), |t| {
        (t.pid.get(), t.ppid.get(), t.pgid.get(), t.sid.get())
    });
    // struct elf_prstatus, x86-64: 112 bytes of header, 27 registers, pr_fpvalid, padding.
    let mut st = vec![0u8; 336];
    st[0..4].copy_from_slice(&19u32.to_le_bytes()); // si_signo: SIGSTOP, the task was frozen
    st[12..14].copy_from_slice(&19u16.to_le_bytes()); // pr_cursig
    if let Some(t) = task {
        st[16..24].copy_from_slice(&t.sig_pending.get().to_le_bytes());
        st[24..32].copy_from_slice(&t.sig_blocked.get().to_le_bytes());
    }
    st[32..36].copy_from_slice(&pid.to_le_bytes());
    st[36..40].copy_from_slice(&ppid.to_le_bytes());
    st[40..44].copy_from_slice(&pgid.to_le_bytes());
    st[44..48].copy_from_slice(&sid.to_le_bytes());
    let regs = img.regs();
    if let Some(r) = regs {
        for i in 0..raw::X86_64_GPR_COUNT {
            st[112 + 8 * i..120 + 8 * i].copy_from_slice(&r.gpr(i).to_le_bytes());
        }
        st[328..332].copy_from_slice(&1u32.to_le_bytes()); // pr_fpvalid
    }
    note(&mut n, b"CORE", NT_PRSTATUS, &st);
    // struct elf_prpsinfo: 136 bytes.
    let mut ps = vec![0u8; 136];
    if let Some(t) = task {
        ps[1] = t.state; // pr_sname
        ps[16..20].copy_from_slice(&t.uid[0].get().to_le_bytes());
        ps[20..24].copy_from_slice(&t.gid[0].get().to_le_bytes());
        ps[40..56].copy_from_slice(&t.comm);
        ps[56..56 + 16].copy_from_slice(&t.comm);
    }
    ps[24..28].copy_from_slice(&pid.to_le_bytes());
    ps[28..32].copy_from_slice(&ppid.to_le_bytes());
    ps[32..36].copy_from_slice(&pgid.to_le_bytes());
    ps[36..40].copy_from_slice(&sid.to_le_bytes());
    note(&mut n, b"CORE", NT_PRPSINFO, &ps);
    let mut si = vec![0u8; 128];
    si[0..4].copy_from_slice(&19u32.to_le_bytes());
    note(&mut n, b"CORE", NT_SIGINFO, &si);
    if let Some(m) = img.mm() {
        let mut a = Vec::new();
        for e in m.auxv {
            a.extend(e.key.get().to_le_bytes());
            a.extend(e.value.get().to_le_bytes());
        }
        note(&mut n, b"CORE", NT_AUXV, &a);
    }
    // NT_FILE: which file each file mapping maps, so gdb finds shared libraries.
    let files: Vec<&Vma<'_>> = vmas.iter().filter(|v| v.kind() == raw::VMA_FILE).collect();
    let page = u64::from(img.page_size());
    let mut f = Vec::new();
    f.extend((files.len() as u64).to_le_bytes());
    f.extend(page.to_le_bytes());
    for v in &files {
        f.extend(v.start().to_le_bytes());
        f.extend(v.end().to_le_bytes());
        f.extend((v.raw.offset.get() / page).to_le_bytes());
    }
    for v in &files {
        f.extend(v.path);
        f.push(0);
    }
    note(&mut n, b"CORE", NT_FILE, &f);
    if let Some(r) = regs {
        note(&mut n, b"CORE", NT_FPREGSET, &r.raw.fxsave);
        if !r.xsave.is_empty() {
            note(&mut n, b"LINUX", NT_X86_XSTATE, r.xsave);
        }
    }
    n
}

/// Writes the core file of the image at `path` (and its ancestors beside it) to `out`; returns
/// its length.
pub fn write_core(path: &Path, out: &mut dyn Write) -> Result<u64> {
    let maps = load_chain(path)?;
    let images: Vec<(&Path, &[u8])> = maps.iter().map(|m| (m.path.as_path(), m.bytes())).collect();
    write_core_from(&images, true, out)
}

/// [`write_core`] once the images are in memory: a chain of `(name, bytes)`, newest first (the
/// first name is the one in chain errors). With `files`, untouched pages of file mappings are
/// read from the files (as `write_core` does); without, they are written as zeros like any
/// page not available (no file system access: the fuzz targets).
pub fn write_core_from(images: &[(&Path, &[u8])], files: bool, out: &mut dyn Write) -> Result<u64> {
    let path = images.first().map_or(Path::new("-"), |(p, _)| *p);
    let images = images
        .iter()
        .map(|(p, b)| Image::parse(b).map_err(|e| image_error(p, e, None)))
        .collect::<Result<Vec<_>>>()?;
    let chain = Chain::new(&images).map_err(|e| image_error(path, e, None))?;
    let idx = ChainIndex::new(&chain);
    // Chain::new refuses an empty chain.
    let Some(top) = images.first() else {
        return Err(Error::Other("no image".into()));
    };
    let vmas: Vec<Vma<'_>> = top.vmas().collect();
    let page = u64::from(top.page_size());
    let notes = notes(top, &vmas);
    let phnum = 1 + vmas.len();
    if phnum >= 0xffff {
        return Err(Error::Other("too many VMAs for an ELF core (65535)".into()));
    }
    let notes_off = 64 + 56 * phnum as u64;
    let mut data_off = (notes_off + notes.len() as u64).next_multiple_of(page);
    let mut h = Vec::with_capacity(notes_off as usize);
    // Elf64_Ehdr.
    h.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    h.extend(4u16.to_le_bytes()); // ET_CORE
    h.extend(raw::ARCH_X86_64.to_le_bytes());
    h.extend(1u32.to_le_bytes());
    h.extend(0u64.to_le_bytes()); // e_entry
    h.extend(64u64.to_le_bytes()); // e_phoff
    h.extend(0u64.to_le_bytes()); // e_shoff
    h.extend(0u32.to_le_bytes()); // e_flags
    h.extend(64u16.to_le_bytes()); // e_ehsize
    h.extend(56u16.to_le_bytes()); // e_phentsize
    h.extend((phnum as u16).to_le_bytes());
    h.extend([0u8; 6]); // e_shentsize, e_shnum, e_shstrndx
    let phdr = |h: &mut Vec<u8>,
                kind: u32,
                flags: u32,
                off: u64,
                vaddr: u64,
                filesz: u64,
                memsz: u64,
                align: u64| {
        h.extend(kind.to_le_bytes());
        h.extend(flags.to_le_bytes());
        h.extend(off.to_le_bytes());
        h.extend(vaddr.to_le_bytes());
        h.extend(0u64.to_le_bytes());
        h.extend(filesz.to_le_bytes());
        h.extend(memsz.to_le_bytes());
        h.extend(align.to_le_bytes());
    };
    phdr(&mut h, PT_NOTE, 0, notes_off, 0, notes.len() as u64, 0, 4);
    for v in &vmas {
        let prot = v.raw.prot.get();
        // ELF PF_X=1, PF_W=2, PF_R=4; PROT_READ=1, PROT_WRITE=2, PROT_EXEC=4.
        let flags = ((prot & raw::PROT_READ) * 4)
            | (prot & raw::PROT_WRITE)
            | ((prot & raw::PROT_EXEC) / 4);
        let size = v.end() - v.start();
        let filesz = if dumped(v) { size } else { 0 };
        phdr(
            &mut h,
            PT_LOAD,
            flags,
            data_off,
            v.start(),
            filesz,
            size,
            page,
        );
        // VMAs may cover nearly all of the 64-bit space: their contents then do not fit in
        // one file.
        data_off = data_off.checked_add(filesz).ok_or_else(|| {
            Error::Other("the VMAs are too large for an ELF core (past 2^64 bytes)".into())
        })?;
    }
    let io = |e| Error::io("write core file", e);
    out.write_all(&h).map_err(io)?;
    out.write_all(&notes).map_err(io)?;
    let pad =
        (notes_off + notes.len() as u64).next_multiple_of(page) - (notes_off + notes.len() as u64);
    out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    let zero = vec![0u8; page as usize];
    for v in vmas.iter().filter(|v| dumped(v)) {
        let mut a = v.start();
        while a < v.end() {
            // Pages not available (a mapped file gone or changed) are written as zeros: gdb then
            // reads an executable's own sections from the executable.
            match crate::inspect::page_content_with(&idx, a, page, files) {
                crate::inspect::Page::Bytes(b) => out.write_all(&b).map_err(io)?,
                _ => out.write_all(&zero).map_err(io)?,
            }
            a += page;
        }
    }
    out.flush().map_err(io)?;
    Ok(data_off)
}
