//! The builtin command table: every command that can appear in the replication stream of Redis
//! 7.0–8.2 or Valkey 8–9 (the write commands, plus the ones the stream carries without a
//! `write` flag: SELECT, MULTI/EXEC, PING, REPLCONF, PUBLISH, EVAL/FCALL, FUNCTION, SCRIPT,
//! PFCOUNT's cache update), and the read commands with movable keys, with the key specs those
//! servers' `COMMAND` replies give. Written by hand from the servers' documented specs and checked
//! against their live replies by `tests/e2e/commands.rs`; used when a generation has no stored
//! `COMMAND` reply and for commands a stored reply lacks.

use super::{BeginSearch, FindKeys, KeySpec};

/// A key spec in short: `I(index, lastkey, step)`, `L(index, lastkey, step, limit)`,
/// `N(index, keynumidx, firstkey, step)`, `W(keyword, startfrom, lastkey, step, limit)`, or `U`
/// (unknown / incomplete: the command has hand-written code, `super::Special`).
#[derive(Debug, Clone, Copy)]
pub(super) enum K {
    I(usize, i64, usize),
    N(usize, usize, usize, usize),
    W(&'static str, i64, i64, usize, usize),
    U,
}

impl K {
    pub(super) fn spec(&self) -> KeySpec {
        let (begin, find) = match *self {
            K::I(index, lastkey, step) => (
                BeginSearch::Index(index),
                FindKeys::Range {
                    lastkey,
                    step,
                    limit: 0,
                },
            ),
            K::N(index, keynumidx, firstkey, step) => (
                BeginSearch::Index(index),
                FindKeys::Keynum {
                    keynumidx,
                    firstkey,
                    step,
                },
            ),
            K::W(keyword, startfrom, lastkey, step, limit) => (
                BeginSearch::Keyword {
                    keyword: keyword.as_bytes().to_vec(),
                    startfrom,
                },
                FindKeys::Range {
                    lastkey,
                    step,
                    limit,
                },
            ),
            K::U => (BeginSearch::Unknown, FindKeys::Unknown),
        };
        KeySpec {
            begin,
            find,
            incomplete: matches!(self, K::U),
            not_key: false,
        }
    }
}

use K::*;

const NONE: &[K] = &[];
/// The key at argv\[1\].
const ONE: &[K] = &[I(1, 0, 1)];
/// argv\[1\] and argv\[2\] (RENAME, COPY, LMOVE, …).
const TWO: &[K] = &[I(1, 0, 1), I(2, 0, 1)];
/// Every argument from argv\[1\] (DEL, UNLINK, PFCOUNT).
const ALL: &[K] = &[I(1, -1, 1)];
/// A destination then sources (SUNIONSTORE, PFMERGE).
const DST_SRCS: &[K] = &[I(1, 0, 1), I(2, -1, 1)];
/// Blocking pops: keys then a timeout.
const BLOCKING: &[K] = &[I(1, -2, 1)];
/// `numkeys` at argv\[1\] then the keys (LMPOP, ZMPOP, SINTERCARD, ZUNION, …).
const NUM1: &[K] = &[N(1, 0, 1, 1)];
/// `numkeys` at argv\[2\] (EVAL, FCALL, BLMPOP, BZMPOP).
const NUM2: &[K] = &[N(2, 0, 1, 1)];
/// A destination, then `numkeys` and the sources (ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE).
const DST_NUM: &[K] = &[I(1, 0, 1), N(2, 0, 1, 1)];
/// Pairs of key and value (MSET, MSETNX).
const PAIRS: &[K] = &[I(1, -1, 2)];

/// (name, arity, write, key specs); `parent|sub` names a subcommand.
#[rustfmt::skip]
pub(super) const TABLE: &[(&str, i16, bool, &[K])] = &[
    // Strings and bitmaps.
    ("set", -3, true, ONE), ("setnx", 3, true, ONE), ("setex", 4, true, ONE),
    ("psetex", 4, true, ONE), ("getset", 3, true, ONE), ("getdel", 2, true, ONE),
    ("getex", -2, true, ONE), ("append", 3, true, ONE), ("setrange", 4, true, ONE),
    ("incr", 2, true, ONE), ("incrby", 3, true, ONE), ("incrbyfloat", 3, true, ONE),
    ("decr", 2, true, ONE), ("decrby", 3, true, ONE), ("mset", -3, true, PAIRS),
    ("msetnx", -3, true, PAIRS), ("msetex", -4, true, &[N(1, 0, 1, 2)]),
    ("delifeq", 3, true, ONE), ("setbit", 4, true, ONE), ("bitfield", -2, true, ONE),
    ("bitop", -4, true, &[I(2, 0, 1), I(3, -1, 1)]),
    // Hashes, with the field-expiry family (Redis 7.4+, Valkey 9).
    ("hset", -4, true, ONE), ("hsetnx", 4, true, ONE), ("hmset", -4, true, ONE),
    ("hdel", -3, true, ONE), ("hincrby", 4, true, ONE), ("hincrbyfloat", 4, true, ONE),
    ("hexpire", -6, true, ONE), ("hpexpire", -6, true, ONE), ("hexpireat", -6, true, ONE),
    ("hpexpireat", -6, true, ONE), ("hpersist", -5, true, ONE), ("hsetex", -6, true, ONE),
    ("hgetex", -5, true, ONE), ("hgetdel", -5, true, ONE),
    // Lists.
    ("lpush", -3, true, ONE), ("rpush", -3, true, ONE), ("lpushx", -3, true, ONE),
    ("rpushx", -3, true, ONE), ("linsert", 5, true, ONE), ("lset", 4, true, ONE),
    ("lrem", 4, true, ONE), ("ltrim", 4, true, ONE), ("lpop", -2, true, ONE),
    ("rpop", -2, true, ONE), ("rpoplpush", 3, true, TWO), ("lmove", 5, true, TWO),
    ("blmove", 6, true, TWO), ("brpoplpush", 4, true, TWO), ("blpop", -3, true, BLOCKING),
    ("brpop", -3, true, BLOCKING), ("lmpop", -4, true, NUM1), ("blmpop", -5, true, NUM2),
    // Sets.
    ("sadd", -3, true, ONE), ("srem", -3, true, ONE), ("spop", -2, true, ONE),
    ("smove", 4, true, TWO), ("sinterstore", -3, true, DST_SRCS),
    ("sunionstore", -3, true, DST_SRCS), ("sdiffstore", -3, true, DST_SRCS),
    ("sintercard", -3, false, NUM1),
    // Sorted sets.
    ("zadd", -4, true, ONE), ("zincrby", 4, true, ONE), ("zrem", -3, true, ONE),
    ("zremrangebylex", 4, true, ONE), ("zremrangebyrank", 4, true, ONE),
    ("zremrangebyscore", 4, true, ONE), ("zpopmin", -2, true, ONE), ("zpopmax", -2, true, ONE),
    ("bzpopmin", -3, true, BLOCKING), ("bzpopmax", -3, true, BLOCKING),
    ("zmpop", -4, true, NUM1), ("bzmpop", -5, true, NUM2),
    ("zunionstore", -4, true, DST_NUM), ("zinterstore", -4, true, DST_NUM),
    ("zdiffstore", -4, true, DST_NUM), ("zrangestore", -5, true, TWO),
    ("zunion", -3, false, NUM1), ("zinter", -3, false, NUM1), ("zdiff", -3, false, NUM1),
    ("zintercard", -3, false, NUM1),
    // Streams.
    ("xadd", -5, true, ONE), ("xtrim", -4, true, ONE), ("xdel", -3, true, ONE),
    ("xdelex", -5, true, ONE), ("xack", -4, true, ONE), ("xackdel", -6, true, ONE),
    ("xclaim", -6, true, ONE), ("xautoclaim", -6, true, ONE), ("xsetid", -3, true, ONE),
    ("xreadgroup", -7, true, &[W("STREAMS", 4, -1, 1, 2)]),
    ("xread", -4, false, &[W("STREAMS", 1, -1, 1, 2)]),
    ("xgroup|create", -5, true, &[I(2, 0, 1)]), ("xgroup|setid", -5, true, &[I(2, 0, 1)]),
    ("xgroup|destroy", 4, true, &[I(2, 0, 1)]),
    ("xgroup|createconsumer", 5, true, &[I(2, 0, 1)]),
    ("xgroup|delconsumer", 5, true, &[I(2, 0, 1)]),
    // Geo and HyperLogLog.
    ("geoadd", -5, true, ONE),
    ("georadius", -6, true, &[I(1, 0, 1), W("STORE", 6, 0, 1, 0), W("STOREDIST", 6, 0, 1, 0)]),
    ("georadiusbymember", -5, true,
        &[I(1, 0, 1), W("STORE", 5, 0, 1, 0), W("STOREDIST", 5, 0, 1, 0)]),
    ("geosearchstore", -8, true, TWO),
    ("pfadd", -2, true, ONE), ("pfmerge", -2, true, DST_SRCS), ("pfdebug", 3, true, &[I(2, 0, 1)]),
    // PFCOUNT is not flagged write, but replicates when it refreshes the cached cardinality.
    ("pfcount", -2, false, ALL),
    // Generic.
    ("del", -2, true, ALL), ("unlink", -2, true, ALL), ("rename", 3, true, TWO),
    ("renamenx", 3, true, TWO), ("copy", -3, true, TWO), ("move", 3, true, ONE),
    ("expire", -3, true, ONE), ("pexpire", -3, true, ONE), ("expireat", -3, true, ONE),
    ("pexpireat", -3, true, ONE), ("persist", 2, true, ONE), ("restore", -4, true, ONE),
    ("restore-asking", -4, true, ONE), ("sort", -2, true, &[I(1, 0, 1), U, U]),
    ("sort_ro", -2, false, &[I(1, 0, 1), U]),
    ("migrate", -6, true, &[I(3, 0, 1), U]),
    // Scripting and functions: since 7.0 their effects replicate (MULTI … EXEC), older
    // servers sent the script itself.
    ("eval", -3, false, NUM2), ("evalsha", -3, false, NUM2), ("eval_ro", -3, false, NUM2),
    ("evalsha_ro", -3, false, NUM2), ("fcall", -3, false, NUM2), ("fcall_ro", -3, false, NUM2),
    ("function|load", -3, true, NONE), ("function|delete", 3, true, NONE),
    ("function|flush", -2, true, NONE), ("function|restore", -3, true, NONE),
    ("script|load", 3, false, NONE), ("script|flush", -2, false, NONE),
    // Server and the stream's own traffic.
    ("flushall", -1, true, NONE), ("flushdb", -1, true, NONE), ("swapdb", 3, true, NONE),
    ("select", 2, false, NONE), ("multi", 1, false, NONE), ("exec", 1, false, NONE),
    ("ping", -1, false, NONE), ("replconf", -1, false, NONE), ("publish", 3, false, NONE),
    ("spublish", 3, false, NONE), ("cluster|flushslot", -3, true, NONE),
];
