//! `restore --to` proves itself (`--verify`, on by default below 1M keys) and reports its time
//! per phase; `verify` reports the drill's phases. Real redis-server processes throughout.

use crate::util::*;
use flashback::client::{Client, RedisUrl};
use flashback::progress::Progress;
use flashback::restore::proof::{prove, Skipped};
use std::time::Duration;

fn client_url(p: &RedisProc) -> RedisUrl {
    p.url().parse().expect("test URL")
}

async fn connect(p: &RedisProc) -> Client {
    Client::connect(&client_url(p), Duration::from_secs(5))
        .await
        .expect("connect")
}

/// One key of each type, one with a TTL, in two dbs.
fn fill(c: &mut Conn) {
    c.call(&["SET", "s", "v"]);
    c.call(&["SET", "ttl", "v", "PXAT", "4102444800000"]);
    c.call(&["HSET", "h", "f1", "a", "f2", "b", "f3", "c"]);
    c.call(&["RPUSH", "l", "1", "2", "3"]);
    c.call(&["SADD", "set", "x", "y", "z"]);
    c.call(&["ZADD", "z", "1", "a", "2.5", "b"]);
    c.call(&["XADD", "x", "1-1", "f", "v"]);
    c.call(&["SELECT", "3"]);
    c.call(&["SET", "other", "db3"]);
    c.call(&["SELECT", "0"]);
}

/// The proof's classification, on real servers, with both ways of comparing values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_names_what_differs_and_explains_skipped_keys() {
    for target_args in [&[][..], &["--enable-debug-command", "no"][..]] {
        let src = RedisProc::start(&[]);
        let dst = RedisProc::start(target_args);
        fill(&mut src.conn());
        fill(&mut dst.conn());
        let mut d = dst.conn();
        // A value that differs, a key missing, an expiry that differs, an element order that
        // must not matter (a set and a hash built in another order), a skipped key.
        d.call(&["SET", "s", "changed"]);
        d.call(&["DEL", "l"]);
        d.call(&["PEXPIRE", "ttl", "7200000"]);
        d.call(&["DEL", "set", "h"]);
        d.call(&["SADD", "set", "z", "y", "x"]);
        d.call(&["HSET", "h", "f3", "c", "f2", "b", "f1", "a"]);
        let mut src_c = src.conn();
        src_c.call(&["SET", "kept", "restore's"]);
        d.call(&["SET", "kept", "target's own"]);
        let mut skipped = Skipped::default();
        skipped.insert(0, bytes::Bytes::from_static(b"kept"));

        let (mut a, mut b) = (connect(&src).await, connect(&dst).await);
        let proof = prove(&mut a, &mut b, &[], &skipped, &Progress::new())
            .await
            .expect("prove");
        let want_method = if target_args.is_empty() {
            "debug digest-value"
        } else {
            "client digest"
        };
        assert_eq!(proof.method, want_method);
        assert_eq!(proof.compared, 9, "{proof:?}");
        assert_eq!(proof.skipped, 1, "{proof:?}");
        assert_eq!(proof.differ, 3, "{proof:?}");
        assert_eq!(proof.equal, 5, "{proof:?}");
        assert!(!proof.ok());
        let all = proof.first_differences.join("\n");
        for want in [
            "db 0 key \"s\": value differs",
            "db 0 key \"l\": missing on the target",
            "db 0 key \"ttl\": expiry differs",
        ] {
            assert!(all.contains(want), "{want} in {all}");
        }
        let text = proof.to_string();
        assert!(text.contains("3 DIFFER"), "{text}");
        assert!(
            text.contains("1 kept their value on the target (skipped)"),
            "{text}"
        );

        // The same data on both sides proves equal, and a db map is followed.
        let mut d = dst.conn();
        d.call(&["FLUSHALL"]);
        let mut s = src.conn();
        s.call(&["FLUSHALL"]);
        fill(&mut s);
        s.call(&["SELECT", "3"]);
        s.call(&["DEL", "other"]);
        s.call(&["SELECT", "5"]);
        s.call(&["SET", "mapped", "1"]);
        fill(&mut d);
        d.call(&["SELECT", "3"]);
        d.call(&["DEL", "other"]);
        d.call(&["SELECT", "1"]);
        d.call(&["SET", "mapped", "1"]);
        let (mut a, mut b) = (connect(&src).await, connect(&dst).await);
        let proof = prove(
            &mut a,
            &mut b,
            &[(5, 1)],
            &Skipped::default(),
            &Progress::new(),
        )
        .await
        .expect("prove");
        assert!(proof.ok(), "{proof:?}");
        assert_eq!((proof.compared, proof.equal), (8, 8), "{proof:?}");
    }
}

/// The runbook shape end to end: capture, restore `--to` a live target that already holds a
/// key; the report proves the copy, counts the skipped key, and gives the time of each phase.
#[test]
fn restore_to_a_live_target_proves_the_copy_and_times_each_phase() {
    let source = RedisProc::start(&[]);
    let store = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(source.port, store.path(), &[]);
    agent.wait_online(&source);
    let mut c = source.conn();
    fill(&mut c);
    for i in 0..2000 {
        c.call(&["SET", &format!("bulk:{i}"), &"x".repeat(100)]);
    }
    let point = record_point(&mut c, &source, &mut agent, "after fill");
    // The window reaches an instant once evidence after it is stored (a heartbeat, <= 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let target = RedisProc::start(&["--enable-debug-command", "no"]);
    target.conn().call(&["SET", "s", "the target's own"]);
    let store_arg = store.path().to_str().unwrap();
    let out = run_flashback(
        &[
            "restore",
            "--store",
            store_arg,
            "--at",
            &at_arg(point.t_ms),
            "--to",
            &target.url(),
            "--progress",
            "plain",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    for want in [
        "2007 keys written, 1 skipped, 0 failed",
        "verify: 2008 keys compared with the target (client digest): 2007 equal, 1 kept their value on the target (skipped); the target holds the restore",
        "restore time (RTO): ",
    ] {
        assert!(out.stdout.contains(want), "{want}\n{}", out.all());
    }
    let rto = out
        .stdout
        .lines()
        .find(|l| l.starts_with("restore time (RTO)"))
        .unwrap_or_default();
    for phase in ["plan ", "fetch ", "load ", "replay ", "copy ", "verify "] {
        assert!(rto.contains(phase), "{phase} in {rto}");
    }
    // Plain progress: each phase's end on stderr.
    assert!(
        out.stderr.contains("restore: copy done in"),
        "{}",
        out.all()
    );
    assert_eq!(target.conn().call(&["GET", "s"]).text(), "the target's own");

    // --no-verify skips the proof and says so.
    let out = run_flashback(
        &[
            "restore",
            "--store",
            store_arg,
            "--at",
            &at_arg(point.t_ms),
            "--to",
            &target.url(),
            "--no-verify",
            "--progress",
            "none",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("verify: not run"), "{}", out.all());
    assert!(!out.stderr.contains("done in"), "{}", out.all());
    // --verify belongs to --to only.
    let out = run_flashback(
        &[
            "restore",
            "--store",
            store_arg,
            "--latest",
            "--rdb",
            "/tmp/x.rdb",
            "--verify",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("only apply to --to"), "{}", out.all());

    // The drill reports its phases too, in text and JSON.
    let out = run_flashback(
        &["verify", "--store", store_arg, "--progress", "none"],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("drill time (RTO):"), "{}", out.all());
    let out = run_flashback(
        &[
            "verify",
            "--store",
            store_arg,
            "--json",
            "--progress",
            "none",
        ],
        Duration::from_secs(120),
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let phases: Vec<String> = v["sources"][0]["drill"]["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["phase"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(phases, ["plan", "fetch", "load", "replay", "verify"]);
    // The log's own sample: keys last SET (the 2000 bulk keys among them) hold their value.
    let l = &v["sources"][0]["drill"]["log_sample"];
    assert!(l["keys"].as_u64().unwrap() >= 100, "{l}");
    assert_eq!(l["equal"], l["keys"], "{l}");
    agent.stop();
}

/// The monthly drill against the live source: writes keep coming while verify pauses them for
/// a moment, reads the source's offset and digest (whole, then a sample when the dataset is
/// larger), restores exactly that offset and compares. A wrong server, or a replica, is refused
/// before anything is paused.
#[test]
fn verify_against_the_source_compares_at_one_offset_while_writes_go_on() {
    let source = RedisProc::start(&[]);
    let store = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(source.port, store.path(), &[]);
    agent.wait_online(&source);
    fill(&mut source.conn());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, mut c) = (stop.clone(), source.conn());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.call(&["SET", &format!("live:{}", i % 500), &i.to_string()]);
                c.call(&["HINCRBY", "counter", "n", "1"]);
                i += 1;
            }
            i
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let store_arg = store.path().to_str().unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--store",
            store_arg,
            "--json",
            "--progress",
            "none",
        ];
        args.extend_from_slice(extra);
        run_flashback(&args, Duration::from_secs(120))
    };
    let url = source.url();
    let out = verify(&["--against-source", &url]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let a = &v["sources"][0]["drill"]["against_source"];
    assert_eq!(a["method"], "debug digest", "{a}");
    assert_eq!(a["equal"], true, "{a}");
    assert_eq!(a["offset"], v["sources"][0]["drill"]["stop_offset"], "{v}");
    assert!(a["paused_ms"].as_u64().unwrap() < 200, "{a}");

    // Past the full-digest size: a sample of keys, compared one by one.
    let mut c = source.conn();
    for chunk in 0..25 {
        let mut cmd = vec!["MSET".to_string()];
        for i in 0..1000 {
            cmd.push(format!("big:{chunk}:{i}"));
            cmd.push("v".into());
        }
        c.call(&cmd);
    }
    let out = verify(&["--against-source", &url, "--sample", "300"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let a = &v["sources"][0]["drill"]["against_source"];
    assert_eq!(a["method"], "debug digest-value sample", "{a}");
    assert_eq!(a["equal"], true, "{a}");
    assert!(a["keys"].as_u64().unwrap() >= 200, "{a}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 100, "the writer ran: {writes}");

    // Another server is not the captured source: refused, named, nothing paused.
    let stranger = RedisProc::start(&[]);
    stranger.conn().call(&["SET", "x", "1"]);
    let out = verify(&["--against-source", &stranger.url()]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout.contains("is not the source") && out.stdout.contains("match no generation"),
        "{}",
        out.all()
    );
    // A replica of the source is refused too (only a primary's writes can be paused).
    let replica = RedisProc::start(&["--replicaof", "127.0.0.1", &source.port.to_string()]);
    let out = verify(&["--against-source", &replica.url()]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("is a replica"), "{}", out.all());
    agent.stop();
}
