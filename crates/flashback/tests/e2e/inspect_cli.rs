//! `flashback inspect` as a user runs it: text and `--json` on real server-written RDBs (old
//! encodings from tests/data of the reader crate, and a file this test's redis-server writes,
//! whose counts must equal what the server reports), `--store --at` on a captured store, a
//! corrupt file (exit 1 naming the byte offset), a missing file and bad usage.

use crate::util;

use crate::util::{run_flashback, Agent, RedisProc};
use std::path::PathBuf;
use std::time::Duration;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../rdb/tests/data")
        .join(name)
}

const T: Duration = Duration::from_secs(60);

fn json(args: &[&str]) -> serde_json::Value {
    let out = run_flashback(args, T);
    assert_eq!(out.code, Some(0), "{}", out.all());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn text_and_json_of_old_encodings() {
    let f = data("encodings.rdb");
    let f = f.to_str().unwrap();
    let out = run_flashback(&["inspect", f], T);
    assert_eq!(out.code, Some(0), "{}", out.all());
    for want in [
        "REDIS0004",
        "13 keys in 1 db",
        "db 0: 13 keys (0 with a TTL)",
        "set-intset",
        "\"zset\"",
        "expiry: no TTL 13",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?} in\n{}",
            out.stdout
        );
    }
    let v = json(&["inspect", f, "--json", "--top", "3"]);
    assert_eq!(v["dbs"][0]["db"], 0);
    assert_eq!(v["dbs"][0]["keys"], 13);
    let by_type = &v["dbs"][0]["by_type"];
    assert_eq!(
        (
            by_type["set"].as_u64(),
            by_type["string"].as_u64(),
            by_type["hash"].as_u64()
        ),
        (Some(4), Some(3), Some(2))
    );
    let big = v["biggest"].as_array().unwrap();
    assert_eq!(big.len(), 3);
    assert_eq!(
        (
            big[0]["key"].as_str(),
            big[0]["type"].as_str(),
            big[0]["db"].as_u64()
        ),
        (Some("zset"), Some("zset"), Some(0))
    );
    assert!(big[0]["bytes"].as_u64() >= big[1]["bytes"].as_u64());
    assert_eq!(v["checksum"], "absent");
}

#[test]
fn counts_equal_what_the_server_reports() {
    let src = RedisProc::start(&[]);
    let mut c = src.conn();
    let far = util::now_ms() + 3 * 86_400_000;
    for i in 0..200 {
        c.call(&["SET", &format!("s{i}"), "v"]);
    }
    for i in 0..30 {
        c.call(&["HSET", &format!("h{i}"), "f", "v"]);
        c.call(&["PEXPIREAT", &format!("h{i}"), &far.to_string()]);
    }
    c.call(&["RPUSH", "big", &"x".repeat(100_000)]);
    c.call(&["SET", "soon", "v", "PX", "1800000"]);
    c.call(&["SELECT", "2"]);
    c.call(&["SADD", "s", "a", "b"]);
    c.call(&["SELECT", "0"]);
    c.call(&["SAVE"]);
    let rdb = src.dir.path().join("dump.rdb");
    let v = json(&["inspect", rdb.to_str().unwrap(), "--json"]);
    let dbs = v["dbs"].as_array().unwrap();
    assert_eq!(dbs.len(), 2);
    assert_eq!(dbs[0]["keys"].as_i64(), Some(c.call(&["DBSIZE"]).int()));
    assert_eq!(
        (
            dbs[0]["by_type"]["string"].as_u64(),
            dbs[0]["by_type"]["hash"].as_u64(),
            dbs[0]["expires"].as_u64()
        ),
        (Some(201), Some(30), Some(31))
    );
    assert_eq!(
        (dbs[1]["db"].as_u64(), dbs[1]["by_type"]["set"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(v["biggest"][0]["key"], "big");
    assert_eq!(v["biggest"][0]["elements"], 1);
    let e = &v["expiry"];
    assert_eq!(
        (
            e["no_ttl"].as_u64(),
            e["under_1h"].as_u64(),
            e["under_7d"].as_u64()
        ),
        (Some(202), Some(1), Some(30))
    );
    assert_eq!(v["checksum"], "ok");
    assert!(v["server_version"].as_str().unwrap().starts_with("7."));
}

#[test]
fn at_a_time_from_a_store() {
    let src = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(src.port, &store, &[]);
    agent.wait_online(&src);
    let mut c = src.conn();
    for i in 0..50 {
        c.call(&["SET", &format!("k{i}"), "v"]);
    }
    c.call(&["ZADD", "z", "1", "a"]);
    agent.wait_caught_up(&src);
    std::thread::sleep(Duration::from_millis(1100));
    let at = util::at_arg(util::now_ms() - 50);
    agent.stop();
    let v = json(&[
        "inspect",
        "--store",
        store.to_str().unwrap(),
        "--at",
        &at,
        "--json",
    ]);
    assert_eq!(v["dbs"][0]["keys"], 51, "{v}");
    assert_eq!(v["dbs"][0]["by_type"]["zset"], 1);
}

#[test]
fn corrupt_missing_and_usage() {
    let f = data("corrupt_ziplist.rdb");
    let out = run_flashback(&["inspect", f.to_str().unwrap()], T);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("byte 488") && out.stderr.contains("corrupt_ziplist.rdb"),
        "{}",
        out.all()
    );
    let out = run_flashback(&["inspect", "/nonexistent/dump.rdb"], T);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("/nonexistent/dump.rdb does not exist"),
        "{}",
        out.all()
    );
    let out = run_flashback(&["inspect"], T);
    assert_eq!(out.code, Some(2), "{}", out.all());
    let out = run_flashback(&["inspect", "x.rdb", "--at", "-1m"], T);
    assert_eq!(out.code, Some(2), "{}", out.all());
    let out = run_flashback(&["inspect", "--help"], T);
    assert!(
        out.stdout.contains("Examples:") && out.stdout.contains("temporary"),
        "{}",
        out.all()
    );
}

/// `flashback inspect FILE | head` with the reader gone before the report is written: no panic
/// message, the exit code a shell gives a process a closed pipe ended (141). Before, println!
/// panicked ("failed printing to stdout: Broken pipe") and the process exited 101.
#[test]
fn a_closed_stdout_is_a_quiet_exit_not_a_panic() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(util::flashback_bin())
        .args(["inspect", data("encodings.rdb").to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flashback");
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(141), "stderr: {err}");
}
