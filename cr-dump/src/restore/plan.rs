//! Everything checked and opened before the fork: a restore that cannot succeed is refused
//! here, before a process exists.

use super::walk::Body;
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
    /// The mapped file's inode; for shared anonymous memory, the shared object's (VMAs of one
    /// object are created as one).
    pub inode: u64,
    /// `raw::VMA_ATTR_*` bits (its VmaAttr record).
    pub attrs: u32,
    /// Index into the opened files (file mappings).
    pub file: Option<usize>,
    /// The image holds pages of it (data, zero or in the parent).
    pub pages: bool,
    /// Created elsewhere and moved into place (`mremap`): it touches the VMA before it, which
    /// is like it in every way the kernel shows, so created in place the two would merge into
    /// one (the task had them apart: a different page offset or `anon_vma`, which maps does
    /// not show). Moved, its page offset does not follow its neighbour's.
    pub apart: bool,
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
    /// Mapped with its recorded protection at once: a shared file mapping, or a private one
    /// that is not writable and has no pages in the image. The latter as the task had it
    /// (most likely never writable, so without the kernel's `VM_ACCOUNT`): mapped writable
    /// first, it would merge with a neighbour the task had apart (an ELF's read-only data and
    /// its RELRO part, which was writable once).
    ///
    /// And private anonymous memory (heap and stack too) not kept [`VmaPlan::apart`]: its pages
    /// go in by `UFFDIO_COPY` (or `/proc/PID/mem`), neither of which needs a writable VMA.
    /// Mapped writable first, one-page neighbours of other protections would merge into one
    /// VMA, which step 7's `mprotect`s would split again (a fifth of the restore of 65,000
    /// mappings). The pages (`pages.rs`, `lazy.rs`) must never go in by `process_vm_writev`
    /// alone there: [`super::pages::put`] falls back to `/proc/PID/mem`, which writes through
    /// any protection. (Mapped so, a read-only VMA lacks the `VM_ACCOUNT` a task's
    /// `mprotect` from writable leaves: maps does not show it; it is charged when the task
    /// makes the VMA writable.)
    pub fn final_prot_at_map(&self) -> bool {
        if self.file.is_some() {
            return self.shared() || (self.prot & raw::PROT_WRITE == 0 && !self.pages);
        }
        !self.apart && super::pages::uffd_vma(self)
    }
    /// Shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`).
    pub fn shared_anon(&self) -> bool {
        self.shared() && self.kind == raw::VMA_ANON
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

/// Checks the image against this machine and opens its files; with what the walk over the
/// chain found ([`Body`]).
pub(super) fn plan<'a>(
    path: &Path,
    images: &[Image<'a>],
    body: Body<'a>,
) -> Result<(Plan, Body<'a>)> {
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
    let body = body.check(path)?;
    let mut warnings = Vec::new();
    check_vdso(path, &body, regs.gpr(GPR_RIP), &mut warnings)?;
    let (vmas, files) = vma_plans(&body, &mut warnings)?;
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
    Ok((plan, body))
}

/// The instruction pointer's index in `user_regs_struct` (`NT_PRSTATUS` order).
const GPR_RIP: usize = 16;

/// The image's vDSO bytes (format 1.2's VdsoData) against this machine's, which the restored
/// task gets (a task cannot be given another vDSO): a warning when they differ, as code of the
/// task may have kept addresses inside it; refused when the saved instruction pointer is inside
/// it, as the task would resume in the middle of different code. Images without the bytes are
/// not checked (the vDSO areas' sizes are, in [`layout`]).
fn check_vdso(path: &Path, body: &Body<'_>, rip: u64, warnings: &mut Vec<String>) -> Result<()> {
    let Some((v, d)) = body.vdso() else {
        return Ok(());
    };
    let machine = crate::inspect::core::machine_vdso();
    if machine.as_deref() == Ok(d.bytes) {
        return Ok(());
    }
    let why = match &machine {
        Ok(_) => "differs from this machine's (checkpointed under another kernel?)".to_string(),
        Err(e) => format!("cannot be compared with this machine's ({e})"),
    };
    if (v.start()..v.end()).contains(&rip) {
        return Err(other(format!(
            "{}: the task was stopped inside its vDSO (at {rip:#x}, in {:#x}-{:#x}), whose \
             code {why}: it would resume in the middle of other code",
            path.display(),
            v.start(),
            v.end()
        )));
    }
    warnings.push(format!(
        "the task's vDSO {why}: the restored task runs this machine's; the task may crash in \
         clock_gettime, gettimeofday or getcpu if it kept an address inside the vDSO"
    ));
    Ok(())
}

/// End of the x86-64 user address space with 4-level paging (`TASK_SIZE`): the kernel maps
/// nothing of a task's own at or above it (5-level paging gives more only on request, through
/// a hint address above it, which restore does not give).
pub(super) const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// The VMAs to create, and the files they map (opened now, inherited by the child).
fn vma_plans(body: &Body<'_>, warnings: &mut Vec<String>) -> Result<(Vec<VmaPlan>, Vec<File>)> {
    let mut files: Vec<File> = Vec::new();
    let mut file_paths: Vec<(Vec<u8>, bool)> = Vec::new();
    // Deleted files recreated, by inode: index into `files`.
    let mut recreated: Vec<(u64, usize)> = Vec::new();
    let mut vmas = Vec::new();
    for rec in &body.vmas {
        let v = rec.vma();
        let range = AddrRange::new(v.start(), v.end())
            .ok_or_else(|| other(format!("VMA {:#x}-{:#x} is inverted", v.start(), v.end())))?;
        let mut p = VmaPlan {
            range,
            offset: v.raw.offset.get(),
            prot: v.raw.prot.get(),
            flags: v.raw.flags.get(),
            kind: v.kind(),
            inode: v.raw.inode.get(),
            attrs: rec.attrs,
            file: None,
            // The image holds pages of it (data, zero or in the parent).
            pages: rec
                .pages()
                .any(|i| body.pages.get(i).is_some_and(|p| !p.runs().is_empty())),
            apart: false,
        };
        let shared = p.shared();
        if shared && !matches!(p.kind, raw::VMA_FILE | raw::VMA_ANON) && !p.special() {
            return Err(other(format!(
                "shared {} mapping {:#x}-{:#x}: only file and anonymous memory can be shared",
                crate::inspect::show::vma_kind_name(p.kind),
                range.start,
                range.end
            )));
        }
        if p.kind == raw::VMA_FILE && !shared && v.path.ends_with(DELETED) {
            let ino = p.inode;
            p.file = match recreated.iter().find(|r| r.0 == ino) {
                Some(r) => Some(r.1),
                None => {
                    files.push(recreate_deleted(&v, warnings)?);
                    // Kept parallel to `files`; an empty path matches no mapped file.
                    file_paths.push((Vec::new(), false));
                    recreated.push((ino, files.len() - 1));
                    Some(files.len() - 1)
                }
            };
            vmas.push(p);
            continue;
        }
        if p.kind == raw::VMA_FILE && !shared && v.path == DEV_ZERO.as_bytes() {
            // Private memory made by mapping /dev/zero: anonymous, named after the device.
            p.file = Some(match file_paths.iter().position(|(q, _)| q == v.path) {
                Some(i) => i,
                None => {
                    files.push(open_dev_zero()?);
                    file_paths.push((v.path.to_vec(), false));
                    files.len() - 1
                }
            });
            vmas.push(p);
            continue;
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
    mark_apart(&mut vmas);
    Ok((vmas, files))
}

/// The zero device.
const DEV_ZERO: &str = "/dev/zero";

/// `/dev/zero`, checked to be the zero device (character device 1:5), never through a
/// symlink.
fn open_dev_zero() -> Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(DEV_ZERO)
        .map_err(|e| {
            other(format!(
                "{DEV_ZERO} (for private memory mapped from it): {e}"
            ))
        })?;
    let md = f
        .metadata()
        .map_err(|e| other(format!("{DEV_ZERO}: {e}")))?;
    if !md.file_type().is_char_device() || md.rdev() != libc::makedev(1, 5) {
        return Err(other(format!("{DEV_ZERO} is not the zero device (1:5)")));
    }
    Ok(f)
}

/// How maps names a file deleted since it was mapped.
const DELETED: &[u8] = b" (deleted)";

/// A file like the deleted one `v` maps (of its size, empty: the image holds every page of
/// the mapping that lies within the file), unlinked, so the mapping shows the same name: created
/// at the original path and removed at once ([`sys::create_unlinked`]: never an existing file,
/// never through a symlink, mode 0600). If that path is taken or cannot be created, an unnamed file
/// (`O_TMPFILE`) in its directory or in the temporary directory instead, and a warning.
fn recreate_deleted(v: &cr_format::read::Vma<'_>, warnings: &mut Vec<String>) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = v
        .path
        .get(..v.path.len().saturating_sub(DELETED.len()))
        .unwrap_or_default();
    let path = Path::new(std::ffi::OsStr::from_bytes(name));
    let size = v.raw.file_size.get();
    let sized = |f: File, what: &Path| -> Result<File> {
        f.set_len(size)
            .map_err(|e| other(format!("recreating deleted {}: {e}", what.display())))?;
        Ok(f)
    };
    if let Some(m) = name
        .strip_prefix(b"/memfd:")
        .filter(|_| v.raw.dev_major.get() == 0)
    {
        // A memfd mapped privately: a memfd again, with its name (no file on any disk).
        let f = sys::fdobj::memfd(m).map_err(|e| {
            other(format!(
                "recreating memfd {}: {e}",
                String::from_utf8_lossy(m)
            ))
        })?;
        return sized(File::from(f), path);
    }
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let named = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => sys::create_unlinked(d, n).ok(),
        _ => None,
    };
    if let Some(f) = named {
        return sized(f, path);
    }
    let dir = path
        .parent()
        .filter(|d| d.is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let f = o
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(&dir)
        .or_else(|_| o.open(std::env::temp_dir()))
        .map_err(|e| {
            other(format!(
                "deleted file {} ({:#x}-{:#x}) cannot be recreated: {e}",
                path.display(),
                v.start(),
                v.end()
            ))
        })?;
    warnings.push(format!(
        "deleted file {} mapped at {:#x}-{:#x} is recreated without its name ({} cannot be \
         created): its contents are the same, /proc/PID/maps names it differently",
        path.display(),
        v.start(),
        v.end(),
        path.display()
    ));
    sized(f, path)
}

/// Marks the private anonymous VMAs that would merge with the one before them if created in
/// place ([`VmaPlan::apart`]).
fn mark_apart(vmas: &mut [VmaPlan]) {
    let anon = |v: &VmaPlan| {
        !v.shared() && matches!(v.kind, raw::VMA_ANON | raw::VMA_HEAP | raw::VMA_STACK)
    };
    for i in 1..vmas.len() {
        let (Some(a), Some(b)) = (vmas.get(i - 1), vmas.get(i)) else {
            continue;
        };
        let merge = anon(a)
            && anon(b)
            && b.flags & raw::VMA_GROWSDOWN == 0
            && a.range.end == b.range.start
            && (a.prot, a.flags, a.attrs) == (b.prot, b.flags, b.attrs);
        if let Some(b) = vmas.get_mut(i) {
            b.apart = merge;
        }
    }
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
