//! `flashback info`: what the store holds and what restore can reach, for a person (text) or a
//! script (`--json`, schema in `docs/cli.md`). Both are rendered from one
//! [`flashback::info::StoreInfo`], so they cannot disagree.

use flashback::info::{
    self, format_bytes, GenerationInfo, GenerationStatus, SourceInfo, StoreInfo,
};
use flashback::store::{Access, Store, StoreConfig};
use flashback::timespec::{format_duration_ms, format_ms};
use std::fmt::Write as _;

/// A live agent writes a heartbeat block every second; more than this behind now means no
/// capture is keeping up (stopped, stalled, or cut off from the store).
const HEALTHY_LAG_MS: u64 = 5_000;

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flashback info                                # the store in ./flashback-data
  flashback info --store /var/lib/flashback
  flashback info --json | jq '.sources[] | {name, lag_ms, windows}'

Times are shown in this machine's local time zone; --json gives ms since the epoch and RFC 3339 (UTC).
A healthy live capture lags about 1 s behind now.
")]
pub struct Args {
    /// Where captured data lives: a directory or file:///path.
    #[arg(long, value_name = "URL", default_value = super::DEFAULT_STORE)]
    store: String,
    /// Print the report as JSON (stable schema, see docs/cli.md).
    #[arg(long)]
    json: bool,
}

pub async fn run(a: Args, config: &StoreConfig) -> anyhow::Result<()> {
    let store = Store::open(&a.store, &config.with_access(Access::Read))?;
    store.check(Access::Read).await?;
    let report = info::gather(&store, flashback::now_ms()).await?;
    let out = if a.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    };
    print!("{out}");
    Ok(())
}

/// The text report. Full local dates everywhere: at 3 a.m. across midnight, a bare
/// `02:59:58` is a trap.
pub fn render(r: &StoreInfo) -> String {
    let mut o = String::new();
    if r.sources.is_empty() {
        let _ = writeln!(o, "No captured sources in {} yet.", r.store);
        let _ = writeln!(o, "Start a capture with:");
        let _ = writeln!(
            o,
            "  flashback capture --source redis://HOST:6379 --store {}",
            r.store
        );
        return o;
    }
    let _ = writeln!(
        o,
        "Store {}: {} source{}, {}; now {}",
        r.store,
        r.sources.len(),
        if r.sources.len() == 1 { "" } else { "s" },
        format_bytes(r.bytes),
        format_ms(r.now_ms)
    );
    for s in &r.sources {
        o.push('\n');
        render_source(&mut o, r, s);
    }
    o
}

fn render_source(o: &mut String, r: &StoreInfo, s: &SourceInfo) {
    if let Some(c) = &s.cluster {
        use std::fmt::Write as _;
        let _ = writeln!(o, "{}  (cluster, {} shards)", s.name, c.shards.len());
        match &c.window {
            Some(w) => {
                let _ = writeln!(o, "  window (every shard): {} .. {}", w.from, w.to);
            }
            None => {
                let _ = writeln!(o, "  window (every shard): none yet");
            }
        }
        for sh in &c.shards {
            let _ = writeln!(
                o,
                "  shard {}: {}, lag {}, {} generation(s){}",
                sh.label,
                sh.window
                    .as_ref()
                    .map(|w| format!("{} .. {}", w.from, w.to))
                    .unwrap_or_else(|| "nothing restorable yet".into()),
                sh.lag_ms
                    .map(|l| format!("{:.1} s", l as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                sh.generations,
                sh.joined_ms
                    .map(|t| format!(", joined the cluster {}", flashback::timespec::format_ms(t)))
                    .unwrap_or_default()
            );
        }
        return;
    }
    let _ = writeln!(o, "source {}  ({} stored)", s.name, format_bytes(s.bytes));
    match (s.lag_ms, s.windows.last()) {
        (Some(lag), Some(w)) => {
            let verdict = if lag <= HEALTHY_LAG_MS {
                "capture is live".to_string()
            } else {
                format!(
                    "nothing newer is restorable: is `flashback capture` running and reaching {}?",
                    r.store
                )
            };
            let _ = writeln!(
                o,
                "  latest restorable: {} ({} ago; {verdict})",
                format_ms(w.to_ms),
                format_duration_ms(lag)
            );
        }
        _ if s.generations.is_empty() => {
            // The agent has claimed the name but the primary has not started sending its
            // snapshot (Redis waits `repl-diskless-sync-delay`, 5 s by default).
            let _ = writeln!(o, "  nothing restorable yet: no generation started (capture starting, waiting for the primary's snapshot?)");
            return;
        }
        _ => {
            let _ = writeln!(
                o,
                "  nothing restorable yet: no generation has a finished base"
            );
        }
    }
    if let Some(b) = &s.latest_base {
        let _ = writeln!(
            o,
            "  latest restore starts from: the base at offset {} ({}, {}, generation {})",
            b.offset,
            format_ms(b.time_ms),
            format_bytes(b.size),
            b.generation
        );
    }
    if !s.restore_points.is_empty() {
        let _ = writeln!(o, "  kept restore points (before the windows):");
        for p in &s.restore_points {
            if p.to_offset == p.offset {
                let _ = writeln!(
                    o,
                    "    {}  (a base alone, offset {}, generation {}: this exact instant only)",
                    format_ms(p.time_ms),
                    p.offset,
                    p.generation
                );
            } else {
                let _ = writeln!(
                    o,
                    "    {} → {}  (offsets {}..{}, generation {})",
                    format_ms(p.time_ms),
                    format_ms(p.to_ms),
                    p.offset,
                    p.to_offset,
                    p.generation
                );
            }
        }
    }
    if !s.windows.is_empty() {
        let _ = writeln!(o, "  restorable windows:");
        for (i, w) in s.windows.iter().enumerate() {
            if i > 0 {
                let prev = &s.windows[i - 1];
                let why = s
                    .generations
                    .iter()
                    .find(|g| g.id == w.generation)
                    .and_then(|g| g.reason.as_deref())
                    .unwrap_or("unknown");
                let _ = writeln!(
                    o,
                    "      gap of {} not restorable; capture restarted from a new base because: {why}",
                    format_duration_ms(w.from_ms.saturating_sub(prev.to_ms))
                );
            }
            let _ = writeln!(
                o,
                "    {} → {}  ({}, offsets {}..{})",
                format_ms(w.from_ms),
                format_ms(w.to_ms),
                format_duration_ms(w.to_ms.saturating_sub(w.from_ms)),
                w.from_offset,
                w.to_offset
            );
        }
    }
    if !s.uncertain.is_empty() {
        let _ = writeln!(
            o,
            "  uncertain intervals (restore --at refuses a time inside one unless --inexact; --at-offset stays exact):"
        );
        for u in &s.uncertain {
            let _ = writeln!(
                o,
                "    {} → {}  ({}, offsets {}..{}, generation {})",
                format_ms(u.from_ms),
                format_ms(u.to_ms),
                format_duration_ms(u.to_ms.saturating_sub(u.from_ms)),
                u.from_offset,
                u.to_offset,
                u.generation
            );
        }
    }
    let _ = writeln!(o, "  generations, oldest first:");
    for g in &s.generations {
        render_generation(o, g);
    }
    if let Some(newest) = s.generations.last() {
        if newest.status == GenerationStatus::Incomplete && !s.windows.is_empty() {
            let _ = writeln!(
                o,
                "  note: the newest generation {} has no usable base yet (still arriving, or the agent stopped first); restores reach only the windows above",
                newest.id
            );
        }
    }
    if let Some(w) = s.windows.last() {
        let _ = writeln!(
            o,
            "  restore e.g.: flashback restore --store {} --name {} --at '{}' --rdb restored.rdb",
            r.store,
            s.name,
            format_ms(w.to_ms)
        );
    }
}

fn render_generation(o: &mut String, g: &GenerationInfo) {
    let _ = write!(o, "    {}  started {}", g.id, format_ms(g.started_ms));
    match (&g.status, &g.problem, &g.reason) {
        (GenerationStatus::Incomplete, problem, _) => {
            let _ = writeln!(
                o,
                ": incomplete ({})",
                problem.as_deref().unwrap_or("not restorable")
            );
        }
        (GenerationStatus::Complete, _, reason) => {
            let _ = writeln!(
                o,
                ": {}",
                reason.as_deref().unwrap_or("reason not recorded")
            );
        }
    }
    let mut facts = Vec::new();
    if let Some(server) = &g.server {
        facts.push(match g.rdb_version {
            Some(v) => format!("{server} (RDB {v})"),
            None => server.clone(),
        });
    }
    match (&g.restore_base, g.base_offset, g.base_size) {
        // After a prune the manifest's base is gone: describe the one restores use.
        (Some(b), Some(first), _) if g.base_pruned => facts.push(format!(
            "base {} at offset {} (the first base, at offset {first}, was pruned)",
            format_bytes(b.size),
            b.offset
        )),
        (_, Some(off), Some(size)) => {
            facts.push(format!("base {} at offset {off}", format_bytes(size)))
        }
        _ => {}
    }
    facts.push(format!(
        "{} sealed segment{}, {} open tail{}",
        g.sealed_segments,
        if g.sealed_segments == 1 { "" } else { "s" },
        g.tail_segments,
        if g.tail_segments == 1 { "" } else { "s" }
    ));
    facts.push(format!("{} total", format_bytes(g.bytes)));
    let _ = writeln!(o, "      {}", facts.join(" · "));
    if let Some(w) = &g.window {
        let _ = writeln!(
            o,
            "      window {} → {} ({})",
            format_ms(w.from_ms),
            format_ms(w.to_ms),
            format_duration_ms(w.to_ms.saturating_sub(w.from_ms))
        );
    }
    if let Some(p) = &g.previous {
        let _ = writeln!(
            o,
            "      follows {} which ended at {} (offset {})",
            p.generation,
            format_ms(p.end_time_ms),
            p.end_offset
        );
    }
    if let Some(b) = g.chain_break.filter(|b| b.bridged_by_base_offset.is_some()) {
        let _ = writeln!(
            o,
            "      WARNING: segments missing between offsets {} and {}: instants in between cannot be restored; the window resumes at the base at offset {}; run flashback verify",
            b.at_offset,
            b.resumes_at_offset,
            b.bridged_by_base_offset.unwrap_or_default()
        );
    } else if let Some(b) = &g.chain_break {
        let _ = writeln!(
            o,
            "      WARNING: segments missing between offsets {} and {}: the window stops there and {} later segment{} cannot be restored; run flashback verify",
            b.at_offset,
            b.resumes_at_offset,
            b.unreachable_segments,
            if b.unreachable_segments == 1 { "" } else { "s" }
        );
    }
    if let Some(d) = &g.damaged_tail {
        let _ = writeln!(o, "      DAMAGED: {d}; run flashback verify");
    }
    if g.torn_tail {
        let _ = writeln!(
            o,
            "      the open tail ends in a partly written block (agent killed mid-write, or writing right now); restore ignores it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashback::info::{ChainBreak, RestorableWindow, WindowInfo, SCHEMA_VERSION};
    use flashback::timespec::format_rfc3339_ms;

    const T0: u64 = 1_795_455_600_000;

    fn window(from_ms: u64, to_ms: u64, from_offset: u64, to_offset: u64) -> WindowInfo {
        WindowInfo {
            from_ms,
            to_ms,
            from: format_rfc3339_ms(from_ms),
            to: format_rfc3339_ms(to_ms),
            from_offset,
            to_offset,
        }
    }

    fn gen(id: &str, w: Option<WindowInfo>, reason: Option<&str>) -> GenerationInfo {
        GenerationInfo {
            id: id.into(),
            status: if w.is_some() {
                GenerationStatus::Complete
            } else {
                GenerationStatus::Incomplete
            },
            problem: if w.is_some() {
                None
            } else {
                Some(info::BASE_NEVER_FINISHED.into())
            },
            started_ms: T0,
            started: format_rfc3339_ms(T0),
            replid: w.as_ref().map(|_| "ab".repeat(20)),
            base_offset: w.as_ref().map(|w| w.from_offset),
            base_size: w.as_ref().map(|_| 2048),
            rdb_version: w.as_ref().map(|_| 10),
            server: w.as_ref().map(|_| "redis 7.0.15".into()),
            reason: reason.map(Into::into),
            previous: None,
            sealed_segments: 2,
            tail_segments: 1,
            bytes: 5000,
            window: w,
            torn_tail: false,
            damaged_tail: None,
            chain_break: None,
            base_pruned: false,
            restore_base: None,
            restore_points: vec![],
        }
    }

    fn report(sources: Vec<SourceInfo>, now_ms: u64) -> StoreInfo {
        StoreInfo {
            schema: SCHEMA_VERSION,
            store: "/data/fb".into(),
            now_ms,
            now: format_rfc3339_ms(now_ms),
            bytes: sources.iter().map(|s| s.bytes).sum(),
            sources,
        }
    }

    fn source(gens: Vec<GenerationInfo>, now_ms: u64) -> SourceInfo {
        let windows: Vec<RestorableWindow> = gens
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
        let lag_ms = windows.last().map(|w| now_ms.saturating_sub(w.to_ms));
        SourceInfo {
            name: "cache".into(),
            bytes: gens.iter().map(|g| g.bytes).sum(),
            windows,
            lag_ms,
            uncertain: vec![],
            latest_base: gens.iter().rev().find_map(|g| g.restore_base.clone()),
            restore_points: gens
                .iter()
                .flat_map(|g| g.restore_points.iter().cloned())
                .collect(),
            generations: gens,
            cluster: None,
        }
    }

    #[test]
    fn empty_store_says_how_to_start() {
        let text = render(&report(vec![], T0));
        assert!(text.contains("No captured sources in /data/fb"), "{text}");
        assert!(
            text.contains("flashback capture --source redis://HOST:6379 --store /data/fb"),
            "{text}"
        );
    }

    #[test]
    fn live_source_with_a_gap_and_an_incomplete_generation() {
        let now = T0 + 700_800;
        let gens = vec![
            gen(
                "g1",
                Some(window(T0 + 2_000, T0 + 120_000, 14, 9_000)),
                Some("first capture"),
            ),
            gen(
                "g2",
                Some(window(T0 + 601_000, T0 + 700_000, 100_000, 100_900)),
                Some("backlog overrun"),
            ),
            gen("g3", None, None),
        ];
        let text = render(&report(vec![source(gens, now)], now));
        for want in [
            "source cache",
            "capture is live",
            "800ms ago",
            &format!("{} → {}", format_ms(T0 + 2_000), format_ms(T0 + 120_000)),
            "gap of 8m 01s not restorable; capture restarted from a new base because: backlog overrun",
            "offsets 100000..100900",
            "g3  started",
            "incomplete (base never finished)",
            "redis 7.0.15 (RDB 10) · base 2.0 KiB at offset 14 · 2 sealed segments, 1 open tail",
            "newest generation g3 has no usable base yet",
            &format!("--name cache --at '{}'", format_ms(T0 + 700_000)),
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn stale_capture_and_broken_chain_are_called_out() {
        let now = T0 + 3 * 3_600_000;
        let mut g = gen(
            "g1",
            Some(window(T0, T0 + 60_000, 0, 100)),
            Some("first capture"),
        );
        g.chain_break = Some(ChainBreak {
            at_offset: 100,
            resumes_at_offset: 150,
            unreachable_segments: 2,
            bridged_by_base_offset: None,
        });
        g.torn_tail = true;
        let text = render(&report(vec![source(vec![g], now)], now));
        assert!(
            text.contains(
                "2h 59m ago; nothing newer is restorable: is `flashback capture` running"
            ),
            "{text}"
        );
        assert!(
            text.contains("WARNING: segments missing between offsets 100 and 150"),
            "{text}"
        );
        assert!(
            text.contains("2 later segments cannot be restored"),
            "{text}"
        );
        assert!(text.contains("partly written block"), "{text}");
    }

    /// A hole that a later base bridges costs only the instants between: the warning says the
    /// window resumes, not that later segments are lost.
    #[test]
    fn a_bridged_hole_says_where_the_window_resumes() {
        let now = T0 + 100_000;
        let mut g = gen(
            "g1",
            Some(window(T0 + 50_000, T0 + 99_000, 500, 700)),
            Some("first capture"),
        );
        g.chain_break = Some(ChainBreak {
            at_offset: 100,
            resumes_at_offset: 150,
            unreachable_segments: 0,
            bridged_by_base_offset: Some(500),
        });
        let text = render(&report(vec![source(vec![g], now)], now));
        assert!(
            text.contains("WARNING: segments missing between offsets 100 and 150: instants in between cannot be restored; the window resumes at the base at offset 500"),
            "{text}"
        );
        assert!(!text.contains("cannot be restored; run"), "{text}");
    }

    /// After a prune: the base restores use, not the deleted first one, and the kept points.
    #[test]
    fn pruned_base_and_kept_restore_points_are_shown() {
        let now = T0 + 100_000;
        let mut g = gen(
            "g1",
            Some(window(T0 + 50_000, T0 + 99_000, 500, 700)),
            Some("first capture"),
        );
        g.base_offset = Some(0);
        g.base_pruned = true;
        g.restore_base = Some(info::BaseInfo {
            generation: "g1".into(),
            offset: 500,
            time_ms: T0 + 50_000,
            time: format_rfc3339_ms(T0 + 50_000),
            size: 4096,
            key: "sources/cache/generations/g1/base/x.rdb".into(),
        });
        g.restore_points = vec![info::RestorePointInfo {
            generation: "g1".into(),
            offset: 100,
            time_ms: T0 + 10_000,
            time: format_rfc3339_ms(T0 + 10_000),
            to_ms: T0 + 10_000,
            to: format_rfc3339_ms(T0 + 10_000),
            to_offset: 100,
        }];
        let text = render(&report(vec![source(vec![g], now)], now));
        for want in [
            "latest restore starts from: the base at offset 500",
            "kept restore points (before the windows):",
            &format!(
                "{}  (a base alone, offset 100, generation g1: this exact instant only)",
                format_ms(T0 + 10_000)
            ),
            "base 4.0 KiB at offset 500 (the first base, at offset 0, was pruned)",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("WARNING"), "{text}");
        assert!(!text.contains("base 2.0 KiB at offset 0"), "{text}");
    }

    #[test]
    fn a_source_without_generations() {
        let text = render(&report(vec![source(vec![], T0)], T0));
        assert!(text.contains("no generation started"), "{text}");
        assert!(!text.contains("generations, oldest first"), "{text}");
    }

    #[test]
    fn nothing_restorable() {
        let text = render(&report(vec![source(vec![gen("g1", None, None)], T0)], T0));
        assert!(text.contains("nothing restorable yet"), "{text}");
        assert!(!text.contains("restore e.g."), "{text}");
    }
}
