//! The restore engine against real redis-servers, without the capture agent: a store is built
//! by hand (a base from a real `SAVE`, segments of records with chosen times and offsets), the
//! same commands are applied to a reference server, and every restore's `DEBUG DIGEST` must
//! equal the reference's digest at that point.

use flashback::client::{Client, RedisUrl};
use flashback::redis_server::{RedisServer, ServerBinary, ServerOptions};
use flashback::restore::outputs::Delivered;
use flashback::restore::{self, Output, RestoreError, RestoreRequest, Target, TtlMode};
use flashback::store::layout::{self, SealedName};
use flashback::store::manifest::GenerationManifest;
use flashback::store::{Access, Store, StoreConfig};
use flashback_format::resp::Frame;
use flashback_format::segment::Origin;
use flashback_format::spec::{resp_command, SegmentSpec};
use object_store::ObjectStoreExt;
use std::time::Duration;

const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";
const T0: u64 = 1_790_000_000_000;
const BASE_OFFSET: u64 = 5_000;

fn binary() -> ServerBinary {
    ServerBinary::find(None).expect("redis-server must be installed for these tests")
}

async fn digest(c: &mut Client) -> String {
    c.ok(&["DEBUG", "DIGEST"]).await.unwrap().text()
}

/// Writes a store and, in step, applies the same commands to a reference server, remembering
/// its digest after each transaction.
struct Builder {
    store: Store,
    gen: String,
    seg: SegmentSpec,
    reference: Client,
    ref_db: u32,
    /// (arrival time, end offset, digest of the reference at that point)
    points: Vec<(u64, u64, String)>,
}

impl Builder {
    async fn new(store: Store, base: Vec<u8>, reference: Client) -> Builder {
        let gen = layout::generation_id(T0);
        let m = GenerationManifest {
            source: "src".into(),
            generation: gen.clone(),
            replid: REPLID.into(),
            base_offset: BASE_OFFSET,
            base_time_ms: T0,
            base_db: 0,
            base_size: base.len() as u64,
            rdb_version: 10,
            server: "redis 7.0.15".into(),
            reason: "test".into(),
            previous: None,
            agent_version: "test".into(),
        };
        store
            .os
            .put(&layout::manifest_key("src", &gen), m.encode().into())
            .await
            .unwrap();
        store
            .os
            .put(
                &layout::base_key(
                    "src",
                    &gen,
                    BASE_OFFSET,
                    T0,
                    base.len() as u64,
                    crc32c::crc32c(&base),
                ),
                base.into(),
            )
            .await
            .unwrap();
        let seg = SegmentSpec::new(REPLID, BASE_OFFSET, T0, Origin::NewGeneration);
        let mut b = Builder {
            store,
            gen,
            seg,
            reference,
            ref_db: 0,
            points: vec![],
        };
        let d = digest(&mut b.reference).await;
        b.points.push((T0, BASE_OFFSET, d));
        b
    }

    async fn apply(&mut self, db: u32, argv: &[&str]) {
        if argv[0].eq_ignore_ascii_case("SELECT") {
            self.ref_db = argv[1].parse().unwrap();
        } else if self.ref_db != db {
            self.reference
                .ok(&["SELECT", &db.to_string()])
                .await
                .unwrap();
            self.ref_db = db;
        }
        // Errors are part of some scenarios; the reference takes them as the source did.
        self.reference.call(argv).await.unwrap();
    }

    async fn checkpoint(&mut self, t: u64) {
        let d = digest(&mut self.reference).await;
        self.points.push((t, self.seg.end_offset(), d));
    }

    /// One command outside a transaction.
    async fn cmd(&mut self, t: u64, db: u32, argv: &[&str]) {
        self.seg.command(t, db, argv);
        self.apply(db, argv).await;
        self.checkpoint(t).await;
    }

    /// MULTI … EXEC: MULTI and the commands arrive at `t`; EXEC at `t_exec`, in the next
    /// segment when `split` (a transaction spanning a segment roll).
    async fn tx(&mut self, t: u64, t_exec: u64, db: u32, cmds: &[&[&str]], split: bool) {
        self.seg.record(t, db, false, resp_command(&["MULTI"]));
        for c in cmds {
            self.seg.record(t, db, false, resp_command(c));
        }
        if split {
            self.roll(t + 1).await;
        }
        self.seg.record(t_exec, db, true, resp_command(&["EXEC"]));
        self.apply(db, &["MULTI"]).await;
        for c in cmds {
            self.apply(db, c).await;
        }
        self.apply(db, &["EXEC"]).await;
        self.checkpoint(t_exec).await;
    }

    /// A record that carries no data (the engine must skip it).
    async fn noise(&mut self, t: u64, db: u32, argv: &[&str]) {
        self.seg.command(t, db, argv);
        self.checkpoint(t).await;
    }

    async fn roll(&mut self, end_time: u64) {
        let (bytes, sum) = self.seg.build_sealed_with_summary(end_time).unwrap();
        let name = SealedName {
            start_offset: sum.start_offset,
            end_offset: sum.end_offset,
            first_time_ms: sum.first_time_ms,
            end_time_ms: sum.end_time_ms,
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
        };
        self.store
            .os
            .put(&layout::segment_key("src", &self.gen, &name), bytes.into())
            .await
            .unwrap();
        self.seg = SegmentSpec::new(REPLID, sum.end_offset, end_time, Origin::Roll);
    }

    /// Leaves the current segment as an open tail (a live agent's).
    async fn finish_as_tail(&mut self) {
        let bytes = self.seg.build_tail().unwrap();
        self.store
            .os
            .put(
                &layout::tail_key("src", &self.gen, self.seg.header.start_offset),
                bytes.into(),
            )
            .await
            .unwrap();
    }
}

/// A base from a real SAVE, with keys in two dbs and a TTL; returns (base bytes, the server).
async fn base_server(bin: &ServerBinary, expire_at: u64) -> (Vec<u8>, RedisServer) {
    let s = RedisServer::start(bin, ServerOptions::default())
        .await
        .unwrap();
    let mut c = s.client().await.unwrap();
    c.ok(&["SET", "base:1", "v"]).await.unwrap();
    c.ok(&["HSET", "h", "f", "1", "g", "2"]).await.unwrap();
    c.ok(&["SET", "ttlkey", "x", "PXAT", &expire_at.to_string()])
        .await
        .unwrap();
    c.ok(&["SELECT", "2"]).await.unwrap();
    c.ok(&["SET", "other", "2"]).await.unwrap();
    c.ok(&["SELECT", "0"]).await.unwrap();
    c.ok(&["SAVE"]).await.unwrap();
    let base = std::fs::read(s.dir.join("dump.rdb")).unwrap();
    (base, s)
}

/// The main scenario: returns the store's dir, the store, the reference points and the server
/// that served as reference (at the final state).
async fn scenario(
    bin: &ServerBinary,
) -> (
    tempfile::TempDir,
    Store,
    Vec<(u64, u64, String)>,
    RedisServer,
) {
    let expire_at = flashback::now_ms() + 3_600_000;
    let (base, reference) = base_server(bin, expire_at).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().to_str().unwrap(),
        &StoreConfig::new(Access::Write),
    )
    .unwrap();
    let mut b = Builder::new(store.clone(), base, reference.client().await.unwrap()).await;
    let t = |i: u64| T0 + 1000 * i;
    b.cmd(t(1), 0, &["SELECT", "0"]).await;
    b.cmd(t(2), 0, &["set", "k1", "a"]).await;
    b.noise(t(3), 0, &["ping"]).await;
    b.noise(t(3) + 1, 0, &["PUBLISH", "ch", "m"]).await;
    b.tx(
        t(4),
        t(4),
        0,
        &[&["INCR", "n"], &["HSET", "h", "f", "2"]],
        false,
    )
    .await;
    b.cmd(t(5), 2, &["SELECT", "2"]).await;
    b.cmd(t(5) + 1, 2, &["SET", "other", "3"]).await;
    b.cmd(
        t(6),
        2,
        &["SET", "ttl2", "v", "PXAT", &expire_at.to_string()],
    )
    .await;
    b.roll(t(6) + 10).await;
    b.cmd(t(7), 0, &["SELECT", "0"]).await;
    b.cmd(t(7) + 1, 0, &["DEL", "base:1"]).await;
    // A transaction whose EXEC lands in the next segment, 500 ms after its MULTI.
    b.tx(
        t(8),
        t(8) + 500,
        0,
        &[&["SET", "m1", "1"], &["RPUSH", "l", "a", "b", "c"]],
        true,
    )
    .await;
    b.cmd(t(9), 0, &["SELECT", "2"]).await;
    b.cmd(t(9) + 1, 2, &["FLUSHDB"]).await;
    b.cmd(t(10), 2, &["SET", "after-flush", "1"]).await;
    b.finish_as_tail().await;
    let points = b.points.clone();
    drop(b);
    (dir, store, points, reference)
}

/// `--parallel N` from `FLASHBACK_TEST_RESTORE_ARGS` (as tests/util appends it to the CLI's
/// restores), so these in-process restores run partitioned too; 1 without it.
fn restore_parallel() -> usize {
    let args = std::env::var("FLASHBACK_TEST_RESTORE_ARGS").unwrap_or_default();
    let mut it = args.split_whitespace();
    while let Some(a) = it.next() {
        if a == "--parallel" {
            return it.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        }
    }
    1
}

fn req(target: Target, output: Output) -> RestoreRequest {
    RestoreRequest {
        source: "src".into(),
        target,
        output,
        redis_server: None,
        keys: vec![],
        db: None,
        ttl: TtlMode::Absolute,
        replace: false,
        force: false,
        verify: None,
        db_map: vec![],
        parallel: restore_parallel(),
        splice: !std::env::var("FLASHBACK_TEST_RESTORE_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .any(|a| a == "--no-splice"),
    }
}

fn url(port: u16) -> RedisUrl {
    RedisUrl::local(port)
}

/// Restores into `--serve` on a free port; returns a client, the report, and a guard that
/// stops the detached server.
async fn restore_served(
    store: &Store,
    r: RestoreRequest,
) -> (Client, restore::RestoreReport, Served) {
    let report = restore::run(store, r).await.unwrap();
    let Delivered::Serve { port, pid, dir, .. } = &report.delivered else {
        panic!("not served")
    };
    let served = Served {
        pid: pid.unwrap(),
        dir: dir.clone(),
    };
    let c = Client::connect(&url(*port), Duration::from_secs(10))
        .await
        .unwrap();
    (c, report, served)
}

struct Served {
    pid: u32,
    dir: std::path::PathBuf,
}

impl Drop for Served {
    #[allow(unsafe_code)] // raw signals to a child process (libc), as the test needs them
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.pid as i32, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn free_port() -> u16 {
    flashback::redis_server::free_port().unwrap()
}

#[tokio::test]
async fn restore_at_every_point_matches_the_reference_digest() {
    let bin = binary();
    let (_dir, store, points, _reference) = scenario(&bin).await;
    // Every recorded point, and instants just before each (which must give the previous point).
    let mut cases: Vec<(u64, String, u64)> = Vec::new();
    for (i, (t, off, d)) in points.iter().enumerate() {
        cases.push((*t, d.clone(), *off));
        if i > 0 && points[i - 1].0 < t - 1 {
            cases.push((t - 1, points[i - 1].2.clone(), points[i - 1].1));
        }
    }
    for (t, want, off) in cases {
        let (mut c, report, _served) =
            restore_served(&store, req(Target::At(t), Output::Serve(free_port()))).await;
        assert_eq!(
            digest(&mut c).await,
            want,
            "at {t} (offset {off}):\n{report}"
        );
        assert_eq!(report.engine.replica_errors, 0, "{report}");
        let role = c.ok(&["ROLE"]).await.unwrap();
        assert!(
            role.text().starts_with("master"),
            "promoted: {}",
            role.text()
        );
    }
}

#[tokio::test]
async fn transactions_are_never_split_and_offsets_are_exact() {
    let bin = binary();
    let (_dir, store, points, _reference) = scenario(&bin).await;
    // The split transaction: MULTI at T0+8000, EXEC at T0+8500. Anything in between gives
    // the state before the MULTI.
    let before = points
        .iter()
        .rev()
        .find(|p| p.0 < T0 + 8000)
        .unwrap()
        .clone();
    let after = points.iter().find(|p| p.0 == T0 + 8500).unwrap().clone();
    assert_ne!(before.2, after.2);
    let (mut c, report, _s) = restore_served(
        &store,
        req(Target::At(T0 + 8200), Output::Serve(free_port())),
    )
    .await;
    assert_eq!(digest(&mut c).await, before.2, "{report}");
    assert_eq!(c.ok(&["EXISTS", "m1"]).await.unwrap(), Frame::Integer(0));
    // By offset: one byte short of the EXEC's end rounds down to before the MULTI.
    let (mut c, _, _s) = restore_served(
        &store,
        req(Target::AtOffset(after.1 - 1), Output::Serve(free_port())),
    )
    .await;
    assert_eq!(digest(&mut c).await, before.2);
    let (mut c, report, _s) = restore_served(
        &store,
        req(Target::AtOffset(after.1), Output::Serve(free_port())),
    )
    .await;
    assert_eq!(digest(&mut c).await, after.2);
    // Partitioned (`--parallel N`), the partitions' key filters drop them before the engine
    // would count them: the state above is what is checked then.
    if restore_parallel() <= 1 {
        assert_eq!(
            report.engine.records_skipped, 2,
            "ping and publish are skipped: {report}"
        );
    }
    // Latest = the final state; the absolute TTLs survive.
    let (mut c, _, _s) =
        restore_served(&store, req(Target::Latest, Output::Serve(free_port()))).await;
    assert_eq!(digest(&mut c).await, points.last().unwrap().2);
    let t = c.ok(&["PEXPIRETIME", "ttlkey"]).await.unwrap();
    let mut r = _reference.client().await.unwrap();
    assert_eq!(t, r.ok(&["PEXPIRETIME", "ttlkey"]).await.unwrap());
}

#[tokio::test]
async fn to_a_live_target_skips_existing_keys_unless_replace() {
    let bin = binary();
    let (_dir, store, points, _reference) = scenario(&bin).await;
    let target = RedisServer::start(&bin, ServerOptions::default())
        .await
        .unwrap();
    let mut tc = target.client().await.unwrap();
    tc.ok(&["SET", "k1", "already-here"]).await.unwrap();
    tc.ok(&["SET", "unrelated", "1"]).await.unwrap();
    // At T0+4000: db0 holds base:1, h, ttlkey, k1, n; db2 holds other.
    let at = T0 + 4000;
    let want = points.iter().rev().find(|p| p.0 <= at).unwrap().2.clone();
    let report = restore::run(&store, req(Target::At(at), Output::To(target.url())))
        .await
        .unwrap();
    let Delivered::To(c, _) = &report.delivered else {
        panic!()
    };
    assert_eq!((c.written, c.skipped, c.failed), (5, 1, 0), "{report}");
    assert!(
        report
            .to_string()
            .contains("5 keys written, 1 skipped, 0 failed"),
        "{report}"
    );
    assert_eq!(tc.ok(&["GET", "k1"]).await.unwrap().text(), "already-here");
    let mut r = req(Target::At(at), Output::To(target.url()));
    r.replace = true;
    let report = restore::run(&store, r).await.unwrap();
    let Delivered::To(c, _) = &report.delivered else {
        panic!()
    };
    assert_eq!((c.written, c.skipped, c.failed), (6, 0, 0), "{report}");
    tc.ok(&["DEL", "unrelated"]).await.unwrap();
    assert_eq!(digest(&mut tc).await, want);
    assert_eq!(
        tc.ok(&["PEXPIRETIME", "ttlkey"]).await.unwrap(),
        _reference
            .client()
            .await
            .unwrap()
            .ok(&["PEXPIRETIME", "ttlkey"])
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn rdb_file_keys_filter_and_persist() {
    let bin = binary();
    let (dir, store, points, _reference) = scenario(&bin).await;
    let file = dir.path().join("out.rdb");
    let at = T0 + 6000;
    let report = restore::run(&store, req(Target::At(at), Output::Rdb(file.clone())))
        .await
        .unwrap();
    assert!(report.to_string().contains("out.rdb"), "{report}");
    // Refuses to overwrite, before doing any work; --force overwrites.
    let e = restore::run(&store, req(Target::At(at), Output::Rdb(file.clone())))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RestoreError::Exists(_)) && e.to_string().contains("--force"),
        "{e}"
    );
    let mut r = req(Target::At(at), Output::Rdb(file.clone()));
    r.force = true;
    restore::run(&store, r).await.unwrap();
    // Load the file into a fresh server: same digest as the reference at that time.
    let load_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&file, load_dir.path().join("dump.rdb")).unwrap();
    let loaded = RedisServer::start(
        &bin,
        ServerOptions {
            dir: Some(load_dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let want = points.iter().rev().find(|p| p.0 <= at).unwrap().2.clone();
    assert_eq!(digest(&mut loaded.client().await.unwrap()).await, want);

    // --keys and --ttl persist.
    let mut r = req(Target::At(at), Output::Serve(free_port()));
    r.keys = vec![b"ttl*".to_vec(), b"h".to_vec()];
    r.ttl = TtlMode::Persist;
    let (mut c, report, _s) = restore_served(&store, r).await;
    // Key-level: the 4 unselected keys were never loaded, so none is left to remove.
    assert_eq!(report.filtered, Some((3, 0)), "{report}");
    assert!(report.key_level.is_some(), "{report}");
    assert!(
        report
            .ttl_note
            .as_deref()
            .is_some_and(|n| n.contains("persist")),
        "{report}"
    );
    assert_eq!(c.ok(&["DBSIZE"]).await.unwrap(), Frame::Integer(2));
    assert_eq!(
        c.ok(&["PEXPIRETIME", "ttlkey"]).await.unwrap(),
        Frame::Integer(-1)
    );
    c.ok(&["SELECT", "2"]).await.unwrap();
    assert_eq!(c.ok(&["DBSIZE"]).await.unwrap(), Frame::Integer(1));

    // --ttl relative: the key keeps the time it had left at `at` (tests/e2e/ttl.rs checks the values).
    let mut r = req(Target::At(at), Output::Serve(free_port()));
    r.ttl = TtlMode::Relative;
    let (mut c, report, _s) = restore_served(&store, r).await;
    assert!(
        report
            .ttl_note
            .as_deref()
            .is_some_and(|n| n.contains("relative")),
        "{report}"
    );
    assert!(matches!(c.ok(&["PTTL", "ttlkey"]).await.unwrap(), Frame::Integer(ms) if ms > 0));
}

#[tokio::test]
async fn replica_errors_are_counted_and_newer_bases_refused() {
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().to_str().unwrap(),
        &StoreConfig::new(Access::Write),
    )
    .unwrap();
    let (base, reference) = base_server(&bin, flashback::now_ms() + 3_600_000).await;
    let mut b = Builder::new(store.clone(), base, reference.client().await.unwrap()).await;
    b.cmd(T0 + 1, 0, &["SELECT", "0"]).await;
    b.cmd(T0 + 2, 0, &["SET", "s", "abc"]).await;
    b.cmd(T0 + 3, 0, &["INCR", "s"]).await;
    b.cmd(T0 + 4, 0, &["SET", "t", "1"]).await;
    b.roll(T0 + 5).await;
    let want = b.points.last().unwrap().2.clone();
    drop(b);
    let (mut c, report, _s) =
        restore_served(&store, req(Target::Latest, Output::Serve(free_port()))).await;
    assert_eq!(digest(&mut c).await, want);
    assert_eq!(report.engine.replica_errors, 1, "{report}");
    assert!(report.has_failures());
    assert!(report.to_string().contains("1 commands failed"), "{report}");

    // A base that says RDB v11 cannot go to a 7.0 server: refused before any server starts.
    let store2_dir = tempfile::tempdir().unwrap();
    let store2 = Store::open(
        store2_dir.path().to_str().unwrap(),
        &StoreConfig::new(Access::Write),
    )
    .unwrap();
    let mut fake = b"REDIS0011".to_vec();
    fake.extend_from_slice(&[0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    let b2 = Builder::new(store2.clone(), fake, reference.client().await.unwrap()).await;
    drop(b2);
    if bin.max_rdb_version() < 11 {
        let e = restore::run(&store2, req(Target::Latest, Output::Serve(free_port())))
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("base is RDB v11")
                && msg.contains("loads up to v10")
                && msg.contains("--redis-server"),
            "{msg}"
        );
    }
}

fn flashback(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flashback"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn at(ms: u64) -> String {
    format!("@{}.{:03}", ms / 1000, ms % 1000)
}

#[tokio::test]
async fn the_command_line_plans_restores_and_uses_exit_codes() {
    let bin = binary();
    let (dir, _store, points, _reference) = scenario(&bin).await;
    if let Ok(keep) = std::env::var("FLASHBACK_TEST_KEEP_STORE") {
        // For looking at the CLI by hand: a copy of the store survives the test.
        std::process::Command::new("cp")
            .args(["-r", dir.path().to_str().unwrap(), &keep])
            .status()
            .unwrap();
    }
    let s = dir.path().to_str().unwrap();
    // Outside the window: exit 1, and the window is printed with dates.
    let (code, _, err) = flashback(&[
        "restore",
        "--store",
        s,
        "--at",
        &at(T0 + 999_999),
        "--rdb",
        "x.rdb",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("outside the restorable window") && err.contains("2026-"),
        "{err}"
    );
    // Missing point in time or sink: usage errors, exit 2.
    assert_eq!(flashback(&["restore", "--store", s, "--rdb", "x.rdb"]).0, 2);
    assert_eq!(flashback(&["restore", "--store", s, "--latest"]).0, 2);
    assert_eq!(
        flashback(&[
            "restore",
            "--store",
            s,
            "--latest",
            "--at-offset",
            "3",
            "--rdb",
            "x"
        ])
        .0,
        2
    );
    assert_eq!(
        flashback(&[
            "restore",
            "--store",
            s,
            "--at",
            "yesterday-ish",
            "--rdb",
            "x"
        ])
        .0,
        2
    );
    // --dry-run prints the plan and writes nothing.
    let file = dir.path().join("cli.rdb");
    let f = file.to_str().unwrap();
    let (code, out, err) = flashback(&[
        "restore",
        "--store",
        s,
        "--at",
        &at(T0 + 8200),
        "--rdb",
        f,
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("base:") && out.contains("segment:") && out.contains("stop:"),
        "{out}"
    );
    assert!(!file.exists());
    let (code, out, err) =
        flashback(&["restore", "--store", s, "--at", &at(T0 + 8200), "--rdb", f]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote") && out.contains("applied:"), "{out}");
    let (code, _, err) = flashback(&["restore", "--store", s, "--latest", "--rdb", f]);
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    let load_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&file, load_dir.path().join("dump.rdb")).unwrap();
    let loaded = RedisServer::start(
        &bin,
        ServerOptions {
            dir: Some(load_dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let want = points
        .iter()
        .rev()
        .find(|p| p.0 <= T0 + 8200)
        .unwrap()
        .2
        .clone();
    assert_eq!(digest(&mut loaded.client().await.unwrap()).await, want);
    let (code, out, _) = flashback(&["restore", "--help"]);
    assert!(code == 0 && out.contains("Examples:"));
}
