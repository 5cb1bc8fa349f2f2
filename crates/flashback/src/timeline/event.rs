//! `restore --before EVENT` and `--after EVENT`: the EVENT syntax (DESIGN.md, Command line)
//! and the search for the event, through the summaries.
//!
//! `--before` lands where the event's transaction starts (the cut point before it: the
//! event's MULTI…EXEC is left out whole), at the LAST such event (at or before `--at` when
//! given); `--after` where it ends, at the FIRST one (at or after `--at`). Only events a
//! restore can reach count: inside a run of a generation's chain, between its base and the
//! end of its log.

use super::history::History;
use super::{TimelineError, TimelineEvent};
use crate::store::catalog;
use crate::store::Store;
use crate::timespec::format_ms;

/// What `--before/--after` looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSpec {
    FlushAll,
    /// `flushdb` (any db) or `flushdb:N`.
    FlushDb(Option<u32>),
    SwapDb,
    /// DEL/UNLINK of the key, or a FLUSHALL, or a FLUSHDB of a db the log wrote the key in
    /// (of any db when the log never wrote it: its db is then unknown).
    Del(Vec<u8>),
    /// Any command of that name (upper-cased).
    Cmd(Vec<u8>),
    /// The start of a run of seconds each deleting more than `--mass-delete-keys` keys.
    MassDelete,
}

/// The forms, for the usage error.
pub const FORMS: &str = "flushall, flushdb, flushdb:N, swapdb, del:KEY, cmd:NAME, mass-delete";

impl EventSpec {
    /// Parses an EVENT (bytes: a `del:KEY` key may be any bytes the shell passes).
    pub fn parse(s: &[u8]) -> Result<EventSpec, String> {
        let bad = |why: &str| {
            Err(format!(
                "{}: {why}; EVENT is one of {FORMS}",
                crate::show::key(s)
            ))
        };
        let (head, rest) = match s.iter().position(|&b| b == b':') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let head = head.to_ascii_lowercase();
        match (head.as_slice(), rest) {
            (b"flushall", None) => Ok(EventSpec::FlushAll),
            (b"flushdb", None) => Ok(EventSpec::FlushDb(None)),
            (b"flushdb", Some(n)) => match std::str::from_utf8(n).ok().and_then(|n| n.parse().ok())
            {
                Some(n) => Ok(EventSpec::FlushDb(Some(n))),
                None => bad("flushdb:N takes a db number"),
            },
            (b"swapdb", None) => Ok(EventSpec::SwapDb),
            (b"mass-delete", None) => Ok(EventSpec::MassDelete),
            (b"del", Some(k)) if !k.is_empty() => Ok(EventSpec::Del(k.to_vec())),
            (b"del", _) => bad("del:KEY needs the key"),
            (b"cmd", Some(c)) if !c.is_empty() => Ok(EventSpec::Cmd(c.to_ascii_uppercase())),
            (b"cmd", _) => bad("cmd:NAME needs a command name"),
            (b"flushall" | b"swapdb" | b"mass-delete", Some(_)) => {
                bad("this event takes no ':' part")
            }
            _ => bad("not an event"),
        }
    }

    /// For messages: what was searched.
    pub fn describe(&self) -> String {
        match self {
            EventSpec::FlushAll => "a FLUSHALL".into(),
            EventSpec::FlushDb(None) => "a FLUSHDB".into(),
            EventSpec::FlushDb(Some(n)) => format!("a FLUSHDB of db {n}"),
            EventSpec::SwapDb => "a SWAPDB".into(),
            EventSpec::Del(k) => format!(
                "a DEL/UNLINK of {} (or a FLUSHALL, or a FLUSHDB of its db)",
                crate::show::key(k)
            ),
            EventSpec::Cmd(c) => format!("a {} command", String::from_utf8_lossy(c)),
            EventSpec::MassDelete => "a mass delete".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Just before the last such event.
    Before,
    /// Just after the first such event.
    After,
}

/// The event a restore lands on, and where.
#[derive(Debug, Clone)]
pub struct Found {
    pub event: TimelineEvent,
    /// The generation's id as a number (`Target::InGeneration`).
    pub generation_ms: u64,
    /// `start_offset` for `--before`, `offset` for `--after`.
    pub offset: u64,
    /// Events of that kind in the range searched.
    pub candidates: usize,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(transparent)]
    Timeline(#[from] TimelineError),
    #[error("no {what} {range} in source '{source_name}' (windows: {windows}); see `flashback timeline`")]
    NotFound {
        what: String,
        range: String,
        source_name: String,
        windows: String,
    },
}

/// Finds the event for `restore --before/--after spec` (with `--at`: `at_ms`).
pub async fn find(
    store: &Store,
    source: &str,
    spec: &EventSpec,
    dir: Direction,
    at_ms: Option<u64>,
    mass_delete_keys: u64,
    db: Option<u32>,
) -> Result<Found, FindError> {
    let gens = catalog::load_generations(store, source)
        .await
        .map_err(TimelineError::from)?;
    let (from, to) = match (dir, at_ms) {
        (Direction::Before, Some(t)) => (0, t),
        (Direction::After, Some(t)) => (t, u64::MAX),
        (_, None) => (0, u64::MAX),
    };
    let mut warnings = Vec::new();
    let mut all: Vec<(u64, TimelineEvent)> = Vec::new();
    for g in gens.iter().filter(|g| g.manifest.is_some()) {
        let Some(gen_ms) = crate::store::layout::parse_generation_id(&g.id) else {
            continue;
        };
        let h = History::load(store, g, from, to, &mut warnings)
            .await
            .map_err(TimelineError::from)?;
        let chain = g.chain();
        let reachable = |e: &TimelineEvent| {
            chain.runs.iter().any(|r| {
                let w = r.window;
                match dir {
                    Direction::Before => {
                        w.from_offset <= e.start_offset && e.start_offset <= w.to_offset
                    }
                    Direction::After => w.from_offset <= e.offset && e.offset <= w.to_offset,
                }
            })
        };
        let kind_of = |k: &str| -> Vec<TimelineEvent> {
            h.destructive(mass_delete_keys)
                .into_iter()
                .filter(|e| e.kind == k)
                .collect()
        };
        let found: Vec<TimelineEvent> = match spec {
            EventSpec::FlushAll => kind_of("flushall"),
            EventSpec::FlushDb(n) => kind_of("flushdb")
                .into_iter()
                .filter(|e| n.is_none_or(|n| e.db == Some(n)))
                .collect(),
            EventSpec::SwapDb => kind_of("swapdb"),
            EventSpec::MassDelete => kind_of("mass-delete"),
            EventSpec::Cmd(name) => h.commands(store, name).await.map_err(TimelineError::from)?,
            EventSpec::Del(key) => {
                let mut v = h
                    .deletes_of(store, std::slice::from_ref(key), db)
                    .await
                    .map_err(TimelineError::from)?;
                v.extend(kind_of("flushall"));
                for e in kind_of("flushdb") {
                    let counts = match db {
                        Some(d) => e.db == Some(d),
                        None => {
                            let dbs = h.key_dbs(key, e.offset);
                            dbs.is_empty() || e.db.is_some_and(|d| dbs.contains(&d))
                        }
                    };
                    if counts {
                        v.push(e);
                    }
                }
                v
            }
        };
        all.extend(
            found
                .into_iter()
                .filter(|e| from <= e.time_ms && e.time_ms <= to)
                .filter(reachable)
                .map(|e| (gen_ms, e)),
        );
    }
    all.sort_by_key(|(g, e)| (*g, e.time_ms, e.offset));
    let candidates = all.len();
    let chosen = match dir {
        Direction::Before => all.pop(),
        Direction::After => (!all.is_empty()).then(|| all.remove(0)),
    };
    let Some((generation_ms, event)) = chosen else {
        let info = crate::info::source_info(source, &gens, crate::now_ms());
        let windows = if info.windows.is_empty() {
            "none".to_string()
        } else {
            info.windows
                .iter()
                .map(|w| format!("{} .. {}", format_ms(w.from_ms), format_ms(w.to_ms)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let range = match (dir, at_ms) {
            (Direction::Before, Some(t)) => format!("at or before {}", format_ms(t)),
            (Direction::After, Some(t)) => format!("at or after {}", format_ms(t)),
            _ => "in the restorable window".into(),
        };
        let mut what = spec.describe();
        if matches!(spec, EventSpec::MassDelete) {
            what = format!("{what} (more than {mass_delete_keys} keys deleted in one second)");
        }
        return Err(FindError::NotFound {
            what: what.trim_start_matches("a ").to_string(),
            range,
            source_name: source.to_string(),
            windows,
        });
    };
    let offset = match dir {
        Direction::Before => event.start_offset,
        Direction::After => event.offset,
    };
    Ok(Found {
        event,
        generation_ms,
        offset,
        candidates,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_syntax() {
        assert_eq!(EventSpec::parse(b"flushall"), Ok(EventSpec::FlushAll));
        assert_eq!(EventSpec::parse(b"FLUSHALL"), Ok(EventSpec::FlushAll));
        assert_eq!(EventSpec::parse(b"flushdb"), Ok(EventSpec::FlushDb(None)));
        assert_eq!(
            EventSpec::parse(b"flushdb:3"),
            Ok(EventSpec::FlushDb(Some(3)))
        );
        assert_eq!(EventSpec::parse(b"swapdb"), Ok(EventSpec::SwapDb));
        assert_eq!(EventSpec::parse(b"mass-delete"), Ok(EventSpec::MassDelete));
        // The key is everything after the first colon, bytes as given.
        assert_eq!(
            EventSpec::parse(b"del:user:1\xff"),
            Ok(EventSpec::Del(b"user:1\xff".to_vec()))
        );
        assert_eq!(
            EventSpec::parse(b"cmd:hset"),
            Ok(EventSpec::Cmd(b"HSET".to_vec()))
        );
        for bad in [
            &b"flushdb:x"[..],
            b"del:",
            b"del",
            b"cmd:",
            b"flushall:1",
            b"drop",
            b"",
        ] {
            let e = EventSpec::parse(bad).unwrap_err();
            assert!(e.contains(FORMS), "{e}");
        }
    }
}
