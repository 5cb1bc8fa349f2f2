//! The RDB header/AUX peek and the trailer check over arbitrary bytes: restore reads the
//! version and AUX fields of a base (a file the store holds, or a primary sends) before it
//! picks a server, so no input may panic or allocate without bound.
#![no_main]

use flashback_format::rdb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = rdb::peek("fuzz.rdb", data) {
        assert!(info.magic == "REDIS" || info.magic == "VALKEY");
        // A prefix cut anywhere reads as the same header with at most the same AUX fields.
        let cut = (data.len() / 2).max(rdb::MAGIC_LEN);
        if let Ok(cut) = rdb::peek("fuzz.rdb", &data[..cut]) {
            assert_eq!(cut.version, info.version);
            assert!(cut.aux.len() <= info.aux.len());
            assert_eq!(cut.aux[..], info.aux[..cut.aux.len()]);
        }
    }
    let _ = rdb::verify("fuzz.rdb", data);
});
