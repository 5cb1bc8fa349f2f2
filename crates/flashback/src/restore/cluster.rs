//! Restore of a cluster source (`store::cluster`): every shard at the same instant, each
//! through the ordinary one-source restore into an RDB of its own, then one standalone RDB
//! made of their entries ([`merge_rdbs`]: the `flashback_rdb` raw-entry writer, entries copied
//! byte for byte, never re-encoded; rejected: loading every shard into one private server
//! and SAVE, which holds the whole dataset in memory once more and costs a load per shard).
//!
//! A key in two shards at T is a slot migration caught between MIGRATE's RESTORE-ASKING on
//! the importing shard and its DEL on the exporting one: MIGRATE copies one value, so either
//! copy is the key's value; the first shard's (label order) is kept and the duplicate counted.
//!
//! `--shard ID` needs nothing here: it is a restore of the shard's internal source, with every
//! output (`--to`, `--serve`) the standalone path has.

use super::plan::Target;
use super::{Output, RestoreError, RestoreRequest};
use crate::store::cluster::ClusterMeta;
use crate::store::{catalog, Store};
use flashback_rdb::{Item, RdbReader, RdbWriter};
use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What a cluster restore did, for the report.
#[derive(Debug, Clone, Default)]
pub struct ClusterReport {
    /// The instant every shard was restored at (ms, UTC).
    pub at_ms: u64,
    /// Per shard: label and its restore's one-line summary.
    pub shards: Vec<(String, String)>,
    pub merged: MergeCounts,
}

impl std::fmt::Display for ClusterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "cluster:    every shard at {}",
            crate::timespec::format_ms(self.at_ms)
        )?;
        for (label, summary) in &self.shards {
            writeln!(f, "  shard {label}: {summary}")?;
        }
        writeln!(
            f,
            "merged:     {} keys into one RDB ({} key(s) found in two shards mid-migration: one copy kept)",
            self.merged.keys, self.merged.duplicates
        )
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
            "an offset is one shard's own: with a cluster source give --shard ID, or restore by --at TIME / --latest".into(),
        )),
    }
}

/// Restores every shard of `meta` at `at_ms` and merges them into `req.output`'s RDB file.
/// `req` is the request as for one source (its `source` is ignored). `inexact`: as
/// `restore --inexact`, for each shard.
pub async fn restore_rdb(
    store: &Store,
    meta: &ClusterMeta,
    at_ms: u64,
    inexact: bool,
    req: &RestoreRequest,
) -> Result<ClusterReport, RestoreError> {
    let Output::Rdb(out) = &req.output else {
        return Err(RestoreError::Unsupported(
            "a whole cluster restores into one --rdb FILE; for --to or --serve give --shard ID"
                .into(),
        ));
    };
    if out.exists() && !req.force {
        return Err(RestoreError::Exists(out.clone()));
    }
    // Beside the output: the same file system, so the shard RDBs fit where the result does.
    let work = out.with_file_name(format!(
        ".{}.shards.{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::create_dir_all(&work).map_err(|source| RestoreError::Io {
        path: work.clone(),
        source,
    })?;
    let result = restore_into(store, meta, at_ms, inexact, req, out, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn restore_into(
    store: &Store,
    meta: &ClusterMeta,
    at_ms: u64,
    inexact: bool,
    req: &RestoreRequest,
    out: &Path,
    work: &Path,
) -> Result<ClusterReport, RestoreError> {
    let mut report = ClusterReport {
        at_ms,
        ..Default::default()
    };
    let mut files = Vec::new();
    // One shard after another: each restore already runs a private server (and, on a
    // 2-core machine, replays at full speed alone); in parallel they would only contend.
    for (label, src) in meta.shard_sources() {
        let file = work.join(format!("{label}.rdb"));
        let shard_req = RestoreRequest {
            source: src.clone(),
            target: Target::At(at_ms),
            output: Output::Rdb(file.clone()),
            force: true,
            ..req.clone()
        };
        let plan = super::plan_with(store, &src, Target::At(at_ms), inexact).await?;
        let r = super::execute(store, &plan, &shard_req).await?;
        if r.has_failures() {
            return Err(RestoreError::Unsupported(format!(
                "shard {label}: the restore finished, but not everything applied:\n{r}"
            )));
        }
        report.shards.push((label, r.plan_summary.clone()));
        files.push(file);
    }
    let tmp = work.join("merged.rdb");
    let files2 = files.clone();
    let tmp2 = tmp.clone();
    report.merged = tokio::task::spawn_blocking(move || merge_rdbs(&files2, &tmp2))
        .await
        .map_err(|e| RestoreError::Unsupported(format!("the merge failed: {e}")))??;
    std::fs::rename(&tmp, out).map_err(|source| RestoreError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(report)
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
