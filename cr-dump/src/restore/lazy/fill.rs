//! The background fill of a lazy restore: what is still to come ([`Todo`]), the address spaces
//! being filled ([`Mm`]), what the server and its helper share ([`Shared`]), the helper
//! ([`Helper`]), the helper's copy ([`fill_step`]) and what both fillers make of a
//! `UFFDIO_COPY`'s outcome ([`put`]). See [`super`].

use super::{GOOD, HELPER_BATCH};
use crate::error::{Error, Result};
use crate::inspect::chain::ChainFiles;
use crate::restore::other;
use crate::restore::pages::{self, Piece, Source, Src};
use crate::sys;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The pages still to come of one address space: one bit per page of the pieces, shared by
/// the server and its helper. A bit is cleared once its page is in (or the task dropped it),
/// never before: a fault on a page whose bit is clear is answered with a zero page (or a
/// wake), which must never land where data is still to come.
pub(super) struct Todo {
    pub(super) words: Vec<AtomicU64>,
    pub(super) left: AtomicU64,
}

impl Todo {
    /// `n` pages, all to come.
    pub(super) fn new(n: u64) -> Todo {
        let mut words: Vec<AtomicU64> = (0..n.div_ceil(64))
            .map(|_| AtomicU64::new(u64::MAX))
            .collect();
        if n % 64 != 0 {
            if let Some(last) = words.last_mut() {
                *last = AtomicU64::new((1u64 << (n % 64)) - 1);
            }
        }
        Todo {
            words,
            left: AtomicU64::new(n),
        }
    }

    /// A copy as it is now (the memory of a child forked during the fill: the helper is
    /// paused while the fork is read).
    pub(super) fn snapshot(&self) -> Todo {
        Todo {
            words: self
                .words
                .iter()
                .map(|w| AtomicU64::new(w.load(Ordering::Acquire)))
                .collect(),
            left: AtomicU64::new(self.left.load(Ordering::Acquire)),
        }
    }

    pub(super) fn get(&self, page: u64) -> bool {
        self.words
            .get((page / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (page % 64)) != 0)
    }

    /// Clears the bit of `page` (whoever clears it first counts it); whether it was set.
    pub(super) fn clear(&self, page: u64) -> bool {
        let Some(w) = self.words.get((page / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (page % 64);
        let was = w.fetch_and(!bit, Ordering::AcqRel) & bit != 0;
        if was {
            let _ = self
                .left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                    Some(l.saturating_sub(1))
                });
        }
        was
    }

    pub(super) fn left(&self) -> u64 {
        self.left.load(Ordering::Acquire)
    }
}

/// One address space being filled: the task's, or a child's it forked during the fill.
pub(super) struct Mm {
    pub(super) id: u64,
    pub(super) uffd: Arc<OwnedFd>,
    pub(super) todo: Arc<Todo>,
    /// The next piece the background fill looks at.
    pub(super) cursor: usize,
    /// The task's `mremap`s, in order: (from, to, len). A page still to come goes where they
    /// moved its first address.
    pub(super) moves: Vec<(u64, u64, u64)>,
}

impl Mm {
    /// Where the page first at `a` is now.
    pub(super) fn cur(&self, a: u64) -> u64 {
        self.moves.iter().fold(
            a,
            |a, &(f, t, l)| {
                if a >= f && a - f < l {
                    a - f + t
                } else {
                    a
                }
            },
        )
    }

    /// Which first address the page now at `x` had, if a page of the image is there.
    pub(super) fn orig(&self, x: u64) -> Option<u64> {
        let a = self.moves.iter().rev().fold(
            x,
            |a, &(f, t, l)| {
                if a >= t && a - t < l {
                    a - t + f
                } else {
                    a
                }
            },
        );
        (self.cur(a) == x).then_some(a)
    }
}

/// What the server and its helper share to fill the task's memory.
pub(super) struct Shared {
    pub(super) files: Arc<ChainFiles>,
    pub(super) src: Arc<Source>,
    /// Each record's CRC: unchecked or good (checked by whichever filler first needs the
    /// record, right before its first copy, so the copy reads bytes the CRC just brought into
    /// the cache).
    pub(super) crc: Vec<AtomicU8>,
    /// The lazy pieces, by address.
    pub(super) pieces: Vec<Piece>,
    /// The page index of each piece's first page.
    pub(super) first: Vec<u64>,
    /// The next piece the background fill of the task's own memory takes (server and helper
    /// each take the next one: both go forward through the image).
    pub(super) next: AtomicUsize,
    pub(super) ps: u64,
}

impl Shared {
    /// Record `rec`'s CRC, checked if it was not (a bad one is an error: no byte of it is
    /// copied).
    pub(super) fn checked(&self, rec: usize) -> Result<()> {
        if self.crc.get(rec).map(|c| c.load(Ordering::Acquire)) != Some(GOOD) {
            self.src.crc_ok(&self.files, rec)?;
            if let Some(c) = self.crc.get(rec) {
                c.store(GOOD, Ordering::Release);
            }
        }
        Ok(())
    }
}

/// The second filler of the task's own memory (while its layout does not move): it copies
/// whole pieces taken from [`Shared::next`], as the server does between faults, but never
/// reads the userfaultfd. The server pauses it before each read of the task's userfaultfd
/// (and takes it back only after handling what it read): a copy landing after the task's
/// `madvise(DONTNEED)` or `munmap` was read would put back data the task threw away.
pub(super) struct Helper {
    pub(super) pause: Arc<AtomicBool>,
    /// Set by the helper while paused (or ended).
    pub(super) idle: Arc<AtomicBool>,
    pub(super) quit: Arc<AtomicBool>,
    pub(super) handle: JoinHandle<Result<u64>>,
}

impl Helper {
    /// Pauses the helper and waits until it is between two copies.
    pub(super) fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
        while !self.idle.load(Ordering::SeqCst) && !self.handle.is_finished() {
            std::thread::yield_now();
        }
    }

    pub(super) fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
        self.handle.thread().unpark();
    }

    /// Stops it; the pages it copied.
    pub(super) fn end(self) -> Result<u64> {
        self.quit.store(true, Ordering::SeqCst);
        self.handle.thread().unpark();
        self.handle
            .join()
            .map_err(|_| other("the lazy-restore helper thread panicked"))?
    }
}

/// The helper's loop: whole pieces of the task's memory until none is left to take.
pub(super) fn help(
    sh: &Shared,
    uffd: &OwnedFd,
    todo: &Todo,
    pause: &AtomicBool,
    idle: &AtomicBool,
    quit: &AtomicBool,
) -> Result<u64> {
    let mut behind = pages::Behind::new(&sh.files);
    let mut copied = 0u64;
    let mut at: Option<(usize, u64)> = None;
    loop {
        if quit.load(Ordering::SeqCst) {
            return Ok(copied);
        }
        if pause.load(Ordering::SeqCst) {
            idle.store(true, Ordering::SeqCst);
            while pause.load(Ordering::SeqCst) && !quit.load(Ordering::SeqCst) {
                std::thread::park_timeout(std::time::Duration::from_millis(1));
            }
            idle.store(false, Ordering::SeqCst);
            // Looked at again before any copy (the server may have paused it once more).
            continue;
        }
        let (k, pg) = match at {
            Some(x) => x,
            None => {
                let k = sh.next.fetch_add(1, Ordering::AcqRel);
                if k >= sh.pieces.len() {
                    return Ok(copied);
                }
                (k, 0)
            }
        };
        match fill_step(sh, uffd, todo, k, pg, HELPER_BATCH, &mut behind)? {
            Step::Next {
                at: next,
                copied: n,
            } => {
                copied += n;
                at = next.map(|p| (k, p));
            }
            Step::Again => std::thread::yield_now(),
            Step::Gone => return Ok(copied),
        }
    }
}

/// What one copy of a filler found.
pub(super) enum Step {
    /// Copied `copied` pages: go on at page `at` of the piece, or it is done (`None`).
    Next { at: Option<u64>, copied: u64 },
    /// The layout is changing (an event to read first): try again.
    Again,
    /// The address space is gone.
    Gone,
}

/// Copies up to `max` pages still to come of piece `k` from its page `pg` on, at the
/// addresses the image gives them (the task's layout never moved: no `mremap` read).
pub(super) fn fill_step(
    sh: &Shared,
    uffd: &OwnedFd,
    todo: &Todo,
    k: usize,
    pg: u64,
    max: u64,
    behind: &mut pages::Behind,
) -> Result<Step> {
    let Some(&p) = sh.pieces.get(k) else {
        return Ok(Step::Next {
            at: None,
            copied: 0,
        });
    };
    let Src::Data { image, off, rec } = p.src else {
        return Ok(Step::Next {
            at: None,
            copied: 0,
        });
    };
    let g0 = sh.first.get(k).copied().unwrap_or(0);
    let npages = p.len / sh.ps;
    let mut pg = pg;
    while pg < npages && !todo.get(g0 + pg) {
        pg += 1;
    }
    let mut n = 0;
    while pg + n < npages && n < max && todo.get(g0 + pg + n) {
        n += 1;
    }
    if n == 0 {
        return Ok(Step::Next {
            at: None,
            copied: 0,
        });
    }
    sh.checked(rec)?;
    let bytes = pages::piece_bytes(&sh.files, image, off, p.len)?;
    let s = usize::try_from(pg * sh.ps).unwrap_or(usize::MAX);
    let l = usize::try_from(n * sh.ps).unwrap_or(0);
    let chunk = bytes.get(s..s.saturating_add(l)).unwrap_or_default();
    let dst = p.addr + pg * sh.ps;
    let (pages, put) = put(uffd, dst, chunk, sh.ps)?;
    if matches!(put, Put::Gone) {
        return Ok(Step::Gone);
    }
    behind.passed(
        &sh.files,
        image,
        off.saturating_add(s)
            .saturating_add(usize::try_from(pages * sh.ps).unwrap_or(0).min(chunk.len())),
    );
    let pages = pages.min(n);
    let mut copied = 0;
    for i in 0..pages {
        copied += u64::from(todo.clear(g0 + pg + i));
    }
    if matches!(put, Put::Again) {
        return Ok(Step::Again);
    }
    let nxt = pg + pages;
    Ok(Step::Next {
        at: (nxt < npages).then_some(nxt),
        copied,
    })
}

/// What stopped a [`put`].
pub(super) enum Put {
    /// Nothing: the stretch is in.
    Done,
    /// The layout is changing (an event is on the way, or read and not yet finished by the
    /// task): try again after the server has read it.
    Again,
    /// The address space is gone.
    Gone,
}

/// Copies `src` (whole pages) to `dst` in the task with `UFFDIO_COPY`: how many of the
/// stretch's first pages are in now (copied, or there already), and what stopped it.
///
/// `ENOENT` (nothing copied: no registered VMA holds the whole stretch) never counts a page
/// as in. Either the stretch crosses the end of a VMA (the task split its memory, with
/// `mprotect` say, or unmapped or moved what follows): its first half is tried, down to one
/// page; or the first page's VMA is gone, an `munmap` or `mremap` whose event is on its way
/// (the kernel looks the VMA up before it looks at `mmap_changing`, so a copy to a range
/// just moved gets `ENOENT`, not `EAGAIN`): the page is left to come, and the event says
/// what becomes of it (dropped, or sent to its new place). Marking it in here gave zeros in
/// a moved range (`tests/lazy_restore.rs`).
pub(super) fn put(uffd: &OwnedFd, dst: u64, src: &[u8], ps: u64) -> Result<(u64, Put)> {
    let ps_b = usize::try_from(ps).unwrap_or(usize::MAX);
    let mut len = src.len();
    loop {
        let part = src.get(..len).unwrap_or_default();
        let e = match sys::uffd_copy(uffd, dst, part) {
            Ok(d) => return Ok((d as u64 / ps, Put::Done)),
            Err((d, e)) => match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok((d as u64 / ps, Put::Again)),
                Some(libc::ESRCH) => return Ok((0, Put::Gone)),
                // The page after the copied ones is there already (the other filler's, or a
                // fault's answer): it is in.
                Some(libc::EEXIST) => return Ok((d as u64 / ps + 1, Put::Done)),
                Some(libc::ENOENT) if len > ps_b => {
                    len = (len / ps_b / 2) * ps_b;
                    continue;
                }
                Some(libc::ENOENT) => return Ok((0, Put::Again)),
                _ => e,
            },
        };
        return Err(Error::io(
            format!("UFFDIO_COPY of {} bytes at {dst:#x}", part.len()),
            e,
        ));
    }
}
