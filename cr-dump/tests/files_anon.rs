//! Pipes, FIFOs, eventfd, timerfd, signalfd, epoll, memfd and sockets across checkpoint →
//! kill → restore, with the real `cr-dump` binary and real programs: each restored run's
//! output must be an uninterrupted run's, and what cannot be moved (a connected socket) is
//! refused with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cr_format::raw;
use cr_format::read::Image;
use cr_tests::{line_reader, next_line_timeout, program, Run, TempDir};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_cr-dump");

/// `cr-dump` with this test binary's CRID file in its environment.
fn cr() -> Command {
    cr_tests::cr_command(BIN)
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
        Running::start_as_is(only_stdio(cmd))
    }
    /// [`Running::start`] keeping every descriptor the command gives the program.
    fn start_as_is(cmd: &mut Command) -> Running {
        let mut child = cmd
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
        [100000, 10, 8],
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
        "Q expired 1",
        "Q still periodic 1",
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
    let q = files
        .iter()
        .find(|f| f.1 == raw::FILE_TIMERFD && f.3[2] == 1_000_000)
        .expect("the 1 ms periodic timerfd");
    assert!(q.3[1] >= 1, "Q expired unread: {:?}", q.3);
    assert_same_run(&want, &out);
}

/// `GET /PATH HTTP/1.0` to 127.0.0.1:`port`: the body.
fn http_get(port: u16, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(cr_tests::process_timeout()))
        .unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {:?}", String::from_utf8_lossy(&resp)));
    assert!(
        resp.starts_with(b"HTTP/1.0 200"),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );
    resp[at + 4..].to_vec()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the restored (detached) task when dropped.
struct Pid(i32);
impl Drop for Pid {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-9", &self.0.to_string()]).run();
    }
}

#[test]
fn python_http_server_answers_after_restore() {
    let dir = TempDir::new("anon-http");
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let body: Vec<u8> = (0..20000u32).map(|i| b'a' + (i % 23) as u8).collect();
    std::fs::write(www.join("page.txt"), &body).unwrap();
    let port = free_port();
    let mut child = only_stdio(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&www),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("python3 (CI installs it)");
    let guard = Pid(child.id() as i32);
    let deadline = std::time::Instant::now() + cr_tests::process_timeout();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The uninterrupted server's answer.
    let before = http_get(port, "page.txt");
    assert_eq!(before, body);
    // The server answers each request on a thread of its own: checkpoints take
    // single-threaded tasks, so wait for it to end.
    let status = format!("/proc/{}/status", child.id());
    while !std::fs::read_to_string(&status)
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Threads:", "1"])
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the request thread never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (img, j, _) = checkpoint(&child.id().to_string(), dir.path(), &["--kill"]);
    cr_tests::wait_timeout(&mut child, cr_tests::process_timeout());
    drop(guard);
    let listening = j["fidelity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"].as_str().unwrap_or("").contains("listening"))
        .unwrap_or_else(|| panic!("no listening socket in the report: {j}"));
    assert_eq!(listening["action"], "restore", "{listening}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "killed: nobody listens"
    );

    let out = restore(&img, &["--detach"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore: {stderr}");
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {:?}", String::from_utf8_lossy(&out.stdout)));
    let _restored = Pid(pid);
    assert_eq!(http_get(port, "page.txt"), before, "restore: {stderr}");
    assert_eq!(http_get(port, "page.txt"), before, "a second request");
}

/// A Python client connected to a listener of the test: prints `ready`, waits for GO, then
/// reads from the connection and prints what happened.
const CLIENT: &str = r#"
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.005)
try:
    d = s.recv(100)
    print("recv", d)
except ConnectionResetError:
    print("connection reset")
try:
    print("then recv", s.recv(100))
except OSError as e:
    print("then", e.errno)
"#;

#[test]
fn connected_tcp_socket_is_refused_or_closed_on_request() {
    let dir = TempDir::new("anon-tcp");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    // The peer resets each connection once the client waits for GO.
    let server = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().take(2) {
            held.push(c.unwrap());
        }
        held
    });
    let make = |_: &str| {
        let mut c = Command::new("python3");
        c.args(["-c", CLIENT, &port]);
        c
    };
    // Reference: the peer resets the connection (SO_LINGER 0) before GO.
    let go_ref = dir.path().join("go-ref");
    let mut r = Running::start(make("ref").arg(&go_ref));
    r.expect_line("ready");
    let go = dir.path().join("go-ck");
    let mut ck = Running::start(make("ck").arg(&go));
    ck.expect_line("ready");
    let mut held = server.join().unwrap();
    linger_zero(&held.remove(0));
    std::fs::write(&go_ref, b"").unwrap();
    let mut want = Vec::new();
    while let Some(l) = next_line_timeout(&r.lines, "reference client") {
        want.push(l);
    }
    assert_eq!(want[0], "connection reset", "{want:?}");

    let (img, j, stderr) = checkpoint(&ck.pid(), dir.path(), &["--kill"]);
    ck.reap();
    drop(held);
    let lost = j["fidelity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["action"] == "lost")
        .unwrap_or_else(|| panic!("no lost item in the report: {j}"));
    let note = lost["note"].as_str().unwrap();
    assert!(
        note.contains(&format!(
            "TCP connection to 127.0.0.1:{port} cannot be moved"
        )),
        "{note}"
    );
    assert!(stderr.contains("cannot be moved"), "no warning: {stderr}");

    // Refused by default, naming the fd, the peer and why.
    let out = restore(&img, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("connected to 127.0.0.1:{port}")) && err.contains("cannot be moved"),
        "{err}"
    );
    assert!(err.contains("--tcp-close"), "{err}");

    // With --tcp-close the program sees the connection reset, as the reference run did.
    std::fs::write(&go, b"").unwrap();
    let out = restore(&img, &["--tcp-close"]);
    assert_same_run(&want, &out);
}

/// Sets `SO_LINGER` {on, 0} on `s`, so that closing it sends a reset.
fn linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one linger struct from `l`.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn unix_udp_and_socketpair_sockets_are_bound_again() {
    let dir = TempDir::new("anon-socks");
    let prog = program("fdsockets");
    let d = dir.path().to_path_buf();
    let abs = format!("cr-test-anon-{}", std::process::id());
    let (want, img, out) = across_restore(
        dir.path(),
        |tag| {
            let mut c = Command::new(&prog);
            c.arg(d.join(format!("sock-{tag}")))
                .arg(format!("{abs}-{tag}"));
            c
        },
        &[],
    );
    assert!(
        want.iter().any(|l| l == "socketpair after close: 0"),
        "{want:?}"
    );
    let files = files_of(&img);
    let socks: Vec<_> = files.iter().filter(|f| f.1 == raw::FILE_SOCKET).collect();
    let states: Vec<u64> = socks.iter().map(|f| f.3[3]).collect();
    let listening = socks
        .iter()
        .find(|f| f.3[3] == raw::SOCKET_LISTENING)
        .unwrap_or_else(|| panic!("no listening socket: {states:?}"));
    assert_eq!(listening.3[4], 5, "the backlog, from sock_diag");
    let pair: Vec<_> = socks.iter().filter(|f| f.3[5] != 0).collect();
    assert_eq!(
        pair.len(),
        2,
        "the two ends of the socketpair name each other"
    );
    // The netlink socket is not restorable: recorded as such, and out of the epoll's list.
    assert!(files.iter().any(|f| f.1 == raw::FILE_UNSUPPORTED));
    let ep = files.iter().find(|f| f.1 == raw::FILE_EPOLL).unwrap();
    assert_eq!(ep.4.len(), 16, "only the UDP socket's registration");
    // The original's socket file is still there: restore must replace it.
    assert!(d.join("sock-ck").exists());
    assert_same_run(&want, &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("left closed"), "{err}");
}

/// A Python program writing to fd 3, a pipe the test reads: `before` at once, `after` once GO
/// exists.
const WRITER: &str = r#"
import os, sys, time
os.write(3, b"before\n")
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.005)
os.write(3, b"after\n")
print("done")
"#;

#[test]
fn pipe_to_outside_is_refused_unless_inherited() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("anon-inherit");
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are new descriptors owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wfd = w.as_raw_fd();
    let go = dir.path().join("go");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", WRITER]).arg(&go);
    // SAFETY: dup2 and close_range are async-signal-safe: the pipe's write end at fd 3 (not
    // CLOEXEC), nothing else above 2.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut p = Running::start_as_is(&mut cmd);
    p.expect_line("ready");
    drop(w);
    let (img, j, _) = checkpoint(&p.pid(), dir.path(), &["--kill"]);
    p.reap();
    let mut got = String::new();
    std::fs::File::from(r).read_to_string(&mut got).unwrap();
    assert_eq!(got, "before\n", "the task's bytes reached the reader");
    let line = j["fidelity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["item"] == "fd 3")
        .unwrap_or_else(|| panic!("no fd 3 in {j}"))
        .clone();
    assert_eq!(line["action"], "inherit", "{line}");

    let out = restore(&img, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fd 3") && err.contains("outside the task") && err.contains("--inherit-fd"),
        "{err}"
    );

    std::fs::write(&go, b"").unwrap();
    let log = dir.path().join("log");
    std::fs::write(&log, b"").unwrap();
    let arg = format!("3={}", log.display());
    let out = restore(&img, &["--inherit-fd", &arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(stdout_lines(&out), ["done"], "{err}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n");
}

/// An event loop as asyncio builds one, with `selectors` (an epoll instance) and a socketpair
/// as its self-pipe, registered in the epoll; after GO a thread wakes the loop by writing to
/// the socketpair. (asyncio itself does not survive a restore: it checks that the process
/// that runs a loop has the pid that started it, and restore gives the task a new pid.)
const LOOP: &str = r#"
import os, selectors, socket, sys, threading, time
sel = selectors.DefaultSelector()
assert type(sel).__name__ == "EpollSelector"
r, w = socket.socketpair()
r.setblocking(False)
sel.register(r, selectors.EVENT_READ, "self-pipe")
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.005)
print("idle:", sel.select(0.05))
threading.Thread(target=lambda: w.send(b"x")).start()
for key, ev in sel.select(10):
    print("woken by", key.data, r.recv(10))
"#;

#[test]
fn python_selector_loop_runs_on_after_restore() {
    let dir = TempDir::new("anon-loop");
    let (want, img, out) = across_restore(
        dir.path(),
        |_| {
            let mut c = Command::new("python3");
            c.args(["-c", LOOP]);
            c
        },
        &[],
    );
    assert_eq!(want, ["idle: []", "woken by self-pipe b'x'"]);
    let files = files_of(&img);
    assert!(files.iter().any(|f| f.1 == raw::FILE_EPOLL), "no epoll");
    assert_eq!(
        files
            .iter()
            .filter(|f| f.1 == raw::FILE_SOCKET && f.3[5] != 0)
            .count(),
        2,
        "the self-pipe socketpair"
    );
    assert_same_run(&want, &out);
}

/// The uid `SO_PEERCRED` gives for the server end of `s`.
fn peer_uid(s: &std::os::unix::net::UnixStream) -> u32 {
    use std::os::fd::AsRawFd;
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `c`, a ucred.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0);
    c.uid
}

/// Root restoring a user's Unix server: the restored listening socket must present the
/// user's credentials to its clients, not root's (restore gives the image's code no more
/// privilege than its task had).
#[test]
fn unix_server_of_a_user_restored_by_root_shows_the_users_credentials() {
    // SAFETY: geteuid takes nothing.
    if unsafe { libc::geteuid() } != 0 {
        cr_tests::skipped(
            "unix_server_of_a_user",
            "needs root to run a task as nobody",
        );
        return;
    }
    let dir = TempDir::new("anon-peercred");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let path = dir.path().join("srv");
    let go = dir.path().join("go");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program("unixserver"))
        .arg(&path)
        .arg(&go);
    let mut p = Running::start(&mut cmd);
    p.expect_line("ready");
    let before = std::os::unix::net::UnixStream::connect(&path).unwrap();
    assert_eq!(peer_uid(&before), 65534, "the original server");
    drop(before);
    let (img, _, _) = checkpoint(&p.pid(), dir.path(), &["--kill"]);
    p.reap();
    std::fs::write(&go, b"").unwrap();
    let child = only_stdio(cr().args(["restore", img.to_str().unwrap()]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + cr_tests::process_timeout();
    let mut s = loop {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "never listened: {e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    };
    let uid = peer_uid(&s);
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    let out = cr_tests::output_timeout(child, cr_tests::process_timeout());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore: {err}");
    assert_eq!(got, "hi");
    assert_eq!(
        uid, 65534,
        "the restored server's peer credentials (stderr: {err})"
    );
}
