//! The command line: every verb, its arguments and its `--help` text (clap).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cr-dump",
    version,
    about = "Checkpoint a live Linux task into a cr image"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Checkpoint a task: `--pid PID`, or start `-- CMD ARGS...` and checkpoint it.
    #[command(after_help = CHECKPOINT_HELP)]
    Checkpoint(CheckpointArgs),
    /// Print an image: header, task, registers, mm, files, signals, timers, limits, VMAs.
    #[command(
        after_help = "Reads only metadata (page data is not touched) unless --with-pages.\n\
        The JSON schema is spec/JSON.md (cr-image/1); `encode` turns `show --json --with-pages` \
        back into the identical image."
    )]
    Show {
        /// The image file, or - (or /dev/stdin) for standard input.
        image: PathBuf,
        /// Every field of the state records, and every record with its byte offset, kind,
        /// length and CRC.
        #[arg(short, long)]
        verbose: bool,
        /// Print the whole structure as JSON (schema cr-image/1).
        #[arg(long)]
        json: bool,
        /// With --json: include page data and file contents (hex), so that `encode` can
        /// rebuild the image.
        #[arg(long, requires = "json")]
        with_pages: bool,
    },
    /// Build an image from the JSON of `show --json --with-pages` (byte-identical to the original).
    Encode {
        /// The JSON file, or - for stdin.
        json: PathBuf,
        /// The image to write (written unnamed, named only when complete: an interrupted
        /// encode leaves no file; a symlink at IMAGE is replaced, not followed).
        #[arg(short, long, value_name = "IMAGE")]
        output: PathBuf,
    },
    /// Check an image: structure, order, every CRC, limits, the tail; with --chain, its parents.
    #[command(
        after_help = "Exit status: 0 if every check holds; 1 with the first error (byte \
        offset, record kind) otherwise; with --json, one object on stdout either way.\nA single image is streamed with bounded memory, so IMAGE \
        may be - (stdin) or larger than memory. --chain finds the parents beside IMAGE by name \
        (NAME.img.CRID), verifies each, checks every link (CRID, digest) and resolves every \
        \"unchanged since parent\" page."
    )]
    Verify {
        /// The image file, or - for stdin.
        image: PathBuf,
        /// Also verify the chain of parent images found beside it.
        #[arg(long)]
        chain: bool,
        /// Go on after a problem and list every one (later ones may follow from earlier ones).
        #[arg(long)]
        all: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the task's memory in [ADDR, ADDR+LEN) as the image chain holds it.
    #[command(
        after_help = "Zero for known-zero and untouched anonymous pages; untouched pages of \
        a file mapping are read from the file if it is unchanged. An address in no VMA is an \
        error that names it. ADDR and LEN take decimal or 0x-hex."
    )]
    Extract {
        /// The image (its parents are found beside it), or - for standard input (a full image).
        image: PathBuf,
        /// First address.
        #[arg(long, value_parser = parse_u64)]
        addr: u64,
        /// Number of bytes.
        #[arg(long, value_parser = parse_u64)]
        len: u64,
        /// Write to FILE instead of stdout (written unnamed, named only when complete; a
        /// symlink at FILE is replaced, not followed).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print a hexdump instead of raw bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Compare two images: every field by name, VMAs, and the pages that differ, by VMA.
    #[command(
        after_help = "Each image is resolved through its own chain. Fields are named \
        (`fd 3.pos`, `SIGINT`, `RLIMIT_NOFILE.soft`, `xmm3`, `mm.brk`, ...); lines starting \
        `image` are the images' identity (CRID, creation time, digest, ...), which differs \
        between any two checkpoints.\nExit status, as diff(1): 0 the same task state, 1 it \
        differs, 2 trouble."
    )]
    Diff {
        /// First image (- for standard input).
        a: PathBuf,
        /// Second image (- for standard input).
        b: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an ELF core file of the checkpointed task: `gdb PROGRAM CORE` then works.
    #[command(
        after_help = "The core is a sparse file: zero pages (known zero, untouched anonymous \
        memory, file pages past the file's end) are holes, so what is written is bounded by the \
        images' data and the mapped files, whatever the VMAs' sizes. A core is as long as the \
        task's address space: one of a VMA near 16 TiB needs a file system that allows such a \
        length (tmpfs, XFS; not ext4).\nNotes as the kernel writes them: NT_PRSTATUS, \
        NT_PRPSINFO, NT_AUXV, NT_FILE, NT_FPREGSET, NT_X86_XSTATE and NT_X86_XSAVE_LAYOUT (the \
        XSAVE area's layout, Linux 6.12). Images do not record the capturing CPU's XSAVE \
        layout: the layout note is this machine's (CPUID leaf 0xD), written only when every \
        XSAVE component of the image is enabled here; otherwise it is left out and gdb uses its \
        own idea of the layout, as with a core from an older kernel."
    )]
    Core {
        /// The image (its parents are found beside it), or - for standard input (a full image).
        image: PathBuf,
        /// The core file to write (written unnamed, named only when complete; a symlink at
        /// FILE is replaced, not followed).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// List an image chain, newest first, and check every link.
    #[command(
        after_help = "Finds the parents beside IMAGE by name (NAME.img.CRID). For each image: \
        CRID, parent CRID, file, size, pages stored with data / known zero / in the parent. \
        Checks every link (CRID, digest, page size, a full image at the end) and that every \
        \"in the parent\" page resolves.\nExit status: 0 if the chain holds, 1 if it is \
        broken (with the reason), 2 usage error."
    )]
    Chain {
        /// The newest image of the chain.
        image: PathBuf,
        /// Print the listing as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fold an image chain into one full image with the same memory, page for page.
    #[command(
        after_help = "The new image gets a fresh CRID (it is a new image), no parent, and the \
        newest image's task, registers, Mm, VMAs and creation time. Every image of the chain \
        is checked in full first. If OUT is a directory, the image is written to \
        OUT/NAME.img.NEWCRID (NAME from IMAGE's file name; a CRID whose name is taken is skipped, \
        no file is overwritten); otherwise to OUT (replaced by a rename: a symlink there is \
        not followed). Written unnamed (O_TMPFILE) and named only when complete: an \
        interrupted squash leaves no file."
    )]
    Squash {
        /// The newest image of the chain (its parents are found beside it).
        image: PathBuf,
        /// The image file (or directory) to write.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
    /// Restart a task from an image chain (a new process with the image's memory and registers).
    #[command(
        after_help = "Verifies the chain, refuses what cannot be restored (changed mapped file, \
        another architecture or kernel vDSO layout, XSAVE features this CPU lacks, a VMA or \
        page run outside the user address space, an open file that changed; a task stopped \
        inside a vDSO whose bytes differ from this machine's) before anything starts (a vDSO \
        that differs elsewhere is a warning: the task gets this machine's), then builds the task in a child of cr-dump by ptrace syscall injection. The \
        task gets a new pid, the image's credentials (refused if cr-dump may not give them), its working directory and its open files at their numbers, \
        offsets and flags: files reopened by path and checked (device, inode, size, mtime), \
        deleted files recreated unlinked with their contents, dup'ed descriptors sharing one \
        offset. A descriptor that was a terminal gets restore's terminal (as a shell job); fds \
        0-2 that are restore's own files stay shared, and fds 0-2 whose file is not reachable \
        (a pipe to the old parent) get restore's own (/dev/null with --detach), with a \
        warning. Other descriptors that cannot be reattached are refused unless \
        --inherit-fd names what they become. Images without open files (format 1.0) keep \
        cr-dump's stdin/stdout/stderr (/dev/null with --detach). The task stays in restore's \
        process group (the terminal's foreground group when restore runs in the foreground), \
        or starts a session of its own with --new-session.\n\
        Without --detach, cr-dump waits for the task and exits with its status (128+N if \
        killed by signal N). With --detach it prints the pid and exits.\nExit status: 1 if \
        the restore failed."
    )]
    Restore {
        /// The image (its parents are found beside it as NAME.img.CRID).
        image: PathBuf,
        /// Leave the restored task stopped (SIGSTOP); continue it with SIGCONT.
        #[arg(long)]
        stopped: bool,
        /// Do not wait: stdin/stdout/stderr to /dev/null, print the pid, exit.
        #[arg(long)]
        detach: bool,
        /// Write the restored task's pid to this file (written whole under a temporary name and
        /// renamed over FILE: a symlink at FILE is replaced, never followed).
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Let the task run before its private memory is in: its pages are copied from the
        /// image when it touches them (userfaultfd; needs root or CAP_SYS_PTRACE) and in the
        /// background, every page's CRC checked first (a damaged page kills the task). The
        /// task stays traced by cr-dump until every page is in, and is killed if cr-dump dies
        /// before that. With --detach a server process does this after restore returns: the
        /// image must stay until the server ends (it ends when every page is in). At the end
        /// the task is stopped for a moment to be let go: a system call the kernel does not
        /// restart (epoll_wait, select) may return EINTR then. Until then, a read of the
        /// task's memory through /proc/PID/mem (a debugger's, or the task's own
        /// /proc/self/mem) of a page not yet in fails with EIO instead of waiting.
        #[arg(long, conflicts_with = "stopped")]
        lazy: bool,
        #[command(flatten)]
        files: RestoreFiles,
    },
    /// Print shell completions for cr-dump.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of cr-dump, or of one verb (`cr-dump man show | man -l -`).
    Man {
        /// The verb whose page to print (cr-dump-VERB(1)); none: cr-dump(1).
        verb: Option<String>,
    },
}

/// `restore` options about files, the terminal, the session and the pid.
#[derive(clap::Args, Debug)]
pub(crate) struct RestoreFiles {
    /// Restore a file that changed since the checkpoint (size, mtime, or another inode at its
    /// path) instead of refusing; a warning names it.
    #[arg(long)]
    pub(crate) allow_changed_files: bool,
    /// Attach the image's descriptor FD to a file restore opens (FD=PATH, with FD's recorded
    /// access mode) or to restore's own descriptor N (FD:N). Repeatable.
    #[arg(long, value_name = "FD=PATH|FD:N", value_parser = parse_inherit)]
    pub(crate) inherit_fd: Vec<cr_dump::restore::Inherit>,
    /// The task's pid: `same` (the image's, or refuse), `new`, or `auto` (the image's when it
    /// is free and cr-dump may choose pids, which needs CAP_CHECKPOINT_RESTORE; else a new one,
    /// with a warning saying why).
    #[arg(long, value_name = "same|new|auto", default_value = "auto")]
    pub(crate) pid: cr_dump::restore::PidMode,
    /// Start a new session (setsid) for the task instead of keeping it in restore's process
    /// group: it then has no controlling terminal.
    #[arg(long)]
    pub(crate) new_session: bool,
    /// Restore each connected socket (TCP connection, connected Unix or UDP socket) as one
    /// whose peer is gone (a TCP connection reset, end of file) instead of refusing the image.
    #[arg(long)]
    pub(crate) tcp_close: bool,
}

/// Parses `--inherit-fd FD=PATH` or `FD:N`.
pub(crate) fn parse_inherit(s: &str) -> Result<cr_dump::restore::Inherit, String> {
    use cr_dump::restore::{Inherit, InheritSource};
    let num = |t: &str| {
        t.parse::<u32>()
            .map_err(|_| format!("{t:?} in {s:?} is not a descriptor number"))
    };
    if let Some((fd, path)) = s.split_once('=') {
        if path.is_empty() {
            return Err(format!("{s:?}: no path after '='"));
        }
        return Ok(Inherit {
            fd: num(fd)?,
            source: InheritSource::Path(PathBuf::from(path)),
        });
    }
    if let Some((fd, n)) = s.split_once(':') {
        let n = i32::try_from(num(n)?).map_err(|_| format!("{s:?}: {n} is too large"))?;
        return Ok(Inherit {
            fd: num(fd)?,
            source: InheritSource::Fd(n),
        });
    }
    Err(format!("{s:?}: expected FD=PATH or FD:N"))
}

pub(crate) fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|_| format!("{s:?} is not a number (decimal or 0x-hex)"))
}

pub(crate) const CHECKPOINT_HELP: &str = "\
The image is written to DIR/NAME.img.CRID (mode 0600): unnamed (O_TMPFILE) or under a \
temporary name while it is written, named only when complete, never over a file already at \
that name (a CRID whose name is taken is skipped). On any failure nothing is left in DIR and \
the task is left running, untraced.

By default the capture is lazy: while the task is stopped, cr-dump injects clone() into it to \
make a copy-on-write twin (a stopped copy of its memory, traced by cr-dump, killed after the \
write-back; the task never sees it), resumes the task, and writes the image from the twin. \
The downtime is the clone, not a copy of the memory (only shared memory, which a twin would \
share rather than hold, is copied then); the task then pays a page copy on its \
first write to each page until the write-back ends. The memory is copied into a buffer while \
the task is stopped instead: with --copy; for a task with less than 32 MiB to copy, for which \
that is shorter (--twin forces a twin); for an incremental checkpoint that write-protect \
tracking serves (only the written pages are copied) and with --precopy and --kill; and where no twin \
can stand for the task (seccomp, MADV_DONTFORK or MADV_WIPEONFORK memory, clone failing; a \
note says why). --direct streams \
the image while the task stays stopped, with bounded memory (a few 1 MiB buffers).

With `-- CMD ARGS...`, cr-dump starts CMD (stdin from /dev/null, its stdout sent to cr-dump's \
stderr), waits --after seconds, checkpoints it, then kills it: the command was started only to \
be checkpointed. --keep lets it run on instead (cr-dump exits without waiting for it); \
--leave-stopped leaves it stopped.

Printed: CRID, image path, size, page counts, and timings: downtime (how long the task was \
stopped), capture (start of the capture to the image ready in memory; in --direct mode, \
to the image written), write-back, total (the whole command); then the state report: one \
line per open descriptor, the working directory and the root, with what it is and what \
restore will do (restore, partial, inherit, lost). Anything not restored exactly is also a \
warning on stderr; --strict refuses the checkpoint instead. --json prints one object with \
the same fields (*_ms in milliseconds; the report as `fidelity`: item, kind, action, note) \
plus peak_rss_kib, snapshot (how lazy mode held the memory: twin or copy; none with \
--direct) and page_path (how the pages reached the image: splice, from a twin to an image \
file; read; buffer, from a copy; CR_DUMP_NO_SPLICE=1 makes a twin's pages be read) and \
twin_cpu_ms (the CPU the twin spent, to the clock tick: the calls injected into it are the \
checkpoint's work that no getrusage of cr-dump counts; null without a twin).

Open files: regular files (path, flags, offset, identity checked at restore), directories, \
devices, terminals, the working directory and root are recorded; a file deleted while open \
is stored with its contents up to --ghost-limit (64 MiB by default).

Incremental: --parent DIR/NAME.img.K (or --incremental: the newest NAME.img.* in DIR) writes an image that names its parent (CRID and digest) and stores only the pages that differ from the parent chain; the others are marked 'in the parent'. A page of a mapping the parent does not have with the same start, end, kind and backing is never 'in the parent'. How unchanged pages are found (the image records it): by write-protect dirty tracking when it was armed (--track, or --precopy) at the parent's capture; else by comparing contents with the parent (from a twin, as the image is written: the stop stays a fork's). Tracking leaves one userfaultfd open in the task; its state is kept beside the CRID file as cr-track.PID.STARTTIME. --precopy copies memory while the task runs, round after round, and stops it only for the last delta.

CRIDs come from a node-wide counter file: $CR_CRID_FILE, else /var/lib/cr/crid, else \
$XDG_RUNTIME_DIR/cr-crid, else /tmp/cr-$EUID/crid (in a private 0700 directory). It must be \
a regular file owned by you (a symlink, FIFO or another user's file is refused); its lock is \
waited for at most 3 s. A file already at the image's final name is never overwritten: the \
checkpoint takes the next free CRID.

SIGINT, SIGTERM, SIGHUP and SIGQUIT interrupt a checkpoint cleanly: the task is let go as it \
was (a twin is killed and reaped) and nothing is written. If the unwinding has not ended 10 s \
after the signal ($CR_DUMP_INTERRUPT_GRACE_MS, in milliseconds), cr-dump exits at once, as a \
SIGKILL would. SIGKILL cannot be caught: a small guard process (cr-dump __guard) started \
before the freeze then lets the task go, puts back the registers of a task left in an \
injected system call, reaps a half-made twin and closes a half-made userfaultfd.

Exit status: 0 done, 1 the checkpoint failed, 2 usage error, 128+N interrupted by signal N \
(130 for Ctrl-C).";

#[derive(Args)]
pub(crate) struct CheckpointArgs {
    /// The task to checkpoint.
    #[arg(long, conflicts_with = "command")]
    pub(crate) pid: Option<i32>,
    /// Output directory (created, mode 0700, if only its last component is missing).
    #[arg(short = 'o', long = "output", value_name = "DIR", default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Image name (default: the task's comm).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
    /// Leave the task stopped (SIGSTOP) after the checkpoint, untraced.
    #[arg(long, conflicts_with = "kill")]
    pub(crate) leave_stopped: bool,
    /// Kill the task after the checkpoint (e.g. for migration).
    #[arg(long)]
    pub(crate) kill: bool,
    /// Stream the image while the task is stopped, with bounded memory, instead of taking a
    /// lazy snapshot first.
    #[arg(long)]
    pub(crate) direct: bool,
    /// Lazy mode: copy the memory into a buffer while the task is stopped, instead of making
    /// a copy-on-write twin of the task.
    #[arg(long, conflicts_with = "direct")]
    pub(crate) copy: bool,
    /// Lazy mode: make a copy-on-write twin even for a task with less than 32 MiB to copy
    /// (by default such a task is copied while stopped: that is shorter).
    #[arg(long, conflicts_with_all = ["direct", "copy"])]
    pub(crate) twin: bool,
    /// With CMD: seconds to let it run before the checkpoint.
    #[arg(long, value_name = "SECONDS", default_value = "0.5", value_parser = parse_secs)]
    pub(crate) after: Duration,
    /// With CMD: let it run on after the checkpoint instead of killing it.
    #[arg(long, conflicts_with_all = ["kill", "leave_stopped"])]
    pub(crate) keep: bool,
    /// fsync the image before naming it.
    #[arg(long)]
    pub(crate) sync: bool,
    /// Then print the image as `cr-dump show` does.
    #[arg(long, conflicts_with = "json")]
    pub(crate) show: bool,
    /// Incremental checkpoint over this parent image (DIR/NAME.img.CRID; its own parents are
    /// found beside it): only pages that differ from the parent chain are stored.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["incremental", "direct"])]
    pub(crate) parent: Option<PathBuf>,
    /// Incremental checkpoint over the newest NAME.img.CRID in the output directory (a full
    /// one if there is none).
    #[arg(long, conflicts_with = "direct")]
    pub(crate) incremental: bool,
    /// Arm write-protect dirty tracking (userfaultfd WP_ASYNC + PAGEMAP_SCAN) after this
    /// checkpoint, so that the next incremental one over this image copies only the pages
    /// written since. Once armed, incremental checkpoints over the latest tracked image use
    /// it and keep it armed.
    #[arg(long, conflicts_with = "direct")]
    pub(crate) track: bool,
    /// Pre-copy: copy memory while the task runs (write-protect tracking finds what it
    /// rewrites meanwhile), round after round, then freeze only to copy the last delta.
    /// Leaves tracking armed.
    #[arg(long, conflicts_with_all = ["direct", "kill"])]
    pub(crate) precopy: bool,
    /// With --precopy: at most this many rounds while the task runs (the first copies
    /// everything).
    #[arg(long, value_name = "N", default_value = "8", requires = "precopy")]
    pub(crate) max_rounds: u32,
    /// With --precopy: at most this long for the rounds while the task runs.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_secs, requires = "precopy")]
    pub(crate) max_seconds: Duration,
    /// Refuse the checkpoint (exit 1, the task left running, no image) when restore would
    /// not bring back something of the task exactly (a warning of the state report).
    #[arg(long)]
    pub(crate) strict: bool,
    /// The largest file deleted while open whose contents go into the image (bytes); a
    /// larger one is reported lost.
    #[arg(long, value_name = "BYTES", default_value = "67108864", value_parser = parse_u64)]
    pub(crate) ghost_limit: u64,
    /// The command to start and checkpoint.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s:?} is not a duration"))
}
