//! Capture of the file locks the task holds (FORMAT.md §23): one Lock record each.
//!
//! `/proc/PID/fdinfo/N` shows, on `lock:` lines, the locks set through fd N's open file
//! description and owned by the task: its POSIX locks (owner: the process), and the flock and
//! OFD locks of that open file description. So each line already names the fd restore must
//! re-take it on. A descriptor that shares its open file description with an earlier one
//! (`dup_of`) shows the same locks; they are taken from the earlier one only. A POSIX lock is
//! checked against the task's pid and against `/proc/locks`. Leases, delegations and
//! mandatory locks (old kernels) are not re-taken: named `Lost` in the report.

use crate::capture::state::{Action, Fidelity, FileEntry};
use crate::sys::fdinfo::{parse_lock, LockKind, LockLine};
use cr_format::limits::MAX_LOCKS;
use cr_format::raw;

/// The task's locks, read fd by fd.
#[derive(Default)]
pub(crate) struct Capture {
    /// The records so far.
    pub locks: Vec<raw::Lock>,
    /// `/proc/locks`, read at the first POSIX lock (or why it could not be).
    proc_locks: Option<std::result::Result<Vec<LockLine>, String>>,
    /// The flock and OFD write locks recorded, with their fd: two descriptors of one open
    /// file description whose sharing `kcmp` could not tell both show its locks (two open
    /// file descriptions never hold one write lock; read locks they may, and re-taking a
    /// read lock twice is harmless).
    seen: Vec<(LockLine, u32)>,
}

impl Capture {
    /// Records the locks of the `lock:` lines of descriptor `e` (task `pid`) and says on its
    /// report line what restore does with them.
    pub fn fd(&mut self, pid: i32, e: &FileEntry, lines: &[String], line: &mut Fidelity) {
        if lines.is_empty() || e.raw.dup_of.get() != raw::DUP_NONE {
            return;
        }
        let mut taken = Vec::new();
        let mut lost = Vec::new();
        for text in lines {
            let Some(l) = parse_lock(text) else {
                let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
                lost.push(format!(
                    "a lock the kernel shows as {t:?} is not understood"
                ));
                continue;
            };
            let same = |(p, _): &&(LockLine, u32)| {
                (p.kind, p.dev, p.ino, p.start, p.end, p.write)
                    == (l.kind, l.dev, l.ino, l.start, l.end, l.write)
            };
            if l.kind != LockKind::Posix && l.write == Some(true) {
                if let Some((_, fd)) = self.seen.iter().find(same) {
                    taken.push(format!("{} (through fd {fd})", l.describe()));
                    continue;
                }
            }
            match self.record(pid, e, &l) {
                Ok(rec) => {
                    self.locks.push(rec);
                    if l.kind != LockKind::Posix && l.write == Some(true) {
                        self.seen.push((l.clone(), rec.fd.get()));
                    }
                    taken.push(l.describe());
                }
                Err(why) => lost.push(format!("{} is not re-taken: {why}", l.describe())),
            }
        }
        let mut notes = Vec::new();
        if !taken.is_empty() {
            notes.push(format!("lock re-taken at restore: {}", taken.join(", ")));
        }
        if !lost.is_empty() {
            if line.action == Action::Restore {
                line.action = Action::Partial;
            }
            notes.extend(lost);
        }
        for n in notes {
            if !line.note.is_empty() {
                line.note.push_str("; ");
            }
            line.note.push_str(&n);
        }
    }

    /// The Lock record of one line, or why the lock is not re-taken.
    fn record(&mut self, pid: i32, e: &FileEntry, l: &LockLine) -> Result<raw::Lock, String> {
        let ltype = match l.kind {
            LockKind::Posix => raw::LOCK_POSIX,
            LockKind::Flock => raw::LOCK_FLOCK,
            LockKind::Ofd => raw::LOCK_OFD,
            LockKind::Lease => {
                return Err(
                    "leases (F_SETLEASE) are not restored: a lease is broken by \
                            any other open of the file, which restore cannot hold off"
                        .into(),
                )
            }
            LockKind::Other => return Err("of a kind restore does not know".into()),
        };
        if l.class != "ADVISORY" {
            return Err(format!("a {} lock is not restored", l.class.to_lowercase()));
        }
        let mode = match l.write {
            Some(true) => raw::LOCK_WRITE,
            Some(false) => raw::LOCK_READ,
            None => return Err("it is being released".into()),
        };
        let fl = e.raw.flags.get();
        let ghost_left_out = fl & raw::FILE_DELETED != 0 && fl & raw::FILE_HAS_DATA == 0;
        if e.raw.ftype.get() == raw::FILE_UNSUPPORTED || ghost_left_out {
            return Err("its file is not restored".into());
        }
        if self.locks.len() >= MAX_LOCKS as usize {
            return Err(format!("an image holds at most {MAX_LOCKS} locks"));
        }
        let (start, len) = if l.kind == LockKind::Flock {
            (0, 0)
        } else {
            (l.start, l.flock_len())
        };
        if i64::try_from(start.saturating_add(len)).is_err() {
            return Err(format!("its range {start}+{len} is out of range"));
        }
        if l.kind == LockKind::Posix {
            self.check_posix(pid, l)?;
        }
        Ok(raw::Lock {
            fd: e.raw.fd,
            ltype: ltype.into(),
            mode: mode.into(),
            start: start.into(),
            len: len.into(),
        })
    }

    /// A POSIX lock must be the task's (its pid) and listed in `/proc/locks`.
    fn check_posix(&mut self, pid: i32, l: &LockLine) -> Result<(), String> {
        if l.pid != i64::from(pid) {
            return Err(format!(
                "the kernel shows it owned by pid {}, not the task",
                l.pid
            ));
        }
        let all = self
            .proc_locks
            .get_or_insert_with(|| {
                std::fs::read_to_string("/proc/locks")
                    .map(|t| t.lines().filter_map(parse_lock).collect())
                    .map_err(|e| format!("/proc/locks could not be read: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let found = all.iter().any(|p| {
            !p.blocked
                && p.kind == LockKind::Posix
                && (p.pid, p.dev, p.ino, p.start, p.end, p.write)
                    == (l.pid, l.dev, l.ino, l.start, l.end, l.write)
        });
        if found {
            Ok(())
        } else {
            Err("it is not in /proc/locks".into())
        }
    }
}
