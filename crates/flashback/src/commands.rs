//! Which arguments of a command are keys: a [`CommandTable`] built either from the source's own
//! `COMMAND` reply (stored with each generation, so a module's commands are known) or from a
//! hand-written table of the write commands of Redis 7.0–8.2 and Valkey 8–9
//! ([`CommandTable::builtin`]).
//!
//! Key positions follow Redis 7's key specifications (`getKeysUsingKeySpecs` in `db.c`): a
//! *begin search* (an index, or a keyword searched forward or backward) and a *find keys* step
//! (a range, or a count argument). Both the builtin table and the parsed reply are key specs,
//! evaluated by one function, so the two can be compared argument for argument (the tests do,
//! and against `COMMAND GETKEYS` on live servers). The legacy `first/last/step` triple alone was
//! rejected: it cannot express EVAL's `numkeys` or `GEORADIUS … STORE`.
//!
//! Two commands' specs are marked incomplete by the servers themselves (SORT's `STORE`,
//! MIGRATE's `KEYS`); the servers then run hand-written code, and so does this module
//! ([`Special`]), whichever table the command came from.

use flashback_format::resp::Frame;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum CommandTableError {
    #[error("COMMAND reply: expected an array of command entries, got {0}; store the reply of a plain COMMAND (RESP2)")]
    NotArray(String),
    #[error("COMMAND reply entry {index}: {what}")]
    Entry { index: usize, what: String },
}

/// Where the search for a spec's first key starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument.
    Index(usize),
    /// After the first `keyword` found from `startfrom` (negative: counted from the end, and
    /// searched backward).
    Keyword { keyword: Vec<u8>, startfrom: i64 },
    /// The server could not describe it (SORT's STORE): see [`Special`].
    Unknown,
}

/// Which keys follow the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `lastkey` (relative to the first; negative: from the end of argv), every
    /// `step`; with `limit`, only the first 1/limit of what remains (XREADGROUP's STREAMS).
    Range {
        lastkey: i64,
        step: usize,
        limit: usize,
    },
    /// The argument at `keynumidx` (relative to the first) counts the keys, which start
    /// `firstkey` after the first and repeat every `step` (EVAL, ZUNIONSTORE, LMPOP, MSETEX).
    Keynum {
        keynumidx: usize,
        firstkey: usize,
        step: usize,
    },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: BeginSearch,
    pub find: FindKeys,
    /// The server says this spec may miss keys (it has hand-written code for them).
    pub incomplete: bool,
    /// Not a key at all (SPUBLISH's channel): left out of key positions.
    pub not_key: bool,
}

/// Commands whose keys no key spec can find: the servers' own `getkeys_proc` logic, rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    /// `SORT key [BY p] [LIMIT o c] [GET p]… [STORE dst]`: the last STORE's argument.
    Sort,
    /// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH p | AUTH2 u p] [KEYS k…]`.
    Migrate,
}

#[derive(Debug, Clone, Default)]
pub struct CommandInfo {
    /// Lowercase; a subcommand's is `parent|sub`, as COMMAND names it.
    pub name: Vec<u8>,
    pub arity: i64,
    /// Flagged `write` by the server (a container like XGROUP is not; its subcommands are).
    pub write: bool,
    pub specs: Vec<KeySpec>,
    special: Option<Special>,
    /// By lowercase subcommand name (`create` for `xgroup|create`).
    subcommands: HashMap<Vec<u8>, CommandInfo>,
    /// True when this entry came from a server's COMMAND reply, not the builtin table.
    pub from_server: bool,
}

/// Command name → key positions and write flag.
#[derive(Debug, Clone)]
pub struct CommandTable {
    commands: HashMap<Vec<u8>, CommandInfo>,
}

/// `map[lowercase(name)]`, lowercased on the stack for a name of the usual size: the capture
/// agent looks up every record it stores (timeline summaries), and an allocation per record
/// was a measurable share of its CPU (bench/capture.sh).
fn get_lowercase<'m, V>(map: &'m HashMap<Vec<u8>, V>, name: &[u8]) -> Option<&'m V> {
    let mut buf = [0u8; 32];
    match buf.get_mut(..name.len()) {
        Some(b) => {
            b.copy_from_slice(name);
            b.make_ascii_lowercase();
            map.get(&*b)
        }
        None => map.get(name.to_ascii_lowercase().as_slice()),
    }
}

impl CommandTable {
    /// The builtin table (see [`builtin`] for what it holds).
    pub fn builtin() -> CommandTable {
        let mut commands: HashMap<Vec<u8>, CommandInfo> = HashMap::new();
        let mut subs = Vec::new();
        for &(name, arity, write, keys) in builtin::TABLE {
            let info = CommandInfo {
                name: name.as_bytes().to_vec(),
                arity: arity.into(),
                write,
                specs: keys.iter().map(builtin::K::spec).collect(),
                special: special_of(name.as_bytes()),
                subcommands: HashMap::new(),
                from_server: false,
            };
            match name.split_once('|') {
                Some((parent, sub)) => subs.push((parent, sub, info)),
                None => {
                    commands.insert(info.name.clone(), info);
                }
            }
        }
        for (parent, sub, info) in subs {
            let p = commands
                .entry(parent.as_bytes().to_vec())
                .or_insert_with(|| CommandInfo {
                    name: parent.as_bytes().to_vec(),
                    arity: -2,
                    ..Default::default()
                });
            p.subcommands.insert(sub.as_bytes().to_vec(), info);
        }
        CommandTable { commands }
    }

    /// Parses a `COMMAND` reply (RESP2, Redis 7+/Valkey: name, arity, flags, first, last, step,
    /// ACL categories, tips, key specs, subcommands; older servers' shorter entries use the
    /// first/last/step triple). Commands it does not name keep the builtin's entries.
    pub fn from_command_reply(reply: &Frame) -> Result<CommandTable, CommandTableError> {
        let Frame::Array(entries) = reply else {
            return Err(CommandTableError::NotArray(kind(reply).into()));
        };
        let mut table = CommandTable::builtin();
        for (index, e) in entries.iter().enumerate() {
            // A null entry is what COMMAND INFO answers for an unknown name; skip it.
            if matches!(e, Frame::Null) {
                continue;
            }
            let info =
                parse_entry(e, None).map_err(|what| CommandTableError::Entry { index, what })?;
            table.commands.insert(info.name.clone(), info);
        }
        Ok(table)
    }

    /// The entry for `argv` (subcommand resolved), if the table knows the command.
    pub fn lookup(&self, argv: &[&[u8]]) -> Option<&CommandInfo> {
        let cmd = get_lowercase(&self.commands, argv.first()?)?;
        if cmd.subcommands.is_empty() {
            return Some(cmd);
        }
        get_lowercase(&cmd.subcommands, argv.get(1)?)
    }

    /// The positions in `argv` (argv\[0\] is the command's name, any case) that hold keys, in
    /// the order the key specs give them. Unknown commands and arguments too short for a spec
    /// give no positions for it; never a panic.
    pub fn key_positions(&self, argv: &[&[u8]]) -> Vec<usize> {
        match self.lookup(argv) {
            Some(cmd) => cmd.key_positions(argv),
            None => Vec::new(),
        }
    }

    /// Whether the server flags the command `write` (`name` may be `parent|sub`).
    pub fn is_write(&self, name: &[u8]) -> bool {
        let lower = name.to_ascii_lowercase();
        let (parent, sub) = match lower.iter().position(|&b| b == b'|') {
            Some(i) => (&lower[..i], Some(&lower[i + 1..])),
            None => (&lower[..], None),
        };
        let Some(cmd) = self.commands.get(parent) else {
            return false;
        };
        match sub {
            Some(s) => cmd.subcommands.get(s).is_some_and(|c| c.write),
            None => cmd.write,
        }
    }

    /// The top-level entry named `name` (any case).
    pub fn get(&self, name: &[u8]) -> Option<&CommandInfo> {
        self.commands.get(&name.to_ascii_lowercase())
    }

    /// How many top-level commands the table knows.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

impl CommandInfo {
    /// Whether [`CommandInfo::key_positions`] finds every key: false when a spec the server
    /// marks incomplete has no hand-written code here (a module's command, say).
    pub fn keys_complete(&self) -> bool {
        self.special.is_some() || !self.specs.iter().any(|s| s.incomplete)
    }

    pub fn key_positions(&self, argv: &[&[u8]]) -> Vec<usize> {
        match self.special {
            Some(Special::Sort) => sort_keys(argv),
            Some(Special::Migrate) => migrate_keys(argv),
            None => {
                let mut out = Vec::new();
                for spec in &self.specs {
                    if !spec.not_key && !spec.incomplete {
                        spec.positions(argv.len(), |i| argv.get(i).copied(), &mut out);
                    }
                }
                out
            }
        }
    }
}

impl KeySpec {
    /// Appends this spec's key positions in an argv of `argc` arguments (`getKeysUsingKeySpecs`
    /// with partial results: a spec that does not fit the arguments adds nothing).
    fn positions<'a>(
        &self,
        argc: usize,
        arg: impl Fn(usize) -> Option<&'a [u8]>,
        out: &mut Vec<usize>,
    ) {
        let argc = argc as i64;
        let first = match &self.begin {
            BeginSearch::Index(i) => *i as i64,
            BeginSearch::Keyword { keyword, startfrom } => {
                let start = if *startfrom > 0 {
                    *startfrom
                } else {
                    argc + startfrom
                };
                let end = if *startfrom > 0 { argc - 1 } else { 1 };
                let mut i = start;
                let mut found = None;
                // As the server does: `end` itself is not examined.
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if arg(i as usize).is_some_and(|a| a.eq_ignore_ascii_case(keyword)) {
                        found = Some(i + 1);
                        break;
                    }
                    i += if start <= end { 1 } else { -1 };
                }
                match found {
                    Some(f) => f,
                    None => return,
                }
            }
            BeginSearch::Unknown => return,
        };
        let (first, last, step) = match &self.find {
            FindKeys::Range {
                lastkey,
                step,
                limit,
            } => {
                let last = if *lastkey >= 0 {
                    first + lastkey
                } else if *limit == 0 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / *limit as i64 + lastkey)
                };
                (first, last, *step as i64)
            }
            FindKeys::Keynum {
                keynumidx,
                firstkey,
                step,
            } => {
                if *keynumidx as i64 >= argc - first {
                    return;
                }
                let Some(n) = arg((first + *keynumidx as i64) as usize)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|n| *n >= 0)
                else {
                    return;
                };
                let first = first + *firstkey as i64;
                // Counted in keys, not arguments (Valkey's MSETEX steps by 2; Redis has no
                // keynum spec with a step above 1, where both readings agree).
                let step = (*step).max(1) as i64;
                (first, first + (n - 1) * step, step)
            }
            FindKeys::Unknown => return,
        };
        if last >= argc || last < first || first >= argc || first < 1 || step < 1 {
            return;
        }
        let mut i = first;
        while i <= last {
            out.push(i as usize);
            i += step;
        }
    }
}

fn special_of(name: &[u8]) -> Option<Special> {
    match name {
        b"sort" => Some(Special::Sort),
        b"migrate" => Some(Special::Migrate),
        _ => None,
    }
}

fn sort_keys(argv: &[&[u8]]) -> Vec<usize> {
    if argv.len() < 2 {
        return Vec::new();
    }
    let mut out = vec![1];
    let mut store = None;
    let mut i = 2;
    while i < argv.len() {
        let a = argv[i];
        if a.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"store") && i + 1 < argv.len() {
            // The last STORE wins, as in SORT itself.
            store = Some(i + 1);
        }
        i += 1;
    }
    out.extend(store);
    out
}

fn migrate_keys(argv: &[&[u8]]) -> Vec<usize> {
    if argv.len() < 4 {
        return Vec::new();
    }
    let (mut first, mut num) = (3, 1);
    let mut i = 6;
    while i < argv.len() {
        let a = argv[i];
        if a.eq_ignore_ascii_case(b"keys") {
            // KEYS is honoured only with an empty key argument, as MIGRATE itself does.
            if argv[3].is_empty() {
                first = i + 1;
                num = argv.len() - first;
            }
            break;
        }
        if a.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        }
        i += 1;
    }
    (first..first + num).filter(|&p| p < argv.len()).collect()
}

fn kind(f: &Frame) -> &'static str {
    match f {
        Frame::Simple(_) => "a simple string",
        Frame::Error(_) => "an error",
        Frame::Integer(_) => "an integer",
        Frame::Bulk(_) => "a bulk string",
        Frame::Null => "a null",
        Frame::Array(_) => "an array",
    }
}

fn text(f: &Frame) -> Option<&[u8]> {
    match f {
        Frame::Simple(b) | Frame::Bulk(b) => Some(b),
        _ => None,
    }
}

fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(i) => Some(*i),
        // Some servers and proxies send numbers as strings.
        Frame::Simple(b) | Frame::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A RESP2 map (a flat array of name, value pairs) as pairs with lowercase names.
type Pairs<'a> = Vec<(Vec<u8>, &'a Frame)>;

fn pairs(f: &Frame) -> Option<Pairs<'_>> {
    let Frame::Array(items) = f else { return None };
    if items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks(2)
        .map(|c| Some((text(&c[0])?.to_ascii_lowercase(), &c[1])))
        .collect()
}

fn field<'a>(p: &[(Vec<u8>, &'a Frame)], name: &str) -> Option<&'a Frame> {
    p.iter()
        .find(|(k, _)| k.as_slice() == name.as_bytes())
        .map(|(_, v)| *v)
}

fn parse_entry(e: &Frame, parent: Option<&[u8]>) -> Result<CommandInfo, String> {
    let Frame::Array(f) = e else {
        return Err(format!("expected an array, got {}", kind(e)));
    };
    let name = f
        .first()
        .and_then(text)
        .ok_or("no command name")?
        .to_ascii_lowercase();
    let show = String::from_utf8_lossy(&name).into_owned();
    let arity = f.get(1).and_then(int).ok_or(format!("{show}: no arity"))?;
    let flags: Vec<Vec<u8>> = match f.get(2) {
        Some(Frame::Array(fl)) => fl
            .iter()
            .filter_map(text)
            .map(|t| t.to_ascii_lowercase())
            .collect(),
        _ => return Err(format!("{show}: flags are not an array")),
    };
    let (first, last, step) = (
        f.get(3).and_then(int).unwrap_or(0),
        f.get(4).and_then(int).unwrap_or(0),
        f.get(5).and_then(int).unwrap_or(0),
    );
    let mut specs = Vec::new();
    if let Some(Frame::Array(ks)) = f.get(8) {
        for (i, k) in ks.iter().enumerate() {
            specs.push(parse_spec(k).map_err(|w| format!("{show}: key spec {i}: {w}"))?);
        }
    } else if first > 0 && step > 0 {
        // A server without key specs (before 7.0): the legacy triple.
        specs.push(KeySpec {
            begin: BeginSearch::Index(first as usize),
            find: FindKeys::Range {
                lastkey: if last < 0 { last } else { last - first },
                step: step as usize,
                limit: 0,
            },
            incomplete: flags.iter().any(|f| f == b"movablekeys"),
            not_key: false,
        });
    }
    let mut subcommands = HashMap::new();
    if let Some(Frame::Array(subs)) = f.get(9) {
        for s in subs {
            let info = parse_entry(s, Some(&name)).map_err(|w| format!("{show}: {w}"))?;
            let short = match info.name.iter().position(|&b| b == b'|') {
                Some(i) => info.name[i + 1..].to_vec(),
                None => info.name.clone(),
            };
            subcommands.insert(short, info);
        }
    }
    let lookup_name = match parent {
        Some(p) if !name.contains(&b'|') => [p, b"|", &name].concat(),
        _ => name.clone(),
    };
    let uncertain = specs
        .iter()
        .any(|s| s.incomplete || s.begin == BeginSearch::Unknown || s.find == FindKeys::Unknown);
    Ok(CommandInfo {
        special: if uncertain {
            special_of(&lookup_name)
        } else {
            None
        },
        name: lookup_name,
        arity,
        write: flags.iter().any(|f| f == b"write"),
        specs,
        subcommands,
        from_server: true,
    })
}

fn parse_spec(k: &Frame) -> Result<KeySpec, String> {
    let p = pairs(k).ok_or("not a map of fields")?;
    let flags: Vec<Vec<u8>> = match field(&p, "flags") {
        Some(Frame::Array(fl)) => fl
            .iter()
            .filter_map(text)
            .map(|t| t.to_ascii_lowercase())
            .collect(),
        _ => Vec::new(),
    };
    let part = |name: &str| -> Result<(Vec<u8>, Pairs<'_>), String> {
        let bs = pairs(field(&p, name).ok_or(format!("no {name}"))?)
            .ok_or(format!("{name} is not a map"))?;
        let ty = field(&bs, "type")
            .and_then(text)
            .ok_or(format!("{name} has no type"))?
            .to_ascii_lowercase();
        // The unknown type's spec is an empty map.
        let spec = field(&bs, "spec").and_then(pairs).unwrap_or_default();
        Ok((ty, spec))
    };
    let num = |s: &[(Vec<u8>, &Frame)], n: &str| field(s, n).and_then(int);
    let (bt, bs) = part("begin_search")?;
    let begin = match bt.as_slice() {
        b"index" => BeginSearch::Index(
            num(&bs, "index")
                .and_then(|i| usize::try_from(i).ok())
                .ok_or("begin_search index without a valid index")?,
        ),
        b"keyword" => BeginSearch::Keyword {
            keyword: field(&bs, "keyword")
                .and_then(text)
                .ok_or("begin_search keyword without a keyword")?
                .to_vec(),
            startfrom: num(&bs, "startfrom").ok_or("begin_search keyword without startfrom")?,
        },
        _ => BeginSearch::Unknown,
    };
    let (ft, fs) = part("find_keys")?;
    let unsigned = |n: &str| num(&fs, n).and_then(|v| usize::try_from(v).ok());
    let find = match ft.as_slice() {
        b"range" => FindKeys::Range {
            lastkey: num(&fs, "lastkey").ok_or("find_keys range without lastkey")?,
            step: unsigned("keystep").ok_or("find_keys range without keystep")?,
            limit: unsigned("limit").unwrap_or(0),
        },
        b"keynum" => FindKeys::Keynum {
            keynumidx: unsigned("keynumidx").ok_or("find_keys keynum without keynumidx")?,
            firstkey: unsigned("firstkey").ok_or("find_keys keynum without firstkey")?,
            step: unsigned("keystep").ok_or("find_keys keynum without keystep")?,
        },
        _ => FindKeys::Unknown,
    };
    Ok(KeySpec {
        begin,
        find,
        incomplete: flags.iter().any(|f| f == b"incomplete"),
        not_key: flags.iter().any(|f| f == b"not_key"),
    })
}

mod builtin;

#[cfg(test)]
mod tests;
