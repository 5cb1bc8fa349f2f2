//! The running agent's watch over the cluster's shape (scale-out): one look every
//! [`TOPOLOGY_EVERY`] adopts the shards the cluster gained and starts their capture loops,
//! and stops the loop of an adopted shard found to be part of another.

use super::topology;
use super::{discover, learn_seeds, meta, says_primary, ClusterError, Roster, ShardLink};
use crate::capture::{CaptureError, CaptureOptions};
use crate::client::RedisUrl;
use crate::store::cluster::ShardMeta;
use crate::store::{layout, Store};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often the running agent asks the cluster for its shards, to adopt one added since
/// (scale-out). A new primary is adopted while it still owns no slot, so its history starts
/// before the first key moves to it; a reshard script that assigns slots at once still races
/// this, and a restore before such a shard's first snapshot is then refused, not guessed.
pub(super) const TOPOLOGY_EVERY: Duration = Duration::from_secs(2);

/// The running shards' capture loops.
pub(super) struct Loops {
    pub(super) tasks: tokio::task::JoinSet<(String, Result<(), CaptureError>)>,
    /// Each loop's own stop (a shard found to duplicate another), beside `stop_all`.
    pub(super) stops: HashMap<String, watch::Sender<bool>>,
    pub(super) store: Store,
    pub(super) opts: CaptureOptions,
    pub(super) board: crate::capture::metrics::Board,
    pub(super) roster: Roster,
    pub(super) stop_all: watch::Receiver<bool>,
}

impl Loops {
    pub(super) fn spawn(&mut self, shard: ShardMeta, seeds: &[(String, u16)]) {
        let mut o = self.opts.clone();
        o.name = layout::shard_source(&self.opts.name, &shard.label);
        // A spool per shard: its accounting and `--spool-max` are per shard, and a restart
        // recovers each shard's tail on its own.
        o.spool = self.opts.spool.as_ref().map(|d| d.join(&shard.label));
        let label = shard.label.clone();
        o.cluster = Some(ShardLink {
            seeds: seeds.to_vec(),
            shard,
            source: self.opts.name.clone(),
            board: self.board.clone(),
            roster: self.roster.clone(),
        });
        let (own_tx, mut own) = watch::channel(false);
        self.stops.insert(label.clone(), own_tx);
        let mut all = self.stop_all.clone();
        let s = self.store.clone();
        self.tasks.spawn(async move {
            let stop = async move {
                tokio::select! {
                    _ = all.wait_for(|v| *v) => {}
                    _ = own.wait_for(|v| *v) => {}
                }
            };
            (label, crate::capture::run(s, o, stop, None).await)
        });
    }

    /// Records that shard `label` is part of shard `into` (see [`ShardMeta::merged_into`]).
    pub(super) async fn mark_merged(
        &mut self,
        label: &str,
        into: &str,
    ) -> Result<(), ClusterError> {
        let m = {
            let mut r = self.roster.lock().unwrap_or_else(|e| e.into_inner());
            match r.shards.iter_mut().find(|s| s.label == label) {
                Some(s) if s.merged_into.is_none() => s.merged_into = Some(into.to_string()),
                _ => return Ok(()),
            }
            r.clone()
        };
        if let Some(stop) = self.stops.get(label) {
            let _ = stop.send(true);
        }
        meta::save(&self.store, &m).await?;
        Ok(())
    }
}

/// One look at the cluster while capturing: adopts the shards it gained (saving the shard
/// list first, so a restore knows of a shard before it has a history), starts their loops,
/// and stops the loop of an adopted shard found to duplicate another.
pub(super) async fn look_again(
    loops: &mut Loops,
    seeds: &mut Vec<(String, u16)>,
    pending: &mut HashSet<String>,
) -> Result<(), ClusterError> {
    let (found, by) = discover(&loops.opts.source, seeds).await?;
    // Ask the node that answered first next time: a node down would warn at every look.
    if let Some(i) = seeds.iter().position(|s| *s == by) {
        seeds[..=i].rotate_right(1);
    }
    learn_seeds(seeds, &found);
    let current = loops
        .roster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // A slotless shard unknown to the roster is adopted when seen at the last look too and
    // its node says it is a primary itself: the node asked may list a fresh replica as a
    // shard of its own until gossip tells it otherwise.
    let mut seen_slotless = HashSet::new();
    let mut ready = Vec::with_capacity(found.len());
    for s in &found {
        if !s.slots.is_empty() || topology::is_known(&current.shards, &found, s) {
            ready.push(s.clone());
            continue;
        }
        let Some(p) = s.nodes.iter().find(|n| n.primary) else {
            continue;
        };
        seen_slotless.insert(p.id.clone());
        if !pending.contains(&p.id) {
            continue;
        }
        let url = RedisUrl {
            host: p.host.clone(),
            port: p.port,
            db: 0,
            ..loops.opts.source.clone()
        };
        if says_primary(&url).await {
            ready.push(s.clone());
        }
    }
    *pending = seen_slotless;
    let shards = topology::merge(&current.shards, &ready, Some(crate::now_ms()));
    let new: Vec<ShardMeta> = shards
        .iter()
        .filter(|s| !current.shards.iter().any(|c| c.label == s.label))
        .cloned()
        .collect();
    let merged: Vec<ShardMeta> = shards
        .iter()
        .filter(|s| {
            s.merged_into.is_some()
                && current
                    .shards
                    .iter()
                    .any(|c| c.label == s.label && c.merged_into.is_none())
        })
        .cloned()
        .collect();
    if new.is_empty() && merged.is_empty() {
        return Ok(());
    }
    // What the agent had, with the new shards and merges (node ids learned meanwhile are
    // each loop's own business until the next start).
    let mut m = current.clone();
    m.shards.extend(new.iter().filter(|s| s.is_live()).cloned());
    for s in &merged {
        if let Some(c) = m.shards.iter_mut().find(|c| c.label == s.label) {
            c.merged_into = s.merged_into.clone();
        }
    }
    m.shards
        .sort_by(|a, b| (a.first_slot, &a.label).cmp(&(b.first_slot, &b.label)));
    meta::save(&loops.store, &m).await?;
    *loops.roster.lock().unwrap_or_else(|e| e.into_inner()) = m;
    for s in &merged {
        warn!(
            "shard {} is part of shard {} now (its node became a replica there): its capture stops; it held no slot, so nothing of it is lost",
            s.label,
            s.merged_into.as_deref().unwrap_or("?")
        );
        if let Some(stop) = loops.stops.get(&s.label) {
            let _ = stop.send(true);
        }
    }
    for s in new.into_iter().filter(|s| s.is_live()) {
        info!(
            "cluster source '{}': shard {} joined the cluster ({}); capturing it",
            loops.opts.name,
            s.label,
            if s.first_slot == meta::NO_SLOT {
                "a primary with no slot yet".to_string()
            } else {
                format!("slots from {}", s.first_slot)
            }
        );
        loops.spawn(s, seeds);
    }
    Ok(())
}
