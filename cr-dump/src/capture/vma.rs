//! A VMA as it goes into the image ([`VmaRec`]): its kind, which of its pages are stored, and
//! what a dirty tracker reports about it ([`Scan`], [`Tracker`]).
//!
//! What is stored: for anonymous memory (and `[heap]`, `[stack]`), every page that is present
//! or swapped; for private file mappings, only the pages that are anonymous per
//! `/proc/PID/pagemap` (written, so copied-on-write); nothing of shared (read-only) mappings,
//! whose contents are the file's, nor of the vDSO, vvar and vsyscall areas, which are recorded
//! as VMAs only. Shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`, or `/dev/zero` mapped
//! shared: the kernel shows both as `/dev/zero (deleted)` on its internal shmem mount, device
//! major 0) is recorded as a `VMA_ANON` Vma with `VMA_SHARED`, no path, and the shmem inode in
//! `inode` (VMAs of one object share it, and `offset` is their place in it); every page of the
//! object that holds data is stored, whether or not the task's page tables map it (a page
//! written by a child that has exited, or paged out, is in the object only).
//!
//! A memfd mapped privately is stored as a private mapping of a deleted file is (every page up
//! to its end: restore makes a new memfd of that name from them). A memfd mapped shared is
//! recorded as shared anonymous memory (its `inode` the memfd's). When the task has
//! the memfd open too, its File record (§15, with the name, seals and contents) carries the same
//! inode, and restore makes the mapping from that memfd: one object again. A memfd only mapped
//! comes back as shared anonymous memory with the mapped contents; its name and seals have no
//! place in the image (a `Partial` line says so).
//!
//! Attributes (`VMA_ATTR_*`) come from `VmFlags` of `/proc/PID/smaps`: for a lazy checkpoint
//! by a twin, the twin's smaps read after the task runs again (`lazy::cow_fast`); otherwise the
//! task's, read before the freeze and, only when the mappings changed since, again while the
//! task is frozen (`read_maps_frozen`).

use super::check::{
    is_deleted, is_shared_memfd, is_shared_object, read_smaps, read_text, Inspection, Smaps,
    ATTR_SEALED, ATTR_SHADOW_STACK,
};
use super::state::FileEntry;
use super::state::{Action, Fidelity};
use crate::error::Result;
use crate::procfs::{self, MapsEntry};
use crate::span::{AddrRange, PageSpan};
use crate::sys;
use cr_format::raw;
use cr_format::write::{Sink, Writer};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use zerocopy::FromZeros;

/// What a mapping is, from its `/proc/PID/maps` name (the image's `Vma::kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaKind {
    /// Anonymous memory.
    Anon,
    /// `[heap]`.
    Heap,
    /// `[stack]`.
    Stack,
    /// A file mapping (an absolute path with an inode).
    File,
    /// `[vdso]`.
    Vdso,
    /// `[vvar]` and `[vvar_vclock]`.
    Vvar,
    /// `[vsyscall]`.
    Vsyscall,
    /// Shared anonymous memory: `/dev/zero (deleted)`, shared, on device major 0; and a memfd
    /// mapped shared (`/memfd:NAME (deleted)`), which is recorded and restored the same way.
    SharedAnon,
}

impl VmaKind {
    /// The kind of `m`.
    pub fn of(m: &MapsEntry) -> VmaKind {
        match m.path.as_str() {
            "[heap]" => VmaKind::Heap,
            "[stack]" => VmaKind::Stack,
            "[vdso]" => VmaKind::Vdso,
            p if p.starts_with("[vvar") => VmaKind::Vvar,
            "[vsyscall]" => VmaKind::Vsyscall,
            _ if is_shared_object(m) => VmaKind::SharedAnon,
            p if p.starts_with('/') && m.inode != 0 => VmaKind::File,
            _ => VmaKind::Anon,
        }
    }

    /// Its `raw::VMA_*` value.
    pub fn raw(self) -> u16 {
        match self {
            VmaKind::Anon | VmaKind::SharedAnon => raw::VMA_ANON,
            VmaKind::Heap => raw::VMA_HEAP,
            VmaKind::Stack => raw::VMA_STACK,
            VmaKind::File => raw::VMA_FILE,
            VmaKind::Vdso => raw::VMA_VDSO,
            VmaKind::Vvar => raw::VMA_VVAR,
            VmaKind::Vsyscall => raw::VMA_VSYSCALL,
        }
    }

    /// Private anonymous memory of some kind (plain, heap, stack).
    pub fn anon(self) -> bool {
        matches!(self, VmaKind::Anon | VmaKind::Heap | VmaKind::Stack)
    }

    /// An area the kernel provides (vDSO, vvar, vsyscall): recorded, never stored.
    pub fn special(self) -> bool {
        matches!(self, VmaKind::Vdso | VmaKind::Vvar | VmaKind::Vsyscall)
    }
}

/// Which pages of a VMA are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// None: vDSO/vvar/vsyscall, shared mappings.
    Skip,
    /// Present or swapped pages (anonymous memory).
    Present,
    /// Anonymous (copied-on-write) pages of a private file mapping.
    AnonOnly,
    /// Shared anonymous memory: every page of the object that holds data
    /// (`SEEK_DATA` on the object; [`Policy::keeps`] gives what the page tables show).
    Shared,
    /// A private mapping of a file deleted since: every page up to the end of the file (the
    /// file is gone: its contents must be in the image).
    Whole,
}

impl Policy {
    /// Whether a page with pagemap entry `e` is stored.
    pub fn keeps(self, e: u64) -> bool {
        match self {
            Policy::Skip => false,
            Policy::Present | Policy::Shared => e & (procfs::PM_PRESENT | procfs::PM_SWAPPED) != 0,
            Policy::Whole => true,
            Policy::AnonOnly => {
                e & procfs::PM_SWAPPED != 0
                    || (e & procfs::PM_PRESENT != 0 && e & procfs::PM_FILE == 0)
            }
        }
    }
}

/// One VMA as it goes into the image.
#[derive(Clone, Debug)]
pub struct VmaRec {
    /// The record's fixed part.
    pub vma: raw::Vma,
    /// File path (file mappings only).
    pub path: Vec<u8>,
    /// `raw::VMA_ATTR_*` bits (from smaps; 0 when only maps was read), and the crate's own
    /// [`super::check::ATTR_SEALED`] and [`super::check::ATTR_SHADOW_STACK`] above them (never
    /// written).
    pub attrs: u32,
    /// The memfd's name, for a memfd mapped shared.
    pub memfd: Option<String>,
    /// The vDSO's bytes (the `[vdso]` VMA only), read from the task: written in a VdsoData
    /// record after its Vma, so cores unwind through the task's own vDSO. `None` when they
    /// could not be read (cores then fall back to this machine's).
    pub vdso: Option<Vec<u8>>,
    kind: VmaKind,
    policy: Policy,
}

impl VmaRec {
    /// The VMA of `m` (of task `pid`) as a capture records it.
    pub fn of(pid: i32, m: &MapsEntry) -> VmaRec {
        let kind = VmaKind::of(m);
        let mut v = raw::Vma::new_zeroed();
        v.start = m.start.into();
        v.end = m.end.into();
        v.offset = m.offset.into();
        v.inode = m.inode.into();
        v.dev_major = m.dev_major.into();
        v.dev_minor = m.dev_minor.into();
        let mut prot = 0;
        if m.read {
            prot |= raw::PROT_READ;
        }
        if m.write {
            prot |= raw::PROT_WRITE;
        }
        if m.exec {
            prot |= raw::PROT_EXEC;
        }
        v.prot = prot.into();
        let mut flags = 0;
        if m.shared {
            flags |= raw::VMA_SHARED;
        }
        if kind == VmaKind::Stack {
            flags |= raw::VMA_GROWSDOWN;
        }
        v.flags = flags.into();
        v.kind = kind.raw().into();
        let mut path = Vec::new();
        if kind == VmaKind::File {
            path = m.path.as_bytes().to_vec();
            path.truncate(cr_format::limits::MAX_PATH as usize);
            let mf = procfs::path(pid, &format!("map_files/{:x}-{:x}", m.start, m.end));
            let md = std::fs::metadata(&mf).or_else(|_| std::fs::metadata(&m.path));
            if let Ok(md) = md {
                v.file_size = md.size().into();
                // The field is unsigned: an mtime before 1970 is recorded as 0.
                let ns = u64::try_from(md.mtime())
                    .unwrap_or(0)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(u64::try_from(md.mtime_nsec()).unwrap_or(0));
                v.file_mtime_ns = ns.into();
            }
        }
        let policy = if kind == VmaKind::SharedAnon {
            Policy::Shared
        } else if kind.special() || m.shared {
            Policy::Skip
        } else if kind == VmaKind::File && (is_deleted(m) || is_memfd(m)) {
            // A memfd is a deleted file: its contents must be in the image.
            Policy::Whole
        } else if kind == VmaKind::File {
            Policy::AnonOnly
        } else {
            Policy::Present
        };
        let memfd = is_shared_memfd(m).then(|| {
            let n = m.path.strip_prefix("/memfd:").unwrap_or(&m.path);
            n.strip_suffix(" (deleted)").unwrap_or(n).to_string()
        });
        // Read whenever the record is made: the vDSO never changes (a debugger's breakpoint
        // aside), and it is a few KiB.
        let vdso = (kind == VmaKind::Vdso)
            .then(|| read_vdso(pid, m.start, m.end))
            .flatten();
        VmaRec {
            vma: v,
            path,
            attrs: 0,
            memfd,
            vdso,
            kind,
            policy,
        }
    }

    /// Writes its Vma record, and a VmaAttr record right after it when it has attributes.
    pub fn write<S: Sink>(&self, w: &mut Writer<S>) -> Result<()> {
        w.vma(&self.vma, &self.path)?;
        let attrs = self.attrs & raw::VMA_ATTR_KNOWN;
        if attrs != 0 {
            let mut a = raw::VmaAttr::new_zeroed();
            a.attrs = attrs.into();
            w.vma_attr(&a)?;
        }
        if let Some(b) = &self.vdso {
            w.vdso_data(b)?;
        }
        Ok(())
    }

    /// Why a child made by `fork` (a twin) does not hold a copy of it as it is now: `None`
    /// when it does.
    pub fn not_copied_by_fork(&self) -> Option<&'static str> {
        match self.policy {
            Policy::Shared => Some("is shared memory, which a child shares instead of copying"),
            Policy::Whole => Some(
                "maps a deleted file, whose pages a child shares (the task may still write the \
                 file)",
            ),
            _ => None,
        }
    }

    /// Whether a twin cannot hold its pages ([`VmaRec::not_copied_by_fork`]): a lazy capture by
    /// a twin copies them while the task is stopped instead.
    pub fn held_by_copy(&self) -> bool {
        self.not_copied_by_fork().is_some()
    }

    /// Its kind.
    pub fn kind(&self) -> VmaKind {
        self.kind
    }

    /// Which of its pages are stored.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Its address range.
    pub fn range(&self) -> AddrRange {
        AddrRange {
            start: self.vma.start.get(),
            end: self.vma.end.get(),
        }
    }

    /// Private writable anonymous memory (anonymous, heap, stack) that is stored page by page:
    /// what dirty tracking covers.
    pub fn trackable(&self) -> bool {
        self.policy == Policy::Present
            && self.vma.prot.get() & raw::PROT_WRITE != 0
            && self.kind.anon()
    }

    /// Whether any of its pages are stored (not the vDSO and the like, not a shared file
    /// mapping).
    pub fn stored(&self) -> bool {
        self.policy != Policy::Skip
    }
}

/// Whether the VMA of `m` would be [`VmaRec::held_by_copy`] (shared memory, a private mapping
/// of a deleted file or memfd), without making its record.
pub(crate) fn held_by_copy_map(m: &MapsEntry) -> bool {
    match VmaKind::of(m) {
        VmaKind::SharedAnon => true,
        VmaKind::File => !m.shared && (is_deleted(m) || is_memfd(m)),
        _ => false,
    }
}

/// Whether `m` maps a memfd (privately: a shared one is [`VmaKind::SharedAnon`]).
fn is_memfd(m: &MapsEntry) -> bool {
    m.dev_major == 0 && m.path.starts_with("/memfd:") && m.path.ends_with(" (deleted)")
}

/// The bytes of the task's vDSO at `start..end`, through `/proc/PID/mem` (as a twin's memory is
/// read); `None` if they cannot be read or are longer than a VdsoData holds.
fn read_vdso(pid: i32, start: u64, end: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let len = end.checked_sub(start)?;
    if len > u64::from(cr_format::limits::MAX_VDSO_LEN) {
        return None;
    }
    let mut b = vec![0u8; usize::try_from(len).ok()?];
    let mem = std::fs::File::open(procfs::path(pid, "mem")).ok()?;
    mem.read_exact_at(&mut b, start).ok()?;
    Some(b)
}

/// The VMAs of `ins` as a capture would record them (without attributes).
pub fn vma_recs(ins: &Inspection) -> Vec<VmaRec> {
    ins.maps.iter().map(|m| VmaRec::of(ins.pid, m)).collect()
}

/// How long the attributes read at the inspection stand for the frozen task's (when its
/// mappings are still the same): longer, and smaps is read again while it is frozen.
const ATTRS_FRESH: Duration = Duration::from_secs(10);

/// The mappings of the frozen task `pid` with their attributes (`raw::VMA_ATTR_*`).
///
/// smaps, the only place that shows them, costs about 7 times what maps does (65,000 mappings:
/// 300 ms against 45 ms on a busy machine), so the task is not stopped for it when it can be
/// avoided: while frozen only maps is read, and the attributes are those smaps showed before
/// the freeze ([`Inspection::load_smaps`]) if that was less than [`ATTRS_FRESH`] ago, every
/// mapping is still there with the same range, permissions, offset and inode, and the locked
/// size (`VmLck`) is the same. Otherwise smaps is read while frozen. What that misses: an
/// madvise of a whole mapping (no split) in the milliseconds between the read and the freeze.
/// (A lazy capture by a twin takes them from the twin instead, exactly: `lazy::cow_fast`.)
pub(crate) fn read_maps_frozen(ins: &Inspection) -> Result<(Vec<MapsEntry>, Vec<u32>)> {
    let pid = ins.pid;
    if let Some(pre) = ins.smaps().filter(|s| s.at.elapsed() < ATTRS_FRESH) {
        let maps = procfs::parse_maps(&read_text(pid, "maps")?)?;
        if let Some(attrs) = same_attrs(pid, pre, &maps)? {
            return Ok((maps, attrs));
        }
    }
    let s = read_smaps(pid)?;
    Ok((s.maps, s.attrs))
}

/// The attributes of `pre` for `maps` if they still hold (see [`read_maps_frozen`]).
fn same_attrs(pid: i32, pre: &Smaps, maps: &[MapsEntry]) -> Result<Option<Vec<u32>>> {
    if maps.len() != pre.maps.len() || pre.attrs.len() != pre.maps.len() {
        return Ok(None);
    }
    let same = |a: &MapsEntry, b: &MapsEntry| {
        (
            a.start, a.end, a.read, a.write, a.exec, a.shared, a.offset, a.inode,
        ) == (
            b.start, b.end, b.read, b.write, b.exec, b.shared, b.offset, b.inode,
        )
    };
    if !maps.iter().zip(&pre.maps).all(|(a, b)| same(a, b)) {
        return Ok(None);
    }
    let locked = raw::VMA_ATTR_LOCKED | raw::VMA_ATTR_LOCKONFAULT;
    let locked_kb: u64 = maps
        .iter()
        .zip(&pre.attrs)
        .filter(|(_, &a)| a & locked != 0)
        .map(|(m, _)| (m.end - m.start) / 1024)
        .sum();
    let status = read_text(pid, "status")?;
    let vmlck = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Ok((vmlck == locked_kb).then(|| pre.attrs.clone()))
}

/// The VMAs of `maps` (of `pid`) with `attrs` (one per mapping, from [`read_maps_frozen`]).
pub(crate) fn vma_recs_with(pid: i32, maps: &[MapsEntry], attrs: &[u32]) -> Vec<VmaRec> {
    maps.iter()
        .zip(attrs)
        .map(|(m, &a)| {
            let mut v = VmaRec::of(pid, m);
            // The vDSO and vvar carry kernel-set flags (`dd`) that restore does not set.
            if !v.kind.special() {
                v.attrs = a;
            }
            v
        })
        .collect()
}

/// The fidelity report's lines for the kinds of memory among `vmas`: shared anonymous memory,
/// memfds mapped shared (restored as one object with the memfd among `files` when the task
/// has it open, else partly), deleted files, madvise flags and locks (restored), seals and
/// shadow stacks (lost).
pub(crate) fn fidelity(vmas: &[VmaRec], files: &[FileEntry]) -> Vec<Fidelity> {
    let mut out = Vec::new();
    for v in vmas {
        let (a, b) = (v.vma.start.get(), v.vma.end.get());
        let item = format!("memory {a:x}-{b:x}");
        let line = |kind: String, action: Action, note: &str| Fidelity {
            item: item.clone(),
            kind,
            action,
            note: note.to_string(),
        };
        match v.policy {
            Policy::Shared if v.memfd.is_some() => out.push(memfd_line(v, files, line)),
            Policy::Shared => out.push(line(
                format!("shared anonymous memory (inode {})", v.vma.inode.get()),
                Action::Restore,
                "",
            )),
            Policy::Whole => {
                let kind = format!("private mapping of {}", String::from_utf8_lossy(&v.path));
                let ino = v.vma.inode.get();
                let memfd_open = v.vma.dev_major.get() == 0
                    && files
                        .iter()
                        .any(|f| f.raw.ftype.get() == raw::FILE_MEMFD && f.raw.inode.get() == ino);
                out.push(if memfd_open {
                    line(
                        kind,
                        Action::Partial,
                        "the task also has this memfd open: restored, the mapping has its own \
                         copy of the contents, and writes through the descriptor no longer \
                         show in its pages the task has not written",
                    )
                } else {
                    line(kind, Action::Restore, "")
                });
            }
            _ => {}
        }
        let known = v.attrs & raw::VMA_ATTR_KNOWN;
        if known != 0 {
            out.push(line(
                format!("attributes {}", attr_names(known)),
                Action::Restore,
                "",
            ));
        }
        if v.attrs & ATTR_SEALED != 0 {
            out.push(line(
                "sealed (mseal)".into(),
                Action::Lost,
                "restore does not seal mappings: the restored one can be changed or unmapped",
            ));
        }
        if v.attrs & ATTR_SHADOW_STACK != 0 {
            out.push(line(
                "shadow stack".into(),
                Action::Lost,
                "restore makes ordinary memory of it; the task's shadow stack is not enabled",
            ));
        }
    }
    out
}

/// The fidelity line of a memfd mapped shared: restored as one object with its descriptor when
/// the task has the memfd open with its whole contents captured, else as shared anonymous
/// memory.
fn memfd_line(
    v: &VmaRec,
    files: &[FileEntry],
    line: impl Fn(String, Action, &str) -> Fidelity,
) -> Fidelity {
    let ino = v.vma.inode.get();
    let name = v.memfd.as_deref().unwrap_or_default();
    let kind = format!("shared mapping of memfd {name} (inode {ino})");
    let fd = files.iter().find(|f| {
        f.raw.ftype.get() == raw::FILE_MEMFD
            && f.raw.role.get() == raw::ROLE_FD
            && f.raw.inode.get() == ino
            && f.raw.dup_of.get() == raw::DUP_NONE
            && (f.raw.flags.get() & raw::FILE_HAS_DATA != 0 || f.raw.size.get() == 0)
    });
    match fd {
        Some(f) => line(
            format!("{kind}, the memfd of fd {}", f.raw.fd.get()),
            Action::Restore,
            "",
        ),
        None => line(
            kind,
            Action::Partial,
            "the task has no descriptor of this memfd with its contents captured: the mapping \
             comes back as shared anonymous memory with its contents, without the memfd's name \
             and seals (images keep those only for an open descriptor)",
        ),
    }
}

/// `VMA_ATTR_*` bits by name.
fn attr_names(attrs: u32) -> String {
    const NAMES: [(u32, &str); 8] = [
        (raw::VMA_ATTR_DONTFORK, "dontfork"),
        (raw::VMA_ATTR_DONTDUMP, "dontdump"),
        (raw::VMA_ATTR_WIPEONFORK, "wipeonfork"),
        (raw::VMA_ATTR_HUGEPAGE, "hugepage"),
        (raw::VMA_ATTR_NOHUGEPAGE, "nohugepage"),
        (raw::VMA_ATTR_MERGEABLE, "mergeable"),
        (raw::VMA_ATTR_LOCKED, "locked"),
        (raw::VMA_ATTR_LOCKONFAULT, "lock-on-fault"),
    ];
    let n: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| attrs & b != 0)
        .map(|p| p.1)
        .collect();
    n.join(",")
}

/// [`crate::capture::memory::for_each_span`] for a VMA whose pages are those of its object
/// rather than of its page tables ([`Policy::Shared`], [`Policy::Whole`]).
pub(crate) fn for_each_object_span(
    pid: i32,
    v: &VmaRec,
    page_size: u64,
    max_pages: u64,
    f: impl FnMut(PageSpan) -> Result<()>,
) -> Result<()> {
    if v.policy == Policy::Whole {
        for_each_deleted_span(v, page_size, max_pages, f)
    } else {
        for_each_shared_span(pid, v, page_size, max_pages, f)
    }
}

/// Spans of `start..end` of at most `max_pages` pages each.
fn spans_in(
    mut a: u64,
    b: u64,
    page_size: u64,
    max_pages: u64,
    f: &mut impl FnMut(PageSpan) -> Result<()>,
) -> Result<()> {
    while a < b {
        let pages = ((b - a) / page_size).clamp(1, max_pages.max(1));
        f(PageSpan::new(a, pages))?;
        a = a.saturating_add(pages.saturating_mul(page_size));
    }
    Ok(())
}

/// The pages of a private mapping of a deleted file that lie within the file (past its end a
/// page cannot be read: the task would get `SIGBUS` there, and so will the restored one).
fn for_each_deleted_span(
    v: &VmaRec,
    page_size: u64,
    max_pages: u64,
    mut f: impl FnMut(PageSpan) -> Result<()>,
) -> Result<()> {
    let (start, end) = (v.vma.start.get(), v.vma.end.get());
    let in_file = v.vma.file_size.get().saturating_sub(v.vma.offset.get());
    let end = start
        .saturating_add(in_file.div_ceil(page_size) * page_size)
        .min(end);
    spans_in(start, end, page_size, max_pages, &mut f)
}

/// [`crate::capture::memory::for_each_span`] for shared anonymous memory: the pages of `v`
/// that hold data in the shared object, found with `SEEK_DATA`/`SEEK_HOLE` on its
/// `/proc/PID/map_files` link (a page written by another process that has exited, or paged
/// out, has no page table entry in the task). Without access to map_files (it needs
/// `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`), every page is stored: reading the holes
/// gives the object pages of zeros, stored as zero runs.
fn for_each_shared_span(
    pid: i32,
    v: &VmaRec,
    page_size: u64,
    max_pages: u64,
    mut f: impl FnMut(PageSpan) -> Result<()>,
) -> Result<()> {
    let (start, end) = (v.vma.start.get(), v.vma.end.get());
    let off0 = v.vma.offset.get();
    let mut emit = |a: u64, b: u64| spans_in(a, b, page_size, max_pages, &mut f);
    let mf = procfs::path(pid, &format!("map_files/{start:x}-{end:x}"));
    let Ok(file) = std::fs::File::open(&mf) else {
        return emit(start, end);
    };
    let len = end - start;
    let mut o = off0;
    while o < off0 + len {
        let Some(d) = sys::seek_data(&file, o).map_err(|e| seek_err(&mf, e))? else {
            break;
        };
        if d >= off0 + len {
            break;
        }
        let h = sys::seek_hole(&file, d).map_err(|e| seek_err(&mf, e))?;
        let h = h.unwrap_or(off0 + len).min(off0 + len);
        // Whole pages: shmem holes and data are page-granular.
        let a = start + (d - off0) / page_size * page_size;
        let b = start + (h - off0).div_ceil(page_size) * page_size;
        emit(a, b.min(end))?;
        o = h.max(d + 1);
    }
    Ok(())
}

fn seek_err(path: &std::path::Path, e: std::io::Error) -> crate::error::Error {
    crate::error::Error::io(
        format!("lseek SEEK_DATA/SEEK_HOLE on {}", path.display()),
        e,
    )
}

/// Page spans of one tracked VMA, from one scan ([`crate::capture::tracking::scan`]), sorted.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Present or swapped pages written since the last scan.
    pub written: Vec<PageSpan>,
    /// Present pages not written that map the zero page.
    pub zero: Vec<PageSpan>,
    /// Present or swapped pages not written.
    pub unchanged: Vec<PageSpan>,
}

/// A dirty tracker, called while the task is frozen.
pub trait Tracker {
    /// Before the copy: for each VMA, the scan of a tracked one (then only its written pages
    /// are copied), or `None` (captured in full).
    fn scan(&mut self, pid: i32, vmas: &[VmaRec]) -> Result<Vec<Option<Scan>>>;
    /// After the scan, before the copy, still frozen: (re)arm tracking for what comes next.
    fn arm(&mut self, pid: i32, vmas: &[VmaRec]) -> Result<()>;
    /// Whether [`Tracker::scan`] will give scans (then far less than everything is copied).
    fn usable(&self) -> bool {
        false
    }
    /// Before a freeze that will not call [`Tracker::arm`]: whether the tracking armed while
    /// the task ran stands for that arming (then it counts as armed). Pages written since then
    /// show as written to the next scan and mappings made since are not registered, so the next
    /// capture stores them: more than needed, never less.
    fn armed_while_running(&mut self) -> bool {
        false
    }
    /// Whether the last [`Tracker::arm`] changed which ranges are registered while the task was
    /// frozen: the kernel merges a VMA it registers with a registered neighbour (which heals a
    /// VMA split by a registration while the task ran), so the VMAs read before the arming are
    /// to be read again.
    fn remapped(&self) -> bool {
        false
    }
    /// Before the freeze, to size the copy's buffer: the bytes it would copy now (the written
    /// pages of tracked VMAs, the present pages of the others), or `None` if unknown.
    fn estimate(&mut self, _pid: i32, _vmas: &[VmaRec]) -> Option<u64> {
        None
    }
}
