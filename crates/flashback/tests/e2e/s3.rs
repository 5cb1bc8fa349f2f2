//! Object-store integration and fault tests: capture, compaction, prune, verify and restore all
//! through `s3://`, against a real S3-protocol server (moto, installed by
//! `scripts/install-s3-test-server.sh`) that each test starts on its own free port with its own
//! bucket, and real redis-servers. Every recorded instant is compared with the differential
//! oracle (DEBUG DIGEST + every key's absolute expiry + functions).
//!
//! Faults come from a proxy between the agent and the server (`util/proxy.rs`): the store down
//! (every connection dropped), stalled (accepted, never answered), and answering 500s at random;
//! plus kill -9 of the agent at chosen moments, objects corrupted and truncated in the bucket,
//! a second agent on the same source, and a full spool disk (a 2 MiB tmpfs; root only).
//!
//! Moto keeps its data in memory: it is never restarted inside a test; outages are the proxy's.
//! `FLASHBACK_SKIP_S3=1` skips these tests explicitly; a missing moto is a failure, not a skip.
//! Replay a failure with `FLASHBACK_SEED=<seed printed by the test>`.

#[path = "../util/proxy.rs"]
mod proxy;

use crate::util::*;
use proxy::{Mode, Proxy};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the store is unreachable in the outage test: the issue's "down for 30 s".
const STORE_DOWN: Duration = Duration::from_secs(30);
/// How long the store accepts connections and never answers, in the same test.
const STORE_STALLED: Duration = Duration::from_secs(6);

const INSTALL_HINT: &str = "scripts/install-s3-test-server.sh";

/// moto checks no signature, but treats a request without an `Authorization` header as
/// anonymous and refuses it reads of private objects (403); any well-formed header will do.
const FAKE_AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                         SignedHeaders=host, Signature=0000";

// ---------------------------------------------------------------------------------------------
// The S3 test server

fn skip(test: &str) -> bool {
    if std::env::var("FLASHBACK_SKIP_S3").is_ok_and(|v| v == "1") {
        eprintln!("[{test}] SKIPPED: FLASHBACK_SKIP_S3=1 (object-store tests skipped on purpose)");
        return true;
    }
    false
}

fn moto_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FLASHBACK_TEST_MOTO") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "FLASHBACK_TEST_MOTO={} is not a file: run {INSTALL_HINT} (it prints the right value), \
             or set FLASHBACK_SKIP_S3=1 to skip the object-store tests",
            p.display()
        );
        return p;
    }
    // Where the install script puts it by default.
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(p) = cache.map(|c| c.join("flashback-moto/bin/moto_server")) {
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the S3 test server (moto) is not installed: run {INSTALL_HINT} (CI does) and export the \
         FLASHBACK_TEST_MOTO it prints, or set FLASHBACK_SKIP_S3=1 to skip the object-store tests"
    )
}

struct Moto {
    port: u16,
    child: Child,
    endpoint: String,
    bucket: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// A fresh moto on a free port, with `bucket` created.
    fn start(bucket: &str) -> Moto {
        let bin = moto_bin();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        for _attempt in 0..5 {
            let port = free_port();
            let f = File::create(&log).unwrap();
            let mut child = die_with_parent(&mut Command::new(&bin))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(f.try_clone().unwrap())
                .stderr(f)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run {}: {e}; run {INSTALL_HINT}", bin.display())
                });
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // most likely the port was taken meanwhile: another one
                }
                if let Ok((200, _)) = s3_http(port, "PUT", &format!("/{bucket}"), b"") {
                    return Moto {
                        port,
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                        bucket: bucket.to_string(),
                        log,
                        _dir: dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "moto on port {port} did not create bucket {bucket} within 60 s; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!(
            "moto would not start; last log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Credentials and endpoint for `flashback` commands talking to this server directly.
    fn env(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("FLASHBACK_S3_ENDPOINT", self.endpoint.as_str()),
        ]
    }

    /// The server's last log lines (one per request), for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Every object under `prefix`: (key, size).
    fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let (code, body) = s3_http(
            self.port,
            "GET",
            &format!("/{}?list-type=2&max-keys=1000&prefix={prefix}", self.bucket),
            b"",
        )
        .unwrap();
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(code, 200, "list {prefix}: {body}");
        assert!(
            !body.contains("<IsTruncated>true"),
            "more than 1000 objects under {prefix}"
        );
        let tag = |s: &str, t: &str| -> Option<String> {
            let open = format!("<{t}>");
            let from = s.find(&open)? + open.len();
            let to = s[from..].find(&format!("</{t}>"))? + from;
            Some(s[from..to].to_string())
        };
        body.split("<Contents>")
            .skip(1)
            .map(|c| {
                (
                    tag(c, "Key").unwrap(),
                    tag(c, "Size").unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let (code, body) =
            s3_http(self.port, "GET", &format!("/{}/{key}", self.bucket), b"").unwrap();
        assert_eq!(code, 200, "GET {key}: {}", String::from_utf8_lossy(&body));
        body
    }

    /// A raw overwrite, as a faulty disk or a stray tool would do it.
    fn put(&self, key: &str, bytes: &[u8]) {
        let (code, body) =
            s3_http(self.port, "PUT", &format!("/{}/{key}", self.bucket), bytes).unwrap();
        assert_eq!(code, 200, "PUT {key}: {}", String::from_utf8_lossy(&body));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange with the S3 server: (status, body).
fn s3_http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {FAKE_AUTH}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP head"))?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status"))?;
    let mut body = resp[split + 4..].to_vec();
    if let Some(len) = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    }) {
        body.truncate(len);
    }
    Ok((code, body))
}

/// A sealed segment in a listing: `…/segments/<start>-<end>-<t0>-<t1>.seg`.
#[derive(Debug, Clone)]
struct SegKey {
    key: String,
    size: u64,
    start: u64,
    end: u64,
}

impl SegKey {
    fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap()
    }
}

fn sealed_segments(listing: &[(String, u64)]) -> Vec<SegKey> {
    let mut v: Vec<SegKey> = listing
        .iter()
        .filter(|(k, _)| k.contains("/segments/") && k.ends_with(".seg"))
        .map(|(k, size)| {
            let name = k.rsplit('/').next().unwrap();
            let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
            SegKey {
                key: k.clone(),
                size: *size,
                start: hex(&name[0..16]),
                end: hex(&name[17..33]),
            }
        })
        .collect();
    v.sort_by_key(|s| (s.start, s.end));
    v
}

/// Bases in a listing: (key, offset, time in ms), oldest first.
fn bases(listing: &[(String, u64)]) -> Vec<(String, u64, u64)> {
    let mut v: Vec<(String, u64, u64)> = listing
        .iter()
        .filter(|(k, _)| k.contains("/base/") && k.ends_with(".rdb"))
        .map(|(k, _)| {
            let name = k.rsplit('/').next().unwrap();
            (
                k.clone(),
                u64::from_str_radix(&name[0..16], 16).unwrap(),
                u64::from_str_radix(&name[17..29], 16).unwrap(),
            )
        })
        .collect();
    v.sort_by_key(|b| b.1);
    v
}

/// Files the agent left in its spool that are not uploaded yet (sealed segments and bases;
/// open tails and the lock are expected to stay).
fn spooled_objects(spool: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .extension()
                .is_some_and(|x| x == "seg" || x == "rdb" || x == "meta")
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(spool, &mut out);
    out.sort();
    out
}

/// Files under `dir` whose name ends with `suffix`.
fn files_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, suffix, out);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, suffix, &mut out);
    out.sort();
    out
}

/// Until the bucket holds a sealed segment reaching `offset` under `prefix` and the spool has
/// nothing left to upload; returns how long that took.
fn wait_uploaded(
    moto: &Moto,
    prefix: &str,
    spool: &Path,
    offset: u64,
    timeout: Duration,
    agent: &mut Agent,
) -> Duration {
    let started = Instant::now();
    loop {
        let reached = sealed_segments(&moto.list(prefix))
            .iter()
            .any(|s| s.end >= offset);
        if reached && spooled_objects(spool).is_empty() {
            return started.elapsed();
        }
        agent.assert_alive("waiting for its uploads");
        if started.elapsed() > timeout {
            panic!(
                "after {timeout:?} the bucket still has no segment reaching offset {offset} (or the spool \
                 still holds {:?});\nbucket: {:#?}\nagent log:\n{}\n--- moto log\n{}",
                spooled_objects(spool),
                moto.list(prefix),
                agent.log_text(),
                moto.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// A smaller cousin of differential.rs's workload: every data type, MULTI/EXEC, SELECT, scripts,
// binary keys and values, long TTLs (nothing expires during a test, so no reaping is needed).

type Cmd = Vec<Vec<u8>>;

fn cmd(parts: &[&[u8]]) -> Cmd {
    parts.iter().map(|p| p.to_vec()).collect()
}

const DBS: u32 = 3;
const SCRIPT: &str = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])";

struct Writer {
    rng: SmallRng,
    conn: Conn,
    phase: usize,
    ops: usize,
}

impl Writer {
    fn new(seed: u64, conn: Conn) -> Writer {
        Writer {
            rng: SmallRng::seed_from_u64(seed),
            conn,
            phase: 0,
            ops: 0,
        }
    }

    fn key(&mut self, kind: &str) -> Vec<u8> {
        let i: u8 = self.rng.gen_range(0..24);
        let mut k = format!("{kind}:{i}").into_bytes();
        if i >= 20 {
            k.extend_from_slice(b":\x00\r\n\xff");
        }
        k
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.rng.fill_bytes(&mut v);
        if len >= 4 {
            let at = self.rng.gen_range(0..len - 1);
            v[at..at + 2].copy_from_slice(b"\r\n");
        }
        v
    }

    fn val(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..100) {
            0..=74 => format!("v{}", self.rng.gen_range(0..1_000_000)).into_bytes(),
            75..=97 => {
                let n = self.rng.gen_range(0..200);
                self.bytes(n)
            }
            _ => {
                let n = self.rng.gen_range(2_000..40_000);
                self.bytes(n)
            }
        }
    }

    fn num(&mut self, lo: i64, hi: i64) -> Vec<u8> {
        self.rng.gen_range(lo..hi).to_string().into_bytes()
    }

    fn member(&mut self) -> Vec<u8> {
        format!("m{}", self.rng.gen_range(0..20)).into_bytes()
    }

    fn any_key(&mut self) -> Vec<u8> {
        let kinds = ["s", "n", "h", "l", "set", "z", "x"];
        let kind = kinds[self.rng.gen_range(0..kinds.len())];
        self.key(kind)
    }

    fn op(&mut self) -> Cmd {
        match self.rng.gen_range(0..26) {
            0..=2 => {
                let (k, v) = (self.key("s"), self.val());
                cmd(&[b"SET", &k, &v])
            }
            3 => {
                let (k, v, t) = (self.key("s"), self.val(), self.num(3_600, 36_000));
                cmd(&[b"SET", &k, &v, b"EX", &t])
            }
            4 => {
                let (k, v) = (self.key("s"), self.val());
                cmd(&[b"APPEND", &k, &v])
            }
            5 => {
                let (k, o, v) = (self.key("s"), self.num(0, 30), self.val());
                cmd(&[b"SETRANGE", &k, &o, &v])
            }
            6 => {
                let (k, d) = (self.key("n"), self.num(-1000, 1000));
                cmd(&[b"INCRBY", &k, &d])
            }
            7..=8 => {
                let (k, f, v) = (self.key("h"), self.member(), self.val());
                cmd(&[b"HSET", &k, &f, &v])
            }
            9 => {
                let (k, f) = (self.key("h"), self.member());
                cmd(&[b"HDEL", &k, &f])
            }
            10 => {
                let (k, a, b) = (self.key("l"), self.val(), self.val());
                cmd(&[b"RPUSH", &k, &a, &b])
            }
            11 => {
                let k = self.key("l");
                cmd(&[b"LPOP", &k])
            }
            12 => {
                let k = self.key("l");
                cmd(&[b"LTRIM", &k, b"0", b"20"])
            }
            13 => {
                let (k, a, b) = (self.key("set"), self.member(), self.member());
                cmd(&[b"SADD", &k, &a, &b])
            }
            14 => {
                let (k, m) = (self.key("set"), self.member());
                cmd(&[b"SREM", &k, &m])
            }
            15 => {
                let (k, s, m) = (self.key("z"), self.num(-500, 500), self.member());
                cmd(&[b"ZADD", &k, &s, &m])
            }
            16 => {
                let (k, m) = (self.key("z"), self.member());
                cmd(&[b"ZINCRBY", &k, b"1.5", &m])
            }
            17 => {
                let (k, v) = (self.key("x"), self.val());
                cmd(&[b"XADD", &k, b"MAXLEN", b"~", b"50", b"*", b"f", &v])
            }
            18 => {
                let (k, t) = (self.any_key(), self.num(3_600, 36_000));
                cmd(&[b"EXPIRE", &k, &t])
            }
            19 => {
                let k = self.any_key();
                let at = (now_ms() + self.rng.gen_range(3_600_000..36_000_000))
                    .to_string()
                    .into_bytes();
                cmd(&[b"PEXPIREAT", &k, &at])
            }
            20 => {
                let k = self.any_key();
                cmd(&[b"PERSIST", &k])
            }
            21 => {
                let (a, b) = (self.any_key(), self.any_key());
                cmd(&[b"DEL", &a, &b])
            }
            22 => {
                let (a, b) = (self.key("h"), self.key("h"));
                cmd(&[b"COPY", &a, &b, b"REPLACE"])
            }
            23 => {
                let (k, o) = (self.key("b"), self.num(0, 2000));
                cmd(&[b"SETBIT", &k, &o, b"1"])
            }
            24 => {
                let (k, m) = (self.key("hll"), self.member());
                cmd(&[b"PFADD", &k, &m])
            }
            _ => {
                let (a, b, v) = (self.key("s"), self.key("n"), self.val());
                cmd(&[b"EVAL", SCRIPT.as_bytes(), b"2", &a, &b, &v])
            }
        }
    }

    fn statement(&mut self, out: &mut Vec<Cmd>) {
        match self.rng.gen_range(0..100) {
            0..=4 => {
                let db = self.num(0, DBS as i64);
                out.push(cmd(&[b"SELECT", &db]));
            }
            5..=11 => {
                out.push(cmd(&[b"MULTI"]));
                for _ in 0..self.rng.gen_range(1..5) {
                    let c = self.op();
                    out.push(c);
                }
                out.push(cmd(&[b"EXEC"]));
            }
            _ => {
                let c = self.op();
                out.push(c);
            }
        }
    }

    fn run(&mut self, cmds: &[Cmd]) {
        for chunk in cmds.chunks(64) {
            for (c, r) in chunk.iter().zip(self.conn.pipeline(chunk)) {
                self.ops += 1;
                if let Reply::Error(e) = &r {
                    let e = String::from_utf8_lossy(e);
                    assert!(
                        !(e.contains("unknown command")
                            || e.contains("wrong number")
                            || e.contains("syntax error")
                            || e.starts_with("EXECABORT")),
                        "the workload sent a bad command {}: {e}",
                        show_args(c)
                    );
                }
            }
        }
    }

    /// ~`n` statements, then a write in db 0 that changes the state at every point (so a restore
    /// cut short of the point cannot pass by luck).
    fn burst(&mut self, n: usize) {
        self.phase += 1;
        let mut cmds = Vec::new();
        for _ in 0..n {
            self.statement(&mut cmds);
        }
        let phase = self.phase.to_string().into_bytes();
        cmds.push(cmd(&[b"SELECT", b"0"]));
        cmds.push(cmd(&[b"MULTI"]));
        cmds.push(cmd(&[b"INCR", b"fb:points"]));
        cmds.push(cmd(&[b"SET", b"fb:last-phase", &phase]));
        cmds.push(cmd(&[b"EXEC"]));
        self.run(&cmds);
    }

    /// `n` incompressible values of `size` bytes (a write volume that fills disks).
    fn big_values(&mut self, n: usize, size: usize) {
        for i in 0..n {
            let v = self.bytes(size);
            let k = format!("big:{}:{i}", self.phase).into_bytes();
            self.run(&[cmd(&[b"SET", &k, &v])]);
        }
    }
}

#[derive(Debug, Clone)]
struct Point {
    label: String,
    /// Present when the agent had acknowledged the point when it was taken.
    t_ms: Option<u64>,
    offset: u64,
    state: String,
}

/// Reads the offset and the state from the writing connection with nothing in between; then
/// (agent up) waits until the primary lists the agent online with the offset acknowledged,
/// and only then takes the time.
fn record(w: &mut Writer, primary: &RedisProc, agent: Option<&mut Agent>, label: &str) -> Point {
    let offset = parse_info(&w.conn.call(&["INFO", "replication"]).text()).master_offset;
    let state = state(&mut w.conn);
    let t_ms = agent.map(|a| {
        a.wait_caught_up(primary);
        let t = now_ms();
        // The next burst's records must arrive in a later millisecond than `t`.
        std::thread::sleep(Duration::from_millis(5));
        t
    });
    eprintln!("  point {label}: offset {offset} t {t_ms:?}");
    Point {
        label: label.to_string(),
        t_ms,
        offset,
        state,
    }
}

/// Restores `p` with `args` and compares; None when equal, else the failure in full.
fn check_one(store: &str, env: &[(&str, &str)], p: &Point, args: &[&str]) -> Option<String> {
    let started = Instant::now();
    let failure = restore_mismatch(store, env, &p.label, &p.state, args);
    if failure.is_none() {
        eprintln!(
            "  ok   {} {args:?} ({} ms)",
            p.label,
            started.elapsed().as_millis()
        );
    }
    failure
}

/// Every point by time (when it has one), and by offset when `by_offset(i)` or it has no time.
fn check_points(
    store: &str,
    env: &[(&str, &str)],
    points: &[Point],
    by_offset: impl Fn(usize) -> bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, p) in points.iter().enumerate() {
        if let Some(t) = p.t_ms {
            failures.extend(check_one(store, env, p, &["--at", &at_arg(t)]));
        }
        if p.t_ms.is_none() || by_offset(i) {
            failures.extend(check_one(
                store,
                env,
                p,
                &["--at-offset", &p.offset.to_string()],
            ));
        }
    }
    for f in &failures {
        eprintln!("  FAIL {f}");
    }
    failures
}

fn assert_no_failures(test: &str, seed: u64, failures: &[String], agent_log: &str) {
    if failures.is_empty() {
        return;
    }
    let tail: Vec<&str> = agent_log.lines().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "[{test}] seed {seed}: {} failure(s):\n{}\n--- agent log (last 60 lines)\n{}",
        failures.len(),
        failures.join("\n"),
        tail.join("\n")
    );
}

/// `flashback capture` of `primary` into `store` through the S3 `endpoint`, spooling into
/// `spool`, with the test credentials and `env` besides; its log appended to `log`.
fn s3_agent(
    primary: &RedisProc,
    store: &str,
    endpoint: &str,
    spool: impl AsRef<std::ffi::OsStr>,
    log: &Path,
    env: &[(&str, &str)],
) -> Agent {
    let spool = spool.as_ref().to_str().unwrap();
    let mut all = vec![
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    all.extend_from_slice(env);
    Agent::start_env(
        &primary.url(),
        primary.port,
        store,
        log,
        &["--s3-endpoint", endpoint, "--spool", spool],
        &all,
    )
}

/// `flashback verify --no-drill` of `store`; its output as a failure unless it exits 0.
fn verify_fails(store: &str, env: &[(&str, &str)], when: &str) -> Option<String> {
    let out = flashback_s3(&["verify", "--store", store, "--no-drill"], env);
    (out.code != Some(0)).then(|| format!("{when}:\n{}", out.all()))
}

fn flashback_s3(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_flashback_env(args, env, Duration::from_secs(300))
}

fn info_s3(store: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let out = flashback_s3(&["info", "--store", store, "--json"], env);
    assert_eq!(out.code, Some(0), "info --json over s3:\n{}", out.all());
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("info --json is not JSON ({e}):\n{}", out.all()))
}

/// The source's prefix in the bucket for a store `s3://<bucket>/<prefix>`.
fn source_prefix(store_prefix: &str, primary: &RedisProc) -> String {
    format!("{store_prefix}/sources/127.0.0.1-{}/", primary.port)
}

/// Until the primary lists the agent online with everything acknowledged, or why not (the
/// agent exited, or the time ran out), without panicking.
fn wait_acked(agent: &mut Agent, primary: &RedisProc, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = agent.exit_status() {
            return Err(format!(
                "the agent exited ({status}); its log:\n{}",
                agent.log_text()
            ));
        }
        let text = primary.info_replication();
        let info = parse_info(&text);
        if info
            .slaves
            .iter()
            .any(|(s, off)| s == "online" && *off >= info.master_offset)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not online and caught up after {timeout:?};\nINFO replication:\n{text}\nagent log:\n{}",
                agent.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Log lines that mention failed uploads, for the test output.
fn upload_failures(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("upload to") && l.contains("failed"))
        .map(|l| l.to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. The round trip: capture, info, compact, prune, verify and restore, all through s3://

#[test]
fn s3_capture_compact_prune_restore() {
    let test = "s3_capture_compact_prune_restore";
    if skip(test) {
        return;
    }
    let started = Instant::now();
    let moto = Moto::start("fb-roundtrip");
    let seed = seed(test);
    let env = moto.env();
    let primary = RedisProc::start(&[]);
    let mut w = Writer::new(seed, primary.conn());
    // Data that exists before capture starts goes into the base.
    w.burst(300);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = "s3://fb-roundtrip/team/cache";
    let prefix = source_prefix("team/cache", &primary);
    let mut agent = s3_agent(
        &primary,
        store,
        &moto.endpoint,
        &spool,
        &dir.path().join("agent.log"),
        &[],
    );
    agent.wait_online(&primary);
    let mut points = vec![record(&mut w, &primary, Some(&mut agent), "online")];
    for phase in 1..=3 {
        w.burst(200);
        points.push(record(
            &mut w,
            &primary,
            Some(&mut agent),
            &format!("p{phase}"),
        ));
        if phase < 3 {
            // The tail rolls once it is --upload-interval (1 s) old: one segment per phase.
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    // RPO: a record is uploaded within about --upload-interval (1 s), plus the roll's tick and
    // the PUT; 10 s is a bound for a loaded CI machine, not a target.
    let p3 = points.last().unwrap().clone();
    wait_uploaded(
        &moto,
        &prefix,
        &spool,
        p3.offset,
        Duration::from_secs(20),
        &mut agent,
    );
    let lag = now_ms() - p3.t_ms.unwrap();
    eprintln!("[{test}] p3 was in the bucket {lag} ms after the agent acknowledged it");
    assert!(
        lag < 10_000,
        "upload lag {lag} ms with --upload-interval 1s"
    );

    // kill -9 of a compaction at a random moment: whatever it left must not disturb anything
    // (the restores, verify and the next compaction below).
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x636f6d70);
    let mut compaction = die_with_parent(&mut Command::new(flashback_bin()))
        .args(["compact", "--store", store, "--force"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kill_after = rng.gen_range(10..120);
    std::thread::sleep(Duration::from_millis(kill_after));
    let finished = compaction.try_wait().unwrap();
    let _ = compaction.kill();
    let _ = compaction.wait();
    eprintln!(
        "[{test}] compaction killed after {kill_after} ms ({}); bases now: {}",
        if finished.is_some() {
            "it had already finished"
        } else {
            "mid-run"
        },
        bases(&moto.list(&prefix)).len()
    );
    w.burst(100);
    points.push(record(&mut w, &primary, Some(&mut agent), "after-kill"));
    let after_kill = points.last().unwrap().offset;
    wait_uploaded(
        &moto,
        &prefix,
        &spool,
        after_kill,
        Duration::from_secs(20),
        &mut agent,
    );

    // Compaction through s3:// while the agent runs.
    let out = flashback_s3(&["compact", "--store", store, "--force"], &env);
    assert!(
        out.code == Some(0) && out.stdout.starts_with("new base"),
        "compact over s3:\n{}",
        out.all()
    );
    let listing = moto.list(&prefix);
    let b = bases(&listing);
    assert!(
        b.len() == 2 || b.len() == 3,
        "the first base, the compacted one and perhaps the killed compaction's: {b:#?}"
    );
    let (new_base_key, new_base_offset, new_base_time) = b.last().unwrap().clone();
    assert!(
        new_base_offset >= after_kill,
        "the new base ({new_base_offset}) lies at the latest uploaded segment's end (>= {after_kill})"
    );
    // Every later point lies well inside the window a prune keeps below.
    std::thread::sleep(Duration::from_millis(1000));
    for phase in 4..=6 {
        w.burst(200);
        points.push(record(
            &mut w,
            &primary,
            Some(&mut agent),
            &format!("p{phase}"),
        ));
        std::thread::sleep(Duration::from_millis(1100));
    }

    let live = info_s3(store, &env);
    assert_eq!(
        live["sources"].as_array().map(|a| a.len()),
        Some(1),
        "{live:#}"
    );
    assert_eq!(json_generation_count(&live), Some(1), "{live:#}");
    agent.stop();
    let left = spooled_objects(&spool);
    assert!(
        left.is_empty(),
        "after a clean stop every sealed object is uploaded and its spool copy deleted; left: {left:?}\n{}",
        agent.log_text()
    );
    let info = info_s3(store, &env);
    let windows = info["sources"][0]["windows"].as_array().unwrap().clone();
    let last = points.last().unwrap().clone();
    assert!(
        windows
            .last()
            .and_then(|w| w["to_offset"].as_u64())
            .is_some_and(|o| o >= last.offset),
        "the window over s3 reaches the last point (offset {}): {info:#}",
        last.offset
    );
    let out = flashback_s3(&["verify", "--store", store, "--no-drill"], &env);
    assert_eq!(out.code, Some(0), "verify over s3:\n{}", out.all());
    eprintln!(
        "[{test}] capture done in {:?}; restoring {} points",
        started.elapsed(),
        points.len()
    );
    let mut failures = check_points(store, &env, &points, |_| true);
    failures.extend(check_one(store, &env, &last, &["--latest"]));
    assert_no_failures(test, seed, &failures, &agent.log_text());

    // Prune through s3://: keep a window that starts just after the compacted base.
    let keep = format!("{}ms", now_ms() - (new_base_time + 300));
    let out = flashback_s3(
        &["prune", "--store", store, "--keep", &keep, "--dry-run"],
        &env,
    );
    let old_base = b[0].0.rsplit('/').next().unwrap().to_string();
    let n_bases = b.len();
    assert!(
        out.code == Some(0) && out.stdout.contains(&old_base),
        "prune --dry-run over s3 should list the old base {old_base}:\n{}",
        out.all()
    );
    assert_eq!(
        bases(&moto.list(&prefix)).len(),
        n_bases,
        "a dry run deletes nothing"
    );
    let keep = format!("{}ms", now_ms() - (new_base_time + 300));
    let out = flashback_s3(&["prune", "--store", store, "--keep", &keep], &env);
    assert!(
        out.code == Some(0) && out.stdout.contains("deleted"),
        "prune over s3:\n{}",
        out.all()
    );
    let after: Vec<String> = bases(&moto.list(&prefix))
        .into_iter()
        .map(|b| b.0)
        .collect();
    assert_eq!(
        after,
        vec![new_base_key],
        "prune keeps only the compacted base"
    );
    let mut failures = Vec::new();
    for p in points
        .iter()
        .filter(|p| p.t_ms.unwrap() > new_base_time + 600)
    {
        failures.extend(check_one(
            store,
            &env,
            p,
            &["--at", &at_arg(p.t_ms.unwrap())],
        ));
        failures.extend(check_one(
            store,
            &env,
            p,
            &["--at-offset", &p.offset.to_string()],
        ));
    }
    // Before the window: refused (exit 1) with the window printed, never a wrong state.
    let first = &points[0];
    match try_restore_rdb_env(store, &["--at", &at_arg(first.t_ms.unwrap())], &env) {
        Err(e) if e.contains("exit Some(1)") => {}
        Err(e) => failures.push(format!(
            "restore before the pruned window: expected exit 1:\n{e}"
        )),
        Ok(_) => failures.push("restore of an instant before the pruned window succeeded".into()),
    }
    assert_no_failures(test, seed, &failures, &agent.log_text());
    eprintln!(
        "[{test}] {} operations; finished in {:?}",
        w.ops,
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The store stalled, down for 30 s, then answering 500s at random: capture goes on

#[test]
fn s3_store_stalled_down_and_flaky_capture_continues() {
    let test = "s3_store_stalled_down_and_flaky_capture_continues";
    if skip(test) {
        return;
    }
    let started = Instant::now();
    let moto = Moto::start("fb-outage");
    let seed = seed(test);
    let proxy = Proxy::start(moto.port, seed);
    let env = moto.env();
    let primary = RedisProc::start(&[]);
    let mut w = Writer::new(seed, primary.conn());
    w.burst(200);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = "s3://fb-outage/o";
    let prefix = source_prefix("o", &primary);
    // object_store's request timeout is 30 s by default; 3 s lets a stall turn into timeouts
    // within the test's budget (AWS_TIMEOUT is read by object_store's builder).
    let mut agent = s3_agent(
        &primary,
        store,
        &proxy.url(),
        &spool,
        &dir.path().join("agent.log"),
        &[("AWS_TIMEOUT", "3s")],
    );
    agent.wait_online(&primary);
    // Records, so a segment rolls and uploads now rather than at the primary's next PING.
    w.burst(100);
    let mut points = vec![record(&mut w, &primary, Some(&mut agent), "healthy")];
    wait_uploaded(
        &moto,
        &prefix,
        &spool,
        points[0].offset,
        Duration::from_secs(20),
        &mut agent,
    );

    // Writes and points every `every` for `for_how_long`, then on (up to 40 s) until `enough`.
    let phase = |w: &mut Writer,
                 agent: &mut Agent,
                 mode: Mode,
                 for_how_long: Duration,
                 every: Duration,
                 label: &str,
                 points: &mut Vec<Point>,
                 enough: &dyn Fn(&proxy::Stats) -> bool| {
        proxy.set_mode(mode);
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed() < for_how_long
            || (!enough(&proxy.stats()) && started.elapsed() < Duration::from_secs(40))
        {
            w.burst(150);
            i += 1;
            // The agent keeps acknowledging: it spools while the store is away.
            points.push(record(
                w,
                &primary,
                Some(&mut *agent),
                &format!("{label}{i}"),
            ));
            let next = Instant::now() + every;
            while Instant::now() < next {
                agent.assert_alive(&format!("the store is {label}"));
                std::thread::sleep(Duration::from_millis(100));
                if started.elapsed() >= for_how_long && enough(&proxy.stats()) {
                    break;
                }
            }
        }
        eprintln!(
            "[{test}] after {label} ({:?}): proxy {:?}",
            started.elapsed(),
            proxy.stats()
        );
    };
    phase(
        &mut w,
        &mut agent,
        Mode::Stall,
        STORE_STALLED,
        Duration::from_secs(3),
        "stalled",
        &mut points,
        &|_| true,
    );
    assert!(proxy.stats().stalled > 0, "the stall met no request");
    phase(
        &mut w,
        &mut agent,
        Mode::Down,
        STORE_DOWN,
        Duration::from_secs(6),
        "down",
        &mut points,
        &|_| true,
    );
    assert!(proxy.stats().dropped > 0, "the outage met no request");
    let log = agent.log_text();
    let failed = upload_failures(&log);
    assert!(
        log.contains(&format!("upload to {store} failed")),
        "the agent's log does not name the failed uploads during the outage:\n{log}"
    );
    eprintln!("[{test}] failures logged so far: {}", failed.len());
    let unsent = spooled_objects(&spool);
    assert!(
        !unsent.is_empty(),
        "during the outage sealed segments pile up in the spool, yet it is empty"
    );
    // The uploader may still sleep off its backoff (up to 16 s by now): the flaky phase lasts
    // until it has sent 20 requests, so the 500s meet real uploads (P(no 500) = 0.6^20).
    proxy.set_error_rate(0.4);
    let before = proxy.stats();
    let seen = move |s: &proxy::Stats| {
        (s.forwarded + s.errors_before + s.errors_after)
            - (before.forwarded + before.errors_before + before.errors_after)
    };
    phase(
        &mut w,
        &mut agent,
        Mode::Flaky,
        Duration::from_secs(6),
        Duration::from_secs(2),
        "flaky",
        &mut points,
        &|s| seen(s) >= 20,
    );
    proxy.set_mode(Mode::Pass);
    let healthy_again = Instant::now();
    w.burst(100);
    points.push(record(&mut w, &primary, Some(&mut agent), "recovered"));
    let last = points.last().unwrap().clone();
    let caught_up = wait_uploaded(
        &moto,
        &prefix,
        &spool,
        last.offset,
        Duration::from_secs(90),
        &mut agent,
    );
    eprintln!(
        "[{test}] {} objects were waiting when the store came back (flaky); the spool was drained {:?} after \
         the proxy passed everything again (waited {caught_up:?}); proxy {:?}",
        unsent.len(),
        healthy_again.elapsed(),
        proxy.stats()
    );
    let stats = proxy.stats();
    assert!(
        stats.errors_before + stats.errors_after > 0,
        "the flaky phase injected no 500: {stats:?}"
    );
    agent.stop();
    for l in upload_failures(&agent.log_text()).iter().take(8) {
        eprintln!("    {l}");
    }
    eprintln!(
        "[{test}] capture done in {:?}; restoring {} points",
        started.elapsed(),
        points.len()
    );
    let n = points.len();
    let failures = check_points(store, &env, &points, |i| i % 4 == 1 || i + 1 == n);
    assert_no_failures(test, seed, &failures, &agent.log_text());
    eprintln!("[{test}] finished in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. kill -9 during the snapshot transfer, mid-segment and mid-upload

#[test]
fn s3_kill9_during_transfer_mid_segment_and_mid_upload() {
    let test = "s3_kill9_during_transfer_mid_segment_and_mid_upload";
    if skip(test) {
        return;
    }
    let started = Instant::now();
    let moto = Moto::start("fb-kill9");
    let seed = seed(test);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6b696c6c);
    let proxy = Proxy::start(moto.port, seed);
    let env = moto.env();
    let primary = RedisProc::start(&["--repl-backlog-size", "64mb"]);
    let mut w = Writer::new(seed, primary.conn());
    w.burst(300);
    w.conn.call(&["DEBUG", "POPULATE", "3000", "pop", "64"]);
    // 1 ms per key while the primary writes the snapshot: the transfer takes ~3 s.
    w.conn
        .call(&["CONFIG", "SET", "rdb-key-save-delay", "1000"]);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let spool_arg = spool.to_str().unwrap().to_string();
    let store = "s3://fb-kill9/k";
    let prefix = source_prefix("k", &primary);
    let proxy_url = proxy.url();
    let log = dir.path().join("agent.log");
    let start = || s3_agent(&primary, store, &proxy_url, &spool_arg, &log, &[]);

    let mut failures = Vec::new();
    // (a) During the RDB transfer.
    let mut agent = start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = primary.info_replication();
        if info.contains("state=wait_bgsave") || info.contains("state=send_bulk") {
            break;
        }
        agent.assert_alive("starting its first sync");
        assert!(
            Instant::now() < deadline,
            "no sync started in 30 s:\n{info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
    let info = primary.info_replication();
    assert!(
        !info.contains("state=online"),
        "the transfer finished before the kill; slow it down more:\n{info}"
    );
    agent.kill9();
    wait_no_replicas(&primary);
    // The agent's lease (ship::lease) is there from the start; no data object may be.
    let listing: Vec<_> = moto
        .list(&prefix)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("/agent.lease"))
        .collect();
    assert!(
        listing.is_empty(),
        "nothing of an unfinished snapshot may reach the bucket: {listing:#?}"
    );
    w.conn.call(&["CONFIG", "SET", "rdb-key-save-delay", "0"]);

    let partial = files_named(&spool, ".partial");
    assert!(
        !partial.is_empty(),
        "the kill during the transfer should leave a partly received base in the spool; found none"
    );

    // (b) Mid-segment: records in flight, not yet acknowledged.
    let mut agent = start();
    agent.wait_online(&primary);
    // The half-received base of (a) is of no use to anyone (never acknowledged, never
    // uploaded); it must not stay in the spool for good (it can be as big as the dataset).
    let left = files_named(&spool, ".partial");
    if !left.is_empty() {
        failures.push(format!(
            "after the restart, the base the kill -9 in (a) cut short is still in the spool: {left:?}"
        ));
    }
    let mut points = vec![record(&mut w, &primary, Some(&mut agent), "b-online")];
    for i in 1..=2 {
        w.burst(200);
        points.push(record(&mut w, &primary, Some(&mut agent), &format!("b{i}")));
        std::thread::sleep(Duration::from_millis(1100));
    }
    w.burst(300);
    std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
    agent.kill9();
    wait_no_replicas(&primary);
    w.burst(200);
    points.push(record(&mut w, &primary, None, "down1"));

    // (c) Mid-upload: the store stalls, a sealed segment's PUT hangs, kill -9.
    let mut agent = start();
    agent.wait_online(&primary);
    agent.wait_caught_up(&primary);
    w.burst(200);
    points.push(record(&mut w, &primary, Some(&mut agent), "c1"));
    proxy.set_mode(Mode::Stall);
    let stalled_before = proxy.stats().stalled;
    w.burst(200);
    points.push(record(&mut w, &primary, Some(&mut agent), "c2"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.stats().stalled == stalled_before {
        agent.assert_alive("uploading into a stalled store");
        assert!(
            Instant::now() < deadline,
            "no upload reached the stalled store in 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(rng.gen_range(0..500)));
    agent.kill9();
    wait_no_replicas(&primary);
    proxy.set_mode(Mode::Pass);
    w.burst(200);
    points.push(record(&mut w, &primary, None, "down2"));

    // (d) The last restart uploads what the others left in the spool.
    let mut agent = start();
    agent.wait_online(&primary);
    agent.wait_caught_up(&primary);
    w.burst(200);
    points.push(record(&mut w, &primary, Some(&mut agent), "d1"));
    let last = points.last().unwrap().clone();
    wait_uploaded(
        &moto,
        &prefix,
        &spool,
        0,
        Duration::from_secs(30),
        &mut agent,
    );
    agent.stop();
    let left = spooled_objects(&spool);
    assert!(left.is_empty(), "spool not drained: {left:?}");
    let log_text = agent.log_text();
    let notable: Vec<&str> = log_text
        .lines()
        .filter(|l| {
            l.contains("incomplete generation")
                || l.contains("resync")
                || l.contains("recovered the open segment")
        })
        .collect();
    eprintln!(
        "[{test}] what the restarts did:\n  {}",
        notable.join("\n  ")
    );
    // The restarts after (b) and (c) resumed from the backlog.
    assert!(
        log_text.matches("partial resync from offset").count() >= 2,
        "the restarts after (b) and (c) should resume with partial resyncs:\n{log_text}"
    );
    eprintln!(
        "[{test}] capture done in {:?}; restoring {} points",
        started.elapsed(),
        points.len()
    );
    failures.extend(check_points(store, &env, &points, |_| true));
    failures.extend(check_one(store, &env, &last, &["--latest"]));
    // The backlog (64 MB) covers every outage: partial resyncs, one generation.
    let info = info_s3(store, &env);
    if json_generation_count(&info) != Some(1) {
        failures.push(format!(
            "the store should hold ONE generation (every restart resumed from the backlog): {info:#}"
        ));
    }
    assert_no_failures(test, seed, &failures, &log_text);
    eprintln!("[{test}] finished in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 4. A truncated and a corrupted object: restore and verify name it; earlier instants restore

#[test]
fn s3_truncated_and_corrupted_segments_are_named() {
    corrupted_segment("s3_truncated_and_corrupted_segments_are_named", false);
}

/// The same with the generation's FIRST segment damaged, and the instant before it lying
/// between the base and that segment's first record: the cut is the base alone.
#[test]
fn s3_instant_before_a_damaged_first_segment_restores() {
    corrupted_segment("s3_instant_before_a_damaged_first_segment_restores", true);
}

/// Truncates, then corrupts, one sealed segment in the bucket with raw PUTs: restore to an
/// instant after it fails naming it, verify names it, the last instant before it restores (by
/// offset and by time), and putting the original back heals all.
fn corrupted_segment(test: &str, first_segment: bool) {
    if skip(test) {
        return;
    }
    let started = Instant::now();
    let moto = Moto::start("fb-corrupt");
    let seed = seed(test);
    let env = moto.env();
    let primary = RedisProc::start(&[]);
    let mut w = Writer::new(seed, primary.conn());
    w.burst(200);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = "s3://fb-corrupt/c";
    let prefix = source_prefix("c", &primary);
    let mut agent = s3_agent(
        &primary,
        store,
        &moto.endpoint,
        &spool,
        &dir.path().join("agent.log"),
        &[],
    );
    agent.wait_online(&primary);
    let mut points = vec![record(&mut w, &primary, Some(&mut agent), "online")];
    for i in 1..=4 {
        w.burst(250);
        points.push(record(&mut w, &primary, Some(&mut agent), &format!("p{i}")));
        std::thread::sleep(Duration::from_millis(1100));
    }
    agent.stop();
    let segs = sealed_segments(&moto.list(&prefix));
    // A segment with points on both sides: those at or before its start do not need it.
    let victim = segs
        .iter()
        .enumerate()
        .find(|(i, s)| {
            (*i == 0) == first_segment
                && s.end > s.start
                && points.iter().any(|p| p.offset <= s.start)
                && points.iter().any(|p| p.offset >= s.end)
        })
        .unwrap_or_else(|| panic!("no segment lies between two points: {segs:#?}"))
        .1
        .clone();
    let before = points
        .iter()
        .rfind(|p| p.offset <= victim.start)
        .unwrap()
        .clone();
    let after = points
        .iter()
        .find(|p| p.offset >= victim.end)
        .unwrap()
        .clone();
    eprintln!(
        "[{test}] victim {} ({} bytes, offsets {}..{}); before: {}, after: {}",
        victim.file_name(),
        victim.size,
        victim.start,
        victim.end,
        before.label,
        after.label
    );
    let original = moto.get(&victim.key);
    assert_eq!(original.len() as u64, victim.size);
    let mut corrupted = original.clone();
    let mid = corrupted.len() / 2;
    for b in &mut corrupted[mid..mid + 8] {
        *b ^= 0x5a;
    }
    let cases: [(&str, Vec<u8>); 2] = [
        ("truncated", original[..original.len() * 2 / 3].to_vec()),
        ("corrupted", corrupted),
    ];
    let verify_works = flashback_s3(&["verify", "--help"], &env).code == Some(0);
    let mut failures = Vec::new();
    for (what, bytes) in cases {
        moto.put(&victim.key, &bytes);
        for args in [
            vec!["--at-offset".to_string(), after.offset.to_string()],
            vec!["--at".to_string(), at_arg(after.t_ms.unwrap())],
        ] {
            let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            match try_restore_rdb_env(store, &args, &env) {
                Err(e) if e.contains("exit Some(1)") && e.contains(victim.file_name()) => {
                    eprintln!("  ok   {what}: restore {args:?} refused, naming the object")
                }
                Err(e) => failures.push(format!(
                    "{what} {}: restore {args:?} should fail (exit 1) naming it:\n{e}",
                    victim.file_name()
                )),
                Ok(got) => {
                    failures.push(format!(
                    "{what} {}: restore {args:?} succeeded (state {}) though it needs that object",
                    victim.file_name(),
                    if got == after.state { "equal" } else { "DIFFERENT" }
                ))
                }
            }
        }
        for args in [
            vec!["--at".to_string(), at_arg(before.t_ms.unwrap())],
            vec!["--at-offset".to_string(), before.offset.to_string()],
        ] {
            let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
            failures.extend(
                check_one(store, &env, &before, &args)
                    .map(|f| format!("{what} {}: {f}", victim.file_name())),
            );
        }
        if verify_works {
            let out = flashback_s3(&["verify", "--store", store, "--no-drill"], &env);
            let all = out.all();
            if out.code == Some(0) || !all.contains(victim.file_name()) {
                failures.push(format!(
                    "{what} {}: verify should fail naming it:\n{all}",
                    victim.file_name()
                ));
            } else {
                eprintln!("  ok   {what}: verify names the object");
            }
        }
    }
    // Put back, everything restores again: the damage, not the test, made them fail.
    moto.put(&victim.key, &original);
    failures.extend(check_one(
        store,
        &env,
        &after,
        &["--at-offset", &after.offset.to_string()],
    ));
    if verify_works {
        let out = flashback_s3(&["verify", "--store", store, "--no-drill"], &env);
        if out.code != Some(0) {
            failures.push(format!("verify after the repair:\n{}", out.all()));
        }
    }
    assert_no_failures(test, seed, &failures, &agent.log_text());
    eprintln!("[{test}] finished in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 5. Two agents, one source, one store

#[test]
fn s3_second_writer_exits_with_a_clear_error() {
    let test = "s3_second_writer_exits_with_a_clear_error";
    if skip(test) {
        return;
    }
    let started = Instant::now();
    let moto = Moto::start("fb-two-writers");
    let seed = seed(test);
    let env = moto.env();
    let primary = RedisProc::start(&[]);
    let mut w = Writer::new(seed, primary.conn());
    w.burst(200);
    let dir = tempfile::tempdir().unwrap();
    let store = "s3://fb-two-writers/t";
    let start = |name: &str| {
        let spool = dir.path().join(format!("spool-{name}"));
        s3_agent(
            &primary,
            store,
            &moto.endpoint,
            &spool,
            &dir.path().join(format!("agent-{name}.log")),
            &[],
        )
    };
    let mut a = start("a");
    a.wait_online(&primary);
    let mut points = vec![record(&mut w, &primary, Some(&mut a), "a-online")];
    w.burst(200);
    points.push(record(&mut w, &primary, Some(&mut a), "a1"));
    std::thread::sleep(Duration::from_millis(1500));
    let mut b = start("b");
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut exited = None;
    let mut i = 0;
    while Instant::now() < deadline {
        w.burst(50);
        i += 1;
        std::thread::sleep(Duration::from_millis(300));
        if let Some(s) = a.exit_status() {
            exited = Some(("a", s, a.log_text()));
            break;
        }
        if let Some(s) = b.exit_status() {
            exited = Some(("b", s, b.log_text()));
            break;
        }
    }
    let mut failures = Vec::new();
    let last_log;
    match exited {
        None => {
            // Record what happened to the data anyway: the overlapping objects are the damage.
            points.push(record(&mut w, &primary, Some(&mut a), "both"));
            let listing = moto.list(&format!("t/sources/127.0.0.1-{}/", primary.port));
            let segs = sealed_segments(&listing);
            let overlaps = segs
                .windows(2)
                .filter(|p| p[1].start < p[0].end && p[0].end > p[0].start)
                .count();
            failures.push(format!(
                "two agents captured the same source into the same store for 25 s ({i} write bursts) and \
                 neither exited; the bucket holds {} sealed segments, {overlaps} overlapping their \
                 predecessor:\n{}\n--- agent a\n{}\n--- agent b\n{}",
                segs.len(),
                segs.iter()
                    .map(|s| format!("  {} ({} bytes)", s.file_name(), s.size))
                    .collect::<Vec<_>>()
                    .join("\n"),
                a.log_text(),
                b.log_text()
            ));
            a.stop();
            b.stop();
            last_log = a.log_text();
        }
        Some((who, status, log)) => {
            let lower = log.to_lowercase();
            if status.success()
                || !(lower.contains("another agent") || lower.contains("second writer"))
            {
                failures.push(format!(
                    "agent {who} exited ({status}) without naming the second writer:\n{log}"
                ));
            }
            let survivor = if who == "a" { &mut b } else { &mut a };
            survivor.wait_caught_up(&primary);
            w.burst(100);
            points.push(record(&mut w, &primary, Some(&mut *survivor), "survivor"));
            survivor.stop();
            last_log = survivor.log_text();
            eprintln!("[{test}] agent {who} exited ({status})");
        }
    }
    // Whatever happened, what was acknowledged stays restorable.
    failures.extend(check_points(store, &env, &points, |_| true));
    assert_no_failures(test, seed, &failures, &last_log);
    eprintln!("[{test}] finished in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 6. The spool's disk fills up while the store is down

/// A test that needs a privilege it lacks: a failure under `FLASHBACK_REQUIRE_TEST_SERVERS`
/// (scripts/test.sh, CI), a loud skip otherwise.
fn no_privilege(test: &str, msg: &str) {
    if matches!(std::env::var("FLASHBACK_REQUIRE_TEST_SERVERS").as_deref(), Ok(v) if !v.is_empty() && v != "0")
    {
        panic!("[{test}] {msg} (FLASHBACK_REQUIRE_TEST_SERVERS is set, so this is a failure)");
    }
    eprintln!("\n!!!!!!!! [{test}] SKIPPED: {msg}\n");
}

struct Tmpfs(PathBuf);

impl Tmpfs {
    /// A `size` tmpfs at `dir`, or why not (mounting needs root).
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Tmpfs {
    /// Gives the mounted tmpfs a new size (the operator freeing space).
    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {} size={size}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The spool's disk fills while the store is down: the agent says so ("No space left on
/// device"), nothing stored is corrupted, and an agent restarted on the still full spool seals
/// its open tail in place (a copy would need the tail's size again), uploads it, and resumes.
#[test]
fn s3_spool_disk_full_is_a_clear_error_and_corrupts_nothing() {
    let test = "s3_spool_disk_full_is_a_clear_error_and_corrupts_nothing";
    if skip(test) {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let _tmpfs = match Tmpfs::mount(&spool, "2m") {
        Ok(t) => t,
        Err(e) => {
            // CI runs as root, where this works; a developer's unprivileged run cannot do it.
            let msg = format!("cannot mount a 2 MiB tmpfs for the spool ({e}); run as root");
            no_privilege(test, &msg);
            return;
        }
    };
    let moto = Moto::start("fb-disk-full");
    let seed = seed(test);
    let proxy = Proxy::start(moto.port, seed);
    let env = moto.env();
    let primary = RedisProc::start(&["--repl-backlog-size", "64mb"]);
    let mut w = Writer::new(seed, primary.conn());
    w.burst(100);
    let store = "s3://fb-disk-full/d";
    let prefix = source_prefix("d", &primary);
    let log = dir.path().join("agent.log");
    let start = || s3_agent(&primary, store, &proxy.url(), &spool, &log, &[]);
    let mut agent = start();
    agent.wait_online(&primary);
    w.burst(100);
    let p0 = record(&mut w, &primary, Some(&mut agent), "before");
    // More records, so the segment holding p0's instant is sealed (its end time after p0's)
    // and uploaded before the trouble starts.
    w.burst(20);
    let marker = record(&mut w, &primary, Some(&mut agent), "marker");
    wait_uploaded(
        &moto,
        &prefix,
        &spool,
        marker.offset,
        Duration::from_secs(20),
        &mut agent,
    );

    // The store goes away and 4 MB of incompressible writes arrive: the 2 MiB spool fills.
    proxy.set_mode(Mode::Down);
    w.big_values(40, 100_000);
    let mut failures = Vec::new();
    let says_full = |text: &str| {
        let lower = text.to_lowercase();
        lower.contains("no space left on device") || lower.contains("spool is full")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !says_full(&agent.log_text()) && agent.exit_status().is_none() {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Uploads will free the spool: the agent waits for them instead of exiting.
    std::thread::sleep(Duration::from_secs(2));
    let text = agent.log_text();
    if !says_full(&text) {
        failures.push(format!(
            "the agent's log does not say that the spool's disk is full (ENOSPC):\n{text}"
        ));
    }
    if let Some(status) = agent.exit_status() {
        failures.push(format!(
            "the agent exited ({status}) on a full spool instead of waiting for uploads:\n{text}"
        ));
    }
    // Killed while the spool is full and the store still down, the next agent must start on
    // the full spool: its open tail is sealed in place (a copy would not fit).
    if agent.exit_status().is_none() {
        agent.signal_and_wait(libc::SIGKILL);
    }
    let logged = agent.log_text().len();
    agent = start();
    std::thread::sleep(Duration::from_secs(3));
    if let Some(status) = agent.exit_status() {
        failures.push(format!(
            "restarted on the full spool with the store down, the agent exited ({status}):\n{}",
            &agent.log_text()[logged..]
        ));
        agent = start();
    }
    // The store comes back: the agent drains the spool and resumes.
    proxy.set_mode(Mode::Pass);
    match wait_acked(&mut agent, &primary, Duration::from_secs(60)) {
        Ok(()) => {
            w.burst(100);
            let p1 = record(&mut w, &primary, Some(&mut agent), "after");
            agent.stop();
            failures.extend(check_points(store, &env, &[p1], |_| true));
        }
        Err(e) => failures.push(format!(
            "with the store back, the agent restarted on the same spool did not resume: {e}"
        )),
    }
    failures.extend(check_points(store, &env, &[p0], |_| true));
    failures.extend(verify_fails(
        store,
        &env,
        "verify after the disk-full episode",
    ));
    assert_no_failures(test, seed, &failures, &agent.log_text());
    eprintln!("[{test}] finished in {:?}", started.elapsed());
}

/// A *local* store's disk fills: nothing the agent can do frees it, so it exits with one clear
/// line naming the file and ENOSPC. Restarted while the disk is still full it seals the torn
/// tail in place (no copy: there is no room for one) and exits with the same clear error;
/// once space is freed it resumes, and every instant restores. Lives here for the workload and
/// restore-check helpers of this file; it needs no S3 server.
#[test]
fn local_store_disk_full_is_a_clear_error_and_corrupts_nothing() {
    let test = "local_store_disk_full_is_a_clear_error_and_corrupts_nothing";
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let tmpfs = match Tmpfs::mount(&store_dir, "3m") {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("cannot mount a 3 MiB tmpfs for the store ({e}); run as root");
            no_privilege(test, &msg);
            return;
        }
    };
    let store = store_dir.to_str().unwrap();
    let seed = seed(test);
    let primary = RedisProc::start(&["--repl-backlog-size", "64mb"]);
    let mut w = Writer::new(seed, primary.conn());
    w.burst(100);
    let log = dir.path().join("agent.log");
    let start = || Agent::start_env(&primary.url(), primary.port, store, &log, &[], &[]);
    let mut agent = start();
    agent.wait_online(&primary);
    w.burst(100);
    let p0 = record(&mut w, &primary, Some(&mut agent), "before");
    w.burst(20);
    let mut failures = Vec::new();
    // 4 MB of incompressible values into 3 MiB.
    w.big_values(40, 100_000);
    let full_error = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("error: ") && l.contains(".tail: No space left on device"))
    };
    let wait_exit = |agent: &mut Agent, what: &str, failures: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.exit_status() {
                if status.success() {
                    failures.push(format!("{what}: the agent exited 0"));
                }
                return;
            }
            if Instant::now() > deadline {
                failures.push(format!("{what}: the agent still runs after 30 s"));
                agent.signal_and_wait(libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_exit(&mut agent, "disk full", &mut failures);
    let first = agent.log_text();
    if !full_error(&first) {
        failures.push(format!(
            "no one-line 'error: <tail>: No space left on device' from the agent:\n{first}"
        ));
    }
    // Restarted on the still full disk: the torn tail is sealed in place, then the next
    // write fails the same clear way.
    agent = start();
    wait_exit(&mut agent, "restart on the full disk", &mut failures);
    let second = &agent.log_text()[first.len()..];
    if !second.contains("recovered the open segment") || !full_error(second) {
        failures.push(format!(
            "restarted on the full disk, the agent did not seal its tail in place and fail clearly:\n{second}"
        ));
    }
    // Whatever was acknowledged before the disk filled restores, and the store verifies.
    failures.extend(check_points(store, &[], std::slice::from_ref(&p0), |_| {
        true
    }));
    failures.extend(verify_fails(store, &[], "verify on the full disk"));
    // Space is freed: the agent resumes from where the stored log ends.
    tmpfs.resize("64m");
    agent = start();
    match wait_acked(&mut agent, &primary, Duration::from_secs(60)) {
        Ok(()) => {
            w.burst(100);
            let p1 = record(&mut w, &primary, Some(&mut agent), "after");
            agent.stop();
            failures.extend(check_points(store, &[], &[p0, p1], |_| true));
        }
        Err(e) => failures.push(format!("with space freed, the agent did not resume: {e}")),
    }
    failures.extend(verify_fails(
        store,
        &[],
        "verify after the disk-full episode",
    ));
    assert_no_failures(test, seed, &failures, &agent.log_text());
    eprintln!("[{test}] finished in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 7. Region and credentials from the AWS shared files

/// With no AWS_* keys in the environment, `~/.aws/credentials` and `~/.aws/config` (here through
/// AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE, and AWS_PROFILE) give the keys and the region:
/// the request's signature names both. A profile the files lack is a one-line error.
#[test]
fn s3_credentials_and_region_from_the_aws_files() {
    let test = "s3_credentials_and_region_from_the_aws_files";
    if skip(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    let conf = dir.path().join("config");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = x\n\n\
         [fb]\naws_access_key_id = AKIDFROMFILE\naws_secret_access_key = s3cret\n",
    )
    .unwrap();
    std::fs::write(&conf, "[profile fb]\nregion = eu-central-1\n").unwrap();
    // A server that records the first request's Authorization header and refuses it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 16 << 10];
        let n = s.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        let _ = s
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        head
    });
    let endpoint = format!("http://127.0.0.1:{port}");
    let home = dir.path().to_str().unwrap();
    let files_env = |profile: &'static str| {
        vec![
            ("HOME", home),
            ("AWS_PROFILE", profile),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", conf.to_str().unwrap()),
            ("FLASHBACK_S3_ENDPOINT", endpoint.as_str()),
        ]
    };
    let out = flashback_s3(&["info", "--store", "s3://fb-files/x"], &files_env("fb"));
    let head = seen.join().unwrap();
    let auth = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .unwrap_or_else(|| panic!("no Authorization header in:\n{head}\n{}", out.all()));
    assert!(
        auth.contains("Credential=AKIDFROMFILE/") && auth.contains("/eu-central-1/s3/"),
        "{auth}"
    );
    assert_eq!(out.code, Some(1), "{}", out.all());

    // Against moto the same files work end to end.
    let moto = Moto::start("fb-files");
    let mut env = files_env("fb");
    env.retain(|(k, _)| *k != "FLASHBACK_S3_ENDPOINT");
    env.push(("FLASHBACK_S3_ENDPOINT", moto.endpoint.as_str()));
    let out = flashback_s3(&["info", "--store", "s3://fb-files/x"], &env);
    assert_eq!(out.code, Some(0), "{}", out.all());

    // A profile the files do not have.
    let out = flashback_s3(&["info", "--store", "s3://fb-files/x"], &files_env("nope"));
    assert_eq!(out.code, Some(1), "{}", out.all());
    let err = one_error_line(&out);
    assert!(err.contains("AWS profile 'nope'"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The lease: a stale one taken over by exactly one of two agents; a lost one stops its holder

/// A lease left by an agent on another host that died `age_s` seconds ago.
fn stale_lease_body(age_s: u64) -> Vec<u8> {
    format!(
        r#"{{"agent":"dead0000dead0000","host":"elsewhere.invalid","pid":4242,"renewed_ms":{}}}"#,
        now_ms() - age_s * 1000
    )
    .into_bytes()
}

#[test]
fn s3_two_agents_racing_for_a_stale_lease_exactly_one_wins() {
    let test = "s3_two_agents_racing_for_a_stale_lease_exactly_one_wins";
    if skip(test) {
        return;
    }
    let moto = Moto::start("fb-lease");
    let primary = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = "s3://fb-lease/race";
    let key = format!("race/sources/127.0.0.1-{}/agent.lease", primary.port);
    moto.put(&key, &stale_lease_body(600));
    let start = |name: &str| {
        s3_agent(
            &primary,
            store,
            &moto.endpoint,
            dir.path().join(format!("spool-{name}")),
            &dir.path().join(format!("agent-{name}.log")),
            &[],
        )
    };
    // Started together: both find the same stale lease and both try to take it over.
    let (mut a, mut b) = (start("a"), start("b"));
    let (pa, pb) = (a.pid(), b.pid());
    let deadline = Instant::now() + Duration::from_secs(30);
    let (loser, loser_status, winner, winner_pid) = loop {
        if let Some(s) = a.exit_status() {
            break (a, s, b, pb);
        }
        if let Some(s) = b.exit_status() {
            break (b, s, a, pa);
        }
        assert!(
            Instant::now() < deadline,
            "two agents took the same stale lease and both ran for 30 s:\n--- a\n{}\n--- b\n{}",
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut winner = winner;
    winner.wait_online(&primary);
    winner.assert_alive("after the other agent lost the lease");
    assert_eq!(loser_status.code(), Some(1), "{}", loser.log_text());
    let log = loser.log_text();
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let want = format!(
        "another agent ({}, pid {winner_pid}) is capturing source '127.0.0.1-{}' into {store}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        primary.port
    );
    assert!(
        last.starts_with("error: ") && last.contains(&want),
        "the losing agent's last line must name the winner ({want}):\n{log}"
    );
    let lease = String::from_utf8(moto.get(&key)).unwrap();
    assert!(
        lease.contains(&format!("\"pid\":{winner_pid}")),
        "the lease is not the winner's: {lease}"
    );
    winner.stop();
}

/// The lease is taken from under a running agent (as by an operator's stray second agent after a
/// network partition): its next renewal fails, and it exits naming the other agent instead of
/// overwriting its lease.
#[test]
fn s3_an_agent_whose_lease_was_taken_stops_at_its_next_renewal() {
    let test = "s3_an_agent_whose_lease_was_taken_stops_at_its_next_renewal";
    if skip(test) {
        return;
    }
    let moto = Moto::start("fb-lost");
    let primary = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = "s3://fb-lost/t";
    let key = format!("t/sources/127.0.0.1-{}/agent.lease", primary.port);
    let mut agent = s3_agent(
        &primary,
        store,
        &moto.endpoint,
        dir.path().join("spool"),
        &dir.path().join("agent.log"),
        &[],
    );
    agent.wait_online(&primary);
    let thief = format!(
        r#"{{"agent":"0123456789abcdef","host":"thief.invalid","pid":777,"renewed_ms":{}}}"#,
        now_ms()
    );
    moto.put(&key, thief.as_bytes());
    // Renewals come every 10 s.
    let deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(s) = agent.exit_status() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the agent still runs 25 s after its lease was taken:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = agent.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.starts_with("error: ")
            && last.contains(&format!(
                "another agent (thief.invalid, pid 777) took over source '127.0.0.1-{}' in {store}",
                primary.port
            )),
        "expected one line naming the agent that took the lease:\n{log}"
    );
    assert_eq!(
        String::from_utf8(moto.get(&key)).unwrap(),
        thief,
        "the agent overwrote the lease it had lost"
    );
}
