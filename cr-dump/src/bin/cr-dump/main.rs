//! `cr-dump`: checkpoint a live Linux task into a cr image; show an image.
//!
//! Exit status: 0 fine, 1 the task or the image failed (message on stderr as
//! `cr-dump: error: ...`), 2 usage error, 128 + N a checkpoint interrupted by signal N (SIGINT,
//! SIGTERM, SIGHUP, SIGQUIT: the task let go as it was, nothing written).
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod args;
mod man;

use args::{CheckpointArgs, Cli, Cmd};
use clap::Parser;
use cr_dump::capture::checkpoint::{millis, DiffMethod};
use cr_dump::capture::state::Action;
use cr_dump::capture::{self, After, CheckpointOptions, LazyMode, PrecopyLimits, Report};
use cr_dump::inspect::{self, diff, json, show, squash};
use cr_dump::{crid, output, sys, Error};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    // The guard of a checkpoint (sys::guard), spawned by cr-dump itself: not a user's verb.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == sys::guard::SUBCOMMAND)
    {
        return ExitCode::from(cr_dump::capture::guard::run());
    }
    let cli = Cli::parse();
    sys::ignore_sigxfsz();
    let r = match cli.cmd {
        Cmd::Checkpoint(a) => match grace().map(sys::catch_interrupts) {
            // Only a checkpoint holds a task: the other verbs keep the default actions.
            Ok(Ok(())) => checkpoint(a),
            Ok(Err(e)) => Err(Fail::Run(format!("installing signal handlers: {e}"))),
            Err(e) => Err(e),
        },
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
            lazy,
            files,
        } => restore_cmd(&image, stopped, detach, lazy, pid_file.as_deref(), files),
        Cmd::Completions { shell } => std::io::stdout()
            .write_all(completion_script(shell).as_bytes())
            .map_err(|e| Fail::Run(format!("writing the completion script: {e}"))),
        Cmd::Man { verb } => {
            man::render(verb.as_deref(), &mut std::io::stdout().lock()).map_err(|e| match verb {
                Some(_) if e.starts_with("no verb") => Fail::Usage(e),
                _ => Fail::Run(e),
            })
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            eprintln!("cr-dump: usage error: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Differ) => ExitCode::from(1),
        Err(Fail::Trouble(m)) => {
            eprintln!("cr-dump: error: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Run(m)) => match sys::interrupted() {
            // The shell's convention for a command ended by a signal: 128 + its number.
            Some(s) => {
                eprintln!(
                    "cr-dump: interrupted by {}: the task was let go as it was, nothing written ({m})",
                    sys::signal_name(s)
                );
                ExitCode::from(u8::try_from(128 + s).unwrap_or(1))
            }
            None => {
                eprintln!("cr-dump: error: {m}");
                ExitCode::from(1)
            }
        },
    }
}

/// The completion script for `shell`. clap_complete's bash script for a name with a hyphen
/// names its `case` labels `cr__subcmd__dump__subcmd__VERB` but sets `cmd` to
/// `cr__dump__subcmd__VERB`, so nothing after the verb completed: the labels are renamed to
/// match.
fn completion_script(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "cr-dump",
        &mut out,
    );
    let s = String::from_utf8_lossy(&out).into_owned();
    match shell {
        clap_complete::Shell::Bash => s.replace("cr__subcmd__dump__", "cr__dump__"),
        _ => s,
    }
}

enum Fail {
    Usage(String),
    Run(String),
    /// `diff`: the images differ (exit 1, the report already printed).
    Differ,
    /// `diff`: an error (exit 2, as diff(1) does, since 1 means "different").
    Trouble(String),
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
        // Page data wanted: map the file (or read stdin) and check everything, data CRCs
        // included.
        let m = inspect::Mapped::open(path)?;
        json::pretty(&json::with_pages(m.bytes(), &m.path)?)?
    } else if inspect::chain::is_stdin(path) {
        // A pipe cannot seek past page data: read it whole.
        let m = inspect::Mapped::open(path)?;
        let r = std::io::Cursor::new(m.bytes());
        if json {
            json::pretty(&json::read_metadata(r, &m.path)?)?
        } else {
            render_shown(&show::Shown::from_reader(r, &m.path)?, verbose)
        }
    } else if json {
        // Metadata only, streamed: page data is skipped by seeking.
        let f = inspect::open_image(path)?;
        json::pretty(&json::read_metadata(f, path)?)?
    } else {
        render_shown(&show::Shown::read(path)?, verbose)
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

fn render_shown(s: &show::Shown, verbose: bool) -> String {
    if verbose {
        show::render_with(s, true) + "\n" + &show::render_records(s)
    } else {
        show::render(s)
    }
}

fn encode_cmd(input: &std::path::Path, output: &std::path::Path) -> Result<(), Fail> {
    let text = if input.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
    } else {
        sys::open_regular(input, sys::Access::Read).and_then(|mut f| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).map(|_| s)
        })
    }
    .map_err(|e| Fail::Run(format!("reading {}: {e}", input.display())))?;
    let repr = json::decode(text.as_bytes())
        .map_err(|e| Fail::Run(format!("{}: {e}", input.display())))?;
    output::write_atomic(output, |w| json::encode(&repr, w))?;
    Ok(())
}

fn verify_cmd(path: &std::path::Path, chain: bool, all: bool, json: bool) -> Result<(), Fail> {
    let is_stdin = inspect::chain::is_stdin;
    if chain && is_stdin(path) {
        return Err(Fail::Usage(
            "--chain needs an image file (its parents are found beside it)".into(),
        ));
    }
    let report = if is_stdin(path) {
        inspect::verify_reader(std::io::stdin().lock(), "-", all)
    } else {
        // Large images take seconds to read and check.
        let meter = Meter::new("verify", Some(0));
        let r = inspect::verify_with(path, chain, all, &mut |d, t| meter.set(d, t));
        meter.finish();
        r
    };
    let report = match report {
        Ok(r) => r,
        // With --json, one object whatever happens: the error, with what it names.
        Err(e) if json => {
            let mut o = inspect::problem_json(&e.to_string());
            o["ok"] = false.into();
            o["error"] = o["message"].take();
            if let Some(m) = o.as_object_mut() {
                m.remove("message");
                m.entry("path").or_insert(path.display().to_string().into());
            }
            println!("{o}");
            return Err(Fail::Run(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        let mut o = serde_json::to_value(&report).map_err(|e| Fail::Run(format!("JSON: {e}")))?;
        o["ok"] = report.problems.is_empty().into();
        o["errors"] = report
            .problems
            .iter()
            .map(|p| inspect::problem_json(p))
            .collect::<Vec<_>>()
            .into();
        println!("{o}");
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

/// Exit status as diff(1): 0 the same task state, 1 different, 2 trouble.
fn diff_cmd(a: &std::path::Path, b: &std::path::Path, json: bool) -> Result<(), Fail> {
    let d = diff::diff(a, b).map_err(|e| Fail::Trouble(e.to_string()))?;
    if json {
        println!("{}", d.to_json());
    } else {
        print!("{}", d.to_text());
    }
    if d.is_empty() {
        Ok(())
    } else {
        Err(Fail::Differ)
    }
}

fn core_cmd(image: &std::path::Path, out: &std::path::Path) -> Result<(), Fail> {
    // Cores of large tasks take seconds.
    let meter = Meter::new("core", Some(0));
    let mut progress = |done: u64, total: u64| meter.set(done, total);
    let core = output::write_atomic(out, |w| inspect::core::write_core(image, w, &mut progress));
    meter.finish();
    let core = core?;
    for n in &core.notes {
        eprintln!("cr-dump: note: {n}");
    }
    println!(
        "core file {} ({}): open it with `gdb PROGRAM {}`",
        out.display(),
        show::human(core.len),
        out.display()
    );
    Ok(())
}

fn restore_cmd(
    image: &std::path::Path,
    stopped: bool,
    detach: bool,
    lazy: bool,
    pid_file: Option<&std::path::Path>,
    files: args::RestoreFiles,
) -> Result<(), Fail> {
    let pbar = restore_bar(lazy && detach);
    let opts = cr_dump::restore::Options {
        stopped,
        detach,
        files: cr_dump::restore::FileOptions {
            allow_changed_files: files.allow_changed_files,
            inherit: files.inherit_fd,
            new_session: files.new_session,
            tcp_close: files.tcp_close,
        },
        pid: files.pid,
        lazy,
        progress: pbar.clone().map(|b| {
            cr_dump::restore::Progress(std::sync::Arc::new(move |done, total| {
                b.set_length(total);
                b.set_position(done);
            }))
        }),
    };
    let mut r = if lazy && detach {
        cr_dump::restore::serve_detached(image, &opts)?
    } else {
        cr_dump::restore::restore(image, &opts)?
    };
    if r.lazy.is_none() {
        if let Some(b) = &pbar {
            b.finish_and_clear();
        }
    }
    for w in &r.warnings {
        eprintln!("cr-dump: warning: {w}");
    }
    if let Some(f) = pid_file {
        // Written whole and renamed over FILE: a symlink planted there is replaced, not
        // followed.
        let text = format!("{}\n", r.pid);
        output::write_atomic(f, |w| {
            w.write_all(text.as_bytes())
                .map_err(|e| Error::io(format!("writing {}", f.display()), e))
        })?;
    }
    let mut status = None;
    if let Some(fill) = r.lazy.take() {
        // The task runs; its pages come in while this thread serves them.
        let end = fill.serve()?;
        status = end.status;
        if let Some(b) = &pbar {
            b.finish_and_clear();
        }
    }
    if detach {
        println!("{}", r.pid);
        return Ok(());
    }
    let _ = std::io::stdout().flush();
    let waited = match status {
        Some(s) => Ok(s),
        None => sys::waitpid(r.pid),
    };
    let code = match waited {
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
    let (s, dst) = if out.is_dir() {
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
        // An image in a directory: named like a checkpoint's, never over a file there.
        let mut tmp = output::TempImage::create(out, &stem)?;
        let crid = tmp.next_crid()?;
        let meter = Meter::new("squash", Some(squash_estimate(image)));
        let w = Metered {
            inner: tmp.writer(),
            meter: &meter,
        };
        let s = squash::squash(image, crid, w);
        meter.finish();
        (s?, tmp.commit(crid, false)?)
    } else {
        let crid = crid::next()?;
        let meter = Meter::new("squash", Some(squash_estimate(image)));
        let s = output::write_atomic(out, |w| {
            squash::squash(
                image,
                crid,
                Metered {
                    inner: w,
                    meter: &meter,
                },
            )
        });
        meter.finish();
        (s?, out.to_path_buf())
    };
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

/// About the bytes a squash of `image` writes, for its progress bar: the page data of its
/// newest image and of every page it finds in a parent (0 when it cannot be read now: the
/// squash says why).
fn squash_estimate(image: &std::path::Path) -> u64 {
    use cr_format::read::{Options, Record, Records, RunKind};
    if inspect::chain::is_stdin(image) {
        return 0;
    }
    let Ok(m) = inspect::Mapped::open(image) else {
        return 0;
    };
    let mut pages = 0u64;
    let mut page_size = 0u64;
    for r in Records::new(m.bytes(), Options { verify_data: false }) {
        match r.map(|p| p.record) {
            Ok(Record::Header(h)) => page_size = u64::from(h.page_size.get()),
            Ok(Record::Pages(pg)) => {
                for run in pg.iter().filter(|r| r.kind != RunKind::Zero) {
                    pages = pages.saturating_add(u64::from(run.pages));
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    pages.saturating_mul(page_size)
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

/// A determinate progress bar (percent, human sizes, rate, ETA) on stderr, drawn only when
/// stderr is a terminal: never into a pipe or a file, whatever stdout is. One for every long
/// step: checkpoint capture and write-back, `core`, `squash`, `verify`.
struct Meter(Option<indicatif::ProgressBar>);

impl Meter {
    /// A bar for `step` of `total` bytes (`None`: not known, a spinner with the count).
    fn new(step: &'static str, total: Option<u64>) -> Meter {
        if !std::io::stderr().is_terminal() {
            return Meter(None);
        }
        let b = indicatif::ProgressBar::with_draw_target(
            total,
            indicatif::ProgressDrawTarget::stderr(),
        );
        let template = match total {
            Some(_) => {
                "{msg:<10} [{bar:30}] {percent:>3}% {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} ETA {eta}"
            }
            None => "{msg:<10} {spinner} {binary_bytes} {binary_bytes_per_sec}",
        };
        let style = indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style.progress_chars("=> "));
        b.set_message(step);
        Meter(Some(b))
    }

    /// `done` of `total` bytes.
    fn set(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            // set_length redraws at once; set_position is rate-limited.
            if b.length() != Some(total) {
                b.set_length(total);
            }
            b.set_position(done);
        }
    }

    /// `n` more bytes. A total that was an estimate grows rather than showing over 100%.
    fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
            if b.length().is_some_and(|l| l < b.position()) {
                b.set_length(b.position());
            }
        }
    }

    /// Removes the bar.
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Counts the bytes written through it on a [`Meter`].
struct Metered<'m, W> {
    inner: W,
    meter: &'m Meter,
}

impl<W: Write> Write for Metered<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.meter.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Shows the long steps of a checkpoint on a [`Meter`], and prints its notes.
#[derive(Default)]
struct Bar(Option<Meter>);

impl capture::Progress for Bar {
    fn start(&mut self, step: &'static str, len: Option<u64>) {
        self.0 = Some(Meter::new(step, len));
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(m) = &self.0 {
            m.inc(bytes);
        }
    }
    fn finish(&mut self) {
        if let Some(m) = self.0.take() {
            m.finish();
        }
    }
    fn note(&mut self, note: &str) {
        eprintln!("cr-dump: note: {note}");
    }
}

/// The restore's progress bar (a [`Meter`]'s), none for a lazy `--detach`: the server fills
/// after this command ends.
fn restore_bar(lazy_detach: bool) -> Option<indicatif::ProgressBar> {
    if lazy_detach {
        return None;
    }
    Meter::new("restore", Some(0)).0
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
        state: capture::StateOptions {
            strict: a.strict,
            ghost_limit: a.ghost_limit,
        },
    }
}

/// How long an interrupted checkpoint may take to unwind ([`sys::process::GRACE_ENV`]); a
/// value that is not a number of milliseconds is a usage error, not a silent default.
fn grace() -> Result<std::time::Duration, Fail> {
    let name = sys::process::GRACE_ENV;
    match std::env::var_os(name) {
        None => Ok(sys::process::DEFAULT_GRACE),
        Some(v) => v
            .to_str()
            .and_then(|v| v.trim().parse().ok())
            .map(std::time::Duration::from_millis)
            .ok_or_else(|| {
                Fail::Usage(format!(
                    "{name}={} is not a number of milliseconds",
                    v.to_string_lossy()
                ))
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
    // A guard: every mode injects (the task's state is asked of it while frozen; a twin,
    // tracking). Started before the task is frozen, so it costs no downtime. Without one (it
    // could not start) nothing changes but that a SIGKILL of cr-dump is not repaired.
    if let Err(e) = sys::guard::start(std::path::Path::new("/proc/self/exe")) {
        eprintln!("cr-dump: warning: no guard process ({e}): a SIGKILL during an injection is not repaired");
    }
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
    for f in r.fidelity.iter().filter(|f| f.action != Action::Restore) {
        let what = match f.action {
            Action::Lost => "will not be restored",
            Action::Partial => "will be restored with a difference",
            _ => "needs restore --inherit-fd",
        };
        eprintln!(
            "cr-dump: warning: {} ({}) {what}: {}",
            f.item, f.kind, f.note
        );
    }
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
    for (i, f) in r.fidelity.iter().enumerate() {
        let action = match f.action {
            Action::Restore => "restore",
            Action::Partial => "partial",
            Action::Inherit => "inherit",
            Action::Lost => "LOST",
        };
        let head = if i == 0 { "state" } else { "" };
        let note = if f.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.note)
        };
        println!("{head:<10} {:<6} {action:<7} {}{note}", f.item, f.kind);
    }
}
