//! Retention: which objects `flashback prune` may delete, and deleting them in a crash-safe order.
//!
//! [`prune_plan`] is pure (a listing in, a plan out, the clock passed in) so every rule is unit
//! tested without a store; [`execute`] only deletes what a plan lists.
//!
//! Rules, per source:
//! - The continuous window `[now - keep, now]` stays fully restorable: in every generation that
//!   reaches into it, the newest base at or before `now - keep` (the *anchor*) and everything
//!   after it stay; older bases and the segments that end at or before the anchor may go.
//! - Generations that end before the window go whole, unless a kept restore point needs them.
//! - Grandfather-father-son: for each of the last N calendar days, ISO weeks and months (UTC,
//!   counted back from now, the current one included) the newest base of that period is kept.
//!   A base alone is a restore point (its own instant needs no log), so it keeps only itself
//!   and its generation's manifest, not the segments after it (nor the log head, which would
//!   describe a log that is gone).
//! - Never deleted: an open tail (a live or crashed agent's file), the newest generation's last
//!   sealed segment (the capture agent resumes from it), the manifest of a generation that keeps
//!   anything, and generations without a manifest (a base still arriving).
//! - The newest generation is never emptied, even when capture stopped before the window began:
//!   its newest base and what follows stay, so the latest state is always restorable.
//!
//! Deletion order: summaries, segments oldest first, then bases, then manifests. Every intermediate state
//! is a store whose remaining objects restore what they did before, minus what is being deleted;
//! a generation whose manifest is gone is ignored by restore and cleared by the next capture.

use crate::store::catalog::{BaseObject, Generation};
use crate::store::{Store, StoreError};
use crate::timespec::{format_duration_ms, format_ms};
use chrono::{Datelike, TimeZone, Utc};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use std::collections::BTreeMap;
use std::time::Duration;

const DAY_MS: u64 = 86_400_000;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The continuous window: every instant in `[now - keep, now]` stays restorable.
    pub keep: Duration,
    /// Also keep the newest base of each of the last N days (UTC), weeks (ISO, Monday to
    /// Sunday, UTC) and months (UTC).
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

/// Kinds of object, in the order they are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A segment's summary, deleted before its segment: a crash between the two leaves a
    /// segment without a summary (readers summarise it themselves), never a summary without
    /// its segment.
    Summary,
    Segment,
    Base,
    /// The generation's log head, which goes with the generation (after its log and bases,
    /// before the manifest).
    Head,
    /// The generation's stored COMMAND reply, which goes with the generation too.
    Commands,
    Manifest,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Summary => "summary",
            ObjectKind::Segment => "segment",
            ObjectKind::Base => "base",
            ObjectKind::Head => "head",
            ObjectKind::Commands => "commands",
            ObjectKind::Manifest => "manifest",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub generation: String,
    pub kind: ObjectKind,
    pub key: Path,
    pub size: u64,
    pub reason: String,
}

/// A base kept beyond the continuous window by the daily/weekly/monthly schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub generation: String,
    pub offset: u64,
    pub time_ms: u64,
    /// The periods it stands for, e.g. `daily 2026-11-20`, `monthly 2026-11`.
    pub periods: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    pub now_ms: u64,
    /// `now - keep`: the start of the continuous window the policy asks for.
    pub cutoff_ms: u64,
    /// In execution order: segments (oldest first), then bases, then log heads, then manifests.
    pub deletions: Vec<Deletion>,
    /// Restore points outside the continuous window, oldest first.
    pub restore_points: Vec<RestorePoint>,
    /// Where the continuous history kept starts (the anchor base's time; at or before
    /// `cutoff_ms` unless history starts later). None when no generation reaches the window.
    pub window_from_ms: Option<u64>,
    /// The earliest restorable instant after pruning: the oldest restore point or the start of
    /// the continuous history.
    pub earliest_restorable_ms: Option<u64>,
    /// Things the operator should know (capture stopped before the window, incomplete
    /// generations left alone).
    pub notes: Vec<String>,
}

impl PrunePlan {
    pub fn bytes(&self) -> u64 {
        self.deletions.iter().map(|d| d.size).sum()
    }
}

impl std::fmt::Display for PrunePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "continuous window asked for: from {} ({} before now)",
            format_ms(self.cutoff_ms),
            format_duration_ms(self.now_ms.saturating_sub(self.cutoff_ms))
        )?;
        if self.deletions.is_empty() {
            writeln!(f, "nothing to delete")?;
        }
        for d in &self.deletions {
            writeln!(
                f,
                "delete {:<8} {} ({} bytes): {}",
                d.kind.to_string(),
                d.key,
                d.size,
                d.reason
            )?;
        }
        for p in &self.restore_points {
            writeln!(
                f,
                "keep   restore point {} (generation {}, base at offset {}): {}",
                format_ms(p.time_ms),
                p.generation,
                p.offset,
                p.periods.join(", ")
            )?;
        }
        match self.window_from_ms {
            Some(t) => writeln!(f, "keep   continuous history from {}", format_ms(t))?,
            None => writeln!(
                f,
                "keep   no continuous history (no generation reaches the window)"
            )?,
        }
        for n in &self.notes {
            writeln!(f, "note:  {n}")?;
        }
        if let Some(t) = self.earliest_restorable_ms {
            writeln!(f, "earliest restorable time afterwards: {}", format_ms(t))?;
        }
        write!(
            f,
            "{} objects, {} bytes to delete",
            self.deletions.len(),
            self.bytes()
        )
    }
}

/// A calendar period of the GFS schedule: its index (comparable within one kind) and its label.
#[derive(Debug, Clone, Copy)]
enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    fn index(self, ms: u64) -> i64 {
        let days = (ms / DAY_MS) as i64;
        match self {
            Period::Day => days,
            // 1970-01-01 was a Thursday: day -3 is the Monday that starts week 0.
            Period::Week => (days + 3).div_euclid(7),
            Period::Month => match Utc.timestamp_millis_opt(ms as i64).single() {
                Some(t) => t.year() as i64 * 12 + t.month0() as i64,
                None => i64::MAX,
            },
        }
    }

    fn label(self, ms: u64) -> String {
        let Some(t) = Utc.timestamp_millis_opt(ms as i64).single() else {
            return format!("{ms}");
        };
        match self {
            Period::Day => format!("daily {}", t.format("%Y-%m-%d")),
            Period::Week => {
                let w = t.iso_week();
                format!("weekly {}-W{:02}", w.year(), w.week())
            }
            Period::Month => format!("monthly {}", t.format("%Y-%m")),
        }
    }
}

/// Decides what may go. `generations` as [`crate::store::catalog::load_generations`] returns
/// them (oldest first, bases and segments sorted by offset).
pub fn prune_plan(generations: &[Generation], policy: &Policy, now_ms: u64) -> PrunePlan {
    let keep_ms = u64::try_from(policy.keep.as_millis()).unwrap_or(u64::MAX);
    let cutoff_ms = now_ms.saturating_sub(keep_ms);
    let mut notes = Vec::new();

    // Only complete generations are ours to judge; one without a manifest may be a base that
    // is arriving right now.
    let complete: Vec<(usize, &Generation)> = generations
        .iter()
        .enumerate()
        .filter(|(_, g)| g.manifest.is_some() && !g.bases.is_empty())
        .collect();
    for g in generations {
        if g.manifest.is_none() {
            notes.push(format!(
                "generation {} has no manifest (its base is still arriving, or its agent died before it finished): left alone",
                g.id
            ));
        }
    }
    let newest = complete.last().map(|(i, _)| *i);

    // GFS: (generation index, base index) → the periods it stands for.
    let mut gfs: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    for (period, n) in [
        (Period::Day, policy.keep_daily),
        (Period::Week, policy.keep_weekly),
        (Period::Month, policy.keep_monthly),
    ] {
        if n == 0 {
            continue;
        }
        let current = period.index(now_ms);
        let oldest = current - i64::from(n) + 1;
        // The newest base of each period: bases are visited oldest first, so the last one
        // seen in a period wins.
        let mut newest_in: BTreeMap<i64, (usize, usize, u64)> = BTreeMap::new();
        for (gi, g) in &complete {
            for (bi, b) in g.bases.iter().enumerate() {
                let p = period.index(b.time_ms);
                if p < oldest || p > current {
                    continue;
                }
                let e = newest_in.entry(p).or_insert((*gi, bi, b.time_ms));
                if b.time_ms >= e.2 {
                    *e = (*gi, bi, b.time_ms);
                }
            }
        }
        for (gi, bi, t) in newest_in.into_values() {
            gfs.entry((gi, bi)).or_default().push(period.label(t));
        }
    }

    let mut deletions = Vec::new();
    let mut restore_points = Vec::new();
    let mut window_from_ms: Option<u64> = None;
    for (gi, g) in &complete {
        let (gi, g) = (*gi, *g);
        // The same walk restore plans with: prune and restore must never disagree.
        let chain = g.chain();
        let Some(run) = chain.window_run() else {
            continue;
        };
        let w = run.window;
        let is_newest = Some(gi) == newest;
        // The bases on the window's log (not the kept points before it).
        let on_chain = |b: &&BaseObject| run.bases.iter().any(|&i| std::ptr::eq(&g.bases[i], *b));
        // The base from which this generation's kept history runs, if it keeps any.
        let anchor: Option<usize> = if w.to_ms >= cutoff_ms {
            g.bases
                .iter()
                .enumerate()
                .filter(|(_, b)| on_chain(b) && b.time_ms <= cutoff_ms)
                .map(|(i, _)| i)
                .next_back()
                .or_else(|| g.bases.iter().position(|b| on_chain(&b)))
        } else if is_newest {
            notes.push(format!(
                "the newest generation {} ends at {}, before the window starts: capture has not been running; its newest base and everything after it are kept so the latest state stays restorable",
                g.id,
                format_ms(w.to_ms)
            ));
            g.bases
                .iter()
                .enumerate()
                .filter(|(_, b)| on_chain(b))
                .map(|(i, _)| i)
                .next_back()
        } else {
            None
        };
        let anchor_base = anchor.map(|i| &g.bases[i]);
        if let Some(b) = anchor_base {
            window_from_ms = Some(window_from_ms.map_or(b.time_ms, |t| t.min(b.time_ms)));
        }

        let mut keeps_anything = false;
        let mut keeps_log = !g.tails.is_empty();
        for (si, s) in g.sealed.iter().enumerate() {
            let needed = anchor_base
                .is_some_and(|b| s.name.end_offset > b.offset || s.name.start_offset >= b.offset);
            let checkpoint = is_newest && si + 1 == g.sealed.len();
            if needed || checkpoint {
                keeps_anything = true;
                keeps_log = true;
                continue;
            }
            let reason = match anchor_base {
                Some(b) => format!(
                    "its records (offsets {}..{}, {} .. {}) come before the base at {} (offset {}) from which the kept history runs",
                    s.name.start_offset,
                    s.name.end_offset,
                    format_ms(s.name.first_time_ms),
                    format_ms(s.name.end_time_ms),
                    format_ms(b.time_ms),
                    b.offset
                ),
                None => old_generation_reason(g, w.to_ms, cutoff_ms),
            };
            if let Some(o) = g.summary_of(s) {
                deletions.push(Deletion {
                    generation: g.id.clone(),
                    kind: ObjectKind::Summary,
                    key: o.key.clone(),
                    size: o.size,
                    reason: format!(
                        "the summary of the segment of offsets {}..{}, which goes",
                        s.name.start_offset, s.name.end_offset
                    ),
                });
            }
            deletions.push(Deletion {
                generation: g.id.clone(),
                kind: ObjectKind::Segment,
                key: s.key.clone(),
                size: s.size,
                reason,
            });
        }
        if !g.tails.is_empty() {
            keeps_anything = true;
        }
        for (bi, b) in g.bases.iter().enumerate() {
            let in_window = anchor_base.is_some_and(|a| b.offset >= a.offset);
            if let Some(periods) = gfs.get(&(gi, bi)) {
                keeps_anything = true;
                if !in_window {
                    restore_points.push(RestorePoint {
                        generation: g.id.clone(),
                        offset: b.offset,
                        time_ms: b.time_ms,
                        periods: periods.clone(),
                    });
                }
                continue;
            }
            if in_window {
                keeps_anything = true;
                continue;
            }
            let reason = match anchor_base {
                Some(a) => format!(
                    "older than the base at {} (offset {}) from which the kept history runs, and no daily, weekly or monthly restore point",
                    format_ms(a.time_ms),
                    a.offset
                ),
                None => old_generation_reason(g, w.to_ms, cutoff_ms),
            };
            deletions.push(Deletion {
                generation: g.id.clone(),
                kind: ObjectKind::Base,
                key: b.key.clone(),
                size: b.size,
                reason,
            });
        }
        if keeps_anything && !keeps_log {
            // Only restore points stay: the head describes a log that is now deleted, and
            // `verify` would take its end for segments gone missing.
            if let Some((key, size)) = &g.head {
                deletions.push(Deletion {
                    generation: g.id.clone(),
                    kind: ObjectKind::Head,
                    key: key.clone(),
                    size: *size,
                    reason: format!(
                        "generation {} keeps only restore points, not the log it describes",
                        g.id
                    ),
                });
            }
        }
        if !keeps_anything {
            // Summaries of no listed segment (left by a crash) go with their generation.
            for o in &g.summaries {
                let paired = g.sealed.iter().any(|s| {
                    (s.name.start_offset, s.name.end_offset) == (o.start_offset, o.end_offset)
                });
                if !paired {
                    deletions.push(Deletion {
                        generation: g.id.clone(),
                        kind: ObjectKind::Summary,
                        key: o.key.clone(),
                        size: o.size,
                        reason: format!("generation {} keeps nothing else", g.id),
                    });
                }
            }
            if let Some((key, size)) = &g.head {
                deletions.push(Deletion {
                    generation: g.id.clone(),
                    kind: ObjectKind::Head,
                    key: key.clone(),
                    size: *size,
                    reason: format!("generation {} keeps nothing else", g.id),
                });
            }
            if let Some((key, size)) = &g.commands {
                deletions.push(Deletion {
                    generation: g.id.clone(),
                    kind: ObjectKind::Commands,
                    key: key.clone(),
                    size: *size,
                    reason: format!("generation {} keeps nothing else", g.id),
                });
            }
            deletions.push(Deletion {
                generation: g.id.clone(),
                kind: ObjectKind::Manifest,
                key: crate::store::layout::manifest_key(
                    g.manifest.as_ref().map_or("", |m| m.source.as_str()),
                    &g.id,
                ),
                size: 0,
                reason: format!("generation {} keeps nothing else", g.id),
            });
        }
    }
    // Segments oldest first, then bases, then manifests; generation ids and fixed-width names
    // sort by time and offset.
    deletions.sort_by(|a, b| {
        (a.kind, &a.generation, a.key.as_ref()).cmp(&(b.kind, &b.generation, b.key.as_ref()))
    });
    restore_points.sort_by_key(|p| p.time_ms);
    let earliest_restorable_ms = restore_points
        .first()
        .map(|p| p.time_ms)
        .into_iter()
        .chain(window_from_ms)
        .min();
    PrunePlan {
        now_ms,
        cutoff_ms,
        deletions,
        restore_points,
        window_from_ms,
        earliest_restorable_ms,
        notes,
    }
}

fn old_generation_reason(g: &Generation, to_ms: u64, cutoff_ms: u64) -> String {
    format!(
        "generation {} ends at {}, before the window starts ({}), and no restore point needs it",
        g.id,
        format_ms(to_ms),
        format_ms(cutoff_ms)
    )
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("deleting {key}: {source} ({done} of {total} objects deleted; run prune again to finish, the store stays restorable meanwhile)")]
    Delete {
        key: String,
        #[source]
        source: StoreError,
        done: usize,
        total: usize,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub deleted: usize,
    pub bytes: u64,
    /// Already gone when we came to them (another prune, or an agent sealing a tail).
    pub missing: usize,
}

impl std::fmt::Display for PruneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "deleted {} objects ({} bytes)", self.deleted, self.bytes)?;
        if self.missing > 0 {
            write!(f, "; {} were already gone", self.missing)?;
        }
        Ok(())
    }
}

/// Deletes what `plan` lists, in its order (see the module docs for why that order is safe).
/// One at a time, so a failure stops before anything later in the order is touched.
pub async fn execute(store: &Store, plan: &PrunePlan) -> Result<PruneReport, PruneError> {
    let mut report = PruneReport::default();
    let total = plan.deletions.len();
    for (i, d) in plan.deletions.iter().enumerate() {
        match store.os.delete(&d.key).await {
            Ok(()) => {
                report.deleted += 1;
                report.bytes += d.size;
            }
            Err(object_store::Error::NotFound { .. }) => report.missing += 1,
            Err(e) => {
                return Err(PruneError::Delete {
                    key: d.key.to_string(),
                    source: e.into(),
                    done: i,
                    total,
                })
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::{BaseObject, SealedSegment, TailSegment};
    use crate::store::layout::{self, SealedName};
    use crate::store::manifest::GenerationManifest;

    const H: u64 = 3_600_000;
    /// 2026-06-15 00:00:00 UTC, a Monday.
    const MON: u64 = 1_781_481_600_000;

    fn policy(keep_ms: u64) -> Policy {
        Policy {
            keep: Duration::from_millis(keep_ms),
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
        }
    }

    /// A generation built by hand: bases at (offset, time), sealed segments of 100 offsets and
    /// 1 h each from the first base, `n_seg` of them.
    struct G {
        g: Generation,
    }

    impl G {
        fn new(start_ms: u64, base_offset: u64) -> G {
            let id = layout::generation_id(start_ms);
            let manifest = GenerationManifest {
                source: "src".into(),
                generation: id.clone(),
                replid: "r".repeat(40),
                base_offset,
                base_time_ms: start_ms,
                base_db: 0,
                base_size: 10,
                rdb_version: 10,
                server: "redis 7.0.15".into(),
                reason: "test".into(),
                previous: None,
                agent_version: "test".into(),
            };
            let mut g = G {
                g: Generation {
                    id,
                    manifest: Some(manifest),
                    bases: vec![],
                    sealed: vec![],
                    tails: vec![],
                    head: None,
                    commands: None,
                    uncertain: vec![],
                    summaries: vec![],
                },
            };
            g.base(base_offset, start_ms);
            g
        }

        fn base(&mut self, offset: u64, time_ms: u64) -> &mut Self {
            self.g.bases.push(BaseObject {
                offset,
                time_ms,
                key: layout::base_key("src", &self.g.id, offset, time_ms, 10, 0),
                size: 10,
                recorded_size: 10,
                crc32c: 0,
            });
            self.g.bases.sort_by_key(|b| b.offset);
            self
        }

        /// Segments of 100 offsets, one hour each, continuing the chain.
        fn segments(&mut self, n: usize) -> &mut Self {
            for _ in 0..n {
                let (start, t0) = self.end();
                let name = SealedName {
                    start_offset: start,
                    end_offset: start + 100,
                    first_time_ms: t0 + 1,
                    end_time_ms: t0 + H,
                    size: 1000,
                    crc32c: 0,
                };
                self.g.sealed.push(SealedSegment {
                    key: layout::segment_key("src", &self.g.id, &name),
                    name,
                    size: 1000,
                });
            }
            self
        }

        fn tail(&mut self) -> &mut Self {
            let (start, t0) = self.end();
            self.g.tails.push(TailSegment {
                key: layout::tail_key("src", &self.g.id, start),
                size: 100,
                start_offset: start,
                end_offset: start + 10,
                first_time_ms: t0 + 1,
                covered_through_ms: t0 + 60_000,
                torn: false,
                damage: None,
            });
            self
        }

        fn end(&self) -> (u64, u64) {
            match self.g.sealed.last() {
                Some(s) => (s.name.end_offset, s.name.end_time_ms),
                None => {
                    let m = self.g.manifest.as_ref().unwrap();
                    (m.base_offset, m.base_time_ms)
                }
            }
        }

        /// The end of segment `i` (offset, time): where a compaction would put a base.
        fn seg_end(&self, i: usize) -> (u64, u64) {
            let s = &self.g.sealed[i].name;
            (s.end_offset, s.end_time_ms)
        }

        fn build(&self) -> Generation {
            self.g.clone()
        }
    }

    fn deleted(p: &PrunePlan) -> Vec<String> {
        p.deletions.iter().map(|d| d.key.to_string()).collect()
    }

    /// What remains after executing `p`: the listing a second prune would see.
    fn apply(gens: &[Generation], p: &PrunePlan) -> Vec<Generation> {
        let gone: std::collections::HashSet<String> = deleted(p).into_iter().collect();
        let is_gone = |k: &Path| gone.contains(k.as_ref());
        gens.iter()
            .filter_map(|g| {
                let mut g = g.clone();
                if is_gone(&layout::manifest_key("src", &g.id)) {
                    g.manifest = None;
                }
                g.bases.retain(|b| !is_gone(&b.key));
                g.sealed.retain(|s| !is_gone(&s.key));
                if g.head.as_ref().is_some_and(|(k, _)| is_gone(k)) {
                    g.head = None;
                }
                let empty = g.manifest.is_none()
                    && g.head.is_none()
                    && g.bases.is_empty()
                    && g.sealed.is_empty()
                    && g.tails.is_empty();
                (!empty).then_some(g)
            })
            .collect()
    }

    fn assert_idempotent(gens: &[Generation], pol: &Policy, now: u64) -> PrunePlan {
        let p = prune_plan(gens, pol, now);
        let after = apply(gens, &p);
        let again = prune_plan(&after, pol, now);
        assert!(
            again.deletions.is_empty(),
            "a second prune would delete more: {:?}",
            deleted(&again)
        );
        assert_eq!(again.earliest_restorable_ms, p.earliest_restorable_ms);
        assert_eq!(again.window_from_ms, p.window_from_ms);
        p
    }

    #[test]
    fn window_keeps_the_newest_base_before_it_and_everything_after() {
        // Base at MON, 10 hourly segments, a compacted base at the end of segment 3 and
        // another at the end of segment 7, and an open tail.
        let mut g = G::new(MON, 1000);
        g.segments(10).tail();
        let (o3, t3) = g.seg_end(3);
        let (o7, t7) = g.seg_end(7);
        g.base(o3, t3).base(o7, t7);
        let gens = vec![g.build()];
        let now = MON + 11 * H;
        // Window starts 5.5 h ago = MON + 5.5 h: newest base at or before it is the one at t3.
        let p = assert_idempotent(&gens, &policy(11 * H / 2), now);
        assert_eq!(p.cutoff_ms, now - 11 * H / 2);
        assert_eq!(p.window_from_ms, Some(t3));
        assert_eq!(p.earliest_restorable_ms, Some(t3));
        let d = deleted(&p);
        let expect: Vec<String> = gens[0].sealed[..4]
            .iter()
            .map(|s| s.key.to_string())
            .chain([gens[0].bases[0].key.to_string()])
            .collect();
        assert_eq!(d, expect, "segments 0..=3 first, then the first base");
        assert!(p.deletions[..4]
            .iter()
            .all(|d| d.kind == ObjectKind::Segment && d.reason.contains("come before the base")));
        assert_eq!(p.deletions[4].kind, ObjectKind::Base);
        assert_eq!(p.bytes(), 4 * 1000 + 10);
        let shown = p.to_string();
        assert!(shown.contains("5 objects, 4010 bytes to delete"), "{shown}");
        assert!(shown.contains("keep   continuous history from"), "{shown}");
    }

    #[test]
    fn a_window_reaching_before_every_base_keeps_everything() {
        let mut g = G::new(MON, 0);
        g.segments(3).tail();
        let gens = vec![g.build()];
        let p = assert_idempotent(&gens, &policy(7 * 24 * H), MON + 4 * H);
        assert!(p.deletions.is_empty(), "{:?}", deleted(&p));
        assert_eq!(p.window_from_ms, Some(MON));
        assert!(p.to_string().contains("nothing to delete"));
    }

    #[test]
    fn a_base_exactly_at_the_cutoff_is_the_anchor() {
        let mut g = G::new(MON, 0);
        g.segments(4);
        let (o, t) = g.seg_end(1);
        g.base(o, t);
        let gens = vec![g.build()];
        let p = prune_plan(&gens, &policy(MON + 4 * H - t), MON + 4 * H);
        assert_eq!(p.cutoff_ms, t);
        assert_eq!(p.window_from_ms, Some(t));
        assert_eq!(deleted(&p).len(), 3, "segments 0, 1 and the first base");
        // A window starting 1 ms before that base needs the first base and all the log.
        let p = prune_plan(&gens, &policy(MON + 4 * H - t + 1), MON + 4 * H);
        assert!(p.deletions.is_empty(), "{:?}", deleted(&p));
    }

    #[test]
    fn without_a_later_base_nothing_in_the_generation_goes() {
        // One base only (no compaction): its whole log is needed for the window.
        let mut g = G::new(MON, 0);
        g.segments(48);
        let gens = vec![g.build()];
        let p = assert_idempotent(&gens, &policy(H), MON + 48 * H);
        assert!(p.deletions.is_empty(), "{:?}", deleted(&p));
        assert_eq!(p.window_from_ms, Some(MON));
    }

    #[test]
    fn old_generations_go_whole_manifest_last() {
        let mut g1 = G::new(MON, 0);
        g1.segments(3);
        let mut g2 = G::new(MON + 10 * H, 0);
        g2.segments(3);
        let mut g3 = G::new(MON + 20 * H, 500);
        g3.segments(2).tail();
        // g1's agent wrote a log head: it goes with its generation, before the manifest.
        let mut g1 = g1.build();
        g1.head = Some((layout::head_key("src", &g1.id), 180));
        g1.commands = Some((layout::commands_key("src", &g1.id), 90_000));
        let gens = vec![g1, g2.build(), g3.build()];
        let p = assert_idempotent(&gens, &policy(2 * H), MON + 22 * H);
        let kinds: Vec<(ObjectKind, String)> = p
            .deletions
            .iter()
            .map(|d| (d.kind, d.generation.clone()))
            .collect();
        let (a, b) = (gens[0].id.clone(), gens[1].id.clone());
        use ObjectKind::*;
        assert_eq!(
            kinds,
            vec![
                (Segment, a.clone()),
                (Segment, a.clone()),
                (Segment, a.clone()),
                (Segment, b.clone()),
                (Segment, b.clone()),
                (Segment, b.clone()),
                (Base, a.clone()),
                (Base, b.clone()),
                (Head, a.clone()),
                (Commands, a.clone()),
                (Manifest, a.clone()),
                (Manifest, b.clone()),
            ]
        );
        assert_eq!(p.deletions[8].key, layout::head_key("src", &a));
        assert_eq!(p.deletions[9].key, layout::commands_key("src", &a));
        assert_eq!(
            p.deletions[10].key,
            layout::manifest_key("src", &a),
            "the manifest key is the generation's"
        );
        assert!(p.deletions[0].reason.contains("before the window starts"));
        assert_eq!(p.window_from_ms, Some(MON + 20 * H));
        // A generation that still reaches into the window is kept: window from MON + 12 h.
        let p = assert_idempotent(&gens, &policy(10 * H), MON + 22 * H);
        assert!(
            p.deletions.iter().all(|d| d.generation == a),
            "{:?}",
            deleted(&p)
        );
        assert_eq!(p.window_from_ms, Some(MON + 10 * H));
    }

    #[test]
    fn the_newest_generation_is_never_emptied_and_keeps_its_checkpoint() {
        // Capture stopped 30 days ago. The window is empty, but the latest state stays.
        let mut g = G::new(MON, 0);
        g.segments(5);
        let (o, t) = g.seg_end(4);
        g.base(o, t);
        let gens = vec![g.build()];
        let now = MON + 30 * 24 * H;
        let p = assert_idempotent(&gens, &policy(24 * H), now);
        // The first 4 segments and the first base go; the last sealed segment (the agent's
        // resume point, though the newest base is at its end) and the newest base stay.
        let d = deleted(&p);
        assert_eq!(d.len(), 5, "{d:?}");
        assert!(!d.contains(&gens[0].sealed[4].key.to_string()));
        assert!(!d.contains(&gens[0].bases[1].key.to_string()));
        assert_eq!(p.window_from_ms, Some(t));
        assert!(p
            .notes
            .iter()
            .any(|n| n.contains("capture has not been running")));
    }

    #[test]
    fn the_last_sealed_segment_of_the_newest_generation_stays_even_before_the_anchor() {
        // A compacted base at the end of the last sealed segment, and the window starts after
        // it: the segment is not needed for restore, but capture resumes from it.
        let mut g = G::new(MON, 0);
        g.segments(3);
        let (o, t) = g.seg_end(2);
        g.base(o, t).tail();
        let gens = vec![g.build()];
        let p = assert_idempotent(&gens, &policy(H / 2), MON + 4 * H);
        let d = deleted(&p);
        assert_eq!(d.len(), 3, "segments 0 and 1 and the first base: {d:?}");
        assert!(!d.contains(&gens[0].sealed[2].key.to_string()));
    }

    #[test]
    fn tails_are_never_deleted_and_keep_their_generation() {
        // An old generation with a tail a crashed agent left: the tail and the manifest stay.
        let mut g1 = G::new(MON, 0);
        g1.segments(2).tail();
        let mut g2 = G::new(MON + 10 * H, 0);
        g2.segments(2);
        let gens = vec![g1.build(), g2.build()];
        let p = assert_idempotent(&gens, &policy(H), MON + 12 * H);
        let d = deleted(&p);
        assert!(!d.iter().any(|k| k.ends_with(".tail")), "{d:?}");
        assert!(!p.deletions.iter().any(|d| d.kind == ObjectKind::Manifest));
        assert_eq!(
            d.len(),
            3,
            "two segments and the base of the old generation: {d:?}"
        );
    }

    #[test]
    fn generations_without_a_manifest_are_left_alone() {
        let mut g1 = G::new(MON, 0);
        g1.segments(2);
        let mut arriving = G::new(MON + 10 * H, 0).build();
        arriving.manifest = None;
        let gens = vec![g1.build(), arriving];
        let p = prune_plan(&gens, &policy(H), MON + 10 * H + 1000);
        assert!(p.deletions.iter().all(|d| d.generation == gens[0].id));
        assert!(
            p.notes.iter().any(|n| n.contains("no manifest")),
            "{:?}",
            p.notes
        );
        // g1 is the newest complete generation: its newest base and later log stay.
        assert!(p.deletions.is_empty(), "{:?}", deleted(&p));
    }

    /// A day of hourly bases (compactions) for `days` days, one generation.
    fn hourly_bases(days: u64) -> Generation {
        let mut g = G::new(MON, 0);
        g.segments((days * 24) as usize);
        for i in 0..(days * 24) as usize {
            // A base's time is its last record's, a little before its segment's end: the
            // last base of a day falls on that day's last millisecond.
            let (o, t) = g.seg_end(i);
            g.base(o, t - 1);
        }
        g.tail();
        g.build()
    }

    #[test]
    fn daily_keeps_the_newest_base_of_each_of_the_last_n_days() {
        let gens = vec![hourly_bases(10)];
        let now = MON + 10 * 24 * H - 1; // the last ms of day 10
        let pol = Policy {
            keep_daily: 3,
            ..policy(H)
        };
        let p = assert_idempotent(&gens, &pol, now);
        // Yesterday and the day before get restore points; today's newest base is inside the
        // window.
        let points: Vec<(u64, Vec<String>)> = p
            .restore_points
            .iter()
            .map(|r| (r.time_ms, r.periods.clone()))
            .collect();
        assert_eq!(points.len(), 2, "{points:?}");
        // The newest base of a day is the one at 23:00 (end of that day's 23rd segment).
        assert_eq!(points[0].0, MON + 8 * 24 * H - 1);
        assert_eq!(points[0].1, vec!["daily 2026-06-22".to_string()]);
        assert_eq!(points[1].0, MON + 9 * 24 * H - 1);
        assert_eq!(p.earliest_restorable_ms, Some(points[0].0));
        // GFS bases keep no segments: everything before the anchor goes but them.
        let kept_bases = gens[0].bases.len()
            - p.deletions
                .iter()
                .filter(|d| d.kind == ObjectKind::Base)
                .count();
        assert_eq!(
            kept_bases,
            2 + 2,
            "2 restore points + the anchor + the newest"
        );
        let shown = p.to_string();
        assert!(
            shown.contains("keep   restore point") && shown.contains("daily 2026-06-23"),
            "{shown}"
        );
    }

    #[test]
    fn weekly_and_monthly_periods_are_iso_weeks_and_calendar_months() {
        let gens = vec![hourly_bases(40)];
        // 2026-07-24 12:00 UTC, a Friday.
        let now = MON + 39 * 24 * H + 12 * H;
        let pol = Policy {
            keep_weekly: 3,
            keep_monthly: 2,
            ..policy(H)
        };
        let p = assert_idempotent(&gens, &pol, now);
        let labels: Vec<(String, Vec<String>)> = p
            .restore_points
            .iter()
            .map(|r| {
                (
                    crate::timespec::format_rfc3339_ms(r.time_ms),
                    r.periods.clone(),
                )
            })
            .collect();
        // Weeks: this week (W30, its newest base is in the window), W29 ends Sunday 07-19,
        // W28 ends Sunday 07-12. Months: July (in the window), June ends on 06-30.
        assert_eq!(
            labels,
            vec![
                (
                    "2026-06-30T23:59:59.999Z".to_string(),
                    vec!["monthly 2026-06".to_string()]
                ),
                (
                    "2026-07-12T23:59:59.999Z".to_string(),
                    vec!["weekly 2026-W28".to_string()]
                ),
                (
                    "2026-07-19T23:59:59.999Z".to_string(),
                    vec!["weekly 2026-W29".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn one_base_can_stand_for_a_day_a_week_and_a_month() {
        let gens = vec![hourly_bases(15)];
        // Sunday 2026-06-28 is day 13; now is Monday 06-29 12:00 (a new week), window 30 min.
        let now = MON + 14 * 24 * H + 12 * H;
        let pol = Policy {
            keep: Duration::from_millis(H / 2),
            keep_daily: 2,
            keep_weekly: 2,
            keep_monthly: 1,
        };
        let p = assert_idempotent(&gens, &pol, now);
        let last_of_sunday = p
            .restore_points
            .iter()
            .find(|r| r.time_ms == MON + 14 * 24 * H - 1)
            .expect("Sunday's last base is kept");
        assert_eq!(
            last_of_sunday.periods,
            vec![
                "daily 2026-06-28".to_string(),
                "weekly 2026-W26".to_string()
            ]
        );
        // This month's newest base is in the window: no separate monthly restore point.
        assert!(!p
            .restore_points
            .iter()
            .any(|r| r.periods.iter().any(|l| l.starts_with("monthly"))));
    }

    #[test]
    fn gfs_reaches_into_old_generations_and_keeps_their_manifest_only() {
        // An old generation two days back with a compacted base; a new generation today.
        let mut g1 = G::new(MON, 0);
        g1.segments(6);
        let (o, t) = g1.seg_end(3);
        g1.base(o, t);
        let mut g2 = G::new(MON + 2 * 24 * H, 0);
        g2.segments(2).tail();
        let gens = vec![g1.build(), g2.build()];
        let now = MON + 2 * 24 * H + 3 * H;
        let pol = Policy {
            keep_daily: 7,
            ..policy(H)
        };
        let p = assert_idempotent(&gens, &pol, now);
        // Day 0's newest base is g1's compacted one: it and g1's manifest stay, every segment
        // and the first base go.
        assert_eq!(p.restore_points.len(), 1);
        assert_eq!(
            (
                p.restore_points[0].generation.clone(),
                p.restore_points[0].offset
            ),
            (gens[0].id.clone(), o)
        );
        let d = deleted(&p);
        assert_eq!(d.len(), 7, "{d:?}");
        assert!(!p.deletions.iter().any(|d| d.kind == ObjectKind::Manifest));
        assert_eq!(p.earliest_restorable_ms, Some(t));
        assert_eq!(p.window_from_ms, Some(MON + 2 * 24 * H));
    }

    /// An old generation kept only for a restore point keeps no log, so its log head (the
    /// end of a log that no longer exists) goes: `verify` would read it as segments lost.
    #[test]
    fn a_generation_kept_for_a_restore_point_loses_its_log_head() {
        let mut g1 = G::new(MON, 0);
        g1.segments(6);
        let (o, t) = g1.seg_end(3);
        g1.base(o, t);
        let mut g2 = G::new(MON + 2 * 24 * H, 0);
        g2.segments(2).tail();
        let mut gens = vec![g1.build(), g2.build()];
        gens[0].head = Some((layout::head_key("src", &gens[0].id), 180));
        gens[1].head = Some((layout::head_key("src", &gens[1].id), 180));
        let pol = Policy {
            keep_daily: 7,
            ..policy(H)
        };
        let p = assert_idempotent(&gens, &pol, MON + 2 * 24 * H + 3 * H);
        let heads: Vec<&Deletion> = p
            .deletions
            .iter()
            .filter(|d| d.kind == ObjectKind::Head)
            .collect();
        assert_eq!(heads.len(), 1, "{:?}", deleted(&p));
        assert_eq!(heads[0].key, layout::head_key("src", &gens[0].id));
        assert!(
            heads[0].reason.contains("only restore points"),
            "{}",
            heads[0].reason
        );
        assert_eq!(p.restore_points.len(), 1);
        assert!(!p.deletions.iter().any(|d| d.kind == ObjectKind::Manifest));
        // The restore point's generation still restores at that instant, from the walker.
        let after = apply(&gens, &p);
        let c = after[0].chain();
        assert_eq!(
            c.window().map(|w| (w.from_offset, w.to_offset, w.from_ms)),
            Some((o, o, t))
        );
        assert!(c.holes.is_empty());
    }

    #[test]
    fn zero_periods_and_future_bases_are_ignored() {
        let mut g = G::new(MON, 0);
        g.segments(3);
        let (o, t) = g.seg_end(0);
        g.base(o, t);
        // A base stamped in the future (a skewed clock) is neither a restore point nor a reason
        // to keep more.
        g.base(10_000, MON + 100 * 24 * H);
        let gens = vec![g.build()];
        let pol = Policy {
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            ..policy(H)
        };
        let p = prune_plan(&gens, &pol, MON + 3 * H);
        assert!(p.restore_points.is_empty());
    }
}
