//! `flashback history KEY`: every write to one key, in stream order, following its name through
//! RENAME, COPY, MOVE and SWAPDB (`history::track`), and the key's value at chosen points
//! (`history::value`).
//!
//! Every generation's log is read with the restore reader (`restore::reader`) as one plan per
//! run of its chain, each record's argv decoded and its keys found with the generation's own
//! command table (`store::commands`: the source's COMMAND reply, else the builtin table).
//!
//! Speed comes from not fetching segments that cannot touch the key: the reader asks
//! [`may_touch`] before each GET, with the names followed so far. Growing the set of names while
//! reading is sound: a RENAME that adds a name is read before any segment after it is asked
//! about again (the reader re-asks at a skipped segment). `may_touch` answers from the segment
//! summaries the agent stored at each seal (their key filter); a segment without one is read.

pub mod track;
pub mod value;

use crate::commands::CommandTable;
use crate::restore::plan::{RestorePlan, SegmentRef, Target};
use crate::restore::reader::{read_records, ReadStats, RecordSink};
use crate::restore::RestoreError;
use crate::store::catalog::{self, Generation};
use crate::store::{Store, StoreError};
use bytes::Bytes;
use flashback_format::segment::Item;
use flashback_format::summary::{EventKind, Summary};
use std::collections::{BTreeSet, HashMap};
use track::{Names, Tracker, Write};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("source '{0}' has no generation with a log yet: nothing was captured")]
    Nothing(String),
}

#[derive(Debug, Clone)]
pub struct HistoryRequest {
    pub source: String,
    pub key: Bytes,
    /// Only this db for the original name (None: every db).
    pub db: Option<u32>,
    /// Writes reported between these arrival times (ms, inclusive). The log before `from_ms`
    /// is still read, for the names the key had then.
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// Read every segment, ignoring the summaries' key filters.
    pub scan_all: bool,
}

#[derive(Debug, Clone)]
pub struct History {
    pub key: Bytes,
    pub writes: Vec<Write>,
    /// Segments read and skipped ([`may_touch`]), records decoded.
    pub stats: ReadStats,
    /// Generations read, oldest first, and whether each had a stored command table.
    pub generations: Vec<(String, bool)>,
    /// The names the key goes by at the end of the log.
    pub names_now: Vec<(u32, Bytes)>,
}

/// Stored segment summaries by (start, end) offset ([`crate::timeline::load::stored_summaries`]).
pub type Summaries = HashMap<(u64, u64), Summary>;

/// False only when the segment's stored summary shows that no record of `seg` can touch any of
/// `names` (its key filter, in every db the segment writes to) *and* the segment holds no
/// SWAPDB, FLUSHDB or FLUSHALL (which touch a key without naming it). A segment without a
/// stored summary (an open tail, an older store, a damaged summary) may: it is read.
pub fn may_touch(seg: &SegmentRef, names: &Names, summaries: &Summaries) -> bool {
    let Some(sum) = summaries.get(&(seg.start_offset, seg.end_offset)) else {
        return true;
    };
    if sum.events.iter().any(|e| {
        matches!(
            e.kind,
            EventKind::FlushAll | EventKind::FlushDb | EventKind::SwapDb
        )
    }) {
        return true;
    }
    let dbs: BTreeSet<u32> = sum
        .buckets
        .iter()
        .flat_map(|b| b.by_db.iter().map(|&(d, _)| d))
        .collect();
    dbs.into_iter().any(|db| {
        names
            .candidates_in(db)
            .into_iter()
            .any(|n| sum.may_touch(db, n))
    })
}

/// Bytes of a record stored in fragments that are kept to find its command and keys: the key of
/// a 500 MB SET is in its first bytes.
const FRAGMENT_PREFIX: usize = 64 * 1024;

struct Sink<'a> {
    tracker: &'a mut Tracker,
    from_ms: u64,
    to_ms: u64,
    /// The beginning of a record stored in fragments, while its fragments arrive.
    partial: Option<Vec<u8>>,
    summaries: &'a Summaries,
}

impl RecordSink for Sink<'_> {
    async fn items(&mut self, items: Vec<Item>) -> Result<(), RestoreError> {
        for item in items {
            match item {
                Item::Record(r) => {
                    let (argv, cut) = decode_argv(&r.resp);
                    self.one(&argv, cut, r.db, r.end_offset, r.time_ms, r.boundary);
                }
                Item::Fragment(f) => {
                    let buf = self.partial.get_or_insert_with(Vec::new);
                    let room = FRAGMENT_PREFIX.saturating_sub(buf.len());
                    buf.extend_from_slice(&f.bytes[..room.min(f.bytes.len())]);
                    if let Some(end) = f.end {
                        let bytes = self.partial.take().unwrap_or_default();
                        let (argv, _) = decode_argv(&bytes);
                        self.one(
                            &argv,
                            true,
                            end.db,
                            end.end_offset,
                            end.time_ms,
                            end.boundary,
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn wants(&self, seg: &SegmentRef) -> bool {
        seg.first_time_ms <= self.to_ms && may_touch(seg, &self.tracker.names, self.summaries)
    }
}

impl Sink<'_> {
    fn one(&mut self, argv: &[Bytes], cut: bool, db: u32, end: u64, time_ms: u64, b: bool) {
        let before = self.tracker.writes.len();
        self.tracker.record(argv, cut, db, end, time_ms, b);
        // Outside the reported times: keep following names, drop the writes.
        let (from, to) = (self.from_ms, self.to_ms);
        let mut i = before;
        while i < self.tracker.writes.len() {
            let t = self.tracker.writes[i].time_ms;
            if t < from || t > to {
                self.tracker.writes.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// A record's argv, and whether it was cut short: a record stored in fragments is decoded from
/// its first bytes only, as far as whole arguments go.
pub fn decode_argv(resp: &[u8]) -> (Vec<Bytes>, bool) {
    let mut out = Vec::new();
    let line = |at: usize| -> Option<(i64, usize)> {
        let rest = resp.get(at..)?;
        let nl = rest.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(rest.get(1..nl)?).ok()?.parse().ok()?;
        Some((n, at + nl + 2))
    };
    let Some((n, mut at)) = resp.first().filter(|&&b| b == b'*').and(line(0)) else {
        return (out, true);
    };
    for _ in 0..n.max(0) {
        let Some((len, body)) = resp.get(at).filter(|&&b| b == b'$').and(line(at)) else {
            return (out, true);
        };
        let Some(arg) = usize::try_from(len)
            .ok()
            .and_then(|l| resp.get(body..body + l))
        else {
            return (out, true);
        };
        out.push(Bytes::copy_from_slice(arg));
        at = body + arg.len() + 2;
    }
    (out, false)
}

/// Every run of `g`'s chain as a plan that reads its whole log.
fn whole_log(source: &str, g: &Generation) -> Vec<RestorePlan> {
    let chain = g.chain();
    let Some(m) = g.manifest.clone() else {
        return Vec::new();
    };
    chain
        .runs
        .iter()
        .filter_map(|run| {
            let base = g.bases.get(*run.bases.first()?)?;
            Some(RestorePlan {
                source: source.to_string(),
                target: Target::AtOffset(run.window.to_offset),
                generation: g.id.clone(),
                manifest: m.clone(),
                window: run.window,
                base_key: base.key.clone(),
                base_offset: run.window.from_offset,
                base_size: base.size,
                base_db: None,
                segments: run.segments.iter().map(|s| SegmentRef::of(g, s)).collect(),
                stop_offset: run.window.to_offset,
                stop_time_ms: Some(run.window.to_ms),
                notes: Vec::new(),
            })
        })
        .collect()
}

/// Reads the log of every generation of the source and returns the key's writes.
pub async fn history(store: &Store, req: &HistoryRequest) -> Result<History, HistoryError> {
    let gens = catalog::load_generations(store, &req.source).await?;
    if !gens.iter().any(|g| g.manifest.is_some()) {
        return Err(HistoryError::Nothing(req.source.clone()));
    }
    let mut tracker = Tracker::new(Names::new(req.key.clone(), req.db), CommandTable::builtin());
    let mut stats = ReadStats::default();
    let mut generations = Vec::new();
    let (from_ms, to_ms) = (req.from_ms.unwrap_or(0), req.to_ms.unwrap_or(u64::MAX));
    for g in &gens {
        let plans = whole_log(&req.source, g);
        let Some(first) = plans.first() else { continue };
        if first.window.from_ms > to_ms {
            break;
        }
        let stored = g.commands.is_some();
        let table = crate::store::commands::command_table(store, &req.source, &g.id).await;
        tracker.start_generation(&g.id, table);
        generations.push((g.id.clone(), stored));
        let summaries = if req.scan_all {
            Summaries::new()
        } else {
            crate::timeline::load::stored_summaries(store, g).await
        };
        for plan in &plans {
            let mut sink = Sink {
                tracker: &mut tracker,
                from_ms,
                to_ms,
                partial: None,
                summaries: &summaries,
            };
            let s = read_records(store, plan, &mut sink).await?;
            stats.segments += s.segments;
            stats.skipped += s.skipped;
            stats.blocks += s.blocks;
            stats.records += s.records;
            stats.bytes_fetched += s.bytes_fetched;
        }
        tracker.flush(None);
    }
    Ok(History {
        key: req.key.clone(),
        names_now: tracker.names.known_names(),
        writes: std::mem::take(&mut tracker.writes),
        stats,
        generations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_of_whole_and_cut_records() {
        let full = flashback_format::resp::encode_command(&["SET", "k", "v"]);
        assert_eq!(
            decode_argv(&full),
            (
                vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")],
                false
            )
        );
        let (a, cut) = decode_argv(&full[..full.len() - 3]);
        assert_eq!((a.len(), cut), (2, true));
        assert_eq!(decode_argv(b"garbage"), (vec![], true));
        assert_eq!(
            decode_argv(b"*2\r\n$99999999999999999999\r\n"),
            (vec![], true)
        );
    }
}
