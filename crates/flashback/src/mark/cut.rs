//! Taking a consistent cut: every primary's writes held back at once, each one's offset read
//! inside its pause, then released.
//!
//! `CLIENT PAUSE <ms> WRITE` (Redis 6.2+, Valkey) blocks clients' writes, and from Redis 7.0 on
//! also expiry, eviction and the PINGs a primary sends its replicas, so `master_repl_offset`
//! stands still for the pause: the offset read inside it is a clean cut. (Should a PING still
//! slip in on some server, it changes no data, and a restore rounds an offset down to the last
//! transaction boundary, so the restored state is the same.) The cut is consistent across
//! primaries when every pause was still in force when the last offset was read: all pauses
//! start after the first PAUSE is sent and last `pause_ms` from then at least, so
//! "first PAUSE sent → last offset received < pause_ms" proves it, on the marking host's own
//! clock, whatever the servers' clocks say. A cut that took longer is released and retried.
//! Rejected: MULTI + pause per primary in turn (no common instant), and `WAIT` (says nothing
//! about writes still arriving).

use super::ShardCut;
use crate::client::{info_field, Client, ClientError, RedisUrl};
use flashback_format::resp::Frame;
use std::time::{Duration, Instant};

/// A primary to pause: its shard name (empty for a standalone source) and URL.
#[derive(Debug, Clone)]
pub struct Primary {
    pub shard: String,
    pub url: RedisUrl,
}

#[derive(Debug, thiserror::Error)]
pub enum CutError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{addr}: the user may not pause clients ({msg}); grant it: ACL SETUSER <user> +client|pause +client|unpause +info")]
    NoPerm { addr: String, msg: String },
    #[error("{addr}: the user may not read INFO ({msg}); grant it: ACL SETUSER <user> +info +client|pause +client|unpause")]
    NoInfo { addr: String, msg: String },
    #[error("{addr}: CLIENT PAUSE … WRITE refused ({msg}); marks need Redis 6.2+ or Valkey (write-only pauses)")]
    NoWriteMode { addr: String, msg: String },
    #[error("{addr}: INFO replication has no {field}; is this a Redis or Valkey server?")]
    NoOffset { addr: String, field: &'static str },
    #[error("{attempts} tries took {took_ms} ms or more, longer than --pause {pause_ms} ms, so no common instant was proven; raise --pause (e.g. --pause {suggest})")]
    TooSlow {
        attempts: u32,
        took_ms: u64,
        pause_ms: u64,
        suggest: u64,
    },
    #[error("{addr} is not a primary any more (a failover under way?); no mark was taken: try again once the failover is over")]
    NotPrimary { addr: String },
    #[error("{addr} is a replica whose primary is unknown (master_host missing); give the primary's URL")]
    NoPrimary { addr: String },
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const ATTEMPTS: u32 = 3;

/// A source URL that may name a replica: the primary it replicates from, with the same user,
/// password and TLS (a replica's `master_host` is what the agent would PSYNC from too).
pub async fn primary_of(url: &RedisUrl) -> Result<RedisUrl, CutError> {
    let mut c = Client::connect(url, CONNECT_TIMEOUT).await?;
    let info = c.info("replication").await?;
    if info_field(&info, "role") != Some("slave") {
        return Ok(url.clone());
    }
    let host = info_field(&info, "master_host");
    let port = info_field(&info, "master_port").and_then(|p| p.parse().ok());
    match (host, port) {
        (Some(h), Some(p)) => {
            let mut up = url.clone();
            up.host = h.to_string();
            up.port = p;
            Ok(up)
        }
        _ => Err(CutError::NoPrimary { addr: c.addr }),
    }
}

/// Pauses every primary's writes for at most `pause_ms`, reads each offset, releases them.
/// Retries up to [`ATTEMPTS`] times a cut that did not fit in the pause.
pub async fn take(primaries: &[Primary], pause_ms: u64) -> Result<(Vec<ShardCut>, u64), CutError> {
    let mut conns = Vec::with_capacity(primaries.len());
    // Connected (and authenticated) before the clock starts: a TLS handshake must not eat
    // the pause.
    for p in primaries {
        conns.push(Client::connect(&p.url, CONNECT_TIMEOUT).await?);
    }
    let mut slowest = 0;
    for _ in 0..ATTEMPTS {
        let start = Instant::now();
        let got =
            futures::future::join_all(conns.iter_mut().map(|c| pause_and_read(c, pause_ms))).await;
        let took = start.elapsed();
        // Released at once whatever happened, where a pause was taken: clients wait no longer
        // than they must.
        let refused: Vec<bool> = got
            .iter()
            .map(|r| {
                matches!(
                    r,
                    Err(CutError::NoPerm { .. } | CutError::NoWriteMode { .. })
                )
            })
            .collect();
        let paused = conns.iter_mut().zip(refused).filter(|(_, r)| !r);
        let _ = futures::future::join_all(paused.map(|(c, _)| async move {
            if let Err(e) = c.ok(&["CLIENT", "UNPAUSE"]).await {
                tracing::warn!("{}: CLIENT UNPAUSE: {e} (the pause ends by itself)", c.addr);
            }
        }))
        .await;
        let offsets = got.into_iter().collect::<Result<Vec<_>, _>>()?;
        let took_ms = took.as_millis() as u64;
        if took < Duration::from_millis(pause_ms) {
            let cuts = primaries
                .iter()
                .zip(conns.iter())
                .zip(offsets)
                .map(|((p, c), (replid, offset))| ShardCut {
                    shard: p.shard.clone(),
                    primary: c.addr.clone(),
                    replid,
                    offset,
                })
                .collect();
            return Ok((cuts, took_ms));
        }
        slowest = slowest.max(took_ms);
        tracing::warn!("a cut took {took_ms} ms, not under --pause {pause_ms} ms; retrying");
    }
    Err(CutError::TooSlow {
        attempts: ATTEMPTS,
        took_ms: slowest,
        pause_ms,
        suggest: (slowest * 2).max(pause_ms * 2),
    })
}

async fn pause_and_read(c: &mut Client, pause_ms: u64) -> Result<(String, u64), CutError> {
    let ms = pause_ms.to_string();
    if let Frame::Error(e) = c.call(&["CLIENT", "PAUSE", ms.as_str(), "WRITE"]).await? {
        let msg = String::from_utf8_lossy(&e).into_owned();
        return Err(if msg.starts_with("NOPERM") {
            CutError::NoPerm {
                addr: c.addr.clone(),
                msg,
            }
        } else {
            CutError::NoWriteMode {
                addr: c.addr.clone(),
                msg,
            }
        });
    }
    let info = match c.info("replication").await {
        Err(ClientError::Server { msg, .. }) if msg.starts_with("NOPERM") => {
            return Err(CutError::NoInfo {
                addr: c.addr.clone(),
                msg,
            })
        }
        r => r?,
    };
    // A node that is a replica by now (a failover between discovery and the pause) would
    // give its own offset, not its shard's writes held back: no cut of it is a cut.
    if info_field(&info, "role").is_some_and(|r| r != "master") {
        return Err(CutError::NotPrimary {
            addr: c.addr.clone(),
        });
    }
    let replid = info_field(&info, "master_replid").ok_or(CutError::NoOffset {
        addr: c.addr.clone(),
        field: "master_replid",
    })?;
    let offset = info_field(&info, "master_repl_offset")
        .and_then(|o| o.parse().ok())
        .ok_or(CutError::NoOffset {
            addr: c.addr.clone(),
            field: "master_repl_offset",
        })?;
    Ok((replid.to_string(), offset))
}
