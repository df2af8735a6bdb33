//! Owned values of records (under `alloc`): parse from a validated [`Image`], emit through a
//! [`Writer`]. Reading then emitting gives back the same bytes.

use crate::error::Result;
use crate::raw::{self, AuxvEntry, PageRun, FXSAVE_LEN, X86_64_GPR_COUNT};
use crate::read::{Image, Record, RunKind};
use crate::write::{Sink, Summary, Writer};
use alloc::vec::Vec;

mod state;
mod state12;
pub use state::{
    FileRepr, ITimerRepr, PendingSignalRepr, PosixTimerRepr, ProcessRepr, RlimitRepr,
    SigActionRepr, SignalsRepr, TimersRepr,
};
pub use state12::{InotifyRepr, LockRepr, WatchRepr};

/// Header fields (§3). Magic and major version are implied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HeaderRepr {
    /// Minor version.
    pub version_minor: u16,
    /// Architecture (`ARCH_*`).
    pub arch: u16,
    /// Page size.
    pub page_size: u32,
    /// CRID.
    pub crid: u64,
    /// Parent CRID, 0 for a full image.
    pub parent_crid: u64,
    /// Parent's tail digest.
    pub parent_digest: u64,
    /// Creation time, ns since the epoch.
    pub created_ns: u64,
    /// `DIFF_*`.
    pub diff_method: u32,
    /// Producer, NUL-padded.
    pub producer: [u8; 32],
}

impl HeaderRepr {
    /// From the on-disk struct.
    pub fn parse(h: &raw::Header) -> Self {
        HeaderRepr {
            version_minor: h.version_minor.get(),
            arch: h.arch.get(),
            page_size: h.page_size.get(),
            crid: h.crid.get(),
            parent_crid: h.parent_crid.get(),
            parent_digest: h.parent_digest.get(),
            created_ns: h.created_ns.get(),
            diff_method: h.diff_method.get(),
            producer: h.producer,
        }
    }
    /// To the on-disk struct.
    pub fn to_raw(&self) -> raw::Header {
        raw::Header {
            magic: raw::MAGIC,
            version_major: raw::VERSION_MAJOR.into(),
            version_minor: self.version_minor.into(),
            arch: self.arch.into(),
            _reserved0: 0.into(),
            page_size: self.page_size.into(),
            flags: 0.into(),
            crid: self.crid.into(),
            parent_crid: self.parent_crid.into(),
            parent_digest: self.parent_digest.into(),
            created_ns: self.created_ns.into(),
            diff_method: self.diff_method.into(),
            _reserved1: 0.into(),
            producer: self.producer,
        }
    }
}

/// Task fields (§4).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct TaskRepr {
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    pub state: u8,
    pub exit_signal: u32,
    pub personality: u32,
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub sig_blocked: u64,
    pub sig_ignored: u64,
    pub sig_caught: u64,
    pub sig_pending: u64,
    pub sig_shared_pending: u64,
    pub cap_inheritable: u64,
    pub cap_permitted: u64,
    pub cap_effective: u64,
    pub comm: [u8; 16],
    pub umask: u32,
}

impl TaskRepr {
    /// From the on-disk struct.
    pub fn parse(t: &raw::Task) -> Self {
        TaskRepr {
            pid: t.pid.get(),
            tgid: t.tgid.get(),
            ppid: t.ppid.get(),
            pgid: t.pgid.get(),
            sid: t.sid.get(),
            state: t.state,
            exit_signal: t.exit_signal.get(),
            personality: t.personality.get(),
            uid: t.uid.map(|x| x.get()),
            gid: t.gid.map(|x| x.get()),
            sig_blocked: t.sig_blocked.get(),
            sig_ignored: t.sig_ignored.get(),
            sig_caught: t.sig_caught.get(),
            sig_pending: t.sig_pending.get(),
            sig_shared_pending: t.sig_shared_pending.get(),
            cap_inheritable: t.cap_inheritable.get(),
            cap_permitted: t.cap_permitted.get(),
            cap_effective: t.cap_effective.get(),
            comm: t.comm,
            umask: t.umask.get(),
        }
    }
    /// To the on-disk struct.
    pub fn to_raw(&self) -> raw::Task {
        raw::Task {
            pid: self.pid.into(),
            tgid: self.tgid.into(),
            ppid: self.ppid.into(),
            pgid: self.pgid.into(),
            sid: self.sid.into(),
            state: self.state,
            _reserved0: [0; 3],
            exit_signal: self.exit_signal.into(),
            personality: self.personality.into(),
            uid: self.uid.map(Into::into),
            gid: self.gid.map(Into::into),
            sig_blocked: self.sig_blocked.into(),
            sig_ignored: self.sig_ignored.into(),
            sig_caught: self.sig_caught.into(),
            sig_pending: self.sig_pending.into(),
            sig_shared_pending: self.sig_shared_pending.into(),
            cap_inheritable: self.cap_inheritable.into(),
            cap_permitted: self.cap_permitted.into(),
            cap_effective: self.cap_effective.into(),
            comm: self.comm,
            umask: self.umask.into(),
            _reserved1: 0.into(),
        }
    }
}

/// Register fields (§5).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RegsRepr {
    /// Architecture tag.
    pub arch: u16,
    /// XCR0.
    pub xfeatures: u64,
    /// General registers, `NT_PRSTATUS` order.
    pub gpr: [u64; X86_64_GPR_COUNT],
    /// FXSAVE area.
    pub fxsave: [u8; FXSAVE_LEN],
    /// XSAVE area.
    pub xsave: Vec<u8>,
}

impl RegsRepr {
    /// To the on-disk fixed part (`xsave_len` from `xsave`).
    pub fn to_raw(&self) -> raw::RegsX86_64 {
        raw::RegsX86_64 {
            arch: self.arch.into(),
            _reserved0: 0.into(),
            xsave_len: u32::try_from(self.xsave.len()).unwrap_or(u32::MAX).into(),
            xfeatures: self.xfeatures.into(),
            gpr: self.gpr.map(Into::into),
            fxsave: self.fxsave,
        }
    }
}

/// Mm fields (§6).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct MmRepr {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// `(AT_* type, value)` pairs.
    pub auxv: Vec<(u64, u64)>,
    /// Executable path.
    pub exe: Vec<u8>,
}

impl MmRepr {
    /// To the on-disk fixed part and auxv entries.
    pub fn to_raw(&self) -> (raw::Mm, Vec<AuxvEntry>) {
        let m = raw::Mm {
            start_code: self.start_code.into(),
            end_code: self.end_code.into(),
            start_data: self.start_data.into(),
            end_data: self.end_data.into(),
            start_brk: self.start_brk.into(),
            brk: self.brk.into(),
            start_stack: self.start_stack.into(),
            arg_start: self.arg_start.into(),
            arg_end: self.arg_end.into(),
            env_start: self.env_start.into(),
            env_end: self.env_end.into(),
            auxv_count: 0.into(),
            exe_len: 0.into(),
            _reserved0: 0.into(),
        };
        let auxv = self
            .auxv
            .iter()
            .map(|&(k, v)| AuxvEntry {
                key: k.into(),
                value: v.into(),
            })
            .collect();
        (m, auxv)
    }
}

/// Vma fields (§7).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub struct VmaRepr {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub inode: u64,
    pub file_size: u64,
    pub file_mtime_ns: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub prot: u32,
    pub flags: u32,
    pub kind: u16,
    pub path: Vec<u8>,
}

impl VmaRepr {
    /// From the on-disk struct and path.
    pub fn parse(v: &raw::Vma, path: &[u8]) -> Self {
        VmaRepr {
            start: v.start.get(),
            end: v.end.get(),
            offset: v.offset.get(),
            inode: v.inode.get(),
            file_size: v.file_size.get(),
            file_mtime_ns: v.file_mtime_ns.get(),
            dev_major: v.dev_major.get(),
            dev_minor: v.dev_minor.get(),
            prot: v.prot.get(),
            flags: v.flags.get(),
            kind: v.kind.get(),
            path: path.to_vec(),
        }
    }
    /// To the on-disk struct (`path_len` from `path`).
    pub fn to_raw(&self) -> raw::Vma {
        raw::Vma {
            start: self.start.into(),
            end: self.end.into(),
            offset: self.offset.into(),
            inode: self.inode.into(),
            file_size: self.file_size.into(),
            file_mtime_ns: self.file_mtime_ns.into(),
            dev_major: self.dev_major.into(),
            dev_minor: self.dev_minor.into(),
            prot: self.prot.into(),
            flags: self.flags.into(),
            kind: self.kind.into(),
            path_len: u16::try_from(self.path.len()).unwrap_or(u16::MAX).into(),
            _reserved0: 0.into(),
        }
    }
}

/// One page run (§8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRepr {
    /// First address.
    pub addr: u64,
    /// Pages.
    pub pages: u32,
    /// What they are.
    pub kind: RunKind,
}

impl RunRepr {
    /// To the on-disk entry.
    pub fn to_raw(&self) -> PageRun {
        PageRun {
            addr: self.addr.into(),
            pages: self.pages.into(),
            kind: self.kind.to_raw().into(),
            _reserved0: 0.into(),
        }
    }
}

/// A Pages record (§8): runs, and the data of the data runs concatenated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagesRepr {
    /// Runs in address order.
    pub runs: Vec<RunRepr>,
    /// Page data.
    pub data: Vec<u8>,
}

/// A record after the Mm: the state records (§15 to §19), VMAs with their attributes and
/// pages, and records of unknown kind carried through. The writer checks their order (§2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyRepr {
    /// §15, with its FileData records (§16).
    File(FileRepr),
    /// §17 (boxed: 64 dispositions would make every entry 2 KiB).
    Signals(alloc::boxed::Box<SignalsRepr>),
    /// §18.
    Timers(TimersRepr),
    /// §19.
    Process(ProcessRepr),
    /// §21, with its InotifyWatch records (§22).
    Inotify(InotifyRepr),
    /// §23.
    Lock(LockRepr),
    /// §7.
    Vma(VmaRepr),
    /// §20: the `VMA_ATTR_*` bits of the Vma just before.
    VmaAttr(u32),
    /// §24: the bytes of the vDSO, whose Vma (and VmaAttr, if any) is just before.
    VdsoData(Vec<u8>),
    /// §8.
    Pages(PagesRepr),
    /// A non-critical record of unknown kind.
    Unknown {
        /// Kind.
        kind: u16,
        /// Payload (a multiple of 8 bytes).
        payload: Vec<u8>,
    },
}

/// A whole image, owned. The Tail is derived when emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRepr {
    /// §3.
    pub header: HeaderRepr,
    /// §4.
    pub task: TaskRepr,
    /// §5.
    pub regs: RegsRepr,
    /// §6.
    pub mm: MmRepr,
    /// Every record after the Mm but the Tail, in order: state records, VMAs, their
    /// attributes and Pages, unknown records.
    pub body: Vec<BodyRepr>,
}

impl ImageRepr {
    /// Reads a validated image into owned values.
    pub fn parse(img: &Image<'_>) -> Self {
        let mut out = ImageRepr {
            header: HeaderRepr::parse(img.header()),
            task: TaskRepr {
                pid: 0,
                tgid: 0,
                ppid: 0,
                pgid: 0,
                sid: 0,
                state: 0,
                exit_signal: 0,
                personality: 0,
                uid: [0; 4],
                gid: [0; 4],
                sig_blocked: 0,
                sig_ignored: 0,
                sig_caught: 0,
                sig_pending: 0,
                sig_shared_pending: 0,
                cap_inheritable: 0,
                cap_permitted: 0,
                cap_effective: 0,
                comm: [0; 16],
                umask: 0,
            },
            regs: RegsRepr {
                arch: 0,
                xfeatures: 0,
                gpr: [0; X86_64_GPR_COUNT],
                fxsave: [0; FXSAVE_LEN],
                xsave: Vec::new(),
            },
            mm: MmRepr {
                start_code: 0,
                end_code: 0,
                start_data: 0,
                end_data: 0,
                start_brk: 0,
                brk: 0,
                start_stack: 0,
                arg_start: 0,
                arg_end: 0,
                env_start: 0,
                env_end: 0,
                auxv: Vec::new(),
                exe: Vec::new(),
            },
            body: Vec::new(),
        };
        for r in img.records() {
            match r.record {
                Record::Header(_) | Record::Tail(_) => {}
                Record::File(f) => out.body.push(BodyRepr::File(FileRepr::parse(&f))),
                // A validated image has a FileData only right after its File or another
                // FileData (§16), so the last body entry is its File.
                Record::FileData(d) => {
                    if let Some(BodyRepr::File(f)) = out.body.last_mut() {
                        f.contents.push(d.bytes.to_vec());
                    }
                }
                Record::Signals(x) => out
                    .body
                    .push(BodyRepr::Signals(SignalsRepr::parse(&x).into())),
                Record::Timers(x) => out.body.push(BodyRepr::Timers(TimersRepr::parse(&x))),
                Record::Process(x) => out.body.push(BodyRepr::Process(ProcessRepr::parse(&x))),
                Record::VmaAttr(a) => out.body.push(BodyRepr::VmaAttr(a.attrs.get())),
                Record::Inotify(n) => out.body.push(BodyRepr::Inotify(InotifyRepr::parse(n))),
                // Right after its Inotify or another watch (§22), like FileData.
                Record::InotifyWatch(x) => {
                    if let Some(BodyRepr::Inotify(n)) = out.body.last_mut() {
                        n.watches.push(WatchRepr::parse(&x));
                    }
                }
                Record::Lock(l) => out.body.push(BodyRepr::Lock(LockRepr::parse(l))),
                Record::VdsoData(d) => out.body.push(BodyRepr::VdsoData(d.bytes.to_vec())),
                Record::Task(t) => out.task = TaskRepr::parse(t),
                Record::Regs(x) => {
                    out.regs = RegsRepr {
                        arch: x.raw.arch.get(),
                        xfeatures: x.raw.xfeatures.get(),
                        gpr: x.raw.gpr.map(|g| g.get()),
                        fxsave: x.raw.fxsave,
                        xsave: x.xsave.to_vec(),
                    }
                }
                Record::Mm(m) => {
                    let f = m.raw;
                    out.mm = MmRepr {
                        start_code: f.start_code.get(),
                        end_code: f.end_code.get(),
                        start_data: f.start_data.get(),
                        end_data: f.end_data.get(),
                        start_brk: f.start_brk.get(),
                        brk: f.brk.get(),
                        start_stack: f.start_stack.get(),
                        arg_start: f.arg_start.get(),
                        arg_end: f.arg_end.get(),
                        env_start: f.env_start.get(),
                        env_end: f.env_end.get(),
                        auxv: m
                            .auxv
                            .iter()
                            .map(|e| (e.key.get(), e.value.get()))
                            .collect(),
                        exe: m.exe.to_vec(),
                    }
                }
                Record::Vma(v) => out.body.push(BodyRepr::Vma(VmaRepr::parse(v.raw, v.path))),
                Record::Pages(p) => out.body.push(BodyRepr::Pages(PagesRepr {
                    runs: p
                        .iter()
                        .map(|r| RunRepr {
                            addr: r.addr,
                            pages: r.pages,
                            kind: r.kind,
                        })
                        .collect(),
                    data: p.data.unwrap_or(&[]).to_vec(),
                })),
                Record::Unknown(u) => out.body.push(BodyRepr::Unknown {
                    kind: u.kind,
                    payload: u.payload.to_vec(),
                }),
            }
        }
        out
    }

    /// Writes the image to `sink` (every check of the reader applies).
    pub fn emit<S: Sink>(&self, sink: S) -> Result<Summary> {
        let mut w = Writer::new(sink);
        w.header(&self.header.to_raw())?;
        w.task(&self.task.to_raw())?;
        w.regs(&self.regs.to_raw(), &self.regs.xsave)?;
        let (mm, auxv) = self.mm.to_raw();
        w.mm(&mm, &auxv, &self.mm.exe)?;
        let mut runs = Vec::new();
        for b in &self.body {
            match b {
                BodyRepr::File(f) => f.emit(&mut w)?,
                BodyRepr::Signals(x) => x.emit(&mut w)?,
                BodyRepr::Timers(x) => x.emit(&mut w)?,
                BodyRepr::Process(x) => x.emit(&mut w)?,
                BodyRepr::Inotify(x) => x.emit(&mut w)?,
                BodyRepr::Lock(x) => w.lock(&x.to_raw())?,
                BodyRepr::VdsoData(b) => w.vdso_data(b)?,
                BodyRepr::VmaAttr(a) => w.vma_attr(&raw::VmaAttr {
                    attrs: (*a).into(),
                    _reserved0: 0.into(),
                })?,
                BodyRepr::Vma(v) => w.vma(&v.to_raw(), &v.path)?,
                BodyRepr::Pages(p) => {
                    runs.clear();
                    runs.extend(p.runs.iter().map(RunRepr::to_raw));
                    w.pages(&runs, &p.data)?
                }
                BodyRepr::Unknown { kind, payload } => w.unknown(*kind, payload)?,
            }
        }
        w.finish()
    }

    /// The image as bytes.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.emit(&mut v)?;
        Ok(v)
    }
}

#[cfg(feature = "arbitrary")]
mod arb;
