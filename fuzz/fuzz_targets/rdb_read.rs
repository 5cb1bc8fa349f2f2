//! The whole-file RDB reader (`flashback_rdb`) over arbitrary bytes: `flashback inspect`, and
//! key-level restores after it, read files from disk, a store or a primary, so no input may
//! panic, hang or allocate without bound. Beyond that: a file that reads to its end is copied
//! back byte for byte from the items' raw bytes (the item boundaries cover the file exactly),
//! the counting pass agrees with the decoding pass, and `filter_rdb` keeping everything writes
//! a file that reads back to the same entries.
#![no_main]

use flashback_rdb::{filter_rdb, Item, RdbReader, RdbWriter, ValueSummary, Visitor};
use libfuzzer_sys::fuzz_target;

struct Sink;
impl Visitor for Sink {}

/// Every entry's (raw bytes, summary), decoding values (`visit`) or only counting them.
fn read(data: &[u8], visit: bool) -> Option<(Vec<(Vec<u8>, ValueSummary)>, Vec<u8>, Option<u64>, usize)> {
    let mut r = match RdbReader::new(data) {
        Ok(r) => r,
        Err(e) => {
            assert!(e.offset() <= data.len() as u64, "{e}");
            return None;
        }
    };
    r.capture_raw(true);
    let mut copy = RdbWriter::new(Vec::new(), r.header()).unwrap();
    let mut entries = Vec::new();
    let mut stored = None;
    loop {
        let item = match r.next() {
            Ok(Some(i)) => i,
            Ok(None) => break,
            Err(e) => {
                assert!(e.offset() <= data.len() as u64, "{e}");
                return None;
            }
        };
        match item {
            Item::Entry(_) => {
                let sum = if visit { r.visit(&mut Sink) } else { r.summarize() };
                match sum {
                    Ok(s) => entries.push((r.raw().to_vec(), s)),
                    Err(e) => {
                        assert!(e.offset() <= data.len() as u64, "{e}");
                        return None;
                    }
                }
                copy.raw(r.raw()).unwrap();
            }
            Item::End { stored_crc, .. } => stored = stored_crc,
            _ => copy.raw(r.raw()).unwrap(),
        }
    }
    Some((entries, copy.finish().unwrap(), stored, r.offset() as usize))
}

fuzz_target!(|data: &[u8]| {
    let Some((entries, copy, stored, used)) = read(data, true) else {
        return;
    };
    // The counting pass reads what the decoding pass read, to the same summaries.
    let counted = read(data, false).expect("the counting pass refused what decoding accepted");
    assert_eq!(counted.0, entries);
    let file = &data[..used];
    match stored {
        // `rdbchecksum no`: the copy carries a real CRC instead of zeros.
        Some(0) => assert_eq!(copy[..copy.len() - 8], file[..used - 8]),
        _ => assert_eq!(copy, file),
    }
    let mut r = RdbReader::new(file).unwrap();
    let w = RdbWriter::new(Vec::new(), r.header()).unwrap();
    let (out, counts) = filter_rdb(&mut r, w, |_, _| true).unwrap();
    assert_eq!(counts.kept as usize, entries.len());
    let again = read(&out, true).expect("filter_rdb wrote a file the reader refuses");
    assert_eq!(again.0, entries);
});
