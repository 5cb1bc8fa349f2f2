//! Encryption at rest end to end: capture a real redis-server into a local store with a key
//! file, then check that the store holds only encrypted objects (no plaintext value, no RDB
//! header), that the spool the agent wrote through is gone, that restore with the key is
//! digest-equal at two instants (also after a compaction, which copies a base create-only), and
//! that restore without the key, with another key, or a plain capture into the same store all
//! fail with a message that says which key to pass.

use crate::util::*;
use flashback::store::crypt::{EncryptionKey, MAGIC};
use rand::distributions::{Alphanumeric, DistString};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_key(path: &Path) -> String {
    let text = hex(&rand::random::<[u8; 32]>());
    std::fs::write(path, format!("{text}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    text
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `flashback restore --store <store> --at <at> --rdb <file> <extra…>`: the restored state, or
/// the whole output when it fails. Also returns the RDB's bytes.
fn restore(store: &Path, at: u64, extra: &[&std::ffi::OsStr]) -> Result<(String, Vec<u8>), String> {
    let dir = tempfile::tempdir().unwrap();
    let rdb = dir.path().join("restored.rdb");
    let mut args: Vec<OsString> = vec![
        "restore".into(),
        "--store".into(),
        store.into(),
        "--at".into(),
        at_arg(at).into(),
        "--rdb".into(),
        rdb.clone().into(),
    ];
    args.extend(extra.iter().map(|a| a.into()));
    let out = run_flashback(&args, Duration::from_secs(300));
    if out.code != Some(0) {
        return Err(out.all());
    }
    let server = RedisProc::start_with_rdb(&rdb, &[]);
    Ok((state(&mut server.conn()), std::fs::read(&rdb).unwrap()))
}

fn writes(conn: &mut Conn, phase: &str, canary: &str) {
    let filler = format!("{phase}-{}", "x".repeat(500));
    let cmds: Vec<Vec<String>> = (0..400)
        .map(|i| vec!["SET".into(), format!("{phase}:k{i}"), filler.clone()])
        .collect();
    for r in conn.pipeline(&cmds) {
        assert!(!r.is_error(), "{r:?}");
    }
    conn.call(&["SET", &format!("canary:{phase}"), canary]);
    conn.call(&["HSET", "profile", phase, canary]);
    conn.call(&["MULTI"]);
    conn.call(&["INCR", "counter"]);
    conn.call(&["RPUSH", "events", phase]);
    conn.call(&["EXEC"]);
    conn.call(&["DEL", &format!("{phase}:k7")]);
    conn.call(&["PEXPIRE", &format!("{phase}:k8"), "86400000"]);
}

#[test]
fn encrypted_local_store_end_to_end() {
    let source = RedisProc::start(&["--repl-ping-replica-period", "3600"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let spool = dir.path().join("spool");
    let key = dir.path().join("store.key");
    let key_text = write_key(&key);
    let other_key = dir.path().join("other.key");
    write_key(&other_key);
    let fp = EncryptionKey::from_file(&key).unwrap().fingerprint();
    let other_fp = EncryptionKey::from_file(&other_key).unwrap().fingerprint();
    let with_key = [OsString::from("--encryption-key-file"), key.clone().into()];
    let with_key: Vec<&std::ffi::OsStr> = with_key.iter().map(|s| s.as_os_str()).collect();

    // Random letters: neither LZF (in the base) nor anything else shortens them, so a plain
    // store would hold them verbatim.
    let canaries: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "CANARY{i}-{}",
                Alphanumeric.sample_string(&mut rand::thread_rng(), 300)
            )
        })
        .collect();
    let mut conn = source.conn();
    writes(&mut conn, "base", &canaries[0]);

    let mut agent = Agent::start(
        source.port,
        &store,
        &[
            "--encryption-key-file",
            key.to_str().unwrap(),
            "--spool",
            spool.to_str().unwrap(),
            "--upload-interval",
            "200ms",
        ],
    );
    agent.wait_online(&source);
    writes(&mut conn, "a", &canaries[1]);
    agent.wait_caught_up(&source);
    let t1 = now_ms();
    let state1 = state(&mut conn);
    std::thread::sleep(Duration::from_millis(5));
    writes(&mut conn, "b", &canaries[2]);
    conn.call(&["DEL", "canary:a"]);
    agent.wait_caught_up(&source);
    let t2 = now_ms();
    let state2 = state(&mut conn);
    std::thread::sleep(Duration::from_millis(5));
    agent.stop();
    assert!(
        !agent.log_text().contains(&key_text),
        "the key is in the agent's log"
    );

    // The store: every object encrypted, nothing readable in it.
    let stored = files_under(&store);
    assert!(
        stored.iter().any(|p| p.to_string_lossy().ends_with(".rdb"))
            && stored.iter().any(|p| p.to_string_lossy().ends_with(".seg")),
        "no base or no segment in the store: {stored:?}\nagent log:\n{}",
        agent.log_text()
    );
    for p in &stored {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            bytes.starts_with(&MAGIC),
            "{} is not an encrypted object",
            p.display()
        );
        for c in &canaries {
            assert!(
                !contains(&bytes, c.as_bytes()),
                "{} holds a value in plaintext",
                p.display()
            );
        }
        assert!(
            !contains(&bytes, b"REDIS00"),
            "{} holds an RDB header",
            p.display()
        );
    }
    // The spool held plaintext only until each object was uploaded.
    let left: Vec<PathBuf> = files_under(&spool)
        .into_iter()
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".rdb")
                || n.ends_with(".seg")
                || n.ends_with(".tail")
                || n.ends_with(".meta")
        })
        .collect();
    assert!(
        left.is_empty(),
        "still in the spool after a clean stop: {left:?}"
    );

    // Restore with the key: exact at both instants.
    let (got1, _) = restore(&store, t1, &with_key).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got1, state1, "restore at t1");
    let (got2, rdb) = restore(&store, t2, &with_key).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got2, state2, "restore at t2");
    // The restored (plaintext) RDB holds the first canary verbatim: the store check above
    // could have failed.
    assert!(contains(&rdb, canaries[0].as_bytes()));

    // The key from the environment instead of a file.
    let rdb_dir = tempfile::tempdir().unwrap();
    let out = Command::new(flashback_bin())
        .args(["restore", "--store"])
        .arg(&store)
        .args(["--at", &at_arg(t2), "--rdb"])
        .arg(rdb_dir.path().join("env.rdb"))
        .env("FLASHBACK_ENCRYPTION_KEY", &key_text)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore with FLASHBACK_ENCRYPTION_KEY: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = RedisProc::start_with_rdb(&rdb_dir.path().join("env.rdb"), &[]);
    assert_eq!(state(&mut server.conn()), state2);

    // Without the key, or with another one: refused, saying what to pass.
    let e = restore(&store, t2, &[]).unwrap_err();
    assert!(e.contains("exit Some(1)"), "{e}");
    assert!(
        e.contains("this object is encrypted")
            && e.contains(&fp)
            && e.contains("--encryption-key-file"),
        "{e}"
    );
    let other = [
        OsString::from("--encryption-key-file"),
        other_key.clone().into(),
    ];
    let other: Vec<&std::ffi::OsStr> = other.iter().map(|s| s.as_os_str()).collect();
    let e = restore(&store, t2, &other).unwrap_err();
    assert!(
        e.contains("encrypted with another key") && e.contains(&fp) && e.contains(&other_fp),
        "{e}"
    );
    // A key file that is no key: a usage error before anything runs.
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "0123456789abcdef0123456789abcdef\n").unwrap();
    let bad = [OsString::from("--encryption-key-file"), bad.into()];
    let bad: Vec<&std::ffi::OsStr> = bad.iter().map(|s| s.as_os_str()).collect();
    let e = restore(&store, t2, &bad).unwrap_err();
    assert!(
        e.contains("exit Some(2)") && e.contains("64 hex digits"),
        "{e}"
    );

    // A capture without the key into this store would mix plain objects in: refused.
    let out = run_flashback(
        &[
            "capture".as_ref(),
            "--source".as_ref(),
            source.url().as_str().as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("this object is encrypted"),
        "{}",
        out.all()
    );

    // Compaction stores its base with a create-only copy from a temporary key; through the
    // encrypted store that copy re-encrypts for the final name.
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "compact".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
        "--force".as_ref(),
    ];
    args.extend(&with_key);
    let out = run_flashback(&args, Duration::from_secs(300));
    assert_eq!(out.code, Some(0), "{}", out.all());
    let bases: Vec<PathBuf> = files_under(&store)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".rdb"))
        .collect();
    assert_eq!(bases.len(), 2, "{bases:?}\n{}", out.all());
    for p in files_under(&store) {
        let bytes = std::fs::read(&p).unwrap();
        // The refused plain capture took its lock file (holding its pid) before reading the
        // store.
        if p.ends_with("agent.lock") && bytes.iter().all(u8::is_ascii_digit) {
            continue;
        }
        assert!(
            bytes.starts_with(&MAGIC),
            "{} is not an encrypted object after compaction",
            p.display()
        );
    }
    let (got2, _) = restore(&store, t2, &with_key).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got2, state2, "restore at t2 after compaction");
}

/// The S3 test server's binary, when installed (`scripts/install-s3-test-server.sh`); this
/// test is optional, `tests/s3.rs` is where a missing server is a failure.
fn moto_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLASHBACK_TEST_MOTO") {
        let p = PathBuf::from(p);
        // A variable naming no file is as missing as no variable.
        return p.is_file().then_some(p);
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/flashback-moto/bin/moto_server");
    p.is_file().then_some(p)
}

/// moto on a free port with `bucket` created; killed on drop.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto(bin: &Path, bucket: &str) -> Moto {
    use std::io::{Read, Write};
    for _ in 0..5 {
        let port = free_port();
        let mut child = die_with_parent(&mut Command::new(bin))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
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

/// The same through `s3://`: capture with a key (spooled, uploaded encrypted), every stored
/// object encrypted, restore exact with the key and refused without it.
#[test]
#[allow(unsafe_code)] // raw signals to a child process (libc), as the test needs them
fn encrypted_s3_store() {
    let Some(bin) = moto_bin() else {
        let msg = match std::env::var("FLASHBACK_TEST_MOTO") {
            Ok(p) => format!("no S3 test server: FLASHBACK_TEST_MOTO={p} is not a file (run scripts/install-s3-test-server.sh and export what it prints)"),
            Err(_) => "no S3 test server (run scripts/install-s3-test-server.sh and export what it prints, or set FLASHBACK_TEST_MOTO)".to_string(),
        };
        if matches!(std::env::var("FLASHBACK_REQUIRE_TEST_SERVERS").as_deref(), Ok(v) if !v.is_empty() && v != "0")
        {
            panic!("{msg} (FLASHBACK_REQUIRE_TEST_SERVERS is set, so this is a failure)");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg}\n");
        return;
    };
    let moto = start_moto(&bin, "fb-enc");
    // Credentials for every flashback process this test starts (moto accepts any): given to
    // each child, never set on this process, whose other tests read credentials of their own.
    let creds = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let store = "s3://fb-enc/backups";
    let source = RedisProc::start(&["--repl-ping-replica-period", "3600"]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("store.key");
    write_key(&key);
    let canary = format!(
        "S3CANARY-{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 300)
    );
    let mut conn = source.conn();
    writes(&mut conn, "base", &canary);

    // Spawned here: `Agent` always passes a directory as --store.
    let log = dir.path().join("agent.log");
    let mut agent = die_with_parent(&mut Command::new(flashback_bin()))
        .envs(creds)
        .args(["capture", "--source", &source.url(), "--store", store])
        .args(["--s3-endpoint", &moto.endpoint, "--encryption-key-file"])
        .arg(&key)
        .arg("--spool")
        .arg(dir.path().join("spool"))
        .args(["--upload-interval", "200ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Until the agent has acknowledged everything the primary sent so far.
    let caught_up = |agent: &mut std::process::Child| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let info = parse_info(&source.info_replication());
            if info
                .slaves
                .iter()
                .any(|(s, off)| s == "online" && *off >= info.master_offset)
            {
                return;
            }
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                agent.try_wait().unwrap().is_none(),
                "the agent exited:\n{log}"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not catch up:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    caught_up(&mut agent);
    writes(&mut conn, "a", "plain");
    caught_up(&mut agent);
    let t = now_ms();
    let expected = state(&mut conn);
    std::thread::sleep(Duration::from_millis(5));
    writes(&mut conn, "b", "later");
    caught_up(&mut agent);
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(agent.id() as i32, libc::SIGTERM);
    }
    let status = agent.wait().unwrap();
    assert!(
        status.success(),
        "capture exited with {status}:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The raw objects, read past the encryption.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&moto.endpoint)
        .with_allow_http(true)
        .with_bucket_name("fb-enc")
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let objects: Vec<Vec<u8>> = rt.block_on(async {
        use futures::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let metas: Vec<object_store::ObjectMeta> = raw
            .list(Some(&object_store::path::Path::from("backups")))
            .try_collect()
            .await
            .unwrap();
        let mut out = Vec::new();
        for m in metas {
            out.push(
                raw.get(&m.location)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .to_vec(),
            );
        }
        out
    });
    assert!(objects.len() >= 3, "{} objects uploaded", objects.len());
    for o in &objects {
        assert!(o.starts_with(&MAGIC) && !contains(o, canary.as_bytes()));
    }

    let s3 = |extra: &[&str]| -> Output {
        let mut args = vec!["restore", "--store", store, "--s3-endpoint", &moto.endpoint];
        args.extend(extra);
        run_flashback_env(&args, &creds, Duration::from_secs(300))
    };
    let rdb = dir.path().join("restored.rdb");
    let at = at_arg(t);
    let out = s3(&[
        "--at",
        &at,
        "--rdb",
        rdb.to_str().unwrap(),
        "--encryption-key-file",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let server = RedisProc::start_with_rdb(&rdb, &[]);
    assert_eq!(state(&mut server.conn()), expected);
    let out = s3(&[
        "--at",
        &at,
        "--rdb",
        dir.path().join("no.rdb").to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("this object is encrypted"),
        "{}",
        out.all()
    );
}
