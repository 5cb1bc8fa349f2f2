//! Recovery: sealing an open tail that a crashed agent (or a write that failed on a full disk)
//! left behind, in place, and keeping a copy of a damaged one.
//!
//! In place rather than rewritten into a new file: a spool stopped by a full disk has no room
//! for a copy (see [`Log::recover_tail`]).

use super::log::{io_err, state_after, sync_dir, DamagedTail, Log};
use super::tail::{sealed_name, truncate};
use super::CaptureError;
use crate::store::catalog;
use crate::store::layout;
use flashback_format::segment::{
    Sealed, SegmentHeader, SegmentReader, SegmentWriter, WriterOptions,
};
use std::fs::{self, File, OpenOptions};
use std::io::BufReader;
use tracing::{info, warn};

impl Log {
    /// What a crashed agent left: a snapshot cut off mid-transfer, a generation whose base never
    /// finished, open tails (sealed in place, see [`recover_tail`](Self::recover_tail)).
    pub(super) async fn recover_after_crash(&mut self) -> Result<(), CaptureError> {
        let source = self.source.clone();
        let source = source.as_str();
        let remote_manifests: Vec<String> = match &self.remote {
            Some(r) => catalog::load_generations(r, source)
                .await?
                .into_iter()
                .filter(|g| g.manifest.is_some())
                .map(|g| g.id)
                .collect(),
            None => vec![],
        };
        // A snapshot cut off by a crash left only `base/incoming.rdb.partial` (a name the catalog
        // does not know, so the generation is otherwise invisible). Nothing in it was ever
        // acknowledged; it can be as large as the dataset: remove it, and its generation
        // directory when nothing else is there.
        let gens_dir = self.local(&layout::generations_prefix(source));
        if let Ok(entries) = fs::read_dir(&gens_dir) {
            for e in entries.flatten() {
                let partial = e.path().join("base").join("incoming.rdb.partial");
                if partial.exists() {
                    warn!(
                        "removing {} (a snapshot transfer cut off by a crash; never acknowledged)",
                        partial.display()
                    );
                    fs::remove_file(&partial).map_err(io_err(&partial))?;
                    let _ = fs::remove_dir(e.path().join("base"));
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        for g in catalog::load_generations(&self.store, source).await? {
            // A spool whose manifest was already uploaded still holds a complete generation.
            if g.manifest.is_none() && !remote_manifests.contains(&g.id) {
                // The agent died while the base was arriving: nothing in it was ever
                // acknowledged, and restore ignores it. Clear it so it is not reported forever.
                let dir = self.local(&layout::generation_prefix(source, &g.id));
                warn!(
                    "removing incomplete generation {} (its base snapshot never finished)",
                    g.id
                );
                fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                continue;
            }
            for t in &g.tails {
                self.recover_tail(&g.id, &t.key)?;
            }
        }
        Ok(())
    }

    /// Seals the open tail a crashed agent left, in place: its intact blocks stay as they are,
    /// a footer is appended and the file renamed to its sealed name. A torn last block
    /// was never fsync'd, so never acknowledged: dropping it loses nothing that was promised.
    /// Neither was a record whose final fragment is missing: all its fragments go too. The
    /// tail is scanned block by block, never read whole.
    ///
    /// A damaged tail (a bad block with intact blocks after it) held acknowledged records
    /// that are now unreadable: the whole file is first copied aside under a name the catalog
    /// does not read ([`layout::damaged_tail_key`]; offsets in messages are its own), then the
    /// good prefix is sealed as for a torn tail, so the resume point is where the damage starts
    /// and the partial resync asks the primary for everything from there. Left unsealed, every
    /// restore past the damage would fail; cut without a copy, the evidence would be gone.
    pub(super) fn recover_tail(
        &mut self,
        gen: &str,
        key: &object_store::path::Path,
    ) -> Result<(SegmentHeader, flashback_format::segment::SegmentSummary), CaptureError> {
        let path = self.local(key);
        let file = File::open(&path).map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        // Reading every block checks every checksum: what gets sealed below is known good.
        let mut r = SegmentReader::new(key.as_ref(), BufReader::new(file), len, Sealed::No);
        let damage = loop {
            match r.next_block() {
                Ok(Some(_)) => {}
                Ok(None) => break None,
                Err(flashback_format::Error::Damaged { damage, .. }) => break Some(damage),
                Err(e) => return Err(e.into()),
            }
        };
        let scan = r.scanner();
        if let Some(d) = &damage {
            let start = scan.header().map_or(0, |h| h.start_offset);
            let copy = self.local(&layout::damaged_tail_key(
                &self.source,
                gen,
                start,
                d.offset,
            ));
            // fs::copy streams (copy_file_range): the tail is never held in memory.
            fs::copy(&path, &copy).map_err(io_err(&copy))?;
            File::open(&copy)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&copy))?;
            sync_dir(copy.parent().unwrap_or(&self.root))?;
            let to = d.last_end_offset.max(d.good_end_offset);
            tracing::error!(
                "{key}: damaged at byte {} ({}): the records at replication offsets {}..{to} were damaged on disk after being acknowledged; \
                 re-fetching them from the primary by PSYNC from offset {} (if its backlog no longer holds them, the new generation's reason names them as lost); \
                 the damaged file is kept as {}",
                d.offset,
                d.what,
                d.good_end_offset,
                d.good_end_offset,
                copy.display()
            );
            self.damaged = Some(DamagedTail {
                generation: gen.to_string(),
                file: key.to_string(),
                byte: d.offset,
                from_offset: d.good_end_offset,
                to_offset: to,
            });
        }
        let header = scan
            .header()
            .cloned()
            .expect("a scan that did not fail read the header");
        // Sealed in place: truncate the torn bytes, append the footer. Rewriting the blocks into
        // a copy (as this once did) needs the tail's size again in free space, and the spool of
        // an agent stopped by a full disk has none; in place needs only the footer's few bytes,
        // and the torn write being cut usually frees more than that.
        let summary = match scan.footer() {
            // Sealed before the crash, not yet renamed.
            Some(s) => s.clone(),
            // Nothing but a header (a tail opened just before the stop): nothing to keep, and
            // sealing it would only add an empty object.
            None if scan.blocks().is_empty() => {
                let s = scan
                    .summary()
                    .expect("a scan that did not fail read the header");
                fs::remove_file(&path).map_err(io_err(&path))?;
                if damage.is_some() {
                    info!("removed the open segment {key}: no intact block before its damage (the copy is kept)");
                } else {
                    info!("removed the empty open segment {key}");
                }
                return Ok((header, s));
            }
            None => {
                if let Some(why) = scan.torn_reason() {
                    warn!(
                        "{key}: dropped {} bytes after an interrupted write that was never acknowledged ({why})",
                        len - scan.valid_len()
                    );
                }
                let end_time = scan
                    .summary()
                    .map_or(0, |s| s.end_time_ms)
                    .max(header.created_ms);
                let mut file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                truncate(&mut file, scan.valid_len()).map_err(io_err(&path))?;
                let w =
                    SegmentWriter::resume(file, &header, scan.blocks(), WriterOptions::default())
                        .map_err(io_err(&path))?;
                let (file, summary) = w.finish(end_time).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
                summary
            }
        };
        // Read back, not summed: this file was written by a process that is gone (or by a
        // writer that failed), and torn bytes were cut off it. Only at start or after a write
        // failure, never on the capture loop's hot path.
        let sum = layout::file_size_crc32c(&path).map_err(io_err(&path))?;
        let name = sealed_name(&header, &summary, sum);
        let sealed_key = layout::segment_key(&self.source, gen, &name);
        let dest = self.local(&sealed_key);
        fs::rename(&path, &dest).map_err(io_err(&dest))?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;
        self.write_head(&sealed_key);
        info!("recovered the open segment {} as {}", key, dest.display());
        Ok((header, summary))
    }

    /// After a write failed (a full disk), the writer may have left half a block behind and
    /// refuses further calls. Seal the tail from what its file holds, exactly as a restart
    /// would ([`recover_tail`](Self::recover_tail), in place), and move the stream position
    /// back to the end of that segment: the records appended but never written are sent
    /// again by the primary after a partial resync from there.
    pub fn seal_after_write_failure(&mut self) -> Result<(), CaptureError> {
        let Some(t) = self.tail.take() else {
            return Ok(());
        };
        let key = layout::tail_key(&self.source, &t.generation, t.header.start_offset);
        let gen = t.generation.clone();
        drop(t);
        // The position comes from the segment just sealed, not from re-reading the store:
        // that lists the remote store too, and the disk filled because the remote is down.
        let (header, s) = self.recover_tail(&gen, &key)?;
        self.notify_sealed();
        self.state = Some(state_after(&header, &s));
        self.durable_offset = s.end_offset;
        self.covered_through_ms = s.end_time_ms;
        self.evidence_ms = self.evidence_ms.max(s.end_time_ms);
        Ok(())
    }
}
