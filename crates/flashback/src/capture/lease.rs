//! One agent per source in a remote store. A local store has `flock` (`log.rs`); object stores
//! have no locks, so the agent holds a lease object, `sources/<name>/agent.lease`: created
//! create-only at start, renewed every [`RENEW_EVERY`] by the uploader (which first checks the
//! lease is still its own), deleted on a clean stop. A lease not renewed for [`STALE_AFTER`]
//! belongs to an agent that died (kill -9, a lost host) and may be taken over.
//!
//! Rejected: detecting a second writer from colliding segment names. Two agents recording the
//! same stream seal at different moments, so their names rarely collide, and the overlap is
//! only visible after both have written.

use crate::store::{layout, Store, StoreError};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const RENEW_EVERY: Duration = Duration::from_secs(10);
pub const STALE_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseBody {
    pub agent: String,
    pub host: String,
    pub pid: u32,
    pub renewed_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("another agent ({host}, pid {pid}) is capturing source '{source_name}' into {store} (its lease was renewed {age_s} s ago); stop it first, or pass another --name")]
    Held {
        source_name: String,
        store: String,
        host: String,
        pid: u32,
        age_s: u64,
    },
    #[error("another agent ({host}, pid {pid}) took over source '{source_name}' in {store}; this agent stops so that only one writes")]
    Lost {
        source_name: String,
        store: String,
        host: String,
        pid: u32,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Lease {
    store: Store,
    source: String,
    me: LeaseBody,
}

impl Lease {
    /// Takes the lease, or says who holds it.
    pub async fn acquire(store: &Store, source: &str) -> Result<Lease, LeaseError> {
        let me = LeaseBody {
            agent: format!("{:016x}", rand_id()),
            host: hostname(),
            pid: std::process::id(),
            renewed_ms: crate::now_ms(),
        };
        let lease = Lease {
            store: store.clone(),
            source: source.to_string(),
            me,
        };
        let key = layout::lease_key(source);
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store.os.put_opts(&key, lease.body(), create).await {
            Ok(_) => return Ok(lease),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            // No create-only writes on this backend: fall through to read-then-write.
            Err(object_store::Error::NotImplemented { .. }) => {}
            Err(e) => return Err(StoreError::from(e).into()),
        }
        if let Some(other) = lease.read().await? {
            let age = crate::now_ms().saturating_sub(other.renewed_ms);
            // On this host a dead pid settles it at once (a kill -9 and a restart), without
            // waiting for the lease to go stale.
            let dead_here = other.host == lease.me.host && !pid_alive(other.pid);
            if other.agent != lease.me.agent && age < STALE_AFTER.as_millis() as u64 && !dead_here {
                return Err(LeaseError::Held {
                    source_name: source.to_string(),
                    store: store.url.clone(),
                    host: other.host,
                    pid: other.pid,
                    age_s: age / 1000,
                });
            }
            tracing::warn!(
                "taking over the lease of source '{source}' from agent {} ({}, pid {}), silent for {} s",
                other.agent, other.host, other.pid, age / 1000
            );
        }
        store
            .os
            .put(&key, lease.body())
            .await
            .map_err(StoreError::from)?;
        Ok(lease)
    }

    /// Checks the lease is still ours, then renews it.
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        if let Some(other) = self.read().await? {
            if other.agent != self.me.agent {
                return Err(LeaseError::Lost {
                    source_name: self.source.clone(),
                    store: self.store.url.clone(),
                    host: other.host,
                    pid: other.pid,
                });
            }
        }
        self.me.renewed_ms = crate::now_ms();
        self.store
            .os
            .put(&layout::lease_key(&self.source), self.body())
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    /// On a clean stop: the next agent starts at once instead of waiting out the lease.
    pub async fn release(self) {
        if let Ok(Some(b)) = self.read().await {
            if b.agent == self.me.agent {
                let _ = self.store.os.delete(&layout::lease_key(&self.source)).await;
            }
        }
    }

    fn body(&self) -> PutPayload {
        PutPayload::from(serde_json::to_vec(&self.me).unwrap_or_default())
    }

    async fn read(&self) -> Result<Option<LeaseBody>, LeaseError> {
        match self.store.os.get(&layout::lease_key(&self.source)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(StoreError::from)?;
                // An unreadable lease is treated as absent: it protects nothing.
                Ok(serde_json::from_slice(&bytes).ok())
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::from(e).into()),
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::now_ms());
    h.write_u32(std::process::id());
    h.finish()
}
