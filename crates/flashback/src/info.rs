//! What `flashback info` reports: per source, its generations, the restorable windows and how far
//! the latest restorable instant lags behind now.
//!
//! These types are the `--json` schema (documented in `docs/cli.md`, versioned by
//! [`SCHEMA_VERSION`]), and the text output is rendered from them too, so the two never disagree.
//! Adding a field is compatible; renaming or removing one, or changing its meaning, bumps the
//! schema number.
//!
//! Everything here comes from the store's listing, the manifests and a scan of open tails
//! ([`catalog::load_generations`]); sealed segments are not read, because their names already
//! carry their offsets and times.

use crate::store::catalog::{self, BaseObject, Generation, Window};
use crate::store::layout;
use crate::store::{Store, StoreError};
use crate::timespec::format_rfc3339_ms;
use serde::{Deserialize, Serialize};

/// The `"schema"` number at the top of `flashback info --json`.
pub const SCHEMA_VERSION: u32 = 1;

/// What `problem` says about a generation without a manifest.
pub const BASE_NEVER_FINISHED: &str = "base never finished";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub schema: u32,
    /// The store as the user named it.
    pub store: String,
    /// The instant `lag_ms` is measured from.
    pub now_ms: u64,
    pub now: String,
    /// Bytes stored for all sources.
    pub bytes: u64,
    /// Sorted by name.
    pub sources: Vec<SourceInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub name: String,
    pub bytes: u64,
    /// One per restorable generation, oldest first. Between two windows lies a gap that no
    /// restore can reach.
    pub windows: Vec<RestorableWindow>,
    /// `now_ms` minus the end of the latest window (0 if that end is ahead of this machine's
    /// clock); null when nothing is restorable. A live agent writes a heartbeat block about
    /// every second, so a healthy lag is about 1 s.
    pub lag_ms: Option<u64>,
    /// Uncertain intervals inside the windows, oldest first: the agent could not vouch for the
    /// source then (a silent link, a reconnect, a restart), so `restore --at` a time inside one
    /// refuses unless `--inexact`; `--at-offset` between its offsets stays exact.
    #[serde(default)]
    pub uncertain: Vec<UncertainInfo>,
    /// Oldest first.
    pub generations: Vec<GenerationInfo>,
    /// The base a restore of the latest restorable instant starts from; null when nothing is
    /// restorable.
    pub latest_base: Option<BaseInfo>,
    /// Bases before their generation's window, kept by retention after the log around them was
    /// pruned (or before a hole that a later base bridges), and older generations whose window
    /// is a base alone (kept for that point; they stay in `windows` too): each restores from
    /// its own instant through `to_ms` (the same instant, for a base alone). Oldest first.
    pub restore_points: Vec<RestorePointInfo>,
    /// A cluster source (`capture --cluster`): its shards, each an internal source of its
    /// own; absent for a standalone source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub shards: Vec<ShardInfo>,
    /// The intersection of the shards' latest windows: the instants every shard restores (a
    /// shard that joined the cluster empty after capture began bounds only its end); null when some shard has nothing restorable or they do not overlap.
    pub window: Option<WindowInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// What `restore --shard` takes.
    pub label: String,
    pub node_ids: Vec<String>,
    /// The shard's latest window.
    pub window: Option<WindowInfo>,
    pub lag_ms: Option<u64>,
    pub generations: usize,
    pub bytes: u64,
    /// When capture adopted the shard, for one that joined the cluster after capture began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_ms: Option<u64>,
}

/// A base snapshot that restores start from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseInfo {
    pub generation: String,
    pub offset: u64,
    pub time_ms: u64,
    pub time: String,
    pub size: u64,
    /// Its key in the store.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePointInfo {
    pub generation: String,
    /// The base's offset and time: the first instant it restores.
    pub offset: u64,
    pub time_ms: u64,
    pub time: String,
    /// The last instant (and offset) restorable from it; equal to `time_ms` (and `offset`) for
    /// a base alone.
    pub to_ms: u64,
    pub to: String,
    pub to_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncertainInfo {
    pub generation: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub from: String,
    pub to: String,
    pub from_offset: u64,
    pub to_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowInfo {
    pub from_ms: u64,
    pub to_ms: u64,
    /// `from_ms` and `to_ms` in RFC 3339, UTC, with milliseconds.
    pub from: String,
    pub to: String,
    pub from_offset: u64,
    pub to_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorableWindow {
    pub generation: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub from: String,
    pub to: String,
    pub from_offset: u64,
    pub to_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationStatus {
    /// Has a manifest and its base: restorable within `window`.
    Complete,
    /// Not restorable; `problem` says why.
    Incomplete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationInfo {
    pub id: String,
    pub status: GenerationStatus,
    /// Why an incomplete generation cannot be restored (e.g. "base never finished"); null when
    /// complete.
    pub problem: Option<String>,
    /// When the agent started this generation (from its id).
    pub started_ms: u64,
    pub started: String,
    /// The fields below up to `previous` come from the manifest: null without one.
    pub replid: Option<String>,
    pub base_offset: Option<u64>,
    pub base_size: Option<u64>,
    pub rdb_version: Option<u32>,
    /// e.g. "redis 7.0.15".
    pub server: Option<String>,
    /// Why this generation started: first capture, or the gap that forced a full resync.
    pub reason: Option<String>,
    pub previous: Option<PreviousInfo>,
    pub sealed_segments: usize,
    pub tail_segments: usize,
    /// Base plus segments.
    pub bytes: u64,
    /// Null when incomplete.
    pub window: Option<WindowInfo>,
    /// The open tail's last block was cut short when read: the agent died mid-write (the
    /// block is dropped; nothing acknowledged was in it), or was writing at that moment.
    pub torn_tail: bool,
    /// An open tail holds a bad block with intact blocks after it: damage on disk, not a torn
    /// write. Names the file, the byte and the last restorable instant (the window ends there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged_tail: Option<String>,
    /// The segment chain has a hole: records after `at_offset` resume only at
    /// `resumes_at_offset`, so the window stops at the hole and `unreachable_segments` segments
    /// after it are not restorable. Null when the chain is whole.
    pub chain_break: Option<ChainBreak>,
    /// The manifest's own base (`base_offset`, `base_size`) is no longer in the store: a prune
    /// deleted it once a later base anchored the window. Restores start from `restore_base`.
    pub base_pruned: bool,
    /// The base a restore of this generation's latest instant starts from (the newest base on
    /// its window); null when incomplete.
    pub restore_base: Option<BaseInfo>,
    /// This generation's kept restore points, as in [`SourceInfo::restore_points`].
    pub restore_points: Vec<RestorePointInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousInfo {
    pub generation: String,
    /// Where the previous generation's history stops (as the agent knew when it started this one).
    pub end_offset: u64,
    pub end_time_ms: u64,
    pub end: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    pub at_offset: u64,
    pub resumes_at_offset: u64,
    pub unreachable_segments: usize,
    /// A later base past the hole, from which the window restores again: the hole costs only
    /// the instants between `at_offset` and this base (then `unreachable_segments` is 0).
    /// Null when no base bridges it.
    pub bridged_by_base_offset: Option<u64>,
}

/// Reads the store's catalog and builds the report. `now_ms` is a parameter so tests (and
/// `verify`) can fix it.
pub async fn gather(store: &Store, now_ms: u64) -> Result<StoreInfo, StoreError> {
    let mut sources = Vec::new();
    for name in catalog::list_sources(store).await? {
        let gens = catalog::load_generations(store, &name).await?;
        let mut info = source_info(&name, &gens, now_ms);
        if let Some(m) = crate::store::cluster::load(store, &name).await? {
            let mut shards = Vec::new();
            for (label, src) in m.shard_sources() {
                let gens = catalog::load_generations(store, &src).await?;
                let one = source_info(&src, &gens, now_ms);
                let node_ids = m
                    .shard(&label)
                    .map(|s| s.node_ids.clone())
                    .unwrap_or_default();
                let joined_ms = m.shard(&label).and_then(|s| s.added_ms);
                info.bytes += one.bytes;
                shards.push(ShardInfo {
                    label,
                    node_ids,
                    window: gens.iter().rev().find_map(|g| g.window()).map(window_info),
                    lag_ms: one.lag_ms,
                    generations: one.generations.len(),
                    bytes: one.bytes,
                    joined_ms,
                });
            }
            // A shard that joined the cluster empty after capture began does not bound the
            // start: before its history it held nothing (restore::cluster checks its first
            // snapshot to be sure).
            let joined_empty: Vec<bool> = shards
                .iter()
                .map(|s| m.shard(&s.label).is_some_and(|x| x.joined_empty()))
                .collect();
            let window = shards
                .iter()
                .map(|s| s.window.clone())
                .collect::<Option<Vec<_>>>()
                .and_then(|ws| {
                    let bounding = ws.iter().zip(&joined_empty).filter(|(_, e)| !**e);
                    let from = bounding
                        .map(|(w, _)| w)
                        .max_by_key(|w| w.from_ms)
                        .or_else(|| ws.iter().min_by_key(|w| w.from_ms))?
                        .clone();
                    let to = ws.iter().min_by_key(|w| w.to_ms)?.clone();
                    (from.from_ms <= to.to_ms).then_some(WindowInfo {
                        from_ms: from.from_ms,
                        from: from.from,
                        from_offset: from.from_offset,
                        to_ms: to.to_ms,
                        to: to.to,
                        to_offset: to.to_offset,
                    })
                });
            info.lag_ms = shards.iter().filter_map(|s| s.lag_ms).max();
            info.cluster = Some(ClusterInfo { shards, window });
        }
        sources.push(info);
    }
    Ok(StoreInfo {
        schema: SCHEMA_VERSION,
        store: store.url.clone(),
        now_ms,
        now: format_rfc3339_ms(now_ms),
        bytes: sources.iter().map(|s| s.bytes).sum(),
        sources,
    })
}

/// The pure part of [`gather`], over generations already loaded (oldest first).
pub fn source_info(name: &str, gens: &[Generation], now_ms: u64) -> SourceInfo {
    let mut generations: Vec<GenerationInfo> = gens.iter().map(generation_info).collect();
    // An older generation whose window is a base alone was kept by retention for that
    // restore point; the newest one's is where capture is now, not a kept point.
    let newest = generations.iter().rposition(|g| g.window.is_some());
    for (i, g) in generations.iter_mut().enumerate() {
        match &g.window {
            Some(w) if Some(i) != newest && w.from_offset == w.to_offset => {
                g.restore_points.push(RestorePointInfo {
                    generation: g.id.clone(),
                    offset: w.from_offset,
                    time_ms: w.from_ms,
                    time: w.from.clone(),
                    to_ms: w.to_ms,
                    to: w.to.clone(),
                    to_offset: w.to_offset,
                })
            }
            _ => {}
        }
    }
    let windows: Vec<RestorableWindow> = generations
        .iter()
        .filter_map(|g| {
            g.window.as_ref().map(|w| RestorableWindow {
                generation: g.id.clone(),
                from_ms: w.from_ms,
                to_ms: w.to_ms,
                from: w.from.clone(),
                to: w.to.clone(),
                from_offset: w.from_offset,
                to_offset: w.to_offset,
            })
        })
        .collect();
    // The latest restorable instant, not the last generation's: if the newest generation is
    // still receiving its base, the previous one's end is what a restore can reach now.
    let lag_ms = windows
        .iter()
        .map(|w| w.to_ms)
        .max()
        .map(|end| now_ms.saturating_sub(end));
    let uncertain = gens
        .iter()
        .flat_map(|g| {
            g.uncertain.iter().map(|u| UncertainInfo {
                generation: g.id.clone(),
                from_ms: u.name.from_ms,
                to_ms: u.name.to_ms,
                from: format_rfc3339_ms(u.name.from_ms),
                to: format_rfc3339_ms(u.name.to_ms),
                from_offset: u.name.from_offset,
                to_offset: u.name.to_offset,
            })
        })
        .collect();
    // The window a restore of the latest instant uses: the one ending last.
    let latest_base = generations
        .iter()
        .filter(|g| g.window.is_some())
        .max_by_key(|g| g.window.as_ref().map(|w| w.to_ms))
        .and_then(|g| g.restore_base.clone());
    let restore_points = generations
        .iter()
        .flat_map(|g| g.restore_points.iter().cloned())
        .collect();
    SourceInfo {
        name: name.to_string(),
        bytes: generations.iter().map(|g| g.bytes).sum(),
        windows,
        lag_ms,
        uncertain,
        generations,
        latest_base,
        restore_points,
        cluster: None,
    }
}

fn window_info(w: Window) -> WindowInfo {
    WindowInfo {
        from_ms: w.from_ms,
        to_ms: w.to_ms,
        from: format_rfc3339_ms(w.from_ms),
        to: format_rfc3339_ms(w.to_ms),
        from_offset: w.from_offset,
        to_offset: w.to_offset,
    }
}

fn generation_info(g: &Generation) -> GenerationInfo {
    // The catalog only yields generations whose id parsed, so the fallback is never used; 0
    // (1970) would at least be visibly wrong rather than plausible.
    let started_ms = layout::parse_generation_id(&g.id).unwrap_or(0);
    let m = g.manifest.as_ref();
    let problem = match m {
        None => Some(BASE_NEVER_FINISHED.to_string()),
        // Retention may delete the first base once a later one anchors the window; only a
        // generation with no base at all cannot be restored.
        // The size and checksum in the name are unknown here: the name's pattern, as verify.
        Some(m) if g.bases.is_empty() => Some(format!(
            "base file {}/{:016x}-{:012x}-*.rdb is missing",
            layout::base_prefix(&m.source, &m.generation),
            m.base_offset,
            m.base_time_ms
        )),
        Some(_) => None,
    };
    let chain = g.chain();
    let complete = problem.is_none();
    let window = chain.window().filter(|_| complete).map(window_info);
    let restore_base = chain
        .latest_base()
        .filter(|_| complete)
        .map(|b| base_info(&g.id, b));
    let restore_points = chain
        .points()
        .iter()
        .filter(|_| complete)
        .map(|r| RestorePointInfo {
            generation: g.id.clone(),
            offset: r.window.from_offset,
            time_ms: r.window.from_ms,
            time: format_rfc3339_ms(r.window.from_ms),
            to_ms: r.window.to_ms,
            to: format_rfc3339_ms(r.window.to_ms),
            to_offset: r.window.to_offset,
        })
        .collect();
    let chain_break = chain.first_hole().map(|h| ChainBreak {
        at_offset: h.from_offset,
        resumes_at_offset: h.to_offset,
        unreachable_segments: h.unreachable_segments,
        bridged_by_base_offset: h.bridged_by.map(|r| chain.runs[r].window.from_offset),
    });
    GenerationInfo {
        id: g.id.clone(),
        status: if problem.is_none() {
            GenerationStatus::Complete
        } else {
            GenerationStatus::Incomplete
        },
        problem,
        started_ms,
        started: format_rfc3339_ms(started_ms),
        replid: m.map(|m| m.replid.clone()),
        base_offset: m.map(|m| m.base_offset),
        base_size: m.map(|m| m.base_size),
        rdb_version: m.map(|m| m.rdb_version),
        server: m.map(|m| m.server.clone()),
        reason: m.map(|m| m.reason.clone()),
        previous: m.and_then(|m| m.previous.as_ref()).map(|p| PreviousInfo {
            generation: p.generation.clone(),
            end_offset: p.end_offset,
            end_time_ms: p.end_time_ms,
            end: format_rfc3339_ms(p.end_time_ms),
        }),
        sealed_segments: g.sealed.len(),
        tail_segments: g.tails.len(),
        bytes: g.bytes(),
        window,
        torn_tail: g.tails.iter().any(|t| t.torn),
        damaged_tail: g.tails.iter().find_map(|t| t.damage_message()),
        chain_break,
        base_pruned: m.is_some_and(|m| !g.bases.iter().any(|b| b.offset == m.base_offset)),
        restore_base,
        restore_points,
    }
}

fn base_info(generation: &str, b: &BaseObject) -> BaseInfo {
    BaseInfo {
        generation: generation.to_string(),
        offset: b.offset,
        time_ms: b.time_ms,
        time: format_rfc3339_ms(b.time_ms),
        size: b.size,
        key: b.key.to_string(),
    }
}

/// Bytes as a person reads them: `512 B`, `4.1 KiB`, `12.3 MiB`, `1.2 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::{SealedSegment, TailSegment};
    use crate::store::layout::SealedName;
    use crate::store::manifest::{GenerationManifest, PreviousGeneration};

    const T0: u64 = 1_795_455_600_000; // 2026-11-23T17:40:00Z
    const SRC: &str = "cache";

    fn manifest(
        gen: &str,
        base_offset: u64,
        base_time_ms: u64,
        previous: Option<PreviousGeneration>,
    ) -> GenerationManifest {
        GenerationManifest {
            source: SRC.into(),
            generation: gen.into(),
            replid: "8f3c1e1a9a0b4c2d8e7f6a5b4c3d2e1f0a9b8c7d".into(),
            base_offset,
            base_time_ms,
            base_db: 0,
            base_size: 1000,
            rdb_version: 10,
            server: "redis 7.0.15".into(),
            reason: if previous.is_some() {
                "backlog overrun".into()
            } else {
                "first capture".into()
            },
            previous,
            agent_version: "0.1.0".into(),
        }
    }

    fn sealed(gen: &str, start: u64, end: u64, t0: u64, t1: u64, size: u64) -> SealedSegment {
        let name = SealedName {
            start_offset: start,
            end_offset: end,
            first_time_ms: t0,
            end_time_ms: t1,
            size,
            crc32c: 0,
        };
        SealedSegment {
            name,
            key: layout::segment_key(SRC, gen, &name),
            size,
        }
    }

    fn tail(gen: &str, start: u64, end: u64, through: u64, torn: bool) -> TailSegment {
        TailSegment {
            key: layout::tail_key(SRC, gen, start),
            size: 300,
            start_offset: start,
            end_offset: end,
            first_time_ms: through - 500,
            covered_through_ms: through,
            torn,
            damage: None,
        }
    }

    fn generation(
        start_ms: u64,
        m: Option<GenerationManifest>,
        sealed: Vec<SealedSegment>,
        tails: Vec<TailSegment>,
    ) -> Generation {
        let id = layout::generation_id(start_ms);
        let bases = m
            .iter()
            .map(|m| crate::store::catalog::BaseObject {
                offset: m.base_offset,
                time_ms: m.base_time_ms,
                key: layout::base_key(SRC, &id, m.base_offset, m.base_time_ms, m.base_size, 0),
                size: m.base_size,
                recorded_size: m.base_size,
                crc32c: 0,
            })
            .collect();
        Generation {
            id,
            manifest: m,
            bases,
            sealed,
            tails,
            head: None,
            commands: None,
            uncertain: vec![],
            summaries: vec![],
        }
    }

    /// Two generations (the second after a gap), the second live with an open tail, and a
    /// third whose base never finished.
    fn history() -> Vec<Generation> {
        let g1 = layout::generation_id(T0);
        let g2 = layout::generation_id(T0 + 600_000);
        let gen1 = generation(
            T0,
            Some(manifest(&g1, 14, T0 + 2_000, None)),
            vec![
                sealed(&g1, 14, 5_000, T0 + 2_100, T0 + 60_000, 2_000),
                sealed(&g1, 5_000, 9_000, T0 + 60_100, T0 + 120_000, 1_500),
            ],
            vec![],
        );
        let prev = PreviousGeneration {
            generation: g1.clone(),
            end_offset: 9_000,
            end_time_ms: T0 + 120_000,
        };
        let gen2 = generation(
            T0 + 600_000,
            Some(manifest(&g2, 100_000, T0 + 601_000, Some(prev))),
            vec![sealed(
                &g2,
                100_000,
                100_500,
                T0 + 601_500,
                T0 + 660_000,
                700,
            )],
            vec![tail(&g2, 100_500, 100_900, T0 + 700_000, true)],
        );
        let gen3 = generation(T0 + 900_000, None, vec![], vec![]);
        vec![gen1, gen2, gen3]
    }

    #[test]
    fn windows_bytes_and_lag() {
        let now = T0 + 701_000;
        let s = source_info(SRC, &history(), now);
        assert_eq!(s.name, SRC);
        assert_eq!(s.generations.len(), 3);
        assert_eq!(s.bytes, (1000 + 2000 + 1500) + (1000 + 700 + 300));
        assert_eq!(s.windows.len(), 2);
        let w1 = &s.windows[0];
        assert_eq!(
            (w1.from_ms, w1.to_ms, w1.from_offset, w1.to_offset),
            (T0 + 2_000, T0 + 120_000, 14, 9_000)
        );
        assert_eq!(w1.from, "2026-11-23T17:40:02.000Z");
        let w2 = &s.windows[1];
        assert_eq!(
            (w2.from_ms, w2.to_ms, w2.from_offset, w2.to_offset),
            (T0 + 601_000, T0 + 700_000, 100_000, 100_900)
        );
        assert_eq!(s.lag_ms, Some(1_000));

        let g2 = &s.generations[1];
        assert_eq!(g2.status, GenerationStatus::Complete);
        assert_eq!(
            (g2.sealed_segments, g2.tail_segments, g2.bytes),
            (1, 1, 2_000)
        );
        assert!(g2.torn_tail);
        assert_eq!(
            g2.previous.as_ref().map(|p| (p.end_offset, p.end.as_str())),
            Some((9_000, "2026-11-23T17:42:00.000Z"))
        );
        assert_eq!(g2.reason.as_deref(), Some("backlog overrun"));
        assert_eq!(g2.chain_break, None);

        let g3 = &s.generations[2];
        assert_eq!(g3.status, GenerationStatus::Incomplete);
        assert_eq!(g3.problem.as_deref(), Some(BASE_NEVER_FINISHED));
        assert_eq!(
            (&g3.window, g3.replid.as_ref(), g3.started_ms),
            (&None, None, T0 + 900_000)
        );
    }

    #[test]
    fn lag_is_zero_when_the_window_is_ahead_and_null_when_nothing_is_restorable() {
        let s = source_info(SRC, &history(), T0 + 1_000);
        assert_eq!(s.lag_ms, Some(0));
        let only_incomplete = vec![generation(T0, None, vec![], vec![])];
        let s = source_info(SRC, &only_incomplete, T0 + 1_000);
        assert!(s.windows.is_empty());
        assert_eq!(s.lag_ms, None);
    }

    #[test]
    fn a_hole_in_the_chain_ends_the_window_and_is_reported() {
        let g = layout::generation_id(T0);
        let gen = generation(
            T0,
            Some(manifest(&g, 0, T0, None)),
            vec![
                sealed(&g, 0, 100, T0, T0 + 10_000, 10),
                sealed(&g, 150, 200, T0 + 20_000, T0 + 30_000, 10),
                sealed(&g, 200, 300, T0 + 30_000, T0 + 40_000, 10),
            ],
            vec![tail(&g, 300, 400, T0 + 50_000, false)],
        );
        let s = source_info(SRC, &[gen], T0 + 60_000);
        let info = &s.generations[0];
        assert_eq!(
            info.window.as_ref().map(|w| (w.to_offset, w.to_ms)),
            Some((100, T0 + 10_000))
        );
        assert_eq!(
            info.chain_break,
            Some(ChainBreak {
                at_offset: 100,
                resumes_at_offset: 150,
                unreachable_segments: 3,
                bridged_by_base_offset: None,
            })
        );
        assert_eq!(s.lag_ms, Some(50_000));
    }

    /// What a prune leaves: the manifest's base and the early log deleted, a daily restore
    /// point kept before the window, the window anchored at a later base. No hole, no
    /// description of the deleted base as the one restores use.
    #[test]
    fn after_prune_kept_points_are_listed_and_no_hole_is_reported() {
        let g = layout::generation_id(T0);
        let mut gen = generation(
            T0,
            Some(manifest(&g, 0, T0, None)),
            vec![
                sealed(&g, 450, 600, T0 + 45_000, T0 + 60_000, 10),
                sealed(&g, 600, 700, T0 + 60_000, T0 + 70_000, 10),
            ],
            vec![],
        );
        let base = |offset: u64, time_ms: u64| crate::store::catalog::BaseObject {
            offset,
            time_ms,
            key: layout::base_key(SRC, &g, offset, time_ms, 100, 0),
            size: 100,
            recorded_size: 100,
            crc32c: 0,
        };
        gen.bases = vec![base(100, T0 + 10_000), base(500, T0 + 50_000)];
        let s = source_info(SRC, &[gen], T0 + 71_000);
        let info = &s.generations[0];
        assert_eq!(info.chain_break, None);
        assert!(info.base_pruned);
        assert_eq!(
            info.window.as_ref().map(|w| (w.from_offset, w.to_offset)),
            Some((500, 700))
        );
        assert_eq!(
            info.restore_base.as_ref().map(|b| (b.offset, b.time_ms)),
            Some((500, T0 + 50_000))
        );
        assert_eq!(s.latest_base, info.restore_base);
        assert_eq!(
            s.restore_points
                .iter()
                .map(|p| (p.offset, p.time_ms, p.to_offset))
                .collect::<Vec<_>>(),
            [(100, T0 + 10_000, 100)]
        );
        assert_eq!(s.windows.len(), 1);
    }

    #[test]
    fn a_tail_duplicating_its_sealed_copy_is_not_a_hole() {
        let g = layout::generation_id(T0);
        let gen = generation(
            T0,
            Some(manifest(&g, 0, T0, None)),
            vec![sealed(&g, 0, 100, T0, T0 + 10_000, 10)],
            vec![tail(&g, 0, 100, T0 + 10_000, false)],
        );
        assert_eq!(
            source_info(SRC, &[gen], T0).generations[0].chain_break,
            None
        );
    }

    #[test]
    fn a_manifest_without_its_base_is_not_restorable() {
        let g = layout::generation_id(T0);
        let mut gen = generation(T0, Some(manifest(&g, 14, T0, None)), vec![], vec![]);
        gen.bases.clear();
        let s = source_info(SRC, &[gen], T0);
        assert_eq!(s.generations[0].status, GenerationStatus::Incomplete);
        assert!(
            s.generations[0]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("base/000000000000000e-")),
            "{:?}",
            s.generations[0].problem
        );
        assert!(s.windows.is_empty());
    }

    #[test]
    fn json_shape() {
        let s = source_info(SRC, &history(), T0 + 701_000);
        let info = StoreInfo {
            schema: SCHEMA_VERSION,
            store: "./x".into(),
            now_ms: T0,
            now: format_rfc3339_ms(T0),
            bytes: s.bytes,
            sources: vec![s],
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["schema"], 1);
        let src = &v["sources"][0];
        assert_eq!(src["lag_ms"], 1_000);
        assert_eq!(src["windows"][1]["to"], "2026-11-23T17:51:40.000Z");
        assert_eq!(
            src["windows"][1]["generation"],
            layout::generation_id(T0 + 600_000)
        );
        let g = &src["generations"][0];
        let mut keys: Vec<&str> = g.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "base_offset",
                "base_pruned",
                "base_size",
                "bytes",
                "chain_break",
                "id",
                "previous",
                "problem",
                "rdb_version",
                "reason",
                "replid",
                "restore_base",
                "restore_points",
                "sealed_segments",
                "server",
                "started",
                "started_ms",
                "status",
                "tail_segments",
                "torn_tail",
                "window"
            ]
        );
        let mut wkeys: Vec<&str> = g["window"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        wkeys.sort();
        assert_eq!(
            wkeys,
            ["from", "from_ms", "from_offset", "to", "to_ms", "to_offset"]
        );
        assert_eq!(g["status"], "complete");
        assert_eq!(src["generations"][2]["status"], "incomplete");
        assert!(src["generations"][2]["window"].is_null());
        let back: StoreInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(4_200), "4.1 KiB");
        assert_eq!(format_bytes(12_900_000), "12.3 MiB");
    }

    /// A store built by hand on disk, read back through [`gather`]: real manifest envelopes and
    /// real segment files, so the window and byte counts come from what the catalog parses.
    mod on_disk {
        use super::*;
        use crate::store::Access;
        use flashback_format::segment::{
            Origin, Record, SegmentHeader, SegmentWriter, WriterOptions,
        };
        use object_store::{ObjectStoreExt, PutPayload};

        const REPLID: &str = "8f3c1e1a9a0b4c2d8e7f6a5b4c3d2e1f0a9b8c7d";

        fn set_cmd(key: &str, value: &str) -> Vec<u8> {
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                key.len(),
                value.len()
            )
            .into_bytes()
        }

        /// A segment writer from `start`, with one block of `n` SETs arriving one second apart
        /// from `t`, covered through `t + n s`.
        fn writer(start: u64, t: u64, n: u64) -> SegmentWriter<Vec<u8>> {
            let header = SegmentHeader {
                replid: REPLID.into(),
                start_offset: start,
                start_db: 0,
                start_in_multi: false,
                created_ms: t,
                origin: Origin::NewGeneration,
            };
            let mut w = SegmentWriter::new(Vec::new(), &header, WriterOptions::default()).unwrap();
            for i in 0..n {
                let resp = set_cmd(&format!("k{i}"), "v");
                let rec = Record {
                    end_offset: w.end_offset() + resp.len() as u64,
                    time_ms: t + i * 1000,
                    db: 0,
                    boundary: true,
                    resp,
                };
                w.append(&rec).unwrap();
            }
            w.flush_block(t + n * 1000, 0).unwrap();
            w
        }

        async fn put(store: &Store, key: &object_store::path::Path, bytes: Vec<u8>) -> u64 {
            let n = bytes.len() as u64;
            store.os.put(key, PutPayload::from(bytes)).await.unwrap();
            n
        }

        #[tokio::test]
        async fn gather_reads_windows_bytes_and_torn_tails_from_files() {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(
                dir.path().to_str().unwrap(),
                &crate::store::StoreConfig::new(Access::Write),
            )
            .unwrap();
            let g1 = layout::generation_id(T0);
            let base_time = T0 + 2_000;
            let mut stored = 0;

            let m = manifest(&g1, 14, base_time, None);
            let base = vec![b'R'; 1000];
            let base_key = layout::base_key(SRC, &g1, 14, 1, 1000, crc32c::crc32c(&base));
            stored += put(&store, &base_key, base).await;
            put(&store, &layout::manifest_key(SRC, &g1), m.encode()).await;

            // One sealed segment of 5 records, then an open tail with 3 records and then a
            // second block cut short, as if the agent died while writing it.
            let (bytes, sum) = writer(14, base_time + 1_000, 5)
                .finish(base_time + 10_000)
                .unwrap();
            let name = SealedName {
                start_offset: sum.start_offset,
                end_offset: sum.end_offset,
                first_time_ms: sum.first_time_ms,
                end_time_ms: sum.end_time_ms,
                size: bytes.len() as u64,
                crc32c: crc32c::crc32c(&bytes),
            };
            stored += put(&store, &layout::segment_key(SRC, &g1, &name), bytes).await;
            let mut tail = writer(sum.end_offset, base_time + 11_000, 3);
            let tail_end = tail.end_offset();
            let intact = tail.bytes_written() as usize;
            let resp = set_cmd("late", "x");
            tail.append(&Record {
                end_offset: tail_end + resp.len() as u64,
                time_ms: base_time + 20_000,
                db: 0,
                boundary: true,
                resp,
            })
            .unwrap();
            tail.flush_block(base_time + 21_000, 0).unwrap();
            let mut tail_bytes = tail.get_ref().clone();
            tail_bytes.truncate(intact + (tail_bytes.len() - intact) / 2);
            stored += put(
                &store,
                &layout::tail_key(SRC, &g1, sum.end_offset),
                tail_bytes,
            )
            .await;

            // A later generation whose base never finished: only its tail exists.
            let g2 = layout::generation_id(T0 + 600_000);
            let (bytes2, _) = writer(50_000, T0 + 601_000, 1)
                .finish(T0 + 602_000)
                .unwrap();
            let stored2 = put(&store, &layout::tail_key(SRC, &g2, 50_000), bytes2).await;

            let now = base_time + 15_000;
            let info = gather(&store, now).await.unwrap();
            assert_eq!(info.schema, SCHEMA_VERSION);
            assert_eq!(info.sources.len(), 1);
            let s = &info.sources[0];
            assert_eq!(s.bytes, stored + stored2);
            assert_eq!(info.bytes, s.bytes);
            assert_eq!(s.windows.len(), 1, "{s:#?}");
            let w = &s.windows[0];
            assert_eq!(
                (w.generation.as_str(), w.from_ms, w.from_offset),
                (g1.as_str(), base_time, 14)
            );
            assert_eq!(
                (w.to_offset, w.to_ms),
                (tail_end, base_time + 14_000),
                "the torn block adds nothing"
            );
            assert_eq!(s.lag_ms, Some(1_000));

            let gi = &s.generations[0];
            assert_eq!(
                (gi.status, gi.sealed_segments, gi.tail_segments, gi.bytes),
                (GenerationStatus::Complete, 1, 1, stored)
            );
            assert!(gi.torn_tail);
            assert_eq!(gi.replid.as_deref(), Some(m.replid.as_str()));
            assert_eq!(gi.chain_break, None);
            let g2i = &s.generations[1];
            assert_eq!(
                (g2i.status, g2i.problem.as_deref(), g2i.window.is_none()),
                (
                    GenerationStatus::Incomplete,
                    Some(BASE_NEVER_FINISHED),
                    true
                )
            );

            let v = serde_json::to_value(&info).unwrap();
            assert_eq!(v["sources"][0]["windows"][0]["to_offset"], tail_end);
            assert_eq!(
                v["sources"][0]["generations"][1]["problem"],
                BASE_NEVER_FINISHED
            );
        }

        #[tokio::test]
        async fn an_empty_store_has_no_sources() {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(
                dir.path().to_str().unwrap(),
                &crate::store::StoreConfig::new(Access::Write),
            )
            .unwrap();
            let info = gather(&store, T0).await.unwrap();
            assert!(info.sources.is_empty());
            assert_eq!(
                serde_json::to_value(&info).unwrap()["sources"],
                serde_json::json!([])
            );
        }
    }
}
