//! Capture: attach to a source as a replica and write every record to the store.
//!
//! - [`state`]: the pure state machine (offsets, SELECT, MULTI, GETACK, continue-or-new-generation).
//! - [`log`]: the store side (tail segment, fsync, roll, seal, base + manifest, crash recovery).
//! - this module: the loop that connects them to a socket, with reconnects and shutdown.
//!
//! Guarantee: the agent ACKs to the primary only offsets whose records are fsync'd, and the
//! tail is fsync'd at least every `core::FLUSH_EVERY` (100 ms). So `WAIT` on the primary means
//! "durably backed up", and a kill -9 loses nothing that was acknowledged.
//!
//! Size: over ~600 lines because it still holds options, the reconnect loop, the stream loop around `core`, spooling and maintenance scheduling; to split once `core` settles; the split is issue 9's
//! (a house others can carry on), deferred so this round could land the trust and durability work.

pub mod core;
pub mod log;
pub mod poll;
pub mod state;

use crate::backoff::Backoff;
use crate::client::RedisUrl;
use crate::replica::{
    HandshakeOptions, PsyncReply, ReplicaConn, ReplicaError, ReplicationStream, StreamItem, Synced,
};
use crate::ship::{lease, upload};
use crate::store::{Store, StoreError};
use flashback_format::segment::{block_flags, Origin};
use log::Log;
use state::{continuity, Continuity, GapReason, Reply};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] flashback_format::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replication stream: {0}")]
    State(#[from] state::StateError),
    #[error("{0}")]
    SecondWriter(String),
    #[error("{0}")]
    Unsupported(String),
}

impl CaptureError {
    /// The disk (or quota) under the store or spool is full.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            CaptureError::Io { source, .. } => Some(source),
            CaptureError::Store(StoreError::Io { source, .. }) => Some(source),
            CaptureError::Replica(ReplicaError::RdbWrite(source)) => Some(source),
            _ => None,
        };
        io.and_then(|e| e.raw_os_error())
            .is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT)
    }

    fn is_retryable(&self) -> bool {
        match self {
            CaptureError::Replica(e) => e.is_retryable(),
            // A stream we cannot interpret is the primary's doing; a fresh sync may clear it.
            CaptureError::State(_) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub source: RedisUrl,
    pub name: String,
    pub handshake: HandshakeOptions,
    /// Seal the tail once it holds this many bytes…
    pub roll_bytes: u64,
    /// …or is this old.
    pub roll_age: Duration,
    /// Evidence older than this opens an uncertain interval (`capture::core`).
    pub uncertain_after: Duration,
    /// With a remote store: the local directory capture writes into before uploading
    /// (default: `~/.cache/flashback/spool/<store>`).
    pub spool: Option<std::path::PathBuf>,
    /// With a remote store: a record is uploaded within about this long (the RPO).
    pub upload_interval: Duration,
    /// With a remote store: sealed segments uploaded at once (committed in order; 1: one at a
    /// time).
    pub upload_concurrency: usize,
    /// With a remote store: past this many spool bytes capture stops reading from the primary
    /// (loudly) rather than drop anything; a warning comes at 80 %.
    pub spool_max: u64,
    /// Make a new base off the primary this often (`crate::compact`), so a restore replays at
    /// most about this much log. None: never.
    pub base_every: Option<Duration>,
    pub compact: crate::compact::CompactOptions,
    /// Prune by this policy every `PRUNE_EVERY` (None: keep everything).
    pub retention: Option<crate::prune::Policy>,
}

/// How often the agent applies its retention policy (more often for a window under 40 min).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

impl CaptureOptions {
    pub fn new(source: RedisUrl, name: String) -> Self {
        CaptureOptions {
            source,
            name,
            handshake: HandshakeOptions::default(),
            roll_bytes: 32 << 20,
            roll_age: Duration::from_secs(600),
            uncertain_after: Duration::from_secs(1),
            spool: None,
            upload_interval: Duration::from_secs(1),
            upload_concurrency: 4,
            spool_max: 10 << 30,
            base_every: None,
            compact: crate::compact::CompactOptions {
                redis_server: None,
                min_log_bytes: 1 << 20,
                min_interval: Duration::from_secs(3600),
                or_log_bytes: None,
            },
            retention: None,
        }
    }
}

/// What the agent has made durable; for the demo, tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub online: bool,
    pub generation: Option<String>,
    pub durable_offset: u64,
}

/// The default source name: host and port, which is what an operator recognises.
pub fn default_name(url: &RedisUrl) -> String {
    format!("{}-{}", file_name_safe(&url.host), url.port)
}

/// Letters, digits, '.' and '-' kept; anything else becomes '_'.
fn file_name_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;

/// Runs until `shutdown` resolves, then seals what was received and returns Ok. Errors at the
/// first connection that will not fix themselves (wrong password, missing ACL permission, a
/// refused PSYNC) are returned at once; later link failures are retried with backoff.
pub async fn run(
    store: Store,
    opts: CaptureOptions,
    shutdown: impl Future<Output = ()> + Send,
    progress: Option<watch::Sender<Progress>>,
) -> Result<(), CaptureError> {
    // Compaction and retention work on the store (the remote one when there is one), never on
    // the primary, and in tasks of their own: a slow rebuild must not delay a single fsync.
    let (maint_stop, maint_rx) = watch::channel(false);
    let mut maintenance = Vec::new();
    if let Some(every) = opts.base_every {
        let mut copts = opts.compact.clone();
        copts.min_interval = every;
        // Look four times an interval (at least once a minute): a pass that finds a little
        // less than `every` of history skips, and checking only every `every` would then make
        // bases every 2 × `every` (found by bench/restore_history.py). Once a minute also
        // serves the volume trigger.
        let every = (every / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let stop = wait_true(maint_rx.clone());
        maintenance.push(tokio::spawn(crate::compact::run_every(
            store.clone(),
            opts.name.clone(),
            every,
            copts,
            stop,
        )));
    }
    if let Some(policy) = opts.retention {
        let (store, name, rx) = (store.clone(), opts.name.clone(), maint_rx.clone());
        maintenance.push(tokio::spawn(async move {
            prune_every(store, name, policy, wait_true(rx)).await
        }));
    }
    let result = capture_only(store, opts, shutdown, progress).await;
    let _ = maint_stop.send(true);
    for m in maintenance {
        let _ = m.await;
    }
    result
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The agent's retention: the same plan `flashback prune` makes, applied every `PRUNE_EVERY`.
async fn prune_every(
    store: Store,
    source: String,
    policy: crate::prune::Policy,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    // A short window is pruned more often than every 10 minutes, or it would hold 10 minutes.
    let every = PRUNE_EVERY.min(policy.keep / 4).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(every) => {}
        }
        let gens = match crate::store::catalog::load_generations(&store, &source).await {
            Ok(g) => g,
            Err(e) => {
                warn!("retention: cannot list '{source}': {e}");
                continue;
            }
        };
        let plan = crate::prune::prune_plan(&gens, &policy, crate::now_ms());
        if plan.deletions.is_empty() {
            continue;
        }
        match crate::prune::execute(&store, &plan).await {
            Ok(r) => info!("retention: {r}"),
            Err(e) => warn!("retention of '{source}' failed (retrying in 10 min): {e}"),
        }
    }
}

async fn capture_only(
    store: Store,
    opts: CaptureOptions,
    shutdown: impl Future<Output = ()> + Send,
    progress: Option<watch::Sender<Progress>>,
) -> Result<(), CaptureError> {
    if !store.needs_spool() {
        let mut log = Log::open(store, None, &opts.name, opts.roll_bytes, opts.roll_age).await?;
        return run_log(&mut log, &opts, shutdown, progress).await;
    }
    // A remote or encrypted store: write into a local spool, upload in the background.
    let spool_dir = opts
        .spool
        .clone()
        .unwrap_or_else(|| default_spool(&store.url));
    let mut shutdown = std::pin::pin!(shutdown);
    if let Err(e) = store.check(crate::store::Access::Write).await {
        // A first start fails fast: a wrong bucket, endpoint or key is a typo to fix now. A
        // restart during an outage (the spool holds an earlier run's data, so this store
        // worked) waits for the store instead: exiting would leave the primary's backlog to
        // run out while a supervisor restarts us in a loop. Capture itself needs the store
        // first, to learn where the stored log ends and to take the lease.
        if !spool_holds_source(&spool_dir, &opts.name) {
            return Err(e.into());
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            tracing::error!(
                "{e}; this spool holds data of an earlier run, so capture waits for the store (retrying in {} s) \
                 and then resumes by partial resync",
                backoff.as_secs()
            );
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.as_mut() => return Ok(()),
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
            match store.check(crate::store::Access::Write).await {
                Ok(()) => break,
                Err(again) => {
                    if again.to_string() != e.to_string() {
                        warn!("{again}");
                    }
                }
            }
        }
        info!("the store answers again");
    }
    capture_spooled(store, spool_dir, opts, shutdown, progress).await
}

/// Whether an earlier run left data of `source` in the spool at `dir`.
fn spool_holds_source(dir: &std::path::Path, source: &str) -> bool {
    let gens = dir
        .join(crate::store::layout::SOURCES)
        .join(source)
        .join("generations");
    std::fs::read_dir(gens).is_ok_and(|mut d| d.next().is_some())
}

async fn capture_spooled(
    store: Store,
    spool_dir: std::path::PathBuf,
    opts: CaptureOptions,
    shutdown: impl Future<Output = ()> + Send,
    progress: Option<watch::Sender<Progress>>,
) -> Result<(), CaptureError> {
    let lease = lease::Lease::acquire(&store, &opts.name)
        .await
        .map_err(|e| match e {
            lease::LeaseError::Store(s) => CaptureError::Store(s),
            e => CaptureError::SecondWriter(e.to_string()),
        })?;
    let spool = Store::open_plain(
        &spool_dir.display().to_string(),
        &crate::store::StoreConfig::new(crate::store::Access::Write),
    )?;
    info!(
        "spooling into {} before uploading to {}",
        spool_dir.display(),
        store.url
    );
    let shared = upload::Shared::default();
    let uploader = upload::Uploader {
        spool: spool.clone(),
        remote: store.clone(),
        source: opts.name.clone(),
        interval: opts.upload_interval,
        shared: shared.clone(),
        lease: Some(lease),
        concurrency: opts.upload_concurrency,
    };
    // After a stop on a full disk the spool has no room: upload what a previous run sealed
    // first (recovering its open tail in place still needs a footer's worth of bytes), then
    // what recovery sealed, before new writes need space. A failure here (the store still
    // down) is retried by the uploader's loop.
    if let Err(e) = uploader.pass().await {
        warn!("uploading what the spool holds before starting: {e}");
    }
    let mut log = Log::open(
        spool,
        Some(store),
        &opts.name,
        opts.roll_bytes,
        opts.upload_interval,
    )
    .await?;
    if let Err(e) = uploader.pass().await {
        warn!("uploading the recovered segment before starting: {e}");
    }
    log.watch_spool(log::SpoolWatch {
        shared,
        max_bytes: opts.spool_max,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut upload_task = tokio::spawn(uploader.run(stop_rx, Duration::from_secs(30)));
    let captured = tokio::select! {
        r = run_log(&mut log, &opts, shutdown, progress) => r,
        u = &mut upload_task => {
            // The uploader only ends early on a fatal error (a second writer).
            if let Err(e) = log.make_durable_now().and_then(|_| log.seal()) {
                warn!("could not seal the open segment: {e}; the next start recovers it");
            }
            return match u {
                Ok(Err(e)) => Err(CaptureError::SecondWriter(e.to_string())),
                Ok(Ok(())) => Err(CaptureError::Unsupported("the uploader stopped unexpectedly".into())),
                Err(e) => Err(CaptureError::Unsupported(format!("the uploader failed: {e}"))),
            };
        }
    };
    let _ = stop_tx.send(true);
    match upload_task.await {
        Ok(Err(e)) => return Err(CaptureError::SecondWriter(e.to_string())),
        Err(e) => warn!("the uploader failed: {e}"),
        Ok(Ok(())) => {}
    }
    captured
}

/// `~/.cache/flashback/spool/<store URL, made a file name>`.
pub fn default_spool(url: &str) -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("flashback")
        .join("spool")
        .join(file_name_safe(url))
}

/// What survives from one link to the next.
struct Links {
    polls: mpsc::Receiver<poll::Poll>,
    /// Tells the poller to poll faster while the core is inside an uncertain interval.
    uncertain: watch::Sender<bool>,
    /// The source refused INFO once: evidence comes from link bytes only.
    link_only: bool,
    /// False once the poller ended (it sends `Refused` last): a closed channel is always
    /// ready, and polling it would starve the socket.
    polls_open: bool,
    synced_once: bool,
}

async fn run_log(
    log: &mut Log,
    opts: &CaptureOptions,
    shutdown: impl Future<Output = ()> + Send,
    progress: Option<watch::Sender<Progress>>,
) -> Result<(), CaptureError> {
    let log = &mut *log;
    let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    let (poll_tx, polls) = mpsc::channel(64);
    let (uncertain, uncertain_rx) = watch::channel(true);
    // Aborted on drop: the poller must not outlive capture (it holds a connection to the source).
    let _poller = AbortOnDrop(tokio::spawn(poll::run(
        opts.source.clone(),
        poll_tx,
        uncertain_rx,
    )));
    let mut links = Links {
        polls,
        uncertain,
        link_only: false,
        polls_open: true,
        synced_once: false,
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let started = Instant::now();
        let result = session(log, opts, shutdown.as_mut(), &progress, &mut links).await;
        // A big command cut off by the disconnect is sent again whole after the resync. On a
        // session that already failed, the session's error is the one worth reporting.
        if let Err(e) = log.abandon_partial() {
            match &result {
                Ok(()) => return Err(e),
                Err(first) => warn!("after '{first}': {e}"),
            }
        }
        if let Some(p) = &progress {
            p.send_modify(|p| p.online = false);
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        match result {
            Ok(()) => {
                log.make_durable_now()?;
                log.seal()?;
                info!(
                    "capture stopped; everything received is durable up to offset {}",
                    log.durable_offset
                );
                return Ok(());
            }
            // A spool's disk fills when uploads fall behind (the store is down) faster than
            // --spool-max foresaw, or the disk is smaller than it. Uploads free space, so wait
            // for them rather than exit; a local store's disk only frees when someone acts,
            // and the exit below tells them.
            Err(e) if e.is_disk_full() && log.is_spooling() => {
                tracing::error!(
                    "{e}: the spool's disk is full. Capture STOPPED reading from the primary; nothing acknowledged \
                     is lost, and it resumes once uploads free space (fix the store, or free space on the spool's disk)"
                );
                if let Err(also) = log.seal_after_write_failure() {
                    warn!("could not seal the open segment: {also}; the next start recovers it");
                    return Err(e);
                }
                info!(
                    "sealed what the spool holds; capture resumes by partial resync from offset {}",
                    log.durable_offset + 1
                );
                // Backoff first: sealing freed the torn write's bytes, so the disk may look
                // roomy while the same backlog burst is about to fill it again.
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.as_mut() => return Ok(()),
                }
                let mut said = Instant::now();
                while !log.spool_has_room() {
                    if said.elapsed() >= Duration::from_secs(10) {
                        tracing::error!(
                            "the spool's disk is still full: capture is stopped, waiting for uploads to free space"
                        );
                        said = Instant::now();
                    }
                    log.write_metrics(true);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.as_mut() => return Ok(()),
                    }
                }
                info!("the spool's disk has room again: reconnecting");
            }
            Err(e)
                if (!links.synced_once
                    && !matches!(&e, CaptureError::Replica(ReplicaError::NotReady { .. })))
                    || !e.is_retryable() =>
            {
                // Best effort: when the failure is the disk (ENOSPC), sealing fails too, and
                // its error must not hide the original one.
                if let Err(also) = log.make_durable_now().and_then(|_| log.seal()) {
                    warn!("could not seal the open segment after the failure: {also}; the next start recovers it");
                }
                return Err(e);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(
                    "{e}; reconnecting in {:.1} s (restore by time is uncertain from {} until the agent has caught up)",
                    delay.as_secs_f64(),
                    crate::timespec::format_ms(log.evidence_ms)
                );
                // Keep what we have durable while we wait, stamped with the last evidence: the
                // window honestly ends where the agent last could vouch for the source.
                log.make_durable_now()?;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.as_mut() => {
                        log.seal()?;
                        return Ok(());
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection: handshake, sync, stream until shutdown (Ok) or a link failure (Err).
async fn session(
    log: &mut Log,
    opts: &CaptureOptions,
    mut shutdown: Shutdown<'_>,
    progress: &Option<watch::Sender<Progress>>,
    links: &mut Links,
) -> Result<(), CaptureError> {
    let resume = match log.current_resume() {
        Some(r) => Some(r),
        None => log.resume_point().await?,
    };
    let conn = tokio::select! {
        c = ReplicaConn::connect(&opts.source, opts.handshake.clone()) => c?,
        _ = shutdown.as_mut() => return Ok(()),
    };
    let asked = resume
        .as_ref()
        .map(|r| (r.state.replid.as_str(), r.state.offset));
    let synced = tokio::select! {
        s = conn.psync(asked) => s?,
        _ = shutdown.as_mut() => return Ok(()),
    };
    // When the primary answered: for a full resync, the instant its snapshot describes (it
    // forks at this answer; `notes/redis-replication.md` §1.2).
    let answered_ms = crate::now_ms();
    let mut stream = match synced {
        Synced::Full { reply, rdb } => {
            let gen = crate::store::layout::generation_id(answered_ms);
            match &reply {
                PsyncReply::FullResync { replid, offset } => info!(
                    "full resync: receiving the snapshot at offset {offset} (replid {replid}) into generation {gen}"
                ),
                _ => warn!(
                    "the server answered {} like the legacy SYNC (stock redis-server does so when PSYNC is renamed): \
                     capture works, but every reconnect will need a full snapshot and start a new generation",
                    opts.handshake.psync_command
                ),
            }
            let (file, partial) = log.base_file(&gen)?;
            // One write per MiB rather than per socket read (bench: ~18,000 writes for 344 MB).
            let mut buffered = std::io::BufWriter::with_capacity(1 << 20, file);
            let (stream, received) = tokio::select! {
                r = rdb.save(&mut buffered) => match r {
                    Ok(r) => r,
                    Err(e) => {
                        // Never acknowledged, and possibly what filled the disk.
                        drop(buffered);
                        let _ = std::fs::remove_file(&partial);
                        return Err(e.into());
                    }
                },
                _ = shutdown.as_mut() => {
                    let _ = std::fs::remove_file(&partial);
                    return Ok(());
                }
            };
            let file = buffered.into_inner().map_err(|e| CaptureError::Io {
                path: partial.display().to_string(),
                source: e.into_error(),
            })?;
            let aux = |k: &str| received.info.aux_str(k);
            let (replid, offset) = match reply {
                PsyncReply::FullResync { replid, offset } => (replid, offset),
                _ => match (aux("repl-id"), aux("repl-offset").and_then(|o| o.parse::<u64>().ok())) {
                    (Some(id), Some(off)) => (id, off),
                    _ => {
                        return Err(CaptureError::Unsupported(
                            "the server sent a snapshot without replication id and offset, so the stream cannot be \
                             placed; use a server that answers PSYNC (check --psync-command)"
                                .into(),
                        ))
                    }
                },
            };
            let full = PsyncReply::FullResync {
                replid: replid.clone(),
                offset,
            };
            let reason = match continuity(resume.as_ref(), &full) {
                Continuity::NewGeneration(r) => r,
                Continuity::Continue { .. } => GapReason::FirstCapture,
            };
            let reason = log.damage_lost(reason, resume.as_ref().map(|r| r.generation.as_str()));
            if !matches!(reason, GapReason::FirstCapture) {
                warn!("{reason}");
            }
            let db = aux("repl-stream-db")
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            log.commit_generation(
                &gen,
                (file, partial),
                &replid,
                offset,
                db,
                &received,
                &reason,
                answered_ms,
            )
            .await?;
            info!(
                "snapshot stored: {} bytes at offset {offset}, RDB v{} ({} transfer)",
                received.len,
                received.info.version,
                if received.diskless {
                    "diskless"
                } else {
                    "disk"
                }
            );
            stream
        }
        Synced::Continue {
            reply: PsyncReply::Continue { replid },
            stream,
        } => {
            // A server that "continues" a history we never asked about (`PSYNC ? -1`) is broken
            // or not what it claims; inventing a position would record garbage.
            let Some(saved) = resume.as_ref() else {
                return Err(ReplicaError::Unexpected {
                    addr: format!("{}:{}", opts.source.host, opts.source.port),
                    what: "+CONTINUE in answer to a first PSYNC (? -1): the server must send a full snapshot".into(),
                }
                .into());
            };
            log.damage_refetched();
            match continuity(Some(saved), &PsyncReply::Continue { replid }) {
                Continuity::Continue {
                    new_replid: Some(id),
                } => {
                    info!("partial resync: the primary's replid changed from {} to {id} at offset {} (failover or restart); same history", saved.state.replid, saved.state.offset);
                    log.seal()?;
                    if let Some(s) = log.state.as_mut() {
                        s.replid = id;
                    }
                    log.open_tail(Origin::ReplidChange, answered_ms)?;
                }
                _ => {
                    info!(
                        "partial resync from offset {}: no gap",
                        saved.state.offset + 1
                    );
                    if !log.has_tail() {
                        log.open_tail(Origin::Resume, answered_ms)?;
                    }
                }
            }
            stream
        }
        Synced::Continue { .. } => unreachable!("psync pairs Continue with Continue"),
    };
    links.synced_once = true;
    let cfg = core::CoreConfig {
        link_timeout_ms: opts.handshake.timeout.as_millis() as u64,
        stale_after_ms: opts.uncertain_after.as_millis() as u64,
        ..core::CoreConfig::default()
    };
    // The session opens inside an uncertain interval from the log's last evidence: writes made
    // while the agent was away (or during the snapshot transfer) arrive now, late.
    let mut core = core::Core::new(cfg, log.durable_offset, log.evidence_ms, crate::now_ms())
        .with_link_only(links.link_only);
    stream_loop(
        log,
        &mut core,
        links,
        &mut stream,
        &opts.source,
        shutdown,
        progress,
    )
    .await
}

/// The socket, the log and the timers around the capture core: feeds it events, carries out
/// its actions.
async fn stream_loop(
    log: &mut Log,
    core: &mut core::Core,
    links: &mut Links,
    stream: &mut ReplicationStream,
    source: &RedisUrl,
    mut shutdown: Shutdown<'_>,
    progress: &Option<watch::Sender<Progress>>,
) -> Result<(), CaptureError> {
    let addr = stream.acker.addr().to_string();
    let report = |log: &Log| {
        if let Some(p) = progress {
            p.send_replace(Progress {
                online: true,
                generation: log.generation.clone(),
                durable_offset: log.durable_offset,
            });
        }
    };
    // Diskless syncs send no command until the first ACK after the snapshot (notes §1.3).
    let first = core.first_ack(crate::now_ms());
    apply(log, core, stream, vec![first], &addr).await?;
    report(log);
    let mut tick = tokio::time::interval(core::FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_metrics = Instant::now()
        .checked_sub(Duration::from_secs(5))
        .unwrap_or_else(Instant::now);
    // Bytes that came in the same read as +CONTINUE (or right after a sized snapshot) are
    // already buffered: drain them before waiting for more.
    let mut arrived = stream.reader.buffered();
    loop {
        if arrived > 0 {
            take_records(log, core, stream, arrived, &addr).await?;
            arrived = 0;
            links
                .uncertain
                .send_if_modified(|u| std::mem::replace(u, core.uncertain()) != core.uncertain());
        }
        tokio::select! {
            // Order matters under `biased`: the tick comes before the socket, or a primary that
            // always has more to send (a backlog being drained) would starve the 100 ms fsync
            // and the ACKs (found by bench/capture.py).
            biased;
            _ = shutdown.as_mut() => {
                if !core.link_only() {
                    last_evidence(log, core, stream, source, &addr).await?;
                }
                log.make_durable_now()?;
                let _ = stream.acker.ack(log.durable_offset).await;
                return Ok(());
            }
            _ = tick.tick() => {
                let now = crate::now_ms();
                let mut actions = Vec::new();
                if let Some(fill) = log.spool_fill() {
                    actions.extend(core.on(core::Event::SpoolFill(fill), now));
                }
                actions.extend(core.on(core::Event::Tick, now));
                apply(log, core, stream, actions, &addr).await?;
                links.uncertain.send_if_modified(|u| std::mem::replace(u, core.uncertain()) != core.uncertain());
                log.roll_if_due(now)?;
                if last_metrics.elapsed() >= Duration::from_secs(5) {
                    log.write_metrics(core.paused());
                    last_metrics = Instant::now();
                }
                report(log);
            }
            p = links.polls.recv(), if links.polls_open => {
                let now = crate::now_ms();
                let event = match p {
                    // The source's offset means something only in the history being captured:
                    // a primary restarted empty answers with a new replid and a small offset.
                    Some(poll::Poll::Offset { sent_ms, replid, offset }) => {
                        match log.state.as_ref() {
                            Some(s) if s.replid == replid => Some(core::Event::Polled { sent_ms, offset }),
                            _ => None,
                        }
                    }
                    Some(poll::Poll::Refused(why)) => {
                        warn!(
                            "the source refuses INFO ({why}): evidence of what it has written falls back to the \
                             replication link's own bytes, so a silent link shorter than {} s goes unnoticed; \
                             grant the capture user +info to fix this",
                            core::CoreConfig::default().stale_after_link_only_ms / 1000
                        );
                        links.link_only = true;
                        Some(core::Event::PollRefused)
                    }
                    None => {
                        links.polls_open = false;
                        None
                    }
                };
                if let Some(e) = event {
                    let actions = core.on(e, now);
                    apply(log, core, stream, actions, &addr).await?;
                }
            }
            n = stream.reader.fill(), if !core.paused() => {
                arrived = n?;
            }
        }
    }
}

/// Frames what `arrived` brought and appends it: records are flagged catch-up while the core
/// is inside an uncertain interval, a GETACK is answered once it is durable, and the read
/// itself goes to the core last (it may close the interval).
async fn take_records(
    log: &mut Log,
    core: &mut core::Core,
    stream: &mut ReplicationStream,
    arrived: usize,
    addr: &str,
) -> Result<(), CaptureError> {
    let now = crate::now_ms();
    while let Some(item) = stream.reader.try_next()? {
        let flags = if core.uncertain() {
            block_flags::CATCHUP
        } else {
            0
        };
        let state = log
            .state
            .as_mut()
            .expect("a synced session has a stream state");
        let reply = match item {
            StreamItem::Command(cmd) => {
                let (rec, reply) = state.on_command(&cmd.raw, &cmd.argv, now)?;
                log.append(&rec, flags)?;
                core.counted();
                reply
            }
            // A big command goes to disk part by part as it arrives (bounded memory); it
            // becomes a record, and can be acknowledged, only with its last part.
            StreamItem::Part { bytes, end } => {
                let done = match end {
                    Some(e) => Some(state.on_streamed_command(&e.head, e.len, now)?),
                    None => None,
                };
                log.append_fragment(&bytes, done.as_ref().map(|d| &d.0), flags)?;
                if done.is_some() {
                    core.counted();
                }
                done.map_or(Reply::None, |d| d.1)
            }
        };
        if let Reply::AckNow(offset) = reply {
            let actions = core.on(core::Event::GetAck { offset }, now);
            apply(log, core, stream, actions, addr).await?;
        }
    }
    let offset = log.state.as_ref().map_or(0, |s| s.offset);
    let actions = core.on(
        core::Event::Read {
            bytes: arrived,
            offset,
        },
        now,
    );
    apply(log, core, stream, actions, addr).await
}

/// On a clean stop: one more poll of the source, and what the link still carries up to its
/// offset (at most a second), so the window reaches the moment capture stopped rather than the
/// last poll before it. Best effort: without an answer the window ends at the last evidence.
async fn last_evidence(
    log: &mut Log,
    core: &mut core::Core,
    stream: &mut ReplicationStream,
    source: &RedisUrl,
    addr: &str,
) -> Result<(), CaptureError> {
    let Some(replid) = log.state.as_ref().map(|s| s.replid.clone()) else {
        return Ok(());
    };
    let Some((sent_ms, offset)) = poll::once(source, &replid).await else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while log.state.as_ref().is_some_and(|s| s.offset < offset) {
        match tokio::time::timeout_at(deadline, stream.reader.fill()).await {
            Ok(Ok(n)) if n > 0 => take_records(log, core, stream, n, addr).await?,
            _ => break,
        }
    }
    let actions = core.on(core::Event::Polled { sent_ms, offset }, crate::now_ms());
    apply(log, core, stream, actions, addr).await
}

/// Carries out the core's actions in order; an fsync's result goes back to the core at once,
/// so the ACKs it allows follow in the same call.
async fn apply(
    log: &mut Log,
    core: &mut core::Core,
    stream: &mut ReplicationStream,
    actions: Vec<core::Action>,
    addr: &str,
) -> Result<(), CaptureError> {
    // The log stamps every block and the seal with the newest evidence, whichever path writes
    // them next (a full block, a shutdown, a reconnect).
    log.evidence_ms = log.evidence_ms.max(core.evidence_ms());
    let mut queue: std::collections::VecDeque<core::Action> = actions.into();
    while let Some(a) = queue.pop_front() {
        match a {
            core::Action::MakeDurable {
                covered_ms,
                heartbeat,
            } => {
                log.make_durable(covered_ms, heartbeat)?;
                let more = core.on(
                    core::Event::Durable {
                        offset: log.durable_offset,
                    },
                    crate::now_ms(),
                );
                queue.extend(more);
            }
            core::Action::Ack(offset) => stream.acker.ack(offset).await?,
            core::Action::Uncertain(i) => {
                warn!(
                    "restore by time is not exact from {} to {}: {} writes made while the agent could not vouch for \
                     the source ({}) arrived late; --at-offset between {} and {} stays exact",
                    crate::timespec::format_ms(i.from_ms),
                    crate::timespec::format_ms(i.to_ms),
                    i.records,
                    match i.cause {
                        core::Cause::Silence => "the link was silent",
                        core::Cause::Reconnect => "a reconnect, an agent restart or a new snapshot",
                    },
                    i.from_offset,
                    i.to_offset
                );
                log.record_uncertain(&i);
            }
            core::Action::Pause => {}
            core::Action::Resume => {
                info!("the spool has room again: reading from the primary resumes");
            }
            core::Action::SpoolWarning(fill) if fill >= 1.0 => tracing::error!(
                "the spool is full ({:.0} % of its limit: --spool-max, or what its disk can still hold) because \
                 uploads to the store are failing: capture has STOPPED reading from the primary; nothing was \
                 dropped, and reading resumes when uploads catch up (fix the store, or give the spool more room)",
                fill * 100.0
            ),
            core::Action::SpoolWarning(fill) => warn!(
                "the spool is {:.0} % full (of --spool-max, or of what its disk can still hold): uploads to \
                 the store are falling behind; at 100 % capture stops reading from the primary",
                fill * 100.0
            ),
            core::Action::LinkDead => {
                return Err(ReplicaError::Timeout {
                    addr: addr.to_string(),
                    secs: core.link_timeout_secs(),
                }
                .into())
            }
        }
    }
    Ok(())
}
