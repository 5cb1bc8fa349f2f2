//! `--ttl`: a key with 3 s left at the restore point, restored 4 s later. Absolute expiry (the
//! default) means it is gone; `relative` gives it its 3 s again; `persist` keeps it forever.

use crate::util::*;
use std::time::Duration;

fn pttl(c: &mut Conn, key: &str) -> i64 {
    c.call(&["PTTL", key]).int()
}

#[test]
fn ttl_modes() {
    let source = RedisProc::start(&["--repl-diskless-sync-delay", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &[]);
    agent.wait_online(&source);
    let mut c = source.conn();
    c.call(&["SET", "short", "x", "PX", "3000"]);
    c.call(&["SET", "long", "y", "EX", "3600"]);
    c.call(&["SET", "forever", "z"]);
    agent.wait_caught_up(&source);
    let at = now_ms();
    std::thread::sleep(Duration::from_millis(4000));
    assert_eq!(
        pttl(&mut c, "short"),
        -2,
        "the source has expired it by now"
    );
    agent.stop();
    let s = store.to_str().unwrap();

    let restore = |ttl: &str| {
        let rdb = dir.path().join(format!("{ttl}.rdb"));
        let out = run_flashback(
            &[
                "restore",
                "--store",
                s,
                "--at",
                &at_arg(at),
                "--ttl",
                ttl,
                "--rdb",
                rdb.to_str().unwrap(),
            ],
            Duration::from_secs(120),
        );
        assert_eq!(out.code, Some(0), "{}", out.all());
        RedisProc::start_with_rdb(&rdb, &[])
    };

    let abs = restore("absolute");
    let mut a = abs.conn();
    assert_eq!(pttl(&mut a, "short"), -2, "absolute: its time has passed");
    assert!(pttl(&mut a, "long") > 3_500_000);

    let rel = restore("relative");
    let mut r = rel.conn();
    let left = pttl(&mut r, "short");
    assert!(
        (1_000..=3_000).contains(&left),
        "relative: about 3 s left again, got {left} ms"
    );
    let long = pttl(&mut r, "long");
    assert!(
        (3_590_000..=3_600_000).contains(&long),
        "relative: about 1 h left, got {long} ms"
    );
    assert_eq!(pttl(&mut r, "forever"), -1);

    let per = restore("persist");
    let mut p = per.conn();
    // The one key where persist differs from both others: expired by now under absolute time,
    // a few seconds left under relative, and here present for good with its value.
    assert_eq!(
        pttl(&mut p, "short"),
        -1,
        "persist: the key with 3 s left at the restore point must be there without a TTL"
    );
    assert_eq!(p.call(&["GET", "short"]), Reply::Bulk(Some(b"x".to_vec())));
    assert_eq!(pttl(&mut p, "long"), -1, "persist: no TTL");
    assert_eq!(p.call(&["GET", "long"]), Reply::Bulk(Some(b"y".to_vec())));
    assert_eq!(pttl(&mut p, "forever"), -1);
    assert_eq!(
        p.call(&["DBSIZE"]).int(),
        3,
        "persist: every key of the restore point"
    );
}
