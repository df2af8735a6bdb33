//! Image files: written unnamed (`O_TMPFILE`) in the output directory, mode 0600, and given the
//! name `DIR/NAME.img.CRID` only when complete (`linkat`). A failure, even a SIGKILL of the
//! dumper, then leaves nothing behind. Where the file system has no `O_TMPFILE`, the image is
//! written to a temporary name `DIR/.NAME.img.tmp.PID.N` and renamed when complete; dropping an
//! uncommitted [`TempImage`] removes that file (the checkpoint unwinds on SIGINT, SIGTERM and
//! SIGHUP, so it is dropped then). A file already at the final name is never replaced.
//!
//! Other outputs ([`write_atomic`]) are written the same way; they replace a file at their
//! name by a rename, which never follows a symlink there.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The final file name of an image.
pub fn image_name(name: &str, crid: u64) -> String {
    format!("{name}.img.{crid}")
}

/// Checks an image NAME: non-empty, no `/`, no NUL, not `.` or `..`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Other(format!(
            "bad image name {name:?}: it must be a file name (no '/')"
        )));
    }
    Ok(())
}

/// A temporary image file in its final directory.
#[derive(Debug)]
pub struct TempImage {
    dir: PathBuf,
    name: String,
    /// The temporary name; empty for an unnamed (`O_TMPFILE`) file.
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// Blocks were reserved ([`TempImage::preallocate`]).
    preallocated: bool,
}

impl TempImage {
    /// Creates an unnamed image file in `dir` (or `DIR/.NAME.img.tmp.PID.N`, exclusive, mode
    /// 0600, where the file system has no `O_TMPFILE`).
    pub fn create(dir: &Path, name: &str) -> Result<TempImage> {
        check_name(name)?;
        // A missing last component is created (mode 0700), as `mkdir` would; a missing parent
        // is an error.
        if !dir.exists() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("output directory {}", dir.display()), e))?;
        }
        let md = fs::metadata(dir)
            .map_err(|e| Error::io(format!("output directory {}", dir.display()), e))?;
        if !md.is_dir() {
            return Err(Error::Other(format!(
                "output directory {}: not a directory",
                dir.display()
            )));
        }
        let (path, f) = match unnamed_in(dir, "an image file")? {
            Some(f) => (PathBuf::new(), f),
            None => named_in(dir, &format!("{name}.img"))?,
        };
        Ok(TempImage {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            path,
            file: Some(BufWriter::with_capacity(1 << 20, f)),
            preallocated: false,
        })
    }

    /// The next CRID ([`crate::crid::next`]) whose final name `DIR/NAME.img.CRID` is free: a
    /// file planted at the name costs a CRID, not the checkpoint. Drawn before the capture,
    /// because the CRID is inside the image; a file planted at the name during the capture
    /// still fails [`TempImage::commit`] (it never overwrites).
    pub fn next_crid(&self) -> Result<u64> {
        for _ in 0..1000 {
            let crid = crate::crid::next()?;
            let dst = self.dir.join(image_name(&self.name, crid));
            match fs::symlink_metadata(&dst) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(crid),
                Err(e) => return Err(Error::io(format!("checking {}", dst.display()), e)),
                Ok(_) => {}
            }
        }
        Err(Error::Other(format!(
            "1000 CRIDs in a row are taken by files {}/{}.img.* ",
            self.dir.display(),
            self.name
        )))
    }

    /// The temporary path (`None` for an unnamed file).
    pub fn path(&self) -> Option<&Path> {
        (!self.path.as_os_str().is_empty()).then_some(self.path.as_path())
    }

    /// A duplicate of the file's descriptor (sharing its offset), if it is open.
    pub fn file_clone(&self) -> Option<File> {
        self.file
            .as_ref()
            .and_then(|f| f.get_ref().try_clone().ok())
    }

    /// Reserves blocks for about `bytes` of image (best effort: a file system that cannot is
    /// written as it is). Writing into reserved blocks costs less CPU (ext4, 1 GiB: 0.30 s of
    /// `splice` instead of 0.35-0.42, BENCHMARKS.md); what is not used is given back at
    /// [`TempImage::commit`]. `bytes` may be far more than the image takes (pages that read as
    /// zero are counted), so nothing is reserved past half the free space, lest other writers
    /// on the file system find it full meanwhile; a reservation that fails is given back at
    /// once (a file system may have reserved a part).
    pub fn preallocate(&mut self, bytes: u64) {
        let Some(f) = &self.file else { return };
        let f = f.get_ref();
        let room = crate::sys::fs::available_bytes(f).unwrap_or(0);
        if bytes > room / 2 {
            return;
        }
        self.preallocated = true;
        if crate::sys::fs::preallocate(f, bytes).is_err() {
            if let Ok(md) = f.metadata() {
                let _ = f.set_len(md.len());
            }
            self.preallocated = false;
        }
    }

    /// The writer.
    pub fn writer(&mut self) -> impl Write + '_ {
        WriteRef(self.file.as_mut())
    }

    /// Flushes, optionally syncs, and names the file `DIR/NAME.img.CRID`, never replacing a
    /// file there (`EEXIST`); returns the final path.
    pub fn commit(mut self, crid: u64, sync: bool) -> Result<PathBuf> {
        let f = self
            .file
            .take()
            .ok_or_else(|| Error::Other("image file already closed".into()))?;
        let f = f
            .into_inner()
            .map_err(|e| Error::io("writing the image", e.into_error()))?;
        if self.preallocated {
            // Gives back the reserved blocks past the end (ext4 truncates them even when the
            // size does not change).
            let len = f
                .metadata()
                .map_err(|e| Error::io("reading the image's size", e))?
                .len();
            f.set_len(len)
                .map_err(|e| Error::io("giving back the image's unused blocks", e))?;
        }
        if sync {
            f.sync_all()
                .map_err(|e| Error::io("syncing the image", e))?;
        }
        let dst = self.dir.join(image_name(&self.name, crid));
        if self.path.as_os_str().is_empty() {
            crate::sys::link_tmpfile(&f, &dst)
                .map_err(|e| Error::io(format!("naming the image {}", dst.display()), e))?;
            return Ok(dst);
        }
        drop(f);
        crate::sys::rename_noreplace(&self.path, &dst)
            .map_err(|e| Error::io(format!("renaming the image to {}", dst.display()), e))?;
        self.path = PathBuf::new();
        Ok(dst)
    }
}

struct WriteRef<'a>(Option<&'a mut BufWriter<File>>);

impl Write for WriteRef<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("image file closed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        self.file = None;
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Opens an unnamed file (`O_TMPFILE`, mode 0600) in `dir`; `None` where the file system has
/// none.
fn unnamed_in(dir: &Path, what: &str) -> Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .mode(0o600)
        .open(dir)
    {
        Ok(f) => {
            f.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(|e| {
                    Error::io(
                        format!("setting the mode of a file in {}", dir.display()),
                        e,
                    )
                })?;
            Ok(Some(f))
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::io(
            format!("creating {what} in {}", dir.display()),
            e,
        )),
    }
}

/// Creates `DIR/.NAME.tmp.PID.N` exclusively (mode 0600; `O_EXCL` follows no symlink).
fn named_in(dir: &Path, name: &str) -> Result<(PathBuf, File)> {
    let mut n = 0u32;
    loop {
        let path = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                f.set_permissions(fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))?;
                return Ok((path, f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
        }
    }
}

/// Whether a name in a directory is a temporary file of [`write_atomic`]/[`replace_file`]
/// (`.NAME.tmp.PID.N`) whose writer no longer runs: what a SIGKILL between naming and renaming
/// could leave.
pub fn is_stale_temp(file_name: &str, prefix: &str) -> bool {
    let Some(rest) = file_name.strip_prefix(prefix) else {
        return false;
    };
    let Some((_, tail)) = rest.rsplit_once(".tmp.") else {
        return false;
    };
    let Some(pid) = tail.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
        return false;
    };
    pid > 0
        && pid != std::process::id() as i32
        && crate::sys::kill(pid, 0)
            .err()
            .and_then(|e| e.raw_os_error())
            == Some(libc::ESRCH)
}

/// Removes `DIR/.NAME.tmp.PID.N` files whose writer is dead: a SIGKILL between the link of a
/// temporary name and the rename over an existing `dst` leaves one (no signal handler runs for
/// SIGKILL), and the next write of the same name takes it away.
fn sweep_stale(dir: &Path, name: &str) {
    let prefix = format!(".{name}");
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let f = e.file_name();
        if f.to_str().is_some_and(|n| is_stale_temp(n, &prefix)) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Writes a file (a core file, an encoded image, extracted bytes, a pid file) as a whole:
/// unnamed (`O_TMPFILE`, mode 0600) beside `dst`, named `dst` only when `write` succeeded.
/// `dst` is replaced, never opened: a symlink or FIFO there is replaced, not followed. A
/// failure or a signal leaves no file: where a temporary name is needed (no `O_TMPFILE`, or
/// `dst` exists and is replaced by a rename), SIGINT, SIGTERM and SIGHUP remove it first.
/// The writer can seek (a core file leaves holes).
pub fn write_atomic<T>(
    dst: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<T> {
    write_file(dst, true, write)
}

/// [`write_atomic`] without signal handlers, for a small file written while the caller
/// handles signals itself (the tracking state of a checkpoint): the only window in which a
/// temporary name exists is between a `linkat` and a `rename`; [`is_stale_temp`] finds what a
/// SIGKILL there leaves.
pub fn replace_file(dst: &Path, bytes: &[u8]) -> Result<()> {
    write_file(dst, false, |w| {
        w.write_all(bytes)
            .map_err(|e| Error::io(format!("writing {}", dst.display()), e))
    })
}

fn write_file<T>(
    dst: &Path,
    on_signal: bool,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<T> {
    let dir = match dst.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    sweep_stale(dir, name);
    let mut guard = None;
    let (named, file) = match unnamed_in(dir, "a file")? {
        Some(f) => (None, f),
        None => {
            let (p, f) = named_in(dir, name)?;
            if on_signal {
                guard = Some(
                    crate::sys::RemoveOnSignal::new(&p)
                        .map_err(|e| Error::io("installing signal handlers", e))?,
                );
            }
            (Some(p), f)
        }
    };
    // Removes the named temporary file on every early return.
    struct Remove(Option<PathBuf>);
    impl Drop for Remove {
        fn drop(&mut self) {
            if let Some(p) = &self.0 {
                let _ = fs::remove_file(p);
            }
        }
    }
    let mut tmp = Remove(named);
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let v = write(&mut w)?;
    let file = w
        .into_inner()
        .map_err(|e| Error::io(format!("writing {}", dst.display()), e.into_error()))?;
    let src = match tmp.0.clone() {
        Some(p) => p,
        None => match crate::sys::link_tmpfile(&file, dst) {
            Ok(()) => return Ok(v),
            // `dst` exists: name the file beside it, then rename over it.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let mut n = 0u32;
                loop {
                    let p = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
                    // Recorded before the link: a signal right after it removes the name.
                    if on_signal {
                        // The old guard first: its drop puts back the actions it replaced.
                        drop(guard.take());
                        guard = Some(
                            crate::sys::RemoveOnSignal::new(&p)
                                .map_err(|e| Error::io("installing signal handlers", e))?,
                        );
                    }
                    match crate::sys::link_tmpfile(&file, &p) {
                        Ok(()) => {
                            tmp.0 = Some(p.clone());
                            break p;
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) && n < 1000 => n += 1,
                        Err(e) => return Err(Error::io(format!("naming {}", p.display()), e)),
                    }
                }
            }
            Err(e) => return Err(Error::io(format!("naming {}", dst.display()), e)),
        },
    };
    drop(file);
    fs::rename(&src, dst).map_err(|e| Error::io(format!("renaming to {}", dst.display()), e))?;
    tmp.0 = None;
    drop(guard);
    Ok(v)
}
