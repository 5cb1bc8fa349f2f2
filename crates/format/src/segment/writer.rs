//! [`SegmentWriter`]: appends records into zstd blocks, stores records too large to hold in
//! memory as fragments, and seals the file with its footer index.
//!
//! It does no I/O on its own timer and never fsyncs: the capture decides when a block is cut
//! and when it is made durable, because only it knows what the primary has been acknowledged.

use super::chain::{summarize, ChainState, KNOWN_FLAGS};
use super::codec::{encode_block_header, encode_footer, encode_header, invalid};
use super::{
    block_flags, BlockInfo, Record, RecordMeta, SegmentHeader, SegmentSummary, WriterOptions,
    BLOCK_HEADER_LEN, HEADER_LEN, MAX_BLOCK_RAW_BYTES,
};
use crate::varint;
use std::io::Write;

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
    /// The state at the header, for the summary.
    start: ChainState,
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

impl<W: Write> SegmentWriter<W> {
    /// Writes one block (header then payload). Poisoned while the bytes are going out: a failed
    /// write leaves a partial block the writer cannot account for, so it refuses further use.
    fn write_block(
        &mut self,
        header: &[u8],
        payload: &[u8],
        len: u64,
        covered: u64,
    ) -> std::io::Result<()> {
        self.poisoned = true;
        self.w.write_all(header)?;
        self.w.write_all(payload)?;
        self.w.flush()?;
        self.poisoned = false;
        self.pos += len;
        self.covered_ms = covered;
        Ok(())
    }

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
            start: ChainState::start(header),
            poisoned: false,
            run: None,
        })
    }

    /// Continues a segment whose header and `blocks` are already in `w`, which must be
    /// positioned right after the last of them (the caller truncates any torn bytes first: a
    /// scan's [`SegmentScanner::valid_len`](super::SegmentScanner::valid_len)). Crash recovery uses it to seal an open tail in
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
            start: ChainState::start(header),
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
    /// the block would pass [`MAX_BLOCK_RAW_BYTES`](super::MAX_BLOCK_RAW_BYTES). An error rather than a debug panic, so
    /// that tests can check the refusal and a release build cannot write a log with a hole.
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
        if self.raw.len() as u64 + len + 30 > u64::from(MAX_BLOCK_RAW_BYTES) {
            return Err(invalid(format!(
                "a block would exceed {MAX_BLOCK_RAW_BYTES} raw bytes; call flush_block first, \
                 or store a record this big with append_fragment"
            )));
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
        self.write_block(&header, &payload, len, covered)?;
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
        if chunk.is_empty() || chunk.len() as u64 > u64::from(MAX_BLOCK_RAW_BYTES) {
            return Err(invalid(format!(
                "a fragment of {} bytes: it must hold 1 to {MAX_BLOCK_RAW_BYTES} bytes",
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
        self.write_block(&header, &payload, len, covered)?;
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
        let summary = summarize(&self.start, &self.blocks, end_time_ms.max(self.covered_ms));
        let footer = encode_footer(self.pos, &self.blocks, &summary);
        self.poisoned = true;
        self.w.write_all(&footer)?;
        self.w.flush()?;
        Ok((self.w, summary))
    }
}
