//! `extract`: the task's memory as an image chain holds it, page by page.

use super::chain::{with_chain, Parse};
use super::show::vma_kind_name;
use crate::error::{Error, Result};
use cr_format::chain::{ChainIndex, Resolved};
use cr_format::raw;
use std::path::Path;

/// Reads `len` bytes of the task's memory at `addr` as the image chain holds them: data pages
/// from the images, zero for zero and untouched anonymous pages, the mapped file's bytes for
/// untouched pages of a file mapping (refused if the file changed since the checkpoint).
pub fn extract(path: &Path, addr: u64, len: u64) -> Result<Vec<u8>> {
    with_chain(path, Parse::Full, |chain| {
        read_range(chain.index(), chain.page_size(), addr, len)
    })
}

/// [`extract`] over an indexed chain with pages of `ps` bytes.
fn read_range(idx: &ChainIndex<'_>, ps: u64, addr: u64, len: u64) -> Result<Vec<u8>> {
    let end = addr
        .checked_add(len)
        .ok_or_else(|| Error::Other(format!("range {addr:#x}+{len:#x} overflows")))?;
    let cap = usize::try_from(len).map_err(|_| Error::Other("length too large".into()))?;
    let mut out = Vec::with_capacity(cap.min(1 << 30));
    let mut a = addr;
    while a < end {
        let page = a & !(ps - 1);
        // Both below one page, so they fit in usize.
        let off = (a - page) as usize;
        // Saturating: the last page of the address space ends at 2^64.
        let n = (page.saturating_add(ps).min(end) - a) as usize;
        match page_content(idx, page, ps) {
            Page::Bytes(b) => {
                let part = b.get(off..off + n).ok_or_else(|| {
                    Error::Other(format!("address {a:#x}: the page holds {} bytes", b.len()))
                })?;
                out.extend_from_slice(part);
            }
            Page::Zero => out.resize(out.len() + n, 0),
            Page::Unavailable(why) => return Err(Error::Other(format!("address {a:#x}: {why}"))),
        }
        a += n as u64;
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
                match file_page(vma.path, fo, ps, &vma) {
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

/// One page of a mapped file, if the file is still the one the image recorded.
fn file_page(
    path: &[u8],
    offset: u64,
    ps: u64,
    vma: &cr_format::read::Vma<'_>,
) -> std::result::Result<Vec<u8>, String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileExt, MetadataExt};
    let p = Path::new(std::ffi::OsStr::from_bytes(path));
    let f = crate::sys::open_regular(p, crate::sys::Access::Read)
        .map_err(|e| format!("untouched page of {}: {e}", p.display()))?;
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
    let mut buf = vec![0u8; ps as usize];
    // Past the end of the file a mapping reads zeros.
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    Ok(buf)
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
