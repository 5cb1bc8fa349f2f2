//! Uploads what capture sealed in its local spool to a remote store (S3, GCS, Azure), in order,
//! and deletes each spool copy only after the remote copy is verified.
//!
//! Order per generation: base, then manifest, each alone and complete before anything after it
//! starts, so a reader never sees a manifest without its base. The sealed segments after them
//! go up `--upload-concurrency` at a time (a backlog after an outage drains about that many
//! times faster against a store with tens of ms per request), and are committed in order: a
//! spool copy is deleted only once its own upload and every earlier one is verified, so what
//! left the spool is always a prefix of the order, and a failure stops the pass at the first
//! failed object. While a batch is in flight a reader can see segment k+1 before k: restore
//! and `info` stop the window at such a hole, and `flashback verify` reports it as an upload
//! in progress while the agent's lease is live and the objects after it are fresh. Rejected:
//! uploading the batch to temporary keys and renaming in order, which would hide the hole at
//! the price of a server-side copy per object (S3 has no rename). Open tails and partial files
//! are never uploaded: only sealed, immutable objects travel.
//!
//! Writes are create-only where the backend supports it (`PutMode::Create`): an object that is
//! already there with the same bytes is our own earlier upload (a crash between the PUT and
//! the spool delete), anything else means a second agent writes this source, which is fatal.
//!
//! A store outage is not fatal: uploads retry with exponential backoff (1 s doubling to 60 s)
//! while capture keeps writing into the spool; `spool_bytes` tells the capture loop how full the
//! spool is so it can warn, and at `--spool-max` stop reading from the primary rather than drop
//! anything.

use crate::backoff::Backoff;
use crate::store::catalog::{self, Generation};
use crate::store::chunks::{self, ChunkedFile};
use crate::store::manifest::LogHead;
use crate::store::{layout, Store, StoreError};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

/// Objects bigger than this go up in parts (bases can be many GB).
const MULTIPART_OVER: u64 = 64 << 20;
const PART: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    SecondWriter(String),
    #[error(transparent)]
    Lease(#[from] super::lease::LeaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: {}", crate::store::short_error(&err.to_string()))]
    Remote {
        key: String,
        err: object_store::Error,
    },
    #[error("{path}: {err}")]
    Local { path: String, err: std::io::Error },
}

impl UploadError {
    /// Retrying cannot fix a second writer; everything else may be a passing outage.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            UploadError::SecondWriter(_)
                | UploadError::Lease(
                    super::lease::LeaseError::Lost { .. } | super::lease::LeaseError::Held { .. }
                )
        )
    }
}

/// Shared between the capture loop and the uploader.
#[derive(Clone, Default)]
pub struct Shared {
    /// Bytes in the spool not yet uploaded (sealed objects plus the open tail).
    pub spool_bytes: Arc<AtomicU64>,
    /// Woken when capture seals something.
    pub sealed: Arc<Notify>,
}

pub struct Uploader {
    pub spool: Store,
    pub remote: Store,
    pub source: String,
    pub interval: Duration,
    pub shared: Shared,
    /// Renewed every `lease::RENEW_EVERY`; released at the end of `run`.
    pub lease: Option<super::lease::Lease>,
    /// Sealed segments in flight at once (`--upload-concurrency`; 1: one at a time). Each
    /// holds its whole object in memory, up to `MULTIPART_OVER`.
    pub concurrency: usize,
    /// Bytes of objects in flight at once, whatever `concurrency` ([`IN_FLIGHT_BYTES`]): an
    /// object larger than this goes up alone.
    pub in_flight_bytes: u64,
}

/// The default bound on the bytes of objects being uploaded at once. Four uploads of the
/// default 32 MiB segments would hold 128 MiB, twice the agent's memory goal (64 MB, DESIGN's
/// non-negotiable "whatever the data"); 32 MiB keeps one such segment in flight, and small
/// segments (a remote capture that seals every second) still go up `concurrency` at a time.
/// Rejected: fewer segments at once whatever their size, which would slow the small ones that
/// need concurrency to hide each PUT's round trip.
pub const IN_FLIGHT_BYTES: u64 = 32 << 20;

impl Uploader {
    /// Runs until `stop` turns true, then makes one last pass (bounded by `final_timeout`).
    /// Returns a fatal error (a second writer) if one happens; outages are only logged.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        final_timeout: Duration,
    ) -> Result<(), UploadError> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut lease = self.lease.take();
        let mut renew_at = tokio::time::Instant::now() + super::lease::RENEW_EVERY;
        loop {
            match self.pass_renewing(&mut lease, &mut renew_at).await {
                Ok(0) => backoff.reset(),
                Ok(n) => {
                    backoff.reset();
                    tracing::debug!("uploaded {n} objects to {}", self.remote.url);
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!("upload to {} failed: {e}; retrying in {} s (capture continues into the spool)", self.remote.url, delay.as_secs());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    if !*stop.borrow() {
                        continue;
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.shared.sealed.notified() => {}
                _ = stop.changed() => {}
            }
        }
        match tokio::time::timeout(final_timeout, self.pass_renewing(&mut lease, &mut renew_at))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_fatal() => return Err(e),
            Ok(Err(e)) => warn!("last upload pass failed: {e}"),
            Err(_) => warn!(
                "last upload pass timed out after {} s",
                final_timeout.as_secs()
            ),
        }
        let left = self.pending().await.map(|p| p.len()).unwrap_or(0);
        if left > 0 {
            warn!(
                "{left} sealed objects are still in the spool {}; nothing is lost: the next `flashback capture` with the same --store and --spool uploads them",
                self.spool.url
            );
        }
        if let Some(lease) = lease {
            lease.release().await;
        }
        Ok(())
    }

    /// A pass, renewing the lease whenever it is due while the pass runs: draining a backlog
    /// can take longer than `lease::STALE_AFTER`, and a lease renewed only between passes would
    /// then look abandoned (another agent could take the source over, and `verify` would no
    /// longer see the uploads in progress).
    async fn pass_renewing(
        &self,
        lease: &mut Option<super::lease::Lease>,
        renew_at: &mut tokio::time::Instant,
    ) -> Result<usize, UploadError> {
        let pass = self.pass();
        tokio::pin!(pass);
        loop {
            tokio::select! {
                r = &mut pass => return r,
                _ = tokio::time::sleep_until(*renew_at), if lease.is_some() => {
                    let Some(l) = lease.as_mut() else { continue };
                    match l.renew().await {
                        Ok(()) => *renew_at = tokio::time::Instant::now() + super::lease::RENEW_EVERY,
                        Err(e @ super::lease::LeaseError::Store(_)) => {
                            warn!("renewing the agent lease failed: {e}; retrying");
                            *renew_at = tokio::time::Instant::now() + Duration::from_secs(1);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// Sealed objects in the spool, in upload order.
    async fn pending(&self) -> Result<Vec<Pending>, UploadError> {
        let gens = catalog::load_generations(&self.spool, &self.source).await?;
        Ok(upload_order(&self.source, &gens))
    }

    /// One pass: uploads everything sealed, in order; stops at the first failure so order holds.
    /// The spool's size is refreshed either way: during an outage every pass fails, and that is
    /// exactly when the capture loop needs it to warn and, at --spool-max, stop reading.
    pub async fn pass(&self) -> Result<usize, UploadError> {
        let pending = self.pending().await?;
        let mut done = 0;
        let mut result = Ok(());
        let mut rest = pending.as_slice();
        while let Some(first) = rest.first() {
            let n = if first.alone {
                1
            } else {
                rest.iter().take_while(|p| !p.alone).count()
            };
            let (run, later) = rest.split_at(n);
            rest = later;
            if let Err(e) = self.upload_run(run, &mut done).await {
                result = Err(e);
                break;
            }
        }
        self.update_spool_bytes().await;
        result.map(|()| done)
    }

    /// Uploads `run` with up to `concurrency` objects in flight, and commits (deletes the spool
    /// copy of) each one in list order, only once it and all before it are verified: what left
    /// the spool is always a prefix of the upload order, as with one upload at a time.
    ///
    /// At the first failure in list order nothing more is committed and no new upload starts;
    /// the ones already in flight are let finish rather than dropped (a dropped multipart upload
    /// would be left open in the store). Their spool copies stay: the next pass uploads them
    /// again, and the create-only PUT finds identical bytes, which it takes as its own.
    async fn upload_run(&self, run: &[Pending], done: &mut usize) -> Result<(), UploadError> {
        let stopped = AtomicBool::new(false);
        let stopped = &stopped;
        // Permits are bytes: each upload holds its object's size (capped at the budget, so a
        // larger one goes alone) while its payload is in memory. The semaphore is fair, so the
        // list order `buffered` starts them in is the order they get their bytes.
        let budget_bytes = self.in_flight_bytes.clamp(1, u32::MAX as u64);
        let budget = tokio::sync::Semaphore::new(budget_bytes as usize);
        let budget = &budget;
        // Boxed: an unboxed `async` block borrowing `self` and the item hits the compiler's
        // "Send is not general enough" limitation once the uploader runs in a spawned task.
        type Put<'a> = futures::future::BoxFuture<'a, Option<Result<Uploaded, UploadError>>>;
        let put = |p: &'_ Pending| -> Put<'_> {
            let key = p.key.clone();
            Box::pin(async move {
                if stopped.load(Ordering::Relaxed) {
                    return None;
                }
                let size = match self.spool.local_path(&key) {
                    Some(path) => tokio::fs::metadata(path).await.map_or(0, |m| m.len()),
                    None => 0,
                };
                let want = size.clamp(1, budget_bytes) as u32;
                // Closed only if dropped, which it is not while this future lives.
                let _bytes = budget.acquire_many(want).await.ok();
                let r = self.put_verified(&key).await;
                if r.is_err() {
                    stopped.store(true, Ordering::Relaxed);
                }
                Some(r)
            })
        };
        let mut results = futures::stream::iter(run)
            .map(put)
            .buffered(self.concurrency.max(1));
        let mut first_err = None;
        // The newest committed segment of each generation, for its log head.
        let mut heads: std::collections::BTreeMap<String, LogHead> = Default::default();
        while let Some(r) = results.next().await {
            if first_err.is_some() {
                continue;
            }
            let committed = match r {
                Some(Ok(up)) => {
                    let head = LogHead::after(&self.source, &up.key);
                    self.commit(up).await.map(|()| head)
                }
                Some(Err(e)) => Err(e),
                // Skipped after a failure, which comes earlier in the list and was seen first.
                None => continue,
            };
            match committed {
                Ok(head) => {
                    *done += 1;
                    if let Some(h) = head {
                        heads.insert(h.generation.clone(), h);
                    }
                }
                Err(e) => {
                    stopped.store(true, Ordering::Relaxed);
                    first_err = Some(e);
                }
            }
        }
        for h in heads.values() {
            self.write_head(h).await;
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Overwrites the generation's log head. Advice for `verify`, not data: a failure is only
    /// logged (the next upload writes it again), and a head that lags only says less.
    async fn write_head(&self, h: &LogHead) {
        let key = layout::head_key(&self.source, &h.generation);
        if let Err(e) = self.remote.os.put(&key, PutPayload::from(h.encode())).await {
            warn!(
                "{key}: {} (verify will not know the log reaches offset {} until the next upload)",
                crate::store::short_error(&e.to_string()),
                h.end_offset
            );
        }
    }

    async fn update_spool_bytes(&self) {
        if let Ok(gens) = catalog::load_generations(&self.spool, &self.source).await {
            let total: u64 = gens.iter().map(Generation::bytes).sum();
            self.shared.spool_bytes.store(total, Ordering::Relaxed);
        }
    }

    /// Puts one spool object into the remote store and verifies it there; leaves the spool copy.
    async fn put_verified(&self, key: &Path) -> Result<Uploaded, UploadError> {
        let path = self
            .spool
            .local_path(key)
            .expect("the spool is a local store");
        let remote_err = |err| UploadError::Remote {
            key: key.to_string(),
            err,
        };
        let local_err = |err| UploadError::Local {
            path: path.display().to_string(),
            err,
        };
        let size = tokio::fs::metadata(&path).await.map_err(local_err)?.len();
        if size > MULTIPART_OVER {
            // Multipart uploads cannot be create-only; a base's name (offset and time) is
            // unique to the agent that received it, so an overwrite can only be our own retry.
            let upload = self
                .remote
                .os
                .put_multipart(key)
                .await
                .map_err(remote_err)?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            match send_file(&mut w, &path).await {
                Ok(()) => {
                    w.finish().await.map_err(remote_err)?;
                }
                Err(e) => {
                    // Left open, the parts sent so far would sit in the bucket (and be billed)
                    // until a lifecycle rule removes them.
                    if let Err(a) = w.abort().await {
                        warn!("{key}: aborting the failed multipart upload: {a}");
                    }
                    return Err(match e {
                        SendError::Local(err) => local_err(err),
                        SendError::Remote(err) => remote_err(err),
                    });
                }
            }
            // The parts are assembled by a separate request from the bytes we sent; the size
            // the store reports is the check that the object is the whole file.
            let head = self.remote.os.head(key).await.map_err(remote_err)?;
            if head.size != size {
                return Err(UploadError::Remote {
                    key: key.to_string(),
                    err: object_store::Error::Generic {
                        store: "verify",
                        source: format!("uploaded {size} bytes but the store holds {}", head.size)
                            .into(),
                    },
                });
            }
            return Ok(Uploaded {
                key: key.clone(),
                path,
                size,
            });
        }
        // In chunks (`store::chunks`), not one buffer the size of the segment: the payload
        // (cheap to clone, it shares them) and the comparison below use the same chunks.
        let payload = chunks::read_payload(&path).await.map_err(local_err)?;
        let size = payload.content_length() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        // No HEAD after a single PUT that succeeded. The HEAD only ever checked the stored size,
        // and a successful answer to one PUT already says that: the client sends the payload
        // with its Content-Length, and S3, GCS, Azure and the local store commit a single PUT
        // whole or not at all, answering only once it is stored. A stronger check, comparing
        // the answer's e_tag with a hash of the bytes, was rejected: the e_tag is an MD5 of the
        // body only on S3 without SSE-KMS/SSE-C (GCS and Azure e_tags are opaque versions), and
        // with client-side encryption (`store::crypt`) the body is ciphertext made inside the
        // store wrapper with a random nonce, which the uploader never sees. Multipart uploads
        // keep their HEAD (above), and an existing object is compared byte for byte (below).
        match self.remote.os.put_opts(key, payload.clone(), opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                let theirs = self
                    .remote
                    .os
                    .get(key)
                    .await
                    .map_err(remote_err)?
                    .bytes()
                    .await
                    .map_err(remote_err)?;
                if !chunks::payload_eq(&payload, &theirs) {
                    return Err(UploadError::SecondWriter(format!(
                        "{key} already exists in {} with different content: another agent is writing source '{}' \
                         into this store; stop one of them (or give one another --name)",
                        self.remote.url, self.source
                    )));
                }
            }
            // Backends without conditional writes: fall back to a plain PUT. Second writers
            // are then caught by the name collision check above only where supported.
            Err(object_store::Error::NotImplemented { .. }) => {
                self.remote.os.put(key, payload).await.map_err(remote_err)?;
            }
            Err(err) => return Err(remote_err(err)),
        }
        Ok(Uploaded {
            key: key.clone(),
            path,
            size,
        })
    }

    /// The remote copy is verified: the spool copy may go.
    async fn commit(&self, up: Uploaded) -> Result<(), UploadError> {
        tokio::fs::remove_file(&up.path)
            .await
            .map_err(|err| UploadError::Local {
                path: up.path.display().to_string(),
                err,
            })?;
        info!("uploaded {} ({} bytes)", up.key, up.size);
        Ok(())
    }
}

/// An object whose remote copy is verified and whose spool copy is still there.
struct Uploaded {
    key: Path,
    path: std::path::PathBuf,
    size: u64,
}

enum SendError {
    Local(std::io::Error),
    Remote(object_store::Error),
}

/// Streams a file into a multipart upload, at most two parts in flight. The chunks go into the
/// parts without a copy (`WriteMultipart::put`), so no buffer is part-sized (`store::chunks`).
async fn send_file(w: &mut WriteMultipart, path: &std::path::Path) -> Result<(), SendError> {
    let mut f = ChunkedFile::open(path).await.map_err(SendError::Local)?;
    while let Some(chunk) = f.next_chunk().await.map_err(SendError::Local)? {
        w.wait_for_capacity(2).await.map_err(SendError::Remote)?;
        w.put(chunk);
    }
    Ok(())
}

/// One object of the upload order.
struct Pending {
    key: Path,
    /// Goes up on its own, after everything before it and before anything after it: a base
    /// and a manifest. A reader must never see a manifest without its base, nor segments
    /// without the manifest that makes their generation readable.
    alone: bool,
}

/// Base, manifest, then sealed segments, generation by generation. Never tails.
fn upload_order(source: &str, gens: &[Generation]) -> Vec<Pending> {
    let mut out = Vec::new();
    for g in gens {
        out.extend(g.bases.iter().map(|b| Pending {
            key: b.key.clone(),
            alone: true,
        }));
        if g.manifest.is_some() {
            out.push(Pending {
                key: layout::manifest_key(source, &g.id),
                alone: true,
            });
        }
        if let Some((key, _)) = &g.commands {
            out.push(Pending {
                key: key.clone(),
                alone: true,
            });
        }
        // Each summary right after its segment: never before it (a reader pairs them by
        // offsets, and an orphan is only a warning, but the store should not say more than it
        // holds). Summaries whose segment already left the spool go after the rest.
        for s in &g.sealed {
            out.push(Pending {
                key: s.key.clone(),
                alone: false,
            });
            if let Some(o) = g.summary_of(s) {
                out.push(Pending {
                    key: o.key.clone(),
                    alone: false,
                });
            }
        }
        out.extend(
            g.summaries
                .iter()
                .filter(|o| {
                    !g.sealed.iter().any(|s| {
                        (s.name.start_offset, s.name.end_offset) == (o.start_offset, o.end_offset)
                    })
                })
                .map(|o| Pending {
                    key: o.key.clone(),
                    alone: false,
                }),
        );
        // An interval is stored after the segments that hold its records were sealed or are
        // still in the tail; uploading it after them keeps "the store never says more than it
        // holds".
        out.extend(g.uncertain.iter().map(|u| Pending {
            key: u.key.clone(),
            alone: false,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Access;

    /// During an outage every pass fails. A failed pass used to return before counting the
    /// spool, so `spool_bytes` froze at its last value, --spool-max never engaged, and the
    /// spool's disk filled instead.
    #[tokio::test]
    async fn a_failed_pass_still_counts_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Store::open(
            dir.path().join("spool").to_str().unwrap(),
            &crate::store::StoreConfig::new(Access::Write),
        )
        .unwrap();
        let base = layout::base_key("src", "000001a209cc07e3", 0, 1_795_000_000_000, 3000, 7);
        let path = spool.local_path(&base).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![1u8; 3000]).unwrap();
        // A "remote" that fails every write: its directory replaced by a file.
        let remote_dir = dir.path().join("remote");
        let remote = Store::open(
            remote_dir.to_str().unwrap(),
            &crate::store::StoreConfig::new(Access::Write),
        )
        .unwrap();
        std::fs::remove_dir_all(&remote_dir).unwrap();
        std::fs::write(&remote_dir, b"not a directory").unwrap();
        let uploader = Uploader {
            spool,
            remote,
            source: "src".into(),
            interval: Duration::from_secs(1),
            shared: Shared::default(),
            lease: None,
            concurrency: 4,
            in_flight_bytes: IN_FLIGHT_BYTES,
        };
        assert!(uploader.pass().await.is_err(), "the store is down");
        assert_eq!(uploader.shared.spool_bytes.load(Ordering::Relaxed), 3000);
        assert!(
            path.exists(),
            "nothing leaves the spool without a verified upload"
        );
    }

    const GEN: &str = "000001a209cc07e3";

    /// A spool holding one generation: a base, its manifest and `segments` sealed segments of
    /// `seg_size` bytes (the first `big` of them `MULTIPART_OVER` + 1). Returns the spool and
    /// the keys in upload order.
    fn spool_with(
        dir: &std::path::Path,
        segments: usize,
        seg_size: usize,
        big: usize,
    ) -> (Store, Vec<Path>) {
        let spool = Store::open(
            dir.join("spool").to_str().unwrap(),
            &crate::store::StoreConfig::new(Access::Write),
        )
        .unwrap();
        let mut keys = vec![layout::base_key("src", GEN, 0, 1_795_000_000_000, 3000, 7)];
        keys.push(layout::manifest_key("src", GEN));
        let mut blobs = vec![vec![1u8; 3000], manifest_bytes()];
        for i in 0..segments {
            let size = if i < big {
                MULTIPART_OVER as usize + 1
            } else {
                seg_size
            };
            let start = 100 + i as u64 * 1000;
            let name = layout::SealedName {
                start_offset: start,
                end_offset: start + 1000,
                first_time_ms: 1_795_000_000_000 + i as u64,
                end_time_ms: 1_795_000_000_000 + i as u64,
                size: size as u64,
                crc32c: i as u32,
            };
            keys.push(layout::segment_key("src", GEN, &name));
            blobs.push(vec![i as u8 + 10; size]);
        }
        for (k, b) in keys.iter().zip(blobs) {
            let path = spool.local_path(k).unwrap();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b).unwrap();
        }
        (spool, keys)
    }

    fn manifest_bytes() -> Vec<u8> {
        crate::store::manifest::GenerationManifest {
            source: "src".into(),
            generation: GEN.into(),
            replid: "0".repeat(40),
            base_offset: 0,
            base_time_ms: 1_795_000_000_000,
            base_db: 0,
            base_size: 3000,
            rdb_version: 10,
            server: "redis 7.0.15".into(),
            reason: "test".into(),
            previous: None,
            agent_version: "test".into(),
        }
        .encode()
    }

    /// A local directory standing in for a remote store, which records what the uploader does:
    /// PUTs in flight, the order of starts and ends, and whether the spool copies deleted so
    /// far were always a prefix of the upload order. It can fail the PUT of one key, once, and
    /// delays segment PUTs so that later ones complete first.
    #[derive(Debug)]
    struct Recorder {
        inner: object_store::local::LocalFileSystem,
        /// Spool files in upload order.
        spool_files: Vec<std::path::PathBuf>,
        fail_once: std::sync::Mutex<Option<Path>>,
        in_flight: AtomicU64,
        max_in_flight: AtomicU64,
        /// Payload bytes of the PUTs in flight, and the most at once.
        bytes_in_flight: AtomicU64,
        max_bytes_in_flight: AtomicU64,
        events: std::sync::Mutex<Vec<String>>,
        not_a_prefix: AtomicBool,
        multipart: AtomicU64,
    }

    impl std::fmt::Display for Recorder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Recorder")
        }
    }

    impl Recorder {
        fn check_spool(&self) {
            let present: Vec<bool> = self.spool_files.iter().map(|p| p.exists()).collect();
            if present.windows(2).any(|w| w[0] && !w[1]) {
                self.not_a_prefix.store(true, Ordering::Relaxed);
            }
        }

        fn event(&self, what: &str, key: &Path) {
            let name = key.filename().unwrap_or_default().to_string();
            self.events.lock().unwrap().push(format!("{what} {name}"));
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Recorder {
        async fn put_opts(
            &self,
            p: &Path,
            b: PutPayload,
            o: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.check_spool();
            self.event("start", p);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let len = b.content_length() as u64;
            let bytes = self.bytes_in_flight.fetch_add(len, Ordering::SeqCst) + len;
            self.max_bytes_in_flight.fetch_max(bytes, Ordering::SeqCst);
            // Later segments (higher offsets in the name) finish first.
            if p.as_ref().ends_with(".seg") {
                let rank = self.spool_files.len()
                    - self
                        .spool_files
                        .iter()
                        .position(|f| f.ends_with(p.filename().unwrap()))
                        .unwrap();
                tokio::time::sleep(Duration::from_millis(15 * rank as u64)).await;
            }
            let fail = {
                let mut f = self.fail_once.lock().unwrap();
                if f.as_ref() == Some(p) {
                    f.take()
                } else {
                    None
                }
            };
            let r = match fail {
                Some(_) => Err(object_store::Error::Generic {
                    store: "test",
                    source: "injected failure".into(),
                }),
                None => self.inner.put_opts(p, b, o).await,
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.bytes_in_flight.fetch_sub(len, Ordering::SeqCst);
            self.event("end", p);
            self.check_spool();
            r
        }
        async fn put_multipart_opts(
            &self,
            p: &Path,
            o: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.multipart.fetch_add(1, Ordering::Relaxed);
            self.inner.put_multipart_opts(p, o).await
        }
        async fn get_opts(
            &self,
            p: &Path,
            o: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(p, o).await
        }
        fn delete_stream(
            &self,
            l: futures::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(
            &self,
            p: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(p)
        }
        async fn list_with_delimiter(
            &self,
            p: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(
            &self,
            f: &Path,
            t: &Path,
            o: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    fn recorder(dir: &std::path::Path, spool: &Store, keys: &[Path]) -> (Arc<Recorder>, Store) {
        let root = dir.join("remote");
        std::fs::create_dir_all(&root).unwrap();
        let rec = Arc::new(Recorder {
            inner: object_store::local::LocalFileSystem::new_with_prefix(&root).unwrap(),
            spool_files: keys.iter().map(|k| spool.local_path(k).unwrap()).collect(),
            fail_once: Default::default(),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            bytes_in_flight: AtomicU64::new(0),
            max_bytes_in_flight: AtomicU64::new(0),
            events: Default::default(),
            not_a_prefix: AtomicBool::new(false),
            multipart: AtomicU64::new(0),
        });
        let remote = Store {
            os: rec.clone(),
            local_root: None,
            url: "test://remote".into(),
            encrypted: false,
        };
        (rec, remote)
    }

    fn uploader(spool: Store, remote: Store, concurrency: usize) -> Uploader {
        Uploader {
            spool,
            remote,
            source: "src".into(),
            interval: Duration::from_secs(1),
            shared: Shared::default(),
            lease: None,
            concurrency,
            in_flight_bytes: IN_FLIGHT_BYTES,
        }
    }

    async fn remote_holds(remote: &Store, keys: &[Path], blobs: &[Vec<u8>]) {
        for (k, b) in keys.iter().zip(blobs) {
            let got = remote.os.get(k).await.unwrap().bytes().await.unwrap();
            assert!(
                got.as_ref() == b.as_slice(),
                "{k}: wrong bytes in the remote store"
            );
        }
    }

    fn read_all(spool: &Store, keys: &[Path]) -> Vec<Vec<u8>> {
        keys.iter()
            .map(|k| std::fs::read(spool.local_path(k).unwrap()).unwrap())
            .collect()
    }

    /// Segments go up N at a time and complete out of order, yet the base and the manifest go
    /// alone and first, and the spool empties strictly in upload order.
    #[tokio::test]
    async fn segments_go_up_concurrently_and_leave_the_spool_in_order() {
        for concurrency in [1, 4] {
            let dir = tempfile::tempdir().unwrap();
            let (spool, keys) = spool_with(dir.path(), 8, 2000, 0);
            let blobs = read_all(&spool, &keys);
            let (rec, remote) = recorder(dir.path(), &spool, &keys);
            let up = uploader(spool.clone(), remote.clone(), concurrency);
            assert_eq!(up.pass().await.unwrap(), keys.len());
            assert_eq!(
                rec.max_in_flight.load(Ordering::SeqCst),
                concurrency as u64,
                "PUTs in flight at once"
            );
            assert!(
                !rec.not_a_prefix.load(Ordering::Relaxed),
                "a spool copy left out of order"
            );
            let events = rec.events.lock().unwrap().clone();
            let base = keys[0].filename().unwrap();
            assert_eq!(
                events[..4],
                [
                    format!("start {base}"),
                    format!("end {base}"),
                    "start generation.meta".to_string(),
                    "end generation.meta".to_string(),
                ]
            );
            if concurrency > 1 {
                // The first window holds segments 0..4; the delays finish the 4th first.
                let pos = |i: usize| {
                    let e = format!("end {}", keys[i].filename().unwrap());
                    events.iter().position(|x| *x == e).unwrap()
                };
                assert!(
                    pos(2 + concurrency - 1) < pos(2),
                    "the test delays were meant to complete segments out of order: {events:?}"
                );
            }
            remote_holds(&remote, &keys, &blobs).await;
            for k in &keys {
                assert!(
                    !spool.local_path(k).unwrap().exists(),
                    "{k} still in the spool"
                );
            }
            assert_eq!(up.shared.spool_bytes.load(Ordering::Relaxed), 0);
        }
    }

    /// The bytes in flight stay within the budget whatever `--upload-concurrency`: with room
    /// for two 2000-byte segments, two go up at once (not four), and every object still lands
    /// and leaves the spool in order.
    #[tokio::test]
    async fn bytes_in_flight_stay_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, keys) = spool_with(dir.path(), 8, 2000, 0);
        let blobs = read_all(&spool, &keys);
        let (rec, remote) = recorder(dir.path(), &spool, &keys);
        let mut up = uploader(spool.clone(), remote.clone(), 4);
        up.in_flight_bytes = 4500;
        assert_eq!(up.pass().await.unwrap(), keys.len());
        let max_bytes = rec.max_bytes_in_flight.load(Ordering::SeqCst);
        assert!(max_bytes <= 4500, "{max_bytes} bytes in flight at once");
        assert_eq!(rec.max_in_flight.load(Ordering::SeqCst), 2, "PUTs at once");
        assert!(!rec.not_a_prefix.load(Ordering::Relaxed));
        remote_holds(&remote, &keys, &blobs).await;
        // An object larger than the whole budget goes up alone rather than never.
        let dir = tempfile::tempdir().unwrap();
        let (spool, keys) = spool_with(dir.path(), 4, 2000, 0);
        let (rec, remote) = recorder(dir.path(), &spool, &keys);
        let mut up = uploader(spool.clone(), remote.clone(), 4);
        up.in_flight_bytes = 1000;
        assert_eq!(up.pass().await.unwrap(), keys.len());
        assert_eq!(rec.max_in_flight.load(Ordering::SeqCst), 1, "PUTs at once");
    }

    /// The k-th object's PUT fails while later ones are in flight or done: every spool copy
    /// before it is gone, it and every later one stay (even those already in the remote store),
    /// and the next pass uploads the rest, taking the identical objects it finds as its own.
    #[tokio::test]
    async fn a_failed_put_stops_the_pass_and_keeps_every_later_spool_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, keys) = spool_with(dir.path(), 10, 2000, 0);
        let blobs = read_all(&spool, &keys);
        let (rec, remote) = recorder(dir.path(), &spool, &keys);
        // The third segment: the first window (segments 0..4) has the 4th finish before it
        // fails and the first two finish after it.
        let k = 4;
        *rec.fail_once.lock().unwrap() = Some(keys[k].clone());
        let up = uploader(spool.clone(), remote.clone(), 4);
        let e = up.pass().await.unwrap_err();
        assert!(e.to_string().contains("injected failure"), "{e}");
        assert!(!e.is_fatal(), "an outage is retried");
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                spool.local_path(key).unwrap().exists(),
                i >= k,
                "object {i}: spool copies before the failed one go, it and later ones stay"
            );
        }
        assert!(matches!(
            remote.os.head(&keys[k]).await,
            Err(object_store::Error::NotFound { .. })
        ));
        let ahead = futures::future::join_all(keys[k + 1..].iter().map(|key| remote.os.head(key)))
            .await
            .iter()
            .filter(|r| r.is_ok())
            .count();
        assert!(ahead > 0, "later PUTs in flight were let finish");
        assert!(!rec.not_a_prefix.load(Ordering::Relaxed));
        assert_eq!(
            up.shared.spool_bytes.load(Ordering::Relaxed),
            (k..keys.len()).map(|i| blobs[i].len() as u64).sum::<u64>()
        );

        assert_eq!(up.pass().await.unwrap(), keys.len() - k);
        remote_holds(&remote, &keys, &blobs).await;
        for key in &keys {
            assert!(
                !spool.local_path(key).unwrap().exists(),
                "{key} still in the spool"
            );
        }
        assert!(!rec.not_a_prefix.load(Ordering::Relaxed));
    }

    /// A segment bigger than `MULTIPART_OVER` goes up in parts inside a concurrent batch.
    #[tokio::test]
    async fn a_big_segment_goes_up_in_parts_within_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, keys) = spool_with(dir.path(), 3, 2000, 1);
        let blobs = read_all(&spool, &keys);
        let (rec, remote) = recorder(dir.path(), &spool, &keys);
        let up = uploader(spool.clone(), remote.clone(), 4);
        assert_eq!(up.pass().await.unwrap(), keys.len());
        assert_eq!(rec.multipart.load(Ordering::Relaxed), 1);
        remote_holds(&remote, &keys, &blobs).await;
        for key in &keys {
            assert!(
                !spool.local_path(key).unwrap().exists(),
                "{key} still in the spool"
            );
        }
    }

    /// A second agent's object under the same name is fatal, even from inside a batch.
    #[tokio::test]
    async fn different_bytes_under_a_segment_name_are_a_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, keys) = spool_with(dir.path(), 4, 2000, 0);
        let (_rec, remote) = recorder(dir.path(), &spool, &keys);
        remote
            .os
            .put(&keys[3], PutPayload::from(vec![0u8; 2000]))
            .await
            .unwrap();
        let up = uploader(spool.clone(), remote, 4);
        let e = up.pass().await.unwrap_err();
        assert!(e.is_fatal(), "{e}");
        assert!(e.to_string().contains("another agent"), "{e}");
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                spool.local_path(key).unwrap().exists(),
                i >= 3,
                "object {i}"
            );
        }
    }
}
