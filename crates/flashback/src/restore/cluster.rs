//! Restore of a cluster source (`store::cluster`): every shard at its cut (one instant for
//! `--at`/`--latest`, its own offset for a mark), each through the ordinary one-source restore
//! into an RDB of its own, then one standalone RDB made of their entries ([`merge_rdbs`]: the
//! `flashback_rdb` raw-entry writer, entries copied byte for byte, never re-encoded; rejected:
//! loading every shard into one private server and SAVE, which holds the whole dataset in
//! memory once more and costs a load per shard). For `--to`, `--serve` and `--serve-cluster`
//! the merged RDB is loaded into one private server ([`super::engine::load_local`]) and
//! delivered as a one-source restore is: a cluster source restores into any shape.
//!
//! A key in two shards at T is a slot migration caught between MIGRATE's RESTORE-ASKING on
//! the importing shard and its DEL on the exporting one: MIGRATE copies one value, so either
//! copy is the key's value; the first shard's (label order) is kept and the duplicate counted.
//!
//! `--keys`/`--db` go to every shard's restore (each key-level); a shard none of whose keys
//! match contributes nothing. `--shard ID` needs nothing here: it is a restore of the shard's
//! internal source, with every output the standalone path has.

use super::plan::{RestorePlan, Target};
use super::{outputs, preflight, Output, RestoreError, RestoreRequest};
use crate::progress::Progress;
use crate::redis_server::{RedisServer, ServerBinary};
use crate::store::cluster::ClusterMeta;
use crate::store::{catalog, Store};
use flashback_rdb::{Item, RdbReader, RdbWriter};
use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where each shard of a whole-cluster restore stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCut {
    /// Every shard at one instant (ms, UTC): `--at T`, or `--latest` ([`resolve_target`]).
    At(u64),
    /// A mark ([`crate::mark`]): each shard at its own cut, by label. A stored shard without a
    /// cut held no slot when the mark was taken and is left out.
    Mark {
        id: String,
        time_ms: u64,
        cuts: Vec<(String, Target)>,
    },
}

impl std::fmt::Display for ClusterCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterCut::At(t) => write!(f, "every shard at {}", crate::timespec::format_ms(*t)),
            ClusterCut::Mark { id, time_ms, cuts } => write!(
                f,
                "mark {id} taken {}: every shard at its cut ({})",
                crate::timespec::format_ms(*time_ms),
                cuts.iter()
                    .map(|(l, t)| match t {
                        Target::InGeneration { offset, .. } => format!("{l} offset {offset}"),
                        _ => l.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What a cluster restore did, for the report.
#[derive(Debug)]
pub struct ClusterReport {
    pub cut: ClusterCut,
    /// Per shard: label and its restore's one-line summary.
    pub shards: Vec<(String, String)>,
    pub merged: MergeCounts,
    pub delivered: outputs::Delivered,
    pub elapsed: std::time::Duration,
}

impl ClusterReport {
    /// As [`super::RestoreReport::has_failures`]: keys that did not go into the target.
    pub fn has_failures(&self) -> bool {
        self.delivered.has_failures()
    }
}

impl std::fmt::Display for ClusterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cluster:    {}", self.cut)?;
        for (label, summary) in &self.shards {
            writeln!(f, "  shard {label}: {summary}")?;
        }
        writeln!(
            f,
            "merged:     {} keys into one dataset ({} key(s) found in two shards mid-migration: one copy kept)",
            self.merged.keys, self.merged.duplicates
        )?;
        write!(f, "{}", self.delivered)?;
        writeln!(f, "restore time (RTO): {:.2} s", self.elapsed.as_secs_f64())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeCounts {
    pub keys: u64,
    pub duplicates: u64,
}

/// The instant a whole-cluster restore lands on: `--at T` as given; `--latest` is the end of
/// the intersection of the shards' windows (the latest instant every shard can restore).
/// `--at-offset` and events are per shard (offsets are each shard's own): refused here.
pub async fn resolve_target(
    store: &Store,
    meta: &ClusterMeta,
    target: Target,
) -> Result<u64, RestoreError> {
    match target {
        Target::At(t) => Ok(t),
        Target::Latest => {
            let mut end: Option<u64> = None;
            for (label, src) in meta.shard_sources() {
                let gens = catalog::load_generations(store, &src).await?;
                let last = gens.iter().filter_map(|g| g.window()).map(|w| w.to_ms).max();
                let Some(last) = last else {
                    return Err(RestoreError::NothingRestorable {
                        name: format!("{} (shard {label})", meta.source),
                        why: "the shard has no complete generation yet".into(),
                    });
                };
                end = Some(end.map_or(last, |e| e.min(last)));
            }
            end.ok_or_else(|| RestoreError::NothingRestorable {
                name: meta.source.clone(),
                why: "the cluster source lists no shards".into(),
            })
        }
        Target::AtOffset(_) | Target::InGeneration { .. } => Err(RestoreError::Unsupported(
            "an offset is one shard's own: with a cluster source give --shard ID, or restore by --at TIME / --latest / --at-mark".into(),
        )),
    }
}

/// One shard's part of a cluster restore: its label, internal source and plan.
#[derive(Debug, Clone)]
pub struct ShardPlan {
    pub label: String,
    pub source: String,
    pub plan: RestorePlan,
}

/// Every shard's part of a cluster restore.
#[derive(Debug, Clone, Default)]
pub struct ClusterPlan {
    pub shards: Vec<ShardPlan>,
    /// Shards that hold nothing at the cut, with why: joined the cluster after it, empty.
    pub absent: Vec<(String, String)>,
}

/// Plans every shard's restore at `cut` (what `--dry-run` prints): a shard that cannot
/// restore there (outside its window, in an uncertain interval) refuses the whole restore,
/// named by its label. A shard that joined the cluster after capture began and whose history
/// starts after the cut counts as empty there only when its first snapshot holds no key (it
/// was adopted before any key moved to it); else its state at the cut is unknown, refused.
pub async fn plan(
    store: &Store,
    meta: &ClusterMeta,
    cut: &ClusterCut,
    inexact: bool,
) -> Result<ClusterPlan, RestoreError> {
    let targets: Vec<(String, Target)> = match cut {
        ClusterCut::At(t) => meta
            .shards
            .iter()
            .filter(|s| s.is_live())
            .map(|s| (s.label.clone(), Target::At(*t)))
            .collect(),
        ClusterCut::Mark { cuts, .. } => cuts.clone(),
    };
    let mut out = ClusterPlan::default();
    for (label, target) in targets {
        let source = crate::store::layout::shard_source(&meta.source, &label);
        let joined = meta.shard(&label).and_then(|s| s.added_ms);
        let plan = match (
            super::plan_with(store, &source, target, inexact).await,
            target,
            joined,
        ) {
            (Ok(plan), ..) => plan,
            (Err(e), Target::At(t), Some(joined)) => {
                match before_joined(store, &label, &source, t, joined).await? {
                    Some(why) => {
                        out.absent.push((label, why));
                        continue;
                    }
                    None => return Err(in_shard(&label, e)),
                }
            }
            (Err(e), ..) => return Err(in_shard(&label, e)),
        };
        out.shards.push(ShardPlan {
            label,
            source,
            plan,
        });
    }
    Ok(out)
}

/// For a shard that joined at `joined` (ms) and cannot restore at `t`: why it holds nothing
/// at `t` (its history starts after `t` with a snapshot holding no key), None when `t` is
/// inside its history (the plan's own refusal stands), or the refusal when its state at `t`
/// is unknown.
async fn before_joined(
    store: &Store,
    label: &str,
    source: &str,
    t: u64,
    joined: u64,
) -> Result<Option<String>, RestoreError> {
    let at = crate::timespec::format_ms;
    let gens = catalog::load_generations(store, source).await?;
    let Some(first) = gens
        .iter()
        .filter(|g| g.manifest.is_some())
        .flat_map(|g| &g.bases)
        .min_by_key(|b| b.time_ms)
    else {
        return Err(RestoreError::Unsupported(format!(
            "shard {label} joined the cluster at {} and its first snapshot is not stored yet: try again in a few seconds",
            at(joined)
        )));
    };
    if t >= first.time_ms {
        return Ok(None);
    }
    if holds_keys(store, &first.key).await? {
        return Err(RestoreError::Unsupported(format!(
            "shard {label} joined the cluster after capture began and already held keys at its first snapshot ({}): slots moved to it before capture adopted it, so the cluster's state before then is unknown; restore at or after {}, or one shard with --shard",
            at(first.time_ms),
            at(first.time_ms)
        )));
    }
    Ok(Some(format!(
        "joined the cluster at {}; empty until its first snapshot ({}): nothing to restore at {}",
        at(joined),
        at(first.time_ms),
        at(t)
    )))
}

/// Whether the stored RDB `key` holds a key: read up to its first entry, not further.
async fn holds_keys(store: &Store, key: &object_store::path::Path) -> Result<bool, RestoreError> {
    let (read, feeder) = super::keys::base::open_object(store, key, None).await?;
    let name = key.to_string();
    let scan = tokio::task::spawn_blocking(move || -> Result<bool, RestoreError> {
        let corrupt = |e: flashback_rdb::Error| {
            RestoreError::Unsupported(format!("{name}: {e}; run `flashback verify`"))
        };
        let mut r = RdbReader::new(std::io::BufReader::new(read)).map_err(corrupt)?;
        loop {
            match r.next().map_err(corrupt)? {
                Some(Item::Entry(_)) => return Ok(true),
                Some(Item::End { .. }) | None => return Ok(false),
                Some(_) => {}
            }
        }
    });
    let (held, ()) = tokio::join!(scan, feeder);
    held.map_err(|e| RestoreError::Unsupported(format!("reading {key}: {e}")))?
}

/// Prefixes a shard's refusal with its label, keeping the error's kind.
fn in_shard(label: &str, e: RestoreError) -> RestoreError {
    match e {
        RestoreError::Unsupported(m) => RestoreError::Unsupported(format!("shard {label}: {m}")),
        RestoreError::Preflight(m) => RestoreError::Preflight(format!("shard {label}: {m}")),
        RestoreError::Output(m) => RestoreError::Output(format!("shard {label}: {m}")),
        e => e,
    }
}

/// Restores every shard of `plans` and merges them into `req.output`: one RDB file, or one
/// private server loaded with it and delivered (`--to`, `--serve`, `--serve-cluster`). `req`
/// is the request as for one source (its `source` and `target` are ignored: each shard's
/// plan has its own).
pub async fn restore(
    store: &Store,
    plans: &ClusterPlan,
    cut: ClusterCut,
    req: &RestoreRequest,
    progress: &Progress,
) -> Result<ClusterReport, RestoreError> {
    // Refused before any shard is restored: an unreachable --to, a busy port, an --rdb path
    // that exists or cannot be written.
    let checked = preflight::check_output(req).await?;
    let work = match &req.output {
        // Beside the output: the same file system, so the shard RDBs fit where the result
        // does, and the merged file is renamed into place.
        Output::Rdb(out) => out.with_file_name(format!(
            ".{}.shards.{}",
            out.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        )),
        _ => std::env::temp_dir().join(format!("flashback-cluster-restore.{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).map_err(|source| RestoreError::Io {
        path: work.clone(),
        source,
    })?;
    let result = restore_into(store, plans, cut, req, &checked, progress, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn restore_into(
    store: &Store,
    plans: &ClusterPlan,
    cut: ClusterCut,
    req: &RestoreRequest,
    checked: &preflight::Checked,
    progress: &Progress,
    work: &Path,
) -> Result<ClusterReport, RestoreError> {
    let started = std::time::Instant::now();
    let mut shards = Vec::new();
    let mut files = Vec::new();
    let mut no_match = None;
    // One shard after another: each restore already runs a private server (and, on a
    // 2-core machine, replays at full speed alone); in parallel they would only contend.
    for sp in &plans.shards {
        let file = work.join(format!("{}.rdb", sp.label));
        // Each shard into its own RDB: the output's own options (--db-map, --verify,
        // --replace) apply to the merged dataset's delivery below, not here.
        let shard_req = RestoreRequest {
            source: sp.source.clone(),
            target: sp.plan.target,
            output: Output::Rdb(file.clone()),
            force: true,
            db_map: Vec::new(),
            verify: None,
            replace: false,
            ..req.clone()
        };
        match super::execute(store, &sp.plan, &shard_req).await {
            Ok(r) if r.has_failures() => {
                return Err(RestoreError::Unsupported(format!(
                    "shard {}: the restore finished, but not everything applied:\n{r}",
                    sp.label
                )))
            }
            Ok(r) => {
                shards.push((sp.label.clone(), r.plan_summary.clone()));
                files.push(file);
            }
            Err(RestoreError::NoKeyMatched { patterns, .. }) => {
                shards.push((
                    sp.label.clone(),
                    format!("{}; no key of it matches {patterns}", sp.plan.summary()),
                ));
                no_match = Some(patterns);
            }
            Err(e) => return Err(in_shard(&sp.label, e)),
        }
    }
    shards.extend(plans.absent.iter().cloned());
    if files.is_empty() {
        return Err(match no_match {
            Some(patterns) => RestoreError::NoKeyMatched { patterns, total: 0 },
            None => RestoreError::Unsupported("the cluster source has no shard to restore".into()),
        });
    }
    let merged_path = work.join("merged.rdb");
    let (inputs, out) = (files.clone(), merged_path.clone());
    let merged = tokio::task::spawn_blocking(move || merge_rdbs(&inputs, &out))
        .await
        .map_err(|e| RestoreError::Unsupported(format!("the merge failed: {e}")))??;
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    let delivered = match &req.output {
        Output::Rdb(out) => {
            let bytes = std::fs::metadata(&merged_path)
                .map(|m| m.len())
                .unwrap_or(0);
            std::fs::rename(&merged_path, out).map_err(|source| RestoreError::Io {
                path: out.to_path_buf(),
                source,
            })?;
            outputs::Delivered::Rdb {
                path: out.clone(),
                bytes,
            }
        }
        _ => {
            let binary = ServerBinary::find(req.redis_server.as_deref())?;
            let server =
                RedisServer::start(&binary, super::server_options(&req.output, &binary)).await?;
            super::engine::load_local(&server, &merged_path, progress).await?;
            let _ = std::fs::remove_file(&merged_path);
            let d = super::deliver(server, req, checked, progress).await?;
            progress.end();
            d
        }
    };
    Ok(ClusterReport {
        cut,
        shards,
        merged,
        delivered,
        elapsed: started.elapsed(),
    })
}

/// One RDB of every entry of `inputs`, written to `out`: the header of the newest RDB version
/// among them (every entry loads in it), AUX fields and module AUX data of the first, each
/// function library once, every key once (the first input's copy of a key in several).
/// Size hints (RESIZEDB, SLOT_INFO) are left out, as `filter_rdb` does.
pub fn merge_rdbs(inputs: &[PathBuf], out: &Path) -> Result<MergeCounts, RestoreError> {
    let rdb_err = |e: flashback_rdb::Error| RestoreError::Unsupported(e.to_string());
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::Io { path, source }
    };
    let mut header = None;
    for p in inputs {
        let h = *RdbReader::open(p).map_err(rdb_err)?.header();
        if header.is_none_or(|best: flashback_rdb::Header| h.version > best.version) {
            header = Some(h);
        }
    }
    let Some(header) = header else {
        return Err(RestoreError::Unsupported("no shard to merge".into()));
    };
    let file = std::fs::File::create(out).map_err(io(out))?;
    let mut w = RdbWriter::new(BufWriter::new(file), &header).map_err(io(out))?;
    let mut seen: HashSet<(u64, Vec<u8>)> = HashSet::new();
    let mut functions: HashSet<Vec<u8>> = HashSet::new();
    let mut counts = MergeCounts::default();
    let mut written_db: Option<u64> = None;
    for (i, p) in inputs.iter().enumerate() {
        let mut r = RdbReader::open(p).map_err(rdb_err)?;
        r.capture_raw(true);
        let mut db = 0;
        while let Some(item) = r.next().map_err(rdb_err)? {
            match item {
                Item::SelectDb(n) => db = n,
                Item::Entry(_) => {
                    r.summarize().map_err(rdb_err)?;
                    if !seen.insert((db, r.key().to_vec())) {
                        counts.duplicates += 1;
                        continue;
                    }
                    if written_db != Some(db) {
                        w.select_db(db).map_err(io(out))?;
                        written_db = Some(db);
                    }
                    w.entry(r.raw()).map_err(io(out))?;
                    counts.keys += 1;
                }
                Item::Function(code) => {
                    // Cluster users load a library on every primary (FUNCTION LOAD is per node): once.
                    let first_time = functions.insert(code);
                    if first_time {
                        w.raw(r.raw()).map_err(io(out))?;
                    }
                }
                Item::Aux { .. } | Item::ModuleAux { .. } if i == 0 => {
                    w.raw(r.raw()).map_err(io(out))?
                }
                Item::End { .. } => break,
                _ => {}
            }
        }
    }
    let mut f = w.finish().map_err(io(out))?;
    f.flush().map_err(io(out))?;
    f.get_ref().sync_all().map_err(io(out))?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashback_rdb::writer::put_string;

    fn rdb(path: &Path, keys: &[(&str, &str)]) {
        let header = flashback_rdb::Header {
            magic: flashback_rdb::Magic::Redis,
            version: 10,
            raw: *b"REDIS0010",
        };
        let mut w = RdbWriter::new(std::fs::File::create(path).unwrap(), &header).unwrap();
        w.aux(b"redis-ver", b"7.0.15").unwrap();
        w.select_db(0).unwrap();
        for (k, v) in keys {
            let mut e = vec![0u8]; // a string
            put_string(&mut e, k.as_bytes());
            put_string(&mut e, v.as_bytes());
            w.entry(&e).unwrap();
        }
        w.finish().unwrap();
    }

    fn keys_of(path: &Path) -> Vec<Vec<u8>> {
        let mut r = RdbReader::open(path).unwrap();
        let mut out = Vec::new();
        while let Some(item) = r.next().unwrap() {
            if let Item::Entry(_) = item {
                out.push(r.key().to_vec());
                r.summarize().unwrap();
            }
        }
        out
    }

    #[test]
    fn a_key_in_two_shards_is_kept_once_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, out) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("o"),
        );
        rdb(&a, &[("k1", "1"), ("moving", "m")]);
        rdb(&b, &[("moving", "m"), ("k2", "2")]);
        let c = merge_rdbs(&[a, b], &out).unwrap();
        assert_eq!(
            c,
            MergeCounts {
                keys: 3,
                duplicates: 1
            }
        );
        assert_eq!(
            keys_of(&out),
            vec![b"k1".to_vec(), b"moving".to_vec(), b"k2".to_vec()]
        );
    }
}
