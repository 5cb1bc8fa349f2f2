//! The capture run: [`run`] starts maintenance, then captures into the local store directly or,
//! for a remote store, into a local spool that an uploader ships (taking the lease first); the
//! reconnect loop ([`run_log`]) keeps sessions going across link failures, a full spool disk
//! and restarts of the primary, with one backoff.

use super::log::Log;
use super::maintenance::Maintenance;
use super::options::CaptureOptions;
use super::sentinel::{Follower, SentinelError};
use super::session::{session, Links};
use super::{poll, CaptureError, Progress};
use crate::backoff::Backoff;
use crate::replica::ReplicaError;
use crate::runtime::AbortOnDrop;
use crate::ship::{lease, upload};
use crate::store::Store;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Runs until `shutdown` resolves, then seals what was received and returns Ok. Errors at the
/// first connection that will not fix themselves (wrong password, missing ACL permission, a
/// refused PSYNC) are returned at once; later link failures are retried with backoff.
pub async fn run(
    store: Store,
    opts: CaptureOptions,
    shutdown: impl Future<Output = ()> + Send,
    progress: Option<watch::Sender<Progress>>,
) -> Result<(), CaptureError> {
    let maintenance = Maintenance::start(&store, &opts);
    let result = capture_only(store, opts, shutdown, progress).await;
    maintenance.stop().await;
    result
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
        .unwrap_or_else(|| super::options::default_spool(&store.url));
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
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            let delay = backoff.next_delay();
            tracing::error!(
                "{e}; this spool holds data of an earlier run, so capture waits for the store (retrying in {} s) \
                 and then resumes by partial resync",
                delay.as_secs()
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.as_mut() => return Ok(()),
            }
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
        in_flight_bytes: upload::IN_FLIGHT_BYTES,
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
    log.watch_spool(super::spool::SpoolWatch {
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
            return uploader_ended(u, false);
        }
    };
    let _ = stop_tx.send(true);
    uploader_ended(upload_task.await, true)?;
    captured
}

/// What the uploader's end means for the run: only a clean end after a stop is Ok. `stopping`: capture asked it to stop (it drains,
/// then returns Ok); otherwise it only ends early on a fatal error (a second writer).
fn uploader_ended(
    joined: Result<Result<(), upload::UploadError>, tokio::task::JoinError>,
    stopping: bool,
) -> Result<(), CaptureError> {
    match (joined, stopping) {
        (Ok(Err(e)), _) => Err(CaptureError::SecondWriter(e.to_string())),
        (Ok(Ok(())), true) => Ok(()),
        (Ok(Ok(())), false) => Err(CaptureError::Unsupported(
            "the uploader stopped unexpectedly".into(),
        )),
        // A panic (a bug) may have left sealed segments unshipped: the run fails, logged as an
        // ERROR here, so that a supervisor restarts the agent and the next uploader ships them.
        (Err(e), _) => {
            tracing::error!("the uploader failed: {e}");
            Err(CaptureError::Unsupported(format!(
                "the uploader failed: {e}"
            )))
        }
    }
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
    // Behind Sentinel each session's source is asked for first; the poller follows it.
    let mut current = opts.clone();
    let mut follower = opts
        .sentinel
        .clone()
        .map(|cfg| Follower::start(cfg, opts.source.clone()));
    let mut shard = opts
        .cluster
        .clone()
        .map(|link| super::cluster::ShardFollower::new(link, opts.source.clone()));
    let (source_tx, source_rx) = watch::channel(opts.source.clone());
    // Aborted on drop: the poller must not outlive capture (it holds a connection to the source).
    let _poller = AbortOnDrop(tokio::spawn(poll::run(source_rx, poll_tx, uncertain_rx)));
    let mut links = Links {
        polls,
        uncertain,
        link_only: false,
        polls_open: true,
        synced_once: false,
        streaming: Default::default(),
    };
    if let Some(l) = &opts.cluster {
        log.board = Some((l.board.clone(), l.source.clone(), l.shard.label.clone()));
    }
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let started = Instant::now();
        let result = match (follower.as_mut(), shard.as_mut()) {
            (None, Some(f)) => {
                let have = log.state.as_ref().map(|s| s.offset);
                let asked = tokio::select! {
                    a = f.source(have) => Some(a),
                    _ = shutdown.as_mut() => None,
                };
                match asked {
                    None => Ok(()),
                    Some(Err(e)) => Err(e.into()),
                    Some(Ok(url)) => {
                        source_tx.send_if_modified(|s| std::mem::replace(s, url.clone()) != url);
                        current.source = url;
                        log.link.role = Some(f.role());
                        // A link that had to go to the primary moves to a replica once one is
                        // online; as for a Sentinel switch, only while streaming, so a
                        // snapshot being stored is never cut off.
                        let streaming = links.streaming.clone();
                        tokio::select! {
                            r = session(log, &current, shutdown.as_mut(), &progress, &mut links) => r,
                            e = replica_while_streaming(f, &streaming) => Err(e.into()),
                        }
                    }
                }
            }
            (None, None) => session(log, opts, shutdown.as_mut(), &progress, &mut links).await,
            (Some(f), _) => {
                let asked = tokio::select! {
                    a = f.source() => Some(a),
                    _ = shutdown.as_mut() => None,
                };
                match asked {
                    None => Ok(()),
                    Some(Err(e)) => Err(e.into()),
                    Some(Ok(url)) => {
                        source_tx.send_if_modified(|s| std::mem::replace(s, url.clone()) != url);
                        current.source = url;
                        // A failover ends a streaming session at once: staying on a demoted
                        // primary would record bytes the promoted replica never had, and every
                        // await of the stream loop leaves the log whole (appends are
                        // synchronous; abandon_partial below drops a half-received command).
                        // A session still syncing finishes storing its snapshot first.
                        let streaming = links.streaming.clone();
                        tokio::select! {
                            r = session(log, &current, shutdown.as_mut(), &progress, &mut links) => r,
                            _ = switch_while_streaming(f, &streaming) => Err(f.switched().into()),
                        }
                    }
                }
            }
        };
        let switched = matches!(
            &result,
            Err(CaptureError::Sentinel(SentinelError::Switched { .. }))
                | Err(CaptureError::Cluster(
                    super::cluster::ClusterError::ToReplica { .. }
                ))
        );
        // The metrics file says so at once: the next write may be a long backoff away.
        log.link.up = false;
        log.write_metrics(false);
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
                    && !switched
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
                // The promoted replica is ready when Sentinel names it: no reason to wait.
                let delay = if switched {
                    Duration::ZERO
                } else {
                    backoff.next_delay()
                };
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
                    // A failover's news cuts the wait short: the new primary is up now.
                    _ = follower_changed(&mut follower) => {}
                    _ = shutdown.as_mut() => {
                        log.seal()?;
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn switch_while_streaming(f: &mut Follower, streaming: &std::sync::atomic::AtomicBool) {
    f.changed().await;
    while !streaming.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn replica_while_streaming(
    f: &mut super::cluster::ShardFollower,
    streaming: &std::sync::atomic::AtomicBool,
) -> super::cluster::ClusterError {
    loop {
        let e = f.replica_online().await;
        if streaming.load(std::sync::atomic::Ordering::SeqCst) {
            return e;
        }
    }
}

async fn follower_changed(f: &mut Option<Follower>) {
    match f {
        Some(f) => f.changed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panicked uploader may have left sealed segments unshipped: the run must fail (exit
    /// non-zero, one line naming the uploader), at shutdown as much as mid-run.
    #[tokio::test]
    async fn a_panicked_uploader_fails_the_run_even_at_shutdown() {
        for stopping in [false, true] {
            let joined = tokio::spawn(async { panic!("boom in the uploader") }).await;
            let err =
                uploader_ended(joined, stopping).expect_err("a panicked uploader is a failure");
            let msg = err.to_string();
            assert!(msg.contains("uploader") && msg.contains("boom"), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
        assert!(uploader_ended(Ok(Ok(())), true).is_ok());
    }
}
