//! Pipes, FIFOs, eventfd, timerfd, signalfd, epoll, memfd and sockets across checkpoint →
//! kill → restore, with the real `cr-dump` binary and real programs: each restored run's
//! output must be an uninterrupted run's, and what cannot be moved (a connected socket) is
//! refused with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_format::raw;
use cr_format::read::Image;
use cr_tests::{line_reader, next_line_timeout, program, Run, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

fn crid_file() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        if let Some(p) = std::env::var_os("CR_CRID_FILE") {
            return PathBuf::from(p);
        }
        std::env::temp_dir().join(format!("cr-test-crid-anon-{}", std::process::id()))
    })
}

fn cr() -> Command {
    let mut c = Command::new(BIN);
    c.env("CR_CRID_FILE", crid_file());
    c
}

/// `cmd` with no descriptor but 0, 1 and 2: a test process inherits others (cargo's
/// jobserver pipe), which the program would hold and the image record as pipes whose other
/// end is outside the task.
fn only_stdio(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: close_range is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        })
    }
}

/// A program running with its stdout read line by line.
struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = only_stdio(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let lines = line_reader(child.stdout.take().unwrap());
        Running { child, lines }
    }
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
    fn expect_line(&mut self, want: &str) {
        let l = next_line_timeout(&self.lines, want).expect("the program ended");
        assert_eq!(l, want);
    }
    /// Waits for the (killed) program to end.
    fn reap(&mut self) {
        cr_tests::wait_timeout(&mut self.child, cr_tests::process_timeout());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `checkpoint --pid PID --kill --json` into `dir`: (image, stdout JSON, stderr).
fn checkpoint(pid: &str, dir: &Path, extra: &[&str]) -> (PathBuf, serde_json::Value, String) {
    let mut args = vec![
        "checkpoint",
        "--pid",
        pid,
        "-o",
        dir.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = cr().args(&args).run();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "checkpoint failed: {stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (PathBuf::from(j["image"].as_str().unwrap()), j, stderr)
}

fn restore(image: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["restore"];
    args.extend_from_slice(extra);
    args.push(image.to_str().unwrap());
    cr().args(&args).run()
}

/// The File records of an image: (fd, type, flags, params, data, contents).
type FileRow = (u32, u16, u32, Vec<u64>, Vec<u8>, Vec<u8>);

fn files_of(image: &Path) -> Vec<FileRow> {
    let bytes = std::fs::read(image).unwrap();
    let img = Image::parse(&bytes).unwrap();
    img.files()
        .map(|(f, c)| {
            let contents: Vec<u8> = c.flat_map(|d| d.bytes.iter().copied()).collect();
            let params = (0..8).map(|i| f.param(i)).collect();
            (
                f.raw.fd.get(),
                f.ftype(),
                f.raw.flags.get(),
                params,
                f.data.to_vec(),
                contents,
            )
        })
        .collect()
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// The lines an uninterrupted run prints after `ready` (`go` exists from the start).
fn reference(cmd: &mut Command) -> Vec<String> {
    let out = only_stdio(cmd).run();
    assert!(
        out.status.success(),
        "reference run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout_lines(&out);
    assert_eq!(lines.first().map(String::as_str), Some("ready"));
    lines[1..].to_vec()
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).run();
    assert!(st.status.success(), "mkfifo {}", p.display());
}

#[test]
fn pipes_and_fifo_keep_their_unread_bytes() {
    let dir = TempDir::new("anon-pipes");
    let prog = program("fdpipes");
    let (fifo_ref, go_ref) = (dir.path().join("fifo-ref"), dir.path().join("go-ref"));
    mkfifo(&fifo_ref);
    std::fs::write(&go_ref, b"").unwrap();
    let want = reference(Command::new(&prog).arg(&fifo_ref).arg(&go_ref));
    assert!(want.iter().any(|l| l.contains("same")), "{want:?}");

    let (fifo, go) = (dir.path().join("fifo"), dir.path().join("go"));
    mkfifo(&fifo);
    let mut r = Running::start(Command::new(&prog).arg(&fifo).arg(&go));
    r.expect_line("ready");
    let (img, _, _) = checkpoint(&r.pid(), dir.path(), &["--kill"]);
    r.reap();

    // The image: pipe A's 100000 bytes and pipe B's 10 in the first File of each pipe, the
    // FIFO's 10 bytes; B's write end is gone.
    let files = files_of(&img);
    let pipes: Vec<_> = files.iter().filter(|f| f.1 == raw::FILE_PIPE).collect();
    let with_data: Vec<usize> = pipes.iter().map(|f| f.5.len()).filter(|&n| n > 0).collect();
    assert_eq!(
        with_data,
        [100000, 10],
        "{:?}",
        pipes.iter().map(|f| (f.0, f.5.len())).collect::<Vec<_>>()
    );
    assert!(pipes.iter().any(|f| f.3[0] == 256 * 1024));
    let fifos: Vec<_> = files.iter().filter(|f| f.1 == raw::FILE_FIFO).collect();
    assert_eq!(fifos.len(), 2);
    assert_eq!(fifos[0].5, b"fifo bytes");

    std::fs::write(&go, b"").unwrap();
    let out = restore(&img, &[]);
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout_lines(&out),
        want,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a program that prints `ready` and waits for its file GO (its last argument), once
/// uninterrupted and once checkpointed (killed) at `ready` and restored with `restore_args`.
/// `make(tag)` builds its command (tag `ref` or `ck`, for per-run file names; GO is added).
/// Returns the uninterrupted run's lines after `ready`, the image and restore's output.
fn across_restore(
    dir: &Path,
    make: impl Fn(&str) -> Command,
    restore_args: &[&str],
) -> (Vec<String>, PathBuf, Output) {
    let go_ref = dir.join("go-ref");
    std::fs::write(&go_ref, b"").unwrap();
    let want = reference(make("ref").arg(&go_ref));
    let go = dir.join("go-ck");
    let mut r = Running::start(make("ck").arg(&go));
    r.expect_line("ready");
    let (img, _, _) = checkpoint(&r.pid(), dir, &["--kill"]);
    r.reap();
    std::fs::write(&go, b"").unwrap();
    let out = restore(&img, restore_args);
    (want, img, out)
}

fn assert_same_run(want: &[String], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore: {stderr}");
    assert_eq!(stdout_lines(out), want, "stderr: {stderr}");
}

#[test]
fn eventfd_timerfd_signalfd_epoll_and_memfd_come_back() {
    let dir = TempDir::new("anon-events");
    let prog = program("fdevents");
    let (want, img, out) = across_restore(dir.path(), |_| Command::new(&prog), &[]);
    // What the uninterrupted run shows is what the test expects of the restored one.
    for l in [
        "ready: E S T1",
        "E read 8 value 3",
        "T1 read 8 ticks 1",
        "S read 8 value 1",
        "SIG read 128 signo 10",
        "memfd read 10: fghijklmno",
        "memfd size 10000 seals 0x6",
    ] {
        assert!(want.iter().any(|w| w == l), "no {l:?} in {want:?}");
    }
    let files = files_of(&img);
    let kinds: Vec<u16> = files.iter().map(|f| f.1).collect();
    for k in [
        raw::FILE_EVENTFD,
        raw::FILE_TIMERFD,
        raw::FILE_SIGNALFD,
        raw::FILE_EPOLL,
        raw::FILE_MEMFD,
    ] {
        assert!(kinds.contains(&k), "no File of type {k} in {kinds:?}");
    }
    let ep = files.iter().find(|f| f.1 == raw::FILE_EPOLL).unwrap();
    assert_eq!(ep.4.len(), 5 * 16, "5 registrations");
    let t1 = files
        .iter()
        .find(|f| f.1 == raw::FILE_TIMERFD && f.3[1] == 1)
        .expect("a timerfd with 1 unread tick");
    assert_eq!(t1.3[3], 0, "expired: nothing left");
    assert_same_run(&want, &out);
}
