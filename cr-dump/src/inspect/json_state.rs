//! The JSON form of the state records of 1.1 (`file`, `signals`, `timers`, `process`,
//! `vma_attr` entries of `body`) and 1.2 (`inotify`, `lock`, `vdso_data`), spec/JSON.md, and
//! back. Flags and kinds are written as names
//! ([`super::names`]); the reader takes names, numbers or both.

use super::json_value::{bytes_value, hex, int, ints, n64, unhex, x, Obj};
use super::names::{self, Flag, Kinds};
use cr_format::raw;
use cr_format::read::{File, InotifyWatch, Process, Signals, Timers, VdsoData};
use cr_format::repr::*;
use serde_json::{json, Map, Value};

fn flags(bits: u64, table: &[Flag]) -> Value {
    names::flags(bits, table).into()
}

/// A kind as its name, or as a number when it has none.
fn kind(n: u64, table: Kinds) -> Value {
    match names::kind(n, table) {
        Some(s) => s.into(),
        None => n64(n),
    }
}

/// A signal number as its name (1..=64), else as a number.
fn signal(n: u64) -> Value {
    if (1..=64).contains(&n) {
        names::signal(n).into()
    } else {
        n64(n)
    }
}

/// A File record (with its FileData records' bytes when `contents` is given: `--with-pages`).
pub fn file(f: &File<'_>, contents: Option<&[Vec<u8>]>, contents_len: u64) -> Value {
    let r = f.raw;
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| {
        o.insert(k.into(), v);
    };
    put("fd", r.fd.get().into());
    put("role", kind(r.role.get().into(), names::ROLES));
    put("type", kind(r.ftype.get().into(), names::FILE_TYPES));
    put("flags", flags(r.flags.get().into(), names::FILE_FLAGS));
    put("fd_flags", flags(r.fd_flags.get().into(), names::FD_FLAGS));
    put(
        "open_flags",
        flags(r.open_flags.get().into(), names::OPEN_FLAGS),
    );
    put("mode", format!("{:#o}", r.mode.get()).into());
    put("pos", n64(r.pos.get()));
    put("inode", n64(r.inode.get()));
    put("size", n64(r.size.get()));
    put("mtime_ns", n64(r.mtime_ns.get()));
    put("dev", json!([r.dev_major.get(), r.dev_minor.get()]));
    put("rdev", json!([r.rdev_major.get(), r.rdev_minor.get()]));
    put(
        "dup_of",
        match r.dup_of.get() {
            raw::DUP_NONE => Value::Null,
            d => d.into(),
        },
    );
    put(
        "params",
        r.params
            .iter()
            .map(|p| n64(p.get()))
            .collect::<Vec<_>>()
            .into(),
    );
    put("path", bytes_value(f.path));
    put("data", hex(f.data).into());
    // Informative: the data decoded, where it has a structure.
    if f.ftype() == raw::FILE_EPOLL {
        let e: Vec<Value> = f
            .epoll()
            .iter()
            .map(|e| json!({"fd": e.fd.get(), "events": x(e.events.get().into()), "data": x(e.data.get())}))
            .collect();
        put("epoll", e.into());
    }
    if f.ftype() == raw::FILE_SOCKET && !f.data.is_empty() {
        put("address", super::state::sockaddr(f.data).into());
    }
    put("contents_len", n64(contents_len));
    if let Some(c) = contents {
        put(
            "contents",
            c.iter()
                .map(|b| Value::from(hex(b)))
                .collect::<Vec<_>>()
                .into(),
        );
    }
    json!({ "file": o })
}

fn action(a: &raw::SigAction) -> Value {
    let handler = match a.handler.get() {
        0 => "SIG_DFL".to_string(),
        1 => "SIG_IGN".to_string(),
        h => format!("{h:#x}"),
    };
    json!({
        "handler": handler,
        "flags": flags(a.flags.get(), names::SA_FLAGS),
        "restorer": x(a.restorer.get()),
        "mask": names::sigmask(a.mask.get()),
    })
}

/// The Signals record: only the dispositions that are not all zero, keyed by signal name.
pub fn signals(s: &Signals<'_>) -> Value {
    let mut actions = Map::new();
    for (n, a) in (1u64..).zip(s.raw.actions.iter()) {
        if a.handler.get() | a.flags.get() | a.restorer.get() | a.mask.get() != 0 {
            actions.insert(names::signal(n), action(a));
        }
    }
    let pending: Vec<Value> = s
        .pending
        .iter()
        .map(|p| {
            let signo = p
                .siginfo
                .get(..4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            json!({
                "queue": kind(p.queue.get().into(), names::QUEUES),
                "signo": signal(signo.into()),
                "siginfo": hex(&p.siginfo),
            })
        })
        .collect();
    json!({ "signals": {
        "altstack": {
            "sp": x(s.raw.altstack_sp.get()),
            "size": n64(s.raw.altstack_size.get()),
            "flags": flags(s.raw.altstack_flags.get().into(), names::SS_FLAGS),
        },
        "actions": actions,
        "pending": pending,
    }})
}

/// The Timers record.
pub fn timers(t: &Timers<'_>) -> Value {
    let mut it = Map::new();
    for (name, i) in names::ITIMERS.iter().zip(t.raw.itimers.iter()) {
        it.insert(
            (*name).into(),
            json!({"interval_ns": n64(i.interval_ns.get()), "value_ns": n64(i.value_ns.get())}),
        );
    }
    let posix: Vec<Value> = t
        .posix
        .iter()
        .map(|p| {
            json!({
                "id": p.id.get(),
                "clock": kind(p.clock.get().into(), names::CLOCKS),
                "sigev_notify": kind(p.sigev_notify.get().into(), names::SIGEV),
                "sigev_signo": signal(p.sigev_signo.get().into()),
                "sigev_value": x(p.sigev_value.get()),
                "notify_tid": p.notify_tid.get(),
                "overrun": p.overrun.get(),
                "interval_ns": n64(p.interval_ns.get()),
                "value_ns": n64(p.value_ns.get()),
            })
        })
        .collect();
    json!({ "timers": { "itimers": it, "posix": posix } })
}

fn limit(v: u64) -> Value {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        n64(v)
    }
}

/// The Process record.
pub fn process(p: &Process<'_>) -> Value {
    let r = p.raw;
    let mut lim = Map::new();
    for (name, l) in names::RLIMITS.iter().zip(r.rlimits.iter()) {
        lim.insert(
            (*name).into(),
            json!({"soft": limit(l.cur.get()), "hard": limit(l.max.get())}),
        );
    }
    let groups: Vec<u32> = p.groups.iter().map(|g| g.get()).collect();
    json!({ "process": {
        "rlimits": lim,
        "timer_slack_ns": n64(r.timer_slack_ns.get()),
        "rseq_addr": x(r.rseq_addr.get()),
        "rseq_len": r.rseq_len.get(),
        "rseq_sig": x(r.rseq_sig.get().into()),
        "robust_list": x(r.robust_list.get()),
        "robust_list_len": n64(r.robust_list_len.get()),
        "clear_child_tid": x(r.clear_child_tid.get()),
        "cap_bounding": x(r.cap_bounding.get()),
        "cap_ambient": x(r.cap_ambient.get()),
        "securebits": x(r.securebits.get().into()),
        "pdeathsig": signal(r.pdeathsig.get().into()),
        "dumpable": r.dumpable.get(),
        "attr_flags": flags(r.attr_flags.get().into(), names::ATTR_FLAGS),
        "oom_score_adj": r.oom_score_adj.get() as i32,
        "seccomp_mode": kind(r.seccomp_mode.get().into(), names::SECCOMP),
        "groups": groups,
    }})
}

/// A VmaAttr record.
pub fn vma_attr(a: &raw::VmaAttr) -> Value {
    json!({ "vma_attr": flags(a.attrs.get().into(), names::VMA_ATTRS) })
}

// ---- back ----

fn str_or_int<'a>(v: &'a Value, path: &str) -> Result<Result<&'a str, u64>, String> {
    match v {
        Value::String(s) => Ok(Ok(s)),
        _ => int(v, path).map(Err),
    }
}

/// A flags field: a number, or names and numbers joined by `|`.
fn flags_from<T: TryFrom<u64>>(o: &Obj<'_>, k: &str, table: &[Flag]) -> Result<T, String> {
    let p = format!("{}.{k}", o.path);
    let bits = match str_or_int(o.get(k)?, &p)? {
        Ok(s) => names::parse_flags(s, table).map_err(|e| format!("{p}: {e}"))?,
        Err(n) => n,
    };
    T::try_from(bits).map_err(|_| format!("{p}: out of range"))
}

/// A kind field: its name or a number.
fn kind_from<T: TryFrom<u64>>(v: &Value, p: &str, table: Kinds) -> Result<T, String> {
    let n = match str_or_int(v, p)? {
        Ok(s) => names::parse_kind(s, table).ok_or_else(|| format!("{p}: unknown name {s:?}"))?,
        Err(n) => n,
    };
    T::try_from(n).map_err(|_| format!("{p}: out of range"))
}

fn signal_from<T: TryFrom<u64>>(v: &Value, p: &str) -> Result<T, String> {
    let n = match str_or_int(v, p)? {
        Ok(s) => names::parse_signal(s).ok_or_else(|| format!("{p}: not a signal: {s:?}"))?,
        Err(n) => n,
    };
    T::try_from(n).map_err(|_| format!("{p}: out of range"))
}

fn sigmask_from(v: &Value, p: &str) -> Result<u64, String> {
    let s = match str_or_int(v, p)? {
        Ok(s) => s,
        Err(n) => return Ok(n),
    };
    let mut mask = 0u64;
    for term in s.split('|').map(str::trim) {
        mask |= match names::parse_int(term) {
            Some(n) => n,
            None => {
                let n = names::parse_signal(term)
                    .ok_or_else(|| format!("{p}: not a signal: {term:?}"))?;
                1u64 << (n - 1)
            }
        };
    }
    Ok(mask)
}

fn pair(v: &Value, p: &str) -> Result<[u32; 2], String> {
    ints(v, p)
}

/// A `file` entry of `body`.
pub fn file_from(o: &Obj<'_>) -> Result<FileRepr, String> {
    let p = &o.path;
    let params: [u64; 8] = ints(o.get("params")?, &format!("{p}.params"))?;
    let [dev_major, dev_minor] = pair(o.get("dev")?, &format!("{p}.dev"))?;
    let [rdev_major, rdev_minor] = pair(o.get("rdev")?, &format!("{p}.rdev"))?;
    let contents_len = o.u64("contents_len").unwrap_or(0);
    let contents = match o.v.get("contents") {
        Some(_) => o
            .arr("contents")?
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cp = format!("{p}.contents[{i}]");
                unhex(c.as_str().ok_or(format!("{cp}: expected hex"))?, &cp)
            })
            .collect::<Result<Vec<_>, _>>()?,
        None if contents_len == 0 => Vec::new(),
        None => {
            return Err(format!(
                "{p}.contents: missing: the JSON must come from `show --json --with-pages`"
            ))
        }
    };
    Ok(FileRepr {
        fd: o.n("fd")?,
        role: kind_from(o.get("role")?, &format!("{p}.role"), names::ROLES)?,
        ftype: kind_from(o.get("type")?, &format!("{p}.type"), names::FILE_TYPES)?,
        flags: flags_from(o, "flags", names::FILE_FLAGS)?,
        fd_flags: flags_from(o, "fd_flags", names::FD_FLAGS)?,
        open_flags: flags_from(o, "open_flags", names::OPEN_FLAGS)?,
        mode: o.n("mode")?,
        pos: o.u64("pos")?,
        inode: o.u64("inode")?,
        size: o.u64("size")?,
        mtime_ns: o.u64("mtime_ns")?,
        dev_major,
        dev_minor,
        rdev_major,
        rdev_minor,
        dup_of: match o.get("dup_of")? {
            Value::Null => raw::DUP_NONE,
            _ => o.n("dup_of")?,
        },
        params,
        path: o.bytes("path")?,
        data: o.hex("data")?,
        contents,
    })
}

/// A `signals` entry of `body`.
pub fn signals_from(o: &Obj<'_>) -> Result<SignalsRepr, String> {
    let alt = o.obj("altstack")?;
    let mut actions = [SigActionRepr::default(); 64];
    let acts = o.obj("actions")?;
    for (name, v) in acts.v {
        let p = format!("{}.{name}", acts.path);
        let n: usize = signal_from(&Value::String(name.clone()), &p)?;
        let a = Obj::new(v, &p)?;
        let handler = match a.get("handler")?.as_str() {
            Some("SIG_DFL") => 0,
            Some("SIG_IGN") => 1,
            _ => a.u64("handler")?,
        };
        let slot = actions
            .get_mut(n.wrapping_sub(1))
            .ok_or_else(|| format!("{p}: not a signal"))?;
        *slot = SigActionRepr {
            handler,
            flags: flags_from(&a, "flags", names::SA_FLAGS)?,
            restorer: a.u64("restorer")?,
            mask: sigmask_from(a.get("mask")?, &format!("{p}.mask"))?,
        };
    }
    let mut pending = Vec::new();
    for (i, v) in o.arr("pending")?.iter().enumerate() {
        let p = Obj::new(v, &format!("{}.pending[{i}]", o.path))?;
        let si = p.hex("siginfo")?;
        pending.push(PendingSignalRepr {
            queue: kind_from(p.get("queue")?, &format!("{}.queue", p.path), names::QUEUES)?,
            siginfo: si
                .try_into()
                .map_err(|_| format!("{}.siginfo: expected 128 bytes", p.path))?,
        });
    }
    Ok(SignalsRepr {
        altstack_sp: alt.u64("sp")?,
        altstack_size: alt.u64("size")?,
        altstack_flags: flags_from(&alt, "flags", names::SS_FLAGS)?,
        actions,
        pending,
    })
}

/// A `timers` entry of `body`.
pub fn timers_from(o: &Obj<'_>) -> Result<TimersRepr, String> {
    let its = o.obj("itimers")?;
    let mut itimers = [ITimerRepr::default(); 3];
    for (slot, name) in itimers.iter_mut().zip(names::ITIMERS) {
        let i = its.obj(name)?;
        *slot = ITimerRepr {
            interval_ns: i.u64("interval_ns")?,
            value_ns: i.u64("value_ns")?,
        };
    }
    let mut posix = Vec::new();
    for (i, v) in o.arr("posix")?.iter().enumerate() {
        let t = Obj::new(v, &format!("{}.posix[{i}]", o.path))?;
        let tp = t.path.clone();
        posix.push(PosixTimerRepr {
            id: t.n("id")?,
            clock: kind_from(t.get("clock")?, &format!("{tp}.clock"), names::CLOCKS)?,
            sigev_notify: kind_from(
                t.get("sigev_notify")?,
                &format!("{tp}.sigev_notify"),
                names::SIGEV,
            )?,
            sigev_signo: signal_from(t.get("sigev_signo")?, &format!("{tp}.sigev_signo"))?,
            sigev_value: t.u64("sigev_value")?,
            notify_tid: t.n("notify_tid")?,
            overrun: t.n("overrun")?,
            interval_ns: t.u64("interval_ns")?,
            value_ns: t.u64("value_ns")?,
        });
    }
    Ok(TimersRepr { itimers, posix })
}

fn limit_from(o: &Obj<'_>, k: &str) -> Result<u64, String> {
    match o.get(k)?.as_str() {
        Some("unlimited") => Ok(u64::MAX),
        _ => o.u64(k),
    }
}

/// A `process` entry of `body`.
pub fn process_from(o: &Obj<'_>) -> Result<ProcessRepr, String> {
    let lims = o.obj("rlimits")?;
    let mut rlimits = [RlimitRepr::default(); raw::RLIMIT_COUNT];
    for (slot, name) in rlimits.iter_mut().zip(names::RLIMITS) {
        let l = lims.obj(name)?;
        *slot = RlimitRepr {
            cur: limit_from(&l, "soft")?,
            max: limit_from(&l, "hard")?,
        };
    }
    let p = &o.path;
    let oom = o
        .get("oom_score_adj")?
        .as_i64()
        .and_then(|v| i32::try_from(v).ok())
        .ok_or_else(|| format!("{p}.oom_score_adj: expected a 32-bit integer"))?;
    let mut groups = Vec::new();
    for (i, g) in o.arr("groups")?.iter().enumerate() {
        let gp = format!("{p}.groups[{i}]");
        groups.push(u32::try_from(int(g, &gp)?).map_err(|_| format!("{gp}: out of range"))?);
    }
    Ok(ProcessRepr {
        rlimits,
        timer_slack_ns: o.u64("timer_slack_ns")?,
        rseq_addr: o.u64("rseq_addr")?,
        rseq_len: o.n("rseq_len")?,
        rseq_sig: o.n("rseq_sig")?,
        robust_list: o.u64("robust_list")?,
        robust_list_len: o.u64("robust_list_len")?,
        clear_child_tid: o.u64("clear_child_tid")?,
        cap_bounding: o.u64("cap_bounding")?,
        cap_ambient: o.u64("cap_ambient")?,
        securebits: o.n("securebits")?,
        pdeathsig: signal_from(o.get("pdeathsig")?, &format!("{p}.pdeathsig"))?,
        dumpable: o.n("dumpable")?,
        attr_flags: flags_from(o, "attr_flags", names::ATTR_FLAGS)?,
        oom_score_adj: oom,
        seccomp_mode: kind_from(
            o.get("seccomp_mode")?,
            &format!("{p}.seccomp_mode"),
            names::SECCOMP,
        )?,
        groups,
    })
}

/// A `vma_attr` entry of `body` (`b` is the entry).
pub fn vma_attr_from(b: &Obj<'_>) -> Result<u32, String> {
    flags_from(b, "vma_attr", names::VMA_ATTRS)
}

// ---- the records of 1.2 ----

/// An Inotify record, its watches to be appended by [`inotify_watch`].
pub fn inotify(n: &raw::Inotify) -> Value {
    json!({ "inotify": {
        "fd": n.fd.get(),
        "fd_flags": flags(n.fd_flags.get().into(), names::FD_FLAGS),
        "open_flags": flags(n.open_flags.get().into(), names::OPEN_FLAGS),
        "dup_of": match n.dup_of.get() {
            raw::NO_DUP => Value::Null,
            d => d.into(),
        },
        "watches": [],
    }})
}

/// Appends an InotifyWatch record to the `inotify` entry before it (the last of `body`).
pub fn inotify_watch(body: &mut [Value], w: &InotifyWatch<'_>) {
    let Some(Value::Array(ws)) = body
        .last_mut()
        .and_then(|b| b.get_mut("inotify"))
        .and_then(|n| n.get_mut("watches"))
    else {
        return;
    };
    let r = w.raw;
    ws.push(json!({
        "wd": r.wd.get(),
        "mask": r.mask.get(),
        // Informative: `mask` is what encode reads.
        "events": names::flags(r.mask.get().into(), names::IN_FLAGS),
        "inode": n64(r.inode.get()),
        "dev": [r.dev_major.get(), r.dev_minor.get()],
        "path": bytes_value(w.path),
    }));
}

/// A Lock record.
pub fn lock(l: &raw::Lock) -> Value {
    json!({ "lock": {
        "fd": l.fd.get(),
        "type": kind(l.ltype.get().into(), names::LOCK_TYPES),
        "mode": kind(l.mode.get().into(), names::LOCK_MODES),
        "start": n64(l.start.get()),
        "len": n64(l.len.get()),
    }})
}

/// A VdsoData record: its length, and its bytes with `--with-pages`.
pub fn vdso_data(d: &VdsoData<'_>, with_pages: bool) -> Value {
    let mut o = Map::new();
    o.insert("len".into(), d.raw.len.get().into());
    if with_pages {
        o.insert("data".into(), hex(d.bytes).into());
    }
    json!({ "vdso_data": o })
}

/// An `inotify` entry of `body`, with its watches.
pub fn inotify_from(o: &Obj<'_>) -> Result<InotifyRepr, String> {
    let p = &o.path;
    let mut watches = Vec::new();
    for (i, w) in o.arr("watches")?.iter().enumerate() {
        let w = Obj::new(w, &format!("{p}.watches[{i}]"))?;
        let [dev_major, dev_minor] = pair(w.get("dev")?, &format!("{}.dev", w.path))?;
        watches.push(WatchRepr {
            wd: w.n("wd")?,
            mask: w.n("mask")?,
            inode: w.u64("inode")?,
            dev_major,
            dev_minor,
            path: w.bytes("path")?,
        });
    }
    Ok(InotifyRepr {
        fd: o.n("fd")?,
        fd_flags: flags_from(o, "fd_flags", names::FD_FLAGS)?,
        open_flags: flags_from(o, "open_flags", names::OPEN_FLAGS)?,
        dup_of: match o.get("dup_of")? {
            Value::Null => raw::NO_DUP,
            _ => o.n("dup_of")?,
        },
        watches,
    })
}

/// A `lock` entry of `body`.
pub fn lock_from(o: &Obj<'_>) -> Result<LockRepr, String> {
    let p = &o.path;
    Ok(LockRepr {
        fd: o.n("fd")?,
        ltype: kind_from(o.get("type")?, &format!("{p}.type"), names::LOCK_TYPES)?,
        mode: kind_from(o.get("mode")?, &format!("{p}.mode"), names::LOCK_MODES)?,
        start: o.u64("start")?,
        len: o.u64("len")?,
    })
}

/// A `vdso_data` entry of `body`: its bytes (only `show --json --with-pages` writes them).
pub fn vdso_data_from(o: &Obj<'_>) -> Result<Vec<u8>, String> {
    match o.v.get("data") {
        Some(_) => o.hex("data"),
        None => Err(format!(
            "{}.data: missing: the JSON must come from `show --json --with-pages`",
            o.path
        )),
    }
}
