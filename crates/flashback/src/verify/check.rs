//! One source's integrity check: the listing sorted into generations, then each generation's
//! objects checked (through `objects`) and its log walked in the order restore reads it, so a
//! problem's impact is the instants restore can still reach, not a guess.

use super::objects::*;
use super::*;
use crate::progress::{Phase, Progress, Unit};
use crate::store::catalog::{BaseObject, Generation, SealedSegment, TailSegment};
use crate::store::chain::{Chain, Hole, Role, Which};
use crate::store::layout::{self, Entry};
use crate::store::Store;
use crate::timespec::format_ms;
use flashback_format::segment::Sealed;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use std::collections::BTreeMap;

/// The objects of one generation, from the listing.
#[derive(Default)]
pub(super) struct Listed {
    pub(super) manifest: Option<Path>,
    pub(super) head: Option<Path>,
    /// The stored COMMAND reply, if any.
    pub(super) commands: Option<Path>,
    pub(super) bases: Vec<BaseObject>,
    pub(super) sealed: Vec<SealedSegment>,
    /// (key, size, start offset)
    pub(super) tails: Vec<(Path, u64, u64)>,
    /// (start offset, when the store last modified it in ms) of every sealed segment.
    pub(super) sealed_modified: Vec<(u64, u64)>,
    /// (key, size) of every uncertain-interval object.
    pub(super) uncertain: Vec<(Path, u64)>,
    /// (key, start offset, end offset) of every segment summary.
    pub(super) summaries: Vec<(Path, u64, u64)>,
}

/// The integrity half of verify, for one source.
pub async fn check_source(store: &Store, name: &str) -> SourceReport {
    check_source_observed(store, name, &Progress::new()).await
}

/// [`check_source`], reporting the bytes read (of all the source's listed bytes) to `progress`
/// as its check phase.
pub async fn check_source_observed(store: &Store, name: &str, progress: &Progress) -> SourceReport {
    let mut report = SourceReport {
        name: name.to_string(),
        generations: vec![],
        problems: vec![],
        warnings: vec![],
        drill: None,
    };
    let prefix = layout::generations_prefix(name);
    let listed_ms = crate::now_ms();
    let objects: Vec<_> = match store.os.list(Some(&prefix)).try_collect().await {
        Ok(o) => o,
        Err(e) => {
            report.problems.push(Problem {
                key: prefix.to_string(),
                offset: None,
                kind: Kind::Unreadable,
                message: format!("cannot list the source's objects: {e}"),
                impact: "nothing of this source could be checked".into(),
                restorable_through_ms: None,
            });
            return report;
        }
    };
    if objects.is_empty() {
        report.warnings.push(Problem {
            key: prefix.to_string(),
            offset: None,
            kind: Kind::Missing,
            message:
                "nothing captured yet (capture starting, or waiting for the primary's snapshot?)"
                    .into(),
            impact: "nothing of this source is restorable".into(),
            restorable_through_ms: None,
        });
    }
    progress.begin(
        Phase::Check,
        Unit::Bytes,
        Some(objects.iter().map(|o| o.size).sum()),
    );
    let mut gens: BTreeMap<String, Listed> = BTreeMap::new();
    for o in objects {
        let Some((gen, entry)) = layout::parse_key(name, &o.location) else {
            continue;
        };
        let g = gens.entry(gen).or_default();
        match entry {
            Entry::Manifest => g.manifest = Some(o.location),
            Entry::Head => g.head = Some(o.location),
            Entry::Commands => g.commands = Some(o.location),
            e @ Entry::Base { .. } => g.bases.extend(BaseObject::listed(&o, &e)),
            Entry::Sealed(n) => {
                let modified = u64::try_from(o.last_modified.timestamp_millis()).unwrap_or(0);
                g.sealed_modified.push((n.start_offset, modified));
                g.sealed.push(SealedSegment {
                    name: n,
                    key: o.location,
                    size: o.size,
                })
            }
            Entry::Tail { start_offset } => g.tails.push((o.location, o.size, start_offset)),
            Entry::Uncertain(_) => g.uncertain.push((o.location, o.size)),
            Entry::Summary {
                start_offset,
                end_offset,
            } => g.summaries.push((o.location, start_offset, end_offset)),
        }
    }
    let agent_live = agent_lease_live(store, name, listed_ms).await;
    let newest = gens.keys().next_back().cloned();
    for (id, mut listed) in gens {
        listed.sealed_modified.sort_unstable();
        // Only the newest generation: the uploader finishes one before it starts the next.
        let uploading_from = if newest.as_ref() == Some(&id) {
            uploading_from(agent_live, listed_ms, &listed.sealed_modified)
        } else {
            None
        };
        listed.bases.sort_by_key(|b| b.offset);
        listed.sealed.sort_by_key(|s| s.name);
        listed.tails.sort_by_key(|t| t.2);
        let before = report.problems.len();
        let mut c = GenCheck {
            store,
            source: name,
            gen: id,
            report: &mut report,
            counts: GenerationReport::default(),
            uploading_from,
            progress,
        };
        c.run(listed).await;
        let mut counts = c.counts;
        counts.ok = report.problems.len() == before;
        report.generations.push(counts);
    }
    progress.end();
    report
}

/// Checks one generation, pushing its problems into the source's report.
pub(super) struct GenCheck<'a> {
    pub(super) store: &'a Store,
    pub(super) source: &'a str,
    pub(super) gen: String,
    pub(super) report: &'a mut SourceReport,
    pub(super) counts: GenerationReport,
    /// A hole before a segment starting at or after this offset is an upload in progress
    /// ([`uploading_from`]).
    pub(super) uploading_from: Option<u64>,
    /// Bytes read go here too, for the check phase's progress.
    pub(super) progress: &'a Progress,
}

/// How far one run of a generation's log is intact, in restore's order.
#[derive(Default)]
pub(super) struct RunState {
    /// First record time of the last good block with records: restore at T reads on to the
    /// first block after T, so instants before this time never touch what comes after.
    pub(super) last_good_first_ms: Option<u64>,
    /// Set at the first break: up to which instant the run still restores.
    pub(super) broken: Option<Option<u64>>,
}

impl GenCheck<'_> {
    pub(super) async fn run(&mut self, listed: Listed) {
        self.counts.id = self.gen.clone();
        self.counts.bases = listed.bases.len();
        self.counts.sealed_segments = listed.sealed.len();
        self.counts.tails = listed.tails.len();
        let manifest = match &listed.manifest {
            Some(key) => self.read_manifest(key).await,
            None => {
                let key = layout::manifest_key(self.source, &self.gen).to_string();
                if listed.sealed.is_empty() && listed.tails.is_empty() {
                    self.report.warnings.push(Problem {
                        key,
                        offset: None,
                        kind: Kind::Missing,
                        message: "no manifest: the base snapshot never finished arriving (or is arriving now)".into(),
                        impact: format!("generation {} is not restorable; capture removes it when it restarts", self.gen),
                        restorable_through_ms: None,
                    });
                } else {
                    self.problem(
                        key,
                        Failure::new(Kind::Missing, None, "no manifest, yet the generation has segments: it was deleted"),
                        format!("no instant of generation {} can be restored (restore needs the manifest to find the base)", self.gen),
                        None,
                    );
                }
                None
            }
        };
        self.check_bases(&listed.bases, manifest.as_ref()).await;
        // Tails first: the walk needs to know where each ends, which only a scan tells.
        let mut tails = Vec::new();
        let mut tail_scans = Vec::new();
        for (key, size, start) in &listed.tails {
            let scan = self.scan(key, *size, Sealed::No).await;
            if matches!(&scan.failure, Some(f) if f.kind == Kind::Missing) {
                // A live agent sealed it since the listing: what it held is in a sealed
                // segment that the next run of verify will read. Not damage.
                continue;
            }
            let (first_ms, end, through) = match (&scan.summary, &scan.header) {
                (Some(s), h) => (
                    s.first_time_ms,
                    s.end_offset,
                    s.end_time_ms.max(h.as_ref().map_or(0, |h| h.created_ms)),
                ),
                (None, _) => (0, *start, 0),
            };
            tails.push(TailSegment {
                key: key.clone(),
                size: *size,
                start_offset: *start,
                end_offset: end,
                first_time_ms: first_ms,
                covered_through_ms: through,
                torn: scan.torn.is_some(),
                // Damage is this scan's failure, reported (and bounding its run) below; the
                // walker sees the intact prefix the summary describes.
                damage: None,
            });
            tail_scans.push(scan);
        }
        let gen = Generation {
            id: self.gen.clone(),
            manifest: manifest.clone(),
            bases: listed.bases.clone(),
            sealed: listed.sealed.clone(),
            tails,
            head: None,
            commands: None,
            // Not part of the chain: checked on their own below.
            uncertain: vec![],
            summaries: vec![],
        };
        // The walk restore plans with: what each segment is for, where the holes are.
        let walk = Chain::of(&gen);
        let mut runs: Vec<RunState> = walk.runs.iter().map(|_| RunState::default()).collect();
        // Damage past an unbridged hole is charged to the last run, whose bound the hole sets.
        let last_run = walk.runs.len().checked_sub(1);
        let run_of = |which: Which| match walk.role(which) {
            Some(Role::Needed(r)) => Some(Some(r)),
            Some(Role::Unreachable) => Some(None),
            _ => None,
        };
        // (run the problem bounds, problem index)
        let mut log_problems: Vec<(Option<usize>, usize)> = Vec::new();
        for (i, s) in listed.sealed.iter().enumerate() {
            let n = &s.name;
            let scan = self.scan(&s.key, s.size, Sealed::Yes).await;
            // Cheaper to explain than whatever the scan tripped on: the object is not the
            // size it was written at. The scan still ran, for how far the log is good.
            let mut failure = size_mismatch(s.size, n.size);
            if failure.is_none() {
                failure = scan.failure;
                if let Some(f) = failure.as_mut() {
                    // A sealed segment that does not end with its footer magic lost its end.
                    if f.kind == Kind::Corrupt && !self.ends_with_footer_magic(&s.key, s.size).await
                    {
                        f.kind = Kind::Truncated;
                        f.what = format!(
                            "{} (the object does not end with the footer, so it was cut short)",
                            f.what
                        );
                    }
                }
            }
            if failure.is_none() {
                failure = name_mismatch(n, scan.header.as_ref(), scan.summary.as_ref())
                    .or_else(|| crc_mismatch(scan.crc32c, n.crc32c));
            }
            let Some(run) = run_of(Which::Sealed(i)) else {
                if let Some(f) = failure {
                    self.problem(s.key.to_string(), f, UNNEEDED.into(), None);
                }
                continue;
            };
            if let Some(r) = run {
                runs[r].advance_good(scan.last_good_first_ms);
            }
            if let Some(f) = failure {
                if let Some(r) = run {
                    runs[r].break_here();
                }
                let i = self.problem(s.key.to_string(), f, String::new(), None);
                log_problems.push((run.or(last_run), i));
            }
        }
        for (i, scan) in tail_scans.into_iter().enumerate() {
            let t = &gen.tails[i];
            let Some(run) = run_of(Which::Tail(i)) else {
                self.report.warnings.push(Problem {
                    key: t.key.to_string(),
                    offset: None,
                    kind: Kind::Leftover,
                    message: "an open tail whose data sealed segments already hold (the agent died while sealing)".into(),
                    impact: "none: restore reads the sealed copy; capture removes the tail when it restarts".into(),
                    restorable_through_ms: None,
                });
                continue;
            };
            if let Some(reason) = &scan.torn {
                // The scanner says "byte <n>: <why>"; the offset gets its own field.
                let (offset, why) = match reason
                    .strip_prefix("byte ")
                    .and_then(|r| r.split_once(": "))
                {
                    Some((n, why)) => (n.parse().ok(), why),
                    None => (None, reason.as_str()),
                };
                self.report.warnings.push(Problem {
                    key: t.key.to_string(),
                    offset,
                    kind: Kind::Torn,
                    message: format!("the open tail ends in a partly written block: {why}"),
                    impact: "none: restore ignores the partial bytes (the agent stopped mid-write, or is writing now)".into(),
                    restorable_through_ms: None,
                });
            }
            let failure = match scan.failure {
                Some(f) => Some(f),
                None => name_mismatch_tail(t.start_offset, scan.header.as_ref()),
            };
            if let Some(r) = run {
                runs[r].advance_good(scan.last_good_first_ms);
            }
            if let Some(f) = failure {
                if let Some(r) = run {
                    // A damaged tail's intact prefix still restores, through its last block.
                    if runs[r].broken.is_none() && scan.damaged_through_ms.is_some() {
                        runs[r].broken = Some(scan.damaged_through_ms);
                    }
                    runs[r].break_here();
                }
                let i = self.problem(t.key.to_string(), f, String::new(), None);
                log_problems.push((run.or(last_run), i));
            }
        }
        for h in &walk.holes {
            // At a hole restore stops cleanly: every instant of the run before it is reachable.
            let state = &mut runs[h.run];
            if state.broken.is_none() {
                state.broken = Some(Some(h.from_ms));
            }
            if let Some(i) = self.hole(h) {
                log_problems.push((Some(h.run), i));
            }
        }
        if let Some(key) = &listed.head {
            if let Some(i) = self.check_head(key, &walk, &runs).await {
                log_problems.push((last_run, i));
            }
        }
        for (key, _) in &listed.uncertain {
            self.check_uncertain(key).await;
        }
        for (key, start, end) in &listed.summaries {
            let has_segment = listed
                .sealed
                .iter()
                .any(|s| s.name.start_offset == *start && s.name.end_offset == *end);
            self.check_summary(key, *start, *end, has_segment).await;
        }
        if let Some(key) = &listed.commands {
            self.check_commands(key).await;
        }
        // Every log problem of a run gets the same impact: the run's first break bounds it,
        // and a later run (a base past a hole) restores again from its own start.
        for (run, i) in log_problems {
            let (through, resumes) = match run {
                Some(r) => (
                    runs[r].broken.flatten(),
                    walk.runs.get(r + 1).map(|n| n.window),
                ),
                None => (None, None),
            };
            let impact = match (through, resumes) {
                (Some(t), None) => format!(
                    "instants of generation {} up to {} still restore; later ones cannot",
                    self.gen,
                    format_ms(t)
                ),
                (None, None) => format!("no instant of generation {} can be restored", self.gen),
                (Some(t), Some(n)) => format!(
                    "instants of generation {} up to {} still restore, and again from {} (the base at offset {}) on; those between cannot",
                    self.gen,
                    format_ms(t),
                    format_ms(n.from_ms),
                    n.from_offset
                ),
                (None, Some(n)) => format!(
                    "instants of generation {} before {} cannot be restored; from {} (the base at offset {}) on they restore",
                    self.gen,
                    format_ms(n.from_ms),
                    format_ms(n.from_ms),
                    n.from_offset
                ),
            };
            let p = &mut self.report.problems[i];
            if p.impact.is_empty() {
                p.impact = impact;
                p.restorable_through_ms = through;
            }
        }
    }

    /// Records a problem; returns its index in the report.
    pub(super) fn problem(
        &mut self,
        key: String,
        f: Failure,
        impact: String,
        restorable_through_ms: Option<u64>,
    ) -> usize {
        self.report.problems.push(Problem {
            key,
            offset: f.offset,
            kind: f.kind,
            message: f.what,
            impact,
            restorable_through_ms,
        });
        self.report.problems.len() - 1
    }

    /// Reports a hole the walk found: a warning while an upload is filling it, else a
    /// problem (returned) whose impact the caller fills in.
    pub(super) fn hole(&mut self, h: &Hole) -> Option<usize> {
        let key = format!(
            "{}/{:016x}-*.seg",
            layout::segments_prefix(self.source, &self.gen),
            h.from_offset
        );
        let what = format!(
            "no segment holds offsets {}..{}: the log has a hole between {} (the data before it ends) and {} (the next segment starts)",
            h.from_offset,
            h.to_offset,
            format_ms(h.from_ms),
            if h.to_ms == 0 { "an unknown time".to_string() } else { format_ms(h.to_ms) },
        );
        if self.uploading_from.is_some_and(|from| h.to_offset >= from) {
            self.report.warnings.push(Problem {
                key,
                offset: None,
                kind: Kind::Missing,
                message: format!(
                    "{what}; the agent is uploading several segments at once and the later ones arrived first (its lease is live, and every segment after the hole arrived in the last {} s): run verify again if it persists",
                    UPLOAD_GRACE.as_secs()
                ),
                impact: "none once the upload completes; until then restore stops its window at the hole".into(),
                restorable_through_ms: None,
            });
            return None;
        }
        Some(self.problem(
            key,
            Failure::new(Kind::Missing, None, what),
            String::new(),
            None,
        ))
    }
}

impl RunState {
    pub(super) fn advance_good(&mut self, first_ms: Option<u64>) {
        if self.broken.is_none() && first_ms.is_some() {
            self.last_good_first_ms = first_ms;
        }
    }

    /// Damage inside an object: restore reads on to the first block after its cut, so only
    /// the instants before the last good block's first record are safe.
    pub(super) fn break_here(&mut self) {
        if self.broken.is_none() {
            self.broken = Some(self.last_good_first_ms.map(|t| t.saturating_sub(1)));
        }
    }
}

/// How recent every segment after a hole must be for the hole to count as an upload in
/// progress. An uploader batch completes in well under a second per object; the margin covers
/// a request retried against a slow store (the client retries for up to 60 s) and clock skew
/// between this host and the store. A hole older than this is reported as missing.
const UPLOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// An agent uploading to an object store puts several segments at once (`--upload-concurrency`)
/// and commits them in order, so for the length of a batch segment k+1 can be in the store
/// before k: a hole that fills itself. Seen from a listing it is told from a lost segment by
/// three things together: the source's agent holds a live lease (`ship::lease`), the hole
/// is in the newest generation (checked by the caller), and every segment from the one after
/// the hole to the end of the generation arrived within [`UPLOAD_GRACE`] of the listing. A real
/// hole fails the last test once the grace has passed, or at once when older segments follow it.
///
/// `segments`: (start offset, last modified ms) sorted by offset. Returns the offset from
/// which every segment is that young: a hole before a segment starting there or later is an
/// upload in progress.
pub(super) fn uploading_from(
    agent_live: bool,
    listed_ms: u64,
    segments: &[(u64, u64)],
) -> Option<u64> {
    if !agent_live {
        return None;
    }
    let grace = UPLOAD_GRACE.as_millis() as u64;
    segments
        .iter()
        .rev()
        .take_while(|(_, modified)| modified.saturating_add(grace) > listed_ms)
        .last()
        .map(|(start, _)| *start)
}

/// Whether an agent holds the source's lease now (renewed less than `lease::STALE_AFTER` ago,
/// by its own clock, as an agent deciding on a takeover judges it). A local store has no lease:
/// its agent writes in place and never leaves a hole. An unreadable lease counts as no agent,
/// so a hole is reported rather than explained away.
pub(super) async fn agent_lease_live(store: &Store, source: &str, now_ms: u64) -> bool {
    let Ok(got) = store.os.get(&layout::lease_key(source)).await else {
        return false;
    };
    let Ok(bytes) = got.bytes().await else {
        return false;
    };
    match serde_json::from_slice::<crate::ship::lease::LeaseBody>(&bytes) {
        Ok(l) => {
            now_ms.saturating_sub(l.renewed_ms) < crate::ship::lease::STALE_AFTER.as_millis() as u64
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::SealedName;
    use crate::store::manifest::{GenerationManifest, LogHead};
    use flashback_format::segment::Origin;
    use flashback_format::spec::SegmentSpec;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    const REPLID: &str = "8f0c2a5b6e1d4c3b9a7f8e6d5c4b3a2918273645";
    const T0: u64 = 1_790_000_000_000;
    const GEN: &str = "000001a0b2c3d4e5";

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

    /// An empty RDB (CRC 0: written with `rdbchecksum no`), named with its size and crc32c.
    async fn base(s: &Store, offset: u64, time_ms: u64) {
        let rdb = b"REDIS0010\xff\0\0\0\0\0\0\0\0".to_vec();
        let (size, crc) = (rdb.len() as u64, crc32c::crc32c(&rdb));
        put(
            s,
            layout::base_key("src", GEN, offset, time_ms, size, crc),
            rdb,
        )
        .await;
    }

    /// Four sealed segments of one SET each, chained from offset 0 (record times T0+10..40 s);
    /// returns their (start, end) offsets, after putting the ones `keep` says.
    async fn log(s: &Store, keep: [bool; 4]) -> Vec<(u64, u64)> {
        let m = GenerationManifest {
            source: "src".into(),
            generation: GEN.into(),
            replid: REPLID.into(),
            base_offset: 0,
            base_time_ms: T0,
            base_db: 0,
            base_size: 18,
            rdb_version: 10,
            server: "redis 7.0.15".into(),
            reason: "test".into(),
            previous: None,
            agent_version: "test".into(),
        };
        put(s, layout::manifest_key("src", GEN), m.encode()).await;
        let mut start = 0;
        let mut spans = Vec::new();
        for (i, keep) in keep.into_iter().enumerate() {
            let t = T0 + (i as u64 + 1) * 10_000;
            let mut spec = SegmentSpec::new(REPLID, start, t - 5_000, Origin::Roll);
            spec.command(t, 0, &["SET", "k", "v"]);
            let (bytes, sum) = spec.build_sealed_with_summary(t + 1_000).unwrap();
            let name = SealedName {
                start_offset: sum.start_offset,
                end_offset: sum.end_offset,
                first_time_ms: sum.first_time_ms,
                end_time_ms: sum.end_time_ms,
                size: bytes.len() as u64,
                crc32c: crc32c::crc32c(&bytes),
            };
            if keep {
                put(s, layout::segment_key("src", GEN, &name), bytes).await;
            }
            spans.push((sum.start_offset, sum.end_offset));
            start = sum.end_offset;
        }
        spans
    }

    async fn head(s: &Store, end_offset: u64) -> Vec<u8> {
        let h = LogHead {
            source: "src".into(),
            generation: GEN.into(),
            end_offset,
            end_time_ms: T0 + 41_000,
            segment: "x.seg".into(),
            written_ms: T0 + 41_000,
        };
        let bytes = h.encode();
        put(s, layout::head_key("src", GEN), bytes.clone()).await;
        bytes
    }

    /// What a prune leaves: the first base kept as a daily point, the log up to a later base
    /// deleted. Not "missing" anything.
    #[tokio::test]
    async fn a_kept_point_before_the_window_is_not_a_hole() {
        let s = store();
        let spans = log(&s, [false, false, true, true]).await;
        base(&s, 0, T0).await;
        base(&s, spans[2].0, T0 + 25_000).await;
        head(&s, spans[3].1).await;
        let r = check_source(&s, "src").await;
        assert!(r.problems.is_empty(), "{:#?}", r.problems);
        assert!(r.warnings.is_empty(), "{:#?}", r.warnings);
    }

    /// A lost segment between two bases: instants before it and from the later base on still
    /// restore, and the report says both.
    #[tokio::test]
    async fn a_hole_bridged_by_a_later_base_spoils_only_the_instants_between() {
        let s = store();
        let spans = log(&s, [true, false, true, true]).await;
        base(&s, 0, T0).await;
        base(&s, spans[2].1, T0 + 31_000).await;
        let r = check_source(&s, "src").await;
        assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
        let p = &r.problems[0];
        assert_eq!(p.kind, Kind::Missing);
        assert!(
            p.message
                .contains(&format!("offsets {}..{}", spans[1].0, spans[1].1)),
            "{}",
            p.message
        );
        assert!(
            p.impact.contains("and again from")
                && p.impact.contains(&format!("offset {}", spans[2].1)),
            "{}",
            p.impact
        );
        assert_eq!(p.restorable_through_ms, Some(T0 + 11_000));
    }

    /// A damaged log head is damage (exit 1), named with its byte; one beside a log that a
    /// prune deleted whole (only a restore point kept) is a warning.
    #[tokio::test]
    async fn a_damaged_log_head_is_a_problem_and_one_beside_no_log_a_warning() {
        let s = store();
        let spans = log(&s, [true, true, true, true]).await;
        base(&s, 0, T0).await;
        let mut bytes = head(&s, spans[3].1).await;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        put(&s, layout::head_key("src", GEN), bytes).await;
        let r = check_source(&s, "src").await;
        assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
        let p = &r.problems[0];
        assert_eq!(
            (p.key.as_str(), p.kind),
            (layout::head_key("src", GEN).as_ref(), Kind::Corrupt)
        );
        assert!(p.offset.is_some(), "{p:#?}");

        let s = store();
        let spans = log(&s, [false, false, false, false]).await;
        base(&s, 0, T0).await;
        head(&s, spans[3].1).await;
        let r = check_source(&s, "src").await;
        assert!(r.problems.is_empty(), "{:#?}", r.problems);
        assert_eq!(
            r.warnings.iter().map(|w| w.kind).collect::<Vec<_>>(),
            [Kind::Leftover]
        );
    }

    /// A hole followed only by fresh segments while the agent is live is an upload in
    /// progress; an old segment after the hole, a dead agent, or the grace passing make it a
    /// real hole again.
    #[test]
    fn a_hole_before_fresh_segments_of_a_live_agent_is_an_upload_in_progress() {
        let now = 1_800_000_000_000u64;
        let grace = UPLOAD_GRACE.as_millis() as u64;
        let fresh = now - 2_000;
        let old = now - grace - 1;
        // Segments 0..100 (old), then a hole at 100..200, then 200.. and 300.. just arrived.
        let segs = [(0, old), (200, fresh), (300, now - 10)];
        assert_eq!(uploading_from(true, now, &segs), Some(200));
        // Same listing, no live agent: nobody is going to fill it.
        assert_eq!(uploading_from(false, now, &segs), None);
        // The grace has passed: a hole that is still there is missing data.
        assert_eq!(uploading_from(true, now + grace, &segs), None);
        // An old segment after the hole: the hole is older than any batch.
        let segs = [(0, old), (200, old), (300, fresh)];
        assert_eq!(uploading_from(true, now, &segs), Some(300));
        let hole_before = |start: u64| uploading_from(true, now, &segs).is_some_and(|f| start >= f);
        assert!(!hole_before(200), "a hole before an old segment is real");
        assert!(hole_before(300));
        assert_eq!(uploading_from(true, now, &[]), None);
    }
}
