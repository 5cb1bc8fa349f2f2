//! The segment block decoder, reached through the scanner: the input's header and block
//! checksums are recomputed before the scan, so that mutated block headers (lengths, offsets,
//! times, flags) and payloads (zstd frames, record varints) get past the crc32c and into the
//! chain checks and `decode`. Without the repair nearly every mutation of a seed is a
//! checksum mismatch and the decoder is never fuzzed.
#![no_main]

use crc32c::{crc32c, crc32c_append};
use flashback_format::segment::{Sealed, SegmentReader, BLOCK_HEADER_LEN, BLOCK_MAGIC, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

/// Rewrites the header crc and, walking block headers by their compressed length, each block's
/// crc. Stops at the first thing that is not a block; whatever follows stays as it is.
fn repair(data: &mut [u8]) {
    if data.len() < HEADER_LEN {
        return;
    }
    let crc = crc32c(&data[..76]);
    data[76..80].copy_from_slice(&crc.to_le_bytes());
    let mut pos = HEADER_LEN;
    while pos + BLOCK_HEADER_LEN <= data.len() && data[pos..pos + 4] == BLOCK_MAGIC {
        let mut n = [0u8; 4];
        n.copy_from_slice(&data[pos + 16..pos + 20]);
        let comp = u32::from_le_bytes(n) as usize;
        let end = pos + BLOCK_HEADER_LEN + comp;
        if end > data.len() {
            return;
        }
        let c = crc32c_append(
            crc32c(&data[pos..pos + 64]),
            &data[pos + BLOCK_HEADER_LEN..end],
        );
        data[pos + 64..pos + 68].copy_from_slice(&c.to_le_bytes());
        pos = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut data = data.to_vec();
    repair(&mut data);
    for sealed in [Sealed::No, Sealed::Yes] {
        let mut r = SegmentReader::new("fuzz.seg", &data[..], data.len() as u64, sealed);
        while let Ok(Some(b)) = r.next_block() {
            let _ = r.scanner().decode(&b);
        }
    }
});
