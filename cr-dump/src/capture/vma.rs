//! A VMA as it goes into the image ([`VmaRec`]): its kind, which of its pages are stored, and
//! what a dirty tracker reports about it ([`Scan`], [`Tracker`]).
//!
//! What is stored: for anonymous memory (and `[heap]`, `[stack]`), every page that is present
//! or swapped; for private file mappings, only the pages that are anonymous per
//! `/proc/PID/pagemap` (written, so copied-on-write); nothing of shared (read-only) mappings,
//! whose contents are the file's, nor of the vDSO, vvar and vsyscall areas, which are recorded
//! as VMAs only.

use super::check::Inspection;
use crate::error::Result;
use crate::procfs::{self, MapsEntry};
use crate::span::{AddrRange, PageSpan};
use cr_format::raw;
use std::os::unix::fs::MetadataExt;
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
            p if p.starts_with('/') && m.inode != 0 => VmaKind::File,
            _ => VmaKind::Anon,
        }
    }

    /// Its `raw::VMA_*` value.
    pub fn raw(self) -> u16 {
        match self {
            VmaKind::Anon => raw::VMA_ANON,
            VmaKind::Heap => raw::VMA_HEAP,
            VmaKind::Stack => raw::VMA_STACK,
            VmaKind::File => raw::VMA_FILE,
            VmaKind::Vdso => raw::VMA_VDSO,
            VmaKind::Vvar => raw::VMA_VVAR,
            VmaKind::Vsyscall => raw::VMA_VSYSCALL,
        }
    }

    /// Anonymous memory of some kind (plain, heap, stack).
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
}

impl Policy {
    /// Whether a page with pagemap entry `e` is stored.
    pub fn keeps(self, e: u64) -> bool {
        match self {
            Policy::Skip => false,
            Policy::Present => e & (procfs::PM_PRESENT | procfs::PM_SWAPPED) != 0,
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
        let policy = if kind.special() || m.shared {
            Policy::Skip
        } else if kind == VmaKind::File {
            Policy::AnonOnly
        } else {
            Policy::Present
        };
        VmaRec {
            vma: v,
            path,
            kind,
            policy,
        }
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

    /// Whether any of its pages are stored (not the vDSO and the like, not a shared mapping).
    pub fn stored(&self) -> bool {
        self.policy != Policy::Skip
    }
}

/// The VMAs of `ins` as a capture would record them.
pub fn vma_recs(ins: &Inspection) -> Vec<VmaRec> {
    ins.maps.iter().map(|m| VmaRec::of(ins.pid, m)).collect()
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
    /// Before the freeze, to size the copy's buffer: the bytes it would copy now (the written
    /// pages of tracked VMAs, the present pages of the others), or `None` if unknown.
    fn estimate(&mut self, _pid: i32, _vmas: &[VmaRec]) -> Option<u64> {
        None
    }
}
