//! Acknowledged means durable, under a power cut (DESIGN.md, first non-negotiable).
//!
//! The agent captures a real redis-server through a recording RESP proxy (every `REPLCONF ACK`
//! it sends is kept) into a local store under the power-loss shim (tests/util/powercut.c). A
//! seeded workload writes one command at a time and records, after each, the primary's
//! `master_repl_offset` and `DEBUG DIGEST`, so the source's state is known at every offset.
//! Power is cut at chosen moments: during the snapshot transfer, at a random instant
//! (mid-block), right after an ACK, at the k-th directory fsync (inside a seal or a segment
//! open: the rename done, its directory not yet synced) and at the k-th file fsync. After each
//! cut the store is rolled back to what was durable, the agent restarts normally (without the
//! shim), and the highest offset the cut agent had acknowledged, and a few earlier ones, must
//! restore digest-equal to the source at that offset.
//!
//! A kill -9 keeps the page cache: only this test fails if the agent ACKs before its fsync.
//! Replay with `FLASHBACK_SEED=<seed>`.

#[path = "../util/powercut.rs"]
mod powercut;
#[path = "../util/resp_proxy.rs"]
mod resp_proxy;

/// moto on a free port with one bucket; killed on drop.
mod moto {
    use crate::util::{die_with_parent, free_port};
    use std::io::{Read, Write};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct Moto {
        child: Child,
        pub endpoint: String,
    }

    impl Moto {
        pub fn start(bin: &Path, bucket: &str) -> Moto {
            for _ in 0..5 {
                let port = free_port();
                let mut child = die_with_parent(&mut Command::new(bin))
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                    // moto checks no signature but wants some Authorization header.
                    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                        let req = format!(
                            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
                             Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0000\r\n\
                             Connection: close\r\n\r\n"
                        );
                        let mut answer = String::new();
                        if s.write_all(req.as_bytes()).is_ok()
                            && s.read_to_string(&mut answer).is_ok()
                            && answer.starts_with("HTTP/1.1 200")
                        {
                            return Moto {
                                child,
                                endpoint: format!("http://127.0.0.1:{port}"),
                            };
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            panic!("moto ({}) would not start", bin.display());
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

use crate::util::*;
use powercut::PowerCut;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use resp_proxy::{RespProxy, Trigger};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (offset after the write, DEBUG DIGEST then), in offset order.
type Points = Arc<Mutex<Vec<(u64, String)>>>;

struct Workload {
    pause: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Workload {
    fn start(port: u16, seed: u64, points: Points) -> Workload {
        let (pause, idle, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, i, s, pts) = (pause.clone(), idle.clone(), stop.clone(), points.clone());
        let thread = std::thread::spawn(move || {
            let mut conn = Conn::connect(port).unwrap();
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut writes = 0u64;
            while !s.load(Ordering::SeqCst) {
                if p.load(Ordering::SeqCst) {
                    i.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                i.store(false, Ordering::SeqCst);
                let mut cmds = one_write(&mut rng, writes);
                cmds.push(vec!["INFO".into(), "replication".into()]);
                cmds.push(vec!["DEBUG".into(), "DIGEST".into()]);
                let replies = conn.pipeline(&cmds);
                for r in &replies[..replies.len() - 2] {
                    assert!(!r.is_error(), "workload write failed: {r:?}");
                }
                let offset = parse_info(&replies[replies.len() - 2].text()).master_offset;
                let digest = replies[replies.len() - 1].text();
                pts.lock().unwrap().push((offset, digest));
                writes += 1;
                // About 1.5 MB/s of stream: a 1 MiB segment seals every second or so.
                if writes.is_multiple_of(4) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            writes
        });
        Workload {
            pause,
            idle,
            stop,
            thread: Some(thread),
        }
    }

    /// Until the writer is between writes and will not start another.
    fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.idle.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the workload did not pause");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn resume(&self) {
        self.idle.store(false, Ordering::SeqCst);
        self.pause.store(false, Ordering::SeqCst);
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the workload panicked")
    }
}

/// One write (or one MULTI…EXEC) of the seeded mix: strings of all sizes (some over the
/// 64 KiB block, so records span blocks), counters, hashes, lists, deletes, transactions.
fn one_write(rng: &mut SmallRng, n: u64) -> Vec<Vec<String>> {
    let key = |rng: &mut SmallRng, kind: &str| format!("{kind}:{}", rng.gen_range(0..300));
    let value = |rng: &mut SmallRng| {
        let len = match rng.gen_range(0..100) {
            0..=1 => rng.gen_range(64 * 1024..200 * 1024),
            2..=30 => rng.gen_range(1000..6000),
            _ => rng.gen_range(1..300),
        };
        // Random letters: a run of one letter would compress to nothing and never fill a
        // segment.
        let v: String = (0..len)
            .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
            .collect();
        format!("{n}-{v}")
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    match rng.gen_range(0..100) {
        0..=44 => vec![s(&["SET", &key(rng, "s"), &value(rng)])],
        45..=59 => vec![s(&[
            "INCRBY",
            &key(rng, "n"),
            &rng.gen_range(-50..50).to_string(),
        ])],
        60..=74 => vec![s(&[
            "HSET",
            &key(rng, "h"),
            &format!("f{}", rng.gen_range(0..20)),
            &value(rng),
        ])],
        75..=84 => vec![s(&["RPUSH", &key(rng, "l"), &value(rng)])],
        85..=91 => vec![s(&["DEL", &key(rng, "s"), &key(rng, "l")])],
        _ => vec![
            s(&["MULTI"]),
            s(&["INCR", &key(rng, "n")]),
            s(&["SET", &key(rng, "s"), &value(rng)]),
            s(&["LPOP", &key(rng, "l")]),
            s(&["EXEC"]),
        ],
    }
}

/// The source's digest at offset `n`: the last recorded write at or before it. Only the
/// workload writes and the primary's PINGs are off (repl-ping-replica-period 3600), so no
/// state change lies between two recorded offsets.
fn digest_at(points: &[(u64, String)], n: u64) -> Option<String> {
    let i = points.partition_point(|p| p.0 <= n);
    (i > 0).then(|| points[i - 1].1.clone())
}

fn digest_of(state: &str) -> String {
    state
        .split(' ')
        .find_map(|w| w.strip_prefix("digest="))
        .unwrap_or("")
        .to_string()
}

/// 1.5 MB of incompressible writes (each one recorded), more than the 1 MB backlog.
fn overrun_backlog(c: &mut Conn, rng: &mut SmallRng, points: &Points) {
    for i in 0..15 {
        let mut v = vec![0u8; 100 * 1024];
        rng.fill(&mut v[..]);
        let cmds = vec![
            vec![b"SET".to_vec(), format!("filler:{i}").into_bytes(), v],
            vec![b"INFO".to_vec(), b"replication".to_vec()],
            vec![b"DEBUG".to_vec(), b"DIGEST".to_vec()],
        ];
        let r = c.pipeline(&cmds);
        assert!(!r[0].is_error(), "{:?}", r[0]);
        let off = parse_info(&r[1].text()).master_offset;
        points.lock().unwrap().push((off, r[2].text()));
    }
}

fn wait_dead(agent: &mut Agent, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if agent.exit_status().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Restores each of `offsets` from `store` and compares with the source's digest there.
fn check(
    store: &str,
    env: &[(&str, &str)],
    points: &[(u64, String)],
    offsets: &[u64],
    when: &str,
    failures: &mut Vec<String>,
    checked: &mut usize,
) {
    let mut offsets = offsets.to_vec();
    offsets.sort();
    offsets.dedup();
    for n in offsets {
        let Some(want) = digest_at(points, n) else {
            continue;
        };
        *checked += 1;
        match try_restore_rdb_env(store, &["--at-offset", &n.to_string()], env) {
            Ok(got) if digest_of(&got) == want => {}
            Ok(got) => failures.push(format!(
                "{when}: acknowledged offset {n} restored to digest {} but the source had {want}",
                digest_of(&got)
            )),
            Err(e) => failures.push(format!(
                "{when}: acknowledged offset {n} does not restore: {}",
                e.lines()
                    .filter(|l| l.starts_with("error"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    /// While the snapshot streams in, `bytes` into it.
    Rdb,
    /// At a random instant of the stream.
    MidBlock,
    /// Right after the k-th ACK.
    AfterAck,
    /// Just before the k-th directory fsync (a seal's rename, a new tail's entry).
    DirSync,
    /// Just before the k-th file fsync (a block, a seal's footer, a base).
    FileSync,
}

#[test]
fn every_acknowledged_offset_survives_a_power_cut() {
    run("power_loss", None);
}

/// The same with a remote store (moto): the spool is under the shim and uploads run every
/// 200 ms, so the cuts land during uploads (a segment half sent, sent but not yet deleted from
/// the spool, a manifest being replaced). What was acknowledged may live only in the spool at
/// the cut; after the restart it must reach the store.
#[test]
fn every_acknowledged_offset_survives_a_power_cut_of_the_spool_during_uploads() {
    let test = "power_loss_spool";
    if std::env::var("FLASHBACK_SKIP_S3").as_deref() == Ok("1") {
        eprintln!("[{test}] SKIPPED: FLASHBACK_SKIP_S3=1");
        return;
    }
    let bin = std::env::var_os("FLASHBACK_TEST_MOTO")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".cache/flashback-moto/bin/moto_server"))
        })
        .filter(|p| p.is_file());
    let Some(bin) = bin else {
        // The S3 tests' rule (tests/s3.rs): a missing moto is a failure, not a skip.
        panic!(
            "[{test}] the S3 test server (moto) is not installed: run scripts/install-s3-test-server.sh \
             and export what it prints (or set FLASHBACK_TEST_MOTO, or FLASHBACK_SKIP_S3=1 to skip)"
        );
    };
    let moto = moto::Moto::start(&bin, "fb-pl");
    run(test, Some(&moto.endpoint));
}

fn run(test: &str, remote: Option<&str>) {
    let seed = seed(test);
    let mut rng = SmallRng::seed_from_u64(seed);
    // With a remote store the restarted agent must not fetch a lost record again from the
    // backlog (that would hide the loss, and the store as the cut left it cannot be read
    // before the restart uploads the spool): after each cut more than the backlog is written,
    // so the restart starts a new generation and the acknowledged offsets can come only from
    // what was durable.
    let backlog = if remote.is_some() { "1mb" } else { "256mb" };
    let primary = RedisProc::start(&[
        "--repl-ping-replica-period",
        "3600",
        "--repl-backlog-size",
        backlog,
    ]);
    let proxy = RespProxy::start(primary.port);
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // FLASHBACK_KEEP_TEST_DIR=1 keeps the store, the trees before each cut and the journals.
    let _tmp = match std::env::var_os("FLASHBACK_KEEP_TEST_DIR") {
        Some(_) => {
            let _ = tmp.keep();
            None
        }
        None => Some(tmp),
    };
    eprintln!("[{test}] working in {}", dir.display());
    let log = dir.join("agent.log");
    // What the shim watches: the store, or the spool of a remote one.
    let (root, store_s) = match remote {
        None => {
            let store = dir.join("store");
            let s = store.to_str().unwrap().to_string();
            (store, s)
        }
        Some(_) => (dir.join("spool"), "s3://fb-pl/t".to_string()),
    };
    let mut args: Vec<String> = ["--segment-mib", "1", "--base-every", "0"]
        .map(String::from)
        .to_vec();
    let mut s3_env: Vec<(String, String)> = Vec::new();
    if let Some(endpoint) = remote {
        args.extend(
            [
                "--s3-endpoint",
                endpoint,
                "--spool",
                root.to_str().unwrap(),
                "--upload-interval",
                "200ms",
            ]
            .map(String::from),
        );
        s3_env = [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("FLASHBACK_S3_ENDPOINT", endpoint),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
    }
    let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    let restore_env: Vec<(&str, &str)> = s3_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let points: Points = Arc::default();

    // A snapshot big enough (6 MB, incompressible) that a cut can land inside its transfer.
    let mut c = primary.conn();
    for chunk in 0..6 {
        let cmds: Vec<Vec<Vec<u8>>> = (0..10)
            .map(|i| {
                let mut v = vec![0u8; 100 * 1024];
                rng.fill(&mut v[..]);
                vec![b"SET".to_vec(), format!("big:{chunk}:{i}").into_bytes(), v]
            })
            .collect();
        for r in c.pipeline(&cmds) {
            assert!(!r.is_error(), "{r:?}");
        }
    }
    let rec = |c: &mut Conn, points: &Points| {
        let off = parse_info(&c.call(&["INFO", "replication"]).text()).master_offset;
        let d = c.call(&["DEBUG", "DIGEST"]).text();
        points.lock().unwrap().push((off, d));
    };
    rec(&mut c, &points);

    let start = |pc: Option<&PowerCut>, extra: &[(&str, &str)]| {
        let mut env: Vec<(String, String)> = pc.map(|p| p.env()).unwrap_or_default();
        env.extend(s3_env.iter().cloned());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Agent::start_env(&url, proxy.port, &store_s, &log, &args, &env)
    };

    let cuts = [
        Cut::Rdb,
        Cut::AfterAck,
        Cut::MidBlock,
        Cut::DirSync,
        Cut::FileSync,
        Cut::MidBlock,
        Cut::DirSync,
        Cut::AfterAck,
    ];
    let mut workload: Option<Workload> = None;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (round, cut) in cuts.iter().enumerate() {
        let pc = PowerCut::begin(&root, &dir.join(format!("journal-{round}")));
        let acks_before = proxy.acks().len();
        let k: usize = rng.gen_range(1..8);
        let crash_at = match cut {
            Cut::DirSync => format!("dirsync:{k}"),
            Cut::FileSync => format!("fsync:{}", rng.gen_range(2..40)),
            _ => String::new(),
        };
        let mut agent = start(Some(&pc), &[("FLASHBACK_PL_CRASH_AT", &crash_at)]);
        // The round after the snapshot cut makes the generation itself under the shim: its
        // directories, base and first segment must become durable before the first ACK.
        if workload.is_none() && !matches!(cut, Cut::Rdb) {
            agent.wait_online(&primary);
            c.call(&["FLUSHALL"]);
            rec(&mut c, &points);
            workload = Some(Workload::start(primary.port, seed ^ 0x5eed, points.clone()));
        }
        let what = match cut {
            Cut::Rdb => {
                let bytes = rng.gen_range(1u64 << 20..5 << 20);
                proxy.arm(Trigger::RdbBytes {
                    pid: agent.pid(),
                    bytes,
                });
                assert!(
                    wait_dead(&mut agent, Duration::from_secs(30)),
                    "the snapshot transfer never reached {bytes} bytes; log:\n{}",
                    agent.log_text()
                );
                format!("{bytes} bytes into the snapshot")
            }
            Cut::MidBlock => {
                let ms = rng.gen_range(300..2000);
                std::thread::sleep(Duration::from_millis(ms));
                agent.kill9();
                format!("at {ms} ms")
            }
            Cut::AfterAck => {
                let n = rng.gen_range(2..15);
                proxy.arm(Trigger::AfterAcks {
                    pid: agent.pid(),
                    n,
                });
                assert!(
                    wait_dead(&mut agent, Duration::from_secs(30)),
                    "no {n} ACKs in 30 s; log:\n{}",
                    agent.log_text()
                );
                format!("right after ACK #{n}")
            }
            Cut::DirSync | Cut::FileSync => {
                if !wait_dead(&mut agent, Duration::from_secs(20)) {
                    agent.kill9();
                    format!("{crash_at} never came in 20 s: cut at 20 s")
                } else {
                    format!("just before {crash_at}")
                }
            }
        };
        let stats = pc.cut();
        let acked: Vec<u64> = proxy.acks()[acks_before..].iter().map(|a| a.0).collect();
        eprintln!(
            "[{test}] round {round}: {cut:?} cut {what}: {} ACKs from {:?} to {:?}; journal {stats:?}",
            acked.len(),
            acked.first(),
            acked.last()
        );

        // First what the cut left, before anything could fetch a lost record again from the
        // primary's backlog (the restarted agent would, and hide the loss): the highest offset
        // acknowledged and one more. Then, after a normal restart (recovery seals the tail),
        // those again and a few earlier ones.
        let mut before: Vec<u64> = acked.iter().max().into_iter().copied().collect();
        if !acked.is_empty() {
            before.push(acked[rng.gen_range(0..acked.len())]);
        }
        if remote.is_none() {
            let pts = points.lock().unwrap().clone();
            check(
                &store_s,
                &restore_env,
                &pts,
                &before,
                &format!("round {round} ({cut:?} cut {what}), store as the cut left it"),
                &mut failures,
                &mut checked,
            );
        }

        // Nothing was acknowledged in a cut snapshot; the next round starts from scratch.
        let Some(w) = workload.as_ref() else {
            continue;
        };
        if remote.is_some() {
            w.pause();
            overrun_backlog(&mut c, &mut rng, &points);
            w.resume();
        }
        let mut agent = start(None, &[]);
        w.pause();
        wait_caught_up(&primary, &mut agent);
        if remote.is_some() {
            // The final upload pass of a clean stop puts everything in the store.
            agent.stop();
        }
        let mut after = before.clone();
        if !acked.is_empty() {
            after.push(acked[rng.gen_range(0..acked.len())]);
        }
        let all = proxy.acks();
        if !all.is_empty() {
            after.push(all[rng.gen_range(0..all.len())].0);
        }
        let pts = points.lock().unwrap().clone();
        check(
            &store_s,
            &restore_env,
            &pts,
            &after,
            &format!("round {round} ({cut:?} cut {what}), after a restart"),
            &mut failures,
            &mut checked,
        );
        if remote.is_none() {
            agent.stop();
        }
        w.resume();
    }
    let writes = workload.map(|w| w.finish()).unwrap_or(0);
    eprintln!(
        "[{test}] {writes} writes, {} ACKs recorded, {checked} acknowledged offsets restored",
        proxy.acks().len()
    );
    assert!(
        failures.is_empty(),
        "offsets the agent had acknowledged were lost by a power cut (seed {seed}):\n  {}\nagent log: {}",
        failures.join("\n  "),
        log.display()
    );
    assert!(checked >= cuts.len(), "only {checked} offsets checked");
}
