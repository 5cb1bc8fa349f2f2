//! Capture: attach to a source as a replica and write every record to the store.
//!
//! - [`state`]: the pure state machine (offsets, SELECT, MULTI, GETACK, continue-or-new-generation).
//! - [`log`]: the store side (tail segment, fsync, roll, seal, base + manifest, crash recovery).
//! - this module: the loop that connects them to a socket, with reconnects and shutdown.
//!
//! Guarantee: the agent ACKs to the primary only offsets whose records are fsync'd, and the
//! tail is fsync'd at least every `flush_interval` (100 ms). So `WAIT` on the primary means
//! "durably backed up", and a kill -9 loses nothing that was acknowledged.

pub mod log;
pub mod state;

use crate::replica::{
    HandshakeOptions, PsyncReply, ReplicaConn, ReplicaError, ReplicationStream, StreamItem, Synced,
};
use crate::source::RedisUrl;
use crate::store::{Store, StoreError};
use flashback_format::segment::{block_flags, Origin};
use log::Log;
use state::{continuity, Continuity, GapReason, Reply};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::watch;
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
    /// Upper bound on how long a received record waits for its fsync (DESIGN: ≤ 100 ms).
    pub flush_interval: Duration,
    /// An idle tail gets a heartbeat block this often, keeping the window's end current.
    pub heartbeat: Duration,
}

impl CaptureOptions {
    pub fn new(source: RedisUrl, name: String) -> Self {
        CaptureOptions {
            source,
            name,
            handshake: HandshakeOptions::default(),
            roll_bytes: 32 << 20,
            roll_age: Duration::from_secs(600),
            flush_interval: Duration::from_millis(100),
            heartbeat: Duration::from_secs(1),
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
    let host: String = url
        .host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}-{}", url.port)
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
    let mut log = Log::open(store, &opts.name, opts.roll_bytes, opts.roll_age).await?;
    let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    let mut synced_once = false;
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let result = session(
            &mut log,
            &opts,
            shutdown.as_mut(),
            &progress,
            &mut synced_once,
        )
        .await;
        // A big command cut off by the disconnect is sent again whole after the resync.
        log.abandon_partial()?;
        if let Some(p) = &progress {
            p.send_modify(|p| p.online = false);
        }
        match result {
            Ok(()) => {
                log.make_durable(crate::now_ms(), None)?;
                log.seal()?;
                info!(
                    "capture stopped; everything received is durable up to offset {}",
                    log.durable_offset
                );
                return Ok(());
            }
            Err(e)
                if !synced_once
                    && !matches!(&e, CaptureError::Replica(ReplicaError::NotReady { .. })) =>
            {
                log.make_durable(crate::now_ms(), None)?;
                log.seal()?;
                return Err(e);
            }
            Err(e) if !e.is_retryable() => {
                log.make_durable(crate::now_ms(), None)?;
                log.seal()?;
                return Err(e);
            }
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(500);
                }
                warn!("{e}; reconnecting in {:.1} s", backoff.as_secs_f64());
                // Keep what we have durable while we wait: the heartbeat stops, the window
                // honestly ends at the disconnect.
                log.make_durable(crate::now_ms(), None)?;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.as_mut() => {
                        log.seal()?;
                        return Ok(());
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// One connection: handshake, sync, stream until shutdown (Ok) or a link failure (Err).
async fn session(
    log: &mut Log,
    opts: &CaptureOptions,
    mut shutdown: Shutdown<'_>,
    progress: &Option<watch::Sender<Progress>>,
    synced_once: &mut bool,
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
    let (mut stream, catchup) = match synced {
        Synced::Full { reply, rdb } => {
            let now = crate::now_ms();
            let gen = crate::store::layout::generation_id(now);
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
            let (mut file, partial) = log.base_file(&gen)?;
            let (stream, received) = tokio::select! {
                r = rdb.save(&mut file) => r?,
                _ = shutdown.as_mut() => {
                    let _ = std::fs::remove_file(&partial);
                    return Ok(());
                }
            };
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
                crate::now_ms(),
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
            (stream, false)
        }
        Synced::Continue {
            reply: PsyncReply::Continue { replid },
            stream,
        } => {
            let saved = resume
                .as_ref()
                .expect("CONTINUE answers a PSYNC that named a replid");
            let now = crate::now_ms();
            match continuity(Some(saved), &PsyncReply::Continue { replid }) {
                Continuity::Continue {
                    new_replid: Some(id),
                } => {
                    info!("partial resync: the primary's replid changed from {} to {id} at offset {} (failover or restart); same history", saved.state.replid, saved.state.offset);
                    log.seal()?;
                    if let Some(s) = log.state.as_mut() {
                        s.replid = id;
                    }
                    log.open_tail(Origin::ReplidChange, now)?;
                }
                _ => {
                    info!(
                        "partial resync from offset {}: no gap",
                        saved.state.offset + 1
                    );
                    if !log.has_tail() {
                        log.open_tail(Origin::Resume, now)?;
                    }
                }
            }
            (stream, true)
        }
        Synced::Continue { .. } => unreachable!("psync pairs Continue with Continue"),
    };
    *synced_once = true;
    stream_loop(log, opts, &mut stream, catchup, shutdown, progress).await
}

async fn stream_loop(
    log: &mut Log,
    opts: &CaptureOptions,
    stream: &mut ReplicationStream,
    mut catchup: bool,
    mut shutdown: Shutdown<'_>,
    progress: &Option<watch::Sender<Progress>>,
) -> Result<(), CaptureError> {
    // Diskless syncs send no command until the first ACK after the snapshot (notes §1.3).
    stream.acker.ack(log.durable_offset).await?;
    let mut tick = tokio::time::interval(opts.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    let mut last_ack = Instant::now();
    let mut acked = log.durable_offset;
    let report = |log: &Log| {
        if let Some(p) = progress {
            p.send_replace(Progress {
                online: true,
                generation: log.generation.clone(),
                durable_offset: log.durable_offset,
            });
        }
    };
    report(log);
    // Bytes that came in the same read as +CONTINUE (or right after a sized snapshot) are
    // already buffered: drain them before waiting for more.
    let mut arrived = stream.reader.buffered();
    loop {
        if arrived > 0 {
            let now = crate::now_ms();
            let flags = if catchup { block_flags::CATCHUP } else { 0 };
            while let Some(item) = stream.reader.try_next()? {
                let state = log
                    .state
                    .as_mut()
                    .expect("a synced session has a stream state");
                let reply = match item {
                    StreamItem::Command(cmd) => {
                        let (rec, reply) = state.on_command(&cmd.raw, &cmd.argv, now)?;
                        log.append(&rec, flags, now)?;
                        reply
                    }
                    // A big command goes to disk part by part as it arrives (bounded memory);
                    // it becomes a record, and can be acknowledged, only with its last part.
                    StreamItem::Part { bytes, end } => {
                        let done = match end {
                            Some(e) => Some(state.on_streamed_command(&e.head, e.len, now)?),
                            None => None,
                        };
                        log.append_fragment(&bytes, done.as_ref().map(|d| &d.0), flags, now)?;
                        done.map_or(Reply::None, |d| d.1)
                    }
                };
                if let Reply::AckNow(offset) = reply {
                    log.make_durable(now, None)?;
                    stream.acker.ack(offset).await?;
                }
            }
            // The backlog burst after a resume arrives in full reads; the first short read
            // means the agent has caught up with the primary. Erring long only makes the
            // "arrived late" warning of a restore by time more cautious.
            if catchup && arrived < 16 * 1024 {
                catchup = false;
                log.make_durable(now, None)?;
            }
            arrived = 0;
        }
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => {
                log.make_durable(crate::now_ms(), None)?;
                let _ = stream.acker.ack(log.durable_offset).await;
                return Ok(());
            }
            n = stream.reader.fill() => {
                arrived = n?;
                last_rx = Instant::now();
            }
            _ = tick.tick() => {
                let now = crate::now_ms();
                if last_rx.elapsed() > opts.handshake.timeout {
                    return Err(ReplicaError::Timeout { addr: format!("{}:{}", opts.source.host, opts.source.port), secs: opts.handshake.timeout.as_secs() }.into());
                }
                log.make_durable(now, Some(opts.heartbeat))?;
                log.roll_if_due(now)?;
                if log.durable_offset != acked || last_ack.elapsed() >= Duration::from_secs(1) {
                    stream.acker.ack(log.durable_offset).await?;
                    acked = log.durable_offset;
                    last_ack = Instant::now();
                    report(log);
                }
            }
        }
    }
}
