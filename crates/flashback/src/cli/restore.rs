//! `flashback restore`: arguments → [`RestoreRequest`] → plan (printed) → restore → report.
//!
//! Size: ~620 lines of code, just over the house's ~600: a third is the clap `Args` with the
//! help text of ~30 options (the help is the contract DESIGN.md names, so it stays whole), and
//! `run` resolves the point (`--before/--after` events, marks, a cluster source) before the
//! request. The seam, if it grows: the point's resolution (`run`'s first half, with
//! `describe_found`) into `cli/restore_point.rs`, leaving this file the arguments and the call.

use super::{open_source, TlsArgs, UsageError, DEFAULT_STORE};
use flashback::restore::{self, Output, RestoreRequest, Target, TtlMode};
use flashback::timeline::event::{self, Direction, EventSpec, Found};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(
    group(clap::ArgGroup::new("point").required(true).multiple(true).args(["at", "at_offset", "latest", "before", "after", "at_mark"])),
    group(clap::ArgGroup::new("output").args(["rdb", "to", "serve", "serve_cluster"])),
    after_help = "Examples:
  flashback restore --at '2026-08-03 20:28:10' --rdb before.rdb
  flashback restore --at -10m --serve 6390                 # then: redis-cli -p 6390
  flashback restore --at -10m --to redis://10.0.0.7:7000   # a Redis Cluster: keys routed by slot
  flashback restore --latest --serve-cluster 7000 --primaries 3 --replicas 1   # redis-cli -c -p 7000
  flashback restore --at -10m --to rediss://:pw@redis.internal:6380 --tls-ca ca.crt
  flashback restore --latest --serve 6390 --tls-cert server.crt --tls-key server.key   # TLS only
  flashback restore --at @1790000000.250 --to redis://127.0.0.1:6380 --keys 'user:*'
  flashback restore --at -5m --rdb some.rdb --keys-from keys.txt --db 2   # key-level: only their cost
  flashback restore --at-offset 1234567 --rdb exact.rdb --force
  flashback restore --at-mark m-1790000000250 --rdb cut.rdb       # a mark taken by flashback mark
  flashback restore --at-mark '2026-08-03 20:28' --serve 6390     # the last mark at or before then
  flashback restore --latest --serve 6390 --ttl persist
  flashback restore --at -10m --rdb big.rdb --parallel 4   # 4 partitions rebuilt at once, merged
  flashback restore --before flushall --to redis://10.0.0.5:6379   # the FLUSHALL runbook
  flashback restore --before del:cart:42 --at -1h --rdb cart.rdb      # the last delete before 1h ago
  flashback restore --after flushdb:3 --serve 6390                    # just after the first FLUSHDB 3
  flashback restore --at '2026-08-03T20:28:10+08:00' --rdb x.rdb --dry-run   # print the plan only
  flashback restore --name orders --at -10m --rdb orders.rdb   # a cluster source: every shard, one RDB
  flashback restore --name orders --at-mark m-1790000000250 --serve-cluster 7100 --primaries 2
  flashback restore --name orders --shard s5461 --at -10m --serve 6390   # one shard of it

At TIME the result holds every transaction that arrived at or before TIME, never half of a
MULTI/EXEC. A TIME outside the restorable window is an error that prints the window
(see also: flashback info); --at now (or -0s) means --latest. --to leaves keys that exist on
the target alone unless --replace.

--keys, --keys-from and --db make the restore key-level: it reads the log once to find the keys
the selected ones' history depends on (RENAME, SMOVE, *STORE… with other keys), loads only
those from the base and replays only the records touching them, so it costs what the selected
keys cost. A record whose keys cannot be known (an unknown command, a script declaring no keys)
makes it restore everything and then keep the selection, saying so.

EVENT: flushall, flushdb (any db) or flushdb:N, swapdb, del:KEY (a DEL/UNLINK of KEY, or a
FLUSHALL, or a FLUSHDB of a db the log wrote KEY in), cmd:NAME (any NAME command), mass-delete
(the start of a burst deleting more than --mass-delete-keys keys in one second). --before lands
just before the last such event (at or before --at, when given), its MULTI/EXEC left out whole;
--after just after the first one (at or after --at). The event chosen is printed first; see
all of them with flashback timeline.

Before any work, restore checks its output: --to answers, accepts the credentials and has the
databases needed (or --db-map says where they go); the --serve port is free; the --rdb path is
writable (a device or symlink is written through, never replaced)."
)]
pub struct Args {
    /// Where capture stored the data: a directory
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Which source to restore (may be left out when the store holds only one)
    #[arg(long)]
    name: Option<String>,
    /// A cluster source (capture --cluster): restore this shard only (its label, e.g. s0, as
    /// `flashback info` lists it, or its cluster shard id); without it every shard is restored
    /// at the same instant (or at its cut of --at-mark) and merged into one dataset, to any output
    #[arg(long, value_name = "ID")]
    shard: Option<String>,
    /// Restore the state as of TIME: '2026-08-03 20:28:10[.123]' (local), RFC 3339,
    /// '@<unix seconds>', or relative ('-10m', '2h ago')
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    at: Option<String>,
    /// Restore the state at replication offset N (master_repl_offset), rounded down to a
    /// transaction boundary
    #[arg(long, value_name = "N")]
    at_offset: Option<u64>,
    /// Restore the state of a consistent cut (flashback mark): its ID (m-1790000000250), or a
    /// TIME, meaning the last mark at or before it
    #[arg(long, value_name = "ID|TIME", allow_hyphen_values = true,
          conflicts_with_all = ["at", "at_offset", "latest", "before", "after"])]
    at_mark: Option<String>,
    /// Restore the latest state captured
    #[arg(long)]
    latest: bool,
    /// Restore the state just before the last EVENT (at or before --at): flushall, flushdb[:N],
    /// swapdb, del:KEY, cmd:NAME, mass-delete
    #[arg(long, value_name = "EVENT", conflicts_with_all = ["after", "at_offset", "latest"])]
    before: Option<OsString>,
    /// Restore the state just after the first EVENT (at or after --at)
    #[arg(long, value_name = "EVENT", conflicts_with_all = ["at_offset", "latest"])]
    after: Option<OsString>,
    /// With --before/--after mass-delete: a mass delete deletes more keys than this in one second
    #[arg(long, value_name = "N", default_value_t = flashback::timeline::DEFAULT_MASS_DELETE_KEYS)]
    mass_delete_keys: u64,
    /// Only the keys of db N (its number at the restore point); with --before/--after del:KEY
    /// the event is also looked for in db N only
    #[arg(long, value_name = "N")]
    db: Option<u32>,
    /// Write the result as an RDB file
    #[arg(long, value_name = "FILE")]
    rdb: Option<PathBuf>,
    /// Copy the result's keys into a live instance (DUMP/RESTORE): redis://[user:pass@]host:port,
    /// or rediss://… for TLS (see --tls-ca)
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Leave the restored server running on 127.0.0.1:PORT
    #[arg(long, value_name = "PORT")]
    serve: Option<u16>,
    /// Leave the restore running as a new local Redis Cluster: --primaries N nodes on
    /// 127.0.0.1:PORT…, then their --replicas, slots spread evenly, e.g. --serve-cluster 7000
    /// --primaries 3 --replicas 1 (then: redis-cli -c -p 7000)
    #[arg(long, value_name = "PORT", requires = "primaries")]
    serve_cluster: Option<u16>,
    /// With --serve-cluster: how many primaries, e.g. --primaries 3
    #[arg(long, value_name = "N", requires = "serve_cluster")]
    primaries: Option<u16>,
    /// With --serve-cluster: replicas of each primary, e.g. --replicas 1 [default: 0]
    #[arg(long, value_name = "R", requires = "serve_cluster")]
    replicas: Option<u16>,
    /// Only keys matching one of these glob patterns (Redis syntax: * ? [abc] \x)
    #[arg(long, value_name = "PATTERN", num_args = 1..)]
    keys: Vec<OsString>,
    /// Only the keys named in FILE: one exact name per line (bytes; not a pattern: * ? [ are
    /// plain characters; a CRLF's \r is dropped, empty lines are skipped); with --keys, either
    #[arg(long, value_name = "FILE")]
    keys_from: Option<PathBuf>,
    /// TTLs: keep absolute expiry times (keys past theirs are gone), keep the time each had left
    /// at the restore point (relative), or drop them (persist)
    #[arg(long, value_enum, default_value_t = Ttl::Absolute)]
    ttl: Ttl,
    /// With --to: overwrite keys that already exist on the target
    #[arg(long)]
    replace: bool,
    /// With --to: put the keys of db S into db D on the target, e.g. --db-map 5:0,6:1
    /// (dbs not named keep their number); a cluster (--to one, or --serve-cluster) has only
    /// db 0: --db-map 3:0
    #[arg(long, value_name = "S:D,…")]
    db_map: Option<String>,
    /// The redis-server (or valkey-server) binary that rebuilds the dataset; it must load the
    /// source's RDB version [default: redis-server on PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
    /// Rebuild in N partitions at once (N private servers, merged at the end), e.g.
    /// --parallel 4; 1: serially. Key-level restores (--keys, --db) are always serial
    /// [default: 1: partitioning is not yet faster, see docs/benchmarks.md]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    parallel: Option<u32>,
    /// --rdb: rebuild the whole dataset in a private server and SAVE it, instead of copying
    /// the base's entries the log never names and rebuilding only the keys it does (the
    /// splice, the default: docs/cli.md)
    #[arg(long)]
    no_splice: bool,
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
    /// With --to: after the copy, compare every key on the target with the restore (value
    /// digest and expiry) and report what differs [default: on below 1M keys]
    #[arg(long, conflicts_with = "no_verify")]
    verify: bool,
    /// With --to: skip that comparison
    #[arg(long)]
    no_verify: bool,
    /// Progress on stderr: a live line with the ETA on a terminal and plain lines otherwise
    /// (auto), plain lines always, or none; the phase times are printed at the end either way
    #[arg(long, value_enum, default_value_t = super::progress::Mode::Auto)]
    progress: super::progress::Mode,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Ttl {
    Absolute,
    Relative,
    Persist,
}

pub async fn run(a: Args, config: &flashback::store::StoreConfig) -> anyhow::Result<()> {
    let event = match (&a.before, &a.after) {
        (Some(e), _) => Some((Direction::Before, e)),
        (_, Some(e)) => Some((Direction::After, e)),
        _ => None,
    };
    let event = match event {
        Some((dir, e)) => Some((
            dir,
            EventSpec::parse(e.as_encoded_bytes()).map_err(|e| {
                UsageError(format!(
                    "--{}: {e}",
                    if dir == Direction::Before {
                        "before"
                    } else {
                        "after"
                    }
                ))
            })?,
        )),
        None => None,
    };
    // The "point" group allows several (--before/--after take --at as a bound), so the
    // points that exclude each other are checked here.
    if [a.at.is_some(), a.at_offset.is_some(), a.latest]
        .iter()
        .filter(|x| **x)
        .count()
        > 1
    {
        return Err(UsageError("give one of --at, --at-offset, --latest (or --before/--after EVENT, with --at to bound it)".into()).into());
    }
    let target = if event.is_some() {
        // Resolved once the store is open (below).
        Target::Latest
    } else if a
        .at
        .as_deref()
        .is_some_and(flashback::timespec::means_latest)
    {
        Target::Latest
    } else if let Some(t) = &a.at {
        Target::At(
            flashback::timespec::parse_time(t, flashback::now_ms())
                .map_err(|e| UsageError(format!("--at: {e}")))?,
        )
    } else if let Some(n) = a.at_offset {
        Target::AtOffset(n)
    } else {
        Target::Latest
    };
    let output = match (&a.rdb, &a.to, a.serve) {
        (Some(p), _, _) => Some(Output::Rdb(p.clone())),
        (_, Some(u), _) => Some(Output::To(super::parse_url("--to", u, &a.tls)?)),
        (_, _, Some(port)) => Some(serve_output(port, &a.tls)?),
        _ => a.serve_cluster.map(|port| {
            Output::ServeCluster(restore::outputs::ClusterSpec {
                port,
                primaries: a.primaries.unwrap_or(0),
                replicas: a.replicas.unwrap_or(0),
            })
        }),
    };
    if a.primaries == Some(0) {
        return Err(UsageError("--primaries must be at least 1, e.g. --primaries 3".into()).into());
    }
    if a.tls.options().any()
        && matches!(
            output,
            Some(Output::Rdb(_)) | Some(Output::ServeCluster(_)) | None
        )
    {
        return Err(UsageError(
            "--tls-* options apply to --to rediss://… (or, --tls-cert/--tls-key, to --serve)"
                .into(),
        )
        .into());
    }
    if output.is_none() && !a.dry_run {
        return Err(UsageError(
            "say where the restore goes: --rdb FILE, --to redis://host:port, --serve PORT or --serve-cluster PORT --primaries N".into(),
        )
        .into());
    }
    if a.replace && !matches!(output, Some(Output::To(_))) {
        return Err(UsageError("--replace only applies to --to".into()).into());
    }
    let db_map = match &a.db_map {
        Some(m) => parse_db_map(m).map_err(|e| UsageError(format!("--db-map {m}: {e}")))?,
        None => Vec::new(),
    };
    if !db_map.is_empty() && !matches!(output, Some(Output::To(_)) | Some(Output::ServeCluster(_)))
    {
        return Err(UsageError(
            "--db-map only applies to --to and --serve-cluster (an RDB file or a served instance keeps the source's db numbers)".into(),
        )
        .into());
    }
    if (a.verify || a.no_verify)
        && !matches!(output, Some(Output::To(_)) | Some(Output::ServeCluster(_)))
    {
        return Err(UsageError(
            "--verify/--no-verify only apply to --to (an RDB file or a served instance is the restore itself)".into(),
        )
        .into());
    }
    if a.force && !matches!(output, Some(Output::Rdb(_))) {
        return Err(UsageError("--force only applies to --rdb".into()).into());
    }
    if a.keys.iter().any(|k| k.is_empty()) {
        return Err(UsageError(
            "--keys: an empty pattern matches nothing; use '*' for every key".into(),
        )
        .into());
    }
    let (store, source) = open_source(&a.store, config, a.name).await?;
    let cluster = flashback::store::cluster::load(&store, &source).await?;
    // `--shard ID`: the shard's own history from here on; its marks stay the cluster's.
    let mut mark_of_shard = None;
    let (source, cluster) = match (cluster, &a.shard) {
        (Some(m), Some(id)) => match m.shard(id) {
            Some(s) => {
                mark_of_shard = Some((source.clone(), s.label.clone()));
                (
                    flashback::store::layout::shard_source(&source, &s.label),
                    None,
                )
            }
            None => {
                return Err(UsageError(format!(
                    "--shard {id}: cluster source '{source}' has shards {}",
                    m.labels()
                ))
                .into())
            }
        },
        (None, Some(_)) => {
            return Err(UsageError(format!(
                "--shard applies to a cluster source (captured with --cluster); '{source}' is not one: leave --shard out"
            ))
            .into())
        }
        (m, None) => (source, m),
    };
    if cluster.is_some() {
        let why = if event.is_some() {
            Some("--before/--after EVENT")
        } else if a.at_offset.is_some() {
            Some("--at-offset")
        } else {
            None
        };
        if let Some(what) = why {
            return Err(UsageError(format!(
                "'{source}' is a cluster source: {what} applies to one shard; add --shard ID (see flashback info), or restore the whole cluster by --at TIME, --latest or --at-mark"
            ))
            .into());
        }
    }
    let target = match (&event, &a.at_mark) {
        // A whole cluster's mark is resolved shard by shard below.
        (None, Some(_)) if cluster.is_some() => target,
        (None, Some(wanted)) => match &mark_of_shard {
            Some((of, label)) => super::mark::at_mark(&store, of, wanted, Some(label)).await?,
            None => super::mark::at_mark(&store, &source, wanted, None).await?,
        },
        (None, None) => target,
        (Some((dir, spec)), _) => {
            let at_ms = match a.at.as_deref() {
                None => None,
                Some(t) if flashback::timespec::means_latest(t) => None,
                Some(t) => Some(
                    flashback::timespec::parse_time(t, flashback::now_ms())
                        .map_err(|e| UsageError(format!("--at: {e}")))?,
                ),
            };
            let found =
                event::find(&store, &source, spec, *dir, at_ms, a.mass_delete_keys, a.db).await?;
            for w in &found.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}", describe_found(&found, *dir));
            Target::InGeneration {
                generation: found.generation_ms,
                offset: found.offset,
            }
        }
    };
    let mut keys: Vec<Vec<u8>> = a.keys.into_iter().map(|k| k.into_encoded_bytes()).collect();
    if let Some(path) = &a.keys_from {
        keys.extend(read_keys_from(path)?);
    }
    let key_level = !keys.is_empty() || a.db.is_some();
    let ttl = match a.ttl {
        Ttl::Absolute => TtlMode::Absolute,
        Ttl::Relative => TtlMode::Relative,
        Ttl::Persist => TtlMode::Persist,
    };
    let parallel_n = a
        .parallel
        .map_or_else(restore::parallel::default_partitions, |n| n as usize);
    let req = output.map(|output| RestoreRequest {
        source: source.clone(),
        target,
        output,
        redis_server: a.redis_server,
        keys,
        db: a.db,
        ttl,
        replace: a.replace,
        force: a.force,
        db_map,
        parallel: parallel_n,
        splice: !a.no_splice,
        verify: match (a.verify, a.no_verify) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
    });
    if let Some(m) = &cluster {
        let cut = match &a.at_mark {
            Some(wanted) => {
                let mk = super::mark::find_mark(&store, &source, wanted).await?;
                let found = flashback::mark::resolve(&store, &source, &mk).await?;
                if found.iter().any(|t| t.shard.is_empty()) {
                    anyhow::bail!(
                        "mark {} was taken before '{source}' was captured as a cluster (a cut without a shard); pick a later mark",
                        mk.id
                    );
                }
                restore::cluster::ClusterCut::Mark {
                    id: mk.id.clone(),
                    time_ms: mk.time_ms,
                    cuts: found
                        .into_iter()
                        .map(|t| {
                            (
                                t.shard,
                                Target::InGeneration {
                                    generation: t.generation,
                                    offset: t.offset,
                                },
                            )
                        })
                        .collect(),
                }
            }
            None => restore::cluster::ClusterCut::At(
                restore::cluster::resolve_target(&store, m, target).await?,
            ),
        };
        println!(
            "cluster:    source '{source}', shards {}, {cut}",
            m.labels()
        );
        let plans = restore::cluster::plan(&store, m, &cut, a.inexact).await?;
        for sp in &plans.shards {
            println!("shard {}:", sp.label);
            for line in sp.plan.to_string().lines() {
                println!("  {line}");
            }
        }
        for (label, why) in &plans.absent {
            println!("shard {label}: {why}");
        }
        if key_level {
            println!("mode:       key-level in every shard (counts in the report)");
        }
        let Some(req) = req.filter(|_| !a.dry_run) else {
            return Ok(());
        };
        let progress = flashback::progress::Progress::new();
        let shown = super::progress::show(&progress, "restore", a.progress);
        let report = restore::cluster::restore(&store, &plans, cut, &req, &progress).await;
        shown.finish().await;
        let report = report?;
        println!();
        print!("{report}");
        if report.has_failures() {
            anyhow::bail!("the restore finished, but not everything applied (see above)");
        }
        return Ok(());
    }
    // Refuse what cannot work (an unreachable target, a busy port, an --rdb path that cannot
    // be written) before any work: before the plan reads segments, the base is fetched or a
    // private server starts.
    let checked = match (&req, a.dry_run) {
        (Some(req), false) => Some(restore::preflight::check_output(req).await?),
        _ => None,
    };
    let progress = flashback::progress::Progress::new();
    progress.begin(
        flashback::progress::Phase::Plan,
        flashback::progress::Unit::Bytes,
        None,
    );
    let plan = restore::plan_with(&store, &source, target, a.inexact).await?;
    progress.end();
    print!("{plan}");
    if key_level {
        println!("mode:       key-level: a first pass over the log finds the keys the selection depends on; only those are loaded and replayed (counts in the report)");
    } else if parallel_n > 1 && !plan.is_base_itself() {
        println!("mode:       parallel: {parallel_n} partitions: a first pass over the log splits the keys, {parallel_n} private servers rebuild them at once, then one merge (serial instead if a record's keys cannot be known)");
    } else if req.as_ref().is_some_and(restore::splice::applies) && !plan.is_base_itself() {
        println!("mode:       splice: a first pass over the log finds the keys it names; the base's other entries are copied into the file as they are, a private server rebuilds only the named ones (the whole dataset instead if a command acts on keys it does not name: FLUSHALL, FLUSHDB, SWAPDB, FUNCTION, SCRIPT)");
    } else if a.parallel.is_some() {
        println!("mode:       serial: one private server");
    }
    let (Some(req), Some(checked)) = (req.filter(|_| !a.dry_run), checked) else {
        return Ok(());
    };
    if let (Output::To(url), Some(facts)) = (&req.output, &checked.target) {
        if let Some(w) = restore::preflight::same_as_source(&store, &source, facts, url).await {
            eprintln!("{w}");
        }
    }
    let shown = super::progress::show(&progress, "restore", a.progress);
    let report = restore::execute_observed(&store, &plan, &req, &checked, &progress).await;
    shown.finish().await;
    let report = report?;
    println!();
    print!("{report}");
    if report.has_failures() {
        anyhow::bail!("the restore finished, but not everything applied (see above)");
    }
    Ok(())
}

/// `--serve PORT`, over TLS only when `--tls-cert` and `--tls-key` are given.
fn serve_output(port: u16, tls: &TlsArgs) -> Result<Output, UsageError> {
    if tls.tls_insecure {
        return Err(UsageError(
            "--tls-insecure applies to --to; --serve presents --tls-cert to its clients".into(),
        ));
    }
    match (&tls.tls_cert, &tls.tls_key) {
        (Some(cert), Some(key)) => Ok(Output::ServeTls(
            port,
            restore::ServeTls {
                cert: cert.clone(),
                key: key.clone(),
                ca: tls.tls_ca.clone(),
            },
        )),
        (None, None) if tls.tls_ca.is_none() => Ok(Output::Serve(port)),
        _ => Err(UsageError(
            "--serve over TLS needs --tls-cert FILE and --tls-key FILE (the server's certificate and key; --tls-ca FILE to accept client certificates it signed)".into(),
        )),
    }
}

/// The event chosen, before anything is restored: when, where, what, and where the cut lands.
fn describe_found(f: &Found, dir: Direction) -> String {
    let e = &f.event;
    let mut what = e.command.clone();
    if let Some(d) = e.db {
        what = format!("{what} (db {d})");
    }
    if !e.keys.is_empty() {
        what = format!("{what} {}", e.keys.join(" "));
    }
    if e.kind == "mass-delete" {
        what = format!("a mass delete of {} keys", e.key_count);
    }
    format!(
        "event:      {} at {} (transaction at offsets {}..{}, generation {}; {} such event{} searched)\n\
         cut:        {} it: offset {}",
        what,
        flashback::timespec::format_ms(e.time_ms),
        e.start_offset,
        e.offset,
        e.generation,
        f.candidates,
        if f.candidates == 1 { "" } else { "s" },
        if dir == Direction::Before { "just before" } else { "just after" },
        f.offset
    )
}

/// `S:D,S:D…` into pairs; a source db named twice is a mistake, not a merge.
/// `--keys-from FILE`: each line an exact key name, as a pattern matching only it.
fn read_keys_from(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).map_err(|e| {
        UsageError(format!(
            "--keys-from {}: {e}; give a file with one key name per line",
            path.display()
        ))
    })?;
    let names: Vec<Vec<u8>> = bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(flashback::restore::keys::exact_pattern)
        .collect();
    if names.is_empty() {
        return Err(UsageError(format!(
            "--keys-from {}: the file names no key; put one key name per line",
            path.display()
        ))
        .into());
    }
    Ok(names)
}

fn parse_db_map(s: &str) -> Result<Vec<(u32, u32)>, String> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = part
            .split_once(':')
            .ok_or_else(|| format!("'{part}' is not S:D (source db, target db), e.g. 5:0"))?;
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{x}' in '{part}' is not a db number"))
        };
        let (from, to) = (num(from)?, num(to)?);
        if out.iter().any(|&(f, _)| f == from) {
            return Err(format!("db {from} is mapped twice"));
        }
        out.push((from, to));
    }
    if out.is_empty() {
        return Err("expected S:D pairs, e.g. --db-map 5:0,6:1".into());
    }
    Ok(out)
}
