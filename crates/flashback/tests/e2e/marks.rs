//! Consistent cuts (`flashback mark`, `capture --mark-every`, `restore --at-mark`) against real
//! servers: a mark taken while a writer runs restores exactly the state the source had at the
//! cut; a mark leaves the dataset unchanged; refusals are one line naming the fix.

use crate::util::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Transaction `i` of the writer. Every write is inside one, so the state after the writer's
/// `n`-th transaction is fully known from `n` (`expected`), and a restore rounds to one.
fn txn(i: u64) -> Vec<Vec<Vec<u8>>> {
    vec![
        vec![b"MULTI".to_vec()],
        vec![b"INCR".to_vec(), b"ctr".to_vec()],
        vec![
            b"SET".to_vec(),
            format!("k:{i}").into_bytes(),
            format!("v{i}").into_bytes(),
        ],
        vec![
            b"HSET".to_vec(),
            b"h".to_vec(),
            format!("f{}", i % 50).into_bytes(),
            i.to_string().into_bytes(),
        ],
        vec![b"EXEC".to_vec()],
    ]
}

/// The state of a fresh server after transactions 1..=n.
fn expected(n: u64) -> String {
    let r = RedisProc::start(&[]);
    let mut c = r.conn();
    for i in 1..=n {
        c.pipeline(&txn(i));
    }
    state(&mut c)
}

/// A writer sending pipelined batches of transactions until stopped; `done` counts the ones
/// whose EXEC reply arrived.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, d) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut c = Conn::connect(port).unwrap();
            let mut i = 0;
            while !s.load(Ordering::SeqCst) {
                let batch: Vec<Vec<Vec<u8>>> = (i + 1..=i + 5).flat_map(txn).collect();
                let replies = c.pipeline(&batch);
                for (k, r) in replies.chunks(5).enumerate() {
                    // EXEC's reply: [INCR's value, SET's OK, HSET's count].
                    assert_eq!(r[4].array()[0].int() as u64, i + 1 + k as u64);
                }
                i += 5;
                d.store(i, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Writer {
            stop,
            done,
            thread: Some(thread),
        }
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn store_arg(store: &std::path::Path) -> &str {
    store.to_str().unwrap()
}

/// `flashback mark --json` against `url`: (id, offset), or the failed run.
fn mark(store: &std::path::Path, url: &str, extra: &[&str]) -> Result<(String, u64), Output> {
    let mut args = vec![
        "mark",
        "--store",
        store_arg(store),
        "--source",
        url,
        "--json",
    ];
    args.extend(extra);
    let out = run_flashback(&args, Duration::from_secs(30));
    if out.code != Some(0) {
        return Err(out);
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let offset = v["cuts"][0]["offset"].as_u64().unwrap();
    Ok((v["id"].as_str().unwrap().to_string(), offset))
}

fn ctr(c: &mut Conn) -> u64 {
    let r = c.call(&["GET", "ctr"]);
    r.text().parse().unwrap_or(0)
}

#[test]
fn a_mark_mid_workload_restores_exactly() {
    let source = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--name", "src"]);
    agent.wait_online(&source);
    let url = source.url();
    let mut w = Writer::start(source.port);
    std::thread::sleep(Duration::from_millis(300));

    // 1. Free running: the cut lands between what the writer had finished before the mark
    //    was asked for and what it had finished when the mark returned.
    let before = w.done();
    let (free_id, free_offset) = mark(&store, &url, &[]).unwrap_or_else(|o| panic!("{}", o.all()));
    let after = w.done() + 5; // a batch in flight may have been executed, its replies unread
    std::thread::sleep(Duration::from_millis(200));

    // 2. Exact: the test holds writes back itself, reads the state, then marks inside its own
    //    pause (the mark's UNPAUSE ends both): nothing changed between the read and the cut.
    let mut c = source.conn();
    c.call(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    let paused_n = ctr(&mut c);
    let paused_state = state(&mut c);
    let paused_offset = source.master_repl_offset();
    let (exact_id, exact_offset) =
        mark(&store, &url, &["--id", "exact-1"]).unwrap_or_else(|o| panic!("{}", o.all()));
    assert_eq!(exact_id, "exact-1");
    assert_eq!(
        exact_offset, paused_offset,
        "inside a WRITE pause the primary's offset stands still (no PING to replicas either)"
    );
    std::thread::sleep(Duration::from_millis(300));
    w.finish();
    agent.wait_caught_up(&source);

    let got = restore_rdb(&store, &["--at-mark", "exact-1"]);
    assert_eq!(
        got, paused_state,
        "--at-mark = the source's state at the cut"
    );
    assert!(paused_n > 0);
    assert_eq!(got, expected(paused_n));

    let got_free = restore_rdb(&store, &["--at-mark", &free_id]);
    let at_offset = restore_rdb(&store, &["--at-offset", &free_offset.to_string()]);
    assert_eq!(got_free, at_offset, "--at-mark = --at-offset of its cut");
    let n = (before..=after)
        .find(|&n| expected(n) == got_free)
        .unwrap_or_else(|| {
            panic!("the free mark's state is no writer state in {before}..={after}")
        });
    assert!(n < paused_n, "marks are in order: {n} < {paused_n}");

    // --at-mark TIME: the last mark at or before it.
    let now = at_arg(now_ms());
    assert_eq!(restore_rdb(&store, &["--at-mark", &now]), paused_state);

    // Unknown mark: named, with the nearest ones.
    let rdb = dir.path().join("x.rdb");
    let out = run_flashback(
        &[
            "restore",
            "--store",
            store_arg(&store),
            "--at-mark",
            "m-1",
            "--rdb",
            rdb.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("no mark 'm-1'") && out.stderr.contains(&free_id),
        "{}",
        out.all()
    );

    // A mark ahead of what the agent stored: the agent is stopped, the source moves on.
    agent.stop();
    c.call(&["SET", "late", "1"]);
    let (ahead, _) = mark(&store, &url, &[]).unwrap_or_else(|o| panic!("{}", o.all()));
    let out = run_flashback(
        &[
            "restore",
            "--store",
            store_arg(&store),
            "--at-mark",
            &ahead,
            "--dry-run",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("wait for capture to catch up"),
        "{}",
        out.all()
    );
    let _ = exact_offset;
}

#[test]
fn a_mark_leaves_the_dataset_unchanged_and_mark_every_makes_marks() {
    // Keys with TTLs too: a pause also holds expiry back, and nothing the mark does writes.
    let source = RedisProc::start(&[]);
    let mut c = source.conn();
    for i in 0..200 {
        c.call(&[
            "SET".to_string(),
            format!("a:{i}"),
            format!("{i}"),
            "EX".into(),
            "1000".into(),
        ]);
    }
    c.call(&["RPUSH", "l", "x", "y"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(
        source.port,
        &store,
        &["--name", "src", "--mark-every", "1s", "--mark-pause", "200"],
    );
    agent.wait_online(&source);
    let digest = c.call(&["DEBUG", "DIGEST"]).text();
    let offset = source.master_repl_offset();
    let (id, cut) = mark(&store, &source.url(), &[]).unwrap_or_else(|o| panic!("{}", o.all()));
    assert_eq!(
        c.call(&["DEBUG", "DIGEST"]).text(),
        digest,
        "a mark changes no data"
    );
    assert_eq!(
        cut,
        source.master_repl_offset(),
        "nor the replication stream"
    );
    assert!(cut >= offset);
    std::thread::sleep(Duration::from_millis(2600));
    let marks: Vec<_> = std::fs::read_dir(store.join("sources/src/marks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        marks
            .iter()
            .filter(|m| m.ends_with(".mark") && !m.contains(&id))
            .count()
            >= 2,
        "--mark-every 1s made marks: {marks:?}\n{}",
        agent.log_text()
    );
    agent.wait_caught_up(&source);
    let want = state(&mut c);
    assert_eq!(restore_rdb(&store, &["--at-mark", &at_arg(now_ms())]), want);
    agent.stop();
}

#[test]
fn a_user_without_client_pause_is_told_the_acl() {
    let source = RedisProc::start(&[]);
    let mut c = source.conn();
    c.call(&[
        "ACL",
        "SETUSER",
        "nomark",
        "on",
        ">s3cret-pw",
        "+@all",
        "-client",
        "~*",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--name", "src"]);
    agent.wait_online(&source);
    let url = format!("redis://nomark:s3cret-pw@127.0.0.1:{}", source.port);
    let out = mark(&store, &url, &[]).expect_err("CLIENT is denied");
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("+client|pause") && out.stderr.contains("ACL SETUSER"),
        "{}",
        out.all()
    );
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line: {}",
        out.all()
    );
    assert!(!out.stderr.contains("s3cret-pw"), "{}", out.all());
    // Nothing was paused and nothing stored.
    assert!(
        !store.join("sources/src/marks").exists()
            || std::fs::read_dir(store.join("sources/src/marks"))
                .unwrap()
                .count()
                == 0
    );
    agent.stop();
}
