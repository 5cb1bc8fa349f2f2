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
use crate::varint;
use std::io::Write;

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
/// After an I/O error the writer refuses further calls: a block may be half written, and only
/// re-parsing the file (which drops the torn block) tells what is durable.
///
/// [`flush_block`]: SegmentWriter::flush_block
/// [`get_ref`]: SegmentWriter::get_ref
pub struct SegmentWriter<W: Write> {
    w: W,
    opts: WriterOptions,
    /// Bytes written to `w` so far (the position of the next block).
    pos: u64,
    blocks: Vec<BlockInfo>,
    /// State after the last flushed block: where the next block starts.
    flushed: ChainState,
    /// State after the last appended record (flushed or not).
    appended: ChainState,
    /// Encoded records of the current block.
    raw: Vec<u8>,
    pending_count: u32,
    pending_first_time_ms: u64,
    /// Greatest covered-through time written so far.
    covered_ms: u64,
    start_offset: u64,
    poisoned: bool,
}

/// Where the stream stands at a point of the log; both the writer and the readers walk it
/// forward block by block and refuse any step that goes backwards.
#[derive(Debug, Clone, Copy)]
struct ChainState {
    end_offset: u64,
    /// Time of the last record so far (0 before any).
    last_time_ms: u64,
    covered_ms: u64,
    db: u32,
    in_multi: bool,
}

impl ChainState {
    fn start(h: &SegmentHeader) -> Self {
        ChainState {
            end_offset: h.start_offset,
            last_time_ms: 0,
            covered_ms: 0,
            db: h.start_db,
            in_multi: h.start_in_multi,
        }
    }

    /// Checks that block `b` follows this state, and moves past it. The message names the
    /// inconsistency; the caller adds the file and position.
    fn step(&mut self, b: &BlockInfo) -> std::result::Result<(), String> {
        if b.flags & !KNOWN_FLAGS != 0 {
            return Err(format!(
                "unknown block flags {:#06x} (written by a newer flashback?)",
                b.flags
            ));
        }
        if b.start_offset != self.end_offset {
            return Err(format!(
                "block starts at offset {} but the previous data ends at {}",
                b.start_offset, self.end_offset
            ));
        }
        if b.covered_through_ms < self.covered_ms {
            return Err(format!(
                "covered-through time {} goes back from {}",
                b.covered_through_ms, self.covered_ms
            ));
        }
        if b.record_count == 0 {
            if b.end_offset != b.start_offset || b.first_time_ms != 0 || b.last_time_ms != 0 {
                return Err("empty block with a non-empty offset or time range".into());
            }
            if b.end_db != self.db || b.end_in_multi != self.in_multi {
                return Err(format!(
                    "empty block says db {} multi {} but the stream is at db {} multi {}",
                    b.end_db, b.end_in_multi, self.db, self.in_multi
                ));
            }
        } else {
            if b.end_offset <= b.start_offset
                || b.end_offset - b.start_offset < u64::from(b.record_count)
            {
                return Err(format!(
                    "{} records cannot span offsets {}..{}",
                    b.record_count, b.start_offset, b.end_offset
                ));
            }
            if b.first_time_ms < self.last_time_ms {
                return Err(format!(
                    "first record time {} goes back from {}",
                    b.first_time_ms, self.last_time_ms
                ));
            }
            if b.last_time_ms < b.first_time_ms || b.covered_through_ms < b.last_time_ms {
                return Err(format!(
                    "times out of order: first {} last {} covered through {}",
                    b.first_time_ms, b.last_time_ms, b.covered_through_ms
                ));
            }
            self.last_time_ms = b.last_time_ms;
        }
        self.end_offset = b.end_offset;
        self.covered_ms = b.covered_through_ms;
        self.db = b.end_db;
        self.in_multi = b.end_in_multi;
        Ok(())
    }
}

const KNOWN_FLAGS: u16 = block_flags::CATCHUP;

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

impl<W: Write> SegmentWriter<W> {
    /// Writes the header. The replid must be 40 printable ASCII bytes (Redis' replids are 40
    /// hex digits); anything else is `InvalidInput`, because the header stores it fixed-width.
    pub fn new(mut w: W, header: &SegmentHeader, opts: WriterOptions) -> std::io::Result<Self> {
        let bytes = encode_header(header)?;
        w.write_all(&bytes)?;
        w.flush()?;
        let start = ChainState::start(header);
        Ok(SegmentWriter {
            w,
            opts,
            pos: HEADER_LEN as u64,
            blocks: Vec::new(),
            flushed: start,
            appended: start,
            raw: Vec::new(),
            pending_count: 0,
            pending_first_time_ms: 0,
            covered_ms: 0,
            start_offset: header.start_offset,
            poisoned: false,
        })
    }

    fn check_usable(&self) -> std::io::Result<()> {
        if self.poisoned {
            return Err(std::io::Error::other(
                "segment writer failed earlier; re-open the file to find its valid length",
            ));
        }
        Ok(())
    }

    /// Buffers a record in the current (uncompressed) block. Returns `InvalidInput` (and keeps
    /// nothing of the record) when `rec.end_offset - rec.resp.len()` is not the previous end
    /// offset, when `rec.resp` is empty, when its time is before the previous record's, or when
    /// the block would pass 4 GiB. An error rather than a debug panic, so that tests can check
    /// the refusal and a release build cannot write a log with a hole.
    pub fn append(&mut self, rec: &Record) -> std::io::Result<()> {
        self.check_usable()?;
        let len = rec.resp.len() as u64;
        if len == 0 {
            return Err(invalid(format!(
                "record ending at offset {} is empty; a record holds one RESP command",
                rec.end_offset
            )));
        }
        let start = rec.end_offset.checked_sub(len);
        if start != Some(self.appended.end_offset) {
            return Err(invalid(format!(
                "record of {len} bytes ending at offset {} does not start where the previous record ended ({}); records must be contiguous",
                rec.end_offset, self.appended.end_offset
            )));
        }
        if rec.time_ms < self.appended.last_time_ms {
            return Err(invalid(format!(
                "record time {} ms is before the previous record's {} ms; arrival times must not decrease",
                rec.time_ms, self.appended.last_time_ms
            )));
        }
        // 3 varints of at most 10 bytes each.
        if self.raw.len() as u64 + len + 30 > u64::from(u32::MAX) {
            return Err(invalid(
                "block would exceed 4 GiB; call flush_block first".into(),
            ));
        }
        let prev_time = if self.pending_count == 0 {
            self.pending_first_time_ms = rec.time_ms;
            rec.time_ms
        } else {
            self.appended.last_time_ms
        };
        varint::put(&mut self.raw, len);
        varint::put(&mut self.raw, rec.time_ms - prev_time);
        varint::put(
            &mut self.raw,
            (u64::from(rec.db) << 1) | u64::from(rec.boundary),
        );
        self.raw.extend_from_slice(&rec.resp);
        self.pending_count += 1;
        self.appended.end_offset = rec.end_offset;
        self.appended.last_time_ms = rec.time_ms;
        self.appended.db = rec.db;
        self.appended.in_multi = !rec.boundary;
        Ok(())
    }

    /// Records and raw (encoded, uncompressed) bytes waiting in the current block.
    pub fn pending(&self) -> (usize, usize) {
        (self.pending_count as usize, self.raw.len())
    }

    /// Compresses and writes the current block (an empty one is a heartbeat) and returns its
    /// info. Flushes `W` (so a `BufWriter` hands the block to the OS) but does not fsync.
    ///
    /// `covered_through_ms` is raised to the last record's time and to the previous block's
    /// covered-through time if it is below them: both are already known to be covered, and a
    /// wall-clock step backwards must not make the capture fail.
    pub fn flush_block(
        &mut self,
        covered_through_ms: u64,
        flags: u16,
    ) -> std::io::Result<BlockInfo> {
        self.check_usable()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(invalid(format!("unknown block flags {flags:#06x}")));
        }
        let covered = covered_through_ms
            .max(self.covered_ms)
            .max(self.appended.last_time_ms);
        let payload = if self.pending_count == 0 {
            Vec::new()
        } else {
            zstd::bulk::compress(&self.raw, self.opts.zstd_level)?
        };
        let len = BLOCK_HEADER_LEN as u64 + payload.len() as u64;
        if len > u64::from(u32::MAX) {
            return Err(invalid(
                "compressed block exceeds 4 GiB; flush smaller blocks".into(),
            ));
        }
        let empty = self.pending_count == 0;
        let info = BlockInfo {
            file_pos: self.pos,
            len: len as u32,
            flags,
            record_count: self.pending_count,
            start_offset: self.flushed.end_offset,
            end_offset: self.appended.end_offset,
            first_time_ms: if empty { 0 } else { self.pending_first_time_ms },
            last_time_ms: if empty { 0 } else { self.appended.last_time_ms },
            covered_through_ms: covered,
            end_db: self.appended.db,
            end_in_multi: self.appended.in_multi,
        };
        let header =
            encode_block_header(&info, self.raw.len() as u32, payload.len() as u32, &payload);
        self.poisoned = true;
        self.w.write_all(&header)?;
        self.w.write_all(&payload)?;
        self.w.flush()?;
        self.poisoned = false;
        self.pos += len;
        self.covered_ms = covered;
        self.appended.covered_ms = covered;
        self.flushed = self.appended;
        self.raw.clear();
        self.pending_count = 0;
        self.blocks.push(info.clone());
        Ok(info)
    }

    /// End offset of the last record appended (flushed or not).
    pub fn end_offset(&self) -> u64 {
        self.appended.end_offset
    }

    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    pub fn get_ref(&self) -> &W {
        &self.w
    }

    /// The blocks written so far.
    pub fn blocks(&self) -> &[BlockInfo] {
        &self.blocks
    }

    /// Flushes any pending records (as a block covered through `end_time_ms`), writes the
    /// footer index, flushes `W`, and returns the writer's sink. The summary's `end_time_ms`
    /// is `end_time_ms`, raised to the last block's covered-through time if it is below it.
    pub fn finish(mut self, end_time_ms: u64) -> std::io::Result<(W, SegmentSummary)> {
        self.check_usable()?;
        if self.pending_count > 0 {
            self.flush_block(end_time_ms, 0)?;
        }
        let summary = SegmentSummary {
            start_offset: self.start_offset,
            end_offset: self.flushed.end_offset,
            first_time_ms: self
                .blocks
                .iter()
                .find(|b| b.record_count > 0)
                .map_or(0, |b| b.first_time_ms),
            end_time_ms: end_time_ms.max(self.covered_ms),
            record_count: self.blocks.iter().map(|b| u64::from(b.record_count)).sum(),
            block_count: self.blocks.len() as u32,
            end_db: self.flushed.db,
            end_in_multi: self.flushed.in_multi,
        };
        let footer = encode_footer(self.pos, &self.blocks, &summary);
        self.poisoned = true;
        self.w.write_all(&footer)?;
        self.w.flush()?;
        Ok((self.w, summary))
    }
}

/// Whether a segment's bytes are expected to carry a footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// A sealed segment: the footer must be present and intact; any bad block is corruption.
    Yes,
    /// An open tail: no footer expected; blocks are scanned and a torn last block is dropped.
    /// A file that does carry an intact footer (a crash after sealing, before the rename) is
    /// read as sealed.
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
    bytes: &'a [u8],
    /// The footer's summary, when the file has an intact footer.
    footer: Option<SegmentSummary>,
    /// Why the bytes after `valid_len` were dropped.
    torn_reason: Option<String>,
}

impl<'a> SegmentFile<'a> {
    /// Reads the header and the block index (from the footer, or by scanning the blocks of an
    /// open tail). Block payloads are checked when [`records`](Self::records) decodes them; block
    /// headers are all checked here.
    ///
    /// A header that is short or fails its checksum is corruption in both modes: an agent
    /// writes and syncs the header before any block. With `Sealed::No`, the scan stops at the
    /// first block that is truncated, has a wrong magic or fails its checksum, and everything
    /// from there on is dropped as torn, even when valid-looking blocks follow: the agent only
    /// appends, so bytes after a bad block were never acknowledged as a chain and cannot be
    /// trusted. A block that passes its checksum but does not follow the previous one
    /// (offsets, times, db) is corruption, not a torn write.
    pub fn parse(name: &str, bytes: &'a [u8], sealed: Sealed) -> Result<Self> {
        let header = decode_header(name, bytes)?;
        let mut f = SegmentFile {
            name: name.to_string(),
            header,
            blocks: Vec::new(),
            valid_len: bytes.len() as u64,
            torn_tail: false,
            bytes,
            footer: None,
            torn_reason: None,
        };
        match sealed {
            Sealed::Yes => f.read_footer()?,
            Sealed::No => {
                let has_footer = bytes.len() >= HEADER_LEN + TRAILER_LEN
                    && bytes[bytes.len() - 8..] == FOOTER_MAGIC;
                if !(has_footer && f.read_footer().is_ok()) {
                    f.blocks.clear();
                    f.footer = None;
                    f.scan()?;
                }
            }
        }
        Ok(f)
    }

    /// Why the bytes after `valid_len` were dropped (an open tail with `torn_tail`).
    pub fn torn_reason(&self) -> Option<&str> {
        self.torn_reason.as_deref()
    }

    fn corrupt(&self, offset: u64, what: impl Into<String>) -> Error {
        Error::corrupt(&self.name, offset, what)
    }

    fn read_footer(&mut self) -> Result<()> {
        let bytes = self.bytes;
        let len = bytes.len();
        if len < HEADER_LEN + TRAILER_LEN {
            return Err(self.corrupt(
                len as u64,
                format!("{len} bytes is too short for a sealed segment (header + footer is {}); an open tail is read unsealed", HEADER_LEN + TRAILER_LEN),
            ));
        }
        let tpos = len - TRAILER_LEN;
        let t = &bytes[tpos..];
        if t[64..72] != FOOTER_MAGIC {
            return Err(self.corrupt(
                (len - 8) as u64,
                "no footer magic: the segment is truncated or was never sealed",
            ));
        }
        let stored_crc = le32(t, 60);
        let index_pos = le64(t, 0);
        let block_count = le32(t, 8);
        let index_len = u64::from(block_count) * INDEX_ENTRY_LEN as u64;
        if index_pos < HEADER_LEN as u64 || index_pos.checked_add(index_len) != Some(tpos as u64) {
            return Err(self.corrupt(
                tpos as u64,
                format!("footer says {block_count} index entries at byte {index_pos}, which does not end at the trailer (byte {tpos})"),
            ));
        }
        let index_pos = index_pos as usize;
        let crc = crc32c::crc32c(&bytes[index_pos..len - 12]);
        if crc != stored_crc {
            return Err(self.corrupt(
                (len - 12) as u64,
                format!(
                    "footer checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
                ),
            ));
        }
        if t[56] > 1 || t[57..60] != [0, 0, 0] {
            return Err(self.corrupt(
                (tpos + 56) as u64,
                "footer has a bad multi flag or non-zero reserved bytes",
            ));
        }
        let trailer = SegmentSummary {
            start_offset: le64(t, 16),
            end_offset: le64(t, 24),
            first_time_ms: le64(t, 32),
            end_time_ms: le64(t, 40),
            record_count: le64(t, 48),
            block_count,
            end_db: le32(t, 12),
            end_in_multi: t[56] == 1,
        };
        let mut chain = ChainState::start(&self.header);
        let mut next_pos = HEADER_LEN as u64;
        let mut blocks = Vec::with_capacity(block_count as usize);
        for i in 0..block_count as usize {
            let epos = index_pos + i * INDEX_ENTRY_LEN;
            let e = &bytes[epos..epos + INDEX_ENTRY_LEN];
            if e[18] > 1 || e[19] != 0 {
                return Err(self.corrupt(
                    epos as u64 + 18,
                    format!("index entry {i} has a bad multi flag or reserved byte"),
                ));
            }
            let b = BlockInfo {
                file_pos: le64(e, 0),
                len: le32(e, 8),
                record_count: le32(e, 12),
                flags: le16(e, 16),
                end_in_multi: e[18] == 1,
                end_db: le32(e, 20),
                start_offset: le64(e, 24),
                end_offset: le64(e, 32),
                first_time_ms: le64(e, 40),
                last_time_ms: le64(e, 48),
                covered_through_ms: le64(e, 56),
            };
            if b.file_pos != next_pos
                || next_pos.saturating_add(u64::from(b.len)) > index_pos as u64
            {
                return Err(self.corrupt(
                    epos as u64,
                    format!("index entry {i} places block at byte {} (+{}), expected byte {next_pos} before the index", b.file_pos, b.len),
                ));
            }
            chain
                .step(&b)
                .map_err(|m| self.corrupt(epos as u64, format!("index entry {i}: {m}")))?;
            // The block's own header must say the same as the index: a reader that seeks by
            // the index and one that scans must never disagree.
            let (h, _) = read_block_header(bytes, b.file_pos as usize)
                .map_err(|m| self.corrupt(b.file_pos, format!("block {i}: {m}")))?;
            if BLOCK_HEADER_LEN as u64 + u64::from(h.comp_len) != u64::from(b.len)
                || h.info(b.file_pos) != b
            {
                return Err(self.corrupt(
                    b.file_pos,
                    format!("block {i}'s header disagrees with its index entry"),
                ));
            }
            next_pos += u64::from(b.len);
            blocks.push(b);
        }
        if next_pos != index_pos as u64 {
            return Err(self.corrupt(
                next_pos,
                format!(
                    "{} bytes between the last block and the index",
                    index_pos as u64 - next_pos
                ),
            ));
        }
        let computed = summarize(&self.header, &blocks, chain.covered_ms);
        let consistent = trailer.start_offset == computed.start_offset
            && trailer.end_offset == computed.end_offset
            && trailer.first_time_ms == computed.first_time_ms
            && trailer.record_count == computed.record_count
            && trailer.end_db == computed.end_db
            && trailer.end_in_multi == computed.end_in_multi
            && trailer.end_time_ms >= chain.covered_ms;
        if !consistent {
            return Err(self.corrupt(
                tpos as u64,
                format!("footer summary {trailer:?} disagrees with its blocks {computed:?}"),
            ));
        }
        self.blocks = blocks;
        self.footer = Some(trailer);
        self.valid_len = len as u64;
        self.torn_tail = false;
        Ok(())
    }

    fn scan(&mut self) -> Result<()> {
        let bytes = self.bytes;
        let mut pos = HEADER_LEN;
        let mut chain = ChainState::start(&self.header);
        while pos < bytes.len() {
            let (h, payload) = match read_block_header(bytes, pos) {
                Ok(x) => x,
                Err(reason) => {
                    self.torn_reason = Some(format!("byte {pos}: {reason}"));
                    break;
                }
            };
            // Checksum before the chain: a torn write can leave a block whose fields are
            // garbage, which is a torn tail, not corruption.
            if let Err(m) = check_block_crc(&h, bytes, pos, payload) {
                self.torn_reason = Some(format!("byte {pos}: {m}"));
                break;
            }
            let b = h.info(pos as u64);
            chain.step(&b).map_err(|m| {
                self.corrupt(pos as u64, format!("block {}: {m}", self.blocks.len()))
            })?;
            pos += b.len as usize;
            self.blocks.push(b);
        }
        self.valid_len = pos as u64;
        self.torn_tail = pos < bytes.len();
        Ok(())
    }

    /// Decodes block `i` (index into `blocks`), checking its checksum and record contiguity.
    ///
    /// # Panics
    /// When `i >= self.blocks.len()`, like slice indexing.
    pub fn records(&self, i: usize) -> Result<Vec<Record>> {
        let b = &self.blocks[i];
        let pos = b.file_pos as usize;
        // parse() checked that the block lies inside the file.
        let (h, payload) = read_block_header(self.bytes, pos)
            .map_err(|m| self.corrupt(b.file_pos, format!("block {i}: {m}")))?;
        if h.info(b.file_pos) != *b {
            return Err(self.corrupt(
                b.file_pos,
                format!("block {i}'s header disagrees with its index entry"),
            ));
        }
        check_block_crc(&h, self.bytes, pos, payload)
            .map_err(|m| self.corrupt(b.file_pos + 64, format!("block {i}: {m}")))?;
        if b.record_count == 0 {
            return Ok(Vec::new());
        }
        let ppos = b.file_pos + BLOCK_HEADER_LEN as u64;
        match zstd::zstd_safe::get_frame_content_size(payload) {
            Ok(Some(n)) if n == u64::from(h.raw_len) => {}
            other => {
                return Err(self.corrupt(
                    ppos,
                    format!(
                        "block {i}: zstd frame size {other:?} is not the header's raw length {}",
                        h.raw_len
                    ),
                ));
            }
        }
        let raw = zstd::bulk::decompress(payload, h.raw_len as usize)
            .map_err(|e| self.corrupt(ppos, format!("block {i}: zstd: {e}")))?;
        if raw.len() != h.raw_len as usize {
            return Err(self.corrupt(
                ppos,
                format!(
                    "block {i}: decompressed to {} bytes, header says {}",
                    raw.len(),
                    h.raw_len
                ),
            ));
        }
        decode_records(&raw, b).map_err(|m| self.corrupt(ppos, format!("block {i}: {m}")))
    }

    /// Summary of what the file holds (from the footer, or computed from the scanned blocks:
    /// then `end_time_ms` is the last block's covered-through time, or the header's
    /// `created_ms` when there is no block yet).
    pub fn summary(&self) -> SegmentSummary {
        if let Some(s) = &self.footer {
            return s.clone();
        }
        let end_time = self
            .blocks
            .last()
            .map_or(self.header.created_ms, |b| b.covered_through_ms);
        summarize(&self.header, &self.blocks, end_time)
    }
}

fn summarize(h: &SegmentHeader, blocks: &[BlockInfo], end_time_ms: u64) -> SegmentSummary {
    let last = blocks.last();
    SegmentSummary {
        start_offset: h.start_offset,
        end_offset: last.map_or(h.start_offset, |b| b.end_offset),
        first_time_ms: blocks
            .iter()
            .find(|b| b.record_count > 0)
            .map_or(0, |b| b.first_time_ms),
        end_time_ms,
        record_count: blocks.iter().map(|b| u64::from(b.record_count)).sum(),
        block_count: blocks.len() as u32,
        end_db: last.map_or(h.start_db, |b| b.end_db),
        end_in_multi: last.map_or(h.start_in_multi, |b| b.end_in_multi),
    }
}

fn decode_records(raw: &[u8], b: &BlockInfo) -> std::result::Result<Vec<Record>, String> {
    let mut out = Vec::with_capacity(b.record_count as usize);
    let mut p = 0usize;
    let mut offset = b.start_offset;
    let mut time = b.first_time_ms;
    for k in 0..b.record_count {
        let at = p;
        let bad = |what: &str| format!("record {k} (raw byte {at}): {what}");
        let len = varint::get(raw, &mut p).ok_or_else(|| bad("truncated length"))?;
        let dt = varint::get(raw, &mut p).ok_or_else(|| bad("truncated time delta"))?;
        let dbb = varint::get(raw, &mut p).ok_or_else(|| bad("truncated db"))?;
        if len == 0 {
            return Err(bad("empty record"));
        }
        if k == 0 && dt != 0 {
            return Err(bad(
                "first record's time differs from the block's first time",
            ));
        }
        time = time.checked_add(dt).ok_or_else(|| bad("time overflows"))?;
        let db = u32::try_from(dbb >> 1).map_err(|_| bad("db number too large"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| p.checked_add(l))
            .filter(|&e| e <= raw.len())
            .ok_or_else(|| bad("record runs past the block"))?;
        offset = offset
            .checked_add(len)
            .ok_or_else(|| bad("offset overflows"))?;
        out.push(Record {
            end_offset: offset,
            time_ms: time,
            db,
            boundary: dbb & 1 == 1,
            resp: raw[p..end].to_vec(),
        });
        p = end;
    }
    if p != raw.len() {
        return Err(format!("{} bytes after the last record", raw.len() - p));
    }
    if offset != b.end_offset {
        return Err(format!(
            "records end at offset {offset}, header says {}",
            b.end_offset
        ));
    }
    if time != b.last_time_ms {
        return Err(format!(
            "last record time {time}, header says {}",
            b.last_time_ms
        ));
    }
    // Non-empty: the block step check guarantees record_count > 0 here.
    if let Some(last) = out.last() {
        if last.db != b.end_db || last.boundary == b.end_in_multi {
            return Err(format!(
                "last record (db {}, boundary {}) disagrees with the header's end state (db {}, in multi {})",
                last.db, last.boundary, b.end_db, b.end_in_multi
            ));
        }
    }
    Ok(out)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

const ORIGINS: [Origin; 4] = [
    Origin::NewGeneration,
    Origin::Roll,
    Origin::Resume,
    Origin::ReplidChange,
];

fn valid_replid(r: &[u8]) -> bool {
    r.len() == REPLID_LEN && r.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn encode_header(h: &SegmentHeader) -> std::io::Result<[u8; HEADER_LEN]> {
    if !valid_replid(h.replid.as_bytes()) {
        return Err(invalid(format!(
            "replid {:?} is not 40 printable ASCII characters",
            h.replid
        )));
    }
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&VERSION.to_le_bytes());
    b[10] = h.origin as u8;
    b[11] = u8::from(h.start_in_multi);
    b[12..16].copy_from_slice(&h.start_db.to_le_bytes());
    b[16..24].copy_from_slice(&h.start_offset.to_le_bytes());
    b[24..32].copy_from_slice(&h.created_ms.to_le_bytes());
    b[32..72].copy_from_slice(h.replid.as_bytes());
    // 72..76 reserved, zero.
    let crc = crc32c::crc32c(&b[..76]);
    b[76..80].copy_from_slice(&crc.to_le_bytes());
    Ok(b)
}

fn decode_header(file: &str, b: &[u8]) -> Result<SegmentHeader> {
    if b.len() < 10 {
        return Err(Error::corrupt(
            file,
            b.len() as u64,
            format!(
                "{} bytes is shorter than a segment header ({HEADER_LEN})",
                b.len()
            ),
        ));
    }
    if b[0..8] != MAGIC {
        return Err(Error::corrupt(
            file,
            0,
            "not a flashback segment (bad magic)",
        ));
    }
    let version = le16(b, 8);
    if version > VERSION {
        return Err(Error::Version {
            file: file.to_string(),
            found: version.into(),
            supported: VERSION.into(),
        });
    }
    if version == 0 {
        return Err(Error::corrupt(file, 8, "segment version 0 does not exist"));
    }
    if b.len() < HEADER_LEN {
        return Err(Error::corrupt(
            file,
            b.len() as u64,
            format!(
                "{} bytes is shorter than a segment header ({HEADER_LEN})",
                b.len()
            ),
        ));
    }
    let stored = le32(b, 76);
    let crc = crc32c::crc32c(&b[..76]);
    if crc != stored {
        return Err(Error::corrupt(
            file,
            76,
            format!("header checksum mismatch (stored {stored:#010x}, computed {crc:#010x})"),
        ));
    }
    let origin = *ORIGINS
        .get(b[10] as usize)
        .ok_or_else(|| Error::corrupt(file, 10, format!("unknown origin {}", b[10])))?;
    if b[11] > 1 || b[72..76] != [0; 4] || !valid_replid(&b[32..72]) {
        return Err(Error::corrupt(
            file,
            11,
            "header has a bad multi flag, replid or reserved bytes",
        ));
    }
    Ok(SegmentHeader {
        replid: String::from_utf8_lossy(&b[32..72]).into_owned(),
        start_offset: le64(b, 16),
        start_db: le32(b, 12),
        start_in_multi: b[11] == 1,
        created_ms: le64(b, 24),
        origin,
    })
}

/// A block header as stored.
struct BlockHeader {
    flags: u16,
    end_in_multi: bool,
    record_count: u32,
    raw_len: u32,
    comp_len: u32,
    end_db: u32,
    start_offset: u64,
    end_offset: u64,
    first_time_ms: u64,
    last_time_ms: u64,
    covered_through_ms: u64,
    crc: u32,
}

impl BlockHeader {
    fn info(&self, file_pos: u64) -> BlockInfo {
        BlockInfo {
            file_pos,
            len: BLOCK_HEADER_LEN as u32 + self.comp_len,
            flags: self.flags,
            record_count: self.record_count,
            start_offset: self.start_offset,
            end_offset: self.end_offset,
            first_time_ms: self.first_time_ms,
            last_time_ms: self.last_time_ms,
            covered_through_ms: self.covered_through_ms,
            end_db: self.end_db,
            end_in_multi: self.end_in_multi,
        }
    }
}

fn encode_block_header(
    b: &BlockInfo,
    raw_len: u32,
    comp_len: u32,
    payload: &[u8],
) -> [u8; BLOCK_HEADER_LEN] {
    let mut h = [0u8; BLOCK_HEADER_LEN];
    h[0..4].copy_from_slice(&BLOCK_MAGIC);
    h[4..6].copy_from_slice(&b.flags.to_le_bytes());
    h[6] = u8::from(b.end_in_multi);
    h[8..12].copy_from_slice(&b.record_count.to_le_bytes());
    h[12..16].copy_from_slice(&raw_len.to_le_bytes());
    h[16..20].copy_from_slice(&comp_len.to_le_bytes());
    h[20..24].copy_from_slice(&b.end_db.to_le_bytes());
    h[24..32].copy_from_slice(&b.start_offset.to_le_bytes());
    h[32..40].copy_from_slice(&b.end_offset.to_le_bytes());
    h[40..48].copy_from_slice(&b.first_time_ms.to_le_bytes());
    h[48..56].copy_from_slice(&b.last_time_ms.to_le_bytes());
    h[56..64].copy_from_slice(&b.covered_through_ms.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..64]), payload);
    h[64..68].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads the block header at `pos` and returns it with its payload slice. Errors (a string, as
/// the caller decides between "torn" and "corrupt") for a short header, a wrong magic, a payload
/// past the end of `bytes`, or inconsistent lengths.
fn read_block_header(
    bytes: &[u8],
    pos: usize,
) -> std::result::Result<(BlockHeader, &[u8]), String> {
    let Some(h) = bytes.get(pos..pos.saturating_add(BLOCK_HEADER_LEN)) else {
        return Err(format!(
            "truncated block header ({} of {BLOCK_HEADER_LEN} bytes)",
            bytes.len().saturating_sub(pos)
        ));
    };
    if h[0..4] != BLOCK_MAGIC {
        return Err("no block magic".into());
    }
    let bh = BlockHeader {
        flags: le16(h, 4),
        end_in_multi: h[6] == 1,
        record_count: le32(h, 8),
        raw_len: le32(h, 12),
        comp_len: le32(h, 16),
        end_db: le32(h, 20),
        start_offset: le64(h, 24),
        end_offset: le64(h, 32),
        first_time_ms: le64(h, 40),
        last_time_ms: le64(h, 48),
        covered_through_ms: le64(h, 56),
        crc: le32(h, 64),
    };
    if h[6] > 1 || h[7] != 0 {
        return Err("bad multi flag or reserved byte in block header".into());
    }
    let start = pos + BLOCK_HEADER_LEN;
    let Some(payload) = bytes.get(start..start.saturating_add(bh.comp_len as usize)) else {
        return Err(format!(
            "truncated block payload ({} of {} bytes)",
            bytes.len() - start,
            bh.comp_len
        ));
    };
    // Each record takes at least 4 raw bytes (three varints and one RESP byte); an empty block
    // has no payload at all.
    let lens_ok = if bh.record_count == 0 {
        bh.raw_len == 0 && bh.comp_len == 0
    } else {
        bh.comp_len > 0 && u64::from(bh.raw_len) >= 4 * u64::from(bh.record_count)
    };
    if !lens_ok {
        return Err(format!(
            "{} records cannot have raw length {} and compressed length {}",
            bh.record_count, bh.raw_len, bh.comp_len
        ));
    }
    Ok((bh, payload))
}

fn check_block_crc(
    h: &BlockHeader,
    bytes: &[u8],
    pos: usize,
    payload: &[u8],
) -> std::result::Result<(), String> {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[pos..pos + 64]), payload);
    if crc != h.crc {
        return Err(format!(
            "block checksum mismatch (stored {:#010x}, computed {crc:#010x})",
            h.crc
        ));
    }
    Ok(())
}

fn encode_footer(index_pos: u64, blocks: &[BlockInfo], s: &SegmentSummary) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * INDEX_ENTRY_LEN + TRAILER_LEN);
    for b in blocks {
        out.extend_from_slice(&b.file_pos.to_le_bytes());
        out.extend_from_slice(&b.len.to_le_bytes());
        out.extend_from_slice(&b.record_count.to_le_bytes());
        out.extend_from_slice(&b.flags.to_le_bytes());
        out.push(u8::from(b.end_in_multi));
        out.push(0);
        out.extend_from_slice(&b.end_db.to_le_bytes());
        for v in [
            b.start_offset,
            b.end_offset,
            b.first_time_ms,
            b.last_time_ms,
            b.covered_through_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out.extend_from_slice(&index_pos.to_le_bytes());
    out.extend_from_slice(&s.block_count.to_le_bytes());
    out.extend_from_slice(&s.end_db.to_le_bytes());
    for v in [
        s.start_offset,
        s.end_offset,
        s.first_time_ms,
        s.end_time_ms,
        s.record_count,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(u8::from(s.end_in_multi));
    out.extend_from_slice(&[0, 0, 0]);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&FOOTER_MAGIC);
    out
}
