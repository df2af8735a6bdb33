//! `cr-dump restore`: restart a single-threaded task from an image chain.
//!
//! # Technique
//!
//! Everything that can be checked without a process is checked first, and a restore that
//! cannot succeed is refused before anything starts: the chain is verified in full
//! ([`crate::inspect::verify`] with `--chain`), the page size must be this machine's, the CPU
//! (XCR0) must enable every XSAVE component the image's XCR0 has, every mapped file must still
//! be the captured one (inode, size and mtime), shared anonymous mappings (whose contents
//! images do not hold) are refused, and so is any VMA or page run that is empty, inverted or
//! outside the user address space (past `0x7fff_ffff_f000`; only the vsyscall page, never
//! created, lies above, at its fixed address). The chain's "parent" pages are resolved run by
//! run, so a run of 2^32-1 pages costs what a run of one does.
//!
//! Then cr-dump opens every mapped file and the executable, and the task's open files, working
//! directory and root (`files/`: each checked to be the captured one, above every descriptor
//! number the image uses), and forks a child that does only `ptrace(PTRACE_TRACEME)` and
//! `raise(SIGSTOP)` ([`crate::sys::fork_traced_child`]; for an image without File records,
//! with `--detach`, it first points 0/1/2 at `/dev/null`). The child inherits the open files at
//! the same descriptor numbers, so it never needs a path. From then on the child runs no code of its
//! own: cr-dump drives it with system calls injected by [`crate::sys::inject`] (the registers
//! set to a `syscall` instruction of the child's vDSO, one `PTRACE_SINGLESTEP`, the result read
//! from `rax`):
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
//!    no alternate signal stack, personality, umask, comm, no clear-child-tid address; the
//!    open files: `dup3` of each prepared one to its recorded number (`O_CLOEXEC` as
//!    recorded), `fchdir` to the working directory (after `chroot` for another root), every
//!    other descriptor closed, the types' after-placement work (epoll registrations),
//!    `setsid` with `--new-session` (an image without File records keeps only 0/1/2);
//!    `munmap` of the scratch area;
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
//! # Where the code is
//!
//! `plan.rs` checks the image and opens its files before the fork; `child.rs` is the forked
//! shell with its injector; `build.rs` runs steps 1-5 and 7-10; `pages.rs` is step 6;
//! `selfckpt.rs` is [`checkpoint_self`].
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
//! - Descriptors: reopened by path (regular files, directories, devices, FIFOs: refused if the
//!   file changed, unless `--allow-changed-files`), recreated (deleted files, with their
//!   contents), or attached to restore's own (terminals, fds 0-2 that are restore's own file
//!   or not reachable) or to what `--inherit-fd` names; see `files/mod.rs`. Locks are not
//!   re-taken. When root restores another user's task, files are opened with that user's
//!   file-system credentials. Images of format 1.0 hold none: the task has cr-dump's 0/1/2
//!   (or `/dev/null`).
//! - Process group: cr-dump's (the terminal's foreground group when restore runs in the
//!   foreground), or a new session with `--new-session`.
//! - Credentials: the task keeps the caller's; if the image recorded others, a warning says so.
//! - Signal handlers: images record only which signals are caught, not the handlers; caught
//!   signals get `SIG_DFL` and a warning names them. Pending signals are not restored.
//! - rseq: the restored task has no rseq area registered (images do not record it); glibc then
//!   keeps reading the CPU number cached at the checkpoint.
//! - The working directory and root are the image's (checked: same device and inode); a root
//!   other than cr-dump's needs `CAP_SYS_CHROOT`, else the restore is refused.
//! - Single-threaded tasks only (so are images).

use crate::error::{Error, Result};
use crate::inspect;
use std::path::Path;

mod build;
mod child;
mod files;
mod pages;
mod plan;
mod selfckpt;

pub use files::{FileOptions, Inherit, InheritSource};
pub use selfckpt::checkpoint_self;

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Leave the task stopped (`SIGSTOP`) instead of letting it run.
    pub stopped: bool,
    /// Point the task's 0/1/2 at `/dev/null` instead of cr-dump's (images without File
    /// records); with them, only descriptors whose file is not reachable.
    pub detach: bool,
    /// Files, terminal and session.
    pub files: FileOptions,
}

/// A restored task.
#[derive(Debug)]
pub struct Restored {
    /// Its pid (a child of this process).
    pub pid: i32,
    /// What could not be restored exactly, one line each.
    pub warnings: Vec<String>,
}

/// Size of the scratch area (structures passed by pointer, and the auxv at offset 1024).
const SCRATCH_LEN: u64 = 64 << 10;

fn other(m: impl Into<String>) -> Error {
    Error::Other(m.into())
}

/// Restores the image at `path` (its ancestors found beside it) into a new child process and
/// lets it run (or leaves it stopped). The caller should wait for the returned pid.
pub fn restore(path: &Path, opts: &Options) -> Result<Restored> {
    inspect::verify(path, true, false)?;
    let files = inspect::ChainFiles::open(path)?;
    let chain = files.parse(inspect::Parse::Metadata)?;
    let (images, idx) = (chain.images(), chain.index());
    let mut plan = plan::plan(path, images)?;
    let top = images.first().ok_or_else(|| other("an empty chain"))?;
    let fplan = files::plan(path, top, &opts.files, opts.detach)?;

    let devnull = if opts.detach && !fplan.has_files {
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
    let mut child = child::Child::spawn(devnull.as_ref())?;
    build::clear_space(&mut child, &plan)?;
    build::map_vmas(&child, &plan)?;
    pages::fill_pages(&child, &plan, idx, images)?;
    build::protect(&child, &plan)?;
    let mut warnings = Vec::new();
    build::set_mm(&child, &plan, &mut warnings)?;
    build::set_task_state(&child, &plan, &fplan)?;
    build::set_registers(&child, &plan)?;
    plan.warnings.extend(warnings);
    plan.warnings.extend(fplan.warnings.iter().cloned());
    let pid = child.release(if opts.stopped { libc::SIGSTOP } else { 0 })?;
    drop(plan.files);
    drop(fplan);
    Ok(Restored {
        pid,
        warnings: plan.warnings,
    })
}
