//! Steps 1 to 10 of the module docs (but 6, the pages: [`super::pages`]): the injected system
//! calls that turn the child's address space and task state into the image's, then its
//! registers.

use super::child::Child;
use super::plan::{hole, special_areas, Plan};
use super::{other, SCRATCH_LEN};
use crate::error::Result;
use crate::span::AddrRange;
use crate::sys::abi::{self, nr, PrctlMmMap};
use crate::sys::{self, ptrace::zeroed_regs};
use cr_format::raw;
use std::os::fd::AsRawFd;

const RW: u64 = (libc::PROT_READ | libc::PROT_WRITE) as u64;
const PRIVATE_ANON: u64 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;

/// Steps 1 to 4: the child keeps only its vDSO and vvar (moved to the image's addresses) and a
/// scratch area for the structures passed by pointer.
pub(super) fn clear_space(c: &mut Child, plan: &Plan) -> Result<()> {
    let cm = super::plan::task_maps(c.pid())?;
    // 1. rseq.
    let rs = c
        .tracee()
        .rseq()
        .map_err(|e| c.io("rseq configuration", e))?;
    if rs.rseq_abi_pointer != 0 {
        c.call_ok(
            "rseq unregister",
            nr::RSEQ,
            [
                rs.rseq_abi_pointer,
                rs.rseq_abi_size.into(),
                abi::RSEQ_FLAG_UNREGISTER,
                rs.signature.into(),
                0,
                0,
            ],
        )?;
    }
    // 2. Scratch.
    let scratch = plan.scratch;
    let flags = PRIVATE_ANON | abi::MAP_FIXED_NOREPLACE;
    let args = [scratch, SCRATCH_LEN, RW, flags, u64::MAX, 0];
    let got = c.call_ok("mmap scratch", nr::MMAP, args)?;
    if got != scratch {
        return Err(other(format!(
            "scratch mapped at {got:#x}, not {scratch:#x}"
        )));
    }
    // 3. Everything of the child but the special areas and the scratch.
    let special = |p: &str| p == "[vdso]" || p.starts_with("[vvar") || p == "[vsyscall]";
    for (r, _) in cm.iter().filter(|m| !special(&m.1)) {
        c.call_ok("munmap", nr::MUNMAP, [r.start, r.len(), 0, 0, 0, 0])?;
    }
    // 4. The special areas to the image's addresses.
    if plan.delta != 0 {
        move_special(c, plan, &cm)?;
    }
    Ok(())
}

/// Step 4: moves the child's vDSO and vvar by `plan.delta`, through a temporary place so that
/// the old and new ranges never collide.
fn move_special(c: &mut Child, plan: &Plan, cm: &[(AddrRange, String)]) -> Result<()> {
    let sp = special_areas(cm);
    let (Some(lo), Some(hi)) = (
        sp.iter().map(|m| m.start).min(),
        sp.iter().map(|m| m.end).max(),
    ) else {
        return Err(other("the new child has no vDSO or vvar"));
    };
    let vdso_old = cm
        .iter()
        .find(|m| m.1 == "[vdso]")
        .map(|m| m.0.start)
        .ok_or_else(|| other("the new child has no vDSO"))?;
    let delta = plan.delta;
    let mut busy = sp.clone();
    busy.push(AddrRange {
        start: plan.scratch,
        end: plan.scratch + SCRATCH_LEN,
    });
    busy.push(AddrRange {
        start: lo.wrapping_add(delta),
        end: hi.wrapping_add(delta),
    });
    busy.extend(plan.vmas.iter().map(|v| v.range));
    let tmp = hole(&busy, hi - lo).ok_or_else(|| other("no room to move the vDSO"))?;
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    for (from, to) in [(lo, tmp), (tmp, lo.wrapping_add(delta))] {
        for r in &sp {
            let src = r.start - lo + from;
            let dst = r.start - lo + to;
            let len = r.len();
            let got = c.call_ok(
                "mremap vDSO/vvar",
                nr::MREMAP,
                [src, len, len, flags, dst, 0],
            )?;
            if got != dst {
                return Err(other(format!("mremap to {dst:#x} gave {got:#x}")));
            }
            if r.start == vdso_old {
                let inj = c.injector_mut();
                let at = inj.at() - from + to;
                inj.set_at(at);
            }
        }
    }
    Ok(())
}

/// Step 5: the image's VMAs, readable and writable (private ones) until their pages are in.
pub(super) fn map_vmas(c: &Child, plan: &Plan) -> Result<()> {
    for v in plan.vmas.iter().filter(|v| !v.special()) {
        let (start, len) = (v.range.start, v.range.len());
        let fixed = libc::MAP_FIXED as u64;
        let got = if let Some(fi) = v.file {
            let f = plan
                .files
                .get(fi)
                .ok_or_else(|| other(format!("VMA {start:#x}: no file {fi}")))?;
            let fd = u64::try_from(f.as_raw_fd()).map_err(|_| other("a negative descriptor"))?;
            let (prot, flags) = if v.shared() {
                (u64::from(v.prot), libc::MAP_SHARED as u64)
            } else {
                (RW, libc::MAP_PRIVATE as u64)
            };
            let args = [start, len, prot, flags | fixed, fd, v.offset];
            c.call_ok("mmap file", nr::MMAP, args)?
        } else {
            let mut flags = PRIVATE_ANON | fixed;
            if v.flags & raw::VMA_GROWSDOWN != 0 {
                flags |= libc::MAP_GROWSDOWN as u64;
            }
            c.call_ok("mmap", nr::MMAP, [start, len, RW, flags, u64::MAX, 0])?
        };
        if got != start {
            return Err(other(format!("mmap at {start:#x} gave {got:#x}")));
        }
    }
    Ok(())
}

/// Step 7: each private VMA gets its recorded protection.
pub(super) fn protect(c: &Child, plan: &Plan) -> Result<()> {
    for v in plan.vmas.iter().filter(|v| !v.special() && !v.shared()) {
        if u64::from(v.prot) != RW {
            let args = [v.range.start, v.range.len(), v.prot.into(), 0, 0, 0];
            c.call_ok("mprotect", nr::MPROTECT, args)?;
        }
    }
    Ok(())
}

/// Step 8: the mm fields (`prctl(PR_SET_MM, PR_SET_MM_MAP)`); a warning if the executable
/// link cannot be replaced.
pub(super) fn set_mm(c: &Child, plan: &Plan, warnings: &mut Vec<String>) -> Result<()> {
    let m = &plan.mm;
    let scratch = plan.scratch;
    let auxv_at = scratch + 1024;
    c.write(auxv_at, &plan.auxv)?;
    let exe_fd = match &plan.exe {
        Some(f) => u32::try_from(f.as_raw_fd()).map_err(|_| other("a negative descriptor"))?,
        None => u32::MAX, // keep the link
    };
    let mut map = PrctlMmMap {
        start_code: m.start_code.get(),
        end_code: m.end_code.get(),
        start_data: m.start_data.get(),
        end_data: m.end_data.get(),
        start_brk: m.start_brk.get(),
        brk: m.brk.get(),
        start_stack: m.start_stack.get(),
        arg_start: m.arg_start.get(),
        arg_end: m.arg_end.get(),
        env_start: m.env_start.get(),
        env_end: m.env_end.get(),
        auxv: auxv_at,
        auxv_size: u32::try_from(plan.auxv.len()).map_err(|_| other("auxv too long"))?,
        exe_fd,
    };
    c.write_struct(scratch, &map)?;
    let what = "prctl(PR_SET_MM, PR_SET_MM_MAP) (needs CAP_SYS_RESOURCE or CAP_CHECKPOINT_RESTORE)";
    let size = std::mem::size_of::<PrctlMmMap>() as u64;
    let args = [abi::PR_SET_MM, abi::PR_SET_MM_MAP, scratch, size, 0, 0];
    let r = c.call(nr::PRCTL, args)?;
    if r == -i64::from(libc::EBUSY) && exe_fd != u32::MAX {
        // The kernel refuses to replace the executable while the old one (cr-dump's) is still
        // mapped: the image maps cr-dump itself. Keep the link, set the rest.
        warnings.push("/proc/PID/exe stays cr-dump's (the image maps it)".into());
        map.exe_fd = u32::MAX;
        c.write_struct(scratch, &map)?;
        c.call_ok(what, nr::PRCTL, args)?;
    } else if r < 0 {
        return Err(c.errno(what, r));
    }
    Ok(())
}

/// Step 9: signal dispositions (every signal blocked from here), alternate stack,
/// personality, umask, comm; the open files put at their numbers, the working directory and
/// root ([`super::files::place`], before the credentials change: `chroot` needs the caller's
/// `CAP_SYS_CHROOT`); limits, attributes and credentials ([`super::process::apply`]); the
/// timers; the pending signals queued again; the scratch area unmapped; then the image's
/// blocked mask (`PTRACE_SETSIGMASK`: no system call may be injected after this function, or a
/// pending signal would be lost).
pub(super) fn set_task_state(c: &Child, plan: &Plan, fp: &super::files::FilePlan) -> Result<()> {
    let t = &plan.task;
    let scratch = plan.scratch;
    super::signals::actions(c, plan)?;
    let persona = t.personality.get().into();
    c.call_ok("personality", nr::PERSONALITY, [persona, 0, 0, 0, 0, 0])?;
    c.call_ok("umask", nr::UMASK, [t.umask.get().into(), 0, 0, 0, 0, 0])?;
    let mut comm = t.comm.to_vec();
    comm.push(0);
    c.write(scratch, &comm)?;
    let args = [abi::PR_SET_NAME, scratch, 0, 0, 0, 0];
    c.call_ok("prctl(PR_SET_NAME)", nr::PRCTL, args)?;
    super::files::place(c, scratch, fp)?;
    super::process::apply(c, plan)?;
    super::signals::timers(c, plan)?;
    super::signals::queue_pending(c, plan)?;
    let args = [scratch, SCRATCH_LEN, 0, 0, 0, 0];
    c.call_ok("munmap scratch", nr::MUNMAP, args)?;
    super::signals::finish(c, plan)
}

/// Step 10: the FPU/XSAVE state, then the general registers (a task captured inside a system
/// call the kernel would restart gets it issued again).
pub(super) fn set_registers(c: &Child, plan: &Plan) -> Result<()> {
    let t = c.tracee();
    let mut r = zeroed_regs();
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ] = plan.gpr;
    if abi::interrupted_syscall(r.rax, r.orig_rax) {
        r.rax = r.orig_rax;
        r.rip = r.rip.wrapping_sub(2);
        r.orig_rax = u64::MAX;
    }
    if plan.xsave.is_empty() {
        t.set_regset(sys::NT_PRFPREG, &plan.fxsave)
            .map_err(|e| c.io("PTRACE_SETREGSET NT_PRFPREG", e))?;
    } else {
        let mut cur = vec![0u8; 16384];
        let n = t
            .regset(sys::NT_X86_XSTATE, &mut cur)
            .map_err(|e| c.io("PTRACE_GETREGSET NT_X86_XSTATE", e))?;
        if n != plan.xsave.len() {
            return Err(other(format!(
                "the image's XSAVE area is {} bytes, this CPU's {n}",
                plan.xsave.len()
            )));
        }
        t.set_regset(sys::NT_X86_XSTATE, &plan.xsave)
            .map_err(|e| c.io("PTRACE_SETREGSET NT_X86_XSTATE", e))?;
    }
    t.set_regs(&r)
        .map_err(|e| c.io("PTRACE_SETREGS (the image's)", e))
}
