//! The acceptance test: a seeded random workload over every data type runs against a real
//! redis-server while `flashback capture` records it; at recorded instants we note the time,
//! the primary's replication offset and the full state (digest + TTLs + functions). Afterwards
//! every instant is restored with `flashback restore --rdb` and loaded into a fresh server,
//! and the states must be equal.
//!
//! Replay a failure with `FLASHBACK_SEED=<seed printed by the test>`.

use crate::util::*;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// How the reply to a command feeds later commands.
#[derive(Clone)]
enum Tag {
    None,
    /// XADD: the reply is the new entry's id, usable by XDEL.
    XAdd(Vec<u8>),
    /// XREADGROUP: the reply lists delivered ids, usable by XACK.
    XReadGroup(Vec<u8>),
    /// SELECT or EXEC that changes the connection's db; tracked when generated.
    Other,
}

type Cmd = Vec<Vec<u8>>;

fn cmd(parts: &[&[u8]]) -> Cmd {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// Key kinds. Each kind's keys only ever hold one type, so most commands succeed (RENAME,
/// COPY and MOVE stay within a kind); the few errors left over are harmless and counted.
const KINDS: &[&str] = &["s", "n", "f", "h", "l", "set", "z", "x", "b", "hll"];
const DBS: u32 = 4;
const GROUP: &[u8] = b"grp";

const SCRIPT: &str = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('INCR', KEYS[2]); \
                      redis.call('HSET', KEYS[3], 'script', ARGV[1]); return 1";
const SCRIPT_ONE_WRITE: &str = "return redis.call('APPEND', KEYS[1], ARGV[1])";
const LIBRARY: &str = "#!lua name=fbtest\n\
    redis.register_function('fb_set_incr', function(keys, args)\n\
      redis.call('SET', keys[1], args[1])\n\
      return redis.call('INCR', keys[2])\n\
    end)\n";

struct Workload {
    rng: SmallRng,
    conn: Conn,
    /// The db the connection has selected.
    db: u32,
    /// Stream entry ids seen in XADD replies: (key, id).
    stream_ids: Vec<(Vec<u8>, Vec<u8>)>,
    /// Ids delivered by XREADGROUP and not yet acknowledged: (key, id).
    delivered: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys with a short TTL written in the current phase.
    ephemeral: Vec<Vec<u8>>,
    /// When every short TTL of the current phase has passed.
    ephemeral_deadline: Instant,
    library_loaded: bool,
    phase: usize,
    flushall_phase: usize,
    ops: usize,
    errors: BTreeMap<String, usize>,
}

impl Workload {
    fn new(seed: u64, conn: Conn) -> Workload {
        let mut rng = SmallRng::seed_from_u64(seed);
        let flushall_phase = rng.gen_range(3..8);
        Workload {
            rng,
            conn,
            db: 0,
            stream_ids: vec![],
            delivered: vec![],
            ephemeral: vec![],
            ephemeral_deadline: Instant::now(),
            library_loaded: false,
            phase: 0,
            flushall_phase,
            ops: 0,
            errors: BTreeMap::new(),
        }
    }

    /// A key of `kind`: a handful of plain names and a few binary ones (NUL, CR LF, high bytes).
    fn key(&mut self, kind: &str) -> Vec<u8> {
        let i: u8 = self.rng.gen_range(0..14);
        let mut k = kind.as_bytes().to_vec();
        if i < 10 {
            k.extend_from_slice(format!(":{i}").as_bytes());
        } else {
            k.extend_from_slice(b":\x00\r\n\xff");
            k.push(i);
            k.extend_from_slice(b"\x80\r\nend");
        }
        k
    }

    fn any_key(&mut self) -> Vec<u8> {
        let kind = KINDS[self.rng.gen_range(0..KINDS.len())];
        self.key(kind)
    }

    fn same_kind_pair(&mut self) -> (Vec<u8>, Vec<u8>) {
        let kind = KINDS[self.rng.gen_range(0..KINDS.len())];
        (self.key(kind), self.key(kind))
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.rng.fill_bytes(&mut v);
        if len >= 4 {
            let at = self.rng.gen_range(0..len - 1);
            v[at] = b'\r';
            v[at + 1] = b'\n';
        }
        v
    }

    /// Mostly short values; a quarter arbitrary bytes with CR LF inside; a few of some KB.
    fn val(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..100) {
            0..=69 => format!("v{}", self.rng.gen_range(0..100_000)).into_bytes(),
            70..=95 => {
                let n = self.rng.gen_range(0..120);
                self.bytes(n)
            }
            _ => {
                let n = self.rng.gen_range(1_000..30_000);
                self.bytes(n)
            }
        }
    }

    fn member(&mut self) -> Vec<u8> {
        if self.rng.gen_bool(0.2) {
            let mut m = b"m\x00\r\n".to_vec();
            m.push(self.rng.gen());
            m
        } else {
            format!("m{}", self.rng.gen_range(0..30)).into_bytes()
        }
    }

    fn num(&mut self, lo: i64, hi: i64) -> Vec<u8> {
        self.rng.gen_range(lo..hi).to_string().into_bytes()
    }

    /// Hours, so nothing expires during a test: (seconds).
    fn long_ttl_s(&mut self) -> Vec<u8> {
        self.num(3_600, 36_000)
    }

    /// One write command (never MULTI, SELECT, FLUSH*, SWAPDB).
    fn simple_op(&mut self) -> (Cmd, Tag) {
        let r = self.rng.gen_range(0..100);
        let c = match r {
            // strings
            0..=5 => {
                let (k, v) = (self.key("s"), self.val());
                cmd(&[b"SET", &k, &v])
            }
            6..=7 => {
                let (k, v, t) = (self.key("s"), self.val(), self.long_ttl_s());
                cmd(&[b"SET", &k, &v, b"EX", &t])
            }
            8..=9 => {
                let (k, v) = (self.key("s"), self.val());
                cmd(&[b"APPEND", &k, &v])
            }
            10..=11 => {
                let (k, o, v) = (self.key("s"), self.num(0, 40), self.val());
                cmd(&[b"SETRANGE", &k, &o, &v])
            }
            12..=14 => {
                let k = self.key("n");
                if self.rng.gen_bool(0.5) {
                    cmd(&[b"INCR", &k])
                } else {
                    let d = self.num(-1000, 1000);
                    cmd(&[b"INCRBY", &k, &d])
                }
            }
            15..=16 => {
                let k = self.key("f");
                let d = format!("{:.3}", self.rng.gen_range(-100.0..100.0f64)).into_bytes();
                cmd(&[b"INCRBYFLOAT", &k, &d])
            }
            // hashes
            17..=21 => {
                let k = self.key("h");
                let mut c = cmd(&[b"HSET", &k]);
                for _ in 0..self.rng.gen_range(1..4) {
                    c.push(format!("f{}", self.rng.gen_range(0..12)).into_bytes());
                    c.push(self.val());
                }
                c
            }
            22..=23 => {
                let (k, f) = (
                    self.key("h"),
                    format!("f{}", self.rng.gen_range(0..12)).into_bytes(),
                );
                cmd(&[b"HDEL", &k, &f])
            }
            24..=25 => {
                let (k, f, d) = (
                    self.key("h"),
                    format!("n{}", self.rng.gen_range(0..4)).into_bytes(),
                    self.num(-50, 50),
                );
                cmd(&[b"HINCRBY", &k, &f, &d])
            }
            // lists
            26..=28 => {
                let (k, a, b) = (self.key("l"), self.val(), self.val());
                cmd(&[
                    if self.rng.gen_bool(0.5) {
                        b"LPUSH"
                    } else {
                        b"RPUSH"
                    },
                    &k,
                    &a,
                    &b,
                ])
            }
            29 => {
                let k = self.key("l");
                cmd(&[b"LPOP", &k])
            }
            30 => {
                let (k, e) = (self.key("l"), self.num(3, 40));
                cmd(&[b"LTRIM", &k, b"0", &e])
            }
            31 => {
                let (k, v) = (self.key("l"), self.val());
                cmd(&[b"LSET", &k, b"0", &v])
            }
            // sets
            32..=34 => {
                let (k, a, b) = (self.key("set"), self.member(), self.member());
                cmd(&[b"SADD", &k, &a, &b])
            }
            35 => {
                let (k, m) = (self.key("set"), self.member());
                cmd(&[b"SREM", &k, &m])
            }
            36 => {
                let k = self.key("set");
                cmd(&[b"SPOP", &k])
            }
            // sorted sets
            37..=39 => {
                let (k, s, m) = (self.key("z"), self.num(-500, 500), self.member());
                cmd(&[b"ZADD", &k, &s, &m])
            }
            40 => {
                let (k, m) = (self.key("z"), self.member());
                let d = format!("{:.2}", self.rng.gen_range(-10.0..10.0f64)).into_bytes();
                cmd(&[b"ZINCRBY", &k, &d, &m])
            }
            41 => {
                let (k, m) = (self.key("z"), self.member());
                cmd(&[b"ZREM", &k, &m])
            }
            42 => {
                let (k, lo) = (self.key("z"), self.rng.gen_range(-500..400));
                let (lo_s, hi_s) = (
                    lo.to_string().into_bytes(),
                    (lo + 60).to_string().into_bytes(),
                );
                cmd(&[b"ZREMRANGEBYSCORE", &k, &lo_s, &hi_s])
            }
            // streams
            43..=46 => {
                let (k, v) = (self.key("x"), self.val());
                let c = if self.rng.gen_bool(0.2) {
                    cmd(&[b"XADD", &k, b"MAXLEN", b"~", b"40", b"*", b"f", &v])
                } else {
                    cmd(&[b"XADD", &k, b"*", b"f", &v, b"g", b"1"])
                };
                return (c, Tag::XAdd(k));
            }
            47 => {
                let k = self.key("x");
                cmd(&[b"XTRIM", &k, b"MAXLEN", b"25"])
            }
            48 => match self.pick_id(false) {
                Some((k, id)) => cmd(&[b"XDEL", &k, &id]),
                None => return self.simple_op(),
            },
            49 => {
                let k = self.key("x");
                cmd(&[b"XGROUP", b"CREATE", &k, GROUP, b"0", b"MKSTREAM"])
            }
            50..=51 => {
                let k = self.key("x");
                let consumer = format!("c{}", self.rng.gen_range(0..3)).into_bytes();
                let c = cmd(&[
                    b"XREADGROUP",
                    b"GROUP",
                    GROUP,
                    &consumer,
                    b"COUNT",
                    b"3",
                    b"STREAMS",
                    &k,
                    b">",
                ]);
                return (c, Tag::XReadGroup(k));
            }
            52 => match self.pick_id(true) {
                Some((k, id)) => cmd(&[b"XACK", &k, GROUP, &id]),
                None => return self.simple_op(),
            },
            // bitmaps
            53..=55 => {
                let (k, o) = (self.key("b"), self.num(0, 4000));
                cmd(&[
                    b"SETBIT",
                    &k,
                    &o,
                    if self.rng.gen_bool(0.7) { b"1" } else { b"0" },
                ])
            }
            56 => {
                let (d, a, b) = (self.key("b"), self.key("b"), self.key("b"));
                let op: &[u8] = [b"AND".as_slice(), b"OR", b"XOR"][self.rng.gen_range(0..3)];
                cmd(&[b"BITOP", op, &d, &a, &b])
            }
            // HyperLogLog
            57..=59 => {
                let (k, a, b, c) = (
                    self.key("hll"),
                    self.member(),
                    self.val(),
                    self.num(0, 1_000_000),
                );
                cmd(&[b"PFADD", &k, &a, &b, &c])
            }
            60 => {
                let (d, a, b) = (self.key("hll"), self.key("hll"), self.key("hll"));
                cmd(&[b"PFMERGE", &d, &a, &b])
            }
            // TTLs (long)
            61..=63 => {
                let (k, t) = (self.any_key(), self.long_ttl_s());
                cmd(&[b"EXPIRE", &k, &t])
            }
            64..=65 => {
                let (k, t) = (self.any_key(), self.num(3_600_000, 36_000_000));
                cmd(&[b"PEXPIRE", &k, &t])
            }
            66 => {
                let k = self.any_key();
                cmd(&[b"PERSIST", &k])
            }
            // the keyspace
            67..=68 => {
                let (a, b) = self.same_kind_pair();
                cmd(&[b"RENAME", &a, &b])
            }
            69..=70 => {
                let (a, b) = self.same_kind_pair();
                if self.rng.gen_bool(0.5) {
                    let db = self.num(0, DBS as i64);
                    cmd(&[b"COPY", &a, &b, b"DB", &db, b"REPLACE"])
                } else {
                    cmd(&[b"COPY", &a, &b, b"REPLACE"])
                }
            }
            71 => {
                let (k, db) = (self.any_key(), self.num(0, DBS as i64));
                cmd(&[b"MOVE", &k, &db])
            }
            72 => {
                let (a, b) = (self.any_key(), self.any_key());
                cmd(&[b"DEL", &a, &b])
            }
            73 => {
                let k = self.any_key();
                cmd(&[b"UNLINK", &k])
            }
            // scripts and functions: effects replication, wrapped in MULTI/EXEC by the primary
            74..=76 => {
                let (a, b, c, v) = (self.key("s"), self.key("n"), self.key("h"), self.val());
                cmd(&[b"EVAL", SCRIPT.as_bytes(), b"3", &a, &b, &c, &v])
            }
            77 => {
                let (a, v) = (self.key("s"), self.val());
                cmd(&[b"EVAL", SCRIPT_ONE_WRITE.as_bytes(), b"1", &a, &v])
            }
            81..=82 => {
                // Propagated to replicas; a restore must skip it.
                let v = self.val();
                cmd(&[b"PUBLISH", b"fb-channel", &v])
            }
            78..=80 if self.library_loaded => {
                let (a, b, v) = (self.key("s"), self.key("n"), self.val());
                cmd(&[b"FCALL", b"fb_set_incr", b"2", &a, &b, &v])
            }
            _ => {
                let (k, f, v) = (
                    self.key("h"),
                    format!("f{}", self.rng.gen_range(0..12)).into_bytes(),
                    self.val(),
                );
                cmd(&[b"HSET", &k, &f, &v])
            }
        };
        (c, Tag::None)
    }

    fn pick_id(&mut self, delivered: bool) -> Option<(Vec<u8>, Vec<u8>)> {
        let v = if delivered {
            &mut self.delivered
        } else {
            &mut self.stream_ids
        };
        if v.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..v.len());
        Some(v.swap_remove(i))
    }

    fn select(&mut self, db: u32) -> (Cmd, Tag) {
        self.db = db;
        (
            vec![b"SELECT".to_vec(), db.to_string().into_bytes()],
            Tag::Other,
        )
    }

    /// One "statement" of the workload: a plain write, a db switch, a transaction (sometimes
    /// with SELECT inside), or a rare db-wide command.
    fn statement(&mut self, out: &mut Vec<(Cmd, Tag)>) {
        let r = self.rng.gen_range(0..1000);
        match r {
            0..=49 => {
                let db = self.rng.gen_range(0..DBS);
                out.push(self.select(db));
            }
            50..=99 => {
                out.push((cmd(&[b"MULTI"]), Tag::Other));
                for i in 0..self.rng.gen_range(1..5) {
                    if i > 0 && self.rng.gen_bool(0.25) {
                        let db = self.rng.gen_range(0..DBS);
                        out.push(self.select(db));
                    }
                    let (c, _) = self.simple_op();
                    out.push((c, Tag::Other));
                }
                out.push((cmd(&[b"EXEC"]), Tag::Other));
            }
            100..=103 => {
                let (a, b) = (self.num(0, DBS as i64), self.num(0, DBS as i64));
                out.push((cmd(&[b"SWAPDB", &a, &b]), Tag::None));
            }
            104 => out.push((cmd(&[b"FLUSHDB"]), Tag::None)),
            _ => out.push(self.simple_op()),
        }
    }

    fn run(&mut self, cmds: Vec<(Cmd, Tag)>) {
        for chunk in cmds.chunks(64) {
            let plain: Vec<Cmd> = chunk.iter().map(|(c, _)| c.clone()).collect();
            let replies = self.conn.pipeline(&plain);
            for ((c, tag), reply) in chunk.iter().zip(replies) {
                self.ops += 1;
                self.absorb(c, tag, &reply);
            }
        }
    }

    fn absorb(&mut self, c: &Cmd, tag: &Tag, reply: &Reply) {
        let mut check = |r: &Reply| {
            if let Reply::Error(e) = r {
                let e = String::from_utf8_lossy(e).into_owned();
                // These mean the test itself sent a malformed command: fail loudly.
                assert!(
                    !(e.contains("unknown command")
                        || e.contains("wrong number of arguments")
                        || e.contains("syntax error")
                        || e.starts_with("EXECABORT")),
                    "the workload sent a bad command {:?}: {e}",
                    show_args(c)
                );
                // Classed by the text before any quoted key name.
                let class: String = e
                    .split('\'')
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(48)
                    .collect();
                *self.errors.entry(class).or_default() += 1;
            }
        };
        check(reply);
        if let Reply::Array(Some(items)) = reply {
            if c[0] == b"EXEC" {
                items.iter().for_each(&mut check);
            }
        }
        match (tag, reply) {
            (Tag::XAdd(k), Reply::Bulk(Some(id))) => {
                self.stream_ids.push((k.clone(), id.clone()));
                if self.stream_ids.len() > 200 {
                    self.stream_ids.remove(0);
                }
            }
            (Tag::XReadGroup(k), Reply::Array(Some(streams))) => {
                for s in streams {
                    for entry in s.array()[1].array() {
                        self.delivered
                            .push((k.clone(), entry.array()[0].bytes().to_vec()));
                    }
                }
            }
            _ => {}
        }
    }

    /// A burst of writes: ~`n` statements, plus this phase's specials.
    fn burst(&mut self, n: usize) {
        self.phase += 1;
        let mut cmds = Vec::new();
        if !self.library_loaded {
            cmds.push((
                cmd(&[b"FUNCTION", b"LOAD", b"REPLACE", LIBRARY.as_bytes()]),
                Tag::None,
            ));
            self.library_loaded = true;
        }
        if self.phase == self.flushall_phase {
            cmds.push((cmd(&[b"FLUSHALL"]), Tag::None));
        }
        // Big values, a few: strings and a list element of 1-2 MB.
        if self.phase % 4 == 2 {
            let (k, len) = (
                format!("big:{}", self.rng.gen_range(0..3)).into_bytes(),
                self.rng.gen_range(1 << 20..2 << 20),
            );
            let v = self.bytes(len);
            cmds.push((cmd(&[b"SET", &k, &v]), Tag::None));
        }
        if self.phase % 5 == 3 {
            let k = self.key("l");
            let v = self.bytes(1 << 20);
            cmds.push((cmd(&[b"RPUSH", &k, &v]), Tag::None));
        }
        self.run(cmds);
        let mut done = 0;
        while done < n {
            let mut cmds = Vec::new();
            while cmds.len() < 64 && done < n {
                self.statement(&mut cmds);
                done += 1;
            }
            self.run(cmds);
        }
        // Short TTLs that do expire before the phase's state is recorded.
        let mut cmds = Vec::new();
        for i in 0..3 {
            let mut k = format!("eph:{}:{i}", self.phase).into_bytes();
            if i == 2 {
                k.extend_from_slice(b"\r\n\x00");
            }
            let (v, ms) = (self.val(), self.num(30, 150));
            cmds.push((cmd(&[b"SET", &k, &v, b"PX", &ms]), Tag::None));
            self.ephemeral.push(k);
        }
        let k = format!("eph:{}:h", self.phase).into_bytes();
        cmds.push((cmd(&[b"HSET", &k, b"f", b"v"]), Tag::None));
        cmds.push((cmd(&[b"PEXPIRE", &k, b"100"]), Tag::None));
        self.ephemeral.push(k);
        self.run(cmds);
        self.ephemeral_deadline = Instant::now() + Duration::from_millis(200);
    }

    /// Touches every short-TTL key in every db, so the primary deletes (and propagates the
    /// deletion of) those that have expired. Otherwise a key past its TTL but not yet reaped is
    /// in the source's DEBUG DIGEST and never in a restored RDB (loading drops expired keys).
    fn reap_ephemeral(&mut self) {
        // Every short TTL is at most 150 ms from the end of the burst.
        if let Some(wait) = self
            .ephemeral_deadline
            .checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        let keys = std::mem::take(&mut self.ephemeral);
        let mut cmds = Vec::new();
        // One expired key is written to instead of touched: a write that meets an expired key
        // reaches the stream as MULTI / DEL / the write / EXEC (notes §1.6).
        if let Some(k) = keys.first() {
            cmds.push(self.select(0));
            cmds.push((cmd(&[b"SET", k, b"reborn"]), Tag::None));
        }
        for db in 0..DBS {
            cmds.push(self.select(db));
            for (i, k) in keys.iter().enumerate() {
                if !(db == 0 && i == 0) {
                    cmds.push((cmd(&[b"EXISTS", k]), Tag::None));
                }
            }
        }
        // The last write before every recorded point changes the state, so a restore that
        // stops a record or a transaction short of the point cannot pass by luck (the DELs of
        // expired keys just before it would not show: loading an RDB drops expired keys).
        let db = self.rng.gen_range(0..DBS);
        cmds.push(self.select(db));
        cmds.push((cmd(&[b"MULTI"]), Tag::Other));
        cmds.push((cmd(&[b"INCR", b"fb:points"]), Tag::Other));
        let phase = self.phase.to_string().into_bytes();
        cmds.push((cmd(&[b"SET", b"fb:last-point", &phase]), Tag::Other));
        cmds.push((cmd(&[b"EXEC"]), Tag::Other));
        if self.rng.gen_bool(0.5) {
            cmds.push((cmd(&[b"RPUSH", b"fb:points-log", &phase]), Tag::None));
        }
        let replies = self
            .conn
            .pipeline(&cmds.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>());
        for ((c, _), r) in cmds.iter().zip(&replies) {
            if c[0] == b"EXISTS" {
                assert_eq!(
                    r,
                    &Reply::Int(0),
                    "short-TTL key {:?} still exists after its TTL",
                    show_args(c)
                );
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Point {
    label: String,
    /// Present when the agent was receiving when the point was taken.
    t_ms: Option<u64>,
    offset: u64,
    state: String,
}

/// Sleeps, reaps short TTLs, then reads the offset and the state from the writing connection
/// with nothing in between; then (agent up) waits until the agent has ACKed the offset, and
/// only then takes the time: every record of the point has arrived by then.
fn record(w: &mut Workload, primary: &RedisProc, agent: Option<&mut Agent>, label: &str) -> Point {
    std::thread::sleep(Duration::from_millis(300));
    w.reap_ephemeral();
    if agent.is_some() && w.rng.gen_bool(0.5) {
        // WAIT puts REPLCONF GETACK into the stream, which the agent answers and restore skips.
        let acked = w.conn.call(&["WAIT", "1", "500"]);
        assert!(matches!(acked, Reply::Int(_)), "WAIT: {acked:?}");
    }
    let offset = parse_info(&w.conn.call(&["INFO", "replication"]).text()).master_offset;
    let state = state(&mut w.conn);
    w.db = 0;
    let t_ms = agent.map(|a| {
        a.wait_caught_up(primary);
        let t = now_ms();
        // The next burst's records must arrive in a later millisecond than `t`.
        std::thread::sleep(Duration::from_millis(5));
        t
    });
    eprintln!("  point {label}: offset {offset} t {t_ms:?} {state}");
    Point {
        label: label.to_string(),
        t_ms,
        offset,
        state,
    }
}

/// Restores every point by time (when it has one) and some or all by offset; returns the
/// mismatches, each described in full.
fn check_points(store: &Path, points: &[Point], all_by_offset: bool) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |p: &Point, args: &[&str]| {
        let started = Instant::now();
        match try_restore_rdb(store, args) {
            Ok(got) if got == p.state => eprintln!(
                "  ok   {} {:?} ({} ms)",
                p.label,
                args,
                started.elapsed().as_millis()
            ),
            Ok(got) => {
                let msg = format!(
                    "point {} restored with {args:?}:\n    want {}\n    got  {}",
                    p.label, p.state, got
                );
                eprintln!("  FAIL {msg}");
                failures.push(msg);
            }
            Err(e) => {
                let msg = format!("point {}: {e}", p.label);
                eprintln!("  FAIL {msg}");
                failures.push(msg);
            }
        }
    };
    for (i, p) in points.iter().enumerate() {
        if let Some(t) = p.t_ms {
            check(p, &["--at", &at_arg(t)]);
        }
        if all_by_offset || i % 3 == 1 || i + 1 == points.len() {
            check(p, &["--at-offset", &p.offset.to_string()]);
        }
    }
    failures
}

fn finish(test: &str, seed: u64, w: &Workload, failures: Vec<String>, agent_log: &str) {
    eprintln!(
        "[{test}] {} operations; error replies by kind (expected, e.g. WRONGTYPE): {:?}",
        w.ops, w.errors
    );
    if !failures.is_empty() {
        let tail: Vec<&str> = agent_log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "[{test}] seed {seed}: {} mismatch(es):\n{}\n--- agent log (last 40 lines)\n{}",
            failures.len(),
            failures.join("\n"),
            tail.join("\n")
        );
    }
}

fn seed_for(test: &str, salt: u64) -> u64 {
    seed(test)
        ^ if std::env::var("FLASHBACK_SEED").is_ok() {
            0
        } else {
            salt
        }
}

/// Capture from before the first write to the end, agent always up.
fn differential(test: &str, salt: u64, source_args: &[&str]) {
    let seed = seed_for(test, salt);
    let started = Instant::now();
    let primary = RedisProc::start(source_args);
    let mut w = Workload::new(seed, primary.conn());
    // Data that exists before capture starts ends up in the base snapshot.
    w.burst(300);
    w.reap_ephemeral();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(primary.port, &store, &[]);
    agent.wait_online(&primary);
    let mut points = vec![record(&mut w, &primary, Some(&mut agent), "online")];
    for phase in 1..=12 {
        w.burst(250);
        points.push(record(
            &mut w,
            &primary,
            Some(&mut agent),
            &format!("phase{phase}"),
        ));
    }
    agent.stop();
    eprintln!(
        "[{test}] capture done in {:?}; restoring {} points",
        started.elapsed(),
        points.len()
    );
    let mut failures = check_points(&store, &points, false);
    let last = points.last().unwrap();
    match try_restore_rdb(&store, &["--latest"]) {
        Ok(s) if s == last.state => {}
        Ok(s) => failures.push(format!("--latest:\n    want {}\n    got  {s}", last.state)),
        Err(e) => failures.push(format!("--latest: {e}")),
    }
    eprintln!("[{test}] finished in {:?}", started.elapsed());
    finish(test, seed, &w, failures, &agent.log_text());
}

#[test]
fn differential_diskless_sync() {
    differential(
        "differential_diskless_sync",
        1,
        &[
            "--repl-ping-replica-period",
            "1",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ],
    );
}

#[test]
fn differential_disk_sync() {
    differential(
        "differential_disk_sync",
        2,
        &[
            "--repl-diskless-sync",
            "no",
            "--repl-ping-replica-period",
            "1",
        ],
    );
}

/// kill -9 the agent mid-run, write while it is down, restart it: the primary's backlog (64 MB
/// here) still holds the missed writes, so the agent must resume with a partial resync into
/// the same generation, and every instant — including those while it was down — restores
/// exactly by offset.
#[test]
fn differential_kill9_resume() {
    let test = "differential_kill9_resume";
    let seed = seed_for(test, 3);
    let started = Instant::now();
    let primary = RedisProc::start(&[
        "--repl-backlog-size",
        "64mb",
        "--repl-ping-replica-period",
        "1",
    ]);
    let mut w = Workload::new(seed, primary.conn());
    w.burst(200);
    w.reap_ephemeral();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(primary.port, &store, &[]);
    agent.wait_online(&primary);
    let mut points = vec![record(&mut w, &primary, Some(&mut agent), "online")];
    for phase in 1..=4 {
        w.burst(200);
        points.push(record(
            &mut w,
            &primary,
            Some(&mut agent),
            &format!("up{phase}"),
        ));
    }
    // The last point's time must be vouched for by durable evidence before the kill (a
    // heartbeat comes about every second); a time after the last evidence is, rightly, inside
    // the restart's uncertain interval.
    wait_window_reaches(
        &store,
        points
            .last()
            .unwrap()
            .t_ms
            .expect("recorded with the agent up"),
    );
    // Unacknowledged writes in flight at the kill: the agent may or may not have them.
    w.burst(100);
    agent.kill9();
    wait_no_replicas(&primary);
    let mut down_points = Vec::new();
    for phase in 1..=3 {
        w.burst(200);
        let p = record(&mut w, &primary, None, &format!("down{phase}"));
        down_points.push((p.clone(), now_ms()));
        points.push(p);
    }
    let mut agent = Agent::start(primary.port, &store, &[]);
    agent.wait_online(&primary);
    agent.wait_caught_up(&primary);
    for phase in 1..=4 {
        w.burst(200);
        points.push(record(
            &mut w,
            &primary,
            Some(&mut agent),
            &format!("after{phase}"),
        ));
    }
    agent.stop();
    eprintln!(
        "[{test}] capture done in {:?}; restoring {} points",
        started.elapsed(),
        points.len()
    );
    let mut failures = check_points(&store, &points, true);

    // A partial resync continues the generation; a full one would have started a second.
    let info = info_json(&store);
    match json_generation_count(&info) {
        Some(1) => {}
        n => failures.push(format!(
            "after kill -9 and restart the store should hold ONE generation (partial resync), info --json reports {n:?} \
             (generation dirs on disk: {:?}):\n{}",
            generation_dirs(&store),
            serde_json::to_string_pretty(&info).unwrap()
        )),
    }
    let log = agent.log_text();
    let resync_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("resync"))
        .map(|l| l.trim())
        .collect();
    eprintln!("[{test}] agent log lines about resync: {resync_lines:#?}");
    // One snapshot at the first start, and the restart continued by partial resync.
    let full = resync_lines
        .iter()
        .filter(|l| l.contains("full resync"))
        .count();
    let partial = resync_lines
        .iter()
        .filter(|l| l.contains("partial resync from offset") && l.contains("no gap"))
        .count();
    if full != 1 || partial != 1 {
        failures.push(format!(
            "expected one full resync (the first start) and one gapless partial resync (the restart), \
             the agent logged {full} and {partial}: {resync_lines:#?}"
        ));
    }

    // DESIGN.md: a restore by time inside a catch-up interval says so and points to
    // --at-offset. The writes made while the agent was down arrived at its restart.
    let t_down = down_points[1].1;
    let dir2 = tempfile::tempdir().unwrap();
    let rdb = dir2.path().join("x.rdb");
    let out = run_flashback(
        &[
            "restore".as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
            "--at".as_ref(),
            at_arg(t_down).as_ref(),
            "--rdb".as_ref(),
            rdb.as_os_str(),
        ],
        Duration::from_secs(300),
    );
    eprintln!(
        "[{test}] restore --at a time while the agent was down:\n{}",
        out.all()
    );
    if !(out.stdout.contains("--at-offset") || out.stderr.contains("--at-offset")) {
        failures.push(format!(
            "restore --at a time while the agent was down (inside the catch-up interval) should say so and point to --at-offset; it printed:\n{}",
            out.all()
        ));
    }
    eprintln!("[{test}] finished in {:?}", started.elapsed());
    finish(test, seed, &w, failures, &agent.log_text());
}

/// The oracle itself, with no Flashback involved: a real redis-server replica follows the same
/// workload, and at every point (once it has applied the primary's offset) its state, and the
/// state of a server loading its RDB, must equal the primary's. If this fails, a mismatch in the
/// tests above says nothing about Flashback.
#[test]
fn oracle_agrees_with_a_real_replica() {
    let test = "oracle_agrees_with_a_real_replica";
    let seed = seed_for(test, 4);
    let primary = RedisProc::start(&[]);
    let mut w = Workload::new(seed, primary.conn());
    w.burst(200);
    w.reap_ephemeral();
    let port = primary.port.to_string();
    let replica = RedisProc::start(&["--replicaof", "127.0.0.1", &port]);
    let mut failures = Vec::new();
    for phase in 1..=6 {
        w.burst(200);
        let p = record(&mut w, &primary, None, &format!("phase{phase}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = parse_info(&replica.info_replication());
            if info.master_offset >= p.offset
                && replica.info_replication().contains("master_link_status:up")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not reach offset {} in 60 s:\n{}",
                p.offset,
                replica.info_replication()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = state(&mut replica.conn());
        if got != p.state {
            failures.push(format!(
                "replica at {}:\n    want {}\n    got  {got}",
                p.label, p.state
            ));
        }
        if phase % 2 == 0 {
            assert_eq!(
                replica.conn().call(&["SAVE"]),
                Reply::Status(b"OK".to_vec())
            );
            let loaded = RedisProc::start_with_rdb(&replica.dir.path().join("dump.rdb"), &[]);
            let got = state(&mut loaded.conn());
            if got != p.state {
                failures.push(format!(
                    "the replica's RDB at {}:\n    want {}\n    got  {got}",
                    p.label, p.state
                ));
            }
        }
    }
    finish(test, seed, &w, failures, "");
}

/// Until `info --json` shows a restorable window of the store reaching `t_ms`: the agent has
/// made durable a record or heartbeat at or after it (instead of sleeping and hoping one came).
pub(crate) fn wait_window_reaches(store: &Path, t_ms: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = info_json(store);
        let reached = info["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["windows"].as_array().into_iter().flatten())
            .filter_map(|w| w["to_ms"].as_u64())
            .any(|to| to >= t_ms);
        if reached {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no restorable window reached {t_ms} within 20 s: {info}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kill -9, then more writes than the primary's backlog holds (16 KB here): the restart must
/// full-resync into a SECOND generation, both generations restore exactly, and an instant in
/// the gap between them is refused instead of being papered over with a neighbour's state.
#[test]
fn differential_kill9_backlog_overrun_new_generation() {
    let test = "differential_kill9_backlog_overrun_new_generation";
    let seed = seed_for(test, 5);
    let started = Instant::now();
    let primary = RedisProc::start(&[
        "--repl-backlog-size",
        "16kb",
        "--repl-ping-replica-period",
        "1",
    ]);
    let mut w = Workload::new(seed, primary.conn());
    w.burst(150);
    w.reap_ephemeral();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(primary.port, &store, &[]);
    agent.wait_online(&primary);
    let mut points = vec![record(&mut w, &primary, Some(&mut agent), "gen1-online")];
    for phase in 1..=3 {
        w.burst(200);
        points.push(record(
            &mut w,
            &primary,
            Some(&mut agent),
            &format!("gen1-{phase}"),
        ));
    }
    // After a kill -9 the first generation's window ends at the last durable evidence: the
    // last record, or the agent's heartbeat (about every second) while idle. Give it time
    // for one, so the last point's time is provably covered.
    wait_window_reaches(
        &store,
        points
            .last()
            .unwrap()
            .t_ms
            .expect("recorded with the agent up"),
    );
    agent.kill9();
    wait_no_replicas(&primary);
    let mut gap = Vec::new();
    for phase in 1..=2 {
        w.burst(300);
        let p = record(&mut w, &primary, None, &format!("gap{phase}"));
        gap.push((p, now_ms()));
    }
    // A write after the last gap point, so even the last one lies before the new base.
    w.conn.call(&["SET", "fb:after-gap", "1"]);
    let mut agent = Agent::start(primary.port, &store, &[]);
    agent.wait_online(&primary);
    agent.wait_caught_up(&primary);
    for phase in 1..=3 {
        w.burst(200);
        points.push(record(
            &mut w,
            &primary,
            Some(&mut agent),
            &format!("gen2-{phase}"),
        ));
    }
    agent.stop();
    eprintln!("[{test}] capture done in {:?}", started.elapsed());
    let mut failures = check_points(&store, &points, true);

    let info = info_json(&store);
    if json_generation_count(&info) != Some(2) {
        failures.push(format!(
            "after a backlog overrun the store should hold TWO generations; info --json reports {:?} (dirs on disk: {:?}):\n{}",
            json_generation_count(&info),
            generation_dirs(&store),
            serde_json::to_string_pretty(&info).unwrap()
        ));
    }
    for (p, t_down) in &gap {
        for args in [
            vec!["--at-offset".to_string(), p.offset.to_string()],
            vec!["--at".to_string(), at_arg(*t_down)],
        ] {
            let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            match try_restore_rdb(&store, &args) {
                Err(e) if e.contains("exit Some(1)") => eprintln!("  ok   {} {args:?} refused (in the gap)", p.label),
                Err(e) => failures.push(format!("{} {args:?} in the gap between generations: expected exit 1, got:\n{e}", p.label)),
                Ok(got) => failures.push(format!(
                    "{} {args:?} lies in the gap between generations, yet restore succeeded (state {}; the instant's true state \
                     is {}): a gap must be refused, not papered over",
                    p.label,
                    if got == p.state { "equal by luck" } else { "different" },
                    p.state
                )),
            }
        }
    }
    eprintln!("[{test}] finished in {:?}", started.elapsed());
    finish(test, seed, &w, failures, &agent.log_text());
}
