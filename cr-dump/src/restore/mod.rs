//! `cr-dump restore`: restart a single-threaded task from an image chain.
//!
//! # Technique
//!
//! Everything that can be checked without a process is checked first, and a restore that
//! cannot succeed is refused before anything starts: the chain is verified (every record and
//! its CRC, the Tail digests, every link and "parent" page; the page data CRCs as the pages go
//! in, step 6, before the task runs unless `--lazy`), the page size must be this machine's, the CPU
//! (XCR0) must enable every XSAVE component the image's XCR0 has, every mapped file must still
//! be the captured one (inode, size and mtime), and any VMA or page run that is empty, inverted or
//! outside the user address space (past `0x7fff_ffff_f000`; only the vsyscall page, never
//! created, lies above, at its fixed address). The chain's "parent" pages are resolved run by
//! run, so a run of 2^32-1 pages costs what a run of one does.
//!
//! Then cr-dump opens every mapped file and the executable, and the task's open files, working
//! directory and root (`files/`: each checked to be the captured one, above every descriptor
//! number the image uses), and forks a child that does only `ptrace(PTRACE_TRACEME)` and
//! `raise(SIGSTOP)` ([`crate::sys::fork_traced_child`]: `clone3` with `set_tid` when the task
//! gets its own pid back, see `child.rs`; for an image without File records, with `--detach`,
//! it first points 0/1/2 at `/dev/null`). The child inherits the open files at
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
//!    `MAP_SHARED`, shared anonymous memory `mmap(MAP_SHARED|MAP_ANONYMOUS)` (the VMAs of one
//!    object, by inode, made from one mapping moved piece by piece to their offsets), and a
//!    memfd mapped shared whose memfd the task has open (same inode) `MAP_SHARED` of that
//!    memfd, so that descriptor and mapping are one object again (its contents are the
//!    memfd's, like a shared file mapping's); readable
//!    and writable at first, but shared file mappings and private read-only file mappings the
//!    image holds no pages of, which get their protection at once (as the task had them:
//!    never writable, so apart from a neighbour that was), and private anonymous memory, whose
//!    pages go in by `UFFDIO_COPY` or `/proc/PID/mem`, neither of which needs a writable VMA
//!    (mapped writable, one-page neighbours of other protections would merge, and step 7
//!    would split them again). An anonymous VMA that would merge
//!    with the one before it (the task had them apart) is made elsewhere and moved into place,
//!    so `/proc/PID/maps` is the original's line for line; a warning says if it is not;
//! 6. the pages (`pages.rs`): every data page resolved through the chain; private anonymous
//!    memory with `UFFDIO_COPY` through a userfaultfd the child makes (the kernel allocates
//!    and copies in one step, no fault), the rest with `process_vm_writev` (`/proc/PID/mem` for
//!    what it cannot write); each Pages record's data CRC checked on a second thread before
//!    its bytes are copied (a damaged record fails the restore before the task runs);
//!    zero pages of file mappings are written as zeros; pages that are not present stay fresh
//!    zero pages (anonymous) or the file's bytes (file mappings); shared file mappings are not
//!    written (the file is their contents). With `--lazy` ([`LazyFill`], `lazy.rs`) private
//!    anonymous memory is registered instead and served on fault and in the background while
//!    the task runs;
//! 7. `mprotect` of each VMA not mapped with it to its recorded protection, then its madvise flags (VmaAttr:
//!    `MADV_DONTFORK`, `DONTDUMP`, `WIPEONFORK`, `HUGEPAGE`, `NOHUGEPAGE`, `MERGEABLE`) and its
//!    lock (`mlock2`, with `MLOCK_ONFAULT` for lock-on-fault); a failure (no `CAP_IPC_LOCK`
//!    and no room under `RLIMIT_MEMLOCK`, no KSM) is a warning naming the VMA; then
//!    `mlockall(MCL_FUTURE[|MCL_ONFAULT])` if the task had it (a failure is a warning);
//! 8. `prctl(PR_SET_MM, PR_SET_MM_MAP)` with the image's code, data, brk, stack, argument and
//!    environment ranges, auxv and the executable (the executable needs
//!    `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`, and is left out before the fork, with a
//!    warning, when the caller has neither; the rest needs no capability; a failure aborts
//!    the restore). Made right after step 4, while the child has only its vDSO, vvar and
//!    scratch: the kernel replaces the executable only when no VMA maps the old one (cr-dump's
//!    binary, which the image itself may map) and walks every VMA to know;
//! 9. the task's state (`build::set_task_state`): every signal's disposition (its handler,
//!    flags, restorer and mask) with every signal blocked from here on, the alternate stack,
//!    personality, umask, comm; the open files: `dup3` of each prepared one to its recorded
//!    number (`O_CLOEXEC` as recorded), `fchdir` to the working directory (after `chroot` for
//!    another root, while the child still has the caller's credentials), every other
//!    descriptor closed, the types' after-placement work (epoll registrations), the task's
//!    POSIX locks (`fcntl(F_SETLK)`; its flock and OFD locks and its inotify watches were
//!    taken and added on the prepared files before the fork), `setsid` with
//!    `--new-session` (an image without File records keeps only 0/1/2); the rlimits
//!    (`prlimit` on the child from cr-dump), oom_score_adj (`/proc/CHILD/oom_score_adj`), rseq
//!    registered again, the robust futex list, the clear-child-tid address, timer slack,
//!    THP_DISABLE, child subreaper; the credentials (`setgroups`, `setresgid`, bounding set,
//!    securebits, `setresuid`, `capset`, ambient; see `creds.rs`), checked against
//!    `/proc/CHILD/status`; then the parent-death signal, dumpable and no_new_privs (a change
//!    of credentials resets the first two); the interval timers and the POSIX timers (their
//!    ids through `PR_TIMER_CREATE_RESTORE_IDS`, each with the time that was left to its
//!    expiry); the pending signals queued again with their siginfo (`rt_tgsigqueueinfo`/
//!    `rt_sigqueueinfo` injected into the task itself, which may queue any `si_code` to
//!    itself); `munmap` of the scratch area; then the image's blocked mask with
//!    `PTRACE_SETSIGMASK` (no call is injected after it: a pending signal the mask lets
//!    through is delivered when the task runs, not lost to the single-stepping);
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
//! of the image's size, but the VMAs would become file mappings of the image). The chain is
//! parsed before the fork without its page data CRCs (every record CRC, the Tail digest,
//! which covers every `data_crc`, and every link are checked); the data CRCs are checked as
//! the pages go in (BENCHMARKS.md, "Restore (issue 14, session 6)", has the figures). Each
//! image is parsed once, and what restore needs of its records is gathered in that walk
//! (`walk.rs`): with 65,000 mappings a walk costs ~15 ms (BENCHMARKS.md, "Restore with many
//! mappings (issue 14, session 7)").
//!
//! # Where the code is
//!
//! `walk.rs` gathers the records as the chain is parsed; `plan.rs` checks the image and opens
//! its files before the fork; `child.rs` is the forked
//! shell with its injector; `boost.rs` raises its priority until the task runs; `build.rs`
//! runs steps 1-5 and 7-10; `pages.rs` is step 6 and
//! `lazy.rs` its lazy form;
//! `signals.rs`, `process.rs` and `creds.rs` are step 9's signals and timers, limits and
//! attributes, and credentials (each planned before the fork: what the caller may not do is
//! refused or lowered with a warning there); `selfckpt.rs` is [`checkpoint_self`].
//!
//! # Self-checkpoint
//!
//! [`checkpoint_self`] is the seed's contract: a single-threaded program checkpoints itself,
//! gets the CRID back, and a task restored from that image returns from the same call with 0.
//!
//! # What differs from the original
//!
//! - The pid, unless the image's is free and the caller may choose pids (`--pid`, see
//!   `child.rs`: `clone3` with `set_tid`; the default takes the image's pid when it can, with
//!   a warning saying why when it cannot). The parent: the restored task is a child of
//!   `cr-dump restore` (`getppid()` differs), which waits for it and exits with its status
//!   unless `--detach`.
//! - Descriptors: reopened by path (regular files, directories, devices, FIFOs: refused if the
//!   file changed, unless `--allow-changed-files`), recreated (deleted files, with their
//!   contents), or attached to restore's own (terminals, fds 0-2 that are restore's own file
//!   or not reachable) or to what `--inherit-fd` names; see `files/mod.rs`. Locks are not
//!   re-taken. When root restores another user's task, files are opened with that user's
//!   file-system credentials. Images of format 1.0 hold none: the task has cr-dump's 0/1/2
//!   (or `/dev/null`).
//! - Process group: cr-dump's (the terminal's foreground group when restore runs in the
//!   foreground), or a new session with `--new-session`.
//! - The working directory and root are the image's (checked: same device and inode); a root
//!   other than cr-dump's needs `CAP_SYS_CHROOT`, else the restore is refused.
//! - Credentials: the image's uids, gids, groups and capabilities, never more than the
//!   caller's: capabilities the caller lacks are dropped (a warning); a caller who cannot take
//!   the image's ids (without `CAP_SETUID`/`CAP_SETGID`: another user's image) or would have
//!   to change the bounding set or securebits without `CAP_SETPCAP` is refused before the
//!   fork.
//! - rlimits: a hard limit above the caller's is lowered to it without `CAP_SYS_RESOURCE`
//!   (a warning); so is an oom_score_adj below the caller's.
//! - `/proc/PID/exe`: stays cr-dump's unless the caller has `CAP_CHECKPOINT_RESTORE` or
//!   `CAP_SYS_ADMIN` (a warning names `setcap cap_checkpoint_restore+ep`). Nothing else of a
//!   restore needs a capability: an ordinary user restores their own images
//!   (`PR_SET_MM_MAP` without a new executable needs none).
//! - Timers: the time that passed while the task was not running does not count; unread
//!   POSIX timer overruns are lost (the checkpoint reports them). A pending POSIX-timer signal
//!   is queued again as a plain copy: if the timer expires again before it is handled, both
//!   are delivered rather than one with an overrun.
//! - The parent-death signal comes when `cr-dump restore` (the parent now) exits; dumpable 2
//!   (`suid_dumpable`) becomes 1.
//! - Signal dispositions of format 1.0 images (which record none): ignored signals
//!   `SIG_IGN`, the others `SIG_DFL`, with a warning naming the caught ones. A default
//!   disposition other than SIGCHLD's is recorded without flags, mask or restorer (they
//!   change nothing for `SIG_DFL`).//! - Single-threaded tasks only (so are images).

use crate::error::{Error, Result};
use crate::inspect;
use std::path::Path;

mod boost;
mod build;
mod child;
mod creds;
mod files;
mod lazy;
mod pages;
mod plan;
mod process;
mod selfckpt;
mod signals;
mod walk;

pub use child::PidMode;
pub use files::{FileOptions, Inherit, InheritSource};
pub use lazy::{serve_detached, LazyEnd, LazyFill};
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
    /// Which pid the task gets (`--pid`).
    pub pid: PidMode,
    /// Let the task run before its memory is in ([`LazyFill`]): the returned [`Restored::lazy`]
    /// must then be served ([`LazyFill::serve`]) until every page is in.
    pub lazy: bool,
    /// Called as pages go in.
    pub progress: Option<Progress>,
}

/// A progress callback: bytes of page data in so far, and the total.
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>);

impl Progress {
    /// Calls the callback.
    pub fn report(&self, done: u64, total: u64) {
        (self.0)(done, total)
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// A restored task.
#[derive(Debug)]
pub struct Restored {
    /// Its pid (a child of this process).
    pub pid: i32,
    /// What could not be restored exactly, one line each.
    pub warnings: Vec<String>,
    /// With [`Options::lazy`]: the pages still to come, to be served by this thread (the
    /// task's tracer) with [`LazyFill::serve`].
    pub lazy: Option<LazyFill>,
}

/// Size of the scratch area (structures passed by pointer, and the auxv at offset 1024).
const SCRATCH_LEN: u64 = 64 << 10;

fn other(m: impl Into<String>) -> Error {
    Error::Other(m.into())
}

/// Restores the image at `path` (its ancestors found beside it) into a new child process and
/// lets it run (or leaves it stopped). The caller should wait for the returned pid.
pub fn restore(path: &Path, opts: &Options) -> Result<Restored> {
    if opts.lazy && opts.stopped {
        // A stopped task would never fault: the fill could not end until it is continued.
        return Err(other(
            "restore --lazy and --stopped together: a lazy restore lets the task run",
        ));
    }
    // Until the task runs (`boost.rs`).
    let boost = boost::Boost::raise();
    let files = inspect::chain::ChainFiles::open(path)?;
    let mut body = walk::Body::default();
    let (images, idx) =
        files.parse_each(inspect::chain::Parse::Metadata, |i, r| body.take(i, r))?;
    let (mut plan, body) = plan::plan(path, &images, body)?;
    let top = images.first().ok_or_else(|| other("an empty chain"))?;
    let fplan = files::plan(path, top, &opts.files, opts.detach)?;
    build::join_memfds(top, &mut plan, &fplan)?;
    let src = pages::Source::new(&body, &files);
    let pieces = pages::pieces(&plan, &body, idx.as_ref(), &images, &src)?;
    drop(body);
    drop(idx);
    drop(images);
    // The parse's reads mapped a page or more around every record: let go of them (the copy
    // maps what it needs again, a chunk at a time).
    for m in files.files() {
        m.release(0, m.bytes().len());
    }

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
    let want = child::choose_pid(opts.pid, plan.task.pid.get(), &mut plan.warnings)?;
    let mut child = child::Child::spawn(devnull.as_ref(), want, opts.pid, &mut plan.warnings)?;
    boost.child(child.pid());
    build::clear_space(&mut child, &plan)?;
    // Step 8 here, while the child has three mappings: the kernel's executable replacement
    // walks every VMA, and refuses while cr-dump's binary is mapped (an image that maps it).
    let mut warnings = Vec::new();
    build::set_mm(&child, &plan, &mut warnings)?;
    build::map_vmas(&child, &plan)?;
    let progress = opts.progress.as_ref();
    let lazy = if opts.lazy {
        let prep = lazy::prepare(&child, &plan, &files, &src, &pieces, progress)?;
        // Served from here on: the rest of the restore may touch the task's memory.
        Some(prep.start(
            &child,
            files,
            src,
            pieces,
            opts.progress.clone(),
            boost.calm(),
        )?)
    } else {
        pages::fill(&child, &plan, &files, &src, &pieces, progress)?;
        None
    };
    build::protect(&child, &plan, &mut warnings)?;
    build::set_task_state(&child, &plan, &fplan)?;
    build::set_registers(&child, &plan)?;
    plan.warnings.extend(warnings);
    plan.warnings.extend(fplan.warnings.iter().cloned());
    let signal = if opts.stopped { libc::SIGSTOP } else { 0 };
    boost.release_child(child.pid())?;
    let (pid, lazy) = match lazy {
        Some(l) => {
            let fill = l.release(child, opts.stopped)?;
            (fill.pid(), Some(fill))
        }
        None => (child.release(signal)?, None),
    };
    drop(plan.files);
    drop(fplan);
    Ok(Restored {
        pid,
        warnings: plan.warnings,
        lazy,
    })
}
