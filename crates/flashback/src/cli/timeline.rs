//! `flashback timeline`: what happened when, from the segment summaries: writes per bucket (a
//! sparkline on a terminal), totals by family and db, the destructive events with the restore
//! that undoes each, and the windows, uncertain intervals and gaps. `--json`: the
//! [`flashback::timeline::Timeline`] itself (schema in docs/cli.md).

use super::{open_source, UsageError, DEFAULT_STORE};
use flashback::timeline::{self, Request, Timeline, TimelineError, TimelineEvent};
use flashback::timespec::{format_duration_ms, format_ms};
use std::ffi::OsString;
use std::fmt::Write as _;

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flashback timeline                                  # the whole history of the only source
  flashback timeline --from -1h --bucket 1m
  flashback timeline --from '2026-08-03 20:00' --to '2026-08-03 21:00' --watch user:42 cart:7
  flashback timeline --json | jq '.events[] | select(.kind == \"flushall\")'

Events: FLUSHALL, FLUSHDB, SWAPDB, the start of a mass delete (more than --mass-delete-keys
keys deleted in one second, default 1000) or of a mass EXPIRE, and DEL/UNLINK of a --watch key.
Each comes with the `flashback restore --before ...` that undoes it. Read from the summaries the
agent stores with each segment; segments without one are read whole (slower, same answer).
")]
pub struct Args {
    /// Where capture stored the data
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Which source (may be left out when the store holds only one)
    #[arg(long)]
    name: Option<String>,
    /// Start of the range shown [default: the start of the first window]
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: Option<String>,
    /// End of the range shown [default: the end of the last window]
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,
    /// Width of a bucket of writes (1s, 10s, 5m, 1h …) [default: at most 120 buckets]
    #[arg(long, value_name = "DURATION")]
    bucket: Option<String>,
    /// A mass delete: more keys than this deleted in one second
    #[arg(long, value_name = "N", default_value_t = timeline::DEFAULT_MASS_DELETE_KEYS)]
    mass_delete_keys: u64,
    /// Also show every DEL/UNLINK of these keys
    #[arg(long, value_name = "KEY", num_args = 1..)]
    watch: Vec<OsString>,
    /// Print the report as JSON (stable schema, see docs/cli.md)
    #[arg(long)]
    json: bool,
}

pub async fn run(a: Args, config: &flashback::store::StoreConfig) -> anyhow::Result<()> {
    let now = flashback::now_ms();
    let time = |flag: &str, t: &Option<String>| -> Result<Option<u64>, UsageError> {
        t.as_deref()
            .map(|t| {
                if flashback::timespec::means_latest(t) {
                    return Ok(now);
                }
                flashback::timespec::parse_time(t, now)
                    .map_err(|e| UsageError(format!("{flag}: {e}")))
            })
            .transpose()
    };
    let bucket_ms = match &a.bucket {
        Some(b) => Some(
            flashback::timespec::parse_duration(b)
                .map_err(|e| UsageError(format!("--bucket: {e}")))?
                .as_millis() as u64,
        ),
        None => None,
    };
    let req = Request {
        from_ms: time("--from", &a.from)?,
        to_ms: time("--to", &a.to)?,
        bucket_ms,
        mass_delete_keys: a.mass_delete_keys,
        watch: a
            .watch
            .into_iter()
            .map(|k| k.into_encoded_bytes())
            .collect(),
    };
    let (store, source) = open_source(&a.store, config, a.name.clone()).await?;
    let t = match timeline::gather(&store, &source, &req).await {
        Ok(t) => t,
        Err(TimelineError::Usage(u)) => return Err(UsageError(u).into()),
        Err(e) => return Err(e.into()),
    };
    for w in &t.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        let ctx = Ctx {
            store: &a.store,
            name: &source,
            mass_delete_keys: a.mass_delete_keys,
        };
        print!(
            "{}",
            render(
                &t,
                &ctx,
                std::io::IsTerminal::is_terminal(&std::io::stdout())
            )
        );
    }
    Ok(())
}

/// What the undo commands need to name.
pub struct Ctx<'a> {
    pub store: &'a str,
    pub name: &'a str,
    pub mass_delete_keys: u64,
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub fn render(t: &Timeline, ctx: &Ctx, tty: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "source {}: {} .. {} (buckets of {})",
        t.source,
        format_ms(t.from_ms),
        format_ms(t.to_ms),
        format_duration_ms(t.bucket_ms)
    );
    for w in &t.windows {
        let _ = writeln!(
            o,
            "  window     {} .. {}  (generation {}, offsets {}..{})",
            format_ms(w.from_ms),
            format_ms(w.to_ms),
            w.generation,
            w.from_offset,
            w.to_offset
        );
    }
    for u in &t.uncertain {
        let _ = writeln!(
            o,
            "  uncertain  {} .. {}  (--at refuses; --at-offset {}..{} stays exact)",
            format_ms(u.from_ms),
            format_ms(u.to_ms),
            u.from_offset,
            u.to_offset
        );
    }
    for g in &t.gaps {
        let _ = writeln!(
            o,
            "  gap        {} .. {}  (not restorable)",
            format_ms(g.from_ms),
            format_ms(g.to_ms)
        );
    }
    let secs = (t.bucket_ms / 1000).max(1);
    let _ = writeln!(o);
    if tty {
        let max = t.buckets.iter().map(|b| b.writes).max().unwrap_or(0);
        let line: String = t
            .buckets
            .iter()
            .map(|b| match (b.writes, max) {
                (0, _) => ' ',
                (n, m) => SPARKS[((n * 7).div_ceil(m.max(1)) as usize).min(7)],
            })
            .collect();
        let _ = writeln!(
            o,
            "writes/s  |{line}|  peak {:.1}/s",
            max as f64 / secs as f64
        );
    } else {
        let _ = writeln!(o, "writes per bucket (time, writes, deleted, expired):");
        for b in t.buckets.iter().filter(|b| b.writes > 0) {
            let _ = writeln!(
                o,
                "  {}  {:>8}  {:>8}  {:>8}",
                format_ms(b.time_ms),
                b.writes,
                b.deleted,
                b.expired
            );
        }
    }
    let fam: Vec<String> = t
        .totals
        .by_family
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(f, n)| format!("{f} {n}"))
        .collect();
    let dbs: Vec<String> = t
        .totals
        .by_db
        .iter()
        .map(|(d, n)| format!("db{d} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "total     {} writes, {} keys deleted, {} TTLs set; by family: {}; by db: {}",
        t.totals.writes,
        t.totals.deleted,
        t.totals.expired,
        if fam.is_empty() {
            "-".into()
        } else {
            fam.join(", ")
        },
        if dbs.is_empty() {
            "-".into()
        } else {
            dbs.join(", ")
        }
    );
    let _ = writeln!(
        o,
        "read      {} stored summaries, {} segments summarised now, {} open tails",
        t.segments.summaries, t.segments.summarized, t.segments.tails
    );
    let _ = writeln!(o);
    if t.events.is_empty() {
        let _ = writeln!(o, "no destructive events in this range");
        return o;
    }
    let _ = writeln!(o, "events:");
    for e in &t.events {
        let what = match (e.kind.as_str(), e.db, e.other_db) {
            ("swapdb", Some(a), Some(b)) => format!("SWAPDB {a} {b}"),
            ("flushdb", Some(d), _) => format!("FLUSHDB (db {d})"),
            ("flushall", _, _) => "FLUSHALL".into(),
            ("del", Some(d), _) => format!("{} {} (db {d})", e.command, e.keys.join(" ")),
            ("mass-delete", _, _) => format!("mass delete: {} keys", e.key_count),
            ("mass-expire", _, _) => format!("mass EXPIRE: {} keys", e.key_count),
            _ => e.command.clone(),
        };
        let _ = writeln!(
            o,
            "  {}  offset {:>12}  {what}",
            format_ms(e.time_ms),
            e.offset
        );
        let _ = writeln!(o, "      undo: {}", undo(e, ctx));
    }
    o
}

/// The restore that lands just before `e`.
pub fn undo(e: &TimelineEvent, ctx: &Ctx) -> String {
    let at = format!("@{}.{:03}", e.time_ms / 1000, e.time_ms % 1000);
    let printable = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":_-./{}".contains(&b))
    };
    let spec = match (e.kind.as_str(), e.db) {
        ("flushall", _) => "flushall".to_string(),
        ("flushdb", Some(d)) => format!("flushdb:{d}"),
        ("swapdb", _) => "swapdb".into(),
        ("mass-delete", _) if ctx.mass_delete_keys != timeline::DEFAULT_MASS_DELETE_KEYS => {
            format!("mass-delete --mass-delete-keys {}", ctx.mass_delete_keys)
        }
        ("mass-delete", _) => "mass-delete".into(),
        ("del", _) if e.keys.len() == 1 && printable(&e.keys[0]) => format!("del:{}", e.keys[0]),
        // Mass expires have no EVENT of their own, and keys a shell would mangle are better
        // named by offset.
        _ => {
            return format!(
                "flashback restore --store {} --name {} --at-offset {} --rdb before.rdb",
                ctx.store, ctx.name, e.start_offset
            )
        }
    };
    format!(
        "flashback restore --store {} --name {} --before {spec} --at {at} --rdb before.rdb",
        ctx.store, ctx.name
    )
}
