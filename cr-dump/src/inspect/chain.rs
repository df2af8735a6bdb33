//! Image files and the chains they form: an image is `NAME.img.CRID`, its parent the file of the
//! parent CRID beside it. Files are mapped rather than read, so only what is walked is paged in.
//!
//! [`ChainFiles`] owns the mapped files; [`ChainFiles::parse`] gives a [`LoadedChain`] that
//! borrows them: the parsed images, their links checked, and the index that resolves a page
//! through them. This is the one place that reads, parses and links a chain, and the one place
//! that names the file an error is about.

use crate::error::{Error, Result};
use cr_format::chain::{Chain, ChainIndex};
use cr_format::read::{Image, RecordKind};
use std::fs::File;
use std::path::{Path, PathBuf};

/// An image file mapped read-only (or standard input, read into memory).
pub struct Mapped {
    /// Where it is (`-` for standard input).
    pub path: PathBuf,
    bytes: Bytes,
}

enum Bytes {
    Map(crate::sys::FileMap),
    Owned(Vec<u8>),
}

/// Whether `path` names standard input: `-`, or `/dev/stdin` and its aliases (file descriptor
/// 0 is read as it is: no path is followed).
pub fn is_stdin(path: &Path) -> bool {
    matches!(
        path.to_str(),
        Some("-" | "/dev/stdin" | "/dev/fd/0" | "/proc/self/fd/0")
    )
}

/// Reads standard input to its end (a pipe cannot be mapped nor seeked).
pub fn read_stdin() -> Result<Vec<u8>> {
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut v)
        .map_err(|e| Error::io("reading the image from standard input".to_string(), e))?;
    Ok(v)
}

impl Mapped {
    /// Maps `path`: a regular file, not reached through a symlink, opened without waiting on a
    /// FIFO ([`crate::sys::open_regular`]); or reads standard input ([`is_stdin`]).
    pub fn open(path: &Path) -> Result<Mapped> {
        if is_stdin(path) {
            return Ok(Mapped {
                path: PathBuf::from("-"),
                bytes: Bytes::Owned(read_stdin()?),
            });
        }
        let file = open_image(path)?;
        let map = crate::sys::FileMap::new(&file)
            .map_err(|e| Error::io(format!("map {}", path.display()), e))?;
        Ok(Mapped {
            path: path.to_path_buf(),
            bytes: Bytes::Map(map),
        })
    }

    /// Lets go of the resident pages of `off..off + len` of a mapped file
    /// ([`crate::sys::FileMap::release`]); nothing for bytes held in memory.
    pub fn release(&self, off: usize, len: usize) {
        if let Bytes::Map(m) = &self.bytes {
            m.release(off, len);
        }
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Map(m) => m.bytes(),
            Bytes::Owned(v) => v,
        }
    }
}

/// Opens an image file by name for reading: a regular file, never through a symlink at the
/// last component, never waiting on a FIFO. Errors name the file.
pub fn open_image(path: &Path) -> Result<File> {
    crate::sys::open_regular(path, crate::sys::Access::Read)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))
}

/// `DIR/NAME.img.CRID` → `DIR/NAME.img.OTHER`.
pub fn sibling(path: &Path, crid: u64) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let (stem, _) = name.rsplit_once(".img.")?;
    Some(path.with_file_name(format!("{stem}.img.{crid}")))
}

/// The file of `child`'s parent CRID `parent`, beside it; an error if it is not there.
pub fn parent_path(child: &Path, parent: u64) -> Result<PathBuf> {
    let Some(pp) = sibling(child, parent) else {
        return Err(Error::Other(format!(
            "{}: parent image CRID {parent} cannot be found: the file name is not NAME.img.CRID",
            child.display()
        )));
    };
    // lstat: a symlink or a FIFO is there, not missing; opening it says what it is.
    if std::fs::symlink_metadata(&pp).is_err() {
        return Err(Error::Other(format!(
            "{}: parent image CRID {parent} is missing (expected {})",
            child.display(),
            pp.display()
        )));
    }
    Ok(pp)
}

/// Maps an image and its ancestors, newest first, following each Header's parent CRID to the
/// file of that CRID beside it. Stops at a full image or the depth limit ([`Chain`] then
/// refuses a chain too deep); a missing parent is an error.
///
/// Only each image's Header record is read and checked here (its CRC and fields): the whole
/// image is parsed once, by [`ChainFiles::parse`]. When a parent cannot be found, the child
/// is parsed whole first, so that an image that is damaged is reported as such, as before.
pub fn load_chain(path: &Path) -> Result<Vec<Mapped>> {
    let mut out = vec![Mapped::open(path)?];
    while let Some(last) = out.last() {
        let parent = header_parent(last)?;
        if parent == 0 || out.len() > cr_format::limits::MAX_CHAIN_DEPTH as usize {
            break;
        }
        let whole =
            || Image::parse_metadata(last.bytes()).map_err(|e| image_error(&last.path, e, None));
        if is_stdin(&last.path) {
            whole()?;
            return Err(Error::Other(format!(
                "-: the image read from standard input is incremental (parent CRID {parent}): \
                 its parents are found beside its file, so give the file's name"
            )));
        }
        let next = parent_path(&last.path, parent).and_then(|pp| Mapped::open(&pp));
        match next {
            Ok(m) => out.push(m),
            Err(e) => {
                whole()?;
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// The parent CRID of a mapped image, from its Header record (checked; an error naming the
/// file if it is not a valid Header).
fn header_parent(m: &Mapped) -> Result<u64> {
    let opts = cr_format::read::Options { verify_data: false };
    match cr_format::read::Records::new(m.bytes(), opts).next() {
        Some(Ok(p)) => match p.record {
            cr_format::read::Record::Header(h) => Ok(h.parent_crid.get()),
            // The parser accepts only a Header first.
            _ => Err(Error::Other(format!(
                "{}: no Header record",
                m.path.display()
            ))),
        },
        Some(Err(e)) => Err(image_error(&m.path, e, None)),
        // An empty input: the whole parse says why.
        None => Image::parse_metadata(m.bytes())
            .map(|i| i.parent_crid())
            .map_err(|e| image_error(&m.path, e, None)),
    }
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

/// How much of each image [`ChainFiles::parse`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    /// Everything, page data CRCs included ([`Image::parse`]): for whoever reads page data.
    Full,
    /// Everything but the page data CRCs ([`Image::parse_metadata`]).
    Metadata,
}

/// An image and its ancestors, mapped, newest first.
pub struct ChainFiles {
    files: Vec<Mapped>,
}

impl ChainFiles {
    /// Maps the image at `path` and its ancestors beside it ([`load_chain`]).
    pub fn open(path: &Path) -> Result<ChainFiles> {
        Ok(ChainFiles {
            files: load_chain(path)?,
        })
    }

    /// The files, newest first (never empty).
    pub fn files(&self) -> &[Mapped] {
        &self.files
    }

    /// Parses every image and checks the links between them.
    pub fn parse(&self, how: Parse) -> Result<LoadedChain<'_>> {
        let named: Vec<(&Path, &[u8])> = self
            .files
            .iter()
            .map(|m| (m.path.as_path(), m.bytes()))
            .collect();
        LoadedChain::parse(&named, how)
    }
}

impl ChainFiles {
    /// Parses every image and checks the links between them as [`ChainFiles::parse`] does,
    /// handing each record to `each` (the image's index, newest first, and the record) as it is
    /// validated ([`Image::parse_each`]): one walk over each image for whoever needs every
    /// record. The chain's index is built only when there are parents to resolve pages in (a
    /// full image resolves every page itself); `check_parent_refs` is then run too.
    pub fn parse_each<'a>(
        &'a self,
        how: Parse,
        mut each: impl FnMut(usize, &cr_format::read::Parsed<'a>),
    ) -> Result<(Vec<Image<'a>>, Option<ChainIndex<'a>>)> {
        let named: Vec<(&Path, &[u8])> = self
            .files
            .iter()
            .map(|m| (m.path.as_path(), m.bytes()))
            .collect();
        let opts = cr_format::read::Options {
            verify_data: how == Parse::Full,
        };
        let images = named
            .iter()
            .enumerate()
            .map(|(i, (p, b))| {
                // What the parse has gone past leaves the resident set every so often (it
                // faults in pages around every record header: 1/16 of an image of large
                // Pages records, all mapped by the end without this).
                let mut behind = 0usize;
                let file = self.files.get(i);
                Image::parse_each(b, opts, |r| {
                    let at = usize::try_from(r.offset).unwrap_or(usize::MAX);
                    if let Some(f) = file.filter(|_| at.saturating_sub(behind) >= PARSE_RELEASE) {
                        f.release(behind, at - behind);
                        behind = at;
                    }
                    each(i, r)
                })
                .map_err(|e| image_error(p, e, None))
            })
            .collect::<Result<Vec<_>>>()?;
        let chain = check_links(&named, &images)?;
        if images.len() < 2 {
            return Ok((images, None));
        }
        let index = ChainIndex::new(&chain);
        let top = named.first().map_or(Path::new("-"), |(p, _)| *p);
        index
            .check_parent_refs()
            .map_err(|e| image_error(top, e, None))?;
        Ok((images, Some(index)))
    }
}

/// How much of an image [`ChainFiles::parse_each`] reads before letting go of it.
const PARSE_RELEASE: usize = 64 << 20;

/// The chain of `images` (newest first) with its links checked; an error names the image whose
/// link fails ([`LoadedChain::parse`]).
fn check_links<'c, 'a>(
    named: &[(&Path, &'a [u8])],
    images: &'c [Image<'a>],
) -> Result<Chain<'c, 'a>> {
    Chain::new(images).map_err(|e| {
        let at = wrong_link(images).unwrap_or(0);
        let p = named.get(at).map_or(Path::new("-"), |(p, _)| *p);
        image_error(p, e, None)
    })
}

/// A parsed chain whose links hold, with its index: what the inspection verbs work on.
pub struct LoadedChain<'a> {
    top: Image<'a>,
    images: Vec<Image<'a>>,
    index: ChainIndex<'a>,
}

impl<'a> LoadedChain<'a> {
    /// Parses a chain of `(name, bytes)`, newest first, and checks its links. Errors name the
    /// file they are about: the image that fails to parse, or the child whose link to its
    /// parent fails (the newest one for a chain too deep or without its full image).
    pub fn parse(named: &[(&Path, &'a [u8])], how: Parse) -> Result<LoadedChain<'a>> {
        let images = named
            .iter()
            .map(|(p, b)| {
                match how {
                    Parse::Full => Image::parse(b),
                    Parse::Metadata => Image::parse_metadata(b),
                }
                .map_err(|e| image_error(p, e, None))
            })
            .collect::<Result<Vec<_>>>()?;
        let index = ChainIndex::new(&check_links(named, &images)?);
        // Chain::new refused an empty chain.
        let top = *images
            .first()
            .ok_or_else(|| Error::Other("empty image chain".into()))?;
        Ok(LoadedChain { top, images, index })
    }

    /// The images, newest first (never empty: [`Chain`] refuses an empty chain).
    pub fn images(&self) -> &[Image<'a>] {
        &self.images
    }

    /// The newest image.
    pub fn top(&self) -> &Image<'a> {
        &self.top
    }

    /// The index resolving a page through the chain.
    pub fn index(&self) -> &ChainIndex<'a> {
        &self.index
    }

    /// The page size of every image of the chain.
    pub fn page_size(&self) -> u64 {
        u64::from(self.top().page_size())
    }
}

/// Opens and parses the chain ending at `path` and runs `f` over it.
pub fn with_chain<R>(
    path: &Path,
    how: Parse,
    f: impl FnOnce(&LoadedChain<'_>) -> Result<R>,
) -> Result<R> {
    let files = ChainFiles::open(path)?;
    let chain = files.parse(how)?;
    f(&chain)
}

/// The index of the first image whose link to the next fails.
fn wrong_link(images: &[Image<'_>]) -> Option<usize> {
    images.windows(2).position(|w| match w {
        [c, p] => {
            c.parent_crid() != p.crid()
                || c.header().parent_digest.get() != p.digest()
                || c.page_size() != p.page_size()
        }
        _ => false,
    })
}
