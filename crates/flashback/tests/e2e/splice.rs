//! `restore --rdb` by splice (the default, `restore::splice`): the base's entries the log never
//! names copied as they are, the named keys rebuilt by a small private server. At several
//! instants of a capture whose log renames, moves, deletes, expires and transacts across dbs,
//! the spliced file, the whole rebuild's (`--no-splice`) and the source at T hold the same keys
//! with the same values and expiry times (keys whose absolute expiry passed since T gone from
//! both); a FLUSHDB in the log makes the restore rebuild the whole dataset and say so.

use crate::key_restore::{ok, point, report_line, snapshot, Snapshot};
use crate::util::{self, Agent, RedisProc};
use std::path::Path;
use std::time::Duration;

/// `flashback restore --at t --rdb rdb extra…`.
fn run_restore(store: &Path, rdb: &Path, t: u64, extra: &[&str]) -> util::Output {
    let at = util::at_arg(t);
    let mut args = vec![
        "restore",
        "--store",
        store.to_str().unwrap(),
        "--at",
        &at,
        "--rdb",
        rdb.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    util::run_flashback(&args, Duration::from_secs(300))
}

/// Restores `t` with `extra`, loads the file, returns its snapshot and the restore's stdout.
fn restore(store: &Path, dir: &Path, t: u64, extra: &[&str]) -> (Snapshot, String) {
    let rdb = dir.join(format!("r{t}{}.rdb", extra.len()));
    let out = run_restore(store, &rdb, t, extra);
    assert_eq!(out.code, Some(0), "restore {extra:?}: {}", out.all());
    let loaded = RedisProc::start_with_rdb(&rdb, &[]);
    (snapshot(&mut loaded.conn()), out.stdout)
}

/// The source's state at T as a restore now must hold it: keys whose expiry has passed are gone.
fn alive_now(s: &Snapshot) -> Snapshot {
    let now = util::now_ms() as i64;
    s.iter()
        .filter(|(_, (_, exp))| *exp <= 0 || *exp > now)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn check(store: &Path, dir: &Path, want: &Snapshot, t: u64, label: &str) -> String {
    let (spliced, stdout) = restore(store, dir, t, &[]);
    let (whole, whole_out) = restore(store, dir, t, &["--no-splice"]);
    assert!(
        !whole_out.contains("splice:"),
        "{label}: --no-splice spliced:\n{whole_out}"
    );
    let want = alive_now(want);
    let diff = |got: &Snapshot| {
        let mut d: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .map(|((db, k), v)| {
                let k2 = (*db, k.clone());
                format!(
                    "{db}:{} want {v:?} got {:?}",
                    String::from_utf8_lossy(k),
                    got.get(&k2)
                )
            })
            .collect();
        d.extend(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|(db, k)| format!("{db}:{} not at T", String::from_utf8_lossy(k))),
        );
        d.truncate(10);
        d
    };
    assert!(
        diff(&spliced).is_empty(),
        "{label}: the spliced file differs from the source at T: {:?}\n{stdout}",
        diff(&spliced)
    );
    assert!(
        diff(&whole).is_empty(),
        "{label}: the whole rebuild differs from the source at T: {:?}\n{whole_out}",
        diff(&whole)
    );
    stdout
}

fn splice_line(stdout: &str) -> &str {
    report_line(stdout, "splice:")
}

#[test]
fn rdb_splices_the_base_with_the_keys_the_log_names() {
    let source = RedisProc::start(&[]);
    let mut c = source.conn();
    ok(&mut c, &["DEBUG", "POPULATE", "20000", "key", "40"]);
    for i in 0..20 {
        ok(&mut c, &["SET", &format!("short:{i}"), "v", "PX", "3000"]);
    }
    ok(&mut c, &["SELECT", "1"]);
    ok(&mut c, &["RPUSH", "l", "a", "b", "c"]);
    ok(&mut c, &["HSET", "h", "f", "v", "g", "w"]);
    ok(&mut c, &["SADD", "s", "a", "b"]);
    ok(&mut c, &["ZADD", "z", "1", "a", "2", "b"]);
    ok(&mut c, &["SET", "untouched", "u"]);
    ok(&mut c, &["SELECT", "2"]);
    for i in 0..50 {
        ok(&mut c, &["SET", &format!("ttl:{i}"), "v", "EX", "3600"]);
    }
    ok(&mut c, &["SELECT", "0"]);

    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("store");
    let out_dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(source.port, &store, &[]);
    agent.wait_online(&source);

    // After the base: every kind of change a splice must see, across dbs.
    ok(&mut c, &["SET", "key:1", "new"]);
    ok(&mut c, &["INCR", "counter"]);
    ok(&mut c, &["DEL", "key:2"]);
    ok(&mut c, &["RENAME", "key:3", "renamed:3"]);
    ok(&mut c, &["EXPIRE", "key:4", "3600"]);
    ok(&mut c, &["MOVE", "key:5", "3"]);
    ok(&mut c, &["COPY", "key:6", "copied:6", "DB", "2"]);
    ok(&mut c, &["LPUSH", "newlist", "x", "y"]);
    ok(&mut c, &["SELECT", "1"]);
    ok(&mut c, &["RPUSH", "l", "d"]);
    ok(&mut c, &["HDEL", "h", "f"]);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SADD", "s", "c"]);
    ok(&mut c, &["ZINCRBY", "z", "2", "a"]);
    let r = c.call(&["EXEC"]);
    assert!(!r.is_error(), "{r:?}");
    ok(&mut c, &["SMOVE", "s", "s2", "a"]);
    ok(&mut c, &["SELECT", "0"]);
    let (s1, t1) = point(&mut c, &source, &mut agent);

    ok(&mut c, &["SET", "key:7", "later"]);
    ok(&mut c, &["SELECT", "2"]);
    ok(&mut c, &["SET", "ttl:0", "w", "EX", "7200"]);
    ok(&mut c, &["PERSIST", "ttl:1"]);
    ok(&mut c, &["SELECT", "0"]);
    let (s2, t2) = point(&mut c, &source, &mut agent);

    // The short TTLs pass: at t1 and t2 those keys were alive; restored now they are gone.
    std::thread::sleep(Duration::from_millis(3500));
    ok(&mut c, &["SET", "key:8", "after-expiry"]);
    let (s3, t3) = point(&mut c, &source, &mut agent);
    crate::differential::wait_window_reaches(&store, t3);

    for (s, t, label) in [(&s1, t1, "t1"), (&s2, t2, "t2"), (&s3, t3, "t3")] {
        let out = check(&store, out_dir.path(), s, t, label);
        let line = splice_line(&out);
        assert!(
            !line.starts_with("splice: not possible"),
            "{label}: not spliced: {line}"
        );
        let copied: u64 = line
            .strip_prefix("splice: ")
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(
            copied > 19_000,
            "{label}: only {copied} entries copied: {line}"
        );
    }

    // --dry-run says how the file will be made.
    let dry = run_restore(&store, &out_dir.path().join("dry.rdb"), t2, &["--dry-run"]);
    assert!(dry.stdout.contains("mode:       splice"), "{}", dry.all());

    // A FLUSHDB acts on keys it does not name: the whole dataset is rebuilt, and said.
    ok(&mut c, &["SELECT", "1"]);
    ok(&mut c, &["FLUSHDB"]);
    ok(&mut c, &["SET", "after-flush", "1"]);
    ok(&mut c, &["SELECT", "0"]);
    let (s4, t4) = point(&mut c, &source, &mut agent);
    crate::differential::wait_window_reaches(&store, t4);
    agent.stop();
    let out = check(&store, out_dir.path(), &s4, t4, "t4");
    assert!(
        splice_line(&out).starts_with("splice: not possible (a FLUSHDB"),
        "{out}"
    );
}
