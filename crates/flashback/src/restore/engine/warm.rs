//! A replica kept warm: the engine's replication link left open after the base, fed more log
//! as it is sealed, and asked to SAVE at chosen offsets. What the rolling compactor
//! (`compact::rolling`) builds bases with, at a replica's cost (apply each record once) rather
//! than a rebuild's (load the newest base and replay everything since, per base).
//!
//! Why it stays a replica and is never promoted: promotion would start expiring keys whose
//! time has passed (the source's replicated DELs do that, in order, later in the log), and a
//! promoted server would need a new full sync to follow the log again. SAVE works on a replica
//! and writes the dataset as applied, which is exactly the state at the offset acknowledged.

use super::master::{self, read_acks, send_base, Acked, MasterLink};
use super::wait_acked;
use crate::client::Client;
use crate::progress::Progress;
use crate::redis_server::RedisServer;
use crate::restore::plan::RestorePlan;
use crate::restore::{reader, RestoreError};
use crate::runtime::AbortOnDrop;
use crate::store::Store;
use flashback_format::resp;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// What one [`Warm::feed`] applied.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fed {
    pub records: u64,
    /// Replication bytes of log covered (the offsets advanced).
    pub log_bytes: u64,
    pub elapsed: Duration,
}

/// The link to a private server that holds the dataset at [`Warm::offset`].
pub struct Warm<'a> {
    link: MasterLink<'a>,
    acked: watch::Receiver<Acked>,
    _acks: AbortOnDrop,
    admin: Client,
    server: &'a RedisServer,
    /// The replication offset of the source the server's dataset stands at.
    pub offset: u64,
    pub base_bytes: u64,
    /// From the REPLICAOF to the base loaded: the calibration of a base's load time.
    pub load_time: Duration,
}

impl<'a> Warm<'a> {
    /// Makes `server` (fresh, empty) a replica of ours and loads the plan's base into it (the
    /// plan's records are not fed: call [`feed`](Self::feed)).
    pub async fn start(
        store: &Store,
        plan: &RestorePlan,
        server: &'a RedisServer,
    ) -> Result<Warm<'a>, RestoreError> {
        let started = Instant::now();
        let (rd, mut wr, admin) = master::attach(server).await?;
        let base_bytes = send_base(store, plan, &mut wr, server, &Progress::new()).await?;
        let (tx, acked) = watch::channel(Acked::default());
        let acks = AbortOnDrop(tokio::spawn(read_acks(rd, tx)));
        let link = MasterLink {
            w: wr,
            current_db: None,
            sent: 0,
            applied: 0,
            skipped: 0,
            big: None,
            big_filtered: false,
            server,
            filter: None,
            held: None,
        };
        let mut warm = Warm {
            link,
            acked,
            _acks: acks,
            admin,
            server,
            offset: plan.base_offset,
            base_bytes,
            load_time: Duration::ZERO,
        };
        // One command after the base, acknowledged: the base is loaded (see replay_observed).
        warm.link.select(plan.base_db.unwrap_or(0)).await?;
        warm.settle().await?;
        warm.load_time = started.elapsed();
        Ok(warm)
    }

    /// Feeds the plan's records from [`offset`](Self::offset) (which must be the plan's base
    /// offset: the caller cuts the plan to start here) to its stop, and waits until the server
    /// has applied them all.
    pub async fn feed(&mut self, store: &Store, plan: &RestorePlan) -> Result<Fed, RestoreError> {
        if plan.base_offset != self.offset || plan.stop_offset < self.offset {
            return Err(RestoreError::engine(
                self.server,
                format!(
                    "the warm replica stands at offset {}, and was asked to apply {}..{}",
                    self.offset, plan.base_offset, plan.stop_offset
                ),
            ));
        }
        let started = Instant::now();
        let before = self.link.applied;
        reader::read_records(store, plan, &mut self.link).await?;
        self.settle().await?;
        let fed = Fed {
            records: self.link.applied - before,
            log_bytes: plan.stop_offset - self.offset,
            elapsed: started.elapsed(),
        };
        self.offset = plan.stop_offset;
        Ok(fed)
    }

    /// A keepalive on the link (a master pings its replicas every 10 s): between segments the
    /// link may be idle for minutes.
    pub async fn ping(&mut self) -> Result<(), RestoreError> {
        self.link.write(&resp::encode_command(&["PING"])).await?;
        self.link
            .w
            .flush()
            .await
            .map_err(|e| RestoreError::engine(self.server, format!("sending to the replica: {e}")))
    }

    /// SAVEs the dataset (the state at [`offset`](Self::offset)) and moves the dump to a file
    /// of its own in the server's directory, so that the next SAVE cannot overwrite it while it
    /// is uploaded. SAVE rather than BGSAVE: the compactor feeds nothing while it saves anyway
    /// (it stores the base before it reads on), and SAVE needs no fork, so no copy-on-write
    /// doubling of the replica's memory.
    pub async fn save(&mut self) -> Result<PathBuf, RestoreError> {
        self.admin.ok(&["SAVE"]).await?;
        let dump = self.server.dir.join("dump.rdb");
        let kept = self.server.dir.join(format!("base-{}.rdb", self.offset));
        tokio::fs::rename(&dump, &kept)
            .await
            .map_err(|source| RestoreError::Io {
                path: dump.clone(),
                source,
            })?;
        Ok(kept)
    }

    /// GETACK, flushed, and the wait until the server's offset covers everything sent.
    async fn settle(&mut self) -> Result<(), RestoreError> {
        let target = self.link.sent;
        self.link
            .write(&resp::encode_command(&["REPLCONF", "GETACK", "*"]))
            .await?;
        self.link.w.flush().await.map_err(|e| {
            RestoreError::engine(self.server, format!("sending to the replica: {e}"))
        })?;
        wait_acked(self.server, &mut self.acked, target).await
    }
}
