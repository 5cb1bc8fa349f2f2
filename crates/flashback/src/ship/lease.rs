//! One agent per source in a remote store. A local store has `flock` (`log.rs`); object stores
//! have no locks, so the agent holds a lease object, `sources/<name>/agent.lease`: created
//! create-only at start, renewed every [`RENEW_EVERY`] by the uploader, deleted on a clean stop.
//! A lease not renewed for [`STALE_AFTER`] belongs to an agent that died (kill -9, a lost host)
//! and may be taken over.
//!
//! Taking over and renewing are conditional writes on the version (ETag) last seen: a stale
//! lease read by two agents at once is replaced by exactly one of them (the other's write fails
//! its precondition and it stops with [`LeaseError::Held`]), and a renewal by an agent whose
//! lease was taken fails before it writes anything again ([`LeaseError::Lost`]). Read-then-put,
//! as this once was, let both racers win. S3 needs conditional put enabled where the store is
//! built (`store::open_remote`); a backend without conditional updates (object_store answers
//! NotImplemented) falls back to read-check-then-put, the best it allows.
//!
//! Rejected: detecting a second writer from colliding segment names. Two agents recording the
//! same stream seal at different moments, so their names rarely collide, and the overlap is
//! only visible after both have written.

use crate::store::{layout, Store, StoreError};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, PutResult, UpdateVersion};
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
    /// The version of the lease object as we last wrote it: the precondition of the next write.
    version: Option<UpdateVersion>,
}

/// What a conditional write of the lease came to.
enum Wrote {
    Ok(PutResult),
    /// Someone else wrote the lease after we read it (or it is gone).
    Conflict,
    /// The backend has no conditional update.
    Unsupported,
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
        let mut lease = Lease {
            store: store.clone(),
            source: source.to_string(),
            me,
            version: None,
        };
        // A lease released between our create and our read is simply created again.
        for _ in 0..3 {
            let created = lease.create().await?;
            if created == Some(true) {
                return Ok(lease);
            }
            let Some((other, seen)) = lease.read().await? else {
                if created.is_none() {
                    // No create-only writes here: nothing to race against but a read.
                    lease.put_unconditionally().await?;
                    return Ok(lease);
                }
                continue;
            };
            lease.check_stale(&other)?;
            lease.take_over(&other, seen).await?;
            return Ok(lease);
        }
        Err(lease.held_now().await)
    }

    /// Create-only: Some(false) when a lease exists, None when the backend cannot create-only.
    async fn create(&mut self) -> Result<Option<bool>, LeaseError> {
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .os
            .put_opts(&self.key(), self.body(), create)
            .await
        {
            Ok(r) => {
                self.version = version_of(&r);
                Ok(Some(true))
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Some(false)),
            Err(object_store::Error::NotImplemented { .. }) => Ok(None),
            Err(e) => Err(StoreError::from(e).into()),
        }
    }

    /// Err(Held) unless `other` is ours, stale, or of a process dead on this host.
    fn check_stale(&self, other: &LeaseBody) -> Result<(), LeaseError> {
        let age = crate::now_ms().saturating_sub(other.renewed_ms);
        // On this host a dead pid settles it at once (a kill -9 and a restart), without
        // waiting for the lease to go stale.
        let dead_here = other.host == self.me.host && !pid_alive(other.pid);
        if other.agent != self.me.agent && age < STALE_AFTER.as_millis() as u64 && !dead_here {
            return Err(self.held(other));
        }
        Ok(())
    }

    /// Replaces the stale lease `other`, read at version `seen`, by ours, only if nobody wrote
    /// it since: of two agents taking over the same stale lease, one wins.
    async fn take_over(
        &mut self,
        other: &LeaseBody,
        seen: Option<UpdateVersion>,
    ) -> Result<(), LeaseError> {
        let age = crate::now_ms().saturating_sub(other.renewed_ms);
        match self.write_if(seen).await? {
            Wrote::Ok(r) => self.version = version_of(&r),
            Wrote::Conflict => return Err(self.held_now().await),
            Wrote::Unsupported => self.put_unconditionally().await?,
        }
        tracing::warn!(
            "took over the lease of source '{}' from agent {} ({}, pid {}), silent for {} s",
            self.source,
            other.agent,
            other.host,
            other.pid,
            age / 1000
        );
        Ok(())
    }

    /// Renews the lease, only if it is still the version we wrote last: a lease another agent
    /// took over is never overwritten, and this agent learns it lost before writing again.
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        self.me.renewed_ms = crate::now_ms();
        match self.write_if(self.version.clone()).await? {
            Wrote::Ok(r) => {
                self.version = version_of(&r);
                return Ok(());
            }
            Wrote::Conflict => {
                // A conflict with our own body is our own write: the store applied a renewal
                // whose answer was lost, and the client's retry then saw the new version (a
                // 500 after the PUT took effect). Only this agent writes its id, so it still
                // holds the lease: adopt the version instead of stopping as if taken over.
                return match self.read().await? {
                    Some((b, v)) if b.agent == self.me.agent => {
                        self.version = v;
                        Ok(())
                    }
                    Some((other, _)) => Err(self.lost_to(other)),
                    None => Err(self.lost().await),
                };
            }
            Wrote::Unsupported => {}
        }
        // Without conditional updates: check, then put (a narrow window remains).
        if let Some((other, _)) = self.read().await? {
            if other.agent != self.me.agent {
                return Err(self.lost_to(other));
            }
        }
        self.put_unconditionally().await
    }

    /// On a clean stop: the next agent starts at once instead of waiting out the lease.
    pub async fn release(self) {
        if let Ok(Some((b, _))) = self.read().await {
            if b.agent == self.me.agent {
                let _ = self.store.os.delete(&self.key()).await;
            }
        }
    }

    async fn write_if(&self, seen: Option<UpdateVersion>) -> Result<Wrote, LeaseError> {
        let Some(seen) = seen.filter(|v| v.e_tag.is_some() || v.version.is_some()) else {
            return Ok(Wrote::Unsupported);
        };
        let opts = PutOptions {
            mode: PutMode::Update(seen),
            ..Default::default()
        };
        match self.store.os.put_opts(&self.key(), self.body(), opts).await {
            Ok(r) => Ok(Wrote::Ok(r)),
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. })
            | Err(object_store::Error::AlreadyExists { .. }) => Ok(Wrote::Conflict),
            Err(object_store::Error::NotImplemented { .. }) => Ok(Wrote::Unsupported),
            Err(e) => Err(StoreError::from(e).into()),
        }
    }

    async fn put_unconditionally(&mut self) -> Result<(), LeaseError> {
        let r = self
            .store
            .os
            .put(&self.key(), self.body())
            .await
            .map_err(StoreError::from)?;
        self.version = version_of(&r);
        Ok(())
    }

    fn key(&self) -> object_store::path::Path {
        layout::lease_key(&self.source)
    }

    fn held(&self, other: &LeaseBody) -> LeaseError {
        LeaseError::Held {
            source_name: self.source.clone(),
            store: self.store.url.clone(),
            host: other.host.clone(),
            pid: other.pid,
            age_s: crate::now_ms().saturating_sub(other.renewed_ms) / 1000,
        }
    }

    /// Held by whoever won the race we just lost (as far as a read still shows it).
    async fn held_now(&self) -> LeaseError {
        match self.read().await {
            Ok(Some((other, _))) => self.held(&other),
            Ok(None) => self.held(&LeaseBody {
                agent: String::new(),
                host: "an unknown host".into(),
                pid: 0,
                renewed_ms: crate::now_ms(),
            }),
            Err(e) => e,
        }
    }

    async fn lost(&self) -> LeaseError {
        match self.read().await {
            Ok(Some((other, _))) => self.lost_to(other),
            Ok(None) => self.lost_to(LeaseBody {
                agent: String::new(),
                host: "an unknown host (the lease was removed)".into(),
                pid: 0,
                renewed_ms: 0,
            }),
            Err(e) => e,
        }
    }

    fn lost_to(&self, other: LeaseBody) -> LeaseError {
        LeaseError::Lost {
            source_name: self.source.clone(),
            store: self.store.url.clone(),
            host: other.host,
            pid: other.pid,
        }
    }

    fn body(&self) -> PutPayload {
        PutPayload::from(serde_json::to_vec(&self.me).unwrap_or_default())
    }

    /// The lease and the version it was read at.
    async fn read(&self) -> Result<Option<(LeaseBody, Option<UpdateVersion>)>, LeaseError> {
        match self.store.os.get(&self.key()).await {
            Ok(r) => {
                let seen = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await.map_err(StoreError::from)?;
                // An unreadable lease protects nothing: treated as a stale one.
                let body = serde_json::from_slice(&bytes).unwrap_or(LeaseBody {
                    agent: String::new(),
                    host: "unreadable lease".into(),
                    pid: 0,
                    renewed_ms: 0,
                });
                Ok(Some((body, Some(seen))))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::from(e).into()),
        }
    }
}

fn version_of(r: &PutResult) -> Option<UpdateVersion> {
    Some(UpdateVersion {
        e_tag: r.e_tag.clone(),
        version: r.version.clone(),
    })
}

/// Whether `pid`, read from a lease in the store (so untrusted), is a live process on this host.
/// Only 1..=i32::MAX can name one process: 0 means our own process group and a value past
/// i32::MAX turns negative (a process group, or every process for -1), and kill(2) answers for
/// those as if one process were alive. Anything else is not a live local process.
fn pid_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().filter(|p| *p >= 1) else {
        return false;
    };
    // No signal: only the check that the process exists. EPERM says it exists as another
    // user's, which is alive too.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    fn memory_store() -> Store {
        Store {
            os: Arc::new(InMemory::new()),
            local_root: None,
            url: "memory:///test".into(),
            encrypted: false,
        }
    }

    /// A lease left by an agent on another host, silent for `age_s` seconds.
    async fn plant(store: &Store, age_s: u64) {
        let body = LeaseBody {
            agent: "dead0000dead0000".into(),
            host: "elsewhere".into(),
            pid: 4242,
            renewed_ms: crate::now_ms() - age_s * 1000,
        };
        store
            .os
            .put(
                &layout::lease_key("src"),
                PutPayload::from(serde_json::to_vec(&body).unwrap()),
            )
            .await
            .unwrap();
    }

    /// A lease whose pid cannot name one process (0, or past i32::MAX where it turns into a
    /// process group or -1) is not a live process of this host: a fresh lease of this host
    /// holding one is taken over at once. `pid as pid_t` read each of them as alive.
    #[tokio::test]
    async fn a_lease_pid_that_names_no_process_is_not_alive() {
        for pid in [0, 1 << 31, u32::MAX] {
            assert!(!pid_alive(pid), "pid {pid} read as alive");
            let store = memory_store();
            let body = LeaseBody {
                agent: "dead0000dead0000".into(),
                host: hostname(),
                pid,
                renewed_ms: crate::now_ms() - 5_000,
            };
            store
                .os
                .put(
                    &layout::lease_key("src"),
                    PutPayload::from(serde_json::to_vec(&body).unwrap()),
                )
                .await
                .unwrap();
            let l = match Lease::acquire(&store, "src").await {
                Ok(l) => l,
                Err(e) => panic!("pid {pid}: {e}"),
            };
            assert_eq!(holder(&store).await.agent, l.me.agent, "pid {pid}");
        }
        assert!(pid_alive(std::process::id()), "this process is alive");
    }

    async fn holder(store: &Store) -> LeaseBody {
        let bytes = store
            .os
            .get(&layout::lease_key("src"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn candidate(store: &Store, agent: &str) -> Lease {
        Lease {
            store: store.clone(),
            source: "src".into(),
            me: LeaseBody {
                agent: agent.into(),
                host: hostname(),
                pid: std::process::id(),
                renewed_ms: crate::now_ms(),
            },
            version: None,
        }
    }

    #[tokio::test]
    async fn a_fresh_lease_is_held_against_a_second_agent() {
        let store = memory_store();
        let first = Lease::acquire(&store, "src").await.unwrap();
        match Lease::acquire(&store, "src").await {
            Err(LeaseError::Held { pid, .. }) => assert_eq!(pid, std::process::id()),
            Err(e) => panic!("expected Held, got {e}"),
            Ok(_) => panic!("a second agent took a fresh lease"),
        }
        assert_eq!(holder(&store).await.agent, first.me.agent);
        first.release().await;
        assert!(
            Lease::acquire(&store, "src").await.is_ok(),
            "released, yet not free"
        );
    }

    #[tokio::test]
    async fn a_fresh_lease_of_another_host_is_not_taken() {
        let store = memory_store();
        plant(&store, 5).await;
        let Err(e) = Lease::acquire(&store, "src").await else {
            panic!("took a live lease");
        };
        assert!(
            e.to_string()
                .starts_with("another agent (elsewhere, pid 4242) is capturing source 'src'"),
            "{e}"
        );
    }

    /// The race itself, step by step: both agents read the same stale lease, both try to take
    /// it over; the second one's write fails its precondition.
    #[tokio::test]
    async fn two_agents_taking_one_stale_lease_exactly_one_wins() {
        let store = memory_store();
        plant(&store, STALE_AFTER.as_secs() + 5).await;
        let (mut a, mut b) = (candidate(&store, "aaaa"), candidate(&store, "bbbb"));
        assert_eq!(a.create().await.unwrap(), Some(false));
        assert_eq!(b.create().await.unwrap(), Some(false));
        let (seen_a, seen_b) = (
            a.read().await.unwrap().unwrap(),
            b.read().await.unwrap().unwrap(),
        );
        assert_eq!(seen_a.0.agent, "dead0000dead0000");
        a.check_stale(&seen_a.0).unwrap();
        b.check_stale(&seen_b.0).unwrap();
        a.take_over(&seen_a.0, seen_a.1).await.unwrap();
        match b.take_over(&seen_b.0, seen_b.1).await {
            Err(LeaseError::Held { .. }) => {}
            Err(e) => panic!("expected Held, got {e}"),
            Ok(()) => panic!("both agents took over the same stale lease"),
        }
        assert_eq!(holder(&store).await.agent, "aaaa");
        // The loser stops; the winner keeps renewing.
        a.renew().await.unwrap();
        assert_eq!(holder(&store).await.agent, "aaaa");
    }

    /// Many agents at once on a multi-threaded runtime: one lease, one winner.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_acquires_of_a_stale_lease_have_one_winner() {
        let store = memory_store();
        plant(&store, STALE_AFTER.as_secs() + 5).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { Lease::acquire(&s, "src").await })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(l) => winners.push(l),
                Err(LeaseError::Held { .. }) => {}
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "{} agents won one stale lease",
            winners.len()
        );
        assert_eq!(holder(&store).await.agent, winners[0].me.agent);
    }

    #[tokio::test]
    async fn renewal_after_the_lease_was_taken_stops_without_writing() {
        let store = memory_store();
        let mut old = Lease::acquire(&store, "src").await.unwrap();
        // The old agent stalls past STALE_AFTER; a new one takes over the lease it sees.
        let mut new = candidate(&store, "nnnn");
        let (seen_body, seen) = new.read().await.unwrap().unwrap();
        new.take_over(&seen_body, seen).await.unwrap();
        match old.renew().await {
            Err(LeaseError::Lost { pid, .. }) => assert_eq!(pid, std::process::id()),
            Err(e) => panic!("expected Lost, got {e}"),
            Ok(()) => panic!("renewed a lease another agent holds"),
        }
        assert_eq!(
            holder(&store).await.agent,
            "nnnn",
            "the loser overwrote the winner"
        );
        match old.renew().await {
            Err(e) => assert!(e.to_string().contains("took over source 'src'"), "{e}"),
            Ok(()) => panic!("a second renewal succeeded"),
        }
    }

    #[tokio::test]
    async fn a_backend_without_conditional_update_still_takes_a_stale_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            os: Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
            ),
            local_root: None,
            url: dir.path().display().to_string(),
            encrypted: false,
        };
        plant(&store, STALE_AFTER.as_secs() + 5).await;
        let mut l = Lease::acquire(&store, "src").await.unwrap();
        assert_eq!(holder(&store).await.agent, l.me.agent);
        l.renew().await.unwrap();
        assert!(matches!(
            Lease::acquire(&store, "src").await,
            Err(LeaseError::Held { .. })
        ));
    }
}
