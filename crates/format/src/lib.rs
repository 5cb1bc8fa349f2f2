//! Flashback's persisted formats, with no async runtime and no network, so that they can be
//! fuzzed, dumped and golden-tested on their own (the shape superfly/ltx gives litestream).
//!
//! # Layout
//! - [`segment`]: the segment log v1, an immutable file of replication records in zstd blocks,
//!   each block crc32c-checked, with a footer index from time and offset to block. The byte table
//!   is in `docs/formats.md`. Split by job: `segment/codec.rs` (byte encodings),
//!   `chain.rs` (the rule that blocks follow each other), `writer.rs`, `scanner.rs` (no I/O;
//!   [`segment::SegmentReader`] over `Read`), `damage.rs` (damage vs a torn tail); every public
//!   item is re-exported from [`segment`].
//! - [`envelope`]: a small checked wrapper (magic, version, length, crc32c) around the JSON
//!   metadata objects (generation manifests).
//! - [`rdb`]: just enough of Redis' RDB format to read a file's version and AUX fields, and the
//!   CRC-64 Redis puts in its trailer (re-exported from `flashback-rdb`, the whole-file reader,
//!   which holds the one copy of CRC-64 and LZF).
//! - [`resp`]: RESP framing, `check` then `parse` (mini-redis `frame.rs`), counting raw bytes so
//!   replication offsets are exact; [`resp::stream`]: the replication stream's [`Framer`]
//!   (commands, and big commands in parts), fed bytes by the caller, no I/O.
//! - [`crypt`]: the encrypted-object format (encryption at rest): header, 1 MiB chunks sealed
//!   with AES-256-GCM, sizes, and [`crypt::open`], a pure decrypt of a whole object's bytes.
//! - [`inspect`]: the byte-level structure of a segment or an RDB (every field with its bytes,
//!   each checksum stored and computed, the first bad byte), for `flashback debug`.
//! - [`summary`]: segment summaries (per-second write counts, destructive events, a key
//!   filter) that the agent stores beside each sealed segment, for `timeline` and
//!   `restore --before EVENT`.
//! - [`varint`]: LEB128 integers used inside blocks.
//! - [`spec`]: builds segments from a description of commands and block cuts, for tests and
//!   fixtures in this crate and others.
//!
//! [`Framer`]: resp::stream::Framer
//!
//! Every reader names the file and the byte offset of any corruption ([`Error::Corrupt`]).

pub mod crypt;
pub mod envelope;
pub mod error;
pub mod inspect;
pub mod rdb;
pub mod resp;
pub mod segment;
pub mod spec;
pub mod summary;
pub mod varint;

pub use error::Error;
