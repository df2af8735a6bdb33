//! The task's state besides memory and registers (format 1.1: files, signals, timers, process
//! attributes; 1.2: inotify watches, locks, the vDSO's bytes) as `show` prints it: gathered record by record into [`State`], rendered as
//! sections. Without `-v` only what differs from a fresh process is printed (handlers that are
//! not the default, limits, armed timers); with `-v`, every field.

use super::names::{self, kind_or_number};
use cr_format::raw;
use cr_format::read::Record;
use std::fmt::Write as _;

/// One File record with what follows it.
#[derive(Clone, Debug)]
pub struct FileShown {
    /// The fixed part.
    pub raw: raw::File,
    /// The path.
    pub path: Vec<u8>,
    /// The type-specific data.
    pub data: Vec<u8>,
    /// Bytes of contents in the FileData records after it.
    pub contents: u64,
}

/// An Inotify record with its watches and their paths.
pub type InotifyShown = (raw::Inotify, Vec<(raw::InotifyWatch, Vec<u8>)>);

/// The state records of one image.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Files in image order (descriptors, then cwd and root).
    pub files: Vec<FileShown>,
    /// Dispositions, alternate stack and pending signals.
    pub signals: Option<(raw::Signals, Vec<raw::PendingSignal>)>,
    /// Interval and POSIX timers.
    pub timers: Option<(raw::Timers, Vec<raw::PosixTimer>)>,
    /// Limits, attributes and supplementary groups.
    pub process: Option<(raw::Process, Vec<u32>)>,
    /// Inotify descriptors, each with its watches and their paths.
    pub inotify: Vec<InotifyShown>,
    /// File locks held.
    pub locks: Vec<raw::Lock>,
    /// The vDSO's bytes.
    pub vdso: Option<Vec<u8>>,
}

impl State {
    /// Takes in a record; `false` if it is not a state record this type gathers (VmaAttr is the
    /// VMA table's).
    pub fn record(&mut self, r: &Record<'_>) -> bool {
        match r {
            Record::File(f) => self.files.push(FileShown {
                raw: *f.raw,
                path: f.path.to_vec(),
                data: f.data.to_vec(),
                contents: 0,
            }),
            Record::FileData(d) => {
                if let Some(f) = self.files.last_mut() {
                    f.contents = f.contents.saturating_add(u64::from(d.raw.len.get()));
                }
            }
            Record::Signals(s) => self.signals = Some((*s.raw, s.pending.to_vec())),
            Record::Timers(t) => self.timers = Some((*t.raw, t.posix.to_vec())),
            Record::Process(p) => {
                self.process = Some((*p.raw, p.groups.iter().map(|g| g.get()).collect()))
            }
            Record::Inotify(n) => self.inotify.push((**n, Vec::new())),
            Record::InotifyWatch(w) => {
                if let Some((_, ws)) = self.inotify.last_mut() {
                    ws.push((*w.raw, w.path.to_vec()));
                }
            }
            Record::Lock(l) => self.locks.push(**l),
            Record::VdsoData(d) => self.vdso = Some(d.bytes.to_vec()),
            _ => return false,
        }
        true
    }

    /// Whether the image holds no state record (a 1.0 image).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.signals.is_none()
            && self.timers.is_none()
            && self.process.is_none()
            && self.inotify.is_empty()
            && self.locks.is_empty()
            && self.vdso.is_none()
    }
}

/// Renders the state sections (nothing for an image without state records).
pub fn render(o: &mut String, s: &State, verbose: bool) {
    if !s.files.is_empty() {
        render_files(o, &s.files, verbose);
    }
    if !s.inotify.is_empty() {
        render_inotify(o, &s.inotify);
    }
    if !s.locks.is_empty() {
        render_locks(o, &s.locks);
    }
    if let Some(v) = &s.vdso {
        let _ = writeln!(
            o,
            "vdso
  {}",
            vdso_line(v, machine_vdso().as_deref())
        );
    }
    if let Some((sig, pending)) = &s.signals {
        render_signals(o, sig, pending, verbose);
    }
    if let Some((t, posix)) = &s.timers {
        render_timers(o, t, posix, verbose);
    }
    if let Some((p, groups)) = &s.process {
        render_process(o, p, groups, verbose);
    }
}

fn render_inotify(o: &mut String, inotify: &[InotifyShown]) {
    let _ = writeln!(o, "inotify");
    for (n, watches) in inotify {
        let mut fl = names::flags(n.open_flags.get().into(), names::OPEN_FLAGS);
        if n.fd_flags.get() != 0 {
            fl = format!(
                "{fl} {}",
                names::flags(n.fd_flags.get().into(), names::FD_FLAGS)
            );
        }
        let what = match n.dup_of.get() {
            raw::NO_DUP => format!("{} watch(es)", watches.len()),
            d => format!("the inotify instance of fd {d} (shared)"),
        };
        let _ = writeln!(o, "  fd {:<4} {fl:<32} {what}", n.fd.get());
        for (w, path) in watches {
            let _ = writeln!(
                o,
                "         wd {:<4} {:<32} {} (inode {}, dev {}:{})",
                w.wd.get(),
                names::flags(w.mask.get().into(), names::IN_FLAGS),
                lossy(path),
                w.inode.get(),
                w.dev_major.get(),
                w.dev_minor.get()
            );
        }
    }
}

fn render_locks(o: &mut String, locks: &[raw::Lock]) {
    let _ = writeln!(o, "locks");
    for l in locks {
        let (start, len) = (l.start.get(), l.len.get());
        let range = match (l.ltype.get(), len) {
            (raw::LOCK_FLOCK, _) => "the whole file".to_string(),
            (_, 0) => format!("bytes {start}.. (to the end)"),
            _ => format!("bytes {start}..{}", start.saturating_add(len)),
        };
        let _ = writeln!(
            o,
            "  fd {:<4} {:<6} {:<6} {range}",
            l.fd.get(),
            kind_or_number(l.ltype.get().into(), names::LOCK_TYPES),
            kind_or_number(l.mode.get().into(), names::LOCK_MODES),
        );
    }
}

/// The vDSO line: its size, and whether this machine's vDSO has the same bytes (a restore here
/// runs this machine's vDSO, FORMAT.md §24).
pub fn vdso_line(bytes: &[u8], machine: Option<&[u8]>) -> String {
    let kib = bytes.len() / 1024;
    let cmp = match machine {
        Some(m) if m == bytes => "same as this machine's".to_string(),
        Some(_) => "differs from this machine's".to_string(),
        None => "this machine's vDSO could not be read".to_string(),
    };
    format!(
        "vdso bytes: {kib} KiB, crc32 {:#010x}, {cmp}",
        crc32fast::hash(bytes)
    )
}

/// This process's vDSO bytes (every process of a boot has the same), read through
/// `/proc/self/mem` at the `[vdso]` range of `/proc/self/maps`.
pub fn machine_vdso() -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let range = line.split_whitespace().next()?;
    let (a, b) = range.split_once('-')?;
    let (a, b) = (
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    );
    let len = usize::try_from(b.checked_sub(a)?).ok()?;
    let mut buf = vec![0u8; len];
    std::fs::File::open("/proc/self/mem")
        .ok()?
        .read_exact_at(&mut buf, a)
        .ok()?;
    Some(buf)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn render_files(o: &mut String, files: &[FileShown], verbose: bool) {
    let _ = writeln!(o, "files");
    for f in files {
        let r = &f.raw;
        let ftype = kind_or_number(r.ftype.get().into(), names::FILE_TYPES);
        let who = match r.role.get() {
            raw::ROLE_FD => format!("fd {}", r.fd.get()),
            role => kind_or_number(role.into(), names::ROLES),
        };
        let mut fl = names::flags(r.open_flags.get().into(), names::OPEN_FLAGS);
        if r.fd_flags.get() != 0 {
            fl = format!(
                "{fl} {}",
                names::flags(r.fd_flags.get().into(), names::FD_FLAGS)
            );
        }
        if r.flags.get() != 0 {
            fl = format!(
                "{fl} {}",
                names::flags(r.flags.get().into(), names::FILE_FLAGS)
            );
        }
        let _ = writeln!(
            o,
            "  {who:<6} {ftype:<8} {:<32} pos {:<8} {}",
            fl,
            r.pos.get(),
            lossy(&f.path)
        );
        let _ = writeln!(o, "         restore: {}", needs(f));
        if verbose {
            let p: Vec<String> = r.params.iter().map(|v| format!("{:#x}", v.get())).collect();
            let _ = writeln!(
                o,
                "         mode {:o} inode {} size {} mtime {} dev {}:{} rdev {}:{} dup_of {} \
                 data {} bytes, contents {} bytes, params [{}]",
                r.mode.get(),
                r.inode.get(),
                r.size.get(),
                names::utc(r.mtime_ns.get()),
                r.dev_major.get(),
                r.dev_minor.get(),
                r.rdev_major.get(),
                r.rdev_minor.get(),
                r.dup_of.get(),
                f.data.len(),
                f.contents,
                p.join(" ")
            );
        }
    }
}

/// What restore will need or do to bring a file back, in a few words.
fn needs(f: &FileShown) -> String {
    let r = &f.raw;
    let p = |i: usize| r.params.get(i).map_or(0, |v| v.get());
    if r.dup_of.get() != raw::DUP_NONE {
        return format!("the open file of fd {} (shared)", r.dup_of.get());
    }
    let deleted = r.flags.get() & raw::FILE_DELETED != 0;
    match r.ftype.get() {
        raw::FILE_REG if deleted => format!(
            "a new file with the {} bytes the image holds (deleted)",
            f.contents
        ),
        raw::FILE_REG => format!(
            "the file at its path, unchanged (inode {}, {} bytes)",
            r.inode.get(),
            r.size.get()
        ),
        raw::FILE_DIR => "the directory at its path".into(),
        raw::FILE_CHR if r.flags.get() & raw::FILE_TTY != 0 => format!(
            "a terminal (device {}:{})",
            r.rdev_major.get(),
            r.rdev_minor.get()
        ),
        raw::FILE_CHR => format!(
            "the device at its path ({}:{})",
            r.rdev_major.get(),
            r.rdev_minor.get()
        ),
        raw::FILE_FIFO => format!("the FIFO at its path, {} unread bytes refilled", f.contents),
        raw::FILE_PIPE if p(1) == raw::PIPE_OTHER_END_OUTSIDE && r.fd.get() <= 2 => format!(
            "restore's own fd {} (or what --inherit-fd names): the pipe's other end was held \
             outside the task",
            r.fd.get()
        ),
        raw::FILE_PIPE if p(1) == raw::PIPE_OTHER_END_OUTSIDE => {
            "what --inherit-fd names, else refused: the pipe's other end was held outside the \
             task"
                .into()
        }
        raw::FILE_PIPE => format!(
            "a new pipe (inode {}), capacity {}, {} unread bytes refilled",
            r.inode.get(),
            p(0),
            f.contents
        ),
        raw::FILE_SOCKET => socket(f),
        raw::FILE_EVENTFD => format!(
            "a new eventfd, count {}{}",
            p(0),
            if p(1) != 0 { ", semaphore" } else { "" }
        ),
        raw::FILE_TIMERFD => format!(
            "a new timerfd on {}, next in {} ns, every {} ns, {} ticks unread",
            kind_or_number(p(0), names::CLOCKS),
            p(3),
            p(2),
            p(1)
        ),
        raw::FILE_SIGNALFD => format!("a new signalfd for {}", names::sigmask(p(0))),
        raw::FILE_EPOLL => {
            let w: Vec<String> = epoll(&f.data)
                .iter()
                .map(|e| format!("fd {} events {:#x}", e.fd.get(), e.events.get()))
                .collect();
            format!("a new epoll watching [{}]", w.join(", "))
        }
        raw::FILE_MEMFD => format!(
            "a new memfd with the {} bytes the image holds, seals {:#x}",
            f.contents,
            p(0)
        ),
        _ => "nothing: not restorable (unsupported type)".into(),
    }
}

/// The entries of an epoll File's data.
fn epoll(data: &[u8]) -> Vec<raw::EpollEntry> {
    use zerocopy::FromBytes;
    data.chunks_exact(16)
        .filter_map(|c| raw::EpollEntry::read_from_bytes(c).ok())
        .collect()
}

fn socket(f: &FileShown) -> String {
    let p = |i: usize| f.raw.params.get(i).map_or(0, |v| v.get());
    let what = format!(
        "{} {}",
        kind_or_number(p(0), names::FAMILIES),
        kind_or_number(p(1), names::SOCK_TYPES)
    );
    match p(3) {
        raw::SOCKET_UNBOUND => format!("a new {what} socket"),
        raw::SOCKET_BOUND => format!("a new {what} socket bound to {}", sockaddr(&f.data)),
        raw::SOCKET_LISTENING => format!(
            "a new {what} socket listening on {} (backlog {})",
            sockaddr(&f.data),
            p(4)
        ),
        raw::SOCKET_CONNECTED => {
            format!("nothing: a connected {what} socket (its peer is outside the image)")
        }
        s => format!("nothing: {what} socket in state {s}"),
    }
}

/// A `sockaddr` as people write it: a path, `@name` (abstract), `a.b.c.d:port`, `[v6]:port`.
pub fn sockaddr(b: &[u8]) -> String {
    let family = b.get(..2).map_or(0, |f| u16::from_le_bytes([f[0], f[1]]));
    let rest = b.get(2..).unwrap_or(&[]);
    let port = |r: &[u8]| r.get(..2).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
    match i32::from(family) {
        libc::AF_UNIX => match rest.split_first() {
            Some((0, name)) => format!("@{}", lossy(name)),
            _ => {
                let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                lossy(rest.get(..end).unwrap_or(&[]))
            }
        },
        libc::AF_INET => match rest.get(2..6) {
            Some(a) => format!("{}.{}.{}.{}:{}", a[0], a[1], a[2], a[3], port(rest)),
            None => "?".into(),
        },
        libc::AF_INET6 => match rest.get(6..22).and_then(|a| <[u8; 16]>::try_from(a).ok()) {
            Some(a) => format!("[{}]:{}", std::net::Ipv6Addr::from(a), port(rest)),
            None => "?".into(),
        },
        _ => format!("family {family}, {} bytes", b.len()),
    }
}

fn render_signals(o: &mut String, s: &raw::Signals, pending: &[raw::PendingSignal], verbose: bool) {
    let _ = writeln!(o, "signals");
    for (n, a) in (1u64..).zip(s.actions.iter()) {
        let handler = a.handler.get();
        let default = handler == 0 && a.flags.get() == 0 && a.mask.get() == 0;
        if default && !verbose {
            continue;
        }
        let h = match handler {
            0 => "default".to_string(),
            1 => "ignored".to_string(),
            h => format!("handler {h:#x}"),
        };
        let _ = writeln!(
            o,
            "  {:<10} {h} flags {} mask {} restorer {:#x}",
            names::signal(n),
            names::flags(a.flags.get(), names::SA_FLAGS),
            names::sigmask(a.mask.get()),
            a.restorer.get()
        );
    }
    let _ = writeln!(
        o,
        "  altstack   sp {:#x} size {} flags {}",
        s.altstack_sp.get(),
        s.altstack_size.get(),
        names::flags(s.altstack_flags.get().into(), names::SS_FLAGS)
    );
    for p in pending {
        let i = |at: usize| {
            p.siginfo
                .get(at..at + 4)
                .map_or(0, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let _ = writeln!(
            o,
            "  pending    {} ({} queue) code {} errno {}",
            names::signal(u64::try_from(i(0)).unwrap_or(0)),
            kind_or_number(p.queue.get().into(), names::QUEUES),
            i(8),
            i(4)
        );
    }
}

fn render_timers(o: &mut String, t: &raw::Timers, posix: &[raw::PosixTimer], verbose: bool) {
    let _ = writeln!(o, "timers");
    for (name, it) in names::ITIMERS.iter().zip(t.itimers.iter()) {
        if it.value_ns.get() == 0 && it.interval_ns.get() == 0 && !verbose {
            continue;
        }
        let _ = writeln!(
            o,
            "  {name:<16} next in {} ns, every {} ns",
            it.value_ns.get(),
            it.interval_ns.get()
        );
    }
    for p in posix {
        let _ = writeln!(
            o,
            "  posix timer {:<4} {} next in {} ns, every {} ns, {} {} value {:#x} tid {} overrun {}",
            p.id.get(),
            kind_or_number(p.clock.get().into(), names::CLOCKS),
            p.value_ns.get(),
            p.interval_ns.get(),
            kind_or_number(p.sigev_notify.get().into(), names::SIGEV),
            names::signal(p.sigev_signo.get().into()),
            p.sigev_value.get(),
            p.notify_tid.get(),
            p.overrun.get()
        );
    }
}

fn render_process(o: &mut String, p: &raw::Process, groups: &[u32], verbose: bool) {
    let _ = writeln!(o, "limits (soft, hard)");
    for (name, l) in names::RLIMITS.iter().zip(p.rlimits.iter()) {
        let _ = writeln!(
            o,
            "  {name:<18} {:>20} {:>20}",
            names::limit(l.cur.get()),
            names::limit(l.max.get())
        );
    }
    let _ = writeln!(o, "process");
    let g: Vec<String> = groups.iter().map(u32::to_string).collect();
    let _ = writeln!(o, "  groups        {}", g.join(" "));
    let _ = writeln!(
        o,
        "  attributes    {}",
        names::flags(p.attr_flags.get().into(), names::ATTR_FLAGS)
    );
    let _ = writeln!(o, "  oom_score_adj {}", p.oom_score_adj.get() as i32);
    let _ = writeln!(
        o,
        "  seccomp       {}",
        kind_or_number(p.seccomp_mode.get().into(), names::SECCOMP)
    );
    let _ = writeln!(
        o,
        "  caps          bounding {:#x} ambient {:#x} securebits {:#x}",
        p.cap_bounding.get(),
        p.cap_ambient.get(),
        p.securebits.get()
    );
    let _ = writeln!(
        o,
        "  pdeathsig     {}  dumpable {}",
        match p.pdeathsig.get() {
            0 => "none".into(),
            s => names::signal(s.into()),
        },
        p.dumpable.get()
    );
    if verbose || p.rseq_addr.get() != 0 {
        let _ = writeln!(
            o,
            "  rseq          {:#x} len {} sig {:#x}",
            p.rseq_addr.get(),
            p.rseq_len.get(),
            p.rseq_sig.get()
        );
    }
    if verbose || p.robust_list.get() != 0 {
        let _ = writeln!(
            o,
            "  robust list   {:#x} len {}",
            p.robust_list.get(),
            p.robust_list_len.get()
        );
    }
    if verbose || p.clear_child_tid.get() != 0 {
        let _ = writeln!(o, "  clear tid     {:#x}", p.clear_child_tid.get());
    }
    if verbose {
        let _ = writeln!(o, "  timer slack   {} ns", p.timer_slack_ns.get());
    }
}
