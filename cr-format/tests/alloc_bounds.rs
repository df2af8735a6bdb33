//! Images that claim huge counts or lengths are refused before anything is allocated: the
//! streaming reader's peak allocation is measured with a counting global allocator.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

mod support;
use cr_format::read::{Options, StreamReader};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = NOW.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(n, Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The count is process-wide: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Peak bytes allocated while the streaming reader walks `bytes`.
fn peak_while_streaming(bytes: &[u8]) -> (usize, Result<(), cr_format::Error>) {
    let base = NOW.load(Relaxed);
    PEAK.store(base, Relaxed);
    let mut r = StreamReader::new(bytes, Options::default());
    let res = r.for_each(|_| {});
    drop(r);
    (PEAK.load(Relaxed) - base, res)
}

#[test]
fn huge_claims_cost_no_memory() {
    let _serial = serial();
    let dir = support::spec_dir().join("vectors/invalid");
    let mut n = 0;
    for name in [
        "run-count-huge",
        "run-2pow32-pages",
        "auxv-count-huge",
        "vma-path-4gib-claim",
        "regs-xsave-len-huge",
    ] {
        let bytes = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let (peak, res) = peak_while_streaming(&bytes);
        assert!(res.is_err(), "{name} accepted");
        // The reader holds at most the largest honest record of these images (< 64 KiB + 16 KiB).
        assert!(peak < 96 * 1024, "{name}: peak allocation {peak} bytes");
        n += 1;
    }
    // A header claiming a maximal record followed by nothing, and a tail claiming a 2^63-byte
    // image: both refused, neither allocates the claim.
    let full = std::fs::read(support::spec_dir().join("vectors/valid/full.bin")).unwrap();
    let mut claim = full[..0x70].to_vec(); // Header record only
    claim.extend_from_slice(&[2, 0, 1, 0]); // Task kind, critical
    claim.extend_from_slice(&cr_format::limits::MAX_PAYLOAD_LEN.to_le_bytes());
    claim.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    let (peak, res) = peak_while_streaming(&claim);
    assert!(res.is_err());
    assert!(peak < 96 * 1024, "huge record claim: peak {peak}");
    let mut tail = full.clone();
    let t = tail.len() - 24 + 8;
    tail[t..t + 8].copy_from_slice(&(1u64 << 63).to_le_bytes());
    let (peak, res) = peak_while_streaming(&tail);
    assert!(matches!(
        res.unwrap_err().kind,
        cr_format::ErrorKind::BadCrc { .. } | cr_format::ErrorKind::BadTail { .. }
    ));
    assert!(peak < 96 * 1024, "tail claim: peak {peak}");
    println!(
        "{} hostile claims refused with peak allocation < 96 KiB",
        n + 2
    );
}

/// An image whose VMAs go on past `MAX_VMAS` (as one claiming 2^32 VMAs would): refused at the
/// first one too many, with the streaming reader's memory still one record.
#[test]
fn vma_count_past_the_limit_is_refused_in_bounded_memory() {
    let _serial = serial();
    use cr_format::limits::MAX_VMAS;
    use cr_format::raw::*;
    use zerocopy::FromZeros;
    let mut img = Vec::new();
    let mut w = cr_format::write::Writer::new(&mut img);
    let mut h = Header::new_zeroed();
    h.magic = MAGIC;
    h.version_major = VERSION_MAJOR.into();
    h.arch = ARCH_X86_64.into();
    h.page_size = 4096.into();
    h.crid = 1.into();
    w.header(&h).unwrap();
    let mut t = Task::new_zeroed();
    t.pid = 1.into();
    t.state = b'S';
    w.task(&t).unwrap();
    let mut r = RegsX86_64::new_zeroed();
    r.arch = ARCH_X86_64.into();
    w.regs(&r, &[]).unwrap();
    w.mm(&Mm::new_zeroed(), &[], b"").unwrap();
    let mut v = Vma::new_zeroed();
    for i in 0..u64::from(MAX_VMAS) {
        v.start = (0x10000 + 2 * i * 4096).into();
        v.end = (0x10000 + (2 * i + 1) * 4096).into();
        w.vma(&v, &[]).unwrap();
    }
    // The writer refuses one more; forge it by copying the last Vma record with the next index.
    let next = u64::from(MAX_VMAS);
    v.start = (0x10000 + 2 * next * 4096).into();
    v.end = (0x10000 + (2 * next + 1) * 4096).into();
    assert!(matches!(
        w.vma(&v, &[]).unwrap_err().kind,
        cr_format::ErrorKind::LimitExceeded {
            limit: "MAX_VMAS",
            ..
        }
    ));
    let _ = w.into_inner();
    let last = img.len() - 88;
    let mut extra = img[last..].to_vec();
    let index = u32::from_le_bytes(extra[8..12].try_into().unwrap()) + 1;
    extra[8..12].copy_from_slice(&index.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&extra[..12]);
    c.update(&extra[16..]);
    let crc = c.finalize();
    extra[12..16].copy_from_slice(&crc.to_le_bytes());
    img.extend_from_slice(&extra);
    let (peak, res) = peak_while_streaming(&img);
    let e = res.unwrap_err();
    assert!(
        matches!(
            e.kind,
            cr_format::ErrorKind::LimitExceeded {
                limit: "MAX_VMAS",
                ..
            }
        ),
        "{e}"
    );
    assert!(peak < 96 * 1024, "peak {peak}");
}

/// A chain of a million images is refused by its depth before any link is looked at.
#[test]
fn million_deep_chain_is_refused_at_once() {
    let _serial = serial();
    let full = std::fs::read(support::spec_dir().join("vectors/valid/full.bin")).unwrap();
    let img = cr_format::read::Image::parse(&full).unwrap();
    let many = vec![img; 1_000_000];
    // The depth is the first check, so nothing is walked.
    let e = cr_format::chain::Chain::new(&many).unwrap_err();
    assert!(matches!(
        e.kind,
        cr_format::ErrorKind::LimitExceeded {
            limit: "MAX_CHAIN_DEPTH",
            found: 1_000_000,
            ..
        }
    ));
}
