//! RESP `check` then `parse` over arbitrary bytes (what a source, a restore target or a
//! replica sends us): never a panic, and whatever `check` accepts as a whole frame of `n` bytes,
//! `parse` decodes (the two must agree, or the stream framer would stall or skip bytes).
#![no_main]

use bytes::Bytes;
use flashback_format::resp::{argv, check, encode_command, parse, FrameError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    // parse is public: it must be total on input check never saw.
    let _ = parse(&buf);
    match check(data) {
        Ok(n) => {
            assert!(n > 0 && n <= data.len(), "check returned {n} for {} bytes", data.len());
            let frame = parse(&buf.slice(..n)).expect("parse refused what check accepted");
            // A command re-encodes to the very bytes it came from when it is canonical RESP;
            // at least it must re-encode to something check accepts whole.
            if let Some(args) = argv(frame) {
                let again = encode_command(&args);
                assert_eq!(check(&again), Ok(again.len()));
            }
        }
        Err(FrameError::Incomplete) | Err(FrameError::Protocol(_)) => {}
    }
});
