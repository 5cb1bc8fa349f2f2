//! What one record means for a key-level restore: framing, a global write, a SWAPDB, the keys
//! it touches (with the db each lives in), or keys that cannot be known (the safe fallback).

use crate::commands::CommandTable;

/// A key a record touches: `db` is the physical db (the record's own unless the command names
/// another: MOVE, COPY … DB n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    pub db: u32,
    pub name: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// SELECT: the link selects each kept record's db itself.
    Select,
    Multi,
    Exec,
    /// Keyless and global (FLUSHALL, FLUSHDB, FUNCTION …, SCRIPT …): always passed on.
    Always,
    /// PING, REPLCONF, PUBLISH, SPUBLISH: no data (the engine skips them anyway); left out
    /// here so that they do not make a transaction around them go out.
    Traffic,
    SwapDb(u32, u32),
    /// The keys it touches, and whether its result depends on more than one of them (false
    /// for DEL, UNLINK and MSET, which act on each key alone: linking their keys would only
    /// grow the closure).
    Keys(Vec<Touched>, bool),
    /// Which keys it touches cannot be known: the restore falls back to the full path.
    Unknown(String),
}

const SCRIPTS: [&[u8]; 6] = [
    b"eval",
    b"evalsha",
    b"eval_ro",
    b"evalsha_ro",
    b"fcall",
    b"fcall_ro",
];

fn db_arg(a: Option<&Option<Vec<u8>>>) -> Option<u32> {
    std::str::from_utf8(a?.as_deref()?).ok()?.parse().ok()
}

/// Classifies a record in db `db` whose arguments are `args` (None: longer than the scanner
/// keeps).
pub fn classify(table: &CommandTable, db: u32, args: &[Option<Vec<u8>>]) -> Class {
    let Some(Some(name)) = args.first() else {
        return Class::Unknown("a record without a command name".into());
    };
    let lower = name.to_ascii_lowercase();
    let show = || crate::show::key(name);
    match lower.as_slice() {
        b"select" => return Class::Select,
        b"multi" => return Class::Multi,
        b"exec" => return Class::Exec,
        b"ping" | b"replconf" | b"publish" | b"spublish" => return Class::Traffic,
        b"flushall" | b"flushdb" | b"function" | b"script" => return Class::Always,
        b"swapdb" => {
            return match (db_arg(args.get(1)), db_arg(args.get(2))) {
                (Some(a), Some(b)) => Class::SwapDb(a, b),
                _ => Class::Unknown("a SWAPDB without two db numbers".into()),
            }
        }
        _ => {}
    }
    // BY and GET patterns read keys no key spec names (SORT's own code looks them up).
    if (lower == b"sort" || lower == b"sort_ro")
        && args.iter().skip(2).any(|a| {
            a.as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(b"BY") || a.eq_ignore_ascii_case(b"GET"))
        })
    {
        return Class::Unknown(format!(
            "{} with BY or GET reads keys its arguments do not name",
            show()
        ));
    }
    let short: Vec<&[u8]> = args.iter().map(|a| a.as_deref().unwrap_or(b"")).collect();
    let Some(info) = table.lookup(&short) else {
        return Class::Unknown(format!("unknown command {}", show()));
    };
    if !info.keys_complete() {
        return Class::Unknown(format!(
            "the server says {}'s key specs may miss keys",
            show()
        ));
    }
    let positions = info.key_positions(&short);
    if positions.is_empty() && SCRIPTS.contains(&lower.as_slice()) {
        // Cluster mode would refuse it; standalone lets a script touch any key.
        return Class::Unknown(format!("{} declares no keys", show()));
    }
    let mut keys = Vec::with_capacity(positions.len() + 1);
    for p in positions {
        match args.get(p) {
            Some(Some(k)) => keys.push(Touched {
                db,
                name: k.clone(),
            }),
            _ => {
                return Class::Unknown(format!(
                    "{} with a key longer than {} bytes",
                    show(),
                    super::scan::MAX_ARG
                ))
            }
        }
    }
    // The commands that name another db: the key there is a second key of the command.
    if lower == b"move" {
        match (keys.first().cloned(), db_arg(args.get(2))) {
            (Some(k), Some(to)) => keys.push(Touched { db: to, ..k }),
            _ => return Class::Unknown("a MOVE without a key and a db".into()),
        }
    } else if lower == b"copy" {
        let at = args
            .iter()
            .position(|a| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b"DB")));
        if let Some(i) = at.filter(|&i| i >= 3) {
            match (db_arg(args.get(i + 1)), keys.get_mut(1)) {
                (Some(to), Some(dst)) => dst.db = to,
                _ => return Class::Unknown("a COPY … DB without a db number".into()),
            }
        }
    }
    if keys.is_empty() {
        Class::Always
    } else {
        let alone = matches!(lower.as_slice(), b"del" | b"unlink" | b"mset");
        Class::Keys(keys, !alone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<Option<Vec<u8>>> {
        s.iter().map(|a| Some(a.as_bytes().to_vec())).collect()
    }

    fn keys(c: Class) -> Vec<(u32, String)> {
        match c {
            Class::Keys(k, _) => k
                .into_iter()
                .map(|t| (t.db, String::from_utf8(t.name).unwrap()))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn classes() {
        let t = CommandTable::builtin();
        assert_eq!(
            keys(classify(&t, 2, &args(&["RENAME", "a", "b"]))),
            [(2, "a".into()), (2, "b".into())]
        );
        assert_eq!(
            keys(classify(&t, 0, &args(&["MOVE", "a", "5"]))),
            [(0, "a".into()), (5, "a".into())]
        );
        assert_eq!(
            keys(classify(
                &t,
                0,
                &args(&["copy", "a", "b", "db", "3", "replace"])
            )),
            [(0, "a".into()), (3, "b".into())]
        );
        assert_eq!(
            keys(classify(&t, 0, &args(&["EVAL", "x", "2", "k1", "k2", "v"]))),
            [(0, "k1".into()), (0, "k2".into())]
        );
        assert!(matches!(
            classify(&t, 0, &args(&["EVAL", "x", "0"])),
            Class::Unknown(_)
        ));
        assert!(matches!(
            classify(&t, 0, &args(&["NOSUCH", "k"])),
            Class::Unknown(_)
        ));
        assert!(matches!(
            classify(&t, 0, &args(&["SORT", "l", "BY", "w_*", "STORE", "d"])),
            Class::Unknown(_)
        ));
        assert_eq!(
            keys(classify(&t, 0, &args(&["SORT", "l", "STORE", "d"]))),
            [(0, "l".into()), (0, "d".into())]
        );
        assert_eq!(
            classify(&t, 0, &args(&["SWAPDB", "0", "1"])),
            Class::SwapDb(0, 1)
        );
        assert_eq!(classify(&t, 0, &args(&["FLUSHDB"])), Class::Always);
        assert_eq!(
            classify(&t, 0, &args(&["function", "load", "x"])),
            Class::Always
        );
        let mut big = args(&["SET", "k", "v"]);
        big[1] = None;
        assert!(matches!(classify(&t, 0, &big), Class::Unknown(_)));
        big = args(&["SET", "k", "v"]);
        big[2] = None;
        assert_eq!(keys(classify(&t, 0, &big)), [(0, "k".into())]);
    }
}
