//! Arbitrary images that are valid by construction (most of the time), so fuzzing and
//! property tests exercise the whole format rather than the first check.
// Test-input generation, not parsing: plain arithmetic on small bounded values reads better.
#![allow(clippy::arithmetic_side_effects, clippy::as_conversions)]

use super::*;
use crate::limits::{MAX_AUXV, MAX_DATA_PER_RECORD, MAX_SOCKADDR, MAX_VDSO_LEN};
use crate::raw::*;
use arbitrary::{Arbitrary, Result, Unstructured};

impl<'a> Arbitrary<'a> for ImageRepr {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let page_size = *u.choose(&[4096u32, 16384, 65536])?;
        let ps = u64::from(page_size);
        let crid = u.int_in_range(1..=u64::MAX)?;
        let incremental = u.arbitrary::<bool>()? && crid > 1;
        let parent_crid = if incremental {
            u.int_in_range(1..=crid - 1)?
        } else {
            0
        };
        let mut producer = [0u8; 32];
        let plen = u.int_in_range(0..=32usize)?;
        for b in producer.iter_mut().take(plen) {
            *b = u.int_in_range(1..=255u8)?;
        }
        let header = HeaderRepr {
            version_minor: u.arbitrary()?,
            arch: ARCH_X86_64,
            page_size,
            crid,
            parent_crid,
            parent_digest: if incremental { u.arbitrary()? } else { 0 },
            created_ns: u.arbitrary()?,
            diff_method: if incremental {
                *u.choose(&[DIFF_WRITE_TRACKING, DIFF_CONTENT_COMPARE])?
            } else {
                DIFF_NONE
            },
            producer,
        };
        let mut task = TaskRepr::arbitrary(u)?;
        task.pid = task.pid.max(1);
        task.state = *u.choose(b"RSDTtZ")?;
        let n = u.int_in_range(0..=15usize)?;
        task.comm = [0; 16];
        for b in task.comm.iter_mut().take(n) {
            *b = u.int_in_range(1..=255u8)?;
        }
        let mut regs = RegsRepr::arbitrary(u)?;
        regs.arch = ARCH_X86_64;
        regs.xsave.truncate(4096);
        let mut mm = MmRepr::arbitrary(u)?;
        for (lo, hi) in [
            (&mut mm.start_code, &mut mm.end_code),
            (&mut mm.start_data, &mut mm.end_data),
            (&mut mm.start_brk, &mut mm.brk),
            (&mut mm.arg_start, &mut mm.arg_end),
            (&mut mm.env_start, &mut mm.env_end),
        ] {
            if *lo > *hi {
                core::mem::swap(lo, hi);
            }
        }
        mm.auxv.truncate(MAX_AUXV as usize);
        mm.exe.retain(|&b| b != 0);
        mm.exe.truncate(300);
        let mut body = Vec::new();
        if header.version_minor >= 1 {
            state(u, &mut body, header.version_minor)?;
        }
        let mut vdso_done = false;
        let mut addr = u.int_in_range(0..=0xffffu64)? * ps;
        for _ in 0..u.int_in_range(0..=6u32)? {
            if u.ratio(1, 8)? {
                body.push(unknown(u)?);
            }
            let pages = u.int_in_range(1..=64u64)?;
            addr += u.int_in_range(0..=16u64)? * ps;
            let (start, end) = (addr, addr + pages * ps);
            addr = end;
            let kind = u.int_in_range(0..=VMA_VSYSCALL)?;
            let mut path: Vec<u8> = if kind == VMA_FILE {
                Vec::arbitrary(u)?
            } else {
                Vec::new()
            };
            path.retain(|&b| b != 0);
            path.truncate(200);
            if kind == VMA_FILE && path.is_empty() {
                path.push(b'/');
            }
            body.push(BodyRepr::Vma(VmaRepr {
                start,
                end,
                offset: u.int_in_range(0..=1024u64)? * ps,
                inode: u.arbitrary()?,
                file_size: u.arbitrary()?,
                file_mtime_ns: u.arbitrary()?,
                dev_major: u.arbitrary()?,
                dev_minor: u.arbitrary()?,
                prot: u.int_in_range(0..=7)?,
                flags: u.int_in_range(0..=VMA_FLAGS_KNOWN)?,
                kind,
                path,
            }));
            if header.version_minor >= 1 && u.ratio(1, 3)? {
                if let Some(a) = vma_attr(u)? {
                    body.push(BodyRepr::VmaAttr(a));
                }
            }
            // The vDSO's bytes (§24): at most one, for a vDSO Vma short enough.
            let vdso_len = end - start;
            if kind == VMA_VDSO
                && header.version_minor >= 2
                && !vdso_done
                && vdso_len <= u64::from(MAX_VDSO_LEN)
                && u.ratio(2, 3)?
            {
                let fill: u8 = u.arbitrary()?;
                let mut bytes = alloc::vec![fill; vdso_len as usize];
                for (d, s) in bytes.iter_mut().zip(b"\x7fELF") {
                    *d = *s;
                }
                body.push(BodyRepr::VdsoData(bytes));
                vdso_done = true;
            }
            // Pages records over parts of the VMA.
            let mut p = start;
            while p < end && u.ratio(2, 3)? {
                let mut runs = Vec::new();
                let mut data = Vec::new();
                while p < end && runs.len() < 8 {
                    p += u.int_in_range(0..=2u64)? * ps;
                    if p >= end {
                        break;
                    }
                    let max = ((end - p) / ps).min(4);
                    let n = u.int_in_range(1..=max)?;
                    // Data up to the record limit (16 pages of 64 KiB); zero runs beyond.
                    let room = data.len() as u64 + n * ps <= u64::from(MAX_DATA_PER_RECORD);
                    let kind = match u.int_in_range(0..=2u8)? {
                        0 if room => RunKind::Data,
                        2 if incremental => RunKind::Parent,
                        _ => RunKind::Zero,
                    };
                    if kind == RunKind::Data {
                        let fill: u8 = u.arbitrary()?;
                        data.extend(core::iter::repeat_n(fill, (n * ps) as usize));
                    }
                    runs.push(RunRepr {
                        addr: p,
                        pages: n as u32,
                        kind,
                    });
                    p += n * ps;
                    if u.ratio(1, 3)? {
                        break;
                    }
                }
                if runs.is_empty() {
                    break;
                }
                body.push(BodyRepr::Pages(PagesRepr { runs, data }));
            }
        }
        Ok(ImageRepr {
            header,
            task,
            regs,
            mm,
            body,
        })
    }
}

/// A non-critical record of a kind this version does not define.
fn unknown(u: &mut Unstructured<'_>) -> Result<BodyRepr> {
    let len = 8 * u.int_in_range(0..=4usize)?;
    let payload = (0..len)
        .map(|_| u.arbitrary())
        .collect::<Result<Vec<u8>>>()?;
    Ok(BodyRepr::Unknown {
        kind: u.int_in_range(KIND_LAST + 1..=u16::MAX)?,
        payload,
    })
}

/// Bytes with no NUL, at most `max`.
fn no_nul(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let mut v = Vec::<u8>::arbitrary(u)?;
    v.retain(|&b| b != 0);
    v.truncate(max);
    Ok(v)
}

/// A signal number, 1..=64.
fn sig(u: &mut Unstructured<'_>) -> Result<u32> {
    u.int_in_range(1..=64u32)
}

/// The state records (§2.5): files (fds, cwd, root), from 1.2 inotify instances and locks,
/// Signals, Timers, Process, each present or not, with unknown records among them now and then.
fn state(u: &mut Unstructured<'_>, body: &mut Vec<BodyRepr>, minor: u16) -> Result<()> {
    let mut fds: Vec<u32> = Vec::new();
    let mut fd = 0u32;
    for _ in 0..u.int_in_range(0..=5u32)? {
        fd += u.int_in_range(0..=40u32)?;
        let dup_of = if !fds.is_empty() && u.ratio(1, 4)? {
            *u.choose(&fds)?
        } else {
            DUP_NONE
        };
        body.push(BodyRepr::File(file(u, ROLE_FD, fd, dup_of)?));
        fds.push(fd);
        fd += 1;
        if u.ratio(1, 10)? {
            body.push(unknown(u)?);
        }
    }
    for role in [ROLE_CWD, ROLE_ROOT] {
        if u.ratio(2, 3)? {
            body.push(BodyRepr::File(file(u, role, 0, DUP_NONE)?));
        }
    }
    if minor >= 2 {
        inotify_and_locks(u, body, &fds)?;
    }
    if u.ratio(2, 3)? {
        body.push(BodyRepr::Signals(signals(u)?.into()));
    }
    if u.ratio(1, 10)? {
        body.push(unknown(u)?);
    }
    if u.ratio(2, 3)? {
        body.push(BodyRepr::Timers(timers(u)?));
    }
    if u.ratio(2, 3)? {
        body.push(BodyRepr::Process(process(u)?));
    }
    Ok(())
}

/// Inotify records with their watches (§21, §22) and Lock records (§23), following the rules;
/// locks mostly on the descriptors of `fds`.
fn inotify_and_locks(
    u: &mut Unstructured<'_>,
    body: &mut Vec<BodyRepr>,
    fds: &[u32],
) -> Result<()> {
    let mut fd = u.int_in_range(0..=100u32)?;
    let mut firsts: Vec<u32> = Vec::new();
    for _ in 0..u.int_in_range(0..=3u32)? {
        let dup_of = if !firsts.is_empty() && u.ratio(1, 3)? {
            *u.choose(&firsts)?
        } else {
            NO_DUP
        };
        let mut watches = Vec::new();
        if dup_of == NO_DUP {
            firsts.push(fd);
            let mut wd = 0u32;
            for _ in 0..u.int_in_range(0..=3u32)? {
                wd += u.int_in_range(1..=50u32)?;
                let mut path = no_nul(u, 100)?;
                path.insert(0, b'/');
                watches.push(WatchRepr {
                    wd,
                    mask: u.int_in_range(1..=u32::MAX)?,
                    inode: u.arbitrary()?,
                    dev_major: u.arbitrary()?,
                    dev_minor: u.arbitrary()?,
                    path,
                });
            }
        }
        body.push(BodyRepr::Inotify(InotifyRepr {
            fd,
            fd_flags: u.int_in_range(0..=1)?,
            open_flags: u.arbitrary()?,
            dup_of,
            watches,
        }));
        fd += u.int_in_range(1..=10u32)?;
    }
    const OFF_MAX: u64 = u64::MAX >> 1;
    for _ in 0..u.int_in_range(0..=3u32)? {
        let fd = match u.choose(fds) {
            Ok(&f) if u.ratio(3, 4)? => f,
            _ => u.int_in_range(0..=0x7fff_ffffu32)?,
        };
        let ltype = u.int_in_range(LOCK_POSIX..=LOCK_OFD)?;
        let (start, len) = if ltype == LOCK_FLOCK {
            (0, 0)
        } else {
            let start = u.int_in_range(0..=OFF_MAX)?;
            (start, u.int_in_range(0..=OFF_MAX - start + 1)?)
        };
        body.push(BodyRepr::Lock(LockRepr {
            fd,
            ltype,
            mode: u.int_in_range(LOCK_READ..=LOCK_WRITE)?,
            start,
            len,
        }));
    }
    Ok(())
}

/// A File that follows the rules of §15.
fn file(u: &mut Unstructured<'_>, role: u16, fd: u32, dup_of: u32) -> Result<FileRepr> {
    let ftype = if role == ROLE_FD {
        u.int_in_range(0..=FILE_TYPE_LAST)?
    } else {
        *u.choose(&[FILE_DIR, FILE_UNSUPPORTED])?
    };
    let mut params = [0u64; 8];
    let mut data = Vec::new();
    match ftype {
        FILE_PIPE => {
            params[0] = u.arbitrary()?;
            params[1] = u.int_in_range(0..=PIPE_OTHER_END_OUTSIDE)?;
        }
        FILE_FIFO | FILE_SIGNALFD | FILE_MEMFD => params[0] = u.arbitrary()?,
        FILE_EVENTFD => params = [u.arbitrary()?, u.int_in_range(0..=1)?, 0, 0, 0, 0, 0, 0],
        FILE_TIMERFD => {
            for p in params.iter_mut().take(4) {
                *p = u.arbitrary()?;
            }
        }
        FILE_SOCKET => {
            let state = u.int_in_range(SOCKET_UNBOUND..=SOCKET_CONNECTED)?;
            let family = u.int_in_range(0..=45)?;
            params = [
                family,
                u.int_in_range(1..=5)?,
                u.int_in_range(0..=300)?,
                state,
                if state == SOCKET_LISTENING {
                    u.int_in_range(0..=4096)?
                } else {
                    0
                },
                if state == SOCKET_CONNECTED && family == AF_UNIX {
                    u.arbitrary()?
                } else {
                    0
                },
                0,
                0,
            ];
            if state != SOCKET_UNBOUND {
                let n = u.int_in_range(2..=MAX_SOCKADDR as usize)?;
                data = (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?;
            }
        }
        FILE_EPOLL => {
            for _ in 0..u.int_in_range(0..=4u32)? {
                data.extend_from_slice(&u.arbitrary::<u32>()?.to_le_bytes());
                data.extend_from_slice(&u.arbitrary::<u32>()?.to_le_bytes());
                data.extend_from_slice(&u.arbitrary::<u64>()?.to_le_bytes());
            }
        }
        _ => {}
    }
    let mut flags = 0;
    if ftype == FILE_REG && u.ratio(1, 3)? {
        flags |= FILE_DELETED;
    }
    if ftype == FILE_CHR && u.ratio(1, 2)? {
        flags |= FILE_TTY;
    }
    let mut contents = Vec::new();
    let data_type = matches!(ftype, FILE_REG | FILE_MEMFD | FILE_PIPE | FILE_FIFO);
    if role == ROLE_FD && data_type && u.ratio(1, 2)? {
        flags |= FILE_HAS_DATA;
        for _ in 0..u.int_in_range(0..=3u32)? {
            let n = u.int_in_range(1..=64usize)?;
            contents.push((0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?);
        }
    }
    Ok(FileRepr {
        fd,
        role,
        ftype,
        flags,
        fd_flags: if role == ROLE_FD {
            u.int_in_range(0..=1)?
        } else {
            0
        },
        open_flags: u.arbitrary()?,
        mode: u.arbitrary()?,
        pos: u.arbitrary()?,
        inode: u.arbitrary()?,
        size: u.arbitrary()?,
        mtime_ns: u.arbitrary()?,
        dev_major: u.arbitrary()?,
        dev_minor: u.arbitrary()?,
        rdev_major: u.arbitrary()?,
        rdev_minor: u.arbitrary()?,
        dup_of,
        params,
        path: no_nul(u, 200)?,
        data,
        contents,
    })
}

/// A Signals record that follows the rules of §17.
fn signals(u: &mut Unstructured<'_>) -> Result<SignalsRepr> {
    let mut s = SignalsRepr::arbitrary(u)?;
    for (i, a) in s.actions.iter_mut().enumerate() {
        if i == 8 || i == 18 {
            *a = SigActionRepr::default();
        }
        a.mask &= !((1 << 8) | (1 << 18));
    }
    s.altstack_flags = *u.choose(&[0, 1, 2, 1 << 31])?;
    if s.altstack_flags == 2 {
        (s.altstack_sp, s.altstack_size) = (0, 0);
    }
    s.pending.truncate(4);
    for p in &mut s.pending {
        p.queue &= 1;
        p.siginfo[..4].copy_from_slice(&sig(u)?.to_le_bytes());
    }
    s.pending.sort_by_key(|p| p.queue);
    Ok(s)
}

/// A Timers record that follows the rules of §18.
fn timers(u: &mut Unstructured<'_>) -> Result<TimersRepr> {
    let mut t = TimersRepr::arbitrary(u)?;
    t.posix.truncate(4);
    let mut id = 0u32;
    for p in &mut t.posix {
        id += u.int_in_range(0..=1000u32)?;
        p.id = id;
        id += 1;
        p.sigev_notify = *u.choose(&[0, 1, 2, 4])?;
        if p.sigev_notify != 1 {
            p.sigev_signo = sig(u)?;
        }
        p.notify_tid = if p.sigev_notify == 4 {
            u.int_in_range(1..=u32::MAX)?
        } else {
            0
        };
    }
    Ok(t)
}

/// A Process record that follows the rules of §19.
fn process(u: &mut Unstructured<'_>) -> Result<ProcessRepr> {
    let mut p = ProcessRepr::arbitrary(u)?;
    for l in &mut p.rlimits {
        if l.cur > l.max {
            core::mem::swap(&mut l.cur, &mut l.max);
        }
    }
    if p.rseq_addr == 0 {
        (p.rseq_len, p.rseq_sig) = (0, 0);
    }
    p.pdeathsig = u.int_in_range(0..=64)?;
    p.dumpable = u.int_in_range(0..=2)?;
    p.attr_flags &= ATTR_FLAGS_KNOWN;
    if p.attr_flags & ATTR_MLOCK_ONFAULT != 0 {
        p.attr_flags |= ATTR_MLOCK_FUTURE;
    }
    p.oom_score_adj = u.int_in_range(-1000..=1000)?;
    p.seccomp_mode = u.int_in_range(0..=2)?;
    p.groups.truncate(16);
    p.groups.sort_unstable();
    Ok(p)
}

/// VmaAttr bits that follow the rules of §20, `None` when none are set.
fn vma_attr(u: &mut Unstructured<'_>) -> Result<Option<u32>> {
    let mut a = u.int_in_range(0..=VMA_ATTR_KNOWN)?;
    if a & VMA_ATTR_LOCKONFAULT != 0 {
        a |= VMA_ATTR_LOCKED;
    }
    if a & VMA_ATTR_HUGEPAGE != 0 {
        a &= !VMA_ATTR_NOHUGEPAGE;
    }
    Ok((a != 0).then_some(a))
}
