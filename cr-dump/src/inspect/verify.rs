//! Inspection verbs over image files: verify (one image streamed with bounded memory, or a
//! whole chain), extract (memory through the chain). Images of a chain are found next to each
//! other by name, `NAME.img.CRID`, and mapped rather than read, so only the metadata they walk
//! is paged in.

use crate::error::{Error, Result};
use cr_format::chain::{Chain, ChainIndex, Resolved};
use cr_format::raw;
use cr_format::read::{Image, Options, Record, RecordKind, RunKind, StreamReader};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// An image file mapped read-only.
pub struct Mapped {
    /// Where it is.
    pub path: PathBuf,
    map: crate::sys::FileMap,
}

impl Mapped {
    /// Maps `path`.
    pub fn open(path: &Path) -> Result<Mapped> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let map = crate::sys::FileMap::new(&file)
            .map_err(|e| Error::io(format!("map {}", path.display()), e))?;
        Ok(Mapped {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }
}

/// `DIR/NAME.img.CRID` → `DIR/NAME.img.OTHER`.
pub fn sibling(path: &Path, crid: u64) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let (stem, _) = name.rsplit_once(".img.")?;
    Some(path.with_file_name(format!("{stem}.img.{crid}")))
}

/// Maps an image and its ancestors, newest first, following each Header's parent CRID to the
/// file of that CRID beside it. Stops at a full image, a missing file, or the depth limit.
pub fn load_chain(path: &Path) -> Result<Vec<Mapped>> {
    let mut out = vec![Mapped::open(path)?];
    loop {
        let last = out
            .last()
            .map(|m| (m.path.clone(), Image::parse_metadata(m.bytes())));
        let Some((p, parsed)) = last else { break };
        let img = parsed.map_err(|e| image_error(&p, e, None))?;
        let parent = img.parent_crid();
        if parent == 0 || out.len() > cr_format::limits::MAX_CHAIN_DEPTH as usize {
            break;
        }
        let Some(pp) = sibling(&p, parent) else {
            return Err(Error::Other(format!(
                "{}: parent image CRID {parent} cannot be found: the file name is not NAME.img.CRID",
                p.display()
            )));
        };
        if !pp.exists() {
            return Err(Error::Other(format!(
                "{}: parent image CRID {parent} is missing (expected {})",
                p.display(),
                pp.display()
            )));
        }
        out.push(Mapped::open(&pp)?);
    }
    Ok(out)
}

/// An image error with the file, offset and record kind.
pub fn image_error(path: &Path, e: cr_format::Error, kind: Option<RecordKind>) -> Error {
    let kind = match kind {
        Some(RecordKind::Unknown(k)) => format!(" (record kind {k})"),
        Some(k) => format!(" ({k:?} record)"),
        None => String::new(),
    };
    Error::Other(format!("{}: {e}{kind}", path.display()))
}

/// What verify found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Images checked, newest first: (path, CRID, parent CRID, records, bytes).
    pub images: Vec<ImageReport>,
    /// Parent references resolved through the chain (with `--chain`).
    pub parent_pages_checked: u64,
    /// Every problem found (with `--all`; without it the first one is an error instead).
    pub problems: Vec<String>,
}

/// One verified image.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ImageReport {
    /// File (or `-`).
    pub path: String,
    /// CRID.
    pub crid: u64,
    /// Parent CRID (0: full image).
    pub parent_crid: u64,
    /// Records before the tail.
    pub records: u64,
    /// Image length.
    pub bytes: u64,
    /// Tail digest.
    pub digest: String,
    /// Pages stored with data, zero, in the parent.
    pub pages: [u64; 3],
}

/// Streams one image through every check with bounded memory (one record at a time).
pub fn verify_stream(r: impl Read, name: &str) -> Result<ImageReport> {
    let (rep, errors) = check_stream(r, name, false);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(rep),
    }
}

/// Streams one image through every check; with `all`, goes on past a failed record (see
/// `Parser::resync`) and returns every problem found, else stops at the first.
pub fn check_stream(r: impl Read, name: &str, all: bool) -> (ImageReport, Vec<Error>) {
    let mut rep = ImageReport {
        path: name.to_string(),
        ..Default::default()
    };
    let mut errors = Vec::new();
    let mut s = StreamReader::new(r, Options::default());
    loop {
        let res = s.for_each(|p| match p.record {
            Record::Header(h) => {
                rep.crid = h.crid.get();
                rep.parent_crid = h.parent_crid.get();
            }
            Record::Pages(pg) => {
                for run in pg.iter() {
                    let i = match run.kind {
                        RunKind::Data => 0,
                        RunKind::Zero => 1,
                        RunKind::Parent => 2,
                    };
                    rep.pages[i] += u64::from(run.pages);
                }
            }
            Record::Tail(t) => {
                rep.records = t.record_count.get();
                rep.bytes = t.image_len.get();
                rep.digest = format!("{:#018x}", t.digest.get());
            }
            _ => {}
        });
        let Err(e) = res else { break };
        if let Some(io) = s.io_error() {
            errors.push(Error::Other(format!("{name}: read error: {io}")));
            break;
        }
        errors.push(image_error(Path::new(name), e, s.record_kind()));
        if !all || !s.resync() {
            break;
        }
    }
    (rep, errors)
}

/// Verifies one image read from `r` (`verify -`, and `verify IMAGE` without `--chain`); `name`
/// names it in messages. Without `all` the first problem is the error; with it, every problem
/// goes into `Report::problems`.
pub fn verify_reader(r: impl Read, name: &str, all: bool) -> Result<Report> {
    let mut report = Report::default();
    check_into(&mut report, r, name, all)?;
    Ok(report)
}

/// Checks one image into `report`: see [`verify_reader`].
fn check_into(report: &mut Report, r: impl Read, name: &str, all: bool) -> Result<()> {
    let (rep, errors) = check_stream(r, name, all);
    report.images.push(rep);
    let mut errors = errors.into_iter();
    if !all {
        return errors.next().map_or(Ok(()), Err);
    }
    report.problems.extend(errors.map(|e| e.to_string()));
    Ok(())
}

/// Verifies an image file; with `chain`, also its ancestors (found beside it), every link, and
/// every "parent" page's resolution. With `all`, every problem goes into `Report::problems`
/// instead of ending the check at the first.
pub fn verify(path: &Path, chain: bool, all: bool) -> Result<Report> {
    let open = |p: &Path| File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e));
    let mut report = Report::default();
    let check = |report: &mut Report, p: &Path| -> Result<()> {
        // The stream reader buffers itself (one record at a time): no BufReader, no extra copy.
        check_into(report, open(p)?, &p.display().to_string(), all)
    };
    check(&mut report, path)?;
    if !chain {
        return Ok(report);
    }
    let maps = match load_chain(path) {
        Ok(m) => m,
        Err(e) if all => {
            report.problems.push(e.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    for m in maps.iter().skip(1) {
        check(&mut report, &m.path)?;
    }
    let linked = (|| {
        let images = maps
            .iter()
            .map(|m| Image::parse_metadata(m.bytes()).map_err(|e| image_error(&m.path, e, None)))
            .collect::<Result<Vec<_>>>()?;
        let c = Chain::new(&images).map_err(|e| image_error(&path_of(&maps, &e), e, None))?;
        ChainIndex::new(&c)
            .check_parent_refs()
            .map_err(|e| image_error(path, e, None))
    })();
    match linked {
        Ok(n) => report.parent_pages_checked = n,
        Err(e) if all => report.problems.push(e.to_string()),
        Err(e) => return Err(e),
    }
    Ok(report)
}

fn path_of(maps: &[Mapped], _e: &cr_format::Error) -> PathBuf {
    maps.first().map(|m| m.path.clone()).unwrap_or_default()
}

/// Reads `len` bytes of the task's memory at `addr` as the image chain holds them: data pages
/// from the images, zero for zero and untouched anonymous pages, the mapped file's bytes for
/// untouched pages of a file mapping (refused if the file changed since the checkpoint).
pub fn extract(path: &Path, addr: u64, len: u64) -> Result<Vec<u8>> {
    let maps = load_chain(path)?;
    let images = maps
        .iter()
        .map(|m| Image::parse(m.bytes()).map_err(|e| image_error(&m.path, e, None)))
        .collect::<Result<Vec<_>>>()?;
    let chain = Chain::new(&images).map_err(|e| image_error(path, e, None))?;
    let idx = ChainIndex::new(&chain);
    let ps = u64::from(images[0].page_size());
    let end = addr
        .checked_add(len)
        .ok_or_else(|| Error::Other(format!("range {addr:#x}+{len:#x} overflows")))?;
    let cap = usize::try_from(len).map_err(|_| Error::Other("length too large".into()))?;
    let mut out = Vec::with_capacity(cap.min(1 << 30));
    let mut a = addr;
    while a < end {
        let page = a & !(ps - 1);
        let off = (a - page) as usize;
        // Saturating: the last page of the address space ends at 2^64.
        let n = (page.saturating_add(ps).min(end) - a) as usize;
        match page_content(&idx, page, ps) {
            Page::Bytes(b) => out.extend_from_slice(&b[off..off + n]),
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
                crate::show::vma_kind_name(vma.kind())
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
    let f = File::open(p).map_err(|e| format!("untouched page of {}: {e}", p.display()))?;
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
