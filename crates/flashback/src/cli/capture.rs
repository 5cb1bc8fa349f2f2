use super::{TlsArgs, UsageError, DEFAULT_STORE};
use anyhow::Context;
use flashback::capture::{self, CaptureOptions};
use flashback::store::{layout, Access, Store, StoreConfig};
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  flashback capture --source redis://127.0.0.1:6379
  flashback capture --source redis://repl:secret@10.0.0.5:6379 --store /var/lib/flashback --name sessions
  flashback capture --source redis://127.0.0.1:6380 --psync-command MYPSYNC
  flashback capture --sentinel 10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379 --master-name mymaster \\
      --source redis://repl:secret@any:6379    # follows failovers; Sentinel password: FLASHBACK_SENTINEL_PASSWORD
  flashback capture --cluster --source redis://repl:secret@10.0.0.5:7000 --name orders   # every shard, from any node
  flashback capture --source redis://127.0.0.1:6379 --store s3://backups/redis --s3-endpoint http://10.0.0.9:9000
  flashback capture --source redis://127.0.0.1:6379 --rolling-bases --replay-budget 0.25   # restores ~ a bare RDB load; RAM ~ the dataset
  flashback capture --source rediss://repl:secret@redis.internal:6380 --tls-ca /etc/redis/ca.crt
  flashback capture --source rediss://10.0.0.5:6380 --tls-ca ca.crt --tls-cert agent.crt --tls-key agent.key
  flashback capture --source redis://repl:secret@10.0.0.5:6379 --mark-every 5m --mark-pause 50   # consistent cuts

The replication user needs: ACL SETUSER <user> on >password +psync +replconf +ping
With --mark-every also: +client|pause +client|unpause +info
Stops on SIGINT/SIGTERM after making everything received durable (exit 0).")]
pub struct Args {
    /// The primary (or one of its replicas) to capture: redis://[user:pass@]host:port, or
    /// rediss://… for TLS (see --tls-ca). With --sentinel it only supplies the data nodes'
    /// user, password and TLS, and its host is captured only while no Sentinel answers
    #[arg(long, required_unless_present = "sentinel")]
    source: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Ask these Sentinels for the primary of --master-name and follow its failovers (the
    /// promoted replica continues the same generation by partial resync)
    #[arg(long, value_name = "HOST:PORT,…", requires = "master_name")]
    sentinel: Option<String>,
    /// With --sentinel: the master's name in the Sentinels' `sentinel monitor` (also the
    /// default --name)
    #[arg(long, value_name = "NAME", requires = "sentinel")]
    master_name: Option<String>,
    /// With --sentinel: the Sentinels' own ACL user
    #[arg(long, value_name = "USER")]
    sentinel_user: Option<String>,
    /// With --sentinel: the Sentinels' own password (prefer the environment variable)
    #[arg(
        long,
        env = "FLASHBACK_SENTINEL_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    sentinel_password: Option<String>,
    /// --source is any node of a Redis Cluster: capture every shard (discovered with CLUSTER
    /// SHARDS, else CLUSTER SLOTS), each from a replica of it where one is online (else its
    /// primary), following failovers; one source in the store with a history per shard
    /// (`flashback info` lists them; `restore --shard ID` restores one)
    #[arg(long, conflicts_with = "sentinel")]
    cluster: bool,
    /// Where to store: a directory (created if missing)
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Name of this source in the store [default: host-port]
    #[arg(long)]
    name: Option<String>,
    /// The PSYNC command's name, for services that rename it
    #[arg(long, default_value = "PSYNC")]
    psync_command: String,
    /// Seconds without any byte from the primary before the link counts as dead (it PINGs
    /// every 10 s by default)
    #[arg(long, default_value_t = 60)]
    repl_timeout: u64,
    /// Milliseconds without evidence (the source's own offset, polled every 100 ms on a second
    /// connection, reached by the stream) after which restore by time is uncertain until
    /// evidence returns; the interval is stored and `restore --at` inside it refuses unless
    /// `--inexact`
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    uncertain_after: u64,
    /// Port announced in REPLCONF listening-port (0: none, so Sentinel never picks the agent)
    #[arg(long, default_value_t = 0)]
    listening_port: u16,
    /// Seal a segment once it holds this many MiB
    #[arg(long, default_value_t = 32)]
    segment_mib: u64,
    /// Seal a segment holding records once it is this old (10m, 30s, 500ms)
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    segment_age: String,
    /// With a remote --store: local directory written first, then uploaded
    /// [default: ~/.cache/flashback/spool/<store>]
    #[arg(long, value_name = "DIR")]
    spool: Option<std::path::PathBuf>,
    /// With a remote --store: upload what arrived at least this often (the RPO), e.g. 1s, 500ms
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    upload_interval: String,
    /// With a remote --store: upload up to N sealed segments at once, committed in order (a
    /// base and a manifest always go alone); 1 uploads one object at a time. Objects in flight
    /// hold at most 32 MiB in memory together (a bigger segment goes up alone)
    #[arg(long, default_value_t = 4, value_name = "N")]
    upload_concurrency: usize,
    /// With a remote --store: stop reading from the primary (loudly) when the spool holds this
    /// many GiB not yet uploaded; a warning comes at 80 %
    #[arg(long, default_value_t = 10, value_name = "GIB")]
    spool_max: u64,
    /// Make a new base snapshot from the stored log this often (off the primary, in a private
    /// redis-server), so a restore replays at most about this much log; 0 turns it off
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    base_every: String,
    /// Also make a new base as soon as this many MiB of log accumulated since the last one
    /// (compaction by log volume, checked every minute; needs --base-every on)
    #[arg(long, value_name = "MIB")]
    base_every_mib: Option<u64>,
    /// Rolling bases: keep a private redis-server warm beside the agent, applying the log as
    /// segments seal, and save a new base whenever the log since the last one would take longer
    /// to replay than --replay-budget x that base's load time (or after --base-every at the
    /// latest), so a restore at any instant costs about a bare RDB load. COSTS MEMORY: the warm
    /// server holds the whole dataset, as a replica does; hence off unless asked. Off: a base is
    /// rebuilt every --base-every from the previous one
    #[arg(long, overrides_with = "no_rolling_bases")]
    rolling_bases: bool,
    /// No rolling bases (the default): scheduled rebuilds at --base-every
    #[arg(long)]
    no_rolling_bases: bool,
    /// With --rolling-bases: the log since the last base may take this fraction of the base's
    /// load time to replay before a new base is made (0.25: a restore costs <= 1.25x a bare load)
    #[arg(long, default_value_t = 0.25, value_name = "FRACTION")]
    replay_budget: f64,
    /// With --rolling-bases: no base for less log than this (tests set 0 to make one at each
    /// sealed segment)
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES", hide = true)]
    rolling_min_bytes: u64,
    /// The redis-server that rebuilds bases (compaction) [default: redis-server on PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<std::path::PathBuf>,
    /// Keep this much continuous history (e.g. 7d) and prune older data every 10 minutes
    /// (as `flashback prune --keep`); default: keep everything
    #[arg(long, value_name = "DURATION")]
    keep: Option<String>,
    /// With --keep: also keep the newest base of each of the last N days
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_daily: u32,
    /// With --keep: also keep the newest base of each of the last N weeks
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_weekly: u32,
    /// Take a mark (a consistent cut, as `flashback mark`) this often, e.g. 5m; a mark that
    /// fails is logged and capture goes on
    #[arg(long, value_name = "DURATION")]
    mark_every: Option<String>,
    /// With --mark-every: hold writes back for at most this many milliseconds per mark
    #[arg(long, value_name = "MS", default_value_t = flashback::mark::DEFAULT_PAUSE_MS, requires = "mark_every")]
    mark_pause: u64,
    /// With --keep: also keep the newest base of each of the last N months
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_monthly: u32,
}

/// Each object in flight is held in memory (up to 64 MiB): 64 of them is already 4 GiB, and
/// more connections than that gain nothing against any object store.
const MAX_UPLOAD_CONCURRENCY: usize = 64;

pub async fn run(a: Args, config: &StoreConfig) -> anyhow::Result<()> {
    let url: flashback::client::RedisUrl = match &a.source {
        Some(s) => super::parse_url("--source", s, &a.tls)?,
        // --sentinel alone: the data nodes need no password; the host comes from Sentinel.
        // TLS options without a --source mean the data nodes speak TLS.
        None => {
            let tls_given = a.tls.tls_ca.is_some()
                || a.tls.tls_cert.is_some()
                || a.tls.tls_key.is_some()
                || a.tls.tls_insecure;
            let scheme = if tls_given { "rediss" } else { "redis" };
            super::parse_url("--source", &format!("{scheme}://127.0.0.1:6379"), &a.tls)?
        }
    };
    let sentinel = match (&a.sentinel, &a.master_name) {
        (Some(list), Some(master)) => Some(capture::sentinel::SentinelConfig {
            sentinels: capture::sentinel::parse_list(list)
                .map_err(|e| UsageError(e.to_string()))?,
            master_name: master.clone(),
            user: a.sentinel_user.clone(),
            password: a.sentinel_password.clone(),
            tls: url.tls.clone(),
            fallback: a.source.as_ref().map(|_| (url.host.clone(), url.port)),
        }),
        _ => None,
    };
    // Behind Sentinel the primary's address changes at every failover; the master's name is
    // what stays.
    let name = a.name.unwrap_or_else(|| match &sentinel {
        Some(s) => s.master_name.clone(),
        None => capture::default_name(&url),
    });
    if !layout::valid_source_name(&name) {
        return Err(UsageError(format!(
            "--name {name:?}: use letters, digits, '.', '-' and '_' only"
        ))
        .into());
    }
    if a.repl_timeout == 0 {
        return Err(UsageError("--repl-timeout must be at least 1 second".into()).into());
    }
    let store = Store::open(&a.store, &config.with_access(Access::Write))?;
    let mut opts = CaptureOptions::new(url.clone(), name.clone());
    opts.handshake.psync_command = a.psync_command;
    opts.handshake.timeout = Duration::from_secs(a.repl_timeout);
    opts.uncertain_after = Duration::from_millis(a.uncertain_after.max(200));
    opts.handshake.listening_port = a.listening_port;
    opts.roll_bytes = a.segment_mib.max(1) << 20;
    opts.roll_age = flashback::timespec::parse_duration(&a.segment_age)
        .map_err(|e| UsageError(format!("--segment-age: {e}")))?;
    if opts.roll_age.is_zero() {
        return Err(UsageError("--segment-age must be more than 0".into()).into());
    }
    opts.spool = a.spool;
    opts.upload_interval = flashback::timespec::parse_duration(&a.upload_interval)
        .map_err(|e| UsageError(format!("--upload-interval: {e}")))?;
    if opts.upload_interval.is_zero() {
        return Err(UsageError("--upload-interval must be more than 0".into()).into());
    }
    if !(1..=MAX_UPLOAD_CONCURRENCY).contains(&a.upload_concurrency) {
        return Err(UsageError(format!(
            "--upload-concurrency {}: give 1 to {MAX_UPLOAD_CONCURRENCY} (objects in flight at once)",
            a.upload_concurrency
        ))
        .into());
    }
    opts.upload_concurrency = a.upload_concurrency;
    opts.spool_max = a.spool_max.max(1) << 30;
    let every = match a.base_every.trim() {
        "0" => std::time::Duration::ZERO,
        d => flashback::timespec::parse_duration(d)
            .map_err(|e| UsageError(format!("--base-every: {e}")))?,
    };
    if !every.is_zero() {
        // Compaction needs a server able to load the source's snapshots; say so now rather
        // than in an hour.
        match flashback::redis_server::ServerBinary::find(a.redis_server.as_deref()) {
            Ok(_) => opts.base_every = Some(every),
            Err(e) => tracing::warn!("compaction (--base-every) is off: {e}"),
        }
    }
    if !(a.replay_budget > 0.0 && a.replay_budget <= 100.0) {
        return Err(UsageError(format!(
            "--replay-budget {}: give a fraction of a base's load time above 0 (0.25: a restore costs at most 1.25x a bare load)",
            a.replay_budget
        ))
        .into());
    }
    if a.rolling_bases && !a.no_rolling_bases {
        match flashback::redis_server::ServerBinary::find(a.redis_server.as_deref()) {
            Ok(_) => {
                opts.rolling = Some(flashback::compact::rolling::RollingOptions {
                    redis_server: a.redis_server.clone(),
                    replay_budget: a.replay_budget,
                    // --base-every 0 with rolling bases: the budget alone decides.
                    base_every: if every.is_zero() {
                        Duration::MAX
                    } else {
                        every
                    },
                    min_log_bytes: a.rolling_min_bytes,
                    ..Default::default()
                })
            }
            Err(e) => tracing::warn!("rolling bases (--rolling-bases) are off: {e}"),
        }
    }
    opts.compact.redis_server = a.redis_server;
    opts.compact.or_log_bytes = a.base_every_mib.map(|m| m.max(1) << 20);
    if let Some(keep) = &a.keep {
        let keep = flashback::timespec::parse_duration(keep)
            .map_err(|e| UsageError(format!("--keep: {e}")))?;
        if keep.is_zero() {
            return Err(UsageError("--keep must be more than 0".into()).into());
        }
        opts.retention = Some(flashback::prune::Policy {
            keep,
            keep_daily: a.keep_daily,
            keep_weekly: a.keep_weekly,
            keep_monthly: a.keep_monthly,
        });
    } else if a.keep_daily + a.keep_weekly + a.keep_monthly > 0 {
        return Err(
            UsageError("--keep-daily/--keep-weekly/--keep-monthly go with --keep".into()).into(),
        );
    }
    let mark_every = match &a.mark_every {
        None => None,
        Some(d) => {
            let every = flashback::timespec::parse_duration(d)
                .map_err(|e| UsageError(format!("--mark-every: {e}")))?;
            if every < Duration::from_millis(100) || a.mark_pause == 0 {
                return Err(UsageError(
                    "--mark-every must be at least 100ms and --mark-pause at least 1 (e.g. --mark-every 5m --mark-pause 50)".into(),
                )
                .into());
            }
            Some(every)
        }
    };
    let what = match &sentinel {
        Some(s) => format!(
            "master '{}' via Sentinel {}",
            s.master_name,
            a.sentinel.as_deref().unwrap_or_default()
        ),
        None if a.cluster => format!("the cluster of {url}"),
        None => url.to_string(),
    };
    let marker = mark_every.map(|every| {
        tokio::spawn(mark_loop(
            store.clone(),
            name.clone(),
            url.clone(),
            sentinel.clone(),
            every,
            a.mark_pause,
            a.cluster,
        ))
    });
    opts.sentinel = sentinel;
    tracing::info!("capturing {what} as source '{name}' into {}", a.store);
    // Installed before any work: a SIGTERM during start-up must still mean "stop cleanly, exit 0".
    let stop = shutdown_signal()?;
    let r = if a.cluster {
        capture::cluster::run(store, opts, stop).await
    } else {
        capture::run(store, opts, stop, None).await
    };
    if let Some(m) = marker {
        m.abort();
    }
    r.with_context(|| format!("capture of {what}"))?;
    Ok(())
}

/// `--mark-every`: the agent's own marks, on its own connection and credentials. A failure
/// (the primary away during a failover, a cut that did not fit in the pause) is logged and the
/// next one is tried on schedule: capture never stops for a mark.
async fn mark_loop(
    store: Store,
    name: String,
    url: flashback::client::RedisUrl,
    sentinel: Option<capture::sentinel::SentinelConfig>,
    every: Duration,
    pause_ms: u64,
    cluster: bool,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let taken = async {
            // A cluster source's shard list is read each time: capture rewrites it at start.
            if cluster
                && flashback::store::cluster::load(&store, &name)
                    .await?
                    .is_none()
            {
                anyhow::bail!("the cluster's shard list is not stored yet");
            }
            let primaries = super::mark::primaries(&store, &name, &url, sentinel.as_ref()).await?;
            anyhow::Ok(flashback::mark::take(&store, &name, &primaries, pause_ms, None).await?)
        }
        .await;
        match taken {
            Ok(m) => tracing::info!(
                "mark {}: {} ({} ms of at most {})",
                m.id,
                m.cuts
                    .iter()
                    .map(|c| match c.shard.as_str() {
                        "" => format!("offset {}", c.offset),
                        s => format!("{s} offset {}", c.offset),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                m.took_ms,
                m.pause_ms
            ),
            Err(e) => tracing::warn!("mark failed (capture goes on): {e:#}"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are registered when this is called, not when
/// the future is first polled.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping: making everything received durable");
    })
}
