//! Planning: from the store's listing (and the few segments that can hold the cut) to a
//! [`RestorePlan`]: which generation, which base, which segments, and the exact `stop_offset`.
//!
//! The cut is always the end of a record flagged `boundary` (outside MULTI…EXEC), so a
//! transaction, script or function is restored whole or not at all (DESIGN.md, Semantics).
//! Segment names carry their offsets and times, so planning by time reads only the segment(s)
//! that can contain the cut, never the whole log.
//!
//! Whether a time falls inside an uncertain interval is `restore::uncertain`'s question.
//!
//! Size: ~600 lines of code: choosing the generation, the base (by cost, `restore::cost`), the
//! segments and the cut are one decision over one listing; the next split would move the cut
//! search (by time, by offset, by event) into `plan/cut.rs`, not done in this change.

use super::cost;
use super::uncertain::{uncertain_span, UncertainSpan};
use super::{OutsideWindow, Requested, RestoreError, Uncertain};
use crate::store::catalog::{self, Generation, Window};
use crate::store::chain::{Chain, Span, Which};
use crate::store::manifest::GenerationManifest;
pub(crate) use crate::store::stream::SegmentStream;
use crate::store::stream::StreamError;
use crate::store::Store;
use crate::timespec::format_ms;
use flashback_format::segment::{block_flags, Item, Sealed};
use object_store::path::Path;

/// The point in history to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every transaction that arrived at or before this time (ms since the epoch, UTC).
    At(u64),
    /// Every record ending at or before this replication offset, rounded down to a boundary.
    AtOffset(u64),
    /// The end of the latest generation's window.
    Latest,
    /// [`AtOffset`](Target::AtOffset) in one generation (its id as a number: the start time in
    /// ms): what `--before/--after EVENT` resolves to, since offsets restart with a new
    /// replication history and the event's own generation is the one meant.
    InGeneration { generation: u64, offset: u64 },
}

/// One segment the reader will fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    pub key: Path,
    pub size: u64,
    pub start_offset: u64,
    pub end_offset: u64,
    /// First record's arrival (0: no records) and the time through which it is complete.
    pub first_time_ms: u64,
    pub end_time_ms: u64,
    /// False for the open tail of a live (or crashed) agent.
    pub sealed: bool,
}

impl SegmentRef {
    pub fn sealed_mode(&self) -> Sealed {
        if self.sealed {
            Sealed::Yes
        } else {
            Sealed::No
        }
    }
}

#[derive(Debug, Clone)]
pub struct RestorePlan {
    pub source: String,
    pub target: Target,
    pub generation: String,
    pub manifest: GenerationManifest,
    pub window: Window,
    pub base_key: Path,
    /// `base_offset <= stop_offset`; every record the reader yields ends in
    /// `(base_offset, stop_offset]`.
    pub base_offset: u64,
    pub base_size: u64,
    /// The selected db at `base_offset` when known (the generation's first base); the engine
    /// re-selects from each record's own db anyway.
    pub base_db: Option<u32>,
    /// In offset order, chaining without holes from `base_offset` past `stop_offset`.
    pub segments: Vec<SegmentRef>,
    pub stop_offset: u64,
    /// Arrival time of the last record restored (the base's time when none), when known.
    pub stop_time_ms: Option<u64>,
    /// Things the user should know: catch-up intervals, ambiguous offsets, a hole in the log.
    pub notes: Vec<String>,
}

impl RestorePlan {
    /// The restore time the cost model expects on this machine's default rates
    /// ([`cost::DEFAULT_RATES`]); none of it when the output is the base itself
    /// ([`RestorePlan::is_base_itself`]).
    pub fn estimate(&self) -> cost::Estimate {
        cost::DEFAULT_RATES.estimate(self.base_size, self.stop_offset - self.base_offset)
    }

    /// The cut is the base's own offset: the state is the base, record for record.
    pub fn is_base_itself(&self) -> bool {
        self.stop_offset == self.base_offset
    }

    /// The plan in a few lines, for the final report.
    pub fn summary(&self) -> String {
        let at = match self.stop_time_ms {
            Some(t) => format!(
                "the state at {} (offset {})",
                format_ms(t),
                self.stop_offset
            ),
            None => format!("the state at offset {}", self.stop_offset),
        };
        format!(
            "restored source '{}' generation {} to {at}",
            self.source, self.generation
        )
    }
}

impl std::fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = &self.window;
        writeln!(f, "source:     {}", self.source)?;
        match self.target {
            Target::At(t) => writeln!(f, "target:     at {}", format_ms(t))?,
            Target::AtOffset(n) => writeln!(f, "target:     at offset {n}")?,
            Target::InGeneration { generation, offset } => writeln!(
                f,
                "target:     at offset {offset} of generation {}",
                crate::store::layout::generation_id(generation)
            )?,
            Target::Latest => writeln!(f, "target:     latest")?,
        }
        writeln!(
            f,
            "generation: {} (window {} .. {}, offsets {}..{})",
            self.generation,
            format_ms(w.from_ms),
            format_ms(w.to_ms),
            w.from_offset,
            w.to_offset
        )?;
        writeln!(
            f,
            "base:       {} ({} bytes, offset {}, RDB v{}, {})",
            self.base_key,
            self.base_size,
            self.base_offset,
            self.manifest.rdb_version,
            self.manifest.server
        )?;
        for s in &self.segments {
            writeln!(
                f,
                "segment:    {} ({} bytes, offsets {}..{}{})",
                s.key,
                s.size,
                s.start_offset,
                s.end_offset,
                if s.sealed { "" } else { ", open tail" }
            )?;
        }
        match self.stop_time_ms {
            Some(t) => writeln!(
                f,
                "stop:       offset {} (last record restored arrived {})",
                self.stop_offset,
                format_ms(t)
            )?,
            None => writeln!(f, "stop:       offset {}", self.stop_offset)?,
        }
        if self.is_base_itself() {
            writeln!(f, "estimate:   {} with a server; none with --rdb: the cut is the base itself, copied out as is (TTLs absolute, no --keys)", self.estimate())?;
        } else {
            writeln!(f, "estimate:   {}", self.estimate())?;
        }
        for n in &self.notes {
            writeln!(f, "note:       {n}")?;
        }
        Ok(())
    }
}

/// The base of `run` at or before the cut with the least estimated restore time
/// ([`cost::cheapest`]): usually the newest, whose log to replay is shortest.
fn cheapest_base<'g>(
    walked: &Chain<'g>,
    run: usize,
    stop_offset: u64,
) -> Option<&'g crate::store::catalog::BaseObject> {
    let g = walked.generation;
    let bases: Vec<_> = walked
        .runs
        .get(run)?
        .bases
        .iter()
        .map(|&i| &g.bases[i])
        .collect();
    let cands: Vec<cost::Candidate> = bases
        .iter()
        .map(|b| cost::Candidate {
            offset: b.offset,
            size: b.size,
        })
        .collect();
    cost::cheapest(&cost::DEFAULT_RATES, &cands, stop_offset).map(|i| bases[i])
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    Time(u64),
    Offset(u64),
}

impl Limit {
    fn admits(&self, end_offset: u64, time_ms: u64) -> bool {
        match *self {
            Limit::Time(t) => time_ms <= t,
            Limit::Offset(n) => end_offset <= n,
        }
    }
}

/// The end of the last boundary record within the limit.
#[derive(Debug, Clone, Copy)]
struct Cut {
    end_offset: u64,
    time_ms: u64,
}

/// The plan for `target`, refusing a time inside an uncertain interval (see [`plan_with`]).
pub async fn plan(
    store: &Store,
    source: &str,
    target: Target,
) -> Result<RestorePlan, RestoreError> {
    plan_with(store, source, target, false).await
}

/// The plan for `target`. A time inside an uncertain interval (DESIGN: "the window is evidence,
/// never hope") is refused with [`RestoreError::Uncertain`], naming the interval, the last
/// exact instant before it and the offsets that stay exact; with `inexact` it is planned like
/// any time, with a loud note.
pub async fn plan_with(
    store: &Store,
    source: &str,
    target: Target,
    inexact: bool,
) -> Result<RestorePlan, RestoreError> {
    let gens = catalog::load_generations(store, source).await?;
    let chains: Vec<Chain> = gens.iter().map(Generation::chain).collect();
    // Every run of every generation: its continuous window, and before it the bases kept by
    // retention after the log around them was pruned (restorable at their own instant:
    // zero-length windows, so the rest of planning needs no special case).
    let mut windows: Vec<(&Generation, Window, usize)> = chains
        .iter()
        .flat_map(|c| {
            c.runs
                .iter()
                .enumerate()
                .map(move |(ri, r)| (c.generation, r.window, ri))
        })
        .collect();
    windows.sort_by_key(|(g, w, _)| (g.id.clone(), w.from_offset));
    if windows.is_empty() {
        let why = if gens.is_empty() {
            "no generation has been captured".to_string()
        } else {
            "its first base snapshot has not been stored yet (no generation.meta); wait for capture to finish the initial sync".to_string()
        };
        return Err(RestoreError::NothingRestorable {
            name: source.to_string(),
            why,
        });
    }
    let mut notes = Vec::new();
    let outside = |requested| {
        RestoreError::OutsideWindow(Box::new(OutsideWindow {
            source: source.to_string(),
            requested,
            windows: windows.iter().map(|(g, w, _)| (g.id.clone(), *w)).collect(),
        }))
    };
    if let Some(e) = beyond_damage(&windows, target) {
        return Err(e);
    }
    let (g, w, run, limit) = match target {
        Target::At(t) => {
            // Windows of successive generations do not overlap in time; if they ever touch, the
            // later one wins, as it holds the later history.
            let (g, w, run) = windows
                .iter()
                .rev()
                .find(|(_, w, _)| w.from_ms <= t && t <= w.to_ms)
                .ok_or_else(|| outside(Requested::Time(t)))?;
            (*g, *w, *run, Limit::Time(t))
        }
        Target::AtOffset(n) => {
            let hits: Vec<_> = windows
                .iter()
                .filter(|(_, w, _)| w.from_offset <= n && n <= w.to_offset)
                .collect();
            let (g, w, run) = hits.last().ok_or_else(|| outside(Requested::Offset(n)))?;
            if hits.len() > 1 {
                notes.push(format!(
                    "offset {n} exists in {} generations ({}) because offsets restart with a new replication history; using the latest, {}",
                    hits.len(),
                    hits.iter().map(|(g, _, _)| g.id.as_str()).collect::<Vec<_>>().join(", "),
                    g.id
                ));
            }
            (*g, *w, *run, Limit::Offset(n))
        }
        Target::InGeneration { generation, offset } => {
            let id = crate::store::layout::generation_id(generation);
            let (g, w, run) = windows
                .iter()
                .rev()
                .find(|(g, w, _)| g.id == id && w.from_offset <= offset && offset <= w.to_offset)
                .ok_or_else(|| outside(Requested::Offset(offset)))?;
            (*g, *w, *run, Limit::Offset(offset))
        }
        Target::Latest => {
            let (g, w, run) = windows
                .last()
                .ok_or_else(|| outside(Requested::Offset(0)))?;
            (*g, *w, *run, Limit::Offset(w.to_offset))
        }
    };
    let m = g
        .manifest
        .clone()
        .ok_or_else(|| RestoreError::NothingRestorable {
            name: source.to_string(),
            why: "no manifest".into(),
        })?;
    let walked = chains
        .iter()
        .find(|c| c.generation.id == g.id)
        .ok_or_else(|| RestoreError::NothingRestorable {
            name: source.to_string(),
            why: "no manifest".into(),
        })?;
    let chain: Vec<SegmentRef> = walked.runs[run]
        .segments
        .iter()
        .map(|s| SegmentRef::of(g, s))
        .collect();
    if let Some(h) = walked.holes.iter().find(|h| h.run == run) {
        notes.push(match h.bridged_by.map(|r| walked.runs[r].window) {
            None => format!(
                "the log of generation {} has a hole after offset {}: later segments cannot be reached from its base and are not restorable",
                g.id, h.from_offset
            ),
            Some(next) => format!(
                "the log of generation {} has a hole after offset {} (offsets {}..{} are missing): instants after {} and before {} cannot be restored; from {} on they restore from the base at offset {}",
                g.id,
                h.from_offset,
                h.from_offset,
                h.to_offset,
                format_ms(h.from_ms),
                format_ms(next.from_ms),
                format_ms(next.from_ms),
                next.from_offset
            ),
        });
    }
    if g.tails.iter().any(|t| t.torn) {
        notes.push("the open tail ends in a torn write (the agent stopped mid-write); the incomplete bytes are ignored".into());
    }

    // A cut before the window's base (in a segment the base starts inside) is no cut.
    let cut = find_cut(store, &chain, limit, w.to_offset)
        .await?
        .filter(|c| c.end_offset > w.from_offset);
    let stop_offset = cut.map(|c| c.end_offset).unwrap_or(w.from_offset);
    let (base_offset, base_key, base_size, base_time_ms) = cheapest_base(walked, run, stop_offset)
        .map(|b| (b.offset, b.key.clone(), b.size, b.time_ms))
        .ok_or_else(|| RestoreError::Log {
            key: g.id.clone(),
            what: format!("no base snapshot at or before offset {stop_offset} (expected base/{:016x}-….rdb): the generation is damaged", m.base_offset),
        })?;
    let is_first_base = base_offset == m.base_offset;
    let stop_time_ms = match cut {
        Some(c) if c.end_offset > base_offset => Some(c.time_ms),
        _ if is_first_base => Some(m.base_time_ms),
        // A later base's name carries its last record's time.
        _ => Some(base_time_ms),
    };
    if cut.is_none() {
        if let Target::At(t) = target {
            notes.push(format!(
                "no complete transaction arrived between the base ({}) and {}: the restore is the base snapshot itself",
                format_ms(w.from_ms),
                format_ms(t)
            ));
        }
    }
    if let Target::At(t) = target {
        // The intervals the agent stored, then the log's own catch-up blocks (an interval the
        // agent never got to store: it died inside it).
        let stored = g
            .uncertain
            .iter()
            .map(|u| UncertainSpan {
                from_ms: u.name.from_ms,
                to_ms: u.name.to_ms,
                from_offset: u.name.from_offset,
                to_offset: u.name.to_offset,
                records: None,
            })
            .find(|s| s.contains(t));
        let found = match stored {
            Some(s) => Ok(Some(s)),
            None => uncertain_span(store, &chain, w.from_ms, t).await,
        };
        match found {
            Ok(Some(span)) if !inexact => {
                return Err(RestoreError::Uncertain(Box::new(Uncertain {
                    source: source.to_string(),
                    requested_ms: t,
                    from_ms: span.from_ms,
                    to_ms: span.to_ms,
                    from_offset: span.from_offset,
                    to_offset: span.to_offset,
                })))
            }
            Ok(Some(span)) => notes.push(format!(
                "INEXACT (--inexact): {} is inside an uncertain interval ({} .. {}): writes made then reached the agent late,                  so this state may lack writes the source had made by then, or hold some made after; --at-offset between {} and {} is exact",
                format_ms(t),
                format_ms(span.from_ms),
                format_ms(span.to_ms),
                span.from_offset,
                span.to_offset
            )),
            Ok(None) => {}
            // The catch-up scan reads past the cut; a segment the restore itself does not need
            // must not fail it. The stored intervals were checked, so only one the agent died
            // in before storing it could be missed: say so.
            Err(e) => notes.push(format!(
                "could not read the log after this time to check for an uncertain interval the agent did not get to store ({e}); \
                 the stored intervals do not include this time"
            )),
        }
    }
    let segments: Vec<SegmentRef> = chain
        .into_iter()
        .filter(|s| s.end_offset > base_offset && s.start_offset < stop_offset)
        .collect();
    Ok(RestorePlan {
        source: source.to_string(),
        target,
        generation: g.id.clone(),
        base_db: is_first_base.then_some(m.base_db),
        manifest: m,
        window: w,
        base_key,
        base_offset,
        base_size,
        segments,
        stop_offset,
        stop_time_ms,
        notes,
    })
}

impl SegmentRef {
    /// The segment the walker placed on a run, from the listing.
    pub(crate) fn of(g: &Generation, s: &Span) -> SegmentRef {
        let (key, size, sealed) = match s.which {
            Which::Sealed(i) => (&g.sealed[i].key, g.sealed[i].size, true),
            Which::Tail(i) => (&g.tails[i].key, g.tails[i].size, false),
        };
        SegmentRef {
            key: key.clone(),
            size,
            start_offset: s.start_offset,
            end_offset: s.end_offset,
            first_time_ms: s.first_time_ms,
            end_time_ms: s.end_time_ms,
            sealed,
        }
    }
}

impl SegmentRef {
    /// Opens the segment as a [`SegmentStream`], as long as the object is at this GET (an open
    /// tail may have grown since the listing).
    pub(crate) async fn open(&self, store: &Store) -> Result<SegmentStream, RestoreError> {
        match SegmentStream::open(store, &self.key, self.sealed_mode(), None).await {
            Ok(s) => Ok(s.with_listed_end(self.end_offset)),
            Err(e) if e.is_not_found() => Err(RestoreError::Log {
                key: self.key.to_string(),
                what: "disappeared since the listing (a live agent sealed or pruned it): run the restore again".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

impl From<StreamError> for RestoreError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Store(e) => e.into(),
            StreamError::Format(e) => e.into(),
            StreamError::Short { key, have, len } => RestoreError::Log {
                key,
                what: format!("the store returned {have} bytes, fewer than the object's {len}"),
            },
        }
    }
}

/// A target the window does not reach because an open tail is damaged: named as that (file,
/// byte, last restorable instant), not as a time outside the window, and never restored from
/// the prefix as if it were the latest state. `windows` is sorted by generation and offset.
fn beyond_damage<R>(windows: &[(&Generation, Window, R)], target: Target) -> Option<RestoreError> {
    let reached = |(_, w, _): &(&Generation, Window, R)| match target {
        Target::Latest => false,
        Target::At(t) => w.from_ms <= t && t <= w.to_ms,
        Target::AtOffset(n) | Target::InGeneration { offset: n, .. } => {
            w.from_offset <= n && n <= w.to_offset
        }
    };
    if windows.iter().any(reached) {
        return None;
    }
    // The window the target lies after: the latest that ends before it.
    let (g, _, _) = windows.iter().rev().find(|(_, w, _)| match target {
        Target::Latest => true,
        Target::At(t) => w.to_ms < t,
        Target::AtOffset(n) | Target::InGeneration { offset: n, .. } => w.to_offset < n,
    })?;
    let t = g.tails.iter().find(|t| t.damage.is_some())?;
    Some(RestoreError::Log {
        key: t.key.to_string(),
        what: t.damage_what()?,
    })
}

/// Searches backwards from the last segment that can hold a record within `limit` for the last
/// boundary record within it. A segment starting after the limit is skipped unread; when a
/// candidate holds no boundary (it starts inside a transaction that ends after the limit), the
/// search continues in the one before. Within a segment, blocks are streamed forward until one
/// starts beyond the limit; a block whose last record qualifies is not even decoded, and a
/// record stored in fragments is judged by its final fragment's header alone, so a cut can only
/// fall at the end of one.
async fn find_cut(
    store: &Store,
    chain: &[SegmentRef],
    limit: Limit,
    max_offset: u64,
) -> Result<Option<Cut>, RestoreError> {
    for seg in chain.iter().rev() {
        let beyond = match limit {
            Limit::Time(t) => seg.first_time_ms > t,
            Limit::Offset(n) => seg.start_offset >= n,
        };
        if seg.end_offset == seg.start_offset || beyond {
            continue;
        }
        let mut stream = seg.open(store).await?;
        let mut best = None;
        while let Some(block) = stream.next_block().await? {
            let b = &block.info;
            let beyond = match limit {
                Limit::Time(t) => b.record_count > 0 && b.first_time_ms > t,
                Limit::Offset(n) => b.start_offset >= n,
            };
            // `max_offset` bounds an open tail that grew after the listing was taken.
            if beyond || b.start_offset >= max_offset {
                break;
            }
            if b.record_count == 0 {
                continue;
            }
            let admits = |end: u64, time: u64| end <= max_offset && limit.admits(end, time);
            if !b.end_in_multi && admits(b.end_offset, b.last_time_ms) {
                best = Some(Cut {
                    end_offset: b.end_offset,
                    time_ms: b.last_time_ms,
                });
                continue;
            }
            if b.flags & block_flags::FRAGMENT != 0 {
                continue;
            }
            for item in stream.decode(&block)? {
                if let Item::Record(r) = item {
                    if r.boundary && admits(r.end_offset, r.time_ms) {
                        best = Some(Cut {
                            end_offset: r.end_offset,
                            time_ms: r.time_ms,
                        });
                    }
                }
            }
        }
        if best.is_some() {
            return Ok(best);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::{self, SealedName};
    use flashback_format::segment::Origin;
    use flashback_format::spec::SegmentSpec;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;
    use std::sync::Arc;

    const REPLID: &str = "8f0c2a5b6e1d4c3b9a7f8e6d5c4b3a2918273645";
    const T0: u64 = 1_790_000_000_000;

    fn store() -> Store {
        Store {
            os: Arc::new(InMemory::new()),
            local_root: None,
            encrypted: false,
            url: "memory://".into(),
        }
    }

    async fn put(s: &Store, key: Path, bytes: Vec<u8>) {
        s.os.put(&key, bytes.into()).await.unwrap();
    }

    /// A generation `gen` whose base is at `base_offset`, arrived at `base_time`.
    async fn generation(s: &Store, gen: &str, base_offset: u64, base_time: u64) {
        let m = GenerationManifest {
            source: "src".into(),
            generation: gen.into(),
            replid: REPLID.into(),
            base_offset,
            base_time_ms: base_time,
            base_db: 0,
            base_size: 18,
            rdb_version: 10,
            server: "redis 7.0.15".into(),
            reason: "test".into(),
            previous: None,
            agent_version: "test".into(),
        };
        put(s, layout::manifest_key("src", gen), m.encode()).await;
        put_base(s, gen, base_offset, base_time).await;
    }

    async fn seal(s: &Store, gen: &str, spec: &SegmentSpec, end_time: u64) {
        let (bytes, sum) = spec.build_sealed_with_summary(end_time).unwrap();
        let name = SealedName {
            start_offset: sum.start_offset,
            end_offset: sum.end_offset,
            first_time_ms: sum.first_time_ms,
            end_time_ms: sum.end_time_ms,
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
        };
        put(s, layout::segment_key("src", gen, &name), bytes).await;
    }

    /// An empty RDB, named with its real size and checksum.
    async fn put_base(s: &Store, gen: &str, offset: u64, time_ms: u64) {
        let rdb = b"REDIS0010\xff\0\0\0\0\0\0\0\0".to_vec();
        let (size, crc) = (rdb.len() as u64, crc32c::crc32c(&rdb));
        put(
            s,
            layout::base_key("src", gen, offset, time_ms, size, crc),
            rdb,
        )
        .await;
    }

    async fn tail(s: &Store, gen: &str, spec: &SegmentSpec) {
        put(
            s,
            layout::tail_key("src", gen, spec.header.start_offset),
            spec.build_tail().unwrap(),
        )
        .await;
    }

    fn spec(start: u64, created: u64, origin: Origin) -> SegmentSpec {
        SegmentSpec::new(REPLID, start, created, origin)
    }

    /// gen A: base at offset 100 (T0); seg1: SET a @+1000, MULTI..EXEC @+2000, SET d @+3000;
    /// seg2: SET e @+4000, then MULTI, SET f (no EXEC yet) @+5000 in an open tail.
    async fn fixture() -> (Store, Vec<u64>) {
        let s = store();
        let gen = layout::generation_id(T0);
        generation(&s, &gen, 100, T0).await;
        let mut a = spec(100, T0, Origin::NewGeneration);
        a.command(T0 + 1000, 0, &["SET", "a", "1"]);
        let e_a = a.end_offset();
        a.transaction(T0 + 2000, 0, &[&["SET", "b", "1"], &["SET", "c", "1"]]);
        let e_tx = a.end_offset();
        a.cut(T0 + 2000).command(T0 + 3000, 0, &["SET", "d", "1"]);
        let e_d = a.end_offset();
        seal(&s, &gen, &a, T0 + 3500).await;
        let mut b = spec(e_d, T0 + 3500, Origin::Roll);
        b.command(T0 + 4000, 0, &["SET", "e", "1"]);
        let e_e = b.end_offset();
        b.record(T0 + 5000, 0, false, resp::encode_command(&["MULTI"]))
            .record(
                T0 + 5000,
                0,
                false,
                resp::encode_command(&["SET", "f", "1"]),
            );
        tail(&s, &gen, &b).await;
        (s, vec![e_a, e_tx, e_d, e_e])
    }

    use flashback_format::resp;

    /// Retention kept the first base (a daily point) but pruned the log after it; a later
    /// base anchors the continuous window. The old base is restorable at its own instant.
    #[tokio::test]
    async fn a_kept_base_outside_the_window_is_a_restore_point() {
        let (s, ends) = fixture().await;
        let gen = layout::generation_id(T0);
        put_base(&s, &gen, ends[2], T0 + 3000).await;
        let seg1 = catalog::load_generations(&s, "src").await.unwrap()[0].sealed[0]
            .key
            .clone();
        s.os.delete(&seg1).await.unwrap();

        let p = plan(&s, "src", Target::At(T0)).await.unwrap();
        assert_eq!(
            (p.base_offset, p.stop_offset, p.segments.len()),
            (100, 100, 0)
        );
        assert!(!p.notes.iter().any(|n| n.contains("hole")), "{:?}", p.notes);
        let p = plan(&s, "src", Target::AtOffset(100)).await.unwrap();
        assert_eq!((p.base_offset, p.stop_offset), (100, 100));

        let e = plan(&s, "src", Target::At(T0 + 1000))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("restore point") && e.contains("this exact time only"),
            "{e}"
        );

        let p = plan(&s, "src", Target::At(T0 + 4000)).await.unwrap();
        assert_eq!((p.base_offset, p.stop_offset), (ends[2], ends[3]));
    }

    #[tokio::test]
    async fn at_time_cuts_at_the_last_boundary_at_or_before_it() {
        let (s, ends) = fixture().await;
        let p = plan(&s, "src", Target::At(T0 + 2500)).await.unwrap();
        assert_eq!(
            (p.base_offset, p.stop_offset, p.stop_time_ms),
            (100, ends[1], Some(T0 + 2000))
        );
        assert_eq!(p.segments.len(), 1);
        // T inclusive; one ms earlier leaves the whole transaction out.
        assert_eq!(
            plan(&s, "src", Target::At(T0 + 2000))
                .await
                .unwrap()
                .stop_offset,
            ends[1]
        );
        assert_eq!(
            plan(&s, "src", Target::At(T0 + 1999))
                .await
                .unwrap()
                .stop_offset,
            ends[0]
        );
        let p = plan(&s, "src", Target::At(T0 + 4500)).await.unwrap();
        assert_eq!((p.stop_offset, p.segments.len()), (ends[3], 2));
        assert!(!p.segments[1].sealed);
        // The open MULTI at +5000 is never split: the cut stays after SET e.
        assert_eq!(
            plan(&s, "src", Target::At(T0 + 5000))
                .await
                .unwrap()
                .stop_offset,
            ends[3]
        );
        assert_eq!(
            plan(&s, "src", Target::Latest).await.unwrap().stop_offset,
            ends[3]
        );
        let p = plan(&s, "src", Target::At(T0 + 500)).await.unwrap();
        assert_eq!((p.stop_offset, p.segments.len()), (100, 0));
        assert!(
            p.notes.iter().any(|n| n.contains("base snapshot itself")),
            "{:?}",
            p.notes
        );
        let shown = p.to_string();
        assert!(
            shown.contains("base:") && shown.contains("stop:       offset 100"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn at_offset_rounds_down_to_a_boundary() {
        let (s, ends) = fixture().await;
        assert_eq!(
            plan(&s, "src", Target::AtOffset(ends[1]))
                .await
                .unwrap()
                .stop_offset,
            ends[1]
        );
        assert_eq!(
            plan(&s, "src", Target::AtOffset(ends[1] - 1))
                .await
                .unwrap()
                .stop_offset,
            ends[0]
        );
        assert_eq!(
            plan(&s, "src", Target::AtOffset(ends[3] + 20))
                .await
                .unwrap()
                .stop_offset,
            ends[3]
        );
        assert_eq!(
            plan(&s, "src", Target::AtOffset(100))
                .await
                .unwrap()
                .stop_offset,
            100
        );
    }

    #[tokio::test]
    async fn outside_the_window_prints_every_window() {
        let (s, _) = fixture().await;
        for t in [
            Target::At(T0 - 1),
            Target::At(T0 + 10_000),
            Target::AtOffset(99),
            Target::AtOffset(1_000_000),
        ] {
            let e = plan(&s, "src", t).await.unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, RestoreError::OutsideWindow(_)), "{msg}");
            assert!(
                msg.contains("outside the restorable window") && msg.contains("pick"),
                "{msg}"
            );
            assert!(
                msg.contains(&format_ms(T0)) && msg.contains("offsets 100.."),
                "{msg}"
            );
        }
        let e = plan(&store(), "src", Target::Latest).await.unwrap_err();
        assert!(matches!(e, RestoreError::NothingRestorable { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_transaction_split_across_segments_is_cut_before_its_multi() {
        let s = store();
        let gen = layout::generation_id(T0);
        generation(&s, &gen, 0, T0).await;
        let mut a = spec(0, T0, Origin::NewGeneration);
        a.command(T0 + 10, 0, &["SET", "x", "1"]);
        let before = a.end_offset();
        a.record(T0 + 20, 0, false, resp::encode_command(&["MULTI"]))
            .record(T0 + 20, 0, false, resp::encode_command(&["INCR", "x"]));
        seal(&s, &gen, &a, T0 + 25).await;
        let mut b = spec(a.end_offset(), T0 + 25, Origin::Roll);
        b.record(T0 + 30, 0, true, resp::encode_command(&["EXEC"]));
        seal(&s, &gen, &b, T0 + 40).await;
        // T after the EXEC's segment began, but before the EXEC: search falls back to segment 1.
        assert_eq!(
            plan(&s, "src", Target::At(T0 + 29))
                .await
                .unwrap()
                .stop_offset,
            before
        );
        assert_eq!(
            plan(&s, "src", Target::At(T0 + 30))
                .await
                .unwrap()
                .stop_offset,
            b.end_offset()
        );
    }

    /// A time inside a run of catch-up blocks is refused (it was a note until the trust issue:
    /// DESIGN's "the window is evidence, never hope" makes it exit 1 unless --inexact).
    #[tokio::test]
    async fn a_time_inside_a_catch_up_interval_is_refused_unless_inexact() {
        let s = store();
        let gen = layout::generation_id(T0);
        generation(&s, &gen, 0, T0).await;
        let mut a = spec(0, T0, Origin::NewGeneration);
        a.command(T0 + 1000, 0, &["SET", "a", "1"]).cut(T0 + 2000);
        seal(&s, &gen, &a, T0 + 2000).await;
        // The agent was away from +2000 to +9000; two writes made meanwhile arrive at +9000.
        let mut b = spec(a.end_offset(), T0 + 9000, Origin::Resume);
        b.command(T0 + 9000, 0, &["SET", "b", "1"])
            .command(T0 + 9001, 0, &["SET", "c", "1"])
            .cut_with_flags(T0 + 9001, block_flags::CATCHUP);
        let caught_up = b.end_offset();
        b.command(T0 + 9500, 0, &["SET", "d", "1"]).cut(T0 + 9600);
        seal(&s, &gen, &b, T0 + 9600).await;
        let err = plan(&s, "src", Target::At(T0 + 5000)).await.unwrap_err();
        let RestoreError::Uncertain(u) = &err else {
            panic!("{err}");
        };
        assert_eq!(
            (u.from_ms, u.to_ms, u.from_offset, u.to_offset),
            (T0 + 2000, T0 + 9001, a.end_offset(), caught_up)
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format_ms(T0 + 2000))
                && msg.contains("--at-offset")
                && msg.contains("--inexact"),
            "{msg}"
        );
        let p = plan_with(&s, "src", Target::At(T0 + 5000), true)
            .await
            .unwrap();
        assert_eq!(p.stop_offset, a.end_offset());
        assert!(
            p.notes.iter().any(|n| n.starts_with("INEXACT")),
            "{:?}",
            p.notes
        );
        // Before and after the interval: exact, no note.
        for t in [T0 + 9550, T0 + 1500, T0 + 2000] {
            assert!(
                plan(&s, "src", Target::At(t))
                    .await
                    .unwrap()
                    .notes
                    .is_empty(),
                "{t}"
            );
        }
    }

    /// The intervals the agent stored are refused without reading the log.
    #[tokio::test]
    async fn a_stored_uncertain_interval_is_refused() {
        let s = store();
        let gen = layout::generation_id(T0);
        generation(&s, &gen, 0, T0).await;
        let mut a = spec(0, T0, Origin::NewGeneration);
        a.command(T0 + 1000, 0, &["SET", "a", "1"])
            .command(T0 + 4000, 0, &["SET", "b", "1"])
            .cut(T0 + 5000);
        seal(&s, &gen, &a, T0 + 5000).await;
        let name = layout::UncertainName {
            from_offset: 10,
            to_offset: 20,
            from_ms: T0 + 1000,
            to_ms: T0 + 4000,
        };
        let rec = crate::store::manifest::UncertainRecord {
            from_ms: name.from_ms,
            to_ms: name.to_ms,
            from_offset: 10,
            to_offset: 20,
            records: 1,
            cause: "silence".into(),
        };
        put(&s, layout::uncertain_key("src", &gen, &name), rec.encode()).await;
        match plan(&s, "src", Target::At(T0 + 2000)).await {
            Err(RestoreError::Uncertain(u)) => assert_eq!(u.from_ms, T0 + 1000),
            other => panic!("{other:?}"),
        }
        assert!(plan(&s, "src", Target::At(T0 + 4500)).await.is_ok());
    }

    #[tokio::test]
    async fn offsets_in_two_generations_pick_the_latest_and_a_hole_ends_the_window() {
        let s = store();
        let g1 = layout::generation_id(T0);
        generation(&s, &g1, 0, T0).await;
        let mut a = spec(0, T0, Origin::NewGeneration);
        a.command(T0 + 10, 0, &["SET", "a", "1"]);
        seal(&s, &g1, &a, T0 + 20).await;
        // A hole: this segment does not start where the last one ended.
        let mut h = spec(a.end_offset() + 5, T0 + 30, Origin::Roll);
        h.command(T0 + 40, 0, &["SET", "h", "1"]);
        seal(&s, &g1, &h, T0 + 50).await;
        let g2 = layout::generation_id(T0 + 100);
        generation(&s, &g2, 0, T0 + 100).await;
        let mut b = spec(0, T0 + 100, Origin::NewGeneration);
        b.command(T0 + 110, 0, &["SET", "bb", "1"]);
        seal(&s, &g2, &b, T0 + 120).await;
        let p = plan(&s, "src", Target::AtOffset(a.end_offset()))
            .await
            .unwrap();
        assert_eq!(p.generation, g2);
        assert!(
            p.notes.iter().any(|n| n.contains("2 generations")),
            "{:?}",
            p.notes
        );
        assert!(matches!(
            plan(&s, "src", Target::At(T0 + 45)).await,
            Err(RestoreError::OutsideWindow(_))
        ));
        let p = plan(&s, "src", Target::At(T0 + 15)).await.unwrap();
        assert_eq!(
            (p.generation.as_str(), p.stop_offset),
            (g1.as_str(), a.end_offset())
        );
        assert!(p.notes.iter().any(|n| n.contains("hole")), "{:?}", p.notes);
    }
}
