//! `flashback history KEY` against a real capture: every write to the key across RENAME, COPY
//! (into another db), MOVE, SWAPDB, MULTI/EXEC, EVAL and FCALL, each at the source's own
//! `master_repl_offset` after it (recorded here as the writes are made); `--show-at` values
//! equal what the source held then; a key never written; the `--json` schema.

use crate::util;

use crate::util::{Agent, Conn, RedisProc, Reply};
use std::time::Duration;

/// Runs `args` on the source and returns its master_repl_offset afterwards.
fn write(source: &RedisProc, c: &mut Conn, args: &[&str]) -> u64 {
    let r = c.call(args);
    assert!(!r.is_error(), "{args:?}: {r:?}");
    source.master_repl_offset()
}

fn history(store: &std::path::Path, args: &[&str]) -> util::Output {
    let mut all = vec!["history", "--store", store.to_str().unwrap()];
    all.extend_from_slice(args);
    util::run_flashback(&all, Duration::from_secs(120))
}

fn json(out: &util::Output) -> serde_json::Value {
    assert_eq!(out.code, Some(0), "{}", out.all());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()))
}

#[test]
fn history_follows_the_key_through_renames_transactions_and_scripts() {
    let source = RedisProc::start(&[]);
    let mut c = source.conn();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--name", "src"]);
    agent.wait_online(&source);
    let lib = "#!lua name=hlib\nredis.register_function('bump', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)";
    assert!(!c.call(&["FUNCTION", "LOAD", lib]).is_error());

    // (offset after the write, db, command name, the name the key had)
    let mut want: Vec<(u64, u64, &str, &str)> = Vec::new();
    // (offset, the key's value then)
    let mut values: Vec<(u64, &str)> = Vec::new();
    fn rec<'a>(
        want: &mut Vec<(u64, u64, &'a str, &'a str)>,
        source: &RedisProc,
        c: &mut Conn,
        db: u64,
        args: &[&'a str],
        name: &'a str,
    ) -> u64 {
        let off = write(source, c, args);
        want.push((off, db, args[0], name));
        off
    }
    let o = rec(&mut want, &source, &mut c, 0, &["SET", "k", "1"], "k");
    values.push((o, "\"1\""));
    write(&source, &mut c, &["SET", "unrelated", "x"]);
    rec(&mut want, &source, &mut c, 0, &["INCR", "k"], "k");
    let o = rec(&mut want, &source, &mut c, 0, &["RENAME", "k", "k2"], "k");
    values.push((o, "\"2\""));
    // A new key under the old name is not the key any more.
    write(&source, &mut c, &["SET", "k", "other"]);
    rec(&mut want, &source, &mut c, 0, &["APPEND", "k2", "0"], "k2");
    // MULTI/EXEC: every write at the transaction's end offset.
    assert_eq!(c.call(&["MULTI"]), Reply::Status(b"OK".to_vec()));
    c.call(&["INCR", "k2"]);
    c.call(&["SET", "unrelated", "y"]);
    c.call(&["INCRBY", "k2", "10"]);
    let r = c.call(&["EXEC"]);
    assert!(!r.is_error(), "{r:?}");
    let end = source.master_repl_offset();
    want.push((end, 0, "INCR", "k2"));
    want.push((end, 0, "INCRBY", "k2"));
    values.push((end, "\"31\""));
    // EVAL and FCALL: 7.0 replicates their effects as MULTI … EXEC.
    let e = write(
        &source,
        &mut c,
        &[
            "EVAL",
            "redis.call('INCR', KEYS[1]); redis.call('SET', 'unrelated', 'z')",
            "1",
            "k2",
        ],
    );
    want.push((e, 0, "INCR", "k2"));
    let f = write(&source, &mut c, &["FCALL", "bump", "1", "k2", "5"]);
    want.push((f, 0, "INCRBY", "k2"));
    rec(
        &mut want,
        &source,
        &mut c,
        0,
        &["COPY", "k2", "copy", "DB", "2"],
        "k2",
    );
    c.call(&["SELECT", "2"]);
    rec(
        &mut want,
        &source,
        &mut c,
        2,
        &["APPEND", "copy", "c"],
        "copy",
    );
    c.call(&["SELECT", "0"]);
    rec(&mut want, &source, &mut c, 0, &["MOVE", "k2", "3"], "k2");
    rec(&mut want, &source, &mut c, 0, &["SWAPDB", "3", "4"], "k2");
    c.call(&["SELECT", "4"]);
    // Relative expiries replicate as absolute ones.
    let o = write(&source, &mut c, &["PEXPIRE", "k2", "9000000"]);
    want.push((o, 4, "PEXPIREAT", "k2"));
    values.push((o, "\"37\""));
    rec(&mut want, &source, &mut c, 4, &["DEL", "k2"], "k2");
    c.call(&["SELECT", "0"]);
    agent.wait_caught_up(&source);

    let v = json(&history(&store, &["k", "--json"]));
    assert_eq!(v["key"], "k");
    let got: Vec<(u64, u64, String, String)> = v["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            assert!(w["time_ms"].as_u64().unwrap() > 1_700_000_000_000, "{w}");
            let cmd = w["command"].as_str().unwrap();
            (
                w["offset"].as_u64().unwrap(),
                w["db"].as_u64().unwrap(),
                cmd.split(' ').next().unwrap().to_string(),
                w["as"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, u64, String, String)> = want
        .iter()
        .map(|(o, d, c, a)| (*o, *d, c.to_string(), a.to_string()))
        .collect();
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&v).unwrap());
    assert!(v["writes"][2]["note"]
        .as_str()
        .unwrap()
        .contains("renamed to"));

    // Values at points of the history equal what the source held then.
    let mut args = vec!["k".to_string(), "--json".to_string()];
    for (o, _) in &values {
        args.push("--show-at".into());
        args.push(format!("offset:{o}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = json(&history(&store, &refs));
    let shown = v["values"].as_array().unwrap();
    assert_eq!(shown.len(), values.len());
    for (s, (o, val)) in shown.iter().zip(&values) {
        assert_eq!(s["offset"].as_u64(), Some(*o), "{s}");
        let keys = s["keys"].as_array().unwrap();
        assert!(
            keys.iter().any(|k| k["value"].as_str() == Some(*val)),
            "at offset {o} the source held {val}: {s}"
        );
    }
    let last = shown[3]["keys"].as_array().unwrap();
    let k2 = last
        .iter()
        .find(|k| k["name"] == "\"k2\"")
        .expect("k2 at the end");
    assert_eq!(k2["db"], 4);
    assert!(k2["ttl_ms"].as_i64().unwrap() > 8_000_000, "{k2}");
    assert!(
        last.iter().any(|k| k["name"] == "\"copy\"" && k["db"] == 2),
        "{last:?}"
    );

    // The copy's own history, and a key never written.
    let copy = json(&history(&store, &["copy", "--db", "2", "--json"]));
    assert_eq!(copy["writes"].as_array().unwrap().len(), 2, "{copy}");
    let none = history(&store, &["never-written"]);
    assert_eq!(none.code, Some(0), "{}", none.all());
    assert_eq!(none.stdout.lines().count(), 1, "{}", none.all());
    assert!(
        none.stdout.starts_with("no write to \"never-written\""),
        "{}",
        none.all()
    );
    let none = json(&history(&store, &["never-written", "--json"]));
    assert_eq!(none["writes"], serde_json::json!([]));
    // Text output: one line per write after the header.
    let text = history(&store, &["k"]);
    assert_eq!(text.code, Some(0), "{}", text.all());
    assert_eq!(
        text.stdout.lines().count(),
        want.len() + 1,
        "{}",
        text.all()
    );
    agent.stop();
}
