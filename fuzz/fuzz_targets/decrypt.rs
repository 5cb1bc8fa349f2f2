//! Decryption of an arbitrary object under a fixed key (what a store hands back can be anything:
//! damage, another tool's file, an attacker's bytes): never a panic, and any object it opens
//! was sealed by that key for that name. Also the round trip: what `seal` makes, `open` returns.
#![no_main]

use flashback_format::crypt::{open, seal, Key};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn key() -> Arc<Key> {
    static KEY: OnceLock<Arc<Key>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(Key::derive(&[7u8; 32]).expect("derive a fixed key")))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let _ = open(key(), "fuzz/object", data);
    // The same bytes sealed, then opened: equal; opened under another name: refused.
    let sealed = seal(key(), "fuzz/object", [data], data.len() as u64).expect("seal");
    assert_eq!(open(key(), "fuzz/object", &sealed).expect("open what seal made"), data);
    assert!(open(key(), "fuzz/other", &sealed).is_err(), "an object opened under another name");
});
