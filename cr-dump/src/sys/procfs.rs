//! Parsers for `/proc/PID/{maps,stat,status,auxv,personality,exe,pagemap}`.
//!
//! Parsing is separated from reading so it works on any text; every parser returns an error,
//! never panics, on malformed input.

use crate::error::{Error, Result};
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// `/proc/PID/NAME`.
pub fn path(pid: i32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

/// Reads `/proc/PID/NAME`, mapping "no such file" to [`Error::NoSuchProcess`] and "permission
/// denied" to [`Error::PermissionDenied`].
pub fn read(pid: i32, name: &str) -> Result<Vec<u8>> {
    fs::read(path(pid, name)).map_err(|e| proc_err(pid, name, e))
}

/// Maps an error of reading `/proc/PID/NAME` to the crate's error.
pub fn proc_err(pid: i32, name: &str, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => Error::NoSuchProcess(pid),
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
            pid,
            what: format!("reading /proc/{pid}/{name}"),
        },
        _ => Error::io(format!("reading /proc/{pid}/{name}"), e),
    }
}

fn bad(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Proc(format!("{what}: {detail}"))
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// Shared (`s`) rather than private (`p`).
    pub shared: bool,
    /// File offset.
    pub offset: u64,
    /// Device major.
    pub dev_major: u32,
    /// Device minor.
    pub dev_minor: u32,
    /// Inode.
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, ...), empty for anonymous memory.
    pub path: String,
}

/// Parses `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Result<Vec<MapsEntry>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_maps_line)
        .collect()
}

/// Calls `f` with each line (without its newline) of `/proc/PID/NAME`, read in pieces of
/// 1 MiB rather than whole: smaps of 65,000 mappings is 48 MB, which a whole read
/// copies several times as its buffer grows (117 ms against 86 ms here) and holds at once.
/// The pieces are read on another thread, `LINES_AHEAD` pieces at most ahead of `f`: the kernel
/// makes the next piece's text while this one is parsed (parsing was an eighth of the time).
pub fn for_each_line(pid: i32, name: &str, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    use std::io::Read;
    use std::sync::mpsc;
    let mut file = fs::File::open(path(pid, name)).map_err(|e| proc_err(pid, name, e))?;
    let (full, pieces) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(LINES_AHEAD);
    let (spare, spares) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        s.spawn(move || loop {
            // A buffer filled by as many reads as it takes (a read of smaps gives about a
            // page: the kernel's buffer), and handed over whole.
            let mut buf = spares.try_recv().unwrap_or_default();
            buf.resize(LINES_BUF, 0);
            let mut have = 0usize;
            let got = loop {
                match file.read(buf.get_mut(have..).unwrap_or(&mut [])) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        have += n;
                        if have == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let end = have < buf.len();
            let piece = got.map(|()| (buf, have));
            let failed = piece.is_err();
            // The parser gone (it failed): stop.
            if full.send(piece).is_err() || failed || end {
                return;
            }
        });
        let mut lines = Lines::default();
        for piece in pieces {
            let (buf, n) = piece.map_err(|e| proc_err(pid, name, e))?;
            lines.feed(buf.get(..n).unwrap_or(&[]), &mut f)?;
            let _ = spare.send(buf);
        }
        lines.finish(&mut f)
    })
}

/// Text cut into lines as its pieces come.
#[derive(Default)]
struct Lines {
    /// The start of a line cut between two pieces.
    carry: Vec<u8>,
}

impl Lines {
    /// Calls `f` with each line `piece` ends.
    fn feed(&mut self, piece: &[u8], f: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut at = 0usize;
        while let Some(i) = piece.get(at..).and_then(newline) {
            let line = piece.get(at..at + i).unwrap_or(&[]);
            if self.carry.is_empty() {
                f(line)?;
            } else {
                self.carry.extend_from_slice(line);
                f(&self.carry)?;
                self.carry.clear();
            }
            at += i + 1;
        }
        self.carry.extend_from_slice(piece.get(at..).unwrap_or(&[]));
        Ok(())
    }

    /// The end: a last line without a newline.
    fn finish(self, f: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            f(&self.carry)
        }
    }
}

/// Pieces [`for_each_line`] reads ahead of its parser at most.
const LINES_AHEAD: usize = 2;

/// The index of the first newline in `d`, eight bytes at a time (a byte at a time was a fifth
/// of reading smaps of 65,000 mappings, the kernel's share included).
fn newline(d: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = d.chunks_exact(8);
    let mut at = 0usize;
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let x = u64::from_le_bytes(b) ^ (ONES * u64::from(b'\n'));
        // A zero byte of x (a newline) sets its high bit; a borrow can only set bits above a
        // zero byte, so the lowest one set is the first newline.
        let z = x.wrapping_sub(ONES) & !x & HIGH;
        if z != 0 {
            return Some(at + (z.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|k| at + k)
}

/// The piece [`for_each_line`] reads at a time.
const LINES_BUF: usize = 1 << 20;

/// One line of `/proc/PID/maps` (or a header line of smaps), as bytes.
pub fn parse_maps_bytes(line: &[u8]) -> Result<MapsEntry> {
    let l = std::str::from_utf8(line).map_err(|_| bad("maps", "a line is not UTF-8"))?;
    parse_maps_line(l)
}

fn hex(s: &str, what: &str) -> Result<u64> {
    u64::from_str_radix(s, 16).map_err(|_| bad("maps", format_args!("bad {what} {s:?}")))
}

/// Splits off the first whitespace-separated field.
fn field(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(' ');
    match s.find(' ') {
        Some(i) => (s.get(..i).unwrap_or(""), s.get(i..).unwrap_or("")),
        None => (s, ""),
    }
}

fn parse_maps_line(line: &str) -> Result<MapsEntry> {
    let (range, rest) = field(line);
    let (perms, rest) = field(rest);
    let (offset, rest) = field(rest);
    let (dev, rest) = field(rest);
    let (inode, rest) = field(rest);
    let path = rest.trim_start_matches(' ').to_string();
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| bad("maps", format_args!("bad range in {line:?}")))?;
    let (major, minor) = dev
        .split_once(':')
        .ok_or_else(|| bad("maps", format_args!("bad device in {line:?}")))?;
    let p = perms.as_bytes();
    if p.len() != 4 {
        return Err(bad("maps", format_args!("bad permissions in {line:?}")));
    }
    let flag = |i: usize, c: u8| p.get(i) == Some(&c);
    Ok(MapsEntry {
        start: hex(start, "start")?,
        end: hex(end, "end")?,
        read: flag(0, b'r'),
        write: flag(1, b'w'),
        exec: flag(2, b'x'),
        shared: flag(3, b's'),
        offset: hex(offset, "offset")?,
        dev_major: u32::try_from(hex(major, "device major")?)
            .map_err(|_| bad("maps", format_args!("bad device major in {line:?}")))?,
        dev_minor: u32::try_from(hex(minor, "device minor")?)
            .map_err(|_| bad("maps", format_args!("bad device minor in {line:?}")))?,
        inode: inode
            .parse()
            .map_err(|_| bad("maps", format_args!("bad inode in {line:?}")))?,
        path,
    })
}

/// The fields of `/proc/PID/stat` this crate uses (field numbers as in proc(5)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// CPU time spent, user and system (`utime` + `stime`), in clock ticks.
    pub cpu_ticks: u64,
    /// (2) comm.
    pub comm: String,
    /// (3) state letter.
    pub state: u8,
    /// (19) nice value.
    pub nice: i32,
    /// (41) scheduling policy (`SCHED_*`).
    pub policy: u32,
    /// (4) ppid.
    pub ppid: i32,
    /// (5) pgrp.
    pub pgrp: i32,
    /// (6) session.
    pub session: i32,
    /// (9) kernel flags (`PF_*`).
    pub flags: u64,
    /// (20) number of threads.
    pub num_threads: u64,
    /// (26) startcode.
    pub start_code: u64,
    /// (27) endcode.
    pub end_code: u64,
    /// (28) startstack.
    pub start_stack: u64,
    /// (38) exit_signal.
    pub exit_signal: u32,
    /// (45) start_data.
    pub start_data: u64,
    /// (46) end_data.
    pub end_data: u64,
    /// (47) start_brk.
    pub start_brk: u64,
    /// (48) arg_start.
    pub arg_start: u64,
    /// (49) arg_end.
    pub arg_end: u64,
    /// (50) env_start.
    pub env_start: u64,
    /// (51) env_end.
    pub env_end: u64,
}

/// `PF_KTHREAD` in the stat flags.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// Parses `/proc/PID/stat`. The comm may hold spaces and parentheses: it ends at the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat> {
    let open = text.find('(').ok_or_else(|| bad("stat", "no '('"))?;
    let close = text.rfind(')').ok_or_else(|| bad("stat", "no ')'"))?;
    let comm = text
        .get(open.saturating_add(1)..close)
        .ok_or_else(|| bad("stat", "bad comm"))?
        .to_string();
    let rest: Vec<&str> = text
        .get(close.saturating_add(1)..)
        .unwrap_or("")
        .split_ascii_whitespace()
        .collect();
    // rest[0] is field 3.
    let f = |n: usize| -> Result<&str> {
        rest.get(n.wrapping_sub(3))
            .copied()
            .ok_or_else(|| bad("stat", format_args!("missing field {n}")))
    };
    let num = |n: usize| -> Result<u64> {
        let s = f(n)?;
        s.parse::<u64>()
            .or_else(|_| s.parse::<i64>().map(|v| v as u64))
            .map_err(|_| bad("stat", format_args!("bad field {n}: {s:?}")))
    };
    let int = |n: usize| -> Result<i32> {
        let s = f(n)?;
        s.parse()
            .map_err(|_| bad("stat", format_args!("bad field {n}: {s:?}")))
    };
    Ok(Stat {
        comm,
        state: f(3)?.bytes().next().unwrap_or(b'?'),
        ppid: int(4)?,
        pgrp: int(5)?,
        session: int(6)?,
        flags: num(9)?,
        num_threads: num(20)?,
        nice: int(19)?,
        policy: u32::try_from(num(41)?).map_err(|_| bad("stat", "bad policy"))?,
        cpu_ticks: num(14)?.saturating_add(num(15)?),
        start_code: num(26)?,
        end_code: num(27)?,
        start_stack: num(28)?,
        exit_signal: u32::try_from(num(38)?).map_err(|_| bad("stat", "bad exit signal"))?,
        start_data: num(45)?,
        end_data: num(46)?,
        start_brk: num(47)?,
        arg_start: num(48)?,
        arg_end: num(49)?,
        env_start: num(50)?,
        env_end: num(51)?,
    })
}

/// The fields of `/proc/PID/status` this crate uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Name.
    pub name: String,
    /// State letter.
    pub state: u8,
    /// Umask (absent for kernel threads).
    pub umask: u32,
    /// Tgid.
    pub tgid: i32,
    /// Pid.
    pub pid: i32,
    /// PPid.
    pub ppid: i32,
    /// TracerPid.
    pub tracer_pid: i32,
    /// Uid: real, effective, saved, filesystem.
    pub uid: [u32; 4],
    /// Gid: real, effective, saved, filesystem.
    pub gid: [u32; 4],
    /// Threads.
    pub threads: u64,
    /// SigPnd.
    pub sig_pnd: u64,
    /// ShdPnd.
    pub shd_pnd: u64,
    /// SigBlk.
    pub sig_blk: u64,
    /// SigIgn.
    pub sig_ign: u64,
    /// SigCgt.
    pub sig_cgt: u64,
    /// CapInh.
    pub cap_inh: u64,
    /// CapPrm.
    pub cap_prm: u64,
    /// CapEff.
    pub cap_eff: u64,
    /// Kthread (1 for a kernel thread; absent on older kernels).
    pub kthread: bool,
    /// RssAnon, bytes.
    pub rss_anon: u64,
    /// VmSwap, bytes.
    pub vm_swap: u64,
    /// Seccomp mode (0 none, 1 strict, 2 filter).
    pub seccomp: u32,
    /// VmSize, bytes (the sum of the mappings' sizes).
    pub vm_size: u64,
    /// VmLck, bytes (locked memory: `mlock`, `MCL_ONFAULT` too).
    pub vm_lck: u64,
}

/// Parses `/proc/PID/status`.
pub fn parse_status(text: &str) -> Result<Status> {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let hexv = || u64::from_str_radix(v, 16).map_err(|_| bad("status", format_args!("{k}")));
        let dec = || -> Result<i32> { v.parse().map_err(|_| bad("status", format_args!("{k}"))) };
        let ids = || -> Result<[u32; 4]> {
            let mut out = [0u32; 4];
            let mut it = v.split_ascii_whitespace();
            for o in &mut out {
                *o = it
                    .next()
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| bad("status", format_args!("{k}")))?;
            }
            Ok(out)
        };
        let kb = || -> Result<u64> {
            v.split_ascii_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .map(|n| n.saturating_mul(1024))
                .ok_or_else(|| bad("status", format_args!("{k}")))
        };
        match k {
            "Name" => s.name = v.to_string(),
            "State" => s.state = v.bytes().next().unwrap_or(b'?'),
            "Umask" => {
                s.umask = u32::from_str_radix(v, 8).map_err(|_| bad("status", "Umask"))?;
            }
            "Tgid" => s.tgid = dec()?,
            "Pid" => s.pid = dec()?,
            "PPid" => s.ppid = dec()?,
            "TracerPid" => s.tracer_pid = dec()?,
            "Uid" => s.uid = ids()?,
            "Gid" => s.gid = ids()?,
            "Threads" => {
                s.threads = u64::try_from(dec()?).map_err(|_| bad("status", "Threads"))?;
            }
            "SigPnd" => s.sig_pnd = hexv()?,
            "ShdPnd" => s.shd_pnd = hexv()?,
            "SigBlk" => s.sig_blk = hexv()?,
            "SigIgn" => s.sig_ign = hexv()?,
            "SigCgt" => s.sig_cgt = hexv()?,
            "CapInh" => s.cap_inh = hexv()?,
            "CapPrm" => s.cap_prm = hexv()?,
            "CapEff" => s.cap_eff = hexv()?,
            "Kthread" => s.kthread = v == "1",
            "RssAnon" => s.rss_anon = kb()?,
            "VmSwap" => s.vm_swap = kb()?,
            "VmSize" => s.vm_size = kb()?,
            "VmLck" => s.vm_lck = kb()?,
            "Seccomp" => s.seccomp = v.parse().map_err(|_| bad("status", "Seccomp"))?,
            _ => {}
        }
    }
    if s.pid == 0 {
        return Err(bad("status", "no Pid line"));
    }
    Ok(s)
}

/// Parses `/proc/PID/auxv` (native u64 pairs); keeps the terminating `AT_NULL`.
pub fn parse_auxv(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for pair in bytes.chunks_exact(16) {
        let (k, v) = pair.split_at(8);
        let k = u64::from_ne_bytes(k.try_into().unwrap_or([0; 8]));
        let v = u64::from_ne_bytes(v.try_into().unwrap_or([0; 8]));
        out.push((k, v));
        if k == 0 {
            break;
        }
    }
    out
}

/// Parses `/proc/PID/personality` (hex).
pub fn parse_personality(text: &str) -> Result<u32> {
    u32::from_str_radix(text.trim(), 16).map_err(|_| bad("personality", text.trim()))
}

/// pagemap entry bit: page present in RAM.
pub const PM_PRESENT: u64 = 1 << 63;
/// pagemap entry bit: page swapped out.
pub const PM_SWAPPED: u64 = 1 << 62;
/// pagemap entry bit: file page or shared anonymous page.
pub const PM_FILE: u64 = 1 << 61;

/// Reads the pagemap entries of `count` pages from page number `first_page` into `out`.
pub fn read_pagemap(
    f: &fs::File,
    pid: i32,
    first_page: u64,
    count: usize,
    out: &mut Vec<u64>,
) -> Result<()> {
    out.clear();
    out.resize(count, 0);
    let mut bytes = vec![0u8; count.saturating_mul(8)];
    let mut done = 0usize;
    let off = first_page.saturating_mul(8);
    while done < bytes.len() {
        let n = f
            .read_at(
                bytes.get_mut(done..).unwrap_or(&mut []),
                off.saturating_add(done as u64),
            )
            .map_err(|e| proc_err(pid, "pagemap", e))?;
        if n == 0 {
            break;
        }
        done = done.saturating_add(n);
    }
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *o = u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_cut_anywhere_come_whole() {
        let text = b"first\n\nthird line, longer than a word\nx\nlast without newline";
        let want: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        for cut in 0..=text.len() {
            for cut2 in cut..=text.len() {
                let mut got: Vec<Vec<u8>> = Vec::new();
                let mut f = |l: &[u8]| {
                    got.push(l.to_vec());
                    Ok(())
                };
                let mut lines = Lines::default();
                for piece in [&text[..cut], &text[cut..cut2], &text[cut2..]] {
                    lines.feed(piece, &mut f).unwrap();
                }
                lines.finish(&mut f).unwrap();
                assert_eq!(got, want, "cut at {cut} and {cut2}");
            }
        }
    }

    #[test]
    fn newline_is_the_first_one() {
        // Every position in and around a word, bytes that differ from a newline by one bit or
        // by a borrow (0x0b, 0x09, 0x8a), and one or two newlines.
        for len in 0..40 {
            for fill in [b'a', 0x0b, 0x09, 0x8a, 0x00, 0xff] {
                let mut d = vec![fill; len];
                assert_eq!(newline(&d), None, "len {len} fill {fill:#x}");
                for i in 0..len {
                    d[i] = b'\n';
                    assert_eq!(newline(&d), Some(i), "len {len} fill {fill:#x} at {i}");
                    for j in i + 1..len {
                        d[j] = b'\n';
                        assert_eq!(newline(&d), Some(i));
                        d[j] = fill;
                    }
                    d[i] = fill;
                }
            }
        }
    }

    #[test]
    fn maps_lines() {
        let t = "55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1835060                    /usr/bin/sleep with space\n\
                 7ffd1c5e1000-7ffd1c602000 rw-p 00000000 00:00 0                          [stack]\n\
                 7f0000000000-7f0000001000 rw-s 00001000 00:05 12 /dev/zero (deleted)\n\
                 7f0000002000-7f0000003000 ---p 00000000 00:00 0 \n";
        let m = parse_maps(t).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].start, 0x55d0c0a00000);
        assert_eq!(m[0].path, "/usr/bin/sleep with space");
        assert_eq!(
            (m[0].dev_major, m[0].dev_minor, m[0].inode),
            (0xfd, 1, 1835060)
        );
        assert!(m[0].read && !m[0].write && !m[0].shared);
        assert_eq!(m[1].path, "[stack]");
        assert!(m[2].shared && m[2].write);
        assert_eq!(m[2].offset, 0x1000);
        assert_eq!(m[3].path, "");
        assert!(!m[3].read);
        assert!(parse_maps("zzz").is_err());
        assert!(parse_maps("1-2 rw").is_err());
    }

    #[test]
    fn stat_with_odd_comm() {
        let mut t = String::from("123 (a) b) c) S 1 123 123 0 -1 4194560");
        for i in 10..=52 {
            t.push_str(&format!(" {i}"));
        }
        let s = parse_stat(&t).unwrap();
        assert_eq!(s.comm, "a) b) c");
        assert_eq!(s.state, b'S');
        assert_eq!((s.ppid, s.pgrp, s.session), (1, 123, 123));
        assert_eq!(s.flags, 4194560);
        assert_eq!(s.start_code, 26);
        assert_eq!(s.exit_signal, 38);
        assert_eq!(s.env_end, 51);
        assert!(parse_stat("1 (x) S 1").is_err());
    }

    #[test]
    fn status_fields() {
        let t = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t5\nPid:\t5\nPPid:\t1\n\
                 TracerPid:\t0\nUid:\t0\t1\t2\t3\nGid:\t4\t5\t6\t7\nThreads:\t1\nSigBlk:\t0000000000010000\n";
        let s = parse_status(t).unwrap();
        assert_eq!(s.umask, 0o22);
        assert_eq!(s.uid, [0, 1, 2, 3]);
        assert_eq!(s.gid, [4, 5, 6, 7]);
        assert_eq!(s.sig_blk, 0x10000);
        assert_eq!(s.state, b'R');
        assert!(parse_status("Name: x\n").is_err());
    }

    #[test]
    fn auxv_stops_at_null() {
        let mut b = Vec::new();
        for (k, v) in [(6u64, 4096u64), (0, 0), (9, 9)] {
            b.extend_from_slice(&k.to_ne_bytes());
            b.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(parse_auxv(&b), vec![(6, 4096), (0, 0)]);
    }
}
