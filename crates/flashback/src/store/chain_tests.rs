//! Table-driven tests of the chain walker, in the raft-rs "data-driven" style: a listing in a
//! few lines, the walker's whole answer rendered as text, compared with the expected text.
//!
//! Listing lines: `manifest OFFSET @TIME`, `base OFFSET @TIME`, `sealed START..END @FIRST..END`,
//! `tail START..END @FIRST..THROUGH` (times in seconds after an arbitrary epoch).

use super::*;
use crate::store::catalog::{SealedSegment, TailSegment};
use crate::store::layout::{self, SealedName};
use crate::store::manifest::GenerationManifest;

const GEN: &str = "20260101T000000000Z";

fn listing(text: &str) -> Generation {
    let mut g = Generation {
        id: GEN.into(),
        manifest: None,
        bases: vec![],
        sealed: vec![],
        tails: vec![],
        head: None,
        commands: None,
        uncertain: vec![],
        summaries: vec![],
    };
    let range = |s: &str| -> (u64, u64) {
        let (a, b) = s.split_once("..").expect("a range");
        (a.parse().expect("a number"), b.parse().expect("a number"))
    };
    let ms = |s: &str| -> u64 { s.trim_start_matches('@').parse::<u64>().expect("a time") * 1000 };
    let ms_range = |s: &str| -> (u64, u64) {
        let (a, b) = range(s.trim_start_matches('@'));
        (a * 1000, b * 1000)
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "manifest" => {
                g.manifest = Some(GenerationManifest {
                    source: "src".into(),
                    generation: GEN.into(),
                    replid: "8f3c1e1a9a0b4c2d8e7f6a5b4c3d2e1f0a9b8c7d".into(),
                    base_offset: w[1].parse().expect("an offset"),
                    base_time_ms: ms(w[2]),
                    base_db: 0,
                    base_size: 10,
                    rdb_version: 10,
                    server: "redis 7.0.15".into(),
                    reason: "first capture".into(),
                    previous: None,
                    agent_version: "test".into(),
                })
            }
            "base" => {
                let (offset, time_ms) = (w[1].parse().expect("an offset"), ms(w[2]));
                g.bases.push(BaseObject {
                    offset,
                    time_ms,
                    key: layout::base_key("src", GEN, offset, time_ms, 10, 0),
                    size: 10,
                    recorded_size: 10,
                    crc32c: 0,
                })
            }
            "sealed" => {
                let (start, end) = range(w[1]);
                let (t0, t1) = ms_range(w[2]);
                let name = SealedName {
                    start_offset: start,
                    end_offset: end,
                    first_time_ms: t0,
                    end_time_ms: t1,
                    size: 10,
                    crc32c: 0,
                };
                g.sealed.push(SealedSegment {
                    name,
                    key: layout::segment_key("src", GEN, &name),
                    size: 10,
                })
            }
            "tail" => {
                let (start, end) = range(w[1]);
                let (t0, t1) = ms_range(w[2]);
                g.tails.push(TailSegment {
                    key: layout::tail_key("src", GEN, start),
                    size: 10,
                    start_offset: start,
                    end_offset: end,
                    first_time_ms: t0,
                    covered_through_ms: t1,
                    torn: false,
                    damage: None,
                })
            }
            other => panic!("unknown listing line {other}"),
        }
    }
    g
}

fn name(w: Which) -> String {
    match w {
        Which::Sealed(i) => format!("s{i}"),
        Which::Tail(i) => format!("t{i}"),
    }
}

/// The walker's whole answer, one fact a line.
fn answer(c: &Chain) -> String {
    let g = c.generation;
    let s = |ms: u64| ms / 1000;
    let mut out = Vec::new();
    for (i, r) in c.runs.iter().enumerate() {
        let w = r.window;
        let bases: Vec<String> = r
            .bases
            .iter()
            .map(|&b| g.bases[b].offset.to_string())
            .collect();
        let segs: Vec<String> = r.segments.iter().map(|x| name(x.which)).collect();
        out.push(format!(
            "run {i}: {}..{} @{}..{} bases {} {}",
            w.from_offset,
            w.to_offset,
            s(w.from_ms),
            s(w.to_ms),
            bases.join(","),
            if r.is_point() {
                "point".to_string()
            } else {
                format!("segs {}", segs.join(","))
            }
        ));
    }
    for h in &c.holes {
        out.push(format!(
            "hole after run {}: {}..{} @{}..{} {}",
            h.run,
            h.from_offset,
            h.to_offset,
            s(h.from_ms),
            s(h.to_ms),
            match h.bridged_by {
                Some(r) => format!("bridged by run {r}"),
                None => format!("unreachable {}", h.unreachable_segments),
            }
        ));
    }
    let roles: Vec<String> = c
        .spans
        .iter()
        .map(|(sp, r)| {
            let r = match r {
                Role::Needed(i) => format!("needed({i})"),
                Role::BeforeBase => "before-base".into(),
                Role::Duplicate => "duplicate".into(),
                Role::Unreachable => "unreachable".into(),
            };
            format!("{}={r}", name(sp.which))
        })
        .collect();
    if !roles.is_empty() {
        out.push(format!("roles: {}", roles.join(" ")));
    }
    out.push(match c.latest_base() {
        Some(b) => format!("latest base: {}", b.offset),
        None => "latest base: none".into(),
    });
    out.join("\n")
}

fn check(case: &str, listing_text: &str, expected: &str) {
    let g = listing(listing_text);
    let got = answer(&Chain::of(&g));
    let want: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(got, want.join("\n"), "case: {case}\n--- got:\n{got}\n");
}

#[test]
fn data_driven() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "a whole log from the manifest's base; the cheapest base for the latest instant",
            "manifest 0 @10
             base 0 @10
             base 150 @25
             sealed 0..100 @11..20
             sealed 100..200 @21..30
             tail 200..250 @31..40",
            "run 0: 0..250 @10..40 bases 0,150 segs s0,s1,t0
             roles: s0=needed(0) s1=needed(0) t0=needed(0)
             latest base: 150",
        ),
        (
            "pruned first base, kept daily points before the window; the anchor falls inside a segment",
            "manifest 0 @10
             base 100 @20
             base 300 @40
             base 500 @60
             sealed 450..600 @55..70
             sealed 600..700 @71..80",
            "run 0: 100..100 @20..20 bases 100 point
             run 1: 300..300 @40..40 bases 300 point
             run 2: 500..700 @60..80 bases 500 segs s0,s1
             roles: s0=needed(2) s1=needed(2)
             latest base: 500",
        ),
        (
            "a kept point in an older generation: a base and nothing else",
            "manifest 0 @10
             base 0 @10",
            "run 0: 0..0 @10..10 bases 0 point
             latest base: 0",
        ),
        (
            "a hole in the middle, bridged by a later base",
            "manifest 0 @10
             base 0 @10
             base 300 @40
             sealed 0..100 @11..20
             sealed 150..200 @25..30
             sealed 250..400 @35..50",
            "run 0: 0..100 @10..20 bases 0 segs s0
             run 1: 300..400 @40..50 bases 300 segs s2
             hole after run 0: 100..150 @20..25 bridged by run 1
             roles: s0=needed(0) s1=before-base s2=needed(1)
             latest base: 300",
        ),
        (
            "a hole in the middle that no base bridges",
            "manifest 0 @10
             base 0 @10
             sealed 0..100 @11..20
             sealed 150..200 @25..30
             sealed 200..300 @31..40
             tail 300..400 @41..50",
            "run 0: 0..100 @10..20 bases 0 segs s0
             hole after run 0: 100..150 @20..25 unreachable 3
             roles: s0=needed(0) s1=unreachable s2=unreachable t0=unreachable
             latest base: 0",
        ),
        (
            "a tail duplicating its sealed copy is no hole",
            "manifest 0 @10
             base 0 @10
             sealed 0..100 @11..20
             tail 0..100 @11..20",
            "run 0: 0..100 @10..20 bases 0 segs s0
             roles: s0=needed(0) t0=duplicate
             latest base: 0",
        ),
        (
            "a manifest without its base restores nothing",
            "manifest 14 @10
             sealed 14..100 @11..20",
            "roles: s0=unreachable
             latest base: none",
        ),
        (
            "no manifest: nothing restores, whatever bases there are",
            "base 0 @10
             sealed 0..100 @11..20",
            "roles: s0=unreachable
             latest base: none",
        ),
        (
            "the first segment after the only base is missing",
            "manifest 0 @10
             base 0 @10
             sealed 100..200 @21..30",
            "run 0: 0..0 @10..10 bases 0 point
             hole after run 0: 0..100 @10..21 unreachable 1
             roles: s0=unreachable
             latest base: 0",
        ),
        (
            "bases older than the manifest's are not starting points; segments before it are not needed",
            "manifest 100 @20
             base 50 @15
             base 100 @20
             sealed 0..100 @11..20
             sealed 100..200 @21..30",
            "run 0: 100..200 @20..30 bases 100 segs s1
             roles: s0=before-base s1=needed(0)
             latest base: 100",
        ),
    ];
    for (case, listing_text, expected) in cases {
        check(case, listing_text, expected);
    }
}

#[test]
fn needed_segments_and_bases_for_a_cut() {
    let g = listing(
        "manifest 0 @10
         base 0 @10
         base 150 @25
         sealed 0..100 @11..20
         sealed 100..200 @21..30
         tail 200..250 @31..40",
    );
    let c = Chain::of(&g);
    let offsets = |v: Vec<Span>| -> Vec<u64> { v.iter().map(|s| s.start_offset).collect() };
    assert_eq!(offsets(c.needed(0, 120)), [0, 100]);
    assert_eq!(offsets(c.needed(150, 220)), [100, 200]);
    assert_eq!(offsets(c.needed(150, 150)), [100]);
    assert_eq!(c.base_for(0, 149).map(|b| b.offset), Some(0));
    assert_eq!(c.base_for(0, 150).map(|b| b.offset), Some(150));
    assert_eq!(c.run_at(250).map(|(i, _)| i), Some(0));
    assert_eq!(c.run_at(251).map(|(i, _)| i), None);
    assert_eq!(c.points().len(), 0);
}
