//! A DUMP payload for a target older than the restore engine.
//!
//! A payload is one RDB value (its type byte first), then the RDB version as 2 bytes little
//! endian, then Redis' CRC-64 of everything before it (8 bytes, little endian). `RESTORE`
//! refuses a version newer than its own ("DUMP payload version or checksum are wrong") even
//! when the value uses only encodings it knows: a list from a Valkey 8.1 (RDB 11) is a
//! quicklist of listpacks (type 18), which Redis 7.0 (RDB 10) reads fine. So when every type
//! in the payload is one the target's version defines, the trailer is rewritten (version and
//! CRC) and the payload restores as is. A payload is a single value and its encoding is fixed
//! by its type byte (a quicklist's nodes are listpacks, whatever the version), so the first
//! byte decides. Rejected: rewriting the value itself into an older encoding (a second RDB
//! writer to keep right for every type), when writing the key element by element
//! ([`super::elements`]) already covers every type a server can answer commands about.

use crate::redis_server::{Product, ServerBinary};
use flashback_rdb::{crc64::crc64, encoding_name, Magic};

/// Version bytes and CRC-64 after the value.
const TRAILER: usize = 10;

/// What to do with one DUMP payload for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The target takes it as it is.
    AsIs,
    /// Rewrite the trailer to this version ([`relabel`]).
    Relabel(u16),
    /// The target's version lacks the payload's type: write the key element by element.
    Elements { encoding: &'static str },
    /// Neither works (a module's value): one line naming the type and the target version.
    Refuse(String),
}

/// The payload's RDB version and type byte; None when it is too short to be a payload.
pub fn parse(payload: &[u8]) -> Option<(u16, u8)> {
    if payload.len() < TRAILER + 1 {
        return None;
    }
    let v = &payload[payload.len() - TRAILER..];
    Some((u16::from_le_bytes([v[0], v[1]]), payload[0]))
}

/// Which family's type table a payload (or target) uses: Valkey 9's RDB 80 gives type 22 a
/// meaning (HASH_2) that Redis 7.4's 22 (a pre-GA hash with metadata) does not share.
fn magic_of_version(v: u32) -> Magic {
    if v >= 80 {
        Magic::Valkey
    } else {
        Magic::Redis
    }
}

/// The first RDB version that defines value type `t` with the meaning it has in `magic`'s
/// files; None for types no relabelling should carry (modules: the target must run the same
/// module, at an encoding version we cannot check; Redis' pre-GA 22/23).
fn first_version(t: u8, magic: Magic) -> Option<u32> {
    match (t, magic) {
        (0..=4, _) => Some(1),
        (9..=13, _) => Some(6),
        (5, _) => Some(8),
        (14, _) => Some(7),
        (15, _) => Some(9),
        (16..=19, _) => Some(10),
        (20 | 21, _) => Some(11),
        (22, Magic::Valkey) => Some(80),
        (24 | 25, Magic::Redis) => Some(12),
        _ => None,
    }
}

/// Whether `target` knows type `t` with the meaning a payload of version `payload_v` gives it.
fn known_to(t: u8, payload_v: u32, target: &ServerBinary) -> bool {
    let payload_magic = magic_of_version(payload_v);
    let target_v = target.max_rdb_version();
    let Some(first) = first_version(t, payload_magic) else {
        return false;
    };
    match (payload_magic, target.product) {
        // A Redis-table type reaches Valkey 9 through the versions both share (≤ 11).
        (Magic::Redis, Product::Valkey) if target_v >= 80 => first <= 11,
        // A Valkey 9 type reaches Redis only if RDB 11 (the last common version) had it.
        (Magic::Valkey, Product::Redis) => first <= target_v.min(11),
        _ => first <= target_v,
    }
}

/// What to do with `payload` for `target`.
pub fn judge(payload: &[u8], target: &ServerBinary) -> Verdict {
    let Some((v, t)) = parse(payload) else {
        return Verdict::AsIs;
    };
    let v = u32::from(v);
    if target.can_load(v) {
        return Verdict::AsIs;
    }
    let encoding = encoding_name(t, magic_of_version(v));
    if known_to(t, v, target) {
        // A target version that does not fit the 2 bytes cannot exist: they are its format.
        return match u16::try_from(target.max_rdb_version()) {
            Ok(to) => Verdict::Relabel(to),
            Err(_) => Verdict::Elements { encoding },
        };
    }
    if matches!(t, 6 | 7) {
        return Verdict::Refuse(format!(
            "a module value ({encoding}, RDB v{v}) cannot be relabelled to RDB v{} nor written element by element",
            target.max_rdb_version()
        ));
    }
    Verdict::Elements { encoding }
}

/// `payload` with its trailer rewritten to `version` and the CRC-64 recomputed.
pub fn relabel(payload: &[u8], version: u16) -> Vec<u8> {
    let body = &payload[..payload.len().saturating_sub(TRAILER)];
    let mut out = Vec::with_capacity(body.len() + TRAILER);
    out.extend_from_slice(body);
    out.extend_from_slice(&version.to_le_bytes());
    let crc = crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(product: Product, version: (u32, u32, u32)) -> ServerBinary {
        ServerBinary {
            path: Default::default(),
            product,
            version,
        }
    }

    /// A payload with a valid trailer: `body` then version and CRC.
    fn payload(body: &[u8], v: u16) -> Vec<u8> {
        let mut p = body.to_vec();
        p.extend_from_slice(&[0; TRAILER]);
        relabel(&p, v)
    }

    #[test]
    fn relabels_what_the_older_target_knows() {
        let r70 = bin(Product::Redis, (7, 0, 15));
        let r82 = bin(Product::Redis, (8, 2, 0));
        let v81 = bin(Product::Valkey, (8, 1, 1));
        let v9 = bin(Product::Valkey, (9, 1, 2));
        // `DUMP l` of RPUSH l a b on Valkey 8.1: a quicklist2 (18), RDB 11.
        let list = b"\x12\x01\x02\r\r\x00\x00\x00\x02\x00\x81a\x02\x81b\x02\xff\x0b\x00\x014\xb7\xfa\xee\xdeR8";
        assert_eq!(parse(list), Some((11, 18)));
        assert_eq!(judge(list, &v81), Verdict::AsIs);
        assert_eq!(judge(list, &r82), Verdict::AsIs);
        assert_eq!(judge(list, &r70), Verdict::Relabel(10));
        let to10 = relabel(list, 10);
        assert_eq!(to10.len(), list.len());
        assert_eq!(&to10[..list.len() - TRAILER], &list[..list.len() - TRAILER]);
        // The same value's DUMP on Redis 7.0 (read from a real server): byte for byte.
        let r70_dump = b"\x12\x01\x02\r\r\x00\x00\x00\x02\x00\x81a\x02\x81b\x02\xff\n\x00h\xeb\n\x89\x13A\xbb\xb1";
        assert_eq!(&to10[..], &r70_dump[..]);
        // A listpack set (20) and a stream of listpacks 3 (21) are RDB 11: not for 7.0.
        let set = payload(b"\x14rest", 11);
        assert_eq!(
            judge(&set, &r70),
            Verdict::Elements {
                encoding: "set-listpack"
            }
        );
        assert_eq!(judge(&set, &v9), Verdict::AsIs);
        // Valkey 9's payloads (80) into Redis: only the types of RDB ≤ 11.
        let v9_list = payload(b"\x12rest", 80);
        assert_eq!(judge(&v9_list, &r82), Verdict::Relabel(12));
        assert_eq!(judge(&v9_list, &v81), Verdict::Relabel(11));
        let v9_hash2 = payload(b"\x16rest", 80);
        assert!(matches!(judge(&v9_hash2, &r82), Verdict::Elements { .. }));
        // Redis 8's hash with field TTLs (25) means nothing to Valkey 9; its list does.
        let r8_hash_ex = payload(b"\x19rest", 12);
        assert!(matches!(judge(&r8_hash_ex, &v9), Verdict::Elements { .. }));
        assert_eq!(judge(&payload(b"\x12rest", 12), &v9), Verdict::Relabel(80));
        assert!(matches!(judge(&r8_hash_ex, &r70), Verdict::Elements { .. }));
        // A module value: neither.
        let module = payload(b"\x07rest", 12);
        let Verdict::Refuse(why) = judge(&module, &r70) else {
            panic!("a module value was not refused")
        };
        assert!(why.contains("module2") && why.contains("RDB v10"), "{why}");
    }
}
