//! The agent's side of the store: the open tail segment (append, fsync, roll, seal), the base
//! snapshot and manifest of a new generation, and recovery after a crash.
//!
//! The store itself is the agent's checkpoint: on start it reads the last segment of the latest
//! generation (replid, end offset, selected db, inside-MULTI) and asks for a partial resync from
//! there. A separate checkpoint file was rejected: it could only ever disagree with the log it
//! summarises, and the log is fsync'd before anything is acknowledged anyway.
//!
//! Size: over ~600 lines because it still holds tail writer, generation commit, crash recovery (with damage), spool accounting + metrics; to split into capture/{tail,recover,spool}.rs; the split is issue 9's
//! (a house others can carry on), deferred so this round could land the trust and durability work.

use super::state::{GapReason, Resume, StreamState};
use super::CaptureError;
use crate::store::catalog::{self, Generation};
use crate::store::layout::{self, SealedName};
use crate::store::manifest::{GenerationManifest, PreviousGeneration};
use crate::store::Store;
use flashback_format::segment::{
    Origin, Record, RecordMeta, Sealed, SegmentHeader, SegmentReader, SegmentWriter, WriterOptions,
};
use object_store::{PutMode, PutOptions};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// A raw block is compressed and written once it holds this much, fsync or not: zstd does
/// well on ~1 MiB of similar commands, and it bounds what a crash can tear.
const BLOCK_BYTES: usize = 1 << 20;

pub struct Tail {
    writer: SegmentWriter<File>,
    path: PathBuf,
    generation: String,
    header: SegmentHeader,
    opened: Instant,
    /// Flags of the records waiting in the writer's current block.
    pending_flags: u16,
}

pub struct Log {
    /// Where the agent writes: the store itself when it is local, else the local spool.
    store: Store,
    /// The remote store the spool is uploaded to, if any.
    remote: Option<Store>,
    root: PathBuf,
    pub source: String,
    /// The generation being written, and the stream position after its last record.
    pub generation: Option<String>,
    pub state: Option<StreamState>,
    tail: Option<Tail>,
    /// End offset of the last record known to be on disk (fsync'd): the only offset we ACK.
    pub durable_offset: u64,
    /// The covered-through time of the last block made durable (see `evidence_ms`).
    pub covered_through_ms: u64,
    /// The last instant the capture loop can vouch for the source (`capture::core`): what new
    /// blocks and seals are stamped with. Never the clock: a silent link must not stretch the
    /// window, and a generation ends at its last evidence, not when the next one starts.
    pub evidence_ms: u64,
    _lock: File,
    roll_bytes: u64,
    roll_age: Duration,
    spool: Option<SpoolWatch>,
    /// An open tail found damaged at start (recover_tail): acknowledged records the primary must
    /// send again, until a partial resync does or a full one proves them lost.
    damaged: Option<DamagedTail>,
}

/// Acknowledged records an open tail lost to damage on disk (see [`Log::damage_lost`]).
#[derive(Debug, Clone)]
pub struct DamagedTail {
    pub generation: String,
    /// The tail, and the byte where the damage starts.
    pub file: String,
    pub byte: u64,
    /// Replication offsets of the records affected: from the end of the good prefix to the end
    /// of the last intact block after the damage.
    pub from_offset: u64,
    pub to_offset: u64,
}

/// With a remote store: how full the spool may get, and how to wake the uploader.
pub struct SpoolWatch {
    pub shared: super::upload::Shared,
    pub max_bytes: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError + '_ {
    move |source| CaptureError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Log {
    /// Takes the source's lock, recovers any open tail a crashed agent left, and reads where
    /// capture stands.
    pub async fn open(
        store: Store,
        remote: Option<Store>,
        source: &str,
        roll_bytes: u64,
        roll_age: Duration,
    ) -> Result<Log, CaptureError> {
        let root = store
            .local_root
            .clone()
            .ok_or_else(|| CaptureError::Unsupported("capture needs a local store".into()))?;
        let lock = lock_source(&root, source)?;
        // Left by versions that copied the remote's last segment here to resume.
        let _ = fs::remove_file(root.join("resume.seg.tmp"));
        let mut log = Log {
            store,
            remote,
            root,
            source: source.to_string(),
            generation: None,
            state: None,
            tail: None,
            durable_offset: 0,
            covered_through_ms: 0,
            evidence_ms: 0,
            _lock: lock,
            roll_bytes,
            roll_age,
            spool: None,
            damaged: None,
        };
        let remote_manifests: Vec<String> = match &log.remote {
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
        let gens_dir = log.local(&layout::generations_prefix(source));
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
        for g in catalog::load_generations(&log.store, source).await? {
            // A spool whose manifest was already uploaded still holds a complete generation.
            if g.manifest.is_none() && !remote_manifests.contains(&g.id) {
                // The agent died while the base was arriving: nothing in it was ever
                // acknowledged, and restore ignores it. Clear it so it is not reported forever.
                let dir = log.local(&layout::generation_prefix(source, &g.id));
                warn!(
                    "removing incomplete generation {} (its base snapshot never finished)",
                    g.id
                );
                fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                continue;
            }
            for t in &g.tails {
                log.recover_tail(&g.id, &t.key)?;
            }
        }
        Ok(log)
    }

    /// Where a partial resync would continue from, if anything was captured before.
    pub async fn resume_point(&mut self) -> Result<Option<Resume>, CaptureError> {
        let mut gens = catalog::load_generations(&self.store, &self.source).await?;
        if let Some(r) = &self.remote {
            gens = catalog::merge(gens, catalog::load_generations(r, &self.source).await?);
        }
        let Some(g) = gens.into_iter().rev().find(|g| g.manifest.is_some()) else {
            return Ok(None);
        };
        let r = self.resume_of(&g).await?;
        self.generation = Some(r.generation.clone());
        self.state = Some(r.state.clone());
        self.durable_offset = r.state.offset;
        self.covered_through_ms = r.covered_through_ms;
        self.evidence_ms = r.covered_through_ms;
        Ok(Some(r))
    }

    pub fn watch_spool(&mut self, w: SpoolWatch) {
        self.spool = Some(w);
    }

    /// The spool's fill as a fraction of its limit (None without a remote store). The limit is
    /// `--spool-max`, or less when the spool's disk cannot hold that much: what the spool holds
    /// plus the disk's free space, minus a reserve for the block being written and a footer.
    /// Counting the disk too means a small or shared disk gets the same early warning and the
    /// same back-pressure as --spool-max, instead of a write failing with ENOSPC.
    pub fn spool_fill(&self) -> Option<f64> {
        let w = self.spool.as_ref()?;
        let used = self.spool_used(w);
        if used == 0 {
            return Some(0.0);
        }
        let limit = match space(&self.root) {
            Some((free, total)) => (used + free)
                .saturating_sub(spool_reserve(total))
                .min(w.max_bytes),
            None => w.max_bytes,
        };
        Some(used as f64 / limit.max(1) as f64)
    }

    fn spool_used(&self, w: &SpoolWatch) -> u64 {
        let tail = self
            .tail
            .as_ref()
            .map(|t| t.writer.bytes_written())
            .unwrap_or(0);
        let queued = w
            .shared
            .spool_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        queued + tail
    }

    /// Rewrites `sources/<name>/agent.prom` (next to the agent's lock, in the local store or
    /// the spool) in the Prometheus text format, for node_exporter's textfile collector or any
    /// scraper that reads files: the agent's health without an HTTP endpoint. Atomic (temp +
    /// rename), so a reader never sees half a file. Best effort: metrics never stop capture.
    pub fn write_metrics(&self, paused: bool) {
        let source = &self.source;
        let mut out = String::new();
        let mut metric = |name: &str, help: &str, value: f64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{source=\"{source}\"}} {value}\n"
            ));
        };
        metric(
            "flashback_durable_offset",
            "Replication offset fsync'd and acknowledged to the primary.",
            self.durable_offset as f64,
        );
        metric(
            "flashback_covered_through_seconds",
            "Unix time through which the log is known complete.",
            self.covered_through_ms as f64 / 1000.0,
        );
        if let Some(w) = &self.spool {
            metric(
                "flashback_spool_bytes",
                "Bytes in the spool not yet uploaded (sealed objects and the open tail).",
                self.spool_used(w) as f64,
            );
            metric(
                "flashback_spool_max_bytes",
                "--spool-max.",
                w.max_bytes as f64,
            );
            metric(
                "flashback_spool_fill_ratio",
                "Spool bytes over its limit (--spool-max, or what its disk can still hold); at 1 capture stops reading from the primary.",
                self.spool_fill().unwrap_or(0.0),
            );
            metric(
                "flashback_capture_paused",
                "1 while capture has stopped reading because the spool is full.",
                if paused { 1.0 } else { 0.0 },
            );
        }
        let dir = self.root.join(layout::SOURCES).join(source);
        let tmp = dir.join("agent.prom.tmp");
        if fs::write(&tmp, out)
            .and_then(|_| fs::rename(&tmp, dir.join("agent.prom")))
            .is_err()
        {
            tracing::debug!("could not write {}", dir.join("agent.prom").display());
        }
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

    /// With a spool: whether its file system has room for a few blocks again.
    pub fn spool_has_room(&self) -> bool {
        space(&self.root).is_none_or(|(free, total)| free >= spool_reserve(total))
    }

    /// True when writing into a local spool for a remote store, whose uploads free space.
    pub fn is_spooling(&self) -> bool {
        self.remote.is_some()
    }

    fn notify_sealed(&self) {
        if let Some(w) = &self.spool {
            w.shared.sealed.notify_one();
        }
    }

    /// Where this process stands, if it has captured anything since it started: the stream
    /// position after the last record appended (durable or about to be; the open tail keeps
    /// its pending block across a reconnect). Re-reading the store instead would miss the open
    /// tail and ask the primary for bytes we already have.
    pub fn current_resume(&self) -> Option<Resume> {
        Some(Resume {
            generation: self.generation.clone()?,
            state: self.state.clone()?,
            covered_through_ms: self.covered_through_ms,
        })
    }

    /// The primary answered FULLRESYNC: if the generation it ends held records lost to damage
    /// on disk (found by `recover_tail`), `reason` says so, loudly and by offset, in the new
    /// generation's manifest. Taken once.
    pub fn damage_lost(&mut self, reason: GapReason, ended_generation: Option<&str>) -> GapReason {
        match self.damaged.take() {
            Some(d) if Some(d.generation.as_str()) == ended_generation => {
                tracing::error!(
                    "the records at replication offsets {}..{}, damaged on disk in {} at byte {}, are lost: the primary answered FULLRESYNC instead of sending them again",
                    d.from_offset, d.to_offset, d.file, d.byte
                );
                GapReason::DamagedAndResynced {
                    file: d.file,
                    byte: d.byte,
                    from_offset: d.from_offset,
                    to_offset: d.to_offset,
                    resync: Box::new(reason),
                }
            }
            _ => reason,
        }
    }

    /// The primary answered +CONTINUE from the resume point: the damaged range is being sent
    /// again, so nothing acknowledged was lost after all.
    pub fn damage_refetched(&mut self) {
        if let Some(d) = self.damaged.take() {
            info!(
                "partial resync from offset {}: the primary is sending the records at offsets {}..{} again (damaged on disk in {} at byte {})",
                d.from_offset, d.from_offset, d.to_offset, d.file, d.byte
            );
        }
    }

    async fn resume_of(&self, g: &Generation) -> Result<Resume, CaptureError> {
        let m = g
            .manifest
            .as_ref()
            .expect("caller picked a generation with a manifest");
        match g.sealed.last() {
            None => Ok(Resume {
                generation: g.id.clone(),
                state: StreamState::new(
                    m.replid.clone(),
                    m.base_offset,
                    m.base_db,
                    false,
                    m.base_time_ms,
                ),
                covered_through_ms: m.base_time_ms,
            }),
            Some(last) => {
                // Already uploaded: read the remote copy, streamed block by block (a segment
                // may hold a 512 MB record) and never through a spool file, whose disk may be
                // the one that is full.
                let store = match &self.remote {
                    Some(r) if !self.local(&last.key).exists() => r,
                    _ => &self.store,
                };
                let scan = catalog::scan_object(store, &last.key, Sealed::Yes).await?;
                let (Some(header), Some(s)) = (scan.header(), scan.summary()) else {
                    unreachable!("a scan that ended without error read the header");
                };
                let state = state_after(header, &s);
                Ok(Resume {
                    generation: g.id.clone(),
                    state,
                    covered_through_ms: s.end_time_ms,
                })
            }
        }
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
    fn recover_tail(
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
        let name = sealed_name(&header, &summary, &path)?;
        let sealed_key = layout::segment_key(&self.source, gen, &name);
        let dest = self.local(&sealed_key);
        fs::rename(&path, &dest).map_err(io_err(&dest))?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;
        self.write_head(&sealed_key);
        info!("recovered the open segment {} as {}", key, dest.display());
        Ok((header, summary))
    }

    /// Starts a new generation: the caller streams the base into the file this returns, then
    /// calls [`commit_generation`](Self::commit_generation). Its final name needs the offset,
    /// which a legacy SYNC answer only reveals inside the snapshot, hence a neutral name first.
    pub fn base_file(&self, gen: &str) -> Result<(File, PathBuf), CaptureError> {
        let dir = self.local(&layout::base_prefix(&self.source, gen));
        create_dir_durable(&dir)?;
        let partial = dir.join("incoming.rdb.partial");
        let f = File::create(&partial).map_err(io_err(&partial))?;
        Ok((f, partial))
    }

    /// The base is complete and checked: make it durable, write the manifest (create-only, so
    /// a second writer is caught), and open the first segment. `now_ms` is when the primary
    /// answered +FULLRESYNC: the snapshot is its state then (it forks at that answer), and the
    /// writes made during the transfer arrive after it, inside an uncertain interval.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_generation(
        &mut self,
        gen: &str,
        base: (File, PathBuf),
        replid: &str,
        offset: u64,
        db: u32,
        rdb: &crate::replica::RdbReceived,
        reason: &GapReason,
        now_ms: u64,
    ) -> Result<(), CaptureError> {
        let (file, partial) = base;
        file.sync_all().map_err(io_err(&partial))?;
        drop(file);
        let (size, crc) = layout::file_size_crc32c(&partial).map_err(io_err(&partial))?;
        let dest = self.local(&layout::base_key(
            &self.source,
            gen,
            offset,
            now_ms,
            size,
            crc,
        ));
        fs::rename(&partial, &dest).map_err(io_err(&dest))?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;

        let previous = match (&self.generation, &self.state) {
            (Some(g), Some(s)) => Some(PreviousGeneration {
                generation: g.clone(),
                end_offset: s.offset,
                end_time_ms: self.covered_through_ms,
            }),
            _ => None,
        };
        let server = ["valkey-ver", "redis-ver"]
            .iter()
            .find_map(|k| {
                rdb.info
                    .aux_str(k)
                    .map(|v| format!("{} {v}", k.trim_end_matches("-ver")))
            })
            .unwrap_or_else(|| "unknown".into());
        let m = GenerationManifest {
            source: self.source.clone(),
            generation: gen.to_string(),
            replid: replid.to_string(),
            base_offset: offset,
            base_time_ms: now_ms,
            base_db: db,
            base_size: rdb.len,
            rdb_version: rdb.info.version,
            server,
            reason: reason.to_string(),
            previous,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let key = layout::manifest_key(&self.source, gen);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.store.os.put_opts(&key, m.encode().into(), opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(CaptureError::SecondWriter(format!(
                    "{key} already exists: another agent is writing this source"
                )))
            }
            Err(e) => return Err(crate::store::StoreError::from(e).into()),
        }
        self.seal()?;
        self.generation = Some(gen.to_string());
        self.state = Some(StreamState::new(
            replid.to_string(),
            offset,
            db,
            false,
            now_ms,
        ));
        self.durable_offset = offset;
        self.covered_through_ms = now_ms;
        self.evidence_ms = now_ms;
        self.notify_sealed();
        self.open_tail(Origin::NewGeneration, crate::now_ms())
    }

    /// Stores an uncertain interval of the current generation (`capture::core`), after the
    /// blocks that hold its records were made durable. Create-new + fsync + directory fsync
    /// like every object the agent writes; the uploader takes it to a remote store. A failure
    /// is logged, not fatal: restore finds the interval's catch-up blocks in the log anyway,
    /// only `info` would not list it.
    pub fn record_uncertain(&self, i: &super::core::Interval) {
        let Some(gen) = self.generation.as_deref() else {
            return;
        };
        let name = layout::UncertainName {
            from_offset: i.from_offset,
            to_offset: i.to_offset,
            from_ms: i.from_ms,
            to_ms: i.to_ms,
        };
        let rec = crate::store::manifest::UncertainRecord {
            from_ms: i.from_ms,
            to_ms: i.to_ms,
            from_offset: i.from_offset,
            to_offset: i.to_offset,
            records: i.records,
            cause: i.cause.as_str().to_string(),
        };
        let path = self.local(&layout::uncertain_key(&self.source, gen, &name));
        let write = || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(&self.root);
            fs::create_dir_all(dir)?;
            let tmp = path.with_extension("gap.tmp");
            {
                use std::io::Write;
                let mut f = File::create(&tmp)?;
                f.write_all(&rec.encode())?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        };
        match write() {
            Ok(()) => self.notify_sealed(),
            Err(e) => warn!(
                "{}: {e} (info will not list this uncertain interval)",
                path.display()
            ),
        }
    }

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
        let writer =
            SegmentWriter::new(file, &header, WriterOptions::default()).map_err(io_err(&path))?;
        writer.get_ref().sync_data().map_err(io_err(&path))?;
        sync_dir(path.parent().unwrap_or(&self.root))?;
        let now = Instant::now();
        self.tail = Some(Tail {
            writer,
            path,
            generation: gen,
            header,
            opened: now,
            pending_flags: 0,
        });
        Ok(())
    }

    pub fn has_tail(&self) -> bool {
        self.tail.is_some()
    }

    /// Buffers a record (not yet durable).
    pub fn append(&mut self, rec: &Record, flags: u16) -> Result<(), CaptureError> {
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
        tail.writer
            .append_fragment(chunk, end, covered, flags)
            .map_err(io_err(&tail.path))?;
        Ok(())
    }

    /// Drops the fragments of a big command whose end never arrived (the link dropped): they
    /// are cut off the tail, and the primary sends the command again whole after a resync.
    pub fn abandon_partial(&mut self) -> Result<(), CaptureError> {
        if let Some(t) = self.tail.as_mut() {
            if let Some(pos) = t.writer.abandon_fragments() {
                warn!("dropping the partly received big command after offset {}; it will be received again", t.writer.end_offset());
                truncate(t.writer.get_mut(), pos).map_err(io_err(&t.path))?;
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
        t.writer.get_ref().sync_data().map_err(io_err(&t.path))?;
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
        file.sync_all().map_err(io_err(&t.path))?;
        self.durable_offset = summary.end_offset;
        self.covered_through_ms = summary.end_time_ms;
        let name = sealed_name(&t.header, &summary, &t.path)?;
        let key = layout::segment_key(&self.source, &t.generation, &name);
        let dest = self.local(&key);
        fs::rename(&t.path, &dest).map_err(io_err(&dest))?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;
        self.write_head(&key);
        self.notify_sealed();
        Ok(())
    }

    /// With a local store, the generation's log head after `key` was sealed (a remote store's
    /// head is the uploader's to write: it must follow the upload, not the seal). Advice for
    /// `verify`, written after the segment is durable, so a failure is only logged.
    fn write_head(&self, key: &object_store::path::Path) {
        if self.remote.is_some() {
            return;
        }
        let Some(h) = crate::store::manifest::LogHead::after(&self.source, key) else {
            return;
        };
        let path = self.local(&layout::head_key(&self.source, &h.generation));
        let tmp = path.with_extension("head.tmp");
        if let Err(e) = fs::write(&tmp, h.encode()).and_then(|_| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            warn!(
                "{}: {e} (verify will not know the log reaches offset {})",
                path.display(),
                h.end_offset
            );
        }
    }

    fn local(&self, key: &object_store::path::Path) -> PathBuf {
        let mut p = self.root.clone();
        for part in key.parts() {
            p.push(part.as_ref());
        }
        p
    }
}

/// Where the stream stands after the segment with this header and summary.
fn state_after(h: &SegmentHeader, s: &flashback_format::segment::SegmentSummary) -> StreamState {
    StreamState::new(
        h.replid.clone(),
        s.end_offset,
        s.end_db,
        s.end_in_multi,
        s.end_time_ms,
    )
}

/// The name of a finished, fsynced segment file at `path`; its size and checksum are read back
/// from the file (see [`layout::file_size_crc32c`]).
fn sealed_name(
    h: &SegmentHeader,
    s: &flashback_format::segment::SegmentSummary,
    path: &Path,
) -> Result<SealedName, CaptureError> {
    let (size, crc32c) = layout::file_size_crc32c(path).map_err(io_err(path))?;
    let first = if s.first_time_ms == 0 {
        h.created_ms
    } else {
        s.first_time_ms
    };
    Ok(SealedName {
        start_offset: s.start_offset,
        end_offset: s.end_offset,
        first_time_ms: first,
        end_time_ms: s.end_time_ms.max(first),
        size,
        crc32c,
    })
}

/// Room kept free on a spool's file system: a full raw block compressed badly, plus a footer;
/// a quarter of a tiny disk (a 2 MiB spool could never keep 2 MiB free).
fn spool_reserve(total: u64) -> u64 {
    (2 * BLOCK_BYTES as u64).min(total / 4)
}

/// (Bytes an unprivileged process may still write, size) of the file system holding `dir`;
/// None when it cannot be asked.
// The statvfs fields are u64 here but narrower on 32-bit targets, hence `u64::from`.
#[allow(clippy::useless_conversion)]
fn space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value of it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs struct we own, filled in by the kernel.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    let frsize = u64::from(st.f_frsize);
    (rc == 0).then(|| {
        (
            u64::from(st.f_bavail) * frsize,
            u64::from(st.f_blocks) * frsize,
        )
    })
}

/// Cuts `f` back to `len` and moves its cursor there (after `abandon_fragments`).
fn truncate(f: &mut File, len: u64) -> std::io::Result<()> {
    f.set_len(len)?;
    f.seek(SeekFrom::Start(len)).map(|_| ())
}

/// `create_dir_all` whose new directories survive a power cut: each one created is fsync'd
/// into its parent. Without it a base or segment fsync'd inside a new generation directory
/// (and acknowledged) is gone after a power loss along with the directory entry (found by
/// tests/power_loss.rs; a kill -9 keeps the entry in the page cache).
fn create_dir_durable(dir: &Path) -> Result<(), CaptureError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

fn sync_dir(dir: &Path) -> Result<(), CaptureError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// One agent per source and store: a second one would interleave segments. `flock` is released
/// by the kernel when the process dies, so a kill -9 leaves no stale lock behind.
fn lock_source(root: &Path, source: &str) -> Result<File, CaptureError> {
    let dir = root.join(layout::SOURCES).join(source);
    create_dir_durable(&dir)?;
    let path = dir.join("agent.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        return Err(CaptureError::SecondWriter(format!(
            "another capture agent{} is already capturing source '{source}' into this store; stop it first, or pass another --name",
            if holder.trim().is_empty() { String::new() } else { format!(" (pid {})", holder.trim()) }
        )));
    }
    use std::io::Write;
    let mut w = &f;
    let _ = f.set_len(0);
    let _ = write!(w, "{}", std::process::id());
    Ok(f)
}
