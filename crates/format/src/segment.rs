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
//! Size: over ~600 lines because it still holds types, writer, scanner and codec; to split into segment/{writer,scanner,codec}.rs; the split is issue 9's
//! (a house others can carry on), deferred so this round could land the trust and durability work.

pub use crate::damage::Damage;
use crate::damage::Probe;
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
    /// The fragmented record being written, if any.
    run: Option<WriterRun>,
}

#[derive(Debug, Clone, Copy)]
struct WriterRun {
    /// Offset where the fragments written so far end.
    data_end: u64,
    /// File position and block count before its first fragment, and the covered-through time
    /// then: where [`SegmentWriter::abandon_fragments`] rewinds to.
    file_pos: u64,
    blocks: usize,
    covered_ms: u64,
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
    /// Inside a fragmented record: (its start offset, file position of its first fragment
    /// block). `end_offset` is then the end of the fragments so far, not a record end.
    run: Option<(u64, u64)>,
}

impl ChainState {
    fn start(h: &SegmentHeader) -> Self {
        ChainState {
            end_offset: h.start_offset,
            last_time_ms: 0,
            covered_ms: 0,
            db: h.start_db,
            in_multi: h.start_in_multi,
            run: None,
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
        let fragment = b.flags & block_flags::FRAGMENT != 0;
        if !fragment {
            if let Some((start, _)) = self.run {
                return Err(format!(
                    "a block without the FRAGMENT flag inside the record stored in fragments from offset {start}"
                ));
            }
        } else if b.end_offset <= b.start_offset || b.record_count > 1 {
            return Err(format!(
                "fragment block spans offsets {}..{} with {} records (must be non-empty, 0 or 1 record)",
                b.start_offset, b.end_offset, b.record_count
            ));
        }
        if fragment && b.record_count == 0 {
            // A non-final fragment: no record ends here, so no time, and the db state is the
            // one at the record's start, as for a heartbeat.
            if b.first_time_ms != 0 || b.last_time_ms != 0 {
                return Err("non-final fragment with a record time".into());
            }
            if b.end_db != self.db || b.end_in_multi != self.in_multi {
                return Err(format!(
                    "non-final fragment says db {} multi {} but the stream is at db {} multi {}",
                    b.end_db, b.end_in_multi, self.db, self.in_multi
                ));
            }
            self.run.get_or_insert((b.start_offset, b.file_pos));
        } else if b.record_count == 0 {
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
            if fragment && b.first_time_ms != b.last_time_ms {
                return Err("final fragment with two record times".into());
            }
            self.last_time_ms = b.last_time_ms;
            self.run = None;
        }
        self.end_offset = b.end_offset;
        self.covered_ms = b.covered_through_ms;
        self.db = b.end_db;
        self.in_multi = b.end_in_multi;
        Ok(())
    }
}

const KNOWN_FLAGS: u16 = block_flags::CATCHUP | block_flags::FRAGMENT;

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
            run: None,
        })
    }

    /// Continues a segment whose header and `blocks` are already in `w`, which must be
    /// positioned right after the last of them (the caller truncates any torn bytes first: a
    /// scan's [`SegmentScanner::valid_len`]). Crash recovery uses it to seal an open tail in
    /// place with [`finish`](Self::finish): rewriting the tail into a copy needed as much free
    /// space again, which a spool that stopped on a full disk does not have.
    ///
    /// `blocks` must be what a scan of that file returned: they are checked to chain from the
    /// header and to sit back to back from the header's end (`InvalidInput` otherwise), and
    /// must not end inside a record stored in fragments (a scan leaves those out).
    pub fn resume(
        w: W,
        header: &SegmentHeader,
        blocks: &[BlockInfo],
        opts: WriterOptions,
    ) -> std::io::Result<Self> {
        let mut chain = ChainState::start(header);
        let mut pos = HEADER_LEN as u64;
        for (i, b) in blocks.iter().enumerate() {
            if b.file_pos != pos {
                return Err(invalid(format!(
                    "block {i} is at byte {} but the previous data ends at byte {pos}",
                    b.file_pos
                )));
            }
            chain
                .step(b)
                .map_err(|m| invalid(format!("block {i}: {m}")))?;
            pos += u64::from(b.len);
        }
        if let Some((start, _)) = chain.run {
            return Err(invalid(format!(
                "the blocks end inside the record stored in fragments from offset {start}; truncate before its first fragment"
            )));
        }
        Ok(SegmentWriter {
            w,
            opts,
            pos,
            blocks: blocks.to_vec(),
            flushed: chain,
            appended: chain,
            raw: Vec::new(),
            pending_count: 0,
            pending_first_time_ms: 0,
            covered_ms: chain.covered_ms,
            start_offset: header.start_offset,
            poisoned: false,
            run: None,
        })
    }

    fn check_no_run(&self) -> std::io::Result<()> {
        match &self.run {
            Some(r) => Err(invalid(format!(
                "a record stored in fragments is open (its fragments end at offset {}); finish it with append_fragment(.., Some(meta)) or abandon_fragments first",
                r.data_end
            ))),
            None => Ok(()),
        }
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
        self.check_no_run()?;
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
        self.check_no_run()?;
        if flags & !KNOWN_FLAGS != 0 || flags & block_flags::FRAGMENT != 0 {
            return Err(invalid(format!(
                "block flags {flags:#06x} are unknown or FRAGMENT (use append_fragment)"
            )));
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

    /// The sink, for truncating it after [`abandon_fragments`](Self::abandon_fragments).
    /// Writing through it makes the file unreadable.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }

    /// Writes one slice of a record too large to hold whole (flag `FRAGMENT`), as its own
    /// block, at once. Slices follow each other from the previous record's end; `end` is given
    /// with the last slice and finishes the record, which then counts like any other (its
    /// `end_offset` must be where the slices end). Pending records must be flushed first, and
    /// until the record is finished `append`, `flush_block` and `finish` are refused: a
    /// fragmented record is never interleaved with anything, so a reader can pass its bytes on
    /// as they come. `flags` may add `CATCHUP`; `covered_through_ms` is raised as in
    /// [`flush_block`](Self::flush_block).
    ///
    /// Keep slices to a few MiB: each is compressed and held in memory once.
    pub fn append_fragment(
        &mut self,
        chunk: &[u8],
        end: Option<&RecordMeta>,
        covered_through_ms: u64,
        flags: u16,
    ) -> std::io::Result<BlockInfo> {
        self.check_usable()?;
        if self.pending_count > 0 {
            return Err(invalid(
                "records are pending in the current block; call flush_block before append_fragment"
                    .into(),
            ));
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(invalid(format!("unknown block flags {flags:#06x}")));
        }
        if chunk.is_empty() || chunk.len() as u64 > u64::from(u32::MAX) {
            return Err(invalid(format!(
                "a fragment of {} bytes: it must hold 1 byte to 4 GiB",
                chunk.len()
            )));
        }
        let start = self.run.map_or(self.appended.end_offset, |r| r.data_end);
        let data_end = start + chunk.len() as u64;
        if let Some(m) = end {
            if m.end_offset != data_end {
                return Err(invalid(format!(
                    "the record's end offset {} is not where its fragments end ({data_end})",
                    m.end_offset
                )));
            }
            if m.time_ms < self.appended.last_time_ms {
                return Err(invalid(format!(
                    "record time {} ms is before the previous record's {} ms; arrival times must not decrease",
                    m.time_ms, self.appended.last_time_ms
                )));
            }
        }
        let covered = covered_through_ms
            .max(self.covered_ms)
            .max(end.map_or(0, |m| m.time_ms));
        let payload = zstd::bulk::compress(chunk, self.opts.zstd_level)?;
        let len = BLOCK_HEADER_LEN as u64 + payload.len() as u64;
        if len > u64::from(u32::MAX) {
            return Err(invalid(
                "compressed fragment exceeds 4 GiB; write smaller ones".into(),
            ));
        }
        let info = BlockInfo {
            file_pos: self.pos,
            len: len as u32,
            flags: flags | block_flags::FRAGMENT,
            record_count: u32::from(end.is_some()),
            start_offset: start,
            end_offset: data_end,
            first_time_ms: end.map_or(0, |m| m.time_ms),
            last_time_ms: end.map_or(0, |m| m.time_ms),
            covered_through_ms: covered,
            end_db: end.map_or(self.appended.db, |m| m.db),
            end_in_multi: end.map_or(self.appended.in_multi, |m| !m.boundary),
        };
        let header = encode_block_header(&info, chunk.len() as u32, payload.len() as u32, &payload);
        let run = self.run.unwrap_or(WriterRun {
            data_end: start,
            file_pos: self.pos,
            blocks: self.blocks.len(),
            covered_ms: self.covered_ms,
        });
        self.poisoned = true;
        self.w.write_all(&header)?;
        self.w.write_all(&payload)?;
        self.w.flush()?;
        self.poisoned = false;
        self.pos += len;
        self.covered_ms = covered;
        self.blocks.push(info.clone());
        match end {
            Some(m) => {
                self.run = None;
                self.appended = ChainState {
                    end_offset: m.end_offset,
                    last_time_ms: m.time_ms,
                    covered_ms: covered,
                    db: m.db,
                    in_multi: !m.boundary,
                    run: None,
                };
                self.flushed = self.appended;
            }
            None => self.run = Some(WriterRun { data_end, ..run }),
        }
        Ok(info)
    }

    /// True between the first and the final fragment of a record.
    pub fn in_fragments(&self) -> bool {
        self.run.is_some()
    }

    /// Forgets an unfinished fragmented record (the link dropped mid-command; the primary
    /// will send it again whole). Returns the file length to truncate the sink to, and seek
    /// to, before anything else is written; `None` when no record was open. If the caller
    /// cannot truncate, it must drop the writer and re-parse the file, which reads the
    /// unfinished fragments as a torn tail.
    pub fn abandon_fragments(&mut self) -> Option<u64> {
        let r = self.run.take()?;
        self.pos = r.file_pos;
        self.blocks.truncate(r.blocks);
        self.covered_ms = r.covered_ms;
        Some(r.file_pos)
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
        self.check_no_run()?;
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
    /// A bad block with an intact block anywhere after it is damage, not torn
    /// ([`Error::Damaged`]). A file that does carry an intact footer (a crash after sealing,
    /// before the rename) is read as sealed.
    No,
}

/// A block read by [`SegmentScanner`]: its index entry and its still-compressed payload.
#[derive(Debug, Clone)]
pub struct ScannedBlock {
    pub index: usize,
    pub info: BlockInfo,
    pub(crate) raw_len: u32,
    pub(crate) payload: Vec<u8>,
}

#[derive(Debug)]
enum Next {
    Header,
    BlockHeader,
    Payload(Box<([u8; BLOCK_HEADER_LEN], BlockHeader)>),
    /// The footer, of which these first bytes were read as a would-be block header.
    Footer(Vec<u8>),
    /// In an open tail, after a bad block: the rest of the file is searched for intact blocks.
    Probe(Box<Probe>),
    Done,
}

/// Reads a segment front to back holding one block at a time, for segments too large to hold
/// whole (a fragmented 512 MB record). It does no I/O itself, so that a blocking file and an
/// async object store can drive it alike: ask [`next_need`](Self::next_need) how many bytes
/// come next, [`feed`](Self::feed) exactly those, and get each block as it completes.
/// [`SegmentReader`] drives it over `std::io::Read`.
///
/// It knows the file's length up front (a store lists it). In a sealed segment the footer must
/// follow the last block and equal, byte for byte, the index of the blocks read; any bad block
/// is [`Error::Corrupt`]. In an open tail the scan stops at the first bad block (truncated, no
/// magic, a bad header, a checksum mismatch), then reads the rest of the file in bounded chunks
/// looking for any block that verifies after it: if none does, the bad bytes are a torn write
/// and dropped ([`torn_reason`](Self::torn_reason)); if one does, the scan fails with
/// [`Error::Damaged`], and [`damage`](Self::damage), [`blocks`](Self::blocks),
/// [`summary`](Self::summary) and [`valid_len`](Self::valid_len) still describe the valid
/// prefix before it, for a caller that keeps what is good. A block that verifies but does not
/// follow the one before (offsets, times, db) is corruption. One difference follows from
/// streaming: the fragments of a record
/// whose final fragment never comes (the end of an open tail) have already been handed out
/// when the scan ends; the scan then reports them torn ([`torn_reason`](Self::torn_reason))
/// and leaves them out of [`summary`](Self::summary) and [`valid_len`](Self::valid_len). A
/// consumer that acts on fragments before the final one must stop at an offset the summary
/// covers, as restore does.
#[derive(Debug)]
pub struct SegmentScanner {
    name: String,
    len: u64,
    sealed: Sealed,
    pos: u64,
    next: Next,
    header: Option<SegmentHeader>,
    chain: Option<ChainState>,
    blocks: Vec<BlockInfo>,
    footer: Option<SegmentSummary>,
    torn_reason: Option<String>,
    damage: Option<Damage>,
    valid_len: u64,
}

impl SegmentScanner {
    /// `len` is the file's length; bytes beyond it (a tail that grew since) are not read.
    pub fn new(name: &str, len: u64, sealed: Sealed) -> Self {
        SegmentScanner {
            name: name.to_string(),
            len,
            sealed,
            pos: 0,
            next: Next::Header,
            header: None,
            chain: None,
            blocks: Vec::new(),
            footer: None,
            torn_reason: None,
            damage: None,
            valid_len: 0,
        }
    }

    fn corrupt(&self, offset: u64, what: impl Into<String>) -> Error {
        Error::corrupt(&self.name, offset, what)
    }

    /// A bad block at `self.pos`, of which `consumed` were fed already (the stream cannot go
    /// back). In a sealed segment: corruption. In a tail: torn unless an intact block follows,
    /// which the probe (driven by `next_need`/`feed`) finds out.
    fn torn(&mut self, what: String, consumed: &[u8]) -> Result<()> {
        if self.sealed == Sealed::Yes {
            return Err(self.corrupt(self.pos, what));
        }
        // No room for a whole block after the bad one's first byte: nothing to probe.
        if self.len - self.pos > BLOCK_HEADER_LEN as u64 {
            let mut p = Probe::new(self.pos, what, self.len);
            p.feed(consumed.get(1..).unwrap_or_default());
            self.next = Next::Probe(Box::new(p));
            return self.next_need().map(|_| ());
        }
        self.torn_reason = Some(format!("byte {}: {what}", self.pos));
        self.finish();
        Ok(())
    }

    /// The probe has seen the rest of the file: torn, or damaged.
    fn end_probe(&mut self, probe: Probe) -> Result<()> {
        self.pos = probe.bad_pos;
        let reason = format!("byte {}: {}", probe.bad_pos, probe.what);
        let torn_reason = self.torn_reason.replace(reason);
        self.finish();
        let good_end = match (self.blocks.last(), &self.header) {
            (Some(b), _) => b.end_offset,
            (None, Some(h)) => h.start_offset,
            (None, None) => 0,
        };
        match probe.finish(good_end) {
            None => Ok(()),
            Some(d) => {
                self.torn_reason = torn_reason;
                self.damage = Some(d);
                Err(self.damaged())
            }
        }
    }

    fn damaged(&self) -> Error {
        Error::Damaged {
            file: self.name.clone(),
            damage: Box::new(self.damage.clone().expect("damage found")),
        }
    }

    fn finish(&mut self) {
        self.next = Next::Done;
        self.valid_len = self.pos;
        if let Some((start, run_pos)) = self.chain.as_mut().and_then(|c| c.run.take()) {
            self.blocks.retain(|b| b.file_pos < run_pos);
            self.valid_len = run_pos;
            if self.torn_reason.is_none() {
                self.torn_reason = Some(format!(
                    "byte {run_pos}: the record stored in fragments from offset {start} has no final fragment"
                ));
            }
        }
    }

    /// How many bytes [`feed`](Self::feed) takes next; 0 when the scan is over. Errors when
    /// a sealed segment ends where a block or the footer should be.
    pub fn next_need(&mut self) -> Result<usize> {
        let rem = self.len - self.pos;
        let footer_len = (self.blocks.len() * INDEX_ENTRY_LEN + TRAILER_LEN) as u64;
        match &self.next {
            Next::Done if self.damage.is_some() => Err(self.damaged()),
            Next::Done => Ok(0),
            Next::Probe(p) if p.need() == 0 => {
                let Next::Probe(p) = std::mem::replace(&mut self.next, Next::Done) else {
                    unreachable!("matched above")
                };
                self.end_probe(*p)?;
                Ok(0)
            }
            Next::Probe(p) => Ok(p.need()),
            // A short header is corruption in both modes; decode_header says how.
            Next::Header if self.len == 0 => Err(decode_header(&self.name, &[])
                .err()
                .unwrap_or_else(|| self.corrupt(0, "empty file"))),
            Next::Header => Ok(rem.min(HEADER_LEN as u64) as usize),
            Next::BlockHeader if rem == 0 => {
                if self.sealed == Sealed::Yes {
                    return Err(self.corrupt(
                        self.pos,
                        "no footer: the segment is truncated or was never sealed",
                    ));
                }
                self.finish();
                Ok(0)
            }
            // Only a footer can start there in a sealed segment; in a tail a block may too, and
            // its magic tells them apart (`feed`).
            Next::BlockHeader if rem == footer_len && self.sealed == Sealed::Yes => {
                self.next = Next::Footer(Vec::new());
                Ok(rem as usize)
            }
            Next::BlockHeader if rem < BLOCK_HEADER_LEN as u64 => {
                self.torn(
                    format!("truncated block header ({rem} of {BLOCK_HEADER_LEN} bytes)"),
                    &[],
                )?;
                self.next_need()
            }
            Next::BlockHeader => Ok(BLOCK_HEADER_LEN),
            Next::Payload(h) if u64::from(h.1.comp_len) > rem => {
                let what = format!("truncated block payload ({rem} of {} bytes)", h.1.comp_len);
                let raw = h.0;
                self.pos -= BLOCK_HEADER_LEN as u64;
                self.torn(what, &raw)?;
                self.next_need()
            }
            Next::Payload(h) => Ok(h.1.comp_len as usize),
            Next::Footer(prefix) => Ok(rem as usize - prefix.len()),
        }
    }

    /// Takes exactly the bytes [`next_need`](Self::next_need) asked for; returns the block
    /// they complete, if any.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<ScannedBlock>> {
        match std::mem::replace(&mut self.next, Next::Done) {
            Next::Done => Ok(None),
            Next::Header => {
                let h = decode_header(&self.name, bytes)?;
                self.chain = Some(ChainState::start(&h));
                self.header = Some(h);
                self.pos = HEADER_LEN as u64;
                self.next = Next::BlockHeader;
                Ok(None)
            }
            Next::BlockHeader => {
                let footer_len = (self.blocks.len() * INDEX_ENTRY_LEN + TRAILER_LEN) as u64;
                if self.len - self.pos == footer_len && !bytes.starts_with(&BLOCK_MAGIC) {
                    self.next = Next::Footer(bytes.to_vec());
                    return Ok(None);
                }
                let h = match parse_block_header(bytes) {
                    Ok(h) => h,
                    Err(m) => {
                        self.torn(m, bytes)?;
                        return Ok(None);
                    }
                };
                let mut raw = [0u8; BLOCK_HEADER_LEN];
                raw.copy_from_slice(bytes);
                self.pos += BLOCK_HEADER_LEN as u64;
                self.next = Next::Payload(Box::new((raw, h)));
                if self.next_need()? == 0 && matches!(self.next, Next::Payload(_)) {
                    // An empty payload (a heartbeat) completes the block now.
                    return self.feed(&[]);
                }
                Ok(None)
            }
            Next::Payload(b) => {
                let (raw, h) = *b;
                let block_pos = self.pos - BLOCK_HEADER_LEN as u64;
                // Checksum before the chain: a torn write can leave a block whose fields are
                // garbage, which is a torn tail (or damage), not a broken chain.
                let crc = crc32c::crc32c_append(crc32c::crc32c(&raw[..64]), bytes);
                if crc != h.crc {
                    self.pos = block_pos;
                    let mut consumed = raw.to_vec();
                    consumed.extend_from_slice(bytes);
                    self.torn(
                        format!(
                            "block checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                            h.crc
                        ),
                        &consumed,
                    )?;
                    return Ok(None);
                }
                let info = h.info(block_pos);
                let index = self.blocks.len();
                let chain = self.chain.as_mut().expect("header read first");
                if let Err(m) = chain.step(&info) {
                    return Err(self.corrupt(block_pos, format!("block {index}: {m}")));
                }
                self.pos += bytes.len() as u64;
                self.blocks.push(info.clone());
                self.next = Next::BlockHeader;
                Ok(Some(ScannedBlock {
                    index,
                    info,
                    raw_len: h.raw_len,
                    payload: bytes.to_vec(),
                }))
            }
            Next::Footer(mut prefix) => {
                prefix.extend_from_slice(bytes);
                self.check_footer(&prefix)?;
                Ok(None)
            }
            Next::Probe(mut p) => {
                p.feed(bytes);
                if p.need() == 0 {
                    self.end_probe(*p)?;
                } else {
                    self.next = Next::Probe(p);
                }
                Ok(None)
            }
        }
    }

    fn check_footer(&mut self, bytes: &[u8]) -> Result<()> {
        let header = self.header.as_ref().expect("header read first");
        let chain = self.chain.as_ref().expect("header read first");
        let end_time = le64(bytes, bytes.len() - TRAILER_LEN + 40);
        let summary = summarize(header, &self.blocks, end_time);
        // The writer's own encoding of the blocks read: equal bytes check the index entries,
        // the trailer, its checksum and the reserved bytes in one comparison.
        let expected = encode_footer(self.pos, &self.blocks, &summary);
        let bad = if chain.run.is_some() {
            Some("the segment ends inside a record stored in fragments".to_string())
        } else if end_time < chain.covered_ms {
            Some(format!(
                "footer end time {end_time} is before the last block's covered-through {}",
                chain.covered_ms
            ))
        } else if bytes != expected.as_slice() {
            Some("footer does not match the blocks before it (index, summary or checksum)".into())
        } else {
            None
        };
        match bad {
            Some(m) => self.torn(m, bytes),
            None => {
                self.footer = Some(summary);
                self.pos = self.len;
                self.next = Next::Done;
                self.valid_len = self.len;
                Ok(())
            }
        }
    }

    /// Decodes a block this scanner returned.
    pub fn decode(&self, b: &ScannedBlock) -> Result<Vec<Item>> {
        decode_block(&self.name, b.index, &b.info, b.raw_len, &b.payload)
    }

    /// The header, once the first bytes were fed.
    pub fn header(&self) -> Option<&SegmentHeader> {
        self.header.as_ref()
    }

    /// The footer's summary, when the scan found an intact footer (an open tail that was
    /// sealed but not yet renamed when its agent stopped).
    pub fn footer(&self) -> Option<&SegmentSummary> {
        self.footer.as_ref()
    }

    /// Why the scan dropped the bytes after [`valid_len`](Self::valid_len) (an open tail).
    pub fn torn_reason(&self) -> Option<&str> {
        self.torn_reason.as_deref()
    }

    /// In an open tail that [`Error::Damaged`] ended: where the damage is and what follows.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// Once the scan is over: the length of the valid prefix (header + intact blocks, without
    /// a torn end or anything from a damaged block on); a writer resuming the file truncates
    /// it here. For a sealed segment: the file length.
    pub fn valid_len(&self) -> u64 {
        self.valid_len
    }

    /// The blocks read so far (once the scan is over: the whole records' blocks).
    pub fn blocks(&self) -> &[BlockInfo] {
        &self.blocks
    }

    /// Once the scan is over: the footer's summary, or one computed from the blocks read (then
    /// `end_time_ms` is the last block's covered-through time, or the header's `created_ms`
    /// when there is no block).
    pub fn summary(&self) -> Option<SegmentSummary> {
        if let Some(s) = &self.footer {
            return Some(s.clone());
        }
        let h = self.header.as_ref()?;
        let end_time = self
            .blocks
            .last()
            .map_or(h.created_ms, |b| b.covered_through_ms);
        Some(summarize(h, &self.blocks, end_time))
    }
}

/// [`SegmentScanner`] over a blocking reader (a file).
pub struct SegmentReader<R> {
    r: R,
    scanner: SegmentScanner,
    buf: Vec<u8>,
}

impl<R: std::io::Read> SegmentReader<R> {
    /// `len` is the file's length (its metadata); `r` must yield at least that many bytes.
    pub fn new(name: &str, r: R, len: u64, sealed: Sealed) -> Self {
        SegmentReader {
            r,
            scanner: SegmentScanner::new(name, len, sealed),
            buf: Vec::new(),
        }
    }

    /// The next block, or `None` at the end (see [`SegmentScanner`] for what the end means).
    pub fn next_block(&mut self) -> Result<Option<ScannedBlock>> {
        loop {
            let n = self.scanner.next_need()?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.resize(n, 0);
            self.r
                .read_exact(&mut self.buf)
                .map_err(|source| Error::Io {
                    file: self.scanner.name.clone(),
                    source,
                })?;
            if let Some(b) = self.scanner.feed(&self.buf)? {
                return Ok(Some(b));
            }
        }
    }

    pub fn scanner(&self) -> &SegmentScanner {
        &self.scanner
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

/// Decompresses a block whose header and checksum were checked, and decodes it.
fn decode_block(
    name: &str,
    i: usize,
    b: &BlockInfo,
    raw_len: u32,
    payload: &[u8],
) -> Result<Vec<Item>> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let ppos = b.file_pos + BLOCK_HEADER_LEN as u64;
    let corrupt = |what: String| Error::corrupt(name, ppos, format!("block {i}: {what}"));
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n == u64::from(raw_len) => {}
        other => {
            return Err(corrupt(format!(
                "zstd frame size {other:?} is not the header's raw length {raw_len}"
            )));
        }
    }
    let raw = zstd::bulk::decompress(payload, raw_len as usize)
        .map_err(|e| corrupt(format!("zstd: {e}")))?;
    if raw.len() != raw_len as usize {
        return Err(corrupt(format!(
            "decompressed to {} bytes, header says {raw_len}",
            raw.len()
        )));
    }
    if b.flags & block_flags::FRAGMENT != 0 {
        // The header check made raw_len the slice's length; the metadata is the header's.
        let end = (b.record_count == 1).then_some(RecordMeta {
            end_offset: b.end_offset,
            time_ms: b.last_time_ms,
            db: b.end_db,
            boundary: !b.end_in_multi,
        });
        return Ok(vec![Item::Fragment(Fragment {
            start_offset: b.start_offset,
            db: b.end_db,
            bytes: raw,
            end,
        })]);
    }
    let recs = decode_records(&raw, b).map_err(corrupt)?;
    Ok(recs.into_iter().map(Item::Record).collect())
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

pub(crate) fn decode_header(file: &str, b: &[u8]) -> Result<SegmentHeader> {
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
#[derive(Debug)]
pub(crate) struct BlockHeader {
    flags: u16,
    end_in_multi: bool,
    record_count: u32,
    pub(crate) raw_len: u32,
    pub(crate) comp_len: u32,
    end_db: u32,
    pub(crate) start_offset: u64,
    pub(crate) end_offset: u64,
    first_time_ms: u64,
    last_time_ms: u64,
    covered_through_ms: u64,
    pub(crate) crc: u32,
}

impl BlockHeader {
    pub(crate) fn info(&self, file_pos: u64) -> BlockInfo {
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

/// Decodes and checks the fields of a 68-byte block header (not its checksum, which covers
/// the payload too).
pub(crate) fn parse_block_header(h: &[u8]) -> std::result::Result<BlockHeader, String> {
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
    // Each record takes at least 4 raw bytes (three varints and one RESP byte); an empty block
    // has no payload at all; a fragment's raw bytes are exactly its slice of the record.
    let lens_ok = if bh.flags & block_flags::FRAGMENT != 0 {
        bh.comp_len > 0
            && bh.raw_len > 0
            && bh.record_count <= 1
            && Some(u64::from(bh.raw_len)) == bh.end_offset.checked_sub(bh.start_offset)
    } else if bh.record_count == 0 {
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
    Ok(bh)
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
