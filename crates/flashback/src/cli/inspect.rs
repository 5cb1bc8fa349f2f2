//! `flashback inspect`: keys and bytes of an RDB file by db and type, its biggest keys and an
//! expiry histogram; or of the dataset a store held at an instant (restored into a temporary
//! RDB first). Text for a person, `--json` (schema in docs/cli.md) for a script; both from one
//! [`flashback::inspect::InspectReport`].

use super::{open_source, UsageError};
use flashback::info::format_bytes;
use flashback::inspect::{self, InspectReport};
use flashback::restore::{self, Output, RestoreRequest, Target, TtlMode};
use flashback::store::StoreConfig;
use flashback::timespec::format_ms;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flashback inspect dump.rdb
  flashback inspect dump.rdb --top 25
  flashback inspect dump.rdb --json | jq '.dbs[] | {db, keys, by_type}'
  flashback inspect --store /var/lib/flashback --at '2026-08-03 20:28:10'
  flashback inspect --store s3://bucket/fb --name cache --at -1h --json

With --at, the dataset of that instant is first restored into an RDB in a temporary directory
(as `flashback restore --at T --rdb` would write it, with a private redis-server), inspected,
and deleted. Reads every RDB version from Redis 2.x to 8.x and Valkey 9 (VALKEY080); a corrupt
file exits 1 naming the byte offset. Expiry buckets are measured from now.
")]
pub struct Args {
    /// The RDB file to inspect.
    #[arg(value_name = "FILE.rdb")]
    file: Option<PathBuf>,
    /// With --at: the store holding the source.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// With --at: which source (optional when the store holds one).
    #[arg(long)]
    name: Option<String>,
    /// Inspect the dataset as of this instant (any time syntax `restore --at` takes).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// With --at: the redis-server binary the restore runs (default: redis-server on PATH).
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
    /// How many of the biggest keys to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    /// Print the report as JSON (stable schema, see docs/cli.md).
    #[arg(long)]
    json: bool,
}

pub async fn run(a: Args, config: &StoreConfig) -> anyhow::Result<()> {
    let now = flashback::now_ms();
    let report = match (&a.file, &a.at) {
        (Some(_), Some(_)) => {
            return Err(
                UsageError("give an RDB file or --at TIME (with --store), not both".into()).into(),
            )
        }
        (None, None) => {
            return Err(UsageError(
                "say what to inspect: an RDB file, or --store URL --at TIME".into(),
            )
            .into())
        }
        (Some(file), None) => {
            if a.store.is_some() || a.name.is_some() || a.redis_server.is_some() {
                return Err(UsageError(
                    "--store, --name and --redis-server only apply with --at".into(),
                )
                .into());
            }
            if !file.exists() {
                anyhow::bail!(
                    "{} does not exist: give the path of an RDB file (dump.rdb)",
                    file.display()
                );
            }
            let (file, top) = (file.clone(), a.top);
            tokio::task::spawn_blocking(move || inspect::inspect_file(&file, top, now)).await??
        }
        (None, Some(at)) => {
            let store_url = a
                .store
                .clone()
                .unwrap_or_else(|| super::DEFAULT_STORE.to_string());
            let target = if flashback::timespec::means_latest(at) {
                Target::Latest
            } else {
                Target::At(
                    flashback::timespec::parse_time(at, now)
                        .map_err(|e| UsageError(format!("--at: {e}")))?,
                )
            };
            let (store, source) = open_source(&store_url, config, a.name.clone()).await?;
            let dir = TempDir::new()?;
            let rdb = dir.0.join("restore.rdb");
            let req = RestoreRequest {
                source: source.clone(),
                target,
                output: Output::Rdb(rdb.clone()),
                redis_server: a.redis_server.clone(),
                keys: Vec::new(),
                db: None,
                ttl: TtlMode::Absolute,
                replace: false,
                force: false,
                verify: None,
                db_map: Vec::new(),
                parallel: 1,
                splice: true,
            };
            eprintln!("restoring source '{source}' at {at} into a temporary RDB to inspect it…");
            restore::run(&store, req).await?;
            let top = a.top;
            let mut r = tokio::task::spawn_blocking(move || inspect::inspect_file(&rdb, top, now))
                .await??;
            r.file = format!("{store_url} (source '{source}' at {at})");
            r
        }
    };
    let out = if a.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    };
    print!("{out}");
    Ok(())
}

/// A directory removed on drop (also when the command is stopped).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let p = base.join(format!(
                "flashback-inspect-{}-{}-{i}",
                std::process::id(),
                flashback::now_ms()
            ));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("cannot create a temporary directory"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn render(r: &InspectReport) -> String {
    let mut o = String::new();
    let server = r
        .server_version
        .as_deref()
        .map(|v| format!(", server {v}"))
        .unwrap_or_default();
    let created = r
        .created_ms
        .map(|t| format!(", created {}", format_ms(t)))
        .unwrap_or_default();
    let ver = if r.magic == "VALKEY" {
        format!("VALKEY{:03}", r.rdb_version)
    } else {
        format!("REDIS{:04}", r.rdb_version)
    };
    let _ = writeln!(
        o,
        "{}: {}, {ver}{server}{created}, checksum {}",
        r.file,
        format_bytes(r.file_bytes),
        r.checksum
    );
    let _ = writeln!(
        o,
        "read in {:.2} s ({:.0} MB/s)",
        r.elapsed_ms as f64 / 1000.0,
        r.mb_per_s
    );
    let _ = writeln!(
        o,
        "{} keys in {} db{}",
        r.keys,
        r.dbs.len(),
        if r.dbs.len() == 1 { "" } else { "s" }
    );
    for db in &r.dbs {
        let _ = writeln!(
            o,
            "\ndb {}: {} keys ({} with a TTL), {}",
            db.db,
            db.keys,
            db.expires,
            format_bytes(db.bytes)
        );
        let _ = writeln!(o, "  {:<12} {:>10} {:>12}", "type", "keys", "bytes");
        for (t, n) in &db.by_type {
            let b = db.bytes_by_type.get(t).copied().unwrap_or(0);
            let _ = writeln!(o, "  {t:<12} {n:>10} {:>12}", format_bytes(b));
        }
    }
    if !r.biggest.is_empty() {
        let _ = writeln!(o, "\nbiggest keys:");
        let _ = writeln!(
            o,
            "  {:>12} {:>10} {:>3}  {:<8} {:<20} key",
            "bytes", "elements", "db", "type", "encoding"
        );
        for k in &r.biggest {
            let _ = writeln!(
                o,
                "  {:>12} {:>10} {:>3}  {:<8} {:<20} {}",
                format_bytes(k.bytes),
                k.elements,
                k.db,
                k.kind,
                k.encoding,
                flashback::show::key(k.key.as_bytes())
            );
        }
    }
    let e = &r.expiry;
    let _ = writeln!(
        o,
        "\nexpiry: no TTL {}, expired {}, <1m {}, <1h {}, <1d {}, <7d {}, later {}",
        e.no_ttl, e.expired, e.under_1m, e.under_1h, e.under_1d, e.under_7d, e.later
    );
    if r.functions > 0 {
        let _ = writeln!(o, "function libraries: {}", r.functions);
    }
    if !r.module_aux.is_empty() {
        let _ = writeln!(o, "module AUX data: {}", r.module_aux.join(", "));
    }
    o
}
