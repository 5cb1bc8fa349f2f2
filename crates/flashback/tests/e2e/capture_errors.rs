//! How `flashback capture` fails: every startup problem exits 1 with one clear line that names
//! the problem and the fix; bad usage exits 2. Each test uses its own server and directory, so
//! they run in parallel.

use crate::util::*;
use std::ffi::OsString;
use std::time::Duration;

fn capture(url: &str, store: &std::path::Path, extra: &[&str]) -> Output {
    let mut args: Vec<OsString> = vec![
        "capture".into(),
        "--source".into(),
        url.into(),
        "--store".into(),
        store.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    run_flashback(&args, Duration::from_secs(60))
}

/// Exit code 1 and a last stderr line `error: …` holding every phrase.
fn expect_failure(out: &Output, phrases: &[&str]) {
    assert_eq!(out.code, Some(1), "expected exit code 1:\n{}", out.all());
    let last = out
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.starts_with("error:"),
        "the last line on stderr should be the one-line error, got {last:?}:\n{}",
        out.all()
    );
    for p in phrases {
        assert!(
            last.contains(p),
            "the error line should mention {p:?}; it is:\n  {last}\n{}",
            out.all()
        );
    }
}

#[test]
fn unreachable_source() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = capture(
        &format!("redis://127.0.0.1:{port}"),
        &dir.path().join("store"),
        &[],
    );
    expect_failure(&out, &[&format!("cannot connect to 127.0.0.1:{port}")]);
}

#[test]
fn wrong_password() {
    let src = RedisProc::start(&["--requirepass", "secret"]);
    let dir = tempfile::tempdir().unwrap();
    let out = capture(
        &format!("redis://:wrong@127.0.0.1:{}", src.port),
        &dir.path().join("store"),
        &[],
    );
    expect_failure(&out, &["authentication failed"]);
    // The password itself never appears in the message.
    assert!(
        !out.stderr.contains("wrong@"),
        "the error echoes the password:\n{}",
        out.all()
    );
}

#[test]
fn acl_user_without_psync() {
    let src = RedisProc::start(&[]);
    let r = src
        .conn()
        .call(&["ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@read"]);
    assert_eq!(r, Reply::Status(b"OK".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let out = capture(
        &format!("redis://limited:pw@127.0.0.1:{}", src.port),
        &dir.path().join("store"),
        &[],
    );
    expect_failure(&out, &["+psync", "ACL SETUSER"]);
    assert!(
        out.stderr.contains("+replconf") && out.stderr.contains("+ping"),
        "the error should name every permission needed (+psync +replconf +ping):\n{}",
        out.all()
    );
}

#[test]
fn acl_user_with_replication_rights_works() {
    // The documented minimum (notes §1.8): no key patterns needed.
    let src = RedisProc::start(&[]);
    let r = src.conn().call(&[
        "ACL",
        "SETUSER",
        "replica",
        "on",
        ">pw",
        "+psync",
        "+replconf",
        "+ping",
    ]);
    assert_eq!(r, Reply::Status(b"OK".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut c = src.conn();
    c.call(&["SET", "before", "in the snapshot"]);
    c.call(&["HSET", "h", "f", "v"]);
    let mut agent = Agent::start_url(
        &format!("redis://replica:pw@127.0.0.1:{}", src.port),
        src.port,
        &store,
        &[],
    );
    agent.wait_online(&src);
    // Through the stream too, not only the snapshot: the restricted user carries both.
    c.call(&["SET", "after", "in the stream"]);
    c.call(&["RPUSH", "l", "a", "b", "c"]);
    c.call(&["DEL", "before"]);
    let want = state(&mut c);
    let offset = src.master_repl_offset();
    agent.wait_caught_up(&src);
    agent.stop();
    let got = restore_rdb(&store, &["--at-offset", &offset.to_string()]);
    assert_eq!(
        got, want,
        "restored from a capture by the ACL-restricted user"
    );
    assert!(want.contains("keys=3"), "{want}");
}

#[test]
fn psync_disabled() {
    let src = RedisProc::start(&["--rename-command", "PSYNC", ""]);
    let dir = tempfile::tempdir().unwrap();
    let out = capture(&src.url(), &dir.path().join("store"), &[]);
    expect_failure(&out, &["PSYNC", "--psync-command"]);
}

#[test]
fn psync_renamed_with_psync_command() {
    let src = RedisProc::start(&["--rename-command", "PSYNC", "mypsync"]);
    let mut c = src.conn();
    c.call(&["SET", "before", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(src.port, &store, &["--psync-command", "mypsync"]);
    agent.wait_online(&src);
    c.call(&["SET", "after", "2"]);
    let want = state(&mut c);
    agent.wait_caught_up(&src);
    agent.stop();
    assert_eq!(
        restore_rdb(&store, &["--latest"]),
        want,
        "restore --latest after capture through a renamed PSYNC"
    );
}

#[test]
fn store_not_writable() {
    let src = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory must be: unwritable even for root (chmod is not).
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let store = file.join("store");
    let out = capture(&src.url(), &store, &[]);
    expect_failure(&out, &["store"]);
    let last = out
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert_eq!(
        last,
        format!(
            "error: store {}: cannot create the directory: Not a directory (os error 20); pass a --store path in a directory you can write to",
            store.display()
        ),
        "the one line must name the store path and why it cannot be created"
    );
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let rdb = dir.path().join("x.rdb");
    let cases: Vec<(&str, Vec<OsString>)> = vec![
        (
            "capture without --source",
            vec!["capture".into(), "--store".into(), store.clone().into()],
        ),
        (
            "restore without a point in time",
            vec![
                "restore".into(),
                "--store".into(),
                store.clone().into(),
                "--rdb".into(),
                rdb.clone().into(),
            ],
        ),
        (
            "restore with two points in time",
            vec![
                "restore".into(),
                "--store".into(),
                store.clone().into(),
                "--latest".into(),
                "--at-offset".into(),
                "5".into(),
                "--rdb".into(),
                rdb.clone().into(),
            ],
        ),
        ("an unknown subcommand", vec!["no-such-command".into()]),
    ];
    let mut failures = Vec::new();
    for (what, args) in cases {
        let out = run_flashback(&args, Duration::from_secs(30));
        if out.code != Some(2) {
            failures.push(format!("{what}: expected exit code 2\n{}", out.all()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
