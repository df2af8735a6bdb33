//! `extract`: the task's memory as an image chain holds it, page by page.

use super::chain::{with_chain, Parse};
use super::show::vma_kind_name;
use crate::error::{Error, Result};
use cr_format::chain::{ChainIndex, Resolved};
use cr_format::raw;
use cr_format::read::Vma;
use std::fs::File;
use std::path::Path;

/// Reads `len` bytes of the task's memory at `addr` as the image chain holds them: data pages
/// from the images, zero for zero and untouched anonymous pages, the mapped file's bytes for
/// untouched pages of a file mapping (refused if the file changed since the checkpoint).
pub fn extract(path: &Path, addr: u64, len: u64) -> Result<Vec<u8>> {
    with_chain(path, Parse::Full, |chain| {
        read_range(chain.index(), chain.page_size(), addr, len)
    })
}

/// [`extract`] over an indexed chain with pages of `ps` bytes, walked extent by extent
/// ([`ChainIndex::extent`]): the cost is per run crossed and per byte asked for, not per page.
pub(super) fn read_range(idx: &ChainIndex<'_>, ps: u64, addr: u64, len: u64) -> Result<Vec<u8>> {
    let end = addr
        .checked_add(len)
        .ok_or_else(|| Error::Other(format!("range {addr:#x}+{len:#x} overflows")))?;
    let cap = usize::try_from(len).map_err(|_| Error::Other("length too large".into()))?;
    let mut out = Vec::with_capacity(cap.min(1 << 30));
    let mut a = addr;
    while a < end {
        let page = a & !(ps - 1);
        let e = idx.extent(page);
        // Saturating: the last page of the address space ends at 2^64. An extent ends past its
        // start; `max` keeps the walk going even if one did not.
        let stop = e.end.max(page.saturating_add(ps)).min(end);
        let n = stop - a;
        let n_usize = usize::try_from(n).map_err(|_| Error::Other("length too large".into()))?;
        match e.resolved {
            Some(Resolved::Data { bytes, .. }) => {
                let off = usize::try_from(a - e.start).unwrap_or(usize::MAX);
                let part = off
                    .checked_add(n_usize)
                    .and_then(|to| bytes.get(off..to))
                    .ok_or_else(|| {
                        Error::Other(format!(
                            "address {a:#x}: the image holds {} bytes of it",
                            bytes.len()
                        ))
                    })?;
                out.extend_from_slice(part);
            }
            Some(Resolved::Zero { .. }) => out.resize(out.len() + n_usize, 0),
            Some(Resolved::NotPresent { vma, crid }) => match vma.kind() {
                raw::VMA_FILE => {
                    let (got, stopped) = file_range(&vma, a, n, &mut |b| {
                        out.extend_from_slice(b);
                        Ok(())
                    });
                    if let Some(why) = stopped {
                        let why = why.text();
                        return Err(Error::Other(format!(
                            "address {a:#x}: {why} (image CRID {crid})"
                        )));
                    }
                    // Past the end of the file a mapping reads zeros.
                    out.resize(out.len() + (n - got) as usize, 0);
                }
                raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL => {
                    return Err(Error::Other(format!(
                        "address {a:#x}: in the {} area, which images record but do not copy",
                        vma_kind_name(vma.kind())
                    )))
                }
                _ => out.resize(out.len() + n_usize, 0),
            },
            None => {
                return Err(Error::Other(format!(
                    "address {a:#x}: not in any VMA of the image"
                )))
            }
        }
        a = stop;
    }
    Ok(out)
}

/// A page's content, resolved through a chain.
pub enum Page<'a> {
    /// These bytes (stored in an image, or read from a mapped file).
    Bytes(std::borrow::Cow<'a, [u8]>),
    /// Zeros (known zero, or untouched anonymous memory).
    Zero,
    /// Not available, and why.
    Unavailable(String),
}

/// The content of the page at `page` (page-aligned) as the chain holds it.
pub fn page_content<'a>(idx: &ChainIndex<'a>, page: u64, ps: u64) -> Page<'a> {
    page_content_with(idx, page, ps, true)
}

/// [`page_content`]; without `files`, an untouched page of a file mapping is unavailable
/// instead of read from the file (no file system access, for the fuzz targets).
pub fn page_content_with<'a>(idx: &ChainIndex<'a>, page: u64, ps: u64, files: bool) -> Page<'a> {
    match idx.resolve(page) {
        Ok(Resolved::Data { bytes, .. }) => Page::Bytes(bytes.into()),
        Ok(Resolved::Zero { .. }) => Page::Zero,
        Ok(Resolved::NotPresent { vma, crid }) => match vma.kind() {
            raw::VMA_FILE => {
                // The offset is the image's (page-aligned, otherwise any value): the page's
                // file offset may not fit in 64 bits.
                let Some(fo) = vma.raw.offset.get().checked_add(page - vma.start()) else {
                    return Page::Unavailable(format!(
                        "untouched page of a file mapping past file offset 2^64 (image CRID {crid})"
                    ));
                };
                if !files {
                    return Page::Unavailable(format!(
                        "untouched page of a file mapping, not read (image CRID {crid})"
                    ));
                }
                match file_page(fo, ps, &vma) {
                    Ok(b) => Page::Bytes(b.into()),
                    Err(m) => Page::Unavailable(format!("{m} (image CRID {crid})")),
                }
            }
            raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL => Page::Unavailable(format!(
                "in the {} area, which images record but do not copy",
                vma_kind_name(vma.kind())
            )),
            _ => Page::Zero,
        },
        Err(_) => Page::Unavailable("not in any VMA of the image".into()),
    }
}

/// One page of a mapped file at file offset `offset`, if the file is still the one the image
/// recorded; past the file's end, zeros.
fn file_page(offset: u64, ps: u64, vma: &Vma<'_>) -> std::result::Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(usize::try_from(ps).unwrap_or(0));
    let addr = vma
        .start()
        .saturating_add(offset.saturating_sub(vma.raw.offset.get()));
    let (_, stopped) = file_range(vma, addr, ps, &mut |b| {
        buf.extend_from_slice(b);
        Ok(())
    });
    if let Some(e) = stopped {
        return Err(e.text());
    }
    buf.resize(usize::try_from(ps).unwrap_or(0), 0);
    Ok(buf)
}

/// Why [`file_range`] stopped early.
#[derive(Debug)]
pub enum RangeError {
    /// The file cannot be read, or is no longer the one the image recorded.
    Unavailable(String),
    /// The bytes' destination failed.
    Sink(String),
}

impl RangeError {
    /// The message.
    pub fn text(self) -> String {
        match self {
            RangeError::Unavailable(m) | RangeError::Sink(m) => m,
        }
    }
}

/// Opens the file a file mapping maps, if it is still the one the image recorded (inode, size,
/// mtime): never through a symlink (the paths of `/proc/PID/maps` have none), never blocking
/// (a FIFO planted at the name would hang the open), and only a regular file.
fn open_mapped(vma: &Vma<'_>) -> std::result::Result<File, String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let p = Path::new(std::ffi::OsStr::from_bytes(vma.path));
    let f = crate::sys::open_regular(p, crate::sys::Access::Read)
        .map_err(|e| format!("untouched page of {}: {e}", p.display()))?;
    // `open_regular` refused anything but a regular file.
    let md = f.metadata().map_err(|e| format!("{}: {e}", p.display()))?;
    let mtime = (md.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(md.mtime_nsec() as u64);
    if md.ino() != vma.raw.inode.get()
        || md.size() != vma.raw.file_size.get()
        || mtime != vma.raw.file_mtime_ns.get()
    {
        return Err(format!(
            "untouched page of {}, which changed since the checkpoint (inode, size or mtime)",
            p.display()
        ));
    }
    Ok(f)
}

/// Hands `put` the bytes of the file mapped by `vma` for the `len` bytes of memory at `addr`
/// (inside `vma`), up to the file's end (past it a mapping reads zeros: the caller's), a MiB at
/// a time. Returns how many bytes `put` got and, if it stopped before the file's end or `len`,
/// why. What is read is bounded by the file's size, whatever the VMA's.
pub fn file_range(
    vma: &Vma<'_>,
    addr: u64,
    len: u64,
    put: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> (u64, Option<RangeError>) {
    use std::os::unix::fs::FileExt;
    // The offset is the image's (page-aligned, otherwise any value): it may not fit in 64 bits.
    let Some(fo) = vma
        .raw
        .offset
        .get()
        .checked_add(addr.saturating_sub(vma.start()))
    else {
        return (
            0,
            Some(RangeError::Unavailable(
                "untouched page of a file mapping past file offset 2^64".into(),
            )),
        );
    };
    let f = match open_mapped(vma) {
        Ok(f) => f,
        Err(m) => return (0, Some(RangeError::Unavailable(m))),
    };
    let want = vma.raw.file_size.get().saturating_sub(fo).min(len);
    let mut buf = vec![0u8; usize::try_from(want.min(1 << 20)).unwrap_or(1 << 20)];
    let mut done = 0u64;
    while done < want {
        // Both below the buffer's length.
        let k = (want - done).min(buf.len() as u64) as usize;
        match f.read_at(&mut buf[..k], fo + done) {
            Ok(0) => break,
            Ok(r) => {
                if let Err(e) = put(&buf[..r]) {
                    return (done, Some(RangeError::Sink(e.to_string())));
                }
                done += r as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let p = String::from_utf8_lossy(vma.path).into_owned();
                return (done, Some(RangeError::Unavailable(format!("{p}: {e}"))));
            }
        }
    }
    (done, None)
}

/// A classic hexdump of `bytes` as if they sat at `addr`.
pub fn hexdump(addr: u64, bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(s, "{:016x}  ", addr + 16 * i as u64);
        for j in 0..16 {
            match line.get(j) {
                Some(b) => {
                    let _ = write!(s, "{b:02x} ");
                }
                None => s.push_str("   "),
            }
            if j == 7 {
                s.push(' ');
            }
        }
        s.push_str(" |");
        s.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        s.push_str("|\n");
    }
    s
}
