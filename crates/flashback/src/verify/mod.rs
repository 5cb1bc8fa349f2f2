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
//! # Files
//! - this file: the report types (the `--json` schema) and [`verify`], which runs the rest;
//! - `check`: one source's listing sorted into generations, then each generation's log walked
//!   in restore's order (the chain from each base, holes, what still restores);
//! - `objects`: reading and checking each stored object (manifest, log head, uncertain
//!   intervals, bases, segments) and turning a failure into a problem;
//! - `head`: the log head check (the listing reaches where the agent stored its log, with a
//!   second listing for a live agent's seal);
//! - `drill`: the timed restore into a private redis-server.
//!
//! The text rendering of a [`Report`] is the binary's (`cli/verify.rs`): the library produces
//! data, as for `info`.

use crate::progress::{PhaseTime, Progress};
use crate::restore::Target;
use crate::store::Store;
use serde::Serialize;
use std::path::PathBuf;

pub mod against;
mod check;
mod drill;
mod head;
mod objects;
mod sample;

pub use check::{check_source, check_source_observed};
use drill::run_drill;

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
    /// The word the text report prints for it.
    pub fn label(self) -> &'static str {
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
    /// Where `rto_ms` went: plan, fetch, load, replay, verify (key count and digest), each in ms.
    pub phases: Vec<PhaseTime>,
    /// `--against-source`: the restore compared with the live source at the same offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against_source: Option<against::AgainstSource>,
    /// A random sample of keys whose state the log dictates (last written whole by SET, or
    /// deleted), checked in the restore; null when a big record's keys could not be read.
    pub log_sample: Option<sample::LogSampleReport>,
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
    /// Where the check and the drill report their phases (the binary shows it).
    pub progress: Progress,
    /// `--against-source URL`: compare the drill with the live source (then the drill restores
    /// the offset the source was paused at, not `target`).
    pub against: Option<against::AgainstOptions>,
}

/// Fresh listings tried when objects vanish between a listing and their read.
const CHECK_RETRIES: usize = 3;

/// How long the drill waits for the agent to store the offset the source was paused at.
const AGAINST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Checks `sources` (names that exist in the store) and, with `drill`, restores each.
pub async fn verify(store: &Store, sources: &[String], drill: Option<&DrillOptions>) -> Report {
    let mut out = Vec::new();
    for name in sources {
        let progress = drill.map(|d| d.progress.clone()).unwrap_or_default();
        // A live agent prunes and seals while verify reads: an object listed and then gone is
        // that race, not damage, so the source is checked again from a fresh listing (a few
        // times: retention under a fast --base-every can move on again). Only what is still
        // wrong on a fresh listing is reported.
        let mut s = check_source_observed(store, name, &progress).await;
        for _ in 0..CHECK_RETRIES {
            let raced = s
                .problems
                .iter()
                .any(|p| p.kind == Kind::Missing && p.message == objects::GONE_WHEN_READ);
            if !raced {
                break;
            }
            s = check_source_observed(store, name, &progress).await;
        }
        // Still racing after fresh listings (a check slower than the agent's retention cadence):
        // an object listed and deleted before its read is no damage, whatever deleted it, and
        // what the store holds now was checked. Reported as a warning, not a problem.
        let (gone, kept): (Vec<Problem>, Vec<Problem>) = std::mem::take(&mut s.problems)
            .into_iter()
            .partition(|p| p.kind == Kind::Missing && p.message == objects::GONE_WHEN_READ);
        s.problems = kept;
        for mut p in gone {
            p.impact = "none: deleted after the listing (a live agent's retention or seal); the next verify reads the store as it is then".into();
            p.restorable_through_ms = None;
            s.warnings.push(p);
        }
        if s.problems.is_empty() {
            for g in &mut s.generations {
                g.ok = true;
            }
        }
        if let Some(d) = drill {
            let side = match &d.against {
                None => None,
                Some(o) => match against_side(store, name, o).await {
                    Ok(side) => Some(side),
                    Err(p) => {
                        s.problems.push(p);
                        out.push(s);
                        continue;
                    }
                },
            };
            match run_drill(store, name, d, side.as_ref()).await {
                Ok(r) => {
                    s.problems.extend(drill_mismatches(name, &r));
                    s.drill = Some(r);
                }
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

/// A drill that restored, but whose result disagrees with the log's own sample or with the
/// live source: each is a problem of its own.
fn drill_mismatches(name: &str, r: &Drill) -> Vec<Problem> {
    let problem = |message: String, impact: &str| Problem {
        key: crate::store::layout::source_prefix(name).to_string(),
        offset: None,
        kind: Kind::Drill,
        message,
        impact: impact.into(),
        restorable_through_ms: None,
    };
    let mut out = Vec::new();
    if let Some(l) = r.log_sample.as_ref().filter(|l| l.equal < l.keys) {
        out.push(problem(
            format!(
                "the restore at offset {} disagrees with the log: {}",
                r.stop_offset,
                l.differences.join("; ")
            ),
            "the restore engine did not apply the log faithfully",
        ));
    }
    if let Some(a) = r.against_source.as_ref().filter(|a| !a.equal) {
        out.push(problem(
            format!(
                "the restore at offset {} differs from the live source: {}",
                r.stop_offset,
                a.differences.join("; ")
            ),
            "a restore of this instant would not give the source's data",
        ));
    }
    out
}

/// The source's side of `--against-source`, then a wait until the store holds its offset.
async fn against_side(
    store: &Store,
    name: &str,
    o: &against::AgainstOptions,
) -> Result<against::SourceSide, Problem> {
    let problem = |message: String| Problem {
        key: crate::store::layout::source_prefix(name).to_string(),
        offset: None,
        kind: Kind::Drill,
        message,
        impact: "the restore was not compared with the source".into(),
        restorable_through_ms: None,
    };
    // The right server: its replication history is one this store captured (as for a restore
    // into the source, addresses are no proof of identity). Checked before any pause.
    let gens = crate::store::catalog::load_generations(store, name)
        .await
        .map_err(|e| problem(e.to_string()))?;
    let captured: Vec<String> = gens
        .iter()
        .filter_map(|g| g.manifest.as_ref().map(|m| m.replid.clone()))
        .collect();
    let side = against::source_side(o, name, &captured)
        .await
        .map_err(problem)?;
    let deadline = std::time::Instant::now() + AGAINST_WAIT;
    loop {
        match crate::restore::plan(store, name, Target::AtOffset(side.offset)).await {
            Ok(_) => return Ok(side),
            Err(crate::restore::RestoreError::OutsideWindow(_))
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(problem(format!(
                    "the store does not reach offset {} of --against-source {} (is an agent capturing that source into this store?): {}",
                    side.offset,
                    o.url,
                    e.to_string().lines().next().unwrap_or_default()
                )))
            }
        }
    }
}
