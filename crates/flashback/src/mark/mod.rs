//! Marks: consistent cuts across every primary of a source (`flashback mark`,
//! `capture --mark-every`, `restore --at-mark`).
//!
//! A mark is taken by [`cut::take`] (every primary's writes held back at once by
//! `CLIENT PAUSE WRITE`, each one's replication offset read inside the pause) and stored as an
//! immutable object of its own, `sources/<name>/marks/<time>-<id>.mark` ([`Mark`]: an envelope
//! around JSON). DESIGN.md speaks of "a marker record in every shard's stream"; the mark object
//! pointing at each stream's offset is that record. Writing into the streams themselves was
//! rejected: PUBLISH is not propagated in cluster mode, and a SET/DEL pair needs write ACLs, shows
//! in keyspace notifications and changes the dataset's history (`history KEY`, timelines). An
//! offset is exact without any of that: the stream's offsets are the primary's own
//! `master_repl_offset`, so "every record ending at or before offset N" is the state of the
//! primary when it reported N.
//!
//! A mark holds a list of cuts, one per shard: a standalone or Sentinel-followed source has one
//! cut with an empty shard name; a cluster source has one per shard that was in the cluster
//! when the mark was taken, named by its label (each restored at its own cut in its own
//! history; a stored shard without a cut held no slot of the cluster then).

pub mod cut;

use crate::store::{catalog, layout, Store, StoreError};
use flashback_format::envelope;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 8] = *b"FBMARK\0\0";
pub const VERSION: u16 = 1;

/// The default `--pause`: long enough for a PAUSE and an INFO round trip to every primary of a
/// cluster on one network, short enough that clients see a hiccup, not an outage.
pub const DEFAULT_PAUSE_MS: u64 = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Short and human: `m-<unix ms>` unless the caller named it.
    pub id: String,
    /// When the last offset was read (ms, UTC, the marking host's clock).
    pub time_ms: u64,
    /// The `CLIENT PAUSE` timeout asked for, and how long the cut took (first PAUSE sent to
    /// last offset received): the cut is consistent because `took_ms < pause_ms`.
    pub pause_ms: u64,
    pub took_ms: u64,
    pub cuts: Vec<ShardCut>,
    pub agent_version: String,
}

/// One primary's position at the cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCut {
    /// Empty for a standalone (or Sentinel-followed) source; a cluster shard's name otherwise.
    pub shard: String,
    /// The primary that answered, `host:port` (no credentials).
    pub primary: String,
    /// Its `master_replid` and `master_repl_offset` inside the pause.
    pub replid: String,
    pub offset: u64,
}

impl Mark {
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(self).expect("mark serialises");
        envelope::encode(&MAGIC, VERSION, &json)
    }

    pub fn decode(file: &str, bytes: &[u8]) -> Result<Self, flashback_format::Error> {
        let (_, payload) = envelope::decode(file, &MAGIC, VERSION, bytes)?;
        serde_json::from_slice(payload).map_err(|e| {
            flashback_format::Error::corrupt(
                file,
                envelope::HEADER_LEN as u64,
                format!("mark JSON: {e}"),
            )
        })
    }
}

/// A mark id: what `restore --at-mark` accepts besides a time, and part of an object name.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub fn default_id(time_ms: u64) -> String {
    format!("m-{time_ms}")
}

#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: {what}")]
    Object { key: String, what: String },
    #[error(transparent)]
    Format(#[from] flashback_format::Error),
    #[error("no mark '{wanted}' for source '{name}'; {nearest}")]
    Unknown {
        name: String,
        wanted: String,
        nearest: String,
    },
    #[error("source '{name}' has no mark at or before {time}; {nearest}")]
    NoneBefore {
        name: String,
        time: String,
        nearest: String,
    },
    #[error("mark {id}: the agent has stored up to offset {have} of {primary}'s history, the mark needs {need}: wait for capture to catch up (flashback info shows the window)")]
    Ahead {
        id: String,
        primary: String,
        have: u64,
        need: u64,
    },
    #[error("mark {id}: offset {offset} of {primary} (replid {replid}) is not in any stored window ({why}); pick another mark (flashback timeline lists them)")]
    NotStored {
        id: String,
        primary: String,
        replid: String,
        offset: u64,
        why: String,
    },
    #[error(transparent)]
    Cut(#[from] cut::CutError),
    #[error("cluster mark: {0}")]
    Cluster(String),
    #[error("a mark named '{id}' already exists for source '{name}'; pick another --id")]
    Exists { name: String, id: String },
}

/// Every mark of a source, oldest first (names sort by time), read and checked.
pub async fn list(store: &Store, source: &str) -> Result<Vec<Mark>, MarkError> {
    use futures::TryStreamExt;
    let prefix = layout::marks_prefix(source);
    let metas: Vec<object_store::ObjectMeta> = store
        .os
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| MarkError::Object {
            key: prefix.to_string(),
            what: e.to_string(),
        })?;
    let mut keys: Vec<_> = metas
        .into_iter()
        .filter_map(|m| layout::parse_mark_key(source, &m.location).map(|(t, _)| (t, m.location)))
        .collect();
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for (_, key) in keys {
        let bytes = get(store, &key).await?;
        out.push(Mark::decode(key.as_ref(), &bytes)?);
    }
    Ok(out)
}

async fn get(store: &Store, key: &object_store::path::Path) -> Result<bytes::Bytes, MarkError> {
    let fail = |e: object_store::Error| MarkError::Object {
        key: key.to_string(),
        what: e.to_string(),
    };
    store
        .os
        .get(key)
        .await
        .map_err(fail)?
        .bytes()
        .await
        .map_err(fail)
}

/// Stores a mark, create-only: a mark never changes once written.
pub async fn save(store: &Store, source: &str, mark: &Mark) -> Result<(), MarkError> {
    use object_store::{PutMode, PutOptions};
    let key = layout::mark_key(source, mark.time_ms, &mark.id);
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store
        .os
        .put_opts(&key, bytes::Bytes::from(mark.encode()).into(), opts)
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => Err(MarkError::Exists {
            name: source.to_string(),
            id: mark.id.clone(),
        }),
        // A backend without conditional puts: the id carries the time, so a plain put only
        // ever overwrites the same mark.
        Err(object_store::Error::NotImplemented { .. }) => store
            .os
            .put(&key, bytes::Bytes::from(mark.encode()).into())
            .await
            .map(|_| ())
            .map_err(|e| MarkError::Object {
                key: key.to_string(),
                what: e.to_string(),
            }),
        Err(e) => Err(MarkError::Object {
            key: key.to_string(),
            what: e.to_string(),
        }),
    }
}

/// Takes a cut of `primaries` ([`cut::take`]) and stores it as a mark of `source`; `id`
/// defaults to `m-<unix ms>`.
pub async fn take(
    store: &Store,
    source: &str,
    primaries: &[cut::Primary],
    pause_ms: u64,
    id: Option<String>,
) -> Result<Mark, MarkError> {
    let (cuts, took_ms) = cut::take(primaries, pause_ms).await?;
    let time_ms = crate::now_ms();
    let mark = Mark {
        id: id.unwrap_or_else(|| default_id(time_ms)),
        time_ms,
        pause_ms,
        took_ms,
        cuts,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    save(store, source, &mark).await?;
    Ok(mark)
}

/// The primaries a mark of cluster source `meta` pauses, one per stored shard that holds slots
/// now, asked of the cluster through `node` (any node; its user, password and TLS are used for
/// every primary). Refused rather than cut partly: a shard whose primary is not online (a
/// failover under way), and a shard with slots the agent has not adopted yet (it joined after
/// the agent's last look): a mark without it would restore a cluster missing its keys.
pub async fn cluster_primaries(
    meta: &crate::store::cluster::ClusterMeta,
    node: &crate::client::RedisUrl,
) -> Result<Vec<cut::Primary>, MarkError> {
    use crate::capture::cluster::{discover, topology};
    let seeds = [(node.host.clone(), node.port)];
    let (found, _) = discover(node, &seeds)
        .await
        .map_err(|e| MarkError::Cluster(e.to_string()))?;
    let mut out = Vec::new();
    // Which stored shard each discovered one is, as capture decides it (topology::find).
    let stored_of = |s: &topology::Shard| {
        meta.shards
            .iter()
            .filter(|m| m.is_live())
            .find(|m| topology::find(&found, m).is_some_and(|f| std::ptr::eq(f, s)))
    };
    for s in found.iter().filter(|s| !s.slots.is_empty()) {
        let Some(stored) = stored_of(s) else {
            return Err(MarkError::Cluster(format!(
                "the cluster has a shard (slots from {}) that capture of '{}' does not know yet: a running agent adopts it within seconds (is capture running?); mark again then",
                s.first_slot().unwrap_or(0),
                meta.source
            )));
        };
        let Some(p) = s.nodes.iter().find(|n| n.primary && n.online) else {
            return Err(MarkError::Cluster(format!(
                "shard {} has no online primary now (a failover under way?); no mark was taken: try again once the cluster is healthy",
                stored.label
            )));
        };
        out.push(cut::Primary {
            shard: stored.label.clone(),
            url: crate::client::RedisUrl {
                host: p.host.clone(),
                port: p.port,
                db: 0,
                ..node.clone()
            },
        });
    }
    if out.is_empty() {
        return Err(MarkError::Cluster(format!(
            "{}:{} describes a cluster with no slots assigned; nothing to mark",
            node.host, node.port
        )));
    }
    out.sort_by(|a, b| a.shard.cmp(&b.shard));
    Ok(out)
}

/// `--at-mark ID|TIME`: the mark with that id, else (when `time_ms` is given, the argument
/// parsed as a time) the last mark at or before it.
pub fn find<'a>(
    marks: &'a [Mark],
    source: &str,
    wanted: &str,
    time_ms: Option<u64>,
) -> Result<&'a Mark, MarkError> {
    if let Some(m) = marks.iter().find(|m| m.id == wanted) {
        return Ok(m);
    }
    let nearest = |around: u64| nearest(marks, around);
    match time_ms {
        Some(t) => {
            marks
                .iter()
                .rev()
                .find(|m| m.time_ms <= t)
                .ok_or_else(|| MarkError::NoneBefore {
                    name: source.to_string(),
                    time: crate::timespec::format_ms(t),
                    nearest: nearest(t),
                })
        }
        None => Err(MarkError::Unknown {
            name: source.to_string(),
            wanted: wanted.to_string(),
            nearest: nearest(
                wanted
                    .strip_prefix("m-")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(u64::MAX),
            ),
        }),
    }
}

/// The (up to three) marks closest in time to `around`, for an error message.
fn nearest(marks: &[Mark], around: u64) -> String {
    if marks.is_empty() {
        return "it has no marks at all: take one with flashback mark".to_string();
    }
    let mut by: Vec<&Mark> = marks.iter().collect();
    by.sort_by_key(|m| m.time_ms.abs_diff(around));
    let mut near: Vec<&Mark> = by.into_iter().take(3).collect();
    near.sort_by_key(|m| m.time_ms);
    let shown: Vec<String> = near
        .iter()
        .map(|m| format!("{} ({})", m.id, crate::timespec::format_ms(m.time_ms)))
        .collect();
    format!("nearest marks: {}", shown.join(", "))
}

/// Where one cut restores from: the generation (its id as a number) and offset, as
/// `restore::Target::InGeneration` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTarget {
    pub shard: String,
    pub generation: u64,
    pub offset: u64,
}

/// Finds the stored history behind one cut: the generation whose base came from the cut's
/// replid lineage, else (a Sentinel failover continues a generation by partial resync under
/// the promoted replica's new replid) the generation that was capturing at the mark's time.
/// Refuses a cut beyond what the agent has stored (wait), and one outside every window
/// (pruned, or in a hole).
pub fn locate(gens: &[catalog::Generation], mark: &Mark, c: &ShardCut) -> Result<u64, MarkError> {
    let started = |g: &&catalog::Generation| layout::parse_generation_id(&g.id);
    let by_replid = gens
        .iter()
        .rev()
        .find(|g| g.manifest.as_ref().is_some_and(|m| m.replid == c.replid));
    let by_time = gens
        .iter()
        .rev()
        .find(|g| g.manifest.is_some() && started(g).is_some_and(|s| s <= mark.time_ms));
    let Some(g) = by_replid.or(by_time) else {
        return Err(MarkError::NotStored {
            id: mark.id.clone(),
            primary: c.primary.clone(),
            replid: c.replid.clone(),
            offset: c.offset,
            why: "no generation of this history is stored".into(),
        });
    };
    let gen_ms = started(&g).unwrap_or(0);
    let chain = g.chain();
    let windows: Vec<catalog::Window> = chain.runs.iter().map(|r| r.window).collect();
    if windows
        .iter()
        .any(|w| w.from_offset <= c.offset && c.offset <= w.to_offset)
    {
        return Ok(gen_ms);
    }
    let have = windows.iter().map(|w| w.to_offset).max().unwrap_or(0);
    let latest = gens.last().is_some_and(|l| l.id == g.id);
    if c.offset > have && latest {
        return Err(MarkError::Ahead {
            id: mark.id.clone(),
            primary: c.primary.clone(),
            have,
            need: c.offset,
        });
    }
    let why = if windows.iter().all(|w| w.from_offset > c.offset) {
        format!(
            "generation {} is stored from offset {} on: retention pruned the history before it",
            g.id,
            windows.iter().map(|w| w.from_offset).min().unwrap_or(0)
        )
    } else {
        format!(
            "it falls in a gap of generation {}'s log (stored windows: {})",
            g.id,
            windows
                .iter()
                .map(|w| format!("{}..{}", w.from_offset, w.to_offset))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(MarkError::NotStored {
        id: mark.id.clone(),
        primary: c.primary.clone(),
        replid: c.replid.clone(),
        offset: c.offset,
        why,
    })
}

/// Every cut of `mark` in the store of `source`, located ([`locate`]): a cut without a shard
/// name in the history of `source` itself, a cluster shard's in that shard's
/// ([`layout::shard_source`]).
pub async fn resolve(
    store: &Store,
    source: &str,
    mark: &Mark,
) -> Result<Vec<ShardTarget>, MarkError> {
    let mut out = Vec::with_capacity(mark.cuts.len());
    for c in &mark.cuts {
        let history = match c.shard.as_str() {
            "" => source.to_string(),
            label => layout::shard_source(source, label),
        };
        let gens = catalog::load_generations(store, &history).await?;
        out.push(ShardTarget {
            shard: c.shard.clone(),
            generation: locate(&gens, mark, c).map_err(|e| in_shard(e, &c.shard))?,
            offset: c.offset,
        });
    }
    Ok(out)
}

/// Names the shard in a cut's error, so a cluster mark's refusal says which history lacks it.
fn in_shard(e: MarkError, shard: &str) -> MarkError {
    match e {
        MarkError::NotStored {
            id,
            primary,
            replid,
            offset,
            why,
        } if !shard.is_empty() => MarkError::NotStored {
            id,
            primary: format!("{primary} (shard {shard})"),
            replid,
            offset,
            why,
        },
        MarkError::Ahead {
            id,
            primary,
            have,
            need,
        } if !shard.is_empty() => MarkError::Ahead {
            id,
            primary: format!("{primary} (shard {shard})"),
            have,
            need,
        },
        e => e,
    }
}

/// Whether retention may delete a mark: when none of its cuts lies in a window any more.
pub fn restorable(gens: &[catalog::Generation], mark: &Mark) -> bool {
    mark.cuts.iter().all(|c| locate(gens, mark, c).is_ok())
        || mark
            .cuts
            .iter()
            .any(|c| matches!(locate(gens, mark, c), Err(MarkError::Ahead { .. })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(id: &str, t: u64) -> Mark {
        Mark {
            id: id.into(),
            time_ms: t,
            pause_ms: 50,
            took_ms: 3,
            cuts: vec![ShardCut {
                shard: String::new(),
                primary: "127.0.0.1:6379".into(),
                replid: "a".repeat(40),
                offset: 1234,
            }],
            agent_version: "test".into(),
        }
    }

    #[test]
    fn a_mark_round_trips_and_a_flipped_byte_is_caught() {
        let m = mark("m-1", 1_790_000_000_250);
        let mut bytes = m.encode();
        assert_eq!(Mark::decode("x.mark", &bytes).unwrap(), m);
        let at = bytes.len() - 5;
        bytes[at] ^= 1;
        assert!(Mark::decode("x.mark", &bytes).is_err());
    }

    #[test]
    fn find_by_id_or_by_the_last_mark_at_or_before_a_time() {
        let marks = vec![mark("m-10", 10), mark("m-20", 20), mark("m-30", 30)];
        assert_eq!(find(&marks, "s", "m-20", None).unwrap().id, "m-20");
        assert_eq!(find(&marks, "s", "x", Some(29)).unwrap().id, "m-20");
        assert_eq!(find(&marks, "s", "x", Some(30)).unwrap().id, "m-30");
        let e = find(&marks, "s", "x", Some(9)).unwrap_err().to_string();
        assert!(
            e.contains("no mark at or before") && e.contains("m-10"),
            "{e}"
        );
        let e = find(&marks, "s", "m-21", None).unwrap_err().to_string();
        assert!(e.contains("no mark 'm-21'") && e.contains("m-20"), "{e}");
        assert!(!valid_id("a/b") && valid_id("m-1790000000250"));
    }
}
