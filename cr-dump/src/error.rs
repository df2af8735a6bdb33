//! The error type of capture and write-back.

use std::fmt;
use std::io;

/// What went wrong. Every variant prints as one line that says what and why.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No process with this pid.
    NoSuchProcess(i32),
    /// The kernel refused access to the task.
    PermissionDenied {
        /// The target.
        pid: i32,
        /// What was refused.
        what: String,
    },
    /// The task cannot be checkpointed, and why.
    NotCheckpointable {
        /// The target.
        pid: i32,
        /// The precise reason.
        reason: String,
    },
    /// The task exited (or was killed) while it was being captured.
    TargetExited {
        /// The target.
        pid: i32,
        /// How it ended, if known.
        how: String,
    },
    /// A `/proc` file did not parse.
    Proc(String),
    /// An I/O error, with what was being done.
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The image writer refused a record or its sink failed.
    Format(cr_format::Error),
    /// No in-memory checkpoint with this CRID.
    UnknownCrid(u64),
    /// Anything else.
    Other(String),
}

impl Error {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchProcess(pid) => write!(f, "no such process: pid {pid}"),
            Error::PermissionDenied { pid, what } => write!(
                f,
                "permission denied: {what} (pid {pid}); checkpointing needs the ptrace permission \
                 a debugger would need (same uid or CAP_SYS_PTRACE, and a dumpable task)"
            ),
            Error::NotCheckpointable { pid, reason } => {
                write!(f, "pid {pid} cannot be checkpointed: {reason}")
            }
            Error::TargetExited { pid, how } => {
                write!(f, "pid {pid} exited during the checkpoint ({how})")
            }
            Error::Proc(m) => write!(f, "unexpected /proc contents: {m}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Format(e) => write!(f, "image: {e}"),
            Error::UnknownCrid(c) => write!(f, "no in-memory checkpoint with CRID {c}"),
            Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Format(e) => Some(e),
            _ => None,
        }
    }
}

impl From<cr_format::Error> for Error {
    fn from(e: cr_format::Error) -> Self {
        Error::Format(e)
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
