//! `cr-dump diff A B`: what differs between two images (each resolved through its own chain):
//! VMAs added, removed or changed; pages whose content differs; registers, mm and task fields.

use super::chain::{ChainFiles, Parse};
use super::show::GPR_NAMES;
use crate::error::Result;
use crate::span::AddrRange;
use cr_format::chain::{ChainIndex, Extent, Resolved};
use cr_format::raw;
use cr_format::read::{Image, Vma};
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
    /// Fields that differ: (name, A, B).
    pub fields: Vec<(String, String, String)>,
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
    /// Whether A and B hold the same task state.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.pages.is_empty()
            && self.fields.is_empty()
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "added": self.added, "removed": self.removed,
            "changed": self.changed.iter().map(|(k, w)| json!({"vma": k, "what": w})).collect::<Vec<_>>(),
            "pages": self.pages.iter().map(|r| json!({"start": format!("{:#x}", r.start), "end": format!("{:#x}", r.end)})).collect::<Vec<_>>(),
            "pages_compared": self.pages_compared,
            "fields": self.fields.iter().map(|(n, a, b)| json!({"field": n, "a": a, "b": b})).collect::<Vec<_>>(),
        })
    }

    /// As text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for (n, a, b) in &self.fields {
            let _ = writeln!(s, "field {n}: {a} -> {b}");
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
        for r in &self.pages {
            // `diff` sets the image's page size, never 0 (the format refuses it).
            let pages = r.len() / self.page_size.max(1);
            let _ = writeln!(
                s,
                "pages {:#x}-{:#x} differ ({pages} pages)",
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

fn fields(a: &Image<'_>, b: &Image<'_>, out: &mut Vec<(String, String, String)>) {
    let mut cmp = |name: &str, x: String, y: String| {
        if x != y {
            out.push((name.to_string(), x, y));
        }
    };
    if let (Some(ra), Some(rb)) = (a.regs(), b.regs()) {
        for (i, n) in GPR_NAMES.iter().enumerate() {
            cmp(n, format!("{:#x}", ra.gpr(i)), format!("{:#x}", rb.gpr(i)));
        }
        cmp(
            "fxsave",
            format!("crc {:#010x}", crc32fast::hash(&ra.raw.fxsave)),
            format!("crc {:#010x}", crc32fast::hash(&rb.raw.fxsave)),
        );
        cmp(
            "xsave",
            format!("crc {:#010x}", crc32fast::hash(ra.xsave)),
            format!("crc {:#010x}", crc32fast::hash(rb.xsave)),
        );
    }
    if let (Some(ma), Some(mb)) = (a.mm(), b.mm()) {
        let f = |m: &cr_format::read::Mm<'_>| {
            let r = m.raw;
            [
                ("start_code", r.start_code.get()),
                ("end_code", r.end_code.get()),
                ("start_data", r.start_data.get()),
                ("end_data", r.end_data.get()),
                ("start_brk", r.start_brk.get()),
                ("brk", r.brk.get()),
                ("start_stack", r.start_stack.get()),
                ("arg_start", r.arg_start.get()),
                ("arg_end", r.arg_end.get()),
                ("env_start", r.env_start.get()),
                ("env_end", r.env_end.get()),
            ]
        };
        for ((n, x), (_, y)) in f(&ma).into_iter().zip(f(&mb)) {
            cmp(n, format!("{x:#x}"), format!("{y:#x}"));
        }
        cmp(
            "exe",
            String::from_utf8_lossy(ma.exe).into(),
            String::from_utf8_lossy(mb.exe).into(),
        );
    }
    if let (Some(ta), Some(tb)) = (a.task(), b.task()) {
        cmp("pid", ta.pid.get().to_string(), tb.pid.get().to_string());
        cmp(
            "sig_blocked",
            format!("{:#x}", ta.sig_blocked.get()),
            format!("{:#x}", tb.sig_blocked.get()),
        );
        cmp(
            "uid",
            format!("{:?}", ta.uid.map(|v| v.get())),
            format!("{:?}", tb.uid.map(|v| v.get())),
        );
        cmp(
            "gid",
            format!("{:?}", ta.gid.map(|v| v.get())),
            format!("{:?}", tb.gid.map(|v| v.get())),
        );
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
    fields(ta, tb, &mut r.fields);
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

/// What differs between two VMAs at the same range, if anything.
fn vma_changes(v: &Vma<'_>, w: &Vma<'_>) -> Option<String> {
    let (x, y) = (v.raw, w.raw);
    let mut what = vec![];
    if x.prot != y.prot {
        what.push(format!("prot {} -> {}", x.prot, y.prot));
    }
    if x.flags != y.flags || x.kind != y.kind {
        what.push("flags or kind".to_string());
    }
    if v.path != w.path || x.offset != y.offset || x.inode != y.inode {
        what.push("mapped file".to_string());
    }
    (!what.is_empty()).then(|| what.join(", "))
}
