//! Write-protect dirty tracking: userfaultfd with `UFFD_FEATURE_WP_ASYNC` registered in write-protect mode on the task's private anonymous ranges, and the
//! `PAGEMAP_SCAN` ioctl with `PAGE_IS_WRITTEN` and `PM_SCAN_WP_MATCHING` to collect the pages
//! written since the last scan and write-protect them again, atomically.
//!
//! The userfaultfd must belong to the task's mm, so it is created inside the task: while the
//! task is frozen, a `userfaultfd()` system call is injected ([`crate::sys::inject`]: the task's
//! registers are restored afterwards, so an interrupted system call of the task still
//! restarts), and the new descriptor is fetched with `pidfd_getfd`.
//!
//! **How tracking survives between checkpoints**: the task keeps its copy of the userfaultfd
//! open (close-on-exec): the registration lives as long as that descriptor, across separate
//! `cr-dump` runs. A small state file beside the images, `DIR/.NAME.track`, records the pid, the
//! task's start time (against pid reuse), the descriptor number and the CRID and digest of the
//! image at whose capture the last scan (or the arming) happened. An incremental checkpoint uses
//! the tracker only when its parent is exactly that image and the descriptor is still the
//! task's userfaultfd; otherwise it falls back to content comparison. The task sees one more
//! open descriptor; if it closes it, tracking ends and the next incremental checkpoint compares
//! contents.
//!
//! Which pages of a tracked VMA (registered, with the same bounds and backing as in the parent,
//! per [`crate::records::same_mapping`]) go where, from one scan while frozen:
//! - present or swapped and written since the last scan: copied (data, or zero if all zero);
//! - present, not written, the shared zero page: a zero run;
//! - present or swapped, not written: "in the parent", not copied;
//! - neither present nor swapped: no run.
//!
//! `WP_UNPOPULATED` is not used: a page faulted in after the arming (even by a read) carries no
//! protection bit, so it is reported written and copied; a page dropped with `MADV_DONTNEED`
//! is not present (the kernel drops anonymous pages with their bit). Only writable VMAs are
//! registered (a `PROT_NONE` reservation is left alone), and registering costs no page tables
//! for the holes of a sparse mapping. A registered VMA does not merge with its neighbours.
//!
//! VMAs that are not tracked (new, moved, resized, or not anonymous) are captured in full and
//! compared with the parent's content.

use crate::error::{Error, Result};
use crate::procfs;
use crate::span::{AddrRange, PageSpan};
use crate::sys::inject::{Injector, Signals};
use crate::sys::{self, abi::nr, ScanQuery, Tracee};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// `UFFD_USER_MODE_ONLY`: faults from user mode only (no privilege needed).
const UFFD_USER_MODE_ONLY: u64 = 1;

fn io_err(pid: i32, what: &str, e: std::io::Error) -> Error {
    Error::io(format!("{what} (dirty tracking of pid {pid})"), e)
}

/// A userfaultfd of the task, as seen from here.
pub struct Uffd {
    /// Our duplicate.
    pub fd: OwnedFd,
    /// Its number in the task.
    pub target_fd: i32,
}

/// Creates a userfaultfd inside the frozen task (kept open there, close-on-exec), fetches it and
/// enables asynchronous write protection.
pub fn create(pid: i32) -> Result<Uffd> {
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY;
    let inj = Injector::new(Tracee::new(pid), Signals::Resend)?;
    let r = inj.call(nr::USERFAULTFD, [flags, 0, 0, 0, 0, 0])?;
    let target_fd = i32::try_from(r).map_err(|_| {
        Error::Other(format!(
            "userfaultfd() in pid {pid} returned {r}, not a descriptor"
        ))
    })?;
    if target_fd < 0 {
        return Err(io_err(
            pid,
            "userfaultfd() in the task",
            std::io::Error::from_raw_os_error(-target_fd),
        ));
    }
    let u = fetch(pid, target_fd)?;
    // Without WP_UNPOPULATED: protecting a range then allocates no page tables for its holes
    // (a large sparse reservation costs nothing), and a page first faulted in after the arming
    // has no protection bit, so the scan reports it as written: copied, as it must be.
    let want = sys::UFFD_FEATURE_WP_ASYNC;
    let got = sys::uffd_api(&u.fd, want).map_err(|e| io_err(pid, "UFFDIO_API", e))?;
    if got & want != want {
        return Err(Error::Other(format!(
            "userfaultfd of pid {pid}: the kernel lacks UFFD_FEATURE_WP_ASYNC"
        )));
    }
    Ok(u)
}

/// Fetches descriptor `target_fd` of the task, which must be a userfaultfd.
pub fn fetch(pid: i32, target_fd: i32) -> Result<Uffd> {
    let link = std::fs::read_link(procfs::path(pid, &format!("fd/{target_fd}")))
        .map_err(|e| io_err(pid, "reading its fd link", e))?;
    if link.as_os_str() != "anon_inode:[userfaultfd]" {
        return Err(Error::Other(format!(
            "descriptor {target_fd} of pid {pid} is {}, not a userfaultfd",
            link.display()
        )));
    }
    let pidfd = sys::pidfd_open(pid).map_err(|e| io_err(pid, "pidfd_open", e))?;
    let fd = sys::pidfd_getfd(&pidfd, target_fd).map_err(|e| io_err(pid, "pidfd_getfd", e))?;
    Ok(Uffd { fd, target_fd })
}

/// Registers `[start, end)` for write protection and protects it.
pub fn arm(pid: i32, u: &Uffd, start: u64, end: u64) -> Result<()> {
    sys::uffd_register_wp(&u.fd, start, end - start)
        .map_err(|e| io_err(pid, &format!("UFFDIO_REGISTER {start:#x}-{end:#x}"), e))?;
    sys::uffd_writeprotect(&u.fd, start, end - start)
        .map_err(|e| io_err(pid, &format!("UFFDIO_WRITEPROTECT {start:#x}-{end:#x}"), e))
}

/// All regions of `[start, end)` matching a `PAGEMAP_SCAN` query, merged by class: `class`
/// maps a region's categories to a list index (or `None` to drop it).
fn scan_all(
    pid: i32,
    pagemap: &File,
    range: AddrRange,
    ps: u64,
    q: &ScanQuery,
    class: impl Fn(u64) -> Option<usize>,
    lists: &mut [&mut Vec<PageSpan>],
) -> Result<()> {
    let mut out: Vec<sys::PageRegion> = Vec::with_capacity(4096);
    let end = range.end;
    let mut at = range.start;
    let mut covered = range.start;
    while at < end {
        let walk = AddrRange { start: at, end };
        let walk_end = sys::pagemap_scan(pagemap, walk, q, &mut out)
            .map_err(|e| io_err(pid, &format!("PAGEMAP_SCAN {at:#x}-{end:#x}"), e))?;
        // Regions come in address order. When the buffer fills up, the kernel here may report
        // a walk end below the end of the last region it gave (seen on 6.18): resume after
        // both, and never take a page twice (the second time it would look unwritten, having
        // just been protected again).
        for reg in &out {
            let (b, cat) = (reg.end, reg.categories);
            let a = reg.start.max(covered);
            if b <= a {
                continue;
            }
            covered = b;
            let Some(v) = class(cat).and_then(|i| lists.get_mut(i)) else {
                continue;
            };
            let r = PageSpan::new(a, (b - a) / ps);
            match v.last_mut() {
                Some(l) if l.end(ps) == Some(r.addr) => l.pages += r.pages,
                _ => v.push(r),
            }
        }
        let next = walk_end.max(covered);
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(())
}

/// Scans `[start, end)` (a registered range): collects the pages written since the last scan
/// and write-protects them again (atomically, one pass that touches only them); with
/// `present`, a second pass (no protection change) sorts the other present or swapped pages
/// into zero-page and unchanged ones. The task should be frozen for the second pass to agree
/// with the first.
pub fn scan(
    pid: i32,
    pagemap: &File,
    start: u64,
    end: u64,
    ps: u64,
    present: bool,
) -> Result<Scan> {
    let range = AddrRange::new(start, end)
        .ok_or_else(|| Error::Other(format!("scan of pid {pid}: bad range {start:#x}-{end:#x}")))?;
    let mut s = Scan::default();
    scan_all(
        pid,
        pagemap,
        range,
        ps,
        &ScanQuery {
            flags: sys::PM_SCAN_WP_MATCHING | sys::PM_SCAN_CHECK_WPASYNC,
            category_mask: sys::PAGE_IS_WRITTEN,
            return_mask: sys::PAGE_IS_WRITTEN,
            ..ScanQuery::default()
        },
        |_| Some(0),
        &mut [&mut s.written],
    )?;
    if !present {
        return Ok(s);
    }
    let mut zero = Vec::new();
    let mut other = Vec::new();
    scan_all(
        pid,
        pagemap,
        range,
        ps,
        &ScanQuery {
            anyof_mask: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED,
            return_mask: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED | sys::PAGE_IS_PFNZERO,
            ..ScanQuery::default()
        },
        |cat| Some(usize::from(cat & sys::PAGE_IS_PFNZERO == 0)),
        &mut [&mut zero, &mut other],
    )?;
    s.zero = subtract(&zero, &s.written, ps);
    s.unchanged = subtract(&other, &s.written, ps);
    Ok(s)
}

/// The pages of `a` not in `b` (both sorted; spans the kernel gave, so their ends do not
/// overflow).
fn subtract(a: &[PageSpan], b: &[PageSpan], ps: u64) -> Vec<PageSpan> {
    let end = |x: &PageSpan| x.addr + x.pages * ps;
    let mut out = Vec::new();
    let mut j = 0;
    for x in a {
        let (s0, e0) = (x.addr, end(x));
        let mut s = s0;
        while j < b.len() && end(&b[j]) <= s {
            j += 1;
        }
        let mut k = j;
        while s < e0 {
            match b.get(k) {
                Some(y) if y.addr < e0 => {
                    let (bs, be) = (y.addr, end(y));
                    if bs > s {
                        out.push(PageSpan::new(s, (bs - s) / ps));
                    }
                    s = s.max(be);
                    k += 1;
                }
                _ => {
                    out.push(PageSpan::new(s, (e0 - s) / ps));
                    s = e0;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::subtract;
    use crate::span::PageSpan;

    fn spans(v: &[(u64, u64)]) -> Vec<PageSpan> {
        v.iter().map(|&(a, n)| PageSpan::new(a, n)).collect()
    }

    #[test]
    fn subtract_ranges() {
        let p = 0x1000;
        let a = spans(&[(0x10000, 10), (0x30000, 2)]);
        let b = spans(&[
            (0x9000, 2),
            (0x12000, 1),
            (0x14000, 3),
            (0x19000, 5),
            (0x31000, 1),
        ]);
        assert_eq!(
            subtract(&a, &b, p),
            spans(&[(0x10000, 2), (0x13000, 1), (0x17000, 2), (0x30000, 1)])
        );
        assert_eq!(subtract(&a, &[], p), a.to_vec());
        assert_eq!(subtract(&[], &b, p), vec![]);
    }
}

/// The tracking state of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The task.
    pub pid: i32,
    /// Its start time (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
    /// The userfaultfd's descriptor number in the task.
    pub fd: i32,
    /// CRID of the image whose capture the last scan went with.
    pub crid: u64,
    /// Its tail digest.
    pub digest: u64,
}

/// Where the tracking state of a task lives: beside the node's CRID file (CRIDs are unique on
/// the node, so one state per task serves every directory of images),
/// `cr-track.PID.STARTTIME`.
pub fn state_path(pid: i32, start_time: u64) -> Result<PathBuf> {
    let crid = crate::crid::location()?;
    let dir = crid.parent().unwrap_or(Path::new("/tmp"));
    Ok(dir.join(format!("cr-track.{pid}.{start_time}")))
}

/// The start time of `pid`.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = String::from_utf8(procfs::read(pid, "stat").ok()?).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl State {
    /// Reads the state file, if any, well-formed and ours (a regular file owned by the user,
    /// not a symlink: a planted state would name a baseline that is not one).
    pub fn load(path: &Path) -> Option<State> {
        use std::os::unix::fs::MetadataExt;
        let mut f = sys::open_regular(path, sys::Access::Read).ok()?;
        if f.metadata().ok()?.uid() != sys::geteuid() {
            return None;
        }
        let mut t = String::new();
        std::io::Read::read_to_string(&mut f, &mut t).ok()?;
        let mut it = t.split_whitespace();
        let mut next = || it.next()?.parse::<u64>().ok();
        Some(State {
            pid: i32::try_from(next()?).ok()?,
            start_time: next()?,
            fd: i32::try_from(next()?).ok()?,
            crid: next()?,
            digest: next()?,
        })
    }

    /// Writes the state file (mode 0600, replaced atomically: unnamed until complete, so a
    /// SIGKILL leaves no temporary file but in the instant between its link and its rename),
    /// then removes what dead tasks left beside it ([`sweep`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = format!(
            "{} {} {} {} {}\n",
            self.pid, self.start_time, self.fd, self.crid, self.digest
        );
        crate::output::replace_file(path, text.as_bytes())?;
        if let Some(dir) = path.parent() {
            sweep(dir);
        }
        Ok(())
    }
}

/// Removes from `dir` the state files of tasks that no longer exist (`cr-track.PID.START`
/// whose pid is gone or now has another start time) and the temporary files of writers that
/// died (`.cr-track.*.tmp.PID.N`). Best effort: what cannot be removed stays.
pub fn sweep(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = if let Some(rest) = name.strip_prefix("cr-track.") {
            let mut it = rest.split('.');
            match (
                it.next().and_then(|p| p.parse::<i32>().ok()),
                it.next().and_then(|s| s.parse::<u64>().ok()),
                it.next(),
            ) {
                (Some(pid), Some(st), None) => pid > 0 && start_time(pid) != Some(st),
                _ => false,
            }
        } else {
            crate::output::is_stale_temp(name, ".cr-track.")
        };
        if stale {
            // unlink removes the name, whatever it is; it follows nothing.
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Which of `ranges` (each exactly a VMA) are registered for asynchronous write protection:
/// a `PAGEMAP_SCAN` for `PAGE_IS_WPALLOWED` limited to one page per range (cheap, unlike
/// reading `/proc/PID/smaps`, which walks every page table: 15 ms for 1 GiB here).
pub fn registered(pid: i32, pagemap: &File, ranges: &[AddrRange]) -> Result<Vec<AddrRange>> {
    let mut out: Vec<sys::PageRegion> = Vec::with_capacity(1);
    let mut reg = Vec::new();
    let q = ScanQuery {
        category_mask: sys::PAGE_IS_WPALLOWED,
        return_mask: sys::PAGE_IS_WPALLOWED,
        max_pages: 1,
        ..ScanQuery::default()
    };
    for &range in ranges {
        let (a, b) = (range.start, range.end);
        sys::pagemap_scan(pagemap, range, &q, &mut out)
            .map_err(|e| io_err(pid, &format!("PAGEMAP_SCAN {a:#x}-{b:#x}"), e))?;
        if out.first().is_some_and(|r| r.start == a) {
            reg.push(range);
        }
    }
    Ok(reg)
}

/// Whether `r` is among `reg` (in address order, as [`registered`] gives them): a binary
/// search, so that checking every VMA of a task with many stays linear.
fn is_registered(reg: &[AddrRange], r: AddrRange) -> bool {
    reg.binary_search_by_key(&r.start, |x| x.start)
        .is_ok_and(|i| reg.get(i) == Some(&r))
}

fn trackable_ranges(vmas: &[VmaRec]) -> Vec<AddrRange> {
    vmas.iter()
        .filter(|v| v.trackable())
        .map(|v| AddrRange {
            start: v.vma.start.get(),
            end: v.vma.end.get(),
        })
        .collect()
}

fn open_pagemap(pid: i32) -> Result<File> {
    File::open(procfs::path(pid, "pagemap")).map_err(|e| procfs::proc_err(pid, "pagemap", e))
}

/// A tracking session for one checkpoint: whether the parent can be trusted to the tracker's
/// scan, and whether to (re)arm tracking for the next checkpoint.
pub struct Session {
    pid: i32,
    start_time: u64,
    state_path: PathBuf,
    /// The parent's VMAs when the tracker's baseline is the parent's capture.
    parent_vmas: Option<Vec<(raw::Vma, Vec<u8>)>>,
    uffd: Option<Uffd>,
    arm_wanted: bool,
    active: bool,
    scanned: Vec<bool>,
    /// VMAs whose pages came from the scan.
    pub tracked_vmas: u64,
    /// Whether tracking is armed after this capture (then [`Session::commit`] records it).
    pub armed: bool,
    /// Whether [`Session::prearm`] protected the task's memory while it ran.
    prearmed: bool,
    /// Whether the last [`Tracker::arm`] registered ranges ([`Tracker::remapped`]).
    remapped: bool,
    /// How long [`Session::prearm`] stopped the task (to create the userfaultfd).
    pub prearm_downtime: std::time::Duration,
    /// Why tracking was not used or not armed, if it was wanted.
    pub notes: Vec<String>,
}

use super::vma::{Scan, Tracker, VmaRec};
use cr_format::raw;

impl Session {
    /// The task's pagemap when this session can scan (it has the parent's VMAs and a
    /// userfaultfd).
    fn tracking_pagemap(&self, pid: i32) -> Result<Option<File>> {
        if self.parent_vmas.is_none() || self.uffd.is_none() {
            return Ok(None);
        }
        open_pagemap(pid).map(Some)
    }

    /// For each of `vmas`, whether its written pages are known: trackable, registered with
    /// the userfaultfd, and the same mapping as in the parent.
    fn tracked(&self, pid: i32, pagemap: &File, vmas: &[VmaRec]) -> Result<Vec<bool>> {
        let pv = self.parent_vmas.as_deref().unwrap_or(&[]);
        let reg = registered(pid, pagemap, &trackable_ranges(vmas))?;
        // The parent's VMAs by start (an image lists them in address order; a map, should one
        // not, keeps this linear in their number all the same).
        let by_start: std::collections::HashMap<u64, &(raw::Vma, Vec<u8>)> =
            pv.iter().map(|e| (e.0.start.get(), e)).collect();
        Ok(vmas
            .iter()
            .map(|v| {
                let a = v.vma.start.get();
                v.trackable()
                    && is_registered(
                        &reg,
                        AddrRange {
                            start: a,
                            end: v.vma.end.get(),
                        },
                    )
                    && by_start.get(&a).is_some_and(|(r, p)| {
                        let then = cr_format::read::Vma { raw: r, path: p };
                        crate::records::same_mapping(&v.vma, &v.path, &then)
                    })
            })
            .collect())
    }

    /// Prepares a session for checkpointing `pid` over `parent` (if any). `want`: arm tracking
    /// after the capture even if no session is active.
    pub fn new(
        pid: i32,
        parent: Option<&super::incremental::Parent>,
        want: bool,
    ) -> Result<Session> {
        let start_time = start_time(pid).ok_or(Error::NoSuchProcess(pid))?;
        let state_path = state_path(pid, start_time)?;
        let state = State::load(&state_path).filter(|s| s.pid == pid && s.start_time == start_time);
        let mut s = Session {
            pid,
            start_time,
            state_path,
            parent_vmas: None,
            uffd: None,
            arm_wanted: want || state.is_some(),
            active: state.is_some(),
            scanned: Vec::new(),
            tracked_vmas: 0,
            armed: false,
            prearmed: false,
            remapped: false,
            prearm_downtime: std::time::Duration::ZERO,
            notes: Vec::new(),
        };
        if let Some(st) = &state {
            match fetch(pid, st.fd) {
                Ok(u) => s.uffd = Some(u),
                Err(e) => s.notes.push(format!("tracking state stale: {e}")),
            }
            match parent {
                Some(p) if p.crid == st.crid && p.digest == st.digest && s.uffd.is_some() => {
                    s.parent_vmas = Some(p.with_index(|_, images| {
                        images
                            .first()
                            .map(|top| top.vmas().map(|v| (*v.raw, v.path.to_vec())).collect())
                            .unwrap_or_default()
                    })?);
                }
                Some(p) => s.notes.push(format!(
                    "tracking is armed since CRID {}, not the parent CRID {}: content compare",
                    st.crid, p.crid
                )),
                None => {}
            }
        }
        if s.arm_wanted || s.parent_vmas.is_some() {
            // The scan and the re-arming consume what the tracker knows: the old baseline must
            // not outlive them, whatever happens next. The descriptor is kept (CRID 0: no
            // baseline), so that a failed checkpoint does not lose the task's userfaultfd.
            s.save_baseline(0, 0)?;
        }
        Ok(s)
    }

    /// Before the freeze of a capture that arms tracking without using it (a full one): stops
    /// the task briefly to create the userfaultfd if there is none and to register its
    /// trackable VMAs, read then, then write-protects them while the task runs. The arming in
    /// the freeze ([`Tracker::arm`]) then only protects again the pages written since, instead
    /// of write-protecting everything while the task is stopped. The registration is not done
    /// while the task runs: registering a range that is no longer exactly a VMA (the task
    /// remapped it since it was read) splits the VMA the task has there, for good once both
    /// parts are written (each gets its own anon_vma), and the task, its image and its
    /// restored copy would then have a VMA boundary the program never made. Write protection
    /// never changes a VMA. Failures become notes: the arming in the freeze does it all then.
    pub fn prearm(&mut self, pid: i32) -> Result<()> {
        if !self.arm_wanted || self.usable() {
            // A tracked incremental's scan needs the protection as the last capture left it.
            return Ok(());
        }
        let frozen = super::freeze::freeze_quiet(pid)?;
        let done = self.register_frozen(pid);
        self.prearm_downtime = frozen.release(super::options::After::Continue)?;
        let ranges = match done {
            Ok(r) => r,
            Err(e) => {
                self.notes
                    .push(format!("tracking not armed before the freeze: {e}"));
                return Ok(());
            }
        };
        let Some(u) = &self.uffd else { return Ok(()) };
        for r in ranges {
            // A VMA the task unmaps or changes meanwhile fails here, harmlessly (the arming in
            // the freeze handles the VMAs it finds then).
            let _done = sys::uffd_writeprotect(&u.fd, r.start, r.end - r.start).is_ok();
        }
        self.prearmed = true;
        Ok(())
    }

    /// For [`Session::prearm`], the task frozen: creates the userfaultfd if there is none and
    /// registers the trackable VMAs the task has now, each exactly. Returns those registered.
    fn register_frozen(&mut self, pid: i32) -> Result<Vec<AddrRange>> {
        if self.uffd.is_none() {
            self.uffd = Some(create(pid)?);
            self.save_baseline(0, 0)?;
        }
        let Some(u) = &self.uffd else {
            return Ok(Vec::new());
        };
        let maps = procfs::parse_maps(&super::check::read_text(pid, "maps")?)?;
        let vmas: Vec<(AddrRange, bool)> = maps
            .iter()
            .map(|m| {
                let r = AddrRange {
                    start: m.start,
                    end: m.end,
                };
                // A file mapping is never trackable: not built (it stats the file).
                let anon = super::vma::VmaKind::of(m).anon();
                (r, anon && VmaRec::of(pid, m).trackable())
            })
            .collect();
        let mut done = Vec::new();
        // One registration per run of trackable VMAs with nothing else between them (a range
        // may span holes): 65,000 one-page mappings are then a few calls, not 65,000. A run
        // that fails is registered VMA by VMA; a VMA that fails is left to the arming in the
        // freeze (which says why). Registering a range already registered changes nothing.
        for run in vmas.split(|(_, t)| !t) {
            let (Some((first, _)), Some((last, _))) = (run.first(), run.last()) else {
                continue;
            };
            let (a, b) = (first.start, last.end);
            if sys::uffd_register_wp(&u.fd, a, b - a).is_ok() {
                done.extend(run.iter().map(|(r, _)| *r));
                continue;
            }
            for (r, _) in run {
                if sys::uffd_register_wp(&u.fd, r.start, r.end - r.start).is_ok() {
                    done.push(*r);
                }
            }
        }
        Ok(done)
    }

    /// Whether a tracking session was active for the task (armed by an earlier checkpoint).
    pub fn armed_before(&self) -> bool {
        self.active
    }

    /// Marks which VMAs (by index in the list [`Tracker::arm`] gets) were just scanned, so
    /// that arming leaves them as the scan left them (pre-copy).
    pub fn set_scanned(&mut self, scanned: Vec<bool>) {
        self.scanned = scanned;
    }

    /// Makes the next [`Tracker::arm`] arm tracking even without `--track` (pre-copy).
    pub fn want_arm(&mut self) {
        self.arm_wanted = true;
    }

    /// Whether pages come from the tracker (the parent is the tracker's baseline).
    pub fn usable(&self) -> bool {
        self.parent_vmas.is_some()
    }

    /// Records that tracking is armed with image `crid` (tail digest `digest`) as its baseline.
    pub fn commit(&self, crid: u64, digest: u64) -> Result<()> {
        if !self.armed {
            return Ok(());
        }
        self.save_baseline(crid, digest)
    }

    /// Writes the state with this baseline (CRID 0: none), or removes it without a
    /// userfaultfd.
    fn save_baseline(&self, crid: u64, digest: u64) -> Result<()> {
        let Some(u) = &self.uffd else {
            let _ = std::fs::remove_file(&self.state_path);
            return Ok(());
        };
        State {
            pid: self.pid,
            start_time: self.start_time,
            fd: u.target_fd,
            crid,
            digest,
        }
        .save(&self.state_path)
    }
}

impl Tracker for Session {
    fn usable(&self) -> bool {
        Session::usable(self)
    }

    fn armed_while_running(&mut self) -> bool {
        // Only a full capture that arms (`prearm` did its work, nothing was scanned).
        if self.arm_wanted && self.prearmed && self.uffd.is_some() && !self.usable() {
            self.armed = true;
        }
        self.armed
    }

    fn scan(&mut self, pid: i32, vmas: &[VmaRec]) -> Result<Vec<Option<Scan>>> {
        self.scanned = vec![false; vmas.len()];
        let mut out = vec![None; vmas.len()];
        let Some(pagemap) = self.tracking_pagemap(pid)? else {
            return Ok(out);
        };
        let tracked = self.tracked(pid, &pagemap, vmas)?;
        let ps = sys::page_size() as u64;
        for (i, v) in vmas.iter().enumerate() {
            if !tracked.get(i).copied().unwrap_or(false) {
                continue;
            }
            let (a, b) = (v.vma.start.get(), v.vma.end.get());
            match scan(pid, &pagemap, a, b, ps, true) {
                Ok(sc) => {
                    out[i] = Some(sc);
                    self.scanned[i] = true;
                    self.tracked_vmas += 1;
                }
                Err(e) => self
                    .notes
                    .push(format!("scan of {a:#x}-{b:#x} failed: {e}")),
            }
        }
        Ok(out)
    }

    fn estimate(&mut self, pid: i32, vmas: &[VmaRec]) -> Option<u64> {
        let pagemap = self.tracking_pagemap(pid).ok()??;
        let tracked = self.tracked(pid, &pagemap, vmas).ok()?;
        let ps = sys::page_size() as u64;
        let mut bytes = 0u64;
        for (v, &t) in vmas.iter().zip(&tracked) {
            let (a, b) = (v.vma.start.get(), v.vma.end.get());
            bytes = bytes.saturating_add(if t {
                // Written since the parent, counted without touching the protection.
                let mut w = Vec::new();
                let q = ScanQuery {
                    category_mask: sys::PAGE_IS_WRITTEN,
                    return_mask: sys::PAGE_IS_WRITTEN,
                    ..ScanQuery::default()
                };
                scan_all(
                    pid,
                    &pagemap,
                    AddrRange::new(a, b)?,
                    ps,
                    &q,
                    |_| Some(0),
                    &mut [&mut w],
                )
                .ok()?;
                w.iter().map(|r| r.pages).sum::<u64>().saturating_mul(ps)
            } else {
                super::memory::vma_bytes(pid, &pagemap, v).ok()?
            });
        }
        Some(bytes)
    }

    fn remapped(&self) -> bool {
        self.remapped
    }

    fn arm(&mut self, pid: i32, vmas: &[VmaRec]) -> Result<()> {
        self.remapped = false;
        if !self.arm_wanted {
            return Ok(());
        }
        if self.uffd.is_none() {
            match create(pid) {
                Ok(u) => {
                    self.uffd = Some(u);
                    // Known from now on, even if this checkpoint fails.
                    self.save_baseline(0, 0)?;
                }
                Err(e) => {
                    self.notes.push(format!("tracking not armed: {e}"));
                    return Ok(());
                }
            }
        }
        let Some(u) = &self.uffd else { return Ok(()) };
        let pagemap = open_pagemap(pid)?;
        let reg = registered(pid, &pagemap, &trackable_ranges(vmas))?;
        let ps = sys::page_size() as u64;
        let mut ok = true;
        for (i, v) in vmas.iter().enumerate() {
            let (a, b) = (v.vma.start.get(), v.vma.end.get());
            if !v.trackable() || self.scanned.get(i).copied().unwrap_or(false) {
                continue;
            }
            let r = if is_registered(&reg, AddrRange { start: a, end: b }) && self.prearmed {
                // Protected while the task ran (`prearm`): only the pages written since are
                // protected again, which leaves every page protected as a full
                // UFFDIO_WRITEPROTECT would, at the cost of a walk.
                scan(pid, &pagemap, a, b, ps, false).map(drop)
            } else if is_registered(&reg, AddrRange { start: a, end: b }) {
                sys::uffd_writeprotect(&u.fd, a, b - a)
                    .map_err(|e| io_err(pid, &format!("UFFDIO_WRITEPROTECT {a:#x}-{b:#x}"), e))
            } else {
                self.remapped = true;
                arm(pid, u, a, b)
            };
            if let Err(e) = r {
                self.notes.push(format!("tracking not armed: {e}"));
                ok = false;
                break;
            }
        }
        self.armed = ok;
        Ok(())
    }
}
