//! Records in, a [`Summary`] out: the one place that decides what a record counts as (its
//! family, whether it writes, deletes or gives a TTL, which keys it touches, whether it is a
//! destructive event). The capture agent feeds it every record of the tail it writes and
//! stores the result at the seal; `timeline` and `restore --before` feed it a segment's
//! records when a summary is missing or unreadable, so both paths agree by construction.
//!
//! Positions are transactions', not records': a record inside MULTI…EXEC is pending until the
//! record that ends the transaction (the first `boundary` record), whose end offset becomes
//! the `end_offset` of everything pending, and the `start_offset` of each is the end of the
//! boundary before it. A restore can only cut at boundaries, so these are the two offsets
//! `--before` and `--after` land on.

use super::keys;
use flashback_format::segment::Record;
use flashback_format::summary::{
    Bucket, Event, EventKind, Family, KeyFilter, Span, Summary, FAMILIES, MAX_DEL_EVENTS,
    MAX_EVENT_KEYS,
};
use std::collections::{BTreeMap, HashSet};

/// A `Hasher` that returns the `u64` it is given: for sets of values that are hashes already.
#[derive(Default)]
pub struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64s are hashed through it; anything else folds in FNV-style, never panics.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Where a span's end is still unknown: it is the end of the transaction in progress.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Event(usize),
    FirstDelete(usize),
    FirstExpire(usize),
    Hit(usize),
}

/// Records a reader looks for beyond what a summary keeps (`cmd:NAME`, the deletes of one key),
/// found in the same pass, with the same transaction spans.
#[derive(Debug, Clone, Default)]
pub enum Want {
    #[default]
    Nothing,
    /// Every record of this command (upper case).
    Command(Vec<u8>),
    /// Every DEL/UNLINK naming one of these keys.
    DeletesOf(Vec<Vec<u8>>),
}

/// A record a [`Want`] asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub span: Span,
    pub db: u32,
    pub command: Vec<u8>,
    /// For `DeletesOf`: the wanted keys it names.
    pub keys: Vec<Vec<u8>>,
}

/// What a record is, as far as summaries care.
pub struct Summarizer {
    start_offset: u64,
    start_in_multi: bool,
    /// The end offset of the last boundary record (the segment's start before any).
    txn_start: u64,
    in_multi: bool,
    unresolved: Vec<Slot>,
    first_time_ms: u64,
    record_count: u64,
    first_boundary: Option<u64>,
    last_boundary: Option<u64>,
    buckets: Vec<Bucket>,
    events: Vec<Event>,
    del_events: usize,
    dels_complete: bool,
    keys_unknown: bool,
    commands: BTreeMap<Vec<u8>, u64>,
    /// The last command name seen and how many times in a row since it was counted into
    /// `commands`: a stream of the same command (the usual case) costs a compare, not a map
    /// search, per record.
    run: (Vec<u8>, u64),
    /// Already hashes ([`flashback_format::summary::filter::key_hash`], mixed): hashed again
    /// by the identity, not SipHash, which was a tenth of the agent's CPU per record.
    keys: HashSet<u64, std::hash::BuildHasherDefault<Identity>>,
    want: Want,
    hits: Vec<Hit>,
}

/// A record's metadata, whole or from a fragmented record's final fragment.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub end_offset: u64,
    pub time_ms: u64,
    pub db: u32,
    pub boundary: bool,
}

impl From<&Record> for Meta {
    fn from(r: &Record) -> Meta {
        Meta {
            end_offset: r.end_offset,
            time_ms: r.time_ms,
            db: r.db,
            boundary: r.boundary,
        }
    }
}

impl Summarizer {
    /// For a segment whose header has this `start_offset` and `start_in_multi`.
    pub fn new(start_offset: u64, start_in_multi: bool) -> Summarizer {
        Summarizer {
            start_offset,
            start_in_multi,
            txn_start: start_offset,
            in_multi: start_in_multi,
            unresolved: Vec::new(),
            first_time_ms: 0,
            record_count: 0,
            first_boundary: None,
            last_boundary: None,
            buckets: Vec::new(),
            events: Vec::new(),
            del_events: 0,
            dels_complete: true,
            keys_unknown: false,
            commands: BTreeMap::new(),
            run: (Vec::new(), 0),
            keys: HashSet::default(),
            want: Want::Nothing,
            hits: Vec::new(),
        }
    }

    /// Also collects the records `want` asks for ([`finish_with_hits`](Self::finish_with_hits)).
    pub fn wanting(mut self, want: Want) -> Summarizer {
        self.want = want;
        self
    }

    pub fn record(&mut self, r: &Record) {
        self.add(Meta::from(r), &r.resp);
    }

    /// A record given by its metadata and the start of its RESP bytes (`resp` may be a prefix
    /// of a command too big to hold: arguments past it are not seen, which only matters for
    /// the keys of a multi-key command of hundreds of MB).
    pub fn add(&mut self, m: Meta, resp: &[u8]) {
        self.add_argv(m, &keys::argv_prefix(resp));
    }

    /// Counts the current run of one command name into `commands`.
    fn count_run(&mut self) {
        let (name, n) = std::mem::take(&mut self.run);
        if n > 0 {
            *self.commands.entry(name).or_insert(0) += n;
        }
    }

    /// [`Summarizer::record`] of a record whose arguments the caller has already parsed (the
    /// capture agent's framer): the RESP is not parsed a second time.
    pub fn record_argv(&mut self, r: &Record, argv: &[&[u8]]) {
        self.add_argv(Meta::from(r), argv);
    }

    fn add_argv(&mut self, m: Meta, argv: &[&[u8]]) {
        self.record_count += 1;
        if self.first_time_ms == 0 {
            self.first_time_ms = m.time_ms;
        }
        // Uppercased on the stack for the usual name: this runs for every record stored.
        let mut buf = [0u8; 32];
        let long;
        let name: &[u8] = match argv.first() {
            Some(n) if n.len() <= buf.len() => {
                let b = &mut buf[..n.len()];
                b.copy_from_slice(n);
                b.make_ascii_uppercase();
                b
            }
            Some(n) => {
                long = n.to_ascii_uppercase();
                &long
            }
            None => &[],
        };
        if !name.is_empty() {
            if self.run.0 == name {
                self.run.1 += 1;
            } else {
                self.count_run();
                self.run = (name.to_vec(), 1);
            }
        }
        let start = self.txn_start;
        let family = keys::family(name);
        if let Some(family) = family {
            let b = self.bucket(m.time_ms);
            b.writes += 1;
            b.by_family[family as usize] += 1;
            match b.by_db.binary_search_by_key(&m.db, |&(d, _)| d) {
                Ok(i) => b.by_db[i].1 += 1,
                Err(i) => b.by_db.insert(i, (m.db, 1)),
            }
        }
        let info = keys::lookup(argv);
        if family.is_some() && info.is_none() {
            self.keys_unknown = true;
        }
        let positions = info.map(|i| i.key_positions(argv)).unwrap_or_default();
        for (db, key) in keys::touched_at(name, argv, m.db, positions) {
            self.keys
                .insert(flashback_format::summary::filter::key_hash(db, key));
        }
        let span = Span {
            start_offset: start,
            end_offset: m.end_offset,
            time_ms: m.time_ms,
        };
        match name {
            b"DEL" | b"UNLINK" => {
                let n = argv.len().saturating_sub(1) as u64;
                let bi = self.buckets.len() - 1;
                let b = &mut self.buckets[bi];
                b.deleted += n;
                if b.first_delete.is_none() && n > 0 {
                    b.first_delete = Some(span);
                    self.unresolved.push(Slot::FirstDelete(bi));
                }
                if self.del_events < MAX_DEL_EVENTS {
                    self.del_events += 1;
                    let keys = argv[1..].iter().take(MAX_EVENT_KEYS).map(|k| k.to_vec());
                    self.event(EventKind::Del, m.db, 0, span, name, n, keys.collect());
                } else {
                    self.dels_complete = false;
                }
            }
            b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" => {
                let bi = self.buckets.len() - 1;
                let b = &mut self.buckets[bi];
                b.expired += 1;
                if b.first_expire.is_none() {
                    b.first_expire = Some(span);
                    self.unresolved.push(Slot::FirstExpire(bi));
                }
            }
            b"FLUSHALL" => self.event(EventKind::FlushAll, m.db, 0, span, name, 0, vec![]),
            b"FLUSHDB" => self.event(EventKind::FlushDb, m.db, 0, span, name, 0, vec![]),
            b"SWAPDB" => {
                let db = |i: usize| {
                    argv.get(i)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|s| s.parse::<u32>().ok())
                };
                if let (Some(a), Some(b)) = (db(1), db(2)) {
                    self.event(EventKind::SwapDb, a, b, span, name, 0, vec![]);
                }
            }
            _ => {}
        }
        let hit_keys: Option<Vec<Vec<u8>>> = match &self.want {
            Want::Nothing => None,
            Want::Command(c) => (c.as_slice() == name).then(Vec::new),
            Want::DeletesOf(ks) if matches!(name, b"DEL" | b"UNLINK") => {
                let named: Vec<Vec<u8>> = ks
                    .iter()
                    .filter(|k| argv[1..].iter().any(|a| a == &k.as_slice()))
                    .cloned()
                    .collect();
                (!named.is_empty()).then_some(named)
            }
            Want::DeletesOf(_) => None,
        };
        if let Some(keys) = hit_keys {
            self.unresolved.push(Slot::Hit(self.hits.len()));
            self.hits.push(Hit {
                span,
                db: m.db,
                command: name.to_vec(),
                keys,
            });
        }
        self.in_multi = !m.boundary;
        if m.boundary {
            for s in self.unresolved.drain(..) {
                let end = m.end_offset;
                match s {
                    Slot::Hit(i) => self.hits[i].span.end_offset = end,
                    Slot::Event(i) => self.events[i].span.end_offset = end,
                    Slot::FirstDelete(i) => {
                        if let Some(sp) = &mut self.buckets[i].first_delete {
                            sp.end_offset = end
                        }
                    }
                    Slot::FirstExpire(i) => {
                        if let Some(sp) = &mut self.buckets[i].first_expire {
                            sp.end_offset = end
                        }
                    }
                }
            }
            self.txn_start = m.end_offset;
            self.first_boundary.get_or_insert(m.end_offset);
            self.last_boundary = Some(m.end_offset);
        }
    }

    /// The bucket of `time_ms`'s second (times never decrease along a segment, so it is the
    /// last one or a new one).
    fn bucket(&mut self, time_ms: u64) -> &mut Bucket {
        let second = time_ms / 1000;
        if self.buckets.last().is_none_or(|b| b.second < second) {
            self.buckets.push(Bucket {
                second,
                ..Default::default()
            });
        }
        self.buckets.last_mut().expect("pushed above")
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        kind: EventKind,
        db: u32,
        other_db: u32,
        span: Span,
        command: &[u8],
        key_count: u64,
        keys: Vec<Vec<u8>>,
    ) {
        self.unresolved.push(Slot::Event(self.events.len()));
        self.events.push(Event {
            kind,
            db,
            other_db,
            span,
            command: command.to_vec(),
            key_count,
            keys,
        });
    }

    /// The summary of a segment that ends at `end_offset`. Spans still open (the segment
    /// ends inside MULTI…EXEC) end there, and `end_in_multi` says so.
    pub fn finish(self, end_offset: u64) -> Summary {
        self.finish_with_hits(end_offset).0
    }

    /// [`finish`](Self::finish), and the records the [`Want`] asked for, in stream order.
    pub fn finish_with_hits(mut self, end_offset: u64) -> (Summary, Vec<Hit>) {
        self.count_run();
        let mut hits = self.hits;
        let mut s = Summary {
            start_offset: self.start_offset,
            end_offset,
            start_in_multi: self.start_in_multi,
            end_in_multi: self.in_multi,
            dels_complete: self.dels_complete,
            keys_unknown: self.keys_unknown,
            first_time_ms: self.first_time_ms,
            record_count: self.record_count,
            first_boundary: self.first_boundary,
            last_boundary: self.last_boundary,
            buckets: self.buckets,
            events: self.events,
            commands: self.commands.into_iter().collect(),
            filter: KeyFilter::build(self.keys.into_iter()),
        };
        for slot in self.unresolved {
            match slot {
                Slot::Hit(i) => hits[i].span.end_offset = end_offset,
                Slot::Event(i) => s.events[i].span.end_offset = end_offset,
                Slot::FirstDelete(i) => {
                    if let Some(sp) = &mut s.buckets[i].first_delete {
                        sp.end_offset = end_offset
                    }
                }
                Slot::FirstExpire(i) => {
                    if let Some(sp) = &mut s.buckets[i].first_expire {
                        sp.end_offset = end_offset
                    }
                }
            }
        }
        (s, hits)
    }
}

/// Writes per family, summed over buckets.
pub fn family_totals<'a>(buckets: impl Iterator<Item = &'a Bucket>) -> [u64; FAMILIES] {
    let mut t = [0; FAMILIES];
    for b in buckets {
        for (i, n) in b.by_family.iter().enumerate() {
            t[i] += n;
        }
    }
    t
}

/// The family names, in [`Family`] order (for reports).
pub fn family_names() -> impl Iterator<Item = &'static str> {
    Family::ALL.iter().map(|f| f.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashback_format::resp::encode_command;

    /// Records from argv, offsets following each other from `start`.
    fn feed(
        z: &mut Summarizer,
        start: &mut u64,
        time_ms: u64,
        db: u32,
        boundary: bool,
        argv: &[&str],
    ) -> u64 {
        let resp = encode_command(argv);
        *start += resp.len() as u64;
        z.record(&Record {
            end_offset: *start,
            time_ms,
            db,
            boundary,
            resp,
        });
        *start
    }

    #[test]
    fn events_inside_multi_span_the_whole_transaction() {
        let mut z = Summarizer::new(100, false).wanting(Want::Command(b"HSET".to_vec()));
        let mut off = 100;
        let t = 1_790_000_000_000;
        let set = feed(&mut z, &mut off, t, 0, true, &["SET", "a", "1"]);
        feed(&mut z, &mut off, t + 1, 0, false, &["MULTI"]);
        feed(&mut z, &mut off, t + 1, 0, false, &["HSET", "h", "f", "v"]);
        feed(&mut z, &mut off, t + 1, 0, false, &["FLUSHALL"]);
        let exec = feed(&mut z, &mut off, t + 2, 0, true, &["EXEC"]);
        // SELECT is a record of its own, and a cut point.
        let select = feed(&mut z, &mut off, t + 1500, 3, true, &["SELECT", "3"]);
        let del = feed(&mut z, &mut off, t + 1500, 3, true, &["UNLINK", "x", "y"]);
        // A transaction the segment ends inside: its end is the segment's, flagged.
        feed(&mut z, &mut off, t + 1600, 3, false, &["MULTI"]);
        feed(&mut z, &mut off, t + 1600, 3, false, &["FLUSHDB"]);
        let (s, hits) = z.finish_with_hits(off);
        assert!(s.end_in_multi && !s.start_in_multi);
        assert_eq!((s.first_boundary, s.last_boundary), (Some(set), Some(del)));
        let fa = &s.events[0];
        assert_eq!(fa.kind, EventKind::FlushAll);
        assert_eq!((fa.span.start_offset, fa.span.end_offset), (set, exec));
        let d = &s.events[1];
        assert_eq!((d.kind, d.db, d.key_count), (EventKind::Del, 3, 2));
        assert_eq!((d.span.start_offset, d.span.end_offset), (select, del));
        assert!(select > exec);
        let fdb = &s.events[2];
        assert_eq!(
            (fdb.kind, fdb.span.start_offset, fdb.span.end_offset),
            (EventKind::FlushDb, del, off)
        );
        assert_eq!(hits.len(), 1);
        assert_eq!(
            (hits[0].span.start_offset, hits[0].span.end_offset),
            (set, exec)
        );
        // Two seconds; SELECT, MULTI and EXEC are not writes.
        assert_eq!(s.buckets.len(), 2);
        assert_eq!(s.buckets[0].writes, 3);
        assert_eq!(s.buckets[1].writes, 2);
        assert_eq!(s.buckets[1].deleted, 2);
        assert_eq!(s.buckets[1].by_db, vec![(3, 2)]);
        assert!(s.may_touch(0, b"h") && s.may_touch(3, b"x") && !s.may_touch(0, b"x"));
        assert_eq!(s.command_count(b"MULTI"), 2);
        // What the agent stores decodes to the same.
        assert_eq!(Summary::decode("t.sum", &s.encode()).unwrap(), s);
    }
}
