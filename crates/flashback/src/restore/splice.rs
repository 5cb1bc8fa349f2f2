//! `--rdb` at an instant between bases without rebuilding the whole dataset: the **splice**.
//!
//! The serial path loads the whole base into a private server, replays the log, and has the
//! server SAVE everything: two full passes over the dataset by a server (load ≈ SAVE), so
//! `--rdb` cost ~2× a bare load of its state however little the log changed (issue 12,
//! docs/benchmarks.md). But every key the log in (base, T] does not name is, at T, exactly its
//! entry in the base. So:
//!
//! 1. **First pass** (`keys::touched`): the keys the log names. A command acting on keys it
//!    does not name (FLUSHALL, FLUSHDB, SWAPDB, FUNCTION, SCRIPT), a record whose keys cannot
//!    be known, or too many keys: the restore takes the serial path and says why.
//! 2. **Split** (one pass over the base, streamed from the store): the named keys' entries go
//!    to a small RDB for a private server; every other entry is copied byte for byte into the
//!    output, except those whose absolute expiry has passed (gone, as `--ttl absolute` says).
//!    The output opens with the private server's own header and AUX fields (an empty SAVE of
//!    it), so the file reads as that server's dump, at its RDB version, as the serial path's
//!    does; functions and module AUX data come from the base (the log changed none).
//! 3. **Rebuild**: the private server loads the small RDB and replays the whole log through
//!    the key-level filter (which keeps every record naming a key), then SAVEs: the named
//!    keys' state at T, the ones deleted by then absent.
//! 4. **Append**: that dump's entries follow the copied ones, each db under a SELECTDB of its
//!    own (a loader takes a db's SELECTDB more than once); EOF and the CRC-64 over the whole
//!    file; fsync; rename over the output.
//!
//! The cost is one streaming read of the base plus a server's work on the keys the log named,
//! not two full passes. Rejected: DUMPing each named key from a fully loaded server into the
//! copied stream (still a full load), and merging by key order (RDB entries are in hash order,
//! not sorted). Entries copied raw keep the base's encodings (e.g. a ziplist from an older
//! server), which every later server loads; the result is key-for-key the serial path's
//! (`DEBUG DIGEST` equal, checked in the tests), not byte-for-byte.

use super::engine::{self, KeyLevel};
use super::keys::base::open_base;
use super::keys::Filter;
use super::outputs::{self, Delivered, TempFile};
use super::plan::RestorePlan;
use super::preflight::{resolve_rdb, temp_name, RdbOut};
use super::{Output, RestoreError, RestoreReport, RestoreRequest, TtlMode};
use crate::progress::{Phase, Progress, Unit};
use crate::redis_server::{RedisServer, ServerBinary, ServerOptions};
use crate::store::Store;
use flashback_rdb::{Item, RdbReader, RdbWriter};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether `req` may be spliced: a whole-dataset `--rdb` with absolute TTLs (a rewrite acts on
/// every key, so every key would need a server), not partitioned (`--parallel N` asked for is
/// honoured), not turned off (`--no-splice`).
pub fn applies(req: &RestoreRequest) -> bool {
    matches!(req.output, Output::Rdb(_))
        && req.splice
        && req.keys.is_empty()
        && req.db.is_none()
        && req.ttl == TtlMode::Absolute
        && req.parallel <= 1
}

/// What a splice did, for the report.
#[derive(Debug, Clone, Default)]
pub struct SpliceStats {
    /// Keys the log names.
    pub named_keys: usize,
    /// Base entries copied as they are, given to the private server, and dropped as expired.
    pub copied: u64,
    pub rebuilt_from_base: u64,
    pub expired: u64,
    /// Entries of the private server's dump appended (the named keys alive at T).
    pub appended: u64,
    pub bytes: u64,
    pub split: Duration,
    pub append: Duration,
}

impl std::fmt::Display for SpliceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "splice: {} base entries copied as they are, {} expired dropped; {} keys named by the log rebuilt ({} of them from the base), {} alive at the cut appended; split {:.2} s, append {:.2} s, {} bytes",
            self.copied,
            self.expired,
            self.named_keys,
            self.rebuilt_from_base,
            self.appended,
            self.split.as_secs_f64(),
            self.append.as_secs_f64(),
            self.bytes
        )
    }
}

type Out = RdbWriter<BufWriter<std::fs::File>>;
/// A writer the RDB reader's spill writes into while it reads an entry
/// (`RdbReader::summarize_spilled`: an entry of any size streams through, never held whole).
type Shared = Arc<Mutex<Out>>;

fn poisoned() -> std::io::Error {
    std::io::Error::other("an RDB writer's lock was poisoned by a panic")
}

fn raw_to(w: &Shared, bytes: &[u8]) -> std::io::Result<()> {
    w.lock().map_err(|_| poisoned())?.raw(bytes)
}

fn spill_to(w: &Shared) -> flashback_rdb::Spill {
    let w = w.clone();
    Box::new(move |b| raw_to(&w, b))
}

/// The writer back from its [`Shared`] (every spill is dropped once its entry is read).
fn unshare(w: Shared) -> std::io::Result<Out> {
    Arc::try_unwrap(w)
        .map_err(|_| std::io::Error::other("an RDB writer is still shared"))?
        .into_inner()
        .map_err(|_| poisoned())
}

/// Where the output is written while it grows: beside the file (renamed over it at the end),
/// or, for a device or FIFO, in the server's directory (then written through by
/// `outputs::place_file`).
enum Staged {
    Beside {
        tmp: TempFile,
        file: PathBuf,
        dir: PathBuf,
    },
    Local(PathBuf),
}

impl Staged {
    fn path(&self) -> &Path {
        match self {
            Staged::Beside { tmp, .. } => tmp.path(),
            Staged::Local(p) => p,
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn restore(
    store: &Store,
    plan: &RestorePlan,
    req: &RestoreRequest,
    path: &Path,
    binary: &ServerBinary,
    base_version: u32,
    mut filter: Box<Filter>,
    progress: &Progress,
) -> Result<RestoreReport, RestoreError> {
    let server = RedisServer::start(binary, ServerOptions::default()).await?;
    let head = server_head(&server).await?;
    let staged = match resolve_rdb(path, req.force)? {
        RdbOut::File { file, dir } => Staged::Beside {
            tmp: TempFile::new(temp_name(&file, "tmp")),
            file,
            dir,
        },
        RdbOut::WriteThrough(_) => Staged::Local(server.dir.join("flashback-splice.rdb")),
    };
    let io = |source: std::io::Error| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let out_file = std::fs::File::create(staged.path()).map_err(io)?;
    let out: Shared = Arc::new(Mutex::new(
        RdbWriter::new(BufWriter::with_capacity(1 << 20, out_file), &head.header).map_err(io)?,
    ));

    let split_started = Instant::now();
    progress.begin(Phase::Fetch, Unit::Bytes, Some(plan.base_size));
    let small = server.dir.join("flashback-splice-base.rdb");
    let closure = std::mem::take(&mut filter.closure);
    let (closure, out, counts) = split_base(store, plan, closure, &small, out, head, progress)
        .await
        .map_err(|e| e.into_restore(path))?;
    filter.closure = closure;
    let named_keys = filter.closure.sizes().0;
    let split = split_started.elapsed();

    let (engine, _) = engine::replay_keyed(
        store,
        plan,
        &server,
        base_version,
        None,
        progress,
        Some(KeyLevel {
            base: small,
            filter,
        }),
    )
    .await?;

    let append_started = Instant::now();
    progress.begin(Phase::Copy, Unit::Bytes, None);
    server.client().await?.ok(&["SAVE"]).await?;
    let dump = server.dir.join("dump.rdb");
    let (out_file, appended, bytes) = tokio::task::spawn_blocking(move || {
        let appended = append_dump(&dump, &out)?;
        let out = unshare(out).map_err(SplitError::Write)?;
        let bytes = out.written() + out.trailer_len();
        let file = out
            .finish()
            .map_err(SplitError::Write)?
            .into_inner()
            .map_err(|e| SplitError::Write(e.into_error()))?;
        file.sync_all().map_err(SplitError::Write)?;
        Ok::<_, SplitError>((file, appended, bytes))
    })
    .await
    .map_err(|e| RestoreError::Output(format!("the splice's append stopped: {e}")))?
    .map_err(|e| e.into_restore(path))?;
    drop(out_file);
    let delivered = commit(staged, path, req.force, bytes).await?;
    progress.end();
    let stats = SpliceStats {
        named_keys,
        copied: counts.copied,
        rebuilt_from_base: counts.rebuilt,
        expired: counts.expired,
        appended,
        bytes,
        split,
        append: append_started.elapsed(),
    };
    Ok(RestoreReport {
        plan_summary: plan.summary(),
        engine,
        filtered: None,
        key_level: None,
        key_fallback: None,
        parallel: None,
        parallel_fallback: None,
        splice: Some(stats),
        splice_fallback: None,
        ttl_note: None,
        delivered,
        phases: progress.phases(),
        elapsed: progress.elapsed(),
    })
}

/// The private server's header and AUX fields, as its own SAVE writes them (of an empty
/// dataset: a few hundred bytes).
struct Head {
    header: flashback_rdb::Header,
    aux: Vec<u8>,
}

async fn server_head(server: &RedisServer) -> Result<Head, RestoreError> {
    server.client().await?.ok(&["SAVE"]).await?;
    let dump = server.dir.join("dump.rdb");
    let bad = |e: &dyn std::fmt::Display| {
        RestoreError::engine(server, format!("reading its empty dump's header: {e}"))
    };
    let mut r = RdbReader::open(&dump).map_err(|e| bad(&e))?;
    r.capture_raw(true);
    let mut aux = Vec::new();
    while let Some(Item::Aux { .. }) = r.next().map_err(|e| bad(&e))? {
        aux.extend_from_slice(r.raw());
    }
    Ok(Head {
        header: *r.header(),
        aux,
    })
}

#[derive(Debug, Default, Clone, Copy)]
struct SplitCounts {
    copied: u64,
    rebuilt: u64,
    expired: u64,
}

#[derive(Debug, thiserror::Error)]
enum SplitError {
    /// The base (or the server's dump) does not read: named by the reader (file, offset).
    #[error("{0}")]
    Read(String),
    /// Writing the output failed (a full disk): the output's path names it.
    #[error(transparent)]
    Write(std::io::Error),
    /// Writing the private server's small base failed.
    #[error("{0}")]
    Local(String),
}

impl SplitError {
    fn into_restore(self, path: &Path) -> RestoreError {
        match self {
            SplitError::Write(source) => RestoreError::Io {
                path: path.to_path_buf(),
                source,
            },
            SplitError::Read(what) | SplitError::Local(what) => RestoreError::Output(what),
        }
    }
}

/// Streams the plan's base from the store through [`split`] on a blocking thread.
async fn split_base(
    store: &Store,
    plan: &RestorePlan,
    closure: super::keys::closure::Closure,
    small: &Path,
    out: Shared,
    head: Head,
    progress: &Progress,
) -> Result<(super::keys::closure::Closure, Shared, SplitCounts), SplitError> {
    let key = plan.base_key.to_string();
    let (read, feeder) = open_base(store, plan, Some(progress))
        .await
        .map_err(|e| SplitError::Read(format!("{key}: {e}")))?;
    let small = small.to_path_buf();
    let now_ms = crate::now_ms() as i64;
    let job = tokio::task::spawn_blocking(move || {
        let r = (|| {
            let mut reader =
                RdbReader::with_name(std::io::BufReader::with_capacity(1 << 20, read), Some(key))
                    .map_err(|e| SplitError::Read(e.to_string()))?;
            let local = |e: std::io::Error| SplitError::Local(format!("{}: {e}", small.display()));
            let f = std::fs::File::create(&small).map_err(local)?;
            let small_w: Shared = Arc::new(Mutex::new(
                RdbWriter::new(BufWriter::with_capacity(1 << 20, f), reader.header())
                    .map_err(local)?,
            ));
            raw_to(&out, &head.aux).map_err(SplitError::Write)?;
            let counts = split(&mut reader, &small_w, &out, &closure, now_ms)?;
            // No fsync: the small file only lives until the private server has loaded it.
            unshare(small_w)
                .map_err(local)?
                .finish()
                .map_err(local)?
                .into_inner()
                .map_err(|e| local(e.into_error()))?;
            Ok(counts)
        })();
        (closure, out, r)
    });
    let (done, ()) = tokio::join!(job, feeder);
    let (closure, out, r) =
        done.map_err(|e| SplitError::Read(format!("the base's split stopped: {e}")))?;
    Ok((closure, out, r?))
}

/// One pass over the base: the closure's entries to `small`, every other one (unless expired
/// at `now_ms`) to `out`, byte for byte. SELECTDB and RESIZEDB go to `out` as they are (the
/// base's count is a close hint for the result); functions and module AUX data to both; AUX
/// fields to `small` only (`out` has the server's own).
fn split<R: Read>(
    reader: &mut RdbReader<R>,
    small: &Shared,
    out: &Shared,
    closure: &super::keys::closure::Closure,
    now_ms: i64,
) -> Result<SplitCounts, SplitError> {
    let read = |e: flashback_rdb::Error| SplitError::Read(e.to_string());
    let local = |e: std::io::Error| SplitError::Local(e.to_string());
    let write = SplitError::Write;
    reader.capture_raw(true);
    let mut counts = SplitCounts::default();
    let mut small_select: Option<Vec<u8>> = None;
    while let Some(item) = reader.next().map_err(read)? {
        match item {
            Item::Entry(info) => {
                if closure.wants_logical(info.db as u32, reader.key()) {
                    if let Some(s) = small_select.take() {
                        raw_to(small, &s).map_err(local)?;
                    }
                    reader
                        .summarize_spilled(spill_to(small))
                        .map_err(read)?
                        .map_err(local)?;
                    counts.rebuilt += 1;
                } else if info.expire_ms.is_some_and(|e| e <= now_ms) {
                    // Read through, kept nowhere.
                    let _ = reader
                        .summarize_spilled(Box::new(|_| Ok(())))
                        .map_err(read)?;
                    counts.expired += 1;
                } else {
                    reader
                        .summarize_spilled(spill_to(out))
                        .map_err(read)?
                        .map_err(write)?;
                    counts.copied += 1;
                }
            }
            Item::SelectDb(_) => {
                small_select = Some(reader.raw().to_vec());
                raw_to(out, reader.raw()).map_err(write)?;
            }
            Item::ResizeDb { .. } => raw_to(out, reader.raw()).map_err(write)?,
            Item::SlotInfo { .. } => {}
            Item::End { .. } => break,
            Item::Aux { .. } => raw_to(small, reader.raw()).map_err(local)?,
            Item::Function(_) | Item::ModuleAux { .. } | Item::SlotImport { .. } => {
                raw_to(small, reader.raw()).map_err(local)?;
                raw_to(out, reader.raw()).map_err(write)?;
            }
        }
    }
    Ok(counts)
}

/// Appends the private server's dump's entries (each db's under its SELECTDB) to `out`.
fn append_dump(dump: &Path, out: &Shared) -> Result<u64, SplitError> {
    let read = |e: flashback_rdb::Error| SplitError::Read(e.to_string());
    let mut r = RdbReader::open(dump).map_err(read)?;
    r.capture_raw(true);
    let mut n = 0;
    while let Some(item) = r.next().map_err(read)? {
        match item {
            Item::SelectDb(_) => raw_to(out, r.raw()).map_err(SplitError::Write)?,
            Item::Entry(_) => {
                r.summarize_spilled(spill_to(out))
                    .map_err(read)?
                    .map_err(SplitError::Write)?;
                n += 1;
            }
            Item::End { .. } => break,
            // The server's AUX fields opened the file; functions and module data came from
            // the base; size hints would only restate what the loader counts.
            _ => {}
        }
    }
    Ok(n)
}

/// Puts the finished file where the user asked: renamed over the output (refusing a file that
/// appeared meanwhile unless `--force`), or written through to a device.
async fn commit(
    staged: Staged,
    shown: &Path,
    force: bool,
    bytes: u64,
) -> Result<Delivered, RestoreError> {
    match staged {
        Staged::Local(p) => outputs::place_file(&p, shown, force).await,
        Staged::Beside { tmp, file, dir } => {
            outputs::rename_into_place(tmp, shown, &file, &dir, force).await?;
            Ok(Delivered::Rdb {
                path: shown.to_path_buf(),
                bytes,
            })
        }
    }
}
