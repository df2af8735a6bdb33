//! The JSON form of an image (`show --json`) and back (`encode`).
//!
//! Schema `cr-image/1` (documented in `spec/JSON.md`): an object with `schema`, `header`, `task`,
//! `regs`, `mm`, `body` (VMAs, Pages and unknown records in image order) and `tail`. Integers
//! are JSON numbers, except addresses, masks and digests, written as `"0x…"` strings; the reader
//! takes either form for any integer. Byte strings (paths, comm, producer) are JSON strings when
//! they are UTF-8 without NUL, else `{"hex": "…"}`. Page data and other binary areas are hex.
//! Page data appears only with `--with-pages`; an image can be encoded back only from JSON that
//! has it. Encoding goes through `cr_format::repr`, so the result is checked like any image
//! and is byte-identical to the original.

use super::json_value::*;
use super::names;
use cr_format::raw::{self, FXSAVE_LEN, X86_64_GPR_COUNT};
use cr_format::read::{Image, Record, RunKind};
use cr_format::repr::*;
use serde_json::{json, Map, Value};

pub use super::json_value::MAX_EXACT;

/// Schema name and version written in every document.
pub const SCHEMA: &str = "cr-image/1";

fn regs_json(r: &cr_format::read::Regs<'_>) -> Value {
    let mut gpr = Map::new();
    for (name, v) in super::show::GPR_NAMES.iter().zip(r.raw.gpr.iter()) {
        gpr.insert((*name).to_string(), x(v.get()));
    }
    json!({
        "arch": named(r.raw.arch.get().into(), names::ARCHES),
        "xfeatures": x(r.raw.xfeatures.get()),
        "gpr": gpr,
        "fxsave": hex(&r.raw.fxsave),
        "xsave": hex(r.xsave),
    })
}

/// The JSON document of an image. Without `with_pages`, data runs carry no data.
pub fn to_json(img: &Image<'_>, with_pages: bool) -> Value {
    let mut b = JsonBuilder::new(with_pages);
    for r in img.records() {
        b.record(&r);
    }
    b.finish()
}

/// `show --json`: the document of the image read from a seekable reader, metadata only (every
/// record is checked, page data is skipped by seeking). `path` names the image in errors.
pub fn read_metadata(
    r: impl std::io::Read + std::io::Seek,
    path: &std::path::Path,
) -> crate::Result<Value> {
    let mut b = JsonBuilder::new(false);
    super::show::stream_metadata(r, path, |r| b.record(r))?;
    Ok(b.finish())
}

/// `show --json --with-pages`: the document of the image in `bytes`, page data included, after
/// every check (data CRCs included). `path` names the image in errors.
pub fn with_pages(bytes: &[u8], path: &std::path::Path) -> crate::Result<Value> {
    let img =
        Image::parse(bytes).map_err(|e| crate::Error::Other(format!("{}: {e}", path.display())))?;
    Ok(to_json(&img, true))
}

/// A document as `show --json` prints it: indented, with a final newline.
pub fn pretty(doc: &Value) -> crate::Result<String> {
    let mut s =
        serde_json::to_string_pretty(doc).map_err(|e| crate::Error::Other(format!("JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// `encode`, first half: JSON text (any bytes) to an image's owned form.
pub fn decode(text: &[u8]) -> Result<ImageRepr, String> {
    let doc: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    from_json(&doc)
}

/// `encode`, second half: writes the image to `out`. The writer checks it like any image, so
/// a document that describes an invalid image is refused here.
pub fn encode(
    repr: &ImageRepr,
    out: &mut dyn std::io::Write,
) -> crate::Result<cr_format::write::Summary> {
    repr.emit(cr_format::write::IoSink::new(out))
        .map_err(|e| crate::Error::Other(format!("the image the JSON describes is invalid: {e}")))
}

/// Builds the JSON document record by record (so a streamed image needs no second pass).
pub struct JsonBuilder {
    doc: Map<String, Value>,
    body: Vec<Value>,
    with_pages: bool,
}

impl JsonBuilder {
    /// An empty document; `with_pages` includes page data (records must then carry it).
    pub fn new(with_pages: bool) -> Self {
        let mut doc = Map::new();
        doc.insert("schema".into(), SCHEMA.into());
        JsonBuilder {
            doc,
            body: Vec::new(),
            with_pages,
        }
    }

    /// The document.
    pub fn finish(mut self) -> Value {
        self.doc.insert("body".into(), self.body.into());
        Value::Object(self.doc)
    }

    /// Takes in one record.
    pub fn record(&mut self, r: &cr_format::read::Parsed<'_>) {
        let (doc, body, with_pages) = (&mut self.doc, &mut self.body, self.with_pages);
        match r.record {
            Record::Header(h) => {
                doc.insert(
                    "header".into(),
                    json!({
                        "version": [h.version_major.get(), h.version_minor.get()],
                        "arch": named(h.arch.get().into(), names::ARCHES),
                        "page_size": h.page_size.get(),
                        "crid": n64(h.crid.get()),
                        "parent_crid": n64(h.parent_crid.get()),
                        "parent_digest": names::digest(h.parent_digest.get()),
                        "created_ns": n64(h.created_ns.get()),
                        "diff_method": named(h.diff_method.get().into(), names::DIFF_METHODS),
                        "producer": padded_value(&h.producer),
                    }),
                );
            }
            Record::Task(t) => {
                doc.insert(
                    "task".into(),
                    json!({
                        "pid": t.pid.get(), "tgid": t.tgid.get(), "ppid": t.ppid.get(),
                        "pgid": t.pgid.get(), "sid": t.sid.get(),
                        "state": char::from(t.state).to_string(),
                        "exit_signal": t.exit_signal.get(), "personality": x(t.personality.get().into()),
                        "uid": t.uid.map(|v| v.get()), "gid": t.gid.map(|v| v.get()),
                        "sig_blocked": x(t.sig_blocked.get()), "sig_ignored": x(t.sig_ignored.get()),
                        "sig_caught": x(t.sig_caught.get()), "sig_pending": x(t.sig_pending.get()),
                        "sig_shared_pending": x(t.sig_shared_pending.get()),
                        "cap_inheritable": x(t.cap_inheritable.get()),
                        "cap_permitted": x(t.cap_permitted.get()),
                        "cap_effective": x(t.cap_effective.get()),
                        "comm": padded_value(&t.comm),
                        "umask": x(t.umask.get().into()),
                    }),
                );
            }
            Record::Regs(r) => {
                doc.insert("regs".into(), regs_json(&r));
            }
            Record::Mm(m) => {
                let f = m.raw;
                doc.insert(
                    "mm".into(),
                    json!({
                        "start_code": x(f.start_code.get()), "end_code": x(f.end_code.get()),
                        "start_data": x(f.start_data.get()), "end_data": x(f.end_data.get()),
                        "start_brk": x(f.start_brk.get()), "brk": x(f.brk.get()),
                        "start_stack": x(f.start_stack.get()),
                        "arg_start": x(f.arg_start.get()), "arg_end": x(f.arg_end.get()),
                        "env_start": x(f.env_start.get()), "env_end": x(f.env_end.get()),
                        "auxv": m.auxv.iter().map(|e| json!([n64(e.key.get()), x(e.value.get())])).collect::<Vec<_>>(),
                        "exe": bytes_value(m.exe),
                    }),
                );
            }
            Record::Vma(v) => {
                let w = v.raw;
                body.push(json!({ "vma": {
                    "start": x(w.start.get()), "end": x(w.end.get()),
                    "prot": names::prot(w.prot.get().into()),
                    "flags": names::flags(w.flags.get().into(), names::VMA_FLAGS),
                    "kind": named(w.kind.get().into(), names::VMA_KINDS),
                    "offset": x(w.offset.get()), "dev": [w.dev_major.get(), w.dev_minor.get()],
                    "inode": n64(w.inode.get()), "file_size": n64(w.file_size.get()),
                    "file_mtime_ns": n64(w.file_mtime_ns.get()),
                    "path": bytes_value(v.path),
                }}));
            }
            Record::Pages(p) => {
                let runs: Vec<Value> = p
                    .iter()
                    .map(|r| {
                        let kind = match r.kind {
                            RunKind::Data => "data",
                            RunKind::Zero => "zero",
                            RunKind::Parent => "parent",
                        };
                        json!({ "addr": x(r.addr), "pages": r.pages, "kind": kind })
                    })
                    .collect();
                let mut o = Map::new();
                o.insert("runs".into(), runs.into());
                o.insert("data_offset".into(), x(p.data_offset));
                o.insert("data_len".into(), n64(p.data_len()));
                if with_pages {
                    o.insert("data".into(), hex(p.data.unwrap_or(&[])).into());
                }
                body.push(json!({ "pages": o }));
            }
            Record::Unknown(u) => {
                body.push(json!({ "unknown": { "kind": u.kind, "payload": hex(u.payload) } }));
            }
            Record::File(f) => {
                let contents: Option<&[Vec<u8>]> = with_pages.then_some(&[]);
                body.push(super::json_state::file(&f, contents, 0));
            }
            Record::FileData(d) => file_data(body, d.bytes, with_pages),
            Record::Signals(s) => body.push(super::json_state::signals(&s)),
            Record::Timers(t) => body.push(super::json_state::timers(&t)),
            Record::Process(p) => body.push(super::json_state::process(&p)),
            Record::VmaAttr(a) => body.push(super::json_state::vma_attr(a)),
            Record::Inotify(n) => body.push(super::json_state::inotify(n)),
            Record::InotifyWatch(w) => super::json_state::inotify_watch(body, &w),
            Record::Lock(l) => body.push(super::json_state::lock(l)),
            Record::VdsoData(d) => body.push(super::json_state::vdso_data(&d, with_pages)),
            Record::Tail(t) => {
                doc.insert(
                    "tail".into(),
                    json!({
                        "records": n64(t.record_count.get()),
                        "image_len": n64(t.image_len.get()),
                        "digest": names::digest(t.digest.get()),
                    }),
                );
            }
        }
    }
}

/// Adds a FileData record's bytes to the File entry before it: its length to `contents_len`, and
/// the bytes to `contents` when page data is wanted.
fn file_data(body: &mut [Value], bytes: &[u8], with_pages: bool) {
    let Some(f) = body.last_mut().and_then(|b| b.get_mut("file")) else {
        return;
    };
    let len = f
        .get("contents_len")
        .and_then(|v| int(v, "").ok())
        .unwrap_or(0);
    let add = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    f["contents_len"] = n64(len.saturating_add(add));
    if with_pages {
        if let Some(Value::Array(c)) = f.get_mut("contents") {
            c.push(hex(bytes).into());
        }
    }
}

/// Reads a `cr-image/1` document into an image's owned form.
pub fn from_json(doc: &Value) -> Result<ImageRepr, String> {
    let d = Obj::new(doc, "$")?;
    match d.get("schema")?.as_str() {
        Some(SCHEMA) => {}
        s => return Err(format!("$.schema: expected {SCHEMA:?}, found {s:?}")),
    }
    let header = header_from(&d)?;
    let task = task_from(&d)?;
    let regs = regs_from(&d)?;
    let mm = mm_from(&d)?;
    let mut body = Vec::new();
    for (i, b) in d.arr("body")?.iter().enumerate() {
        body.push(body_from(b, &format!("$.body[{i}]"))?);
    }
    Ok(ImageRepr {
        header,
        task,
        regs,
        mm,
        body,
    })
}

fn header_from(d: &Obj<'_>) -> Result<HeaderRepr, String> {
    let h = d.obj("header")?;
    let version: [u16; 2] = ints(h.get("version")?, "$.header.version")?;
    if version[0] != raw::VERSION_MAJOR {
        return Err(format!("$.header.version: major {} is not 1", version[0]));
    }
    Ok(HeaderRepr {
        version_minor: version[1],
        arch: h.kind("arch", names::ARCHES)?,
        page_size: h.n("page_size")?,
        crid: h.u64("crid")?,
        parent_crid: h.u64("parent_crid")?,
        parent_digest: h.u64("parent_digest")?,
        created_ns: h.u64("created_ns")?,
        diff_method: h.kind("diff_method", names::DIFF_METHODS)?,
        producer: padded(h.get("producer")?, "$.header.producer")?,
    })
}

fn task_from(d: &Obj<'_>) -> Result<TaskRepr, String> {
    let t = d.obj("task")?;
    let state = t.bytes("state")?;
    Ok(TaskRepr {
        pid: t.n("pid")?,
        tgid: t.n("tgid")?,
        ppid: t.n("ppid")?,
        pgid: t.n("pgid")?,
        sid: t.n("sid")?,
        state: match state.as_slice() {
            [c] => *c,
            _ => return Err("$.task.state: expected one letter".into()),
        },
        exit_signal: t.n("exit_signal")?,
        personality: t.n("personality")?,
        uid: ints(t.get("uid")?, "$.task.uid")?,
        gid: ints(t.get("gid")?, "$.task.gid")?,
        sig_blocked: t.u64("sig_blocked")?,
        sig_ignored: t.u64("sig_ignored")?,
        sig_caught: t.u64("sig_caught")?,
        sig_pending: t.u64("sig_pending")?,
        sig_shared_pending: t.u64("sig_shared_pending")?,
        cap_inheritable: t.u64("cap_inheritable")?,
        cap_permitted: t.u64("cap_permitted")?,
        cap_effective: t.u64("cap_effective")?,
        comm: padded(t.get("comm")?, "$.task.comm")?,
        umask: t.n("umask")?,
    })
}

fn regs_from(d: &Obj<'_>) -> Result<RegsRepr, String> {
    let r = d.obj("regs")?;
    let g = r.obj("gpr")?;
    let mut gpr = [0u64; X86_64_GPR_COUNT];
    for (v, name) in gpr.iter_mut().zip(super::show::GPR_NAMES) {
        *v = g.u64(name)?;
    }
    let fx = r.hex("fxsave")?;
    let fxsave: [u8; FXSAVE_LEN] = fx
        .try_into()
        .map_err(|_| format!("$.regs.fxsave: expected {FXSAVE_LEN} bytes"))?;
    Ok(RegsRepr {
        arch: r.kind("arch", names::ARCHES)?,
        xfeatures: r.u64("xfeatures")?,
        gpr,
        fxsave,
        xsave: r.hex("xsave")?,
    })
}

fn mm_from(d: &Obj<'_>) -> Result<MmRepr, String> {
    let m = d.obj("mm")?;
    let mut auxv = Vec::new();
    for (i, e) in m.arr("auxv")?.iter().enumerate() {
        let [k, v]: [u64; 2] = ints(e, &format!("$.mm.auxv[{i}]"))?;
        auxv.push((k, v));
    }
    Ok(MmRepr {
        start_code: m.u64("start_code")?,
        end_code: m.u64("end_code")?,
        start_data: m.u64("start_data")?,
        end_data: m.u64("end_data")?,
        start_brk: m.u64("start_brk")?,
        brk: m.u64("brk")?,
        start_stack: m.u64("start_stack")?,
        arg_start: m.u64("arg_start")?,
        arg_end: m.u64("arg_end")?,
        env_start: m.u64("env_start")?,
        env_end: m.u64("env_end")?,
        auxv,
        exe: m.bytes("exe")?,
    })
}

/// One element of `body`: a state record, a VMA, its attributes, a Pages record or an unknown
/// record.
fn body_from(b: &Value, p: &str) -> Result<BodyRepr, String> {
    let o = Obj::new(b, p)?;
    if let Ok(v) = o.obj("vma") {
        let dev: [u32; 2] = ints(v.get("dev")?, &format!("{p}.vma.dev"))?;
        Ok(BodyRepr::Vma(VmaRepr {
            start: v.u64("start")?,
            end: v.u64("end")?,
            offset: v.u64("offset")?,
            inode: v.u64("inode")?,
            file_size: v.u64("file_size")?,
            file_mtime_ns: v.u64("file_mtime_ns")?,
            dev_major: dev[0],
            dev_minor: dev[1],
            prot: v.prot("prot")?,
            flags: v.flags("flags", names::VMA_FLAGS)?,
            kind: v.kind("kind", names::VMA_KINDS)?,
            path: v.bytes("path")?,
        }))
    } else if let Ok(pg) = o.obj("pages") {
        let mut runs = Vec::new();
        for (j, r) in pg.arr("runs")?.iter().enumerate() {
            let ro = Obj::new(r, &format!("{p}.pages.runs[{j}]"))?;
            let kind = match ro.get("kind")?.as_str() {
                Some("data") => RunKind::Data,
                Some("zero") => RunKind::Zero,
                Some("parent") => RunKind::Parent,
                _ => {
                    return Err(format!(
                        "{}.kind: expected \"data\", \"zero\" or \"parent\"",
                        ro.path
                    ))
                }
            };
            runs.push(RunRepr {
                addr: ro.u64("addr")?,
                pages: ro.n("pages")?,
                kind,
            });
        }
        let data = match pg.v.get("data") {
            Some(_) => pg.hex("data")?,
            None if runs.iter().all(|r| r.kind != RunKind::Data) => Vec::new(),
            None => {
                return Err(format!(
                    "{p}.pages.data: missing: the JSON must come from `show --json --with-pages`"
                ))
            }
        };
        Ok(BodyRepr::Pages(PagesRepr { runs, data }))
    } else if let Ok(f) = o.obj("file") {
        Ok(BodyRepr::File(super::json_state::file_from(&f)?))
    } else if let Ok(x) = o.obj("signals") {
        Ok(BodyRepr::Signals(Box::new(
            super::json_state::signals_from(&x)?,
        )))
    } else if let Ok(x) = o.obj("timers") {
        Ok(BodyRepr::Timers(super::json_state::timers_from(&x)?))
    } else if let Ok(x) = o.obj("process") {
        Ok(BodyRepr::Process(super::json_state::process_from(&x)?))
    } else if let Ok(x) = o.obj("inotify") {
        Ok(BodyRepr::Inotify(super::json_state::inotify_from(&x)?))
    } else if let Ok(x) = o.obj("lock") {
        Ok(BodyRepr::Lock(super::json_state::lock_from(&x)?))
    } else if let Ok(x) = o.obj("vdso_data") {
        Ok(BodyRepr::VdsoData(super::json_state::vdso_data_from(&x)?))
    } else if o.v.contains_key("vma_attr") {
        Ok(BodyRepr::VmaAttr(super::json_state::vma_attr_from(&o)?))
    } else if let Ok(u) = o.obj("unknown") {
        Ok(BodyRepr::Unknown {
            kind: u.n("kind")?,
            payload: u.hex("payload")?,
        })
    } else {
        Err(format!(
            "{p}: expected one of {{\"vma\"}}, {{\"vma_attr\"}}, {{\"pages\"}}, {{\"file\"}}, \
             {{\"signals\"}}, {{\"timers\"}}, {{\"process\"}}, {{\"unknown\"}}"
        ))
    }
}
