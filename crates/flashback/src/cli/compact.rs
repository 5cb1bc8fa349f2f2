//! `flashback compact`: one compaction pass for an operator (the agent's `--base-every` runs
//! the same code on a schedule).

use super::{open_source, DEFAULT_STORE};
use flashback::compact::{self, CompactOptions, Outcome};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  flashback compact --store /var/lib/flashback --name sessions
  flashback compact --redis-server /opt/valkey/bin/valkey-server --force

Rebuilds the state at the end of the latest sealed segment in a private redis-server (never
the source) and stores it as a new base: later restores replay only the log after it.
Does nothing (exit 0, saying why) when the newest base is recent; --force skips that check.")]
pub struct Args {
    /// Where capture stored the data
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Which source (may be left out when the store holds only one)
    #[arg(long)]
    name: Option<String>,
    /// The redis-server (or valkey-server) that rebuilds the state; it must load and write the
    /// source's RDB version [default: redis-server on PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
    /// Skip unless at least this many MiB of log lie since the newest base
    #[arg(long, value_name = "MIB", default_value_t = 1)]
    min_log_mib: u64,
    /// Skip unless at least this much history lies since the newest base ('10m', '1h')
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    min_interval: String,
    /// Make a base whatever little log lies since the newest one
    #[arg(long)]
    force: bool,
}

pub async fn run(a: Args, config: &flashback::store::StoreConfig) -> anyhow::Result<()> {
    let min_interval = flashback::timespec::parse_duration(&a.min_interval)
        .map_err(|e| super::UsageError(format!("--min-interval: {e}")))?;
    let (store, source) = open_source(&a.store, config, a.name).await?;
    let opts = CompactOptions {
        redis_server: a.redis_server,
        min_log_bytes: if a.force { 1 } else { a.min_log_mib << 20 },
        min_interval: if a.force {
            Duration::ZERO
        } else {
            min_interval
        },
        or_log_bytes: None,
    };
    match compact::compact_or_skip(&store, &source, &opts).await? {
        Outcome::Created(b) => println!("{b}"),
        Outcome::Skipped(why) => println!("nothing to compact for source '{source}': {why}"),
    }
    Ok(())
}
