//! Segment summaries: what `flashback timeline` and `restore --before EVENT` need from a sealed
//! segment, computed by the agent while it writes the segment and stored beside it
//! (`generations/<gen>/summaries/<start>-<end>.sum`), so a long history is read as a few KiB
//! per segment instead of the whole log. The byte table is in docs/formats.md §7.
//!
//! A summary holds per-second buckets (writes by command family and by db, keys deleted, keys
//! given a TTL, and where the first delete and expire of that second sit), the destructive
//! events (FLUSHALL, FLUSHDB, SWAPDB, DEL/UNLINK with their keys, capped), the command names
//! seen with their counts, and a key filter ([`filter::KeyFilter`]). Every position is a
//! transaction's: `start_offset` where the event's MULTI…EXEC (or the record alone) starts, the
//! previous cut point, and `end_offset` where it ends, since a restore cuts only at boundaries.
//!
//! Stored as an [`envelope`](crate::envelope) (magic `FBSEGSUM`, version, length, crc32c) around
//! a binary payload of LEB128 varints: JSON was rejected because a summary of a busy segment
//! holds thousands of buckets, and the reader of a long history decodes hundreds of them.
//!
//! Rules the decoder checks, beyond the envelope: known flag bits and event kinds, buckets in
//! strictly increasing seconds, dbs in strictly increasing order inside a bucket, events and
//! spans inside `[start_offset, end_offset]` with `start <= end`, no more keys than counted,
//! command names sorted and distinct, a filter of 1..=16 probes and at least one word, and no
//! byte after the filter.

pub mod filter;

use crate::envelope;
use crate::error::{Error, Result};
use crate::varint;
pub use filter::KeyFilter;

pub const MAGIC: &[u8; 8] = b"FBSEGSUM";
pub const VERSION: u16 = 1;

/// Keys an event keeps by name; its `key_count` counts them all.
pub const MAX_EVENT_KEYS: usize = 16;
/// DEL/UNLINK events a summary keeps; past it `dels_complete` is false and a reader that needs
/// every delete of a key reads the segment (the key filter still says which segments).
pub const MAX_DEL_EVENTS: usize = 4096;

/// Command families, by what a command works on. Index into [`Bucket::by_family`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    String = 0,
    Hash,
    List,
    Set,
    Zset,
    Stream,
    /// Commands on keys of any type: DEL, UNLINK, EXPIRE…, RENAME, COPY, MOVE, RESTORE…
    Key,
    /// Commands on a whole database or the dataset: FLUSHALL, FLUSHDB, SWAPDB, scripts and
    /// functions.
    Generic,
    /// Anything else (PUBLISH, module commands, commands this build does not know).
    Other,
}

pub const FAMILIES: usize = 9;

impl Family {
    pub const ALL: [Family; FAMILIES] = [
        Family::String,
        Family::Hash,
        Family::List,
        Family::Set,
        Family::Zset,
        Family::Stream,
        Family::Key,
        Family::Generic,
        Family::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::String => "string",
            Family::Hash => "hash",
            Family::List => "list",
            Family::Set => "set",
            Family::Zset => "zset",
            Family::Stream => "stream",
            Family::Key => "key",
            Family::Generic => "generic",
            Family::Other => "other",
        }
    }
}

/// Where one transaction sits in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The cut point before it: the end offset of the previous boundary record.
    pub start_offset: u64,
    /// The cut point after it: the end offset of its last record (the EXEC).
    pub end_offset: u64,
    /// Arrival time of the record in question (not of the EXEC).
    pub time_ms: u64,
}

/// One second of the log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bucket {
    /// `time_ms / 1000` of the records counted.
    pub second: u64,
    /// Records that change data: every record but SELECT, PING, MULTI, EXEC and REPLCONF.
    pub writes: u64,
    pub by_family: [u64; FAMILIES],
    /// `(db, writes)`, dbs increasing, only dbs with writes.
    pub by_db: Vec<(u32, u64)>,
    /// Keys named by DEL and UNLINK (the primary's own expirations and evictions reach
    /// replicas as DEL/UNLINK too, so they count here).
    pub deleted: u64,
    /// Keys given a TTL by EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT.
    pub expired: u64,
    /// The transaction of the first DEL/UNLINK of this second (`deleted > 0`).
    pub first_delete: Option<Span>,
    /// The transaction of the first EXPIRE-family command of this second (`expired > 0`).
    pub first_expire: Option<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    FlushAll = 1,
    FlushDb = 2,
    SwapDb = 3,
    Del = 4,
}

impl EventKind {
    /// As `timeline --json` names it.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::FlushAll => "flushall",
            EventKind::FlushDb => "flushdb",
            EventKind::SwapDb => "swapdb",
            EventKind::Del => "del",
        }
    }

    fn from_u8(b: u8) -> Option<EventKind> {
        Some(match b {
            1 => EventKind::FlushAll,
            2 => EventKind::FlushDb,
            3 => EventKind::SwapDb,
            4 => EventKind::Del,
            _ => return None,
        })
    }
}

/// A destructive command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The db it ran in (FLUSHALL: the selected db, meaningless; SWAPDB: its first argument).
    pub db: u32,
    /// SWAPDB's second argument; 0 otherwise.
    pub other_db: u32,
    pub span: Span,
    /// The command's name, upper case, as sent (DEL or UNLINK, FLUSHALL…).
    pub command: Vec<u8>,
    /// Keys it named (DEL/UNLINK), all counted.
    pub key_count: u64,
    /// The first [`MAX_EVENT_KEYS`] of them.
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The segment's offsets, as its name and trailer have them.
    pub start_offset: u64,
    pub end_offset: u64,
    /// The segment starts inside MULTI…EXEC: spans starting at `start_offset` really start at
    /// the previous segment's `last_boundary`.
    pub start_in_multi: bool,
    /// The segment ends inside MULTI…EXEC: spans ending at `end_offset` really end at the next
    /// segment's `first_boundary`.
    pub end_in_multi: bool,
    /// Every DEL/UNLINK is in `events` (at most [`MAX_DEL_EVENTS`] were seen).
    pub dels_complete: bool,
    /// A record ran a command whose key positions the writer did not know (a module's): the
    /// filter may lack its keys, so [`may_touch`](Self::may_touch) answers true for any key.
    pub keys_unknown: bool,
    pub first_time_ms: u64,
    pub record_count: u64,
    /// End offsets of the first and the last boundary record, if any.
    pub first_boundary: Option<u64>,
    pub last_boundary: Option<u64>,
    pub buckets: Vec<Bucket>,
    /// In stream order.
    pub events: Vec<Event>,
    /// Every command name seen (upper case), sorted, with its count.
    pub commands: Vec<(Vec<u8>, u64)>,
    pub filter: KeyFilter,
}

impl Summary {
    /// False: no record of the segment touches `key` in `db`. True: one may (about 1% of
    /// segments that do not, see [`filter`]).
    pub fn may_touch(&self, db: u32, key: &[u8]) -> bool {
        self.keys_unknown || self.filter.may_contain(db, key)
    }

    /// How many records ran a command named `name` (upper case).
    pub fn command_count(&self, name: &[u8]) -> u64 {
        self.commands
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .map(|i| self.commands[i].1)
            .unwrap_or(0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(256 + self.buckets.len() * 24 + self.filter.words.len() * 8);
        let flags = u8::from(self.start_in_multi)
            | u8::from(self.end_in_multi) << 1
            | u8::from(self.dels_complete) << 2
            | u8::from(self.keys_unknown) << 3;
        p.push(flags);
        for v in [
            self.start_offset,
            self.end_offset,
            self.first_time_ms,
            self.record_count,
            self.first_boundary.map_or(0, |b| b + 1),
            self.last_boundary.map_or(0, |b| b + 1),
        ] {
            varint::put(&mut p, v);
        }
        varint::put(&mut p, self.buckets.len() as u64);
        for b in &self.buckets {
            varint::put(&mut p, b.second);
            varint::put(&mut p, b.writes);
            for f in b.by_family {
                varint::put(&mut p, f);
            }
            varint::put(&mut p, b.by_db.len() as u64);
            for &(db, n) in &b.by_db {
                varint::put(&mut p, db.into());
                varint::put(&mut p, n);
            }
            varint::put(&mut p, b.deleted);
            varint::put(&mut p, b.expired);
            for s in [b.first_delete, b.first_expire].into_iter().flatten() {
                put_span(&mut p, s);
            }
        }
        varint::put(&mut p, self.events.len() as u64);
        for e in &self.events {
            p.push(e.kind as u8);
            varint::put(&mut p, e.db.into());
            varint::put(&mut p, e.other_db.into());
            put_span(&mut p, e.span);
            put_bytes(&mut p, &e.command);
            varint::put(&mut p, e.key_count);
            varint::put(&mut p, e.keys.len() as u64);
            for k in &e.keys {
                put_bytes(&mut p, k);
            }
        }
        varint::put(&mut p, self.commands.len() as u64);
        for (name, n) in &self.commands {
            put_bytes(&mut p, name);
            varint::put(&mut p, *n);
        }
        p.push(self.filter.probes);
        varint::put(&mut p, self.filter.words.len() as u64);
        for w in &self.filter.words {
            p.extend_from_slice(&w.to_le_bytes());
        }
        envelope::encode(MAGIC, VERSION, &p)
    }

    /// Decodes and checks a summary; `file` names it in errors, which give the byte of the file.
    pub fn decode(file: &str, bytes: &[u8]) -> Result<Summary> {
        let (_, payload) = envelope::decode(file, MAGIC, VERSION, bytes)?;
        let mut r = Reader {
            file,
            buf: payload,
            pos: 0,
        };
        let flags = r.byte("flags")?;
        if flags & !0b1111 != 0 {
            return Err(r.bad(format!("unknown flag bits {flags:#04x}")));
        }
        let start_offset = r.var("start_offset")?;
        let end_offset = r.var("end_offset")?;
        if end_offset < start_offset {
            return Err(r.bad(format!(
                "end_offset {end_offset} is before start_offset {start_offset}"
            )));
        }
        let first_time_ms = r.var("first_time_ms")?;
        let record_count = r.var("record_count")?;
        let within = |r: &Reader, what: &str, v: u64| -> Result<u64> {
            if v < start_offset || v > end_offset {
                return Err(r.bad(format!(
                    "{what} {v} is outside the segment's offsets {start_offset}..{end_offset}"
                )));
            }
            Ok(v)
        };
        let boundary = |r: &mut Reader, what: &str| -> Result<Option<u64>> {
            match r.var(what)? {
                0 => Ok(None),
                v => within(r, what, v - 1).map(Some),
            }
        };
        let first_boundary = boundary(&mut r, "first_boundary")?;
        let last_boundary = boundary(&mut r, "last_boundary")?;
        let span = |r: &mut Reader| -> Result<Span> {
            let start = r.var("span start")?;
            let start_offset = within(r, "span start", start)?;
            let end = r.var("span end")?;
            let end_offset = within(r, "span end", end)?;
            let s = Span {
                start_offset,
                end_offset,
                time_ms: r.var("span time")?,
            };
            if s.end_offset < s.start_offset {
                return Err(r.bad("a span ends before it starts"));
            }
            Ok(s)
        };
        let n = r.count("bucket count", 2 + FAMILIES)?;
        let mut buckets: Vec<Bucket> = Vec::with_capacity(n);
        for _ in 0..n {
            let second = r.var("bucket second")?;
            if buckets.last().is_some_and(|b| b.second >= second) {
                return Err(r.bad("bucket seconds do not increase"));
            }
            let writes = r.var("bucket writes")?;
            let mut by_family = [0; FAMILIES];
            for f in &mut by_family {
                *f = r.var("family writes")?;
            }
            let dbs = r.count("db count", 2)?;
            let mut by_db: Vec<(u32, u64)> = Vec::with_capacity(dbs);
            for _ in 0..dbs {
                let db = r.db("bucket db")?;
                if by_db.last().is_some_and(|&(d, _)| d >= db) {
                    return Err(r.bad("bucket dbs do not increase"));
                }
                by_db.push((db, r.var("db writes")?));
            }
            let deleted = r.var("deleted")?;
            let expired = r.var("expired")?;
            let first_delete = if deleted > 0 {
                Some(span(&mut r)?)
            } else {
                None
            };
            let first_expire = if expired > 0 {
                Some(span(&mut r)?)
            } else {
                None
            };
            buckets.push(Bucket {
                second,
                writes,
                by_family,
                by_db,
                deleted,
                expired,
                first_delete,
                first_expire,
            });
        }
        let n = r.count("event count", 8)?;
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let kind_byte = r.byte("event kind")?;
            let kind = EventKind::from_u8(kind_byte)
                .ok_or_else(|| r.bad(format!("unknown event kind {kind_byte}")))?;
            let db = r.db("event db")?;
            let other_db = r.db("event other db")?;
            let span = span(&mut r)?;
            let command = r.bytes("event command")?.to_vec();
            let key_count = r.var("event key count")?;
            let nkeys = r.count("event keys", 1)?;
            if nkeys as u64 > key_count || nkeys > MAX_EVENT_KEYS {
                return Err(r.bad(format!(
                    "an event keeps {nkeys} keys but counts {key_count} (at most {MAX_EVENT_KEYS} are kept)"
                )));
            }
            let mut keys = Vec::with_capacity(nkeys);
            for _ in 0..nkeys {
                keys.push(r.bytes("event key")?.to_vec());
            }
            events.push(Event {
                kind,
                db,
                other_db,
                span,
                command,
                key_count,
                keys,
            });
        }
        let n = r.count("command count", 2)?;
        let mut commands: Vec<(Vec<u8>, u64)> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.bytes("command name")?.to_vec();
            if commands.last().is_some_and(|(prev, _)| *prev >= name) {
                return Err(r.bad("command names are not sorted and distinct"));
            }
            commands.push((name, r.var("command count")?));
        }
        let probes = r.byte("filter probes")?;
        if !(1..=16).contains(&probes) {
            return Err(r.bad(format!("a filter of {probes} probes (1..=16 are valid)")));
        }
        let words = r.count("filter words", 8)?;
        if words == 0 {
            return Err(r.bad("a filter of no words"));
        }
        let mut ws = Vec::with_capacity(words);
        for _ in 0..words {
            let b = r.take(8, "filter word")?;
            ws.push(u64::from_le_bytes(b.try_into().expect("8 bytes")));
        }
        if r.pos != r.buf.len() {
            return Err(r.bad(format!("{} bytes after the filter", r.buf.len() - r.pos)));
        }
        Ok(Summary {
            start_offset,
            end_offset,
            start_in_multi: flags & 1 != 0,
            end_in_multi: flags & 2 != 0,
            dels_complete: flags & 4 != 0,
            keys_unknown: flags & 8 != 0,
            first_time_ms,
            record_count,
            first_boundary,
            last_boundary,
            buckets,
            events,
            commands,
            filter: KeyFilter { probes, words: ws },
        })
    }
}

fn put_span(p: &mut Vec<u8>, s: Span) {
    varint::put(p, s.start_offset);
    varint::put(p, s.end_offset);
    varint::put(p, s.time_ms);
}

fn put_bytes(p: &mut Vec<u8>, b: &[u8]) {
    varint::put(p, b.len() as u64);
    p.extend_from_slice(b);
}

struct Reader<'a> {
    file: &'a str,
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    /// An error at the current byte of the file (the payload starts after the envelope header).
    fn bad(&self, what: impl Into<String>) -> Error {
        Error::corrupt(
            self.file,
            (envelope::HEADER_LEN + self.pos) as u64,
            what.into(),
        )
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.bad(format!("truncated in {what}")))?;
        self.pos += 1;
        Ok(b)
    }

    fn var(&mut self, what: &str) -> Result<u64> {
        let at = self.pos;
        varint::get(self.buf, &mut self.pos).ok_or_else(|| {
            self.pos = at;
            self.bad(format!("bad or truncated varint in {what}"))
        })
    }

    fn db(&mut self, what: &str) -> Result<u32> {
        let v = self.var(what)?;
        u32::try_from(v).map_err(|_| self.bad(format!("{what} {v} exceeds u32")))
    }

    /// A count of items of at least `min_bytes` each: more than the bytes left is corruption,
    /// caught before anything is allocated for it.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let v = self.var(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if v.saturating_mul(min_bytes as u64) > left {
            return Err(self.bad(format!("{what} {v} cannot fit in the {left} bytes left")));
        }
        Ok(v as usize)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.bad(format!("truncated in {what}")));
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn bytes(&mut self, what: &str) -> Result<&[u8]> {
        let n = self.var(what)?;
        let n = usize::try_from(n).map_err(|_| self.bad(format!("{what} length {n}")))?;
        self.take(n, what)
    }
}

#[cfg(test)]
mod tests;
