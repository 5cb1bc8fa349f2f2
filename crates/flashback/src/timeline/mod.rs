//! `flashback timeline` and the events `restore --before/--after EVENT` lands on.
//!
//! - [`keys`]: what a replicated command is (arguments, family, keys touched).
//! - [`summarize`]: records in, a segment summary out; the capture agent's seal and the
//!   fallback for segments without one run the same code.
//! - [`load`]: a generation's segments with their summaries (stored, or computed from the
//!   segment), and transaction spans resolved across segment boundaries.
//! - [`history`]: the per-generation view both commands share: merged per-second buckets and
//!   every event found, destructive commands, mass deletes and the deletes of watched keys.
//! - [`event`]: the `EVENT` syntax and the search for the event a restore lands before/after.
//!
//! The report is data ([`Timeline`], also the `--json` schema, docs/cli.md); the binary renders
//! it (`cli/timeline.rs`).

pub mod event;
pub mod history;
pub mod keys;
pub mod load;
pub mod summarize;

use crate::info::{RestorableWindow, UncertainInfo};
use crate::store::catalog;
use crate::store::stream::StreamError;
use crate::store::{Store, StoreError};
use crate::timespec::format_rfc3339_ms;
use flashback_format::summary::{Family, FAMILIES};
use serde::Serialize;
use std::collections::BTreeMap;

/// The `"schema"` number of `timeline --json`.
pub const SCHEMA_VERSION: u32 = 1;
/// `--mass-delete-keys` when not given.
pub const DEFAULT_MASS_DELETE_KEYS: u64 = 1000;
/// Automatic bucket widths: the first that gives at most [`AUTO_BUCKETS`] buckets.
const BUCKET_STEPS_S: [u64; 12] = [
    1,
    5,
    10,
    30,
    60,
    300,
    600,
    1800,
    3600,
    6 * 3600,
    86_400,
    7 * 86_400,
];
const AUTO_BUCKETS: u64 = 120;
/// More buckets than this is a mistake (`--bucket 1s` over a month): refused, naming the fix.
pub const MAX_BUCKETS: u64 = 100_000;

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// Bucket width; None picks one giving at most 120 buckets.
    pub bucket_ms: Option<u64>,
    pub mass_delete_keys: u64,
    /// Keys whose DEL/UNLINK are events.
    pub watch: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Stream(String),
    #[error("source '{0}' has nothing restorable yet: no timeline to show")]
    Empty(String),
    #[error("{0}")]
    Usage(String),
}

impl From<StreamError> for TimelineError {
    fn from(e: StreamError) -> Self {
        TimelineError::Stream(match e {
            StreamError::Store(e) => e.to_string(),
            StreamError::Format(e) => e.to_string(),
            StreamError::Short { key, have, len } => {
                format!("{key}: the store returned {have} bytes, fewer than the object's {len}")
            }
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub schema: u32,
    pub source: String,
    /// The range shown (the windows' extent unless `--from/--to`).
    pub from_ms: u64,
    pub to_ms: u64,
    pub bucket_ms: u64,
    pub mass_delete_keys: u64,
    pub windows: Vec<RestorableWindow>,
    pub uncertain: Vec<UncertainInfo>,
    /// Between consecutive windows: no restore reaches these instants.
    pub gaps: Vec<Gap>,
    /// Every bucket from `from_ms` to `to_ms`, zeros included.
    pub buckets: Vec<BucketOut>,
    pub totals: Totals,
    /// In time order.
    pub events: Vec<TimelineEvent>,
    /// How each segment's summary was obtained.
    pub segments: SegmentsRead,
    /// Damaged summaries (each replaced by a read of its segment).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub from_ms: u64,
    pub to_ms: u64,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct BucketOut {
    pub time_ms: u64,
    pub writes: u64,
    pub deleted: u64,
    pub expired: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Totals {
    pub writes: u64,
    pub deleted: u64,
    pub expired: u64,
    /// Family name → writes (every family, zeros included).
    pub by_family: BTreeMap<String, u64>,
    /// Db number (as a string: JSON keys are strings) → writes.
    pub by_db: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct SegmentsRead {
    /// Sealed segments whose stored summary was read.
    pub summaries: usize,
    /// Sealed segments read and summarised because their summary was missing or bad.
    pub summarized: usize,
    /// Open tails (always read).
    pub tails: usize,
}

/// One event, as `timeline --json` and `restore --before/--after` print it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TimelineEvent {
    /// `flushall`, `flushdb`, `swapdb`, `del`, `mass-delete`, `mass-expire`, or `cmd` (only
    /// from `restore … cmd:NAME`).
    pub kind: String,
    pub generation: String,
    /// Arrival time of the event's record.
    pub time_ms: u64,
    pub time: String,
    /// Where its transaction ends: the source's `master_repl_offset` once it had applied it
    /// (`--after` lands here).
    pub offset: u64,
    /// Where its transaction starts: the previous cut point (`--before` lands here).
    pub start_offset: u64,
    /// The db it ran in; null for FLUSHALL and mass deletes/expires (any db).
    pub db: Option<u32>,
    /// SWAPDB's second db.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_db: Option<u32>,
    /// The command (DEL, UNLINK, FLUSHALL …); for mass events, the first delete's.
    pub command: String,
    /// Keys it named (DEL/UNLINK of watched keys: those; FLUSH*: none), as UTF-8 when they
    /// are, else with `\xNN` escapes.
    pub keys: Vec<String>,
    /// Keys it deleted or expired, when known (DEL/UNLINK: all it named; mass events: the
    /// burst's total).
    pub key_count: u64,
}

/// A key for JSON: itself when UTF-8, else printable ASCII with `\xNN` for other bytes (and
/// `\\` for a backslash, so the two cannot be confused).
pub fn key_text(k: &[u8]) -> String {
    match std::str::from_utf8(k) {
        Ok(s) if !s.contains('\\') => s.to_string(),
        _ => {
            let mut o = String::new();
            for &b in k {
                match b {
                    b'\\' => o.push_str("\\\\"),
                    0x20..=0x7e => o.push(b as char),
                    _ => o.push_str(&format!("\\x{b:02x}")),
                }
            }
            o
        }
    }
}

/// The timeline of `source`.
pub async fn gather(store: &Store, source: &str, req: &Request) -> Result<Timeline, TimelineError> {
    let gens = catalog::load_generations(store, source).await?;
    let info = crate::info::source_info(source, &gens, crate::now_ms());
    if info.windows.is_empty() {
        return Err(TimelineError::Empty(source.to_string()));
    }
    let from_ms = req
        .from_ms
        .unwrap_or_else(|| info.windows.iter().map(|w| w.from_ms).min().unwrap_or(0));
    let to_ms = req
        .to_ms
        .unwrap_or_else(|| info.windows.iter().map(|w| w.to_ms).max().unwrap_or(0));
    if to_ms < from_ms {
        return Err(TimelineError::Usage(format!(
            "--to ({}) is before --from ({})",
            format_rfc3339_ms(to_ms),
            format_rfc3339_ms(from_ms)
        )));
    }
    let span = to_ms - from_ms + 1;
    let bucket_ms = match req.bucket_ms {
        Some(b) => {
            if b == 0 || b % 1000 != 0 {
                return Err(TimelineError::Usage(
                    "--bucket must be a whole number of seconds (1s, 10s, 5m …)".into(),
                ));
            }
            if span.div_ceil(b) > MAX_BUCKETS {
                return Err(TimelineError::Usage(format!(
                    "--bucket {} s gives {} buckets over this range; pass a wider --bucket or a narrower --from/--to",
                    b / 1000,
                    span.div_ceil(b)
                )));
            }
            b
        }
        None => BUCKET_STEPS_S
            .iter()
            .map(|s| s * 1000)
            .find(|b| span.div_ceil(*b) <= AUTO_BUCKETS)
            .unwrap_or(BUCKET_STEPS_S[BUCKET_STEPS_S.len() - 1] * 1000),
    };
    let first_bucket = from_ms / bucket_ms * bucket_ms;
    let n = (to_ms / bucket_ms * bucket_ms - first_bucket) / bucket_ms + 1;
    let mut buckets: Vec<BucketOut> = (0..n)
        .map(|i| BucketOut {
            time_ms: first_bucket + i * bucket_ms,
            ..Default::default()
        })
        .collect();
    let mut totals = Totals::default();
    let mut fam = [0u64; FAMILIES];
    let mut by_db: BTreeMap<u32, u64> = BTreeMap::new();
    let mut events = Vec::new();
    let mut warnings = Vec::new();
    let mut read = SegmentsRead::default();
    for g in gens.iter().filter(|g| g.manifest.is_some()) {
        let h = history::History::load(store, g, from_ms, to_ms, &mut warnings).await?;
        for s in &h.segs {
            match s.origin {
                load::Origin::Stored => read.summaries += 1,
                load::Origin::Computed => read.summarized += 1,
                load::Origin::Tail => read.tails += 1,
            }
        }
        for b in h.buckets.values() {
            let t = b.second * 1000;
            if t + 999 < from_ms || t > to_ms {
                continue;
            }
            let i = ((t.max(first_bucket) - first_bucket) / bucket_ms) as usize;
            if let Some(o) = buckets.get_mut(i) {
                o.writes += b.writes;
                o.deleted += b.deleted;
                o.expired += b.expired;
            }
            totals.writes += b.writes;
            totals.deleted += b.deleted;
            totals.expired += b.expired;
            for (i, n) in b.by_family.iter().enumerate() {
                fam[i] += n;
            }
            for &(db, n) in &b.by_db {
                *by_db.entry(db).or_insert(0) += n;
            }
        }
        let mut found = h.destructive(req.mass_delete_keys);
        found.extend(h.deletes_of(store, &req.watch, None).await?);
        events.extend(
            found
                .into_iter()
                .filter(|e| from_ms <= e.time_ms && e.time_ms <= to_ms),
        );
    }
    events.sort_by_key(|e| (e.generation.clone(), e.time_ms, e.offset));
    totals.by_family = Family::ALL
        .iter()
        .map(|f| (f.name().to_string(), fam[*f as usize]))
        .collect();
    totals.by_db = by_db.into_iter().map(|(d, n)| (d.to_string(), n)).collect();
    let gaps = info
        .windows
        .windows(2)
        .filter(|w| w[1].from_ms > w[0].to_ms)
        .map(|w| Gap {
            from_ms: w[0].to_ms,
            to_ms: w[1].from_ms,
            from: format_rfc3339_ms(w[0].to_ms),
            to: format_rfc3339_ms(w[1].from_ms),
        })
        .collect();
    Ok(Timeline {
        schema: SCHEMA_VERSION,
        source: source.to_string(),
        from_ms,
        to_ms,
        bucket_ms,
        mass_delete_keys: req.mass_delete_keys,
        windows: info.windows,
        uncertain: info.uncertain,
        gaps,
        buckets,
        totals,
        events,
        segments: read,
        warnings,
    })
}
