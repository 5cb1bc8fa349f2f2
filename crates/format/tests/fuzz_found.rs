//! Inputs the fuzz targets (`fuzz/`, `scripts/fuzz.sh`) crashed on, minimised, each with the
//! bug it found. Each input stays here as bytes: the targets' corpora are scratch copies, so
//! this file is what keeps a found bug fixed.

use flashback_format::inspect::{self, Ending};
use flashback_format::segment::{Sealed, SegmentReader};
use std::io::Cursor;

fn hex(lines: &[&str]) -> Vec<u8> {
    let s: String = lines.concat();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// segment_scan: a valid header, then a block header whose compressed length is 0xffffffff.
/// The scanner reads it as a torn tail; `inspect` then described the bad block through
/// `BlockHeader::info`, whose `68 + comp_len` overflowed u32 (a panic in a debug build, a
/// wrong length in release).
#[test]
fn a_block_header_claiming_4_gib_is_a_torn_tail_not_an_overflow() {
    let input = hex(&[
        "46425345470d0a1a0100010000000000f401000000000000006c50c4a0010000",
        "3031323334353637383961626364656630313233343536373839616263646566",
        "303132333435363700000000df4a71c54642424b00000000010000001effffff",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "ffffffffffffffffffffffffffffffffffffffff",
    ]);
    let len = input.len() as u64;
    let mut r = SegmentReader::new("crash.seg", &input[..], len, Sealed::No);
    assert!(r.next_block().unwrap().is_none());
    assert_eq!(r.scanner().valid_len(), 80);
    let report = inspect::segment("crash.seg", Cursor::new(&input), len, None).unwrap();
    assert!(
        matches!(report.ending, Ending::Torn { at: 80, .. }),
        "{:?}",
        report.ending
    );
    let bad = report.bad_block.expect("the bad block is described");
    assert_eq!(bad.pos, 80);
    // Refused by the block-size cap (which parse_block_header checks before the lengths are
    // used), or by the overflow guard inspect had before the cap existed: either way named.
    let why = bad.header.expect_err("no block can be that long");
    assert!(
        why.contains("maximum block size") || why.contains("4294967295"),
        "{why}"
    );
}
