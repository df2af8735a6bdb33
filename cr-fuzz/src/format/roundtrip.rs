//! [`roundtrip`]: an arbitrary image through the writer and back.

use super::slice::parse;
use super::stream::{chunk_size, stream_vs_slice_with};
use super::{to_u64, THOROUGH_MAX};
use arbitrary::{Arbitrary, Unstructured};
use cr_format::read::Image;
use cr_format::repr::ImageRepr;

/// Arbitrary image → writer → reader → equal → identical re-emit; then damage it.
pub fn roundtrip(u: &mut Unstructured<'_>) {
    let Ok(repr) = ImageRepr::arbitrary(u) else {
        return;
    };
    let mut bytes = Vec::new();
    let summary = repr.emit(&mut bytes);
    assert!(
        summary.is_ok(),
        "the writer refused a generated image: {:?}",
        summary.err()
    );
    let Ok(summary) = summary else { return };
    assert_eq!(summary.image_len, to_u64(bytes.len()));
    let img = Image::parse(&bytes);
    assert!(
        img.is_ok(),
        "the reader refused the writer's image: {:?}",
        img.err()
    );
    let Ok(img) = img else { return };
    assert_eq!(img.digest(), summary.digest);
    assert_eq!(img.tail().record_count.get(), summary.records);
    let back = ImageRepr::parse(&img);
    assert!(back == repr, "read back differs:\n{back:?}\n{repr:?}");
    let again = back.to_vec();
    assert!(
        again.as_deref() == Ok(bytes.as_slice()),
        "re-emitted image differs"
    );
    assert!(Image::parse_metadata(&bytes).is_ok_and(|m| m.digest() == summary.digest));

    // Everything `parse` checks, and the streaming readers in arbitrary chunks: a score of
    // passes over the image, so only for images up to THOROUGH_MAX (9 in 10 generated ones;
    // the rest would dominate the fuzzer's time).
    let thorough = bytes.len() <= THOROUGH_MAX;
    if thorough {
        parse(&bytes);
        let n = u.int_in_range(1..=4usize).unwrap_or(1);
        let chunks: Vec<usize> = (0..n)
            .map(|_| chunk_size(u.arbitrary().unwrap_or(0)))
            .collect();
        stream_vs_slice_with(&chunks, &bytes);
    }

    // One flipped bit, anywhere, is caught (CRC-32 catches every burst of up to 32 bits; a
    // flip in a length field changes what is checked and fails a length check or the CRC).
    let len = bytes.len();
    if len > 0 {
        let at = u.choose_index(len).unwrap_or(0);
        let bit = u.int_in_range(0..=7u8).unwrap_or(0);
        let mut damaged = bytes.clone();
        if let Some(b) = damaged.get_mut(at) {
            *b ^= 1u8.checked_shl(bit.into()).unwrap_or(1);
        }
        assert!(
            Image::parse(&damaged).is_err(),
            "flip of bit {bit} at {at:#x} accepted"
        );
        if thorough {
            parse(&damaged);
        }
        // A truncation is caught.
        let cut = u.choose_index(len).unwrap_or(0);
        let short = bytes.get(..cut).unwrap_or(&[]);
        let e = Image::parse(short);
        assert!(e.is_err(), "truncation to {cut} bytes accepted");
        assert!(Image::parse_metadata(short).is_err());
    }
}
