//! `--to` a Redis Cluster: every key goes to its slot's primary ([`super::slots`]), a SCAN page
//! split into one pipelined [`copy::copy_batch`] per node, so DUMP/RESTORE, relabelling and
//! element-by-element copies are the standalone ones. A node that answers `MOVED` (the slot
//! changed hands since the map was read) makes the map be read again and the key retried where
//! the reply says; `ASK` (a slot being migrated) retries the key once on the node named,
//! after `ASKING`. Bounded: a key still redirected after [`MAX_ROUNDS`] rounds is a failure.
//!
//! Every node is reached with the `--to` URL's credentials and TLS settings, its host and port
//! replaced by the node's. Any node's URL will do, a replica's too: the map names the primaries.
//! A cluster has only db 0, so every db of the restore must be mapped there (`--db-map S:0`),
//! checked before the first write; keys meeting a key of the same name are then skipped (or
//! replaced, `--replace`) like any key the target already held.
//!
//! Rejected: sending each key to the `--to` node and following redirects alone (one round trip
//! per key moved, and two thirds of the keys move on a 3-primary cluster); and a cluster client
//! library (the copy needs the raw pipelined connections `copy_batch` drives).

use super::copy::{self, Batch, Route};
use super::slots::{self, Node, SlotMap};
use super::{dbs_with_keys, scan_page, CopyCounts, KeyScan, LiveTarget, RestoreError};
use crate::client::{Client, RedisUrl};
use crate::progress::{Phase, Progress, Unit};
use crate::redis_server::RedisServer;
use crate::restore::preflight::map_db;
use crate::restore::proof::{self, Proof, Skipped};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;

/// Rounds of redirects a key may go through before it counts as failed: one `MOVED` and one
/// `ASK` is the most a stable resharding gives; more means the cluster keeps changing.
pub const MAX_ROUNDS: usize = 5;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A cluster target: its slot map and one connection per node, opened when first needed.
pub struct Cluster {
    url: RedisUrl,
    pub map: SlotMap,
    conns: HashMap<Node, Client>,
}

impl Cluster {
    /// Reads the slot map from the node `url` names.
    pub async fn connect(url: &RedisUrl) -> Result<Cluster, RestoreError> {
        let mut cluster = Cluster {
            url: url.clone(),
            map: SlotMap::empty(),
            conns: HashMap::new(),
        };
        cluster.refresh().await?;
        Ok(cluster)
    }

    /// Reads the map again, from the `--to` node (the user's entry point, which knows the
    /// cluster as well as any node).
    async fn refresh(&mut self) -> Result<(), RestoreError> {
        let url = self.url.clone();
        let c = self.client_at(&url).await?;
        let reply = c.call(&["CLUSTER", "SLOTS"]).await?;
        if let flashback_format::resp::Frame::Error(e) = &reply {
            return Err(RestoreError::Output(format!(
                "--to {url}: CLUSTER SLOTS refused ({}): give the URL of a cluster node the user may run CLUSTER SLOTS on",
                String::from_utf8_lossy(e)
            )));
        }
        self.map = SlotMap::parse(&reply, &url.host).ok_or_else(|| {
            RestoreError::Output(format!(
                "--to {url}: CLUSTER SLOTS answered something unreadable: {}",
                crate::show::key(reply.text().as_bytes())
            ))
        })?;
        Ok(())
    }

    /// The `--to` URL with another node's host and port: same user, password and TLS.
    fn node_url(&self, n: &Node) -> RedisUrl {
        let mut u = self.url.clone();
        u.host = n.0.clone();
        u.port = n.1;
        u.db = 0;
        u
    }

    async fn client_at(&mut self, url: &RedisUrl) -> Result<&mut Client, RestoreError> {
        let node = (url.host.clone(), url.port);
        Ok(match self.conns.entry(node) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Client::connect(url, CONNECT_TIMEOUT).await?)
            }
        })
    }

    async fn client(&mut self, n: &Node) -> Result<&mut Client, RestoreError> {
        let url = self.node_url(n);
        self.client_at(&url).await
    }

    /// Copies one SCAN page (`src` is on its db) to the nodes that serve its keys.
    async fn copy_page(
        &mut self,
        src: &mut Client,
        keys: Vec<Bytes>,
        job: &mut Job<'_>,
    ) -> Result<(), RestoreError> {
        // (key, the node an ASK named): None goes by the map.
        let mut pending: Vec<(Bytes, Option<Node>)> = keys.into_iter().map(|k| (k, None)).collect();
        for _round in 0..MAX_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            let mut groups: HashMap<Node, Vec<Bytes>> = HashMap::new();
            let mut asks = Vec::new();
            for (k, ask) in pending.drain(..) {
                match ask {
                    Some(n) => asks.push((n, k)),
                    None => match self.map.owner(slots::key_slot(&k)) {
                        Some(n) => groups.entry(n.clone()).or_default().push(k),
                        None => job.fail(format!(
                            "{}: slot {} is served by no node of the cluster",
                            crate::show::key(&k),
                            slots::key_slot(&k)
                        )),
                    },
                }
            }
            let mut redirects = Vec::new();
            for (node, keys) in groups {
                let dst = self.client(&node).await?;
                copy::copy_batch(src, dst, &keys, &mut job.batch(&mut redirects)).await?;
            }
            for (node, k) in asks {
                let dst = self.client(&node).await?;
                dst.ok(&["ASKING"]).await?;
                copy::copy_batch(src, dst, &[k], &mut job.batch(&mut redirects)).await?;
            }
            let mut moved = Vec::new();
            job.redirected += redirects.len() as u64;
            for (k, e) in redirects {
                match slots::redirect(&e, &self.url.host) {
                    Some((true, _, n)) => pending.push((k, Some(n))),
                    Some((false, slot, n)) => {
                        moved.push((slot, n));
                        pending.push((k, None));
                    }
                    None => job.fail(format!(
                        "RESTORE {}: {}",
                        crate::show::key(&k),
                        String::from_utf8_lossy(&e)
                    )),
                }
            }
            if !moved.is_empty() {
                self.refresh().await?;
                // The node that owns the slot now said so; the map node may not know it yet.
                for (slot, n) in moved {
                    self.map.set(slot, n);
                }
            }
        }
        for (k, _) in pending {
            job.fail(format!(
                "{}: still redirected (MOVED/ASK) after {MAX_ROUNDS} tries: the cluster is being resharded; run the restore again when it is done",
                crate::show::key(&k)
            ));
        }
        Ok(())
    }
}

/// What one page's copy needs besides the connections.
struct Job<'a> {
    src_db: u32,
    replace: bool,
    counts: &'a mut CopyCounts,
    engine: &'a str,
    route: &'a Route,
    skipped: Option<&'a mut Skipped>,
    /// Keys a node sent elsewhere and that were retried there.
    redirected: u64,
}

impl Job<'_> {
    fn batch<'b>(&'b mut self, redirects: &'b mut Vec<(Bytes, Bytes)>) -> Batch<'b> {
        Batch {
            src_db: self.src_db,
            replace: self.replace,
            counts: self.counts,
            engine: self.engine,
            route: self.route,
            skipped: self.skipped.as_deref_mut(),
            redirects: Some(redirects),
        }
    }

    fn fail(&mut self, msg: String) {
        self.counts.failed += 1;
        if self.counts.first_failure.is_none() {
            self.counts.first_failure = Some(msg);
        }
    }
}

/// Before the first write: every db holding keys goes to db 0 (the only one a cluster has).
fn check_dbs(
    url: &RedisUrl,
    dbs: &[(u32, u64)],
    db_map: &[(u32, u32)],
) -> Result<(), RestoreError> {
    let off: Vec<&(u32, u64)> = dbs
        .iter()
        .filter(|(db, _)| map_db(db_map, *db) != 0)
        .collect();
    if off.is_empty() {
        return Ok(());
    }
    let held: Vec<String> = off
        .iter()
        .map(|(db, n)| format!("db {db} ({n} keys)"))
        .collect();
    let fix: Vec<String> = dbs
        .iter()
        .filter(|(db, _)| map_db(db_map, *db) != 0 || db_map.iter().any(|(s, _)| s == db))
        .map(|(db, _)| format!("{db}:0"))
        .collect();
    Err(RestoreError::Preflight(format!(
        "the restore holds keys in {}, but the cluster {url} has only db 0: map them there with --db-map {} (a key meeting one of the same name is skipped unless --replace); nothing was written",
        held.join(", "),
        fix.join(",")
    )))
}

/// `--to` a cluster: copies every key of the restore server to its slot's primary, then (as
/// [`super::to_live`] does) proves the copy when asked. One function, so a cluster capture's
/// restore can call it once per shard's server.
pub async fn to_cluster(
    server: &RedisServer,
    to: &LiveTarget<'_>,
) -> Result<(CopyCounts, Option<Proof>), RestoreError> {
    let mut cluster = Cluster::connect(to.url).await?;
    let uncovered = cluster.map.uncovered();
    if uncovered > 0 {
        return Err(RestoreError::Preflight(format!(
            "--to {}: {uncovered} slots of the cluster are served by no node: assign them (redis-cli --cluster fix) and run the restore again; nothing was written",
            to.url
        )));
    }
    let mut c = server.client().await?;
    let mut counts = CopyCounts {
        target: format!(
            "{} (a cluster of {} primaries)",
            to.url,
            cluster.map.primaries().len()
        ),
        written: 0,
        skipped: 0,
        failed: 0,
        first_failure: None,
        by_elements: 0,
        relabelled: 0,
        notes: Vec::new(),
    };
    let (route, note) = Route::of(to.facts);
    counts.notes.extend(note);
    let engine = server.binary.to_string();
    let mut scan = KeyScan::new(&mut c).await?;
    check_dbs(to.url, &scan.dbs, to.db_map)?;
    let total = scan.dbs.iter().map(|&(_, n)| n).sum();
    to.progress.begin(Phase::Copy, Unit::Keys, Some(total));
    let mut skipped = super::verify_wanted(to.verify, total).then(Skipped::default);
    let mut redirected = 0;
    while let Some((db, keys)) = scan.next_page(&mut c).await? {
        to.progress.add(keys.len() as u64);
        let mut job = Job {
            src_db: db,
            replace: to.replace,
            counts: &mut counts,
            engine: &engine,
            route: &route,
            skipped: skipped.as_mut(),
            redirected: 0,
        };
        cluster.copy_page(&mut c, keys, &mut job).await?;
        redirected += job.redirected;
    }
    if redirected > 0 {
        counts.notes.push(format!(
            "{redirected} keys were redirected by the cluster (MOVED/ASK: slots changed hands during the copy) and retried on the node named"
        ));
    }
    let proof = match skipped {
        Some(skipped) => Some(cluster.prove(&mut c, &skipped, to.progress).await?),
        None => None,
    };
    Ok((counts, proof))
}

impl Cluster {
    /// [`proof::prove`] against a cluster: each key compared on the primary of its slot.
    async fn prove(
        &mut self,
        src: &mut Client,
        skipped: &Skipped,
        progress: &Progress,
    ) -> Result<Proof, RestoreError> {
        let dbs = dbs_with_keys(src).await?;
        progress.begin(
            Phase::Verify,
            Unit::Keys,
            Some(dbs.iter().map(|&(_, n)| n).sum()),
        );
        let mut use_debug = proof::debug_digest_works(src).await;
        for n in self.map.primaries() {
            let d = self.client(&n).await?;
            use_debug = use_debug && proof::debug_digest_works(d).await;
        }
        let mut p = Proof {
            method: if use_debug {
                "debug digest-value"
            } else {
                "client digest"
            }
            .into(),
            ..Default::default()
        };
        for &(db, _) in &dbs {
            src.ok(&["SELECT", &db.to_string()]).await?;
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let (next, keys) = scan_page(src, &cursor).await?;
                let mut groups: HashMap<Node, Vec<Bytes>> = HashMap::new();
                for k in keys {
                    // A key of a slot nobody serves was counted as failed by the copy.
                    if let Some(n) = self.map.owner(slots::key_slot(&k)) {
                        groups.entry(n.clone()).or_default().push(k);
                    }
                }
                for (node, keys) in groups {
                    let dst = self.client(&node).await?;
                    for chunk in keys.chunks(proof::BATCH) {
                        proof::compare(src, dst, db, chunk, use_debug, skipped, &mut p).await?;
                        progress.add(chunk.len() as u64);
                    }
                }
                if &next[..] == b"0" {
                    break;
                }
                cursor = next;
            }
        }
        progress.end();
        Ok(p)
    }
}
