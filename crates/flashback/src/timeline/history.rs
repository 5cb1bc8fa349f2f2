//! One generation's log as `timeline` and `restore --before/--after` see it: its segments'
//! summaries, the per-second buckets merged across segments (a segment rolls mid-second), and
//! the events found in them. Summaries answer most questions alone; the deletes of one key and
//! `cmd:NAME` read the segments the summaries cannot rule out (the key filter, the command
//! counts), and only those.

use super::load::{self, SegSummary};
use super::summarize::{Hit, Want};
use super::{key_text, TimelineEvent};
use crate::store::catalog::Generation;
use crate::store::stream::StreamError;
use crate::store::Store;
use crate::timespec::format_rfc3339_ms;
use flashback_format::summary::{Bucket, EventKind, Span};
use std::collections::BTreeMap;

pub struct History {
    pub generation: String,
    pub segs: Vec<SegSummary>,
    /// By second, merged over segments; spans resolved.
    pub buckets: BTreeMap<u64, Bucket>,
}

impl History {
    pub async fn load(
        store: &Store,
        g: &Generation,
        from_ms: u64,
        to_ms: u64,
        warnings: &mut Vec<String>,
    ) -> Result<History, StreamError> {
        let segs = load::summaries(store, g, from_ms, to_ms, warnings).await?;
        let mut buckets: BTreeMap<u64, Bucket> = BTreeMap::new();
        for (i, s) in segs.iter().enumerate() {
            for b in &s.summary.buckets {
                let m = buckets.entry(b.second).or_insert_with(|| Bucket {
                    second: b.second,
                    ..Default::default()
                });
                m.writes += b.writes;
                for (x, n) in m.by_family.iter_mut().zip(b.by_family) {
                    *x += n;
                }
                for &(db, n) in &b.by_db {
                    match m.by_db.binary_search_by_key(&db, |&(d, _)| d) {
                        Ok(j) => m.by_db[j].1 += n,
                        Err(j) => m.by_db.insert(j, (db, n)),
                    }
                }
                m.deleted += b.deleted;
                m.expired += b.expired;
                // Segments come in stream order: the first one seen is the earliest.
                if m.first_delete.is_none() {
                    m.first_delete = b.first_delete.map(|sp| load::resolve(&segs, i, sp));
                }
                if m.first_expire.is_none() {
                    m.first_expire = b.first_expire.map(|sp| load::resolve(&segs, i, sp));
                }
            }
        }
        Ok(History {
            generation: g.id.clone(),
            segs,
            buckets,
        })
    }

    fn event(&self, kind: &str, span: Span, db: Option<u32>, command: &[u8]) -> TimelineEvent {
        TimelineEvent {
            kind: kind.to_string(),
            generation: self.generation.clone(),
            time_ms: span.time_ms,
            time: format_rfc3339_ms(span.time_ms),
            offset: span.end_offset,
            start_offset: span.start_offset,
            db,
            other_db: None,
            command: String::from_utf8_lossy(command).into_owned(),
            keys: vec![],
            key_count: 0,
        }
    }

    /// FLUSHALL, FLUSHDB and SWAPDB, then the starts of mass deletes and mass expires (a run
    /// of consecutive seconds each deleting, or giving a TTL to, more than `mass_keys` keys).
    pub fn destructive(&self, mass_keys: u64) -> Vec<TimelineEvent> {
        let mut out = Vec::new();
        for (i, s) in self.segs.iter().enumerate() {
            for e in &s.summary.events {
                let span = load::resolve(&self.segs, i, e.span);
                let mut ev = match e.kind {
                    EventKind::Del => continue,
                    EventKind::FlushAll => self.event("flushall", span, None, &e.command),
                    EventKind::FlushDb => self.event("flushdb", span, Some(e.db), &e.command),
                    EventKind::SwapDb => self.event("swapdb", span, Some(e.db), &e.command),
                };
                if e.kind == EventKind::SwapDb {
                    ev.other_db = Some(e.other_db);
                }
                out.push(ev);
            }
        }
        for (kind, count, first) in [
            (
                "mass-delete",
                (|b: &Bucket| b.deleted) as fn(&Bucket) -> u64,
                (|b: &Bucket| b.first_delete) as fn(&Bucket) -> Option<Span>,
            ),
            ("mass-expire", |b| b.expired, |b| b.first_expire),
        ] {
            let mut run: Option<(u64, TimelineEvent)> = None;
            for b in self.buckets.values() {
                let over = count(b) > mass_keys;
                match (&mut run, over) {
                    (Some((last, ev)), true) if *last + 1 == b.second => {
                        *last = b.second;
                        ev.key_count += count(b);
                    }
                    (_, true) => {
                        if let Some((_, ev)) = run.take() {
                            out.push(ev);
                        }
                        if let Some(span) = first(b) {
                            let mut ev = self.event(kind, span, None, b"");
                            ev.key_count = count(b);
                            run = Some((b.second, ev));
                        }
                    }
                    (_, false) => {
                        if let Some((_, ev)) = run.take() {
                            out.push(ev);
                        }
                    }
                }
            }
            if let Some((_, ev)) = run.take() {
                out.push(ev);
            }
        }
        out.sort_by_key(|e| (e.time_ms, e.offset));
        out
    }

    /// Every DEL/UNLINK naming one of `keys` (in `db` only, when given): from the summaries
    /// where they hold every delete of the segment with all its keys, else from the segments
    /// the key filter cannot rule out.
    pub async fn deletes_of(
        &self,
        store: &Store,
        keys: &[Vec<u8>],
        db: Option<u32>,
    ) -> Result<Vec<TimelineEvent>, StreamError> {
        let mut out = Vec::new();
        if keys.is_empty() {
            return Ok(out);
        }
        for (i, s) in self.segs.iter().enumerate() {
            let sum = &s.summary;
            let dbs = seg_dbs(s);
            let maybe = keys.iter().any(|k| {
                dbs.iter()
                    .filter(|d| db.is_none_or(|x| x == **d))
                    .any(|d| sum.may_touch(*d, k))
            });
            if !maybe {
                continue;
            }
            let complete = sum.dels_complete
                && sum
                    .events
                    .iter()
                    .all(|e| e.kind != EventKind::Del || e.key_count == e.keys.len() as u64);
            let hits: Vec<Hit> = if complete {
                sum.events
                    .iter()
                    .filter(|e| e.kind == EventKind::Del)
                    .filter_map(|e| {
                        let named: Vec<Vec<u8>> = keys
                            .iter()
                            .filter(|k| e.keys.contains(k))
                            .cloned()
                            .collect();
                        (!named.is_empty()).then(|| Hit {
                            span: e.span,
                            db: e.db,
                            command: e.command.clone(),
                            keys: named,
                        })
                    })
                    .collect()
            } else {
                load::scan(store, &s.segment, Want::DeletesOf(keys.to_vec()))
                    .await?
                    .1
            };
            for h in hits.into_iter().filter(|h| db.is_none_or(|d| d == h.db)) {
                let span = load::resolve(&self.segs, i, h.span);
                let mut ev = self.event("del", span, Some(h.db), &h.command);
                ev.key_count = h.keys.len() as u64;
                ev.keys = h.keys.iter().map(|k| key_text(k)).collect();
                out.push(ev);
            }
        }
        Ok(out)
    }

    /// Every record of command `name` (upper case), from the segments whose summary counts one.
    pub async fn commands(
        &self,
        store: &Store,
        name: &[u8],
    ) -> Result<Vec<TimelineEvent>, StreamError> {
        let mut out = Vec::new();
        for (i, s) in self.segs.iter().enumerate() {
            if s.summary.command_count(name) == 0 {
                continue;
            }
            let (_, hits) = load::scan(store, &s.segment, Want::Command(name.to_vec())).await?;
            for h in hits {
                let span = load::resolve(&self.segs, i, h.span);
                out.push(self.event("cmd", span, Some(h.db), &h.command));
            }
        }
        Ok(out)
    }

    /// The dbs in which the log may have written `key` in a segment starting before
    /// `before_offset` (by the key filters: a false positive adds a db, never drops one).
    pub fn key_dbs(&self, key: &[u8], before_offset: u64) -> Vec<u32> {
        let mut dbs: Vec<u32> = Vec::new();
        for s in self
            .segs
            .iter()
            .filter(|s| s.segment.start_offset < before_offset)
        {
            for d in seg_dbs(s) {
                if !dbs.contains(&d) && s.summary.may_touch(d, key) {
                    dbs.push(d);
                }
            }
        }
        dbs
    }
}

/// The dbs a segment wrote in (and db 0, where a key with no write in the log most likely is).
fn seg_dbs(s: &SegSummary) -> Vec<u32> {
    let mut dbs: Vec<u32> = s
        .summary
        .buckets
        .iter()
        .flat_map(|b| b.by_db.iter().map(|&(d, _)| d))
        .chain([0])
        .collect();
    dbs.sort_unstable();
    dbs.dedup();
    dbs
}
