//! Test harness for the end-to-end tests: real redis-server processes, a tiny synchronous RESP
//! client, the `flashback` binary run as a user would run it, and the state oracle.
//!
//! Deliberately independent of the code under test: the RESP client here is written from
//! scratch instead of reusing `flashback_format::resp`/`flashback::client`, so a bug in the library's
//! framing cannot hide itself by being on both sides of a comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn flashback_bin() -> &'static str {
    env!("CARGO_BIN_EXE_flashback")
}

/// Children die with the test: Drop kills them on success and on panic. On Linux the kernel is
/// also asked (PR_SET_PDEATHSIG) to kill them if the test process itself is killed, e.g. by a
/// CI timeout, which Drop cannot see. Best effort only: in a kill -9 of a test binary the agent
/// died this way but a redis-server child survived, reparented to init (not understood yet).
#[allow(unsafe_code)] // raw signals to a child process (libc), as the test needs them
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    cmd
}

pub fn redis_server_bin() -> String {
    std::env::var("FLASHBACK_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// Peak RSS (VmHWM) of a live process, in MB.
pub fn peak_rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `@<unix seconds>.<ms>`: the exact form DESIGN.md accepts, with no time-zone ambiguity.
pub fn at_arg(t_ms: u64) -> String {
    format!("@{}.{:03}", t_ms / 1000, t_ms % 1000)
}

/// A port that was free a moment ago. Racy by nature (another test may take it before
/// redis-server binds it), so [`RedisProc::start`] retries with a fresh port on failure.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// RESP client

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The payload of a status or bulk reply as text (lossy), for INFO and DEBUG DIGEST.
    pub fn text(&self) -> String {
        match self {
            Reply::Status(b) | Reply::Bulk(Some(b)) | Reply::Error(b) => {
                String::from_utf8_lossy(b).into_owned()
            }
            other => panic!("expected a status or bulk reply, got {other:?}"),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    pub fn array(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(a)) => a,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Reply::Bulk(Some(b)) | Reply::Status(b) => b,
            other => panic!("expected a bulk reply, got {other:?}"),
        }
    }
}

pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn connect(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.try_call(args)
            .unwrap_or_else(|e| panic!("redis call {:?} failed: {e}", show_args(args)))
    }

    pub fn try_call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Reply> {
        let mut buf = Vec::new();
        encode_command(args, &mut buf);
        self.writer.write_all(&buf)?;
        self.read_reply()
    }

    /// Sends every command, then reads every reply: one round trip for a batch.
    pub fn pipeline<A: AsRef<[u8]>>(&mut self, cmds: &[Vec<A>]) -> Vec<Reply> {
        let mut buf = Vec::new();
        for c in cmds {
            encode_command(c, &mut buf);
        }
        self.writer.write_all(&buf).unwrap();
        (0..cmds.len())
            .map(|_| self.read_reply().unwrap())
            .collect()
    }

    fn read_line(&mut self) -> std::io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if line.len() < 2 || !line.ends_with(b"\r\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bad RESP line {:?}", String::from_utf8_lossy(&line)),
            ));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        let line = self.read_line()?;
        let (kind, rest) = (line[0], &line[1..]);
        let num = || -> std::io::Result<i64> {
            std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad RESP length")
                })
        };
        Ok(match kind {
            b'+' => Reply::Status(rest.to_vec()),
            b'-' => Reply::Error(rest.to_vec()),
            b':' => Reply::Int(num()?),
            b'$' => {
                let n = num()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut b = vec![0u8; n as usize + 2];
                    self.reader.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            }
            b'*' => {
                let n = num()?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut v = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        v.push(self.read_reply()?);
                    }
                    Reply::Array(Some(v))
                }
            }
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected RESP type byte {:?}", other as char),
                ))
            }
        })
    }
}

pub fn show_args<A: AsRef<[u8]>>(args: &[A]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            let s = String::from_utf8_lossy(&a[..a.len().min(40)]).into_owned();
            if a.len() > 40 {
                format!("{s}…({} bytes)", a.len())
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// redis-server

pub struct RedisProc {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
    /// From `--requirepass` in the extra arguments: [`RedisProc::conn`] authenticates with it.
    pub password: Option<String>,
}

impl RedisProc {
    pub fn start(extra_args: &[&str]) -> RedisProc {
        Self::start_in(tempfile::tempdir().unwrap(), extra_args)
    }

    /// A fresh server that loads `rdb` at startup (copied in as its `dump.rdb`).
    pub fn start_with_rdb(rdb: &Path, extra_args: &[&str]) -> RedisProc {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(rdb, dir.path().join("dump.rdb"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", rdb.display()));
        Self::start_in(dir, extra_args)
    }

    /// Like [`start`](Self::start) with another server binary (a Valkey, a newer Redis).
    pub fn start_bin(bin: &str, extra_args: &[&str]) -> RedisProc {
        Self::start_in_with(bin, tempfile::tempdir().unwrap(), extra_args)
    }

    /// [`start_bin`](Self::start_bin) loading `rdb` at startup (copied in as its `dump.rdb`).
    pub fn start_bin_with_rdb(bin: &str, rdb: &Path, extra_args: &[&str]) -> RedisProc {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(rdb, dir.path().join("dump.rdb"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", rdb.display()));
        Self::start_in_with(bin, dir, extra_args)
    }

    fn start_in(dir: tempfile::TempDir, extra_args: &[&str]) -> RedisProc {
        Self::start_in_with(&redis_server_bin(), dir, extra_args)
    }

    fn start_in_with(bin: &str, dir: tempfile::TempDir, extra_args: &[&str]) -> RedisProc {
        let password = extra_args
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].to_string());
        let mut last_log = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let log = dir.path().join("redis.log");
            let _ = std::fs::remove_file(&log);
            let mut cmd = Command::new(bin);
            cmd.arg("--port").arg(port.to_string());
            cmd.args([
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            cmd.args([
                "--enable-debug-command",
                "local",
                "--repl-diskless-sync-delay",
                "0",
            ]);
            cmd.arg("--dir").arg(dir.path());
            cmd.arg("--dbfilename").arg("dump.rdb");
            cmd.arg("--logfile").arg(&log);
            cmd.args(extra_args);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot run {bin}: {e} (install redis-server or set FLASHBACK_TEST_REDIS_SERVER)"
                )
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(_status) = child.try_wait().unwrap() {
                    last_log = std::fs::read_to_string(&log).unwrap_or_default();
                    break; // most likely the port was taken meanwhile: try another one
                }
                if let Ok(mut c) = Conn::connect(port) {
                    // A server still loading its RDB answers -LOADING: keep waiting. One with a
                    // password answers -NOAUTH once it is up.
                    match c.try_call(&["PING"]) {
                        Ok(Reply::Status(s)) if s == b"PONG" => {
                            return RedisProc {
                                port,
                                child,
                                dir,
                                password,
                            }
                        }
                        Ok(Reply::Error(e)) if e.starts_with(b"NOAUTH") => {
                            return RedisProc {
                                port,
                                child,
                                dir,
                                password,
                            }
                        }
                        _ => {}
                    }
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-server on port {port} did not answer PING in 30 s; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server would not start; last log:\n{last_log}");
    }

    pub fn conn(&self) -> Conn {
        let mut c = Conn::connect(self.port)
            .unwrap_or_else(|e| panic!("connect to redis on {}: {e}", self.port));
        if let Some(pw) = &self.password {
            assert_eq!(
                c.call(&["AUTH", pw.as_str()]),
                Reply::Status(b"OK".to_vec())
            );
        }
        c
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn info_replication(&self) -> String {
        self.conn().call(&["INFO", "replication"]).text()
    }

    pub fn master_repl_offset(&self) -> u64 {
        parse_info(&self.info_replication()).master_offset
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `INFO replication` says about the primary and its replicas.
#[derive(Debug, Default)]
pub struct ReplInfo {
    pub master_offset: u64,
    pub connected_slaves: usize,
    /// (state, acked offset) of each replica line.
    pub slaves: Vec<(String, u64)>,
}

pub fn parse_info(info: &str) -> ReplInfo {
    let mut r = ReplInfo::default();
    for line in info.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("master_repl_offset:") {
            r.master_offset = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("connected_slaves:") {
            r.connected_slaves = v.parse().unwrap();
        } else if line.starts_with("slave") && line.contains(":ip=") {
            let fields: BTreeMap<&str, &str> = line
                .split_once(':')
                .unwrap()
                .1
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            r.slaves.push((
                fields.get("state").unwrap_or(&"?").to_string(),
                fields
                    .get("offset")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(0),
            ));
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------
// The oracle

fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= *b as u64;
        *h = h.wrapping_mul(0x100000001b3);
    }
}

/// The state of a server, as a string to compare: `DEBUG DIGEST` (every key and value, and
/// *whether* each key has a TTL), plus the absolute `PEXPIRETIME` of every key in every db
/// (DEBUG DIGEST ignores TTL values), plus the function libraries with their code (a restore
/// that drops `FUNCTION LOAD` would otherwise look exact). Leaves the connection on db 0.
pub fn state(conn: &mut Conn) -> String {
    let digest = conn.call(&["DEBUG", "DIGEST"]).text();
    let mut ttls: Vec<(usize, Vec<u8>, i64)> = Vec::new();
    let mut keys_total = 0;
    for db in 0..16 {
        conn.call(&["SELECT".to_string(), db.to_string()]);
        let keys = conn.call(&["KEYS", "*"]);
        let keys: Vec<Vec<u8>> = keys.array().iter().map(|k| k.bytes().to_vec()).collect();
        keys_total += keys.len();
        let cmds: Vec<Vec<&[u8]>> = keys
            .iter()
            .map(|k| vec![b"PEXPIRETIME".as_slice(), k.as_slice()])
            .collect();
        for chunk_start in (0..cmds.len()).step_by(1000) {
            let chunk = &cmds[chunk_start..(chunk_start + 1000).min(cmds.len())];
            for (c, r) in chunk.iter().zip(conn.pipeline(chunk)) {
                let t = r.int();
                if t != -1 {
                    ttls.push((db, c[1].to_vec(), t));
                }
            }
        }
    }
    conn.call(&["SELECT", "0"]);
    ttls.sort();
    let mut h = 0xcbf29ce484222325u64;
    for (db, k, t) in &ttls {
        fnv1a(&mut h, format!("{db}:{}:", k.len()).as_bytes());
        fnv1a(&mut h, k);
        fnv1a(&mut h, format!(":{t};").as_bytes());
    }
    let mut libs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for lib in conn.call(&["FUNCTION", "LIST", "WITHCODE"]).array() {
        let fields = lib.array();
        let get = |name: &[u8]| -> Vec<u8> {
            fields
                .chunks(2)
                .find(|kv| kv[0].bytes() == name)
                .map(|kv| kv[1].bytes().to_vec())
                .unwrap_or_default()
        };
        libs.push((get(b"library_name"), get(b"library_code")));
    }
    libs.sort();
    let mut fh = 0xcbf29ce484222325u64;
    for (n, c) in &libs {
        fnv1a(&mut fh, n);
        fnv1a(&mut fh, b"\0");
        fnv1a(&mut fh, c);
    }
    let names: Vec<String> = libs
        .iter()
        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
        .collect();
    format!(
        "digest={digest} keys={keys_total} ttls={}:{h:016x} functions=[{}]:{fh:016x}",
        ttls.len(),
        names.join(",")
    )
}

// ---------------------------------------------------------------------------------------------
// The capture agent

pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
    pub store: PathBuf,
    pub source_port: u16,
}

/// `FLASHBACK_TEST_AGENT_ARGS`: more arguments for every agent the tests start, so that any
/// capture test (the differential ones first) runs with another agent configuration, e.g.
/// `--rolling-bases --rolling-min-bytes 0 --segment-age 1s` (docs/testing.md).
pub fn extra_agent_args() -> Vec<String> {
    std::env::var("FLASHBACK_TEST_AGENT_ARGS")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// `FLASHBACK_TEST_RESTORE_ARGS`: more arguments for every `flashback restore` the tests run
/// (appended), so that the restore tests run with another restore configuration, e.g.
/// `--parallel 4` (docs/testing.md).
pub fn extra_restore_args() -> Vec<String> {
    std::env::var("FLASHBACK_TEST_RESTORE_ARGS")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

impl Agent {
    /// `flashback capture --source redis://127.0.0.1:<port> --store <store> <extra…>`, stderr
    /// (the agent's log) to a file next to the store. Several starts on one store append to
    /// one log.
    pub fn start(source_port: u16, store: &Path, extra: &[&str]) -> Agent {
        Self::start_url(
            &format!("redis://127.0.0.1:{source_port}"),
            source_port,
            store,
            extra,
        )
    }

    pub fn start_url(url: &str, source_port: u16, store: &Path, extra: &[&str]) -> Agent {
        let log = store.with_extension("agent.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = die_with_parent(&mut Command::new(flashback_bin()))
            .args(["capture", "--source", url, "--store"])
            .arg(store)
            .args(extra)
            .args(extra_agent_args())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
            store: store.to_path_buf(),
            source_port,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent already stopped").id()
    }

    fn check_alive(&mut self, what: &str) {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait().unwrap() {
                panic!(
                    "the agent exited ({status}) while {what}; agent log:\n{}",
                    self.log_text()
                );
            }
        }
    }

    /// Until the source lists a replica `state=online` whose acked offset equals the primary's
    /// `master_repl_offset`: the snapshot has been transferred and the stream is flowing.
    pub fn wait_online(&mut self, source: &RedisProc) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive("waiting for it to come online");
            let last = source.info_replication();
            let info = parse_info(&last);
            if info
                .slaves
                .iter()
                .any(|(s, off)| s == "online" && *off == info.master_offset)
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("the agent did not come online at the primary's offset within 60 s.\nINFO replication:\n{last}\nagent log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Until the primary's view of the agent's acked offset reaches the primary's
    /// `master_repl_offset`. The agent ACKs only what it has made durable, so afterwards every
    /// write so far is both received and on disk.
    pub fn wait_caught_up(&mut self, source: &RedisProc) {
        wait_caught_up(source, self)
    }

    /// SIGTERM, then the exit status, which must be 0 within 60 s.
    pub fn stop(&mut self) {
        let status = self.signal_and_wait(libc::SIGTERM);
        assert!(
            status.success(),
            "capture exited with {status} after SIGTERM, not 0; agent log:\n{}",
            self.log_text()
        );
    }

    #[allow(unsafe_code)] // raw signals to a child process (libc), as the test needs them
    pub fn signal_and_wait(&mut self, sig: i32) -> ExitStatus {
        let mut child = self.child.take().expect("agent already stopped");
        // SAFETY: kill(2) on the pid of a child we spawned and have not yet reaped.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "capture did not exit within 60 s of signal {sig}; agent log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("agent already stopped");
        child.kill().unwrap();
        child.wait().unwrap();
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

pub fn wait_caught_up(primary: &RedisProc, agent: &mut Agent) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        agent.check_alive("waiting for it to catch up");
        let text = primary.info_replication();
        let info = parse_info(&text);
        if info
            .slaves
            .iter()
            .any(|(s, off)| s == "online" && *off >= info.master_offset)
        {
            // Acknowledged is durable, but the agent vouches for an instant only once its poll
            // of the source's offset confirms it (every 20 ms inside an uncertain interval, as
            // right after a sync or reconnect): a point whose time is taken now must not fall
            // in the few ms before that confirmation, or a restore by time rightly refuses it.
            std::thread::sleep(Duration::from_millis(120));
            return;
        }
        if Instant::now() > deadline {
            panic!("the agent's acked offset did not reach the primary's within 60 s.\nINFO replication:\n{text}\nagent log:\n{}", agent.log_text());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Until the primary has no replica attached (after killing the agent).
pub fn wait_no_replicas(primary: &RedisProc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while parse_info(&primary.info_replication()).connected_slaves > 0 {
        assert!(
            Instant::now() < deadline,
            "the primary still lists a replica 30 s after the agent died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `flashback <args>` to completion (bounded: killed after `timeout`).
pub fn run_flashback<A: AsRef<std::ffi::OsStr>>(args: &[A], timeout: Duration) -> Output {
    run_flashback_env(args, &[], timeout)
}

/// `flashback restore --store <store> <at_args…> --rdb <file>`, then the file loaded into a
/// fresh redis-server: its [`state`], or why there is none.
pub fn try_restore_rdb(store: &Path, at_args: &[&str]) -> Result<String, String> {
    let store = store.to_str().expect("test store paths are UTF-8");
    try_restore_rdb_env(store, at_args, &[])
}

pub fn restore_rdb(store: &Path, at_args: &[&str]) -> String {
    try_restore_rdb(store, at_args).unwrap_or_else(|e| panic!("{e}"))
}

/// `flashback info --store <store> --json`, parsed.
pub fn info_json(store: &Path) -> serde_json::Value {
    let out = run_flashback(
        &[
            "info".as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
            "--json".as_ref(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(
        out.code,
        Some(0),
        "flashback info --json failed:\n{}",
        out.all()
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("flashback info --json is not JSON ({e}):\n{}", out.all()))
}

/// How many generations `info --json` reports, over all sources: the sum of the lengths of
/// every `generations` array (or the value of a numeric `generations` field) in the document.
/// None when the document has no such field.
pub fn json_generation_count(v: &serde_json::Value) -> Option<usize> {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut found = None;
            for (k, val) in m {
                let here = if k == "generations" {
                    match val {
                        Value::Array(a) => Some(a.len()),
                        Value::Number(n) => n.as_u64().map(|n| n as usize),
                        _ => None,
                    }
                } else {
                    json_generation_count(val)
                };
                if let Some(n) = here {
                    found = Some(found.unwrap_or(0) + n);
                }
            }
            found
        }
        Value::Array(a) => a
            .iter()
            .filter_map(json_generation_count)
            .fold(None, |acc, n| Some(acc.unwrap_or(0) + n)),
        _ => None,
    }
}

/// Generation directories on disk in a local store, over all sources.
pub fn generation_dirs(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(sources) = std::fs::read_dir(store.join("sources")) else {
        return out;
    };
    for s in sources.flatten() {
        if let Ok(gens) = std::fs::read_dir(s.path().join("generations")) {
            out.extend(gens.flatten().map(|g| g.path()));
        }
    }
    out.sort();
    out
}

/// The seed for a randomised test: `FLASHBACK_SEED` if set, else fresh. Printed either way so a
/// failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("FLASHBACK_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FLASHBACK_SEED={s:?} is not an unsigned integer")),
        Err(_) => {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            t.as_nanos() as u64
                ^ ((std::process::id() as u64) << 32)
                ^ (test.len() as u64).wrapping_mul(0x9e3779b97f4a7c15)
        }
    };
    eprintln!("[{test}] seed {seed} (replay with FLASHBACK_SEED={seed})");
    seed
}

// ---------------------------------------------------------------------------------------------
// Remote stores (tests/s3.rs): the binary with extra environment (credentials, endpoint), and
// agents whose --store is a URL rather than a directory.

/// [`run_flashback`] with extra environment variables for the child.
pub fn run_flashback_env<A: AsRef<std::ffi::OsStr>>(
    args: &[A],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out_p, err_p) = (dir.path().join("out"), dir.path().join("err"));
    let restore = args.first().is_some_and(|a| a.as_ref() == "restore");
    // A test naming an option itself (`--parallel 1`) keeps its own: clap refuses it twice.
    let given = |o: &String| args.iter().any(|a| a.as_ref() == o.as_str());
    let extra = if restore && !extra_restore_args().iter().any(given) {
        extra_restore_args()
    } else {
        Vec::new()
    };
    let mut child = die_with_parent(&mut Command::new(flashback_bin()))
        .args(args)
        .args(&extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(File::create(&out_p).unwrap())
        .stderr(File::create(&err_p).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_p).unwrap_or_default(),
    };
    if status.is_none() {
        panic!(
            "flashback {:?} did not finish within {timeout:?}:\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            out.all()
        );
    }
    out
}

/// [`try_restore_rdb`] for a store given as a URL, with extra environment for the restore.
pub fn try_restore_rdb_env(
    store: &str,
    at_args: &[&str],
    env: &[(&str, &str)],
) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let rdb = dir.path().join("restored.rdb");
    let mut args: Vec<std::ffi::OsString> = vec!["restore".into(), "--store".into(), store.into()];
    args.extend(at_args.iter().map(|a| a.into()));
    args.extend(["--rdb".into(), rdb.clone().into_os_string()]);
    let out = run_flashback_env(&args, env, Duration::from_secs(300));
    if out.code != Some(0) {
        return Err(format!("restore {at_args:?} failed:\n{}", out.all()));
    }
    if !rdb.exists() {
        return Err(format!(
            "restore {at_args:?} exited 0 but wrote no {}:\n{}",
            rdb.display(),
            out.all()
        ));
    }
    let server = RedisProc::start_with_rdb(&rdb, &[]);
    Ok(state(&mut server.conn()))
}

impl Agent {
    /// `flashback capture --source <url> --store <store> <extra…>` with extra environment, the
    /// agent's log appended to `log`. For stores that are URLs (`s3://…`).
    pub fn start_env(
        url: &str,
        source_port: u16,
        store: &str,
        log: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = die_with_parent(&mut Command::new(flashback_bin()))
            .args(["capture", "--source", url, "--store", store])
            .args(extra)
            .args(extra_agent_args())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log: log.to_path_buf(),
            store: PathBuf::from(store),
            source_port,
        }
    }

    /// The exit status if the agent has exited (it is then reaped), without panicking.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// Panics, with the log, if the agent has exited.
    pub fn assert_alive(&mut self, what: &str) {
        self.check_alive(what)
    }
}

/// 1,200 pipelined `SET <phase>:k<n> <1000-byte value>` (about 1.2 MB of replication stream),
/// the bulk of each phase in tests/e2e/compact.rs and tests/e2e/prune.rs.
pub fn bulk_sets(conn: &mut Conn, phase: &str) {
    let value = format!("{phase}-{}", "v".repeat(1000));
    for chunk in 0..12 {
        let cmds: Vec<Vec<String>> = (0..100)
            .map(|i| {
                vec![
                    "SET".into(),
                    format!("{phase}:k{}", chunk * 100 + i),
                    value.clone(),
                ]
            })
            .collect();
        for r in conn.pipeline(&cmds) {
            assert!(!r.is_error(), "{r:?}");
        }
    }
}

/// An instant of the source recorded for a later restore: its state, its replication offset and
/// (once the agent had acknowledged everything up to it) its time.
#[derive(Debug, Clone)]
pub struct RecordedPoint {
    pub label: String,
    pub t_ms: u64,
    pub offset: u64,
    pub state: String,
}

/// Reads the offset and the [`state`] on `conn` with nothing in between, waits until the agent
/// has acknowledged that offset, then takes the time (a restore `--at` it must see exactly this
/// state). For tests whose agent is always up; the next write lands in a later millisecond.
pub fn record_point(
    conn: &mut Conn,
    primary: &RedisProc,
    agent: &mut Agent,
    label: &str,
) -> RecordedPoint {
    let offset = parse_info(&conn.call(&["INFO", "replication"]).text()).master_offset;
    let state = state(conn);
    agent.wait_caught_up(primary);
    let t_ms = now_ms();
    std::thread::sleep(Duration::from_millis(5));
    RecordedPoint {
        label: label.to_string(),
        t_ms,
        offset,
        state,
    }
}

/// Restores from `store` with `at_args` (e.g. `--at @…`) and compares with `want`, the
/// [`state`] recorded at point `label`; None when equal, else the failure in full.
pub fn restore_mismatch(
    store: &str,
    env: &[(&str, &str)],
    label: &str,
    want: &str,
    at_args: &[&str],
) -> Option<String> {
    match try_restore_rdb_env(store, at_args, env) {
        Ok(got) if got == want => None,
        Ok(got) => Some(format!(
            "point {label} restored with {at_args:?}:\n    want {want}\n    got  {got}"
        )),
        Err(e) => Some(format!("point {label}: {e}")),
    }
}

/// The error a failed command printed: its last stderr line, which must start `error: `, be the
/// only such line, and carry no second line of detail (log lines before it are fine).
pub fn one_error_line(out: &Output) -> String {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let last = lines.last().copied().unwrap_or("");
    assert!(
        last.starts_with("error: ")
            && lines.iter().filter(|l| l.starts_with("error:")).count() == 1,
        "expected one `error: …` line, last on stderr:\n{}",
        out.all()
    );
    last.to_string()
}
