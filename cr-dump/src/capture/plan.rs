//! The one page planner: pages, one at a time and in address order, become the runs of Pages
//! records within the format's limits ([`crate::records`]), and
//! the bytes of data pages are squeezed together in place in the page buffer, so each record's
//! data is one slice of it.
//!
//! Every capture path plans through it: a copy ([`plan_pages`] over the pages copied), a stream
//! (the same, chunk by chunk, compared with the parent chain when there is one), and
//! [`crate::capture::delta`] (a copy re-planned over a parent); so is squash.

use crate::error::{Error, Result};
use crate::span::PageSpan;
use cr_format::raw;

pub use crate::records::{is_zero, RecordPlan, RunBuilder};

/// Pages planned, by what they became.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCounts {
    /// Stored with their data.
    pub data: u64,
    /// Stored as known zero.
    pub zero: u64,
    /// Unchanged since the parent.
    pub parent: u64,
}

impl PageCounts {
    /// Adds `o`.
    pub fn add(&mut self, o: PageCounts) {
        self.data += o.data;
        self.zero += o.zero;
        self.parent += o.parent;
    }
}

/// What one page becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageClass {
    /// Stored; its bytes are at this offset of the buffer, at or after where they go.
    Data(usize),
    /// Known zero.
    Zero,
    /// Unchanged since the parent.
    Parent,
}

/// A [`RunBuilder`] over a page buffer that moves each data page down to where its record
/// keeps it, and counts.
pub struct Planner<'b> {
    b: RunBuilder,
    buf: &'b mut [u8],
    ps: usize,
    counts: PageCounts,
}

/// What a [`Planner`] made.
#[derive(Debug, Default)]
pub struct Planned {
    /// The records, in address order.
    pub records: Vec<RecordPlan>,
    /// The end of the data kept in the buffer.
    pub data_end: usize,
    /// The pages by what they became.
    pub counts: PageCounts,
}

impl<'b> Planner<'b> {
    /// A planner whose data starts at `buf[base..]`, for pages of `ps` bytes.
    pub fn new(buf: &'b mut [u8], base: usize, ps: usize) -> Self {
        Planner {
            b: RunBuilder::new(ps as u64, base),
            buf,
            ps,
            counts: PageCounts::default(),
        }
    }

    /// See [`RunBuilder::start_span`].
    pub fn start_span(&mut self) {
        self.b.start_span();
    }

    /// The buffer.
    pub fn buf(&self) -> &[u8] {
        self.buf
    }

    /// Adds the page at `addr`.
    pub fn page(&mut self, addr: u64, class: PageClass) -> Result<()> {
        let kind = match class {
            PageClass::Parent => {
                self.counts.parent += 1;
                raw::RUN_PARENT
            }
            PageClass::Zero => {
                self.counts.zero += 1;
                raw::RUN_ZERO
            }
            PageClass::Data(from) => {
                let to = self.b.data_end();
                let end = from.checked_add(self.ps).filter(|&e| e <= self.buf.len());
                let Some(end) = end.filter(|_| from >= to) else {
                    return Err(Error::Other(format!(
                        "internal: page {addr:#x} at {from:#x} cannot move to {to:#x} in a \
                         buffer of {:#x} bytes",
                        self.buf.len()
                    )));
                };
                if from != to {
                    self.buf.copy_within(from..end, to);
                }
                self.counts.data += 1;
                raw::RUN_DATA
            }
        };
        self.b.push(addr, kind);
        Ok(())
    }

    /// The records, the end of their data, the counts.
    pub fn finish(self) -> Planned {
        Planned {
            data_end: self.b.data_end(),
            records: self.b.finish(),
            counts: self.counts,
        }
    }
}

/// Whether a page now (its bytes, or `None` when all zero) is the parent's at an address.
pub type InParent<'a> = &'a (dyn Fn(u64, Option<&[u8]>) -> bool + Sync);

/// Plans the copied pages of `spans` (at `buf[base..]`, back to back): a page `in_parent` says
/// is the parent's becomes a parent run, an all-zero one a zero run, the others data, squeezed
/// to the front of `buf[base..]`.
pub fn plan_pages(
    spans: &[PageSpan],
    buf: &mut [u8],
    base: usize,
    ps: usize,
    in_parent: Option<InParent<'_>>,
) -> Result<Planned> {
    let mut p = Planner::new(buf, base, ps);
    let mut src = base;
    for s in spans {
        p.start_span();
        for k in 0..s.pages {
            let addr = k
                .checked_mul(ps as u64)
                .and_then(|o| s.addr.checked_add(o))
                .ok_or_else(|| Error::Other(format!("internal: span {s:?} overflows")))?;
            let page = p.buf().get(src..src + ps).ok_or_else(|| {
                Error::Other(format!(
                    "internal: page {addr:#x} is past the end of the page buffer ({:#x} bytes)",
                    p.buf().len()
                ))
            })?;
            let now = (!is_zero(page)).then_some(page);
            let class = if in_parent.is_some_and(|f| f(addr, now)) {
                PageClass::Parent
            } else if now.is_none() {
                PageClass::Zero
            } else {
                PageClass::Data(src)
            };
            p.page(addr, class)?;
            src += ps;
        }
    }
    Ok(p.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cr_format::limits::{MAX_DATA_PER_RECORD, MAX_RUNS_PER_RECORD};

    #[test]
    fn plan_squeezes_zero_pages_and_respects_limits() {
        let ps = 4096usize;
        // 3 spans: [data, zero, data], [zero], [data x 2000].
        let spans = [
            PageSpan::new(0x10000, 3),
            PageSpan::new(0x20000, 1),
            PageSpan::new(0x40000, 2000),
        ];
        let total = 2004 * ps;
        let mut buf = vec![0u8; total];
        buf[..ps].fill(1);
        buf[2 * ps..3 * ps].fill(3);
        for i in 4..2004 {
            buf[i * ps] = (i % 251) as u8 + 1;
        }
        let p = plan_pages(&spans, &mut buf, 0, ps, None).unwrap();
        let out = p.records;
        assert_eq!(p.counts.zero, 2);
        assert_eq!(p.counts.data, 2002);
        assert_eq!(p.data_end, 2002 * ps);
        assert_eq!(buf[ps], 3);
        assert_eq!(buf[2 * ps], 5); // page 4 -> (4 % 251) + 1
                                    // 2002 data pages at 1024 per record -> 2 records at least.
        assert!(out.len() >= 2);
        for r in &out {
            assert!(r.runs.len() <= MAX_RUNS_PER_RECORD as usize);
            let dp: u64 = r
                .runs
                .iter()
                .filter(|x| x.kind.get() == raw::RUN_DATA)
                .map(|x| u64::from(x.pages.get()))
                .sum();
            assert_eq!(dp as usize * ps, r.data.len());
            assert!(r.data.len() <= MAX_DATA_PER_RECORD as usize);
        }
        let runs: Vec<_> = out.iter().flat_map(|r| r.runs.iter()).collect();
        assert_eq!(runs[0].kind.get(), raw::RUN_DATA);
        assert_eq!(runs[1].kind.get(), raw::RUN_ZERO);
        assert_eq!(runs[1].addr.get(), 0x11000);
        assert_eq!(runs[3].addr.get(), 0x20000);
        assert_eq!(runs[3].kind.get(), raw::RUN_ZERO);
    }

    #[test]
    fn a_page_past_the_buffer_is_an_error() {
        let mut buf = vec![1u8; 4096];
        let r = plan_pages(&[PageSpan::new(0x1000, 2)], &mut buf, 0, 4096, None);
        assert!(r.is_err());
    }

    #[test]
    fn zero_check() {
        let mut p = vec![0u8; 4096];
        assert!(is_zero(&p));
        p[4095] = 1;
        assert!(!is_zero(&p));
        p[4095] = 0;
        p[3] = 1;
        assert!(!is_zero(&p));
    }
}
