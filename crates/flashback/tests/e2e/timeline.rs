//! `flashback timeline` against a real server: events with the exact offsets the source
//! reported (`master_repl_offset` after the event), across segment rolls; the same timeline
//! from a store whose summaries were deleted (every segment read instead); a corrupt summary
//! named by `verify` and replaced by a read of its segment, with a warning.

use crate::util::*;
use std::path::Path;
use std::time::Duration;

/// About 1.1 MB of values that do not compress, so a 1 MiB segment rolls.
fn random_sets(conn: &mut Conn, phase: &str, seed: &mut u64) {
    for chunk in 0..12 {
        let cmds: Vec<Vec<String>> = (0..100)
            .map(|i| {
                let v: String = (0..900)
                    .map(|_| {
                        *seed ^= *seed << 13;
                        *seed ^= *seed >> 7;
                        *seed ^= *seed << 17;
                        char::from(b'!' + (*seed % 90) as u8)
                    })
                    .collect();
                vec!["SET".into(), format!("{phase}:k{}", chunk * 100 + i), v]
            })
            .collect();
        for r in conn.pipeline(&cmds) {
            assert!(!r.is_error(), "{r:?}");
        }
    }
    // The agent rolls a segment on its next tick once it is big enough.
    std::thread::sleep(Duration::from_millis(1200));
}

fn timeline_json(store: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let mut args = vec!["timeline", "--store", store.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = run_flashback(&args, Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("timeline --json is not JSON ({e}):\n{}", out.all()));
    (v, out.stderr)
}

fn offset_after(conn: &mut Conn) -> u64 {
    parse_info(&conn.call(&["INFO", "replication"]).text()).master_offset
}

/// What must not depend on where the summaries came from.
fn comparable(v: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "events": v["events"],
        "buckets": v["buckets"],
        "totals": v["totals"],
        "windows": v["windows"],
    })
}

fn summaries(store: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for g in generation_dirs(store) {
        if let Ok(d) = std::fs::read_dir(g.join("summaries")) {
            out.extend(d.flatten().map(|e| e.path()));
        }
    }
    out.sort();
    out
}

#[test]
fn events_have_exact_offsets_with_or_without_summaries() {
    let source = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--segment-mib", "1"]);
    agent.wait_online(&source);
    let mut c = source.conn();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    random_sets(&mut c, "a", &mut seed);
    c.call(&["SET", "watched", "1"]);
    c.call(&["SELECT", "5"]);
    c.call(&["SET", "in5", "1"]);
    assert!(!c.call(&["FLUSHDB"]).is_error());
    let flushdb_end = offset_after(&mut c);
    c.call(&["SELECT", "0"]);
    random_sets(&mut c, "b", &mut seed);
    let before_del = offset_after(&mut c);
    c.call(&["UNLINK", "watched"]);
    let del_end = offset_after(&mut c);
    assert!(!c.call(&["SWAPDB", "1", "2"]).is_error());
    let swap_end = offset_after(&mut c);
    random_sets(&mut c, "c", &mut seed);
    let before_multi = offset_after(&mut c);
    c.call(&["MULTI"]);
    c.call(&["SET", "x", "1"]);
    c.call(&["FLUSHALL"]);
    c.call(&["EXEC"]);
    let flushall_end = offset_after(&mut c);
    c.call(&["SET", "after", "1"]);
    agent.wait_caught_up(&source);
    agent.stop();

    let segs = summaries(&store);
    assert!(
        segs.len() >= 2,
        "expected several sealed segments, got {segs:?}"
    );
    let (v, _) = timeline_json(&store, &["--watch", "watched", "--bucket", "1s"]);
    let events = v["events"].as_array().unwrap();
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {v:#}"))
    };
    let fdb = find("flushdb");
    assert_eq!(fdb["offset"], flushdb_end, "{fdb}");
    assert_eq!(fdb["db"], 5);
    let del = find("del");
    assert_eq!(del["offset"], del_end, "{del}");
    assert_eq!(del["keys"], serde_json::json!(["watched"]));
    assert!(del["start_offset"].as_u64().unwrap() >= before_del, "{del}");
    let sw = find("swapdb");
    assert_eq!(sw["offset"], swap_end);
    assert_eq!(
        (sw["db"].as_u64(), sw["other_db"].as_u64()),
        (Some(1), Some(2))
    );
    let fa = find("flushall");
    assert_eq!(
        fa["offset"], flushall_end,
        "the FLUSHALL's transaction ends at the EXEC"
    );
    // Its transaction starts at MULTI, the cut point before it (a PING may come in between).
    let start = fa["start_offset"].as_u64().unwrap();
    assert!(
        (before_multi..before_multi + 15).contains(&start),
        "start {start}, MULTI at {before_multi}"
    );
    assert_eq!(fa["db"], serde_json::Value::Null);
    assert!(v["totals"]["writes"].as_u64().unwrap() >= 3600);
    assert!(v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["time_ms"].is_u64() && b["writes"].is_u64()));
    assert_eq!(v["segments"]["summarized"], 0, "{}", v["segments"]);
    assert!(v["uncertain"].is_array() && v["windows"].as_array().unwrap().len() == 1);

    // The text form names each event with the restore that undoes it.
    let out = run_flashback(
        &["timeline", "--store", store.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("--before flushall --at @") && out.stdout.contains("FLUSHDB (db 5)"),
        "{}",
        out.all()
    );

    // A corrupt summary: verify names it, timeline warns and reads the segment instead.
    let victim = &segs[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    let out = run_flashback(
        &["verify", "--store", store.to_str().unwrap(), "--json"],
        Duration::from_secs(120),
    );
    assert!(
        out.stdout.contains(&name),
        "verify does not name {name}:\n{}",
        out.all()
    );
    let (bad, stderr) = timeline_json(&store, &["--watch", "watched", "--bucket", "1s"]);
    assert!(
        stderr.contains("warning:") && stderr.contains(&name),
        "no warning naming {name}:\n{stderr}"
    );
    assert_eq!(comparable(&bad), comparable(&v));
    assert_eq!(bad["segments"]["summarized"], 1);

    // No summaries at all (a store from before them): the same timeline, from the segments.
    for s in &segs {
        std::fs::remove_file(s).unwrap();
    }
    let (none, _) = timeline_json(&store, &["--watch", "watched", "--bucket", "1s"]);
    assert_eq!(comparable(&none), comparable(&v));
    assert_eq!(none["segments"]["summaries"], 0);
}
