//! [`checkpoint_self`]: the seed's fork-like contract (the checkpointed task sees its CRID, the
//! restarted one sees 0).

use super::other;
use crate::error::{Error, Result};
use crate::procfs;
use crate::sys;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Where the helper of [`checkpoint_self`] writes the CRID, after the capture (so images hold 0).
static SELF_CRID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Self-checkpoint: the calling process (which must be single-threaded) checkpoints itself
/// into `dir` as `dir/NAME.img.CRID` and returns the CRID (> 0); a task restored from that image
/// returns from the same call with 0. Errors are failures of the checkpoint.
///
/// How: the caller forks a helper and waits for it in `waitpid`. The helper checkpoints the
/// caller (frozen inside that `waitpid`, in direct mode, so it stays frozen until the image is
/// written and named), then writes the CRID into a static of the caller through
/// `/proc/PID/mem`, after the capture, and exits. The original's `waitpid` returns the
/// helper's status and finds the CRID. A restored task restarts the interrupted `waitpid`
/// (see the module docs), which fails with `ECHILD` (the restored task has no children), and
/// finds 0 in the static: it was restarted.
pub fn checkpoint_self(dir: &Path, name: &str) -> Result<u64> {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    crate::output::check_name(name)?;
    SELF_CRID.store(0, Ordering::SeqCst);
    let me = i32::try_from(std::process::id()).map_err(|_| other("our pid does not fit an i32"))?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let helper = sys::fork_single_threaded().map_err(|e| Error::io("self-checkpoint: fork", e))?;
    if helper == 0 {
        let addr = std::ptr::addr_of!(SELF_CRID) as u64;
        let code = match self_helper(me, dir, name, addr) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cr-dump: self-checkpoint: {e}");
                1
            }
        };
        sys::exit_now(code);
    }
    let st = sys::waitpid(helper);
    let crid = SELF_CRID.load(Ordering::SeqCst);
    match st {
        Ok(sys::WaitStatus::Exited(0)) if crid > 0 => Ok(crid),
        Ok(s) => Err(other(format!(
            "self-checkpoint: the helper (pid {helper}) failed: {s:?}"
        ))),
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) && crid == 0 => Ok(0),
        Err(e) => Err(Error::io("self-checkpoint: waitpid", e)),
    }
}

/// The helper of [`checkpoint_self`], in the forked child.
fn self_helper(pid: i32, dir: &Path, name: &str, addr: u64) -> Result<()> {
    // Wait (a little) for the caller to be inside wait4 (61), so that the image shows it there.
    for _ in 0..500 {
        let s = procfs::read(pid, "syscall").unwrap_or_default();
        if s.starts_with(b"61 ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let ins = crate::capture::inspect(pid)?;
    let mut tmp = crate::output::TempImage::create(dir, name)?;
    let crid = tmp.next_crid()?;
    let opts = crate::capture::Options {
        after: crate::capture::After::Continue,
        lazy: crate::capture::LazyMode::Auto,
        state: Default::default(),
    };
    crate::capture::checkpoint_direct(&ins, crid, &opts, tmp.writer())?;
    tmp.commit(crid, false)?;
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(procfs::path(pid, "mem"))
        .map_err(|e| procfs::proc_err(pid, "mem", e))?;
    mem.write_all_at(&crid.to_le_bytes(), addr)
        .map_err(|e| Error::io("self-checkpoint: writing the CRID into the caller", e))
}
