//! `restore --to` with keys too big for one RESTORE, and with a target older than the restore
//! engine (issue 10, item 6).
//!
//! - A 200 MB list (plus a 40 MB string, a 20 MB hash, 17 MB set and zset, all of random bytes
//!   so that RDB's LZF cannot shrink them below the limit) restored into a target started with
//!   `--proto-max-bulk-len 64mb`: every big key is written element by element, under a
//!   temporary name then renamed, with its TTL; `--verify` passes; each value's
//!   `DEBUG DIGEST-VALUE` and expiry on the target equal the source's; the restore process's
//!   peak RSS stays far below the list (it never holds a big value).
//! - A Valkey 8.1 source (RDB 11) restored with a Valkey 8.1 engine into Debian's Redis 7.0
//!   (RDB 10): payloads of types 7.0 knows are relabelled; a listpack set (type 20) and a
//!   stream of listpacks 3 (21) are written element by element, the stream with its consumer
//!   group, consumers and pending entries; `--verify` passes. Before this change every RESTORE
//!   failed with "DUMP payload version or checksum are wrong".

use crate::util::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Below the 200 MB list and the 40 MB string: holding either whole fails the test.
const RESTORE_PEAK_MB: u64 = 100;

/// Random bytes (xorshift): incompressible, so a value's RDB size is its real size.
struct Rng(u64);

impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// `count` elements of `size` random bytes each, written with `cmd key …` in pipelined batches;
/// `pair` makes each element `field value` (HSET) or `score member` (ZADD).
fn fill(c: &mut Conn, rng: &mut Rng, cmd: &str, key: &str, count: usize, size: usize, pair: u8) {
    let per = 100;
    for start in (0..count).step_by(per) {
        let mut args: Vec<Vec<u8>> = vec![cmd.into(), key.into()];
        for i in start..(start + per).min(count) {
            match pair {
                b'h' => args.push(format!("f{i}").into_bytes()),
                b'z' => args.push(format!("{i}.25").into_bytes()),
                _ => {}
            }
            args.push(rng.bytes(size));
        }
        let r = c.call(&args);
        assert!(!r.is_error(), "{cmd} {key}: {r:?}");
    }
}

fn digest_value(c: &mut Conn, key: &str) -> String {
    let r = c.call(&["DEBUG", "DIGEST-VALUE", key]);
    r.array()[0].text()
}

/// `restore --latest --to <target> <extra…>` run while its peak RSS is sampled.
fn restore_to(store: &std::path::Path, target: &RedisProc, extra: &[&str]) -> (Output, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (out_p, err_p) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = die_with_parent(&mut Command::new(flashback_bin()))
        .args(["restore", "--store"])
        .arg(store)
        .args(["--latest", "--to", &target.url(), "--progress", "none"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_p).unwrap())
        .stderr(std::fs::File::create(&err_p).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(mb) = peak_rss_mb(pid) {
            peak = peak.max(mb);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "restore did not finish in 600 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = Output {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_p).unwrap_or_default(),
    };
    (out, peak)
}

#[test]
fn keys_bigger_than_the_targets_proto_max_bulk_len_go_element_by_element() {
    let started = Instant::now();
    let src = RedisProc::start(&[]);
    let mut c = src.conn();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    fill(&mut c, &mut rng, "RPUSH", "big:list", 200_000, 1024, 0);
    c.call(&["PEXPIREAT", "big:list", "4102444800123"]);
    for _ in 0..40 {
        let part = rng.bytes(1 << 20);
        c.call(&[&b"APPEND"[..], b"big:string", &part]);
    }
    fill(&mut c, &mut rng, "HSET", "big:hash", 20_000, 1024, b'h');
    fill(&mut c, &mut rng, "SADD", "big:set", 17_000, 1024, 0);
    fill(&mut c, &mut rng, "ZADD", "big:zset", 17_000, 1024, b'z');
    c.call(&["SET", "small", "v"]);
    let keys = [
        "big:list",
        "big:string",
        "big:hash",
        "big:set",
        "big:zset",
        "small",
    ];
    let want: Vec<String> = keys.iter().map(|k| digest_value(&mut c, k)).collect();
    eprintln!("source filled in {:.1} s", started.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(src.port, &store, &[]);
    agent.wait_online(&src);
    agent.wait_caught_up(&src);
    agent.stop();
    eprintln!("captured at {:.1} s", started.elapsed().as_secs_f64());

    let target = RedisProc::start(&["--proto-max-bulk-len", "64mb"]);
    let mut t = target.conn();
    // A big key that exists on the target is left alone (no --replace), like any other.
    t.call(&["SET", "big:set", "the target's own"]);
    let (out, peak) = restore_to(&store, &target, &["--verify"]);
    eprintln!(
        "restored in {:.1} s total; restore peak RSS {peak} MB\n{}",
        started.elapsed().as_secs_f64(),
        out.stdout
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("5 keys written, 1 skipped, 0 failed"),
        "{}",
        out.all()
    );
    // list, string, hash and zset; big:set was skipped before any write.
    assert!(
        out.stdout.contains("  4 written element by element"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains("the target holds the restore"),
        "{}",
        out.all()
    );
    for (k, w) in keys.iter().zip(&want) {
        if *k == "big:set" {
            continue;
        }
        assert_eq!(&digest_value(&mut t, k), w, "{k} differs on the target");
    }
    assert_eq!(t.call(&["GET", "big:set"]).text(), "the target's own");
    assert_eq!(
        t.call(&["PEXPIRETIME", "big:list"]).int(),
        4102444800123,
        "the TTL"
    );
    assert_eq!(t.call(&["LLEN", "big:list"]).int(), 200_000);
    // No temporary key is left behind.
    assert_eq!(t.call(&["KEYS", "flashback:tmp:*"]).array().len(), 0);
    assert!(
        peak < RESTORE_PEAK_MB,
        "the restore's peak RSS was {peak} MB (bound {RESTORE_PEAK_MB} MB): a big value was held whole"
    );
}

/// A string longer than the target's proto-max-bulk-len cannot exist there (APPEND checks the
/// same limit): refused with one line naming it, before any write; the list beside it, also
/// too big for one RESTORE, still goes element by element.
#[test]
fn a_string_longer_than_the_targets_limit_is_refused_clearly() {
    let src = RedisProc::start(&[]);
    let mut c = src.conn();
    let mut rng = Rng(7);
    c.call(&[&b"SET"[..], b"long", &rng.bytes(3 << 20)]);
    fill(&mut c, &mut rng, "RPUSH", "list", 3000, 1024, 0);
    let want = digest_value(&mut c, "list");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(src.port, &store, &[]);
    agent.wait_online(&src);
    agent.wait_caught_up(&src);
    agent.stop();
    let target = RedisProc::start(&["--proto-max-bulk-len", "1mb"]);
    let (out, _) = restore_to(&store, &target, &["--verify"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout.contains("1 keys written, 0 skipped, 1 failed"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains("first failure: \"long\" (string, written element by element): 3145728 bytes, more than the target's proto-max-bulk-len (1048576)"),
        "{}",
        out.all()
    );
    let mut t = target.conn();
    assert_eq!(digest_value(&mut t, "list"), want);
    assert_eq!(t.call(&["EXISTS", "long"]).int(), 0);
    assert_eq!(t.call(&["DBSIZE"]).int(), 1, "a temporary key was left");
}

/// The Valkey 8.1 binary, or None after saying SKIPPED (a failure when required).
fn valkey81() -> Option<String> {
    match std::env::var("FLASHBACK_VALKEY8_SERVER") {
        Ok(p) if std::path::Path::new(&p).is_file() => Some(p),
        _ => {
            let msg = "SKIPPED: $FLASHBACK_VALKEY8_SERVER names no server binary; run scripts/install-test-servers.sh (and export what it prints)";
            let required = matches!(std::env::var("FLASHBACK_REQUIRE_TEST_SERVERS").as_deref(), Ok(v) if !v.is_empty() && v != "0");
            assert!(!required, "{msg} (FLASHBACK_REQUIRE_TEST_SERVERS is set)");
            eprintln!("\n!!!!!!!! {msg}\n");
            None
        }
    }
}

#[test]
fn a_valkey_8_1_restore_into_redis_7_0_relabels_or_writes_element_by_element() {
    let Some(valkey) = valkey81() else { return };
    let src = RedisProc::start_bin(&valkey, &[]);
    let mut c = src.conn();
    c.call(&["SET", "str", "hello"]);
    c.call(&["SET", "ttl", "v", "PXAT", "4102444800000"]);
    c.call(&["RPUSH", "list", "a", "b", "c"]);
    c.call(&["HSET", "hash", "f1", "v1", "f2", "2"]);
    c.call(&["ZADD", "zset", "1.5", "a", "-inf", "b"]);
    c.call(&["SADD", "ints", "1", "2", "3"]);
    // Type 20 (set-listpack) on Valkey 8.1: unknown to RDB 10.
    c.call(&["SADD", "lpset", "x", "y", "z"]);
    c.call(&["PEXPIREAT", "lpset", "4102444800777"]);
    // Type 21 (stream-listpacks3): entries, a deleted one, a group with a pending entry.
    c.call(&["XADD", "stream", "1-1", "f", "v1"]);
    c.call(&["XADD", "stream", "2-1", "f", "v2"]);
    c.call(&["XADD", "stream", "3-1", "f", "v3"]);
    c.call(&["XDEL", "stream", "3-1"]);
    c.call(&["XGROUP", "CREATE", "stream", "g", "0"]);
    c.call(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "alice",
        "COUNT",
        "1",
        "STREAMS",
        "stream",
        ">",
    ]);
    c.call(&["XGROUP", "CREATECONSUMER", "stream", "g", "bob"]);
    for k in ["list", "hash", "zset", "lpset"] {
        let enc = c.call(&["OBJECT", "ENCODING", k]).text();
        assert!(enc == "listpack" || enc == "quicklist", "{k}: {enc}");
    }
    let keys = [
        "str", "ttl", "list", "hash", "zset", "ints", "lpset", "stream",
    ];
    let want: Vec<String> = keys.iter().map(|k| digest_value(&mut c, k)).collect();

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(src.port, &store, &[]);
    agent.wait_online(&src);
    agent.wait_caught_up(&src);
    agent.stop();

    let target = RedisProc::start(&[]); // Debian's redis-server 7.0
    let mut t = target.conn();
    assert!(t
        .call(&["INFO", "server"])
        .text()
        .contains("redis_version:7.0."));
    let (out, _) = restore_to(&store, &target, &["--redis-server", &valkey, "--verify"]);
    eprintln!("{}", out.stdout);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("8 keys written, 0 skipped, 0 failed"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout
            .contains("  2 written element by element (too big for one RESTORE, or of a type the target's RDB version lacks), 6 DUMP payloads relabelled"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains("the target holds the restore"),
        "{}",
        out.all()
    );
    for (k, w) in keys.iter().zip(&want) {
        assert_eq!(&digest_value(&mut t, k), w, "{k} differs on the target");
    }
    assert_eq!(t.call(&["PEXPIRETIME", "lpset"]).int(), 4102444800777);
    let info = |c: &mut Conn| {
        let s = c.call(&["XINFO", "STREAM", "stream"]);
        let s = s.array();
        let get = |name: &str| {
            s.chunks(2)
                .find(|kv| kv[0].bytes() == name.as_bytes())
                .map(|kv| kv[1].clone())
        };
        (
            get("length"),
            get("last-generated-id"),
            get("max-deleted-entry-id"),
            get("entries-added"),
        )
    };
    assert_eq!(info(&mut t), info(&mut c));
    let pending = |c: &mut Conn| {
        let p = c.call(&["XPENDING", "stream", "g", "-", "+", "10"]);
        p.array()
            .iter()
            .map(|e| {
                let e = e.array();
                (e[0].text(), e[1].text(), e[3].int())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(pending(&mut t), pending(&mut c));
    assert_eq!(pending(&mut t).len(), 1);
    let consumers = |c: &mut Conn| {
        let r = c.call(&["XINFO", "CONSUMERS", "stream", "g"]);
        let mut names: Vec<String> = r.array().iter().map(|x| x.array()[1].text()).collect();
        names.sort();
        names
    };
    assert_eq!(consumers(&mut t), vec!["alice", "bob"]);
    let group = |c: &mut Conn| {
        let r = c.call(&["XINFO", "GROUPS", "stream"]);
        let g = r.array()[0].array().to_vec();
        let get = |name: &str| {
            g.chunks(2)
                .find(|kv| kv[0].bytes() == name.as_bytes())
                .map(|kv| kv[1].clone())
        };
        (get("last-delivered-id"), get("entries-read"))
    };
    assert_eq!(group(&mut t), group(&mut c));
}

/// A target that refuses CONFIG (managed services rename it): the copy assumes the default
/// proto-max-bulk-len and says so.
#[test]
fn a_target_refusing_config_is_assumed_at_512_mb_and_the_report_says_so() {
    let src = RedisProc::start(&[]);
    src.conn().call(&["SET", "k", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(src.port, &store, &[]);
    agent.wait_online(&src);
    agent.wait_caught_up(&src);
    agent.stop();
    let target = RedisProc::start(&["--rename-command", "CONFIG", ""]);
    let (out, _) = restore_to(&store, &target, &[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains(
            "note: the target refused CONFIG GET proto-max-bulk-len: assumed the default, 512 MB"
        ),
        "{}",
        out.all()
    );
    assert_eq!(target.conn().call(&["GET", "k"]).text(), "v");
}
