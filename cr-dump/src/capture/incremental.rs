//! Incremental checkpoints by content comparison (`DIFF_CONTENT_COMPARE`).
//!
//! The task is captured as for a full image; every captured page is compared with what the
//! parent chain holds at the same address, and the pages found equal become `RUN_PARENT` runs.
//! With a copy-on-write twin the comparison is made as the image is streamed from the twin
//! ([`super::stream`], chunk by chunk); with a copy, over the copy
//! ([`super::delta::make_incremental`]). The same rules ([`equal_in_parent`]) and the same
//! planner ([`super::plan`]) decide both. This module holds the parent ([`Parent`]) and the rules. The parent chain is mapped, not read: only the metadata and the
//! parent pages compared are paged in.
//!
//! When a page may be "in the parent" (the rules that keep the CRIU "Missing in parent pagemap"
//! bug class out):
//! - the parent image has a VMA with exactly the same start, end, kind, file offset, inode,
//!   device and path as the VMA of the page now. A mapping that appeared, vanished, grew,
//!   shrank or moved is never "in the parent", even where its contents happen to match;
//! - the page is present now (captured) and its bytes equal the page the parent chain resolves
//!   to: the parent's stored data, or zero when the page is all zero and the parent says known
//!   zero or not present in an anonymous VMA. A parent page that is "not present" in a file
//!   mapping (the file's contents) is never matched.
//!
//! Pages not present now keep no run (they read as zero or as the file, whatever the parent
//! held). The VMA list is always complete. Since the comparison is made against exactly what
//! resolution through the parent gives, the image resolves to the memory captured, page for
//! page, whatever the parent is; the parent checks below are there so that a chain is built
//! from the image the operator meant.

use super::vma::VmaRec;
use crate::error::{Error, Result};
use crate::inspect::{ChainFiles, Parse};
use crate::records::{is_zero, same_mapping};
use cr_format::chain::{ChainIndex, Resolved};
use cr_format::raw;
use cr_format::read::{Image, Vma};
use std::path::{Path, PathBuf};

/// A parent image and its ancestors, mapped, checked as a chain.
pub struct Parent {
    files: ChainFiles,
    /// The parent's CRID.
    pub crid: u64,
    /// The parent's tail digest.
    pub digest: u64,
    /// The parent's path.
    pub path: PathBuf,
    /// Page size of the chain.
    pub page_size: u32,
    /// The pid recorded in the parent's Task record.
    pub pid: u32,
    /// Number of images of the chain (1 = the parent is a full image).
    pub depth: usize,
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent")
            .field("crid", &self.crid)
            .field("digest", &self.digest)
            .field("path", &self.path)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// The CRID a file name `NAME.img.CRID` gives.
pub fn crid_of_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let (_, c) = name.rsplit_once(".img.")?;
    if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()) || c.starts_with('0') {
        return None;
    }
    c.parse().ok()
}

/// The newest image `DIR/NAME.img.CRID` (highest CRID), if any.
pub fn latest(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let prefix = format!("{name}.img.");
    let mut best: Option<(u64, PathBuf)> = None;
    for e in rd {
        let e = e.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let fname = e.file_name();
        let Some(s) = fname.to_str() else { continue };
        let Some(rest) = s.strip_prefix(&prefix) else {
            continue;
        };
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.starts_with('0') {
            continue;
        }
        let Ok(c) = rest.parse::<u64>() else { continue };
        if best.as_ref().is_none_or(|(b, _)| c > *b) {
            best = Some((c, e.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

fn parent_err(path: &Path, expected: Option<u64>, why: impl std::fmt::Display) -> Error {
    match expected {
        Some(c) => Error::Other(format!(
            "parent image CRID {c} ({}) refused: {why}",
            path.display()
        )),
        None => Error::Other(format!("parent image {} refused: {why}", path.display())),
    }
}

impl Parent {
    /// Maps the parent image `path` (named `NAME.img.CRID`) and its ancestors found beside it,
    /// and checks them: the CRID in the name is the Header's, every image is valid, every link
    /// of the chain holds.
    pub fn open(path: &Path) -> Result<Parent> {
        let expected = crid_of_name(path);
        if !path.exists() {
            return Err(match expected {
                Some(c) => Error::Other(format!(
                    "parent image CRID {c} is missing: {} does not exist",
                    path.display()
                )),
                None => Error::Other(format!("parent image {} does not exist", path.display())),
            });
        }
        let files = ChainFiles::open(path).map_err(|e| parent_err(path, expected, e))?;
        let (crid, digest, page_size, pid, depth) = {
            let chain = files
                .parse(Parse::Metadata)
                .map_err(|e| parent_err(path, expected, e))?;
            let top = chain.top();
            if let Some(c) = expected {
                if top.crid() != c {
                    return Err(parent_err(
                        path,
                        expected,
                        format!(
                            "the file holds CRID {}, not the CRID {c} its name says",
                            top.crid()
                        ),
                    ));
                }
            }
            let pid = top
                .task()
                .map(|t| t.pid.get())
                .ok_or_else(|| parent_err(path, expected, "it has no Task record"))?;
            (
                top.crid(),
                top.digest(),
                top.page_size(),
                pid,
                chain.images().len(),
            )
        };
        Ok(Parent {
            files,
            crid,
            digest,
            path: path.to_path_buf(),
            page_size,
            pid,
            depth,
        })
    }

    /// Refuses this parent for a checkpoint with page size `page_size` under `crid`.
    pub(crate) fn check_for(&self, page_size: u32, crid: u64) -> Result<()> {
        if page_size != self.page_size {
            return Err(parent_err(
                &self.path,
                Some(self.crid),
                format!(
                    "its page size is {}, the task's {page_size}",
                    self.page_size
                ),
            ));
        }
        if self.crid >= crid {
            return Err(parent_err(
                &self.path,
                Some(self.crid),
                format!("its CRID is not below the new CRID {crid}"),
            ));
        }
        Ok(())
    }

    /// Names this parent in `h`, with `method`.
    pub(crate) fn name_in(&self, h: &mut raw::Header, method: u32) {
        h.parent_crid = self.crid.into();
        h.parent_digest = self.digest.into();
        h.diff_method = method.into();
    }

    /// The same parent opened again (its own mapping, for a snapshot that outlives the
    /// caller's), refused if the file is no longer the same image.
    pub(crate) fn reopen(&self) -> Result<Parent> {
        let p = Parent::open(&self.path)?;
        if (p.crid, p.digest) != (self.crid, self.digest) {
            return Err(parent_err(
                &self.path,
                Some(self.crid),
                "the file changed during the checkpoint",
            ));
        }
        Ok(p)
    }

    /// Runs `f` over the chain's index (newest = the parent).
    pub fn with_index<R>(&self, f: impl FnOnce(&ChainIndex<'_>, &[Image<'_>]) -> R) -> Result<R> {
        let chain = self.files.parse(Parse::Metadata)?;
        Ok(f(chain.index(), chain.images()))
    }
}

fn anon_kind(k: u16) -> bool {
    matches!(k, raw::VMA_ANON | raw::VMA_HEAP | raw::VMA_STACK)
}

/// Whether a page now (`bytes`, or `None` when known zero) equals what the parent chain
/// resolves at `addr`.
pub fn equal_in_parent(idx: &ChainIndex<'_>, addr: u64, now: Option<&[u8]>) -> bool {
    match idx.resolve(addr) {
        Ok(Resolved::Data { bytes, .. }) => match now {
            Some(b) => b == bytes,
            None => is_zero(bytes),
        },
        Ok(Resolved::Zero { .. }) => now.is_none_or(is_zero),
        Ok(Resolved::NotPresent { vma, .. }) => anon_kind(vma.kind()) && now.is_none_or(is_zero),
        Err(_) => false,
    }
}

/// For each of `vmas`, whether `top` (the parent image) has the same mapping: only then may its
/// pages be "in the parent".
pub(crate) fn vmas_in_parent<'v>(
    top: &Image<'_>,
    vmas: impl Iterator<Item = &'v VmaRec>,
) -> Vec<bool> {
    let pvmas: Vec<Vma<'_>> = top.vmas().collect();
    vmas.map(|v| {
        let start = v.vma.start.get();
        let i = pvmas.partition_point(|p| p.end() <= start);
        pvmas
            .get(i)
            .is_some_and(|p| same_mapping(&v.vma, &v.path, p))
    })
    .collect()
}
