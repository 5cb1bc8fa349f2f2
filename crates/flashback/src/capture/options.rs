//! [`CaptureOptions`]: everything `flashback capture` (or the demo, or a test) tells the agent,
//! with the defaults the CLI documents, and the names derived from the source and the store.

use crate::client::RedisUrl;
use crate::replica::HandshakeOptions;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub source: RedisUrl,
    pub name: String,
    pub handshake: HandshakeOptions,
    /// Seal the tail once it holds this many bytes…
    pub roll_bytes: u64,
    /// …or is this old.
    pub roll_age: Duration,
    /// Evidence older than this opens an uncertain interval (`capture::core`).
    pub uncertain_after: Duration,
    /// With a remote store: the local directory capture writes into before uploading
    /// (default: `~/.cache/flashback/spool/<store>`).
    pub spool: Option<std::path::PathBuf>,
    /// With a remote store: a record is uploaded within about this long (the RPO).
    pub upload_interval: Duration,
    /// With a remote store: sealed segments uploaded at once (committed in order; 1: one at a
    /// time).
    pub upload_concurrency: usize,
    /// With a remote store: past this many spool bytes capture stops reading from the primary
    /// (loudly) rather than drop anything; a warning comes at 80 %.
    pub spool_max: u64,
    /// Make a new base off the primary this often (`crate::compact`), so a restore replays at
    /// most about this much log. None: never.
    pub base_every: Option<Duration>,
    pub compact: crate::compact::CompactOptions,
    /// Rolling bases (`compact::rolling`) instead of scheduled rebuilds; None: off (the warm
    /// server holds the dataset in memory, so the operator asks for it).
    pub rolling: Option<crate::compact::rolling::RollingOptions>,
    /// Prune by this policy every `PRUNE_EVERY` (None: keep everything).
    pub retention: Option<crate::prune::Policy>,
    /// Follow the primary through these Sentinels (`capture::sentinel`); `source` then only
    /// supplies the data nodes' credentials (and db).
    pub sentinel: Option<super::sentinel::SentinelConfig>,
    /// One shard of a cluster source (`capture::cluster`): its node is asked of the cluster
    /// before each session; `source` then only supplies credentials and TLS.
    pub cluster: Option<super::cluster::ShardLink>,
}

impl CaptureOptions {
    pub fn new(source: RedisUrl, name: String) -> Self {
        CaptureOptions {
            source,
            name,
            handshake: HandshakeOptions::default(),
            roll_bytes: 32 << 20,
            roll_age: Duration::from_secs(600),
            uncertain_after: Duration::from_secs(1),
            spool: None,
            upload_interval: Duration::from_secs(1),
            upload_concurrency: 4,
            spool_max: 10 << 30,
            base_every: None,
            compact: crate::compact::CompactOptions {
                redis_server: None,
                min_log_bytes: 1 << 20,
                min_interval: Duration::from_secs(3600),
                or_log_bytes: None,
            },
            rolling: None,
            retention: None,
            sentinel: None,
            cluster: None,
        }
    }
}

/// The default source name: host and port, which is what an operator recognises.
pub fn default_name(url: &RedisUrl) -> String {
    format!("{}-{}", file_name_safe(&url.host), url.port)
}

/// Letters, digits, '.' and '-' kept; anything else becomes '_'.
fn file_name_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `~/.cache/flashback/spool/<store URL, made a file name>`.
pub fn default_spool(url: &str) -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("flashback")
        .join("spool")
        .join(file_name_safe(url))
}
