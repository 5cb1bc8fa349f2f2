//! The segment scanner over arbitrary bytes, whole file: read as an open tail and as a sealed
//! segment, every block it hands out decoded; and `inspect::segment` (what `flashback debug
//! segment` prints) over the same bytes, which must reach the same verdict. Any input must end
//! in blocks, a torn tail, or an error naming a byte inside the file; never a panic, a hang or
//! an outsized allocation.
//!
//! Checksums stop most mutations at the first block; `segment_blocks` repairs them so the
//! mutations reach the block decoder. This target keeps them as they are, because the torn/
//! damaged decision (the probe after a bad block) is exactly about inputs whose checksums fail.
#![no_main]

use flashback_format::inspect;
use flashback_format::segment::{Sealed, SegmentReader};
use libfuzzer_sys::fuzz_target;

/// Scans `data`; true when the scan and every decode succeeded.
fn scan(data: &[u8], sealed: Sealed) -> bool {
    let len = data.len() as u64;
    let mut r = SegmentReader::new("fuzz.seg", data, len, sealed);
    let mut at = 0u64;
    let mut ok = true;
    loop {
        match r.next_block() {
            Ok(Some(b)) => {
                let end = b.info.file_pos + u64::from(b.info.len);
                assert!(
                    b.info.file_pos >= at && end <= len,
                    "block outside the file"
                );
                at = end;
                ok &= r.scanner().decode(&b).is_ok();
            }
            Ok(None) => {
                assert!(r.scanner().valid_len() <= len);
                return ok;
            }
            Err(e) => {
                if let flashback_format::Error::Corrupt { offset, .. } = e {
                    assert!(offset <= len, "corruption named at byte {offset} of {len}");
                }
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for sealed in [Sealed::No, Sealed::Yes] {
        let ok = scan(data, sealed);
        let cursor = std::io::Cursor::new(data);
        let report = inspect::segment("fuzz.seg", cursor, data.len() as u64, Some(sealed))
            .expect("a Cursor does not fail");
        assert_eq!(
            report.is_ok(),
            ok,
            "inspect disagrees with the scanner: {:?}",
            report.ending
        );
    }
});
