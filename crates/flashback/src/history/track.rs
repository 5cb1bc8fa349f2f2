//! Following one key through the log, pure: which names (db, name) it goes by, and which
//! records touch one of them. No I/O, so every rename rule is unit-tested here.
//!
//! A write inside MULTI … EXEC is reported with the offset where its transaction ends: that is
//! the source's `master_repl_offset` once it had applied the write (DESIGN's `offset`), and the
//! only offset a restore can stop at.

use crate::commands::CommandTable;
use bytes::Bytes;
use std::collections::BTreeSet;

/// The dbs the original name is followed in: every db but some (no `--db`), or only some.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dbs {
    AllBut(BTreeSet<u32>),
    Only(BTreeSet<u32>),
}

impl Dbs {
    fn contains(&self, db: u32) -> bool {
        match self {
            Dbs::AllBut(s) => !s.contains(&db),
            Dbs::Only(s) => s.contains(&db),
        }
    }

    fn set(&mut self, db: u32, on: bool) {
        match (self, on) {
            (Dbs::AllBut(s), true) | (Dbs::Only(s), false) => s.remove(&db),
            (Dbs::AllBut(s), false) | (Dbs::Only(s), true) => s.insert(db),
        };
    }
}

/// Every (db, name) the key is known by now. The original name starts in every db (or the one
/// `--db` gives); RENAME/COPY/MOVE/SWAPDB move or add names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub original: Bytes,
    dbs: Dbs,
    /// Names other than the original (after a RENAME or a COPY), or the original in another db.
    extra: BTreeSet<(u32, Bytes)>,
    /// The dbs the original name was seen written in (or `--db`): only there do FLUSHDB and
    /// SWAPDB count as touching it. Rejected: every db, which reported each FLUSHDB anywhere.
    seen: BTreeSet<u32>,
}

impl Names {
    pub fn new(key: Bytes, db: Option<u32>) -> Names {
        Names {
            original: key,
            dbs: match db {
                Some(d) => Dbs::Only([d].into()),
                None => Dbs::AllBut(BTreeSet::new()),
            },
            extra: BTreeSet::new(),
            seen: db.into_iter().collect(),
        }
    }

    pub fn contains(&self, db: u32, name: &[u8]) -> bool {
        if name == self.original.as_ref() {
            self.dbs.contains(db)
        } else {
            self.extra.contains(&(db, Bytes::copy_from_slice(name)))
        }
    }

    fn set(&mut self, db: u32, name: &[u8], on: bool) {
        if name == self.original.as_ref() {
            self.dbs.set(db, on);
            if on {
                self.seen.insert(db);
            }
        } else if on {
            self.extra.insert((db, Bytes::copy_from_slice(name)));
        } else {
            self.extra.remove(&(db, Bytes::copy_from_slice(name)));
        }
    }

    /// The original name is followed in `db` and known to live there.
    fn known(&self, db: u32) -> bool {
        self.dbs.contains(db) && self.seen.contains(&db)
    }

    /// Every name a write in `db` could touch the key by: the original (when it is followed in
    /// `db`, known to live there or not) and the names it took there. For per-segment filters.
    pub fn candidates_in(&self, db: u32) -> Vec<&[u8]> {
        let mut out: Vec<&[u8]> = Vec::new();
        if self.dbs.contains(db) {
            out.push(self.original.as_ref());
        }
        out.extend(
            self.extra
                .iter()
                .filter(|(d, _)| *d == db)
                .map(|(_, n)| n.as_ref()),
        );
        out
    }

    /// Whether a followed name is known to live in `db`.
    pub fn any_in(&self, db: u32) -> bool {
        self.known(db) || self.extra.iter().any(|(d, _)| *d == db)
    }

    /// Every (db, name) known now, sorted: where to read the key's value.
    pub fn known_names(&self) -> Vec<(u32, Bytes)> {
        let mut out: Vec<(u32, Bytes)> = self
            .seen
            .iter()
            .filter(|&&d| self.dbs.contains(d))
            .map(|&d| (d, self.original.clone()))
            .collect();
        out.extend(self.extra.iter().cloned());
        out.sort();
        out.dedup();
        out
    }

    /// The names known in `db`.
    pub fn in_db(&self, db: u32) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = Vec::new();
        if self.known(db) {
            out.push(self.original.clone());
        }
        out.extend(
            self.extra
                .iter()
                .filter(|(d, _)| *d == db)
                .map(|(_, n)| n.clone()),
        );
        out
    }

    /// SWAPDB a b: what was followed in a is now in b and the other way round.
    fn swap(&mut self, a: u32, b: u32) {
        let (in_a, in_b) = (self.dbs.contains(a), self.dbs.contains(b));
        self.dbs.set(a, in_b);
        self.dbs.set(b, in_a);
        let (seen_a, seen_b) = (self.seen.contains(&a), self.seen.contains(&b));
        for (d, on) in [(a, seen_b), (b, seen_a)] {
            if on {
                self.seen.insert(d);
            } else {
                self.seen.remove(&d);
            }
        }
        self.extra = std::mem::take(&mut self.extra)
            .into_iter()
            .map(|(d, n)| {
                (
                    if d == a {
                        b
                    } else if d == b {
                        a
                    } else {
                        d
                    },
                    n,
                )
            })
            .collect();
    }
}

/// One record of the log that touched the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub time_ms: u64,
    /// Where the write's transaction ends (the record's own end outside MULTI … EXEC).
    pub offset: u64,
    pub db: u32,
    pub argv: Vec<Bytes>,
    /// The name the key had in this write (the argument that matched).
    pub as_name: Bytes,
    /// What it did to the key's names: "renamed to …", "copied to … (db n)", "moved to db n".
    pub note: Option<String>,
    /// The record was stored cut (a big value): `argv` is its beginning only.
    pub truncated: bool,
    /// The generation whose log holds it.
    pub generation: String,
    /// The names the key goes by after this write (for reading its value there).
    pub names_after: Vec<(u32, Bytes)>,
}

/// Reads records in stream order and collects the key's writes.
pub struct Tracker {
    pub names: Names,
    table: CommandTable,
    pub generation: String,
    /// Writes of the open transaction, waiting for its end offset.
    pending: Vec<Write>,
    pub writes: Vec<Write>,
}

fn number(a: &[u8]) -> Option<u32> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

impl Tracker {
    pub fn new(names: Names, table: CommandTable) -> Tracker {
        Tracker {
            names,
            table,
            generation: String::new(),
            pending: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// A generation's log starts: its command table applies from here.
    pub fn start_generation(&mut self, id: &str, table: CommandTable) {
        self.flush(None);
        self.generation = id.to_string();
        self.table = table;
    }

    /// One record: `argv` (maybe only its beginning, `truncated`), its db, end offset, arrival
    /// time, and whether the stream is outside MULTI … EXEC after it.
    pub fn record(
        &mut self,
        argv: &[Bytes],
        truncated: bool,
        db: u32,
        end_offset: u64,
        time_ms: u64,
        boundary: bool,
    ) {
        if let Some((as_name, note)) = self.touches(argv, db) {
            let names_after = self.names.known_names();
            self.pending.push(Write {
                time_ms,
                offset: end_offset,
                db,
                argv: argv.to_vec(),
                as_name,
                note,
                truncated,
                generation: self.generation.clone(),
                names_after,
            });
        }
        if boundary {
            self.flush(Some(end_offset));
        }
    }

    /// Ends the open transaction at `end` (None: the log stopped inside it; its writes keep
    /// their own offsets).
    pub fn flush(&mut self, end: Option<u64>) {
        for mut w in self.pending.drain(..) {
            if let Some(e) = end {
                w.offset = e;
            }
            self.writes.push(w);
        }
    }

    /// Whether the record touches a followed name; applies what it does to the names. Returns
    /// the name it touched and a note.
    fn touches(&mut self, argv: &[Bytes], db: u32) -> Option<(Bytes, Option<String>)> {
        let name = argv.first()?.to_ascii_lowercase();
        let arg = |i: usize| argv.get(i).map(|a| a.as_ref());
        match name.as_slice() {
            b"swapdb" => {
                let (a, b) = (number(arg(1)?)?, number(arg(2)?)?);
                let (in_a, in_b) = (self.names.any_in(a), self.names.any_in(b));
                if !in_a && !in_b {
                    return None;
                }
                let shown = self.first_name_in(if in_a { a } else { b });
                self.names.swap(a, b);
                return Some((
                    shown,
                    Some(format!("db {a} and db {b} swapped: the key's db changed")),
                ));
            }
            b"flushall" => {
                let shown = self.first_name_in_any()?;
                return Some((shown, Some("deletes every key".into())));
            }
            b"flushdb" => {
                if !self.names.any_in(db) {
                    return None;
                }
                return Some((
                    self.first_name_in(db),
                    Some(format!("deletes every key of db {db}")),
                ));
            }
            // COPY's destination may be in another db (DB n), which key positions cannot say.
            b"copy" => {
                let (src, dst) = (arg(1)?, arg(2)?);
                let mut to_db = db;
                let mut i = 3;
                while i < argv.len() {
                    if argv[i].eq_ignore_ascii_case(b"db") {
                        to_db = arg(i + 1).and_then(number).unwrap_or(db);
                        i += 1;
                    }
                    i += 1;
                }
                let show = crate::show::key;
                if self.names.contains(db, src) {
                    if src == self.names.original.as_ref() {
                        self.names.seen.insert(db);
                    }
                    self.names.set(to_db, dst, true);
                    let note = format!(
                        "copied to {} (db {to_db}): following both names from here",
                        show(dst)
                    );
                    return Some((Bytes::copy_from_slice(src), Some(note)));
                }
                if self.names.contains(to_db, dst) {
                    let note = format!("overwritten by a copy of {} (db {db})", show(src));
                    return Some((Bytes::copy_from_slice(dst), Some(note)));
                }
                return None;
            }
            _ => {}
        }
        let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_ref()).collect();
        let positions = self.table.key_positions(&refs);
        let hit = positions
            .iter()
            .copied()
            .find(|&p| self.names.contains(db, &argv[p]))?;
        let hit_name = argv[hit].clone();
        if hit_name == self.names.original {
            self.names.seen.insert(db);
        }
        let show = |n: &[u8]| crate::show::key(n);
        let note = match name.as_slice() {
            b"rename" | b"renamenx" if hit == 1 => {
                // Only successful renames replicate, so the name moves for sure.
                let dst = arg(2)?;
                self.names.set(db, &hit_name, false);
                self.names.set(db, dst, true);
                Some(format!("renamed to {}: following that name", show(dst)))
            }
            b"move" if hit == 1 => {
                let to_db = number(arg(2)?)?;
                self.names.set(db, &hit_name, false);
                self.names.set(to_db, &hit_name, true);
                Some(format!("moved to db {to_db}"))
            }
            b"rename" | b"renamenx" => Some(format!(
                "overwritten from {}",
                show(arg(1).unwrap_or_default())
            )),
            b"migrate" => Some("migrated away (deleted here)".into()),
            _ => None,
        };
        Some((hit_name, note))
    }

    fn first_name_in(&self, db: u32) -> Bytes {
        self.names
            .in_db(db)
            .into_iter()
            .next()
            .unwrap_or_else(|| self.names.original.clone())
    }

    /// FLUSHALL deletes the key wherever it is: any followed name, the original first.
    fn first_name_in_any(&self) -> Option<Bytes> {
        match &self.names.dbs {
            Dbs::Only(s) if s.is_empty() => self.names.extra.iter().next().map(|(_, n)| n.clone()),
            _ => Some(self.names.original.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cmds: &[(u32, &str, bool)]) -> Tracker {
        let mut t = Tracker::new(Names::new(Bytes::from("k"), None), CommandTable::builtin());
        for (i, (db, c, boundary)) in cmds.iter().enumerate() {
            let argv: Vec<Bytes> = c
                .split(' ')
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect();
            t.record(
                &argv,
                false,
                *db,
                (i as u64 + 1) * 10,
                1000 + i as u64,
                *boundary,
            );
        }
        t
    }

    fn summary(t: &Tracker) -> Vec<(u64, u32, String, String)> {
        t.writes
            .iter()
            .map(|w| {
                (
                    w.offset,
                    w.db,
                    String::from_utf8_lossy(&w.argv[0]).into_owned(),
                    String::from_utf8_lossy(&w.as_name).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn names_follow_rename_copy_move_and_swapdb() {
        let t = run(&[
            (0, "SET k 1", true),
            (0, "SET other 1", true),
            (0, "RENAME k a", true),
            (0, "SET k 2", true), // a new key with the old name: not followed any more in db 0
            (0, "HSET a f v", true),
            (0, "COPY a b DB 2", true),
            (2, "SET b 3", true),
            (0, "MOVE a 5", true),
            (5, "DEL a", true),
            (1, "SET k 9", true), // the original name in another db is still followed
            (0, "SWAPDB 2 3", true),
            (3, "INCR b", true),
            (2, "INCR b", true),
            (3, "FLUSHDB", true),
            (4, "FLUSHDB", true),
            (7, "FLUSHALL", true),
        ]);
        let s: Vec<_> = summary(&t)
            .into_iter()
            .map(|(o, d, c, a)| format!("{o} {d} {c} {a}"))
            .collect();
        assert_eq!(
            s,
            [
                "10 0 SET k",
                "30 0 RENAME k",
                "50 0 HSET a",
                "60 0 COPY a",
                "70 2 SET b",
                "80 0 MOVE a",
                "90 5 DEL a",
                "100 1 SET k",
                "110 0 SWAPDB b",
                "120 3 INCR b",
                "140 3 FLUSHDB b",
                "160 7 FLUSHALL k",
            ]
        );
        assert!(t.writes[1]
            .note
            .as_deref()
            .unwrap()
            .contains("renamed to \"a\""));
        assert!(t.writes[3].note.as_deref().unwrap().contains("(db 2)"));
    }

    #[test]
    fn a_transaction_reports_its_end_offset() {
        let t = run(&[
            (0, "MULTI", false),
            (0, "SET k 1", false),
            (0, "SET x 1", false),
            (0, "INCR k", false),
            (0, "EXEC", true),
            (0, "EVAL s 1 k", true),
            (0, "EVAL s 1 j k", true),
            (0, "FCALL f 2 x k", true),
        ]);
        assert_eq!(
            summary(&t)
                .iter()
                .map(|w| (w.0, w.2.as_str()))
                .collect::<Vec<_>>(),
            [(50, "SET"), (50, "INCR"), (60, "EVAL"), (80, "FCALL")]
        );
    }

    #[test]
    fn a_db_given_limits_the_original_name() {
        let mut t = Tracker::new(
            Names::new(Bytes::from("k"), Some(1)),
            CommandTable::builtin(),
        );
        for (db, c) in [
            (0, "SET k 1"),
            (1, "SET k 2"),
            (1, "MOVE k 0"),
            (0, "DEL k"),
        ] {
            let argv: Vec<Bytes> = c
                .split(' ')
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect();
            t.record(&argv, false, db, 1, 1, true);
        }
        assert_eq!(
            t.writes
                .iter()
                .map(|w| (w.db, w.argv[0].clone()))
                .collect::<Vec<_>>(),
            [
                (1, Bytes::from("SET")),
                (1, Bytes::from("MOVE")),
                (0, Bytes::from("DEL"))
            ]
        );
    }
}
