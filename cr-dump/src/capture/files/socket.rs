//! Capture of sockets (FORMAT.md §15: `params` family, type, protocol, state, backlog; the
//! data the bound address).
//!
//! What a socket is comes from a duplicate of the task's descriptor (`pidfd_getfd`: the same
//! open file): `SO_DOMAIN`, `SO_TYPE`, `SO_PROTOCOL`, `SO_ACCEPTCONN`, `getsockname`,
//! `getpeername`. The listen backlog and the connections waiting to be accepted are only shown
//! by `sock_diag` netlink (`/proc/net/tcp` does not show the backlog): `idiag_wqueue` /
//! `idiag_rqueue` of a listening TCP socket, `UNIX_DIAG_RQLEN` of a Unix one.
//!
//! Restorable: TCP (v4, v6) and Unix stream, datagram and seqpacket sockets that are unbound,
//! bound or listening; UDP sockets likewise. A connected socket has a peer outside the image:
//! it is reported lost (`restore --tcp-close` gives the program a closed connection instead).

use super::Cx;
use crate::capture::state::{Action, Fidelity, FileEntry};
use crate::error::{Error, Result};
use crate::sys::{self, fdobj, sock};
use cr_format::raw;
use std::os::unix::fs::MetadataExt;

/// A `sockaddr` as text: `1.2.3.4:80`, `[::1]:80`, `/path`, `@abstract`, `(unnamed)`.
fn addr_text(addr: &[u8]) -> String {
    let fam = addr
        .get(..2)
        .map_or(0, |b| i32::from(u16::from_ne_bytes([b[0], b[1]])));
    let port = |b: &[u8]| {
        addr.get(2..4)
            .map_or(0, |_| u16::from_be_bytes([b[2], b[3]]))
    };
    match fam {
        libc::AF_INET if addr.len() >= 8 => {
            let ip = std::net::Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]);
            format!("{ip}:{}", port(addr))
        }
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&addr[8..24]);
            format!("[{}]:{}", std::net::Ipv6Addr::from(o), port(addr))
        }
        libc::AF_UNIX => {
            let path = addr.get(2..).unwrap_or(&[]);
            match path.split_first() {
                None => "(unnamed)".into(),
                Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
                Some(_) => {
                    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                    String::from_utf8_lossy(&path[..end]).into_owned()
                }
            }
        }
        f => format!("(address family {f})"),
    }
}

/// Whether `addr` names something: a port or address for IP, a path or abstract name for Unix.
fn is_bound(addr: &[u8]) -> bool {
    let fam = addr
        .get(..2)
        .map_or(0, |b| i32::from(u16::from_ne_bytes([b[0], b[1]])));
    match fam {
        libc::AF_INET | libc::AF_INET6 => addr.get(2..).is_some_and(|r| r.iter().any(|&b| b != 0)),
        libc::AF_UNIX => addr.len() > 2,
        _ => false,
    }
}

fn proto_name(domain: i32, stype: i32) -> String {
    let t = match stype {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "datagram",
        libc::SOCK_SEQPACKET => "seqpacket",
        libc::SOCK_RAW => "raw",
        _ => "socket",
    };
    match (domain, stype) {
        (libc::AF_INET, libc::SOCK_STREAM) => "TCP".into(),
        (libc::AF_INET6, libc::SOCK_STREAM) => "TCPv6".into(),
        (libc::AF_INET, libc::SOCK_DGRAM) => "UDP".into(),
        (libc::AF_INET6, libc::SOCK_DGRAM) => "UDPv6".into(),
        (libc::AF_UNIX, _) => format!("Unix {t}"),
        (d, _) => format!("{t} socket of address family {d}"),
    }
}

/// Whether socket `fd` of task `pid` is of a kind restore brings back (an epoll entry on
/// one it leaves closed could not be registered). False if it cannot be read.
pub(super) fn restorable(pid: i32, fd: i32) -> bool {
    sys::pidfd_open(pid)
        .and_then(|p| sys::pidfd_getfd(&p, fd))
        .and_then(|d| sock::sock_info(&d))
        .is_ok_and(|si| supported(si.domain, si.stype, si.protocol))
}

/// Whether this version restores sockets of this family and type.
fn supported(domain: i32, stype: i32, protocol: i32) -> bool {
    match domain {
        libc::AF_INET | libc::AF_INET6 => matches!(
            (stype, protocol),
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) | (libc::SOCK_DGRAM, libc::IPPROTO_UDP)
        ),
        libc::AF_UNIX => matches!(
            stype,
            libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
        ),
        _ => false,
    }
}

/// A connected Unix socket whose peer is a socket of the task too (a `socketpair`): the
/// peer's inode in `params[5]`, restorable. `None` if the peer is elsewhere.
fn socketpair_end(
    cx: &Cx,
    e: &mut FileEntry,
    dup: &std::os::fd::OwnedFd,
    name: &str,
) -> Result<Option<Fidelity>> {
    let io = |what: &str, err| {
        Error::io(
            format!("{what} of socket fd {} of pid {}", cx.fd, cx.pid),
            err,
        )
    };
    let Some(d) = sock::unix_diag(cx.md.ino()).map_err(|err| io("sock_diag", err))? else {
        return Ok(None);
    };
    let link = format!("socket:[{}]", d.peer);
    if d.peer == 0 || !cx.all.iter().any(|(_, l)| l.as_slice() == link.as_bytes()) {
        return Ok(None);
    }
    e.raw.params[5] = u64::from(d.peer).into();
    let kind = format!("{name} connected to {link} (both ends in the task)");
    let n = fdobj::unread_bytes(dup).unwrap_or(0);
    if n > 0 {
        return Ok(Some(cx.line(
            kind,
            Action::Partial,
            format!("{n} unread bytes in its receive queue are lost"),
        )));
    }
    Ok(Some(cx.line(kind, Action::Restore, "")))
}

/// A listening socket: its state and backlog (from `sock_diag`) into `e`; the backlog.
fn listen_state(
    cx: &Cx,
    si: &sock::SockInfo,
    e: &mut FileEntry,
    notes: &mut Vec<String>,
) -> Result<u64> {
    e.raw.params[3] = raw::SOCKET_LISTENING.into();
    let ino = cx.md.ino();
    let diag = if si.domain == libc::AF_UNIX {
        sock::unix_diag(ino)
    } else {
        sock::inet_diag(si.domain, ino)
    }
    .map_err(|err| {
        Error::io(
            format!("sock_diag of socket fd {} of pid {}", cx.fd, cx.pid),
            err,
        )
    })?;
    let backlog = match diag {
        Some(d) => {
            if d.rqueue > 0 {
                notes.push(format!(
                    "{} connections waiting to be accepted are lost",
                    d.rqueue
                ));
            }
            u64::from(d.wqueue)
        }
        None => {
            notes.push("backlog unknown (not in cr-dump's network namespace): 128".into());
            128
        }
    };
    e.raw.params[4] = backlog.into();
    Ok(backlog)
}

/// Describes the socket of `cx.fd` into `e`.
pub(super) fn capture(cx: &Cx, e: &mut FileEntry) -> Result<Fidelity> {
    e.raw.ftype = raw::FILE_SOCKET.into();
    let io = |what: &str, err| {
        Error::io(
            format!("{what} of socket fd {} of pid {}", cx.fd, cx.pid),
            err,
        )
    };
    let dup = match sys::pidfd_open(cx.pid).and_then(|p| sys::pidfd_getfd(&p, cx.fd)) {
        Ok(d) => d,
        // What the socket is can only be read through a duplicate of it: without one it is
        // named, and left closed at restore.
        Err(err) => {
            e.raw.ftype = raw::FILE_UNSUPPORTED.into();
            return Ok(cx.line(
                format!("socket {}", cx.link_str()),
                Action::Lost,
                format!("its state could not be read (pidfd_getfd: {err})"),
            ));
        }
    };
    let si = sock::sock_info(&dup).map_err(|err| io("reading the state", err))?;
    let name = proto_name(si.domain, si.stype);
    let local = addr_text(&si.local);
    let to_u64 = |v: i32| u64::from(v as u32);
    e.raw.params[0] = to_u64(si.domain).into();
    e.raw.params[1] = to_u64(si.stype).into();
    e.raw.params[2] = to_u64(si.protocol).into();
    let bound = is_bound(&si.local);
    if bound {
        e.data = si.local.clone();
    }
    if !supported(si.domain, si.stype, si.protocol) {
        // Restore leaves a File of this type closed, as the report says.
        e.raw.ftype = raw::FILE_UNSUPPORTED.into();
        e.raw.params = Default::default();
        e.data.clear();
        return Ok(cx.line(
            format!("{name} (protocol {})", si.protocol),
            Action::Lost,
            "this kind of socket is not restored: restore leaves the descriptor closed",
        ));
    }
    if let Some(peer) = &si.peer {
        e.raw.params[3] = raw::SOCKET_CONNECTED.into();
        // The image has no field for the peer's address: the path (free text for a socket)
        // names it, so that restore's refusal can.
        e.path = format!("{} connected to {}", cx.link_str(), addr_text(peer)).into_bytes();
        if si.domain == libc::AF_UNIX {
            if let Some(line) = socketpair_end(cx, e, &dup, &name)? {
                return Ok(line);
            }
        }
        let what = if si.stype == libc::SOCK_STREAM && si.domain != libc::AF_UNIX {
            "connection"
        } else {
            "connected socket"
        };
        let kind = format!("{name} {local} connected to {}", addr_text(peer));
        if cx.fd <= 2 {
            // Like a terminal: restore gives the task its own standard stream.
            return Ok(cx.line(
                kind,
                Action::Restore,
                format!(
                    "its peer is outside the task: restore gives fd {0} its own fd {0}, or what \
                     --inherit-fd names (--tcp-close: a closed connection)",
                    cx.fd
                ),
            ));
        }
        return Ok(cx.line(
            kind,
            Action::Lost,
            format!(
                "a {name} {what} to {} cannot be moved (restore refuses it; restore \
                 --tcp-close gives the program a closed connection instead)",
                addr_text(peer)
            ),
        ));
    }
    let mut notes = Vec::new();
    let kind = if si.listening {
        let backlog = listen_state(cx, &si, e, &mut notes)?;
        format!("{name} listening on {local} (backlog {backlog})")
    } else if bound {
        e.raw.params[3] = raw::SOCKET_BOUND.into();
        format!("{name} bound to {local}")
    } else {
        e.raw.params[3] = raw::SOCKET_UNBOUND.into();
        format!("{name}, unbound")
    };
    if !si.listening {
        let n = fdobj::unread_bytes(&dup).unwrap_or(0);
        if n > 0 {
            notes.push(format!("{n} unread bytes in its receive queue are lost"));
        }
    }
    if si.domain == libc::AF_UNIX && bound && si.local.get(2).is_some_and(|&b| b != b'/' && b != 0)
    {
        notes.push("bound to a relative path: bound again relative to restore's directory".into());
    }
    let action = if notes.is_empty() {
        Action::Restore
    } else {
        Action::Partial
    };
    Ok(cx.line(kind, action, notes.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(family: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = (family as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn names_addresses() {
        let v4 = sa(
            libc::AF_INET,
            &[0x1f, 0x90, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(addr_text(&v4), "1.2.3.4:8080");
        assert!(is_bound(&v4));
        let mut v6 = sa(libc::AF_INET6, &[0, 80, 0, 0, 0, 0]);
        v6.extend_from_slice(&[0; 15]);
        v6.push(1);
        v6.extend_from_slice(&[0; 4]);
        assert_eq!(addr_text(&v6), "[::1]:80");
        assert_eq!(
            addr_text(&sa(libc::AF_UNIX, b"/run/x.sock\0")),
            "/run/x.sock"
        );
        assert_eq!(addr_text(&sa(libc::AF_UNIX, b"\0abs")), "@abs");
        assert_eq!(addr_text(&sa(libc::AF_UNIX, b"")), "(unnamed)");
        assert!(!is_bound(&sa(libc::AF_UNIX, b"")));
        assert!(!is_bound(&sa(libc::AF_INET, &[0; 14])));
        assert_eq!(addr_text(&[1]), "(address family 0)");
        assert_eq!(addr_text(&sa(libc::AF_INET, &[0, 1])), "(address family 2)");
    }
}
