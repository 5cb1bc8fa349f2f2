//! Restore: **plan → reader → engine → output**.
//!
//! - [`plan`] decides, from the store's listing and at most a few segments, which generation,
//!   which base, which segments and exactly where to cut (never inside MULTI…EXEC). It is
//!   printable (`--dry-run`) and does no writes. `uncertain` answers whether the cut falls in an
//!   uncertain interval; [`preflight`] checks the output can take the restore before any work.
//! - [`reader`] streams the plan's records in order, one segment in memory at a time, checking
//!   that they chain without a hole, into a [`reader::RecordSink`].
//! - [`engine`] is that sink: it impersonates a master to a private redis-server, serves it the
//!   base and the records over the replication protocol, waits until it has applied them all,
//!   then promotes it. Replaying through the replication link (rather than as a client) gives
//!   master-link semantics for free: no ACL, no OOM or READONLY refusals, no expiry while the
//!   history is replayed.
//! - [`outputs`] then move the result where the user asked: an RDB file, a live instance, or the
//!   server itself left running.
//! - [`parallel`] (`--parallel N`): the dataset rebuilt in N partitions at once by N engines,
//!   then merged into one RDB the outputs take from there.
//! - [`splice`] (`--rdb`, unless `--no-splice`): the base's entries the log never names copied
//!   into the file as they are, only the named keys rebuilt by the engine (key-level, [`keys`]).
//!
//! Restore never writes to the captured source unless the user names it as `--to`.
//!
//! Size: ~740 lines of code, over the house's ~600: the request and report types, the window
//! errors, and the one driver that picks the path (base copy, splice, key-level, partitioned, serial)
//! and the output. Not split yet for lack of time in the session that grew it; the seam is the
//! driver (`run`, `execute*` and their helpers `server_options`/`deliver`/`ttl_rewrite`), which
//! would move to `restore/run.rs`, leaving this file the types and the module map.

mod base_copy;
pub mod cluster;
pub mod cost;
pub mod engine;
pub mod keys;
pub mod outputs;
pub mod parallel;
pub mod plan;
pub mod preflight;
pub mod proof;
pub mod reader;
pub mod splice;
mod uncertain;

use crate::client::{ClientError, RedisUrl};
use crate::progress::{PhaseTime, Progress};
use crate::redis_server::{RedisServer, ServerBinary, ServerError, ServerOptions};
use crate::store::catalog::Window;
use crate::store::{Store, StoreError};
use crate::timespec::format_ms;
use std::path::PathBuf;

pub use base_copy::NO_SERVER;
pub use plan::{plan, plan_with, RestorePlan, Target};

/// Where the restored dataset goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// Write an RDB file (atomically; refuses to overwrite without `force`).
    Rdb(PathBuf),
    /// Copy every key into a live instance with DUMP/RESTORE.
    To(RedisUrl),
    /// Leave the restore server running on this port.
    Serve(u16),
    /// `--serve PORT --tls-cert F --tls-key F`: the same, speaking TLS only on PORT.
    ServeTls(u16, ServeTls),
    /// `--serve-cluster PORT --primaries N [--replicas R]`: a new local cluster holding the
    /// restore, left running.
    ServeCluster(outputs::ClusterSpec),
}

/// The certificate a TLS `--serve` presents, and the CA its clients' certificates must chain to
/// (`--tls-ca`: clients may then present one, `tls-auth-clients optional`; without it no
/// client certificate is asked for).
#[derive(Debug, Clone)]
pub struct ServeTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

impl ServeTls {
    /// redis-server's arguments: TLS on `port`; its plain port is an internal one the restore
    /// uses and closes before handing the server over ([`outputs::serve`]).
    fn server_args(&self, port: u16) -> Vec<String> {
        // Absolute: redis-server runs in its own directory, where a relative path means nothing.
        let path = |p: &PathBuf| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        };
        let mut args = vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(&self.cert),
            "--tls-key-file".into(),
            path(&self.key),
            "--tls-auth-clients".into(),
        ];
        match &self.ca {
            Some(ca) => args.extend(["optional".into(), "--tls-ca-cert-file".into(), path(ca)]),
            None => args.push("no".into()),
        }
        args
    }
}

/// What happens to TTLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlMode {
    /// Keep each key's absolute expiry time (keys whose time has passed are gone).
    #[default]
    Absolute,
    /// Restore the remaining time as it was at the restore point.
    Relative,
    /// Drop every TTL.
    Persist,
}

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub source: String,
    pub target: Target,
    pub output: Output,
    /// `--redis-server PATH`; None: `redis-server` on PATH.
    pub redis_server: Option<PathBuf>,
    /// `--keys` (and `--keys-from`, as exact patterns): glob patterns (Redis' syntax); empty
    /// means every key.
    pub keys: Vec<Vec<u8>>,
    /// `--db N`: only db N (its number at the restore point). With `keys`, or alone, the
    /// restore is key-level ([`keys`]).
    pub db: Option<u32>,
    pub ttl: TtlMode,
    /// `--to`: overwrite keys that exist on the target.
    pub replace: bool,
    /// `--rdb`: overwrite an existing file.
    pub force: bool,
    /// `--to`: prove the copy afterwards (`restore::proof`): Some(true) `--verify`,
    /// Some(false) `--no-verify`, None: when the restore holds fewer than 1M keys.
    pub verify: Option<bool>,
    /// `--to`: `--db-map S:D,…`, where the keys of db S go on the target (others: same number).
    pub db_map: Vec<(u32, u32)>,
    /// `--parallel N`: rebuild in N partitions at once ([`parallel`]); 0 or 1: serially.
    /// Key-level restores are always serial.
    pub parallel: usize,
    /// `--rdb`: splice the base's untouched entries with the keys the log named ([`splice`]);
    /// false (`--no-splice`): rebuild the whole dataset in a server and SAVE it.
    pub splice: bool,
}

/// What was asked for, for [`OutsideWindow`]'s message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Time(u64),
    Offset(u64),
}

/// The requested time is inside an uncertain interval: the agent could not vouch for the
/// source then (a silent link, a reconnect, a restart), so a state by arrival time may be one the
/// source never had. Display names the interval, the last exact instant and the exact offsets.
#[derive(Debug, Clone)]
pub struct Uncertain {
    pub source: String,
    pub requested_ms: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    pub from_offset: u64,
    pub to_offset: u64,
}

impl std::fmt::Display for Uncertain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is inside an uncertain interval of source '{}' ({} .. {}): the agent could not vouch for the source then \
             (a silent link, a reconnect or a restart), so writes made in it arrived late and a restore by time could give \
             a state the source never had. The last exact instant before it is {}; offsets {} to {} stay exact \
             (--at-offset N); or pass --inexact to restore by arrival time anyway",
            format_ms(self.requested_ms),
            self.source,
            format_ms(self.from_ms),
            format_ms(self.to_ms),
            format_ms(self.from_ms),
            self.from_offset,
            self.to_offset
        )
    }
}

/// The requested point is in no restorable window. Display prints every window and the fix.
#[derive(Debug, Clone)]
pub struct OutsideWindow {
    pub source: String,
    pub requested: Requested,
    /// (generation id, window), oldest first.
    pub windows: Vec<(String, Window)>,
}

impl std::fmt::Display for OutsideWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.requested {
            Requested::Time(t) => writeln!(
                f,
                "{} is outside the restorable window of source '{}':",
                format_ms(t),
                self.source
            )?,
            Requested::Offset(n) => writeln!(
                f,
                "offset {n} is outside the restorable window of source '{}':",
                self.source
            )?,
        }
        for (gen, w) in &self.windows {
            if w.from_offset == w.to_offset && w.from_ms == w.to_ms {
                // A kept base whose surrounding log was pruned: that exact instant only.
                writeln!(
                    f,
                    "  {}  (restore point: a base at offset {}, generation {gen}; this exact time only)",
                    format_ms(w.from_ms),
                    w.from_offset
                )?;
                continue;
            }
            writeln!(
                f,
                "  {} .. {}  (offsets {}..{}, generation {gen})",
                format_ms(w.from_ms),
                format_ms(w.to_ms),
                w.from_offset,
                w.to_offset
            )?;
        }
        match self.requested {
            Requested::Time(_) => write!(f, "pick a time inside one of these windows"),
            Requested::Offset(_) => write!(f, "pick an offset inside one of these windows"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] flashback_format::Error),
    #[error("{0}")]
    OutsideWindow(Box<OutsideWindow>),
    #[error("{0}")]
    Uncertain(Box<Uncertain>),
    #[error("source '{name}' has nothing restorable yet: {why}")]
    NothingRestorable { name: String, why: String },
    /// The log does not hold what the listing promised (a hole, a record out of place).
    #[error("{key}: {what}")]
    Log { key: String, what: String },
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("base is RDB v{base_version} ({made_by}); {server} loads up to v{max}: pass --redis-server PATH to {need} server")]
    RdbVersion {
        base_version: u32,
        made_by: String,
        server: String,
        max: u32,
        need: &'static str,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The restore server misbehaved while replaying (closed the link, never caught up…).
    #[error("restore server: {what}; its log {log} ends with:\n{tail}")]
    Engine {
        what: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{0} already exists: pass --force to overwrite it, or pick another file")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    /// The output cannot take the restore (found before any work, or before the first write).
    #[error("{0}")]
    Preflight(String),
    /// `--keys` matched nothing: an empty result is almost surely a wrong pattern.
    #[error("{patterns}: no key of the restored dataset matches; nothing was written: check the pattern (Redis glob syntax, case-sensitive) and the db")]
    /// `total`: the keys the restore held (key-level: only the closure's, so not printed).
    NoKeyMatched { patterns: String, total: u64 },
    #[error("{0}")]
    Output(String),
}

impl RestoreError {
    pub(crate) fn engine(server: &RedisServer, what: impl Into<String>) -> Self {
        RestoreError::Engine {
            what: what.into(),
            log: server.log_path.clone(),
            tail: server.log_tail(10),
        }
    }
}

/// Everything a restore did, printed at the end.
#[derive(Debug)]
pub struct RestoreReport {
    pub plan_summary: String,
    pub engine: engine::EngineReport,
    /// `--keys`: (kept, deleted).
    pub filtered: Option<(u64, u64)>,
    /// A key-level restore's counts ([`keys::KeyLevelStats`]).
    pub key_level: Option<keys::KeyLevelStats>,
    /// Why a selection was restored the full way (a record whose keys cannot be known).
    pub key_fallback: Option<String>,
    /// `--parallel N`: what the partitioned rebuild did.
    pub parallel: Option<parallel::ParallelStats>,
    /// `--parallel N` asked for, but the restore ran serially: why.
    pub parallel_fallback: Option<String>,
    /// `--rdb` spliced: what it copied and rebuilt ([`splice`]).
    pub splice: Option<splice::SpliceStats>,
    /// `--rdb` that could not be spliced: why (the whole dataset was rebuilt).
    pub splice_fallback: Option<String>,
    /// `--ttl relative|persist`: what was done to TTLs.
    pub ttl_note: Option<String>,
    pub delivered: outputs::Delivered,
    /// Every phase's time, from the plan to the result delivered: the recovery time measured.
    pub phases: Vec<PhaseTime>,
    /// The whole restore, from the `Progress` record's creation (the command's start).
    pub elapsed: std::time::Duration,
}

impl RestoreReport {
    /// True when something did not go in: replica errors while replaying, or keys that failed
    /// to copy. The restore finished, but its result may differ from the source.
    pub fn has_failures(&self) -> bool {
        self.engine.replica_errors > 0 || self.delivered.has_failures()
    }
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.plan_summary)?;
        write!(f, "{}", self.engine)?;
        if let Some(k) = &self.key_level {
            write!(f, "{k}")?;
        }
        if let Some(why) = &self.key_fallback {
            writeln!(f, "key-level: not possible ({why}); the whole dataset was restored, then the selection kept")?;
        }
        if let Some(p) = &self.parallel {
            write!(f, "{p}")?;
        }
        if let Some(why) = &self.parallel_fallback {
            writeln!(f, "parallel: not possible ({why}); restored serially")?;
        }
        if let Some(s) = &self.splice {
            write!(f, "{s}")?;
        }
        if let Some(why) = &self.splice_fallback {
            writeln!(
                f,
                "splice: not possible ({why}); the whole dataset was rebuilt and saved"
            )?;
        }
        if let Some((kept, deleted)) = self.filtered {
            writeln!(f, "keys filter: {kept} keys kept, {deleted} removed")?;
        }
        if let Some(n) = &self.ttl_note {
            writeln!(f, "{n}")?;
        }
        write!(f, "{}", self.delivered)?;
        writeln!(
            f,
            "restore time (RTO): {:.2} s ({})",
            self.elapsed.as_secs_f64(),
            crate::progress::phases_line(&self.phases)
        )
    }
}

/// Where `--rdb` can be the stored base itself, copied out with no server and no replay: the
/// cut is the base's offset, every key is wanted, TTLs stay absolute (a TTL rewrite or a key
/// or `--db` filter needs a server to act on the keys). The base keeps the source's RDB version, which
/// is what the source's own redis-server loads (a server path would write the local server's).
fn base_copy_applies<'r>(plan: &RestorePlan, req: &'r RestoreRequest) -> Option<&'r PathBuf> {
    match &req.output {
        Output::Rdb(path)
            if plan.is_base_itself()
                && req.keys.is_empty()
                && req.db.is_none()
                && req.ttl == TtlMode::Absolute =>
        {
            Some(path)
        }
        _ => None,
    }
}

/// Checks the output, plans and runs a restore (what the demo and tests call).
pub async fn run(store: &Store, req: RestoreRequest) -> Result<RestoreReport, RestoreError> {
    let checked = preflight::check_output(&req).await?;
    let plan = plan::plan(store, &req.source, req.target).await?;
    execute_checked(store, &plan, &req, &checked).await
}

/// Refuses what cannot work, from the request alone (no I/O).
pub fn check_request(req: &RestoreRequest) -> Result<(), RestoreError> {
    match &req.output {
        Output::To(u) if u.db != 0 => {
            return Err(RestoreError::Unsupported(format!(
                "--to {u}: every db is copied to the db of the same number on the target, so the URL must not name a db; leave out '/{}' (or map dbs with --db-map S:D)",
                u.db
            )))
        }
        _ => {}
    }
    if !req.db_map.is_empty() && !matches!(req.output, Output::To(_) | Output::ServeCluster(_)) {
        return Err(RestoreError::Unsupported(
            "--db-map only applies to --to and --serve-cluster (an RDB file or a served instance keeps the source's db numbers)".into(),
        ));
    }
    if let Output::ServeCluster(spec) = &req.output {
        if spec.primaries == 0 {
            return Err(RestoreError::Unsupported(
                "--serve-cluster: --primaries must be at least 1 (e.g. --primaries 3)".into(),
            ));
        }
    }
    Ok(())
}

/// Runs a plan made by [`plan()`], checking the output first ([`preflight::check_output`]).
pub async fn execute(
    store: &Store,
    plan: &RestorePlan,
    req: &RestoreRequest,
) -> Result<RestoreReport, RestoreError> {
    let checked = preflight::check_output(req).await?;
    execute_checked(store, plan, req, &checked).await
}

/// Runs a plan whose output passed [`preflight::check_output`]: engine, then key filter and
/// TTL mode, then the sink.
pub async fn execute_checked(
    store: &Store,
    plan: &RestorePlan,
    req: &RestoreRequest,
    checked: &preflight::Checked,
) -> Result<RestoreReport, RestoreError> {
    execute_observed(store, plan, req, checked, &Progress::new()).await
}

/// [`execute_checked`], reporting each phase (fetch, load, replay, copy) to `progress`, which
/// the caller may have started earlier (its plan phase).
pub async fn execute_observed(
    store: &Store,
    plan: &RestorePlan,
    req: &RestoreRequest,
    checked: &preflight::Checked,
    progress: &Progress,
) -> Result<RestoreReport, RestoreError> {
    progress.end();
    check_request(req)?;
    if let Some(path) = base_copy_applies(plan, req) {
        return base_copy::base_as_rdb(store, plan, path, req.force, progress).await;
    }
    let binary = ServerBinary::find(req.redis_server.as_deref())?;
    let base_version = engine::check_base_version(store, plan, &binary).await?;
    let sel = keys::Selection {
        patterns: req.keys.clone(),
        db: req.db,
    };
    // The first pass reads the log once, before any server starts: it decides what the
    // second one sends.
    let pass1 = if sel.is_all() {
        None
    } else {
        let table = first_pass(store, plan, progress).await;
        let p = keys::closure(store, plan, table, sel.clone()).await?;
        progress.end();
        Some(p)
    };
    let mut splice_fallback = None;
    if let (Output::Rdb(path), true) = (&req.output, splice::applies(req)) {
        let table = first_pass(store, plan, progress).await;
        let touched = keys::touched(store, plan, table).await?;
        progress.end();
        match touched {
            Ok(filter) => {
                return splice::restore(
                    store,
                    plan,
                    req,
                    path,
                    &binary,
                    base_version,
                    filter,
                    progress,
                )
                .await
            }
            Err(why) => splice_fallback = Some(why),
        }
    }
    let (rewrite, ttl_note) = ttl_rewrite(plan, req);
    let mut parallel_fallback = None;
    if parallel::applies(req) {
        progress.begin(
            crate::progress::Phase::Plan,
            crate::progress::Unit::Bytes,
            None,
        );
        let n = req.parallel.min(parallel::MAX_PARTITIONS);
        let prepared = parallel::prepare(store, plan, n).await?;
        progress.end();
        match prepared {
            Err(why) => parallel_fallback = Some(why),
            Ok(filters) => {
                let opts = server_options(&req.output, &binary);
                let built = parallel::rebuild(
                    store,
                    plan,
                    req,
                    &binary,
                    base_version,
                    rewrite,
                    filters,
                    opts,
                    progress,
                )
                .await?;
                let delivered = match (&req.output, built.output_server) {
                    (Output::Rdb(path), _) => {
                        progress.begin(
                            crate::progress::Phase::Copy,
                            crate::progress::Unit::Bytes,
                            None,
                        );
                        outputs::place_file(&built.merged, path, req.force).await?
                    }
                    (_, Some(server)) => {
                        drop(built.partitions);
                        deliver(server, req, checked, progress).await?
                    }
                    (_, None) => {
                        return Err(RestoreError::Output(
                            "the partitioned rebuild left no server to deliver from".into(),
                        ))
                    }
                };
                progress.end();
                return Ok(RestoreReport {
                    plan_summary: plan.summary(),
                    engine: built.engine,
                    filtered: None,
                    key_level: None,
                    key_fallback: None,
                    parallel: Some(built.stats),
                    parallel_fallback: None,
                    splice: None,
                    splice_fallback: None,
                    ttl_note,
                    delivered,
                    phases: progress.phases(),
                    elapsed: progress.elapsed(),
                });
            }
        }
    }
    let server = RedisServer::start(&binary, server_options(&req.output, &binary)).await?;
    let (key_level, key_fallback) = match pass1 {
        None => (None, None),
        Some(keys::Pass1::Fallback(why)) => (None, Some(why)),
        Some(keys::Pass1::Closure(mut filter)) => {
            let path = server.dir.join("flashback-key-level-base.rdb");
            let closure = std::mem::take(&mut filter.closure);
            let (closure, counts) = keys::base::filter_base(store, plan, closure, &path).await?;
            filter.closure = closure;
            let (linked, in_closure) = filter.closure.sizes();
            filter.stats.linked_keys = linked;
            filter.stats.linked_in_closure = in_closure;
            filter.stats.base_kept = counts.kept;
            filter.stats.base_total = counts.kept + counts.dropped;
            filter.stats.base_bytes_kept = counts.bytes_written;
            (Some(engine::KeyLevel { base: path, filter }), None)
        }
    };
    let (engine, filter) = engine::replay_keyed(
        store,
        plan,
        &server,
        base_version,
        rewrite,
        progress,
        key_level,
    )
    .await?;
    let key_level = filter.map(|f| f.stats.clone());
    let filtered = if sel.is_all() {
        None
    } else {
        let (kept, deleted) = outputs::keep_only(&server, &sel).await?;
        if kept == 0 {
            return Err(RestoreError::NoKeyMatched {
                patterns: describe_selection(&sel),
                total: deleted,
            });
        }
        Some((kept, deleted))
    };
    let delivered = deliver(server, req, checked, progress).await?;
    progress.end();
    Ok(RestoreReport {
        plan_summary: plan.summary(),
        engine,
        filtered,
        key_level,
        key_fallback,
        parallel: None,
        parallel_fallback,
        splice: None,
        splice_fallback,
        ttl_note,
        delivered,
        phases: progress.phases(),
        elapsed: progress.elapsed(),
    })
}

/// A first pass over the log begins (the plan phase, in the report): the generation's command
/// table it classifies records by.
async fn first_pass(
    store: &Store,
    plan: &RestorePlan,
    progress: &Progress,
) -> crate::commands::CommandTable {
    progress.begin(
        crate::progress::Phase::Plan,
        crate::progress::Unit::Bytes,
        None,
    );
    crate::store::commands::command_table(store, &plan.source, &plan.generation).await
}

/// The selection as the user gave it, for messages: `--keys 'a*' b --db 3`.
fn describe_selection(sel: &keys::Selection) -> String {
    let mut parts = Vec::new();
    if !sel.patterns.is_empty() {
        parts.push(format!(
            "--keys {}",
            sel.patterns
                .iter()
                .map(|p| crate::show::key(p))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if let Some(d) = sel.db {
        parts.push(format!("--db {d}"));
    }
    parts.join(" ")
}

/// The restore server's options: `--serve` keeps it (on the user's port, maybe over TLS).
fn server_options(output: &Output, binary: &ServerBinary) -> ServerOptions {
    match output {
        Output::Serve(port) => ServerOptions {
            port: Some(*port),
            may_outlive_us: true,
            ..Default::default()
        },
        Output::ServeTls(port, tls) => ServerOptions {
            may_outlive_us: true,
            extra_args: tls.server_args(*port),
            ..Default::default()
        },
        Output::Rdb(_) => ServerOptions {
            extra_args: outputs::rdb_server_args(binary),
            ..Default::default()
        },
        _ => ServerOptions::default(),
    }
}

/// Moves the rebuilt dataset from `server` where the user asked.
async fn deliver(
    server: RedisServer,
    req: &RestoreRequest,
    checked: &preflight::Checked,
    progress: &Progress,
) -> Result<outputs::Delivered, RestoreError> {
    Ok(match &req.output {
        Output::Rdb(path) => outputs::to_rdb(&server, path, req.force, progress).await?,
        Output::To(url) => {
            let to = outputs::LiveTarget {
                url,
                replace: req.replace,
                db_map: &req.db_map,
                facts: checked.target.as_ref(),
                progress,
                verify: req.verify,
            };
            outputs::to_live(&server, &to).await?
        }
        Output::Serve(_) => outputs::serve(server),
        Output::ServeTls(port, _) => outputs::serve_tls(server, *port).await?,
        Output::ServeCluster(spec) => {
            outputs::serve_cluster(&server, spec, &req.db_map, req.verify, progress).await?
        }
    })
}

/// `--ttl relative|persist`: the rewrite before promotion, and the report's note. TTLs are
/// judged as of the requested instant (by offset: the last record's arrival).
fn ttl_rewrite(
    plan: &RestorePlan,
    req: &RestoreRequest,
) -> (Option<engine::TtlRewrite>, Option<String>) {
    let at_ms = match plan.target {
        Target::At(t) => t,
        _ => plan.stop_time_ms.unwrap_or_else(crate::now_ms),
    };
    match req.ttl {
        TtlMode::Absolute => (None, None),
        TtlMode::Relative => (
            Some(engine::TtlRewrite::Relative { at_ms }),
            Some(format!(
                "ttl relative: every key has the time it had left at {}",
                crate::timespec::format_ms(at_ms)
            )),
        ),
        TtlMode::Persist => (
            Some(engine::TtlRewrite::Persist { at_ms }),
            Some(format!(
                "ttl persist: every key alive at {} has no TTL",
                crate::timespec::format_ms(at_ms)
            )),
        ),
    }
}
