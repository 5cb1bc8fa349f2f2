//! A native, streaming reader of Redis and Valkey RDB files, and a small writer that copies
//! chosen entries verbatim into a new, valid RDB. No tokio, no network, one dependency.
//!
//! # What it reads
//! `REDIS0001`..`REDIS0012` and Valkey 9's `VALKEY080`; every value encoding those versions
//! define: strings (plain, integer, LZF), lists (plain, ziplist, quicklist v1 of ziplists,
//! quicklist v2 of listpacks and plain nodes), sets (plain, intset, listpack), sorted sets
//! (scores as text and binary, ziplist, listpack), hashes (plain, zipmap, ziplist, listpack,
//! and field TTLs: Redis 7.4+'s metadata and listpack-ex types, Valkey 9's HASH_2), streams
//! (listpacks v1–3 with consumer groups, PELs, consumers), function libraries, module values and
//! module AUX data in the self-describing opcode format (type 7), slot info and Valkey 9's slot
//! imports. The trailer's CRC-64 is checked (0 means `rdbchecksum no` and is accepted).
//!
//! # Layout
//! - [`reader`]: [`RdbReader`], the pull parser; `next()` yields [`Item`]s. An entry's value
//!   stays unread until [`RdbReader::summarize`] (counts only) or [`RdbReader::visit`]
//!   (elements through a [`Visitor`]); `next()` skips it otherwise.
//! - `value` and `stream`: the per-type decoders behind those two calls.
//! - [`encodings`]: listpack, ziplist, intset and zipmap walkers over one blob.
//! - `input`: the buffered byte source (offsets, running CRC, raw capture).
//! - [`writer`]: [`RdbWriter`] and [`filter_rdb`], to write a filtered base by copying entries.
//! - [`crc64`], [`lzf`]: Redis' checksum and string compression (the workspace's one copy).
//!
//! # Errors
//! Every error ([`Error`]) names the byte offset and, when known, the file; corrupt input is
//! refused, never a panic. No allocation is sized by a length read from the file: buffers
//! grow with bytes actually read, and counts drive loops that each consume input.

pub mod crc64;
pub mod encodings;
pub mod error;
mod input;
pub mod lzf;
pub mod reader;
mod stream;
mod value;
pub mod writer;

pub use error::{At, Error, Result};
pub use input::Spill;
pub use reader::RdbReader;
pub use stream::{StreamConsumer, StreamGroup, StreamId, StreamMeta, StreamPending};
pub use writer::{filter_rdb, FilterCounts, RdbWriter};

/// Who wrote the file, by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    Redis,
    Valkey,
}

/// The 9-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: Magic,
    /// 1..=12 for `REDIS`, 80 for `VALKEY`.
    pub version: u32,
    /// The bytes as in the file (a writer copies them).
    pub raw: [u8; 9],
}

/// A value's type as the TYPE command names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    String,
    List,
    Set,
    ZSet,
    Hash,
    Stream,
    Module,
}

impl Kind {
    /// TYPE's answer (a module value's TYPE is its module type name: see [`ValueSummary::module`]).
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::ZSet => "zset",
            Kind::Hash => "hash",
            Kind::Stream => "stream",
            Kind::Module => "module",
        }
    }
}

/// One item of an RDB file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Aux {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    SelectDb(u64),
    /// A hint of the db's sizes (the loader pre-sizes its tables).
    ResizeDb {
        keys: u64,
        expires: u64,
    },
    /// Cluster mode: a slot's sizes (a hint, like RESIZEDB).
    SlotInfo {
        slot: u64,
        keys: u64,
        expires: u64,
    },
    /// Valkey 9: a slot import in progress (job name, slot ranges).
    SlotImport {
        job: Vec<u8>,
        ranges: Vec<(u64, u64)>,
    },
    /// A function library (FUNCTION2): its code, as FUNCTION LOAD takes it.
    Function(Vec<u8>),
    ModuleAux {
        module: String,
        encver: u64,
        when: u64,
    },
    /// A key; its name is [`RdbReader::key`], its value is read next.
    Entry(EntryInfo),
    /// The EOF marker; the checksum was checked. `stored_crc` is None before RDB 5.
    End {
        stored_crc: Option<u64>,
        computed_crc: u64,
    },
}

/// What precedes an entry's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo {
    pub db: u64,
    /// File offset of the entry's first byte (its first opcode).
    pub offset: u64,
    /// The RDB value type byte (its encoding).
    pub rdb_type: u8,
    pub kind: Kind,
    /// Absolute expiry, ms since the epoch.
    pub expire_ms: Option<i64>,
    /// LRU idle seconds (maxmemory-policy *-lru).
    pub idle: Option<u64>,
    /// LFU frequency (maxmemory-policy *-lfu).
    pub freq: Option<u8>,
}

/// What reading a value found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSummary {
    pub kind: Kind,
    /// What the server reports for it: STRLEN, LLEN, SCARD, ZCARD, HLEN or XLEN; for a module
    /// value, the number of opcode-tagged fields it holds.
    pub elements: u64,
    /// The entry's size in the file, from its first opcode to the end of its value.
    pub entry_bytes: u64,
    /// A module value's 9-character type name (what TYPE answers for it).
    pub module: Option<String>,
}

/// One field of a module value (RDB_MODULE_OPCODE_*).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModuleField<'a> {
    Int(u64),
    Float(f64),
    Double(f64),
    String(&'a [u8]),
}

/// Receives a value's elements from [`RdbReader::visit`]. Every method has an empty default;
/// integers stored in compact encodings arrive as their decimal text, as the server replies.
pub trait Visitor {
    fn string(&mut self, _value: &[u8]) {}
    fn list_item(&mut self, _item: &[u8]) {}
    fn set_member(&mut self, _member: &[u8]) {}
    fn zset_member(&mut self, _member: &[u8], _score: f64) {}
    /// `expire_ms`: the field's own absolute TTL (HPEXPIRETIME), when it has one.
    fn hash_field(&mut self, _field: &[u8], _value: &[u8], _expire_ms: Option<i64>) {}
    /// A live (not deleted) stream entry with its field/value pairs.
    fn stream_entry(&mut self, _id: StreamId, _fields: &[(Vec<u8>, Vec<u8>)]) {}
    fn stream_meta(&mut self, _meta: &StreamMeta) {}
    fn stream_group(&mut self, _group: &StreamGroup) {}
    /// A module value starts: its type name and encoding version.
    fn module_value(&mut self, _module: &str, _encver: u64) {}
    fn module_field(&mut self, _field: ModuleField<'_>) {}
}

/// The 9-character name a module id encodes (its top 54 bits, 6 bits a character).
pub fn module_name(id: u64) -> String {
    const SET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut name = [0u8; 9];
    let mut v = id >> 10;
    for c in name.iter_mut().rev() {
        *c = SET[(v & 63) as usize];
        v >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// Is `t` a value type byte (not an opcode) in a file with this magic?
pub(crate) fn is_value_type(t: u8, magic: Magic) -> bool {
    match magic {
        Magic::Redis => matches!(t, 0..=7 | 9..=25),
        Magic::Valkey => matches!(t, 0..=7 | 9..=22),
    }
}

/// The TYPE of a value type byte.
pub fn kind_of(t: u8, magic: Magic) -> Kind {
    match t {
        0 => Kind::String,
        1 | 10 | 14 | 18 => Kind::List,
        2 | 11 | 20 => Kind::Set,
        3 | 5 | 12 | 17 => Kind::ZSet,
        15 | 19 | 21 => Kind::Stream,
        6 | 7 => Kind::Module,
        22 if magic == Magic::Valkey => Kind::Hash,
        _ => Kind::Hash,
    }
}

/// The name of an RDB value type (its encoding), for reports: `hash-listpack`, `list-quicklist2`…
pub fn encoding_name(t: u8, magic: Magic) -> &'static str {
    match (t, magic) {
        (0, _) => "string",
        (1, _) => "list",
        (2, _) => "set",
        (3, _) => "zset",
        (4, _) => "hash",
        (5, _) => "zset2",
        (6, _) => "module-pre-ga",
        (7, _) => "module2",
        (9, _) => "hash-zipmap",
        (10, _) => "list-ziplist",
        (11, _) => "set-intset",
        (12, _) => "zset-ziplist",
        (13, _) => "hash-ziplist",
        (14, _) => "list-quicklist",
        (15, _) => "stream-listpacks",
        (16, _) => "hash-listpack",
        (17, _) => "zset-listpack",
        (18, _) => "list-quicklist2",
        (19, _) => "stream-listpacks2",
        (20, _) => "set-listpack",
        (21, _) => "stream-listpacks3",
        (22, Magic::Valkey) => "hash2",
        (22, Magic::Redis) => "hash-metadata-pre-ga",
        (23, _) => "hash-listpack-ex-pre-ga",
        (24, _) => "hash-metadata",
        (25, _) => "hash-listpack-ex",
        _ => "unknown",
    }
}
