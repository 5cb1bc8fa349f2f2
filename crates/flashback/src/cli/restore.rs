//! `flashback restore`: arguments → [`RestoreRequest`] → plan (printed) → restore → report.

use super::{open_source, UsageError, DEFAULT_STORE};
use flashback::restore::{self, RestoreRequest, Sink, Target, TtlMode};
use flashback::source::RedisUrl;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(
    group(clap::ArgGroup::new("point").required(true).args(["at", "at_offset", "latest"])),
    group(clap::ArgGroup::new("sink").args(["rdb", "to", "serve"])),
    after_help = "Examples:
  flashback restore --at '2026-08-03 20:28:10' --rdb before.rdb
  flashback restore --at -10m --serve 6390                 # then: redis-cli -p 6390
  flashback restore --at @1790000000.250 --to redis://127.0.0.1:6380 --keys 'user:*'
  flashback restore --at-offset 1234567 --rdb exact.rdb --force
  flashback restore --latest --serve 6390 --ttl persist
  flashback restore --at '2026-08-03T20:28:10+08:00' --rdb x.rdb --dry-run   # print the plan only

At TIME the result holds every transaction that arrived at or before TIME, never half of a
MULTI/EXEC. A TIME outside the restorable window is an error that prints the window
(see also: flashback info). --to leaves keys that exist on the target alone unless --replace."
)]
pub struct Args {
    /// Where capture stored the data: a directory
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Which source to restore (may be left out when the store holds only one)
    #[arg(long)]
    name: Option<String>,
    /// Restore the state as of TIME: '2026-08-03 20:28:10[.123]' (local), RFC 3339,
    /// '@<unix seconds>', or relative ('-10m', '2h ago')
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    at: Option<String>,
    /// Restore the state at replication offset N (master_repl_offset), rounded down to a
    /// transaction boundary
    #[arg(long, value_name = "N")]
    at_offset: Option<u64>,
    /// Restore the latest state captured
    #[arg(long)]
    latest: bool,
    /// Write the result as an RDB file
    #[arg(long, value_name = "FILE")]
    rdb: Option<PathBuf>,
    /// Copy the result's keys into a live instance (DUMP/RESTORE): redis://[user:pass@]host:port
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Leave the restored server running on 127.0.0.1:PORT
    #[arg(long, value_name = "PORT")]
    serve: Option<u16>,
    /// Only keys matching one of these glob patterns (Redis syntax: * ? [abc] \x)
    #[arg(long, value_name = "PATTERN", num_args = 1..)]
    keys: Vec<OsString>,
    /// TTLs: keep absolute expiry times (keys past theirs are gone), keep the time each had left
    /// at the restore point (relative), or drop them (persist)
    #[arg(long, value_enum, default_value_t = Ttl::Absolute)]
    ttl: Ttl,
    /// With --to: overwrite keys that already exist on the target
    #[arg(long)]
    replace: bool,
    /// The redis-server (or valkey-server) binary that rebuilds the dataset; it must load the
    /// source's RDB version [default: redis-server on PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
    /// Print the plan (base, segments, cut) and stop
    #[arg(long)]
    dry_run: bool,
    /// Restore a time inside an uncertain interval anyway (by arrival time, with a loud note);
    /// without it such a time is refused, naming the interval and the exact offsets
    #[arg(long)]
    inexact: bool,
    /// With --rdb: overwrite an existing file
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Ttl {
    Absolute,
    Relative,
    Persist,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let target = if let Some(t) = &a.at {
        Target::At(
            flashback::timespec::parse_time(t, flashback::now_ms())
                .map_err(|e| UsageError(format!("--at: {e}")))?,
        )
    } else if let Some(n) = a.at_offset {
        Target::AtOffset(n)
    } else {
        Target::Latest
    };
    let sink = match (&a.rdb, &a.to, a.serve) {
        (Some(p), _, _) => Some(Sink::Rdb(p.clone())),
        (_, Some(u), _) => Some(Sink::To(
            u.parse::<RedisUrl>()
                .map_err(|e| UsageError(format!("--to: {e}")))?,
        )),
        (_, _, Some(port)) => Some(Sink::Serve(port)),
        _ => None,
    };
    if sink.is_none() && !a.dry_run {
        return Err(UsageError(
            "say where the restore goes: --rdb FILE, --to redis://host:port or --serve PORT".into(),
        )
        .into());
    }
    if a.replace && !matches!(sink, Some(Sink::To(_))) {
        return Err(UsageError("--replace only applies to --to".into()).into());
    }
    if a.force && !matches!(sink, Some(Sink::Rdb(_))) {
        return Err(UsageError("--force only applies to --rdb".into()).into());
    }
    if a.keys.iter().any(|k| k.is_empty()) {
        return Err(UsageError(
            "--keys: an empty pattern matches nothing; use '*' for every key".into(),
        )
        .into());
    }
    let (store, source) = open_source(&a.store, a.name).await?;
    let keys = a.keys.into_iter().map(|k| k.into_encoded_bytes()).collect();
    let ttl = match a.ttl {
        Ttl::Absolute => TtlMode::Absolute,
        Ttl::Relative => TtlMode::Relative,
        Ttl::Persist => TtlMode::Persist,
    };
    let req = sink.map(|sink| RestoreRequest {
        source: source.clone(),
        target,
        sink,
        redis_server: a.redis_server,
        keys,
        ttl,
        replace: a.replace,
        force: a.force,
    });
    // Refuse what cannot work (an existing --rdb file, --ttl relative) before any work.
    if let (Some(req), false) = (&req, a.dry_run) {
        restore::check_request(req)?;
    }
    let plan = restore::plan_with(&store, &source, target, a.inexact).await?;
    print!("{plan}");
    let Some(req) = req.filter(|_| !a.dry_run) else {
        return Ok(());
    };
    let report = restore::execute(&store, &plan, &req).await?;
    println!();
    print!("{report}");
    if report.has_failures() {
        anyhow::bail!("the restore finished, but not everything applied (see above)");
    }
    Ok(())
}
