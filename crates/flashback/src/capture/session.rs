//! One session with the source: connect, handshake, PSYNC; a full resync stores the snapshot as
//! a new generation, a partial one continues the current one; then the stream loop feeds the
//! capture core (`core`) what the socket, the timers and the poller bring, and carries out its
//! actions on the log and the link.

use super::log::Log;
use super::options::CaptureOptions;
use super::state::{continuity, Continuity, GapReason, Reply};
use super::{core, poll, CaptureError, Progress, Shutdown};
use crate::client::RedisUrl;
use crate::replica::{
    PsyncReply, ReplicaConn, ReplicaError, ReplicationStream, StreamItem, Synced,
};
use flashback_format::segment::{block_flags, Origin};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// What survives from one link to the next.
pub(super) struct Links {
    pub(super) polls: mpsc::Receiver<poll::Poll>,
    /// Tells the poller to poll faster while the core is inside an uncertain interval.
    pub(super) uncertain: watch::Sender<bool>,
    /// The source refused INFO once: evidence comes from link bytes only.
    pub(super) link_only: bool,
    /// False once the poller ended (it sends `Refused` last): a closed channel is always
    /// ready, and polling it would starve the socket.
    pub(super) polls_open: bool,
    pub(super) synced_once: bool,
    /// Set while this session streams (past the sync): only then may a Sentinel failover end
    /// it from outside (`run.rs`); a snapshot being stored or a generation being committed
    /// must not be cut off halfway.
    pub(super) streaming: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// One connection: handshake, sync, stream until shutdown (Ok) or a link failure (Err).
pub(super) async fn session(
    log: &mut Log,
    opts: &CaptureOptions,
    mut shutdown: Shutdown<'_>,
    progress: &Option<watch::Sender<Progress>>,
    links: &mut Links,
) -> Result<(), CaptureError> {
    links
        .streaming
        .store(false, std::sync::atomic::Ordering::SeqCst);
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
            if let Some(reply) = super::generation::command_reply(&opts.source).await {
                log.record_commands(&gen, &reply);
            }
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
                    info!(
                        "continued generation {} by partial resync at offset {}: the primary's replid changed from {} to {id} \
                         (failover or restart); same history, no gap",
                        saved.generation, saved.state.offset + 1, saved.state.replid
                    );
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
    links
        .streaming
        .store(true, std::sync::atomic::Ordering::SeqCst);
    log.link.up = true;
    log.link.node = format!("{}:{}", opts.source.host, opts.source.port);
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
                let argv: Vec<&[u8]> = cmd.argv.iter().map(|a| a.as_ref()).collect();
                log.append_parsed(&rec, &argv, flags)?;
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
