//! Key-level restore (`--keys`, `--keys-from`, `--db`): rebuild only what the selected keys
//! cost, not the whole dataset.
//!
//! 1. **Closure** ([`closure`], one pass over the records in (base, T], nothing replayed): every
//!    command whose result depends on several keys (RENAME, COPY, SMOVE, LMOVE, *STORE, BITOP,
//!    MOVE, scripts' declared keys…, positions from the generation's stored `COMMAND` reply, so
//!    modules' commands count) links its keys; the closure is every component holding a
//!    selected key, plus every selected key seen nowhere else.
//! 2. **Base** ([`base`]): the base streamed through `flashback_rdb::filter_rdb`, keeping the
//!    closure's entries, into a small file the private server loads instead of the whole base.
//! 3. **Replay** ([`Filter`], inside the engine): only records touching the closure, plus
//!    everything global (FLUSHALL, FLUSHDB, SWAPDB, FUNCTION, SCRIPT), inside their MULTI/EXEC
//!    (a transaction none of whose commands is kept is not sent at all).
//! 4. The caller then deletes what is not selected (closure keys the user did not ask for).
//!
//! A record whose keys cannot be known (an unknown command, a script declaring no keys, SORT
//! with BY/GET, a key longer than the scanner keeps) makes [`closure`] answer
//! [`Pass1::Fallback`]: the restore takes the full path and says why. A script that touches
//! keys it did not declare is not detected (cluster mode refuses those; standalone trusts the
//! declaration too): since Redis 7 the stream carries scripts' effects, not the scripts.

pub mod base;
pub mod classify;
pub mod closure;
pub mod scan;

use super::plan::{RestorePlan, SegmentRef};
use super::reader::{read_records, RecordSink};
use super::RestoreError;
use crate::commands::CommandTable;
use crate::store::Store;
use classify::{classify, Class, Touched};
use closure::Closure;
use flashback_format::segment::Item;
use scan::ArgScanner;
use std::collections::HashMap;

/// What the user selected: keys matching any pattern (none: every key), in db N only (at the
/// restore point) or in every db.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub patterns: Vec<Vec<u8>>,
    pub db: Option<u32>,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        self.patterns.is_empty() && self.db.is_none()
    }

    pub fn matches_name(&self, name: &[u8]) -> bool {
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|p| super::outputs::glob_match(p, name))
    }
}

/// The glob pattern matching exactly `name` (`--keys-from` gives names, not patterns).
pub fn exact_pattern(name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(name.len() + 4);
    for &b in name {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            p.push(b'\\');
        }
        p.push(b);
    }
    p
}

/// What the first pass found.
#[derive(Debug)]
pub enum Pass1 {
    Closure(Box<Filter>),
    /// A record's keys cannot be known: restore everything, then delete the unselected.
    Fallback(String),
}

/// The first pass: the closure of `sel` over the plan's records.
pub async fn closure(
    store: &Store,
    plan: &RestorePlan,
    table: CommandTable,
    sel: Selection,
) -> Result<Pass1, RestoreError> {
    let mut c = Collector::new(table, Closure::new(sel), false, false);
    read_records(store, plan, &mut c).await?;
    if let Some(why) = c.fallback {
        return Ok(Pass1::Fallback(why));
    }
    c.closure.finish();
    Ok(Pass1::Closure(Box::new(Filter {
        table: c.table,
        closure: c.closure,
        fragmented: c.fragmented,
        tx: None,
        stats: KeyLevelStats {
            records_total: c.records,
            ..Default::default()
        },
    })))
}

/// A partitioned rebuild's first pass (`restore --parallel N`, [`super::parallel`]): one
/// [`Filter`] per partition, each keeping the keys of its partition, every key in exactly one;
/// or why the keys of some record cannot be known (the restore then runs serially).
pub async fn partitions(
    store: &Store,
    plan: &RestorePlan,
    table: CommandTable,
    n: u32,
) -> Result<Result<Vec<Box<Filter>>, String>, RestoreError> {
    let mut c = Collector::new(table, Closure::new(Selection::default()), true, false);
    read_records(store, plan, &mut c).await?;
    if let Some(why) = c.fallback {
        return Ok(Err(why));
    }
    let of_id = c.closure.component_partitions(n);
    let (linked, _) = c.closure.sizes();
    Ok(Ok((0..n)
        .map(|p| {
            let mut closure = c.closure.clone();
            closure.keep_partition(n, p, &of_id);
            Box::new(Filter {
                table: c.table.clone(),
                closure,
                fragmented: c.fragmented.clone(),
                tx: None,
                stats: KeyLevelStats {
                    linked_keys: linked,
                    records_total: c.records,
                    ..Default::default()
                },
            })
        })
        .collect()))
}

/// Most keys a splice's first pass holds ([`touched`]): ~100 bytes each in memory. A log naming
/// more rewrites most of any dataset of a size where that matters, and then the full rebuild
/// costs about what a splice would.
pub const MAX_TOUCHED: usize = 4_000_000;

/// A splice's first pass (`restore::splice`): a [`Filter`] keeping exactly the keys the log in
/// (base, T] names, or why the rest of the base cannot be copied as it is: a command acting on
/// keys it does not name (FLUSHALL, FLUSHDB, SWAPDB; FUNCTION and SCRIPT, which change what
/// the file holds beside the keys), a record whose keys cannot be known, or over
/// [`MAX_TOUCHED`] keys.
pub async fn touched(
    store: &Store,
    plan: &RestorePlan,
    table: CommandTable,
) -> Result<Result<Box<Filter>, String>, RestoreError> {
    let mut c = Collector::new(table, Closure::touched(), false, true);
    read_records(store, plan, &mut c).await?;
    if let Some(why) = c.fallback {
        return Ok(Err(why));
    }
    c.closure.finish();
    let (linked, _) = c.closure.sizes();
    Ok(Ok(Box::new(Filter {
        table: c.table,
        closure: c.closure,
        fragmented: c.fragmented,
        tx: None,
        stats: KeyLevelStats {
            linked_keys: linked,
            records_total: c.records,
            ..Default::default()
        },
    })))
}

struct Collector {
    /// A splice's pass ([`touched`]): every key named is stored, and a command acting on keys
    /// it does not name ends the pass.
    touched: bool,
    /// Link the keys of every command naming several, even DEL, UNLINK and MSET (whose keys do
    /// not depend on each other): a partition must get a whole command or none of it, since a
    /// command sent to two partitions would create its keys in both.
    link_all: bool,
    table: CommandTable,
    closure: Closure,
    /// A record stored in fragments being read: its scanner, db and first offset.
    big: Option<(ArgScanner, u32, u64)>,
    /// Records stored in fragments, by first offset: their keys (the second pass decides at
    /// the first fragment, before it has seen the later ones).
    fragmented: HashMap<u64, Vec<Touched>>,
    fallback: Option<String>,
    records: u64,
}

impl Collector {
    fn new(table: CommandTable, closure: Closure, link_all: bool, touched: bool) -> Collector {
        Collector {
            table,
            closure,
            big: None,
            fragmented: HashMap::new(),
            fallback: None,
            records: 0,
            link_all,
            touched,
        }
    }

    fn one(&mut self, db: u32, args: Option<Vec<Option<Vec<u8>>>>) -> Option<Vec<Touched>> {
        self.records += 1;
        let class = match &args {
            Some(a) => classify(&self.table, db, a),
            None => Class::Unknown("a record that is not a RESP array of bulk strings".into()),
        };
        if self.touched {
            let why = match &class {
                Class::Always | Class::SwapDb(..) => {
                    let name = args.as_ref().and_then(|a| a.first()?.as_deref());
                    Some(format!(
                        "a {} in the log acts on keys or functions it does not name",
                        String::from_utf8_lossy(name.unwrap_or_default()).to_ascii_uppercase()
                    ))
                }
                Class::Keys(..) if self.closure.sizes().0 > MAX_TOUCHED => {
                    Some(format!("the log names over {MAX_TOUCHED} keys"))
                }
                _ => None,
            };
            if let Some(why) = why {
                self.fallback.get_or_insert(why);
                return None;
            }
        }
        match class {
            Class::Unknown(why) => {
                self.fallback.get_or_insert(why);
                None
            }
            Class::SwapDb(a, b) => {
                self.closure.swapdb(a, b);
                None
            }
            Class::Keys(keys, _) if self.touched => {
                // Each key alone: the splice needs the keys named, not what links them.
                for t in &keys {
                    self.closure.link([(t.db, t.name.as_slice())]);
                }
                Some(keys)
            }
            Class::Keys(keys, link) => {
                if (link || self.link_all) && keys.len() > 1 {
                    self.closure
                        .link(keys.iter().map(|t| (t.db, t.name.as_slice())));
                }
                // With physical dbs: the second pass maps them through its own permutation.
                Some(keys)
            }
            _ => None,
        }
    }
}

impl RecordSink for Collector {
    async fn items(&mut self, items: Vec<Item>) -> Result<(), RestoreError> {
        if self.fallback.is_some() {
            return Ok(());
        }
        for it in items {
            match it {
                Item::Record(r) => {
                    self.one(r.db, ArgScanner::whole(&r.resp));
                }
                Item::Fragment(f) => {
                    let (mut s, db, start) = self
                        .big
                        .take()
                        .unwrap_or_else(|| (ArgScanner::default(), f.db, f.start_offset));
                    s.feed(&f.bytes);
                    if f.end.is_none() {
                        self.big = Some((s, db, start));
                        continue;
                    }
                    let args = s.done().then_some(s.args);
                    if let Some(keys) = self.one(db, args) {
                        self.fragmented.insert(start, keys);
                    }
                }
            }
        }
        Ok(())
    }

    /// Once the restore falls back, the rest of the log is not worth fetching.
    fn wants(&self, _seg: &SegmentRef) -> bool {
        self.fallback.is_none()
    }
}

/// What the key-level restore did, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLevelStats {
    /// Keys seen in commands linking several keys, and how many of them are in the closure.
    pub linked_keys: usize,
    pub linked_in_closure: usize,
    pub base_kept: u64,
    pub base_total: u64,
    pub base_bytes_kept: u64,
    pub records_total: u64,
    pub records_replayed: u64,
    pub records_skipped: u64,
}

impl std::fmt::Display for KeyLevelStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "key-level: closure {} of {} keys linked by multi-key commands; base {} of {} entries kept ({} bytes); {} of {} records replayed, {} skipped",
            self.linked_in_closure,
            self.linked_keys,
            self.base_kept,
            self.base_total,
            self.base_bytes_kept,
            self.records_replayed,
            self.records_total,
            self.records_skipped
        )
    }
}

/// The second pass's decision on a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Keep it, after the MULTI held back for its transaction.
    KeepAfterMulti,
    Skip,
    /// A MULTI: held until a command of its transaction is kept.
    Hold,
}

/// The second pass, called by the engine's link for each record.
#[derive(Debug, Clone)]
pub struct Filter {
    table: CommandTable,
    pub closure: Closure,
    fragmented: HashMap<u64, Vec<Touched>>,
    /// Inside MULTI: whether a command of it was kept.
    tx: Option<bool>,
    pub stats: KeyLevelStats,
}

impl Filter {
    /// A whole record in db `db`.
    pub fn record(&mut self, db: u32, resp: &[u8]) -> Verdict {
        let class = match ArgScanner::whole(resp) {
            Some(a) => classify(&self.table, db, &a),
            None => Class::Always,
        };
        self.decide(class)
    }

    /// The first fragment of a record stored in fragments, starting at `start`.
    pub fn fragmented(&mut self, start: u64) -> Verdict {
        let class = match self.fragmented.remove(&start) {
            Some(keys) => Class::Keys(keys, false),
            // Keyless (FUNCTION LOAD of a big library, say): global.
            None => Class::Always,
        };
        self.decide(class)
    }

    pub fn in_multi(&self) -> bool {
        self.tx.is_some()
    }

    fn decide(&mut self, class: Class) -> Verdict {
        let keep = match class {
            Class::Select | Class::Traffic => false,
            Class::Multi => {
                self.tx = Some(false);
                return Verdict::Hold;
            }
            Class::Exec => {
                let sent = self.tx.take() == Some(true);
                if !sent {
                    // This EXEC and its MULTI, held back and never sent.
                    self.stats.records_skipped += 2;
                    return Verdict::Skip;
                }
                self.stats.records_replayed += 1;
                return Verdict::Keep;
            }
            // The first pass fell back on these; kept in case (never reached).
            Class::Always | Class::Unknown(_) => true,
            Class::SwapDb(a, b) => {
                self.closure.swapdb(a, b);
                true
            }
            Class::Keys(keys, _) => keys.iter().any(|t| self.closure.wants(t.db, &t.name)),
        };
        if !keep {
            self.stats.records_skipped += 1;
            return Verdict::Skip;
        }
        self.stats.records_replayed += 1;
        if self.tx == Some(false) {
            self.tx = Some(true);
            // The MULTI itself is counted once it goes out.
            self.stats.records_replayed += 1;
            return Verdict::KeepAfterMulti;
        }
        Verdict::Keep
    }
}
