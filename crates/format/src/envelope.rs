//! A checked envelope for small metadata objects (generation manifests): the payload is JSON so
//! a person can read it with `tail -c +17 | head -c -4`, and the envelope gives it the magic,
//! version and checksum every persisted file carries.
//!
//! Bytes: magic[8] | version u16 LE | reserved u16 | payload_len u32 LE | payload | crc32c u32 LE
//! (crc over everything before it).

use crate::error::Result;

/// Wraps `payload` under `magic` and `version`.
pub fn encode(_magic: &[u8; 8], _version: u16, _payload: &[u8]) -> Vec<u8> {
    todo!()
}

/// Checks magic, length and checksum, and that the version is at most `max_version`; returns
/// (version, payload).
pub fn decode<'a>(_file: &str, _magic: &[u8; 8], _max_version: u16, _bytes: &'a [u8]) -> Result<(u16, &'a [u8])> {
    todo!()
}
