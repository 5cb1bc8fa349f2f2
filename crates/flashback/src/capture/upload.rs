//! Uploads what capture sealed in its local spool to a remote store (S3, GCS, Azure), in order,
//! and deletes each spool copy only after the remote copy is verified.
//!
//! Order per generation: base, then manifest, then sealed segments by offset. A reader of the
//! remote store therefore never sees a manifest without its base, nor a segment whose
//! predecessors are missing (restore would stop its window at the hole anyway). Open tails and
//! partial files are never uploaded: only sealed, immutable objects travel.
//!
//! Writes are create-only where the backend supports it (`PutMode::Create`): an object that is
//! already there with the same bytes is our own earlier upload (a crash between the PUT and
//! the spool delete), anything else means a second agent writes this source, which is fatal.
//!
//! A store outage is not fatal: uploads retry with exponential backoff (1 s doubling to 60 s)
//! while capture keeps writing into the spool; `spool_bytes` tells the capture loop how full the
//! spool is so it can warn, and at `--spool-max` stop reading from the primary rather than drop
//! anything.

use crate::store::catalog::{self, Generation};
use crate::store::{layout, Store, StoreError};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
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
    #[error("{key}: {err}")]
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
}

impl Uploader {
    /// Runs until `stop` turns true, then makes one last pass (bounded by `final_timeout`).
    /// Returns a fatal error (a second writer) if one happens; outages are only logged.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        final_timeout: Duration,
    ) -> Result<(), UploadError> {
        let mut backoff = Duration::from_secs(1);
        let mut renewed = std::time::Instant::now();
        loop {
            if renewed.elapsed() >= super::lease::RENEW_EVERY {
                if let Some(lease) = self.lease.as_mut() {
                    match lease.renew().await {
                        Ok(()) => renewed = std::time::Instant::now(),
                        Err(e @ super::lease::LeaseError::Store(_)) => {
                            warn!("renewing the agent lease failed: {e}; retrying")
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            match self.pass().await {
                Ok(0) => backoff = Duration::from_secs(1),
                Ok(n) => {
                    backoff = Duration::from_secs(1);
                    tracing::debug!("uploaded {n} objects to {}", self.remote.url);
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    warn!("upload to {} failed: {e}; retrying in {} s (capture continues into the spool)", self.remote.url, backoff.as_secs());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
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
        match tokio::time::timeout(final_timeout, self.pass()).await {
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
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        Ok(())
    }

    /// Sealed objects in the spool, in upload order.
    async fn pending(&self) -> Result<Vec<Path>, UploadError> {
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
        for key in pending {
            if let Err(e) = self.upload_one(&key).await {
                result = Err(e);
                break;
            }
            done += 1;
        }
        self.update_spool_bytes().await;
        result.map(|()| done)
    }

    async fn update_spool_bytes(&self) {
        if let Ok(gens) = catalog::load_generations(&self.spool, &self.source).await {
            let total: u64 = gens.iter().map(Generation::bytes).sum();
            self.shared.spool_bytes.store(total, Ordering::Relaxed);
        }
    }

    async fn upload_one(&self, key: &Path) -> Result<(), UploadError> {
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
            let mut f = tokio::fs::File::open(&path).await.map_err(local_err)?;
            let mut buf = vec![0u8; PART];
            loop {
                let n = f.read(&mut buf).await.map_err(local_err)?;
                if n == 0 {
                    break;
                }
                w.wait_for_capacity(2).await.map_err(remote_err)?;
                w.write(&buf[..n]);
            }
            w.finish().await.map_err(remote_err)?;
        } else {
            // `Bytes`: the payload and the comparison below share it without a copy.
            let bytes = bytes::Bytes::from(tokio::fs::read(&path).await.map_err(local_err)?);
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .remote
                .os
                .put_opts(key, PutPayload::from(bytes.clone()), opts)
                .await
            {
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
                    if theirs != bytes {
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
                    self.remote
                        .os
                        .put(key, PutPayload::from(bytes))
                        .await
                        .map_err(remote_err)?;
                }
                Err(err) => return Err(remote_err(err)),
            }
        }
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
        tokio::fs::remove_file(&path).await.map_err(local_err)?;
        info!("uploaded {key} ({size} bytes)");
        Ok(())
    }
}

/// Base, manifest, then sealed segments, generation by generation. Never tails.
fn upload_order(source: &str, gens: &[Generation]) -> Vec<Path> {
    let mut out = Vec::new();
    for g in gens {
        out.extend(g.bases.iter().map(|b| b.key.clone()));
        if g.manifest.is_some() {
            out.push(layout::manifest_key(source, &g.id));
        }
        out.extend(g.sealed.iter().map(|s| s.key.clone()));
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
        let spool = Store::open(dir.path().join("spool").to_str().unwrap(), Access::Write).unwrap();
        let base = layout::base_key("src", "000001a209cc07e3", 0, 1_795_000_000_000, 3000, 7);
        let path = spool.local_path(&base).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![1u8; 3000]).unwrap();
        // A "remote" that fails every write: its directory replaced by a file.
        let remote_dir = dir.path().join("remote");
        let remote = Store::open(remote_dir.to_str().unwrap(), Access::Write).unwrap();
        std::fs::remove_dir_all(&remote_dir).unwrap();
        std::fs::write(&remote_dir, b"not a directory").unwrap();
        let uploader = Uploader {
            spool,
            remote,
            source: "src".into(),
            interval: Duration::from_secs(1),
            shared: Shared::default(),
            lease: None,
        };
        assert!(uploader.pass().await.is_err(), "the store is down");
        assert_eq!(uploader.shared.spool_bytes.load(Ordering::Relaxed), 3000);
        assert!(
            path.exists(),
            "nothing leaves the spool without a verified upload"
        );
    }
}
