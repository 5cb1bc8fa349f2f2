//! Key-level restore (`--keys`, `--keys-from`, `--db`) against a real capture: selected keys
//! whose history crosses RENAME, SMOVE, SUNIONSTORE, LMOVE, COPY, EVAL, MOVE and SWAPDB with
//! keys nobody selected restore equal (per-key `DEBUG DIGEST-VALUE` and `PEXPIRETIME`) to the
//! source's at T, recorded while the source was still; the report says the restore was
//! key-level, and the full fallback is taken (and said) when a record's keys cannot be known.
//! The private server of a key-level restore needs a small fraction of a full restore's memory.
//! Records stored in fragments are filtered whole, their keys read across fragments.

use crate::util;

use crate::util::{Agent, Conn, RedisProc};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// (db, key) → (DEBUG DIGEST-VALUE, PEXPIRETIME) for every key of every db.
pub(crate) type Snapshot = BTreeMap<(u32, Vec<u8>), (String, i64)>;

pub(crate) fn snapshot(c: &mut Conn) -> Snapshot {
    let mut out = Snapshot::new();
    for db in 0..16u32 {
        c.call(&["SELECT".to_string(), db.to_string()]);
        let keys: Vec<Vec<u8>> = c
            .call(&["KEYS", "*"])
            .array()
            .iter()
            .map(|k| k.bytes().to_vec())
            .collect();
        for chunk in keys.chunks(1000) {
            let cmds: Vec<Vec<&[u8]>> = chunk
                .iter()
                .flat_map(|k| {
                    [
                        vec![&b"DEBUG"[..], b"DIGEST-VALUE", k],
                        vec![&b"PEXPIRETIME"[..], k],
                    ]
                })
                .collect();
            let r = c.pipeline(&cmds);
            for (i, k) in chunk.iter().enumerate() {
                let d = r[2 * i].array()[0].text();
                out.insert((db, k.clone()), (d, r[2 * i + 1].int()));
            }
        }
    }
    c.call(&["SELECT", "0"]);
    out
}

pub(crate) fn ok(c: &mut Conn, args: &[&str]) {
    let r = c.call(args);
    assert!(!r.is_error(), "{args:?}: {r:?}");
}

/// The source's state now, once the agent has everything, and the time to restore it at.
pub(crate) fn point(c: &mut Conn, source: &RedisProc, agent: &mut Agent) -> (Snapshot, u64) {
    let s = snapshot(c);
    agent.wait_caught_up(source);
    let t = util::now_ms();
    std::thread::sleep(Duration::from_millis(5));
    (s, t)
}

fn restore(store: &Path, args: &[&str], out_dir: &Path) -> (util::Output, std::path::PathBuf) {
    let rdb = out_dir.join(format!("r{}.rdb", util::now_ms()));
    let mut all = vec![
        "restore",
        "--store",
        store.to_str().unwrap(),
        "--rdb",
        rdb.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    (util::run_flashback(&all, Duration::from_secs(300)), rdb)
}

/// Restores with `args` and checks the result holds exactly the keys of `want` that `sel`
/// picks, each equal; returns the restore's stdout.
fn check(
    store: &Path,
    dir: &Path,
    args: &[&str],
    want: &Snapshot,
    sel: impl Fn(u32, &[u8]) -> bool,
) -> String {
    let (out, rdb) = restore(store, args, dir);
    assert_eq!(out.code, Some(0), "restore {args:?}: {}", out.all());
    let restored = RedisProc::start_with_rdb(&rdb, &[]);
    let got = snapshot(&mut restored.conn());
    let want: Snapshot = want
        .iter()
        .filter(|((db, k), _)| sel(*db, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(!want.is_empty(), "the test selects nothing with {args:?}");
    if got != want {
        let show = |s: &Snapshot| {
            s.iter()
                .map(|((db, k), v)| format!("  {db}:{} {v:?}", String::from_utf8_lossy(k)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "restore {args:?} differs from the source:\nwant\n{}\ngot\n{}\n{}",
            show(&want),
            show(&got),
            out.all()
        );
    }
    out.stdout
}

fn key_level_line(stdout: &str) -> &str {
    report_line(stdout, "key-level:")
}

/// The restore report's line starting with `prefix` (`key-level:`, `splice:`).
pub(crate) fn report_line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in:\n{stdout}"))
}

#[test]
fn selected_keys_restore_equal_across_multi_key_commands() {
    let source = RedisProc::start(&[]);
    let mut c = source.conn();
    // The base: noise, the unselected keys the selected ones will take values from, and
    // selected keys with no history at all.
    ok(&mut c, &["DEBUG", "POPULATE", "5000", "key", "20"]);
    ok(&mut c, &["SET", "base:src", "basevalue"]);
    ok(&mut c, &["SADD", "base:set", "a", "b", "c", "d"]);
    ok(&mut c, &["RPUSH", "base:q", "1", "2", "3"]);
    ok(&mut c, &["SET", "want:plain", "p0"]);
    ok(&mut c, &["HSET", "want:h", "f", "v"]);
    ok(&mut c, &["SET", "odd[1]*", "exact"]);
    ok(&mut c, &["SET", "odd1x", "not selected"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--name", "src"]);
    agent.wait_online(&source);

    for cmd in [
        &["SET", "tmp", "a"][..],
        &["APPEND", "tmp", "b"],
        &["RENAME", "tmp", "want:renamed"],
        &["SMOVE", "base:set", "want:set", "b"],
        &["SADD", "u1", "x", "y"],
        &["SADD", "u2", "y", "z"],
        &["SUNIONSTORE", "want:union", "u1", "u2", "base:set"],
        &["LMOVE", "base:q", "want:list", "LEFT", "RIGHT"],
        &["COPY", "base:src", "want:copy"],
        &[
            "EVAL",
            "return redis.call('SET', KEYS[2], redis.call('GET', KEYS[1]) .. ARGV[1])",
            "2",
            "base:src",
            "want:eval",
            "!",
        ],
        &["SET", "want:ttl", "v", "PX", "3600000"],
        &["APPEND", "want:plain", "1"],
        &["SET", "later", "z"],
        &["RENAME", "later", "want:late"],
        &["SET", "want:gone", "1"],
        &["DEL", "want:gone", "key:3"],
        &["MSET", "want:m", "1", "noise:m", "2"],
        &["SET", "mvsrc", "m"],
        &["MOVE", "mvsrc", "1"],
    ] {
        ok(&mut c, cmd);
    }
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "want:tx", "1"]);
    ok(&mut c, &["INCR", "want:tx"]);
    ok(&mut c, &["SET", "noise:tx", "2"]);
    ok(&mut c, &["EXEC"]);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "noise:a", "1"]);
    ok(&mut c, &["SET", "noise:b", "2"]);
    ok(&mut c, &["EXEC"]);
    let noise: Vec<Vec<String>> = (0..3000)
        .map(|i| vec!["SET".into(), format!("noise:{i}"), format!("v{i}")])
        .collect();
    c.pipeline(&noise);
    for i in 0..200 {
        ok(
            &mut c,
            &["RENAME", &format!("noise:{i}"), &format!("noise:r{i}")],
        );
    }
    ok(&mut c, &["SELECT", "1"]);
    ok(&mut c, &["SET", "d1", "v"]);
    ok(&mut c, &["RENAME", "d1", "want:d1"]);
    ok(&mut c, &["RENAME", "mvsrc", "want:moved"]);
    ok(&mut c, &["SET", "other1", "x"]);
    ok(&mut c, &["SELECT", "2"]);
    ok(&mut c, &["SET", "want:sw", "s"]);
    ok(&mut c, &["SET", "sw:noise", "n"]);
    ok(&mut c, &["SWAPDB", "2", "3"]);
    ok(&mut c, &["SELECT", "3"]);
    ok(&mut c, &["APPEND", "want:sw", "!"]);
    ok(&mut c, &["SELECT", "0"]);
    let (t1, at1) = point(&mut c, &source, &mut agent);
    // After T: none of this may show.
    ok(&mut c, &["SET", "want:renamed", "after"]);
    ok(&mut c, &["SADD", "want:set", "after"]);
    // SORT … BY reads keys its arguments do not name: from here on a key-level restore must
    // fall back to the full path.
    ok(&mut c, &["RPUSH", "sortme", "2", "1"]);
    ok(&mut c, &["SET", "w_1", "5"]);
    ok(&mut c, &["SET", "w_2", "3"]);
    ok(
        &mut c,
        &["SORT", "sortme", "BY", "w_*", "STORE", "want:sorted"],
    );
    let (t2, at2) = point(&mut c, &source, &mut agent);
    agent.stop();

    let at1 = util::at_arg(at1);
    let at2 = util::at_arg(at2);
    let want_pat = |_: u32, k: &[u8]| k.starts_with(b"want:") || k == b"key:17";
    let out = check(
        &store,
        dir.path(),
        &["--at", &at1, "--keys", "want:*", "key:17"],
        &t1,
        want_pat,
    );
    let line = key_level_line(&out);
    eprintln!("{line}");
    // base kept: want:plain, want:h, key:17 and the sources base:src, base:set, base:q.
    assert!(line.contains("base 6 of "), "{line}");
    let skipped: u64 = line
        .split(", ")
        .last()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(skipped > 3000, "the noise was replayed: {line}");

    // --keys-from: exact names (glob characters are plain), CRLF lines.
    let list = dir.path().join("keys.txt");
    std::fs::write(&list, b"want:renamed\r\nwant:union\n\nodd[1]*\nkey:17\n").unwrap();
    check(
        &store,
        dir.path(),
        &["--at", &at1, "--keys-from", list.to_str().unwrap()],
        &t1,
        |_, k| [&b"want:renamed"[..], b"want:union", b"odd[1]*", b"key:17"].contains(&k),
    );
    // --db: the db's number at T (SWAPDB moved want:sw into db 3); MOVE brought mvsrc in db 1.
    check(
        &store,
        dir.path(),
        &["--at", &at1, "--db", "3"],
        &t1,
        |db, _| db == 3,
    );
    check(
        &store,
        dir.path(),
        &["--at", &at1, "--db", "1", "--keys", "want:*"],
        &t1,
        |db, k| db == 1 && k.starts_with(b"want:"),
    );
    // --to with --db-map: db 1's selected keys land in db 4 of a live target.
    let target = RedisProc::start(&[]);
    let out = util::run_flashback(
        &[
            "restore",
            "--store",
            store.to_str().unwrap(),
            "--at",
            &at1,
            "--db",
            "1",
            "--keys",
            "want:*",
            "--to",
            &target.url(),
            "--db-map",
            "1:4",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    key_level_line(&out.stdout);
    let got = snapshot(&mut target.conn());
    let want: Snapshot = t1
        .iter()
        .filter(|((db, k), _)| *db == 1 && k.starts_with(b"want:"))
        .map(|((_, k), v)| ((4, k.clone()), v.clone()))
        .collect();
    assert_eq!(got, want, "{}", out.all());
    // --dry-run says the restore would be key-level.
    let out = util::run_flashback(
        &[
            "restore",
            "--store",
            store.to_str().unwrap(),
            "--at",
            &at1,
            "--keys",
            "want:*",
            "--dry-run",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.code == Some(0) && out.stdout.contains("mode:       key-level"),
        "{}",
        out.all()
    );
    // A selection matching nothing is the existing error, nothing written.
    let (out, rdb) = restore(&store, &["--at", &at1, "--keys", "nomatch:*"], dir.path());
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        util::one_error_line(&out).contains("no key of the restored dataset"),
        "{}",
        out.all()
    );
    assert!(!rdb.exists());

    // After the SORT … BY: the full path, said in the report, and still exact.
    let out = check(
        &store,
        dir.path(),
        &["--at", &at2, "--keys", "want:*"],
        &t2,
        |_, k| k.starts_with(b"want:"),
    );
    assert!(
        out.contains("key-level: not possible (\"SORT\" with BY or GET"),
        "{out}"
    );
}

fn served_peak(store: &Path, args: &[&str]) -> (u64, String) {
    let port = util::free_port().to_string();
    let mut all = vec![
        "restore",
        "--store",
        store.to_str().unwrap(),
        "--latest",
        "--serve",
        &port,
    ];
    all.extend_from_slice(args);
    let out = util::run_flashback(&all, Duration::from_secs(300));
    assert_eq!(out.code, Some(0), "{}", out.all());
    let mut c = Conn::connect(port.parse().unwrap()).unwrap();
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in INFO"))
    };
    let peak = field(&c.call(&["INFO", "memory"]).text(), "used_memory_peak:");
    let pid = field(&c.call(&["INFO", "server"]).text(), "process_id:");
    let dbsize = c.call(&["DBSIZE"]).int();
    // The server this test had flashback leave running, by its pid.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    (peak, format!("dbsize {dbsize}\n{}", out.stdout))
}

#[test]
fn key_level_server_memory_is_a_fraction_of_a_full_restore() {
    let source = RedisProc::start(&[]);
    let mut c = source.conn();
    ok(&mut c, &["DEBUG", "POPULATE", "200000", "key", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--name", "src"]);
    agent.wait_online(&source);
    let writes: Vec<Vec<String>> = (0..20000)
        .map(|i| vec!["SET".into(), format!("key:{}", i * 7), format!("w{i}")])
        .collect();
    c.pipeline(&writes);
    ok(&mut c, &["RENAME", "key:5", "picked:5"]);
    agent.wait_caught_up(&source);
    agent.stop();

    let (full, out_full) = served_peak(&store, &[]);
    let (keyed, out_keyed) = served_peak(&store, &["--keys", "key:1", "key:14", "picked:*"]);
    eprintln!(
        "used_memory_peak: full {full} B, key-level {keyed} B ({:.1} %)",
        100.0 * keyed as f64 / full as f64
    );
    assert!(out_full.starts_with("dbsize 200000"), "{out_full}");
    assert!(out_keyed.starts_with("dbsize 3"), "{out_keyed}");
    key_level_line(&out_keyed);
    assert!(
        keyed * 5 < full,
        "key-level peak {keyed} B is not below 20 % of the full restore's {full} B"
    );
}

/// Records stored in fragments (8 MiB and more): their keys are read across fragments (an
/// MSET's second key comes after a 9 MB value), kept or left out whole, and a kept one
/// arrives intact.
#[test]
fn records_stored_in_fragments() {
    let source = RedisProc::start(&[]);
    let mut c = source.conn();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--name", "src"]);
    agent.wait_online(&source);
    let big = |ch: char| ch.to_string().repeat(9 << 20);
    ok(&mut c, &["SET", "tmpbig", &big('a')]);
    ok(&mut c, &["RENAME", "tmpbig", "want:big"]);
    ok(&mut c, &["SET", "noisebig", &big('b')]);
    ok(&mut c, &["MSET", "noise:m2", &big('c'), "want:m2", "small"]);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "noise:tx", &big('d')]);
    ok(&mut c, &["EXEC"]);
    let (t, at) = point(&mut c, &source, &mut agent);
    agent.stop();
    let at = util::at_arg(at);
    let out = check(
        &store,
        dir.path(),
        &["--at", &at, "--keys", "want:*"],
        &t,
        |_, k| k.starts_with(b"want:"),
    );
    let line = key_level_line(&out);
    // Replayed: SET tmpbig, RENAME, the MSET (it names want:m2); skipped: the SELECT, the 9 MB
    // SET noisebig and SET noise:tx (Redis 7 sends a one-write transaction without MULTI/EXEC).
    eprintln!("{line}");
    assert!(line.contains("; 3 of "), "{line}");
}
