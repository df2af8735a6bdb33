//! Images that claim huge counts or lengths are refused before anything is allocated: the
//! streaming reader's peak allocation is measured with a counting global allocator.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

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
    let dir = format!("{}/../spec/vectors/invalid", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for name in [
        "run-count-huge",
        "run-2pow32-pages",
        "auxv-count-huge",
        "vma-path-4gib-claim",
        "regs-xsave-len-huge",
    ] {
        let bytes = std::fs::read(format!("{dir}/{name}.bin")).unwrap();
        let (peak, res) = peak_while_streaming(&bytes);
        assert!(res.is_err(), "{name} accepted");
        // The reader holds at most the largest honest record of these images (< 64 KiB + 16 KiB).
        assert!(peak < 96 * 1024, "{name}: peak allocation {peak} bytes");
        n += 1;
    }
    // A header claiming a maximal record followed by nothing, and a tail claiming a 2^63-byte
    // image: both refused, neither allocates the claim.
    let full = std::fs::read(format!(
        "{}/../spec/vectors/valid/full.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
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
