//! The task's state besides memory and registers (FORMAT.md §15 to §19): open files, the
//! working directory and root, signal dispositions and pending signals, timers, limits, groups
//! and per-process attributes. Read while the task is frozen, written after the Mm record, and
//! described item by item in the fidelity report.

use super::options::StateOptions;
use crate::error::{Error, Result};
use cr_format::limits::MAX_FILE_DATA;
use cr_format::raw;
use cr_format::write::{Sink, Writer};
use serde::Serialize;
use zerocopy::little_endian::U32;

/// One File record with its contents.
#[derive(Clone, Debug)]
pub struct FileEntry {
    /// The fixed part (`path_len` and `data_len` are set by the writer).
    pub raw: raw::File,
    /// The path.
    pub path: Vec<u8>,
    /// Type-specific data (an epoll interest list, a socket address).
    pub data: Vec<u8>,
    /// Contents written as FileData records (with `FILE_HAS_DATA`): a deleted file's or a
    /// memfd's bytes, a pipe's unread bytes.
    pub contents: Vec<u8>,
}

/// One inotify fd with its watches, each with its path (FORMAT.md §21, §22).
pub type InotifyEntry = (raw::Inotify, Vec<(raw::InotifyWatch, Vec<u8>)>);

/// What restore will do with one item of the task's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Restored as it was.
    Restore,
    /// Restored, with a difference the note names (a warning).
    Partial,
    /// Attached at restore to what the caller names (`--inherit-fd`), else refused.
    Inherit,
    /// Not restored (a warning; `--strict` refuses the checkpoint).
    Lost,
}

/// One line of the fidelity report.
#[derive(Clone, Debug, Serialize)]
pub struct Fidelity {
    /// What: `fd 3`, `cwd`, `signal handlers`, `rlimits`, ...
    pub item: String,
    /// What it is: `regular file /var/log/x.log`, `pipe (both ends in the task)`, ...
    pub kind: String,
    /// What restore will do.
    pub action: Action,
    /// Why, for anything but `restore`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// Everything of §15 to §19 for one task.
#[derive(Clone, Debug, Default)]
pub struct TaskState {
    /// File records: descriptors in increasing order, then the working directory, then the
    /// root.
    pub files: Vec<FileEntry>,
    /// Inotify fds in increasing order, each with its watches (and their paths).
    pub inotify: Vec<InotifyEntry>,
    /// Locks the task holds.
    pub locks: Vec<raw::Lock>,
    /// Signal dispositions, alternate stack and pending signals.
    pub signals: Option<(raw::Signals, Vec<raw::PendingSignal>)>,
    /// Interval and POSIX timers.
    pub timers: Option<(raw::Timers, Vec<raw::PosixTimer>)>,
    /// Limits, attributes and supplementary groups.
    pub process: Option<(raw::Process, Vec<U32>)>,
    /// The fidelity report.
    pub fidelity: Vec<Fidelity>,
}

impl TaskState {
    /// Writes the state records, in the order of FORMAT.md §2.5.
    pub fn write<S: Sink>(&self, w: &mut Writer<S>) -> Result<()> {
        for f in &self.files {
            w.file(&f.raw, &f.path, &f.data)?;
            let mut off = 0u64;
            for chunk in f.contents.chunks(MAX_FILE_DATA as usize) {
                w.file_data(off, chunk)?;
                off += chunk.len() as u64;
            }
        }
        for (i, watches) in &self.inotify {
            w.inotify(i)?;
            for (wa, path) in watches {
                w.inotify_watch(wa, path)?;
            }
        }
        for l in &self.locks {
            w.lock(l)?;
        }
        if let Some((s, p)) = &self.signals {
            w.signals(s, p)?;
        }
        if let Some((t, p)) = &self.timers {
            w.timers(t, p)?;
        }
        if let Some((p, g)) = &self.process {
            w.process(p, g)?;
        }
        Ok(())
    }

    /// The items restore will not bring back as they were.
    pub fn losses(&self) -> impl Iterator<Item = &Fidelity> {
        self.fidelity
            .iter()
            .filter(|f| matches!(f.action, Action::Lost | Action::Partial))
    }
}

/// Reads the state of the frozen task `pid` (stopped under our ptrace). The caller adds the
/// memory's fidelity lines, then calls [`strict_check`].
pub(crate) fn capture(pid: i32, opts: &StateOptions) -> Result<TaskState> {
    let mut st = TaskState::default();
    super::files::capture(pid, &mut st, opts)?;
    super::process::capture(pid, &mut st)?;
    Ok(st)
}

/// With `--strict`, refuses (while the task is frozen: the capture fails and the task is let
/// go as it was, no image written) when anything would not be restored exactly.
pub(crate) fn strict_check(pid: i32, st: &TaskState, opts: &StateOptions) -> Result<()> {
    if !opts.strict {
        return Ok(());
    }
    let lost: Vec<String> = st
        .losses()
        .map(|f| format!("{} ({}): {}", f.item, f.kind, f.note))
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    Err(Error::NotCheckpointable {
        pid,
        reason: format!(
            "--strict: restore would not bring back exactly: {}",
            lost.join("; ")
        ),
    })
}
