//! Checkpointability: what is read of a task before the freeze, and every reason it cannot be
//! checkpointed, said precisely.

use crate::error::{Error, Result};
use crate::procfs::{self, MapsEntry, Stat, Status};
use cr_format::raw;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::Instant;

/// The state of the task read before the freeze, which passed the checkpointability check.
///
/// `/proc/PID/smaps`, the only place that shows the mappings' attributes, costs about ten
/// times what maps does (65,000 mappings: 48 MB of text, 130-400 ms): it is read only when a
/// capture path asks for it ([`Inspection::load_smaps`], before it freezes the task). A lazy
/// checkpoint by a twin does not: it reads the twin's smaps after the task runs again.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The pid.
    pub pid: i32,
    /// `/proc/PID/stat`.
    pub stat: Stat,
    /// `/proc/PID/status`.
    pub status: Status,
    /// `/proc/PID/maps`.
    pub maps: Vec<MapsEntry>,
    /// smaps, once [`Inspection::load_smaps`] has read it.
    smaps: OnceLock<Smaps>,
}

/// The task's smaps as read before the freeze.
#[derive(Clone, Debug)]
pub struct Smaps {
    /// Its maps lines.
    pub maps: Vec<MapsEntry>,
    /// For each of `maps`, its `raw::VMA_ATTR_*` bits (`VmFlags`).
    pub attrs: Vec<u32>,
    /// When it was read.
    pub at: Instant,
}

impl Inspection {
    /// Reads the task's smaps (once), so that a capture that reads the mappings while the task
    /// is frozen can take their attributes from it when nothing changed since
    /// (`vma::read_maps_frozen`) instead of reading smaps while the task is stopped.
    pub fn load_smaps(&self) -> Result<()> {
        if self.smaps.get().is_none() {
            let s = read_smaps(self.pid)?;
            let _ = self.smaps.set(s);
        }
        Ok(())
    }

    /// smaps, if [`Inspection::load_smaps`] read it.
    pub fn smaps(&self) -> Option<&Smaps> {
        self.smaps.get()
    }
}

/// `/proc/PID/smaps`: the maps lines and, for each, its attributes. Read in pieces and
/// parsed as it comes ([`procfs::for_each_line`]): of its ~25 lines per mapping only the
/// first and `VmFlags` are kept.
pub(crate) fn read_smaps(pid: i32) -> Result<Smaps> {
    let at = Instant::now();
    let mut maps = Vec::new();
    let mut attrs: Vec<u32> = Vec::new();
    procfs::for_each_line(pid, "smaps", |l| {
        match l.first() {
            // Header lines start with the range in lowercase hex; field names are capitalized.
            Some(c) if c.is_ascii_digit() || (b'a'..=b'f').contains(c) => {
                maps.push(procfs::parse_maps_bytes(l)?);
                attrs.push(0);
            }
            Some(b'V') => {
                if let (Some(f), Some(a)) = (l.strip_prefix(b"VmFlags:"), attrs.last_mut()) {
                    *a = attrs_of_vmflags(&String::from_utf8_lossy(f));
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(Smaps { maps, attrs, at })
}

/// The refusal of `pid`, with its reason.
pub(crate) fn refuse(pid: i32, reason: impl Into<String>) -> Error {
    Error::NotCheckpointable {
        pid,
        reason: reason.into(),
    }
}

/// `/proc/PID/NAME` as text.
pub(crate) fn read_text(pid: i32, name: &str) -> Result<String> {
    let b = procfs::read(pid, name)?;
    String::from_utf8(b).map_err(|_| Error::Proc(format!("/proc/{pid}/{name} is not UTF-8")))
}

/// Checks that `pid` can be checkpointed, refusing with the precise reason; returns what it read.
pub fn inspect(pid: i32) -> Result<Inspection> {
    if pid <= 0 {
        return Err(Error::NoSuchProcess(pid));
    }
    if !cfg!(target_arch = "x86_64") {
        return Err(refuse(
            pid,
            "unsupported architecture: cr-dump captures x86-64 tasks on x86-64 hosts only",
        ));
    }
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        return Err(refuse(pid, "it is cr-dump itself"));
    }
    let status = procfs::parse_status(&read_text(pid, "status")?)?;
    let stat = procfs::parse_stat(&read_text(pid, "stat")?)?;
    if status.kthread || stat.flags & procfs::PF_KTHREAD != 0 {
        return Err(refuse(pid, "it is a kernel thread"));
    }
    if matches!(stat.state, b'Z' | b'X') {
        return Err(refuse(
            pid,
            "it is a zombie (it has exited and not been reaped)",
        ));
    }
    if status.tgid != status.pid {
        return Err(refuse(
            pid,
            format!("it is a thread of process {}, not a process", status.tgid),
        ));
    }
    if status.tracer_pid != 0 {
        return Err(refuse(
            pid,
            format!("it is already traced by pid {}", status.tracer_pid),
        ));
    }
    check_threads(pid, &status)?;
    let maps = procfs::parse_maps(&read_text(pid, "maps")?)?;
    check_maps(pid, &maps)?;
    check_shared_anon(pid, &maps, Scope::All)?;
    check_arch(pid)?;
    Ok(Inspection {
        pid,
        stat,
        status,
        maps,
        smaps: OnceLock::new(),
    })
}

/// Not a format bit: the mapping is sealed (`mseal`, smaps `sl`); restore does not seal.
pub const ATTR_SEALED: u32 = 1 << 16;
/// Not a format bit: an x86 shadow stack (smaps `ss`), which restore cannot make.
pub const ATTR_SHADOW_STACK: u32 = 1 << 17;

/// The `raw::VMA_ATTR_*` bits of a smaps `VmFlags` value (the mnemonics of the kernel's
/// `show_smap_vma_flags`), with [`ATTR_SEALED`] and [`ATTR_SHADOW_STACK`].
pub fn attrs_of_vmflags(flags: &str) -> u32 {
    flags.split_ascii_whitespace().fold(0, |a, f| {
        a | match f {
            "dc" => raw::VMA_ATTR_DONTFORK,
            "dd" => raw::VMA_ATTR_DONTDUMP,
            "wf" => raw::VMA_ATTR_WIPEONFORK,
            "hg" => raw::VMA_ATTR_HUGEPAGE,
            "nh" => raw::VMA_ATTR_NOHUGEPAGE,
            "mg" => raw::VMA_ATTR_MERGEABLE,
            "lo" => raw::VMA_ATTR_LOCKED,
            "lf" => raw::VMA_ATTR_LOCKONFAULT,
            "sl" => ATTR_SEALED,
            "ss" => ATTR_SHADOW_STACK,
            _ => 0,
        }
    })
}

/// Splits smaps text into its maps lines and, for each, the `VMA_ATTR_*` bits of its VmFlags.
pub fn split_smaps(text: &str) -> (String, Vec<u32>) {
    let mut maps = String::with_capacity(text.len() / 12);
    let mut attrs = Vec::new();
    for l in text.lines() {
        // Header lines start with the range in lowercase hex; field names are capitalized.
        if l.starts_with(|c: char| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            maps.push_str(l);
            maps.push('\n');
            attrs.push(0);
        } else if let Some(f) = l.strip_prefix("VmFlags:") {
            if let Some(a) = attrs.last_mut() {
                *a = attrs_of_vmflags(f);
            }
        }
    }
    (maps, attrs)
}

/// Refuses a multi-threaded task.
pub(crate) fn check_threads(pid: i32, status: &Status) -> Result<()> {
    if status.threads > 1 {
        return Err(refuse(
            pid,
            format!(
                "it has {} threads; only single-threaded tasks can be checkpointed",
                status.threads
            ),
        ));
    }
    Ok(())
}

/// How the kernel names a shared anonymous mapping (and `/dev/zero` mapped shared) in maps.
pub const SHARED_ANON_NAME: &str = "/dev/zero (deleted)";

/// Whether `m` is shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`, or `/dev/zero` mapped
/// shared: both are a file of the kernel's internal shmem mount, device major 0).
pub fn is_shared_anon(m: &MapsEntry) -> bool {
    m.shared && m.dev_major == 0 && m.path == SHARED_ANON_NAME
}

/// Whether `m` is a shared mapping of a memfd (`/memfd:NAME (deleted)` on the kernel's
/// internal shmem mount): captured and restored as shared memory is, joined at restore with
/// the memfd's descriptor when the task has one open.
pub fn is_shared_memfd(m: &MapsEntry) -> bool {
    m.shared && m.dev_major == 0 && m.path.starts_with("/memfd:")
}

/// Shared memory of a shmem object: shared anonymous memory or a shared memfd mapping.
pub fn is_shared_object(m: &MapsEntry) -> bool {
    is_shared_anon(m) || is_shared_memfd(m)
}

/// Whether `m` maps a file deleted since it was mapped (not memory of the kernel's own
/// mounts, whose names also end so).
pub fn is_deleted(m: &MapsEntry) -> bool {
    m.path.starts_with('/') && m.path.ends_with(" (deleted)") && m.inode != 0 && m.dev_major != 0
}

/// Refuses a task without memory, with shared writable file memory or System V shared memory
/// (shared anonymous memory and memfds that another process also maps: [`check_shared_anon`]).
pub(crate) fn check_maps(pid: i32, maps: &[MapsEntry]) -> Result<()> {
    if maps.is_empty() {
        return Err(refuse(pid, "it has no memory map (a kernel thread?)"));
    }
    let range = |m: &MapsEntry| format!("{:x}-{:x}", m.start, m.end);
    for m in maps.iter().filter(|m| m.shared) {
        let sysv = m.path.starts_with("/SYSV") && m.dev_major == 0;
        if sysv {
            return Err(refuse(
                pid,
                format!(
                    "it has System V shared memory attached at {} ({}): the segment belongs to \
                     the IPC namespace, not the task, and images do not hold it",
                    range(m),
                    m.path
                ),
            ));
        }
        if is_shared_object(m) {
            continue;
        }
        if is_deleted(m) {
            return Err(refuse(
                pid,
                format!(
                    "it has a shared mapping {} of a deleted file ({}): images hold the \
                     contents of private mappings of deleted files only",
                    range(m),
                    m.path
                ),
            ));
        }
        if m.write {
            return Err(refuse(
                pid,
                format!(
                    "it has a shared writable mapping {} ({}): shared memory cannot \
                     be captured consistently",
                    range(m),
                    m.path
                ),
            ));
        }
    }
    Ok(())
}

/// Which processes [`check_shared_anon`] looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every process (at the inspection).
    All,
    /// The task's descendants (while it is frozen: only a fork since the inspection can have
    /// given the memory to a process that did not map it then).
    Descendants,
}

/// The descendants of `pid` (children of each of its threads, and theirs).
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    // Bounded: a pid is visited once.
    while let Some(p) = todo.pop() {
        let Ok(threads) = std::fs::read_dir(procfs::path(p, "task")) else {
            continue;
        };
        let mut kids = String::new();
        for t in threads.flatten() {
            let name = format!("task/{}/children", t.file_name().to_string_lossy());
            if let Ok(b) = procfs::read(p, &name) {
                kids.push_str(&String::from_utf8_lossy(&b));
                kids.push(' ');
            }
        }
        for k in kids
            .split_whitespace()
            .filter_map(|n| n.parse::<i32>().ok())
        {
            if k != pid && !out.contains(&k) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

/// Refuses a task with shared anonymous memory (or a memfd mapped shared) that another
/// process also maps (found by the
/// object's device and inode among every process's maps), naming that process: its pages
/// would change under the image, and restore could not share them with it again. Processes
/// traced by us (twins of earlier checkpoints) do not count. Reads the maps of the processes
/// of `scope` only when the task has shared anonymous memory.
pub(crate) fn check_shared_anon(pid: i32, maps: &[MapsEntry], scope: Scope) -> Result<()> {
    let mine: Vec<&MapsEntry> = maps.iter().filter(|m| is_shared_object(m)).collect();
    if mine.is_empty() {
        return Ok(());
    }
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let others = match scope {
        Scope::All => std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .collect()
            })
            .unwrap_or_default(),
        Scope::Descendants => descendants(pid),
    };
    for other in others {
        if other == pid || other == me {
            continue;
        }
        // Gone meanwhile, or not ours to read: nothing to compare.
        let Ok(text) = read_text(other, "maps") else {
            continue;
        };
        let Some(m) = text
            .lines()
            .filter(|l| l.ends_with(SHARED_ANON_NAME) || l.contains(" /memfd:"))
            .filter_map(|l| procfs::parse_maps(l).ok()?.into_iter().next())
            .find_map(|o| {
                mine.iter().find(|m| {
                    (m.dev_major, m.dev_minor, m.inode) == (o.dev_major, o.dev_minor, o.inode)
                })
            })
        else {
            continue;
        };
        let status = read_text(other, "status")
            .ok()
            .and_then(|t| procfs::parse_status(&t).ok());
        if status.as_ref().map(|s| s.tracer_pid) == Some(me) {
            continue;
        }
        let name = procfs::parse_stat(&read_text(other, "stat").unwrap_or_default())
            .map(|s| s.comm)
            .unwrap_or_default();
        return Err(refuse(
            pid,
            format!(
                "its {} {:x}-{:x} (inode {}) is also mapped by process {other} ({name}): \
                 memory shared with another process cannot be captured consistently",
                if is_shared_memfd(m) {
                    format!("shared mapping of {}", m.path)
                } else {
                    "shared anonymous memory".into()
                },
                m.start,
                m.end,
                m.inode
            ),
        ));
    }
    Ok(())
}

/// Refuses a task whose executable is not x86-64 ELF.
fn check_arch(pid: i32) -> Result<()> {
    let f = File::open(procfs::path(pid, "exe")).map_err(|e| procfs::proc_err(pid, "exe", e))?;
    let mut h = [0u8; 20];
    let n = f
        .read_at(&mut h, 0)
        .map_err(|e| procfs::proc_err(pid, "exe", e))?;
    if n < 20 || h.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(refuse(
            pid,
            "unsupported architecture: its executable is not ELF",
        ));
    }
    // `h` is 20 bytes: e_ident[EI_CLASS] at 4, e_machine at 18..20.
    let [_, _, _, _, class, ..] = h;
    let [.., m0, m1] = h;
    let machine = u16::from_le_bytes([m0, m1]);
    match (class, machine) {
        (2, 62) => Ok(()),
        (1, 62) => Err(refuse(pid, "unsupported architecture: x32")),
        (1, 3) => Err(refuse(pid, "unsupported architecture: i386 (32-bit)")),
        (c, m) => Err(refuse(
            pid,
            format!("unsupported architecture: ELF class {c}, e_machine {m} (only x86-64)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_split_into_maps_and_attributes() {
        let text = "\
7f00-7f01 rw-p 00000000 00:00 0 
Size:                  4 kB
VmFlags: rd wr mr mw me dc lo lf ac 
7f01-7f02 rw-s 00000000 00:01 13                         /dev/zero (deleted)
Rss:                   0 kB
VmFlags: rd wr sh mr mw me ms wf hg nh mg dd sl ss 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
VmFlags: ex 
";
        let (maps, attrs) = split_smaps(text);
        let maps = procfs::parse_maps(&maps).unwrap();
        assert_eq!(maps.len(), 3);
        assert!(is_shared_anon(&maps[1]) && !is_shared_anon(&maps[0]));
        let locked = raw::VMA_ATTR_DONTFORK | raw::VMA_ATTR_LOCKED | raw::VMA_ATTR_LOCKONFAULT;
        let all = raw::VMA_ATTR_WIPEONFORK
            | raw::VMA_ATTR_HUGEPAGE
            | raw::VMA_ATTR_NOHUGEPAGE
            | raw::VMA_ATTR_MERGEABLE
            | raw::VMA_ATTR_DONTDUMP
            | ATTR_SEALED
            | ATTR_SHADOW_STACK;
        assert_eq!(attrs, [locked, all, 0]);
    }

    #[test]
    fn deleted_files_are_not_kernel_memory() {
        let line = |l: &str| procfs::parse_maps(l).unwrap().remove(0);
        assert!(is_deleted(&line(
            "7f00-7f01 r--p 00001000 fe:00 77 /tmp/x (deleted)"
        )));
        assert!(!is_deleted(&line(
            "7f00-7f01 rw-s 00000000 00:01 13 /dev/zero (deleted)"
        )));
        assert!(!is_deleted(&line(
            "7f00-7f01 r--p 00001000 fe:00 77 /tmp/x"
        )));
    }
}
