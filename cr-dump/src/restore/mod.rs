//! `cr-dump restore`: restart a single-threaded task from an image chain.
//!
//! # Technique
//!
//! Everything that can be checked without a process is checked first, and a restore that
//! cannot succeed is refused before anything starts: the chain is verified in full
//! ([`crate::inspect::verify`] with `--chain`), the page size must be this machine's, the CPU
//! (XCR0) must enable every XSAVE component the image's XCR0 has, every mapped file must still
//! be the captured one (inode, size and mtime), shared anonymous mappings (whose contents
//! images do not hold) are refused.
//!
//! Then cr-dump opens every mapped file and the executable, and forks a child that does only
//! `ptrace(PTRACE_TRACEME)` and `raise(SIGSTOP)` ([`sys::fork_traced_child`]; with `--detach`
//! it first points 0/1/2 at `/dev/null`). The child inherits the open files at the same
//! descriptor numbers, so it never needs a path. From then on the child runs no code of its
//! own: cr-dump drives it with injected system calls, each one the registers set to a `syscall`
//! instruction of the child's vDSO, one `PTRACE_SINGLESTEP`, the result read from `rax`:
//!
//! 1. `rseq` unregistration (the child inherited cr-dump's rseq area, which the kernel would
//!    otherwise keep writing into whatever is mapped there later);
//! 2. `mmap` of a scratch area (for the few structures passed by pointer) in a hole of both
//!    the child's and the image's layout, `MAP_FIXED_NOREPLACE`;
//! 3. `munmap` of every mapping of the child except the vDSO, the vvar pages and the scratch;
//! 4. `mremap` of the vvar pages and the vDSO to the image's addresses (through a temporary
//!    place, so that the old and new ranges never collide). The image's special areas must
//!    have the same sizes and relative layout as this kernel's (the same kernel), else the
//!    restore is refused before the fork;
//! 5. for each VMA of the image: anonymous (heap and stack too, the stack `MAP_GROWSDOWN`)
//!    `mmap(MAP_FIXED|MAP_PRIVATE|MAP_ANONYMOUS)`, private file mappings `mmap(MAP_FIXED|
//!    MAP_PRIVATE)` of the inherited descriptor at the recorded offset, shared file mappings
//!    `MAP_SHARED`; everything readable and writable at first;
//! 6. the pages: every data page resolved through the chain is written with `pwrite` on
//!    `/proc/PID/mem` (coalesced into one write per contiguous stretch of the image file);
//!    zero pages of file mappings are written as zeros; pages that are not present stay fresh
//!    zero pages (anonymous) or the file's bytes (file mappings); shared file mappings are not
//!    written (the file is their contents);
//! 7. `mprotect` of each VMA to its recorded protection;
//! 8. `prctl(PR_SET_MM, PR_SET_MM_MAP)` with the image's code, data, brk, stack, argument and
//!    environment ranges, auxv and the executable (needs `CAP_SYS_RESOURCE` or
//!    `CAP_CHECKPOINT_RESTORE`; a failure aborts the restore);
//! 9. signal dispositions (ignored signals `SIG_IGN`, the others `SIG_DFL`), the blocked mask,
//!    no alternate signal stack, personality, umask, comm, no clear-child-tid address;
//!    `close_range(3, ~0)` (only 0/1/2 stay open); `munmap` of the scratch area;
//! 10. the registers: `PTRACE_SETREGSET` `NT_X86_XSTATE` with the XSAVE area (or `NT_PRFPREG`
//!     with the FXSAVE area if the image has none), then `PTRACE_SETREGS` with the general
//!     registers, `fs_base` and `gs_base` included. A task captured inside an interrupted
//!     system call (`rax` = -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND or
//!     -ERESTART_RESTARTBLOCK, `orig_rax` the call) gets `rax = orig_rax`, `rip -= 2` and
//!     `orig_rax = -1`: it issues the same system call again with the same arguments (for a
//!     relative sleep, the whole duration again);
//! 11. `PTRACE_DETACH` (with `SIGSTOP` for `--stopped`): the task runs.
//!
//! Pages are written, not mapped from the image file: a restored anonymous VMA stays anonymous
//! (mapping the page-aligned data of the image privately would make restore time independent
//! of the image's size, but the VMAs would become file mappings of the image). Measured here for
//! a 1 GiB image (release build): restore 0.55 s in total, of which 0.12 s is the verification
//! of the chain; the rest runs at the page-write limit of FACTS.md (2.3 GiB/s into fresh
//! pages); the checkpoint of the same target takes 0.7 s.
//!
//! # Self-checkpoint
//!
//! [`checkpoint_self`] is the seed's contract: a single-threaded program checkpoints itself,
//! gets the CRID back, and a task restored from that image returns from the same call with 0.
//!
//! # What differs from the original
//!
//! - The pid (no pid namespace is used), and the parent: the restored task is a child of
//!   `cr-dump restore`, which waits for it and exits with its status unless `--detach`.
//! - Descriptors: images hold none. The task has cr-dump's 0/1/2 (or `/dev/null`).
//! - Credentials: the task keeps the caller's; if the image recorded others, a warning says so.
//! - Signal handlers: images record only which signals are caught, not the handlers; caught
//!   signals get `SIG_DFL` and a warning names them. Pending signals are not restored.
//! - rseq: the restored task has no rseq area registered (images do not record it); glibc then
//!   keeps reading the CPU number cached at the checkpoint.
//! - The working directory is cr-dump's (images do not record it).
//! - Single-threaded tasks only (so are images).

use crate::error::{Error, Result};
use crate::inspect::{image_error, load_chain};
use crate::procfs;
use crate::sys;
use cr_format::chain::{Chain, ChainIndex, Resolved};
use cr_format::raw;
use cr_format::read::{Image, Record, RunKind};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Leave the task stopped (`SIGSTOP`) instead of letting it run.
    pub stopped: bool,
    /// Point the task's 0/1/2 at `/dev/null` instead of cr-dump's.
    pub detach: bool,
}

/// A restored task.
#[derive(Debug)]
pub struct Restored {
    /// Its pid (a child of this process).
    pub pid: i32,
    /// What could not be restored exactly, one line each.
    pub warnings: Vec<String>,
}

// x86-64 system call numbers.
const SYS_MMAP: u64 = 9;
const SYS_MPROTECT: u64 = 10;
const SYS_MUNMAP: u64 = 11;
const SYS_RT_SIGACTION: u64 = 13;
const SYS_RT_SIGPROCMASK: u64 = 14;
const SYS_MREMAP: u64 = 25;
const SYS_CLOSE: u64 = 3;
const SYS_UMASK: u64 = 95;
const SYS_PERSONALITY: u64 = 135;
const SYS_SIGALTSTACK: u64 = 131;
const SYS_PRCTL: u64 = 157;
const SYS_SET_TID_ADDRESS: u64 = 218;
const SYS_RSEQ: u64 = 334;
const SYS_CLOSE_RANGE: u64 = 436;

const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const PR_SET_NAME: u64 = 15;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;
/// Size of the scratch area.
const SCRATCH_LEN: u64 = 64 << 10;

/// One VMA to create.
#[derive(Clone, Debug)]
struct VmaPlan {
    start: u64,
    end: u64,
    offset: u64,
    prot: u32,
    flags: u32,
    kind: u16,
    /// Index into the opened files (file mappings).
    file: Option<usize>,
}

impl VmaPlan {
    fn special(&self) -> bool {
        matches!(self.kind, raw::VMA_VDSO | raw::VMA_VVAR | raw::VMA_VSYSCALL)
    }
    fn shared(&self) -> bool {
        self.flags & raw::VMA_SHARED != 0
    }
}

fn other(m: impl Into<String>) -> Error {
    Error::Other(m.into())
}

fn mtime_ns(md: &std::fs::Metadata) -> u64 {
    (md.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(md.mtime_nsec() as u64)
}

/// Does `[a, a+len)` overlap any of `ranges`?
fn overlaps(ranges: &[(u64, u64)], a: u64, len: u64) -> bool {
    ranges.iter().any(|&(s, e)| a < e && s < a + len)
}

/// A free place of `len` bytes, avoiding `ranges`, between 4 GiB and 64 TiB, 1 GiB apart.
fn hole(ranges: &[(u64, u64)], len: u64) -> Option<u64> {
    (4u64..64 * 1024)
        .map(|g| g << 30)
        .find(|&a| !overlaps(ranges, a, len))
}

/// The child being turned into the restored task; killed when dropped unless released.
struct Child {
    pid: i32,
    /// A `syscall` instruction in its vDSO.
    at: u64,
    /// Registers to start each injected call from.
    base: libc::user_regs_struct,
    mem: Option<File>,
    armed: bool,
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.armed {
            let _ = sys::kill(self.pid, libc::SIGKILL);
            let _ = sys::waitpid(self.pid);
        }
    }
}

impl Child {
    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} (restoring into pid {})", self.pid), e)
    }

    /// Runs system call `nr` in the child; its result (negative errno on failure).
    fn call(&self, nr: u64, args: [u64; 6]) -> Result<i64> {
        let pid = self.pid;
        let mut r = self.base;
        r.rip = self.at;
        r.rax = nr;
        r.orig_rax = u64::MAX;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
        sys::ptrace_setregs(pid, &r).map_err(|e| self.io("PTRACE_SETREGS", e))?;
        loop {
            sys::ptrace_singlestep(pid).map_err(|e| self.io("PTRACE_SINGLESTEP", e))?;
            match sys::waitpid(pid).map_err(|e| self.io("waitpid", e))? {
                sys::WaitStatus::Stopped { sig, event: 0 } if sig == libc::SIGTRAP => {
                    let now = sys::ptrace_getregs(pid).map_err(|e| self.io("PTRACE_GETREGS", e))?;
                    if now.rip != self.at + 2 {
                        return Err(other(format!(
                            "injected system call {nr} in pid {pid} stopped at {:#x}, not {:#x}",
                            now.rip,
                            self.at + 2
                        )));
                    }
                    return Ok(now.rax as i64);
                }
                // Any other signal (none is expected: nothing else knows this child) is dropped.
                sys::WaitStatus::Stopped { .. } | sys::WaitStatus::Other => {}
                sys::WaitStatus::Exited(c) => {
                    return Err(other(format!(
                        "the restored task {pid} exited ({c}) during system call {nr}"
                    )))
                }
                sys::WaitStatus::Signaled(s) => {
                    return Err(other(format!(
                        "the restored task {pid} was killed by signal {s} during system call {nr}"
                    )))
                }
            }
        }
    }

    /// As [`Child::call`], failing on a negative result with `what`.
    fn call_ok(&self, what: &str, nr: u64, args: [u64; 6]) -> Result<u64> {
        let r = self.call(nr, args)?;
        if r < 0 {
            let e = std::io::Error::from_raw_os_error(i32::try_from(-r).unwrap_or(libc::EINVAL));
            return Err(self.io(what, e));
        }
        Ok(r as u64)
    }

    fn write(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        let Some(mem) = &self.mem else {
            return Err(other("no /proc/PID/mem"));
        };
        mem.write_all_at(bytes, addr)
            .map_err(|e| self.io(&format!("writing {} bytes at {addr:#x}", bytes.len()), e))
    }
}

/// The child's mappings: (start, end, path).
fn child_maps(pid: i32) -> Result<Vec<(u64, u64, String)>> {
    let maps = procfs::parse_maps(&String::from_utf8_lossy(&procfs::read(pid, "maps")?))?;
    Ok(maps.into_iter().map(|m| (m.start, m.end, m.path)).collect())
}

/// The address of a `syscall` instruction (0f 05) in `[start, end)` of the child.
fn find_syscall(mem: &File, start: u64, end: u64) -> Result<u64> {
    let mut b = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
    mem.read_exact_at(&mut b, start)
        .map_err(|e| Error::io("reading the vDSO of the restored task", e))?;
    let i = b
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .ok_or_else(|| other("no syscall instruction in the vDSO"))?;
    Ok(start + i as u64)
}

/// Everything taken from the image before the fork.
struct Plan {
    vmas: Vec<VmaPlan>,
    files: Vec<File>,
    exe: Option<File>,
    gpr: [u64; raw::X86_64_GPR_COUNT],
    fxsave: Vec<u8>,
    xsave: Vec<u8>,
    mm: raw::Mm,
    auxv: Vec<u8>,
    task: raw::Task,
    warnings: Vec<String>,
}

fn plan(path: &Path, images: &[Image<'_>]) -> Result<Plan> {
    let top = &images[0];
    let ps = sys::page_size();
    if top.page_size() as usize != ps {
        return Err(other(format!(
            "{}: page size {} differs from this machine's ({ps})",
            path.display(),
            top.page_size()
        )));
    }
    if !cfg!(target_arch = "x86_64") {
        return Err(other(
            "restore needs an x86-64 machine (the image is x86-64)",
        ));
    }
    let regs = top
        .regs()
        .ok_or_else(|| other("the image has no registers"))?;
    let mm = top
        .mm()
        .ok_or_else(|| other("the image has no Mm record"))?;
    let task = *top
        .task()
        .ok_or_else(|| other("the image has no Task record"))?;
    let xf = regs.raw.xfeatures.get();
    if !regs.xsave.is_empty() {
        let cpu = sys::xcr0().unwrap_or(0);
        if xf & !cpu != 0 {
            return Err(other(format!(
                "the image uses XSAVE features {:#x} (XCR0 {xf:#x}) that this CPU does not enable (XCR0 {cpu:#x})",
                xf & !cpu
            )));
        }
    }
    let mut gpr = [0u64; raw::X86_64_GPR_COUNT];
    for (i, g) in gpr.iter_mut().enumerate() {
        *g = regs.gpr(i);
    }
    let mut files: Vec<File> = Vec::new();
    let mut file_paths: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut vmas = Vec::new();
    for v in top.vmas() {
        let mut p = VmaPlan {
            start: v.start(),
            end: v.end(),
            offset: v.raw.offset.get(),
            prot: v.raw.prot.get(),
            flags: v.raw.flags.get(),
            kind: v.kind(),
            file: None,
        };
        let shared = p.shared();
        if shared && p.kind != raw::VMA_FILE && !p.special() {
            return Err(other(format!(
                "shared anonymous mapping {:#x}-{:#x}: images do not hold its contents",
                p.start, p.end
            )));
        }
        if p.kind == raw::VMA_FILE {
            let fp = Path::new(std::ffi::OsStr::from_bytes(v.path));
            let md = std::fs::metadata(fp).map_err(|e| {
                other(format!(
                    "mapped file {} ({:#x}-{:#x}): {e}",
                    fp.display(),
                    p.start,
                    p.end
                ))
            })?;
            if md.ino() != v.raw.inode.get()
                || md.size() != v.raw.file_size.get()
                || mtime_ns(&md) != v.raw.file_mtime_ns.get()
            {
                return Err(other(format!(
                    "mapped file {} changed since the checkpoint (inode {} size {} mtime {} ns, \
                     recorded {} {} {})",
                    fp.display(),
                    md.ino(),
                    md.size(),
                    mtime_ns(&md),
                    v.raw.inode.get(),
                    v.raw.file_size.get(),
                    v.raw.file_mtime_ns.get()
                )));
            }
            let rw = shared && p.prot & raw::PROT_WRITE != 0;
            let i = match file_paths.iter().position(|(q, w)| q == v.path && *w == rw) {
                Some(i) => i,
                None => {
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(rw)
                        .open(fp)
                        .map_err(|e| other(format!("open {}: {e}", fp.display())))?;
                    files.push(f);
                    file_paths.push((v.path.to_vec(), rw));
                    files.len() - 1
                }
            };
            p.file = Some(i);
        }
        vmas.push(p);
    }
    let mut warnings = Vec::new();
    let exe = if mm.exe.is_empty() {
        None
    } else {
        let ep = Path::new(std::ffi::OsStr::from_bytes(mm.exe));
        match File::open(ep) {
            Ok(f) => Some(f),
            Err(e) => {
                warnings.push(format!(
                    "executable {} cannot be opened ({e}): /proc/PID/exe stays cr-dump's",
                    ep.display()
                ));
                None
            }
        }
    };
    let mut auxv = Vec::new();
    for e in mm.auxv {
        auxv.extend(e.key.get().to_le_bytes());
        auxv.extend(e.value.get().to_le_bytes());
    }
    Ok(Plan {
        vmas,
        files,
        exe,
        gpr,
        fxsave: regs.raw.fxsave.to_vec(),
        xsave: regs.xsave.to_vec(),
        mm: *mm.raw,
        auxv,
        task,
        warnings,
    })
}

/// Restores the image at `path` (its ancestors found beside it) into a new child process and
/// lets it run (or leaves it stopped). The caller should wait for the returned pid.
pub fn restore(path: &Path, opts: &Options) -> Result<Restored> {
    crate::inspect::verify(path, true, false)?;
    let maps = load_chain(path)?;
    let images = maps
        .iter()
        .map(|m| Image::parse_metadata(m.bytes()).map_err(|e| image_error(&m.path, e, None)))
        .collect::<Result<Vec<_>>>()?;
    let chain = Chain::new(&images).map_err(|e| image_error(path, e, None))?;
    let idx = ChainIndex::new(&chain);
    let mut plan = plan(path, &images)?;

    // The special areas of the image against this kernel's (ours are the child's: a fork).
    let own = child_maps(std::process::id() as i32)?;
    let own_special: Vec<(u64, u64)> = own
        .iter()
        .filter(|m| m.2 == "[vdso]" || m.2.starts_with("[vvar"))
        .map(|m| (m.0, m.1))
        .collect();
    let img_special: Vec<(u64, u64)> = plan
        .vmas
        .iter()
        .filter(|v| matches!(v.kind, raw::VMA_VDSO | raw::VMA_VVAR))
        .map(|v| (v.start, v.end))
        .collect();
    let same_layout = own_special.len() == img_special.len()
        && !own_special.is_empty()
        && own_special.iter().zip(&img_special).all(|(a, b)| {
            b.0.wrapping_sub(a.0) == img_special[0].0.wrapping_sub(own_special[0].0)
                && a.1 - a.0 == b.1 - b.0
        });
    if !same_layout {
        return Err(other(format!(
            "the image's vDSO and vvar areas {img_special:x?} do not match this kernel's \
             {own_special:x?} (captured on another kernel?)"
        )));
    }
    let delta = img_special[0].0.wrapping_sub(own_special[0].0);

    // Where the scratch area goes: free in our layout (the child's, at the fork) and the image's.
    let mut busy: Vec<(u64, u64)> = own.iter().map(|m| (m.0, m.1)).collect();
    busy.extend(plan.vmas.iter().map(|v| (v.start, v.end)));
    let scratch = hole(&busy, SCRATCH_LEN).ok_or_else(|| other("no room for the scratch area"))?;

    // Credentials: the task keeps ours.
    let uid = sys::geteuid();
    // The owner group of /proc/self is our effective gid.
    let gid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.gid());
    let t = &plan.task;
    if t.uid.iter().any(|u| u.get() != uid) || t.gid.iter().any(|g| g.get() != gid) {
        let u: Vec<u32> = t.uid.iter().map(|u| u.get()).collect();
        let g: Vec<u32> = t.gid.iter().map(|u| u.get()).collect();
        plan.warnings.push(format!(
            "the image recorded uids {u:?} gids {g:?}; the restored task runs with the \
             credentials of cr-dump (euid {uid}, egid {gid})"
        ));
    }
    let caught = t.sig_caught.get();
    if caught != 0 {
        plan.warnings.push(format!(
            "the task had handlers for signals {}; images do not record handlers: they are \
             SIG_DFL now",
            sig_list(caught)
        ));
    }
    if t.sig_pending.get() | t.sig_shared_pending.get() != 0 {
        plan.warnings.push(format!(
            "pending signals {} are not restored",
            sig_list(t.sig_pending.get() | t.sig_shared_pending.get())
        ));
    }

    let devnull = if opts.detach {
        Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| Error::io("open /dev/null", e))?,
        )
    } else {
        None
    };
    let pid = sys::fork_traced_child(devnull.as_ref().map(|f| f.as_raw_fd()))
        .map_err(|e| Error::io("fork", e))?;
    let mut child = Child {
        pid,
        at: 0,
        base: zeroed_regs(),
        mem: None,
        armed: true,
    };
    match sys::waitpid(pid).map_err(|e| child.io("waitpid", e))? {
        sys::WaitStatus::Stopped { sig, .. } if sig == libc::SIGSTOP => {}
        s => return Err(other(format!("the new child {pid} did not stop: {s:?}"))),
    }
    sys::ptrace_setoptions(pid, libc::PTRACE_O_EXITKILL)
        .map_err(|e| child.io("PTRACE_SETOPTIONS", e))?;
    child.base = sys::ptrace_getregs(pid).map_err(|e| child.io("PTRACE_GETREGS", e))?;
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(procfs::path(pid, "mem"))
        .map_err(|e| child.io("open /proc/PID/mem", e))?;
    let cm = child_maps(pid)?;
    let vdso = cm
        .iter()
        .find(|m| m.2 == "[vdso]")
        .ok_or_else(|| other("the new child has no vDSO"))?;
    child.at = find_syscall(&mem, vdso.0, vdso.1)?;
    child.mem = Some(mem);

    let mut warn = Vec::new();
    build(
        &mut child, &plan, &idx, &images, scratch, delta, &cm, &mut warn,
    )?;
    plan.warnings.extend(warn);

    // Registers last.
    let mut r = zeroed_regs();
    set_gpr(&mut r, &plan.gpr);
    let ret = r.rax as i64;
    if (r.orig_rax as i64) >= 0
        && matches!(
            -ret,
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
        )
    {
        r.rax = r.orig_rax;
        r.rip = r.rip.wrapping_sub(2);
        r.orig_rax = u64::MAX;
    }
    if plan.xsave.is_empty() {
        sys::ptrace_setregset(pid, sys::NT_PRFPREG, &plan.fxsave)
            .map_err(|e| child.io("PTRACE_SETREGSET NT_PRFPREG", e))?;
    } else {
        let mut cur = vec![0u8; 16384];
        let n = sys::ptrace_getregset(pid, sys::NT_X86_XSTATE, &mut cur)
            .map_err(|e| child.io("PTRACE_GETREGSET NT_X86_XSTATE", e))?;
        if n != plan.xsave.len() {
            return Err(other(format!(
                "the image's XSAVE area is {} bytes, this CPU's {n}",
                plan.xsave.len()
            )));
        }
        sys::ptrace_setregset(pid, sys::NT_X86_XSTATE, &plan.xsave)
            .map_err(|e| child.io("PTRACE_SETREGSET NT_X86_XSTATE", e))?;
    }
    sys::ptrace_setregs(pid, &r).map_err(|e| child.io("PTRACE_SETREGS (the image's)", e))?;
    let sig = if opts.stopped { libc::SIGSTOP } else { 0 };
    sys::ptrace_detach(pid, sig).map_err(|e| child.io("PTRACE_DETACH", e))?;
    child.armed = false;
    drop(plan.files);
    Ok(Restored {
        pid,
        warnings: plan.warnings,
    })
}

fn sig_list(mask: u64) -> String {
    (0..64)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| (i + 1).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn zeroed_regs() -> libc::user_regs_struct {
    libc::user_regs_struct {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        rbp: 0,
        rbx: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rax: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        orig_rax: 0,
        rip: 0,
        cs: 0,
        eflags: 0,
        rsp: 0,
        ss: 0,
        fs_base: 0,
        gs_base: 0,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
    }
}

fn set_gpr(r: &mut libc::user_regs_struct, g: &[u64; raw::X86_64_GPR_COUNT]) {
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ] = *g;
}

/// Steps 1..9 of the module docs: the child's address space and task state become the image's.
#[allow(clippy::too_many_arguments)]
fn build(
    c: &mut Child,
    plan: &Plan,
    idx: &ChainIndex<'_>,
    images: &[Image<'_>],
    scratch: u64,
    delta: u64,
    cm: &[(u64, u64, String)],
    plan_warn: &mut Vec<String>,
) -> Result<()> {
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let priv_anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    // 1. rseq.
    let (rs, rlen, rsig) =
        sys::ptrace_get_rseq(c.pid).map_err(|e| c.io("rseq configuration", e))?;
    if rs != 0 {
        c.call_ok(
            "rseq unregister",
            SYS_RSEQ,
            [rs, rlen.into(), 1, rsig.into(), 0, 0],
        )?;
    }
    // 2. Scratch.
    let got = c.call_ok(
        "mmap scratch",
        SYS_MMAP,
        [
            scratch,
            SCRATCH_LEN,
            rw,
            priv_anon | MAP_FIXED_NOREPLACE,
            u64::MAX,
            0,
        ],
    )?;
    if got != scratch {
        return Err(other(format!(
            "scratch mapped at {got:#x}, not {scratch:#x}"
        )));
    }
    // 3. Everything of the child but the special areas and the scratch.
    let special = |p: &str| p == "[vdso]" || p.starts_with("[vvar") || p == "[vsyscall]";
    for (s, e, _) in cm.iter().filter(|m| !special(&m.2)) {
        c.call_ok("munmap", SYS_MUNMAP, [*s, e - s, 0, 0, 0, 0])?;
    }
    // 4. The special areas to the image's addresses, through a temporary place.
    let sp: Vec<(u64, u64)> = cm
        .iter()
        .filter(|m| m.2 == "[vdso]" || m.2.starts_with("[vvar"))
        .map(|m| (m.0, m.1))
        .collect();
    if delta != 0 {
        let lo = sp.iter().map(|m| m.0).min().unwrap_or(0);
        let hi = sp.iter().map(|m| m.1).max().unwrap_or(0);
        let span = hi - lo;
        let mut busy = sp.clone();
        busy.push((scratch, scratch + SCRATCH_LEN));
        busy.push((lo.wrapping_add(delta), hi.wrapping_add(delta)));
        busy.extend(plan.vmas.iter().map(|v| (v.start, v.end)));
        let tmp = hole(&busy, span).ok_or_else(|| other("no room to move the vDSO"))?;
        let vdso_old = cm.iter().find(|m| m.2 == "[vdso]").map_or(0, |m| m.0);
        let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        for (from, to) in [(lo, tmp), (tmp, lo.wrapping_add(delta))] {
            for &(s, e) in &sp {
                let src = s - lo + from;
                let dst = s - lo + to;
                let len = e - s;
                let got = c.call_ok(
                    "mremap vDSO/vvar",
                    SYS_MREMAP,
                    [src, len, len, flags, dst, 0],
                )?;
                if got != dst {
                    return Err(other(format!("mremap to {dst:#x} gave {got:#x}")));
                }
                if s == vdso_old {
                    c.at = c.at - from + to;
                }
            }
        }
    }
    // 5. The image's VMAs.
    for v in plan.vmas.iter().filter(|v| !v.special()) {
        let len = v.end - v.start;
        let fixed = libc::MAP_FIXED as u64;
        let got = if let Some(fi) = v.file {
            let fd = plan.files[fi].as_raw_fd() as u64;
            let (prot, flags) = if v.shared() {
                (u64::from(v.prot), libc::MAP_SHARED as u64)
            } else {
                (rw, libc::MAP_PRIVATE as u64)
            };
            c.call_ok(
                "mmap file",
                SYS_MMAP,
                [v.start, len, prot, flags | fixed, fd, v.offset],
            )?
        } else {
            let mut flags = priv_anon | fixed;
            if v.flags & raw::VMA_GROWSDOWN != 0 {
                flags |= libc::MAP_GROWSDOWN as u64;
            }
            c.call_ok("mmap", SYS_MMAP, [v.start, len, rw, flags, u64::MAX, 0])?
        };
        if got != v.start {
            return Err(other(format!("mmap at {:#x} gave {got:#x}", v.start)));
        }
    }
    // 6. Pages.
    fill_pages(c, plan, idx, images)?;
    // 7. Protections.
    for v in plan.vmas.iter().filter(|v| !v.special() && !v.shared()) {
        if u64::from(v.prot) != rw {
            c.call_ok(
                "mprotect",
                SYS_MPROTECT,
                [v.start, v.end - v.start, v.prot.into(), 0, 0, 0],
            )?;
        }
    }
    // 8. mm fields.
    let m = &plan.mm;
    let auxv_at = scratch + 1024;
    c.write(auxv_at, &plan.auxv)?;
    let exe_fd = plan.exe.as_ref().map_or(u32::MAX, |f| f.as_raw_fd() as u32);
    let mut map = Vec::with_capacity(104);
    for x in [
        m.start_code.get(),
        m.end_code.get(),
        m.start_data.get(),
        m.end_data.get(),
        m.start_brk.get(),
        m.brk.get(),
        m.start_stack.get(),
        m.arg_start.get(),
        m.arg_end.get(),
        m.env_start.get(),
        m.env_end.get(),
        auxv_at,
    ] {
        map.extend(x.to_le_bytes());
    }
    map.extend((plan.auxv.len() as u32).to_le_bytes());
    map.extend(exe_fd.to_le_bytes());
    c.write(scratch, &map)?;
    let what = "prctl(PR_SET_MM, PR_SET_MM_MAP) (needs CAP_SYS_RESOURCE or CAP_CHECKPOINT_RESTORE)";
    let args = [PR_SET_MM, PR_SET_MM_MAP, scratch, map.len() as u64, 0, 0];
    let r = c.call(SYS_PRCTL, args)?;
    if r == -i64::from(libc::EBUSY) && exe_fd != u32::MAX {
        // The kernel refuses to replace the executable while the old one (cr-dump's) is still
        // mapped: the image maps cr-dump itself. Keep the link, set the rest.
        plan_warn.push("/proc/PID/exe stays cr-dump's (the image maps it)".into());
        let n = map.len();
        map[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        c.write(scratch, &map)?;
        c.call_ok(what, SYS_PRCTL, args)?;
    } else if r < 0 {
        let e = std::io::Error::from_raw_os_error(i32::try_from(-r).unwrap_or(libc::EINVAL));
        return Err(c.io(what, e));
    }
    // 9. Signals and the rest of the task state.
    let t = &plan.task;
    let ignored = t.sig_ignored.get();
    for sig in 1..=64u64 {
        if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
            continue;
        }
        let handler: u64 = u64::from(ignored & (1 << (sig - 1)) != 0); // SIG_IGN = 1, SIG_DFL = 0
        let mut act = Vec::with_capacity(32);
        for x in [handler, 0u64, 0, 0] {
            act.extend(x.to_le_bytes());
        }
        c.write(scratch, &act)?;
        c.call_ok("rt_sigaction", SYS_RT_SIGACTION, [sig, scratch, 0, 8, 0, 0])?;
    }
    c.write(scratch, &t.sig_blocked.get().to_le_bytes())?;
    c.call_ok(
        "rt_sigprocmask",
        SYS_RT_SIGPROCMASK,
        [2, scratch, 0, 8, 0, 0],
    )?;
    let mut ss = Vec::new();
    ss.extend(0u64.to_le_bytes());
    ss.extend(2u64.to_le_bytes()); // ss_flags = SS_DISABLE, then padding
    ss.extend(0u64.to_le_bytes());
    c.write(scratch, &ss)?;
    c.call_ok("sigaltstack", SYS_SIGALTSTACK, [scratch, 0, 0, 0, 0, 0])?;
    c.call_ok(
        "personality",
        SYS_PERSONALITY,
        [t.personality.get().into(), 0, 0, 0, 0, 0],
    )?;
    c.call_ok("umask", SYS_UMASK, [t.umask.get().into(), 0, 0, 0, 0, 0])?;
    let mut comm = t.comm.to_vec();
    comm.push(0);
    c.write(scratch, &comm)?;
    c.call_ok(
        "prctl(PR_SET_NAME)",
        SYS_PRCTL,
        [PR_SET_NAME, scratch, 0, 0, 0, 0],
    )?;
    c.call_ok("set_tid_address", SYS_SET_TID_ADDRESS, [0; 6])?;
    if c.call(SYS_CLOSE_RANGE, [3, u64::from(u32::MAX), 0, 0, 0, 0])? < 0 {
        for fd in 3..1024 {
            c.call(SYS_CLOSE, [fd, 0, 0, 0, 0, 0])?;
        }
    }
    c.call_ok(
        "munmap scratch",
        SYS_MUNMAP,
        [scratch, SCRATCH_LEN, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// Step 6: writes every page the chain holds with data (and zero pages of file mappings).
fn fill_pages(c: &Child, plan: &Plan, idx: &ChainIndex<'_>, images: &[Image<'_>]) -> Result<()> {
    let top = &images[0];
    let ps = u64::from(top.page_size());
    let zero = vec![0u8; 1 << 20];
    let write_zero = |addr: u64, len: u64| -> Result<()> {
        let mut a = addr;
        while a < addr + len {
            let n = (addr + len - a).min(zero.len() as u64);
            c.write(a, &zero[..n as usize])?;
            a += n;
        }
        Ok(())
    };
    // Where a page's bytes lie: (image index, offset in its file).
    let locate = |b: &[u8]| -> Option<(usize, usize)> {
        let p = b.as_ptr() as usize;
        images.iter().enumerate().find_map(|(i, img)| {
            let base = img.bytes().as_ptr() as usize;
            (p >= base && p + b.len() <= base + img.bytes().len()).then(|| (i, p - base))
        })
    };
    // A pending write: target address, image, offset, length (contiguous in the image file).
    let mut pending: Option<(u64, usize, usize, usize)> = None;
    let flush = |p: &mut Option<(u64, usize, usize, usize)>| -> Result<()> {
        if let Some((a, i, off, len)) = p.take() {
            c.write(a, &images[i].bytes()[off..off + len])?;
        }
        Ok(())
    };
    let mut cur: Option<&VmaPlan> = None;
    let mut vi = 0usize;
    for r in top.records() {
        match r.record {
            Record::Vma(v) => {
                cur = plan.vmas.get(vi).filter(|p| p.start == v.start());
                vi += 1;
            }
            Record::Pages(p) => {
                let Some(v) = cur else { continue };
                if v.special() || v.shared() {
                    continue;
                }
                let file = v.kind == raw::VMA_FILE;
                for run in p.iter() {
                    let len = u64::from(run.pages) * ps;
                    match run.kind {
                        RunKind::Data => {
                            flush(&mut pending)?;
                            if let Some(d) = run.data {
                                c.write(run.addr, d)?;
                            }
                        }
                        RunKind::Zero => {
                            if file {
                                flush(&mut pending)?;
                                write_zero(run.addr, len)?;
                            }
                        }
                        RunKind::Parent => {
                            for i in 0..u64::from(run.pages) {
                                let a = run.addr + i * ps;
                                match idx.resolve(a) {
                                    Ok(Resolved::Data { bytes, .. }) => {
                                        let Some((img, off)) = locate(bytes) else {
                                            flush(&mut pending)?;
                                            c.write(a, bytes)?;
                                            continue;
                                        };
                                        match &mut pending {
                                            Some((pa, pi, po, pl))
                                                if *pa + *pl as u64 == a
                                                    && *pi == img
                                                    && *po + *pl == off =>
                                            {
                                                *pl += bytes.len();
                                            }
                                            _ => {
                                                flush(&mut pending)?;
                                                pending = Some((a, img, off, bytes.len()));
                                            }
                                        }
                                    }
                                    Ok(Resolved::Zero { .. }) => {
                                        if file {
                                            flush(&mut pending)?;
                                            write_zero(a, ps)?;
                                        }
                                    }
                                    Ok(Resolved::NotPresent { .. }) => {}
                                    Err(e) => {
                                        return Err(other(format!(
                                            "page {a:#x} does not resolve through the chain: {e}"
                                        )))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    flush(&mut pending)
}

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
    let me = i32::try_from(std::process::id()).unwrap_or(0);
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
    let crid = crate::crid::next()?;
    let opts = crate::capture::Options {
        after: crate::capture::After::Continue,
        lazy: crate::capture::LazyMode::Auto,
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
