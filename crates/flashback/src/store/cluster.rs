//! A cluster source's shard list (`sources/NAME/cluster.meta`): which shards the source has,
//! and how the agent recognises each one again after failovers, slot migrations and restarts.
//! Each shard's history is an ordinary source under [`layout::shard_source`], so capture,
//! restore, compaction and retention of one shard are the standalone code paths unchanged.
//!
//! JSON inside the checked envelope (`flashback_format::envelope`, as the generation manifest),
//! rewritten whole by the agent at each start (union of what it knew and what it discovered);
//! byte table in docs/formats.md §5.5.

use super::{layout, Store, StoreError};
use flashback_format::envelope;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 8] = *b"FBCLUSTR";
pub const VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub source: String,
    /// Sorted by label.
    pub shards: Vec<ShardMeta>,
    /// When the shard list was first written (ms, UTC).
    pub created_ms: u64,
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// `s<lowest slot at discovery>`: short, stable, and what `restore --shard` takes. The
    /// lowest slot, not the server's shard id, because Redis 7.0 has no shard id and a label
    /// must not change when the agent meets a newer server.
    pub label: String,
    /// `CLUSTER SHARDS`' `id` (Redis 7.2+, Valkey), when the server gave one.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The lowest slot the shard owned at discovery: how the shard is found again when none
    /// of `node_ids` is in the cluster any more. [`NO_SLOT`] for a shard adopted while it
    /// owned none (a primary just added to the cluster, before any slot moved to it).
    pub first_slot: u16,
    /// Every node id seen serving this shard (primary or replica): a failover swaps roles
    /// inside this set, so a node id identifies its shard through any number of failovers.
    pub node_ids: Vec<String>,
    /// When the agent adopted the shard into a source that already had shards (ms, UTC): a
    /// shard added to the cluster (scale-out) after capture began. None for the shards found
    /// at the source's first discovery. Before its history starts such a shard was not
    /// captured; a whole-cluster restore there counts it empty only if its first snapshot
    /// holds no key (`restore::cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_ms: Option<u64>,
    /// The label of the shard this one turned out to be part of: a node added as an empty
    /// primary (and adopted as a shard) then made a replica of another shard. Its capture
    /// stopped there; it held no slot, so nothing of it is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
}

/// [`ShardMeta::first_slot`] of a shard adopted before it owned a slot (no shard owns it).
pub const NO_SLOT: u16 = 16384;

impl ShardMeta {
    /// A shard still captured and restored (not [`ShardMeta::merged_into`] another).
    pub fn is_live(&self) -> bool {
        self.merged_into.is_none()
    }

    /// Adopted after capture began, before it owned any slot: empty until its history
    /// starts (its first snapshot says for sure; `restore::cluster` reads it).
    pub fn joined_empty(&self) -> bool {
        self.added_ms.is_some() && self.first_slot == NO_SLOT
    }
}

impl ClusterMeta {
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(self).expect("cluster meta serialises");
        envelope::encode(&MAGIC, VERSION, &json)
    }

    pub fn decode(file: &str, bytes: &[u8]) -> Result<Self, flashback_format::Error> {
        let (_, payload) = envelope::decode(file, &MAGIC, VERSION, bytes)?;
        serde_json::from_slice(payload).map_err(|e| {
            flashback_format::Error::corrupt(
                file,
                envelope::HEADER_LEN as u64,
                format!("cluster meta JSON: {e}"),
            )
        })
    }

    /// The shard `id` names: its label (`s0`) or its cluster shard id.
    pub fn shard(&self, id: &str) -> Option<&ShardMeta> {
        self.shards
            .iter()
            .find(|s| s.label == id || s.cluster_id.as_deref() == Some(id))
    }

    /// The internal source name of each shard still restored (not merged into another), in
    /// label order.
    pub fn shard_sources(&self) -> Vec<(String, String)> {
        self.shards
            .iter()
            .filter(|s| s.is_live())
            .map(|s| {
                (
                    s.label.clone(),
                    layout::shard_source(&self.source, &s.label),
                )
            })
            .collect()
    }

    pub fn labels(&self) -> String {
        self.shards
            .iter()
            .filter(|s| s.is_live())
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The shard list of `source`, or None when it is not a cluster source.
pub async fn load(store: &Store, source: &str) -> Result<Option<ClusterMeta>, StoreError> {
    let key = layout::cluster_meta_key(source);
    match store.os.get(&key).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            Ok(Some(ClusterMeta::decode(key.as_ref(), &bytes)?))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes the shard list (overwriting: the agent holds every shard's lease when it writes).
pub async fn save(store: &Store, meta: &ClusterMeta) -> Result<(), StoreError> {
    let key = layout::cluster_meta_key(&meta.source);
    store.os.put(&key, meta.encode().into()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let m = ClusterMeta {
            source: "c".into(),
            shards: vec![ShardMeta {
                label: "s0".into(),
                cluster_id: None,
                first_slot: 0,
                node_ids: vec!["a".repeat(40)],
                added_ms: None,
                merged_into: None,
            }],
            created_ms: 1,
            agent_version: "x".into(),
        };
        let bytes = m.encode();
        assert_eq!(ClusterMeta::decode("f", &bytes).unwrap(), m);
        assert!(m.shard("s0").is_some() && m.shard("s1").is_none());
        let mut bad = bytes.clone();
        let last = bad.len() - 3;
        bad[last] ^= 1;
        assert!(ClusterMeta::decode("f", &bad).is_err());
    }
}
