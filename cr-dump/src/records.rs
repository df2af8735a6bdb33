//! Pages records built page by page, shared by capture (which plans them over a page buffer,
//! [`crate::capture::plan`]) and squash (which folds a chain into one image,
//! [`crate::inspect::squash`]): the runs of each record within the format's limits
//! ([`MAX_RUNS_PER_RECORD`], [`MAX_DATA_PER_RECORD`]), the one `is_zero`, and when two VMAs are
//! the same mapping.

use cr_format::limits::{MAX_DATA_PER_RECORD, MAX_RUNS_PER_RECORD};
use cr_format::raw::{self, PageRun};
use cr_format::read::Vma;

/// A Pages record planned over a page buffer: its runs and the byte range of its data.
#[derive(Clone, Debug, Default)]
pub struct RecordPlan {
    /// Runs, in address order.
    pub runs: Vec<PageRun>,
    /// Data of its data runs, in the buffer.
    pub data: std::ops::Range<usize>,
}

/// Whether a page is all zero.
pub fn is_zero(page: &[u8]) -> bool {
    // Most non-zero pages differ in their first bytes; the rest is checked a cache line at a
    // time, which the compiler vectorizes.
    let (head, rest) = page.split_at(page.len().min(8));
    if head.iter().any(|&b| b != 0) {
        return false;
    }
    rest.chunks_exact(64)
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        && rest.chunks_exact(64).remainder().iter().all(|&b| b == 0)
}

/// Builds Pages records page by page within the format's limits. It only tracks where data
/// goes ([`RunBuilder::data_end`]); moving the bytes is the caller's (see [`crate::capture::plan::Planner`]).
pub struct RunBuilder {
    ps: u64,
    max_data_pages: usize,
    /// Records done.
    pub records: Vec<RecordPlan>,
    cur: RecordPlan,
    cur_data_pages: usize,
    /// The next page starts a run whatever the last one is.
    fresh: bool,
}

impl RunBuilder {
    /// A builder for pages of `ps` bytes whose first record's data starts at `base`.
    pub fn new(ps: u64, base: usize) -> Self {
        RunBuilder {
            ps,
            max_data_pages: usize::try_from(u64::from(MAX_DATA_PER_RECORD) / ps.max(1))
                .unwrap_or(usize::MAX),
            records: Vec::new(),
            cur: RecordPlan {
                runs: Vec::new(),
                data: base..base,
            },
            cur_data_pages: 0,
            fresh: false,
        }
    }

    /// The next page starts a run even if it could extend the last one (the copy planner
    /// starts one per span it was given; the records it makes have always looked so).
    pub fn start_span(&mut self) {
        self.fresh = true;
    }

    /// Adds the page at `addr` of run kind `kind`; a data page's bytes must be at
    /// [`RunBuilder::data_end`] (records are contiguous in the buffer, so starting a new record
    /// does not move that position).
    pub fn push(&mut self, addr: u64, kind: u16) {
        let extend = !std::mem::take(&mut self.fresh)
            && self.cur.runs.last().is_some_and(|r| {
                r.kind.get() == kind
                    && r.pages.get() < u32::MAX
                    && r.addr.get() + u64::from(r.pages.get()) * self.ps == addr
            });
        let full_runs = !extend && self.cur.runs.len() >= MAX_RUNS_PER_RECORD as usize;
        let full_data = kind == raw::RUN_DATA && self.cur_data_pages >= self.max_data_pages;
        if full_runs || full_data {
            let end = self.cur.data.end;
            let done = std::mem::replace(
                &mut self.cur,
                RecordPlan {
                    runs: Vec::new(),
                    data: end..end,
                },
            );
            self.records.push(done);
            self.cur_data_pages = 0;
        }
        match self.cur.runs.last_mut() {
            Some(r) if extend && !full_runs && !full_data => r.pages = (r.pages.get() + 1).into(),
            _ => self.cur.runs.push(PageRun {
                addr: addr.into(),
                pages: 1.into(),
                kind: kind.into(),
                _reserved0: 0.into(),
            }),
        }
        if kind == raw::RUN_DATA {
            self.cur.data.end += self.ps as usize;
            self.cur_data_pages += 1;
        }
    }

    /// Adds `pages` pages of the non-data kind `kind` from `addr` on: a run of any length costs
    /// a run per `u32::MAX` pages, not a push per page (a hostile chain may hold 2^32-1).
    pub fn push_run(&mut self, addr: u64, pages: u64, kind: u16) {
        if pages == 0 || kind == raw::RUN_DATA {
            return;
        }
        self.push(addr, kind);
        let mut left = pages - 1;
        let mut a = addr.saturating_add(self.ps);
        while left > 0 {
            // `push` just added the page before `a` to the last run.
            let room = self
                .cur
                .runs
                .last()
                .map_or(0, |r| u64::from(u32::MAX - r.pages.get()));
            let k = left.min(room);
            match self.cur.runs.last_mut() {
                Some(r) if k > 0 => {
                    // k <= u32::MAX - r.pages.
                    r.pages = (r.pages.get() + k as u32).into();
                }
                _ => {
                    self.push(a, kind);
                    left -= 1;
                    a = a.saturating_add(self.ps);
                    continue;
                }
            }
            left -= k;
            a = a.saturating_add(k.saturating_mul(self.ps));
        }
    }

    /// Takes the records closed so far.
    pub fn take_done(&mut self) -> Vec<RecordPlan> {
        std::mem::take(&mut self.records)
    }

    /// The start of the open record's data.
    pub fn open_data_start(&self) -> usize {
        self.cur.data.start
    }

    /// Moves the open record's data range `by` bytes down (its data was moved).
    pub fn shift_down(&mut self, by: usize) {
        self.cur.data.start -= by;
        self.cur.data.end -= by;
    }

    /// Where the next data page goes.
    pub fn data_end(&self) -> usize {
        self.cur.data.end
    }

    /// The records, the last one closed.
    pub fn finish(mut self) -> Vec<RecordPlan> {
        if !self.cur.runs.is_empty() {
            self.records.push(self.cur);
        }
        self.records
    }
}

/// Whether two VMAs describe the same mapping (same place, size, kind and backing).
pub fn same_mapping(now: &raw::Vma, path: &[u8], then: &Vma<'_>) -> bool {
    let t = then.raw;
    now.start == t.start
        && now.end == t.end
        && now.kind == t.kind
        && now.offset == t.offset
        && now.inode == t.inode
        && now.dev_major == t.dev_major
        && now.dev_minor == t.dev_minor
        && path == then.path
}
