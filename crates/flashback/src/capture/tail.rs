//! The open tail segment: records are appended into the current block, blocks are written
//! (compressed) when full or at an fsync, the tail rolls when big or old enough, and sealing
//! (footer, fsync, rename to the sealed name) is the commit point of a segment.
//!
//! The sealed name's size and crc32c are summed as the bytes are written (a
//! [`Crc32cWriter`] under the segment writer), not read back at the seal: that was a second,
//! blocking pass on the capture task, and it blessed whatever the disk held by then. The one
//! cut-back in normal running (a big command's abandoned fragments) restores the sum saved
//! before its first fragment; crash recovery, which cuts torn bytes off a tail a previous
//! process left, re-reads that file (see `recover.rs`).

use super::log::{create_dir_durable, io_err, sync_dir, Log};
use super::CaptureError;
use crate::store::layout::{self, Crc32cWriter, SealedName};
use crate::timeline::summarize::{Meta, Summarizer};
use flashback_format::segment::{
    Origin, Record, RecordMeta, SegmentHeader, SegmentWriter, WriterOptions,
};
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Instant;
use tracing::warn;

/// A raw block is compressed and written once it holds this much, fsync or not: zstd does
/// well on ~1 MiB of similar commands, and it bounds what a crash can tear.
pub(super) const BLOCK_BYTES: usize = 1 << 20;

pub struct Tail {
    pub(super) writer: SegmentWriter<Crc32cWriter<File>>,
    pub(super) path: PathBuf,
    pub(super) generation: String,
    pub(super) header: SegmentHeader,
    pub(super) opened: Instant,
    /// Flags of the records waiting in the writer's current block.
    pub(super) pending_flags: u16,
    /// The file's size and crc32c before the first fragment of the open big command: what
    /// the sum goes back to when [`abandon_partial`](Log::abandon_partial) cuts them off.
    pub(super) before_fragments: (u64, u32),
    /// The segment's summary so far (`timeline::summarize`), stored beside it at the seal:
    /// summed here, as records pass, because reading a sealed segment back to summarise it
    /// would be a second pass over every byte on the capture task.
    pub(super) summary: Summarizer,
    /// The first bytes of the big command being stored in fragments: enough for its name and
    /// first keys, which is all the summary needs of it.
    pub(super) big_head: Vec<u8>,
}

/// How much of a fragmented command's start the summary looks at.
const BIG_HEAD_BYTES: usize = 64 << 10;

impl Log {
    /// Opens a new tail segment at the current stream position.
    pub fn open_tail(&mut self, origin: Origin, now_ms: u64) -> Result<(), CaptureError> {
        debug_assert!(self.tail.is_none());
        let (Some(gen), Some(st)) = (self.generation.clone(), self.state.as_ref()) else {
            return Err(CaptureError::Unsupported(
                "no generation to write into".into(),
            ));
        };
        let header = SegmentHeader {
            replid: st.replid.clone(),
            start_offset: st.offset,
            start_db: st.db,
            start_in_multi: st.in_multi,
            created_ms: now_ms,
            origin,
        };
        let path = self.local(&layout::tail_key(&self.source, &gen, st.offset));
        if let Some(dir) = path.parent() {
            create_dir_durable(dir)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let writer = SegmentWriter::new(Crc32cWriter::new(file), &header, WriterOptions::default())
            .map_err(io_err(&path))?;
        writer
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(io_err(&path))?;
        sync_dir(path.parent().unwrap_or(&self.root))?;
        let now = Instant::now();
        self.tail = Some(Tail {
            writer,
            path,
            generation: gen,
            opened: now,
            pending_flags: 0,
            before_fragments: (0, 0),
            summary: Summarizer::new(header.start_offset, header.start_in_multi),
            big_head: Vec::new(),
            header,
        });
        Ok(())
    }

    pub fn has_tail(&self) -> bool {
        self.tail.is_some()
    }

    /// Buffers a record (not yet durable).
    pub fn append(&mut self, rec: &Record, flags: u16) -> Result<(), CaptureError> {
        let argv = crate::timeline::keys::argv_prefix(&rec.resp);
        self.append_parsed(rec, &argv, flags)
    }

    /// [`Log::append`] of a record whose arguments are already parsed (the session's framer
    /// did it): the summary reuses them instead of parsing the RESP again.
    pub fn append_parsed(
        &mut self,
        rec: &Record,
        argv: &[&[u8]],
        flags: u16,
    ) -> Result<(), CaptureError> {
        let tail = self
            .tail
            .as_mut()
            .ok_or_else(|| CaptureError::Unsupported("no open segment".into()))?;
        if tail.writer.pending().0 > 0 && tail.pending_flags != flags {
            // A block carries one set of flags: catch-up records never share one with live ones.
            self.flush_block()?;
        }
        let tail = self.tail.as_mut().expect("still open");
        tail.pending_flags = flags;
        tail.writer.append(rec).map_err(io_err(&tail.path))?;
        tail.summary.record_argv(rec, argv);
        if tail.writer.pending().1 >= BLOCK_BYTES {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Writes the next part of a command too big to buffer (see `replica::StreamItem::Part`)
    /// as its own block; `end` with the last part makes it a record. Not yet durable.
    pub fn append_fragment(
        &mut self,
        chunk: &[u8],
        end: Option<&RecordMeta>,
        flags: u16,
    ) -> Result<(), CaptureError> {
        let pending = self.tail.as_ref().is_some_and(|t| t.writer.pending().0 > 0);
        if pending {
            self.flush_block()?;
        }
        let covered = self.evidence_ms;
        let tail = self
            .tail
            .as_mut()
            .ok_or_else(|| CaptureError::Unsupported("no open segment".into()))?;
        if !tail.writer.in_fragments() {
            tail.before_fragments = tail.writer.get_ref().size_crc32c();
            tail.big_head.clear();
        }
        if tail.big_head.len() < BIG_HEAD_BYTES {
            let room = BIG_HEAD_BYTES - tail.big_head.len();
            tail.big_head
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        tail.writer
            .append_fragment(chunk, end, covered, flags)
            .map_err(io_err(&tail.path))?;
        if let Some(m) = end {
            let meta = Meta {
                end_offset: m.end_offset,
                time_ms: m.time_ms,
                db: m.db,
                boundary: m.boundary,
            };
            tail.summary.add(meta, &tail.big_head);
            tail.big_head = Vec::new();
        }
        Ok(())
    }

    /// Drops the fragments of a big command whose end never arrived (the link dropped): they
    /// are cut off the tail, and the primary sends the command again whole after a resync.
    pub fn abandon_partial(&mut self) -> Result<(), CaptureError> {
        if let Some(t) = self.tail.as_mut() {
            t.big_head = Vec::new();
            if let Some(pos) = t.writer.abandon_fragments() {
                warn!("dropping the partly received big command after offset {}; it will be received again", t.writer.end_offset());
                truncate(t.writer.get_mut().get_mut(), pos).map_err(io_err(&t.path))?;
                let sum = if t.before_fragments.0 == pos {
                    t.before_fragments
                } else {
                    // Not reached (the writer rewinds to where its first fragment began, which
                    // is where the sum was saved); if it ever is, the file is the truth.
                    debug_assert!(
                        false,
                        "fragments began at {pos}, the sum was saved at {}",
                        t.before_fragments.0
                    );
                    layout::file_size_crc32c(&t.path).map_err(io_err(&t.path))?
                };
                t.writer.get_mut().rewind_to(sum);
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<(), CaptureError> {
        if let Some(t) = self.tail.as_mut() {
            t.writer
                .flush_block(self.evidence_ms, t.pending_flags)
                .map_err(io_err(&t.path))?;
            t.pending_flags = 0;
        }
        Ok(())
    }

    /// Writes what is pending (stamped with `covered_ms`, the evidence) and fsyncs; afterwards
    /// everything appended is durable. With `heartbeat`, an idle tail gets an empty block, so
    /// the window's end (and `info`'s lag) follows the evidence without writes; the capture
    /// core asks for one only when the evidence moved.
    pub fn make_durable(&mut self, covered_ms: u64, heartbeat: bool) -> Result<bool, CaptureError> {
        self.evidence_ms = self.evidence_ms.max(covered_ms);
        let Some(t) = self.tail.as_mut() else {
            return Ok(false);
        };
        let pending = t.writer.pending().0 > 0;
        let unsynced = t.writer.end_offset() > self.durable_offset;
        // No heartbeat between the fragments of a record: the format forbids it, and the
        // fragments themselves show the link is alive.
        let beat = !t.writer.in_fragments() && heartbeat;
        if !(pending || unsynced || beat) {
            return Ok(false);
        }
        if pending || beat {
            self.flush_block()?;
        }
        let t = self.tail.as_mut().expect("still open");
        t.writer
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(io_err(&t.path))?;
        self.durable_offset = t.writer.end_offset();
        if let Some(b) = t.writer.blocks().last() {
            self.covered_through_ms = self.covered_through_ms.max(b.covered_through_ms);
        }
        Ok(true)
    }

    /// [`make_durable`](Self::make_durable) at the evidence already known: on a disconnect, a
    /// failure or shutdown, when no newer evidence can come.
    pub fn make_durable_now(&mut self) -> Result<bool, CaptureError> {
        self.make_durable(self.evidence_ms, false)
    }

    /// Seals the tail when it is big or old enough, at a transaction boundary.
    pub fn roll_if_due(&mut self, now_ms: u64) -> Result<(), CaptureError> {
        // By age only when the tail holds records: an idle agent's heartbeats alone are not
        // worth an object (the primary's PINGs every 10 s are records, so a live window's end
        // still advances on a remote store).
        let due = self.tail.as_ref().is_some_and(|t| {
            !t.writer.in_fragments()
                && (t.writer.bytes_written() >= self.roll_bytes
                    || (t.opened.elapsed() >= self.roll_age
                        && t.writer.end_offset() > t.header.start_offset))
        });
        if due && self.state.as_ref().is_some_and(|s| !s.in_multi) {
            self.seal()?;
            self.open_tail(Origin::Roll, now_ms)?;
        }
        Ok(())
    }

    /// Footer, fsync, rename to the sealed name. The rename is the commit point: a crash
    /// before it leaves a tail that the next start recovers. The seal time is the last
    /// evidence, so a generation that ends (the primary restarted empty, a gap) ends where the
    /// agent last could vouch for it, not when the next one began. A tail that never got a
    /// block is removed instead: it holds nothing, and its creation time is no evidence.
    pub fn seal(&mut self) -> Result<(), CaptureError> {
        self.abandon_partial()?;
        let Some(t) = self.tail.take() else {
            return Ok(());
        };
        let mut t = t;
        if t.writer.blocks().is_empty()
            && t.writer.pending().0 == 0
            && self.evidence_ms > self.covered_through_ms
        {
            // Evidence arrived since the last block (a clean stop's last poll): one heartbeat
            // carries it, or the window would end at the previous seal.
            t.writer
                .flush_block(self.evidence_ms, 0)
                .map_err(io_err(&t.path))?;
        }
        if t.writer.blocks().is_empty() && t.writer.pending().0 == 0 {
            drop(t.writer);
            fs::remove_file(&t.path).map_err(io_err(&t.path))?;
            sync_dir(t.path.parent().unwrap_or(&self.root))?;
            return Ok(());
        }
        let end_ms = self.evidence_ms.max(self.covered_through_ms);
        let (file, summary) = t.writer.finish(end_ms).map_err(io_err(&t.path))?;
        file.get_ref().sync_all().map_err(io_err(&t.path))?;
        self.durable_offset = summary.end_offset;
        self.covered_through_ms = summary.end_time_ms;
        let name = sealed_name(&t.header, &summary, file.size_crc32c());
        // The summary goes first: a crash before the segment's rename below leaves it beside
        // the tail that recovery seals with these same offsets; a summary that failed to
        // write only costs `timeline` a read of the segment.
        let digest = t.summary.finish(summary.end_offset);
        self.write_summary(&t.generation, &digest);
        let key = layout::segment_key(&self.source, &t.generation, &name);
        let dest = self.local(&key);
        fs::rename(&t.path, &dest).map_err(io_err(&dest))?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;
        self.write_head(&key);
        self.notify_sealed();
        Ok(())
    }
}

impl Log {
    /// Writes a sealed segment's summary durably (temporary file, fsync, rename, directory
    /// fsync) into the local store or the spool, from where the uploader sends it after its
    /// segment. A failure is logged, not fatal: the summary is advice, and readers without it
    /// summarise the segment itself.
    fn write_summary(&self, gen: &str, s: &flashback_format::summary::Summary) {
        let key = layout::summary_key(&self.source, gen, s.start_offset, s.end_offset);
        let path = self.local(&key);
        let tmp = path.with_extension("sum.tmp");
        let result = (|| -> Result<(), CaptureError> {
            let dir = path.parent().unwrap_or(&self.root);
            create_dir_durable(dir)?;
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            std::io::Write::write_all(&mut f, &s.encode()).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            sync_dir(dir)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            warn!("{e} (the segment's summary was not stored; `flashback timeline` reads the segment instead)");
        }
    }
}

/// The name of a finished, fsynced segment file whose bytes have this size and crc32c.
pub(super) fn sealed_name(
    h: &SegmentHeader,
    s: &flashback_format::segment::SegmentSummary,
    (size, crc32c): (u64, u32),
) -> SealedName {
    let first = if s.first_time_ms == 0 {
        h.created_ms
    } else {
        s.first_time_ms
    };
    SealedName {
        start_offset: s.start_offset,
        end_offset: s.end_offset,
        first_time_ms: first,
        end_time_ms: s.end_time_ms.max(first),
        size,
        crc32c,
    }
}

/// Cuts `f` back to `len` and moves its cursor there (after `abandon_fragments`).
pub(super) fn truncate(f: &mut File, len: u64) -> std::io::Result<()> {
    f.set_len(len)?;
    f.seek(SeekFrom::Start(len)).map(|_| ())
}
