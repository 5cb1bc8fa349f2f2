//! Capture behind Sentinel: which node is the primary of master NAME, asked before every
//! session, and the Sentinels' failover events, which end a session so the reconnect loop
//! follows the promoted replica.
//!
//! Continuity across a failover is PSYNC's own: the promoted replica keeps the old history as
//! `master_replid2` up to `second_repl_offset`, so the agent's `PSYNC <old replid> <offset+1>`
//! is answered +CONTINUE (`capture::state`), unless the agent holds bytes the promoted replica
//! never got. The old primary keeps producing such bytes after the promotion (Sentinels'
//! `PUBLISH __sentinel__:hello` every 2 s is replicated, and so is its PING), so the agent
//! leaves it as soon as a Sentinel announces the replica it selected (`+selected-slave`, sent
//! before `REPLICAOF NO ONE`), and holds off reconnecting until `+switch-master` (or the
//! failover's abort or end, or [`HOLD_MAX`]). Leaving early is always safe: being behind the
//! promoted replica only means it sends more. Every Sentinel is subscribed to, not one: only
//! the Sentinel leading a failover announces its steps, and we cannot know which one leads.
//!
//! Every reconnect asks the Sentinels again, so a missed message costs at most a dead link's
//! detection, never a wrong primary for long.

use crate::client::{Client, ClientError, RedisUrl};
use flashback_format::resp::Frame;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The Sentinels to ask and the master to follow; user and password are the Sentinels' own
/// (they often differ from the data nodes').
#[derive(Debug, Clone)]
pub struct SentinelConfig {
    pub sentinels: Vec<(String, u16)>,
    pub master_name: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// TLS to the Sentinels: the data nodes' (`--source rediss://…` and `--tls-*`). A
    /// deployment that encrypts replication encrypts its Sentinels too (`tls-port` in
    /// sentinel.conf); rejected for now: separate `--sentinel-tls-*` flags, until someone runs
    /// plain Sentinels beside TLS data nodes.
    pub tls: Option<crate::net::Tls>,
    /// `--source`'s host and port when given beside `--sentinel` (DESIGN: "its host is a
    /// fallback"): connected to only when no Sentinel answers at all, so a capture outlives
    /// its Sentinels being down (a restart of all three for an upgrade). Not used when a
    /// Sentinel answers "unknown master": that is a configuration error to fix, and guessing
    /// a node then could capture the wrong dataset.
    pub fallback: Option<(String, u16)>,
}

/// Longest the agent stays away from the old primary after a failover began without hearing
/// how it ended (a Sentinel crashed mid-failover): then it asks again and goes where told.
pub const HOLD_MAX: Duration = Duration::from_secs(30);

const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Channels subscribed to on every Sentinel (the ACL needs them: docs/compatibility.md).
pub const CHANNELS: [&str; 6] = [
    "+switch-master",
    "+selected-slave",
    "+failover-end",
    "+failover-end-for-timeout",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
];

#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    #[error(
        "--sentinel {0:?}: expected HOST:PORT[,HOST:PORT…], e.g. 10.0.0.1:26379,10.0.0.2:26379"
    )]
    Syntax(String),
    #[error("no Sentinel answered for master '{name}' ({tried}); check --sentinel, that the Sentinels run, and --sentinel-user/--sentinel-password")]
    NoneAnswered { name: String, tried: String },
    #[error("the Sentinels ({tried}) know no master named '{name}'; check --master-name against `sentinel monitor` in their configuration")]
    UnknownMaster { name: String, tried: String },
    #[error("Sentinel started a failover of '{name}': leaving the current primary to follow the promoted replica")]
    Switched { name: String },
}

/// `H:P,H:P,…` as given to `--sentinel` (an IPv6 host in brackets: `[::1]:26379`).
pub fn parse_list(s: &str) -> Result<Vec<(String, u16)>, SentinelError> {
    let bad = || SentinelError::Syntax(s.to_string());
    s.split(',')
        .map(|one| {
            let (host, port) = one.trim().rsplit_once(':').ok_or_else(bad)?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port.parse().map_err(|_| bad())?;
            if host.is_empty() || port == 0 {
                return Err(bad());
            }
            Ok((host.to_string(), port))
        })
        .collect()
}

/// What the subscribers have heard; `events` grows with every event about our master, which
/// is what ends a session.
#[derive(Debug, Clone, Default)]
struct Heard {
    events: u64,
    /// A failover of our master began (and has not ended) at this instant.
    holding_since: Option<Instant>,
    /// The last `+switch-master` payload, so three Sentinels announcing it log it once.
    last_switch: Option<String>,
}

/// The primary of one master, followed through the Sentinels. Dropping it stops the
/// subscribers.
pub struct Follower {
    cfg: SentinelConfig,
    /// `--source`: the data nodes' user, password and db.
    base: RedisUrl,
    heard: watch::Receiver<Heard>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    last_answer: Option<(String, u16)>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Follower {
    pub fn start(cfg: SentinelConfig, base: RedisUrl) -> Follower {
        let (tx, heard) = watch::channel(Heard::default());
        let tx = Arc::new(tx);
        let tasks = cfg
            .sentinels
            .iter()
            .map(|s| tokio::spawn(subscribe(cfg.clone(), s.clone(), tx.clone())))
            .collect();
        Follower {
            cfg,
            base,
            heard,
            tasks,
            last_answer: None,
        }
    }

    /// The primary to connect to now: after a failover that has begun is over (or
    /// [`HOLD_MAX`]), as the first Sentinel that answers names it, with `--source`'s
    /// credentials. Events heard before this call no longer end the session that follows.
    pub async fn source(&mut self) -> Result<RedisUrl, SentinelError> {
        loop {
            let since = self.heard.borrow_and_update().holding_since;
            let Some(left) = since.and_then(|t| HOLD_MAX.checked_sub(t.elapsed())) else {
                break;
            };
            if tokio::time::timeout(left, self.heard.changed())
                .await
                .is_err()
            {
                warn!(
                    "no Sentinel said within {} s how the failover of '{}' ended: asking them again",
                    HOLD_MAX.as_secs(),
                    self.cfg.master_name
                );
                break;
            }
        }
        let addr = match (resolve(&self.cfg).await, &self.cfg.fallback) {
            (Ok((addr, by)), _) => {
                if self.last_answer.as_ref() != Some(&addr) {
                    info!(
                        "Sentinel {}:{} says the primary of '{}' is {}:{}",
                        by.0, by.1, self.cfg.master_name, addr.0, addr.1
                    );
                }
                addr
            }
            (Err(e @ SentinelError::NoneAnswered { .. }), Some(fallback)) => {
                // Said at every session: the operator must see that failovers are not being
                // followed while the Sentinels are away.
                warn!(
                    "{e}: capturing --source {}:{} meanwhile (failovers are not followed until a Sentinel answers)",
                    fallback.0, fallback.1
                );
                fallback.clone()
            }
            (Err(e), _) => return Err(e),
        };
        self.last_answer = Some(addr.clone());
        Ok(RedisUrl {
            host: addr.0,
            port: addr.1,
            ..self.base.clone()
        })
    }

    /// Resolves at the next event about our master (a failover began, or ended with a switch).
    /// Cancel-safe.
    pub async fn changed(&mut self) {
        if self.heard.changed().await.is_err() {
            std::future::pending::<()>().await
        }
    }

    pub fn switched(&self) -> SentinelError {
        SentinelError::Switched {
            name: self.cfg.master_name.clone(),
        }
    }
}

fn sentinel_url(cfg: &SentinelConfig, (host, port): &(String, u16)) -> RedisUrl {
    RedisUrl {
        host: host.clone(),
        port: *port,
        user: cfg.user.clone(),
        password: cfg.password.clone(),
        db: 0,
        tls: cfg.tls.clone(),
    }
}

fn listed(cfg: &SentinelConfig) -> String {
    cfg.sentinels
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks the Sentinels in order: the first answer wins; an unreachable or refusing one is
/// skipped (logged), and "unknown master" counts only when no Sentinel knows it.
pub async fn resolve(
    cfg: &SentinelConfig,
) -> Result<((String, u16), (String, u16)), SentinelError> {
    let mut unknown = false;
    for s in &cfg.sentinels {
        match ask(cfg, s).await {
            Ok(Some(addr)) => return Ok((addr, s.clone())),
            Ok(None) => unknown = true,
            Err(e) => warn!("Sentinel {}:{}: {e}", s.0, s.1),
        }
    }
    let (name, tried) = (cfg.master_name.clone(), listed(cfg));
    Err(if unknown {
        SentinelError::UnknownMaster { name, tried }
    } else {
        SentinelError::NoneAnswered { name, tried }
    })
}

async fn ask(
    cfg: &SentinelConfig,
    s: &(String, u16),
) -> Result<Option<(String, u16)>, ClientError> {
    let mut c = Client::connect(&sentinel_url(cfg, s), ASK_TIMEOUT).await?;
    let reply = c
        .ok(&[
            b"SENTINEL".as_slice(),
            b"get-master-addr-by-name",
            cfg.master_name.as_bytes(),
        ])
        .await?;
    match reply {
        Frame::Array(items) if items.len() == 2 => {
            let port = items[1].text().parse().ok();
            Ok(port.map(|p| (items[0].text(), p)))
        }
        _ => Ok(None),
    }
}

/// One subscriber per Sentinel, reconnecting (with backoff) for as long as capture runs.
async fn subscribe(cfg: SentinelConfig, s: (String, u16), tx: Arc<watch::Sender<Heard>>) {
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match listen(&cfg, &s, &tx, &mut backoff).await {
            Ok(()) => {}
            Err(e) => debug!("Sentinel {}:{} events: {e}", s.0, s.1),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn listen(
    cfg: &SentinelConfig,
    s: &(String, u16),
    tx: &watch::Sender<Heard>,
    backoff: &mut crate::backoff::Backoff,
) -> Result<(), ClientError> {
    let mut c = Client::connect(&sentinel_url(cfg, s), ASK_TIMEOUT).await?;
    let mut cmd: Vec<&str> = vec!["SUBSCRIBE"];
    cmd.extend(CHANNELS);
    c.send(&cmd).await?;
    let mut idle = 0;
    loop {
        let frame = match c.read().await {
            Ok(f) => f,
            // Quiet is normal: a PING in subscribed mode checks the Sentinel is still there.
            Err(ClientError::Timeout { .. }) if idle == 0 => {
                idle += 1;
                c.send(&["PING"]).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        idle = 0;
        let Frame::Array(items) = frame else { continue };
        let texts: Vec<String> = items.iter().map(Frame::text).collect();
        match texts.first().map(String::as_str) {
            Some("subscribe") => {
                backoff.reset();
                if texts.get(2).map(String::as_str) == Some("1") {
                    debug!("listening to Sentinel {}:{}", s.0, s.1);
                }
            }
            Some("message") if texts.len() == 3 => heard(cfg, s, &texts[1], &texts[2], tx),
            Some(k) if k.starts_with("-NOPERM") => {
                warn!("Sentinel {}:{}: {k}", s.0, s.1);
            }
            _ => {}
        }
    }
}

/// The master an event is about: `+switch-master NAME …`, or the `@ NAME ip port` part of an
/// instance event (`+selected-slave slave ip:port ip port @ NAME ip port`).
fn master_of(channel: &str, payload: &str) -> Option<String> {
    let words: Vec<&str> = payload.split_whitespace().collect();
    if channel == "+switch-master" {
        return words.first().map(|w| w.to_string());
    }
    match words.iter().position(|w| *w == "@") {
        Some(at) => words.get(at + 1).map(|w| w.to_string()),
        None => words.get(1).map(|w| w.to_string()),
    }
}

fn heard(
    cfg: &SentinelConfig,
    s: &(String, u16),
    channel: &str,
    payload: &str,
    tx: &watch::Sender<Heard>,
) {
    if master_of(channel, payload).as_deref() != Some(cfg.master_name.as_str()) {
        return;
    }
    let by = format!("{}:{}", s.0, s.1);
    tx.send_if_modified(|h| match channel {
        "+switch-master" => {
            let w: Vec<&str> = payload.split_whitespace().collect();
            let new = h.last_switch.as_deref() != Some(payload);
            if new && w.len() == 5 {
                info!(
                    "Sentinel {by}: +switch-master '{}': {}:{} -> {}:{}",
                    w[0], w[1], w[2], w[3], w[4]
                );
            }
            h.last_switch = Some(payload.to_string());
            let changed = new || h.holding_since.is_some();
            h.holding_since = None;
            h.events += u64::from(changed);
            changed
        }
        "+selected-slave" => {
            if h.holding_since.is_some() {
                return false;
            }
            info!(
                "Sentinel {by}: failover of '{}' under way ({payload}): leaving the primary until Sentinel names the new one",
                cfg.master_name
            );
            h.holding_since = Some(Instant::now());
            h.events += 1;
            true
        }
        _ => {
            // The failover ended or was abandoned: stop holding; the next session asks again.
            if h.holding_since.take().is_none() {
                return false;
            }
            info!("Sentinel {by}: {channel} for '{}'", cfg.master_name);
            h.events += 1;
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_events() {
        assert_eq!(
            parse_list("127.0.0.1:26379, [::1]:26380").unwrap(),
            vec![("127.0.0.1".into(), 26379), ("::1".into(), 26380)]
        );
        for bad in ["", "host", "h:0", "h:x", ":1", "a:1,"] {
            assert!(parse_list(bad).is_err(), "{bad}");
        }
        assert_eq!(
            master_of("+switch-master", "mymaster 127.0.0.1 1 127.0.0.1 2").as_deref(),
            Some("mymaster")
        );
        assert_eq!(
            master_of(
                "+selected-slave",
                "slave 127.0.0.1:7 127.0.0.1 7 @ mymaster 127.0.0.1 6"
            )
            .as_deref(),
            Some("mymaster")
        );
        assert_eq!(
            master_of("+failover-end", "master other 127.0.0.1 6").as_deref(),
            Some("other")
        );
    }
}
