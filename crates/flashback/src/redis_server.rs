//! Starting and stopping the redis-server processes that restore (and the demo) run.
//!
//! Restore never re-implements Redis: it feeds a real server the base and the records (as its
//! master) and lets that server do the work. This module finds the binary, learns which RDB
//! versions it can load, starts it on 127.0.0.1 in a private directory, and kills it when the
//! [`RedisServer`] handle is dropped, unless the caller [`detach`](RedisServer::detach)es it
//! (`restore --serve`).
//!
//! Size: just over 600 lines of code: finding the binary, its RDB table, starting, the one spawner
//! thread that makes servers die with flashback, and stopping share the process bookkeeping
//! (pids, private dirs, leftovers). The seam if it grows: the spawner and leftover sweep into
//! `redis_server/spawn.rs`.
//!
//! # Which RDB versions a server loads
//!
//! Every loader refuses a higher RDB version than its own ("Can't handle RDB format version N").
//! The table (`notes/redis-replication.md` §3):
//!
//! | server                    | writes / loads up to |
//! |---------------------------|----------------------|
//! | Redis 3.2 / 4.0 / 5.0–6.2 | 7 / 8 / 9            |
//! | Redis 7.0                 | 10                   |
//! | Redis 7.2                 | 11                   |
//! | Redis 7.4 – 8.x           | 12                   |
//! | Valkey 7.2 – 8.x          | 11                   |
//! | Valkey 9+                 | 80 (`VALKEY080`), and ≤ 11; 12–79 are "foreign" and refused by default |
//!
//! Redis 8.6 is reported to write version 13; that is not verified in code, so a Redis 8.x is
//! taken to load 12 (a wrong "too old" answer costs a `--redis-server` flag; a wrong "fine" would
//! cost a failed restore after the base was streamed).

use crate::client::{Client, ClientError, RedisUrl};
use flashback_format::resp::Frame;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("redis-server not found: install it (apt-get install redis-server) or pass --redis-server PATH")]
    NotFound,
    #[error(
        "--redis-server {0}: no such file; pass the path of a redis-server or valkey-server binary"
    )]
    NoSuchBinary(PathBuf),
    #[error("{path} --version: {what}; pass --redis-server PATH to a working redis-server or valkey-server")]
    Version { path: PathBuf, what: String },
    #[error("cannot start {path}: {what}")]
    Spawn { path: PathBuf, what: String },
    #[error(
        "{server} on 127.0.0.1:{port} did not come up ({what}); its log {log} ends with:\n{tail}"
    )]
    Startup {
        server: String,
        port: u16,
        what: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Which product a binary is. Valkey and Redis diverged after 7.2: their newer RDB versions are
/// mutually unloadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Redis,
    Valkey,
}

/// A server binary and what it can load.
#[derive(Debug, Clone)]
pub struct ServerBinary {
    pub path: PathBuf,
    pub product: Product,
    pub version: (u32, u32, u32),
}

impl std::fmt::Display for ServerBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "redis-server".into());
        let (a, b, c) = self.version;
        write!(f, "{name} {a}.{b}.{c}")
    }
}

impl ServerBinary {
    /// `explicit` (from `--redis-server`), else `redis-server` on PATH.
    pub fn find(explicit: Option<&Path>) -> Result<ServerBinary, ServerError> {
        let path = match explicit {
            Some(p) if p.is_file() => p.to_path_buf(),
            // A bare name ("valkey-server") is looked up on PATH like a shell would.
            Some(p) if p.components().count() == 1 => {
                which(p.as_os_str()).ok_or_else(|| ServerError::NoSuchBinary(p.to_path_buf()))?
            }
            Some(p) => return Err(ServerError::NoSuchBinary(p.to_path_buf())),
            None => which("redis-server".as_ref()).ok_or(ServerError::NotFound)?,
        };
        let out = Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ServerError::Version {
                path: path.clone(),
                what: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (product, version) = parse_version(&text).ok_or_else(|| ServerError::Version {
            path: path.clone(),
            what: format!("unrecognised output {:?}", text.trim()),
        })?;
        Ok(ServerBinary {
            path,
            product,
            version,
        })
    }

    /// The highest RDB version this server loads (see the module table).
    pub fn max_rdb_version(&self) -> u32 {
        let (major, minor, _) = self.version;
        match self.product {
            Product::Valkey if major >= 9 => 80,
            Product::Valkey => 11,
            Product::Redis => match (major, minor) {
                (8.., _) | (7, 4..) => 12,
                (7, 2..=3) => 11,
                (7, _) => 10,
                (5..=6, _) => 9,
                (4, _) => 8,
                (3, 2..) => 7,
                _ => 6,
            },
        }
    }

    /// Whether a base of RDB version `v` loads on this server.
    pub fn can_load(&self, v: u32) -> bool {
        match self.product {
            // Valkey 9 refuses Redis 7.4+'s 12..=79 unless `rdb-version-check relaxed`, which is
            // only safe for files without new types; we do not turn it on behind the user's back.
            Product::Valkey if self.version.0 >= 9 => v <= 11 || v == 80,
            _ => v <= self.max_rdb_version(),
        }
    }
}

/// Which servers load a base of RDB version `v`, for error messages.
pub fn servers_for_rdb(v: u32) -> &'static str {
    match v {
        0..=9 => "any Redis ≥ 6 or Valkey",
        10 => "a Redis ≥ 7.0 or Valkey",
        11 => "a Valkey ≥ 7.2 / Redis ≥ 7.2",
        12 => "a Redis ≥ 7.4",
        80 => "a Valkey ≥ 9",
        _ => "a server at least as new as the captured source",
    }
}

/// Parses `Redis server v=7.0.15 sha=…` or `Valkey server v=8.0.1 sha=…`.
fn parse_version(text: &str) -> Option<(Product, (u32, u32, u32))> {
    let line = text.lines().find(|l| l.contains(" v="))?;
    let product = if line.to_ascii_lowercase().starts_with("valkey") {
        Product::Valkey
    } else {
        Product::Redis
    };
    let v = line.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next().flatten().unwrap_or(0);
    let patch = it.next().flatten().unwrap_or(0);
    Some((product, (major, minor, patch)))
}

fn which(name: &std::ffi::OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// None: a free port picked by the OS.
    pub port: Option<u16>,
    /// None: a fresh directory under the system temp dir, removed on drop.
    pub dir: Option<PathBuf>,
    /// The server may outlive this process (`restore --serve`): it gets no parent-death signal.
    /// Until [`RedisServer::detach`] it is still killed on drop (a failed or interrupted
    /// restore), and after a kill -9 of flashback the next [`sweep_leftovers`] kills it.
    pub may_outlive_us: bool,
    /// More `--name value` arguments (e.g. `--repl-diskless-sync no` for the demo's source).
    pub extra_args: Vec<String>,
}

/// A running redis-server on 127.0.0.1. Killed (and its temp dir removed) on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub binary: ServerBinary,
    pub port: u16,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    owns_dir: bool,
}

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

impl RedisServer {
    pub async fn start(
        binary: &ServerBinary,
        opts: ServerOptions,
    ) -> Result<RedisServer, ServerError> {
        let (dir, owns_dir) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|source| ServerError::Io {
                    path: d.clone(),
                    source,
                })?;
                (d.clone(), false)
            }
            None => (fresh_work_dir("flashback-redis")?, true),
        };
        // A free port can be taken by someone else between our probe and the server's bind:
        // retry with another one rather than fail a restore on a race.
        let attempts = if opts.port.is_some() { 1 } else { 3 };
        let mut last = None;
        for _ in 0..attempts {
            let port = match opts.port {
                Some(p) => p,
                None => free_port().map_err(|source| ServerError::Io {
                    path: dir.clone(),
                    source,
                })?,
            };
            let mut server = RedisServer {
                child: None,
                binary: binary.clone(),
                port,
                log_path: dir.join("redis.log"),
                dir: dir.clone(),
                owns_dir: false,
            };
            match server.spawn_and_wait(&opts).await {
                Ok(()) => {
                    server.owns_dir = owns_dir;
                    return Ok(server);
                }
                Err(e) => last = Some(e),
            }
        }
        if owns_dir {
            std::fs::remove_dir_all(&dir).ok();
        }
        Err(last.unwrap_or(ServerError::NotFound))
    }

    async fn spawn_and_wait(&mut self, opts: &ServerOptions) -> Result<(), ServerError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|source| ServerError::Io {
                path: self.log_path.clone(),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| ServerError::Io {
            path: self.log_path.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.binary.path);
        // The key is ours alone: a server we start has no use for it.
        cmd.env_remove(crate::store::crypt::KEY_ENV);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&self.log_path)
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ])
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            // Fatal config errors go to stderr before the log file is open: keep them too.
            .stdout(log)
            .stderr(log2);
        // Its own process group: a Ctrl-C at the terminal reaches flashback alone, which then
        // stops its servers itself (in order, removing their directories) instead of racing
        // them to shut down on the same SIGINT.
        cmd.process_group(0);
        if !opts.may_outlive_us {
            die_with_this_process(&mut cmd);
        }
        let child = spawn_from_lasting_thread(cmd).map_err(|e| ServerError::Spawn {
            path: self.binary.path.clone(),
            what: e.to_string(),
        })?;
        // For sweep_leftovers, should we be killed before we can stop the server.
        let _ = std::fs::write(self.dir.join(PID_FILE), child.id().to_string());
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let url = self.url();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(self.startup_error(format!("it exited with {status}")));
                }
            }
            if let Ok(mut c) = Client::connect(&url, Duration::from_secs(2)).await {
                match c.call(&["PING"]).await {
                    Ok(Frame::Simple(s)) if &s[..] == b"PONG" => return Ok(()),
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                if let Some(mut c) = self.child.take() {
                    c.kill().ok();
                    c.wait().ok();
                }
                return Err(
                    self.startup_error(format!("no PONG within {} s", STARTUP_TIMEOUT.as_secs()))
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn startup_error(&self, what: String) -> ServerError {
        ServerError::Startup {
            server: self.binary.to_string(),
            port: self.port,
            what,
            log: self.log_path.clone(),
            tail: self.log_tail(10),
        }
    }

    pub fn url(&self) -> RedisUrl {
        RedisUrl::local(self.port)
    }

    pub async fn client(&self) -> Result<Client, ServerError> {
        Ok(Client::connect(&self.url(), Duration::from_secs(60)).await?)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let Ok(mut f) = File::open(&self.log_path) else {
            return "(no log)".into();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(16 * 1024);
        let mut s = String::new();
        if f.seek(SeekFrom::Start(start)).is_err() {
            return "(log unreadable)".into();
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return "(log unreadable)".into();
        }
        s.push_str(&String::from_utf8_lossy(&buf));
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Lets the server outlive this handle (and this process). Returns its pid.
    pub fn detach(mut self) -> Option<u32> {
        self.owns_dir = false;
        // The user's now (restore --serve): sweep_leftovers must leave it alone.
        let _ = std::fs::remove_file(self.dir.join(PID_FILE));
        let _ = std::fs::write(self.dir.join(DETACHED_FILE), b"");
        self.child.take().map(|c| c.id())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL: a throwaway server has nothing worth a clean shutdown, and SIGTERM would
            // make a server configured to save write a dump first.
            c.kill().ok();
            c.wait().ok();
        }
        if self.owns_dir {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }
}

/// Makes the child get SIGKILL when this process dies, however it dies (kill -9 included).
#[allow(unsafe_code)] // pre_exec, see SAFETY below
fn die_with_this_process(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (prctl, getppid, _exit); it allocates nothing. `_exit` is libc's: nix has no wrapper
    // for it, and `std::process::exit` runs atexit handlers, which is not safe after a fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // We died between fork and prctl: the signal will never come, so go now.
            if nix::unistd::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

type SpawnRequest = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from one thread that lives as long as the process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process
/// (prctl(2)). Spawning from whatever thread polls the future would tie a server's life to a
/// tokio worker or blocking-pool thread, and the blocking pool retires idle threads after 10 s,
/// killing healthy servers mid-restore (the reason this was once rejected). A dedicated thread
/// that never returns makes "the thread exits" mean "the process exits".
fn spawn_from_lasting_thread(cmd: Command) -> std::io::Result<Child> {
    use std::sync::{mpsc, Mutex, OnceLock};
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("flashback-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            tracing::error!("cannot start the thread that starts redis-servers: {e}");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = spawner
        .lock()
        .map_err(|_| std::io::Error::other("the spawner thread panicked"))?
        .send((cmd, reply_tx));
    if sent.is_err() {
        return Err(std::io::Error::other("the spawner thread is gone"));
    }
    // A fork+exec takes about a millisecond; blocking the caller's thread that long is fine.
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// A port nobody listens on right now (the OS's pick for 127.0.0.1:0).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A new, empty work directory under the system temp dir, for something this process removes
/// when done (a private server's, compaction's): first removes what killed flashback processes
/// left under the same prefix ([`sweep_leftovers`]). Not for what outlives us on purpose (the
/// demo's store), which [`fresh_temp_dir`] makes.
pub fn fresh_work_dir(prefix: &str) -> Result<PathBuf, ServerError> {
    sweep_leftovers(&std::env::temp_dir(), prefix);
    fresh_temp_dir(prefix)
}

/// A new, empty directory under the system temp dir, named `<prefix>-<our pid>-<unique>`.
pub fn fresh_temp_dir(prefix: &str) -> Result<PathBuf, ServerError> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = base.join(format!("{prefix}-{}-{nanos:08x}{i}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(ServerError::Io { path: p, source }),
        }
    }
    Err(ServerError::Io {
        path: base,
        source: std::io::Error::other("cannot create a unique temp directory"),
    })
}

/// The file in a private server's directory that names the server's pid, for [`sweep_leftovers`].
const PID_FILE: &str = "server.pid";
/// Marks the directory of a server handed over to the user ([`RedisServer::detach`]).
const DETACHED_FILE: &str = "served";

/// A flashback process killed with -9 (an agent mid-compaction, a restore) cannot clean up: its
/// private redis-server keeps running, orphaned, and its directory (a base RDB as large as the
/// dataset) stays. The directory's name carries the creator's pid: when that process is gone,
/// kill the server named in the directory's pid file (only if it runs in that very directory,
/// so a reused pid is never hit) and remove the directory. Best effort.
///
/// Since servers get `PR_SET_PDEATHSIG` ([`die_with_this_process`]) this mostly finds dead
/// servers' directories; the kill remains for a `--serve` server whose restore was killed
/// before it finished, and for servers started by older versions.
pub fn sweep_leftovers(base: &std::path::Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let lead = format!("{prefix}-");
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&lead)) else {
            continue;
        };
        let Some(creator) = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        if creator == std::process::id() as i32 || process_alive(creator) {
            continue;
        }
        let dir = e.path();
        if dir.join(DETACHED_FILE).exists() {
            continue;
        }
        if let Some(server) = std::fs::read_to_string(dir.join(PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            // 0 and negative pids name process groups in kill(2), never one server.
            .filter(|p| *p > 0)
        {
            // redis-server rewrites its command line (`redis-server 127.0.0.1:port`), but it
            // chdirs into its --dir: the working directory identifies it.
            let cwd = std::fs::read_link(format!("/proc/{server}/cwd")).ok();
            if cwd.is_some() && cwd == dir.canonicalize().ok() {
                let _ = kill(Pid::from_raw(server), Signal::SIGKILL);
                tracing::warn!(
                    "killed redis-server pid {server}, left running by flashback pid {creator} (killed before it could stop it)"
                );
            }
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            tracing::info!(
                "removed {} (left by flashback pid {creator}, which is gone)",
                dir.display()
            );
        }
    }
}

/// Kills a server handed over by [`RedisServer::detach`] and removes its directory, for a caller
/// that took it back (the demo, stopped by a signal). Only if that pid still runs in `dir`, so a
/// reused pid is never hit.
pub fn stop_detached(pid: u32, dir: &Path) {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    if cwd.is_some() && cwd == dir.canonicalize().ok() {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether `pid` names a live process (one we may not signal counts: it exists). Signal 0
/// only checks; a pid of 0 or below would name a process group, so it is never alive here.
fn process_alive(pid: i32) -> bool {
    pid > 0
        && matches!(
            kill(Pid::from_raw(pid), None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(product: Product, version: (u32, u32, u32)) -> ServerBinary {
        ServerBinary {
            path: "redis-server".into(),
            product,
            version,
        }
    }

    #[test]
    fn versions_and_loadable_rdb() {
        let out = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c971a948f0\n";
        assert_eq!(parse_version(out), Some((Product::Redis, (7, 0, 15))));
        let out = "Valkey server v=8.1.1 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1\n";
        assert_eq!(parse_version(out), Some((Product::Valkey, (8, 1, 1))));
        assert_eq!(parse_version("usage: foo"), None);

        let r70 = bin(Product::Redis, (7, 0, 15));
        assert_eq!(r70.max_rdb_version(), 10);
        assert!(r70.can_load(10) && r70.can_load(9) && !r70.can_load(11));
        assert_eq!(bin(Product::Redis, (7, 2, 6)).max_rdb_version(), 11);
        assert_eq!(bin(Product::Redis, (7, 4, 1)).max_rdb_version(), 12);
        assert_eq!(bin(Product::Redis, (8, 2, 0)).max_rdb_version(), 12);
        let v8 = bin(Product::Valkey, (8, 1, 1));
        assert!(v8.can_load(11) && !v8.can_load(12) && !v8.can_load(80));
        let v9 = bin(Product::Valkey, (9, 0, 0));
        assert!(v9.can_load(80) && v9.can_load(11) && !v9.can_load(12));
        assert!(!bin(Product::Redis, (8, 0, 0)).can_load(80));
    }

    #[tokio::test]
    async fn starts_answers_and_dies_on_drop() {
        let b = ServerBinary::find(None).expect("redis-server installed for tests");
        let s = RedisServer::start(&b, ServerOptions::default())
            .await
            .unwrap();
        let mut c = s.client().await.unwrap();
        c.ok(&["SET", "k", "v"]).await.unwrap();
        let (port, dir) = (s.port, s.dir.clone());
        assert!(dir.join("redis.log").exists());
        drop(c);
        drop(s);
        assert!(!dir.exists());
        let url = RedisUrl::local(port);
        assert!(Client::connect(&url, Duration::from_secs(1)).await.is_err());
    }

    /// What a kill -9 leaves (a dead creator's directory with its server still running) goes;
    /// a served instance, a live creator's directory and an unrelated process reusing a
    /// recorded pid stay.
    #[tokio::test]
    async fn leftovers_of_a_killed_process_are_swept_and_nothing_else() {
        let base = tempfile::tempdir().unwrap();
        let mut gone = Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let b = ServerBinary::find(None).unwrap();
        // A private server whose creator died: started as RedisServer does, then "killed".
        let orphan_dir = base.path().join(format!("fbtest-{dead}-a"));
        let orphan = RedisServer::start(
            &b,
            ServerOptions {
                dir: Some(orphan_dir.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let orphan_port = orphan.port;
        let orphan_pid = orphan.detach().unwrap();
        // Should the sweep fail to kill it, the test must not leave it running either (checked
        // by its working directory, so a reused pid is left alone).
        struct KillOnDrop(u32, PathBuf);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.0)).ok();
                if cwd.is_some_and(|c| c.starts_with(&self.1)) {
                    let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
                }
            }
        }
        let _reap = KillOnDrop(orphan_pid, base.path().canonicalize().unwrap());
        std::fs::remove_file(orphan_dir.join(DETACHED_FILE)).unwrap();
        std::fs::write(orphan_dir.join(PID_FILE), orphan_pid.to_string()).unwrap();
        // A served instance of a finished restore --serve.
        let served = base.path().join(format!("fbtest-{dead}-b"));
        std::fs::create_dir(&served).unwrap();
        std::fs::write(served.join(DETACHED_FILE), b"").unwrap();
        // A live creator (us).
        let mine = base.path().join(format!("fbtest-{}-c", std::process::id()));
        std::fs::create_dir(&mine).unwrap();
        // A dead creator whose recorded server pid now belongs to someone else.
        let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
        let reused = base.path().join(format!("fbtest-{dead}-d"));
        std::fs::create_dir(&reused).unwrap();
        std::fs::write(reused.join(PID_FILE), bystander.id().to_string()).unwrap();

        sweep_leftovers(base.path(), "fbtest");

        assert!(!orphan_dir.exists() && !reused.exists());
        assert!(served.exists() && mine.exists());
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "a bystander was killed"
        );
        bystander.kill().unwrap();
        bystander.wait().unwrap();
        let url = RedisUrl::local(orphan_port);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Client::connect(&url, Duration::from_secs(1)).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "the orphaned server still answers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error_with_the_log() {
        let b = ServerBinary::find(None).unwrap();
        let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = hold.local_addr().unwrap().port();
        let err = RedisServer::start(
            &b,
            ServerOptions {
                port: Some(port),
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("did not come up") && msg.contains("ddress already in use"),
            "{msg}"
        );
        assert!(ServerBinary::find(Some(Path::new("/nonexistent/redis-server"))).is_err());
    }
}
