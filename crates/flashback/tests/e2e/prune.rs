//! Retention end to end: capture a real redis-server, compact, then `flashback prune --keep`
//! with a window that starts after the new base: `--dry-run` lists the old base and the early
//! segments, prune deletes them, the window still restores digest-equal, and an instant before
//! it is refused with the window printed.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn phase_writes(conn: &mut Conn, phase: &str) {
    bulk_sets(conn, phase);
    conn.call(&["HSET", "profile", phase, "1"]);
    conn.call(&["MULTI"]);
    conn.call(&["INCR", "counter"]);
    conn.call(&["RPUSH", "events", phase]);
    conn.call(&["EXEC"]);
    conn.call(&["DEL", &format!("{phase}:k7")]);
}

fn phase(source: &RedisProc, agent: &mut Agent, name: &str) -> (u64, String) {
    let mut conn = source.conn();
    phase_writes(&mut conn, name);
    agent.wait_caught_up(source);
    let t = now_ms();
    let state = state(&mut conn);
    std::thread::sleep(Duration::from_millis(5));
    (t, state)
}

fn flashback(args: &[&str]) -> Output {
    run_flashback(args, Duration::from_secs(300))
}

fn files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

struct History {
    _source: RedisProc,
    _dir: tempfile::TempDir,
    store: PathBuf,
    gen: PathBuf,
    /// (instant, state) after phases a, b (the new base's state) and c.
    points: Vec<(u64, String)>,
    /// Base file names: the first one, then the compacted one.
    bases: Vec<String>,
    new_base_offset: u64,
    new_base_time: u64,
}

/// Phases a and b, a stop/restart (which seals the tail), a compaction, 1.5 s of quiet, then
/// phase c and a stop.
fn history() -> History {
    let source = RedisProc::start(&["--repl-ping-replica-period", "3600"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--segment-mib", "1"]);
    agent.wait_online(&source);
    let a = phase(&source, &mut agent, "a");
    let b = phase(&source, &mut agent, "b");
    agent.stop();
    let mut agent = Agent::start(source.port, &store, &["--segment-mib", "1"]);
    agent.wait_online(&source);
    let out = flashback(&["compact", "--store", store.to_str().unwrap(), "--force"]);
    assert!(
        out.code == Some(0) && out.stdout.starts_with("new base"),
        "{}",
        out.all()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let c = phase(&source, &mut agent, "c");
    agent.stop();
    let gen = generation_dirs(&store).remove(0);
    let bases = files(&gen.join("base"), ".rdb");
    assert_eq!(bases.len(), 2, "{bases:?}");
    let new_base_offset = u64::from_str_radix(&bases[1][..16], 16).unwrap();
    let new_base_time = u64::from_str_radix(&bases[1][17..29], 16).unwrap();
    assert!(a.0 < new_base_time && new_base_time <= b.0 && b.0 < c.0);
    History {
        _source: source,
        _dir: dir,
        store,
        gen,
        points: vec![a, b, c],
        bases,
        new_base_offset,
        new_base_time,
    }
}

/// `--keep` such that the window starts half a second after the new base (before phase c).
fn keep_arg(h: &History) -> String {
    format!("{}ms", now_ms() - (h.new_base_time + 500))
}

/// The sealed segments that end at or before the new base: what the window no longer needs.
fn early_segments(h: &History) -> Vec<String> {
    files(&h.gen.join("segments"), ".seg")
        .into_iter()
        .filter(|n| u64::from_str_radix(&n[17..33], 16).unwrap() <= h.new_base_offset)
        .collect()
}

/// The summaries (`<start>-<end>.sum`) of these segments (`<start>-<end>-….seg`).
fn early_summaries(h: &History, early: &[String]) -> Vec<String> {
    files(&h.gen.join("summaries"), ".sum")
        .into_iter()
        .filter(|s| early.iter().any(|e| e[..33] == s[..33]))
        .collect()
}

#[test]
fn prune_lists_then_deletes_only_what_the_window_does_not_need() {
    let h = history();
    let s = h.store.to_str().unwrap();
    let early = early_segments(&h);
    assert!(!early.is_empty(), "phases a and b sealed segments");
    let later_before = files(&h.gen.join("segments"), ".seg").len() - early.len();

    // A window reaching back before everything deletes nothing.
    let out = flashback(&["prune", "--store", s, "--keep", "1d", "--dry-run"]);
    assert!(
        out.code == Some(0) && out.stdout.contains("nothing to delete"),
        "{}",
        out.all()
    );

    let keep = keep_arg(&h);
    let out = flashback(&["prune", "--store", s, "--keep", &keep, "--dry-run"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    for name in early.iter().chain([&h.bases[0]]) {
        assert!(
            out.stdout.contains(name.as_str()),
            "dry run does not list {name}:\n{}",
            out.all()
        );
    }
    assert!(!out.stdout.contains(&h.bases[1]), "{}", out.all());
    // Each early segment goes with its summary (deleted first), and the first base.
    let early_sums = early_summaries(&h, &early);
    assert_eq!(
        early_sums.len(),
        early.len(),
        "a summary per sealed segment"
    );
    let gone = early.len() + early_sums.len() + 1;
    assert!(
        out.stdout.contains(&format!("{gone} objects")),
        "{}",
        out.all()
    );
    // Nothing was deleted by the dry run.
    assert_eq!(files(&h.gen.join("base"), ".rdb"), h.bases);
    assert_eq!(early_segments(&h), early);

    let out = flashback(&["prune", "--store", s, "--keep", &keep]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains(&format!("deleted {gone} objects")),
        "{}",
        out.all()
    );
    assert_eq!(files(&h.gen.join("base"), ".rdb"), vec![h.bases[1].clone()]);
    assert!(early_segments(&h).is_empty());
    assert!(early_summaries(&h, &early).is_empty());
    assert_eq!(
        files(&h.gen.join("summaries"), ".sum").len(),
        later_before,
        "the kept segments keep their summaries"
    );
    assert_eq!(
        files(&h.gen.join("segments"), ".seg").len(),
        later_before,
        "segments after the new base stay"
    );
    assert!(h.gen.join("generation.meta").exists());

    // Again: nothing left to delete.
    let out = flashback(&["prune", "--store", s, "--keep", &keep_arg(&h)]);
    assert!(
        out.code == Some(0) && out.stdout.contains("nothing to delete"),
        "{}",
        out.all()
    );
    // Usage errors exit 2.
    for bad in [["--keep", "0s"], ["--keep", "1.5d"]] {
        let out = flashback(&["prune", "--store", s, bad[0], bad[1]]);
        assert_eq!(out.code, Some(2), "{}", out.all());
        assert!(out.stderr.contains("--keep"), "{}", out.all());
    }
}

/// After a prune the generation's window starts at its oldest remaining base, not at the
/// manifest's own (deleted) base.
#[test]
fn after_prune_the_window_restores_exactly_and_earlier_instants_are_refused() {
    let h = history();
    let s = h.store.to_str().unwrap();
    let out = flashback(&["prune", "--store", s, "--keep", &keep_arg(&h)]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let [(t_a, _), (t_b, state_b), (t_c, state_c)] = &h.points[..] else {
        unreachable!()
    };
    assert_eq!(&restore_rdb(&h.store, &["--at", &at_arg(*t_c)]), state_c);
    // Before the window asked for, but after the new base: still exact.
    assert_eq!(&restore_rdb(&h.store, &["--at", &at_arg(*t_b)]), state_b);
    let err = try_restore_rdb(&h.store, &["--at", &at_arg(*t_a)]).unwrap_err();
    assert!(
        err.contains("exit Some(1)") && err.contains("outside the restorable window"),
        "{err}"
    );
    assert!(
        err.contains(&format!("offsets {}..", h.new_base_offset)),
        "the window printed starts at the new base: {err}"
    );
}

/// Renames a base so its name records `time_ms`: what a base made on an earlier day looks
/// like. Daily restore points are the newest base of each past day, and a test cannot wait a
/// day; the base's bytes, size and checksum stay as they were, so verify still checks them.
fn restamp(base: &Path, time_ms: u64) -> PathBuf {
    let name = base.file_name().unwrap().to_string_lossy().into_owned();
    let to = base.with_file_name(format!("{}{time_ms:012x}{}", &name[..17], &name[29..]));
    std::fs::rename(base, &to).unwrap();
    to
}

fn base_offset(name: &str) -> u64 {
    u64::from_str_radix(&name[..16], 16).unwrap()
}

fn base_time(name: &str) -> u64 {
    u64::from_str_radix(&name[17..29], 16).unwrap()
}

fn compact(store: &Path) {
    let out = flashback(&["compact", "--store", store.to_str().unwrap(), "--force"]);
    assert!(
        out.code == Some(0) && out.stdout.starts_with("new base"),
        "{}",
        out.all()
    );
}

/// Issue 8: after a prune that keeps daily restore points before the window (one in the
/// newest generation, one in an older generation, whose log is all gone) and anchors the
/// window at a later base, `info` reports no hole and no pruned base, `verify` passes (also
/// with the older generation's log head left behind by an older prune), and every kept point
/// and the window restore digest-equal to the source at that instant.
#[test]
fn kept_restore_points_before_the_window_restore_and_raise_no_false_alarm() {
    // A 16 kB backlog: the writes made while the agent is away overrun it, so the agent
    // starts a second generation.
    let source = RedisProc::start(&[
        "--repl-ping-replica-period",
        "3600",
        "--repl-backlog-size",
        "16kb",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let start = |store: &Path| {
        let mut agent = Agent::start(source.port, store, &["--segment-mib", "1"]);
        agent.wait_online(&source);
        agent
    };
    // Generation 1: phase a, sealed by a restart, compacted into base C1.
    let mut agent = start(&store);
    let (_, state_a) = phase(&source, &mut agent, "a");
    agent.stop();
    let mut agent = start(&store);
    compact(&store);
    agent.stop();
    phase_writes(&mut source.conn(), "x");
    // Generation 2: phase b compacted into C2, phase c into C3 (the window's anchor), then d.
    let mut agent = start(&store);
    let (_, state_b) = phase(&source, &mut agent, "b");
    agent.stop();
    let mut agent = start(&store);
    compact(&store);
    let (_, state_c) = phase(&source, &mut agent, "c");
    agent.stop();
    let mut agent = start(&store);
    compact(&store);
    std::thread::sleep(Duration::from_millis(1500));
    let (t_d, state_d) = phase(&source, &mut agent, "d");
    agent.stop();

    let gens = generation_dirs(&store);
    assert_eq!(gens.len(), 2, "the overrun started a second generation");
    let (g1, g2) = (gens[0].clone(), gens[1].clone());
    let bases1 = files(&g1.join("base"), ".rdb");
    let bases2 = files(&g2.join("base"), ".rdb");
    assert_eq!(
        (bases1.len(), bases2.len()),
        (2, 3),
        "{bases1:?} {bases2:?}"
    );
    let anchor_offset = base_offset(&bases2[2]);
    let anchor_time = base_time(&bases2[2]);
    // C1 was made two days ago, C2 yesterday: each the newest base of its day.
    let now = now_ms();
    let c1 = restamp(&g1.join("base").join(&bases1[1]), now - 2 * 86_400_000);
    let c2 = restamp(&g2.join("base").join(&bases2[1]), now - 86_400_000);
    let c1_name = c1.file_name().unwrap().to_string_lossy().into_owned();
    let c2_name = c2.file_name().unwrap().to_string_lossy().into_owned();
    let old_head = dir.path().join("g1-log.head");
    std::fs::copy(g1.join("log.head"), &old_head).unwrap();

    let keep = format!("{}ms", now_ms() - (anchor_time + 500));
    let out = flashback(&["prune", "--store", s, "--keep", &keep, "--keep-daily", "3"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        out.stdout.matches("keep   restore point").count(),
        2,
        "{}",
        out.all()
    );
    assert_eq!(files(&g1.join("base"), ".rdb"), vec![c1_name.clone()]);
    assert!(
        !g1.join("log.head").exists(),
        "the head of a pruned-away log goes"
    );
    assert_eq!(
        files(&g2.join("base"), ".rdb"),
        vec![c2_name.clone(), bases2[2].clone()]
    );

    // info: the kept points, the base restores use now, and no hole.
    let info = info_json(&store);
    let src = &info["sources"][0];
    let points: Vec<(u64, u64)> = src["restore_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["offset"].as_u64().unwrap(),
                p["to_offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        points,
        vec![
            (base_offset(&c1_name), base_offset(&c1_name)),
            (base_offset(&c2_name), base_offset(&c2_name))
        ],
        "{info:#}"
    );
    assert_eq!(src["latest_base"]["offset"], anchor_offset, "{info:#}");
    for g in src["generations"].as_array().unwrap() {
        assert!(g["chain_break"].is_null(), "{info:#}");
        assert!(g["base_pruned"].as_bool().unwrap(), "{info:#}");
    }
    let text = flashback(&["info", "--store", s]);
    assert_eq!(text.code, Some(0), "{}", text.all());
    assert!(!text.stdout.contains("WARNING"), "{}", text.all());
    assert!(
        text.stdout.contains("kept restore points")
            && text.stdout.contains(&format!(
                "latest restore starts from: the base at offset {anchor_offset}"
            )),
        "{}",
        text.all()
    );

    // verify: nothing missing, the drill passes; also with the old head put back (what a
    // prune by an older build left), which is a warning, not damage.
    for round in ["after prune", "with the old log head"] {
        let out = flashback(&["verify", "--store", s, "--json"]);
        assert_eq!(out.code, Some(0), "{round}: {}", out.all());
        let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(j["problem_count"], 0, "{round}: {}", out.all());
        std::fs::copy(&old_head, g1.join("log.head")).unwrap();
    }

    // Every kept point and the window restore exactly.
    let at = |t: u64| at_arg(t);
    assert_eq!(
        restore_rdb(&store, &["--at", &at(base_time(&c1_name))]),
        state_a
    );
    assert_eq!(
        restore_rdb(&store, &["--at", &at(base_time(&c2_name))]),
        state_b
    );
    assert_eq!(restore_rdb(&store, &["--at", &at(anchor_time)]), state_c);
    assert_eq!(restore_rdb(&store, &["--at", &at(t_d)]), state_d);
    assert_eq!(restore_rdb(&store, &["--latest"]), state_d);
}
