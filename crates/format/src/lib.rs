//! Flashback's persisted formats, with no async runtime and no network, so that they can be
//! fuzzed, dumped and golden-tested on their own (the shape superfly/ltx gives litestream).
//!
//! # Layout
//! - [`segment`]: the segment log v1, an immutable file of replication records in zstd blocks,
//!   each block crc32c-checked, with a footer index from time and offset to block. The byte table
//!   is in `docs/formats.md`.
//! - [`envelope`]: a small checked wrapper (magic, version, length, crc32c) around the JSON
//!   metadata objects (generation manifests).
//! - [`rdb`]: just enough of Redis' RDB format to read a file's version and AUX fields, and the
//!   CRC-64 Redis puts in its trailer.
//! - [`inspect`]: the byte-level structure of a segment or an RDB (every field with its bytes,
//!   each checksum stored and computed, the first bad byte), for `flashback debug`.
//! - [`varint`]: LEB128 integers used inside blocks.
//! - [`spec`]: builds segments from a description of commands and block cuts, for tests and
//!   fixtures in this crate and others.
//!
//! Every reader names the file and the byte offset of any corruption ([`Error::Corrupt`]).

mod damage;
pub mod envelope;
pub mod error;
pub mod inspect;
pub mod rdb;
pub mod segment;
pub mod spec;
pub mod varint;

pub use error::Error;
