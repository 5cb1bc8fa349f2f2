//! Segment log format v1 (byte table: `docs/formats.md`).
//!
//! A segment holds consecutive records of one source's replication stream under one replid.
//! It is written append-only by [`SegmentWriter`]: a header, then blocks, then (when sealed) a
//! footer index. An unsealed segment (the "open tail" of a live or crashed agent) is read by
//! scanning blocks; a torn last block is dropped, never misread ([`SegmentFile::parse`] with
//! `Sealed::No`). Inside a sealed segment any bad block is corruption.
//!
//! Offsets: a record's `end_offset` is the source's replication offset just after the record's
//! last byte, so `end_offset - resp.len()` is where it starts. A segment's `start_offset` is the
//! end offset of the record before its first one. Records are contiguous: each starts where the
//! previous ended; the reader checks this.
//!
//! The record's bytes are the RESP array exactly as the primary sent it (byte-exact argv), which
//! is also exactly what a restore serves to a replica. Storing the parsed argv instead was
//! rejected: re-encoding would have to reproduce the sender's bytes to keep offsets exact.

use crate::error::{Error, Result};
use std::io::Write;

pub const MAGIC: [u8; 8] = *b"FBSEG\r\n\x1a";
pub const FOOTER_MAGIC: [u8; 8] = *b"FBSEGEND";
pub const BLOCK_MAGIC: [u8; 4] = *b"FBBK";
pub const VERSION: u16 = 1;

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

/// Appends records into blocks. The caller decides when a block is cut ([`flush_block`]) and
/// when the file is fsync'd (through [`get_ref`]); the writer never does I/O on its own timer.
///
/// [`flush_block`]: SegmentWriter::flush_block
/// [`get_ref`]: SegmentWriter::get_ref
pub struct SegmentWriter<W: Write> {
    _w: W,
    _todo: (),
}

impl<W: Write> SegmentWriter<W> {
    /// Writes the header.
    pub fn new(_w: W, _header: &SegmentHeader, _opts: WriterOptions) -> std::io::Result<Self> {
        todo!()
    }
    /// Buffers a record in the current (uncompressed) block. Panics in debug builds if
    /// `rec.end_offset - rec.resp.len()` is not the previous end offset; returns an error in
    /// release builds instead (InvalidInput).
    pub fn append(&mut self, _rec: &Record) -> std::io::Result<()> {
        todo!()
    }
    /// Records and raw bytes waiting in the current block.
    pub fn pending(&self) -> (usize, usize) {
        todo!()
    }
    /// Compresses and writes the current block (an empty one is a heartbeat) and returns its
    /// info. Does not fsync.
    pub fn flush_block(&mut self, _covered_through_ms: u64, _flags: u16) -> std::io::Result<BlockInfo> {
        todo!()
    }
    /// End offset of the last record appended (flushed or not).
    pub fn end_offset(&self) -> u64 {
        todo!()
    }
    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> u64 {
        todo!()
    }
    pub fn get_ref(&self) -> &W {
        todo!()
    }
    /// Flushes any pending records, writes the footer index, and returns the writer's sink.
    pub fn finish(self, _end_time_ms: u64) -> std::io::Result<(W, SegmentSummary)> {
        todo!()
    }
}

/// Whether a segment's bytes are expected to carry a footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// A sealed segment: the footer must be present and intact; any bad block is corruption.
    Yes,
    /// An open tail: no footer expected; blocks are scanned and a torn last block is dropped.
    No,
}

/// A parsed segment: header and block index; records are decoded block by block on demand.
pub struct SegmentFile<'a> {
    pub name: String,
    pub header: SegmentHeader,
    pub blocks: Vec<BlockInfo>,
    /// For an open tail: the byte length of the valid prefix (header + intact blocks); a writer
    /// resuming the file truncates it here. For a sealed segment: the file length.
    pub valid_len: u64,
    /// For an open tail: true when bytes after `valid_len` were dropped as a torn write.
    pub torn_tail: bool,
    _bytes: &'a [u8],
}

impl<'a> SegmentFile<'a> {
    pub fn parse(_name: &str, _bytes: &'a [u8], _sealed: Sealed) -> Result<Self> {
        todo!()
    }
    /// Decodes block `i` (index into `blocks`), checking its checksum and record contiguity.
    pub fn records(&self, _i: usize) -> Result<Vec<Record>> {
        todo!()
    }
    /// Summary of what the file holds (from the footer, or computed from the scanned blocks).
    pub fn summary(&self) -> SegmentSummary {
        todo!()
    }
}

#[allow(dead_code)]
fn _unused(_e: Error) {}
