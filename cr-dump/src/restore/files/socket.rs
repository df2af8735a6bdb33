//! Restore of sockets, created in cr-dump before the fork (so that a refused address refuses
//! the restore before anything starts).
//!
//! - Unbound: a fresh socket of the family, type and protocol.
//! - Bound, listening: bound again to the recorded address (`SO_REUSEADDR` for TCP, so that
//!   the connections the task had, now in `TIME_WAIT`, do not hold the port) and listening
//!   with the recorded backlog. A Unix socket's path that exists (the original's socket file)
//!   is removed first only if it is a socket owned by the caller; abstract names need nothing.
//! - Connected: the peer is outside the image, so the restore is refused (at 0 to 2,
//!   restore's own descriptor stands for it, as for any standard stream whose other end is
//!   outside), or, with `--tcp-close`, the task gets a socket whose peer is gone: a TCP
//!   connection that was reset (a loopback connection whose other side closed with
//!   `SO_LINGER` 0: reads give `ECONNRESET`, then end of file), a Unix socket whose peer
//!   closed (end of file), a UDP socket that is no longer connected.
//!
//! When root restores another user's task, `listen` and `socketpair` run with the task's
//! user as effective ids ([`sock::as_fs_user`]): they record their caller as the socket's
//! peer credentials, which clients trust.
//!
//! Socket options (buffer sizes, `TCP_NODELAY`, `IPV6_V6ONLY`, ...) are not in the image: the
//! new socket has the defaults.

use super::{Prep, Prepared};
use crate::error::{Error, Result};
use crate::restore::child::Child;
use crate::sys::{self, fdobj, sock};
use cr_format::raw;
use cr_format::read::File;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Work after placement: none.
pub(super) enum After {}

use super::regular::name;

/// A `sockaddr` as text, for messages.
fn addr_text(addr: &[u8]) -> String {
    let fam = addr
        .get(..2)
        .map_or(0, |b| i32::from(u16::from_ne_bytes([b[0], b[1]])));
    let port = || {
        addr.get(2..4)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    match fam {
        libc::AF_INET if addr.len() >= 8 => {
            let ip = std::net::Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]);
            format!("{ip}:{}", port())
        }
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&addr[8..24]);
            format!("[{}]:{}", std::net::Ipv6Addr::from(o), port())
        }
        libc::AF_UNIX => match unix_path(addr) {
            UnixName::Unnamed => "(unnamed)".into(),
            UnixName::Abstract(n) => format!("@{}", String::from_utf8_lossy(n)),
            UnixName::Path(p) => p.display().to_string(),
        },
        f => format!("(address family {f})"),
    }
}

enum UnixName<'a> {
    Unnamed,
    Abstract(&'a [u8]),
    Path(&'a Path),
}

/// The name in a `sockaddr_un`.
fn unix_path(addr: &[u8]) -> UnixName<'_> {
    let p = addr.get(2..).unwrap_or(&[]);
    match p.split_first() {
        None => UnixName::Unnamed,
        Some((0, rest)) => UnixName::Abstract(rest),
        Some(_) => {
            let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
            UnixName::Path(Path::new(OsStr::from_bytes(p.get(..end).unwrap_or(p))))
        }
    }
}

fn kind_name(domain: i32, stype: i32) -> &'static str {
    match (domain, stype) {
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM) => "TCP",
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM) => "UDP",
        (libc::AF_UNIX, libc::SOCK_STREAM) => "Unix stream",
        (libc::AF_UNIX, libc::SOCK_DGRAM) => "Unix datagram",
        (libc::AF_UNIX, libc::SOCK_SEQPACKET) => "Unix seqpacket",
        _ => "socket",
    }
}

/// The recorded family, type and protocol, if this version restores such sockets.
fn kind(f: &File<'_>) -> Result<(i32, i32, i32)> {
    let as_i32 = |v: u64| i32::try_from(v).unwrap_or(-1);
    let (d, t, p) = (as_i32(f.param(0)), as_i32(f.param(1)), as_i32(f.param(2)));
    let ok = match d {
        libc::AF_INET | libc::AF_INET6 => matches!(
            (t, p),
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) | (libc::SOCK_DGRAM, libc::IPPROTO_UDP)
        ),
        libc::AF_UNIX => matches!(
            t,
            libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
        ),
        _ => false,
    };
    if !ok {
        return Err(Error::Other(format!(
            "{}: a socket of address family {d}, type {t}, protocol {p} is not restored",
            name(f)
        )));
    }
    Ok((d, t, p))
}

/// Creates the open file of `f` in cr-dump.
pub(super) fn prepare(cx: &mut Prep, f: &File<'_>, _data: &[u8]) -> Result<Prepared> {
    let (domain, stype, proto) = kind(f)?;
    let nonblock = f.raw.open_flags.get() as i32 & libc::O_NONBLOCK;
    let io = |what: &str, e| Error::io(format!("{}: {what}", name(f)), e);
    let state = f.param(3);
    if state == raw::SOCKET_CONNECTED && domain == libc::AF_UNIX && f.param(5) != 0 {
        return socketpair_end(cx, f, stype, nonblock);
    }
    if state == raw::SOCKET_CONNECTED {
        let fd = f.raw.fd.get();
        if !cx.opts.tcp_close && f.role() == raw::ROLE_FD && fd <= 2 {
            // Standard input or output on a socket (a journal's stream, inetd): as for any
            // stdio whose other end is outside, restore's own.
            return cx.outside(f, "a connected socket whose peer is not in the image");
        }
        if !cx.opts.tcp_close {
            return Err(Error::Other(format!(
                "{}: a connected {} socket (local address {}) cannot be moved: its peer is not \
                 in the image; restore --tcp-close restores it as a connection whose peer is \
                 gone (or --inherit-fd {fd}=PATH|{fd}:N attaches another file)",
                name(f),
                kind_name(domain, stype),
                addr_text(f.data)
            )));
        }
        return closed(f, domain, stype, proto, nonblock);
    }
    let fd = sock::socket(domain, stype, proto, nonblock).map_err(|e| io("socket", e))?;
    if state == raw::SOCKET_UNBOUND {
        return Ok(Prepared::plain(fd));
    }
    let addr = f.data;
    if domain != libc::AF_UNIX && stype == libc::SOCK_STREAM {
        sock::set_reuseaddr(&fd).map_err(|e| io("SO_REUSEADDR", e))?;
    }
    if domain == libc::AF_UNIX {
        if let UnixName::Path(p) = unix_path(addr) {
            clear_unix_path(f, p)?;
        }
    }
    sock::bind(&fd, addr).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EADDRINUSE) => {
                " (another socket holds it: is the checkpointed task, or another copy, still \
                 running?)"
            }
            _ => "",
        };
        io(&format!("binding to {}{hint}", addr_text(addr)), e)
    })?;
    if state == raw::SOCKET_LISTENING {
        let backlog = i32::try_from(f.param(4)).unwrap_or(i32::MAX);
        sock::as_fs_user(|| sock::listen(&fd, backlog))
            .map_err(|e| io(&format!("listen with backlog {backlog}"), e))?;
    }
    Ok(Prepared::plain(fd))
}

/// One end of a `socketpair` whose two ends are in the image (`params[5]` the peer's inode):
/// the first end met creates the pair and leaves the other in [`Prep::pipes`] under the
/// peer's inode (socket and pipe inodes come from one counter, `get_next_ino`, so they never
/// collide); an end never taken is closed before the fork.
fn socketpair_end(cx: &mut Prep, f: &File<'_>, stype: i32, nonblock: i32) -> Result<Prepared> {
    let io = |what: &str, e| Error::io(format!("{}: {what}", name(f)), e);
    let mine = f.raw.inode.get();
    let fd = match cx.pipes.get_mut(&mine).and_then(|e| e[0].take()) {
        Some(fd) => fd,
        None => {
            let (a, b) =
                sock::as_fs_user(|| sock::socketpair(stype)).map_err(|e| io("socketpair", e))?;
            cx.pipes.insert(f.param(5), [Some(b), None]);
            a
        }
    };
    fdobj::set_nonblock(&fd, nonblock != 0).map_err(|e| io("F_SETFL", e))?;
    Ok(Prepared::plain(fd))
}

/// Removes the path a Unix socket is bound to if it is a socket owned by the caller (the
/// original's socket file; "the caller" is the file-system uid in effect); refuses if it is
/// anything else.
fn clear_unix_path(f: &File<'_>, p: &Path) -> Result<()> {
    let md = match std::fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("{}: lstat {}", name(f), p.display()), e)),
    };
    // The caller as the file system sees it: the task's user when root restores another
    // user's task (the framework's FsCreds), else us.
    let me = sock::fsuid();
    if !md.file_type().is_socket() || md.uid() != me {
        return Err(Error::Other(format!(
            "{}: the Unix socket's path {} exists and is a {} owned by uid {}: only a socket \
             owned by the caller (uid {me}) is removed to bind it again",
            name(f),
            p.display(),
            sys::fs::file_kind(md.mode()),
            md.uid()
        )));
    }
    std::fs::remove_file(p).map_err(|e| {
        Error::io(
            format!("{}: removing the old socket {}", name(f), p.display()),
            e,
        )
    })
}

/// `--tcp-close`: a socket of the same kind whose peer is gone (see the module docs).
fn closed(f: &File<'_>, domain: i32, stype: i32, proto: i32, nonblock: i32) -> Result<Prepared> {
    let io = |what: &str, e| Error::io(format!("{}: {what}", name(f)), e);
    let (fd, how): (OwnedFd, &str) = match (domain, stype) {
        (libc::AF_UNIX, _) => {
            let (mine, peer) =
                sock::as_fs_user(|| sock::socketpair(stype)).map_err(|e| io("socketpair", e))?;
            drop(peer);
            (mine, "its peer closed")
        }
        (_, libc::SOCK_STREAM) => match reset_connection(domain) {
            Ok(fd) => (fd, "reset"),
            // No loopback of this family here: a socket that was never connected says so
            // too (ENOTCONN).
            Err(_) => (
                sock::socket(domain, stype, proto, 0).map_err(|e| io("socket", e))?,
                "unconnected (no loopback to make a reset connection on)",
            ),
        },
        _ => (
            sock::socket(domain, stype, proto, 0).map_err(|e| io("socket", e))?,
            "no longer connected",
        ),
    };
    fdobj::set_nonblock(&fd, nonblock != 0).map_err(|e| io("F_SETFL", e))?;
    let mut p = Prepared::plain(fd);
    p.warnings.push(format!(
        "{}: the connected {} socket is restored {how} (--tcp-close)",
        name(f),
        kind_name(domain, stype)
    ));
    Ok(p)
}

/// A TCP socket whose connection was reset: connected over loopback to a listener of ours,
/// whose accepted side then closes with `SO_LINGER` {on, 0} (an RST).
fn reset_connection(domain: i32) -> std::io::Result<OwnedFd> {
    let lo: Vec<u8> = if domain == libc::AF_INET6 {
        let mut a = vec![0u8; 28];
        a[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        a[23] = 1; // ::1
        a
    } else {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[4..8].copy_from_slice(&[127, 0, 0, 1]);
        a
    };
    let l = sock::socket(domain, libc::SOCK_STREAM, 0, 0)?;
    sock::bind(&l, &lo)?;
    sock::listen(&l, 1)?;
    let at = sock::sock_info(&l)?.local;
    let c = sock::socket(domain, libc::SOCK_STREAM, 0, 0)?;
    sock::connect(&c, &at)?;
    let s = sock::accept(&l)?;
    sock::set_linger_reset(&s)?;
    drop(s);
    Ok(c)
}

/// Runs `work` in the child once `fd` is in place.
pub(super) fn after_placement(_c: &Child, _scratch: u64, _fd: u32, work: &After) -> Result<()> {
    match *work {}
}
