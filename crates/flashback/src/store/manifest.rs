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
        let (_, payload) = envelope::decode(file, &MAGIC, VERSION, bytes)?;
        serde_json::from_slice(payload).map_err(|e| {
            flashback_format::Error::corrupt(
                file,
                16 + e.column() as u64,
                format!("manifest JSON: {e}"),
            )
        })
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
        let (_, payload) = envelope::decode(file, &HEAD_MAGIC, HEAD_VERSION, bytes)?;
        serde_json::from_slice(payload).map_err(|e| {
            flashback_format::Error::corrupt(
                file,
                16 + e.column() as u64,
                format!("log head JSON: {e}"),
            )
        })
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
