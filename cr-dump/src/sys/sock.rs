//! Sockets: what one is (family, type, protocol, listening, local and peer addresses, read
//! through a duplicate of the task's descriptor), the queues and peer the kernel shows only
//! through `sock_diag` netlink (a listening socket's backlog, a Unix socket's peer), and the
//! calls that make one again (socket, bind, listen, connect, accept).

use super::check;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// What a socket is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockInfo {
    /// `AF_*` (`SO_DOMAIN`).
    pub domain: i32,
    /// `SOCK_*` (`SO_TYPE`).
    pub stype: i32,
    /// Protocol (`SO_PROTOCOL`).
    pub protocol: i32,
    /// Listening (`SO_ACCEPTCONN`).
    pub listening: bool,
    /// `getsockname`: the `sockaddr` bytes.
    pub local: Vec<u8>,
    /// `getpeername`, if connected.
    pub peer: Option<Vec<u8>>,
}

fn getsockopt_int(fd: &impl AsRawFd, opt: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` (4) bytes at `v` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    check(r.into())?;
    Ok(v)
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn sockname(fd: &impl AsRawFd, f: NameFn) -> io::Result<Vec<u8>> {
    // SAFETY: sockaddr_storage is plain bytes; all zeros is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let cap = std::mem::size_of::<libc::sockaddr_storage>();
    let mut len = cap as libc::socklen_t;
    // SAFETY: getsockname/getpeername write at most `len` bytes at `ss`, which has that room,
    // and update `len`.
    let r = unsafe {
        f(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    check(r.into())?;
    let n = (len as usize).min(cap);
    let p = (&ss as *const libc::sockaddr_storage).cast::<u8>();
    // SAFETY: `p` points at `ss`, `n` bytes at most its size, all initialized (zeroed before
    // the kernel wrote into it).
    Ok(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
}

/// Reads what socket `fd` is (`fd` is a duplicate of the task's, from `pidfd_getfd`).
pub fn sock_info(fd: &impl AsRawFd) -> io::Result<SockInfo> {
    let domain = getsockopt_int(fd, libc::SO_DOMAIN)?;
    let stype = getsockopt_int(fd, libc::SO_TYPE)?;
    let protocol = getsockopt_int(fd, libc::SO_PROTOCOL)?;
    let listening = getsockopt_int(fd, libc::SO_ACCEPTCONN)? != 0;
    let local = sockname(fd, libc::getsockname)?;
    let peer = match sockname(fd, libc::getpeername) {
        Ok(p) => Some(p),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => None,
        Err(e) => return Err(e),
    };
    Ok(SockInfo {
        domain,
        stype,
        protocol,
        listening,
        local,
        peer,
    })
}

/// `socket(domain, stype | SOCK_CLOEXEC | flags, protocol)`.
pub fn socket(domain: i32, stype: i32, protocol: i32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers.
    let fd = unsafe { libc::socket(domain, stype | libc::SOCK_CLOEXEC | flags, protocol) };
    let fd = check(fd.into())?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `socketpair(AF_UNIX, stype | SOCK_CLOEXEC, 0)`.
pub fn socketpair(stype: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two ints into the array, which has room for them.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            stype | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    check(r.into())?;
    // SAFETY: the kernel just returned these two new descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn addr_call(
    fd: &impl AsRawFd,
    addr: &[u8],
    f: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(addr.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    if addr.len() > std::mem::size_of::<libc::sockaddr_storage>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // Copied into an aligned sockaddr_storage: the image's bytes have no alignment.
    // SAFETY: sockaddr_storage is plain bytes; all zeros is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let p = (&mut ss as *mut libc::sockaddr_storage).cast::<u8>();
    // SAFETY: `addr.len()` bytes fit in `ss` (checked above); the ranges do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(addr.as_ptr(), p, addr.len()) };
    // SAFETY: bind/connect read `len` bytes at `ss`, which holds them.
    let r = unsafe {
        f(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    check(r.into()).map(drop)
}

/// `bind(fd, addr)`, `addr` the `sockaddr` bytes.
pub fn bind(fd: &impl AsRawFd, addr: &[u8]) -> io::Result<()> {
    addr_call(fd, addr, libc::bind)
}

/// `connect(fd, addr)`, `addr` the `sockaddr` bytes.
pub fn connect(fd: &impl AsRawFd, addr: &[u8]) -> io::Result<()> {
    addr_call(fd, addr, libc::connect)
}

/// `listen(fd, backlog)`.
pub fn listen(fd: &impl AsRawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen takes integers.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) }.into()).map(drop)
}

/// `accept4(fd, NULL, NULL, SOCK_CLOEXEC)`.
pub fn accept(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: accept4 with null address pointers writes no memory of ours.
    let r = unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    let fd = check(r.into())?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn setsockopt<T>(fd: &impl AsRawFd, level: i32, opt: i32, v: &T) -> io::Result<()> {
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: setsockopt reads `len` bytes at `v`, which is a `T` of that size.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, (v as *const T).cast(), len) };
    check(r.into()).map(drop)
}

/// `SO_REUSEADDR` on.
pub fn set_reuseaddr(fd: &impl AsRawFd) -> io::Result<()> {
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32)
}

/// `SO_LINGER` {on, 0 s}: closing the socket resets the connection (RST) instead of a FIN.
pub fn set_linger_reset(fd: &impl AsRawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &l)
}

/// This thread's file-system uid (`setfsuid(-1)`, which changes nothing and returns it): the
/// owner of the files it creates, which restore sets to the task's when root restores another
/// user's task.
pub fn fsuid() -> u32 {
    // SAFETY: setfsuid with an invalid id (-1) only returns the current fsuid.
    unsafe { libc::syscall(libc::SYS_setfsuid, -1i32) as u32 }
}

/// This thread's file-system gid (`setfsgid(-1)`).
fn fsgid() -> u32 {
    // SAFETY: setfsgid with an invalid id (-1) only returns the current fsgid.
    unsafe { libc::syscall(libc::SYS_setfsgid, -1i32) as u32 }
}

fn set_effective(uid: u32, gid: u32) -> io::Result<()> {
    let keep = u32::MAX; // -1: unchanged
                         // SAFETY: the raw setresgid/setresuid take integers and change this thread only (glibc's
                         // wrappers would change every thread).
    unsafe {
        check(libc::syscall(libc::SYS_setresgid, keep, gid, keep))?;
        check(libc::syscall(libc::SYS_setresuid, keep, uid, keep))?;
    }
    Ok(())
}

/// Runs `f` with this thread's effective uid and gid set to its file-system ones when they
/// differ (root restoring another user's task, [`super::files::FsCreds`]), then puts the
/// effective and file-system ids back. `listen` and `socketpair` record their caller's
/// credentials as the socket's `SO_PEERCRED`: made as root, a user's restored Unix server
/// would show its clients uid 0.
pub fn as_fs_user<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    // SAFETY: geteuid/getegid take nothing and cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (fsu, fsg) = (fsuid(), fsgid());
    if (fsu, fsg) == (euid, egid) {
        return f();
    }
    // The group first: changing it needs CAP_SETGID, which the uid change drops.
    set_effective(fsu, fsg)?;
    let r = f();
    // Back as the uid first (its saved id is ours), which gives back the capabilities the
    // gid needs; setting the effective ids also set the file-system ones: put those back.
    let back = (|| {
        // SAFETY: integers only, this thread only.
        unsafe {
            check(libc::syscall(libc::SYS_setresuid, u32::MAX, euid, u32::MAX))?;
            check(libc::syscall(libc::SYS_setresgid, u32::MAX, egid, u32::MAX))?;
            libc::syscall(libc::SYS_setfsuid, fsu);
            libc::syscall(libc::SYS_setfsgid, fsg);
        }
        Ok::<(), io::Error>(())
    })();
    match (r, back) {
        (r, Ok(())) => r,
        (_, Err(e)) => Err(e),
    }
}

/// Queue lengths and peer of one socket, from `sock_diag`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Diag {
    /// Listening: connections waiting to be accepted. Else bytes in the receive queue.
    pub rqueue: u32,
    /// Listening: the backlog given to `listen`. Else bytes in the send queue.
    pub wqueue: u32,
    /// Unix sockets: the inode of the peer socket, 0 if none.
    pub peer: u32,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const NLMSG_HDR: usize = 16;

/// `struct inet_diag_sockid`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct InetDiagSockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

/// `struct inet_diag_msg`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// `struct unix_diag_req`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct UnixDiagReq {
    family: u8,
    protocol: u8,
    pad: u16,
    states: u32,
    ino: u32,
    show: u32,
    cookie: [u32; 2],
}

/// `struct unix_diag_msg`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct UnixDiagMsg {
    family: u8,
    stype: u8,
    state: u8,
    pad: u8,
    ino: u32,
    cookie: [u32; 2],
}

const _: () = {
    assert!(std::mem::size_of::<InetDiagSockId>() == 48);
    assert!(std::mem::size_of::<InetDiagReqV2>() == 56);
    assert!(std::mem::size_of::<InetDiagMsg>() == 72);
    assert!(std::mem::size_of::<UnixDiagReq>() == 24);
    assert!(std::mem::size_of::<UnixDiagMsg>() == 16);
};

/// Sends one sock_diag request and hands each reply message's payload to `each` until it
/// returns `Some`, the dump ends, or the kernel answers with an error.
fn diag_query<T>(
    req: &[u8],
    dump: bool,
    mut each: impl FnMut(&[u8]) -> Option<T>,
) -> io::Result<Option<T>> {
    let sk = socket(
        libc::AF_NETLINK,
        libc::SOCK_DGRAM,
        libc::NETLINK_SOCK_DIAG,
        0,
    )?;
    let mut flags = libc::NLM_F_REQUEST as u16;
    if dump {
        flags |= libc::NLM_F_DUMP as u16;
    }
    let total = NLMSG_HDR + req.len();
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    msg.extend_from_slice(req);
    // SAFETY: send reads `msg.len()` bytes from `msg`.
    let r = unsafe { libc::send(sk.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    check(r as libc::c_long)?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let r = unsafe { libc::recv(sk.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(check(r as libc::c_long)?).unwrap_or(0);
        if n == 0 {
            return Ok(None);
        }
        let mut rest = buf.get(..n).unwrap_or(&[]);
        while rest.len() >= NLMSG_HDR {
            let u32_at = |b: &[u8], i: usize| {
                b.get(i..i + 4)
                    .and_then(|s| <[u8; 4]>::try_from(s).ok())
                    .map_or(0, u32::from_ne_bytes)
            };
            let len = u32_at(rest, 0) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < NLMSG_HDR || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "sock_diag: a truncated netlink message",
                ));
            }
            let payload = rest.get(NLMSG_HDR..len).unwrap_or(&[]);
            match u32::from(kind) {
                k if k == libc::NLMSG_DONE as u32 => return Ok(None),
                k if k == libc::NLMSG_ERROR as u32 => {
                    let e = u32_at(payload, 0) as i32;
                    return match e {
                        0 => Ok(None),
                        e if -e == libc::ENOENT => Ok(None),
                        e => Err(io::Error::from_raw_os_error(-e)),
                    };
                }
                _ => {
                    if let Some(t) = each(payload) {
                        return Ok(Some(t));
                    }
                    if !dump {
                        return Ok(None);
                    }
                }
            }
            let step = (len + 3) & !3;
            rest = rest.get(step..).unwrap_or(&[]);
        }
    }
}

/// The queues of the listening TCP socket with inode `inode` (`family` `AF_INET` or
/// `AF_INET6`), by a dump of the family's listening TCP sockets; `None` if it is not in this
/// network namespace.
pub fn inet_diag(family: i32, inode: u64) -> io::Result<Option<Diag>> {
    // Listening sockets only (TCP_LISTEN is state 10): a dump of every connection of a busy
    // host would cost far more.
    let req = InetDiagReqV2 {
        family: family as u8,
        protocol: libc::IPPROTO_TCP as u8,
        states: 1 << 10,
        ..InetDiagReqV2::default()
    };
    diag_query(req.as_bytes(), true, |p| {
        let (m, _) = InetDiagMsg::read_from_prefix(p).ok()?;
        (u64::from(m.inode) == inode).then_some(Diag {
            rqueue: m.rqueue,
            wqueue: m.wqueue,
            peer: 0,
        })
    })
}

/// The queues and peer of the Unix socket with inode `inode`; `None` if it is not in this
/// network namespace.
pub fn unix_diag(inode: u64) -> io::Result<Option<Diag>> {
    let Ok(ino) = u32::try_from(inode) else {
        return Ok(None);
    };
    let req = UnixDiagReq {
        family: libc::AF_UNIX as u8,
        states: u32::MAX,
        ino,
        show: UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN,
        cookie: [u32::MAX; 2],
        ..UnixDiagReq::default()
    };
    diag_query(req.as_bytes(), false, |p| {
        let (m, mut attrs) = UnixDiagMsg::read_from_prefix(p).ok()?;
        if u64::from(m.ino) != inode {
            return None;
        }
        let mut d = Diag::default();
        // Attributes: u16 length (header included), u16 type, value; 4-aligned.
        while attrs.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
            let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
            if len < 4 || len > attrs.len() {
                break;
            }
            let v = attrs.get(4..len).unwrap_or(&[]);
            let word = |i: usize| {
                v.get(i..i + 4)
                    .and_then(|s| <[u8; 4]>::try_from(s).ok())
                    .map_or(0, u32::from_ne_bytes)
            };
            match kind {
                UNIX_DIAG_PEER => d.peer = word(0),
                UNIX_DIAG_RQLEN => {
                    d.rqueue = word(0);
                    d.wqueue = word(4);
                }
                _ => {}
            }
            attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
        }
        Some(d)
    })
}
