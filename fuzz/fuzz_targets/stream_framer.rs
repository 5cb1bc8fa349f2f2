//! The replication stream's framer fed arbitrary bytes in arbitrary pieces (the first byte of
//! the input picks the piece size): never a panic, every byte either framed or still buffered
//! (offsets are counted from raw bytes, so none may be lost or invented), and each byte
//! examined a bounded number of times (a rescan per read made a big command quadratic).
#![no_main]

use flashback_format::resp::stream::{Framer, StreamItem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut f = Framer::default();
    let (mut framed, mut fed): (u64, u64) = (0, 0);
    'feed: for chunk in rest.chunks(piece) {
        f.extend(chunk);
        fed += chunk.len() as u64;
        loop {
            match f.next() {
                Ok(Some(StreamItem::Command(c))) => framed += c.raw.len() as u64,
                Ok(Some(StreamItem::Part { bytes, .. })) => framed += bytes.len() as u64,
                Ok(None) => break,
                // A protocol error ends the link; nothing after it is read.
                Err(_) => break 'feed,
            }
        }
        assert_eq!(framed + f.buffered() as u64, fed, "bytes lost or invented by the framer");
    }
    assert!(
        f.bytes_examined() <= 4 * fed + 64,
        "examined {} bytes for {fed} fed",
        f.bytes_examined()
    );
});
