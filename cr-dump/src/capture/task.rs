//! The task's state besides its memory, read while it is frozen: registers, `/proc` fields, the
//! Header, Task and Mm records ([`Meta`]), and its VMAs.
//!
//! `Mm::brk`: `/proc` does not show the current program break; this crate records the end of
//! the `[heap]` VMA (the page-aligned upper bound of the break), or `start_brk` without a heap.

use super::check::{check_maps, check_threads, read_text, Inspection};
use super::freeze::gone_or;
use super::vma::VmaRec;
use crate::error::{Error, Result};
use crate::procfs::{self, MapsEntry, Stat, Status};
use crate::sys::{self, Tracee};
use cr_format::raw::{self, AuxvEntry};
use cr_format::write::{Sink, Writer};
use std::time::SystemTime;
use zerocopy::FromZeros;

/// Everything of an image but the VMAs and pages.
#[derive(Clone, Debug)]
pub struct Meta {
    /// Header.
    pub header: raw::Header,
    /// Task.
    pub task: raw::Task,
    /// Registers.
    pub regs: raw::RegsX86_64,
    /// XSAVE area.
    pub xsave: Vec<u8>,
    /// Mm fields.
    pub mm: raw::Mm,
    /// Auxiliary vector.
    pub auxv: Vec<AuxvEntry>,
    /// Executable path.
    pub exe: Vec<u8>,
    /// Files, signals, timers, limits and attributes (§15 to §19).
    pub state: super::state::TaskState,
}

impl Meta {
    /// Writes Header, Task, Regs and Mm.
    pub fn write<S: Sink>(&self, w: &mut Writer<S>) -> Result<()> {
        w.header(&self.header)?;
        w.task(&self.task)?;
        w.regs(&self.regs, &self.xsave)?;
        w.mm(&self.mm, &self.auxv, &self.exe)?;
        self.state.write(w)
    }
}

fn header(crid: u64, page_size: u32) -> raw::Header {
    let mut h = raw::Header::new_zeroed();
    h.magic = raw::MAGIC;
    h.version_major = raw::VERSION_MAJOR.into();
    h.version_minor = raw::VERSION_MINOR.into();
    h.arch = raw::ARCH_X86_64.into();
    h.page_size = page_size.into();
    h.crid = crid.into();
    // A clock before 1970 says 0 ("unknown"); past 2554 it saturates.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    h.created_ns = now.into();
    let p = crate::PRODUCER.as_bytes();
    for (d, s) in h.producer.iter_mut().zip(p) {
        *d = *s;
    }
    h
}

/// The registers of the frozen task `t`, as the image keeps them, and its XSAVE area.
fn read_regs(t: Tracee) -> Result<(raw::RegsX86_64, Vec<u8>)> {
    let pid = t.pid();
    let mut r = raw::RegsX86_64::new_zeroed();
    r.arch = raw::ARCH_X86_64.into();
    let mut gpr = [0u8; raw::X86_64_GPR_COUNT * 8];
    let n = t
        .regset(sys::NT_PRSTATUS, &mut gpr)
        .map_err(|e| gone_or(pid, e, "PTRACE_GETREGSET(NT_PRSTATUS)"))?;
    if n != gpr.len() {
        return Err(Error::Other(format!(
            "PTRACE_GETREGSET(NT_PRSTATUS) gave {n} bytes, expected {}",
            gpr.len()
        )));
    }
    for (d, s) in r.gpr.iter_mut().zip(gpr.chunks_exact(8)) {
        let b: [u8; 8] = s
            .try_into()
            .map_err(|_| Error::Other("internal: register chunk is not 8 bytes".into()))?;
        *d = u64::from_le_bytes(b).into();
    }
    let n = t
        .regset(sys::NT_PRFPREG, &mut r.fxsave)
        .map_err(|e| gone_or(pid, e, "PTRACE_GETREGSET(NT_PRFPREG)"))?;
    if n != raw::FXSAVE_LEN {
        return Err(Error::Other(format!(
            "PTRACE_GETREGSET(NT_PRFPREG) gave {n} bytes, expected {}",
            raw::FXSAVE_LEN
        )));
    }
    let mut xsave = vec![0u8; cr_format::limits::MAX_XSAVE_LEN as usize];
    match t.regset(sys::NT_X86_XSTATE, &mut xsave) {
        Ok(n) => xsave.truncate(n),
        Err(e)
            if e.raw_os_error() == Some(libc::ENODEV) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            xsave.clear()
        }
        Err(e) => return Err(gone_or(pid, e, "PTRACE_GETREGSET(NT_X86_XSTATE)")),
    }
    // The kernel stores XCR0 in the software-reserved bytes 464..472 of the area; without an
    // XSAVE area (no XSAVE on this CPU) there are no extended features: 0.
    let xcr0 = xsave
        .get(464..472)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    r.xfeatures = xcr0.into();
    Ok((r, xsave))
}

/// The line of the fidelity report for a task whose nice value or policy is not the default
/// (read before the freeze, which raises the nice value): neither is in the image.
fn scheduling(stat: &Stat) -> Option<super::state::Fidelity> {
    if stat.nice == 0 && stat.policy == 0 {
        return None;
    }
    let policy = match stat.policy {
        0 => "SCHED_OTHER".to_string(),
        1 => "SCHED_FIFO".to_string(),
        2 => "SCHED_RR".to_string(),
        3 => "SCHED_BATCH".to_string(),
        5 => "SCHED_IDLE".to_string(),
        6 => "SCHED_DEADLINE".to_string(),
        n => format!("policy {n}"),
    };
    Some(super::state::Fidelity {
        item: "scheduling".into(),
        kind: format!("nice {}, {policy}", stat.nice),
        action: super::state::Action::Partial,
        note: "not in the image (format 1.2 has no field for it): the restored task runs at \
               restore's own nice value and policy"
            .into(),
    })
}

/// The Task record from `/proc`; `before` is the state letter before the freeze.
fn task_record(status: &Status, stat: &Stat, before: u8, personality: u32) -> Result<raw::Task> {
    let mut t = raw::Task::new_zeroed();
    let u32of = |what: &str, v: i32| {
        u32::try_from(v).map_err(|_| Error::Proc(format!("{what} {v} is negative")))
    };
    t.pid = u32of("pid", status.pid)?.into();
    t.tgid = u32of("tgid", status.tgid)?.into();
    t.ppid = u32of("ppid", stat.ppid)?.into();
    t.pgid = u32of("pgrp", stat.pgrp)?.into();
    t.sid = u32of("session", stat.session)?.into();
    // The state before the freeze (now it is a tracing stop).
    t.state = if before.is_ascii_alphabetic() {
        before
    } else {
        b'S'
    };
    t.exit_signal = stat.exit_signal.into();
    t.personality = personality.into();
    for (d, s) in t.uid.iter_mut().zip(status.uid) {
        *d = s.into();
    }
    for (d, s) in t.gid.iter_mut().zip(status.gid) {
        *d = s.into();
    }
    t.sig_blocked = status.sig_blk.into();
    t.sig_ignored = status.sig_ign.into();
    t.sig_caught = status.sig_cgt.into();
    t.sig_pending = status.sig_pnd.into();
    t.sig_shared_pending = status.shd_pnd.into();
    t.cap_inheritable = status.cap_inh.into();
    t.cap_permitted = status.cap_prm.into();
    t.cap_effective = status.cap_eff.into();
    for (d, s) in t
        .comm
        .iter_mut()
        .zip(stat.comm.bytes().take_while(|&b| b != 0))
    {
        *d = s;
    }
    t.umask = status.umask.into();
    Ok(t)
}

/// The Mm record; `heap_end` is the end of `[heap]` if there is one.
fn mm_record(stat: &Stat, heap_end: Option<u64>) -> raw::Mm {
    let heap_end = heap_end.unwrap_or(stat.start_brk);
    let mut mm = raw::Mm::new_zeroed();
    mm.start_code = stat.start_code.into();
    mm.end_code = stat.end_code.max(stat.start_code).into();
    mm.start_data = stat.start_data.into();
    mm.end_data = stat.end_data.max(stat.start_data).into();
    mm.start_brk = stat.start_brk.into();
    mm.brk = heap_end.max(stat.start_brk).into();
    mm.start_stack = stat.start_stack.into();
    mm.arg_start = stat.arg_start.into();
    mm.arg_end = stat.arg_end.max(stat.arg_start).into();
    mm.env_start = stat.env_start.into();
    mm.env_end = stat.env_end.max(stat.env_start).into();
    mm
}

/// What is read of the frozen task besides its mappings: all of [`Meta`] but the Mm record,
/// the VMAs and their fidelity lines, which [`complete`] adds once the mappings are known (a
/// capture by a twin reads them from the twin after the task runs again).
pub(crate) struct Frame {
    header: raw::Header,
    task: raw::Task,
    regs: raw::RegsX86_64,
    xsave: Vec<u8>,
    auxv: Vec<AuxvEntry>,
    exe: Vec<u8>,
    stat: Stat,
    state: super::state::TaskState,
}

/// `/proc/PID/status` and `stat` of the frozen task, refused if it has threads now.
pub(crate) fn read_status_frozen(pid: i32) -> Result<(Status, Stat)> {
    let status = procfs::parse_status(&read_text(pid, "status")?)?;
    let stat = procfs::parse_stat(&read_text(pid, "stat")?)?;
    check_threads(pid, &status)?;
    Ok((status, stat))
}

/// Reads the frozen task's registers, `/proc` fields and state besides memory (files,
/// signals, ...), given its `status` and `stat` read while frozen.
pub(crate) fn read_frame(
    ins: &Inspection,
    crid: u64,
    page_size: u32,
    state_opts: &super::options::StateOptions,
    (status, stat): (Status, Stat),
) -> Result<Frame> {
    let pid = ins.pid;
    // Frozen by the caller: `ins` was taken before the freeze, and so only names the task.
    let (regs, xsave) = read_regs(Tracee::new(pid))?;
    let personality = procfs::parse_personality(&read_text(pid, "personality")?)?;
    let auxv: Vec<AuxvEntry> = procfs::parse_auxv(&procfs::read(pid, "auxv")?)
        .into_iter()
        .take(cr_format::limits::MAX_AUXV as usize)
        .map(|(k, v)| AuxvEntry {
            key: k.into(),
            value: v.into(),
        })
        .collect();
    let exe = std::fs::read_link(procfs::path(pid, "exe"))
        .map_err(|e| procfs::proc_err(pid, "exe", e))?;
    let mut exe = exe.into_os_string().into_encoded_bytes();
    exe.truncate(cr_format::limits::MAX_PATH as usize);
    let mut task = task_record(&status, &stat, ins.stat.state, personality)?;
    // Not `SigBlk`: stopped inside `sigsuspend` (a program waiting for a signal it otherwise
    // blocks), that is the call's temporary mask. Restored with it, the program would leave
    // the signal unblocked outside the call, take it there, and then wait for it forever.
    let blocked = crate::sys::taskstate::get_sigmask(pid)
        .map_err(|e| gone_or(pid, e, "PTRACE_GETSIGMASK"))?;
    task.sig_blocked = blocked.into();
    let mut state = super::state::capture(pid, state_opts)?;
    if let Some(f) = scheduling(&ins.stat) {
        state.fidelity.push(f);
    }
    Ok(Frame {
        header: header(crid, page_size),
        task,
        regs,
        xsave,
        auxv,
        exe,
        stat,
        state,
    })
}

/// [`Meta`] and the VMAs from `frame` and the task's mappings at the freeze (`maps`, with
/// `attrs`: one per mapping), read from process `from` (the task while frozen, or its twin);
/// with `--strict`, refuses what would not be restored exactly.
pub(crate) fn complete(
    pid: i32,
    frame: Frame,
    from: i32,
    (maps, attrs): (&[MapsEntry], &[u32]),
    state_opts: &super::options::StateOptions,
) -> Result<(Meta, Vec<VmaRec>)> {
    let heap_end = maps.iter().find(|m| m.path == "[heap]").map(|m| m.end);
    let mm = mm_record(&frame.stat, heap_end);
    let vmas = super::vma::vma_recs_with(from, maps, attrs);
    let mut state = frame.state;
    state
        .fidelity
        .extend(super::vma::fidelity(&vmas, &state.files));
    super::state::strict_check(pid, &state, state_opts)?;
    Ok((
        Meta {
            header: frame.header,
            task: frame.task,
            regs: frame.regs,
            xsave: frame.xsave,
            mm,
            auxv: frame.auxv,
            exe: frame.exe,
            state,
        },
        vmas,
    ))
}

/// Reads the task's state while it is frozen; re-checks what could have changed since
/// [`crate::capture::inspect`]. Returns the metadata and the VMAs.
pub(crate) fn read_frozen(
    ins: &Inspection,
    crid: u64,
    page_size: u32,
    state_opts: &super::options::StateOptions,
) -> Result<(Meta, Vec<VmaRec>)> {
    let pid = ins.pid;
    let st = read_status_frozen(pid)?;
    let (maps, attrs) = super::vma::read_maps_frozen(ins)?;
    check_maps(pid, &maps)?;
    super::check::check_shared_anon(pid, &maps, super::check::Scope::Descendants)?;
    let frame = read_frame(ins, crid, page_size, state_opts, st)?;
    complete(pid, frame, pid, (&maps, &attrs), state_opts)
}
