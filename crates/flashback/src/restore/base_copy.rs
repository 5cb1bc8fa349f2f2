//! `--rdb` at a base's own instant: the stored base is the state, so it is written out as is,
//! with no private server and no replay (issue 12: "restore at the speed of a bare RDB load").
//! With rolling bases (`compact::rolling`) a base lands every few minutes, so restores at those
//! instants cost one download.
//!
//! The object is read through the store (decrypted when the store is encrypted), checked
//! against the size and crc32c its name records, and placed exactly as a server's dump would
//! be (`outputs::place_file`: a temp file and a rename, or written through to a device).

use super::engine::EngineReport;
use super::outputs::{self, Delivered};
use super::plan::RestorePlan;
use super::{RestoreError, RestoreReport};
use crate::progress::{Phase, Progress, Unit};
use crate::redis_server::fresh_temp_dir;
use crate::store::layout::{self, Entry};
use crate::store::{Store, StoreError};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// What the engine part of the report says when no server ran (tests look for it).
pub const NO_SERVER: &str = "none: the cut is a stored base, copied out as is";

pub async fn base_as_rdb(
    store: &Store,
    plan: &RestorePlan,
    path: &Path,
    force: bool,
    progress: &Progress,
) -> Result<RestoreReport, RestoreError> {
    let dir = TempDir(fresh_temp_dir("flashback-base-copy")?);
    let local = dir.0.join("base.rdb");
    let io = |source| RestoreError::Io {
        path: local.clone(),
        source,
    };
    let got = store
        .os
        .get(&plan.base_key)
        .await
        .map_err(StoreError::from)?;
    progress.begin(Phase::Fetch, Unit::Bytes, Some(got.meta.size));
    let mut f = tokio::fs::File::create(&local).await.map_err(io)?;
    let (mut size, mut crc) = (0u64, 0u32);
    let mut chunks = got.into_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(StoreError::from)?;
        crc = crc32c::crc32c_append(crc, &chunk);
        size += chunk.len() as u64;
        f.write_all(&chunk).await.map_err(io)?;
        progress.add(chunk.len() as u64);
    }
    f.flush().await.map_err(io)?;
    drop(f);
    if let Some((
        _,
        Entry::Base {
            size: s, crc32c, ..
        },
    )) = layout::parse_key(&plan.source, &plan.base_key)
    {
        if (s, crc32c) != (size, crc) {
            return Err(RestoreError::Log {
                key: plan.base_key.to_string(),
                what: format!(
                    "read {size} bytes with crc32c {crc:08x}; its name records {s} bytes and {crc32c:08x}: the object is damaged (flashback verify names what else is)"
                ),
            });
        }
    }
    progress.begin(Phase::Copy, Unit::Bytes, Some(size));
    let delivered: Delivered = outputs::place_file(&local, path, force).await?;
    progress.end();
    Ok(RestoreReport {
        plan_summary: plan.summary(),
        engine: EngineReport {
            server: NO_SERVER.to_string(),
            base_bytes: size,
            ..Default::default()
        },
        filtered: None,
        key_level: None,
        key_fallback: None,
        parallel: None,
        parallel_fallback: None,
        splice: None,
        splice_fallback: None,
        ttl_note: None,
        delivered,
        phases: progress.phases(),
        elapsed: progress.elapsed(),
    })
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
