//! `cr-dump diff A B`: what differs between two images (each resolved through its own chain):
//! VMAs added, removed or changed; pages whose content differs, named by VMA; and every other
//! field by name ([`super::diff_fields`]): header, registers (FXSAVE/XSAVE by register), task,
//! mm, files, signals, timers, limits and attributes.

use super::chain::{ChainFiles, Parse};
use super::names;
use crate::error::Result;
use crate::span::AddrRange;
use cr_format::chain::{ChainIndex, Extent, Resolved};
use cr_format::raw;
use cr_format::read::Vma;
use serde_json::{json, Value};
use std::path::Path;

/// A VMA, for reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VmaKey {
    /// Start.
    pub start: u64,
    /// End.
    pub end: u64,
    /// Path (lossy).
    pub path: String,
}

fn key(v: &Vma<'_>) -> VmaKey {
    VmaKey {
        start: v.start(),
        end: v.end(),
        path: String::from_utf8_lossy(v.path).into_owned(),
    }
}

/// The differences between two images.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DiffReport {
    /// VMAs only in B.
    pub added: Vec<VmaKey>,
    /// VMAs only in A.
    pub removed: Vec<VmaKey>,
    /// VMAs at the same range whose attributes differ, with what differs.
    pub changed: Vec<(VmaKey, String)>,
    /// Ranges of pages, in VMAs both have, whose contents differ.
    #[serde(serialize_with = "ranges_as_pairs")]
    pub pages: Vec<AddrRange>,
    /// Number of pages compared.
    pub pages_compared: u64,
    /// Fields that differ: (name, A, B); the image's identity (CRID, creation time, digest,
    /// ...) first ([`super::diff_fields::is_identity`]).
    pub fields: Vec<(String, String, String)>,
    /// For each range of `pages`, the VMA it is in (its path, `[heap]`, or `anon`).
    pub pages_vma: Vec<String>,
    /// The page size of A (the unit of `pages_compared`).
    #[serde(skip)]
    pub page_size: u64,
}

/// Ranges as `[start, end]` pairs, the form the report always had.
fn ranges_as_pairs<S: serde::Serializer>(
    r: &[AddrRange],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(r.iter().map(|r| (r.start, r.end)))
}

impl DiffReport {
    /// Whether A and B hold the same task state: they may still differ in their identity (CRID,
    /// creation time, producer, parent, digest, length), which any two checkpoints do.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.pages.is_empty()
            && self
                .fields
                .iter()
                .all(|(n, _, _)| super::diff_fields::is_identity(n))
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "added": self.added, "removed": self.removed,
            "changed": self.changed.iter().map(|(k, w)| json!({"vma": k, "what": w})).collect::<Vec<_>>(),
            "pages": self.pages.iter().zip(self.vma_names()).map(|(r, v)| json!({"start": format!("{:#x}", r.start), "end": format!("{:#x}", r.end), "vma": v})).collect::<Vec<_>>(),
            "pages_compared": self.pages_compared,
            "fields": self.fields.iter().map(|(n, a, b)| json!({"field": n, "a": a, "b": b, "identity": super::diff_fields::is_identity(n)})).collect::<Vec<_>>(),
            "differ": !self.is_empty(),
        })
    }

    /// The VMA of each range of `pages` (`?` past the list, which `diff` never leaves).
    fn vma_names(&self) -> impl Iterator<Item = &str> {
        self.pages_vma
            .iter()
            .map(String::as_str)
            .chain(std::iter::repeat("?"))
    }

    /// As text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for (n, a, b) in &self.fields {
            let what = if super::diff_fields::is_identity(n) {
                "image"
            } else {
                "field"
            };
            let _ = writeln!(s, "{what} {n}: {a} -> {b}");
        }
        for v in &self.removed {
            let _ = writeln!(s, "- vma {:#x}-{:#x} {}", v.start, v.end, v.path);
        }
        for v in &self.added {
            let _ = writeln!(s, "+ vma {:#x}-{:#x} {}", v.start, v.end, v.path);
        }
        for (v, w) in &self.changed {
            let _ = writeln!(s, "~ vma {:#x}-{:#x} {}: {w}", v.start, v.end, v.path);
        }
        for (r, vma) in self.pages.iter().zip(self.vma_names()) {
            // `diff` sets the image's page size, never 0 (the format refuses it).
            let pages = r.len() / self.page_size.max(1);
            let _ = writeln!(
                s,
                "pages {:#x}-{:#x} differ ({pages} pages) in {vma}",
                r.start, r.end
            );
        }
        let _ = writeln!(
            s,
            "{} field(s), {} VMA(s) added, {} removed, {} changed; {} page range(s) differ of {} pages compared",
            self.fields.len(),
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.pages.len(),
            self.pages_compared
        );
        s
    }
}

/// A page's content as far as comparison goes.
#[derive(PartialEq, Eq)]
enum Content<'a> {
    Bytes(&'a [u8]),
    Zero,
    File,
    Missing,
}

fn content<'a>(r: cr_format::Result<Resolved<'a>>) -> Content<'a> {
    match r {
        Ok(Resolved::Data { bytes, .. }) if bytes.iter().all(|&b| b == 0) => Content::Zero,
        Ok(Resolved::Data { bytes, .. }) => Content::Bytes(bytes),
        Ok(Resolved::Zero { .. }) => Content::Zero,
        Ok(Resolved::NotPresent { vma, .. }) if vma.kind() == raw::VMA_FILE => Content::File,
        Ok(Resolved::NotPresent { .. }) => Content::Zero,
        Err(_) => Content::Missing,
    }
}

/// Compares two images, each resolved through the chain found beside it.
pub fn diff(pa: &Path, pb: &Path) -> Result<DiffReport> {
    let (fa, fb) = (ChainFiles::open(pa)?, ChainFiles::open(pb)?);
    let (ca, cb) = (fa.parse(Parse::Full)?, fb.parse(Parse::Full)?);
    let (xa, xb) = (ca.index(), cb.index());
    let (ta, tb) = (ca.top(), cb.top());
    let mut r = DiffReport {
        page_size: ca.page_size(),
        ..DiffReport::default()
    };
    r.fields = super::diff_fields::compare(ta, tb);
    let va: Vec<Vma<'_>> = ta.vmas().collect();
    let vb: Vec<Vma<'_>> = tb.vmas().collect();
    let ps = r.page_size;
    for v in &va {
        // VMAs are in address order (the reader checks it): a binary search, not a scan, so
        // two images of 65536 VMAs each cost 65536 searches.
        let found = vb
            .binary_search_by_key(&v.start(), |w| w.start())
            .ok()
            .and_then(|i| vb.get(i))
            .filter(|w| w.end() == v.end());
        match found {
            None => r.removed.push(key(v)),
            Some(w) => {
                if let Some(what) = vma_changes(v, w) {
                    r.changed.push((key(v), what));
                }
                compare_vma(xa, xb, v, ps, &mut r);
            }
        }
    }
    for w in &vb {
        let found = va
            .binary_search_by_key(&w.start(), |v| v.start())
            .ok()
            .and_then(|i| va.get(i))
            .is_some_and(|v| v.end() == w.end());
        if !found {
            r.added.push(key(w));
        }
    }
    r.pages_vma = r
        .pages
        .iter()
        .map(|p| {
            let i = va.partition_point(|v| v.end() <= p.start);
            va.get(i).map_or_else(|| "?".to_string(), vma_name)
        })
        .collect();
    Ok(r)
}

/// Compares the contents of a VMA both images have, stretch by stretch where both chains
/// resolve uniformly ([`ChainIndex::extent`]), page by page only where one of them holds data:
/// the cost is per run and per stored page, not per page the VMA covers.
fn compare_vma(xa: &ChainIndex<'_>, xb: &ChainIndex<'_>, v: &Vma<'_>, ps: u64, r: &mut DiffReport) {
    let mut differs = |start: u64, end: u64| match r.pages.last_mut() {
        Some(last) if last.end == start => last.end = end,
        _ => r.pages.push(AddrRange { start, end }),
    };
    let mut compared = 0u64;
    let mut page = v.start();
    while page < v.end() {
        let (ea, eb) = (xa.extent(page), xb.extent(page));
        // Extents end past their start; `max` keeps the walk going even if one did not.
        let stop = ea.end.min(eb.end).min(v.end()).max(page.saturating_add(ps));
        compared = compared.saturating_add((stop - page) / ps);
        match (uniform(&ea), uniform(&eb)) {
            (Some(x), Some(y)) => {
                if x != y {
                    differs(page, stop);
                }
            }
            _ => {
                let mut p = page;
                while p < stop {
                    if page_of(&ea, p, ps) != page_of(&eb, p, ps) {
                        differs(p, p + ps);
                    }
                    p += ps;
                }
            }
        }
        page = stop;
    }
    r.pages_compared += compared;
}

/// The content of every page of an extent, unless it holds data (which differs page by page).
fn uniform<'a>(e: &Extent<'a>) -> Option<Content<'a>> {
    match e.resolved {
        Some(Resolved::Data { .. }) => None,
        Some(x) => Some(content(Ok(x))),
        None => Some(Content::Missing),
    }
}

/// The content of the page at `p` of an extent.
fn page_of<'a>(e: &Extent<'a>, p: u64, ps: u64) -> Content<'a> {
    match e.resolved {
        Some(Resolved::Data { crid, bytes }) => {
            let off = usize::try_from(p - e.start).unwrap_or(usize::MAX);
            let page = off
                .checked_add(usize::try_from(ps).unwrap_or(usize::MAX))
                .and_then(|end| bytes.get(off..end))
                .unwrap_or(&[]);
            content(Ok(Resolved::Data { crid, bytes: page }))
        }
        Some(x) => content(Ok(x)),
        None => Content::Missing,
    }
}

/// A VMA as `show` names it: its path, `[heap]`, `[stack]`, ..., or `anon 0x…`.
fn vma_name(v: &Vma<'_>) -> String {
    match v.kind() {
        raw::VMA_FILE => String::from_utf8_lossy(v.path).into_owned(),
        raw::VMA_ANON => format!("anon {:#x}-{:#x}", v.start(), v.end()),
        k => format!("[{}]", super::show::vma_kind_name(k)),
    }
}

/// What differs between two VMAs at the same range, if anything.
fn vma_changes(v: &Vma<'_>, w: &Vma<'_>) -> Option<String> {
    let (x, y) = (v.raw, w.raw);
    let mut what = vec![];
    if x.prot != y.prot {
        what.push(format!(
            "prot {} -> {}",
            names::prot(x.prot.get().into()),
            names::prot(y.prot.get().into())
        ));
    }
    if x.flags != y.flags {
        what.push(format!(
            "flags {} -> {}",
            names::flags(x.flags.get().into(), names::VMA_FLAGS),
            names::flags(y.flags.get().into(), names::VMA_FLAGS)
        ));
    }
    if x.kind != y.kind {
        what.push(format!(
            "kind {} -> {}",
            super::show::vma_kind_name(x.kind.get()),
            super::show::vma_kind_name(y.kind.get())
        ));
    }
    if v.path != w.path {
        what.push(format!(
            "path {} -> {}",
            String::from_utf8_lossy(v.path),
            String::from_utf8_lossy(w.path)
        ));
    }
    for (n, a, b) in [
        ("offset", x.offset.get(), y.offset.get()),
        ("inode", x.inode.get(), y.inode.get()),
        ("file size", x.file_size.get(), y.file_size.get()),
        (
            "file mtime ns",
            x.file_mtime_ns.get(),
            y.file_mtime_ns.get(),
        ),
        (
            "dev major",
            x.dev_major.get().into(),
            y.dev_major.get().into(),
        ),
        (
            "dev minor",
            x.dev_minor.get().into(),
            y.dev_minor.get().into(),
        ),
    ] {
        if a != b {
            what.push(format!("{n} {a} -> {b}"));
        }
    }
    (!what.is_empty()).then(|| what.join(", "))
}
