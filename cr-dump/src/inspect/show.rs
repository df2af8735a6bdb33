//! `cr-dump show`: a text rendering of one image (header, task, registers, mm, and a maps-like
//! VMA table with page counts per VMA). Reads through `cr_format::read::Image::parse_metadata`.

use cr_format::raw;
use cr_format::read::{Image, Parsed, Record, RunKind};
use std::fmt::Write as _;

/// Register names in `NT_PRSTATUS` order.
pub const GPR_NAMES: [&str; raw::X86_64_GPR_COUNT] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs",
    "gs",
];

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or(&[])).into_owned()
}

/// The name of a `VMA_*` kind.
pub fn vma_kind_name(k: u16) -> &'static str {
    match k {
        raw::VMA_ANON => "anon",
        raw::VMA_FILE => "file",
        raw::VMA_HEAP => "heap",
        raw::VMA_STACK => "stack",
        raw::VMA_VDSO => "vdso",
        raw::VMA_VVAR => "vvar",
        raw::VMA_VSYSCALL => "vsyscall",
        _ => "?",
    }
}

pub use super::names::utc;

/// Page counts of one VMA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pages stored with data.
    pub data: u64,
    /// Zero pages.
    pub zero: u64,
    /// Pages unchanged since the parent.
    pub parent: u64,
}

/// One VMA of the table.
#[derive(Clone, Debug)]
struct VmaShown {
    raw: raw::Vma,
    path: Vec<u8>,
    counts: Counts,
    /// The VmaAttr record's bits, if the image has one for this VMA.
    attrs: Option<u32>,
}

/// What `show` prints, gathered in one pass over the records: metadata only, so an image is read
/// with time and memory that do not grow with its page data.
#[derive(Clone, Debug, Default)]
pub struct Shown {
    header: Option<raw::Header>,
    tail: Option<raw::Tail>,
    task: Option<raw::Task>,
    regs: Option<(raw::RegsX86_64, usize)>,
    mm: Option<(raw::Mm, usize, Vec<u8>)>,
    vmas: Vec<VmaShown>,
    /// The task's state besides memory (1.1 records).
    state: super::state::State,
    /// One line per record, for `show -v`.
    records: Vec<String>,
}

impl Shown {
    /// Takes in one record.
    pub fn record(&mut self, r: &Parsed<'_>) {
        let kind = match r.kind() {
            cr_format::read::RecordKind::Unknown(k) => format!("#{k}"),
            k => format!("{k:?}"),
        };
        let mut what = String::new();
        match r.record {
            Record::Header(h) => self.header = Some(*h),
            Record::Task(t) => self.task = Some(*t),
            Record::Regs(x) => self.regs = Some((*x.raw, x.xsave.len())),
            Record::Mm(m) => self.mm = Some((*m.raw, m.auxv.len(), m.exe.to_vec())),
            Record::Vma(v) => {
                what = format!("{:#x}-{:#x}", v.start(), v.end());
                self.vmas.push(VmaShown {
                    raw: *v.raw,
                    path: v.path.to_vec(),
                    counts: Counts::default(),
                    attrs: None,
                });
            }
            Record::Pages(p) => {
                what = format!(
                    "{} run(s), {} bytes of data at {:#x}",
                    p.runs.len(),
                    p.data_len(),
                    p.data_offset
                );
                if let Some(VmaShown { counts: c, .. }) = self.vmas.last_mut() {
                    for run in p.iter() {
                        let n = u64::from(run.pages);
                        match run.kind {
                            RunKind::Data => c.data += n,
                            RunKind::Zero => c.zero += n,
                            RunKind::Parent => c.parent += n,
                        }
                    }
                }
            }
            Record::Unknown(_) => what = "skipped (not critical)".to_string(),
            Record::VmaAttr(a) => {
                what = super::names::flags(a.attrs.get().into(), super::names::VMA_ATTRS);
                if let Some(v) = self.vmas.last_mut() {
                    v.attrs = Some(a.attrs.get());
                }
            }
            Record::File(f) => {
                what = match f.role() {
                    raw::ROLE_FD => format!("fd {}", f.raw.fd.get()),
                    r => super::names::kind_or_number(r.into(), super::names::ROLES),
                };
                self.state.record(&r.record);
            }
            Record::FileData(d) => {
                what = format!("{} bytes at {}", d.raw.len.get(), d.raw.offset.get());
                self.state.record(&r.record);
            }
            Record::Signals(_)
            | Record::Timers(_)
            | Record::Process(_)
            | Record::Inotify(_)
            | Record::InotifyWatch(_)
            | Record::Lock(_)
            | Record::VdsoData(_) => {
                self.state.record(&r.record);
            }
            Record::Tail(t) => self.tail = Some(*t),
        }
        self.records.push(format!(
            "  {:#12x}  {:>5}  {:<8} {:>10}  {:#010x}  {what}",
            r.offset,
            r.header.index.get(),
            kind,
            r.header.len.get(),
            r.header.crc.get()
        ));
    }

    /// Gathers a validated in-memory image.
    pub fn from_image(img: &Image<'_>) -> Shown {
        let mut s = Shown::default();
        for r in img.records() {
            s.record(&r);
        }
        s
    }

    /// Reads the image file at `path`: every record is checked, page data is skipped by
    /// seeking (its CRCs are `verify`'s job).
    pub fn read(path: &std::path::Path) -> crate::Result<Shown> {
        let f = super::open_image(path)?;
        Shown::from_reader(f, path)
    }

    /// [`Shown::read`] over any seekable reader (a file, a `Cursor` over bytes); `path` names
    /// the image in errors.
    pub fn from_reader(
        r: impl std::io::Read + std::io::Seek,
        path: &std::path::Path,
    ) -> crate::Result<Shown> {
        let mut s = Shown::default();
        stream_metadata(r, path, |r| s.record(r))?;
        Ok(s)
    }
}

/// Streams the records of an image from a seekable reader (`show`, `show --json`): every
/// record is checked and handed to `f`, page data is skipped by seeking. `path` names the image
/// in errors.
pub fn stream_metadata(
    r: impl std::io::Read + std::io::Seek,
    path: &std::path::Path,
    f: impl FnMut(&Parsed<'_>),
) -> crate::Result<()> {
    let opts = cr_format::read::Options { verify_data: false };
    let mut rd = cr_format::read::StreamReader::new_seekable(r, opts)
        .map_err(|e| crate::Error::io(format!("reading {}", path.display()), e))?;
    if let Err(e) = rd.for_each(f) {
        if let Some(io) = rd.io_error() {
            return Err(crate::Error::Other(format!(
                "{}: read error: {io}",
                path.display()
            )));
        }
        return Err(super::chain::image_error(path, e, rd.record_kind()));
    }
    Ok(())
}

/// Renders an image as text.
pub fn render(s: &Shown) -> String {
    render_with(s, false)
}

/// Renders an image as text; `verbose` (`show -v`) adds every field of the state records.
pub fn render_with(s: &Shown, verbose: bool) -> String {
    let mut o = String::new();
    let Some(h) = &s.header else { return o };
    render_header(&mut o, h, s.tail.as_ref());
    if let Some(t) = &s.task {
        render_task(&mut o, t);
    }
    if let Some((r, xsave_len)) = &s.regs {
        render_regs(&mut o, r, *xsave_len);
    }
    if let Some((r, auxv, exe)) = &s.mm {
        render_mm(&mut o, r, *auxv, exe);
    }
    super::state::render(&mut o, &s.state, verbose);
    render_vmas(
        &mut o,
        &s.vmas,
        s.header.map_or(4096, |h| h.page_size.get().into()),
    );
    o
}

/// The image's header (and the tail's length and digest: 0 if the image has no tail).
fn render_header(o: &mut String, h: &raw::Header, tail: Option<&raw::Tail>) {
    let _ = writeln!(o, "image");
    let _ = writeln!(o, "  crid          {}", h.crid.get());
    let _ = writeln!(o, "  parent        {}", h.parent_crid.get());
    let _ = writeln!(
        o,
        "  version       {}.{}",
        h.version_major.get(),
        h.version_minor.get()
    );
    let arch = match h.arch.get() {
        raw::ARCH_X86_64 => "x86-64".to_string(),
        a => format!("e_machine {a}"),
    };
    let _ = writeln!(o, "  arch          {arch}");
    let _ = writeln!(o, "  page size     {}", h.page_size.get());
    let ns = h.created_ns.get();
    let _ = writeln!(o, "  created       {}", utc(ns));
    let _ = writeln!(o, "  producer      {}", text(&h.producer));
    let _ = writeln!(
        o,
        "  length        {} bytes",
        tail.map_or(0, |t| t.image_len.get())
    );
    let _ = writeln!(
        o,
        "  digest        {}",
        super::names::digest(tail.map_or(0, |t| t.digest.get()))
    );
}

fn render_task(o: &mut String, t: &raw::Task) {
    let _ = writeln!(o, "task");
    let _ = writeln!(
        o,
        "  pid {} tgid {} ppid {} pgid {} sid {}",
        t.pid.get(),
        t.tgid.get(),
        t.ppid.get(),
        t.pgid.get(),
        t.sid.get()
    );
    let _ = writeln!(o, "  comm          {}", text(&t.comm));
    let _ = writeln!(o, "  state         {}", char::from(t.state));
    let uid: Vec<String> = t.uid.iter().map(|u| u.get().to_string()).collect();
    let gid: Vec<String> = t.gid.iter().map(|u| u.get().to_string()).collect();
    let _ = writeln!(o, "  uid           {}", uid.join(" "));
    let _ = writeln!(o, "  gid           {}", gid.join(" "));
    let _ = writeln!(
        o,
        "  signals       blocked {:#x} ignored {:#x} caught {:#x} pending {:#x} shared {:#x}",
        t.sig_blocked.get(),
        t.sig_ignored.get(),
        t.sig_caught.get(),
        t.sig_pending.get(),
        t.sig_shared_pending.get()
    );
    let _ = writeln!(o, "  umask         {:04o}", t.umask.get());
    let _ = writeln!(o, "  exit signal   {}", t.exit_signal.get());
    let _ = writeln!(o, "  personality   {:#x}", t.personality.get());
}

fn render_regs(o: &mut String, r: &raw::RegsX86_64, xsave_len: usize) {
    let _ = writeln!(o, "registers");
    // GPR_NAMES has one name per register of the image.
    for (names, values) in GPR_NAMES.chunks(3).zip(r.gpr.chunks(3)) {
        let mut line = String::from(" ");
        for (name, v) in names.iter().zip(values) {
            let _ = write!(line, " {name:>8} {:016x}", v.get());
        }
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(
        o,
        "  xsave         {} bytes, xfeatures {:#x}",
        xsave_len,
        r.xfeatures.get()
    );
}

fn render_mm(o: &mut String, r: &raw::Mm, auxv: usize, exe: &[u8]) {
    let _ = writeln!(o, "mm");
    let _ = writeln!(
        o,
        "  code          {:#x}-{:#x}",
        r.start_code.get(),
        r.end_code.get()
    );
    let _ = writeln!(
        o,
        "  data          {:#x}-{:#x}",
        r.start_data.get(),
        r.end_data.get()
    );
    let _ = writeln!(
        o,
        "  brk           {:#x}-{:#x}",
        r.start_brk.get(),
        r.brk.get()
    );
    let _ = writeln!(o, "  stack         {:#x}", r.start_stack.get());
    let _ = writeln!(
        o,
        "  args          {:#x}-{:#x}",
        r.arg_start.get(),
        r.arg_end.get()
    );
    let _ = writeln!(
        o,
        "  env           {:#x}-{:#x}",
        r.env_start.get(),
        r.env_end.get()
    );
    let _ = writeln!(o, "  auxv          {} entries", auxv);
    let _ = writeln!(o, "  exe           {}", String::from_utf8_lossy(exe));
}

/// A size in bytes as people read it: `4.0 KiB`, `1.5 GiB`, or `512 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// The maps-like VMA table, with size, page counts and attributes per VMA, and totals.
fn render_vmas(o: &mut String, vmas: &[VmaShown], page_size: u64) {
    let _ = writeln!(o, "vmas");
    let _ = writeln!(
        o,
        "  {:<37} {:<4} {:<8} {:>10} {:>10} {:>8} {:>8} {:>8}  path",
        "range", "perm", "kind", "size", "offset", "data", "zero", "parent"
    );
    let mut total = Counts::default();
    for v in vmas {
        let (r, c) = (&v.raw, &v.counts);
        let perm = format!(
            "{}{}",
            super::names::prot(r.prot.get().into()),
            if r.flags.get() & raw::VMA_SHARED != 0 {
                's'
            } else {
                'p'
            },
        );
        let mut path = match r.kind.get() {
            raw::VMA_FILE => String::from_utf8_lossy(&v.path).into_owned(),
            raw::VMA_ANON => String::new(),
            k => format!("[{}]", vma_kind_name(k)),
        };
        if let Some(a) = v.attrs.filter(|&a| a != 0) {
            let _ = write!(
                path,
                "{}({})",
                if path.is_empty() { "" } else { " " },
                super::names::flags(a.into(), super::names::VMA_ATTRS)
            );
        }
        let _ = writeln!(
            o,
            "  {:#018x}-{:#018x} {perm} {:<8} {:>10} {:>#10x} {:>8} {:>8} {:>8}  {path}",
            r.start.get(),
            r.end.get(),
            vma_kind_name(r.kind.get()),
            human(r.end.get().saturating_sub(r.start.get())),
            r.offset.get(),
            c.data,
            c.zero,
            c.parent
        );
        total.data += c.data;
        total.zero += c.zero;
        total.parent += c.parent;
    }
    let _ = writeln!(
        o,
        "pages: {} data ({}), {} zero, {} parent",
        total.data,
        human(total.data.saturating_mul(page_size)),
        total.zero,
        total.parent
    );
}

/// Every record with its byte offset, kind, payload length and CRC (`show -v`).
pub fn render_records(s: &Shown) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "records\n  {:>12}  {:>5}  {:<8} {:>10}  {:>10}  what",
        "offset", "index", "kind", "length", "crc"
    );
    for l in &s.records {
        let _ = writeln!(o, "{l}");
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000000000 UTC");
        assert_eq!(
            super::utc(951_782_400_000_000_001),
            "2000-02-29 00:00:00.000000001 UTC"
        );
        assert_eq!(
            super::utc(1_795_541_570_886_164_920),
            "2026-11-24 17:32:50.886164920 UTC"
        );
    }
}
