//! `flashback history KEY`: arguments → [`HistoryRequest`] → the key's writes (text or the
//! `--json` schema of DESIGN.md), and its value at each `--show-at` point.

use super::{open_source, UsageError, DEFAULT_STORE};
use flashback::history::value::{value_at, ValueAt};
use flashback::history::{history, track::Write, HistoryRequest};
use flashback::restore::Target;
use flashback::timespec::{format_ms, parse_time};
use std::ffi::OsString;
use std::path::PathBuf;

/// `--show-at all` restores at most this many points (each is a restore).
const SHOW_ALL_CAP: usize = 20;
/// Arguments of a command shown before "… +N args".
const ARGS_SHOWN: usize = 8;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  flashback history user:42
  flashback history user:42 --from -1h --json
  flashback history cart:7 --show-at '2026-08-03 20:28:10' --show-at offset:1843221
  flashback history session:x --db 3 --show-at all

Every write to KEY in stream order: arrival time, replication offset (where its transaction
ends: the source's master_repl_offset once it had applied it), db, the command (arguments
escaped like redis-cli, long ones cut), and the name the key had then. RENAME/RENAMENX, COPY
(the copy is followed as a second name), MOVE and SWAPDB are followed; FLUSHDB/FLUSHALL are
listed as deleting writes; writes inside MULTI/EXEC, scripts and functions are listed one by
one. --show-at TIME|offset:N|all prints the key's value at that point (each point is a restore
into a private redis-server; all: every listed write, at most 20). A key never written prints
one line saying so and exits 0.")]
pub struct Args {
    /// The key (bytes as given)
    key: OsString,
    /// Where capture stored the data
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Which source (may be left out when the store holds only one)
    #[arg(long)]
    name: Option<String>,
    /// Only this db [default: the name in every db]
    #[arg(long, value_name = "N")]
    db: Option<u32>,
    /// List writes that arrived at or after TIME (the log before is still read, to follow
    /// renames): '2026-08-03 20:28:10[.123]', RFC 3339, '@<unix seconds>', or '-10m'
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: Option<String>,
    /// List writes that arrived at or before TIME
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,
    /// Also print the key's value at TIME, at offset:N, or after every listed write (all);
    /// repeatable
    #[arg(long, value_name = "TIME|offset:N|all", allow_hyphen_values = true)]
    show_at: Vec<String>,
    /// The redis-server binary for --show-at [default: redis-server on PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
    /// Print JSON (stable schema, see docs/cli.md)
    #[arg(long)]
    json: bool,
    /// Read every segment, ignoring the key filters of the segment summaries (for comparison,
    /// or if a filter is suspected wrong); by default segments whose filter rules the key out
    /// are not fetched
    #[arg(long)]
    scan_all: bool,
}

/// A --show-at point: what to restore, and how the user named it.
struct Point {
    label: String,
    target: Target,
    /// The write it follows, for `all` (index into the writes).
    write: Option<usize>,
}

pub async fn run(a: Args, config: &flashback::store::StoreConfig) -> anyhow::Result<()> {
    let now = flashback::now_ms();
    let time = |flag: &str, s: &Option<String>| -> Result<Option<u64>, UsageError> {
        s.as_deref()
            .map(|t| parse_time(t, now).map_err(|e| UsageError(format!("{flag}: {e}"))))
            .transpose()
    };
    let (from_ms, to_ms) = (time("--from", &a.from)?, time("--to", &a.to)?);
    let key =
        bytes::Bytes::from(std::os::unix::ffi::OsStrExt::as_bytes(a.key.as_os_str()).to_vec());
    let (store, source) = open_source(&a.store, config, a.name).await?;
    let req = HistoryRequest {
        source: source.clone(),
        key: key.clone(),
        db: a.db,
        from_ms,
        to_ms,
        scan_all: a.scan_all,
    };
    let h = history(&store, &req).await?;
    let mut points = Vec::new();
    for s in &a.show_at {
        if s == "all" {
            points.extend(
                h.writes
                    .iter()
                    .enumerate()
                    .take(SHOW_ALL_CAP)
                    .map(|(i, w)| Point {
                        label: format!("after the write at offset {}", w.offset),
                        target: Target::AtOffset(w.offset),
                        write: Some(i),
                    }),
            );
            if h.writes.len() > SHOW_ALL_CAP {
                eprintln!(
                    "note: --show-at all: showing the first {SHOW_ALL_CAP} of {} writes (name the others with --show-at offset:N)",
                    h.writes.len()
                );
            }
        } else if let Some(n) = s.strip_prefix("offset:") {
            let n: u64 = n.parse().map_err(|_| {
                UsageError(format!(
                    "--show-at {s}: expected offset:N with N a replication offset"
                ))
            })?;
            points.push(Point {
                label: format!("offset {n}"),
                target: Target::AtOffset(n),
                write: None,
            });
        } else {
            let t = parse_time(s, now).map_err(|e| UsageError(format!("--show-at: {e}")))?;
            points.push(Point {
                label: format_ms(t),
                target: Target::At(t),
                write: None,
            });
        }
    }
    let mut values: Vec<(Point, ValueAt)> = Vec::new();
    for p in points {
        // The names the key had at that point: after the last write at or before it.
        let names = names_at(&h.writes, &p, &key, a.db, &h.names_now);
        let v = value_at(&store, &source, p.target, &names, a.redis_server.as_deref()).await?;
        values.push((p, v));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json(&h, &values))?);
        return Ok(());
    }
    let shown_key = flashback::show::key(&key);
    if h.writes.is_empty() {
        println!(
            "no write to {shown_key} in the log of source '{source}'{} ({} segments read)",
            match (&a.from, &a.to) {
                (None, None) => String::new(),
                _ => " between the times given".into(),
            },
            h.stats.segments
        );
    } else {
        println!(
            "{:<30}  {:>12}  {:>3}  {:<20}  command",
            "time", "offset", "db", "as"
        );
        for w in &h.writes {
            println!(
                "{:<30}  {:>12}  {:>3}  {:<20}  {}{}",
                format_ms(w.time_ms),
                w.offset,
                w.db,
                flashback::show::key(&w.as_name),
                command(w),
                w.note
                    .as_deref()
                    .map(|n| format!("   # {n}"))
                    .unwrap_or_default()
            );
        }
    }
    for (p, v) in &values {
        println!("\nvalue at {} (restored to offset {}):", p.label, v.offset);
        for k in &v.keys {
            let ttl = k
                .ttl_ms
                .map(|t| format!(", ttl {t} ms"))
                .unwrap_or_default();
            println!("  db {} {} ({}{ttl}): {}", k.db, k.name, k.kind, k.value);
        }
        if v.keys.is_empty() {
            println!("  (the key had no known name then)");
        }
    }
    Ok(())
}

fn names_at(
    writes: &[Write],
    p: &Point,
    key: &bytes::Bytes,
    db: Option<u32>,
    now: &[(u32, bytes::Bytes)],
) -> Vec<(u32, bytes::Bytes)> {
    let last = match (p.write, p.target) {
        (Some(i), _) => writes.get(i),
        (None, Target::At(t)) => writes.iter().rev().find(|w| w.time_ms <= t),
        (None, Target::AtOffset(n) | Target::InGeneration { offset: n, .. }) => {
            writes.iter().rev().find(|w| w.offset <= n)
        }
        (None, Target::Latest) => return now.to_vec(),
    };
    match last {
        Some(w) => w.names_after.clone(),
        None => vec![(db.unwrap_or(0), key.clone())],
    }
}

/// The command as redis-cli would echo it: every argument escaped and quoted, long ones cut.
fn command(w: &Write) -> String {
    let mut out: Vec<String> =
        vec![String::from_utf8_lossy(&w.argv[..1.min(w.argv.len())].concat()).to_uppercase()];
    out.extend(
        w.argv
            .iter()
            .skip(1)
            .take(ARGS_SHOWN)
            .map(|a| flashback::show::key(a)),
    );
    if w.argv.len() > ARGS_SHOWN + 1 {
        out.push(format!("… +{} args", w.argv.len() - ARGS_SHOWN - 1));
    }
    if w.truncated {
        out.push("… (stored in fragments: its beginning only)".into());
    }
    out.join(" ")
}

/// A name in JSON: as is when it is UTF-8, else escaped like the text output (quoted).
fn name(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => flashback::show::key(b),
    }
}

fn json(h: &flashback::history::History, values: &[(Point, ValueAt)]) -> serde_json::Value {
    use serde_json::json;
    let writes: Vec<_> = h
        .writes
        .iter()
        .map(|w| {
            json!({
                "time_ms": w.time_ms,
                "offset": w.offset,
                "db": w.db,
                "command": command(w),
                "as": name(&w.as_name),
                "argv": w.argv.iter().map(|a| flashback::show::key(a)).collect::<Vec<_>>(),
                "note": w.note,
                "generation": w.generation,
            })
        })
        .collect();
    let values: Vec<_> = values
        .iter()
        .map(|(p, v)| {
            json!({
                "at": p.label,
                "offset": v.offset,
                "time_ms": v.time_ms,
                "generation": v.generation,
                "keys": v.keys,
            })
        })
        .collect();
    json!({
        "key": name(&h.key),
        "writes": writes,
        "values": values,
        "segments_read": h.stats.segments,
        "segments_skipped": h.stats.skipped,
        "records": h.stats.records,
        "generations": h.generations.iter().map(|(g, t)| json!({"generation": g, "command_table": if *t {"stored"} else {"builtin"}})).collect::<Vec<_>>(),
    })
}
