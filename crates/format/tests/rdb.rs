//! RDB header peek and CRC-64 against real files: the Valkey test assets in `tests/data/`, and
//! an RDB saved by the redis-server installed on this machine.

use flashback_format::rdb::{self, crc64};
use flashback_format::Error;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

#[test]
fn crc64_check_value() {
    assert_eq!(crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
    assert_eq!(crc64(0, b""), 0);
}

#[test]
fn peek_scriptbackup_aux_fields() {
    let f = data("scriptbackup.rdb");
    let info = rdb::peek("scriptbackup.rdb", &f).unwrap();
    assert_eq!((info.magic.as_str(), info.version), ("REDIS", 10));
    let keys: Vec<String> = info
        .aux
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "redis-ver",
            "redis-bits",
            "ctime",
            "used-mem",
            "repl-stream-db",
            "repl-id",
            "repl-offset",
            "aof-preamble",
            "lua"
        ]
    );
    assert_eq!(info.aux_str("redis-ver").as_deref(), Some("255.255.255"));
    assert_eq!(info.aux_str("redis-bits").as_deref(), Some("64")); // INT8
    assert_eq!(info.aux_str("ctime").as_deref(), Some("1639381261")); // INT32, bytes 0d f9 b6 61
    assert_eq!(info.aux_str("used-mem").as_deref(), Some("908432"));
    assert_eq!(info.aux_str("repl-stream-db").as_deref(), Some("0"));
    assert_eq!(
        info.aux_str("repl-id").as_deref(),
        Some("349eeafec1f98f3f56277e95fc86bc48b30651a2")
    );
    assert_eq!(
        info.aux_str("lua").as_deref(),
        Some("return redis.call('set', 'foo', 'bar')")
    );
    rdb::verify("scriptbackup.rdb", &f).unwrap();

    // A prefix cut anywhere gives a prefix of the AUX list, never an error or a wrong value.
    for cut in 9..f.len() {
        let p = rdb::peek("scriptbackup.rdb", &f[..cut]).unwrap();
        assert_eq!(p.aux[..], info.aux[..p.aux.len()], "cut {cut}");
    }
}

#[test]
fn peek_and_verify_other_assets() {
    for name in ["zset-ziplist.rdb", "corrupt_empty_keys.rdb"] {
        let f = data(name);
        let info = rdb::peek(name, &f).unwrap();
        assert_eq!((info.magic.as_str(), info.version), ("REDIS", 10), "{name}");
        assert!(info.aux_str("redis-ver").is_some(), "{name}");
        rdb::verify(name, &f).unwrap();
        let mut bad = f.clone();
        bad[f.len() / 2] ^= 0x10;
        let e = rdb::verify(name, &bad).unwrap_err();
        assert!(
            matches!(e, Error::Corrupt { offset, .. } if offset == f.len() as u64 - 8),
            "{e}"
        );
    }
    let old = data("encodings.rdb");
    let info = rdb::peek("encodings.rdb", &old).unwrap();
    assert_eq!((info.version, info.aux.len()), (4, 0));
}

#[test]
fn peek_rejects_what_is_not_an_rdb() {
    for bad in [
        &b""[..],
        b"REDIS",
        b"REDIS00x0rest",
        b"*3\r\n$3\r\nSET\r\n",
        b"FBSEG\r\n\x1a\x01\x00",
    ] {
        let e = rdb::peek("x.rdb", bad).unwrap_err();
        assert!(e.to_string().contains("not an RDB file"), "{e}");
    }
    let mut v = b"VALKEY080".to_vec();
    v.extend_from_slice(b"\xfa\x0avalkey-ver\x059.0.0\xfe\x00");
    let info = rdb::peek("v.rdb", &v).unwrap();
    assert_eq!(
        (
            info.magic.as_str(),
            info.version,
            info.aux_str("valkey-ver").as_deref()
        ),
        ("VALKEY", 80, Some("9.0.0"))
    );
    let e = rdb::peek("v.rdb", b"REDIS0010\xfa\xc7").unwrap_err();
    assert!(matches!(e, Error::Corrupt { offset: 10, .. }), "{e}");
}

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn start_server() -> Option<Server> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("redis-server not installed: skipping");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server { child, port, dir };
    let t0 = Instant::now();
    while cli(port, &["PING"]) != "PONG" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "redis-server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(s)
}

#[test]
fn peek_and_verify_an_rdb_saved_by_redis_server() {
    let Some(s) = start_server() else { return };
    let big: String = "flashback-".repeat(60) + "end";
    assert_eq!(cli(s.port, &["SET", "big", &big]), "OK");
    assert_eq!(cli(s.port, &["SET", "n", "12345"]), "OK");
    assert_eq!(cli(s.port, &["SAVE"]), "OK");
    let version = cli(s.port, &["INFO", "server"]);
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_string();
    let path: PathBuf = s.dir.path().join("dump.rdb");
    let f = std::fs::read(&path).unwrap();

    let info = rdb::peek("dump.rdb", &f[..f.len().min(4096)]).unwrap();
    assert_eq!(info.magic, "REDIS");
    assert!(info.version >= 10, "{info:?}");
    assert_eq!(info.aux_str("redis-ver"), Some(version));
    assert_eq!(info.aux_str("redis-bits").as_deref(), Some("64"));
    rdb::verify("dump.rdb", &f).unwrap();
    // Incremental CRC over chunks, as a streaming reader computes it.
    let crc = f[..f.len() - 8].chunks(1000).fold(0, crc64);
    rdb::check_trailer("dump.rdb", f.len() as u64, crc, &f[f.len() - 9..]).unwrap();

    // The server compressed `big` with LZF; read that value through an AUX field to check
    // the LZF decoder against the real compressor.
    let at = f
        .windows(5)
        .position(|w| w == b"\x00\x03big")
        .expect("key `big` in the dump")
        + 5;
    assert_eq!(f[at], 0xC3, "redis-server stored `big` LZF-compressed");
    let mut synthetic = b"REDIS0010\xfa\x03lzf".to_vec();
    synthetic.extend_from_slice(&f[at..]);
    let info = rdb::peek("synthetic", &synthetic).unwrap();
    assert_eq!(info.aux_str("lzf").as_deref(), Some(big.as_str()));
}
