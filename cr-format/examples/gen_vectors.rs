//! Regenerates `spec/vectors/{valid,invalid}/*.bin` (except `minimal-handmade.bin`, which
//! `spec/vectors/handmade.py` writes independently of this crate).
//!
//! ```sh
//! cargo run -p cr-format --example gen_vectors
//! CR_BLESS=1 cargo test -p cr-format --test vectors   # then the expected outputs
//! ```
//!
//! Invalid vectors are valid images with one thing broken. Those whose fault is semantic (an
//! overlapping VMA, a run outside its VMA, ...) are re-sealed — indexes, CRCs and the tail
//! recomputed by [`reseal`] — so the reader gets past the checksums to the check under test.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use cr_format::raw::*;
use cr_format::read::RunKind;
use cr_format::repr::*;
use std::path::Path;

fn sample(crid: u64, parent: Option<(u64, u64)>, page_size: u32) -> ImageRepr {
    let ps = u64::from(page_size);
    let mut producer = [0u8; 32];
    producer[..13].copy_from_slice(b"cr-vectors 1\0");
    let mut comm = [0u8; 16];
    comm[..6].copy_from_slice(b"sample");
    let mut fxsave = [0u8; FXSAVE_LEN];
    fxsave[0] = 0x7f; // fcw 0x037f
    fxsave[1] = 0x03;
    fxsave[24] = 0x80; // mxcsr 0x1f80
    fxsave[25] = 0x1f;
    let mut gpr = [0u64; X86_64_GPR_COUNT];
    for (i, g) in gpr.iter_mut().enumerate() {
        *g = 0x1000 + i as u64;
    }
    gpr[16] = 0x401000; // rip
    gpr[17] = 0x33; // cs
    gpr[18] = 0x246; // eflags
    gpr[19] = 0x7ffd_0000_1000; // rsp
    gpr[20] = 0x2b; // ss
    let incremental = parent.is_some();
    let (parent_crid, parent_digest) = parent.unwrap_or((0, 0));
    let mut body = vec![];
    // Text of a file mapping: not present (comes from the file), one page changed.
    body.push(BodyRepr::Vma(VmaRepr {
        start: 0x400000,
        end: 0x400000 + 4 * ps,
        offset: 0,
        inode: 1234,
        file_size: 4 * ps,
        file_mtime_ns: 1_700_000_000_000_000_000,
        dev_major: 8,
        dev_minor: 1,
        prot: PROT_READ | PROT_EXEC,
        flags: 0,
        kind: VMA_FILE,
        path: b"/usr/bin/sample".to_vec(),
    }));
    body.push(BodyRepr::Pages(PagesRepr {
        runs: vec![RunRepr {
            addr: 0x400000 + ps,
            pages: 1,
            kind: RunKind::Data,
        }],
        data: vec![0xc3; page_size as usize],
    }));
    // Heap: data, zero, and (incremental) parent runs.
    let heap = 0x600000u64;
    body.push(BodyRepr::Vma(VmaRepr {
        start: heap,
        end: heap + 8 * ps,
        offset: 0,
        inode: 0,
        file_size: 0,
        file_mtime_ns: 0,
        dev_major: 0,
        dev_minor: 0,
        prot: PROT_READ | PROT_WRITE,
        flags: 0,
        kind: VMA_HEAP,
        path: vec![],
    }));
    let mut data = vec![];
    for i in 0..2u8 {
        data.extend((0..page_size).map(|j| (j as u8) ^ i ^ (crid as u8)));
    }
    let third = if incremental {
        RunKind::Parent
    } else {
        RunKind::Zero
    };
    body.push(BodyRepr::Pages(PagesRepr {
        runs: vec![
            RunRepr {
                addr: heap,
                pages: 2,
                kind: RunKind::Data,
            },
            RunRepr {
                addr: heap + 2 * ps,
                pages: 3,
                kind: RunKind::Zero,
            },
            RunRepr {
                addr: heap + 6 * ps,
                pages: 2,
                kind: third,
            },
        ],
        data,
    }));
    // Stack, grows down.
    let stack = 0x7ffd_0000_0000u64;
    body.push(BodyRepr::Vma(VmaRepr {
        start: stack,
        end: stack + 4 * ps,
        offset: 0,
        inode: 0,
        file_size: 0,
        file_mtime_ns: 0,
        dev_major: 0,
        dev_minor: 0,
        prot: PROT_READ | PROT_WRITE,
        flags: VMA_GROWSDOWN,
        kind: VMA_STACK,
        path: vec![],
    }));
    body.push(BodyRepr::Pages(PagesRepr {
        runs: vec![RunRepr {
            addr: stack + 3 * ps,
            pages: 1,
            kind: RunKind::Data,
        }],
        data: vec![0x5a; page_size as usize],
    }));
    // vDSO: recorded, never copied.
    body.push(BodyRepr::Vma(VmaRepr {
        start: 0x7fff_f000_0000,
        end: 0x7fff_f000_0000 + 2 * ps,
        offset: 0,
        inode: 0,
        file_size: 0,
        file_mtime_ns: 0,
        dev_major: 0,
        dev_minor: 0,
        prot: PROT_READ | PROT_EXEC,
        flags: 0,
        kind: VMA_VDSO,
        path: vec![],
    }));
    ImageRepr {
        header: HeaderRepr {
            // These are 1.0 images (no record of 1.1): the lowest minor they need (§11). The 1.1
            // vectors come from handmade.py.
            version_minor: 0,
            arch: ARCH_X86_64,
            page_size,
            crid,
            parent_crid,
            parent_digest,
            created_ns: 1_764_000_000_000_000_000 + crid,
            diff_method: if incremental {
                DIFF_WRITE_TRACKING
            } else {
                DIFF_NONE
            },
            producer,
        },
        task: TaskRepr {
            pid: 4242,
            tgid: 4242,
            ppid: 1,
            pgid: 4242,
            sid: 4242,
            state: b'S',
            exit_signal: 17,
            personality: 0,
            uid: [1000; 4],
            gid: [1000; 4],
            sig_blocked: 0,
            sig_ignored: 1 << 12,
            sig_caught: 1 << 1,
            sig_pending: 0,
            sig_shared_pending: 0,
            cap_inheritable: 0,
            cap_permitted: 0,
            cap_effective: 0,
            comm,
            umask: 0o022,
        },
        regs: RegsRepr {
            arch: ARCH_X86_64,
            xfeatures: 0xe7,
            gpr,
            fxsave,
            xsave: (0..832u32).map(|i| (i % 251) as u8).collect(),
        },
        mm: MmRepr {
            start_code: 0x400000,
            end_code: 0x400000 + 4 * ps,
            start_data: 0x600000,
            end_data: 0x600000,
            start_brk: heap,
            brk: heap + 8 * ps,
            start_stack: stack + 4 * ps - 0x100,
            arg_start: stack + 4 * ps - 0x80,
            arg_end: stack + 4 * ps - 0x70,
            env_start: stack + 4 * ps - 0x70,
            env_end: stack + 4 * ps - 0x10,
            auxv: vec![
                (6, u64::from(page_size)),
                (25, stack + 4 * ps - 0x20),
                (0, 0),
            ],
            exe: b"/usr/bin/sample".to_vec(),
        },
        body,
    }
}

/// One record, cut out of an image without validation.
#[derive(Clone)]
struct Rec {
    kind: u16,
    flags: u16,
    payload: Vec<u8>,
}

fn split(img: &[u8]) -> Vec<Rec> {
    let mut out = vec![];
    let mut pos = 0;
    while pos + 16 <= img.len() {
        let kind = u16::from_le_bytes([img[pos], img[pos + 1]]);
        let flags = u16::from_le_bytes([img[pos + 2], img[pos + 3]]);
        let len = u32::from_le_bytes(img[pos + 4..pos + 8].try_into().unwrap()) as usize;
        out.push(Rec {
            kind,
            flags,
            payload: img[pos + 16..pos + 16 + len].to_vec(),
        });
        pos += 16 + len;
    }
    out
}

/// Re-seals records: indexes, Pages padding and data CRCs, record CRCs, and the tail.
fn reseal(recs: &[Rec], page_size: usize) -> Vec<u8> {
    let crc64 = crc::Crc::<u64>::new(&crc::CRC_64_XZ);
    let mut digest = crc64.digest();
    let mut out = vec![];
    for (i, r) in recs.iter().enumerate() {
        let mut payload = r.payload.clone();
        let mut checked = payload.len();
        if r.kind == KIND_TAIL {
            let count = i as u64;
            let len = (out.len() + 16 + 24) as u64;
            payload = [
                count.to_le_bytes(),
                len.to_le_bytes(),
                digest.clone().finalize().to_le_bytes(),
            ]
            .concat();
            checked = 24;
        } else if r.kind == KIND_PAGES && payload.len() >= 16 {
            let n = u32::from_le_bytes(payload[0..4].try_into().unwrap()) as usize;
            let old_pad = u32::from_le_bytes(payload[4..8].try_into().unwrap()) as usize;
            let table = 16 + 16 * n;
            if table + old_pad <= payload.len() {
                let data = payload[table + old_pad..].to_vec();
                let data_start = out.len() + 16 + table;
                let pad = if data.is_empty() {
                    0
                } else {
                    (page_size - data_start % page_size) % page_size
                };
                let mut p = payload[..table].to_vec();
                p[4..8].copy_from_slice(&(pad as u32).to_le_bytes());
                p[8..12].copy_from_slice(&crc32fast::hash(&data).to_le_bytes());
                p.resize(table + pad, 0);
                checked = p.len();
                p.extend(data);
                payload = p;
            }
        }
        let mut h = vec![];
        h.extend(r.kind.to_le_bytes());
        h.extend(r.flags.to_le_bytes());
        h.extend((payload.len() as u32).to_le_bytes());
        h.extend((i as u32).to_le_bytes());
        let mut c = crc32fast::Hasher::new();
        c.update(&h);
        c.update(&payload[..checked.min(payload.len())]);
        h.extend(c.finalize().to_le_bytes());
        if r.kind != KIND_TAIL {
            digest.update(&h);
        }
        out.extend(h);
        out.extend(payload);
    }
    out
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    let (valid, invalid) = (root.join("valid"), root.join("invalid"));
    std::fs::create_dir_all(&valid).unwrap();
    std::fs::create_dir_all(&invalid).unwrap();

    // Valid vectors.
    let full = sample(1, None, 4096);
    let full_bytes = full.to_vec().unwrap();
    put(&valid, "full", &full_bytes);
    // A chain 1 <- 2 <- 3: each names its parent's CRID and digest.
    let d1 = cr_format::read::Image::parse(&full_bytes).unwrap().digest();
    let c2 = sample(2, Some((1, d1)), 4096).to_vec().unwrap();
    let d2 = cr_format::read::Image::parse(&c2).unwrap().digest();
    let c3 = sample(3, Some((2, d2)), 4096).to_vec().unwrap();
    put(&valid, "chain-1", &full_bytes);
    put(&valid, "chain-2", &c2);
    put(&valid, "chain-3", &c3);
    put(
        &valid,
        "page-16k",
        &sample(7, None, 16384).to_vec().unwrap(),
    );
    let mut newer = sample(8, None, 4096);
    newer.header.version_minor = 7;
    newer.body.insert(
        2,
        BodyRepr::Unknown {
            kind: 0x4000,
            payload: b"future!\0".to_vec(),
        },
    );
    put(&valid, "minor-7-unknown-record", &newer.to_vec().unwrap());
    let mut bare = sample(9, None, 4096);
    bare.body.clear();
    bare.regs.xsave.clear();
    bare.mm.auxv.clear();
    bare.mm.exe.clear();
    put(&valid, "no-vmas", &bare.to_vec().unwrap());

    // Invalid vectors: plain damage (no reseal).
    let b = &full_bytes;
    put(&invalid, "empty", &[]);
    put(&invalid, "truncated-header", &b[..20]);
    put(&invalid, "truncated-in-pages", &b[..b.len() / 2]);
    put(&invalid, "truncated-before-tail", &b[..b.len() - 40]);
    let mut x = b.clone();
    x[16] = 0x09; // high bit stripped by a 7-bit channel
    put(&invalid, "bad-magic-7bit", &x);
    let mut x = b.clone();
    x.splice(20..21, [b'\r', b'\n']); // LF -> CRLF
    x.truncate(b.len());
    put(&invalid, "bad-magic-crlf", &x);
    let mut x = b.clone();
    x[200] ^= 0x10;
    put(&invalid, "bitflip-task", &x);
    let last_data = b.len() - 40 - 100;
    let mut x = b.clone();
    x[last_data] ^= 1;
    put(&invalid, "bitflip-page-data", &x);
    let mut x = b.clone();
    x.extend_from_slice(b"junk\0\0\0\0");
    put(&invalid, "trailing-data", &x);
    // A tail from another image: spliced.
    let mut x = b[..b.len() - 40].to_vec();
    x.extend_from_slice(&c2[c2.len() - 40..]);
    put(&invalid, "tail-from-other-image", &x);

    // Semantic faults, re-sealed so that only the fault is wrong.
    let recs = split(b);
    let ps = 4096;
    let edit = |name: &str, f: &dyn Fn(&mut Vec<Rec>)| {
        let mut r = recs.clone();
        f(&mut r);
        put(&invalid, name, &reseal(&r, ps));
    };
    let set = |r: &mut Rec, at: usize, bytes: &[u8]| {
        r.payload[at..at + bytes.len()].copy_from_slice(bytes)
    };
    edit("version-2", &|r| set(&mut r[0], 8, &2u16.to_le_bytes()));
    edit("arch-aarch64", &|r| {
        set(&mut r[0], 12, &183u16.to_le_bytes())
    });
    edit("page-size-3000", &|r| {
        set(&mut r[0], 16, &3000u32.to_le_bytes())
    });
    edit("crid-zero", &|r| set(&mut r[0], 24, &0u64.to_le_bytes()));
    edit("parent-not-older", &|r| {
        set(&mut r[0], 32, &5u64.to_le_bytes());
        set(&mut r[0], 56, &1u32.to_le_bytes());
    });
    edit("records-swapped", &|r| r.swap(1, 2));
    edit("record-duplicated", &|r| {
        let t = r[1].clone();
        r.insert(1, t);
    });
    edit("pages-before-vma", &|r| r.swap(4, 5));
    edit("unknown-critical", &|r| {
        r.insert(
            4,
            Rec {
                kind: 0x4000,
                flags: RECORD_CRITICAL,
                payload: vec![0; 8],
            },
        )
    });
    edit("unknown-before-mm", &|r| {
        r.insert(
            2,
            Rec {
                kind: 0x4000,
                flags: 0,
                payload: vec![0; 8],
            },
        )
    });
    edit("vma-overlap", &|r| {
        set(&mut r[6], 0, &0x400000u64.to_le_bytes())
    });
    edit("vma-unaligned", &|r| {
        set(&mut r[4], 8, &0x400800u64.to_le_bytes())
    });
    edit("vma-bad-prot", &|r| set(&mut r[4], 56, &8u32.to_le_bytes()));
    edit("vma-file-without-path", &|r| {
        set(&mut r[4], 66, &0u16.to_le_bytes());
        r[4].payload.truncate(72);
    });
    edit("vma-path-4gib-claim", &|r| {
        set(&mut r[4], 66, &0xffffu16.to_le_bytes())
    });
    edit("run-outside-vma", &|r| {
        set(&mut r[5], 16, &0x500000u64.to_le_bytes())
    });
    edit("run-2pow32-pages", &|r| {
        set(&mut r[7], 16 + 32 + 8, &u32::MAX.to_le_bytes())
    });
    edit("run-count-huge", &|r| {
        set(&mut r[7], 0, &u32::MAX.to_le_bytes())
    });
    edit("run-overlap", &|r| {
        set(&mut r[7], 16 + 16, &0x600000u64.to_le_bytes())
    });
    edit("run-parent-in-full-image", &|r| {
        set(&mut r[7], 16 + 32 + 12, &RUN_PARENT.to_le_bytes())
    });
    edit("run-bad-kind", &|r| {
        set(&mut r[7], 16 + 12, &9u16.to_le_bytes())
    });
    edit("auxv-count-huge", &|r| {
        set(&mut r[3], 88, &u32::MAX.to_le_bytes())
    });
    edit("mm-brk-below-start", &|r| {
        set(&mut r[3], 40, &0u64.to_le_bytes())
    });
    edit("regs-xsave-len-huge", &|r| {
        set(&mut r[2], 4, &0x10_0000u32.to_le_bytes())
    });
    edit("task-reserved-nonzero", &|r| set(&mut r[1], 21, &[1]));
    edit("no-tail", &|r| {
        r.pop();
    });
    // A chain whose links are wrong is checked by the chain tests (tests/chain.rs).
    println!("vectors written to {}", root.display());
}
