//! Image files: written unnamed (`O_TMPFILE`) in the output directory, mode 0600, and given the
//! name `DIR/NAME.img.CRID` only when complete (`linkat`). A failure, even a SIGKILL of the
//! dumper, then leaves nothing behind. Where the file system has no `O_TMPFILE`, the image is
//! written to a temporary name `DIR/.NAME.img.tmp.PID.N` and renamed when complete; dropping an
//! uncommitted [`TempImage`] removes that file.

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
}

impl TempImage {
    /// Creates `DIR/.NAME.img.tmp.PID.N` (exclusive, mode 0600).
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
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir)
        {
            Ok(f) => {
                f.set_permissions(fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io("setting the image's mode", e))?;
                return Ok(TempImage {
                    dir: dir.to_path_buf(),
                    name: name.to_string(),
                    path: PathBuf::new(),
                    file: Some(BufWriter::with_capacity(1 << 20, f)),
                });
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
                ) => {}
            Err(e) => {
                return Err(Error::io(
                    format!("creating an image file in {}", dir.display()),
                    e,
                ))
            }
        }
        let mut n = 0u32;
        loop {
            let path = dir.join(format!(".{name}.img.tmp.{}.{n}", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => {
                    let t = TempImage {
                        dir: dir.to_path_buf(),
                        name: name.to_string(),
                        path,
                        file: Some(BufWriter::with_capacity(1 << 20, f)),
                    };
                    if let Some(f) = &t.file {
                        f.get_ref()
                            .set_permissions(fs::Permissions::from_mode(0o600))
                            .map_err(|e| Error::io("setting the image's mode", e))?;
                    }
                    return Ok(t);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => {
                    return Err(Error::io(
                        format!("creating an image file in {}", dir.display()),
                        e,
                    ))
                }
            }
        }
    }

    /// The temporary path (`None` for an unnamed file).
    pub fn path(&self) -> Option<&Path> {
        (!self.path.as_os_str().is_empty()).then_some(self.path.as_path())
    }

    /// The writer.
    pub fn writer(&mut self) -> impl Write + '_ {
        WriteRef(self.file.as_mut())
    }

    /// Flushes, optionally syncs, and renames to `DIR/NAME.img.CRID`; returns the final path.
    pub fn commit(mut self, crid: u64, sync: bool) -> Result<PathBuf> {
        let f = self
            .file
            .take()
            .ok_or_else(|| Error::Other("image file already closed".into()))?;
        let f = f
            .into_inner()
            .map_err(|e| Error::io("writing the image", e.into_error()))?;
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
        fs::rename(&self.path, &dst)
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

/// Writes a file (a core file, an encoded image, extracted bytes) to a temporary name beside
/// `dst`, mode 0600, and renames it to `dst` only when `write` succeeded; on failure nothing is
/// left behind.
pub fn write_atomic<T>(
    dst: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<T> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match dst.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let r = write(&mut w).and_then(|v| {
        w.flush()
            .map_err(|e| Error::io(format!("writing {}", dst.display()), e))?;
        fs::rename(&tmp, dst)
            .map_err(|e| Error::io(format!("renaming to {}", dst.display()), e))?;
        Ok(v)
    });
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}
