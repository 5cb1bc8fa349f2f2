//! Retention end to end: capture a real redis-server, compact, then `flashback prune --keep`
//! with a window that starts after the new base: `--dry-run` lists the old base and the early
//! segments, prune deletes them, the window still restores digest-equal, and an instant before
//! it is refused with the window printed.

mod util;

use std::path::{Path, PathBuf};
use std::time::Duration;
use util::*;

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
    assert!(
        out.stdout.contains(&format!("{} objects", early.len() + 1)),
        "{}",
        out.all()
    );
    // Nothing was deleted by the dry run.
    assert_eq!(files(&h.gen.join("base"), ".rdb"), h.bases);
    assert_eq!(early_segments(&h), early);

    let out = flashback(&["prune", "--store", s, "--keep", &keep]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout
            .contains(&format!("deleted {} objects", early.len() + 1)),
        "{}",
        out.all()
    );
    assert_eq!(files(&h.gen.join("base"), ".rdb"), vec![h.bases[1].clone()]);
    assert!(early_segments(&h).is_empty());
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
