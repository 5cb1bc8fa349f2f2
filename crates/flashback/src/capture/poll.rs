//! The evidence poller: `INFO replication` on a second, ordinary connection to the source every
//! ~100 ms, reporting the source's own `master_repl_offset` and when it was asked
//! (`capture::core` turns that into evidence once the stream has reached the offset).
//!
//! A second connection rather than the replication link itself: the link can only carry
//! `REPLCONF ACK`, and a stalled link is exactly what the poll must be independent of. The cost
//! to the source is ten INFO calls a second. Failures only mean "no evidence": the poller
//! reconnects quietly, and the capture loop decides what a silence means.

use crate::client::{info_field, Client, ClientError, RedisUrl};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// At `sent_ms` (asked then, so its answer describes a moment no earlier), the source's
    /// replication history `replid` stood at `offset`.
    Offset {
        sent_ms: u64,
        replid: String,
        offset: u64,
    },
    /// The source will not answer INFO (ACL without `+info`, a renamed command): evidence falls
    /// back to the link's own bytes. Sent once; the poller then ends.
    Refused(String),
}

pub const EVERY: Duration = Duration::from_millis(100);

/// While the agent is inside an uncertain interval (catching up after a reconnect, a restart, a
/// snapshot) it polls this often: the interval ends at the first poll the stream reaches, and
/// a tenth of a second less uncertainty after every reconnect is worth 40 more INFO calls.
pub const EVERY_WHILE_UNCERTAIN: Duration = Duration::from_millis(20);

/// Polls until `tx` is dropped; `uncertain` (set by the capture loop) makes it poll faster.
/// `source` is the node being captured now: behind Sentinel it changes at a failover, and
/// the poller follows it (evidence from a demoted primary would vouch for nothing).
pub async fn run(
    mut source: watch::Receiver<RedisUrl>,
    tx: mpsc::Sender<Poll>,
    uncertain: watch::Receiver<bool>,
) {
    let mut client: Option<Client> = None;
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let every = if *uncertain.borrow() {
            EVERY_WHILE_UNCERTAIN
        } else {
            EVERY
        };
        tokio::time::sleep(every).await;
        if tx.is_closed() {
            return;
        }
        if source.has_changed().unwrap_or(false) {
            client = None;
        }
        let c = match client.as_mut() {
            Some(c) => c,
            None => match connect(&mut source).await {
                Ok(c) => {
                    backoff.reset();
                    client.insert(c)
                }
                Err(e) => {
                    tracing::debug!("evidence poll: {e}");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
        };
        let sent_ms = crate::now_ms();
        let answer = tokio::time::timeout(Duration::from_secs(2), c.info("replication")).await;
        match answer {
            Ok(Ok(info)) => {
                let replid = info_field(&info, "master_replid").map(str::to_string);
                let offset = info_field(&info, "master_repl_offset").and_then(|o| o.parse().ok());
                let (Some(replid), Some(offset)) = (replid, offset) else {
                    let _ = tx
                        .send(Poll::Refused(
                            "its INFO replication has no master_replid/master_repl_offset".into(),
                        ))
                        .await;
                    return;
                };
                // Never wait on a full channel: a stale answer is worth nothing.
                let _ = tx.try_send(Poll::Offset {
                    sent_ms,
                    replid,
                    offset,
                });
            }
            Ok(Err(ClientError::Server { msg, .. })) if refused(&msg) => {
                let _ = tx.send(Poll::Refused(msg)).await;
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!("evidence poll: {e}");
                client = None;
            }
            Err(_) => {
                tracing::debug!("evidence poll: INFO took over 2 s");
                client = None;
            }
        }
    }
}

/// A connection to the node `source` names now (the borrow ends before the await: a watch
/// guard must not be held across one).
async fn connect(source: &mut watch::Receiver<RedisUrl>) -> Result<Client, ClientError> {
    let url = source.borrow_and_update().clone();
    Client::connect(&url, Duration::from_secs(2)).await
}

/// One poll on a fresh connection (for the last evidence at a clean stop): when asked, and the
/// offset of history `replid`; None without an answer within a second.
pub async fn once(url: &RedisUrl, replid: &str) -> Option<(u64, u64)> {
    let ask = async {
        let mut c = Client::connect(url, Duration::from_secs(1)).await.ok()?;
        let sent_ms = crate::now_ms();
        let info = c.info("replication").await.ok()?;
        let offset = info_field(&info, "master_repl_offset")?.parse().ok()?;
        (info_field(&info, "master_replid")? == replid).then_some((sent_ms, offset))
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
}

/// An answer that will not change by asking again.
fn refused(msg: &str) -> bool {
    msg.starts_with("NOPERM") || msg.contains("unknown command") || msg.starts_with("NOAUTH")
}
