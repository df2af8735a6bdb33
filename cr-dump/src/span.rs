//! Two ways of naming a piece of a task's address space, as types so they cannot be confused:
//! an [`AddrRange`] is `[start, end)` in bytes, a [`PageSpan`] is a first page and a count of
//! pages. Arithmetic that could overflow is checked and says so (`None`), never wraps.

/// A half-open range of addresses, `[start, end)`, with `start <= end`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    /// First address in the range.
    pub start: u64,
    /// First address past the range.
    pub end: u64,
}

impl AddrRange {
    /// `[start, end)`; `None` if `end < start`.
    pub fn new(start: u64, end: u64) -> Option<AddrRange> {
        (start <= end).then_some(AddrRange { start, end })
    }

    /// `[start, start + len)`; `None` if that passes the end of the address space.
    pub fn at(start: u64, len: u64) -> Option<AddrRange> {
        Some(AddrRange {
            start,
            end: start.checked_add(len)?,
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether it holds no address.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `addr` is in it.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether it and `other` share an address.
    pub fn overlaps(&self, other: &AddrRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The same range as whole pages of `page_size` bytes; `None` if it is not page-aligned
    /// or `page_size` is zero.
    pub fn pages(&self, page_size: u64) -> Option<PageSpan> {
        if page_size == 0 || self.start % page_size != 0 || self.end % page_size != 0 {
            return None;
        }
        Some(PageSpan {
            addr: self.start,
            pages: self.len() / page_size,
        })
    }
}

/// A run of whole pages: the address of the first and how many there are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSpan {
    /// Address of the first page.
    pub addr: u64,
    /// Number of pages.
    pub pages: u64,
}

impl PageSpan {
    /// `pages` pages from `addr`.
    pub fn new(addr: u64, pages: u64) -> PageSpan {
        PageSpan { addr, pages }
    }

    /// Its length in bytes with pages of `page_size` bytes; `None` on overflow.
    pub fn bytes(&self, page_size: u64) -> Option<u64> {
        self.pages.checked_mul(page_size)
    }

    /// The address just past its last page; `None` on overflow.
    pub fn end(&self, page_size: u64) -> Option<u64> {
        self.addr.checked_add(self.bytes(page_size)?)
    }

    /// The same span as an address range; `None` on overflow.
    pub fn range(&self, page_size: u64) -> Option<AddrRange> {
        AddrRange::new(self.addr, self.end(page_size)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_spans() {
        let r = AddrRange::new(0x1000, 0x3000).unwrap();
        assert_eq!(r.len(), 0x2000);
        assert!(r.contains(0x1000) && r.contains(0x2fff) && !r.contains(0x3000));
        assert!(r.overlaps(&AddrRange::at(0x2fff, 1).unwrap()));
        assert!(!r.overlaps(&AddrRange::at(0x3000, 0x1000).unwrap()));
        assert_eq!(AddrRange::new(2, 1), None);
        assert_eq!(AddrRange::at(u64::MAX, 2), None);
        let s = r.pages(0x1000).unwrap();
        assert_eq!(s, PageSpan::new(0x1000, 2));
        assert_eq!(s.range(0x1000), Some(r));
        assert_eq!(AddrRange::new(0x1001, 0x3000).unwrap().pages(0x1000), None);
        assert_eq!(PageSpan::new(u64::MAX - 0xfff, 2).end(0x1000), None);
    }
}
