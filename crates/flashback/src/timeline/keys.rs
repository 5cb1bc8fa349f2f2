//! What a replicated command is: its arguments (sliced out of the RESP bytes without copying),
//! its family, and the keys it touches.
//!
//! Key positions come from `crate::commands::CommandTable` (one table for `history` and the
//! summaries). Only the forms a primary *propagates* matter here (EXPIRE arrives as PEXPIREAT,
//! EVAL as the commands it ran inside MULTI…EXEC, BLPOP as LPOP).

use crate::commands::CommandTable;
use flashback_format::summary::Family;

/// The arguments of a RESP array of bulk strings, as far as `resp` holds whole ones (a prefix
/// of a command too big to keep gives its first arguments). Anything that is not such an
/// array gives what was read before it.
pub fn argv_prefix(resp: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let Some((n, mut pos)) = header(resp, 0, b'*') else {
        return out;
    };
    for _ in 0..n {
        let Some((len, start)) = header(resp, pos, b'$') else {
            break;
        };
        let Some(arg) = start.checked_add(len).and_then(|end| resp.get(start..end)) else {
            break;
        };
        out.push(arg);
        pos = start + len + 2;
    }
    out
}

/// `<tag><decimal>\r\n` at `pos`: the number and the position after the CRLF.
fn header(buf: &[u8], pos: usize, tag: u8) -> Option<(usize, usize)> {
    if *buf.get(pos)? != tag {
        return None;
    }
    let rest = buf.get(pos + 1..)?;
    let nl = rest.iter().take(21).position(|&b| b == b'\r')?;
    if rest.get(nl + 1) != Some(&b'\n') {
        return None;
    }
    // By hand rather than from_utf8 + parse: this runs for every argument of every record the
    // agent stores, and the generic path was a few percent of its CPU.
    let digits = &rest[..nl];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((usize::try_from(n).ok()?, pos + 1 + nl + 2))
}

/// The family of a command (upper-case name), or None for records that change no data
/// (SELECT, PING, MULTI, EXEC, REPLCONF) and are not counted as writes.
pub fn family(name: &[u8]) -> Option<Family> {
    Some(match name {
        b"" | b"SELECT" | b"PING" | b"MULTI" | b"EXEC" | b"REPLCONF" => return None,
        b"DEL" | b"UNLINK" | b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" | b"PERSIST"
        | b"RENAME" | b"RENAMENX" | b"COPY" | b"MOVE" | b"RESTORE" | b"RESTORE-ASKING"
        | b"TOUCH" => Family::Key,
        b"FLUSHALL" | b"FLUSHDB" | b"SWAPDB" | b"FUNCTION" | b"SCRIPT" | b"EVAL" | b"EVALSHA"
        | b"FCALL" => Family::Generic,
        b"SET" | b"SETNX" | b"SETEX" | b"PSETEX" | b"SETRANGE" | b"SETBIT" | b"GETSET"
        | b"GETDEL" | b"GETEX" | b"APPEND" | b"INCR" | b"INCRBY" | b"DECR" | b"DECRBY"
        | b"INCRBYFLOAT" | b"MSET" | b"MSETNX" | b"BITOP" | b"BITFIELD" | b"PFADD" | b"PFMERGE"
        | b"PFCOUNT" | b"LCS" => Family::String,
        n if n.starts_with(b"GEO") || n.starts_with(b"Z") || n.starts_with(b"BZ") => Family::Zset,
        n if n.starts_with(b"X") => Family::Stream,
        n if n.starts_with(b"H") => Family::Hash,
        n if n.starts_with(b"BL") || n.starts_with(b"BR") || n.starts_with(b"L") => Family::List,
        b"RPUSH" | b"RPUSHX" | b"RPOP" | b"RPOPLPUSH" => Family::List,
        n if n.starts_with(b"S") && !n.starts_with(b"SP") => Family::Set,
        _ => Family::Other,
    })
}

/// Positions in `argv` that are key names, by the builtin [`CommandTable`] (`history`'s, so
/// the keys a filter holds are the keys `history` follows). Builtin rather than the
/// generation's stored COMMAND reply, which the agent does not parse on its hot path: a
/// command the table does not know (a module's) marks the summary `keys_unknown`, so its
/// filter never rules a key out.
pub fn key_positions(argv: &[&[u8]]) -> Vec<usize> {
    table().key_positions(argv)
}

/// Whether the table knows the command (so its keys are in the filter).
pub fn known(argv: &[&[u8]]) -> bool {
    table().lookup(argv).is_some()
}

/// The builtin table's entry for `argv`, looked up once where both [`known`] and the key
/// positions are wanted.
pub fn lookup<'t>(argv: &[&[u8]]) -> Option<&'t crate::commands::CommandInfo> {
    table().lookup(argv)
}

fn table() -> &'static CommandTable {
    static TABLE: std::sync::OnceLock<CommandTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(CommandTable::builtin)
}

/// Every `(db, key)` a command touches: its key positions in its own db, and the destination of
/// MOVE (and of COPY … DB n) in the other db.
pub fn touched<'a>(name: &[u8], argv: &[&'a [u8]], db: u32) -> Vec<(u32, &'a [u8])> {
    touched_at(name, argv, db, key_positions(argv))
}

/// [`touched`] with the key positions already known.
pub fn touched_at<'a>(
    name: &[u8],
    argv: &[&'a [u8]],
    db: u32,
    positions: Vec<usize>,
) -> Vec<(u32, &'a [u8])> {
    let mut out: Vec<(u32, &[u8])> = positions
        .into_iter()
        .filter_map(|i| argv.get(i).map(|k| (db, *k)))
        .collect();
    let parse_db = |a: &[u8]| std::str::from_utf8(a).ok()?.parse::<u32>().ok();
    match name {
        b"MOVE" => {
            if let (Some(k), Some(to)) = (argv.get(1), argv.get(2).and_then(|a| parse_db(a))) {
                out.push((to, k));
            }
        }
        b"COPY" => {
            let to = argv
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"DB"))
                .and_then(|i| argv.get(i + 1))
                .and_then(|a| parse_db(a));
            if let (Some(k), Some(to)) = (argv.get(2), to) {
                out.push((to, k));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashback_format::resp::encode_command;

    #[test]
    fn argv_prefix_reads_whole_arguments_only() {
        let c = encode_command(&[&b"SET"[..], b"k\r\ney", b"value"]);
        assert_eq!(argv_prefix(&c), vec![&b"SET"[..], b"k\r\ney", b"value"]);
        assert_eq!(
            argv_prefix(&c[..c.len() - 3]),
            vec![&b"SET"[..], b"k\r\ney"]
        );
        assert!(argv_prefix(b"+OK\r\n").is_empty());
        assert!(argv_prefix(b"").is_empty());
    }

    #[test]
    fn families_and_keys() {
        assert_eq!(family(b"SET"), Some(Family::String));
        assert_eq!(family(b"SADD"), Some(Family::Set));
        assert_eq!(family(b"SELECT"), None);
        assert_eq!(family(b"GEOADD"), Some(Family::Zset));
        assert_eq!(family(b"PUBLISH"), Some(Family::Other));
        assert_eq!(family(b"RPUSH"), Some(Family::List));
        assert_eq!(family(b"RENAME"), Some(Family::Key));
        let argv: Vec<&[u8]> = vec![b"MSET", b"a", b"1", b"b", b"2"];
        assert_eq!(key_positions(&argv), vec![1, 3]);
        let argv: Vec<&[u8]> = vec![b"MOVE", b"a", b"5"];
        assert_eq!(touched(b"MOVE", &argv, 0), vec![(0, &b"a"[..]), (5, b"a")]);
        let argv: Vec<&[u8]> = vec![b"ZUNIONSTORE", b"d", b"2", b"x", b"y", b"WEIGHTS", b"1"];
        assert_eq!(key_positions(&argv), vec![1, 3, 4]);
        assert!(key_positions(&[b"FLUSHALL".as_slice(), b"ASYNC"]).is_empty());
        let argv: Vec<&[u8]> = vec![b"del", b"a", b"b"];
        assert_eq!(key_positions(&argv), vec![1, 2]);
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    /// Every command a primary propagates in ordinary use is known, or the summaries of
    /// ordinary segments would give up their key filters.
    #[test]
    fn propagated_commands_are_known() {
        for argv in [
            &[&b"SET"[..], b"k", b"v"][..],
            &[b"PEXPIREAT", b"k", b"1"],
            &[b"FLUSHALL"],
            &[b"FLUSHDB"],
            &[b"SWAPDB", b"0", b"1"],
            &[b"FUNCTION", b"LOAD", b"x"],
            &[b"PUBLISH", b"c", b"m"],
            &[b"XADD", b"s", b"*", b"f", b"v"],
            &[b"UNLINK", b"a"],
            &[b"HSET", b"h", b"f", b"v"],
        ] {
            assert!(known(argv), "{:?}", String::from_utf8_lossy(argv[0]));
        }
        assert!(!known(&[b"MYMODULE.SET", b"k"]));
    }
}
