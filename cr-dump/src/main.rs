//! `cr-dump`: checkpoint a live Linux task into a cr image; show an image.
//!
//! Exit status: 0 fine, 1 the task or the image failed (message on stderr as
//! `cr-dump: error: ...`), 2 usage error.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use clap::{Args, Parser, Subcommand};
use cr_dump::capture::checkpoint::{millis, DiffMethod};
use cr_dump::capture::{self, After, CheckpointOptions, LazyMode, PrecopyLimits, Report};
use cr_dump::inspect::{self, diff, json, show, squash};
use cr_dump::{crid, output, sys, Error};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "cr-dump",
    version,
    about = "Checkpoint a live Linux task into a cr image"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint a task: `--pid PID`, or start `-- CMD ARGS...` and checkpoint it.
    #[command(after_help = CHECKPOINT_HELP)]
    Checkpoint(CheckpointArgs),
    /// Print an image: header, task, registers, mm, VMAs with page counts.
    #[command(
        after_help = "Reads only metadata (page data is not touched) unless --with-pages.\n\
        The JSON schema is spec/JSON.md (cr-image/1); `encode` turns `show --json --with-pages` \
        back into the identical image."
    )]
    Show {
        /// The image file.
        image: PathBuf,
        /// List every record with its byte offset, kind, length and CRC.
        #[arg(short, long)]
        verbose: bool,
        /// Print the whole structure as JSON (schema cr-image/1).
        #[arg(long)]
        json: bool,
        /// With --json: include page data (hex), so that `encode` can rebuild the image.
        #[arg(long, requires = "json")]
        with_pages: bool,
    },
    /// Build an image from the JSON of `show --json --with-pages` (byte-identical to the original).
    Encode {
        /// The JSON file, or - for stdin.
        json: PathBuf,
        /// The image to write (written to a temporary name, renamed when complete).
        #[arg(short, long, value_name = "IMAGE")]
        output: PathBuf,
    },
    /// Check an image: structure, order, every CRC, limits, the tail; with --chain, its parents.
    #[command(
        after_help = "Exit status: 0 if every check holds; 1 with the first error (byte \
        offset, record kind) otherwise.\nA single image is streamed with bounded memory, so IMAGE \
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
        /// The image (its parents are found beside it).
        image: PathBuf,
        /// First address.
        #[arg(long, value_parser = parse_u64)]
        addr: u64,
        /// Number of bytes.
        #[arg(long, value_parser = parse_u64)]
        len: u64,
        /// Write to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print a hexdump instead of raw bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Compare two images: VMAs added/removed/changed, pages that differ, registers, mm, task.
    Diff {
        /// First image.
        a: PathBuf,
        /// Second image.
        b: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an ELF core file of the checkpointed task: `gdb PROGRAM CORE` then works.
    Core {
        /// The image (its parents are found beside it).
        image: PathBuf,
        /// The core file to write.
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
        OUT/NAME.img.NEWCRID (NAME from IMAGE's file name); otherwise to OUT. Written to a \
        temporary name and renamed when complete."
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
        another architecture or kernel vDSO layout, XSAVE features this CPU lacks) before \
        anything starts, then builds the task in a child of cr-dump by ptrace syscall \
        injection. The task gets a new pid; it keeps cr-dump's credentials, working directory \
        and stdin/stdout/stderr (/dev/null with --detach); no other descriptor is open.\n\
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
        /// Write the restored task's pid to this file.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
    },
    /// Print shell completions for cr-dump.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of cr-dump.
    Man,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|_| format!("{s:?} is not a number (decimal or 0x-hex)"))
}

const CHECKPOINT_HELP: &str = "\
The image is written to DIR/NAME.img.CRID (mode 0600): unnamed (O_TMPFILE) or under a \
temporary name while it is written, named only when complete. On any failure nothing is left \
in DIR and the task is left running, untraced.

By default the capture is lazy: while the task is stopped, cr-dump injects clone() into it to \
make a copy-on-write twin (a stopped copy of its memory, traced by cr-dump, killed after the \
write-back; the task never sees it), resumes the task, and writes the image from the twin. \
The downtime is the clone, not a copy of the memory; the task then pays a page copy on its \
first write to each page until the write-back ends. The memory is copied into a buffer while \
the task is stopped instead: with --copy; for a task with less than 32 MiB to copy, for which \
that is shorter (--twin forces a twin); with write-protect tracking (--track, --precopy, or \
armed by an earlier checkpoint: a twin would not carry it) and with --kill; and where no twin \
can stand for the task (seccomp, MADV_DONTFORK or MADV_WIPEONFORK memory, clone failing; a \
note says why). --direct streams \
the image while the task stays stopped, with bounded memory (a few 1 MiB buffers).

With `-- CMD ARGS...`, cr-dump starts CMD (stdin from /dev/null, its stdout sent to cr-dump's \
stderr), waits --after seconds, checkpoints it, then kills it: the command was started only to \
be checkpointed. --keep lets it run on instead (cr-dump exits without waiting for it); \
--leave-stopped leaves it stopped.

Printed: CRID, image path, size, page counts, and timings: downtime (how long the task was \
stopped), capture (start of the capture to the image ready in memory; in --direct mode, \
to the image written), write-back, total (the whole command). --json prints one object with \
the same fields (*_ms in milliseconds) plus peak_rss_kib and snapshot (how lazy mode held \
the memory: twin or copy; none with --direct).

Incremental: --parent DIR/NAME.img.K (or --incremental: the newest NAME.img.* in DIR) writes an image that names its parent (CRID and digest) and stores only the pages that differ from the parent chain; the others are marked 'in the parent'. A page of a mapping the parent does not have with the same start, end, kind and backing is never 'in the parent'. How unchanged pages are found (the image records it): by write-protect dirty tracking when it was armed (--track, or --precopy) at the parent's capture; else by comparing contents with the parent (from a twin, as the image is written: the stop stays a fork's). Tracking leaves one userfaultfd open in the task; its state is kept beside the CRID file as cr-track.PID.STARTTIME. --precopy copies memory while the task runs, round after round, and stops it only for the last delta.

CRIDs come from a node-wide counter file: $CR_CRID_FILE, else /var/lib/cr/crid, else \
$XDG_RUNTIME_DIR/cr-crid, else /tmp/cr-crid-$EUID.

Exit status: 0 done, 1 the checkpoint failed, 2 usage error.";

#[derive(Args)]
struct CheckpointArgs {
    /// The task to checkpoint.
    #[arg(long, conflicts_with = "command")]
    pid: Option<i32>,
    /// Output directory (created, mode 0700, if only its last component is missing).
    #[arg(short = 'o', long = "output", value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Image name (default: the task's comm).
    #[arg(long)]
    name: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Leave the task stopped (SIGSTOP) after the checkpoint, untraced.
    #[arg(long, conflicts_with = "kill")]
    leave_stopped: bool,
    /// Kill the task after the checkpoint (e.g. for migration).
    #[arg(long)]
    kill: bool,
    /// Stream the image while the task is stopped, with bounded memory, instead of taking a
    /// lazy snapshot first.
    #[arg(long)]
    direct: bool,
    /// Lazy mode: copy the memory into a buffer while the task is stopped, instead of making
    /// a copy-on-write twin of the task.
    #[arg(long, conflicts_with = "direct")]
    copy: bool,
    /// Lazy mode: make a copy-on-write twin even for a task with less than 32 MiB to copy
    /// (by default such a task is copied while stopped: that is shorter).
    #[arg(long, conflicts_with_all = ["direct", "copy"])]
    twin: bool,
    /// With CMD: seconds to let it run before the checkpoint.
    #[arg(long, value_name = "SECONDS", default_value = "0.5", value_parser = parse_secs)]
    after: Duration,
    /// With CMD: let it run on after the checkpoint instead of killing it.
    #[arg(long, conflicts_with_all = ["kill", "leave_stopped"])]
    keep: bool,
    /// fsync the image before naming it.
    #[arg(long)]
    sync: bool,
    /// Then print the image as `cr-dump show` does.
    #[arg(long, conflicts_with = "json")]
    show: bool,
    /// Incremental checkpoint over this parent image (DIR/NAME.img.CRID; its own parents are
    /// found beside it): only pages that differ from the parent chain are stored.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["incremental", "direct"])]
    parent: Option<PathBuf>,
    /// Incremental checkpoint over the newest NAME.img.CRID in the output directory (a full
    /// one if there is none).
    #[arg(long, conflicts_with = "direct")]
    incremental: bool,
    /// Arm write-protect dirty tracking (userfaultfd WP_ASYNC + PAGEMAP_SCAN) after this
    /// checkpoint, so that the next incremental one over this image copies only the pages
    /// written since. Once armed, incremental checkpoints over the latest tracked image use
    /// it and keep it armed.
    #[arg(long, conflicts_with = "direct")]
    track: bool,
    /// Pre-copy: copy memory while the task runs (write-protect tracking finds what it
    /// rewrites meanwhile), round after round, then freeze only to copy the last delta.
    /// Leaves tracking armed.
    #[arg(long, conflicts_with_all = ["direct", "kill"])]
    precopy: bool,
    /// With --precopy: at most this many rounds while the task runs (the first copies
    /// everything).
    #[arg(long, value_name = "N", default_value = "8", requires = "precopy")]
    max_rounds: u32,
    /// With --precopy: at most this long for the rounds while the task runs.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_secs, requires = "precopy")]
    max_seconds: Duration,
    /// The command to start and checkpoint.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s:?} is not a duration"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sys::ignore_sigxfsz();
    let r = match cli.cmd {
        Cmd::Checkpoint(a) => checkpoint(a),
        Cmd::Show {
            image,
            verbose,
            json,
            with_pages,
        } => show_cmd(&image, verbose, json, with_pages),
        Cmd::Encode { json, output } => encode_cmd(&json, &output),
        Cmd::Verify {
            image,
            chain,
            all,
            json,
        } => verify_cmd(&image, chain, all, json),
        Cmd::Extract {
            image,
            addr,
            len,
            output,
            hex,
        } => extract_cmd(&image, addr, len, output, hex),
        Cmd::Diff { a, b, json } => diff_cmd(&a, &b, json),
        Cmd::Core { image, output } => core_cmd(&image, &output),
        Cmd::Chain { image, json } => chain_cmd(&image, json),
        Cmd::Squash { image, output } => squash_cmd(&image, &output),
        Cmd::Restore {
            image,
            stopped,
            detach,
            pid_file,
        } => restore_cmd(&image, stopped, detach, pid_file.as_deref()),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "cr-dump",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Cmd::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .map_err(|e| Fail::Run(format!("writing the man page: {e}"))),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            eprintln!("cr-dump: usage error: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Run(m)) => {
            eprintln!("cr-dump: error: {m}");
            ExitCode::from(1)
        }
    }
}

enum Fail {
    Usage(String),
    Run(String),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Run(e.to_string())
    }
}

fn show_cmd(
    path: &std::path::Path,
    verbose: bool,
    json: bool,
    with_pages: bool,
) -> Result<(), Fail> {
    let text = if with_pages {
        // Page data wanted: map the file and check everything, data CRCs included.
        let file = std::fs::File::open(path)
            .map_err(|e| Fail::Run(format!("opening {}: {e}", path.display())))?;
        let map = sys::FileMap::new(&file)
            .map_err(|e| Fail::Run(format!("mapping {}: {e}", path.display())))?;
        json::pretty(&json::with_pages(map.bytes(), path)?)?
    } else if json {
        // Metadata only, streamed: page data is skipped by seeking.
        let f = std::fs::File::open(path)
            .map_err(|e| Fail::Run(format!("opening {}: {e}", path.display())))?;
        json::pretty(&json::read_metadata(f, path)?)?
    } else {
        let s = show::Shown::read(path)?;
        if verbose {
            show::render(&s) + "\n" + &show::render_records(&s)
        } else {
            show::render(&s)
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

fn encode_cmd(input: &std::path::Path, output: &std::path::Path) -> Result<(), Fail> {
    let text = if input.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
    } else {
        std::fs::read_to_string(input)
    }
    .map_err(|e| Fail::Run(format!("reading {}: {e}", input.display())))?;
    let repr = json::decode(text.as_bytes())
        .map_err(|e| Fail::Run(format!("{}: {e}", input.display())))?;
    output::write_atomic(output, |w| json::encode(&repr, w))?;
    Ok(())
}

fn verify_cmd(path: &std::path::Path, chain: bool, all: bool, json: bool) -> Result<(), Fail> {
    let report = if path.as_os_str() == "-" {
        if chain {
            return Err(Fail::Usage(
                "--chain needs an image file (its parents are found beside it)".into(),
            ));
        }
        inspect::verify_reader(std::io::stdin().lock(), "-", all)?
    } else {
        inspect::verify(path, chain, all)?
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| Fail::Run(format!("JSON: {e}")))?
        );
    } else if report.problems.is_empty() {
        for i in &report.images {
            println!(
                "ok  {}  CRID {} parent {}  {} records, {} bytes, digest {}  pages: {} data, {} zero, {} in parent",
                i.path, i.crid, i.parent_crid, i.records, i.bytes, i.digest, i.pages[0], i.pages[1], i.pages[2]
            );
        }
        if chain {
            println!(
                "chain ok: {} image(s), {} parent page(s) resolved",
                report.images.len(),
                report.parent_pages_checked
            );
        }
    }
    if report.problems.is_empty() {
        return Ok(());
    }
    for p in &report.problems {
        eprintln!("cr-dump: problem: {p}");
    }
    Err(Fail::Run(format!(
        "{} problem(s) found",
        report.problems.len()
    )))
}

fn extract_cmd(
    path: &std::path::Path,
    addr: u64,
    len: u64,
    out: Option<PathBuf>,
    hex: bool,
) -> Result<(), Fail> {
    let bytes = inspect::extract(path, addr, len)?;
    let data = if hex {
        inspect::hexdump(addr, &bytes).into_bytes()
    } else {
        bytes
    };
    match out {
        Some(p) => output::write_atomic(&p, |w| {
            w.write_all(&data)
                .map_err(|e| Error::io(format!("writing {}", p.display()), e))
        })?,
        None => std::io::stdout()
            .lock()
            .write_all(&data)
            .map_err(|e| Fail::Run(format!("writing to stdout: {e}")))?,
    }
    Ok(())
}

fn diff_cmd(a: &std::path::Path, b: &std::path::Path, json: bool) -> Result<(), Fail> {
    let d = diff::diff(a, b)?;
    if json {
        println!("{}", d.to_json());
    } else {
        print!("{}", d.to_text());
    }
    Ok(())
}

fn core_cmd(image: &std::path::Path, out: &std::path::Path) -> Result<(), Fail> {
    let n = output::write_atomic(out, |w| inspect::core::write_core(image, w))?;
    println!(
        "core file {} ({n} bytes): open it with `gdb PROGRAM {}`",
        out.display(),
        out.display()
    );
    Ok(())
}

fn restore_cmd(
    image: &std::path::Path,
    stopped: bool,
    detach: bool,
    pid_file: Option<&std::path::Path>,
) -> Result<(), Fail> {
    let opts = cr_dump::restore::Options { stopped, detach };
    let r = cr_dump::restore::restore(image, &opts)?;
    for w in &r.warnings {
        eprintln!("cr-dump: warning: {w}");
    }
    if let Some(f) = pid_file {
        std::fs::write(f, format!("{}\n", r.pid))
            .map_err(|e| Fail::Run(format!("writing {}: {e}", f.display())))?;
    }
    if detach {
        println!("{}", r.pid);
        return Ok(());
    }
    let _ = std::io::stdout().flush();
    let code = match sys::waitpid(r.pid) {
        Ok(sys::WaitStatus::Exited(c)) => c,
        Ok(sys::WaitStatus::Signaled(s)) => 128 + s,
        Ok(s) => return Err(Fail::Run(format!("restored task {}: {s:?}", r.pid))),
        Err(e) => return Err(Fail::Run(format!("waiting for pid {}: {e}", r.pid))),
    };
    std::process::exit(code);
}

fn chain_cmd(image: &std::path::Path, json: bool) -> Result<(), Fail> {
    let rep = inspect::chain_report(image);
    if json {
        println!(
            "{}",
            serde_json::to_string(&rep).map_err(|e| Fail::Run(format!("JSON: {e}")))?
        );
    } else {
        println!(
            "{:>8}  {:>8}  {:>12}  {:>10}  {:>10}  {:>10}  file",
            "CRID", "parent", "bytes", "data", "zero", "in-parent"
        );
        for i in &rep.images {
            println!(
                "{:>8}  {:>8}  {:>12}  {:>10}  {:>10}  {:>10}  {}",
                i.crid, i.parent_crid, i.bytes, i.pages[0], i.pages[1], i.pages[2], i.path
            );
        }
        if rep.ok {
            println!(
                "chain ok: {} image(s), {} parent page(s) resolved",
                rep.images.len(),
                rep.parent_pages_checked
            );
        }
    }
    match rep.error {
        Some(e) => Err(Fail::Run(format!("chain broken: {e}"))),
        None => Ok(()),
    }
}

fn squash_cmd(image: &std::path::Path, out: &std::path::Path) -> Result<(), Fail> {
    let crid = crid::next()?;
    let dst = if out.is_dir() {
        let stem = image
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once(".img.").map(|(s, _)| s.to_string()))
            .ok_or_else(|| {
                Fail::Usage(format!(
                    "{}: not named NAME.img.CRID; give -o a file name",
                    image.display()
                ))
            })?;
        out.join(output::image_name(&stem, crid))
    } else {
        out.to_path_buf()
    };
    let s = output::write_atomic(&dst, |w| squash::squash(image, crid, w))?;
    println!(
        "squashed {} image(s) (newest CRID {}) into {}: CRID {}, {} bytes, {} data and {} zero pages",
        s.depth,
        s.from_crid,
        dst.display(),
        s.crid,
        s.summary.image_len,
        s.data_pages,
        s.zero_pages
    );
    Ok(())
}

/// Kills and reaps a child we started, when dropped (unless released).
struct Started(Option<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(cmd: &[String], after: Duration) -> Result<Started, Fail> {
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| Fail::Usage("give --pid PID or -- CMD ARGS...".into()))?;
    let stdout = std::io::stderr()
        .as_fd_clone()
        .map_err(|e| Fail::Run(format!("duplicating stderr: {e}")))?;
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .spawn()
        .map_err(|e| Fail::Run(format!("starting {prog}: {e}")))?;
    let mut s = Started(Some(child));
    std::thread::sleep(after);
    if let Some(c) = &mut s.0 {
        if let Ok(Some(st)) = c.try_wait() {
            s.0 = None;
            return Err(Fail::Run(format!(
                "{prog} exited before the checkpoint ({st})"
            )));
        }
    }
    Ok(s)
}

trait FdClone {
    fn as_fd_clone(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl FdClone for std::io::Stderr {
    fn as_fd_clone(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}

/// Shows the long steps of a checkpoint as a progress bar on a terminal, and prints its notes.
#[derive(Default)]
struct Bar(Option<indicatif::ProgressBar>);

impl capture::Progress for Bar {
    fn start(&mut self, step: &'static str, len: Option<u64>) {
        self.0 = bar(len, step);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
    }
    fn note(&mut self, note: &str) {
        eprintln!("cr-dump: note: {note}");
    }
}

fn bar(len: Option<u64>, msg: &'static str) -> Option<indicatif::ProgressBar> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let b = match len {
        Some(l) => indicatif::ProgressBar::new(l),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    b.set_style(style.progress_chars("=> "));
    b.set_message(msg);
    Some(b)
}

/// This process's peak resident set (`VmHWM`), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The library's options from the command line's.
fn checkpoint_options(a: &CheckpointArgs, pid: i32) -> CheckpointOptions {
    let after = if a.kill {
        After::Kill
    } else if a.leave_stopped {
        After::Stop
    } else {
        After::Continue
    };
    let lazy = if a.copy {
        LazyMode::Copy
    } else if a.twin {
        LazyMode::Twin
    } else {
        LazyMode::Auto
    };
    CheckpointOptions {
        pid,
        dir: a.dir.clone(),
        name: a.name.clone(),
        after,
        lazy,
        direct: a.direct,
        sync: a.sync,
        parent: a.parent.clone(),
        incremental: a.incremental,
        track: a.track,
        precopy: a.precopy.then_some(PrecopyLimits {
            max_rounds: a.max_rounds,
            max_time: a.max_seconds,
        }),
    }
}

fn checkpoint(a: CheckpointArgs) -> Result<(), Fail> {
    let mut started = match (a.pid, a.command.is_empty()) {
        (Some(_), false) => {
            return Err(Fail::Usage("give either --pid or -- CMD, not both".into()))
        }
        (None, true) => return Err(Fail::Usage("give --pid PID or -- CMD ARGS...".into())),
        (Some(_), true) if a.keep => {
            return Err(Fail::Usage("--keep only applies to -- CMD".into()))
        }
        (Some(_), true) => None,
        (None, false) => Some(start(&a.command, a.after)?),
    };
    // The checkpoint's own time: from here (after --after for a started command).
    let t0 = Instant::now();
    let pid = match (&started, a.pid) {
        (Some(Started(Some(c))), _) => i32::try_from(c.id()).unwrap_or(-1),
        (_, Some(p)) => p,
        _ => return Err(Fail::Usage("give --pid PID or -- CMD ARGS...".into())),
    };
    let r = capture::checkpoint(&checkpoint_options(&a, pid), &mut Bar::default())?;
    // The command we started: killed unless --keep / --leave-stopped.
    if let Some(s) = &mut started {
        if a.keep || a.leave_stopped {
            s.0 = None;
        } else if let Some(c) = &mut s.0 {
            let _ = c.kill();
            let _ = c.wait();
            s.0 = None;
        }
    }
    let total = t0.elapsed();
    if a.json {
        let mut j = serde_json::to_value(&r)
            .map_err(|e| Fail::Run(format!("internal: the report as JSON: {e}")))?;
        if let Some(o) = j.as_object_mut() {
            o.insert("total_ms".into(), millis(total).into());
            o.insert("peak_rss_kib".into(), peak_rss_kib().into());
        }
        println!("{j}");
    } else {
        print_report(&r, total);
    }
    if a.show {
        println!();
        show_cmd(&r.image, false, false, false)?;
    }
    Ok(())
}

/// The text form of a checkpoint's report.
fn print_report(r: &Report, total: Duration) {
    let method = match r.diff_method {
        DiffMethod::None => "none",
        DiffMethod::ContentCompare => "content-compare",
        DiffMethod::WriteTracking => "write-tracking",
    };
    println!("crid       {}", r.crid);
    println!("image      {}", r.image.display());
    println!("size       {} bytes", r.size);
    match &r.parent_image {
        Some(p) => {
            println!(
                "parent     CRID {} ({}), {method} ({} VMAs tracked)",
                r.parent_crid,
                p.display(),
                r.tracked_vmas
            );
            println!(
                "pages      {} data, {} zero, {} in parent, {} vmas",
                r.data_pages, r.zero_pages, r.parent_pages, r.vmas
            );
        }
        None => println!(
            "pages      {} data, {} zero, {} vmas",
            r.data_pages, r.zero_pages, r.vmas
        ),
    }
    if let (Some(rounds), Some(fin), Some(arm)) = (
        &r.precopy_rounds,
        r.precopy_final_pages,
        r.precopy_arm_downtime,
    ) {
        println!(
            "pre-copy   pages per round {rounds:?} while running, {fin} frozen; arming stopped the task {:.3} ms",
            millis(arm)
        );
    }
    if r.tracking_armed {
        println!("tracking   armed: the next incremental checkpoint copies written pages");
    }
    println!("downtime   {:.3} ms", millis(r.downtime));
    println!("capture    {:.3} ms", millis(r.capture));
    println!("write-back {:.3} ms", millis(r.writeback));
    println!("total      {:.3} ms", millis(total));
}
