//! `flashback verify`: reads everything a restore depends on, then proves a restore works.
//!
//! **Integrity.** For every generation of a source: the manifest decodes; every base is whole
//! (the size the manifest recorded, the RDB's own CRC-64); every segment parses in its mode
//! (sealed, or open tail) and every block decodes (checksums, zstd, the record chain); the
//! segments chain, as restore walks them ([`crate::store::chain`]), without a hole, each
//! agreeing with its name (a base kept as a restore point before the window needs no log, so
//! the log a prune deleted before the window is no hole); and the log head decodes and the
//! listing reaches it. Every base's and sealed segment's name records its size and the crc32c of all its
//! bytes (`store::layout`): the listed size must be the recorded one, and the bytes read must
//! have that checksum, which also catches damage the formats' own checks cannot see (a byte
//! in an RDB's unchecked padding, a valid object swapped in under another's name). Objects are streamed, one block in memory at a time: a base can be gigabytes and a
//! segment can hold a 512 MB record. Reading everything, rather than trusting the listing as
//! `info` does, is the point: a flipped bit shows only when the bytes are read.
//!
//! Each problem names the object, the byte offset where known, what is wrong, and what it
//! means for restore: up to which instant the generation still restores. That bound follows
//! what restore actually reads: to cut at T it reads on to the first block after T, so a bad
//! block also spoils the instants since the start of the good block before it.
//!
//! **Drill.** A real restore (plan + engine) into a private redis-server, timed from the plan
//! to a server answering with the whole dataset: the recovery time measured, not estimated.
//!
//! The report types are the `--json` schema (`docs/cli.md`, [`SCHEMA_VERSION`]); the text
//! output is rendered from them too.
//!
//! Size: over ~600 lines because it still holds integrity check, drill and report; to split into verify/{check,drill,report}.rs; the split is issue 9's
//! (a house others can carry on), deferred so this round could land the trust and durability work.

use crate::client::Client;
use crate::redis_server::{RedisServer, ServerBinary, ServerOptions};
use crate::restore::{self, engine, RestoreError, Target};
use crate::store::catalog::{BaseObject, Generation, SealedSegment, TailSegment};
use crate::store::chain::{Chain, Hole, Role, Which};
use crate::store::layout::{self, Entry};
use crate::store::manifest::{GenerationManifest, LogHead};
use crate::store::stream::{SegmentStream, StreamError};
use crate::store::{Store, StoreError};
use crate::timespec::{format_ms, format_rfc3339_ms};
use flashback_format::segment::{self, Item, Sealed, SegmentHeader, SegmentSummary};
use flashback_format::{rdb, Error as FormatError};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// The impact of damage to an object no restore reads.
const UNNEEDED: &str =
    "none: no restore reads it (its data is before the oldest base); prune deletes it";

/// The `"schema"` number at the top of `flashback verify --json`.
pub const SCHEMA_VERSION: u32 = 1;

/// What is wrong with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Not in the store: a listed object vanished, a generation lost its manifest or base, or
    /// no segment holds a range of offsets (a hole in the log).
    Missing,
    /// Shorter than it must be.
    Truncated,
    /// Bytes that fail a checksum or a format rule, or disagree with the object's name.
    Corrupt,
    /// Written by a newer flashback than this one.
    Version,
    /// The store answered with an error.
    Unreadable,
    /// Warning only: an open tail ends in a partly written block (the agent stopped mid-write,
    /// or is writing now). Restore ignores those bytes.
    Torn,
    /// Warning only: an open tail left next to the sealed segment that holds its data (the
    /// agent died between sealing and removing it). Restore reads the sealed one.
    Leftover,
    /// The restore drill failed.
    Drill,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Truncated => "truncated",
            Kind::Corrupt => "corrupt",
            Kind::Version => "version",
            Kind::Unreadable => "unreadable",
            Kind::Torn => "torn",
            Kind::Leftover => "leftover",
            Kind::Drill => "drill",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The object's key in the store; for a hole, the name pattern of the missing segment.
    pub key: String,
    /// The byte offset in the object where the damage starts, when known.
    pub offset: Option<u64>,
    pub kind: Kind,
    /// What is wrong.
    pub message: String,
    /// What it means for restore, in words.
    pub impact: String,
    /// Every instant of the generation up to and including this time still restores; null
    /// when the problem leaves none of it restorable, or is not about one generation's log.
    pub restorable_through_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GenerationReport {
    pub id: String,
    pub bases: usize,
    pub sealed_segments: usize,
    pub tails: usize,
    /// Blocks and records decoded.
    pub blocks: u64,
    pub records: u64,
    /// Bytes read from the store.
    pub bytes: u64,
    /// No problem was found in this generation.
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbKeys {
    pub db: u32,
    pub keys: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drill {
    pub generation: String,
    /// The instant restored: `--at`, or the end of the latest window.
    pub at_ms: u64,
    pub at: String,
    /// The replication offset the restore stopped at.
    pub stop_offset: u64,
    /// Wall time from the start of planning to a server answering with the whole dataset,
    /// including starting the server and loading the base.
    pub rto_ms: u64,
    /// Keys in all dbs (the sum of `DBSIZE` over `dbs`).
    pub keys: u64,
    pub dbs: Vec<DbKeys>,
    /// `DEBUG DIGEST` of the restored dataset: equal to the source's at that instant.
    pub digest: String,
    /// Records replayed after the base.
    pub records: u64,
    /// The server that rebuilt the dataset, e.g. `redis 7.0.15`.
    pub server: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    pub name: String,
    /// Oldest first.
    pub generations: Vec<GenerationReport>,
    pub problems: Vec<Problem>,
    /// Worth knowing, not failures (torn open tails, generations whose base never finished).
    pub warnings: Vec<Problem>,
    /// Null with `--no-drill`, or when the drill failed (then `problems` says why).
    pub drill: Option<Drill>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub schema: u32,
    pub store: String,
    /// True when no problem was found (warnings allowed).
    pub ok: bool,
    pub problem_count: usize,
    pub sources: Vec<SourceReport>,
}

/// `--at` and `--redis-server` for the drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub target: Target,
    pub redis_server: Option<PathBuf>,
}

/// Checks `sources` (names that exist in the store) and, with `drill`, restores each.
pub async fn verify(store: &Store, sources: &[String], drill: Option<&DrillOptions>) -> Report {
    let mut out = Vec::new();
    for name in sources {
        let mut s = check_source(store, name).await;
        if let Some(d) = drill {
            match run_drill(store, name, d).await {
                Ok(r) => s.drill = Some(r),
                // Failing on an object already reported is the expected consequence, not a
                // second problem: one flipped byte counts once.
                Err(mut p) if s.problems.iter().any(|q| q.key == p.key) => {
                    p.impact =
                        "expected: the restore reads the damaged object reported above".into();
                    s.warnings.push(p);
                }
                Err(p) => s.problems.push(p),
            }
        }
        out.push(s);
    }
    let problem_count = out.iter().map(|s| s.problems.len()).sum();
    Report {
        schema: SCHEMA_VERSION,
        store: store.url.clone(),
        ok: problem_count == 0,
        problem_count,
        sources: out,
    }
}

/// The objects of one generation, from the listing.
#[derive(Default)]
struct Listed {
    manifest: Option<Path>,
    head: Option<Path>,
    bases: Vec<BaseObject>,
    sealed: Vec<SealedSegment>,
    /// (key, size, start offset)
    tails: Vec<(Path, u64, u64)>,
    /// (start offset, when the store last modified it in ms) of every sealed segment.
    sealed_modified: Vec<(u64, u64)>,
    /// (key, size) of every uncertain-interval object.
    uncertain: Vec<(Path, u64)>,
}

/// The integrity half of verify, for one source.
pub async fn check_source(store: &Store, name: &str) -> SourceReport {
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
    let mut gens: BTreeMap<String, Listed> = BTreeMap::new();
    for o in objects {
        let Some((gen, entry)) = layout::parse_key(name, &o.location) else {
            continue;
        };
        let g = gens.entry(gen).or_default();
        match entry {
            Entry::Manifest => g.manifest = Some(o.location),
            Entry::Head => g.head = Some(o.location),
            Entry::Base {
                offset,
                time_ms,
                size,
                crc32c,
            } => g.bases.push(BaseObject {
                offset,
                time_ms,
                key: o.location,
                size: o.size,
                recorded_size: size,
                crc32c,
            }),
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
        };
        c.run(listed).await;
        let mut counts = c.counts;
        counts.ok = report.problems.len() == before;
        report.generations.push(counts);
    }
    report
}

/// A failure reading one object.
struct Failure {
    kind: Kind,
    offset: Option<u64>,
    what: String,
}

impl Failure {
    fn new(kind: Kind, offset: Option<u64>, what: impl Into<String>) -> Self {
        Failure {
            kind,
            offset,
            what: what.into(),
        }
    }

    /// A format error, sorted into a kind. The file name is dropped: the problem names the key.
    fn format(e: &FormatError) -> Self {
        match e {
            FormatError::Corrupt { offset, what, .. } => {
                let kind = if what.contains("truncated") || what.contains("too short") {
                    Kind::Truncated
                } else {
                    Kind::Corrupt
                };
                Failure::new(kind, Some(*offset), what.clone())
            }
            FormatError::Version {
                found, supported, ..
            } => Failure::new(
                Kind::Version,
                None,
                format!("format version {found}, newer than this build reads ({supported}): upgrade flashback"),
            ),
            FormatError::Io { source, .. } => {
                Failure::new(Kind::Unreadable, None, source.to_string())
            }
            FormatError::Damaged { damage, .. } => {
                Failure::new(Kind::Corrupt, Some(damage.offset), damage.details())
            }
            other => Failure::new(Kind::Corrupt, None, other.to_string()),
        }
    }

    /// A segment that could not be read to its end.
    fn stream(e: StreamError) -> Self {
        match e {
            StreamError::Format(e) => Failure::format(&e),
            StreamError::Short { have, len, .. } => Failure::new(
                Kind::Truncated,
                Some(have),
                format!("the store returned {have} of the object's {len} bytes"),
            ),
            StreamError::Store(StoreError::ObjectStore(e)) => Failure::store(e),
            StreamError::Store(e) => Failure::new(Kind::Unreadable, None, e.to_string()),
        }
    }

    fn store(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Failure::new(
                Kind::Missing,
                None,
                "listed, but gone when read (pruned, or sealed by a live agent since): run verify again",
            ),
            e => Failure::new(Kind::Unreadable, None, e.to_string()),
        }
    }
}

/// What one segment's scan found.
#[derive(Default)]
struct Scan {
    summary: Option<SegmentSummary>,
    header: Option<SegmentHeader>,
    /// First record time of the last block with records that read and decoded fine.
    last_good_first_ms: Option<u64>,
    torn: Option<String>,
    /// An open tail damaged (a bad block with intact ones after it): the time through which
    /// its valid prefix is complete, where restore stops cleanly.
    damaged_through_ms: Option<u64>,
    failure: Option<Failure>,
    /// The crc32c of every byte the store returned, when it returned the whole object.
    crc32c: Option<u32>,
}

/// Checks one generation, pushing its problems into the source's report.
struct GenCheck<'a> {
    store: &'a Store,
    source: &'a str,
    gen: String,
    report: &'a mut SourceReport,
    counts: GenerationReport,
    /// A hole before a segment starting at or after this offset is an upload in progress
    /// ([`uploading_from`]).
    uploading_from: Option<u64>,
}

/// How far one run of a generation's log is intact, in restore's order.
#[derive(Default)]
struct RunState {
    /// First record time of the last good block with records: restore at T reads on to the
    /// first block after T, so instants before this time never touch what comes after.
    last_good_first_ms: Option<u64>,
    /// Set at the first break: up to which instant the run still restores.
    broken: Option<Option<u64>>,
}

impl GenCheck<'_> {
    async fn run(&mut self, listed: Listed) {
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
            // Not part of the chain: checked on their own below.
            uncertain: vec![],
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
    fn problem(
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
    fn hole(&mut self, h: &Hole) -> Option<usize> {
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

    /// The listing must reach the log head the agent recorded: otherwise the newest segments
    /// are gone, which the names of those left cannot show. A head that cannot be read is
    /// damage like any other stored file's (verify cannot vouch for the log's end without it);
    /// one that vanished since the listing is a warning (a prune or a new generation raced us).
    /// Returns the problem for the caller to give the log's impact, when that is not known here.
    async fn check_head(
        &mut self,
        key: &Path,
        walk: &Chain<'_>,
        runs: &[RunState],
    ) -> Option<usize> {
        let head = self
            .read_small(key)
            .await
            .and_then(|b| LogHead::decode(key.as_ref(), &b).map_err(|e| Failure::format(&e)));
        let head = match head {
            Ok(h) => h,
            Err(f) if f.kind == Kind::Missing => {
                self.report.warnings.push(Problem {
                    key: key.to_string(),
                    offset: f.offset,
                    kind: f.kind,
                    message: format!("the log head cannot be read: {}", f.what),
                    impact: "none for restore; verify cannot tell whether the newest segments are all there".into(),
                    restorable_through_ms: None,
                });
                return None;
            }
            Err(f) => {
                let through = walk.window().map(|w| w.to_ms);
                let what = format!("the log head is damaged: {}", f.what);
                let impact = format!(
                    "restore does not read it, so the restorable instants are as reported for the log{}; but verify cannot tell whether the newest segments are all there, and a restarted agent cannot use it: rewrite it by restarting capture",
                    through.map(|t| format!(" (through {})", format_ms(t))).unwrap_or_default()
                );
                self.problem(key.to_string(), Failure { what, ..f }, impact, None);
                return None;
            }
        };
        let g = walk.generation;
        if g.sealed.is_empty() && g.tails.is_empty() && !g.bases.is_empty() {
            // A head beside bases alone: a prune (older than the one that deletes such heads)
            // kept this generation for its restore points only and deleted the log it
            // describes. Those points need no log.
            self.report.warnings.push(Problem {
                key: key.to_string(),
                offset: None,
                kind: Kind::Leftover,
                message: format!(
                    "a log head (the log went through offset {}, {}) beside no segment: the generation holds only restore points, its log was pruned",
                    head.end_offset,
                    format_ms(head.end_time_ms)
                ),
                impact: "none: each kept base restores at its own instant; `flashback prune` deletes such a head".into(),
                restorable_through_ms: None,
            });
            return None;
        }
        // How far the listing reaches, past holes too: a hole is reported on its own.
        let listed_end = walk
            .spans
            .iter()
            .map(|(s, _)| s.end_offset)
            .chain(walk.window().map(|w| w.to_offset))
            .max()
            .unwrap_or(0);
        if listed_end >= head.end_offset {
            return None;
        }
        let f = Failure::new(
            Kind::Missing,
            Some(listed_end),
            format!(
                "the log ends at offset {} but the agent stored it through offset {} ({}, newest segment {}): the segments after offset {} are gone",
                listed_end,
                head.end_offset,
                format_ms(head.end_time_ms),
                head.segment,
                listed_end
            ),
        );
        let i = self.problem(
            layout::segments_prefix(self.source, &self.gen).to_string(),
            f,
            String::new(),
            None,
        );
        // Instants up to the end of what is left still restore, unless an earlier break
        // already bounds them.
        let last = runs.last().zip(walk.window());
        if let Some((state, w)) = last.filter(|(s, _)| s.broken.is_none()) {
            let _ = state;
            self.report.problems[i].impact = format!(
                "instants of generation {} up to {} still restore; later ones, through {}, are lost",
                self.gen,
                format_ms(w.to_ms),
                format_ms(head.end_time_ms)
            );
            self.report.problems[i].restorable_through_ms = Some(w.to_ms);
        }
        Some(i)
    }

    /// An uncertain-interval object must decode: it is what tells restore and `info` that times
    /// in it are not exact (restore also finds the catch-up blocks themselves, so a damaged one
    /// costs the explanation, not the protection).
    async fn check_uncertain(&mut self, key: &Path) {
        let read = self.read_small(key).await.and_then(|b| {
            crate::store::manifest::UncertainRecord::decode(key.as_ref(), &b)
                .map_err(|e| Failure::format(&e))
        });
        if let Err(f) = read {
            let impact = "no instant is lost; `info` cannot show this uncertain interval (restore still finds it in the log)".to_string();
            self.problem(key.to_string(), f, impact, None);
        }
    }

    /// A small object whole (a manifest, a log head).
    async fn read_small(&self, key: &Path) -> Result<bytes::Bytes, Failure> {
        match self.store.os.get(key).await {
            Ok(r) => r.bytes().await.map_err(Failure::store),
            Err(e) => Err(Failure::store(e)),
        }
    }

    async fn read_manifest(&mut self, key: &Path) -> Option<GenerationManifest> {
        let failure = match self.read_small(key).await {
            Ok(b) => match GenerationManifest::decode(key.as_ref(), &b) {
                Ok(m) => {
                    self.counts.bytes += b.len() as u64;
                    return Some(m);
                }
                Err(e) => Failure::format(&e),
            },
            Err(f) => f,
        };
        let impact = format!(
            "no instant of generation {} can be restored (restore needs the manifest to find the base)",
            self.gen
        );
        self.problem(key.to_string(), failure, impact, None);
        None
    }

    /// Every base: whole, with the right CRC; the first one also exists and has the size the
    /// manifest recorded.
    async fn check_bases(&mut self, bases: &[BaseObject], m: Option<&GenerationManifest>) {
        if let Some(m) = m {
            // A later base without the first is what a prune leaves: restores start there.
            if !bases.iter().any(|b| b.offset >= m.base_offset) {
                // Its size and checksum are in its name, so only the start of it is known.
                let key = format!(
                    "{}/{:016x}-{:012x}-*.rdb",
                    layout::base_prefix(self.source, &self.gen),
                    m.base_offset,
                    m.base_time_ms
                );
                let impact = self.base_impact(bases, m.base_offset, m.base_time_ms);
                self.problem(
                    key.to_string(),
                    Failure::new(
                        Kind::Missing,
                        None,
                        format!(
                            "the base snapshot at offset {} is not in the store",
                            m.base_offset
                        ),
                    ),
                    impact,
                    None,
                );
            }
        }
        let mut bad = Vec::new();
        for b in bases {
            let expected = m.filter(|m| m.base_offset == b.offset).map(|m| m.base_size);
            if let Some(f) = self.check_base(b, expected).await {
                bad.push((b.offset, b.time_ms, b.key.to_string(), f));
            }
        }
        for (offset, time_ms, key, f) in bad {
            let impact = self.base_impact(bases, offset, time_ms);
            self.problem(key, f, impact, None);
        }
    }

    /// Restore starts from the latest base at or before the instant, so a bad base spoils the
    /// instants from its own time up to the next base.
    fn base_impact(&self, bases: &[BaseObject], offset: u64, time_ms: u64) -> String {
        match bases.iter().find(|b| b.offset > offset) {
            Some(next) => format!(
                "instants of generation {} from {} to before {} cannot be restored (restores there start from this base)",
                self.gen,
                format_ms(time_ms),
                format_ms(next.time_ms)
            ),
            None => format!(
                "no instant of generation {} from {} on can be restored (restores there start from this base)",
                self.gen,
                format_ms(time_ms)
            ),
        }
    }

    /// Streams a base: size, RDB magic, the CRC-64 in its trailer, and the crc32c its name
    /// records.
    async fn check_base(&mut self, b: &BaseObject, expected_size: Option<u64>) -> Option<Failure> {
        if let Some(f) = size_mismatch(b.size, b.recorded_size) {
            return Some(f);
        }
        match expected_size {
            Some(n) if b.size < n => {
                return Some(Failure::new(
                    Kind::Truncated,
                    Some(b.size),
                    format!("{} bytes, but the manifest recorded {n}", b.size),
                ))
            }
            Some(n) if b.size > n => {
                return Some(Failure::new(
                    Kind::Corrupt,
                    Some(n),
                    format!("{} bytes, more than the {n} the manifest recorded", b.size),
                ))
            }
            _ => {}
        }
        let got = match self.store.os.get(&b.key).await {
            Ok(g) => g,
            Err(e) => return Some(Failure::store(e)),
        };
        let len = got.meta.size;
        let crc_end = len.saturating_sub(8);
        let trailer_start = len.saturating_sub(9);
        let (mut crc, mut pos, mut crc32c) = (0u64, 0u64, 0u32);
        let mut head = Vec::new();
        let mut trailer = Vec::with_capacity(9);
        let mut body = got.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Some(Failure::store(e)),
            };
            let end = pos + chunk.len() as u64;
            let slice = |from: u64, to: u64| {
                &chunk[(from.clamp(pos, end) - pos) as usize..(to.clamp(pos, end) - pos) as usize]
            };
            crc = rdb::crc64(crc, slice(0, crc_end));
            crc32c = crc32c::crc32c_append(crc32c, &chunk);
            trailer.extend_from_slice(slice(trailer_start, len));
            if head.len() < rdb::MAGIC_LEN {
                head.extend_from_slice(slice(0, rdb::MAGIC_LEN as u64));
            }
            pos = end;
        }
        self.counts.bytes += pos;
        if pos != len {
            return Some(Failure::new(
                Kind::Truncated,
                Some(pos),
                format!("the store returned {pos} of the object's {len} bytes"),
            ));
        }
        if let Err(e) = rdb::peek(b.key.as_ref(), &head) {
            return Some(Failure::format(&e));
        }
        if let Err(e) = rdb::check_trailer(b.key.as_ref(), len, crc, &trailer) {
            return Some(Failure::format(&e));
        }
        crc_mismatch(Some(crc32c), b.crc32c)
    }

    /// Streams a segment through the scanner ([`SegmentStream`]), decoding every block.
    async fn scan(&mut self, key: &Path, size: u64, sealed: Sealed) -> Scan {
        let mut scan = Scan::default();
        // An open tail may have grown since the listing; a sealed segment must not have.
        let expected = (sealed == Sealed::Yes).then_some(size);
        let mut stream = match SegmentStream::open(self.store, key, sealed, expected).await {
            Ok(s) => s,
            Err(e) => {
                scan.failure = Some(Failure::stream(e));
                return scan;
            }
        };
        let failure = loop {
            let block = match stream.next_block().await {
                Ok(Some(b)) => b,
                Ok(None) => break None,
                Err(e) => break Some(Failure::stream(e)),
            };
            match stream.decode(&block) {
                Ok(items) => {
                    self.counts.blocks += 1;
                    self.counts.records += items
                        .iter()
                        .filter(|i| !matches!(i, Item::Fragment(f) if f.end.is_none()))
                        .count() as u64;
                    if block.info.record_count > 0 {
                        scan.last_good_first_ms = Some(block.info.first_time_ms);
                    }
                }
                Err(e) => break Some(Failure::stream(e)),
            }
        };
        // The scan is done; what it did not need still counts for the checksum.
        if failure.is_none() {
            match stream.drain().await {
                Ok((crc, _)) => scan.crc32c = Some(crc),
                Err(e) => {
                    self.counts.bytes += stream.received();
                    scan.failure = Some(Failure::stream(e));
                    return scan;
                }
            }
        }
        self.counts.bytes += stream.received();
        scan.header = stream.header().cloned();
        if failure.is_none() {
            scan.summary = stream.summary();
            scan.torn = stream.torn_reason().map(str::to_string);
        } else if stream.damage().is_some() {
            // The prefix before the damage is intact, and restore reads it (plan.rs).
            scan.summary = stream.summary();
            scan.damaged_through_ms = scan.summary.as_ref().map(|s| s.end_time_ms);
        }
        scan.failure = failure;
        scan
    }

    async fn ends_with_footer_magic(&self, key: &Path, size: u64) -> bool {
        let n = segment::FOOTER_MAGIC.len() as u64;
        if size < n {
            return false;
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(size - n..size)),
            ..Default::default()
        };
        match self.store.os.get_opts(key, opts).await {
            Ok(r) => r
                .bytes()
                .await
                .is_ok_and(|b| b[..] == segment::FOOTER_MAGIC),
            // Cannot tell: keep the scanner's verdict.
            Err(_) => true,
        }
    }
}

impl RunState {
    fn advance_good(&mut self, first_ms: Option<u64>) {
        if self.broken.is_none() && first_ms.is_some() {
            self.last_good_first_ms = first_ms;
        }
    }

    /// Damage inside an object: restore reads on to the first block after its cut, so only
    /// the instants before the last good block's first record are safe.
    fn break_here(&mut self) {
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
fn uploading_from(agent_live: bool, listed_ms: u64, segments: &[(u64, u64)]) -> Option<u64> {
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
async fn agent_lease_live(store: &Store, source: &str, now_ms: u64) -> bool {
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

/// A sealed segment's name is what restore plans with: it must say what the footer says (for
/// a segment without records the agent names it by its creation time, as `first_time_ms` 0
/// would sort it before its predecessors).
fn name_mismatch(
    n: &layout::SealedName,
    h: Option<&SegmentHeader>,
    s: Option<&SegmentSummary>,
) -> Option<Failure> {
    let (h, s) = (h?, s?);
    let first = if s.first_time_ms == 0 {
        h.created_ms
    } else {
        s.first_time_ms
    };
    let named = (n.start_offset, n.end_offset, n.first_time_ms, n.end_time_ms);
    let found = (
        s.start_offset,
        s.end_offset,
        first,
        s.end_time_ms.max(first),
    );
    if named == found {
        return None;
    }
    Some(Failure::new(
        Kind::Corrupt,
        None,
        format!(
            "the name says offsets {}..{} and times {}..{}, the footer says offsets {}..{} and times {}..{}",
            named.0, named.1, named.2, named.3, found.0, found.1, found.2, found.3
        ),
    ))
}

/// The listed size against the one the name records (the size the writer read back after its
/// fsync).
fn size_mismatch(listed: u64, recorded: u64) -> Option<Failure> {
    if listed < recorded {
        Some(Failure::new(
            Kind::Truncated,
            Some(listed),
            format!("{listed} bytes, but its name records {recorded}: the object was cut short"),
        ))
    } else if listed > recorded {
        Some(Failure::new(
            Kind::Corrupt,
            Some(recorded),
            format!("{listed} bytes, more than the {recorded} its name records"),
        ))
    } else {
        None
    }
}

/// The checksum of the bytes read against the one the name records. The formats' own checks
/// passed by now, so this is damage they do not cover, or another object under this name.
fn crc_mismatch(read: Option<u32>, recorded: u32) -> Option<Failure> {
    match read {
        Some(c) if c != recorded => Some(Failure::new(
            Kind::Corrupt,
            None,
            format!(
                "checksum {c:08x} (crc32c of its bytes), not the {recorded:08x} recorded in its name: the bytes changed after they were written"
            ),
        )),
        _ => None,
    }
}

fn name_mismatch_tail(start: u64, h: Option<&SegmentHeader>) -> Option<Failure> {
    match h {
        Some(h) if h.start_offset != start => Some(Failure::new(
            Kind::Corrupt,
            Some(16),
            format!(
                "the header says the segment starts at offset {}, its name says {start}",
                h.start_offset
            ),
        )),
        _ => None,
    }
}

/// Restores `target` into a private server and measures it. Any failure is one problem.
async fn run_drill(store: &Store, source: &str, d: &DrillOptions) -> Result<Drill, Problem> {
    // Under a live agent an open tail can be sealed between the plan and the read, which
    // restore reports as an error on the tail. That is a race, not damage: plan again.
    let mut tries = 0;
    loop {
        tries += 1;
        match drill_once(store, source, d).await {
            Err(p) if tries < 3 && p.key.ends_with(".tail") => continue,
            r => return r,
        }
    }
}

async fn drill_once(store: &Store, source: &str, d: &DrillOptions) -> Result<Drill, Problem> {
    let started = Instant::now();
    let fail = |e: RestoreError| drill_problem(source, e);
    let plan = restore::plan(store, source, d.target).await.map_err(fail)?;
    let binary = ServerBinary::find(d.redis_server.as_deref()).map_err(|e| fail(e.into()))?;
    let version = engine::check_base_version(store, &plan, &binary)
        .await
        .map_err(fail)?;
    // The engine's own server, used directly rather than through a restore sink: the drill
    // only looks at the result, and every sink moves it somewhere or leaves it running.
    let server = RedisServer::start(&binary, ServerOptions::default())
        .await
        .map_err(|e| fail(e.into()))?;
    let applied = engine::replay(store, &plan, &server, version)
        .await
        .map_err(fail)?;
    let (dbs, digest) = dataset(&server).await.map_err(fail)?;
    let rto_ms = started.elapsed().as_millis() as u64;
    if applied.replica_errors > 0 {
        return Err(Problem {
            key: plan.base_key.to_string(),
            offset: None,
            kind: Kind::Drill,
            message: format!(
                "{} commands failed on the restore server; first: {}",
                applied.replica_errors,
                applied.first_errors.first().map_or("?", |s| s.as_str())
            ),
            impact: "the restored dataset may differ from the source's".into(),
            restorable_through_ms: None,
        });
    }
    let at_ms = match d.target {
        Target::At(t) => t,
        _ => plan.window.to_ms,
    };
    Ok(Drill {
        generation: plan.generation.clone(),
        at_ms,
        at: format_rfc3339_ms(at_ms),
        stop_offset: plan.stop_offset,
        rto_ms,
        keys: dbs.iter().map(|d| d.keys).sum(),
        dbs,
        digest,
        records: applied.records_applied,
        server: binary.to_string(),
    })
}

/// DBSIZE of every db that holds keys, and DEBUG DIGEST.
async fn dataset(server: &RedisServer) -> Result<(Vec<DbKeys>, String), RestoreError> {
    let mut c: Client = server.client().await?;
    let mut dbs = Vec::new();
    let info = c.info("keyspace").await?;
    let mut numbers: Vec<u32> = info
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("db")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    for db in numbers {
        c.ok(&["SELECT", &db.to_string()]).await?;
        let n = c.ok(&["DBSIZE"]).await?.text();
        let keys = n.parse().map_err(|_| {
            RestoreError::engine(server, format!("DBSIZE answered {n:?}, not a number"))
        })?;
        dbs.push(DbKeys { db, keys });
    }
    let digest = c.ok(&["DEBUG", "DIGEST"]).await?.text();
    Ok((dbs, digest))
}

fn drill_problem(source: &str, e: RestoreError) -> Problem {
    let (key, offset) = match &e {
        RestoreError::Log { key, .. } => (key.clone(), None),
        RestoreError::Format(FormatError::Corrupt { file, offset, .. }) => {
            (file.clone(), Some(*offset))
        }
        _ => (layout::source_prefix(source).to_string(), None),
    };
    let text = e.to_string();
    let what = text.strip_prefix(&format!("{key}: ")).unwrap_or(&text);
    // One line per problem: multi-line errors (the windows of an --at outside them, a server
    // log's tail) are joined.
    let what = what
        .lines()
        .map(|l| l.trim().trim_end_matches(':'))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Problem {
        message: format!("the restore drill failed: {what}"),
        key,
        offset,
        kind: Kind::Drill,
        impact: "a restore of this instant fails the same way".into(),
        restorable_through_ms: None,
    }
}

/// The text report: a verdict line first, then per source what was checked, every problem and
/// warning on one line, and the drill's figures.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let gens: usize = r.sources.iter().map(|s| s.generations.len()).sum();
    let records: u64 = r
        .sources
        .iter()
        .flat_map(|s| &s.generations)
        .map(|g| g.records)
        .sum();
    if r.ok {
        let _ = writeln!(
            o,
            "OK: {} source{}, {gens} generation{}, {records} records verified{}",
            r.sources.len(),
            plural(r.sources.len()),
            plural(gens),
            match r
                .sources
                .iter()
                .filter_map(|s| s.drill.as_ref())
                .map(|d| d.rto_ms)
                .max()
            {
                Some(ms) => format!("; restore drill {ms} ms"),
                None => String::new(),
            }
        );
    } else {
        let _ = writeln!(
            o,
            "FAILED: {} problem{}",
            r.problem_count,
            plural(r.problem_count)
        );
    }
    for s in &r.sources {
        let _ = writeln!(o, "\nsource {}", s.name);
        for g in &s.generations {
            let _ = writeln!(
                o,
                "  generation {}: {} base{}, {} sealed segment{}, {} open tail{}; {} blocks, {} records, {} read: {}",
                g.id,
                g.bases,
                plural(g.bases),
                g.sealed_segments,
                plural(g.sealed_segments),
                g.tails,
                plural(g.tails),
                g.blocks,
                g.records,
                crate::info::format_bytes(g.bytes),
                if g.ok { "ok" } else { "PROBLEMS" }
            );
        }
        for p in &s.problems {
            let _ = writeln!(o, "  {}", line("PROBLEM", p));
        }
        for p in &s.warnings {
            let _ = writeln!(o, "  {}", line("warning", p));
        }
        if let Some(d) = &s.drill {
            let per_db: Vec<String> = d
                .dbs
                .iter()
                .map(|x| format!("db{} {}", x.db, x.keys))
                .collect();
            let _ = writeln!(
                o,
                "  drill: restored {} (generation {}, offset {}) in {} ms: {} keys{}, {} records replayed, digest {} ({})",
                format_ms(d.at_ms),
                d.generation,
                d.stop_offset,
                d.rto_ms,
                d.keys,
                if per_db.is_empty() { String::new() } else { format!(" ({})", per_db.join(", ")) },
                d.records,
                d.digest,
                d.server
            );
        }
    }
    o
}

fn line(label: &str, p: &Problem) -> String {
    let at = p
        .offset
        .map(|n| format!(" at byte {n}"))
        .unwrap_or_default();
    let impact = if p.impact.is_empty() {
        String::new()
    } else {
        format!(" => {}", p.impact)
    };
    format!(
        "{label} [{}] {}{at}: {}{impact}",
        p.kind.label(),
        p.key,
        p.message
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::SealedName;
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
