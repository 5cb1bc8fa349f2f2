//! Compaction: new base snapshots made off the primary.
//!
//! The restore engine rebuilds the state at a cut (the end of the latest sealed segment,
//! rounded down to a transaction boundary) in a private redis-server from the newest base plus
//! the log since, saves it, and the RDB is stored as a new base of the same generation at the
//! cut's offset and time. Restore picks the newest base at or before its cut, so afterwards it
//! replays at most the log since the newest base: one base interval, not the whole history.
//!
//! It never talks to the source: the only server involved is the private one the restore
//! engine starts. A base made this way is exactly what restoring at its offset yields, which
//! is the invariant restore relies on; the integration tests check it by digest.
//!
//! Why the cut is at a sealed segment's end: sealed segments are immutable and named by their
//! offsets, so the cut is final and the base lines up with the start of the next segment; the
//! open tail's end moves while we read it.

pub mod rolling;

use crate::redis_server::fresh_work_dir;
use crate::restore::{self, Output, RestoreError, RestoreRequest, Target, TtlMode};
use crate::store::catalog::{self, Generation};
use crate::store::chunks::{self, ChunkedFile};
use crate::store::{layout, Store, StoreError};
use crate::timespec::{format_duration_ms, format_ms};
use flashback_format::rdb;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

#[derive(Debug, Clone, Default)]
pub struct CompactOptions {
    /// The server that rebuilds the state (None: `redis-server` on PATH). It must load the
    /// source's RDB version, and should write it too (a newer server's base would need a newer
    /// server for every later restore, so that is refused).
    pub redis_server: Option<PathBuf>,
    /// Skip unless the cut is at least this many replication bytes past the newest base.
    pub min_log_bytes: u64,
    /// Skip unless the cut's record arrived at least this long after the newest base's time…
    pub min_interval: Duration,
    /// …unless at least this many replication bytes of log lie since the newest base: then
    /// compact at once ("or by log volume"), however little time passed.
    pub or_log_bytes: Option<u64>,
}

/// A base that compaction stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBase {
    pub source: String,
    pub generation: String,
    pub key: Path,
    pub offset: u64,
    /// Arrival time of the last record the base holds.
    pub time_ms: u64,
    pub size: u64,
    /// The base it was built from, and how much log was replayed on top of it.
    pub from_offset: u64,
    pub replayed_records: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for NewBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "new base {} ({} bytes): source '{}' generation {} at offset {} ({}), built from the base at offset {} + {} records in {:.2} s",
            self.key,
            self.size,
            self.source,
            self.generation,
            self.offset,
            format_ms(self.time_ms),
            self.from_offset,
            self.replayed_records,
            self.elapsed.as_secs_f64()
        )
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(NewBase),
    /// Nothing to do, and why (for the operator and the log).
    Skipped(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("source '{0}' has no complete generation to compact (no base stored yet): run flashback capture first")]
    NothingCaptured(String),
    #[error("rebuilding the state at offset {offset}: {failed} commands failed on the restore server, so the result is not a faithful base; nothing was stored. First: {first}")]
    ReplayFailed {
        offset: u64,
        failed: u64,
        first: String,
    },
    #[error("the rebuilt base is RDB v{made}, but the source's bases are v{source_version} ({server}): later restores would need a newer server. Pass --redis-server PATH to a server of the source's version")]
    RdbVersion {
        made: u32,
        source_version: u32,
        server: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One compaction of `source`: a new base, or None when there is nothing worth doing (the
/// reason is logged; [`compact_or_skip`] returns it).
pub async fn compact(
    store: &Store,
    source: &str,
    opts: &CompactOptions,
) -> Result<Option<NewBase>, CompactError> {
    match compact_or_skip(store, source, opts).await? {
        Outcome::Created(b) => Ok(Some(b)),
        Outcome::Skipped(why) => {
            info!("compaction of '{source}' skipped: {why}");
            Ok(None)
        }
    }
}

/// Where compaction would cut now, from the listing alone: the latest complete generation,
/// its newest base, and the end of its latest sealed segment on the chain.
struct Candidate<'a> {
    generation: &'a Generation,
    newest_base_offset: u64,
    newest_base_time_ms: u64,
    segment_end: u64,
}

fn candidate<'a>(
    gens: &'a [Generation],
    source: &str,
) -> Result<Result<Candidate<'a>, String>, CompactError> {
    let Some(g) = gens
        .iter()
        .rev()
        .find(|g| g.manifest.is_some() && !g.bases.is_empty())
    else {
        return Err(CompactError::NothingCaptured(source.to_string()));
    };
    let Some(newest) = g.bases.last() else {
        return Err(CompactError::NothingCaptured(source.to_string()));
    };
    // The window the chain walker gives restore: from the oldest base kept on the log, not the
    // manifest's base, which a prune may have removed.
    let Some(w) = g.window() else {
        return Err(CompactError::NothingCaptured(source.to_string()));
    };
    // A sealed segment past a hole in the chain cannot be reached from any base.
    let Some(last) = g
        .sealed
        .iter()
        .rev()
        .find(|s| s.name.end_offset <= w.to_offset && s.name.end_offset > s.name.start_offset)
    else {
        return Ok(Err(format!(
            "generation {} has no sealed segment with records yet (the open tail is sealed at --segment-mib or on stop)",
            g.id
        )));
    };
    if newest.offset >= last.name.end_offset {
        return Ok(Err(format!(
            "the newest base (offset {}, {}) already covers the latest sealed segment (ending at offset {})",
            newest.offset,
            format_ms(newest.time_ms),
            last.name.end_offset
        )));
    }
    Ok(Ok(Candidate {
        generation: g,
        newest_base_offset: newest.offset,
        newest_base_time_ms: newest.time_ms,
        segment_end: last.name.end_offset,
    }))
}

/// One compaction pass, saying why when it does nothing.
pub async fn compact_or_skip(
    store: &Store,
    source: &str,
    opts: &CompactOptions,
) -> Result<Outcome, CompactError> {
    let started = Instant::now();
    let gens = catalog::load_generations(store, source).await?;
    let c = match candidate(&gens, source)? {
        Ok(c) => c,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    let log_bytes = c.segment_end - c.newest_base_offset;
    if log_bytes < opts.min_log_bytes {
        return Ok(Outcome::Skipped(format!(
            "only {log_bytes} bytes of log since the newest base (offset {}); the minimum is {}",
            c.newest_base_offset, opts.min_log_bytes
        )));
    }
    // The plan rounds the cut down to a transaction boundary: a MULTI…EXEC spanning the
    // segment's end stays out of this base, whole.
    let plan = restore::plan(store, source, Target::AtOffset(c.segment_end)).await?;
    if plan.generation != c.generation.id {
        return Ok(Outcome::Skipped(format!(
            "offset {} also exists in a later generation ({}), which has no sealed log yet",
            c.segment_end, plan.generation
        )));
    }
    if plan.stop_offset <= c.newest_base_offset {
        return Ok(Outcome::Skipped(format!(
            "no transaction ends between the newest base (offset {}) and offset {}",
            c.newest_base_offset, c.segment_end
        )));
    }
    let Some(cut_time_ms) = plan.stop_time_ms else {
        return Ok(Outcome::Skipped(format!(
            "the cut at offset {} has no known time",
            plan.stop_offset
        )));
    };
    let since = cut_time_ms.saturating_sub(c.newest_base_time_ms);
    let by_volume = opts.or_log_bytes.is_some_and(|b| log_bytes >= b);
    if u128::from(since) < opts.min_interval.as_millis() && !by_volume {
        return Ok(Outcome::Skipped(format!(
            "only {} of history since the newest base ({}); the minimum is {}",
            format_duration_ms(since),
            format_ms(c.newest_base_time_ms),
            format_duration_ms(opts.min_interval.as_millis() as u64)
        )));
    }

    let dir = TempDir(fresh_work_dir("flashback-compact").map_err(RestoreError::from)?);
    let rdb_path = dir.0.join("base.rdb");
    let req = RestoreRequest {
        source: source.to_string(),
        target: plan.target,
        output: Output::Rdb(rdb_path.clone()),
        redis_server: opts.redis_server.clone(),
        keys: vec![],
        db: None,
        ttl: TtlMode::Absolute,
        replace: false,
        force: true,
        verify: None,
        db_map: Vec::new(),
        parallel: 1,
        splice: true,
    };
    info!(
        "compacting '{source}' generation {}: rebuilding the state at offset {} ({}) from the base at offset {}",
        plan.generation,
        plan.stop_offset,
        format_ms(cut_time_ms),
        plan.base_offset
    );
    let report = restore::execute(store, &plan, &req).await?;
    if report.engine.replica_errors > 0 {
        return Err(CompactError::ReplayFailed {
            offset: plan.stop_offset,
            failed: report.engine.replica_errors,
            first: report
                .engine
                .first_errors
                .first()
                .cloned()
                .unwrap_or_default(),
        });
    }
    check_rdb_version(&rdb_path, &plan.manifest).await?;
    let (key, size) = match store_base(
        store,
        source,
        &plan.generation,
        plan.stop_offset,
        cut_time_ms,
        &rdb_path,
    )
    .await?
    {
        Ok(stored) => stored,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    let b = NewBase {
        source: source.to_string(),
        generation: plan.generation.clone(),
        key,
        offset: plan.stop_offset,
        time_ms: cut_time_ms,
        size,
        from_offset: plan.base_offset,
        replayed_records: report.engine.records_applied,
        elapsed: started.elapsed(),
    };
    info!("{b}");
    Ok(Outcome::Created(b))
}

/// Stores the RDB at `rdb_path` as the base of `generation` at `offset` (its last record
/// arrived at `time_ms`): named by its size and crc32c, put create-only, so that a crash or a
/// race leaves either the whole base under its name or nothing. Returns its key and size, or
/// why nothing was stored (another base at that offset already).
pub(crate) async fn store_base(
    store: &Store,
    source: &str,
    generation: &str,
    offset: u64,
    time_ms: u64,
    rdb_path: &std::path::Path,
) -> Result<Result<(Path, u64), String>, CompactError> {
    // The name records the file's size and checksum (store::layout), and the name is needed
    // before the upload starts, so they cannot be summed while uploading. Nor while writing:
    // the private redis-server's SAVE writes the RDB and the restore's RDB output copies it
    // here, neither through a writer of ours (summing in that copy would thread a checksum
    // through every restore output for this one caller). So it is read once, on a blocking
    // thread, off the runtime's, as a base can be gigabytes.
    let (size, crc) = {
        let path = rdb_path.to_path_buf();
        tokio::task::spawn_blocking(move || layout::file_size_crc32c(&path))
            .await
            .map_err(|e| CompactError::Io {
                path: rdb_path.to_path_buf(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| CompactError::Io {
                path: rdb_path.to_path_buf(),
                source,
            })?
    };
    let key = layout::base_key(source, generation, offset, time_ms, size, crc);
    // Two compactions racing on one source make the same state with different bytes (an RDB
    // records its creation time), hence different names: look again just before uploading.
    let fresh = catalog::load_generations(store, source).await?;
    if fresh
        .iter()
        .filter(|g| g.id == generation)
        .flat_map(|g| g.bases.iter())
        .any(|b| b.offset == offset)
    {
        return Ok(Err(format!(
            "a base at offset {offset} appeared while this one was built (another compaction)"
        )));
    }
    match upload_create(store, &key, rdb_path).await? {
        Some(_) => Ok(Ok((key, size))),
        None => Ok(Err(format!(
            "{key} already exists (another compaction made the same base)"
        ))),
    }
}

/// Removes the compaction's scratch directory (the RDB, once uploaded) on every path out.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) async fn check_rdb_version(
    path: &std::path::Path,
    m: &crate::store::manifest::GenerationManifest,
) -> Result<(), CompactError> {
    let io = |source| CompactError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = vec![0u8; 4096];
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    let mut n = 0;
    while n < head.len() {
        let got = f.read(&mut head[n..]).await.map_err(io)?;
        if got == 0 {
            break;
        }
        n += got;
    }
    head.truncate(n);
    let info = rdb::peek(&path.display().to_string(), &head).map_err(RestoreError::from)?;
    if info.version > m.rdb_version {
        return Err(CompactError::RdbVersion {
            made: info.version,
            source_version: m.rdb_version,
            server: m.server.clone(),
        });
    }
    Ok(())
}

/// The part size of a base's multipart upload (S3 wants at least 5 MiB but the last).
const PART: usize = 8 << 20;

/// Stores `file` at `key` only if nothing is there yet. Returns its size, or None when the key
/// already exists.
///
/// The bytes go to a temporary key first (streamed, so a big base never sits in memory) that
/// the catalog ignores, then a create-only copy puts them under the real name in one step:
/// readers see the whole base or none. A backend without create-only copy gets one
/// create-only put of the whole file instead, which holds it in memory once.
async fn upload_create(
    store: &Store,
    key: &Path,
    file: &std::path::Path,
) -> Result<Option<u64>, CompactError> {
    let io = |source| CompactError::Io {
        path: file.to_path_buf(),
        source,
    };
    let size = tokio::fs::metadata(file).await.map_err(io)?.len();
    // `…rdb.partial-<pid>`: `layout::parse_key` only knows names ending in `.rdb`.
    let tmp = Path::from(format!("{key}.partial-{}", std::process::id()));
    let result = async {
        let mut upload = store.os.put_multipart(&tmp).await.map_err(StoreError::from)?;
        // Parts of chunks (`store::chunks`): an 8 MiB buffer allocated and freed per part was
        // what grew the agent's RSS at every compaction (issue 14).
        let mut f = ChunkedFile::open(file).await.map_err(io)?;
        let mut sent = 0u64;
        loop {
            let part = f.next_payload(PART).await.map_err(io)?;
            if part.content_length() == 0 {
                break;
            }
            sent += part.content_length() as u64;
            upload.put_part(part).await.map_err(StoreError::from)?;
        }
        upload.complete().await.map_err(StoreError::from)?;
        if sent != size {
            return Err(io(std::io::Error::other(format!(
                "the file changed while it was uploaded ({size} bytes, then {sent})"
            ))));
        }
        match store.os.copy_if_not_exists(&tmp, key).await {
            Ok(()) => Ok(Some(size)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(None),
            Err(
                object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. },
            ) => {
                warn!("this store cannot copy create-only; storing the base with one create-only put (held in memory)");
                let payload = chunks::read_payload(file).await.map_err(io)?;
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                match store.os.put_opts(key, payload, opts).await {
                    Ok(_) => Ok(Some(size)),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(None),
                    Err(e) => Err(StoreError::from(e).into()),
                }
            }
            Err(e) => Err(StoreError::from(e).into()),
        }
    }
    .await;
    if let Err(e) = store.os.delete(&tmp).await {
        if !matches!(e, object_store::Error::NotFound { .. }) {
            warn!("could not remove the temporary object {tmp}: {e}");
        }
    }
    result
}

/// Compacts `source` every `every` until `shutdown` resolves: the loop the capture agent
/// spawns for `--base-every`.
///
/// For the capture agent (lead): spawn it next to `capture::run` on the same `Store`, e.g.
/// `tokio::spawn(compact::run_every(store.clone(), name.clone(), every, opts, stop_rx))` with
/// `opts.min_interval = every` so that a base is made once an interval of history has been
/// sealed, and `opts.min_log_bytes` for "or by log volume" (the pass runs each `every`; a
/// pass with too little new log does nothing). Restore then replays at most about `every`
/// plus one segment's worth of log (the cut is the end of the latest sealed segment, and
/// segments roll at `--segment-mib` or after 10 minutes). A failed pass is logged and retried
/// at the next tick; it never stops capture. The first pass runs one interval after start,
/// not at once, so an agent restarting in a loop does not compact in a loop.
pub async fn run_every(
    store: Store,
    source: String,
    every: Duration,
    opts: CompactOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let every = every.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(every) => {}
        }
        // A pass may take a while (it replays up to an interval of log); a shutdown meanwhile
        // drops it, which kills its private server and leaves at most a temporary object.
        tokio::select! {
            _ = &mut shutdown => return,
            r = compact_or_skip(&store, &source, &opts) => match r {
                Ok(Outcome::Created(_)) => {}
                Ok(Outcome::Skipped(why)) => info!("compaction of '{source}' skipped: {why}"),
                Err(e) => warn!("compaction of '{source}' failed (retrying in {}): {e}", format_duration_ms(every.as_millis() as u64)),
            }
        }
    }
}
