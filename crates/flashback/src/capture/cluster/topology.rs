//! The cluster's shape, from `CLUSTER SHARDS` (Redis 7.0+, Valkey) or, for servers without it,
//! `CLUSTER SLOTS`; and the pure choices made over it: which node a shard's link goes to, and
//! which discovered shard a stored shard is. No I/O: the replies are parsed from frames.

use crate::store::cluster::{ShardMeta, NO_SLOT};
use flashback_format::resp::Frame;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub primary: bool,
    /// `health` is `online` (CLUSTER SLOTS says nothing: assumed online).
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// CLUSTER SHARDS' `id` (Redis 7.2+, Valkey).
    pub cluster_id: Option<String>,
    /// Inclusive ranges, as the server lists them.
    pub slots: Vec<(u16, u16)>,
    pub nodes: Vec<Node>,
}

impl Shard {
    pub fn first_slot(&self) -> Option<u16> {
        self.slots.iter().map(|r| r.0).min()
    }

    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    /// Where a shard's link goes: an online replica (no load on the primary, which keeps
    /// serving clients), else the primary; None when no node of the shard is online.
    pub fn link_node(&self) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| !n.primary && n.online)
            .or_else(|| self.nodes.iter().find(|n| n.primary && n.online))
    }
}

/// A map field of CLUSTER SHARDS (RESP2: a flat array of name, value, …).
fn field<'a>(items: &'a [Frame], name: &str) -> Option<&'a Frame> {
    items
        .chunks(2)
        .find(|kv| kv.len() == 2 && kv[0].text().eq_ignore_ascii_case(name))
        .map(|kv| &kv[1])
}

fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(n) => Some(*n),
        other => other.text().parse().ok(),
    }
}

/// Parses a `CLUSTER SHARDS` reply. Shards without slots (a primary emptied by a reshard, or
/// a node not yet given any) are kept: their nodes still identify a stored shard.
pub fn parse_shards(reply: &Frame) -> Result<Vec<Shard>, String> {
    let Frame::Array(shards) = reply else {
        return Err("CLUSTER SHARDS: not an array".into());
    };
    let mut out = Vec::new();
    for s in shards {
        let Frame::Array(items) = s else {
            return Err("CLUSTER SHARDS: a shard is not a map".into());
        };
        let mut slots = Vec::new();
        if let Some(Frame::Array(bounds)) = field(items, "slots") {
            for pair in bounds.chunks(2) {
                match (pair.first().and_then(int), pair.get(1).and_then(int)) {
                    (Some(a), Some(b)) if (0..16384).contains(&a) && (a..16384).contains(&b) => {
                        slots.push((a as u16, b as u16))
                    }
                    _ => return Err("CLUSTER SHARDS: a slot range is not two slots".into()),
                }
            }
        }
        let mut nodes = Vec::new();
        if let Some(Frame::Array(ns)) = field(items, "nodes") {
            for n in ns {
                let Frame::Array(kv) = n else {
                    return Err("CLUSTER SHARDS: a node is not a map".into());
                };
                let get = |k: &str| field(kv, k).map(Frame::text);
                let port = field(kv, "port")
                    .or_else(|| field(kv, "tls-port"))
                    .and_then(int)
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or("CLUSTER SHARDS: a node without a port")?;
                // `ip` is what replicas connect to; `endpoint` may be a hostname or '?'.
                let host = get("ip")
                    .filter(|h| !h.is_empty() && h != "?")
                    .or_else(|| get("endpoint"))
                    .ok_or("CLUSTER SHARDS: a node without an address")?;
                nodes.push(Node {
                    id: get("id").ok_or("CLUSTER SHARDS: a node without an id")?,
                    host,
                    port,
                    primary: get("role").is_some_and(|r| r == "master" || r == "primary"),
                    online: get("health").is_none_or(|h| h == "online"),
                });
            }
        }
        out.push(Shard {
            cluster_id: field(items, "id").map(Frame::text),
            slots,
            nodes,
        });
    }
    Ok(out)
}

/// Parses a `CLUSTER SLOTS` reply: one entry per slot range, primary first then replicas;
/// ranges of the same primary are one shard.
pub fn parse_slots(reply: &Frame) -> Result<Vec<Shard>, String> {
    let Frame::Array(ranges) = reply else {
        return Err("CLUSTER SLOTS: not an array".into());
    };
    let mut out: Vec<Shard> = Vec::new();
    for r in ranges {
        let Frame::Array(items) = r else {
            return Err("CLUSTER SLOTS: a range is not an array".into());
        };
        let (Some(a), Some(b)) = (items.first().and_then(int), items.get(1).and_then(int)) else {
            return Err("CLUSTER SLOTS: a range without bounds".into());
        };
        if !(0..16384).contains(&a) || !(a..16384).contains(&b) {
            return Err("CLUSTER SLOTS: a slot out of range".into());
        }
        let mut nodes = Vec::new();
        for (i, n) in items.iter().skip(2).enumerate() {
            let Frame::Array(f) = n else {
                return Err("CLUSTER SLOTS: a node is not an array".into());
            };
            let port = f
                .get(1)
                .and_then(int)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("CLUSTER SLOTS: a node without a port")?;
            nodes.push(Node {
                host: f.first().map(Frame::text).unwrap_or_default(),
                port,
                id: f.get(2).map(Frame::text).unwrap_or_default(),
                primary: i == 0,
                online: true,
            });
        }
        let primary = nodes.first().map(|n| n.id.clone());
        match out
            .iter_mut()
            .find(|s| s.nodes.first().map(|n| &n.id) == primary.as_ref())
        {
            Some(s) => s.slots.push((a as u16, b as u16)),
            None => out.push(Shard {
                cluster_id: None,
                slots: vec![(a as u16, b as u16)],
                nodes,
            }),
        }
    }
    Ok(out)
}

/// Which discovered shard a stored shard is now: the one whose primary it has seen (node ids
/// survive failovers; a shard keeps its nodes through slot migrations), else one holding any
/// node id it was seen with (a replica re-pointed to another primary is listed under that
/// one, so the primary's id decides first), else the one holding its cluster shard id, else
/// the one owning its first slot (every node replaced).
pub fn find<'a>(shards: &'a [Shard], known: &ShardMeta) -> Option<&'a Shard> {
    let seen = |n: &Node| known.node_ids.contains(&n.id);
    shards
        .iter()
        .find(|s| s.nodes.iter().any(|n| n.primary && seen(n)))
        .or_else(|| shards.iter().find(|s| s.nodes.iter().any(seen)))
        .or_else(|| {
            known
                .cluster_id
                .as_ref()
                .and_then(|id| shards.iter().find(|s| s.cluster_id.as_ref() == Some(id)))
        })
        .or_else(|| shards.iter().find(|s| s.owns(known.first_slot)))
}

/// Whether a stored shard still captured is discovered shard `s` (see [`find`]).
pub fn is_known(stored: &[ShardMeta], found: &[Shard], s: &Shard) -> bool {
    stored
        .iter()
        .filter(|m| m.is_live())
        .any(|m| find(found, m).is_some_and(|f| std::ptr::eq(f, s)))
}

/// The stored shard that `me` (an adopted one) turns out to duplicate, if any: another live
/// stored shard that [`find`]s the same discovered shard and wins it, by having seen that
/// shard's primary when `me` has not, else by being older (found at the first discovery, or
/// adopted earlier). A node added as an empty primary and adopted, then made a replica of
/// another shard, is that shard's now; capturing it twice would store the shard twice.
pub fn duplicated_by<'a>(
    stored: &'a [ShardMeta],
    found: &[Shard],
    me: &ShardMeta,
) -> Option<&'a ShardMeta> {
    me.added_ms?;
    let mine = find(found, me)?;
    // Older first: found at the first discovery (None), then by adoption time, then label,
    // so two shards never each defer to the other.
    let age = |m: &ShardMeta| {
        (
            m.added_ms.is_some(),
            m.added_ms.unwrap_or(0),
            m.label.clone(),
        )
    };
    let via_primary = |m: &ShardMeta| {
        mine.nodes
            .iter()
            .any(|n| n.primary && m.node_ids.contains(&n.id))
    };
    stored
        .iter()
        .filter(|o| o.is_live() && o.label != me.label)
        .filter(|o| find(found, o).is_some_and(|f| std::ptr::eq(f, mine)))
        .find(|o| {
            (via_primary(o) && !via_primary(me))
                || (via_primary(o) == via_primary(me) && age(o) < age(me))
        })
}

/// The stored shard list updated with what was discovered: every live stored shard found
/// again learns its current node ids; every discovered shard no stored shard is becomes a new
/// one, labelled `s<lowest slot>`, or `n<primary id prefix>` when it owns no slot yet (a
/// primary just added: adopted before any key moves to it, so its history starts empty).
/// `added_ms` is stamped on new shards (None at the source's first discovery). An adopted
/// shard that turns out to duplicate another ([`duplicated_by`]) is marked merged into it.
/// Stored shards not found are kept: their history is still restorable.
pub fn merge(stored: &[ShardMeta], found: &[Shard], added_ms: Option<u64>) -> Vec<ShardMeta> {
    let mut out: Vec<ShardMeta> = stored.to_vec();
    let mut matched = vec![false; found.len()];
    for m in out.iter_mut().filter(|m| m.is_live()) {
        if let Some(s) = find(found, m) {
            let i = found.iter().position(|x| std::ptr::eq(x, s)).unwrap_or(0);
            matched[i] = true;
            for n in &s.nodes {
                if !m.node_ids.contains(&n.id) {
                    m.node_ids.push(n.id.clone());
                }
            }
            if m.cluster_id.is_none() {
                m.cluster_id = s.cluster_id.clone();
            }
        }
    }
    for (s, _) in found.iter().zip(&matched).filter(|(_, m)| !**m) {
        // A stored shard may have had this slot at its discovery (and since migrated it).
        let (mut label, first_slot) = match s.first_slot() {
            Some(first) => (format!("s{first}"), first),
            None => {
                let Some(p) = s.nodes.iter().find(|n| n.primary).or(s.nodes.first()) else {
                    continue;
                };
                let id: String = p.id.chars().take(8).collect();
                (format!("n{id}"), NO_SLOT)
            }
        };
        let base = label.clone();
        let mut n = 1;
        while out.iter().any(|m| m.label == label) {
            label = format!("{base}-{n}");
            n += 1;
        }
        out.push(ShardMeta {
            label,
            cluster_id: s.cluster_id.clone(),
            first_slot,
            node_ids: s.nodes.iter().map(|n| n.id.clone()).collect(),
            added_ms,
            merged_into: None,
        });
    }
    let snapshot = out.clone();
    for m in out.iter_mut().filter(|m| m.is_live()) {
        if let Some(keeper) = duplicated_by(&snapshot, found, m) {
            m.merged_into = Some(keeper.label.clone());
        }
    }
    out.sort_by(|a, b| (a.first_slot, &a.label).cmp(&(b.first_slot, &b.label)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn node(id: &str, port: i64, role: &str, health: &str) -> Frame {
        Frame::Array(vec![
            b("id"),
            b(id),
            b("port"),
            Frame::Integer(port),
            b("ip"),
            b("127.0.0.1"),
            b("endpoint"),
            b("127.0.0.1"),
            b("role"),
            b(role),
            b("replication-offset"),
            Frame::Integer(5),
            b("health"),
            b(health),
        ])
    }

    #[test]
    fn shards_reply_and_link_choice() {
        let reply = Frame::Array(vec![
            Frame::Array(vec![
                b("slots"),
                Frame::Array(vec![Frame::Integer(0), Frame::Integer(5460)]),
                b("nodes"),
                Frame::Array(vec![
                    node("p1", 7000, "master", "online"),
                    node("r1", 7003, "replica", "online"),
                ]),
            ]),
            Frame::Array(vec![
                b("slots"),
                Frame::Array(vec![
                    Frame::Integer(5461),
                    Frame::Integer(10922),
                    Frame::Integer(16000),
                    Frame::Integer(16001),
                ]),
                b("nodes"),
                Frame::Array(vec![
                    node("p2", 7001, "master", "online"),
                    node("r2", 7004, "replica", "failed"),
                ]),
            ]),
        ]);
        let shards = parse_shards(&reply).unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].link_node().unwrap().id, "r1");
        // The replica failed: the primary, rather than no link.
        assert_eq!(shards[1].link_node().unwrap().id, "p2");
        assert!(shards[1].owns(16001) && !shards[1].owns(16002));
        assert!(parse_shards(&b("x")).is_err());
    }

    #[test]
    fn slots_reply_groups_ranges_by_primary() {
        let n =
            |port: i64, id: &str| Frame::Array(vec![b("127.0.0.1"), Frame::Integer(port), b(id)]);
        let reply = Frame::Array(vec![
            Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(99),
                n(7000, "p1"),
                n(7003, "r1"),
            ]),
            Frame::Array(vec![
                Frame::Integer(100),
                Frame::Integer(199),
                n(7001, "p2"),
            ]),
            Frame::Array(vec![
                Frame::Integer(200),
                Frame::Integer(299),
                n(7000, "p1"),
                n(7003, "r1"),
            ]),
        ]);
        let shards = parse_slots(&reply).unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].slots, vec![(0, 99), (200, 299)]);
        assert_eq!(shards[0].link_node().unwrap().port, 7003);
        assert_eq!(shards[1].link_node().unwrap().port, 7001);
    }

    #[test]
    fn a_shard_is_found_again_by_node_then_by_slot() {
        let shard = |ids: &[&str], slots: Vec<(u16, u16)>| Shard {
            cluster_id: None,
            slots,
            nodes: ids
                .iter()
                .map(|id| Node {
                    id: id.to_string(),
                    host: "h".into(),
                    port: 1,
                    primary: false,
                    online: true,
                })
                .collect(),
        };
        let now = [
            shard(&["a", "b"], vec![(100, 200)]),
            shard(&["c"], vec![(0, 99)]),
        ];
        let known = ShardMeta {
            label: "s0".into(),
            cluster_id: None,
            first_slot: 0,
            node_ids: vec!["b".into()],
            added_ms: None,
            merged_into: None,
        };
        // Node b moved slot 0 away in a reshard: still the shard of b.
        assert_eq!(find(&now, &known).unwrap().nodes[0].id, "a");
        let gone = ShardMeta {
            node_ids: vec!["z".into()],
            ..known.clone()
        };
        assert_eq!(find(&now, &gone).unwrap().nodes[0].id, "c");
        let merged = merge(&[known], &now, None);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].label, "s0");
        assert_eq!(merged[0].node_ids, vec!["b", "a"]);
        // Shard c has slot 0 now: a new shard, labelled apart from the stored s0.
        assert_eq!(merged[1].label, "s0-1");
        assert_eq!(merged[1].node_ids, vec!["c"]);
    }

    fn shard_of(nodes: &[(&str, bool)], slots: Vec<(u16, u16)>) -> Shard {
        Shard {
            cluster_id: None,
            slots,
            nodes: nodes
                .iter()
                .map(|(id, primary)| Node {
                    id: id.to_string(),
                    host: "h".into(),
                    port: 1,
                    primary: *primary,
                    online: true,
                })
                .collect(),
        }
    }

    /// Scale-out: a primary added with no slot is adopted (label by its id, NO_SLOT, the
    /// adoption time); when it then becomes a replica of a stored shard it is that shard's,
    /// and the adopted one is marked merged, not captured twice.
    #[test]
    fn an_added_primary_is_adopted_then_merged_if_it_becomes_a_replica() {
        let first = vec![
            shard_of(&[("aaaa", true), ("ar", false)], vec![(0, 8191)]),
            shard_of(&[("bbbb", true)], vec![(8192, 16383)]),
        ];
        let stored = merge(&[], &first, None);
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().all(|s| s.added_ms.is_none()));

        let mut grown = first.clone();
        grown.push(shard_of(&[("cccccccccc", true)], vec![]));
        let adopted = merge(&stored, &grown, Some(7));
        let new = adopted.iter().find(|s| s.label == "ncccccccc").unwrap();
        assert_eq!((new.first_slot, new.added_ms), (NO_SLOT, Some(7)));
        assert!(new.joined_empty() && new.is_live());
        // Found again unchanged while it stays a primary (slots moving to it or not).
        grown[2].slots = vec![(0, 10)];
        grown[0].slots = vec![(11, 8191)];
        let again = merge(&adopted, &grown, Some(9));
        assert_eq!(again.len(), 3);
        assert!(again.iter().all(|s| s.is_live()));

        // Instead made a replica of shard b: b's now; the adopted one is merged into it.
        let replica = vec![
            first[0].clone(),
            shard_of(
                &[("bbbb", true), ("cccccccccc", false)],
                vec![(8192, 16383)],
            ),
        ];
        let merged = merge(&adopted, &replica, Some(9));
        let n = merged.iter().find(|s| s.label == "ncccccccc").unwrap();
        assert_eq!(n.merged_into.as_deref(), Some("s8192"));
        let b = merged.iter().find(|s| s.label == "s8192").unwrap();
        assert!(b.is_live());
        assert_eq!(duplicated_by(&merged, &replica, b), None);
        assert_eq!(duplicated_by(&adopted, &replica, n).unwrap().label, "s8192");
        // A shard found at the first discovery is never the one merged away.
        assert_eq!(duplicated_by(&adopted, &replica, b), None);
    }

    /// A replica re-pointed from shard a to shard b is listed under b: shard a is still found
    /// by its primary, not taken for b through the moved replica.
    #[test]
    fn a_shard_is_found_by_its_primary_before_a_moved_replica() {
        let first = vec![
            shard_of(&[("aaaa", true), ("rrrr", false)], vec![(0, 8191)]),
            shard_of(&[("bbbb", true)], vec![(8192, 16383)]),
        ];
        let stored = merge(&[], &first, None);
        let moved = vec![
            shard_of(&[("bbbb", true), ("rrrr", false)], vec![(8192, 16383)]),
            shard_of(&[("aaaa", true)], vec![(0, 8191)]),
        ];
        let a = stored.iter().find(|s| s.label == "s0").unwrap();
        assert_eq!(find(&moved, a).unwrap().nodes[0].id, "aaaa");
        let after = merge(&stored, &moved, Some(1));
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|s| s.is_live()));
    }
}
