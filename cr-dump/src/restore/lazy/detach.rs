//! `restore --lazy --detach`: the restore and the fill in a server process of their own.

use super::LazyFill;
use crate::error::{Error, Result};
use crate::restore::other;
use crate::sys;

/// `restore --lazy --detach`: restores from a server process, which serves the task's pages
/// until every one is in, then ends; this process only waits for the task to run and returns
/// its pid and the warnings. The server's standard streams are `/dev/null`; the image must
/// stay until it ends. If the server dies before, the task dies with it (it is the task's
/// tracer, with `PTRACE_O_EXITKILL`).
pub fn serve_detached(
    path: &std::path::Path,
    opts: &crate::restore::Options,
) -> Result<crate::restore::Restored> {
    use std::io::{Read, Write};
    let (rd, wr) = sys::fdobj::pipe(libc::O_CLOEXEC).map_err(|e| Error::io("pipe", e))?;
    let (mut rd, wr) = (std::fs::File::from(rd), std::fs::File::from(wr));
    let pid = sys::fork_single_threaded().map_err(|e| Error::io("fork (lazy server)", e))?;
    if pid == 0 {
        drop(rd);
        let mut wr = wr;
        let code = match crate::restore::restore(path, opts) {
            Ok(r) => {
                let mut msg = format!("ok {}\n", r.pid);
                for w in &r.warnings {
                    msg.push_str(&format!("warning {}\n", w.replace('\n', " ")));
                }
                quiet_stdio();
                let _ = wr.write_all(msg.as_bytes());
                drop(wr);
                match r.lazy.map(LazyFill::serve) {
                    Some(Err(_)) => 1,
                    _ => 0,
                }
            }
            Err(e) => {
                let _ = wr.write_all(format!("error {e}\n").as_bytes());
                1
            }
        };
        sys::exit_now(code);
    }
    drop(wr);
    let mut s = String::new();
    rd.read_to_string(&mut s)
        .map_err(|e| Error::io("reading from the lazy server", e))?;
    let mut out = crate::restore::Restored {
        pid: 0,
        warnings: Vec::new(),
        lazy: None,
    };
    for line in s.lines() {
        if let Some(p) = line.strip_prefix("ok ") {
            out.pid = p.trim().parse().unwrap_or(0);
        } else if let Some(w) = line.strip_prefix("warning ") {
            out.warnings.push(w.to_string());
        } else if let Some(e) = line.strip_prefix("error ") {
            let _ = sys::waitpid(pid);
            return Err(Error::Other(e.to_string()));
        }
    }
    if out.pid == 0 {
        let _ = sys::waitpid(pid);
        return Err(other(format!(
            "the lazy-restore server (pid {pid}) ended without a word"
        )));
    }
    Ok(out)
}

/// Points 0/1/2 at `/dev/null`: the server outlives the command that started it, and must not
/// hold its caller's pipes or terminal open.
fn quiet_stdio() {
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsFd;
        for t in 0..3 {
            let _ = sys::dup_to(f.as_fd(), t);
        }
    }
}
