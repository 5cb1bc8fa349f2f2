//! `flashback verify`: integrity check of a source's stored history, then a timed restore drill.
//! Text for people (verdict line first, rendered here from the library's report, which is also
//! the `--json` schema in `docs/cli.md`); exit 1 when any problem is found.

use super::{UsageError, DEFAULT_STORE};
use flashback::restore::Target;
use flashback::store::{catalog, Access, Store, StoreConfig};
use flashback::timespec::format_ms;
use flashback::verify::{self, DrillOptions, Problem, Report};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flashback verify                                # every source in ./flashback-data
  flashback verify --store /var/lib/flashback --name cache
  flashback verify --at '2026-08-03 20:28:10'     # drill a restore of that instant
  flashback verify --no-drill --json | jq '.sources[].problems'
  flashback verify --name cache --against-source redis://:pw@10.0.0.5:6379 --json > drill-2026-12.json
  flashback verify --name cache --against-source rediss://:pw@redis.internal:6380 --tls-ca ca.crt

Reads every object a restore needs: the manifest, each base (size, RDB CRC-64), every segment
and block (checksums, the record chain), and checks that segments chain from the base with no
hole. Each problem names the object, the byte offset, and up to which instant restore still works.
Then, unless --no-drill, restores the latest instant (or --at) into a private redis-server and
reports the time it took (RTO) per phase, the keys per db and DEBUG DIGEST.
--against-source URL also compares with the live source at one offset: its writes are held back
for at most --pause (CLIENT PAUSE WRITE) while its offset and DEBUG DIGEST (or the digests of
--sample random keys) are read; the drill then restores exactly that offset and compares.
The monthly drill is one command: verify --against-source URL --json, kept as evidence.
Exit code: 0 when everything verifies, 1 when any problem is found.
")]
pub struct Args {
    /// Where captured data lives: a directory or file:///path.
    #[arg(long, value_name = "URL", default_value = DEFAULT_STORE)]
    store: String,
    /// Which source to check [default: every source in the store]
    #[arg(long)]
    name: Option<String>,
    /// Drill a restore of TIME instead of the latest instant: '2026-08-03 20:28:10[.123]'
    /// (local), RFC 3339, '@<unix seconds>', or relative ('-10m', '2h ago')
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    at: Option<String>,
    /// Only check integrity; do not restore
    #[arg(long, conflicts_with_all = ["at", "redis_server"])]
    no_drill: bool,
    /// The redis-server (or valkey-server) binary for the drill; it must load the source's RDB
    /// version [default: redis-server on PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
    /// Print the report as JSON (stable schema, see docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Compare the drill with the live source (the primary the agent captures) at the same
    /// offset: redis://[user:pass@]host:port (needs CLIENT PAUSE, and DEBUG for a full digest)
    #[arg(long, value_name = "URL", conflicts_with_all = ["at", "no_drill"])]
    against_source: Option<String>,
    #[command(flatten)]
    tls: super::TlsArgs,
    /// With --against-source: the longest the source's writes are held back, in ms
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 200,
        requires = "against_source"
    )]
    pause: u64,
    /// With --against-source: keys compared when the dataset is too big (or DEBUG is refused)
    /// for a full DEBUG DIGEST inside the pause
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        requires = "against_source"
    )]
    sample: usize,
    /// Progress on stderr: a live line on a terminal, plain lines otherwise (auto), plain lines
    /// always, or none
    #[arg(long, value_enum, default_value_t = super::progress::Mode::Auto)]
    progress: super::progress::Mode,
}

pub async fn run(a: Args, config: &StoreConfig) -> anyhow::Result<()> {
    let target = match &a.at {
        Some(t) if flashback::timespec::means_latest(t) => Target::Latest,
        Some(t) => Target::At(
            flashback::timespec::parse_time(t, flashback::now_ms())
                .map_err(|e| UsageError(format!("--at: {e}")))?,
        ),
        None => Target::Latest,
    };
    let store = Store::open(&a.store, &config.with_access(Access::Read))?;
    store.check(Access::Read).await?;
    let all = catalog::list_sources(&store).await?;
    // Unlike restore, no --name is needed with several sources: checking all is the useful default.
    let sources = match a.name {
        Some(n) if all.contains(&n) => vec![n],
        Some(n) => anyhow::bail!(
            "no source named '{n}' in {}; sources there: {}",
            a.store,
            if all.is_empty() {
                "none".to_string()
            } else {
                all.join(", ")
            }
        ),
        None if all.is_empty() => anyhow::bail!(
            "{} holds no captured source yet: run flashback capture --store {} first",
            a.store,
            a.store
        ),
        None => all,
    };
    if a.against_source.is_none() && a.tls.options().any() {
        return Err(UsageError(
            "--tls-ca/--tls-cert/--tls-key/--tls-insecure apply to --against-source rediss://…"
                .into(),
        )
        .into());
    }
    let against = match &a.against_source {
        Some(u) => Some(verify::against::AgainstOptions {
            url: super::parse_url("--against-source", u, &a.tls)?,
            pause: std::time::Duration::from_millis(a.pause.max(1)),
            sample: a.sample.max(1),
        }),
        None => None,
    };
    let progress = flashback::progress::Progress::new();
    let drill = (!a.no_drill).then_some(DrillOptions {
        target,
        redis_server: a.redis_server,
        progress: progress.clone(),
        against,
    });
    // With --json, stdout is the evidence document; the progress goes to stderr either way.
    let shown = super::progress::show(&progress, "verify", a.progress);
    let report = verify::verify(&store, &sources, drill.as_ref()).await;
    shown.finish().await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if !report.ok {
        anyhow::bail!(
            "verify found {} problem{} (see above)",
            report.problem_count,
            if report.problem_count == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// The text report: a verdict line first, then per source what was checked, every problem and
/// warning on one line, and the drill's figures.
fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let gens: usize = r.sources.iter().map(|s| s.generations.len()).sum();
    let records: u64 = r
        .sources
        .iter()
        .flat_map(|s| &s.generations)
        .map(|g| g.records)
        .sum();
    if r.ok {
        let _ = writeln!(
            o,
            "OK: {} source{}, {gens} generation{}, {records} records verified{}",
            r.sources.len(),
            plural(r.sources.len()),
            plural(gens),
            match r
                .sources
                .iter()
                .filter_map(|s| s.drill.as_ref())
                .map(|d| d.rto_ms)
                .max()
            {
                Some(ms) => format!("; restore drill {ms} ms"),
                None => String::new(),
            }
        );
    } else {
        let _ = writeln!(
            o,
            "FAILED: {} problem{}",
            r.problem_count,
            plural(r.problem_count)
        );
    }
    for s in &r.sources {
        let _ = writeln!(o, "\nsource {}", s.name);
        for g in &s.generations {
            let _ = writeln!(
                o,
                "  generation {}: {} base{}, {} sealed segment{}, {} open tail{}; {} blocks, {} records, {} read: {}",
                g.id,
                g.bases,
                plural(g.bases),
                g.sealed_segments,
                plural(g.sealed_segments),
                g.tails,
                plural(g.tails),
                g.blocks,
                g.records,
                flashback::info::format_bytes(g.bytes),
                if g.ok { "ok" } else { "PROBLEMS" }
            );
        }
        for p in &s.problems {
            let _ = writeln!(o, "  {}", line("PROBLEM", p));
        }
        for p in &s.warnings {
            let _ = writeln!(o, "  {}", line("warning", p));
        }
        if let Some(d) = &s.drill {
            let per_db: Vec<String> = d
                .dbs
                .iter()
                .map(|x| format!("db{} {}", x.db, x.keys))
                .collect();
            let _ = writeln!(
                o,
                "  drill: restored {} (generation {}, offset {}) in {} ms: {} keys{}, {} records replayed, digest {} ({})",
                format_ms(d.at_ms),
                d.generation,
                d.stop_offset,
                d.rto_ms,
                d.keys,
                if per_db.is_empty() { String::new() } else { format!(" ({})", per_db.join(", ")) },
                d.records,
                d.digest,
                d.server
            );
            let _ = writeln!(
                o,
                "  drill time (RTO): {} ms ({})",
                d.rto_ms,
                flashback::progress::phases_line(&d.phases)
            );
            if let Some(l) = &d.log_sample {
                let _ = writeln!(
                    o,
                    "  log sample: {} of {} keys whose last write the log shows whole (SET, DEL) hold it in the restore{}",
                    l.equal,
                    l.keys,
                    if l.differences.is_empty() {
                        String::new()
                    } else {
                        format!("; DIFFERENT: {}", l.differences.join("; "))
                    }
                );
            }
            if let Some(x) = &d.against_source {
                let _ = writeln!(
                    o,
                    "  against source {}: offset {}, {} keys compared ({}; writes paused {} ms): {}",
                    x.url,
                    x.offset,
                    x.keys,
                    x.method,
                    x.paused_ms,
                    if x.equal {
                        "equal".to_string()
                    } else {
                        format!("DIFFERENT: {}", x.differences.join("; "))
                    }
                );
            }
        }
    }
    o
}

fn line(label: &str, p: &Problem) -> String {
    let at = p
        .offset
        .map(|n| format!(" at byte {n}"))
        .unwrap_or_default();
    let impact = if p.impact.is_empty() {
        String::new()
    } else {
        format!(" => {}", p.impact)
    };
    format!(
        "{label} [{}] {}{at}: {}{impact}",
        p.kind.label(),
        p.key,
        p.message
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
