//! `history KEY` skips the segments whose summary's key filter rules out every name the key
//! goes by, and finds exactly what a read of every segment (`--scan-all`) finds, across a
//! RENAME that gives the key a name the later segments only know.

use crate::util::*;
use std::time::Duration;

fn history(store: &str, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["history", "--store", store, "--json"];
    a.extend_from_slice(args);
    let out = run_flashback(&a, Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "{}", out.all());
    serde_json::from_str(&out.stdout).expect("json")
}

#[test]
fn the_key_filter_skips_segments_and_misses_nothing() {
    let source = RedisProc::start(&[]);
    let store = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(source.port, store.path(), &["--segment-age", "200ms"]);
    agent.wait_online(&source);
    let mut c = source.conn();
    let busy = |c: &mut Conn, tag: &str| {
        for round in 0..4 {
            let cmds: Vec<Vec<String>> = (0..200)
                .map(|i| vec!["SET".into(), format!("other:{tag}:{round}:{i}"), "x".into()])
                .collect();
            c.pipeline(&cmds);
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    c.call(&["SET", "watched", "1"]);
    busy(&mut c, "a");
    c.call(&["RENAME", "watched", "renamed"]);
    busy(&mut c, "b");
    c.call(&["APPEND", "renamed", "2"]);
    busy(&mut c, "c");
    c.call(&["DEL", "renamed"]);
    agent.wait_caught_up(&source);
    // Let the last records seal into a segment with a stored summary.
    std::thread::sleep(Duration::from_millis(600));
    let s = store.path().to_str().unwrap();
    let filtered = history(s, &["watched"]);
    let scanned = history(s, &["watched", "--scan-all"]);
    assert_eq!(
        filtered["writes"], scanned["writes"],
        "{filtered}\n{scanned}"
    );
    let commands: Vec<&str> = filtered["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["command"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(commands.len(), 4, "{filtered}");
    assert_eq!(filtered["writes"][3]["as"], "renamed", "{filtered}");
    let skipped = filtered["segments_skipped"].as_u64().unwrap();
    assert!(skipped >= 5, "segments skipped by the filter: {filtered}");
    assert_eq!(
        scanned["segments_skipped"].as_u64().unwrap(),
        0,
        "{scanned}"
    );
    agent.stop();
}
