//! The fields `diff` compares besides memory and VMA ranges: each image is flattened into
//! named values (`fd 3.pos`, `SIGINT.handler`, `RLIMIT_NOFILE.soft`, `xmm3`, `header.crid`, ...)
//! and the two lists are compared by name, so a field present in only one image shows as
//! `absent` on the other side.

use super::names::{self, kind_or_number};
use super::show::GPR_NAMES;
use cr_format::raw;
use cr_format::read::{Image, Record};
use std::collections::BTreeMap;

/// Named values, in a stable order.
type Fields = BTreeMap<String, String>;

/// Fields that name the image rather than the task (they differ between any two checkpoints):
/// listed by `diff`, but not a difference of the task's state.
pub fn is_identity(name: &str) -> bool {
    matches!(
        name,
        "header.crid"
            | "header.created"
            | "header.producer"
            | "header.parent_crid"
            | "header.parent_digest"
            | "header.diff_method"
            | "header.version"
            | "tail.digest"
            | "tail.image_len"
            | "tail.records"
    )
}

/// Compares every named field of `a` and `b`: (name, A's value, B's value) for each that differs.
pub fn compare(a: &Image<'_>, b: &Image<'_>) -> Vec<(String, String, String)> {
    let (fa, fb) = (flatten(a), flatten(b));
    let mut out = Vec::new();
    for (k, va) in &fa {
        match fb.get(k) {
            Some(vb) if vb == va => {}
            Some(vb) => out.push((k.clone(), va.clone(), vb.clone())),
            None => out.push((k.clone(), va.clone(), absent(k))),
        }
    }
    for (k, vb) in &fb {
        if !fa.contains_key(k) {
            out.push((k.clone(), absent(k), vb.clone()));
        }
    }
    // Identity first, then the task's fields, each in name order (BTreeMap order).
    out.sort_by_key(|(k, _, _)| !is_identity(k));
    out
}

/// What a field missing from one image means: a signal's disposition is listed only when it is
/// not the default.
fn absent(name: &str) -> String {
    if name.starts_with("SIG") && !name.contains('.') {
        "default".into()
    } else {
        "absent".into()
    }
}

fn put(f: &mut Fields, k: impl Into<String>, v: impl Into<String>) {
    f.insert(k.into(), v.into());
}

/// Bytes as hex when short, else their length and CRC-32.
fn blob(b: &[u8]) -> String {
    if b.len() <= 32 {
        b.iter().map(|x| format!("{x:02x}")).collect()
    } else {
        format!("{} bytes, crc32 {:#010x}", b.len(), crc32fast::hash(b))
    }
}

fn flatten(img: &Image<'_>) -> Fields {
    let mut f = Fields::new();
    header(&mut f, img);
    if let Some(t) = img.task() {
        task(&mut f, t);
    }
    if let Some(r) = img.regs() {
        for (i, n) in GPR_NAMES.iter().enumerate() {
            put(&mut f, *n, format!("{:#x}", r.gpr(i)));
        }
        put(&mut f, "xfeatures", format!("{:#x}", r.raw.xfeatures.get()));
        fxsave(&mut f, "", &r.raw.fxsave);
        xsave(&mut f, r.xsave);
    }
    if let Some(m) = img.mm() {
        mm(&mut f, &m);
    }
    let mut file_key = String::new();
    let mut contents: Vec<u8> = Vec::new();
    let mut vma_start = 0u64;
    let mut inotify_fd = 0u32;
    for r in img.records() {
        match r.record {
            Record::File(x) => {
                flush_contents(&mut f, &file_key, &mut contents);
                file_key = match x.role() {
                    raw::ROLE_FD => format!("fd {}", x.raw.fd.get()),
                    r => kind_or_number(r.into(), names::ROLES),
                };
                file(&mut f, &file_key, &x);
            }
            Record::FileData(d) => contents.extend_from_slice(d.bytes),
            Record::Signals(s) => signals(&mut f, &s),
            Record::Timers(t) => timers(&mut f, &t),
            Record::Process(p) => process(&mut f, &p),
            Record::Vma(v) => vma_start = v.start(),
            Record::VmaAttr(a) => put(
                &mut f,
                format!("vma {vma_start:#x}.attrs"),
                names::flags(a.attrs.get().into(), names::VMA_ATTRS),
            ),
            Record::Inotify(n) => {
                inotify_fd = n.fd.get();
                inotify(&mut f, n);
            }
            Record::InotifyWatch(w) => watch(&mut f, inotify_fd, &w),
            Record::Lock(l) => lock(&mut f, l),
            Record::VdsoData(d) => put(&mut f, "vdso.bytes", blob(d.bytes)),
            _ => {}
        }
    }
    flush_contents(&mut f, &file_key, &mut contents);
    f
}

fn inotify(f: &mut Fields, n: &raw::Inotify) {
    let k = format!("inotify fd {}", n.fd.get());
    let fl = names::flags(n.fd_flags.get().into(), names::FD_FLAGS);
    put(f, format!("{k}.fd_flags"), fl);
    let fl = names::flags(n.open_flags.get().into(), names::OPEN_FLAGS);
    put(f, format!("{k}.open_flags"), fl);
    let dup = match n.dup_of.get() {
        raw::NO_DUP => "none".to_string(),
        d => format!("fd {d}"),
    };
    put(f, format!("{k}.dup_of"), dup);
}

fn watch(f: &mut Fields, fd: u32, w: &cr_format::read::InotifyWatch<'_>) {
    let k = format!("inotify fd {fd}.wd {}", w.wd());
    put(
        f,
        format!("{k}.mask"),
        names::flags(w.mask().into(), names::IN_FLAGS),
    );
    put(f, format!("{k}.path"), String::from_utf8_lossy(w.path));
    put(f, format!("{k}.inode"), w.raw.inode.get().to_string());
    let dev = format!("{}:{}", w.raw.dev_major.get(), w.raw.dev_minor.get());
    put(f, format!("{k}.dev"), dev);
}

/// A lock, named by what it covers; its value is its mode.
fn lock(f: &mut Fields, l: &raw::Lock) {
    let k = format!(
        "lock fd {} {} {}+{}",
        l.fd.get(),
        kind_or_number(l.ltype.get().into(), names::LOCK_TYPES),
        l.start.get(),
        l.len.get()
    );
    put(f, k, kind_or_number(l.mode.get().into(), names::LOCK_MODES));
}

fn flush_contents(f: &mut Fields, key: &str, c: &mut Vec<u8>) {
    if !c.is_empty() {
        put(f, format!("{key}.contents"), blob(c));
        c.clear();
    }
}

fn header(f: &mut Fields, img: &Image<'_>) {
    let h = img.header();
    put(f, "header.crid", h.crid.get().to_string());
    put(f, "header.parent_crid", h.parent_crid.get().to_string());
    put(
        f,
        "header.parent_digest",
        names::digest(h.parent_digest.get()),
    );
    put(f, "header.created", names::utc(h.created_ns.get()));
    put(
        f,
        "header.version",
        format!("{}.{}", h.version_major.get(), h.version_minor.get()),
    );
    put(
        f,
        "header.diff_method",
        kind_or_number(h.diff_method.get().into(), names::DIFF_METHODS),
    );
    let end = h.producer.iter().position(|&c| c == 0).unwrap_or(32);
    put(
        f,
        "header.producer",
        String::from_utf8_lossy(h.producer.get(..end).unwrap_or(&[])),
    );
    put(
        f,
        "header.arch",
        kind_or_number(h.arch.get().into(), names::ARCHES),
    );
    put(f, "header.page_size", h.page_size.get().to_string());
    let t = img.tail();
    put(f, "tail.digest", names::digest(t.digest.get()));
    put(f, "tail.image_len", t.image_len.get().to_string());
    put(f, "tail.records", t.record_count.get().to_string());
}

fn task(f: &mut Fields, t: &raw::Task) {
    for (k, v) in [
        ("pid", t.pid.get()),
        ("tgid", t.tgid.get()),
        ("ppid", t.ppid.get()),
        ("pgid", t.pgid.get()),
        ("sid", t.sid.get()),
        ("exit_signal", t.exit_signal.get()),
        ("personality", t.personality.get()),
    ] {
        put(f, format!("task.{k}"), v.to_string());
    }
    put(f, "task.state", char::from(t.state).to_string());
    put(f, "task.umask", format!("{:04o}", t.umask.get()));
    for (k, v) in [
        ("sig_blocked", t.sig_blocked.get()),
        ("sig_ignored", t.sig_ignored.get()),
        ("sig_caught", t.sig_caught.get()),
        ("sig_pending", t.sig_pending.get()),
        ("sig_shared_pending", t.sig_shared_pending.get()),
    ] {
        put(f, format!("task.{k}"), names::sigmask(v));
    }
    for (k, v) in [
        ("cap_inheritable", t.cap_inheritable.get()),
        ("cap_permitted", t.cap_permitted.get()),
        ("cap_effective", t.cap_effective.get()),
    ] {
        put(f, format!("task.{k}"), format!("{v:#x}"));
    }
    put(f, "task.uid", format!("{:?}", t.uid.map(|v| v.get())));
    put(f, "task.gid", format!("{:?}", t.gid.map(|v| v.get())));
    let end = t.comm.iter().position(|&c| c == 0).unwrap_or(16);
    put(
        f,
        "task.comm",
        String::from_utf8_lossy(t.comm.get(..end).unwrap_or(&[])),
    );
}

/// The legacy FXSAVE area by field (Intel SDM vol. 1, table 10-2): `prefix` is empty for the
/// Regs record's own copy, `xsave.` inside the XSAVE area.
fn fxsave(f: &mut Fields, prefix: &str, b: &[u8]) {
    let field = |at: usize, len: usize| blob(b.get(at..at + len).unwrap_or(&[]));
    for (name, at, len) in [
        ("fcw", 0, 2),
        ("fsw", 2, 2),
        ("ftw", 4, 1),
        ("fop", 6, 2),
        ("fip", 8, 8),
        ("fdp", 16, 8),
        ("mxcsr", 24, 4),
        ("mxcsr_mask", 28, 4),
    ] {
        put(f, format!("{prefix}{name}"), field(at, len));
    }
    for i in 0..8 {
        put(f, format!("{prefix}st{i}"), field(32 + 16 * i, 10));
    }
    for i in 0..16 {
        put(f, format!("{prefix}xmm{i}"), field(160 + 16 * i, 16));
    }
}

/// The XSAVE area: its legacy part by field, the header, the upper halves of the YMM
/// registers, and anything beyond in 64-byte pieces by offset.
fn xsave(f: &mut Fields, b: &[u8]) {
    if b.len() < 576 {
        put(f, "xsave", blob(b));
        return;
    }
    fxsave(f, "xsave.", b);
    put(f, "xsave.xstate_bv", blob(b.get(512..520).unwrap_or(&[])));
    put(f, "xsave.xcomp_bv", blob(b.get(520..528).unwrap_or(&[])));
    for i in 0..16 {
        let at = 576 + 16 * i;
        if let Some(x) = b.get(at..at + 16) {
            put(f, format!("xsave.ymm{i}_hi"), blob(x));
        }
    }
    for (i, c) in b.get(832..).unwrap_or(&[]).chunks(64).enumerate() {
        put(f, format!("xsave[{:#x}]", 832 + 64 * i), blob(c));
    }
}

fn mm(f: &mut Fields, m: &cr_format::read::Mm<'_>) {
    let r = m.raw;
    for (k, v) in [
        ("start_code", r.start_code.get()),
        ("end_code", r.end_code.get()),
        ("start_data", r.start_data.get()),
        ("end_data", r.end_data.get()),
        ("start_brk", r.start_brk.get()),
        ("brk", r.brk.get()),
        ("start_stack", r.start_stack.get()),
        ("arg_start", r.arg_start.get()),
        ("arg_end", r.arg_end.get()),
        ("env_start", r.env_start.get()),
        ("env_end", r.env_end.get()),
    ] {
        put(f, format!("mm.{k}"), format!("{v:#x}"));
    }
    put(f, "mm.exe", String::from_utf8_lossy(m.exe));
    for e in m.auxv {
        put(
            f,
            format!("mm.auxv[{}]", e.key.get()),
            format!("{:#x}", e.value.get()),
        );
    }
}

fn file(f: &mut Fields, key: &str, x: &cr_format::read::File<'_>) {
    let r = x.raw;
    let mut p = |k: &str, v: String| put(f, format!("{key}.{k}"), v);
    p(
        "type",
        kind_or_number(r.ftype.get().into(), names::FILE_TYPES),
    );
    p("path", String::from_utf8_lossy(x.path).into_owned());
    p(
        "flags",
        names::flags(r.flags.get().into(), names::FILE_FLAGS),
    );
    p(
        "fd_flags",
        names::flags(r.fd_flags.get().into(), names::FD_FLAGS),
    );
    p(
        "open_flags",
        names::flags(r.open_flags.get().into(), names::OPEN_FLAGS),
    );
    p("mode", format!("{:o}", r.mode.get()));
    p("pos", r.pos.get().to_string());
    p("inode", r.inode.get().to_string());
    p("size", r.size.get().to_string());
    p("mtime", names::utc(r.mtime_ns.get()));
    p(
        "dev",
        format!("{}:{}", r.dev_major.get(), r.dev_minor.get()),
    );
    p(
        "rdev",
        format!("{}:{}", r.rdev_major.get(), r.rdev_minor.get()),
    );
    p(
        "dup_of",
        match r.dup_of.get() {
            raw::DUP_NONE => "none".into(),
            d => d.to_string(),
        },
    );
    for (i, v) in r.params.iter().enumerate() {
        p(&format!("params[{i}]"), format!("{:#x}", v.get()));
    }
    p("data", blob(x.data));
}

fn signals(f: &mut Fields, s: &cr_format::read::Signals<'_>) {
    // One field per signal whose disposition is not the default (see `absent`).
    for (n, a) in (1u64..).zip(s.raw.actions.iter()) {
        if a.handler.get() | a.flags.get() | a.restorer.get() | a.mask.get() == 0 {
            continue;
        }
        put(
            f,
            names::signal(n),
            format!(
                "handler {:#x} flags {} mask {} restorer {:#x}",
                a.handler.get(),
                names::flags(a.flags.get(), names::SA_FLAGS),
                names::sigmask(a.mask.get()),
                a.restorer.get()
            ),
        );
    }
    put(f, "altstack.sp", format!("{:#x}", s.raw.altstack_sp.get()));
    put(f, "altstack.size", s.raw.altstack_size.get().to_string());
    put(
        f,
        "altstack.flags",
        names::flags(s.raw.altstack_flags.get().into(), names::SS_FLAGS),
    );
    for (i, p) in s.pending.iter().enumerate() {
        put(
            f,
            format!("pending[{i}]"),
            format!(
                "{} queue, siginfo {}",
                kind_or_number(p.queue.get().into(), names::QUEUES),
                blob(&p.siginfo)
            ),
        );
    }
}

fn timers(f: &mut Fields, t: &cr_format::read::Timers<'_>) {
    for (name, i) in names::ITIMERS.iter().zip(t.raw.itimers.iter()) {
        put(
            f,
            *name,
            format!(
                "next in {} ns, every {} ns",
                i.value_ns.get(),
                i.interval_ns.get()
            ),
        );
    }
    for p in t.posix {
        put(
            f,
            format!("posix timer {}", p.id.get()),
            format!(
                "{} next in {} ns, every {} ns, notify {} signal {} value {:#x} tid {} overrun {}",
                kind_or_number(p.clock.get().into(), names::CLOCKS),
                p.value_ns.get(),
                p.interval_ns.get(),
                kind_or_number(p.sigev_notify.get().into(), names::SIGEV),
                p.sigev_signo.get(),
                p.sigev_value.get(),
                p.notify_tid.get(),
                p.overrun.get()
            ),
        );
    }
}

fn process(f: &mut Fields, p: &cr_format::read::Process<'_>) {
    let r = p.raw;
    for (name, l) in names::RLIMITS.iter().zip(r.rlimits.iter()) {
        put(f, format!("{name}.soft"), names::limit(l.cur.get()));
        put(f, format!("{name}.hard"), names::limit(l.max.get()));
    }
    for (k, v) in [
        ("timer_slack_ns", r.timer_slack_ns.get()),
        ("robust_list_len", r.robust_list_len.get()),
        ("rseq_len", r.rseq_len.get().into()),
        ("dumpable", r.dumpable.get().into()),
    ] {
        put(f, format!("process.{k}"), v.to_string());
    }
    for (k, v) in [
        ("rseq_addr", r.rseq_addr.get()),
        ("rseq_sig", r.rseq_sig.get().into()),
        ("robust_list", r.robust_list.get()),
        ("clear_child_tid", r.clear_child_tid.get()),
        ("cap_bounding", r.cap_bounding.get()),
        ("cap_ambient", r.cap_ambient.get()),
        ("securebits", r.securebits.get().into()),
    ] {
        put(f, format!("process.{k}"), format!("{v:#x}"));
    }
    put(f, "process.pdeathsig", r.pdeathsig.get().to_string());
    put(
        f,
        "process.attributes",
        names::flags(r.attr_flags.get().into(), names::ATTR_FLAGS),
    );
    put(
        f,
        "process.oom_score_adj",
        (r.oom_score_adj.get() as i32).to_string(),
    );
    put(
        f,
        "process.seccomp",
        kind_or_number(r.seccomp_mode.get().into(), names::SECCOMP),
    );
    let g: Vec<String> = p.groups.iter().map(|g| g.get().to_string()).collect();
    put(f, "process.groups", g.join(" "));
}
