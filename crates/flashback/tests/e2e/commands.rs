//! Key positions (`flashback::commands`) against real servers: the table parsed from each
//! server's own `COMMAND` reply, the builtin table and the server's `COMMAND GETKEYS` must name
//! the same keys for every sample command; and capture stores the reply with the generation
//! (`commands.resp`), skipping it with a warning when the ACL forbids COMMAND.
//!
//! Servers: `redis-server` 7.0 on PATH always; Valkey 9.1, Redis 8.2 and Valkey 8.1 from
//! `FLASHBACK_VALKEY9_SERVER`, `FLASHBACK_REDIS8_SERVER`, `FLASHBACK_VALKEY8_SERVER` (SKIPPED
//! when unset, a failure under `FLASHBACK_REQUIRE_TEST_SERVERS=1`).

use crate::util;

use crate::util::{Agent, Conn, RedisProc, Reply};
use bytes::Bytes;
use flashback::commands::CommandTable;
use flashback::store::{commands as stored, layout, Access, Store, StoreConfig};
use flashback_format::resp::Frame;
use std::time::Duration;

/// The test client's reply as the library's frame type (the client is the harness's own).
fn frame(r: &Reply) -> Frame {
    match r {
        Reply::Status(s) => Frame::Simple(Bytes::copy_from_slice(s)),
        Reply::Error(s) => Frame::Error(Bytes::copy_from_slice(s)),
        Reply::Int(i) => Frame::Integer(*i),
        Reply::Bulk(None) | Reply::Array(None) => Frame::Null,
        Reply::Bulk(Some(b)) => Frame::Bulk(Bytes::copy_from_slice(b)),
        Reply::Array(Some(items)) => Frame::Array(items.iter().map(frame).collect()),
    }
}

/// Write commands of every kind, the movable-key ones above all. `_` stands for an empty
/// argument (MIGRATE's key when KEYS follows).
const SAMPLES: &[&str] = &[
    "SET k v EX 10 GET",
    "SETEX k 10 v",
    "GETDEL k",
    "GETEX k PERSIST",
    "APPEND k v",
    "INCRBYFLOAT k 1.5",
    "MSET a 1 b 2 c 3",
    "MSETNX a 1 b 2",
    "SETBIT k 7 1",
    "BITFIELD k SET u8 0 1",
    "BITOP OR d a b c",
    "HSET h f v g w",
    "HDEL h f",
    "HINCRBY h f 1",
    "LPUSH l a b",
    "LINSERT l BEFORE a z",
    "LMOVE a b LEFT RIGHT",
    "BLMOVE a b LEFT RIGHT 0",
    "RPOPLPUSH a b",
    "BLPOP a b c 0",
    "LMPOP 2 a b LEFT COUNT 1",
    "BLMPOP 0 3 a b c RIGHT",
    "SADD s a",
    "SMOVE a b m",
    "SINTERSTORE d a b",
    "SUNIONSTORE d a b c",
    "SINTERCARD 2 a b LIMIT 5",
    "ZADD z 1 a",
    "ZUNIONSTORE d 2 a b WEIGHTS 1 2",
    "ZINTERSTORE d 3 a b c AGGREGATE MAX",
    "ZDIFFSTORE d 2 a b",
    "ZRANGESTORE d s 0 -1",
    "ZMPOP 2 a b MIN",
    "BZMPOP 0 1 a MAX",
    "BZPOPMIN a b 0",
    "XADD s * f v",
    "XTRIM s MAXLEN 10",
    "XGROUP CREATE s g $ MKSTREAM",
    "XGROUP SETID s g 0",
    "XREADGROUP GROUP g c COUNT 1 STREAMS s1 s2 > >",
    "XCLAIM s g c 0 1-1",
    "GEOADD g 1 2 m",
    "GEORADIUS g 0 0 10 km STORE d",
    "GEORADIUS g 0 0 10 km STOREDIST d",
    "GEORADIUSBYMEMBER g m 10 km STORE d",
    "GEOSEARCHSTORE d g FROMMEMBER m BYRADIUS 1 km",
    "PFADD p a",
    "PFMERGE d a b",
    "PFCOUNT a b",
    "DEL a b c",
    "UNLINK a",
    "RENAME a b",
    "RENAMENX a b",
    "COPY a b DB 1 REPLACE",
    "MOVE a 1",
    "EXPIRE a 10 NX",
    "PEXPIREAT a 99999999999",
    "PERSIST a",
    "RESTORE a 0 payload REPLACE",
    "SORT a BY w_* LIMIT 0 5 GET # STORE d",
    "SORT a STORE d1 STORE d2",
    "SORT a",
    "MIGRATE h 1 k 0 5000 COPY",
    "MIGRATE h 1 _ 0 5000 REPLACE AUTH pw KEYS a b",
    "MIGRATE h 1 _ 0 5000 AUTH2 u pw KEYS a",
    "EVAL s 2 a b x",
    "EVALSHA 0000000000000000000000000000000000000000 1 a",
    "FCALL f 2 a b x",
    "FCALL f 0",
    "FLUSHALL ASYNC",
    "SWAPDB 0 1",
    "PUBLISH ch m",
    "SPUBLISH ch m",
    "SELECT 1",
    // Redis 7.4+ / Valkey 9 only (skipped on servers that lack them).
    "HEXPIRE h 10 FIELDS 1 f",
    "HPERSIST h FIELDS 1 f",
    "HSETEX h EX 10 FIELDS 1 f v",
    "HGETEX h PERSIST FIELDS 1 f",
    "HGETDEL h FIELDS 1 f",
    // Redis 8.2 / Valkey 9 only.
    "XDELEX s IDS 1 1-1",
    "DELIFEQ k v",
    "MSETEX 2 a 1 b 2 EX 10",
    // Redis 8's vector sets are a module: only its COMMAND reply knows them.
    "VADD v VALUES 2 1 2 m",
];

fn split(s: &str) -> Vec<Vec<u8>> {
    s.split(' ')
        .map(|a| {
            if a == "_" {
                vec![]
            } else {
                a.as_bytes().to_vec()
            }
        })
        .collect()
}

/// `COMMAND GETKEYS argv…`: the key names the server itself finds (none for an error such as
/// "The command has no key arguments").
fn getkeys(c: &mut Conn, argv: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut args: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
    args.extend(argv.iter().map(|a| a.as_slice()));
    match c.call(&args) {
        Reply::Array(Some(items)) => items.iter().map(|i| i.bytes().to_vec()).collect(),
        _ => Vec::new(),
    }
}

fn required() -> bool {
    matches!(std::env::var("FLASHBACK_REQUIRE_TEST_SERVERS").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

/// The binary named by `var`, or None after saying SKIPPED (a failure when required).
pub(crate) fn server_from(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(p) if std::path::Path::new(&p).is_file() => Some(p),
        _ => {
            let msg = format!("SKIPPED: ${var} names no server binary; run scripts/install-test-servers.sh (and export what it prints)");
            assert!(!required(), "{msg} (FLASHBACK_REQUIRE_TEST_SERVERS is set)");
            eprintln!("\n!!!!!!!! {msg}\n");
            None
        }
    }
}

/// Every sample: the reply's table, the builtin and GETKEYS agree. Returns how many samples
/// the server knew, so each test can insist the comparison happened.
fn compare_with_server(bin: &str) -> usize {
    let server = RedisProc::start_bin(bin, &[]);
    let mut c = server.conn();
    let reply = frame(&c.call(&["COMMAND"]));
    let parsed =
        CommandTable::from_command_reply(&reply).expect("the server's COMMAND reply parses");
    let builtin = CommandTable::builtin();
    assert!(parsed.len() > 200, "{} commands parsed", parsed.len());
    let mut known = 0;
    for s in SAMPLES {
        let argv = split(s);
        let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
        let on_server = parsed.get(&argv[0]).is_some_and(|c| c.from_server);
        if !on_server {
            continue;
        }
        known += 1;
        let mine = parsed.key_positions(&refs);
        let names: Vec<Vec<u8>> = mine.iter().map(|&i| argv[i].clone()).collect();
        assert_eq!(
            names,
            getkeys(&mut c, &argv),
            "{bin}: {s}: positions {mine:?} from the COMMAND reply disagree with COMMAND GETKEYS"
        );
        if argv[0] == b"VADD" {
            assert!(builtin.key_positions(&refs).is_empty(), "a module command");
            continue;
        }
        assert_eq!(
            builtin.key_positions(&refs),
            mine,
            "{bin}: {s}: the builtin table disagrees with the server's COMMAND reply"
        );
        let name = String::from_utf8_lossy(&argv[0]).to_lowercase();
        let sub = (name == "xgroup").then(|| String::from_utf8_lossy(&argv[1]).to_lowercase());
        let full = match &sub {
            Some(sub) => format!("{name}|{sub}"),
            None => name.clone(),
        };
        assert_eq!(
            builtin.is_write(full.as_bytes()),
            parsed.is_write(full.as_bytes()),
            "{bin}: {full}: write flag"
        );
    }
    known
}

#[test]
fn redis7_0_reply_builtin_and_getkeys_agree() {
    let n = compare_with_server(&util::redis_server_bin());
    assert!(n >= 70, "only {n} samples known to redis 7.0");
}

#[test]
fn valkey9_1_reply_builtin_and_getkeys_agree() {
    if let Some(bin) = server_from("FLASHBACK_VALKEY9_SERVER") {
        assert!(compare_with_server(&bin) >= 80);
    }
}

#[test]
fn redis8_2_reply_builtin_and_getkeys_agree() {
    if let Some(bin) = server_from("FLASHBACK_REDIS8_SERVER") {
        assert!(compare_with_server(&bin) >= 80);
    }
}

#[test]
fn valkey8_1_reply_builtin_and_getkeys_agree() {
    if let Some(bin) = server_from("FLASHBACK_VALKEY8_SERVER") {
        assert!(compare_with_server(&bin) >= 70);
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The one generation's id in a store with source `src`.
fn only_generation(store: &std::path::Path) -> String {
    let dirs = util::generation_dirs(store);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn capture_stores_the_command_reply_and_verify_checks_it() {
    let source = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--name", "src"]);
    agent.wait_online(&source);
    agent.stop();
    let gen = only_generation(&store);
    let key = layout::commands_key("src", &gen);
    let path = store.join(key.as_ref());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"FBCMDTAB");
    let s = Store::open(store.to_str().unwrap(), &StoreConfig::new(Access::Read)).unwrap();
    let table = rt().block_on(stored::command_table(&s, "src", &gen));
    assert!(table.get(b"zunionstore").unwrap().from_server);
    assert_eq!(
        table.key_positions(&[b"ZUNIONSTORE", b"d", b"2", b"a", b"b"]),
        [1, 3, 4]
    );

    let ok = util::run_flashback(
        &["verify", "--no-drill", "--store", store.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(ok.code, Some(0), "{}", ok.all());
    // A flipped byte: verify names the object; history falls back to the builtin table.
    let mut bad = bytes.clone();
    bad[bytes.len() / 2] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    let out = util::run_flashback(
        &["verify", "--no-drill", "--store", store.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.all().contains("commands.resp"), "{}", out.all());
    let table = rt().block_on(stored::command_table(&s, "src", &gen));
    assert!(!table.get(b"zunionstore").unwrap().from_server);
}

#[test]
fn an_acl_without_command_skips_the_reply_with_a_warning() {
    let source = RedisProc::start(&[]);
    let mut c = source.conn();
    let r = c.call(&[
        "ACL",
        "SETUSER",
        "repl",
        "on",
        ">replpw",
        "+psync",
        "+replconf",
        "+ping",
        "+info",
    ]);
    assert!(!r.is_error(), "{r:?}");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = format!("redis://repl:replpw@127.0.0.1:{}", source.port);
    let mut agent = Agent::start_url(&url, source.port, &store, &["--name", "src"]);
    agent.wait_online(&source);
    c.call(&["SET", "k", "v"]);
    agent.wait_caught_up(&source);
    agent.stop();
    let log = agent.log_text();
    assert!(
        log.contains("COMMAND refused") && log.contains("+command"),
        "{log}"
    );
    let gen = only_generation(&store);
    assert!(!store
        .join(layout::commands_key("src", &gen).as_ref())
        .exists());
    let s = Store::open(store.to_str().unwrap(), &StoreConfig::new(Access::Read)).unwrap();
    let table = rt().block_on(stored::command_table(&s, "src", &gen));
    assert_eq!(table.key_positions(&[b"SET", b"k", b"v"]), [1]);
}
