//! The base, filtered to the closure's entries: streamed from the store through
//! `flashback_rdb::filter_rdb` into a file beside the private server, which then loads that
//! instead of the whole base. The RDB reader is synchronous: it runs on a blocking thread fed
//! by the store's stream through a small channel, so memory stays a few chunks whatever the
//! base's size. Rejected: sending the filtered RDB straight down the replication link, which
//! needs its length first (or the EOF-marker form, which not every server version takes).

use super::super::plan::RestorePlan;
use super::super::RestoreError;
use super::closure::Closure;
use crate::store::{Store, StoreError};
use bytes::Bytes;
use flashback_rdb::{filter_rdb, FilterCounts, RdbReader, RdbWriter};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use std::io::Read;
use std::path::Path;
use tokio::sync::mpsc;

/// Chunks of the base in flight between the store and the reader.
const CHUNKS: usize = 8;

/// The store's chunks as a blocking `Read`: the RDB reader is synchronous.
pub(crate) struct ChannelRead {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    cur: Bytes,
}

impl Read for ChannelRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// The plan's base as a [`ChannelRead`] for a blocking thread, and the future that feeds it
/// from the store (await it beside that thread; it ends when the reader is dropped). Each
/// chunk's size goes to `progress`.
pub(crate) async fn open_base<'a>(
    store: &Store,
    plan: &RestorePlan,
    progress: Option<&'a crate::progress::Progress>,
) -> Result<(ChannelRead, impl std::future::Future<Output = ()> + 'a), StoreError> {
    open_object(store, &plan.base_key, progress).await
}

/// As [`open_base`], for any stored RDB object.
pub(crate) async fn open_object<'a>(
    store: &Store,
    key: &object_store::path::Path,
    progress: Option<&'a crate::progress::Progress>,
) -> Result<(ChannelRead, impl std::future::Future<Output = ()> + 'a), StoreError> {
    let got = store.os.get(key).await?;
    let (tx, rx) = mpsc::channel(CHUNKS);
    let feeder = async move {
        let mut chunks = got.into_stream();
        while let Some(c) = chunks.next().await {
            let c = c.map_err(std::io::Error::other);
            if let (Ok(b), Some(p)) = (&c, progress) {
                p.add(b.len() as u64);
            }
            let failed = c.is_err();
            if tx.send(c).await.is_err() || failed {
                return;
            }
        }
    };
    let read = ChannelRead {
        rx,
        cur: Bytes::new(),
    };
    Ok((read, feeder))
}

/// Writes the plan's base, keeping only the entries `closure` wants, to `out`. Returns the
/// closure back (the second pass needs it) and what was kept.
pub async fn filter_base(
    store: &Store,
    plan: &RestorePlan,
    closure: Closure,
    out: &Path,
) -> Result<(Closure, FilterCounts), RestoreError> {
    let key = plan.base_key.to_string();
    let (read, feeder) = open_base(store, plan, None).await?;
    let out = out.to_path_buf();
    let file_name = key.clone();
    let job = tokio::task::spawn_blocking(move || {
        let r = (|| {
            let mut reader = RdbReader::with_name(std::io::BufReader::new(read), Some(file_name))
                .map_err(|e| e.to_string())?;
            let file =
                std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let header = *reader.header();
            let writer = RdbWriter::new(std::io::BufWriter::new(file), &header)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            let (w, counts) = filter_rdb(&mut reader, writer, |info, k| {
                closure.wants_logical(info.db as u32, k)
            })
            .map_err(|e| e.to_string())?;
            // No fsync: the file only lives until the private server has loaded it.
            w.into_inner()
                .map_err(|e| format!("{}: {e}", out.display()))?;
            Ok::<_, String>(counts)
        })();
        (closure, r)
    });
    let (done, ()) = tokio::join!(job, feeder);
    let (closure, r) = done.map_err(|e| RestoreError::Log {
        key: key.clone(),
        what: format!("the base filter stopped: {e}"),
    })?;
    let counts = r.map_err(|what| RestoreError::Log { key, what })?;
    Ok((closure, counts))
}
