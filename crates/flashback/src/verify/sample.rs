//! The drill's check against the log: a random sample of keys whose state the log itself
//! dictates, compared with what the restored server holds.
//!
//! The restore is built by a real server replaying the log, so comparing it with the log is a
//! second, independent reading: a record the engine lost, applied twice, or sent to the wrong
//! db shows here even when every checksum is fine. The reading is deliberately small: a key's
//! state is known only when its last write sets it whole (`SET key value …`: the value is the
//! argument) or removes it (`DEL`, `UNLINK`, `FLUSHDB`, `FLUSHALL`); any other write to a
//! sampled key (found with the generation's command table, and, for a command the table does
//! not know, any argument equal to the key) makes it unknown until it is set whole again.
//! Modelling every command instead was rejected: that is re-implementing Redis, which is what
//! the real server is there for.

use crate::commands::CommandTable;
use crate::restore::reader::RecordSink;
use crate::restore::RestoreError;
use bytes::Bytes;
use flashback_format::resp;
use flashback_format::segment::Item;
use serde::Serialize;
use std::collections::HashMap;

/// Keys sampled per drill.
pub const SAMPLE: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Set whole by `SET`; `may_expire`: the SET carried an expiry (or kept one), so the key
    /// may be gone by now.
    Value {
        value: Bytes,
        may_expire: bool,
    },
    Absent,
    /// Written by something else since: not checked.
    Unknown,
}

/// Follows the log and keeps the sample (reservoir sampling over the `SET`s seen, so every
/// key set whole has the same chance, whatever its place in the log).
pub struct LogSample {
    table: CommandTable,
    keys: HashMap<(u32, Bytes), Expect>,
    candidates: u64,
    rng: u64,
    /// A record too big for one block whose keys could not be read: the sample is unreliable.
    pub spoiled: bool,
}

/// What the check found, in `verify --json` under `drill.log_sample`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogSampleReport {
    /// Keys whose state the log dictates, compared.
    pub keys: u64,
    pub equal: u64,
    pub differences: Vec<String>,
}

impl LogSample {
    pub fn new(table: CommandTable, seed: u64) -> Self {
        LogSample {
            table,
            keys: HashMap::new(),
            candidates: 0,
            rng: seed | 1,
            spoiled: false,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: a sample needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// One record (its RESP bytes, in db `db`).
    pub fn observe(&mut self, db: u32, resp_bytes: &[u8]) {
        let Ok(frame) = resp::parse(&Bytes::copy_from_slice(resp_bytes)) else {
            return;
        };
        let Some(argv) = resp::argv(frame) else {
            return;
        };
        let Some(name) = argv.first().map(|n| n.to_ascii_uppercase()) else {
            return;
        };
        match &name[..] {
            b"FLUSHALL" => {
                self.keys.values_mut().for_each(|e| *e = Expect::Absent);
                return;
            }
            b"FLUSHDB" => {
                for ((d, _), e) in self.keys.iter_mut() {
                    if *d == db {
                        *e = Expect::Absent;
                    }
                }
                return;
            }
            b"SWAPDB" => {
                let num = |i: usize| std::str::from_utf8(argv.get(i)?).ok()?.parse::<u32>().ok();
                if let (Some(a), Some(b)) = (num(1), num(2)) {
                    self.keys = std::mem::take(&mut self.keys)
                        .into_iter()
                        .map(|((d, k), e)| {
                            let d = if d == a {
                                b
                            } else if d == b {
                                a
                            } else {
                                d
                            };
                            ((d, k), e)
                        })
                        .collect();
                }
                return;
            }
            _ => {}
        }
        let args: Vec<&[u8]> = argv.iter().map(|a| &a[..]).collect();
        let positions = if self.table.lookup(&args).is_some() {
            self.table.key_positions(&args)
        } else {
            // Unknown to the table (a module's command?): any argument may be a key.
            (1..args.len()).collect()
        };
        let whole = match &name[..] {
            b"SET" if argv.len() >= 3 => Some(Expect::Value {
                value: argv[2].clone(),
                may_expire: argv[3..].iter().any(|o| {
                    matches!(
                        &o.to_ascii_uppercase()[..],
                        b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL"
                    )
                }),
            }),
            b"DEL" | b"UNLINK" => Some(Expect::Absent),
            _ => None,
        };
        for &p in &positions {
            let Some(key) = argv.get(p) else { continue };
            let slot = (db, key.clone());
            let next = whole.clone().unwrap_or(Expect::Unknown);
            if let Some(e) = self.keys.get_mut(&slot) {
                *e = next;
            } else if matches!(next, Expect::Value { .. }) {
                self.candidates += 1;
                if self.keys.len() < SAMPLE {
                    self.keys.insert(slot, next);
                } else if self.random() % self.candidates < SAMPLE as u64 {
                    let victim = (self.random() % self.keys.len() as u64) as usize;
                    if let Some(old) = self.keys.keys().nth(victim).cloned() {
                        self.keys.remove(&old);
                    }
                    self.keys.insert(slot, next);
                }
            }
        }
    }

    /// A fragment of a record too big for one block: only its first fragment holds the name
    /// and (usually) the keys; a sampled key written by it becomes unknown. When the command's
    /// keys lie beyond what the fragment holds whole, the sample can no longer be trusted.
    fn observe_fragment_start(&mut self, bytes: &[u8]) {
        let Some((count, readable)) = leading_bulks(bytes, 64) else {
            self.spoiled = true;
            return;
        };
        let empty: &[u8] = b"";
        let mut args: Vec<&[u8]> = readable.iter().map(|a| &a[..]).collect();
        args.resize(count.max(args.len()), empty);
        let positions = if self.table.lookup(&args).is_some() {
            self.table.key_positions(&args)
        } else {
            (1..count).collect()
        };
        if positions.iter().any(|&p| p >= readable.len()) {
            self.spoiled = true;
            return;
        }
        for ((_, k), e) in self.keys.iter_mut() {
            if positions.iter().any(|&p| readable[p] == k[..]) {
                *e = Expect::Unknown;
            }
        }
    }

    /// Compares the sample with the restored server (`c`, any db selected).
    pub async fn check(
        &self,
        c: &mut crate::client::Client,
    ) -> Result<LogSampleReport, RestoreError> {
        let mut r = LogSampleReport::default();
        let mut known: Vec<_> = self
            .keys
            .iter()
            .filter(|(_, e)| !matches!(e, Expect::Unknown))
            .collect();
        known.sort_by(|a, b| a.0.cmp(b.0));
        let mut current = None;
        for ((db, key), want) in known {
            if current != Some(*db) {
                c.ok(&["SELECT", &db.to_string()]).await?;
                current = Some(*db);
            }
            let got = match c.call(&[&b"GET"[..], key]).await? {
                resp::Frame::Bulk(v) => Some(v),
                resp::Frame::Null => None,
                // WRONGTYPE: it holds something else than the SET left.
                _ => Some(Bytes::from_static(b"\0(not a string)")),
            };
            r.keys += 1;
            let ok = match (want, &got) {
                (Expect::Value { value, .. }, Some(v)) => v == value,
                (Expect::Value { may_expire, .. }, None) => *may_expire,
                (Expect::Absent, None) => true,
                _ => false,
            };
            if ok {
                r.equal += 1;
            } else if r.differences.len() < 5 {
                let what = match (want, &got) {
                    (Expect::Absent, Some(_)) => "present, but the log deleted it last".to_string(),
                    (_, None) => "missing, but the log set it last".to_string(),
                    _ => "its value is not the one the log's last SET wrote".to_string(),
                };
                r.differences
                    .push(format!("db {db} key {}: {what}", crate::show::key(key)));
            }
        }
        Ok(r)
    }
}

/// A RESP array's element count and its first (up to `n`) bulk strings that the bytes hold
/// whole; None when not even the header and the command's name are there.
fn leading_bulks(b: &[u8], n: usize) -> Option<(usize, Vec<Vec<u8>>)> {
    fn line(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = b.get(at..)?.windows(2).position(|w| w == b"\r\n")? + at;
        Some((&b[at..end], end + 2))
    }
    fn bulk(b: &[u8], at: usize) -> Option<(Vec<u8>, usize)> {
        let (len, next) = line(b, at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        let end = next.checked_add(len)?;
        Some((b.get(next..end)?.to_vec(), end + 2))
    }
    let (head, mut at) = line(b, 0)?;
    let count: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut out = Vec::new();
    while out.len() < n.min(count) {
        match bulk(b, at) {
            Some((v, next)) => {
                out.push(v);
                at = next;
            }
            None => break,
        }
    }
    (!out.is_empty()).then_some((count, out))
}

impl RecordSink for LogSample {
    async fn items(&mut self, items: Vec<Item>) -> Result<(), RestoreError> {
        for it in items {
            match it {
                Item::Record(r) => self.observe(r.db, &r.resp),
                Item::Fragment(f) => {
                    if f.bytes.first() == Some(&b'*') {
                        self.observe_fragment_start(&f.bytes);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<u8> {
        resp::encode_command(args)
    }

    fn state(s: &LogSample, db: u32, k: &str) -> Option<Expect> {
        s.keys
            .get(&(db, Bytes::copy_from_slice(k.as_bytes())))
            .cloned()
    }

    #[test]
    fn the_last_whole_write_decides_and_anything_else_makes_a_key_unknown() {
        let mut s = LogSample::new(CommandTable::builtin(), 7);
        s.observe(0, &cmd(&["SET", "a", "1"]));
        s.observe(0, &cmd(&["SET", "b", "2", "PXAT", "99"]));
        s.observe(1, &cmd(&["SET", "c", "3"]));
        s.observe(0, &cmd(&["APPEND", "a", "x"]));
        assert_eq!(state(&s, 0, "a"), Some(Expect::Unknown));
        s.observe(0, &cmd(&["SET", "a", "4"]));
        assert!(
            matches!(state(&s, 0, "a"), Some(Expect::Value { value, may_expire: false }) if &value[..] == b"4")
        );
        assert!(matches!(
            state(&s, 0, "b"),
            Some(Expect::Value {
                may_expire: true,
                ..
            })
        ));
        s.observe(0, &cmd(&["DEL", "x", "b"]));
        assert_eq!(state(&s, 0, "b"), Some(Expect::Absent));
        // A multi-key command through the table: RENAME touches both names.
        s.observe(1, &cmd(&["RENAME", "c", "d"]));
        assert_eq!(state(&s, 1, "c"), Some(Expect::Unknown));
        // A command the table does not know: any argument equal to a key counts.
        s.observe(0, &cmd(&["MYMODULE.TOUCH", "zz", "a"]));
        assert_eq!(state(&s, 0, "a"), Some(Expect::Unknown));
        s.observe(0, &cmd(&["SET", "a", "5"]));
        s.observe(0, &cmd(&["SWAPDB", "0", "3"]));
        assert!(state(&s, 0, "a").is_none());
        assert!(matches!(state(&s, 3, "a"), Some(Expect::Value { .. })));
        s.observe(3, &cmd(&["FLUSHDB"]));
        assert_eq!(state(&s, 3, "a"), Some(Expect::Absent));
        s.observe(1, &cmd(&["SET", "e", "1"]));
        s.observe(0, &cmd(&["FLUSHALL"]));
        assert_eq!(state(&s, 1, "e"), Some(Expect::Absent));
    }

    #[test]
    fn the_sample_stays_bounded_and_big_records_spoil_only_what_they_touch() {
        let mut s = LogSample::new(CommandTable::builtin(), 42);
        for i in 0..10_000 {
            s.observe(0, &cmd(&["SET", &format!("k{i}"), "v"]));
        }
        assert_eq!(s.keys.len(), SAMPLE);
        // Reservoir sampling keeps keys from all over the log, not just the first ones.
        assert!(s.keys.keys().any(|(_, k)| k[..] > b"k5000"[..]));
        let sampled = s.keys.keys().next().cloned().expect("a key");
        let mut big = format!("*3\r\n$3\r\nSET\r\n${}\r\n", sampled.1.len()).into_bytes();
        big.extend_from_slice(&sampled.1);
        big.extend_from_slice(b"\r\n$100000000\r\nxxxx");
        s.observe_fragment_start(&big);
        assert_eq!(s.keys.get(&sampled), Some(&Expect::Unknown));
        assert!(!s.spoiled);
        assert!(!s.spoiled);
        // MSET's later keys sit after the big value: the sample cannot follow them.
        s.observe_fragment_start(b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$100000\r\nxx");
        assert!(s.spoiled);
        let mut s2 = LogSample::new(CommandTable::builtin(), 1);
        s2.observe_fragment_start(b"*3\r\n$3\r\nSE");
        assert!(s2.spoiled);
    }
}
