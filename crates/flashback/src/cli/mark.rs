//! `flashback mark`: a consistent cut of the source's primaries, stored as a mark.

use super::{open_source, TlsArgs, UsageError, DEFAULT_STORE};
use flashback::capture::sentinel::{self, SentinelConfig};
use flashback::client::RedisUrl;
use flashback::mark::{self, cut::Primary};
use flashback::store::{Access, Store};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  flashback mark --source redis://127.0.0.1:6379                       # prints: m-1790000000250
  flashback mark --source redis://marker:secret@10.0.0.5:6379 --store s3://backups/redis --pause 100
  flashback mark --sentinel 10.0.0.1:26379 --master-name mymaster --source redis://marker:secret@any:6379
  flashback restore --at-mark m-1790000000250 --rdb cut.rdb

Every primary's writes are held back (CLIENT PAUSE WRITE) for at most --pause while its
replication offset is read; the dataset is unchanged. The user needs:
  ACL SETUSER <user> on >password +client|pause +client|unpause +info
A --source that is a replica is followed to its primary (same user and password). For a
cluster source (capture --cluster) --source is any node of the cluster: every shard's primary
is paused at once and the mark holds one cut per shard.")]
pub struct Args {
    /// Where capture stores the data
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Which source to mark (may be left out when the store holds only one)
    #[arg(long)]
    name: Option<String>,
    /// Hold writes back for at most this many milliseconds; the cut must fit inside it
    #[arg(long, value_name = "MS", default_value_t = mark::DEFAULT_PAUSE_MS)]
    pause: u64,
    /// The primary (or a replica of it) the agent captures: redis://[user:pass@]host:port or
    /// rediss://… (see --tls-ca). With --sentinel it only supplies user, password and TLS
    #[arg(long, value_name = "URL", required_unless_present = "sentinel")]
    source: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Ask these Sentinels for the primary of --master-name, e.g. 10.0.0.1:26379,10.0.0.2:26379
    #[arg(long, value_name = "HOST:PORT,…", requires = "master_name")]
    sentinel: Option<String>,
    /// With --sentinel: the master's name in the Sentinels' `sentinel monitor`
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
    /// The mark's id [default: m-<unix ms>]: letters, digits and '-'
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Print the mark as JSON
    #[arg(long)]
    json: bool,
}

pub async fn run(a: Args, config: &flashback::store::StoreConfig) -> anyhow::Result<()> {
    if a.pause == 0 {
        return Err(UsageError("--pause must be at least 1 ms (e.g. --pause 50)".into()).into());
    }
    if let Some(id) = &a.id {
        if !mark::valid_id(id) {
            return Err(UsageError(format!(
                "--id {id:?}: use letters, digits and '-' only (at most 64)"
            ))
            .into());
        }
    }
    let url: RedisUrl = match &a.source {
        Some(s) => super::parse_url("--source", s, &a.tls)?,
        None => super::parse_url("--source", "redis://127.0.0.1:6379", &a.tls)?,
    };
    let sentinel = match (&a.sentinel, &a.master_name) {
        (Some(list), Some(master)) => Some(SentinelConfig {
            sentinels: sentinel::parse_list(list).map_err(|e| UsageError(e.to_string()))?,
            master_name: master.clone(),
            user: a.sentinel_user.clone(),
            password: a.sentinel_password.clone(),
            tls: url.tls.clone(),
            // A mark must pause the real primary: guessing a node when no Sentinel answers
            // could pause a demoted one and record a cut of the wrong history.
            fallback: None,
        }),
        _ => None,
    };
    // Read access finds the source; the mark is then written with write access.
    let (_, name) = open_source(&a.store, config, a.name).await?;
    let store = Store::open(&a.store, &config.with_access(Access::Write))?;
    let primaries = primaries(&store, &name, &url, sentinel.as_ref()).await?;
    let m = mark::take(&store, &name, &primaries, a.pause, a.id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        println!("{}", m.id);
        eprintln!(
            "mark {} of source '{}' at {}: {} (writes held back {} ms of at most {})",
            m.id,
            name,
            flashback::timespec::format_ms(m.time_ms),
            m.cuts
                .iter()
                .map(|c| match c.shard.as_str() {
                    "" => format!("{} offset {}", c.primary, c.offset),
                    shard => format!("shard {shard} {} offset {}", c.primary, c.offset),
                })
                .collect::<Vec<_>>()
                .join(", "),
            m.took_ms,
            m.pause_ms
        );
    }
    Ok(())
}

/// The primaries a mark of source `name` pauses: every shard's for a cluster source (asked
/// of the cluster through `url`), else the one primary (`primary`). What `flashback mark` and
/// `capture --mark-every` both take.
pub async fn primaries(
    store: &Store,
    name: &str,
    url: &RedisUrl,
    sentinel: Option<&SentinelConfig>,
) -> anyhow::Result<Vec<Primary>> {
    match flashback::store::cluster::load(store, name).await? {
        Some(meta) => {
            if sentinel.is_some() {
                return Err(UsageError(format!(
                    "'{name}' is a cluster source: give --source redis://ANY-NODE of the cluster, not --sentinel"
                ))
                .into());
            }
            Ok(mark::cluster_primaries(&meta, url).await?)
        }
        None => Ok(vec![primary(url, sentinel).await?]),
    }
}

/// The primary to pause: the Sentinels' answer, else the URL's server or, for a replica, its
/// primary.
pub async fn primary(url: &RedisUrl, sentinel: Option<&SentinelConfig>) -> anyhow::Result<Primary> {
    let url = match sentinel {
        Some(cfg) => {
            let ((host, port), _) = sentinel::resolve(cfg).await?;
            let mut u = url.clone();
            u.host = host;
            u.port = port;
            u
        }
        None => mark::cut::primary_of(url).await?,
    };
    Ok(Primary {
        shard: String::new(),
        url,
    })
}

/// `--at-mark ID|TIME`: the mark of `source` with that id, else the last one at or before
/// that time.
pub(super) async fn find_mark(
    store: &flashback::store::Store,
    source: &str,
    wanted: &str,
) -> anyhow::Result<flashback::mark::Mark> {
    use flashback::mark;
    let marks = mark::list(store, source).await?;
    // An id is tried first; only what is not one is read as a time.
    let time = if marks.iter().any(|m| m.id == wanted) {
        None
    } else if flashback::timespec::means_latest(wanted) {
        Some(flashback::now_ms())
    } else {
        flashback::timespec::parse_time(wanted, flashback::now_ms()).ok()
    };
    Ok(mark::find(&marks, source, wanted, time)?.clone())
}

/// `--at-mark ID|TIME` of one history: the mark, located in it, as a target in its
/// generation. `shard`: restoring one shard of cluster source `source` (`--shard`), whose cut
/// of the mark is the one taken.
pub(super) async fn at_mark(
    store: &flashback::store::Store,
    source: &str,
    wanted: &str,
    shard: Option<&str>,
) -> anyhow::Result<flashback::restore::Target> {
    use flashback::mark;
    let mut m = find_mark(store, source, wanted).await?;
    if let Some(label) = shard {
        m.cuts.retain(|c| c.shard == label);
        if m.cuts.is_empty() {
            anyhow::bail!(
                "mark {} has no cut of shard {label} (it held no slot of the cluster when the mark was taken); restore it by --at TIME",
                m.id
            );
        }
    }
    let targets = mark::resolve(store, source, &m).await?;
    let [t] = targets.as_slice() else {
        anyhow::bail!(
            "mark {} holds {} shard cuts: restore the cluster source itself (without --shard), or one shard with --shard ID",
            m.id,
            targets.len()
        );
    };
    println!(
        "mark:       {} taken {} (writes held back {} ms): {} offset {}",
        m.id,
        flashback::timespec::format_ms(m.time_ms),
        m.took_ms,
        m.cuts.first().map(|c| c.primary.as_str()).unwrap_or("?"),
        t.offset
    );
    Ok(flashback::restore::Target::InGeneration {
        generation: t.generation,
        offset: t.offset,
    })
}
