//! The RDB reader (`flashback_rdb`) against every server kind's own SAVE: each server writes
//! every type in its small and big encodings (strings int/embstr/raw/LZF, lists listpack,
//! quicklist and plain nodes, sets intset/listpack/hashtable, zsets listpack/skiplist, hashes
//! listpack/hashtable, hash field TTLs where the server has them, streams with consumer groups,
//! pending entries and a deleted entry, a function library, keys with TTLs, several dbs); the
//! reader's view of the file must equal what the server reports: DBSIZE per db, TYPE, element
//! counts, PEXPIRETIME, HPEXPIRETIME, and every value (GET, LRANGE, SMEMBERS, ZRANGE
//! WITHSCORES, HGETALL, XRANGE, XINFO GROUPS, XPENDING, FUNCTION LIST WITHCODE).
//! Then `filter_rdb` drops some keys, and the written file, loaded by a fresh server of the
//! same kind, holds exactly the kept keys with the same DEBUG DIGEST-VALUE each; a keep-all copy
//! loads to the same DEBUG DIGEST.
//!
//! | test          | binary                                                              |
//! |---------------|---------------------------------------------------------------------|
//! | `redis7_0`    | `redis-server` on PATH (7.0, RDB 10)                                |
//! | `valkey8_1`   | `FLASHBACK_VALKEY8_SERVER` (RDB 11)                                 |
//! | `redis8_2`    | `FLASHBACK_REDIS8_SERVER` (RDB 12, field TTLs, vector sets: module) |
//! | `valkey9_1`   | `FLASHBACK_VALKEY9_SERVER` (`VALKEY080`, HASH_2 field TTLs)         |
//!
//! A missing binary prints SKIPPED, unless FLASHBACK_REQUIRE_TEST_SERVERS=1 (then it fails),
//! as in tests/e2e/servers.rs.

use crate::util;

use crate::util::{Conn, RedisProc, Reply};
use flashback_rdb::{
    filter_rdb, Item, Kind, RdbReader, RdbWriter, StreamGroup, StreamId, StreamMeta, Visitor,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

struct ServerKind {
    name: &'static str,
    env: Option<&'static str>,
    version_prefix: &'static str,
    magic: &'static str,
    field_ttl: bool,
    set_listpack: bool,
    vector_sets: bool,
}

const KINDS: [ServerKind; 4] = [
    ServerKind {
        name: "redis 7.0",
        env: None,
        version_prefix: "Redis server v=7.0.",
        magic: "REDIS0010",
        field_ttl: false,
        set_listpack: false,
        vector_sets: false,
    },
    ServerKind {
        name: "valkey 8.1",
        env: Some("FLASHBACK_VALKEY8_SERVER"),
        version_prefix: "Valkey server v=8.",
        magic: "REDIS0011",
        field_ttl: false,
        set_listpack: true,
        vector_sets: false,
    },
    ServerKind {
        name: "redis 8.2",
        env: Some("FLASHBACK_REDIS8_SERVER"),
        version_prefix: "Redis server v=8.",
        magic: "REDIS0012",
        field_ttl: true,
        set_listpack: true,
        vector_sets: true,
    },
    ServerKind {
        name: "valkey 9.1",
        env: Some("FLASHBACK_VALKEY9_SERVER"),
        version_prefix: "Valkey server v=9.",
        magic: "VALKEY080",
        field_ttl: true,
        set_listpack: true,
        vector_sets: false,
    },
];

fn required() -> bool {
    matches!(std::env::var("FLASHBACK_REQUIRE_TEST_SERVERS").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

/// The binary of `k`, or None after saying why (a failure under FLASHBACK_REQUIRE_TEST_SERVERS).
fn locate(k: &ServerKind) -> Option<PathBuf> {
    let path: Option<PathBuf> = match k.env {
        None => Some(PathBuf::from("redis-server")),
        Some(var) => std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    let version = path.as_ref().and_then(|p| {
        let out = std::process::Command::new(p)
            .arg("--version")
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).to_string())
    });
    match (path, version) {
        (Some(p), Some(v)) if v.starts_with(k.version_prefix) => Some(p),
        (p, v) => {
            let msg = format!("SKIPPED: {}: no working binary ({p:?} says {v:?}); source /tmp/inst-srv.env or run scripts/install-test-servers.sh", k.name);
            if required() {
                panic!("{msg} (FLASHBACK_REQUIRE_TEST_SERVERS is set, so this is a failure)");
            }
            eprintln!("\n!!!!!!!! {msg}\n");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the reader sees

type StreamEntries = Vec<(StreamId, Vec<(Vec<u8>, Vec<u8>)>)>;

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    /// Sorted by (score, member), as ZRANGE returns them.
    ZSet(Vec<(Vec<u8>, f64)>),
    /// field -> (value, field expiry)
    Hash(BTreeMap<Vec<u8>, (Vec<u8>, Option<i64>)>),
    Stream {
        entries: StreamEntries,
        meta: Option<StreamMeta>,
        groups: Vec<StreamGroup>,
    },
    Module(String),
    None,
}

struct Collect(Value);

impl Visitor for Collect {
    fn string(&mut self, v: &[u8]) {
        self.0 = Value::Str(v.to_vec());
    }
    fn list_item(&mut self, v: &[u8]) {
        match &mut self.0 {
            Value::List(l) => l.push(v.to_vec()),
            other => *other = Value::List(vec![v.to_vec()]),
        }
    }
    fn set_member(&mut self, m: &[u8]) {
        match &mut self.0 {
            Value::Set(s) => assert!(s.insert(m.to_vec()), "duplicate set member"),
            other => *other = Value::Set([m.to_vec()].into()),
        }
    }
    fn zset_member(&mut self, m: &[u8], score: f64) {
        match &mut self.0 {
            Value::ZSet(z) => z.push((m.to_vec(), score)),
            other => *other = Value::ZSet(vec![(m.to_vec(), score)]),
        }
    }
    fn hash_field(&mut self, f: &[u8], v: &[u8], ttl: Option<i64>) {
        if !matches!(self.0, Value::Hash(_)) {
            self.0 = Value::Hash(BTreeMap::new());
        }
        if let Value::Hash(h) = &mut self.0 {
            assert!(
                h.insert(f.to_vec(), (v.to_vec(), ttl)).is_none(),
                "duplicate hash field"
            );
        }
    }
    fn stream_entry(&mut self, id: StreamId, fields: &[(Vec<u8>, Vec<u8>)]) {
        self.stream().0.push((id, fields.to_vec()));
    }
    fn stream_meta(&mut self, m: &StreamMeta) {
        *self.stream().1 = Some(m.clone());
    }
    fn stream_group(&mut self, g: &StreamGroup) {
        self.stream().2.push(g.clone());
    }
    fn module_value(&mut self, module: &str, _encver: u64) {
        self.0 = Value::Module(module.to_string());
    }
}

impl Collect {
    fn stream(
        &mut self,
    ) -> (
        &mut StreamEntries,
        &mut Option<StreamMeta>,
        &mut Vec<StreamGroup>,
    ) {
        if !matches!(self.0, Value::Stream { .. }) {
            self.0 = Value::Stream {
                entries: Vec::new(),
                meta: None,
                groups: Vec::new(),
            };
        }
        match &mut self.0 {
            Value::Stream {
                entries,
                meta,
                groups,
            } => (entries, meta, groups),
            _ => unreachable!(),
        }
    }
}

struct Entry {
    kind: Kind,
    module: Option<String>,
    expire_ms: Option<i64>,
    elements: u64,
    value: Value,
}

struct View {
    magic: String,
    dbs: BTreeMap<u64, BTreeMap<Vec<u8>, Entry>>,
    functions: Vec<Vec<u8>>,
}

fn read_view(path: &Path) -> View {
    let mut r = RdbReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    let magic = String::from_utf8_lossy(&r.header().raw).into_owned();
    let mut view = View {
        magic,
        dbs: BTreeMap::new(),
        functions: Vec::new(),
    };
    while let Some(item) = r.next().unwrap_or_else(|e| panic!("{e}")) {
        match item {
            Item::Entry(e) => {
                let key = r.key().to_vec();
                let mut c = Collect(Value::None);
                let sum = r.visit(&mut c).unwrap_or_else(|err| panic!("{err}"));
                if let Value::ZSet(z) = &mut c.0 {
                    z.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
                }
                let entry = Entry {
                    kind: e.kind,
                    module: sum.module,
                    expire_ms: e.expire_ms,
                    elements: sum.elements,
                    value: c.0,
                };
                let old = view.dbs.entry(e.db).or_default().insert(key.clone(), entry);
                assert!(old.is_none(), "key {} twice", String::from_utf8_lossy(&key));
            }
            Item::Function(code) => view.functions.push(code),
            _ => {}
        }
    }
    view
}

// ---------------------------------------------------------------------------------------------
// The workload

fn cmd(c: &mut Conn, args: &[&[u8]]) -> Reply {
    let r = c.call(args);
    assert!(!r.is_error(), "{}: {r:?}", util::show_args(args));
    r
}

fn write_everything(c: &mut Conn, k: &ServerKind) {
    let far = util::now_ms() + 10 * 86_400_000;
    // Strings: int, embstr, raw, LZF-compressible, incompressible, big.
    cmd(c, &[b"SET", b"s:int", b"12345"]);
    cmd(c, &[b"SET", b"s:neg", b"-7"]);
    cmd(c, &[b"SET", b"s:emb", b"hello"]);
    cmd(c, &[b"SET", b"s:lzf", &[b'a'; 300]]);
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    cmd(c, &[b"SET", b"s:raw", &noise]);
    cmd(c, &[b"SET", b"s:big", &b"0123456789".repeat(20_000)]);
    cmd(c, &[b"SET", b"s:empty", b""]);
    cmd(c, &[b"SET", b"s:bin\x00\xff", b"\x00\x01\xfe"]);
    // Lists: listpack, quicklist of several nodes, a plain node.
    cmd(
        c,
        &[
            b"RPUSH",
            b"l:lp",
            b"a",
            b"1",
            b"-2",
            b"bb",
            b"100000",
            b"6000000000",
        ],
    );
    let items: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("item-{i}").into_bytes())
        .collect();
    let mut a: Vec<&[u8]> = vec![b"RPUSH", b"l:ql"];
    a.extend(items.iter().map(|v| v.as_slice()));
    cmd(c, &a);
    cmd(c, &[b"DEBUG", b"QUICKLIST-PACKED-THRESHOLD", b"100"]);
    cmd(c, &[b"RPUSH", b"l:plain", b"small", &[b'p'; 500], b"tail"]);
    // Sets: intset, listpack (7.2+), hashtable.
    cmd(
        c,
        &[
            b"SADD",
            b"set:int",
            b"1",
            b"2",
            b"3",
            b"-5",
            b"1000000000000",
        ],
    );
    cmd(c, &[b"SADD", b"set:lp", b"a", b"b", b"c"]);
    let members: Vec<Vec<u8>> = (0..700).map(|i| format!("m{i}").into_bytes()).collect();
    let mut a: Vec<&[u8]> = vec![b"SADD", b"set:ht"];
    a.extend(members.iter().map(|v| v.as_slice()));
    cmd(c, &a);
    // Sorted sets: listpack, skiplist.
    cmd(
        c,
        &[
            b"ZADD", b"z:lp", b"1.5", b"a", b"-2", b"b", b"inf", b"c", b"3", b"d", b"0.1", b"e",
        ],
    );
    let mut zs: Vec<Vec<u8>> = Vec::new();
    for i in 0..300 {
        zs.push(format!("{}", i as f64 * 0.37 - 20.0).into_bytes());
        zs.push(format!("member-{i}").into_bytes());
    }
    let mut a: Vec<&[u8]> = vec![b"ZADD", b"z:sl"];
    a.extend(zs.iter().map(|v| v.as_slice()));
    cmd(c, &a);
    // Hashes: listpack, hashtable.
    cmd(
        c,
        &[b"HSET", b"h:lp", b"f1", b"v1", b"n", b"42", b"neg", b"-1"],
    );
    let mut hs: Vec<Vec<u8>> = Vec::new();
    for i in 0..600 {
        hs.push(format!("field{i}").into_bytes());
        hs.push(format!("value{i}").into_bytes());
    }
    let mut a: Vec<&[u8]> = vec![b"HSET", b"h:ht"];
    a.extend(hs.iter().map(|v| v.as_slice()));
    cmd(c, &a);
    if k.field_ttl {
        cmd(
            c,
            &[b"HSET", b"h:ttl", b"f1", b"v1", b"f2", b"v2", b"f3", b"v3"],
        );
        cmd(
            c,
            &[
                b"HPEXPIREAT",
                b"h:ttl",
                far.to_string().as_bytes(),
                b"FIELDS",
                b"1",
                b"f1",
            ],
        );
        cmd(
            c,
            &[
                b"HPEXPIREAT",
                b"h:ttl",
                (far + 5000).to_string().as_bytes(),
                b"FIELDS",
                b"1",
                b"f3",
            ],
        );
        let mut a: Vec<&[u8]> = vec![b"HSET", b"h:ttl:ht"];
        a.extend(hs.iter().map(|v| v.as_slice()));
        cmd(c, &a);
        cmd(
            c,
            &[
                b"HPEXPIREAT",
                b"h:ttl:ht",
                (far + 7).to_string().as_bytes(),
                b"FIELDS",
                b"2",
                b"field3",
                b"field400",
            ],
        );
    }
    // Streams: entries with the master's fields and others, a deleted entry, a group with
    // pending entries and two consumers; a long stream over several listpacks.
    for i in 0..5u32 {
        cmd(
            c,
            &[
                b"XADD",
                b"st",
                format!("1700000000000-{i}").as_bytes(),
                b"name",
                format!("n{i}").as_bytes(),
                b"n",
                i.to_string().as_bytes(),
            ],
        );
    }
    cmd(
        c,
        &[
            b"XADD",
            b"st",
            b"1700000000001-0",
            b"other",
            b"field",
            b"x",
            b"-3",
        ],
    );
    cmd(c, &[b"XDEL", b"st", b"1700000000000-2"]);
    cmd(c, &[b"XGROUP", b"CREATE", b"st", b"g1", b"0"]);
    cmd(
        c,
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g1",
            b"alice",
            b"COUNT",
            b"2",
            b"STREAMS",
            b"st",
            b">",
        ],
    );
    cmd(
        c,
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g1",
            b"bob",
            b"COUNT",
            b"1",
            b"STREAMS",
            b"st",
            b">",
        ],
    );
    cmd(c, &[b"XGROUP", b"CREATE", b"st", b"g2", b"$"]);
    for i in 0..450u32 {
        cmd(
            c,
            &[
                b"XADD",
                b"st:long",
                b"*",
                b"i",
                i.to_string().as_bytes(),
                b"payload",
                format!("p{}", i * 7).as_bytes(),
            ],
        );
    }
    cmd(c, &[b"XADD", b"st:empty", b"1-1", b"a", b"b"]);
    cmd(c, &[b"XDEL", b"st:empty", b"1-1"]);
    // TTLs, and the keys the filter test drops.
    cmd(
        c,
        &[b"SET", b"ttl:a", b"1", b"PXAT", far.to_string().as_bytes()],
    );
    cmd(c, &[b"HSET", b"ttl:h", b"a", b"b"]);
    cmd(
        c,
        &[b"PEXPIREAT", b"ttl:h", (far + 1).to_string().as_bytes()],
    );
    cmd(c, &[b"SET", b"drop:1", b"x"]);
    cmd(c, &[b"RPUSH", b"drop:2", b"x", b"y"]);
    if k.vector_sets {
        cmd(
            c,
            &[
                b"VADD", b"vs", b"VALUES", b"3", b"0.1", b"0.2", b"0.3", b"elem1",
            ],
        );
        cmd(
            c,
            &[
                b"VADD", b"vs", b"VALUES", b"3", b"0.5", b"0.1", b"0.9", b"elem2",
            ],
        );
    }
    cmd(c, &[b"FUNCTION", b"LOAD", b"#!lua name=rdblib\nredis.register_function('rdb_f', function(keys, args) return 1 end)"]);
    // Other dbs.
    cmd(c, &[b"SELECT", b"1"]);
    cmd(c, &[b"SET", b"one", b"1"]);
    cmd(c, &[b"SADD", b"drop:set", b"x"]);
    cmd(c, &[b"SELECT", b"5"]);
    cmd(c, &[b"HSET", b"five", b"a", b"1"]);
    cmd(
        c,
        &[
            b"SET",
            b"five:ttl",
            b"v",
            b"PXAT",
            (far + 2).to_string().as_bytes(),
        ],
    );
    cmd(c, &[b"SELECT", b"0"]);
}

// ---------------------------------------------------------------------------------------------
// What the server reports

fn bulk_list(r: &Reply) -> Vec<Vec<u8>> {
    r.array().iter().map(|x| x.bytes().to_vec()).collect()
}

fn parse_score(b: &[u8]) -> f64 {
    let s = String::from_utf8_lossy(b);
    s.parse::<f64>().unwrap_or_else(|_| panic!("score {s}"))
}

fn check_key(c: &mut Conn, k: &ServerKind, db: u64, key: &[u8], e: &Entry) {
    let name = format!("{} db{db} {}", k.name, String::from_utf8_lossy(key));
    let ty = cmd(c, &[b"TYPE", key]).text();
    let ours = e
        .module
        .clone()
        .unwrap_or_else(|| e.kind.name().to_string());
    assert_eq!(ours, ty, "{name}: TYPE");
    let pexp = cmd(c, &[b"PEXPIRETIME", key]).int();
    assert_eq!(e.expire_ms.unwrap_or(-1), pexp, "{name}: PEXPIRETIME");
    let count = |c: &mut Conn, verb: &[u8]| cmd(c, &[verb, key]).int() as u64;
    match &e.value {
        Value::Str(v) => {
            assert_eq!(cmd(c, &[b"GET", key]).bytes(), v.as_slice(), "{name}: GET");
            assert_eq!(count(c, b"STRLEN"), e.elements, "{name}: STRLEN");
        }
        Value::List(l) => {
            assert_eq!(
                &bulk_list(&cmd(c, &[b"LRANGE", key, b"0", b"-1"])),
                l,
                "{name}: LRANGE"
            );
            assert_eq!(count(c, b"LLEN"), e.elements, "{name}: LLEN");
        }
        Value::Set(s) => {
            let got: BTreeSet<Vec<u8>> = bulk_list(&cmd(c, &[b"SMEMBERS", key]))
                .into_iter()
                .collect();
            assert_eq!(&got, s, "{name}: SMEMBERS");
            assert_eq!(count(c, b"SCARD"), e.elements, "{name}: SCARD");
        }
        Value::ZSet(z) => {
            let r = bulk_list(&cmd(c, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]));
            let got: Vec<(Vec<u8>, f64)> = r
                .chunks(2)
                .map(|p| (p[0].clone(), parse_score(&p[1])))
                .collect();
            assert_eq!(&got, z, "{name}: ZRANGE WITHSCORES");
            assert_eq!(count(c, b"ZCARD"), e.elements, "{name}: ZCARD");
        }
        Value::Hash(h) => {
            let r = bulk_list(&cmd(c, &[b"HGETALL", key]));
            let got: BTreeMap<Vec<u8>, Vec<u8>> =
                r.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            let ours: BTreeMap<Vec<u8>, Vec<u8>> =
                h.iter().map(|(f, (v, _))| (f.clone(), v.clone())).collect();
            assert_eq!(got, ours, "{name}: HGETALL");
            assert_eq!(count(c, b"HLEN"), e.elements, "{name}: HLEN");
            if k.field_ttl {
                let mut a: Vec<&[u8]> = vec![b"HPEXPIRETIME", key, b"FIELDS"];
                let n = h.len().to_string();
                a.push(n.as_bytes());
                a.extend(h.keys().map(|f| f.as_slice()));
                let ttls: Vec<i64> = cmd(c, &a).array().iter().map(Reply::int).collect();
                let ours: Vec<i64> = h.values().map(|(_, t)| t.unwrap_or(-1)).collect();
                assert_eq!(ttls, ours, "{name}: HPEXPIRETIME");
            } else {
                assert!(
                    h.values().all(|(_, t)| t.is_none()),
                    "{name}: field TTLs from a server without them"
                );
            }
        }
        Value::Stream {
            entries,
            meta,
            groups,
        } => {
            let r = cmd(c, &[b"XRANGE", key, b"-", b"+"]);
            let got: Vec<(String, Vec<Vec<u8>>)> = r
                .array()
                .iter()
                .map(|e| (e.array()[0].text(), bulk_list(&e.array()[1])))
                .collect();
            let ours: Vec<(String, Vec<Vec<u8>>)> = entries
                .iter()
                .map(|(id, f)| {
                    (
                        id.to_string(),
                        f.iter().flat_map(|(a, b)| [a.clone(), b.clone()]).collect(),
                    )
                })
                .collect();
            assert_eq!(got, ours, "{name}: XRANGE");
            assert_eq!(count(c, b"XLEN"), e.elements, "{name}: XLEN");
            let meta = meta.as_ref().expect("stream meta");
            assert_eq!(meta.length, e.elements);
            let info = cmd(c, &[b"XINFO", b"GROUPS", key]);
            assert_eq!(info.array().len(), groups.len(), "{name}: groups");
            for (g, gi) in groups.iter().zip(info.array()) {
                let fields: BTreeMap<String, Reply> = gi
                    .array()
                    .chunks(2)
                    .map(|p| (p[0].text(), p[1].clone()))
                    .collect();
                assert_eq!(
                    fields["name"].bytes(),
                    g.name.as_slice(),
                    "{name}: group name"
                );
                assert_eq!(
                    fields["pending"].int() as usize,
                    g.pending.len(),
                    "{name}: group pending"
                );
                assert_eq!(
                    fields["consumers"].int() as usize,
                    g.consumers.len(),
                    "{name}: consumers"
                );
                assert_eq!(
                    fields["last-delivered-id"].text(),
                    g.last_id.to_string(),
                    "{name}: last-delivered-id"
                );
                let owned: usize = g.consumers.iter().map(|c| c.pending.len()).sum();
                assert_eq!(
                    owned,
                    g.pending.len(),
                    "{name}: every PEL entry has its consumer"
                );
                let xp = cmd(c, &[b"XPENDING", key, &g.name, b"-", b"+", b"100"]);
                let ids: Vec<String> = xp.array().iter().map(|p| p.array()[0].text()).collect();
                let ours: Vec<String> = g.pending.iter().map(|p| p.id.to_string()).collect();
                assert_eq!(ids, ours, "{name}: XPENDING");
            }
        }
        Value::Module(m) => assert_eq!(m, &ty, "{name}: module type"),
        Value::None => panic!("{name}: no value decoded"),
    }
}

fn digest_value(c: &mut Conn, key: &[u8]) -> String {
    cmd(c, &[b"DEBUG", b"DIGEST-VALUE", key]).array()[0].text()
}

fn run_kind(k: &ServerKind) {
    let Some(bin) = locate(k) else { return };
    let bin_s = bin.to_str().expect("a UTF-8 server path");
    let src = RedisProc::start_bin(bin_s, &[]);
    let mut c = src.conn();
    write_everything(&mut c, k);
    cmd(&mut c, &[b"SAVE"]);
    let rdb = src.dir.path().join("dump.rdb");
    let view = read_view(&rdb);
    assert_eq!(view.magic, k.magic, "{}: header", k.name);

    // Every db the server has, with the same keys; every key as the server reports it.
    let keyspace = cmd(&mut c, &[b"INFO", b"keyspace"]).text();
    let server_dbs: BTreeSet<u64> = keyspace
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
        .collect();
    assert_eq!(
        server_dbs,
        view.dbs.keys().copied().collect(),
        "{}: dbs",
        k.name
    );
    let mut seen_encodings = 0;
    for (db, keys) in &view.dbs {
        cmd(&mut c, &[b"SELECT", db.to_string().as_bytes()]);
        assert_eq!(
            cmd(&mut c, &[b"DBSIZE"]).int() as usize,
            keys.len(),
            "{} db{db}: DBSIZE",
            k.name
        );
        for (key, e) in keys {
            check_key(&mut c, k, *db, key, e);
            seen_encodings += 1;
        }
    }
    assert!(
        seen_encodings >= 25,
        "{}: only {seen_encodings} keys",
        k.name
    );
    eprintln!(
        "{}: {seen_encodings} keys checked against the server",
        k.name
    );
    cmd(&mut c, &[b"SELECT", b"0"]);
    // Spot checks that the big encodings are really there (the test would be weaker otherwise).
    let enc = |c: &mut Conn, key: &[u8]| cmd(c, &[b"OBJECT", b"ENCODING", key]).text();
    assert_eq!(enc(&mut c, b"l:ql"), "quicklist");
    assert_eq!(enc(&mut c, b"set:int"), "intset");
    assert_eq!(enc(&mut c, b"set:ht"), "hashtable");
    assert_eq!(enc(&mut c, b"z:sl"), "skiplist");
    assert_eq!(enc(&mut c, b"h:ht"), "hashtable");
    if k.set_listpack {
        assert_eq!(enc(&mut c, b"set:lp"), "listpack");
    }
    let lib = cmd(&mut c, &[b"FUNCTION", b"LIST", b"WITHCODE"]);
    let code = lib.array()[0]
        .array()
        .chunks(2)
        .find(|p| p[0].text() == "library_code")
        .map(|p| p[1].bytes().to_vec());
    assert_eq!(
        view.functions,
        vec![code.expect("library_code")],
        "{}: function library",
        k.name
    );

    // Filter → write → load: exactly the kept keys, each with the same digest.
    let mut reader = RdbReader::open(&rdb).unwrap();
    let out_path = src.dir.path().join("filtered.rdb");
    let writer =
        RdbWriter::new(std::fs::File::create(&out_path).unwrap(), reader.header()).unwrap();
    let (_, counts) = filter_rdb(&mut reader, writer, |_, key| !key.starts_with(b"drop:")).unwrap();
    assert_eq!(counts.dropped, 3, "{}", k.name);
    let filtered = read_view(&out_path);
    let dst = RedisProc::start_bin_with_rdb(bin_s, &out_path, &[]);
    let mut d = dst.conn();
    for (db, keys) in &view.dbs {
        for conn in [&mut c, &mut d] {
            cmd(conn, &[b"SELECT", db.to_string().as_bytes()]);
        }
        let kept: Vec<&Vec<u8>> = keys.keys().filter(|k| !k.starts_with(b"drop:")).collect();
        assert_eq!(
            cmd(&mut d, &[b"DBSIZE"]).int() as usize,
            kept.len(),
            "{} db{db}: filtered DBSIZE",
            k.name
        );
        assert_eq!(filtered.dbs.get(db).map_or(0, |m| m.len()), kept.len());
        for key in kept {
            assert_eq!(
                digest_value(&mut c, key),
                digest_value(&mut d, key),
                "{} db{db} {}: DIGEST-VALUE",
                k.name,
                String::from_utf8_lossy(key)
            );
            assert_eq!(
                cmd(&mut c, &[b"PEXPIRETIME", key]),
                cmd(&mut d, &[b"PEXPIRETIME", key])
            );
        }
    }
    assert_eq!(
        cmd(&mut d, &[b"FUNCTION", b"LIST"]),
        cmd(&mut c, &[b"FUNCTION", b"LIST"]),
        "{}: functions copied",
        k.name
    );

    // Keep-all: the same dataset, digest for digest.
    let mut reader = RdbReader::open(&rdb).unwrap();
    let all_path = src.dir.path().join("all.rdb");
    let writer =
        RdbWriter::new(std::fs::File::create(&all_path).unwrap(), reader.header()).unwrap();
    filter_rdb(&mut reader, writer, |_, _| true).unwrap();
    let all = RedisProc::start_bin_with_rdb(bin_s, &all_path, &[]);
    assert_eq!(
        cmd(&mut all.conn(), &[b"DEBUG", b"DIGEST"]),
        cmd(&mut c, &[b"DEBUG", b"DIGEST"]),
        "{}: keep-all digest",
        k.name
    );
}

#[test]
fn redis7_0() {
    run_kind(&KINDS[0]);
}

#[test]
fn valkey8_1() {
    run_kind(&KINDS[1]);
}

#[test]
fn redis8_2() {
    run_kind(&KINDS[2]);
}

#[test]
fn valkey9_1() {
    run_kind(&KINDS[3]);
}
