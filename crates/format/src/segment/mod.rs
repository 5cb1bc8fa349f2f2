//! Segment log format v1 (byte table: `docs/formats.md`).
//!
//! A segment holds consecutive records of one source's replication stream under one replid.
//! It is written append-only by [`SegmentWriter`]: a header, then blocks, then (when sealed) a
//! footer index. An unsealed segment (the "open tail" of a live or crashed agent) is read by
//! scanning blocks ([`SegmentScanner`] with `Sealed::No`): a torn last block is dropped, never
//! misread, and a bad block that intact blocks follow is damage ([`Error::Damaged`]), never
//! dropped. Inside a sealed segment any bad block is corruption.
//!
//! Offsets: a record's `end_offset` is the source's replication offset just after the record's
//! last byte, so `end_offset - resp.len()` is where it starts. A segment's `start_offset` is the
//! end offset of the record before its first one. Records are contiguous: each starts where the
//! previous ended; the reader checks this.
//!
//! The record's bytes are the RESP array exactly as the primary sent it (byte-exact argv), which
//! is also exactly what a restore serves to a replica. Storing the parsed argv instead was
//! rejected: re-encoding would have to reproduce the sender's bytes to keep offsets exact.
//!
//! # Files
//! - this file: the format's constants and the types every part shares (header, record, block
//!   info, summary);
//! - `codec`: the byte encodings (file header, block header, footer) and block decoding, the
//!   only place that knows where a field sits;
//! - `chain`: the rule that each block follows the one before it (offsets, times, db, MULTI,
//!   fragments), which the writer and the scanner both walk;
//! - `writer`: [`SegmentWriter`], append-only;
//! - `scanner`: [`SegmentScanner`] (no I/O, fed by the caller) and [`SegmentReader`] over
//!   `std::io::Read`;
//! - `damage`: telling damage from a torn write in an open tail.
//!
//! Every public item is re-exported here: callers name `flashback_format::segment::X`, never a
//! file, so the split is free to move again.
//!
//! [`Error::Damaged`]: crate::Error::Damaged

mod chain;
mod codec;
mod damage;
mod scanner;
mod writer;

pub use damage::Damage;
pub use scanner::{ScannedBlock, Sealed, SegmentReader, SegmentScanner};
pub use writer::SegmentWriter;
// For `inspect`, which walks the same bytes the codec decodes rather than parsing them twice.
pub(crate) use codec::{decode_header, parse_block_header};

pub const MAGIC: [u8; 8] = *b"FBSEG\r\n\x1a";
pub const FOOTER_MAGIC: [u8; 8] = *b"FBSEGEND";
pub const BLOCK_MAGIC: [u8; 4] = *b"FBBK";
pub const VERSION: u16 = 1;

/// Size of the file header (fixed).
pub const HEADER_LEN: usize = 80;
/// Size of a block header (fixed); the compressed payload follows it.
pub const BLOCK_HEADER_LEN: usize = 68;
/// Size of one footer index entry (fixed).
pub const INDEX_ENTRY_LEN: usize = 64;
/// Size of the footer trailer, which ends with [`FOOTER_MAGIC`].
pub const TRAILER_LEN: usize = 72;
/// Length of a replication id in the header.
pub const REPLID_LEN: usize = 40;
/// The most raw (uncompressed) bytes one block may hold. The writer refuses to build a bigger
/// block, and a reader refuses a block header that claims more before decompressing: the
/// header's raw length is what the decoder allocates, and a crafted one could ask for 4 GiB.
/// What capture writes stays far below: it cuts blocks at 1 MiB plus the record that crosses
/// it, a record kept whole is under `resp::stream::STREAM_FROM` (8 MiB) plus one socket read,
/// and bigger ones are stored as fragments of `PART_BYTES` (4 MiB).
pub const MAX_BLOCK_RAW_BYTES: u32 = 64 << 20;
/// A block size that compresses well (zstd needs a few dozen KiB of history to find the
/// repetition in RESP commands) without making a reader decode much to reach one record.
/// Advice for callers of [`SegmentWriter::flush_block`]; the format accepts any size.
pub const SUGGESTED_BLOCK_RAW_BYTES: usize = 256 * 1024;

/// Why this segment was started; lets `info`/`timeline` explain history without a side file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Origin {
    /// First segment after a base snapshot (start of a generation).
    NewGeneration = 0,
    /// The previous segment reached its size or age limit.
    Roll = 1,
    /// The agent reconnected (or restarted) and the primary answered +CONTINUE.
    Resume = 2,
    /// +CONTINUE carried a new replid (failover, or restart of the primary): same history.
    ReplidChange = 3,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The 40-hex replication id that names the records' history.
    pub replid: String,
    /// End offset of the record before the first one in this segment.
    pub start_offset: u64,
    /// The database selected at `start_offset` (the stream does not repeat SELECT on resume).
    pub start_db: u32,
    /// True when `start_offset` falls inside a MULTI…EXEC (a resume after a crash mid-transaction).
    pub start_in_multi: bool,
    /// Wall time (ms since epoch, UTC) the segment was created.
    pub created_ms: u64,
    pub origin: Origin,
}

/// One replication record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Replication offset just after this record.
    pub end_offset: u64,
    /// Arrival time, ms since the epoch (UTC). Never decreases along the log.
    pub time_ms: u64,
    /// The database this command applies to (for SELECT itself: the database it selects).
    pub db: u32,
    /// True when, after this record, the stream is not inside MULTI…EXEC: a place restore may cut.
    pub boundary: bool,
    /// The command as sent by the primary: a RESP array of bulk strings, byte-exact.
    pub resp: Vec<u8>,
}

/// Flags on a block.
pub mod block_flags {
    /// Records that arrived in a catch-up burst right after a resume: they were written on the
    /// primary earlier than their arrival time says.
    pub const CATCHUP: u16 = 1;
    /// The block holds one slice of a single record too large to hold in memory whole (a
    /// 512 MB value). Its payload is the slice's raw RESP bytes; the record's metadata is in
    /// the header of its final fragment (`record_count = 1`). See [`super::Item::Fragment`].
    pub const FRAGMENT: u16 = 2;
}

/// A record's metadata without its bytes: what the final fragment of a fragmented record
/// carries, and what a writer is given to finish one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub end_offset: u64,
    pub time_ms: u64,
    pub db: u32,
    pub boundary: bool,
}

/// One slice of a record stored over several blocks (flag [`block_flags::FRAGMENT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Replication offset of `bytes[0]`.
    pub start_offset: u64,
    /// The database selected while the record's bytes arrive; for the final fragment, the
    /// record's own db (they differ only for a SELECT).
    pub db: u32,
    /// Raw RESP bytes of the record, `start_offset .. start_offset + bytes.len()`.
    pub bytes: Vec<u8>,
    /// Set on the final fragment: the record is complete.
    pub end: Option<RecordMeta>,
}

/// What a block decodes to: whole records, or a fragment of one large record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Record(Record),
    Fragment(Fragment),
}

/// What the footer index (and a scan of an open tail) knows of each block, without decoding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// Byte position of the block header in the file.
    pub file_pos: u64,
    /// Total length of the block in the file (header + payload).
    pub len: u32,
    pub flags: u16,
    pub record_count: u32,
    /// End offset of the record before this block's first record.
    pub start_offset: u64,
    /// End offset of the block's last record (== start_offset for an empty block).
    pub end_offset: u64,
    /// Time of the first and last record (both 0 for an empty block).
    pub first_time_ms: u64,
    pub last_time_ms: u64,
    /// The writer had received everything the primary sent up to this time when it wrote the
    /// block. An empty block is a heartbeat: it only moves this forward.
    pub covered_through_ms: u64,
    /// The selected db and whether the stream is inside MULTI after the block's last record
    /// (for an empty block: as at its start), so resuming needs no decoding.
    pub end_db: u32,
    pub end_in_multi: bool,
}

/// Summary a writer returns when sealing, and the footer stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub start_offset: u64,
    pub end_offset: u64,
    /// Time of the first record (0 when there are none).
    pub first_time_ms: u64,
    /// Time through which the segment is known complete (last block's covered_through, or the
    /// seal time given to `finish`).
    pub end_time_ms: u64,
    pub record_count: u64,
    pub block_count: u32,
    /// Records in blocks and the db/multi state at the end (for chaining the next segment).
    pub end_db: u32,
    pub end_in_multi: bool,
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// zstd level. 3 is zstd's default; higher levels cost CPU on the capture's hot path.
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { zstd_level: 3 }
    }
}
