//! The key filter of a segment summary: a Bloom filter over every `(db, key)` the segment's
//! records touch, so `history KEY` and `restore --before del:KEY` read only the segments that
//! may hold the key.
//!
//! Bloom rather than an xor filter: an xor filter is ~20% smaller at the same false-positive
//! rate but needs a peeling construction that can fail and retry; at 10 bits a key the Bloom
//! filter's rate (about 0.8%, measured in the tests) already makes a skipped segment the rule,
//! and the filter is a few KiB beside a segment of megabytes.
//!
//! The hash is spelled out here (FNV-1a 64 over `db` as u32 LE then the key bytes, then the
//! splitmix64 finaliser) and in docs/formats.md: std's `DefaultHasher` is not stable across
//! Rust releases, and a filter written by one build must answer the same in the next.

/// Bits per distinct key. 10 bits and 7 probes: about 0.8% false positives.
pub const BITS_PER_KEY: u64 = 10;
/// Probes per key.
pub const PROBES: u8 = 7;

/// The stable 64-bit hash of a `(db, key)` pair.
pub fn key_hash(db: u32, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in db.to_le_bytes().iter().chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser: FNV's low bits alone are weak for short keys that differ at the end.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    /// Probes per key (1..=16).
    pub probes: u8,
    /// `64 × words.len()` bits; bit `i` is bit `i % 64` of `words[i / 64]`.
    pub words: Vec<u64>,
}

impl KeyFilter {
    /// A filter holding every hash in `hashes` (distinct [`key_hash`] values).
    pub fn build(hashes: impl ExactSizeIterator<Item = u64>) -> KeyFilter {
        let n = hashes.len() as u64;
        let words = (n * BITS_PER_KEY).div_ceil(64).max(1);
        let mut f = KeyFilter {
            probes: PROBES,
            words: vec![0; words as usize],
        };
        for h in hashes {
            for bit in f.bits(h) {
                f.words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        f
    }

    fn bits(&self, h: u64) -> impl Iterator<Item = u64> {
        let m = self.words.len() as u64 * 64;
        let step = mix(h ^ 0x9e37_79b9_7f4a_7c15) | 1;
        (0..u64::from(self.probes)).map(move |i| h.wrapping_add(i.wrapping_mul(step)) % m)
    }

    /// False: no record of the segment touches `key` in `db`. True: one may.
    pub fn may_contain(&self, db: u32, key: &[u8]) -> bool {
        self.may_contain_hash(key_hash(db, key))
    }

    pub fn may_contain_hash(&self, h: u64) -> bool {
        if self.words.is_empty() {
            return false;
        }
        self.bits(h)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_about_one_percent_false_positives() {
        let keys: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| format!("user:{i}").into_bytes())
            .collect();
        let hashes: std::collections::BTreeSet<u64> = keys.iter().map(|k| key_hash(0, k)).collect();
        let f = KeyFilter::build(hashes.into_iter());
        assert!(keys.iter().all(|k| f.may_contain(0, k)));
        let probes = 200_000u32;
        let fp = (0..probes)
            .filter(|i| f.may_contain(0, format!("other:{i}").as_bytes()))
            .count();
        let rate = fp as f64 / f64::from(probes);
        // Theory for 10 bits/key, 7 probes: 0.82%.
        eprintln!(
            "false positive rate {:.3}% ({fp} of {probes})",
            rate * 100.0
        );
        assert!(rate < 0.012, "false positive rate {rate}");
        // The db is part of the key: the same name in another db is a different key.
        let in_db1 = (0..20_000u32)
            .filter(|i| f.may_contain(1, format!("user:{i}").as_bytes()))
            .count();
        assert!(
            in_db1 < 300,
            "{in_db1} of 20000 keys of db 0 also answer for db 1"
        );
    }

    #[test]
    fn an_empty_filter_holds_nothing_and_the_hash_is_stable() {
        let f = KeyFilter::build(std::iter::empty());
        assert_eq!(f.words.len(), 1);
        assert!(!f.may_contain(0, b"x"));
        // Pinned: a change here makes every stored filter lie (docs/formats.md §7).
        assert_eq!(key_hash(3, b"user:1"), 0xec2c_fcf6_0adc_30d4);
    }
}
