//! Redis Cluster's key → slot function and the slot map a cluster target is read into.
//!
//! Pure: the map is parsed from a `CLUSTER SLOTS` reply given to it, so it is tested without a
//! server. `CLUSTER SLOTS` rather than `CLUSTER SHARDS`: SHARDS is Redis 7.0.3+ only, SLOTS is
//! answered by every cluster-capable server flashback restores into (deprecated, not removed).

use flashback_format::resp::Frame;

/// Slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), the one Redis Cluster hashes keys with.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that is hashed: its `{hash tag}` (the bytes between the first `{` and the
/// first `}` after it) when that is not empty, else the whole key.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

/// The slot `key` lives in.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) & (SLOTS as u16 - 1)
}

/// A node of the cluster as clients reach it.
pub type Node = (String, u16);

/// Which primary serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// Index into `nodes` of each slot's primary; None: no node serves it.
    owner: Vec<Option<usize>>,
    pub nodes: Vec<Node>,
}

impl SlotMap {
    /// No slot served: what a map is before the first `CLUSTER SLOTS`.
    pub fn empty() -> SlotMap {
        SlotMap {
            owner: vec![None; SLOTS],
            nodes: Vec::new(),
        }
    }

    /// From a `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id, …], replicas…], …]`. A node
    /// announced without an address (an empty or `?` ip) is the one that answered, `host`.
    pub fn parse(reply: &Frame, host: &str) -> Option<SlotMap> {
        let Frame::Array(ranges) = reply else {
            return None;
        };
        let mut map = SlotMap::empty();
        for r in ranges {
            let Frame::Array(parts) = r else { return None };
            let (Some(Frame::Integer(lo)), Some(Frame::Integer(hi)), Some(Frame::Array(primary))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return None;
            };
            let ip = match primary.first() {
                Some(Frame::Bulk(b)) | Some(Frame::Simple(b)) => {
                    String::from_utf8_lossy(b).into_owned()
                }
                _ => return None,
            };
            let ip = if ip.is_empty() || ip == "?" {
                host.to_string()
            } else {
                ip
            };
            let Some(Frame::Integer(port)) = primary.get(1) else {
                return None;
            };
            let node = (ip, u16::try_from(*port).ok()?);
            let i = map.index_of(node);
            let (lo, hi) = (usize::try_from(*lo).ok()?, usize::try_from(*hi).ok()?);
            if lo > hi || hi >= SLOTS {
                return None;
            }
            map.owner[lo..=hi].iter_mut().for_each(|o| *o = Some(i));
        }
        Some(map)
    }

    fn index_of(&mut self, node: Node) -> usize {
        match self.nodes.iter().position(|n| *n == node) {
            Some(i) => i,
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// The primary serving `slot`.
    pub fn owner(&self, slot: u16) -> Option<&Node> {
        self.owner
            .get(slot as usize)
            .copied()
            .flatten()
            .map(|i| &self.nodes[i])
    }

    /// What a `MOVED slot host:port` says, applied at once (the full map is read again too).
    pub fn set(&mut self, slot: u16, node: Node) {
        let i = self.index_of(node);
        if let Some(o) = self.owner.get_mut(slot as usize) {
            *o = Some(i);
        }
    }

    /// Slots no node serves.
    pub fn uncovered(&self) -> usize {
        self.owner.iter().filter(|o| o.is_none()).count()
    }

    /// The primaries that serve at least one slot.
    pub fn primaries(&self) -> Vec<Node> {
        let mut used: Vec<usize> = self.owner.iter().flatten().copied().collect();
        used.sort_unstable();
        used.dedup();
        used.into_iter().map(|i| self.nodes[i].clone()).collect()
    }
}

/// A `MOVED`/`ASK` error: (ask, slot, node). None for any other error.
pub fn redirect(err: &[u8], host: &str) -> Option<(bool, u16, Node)> {
    let text = std::str::from_utf8(err).ok()?;
    let mut it = text.split_whitespace();
    let ask = match it.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let slot = it.next()?.parse().ok()?;
    let (ip, port) = it.next()?.rsplit_once(':')?;
    let ip = if ip.is_empty() { host } else { ip };
    Some((ask, slot, (ip.to_string(), port.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn slots_like_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") & 16383);
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn parses_cluster_slots() {
        let b = |s: &str| Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()));
        let node = |ip: &str, port: i64| Frame::Array(vec![b(ip), Frame::Integer(port), b("id")]);
        let reply = Frame::Array(vec![
            Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(8191),
                node("10.0.0.1", 7000),
                node("10.0.0.2", 7003),
            ]),
            Frame::Array(vec![
                Frame::Integer(8192),
                Frame::Integer(16383),
                node("", 7001),
            ]),
        ]);
        let mut m = SlotMap::parse(&reply, "h").unwrap();
        assert_eq!(m.owner(0), Some(&("10.0.0.1".to_string(), 7000)));
        assert_eq!(m.owner(16383), Some(&("h".to_string(), 7001)));
        assert_eq!((m.uncovered(), m.primaries().len()), (0, 2));
        m.set(5, ("h".into(), 7001));
        assert_eq!(m.owner(5), Some(&("h".to_string(), 7001)));
        assert_eq!(
            redirect(b"MOVED 3999 127.0.0.1:6381", "x"),
            Some((false, 3999, ("127.0.0.1".into(), 6381)))
        );
        assert_eq!(
            redirect(b"ASK 1 :6381", "x"),
            Some((true, 1, ("x".into(), 6381)))
        );
        assert_eq!(redirect(b"BUSYKEY x", "x"), None);
    }
}
