//! Envelope decode over arbitrary bytes (the generation manifests, log heads and uncertain
//! markers every reader trusts once it passes), and the round trip: whatever `encode` makes,
//! `decode` returns unchanged.
#![no_main]

use flashback_format::envelope::{decode, encode};
use libfuzzer_sys::fuzz_target;

/// The manifest's magic: the seeds are manifests, so mutations start from a matching magic.
const MAGIC: [u8; 8] = *b"FBGENMAN";

fuzz_target!(|data: &[u8]| {
    let max_version = data.first().map_or(1, |&b| u16::from(b % 4));
    if let Ok((version, payload)) = decode("fuzz.meta", &MAGIC, max_version, data) {
        assert!(version >= 1 && version <= max_version);
        assert_eq!(
            encode(&MAGIC, version, payload),
            data,
            "decode accepted a non-canonical envelope"
        );
    }
    let _ = decode("fuzz.meta", &MAGIC, u16::MAX, data);
    let version = data.get(1).map_or(1, |&b| u16::from(b).max(1));
    let e = encode(&MAGIC, version, data);
    let back = decode("fuzz.meta", &MAGIC, version, &e).expect("decode of encode");
    assert_eq!(back, (version, data));
});
