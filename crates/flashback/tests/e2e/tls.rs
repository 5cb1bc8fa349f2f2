//! TLS everywhere a connection is made: a TLS-only primary (`--port 0 --tls-port P`) with
//! certificates made by `openssl` here (a CA, a server certificate for 127.0.0.1/localhost, an
//! expired one, one for another name, one from another CA, a client certificate). Capture over
//! `rediss://` with both snapshot transfers and a partial resync, restore --at T digest-equal,
//! restore --to rediss:// with a client certificate, --serve over TLS, and each error's line.

use crate::util::*;
use flashback::client::{Client, RedisUrl};
use flashback::net::TlsOptions;
use flashback_format::resp::Frame;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "Zq9tlsSecret";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Certificates in a temp dir: `ca`, `other-ca`, and leaf certificates signed by them.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=Flashback test {ca}"),
                ],
            );
        }
        let pki = Pki { dir };
        pki.leaf("server", "ca", "IP:127.0.0.1,DNS:localhost", "2");
        pki.leaf("expired", "ca", "IP:127.0.0.1,DNS:localhost", "-1");
        pki.leaf("elsewhere", "ca", "DNS:other.example", "2");
        pki.leaf("wrongca", "other-ca", "IP:127.0.0.1,DNS:localhost", "2");
        pki.leaf("client", "ca", "DNS:flashback-agent", "2");
        pki
    }

    fn leaf(&self, name: &str, ca: &str, san: &str, days: &str) {
        let d = self.dir.path();
        std::fs::write(
            d.join(format!("{name}.ext")),
            format!("subjectAltName={san}\n"),
        )
        .unwrap();
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                days,
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}

/// A redis-server listening on a TLS port only.
struct TlsServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl TlsServer {
    fn start(pki: &Pki, cert: &str, auth_clients: &str, extra: &[&str]) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("redis.log");
        let child = Command::new(redis_server_bin())
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--tls-cert-file", &pki.path(&format!("{cert}.pem"))])
            .args(["--tls-key-file", &pki.path(&format!("{cert}.key"))])
            .args(["--tls-ca-cert-file", &pki.path("ca.pem")])
            .args(["--tls-auth-clients", auth_clients, "--requirepass", PW])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args([
                "--enable-debug-command",
                "local",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let s = TlsServer {
            port,
            child,
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&s.log)
            .unwrap_or_default()
            .contains("Ready to accept connections")
        {
            assert!(Instant::now() < deadline, "TLS redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn url(&self, host: &str) -> String {
        format!("rediss://:{PW}@{host}:{}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's own TLS client: Flashback's library client (with the CA and client certificate).
struct TlsConn {
    rt: tokio::runtime::Runtime,
    c: Client,
}

impl TlsConn {
    fn connect(pki: &Pki, s: &TlsServer) -> TlsConn {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = TlsOptions {
            ca: Some(pki.path("ca.pem").into()),
            cert: Some(pki.path("client.pem").into()),
            key: Some(pki.path("client.key").into()),
            insecure: false,
        };
        let url = RedisUrl::parse_with(&s.url("127.0.0.1"), &opts).unwrap();
        let c = rt
            .block_on(Client::connect(&url, Duration::from_secs(10)))
            .unwrap();
        TlsConn { rt, c }
    }

    fn call(&mut self, args: &[&str]) -> Frame {
        self.rt.block_on(self.c.ok(args)).unwrap()
    }

    fn text(&mut self, args: &[&str]) -> String {
        self.call(args).text()
    }

    fn info_field(&mut self, section: &str, field: &str) -> String {
        let text = self.text(&["INFO", section]);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    fn write_batch(&mut self, tag: &str, n: usize) {
        for i in 0..n {
            self.call(&["SET", &format!("{tag}:{i}"), &format!("v{i}-{tag}")]);
            self.call(&["HSET", &format!("h:{tag}"), &format!("f{i}"), "x"]);
        }
    }

    /// Until a replica is online with its ack at the primary's offset.
    fn wait_caught_up(&mut self, agent: &mut Agent) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = self.text(&["INFO", "replication"]);
            let off = parse_info(&info).master_offset;
            if parse_info(&info)
                .slaves
                .iter()
                .any(|(s, o)| s == "online" && *o >= off)
            {
                std::thread::sleep(Duration::from_millis(150));
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not caught up:\n{info}\nagent log:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn digest_of(state: &str) -> String {
    state.split_whitespace().next().unwrap_or("").to_string()
}

#[test]
fn capture_over_tls_both_transfers_partial_resync_and_restore_at_t() {
    let pki = Pki::new();
    for diskless in ["yes", "no"] {
        let primary = TlsServer::start(&pki, "server", "no", &["--repl-diskless-sync", diskless]);
        let mut c = TlsConn::connect(&pki, &primary);
        c.write_batch("before", 50);
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let ca = pki.path("ca.pem");
        let mut agent = Agent::start_url(
            &primary.url("localhost"),
            primary.port,
            &store,
            &["--tls-ca", &ca],
        );
        c.wait_caught_up(&mut agent);
        let log = agent.log_text();
        let want = if diskless == "yes" {
            "(diskless transfer)"
        } else {
            "(disk transfer)"
        };
        assert!(
            log.contains(want) && !log.contains(PW),
            "diskless={diskless}: {log}"
        );
        c.write_batch("stream", 50);
        c.wait_caught_up(&mut agent);
        let at = now_ms();
        let digest_at = c.text(&["DEBUG", "DIGEST"]);
        // Evidence (the polled offset) must cover T before the link dies.
        std::thread::sleep(Duration::from_millis(1500));
        // The link dies; the agent reconnects over TLS and continues from the backlog.
        c.call(&["CLIENT", "KILL", "TYPE", "replica"]);
        c.write_batch("after", 50);
        c.wait_caught_up(&mut agent);
        let partial = c.info_field("stats", "sync_partial_ok");
        assert_eq!(
            partial,
            "1",
            "diskless={diskless}: no partial resync; agent log:\n{}",
            agent.log_text()
        );
        let digest_end = c.text(&["DEBUG", "DIGEST"]);
        agent.stop();
        let restored_at = restore_rdb(&store, &["--at", &at_arg(at)]);
        assert_eq!(
            digest_of(&restored_at),
            format!("digest={digest_at}"),
            "diskless={diskless}"
        );
        let restored_end = restore_rdb(&store, &["--latest"]);
        assert_eq!(
            digest_of(&restored_end),
            format!("digest={digest_end}"),
            "diskless={diskless}"
        );
    }
}

#[test]
fn restore_to_a_tls_target_with_a_client_certificate_and_serve_over_tls() {
    let pki = Pki::new();
    let source = RedisProc::start(&[]);
    let mut sc = source.conn();
    for i in 0..100 {
        sc.call(&["SET", &format!("k{i}"), &format!("v{i}")]);
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &[]);
    agent.wait_caught_up(&source);
    agent.stop();
    let want = sc.call(&["DEBUG", "DIGEST"]).text();
    let store_s = store.display().to_string();

    // A target that demands a client certificate: without one, the line says what to pass.
    let target = TlsServer::start(&pki, "server", "yes", &[]);
    let base = ["restore", "--store", &store_s, "--latest", "--to"];
    let ca = pki.path("ca.pem");
    let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    args.extend([target.url("127.0.0.1"), "--tls-ca".into(), ca.clone()]);
    let out = run_flashback(&args, Duration::from_secs(60));
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stderr.contains("requires a client certificate") && out.stderr.contains("--tls-cert"),
        "{}",
        out.all()
    );
    assert!(!out.all().contains(PW), "{}", out.all());
    args.extend([
        "--tls-cert".into(),
        pki.path("client.pem"),
        "--tls-key".into(),
        pki.path("client.key"),
    ]);
    let out = run_flashback(&args, Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("100 keys written") && out.stdout.contains("100 equal"),
        "{}",
        out.all()
    );
    let mut tc = TlsConn::connect(&pki, &target);
    assert_eq!(tc.text(&["DEBUG", "DIGEST"]), want);

    // --serve with the server certificate: TLS only on the port, a rediss:// URL printed.
    let port = free_port();
    let out = run_flashback(
        &[
            "restore",
            "--store",
            &store_s,
            "--latest",
            "--serve",
            &port.to_string(),
            "--tls-cert",
            &pki.path("server.pem"),
            "--tls-key",
            &pki.path("server.key"),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains(&format!("rediss://127.0.0.1:{port}")),
        "{}",
        out.all()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = RedisUrl::parse_with(
        &format!("rediss://127.0.0.1:{port}"),
        &TlsOptions {
            ca: Some(ca.clone().into()),
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = rt
        .block_on(Client::connect(&url, Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        rt.block_on(c.ok(&["DEBUG", "DIGEST"])).unwrap().text(),
        want
    );
    // Plain text to it is refused, with the hint to use rediss://.
    let plain = RedisUrl::local(port);
    let e = rt
        .block_on(async {
            let mut p = Client::connect(&plain, Duration::from_secs(5)).await?;
            p.call(&["PING"]).await
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("use rediss://"), "{e}");
    let _ = rt.block_on(c.call(&["SHUTDOWN", "NOSAVE"]));
}

/// `flashback capture --source URL <extra>` must fail at once with `want` in its last line, and
/// never show the password.
fn capture_fails(url: &str, extra: &[&str], want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let mut args = vec!["capture", "--source", url, "--store", &store];
    args.extend(extra);
    let out = run_flashback(&args, Duration::from_secs(60));
    assert_ne!(out.code, Some(0), "{}", out.all());
    let last = out.stderr.lines().last().unwrap_or("").to_string();
    assert!(
        last.contains(want),
        "want {want:?} in the last line:\n{}",
        out.all()
    );
    assert!(!out.all().contains(PW), "password shown:\n{}", out.all());
}

#[test]
fn each_tls_mistake_is_one_clear_line() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let good = TlsServer::start(&pki, "server", "no", &[]);
    // No --tls-ca: our CA is not in the system store.
    capture_fails(
        &good.url("127.0.0.1"),
        &[],
        "certificate not signed by a trusted CA: pass --tls-ca FILE",
    );
    // A certificate from another CA.
    let wrong = TlsServer::start(&pki, "wrongca", "no", &[]);
    capture_fails(
        &wrong.url("127.0.0.1"),
        &["--tls-ca", &ca],
        "certificate not signed by a trusted CA",
    );
    // Expired.
    let expired = TlsServer::start(&pki, "expired", "no", &[]);
    capture_fails(
        &expired.url("127.0.0.1"),
        &["--tls-ca", &ca],
        "the server's certificate has expired",
    );
    // Issued for another name.
    let elsewhere = TlsServer::start(&pki, "elsewhere", "no", &[]);
    capture_fails(
        &elsewhere.url("127.0.0.1"),
        &["--tls-ca", &ca],
        "not valid for '127.0.0.1' (it names other.example)",
    );
    // Plain text to the TLS port, and TLS to a plain port.
    capture_fails(
        &format!("redis://:{PW}@127.0.0.1:{}", good.port),
        &[],
        "is it a TLS port? use rediss://",
    );
    let plain = RedisProc::start(&["--requirepass", PW]);
    capture_fails(
        &format!("rediss://:{PW}@127.0.0.1:{}", plain.port),
        &["--tls-ca", &ca],
        "is it a plain port? use redis://",
    );
    // Unreadable or wrong files, and options with a plain URL.
    capture_fails(
        &good.url("127.0.0.1"),
        &["--tls-ca", "/nonexistent/ca.pem"],
        "--tls-ca /nonexistent/ca.pem: cannot read it",
    );
    capture_fails(
        &good.url("127.0.0.1"),
        &["--tls-ca", &pki.path("ca.key")],
        "holds no certificate",
    );
    capture_fails(
        &good.url("127.0.0.1"),
        &["--tls-ca", &ca, "--tls-cert", &pki.path("client.pem")],
        "--tls-cert and --tls-key go together",
    );
    capture_fails(
        &format!("redis://:{PW}@127.0.0.1:{}", plain.port),
        &["--tls-ca", &ca],
        "write the URL as rediss://",
    );
    // A client certificate the server demands.
    let strict = TlsServer::start(&pki, "server", "yes", &[]);
    capture_fails(
        &strict.url("127.0.0.1"),
        &["--tls-ca", &ca],
        "requires a client certificate",
    );
    // --tls-insecure connects (to the expired one here) and says so loudly.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start_url(
        &expired.url("127.0.0.1"),
        expired.port,
        &store,
        &["--tls-insecure"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.log_text().contains("snapshot stored") {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.stop();
    let log = agent.log_text();
    assert!(
        log.contains("WARN") && log.contains("TLS certificate verification is OFF"),
        "{log}"
    );
    assert!(!log.contains(PW), "{log}");
}
