//! The apply engine: Flashback plays **master** to a private redis-server.
//!
//! The server is told `REPLICAOF 127.0.0.1 <our port>`; we answer its handshake, claim a full
//! resync at offset 0, send the base RDB as the sync payload (streamed from the store, never
//! held in memory), then the records' exact RESP bytes, then `REPLCONF GETACK *`, and wait
//! until its `REPLCONF ACK` covers every byte we sent. Then `REPLICAOF NO ONE` promotes it.
//!
//! Why not replay as an ordinary client: commands on the master link run without ACL, OOM or
//! READONLY checks and without expiring keys mid-replay, exactly as on the source's replicas
//! (`notes/redis-replication.md` §6). Why not write an RDB ourselves: the server is the only
//! faithful implementation of its own commands.
//!
//! A command the replica rejects is not replied to (masters get no replies); the replica logs
//! "This replica is sending an error to its master" instead. We count those lines in its log and
//! report them: a restore never hides a command that did not apply.
//!
//! This file drives the server (start, REPLICAOF, wait for the ACKs, promote); `master` is our
//! side of the replication link (handshake, the base as sync payload, records, ACK reading).

mod master;
mod warm;

pub use warm::{Fed, Warm};

use super::plan::RestorePlan;
use super::reader;
use super::RestoreError;
use crate::client::{info_field, Client};
use crate::progress::{Phase, Progress, Unit};
use crate::redis_server::{servers_for_rdb, RedisServer, ServerBinary};
use crate::runtime::AbortOnDrop;
use crate::store::{Store, StoreError};
use flashback_format::rdb;
use flashback_format::resp;
use master::{read_acks, send_base, send_local_base, Acked, MasterLink};
use object_store::{GetOptions, GetRange};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// How long the replica may stay silent (no ACK, no loading keepalive) before we give up.
/// It ACKs every second once loaded and sends a newline every second while loading.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Log line of a replica that rejected a command from its master (Redis 7.x and Valkey).
const REPLICA_ERROR_MARK: &str = "sending an error to its master";

/// Commands in the stream that carry no data: keepalives, GETACKs and pub/sub.
const SKIPPED: [&[u8]; 4] = [b"PING", b"REPLCONF", b"PUBLISH", b"SPUBLISH"];

#[derive(Debug, Clone, Default)]
pub struct EngineReport {
    pub server: String,
    pub base_bytes: u64,
    pub base_rdb_version: u32,
    pub segments: usize,
    pub records_applied: u64,
    /// PING, REPLCONF, PUBLISH, SPUBLISH: in the log, not replayed.
    pub records_skipped: u64,
    /// Command bytes sent after the base.
    pub stream_bytes: u64,
    pub elapsed: Duration,
    pub replica_errors: u64,
    /// The first few rejected commands, as the replica logged them.
    pub first_errors: Vec<String>,
}

impl std::fmt::Display for EngineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.server == super::NO_SERVER {
            return writeln!(
                f,
                "applied: nothing ({}: {} bytes)",
                self.server, self.base_bytes
            );
        }
        writeln!(
            f,
            "applied: base {} bytes (RDB v{}) + {} records ({} bytes) from {} segments in {:.2} s on {}",
            self.base_bytes,
            self.base_rdb_version,
            self.records_applied,
            self.stream_bytes,
            self.segments,
            self.elapsed.as_secs_f64(),
            self.server
        )?;
        if self.records_skipped > 0 {
            writeln!(
                f,
                "skipped:  {} records without data (PING, REPLCONF, PUBLISH)",
                self.records_skipped
            )?;
        }
        if self.replica_errors > 0 {
            writeln!(f, "WARNING:  {} commands failed on the restore server; the result may differ from the source:", self.replica_errors)?;
            for e in &self.first_errors {
                writeln!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

/// Checks that `binary` can load the plan's base, from the base's own header (falling back to
/// the manifest if the header cannot be read). Returns the base's RDB version.
pub async fn check_base_version(
    store: &Store,
    plan: &RestorePlan,
    binary: &ServerBinary,
) -> Result<u32, RestoreError> {
    let len = plan.base_size.min(4096);
    let opts = GetOptions {
        range: Some(GetRange::Bounded(0..len)),
        ..Default::default()
    };
    let head = store
        .os
        .get_opts(&plan.base_key, opts)
        .await
        .map_err(StoreError::from)?
        .bytes()
        .await
        .map_err(StoreError::from)?;
    let (version, made_by) = match rdb::peek(plan.base_key.as_ref(), &head) {
        Ok(info) => {
            let ver = info
                .aux_str("valkey-ver")
                .map(|v| format!("valkey {v}"))
                .or_else(|| info.aux_str("redis-ver").map(|v| format!("redis {v}")));
            (
                info.version,
                ver.unwrap_or_else(|| plan.manifest.server.clone()),
            )
        }
        Err(e) => {
            tracing::warn!(
                "cannot read the base's header ({e}); trusting the manifest's RDB version"
            );
            (plan.manifest.rdb_version, plan.manifest.server.clone())
        }
    };
    if !binary.can_load(version) {
        return Err(RestoreError::RdbVersion {
            base_version: version,
            made_by,
            server: binary.to_string(),
            max: binary.max_rdb_version(),
            need: servers_for_rdb(version),
        });
    }
    Ok(version)
}

/// Replays `plan` into `server` (fresh, empty) and promotes it. On return the server holds the
/// dataset at `plan.stop_offset`.
/// `base_rdb_version` is what [`check_base_version`] found, for the report.
pub async fn replay(
    store: &Store,
    plan: &RestorePlan,
    server: &RedisServer,
    base_rdb_version: u32,
) -> Result<EngineReport, RestoreError> {
    replay_with(store, plan, server, base_rdb_version, None).await
}

/// Rewrites every TTL as of the restore point `at_ms`: keys already expired then are deleted;
/// the others get the time they had left (`relative`: now + (expiry − at)) or none at all
/// (`persist`). It runs on the replica as a script sent by its master: a replica's master sees
/// keys whose time has passed (a replica never expires keys on its own), which no client could
/// after promotion, when such keys are already gone. ARGV: at_ms, number of databases, mode.
const SHIFT_TTLS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = tonumber(ARGV[1])
local n = 0
for db = 0, tonumber(ARGV[2]) - 1 do
  redis.call('SELECT', db)
  local cursor = '0'
  repeat
    local r = redis.call('SCAN', cursor, 'COUNT', 1000)
    cursor = r[1]
    for _, k in ipairs(r[2]) do
      local e = redis.call('PEXPIRETIME', k)
      if e > 0 then
        if e <= at then redis.call('DEL', k)
        elseif ARGV[3] == 'persist' then redis.call('PERSIST', k)
        else redis.call('PEXPIREAT', k, now + (e - at)) end
        n = n + 1
      end
    end
  until cursor == '0'
end
return n
"#;

/// How [`replay_with`] rewrites TTLs before promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlRewrite {
    /// Each key keeps the time it had left at this instant (ms).
    Relative { at_ms: u64 },
    /// Every key alive at this instant loses its TTL.
    Persist { at_ms: u64 },
}

/// [`replay`], then the TTL rewrite above, applied before the replica is promoted.
pub async fn replay_with(
    store: &Store,
    plan: &RestorePlan,
    server: &RedisServer,
    base_rdb_version: u32,
    ttl: Option<TtlRewrite>,
) -> Result<EngineReport, RestoreError> {
    replay_observed(store, plan, server, base_rdb_version, ttl, &Progress::new()).await
}

/// [`replay_with`], reporting its phases (fetch, load, replay) to `progress`.
pub async fn replay_observed(
    store: &Store,
    plan: &RestorePlan,
    server: &RedisServer,
    base_rdb_version: u32,
    ttl: Option<TtlRewrite>,
    progress: &Progress,
) -> Result<EngineReport, RestoreError> {
    let (report, _) =
        replay_keyed(store, plan, server, base_rdb_version, ttl, progress, None).await?;
    Ok(report)
}

/// A key-level restore's part of the replay: the filtered base (a file beside the server) and
/// the filter deciding which records go out.
pub struct KeyLevel {
    pub base: std::path::PathBuf,
    pub filter: Box<super::keys::Filter>,
}

/// [`replay_observed`], key-level when `keys` is given: the filtered base instead of the
/// plan's, and only the records the filter keeps. Returns the filter (its counts) back.
pub async fn replay_keyed(
    store: &Store,
    plan: &RestorePlan,
    server: &RedisServer,
    base_rdb_version: u32,
    ttl: Option<TtlRewrite>,
    progress: &Progress,
    keys: Option<KeyLevel>,
) -> Result<(EngineReport, Option<Box<super::keys::Filter>>), RestoreError> {
    let started = Instant::now();
    let io = |what: &str, e: std::io::Error| RestoreError::engine(server, format!("{what}: {e}"));
    let (rd, mut wr, mut admin) = master::attach(server).await?;
    let (base_bytes, filter) = match keys {
        None => (
            send_base(store, plan, &mut wr, server, progress).await?,
            None,
        ),
        Some(k) => {
            let n = send_local_base(&k.base, &mut wr, server, progress).await?;
            // The server holds what it was sent; the file is not needed past the send.
            std::fs::remove_file(&k.base).ok();
            (n, Some(k.filter))
        }
    };

    let (tx, mut acked) = watch::channel(Acked::default());
    let acks = tokio::spawn(read_acks(rd, tx));
    // The records below are written while the server still loads the base (TCP holds them
    // back): the load and the replay are told apart by the server's own INFO, on a second
    // connection, so the record loop stays free of polling.
    let watcher = tokio::spawn(watch_load_and_replay(
        server.client().await?,
        base_bytes,
        plan.stop_offset.saturating_sub(plan.base_offset),
        acked.clone(),
        progress.clone(),
    ));
    let watcher_guard = AbortOnDrop(watcher);
    let mut link = MasterLink {
        w: wr,
        current_db: None,
        sent: 0,
        applied: 0,
        skipped: 0,
        big: None,
        big_filtered: false,
        server,
        filter,
        held: None,
    };
    // Always at least one command after the base: with none (a later base restored at its own
    // offset), the GETACK wait below would be met by the initial ack of 0 and promote the
    // replica before it has loaded the base, leaving it empty.
    link.select(plan.base_db.unwrap_or(0)).await?;
    let stats = reader::read_records(store, plan, &mut link).await?;
    if let Some(rewrite) = ttl {
        let dbs = match admin.ok(&["CONFIG", "GET", "databases"]).await? {
            flashback_format::resp::Frame::Array(v) if v.len() == 2 => v[1].text(),
            _ => "16".to_string(),
        };
        let (at, mode) = match rewrite {
            TtlRewrite::Relative { at_ms } => (at_ms, "relative"),
            TtlRewrite::Persist { at_ms } => (at_ms, "persist"),
        };
        link.write(&resp::encode_command(&[
            "EVAL",
            SHIFT_TTLS,
            "0",
            &at.to_string(),
            &dbs,
            mode,
        ]))
        .await?;
        link.current_db = None;
    }
    let target = link.sent;
    link.write(&resp::encode_command(&["REPLCONF", "GETACK", "*"]))
        .await?;
    link.w
        .flush()
        .await
        .map_err(|e| io("sending to the replica", e))?;

    // The GETACK reply carries the offset before the GETACK itself: `target`. Every record
    // is sent: the replay's exact size is known now (the estimate was the log's length).
    if progress.current().is_some_and(|c| c.phase == Phase::Replay) {
        progress.set_total(target);
    }
    wait_acked(server, &mut acked, target).await?;
    admin.ok(&["REPLICAOF", "NO", "ONE"]).await?;
    acks.abort();
    drop(watcher_guard);
    // The phase that is still open (replay, or load when the log after the base was empty).
    progress.end();
    let (replica_errors, first_errors) = replica_errors(server);
    let report = EngineReport {
        server: server.binary.to_string(),
        base_bytes,
        base_rdb_version,
        segments: stats.segments,
        records_applied: link.applied,
        records_skipped: link.skipped,
        stream_bytes: link.sent,
        elapsed: started.elapsed(),
        replica_errors,
        first_errors,
    };
    Ok((report, link.filter.take()))
}

/// Loads the RDB file `path` into `server` (fresh, empty) over the replication link, with no
/// records after it, and promotes it: how a partitioned rebuild's merged RDB becomes the one
/// served or copied instance. Rejected: starting the server on the file (`--dbfilename`),
/// which a master loads dropping keys whose time has passed, where this path keeps them as
/// the serial restore's replica does. Returns the bytes sent.
pub async fn load_local(
    server: &RedisServer,
    path: &std::path::Path,
    progress: &Progress,
) -> Result<u64, RestoreError> {
    let io = |what: &str, e: std::io::Error| RestoreError::engine(server, format!("{what}: {e}"));
    let (rd, mut wr, mut admin) = master::attach(server).await?;
    let n = send_local_base(path, &mut wr, server, progress).await?;
    let (tx, mut acked) = watch::channel(Acked::default());
    let acks = tokio::spawn(read_acks(rd, tx));
    // One command after the payload, so the GETACK below cannot be met by the initial ack of
    // 0 (as in `replay_keyed`).
    let select = resp::encode_command(&["SELECT", "0"]);
    wr.write_all(&select)
        .await
        .map_err(|e| io("sending to the replica", e))?;
    wr.write_all(&resp::encode_command(&["REPLCONF", "GETACK", "*"]))
        .await
        .map_err(|e| io("sending to the replica", e))?;
    wr.flush()
        .await
        .map_err(|e| io("sending to the replica", e))?;
    let waited = wait_acked(server, &mut acked, select.len() as u64).await;
    acks.abort();
    waited?;
    admin.ok(&["REPLICAOF", "NO", "ONE"]).await?;
    progress.end();
    Ok(n)
}

/// Waits until the replica's acknowledged offset reaches `target`: every byte sent before it
/// is applied. Its silence for [`STALL_TIMEOUT`] (no ACK, no loading keepalive) is an error.
async fn wait_acked(
    server: &RedisServer,
    acked: &mut watch::Receiver<Acked>,
    target: u64,
) -> Result<(), RestoreError> {
    loop {
        let p = *acked.borrow_and_update();
        if p.ack >= target {
            return Ok(());
        }
        match tokio::time::timeout(STALL_TIMEOUT, acked.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(RestoreError::engine(
                    server,
                    format!(
                        "it closed the replication link after applying {} of {target} bytes",
                        p.ack
                    ),
                ))
            }
            Err(_) => {
                return Err(RestoreError::engine(
                    server,
                    format!(
                        "no word from it for {} s after applying {} of {target} bytes",
                        STALL_TIMEOUT.as_secs(),
                        p.ack
                    ),
                ))
            }
        }
    }
}

/// How often the load is polled: a base of a few MB loads in well under a second.
const LOAD_POLL: Duration = Duration::from_millis(100);

/// Reports the server's load of the base (bytes loaded, from `INFO persistence`) until its
/// master link is up, which the server sets only once the base is loaded; then the replay, in
/// bytes the server has acknowledged. `replay_estimate` is the log's length (the last offset
/// minus the base's), which the engine corrects to the exact byte count once every record is
/// sent. A failed poll only ends the reporting: progress must never fail a restore.
async fn watch_load_and_replay(
    mut admin: Client,
    base_bytes: u64,
    replay_estimate: u64,
    mut acked: watch::Receiver<Acked>,
    progress: Progress,
) {
    if !progress.advance(Phase::Fetch, Phase::Load, Unit::Bytes, Some(base_bytes)) {
        return;
    }
    loop {
        let Ok(repl) = admin.info("replication").await else {
            return;
        };
        if info_field(&repl, "master_link_status") == Some("up") {
            break;
        }
        if let Ok(pers) = admin.info("persistence").await {
            if let Some(n) = info_field(&pers, "loading_loaded_bytes").and_then(|v| v.parse().ok())
            {
                progress.set_in(Phase::Load, n);
            }
        }
        tokio::time::sleep(LOAD_POLL).await;
    }
    if !progress.advance(
        Phase::Load,
        Phase::Replay,
        Unit::Bytes,
        Some(replay_estimate),
    ) {
        return;
    }
    loop {
        let ack = acked.borrow_and_update().ack;
        progress.set_in(Phase::Replay, ack);
        if acked.changed().await.is_err() {
            return;
        }
    }
}

/// Counts the commands the replica rejected, from its log, with the first few messages.
pub(crate) fn replica_errors(server: &RedisServer) -> (u64, Vec<String>) {
    let Ok(bytes) = std::fs::read(&server.log_path) else {
        return (0, vec![]);
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut count = 0;
    let mut first = Vec::new();
    for line in text.lines().filter(|l| l.contains(REPLICA_ERROR_MARK)) {
        count += 1;
        if first.len() < 3 {
            let msg = line
                .split_once(REPLICA_ERROR_MARK)
                .map(|(_, m)| m.trim_start_matches(':').trim())
                .unwrap_or(line);
            first.push(msg.to_string());
        }
    }
    (count, first)
}
