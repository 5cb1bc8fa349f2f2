//! `restore --before EVENT` / `--after EVENT` against a real server: each lands exactly on the
//! state the source had just before / just after the event (compared by DEBUG DIGEST, TTLs
//! and functions: `util::state`), an event inside MULTI/EXEC leaves the whole transaction
//! out, and the FLUSHALL runbook (`--before flushall --to <the damaged source>`) brings the lost
//! keys back while keys written since keep their new values.

use crate::util::*;
use std::time::Duration;

fn restore_state(store: &std::path::Path, args: &[&str]) -> String {
    try_restore_rdb(store, args).unwrap_or_else(|e| panic!("{e}"))
}

fn mset(conn: &mut Conn, prefix: &str, n: usize, value: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut args = vec!["MSET".to_string()];
        for i in chunk {
            args.push(format!("{prefix}:{i}"));
            args.push(format!("{value}-{i}"));
        }
        assert!(!conn.call(&args).is_error());
    }
}

#[test]
fn before_and_after_each_event_kind_restore_the_recorded_states() {
    let source = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Small segments: the events fall in different segments, some summaries span a roll.
    let mut agent = Agent::start(source.port, &store, &["--segment-mib", "1"]);
    agent.wait_online(&source);
    let mut c = source.conn();
    bulk_sets(&mut c, "a");
    c.call(&["SELECT", "3"]);
    mset(&mut c, "db3", 50, "x");
    c.call(&["SELECT", "0"]);
    c.call(&["HSET", "h", "f", "1"]);
    c.call(&["SET", "victim", "precious"]);
    c.call(&["PEXPIRE", "a:k7", "3600000"]);

    let fdb_before = record_point(&mut c, &source, &mut agent, "before FLUSHDB 3");
    c.call(&["SELECT", "3"]);
    assert!(!c.call(&["FLUSHDB"]).is_error());
    let fdb_after = record_point(&mut c, &source, &mut agent, "after FLUSHDB 3");
    c.call(&["SELECT", "0"]);

    c.call(&["SET", "between", "1"]);
    let del_before = record_point(&mut c, &source, &mut agent, "before DEL victim");
    assert_eq!(c.call(&["DEL", "victim", "nosuchkey"]).int(), 1);
    let del_after = record_point(&mut c, &source, &mut agent, "after DEL victim");

    mset(&mut c, "m", 1500, "doomed");
    // A mass delete starts at the first delete of the first second (UTC) over the threshold:
    // keep DEL victim out of that second.
    std::thread::sleep(Duration::from_millis(1100));
    let mass_before = record_point(&mut c, &source, &mut agent, "before the mass delete");
    let mut del = vec!["DEL".to_string()];
    del.extend((0..1500).map(|i| format!("m:{i}")));
    assert_eq!(c.call(&del).int(), 1500);
    let mass_after = record_point(&mut c, &source, &mut agent, "after the mass delete");

    let cmd_before = record_point(&mut c, &source, &mut agent, "before HINCRBY");
    c.call(&["HINCRBY", "h", "f", "5"]);
    let cmd_after = record_point(&mut c, &source, &mut agent, "after HINCRBY");

    // The FLUSHALL inside a transaction: --before leaves out the whole MULTI/EXEC.
    let multi_before = record_point(&mut c, &source, &mut agent, "before MULTI…FLUSHALL…EXEC");
    c.call(&["MULTI"]);
    c.call(&["SET", "x", "1"]);
    c.call(&["FLUSHALL"]);
    c.call(&["SET", "y", "2"]);
    let exec = c.call(&["EXEC"]);
    assert!(!exec.is_error(), "{exec:?}");
    let multi_after = record_point(&mut c, &source, &mut agent, "after EXEC");
    bulk_sets(&mut c, "b");
    agent.wait_caught_up(&source);
    agent.stop();

    let at_del = at_arg(del_after.t_ms);
    let cases: Vec<(Vec<&str>, &RecordedPoint)> = vec![
        (vec!["--before", "flushdb:3"], &fdb_before),
        (vec!["--after", "flushdb:3"], &fdb_after),
        (vec!["--before", "flushdb"], &fdb_before),
        // The FLUSHALL later also removed it: --at bounds the search to the DEL.
        (vec!["--before", "del:victim", "--at", &at_del], &del_before),
        (vec!["--after", "del:victim"], &del_after),
        (vec!["--before", "mass-delete"], &mass_before),
        (vec!["--after", "mass-delete"], &mass_after),
        (vec!["--before", "cmd:hincrby"], &cmd_before),
        (vec!["--after", "cmd:HINCRBY"], &cmd_after),
        (vec!["--before", "flushall"], &multi_before),
        (vec!["--after", "flushall"], &multi_after),
    ];
    let mut failures = Vec::new();
    for (args, want) in &cases {
        let got = restore_state(&store, args);
        if got != want.state {
            failures.push(format!(
                "{args:?} should give the state {}:\n    want {}\n    got  {got}",
                want.label, want.state
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The event chosen is printed before anything is restored, with its offsets.
    let out = run_flashback(
        &[
            "restore",
            "--store",
            store.to_str().unwrap(),
            "--before",
            "flushall",
            "--dry-run",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let want = format!("..{}, generation", multi_after.offset);
    assert!(
        out.stdout.starts_with("event:      FLUSHALL") && out.stdout.contains(&want),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains("target:     at offset"),
        "{}",
        out.all()
    );
}

#[test]
fn no_such_event_exits_1_and_a_bad_event_exits_2() {
    let source = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &[]);
    agent.wait_online(&source);
    source.conn().call(&["SET", "k", "v"]);
    agent.wait_caught_up(&source);
    agent.stop();
    let s = store.to_str().unwrap();
    let out = run_flashback(
        &["restore", "--store", s, "--before", "flushall", "--dry-run"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = one_error_line(&out);
    assert!(
        line.contains("no FLUSHALL in the restorable window") && line.contains("windows: "),
        "{line}"
    );
    for bad in ["flushdb:x", "drop", "del:"] {
        let out = run_flashback(
            &["restore", "--store", s, "--before", bad, "--dry-run"],
            Duration::from_secs(60),
        );
        assert_eq!(out.code, Some(2), "{}", out.all());
        let line = one_error_line(&out);
        assert!(
            line.contains("flushall, flushdb, flushdb:N, swapdb, del:KEY, cmd:NAME, mass-delete"),
            "{line}"
        );
    }
    let out = run_flashback(
        &[
            "restore",
            "--store",
            s,
            "--before",
            "flushall",
            "--after",
            "flushall",
            "--dry-run",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
}

/// The seed-001 runbook: someone ran FLUSHALL on the primary, the application went on writing.
/// `restore --before flushall --to <that primary>` brings back every lost key and leaves the
/// keys written since alone (skipped, counted), unless --replace.
#[test]
fn the_flushall_runbook_restores_into_the_damaged_source() {
    let source = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &[]);
    agent.wait_online(&source);
    let mut c = source.conn();
    mset(&mut c, "k", 100, "old");
    c.call(&["SELECT", "2"]);
    mset(&mut c, "d2", 10, "old");
    c.call(&["SELECT", "0"]);
    agent.wait_caught_up(&source);
    assert!(!c.call(&["FLUSHALL"]).is_error());
    // Written since the accident: 10 keys that existed before, 5 new ones.
    mset(&mut c, "k", 10, "new");
    mset(&mut c, "n", 5, "new");
    agent.wait_caught_up(&source);
    agent.stop();

    let out = run_flashback(
        &[
            "restore",
            "--store",
            store.to_str().unwrap(),
            "--before",
            "flushall",
            "--to",
            &source.url(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("keys written, 10 skipped, 0 failed"),
        "{}",
        out.all()
    );
    for i in 0..100 {
        let want = if i < 10 {
            format!("new-{i}")
        } else {
            format!("old-{i}")
        };
        assert_eq!(c.call(&["GET", &format!("k:{i}")]).text(), want, "k:{i}");
    }
    for i in 0..5 {
        assert_eq!(
            c.call(&["GET", &format!("n:{i}")]).text(),
            format!("new-{i}")
        );
    }
    c.call(&["SELECT", "2"]);
    assert_eq!(c.call(&["GET", "d2:3"]).text(), "old-3");
    assert_eq!(c.call(&["DBSIZE"]).int(), 10);
}
