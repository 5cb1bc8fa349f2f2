//! The agent's log: one [`Log`] per source and store, the facade the capture loop writes
//! through. It takes the source's lock, opens and recovers what a previous run left, and knows
//! where capture stands (the generation, the stream position, what is durable). The work is
//! split by job: [`super::tail`] (the open segment: append, fsync, roll, seal),
//! [`super::generation`] (a new generation's base and manifest, uncertain intervals),
//! [`super::recover`] (sealing what a crash or a full disk left) and [`super::spool`] (spool
//! accounting and the metrics file).
//!
//! The store itself is the agent's checkpoint: on start it reads the last segment of the latest
//! generation (replid, end offset, selected db, inside-MULTI) and asks for a partial resync from
//! there. A separate checkpoint file was rejected: it could only ever disagree with the log it
//! summarises, and the log is fsync'd before anything is acknowledged anyway.

use super::spool::SpoolWatch;
use super::state::{GapReason, Resume, StreamState};
use super::tail::Tail;
use super::CaptureError;
use crate::store::catalog::{self, Generation};
use crate::store::layout;
use crate::store::Store;
use flashback_format::segment::{Sealed, SegmentHeader};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

pub struct Log {
    /// Where the agent writes: the store itself when it is local, else the local spool.
    pub(super) store: Store,
    /// The remote store the spool is uploaded to, if any.
    pub(super) remote: Option<Store>,
    pub(super) root: PathBuf,
    pub source: String,
    /// The generation being written, and the stream position after its last record.
    pub generation: Option<String>,
    pub state: Option<StreamState>,
    pub(super) tail: Option<Tail>,
    /// End offset of the last record known to be on disk (fsync'd): the only offset we ACK.
    pub durable_offset: u64,
    /// The covered-through time of the last block made durable (see `evidence_ms`).
    pub covered_through_ms: u64,
    /// The last instant the capture loop can vouch for the source (`capture::core`): what new
    /// blocks and seals are stamped with. Never the clock: a silent link must not stretch the
    /// window, and a generation ends at its last evidence, not when the next one starts.
    pub evidence_ms: u64,
    pub(super) _lock: nix::fcntl::Flock<File>,
    pub(super) roll_bytes: u64,
    pub(super) roll_age: Duration,
    pub(super) spool: Option<SpoolWatch>,
    /// An open tail found damaged at start (recover_tail): acknowledged records the primary must
    /// send again, until a partial resync does or a full one proves them lost.
    pub(super) damaged: Option<DamagedTail>,
    /// The replication link as the metrics file shows it.
    pub(super) link: LinkState,
    /// A cluster shard's log: the cluster's metrics board, the cluster source and the label.
    pub(super) board: Option<(super::metrics::Board, String, String)>,
}

/// The replication link, for the metrics file.
#[derive(Debug, Clone, Default)]
pub struct LinkState {
    pub up: bool,
    /// `host:port` of the node streamed from.
    pub node: String,
    /// For a cluster shard: whether that node is its `primary` or a `replica`.
    pub role: Option<&'static str>,
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

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError + '_ {
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
            link: LinkState::default(),
            board: None,
        };
        log.recover_after_crash().await?;
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

    /// True when writing into a local spool for a remote store, whose uploads free space.
    pub fn is_spooling(&self) -> bool {
        self.remote.is_some()
    }

    pub(super) fn notify_sealed(&self) {
        if let Some(w) = &self.spool {
            w.shared.sealed.notify_one();
        }
    }

    /// With a local store, the generation's log head after `key` was sealed (a remote store's
    /// head is the uploader's to write: it must follow the upload, not the seal). Advice for
    /// `verify`, written after the segment is durable, so a failure is only logged.
    pub(super) fn write_head(&self, key: &object_store::path::Path) {
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

    pub(super) fn local(&self, key: &object_store::path::Path) -> PathBuf {
        let mut p = self.root.clone();
        for part in key.parts() {
            p.push(part.as_ref());
        }
        p
    }
}

/// Where the stream stands after the segment with this header and summary.
pub(super) fn state_after(
    h: &SegmentHeader,
    s: &flashback_format::segment::SegmentSummary,
) -> StreamState {
    StreamState::new(
        h.replid.clone(),
        s.end_offset,
        s.end_db,
        s.end_in_multi,
        s.end_time_ms,
    )
}

/// `create_dir_all` whose new directories survive a power cut: each one created is fsync'd
/// into its parent. Without it a base or segment fsync'd inside a new generation directory
/// (and acknowledged) is gone after a power loss along with the directory entry (found by
/// tests/e2e/power_loss.rs; a kill -9 keeps the entry in the page cache).
pub(super) fn create_dir_durable(dir: &Path) -> Result<(), CaptureError> {
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

pub(super) fn sync_dir(dir: &Path) -> Result<(), CaptureError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// One agent per source and store: a second one would interleave segments. `flock` is released
/// by the kernel when the process dies, so a kill -9 leaves no stale lock behind.
fn lock_source(root: &Path, source: &str) -> Result<nix::fcntl::Flock<File>, CaptureError> {
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
    let f = match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, _)) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            return Err(CaptureError::SecondWriter(format!(
            "another capture agent{} is already capturing source '{source}' into this store; stop it first, or pass another --name",
            if holder.trim().is_empty() { String::new() } else { format!(" (pid {})", holder.trim()) }
        )));
        }
    };
    use std::io::Write;
    let mut w: &File = &f;
    let _ = f.set_len(0);
    let _ = write!(w, "{}", std::process::id());
    Ok(f)
}
