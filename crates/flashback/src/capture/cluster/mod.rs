//! Capture of a Redis Cluster (`capture --cluster --source redis://ANY-NODE`): one agent
//! process, one capture loop per shard ([`super::run()`] unchanged: its own log, spool
//! subdirectory, lease, evidence poller and maintenance), each under the shard's internal
//! source name ([`layout::shard_source`]), listed in the source's `cluster.meta`
//! ([`crate::store::cluster`]).
//!
//! Which node a shard links to is asked of the cluster before every session
//! ([`ShardFollower::source`]), as `capture::sentinel` asks the Sentinels: an online replica of
//! the shard (no load on the primary), else its primary. A failover inside a shard ends the
//! session by itself (a promoted replica, and a demoted primary, drop their replicas' links to
//! announce the new replication id), and the next session's PSYNC continues the same
//! generation on whichever node the shard offers now, through replid2. Slot migrations need
//! nothing here: the keys leave one shard's stream as DEL and arrive in another's as
//! RESTORE-ASKING (Valkey 9's atomic CLUSTER MIGRATESLOTS as well, tested), all ordinary
//! records; the merge at restore keeps one copy of a key caught
//! in both (`restore::cluster`).
//!
//! A link that had to go to a primary (no replica of the shard was online yet, as in a
//! cluster just created, whose replicas' offsets the other nodes learn by gossip) moves to a
//! replica once one is online and holds every byte the agent has
//! ([`ShardFollower::replica_online`], [`ShardFollower::source`]): the same generation goes on
//! by PSYNC, and the primary is left alone as the user asked.
//!
//! Shards added while the agent runs (scale-out) are adopted by a look at the cluster every
//! [`scale::TOPOLOGY_EVERY`] ([`scale::look_again`]): a new primary while it owns no slot yet (seen twice,
//! so a node added and at once made a replica is not taken for a shard), so its history
//! starts empty, before any key moves to it. An adopted shard that turns out to be part of
//! another (its node made a replica there) is marked merged and its loop stops, before it
//! could store that shard twice ([`topology::duplicated_by`], checked by the watcher and by
//! the shard's follower before every session). Rejected: following CLUSTER NODES changes by
//! subscription; there is none, and a 2 s CLUSTER SHARDS costs the cluster nothing.

mod scale;
pub mod topology;

use super::{CaptureError, CaptureOptions};
use crate::client::{Client, ClientError, RedisUrl};
use crate::store::cluster::{self as meta, ClusterMeta, ShardMeta};
use crate::store::{layout, Store, StoreError};
use flashback_format::resp::Frame;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use topology::Shard;
use tracing::{info, warn};

const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a link on a primary asks whether a replica of its shard is online. Gossip makes
/// a new replica known within a few seconds anyway; a tighter poll would only add load.
const REPLICA_CHECK: Duration = Duration::from_secs(2);
/// How long a move to a replica waits for it to hold every byte the agent has before the
/// link goes back to the primary (a replica a little behind would answer PSYNC with a full
/// snapshot: a gap, for no reason).
const CATCH_UP: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no cluster node answered CLUSTER SHARDS or CLUSTER SLOTS ({tried}): {last}; check --source, and that the node runs with cluster-enabled yes")]
    NoneAnswered { tried: String, last: String },
    #[error("{node}: {what}")]
    Reply { node: String, what: String },
    #[error("shard {label} of cluster source '{source_name}' is not in the cluster any more (none of its nodes, and no node owning slot {slot}); its history stays restorable")]
    ShardGone {
        source_name: String,
        label: String,
        slot: u16,
    },
    #[error("shard {label}: no node of it is online; waiting for the cluster")]
    NoNode { label: String },
    #[error("shard {label}: replica {node} is online now; moving the link off the primary (the same generation continues by PSYNC)")]
    ToReplica { label: String, node: String },
    #[error("shard {label} is part of shard {into} now (its node became a replica there): its capture stops; it held no slot, so nothing of it is lost")]
    Merged { label: String, into: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one shard's capture loop needs to find its node: the cluster nodes to ask and the
/// shard as stored.
#[derive(Debug, Clone)]
pub struct ShardLink {
    pub seeds: Vec<(String, u16)>,
    pub shard: ShardMeta,
    pub source: String,
    /// Where the shard's loop leaves its metrics for the cluster's file.
    pub board: super::metrics::Board,
    /// The source's shard list as the agent knows it now (see [`duplicated_by`]).
    ///
    /// [`duplicated_by`]: topology::duplicated_by
    pub roster: Roster,
}

/// Asks `seeds` in turn for the cluster's shards: CLUSTER SHARDS, else (a server without it)
/// CLUSTER SLOTS. `base` supplies credentials and TLS.
pub async fn discover(
    base: &RedisUrl,
    seeds: &[(String, u16)],
) -> Result<(Vec<Shard>, (String, u16)), ClusterError> {
    let mut last = String::from("no node to ask");
    for (host, port) in seeds {
        let url = RedisUrl {
            host: host.clone(),
            port: *port,
            db: 0,
            ..base.clone()
        };
        match ask(&url).await {
            Ok(shards) => return Ok((shards, (host.clone(), *port))),
            Err(e) => {
                warn!("cluster node {host}:{port}: {e}");
                last = e.to_string();
            }
        }
    }
    Err(ClusterError::NoneAnswered {
        tried: seeds
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(", "),
        last,
    })
}

async fn ask(url: &RedisUrl) -> Result<Vec<Shard>, ClusterError> {
    let node = format!("{}:{}", url.host, url.port);
    let client_err = |e: ClientError| ClusterError::Reply {
        node: node.clone(),
        what: e.to_string(),
    };
    let mut c = Client::connect(url, ASK_TIMEOUT)
        .await
        .map_err(client_err)?;
    let reply = c
        .call(&[b"CLUSTER".as_slice(), b"SHARDS"])
        .await
        .map_err(client_err)?;
    let parsed = match reply {
        Frame::Error(e) if e.starts_with(b"ERR unknown subcommand") => {
            let slots = c
                .ok(&[b"CLUSTER".as_slice(), b"SLOTS"])
                .await
                .map_err(client_err)?;
            topology::parse_slots(&slots)
        }
        Frame::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
        other => topology::parse_shards(&other),
    };
    parsed.map_err(|what| ClusterError::Reply { node, what })
}

/// Whether the node at `url` answers ROLE as a primary (any failure: not known to be one).
pub(super) async fn says_primary(url: &RedisUrl) -> bool {
    let Ok(mut c) = Client::connect(url, ASK_TIMEOUT).await else {
        return false;
    };
    match c.call(&[b"ROLE".as_slice()]).await {
        Ok(Frame::Array(items)) => items.first().is_some_and(|r| r.text() == "master"),
        _ => false,
    }
}

/// One shard's node, asked of the cluster before each session.
pub struct ShardFollower {
    link: ShardLink,
    base: RedisUrl,
    last: Option<String>,
    /// The current session's node is the shard's primary.
    on_primary: bool,
}

impl ShardFollower {
    /// The role of the node the current session links to, as CLUSTER SHARDS gave it.
    pub fn role(&self) -> &'static str {
        if self.on_primary {
            "primary"
        } else {
            "replica"
        }
    }

    pub fn new(link: ShardLink, base: RedisUrl) -> ShardFollower {
        ShardFollower {
            link,
            base,
            last: None,
            on_primary: false,
        }
    }

    /// The node this shard's next session links to, with `--source`'s credentials. `have`
    /// is the stream offset the agent holds (None before the first snapshot): a replica is
    /// only chosen once it holds that much, else the primary serves this session.
    pub async fn source(&mut self, have: Option<u64>) -> Result<RedisUrl, ClusterError> {
        let shard = self.ask_shard().await?;
        let mut node = shard
            .link_node()
            .ok_or_else(|| ClusterError::NoNode {
                label: self.link.shard.label.clone(),
            })?
            .clone();
        if let (false, Some(have)) = (node.primary, have) {
            if let Some(p) = shard.nodes.iter().find(|n| n.primary && n.online) {
                if !self.caught_up(&node, have).await {
                    warn!(
                        "shard {}: replica {}:{} does not hold offset {have} yet; staying on the primary",
                        self.link.shard.label, node.host, node.port
                    );
                    node = p.clone();
                }
            }
        }
        if self.last.as_deref() != Some(node.id.as_str()) {
            info!(
                "shard {}: linking to {} {}:{} ({})",
                self.link.shard.label,
                if node.primary { "primary" } else { "replica" },
                node.host,
                node.port,
                node.id
            );
            self.last = Some(node.id.clone());
        }
        self.on_primary = node.primary;
        Ok(self.url(&node))
    }

    /// Resolves when the session's node is the shard's primary and an online replica has
    /// appeared (never otherwise): the session then ends, and the next one moves.
    pub async fn replica_online(&mut self) -> ClusterError {
        loop {
            tokio::time::sleep(REPLICA_CHECK).await;
            if !self.on_primary {
                continue;
            }
            // A failed ask is the broken link's business, not this check's.
            let Ok(shard) = self.ask_shard().await else {
                continue;
            };
            // `online` in CLUSTER SHARDS only says its offset is not 0: a replica whose own
            // link is down would fail the catch-up check, and the session would move back
            // and forth every check.
            let Some(n) = shard.link_node().filter(|n| !n.primary) else {
                continue;
            };
            if self.linked(n).await {
                return ClusterError::ToReplica {
                    label: self.link.shard.label.clone(),
                    node: format!("{}:{}", n.host, n.port),
                };
            }
        }
    }

    async fn ask_shard(&mut self) -> Result<Shard, ClusterError> {
        let (shards, _) = discover(&self.base, &self.link.seeds).await?;
        let shard = topology::find(&shards, &self.link.shard)
            .ok_or_else(|| ClusterError::ShardGone {
                source_name: self.link.source.clone(),
                label: self.link.shard.label.clone(),
                slot: self.link.shard.first_slot,
            })?
            .clone();
        // Checked before every session, not only at the watcher's next look: linking as a
        // duplicate would store another shard's whole dataset under this one's name.
        let roster = self
            .link
            .roster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shards
            .clone();
        if let Some(keeper) = topology::duplicated_by(&roster, &shards, &self.link.shard) {
            return Err(ClusterError::Merged {
                label: self.link.shard.label.clone(),
                into: keeper.label.clone(),
            });
        }
        learn_seeds(&mut self.link.seeds, &shards);
        for n in &shard.nodes {
            if !self.link.shard.node_ids.contains(&n.id) {
                self.link.shard.node_ids.push(n.id.clone());
            }
        }
        Ok(shard)
    }

    /// Whether replica `node` says its link to its primary is up.
    async fn linked(&self, node: &topology::Node) -> bool {
        let Ok(mut c) = Client::connect(&self.url(node), ASK_TIMEOUT).await else {
            return false;
        };
        let Ok(info) = c.info("replication").await else {
            return false;
        };
        crate::client::info_field(&info, "master_link_status") == Some("up")
    }

    /// Whether `node` holds stream offset `have` within [`CATCH_UP`] (its `master_repl_offset`,
    /// which a replica keeps as the primary's offset it has applied).
    async fn caught_up(&self, node: &topology::Node, have: u64) -> bool {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        let url = self.url(node);
        while tokio::time::Instant::now() < deadline {
            if let Ok(mut c) = Client::connect(&url, ASK_TIMEOUT).await {
                while tokio::time::Instant::now() < deadline {
                    let Ok(info) = c.info("replication").await else {
                        break;
                    };
                    let offset = crate::client::info_field(&info, "master_repl_offset")
                        .and_then(|o| o.parse::<u64>().ok());
                    if offset.is_some_and(|o| o >= have) {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn url(&self, node: &topology::Node) -> RedisUrl {
        RedisUrl {
            host: node.host.clone(),
            port: node.port,
            ..self.base.clone()
        }
    }
}

/// The cluster source's shard list as the running agent knows it: the topology watcher
/// ([`run`]) updates it, every shard's follower reads it (is it a duplicate of another?), and
/// the metrics writer lists its shards.
pub type Roster = Arc<Mutex<ClusterMeta>>;

/// Discovers the shards, records them in `cluster.meta`, then runs one capture loop per
/// shard until `shutdown`, adopting shards the cluster gains meanwhile (a new loop each) and
/// stopping the loop of one found to duplicate another; the first shard to fail for good
/// stops the others (each seals what it received) and its error is returned.
pub async fn run(
    store: Store,
    opts: CaptureOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CaptureError> {
    let mut seeds = vec![(opts.source.host.clone(), opts.source.port)];
    let (found, by) = discover(&opts.source, &seeds).await?;
    let stored = meta::load(&store, &opts.name).await?;
    // Shards new to a source that already had some joined the cluster after capture began.
    let added = stored.as_ref().map(|_| crate::now_ms());
    let known = stored.as_ref().map(|m| m.shards.as_slice()).unwrap_or(&[]);
    // A shard without slots is left to the watcher's checks (look_again): in a cluster just
    // created, a replica is listed as a slotless shard of its own until gossip settles.
    let slotted: Vec<Shard> = found
        .iter()
        .filter(|s| !s.slots.is_empty() || topology::is_known(known, &found, s))
        .cloned()
        .collect();
    let shards = topology::merge(known, &slotted, added);
    let m = ClusterMeta {
        source: opts.name.clone(),
        shards,
        created_ms: stored
            .as_ref()
            .map(|m| m.created_ms)
            .unwrap_or_else(crate::now_ms),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    meta::save(&store, &m).await.map_err(ClusterError::from)?;
    info!(
        "cluster source '{}': {} shard(s) ({}), as {}:{} describes the cluster",
        opts.name,
        m.shard_sources().len(),
        m.labels(),
        by.0,
        by.1
    );
    learn_seeds(&mut seeds, &found);
    let roster: Roster = Arc::new(Mutex::new(m.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let board = super::metrics::Board::default();
    // The cluster's own metrics file, beside the shards' (the spool, else the local store).
    let root = opts.spool.clone().or_else(|| store.local_root.clone());
    let metrics = root.map(|root| {
        tokio::spawn(write_cluster_metrics(
            store.clone(),
            roster.clone(),
            board.clone(),
            root,
        ))
    });
    let mut loops = scale::Loops {
        tasks: tokio::task::JoinSet::new(),
        stops: HashMap::new(),
        store: store.clone(),
        opts: opts.clone(),
        board: board.clone(),
        roster: roster.clone(),
        stop_all: stop_rx,
    };
    for shard in m.shards.iter().filter(|s| s.is_live()) {
        if topology::find(&found, shard).is_none() {
            warn!(
                "shard {} is not in the cluster any more: not captured (its history stays restorable)",
                shard.label
            );
            continue;
        }
        loops.spawn(shard.clone(), &seeds);
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut first_error = None;
    let mut watch = tokio::time::interval(scale::TOPOLOGY_EVERY);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    watch.reset();
    // Slotless primaries seen at the last look: adopted only when seen twice, so a node added
    // and at once made a replica (`add-node --cluster-slave`) is not taken for a shard.
    let mut pending: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.as_mut(), if !*stop_tx.borrow() => {
                let _ = stop_tx.send(true);
            }
            _ = watch.tick(), if !*stop_tx.borrow() => {
                if let Err(e) = scale::look_again(&mut loops, &mut seeds, &mut pending).await {
                    warn!("cluster source '{}': {e}", opts.name);
                }
            }
            joined = loops.tasks.join_next() => match joined {
                None => break,
                Some(Ok((_, Ok(())))) => {}
                Some(Ok((label, Err(CaptureError::Cluster(ClusterError::Merged { into, .. }))))) => {
                    warn!("shard {label} is part of shard {into} now (its node became a replica there): its capture stopped");
                    if let Err(e) = loops.mark_merged(&label, &into).await {
                        warn!("cluster source '{}': {e}", opts.name);
                    }
                }
                Some(Ok((label, Err(e)))) => {
                    tracing::error!("shard {label}: {e}; stopping the other shards' capture");
                    let _ = stop_tx.send(true);
                    first_error.get_or_insert(e);
                }
                Some(Err(e)) => {
                    tracing::error!("a shard's capture failed: {e}; stopping the others");
                    let _ = stop_tx.send(true);
                    first_error.get_or_insert(CaptureError::Unsupported(format!(
                        "a shard's capture failed: {e}"
                    )));
                }
            }
        }
    }
    if let Some(t) = metrics {
        t.abort();
    }
    first_error.map_or(Ok(()), Err)
}

/// Every node the cluster names is worth asking next time: the seed may be the node that
/// goes down.
pub(super) fn learn_seeds(seeds: &mut Vec<(String, u16)>, found: &[Shard]) {
    for n in found.iter().flat_map(|s| &s.nodes) {
        let addr = (n.host.clone(), n.port);
        if !seeds.contains(&addr) {
            seeds.push(addr);
        }
    }
}

/// How often the cluster's metrics file is rewritten (as each shard's own), and how often each
/// shard's window is read again from the store (a listing per shard: not every 5 s).
const METRICS_EVERY: Duration = Duration::from_secs(5);
const WINDOWS_EVERY: Duration = Duration::from_secs(30);

/// A restorable window's (from, to), ms.
type Span = (u64, u64);

/// Every [`METRICS_EVERY`]: `sources/NAME/agent.prom` with every shard's latest samples
/// (labelled by shard), each shard's restorable window and the cluster's common window (the
/// intersection: what a whole-cluster restore by time can reach).
async fn write_cluster_metrics(
    store: Store,
    roster: Roster,
    board: super::metrics::Board,
    root: std::path::PathBuf,
) {
    use super::metrics::{label, render, write, Sample};
    // Per shard: (from, to) ms of its restorable window, None when it has none (yet); and
    // whether it joined empty (its start does not bound the cluster's: see ShardMeta).
    let mut windows: Vec<(String, Option<Span>, bool)> = Vec::new();
    let mut read_at: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(METRICS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let meta = roster.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Read again sooner while a shard has no window yet (a capture just started), or the
        // shard list changed (one adopted or merged).
        let stale = read_at.is_none_or(|t| t.elapsed() >= WINDOWS_EVERY)
            || windows.iter().any(|(_, w, _)| w.is_none())
            || windows.len() != meta.shard_sources().len();
        if stale {
            windows.clear();
            for (shard, src) in meta.shard_sources() {
                let w = match crate::store::catalog::load_generations(&store, &src).await {
                    Ok(gens) => {
                        let ws: Vec<_> = gens.iter().filter_map(|g| g.window()).collect();
                        let from = ws.iter().map(|w| w.from_ms).min();
                        let to = ws.iter().map(|w| w.to_ms).max();
                        from.zip(to)
                    }
                    Err(e) => {
                        tracing::debug!("metrics: shard {shard}: {e}");
                        None
                    }
                };
                let joined_empty = meta.shard(&shard).is_some_and(|s| s.joined_empty());
                windows.push((shard, w, joined_empty));
            }
            read_at = Some(std::time::Instant::now());
        }
        let src = label("source", &meta.source);
        let mut samples: Vec<Sample> = match board.lock() {
            Ok(b) => b.values().flatten().cloned().collect(),
            Err(_) => Vec::new(),
        };
        samples.push(Sample {
            name: "flashback_cluster_shards",
            help: "Shards of the cluster source being captured.",
            labels: src.clone(),
            value: meta.shard_sources().len() as f64,
        });
        for (shard, w, _) in &windows {
            let Some((from_ms, to_ms)) = *w else { continue };
            let labels = format!("{src},{}", label("shard", shard));
            samples.push(Sample {
                name: "flashback_window_start_seconds",
                help: "Unix time of the oldest instant the shard can restore.",
                labels: labels.clone(),
                value: from_ms as f64 / 1000.0,
            });
            samples.push(Sample {
                name: "flashback_window_end_seconds",
                help: "Unix time of the newest instant the shard can restore (as last read from the store).",
                labels,
                value: to_ms as f64 / 1000.0,
            });
        }
        let all: Option<Vec<_>> = windows
            .iter()
            .map(|(_, w, empty)| w.map(|w| (w, *empty)))
            .collect();
        if let Some(ws) = all.filter(|ws| !ws.is_empty()) {
            let from = ws
                .iter()
                .filter(|(_, empty)| !empty)
                .map(|(w, _)| w.0)
                .max()
                .unwrap_or_else(|| ws.iter().map(|(w, _)| w.0).min().unwrap_or(0));
            let to = ws.iter().map(|(w, _)| w.1).min().unwrap_or(0);
            if from <= to {
                samples.push(Sample {
                    name: "flashback_cluster_window_start_seconds",
                    help: "Start of the window every shard can restore (whole-cluster restore by time).",
                    labels: src.clone(),
                    value: from as f64 / 1000.0,
                });
                samples.push(Sample {
                    name: "flashback_cluster_window_end_seconds",
                    help: "End of the window every shard can restore.",
                    labels: src.clone(),
                    value: to as f64 / 1000.0,
                });
            }
        }
        write(
            &root.join(layout::SOURCES).join(&meta.source),
            &render(&samples),
        );
    }
}
