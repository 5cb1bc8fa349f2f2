//! `restore` checks its output before any work (DESIGN.md), writes `--rdb` through devices and
//! symlinks, never leaves a temp file, stops its servers on SIGINT/SIGTERM (and they die with
//! it on kill -9), masks passwords and escapes key names in messages.
//!
//! "No restore work happened" is proven, not guessed: every restore here runs with
//! `--redis-server` pointing at a wrapper script that logs each server start (and the server's
//! pid: the script execs it) before exec'ing the real redis-server, and with TMPDIR set to a
//! directory of its own, where the private servers' work dirs must not remain.

use crate::util::*;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Keys in db 0 of the fixture: enough that a restore with a per-key load delay lasts seconds.
const KEYS_DB0: usize = 20_000;
const KEYS_DB5: usize = 3;

/// One captured store shared by the tests (read only): KEYS_DB0 keys `k:N` in db 0, KEYS_DB5
/// keys `d5:N` in db 5. The source is gone afterwards; tests that need one start their own.
fn fixture() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("restore_preflight");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let store = root.join("store");
        let source = RedisProc::start(&["--repl-diskless-sync-delay", "0"]);
        fill(&source);
        let mut agent = Agent::start(source.port, &store, &[]);
        agent.wait_online(&source);
        source.conn().call(&["SET", "after-base", "1"]);
        agent.wait_caught_up(&source);
        agent.stop();
        store
    })
}

fn fill(source: &RedisProc) {
    let mut c = source.conn();
    for chunk in (0..KEYS_DB0).collect::<Vec<_>>().chunks(1000) {
        let cmds: Vec<Vec<String>> = chunk
            .iter()
            .map(|i| vec!["SET".into(), format!("k:{i}"), format!("value-{i}")])
            .collect();
        c.pipeline(&cmds);
    }
    c.call(&["SELECT", "5"]);
    for i in 0..KEYS_DB5 {
        c.call(&["SET", &format!("d5:{i}"), "x"]);
    }
}

/// A restore's working environment: the wrapper script, its log, a private TMPDIR.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Self::with_server_args("")
    }

    /// `extra` is appended to every redis-server the restore starts.
    fn with_server_args(extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let log = dir.path().join("starts.log");
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in --version) ;; *) echo $$ >> '{}' ;; esac\nexec {} \"$@\" {extra}\n",
            log.display(),
            redis_server_bin()
        );
        let path = dir.path().join("redis-server");
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Env { dir }
    }

    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// Pids of the redis-servers the restore started.
    fn started(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.path().join("starts.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn args(&self, rest: &[&str]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "restore".into(),
            "--store".into(),
            fixture().into(),
            "--redis-server".into(),
            self.dir.path().join("redis-server").into(),
        ];
        a.extend(rest.iter().map(OsString::from));
        a
    }

    fn restore(&self, rest: &[&str]) -> (Output, Duration) {
        let t = Instant::now();
        let tmp = self.tmp();
        let out = run_flashback_env(
            &self.args(rest),
            &[("TMPDIR", tmp.to_str().unwrap())],
            Duration::from_secs(120),
        );
        (out, t.elapsed())
    }

    fn work_dirs_left(&self) -> Vec<String> {
        std::fs::read_dir(self.tmp())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// The last non-empty stderr line.
fn last_line(out: &Output) -> String {
    out.stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

/// Exit 1, one `error:` line holding every phrase, and no restore work: no plan printed, no
/// server started, fast.
fn refused_before_work(env: &Env, rest: &[&str], phrases: &[&str]) -> String {
    fixture();
    let (out, took) = env.restore(rest);
    assert_eq!(out.code, Some(1), "{rest:?}:\n{}", out.all());
    let last = last_line(&out);
    assert!(last.starts_with("error: "), "{last:?}\n{}", out.all());
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1,
        "one error line:\n{}",
        out.all()
    );
    for p in phrases {
        assert!(last.contains(p), "{p:?} missing from {last:?}");
    }
    assert!(
        env.started().is_empty(),
        "a redis-server was started for {rest:?}: {:?}",
        env.started()
    );
    assert!(
        !out.stdout.contains("base"),
        "the plan was made and printed before the refusal:\n{}",
        out.stdout
    );
    assert!(took < Duration::from_secs(10), "{rest:?} took {took:?}");
    last
}

fn dbsize(c: &mut Conn, db: u32) -> i64 {
    c.call(&["SELECT", &db.to_string()]);
    c.call(&["DBSIZE"]).int()
}

#[test]
fn to_with_a_wrong_password_is_refused_before_work() {
    let target = RedisProc::start(&["--requirepass", "right"]);
    let env = Env::new();
    let url = format!("redis://:wrongpw@127.0.0.1:{}", target.port);
    let last = refused_before_work(
        &env,
        &["--latest", "--to", &url],
        &["authentication failed", "password"],
    );
    assert!(!last.contains("wrongpw"), "{last}");
    let url = format!("redis://127.0.0.1:{}", target.port);
    refused_before_work(
        &env,
        &["--latest", "--to", &url],
        &["requires a password", "redis://[USER]:PASSWORD@"],
    );
    assert_eq!(dbsize(&mut target.conn(), 0), 0);
}

#[test]
fn to_an_unreachable_or_foreign_server_is_refused_before_work() {
    let env = Env::new();
    let port = free_port();
    refused_before_work(
        &env,
        &["--latest", "--to", &format!("redis://127.0.0.1:{port}")],
        &[&format!("cannot connect to 127.0.0.1:{port}")],
    );
    // Something that is not Redis: an HTTP-ish server answering garbage.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    refused_before_work(
        &env,
        &["--latest", "--to", &format!("redis://127.0.0.1:{port}")],
        &[
            "does not answer like a Redis server",
            "check the host and port",
        ],
    );
}

#[test]
fn to_a_replica_is_refused_before_work() {
    let primary = RedisProc::start(&[]);
    let replica = RedisProc::start(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let env = Env::new();
    refused_before_work(
        &env,
        &["--latest", "--to", &replica.url()],
        &["is a replica of", "restore into its primary"],
    );
}

/// The target has 4 databases; the restore has keys in db 5. Only known after the rebuild, so
/// the server runs, but nothing is written to the target; --db-map then puts them in db 1.
#[test]
fn to_a_target_without_the_db_writes_nothing_and_db_map_fixes_it() {
    fixture();
    let target = RedisProc::start(&["--databases", "4"]);
    let env = Env::new();
    let (out, _) = env.restore(&["--latest", "--to", &target.url()]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let last = last_line(&out);
    assert!(
        last.contains("db 5")
            && last.contains(&format!("{KEYS_DB5} keys"))
            && last.contains("has 4 databases")
            && last.contains("--db-map 5:N")
            && last.contains("nothing was written"),
        "{last}"
    );
    let mut c = target.conn();
    for db in 0..4 {
        assert_eq!(dbsize(&mut c, db), 0, "db {db} was written to");
    }
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );

    let (out, _) = env.restore(&["--latest", "--to", &target.url(), "--db-map", "5:1"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(dbsize(&mut c, 1), KEYS_DB5 as i64);
    assert_eq!(dbsize(&mut c, 0), KEYS_DB0 as i64 + 1);
    c.call(&["SELECT", "1"]);
    assert_eq!(c.call(&["GET", "d5:0"]).text(), "x");

    let (out, _) = env.restore(&["--latest", "--rdb", "x.rdb", "--db-map", "5:1"]);
    assert_eq!(
        out.code,
        Some(2),
        "--db-map without --to is bad usage: {}",
        out.all()
    );
    let (out, _) = env.restore(&["--latest", "--to", &target.url(), "--db-map", "5-1"]);
    assert_eq!(out.code, Some(2), "{}", out.all());
}

#[test]
fn serve_on_a_busy_port_is_refused_before_work() {
    let env = Env::new();
    let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hold.local_addr().unwrap().port().to_string();
    refused_before_work(
        &env,
        &["--latest", "--serve", &port],
        &[
            &format!("127.0.0.1:{port} is already in use"),
            "pick a free port",
        ],
    );
    refused_before_work(&env, &["--latest", "--serve", "0"], &["pick a port"]);
}

#[test]
fn rdb_paths_that_cannot_work_are_refused_before_work() {
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).to_str().unwrap().to_string();
    refused_before_work(
        &env,
        &["--latest", "--rdb", &p(""), "--force"],
        &["is a directory", "give a file name"],
    );
    refused_before_work(
        &env,
        &["--latest", "--rdb", &p("missing/x.rdb")],
        &["does not exist", "mkdir -p"],
    );
    std::fs::write(p("old.rdb"), b"keep me").unwrap();
    refused_before_work(&env, &["--latest", "--rdb", &p("old.rdb")], &["--force"]);
    assert_eq!(std::fs::read(p("old.rdb")).unwrap(), b"keep me");
    // A read-only place (root ignores permission bits, so a read-only mount).
    let ro = d.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let _m = Mount::tmpfs(&ro, "ro,size=1m");
    refused_before_work(
        &env,
        &["--latest", "--rdb", &p("ro/x.rdb")],
        &["cannot write in", "Read-only file system"],
    );
}

#[test]
fn rdb_writes_through_devices_and_symlinks() {
    fixture();
    let env = Env::new();
    let (out, _) = env.restore(&["--latest", "--rdb", "/dev/full", "--force"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let last = last_line(&out);
    assert_eq!(
        last,
        "error: /dev/full: No space left on device (os error 28)"
    );
    use std::os::unix::fs::FileTypeExt;
    for dev in ["/dev/full", "/dev/null"] {
        assert!(std::fs::metadata(dev).unwrap().file_type().is_char_device());
    }
    let (out, _) = env.restore(&["--latest", "--rdb", "/dev/null", "--force"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real.rdb");
    let link = d.path().join("link.rdb");
    std::fs::write(&real, b"old").unwrap();
    std::os::unix::fs::symlink("real.rdb", &link).unwrap();
    let (out, _) = env.restore(&["--latest", "--rdb", link.to_str().unwrap(), "--force"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let restored = RedisProc::start_with_rdb(&real, &[]);
    assert_eq!(dbsize(&mut restored.conn(), 0), KEYS_DB0 as i64 + 1);
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "only the link and its file: {names:?}");
}

/// ENOSPC while copying the RDB into place: one line, and no temp file left.
#[test]
fn a_full_disk_leaves_no_temp_file() {
    fixture();
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let small = d.path().join("small");
    std::fs::create_dir(&small).unwrap();
    // The fixture's RDB is a few hundred KB: 64 KB cannot hold it.
    let _m = Mount::tmpfs(&small, "size=64k");
    let file = small.join("x.rdb");
    let (out, _) = env.restore(&["--latest", "--rdb", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let last = last_line(&out);
    assert!(last.contains("No space left on device"), "{last}");
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

#[test]
fn keys_that_match_nothing_write_nothing() {
    fixture();
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("x.rdb");
    let (out, _) = env.restore(&[
        "--latest",
        "--rdb",
        file.to_str().unwrap(),
        "--keys",
        "nomatch:*",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let last = last_line(&out);
    assert!(
        last.contains("\"nomatch:*\"")
            && last.contains("no key")
            && last.contains("nothing was written"),
        "{last}"
    );
    assert!(std::fs::read_dir(d.path()).unwrap().next().is_none());
    let target = RedisProc::start(&[]);
    let (out, _) = env.restore(&["--latest", "--to", &target.url(), "--keys", "nomatch:*"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_eq!(dbsize(&mut target.conn(), 0), 0);
    let (out, _) = env.restore(&["--latest", "--to", &target.url(), "--keys", "d5:*"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(dbsize(&mut target.conn(), 5), KEYS_DB5 as i64);
}

#[test]
fn at_now_means_latest() {
    let store = fixture();
    let latest = restore_rdb(store, &["--latest"]);
    for at in ["now", "-0s"] {
        let got =
            try_restore_rdb(store, &["--at", at]).unwrap_or_else(|e| panic!("--at {at}: {e}"));
        assert_eq!(got, latest, "--at {at}");
    }
}

/// Restoring into the captured source warns before it starts (and, without --replace, leaves
/// every existing key alone).
#[test]
fn to_the_captured_source_warns_first() {
    let source = RedisProc::start(&["--repl-diskless-sync-delay", "0"]);
    source.conn().call(&["SET", "a", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &[]);
    agent.wait_online(&source);
    agent.stop();
    let env = Env::new();
    let out = run_flashback(
        &[
            "restore",
            "--store",
            store.to_str().unwrap(),
            "--latest",
            "--to",
            &source.url(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let warn = out
        .stderr
        .lines()
        .find(|l| l.starts_with("warning: --to"))
        .unwrap_or_else(|| panic!("no warning:\n{}", out.all()));
    assert!(warn.contains("is the captured source"), "{warn}");
    assert!(out.stdout.contains("1 skipped"), "{}", out.all());
    // A different server gets no such warning.
    let other = RedisProc::start(&[]);
    let (out, _) = env.restore(&["--latest", "--to", &other.url()]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.stderr.contains("captured source"), "{}", out.all());
}

#[test]
fn passwords_never_appear_in_messages() {
    let env = Env::new();
    let target = RedisProc::start(&["--requirepass", "right"]);
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("s");
    let cases: Vec<Vec<OsString>> = vec![
        env.args(&["--latest", "--to", "rediss://repl:Zq9SecretPw@127.0.0.1:1"]),
        env.args(&[
            "--latest",
            "--to",
            "redis://repl:Zq9SecretPw@127.0.0.1:99999",
        ]),
        env.args(&["--latest", "--to", "redis://repl:Zq9SecretPw@127.0.0.1:1"]),
        env.args(&[
            "--latest",
            "--to",
            &format!("redis://:Zq9SecretPw@127.0.0.1:{}", target.port),
        ]),
        vec![
            "capture".into(),
            "--source".into(),
            "rediss://u:Zq9SecretPw@127.0.0.1:1".into(),
            "--store".into(),
            store.clone().into(),
        ],
        vec![
            "capture".into(),
            "--source".into(),
            "redis://u:Zq9SecretPw@127.0.0.1:99999".into(),
            "--store".into(),
            store.clone().into(),
        ],
    ];
    for argv in cases {
        let out = run_flashback(&argv, Duration::from_secs(60));
        assert_ne!(out.code, Some(0), "{argv:?}");
        assert!(
            !out.all().contains("Zq9SecretPw"),
            "{argv:?} printed the password:\n{}",
            out.all()
        );
        assert!(
            out.all().contains(":***@"),
            "{argv:?} should show the masked URL:\n{}",
            out.all()
        );
    }
}

/// A key the target refuses (OOM) is named in the summary escaped and capped: a 1 MB name with
/// CR LF and NUL in it is one short line.
#[test]
fn key_names_in_messages_are_escaped_and_capped() {
    let source = RedisProc::start(&["--repl-diskless-sync-delay", "0"]);
    let mut big = b"bad\r\nkey\x00".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1_000_000));
    source.conn().call(&[&b"SET"[..], &big, b"v"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &[]);
    agent.wait_online(&source);
    agent.stop();
    // Every write refused: maxmemory far below what the server already uses.
    let target = RedisProc::start(&["--maxmemory", "1", "--maxmemory-policy", "noeviction"]);
    let out = run_flashback(
        &[
            "restore",
            "--store",
            store.to_str().unwrap(),
            "--latest",
            "--to",
            &target.url(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("first failure"))
        .unwrap_or_else(|| panic!("no failure line:\n{}", out.all()));
    assert!(line.contains("\"bad\\r\\nkey\\x00xxx"), "{line}");
    assert!(line.contains("… (1000009 bytes)"), "{line}");
    assert!(line.len() < 400, "{} bytes", line.len());
    assert!(!out.stdout.contains('\0') && !out.stderr.contains('\0'));
}

/// Waits until the restore's private server has started (its pid logged by the wrapper) and
/// is busy loading (the wrapper's key-load-delay makes that last seconds).
fn start_slow_restore(env: &Env) -> (std::process::Child, i32) {
    fixture();
    let child = die_with_parent(&mut std::process::Command::new(flashback_bin()))
        // The whole rebuild: its server loads every key of the base, slowly (--key-load-delay),
        // so the signal lands mid-restore; a splice's server holds only the keys the log names.
        .args(env.args(&[
            "--latest",
            "--rdb",
            env.dir.path().join("x.rdb").to_str().unwrap(),
            "--no-splice",
        ]))
        .env("TMPDIR", env.tmp())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(env.dir.path().join("out")).unwrap())
        .stderr(std::fs::File::create(env.dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        if let Some(&p) = env.started().first() {
            break p;
        }
        assert!(Instant::now() < deadline, "no server started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Into the replay: the server has begun loading the base.
    std::thread::sleep(Duration::from_millis(700));
    (child, pid)
}

fn alive(pid: i32) -> bool {
    // A zombie (dead, not reaped yet) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "redis-server pid {pid} survived its restore"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[allow(unsafe_code)] // raw signals to a child process (libc), as the test needs them
fn sigterm_and_sigint_stop_the_private_server_and_remove_its_dir() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        // 200 µs per key: 20,000 keys take 4 s to load.
        let env = Env::with_server_args("--key-load-delay 200");
        let (mut child, pid) = start_slow_restore(&env);
        assert!(alive(pid));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let t = Instant::now();
        let status = child.wait().unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{name}: took {:?}",
            t.elapsed()
        );
        assert_eq!(status.code(), Some(1), "{name}");
        let err = std::fs::read_to_string(env.dir.path().join("err")).unwrap();
        let last = err.lines().rev().find(|l| !l.is_empty()).unwrap_or("");
        assert!(
            last.starts_with(&format!("error: stopped by {name}")),
            "{last}"
        );
        wait_gone(pid);
        assert!(
            env.work_dirs_left().is_empty(),
            "{name}: {:?}",
            env.work_dirs_left()
        );
        assert!(!env.dir.path().join("x.rdb").exists());
    }
}

/// kill -9 leaves no chance to clean up: the kernel kills the server (PR_SET_PDEATHSIG), and
/// the next restore's sweep removes the dead run's directory.
#[test]
fn kill_9_of_a_restore_kills_its_server_too() {
    let env = Env::with_server_args("--key-load-delay 200");
    let (mut child, pid) = start_slow_restore(&env);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_gone(pid);
    assert_eq!(
        env.work_dirs_left().len(),
        1,
        "the dead run's dir, until the next sweep"
    );
    let d = tempfile::tempdir().unwrap();
    let (out, _) = env.restore(&[
        "--latest",
        "--rdb",
        d.path().join("y.rdb").to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        env.work_dirs_left().is_empty(),
        "the sweep left {:?}",
        env.work_dirs_left()
    );
}

/// A tmpfs mounted for one test (root only: the suite runs as root in CI; a missing privilege
/// is a failure, never a silent skip).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, opts: &str) -> Mount {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs on {} (needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
