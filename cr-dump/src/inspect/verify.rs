//! `verify` and `chain`: one image streamed through every check with bounded memory, or a whole
//! chain (each image, every link, every "parent" page's resolution).

use super::chain::{image_error, parent_path, ChainFiles, LoadedChain, Parse};
use crate::error::{Error, Result};
use cr_format::read::{Options, Record, RunKind, StreamReader};
use std::io::Read;
use std::path::Path;

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
                    rep.pages[i] = rep.pages[i].saturating_add(u64::from(run.pages));
                }
            }
            Record::Tail(t) => {
                rep.records = t.record_count.get();
                rep.bytes = t.image_len.get();
                rep.digest = super::names::digest(t.digest.get());
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

/// Reports the bytes read through it.
struct Counted<'p, R> {
    inner: R,
    done: u64,
    total: u64,
    progress: super::core::Progress<'p>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done = self.done.saturating_add(n as u64);
        (self.progress)(self.done, self.total.max(self.done));
        Ok(n)
    }
}

/// Verifies an image file; with `chain`, also its ancestors (found beside it), every link, and
/// every "parent" page's resolution. With `all`, every problem goes into `Report::problems`
/// instead of ending the check at the first.
pub fn verify(path: &Path, chain: bool, all: bool) -> Result<Report> {
    verify_with(path, chain, all, &mut |_, _| {})
}

/// [`verify()`], calling `progress(done, total)` with the bytes read of each image file as
/// it goes (a chain: each image from 0 again).
pub fn verify_with(
    path: &Path,
    chain: bool,
    all: bool,
    progress: super::core::Progress<'_>,
) -> Result<Report> {
    let mut report = Report::default();
    let mut check = |report: &mut Report, p: &Path| -> Result<()> {
        let f = super::open_image(p)?;
        let total = f.metadata().map(|m| m.len()).unwrap_or(0);
        let r = Counted {
            inner: f,
            done: 0,
            total,
            progress: &mut *progress,
        };
        // The stream reader buffers itself (one record at a time): no BufReader, no extra copy.
        check_into(report, r, &p.display().to_string(), all)
    };
    check(&mut report, path)?;
    if !chain {
        return Ok(report);
    }
    let files = match ChainFiles::open(path) {
        Ok(f) => f,
        Err(e) if all => {
            report.problems.push(e.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    for m in files.files().iter().skip(1) {
        check(&mut report, &m.path)?;
    }
    let linked = files.parse(Parse::Metadata).and_then(|c| {
        c.index()
            .check_parent_refs()
            .map_err(|e| image_error(path, e, None))
    });
    match linked {
        Ok(n) => report.parent_pages_checked = n,
        Err(e) if all => report.problems.push(e.to_string()),
        Err(e) => return Err(e),
    }
    Ok(report)
}

/// Verifies a mapped chain as [`verify`] with `chain` does (every image's records, CRCs page
/// data included, every link and every "parent" page's resolution) and returns it parsed, for
/// restore: the bytes are checked where they are mapped, once, instead of being read through a
/// second time by the stream reader (that read's copy was a fifth of a 1 GiB restore).
pub fn verify_mapped<'a>(files: &'a ChainFiles, path: &Path) -> Result<LoadedChain<'a>> {
    let chain = files.parse(Parse::Full)?;
    chain
        .index()
        .check_parent_refs()
        .map_err(|e| image_error(path, e, None))?;
    Ok(chain)
}

/// A problem's message as a JSON object (`verify --json`): `message` as printed, and what it
/// names: `path` (the image), `offset` (the byte offset, `offset 0x…` in the message) and
/// `record` (the kind of record, `(Kind record)` at its end), each when the message has it.
pub fn problem_json(message: &str) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    o.insert("message".into(), message.into());
    if let Some((path, _)) = message.split_once(": offset 0x") {
        o.insert("path".into(), path.into());
    }
    let offset = message.split_once("offset 0x").and_then(|(_, rest)| {
        let end = rest
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len());
        u64::from_str_radix(rest.get(..end)?, 16).ok()
    });
    if let Some(off) = offset {
        o.insert("offset".into(), off.into());
    }
    let record = message
        .strip_suffix(" record)")
        .and_then(|m| m.rsplit_once(" ("))
        .map(|(_, k)| k);
    if let Some(k) = record {
        o.insert("record".into(), k.into());
    }
    serde_json::Value::Object(o)
}

/// What `chain` found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ChainReport {
    /// The images found, newest first (each verified on its own).
    pub images: Vec<ImageReport>,
    /// "In the parent" pages resolved through the chain.
    pub parent_pages_checked: u64,
    /// Whether every image and every link holds.
    pub ok: bool,
    /// The first problem, if any.
    pub error: Option<String>,
}

/// Lists the chain ending at `image` (parents found beside it by name), verifying each image
/// and every link. Never fails: a problem is reported in `error`, with the images found up to
/// it.
pub fn chain_report(image: &Path) -> ChainReport {
    let mut rep = ChainReport::default();
    if let Err(e) = walk_chain(image, &mut rep) {
        rep.error = Some(e.to_string());
    } else {
        rep.ok = true;
    }
    rep
}

fn walk_chain(image: &Path, rep: &mut ChainReport) -> Result<()> {
    let open = |p: &Path| super::open_image(p);
    let mut path = image.to_path_buf();
    loop {
        let r = verify_stream(
            std::io::BufReader::with_capacity(1 << 20, open(&path)?),
            &path.display().to_string(),
        )?;
        let parent = r.parent_crid;
        rep.images.push(r);
        if parent == 0 {
            break;
        }
        if rep.images.len() > cr_format::limits::MAX_CHAIN_DEPTH as usize {
            return Err(Error::Other(format!(
                "the chain is longer than {} images",
                cr_format::limits::MAX_CHAIN_DEPTH
            )));
        }
        let pp = parent_path(&path, parent)?;
        path = pp;
    }
    let files = ChainFiles::open(image)?;
    let chain = files.parse(Parse::Metadata)?;
    rep.parent_pages_checked = chain
        .index()
        .check_parent_refs()
        .map_err(|e| image_error(image, e, None))?;
    Ok(())
}
