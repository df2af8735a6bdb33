//! Everything checked and opened before the fork: a restore that cannot succeed is refused
//! here, before a process exists.

use super::{other, SCRATCH_LEN};
use crate::error::Result;
use crate::procfs;
use crate::span::AddrRange;
use crate::sys;
use cr_format::raw;
use cr_format::read::Image;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One VMA to create.
#[derive(Clone, Debug)]
pub(super) struct VmaPlan {
    pub range: AddrRange,
    pub offset: u64,
    pub prot: u32,
    pub flags: u32,
    pub kind: u16,
    /// Index into the opened files (file mappings).
    pub file: Option<usize>,
}

impl VmaPlan {
    /// The vDSO, vvar or vsyscall area (moved, not created).
    pub fn special(&self) -> bool {
        matches!(self.kind, raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL)
    }
    /// `MAP_SHARED`.
    pub fn shared(&self) -> bool {
        self.flags & raw::VMA_SHARED != 0
    }
}

/// Everything taken from the image before the fork.
pub(super) struct Plan {
    pub vmas: Vec<VmaPlan>,
    pub files: Vec<File>,
    pub exe: Option<File>,
    pub gpr: [u64; raw::X86_64_GPR_COUNT],
    pub fxsave: Vec<u8>,
    pub xsave: Vec<u8>,
    pub mm: raw::Mm,
    /// The auxiliary vector as the kernel takes it (pairs of u64).
    pub auxv: Vec<u8>,
    pub task: raw::Task,
    /// How far the image's vDSO and vvar lie from ours (and the child's, a fork of us).
    pub delta: u64,
    /// Where the scratch area goes: free in the child's layout and the image's.
    pub scratch: u64,
    pub warnings: Vec<String>,
    /// Signals, timers, limits, attributes, credentials (step 9).
    pub state: super::process::StatePlan,
}

fn mtime_ns(md: &std::fs::Metadata) -> u64 {
    (md.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(md.mtime_nsec() as u64)
}

/// A free place of `len` bytes, avoiding `ranges`, between 4 GiB and 64 TiB, 1 GiB apart.
pub(super) fn hole(ranges: &[AddrRange], len: u64) -> Option<u64> {
    (4u64..64 * 1024)
        .map(|g| g << 30)
        .find(|&a| AddrRange::at(a, len).is_some_and(|r| !ranges.iter().any(|b| b.overlaps(&r))))
}

/// A task's mappings: range and path.
pub(super) fn task_maps(pid: i32) -> Result<Vec<(AddrRange, String)>> {
    let maps = procfs::parse_maps(&String::from_utf8_lossy(&procfs::read(pid, "maps")?))?;
    maps.into_iter()
        .map(|m| {
            let r = AddrRange::new(m.start, m.end)
                .ok_or_else(|| other(format!("pid {pid}: mapping {:#x}-{:#x}", m.start, m.end)))?;
            Ok((r, m.path))
        })
        .collect()
}

/// The vDSO and vvar areas among `maps`.
pub(super) fn special_areas(maps: &[(AddrRange, String)]) -> Vec<AddrRange> {
    maps.iter()
        .filter(|m| m.1 == "[vdso]" || m.1.starts_with("[vvar"))
        .map(|m| m.0)
        .collect()
}

/// Refuses a chain with a record kind this version does not know: restore cannot bring back
/// what it cannot read, and a reader may skip such a record only to inspect the image.
fn check_kinds(path: &Path, images: &[Image<'_>]) -> Result<()> {
    for img in images {
        for r in img.records() {
            if let cr_format::read::Record::Unknown(u) = r.record {
                return Err(other(format!(
                    "{}: record kind {} at offset {:#x} is unknown to this cr-dump ({}): it may \
                     hold state of the task that restore would lose; use a newer cr-dump",
                    path.display(),
                    u.kind,
                    r.offset,
                    crate::PRODUCER
                )));
            }
        }
    }
    Ok(())
}

/// Checks the image against this machine and opens its files.
pub(super) fn plan(path: &Path, images: &[Image<'_>]) -> Result<Plan> {
    let top = images
        .first()
        .ok_or_else(|| other(format!("{}: an empty chain", path.display())))?;
    let ps = sys::page_size();
    if top.page_size() as usize != ps {
        return Err(other(format!(
            "{}: page size {} differs from this machine's ({ps})",
            path.display(),
            top.page_size()
        )));
    }
    if !cfg!(target_arch = "x86_64") {
        return Err(other(
            "restore needs an x86-64 machine (the image is x86-64)",
        ));
    }
    let regs = top
        .regs()
        .ok_or_else(|| other("the image has no registers"))?;
    let mm = top
        .mm()
        .ok_or_else(|| other("the image has no Mm record"))?;
    let task = *top
        .task()
        .ok_or_else(|| other("the image has no Task record"))?;
    let xf = regs.raw.xfeatures.get();
    if !regs.xsave.is_empty() {
        // No XSAVE on this machine: no component enabled.
        let cpu = sys::xcr0().unwrap_or(0);
        if xf & !cpu != 0 {
            return Err(other(format!(
                "the image uses XSAVE features {:#x} (XCR0 {xf:#x}) that this CPU does not enable (XCR0 {cpu:#x})",
                xf & !cpu
            )));
        }
    }
    let mut gpr = [0u64; raw::X86_64_GPR_COUNT];
    for (i, g) in gpr.iter_mut().enumerate() {
        *g = regs.gpr(i);
    }
    check_user_space(path, top)?;
    check_kinds(path, images)?;
    let (vmas, files) = vma_plans(top)?;
    let mut warnings = Vec::new();
    let exe = if mm.exe.is_empty() {
        None
    } else {
        let ep = Path::new(std::ffi::OsStr::from_bytes(mm.exe));
        match sys::open_regular(ep, sys::Access::Read) {
            Ok(f) => Some(f),
            Err(e) => {
                warnings.push(format!(
                    "executable {} cannot be opened ({e}): /proc/PID/exe stays cr-dump's",
                    ep.display()
                ));
                None
            }
        }
    };
    let mut auxv = Vec::new();
    for e in mm.auxv {
        auxv.extend(e.key.get().to_le_bytes());
        auxv.extend(e.value.get().to_le_bytes());
    }
    let (delta, scratch) = layout(&vmas)?;
    let mut plan = Plan {
        vmas,
        files,
        exe,
        gpr,
        fxsave: regs.raw.fxsave.to_vec(),
        xsave: regs.xsave.to_vec(),
        mm: *mm.raw,
        auxv,
        task,
        delta,
        scratch,
        warnings,
        state: Default::default(),
    };
    super::process::plan(top, &mut plan)?;
    Ok(plan)
}

/// End of the x86-64 user address space with 4-level paging (`TASK_SIZE`): the kernel maps
/// nothing of a task's own at or above it (5-level paging gives more only on request, through
/// a hint address above it, which restore does not give).
pub(super) const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// The vsyscall page: the one mapping above [`TASK_SIZE`], the kernel's, at a fixed address.
const VSYSCALL: (u64, u64) = (0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000);

/// Refuses, before anything starts, a VMA or a page run that the child could not have: empty
/// or inverted, or outside the user address space (only the vsyscall VMA, which is never
/// created, lies above it, at its fixed address).
fn check_user_space(path: &Path, top: &Image<'_>) -> Result<()> {
    use cr_format::read::Record;
    let ps = top.page_size();
    for r in top.records() {
        let (start, end, what) = match r.record {
            Record::Vma(v) if v.kind() == raw::VMA_VSYSCALL => {
                if (v.start(), v.end()) == VSYSCALL {
                    continue;
                }
                (v.start(), v.end(), "vsyscall VMA".to_string())
            }
            Record::Vma(v) => (
                v.start(),
                v.end(),
                format!("{} VMA", crate::inspect::show::vma_kind_name(v.kind())),
            ),
            Record::Pages(p) => {
                let bad = p
                    .iter()
                    .find(|run| run.addr >= TASK_SIZE || run.end(ps) > TASK_SIZE);
                match bad {
                    Some(run) => (run.addr, run.end(ps), "page run".to_string()),
                    None => continue,
                }
            }
            _ => continue,
        };
        if start >= end || end > TASK_SIZE {
            return Err(other(format!(
                "{}: {what} {start:#x}-{end:#x} (record at offset {}) is {}: refused before \
                 anything starts",
                path.display(),
                r.offset,
                if start >= end {
                    "empty or inverted".to_string()
                } else {
                    format!("outside the user address space (which ends at {TASK_SIZE:#x})")
                }
            )));
        }
    }
    Ok(())
}

/// The VMAs to create, and the files they map (opened now, inherited by the child).
fn vma_plans(top: &Image<'_>) -> Result<(Vec<VmaPlan>, Vec<File>)> {
    let mut files: Vec<File> = Vec::new();
    let mut file_paths: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut vmas = Vec::new();
    for v in top.vmas() {
        let range = AddrRange::new(v.start(), v.end())
            .ok_or_else(|| other(format!("VMA {:#x}-{:#x} is inverted", v.start(), v.end())))?;
        let mut p = VmaPlan {
            range,
            offset: v.raw.offset.get(),
            prot: v.raw.prot.get(),
            flags: v.raw.flags.get(),
            kind: v.kind(),
            file: None,
        };
        let shared = p.shared();
        if shared && p.kind != raw::VMA_FILE && !p.special() {
            return Err(other(format!(
                "shared anonymous mapping {:#x}-{:#x}: images do not hold its contents",
                range.start, range.end
            )));
        }
        if p.kind == raw::VMA_FILE {
            let fp = Path::new(std::ffi::OsStr::from_bytes(v.path));
            let rw = shared && p.prot & raw::PROT_WRITE != 0;
            // Opened first and checked through the descriptor: the file checked is the file
            // mapped. Never through a symlink, never waiting on a FIFO.
            let access = if rw {
                sys::Access::ReadWrite
            } else {
                sys::Access::Read
            };
            let f = sys::open_regular(fp, access).and_then(|f| f.metadata().map(|m| (f, m)));
            let (f, md) = f.map_err(|e| {
                other(format!(
                    "mapped file {} ({:#x}-{:#x}): {e}",
                    fp.display(),
                    range.start,
                    range.end
                ))
            })?;
            if md.ino() != v.raw.inode.get()
                || md.size() != v.raw.file_size.get()
                || mtime_ns(&md) != v.raw.file_mtime_ns.get()
            {
                return Err(other(format!(
                    "mapped file {} changed since the checkpoint (inode {} size {} mtime {} ns, \
                     recorded {} {} {})",
                    fp.display(),
                    md.ino(),
                    md.size(),
                    mtime_ns(&md),
                    v.raw.inode.get(),
                    v.raw.file_size.get(),
                    v.raw.file_mtime_ns.get()
                )));
            }
            let i = match file_paths.iter().position(|(q, w)| q == v.path && *w == rw) {
                Some(i) => i,
                None => {
                    files.push(f);
                    file_paths.push((v.path.to_vec(), rw));
                    files.len() - 1
                }
            };
            p.file = Some(i);
        }
        vmas.push(p);
    }
    Ok((vmas, files))
}

/// The image's vDSO and vvar against this kernel's (ours are the child's: a fork), and a place
/// for the scratch area: (distance from ours to the image's, scratch address).
fn layout(vmas: &[VmaPlan]) -> Result<(u64, u64)> {
    let own = task_maps(i32::try_from(std::process::id()).map_err(|_| other("our pid"))?)?;
    let own_special = special_areas(&own);
    let img_special: Vec<AddrRange> = vmas
        .iter()
        .filter(|v| matches!(v.kind, raw::VMA_VDSO | raw::VMA_VVAR))
        .map(|v| v.range)
        .collect();
    let mismatch = || {
        other(format!(
            "the image's vDSO and vvar areas {img_special:x?} do not match this kernel's \
             {own_special:x?} (captured on another kernel?)"
        ))
    };
    let (Some(own0), Some(img0)) = (own_special.first(), img_special.first()) else {
        return Err(mismatch());
    };
    let delta = img0.start.wrapping_sub(own0.start);
    let same_layout = own_special.len() == img_special.len()
        && own_special
            .iter()
            .zip(&img_special)
            .all(|(a, b)| b.start.wrapping_sub(a.start) == delta && a.len() == b.len());
    if !same_layout {
        return Err(mismatch());
    }
    let mut busy: Vec<AddrRange> = own.iter().map(|m| m.0).collect();
    busy.extend(vmas.iter().map(|v| v.range));
    let scratch = hole(&busy, SCRATCH_LEN).ok_or_else(|| other("no room for the scratch area"))?;
    Ok((delta, scratch))
}
