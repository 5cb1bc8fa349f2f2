//! The generation manifest: written once, create-only, when a generation's base is durable.
//! And the generation's log head, rewritten as the log grows. Both are JSON inside a checked
//! envelope (`flashback_format::envelope`), so they are inspectable and verified on read.

use flashback_format::envelope;
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 8] = *b"FBGENMAN";
pub const VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationManifest {
    pub source: String,
    pub generation: String,
    /// The replid the primary named in +FULLRESYNC.
    pub replid: String,
    /// The FULLRESYNC offset: the base holds the dataset at exactly this offset.
    pub base_offset: u64,
    /// When the base finished arriving (ms, UTC).
    pub base_time_ms: u64,
    /// `repl-stream-db` from the base's AUX fields (0 when absent).
    pub base_db: u32,
    pub base_size: u64,
    /// RDB format version of the base (10 = Redis 7.0, 11 = 7.2/Valkey 8, 12 = 7.4+, 80 = Valkey 9).
    pub rdb_version: u32,
    /// `redis-ver` or `valkey-ver` from the base, e.g. "valkey 8.1.1".
    pub server: String,
    /// Why this generation started (first capture, or the gap that forced a full resync).
    pub reason: String,
    /// The generation before this one, if any, and where its history stops.
    pub previous: Option<PreviousGeneration>,
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousGeneration {
    pub generation: String,
    pub end_offset: u64,
    pub end_time_ms: u64,
}

impl GenerationManifest {
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(self).expect("manifest serialises");
        envelope::encode(&MAGIC, VERSION, &json)
    }

    pub fn decode(file: &str, bytes: &[u8]) -> Result<Self, flashback_format::Error> {
        decode_json(file, &MAGIC, VERSION, bytes, "manifest")
    }
}

pub const UNCERTAIN_MAGIC: [u8; 8] = *b"FBUNCERT";
pub const UNCERTAIN_VERSION: u16 = 1;

/// An uncertain interval, as the agent stored it when evidence returned (`layout::uncertain_key`
/// names it; this repeats the name's facts with the cause). Written once, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncertainRecord {
    pub from_ms: u64,
    pub to_ms: u64,
    pub from_offset: u64,
    pub to_offset: u64,
    /// Records that arrived inside the interval (flagged catch-up in the log).
    pub records: u64,
    /// `silence` (the link went quiet while the source went on) or `reconnect` (a new link,
    /// an agent restart, a full resync).
    pub cause: String,
}

impl UncertainRecord {
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(self).expect("interval serialises");
        envelope::encode(&UNCERTAIN_MAGIC, UNCERTAIN_VERSION, &json)
    }

    pub fn decode(file: &str, bytes: &[u8]) -> Result<Self, flashback_format::Error> {
        decode_json(
            file,
            &UNCERTAIN_MAGIC,
            UNCERTAIN_VERSION,
            bytes,
            "uncertain interval",
        )
    }
}

pub const HEAD_MAGIC: [u8; 8] = *b"FBLOGHED";
pub const HEAD_VERSION: u16 = 1;

/// How far a generation's log had been stored when the agent last wrote this: the end of the
/// newest sealed segment in the store (uploaded, for a remote store). Overwritten after each
/// seal (local store) or upload pass (remote), always after the segment itself is stored, so
/// it never claims more than the store holds, only possibly less. `verify` reports a listing
/// that ends before it: the newest segments were lost, which names alone cannot show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHead {
    pub source: String,
    pub generation: String,
    pub end_offset: u64,
    pub end_time_ms: u64,
    /// The newest segment's file name.
    pub segment: String,
    pub written_ms: u64,
}

impl LogHead {
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(self).expect("log head serialises");
        envelope::encode(&HEAD_MAGIC, HEAD_VERSION, &json)
    }

    pub fn decode(file: &str, bytes: &[u8]) -> Result<Self, flashback_format::Error> {
        decode_json(file, &HEAD_MAGIC, HEAD_VERSION, bytes, "log head")
    }

    /// The head after `segment` (a sealed segment's key) was stored.
    pub fn after(source: &str, key: &object_store::path::Path) -> Option<LogHead> {
        let (generation, entry) = super::layout::parse_key(source, key)?;
        let super::layout::Entry::Sealed(n) = entry else {
            return None;
        };
        Some(LogHead {
            source: source.to_string(),
            generation,
            end_offset: n.end_offset,
            end_time_ms: n.end_time_ms,
            segment: key.filename().unwrap_or_default().to_string(),
            written_ms: crate::now_ms(),
        })
    }
}

/// JSON inside a checked envelope; a JSON error is corruption at its byte in the file.
fn decode_json<T: serde::de::DeserializeOwned>(
    file: &str,
    magic: &[u8; 8],
    version: u16,
    bytes: &[u8],
    what: &str,
) -> Result<T, flashback_format::Error> {
    let (_, payload) = envelope::decode(file, magic, version, bytes)?;
    serde_json::from_slice(payload).map_err(|e| {
        // serde_json gives a line and a column (1-based); the file's byte is what we print.
        let line_start: usize = payload
            .split_inclusive(|&b| b == b'\n')
            .take(e.line().saturating_sub(1))
            .map(<[u8]>::len)
            .sum();
        let at = envelope::HEADER_LEN + line_start + e.column().saturating_sub(1);
        flashback_format::Error::corrupt(file, at as u64, format!("{what} JSON: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_error_names_its_byte_in_the_file() {
        let payload = b"{\n  \"source\": \"s\",\n  \"generation\": x\n}";
        let bytes = envelope::encode(&HEAD_MAGIC, HEAD_VERSION, payload);
        let at = payload.iter().position(|&b| b == b'x').unwrap() + envelope::HEADER_LEN;
        match LogHead::decode("g/log.head", &bytes) {
            Err(flashback_format::Error::Corrupt { offset, .. }) => {
                assert_eq!(offset, at as u64)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_log_head_round_trips_and_follows_its_segment() {
        let key = object_store::path::Path::from(
            "sources/s/generations/000001a20a35672d/segments/0000000000000010-0000000000000020-01a20a35672d-01a20a356800-2a-0000beef.seg",
        );
        let h = LogHead::after("s", &key).unwrap();
        assert_eq!((h.end_offset, h.end_time_ms), (0x20, 0x01a20a356800));
        assert_eq!(h.generation, "000001a20a35672d");
        assert!(h.segment.ends_with("-0000beef.seg"));
        assert_eq!(LogHead::decode("x", &h.encode()).unwrap(), h);
        let tail = object_store::path::Path::from(
            "sources/s/generations/000001a20a35672d/segments/0000000000000010.tail",
        );
        assert!(LogHead::after("s", &tail).is_none(), "only sealed segments");
    }
}
